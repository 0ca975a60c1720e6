"""Evaluation (METHOD.md section 6): the tuned classifier and the hand-crafted baseline on the same
labelled images; mAP, F1 at top-k, per-category AP; a plain-text table."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from engine.datasets import LabelledSet, LoaderSettings, read_labelled_set, require_images
from engine.workflow.base import WorkflowError, owned
from engine.workflow.confidence import fit_calibrations
from engine.workflow.scoring import latest_classifier, project_backbone_spec, project_classifiers, stream_scores


def score_labelled_set(backbone, classifiers: dict, data: LabelledSet, loader: LoaderSettings | None = None,
                       on_progress: Callable | None = None, should_stop: Callable | None = None):
    """Score every image of ``data``; returns ``(scores {name: ndarray [M', N]}, kept indices,
    failures [(path, reason)])`` - unreadable images are left out of every classifier alike."""
    import numpy as np

    parts: dict[str, list] = {k: [] for k in classifiers}
    kept: list[int] = []
    failures: list[tuple[str, str]] = []
    n = len(data.images)
    for indices, scores, fails in stream_scores(backbone, classifiers, data.images, loader, should_stop):
        kept.extend(indices)
        for k, v in scores.items():
            parts[k].append(v.numpy())
        failures.extend((str(data.images[i]), err) for i, err in fails)
        if on_progress:
            on_progress(len(kept) + len(failures), n)
    N = len(data.categories)
    return ({k: (np.concatenate(v) if v else np.zeros((0, N), np.float32)) for k, v in parts.items()},
            kept, failures)


@owned
def evaluate_project(store, project_id: int, dataset: str | Path | LabelledSet, image_dir=None,
                     backbone_spec=None, k: int = 3, loader: LoaderSettings | None = None,
                     on_progress: Callable | None = None, should_stop: Callable | None = None,
                     device=None, save: bool = True, ray=None) -> dict:
    """mAP, CP/CR/CF1/OP/OR/OF1 at top-``k`` and per-category AP of the tuned classifier and the
    hand-crafted baseline on the same images (METHOD.md section 6), stored as an evaluation row.

    ``dataset``: a VOC folder, a COCO instances JSON or a CSV/TSV of filename,labels (or a
    ready :class:`LabelledSet`). Dataset names are matched to the project's categories
    (synonyms count); unreadable images are skipped for both and listed in ``failures``.
    ``ray``: an :class:`engine.ray_predict.RaySettings` scores the images on Ray Data instead
    (same scoring code, same scores); the metrics are computed here as for the local path."""
    from engine.clip_backbone import load_backbone
    from engine.metrics import evaluate_scores

    if int(k) < 1:
        raise WorkflowError(f"k (the top-k of the F1 figures) must be at least 1, not {k}.")
    cats = store.list_categories(project_id)
    names = [c.name for c in cats]
    aliases = {c.name: list(c.synonyms or []) for c in cats}
    data = dataset if isinstance(dataset, LabelledSet) else read_labelled_set(
        dataset, image_dir=image_dir, categories=names, aliases=aliases)
    if list(data.categories) != names:
        raise WorkflowError("The labelled set's categories are not the project's.")
    require_images(data)
    spec = project_backbone_spec(store, project_id, backbone_spec)
    backbone = load_backbone(spec, device=device)
    clfs = project_classifiers(store, project_id, backbone)
    if ray is not None:
        from engine.ray_predict import score_files_on_ray

        scores, kept, failures = score_files_on_ray(backbone, clfs, names, data.images, ray)
    else:
        scores, kept, failures = score_labelled_set(backbone, clfs, data, loader, on_progress, should_stop)
    if should_stop is not None and should_stop():
        raise WorkflowError("Evaluation cancelled.")
    if not kept:
        first = f" (first: {Path(failures[0][0]).name}: {failures[0][1]})" if failures else ""
        raise WorkflowError(f"None of the {len(data.images)} images of {Path(data.source).name} could be "
                            f"read from {_folders(data)}{first}.")
    targets = data.targets[kept]
    result = {
        "dataset": data.source, "kind": data.kind, "images": len(kept), "k": k,
        "backbone": backbone.name, "categories": names,
        "positives": {c: int(v) for c, v in zip(names, targets.sum(0).tolist())},
        "unmatched_labels": data.unmatched,
        "failures": [{"file": f, "error": e} for f, e in failures],
        "results": {name: _finite(evaluate_scores(sc, targets, names, k=k)) for name, sc in scores.items()},
        "calibration": fit_calibrations(scores, targets, names, Path(data.source).name),
    }
    if save:
        row, _ = latest_classifier(store, project_id) if "tuned" in clfs else (None, None)
        result["evaluation_id"] = store.add_evaluation(project_id, data.source, result,
                                                       classifier_id=row.id if row else None)
    return result


def _folders(data: LabelledSet) -> str:
    folders = list(dict.fromkeys(str(Path(p).parent) for p in data.images))
    return folders[0] if len(folders) == 1 else ", ".join(folders[:3]) + (" ..." if len(folders) > 3 else "")


def _finite(obj):
    """nan -> None, recursively (strict JSON for the store and the CLI's file)."""
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def format_metrics_table(result: dict) -> str:
    """A plain-text table: one column per classifier, rows mAP, F1 keys, then per-category AP."""
    names = list(result["results"])
    keys = ["mAP", "CP", "CR", "CF1", "OP", "OR", "OF1"]
    w = max([12] + [len(c) + 2 for c in result["categories"]])

    def fmt(v):
        return "   -  " if v is None or v != v else f"{v:6.2f}"

    lines = [f"{'':<{w}}" + "".join(f"{n:>14}" for n in names)]
    for key in keys:
        lines.append(f"{key + ('@' + str(result['k']) if key != 'mAP' else ''):<{w}}" +
                     "".join(f"{fmt(result['results'][n].get(key)):>14}" for n in names))
    lines.append("per-category AP")
    for c in result["categories"]:
        lines.append(f"  {c:<{w - 2}}" + "".join(
            f"{fmt(result['results'][n]['per_category_ap'].get(c)):>14}" for n in names))
    return "\n".join(lines)
