"""`cff edit` / `cff generate` end to end on a held-out face with the shipped toy model, and every bad input
refused with a message naming it and nothing written (cff_lib.editing, cff_lib.cli)."""
from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from cff_lib import cli, editing
from cff_lib.editing import Editor, InputError, Target, conditions_for

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------ fixtures
def held_out_face_file(folder: Path) -> Path:
    """A held-out face of the toy world as a PNG in ``folder``: the first val face of the toy FFHQ manifest
    when the world is on disk, else a fresh render of an identity no world file uses."""
    from cff_lib.config import load_profile
    from cff_lib.manifests import manifest_filename, read_manifest
    from cff_lib.world import data_root, manifest_dir

    p = load_profile("toy")
    out = folder / "held_out_face.png"
    manifest = manifest_dir(p) / manifest_filename("ffhq")
    if manifest.is_file():
        for e in read_manifest(manifest).entries:
            src = data_root(p) / "ffhq" / e.path
            if e.split == "val" and src.is_file():
                shutil.copyfile(src, out)
                return out
    from cff_lib.synthetic_faces import FaceAttributes, render_face, sample_identity

    ident = sample_identity(np.random.default_rng(987_654), "female")
    render_face(FaceAttributes(ident, 35.0, "neutral"), 32).save(out)
    return out


@pytest.fixture(scope="module")
def toy_editor():
    from conftest import random_referees

    return Editor.load("toy", referees=random_referees(32))


@pytest.fixture
def face(tmp_path) -> Path:
    return held_out_face_file(tmp_path)


