"""The studio's one layout: a project picker on top and one tab per step, in the order a person
goes through them. Each step's widgets come from its module's ``build_*`` and its events from
``wire_*``; this file only composes them and redraws every step when the open project changes.

Per-visitor state: ``gr.BrowserState`` holds the open project id in the visitor's browser, so a
reload (or a restart of the app) reopens the same project; nothing per-visitor lives in a module
global."""
from __future__ import annotations

import uuid

import gradio as gr

from studio import classify, evaluate, export, graph, knowledge, projects, sentences, train
from studio.context import Ctx, StudioSettings

CSS = """
.ifs-card { border: 1px solid #ddd; border-radius: 6px; padding: 6px 10px; margin: 4px 0; }
.ifs-error { border-color: #d62728; }
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
        with gr.Tabs():
            with gr.Tab("1 Projects", id="projects"):
                wp = projects.build_projects(ctx)
            with gr.Tab("2 Knowledge", id="knowledge"):
                wk = knowledge.build_knowledge(ctx)
            with gr.Tab("3 Sentences", id="sentences") as tab_sentences:
                ws = sentences.build_sentences(ctx)
            with gr.Tab("4 Graph", id="graph") as tab_graph:
                wg = graph.build_graph(ctx)
            with gr.Tab("5 Train", id="train"):
                wt = train.build_train(ctx)
            with gr.Tab("6 Classify", id="classify"):
                wc = classify.build_classify(ctx)
            with gr.Tab("7 Evaluate", id="evaluate"):
                we = evaluate.build_evaluate(ctx)
            with gr.Tab("8 Export", id="export"):
                wx = export.build_export(ctx)

        def redraw(st):
            """Every panel's view of the open project (after open/create/delete/import/reload)."""
            from studio.common import project_id

            st = dict(st or {})
            if not st.get("visitor"):
                st["visitor"] = uuid.uuid4().hex  # kept in this browser: its own projects
            pid = project_id(st)
            choices = projects.project_choices(ctx, st)
            if pid is not None and pid not in [c[1] for c in choices]:
                st = {**st, "project": None}
                pid = None
            return (
                st,
                gr.update(choices=choices, value=pid),
                projects.summary(ctx, st),
                *knowledge.refresh_knowledge(ctx, st),
                *sentences.refresh_sentences(ctx, st),
                *graph.refresh_graph(ctx, st, wg["tau"].value),
                *train.refresh_train(ctx, st),
            )

        redraw_out = [state, selector, wp["summary"],
                      wk["category"], wk["keep"], wk["attrs"], wk["synonyms"], wk["super"], wk["prompt"],
                      ws["category"], ws["source"], ws["table"], ws["info"], ws["counts"],
                      wg["a"], wg["b"], wg["plot"], wg["cliques"],
                      wt["runs"], wt["plot"]]

        def refresh_all(event):
            return event.then(redraw, [state], redraw_out)

        projects.wire_projects(ctx, wp, state, selector, refresh_all)
        knowledge.wire_knowledge(ctx, wk, state)
        sentences.wire_sentences(ctx, ws, state)
        graph.wire_graph(ctx, wg, state)
        train.wire_train(ctx, wt, state)
        classify.wire_classify(ctx, wc, state)
        evaluate.wire_evaluate(ctx, we, state)
        export.wire_export(ctx, wx, state)

        # opening a project from the picker (input: only when the person changes it)
        refresh_all(selector.input(lambda st, pid: projects.open_project(ctx, st, pid),
                                   [state, selector], [state]))
        refresh.click(redraw, [state], redraw_out)
        # knowledge may have changed since the project was opened: redraw on entering a tab
        tab_sentences.select(lambda st, c, so, q: (*sentences.table(ctx, st, c, so, q), sentences.counts(ctx, st)),
                             [state, ws["category"], ws["source"], ws["search"]],
                             [ws["table"], ws["info"], ws["counts"]])
        tab_graph.select(lambda st, t: graph.draw(ctx, st, t), [state, wg["tau"]],
                         [wg["plot"], wg["cliques"]])
        # knowledge generated -> sentences and graph change too
        demo.load(redraw, [state], redraw_out)
    demo.ifs_ctx = ctx  # for tests and app.py
    return demo


def launch(settings: StudioSettings | None = None, **kw) -> None:
    settings = settings or StudioSettings.from_env()
    demo = build_app(settings)
    demo.queue(default_concurrency_limit=2).launch(
        server_name=settings.host, server_port=settings.port, css=CSS, show_error=True, **kw)
