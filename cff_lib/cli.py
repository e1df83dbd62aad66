"""The ``cff`` command: ``cff reproduce``, ``cff profiles``, ``cff synth``, ``cff manifests``, ``cff weights``,
``cff rehearse`` (the paper world in miniature, ``cff_lib.rehearsal``), ``cff train {vision,audio,ddpm,model,
baseline}`` (every trainer; arguments in ``cff_lib.train_commands``), ``cff edit``, ``cff generate`` and
``cff app`` (the last three: ``cff_lib.editing``, ``cff_lib.app``)."""
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
    if profile.model.backend == "pretrained":
        return _paper_weights(profile)
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


def _paper_weights(profile) -> int:
    """``cff weights verify`` on a paper-world profile: every brought file against its true architecture."""
    from cff_lib import rehearsal
    from cff_lib.model import weights_root

    problems = rehearsal.check(profile)
    for problem in problems:
        print(f"weights: {problem}", file=sys.stderr)
    print(f"== paper world {profile.name}: weights {weights_root(profile)}, data {profile.data.root}: "
          + ("every file has its architecture and format; every dataset is there" if not problems
             else f"{len(problems)} problems (docs/paper_world.md, the reviewer's checklist)"))
    return 0 if not problems else 1


def _rehearse(args) -> int:
    from cff_lib import rehearsal
    from cff_lib.config import load_profile

    profile = load_profile(args.profile)
    if args.action == "build":
        rehearsal.build(profile, overwrite=args.overwrite)
        return 0
    if args.action == "check":
        return _paper_weights(profile)
    for path in rehearsal.clean(profile):
        print(f"deleted {path}")
    return 0


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


def _study(args) -> int:
    from cff_lib import study

    if args.action == "create":
        if bool(args.images) == bool(args.profile):
            raise ValueError("cff study create: give exactly one of --images DIR or --profile P")
        if args.images:
            samples, source = study.read_images_folder(args.images), f"images folder {args.images}"
        else:
            print(f"running the evaluation's methods on {args.faces} held-out faces of profile {args.profile!r} ...")
            samples = study.samples_from_evaluation(args.profile, n_faces=args.faces, seed=args.seed)
            source = f"cff_lib.evaluation.run_methods, profile {args.profile}, {args.faces} faces, seed {args.seed}"
        info = study.create_study(args.study, samples, samples_per_method=args.per_method,
                                  attention_checks=args.attention_checks, source=source, overwrite=args.overwrite)
        print(f"study at {info.path}: {len(info.methods)} methods x {info.n_faces} faces; each rater rates "
              f"{info.slots_per_rater} pairs ({info.samples_per_method} per method + {info.attention_checks} "
              f"repeated); journal {info.journal_mode}")
        return 0
    if args.action == "serve":
        from cff_lib.study_app import serve

        serve(args.study, host=args.host, port=args.port)
        return 0
    if not args.out:
        raise ValueError("cff study export: --out CSV is required")
    out = study.export_csv(args.study, args.out, close=args.close)
    info = study.Study(args.study).info()
    print(f"wrote {info.n_ratings} ratings of {info.n_raters} raters to {out} (study {info.status})")
    return 0


def _runs(args) -> int:
    import json

    from cff_lib.provenance import REPO_ROOT
    from cff_lib.runstore import RunStore, RunStoreError

    store = RunStore(args.store or REPO_ROOT / "build" / "run_store")
    try:
        if args.action == "list":
            runs = store.runs()
            for r in runs:
                seed = "-" if r.seed is None else r.seed
                print(f"{r.run_id}  {r.status:<10} {r.profile or '-':<12} seed {seed!s:<5} {r.label}")
                for problem in r.problems:
                    print(f"    {problem}")
            counts = {s: sum(r.status == s for r in runs) for s in sorted({r.status for r in runs})}
            print(f"== {len(runs)} runs in {store.root}" + "".join(f", {n} {s}" for s, n in counts.items()))
            return 0
        if args.action == "show":
            if not args.run:
                raise ValueError("cff runs show: give a run id (or its first digits; cff runs list shows them)")
            shown = store.show(args.run)
            if isinstance(shown.get("run"), dict) and not args.settings:
                shown["run"] = {k: v for k, v in shown["run"].items() if k != "identity"}
            print(json.dumps(shown, indent=2, sort_keys=True))
            return 0 if shown["status"] == "complete" else 1
        removed = store.clean(work=args.work, dry_run=args.dry_run)
        for path in removed:
            print(("would delete " if args.dry_run else "deleted ") + str(path))
        print(f"== {len(removed)} folders {'to delete' if args.dry_run else 'deleted'} in {store.root}")
        return 0
    except RunStoreError as err:
        print(f"cff: error: {err}", file=sys.stderr)
        return 2


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