@pytest.fixture
def use_editor(monkeypatch, toy_editor):
    """`cff edit` / `cff generate` get the module's loaded toy editor instead of loading the model again."""
    monkeypatch.setattr(Editor, "load", classmethod(lambda cls, profile="toy", **kw: toy_editor))
    return toy_editor


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if anything tries to load the model (bad inputs must be refused before)."""
    def refuse(cls, *a, **k):
        raise AssertionError("the model was loaded although an input was bad")

    monkeypatch.setattr(Editor, "load", classmethod(refuse))


def write_wav(path: Path, seconds: float, rate: int = 44100, channels: int = 2, fill: str = "tone") -> Path:
    n = int(seconds * rate)
    t = np.arange(n) / rate
    wave = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    if fill == "silent":
        wave = np.zeros(n)
    data = np.stack([wave * (0.8 + 0.2 * k) for k in range(channels)], 1).astype(np.float32)
    if fill == "nan":
        data[n // 2] = np.nan
    sf.write(str(path), data, rate, subtype="FLOAT")
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` (no pixel data): what a decompression bomb shows Pillow."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


# ------------------------------------------------------------------------------------------ end to end
def test_cff_edit_on_a_held_out_face_writes_the_edit_and_prints_the_referees(face, tmp_path, capsys, use_editor):
    out = tmp_path / "sub" / "edited.png"
    rc = cli.main(["edit", str(face), "--age", "70", "--emotion", "happy", "--t0", "200", "--steps", "5",
                   "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    with Image.open(out) as im:
        assert im.size == (32, 32) and im.mode == "RGB"
    assert "kept at 32x32" in text or "resized to 32x32" in text  # says what it did to the file
    assert "age" in text and "emotion" in text and "identity" in text and "cosine to the input" in text
    assert f"wrote {out}" in text
    assert not [p for p in out.parent.iterdir() if p.suffix == ".tmp"]


def test_the_edit_is_exactly_the_models_edit(face, toy_editor):
    image = toy_editor.read_face(face).image
    target = editing.make_target(age=60, emotion="sad", gender="female")
    ours = toy_editor.edit(image, target, 200, 4)["edit"]
    keep = toy_editor.profile.ddim.preserve_threshold  # toy edits preserving (cff_lib.ddim)
    assert keep is not None
    ref = toy_editor.model.edit(image[None], conditions_for(target, 1), 200, 4, spacing=toy_editor.spacing,
                                preserve_threshold=keep)[0]
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    plain = toy_editor.model.edit(image[None], conditions_for(target, 1), 200, 4, spacing=toy_editor.spacing)[0]
    assert not torch.allclose(ours, plain, atol=1e-3)  # the preserving edit is not the plain one
    # the second edit of the face reuses its inversion and reconstruction: only the conditioned chains run
    calls = []
    again = toy_editor.edit(image, target, 200, 4, progress=lambda d, t, s: calls.append((d, t, s)))["edit"]
    torch.testing.assert_close(again, ours, rtol=0, atol=0)
    assert calls[-1][:2] == (8, 8) and {s for *_, s in calls} == {"editing"}
    # a series edits each target as edit() does
    older = editing.make_target(age=80, emotion="happy", gender="female")
    many = toy_editor.edit_many(image, [target, older], 200, 4)
    torch.testing.assert_close(many[0], ours, rtol=0, atol=1e-5)
    torch.testing.assert_close(many[1], toy_editor.edit(image, older, 200, 4)["edit"], rtol=0, atol=1e-5)


def test_intensity_blends_between_no_emotion_and_the_full_emotion(face, toy_editor):
    image = toy_editor.read_face(face).image[None]
    full = toy_editor.condition([editing.make_target(age=50, emotion="angry", intensity=1.0)], image)
    none = toy_editor.condition([editing.make_target(age=50)], image)
    half = toy_editor.condition([editing.make_target(age=50, emotion="angry", intensity=0.5)], image)
    zero = toy_editor.condition([editing.make_target(age=50, emotion="angry", intensity=0.0)], image)
    torch.testing.assert_close(half, 0.5 * (full + none), rtol=0, atol=1e-5)
    torch.testing.assert_close(zero, none, rtol=0, atol=1e-6)
    assert not torch.allclose(full, none)


def test_cff_edit_with_a_stereo_44k_voice_and_text(face, tmp_path, capsys, use_editor):
    wav = write_wav(tmp_path / "voice.wav", 2.0, rate=44100, channels=2)
    out = tmp_path / "voiced.png"
    rc = cli.main(["edit", str(face), "--text", "a 40-year-old angry woman", "--audio", str(wav), "--t0", "150",
                   "--steps", "3", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and out.is_file()
    assert "2 channels mixed to mono" in text and "resampled 44100 -> 16000 Hz" in text


def test_missing_referees_still_write_the_edit_with_a_one_line_note(face, tmp_path, capsys, monkeypatch, toy_editor):
    import cff_lib.referees

    def missing(*a, **k):
        raise FileNotFoundError("referee weights not found at 'weights/synthetic/referee_attributes.safetensors'")

    monkeypatch.setattr(cff_lib.referees, "load_referees", missing)
    bare = Editor(toy_editor.model, toy_editor.profile)  # referees=None: loaded (and missed) on first use
    monkeypatch.setattr(Editor, "load", classmethod(lambda cls, profile="toy", **kw: bare))
    out = tmp_path / "edited.png"
    assert cli.main(["edit", str(face), "--age", "30", "--t0", "100", "--steps", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.is_file()
    notes = [line for line in text.splitlines() if line.startswith("referees:")]
    assert len(notes) == 1 and "no readings" in notes[0] and "written without readings" in notes[0]
    assert "identity" not in text


def test_cff_generate_writes_a_grid(tmp_path, capsys, use_editor):
    out = tmp_path / "grid.png"
    rc = cli.main(["generate", "-n", "3", "--emotion", "happy", "--age", "30", "--steps", "4", "--seed", "1",
                   "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    with Image.open(out) as im:
        assert im.size == (2 * 32 + 2, 2 * 32 + 2)  # 3 faces, 2 per row, 2-px gaps
    assert text.count("face ") >= 3 and f"wrote {out}" in text


def test_generate_warns_when_the_chain_saturates(tmp_path, capsys, use_editor, monkeypatch):
    from cff_lib import ddim

    monkeypatch.setattr(ddim, "generate", lambda unet, c, steps, **kw: torch.full((c.shape[0], 3, 32, 32), 5.0))
    assert cli.main(["generate", "-n", "2", "--steps", "2", "--out", str(tmp_path / "g.png")]) == 0
    assert "warning: 100% of the pixels fell outside [-1, 1]" in capsys.readouterr().out


def test_generate_is_seeded(toy_editor):
    t = editing.make_target(text="a happy face")
    a, b = toy_editor.generate(t, 2, 3, seed=5), toy_editor.generate(t, 2, 3, seed=5)
    assert torch.equal(a, b) and a.shape == (2, 3, 32, 32)
    assert not torch.equal(a, toy_editor.generate(t, 2, 3, seed=6))


def test_a_non_square_photo_is_centre_cropped_and_resized(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "wide.jpg"
    Image.fromarray(rng.integers(0, 255, (50, 80, 3), dtype=np.uint8)).save(path)
    f = editing.read_face(path, 32)
    assert f.image.shape == (3, 32, 32) and f.image.dtype == torch.float32
    assert "JPEG 80x50" in f.note and "centre-cropped to 50x50" in f.note and "resized to 32x32" in f.note


def test_a_phone_photo_stored_sideways_is_turned_upright(tmp_path):
    upright = np.zeros((80, 40, 3), dtype=np.uint8)  # portrait: top half white, bottom half black
    upright[:40] = 255
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1)))  # stored turned, as phones do
    exif = Image.Exif()
    exif[editing.EXIF_ORIENTATION] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "phone.jpg"
    stored.save(path, exif=exif, quality=95)
    f = editing.read_face(path, 8)
    assert "turned upright (EXIF orientation 6)" in f.note and "40x80" in f.note
    top, bottom = f.image[:, :4].mean(), f.image[:, 4:].mean()  # the centre square: white above, black below
    assert top > 0.5 and bottom < -0.5


def test_a_voice_is_mixed_to_mono_and_resampled(tmp_path):
    v = editing.read_voice(write_wav(tmp_path / "v.wav", 1.5, rate=22050, channels=2), 16000, 5.0)
    assert v.wave.shape == (24000,) and abs(float(v.wave.mean())) < 1e-4 and abs(float(v.wave.std()) - 1) < 1e-3
    assert "mixed to mono" in v.note and "22050 -> 16000" in v.note


# ------------------------------------------------------------------------------------------ bad input
def _bad_face(kind: str, folder: Path) -> Path:
    p = folder / f"{kind}.png"
    if kind == "not_an_image":
        p.write_text("this is not a picture\n")
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "truncated":
        rng = np.random.default_rng(1)
        full = folder / "full.png"
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(full)
        p.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    elif kind == "bomb":
        png_header_only(p, 100_000, 100_000)
    return p


@pytest.mark.parametrize("kind, words", [("not_an_image", "not an image"), ("empty", "empty file"),
                                         ("truncated", "cannot be decoded"), ("bomb", "decompression bomb"),
                                         ("missing", "no such file")])
def test_bad_faces_are_refused_before_loading_anything(kind, words, tmp_path, capsys, no_model):
    bad = _bad_face(kind, tmp_path) if kind != "missing" else tmp_path / "nowhere.png"
    out = tmp_path / "out" / "edited.png"
    rc = cli.main(["edit", str(bad), "--age", "40", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert words in err and bad.name in err
    assert not out.exists() and not out.parent.exists()


def test_a_bomb_below_pillows_own_limit_is_refused_by_ours(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (40, 40)).save(path)
    monkeypatch.setattr(editing, "FACE_MAX_PIXELS", 1000)
    with pytest.raises(InputError, match="40x40.*decompression bomb"):
        editing.read_face(path, 32)


def test_pillows_decompression_bomb_warning_is_an_error(tmp_path, monkeypatch):
    path = tmp_path / "warn.png"
    Image.new("RGB", (40, 30)).save(path)  # 1200 px: over MAX_IMAGE_PIXELS, under twice it (Pillow only warns)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(InputError, match="decompression bomb"):
        editing.read_face(path, 32)


@pytest.mark.parametrize("kind, seconds, words", [("tone", 60.0, "60.0 s long"), ("nan", 1.0, "NaN"),
                                                  ("silent", 1.0, "silent"), ("text", 0, "not a sound file"),
                                                  ("empty", 0, "not a sound file")])
def test_bad_voices_are_refused(kind, seconds, words, face, tmp_path, capsys, no_model):
    wav = tmp_path / f"{kind}.wav"
    if kind == "text":
        wav.write_text("hello")
    elif kind == "empty":
        wav.write_bytes(b"")
    else:
        write_wav(wav, seconds, rate=16000, channels=1, fill=kind)
    out = tmp_path / "edited.png"
    rc = cli.main(["edit", str(face), "--audio", str(wav), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and words in err and wav.name in err
    assert not out.exists()


@pytest.mark.parametrize("args, words", [
    (["--age", "-1"], "age=-1.0 is outside [0, 120]"),
    (["--age", "150"], "age=150.0 is outside [0, 120]"),
    (["--age", "nan"], "age=nan must be a finite number"),
    (["--emotion", "joyful"], "emotion='joyful' is not an emotion"),
    (["--emotion", "happy", "--intensity", "1.5"], "intensity=1.5 must lie in [0, 1]"),
    (["--t0", "0"], "t0=0 is outside [1, 999]"),
    (["--t0", "1000"], "t0=1000 is outside [1, 999]"),
    (["--t0", "10", "--steps", "20"], "steps=20 must lie in [1, t0=10]"),
    (["--steps", "0"], "steps=0 must lie in [1, t0="),
    (["--out-suffix", ".jpg"], "must end in .png"),
])
def test_bad_targets_and_settings_are_refused(args, words, face, tmp_path, capsys, no_model):
    out = tmp_path / "edited.png"
    if args[0] == "--out-suffix":
        out, args = tmp_path / f"edited{args[1]}", []
    rc = cli.main(["edit", str(face), *args, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and words in err, err
    assert not out.exists()


def test_unparseable_numbers_are_argparse_errors(face, tmp_path, capsys, no_model):
    with pytest.raises(SystemExit) as exc:
        cli.main(["edit", str(face), "--age", "old", "--out", str(tmp_path / "e.png")])
    assert exc.value.code == 2 and "--age" in capsys.readouterr().err


def test_generate_refuses_bad_n_and_steps(tmp_path, capsys, no_model):
    out = tmp_path / "g.png"
    assert cli.main(["generate", "-n", "0", "--out", str(out)]) == 2
    assert "n=0 must be a whole number in [1, 64]" in capsys.readouterr().err
    assert cli.main(["generate", "--steps", "1000", "--out", str(out)]) == 2
    assert "steps=1000" in capsys.readouterr().err
    assert not out.exists()


def test_the_output_may_not_overwrite_the_input(face, capsys, no_model):
    assert cli.main(["edit", str(face), "--age", "40", "--out", str(face)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_targets_check_directly():
    assert editing.check_emotion(" Happy ") == "happy" and editing.check_emotion("(none)") is None
    assert editing.make_target().empty and editing.make_target().caption == "a face"
    assert Target(age=70.0, emotion="sad", gender="male").caption == "a 70-year-old sad man"
    with pytest.raises(InputError, match="gender"):
        editing.make_target(gender="robot")
