"""The web editor, ``cff app``: edit a face in the browser (Gradio 6), on 127.0.0.1 unless told otherwise.

Pick one of the world's held-out faces (val/test split of the profile's FFHQ manifest) or upload one; set a
text, a target age, an emotion with its intensity, a voice clip (upload or microphone), t0 and the number of
DDIM steps; the page shows the source, the unconditioned reconstruction and the edit side by side, a heat map
of |edit - source|, and what the referees (``cff_lib.referees``, judges no loss has seen) read on each. An
age-progression strip (``qualitative.AGE_STRIP``) is one click away. Every input goes through the checks of
``cff_lib.editing`` (a bad one is shown as an error; nothing runs).

Speed: ``editing.Editor`` keeps each face's DDIM inversion (and reconstruction) for the current t0 and steps,
so after the first edit of a face only the conditioned reverse chain runs. The public API has one named
endpoint per button (``/edit``, ``/age_strip``); ``gradio_client`` calls them (tests/test_app.py).

Nothing is shared publicly unless ``share=True`` (``cff app --share``); analytics are off.
"""

import ipaddress
import os
import time
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import torch  # noqa: E402

from cff_lib.editing import (  # noqa: E402
    FACE_MAX_BYTES,
    Editor,
    InputError,
    Readings,
    Target,
    check_schedule,
    difference_heatmap,
    make_target,
    to_pil,
)
from cff_lib.emotions import EMOTIONS  # noqa: E402

DEFAULT_HOST = "127.0.0.1"
"""Address the editor binds to by default: this machine only."""

DISPLAY_SIDE = 192
"""Side (pixels) faces are shown at (nearest-neighbour enlargement of the model's resolution)."""

MAX_HELD_OUT = 48
"""Held-out faces offered in the gallery."""

NO_EMOTION = "(none)"


def held_out_faces(profile, limit: int = MAX_HELD_OUT) -> list[tuple[str, str]]:
    """(label, absolute path) of up to ``limit`` held-out (val, then test) FFHQ faces of the profile's world
    that exist on disk; [] when the world or its manifest is absent."""
    from cff_lib.manifests import manifest_filename, read_manifest
    from cff_lib.world import data_root, manifest_dir

    path = manifest_dir(profile) / manifest_filename("ffhq")
    if not path.is_file():
        return []
    root = data_root(profile) / "ffhq"
    out = []
    for split in ("val", "test"):
        for e in read_manifest(path).entries:
            if e.split == split and (root / e.path).is_file():
                lab = e.labels
                out.append((f"{split} {e.path}: {lab.get('gender', '?')}, {float(lab.get('age') or 0):.0f} y, "
                            f"{lab.get('emotion', '?')}", str(root / e.path)))
                if len(out) >= limit:
                    return out
    return out


