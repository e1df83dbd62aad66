"""How fast the paper world's loaders fail without their weights, and how fast faces render (the timings
the tests used to assert; tests now check that no network connection is attempted instead).

OMP_NUM_THREADS=1 .venv/bin/python bench/bench_fail_fast.py   # -> bench/results/bench_fail_fast.json
"""
import json
import tempfile
import time
from pathlib import Path

from cff_lib.atomic import atomic_write_text


def _seconds(fn) -> float:
    t = time.perf_counter()
    try:
        fn()
    except FileNotFoundError:
        return round(time.perf_counter() - t, 3)
    raise SystemExit(f"{fn} did not raise FileNotFoundError")


def main():
    import numpy as np

    from cff_lib.arcface import create_arcface
    from cff_lib.audio_encoder import create_audio_encoder
    from cff_lib.backends import create_encoders
    from cff_lib.clip_encoder import create_clip
    from cff_lib.conditional_unet import load_unet
    from cff_lib.estimators import create_age_estimator
    from cff_lib.synthetic_faces import FaceAttributes, render_face, sample_identity
    from cff_lib.vgg_perceptual import create_vgg

    tmp = Path(tempfile.mkdtemp())
    fails = {
        "arcface": lambda: create_arcface("pretrained", tmp / "backbone.pth"),
        "wav2vec2": lambda: create_audio_encoder("pretrained", tmp / "absent"),
        "clip": lambda: create_clip("pretrained", tmp / "nope.safetensors"),
        "ddpm_unet (hub id)": lambda: load_unet("google/ddpm-ema-celebahq-256"),
        "encoders": lambda: create_encoders("pretrained", {}),
        "age_estimator": lambda: create_age_estimator("pretrained", None),
        "vgg16": lambda: create_vgg("pretrained", tmp / "vgg16-397923af.pth"),
    }
    out = {"fail_seconds": {k: _seconds(f) for k, f in fails.items()}}
    rng = np.random.default_rng(0)
    ids = [sample_identity(rng) for _ in range(10)]
    t = time.perf_counter()
    for i in range(100):
        render_face(FaceAttributes(ids[i % 10], 16 + i % 80, "happy", 0.7), 64, variation_seed=i)
    out["render_faces_per_s_64px"] = round(100 / (time.perf_counter() - t), 1)
    print(json.dumps(out, indent=2))
    atomic_write_text(Path("bench/results/bench_fail_fast.json"), json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
