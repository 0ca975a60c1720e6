"""Knowledge (METHOD.md section 1): ask the LLM (resumable through the store's answer cache),
regenerate one category, write the results into the project keeping the user's edits, and the
per-category edits (attributes kept, synonyms, super-category, hand-crafted prompt)."""
from __future__ import annotations

from typing import Callable

from engine.workflow.base import SETTINGS, get_category, owned
from engine.workflow.graph import recompute_graph


@owned
def generate_knowledge(store, project_id: int, llm_spec=None, settings=None,
                       on_progress: Callable | None = None, should_stop: Callable | None = None,
                       tau: int | None = None):
    """Ask the LLM every question (engine.knowledge), resumable through the store's answer cache,
    then store attributes, sentences, super-categories and synonyms, and recompute the graph.

    Returns the ``Knowledge``; when cancelled, what was answered stays cached and the stored
    knowledge is left as it was (run again to resume)."""
    return _ask_and_store(store, project_id, llm_spec, settings, on_progress, should_stop, tau=tau)


@owned
def regenerate_category(store, project_id: int, name: str, llm_spec=None, settings=None,
                        on_progress: Callable | None = None, should_stop: Callable | None = None):
    """Ask the questions about one category again with a fresh seed (knowledge.Regenerate);
    questions depending on the new answers follow, everything else comes from the answer cache.
    The user's edited attributes and sentences are kept (as in :func:`generate_knowledge`)."""
    from engine.knowledge import Regenerate

    get_category(store, project_id, name)
    return _ask_and_store(store, project_id, llm_spec, settings, on_progress, should_stop,
                          regenerate=Regenerate(categories=[name]))


def _ask_and_store(store, project_id: int, llm_spec, settings, on_progress, should_stop, tau=None,
                   regenerate=None):
    """The one knowledge sequence: the project's categories (with the user's super-categories and
    synonyms) -> engine.knowledge.build_knowledge through the store's answer cache -> unless
    cancelled, the results stored and the graph recomputed at ``tau`` (default SETTINGS.tau)."""
    from engine.knowledge import KnowledgeSettings, build_knowledge
    from engine.llm import LLMSpec, open_llm
    from engine.presets import knowledge_to_dict

    cats = store.list_categories(project_id)
    super_of = {c.name: c.super_category for c in cats if c.super_category}
    synonyms = {c.name: list(c.synonyms or []) for c in cats if c.synonyms}
    llm = open_llm(llm_spec or LLMSpec())
    knowledge = build_knowledge([c.name for c in cats], llm, settings or KnowledgeSettings(),
                                store.answer_cache(project_id), on_progress=on_progress,
                                should_stop=should_stop, super_of=super_of or None,
                                synonyms=synonyms or None, regenerate=regenerate)
    if knowledge.cancelled:
        return knowledge
    store_knowledge(store, project_id, knowledge_to_dict(knowledge))
    recompute_graph(store, project_id, tau if tau is not None else SETTINGS.tau)
    return knowledge


@owned
def store_knowledge(store, project_id: int, k: dict) -> None:
    """Write a knowledge dict (presets.knowledge_to_dict form) into the project."""
    cats = {c.name: c for c in store.list_categories(project_id)}
    for name, c in cats.items():
        sup = c.super_category or (k.get("super_of") or {}).get(name)
        syn = list(c.synonyms or [])
        suggested = set((k.get("suggested_synonyms") or {}).get(name, []))
        for s_ in (k.get("synonyms") or {}).get(name, []):
            if s_ in suggested:
                continue  # the LLM's suggestion: shown by category_details, not used for labels
            if s_.casefold() not in {x.casefold() for x in syn} and s_.casefold() != name.casefold():
                syn.append(s_)
        store.update_category(c.id, super_category=sup, synonyms=syn)
    attrs = k.get("attributes") or {}
    kept = k.get("filtered_attributes") or {}
    edited = {(a.category, a.text): a.kept for a in store.list_attributes(project_id) if a.edited}
    rows = []
    for name in cats:
        keep = set(kept.get(name, attrs.get(name, [])))
        for a in attrs.get(name, []):
            rows.append(dict(category=name, text=a, kept=edited.get((name, a), a in keep),
                             edited=(name, a) in edited))
    for a in k.get("common_attributes") or []:
        rows.append(dict(category=None, text=a, kept=edited.get((None, a), True), edited=(None, a) in edited))
    store.replace_attributes(project_id, rows)
    suggestions = {n: list(v) for n, v in (k.get("suggested_synonyms") or {}).items() if n in cats and v}
    store.set_project_settings(project_id, {"suggested_synonyms": suggestions})
    # the user's edited or hand-added sentences survive a regeneration
    mine = store.list_sentences(project_id, by_user=True)
    have = {s_.text.casefold() for s_ in mine}
    rows = [dict(text=s_.text, labels=list(s_.labels), source=s_.source, category=s_.category,
                 enabled=s_.enabled, edited=s_.edited, cut=s_.cut) for s_ in mine]
    rows += [dict(text=s_["text"], labels=list(s_["labels"]), source=s_.get("source", ""),
                  category=s_.get("category"), evidence=s_.get("evidence") or {}, cut=s_.get("cut") or "")
             for s_ in k.get("sentences") or [] if s_["text"].casefold() not in have]
    # the quality gate's rejections: stored disabled with their reason, restorable one by one
    rows += [dict(text=r["text"], labels=list(r.get("categories") or []), source=r.get("source", ""),
                  category=(r.get("categories") or [None])[0], enabled=False, rejected=r["reason"])
             for r in k.get("rejected") or [] if r["text"].casefold() not in have]
    store.replace_sentences(project_id, rows)


@owned
def category_details(store, project_id: int, name: str) -> dict:
    """Attributes (text, kept), synonyms, super-category and hand-crafted prompt of one category."""
    c = get_category(store, project_id, name)
    attrs = [{"text": a.text, "kept": bool(a.kept)} for a in store.list_attributes(project_id, category=name)]
    suggested = (store.get_project(project_id).settings or {}).get("suggested_synonyms", {}).get(name, [])
    return {"attributes": attrs, "synonyms": list(c.synonyms or []), "super": c.super_category,
            "prompt": c.prompt, "suggested_synonyms": [x for x in suggested if x not in (c.synonyms or [])]}


@owned
def update_category(store, project_id: int, name: str, attributes=None, synonyms=None,
                    super_=None, prompt=None) -> None:
    """Write the person's edits of one category; attributes replace that category's list (marked
    as edited by the user)."""
    c = get_category(store, project_id, name)
    store.update_category(c.id, super_category=super_, synonyms=list(synonyms or []), prompt=prompt)
    if attributes is not None:
        old = {a.text: a for a in store.list_attributes(project_id, category=name)}
        rows = [dict(category=name, text=a["text"], kept=bool(a["kept"]),
                     edited=(a["text"] not in old or bool(old[a["text"]].kept) != bool(a["kept"])
                             or bool(old[a["text"]].edited)))
                for a in attributes]
        store.replace_attributes(project_id, rows, category=name)