def _upscale(editor: Editor) -> int:
    return max(1, DISPLAY_SIDE // editor.size)


def readings_markdown(columns: dict[str, Readings | None], target: Target, note: str | None, heat_mean: float,
                      seconds: float, reused: bool) -> str:
    """A small Markdown table of the referees' readings per shown image."""
    lines = []
    if all(r is None for r in columns.values()):
        lines.append(f"**Referees:** {note or 'no readings'}")
    else:
        names = list(columns)
        lines.append("Referees' readings (evaluation-only judges; the model was never trained against them)")
        lines.append("")
        lines.append("| | " + " | ".join(names) + " |")
        lines.append("|---|" + "---|" * len(names))
        lines.append("| age (y) | " + " | ".join(f"{r.age[0]:.1f}" for r in columns.values()) + " |")
        lines.append("| emotion | " + " | ".join(f"{r.emotion[0]} {r.emotion_prob[0]:.2f}" for r in columns.values())
                     + " |")
        ident = [r.identity for r in columns.values()]
        lines.append("| identity cos. to source | " + " | ".join("—" if i is None else f"{i[0]:.3f}" for i in ident)
                     + " |")
        thr = next(iter(columns.values())).threshold
        lines.append("")
        lines.append(f"Same person above {thr:.3f} (the identity referee's 1 % false-accept threshold).")
    targets = []
    if target.age is not None:
        targets.append(f"age {target.age:g} y")
    if target.emotion is not None:
        targets.append(f"{target.emotion} at intensity {target.intensity:g}")
    lines.append("")
    lines.append(f"Target: *{target.caption}*" + (f" ({', '.join(targets)})" if targets else "")
                 + (" + voice" if target.voice is not None else ""))
    lines.append("")
    lines.append(f"Mean |edit − source| {heat_mean:.3f} (of 2). Edit took {seconds:.2f} s"
                 + (" (inversion reused)." if reused else " (inversion included)."))
    return "\n".join(lines)


class EditorApp:
    """The handlers behind the page (plain methods, so tests can call them without a browser)."""

    def __init__(self, editor: Editor, faces: list[tuple[str, str]] | None = None):
        self.editor = editor
        self.faces = held_out_faces(editor.profile) if faces is None else faces

    def _target(self, text, use_age, age, emotion, intensity, audio) -> Target:
        voice = self.editor.read_voice(audio) if audio else None
        emotion = None if emotion in (None, "", NO_EMOTION) else emotion
        t = make_target(text, age if use_age else None, emotion, intensity)
        return Target(t.text, t.age, t.emotion, t.intensity, t.gender, voice)

    def edit(self, face, text, use_age, age, emotion, intensity, audio, t0, steps, progress=None):
        """(source, reconstruction, edit, heat map) PIL images and the readings' Markdown."""
        if not face:
            raise InputError("no face: pick a held-out face or upload one")
        t0, steps = check_schedule(t0, steps)
        target = self._target(text, use_age, age, emotion, intensity, audio)
        src = self.editor.read_face(face).image
        reused = self.editor.is_prepared(src, t0, steps)
        start = time.perf_counter()
        out = self.editor.edit(src, target, t0, steps, reconstruction=True, progress=progress)
        seconds = time.perf_counter() - start
        up = _upscale(self.editor)
        heat, heat_mean = difference_heatmap(out["edit"], src, up)
        stack = torch.stack([src, out["reconstruction"], out["edit"]])
        reading = self.editor.read(stack, src[None].expand(3, -1, -1, -1))
        columns: dict[str, Readings | None] = {}
        for i, name in enumerate(("source", "reconstruction", "edit")):
            columns[name] = None if reading is None else Readings(
                reading.age[i:i + 1], reading.emotion[i:i + 1], reading.emotion_prob[i:i + 1],
                None if i == 0 else reading.identity[i:i + 1], reading.threshold)
        md = readings_markdown(columns, target, self.editor.referee_note, heat_mean, seconds, reused)
        return to_pil(src, up), to_pil(out["reconstruction"], up), to_pil(out["edit"], up), heat, md

    def prepare(self, face, t0, steps, progress=None):
        """(source, reconstruction) PIL images of a newly chosen face; inverts it once so that the edits that
        follow run only the conditioned chain. (None, None) without a face."""
        if not face:
            return None, None
        t0, steps = check_schedule(t0, steps)
        src = self.editor.read_face(face).image
        rec = self.editor.reconstruct(src, t0, steps, progress=progress)
        up = _upscale(self.editor)
        return to_pil(src, up), to_pil(rec, up)

    def age_strip(self, face, text, emotion, intensity, audio, t0, steps, progress=None):
        """[(PIL image, caption)] of the face edited toward each age of ``qualitative.AGE_STRIP``."""
        from cff_lib.qualitative import AGE_STRIP

        if not face:
            raise InputError("no face: pick a held-out face or upload one")
        t0, steps = check_schedule(t0, steps)
        base = self._target(None, False, None, emotion, intensity, audio)
        targets = [Target(text or None, float(a), base.emotion, base.intensity, None, base.voice) for a in AGE_STRIP]
        src = self.editor.read_face(face).image
        strip = self.editor.edit_many(src, targets, t0, steps, progress=progress)
        reading = self.editor.read(strip, src[None].expand(len(targets), -1, -1, -1))
        up = _upscale(self.editor)
        out = []
        for i, a in enumerate(AGE_STRIP):
            cap = f"target {a} y"
            if reading is not None:
                cap += f" · read {reading.age[i]:.0f} y · id {reading.identity[i]:.2f}"
            out.append((to_pil(strip[i], up), cap))
        return out

    def pick(self, index: int):
        """The held-out face at ``index`` as a PIL image (exact pixels)."""
        from PIL import Image

        with Image.open(self.faces[index][1]) as im:
            return im.convert("RGB")


def _gr_progress(progress):
    def report(done: int, total: int, stage: str) -> None:
        progress((done, total), desc=stage, unit="DDIM steps")

    return report


def build_app(editor: Editor, faces: list[tuple[str, str]] | None = None):
    """The Gradio Blocks of the editor (not launched)."""
    import gradio as gr

    app_state = EditorApp(editor, faces)
    t0_default, steps_default = editor.default_schedule()

    def on_edit(face, text, use_age, age, emotion, intensity, audio, t0, steps, progress=gr.Progress()):  # noqa: B008 (Gradio's idiom)
        try:
            return app_state.edit(face, text, use_age, age, emotion, intensity, audio, t0, steps,
                                  progress=_gr_progress(progress))
        except InputError as err:
            raise gr.Error(str(err)) from None

    def on_strip(face, text, emotion, intensity, audio, t0, steps, progress=gr.Progress()):  # noqa: B008 (Gradio's idiom)
        try:
            return app_state.age_strip(face, text, emotion, intensity, audio, t0, steps,
                                       progress=_gr_progress(progress))
        except InputError as err:
            raise gr.Error(str(err)) from None

    def on_prepare(face, t0, steps, progress=gr.Progress()):  # noqa: B008 (Gradio's idiom)
        try:
            return app_state.prepare(face, t0, steps, progress=_gr_progress(progress))
        except InputError as err:
            raise gr.Error(str(err)) from None

    def on_pick(evt: gr.SelectData):
        return app_state.pick(evt.index)

    with gr.Blocks(title="ClipFaceFusion editor", analytics_enabled=False) as demo:
        gr.Markdown(f"## ClipFaceFusion: edit a face  \nProfile `{editor.profile.name}` "
                    f"({editor.size}×{editor.size}). Uploaded faces are centre-cropped and resized to "
                    f"{editor.size}×{editor.size}; voices are mixed to mono and resampled to "
                    f"{editor.profile.data.sample_rate} Hz.")
        with gr.Row():
            with gr.Column(scale=1):
                face = gr.Image(label="face (upload, or pick a held-out face below)", type="filepath",
                                image_mode=None, format="png", sources=["upload", "clipboard"], height=220,
                                elem_id="cff-face")
                gallery = gr.Gallery(value=[(app_state.pick(i), lab) for i, (lab, _) in enumerate(app_state.faces)]
                                     or None, format="png",
                                     label=f"held-out faces of the {editor.profile.name} world (click to pick)",
                                     columns=8, height=200, allow_preview=False, elem_id="cff-held-out")
                text = gr.Textbox(label="text (optional; default: built from age and emotion)",
                                  placeholder="e.g. a 70-year-old happy woman")
                with gr.Row():
                    use_age = gr.Checkbox(label="target age", value=True)
                    age = gr.Slider(0, 120, value=60, step=1, label="age (years)", elem_id="cff-age")
                with gr.Row():
                    emotion = gr.Dropdown([NO_EMOTION, *EMOTIONS], value="happy", label="emotion")
                    intensity = gr.Slider(0, 1, value=1.0, step=0.05, label="intensity")
                audio = gr.Audio(label="voice (upload or record)", sources=["upload", "microphone"],
                                 type="filepath")
                with gr.Row():
                    t0 = gr.Slider(1, 999, value=t0_default, step=1, label="t0 (inversion depth)")
                    steps = gr.Slider(1, 100, value=steps_default, step=1, label="DDIM steps (each way)")
                with gr.Row():
                    go = gr.Button("Edit", variant="primary")
                    strip_btn = gr.Button("Age-progression strip")
            with gr.Column(scale=2):
                with gr.Row():
                    o_src = gr.Image(label="source", format="png", interactive=False, height=DISPLAY_SIDE)
                    o_rec = gr.Image(label="reconstruction (no condition)", format="png", interactive=False,
                                     height=DISPLAY_SIDE)
                    o_edit = gr.Image(label="edit", format="png", interactive=False, height=DISPLAY_SIDE)
                    o_heat = gr.Image(label="|edit − source|", format="png", interactive=False,
                                      height=DISPLAY_SIDE)
                readings = gr.Markdown()
                strip = gr.Gallery(label="age progression", columns=6, height=260, format="png")
        gallery.select(on_pick, None, face, api_visibility="private")
        edit_inputs = [face, text, use_age, age, emotion, intensity, audio, t0, steps]
        edit_outputs = [o_src, o_rec, o_edit, o_heat, readings]
        go.click(on_edit, edit_inputs, edit_outputs, api_name="edit", concurrency_id="model", concurrency_limit=1)
        # a new face (or t0 / steps) is inverted and reconstructed at once, so the edits that follow are fast
        for trigger in (face.change, t0.release, steps.release):
            trigger(on_prepare, [face, t0, steps], [o_src, o_rec], api_visibility="private", concurrency_id="model",
                    concurrency_limit=1, trigger_mode="always_last")
        # live: releasing a slider or changing the emotion re-runs the edit (only the conditioned chain)
        for trigger in (age.release, intensity.release, emotion.change, use_age.change):
            trigger(on_edit, edit_inputs, edit_outputs, api_visibility="private", concurrency_id="model",
                    concurrency_limit=1, trigger_mode="always_last")
        strip_btn.click(on_strip, [face, text, emotion, intensity, audio, t0, steps], strip, api_name="age_strip",
                        concurrency_id="model", concurrency_limit=1)
    demo.queue()
    return demo


def notebook_editor(editor: Editor, face: torch.Tensor, gender: str | None = None, *, show: bool = True):
    """ipywidgets sliders (age, emotion with intensity) that edit ``face`` (3, H, W) live in a Jupyter notebook,
    showing source | edit and the referees' readings; returns the widget box (displayed if ``show``)."""
    import html
    import io

    import ipywidgets as widgets

    from cff_lib.editing import describe_edit, image_grid

    face = face.detach().float().cpu()
    t0, steps = editor.default_schedule()
    age = widgets.IntSlider(value=60, min=0, max=120, description="age", continuous_update=False)
    emotion = widgets.Dropdown(options=[NO_EMOTION, *EMOTIONS], value="happy", description="emotion")
    intensity = widgets.FloatSlider(value=1.0, min=0.0, max=1.0, step=0.05, description="intensity",
                                    continuous_update=False)
    picture, report = widgets.Image(format="png"), widgets.HTML()

    def update(_=None) -> None:
        target = make_target(age=age.value, emotion=emotion.value, intensity=intensity.value, gender=gender)
        start = time.perf_counter()
        edited = editor.edit(face, target, t0, steps)["edit"]
        seconds = time.perf_counter() - start
        buf = io.BytesIO()
        image_grid(torch.stack([face, edited]), columns=2, gap=4, upscale=_upscale(editor)).save(buf, "PNG")
        picture.value = buf.getvalue()
        lines = describe_edit(editor.read(face[None]), editor.read(edited[None], face[None]), target,
                              editor.referee_note)
        lines.append(f"source | edit; target '{target.caption}'; edit took {seconds:.2f} s (t0={t0}, {steps} steps)")
        report.value = "<pre>" + html.escape("\n".join(lines)) + "</pre>"

    for w in (age, emotion, intensity):
        w.observe(update, names="value")
    update()
    box = widgets.VBox([widgets.HBox([age, emotion, intensity]), picture, report])
    if show:
        from IPython.display import display

        display(box)
    return box


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def launch(demo, host: str = DEFAULT_HOST, port: int | None = None, *, share: bool = False, block: bool = True,
           quiet: bool = False):
    """Launch ``demo`` on ``host:port`` (127.0.0.1 by default; a public link only with ``share=True``)."""
    if not _is_loopback(host):
        print(f"warning: binding to {host}: the editor is reachable from other machines on your network")
    if share:
        print("warning: share=True opens a public gradio.live link to this editor")
    return demo.launch(server_name=host, server_port=port, share=bool(share), prevent_thread_lock=not block,
                       quiet=quiet, ssr_mode=False, footer_links=["api"], max_file_size=FACE_MAX_BYTES)


def serve(profile: str | Any = "toy", host: str = DEFAULT_HOST, port: int | None = 7860, share: bool = False,
          *, editor: Editor | None = None, block: bool = True):
    """``cff app``: load the profile's model, build the page and serve it."""
    if editor is None:
        print(f"loading the trained ClipFaceFusion of profile {getattr(profile, 'name', profile)!r} ...")
        editor = Editor.load(profile)
    demo = build_app(editor)
    launch(demo, host, port, share=share, block=block)
    return demo


__all__ = ["DEFAULT_HOST", "EditorApp", "build_app", "held_out_faces", "launch", "notebook_editor",
           "readings_markdown", "serve"]


if __name__ == "__main__":  # python -m cff_lib.app [profile]
    import sys

    serve(sys.argv[1] if len(sys.argv) > 1 else "toy")
