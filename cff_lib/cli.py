"""The ``cff`` command: ``cff reproduce``, ``cff profiles``, ``cff synth``, ``cff manifests``, ``cff weights``,
``cff edit``, ``cff generate`` and ``cff app`` (the last three: ``cff_lib.editing``, ``cff_lib.app``)."""
from __future__ import annotations

import argparse
import sys


def _reproduce(args) -> int:
    from cff_lib.runner import NotebookFailure, reproduce

    try:
        reproduce(args.profile, figures_dir=args.figures_dir, build_dir=args.build_dir, only=args.only,
                  notebooks_dir=args.notebooks_dir)
    except NotebookFailure as failure:
        print(failure.report, file=sys.stderr)
        return 1
    return 0


def _profiles(args) -> int:
    from cff_lib.config import list_profiles, load_profile

    for name in list_profiles():
        p = load_profile(name)
        print(f"{name:<14} {p.fingerprint()}  {p.description}")
    return 0


def _synth(args) -> int:
    from cff_lib.config import load_profile
    from cff_lib.world import ensure_world

    root = ensure_world(load_profile(args.profile), overwrite=args.overwrite)
    print(f"datasets at {root}")
    return 0


def _manifests(args) -> int:
    from cff_lib.config import load_profile
    from cff_lib.world import build_world_manifests, verify_world_manifests

    profile = load_profile(args.profile)
    if args.action == "build":
        for name, path in build_world_manifests(profile).items():
            print(f"{name}: {path}")
        return 0
    reports = verify_world_manifests(profile)
    for name, report in reports.items():
        print(f"{name}: {report.summary()}")
    return 0 if all(r.ok for r in reports.values()) else 1


def _weights(args) -> int:
    from cff_lib.config import load_profile
    from cff_lib.provenance import REPO_ROOT
    from cff_lib.weights import verify_weights

    profile = load_profile(args.profile)
    folder = REPO_ROOT / profile.model.weights_dir
    if not folder.is_dir():
        print(f"no weights at {folder} yet (notebook 02 trains them); nothing to verify")
        return 0
    problems = verify_weights(folder)
    for problem in problems:
        print(f"weights: {problem}", file=sys.stderr)
    n = len(list(folder.glob("*.provenance.json")))
    print(f"== weights {folder}: {n} records, " + ("all hashes match" if not problems else f"{len(problems)} problems"))
    return 0 if not problems else 1


def _edit(args) -> int:
    from cff_lib.editing import run_edit

    run_edit(args.face, args.out, text=args.text, age=args.age, emotion=args.emotion, intensity=args.intensity,
             gender=args.gender, audio=args.audio, t0=args.t0, steps=args.steps, profile=args.profile,
             upscale=args.upscale)
    return 0


def _generate(args) -> int:
    from cff_lib.editing import run_generate

    run_generate(args.out, args.n, text=args.text, age=args.age, emotion=args.emotion, intensity=args.intensity,
                 gender=args.gender, audio=args.audio, steps=args.steps, seed=args.seed, profile=args.profile,
                 upscale=args.upscale)
    return 0


def _app(args) -> int:
    from cff_lib.app import serve

    serve(args.profile, host=args.host, port=args.port, share=args.share)
    return 0


def _add_conditions(p: argparse.ArgumentParser) -> None:
    from cff_lib.emotions import EMOTIONS

    p.add_argument("--text", default=None, help="target text T, e.g. 'a 70-year-old smiling woman' (default: "
                   "built from --age, --emotion and --gender)")
    p.add_argument("--age", type=float, default=None, help="target age in years, 0-120")
    p.add_argument("--emotion", default=None, metavar="NAME", help=f"target emotion: {', '.join(EMOTIONS)}")
    p.add_argument("--intensity", type=float, default=1.0, help="emotion intensity in [0, 1] (default 1)")
    p.add_argument("--gender", default=None, choices=["female", "male"], help="only words the default caption")
    p.add_argument("--audio", default=None, metavar="WAV", help="a voice clip (any file soundfile reads; "
                   "mixed to mono, resampled to 16 kHz, at most 30 s)")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the profile's)")
    p.add_argument("--profile", default="toy", help="preset name or YAML path (default toy)")
    p.add_argument("--upscale", type=int, default=1, help="enlarge the written PNG N times (nearest; default 1)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cff", description="ClipFaceFusion companion")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("reproduce", help="run every notebook in order with papermill")
    r.add_argument("--profile", default="toy", help="preset name (cff profiles lists them) or YAML path")
    r.add_argument("--figures-dir", default="", help="where figures and tables go (default: figures/)")
    r.add_argument("--build-dir", default="", help="where executed notebooks go (default: build/notebooks/<profile>)")
    r.add_argument("--only", nargs="*", help="run only notebooks whose name starts with these prefixes (e.g. 01)")
    r.add_argument("--notebooks-dir", default="", help="folder of NN_name.ipynb notebooks (default: notebooks/)")
    r.set_defaults(func=_reproduce)
    p = sub.add_parser("profiles", help="list the presets")
    p.set_defaults(func=_profiles)
    s = sub.add_parser("synth", help="generate the profile's synthetic world (if missing)")
    s.add_argument("--profile", default="toy")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=_synth)
    m = sub.add_parser("manifests", help="build or verify the profile's dataset manifests")
    m.add_argument("action", choices=["build", "verify"])
    m.add_argument("--profile", default="toy")
    m.set_defaults(func=_manifests)
    w = sub.add_parser("weights", help="verify shipped weights against their provenance records (sha256)")
    w.add_argument("action", choices=["verify"])
    w.add_argument("--profile", default="toy")
    w.set_defaults(func=_weights)
    e = sub.add_parser("edit", help="edit a face image toward text / age / emotion / voice targets")
    e.add_argument("face", help="face image (any file Pillow reads; centre-cropped, resized to the profile's size)")
    _add_conditions(e)
    e.add_argument("--t0", type=int, default=None, help="inversion depth in [1, 999] (default: the profile's)")
    e.add_argument("--out", required=True, help="where to write the edited face (.png)")
    e.set_defaults(func=_edit)
    g = sub.add_parser("generate", help="draw faces from noise toward text / age / emotion / voice targets")
    _add_conditions(g)
    g.add_argument("-n", type=int, default=4, help="how many faces (1-64, default 4)")
    g.add_argument("--seed", type=int, default=0, help="seed of the initial noise x_T (default 0)")
    g.add_argument("--out", required=True, help="where to write the grid of faces (.png)")
    g.set_defaults(func=_generate)
    a = sub.add_parser("app", help="the web editor (Gradio), on 127.0.0.1 unless --host says otherwise")
    a.add_argument("--profile", default="toy")
    a.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    a.add_argument("--port", type=int, default=7860)
    a.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    a.set_defaults(func=_app)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"cff: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
