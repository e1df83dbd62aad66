"""The ``cff`` command: ``cff reproduce``, ``cff profiles``, ``cff synth``, ``cff manifests``."""
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
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"cff: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
