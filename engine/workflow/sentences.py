"""The project's sentences: filtered listing, sources, counts per category (all answered by the
store in SQL), and the person's edits."""
from __future__ import annotations

from engine.workflow.base import WorkflowError, owned, require_row


@owned
def list_sentences(store, project_id: int, category=None, source=None, search: str = "",
                   include_disabled: bool = True) -> list[dict]:
    """Sentences filtered by a category (in its labels), a source question and a search text
    (case-insensitive substring)."""
    rows = store.list_sentences(project_id, enabled_only=not include_disabled, category=category or None,
                                source=source or None, search=search or None)
    return [{"id": s.id, "text": s.text, "labels": list(s.labels), "source": s.source,
             "category": s.category, "enabled": bool(s.enabled), "rejected": s.rejected,
             "evidence": dict(s.evidence or {}), "cut": s.cut or ""} for s in rows]


@owned
def rejection_counts(store, project_id: int) -> dict[str, int]:
    """{reason: n} of the sentences the quality gate rejected (engine.sentence_gate.REASONS order)."""
    from engine.sentence_gate import REASONS

    got = store.rejection_counts(project_id)
    return {r: got[r] for r in REASONS if got.get(r)} | {r: n for r, n in got.items() if r not in REASONS}


@owned
def restore_sentences(store, project_id: int, sentence_ids) -> int:
    """Put rejected sentences back into the training set; returns how many."""
    ids = [int(i) for i in sentence_ids]
    mine = {s.id for s in store.list_sentences(project_id)}
    if any(i not in mine for i in ids):
        raise WorkflowError("Those sentences are not in this project.")
    return store.restore_sentences(ids)


@owned
def sentence_sources(store, project_id: int) -> list[str]:
    """The questions (sources) the project's sentences came from, sorted."""
    return store.sentence_sources(project_id)


@owned
def sentence_counts(store, project_id: int) -> dict[str, int]:
    """Enabled sentences labelled with each category (0 for an uncovered one)."""
    return store.sentence_counts(project_id, enabled_only=True)


@owned
def update_sentence(store, project_id: int, sentence_id: int, text: str, labels, enabled: bool) -> None:
    """Write the person's edit of one sentence (text, labels among the project's categories,
    enabled)."""
    require_row(store.get_sentence(sentence_id).project_id, project_id)
    text = " ".join((text or "").split())
    if not text:
        raise WorkflowError("A sentence cannot be empty; delete it instead.")
    names = {c.name for c in store.list_categories(project_id)}
    unknown = [l for l in labels if l not in names]
    if unknown:
        raise WorkflowError(f"Unknown labels: {', '.join(unknown)}; use the project's category names.")
    store.update_sentence(sentence_id, text=text, labels=list(labels), enabled=bool(enabled))


@owned
def delete_sentence(store, project_id: int, sentence_id: int) -> None:
    require_row(store.get_sentence(sentence_id).project_id, project_id)
    store.delete_sentence(sentence_id)
