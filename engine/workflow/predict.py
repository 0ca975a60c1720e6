"""Batch prediction: score image files, write CSV or JSONL batch by batch (resumable), or return
the rows."""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from engine.datasets import LoaderSettings, list_images
from engine.workflow.base import WorkflowError
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


def _done_files(path: Path, fmt: str) -> set[str]:
    """Files already present in an earlier output (scored or reported), for resuming. A torn last
    line (killed mid-write) is dropped so the file is rewritten cleanly."""
    done: set[str] = set()
    if not path.exists() or path.stat().st_size == 0:
        return done
    raw = path.read_bytes()
    if not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]
        path.write_bytes(raw)
    text = raw.decode("utf-8", errors="replace")
    if fmt == "jsonl":
        for line in text.splitlines():
            try:
                done.add(json.loads(line)["file"])
            except (ValueError, KeyError, TypeError):
                continue
    else:
        rows = list(csv.reader(io.StringIO(text)))
        for r in rows[1:]:
            if r:
                done.add(r[0])
    return done


def _top_k(row, categories, k):
    from engine.classifier import top_k

    return [[name, _f32(score)] for name, score in top_k(row, categories, k)]


def _f32(v) -> float:
    """A float32 score as the shortest decimal that reads back to the same float32 (9 digits)."""
    return float(f"{float(v):.9g}")


def predict_rows(categories: list[str], indices, scores: dict, files, top_k: int) -> list[dict]:
    """Output rows (dicts) of one batch: file, status, top-k of each classifier, all scores."""
    rows = []
    arrays = {name: sc.numpy() for name, sc in scores.items()}
    for j, i in enumerate(indices):
        row = {"file": str(files[i]), "status": "ok", "error": ""}
        for name, arr in arrays.items():
            vals = arr[j]
            row[f"{name}_top_k"] = _top_k(vals, categories, top_k)
            row[f"{name}_scores"] = dict(zip(categories, [_f32(v) for v in vals.tolist()]))
        rows.append(row)
    return rows


def _csv_header(categories, names):
    head = ["file", "status", "error"]
    for n in names:
        head.append(f"{n}_top_k")
    for n in names:
        head += [f"{n}:{c}" for c in categories]
    return head


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
    files = [str(f) for f in list_images(inputs)]
    out = Path(output) if output else None
    fmt = _output_format(out, fmt)
    done = _done_files(out, fmt) if out else set()
    todo = [f for f in files if f not in done]
    summary = PredictSummary(out, len(files), skipped=len(files) - len(todo))
    names = list(classifiers)
    fh = writer = None
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        new = not out.exists() or out.stat().st_size == 0
        fh = open(out, "a", newline="", encoding="utf-8")
        if fmt == "csv":
            writer = csv.writer(fh)
            if new:
                writer.writerow(_csv_header(categories, names))
    try:
        if on_progress:
            on_progress(summary.skipped, summary.total)
        for indices, scores, failures in stream_scores(backbone, classifiers, todo, loader, should_stop):
            rows = predict_rows(categories, indices, scores, todo, top_k) if indices else []
            order = list(indices) + [i for i, _ in failures]
            rows += [{"file": todo[i], "status": "error", "error": err} for i, err in failures]
            rows = [r for _, r in sorted(zip(order, rows), key=lambda t: t[0])]
            summary.scored += len(indices)
            summary.failed += len(failures)
            if fh is None:
                summary.rows.extend(rows)
            else:
                for r in rows:
                    if writer is not None:
                        writer.writerow(_csv_line(r, categories, names))
                    else:
                        fh.write(json.dumps(r, ensure_ascii=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            if on_progress:
                on_progress(summary.skipped + summary.scored + summary.failed, summary.total)
        summary.cancelled = summary.skipped + summary.scored + summary.failed < summary.total
    finally:
        if fh:
            fh.close()
    return summary


def predict_files(store, project_id: int, inputs: Iterable[str | Path], output: str | Path | None = None,
                  fmt: str | None = None, backbone_spec=None, top_k: int = 3,
                  loader: LoaderSettings | None = None, include_baseline: bool = True,
                  on_progress: Callable | None = None, should_stop: Callable | None = None,
                  device=None) -> PredictSummary:
    """Score image files (folders expand recursively, sorted) with the tuned classifier (when the
    project has one) and the hand-crafted baseline, from one image-encoder pass.

    ``output`` (``.csv`` or ``.jsonl``, or ``fmt``) is appended batch by batch and flushed, so a
    killed run loses at most the batch in flight; a re-run skips files already in it (scored or
    reported). Unreadable files get a row with ``status="error"`` and the reason. With no output
    the rows are returned in ``PredictSummary.rows``. ``on_progress(done, total)``.

    Row fields: ``file``, ``status``, ``error``, and per classifier (``tuned``, ``handcrafted``)
    ``<name>_top_k`` ``[[category, score]]`` and ``<name>_scores`` ``{category: score}`` (CSV:
    one ``<name>:<category>`` column per score, top-k as ``cat:score;cat:score``).
    """
    from engine.clip_backbone import load_backbone

    _output_format(Path(output) if output else None, fmt)  # fail before loading anything
    inputs = list_images(inputs)
    spec = project_backbone_spec(store, project_id, backbone_spec)
    backbone = load_backbone(spec, device=device)
    clfs = project_classifiers(store, project_id, backbone)
    if not include_baseline and "tuned" in clfs:
        clfs.pop("handcrafted")
    cats = [c.name for c in store.list_categories(project_id)]
    return predict_with(backbone, clfs, cats, inputs, output, fmt, top_k, loader, on_progress, should_stop)