def _train(args) -> int:
    """``cff train <target>``: each trainer's ``train_command`` (the arguments: ``cff_lib.train_commands``)."""
    from cff_lib.train_commands import set_threads

    set_threads(args)
    if args.target == "vision":
        from cff_lib.pretrain_vision import train_command
    elif args.target == "audio":
        from cff_lib.pretrain_audio import train_command
    elif args.target == "ddpm":
        from cff_lib.pretrain_ddpm import train_command
    elif args.target == "model":
        from cff_lib.training import train_command
    else:
        from cff_lib.baselines import train_command
    return train_command(args)


def build_parser() -> argparse.ArgumentParser:
    """The ``cff`` argument parser (every sub-command)."""
    from cff_lib.train_commands import add_train_parser

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
    rh = sub.add_parser("rehearse", help="the paper world in miniature: random weights of the true "
                        "architectures + 256² data in the real layouts, under build/rehearsal/ (issue 15)")
    rh.add_argument("action", choices=["build", "check", "clean"])
    rh.add_argument("--profile", default="paper_rehearsal", help="a rehearsal preset (runner.rehearsal: true)")
    rh.add_argument("--overwrite", action="store_true", help="build: rewrite the data and every weights file")
    rh.set_defaults(func=_rehearse)
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
    st = sub.add_parser("study", help="the blind user study (Fig. 8): create it, serve the rating page, export CSV")
    st.add_argument("action", choices=["create", "serve", "export"])
    st.add_argument("study", help="the study's SQLite file, e.g. build/study/toy.sqlite")
    st.add_argument("--images", default=None, metavar="DIR", help="create from DIR/reference/*.png and "
                    "DIR/<method>/*.png (same file names)")
    st.add_argument("--profile", default=None, help="create from the evaluation's methods on this profile")
    st.add_argument("--faces", type=int, default=20, help="held-out faces per method with --profile (default 20)")
    st.add_argument("--seed", type=int, default=0, help="which held-out faces with --profile (default 0)")
    st.add_argument("--per-method", type=int, default=10, help="pairs per method each rater sees (default 10)")
    st.add_argument("--attention-checks", type=int, default=2, help="repeated pairs per rater (default 2)")
    st.add_argument("--overwrite", action="store_true", help="replace an existing study file")
    st.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    st.add_argument("--port", type=int, default=7870)
    st.add_argument("--out", default=None, help="export: the CSV to write")
    st.add_argument("--close", action="store_true", help="export: close the study first (reveals the methods)")
    st.set_defaults(func=_study)
    ru = sub.add_parser("runs", help="the run store of ablations and sweeps: list, show one, clean")
    ru.add_argument("action", choices=["list", "show", "clean"])
    ru.add_argument("run", nargs="?", default=None, help="show: a run id or its first digits")
    ru.add_argument("--store", default="", help="the run store's folder (default build/run_store)")
    ru.add_argument("--settings", action="store_true", help="show: also print the run's resolved settings")
    ru.add_argument("--work", action="store_true", help="clean: also the scratch folders of unfinished trainings")
    ru.add_argument("--dry-run", action="store_true", help="clean: only list what would be deleted")
    ru.set_defaults(func=_runs)
    add_train_parser(sub).set_defaults(func=_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"cff: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
