"""Training ClipFaceFusion once, so that it edits any face toward any target conditions (paper "Diffusion
process and optimization", "Implementation", "Training procedure", Table 3).

One training step, on a composite batch mixed 50/30/10/10 (FFHQ / CACD / RAVDESS / VoxCeleb rows, through
``composite.MixedBatchSampler``):

1. c = ConditioningVector(fusion(f_T, f_AV, f_Age, f_Emo, f_I), ArcFace(I_ref), VGG(I_ref))  (Eqs. 1-12)
2. x_t0 = DDIM inversion of I_ref, unconditional, no gradient                                  (Eq. 9)
3. I_gen = conditioned reverse DDIM from x_t0                                                   (Eq. 30)
4. L_Total on I_gen                                                                             (Eq. 32)
5. AdamW step (Table 3: learning rate with linear decay, weight decay; the profile's values)

Backpropagation: *full* backprop through a short reverse chain (the profile's ``ddim.n_train_steps``: 6 DDIM
steps in the paper presets, DiffusionCLIP's ``n_train_step``; 10 in ``toy``, whose small DDPM reconstructs
badly in fewer, see docs/errata.md), rather than the stepwise mode
(``ddim.sample_with_stepwise_grad``). Reasons: (a) the loss is the paper's L_Total on the *final* edited
image, whose exact gradient full backprop gives, while the stepwise mode optimises a surrogate (a loss on each
step's x0 prediction); (b) the judges (CLIP, ArcFace, VGG, estimators) run once per step instead of once per
DDIM step, which on a CPU is most of the cost; (c) a single ``forward`` returning the loss is what
``accelerate``/DDP needs to synchronise gradients over several GPUs. Memory grows with ``n_train_steps``;
``profile.train.gradient_checkpointing`` recomputes UNet activations to bound it at paper scale. Editing and
evaluation use the profile's ``ddim.n_inv_steps`` / ``n_gen_steps``: c enters every UNet call the same way,
so what is learnt in a short chain carries over (DiffusionCLIP trains with 6 and tests with 40).

Seeds (Table 3): ``train.seed`` (42) seeds torch/numpy/python, the model's initialisation and the batch
sampler; ``train.audio_seed`` (123) seeds the 5-s window cut from clips longer than
``data.max_audio_seconds`` (the synthetic clips are shorter, so it is inert there); ``train.ddim_seed``
(2024) seeds the x_T noise of the per-epoch pure-generation samples (DDIM itself is deterministic, η = 0).

Checkpoints (``out_dir/checkpoints/step-NNNNNN.safetensors``): the trainable tensors, AdamW's moments, the
learning-rate schedule, the python / numpy / torch (and CUDA) RNG states, the step (= the sampler position:
batches are a deterministic function of the step) and the loss history; written atomically. Resuming from one
gives bit-for-bit the weights of an uninterrupted run on a CPU (tests/test_training.py). A non-finite loss or
gradient stops training with :class:`TrainingDiverged`, naming the last good checkpoint, which is kept.

Runs unchanged on a CPU, one GPU, or ``accelerate launch`` over several GPUs (bf16/fp16 via the profile's
``train.mixed_precision``).
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from cff_lib.atomic import atomic_path, atomic_write_text
from cff_lib.composite import CompositeSet, MixedBatchSampler
from cff_lib.dataset import CompositeDataset, collate, dataset_for, load_composite
from cff_lib.model import MODEL_FILE, ClipFaceFusion, build_model, read_checkpoint, weights_root

CHECKPOINT_DIR = "checkpoints"
SAMPLES_DIR = "samples"
HISTORY_FILE = "history.json"
SAMPLES_EXPORT = "clipfacefusion_samples"  # per-epoch sample grids shipped beside the trained model


@dataclass(frozen=True)
class TrainOptions:
    train_steps: int | None = None  # DDIM steps of a training sample (None = the profile's ddim.n_train_steps)
    checkpoint_every: int = 50  # optimizer steps between checkpoints (also at every epoch end and the last step)
    keep_checkpoints: int = 2  # newest checkpoints kept on disk (older ones are deleted)
    grid_size: int = 6  # validation faces in the per-epoch sample grid
    max_grad_norm: float = 1.0  # gradient-norm clipping (not in the paper; guards the backprop through DDIM)
    sample_grids: bool = True  # write a sample grid at the end of every epoch


@dataclass(frozen=True)
class TrainResult:
    steps: int  # optimizer steps done (global, including those before a resume)
    total_steps: int  # steps of the whole schedule
    epochs: float  # passes over the composite training rows done
    history: tuple[dict, ...]  # one record per step: step, epoch, lr, loss and every L_Total term
    checkpoint: str  # newest checkpoint
    model_file: str  # trained parts of the model, safetensors (out_dir/clipfacefusion.safetensors)
    sample_grids: tuple[str, ...]  # PNG sample grid of each finished epoch
    resumed_from: int  # step the run resumed from (0 = fresh)
    wall_s: float  # wall time of this call, seconds
    train_wall_s: float = float("nan")  # wall time of the whole run, every resumed call included, seconds


class TrainingDiverged(FloatingPointError):
    """L_Total or its gradient stopped being finite; ``checkpoint`` is the last good one (or None)."""

    def __init__(self, message: str, step: int, checkpoint: str | None):
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint


# ------------------------------------------------------------------------------------------ schedule
def schedule_length(profile, n_train: int, max_steps: int | None = None) -> int:
    """Optimizer steps of the run: ``max_steps`` if given (> 0), else epochs × ⌈n_train / batch_size⌉."""
    if max_steps:
        if not isinstance(max_steps, int) or max_steps < 0:
            raise ValueError(f"max_steps={max_steps!r} must be a non-negative int (0 or None = the profile's)")
        return max_steps
    return profile.train.epochs * math.ceil(n_train / profile.train.batch_size)


def train_ddim_steps(profile, options: TrainOptions) -> int:
    k = profile.ddim.n_train_steps if options.train_steps is None else options.train_steps
    return max(1, min(k, profile.ddim.n_gen_steps, profile.ddim.n_inv_steps))


# ------------------------------------------------------------------------------------------ checkpoints
def _rng_state() -> tuple[dict[str, Tensor], dict[str, str]]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    tensors = {"rng.torch": torch.get_rng_state(),
               "rng.numpy": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
               "rng.python": torch.tensor(py_state[1], dtype=torch.int64)}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    meta = {"rng_numpy": json.dumps([np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])]),
            "rng_python": json.dumps([py_state[0], py_state[2]])}
    return tensors, meta


def _set_rng_state(tensors: Mapping[str, Tensor], meta: Mapping[str, str]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    kind, pos, has_gauss, gauss = json.loads(meta["rng_numpy"])
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, gauss_next = json.loads(meta["rng_python"])
    random.setstate((version, tuple(int(x) for x in tensors["rng.python"].tolist()), gauss_next))
    cuda = sorted(k for k in tensors if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda][: torch.cuda.device_count()])


def _optimizer_state(optimizer) -> tuple[dict[str, Tensor], str]:
    sd = optimizer.state_dict()
    tensors = {f"optim.{pid}.{name}": v for pid, st in sd["state"].items() for name, v in st.items()
               if isinstance(v, Tensor)}
    return tensors, json.dumps(sd["param_groups"])


def _load_optimizer_state(optimizer, tensors: Mapping[str, Tensor], groups_json: str) -> None:
    state: dict[int, dict[str, Tensor]] = {}
    for key, v in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(groups_json)})


def save_checkpoint(path: str | os.PathLike, model: ClipFaceFusion, optimizer, scheduler, *, step: int,
                    total_steps: int, fingerprint: str, history: Sequence[Mapping[str, Any]],
                    train_wall_s: float = 0.0) -> Path:
    """One safetensors file with everything a bit-exact resume needs (module docstring); atomic.
    ``train_wall_s``: the run's wall time so far (all calls), carried so a resumed run's record is whole."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.trainable_state_dict().items()}
    opt_tensors, groups = _optimizer_state(optimizer)
    rng_tensors, rng_meta = _rng_state()
    tensors.update({k: v.detach().contiguous().cpu() for k, v in {**opt_tensors, **rng_tensors}.items()})
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    meta = {**model.metadata(), **rng_meta, "step": str(step), "total_steps": str(total_steps),
            "profile_fingerprint": fingerprint, "optimizer_param_groups": groups,
            "scheduler": json.dumps(sched), "history": json.dumps(list(history)),
            "train_wall_s": f"{float(train_wall_s):.3f}"}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, model: ClipFaceFusion, optimizer=None, scheduler=None, *,
                    fingerprint: str | None = None, restore_rng: bool = True) -> dict[str, Any]:
    """Restore a :func:`save_checkpoint` file into ``model`` (and optimizer, scheduler, RNGs).

    Returns {"step", "total_steps", "history", "train_wall_s"} (NaN wall time for a checkpoint written
    before it was recorded). Clear errors for a missing, corrupt, other-kind,
    other-architecture or other-profile file.
    """
    tensors, meta = read_checkpoint(path)
    if "step" not in meta or "optimizer_param_groups" not in meta:
        raise ValueError(f"{path} holds trained weights but no training state (not a training checkpoint)")
    if fingerprint is not None and meta.get("profile_fingerprint") != fingerprint:
        raise ValueError(f"{path} was written by a run of another profile (fingerprint "
                         f"{meta.get('profile_fingerprint')} != {fingerprint}); use a fresh out_dir or "
                         "resume=False")
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_trainable_state(model_state, meta, path)
    if optimizer is not None:
        _load_optimizer_state(optimizer, {k: v for k, v in tensors.items() if k.startswith("optim.")},
                              meta["optimizer_param_groups"])
    if scheduler is not None:
        sched = scheduler.state_dict()
        sched.update(json.loads(meta["scheduler"]))
        scheduler.load_state_dict(sched)
    if restore_rng:
        _set_rng_state(tensors, meta)
    return {"step": int(meta["step"]), "total_steps": int(meta["total_steps"]),
            "history": json.loads(meta.get("history", "[]")),
            "train_wall_s": float(meta.get("train_wall_s", "nan"))}


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    folder = Path(out_dir) / CHECKPOINT_DIR
    found = sorted(folder.glob("step-*.safetensors")) if folder.is_dir() else []
    return found[-1] if found else None


