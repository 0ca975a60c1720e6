"""Step 4, Graph: the co-occurrence graph (METHOD.md section 2) drawn with plotly, a threshold
slider that recomputes and redraws it, and manual edge edits that the store keeps apart from the
computed edges, so they survive recomputation."""
from __future__ import annotations

import gradio as gr

from engine import workflow as wf
from studio import figures
from studio.common import Page, err, explain, ok, project_id

TITLE, TAB_ID = "4 Graph", "graph"


# ---- handlers ----------------------------------------------------------------------------------

def draw(ctx, state, tau):
    """Recompute with threshold ``tau`` -> (figure, cliques text)."""
    pid = project_id(state)
    if pid is None:
        return figures.graph_figure([], []), "No project open."
    try:
        g = wf.graph_data(ctx.store, pid, tau)
    except Exception as exc:
        return figures.graph_figure([], []), explain(exc)
    fig = figures.graph_figure(g["categories"], g["edges"], g["weights"], g["super_of"],
                               g["cliques"], added=g["added"])
    lines = [f"**{len(g['edges'])} edges, {len(g['cliques'])} cliques** (tau = {g['tau']})"]
    lines += [f"- {', '.join(c)}" for c in g["cliques"]]
    if g["added"] or g["removed"]:
        lines.append(f"Your edits: added {', '.join('-'.join(p) for p in g['added']) or 'none'}; "
                     f"removed {', '.join('-'.join(p) for p in g['removed']) or 'none'}.")
    return fig, "\n".join(lines)


def edit(ctx, state, a, b, action) -> str:
    pid = project_id(state)
    if pid is None:
        return err("Open a project first.")
    if action != "clear" and (not a or not b or a == b):
        return err("Choose two different categories.")
    try:
        wf.edit_edge(ctx.store, pid, a, b, action)
    except Exception as exc:
        return explain(exc)
    return ok({"add": f"Added {a} - {b}.", "remove": f"Removed {a} - {b}.",
               "clear": "Your edits were cleared."}[action])


# ---- widgets and events ------------------------------------------------------------------------

def build(ctx) -> dict:
    w: dict = {}
    w["tau"] = gr.Slider(1, 50, value=wf.SETTINGS.tau, step=1, label="Threshold tau (co-occurring sentences)",
                         elem_id="graph-tau")
    with gr.Row():
        with gr.Column(scale=3):
            w["plot"] = gr.Plot(label="Co-occurrence graph", elem_id="graph-plot")
        with gr.Column(scale=1):
            w["cliques"] = gr.Markdown(elem_id="graph-cliques")
    with gr.Row():
        w["a"] = gr.Dropdown([], label="Category A")
        w["b"] = gr.Dropdown([], label="Category B")
        w["add"] = gr.Button("Add edge")
        w["remove"] = gr.Button("Remove edge")
        w["clear"] = gr.Button("Clear my edits")
    w["msg"] = gr.Markdown()
    return w


def wire(ctx, w: dict, page: Page) -> None:
    state = page.state
    redraw = (lambda st, t: draw(ctx, st, t))
    w["tau"].release(redraw, [state, w["tau"]], [w["plot"], w["cliques"]])
    for action in ("add", "remove", "clear"):
        w[action].click(lambda st, a, b, act=action: edit(ctx, st, a, b, act),
                        [state, w["a"], w["b"]], [w["msg"]]).then(
            redraw, [state, w["tau"]], [w["plot"], w["cliques"]])
    # knowledge may have changed since the project was opened: redraw on entering the tab
    page.tab.select(redraw, [state, w["tau"]], [w["plot"], w["cliques"]])


def outputs(w: dict) -> list:
    return [w["a"], w["b"], w["plot"], w["cliques"]]


def refresh(ctx, state, w: dict) -> tuple:
    """Values of :func:`outputs` when the project changes (drawn at the slider's initial tau)."""
    pid = project_id(state)
    cats = [] if pid is None else wf.project_info(ctx.store, pid)["categories"]
    fig, text = draw(ctx, state, w["tau"].value)
    return gr.update(choices=cats, value=None), gr.update(choices=cats, value=None), fig, text
