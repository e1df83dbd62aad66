"""Benchmark of one ClipFaceFusion training step (cff_lib/training.py, steps 1-7: inversion, the conditioned
reverse chain, L_Total, backward, clipping, AdamW, decay) under the options of ``profile.train``, printed as
ratios against float32 in the same run:

- ``fp32``: ``mixed_precision: "no"`` (the baseline);
- ``fp32+ckpt``: float32 with gradient checkpointing of the UNet (recomputes activations in the backward pass);
- ``bf16``: accelerate's bf16 autocast;
- ``bf16+ckpt``: bf16 and gradient checkpointing;
- ``fp16`` and ``fp16+ckpt`` (CUDA only): accelerate's fp16 autocast with its gradient scaler (the paper's
  setting is ``fp16+ckpt``).

The model is the profile's architecture with randomly initialised backends (timings and memory do not depend on
the weights). A synthetic preset (``ci``, ``toy``) builds random backends in memory; the paper world is
measured on ``--profile paper_rehearsal``, whose random weights of the true architectures ``cff rehearse
build`` writes in the published files (the step then is the real 256² paper step: ViT-B-32, wav2vec2-base,
iresnet50, VGG-16, the 113.7 M-parameter UNet; ``--batch 16`` is the paper's batch). A batch is random
faces with target ages, emotions, captions and, for a fifth of the rows, a voice clip (the composite's
RAVDESS + VoxCeleb share). Each configuration runs in a fresh subprocess (accelerate's state is per process,
and a fresh process gives a clean memory peak): ``--warmup`` steps, then the median of ``--repeats`` timed
steps. A profile whose ``train.objective`` is ``conditional_prior`` (toy, ci) times that step instead (one
UNet pass on random stand-in oracle targets; ``objective`` in the output says which). Peak memory:
``torch.cuda.max_memory_allocated`` on a GPU; on a CPU the rise of
``ru_maxrss`` over the warm-up (an upper bound only, reported for completeness).

    OMP_NUM_THREADS=2 .venv/bin/python bench/bench_train.py --profile ci --repeats 2    # CPU smoke run
    python bench/bench_train.py --profile toy --batch 16                                # one GPU
    cff rehearse build && python bench/bench_train.py --profile paper_rehearsal --batch 16   # paper step, GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

CONFIGS = {  # name -> (train.mixed_precision, train.gradient_checkpointing)
    "fp32": ("no", False),
    "fp32+ckpt": ("no", True),
    "bf16": ("bf16", False),
    "bf16+ckpt": ("bf16", True),
    "fp16": ("fp16", False),
    "fp16+ckpt": ("fp16", True),
}
CUDA_ONLY = ("fp16", "fp16+ckpt")  # accelerate's fp16 needs a GPU (training falls back to fp32 on a CPU)


def _batch(profile, sample_rate: int, n: int, seed: int = 0) -> dict:
    from cff_lib.captions import caption_from_attributes, source_caption
    from cff_lib.emotions import EMOTIONS

    g = torch.Generator().manual_seed(seed)
    size = profile.data.image_size
    ages = torch.randint(18, 80, (n,), generator=g).tolist()
    emos = [EMOTIONS[int(i)] for i in torch.randint(0, len(EMOTIONS), (n,), generator=g)]
    genders = ["female" if i % 2 else "male" for i in range(n)]
    clip_len = int(profile.data.voice_seconds * sample_rate)
    return {"index": torch.arange(n), "image": torch.rand(n, 3, size, size, generator=g) * 2 - 1,
            "caption": [caption_from_attributes(a, e, s) for a, e, s in zip(ages, emos, genders, strict=True)],
            "source_caption": [source_caption(s) for s in genders], "target_age": [float(a) for a in ages],
            "target_emotion": emos, "intensity": [0.5] * n,
            "audio": [torch.randn(clip_len, generator=g) if i % 5 == 0 else None for i in range(n)]}


def _child(args) -> dict:
    """One configuration in this process: build, warm up, time; returns the measurements."""
    from cff_lib import training
    from cff_lib.config import load_profile
    from cff_lib.model import build_model

    precision, ckpt = CONFIGS[args.config]
    base = load_profile(args.profile)
    profile = dataclasses.replace(base, train=dataclasses.replace(
        base.train, mixed_precision=precision, gradient_checkpointing=ckpt,
        batch_size=args.batch or base.train.batch_size))
    torch.manual_seed(0)
    t_build = time.perf_counter()
    if profile.model.backend == "pretrained":  # the paper world: the rehearsal's files, through the real loaders
        model = build_model(profile)
    else:
        with tempfile.TemporaryDirectory() as empty:
            model = build_model(profile, empty, allow_untrained=True)
    build_s = time.perf_counter() - t_build
    accelerator = training._accelerator(profile)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=profile.train.learning_rate)
    model.train()
    model, optimizer = accelerator.prepare(model, optimizer)
    core = accelerator.unwrap_model(model)
    batch = _batch(profile, core.sample_rate, profile.train.batch_size)
    batch["image"] = batch["image"].to(accelerator.device)
    if core.objective == "conditional_prior":  # its step reads oracle targets: random ones time the same
        g = torch.Generator().manual_seed(1)
        batch["target"] = (torch.rand(batch["image"].shape, generator=g) * 2 - 1).to(accelerator.device)
        if core.prior_loss.expression_weight > 0:
            batch["same_expression"] = (torch.rand(batch["image"].shape, generator=g) * 2 - 1).to(
                accelerator.device)
    d, k = profile.ddim, training.train_ddim_steps(profile, training.TrainOptions())
    cuda = accelerator.device.type == "cuda"

    def step() -> float:
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        terms, _ = model(batch, t0=d.t0, n_inv_steps=k, n_gen_steps=k, spacing=d.spacing)  # training steps 1-4
        accelerator.backward(terms["loss"])
        accelerator.clip_grad_norm_(core.trainable_parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        mem0 = torch.cuda.memory_allocated()
    for _ in range(args.warmup):
        step()
    times = [step() for _ in range(args.repeats)]
    peak = ((torch.cuda.max_memory_allocated() - mem0) if cuda
            else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) * 1024)
    return {"config": args.config, "device": str(accelerator.device), "batch": profile.train.batch_size,
            "objective": core.objective,
            "chain_steps": k, "image_size": profile.data.image_size,
            "s_per_step": statistics.median(times), "all_s": times, "peak_mib": peak / 2**20,
            "build_s": round(build_s, 2), "mixed_precision": accelerator.mixed_precision,
            "gradient_checkpointing": ckpt, "threads": torch.get_num_threads(),
            "memory": "cuda max_memory_allocated" if cuda else "ru_maxrss rise (upper bound)"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="toy", help="preset whose architecture and ddim/train settings are used")
    ap.add_argument("--batch", type=int, default=0, help="batch size (0: the profile's)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--configs", nargs="*", default=None, help=f"subset of {list(CONFIGS)}")
    ap.add_argument("--json", default="", help="also write the results to this file")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        args.config = args.child
        print("RESULT " + json.dumps(_child(args)), flush=True)
        return 0
    if args.warmup < 0 or args.repeats < 1:
        ap.error("--warmup must be >= 0 and --repeats >= 1")
    from cff_lib.config import load_profile

    profile = load_profile(args.profile)
    if profile.model.backend == "pretrained":  # fail before any subprocess: the files must be there and right
        from cff_lib.backends import locate_pretrained
        from cff_lib.model import weights_root
        from cff_lib.paper_world import check_weights

        found, missing = locate_pretrained(weights_root(profile))
        problems = [f"{weights_root(profile)}: missing {k}" for k in missing] + check_weights(found, "")
        if problems:
            hint = " (run `cff rehearse build` first)" if profile.runner.rehearsal else ""
            ap.error(f"profile {args.profile}: {len(problems)} weights problem(s){hint}:\n  " + "\n  ".join(problems))
    names = args.configs or [c for c in CONFIGS if c not in CUDA_ONLY or torch.cuda.is_available()]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        ap.error(f"unknown --configs {unknown}; known: {list(CONFIGS)}")
    results = []
    for name in names:
        cmd = [sys.executable, __file__, "--profile", args.profile, "--batch", str(args.batch), "--warmup",
               str(args.warmup), "--repeats", str(args.repeats), "--child", name]
        out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if out.returncode != 0 or not line:
            print(f"{name}: failed (exit {out.returncode})\n{out.stderr[-3000:]}", file=sys.stderr)
            results.append({"config": name, "error": out.stderr[-500:]})
            continue
        results.append(json.loads(line[0][len("RESULT "):]))
        r = results[-1]
        print(f"{name:10s} {r['s_per_step']:.4f} s/step  peak {r['peak_mib']:.0f} MiB  ({r['device']}, batch "
              f"{r['batch']}, {r['image_size']}², " + ("one prior pass)" if r["objective"] == "conditional_prior"
                                                         else f"{r['chain_steps']}+{r['chain_steps']} chain steps)"),
              flush=True)
    ok = {r["config"]: r for r in results if "error" not in r}
    if "fp32" in ok:
        base = ok["fp32"]
        print(f"\nratios against fp32 ({args.profile}, {base['device']}):")
        for name, r in ok.items():
            print(f"  {name:10s} time ×{r['s_per_step'] / base['s_per_step']:.3f}   "
                  f"memory ×{r['peak_mib'] / max(base['peak_mib'], 1e-9):.3f}")
    if args.json:
        import platform

        from cff_lib.atomic import atomic_write_text

        host = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
        atomic_write_text(args.json, json.dumps({"profile": args.profile, "host": host, "results": results},
                                                indent=2) + "\n")
    return 0 if len(ok) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
