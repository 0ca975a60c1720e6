"""Projects: the vocabulary, create / find / list / rename / delete, the owner of a project in a
shared Space, and one project's summary."""
from __future__ import annotations

from typing import Sequence

from engine.storage.names import BOM, MAX_PROJECT_NAME_LENGTH, NameRuleError, check_unique, clean_name
from engine.storage import NotFoundError
from engine.workflow.base import SETTINGS, VocabularyError, WorkflowError, WorkflowSettings, owned
from engine.workflow.graph import recompute_graph
from engine.workflow.knowledge import store_knowledge


def parse_vocabulary(text: str, settings: WorkflowSettings | None = None) -> list[str]:
    """Category names from text: one a line, or comma-separated (both may mix).

    Every name goes through the one name rule (engine.storage.names: a leading BOM dropped, NFC,
    whitespace collapsed; control and invisible formatting characters refused; at most
    ``max_name_length`` characters). Raises :class:`VocabularyError` for: no names; a blank name
    between commas; a name the rule refuses; duplicates (case and Unicode form do not count, the
    message names them); more than ``max_categories`` names. Blank lines are ignored.
    """
    s = settings or SETTINGS
    names: list[str] = []
    for ln_no, line in enumerate((text or "").lstrip(BOM).splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(",")
        for k, part in enumerate(parts):
            if not part.strip():
                if k == len(parts) - 1 and len(parts) > 1:  # trailing comma: harmless
                    continue
                raise VocabularyError(f"Line {ln_no} has a blank name (two commas in a row or a "
                                      f"leading comma); remove it.")
            try:
                names.append(clean_name(part, "category name", s.max_name_length))
            except NameRuleError as exc:
                raise VocabularyError(str(exc)) from None
    if not names:
        raise VocabularyError("The vocabulary is empty: type category names, one a line or "
                              "separated by commas.")
    try:
        check_unique(names, "names")
    except NameRuleError as exc:
        raise VocabularyError(str(exc)) from None
    if len(names) > s.max_categories:
        raise VocabularyError(f"{len(names)} categories is over the limit of {s.max_categories}.")
    return names


def project_name(name) -> str:
    """A project name through the name rule (VocabularyError when refused)."""
    try:
        return clean_name(name or "", "project name", MAX_PROJECT_NAME_LENGTH)
    except NameRuleError as exc:
        raise VocabularyError(str(exc) if (name or "").strip() else "The project needs a name.") from None


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
    name = project_name(name)
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


def find_project(store, ref: str | int, owner: str | None = None) -> int:
    """A project id from an id or a name (exact, then case-insensitive); with ``owner``, only
    among that visitor's projects (the message then names no one else's)."""
    projects = [p for p in store.list_projects() if owner is None or (p.settings or {}).get("owner") == owner]
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


@owned
def set_owner(store, project_id: int, owner: str) -> None:
    """Record the visitor that made (or imported) a project, in its settings."""
    store.set_project_settings(project_id, {"owner": owner})


@owned
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


@owned
def rename_project(store, project_id: int, name: str) -> None:
    if not (name or "").strip():
        raise WorkflowError("The new name is empty.")
    try:
        name = clean_name(name, "project name", MAX_PROJECT_NAME_LENGTH)
    except NameRuleError as exc:
        raise WorkflowError(str(exc)) from None
    store.rename_project(project_id, name)


@owned
def delete_project(store, project_id: int) -> None:
    store.delete_project(project_id)
