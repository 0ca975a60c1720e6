"""The studio's one layout: a project picker on top and one tab per step, in the order a person
goes through them. Every tab module follows the same protocol (see :mod:`studio.common`):
``build`` its widgets, ``wire`` its events, and ``outputs``/``refresh`` for the redraw when the
open project changes; this file loops over :data:`TABS` and knows no tab's widgets.

Per-visitor state: ``gr.BrowserState`` holds the open project id in the visitor's browser, so a
reload (or a restart of the app) reopens the same project; nothing per-visitor lives in a module
global."""
from __future__ import annotations

import uuid

import gradio as gr

from studio import classify, evaluate, export, gallery, graph, knowledge, projects, sentences, train
from studio.common import Page, project_id
from studio.context import Ctx, StudioSettings

TABS = (projects, knowledge, sentences, graph, train, classify, evaluate, export)

CSS = gallery.CSS + """
.ifs-base { color: #777; padding-left: 10px; }
"""


def build_app(settings: StudioSettings | None = None, ctx: Ctx | None = None) -> gr.Blocks:
    ctx = ctx or Ctx.open(settings or StudioSettings.from_env())
    with gr.Blocks(title="Image-Free Studio") as demo:
        state = gr.BrowserState({"project": None, "visitor": None}, storage_key="image-free-studio")
        gr.Markdown("# Image-Free Studio\nType category names, get a multi-label image classifier "
                    "without one labelled photo.")
        with gr.Row():
            selector = gr.Dropdown([], label="Open project", elem_id="project-selector", scale=3,
                                   interactive=True)
            refresh = gr.Button("Refresh list", scale=0, min_width=120)
        built = []  # (tab module, its widgets, its gr.Tab)
        with gr.Tabs():
            for tab in TABS:
                with gr.Tab(tab.TITLE, id=tab.TAB_ID) as tab_widget:
                    built.append((tab, tab.build(ctx), tab_widget))
        redraw_out = [state, selector] + [c for tab, w, _ in built for c in tab.outputs(w)]

        def redraw(st):
            """Every tab's view of the open project (after open/create/delete/import/reload)."""
            st = dict(st or {})
            if not st.get("visitor"):
                st["visitor"] = uuid.uuid4().hex  # kept in this browser: its own projects
            pid = project_id(st)
            choices = projects.project_choices(ctx, st)
            if pid is not None and pid not in [c[1] for c in choices]:
                st = {**st, "project": None}
                pid = None
            values = [st, gr.update(choices=choices, value=pid)]
            for tab, w, _ in built:
                values.extend(tab.refresh(ctx, st, w))
            return values

        def redraw_after(event):
            return event.then(redraw, [state], redraw_out)

        for tab, w, tab_widget in built:
            tab.wire(ctx, w, Page(state=state, selector=selector, tab=tab_widget, redraw_after=redraw_after))

        # opening a project from the picker (input: only when the person changes it)
        redraw_after(selector.input(lambda st, pid: projects.open_project(ctx, st, pid), [state, selector], [state]))
        refresh.click(redraw, [state], redraw_out)
        demo.load(redraw, [state], redraw_out)
    demo.ifs_ctx = ctx  # for tests and app.py
    return demo


def launch(settings: StudioSettings | None = None, **kw) -> None:
    settings = settings or StudioSettings.from_env()
    demo = build_app(settings)
    demo.queue(default_concurrency_limit=2).launch(
        server_name=settings.host, server_port=settings.port, css=CSS, show_error=True, **kw)
