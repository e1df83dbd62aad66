"""The study's rating page in a real browser: Debian's Chromium driven by Playwright (``executable_path``,
``--no-sandbox`` as root). Skipped, saying why, when Chromium or Playwright is absent; ``.ci/run`` installs
Chromium. The screenshot goes to $CFF_SCREENSHOT_DIR (default: the test's temporary folder)."""
from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from cff_lib import study as st
from cff_lib.study import CRITERIA, Study


def _chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


pytestmark = pytest.mark.skipif(_chromium() is None, reason="no Chromium at /usr/bin/chromium "
                                "(apt-get install -y chromium; .ci/run installs it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_rating_completed_in_a_real_browser(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements.lock)")
    from test_study import METHODS, small_samples

    from cff_lib.study_app import SPECIALIST, StudyServer

    st.create_study(tmp_path / "study.sqlite", small_samples(size=32))
    study = Study(tmp_path / "study.sqlite")
    server = StudyServer(study, "127.0.0.1", _free_port()).start()
    shots = Path(os.environ.get("CFF_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1100, "height": 1300})
                page.goto(server.url)
                page.locator("#cff-specialist").get_by_text(SPECIALIST, exact=True).click()
                page.locator("#cff-start").click()
                page.get_by_text("Pair 1 of 32").wait_for(timeout=30_000)
                for img in page.locator("#cff-pair img").all():  # both faces loaded from /study-image/<token>
                    img.wait_for(timeout=30_000)
                    page.wait_for_function("img => img.complete && img.naturalWidth === 32", arg=img.element_handle())
                scores = dict(zip(CRITERIA, (4, 5, 3, 2, 4), strict=True))
                for c, v in scores.items():
                    page.locator(f"#cff-{c}").get_by_text(str(v), exact=True).click()
                page.screenshot(path=str(shots / "study_page.png"), full_page=True)
                html_before = page.content()
                page.locator("#cff-submit").click()
                page.get_by_text("Pair 2 of 32").wait_for(timeout=30_000)
                html_after = page.content()
            finally:
                browser.close()
    finally:
        server.stop()
    info = study.info()
    assert info.n_ratings == 1 and info.n_raters == 1
    row = study.ratings(allow_open=True)[0]
    assert {c: row[c] for c in CRITERIA} == scores and row["specialist"] is True
    for text in (html_before, html_after):
        assert not any(m in text for m in METHODS), "a method name reached the page"
    assert (shots / "study_page.png").stat().st_size > 10_000
