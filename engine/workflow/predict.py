"""Batch prediction: score image files, write CSV or JSONL batch by batch (resumable), or return
the rows."""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from engine.batch_scoring import error_row, predict_rows
from engine.datasets import LoaderSettings, list_images
from engine.workflow.base import WorkflowError, owned
from engine.workflow.predict_output import csv_header, done_files, file_key
from engine.workflow.scoring import project_backbone_spec, project_classifiers, stream_scores


@dataclass
class PredictSummary:
    """Counts of a predict run: ``scored`` new files, ``failed`` unreadable ones (reported in the
    output), ``skipped`` already in the output from an earlier run, ``cancelled``."""

    output: Path | None
    total: int
    scored: int = 0
    failed: int = 0
    skipped: int = 0
    cancelled: bool = False
    rows: list = field(default_factory=list)




def _csv_line(row, categories, names):
    out = [row["file"], row["status"], row["error"]]
    for n in names:
        tk = row.get(f"{n}_top_k") or []
        out.append(";".join(f"{c}:{v:.4f}" for c, v in tk))
    for n in names:
        sc = row.get(f"{n}_scores") or {}
        out += [repr(sc[c]) if c in sc else "" for c in categories]
    return out


def _output_format(output: Path | None, fmt: str | None) -> str:
    if output is not None and output.is_dir():
        raise WorkflowError(f"The output {output} is a folder; name a .csv or .jsonl file.")
    fmt = (fmt or (output.suffix.lstrip(".") if output else "jsonl")).lower()
    fmt = {"json": "jsonl", "ndjson": "jsonl"}.get(fmt, fmt)
    if fmt not in ("csv", "jsonl"):
        raise WorkflowError(f"Output format {fmt!r} is not csv or jsonl (name the output .csv or .jsonl).")
    return fmt


def predict_with(backbone, classifiers: dict, categories: list[str], inputs: Iterable[str | Path],
                 output: str | Path | None = None, fmt: str | None = None, top_k: int = 3,
                 loader: LoaderSettings | None = None, on_progress: Callable | None = None,
                 should_stop: Callable | None = None) -> PredictSummary:
    """The predict pipeline over given classifiers (see :func:`predict_files`)."""
    if int(top_k) < 1:
        raise WorkflowError(f"top-k must be at least 1, not {top_k}.")
    out = Path(output) if output else None
    fmt = _output_format(out, fmt)
    names = list(classifiers)
    keyed: dict[str, tuple[str, str | None]] = {}  # key -> (path to read, error); one row per file
    for f in list_images(inputs):
        key, error = file_key(f)
        keyed.setdefault(key, (str(f), error))
    done = done_files(out, fmt, categories, names) if out else set()
    todo = [k for k in keyed if k not in done]
    summary = PredictSummary(out, len(keyed), skipped=len(keyed) - len(todo))
    named_badly = [{"file": k, "status": "error", "error": keyed[k][1]} for k in todo if keyed[k][1]]
    todo = [k for k in todo if not keyed[k][1]]
    fh = writer = None
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        new = not out.exists() or out.stat().st_size == 0
        fh = open(out, "a", newline="", encoding="utf-8")
        if fmt == "csv":
            writer = csv.writer(fh)
            if new:
                writer.writerow(csv_header(categories, names))

    def emit(rows):
        if fh is None:
            summary.rows.extend(rows)
            return
        for r in rows:
            if writer is not None:
                writer.writerow(_csv_line(r, categories, names))
            else:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())

    try:
        if named_badly:
            emit(named_badly)
            summary.failed += len(named_badly)
        if on_progress:
            on_progress(summary.skipped + summary.failed, summary.total)
        paths = [keyed[k][0] for k in todo]
        for indices, scores, failures in stream_scores(backbone, classifiers, paths, loader, should_stop):
            rows = predict_rows(categories, indices, scores, todo, top_k) if indices else []
            order = list(indices) + [i for i, _ in failures]
            rows += [error_row(todo[i], err) for i, err in failures]
            rows = [r for _, r in sorted(zip(order, rows), key=lambda t: t[0])]
            summary.scored += len(indices)
            summary.failed += len(failures)
            emit(rows)
            if on_progress:
                on_progress(summary.skipped + summary.scored + summary.failed, summary.total)
        summary.cancelled = summary.skipped + summary.scored + summary.failed < summary.total
    finally:
        if fh:
            fh.close()
    return summary


