"""s/step (forward + backward + AdamW, batch 64, 32², 1 thread) of candidate synthetic DDPM UNets.

OMP_NUM_THREADS=1 .venv/bin/python bench/bench_ddpm_arch.py
"""
import time

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel

from cff_lib.conditional_unet import synthetic_unet_config

torch.set_num_threads(1)


def candidates():
    base = synthetic_unet_config(32)
    yield "shipped (32,64,64)x1", base
    yield "(32,64,128)x2", {**base, "block_out_channels": (32, 64, 128), "layers_per_block": 2}
    yield "(64,96,96)x1", {**base, "block_out_channels": (64, 96, 96), "layers_per_block": 1}
    yield "(64,96,128)x1", {**base, "block_out_channels": (64, 96, 128), "layers_per_block": 1}
    yield "(64,96,128)x2", {**base, "block_out_channels": (64, 96, 128), "layers_per_block": 2}
    yield "(64,128,128)x2", {**base, "block_out_channels": (64, 128, 128), "layers_per_block": 2}


for name, cfg in candidates():
    torch.manual_seed(0)
    net = UNet2DModel(**cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    n = sum(p.numel() for p in net.parameters())
    x, t = torch.randn(64, 3, 32, 32), torch.randint(0, 1000, (64,))
    times = []
    for _ in range(4):
        t0 = time.perf_counter()
        loss = F.mse_loss(net(x, t).sample, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    print(f"{name:24s} {n / 1e6:6.2f} M params  {min(times[1:]):.2f} s/step", flush=True)

# Measured 2026-11-30 on the 2-core dev machine (the other core busy), min of 3 steps:
#   shipped (32,64,64)x1   1.11 M  1.50 s/step      (32,64,128)x2   3.69 M  2.87 s/step  <- toy_v2
#   (64,96,96)x1           2.79 M  3.57 s/step      (64,96,128)x1   3.69 M  3.80 s/step
#   (64,96,128)x2          5.31 M  5.53 s/step      (64,128,128)x2  6.47 M  6.86 s/step
