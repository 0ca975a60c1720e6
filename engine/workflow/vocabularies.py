"""Vocabularies beyond one project: a project's categories with its sentences as an
:class:`engine.vocabulary.Vocabulary`, sentences borrowed from other projects or presets (train on a
bigger vocabulary than the one scored, METHOD.md section 7), and reproducing the paper's table.

A borrow source is a preset key (``voc2007``, ``coco``: the shipped knowledge) or a project (id or
name). Borrowed categories that match the project's by name or synonym train the project's own
prompts; the rest train with their own prompts and are dropped from the saved classifier.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from engine.workflow.base import SETTINGS, WorkflowError, current_visitor, owned
from engine.workflow.projects import find_project
from engine.workflow.training import handcrafted_prompts, training_corpus


@owned
def project_vocabulary(store, project_id: int):
    """The project's categories, super-categories, hand-crafted prompts, synonyms and enabled sentences."""
    from engine.vocabulary import Vocabulary

    cats = store.list_categories(project_id)
    names = [c.name for c in cats]
    return Vocabulary(names, {c.name: c.super_category for c in cats if c.super_category},
                      dict(zip(names, handcrafted_prompts(store, project_id))),
                      {c.name: list(c.synonyms or []) for c in cats}, training_corpus(store, project_id),
                      store.get_project(project_id).name)


def borrow_source(store, ref: str):
    """The vocabulary named by ``ref``: a preset key with shipped knowledge, else a project (inside
    an owned action, only one of the same visitor's)."""
    from engine.presets import PRESET_KEYS
    from engine.reproduce import ReproduceError, preset_vocabulary

    key = str(ref).strip().lower()
    if key in PRESET_KEYS:
        try:
            return preset_vocabulary(key)
        except ReproduceError as err:
            raise WorkflowError(str(err)) from err
    return project_vocabulary(store, find_project(store, ref, owner=current_visitor()))


@owned
def training_vocabulary(store, project_id: int, borrow_from: Sequence[str] = ()):
    """(the project's vocabulary, the training vocabulary: it grown by every ``borrow_from`` source)."""
    from engine.vocabulary import borrow

    own = project_vocabulary(store, project_id)
    sources = [borrow_source(store, ref) for ref in borrow_from]
    return own, (borrow(own, *sources) if sources else own)


def reproduce_paper(store, dataset: str, data: str | Path, knowledge_project: str | None = None,
                    backbone_spec=None, train_config=None, device=None, borrow_coco: bool = True,
                    loader=None, on_step: Callable | None = None, log: Callable[[str], None] = lambda s: None):
    """engine.reproduce with the shipped preset knowledge, or ``knowledge_project``'s sentences.

    ``backbone_spec`` defaults to CLIP RN50 with OpenAI weights (downloaded on a connected machine).
    Returns :class:`engine.reproduce.ReproduceResult`; bad input raises WorkflowError.
    """
    from engine.clip_backbone import BackboneSpec, load_backbone
    from engine.reproduce import ReproduceError, prepare, reproduce

    knowledge = None
    if knowledge_project:
        knowledge = project_vocabulary(store, find_project(store, knowledge_project))
    try:
        prepared = prepare(dataset, data, knowledge, borrow_coco)  # bad input fails before any download
        backbone = load_backbone(backbone_spec or BackboneSpec(), device=device)
        return reproduce(dataset, data, backbone, knowledge, train_config, borrow_coco, SETTINGS.tau, loader,
                         on_step, log, prepared)
    except ReproduceError as err:
        raise WorkflowError(str(err)) from err