@owned
def predict_files(store, project_id: int, inputs: Iterable[str | Path], output: str | Path | None = None,
                  fmt: str | None = None, backbone_spec=None, top_k: int = 3,
                  loader: LoaderSettings | None = None, include_baseline: bool = True,
                  on_progress: Callable | None = None, should_stop: Callable | None = None,
                  device=None, ray=None) -> PredictSummary:
    """Score image files (folders expand recursively, sorted) with the tuned classifier (when the
    project has one) and the hand-crafted baseline, from one image-encoder pass.

    ``output`` (``.csv`` or ``.jsonl``, or ``fmt``) is appended batch by batch and flushed, so a
    killed run loses at most the batch in flight; a re-run skips files already in it (scored or
    reported). Unreadable files get a row with ``status="error"`` and the reason. With no output
    the rows are returned in ``PredictSummary.rows``. ``on_progress(done, total)``.

    Row fields: ``file``, ``status``, ``error``, and per classifier (``tuned``, ``handcrafted``)
    ``<name>_top_k`` ``[[category, score]]`` and ``<name>_scores`` ``{category: score}`` (CSV:
    one ``<name>:<category>`` column per score, top-k as ``cat:score;cat:score``).

    ``ray``: an :class:`engine.ray_predict.RaySettings` runs the same scoring on Ray Data instead
    (sources may be URIs Ray reads; ``output`` is a folder of shards; see engine.ray_predict) and
    returns its :class:`~engine.ray_predict.RayPredictSummary`.
    """
    from engine.clip_backbone import load_backbone

    if ray is not None:
        return _predict_on_ray(store, project_id, inputs, output, backbone_spec, top_k, include_baseline,
                               device, ray)
    _output_format(Path(output) if output else None, fmt)  # fail before loading anything
    if int(top_k) < 1:
        raise WorkflowError(f"top-k must be at least 1, not {top_k}.")
    inputs = list_images(inputs)
    spec = project_backbone_spec(store, project_id, backbone_spec)
    backbone = load_backbone(spec, device=device)
    clfs = project_classifiers(store, project_id, backbone)
    if not include_baseline and "tuned" in clfs:
        clfs.pop("handcrafted")
    cats = [c.name for c in store.list_categories(project_id)]
    return predict_with(backbone, clfs, cats, inputs, output, fmt, top_k, loader, on_progress, should_stop)


def _predict_on_ray(store, project_id, inputs, output, backbone_spec, top_k, include_baseline, device, settings):
    from engine.clip_backbone import load_backbone
    from engine.ray_predict import FORMATS, predict_on_ray, require_ray, resolve_sources

    require_ray()
    if not output:
        raise WorkflowError("Predicting on Ray needs an output folder (-o DIR or a URI).")
    if settings.fmt not in FORMATS:
        raise WorkflowError(f"Output format {settings.fmt!r} is not one of {', '.join(FORMATS)}.")
    resolve_sources(inputs)  # a missing source fails before anything loads
    backbone = load_backbone(project_backbone_spec(store, project_id, backbone_spec), device=device)
    clfs = project_classifiers(store, project_id, backbone)
    if not include_baseline and "tuned" in clfs:
        clfs.pop("handcrafted")
    cats = [c.name for c in store.list_categories(project_id)]
    return predict_on_ray(backbone, clfs, cats, inputs, output, top_k, settings)
