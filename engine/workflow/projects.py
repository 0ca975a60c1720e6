"""Projects: the vocabulary, create / find / list / rename / delete, the owner of a project in a
shared Space, and one project's summary."""
from __future__ import annotations

import re
from typing import Sequence

from engine.storage import NotFoundError
from engine.workflow.base import SETTINGS, VocabularyError, WorkflowError, WorkflowSettings
from engine.workflow.graph import recompute_graph
from engine.workflow.knowledge import store_knowledge


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def parse_vocabulary(text: str, settings: WorkflowSettings | None = None) -> list[str]:
    """Category names from text: one a line, or comma-separated (both may mix).

    Raises :class:`VocabularyError` for: no names; a blank name between commas; a name over
    ``max_name_length`` characters or with control characters; duplicates (case-insensitive, the
    message names them); more than ``max_categories`` names. Blank lines are ignored and inner
    whitespace is collapsed.
    """
    s = settings or SETTINGS
    names: list[str] = []
    for ln_no, line in enumerate((text or "").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(",")
        for k, part in enumerate(parts):
            name = " ".join(part.split())
            if not name:
                if k == len(parts) - 1 and len(parts) > 1:  # trailing comma: harmless
                    continue
                raise VocabularyError(f"Line {ln_no} has a blank name (two commas in a row or a "
                                      f"leading comma); remove it.")
            if _CONTROL.search(name):
                raise VocabularyError(f"The name {name!r} contains control characters.")
            if len(name) > s.max_name_length:
                raise VocabularyError(f"The name {name[:30]!r}... is {len(name)} characters long; "
                                      f"the limit is {s.max_name_length}.")
            names.append(name)
    if not names:
        raise VocabularyError("The vocabulary is empty: type category names, one a line or "
                              "separated by commas.")
    seen: dict[str, str] = {}
    dups: list[str] = []
    for n in names:
        key = n.casefold()
        if key in seen and n not in dups:
            dups.append(n)
        seen.setdefault(key, n)
    if dups:
        raise VocabularyError("Duplicate names (case does not count): " + ", ".join(dups) + ".")
    if len(names) > s.max_categories:
        raise VocabularyError(f"{len(names)} categories is over the limit of {s.max_categories}.")
    return names


def create_project(store, name: str, categories: Sequence[str] | str | None = None,
                   preset: str | None = None, settings: WorkflowSettings | None = None) -> int:
    """Create a project from a vocabulary (list of names or raw text) or a preset key
    (``voc2007``, ``coco``: names, super-categories, hand-crafted prompts, synonyms, and the
    preset's pre-generated knowledge when it exists). Returns the project id."""
    s = settings or SETTINGS
    if preset:
        from engine.presets import load_preset, load_preset_knowledge

        p = load_preset(preset)
        rows = [dict(name=c, super_category=p.super_of.get(c), prompt=p.prompts.get(c),
                     synonyms=list(p.synonyms.get(c, []))) for c in p.categories]
        knowledge = load_preset_knowledge(p.key)
        meta = {"preset": p.key}
    else:
        if categories is None:
            raise VocabularyError("Give a vocabulary or choose a preset.")
        names = parse_vocabulary(categories if isinstance(categories, str) else "\n".join(categories), s)
        rows = [dict(name=c, super_category=None, prompt=None, synonyms=[]) for c in names]
        knowledge = None
        meta = {}
    name = (name or "").strip()
    if not name:
        raise VocabularyError("The project needs a name.")
    pid = store.create_project(name, settings=meta)
    try:
        store.set_categories(pid, rows)
    except BaseException:
        store.delete_project(pid)
        raise
    if knowledge:
        store_knowledge(store, pid, knowledge)
        recompute_graph(store, pid, s.tau)
    return pid


def find_project(store, ref: str | int) -> int:
    """A project id from an id or a name (exact, then case-insensitive)."""
    projects = store.list_projects()
    ref_s = str(ref).strip()
    for p in projects:
        if str(p.id) == ref_s or p.name == ref_s:
            return p.id
    for p in projects:
        if p.name.casefold() == ref_s.casefold():
            return p.id
    known = ", ".join(f"{p.id}:{p.name}" for p in projects) or "none"
    raise WorkflowError(f"No project {ref_s!r} (projects: {known}).")


def list_projects(store, owner: str | None = None) -> list[dict]:
    """``[{"id", "name", "n_categories"}]`` of every project (only those whose settings name
    ``owner`` when given: a shared Space shows each visitor their own projects), newest last."""
    counts = store.category_counts()
    return [{"id": p.id, "name": p.name, "n_categories": counts.get(p.id, 0)}
            for p in store.list_projects()
            if owner is None or (p.settings or {}).get("owner") == owner]


def set_owner(store, project_id: int, owner: str) -> None:
    """Record the visitor that made (or imported) a project, in its settings."""
    store.set_project_settings(project_id, {"owner": owner})


def project_info(store, project_id: int) -> dict:
    """Name, category names and counts of one project (raises WorkflowError when it is gone)."""
    try:
        p = store.get_project(project_id)
    except NotFoundError as exc:
        raise WorkflowError(f"Project {project_id} does not exist (deleted?).") from exc
    cats = [c.name for c in store.list_categories(project_id)]
    return {"id": p.id, "name": p.name, "categories": cats, "n_categories": len(cats),
            "n_sentences": store.count_sentences(project_id, enabled_only=True),
            "n_runs": len(store.list_runs(project_id)),
            "has_classifier": bool(store.list_classifiers(project_id))}


def rename_project(store, project_id: int, name: str) -> None:
    name = " ".join((name or "").split())
    if not name:
        raise WorkflowError("The new name is empty.")
    store.rename_project(project_id, name)


def delete_project(store, project_id: int) -> None:
    store.delete_project(project_id)
