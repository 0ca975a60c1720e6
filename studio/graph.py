"""Step 4, Graph: the co-occurrence graph (METHOD.md section 2) drawn with plotly, a threshold
slider that recomputes and redraws it (dragged or typed), and manual edge edits that the store
keeps apart from the computed edges, so they survive recomputation. A large vocabulary stays
readable: at most 60 nodes are drawn, a searchable category picker shows one category's
neighbourhood, and the cliques list is cut short."""
from __future__ import annotations

import gradio as gr

from engine import workflow as wf
from studio import figures
from studio.common import Page, err, explain, md, md_list, ok, project_id, visitor_of

TITLE, TAB_ID = "4 Graph", "graph"
MAX_CLIQUES_LISTED = 30


# ---- handlers ----------------------------------------------------------------------------------

def draw(ctx, state, tau, focus=None):
    """Recompute with threshold ``tau`` -> (figure, cliques text); ``focus``: a category whose
    neighbourhood alone is drawn (and whose cliques alone are listed)."""
    pid = project_id(state)
    if pid is None:
        return figures.graph_figure([], []), "No project open."
    try:
        g = wf.graph_data(ctx.store, pid, int(tau), visitor=visitor_of(ctx, state))
    except Exception as exc:
        return figures.graph_figure([], []), explain(exc)
    focus = focus if focus in g["categories"] else None
    fig = figures.graph_figure(g["categories"], g["edges"], g["weights"], g["super_of"],
                               g["cliques"], added=g["added"], focus=focus)
    cliques = [c for c in g["cliques"] if focus is None or focus in c]
    lines = [f"**{len(g['edges'])} edges, {len(g['cliques'])} cliques** (tau = {g['tau']})"
             + (f"; cliques with {md(focus)}: {len(cliques)}" if focus else "") + "\n"]
    lines += [f"- {md_list(c)}" for c in cliques[:MAX_CLIQUES_LISTED]]
    if len(cliques) > MAX_CLIQUES_LISTED:
        lines.append(f"- ... and {len(cliques) - MAX_CLIQUES_LISTED} more")
    if g["added"] or g["removed"]:
        pairs = lambda ps: ", ".join(f"{md(a)} - {md(b)}" for a, b in ps) or "none"  # noqa: E731
        lines.append(f"Your edits: added {pairs(g['added'])}; removed {pairs(g['removed'])}.")
    return fig, "\n".join(lines)


def edit(ctx, state, a, b, action) -> str:
    pid = project_id(state)
    if pid is None:
        return err("Open a project first.")
    if action != "clear" and (not a or not b or a == b):
        return err("Choose two different categories.")
    try:
        wf.edit_edge(ctx.store, pid, a, b, action, visitor=visitor_of(ctx, state))
    except Exception as exc:
        return explain(exc)
    return ok({"add": f"Added {md(a)} - {md(b)}.", "remove": f"Removed {md(a)} - {md(b)}.",
               "clear": "Your edits were cleared."}[action])


# ---- widgets and events ------------------------------------------------------------------------

def build(ctx) -> dict:
    w: dict = {}
    with gr.Row():
        w["tau"] = gr.Slider(1, 50, value=wf.SETTINGS.tau, step=1, scale=2,
                             label="Threshold tau (co-occurring sentences)", elem_id="graph-tau")
        w["focus"] = gr.Dropdown([], value=None, label="Show one category's neighbourhood (type to search)",
                                 filterable=True, scale=2, elem_id="graph-focus")
        w["whole"] = gr.Button("Whole graph", scale=0, min_width=120, elem_id="graph-whole")
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
    w["msg"] = gr.Markdown(elem_id="graph-msg")
    return w


def wire(ctx, w: dict, page: Page) -> None:
    state = page.state
    redraw = (lambda st, t, f: draw(ctx, st, t, f))
    view_in, view_out = [state, w["tau"], w["focus"]], [w["plot"], w["cliques"]]
    # .change: a dragged slider and a number typed into its box (Enter) both redraw
    w["tau"].change(redraw, view_in, view_out)
    w["focus"].change(redraw, view_in, view_out)
    w["whole"].click(lambda: None, None, [w["focus"]])
    for action in ("add", "remove", "clear"):
        w[action].click(lambda st, a, b, act=action: edit(ctx, st, a, b, act),
                        [state, w["a"], w["b"]], [w["msg"]]).then(redraw, view_in, view_out)
    # knowledge may have changed since the project was opened: redraw on entering the tab
    page.tab.select(redraw, view_in, view_out)


def outputs(w: dict) -> list:
    return [w["a"], w["b"], w["focus"], w["plot"], w["cliques"], w["msg"]]


def refresh(ctx, state, w: dict) -> tuple:
    """Values of :func:`outputs` when the project changes (drawn at the slider's initial tau)."""
    pid = project_id(state)
    cats = [] if pid is None else wf.project_info(ctx.store, pid, visitor=visitor_of(ctx, state))["categories"]
    fig, text = draw(ctx, state, w["tau"].value)
    return (gr.update(choices=cats, value=None), gr.update(choices=cats, value=None),
            gr.update(choices=cats, value=None), fig, text, "")
