"""One tiny ClipFaceFusion training (ci profile, tiny UNet, random backends), for the accelerate parity test.

``python tests/accelerate_parity_worker.py OUT_DIR`` trains in one process;
``torchrun --nproc_per_node 2 tests/accelerate_parity_worker.py OUT_DIR`` trains the same run on two CPU
processes (accelerate MULTI_CPU, gloo), each taking half of every batch (``training._accelerator``:
``split_batches``). Rank 0 writes ``OUT_DIR/history.json`` (the loss history) and ``OUT_DIR/info.json``.
The world (random faces, noise clips) is written by each process from a fixed seed, so both ways see the
same files; the model is built from the same seed on every process.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import torch
from tiny_world import write_tiny_world  # tests/ is this script's folder, first on sys.path

from cff_lib import training
from cff_lib.conditional_unet import tiny_unet_config
from cff_lib.config import load_profile
from cff_lib.model import build_model

STEPS = 4
BATCH = 4  # the global batch: one process takes 4 rows a step, each of two processes 2 of the same 4


def parity_profile():
    """ci with a 2-step DDIM chain, batch 4 and the fusion's dropout off (dropout masks are drawn per process,
    so with dropout two processes and one draw different masks: not a parity question), on the paper's
    objective (L_Total through the chain, unguided): ci's conditional prior draws its timesteps and
    classifier-free dropout per process, for the same reason."""
    p = load_profile("ci")
    return dataclasses.replace(
        p, model=dataclasses.replace(p.model, dropout=0.0),
        ddim=dataclasses.replace(p.ddim, t0=20, n_inv_steps=2, n_gen_steps=2, guidance_scale=1.0),
        train=dataclasses.replace(p.train, batch_size=BATCH, objective="edit_chain", changed_weight=0.0,
                                  expression_weight=0.0),
        eval=dataclasses.replace(p.eval, n_samples=2))


def main(out: str) -> int:
    torch.set_num_threads(1)
    rank = int(os.environ.get("RANK", "0"))
    out_dir = Path(out)
    world = out_dir / f"world-rank{rank}"  # each process its own copy: no race on the files
    composite = write_tiny_world(world)
    profile = parity_profile()
    torch.manual_seed(profile.train.seed)
    model = build_model(profile, world / "no_weights", allow_untrained=True, unet_config=tiny_unet_config(32))
    options = training.TrainOptions(checkpoint_every=STEPS, sample_grids=False)
    result = training.train(profile, out_dir / "run", max_steps=STEPS, progress=False, options=options,
                            model=model, composite=composite, data_root=world, resume=False)
    if rank == 0:
        (out_dir / "history.json").write_text(json.dumps(list(result.history)))
        (out_dir / "info.json").write_text(json.dumps({
            "world_size": int(os.environ.get("WORLD_SIZE", "1")), "steps": result.steps,
            "epochs": result.epochs, "total_steps": result.total_steps}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
