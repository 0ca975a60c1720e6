"""Scoring images (METHOD.md section 5): the project's classifiers (tuned and hand-crafted
baseline), the backbone they need, and one image-encoder pass feeding both."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from engine.datasets import LoaderSettings
from engine.workflow.base import WorkflowError, owned
from engine.workflow.training import handcrafted_prompts, spec_from_dict


@owned
def latest_classifier(store, project_id: int):
    """``(classifier_row, Classifier)`` of the project's newest classifier, or ``(None, None)``."""
    from engine.classifier import Classifier

    rows = store.list_classifiers(project_id)
    if not rows:
        return None, None
    row = rows[-1]
    return row, Classifier.load(row.path)


@owned
def project_backbone_spec(store, project_id: int, override=None):
    """The backbone to use: ``override`` when given, else the one the latest classifier was
    trained with, else the default :class:`BackboneSpec`."""
    from engine.clip_backbone import BackboneSpec

    if override is not None:
        return override
    row, clf = latest_classifier(store, project_id)
    if clf is not None and (clf.meta or {}).get("backbone"):
        return spec_from_dict(clf.meta["backbone"])
    return BackboneSpec()


@owned
def project_classifiers(store, project_id: int, backbone, include_tuned: bool = True):
    """``{"tuned": Classifier?, "handcrafted": Classifier}`` for scoring one image pass twice."""
    from engine.classifier import Classifier

    cats = [c.name for c in store.list_categories(project_id)]
    out = {}
    if include_tuned:
        _, clf = latest_classifier(store, project_id)
        if clf is not None:
            if list(clf.categories) != cats:
                raise WorkflowError("The project's categories changed since its classifier was "
                                    "trained; train again.")
            if clf.model_name != backbone.name:
                raise WorkflowError(f"The classifier was trained on {clf.model_name}, but the "
                                    f"backbone loaded is {backbone.name}; use the same CLIP model.")
            out["tuned"] = clf
    # the baseline scores as the tuned classifier does (fusion, image preparation): one image pass
    settings = out["tuned"].inference_settings() if "tuned" in out else {}
    out["handcrafted"] = Classifier.from_prompts(backbone, cats, handcrafted_prompts(store, project_id), **settings)
    return out


def stream_scores(backbone, classifiers: dict, files: Sequence[str | Path],
                  loader: LoaderSettings | None = None, should_stop: Callable | None = None):
    """Yield ``(indices, {name: scores [b, N] float32 CPU}, failures)`` per batch, in file order:
    images decode in DataLoader workers, prepared as the classifiers ask (engine.classifier
    ``stream_image_scores``); one image-encoder pass per batch feeds every classifier
    (engine.batch_scoring.score_pixels, which the Ray path's model actors call too)."""
    from engine.classifier import stream_image_scores

    yield from stream_image_scores(backbone, classifiers, files, loader, should_stop)
