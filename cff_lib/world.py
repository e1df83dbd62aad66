"""From a profile to data on disk: the synthetic world (or the real one), its manifests, the composite set.

This is the assembly that notebooks/01_data_assembly.ipynb narrates (paper "Datasets", "Training
procedure"). The same calls serve both worlds: a synthetic profile generates its four datasets under
``profile.data.root`` when they are missing; a real profile expects local copies there (docs/data.md).

Manifests live in ``data_manifests/<world>/<profile>/``. When committed manifests exist they are *verified*
against the data (the generator is byte-deterministic, so a mismatch means the code or a pinned library
changed); otherwise they are built and written. The composite set is written beside them the same way.
"""
from __future__ import annotations

from pathlib import Path

from cff_lib.composite import CompositeSet, MixedBatchSampler, build_composite, read_composite, write_composite
from cff_lib.manifests import (
    DATASETS,
    Manifest,
    VerifyReport,
    build_manifest,
    manifest_filename,
    read_manifest,
    verify_manifest,
    write_manifest,
)
from cff_lib.provenance import REPO_ROOT

COMPOSITE_NAME = "composite.csv"


def data_root(profile) -> Path:
    root = Path(profile.data.root)
    return root if root.is_absolute() else REPO_ROOT / root


def manifest_dir(profile) -> Path:
    return REPO_ROOT / "data_manifests" / profile.data.world / profile.name


def world_spec(profile):
    """The synthetic world a profile asks for (seed: ``data.world_seed``, else the profile's global seed)."""
    from cff_lib.synthetic_world import WorldSpec

    d = profile.data
    return WorldSpec(
        seed=profile.train.seed if d.world_seed is None else d.world_seed, image_size=d.image_size,
        n_ffhq=d.n_ffhq, n_cacd_identities=d.n_cacd_identities,
        cacd_images_per_identity=d.cacd_images_per_identity, n_ravdess_actors=d.n_ravdess_actors,
        n_vox_speakers=d.n_vox_speakers, vox_videos_per_speaker=d.vox_videos_per_speaker,
        vox_utterances_per_video=d.vox_utterances_per_video, voice_seconds=d.voice_seconds,
        sample_rate=d.sample_rate,
    )


def ensure_world(profile, *, overwrite: bool = False, progress: bool = True) -> Path:
    """The folder holding the profile's four datasets; generates a synthetic world that is missing."""
    root = data_root(profile)
    present = [n for n in DATASETS if (root / n).is_dir()]
    if profile.data.world == "real":
        if len(present) < len(DATASETS):
            missing = ", ".join(str(root / n) for n in DATASETS if n not in present)
            raise FileNotFoundError(f"real datasets missing: {missing}. Place local copies there in their "
                                    "original layout (docs/data.md); nothing is downloaded.")
        from cff_lib.paper_world import PaperWorldError, check_data_root

        problems = check_data_root(root)  # a folder with nothing of its dataset's naming in it
        if problems:
            raise PaperWorldError(problems, what="real data root")
        return root
    if len(present) == len(DATASETS) and not overwrite:
        return root
    if present and not overwrite:
        raise FileExistsError(f"{root} holds only part of a synthetic world ({', '.join(present)}); "
                              "regenerate it with `cff synth --profile " + profile.name + " --overwrite`")
    from cff_lib.synthetic_world import write_world

    write_world(root, world_spec(profile), progress=progress, overwrite=overwrite)
    return root


def build_world_manifests(profile, *, progress: bool = True) -> dict[str, Path]:
    """Build and write the manifest of every dataset of the profile's world."""
    root, out = data_root(profile), manifest_dir(profile)
    paths = {}
    for name in DATASETS:
        m = build_manifest(name, root / name, seed=profile.train.seed, progress=progress)
        paths[name] = write_manifest(m, out / manifest_filename(name))
    return paths


def verify_world_manifests(profile, *, progress: bool = False) -> dict[str, VerifyReport]:
    """Check every manifest against the files (missing, extra, corrupt); modifies nothing."""
    root, folder = data_root(profile), manifest_dir(profile)
    reports = {}
    for name in DATASETS:
        path = folder / manifest_filename(name)
        if not path.is_file():
            raise FileNotFoundError(f"no manifest {path}; build it with `cff manifests build --profile {profile.name}`")
        reports[name] = verify_manifest(read_manifest(path), root / name, progress=progress)
    return reports


def prepare_manifests(profile, *, rebuild: bool = False, progress: bool = True) -> dict[str, Manifest]:
    """Verified manifests of the profile's world: committed ones are verified (a mismatch is an error
    naming the files); missing ones (or all, with ``rebuild``) are built and written first."""
    folder = manifest_dir(profile)
    if rebuild or not all((folder / manifest_filename(n)).is_file() for n in DATASETS):
        build_world_manifests(profile, progress=progress)
    reports = verify_world_manifests(profile, progress=progress)
    bad = [r.summary() for r in reports.values() if not r.ok]
    if bad:
        raise ValueError("data does not match its manifests:\n" + "\n".join(bad))
    return {n: read_manifest(folder / manifest_filename(n)) for n in DATASETS}


def prepare_composite(profile, manifests: dict[str, Manifest], *, rebuild: bool = False) -> CompositeSet:
    """The composite set (deterministic from the seed); must equal the committed one when that exists."""
    built = build_composite(manifests, n_train=profile.data.n_train, n_val=profile.data.n_val,
                            seed=profile.train.seed, ratios=profile.data.mix, progress=False)
    path = manifest_dir(profile) / COMPOSITE_NAME
    if path.is_file() and not rebuild:
        committed = read_composite(path)
        if committed.samples != built.samples:
            raise ValueError(f"{path} differs from the composite set rebuilt from the manifests "
                             f"(seed {profile.train.seed}); rebuild it deliberately with rebuild=True")
        return committed
    write_composite(built, path)
    return built


def mixing_check(profile, composite: CompositeSet, n_batches: int = 1000) -> dict[str, float]:
    """Fraction of each source over ``n_batches`` training batches of the profile's batch size."""
    sampler = MixedBatchSampler(composite.source_indices("train"), profile.train.batch_size,
                                ratios=profile.data.mix, seed=profile.train.seed, n_batches=n_batches)
    totals = dict.fromkeys(DATASETS, 0)
    for i in range(n_batches):
        for name, k in sampler.counts_for_batch(i).items():
            totals[name] += k
    n = sum(totals.values())
    return {name: totals[name] / n for name in DATASETS}
