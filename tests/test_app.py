"""The web editor (cff_lib.app): its API through gradio_client on 127.0.0.1, its defaults (loopback, no public
link), and, when Playwright and a Chromium are installed, one edit in a real browser."""
from __future__ import annotations

import inspect
import os
import shutil
import socket
from pathlib import Path

import pytest
from PIL import Image

from cff_lib import app as app_mod
from cff_lib.editing import Editor

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def editor():
    from conftest import random_referees

    return Editor.load("toy", referees=random_referees(32))


@pytest.fixture
def face(tmp_path) -> Path:
    from test_editing import held_out_face_file

    return held_out_face_file(tmp_path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(editor):
    """The editor launched in this process on a free port of 127.0.0.1 (closed after the module)."""
    demo = app_mod.build_app(editor)
    port = _free_port()
    app_mod.launch(demo, "127.0.0.1", port, block=False, quiet=True)
    yield demo, f"http://127.0.0.1:{port}/"
    demo.close()


def test_defaults_are_loopback_and_private(monkeypatch):
    for fn in (app_mod.serve, app_mod.launch):
        params = inspect.signature(fn).parameters
        assert params["host"].default == "127.0.0.1" and params["share"].default is False
    from cff_lib import cli

    seen = {}
    monkeypatch.setattr(app_mod, "serve", lambda profile, host, port, share: seen.update(host=host, share=share))
    assert cli.main(["app"]) == 0
    assert seen == {"host": "127.0.0.1", "share": False}


def test_the_edit_endpoint_through_gradio_client(served, face):
    from gradio_client import Client, handle_file

    demo, url = served
    assert url.startswith("http://127.0.0.1:") and not demo.share and demo.share_url is None
    client = Client(url, verbose=False)
    assert {"/edit", "/age_strip"} <= set(client.view_api(return_format="dict")["named_endpoints"])
    src, rec, edit, heat, md = client.predict(handle_file(str(face)), "", True, 65, "happy", 0.8, None, 200, 5,
                                              api_name="/edit")
    side = app_mod.DISPLAY_SIDE // 32 * 32
    for path in (src, rec, edit, heat):
        with Image.open(path) as im:
            assert im.size == (side, side)
    assert "identity cos. to source" in md and "Edit took" in md and "a 65-year-old happy face" in md
    # a second edit of the same face reuses its inversion
    *_, md2 = client.predict(handle_file(str(face)), "", True, 30, "sad", 1.0, None, 200, 5, api_name="/edit")
    assert "inversion reused" in md2


def test_bad_input_through_the_api_is_a_clear_error(served, face):
    from gradio_client import Client, handle_file

    client = Client(served[1], verbose=False)
    with pytest.raises(Exception, match=r"steps=20 must lie in \[1, t0=10\]"):
        client.predict(handle_file(str(face)), "", True, 65, "happy", 1.0, None, 10, 20, api_name="/edit")
    with pytest.raises(Exception, match="no face"):
        client.predict(None, "", True, 65, "happy", 1.0, None, 200, 5, api_name="/edit")


def test_the_age_strip_endpoint(served, face):
    from gradio_client import Client, handle_file

    from cff_lib.qualitative import AGE_STRIP

    client = Client(served[1], verbose=False)
    strip = client.predict(handle_file(str(face)), "", "(none)", 1.0, None, 200, 4, api_name="/age_strip")
    assert len(strip) == len(AGE_STRIP)
    assert [s["caption"].split(" · ")[0] for s in strip] == [f"target {a} y" for a in AGE_STRIP]


def test_prepare_then_edit_runs_only_the_conditioned_chain(editor, face):
    state = app_mod.EditorApp(editor, faces=[])
    src, rec = state.prepare(str(face), 120, 3)
    assert src.size == rec.size
    calls = []
    state.edit(str(face), "", False, 0, "angry", 1.0, None, 120, 3, progress=lambda d, t, s: calls.append(t))
    chains = 1 if editor.profile.ddim.preserve_threshold is None else 2  # the preserving edit: plain, preserved
    assert calls and set(calls) == {3 * chains} and len(calls) == 3 * chains


def test_notebook_editor_sliders_re_edit(editor, face):
    pytest.importorskip("ipywidgets")
    image = editor.read_face(face).image
    box = app_mod.notebook_editor(editor, image, "female", show=False)
    (age, emotion, intensity), picture, report = box.children[0].children, box.children[1], box.children[2]
    assert intensity.value == 1.0
    first = picture.value
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and "identity" in report.value
    age.value = 20
    assert picture.value != first and "a 20-year-old happy woman" in report.value
    emotion.value = "(none)"
    assert "a 20-year-old woman" in report.value


def test_without_referees_the_page_says_so_in_one_line():
    md = app_mod.readings_markdown({"source": None, "edit": None}, app_mod.Target(age=40.0), "no readings: "
                                   "the referee weights are not there yet", 0.1, 0.5, True)
    assert "**Referees:** no readings: the referee weights are not there yet" in md and "| age" not in md
    assert "a 40-year-old person" in md and "inversion reused" in md


def test_held_out_faces_come_from_the_val_and_test_splits():
    from cff_lib.config import load_profile

    faces = app_mod.held_out_faces(load_profile("toy"), limit=5)
    if not faces:
        pytest.skip("the toy world is not on disk")
    assert len(faces) == 5 and all(lab.startswith(("val ", "test ")) and Path(p).is_file() for lab, p in faces)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.skipif(_chromium() is None, reason="no chromium on this machine (apt-get install chromium)")
def test_one_edit_and_an_age_strip_in_a_real_browser(served, editor, face, tmp_path):
    """Upload a face, move the age slider, press Edit, then the age strip, in Chromium; screenshots go to
    $CFF_SCREENSHOT_DIR."""
    playwright = pytest.importorskip("playwright.sync_api")
    demo, url = served
    shots = Path(os.environ.get("CFF_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(url)
            page.locator("input[type=file]").first.set_input_files(str(face))  # upload a face file
            page.locator("#cff-face img").first.wait_for(timeout=30_000)
            age = page.locator("#cff-age input[type=number]")  # move the age slider (its number box) to 25
            age.fill("25")
            age.press("Enter")
            page.get_by_role("button", name="Edit", exact=True).click()
            page.get_by_text("Edit took").wait_for(timeout=60_000)
            page.get_by_text("age 25 y").first.wait_for(timeout=10_000)  # the edit ran toward the moved slider
            page.wait_for_function("!/processing|DDIM steps \\|/.test(document.body.innerText)", timeout=90_000)
            page.screenshot(path=str(shots / "app_edit.png"), full_page=True)
            page.get_by_role("button", name="Age-progression strip").click()
            page.get_by_text("target 70 y").first.wait_for(timeout=60_000)
            page.screenshot(path=str(shots / "app_age_strip.png"), full_page=True)
            assert (shots / "app_edit.png").stat().st_size > 0
        finally:
            browser.close()
