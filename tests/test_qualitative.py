"""cff_lib.qualitative: the Fig. 4 scenarios resolved to held-out faces and clips (the ci world)."""
import pytest
import torch

from cff_lib import qualitative
from cff_lib.captions import caption_from_attributes, source_caption
from cff_lib.config import load_profile
from cff_lib.emotions import EMOTIONS
from cff_lib.world import ensure_world


def test_scenarios_resolve_to_held_out_faces_and_matching_clips():
    resolved = qualitative.resolve_scenarios(load_profile("ci"))
    assert len({r.image for r in resolved}) == 4
    for r in resolved:
        assert r.image_split in ("val", "test")
        code = r.audio.rsplit("/", 1)[1].split("-")
        assert int(code[2]) - 1 == EMOTIONS.index(r.scenario.emotion)
        assert int(code[3]) == r.scenario.intensity_code
    table = qualitative.scenario_table(resolved)
    assert list(table["scenario"]) == [s.name for s in qualitative.SCENARIOS]



def test_scenario_inputs_carry_each_scenarios_target_face_and_voice():
    """What the methods are run on: each row's caption, age, emotion and intensity are its scenario's, the face
    lies in [-1, 1], the voice is a waveform (an intense clip -> intensity 1, a normal one -> 0.5)."""
    p = load_profile("ci")
    ensure_world(p, progress=False)  # the ci faces and clips (seconds)
    resolved = qualitative.resolve_scenarios(p)
    images, conds = qualitative.scenario_inputs(p, resolved)
    n = len(qualitative.SCENARIOS)
    assert images.shape == (n, 3, p.data.image_size, p.data.image_size)
    assert float(images.min()) >= -1.0 and float(images.max()) <= 1.0
    for i, r in enumerate(resolved):
        sc = r.scenario
        assert conds["caption"][i] == caption_from_attributes(sc.age, sc.emotion, sc.gender) == r.caption
        assert conds["source_caption"][i] == source_caption(sc.gender)
        assert (conds["target_age"][i], conds["target_emotion"][i]) == (float(sc.age), sc.emotion)
        assert conds["intensity"][i] == (1.0 if sc.intensity_code == 2 else 0.5)
        audio = conds["audio"][i]
        assert isinstance(audio, torch.Tensor) and audio.ndim == 1 and audio.numel() > 0
    with pytest.raises(ValueError, match="empty"):
        qualitative.resolve_scenarios(p, ())


def test_faces_without_a_gender_label_resolve_with_gender_free_captions(monkeypatch):
    """Real FFHQ has no gender label (issue 15's rehearsal stopped on "no unused held-out FFHQ face of gender
    'female'"): each scenario takes the next unused held-out face of unknown gender, captioned without one."""
    from cff_lib.manifests import Manifest, ManifestEntry

    def entry(path, split, **labels):
        return ManifestEntry(path, split, 1, "0" * 64, labels)

    ffhq = Manifest("ffhq", "real", 42, 0.15, 0.15, tuple(
        entry(f"00000/{i:05d}.png", split, gender=None) for i, split in enumerate(["train"] + ["val", "test"] * 3)))
    clips = [entry(f"Actor_01/03-01-{e:02d}-{k}-01-01-01.wav", "test", emotion=EMOTIONS[e - 1], intensity_code=k,
                   gender="male") for e in range(1, 9) for k in (1, 2)]
    ravdess = Manifest("ravdess", "real", 42, 0.15, 0.15, tuple(clips))
    monkeypatch.setattr(qualitative, "_manifest", lambda profile, ds: {"ffhq": ffhq, "ravdess": ravdess}[ds])
    resolved = qualitative.resolve_scenarios(load_profile("paper_rehearsal"))
    assert [r.image for r in resolved] == [f"ffhq/00000/{i:05d}.png" for i in range(1, 5)]
    assert all(r.gender is None for r in resolved)
    assert resolved[0].caption == "a 25-year-old sad face"
    table = qualitative.scenario_table(resolved)
    assert set(table["face_gender"]) == {"unknown"}
    monkeypatch.setattr(qualitative, "_manifest", lambda profile, ds: {"ffhq": Manifest(
        "ffhq", "real", 42, 0.15, 0.15, ffhq.entries[:3]), "ravdess": ravdess}[ds])
    with pytest.raises(ValueError, match="unknown gender"):
        qualitative.resolve_scenarios(load_profile("paper_rehearsal"))
