"""The rating page of the blind user study, ``cff study serve``: Gradio 6 on 127.0.0.1 unless told otherwise.

A rater says whether they are a specialist and presses *Start*; the page then shows one pair at a time -- the
reference face beside the generated one -- with five 1-5 scales (``study.CRITERIA``) and *Submit rating*.
Each rating is stored (``study.Study.rate``, its own transaction) before the next pair is shown.

Blindness. What the browser receives holds no method name and no method-derived id: the page and its config
name no method, the API returns opaque rater and slot ids, and images are fetched from ``/study-image/<token>``
(this module's route, served from the study's SQLite file with ``Cache-Control: no-store``), the token being
random per shown pair. The page's wording avoids method names too (the title is the study's, which
``create_study`` defaults to "Face editing study").

Public API (``gradio_client``): ``/start`` (specialist choice) -> (rater id, slot id, pair HTML, status) and
``/rate`` (rater id, slot id, five scores) -> (slot id, pair HTML, status); a refused request raises an error
naming the input, and nothing is stored. The Gradio app is mounted on a FastAPI app that also serves the
images (:func:`server_app`); :class:`StudyServer` runs it with uvicorn in a thread (tests) or in the
foreground (:func:`serve`). Analytics, run history and the MCP server are off; nothing is shared publicly.
"""

import html
import ipaddress
import os
import threading
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from cff_lib.study import (  # noqa: E402
    CRITERIA,
    CRITERION_LABELS,
    SCORE_MAX,
    SCORE_MIN,
    Progress,
    Slot,
    Study,
    StudyError,
)

DEFAULT_HOST = "127.0.0.1"
"""Address the rating page binds to by default: this machine only."""

DEFAULT_PORT = 7870
IMAGE_ROUTE = "study-image"
DISPLAY_SIDE = 224
"""Side (CSS pixels) both faces are shown at (nearest-neighbour, so small faces stay sharp)."""

SPECIALIST = "Specialist (e.g. graphic designer, photographer, AI or imaging researcher)"
REGULAR = "Regular user"

INSTRUCTIONS = (
    "Each screen shows a **reference face** (left) and a **generated face** (right) that was made from it. "
    "Rate the generated face on each criterion from 1 (poor) to 5 (great), then press *Submit rating*. "
    "The study is blind: nothing on the page tells you how a face was made. Some pairs may come back later.")

CSS = """
#cff-pair .cff-pair {display: flex; gap: 24px; align-items: flex-start;}
#cff-pair figure {margin: 0; text-align: center;}
#cff-pair img {width: %dpx; height: %dpx; image-rendering: pixelated; border: 1px solid #bbb;}
#cff-pair figcaption {font-weight: 600; margin-top: 4px;}
""" % (DISPLAY_SIDE, DISPLAY_SIDE)


def pair_html(slot: Slot | None, message: str = "") -> str:
    """The HTML of one pair (two ``<img>`` by opaque token), or of ``message`` when there is no pair."""
    if slot is None:
        return f"<div class='cff-pair-empty'>{html.escape(message)}</div>"
    ref, gen = (f"{IMAGE_ROUTE}/{html.escape(t)}" for t in (slot.reference_token, slot.generated_token))
    return ("<div class='cff-pair'>"
            f"<figure><img src='{ref}' alt='reference face'><figcaption>reference</figcaption></figure>"
            f"<figure><img src='{gen}' alt='generated face'><figcaption>generated</figcaption></figure>"
            "</div>")


def status_markdown(progress: Progress) -> str:
    """'Pair k of n' or the thank-you line."""
    if progress.done:
        return f"**Thank you!** All {progress.total} pairs are rated; you may close this page."
    return f"Pair **{progress.rated + 1}** of {progress.total} ({progress.rated} rated)."


class RatingHandlers:
    """The page's handlers as plain methods (tests call them without a browser)."""

    def __init__(self, study: Study):
        self.study = study

    def start(self, choice) -> tuple[str, str, str, str]:
        """Register a rater from the specialist choice; (rater id, first slot id, pair HTML, status)."""
        if choice not in (SPECIALIST, REGULAR):
            raise StudyError("specialist: choose whether you are a specialist or a regular user before you start")
        rater = self.study.register_rater(choice == SPECIALIST)
        progress = self.study.progress(rater.rater_id)
        return rater.rater_id, progress.next_slot.slot_id, pair_html(progress.next_slot), status_markdown(progress)

    def rate(self, rater_id, slot_id, *scores) -> tuple[str, str, str]:
        """Store one rating; (next slot id or "", pair HTML, status)."""
        if not rater_id:
            raise StudyError("rater_id is empty: choose specialist or regular user and press Start first")
        if len(scores) != len(CRITERIA):
            raise StudyError(f"expected {len(CRITERIA)} scores ({', '.join(CRITERIA)}), got {len(scores)}")
        for c, v in zip(CRITERIA, scores, strict=True):
            if v is None or v == "":
                raise StudyError(f"{CRITERION_LABELS[c]}: choose a score from {SCORE_MIN} to {SCORE_MAX}")
        progress = self.study.rate(rater_id, slot_id, dict(zip(CRITERIA, scores, strict=True)))
        nxt = progress.next_slot
        return (nxt.slot_id if nxt else "", pair_html(nxt, "All pairs are rated. Thank you!"),
                status_markdown(progress))


