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
    return err(msg)


# User text (category, project and file names, sentences) is data, never markup: Gradio's
# Markdown renders Markdown and HTML, gr.HTML renders HTML, and plotly renders a subset of HTML in
# every label. A category named "<b>bold cat</b>" or "<img src=x>" shows exactly those characters
# because every piece of user text goes through one of these before it reaches a widget:
# md() in Markdown (HTML-escaped, then Markdown punctuation backslash-escaped: CommonMark shows
# an escaped punctuation character literally), html_text() in HTML text and attribute values,
# plot_text() in plotly labels, legends, hover text and ticks (plotly decodes &lt; &gt; &amp;).

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>$^=:])")


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


def weights_note(spec) -> str:
    """'' when the CLIP weights of ``spec`` are here (or random, or will download); else a warning
    saying what is missing and how to provide it."""
    problem = wf.missing_weights(spec)
    return err(problem) if problem else ""


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
