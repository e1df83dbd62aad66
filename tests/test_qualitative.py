"""cff_lib.qualitative: the Fig. 4 scenarios resolved to held-out faces and clips (the ci world)."""
from cff_lib import qualitative
from cff_lib.config import load_profile
from cff_lib.emotions import EMOTIONS


def test_the_four_fig4_scenarios():
    s = {x.name: x for x in qualitative.SCENARIOS}
    assert len(s) == 4
    assert (s["young–sad"].age, s["young–sad"].gender, s["young–sad"].emotion) == (25, "female", "sad")
    assert (s["middle-aged–happy"].age, s["middle-aged–happy"].gender) == (45, "male")
    assert (s["elderly–neutral"].age, s["elderly–neutral"].emotion) == (70, "neutral")
    angry = s["angry, intense audio"]
    assert (angry.age, angry.gender, angry.emotion, angry.intensity_code) == (30, "male", "angry", 2)


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

