"""Image-Free Studio's engine: a multi-label image classifier from category names alone.

The curated API (what a notebook imports); names load on first use, so ``import engine`` costs
nothing until one is touched (torch and open_clip are heavy)::

    from engine import BackboneSpec, load_backbone, Classifier, score_images, top_k
    backbone = load_backbone(BackboneSpec("RN50", "openai"))
    clf = Classifier.load("pets.safetensors")
    print(top_k(score_images(backbone, clf, [image])[0], clf.categories, k=3))

Project-level actions (projects in a database, knowledge, training, predict, evaluate) are in
:mod:`engine.workflow`; every error meant for the user derives from :class:`EngineError`.
"""
from __future__ import annotations

from engine.lazy_api import lazy_api

_API = {
    # errors
    "EngineError": "engine.errors",
    # CLIP
    "BackboneSpec": "engine.clip_backbone", "load_backbone": "engine.clip_backbone",
    "MissingWeightsError": "engine.clip_backbone",
    # the classifier artefact
    "Classifier": "engine.classifier", "score_images": "engine.classifier", "top_k": "engine.classifier",
    # knowledge from an LLM
    "LLMSpec": "engine.llm", "SamplingSettings": "engine.llm", "open_llm": "engine.llm",
    "KnowledgeSettings": "engine.knowledge", "Knowledge": "engine.knowledge", "build_knowledge": "engine.knowledge",
    # prompts and training
    "PromptLayout": "engine.prompts", "PromptStructure": "engine.prompts",
    "HierarchicalPrompts": "engine.prompts",
    "TrainConfig": "engine.train", "Corpus": "engine.train",  # train(): engine.train.train
    # data and metrics
    "read_labelled_set": "engine.datasets", "list_images": "engine.datasets",
    "evaluate_scores": "engine.metrics", "mean_average_precision": "engine.metrics",
    # presets and projects
    "list_presets": "engine.presets", "load_preset": "engine.presets",
    "Store": "engine.storage",
}

__all__ = sorted(_API)


__getattr__, __dir__ = lazy_api('engine', _API, globals())
