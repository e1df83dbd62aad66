"""Latency of one interactive edit (``cff edit`` / the web editor), printed as ratios against a baseline of the
same run.

Baseline: ``model.edit`` (invert the face to t0, then the conditioned reverse chain; ``steps`` each way).
Measured beside it, on the same face and target, median of ``--repeats`` runs after one warm-up:

- ``model.edit`` with the profile's ``ddim.preserve_threshold`` (the preserving edit: two more reverse chains);
- ``Editor.edit`` on a face it has not seen (inversion + edit, as ``cff edit`` runs);
- ``Editor.edit`` on a face already inverted (what a slider move in the web editor costs).

    OMP_NUM_THREADS=2 .venv/bin/python bench/bench_edit_latency.py --profile toy
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def _median_s(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> None:
    from cff_lib.editing import Editor, conditions_for, make_target

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="toy")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    editor = Editor.load(args.profile)
    t0, steps = editor.default_schedule()
    size = editor.size
    g = torch.Generator().manual_seed(0)
    target = make_target(age=70, emotion="happy")
    conds = conditions_for(target, 1)

    def fresh_face():
        return torch.rand(3, size, size, generator=g) * 2 - 1

    face = fresh_face()
    with torch.inference_mode():
        base = _median_s(lambda: editor.model.edit(face[None], conds, t0, steps, n_inv_steps=steps,
                                                   spacing=editor.spacing), args.repeats)
        keep = editor.profile.ddim.preserve_threshold
        kept = None if keep is None else _median_s(
            lambda: editor.model.edit(face[None], conds, t0, steps, n_inv_steps=steps, spacing=editor.spacing,
                                      preserve_threshold=keep), args.repeats)
        cold = _median_s(lambda: editor.edit(fresh_face(), target, t0, steps), args.repeats)
        editor.edit(face, target, t0, steps)
        warm = _median_s(lambda: editor.edit(face, target, t0, steps), args.repeats)
    print(f"profile {args.profile}, {size}x{size}, t0 {t0}, {steps} + {steps} steps, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"model.edit (baseline)          {base:7.3f} s   x1.00")
    if kept is not None:
        print(f"model.edit, preserving {keep:<7g} {kept:7.3f} s   x{kept / base:.2f}")
    print(f"Editor.edit, new face          {cold:7.3f} s   x{cold / base:.2f}")
    print(f"Editor.edit, face inverted     {warm:7.3f} s   x{warm / base:.2f}")


if __name__ == "__main__":
    main()