def _prune(out_dir: Path, keep: int) -> None:
    for old in sorted((out_dir / CHECKPOINT_DIR).glob("step-*.safetensors"))[:-keep]:
        old.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------ sample grid
def to_uint8(images: Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def write_grid(rows: Sequence[Tensor], path: str | os.PathLike) -> Path:
    """Rows of (B, 3, H, W) images tiled into one PNG (atomically)."""
    from PIL import Image

    tiles = [np.concatenate(list(to_uint8(r)), axis=1) for r in rows]
    with atomic_path(path) as tmp:
        Image.fromarray(np.concatenate(tiles, axis=0)).save(tmp, format="PNG")
    return Path(path)


def grid_batch(dataset: CompositeDataset, n: int) -> dict[str, Any] | None:
    """The first ``n`` rows of ``dataset`` with both a target age and a target emotion, collated."""
    picks = [i for i, s in enumerate(dataset.samples) if s.target_age is not None
             and s.target_emotion is not None][:n]
    return collate([dataset[i] for i in picks]) if picks else None


def with_oracle_targets(profile, batch: Mapping[str, Any], samples, expression_mask: bool) -> dict[str, Any]:
    """``batch`` plus ``target`` (B, 3, H, W), the oracle targets of its rows (``index`` into ``samples``), and
    with ``expression_mask`` ``same_expression`` (the targets at the source's expression): what
    ``ClipFaceFusion.prior_step`` trains on. Only training rows: a val row's oracle target is evidence (the
    control faces' ground truth) and never enters a loss, so any other split raises ValueError."""
    from cff_lib import oracle

    rows = [samples[i] for i in batch["index"].tolist()]
    leaked = sorted({r.split for r in rows} - {"train"})
    if leaked:
        raise ValueError(f"with_oracle_targets got rows of the {leaked} split; the conditional prior trains on "
                         "the oracle targets of 'train' rows only (the others are evaluation's ground truth)")
    out = {**batch, "target": oracle.oracle_targets(profile, rows)}
    if expression_mask:
        out["same_expression"] = oracle.same_expression_targets(profile, rows)
    return out


def edit_sample_grid(model: ClipFaceFusion, batch: Mapping[str, Any], profile, path: str | os.PathLike) -> Path:
    """Rows: source faces, their unconditioned reconstructions, their edits toward the row's targets and
    pure generations from x_T ~ N(0, I) (seeded by ``train.ddim_seed``) under the same conditions."""
    d = profile.ddim
    images = batch["image"].to(model.device)
    recon = model.edit(images, None, d.t0, d.n_gen_steps, n_inv_steps=d.n_inv_steps, spacing=d.spacing)
    edited = model.edit(images, batch, d.t0, d.n_gen_steps, n_inv_steps=d.n_inv_steps, spacing=d.spacing)
    gen = torch.Generator(device=model.device).manual_seed(profile.train.ddim_seed)
    generated = model.generate(batch, d.n_gen_steps, generator=gen, spacing=d.spacing)
    return write_grid([images, recon, edited, generated], path)


# ------------------------------------------------------------------------------------------ the loop
def _accelerator(profile):
    from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs

    precision = profile.train.mixed_precision
    cpu = not torch.cuda.is_available()
    if cpu and precision == "fp16":  # fp16 autocast needs a GPU; bf16 runs on CPUs
        warnings.warn(f"profile {profile.name!r} asks for fp16 mixed precision, which needs a GPU; "
                      "training in float32 on this CPU", stacklevel=3)
        precision = "no"
    # split_batches: the profile's batch_size is the global batch; n processes each take 1/n of every
    # sampler batch, so n processes see the rows one process sees (tests/test_accelerate_parity.py)
    return Accelerator(mixed_precision=precision, cpu=cpu,
                       dataloader_config=DataLoaderConfiguration(split_batches=True),
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def _mean_over_processes(terms: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Each term's mean over the processes whose share of the batch has it (a term's presence depends on
    the rows: a share without audio has no ``av/*``), so the history records the global batch."""
    from accelerate.utils import gather_object

    shares = gather_object([{k: float(v.detach()) for k, v in terms.items()}])
    keys = dict.fromkeys(k for share in shares for k in share)
    return {k: torch.tensor(float(np.mean([s[k] for s in shares if k in s]))) for k in keys}


def _record(step: int, epoch: float, lr: float, terms: Mapping[str, Tensor]) -> dict[str, float]:
    rec = {"step": step, "epoch": round(epoch, 6), "lr": lr}
    rec.update({k: float(v.detach()) for k, v in terms.items()})
    return rec


def train(profile, out_dir: str | os.PathLike, *, max_steps: int | None = None, resume: bool = True,
          progress: bool = True, options: TrainOptions = TrainOptions(), model: ClipFaceFusion | None = None,
          composite: CompositeSet | None = None, data_root: str | os.PathLike | None = None,
          weights_dir: str | os.PathLike | None = None, allow_untrained: bool = False,
          stop_after: int | None = None, step_hook: Callable[[int, Any], None] | None = None) -> TrainResult:
    """Train ClipFaceFusion on ``profile``'s composite set; checkpoints and samples go to ``out_dir``.

    ``max_steps``: optimizer steps of the whole schedule (0/None = epochs × steps per epoch; the linear
    decay spans it). ``resume``: continue from the newest checkpoint in ``out_dir`` (bit-exact on a CPU); one
    this run cannot continue (other profile, architecture, backend weights or schedule length) is moved
    aside to ``checkpoints.stale-<time>/`` and training starts afresh; a corrupt one is an error.
    ``stop_after``: stop after that global step as an interruption would (a checkpoint is written).
    ``model``/``composite``/``data_root``/``weights_dir``/``allow_untrained``: injection for tests and
    notebooks (defaults: the profile's). ``step_hook(step, terms)`` is called before each backward.
    """
    from diffusers.optimization import get_scheduler

    start_time = time.perf_counter()
    out_dir = Path(out_dir)
    accelerator = _accelerator(profile)
    t = profile.train
    random.seed(t.seed), np.random.seed(t.seed), torch.manual_seed(t.seed)  # Table 3: global seed 42
    if model is None:
        model = build_model(profile, weights_dir, allow_untrained=allow_untrained)
    if composite is None:
        composite = load_composite(profile)
    train_set = dataset_for(profile, composite.split("train"), data_root)
    val_set = dataset_for(profile, composite.split("val"), data_root)
    total = schedule_length(profile, len(train_set), max_steps)
    steps_per_epoch = math.ceil(len(train_set) / t.batch_size)
    k_steps = train_ddim_steps(profile, options)
    sampler = MixedBatchSampler(composite.source_indices("train"), t.batch_size, ratios=profile.data.mix,
                                seed=t.seed, n_batches=total)  # 50/30/10/10 ("Training procedure")
    loader = torch.utils.data.DataLoader(  # own generator: iterating never draws from the global RNG (resume)
        train_set, batch_sampler=sampler, collate_fn=collate, num_workers=0,
        generator=torch.Generator().manual_seed(t.seed))
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=t.learning_rate, weight_decay=t.weight_decay)
    scheduler = get_scheduler(t.lr_schedule, optimizer, num_warmup_steps=0, num_training_steps=total)
    model.train()
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    core: ClipFaceFusion = accelerator.unwrap_model(model)

    step, history, resumed_from, wall_before = 0, [], 0, 0.0  # wall_before: earlier calls' share of the run
    ckpt = latest_checkpoint(out_dir) if resume else None
    stale = _incompatibility(ckpt, core, profile, total) if ckpt is not None else None
    if stale:  # e.g. notebooks/02 retrained the backends: this run cannot continue that one
        aside = out_dir / f"{CHECKPOINT_DIR}.stale-{time.strftime('%Y%m%d-%H%M%S')}"
        if accelerator.is_main_process:
            os.replace(out_dir / CHECKPOINT_DIR, aside)
        tqdm.write(f"not resuming from {ckpt}: {stale}; starting afresh (old checkpoints moved to {aside})")
        ckpt = None
    if ckpt is not None:
        state = load_checkpoint(ckpt, core, optimizer, scheduler, fingerprint=profile.training_fingerprint())
        step, history, resumed_from = state["step"], state["history"], state["step"]
        wall_before = state["train_wall_s"]
    elif not resume and (out_dir / CHECKPOINT_DIR).is_dir() and accelerator.is_main_process:
        shutil.rmtree(out_dir / CHECKPOINT_DIR)
    last_good = str(ckpt) if ckpt is not None else None
    grids = sorted(str(p) for p in (out_dir / SAMPLES_DIR).glob("epoch-*.png")) if ckpt is not None else []
    grid_rows = grid_batch(val_set, options.grid_size) if options.sample_grids else None

    def checkpoint() -> str:
        path = out_dir / CHECKPOINT_DIR / f"step-{step:06d}.safetensors"
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            save_checkpoint(path, core, optimizer, scheduler, step=step, total_steps=total,
                            fingerprint=profile.training_fingerprint(), history=history,
                            train_wall_s=wall_before + time.perf_counter() - start_time)
            atomic_write_text(out_dir / HISTORY_FILE, json.dumps(history) + "\n")
            _prune(out_dir, options.keep_checkpoints)
        return str(path)

    d = profile.ddim
    batches = accelerator.skip_first_batches(loader, step) if step else loader
    bar = tqdm(total=total, initial=step, desc=f"train {profile.name}", unit="step",
               disable=not progress or not accelerator.is_local_main_process)
    for batch in batches:
        if core.objective == "conditional_prior":  # not in the paper: its oracle targets (errata)
            batch = with_oracle_targets(profile, batch, train_set.samples, core.prior_loss.expression_weight > 0)
        terms, _ = model(batch, t0=d.t0, n_inv_steps=k_steps, n_gen_steps=k_steps, spacing=d.spacing)  # 1-4
        if step_hook is not None:
            step_hook(step, terms)
        loss = terms["loss"]
        if not torch.isfinite(loss.detach()):
            _diverged(f"L_Total is {float(loss.detach())}", step, terms, last_good, batch)
        accelerator.backward(loss)  # 5. ∂L_Total/∂θ through the reverse DDIM chain (full backprop)
        grads = [p.grad for p in core.trainable_parameters() if p.grad is not None]
        if accelerator.scaler is None and not all(bool(torch.isfinite(g).all()) for g in grads):  # fp16: scaler
            _diverged("the gradient of L_Total is not finite", step, terms, last_good, batch)
        if options.max_grad_norm:
            accelerator.clip_grad_norm_(core.trainable_parameters(), options.max_grad_norm)
        optimizer.step()  # 6. AdamW (Table 3)
        scheduler.step()  # 7. linear decay of the learning rate (Table 3)
        optimizer.zero_grad(set_to_none=True)
        step += 1
        epoch = step / steps_per_epoch
        if accelerator.num_processes > 1:  # record the mean over the processes' shares of the batch
            terms = _mean_over_processes(terms)
        history.append(_record(step, epoch, scheduler.get_last_lr()[0], terms))
        bar.update(1)
        bar.set_postfix(loss=f"{history[-1]['loss']:.4f}", epoch=f"{epoch:.2f}")
        epoch_end = step % steps_per_epoch == 0
        if step % options.checkpoint_every == 0 or epoch_end or step == total or step == stop_after:
            last_good = checkpoint()
        if (epoch_end or step == total) and grid_rows is not None and accelerator.is_main_process:
            grids.append(str(edit_sample_grid(core, grid_rows, profile,
                                         out_dir / SAMPLES_DIR / f"epoch-{math.ceil(epoch):03d}.png")))
        if stop_after is not None and step >= stop_after:
            break  # as an interruption would: the checkpoint above holds everything a resume needs
    bar.close()
    if last_good is None or int(Path(last_good).stem.split("-")[1]) != step:
        last_good = checkpoint()
    model_file = out_dir / MODEL_FILE
    if accelerator.is_main_process:
        core.save_trained(model_file, extra={"step": step, "total_steps": total,
                                             "profile_fingerprint": profile.training_fingerprint()})
    accelerator.wait_for_everyone()
    return TrainResult(steps=step, total_steps=total, epochs=step / steps_per_epoch,
                       history=tuple(history), checkpoint=last_good, model_file=str(model_file),
                       sample_grids=tuple(sorted(set(grids))), resumed_from=resumed_from,
                       wall_s=time.perf_counter() - start_time,
                       train_wall_s=wall_before + time.perf_counter() - start_time)


def _incompatibility(ckpt: Path, model: ClipFaceFusion, profile, total: int) -> str | None:
    """Why ``ckpt`` cannot be resumed by this run (None if it can); a corrupt file raises."""
    _, meta = read_checkpoint(ckpt)
    if meta.get("profile_fingerprint") != profile.training_fingerprint():
        return "it was written with another profile"
    if meta.get("trainable") != model.trainable or json.loads(meta.get("signature", "{}")) != model.signature():
        return "it holds another architecture or trainable set"
    if json.loads(meta.get("backend_digests", "{}")) != model.backend_digests:
        return "it was trained on other backend weights"
    if meta.get("total_steps") != str(total):
        return f"it belongs to a {meta.get('total_steps')}-step schedule, this run has {total} (max_steps)"
    return None


def _diverged(what: str, step: int, terms: Mapping[str, Tensor], last_good: str | None, batch) -> None:
    bad = {k: float(v.detach()) for k, v in terms.items() if not math.isfinite(float(v.detach()))}
    keep = (f"The last good checkpoint, {last_good}, is kept; resume from it (lower the learning rate or "
            "inspect these rows)" if last_good else "No checkpoint had been written yet")
    rows = batch["index"].tolist() if "index" in batch else "?"
    raise TrainingDiverged(f"{what} at step {step + 1}; training stopped before updating the weights. "
                           f"Non-finite terms: {bad or 'none (only the gradient)'}; batch rows {rows}. {keep}.",
                           step + 1, last_good)


# ------------------------------------------------------------------------------------------ the trained file
def export_model(result: TrainResult, weights_dir: str | os.PathLike, profile, *,
                 command: str | None = None) -> Path:
    """Ship the trained parts: ``weights_dir/MODEL_FILE``, its provenance record (``cff_lib.weights``
    format: sha256, regenerating command, profile, commit, date; the loss history and sample-grid names in
    its config) and the per-epoch sample grids in ``weights_dir/SAMPLES_EXPORT/``."""
    import datetime as dt

    from cff_lib.provenance import git_commit
    from cff_lib.weights import WeightRecord, sha256_file, weight_paths

    src = Path(result.model_file)
    _, meta = read_checkpoint(src)
    dst, rec_path = weight_paths(Path(weights_dir) / MODEL_FILE)
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    grids = []
    for g in result.sample_grids:
        target = Path(weights_dir) / SAMPLES_EXPORT / Path(g).name
        with atomic_path(target) as tmp:
            shutil.copyfile(g, tmp)
        grids.append(f"{SAMPLES_EXPORT}/{target.name}")
    keep = ("step", "epoch", "lr", "loss") + LOSS_TERMS
    history = [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in h.items() if k in keep}
               for h in result.history]
    tail = [h["loss"] for h in result.history[-max(1, len(result.history) // 10):]]
    record = WeightRecord(
        name=dst.name[: -len(".safetensors")], file=dst.name, kind=meta.get("cff_kind", ""),
        sha256=sha256_file(dst), size_bytes=dst.stat().st_size,
        command=command or (f"python -m cff_lib.training --profile {profile.name} --export"
                            + (f" --max-steps {result.total_steps}" if result.total_steps else "")),
        profile=profile.name, fingerprint=profile.training_fingerprint(), commit=git_commit(),
        date=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        config={"trainable": meta.get("trainable"), "steps": result.steps, "total_steps": result.total_steps,
                "train_ddim_steps": train_ddim_steps(profile, TrainOptions()),
                "backend_digests": json.loads(meta.get("backend_digests", "{}")), "sample_grids": grids,
                "history": history},
        metrics={"final_train_loss": float(np.mean(tail)) if tail else float("nan"),
                 "train_wall_s": float(result.train_wall_s)})
    atomic_write_text(rec_path, json.dumps(record.to_dict(), indent=2, sort_keys=True) + "\n")
    return dst


def verify_model_file(profile, weights_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Check ``weights_dir/MODEL_FILE`` against its provenance record (sha256, profile); returns
    {"step", "sha256", "history", "sample_grids", "record"}. FileNotFoundError / ValueError otherwise."""
    from cff_lib.weights import read_record, verified_path

    path = weights_root(profile, weights_dir) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no trained ClipFaceFusion at {path}; train it with notebooks/03_training "
                                f"(or python -m cff_lib.training --profile {profile.name} --export)")
    verified_path(path)
    record = read_record(path)
    if record.fingerprint != profile.training_fingerprint():
        raise ValueError(f"{path} was trained with profile {record.profile!r} ({record.fingerprint}), "
                         f"not {profile.name!r} ({profile.training_fingerprint()})")
    return {"step": record.config.get("steps"), "sha256": record.sha256, "record": record,
            "history": record.config.get("history", []), "sample_grids": record.config.get("sample_grids", [])}


def reusable_model(profile, model: ClipFaceFusion, weights_dir: str | os.PathLike | None = None
                   ) -> tuple[bool, str]:
    """(True, why) when ``weights_dir/MODEL_FILE`` exists, matches its record and was trained for this
    profile, architecture and these backend weights; (False, why not) otherwise."""
    path = weights_root(profile, weights_dir) / MODEL_FILE
    try:
        info = verify_model_file(profile, weights_dir)
        _, meta = read_checkpoint(path)
    except (FileNotFoundError, ValueError) as err:
        return False, str(err)
    if meta.get("trainable") != model.trainable or json.loads(meta.get("signature", "{}")) != model.signature():
        return False, f"{path} holds another architecture or trainable set"
    if json.loads(meta.get("backend_digests", "{}")) != model.backend_digests:
        return False, f"{path} was trained on other backend weights (notebooks/02 retrained them)"
    return True, f"{path} ({info['step']} steps, sha256 {info['sha256'][:12]}…)"


# ------------------------------------------------------------------------------------------ figures
LOSS_TERMS = ("clip/loss", "av/loss", "age/loss", "emo/loss", "id/loss", "cross_modal/loss")


def loss_curves_figure(history: Sequence[Mapping[str, float]], smooth: int = 0):
    """L_Total and each of its terms against the step (one panel per term; a running mean if ``smooth``)."""
    import matplotlib.pyplot as plt

    if not history:
        raise ValueError("history is empty: no training step was recorded")
    names = ["loss"] + [k for k in LOSS_TERMS if any(k in h for h in history)]
    window = smooth or max(1, len(history) // 25)
    fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names), 2.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        pts = [(h["step"], h[name]) for h in history if name in h]
        steps, vals = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
        ax.plot(steps, vals, lw=0.6, alpha=0.4 if window > 1 else 1.0, color="C0")
        if window > 1 and len(vals) >= window:
            ax.plot(steps[window - 1:], np.convolve(vals, np.ones(window) / window, mode="valid"), color="C0")
        ax.set_title("L_Total" if name == "loss" else name.split("/")[0], fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def sample_grids_figure(paths: Sequence[str | os.PathLike]):
    """The per-epoch sample grids side by side (rows: source, reconstruction, edit, generation)."""
    import matplotlib.pyplot as plt
    from PIL import Image

    if not paths:
        raise ValueError("no sample grids to show")
    fig, axes = plt.subplots(1, len(paths), figsize=(3.2 * len(paths), 2.6), squeeze=False)
    for ax, p in zip(axes[0], paths, strict=True):
        with Image.open(p) as im:
            ax.imshow(np.asarray(im))
        ax.set_title(Path(p).stem.replace("-", " "), fontsize=9)
        ax.set_yticks([]), ax.set_xticks([])
    axes[0][0].set_ylabel("source / recon. / edit / gen.", fontsize=7)
    fig.tight_layout()
    return fig




def train_command(args) -> int:
    """``cff train model`` (``python -m cff_lib.training``): train (resuming from the run folder unless
    ``--fresh``), print the summary, ``--export`` ships the model to the profile's weights folder."""
    from cff_lib.config import load_profile
    from cff_lib.provenance import REPO_ROOT

    profile = load_profile(args.profile)
    out = Path(args.out) if args.out else REPO_ROOT / "build" / "train" / profile.name
    result = train(profile, out, max_steps=args.max_steps or None, resume=not args.fresh)
    print(f"{result.steps} steps in {result.wall_s:.0f} s ({result.train_wall_s:.0f} s for the whole run); "
          f"model {result.model_file}")
    if args.export:
        print("exported", export_model(result, weights_root(profile), profile))
    return 0


__all__ = ["TrainOptions", "TrainResult", "TrainingDiverged", "export_model", "load_checkpoint",
           "loss_curves_figure", "reusable_model", "sample_grids_figure", "save_checkpoint",
           "train", "verify_model_file"]


if __name__ == "__main__":  # the entry point its provenance record quotes: the same as `cff train model`
    from cff_lib.train_commands import run

    raise SystemExit(run("model", train_command, prog="python -m cff_lib.training"))
