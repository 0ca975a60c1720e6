"""What the panels share: message formatting, the open project's id, the tab protocol's
:class:`Page`, running engine work in a thread while a Gradio generator yields progress
(:class:`Worker`), and the cancel wiring of long jobs (:class:`CancellableJob`).

Tab protocol (``studio/layout.py`` loops over the tabs): each tab module has ``TITLE`` and
``TAB_ID``, ``build(ctx) -> widgets``, ``wire(ctx, widgets, page)``, ``outputs(widgets)`` (the
components redrawn when the open project changes) and ``refresh(ctx, state, widgets)`` (their
values, in the same order)."""
from __future__ import annotations

import html
import queue
import re
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import gradio as gr

from engine import workflow as wf


def ok(text: str) -> str:
    return f"✅ {text}"


def err(text: str) -> str:
    return f"⚠️ {text}"


def explain(exc: BaseException) -> str:
    """One clear line for the person; the engine's errors already carry the what and the how."""
    msg = str(exc).strip() or exc.__class__.__name__
    return err(md(msg))  # messages quote names and paths: shown as text


# User text (category, project and file names, sentences) is data, never markup: Gradio's
# Markdown renders Markdown and HTML, gr.HTML renders HTML, and plotly renders a subset of HTML in
# every label. A category named "<b>bold cat</b>" or "<img src=x>" shows exactly those characters
# because every piece of user text goes through one of these before it reaches a widget:
# md() in Markdown (on one line, HTML-escaped, then the punctuation that starts Markdown inside
# a line backslash-escaped: CommonMark shows an escaped punctuation character literally),
# html_text() in HTML text and attribute values,
# plot_text() in plotly labels, legends, hover text and ticks (plotly decodes &lt; &gt; &amp;).

_MD_SPECIAL = re.compile(r"([\\`*_\[\]#|~$])")  # what can start markup inside a line


def html_text(text) -> str:
    return html.escape(str(text), quote=True)


esc = html_text


def md(text) -> str:
    """``text`` for a Markdown widget: shows literally, on one line."""
    one_line = " ".join(str(text).split())
    return _MD_SPECIAL.sub(r"\\\1", html.escape(one_line, quote=False))


def plot_text(text) -> str:
    return html.escape(str(text), quote=False)


def md_list(names, limit: int | None = None) -> str:
    """Comma-separated names for Markdown, ``...`` after ``limit``."""
    names = list(names)
    shown = names if limit is None else names[:limit]
    more = " ..." if limit is not None and len(names) > limit else ""
    return ", ".join(md(n) for n in shown) + more


def project_id(browser_state) -> int | None:
    """The open project's id from the per-visitor browser state."""
    if isinstance(browser_state, dict):
        pid = browser_state.get("project")
        return int(pid) if pid not in (None, "") else None
    return None


def visitor_of(ctx, state) -> str | None:
    """The visitor every project action is checked against in a shared studio
    (``private_projects``; the id lives in the visitor's browser state): workflow refuses a
    project that is not this visitor's. None on one's own machine: every project is open. A
    request without a visitor id owns nothing ("")."""
    if not ctx.settings.private_projects:
        return None
    visitor = (state or {}).get("visitor") if isinstance(state, dict) else None
    return visitor if isinstance(visitor, str) else ""


def session_of(request) -> str:
    return getattr(request, "session_hash", None) or "local"


class Worker:
    """Run ``fn(emit, should_stop)`` in a thread; iterate over what it emits, then its result.

    ``emit(item)`` queues an item for the generator that drives the page; ``should_stop()``
    reads the cancel flag. Iteration yields ``("item", x)`` for every emitted item and finally
    ``("done", result)`` or ``("error", exc)``. Items arriving faster than ``min_interval``
    seconds are coalesced to the latest one so the page is not flooded.
    """

    def __init__(self, fn: Callable, cancel: threading.Event, min_interval: float = 0.3):
        self.fn = fn
        self.cancel = cancel
        self.min_interval = min_interval
        self.q: queue.Queue = queue.Queue()

    def _run(self):
        try:
            result = self.fn(self.q.put, self.cancel.is_set)
            self.q.put(("__done__", result))
        except BaseException as exc:  # reported to the page, never swallowed
            traceback.print_exc()
            self.q.put(("__error__", exc))

    def __iter__(self) -> Iterator[tuple[str, object]]:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        last = 0.0
        pending = None
        while True:
            try:
                msg = self.q.get(timeout=self.min_interval)
            except queue.Empty:
                if pending is not None:
                    yield ("item", pending)
                    pending, last = None, time.time()
                continue
            if isinstance(msg, tuple) and len(msg) == 2 and msg[0] in ("__done__", "__error__"):
                if pending is not None:
                    yield ("item", pending)
                yield ("done" if msg[0] == "__done__" else "error", msg[1])
                return
            pending = msg
            if time.time() - last >= self.min_interval:
                yield ("item", pending)
                pending, last = None, time.time()


