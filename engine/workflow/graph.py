"""The co-occurrence graph (METHOD.md section 2) and the prompt structure it yields: weights from
the enabled sentences' labels, the user's added/removed edges re-applied, maximal cliques."""
from __future__ import annotations

from dataclasses import dataclass

from engine.workflow.base import SETTINGS, WorkflowError, owned

MAX_TAU = 1_000_000_000  # a co-occurrence count no project reaches; beyond it a typo


@dataclass
class GraphView:
    """The project's co-occurrence graph after user edits: ``weights`` {(a, b): n}, ``graph``
    (networkx), ``cliques`` (maximal, size >= 2), ``tau``."""

    weights: dict
    graph: object
    cliques: list[list[str]]
    tau: int


@owned
def recompute_graph(store, project_id: int, tau: int | None = None) -> GraphView:
    """Weights from the enabled sentences' labels, edges where weight >= tau, the user's added and
    removed edges re-applied, maximal cliques stored (METHOD.md section 2)."""
    from engine.graph import build_graph, cooccurrence, maximal_cliques

    tau = SETTINGS.tau if tau is None else int(tau)
    if not 0 <= tau <= MAX_TAU:
        raise WorkflowError(f"The threshold tau must lie between 0 and {MAX_TAU:,} sentences, not {tau}.")
    names = [c.name for c in store.list_categories(project_id)]
    labels = [s.labels for s in store.list_sentences(project_id, enabled_only=True)]
    weights = cooccurrence(labels, names)
    added, removed = store.edge_edits(project_id)
    graph = build_graph(weights, names, tau, added=added, removed=removed)
    cliques = maximal_cliques(graph)
    store.set_graph(project_id, weights=weights, tau=tau, cliques=cliques)
    return GraphView(weights, graph, cliques, tau)


@owned
def graph_data(store, project_id: int, tau=None) -> dict:
    """Recompute the graph at ``tau`` and return plain data for drawing it."""
    g = recompute_graph(store, project_id, tau)
    cats = store.list_categories(project_id)
    added, removed = store.edge_edits(project_id)
    return {"categories": [c.name for c in cats], "edges": [tuple(e) for e in g.graph.edges()],
            "weights": dict(g.weights), "super_of": {c.name: c.super_category for c in cats if c.super_category},
            "cliques": g.cliques, "tau": g.tau, "added": [tuple(p) for p in added],
            "removed": [tuple(p) for p in removed]}


@owned
def edit_edge(store, project_id: int, a: str, b: str, action: str) -> None:
    """``action``: "add" or "remove" an edge (kept apart from computed edges), or "clear" every
    edit."""
    if action == "clear":
        store.clear_edge_edits(project_id)
        return
    names = {c.name for c in store.list_categories(project_id)}
    for n in (a, b):
        if n not in names:
            raise WorkflowError(f"The project has no category {n!r}.")
    store.set_edge_edit(project_id, a, b, action)


@owned
def project_structure(store, project_id: int):
    """The :class:`engine.prompts.PromptStructure` of a project: categories, super-categories and
    the stored cliques."""
    from engine.prompts import PromptStructure

    cats = store.list_categories(project_id)
    super_of = {c.name: c.super_category for c in cats if c.super_category}
    return PromptStructure(categories=[c.name for c in cats], super_of=super_of,
                           cliques=[list(q) for q in store.get_cliques(project_id)])
