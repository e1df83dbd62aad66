"""The arguments of ``cff train {vision,audio,ddpm,model,baseline}``: one parser per trainer, defined once.

``cff train TARGET ...`` (:mod:`cff_lib.cli`) parses with these and hands the namespace to the trainer's
``train_command(args) -> int``: ``pretrain_vision`` (CLIP, AgeEst + EmoEst, ArcFace, the perceptual VGG),
``pretrain_audio`` (Wav2Vec2 + its heads), ``pretrain_ddpm`` (the unconditional face DDPM), ``training``
(ClipFaceFusion) and ``baselines`` (the text-only DiffusionCLIP-style baseline).

The entry points that provenance records and docs quote stay: ``python -m cff_lib.pretrain_audio ARGS``,
``python -m cff_lib.pretrain_ddpm ARGS`` and ``python -m cff_lib.training ARGS`` are ``cff train audio|ddpm|model
ARGS`` (:data:`ALIASES`; each module's ``__main__`` parses with :func:`parse` and calls its own
``train_command`` through :func:`run`), and ``baselines.cli(profile)`` is ``cff train baseline --profile PROFILE``.

This module imports argparse only (no trainer, no torch), so ``cff --help`` stays fast and every trainer can
use it without an import cycle.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

TARGETS: dict[str, str] = {
    "vision": "the synthetic world's vision backends: CLIP, AgeEst + EmoEst, ArcFace, the perceptual VGG",
    "audio": "the synthetic world's Wav2Vec2 encoder and its emotion and age heads",
    "ddpm": "the synthetic world's unconditional face DDPM",
    "model": "ClipFaceFusion itself (resumable; --export ships it to the profile's weights folder)",
    "baseline": "the text-only DiffusionCLIP-style baseline (on the trained model), if not trained yet",
}
"""``cff train`` target -> what it trains."""

ALIASES: dict[str, str] = {"cff_lib.pretrain_audio": "audio", "cff_lib.pretrain_ddpm": "ddpm",
                           "cff_lib.training": "model"}
"""``python -m`` module kept as an entry point (provenance records quote it) -> its ``cff train`` target."""

VISION_MODELS = ("clip", "estimators", "arcface", "vgg")  # pretrain_vision.TRAINERS' keys, in training order
DDPM_PRESETS = ("ci", "toy", "toy_v2")  # pretrain_ddpm.PRESETS' keys (tests check the two agree)


def add_target_arguments(p: argparse.ArgumentParser, target: str) -> argparse.ArgumentParser:
    """The arguments of ``cff train <target>`` on ``p``."""
    if target not in TARGETS:
        raise ValueError(f"target={target!r} must be one of {list(TARGETS)}")
    p.add_argument("--profile", default="toy", help="profile name (default: toy)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    if target == "baseline":
        return p
    if target == "model":
        p.add_argument("--max-steps", type=int, default=0, help="steps of the schedule (0: the profile's epochs)")
        p.add_argument("--out", default="", help="run folder (default build/train/<profile>)")
        p.add_argument("--export", action="store_true", help="ship the result to the profile's weights_dir")
        p.add_argument("--fresh", action="store_true", help="do not resume from the run folder's checkpoints")
        return p
    p.add_argument("--out", default=None, help="weights folder (default: the profile's model.weights_dir)")
    p.add_argument("--steps", type=int, default=None, help="override the preset's step count")
    if target == "vision":
        p.add_argument("--only", nargs="+", choices=VISION_MODELS, default=None,
                       help="train only these models (default: all four, in this order)")
        return p
    p.add_argument("--resume", action="store_true", help="continue from the saved training state")
    p.add_argument("--max-wall-s", type=float, default=None, help="stop (resumably) after this many seconds")
    if target == "ddpm":
        p.add_argument("--grid", default=None, help="also write a sample grid PNG here")
        p.add_argument("--preset", default=None, choices=DDPM_PRESETS,
                       help="pre-training preset (default: the shipped one, ci for the ci profile, toy_v2 otherwise)")
        p.add_argument("--name", default="ddpm", help="weight file stem (default ddpm)")
        p.add_argument("--state", default=None, help="resumable state file (default under build/pretrain_state/)")
        p.add_argument("--snapshot", action="store_true",
                       help="write the EMA weights and <name>_progress.json at every saved state")
    return p


def add_train_parser(sub) -> argparse.ArgumentParser:
    """``cff train`` with one sub-command per target, on the ``cff`` sub-parsers ``sub``."""
    t = sub.add_parser("train", help="train a backend, ClipFaceFusion or the baseline (one sub-command each)")
    targets = t.add_subparsers(dest="target", required=True, metavar="{" + ",".join(TARGETS) + "}")
    for name, what in TARGETS.items():
        add_target_arguments(targets.add_parser(name, help=what, description=f"Train {what}."), name)
    return t


def set_threads(args: argparse.Namespace) -> None:
    """Apply ``--threads`` (torch.set_num_threads) before a trainer runs."""
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads={args.threads} must be a positive int")
        import torch

        torch.set_num_threads(args.threads)


def run(target: str, train_command, argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """An old ``python -m`` entry point: parse as ``cff train <target>``, run ``train_command``; a ValueError
    or FileNotFoundError is reported as ``cff`` reports it (exit status 2)."""
    import sys

    prog = prog or f"cff train {target}"
    args = parse(target, argv, prog)
    try:
        return train_command(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2


def parse(target: str, argv: Sequence[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """``cff train <target>``'s arguments parsed from ``argv``, ``--threads`` applied (the old ``python -m``
    entry points use it)."""
    p = add_target_arguments(argparse.ArgumentParser(prog=prog or f"cff train {target}",
                                                     description=f"Train {TARGETS.get(target, target)}."), target)
    args = p.parse_args(argv)
    args.target = target
    set_threads(args)
    return args


__all__ = ["ALIASES", "DDPM_PRESETS", "TARGETS", "VISION_MODELS", "add_target_arguments", "add_train_parser",
           "parse", "run", "set_threads"]