def number_problems(values: dict, minimums: dict[str, tuple[float, bool]]) -> list[str]:
    """One line per bad number among ``values``: ``minimums[name] = (least allowed, whole)``.
    An empty box is a problem (nothing silently falls back to a default)."""
    out = []
    for name, (least, whole) in minimums.items():
        if name not in values:
            continue
        v = values[name]
        label = name.replace("_", " ")
        kind = "a whole number" if whole else "a number"
        if v is None or v == "":
            out.append(f"{label}: the box is empty; give {kind} of at least {least:g}.")
        elif (whole and float(v) != int(float(v))) or float(v) < least:
            out.append(f"{label}: give {kind} of at least {least:g} (not {float(v):g}).")
    return out


def problems_text(problems: list[str]) -> str:
    return "\n".join(err(md(p)) + "  " for p in problems)


# ---- the CLIP weights panel (Train and Classify) -----------------------------------------------

def build_weights_panel(ctx, prefix: str) -> dict:
    """Hidden until the tab is entered with the CLIP weights missing: what is missing in plain
    words, a weights file to upload or a path on this machine, and a download when online."""
    w: dict = {}
    with gr.Column(visible=False, elem_id=f"{prefix}-weights") as w["panel"]:
        w["text"] = gr.Markdown(elem_id=f"{prefix}-weights-text")
        with gr.Row():
            w["file"] = gr.File(label="CLIP weights file", file_count="single", scale=2,
                                elem_id=f"{prefix}-weights-file")
            w["path"] = gr.Textbox(label="... or its path on this machine", scale=2,
                                   elem_id=f"{prefix}-weights-path")
        with gr.Row():
            w["use"] = gr.Button("Use this weights file", elem_id=f"{prefix}-weights-use")
            w["download"] = gr.Button("Download the weights", visible=False,
                                      elem_id=f"{prefix}-weights-download")
        w["msg"] = gr.Markdown(elem_id=f"{prefix}-weights-msg")
    return w


def weights_panel_view(ctx):
    """(panel visibility, its text, download button visibility) for the studio's CLIP setting."""
    status = wf.weights_status(ctx.settings.backbone_spec())
    return (gr.update(visible=not status.ready), err(md(status.message)) if status.message else "",
            gr.update(visible=status.can_download))


def use_weights(ctx, upload, path) -> str:
    """Point the studio's CLIP setting at an uploaded or local weights file (checked by loading it)."""
    src = str(getattr(upload, "name", upload) or "").strip() or (path or "").strip()
    if not src:
        return err("Upload a weights file or give its path first.")
    try:
        spec = wf.use_weights_file(ctx.settings.backbone_spec(), src,
                                   folder=None if not upload else f"{ctx.settings.data_dir}/weights")
    except Exception as exc:
        return explain(exc)
    ctx.settings.clip_checkpoint = spec.checkpoint
    return ok(f"Using the weights file {md(spec.checkpoint.rsplit('/', 1)[-1])}.")


def wire_weights_panel(ctx, w: dict, tab) -> None:
    """Check on entering ``tab``; install from a file or download on the buttons."""
    view = [w["panel"], w["text"], w["download"]]
    tab.select(lambda: weights_panel_view(ctx), None, view)
    w["use"].click(lambda f, p: use_weights(ctx, f, p), [w["file"], w["path"]], [w["msg"]]).then(
        lambda: weights_panel_view(ctx), None, view)

    def download():
        try:
            wf.download_weights(ctx.settings.backbone_spec())
        except Exception as exc:
            return explain(exc)
        return ok("Downloaded.")

    w["download"].click(download, None, [w["msg"]]).then(lambda: weights_panel_view(ctx), None, view)


@dataclass
class Page:
    """What a tab's ``wire`` gets besides its own widgets: the per-visitor ``state``, the project
    picker in the header (``selector``), the tab itself (``tab``, for its select event) and
    ``redraw_after(event)``, which chains the redraw of every tab after an event that changed the
    open project."""

    state: object
    selector: object
    tab: object
    redraw_after: Callable


class CancellableJob:
    """One kind of long job ("knowledge", "train", "evaluate") per visitor session: the cancel flag
    while it runs (``with job.running(request) as cancel:``) and the Cancel button that sets it.
    Two visitors never cancel each other's work (flags are keyed by session)."""

    def __init__(self, ctx, kind: str):
        self.ctx, self.kind = ctx, kind

    @contextmanager
    def running(self, request) -> Iterator[threading.Event]:
        session = session_of(request)
        cancel = self.ctx.jobs.start(session, self.kind)
        try:
            yield cancel
        finally:
            self.ctx.jobs.finish(session, self.kind, cancel)

    def cancel(self, request) -> str:
        """Set the running job's flag -> the message for the page."""
        return ok("Cancelling...") if self.ctx.jobs.cancel(session_of(request), self.kind) else err("Nothing is running.")

    def wire_cancel(self, button, message) -> None:
        """``button`` cancels this session's job; ``message`` shows the answer (not queued, so it
        runs while the job holds the queue)."""
        def cancel(request: gr.Request):
            return self.cancel(request)

        button.click(cancel, None, [message], queue=False)
