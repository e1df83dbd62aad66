import pytest

from cff_lib.emotions import EMOTIONS
from cff_lib.naming import (
    CacdName,
    RavdessName,
    VoxCelebName,
    format_cacd,
    format_ffhq,
    format_ravdess,
    format_voxceleb,
    parse_cacd,
    parse_ffhq,
    parse_ravdess,
    parse_voxceleb,
)


@pytest.mark.parametrize("index", [0, 7, 999, 1000, 1234, 69999])
def test_ffhq_round_trip(index):
    path = format_ffhq(index)
    assert parse_ffhq(path) == index
    assert path == f"{index // 1000 * 1000:05d}/{index:05d}.png"


def test_ffhq_rejects_wrong_folder_and_names():
    for bad in ["01000/00042.png", "00000/42.png", "00042.png", "00000/00042.jpg"]:
        with pytest.raises(ValueError, match="FFHQ"):
            parse_ffhq(bad)


@pytest.mark.parametrize("item", [CacdName(53, "Robin_Williams", 1), CacdName(16, "A_B_C", 12),
                                  CacdName(99, "Mary-Kate_O'Neil", 9999)])
def test_cacd_round_trip(item):
    assert parse_cacd(format_cacd(item)) == item


def test_cacd_real_example_and_bad_names():
    assert parse_cacd("CACD2000/53_Robin_Williams_0001.jpg") == CacdName(53, "Robin_Williams", 1)
    for bad in ["xx_Name_0001.jpg", "53_Robin_Williams.jpg", "53__0001.jpg", "53_Robin_Williams_1.jpg"]:
        with pytest.raises(ValueError, match="CACD"):
            parse_cacd(bad)


def test_ravdess_round_trip_over_every_code():
    for e, emotion in enumerate(EMOTIONS):
        for intensity in (1, 2):
            if emotion == "neutral" and intensity == 2:
                continue
            for actor in (1, 24):
                item = RavdessName(3, 1, emotion, intensity, 2, 1, actor)
                path = format_ravdess(item)
                assert parse_ravdess(path) == item
                assert path.split("/")[1].split("-")[2] == f"{e + 1:02d}"
    assert parse_ravdess("Actor_12/03-01-06-01-02-01-12.wav").emotion == "fearful"
    assert parse_ravdess("Actor_11/03-01-06-01-02-01-11.wav").gender == "male"


@pytest.mark.parametrize("bad", ["Actor_12/03-01-09-01-02-01-12.wav", "Actor_12/03-01-01-02-02-01-12.wav",
                                 "Actor_12/03-01-06-01-02-01-13.wav", "Actor_25/03-01-06-01-02-01-25.wav",
                                 "Actor_12/03-01-06-01-02.wav", "03-01-06-01-02-01-12.wav"])
def test_ravdess_bad_names(bad):
    with pytest.raises(ValueError, match="RAVDESS"):
        parse_ravdess(bad)


def test_voxceleb_round_trip():
    item = VoxCelebName(10001, "1zcIwhmdeo4", 1)
    assert format_voxceleb(item) == "id10001/1zcIwhmdeo4/00001.wav"
    assert parse_voxceleb("wav/" + format_voxceleb(item)) == item
    for bad in ["id1001/1zcIwhmdeo4/00001.wav", "id10001/short/00001.wav", "id10001/1zcIwhmdeo4/1.wav"]:
        with pytest.raises(ValueError, match="VoxCeleb"):
            parse_voxceleb(bad)
