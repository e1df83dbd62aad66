"""Screenshots of the web editor (``cff app``) and of the blind study's rating page (``cff study serve``), taken
in a real browser: the OS Chromium driven by Playwright (``executable_path``, ``--no-sandbox`` as root), as
tests/test_browser.py and tests/test_app.py launch it.

Editor: the toy profile's trained model and referees (weights/synthetic), served on 127.0.0.1; a held-out toy
face (the first val face of the toy FFHQ manifest) is uploaded, the age slider is moved, *Edit* is pressed and
the page is captured once the edit and its readings are shown.

Rating page: a small study in a temporary folder, built as tests/test_study.py builds one (three methods, 12
faces), except that the references are real held-out toy faces and the "generated" faces are stand-ins made
from them by three fixed image operations (identity, blur, pixel noise): the screenshot shows the page, not any
method's output. A rater registers as a regular user, presses *Start*, both images load and five scores are
chosen before the capture.

Both PNGs are full-page and written atomically (a temporary file beside the target, then renamed):
docs/screenshots/editor.png and docs/screenshots/rating.png.

    OMP_NUM_THREADS=1 .venv/bin/python bench/app_screenshots.py
"""
from __future__ import annotations

import argparse
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OUT_DIR = ROOT / "docs" / "screenshots"
STAND_INS = ("method A", "method B", "method C")


def chromium() -> str:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    raise SystemExit("no Chromium at /usr/bin/chromium: apt-get install -y chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def atomic_screenshot(page, target: Path) -> Path:
    """A full-page PNG of ``page`` at ``target``: written to a temporary file beside it, then renamed."""
    from cff_lib.atomic import atomic_path

    with atomic_path(target) as tmp:
        page.screenshot(path=str(tmp), full_page=True, type="png")
    print(f"wrote {target} ({target.stat().st_size} bytes)")
    return target


def held_out_face(folder: Path) -> Path:
    """The first val face of the toy world as a PNG file in ``folder`` (as tests/test_editing.py picks one)."""
    from cff_lib.config import load_profile
    from cff_lib.manifests import manifest_filename, read_manifest
    from cff_lib.world import data_root, manifest_dir

    p = load_profile("toy")
    manifest = manifest_dir(p) / manifest_filename("ffhq")
    if not manifest.is_file():
        raise SystemExit(f"no toy FFHQ manifest at {manifest}: generate the toy world first (cff synth)")
    for e in read_manifest(manifest).entries:
        src = data_root(p) / "ffhq" / e.path
        if e.split == "val" and src.is_file():
            out = folder / "held_out_face.png"
            shutil.copyfile(src, out)
            return out
    raise SystemExit(f"no val face of {manifest} is on disk under {data_root(p) / 'ffhq'}")


def editor_screenshot(browser, target: Path, face: Path, age: int) -> None:
    from cff_lib import app as app_mod
    from cff_lib.editing import Editor

    editor = Editor.load("toy")
    demo = app_mod.build_app(editor)
    port = free_port()
    app_mod.launch(demo, "127.0.0.1", port, block=False, quiet=True)
    try:
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.goto(f"http://127.0.0.1:{port}/")
        page.locator("input[type=file]").first.set_input_files(str(face))  # upload the held-out face
        page.locator("#cff-face img").first.wait_for(timeout=60_000)
        # the upload inverts the face at once (source + reconstruction); let that finish before editing
        page.wait_for_function("!/processing|DDIM steps \\|/.test(document.body.innerText)", timeout=120_000)
        slider = page.locator("#cff-age input[type=number]")  # move the age slider (its number box)
        slider.fill(str(age))
        slider.press("Enter")
        page.wait_for_function("!/processing|DDIM steps \\|/.test(document.body.innerText)", timeout=120_000)
        page.get_by_role("button", name="Edit", exact=True).click()
        page.get_by_text(f"age {age} y").first.wait_for(timeout=120_000)  # readings of an edit toward the slider
        page.get_by_text("Edit took").first.wait_for(timeout=120_000)
        page.wait_for_function("!/processing|DDIM steps \\|/.test(document.body.innerText)", timeout=120_000)
        page.wait_for_function(  # every shown image (source, reconstruction, edit, heat map) is decoded
            "() => [...document.querySelectorAll('img')].filter(i => i.src && !i.complete).length === 0",
            timeout=30_000)
        errors = page.locator(".toast-body, .error").all_inner_texts()
        if any(t.strip() for t in errors):
            raise SystemExit(f"the editor shows an error: {errors}")
        time.sleep(0.5)  # let the last images paint
        atomic_screenshot(page, target)
        page.close()
    finally:
        demo.close()


def stand_in_samples(n_faces: int = 12) -> dict[str, list]:
    """method -> [(reference, stand-in generated)] uint8 arrays: real held-out toy faces as references."""
    import numpy as np
    from PIL import Image, ImageFilter

    from cff_lib.app import held_out_faces
    from cff_lib.config import load_profile

    faces = held_out_faces(load_profile("toy"), limit=n_faces)
    if len(faces) < n_faces:
        raise SystemExit(f"only {len(faces)} held-out toy faces on disk; {n_faces} needed")
    rng = np.random.default_rng(0)
    out: dict[str, list] = {m: [] for m in STAND_INS}
    for _, path in faces:
        with Image.open(path) as im:
            im = im.convert("RGB")
        ref = np.asarray(im)
        blur = np.asarray(im.filter(ImageFilter.GaussianBlur(1.0)))
        noisy = np.clip(ref.astype(np.int16) + rng.integers(-24, 25, ref.shape), 0, 255).astype(np.uint8)
        for m, gen in zip(STAND_INS, (ref.copy(), blur, noisy), strict=True):
            out[m].append((ref, gen))
    return out


def rating_screenshot(browser, target: Path, folder: Path) -> None:
    from cff_lib import study as st
    from cff_lib.study import CRITERIA, Study
    from cff_lib.study_app import REGULAR, StudyServer

    st.create_study(folder / "study.sqlite", stand_in_samples())
    study = Study(folder / "study.sqlite")
    server = StudyServer(study, "127.0.0.1", free_port()).start()
    try:
        page = browser.new_page(viewport={"width": 1100, "height": 1300})
        page.goto(server.url)
        page.locator("#cff-specialist").get_by_text(REGULAR, exact=True).click()
        page.locator("#cff-start").click()
        page.get_by_text("Pair 1 of").first.wait_for(timeout=30_000)
        imgs = page.locator("#cff-pair img").all()
        if len(imgs) != 2:
            raise SystemExit(f"the rating page shows {len(imgs)} images, not 2")
        for img in imgs:  # both faces loaded from /study-image/<token>
            img.wait_for(timeout=30_000)
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
        for c, v in zip(CRITERIA, (4, 3, 4, 5, 3), strict=True):
            page.locator(f"#cff-{c}").get_by_text(str(v), exact=True).click()
        time.sleep(0.3)
        atomic_screenshot(page, target)
        page.close()
    finally:
        server.stop()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    parser.add_argument("--age", type=int, default=25, help="where the age slider is moved to")
    parser.add_argument("--only", choices=("editor", "rating"), default=None)
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="cff-screens-") as tmp, sync_playwright() as p:
        tmp = Path(tmp)
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            if args.only in (None, "editor"):
                editor_screenshot(browser, args.out_dir / "editor.png", held_out_face(tmp), args.age)
            if args.only in (None, "rating"):
                rating_screenshot(browser, args.out_dir / "rating.png", tmp)
        finally:
            browser.close()


if __name__ == "__main__":
    main()
