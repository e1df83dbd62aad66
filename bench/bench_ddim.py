"""Benchmark of cff_lib.ddim against diffusers, printed as ratios against a baseline of the same run.

1. Speed: ms per DDIM step of ``cff_lib.ddim.generate`` vs diffusers' ``DDIMPipeline`` on the same UNet, the
   same noise and the same ("leading") grid, under ``torch.no_grad``; runs are interleaved and the median of
   ``--repeats`` is reported (target: overhead ≤ 5 %).
2. Memory: peak memory of one backward pass through ``--mem-steps`` (default 10 and 40) DDIM steps, for the
   stepwise mode (``sample_with_stepwise_grad``, target ratio 40/10 ≤ 1.1) next to full backprop
   (``sample`` + one ``backward``). Each point is the median over ``--mem-repeats`` fresh subprocesses,
   so no allocator cache or earlier peak leaks between measurements:
   - CUDA: ``torch.cuda.max_memory_allocated()`` minus the memory allocated before the run;
   - CPU: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after the run minus its value after building the
     model and one warm-up forward (the process's peak resident set grows only by what the run itself
     needed; tracemalloc would not see torch's allocations). The child runs with glibc's
     ``MALLOC_MMAP_THRESHOLD_=131072``: a fixed threshold makes every tensor buffer an mmap that is
     returned to the OS when freed, so the resident peak tracks the live peak (with glibc's default
     dynamic threshold identical runs differed by ~25 MiB).
3. CUDA only (``--edit``): images/s of the paper's 40 + 40-step edit (invert to t0 = 500, sample back) on
   the paper UNet in fp32 eager, bf16, bf16 + channels_last and bf16 + torch.compile.

The UNets are randomly initialised (timings and memory do not depend on the weights).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_ddim.py            # small 32² UNet (~1.1 M params)
    .venv/bin/python bench/bench_ddim.py --paper --edit                # 256² paper UNet, on a GPU
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from cff_lib import ddim
from cff_lib.conditional_unet import (
    ConditionalUNet,
    paper_scheduler_config,
    paper_unet_config,
    synthetic_unet_config,
)

COND_DIM = 512  # the fused vector c ("Multi-modal fusion")


def _build(paper: bool, device: str, seed: int = 0) -> ConditionalUNet:
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    cfg = paper_unet_config() if paper else synthetic_unet_config(32)
    return ConditionalUNet(UNet2DModel(**cfg), COND_DIM).to(device).eval()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------------------------- 1. speed
def bench_speed(args) -> None:
    from diffusers import DDIMPipeline, DDIMScheduler

    model = _build(args.paper, args.device)
    unet = copy.deepcopy(model.unet)
    unet.class_embedding = None  # the plain UNet2DModel, as the pipeline expects it
    sched = DDIMScheduler.from_config(paper_scheduler_config(), clip_sample=False)
    pipe = DDIMPipeline(unet=unet, scheduler=sched).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    size = model.sample_size
    shape = (args.batch, 3, size, size)
    n = args.steps

    def ours():
        gen = torch.Generator(args.device).manual_seed(0)
        return ddim.generate(model, None, n, shape, gen, spacing="leading")

    def theirs():
        return pipe(
            batch_size=args.batch,
            generator=torch.Generator(args.device).manual_seed(0),
            eta=0.0,
            num_inference_steps=n,
            output_type="pt",
        ).images

    times = {"diffusers DDIMPipeline": [], "cff_lib.ddim.generate": []}
    with torch.no_grad():
        a, b = ours(), theirs()  # warm-up, and a parity check on the way
        parity = float(((a / 2 + 0.5).clamp(0, 1) - b).abs().max())
        for _ in range(args.repeats):
            for name, fn in (("diffusers DDIMPipeline", theirs), ("cff_lib.ddim.generate", ours)):
                _sync(args.device)
                start = time.perf_counter()
                fn()
                _sync(args.device)
                times[name].append((time.perf_counter() - start) * 1e3 / n)
    base = statistics.median(times["diffusers DDIMPipeline"])
    print(f"\n== speed: ms per DDIM step, batch {args.batch}, {n} steps, median of {args.repeats}")
    for name, ts in times.items():
        med = statistics.median(ts)
        spread = f"(min {min(ts):.2f}, max {max(ts):.2f})"
        print(f"  {name:<26} {med:9.2f} ms/step   ratio {med / base:5.3f}   {spread}")
    print(f"  max |ours - pipeline| on the pipeline's [0, 1] output: {parity:.1e}")


# ----------------------------------------------------------------------------------------------- 2. memory
def _child_memory(args) -> None:
    """Runs in a fresh process: one backward through ``args.child_steps`` steps, prints peak MiB as JSON."""
    cuda = args.device.startswith("cuda")
    model = _build(args.paper, args.device)
    torch.nn.init.normal_(model.cond_proj.weight, std=0.01)
    size = model.sample_size
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(args.batch, 3, size, size, generator=g).to(args.device)
    c = torch.randn(args.batch, COND_DIM, generator=g).to(args.device)
    with torch.no_grad():
        model(x_t, torch.full((args.batch,), 500, device=args.device), c)  # warm-up: allocator, kernels
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    loss_fn = lambda x0, k: x0.pow(2).mean()  # noqa: E731  (stands in for the paper's Eq. 32 loss)
    if args.child_mode == "stepwise":
        ddim.sample_with_stepwise_grad(model, x_t, c, 500, args.child_steps, loss_fn)
    else:
        loss_fn(ddim.sample(model, x_t, c, 500, args.child_steps), 0).backward()
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    print(json.dumps({"peak_mib": peak / 2**20}))


def _measure(args, mode: str, steps: int) -> float:
    """Median over ``--mem-repeats`` fresh processes of the peak memory (MiB) of one run."""
    return statistics.median(_measure_once(args, mode, steps) for _ in range(args.mem_repeats))


def _measure_once(args, mode: str, steps: int) -> float:
    cmd = [sys.executable, os.path.abspath(__file__), "--_child", mode, str(steps)]
    cmd += ["--batch", str(args.batch), "--device", args.device] + (["--paper"] if args.paper else [])
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")  # see the module docstring
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if run.returncode != 0:
        if "OutOfMemoryError" in run.stderr or "out of memory" in run.stderr:
            return float("inf")  # reported as "out of memory": the point of the stepwise mode
        raise RuntimeError(f"memory child {mode} {steps} failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])["peak_mib"]


def bench_memory(args) -> None:
    lo, hi = args.mem_steps
    how = "torch.cuda.max_memory_allocated" if args.device.startswith("cuda") else "ru_maxrss growth"
    print(
        f"\n== memory: peak of one backward through the chain, batch {args.batch} "
        f"({how}, median of {args.mem_repeats} fresh processes)"
    )
    results = {}
    for mode in ("stepwise", "full"):
        results[mode] = (_measure(args, mode, lo), _measure(args, mode, hi))
    base = results["stepwise"][0]
    for mode, (m_lo, m_hi) in results.items():
        if math.isinf(m_hi) or math.isinf(m_lo):
            fmt = lambda m: "out of memory" if math.isinf(m) else f"{m:9.1f} MiB"  # noqa: E731
            print(f"  {mode:<9} {lo:>3} steps {fmt(m_lo)}   {hi:>3} steps {fmt(m_hi)}")
            continue
        print(
            f"  {mode:<9} {lo:>3} steps {m_lo:9.1f} MiB   {hi:>3} steps {m_hi:9.1f} MiB   "
            f"ratio {hi}/{lo} = {m_hi / m_lo:5.2f}   (vs stepwise@{lo}: {m_lo / base:.2f}, {m_hi / base:.2f})"
        )


# ----------------------------------------------------------------------------------------------- 3. edit
def bench_edit(args) -> None:
    if not args.device.startswith("cuda"):
        print("\n== edit throughput: skipped (needs CUDA)")
        return
    cfg = ddim.EditConfig()  # t0 = 500, 40 + 40 steps
    steps = f"{cfg.n_inv_steps}+{cfg.n_gen_steps} steps"
    print(f"\n== edit throughput, paper UNet, batch {args.batch}, t0={cfg.t0}, {steps}")
    variants = [("fp32 eager", torch.float32, False, False), ("bf16 eager", torch.bfloat16, False, False)]
    variants += [("bf16 channels_last", torch.bfloat16, True, False)]
    if not args.no_compile:
        variants += [("bf16 channels_last compile", torch.bfloat16, True, True)]
    base = None
    for name, dtype, channels_last, compiled in variants:
        model = _build(True, args.device).to(dtype)
        torch.nn.init.normal_(model.cond_proj.weight, std=0.01)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            model = model.to(memory_format=fmt)
        if compiled:
            model.unet.compile()
        g = torch.Generator().manual_seed(0)
        x = torch.rand(args.batch, 3, 256, 256, generator=g) * 2 - 1
        x = x.to(args.device, dtype).to(memory_format=fmt)
        c = torch.randn(args.batch, COND_DIM, generator=g).to(args.device, dtype)
        with torch.inference_mode():
            ddim.edit(model, x, c, cfg.t0, 2, 2)  # warm-up (and compilation)
            _sync(args.device)
            start = time.perf_counter()
            for _ in range(args.repeats):
                ddim.edit(model, x, c, cfg.t0, cfg.n_inv_steps, cfg.n_gen_steps)
            _sync(args.device)
        ips = args.repeats * args.batch / (time.perf_counter() - start)
        base = base or ips
        print(f"  {name:<28} {ips:8.2f} images/s   ratio {ips / base:5.2f}")
        del model


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--paper", action="store_true", help="the 256² paper UNet (113.7 M) instead of the 32² one")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument("--batch", type=int, default=4, help="images per batch (default 4)")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps of the speed comparison (default 20)")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions (default 5)")
    p.add_argument("--mem-steps", type=int, nargs=2, default=(10, 40), help="the two chain lengths (10 40)")
    p.add_argument("--mem-repeats", type=int, default=3, help="fresh processes per memory point (median; 3)")
    p.add_argument("--skip-speed", action="store_true", help="skip the ms/step comparison")
    p.add_argument("--skip-memory", action="store_true", help="skip the peak-memory comparison")
    p.add_argument("--edit", action="store_true", help="CUDA: images/s of a 40+40-step paper-UNet edit")
    p.add_argument("--no-compile", action="store_true", help="with --edit: skip the torch.compile variant")
    p.add_argument("--_child", nargs=2, metavar=("MODE", "STEPS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        args.child_mode, args.child_steps = args._child[0], int(args._child[1])
        _child_memory(args)
        return
    name = "paper 256² (113.7 M)" if args.paper else "synthetic 32² (1.1 M)"
    env = f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}"
    print(f"cff_lib DDIM benchmark: UNet {name}, {env}")
    if not args.skip_speed:
        bench_speed(args)
    if not args.skip_memory:
        bench_memory(args)
    if args.edit:
        bench_edit(args)


if __name__ == "__main__":
    main()
