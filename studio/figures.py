"""Plotly figure builders for the studio. Pure functions: plain data in, a ``go.Figure`` out.

- ``graph_figure``: the co-occurrence graph (METHOD.md section 2): nodes coloured by
  super-category, edge width by weight, edges inside a maximal clique highlighted, user-added
  edges dashed. Nodes sit on a circle in category order so the drawing is stable across redraws.
- ``loss_figure``: training loss curves (total, ranking and order; global and local) by step.
- ``score_bars``: top-k scores of one image, tuned prompts beside the hand-crafted baseline.
- ``ap_bars``: per-category AP, tuned vs hand-crafted.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import plotly.graph_objects as go

PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939",
)
LOSS_KEYS = ("total", "rank_global", "rank_local", "order_global", "order_local")


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


def graph_figure(
    categories: Sequence[str],
    edges: Iterable[tuple[str, str]],
    weights: Mapping[tuple[str, str], float] | None = None,
    super_of: Mapping[str, str] | None = None,
    cliques: Sequence[Sequence[str]] = (),
    added: Iterable[tuple[str, str]] = (),
    title: str = "Co-occurrence graph",
) -> go.Figure:
    """Draw the graph. ``edges`` are the edges kept (after the threshold and user edits);
    ``weights`` maps a pair (either order) to its co-occurrence count; ``added`` are user-added
    pairs (drawn dashed)."""
    categories = list(categories)
    if not categories:
        return _empty(title, "No categories yet.")
    weights = dict(weights or {})
    super_of = dict(super_of or {})
    pos = circle_positions(categories)

    def w(a: str, b: str) -> float:
        return float(weights.get((a, b), weights.get((b, a), 0)) or 0)

    in_clique = set()
    for clique in cliques:
        members = list(clique)
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                in_clique.add(frozenset((a, b)))
    added_set = {frozenset(p) for p in added}
    edge_list = [(a, b) for a, b in edges if a in pos and b in pos and a != b]
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
            hoverinfo="text", text=f"{a} - {b}: {weight:g}", showlegend=False,
            name=f"edge:{a}|{b}",
        ))
    groups: dict[str, list[str]] = {}
    for c in categories:
        groups.setdefault(super_of.get(c) or c, []).append(c)
    for i, (group, members) in enumerate(sorted(groups.items())):
        fig.add_trace(go.Scatter(
            x=[pos[c][0] for c in members], y=[pos[c][1] for c in members],
            mode="markers+text", text=members, textposition="top center",
            marker={"size": 16, "color": PALETTE[i % len(PALETTE)], "line": {"width": 1, "color": "#333"}},
            name=group, hoverinfo="text",
        ))
    fig.update_layout(
        title=title, showlegend=True, height=480,
        xaxis={"visible": False, "range": [-1.35, 1.35]},
        yaxis={"visible": False, "range": [-1.3, 1.35], "scaleanchor": "x"},
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"title": {"text": "super-category"}},
    )
    return fig


def loss_figure(history: Sequence[Mapping], keys: Sequence[str] = LOSS_KEYS,
                title: str = "Training losses") -> go.Figure:
    """``history``: dicts with ``step`` and ``losses`` (a mapping key -> float), in step order."""
    if not history:
        return _empty(title, "No loss points yet.")
    fig = go.Figure()
    steps = [h["step"] for h in history]
    for key in keys:
        ys = [h["losses"].get(key) for h in history]
        if all(v is None for v in ys):
            continue
        fig.add_trace(go.Scatter(x=steps, y=ys, mode="lines+markers", name=key,
                                 marker={"size": 4}))
    fig.update_layout(title=title, xaxis_title="step", yaxis_title="loss", height=360,
                      margin={"l": 40, "r": 10, "t": 40, "b": 40})
    return fig


def score_bars(tuned: Sequence[tuple[str, float]], baseline: Mapping[str, float] | None = None,
               threshold: float | None = None, title: str = "") -> go.Figure:
    """Horizontal bars of the top-k tuned scores (best on top) with the hand-crafted baseline's
    score of the same categories beside them, and the threshold as a vertical line."""
    if not tuned:
        return _empty(title or "Scores", "No scores.")
    names = [n for n, _ in tuned][::-1]
    fig = go.Figure()
    fig.add_trace(go.Bar(y=names, x=[s for _, s in tuned][::-1], orientation="h",
                         name="tuned prompts", marker={"color": "#1f77b4"}))
    if baseline is not None:
        fig.add_trace(go.Bar(y=names, x=[baseline.get(n, 0.0) for n in names], orientation="h",
                             name="hand-crafted", marker={"color": "#bbbbbb"}))
    if threshold is not None:
        fig.add_vline(x=threshold, line={"dash": "dot", "color": "#d62728"})
    fig.update_layout(title=title, barmode="group", height=80 + 40 * len(names),
                      margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 30})
    return fig


def ap_bars(tuned: Mapping[str, float | None], baseline: Mapping[str, float | None] | None = None,
            title: str = "Per-category AP") -> go.Figure:
    """Vertical bars of AP per category (None = no positives, drawn as a gap)."""
    if not tuned:
        return _empty(title, "No evaluation yet.")
    names = list(tuned)
    fig = go.Figure()
    fig.add_trace(go.Bar(x=names, y=[tuned[n] for n in names], name="tuned prompts",
                         marker={"color": "#1f77b4"}))
    if baseline is not None:
        fig.add_trace(go.Bar(x=names, y=[baseline.get(n) for n in names], name="hand-crafted",
                             marker={"color": "#bbbbbb"}))
    fig.update_layout(title=title, barmode="group", yaxis_title="AP", height=380,
                      margin={"l": 40, "r": 10, "t": 40, "b": 80})
    return fig