def build_app(study: Study):
    """The Gradio Blocks of the rating page (not launched)."""
    import gradio as gr

    handlers = RatingHandlers(study)
    title = study.info().title

    def on_start(choice):
        try:
            return handlers.start(choice)
        except StudyError as err:
            raise gr.Error(str(err)) from None

    def on_rate(rater_id, slot_id, photorealism, emotional_expression, age_accuracy, identity_preservation,
                cross_modal_consistency):  # named as study.CRITERIA, so the API names its inputs
        try:
            return handlers.rate(rater_id, slot_id, photorealism, emotional_expression, age_accuracy,
                                 identity_preservation, cross_modal_consistency)
        except StudyError as err:
            raise gr.Error(str(err)) from None

    def lock_start(rater):
        return gr.update(interactive=not rater), gr.update(interactive=not rater)

    def clear_scores(slot_id):
        return [gr.update(value=None, interactive=bool(slot_id)) for _ in CRITERIA]

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"## {html.escape(title)}\n\n{INSTRUCTIONS}")
        with gr.Row():
            specialist = gr.Radio([SPECIALIST, REGULAR], value=None, label="Which describes you best?",
                                  elem_id="cff-specialist")
            start = gr.Button("Start", variant="primary", elem_id="cff-start", scale=0)
        rater_id = gr.Textbox(visible=False, label="rater id")
        slot_id = gr.Textbox(visible=False, label="slot id")
        status = gr.Markdown("Choose whether you are a specialist, then press *Start*.", elem_id="cff-status",
                             label="status")
        pair = gr.HTML("", elem_id="cff-pair", label="pair")
        scores = [gr.Radio(list(range(SCORE_MIN, SCORE_MAX + 1)), value=None, interactive=False,
                           label=f"{CRITERION_LABELS[c]} (1 = poor, 5 = great)", elem_id=f"cff-{c}")
                  for c in CRITERIA]
        submit = gr.Button("Submit rating", variant="primary", elem_id="cff-submit")
        start.click(on_start, [specialist], [rater_id, slot_id, pair, status], api_name="start").then(
            lock_start, [rater_id], [specialist, start], api_visibility="private").then(
            clear_scores, [slot_id], scores, api_visibility="private")
        submit.click(on_rate, [rater_id, slot_id, *scores], [slot_id, pair, status], api_name="rate").then(
            clear_scores, [slot_id], scores, api_visibility="private")
    demo.queue(default_concurrency_limit=32)
    return demo


def server_app(study: Study, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT):
    """A FastAPI app serving ``/study-image/<token>`` and the rating page at ``/``."""
    import gradio as gr
    from fastapi import FastAPI, HTTPException, Response

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get(f"/{IMAGE_ROUTE}/{{token}}")
    def study_image(token: str):
        try:
            png = study.image(token)
        except StudyError:
            raise HTTPException(status_code=404, detail="unknown image token") from None
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    demo = build_app(study)
    return gr.mount_gradio_app(app, demo, path="/", server_name=host, server_port=port, footer_links=[],
                               run_history=False, mcp_server=False, ssr_mode=False, show_error=True,
                               max_file_size=1, css=CSS)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class StudyServer:
    """The rating page served by uvicorn on ``host:port``; :meth:`start` runs it in a thread, :meth:`run` in the
    foreground, :meth:`stop` ends it."""

    def __init__(self, study: Study | str | os.PathLike, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT):
        import uvicorn

        self.study = study if isinstance(study, Study) else Study(study)
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"port={port!r} must be an integer in 1-65535")
        self.host, self.port = host, port
        if not _is_loopback(host):
            print(f"warning: binding to {host}: the rating page is reachable from other machines on your network")
        config = uvicorn.Config(server_app(self.study, host, port), host=host, port=port, log_level="warning",
                                access_log=False)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self, timeout_s: float = 30.0) -> "StudyServer":
        self._thread = threading.Thread(target=self._server.run, name="cff-study-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the rating page did not start on {self.url}")
            time.sleep(0.05)
        return self

    def run(self) -> None:
        self._server.run()

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


def serve(study: str | os.PathLike | Study, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
          block: bool = True) -> StudyServer:
    """``cff study serve``: serve the study's rating page (foreground when ``block``)."""
    study = study if isinstance(study, Study) else Study(Path(study))
    info = study.info()
    if info.status != "open":
        raise StudyError(f"the study {info.path} is closed; there is nothing to rate")
    server = StudyServer(study, host, port)
    print(f"rating page of {info.path} ({len(info.methods)} methods, {info.slots_per_rater} pairs per rater, "
          f"{info.n_ratings} ratings so far) on {server.url}; Ctrl-C stops it")
    if block:
        server.run()
    else:
        server.start()
    return server


__all__ = ["DEFAULT_HOST", "RatingHandlers", "StudyServer", "build_app", "pair_html", "serve", "server_app",
           "status_markdown"]
