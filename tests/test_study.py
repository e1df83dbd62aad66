"""The blind user study (cff_lib.study, study_app, study_analysis): protocol, storage under concurrent raters,
blindness of everything the browser receives, bad input, the rating API through gradio_client, CSV export,
the CLI, and the analysis on a simulated panel."""
from __future__ import annotations

import csv
import json
import re
import socket
import sqlite3
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from cff_lib import study as st
from cff_lib import study_analysis as sa
from cff_lib.study import CRITERIA, Study, StudyError

METHODS = ("ClipFaceFusion", "DiffusionCLIP-style (text only)", "Reconstruction (inversion → reverse, no condition)")
GOOD = dict.fromkeys(CRITERIA, 3)


def small_samples(methods=METHODS, n_faces: int = 12, size: int = 8, seed: int = 0):
    """method -> [(reference, generated)] of small uint8 arrays; position i is face i under every method."""
    rng = np.random.default_rng(seed)
    refs = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n_faces)]
    return {m: [(r, rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for r in refs] for m in methods}


@pytest.fixture
def study(tmp_path) -> Study:
    st.create_study(tmp_path / "study.sqlite", small_samples())
    return Study(tmp_path / "study.sqlite")


def _truth(s: Study, rater: str) -> list[tuple[str, int, int | None]]:
    con = sqlite3.connect(str(s.path))
    try:
        return [(m, f, rep) for m, f, rep in con.execute(
            "SELECT m.name, i.face, s.repeat_of FROM slots s JOIN items i ON i.item_id = s.item_id JOIN methods m "
            "ON m.method_id = i.method_id WHERE s.rater_id = ? ORDER BY s.position", (rater,))]
    finally:
        con.close()


def _rate_all(s: Study, rater: str, scores=GOOD) -> int:
    p, n = s.progress(rater), 0
    while not p.done:
        p = s.rate(rater, p.next_slot.slot_id, scores)
        n += 1
    return n


# ------------------------------------------------------------------------------------------ protocol
def test_create_uses_wal_and_keeps_methods_server_side(study):
    info = study.info()
    assert info.journal_mode == "wal" and info.status == "open" and info.methods == METHODS
    assert info.n_faces == 12 and info.slots_per_rater == 3 * 10 + 2


def test_running_order_is_interleaved_with_ten_per_method_and_attention_repeats(study):
    rater = study.register_rater(True, seed=3)
    order = _truth(study, rater.rater_id)
    assert rater.n_slots == len(order) == 32
    firsts = [(m, f) for m, f, rep in order if rep is None]
    for m in METHODS:
        faces = [f for m2, f in firsts if m2 == m]
        assert len(faces) == 10 and len(set(faces)) == 10  # 10 distinct samples per method
    assert {f for _, f in firsts if True} == {f for m, f in firsts if m == METHODS[0]}  # same faces per method
    for r in range(10):  # rounds of one pair per method
        assert {m for m, _ in firsts[3 * r:3 * r + 3]} == set(METHODS)
    assert all(a != b for (a, _), (b, _) in zip(firsts, firsts[1:], strict=False))  # never the same method twice
    repeats = [(i, rep) for i, (_, _, rep) in enumerate(order) if rep is not None]
    assert len(repeats) == 2
    for i, rep in repeats:
        assert order[i][:2] == order[rep][:2] and i - rep >= st.MIN_REPEAT_GAP
    other = _truth(study, study.register_rater(False, seed=4).rater_id)
    assert [x[:2] for x in other] != [x[:2] for x in order]  # randomised per rater


def test_faces_are_balanced_across_raters(study):
    for k in range(6):
        study.register_rater(k % 2 == 0)
    con = sqlite3.connect(str(study.path))
    counts = [n for (n,) in con.execute("SELECT COUNT(*) FROM slots s JOIN items i ON i.item_id = s.item_id "
                                        "WHERE s.repeat_of IS NULL GROUP BY i.face")]
    con.close()
    assert len(counts) == 12 and max(counts) - min(counts) <= 3  # 3 = one rater's pairs of a face


def test_create_refuses_bad_samples(tmp_path):
    samples = small_samples()
    with pytest.raises(StudyError, match="at least two method"):
        st.create_study(tmp_path / "a.sqlite", {"only": samples[METHODS[0]]})
    with pytest.raises(StudyError, match="same faces"):
        st.create_study(tmp_path / "b.sqlite", {**samples, METHODS[0]: samples[METHODS[0]][:11]})
    with pytest.raises(StudyError, match="samples_per_method=10"):
        st.create_study(tmp_path / "c.sqlite", small_samples(n_faces=5))
    swapped = dict(samples)
    swapped[METHODS[1]] = [(samples[METHODS[1]][1][0], g) for _, g in samples[METHODS[1]]]
    with pytest.raises(StudyError, match="reference differs"):
        st.create_study(tmp_path / "d.sqlite", swapped)
    with pytest.raises(StudyError, match=r"\[-1, 1\]"):
        st.png_bytes(np.full((4, 4, 3), 3.0))
    assert not any(tmp_path.iterdir())  # nothing left half-written
    st.create_study(tmp_path / "e.sqlite", samples)
    with pytest.raises(FileExistsError, match="overwrite"):
        st.create_study(tmp_path / "e.sqlite", samples)


# ------------------------------------------------------------------------------------------ storage
def test_twenty_concurrent_raters_times_ten_ratings_store_exactly_200_rows(tmp_path):
    st.create_study(tmp_path / "c.sqlite", small_samples())
    errors, barrier = [], threading.Barrier(20)

    def rater(k: int) -> None:
        try:
            s = Study(tmp_path / "c.sqlite")  # each thread its own object, each call its own connection
            r = s.register_rater(k % 5 != 0)
            barrier.wait()
            p = s.progress(r.rater_id)
            for i in range(10):
                p = s.rate(r.rater_id, p.next_slot.slot_id, dict.fromkeys(CRITERIA, 1 + (k + i) % 5))
        except Exception as err:  # noqa: BLE001 (reported below)
            errors.append(err)

    threads = [threading.Thread(target=rater, args=(k,)) for k in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    con = sqlite3.connect(str(tmp_path / "c.sqlite"))
    assert con.execute("SELECT COUNT(*) FROM ratings").fetchone()[0] == 200
    assert con.execute("SELECT COUNT(DISTINCT rater_id) FROM ratings").fetchone()[0] == 20
    assert con.execute("SELECT COUNT(*) FROM (SELECT rater_id FROM ratings GROUP BY rater_id "
                       "HAVING COUNT(*) = 10)").fetchone()[0] == 20
    con.close()


def test_a_committed_rating_survives_a_process_that_dies(tmp_path):
    """A rating is committed when rate() returns: a second process that crashes mid-way loses nothing else."""
    import subprocess
    import sys

    st.create_study(tmp_path / "k.sqlite", small_samples())
    code = ("import os\nfrom cff_lib.study import Study, CRITERIA\ns = Study(%r)\nr = s.register_rater(True)\n"
            "p = s.progress(r.rater_id)\nfor _ in range(3):\n    p = s.rate(r.rater_id, p.next_slot.slot_id, "
            "dict.fromkeys(CRITERIA, 4))\nos._exit(9)\n") % str(tmp_path / "k.sqlite")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 9
    assert Study(tmp_path / "k.sqlite").info().n_ratings == 3


def test_bad_ratings_are_refused_and_nothing_is_stored(study):
    r = study.register_rater(False)
    slot = study.progress(r.rater_id).next_slot.slot_id
    bad = [({**GOOD, "photorealism": 0}, "photorealism=0"), ({**GOOD, "age_accuracy": 6}, "age_accuracy=6"),
           ({**GOOD, "identity_preservation": 2.5}, "identity_preservation=2.5"),
           ({**GOOD, "cross_modal_consistency": True}, "cross_modal_consistency=True"),
           ({k: v for k, v in GOOD.items() if k != "photorealism"}, "missing"),
           ({**GOOD, "beauty": 3}, "unknown criteria")]
    for scores, message in bad:
        with pytest.raises(StudyError, match=re.escape(message)):
            study.rate(r.rater_id, slot, scores)
    with pytest.raises(StudyError, match="unknown slot_id"):
        study.rate(r.rater_id, "not-a-slot", GOOD)
    with pytest.raises(StudyError, match="unknown rater_id"):
        study.rate("nobody", slot, GOOD)
    other = study.register_rater(True)
    with pytest.raises(StudyError, match="unknown slot_id"):  # someone else's slot
        study.rate(other.rater_id, slot, GOOD)
    with pytest.raises(StudyError, match="specialist"):
        study.register_rater("yes")
    assert study.info().n_ratings == 0
    study.rate(r.rater_id, slot, GOOD)
    with pytest.raises(StudyError, match="already rated"):
        study.rate(r.rater_id, slot, {**GOOD, "photorealism": 5})
    study.close()
    with pytest.raises(StudyError, match="closed"):
        study.rate(r.rater_id, study.progress(r.rater_id).next_slot.slot_id, GOOD)
    with pytest.raises(StudyError, match="closed"):
        study.register_rater(True)
    assert study.info().n_ratings == 1
    assert study.ratings()[0]["photorealism"] == 3


def test_attention_checks_are_recorded(study):
    r = study.register_rater(True, seed=0)
    p = study.progress(r.rater_id)
    order = _truth(study, r.rater_id)
    while not p.done:  # consistent except on the second repeat, which contradicts the original by 4 points
        rep = order[p.next_slot.position][2]
        last = rep is not None and p.next_slot.position == max(i for i, x in enumerate(order) if x[2] is not None)
        p = study.rate(r.rater_id, p.next_slot.slot_id, dict.fromkeys(CRITERIA, 5 if last else 1))
    study.close()
    checks = study.attention()
    assert len(checks) == 2 and [c["passed"] for c in checks] == [True, False]
    assert checks[1]["max_abs_difference"] == 4
    rows = study.ratings()
    assert len(rows) == 32 and sum(row["repeat_of"] is not None for row in rows) == 2


# ------------------------------------------------------------------------------------------ export
def test_export_csv_is_atomic_and_refuses_an_open_study(study, tmp_path):
    r = study.register_rater(True)
    _rate_all(study, r.rater_id)
    out = tmp_path / "out" / "ratings.csv"
    with pytest.raises(StudyError, match="still open"):
        st.export_csv(study, out)
    assert not out.exists()
    st.export_csv(study.path, out, close=True)
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 32 and tuple(rows[0]) == st.EXPORT_COLUMNS
    assert {row["method"] for row in rows} == set(METHODS)
    assert all(row["photorealism"] == "3" for row in rows)
    assert [p.name for p in out.parent.iterdir()] == ["ratings.csv"]  # no temporary file left behind


def test_cli_create_and_export(tmp_path, capsys):
    from PIL import Image

    from cff_lib import cli

    folder = tmp_path / "imgs"
    for m in ("reference", "a", "b"):
        (folder / m).mkdir(parents=True)
    for m, pairs in small_samples(methods=("a", "b")).items():
        for i, (ref, gen) in enumerate(pairs):
            Image.fromarray(ref).save(folder / "reference" / f"{i:02d}.png")
            Image.fromarray(gen).save(folder / m / f"{i:02d}.png")
    db = tmp_path / "s.sqlite"
    assert cli.main(["study", "create", str(db), "--images", str(folder)]) == 0
    assert "2 methods x 12 faces" in capsys.readouterr().out
    assert cli.main(["study", "create", str(db), "--images", str(folder)]) == 2
    assert "overwrite" in capsys.readouterr().err
    s = Study(db)
    _rate_all(s, s.register_rater(False).rater_id)
    assert cli.main(["study", "export", str(db), "--out", str(tmp_path / "r.csv")]) == 2
    assert "still open" in capsys.readouterr().err
    assert cli.main(["study", "export", str(db), "--out", str(tmp_path / "r.csv"), "--close"]) == 0
    assert "wrote 22 ratings of 1 raters" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ the page and its API
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from cff_lib.study_app import StudyServer

    path = tmp_path_factory.mktemp("served") / "study.sqlite"
    st.create_study(path, small_samples())
    server = StudyServer(Study(path), "127.0.0.1", _free_port()).start()
    yield server
    server.stop()


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


def test_defaults_are_loopback():
    import inspect

    from cff_lib import study_app

    for fn in (study_app.serve, study_app.StudyServer):
        assert inspect.signature(fn).parameters["host"].default == "127.0.0.1"


def test_the_rating_api_through_gradio_client(served):
    from gradio_client import Client

    from cff_lib.study_app import REGULAR, SPECIALIST

    client = Client(served.url, verbose=False)
    assert set(client.view_api(return_format="dict")["named_endpoints"]) == {"/start", "/rate"}
    rater, slot, pair, status = client.predict(SPECIALIST, api_name="/start")
    assert "Pair **1** of 32" in status and slot and "study-image/" in pair
    for token in re.findall(r"study-image/([A-Za-z0-9_-]+)", pair):
        code, kind, body = _get(served.url + "study-image/" + token)
        assert code == 200 and kind == "image/png" and body.startswith(b"\x89PNG")
    assert _get(served.url + "study-image/nope")[0] == 404
    nxt, pair2, status2 = client.predict(rater, slot, 5, 4, 3, 2, 1, api_name="/rate")
    assert "Pair **2** of 32" in status2 and nxt != slot
    for args, message in [((rater, nxt, 7, 4, 3, 2, 1), "not in the list of choices"),
                          ((rater, "nope", 3, 3, 3, 3, 3), "unknown slot_id"),
                          (("", nxt, 3, 3, 3, 3, 3), "Start first"),
                          ((rater, slot, 3, 3, 3, 3, 3), "already rated"),
                          ((rater, nxt, None, 3, 3, 3, 3), "choose a score")]:
        with pytest.raises(Exception, match=message):
            client.predict(*args, api_name="/rate")
    with pytest.raises(Exception, match="(?i)specialist"):
        client.predict("maybe", api_name="/start")
    client.predict(REGULAR, api_name="/start")
    info = served.study.info()
    assert info.n_ratings == 1 and info.n_raters == 2
    row = served.study.ratings(allow_open=True)[0]
    assert (row["photorealism"], row["cross_modal_consistency"], row["specialist"]) == (5, 1, True)


def test_nothing_the_browser_receives_names_a_method_before_close(served):
    """Fetch the page, its config and API info, and every API response of a full rating session; grep."""
    from gradio_client import Client

    from cff_lib.study_app import SPECIALIST

    received: list[str] = []
    for path in ("", "config", "gradio_api/info", "gradio_api/info?all_endpoints=true"):
        code, _, body = _get(served.url + path)
        assert code == 200, path
        received.append(body.decode("utf-8", "replace"))
    client = Client(served.url, verbose=False)
    out = client.predict(SPECIALIST, api_name="/start")
    received.append(json.dumps(out))
    rater, slot = out[0], out[1]
    while slot:
        out = client.predict(rater, slot, 3, 3, 3, 3, 3, api_name="/rate")
        received.append(json.dumps(out))
        slot = out[0]
    assert "All 32 pairs are rated" in out[2]
    con = sqlite3.connect(str(served.study.path))
    item_ids = [i for (i,) in con.execute("SELECT item_id FROM items")]
    image_ids = [i for (i,) in con.execute("SELECT image_id FROM images")]
    con.close()
    text = "\n".join(received)
    assert len(text) > 10_000
    for needle in (*METHODS, "DiffusionCLIP", "Reconstruction", "method_id", *item_ids, *image_ids):
        assert needle not in text, f"{needle!r} reached the browser before the study closed"


def test_a_closed_study_refuses_raters(tmp_path):
    from cff_lib.study_app import SPECIALIST, RatingHandlers, serve

    st.create_study(tmp_path / "s.sqlite", small_samples())
    s = Study(tmp_path / "s.sqlite")
    handlers = RatingHandlers(s)
    rater, slot, _, _ = handlers.start(SPECIALIST)
    s.close()
    with pytest.raises(StudyError, match="closed"):
        handlers.rate(rater, slot, 3, 3, 3, 3, 3)
    with pytest.raises(StudyError, match="closed"):
        handlers.start(SPECIALIST)
    with pytest.raises(StudyError, match="closed"):
        serve(s, block=False)
    assert s.info().n_ratings == 0


# ------------------------------------------------------------------------------------------ analysis
@pytest.fixture(scope="module")
def panel(tmp_path_factory):
    path = tmp_path_factory.mktemp("panel") / "panel.sqlite"
    study, planted = sa.pipeline_check_study(path, n_faces=12, n_raters=16, seed=1, methods=METHODS)
    return study, planted, sa.ratings_frame(study)


def test_the_analysis_recovers_what_the_simulated_panel_planted(panel):
    study, planted, df = panel
    assert not study.is_open and len(df) == 16 * 32
    attention = sa.attention_table(df)
    assert len(attention) == 32
    excluded = sa.failed_raters(attention)
    assert set(planted["careless raters"]) <= set(excluded)  # raters answering at random fail a repeat
    means = sa.means_table(df, n_boot=200, exclude=excluded)
    overall = means[means.criterion == sa.OVERALL].set_index("method")["mean"]
    assert overall[METHODS[0]] > overall[METHODS[1]] > overall[METHODS[2]]  # the planted order
    assert (means.ci95_low <= means["mean"]).all() and (means["mean"] <= means.ci95_high).all()
    tests = sa.method_tests(df, exclude=excluded)
    assert len(tests) == 5 * 3 and (tests.p_holm >= tests.p_used - 1e-12).all()
    top = tests[(tests.method_a == METHODS[0]) & (tests.method_b == METHODS[2])]
    assert top.significant.all()
    alpha = sa.agreement_table(df, exclude=excluded)
    assert alpha.alpha.between(-1, 1).all() and (alpha.n_raters == 16 - len(excluded)).all()
    pref = sa.preference_table(df, exclude=excluded)
    assert abs(pref["all raters (%)"].sum() - 100) < 1e-9
    spec = sa.specialist_table(df, exclude=excluded)
    assert set(spec.method) == set(METHODS)


def test_paper_numbers_and_measured_numbers_never_share_a_column(panel):
    _, _, df = panel
    table = sa.paper_comparison(sa.means_table(df, n_boot=200))
    measured = [c for c in table.columns if c.startswith("measured")]
    paper = [c for c in table.columns if c.startswith("paper")]
    assert measured and paper and not set(measured) & set(paper)
    cff = table[(table["paper row"] == "ClipFaceFusion") & (table["criterion"] == "identity_preservation")]
    assert float(cff["paper value (quoted)"].iloc[0]) == 4.7
    godiff = table[table["paper row"] == "GODiff"]
    assert len(godiff) == 3 and godiff["measured mean"].isna().all()


def test_user_study_claims_stay_not_reproducible():
    claims = sa.claims_table()
    assert len(claims) == 13 and claims.verdict.str.startswith("not reproducible here: needs human raters").all()


def test_pipeline_check_titles():
    assert sa.heading(True, "Fig. 8").startswith("PIPELINE CHECK")
    assert "PIPELINE" not in sa.heading(False, "Fig. 8")
