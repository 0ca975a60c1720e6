"""Plotly figure builders for the studio. Pure functions: plain data in, a ``go.Figure`` out.

- ``graph_figure``: the co-occurrence graph (METHOD.md section 2): nodes coloured by
  super-category, edge width by weight, edges inside a maximal clique highlighted, user-added
  edges dashed. Nodes sit on a circle in category order so the drawing is stable across redraws.
  A large vocabulary is drawn readably: at most ``max_nodes`` nodes (the most connected ones, or
  one category's neighbourhood when ``focus`` is given), a note saying what is left out, and a
  legend only when there are few super-categories.
- ``loss_figure``: training loss curves by step; the totals and ranking losses on the upper
  axis, the order losses (a much smaller scale) on their own axis below.
- ``score_bars``: top-k scores of one image, tuned prompts beside the hand-crafted baseline.
- ``ap_bars``: per-category AP, tuned vs hand-crafted.

Every name a person typed reaches plotly through ``plot_text`` (plotly renders HTML tags in labels).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from studio.common import plot_text

PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939",
)
LOSS_KEYS = ("total", "rank_global", "rank_local", "order_global", "order_local")
ORDER_KEYS = ("order_global", "order_local")
MAX_NODES = 60
MAX_LEGEND = 12


def _empty(title: str, message: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(
        title=title,
        xaxis={"visible": False},
        yaxis={"visible": False},
        annotations=[{"text": message, "showarrow": False, "xref": "paper", "yref": "paper",
                      "x": 0.5, "y": 0.5, "font": {"size": 14}}],
        height=320,
        margin={"l": 20, "r": 20, "t": 40, "b": 20},
    )
    return fig


def circle_positions(nodes: Sequence[str]) -> dict[str, tuple[float, float]]:
    """Nodes evenly on the unit circle, first at the top, clockwise."""
    n = max(1, len(nodes))
    return {
        name: (math.sin(2 * math.pi * i / n), math.cos(2 * math.pi * i / n))
        for i, name in enumerate(nodes)
    }


def select_nodes(categories: Sequence[str], edge_list: Sequence[tuple[str, str]], weight,
                 focus: str | None = None, max_nodes: int = MAX_NODES) -> list[str]:
    """The categories to draw, in category order: all when they fit; else ``focus`` and its
    heaviest neighbours, or (no focus) the categories with the most edge weight."""
    categories = list(categories)
    if focus in categories:
        nbrs = {}
        for a, b in edge_list:
            if focus in (a, b) and a != b:
                other = b if a == focus else a
                nbrs[other] = max(nbrs.get(other, 0.0), weight(a, b))
        keep = {focus} | set(sorted(nbrs, key=lambda c: (-nbrs[c], categories.index(c)))[:max_nodes - 1])
        return [c for c in categories if c in keep]
    if len(categories) <= max_nodes:
        return categories
    strength = {c: 0.0 for c in categories}
    for a, b in edge_list:
        strength[a] = strength.get(a, 0.0) + weight(a, b)
        strength[b] = strength.get(b, 0.0) + weight(a, b)
    order = sorted(range(len(categories)), key=lambda i: (-strength[categories[i]], i))[:max_nodes]
    return [categories[i] for i in sorted(order)]


def clique_pairs(cliques: Sequence[Sequence[str]]) -> set[frozenset]:
    """Every pair of categories that share a maximal clique."""
    out = set()
    for clique in cliques:
        members = list(clique)
        for i, a in enumerate(members):
            out.update(frozenset((a, b)) for b in members[i + 1:])
    return out


def node_traces(groups: Mapping[str, list[str]], pos, legend: bool, small: bool) -> list[go.Scatter]:
    """One marker trace per super-category (its colour, its legend entry when ``legend``)."""
    return [go.Scatter(
        x=[pos[c][0] for c in members], y=[pos[c][1] for c in members],
        mode="markers+text", text=[plot_text(c) for c in members], textposition="top center",
        marker={"size": 10 if small else 16, "color": PALETTE[i % len(PALETTE)],
                "line": {"width": 1, "color": "#333"}},
        name=plot_text(group), hoverinfo="text", showlegend=legend,
        hovertext=[plot_text(f"{c} ({group})") for c in members],
    ) for i, (group, members) in enumerate(sorted(groups.items()))]


def graph_figure(
    categories: Sequence[str],
    edges: Iterable[tuple[str, str]],
    weights: Mapping[tuple[str, str], float] | None = None,
    super_of: Mapping[str, str] | None = None,
    cliques: Sequence[Sequence[str]] = (),
    added: Iterable[tuple[str, str]] = (),
    title: str = "Co-occurrence graph",
    focus: str | None = None,
    max_nodes: int = MAX_NODES,
) -> go.Figure:
    """Draw the graph. ``edges`` are the edges kept (after the threshold and user edits);
    ``weights`` maps a pair (either order) to its co-occurrence count; ``added`` are user-added
    pairs (drawn dashed); ``focus`` a category whose neighbourhood alone is drawn."""
    categories = list(categories)
    if not categories:
        return _empty(title, "No categories yet.")
    weights = dict(weights or {})
    super_of = dict(super_of or {})

    def w(a: str, b: str) -> float:
        return float(weights.get((a, b), weights.get((b, a), 0)) or 0)

    all_edges = [(a, b) for a, b in edges if a != b]
    shown = select_nodes(categories, all_edges, w, focus, max_nodes)
    pos = circle_positions(shown)
    if focus in pos and len(shown) > 1:  # the focus in the middle, its neighbours around it
        ring = [c for c in shown if c != focus]
        if len(ring) < 4:  # a few neighbours on an arc above: no edge runs through the middle node
            pos = {c: (math.cos(math.pi * (0.25 + 0.25 * i)), math.sin(math.pi * (0.25 + 0.25 * i)))
                   for i, c in enumerate(ring)}
        else:
            pos = circle_positions(ring)
        pos[focus] = (0.0, 0.0)

    in_clique = clique_pairs(cliques)
    added_set = {frozenset(p) for p in added}
    edge_list = [(a, b) for a, b in all_edges if a in pos and b in pos]
    max_w = max([w(a, b) for a, b in edge_list] + [1.0])

    fig = go.Figure()
    for a, b in edge_list:
        key = frozenset((a, b))
        weight = w(a, b)
        fig.add_trace(go.Scatter(
            x=[pos[a][0], pos[b][0]], y=[pos[a][1], pos[b][1]], mode="lines",
            line={
                "width": 1 + 7 * weight / max_w,
                "color": "#d62728" if key in in_clique else "#9e9e9e",
                "dash": "dash" if key in added_set else "solid",
            },
            hoverinfo="text", text=plot_text(f"{a} - {b}: {weight:g}"), showlegend=False,
            name=f"edge:{a}|{b}",
        ))
    groups: dict[str, list[str]] = {}
    for c in shown:
        groups.setdefault(super_of.get(c) or c, []).append(c)
    legend = len(groups) <= MAX_LEGEND
    for trace in node_traces(groups, pos, legend, small=len(shown) > 30):
        fig.add_trace(trace)
    notes = []
    if len(shown) < len(categories):
        notes.append(f"Showing {len(shown)} of {len(categories)} categories"
                     + (f": {plot_text(focus)} and its strongest neighbours." if focus in pos else
                        ": the most connected ones. Pick a category to see its neighbourhood."))
    if not legend:
        notes.append(f"{len(groups)} super-categories: hover a node to see its group.")
    fig.update_layout(
        title=title, showlegend=legend, height=520,
        xaxis={"visible": False, "range": [-1.35, 1.35]},
        yaxis={"visible": False, "range": [-1.3, 1.35], "scaleanchor": "x"},
        margin={"l": 10, "r": 10, "t": 40, "b": 30 if notes else 10},
        legend={"title": {"text": "super-category"}},
        annotations=[{"text": "<br>".join(notes), "showarrow": False, "xref": "paper", "yref": "paper",
                      "x": 0, "y": -0.02, "xanchor": "left", "yanchor": "top", "align": "left",
                      "font": {"size": 12}}] if notes else [],
    )
    return fig


def loss_figure(history: Sequence[Mapping], keys: Sequence[str] = LOSS_KEYS,
                title: str = "Training losses") -> go.Figure:
    """``history``: dicts with ``step`` and ``losses`` (a mapping key -> float), in step order.
    Totals and ranking losses on the upper axis; the order losses (hundredths, where the totals
    are tens) on their own axis below, so neither is a flat line."""
    if not history:
        return _empty(title, "No loss points yet.")
    steps = [h["step"] for h in history]
    present = [k for k in keys if any(h["losses"].get(k) is not None for h in history)]
    lower = [k for k in present if k in ORDER_KEYS]
    upper = [k for k in present if k not in ORDER_KEYS]
    rows = 2 if lower and upper else 1
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        row_heights=[0.6, 0.4] if rows == 2 else None)
    for row, group in enumerate([g for g in (upper, lower) if g], start=1):
        for key in group:
            fig.add_trace(go.Scatter(x=steps, y=[h["losses"].get(key) for h in history],
                                     mode="lines+markers", name=key, marker={"size": 4}),
                          row=row, col=1)
    fig.update_yaxes(title_text="loss" if upper else "order loss", row=1, col=1)
    if rows == 2:
        fig.update_yaxes(title_text="order loss", row=2, col=1)
    fig.update_xaxes(title_text="step", row=rows, col=1)
    fig.update_xaxes(tickformat="d", rangemode="tozero" if steps[0] <= 1 else "normal")  # whole steps
    fig.update_layout(title=title, height=440 if rows == 2 else 360,
                      margin={"l": 50, "r": 10, "t": 40, "b": 40})
    return fig


def score_bars(tuned: Sequence[tuple[str, float]], baseline: Mapping[str, float] | None = None,
               threshold: float | None = None, title: str = "") -> go.Figure:
    """Horizontal bars of the top-k tuned scores (best on top) with the hand-crafted baseline's
    score of the same categories beside them, and the threshold as a vertical line."""
    if not tuned:
        return _empty(title or "Scores", "No scores.")
    names = [n for n, _ in tuned][::-1]
    shown = [plot_text(n) for n in names]
    fig = go.Figure()
    fig.add_trace(go.Bar(y=shown, x=[s for _, s in tuned][::-1], orientation="h",
                         name="tuned prompts", marker={"color": "#1f77b4"}))
    if baseline is not None:
        fig.add_trace(go.Bar(y=shown, x=[baseline.get(n, 0.0) for n in names], orientation="h",
                             name="hand-crafted", marker={"color": "#bbbbbb"}))
    if threshold is not None:
        fig.add_vline(x=threshold, line={"dash": "dot", "color": "#d62728"})
    fig.update_layout(title=plot_text(title), barmode="group", height=80 + 40 * len(names),
                      margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 30})
    return fig


def ap_bars(tuned: Mapping[str, float | None], baseline: Mapping[str, float | None] | None = None,
            title: str = "Per-category AP") -> go.Figure:
    """Vertical bars of AP per category (None = no positives, drawn as a gap)."""
    if not tuned:
        return _empty(title, "No evaluation yet.")
    names = list(tuned)
    shown = [plot_text(n) for n in names]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=shown, y=[tuned[n] for n in names], name="tuned prompts",
                         marker={"color": "#1f77b4"}))
    if baseline is not None:
        fig.add_trace(go.Bar(x=shown, y=[baseline.get(n) for n in names], name="hand-crafted",
                             marker={"color": "#bbbbbb"}))
    fig.update_layout(title=title, barmode="group", yaxis_title="AP", height=380,
                      margin={"l": 40, "r": 10, "t": 40, "b": 80})
    return fig
