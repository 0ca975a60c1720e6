"""Step 6, Classify: drop one or many images (or a zip of a folder): top-k labels with score bars,
the tuned prompts beside the hand-crafted zero-shot baseline (one image pass scores both), a
threshold, and a CSV/JSON download of all scores. A file that is not an image gets a message in
its own row and the others still run."""
from __future__ import annotations

import csv
import json
import os
import zipfile
from pathlib import Path

import gradio as gr

from engine import workflow as wf
from studio import figures
from studio.common import Page, err, esc, explain, project_id, weights_note

TITLE, TAB_ID = "6 Classify", "classify"
MAX_ZIP_MEMBERS = 5000
MAX_ZIP_BYTES = 2 << 30


def expand_uploads(paths, workdir: Path) -> tuple[list[str], list[dict]]:
    """Uploaded files -> (files to score, error rows). A zip is unpacked (members that would escape
    the folder, or too many / too large, are refused with a message)."""
    files: list[str] = []
    errors: list[dict] = []
    for p in paths or []:
        p = str(getattr(p, "name", p))
        if p.lower().endswith(".zip") and zipfile.is_zipfile(p):
            dest = workdir / Path(p).stem
            try:
                with zipfile.ZipFile(p) as zf:
                    infos = [i for i in zf.infolist() if not i.is_dir()]
                    if len(infos) > MAX_ZIP_MEMBERS or sum(i.file_size for i in infos) > MAX_ZIP_BYTES:
                        raise ValueError("the zip is too large (over 5000 files or 2 GiB)")
                    for info in infos:
                        target = (dest / info.filename).resolve()
                        if not str(target).startswith(str(dest.resolve()) + os.sep):
                            raise ValueError(f"member {info.filename!r} would land outside the folder")
                    zf.extractall(dest)
                files.extend(str(f) for f in wf.list_images([dest]))
            except (ValueError, zipfile.BadZipFile, OSError) as exc:
                errors.append({"file": p, "status": "error", "error": f"zip refused: {exc}"})
        else:
            files.append(p)
    return files, errors


def classify(ctx, state, paths, k: int = 3):
    """-> (rows of workflow.predict_files, message). Rows carry ``tuned_*`` (when the project has
    a classifier) and ``handcrafted_*`` scores; unreadable files have status 'error'."""
    pid = project_id(state)
    if pid is None:
        return [], err("Open a project first.")
    if not paths:
        return [], err("Drop one or more images first.")
    files, errors = expand_uploads(paths, ctx.tmp_dir())
    rows: list[dict] = []
    if files:
        try:
            summary = wf.predict_files(ctx.store, pid, files, output=None,
                                       backbone_spec=ctx.settings.backbone_spec(), top_k=int(k))
        except Exception as exc:
            return [], explain(exc)
        rows = summary.rows
    rows = rows + errors
    n_bad = sum(r["status"] != "ok" for r in rows)
    tuned = any("tuned_scores" in r for r in rows)
    msg = (f"{len(rows) - n_bad} images scored" + (f", {n_bad} could not be read" if n_bad else "")
           + ("." if tuned else ". This project has no trained classifier yet: the hand-crafted "
              "zero-shot baseline is shown alone."))
    return rows, msg


def _display_name(path: str) -> str:
    return Path(path).name


def _top(row: dict, key: str, k: int) -> list[tuple[str, float]]:
    scores = row.get(f"{key}_scores") or {}
    return sorted(scores.items(), key=lambda kv: -kv[1])[:k]


def results_html(rows: list[dict], k: int = 3, threshold: float = 0.0) -> str:
    """One card per file: top-k tuned labels as bars with the hand-crafted score beside, labels at
    or over the threshold in bold; an error line for a file that is not an image."""
    if not rows:
        return ""
    parts = ['<div class="ifs-results">']
    for r in rows:
        name = esc(_display_name(r["file"]))
        if r["status"] != "ok":
            parts.append(f'<div class="ifs-card ifs-error" data-file="{name}"><b>{name}</b>: '
                         f'<span class="ifs-error-text">{esc(str(r["error"]).replace(r["file"], _display_name(r["file"])))}</span></div>')
            continue
        main = "tuned" if "tuned_scores" in r else "handcrafted"
        base = r.get("handcrafted_scores") or {}
        all_scores = list((r.get(f"{main}_scores") or {}).values())
        lo, hi = (min(all_scores), max(all_scores)) if all_scores else (0.0, 1.0)
        span = (hi - lo) or 1.0
        parts.append(f'<div class="ifs-card" data-file="{name}"><b>{name}</b><table>')
        for label, score in _top(r, main, k):
            width = int(100 * (score - lo) / span) if len(all_scores) > 1 else 100
            strong = score >= threshold
            lab = f"<b>{esc(label)}</b>" if strong else esc(label)
            extra = (f'<td class="ifs-base">hand-crafted {base[label]:.3f}</td>'
                     if main == "tuned" and label in base else "")
            parts.append(
                f'<tr class="ifs-label" data-label="{esc(label)}"><td>{lab}</td>'
                f'<td><div style="background:#1f77b4;height:10px;width:{max(width, 2)}px;'
                f'max-width:100px"></div></td><td>{score:.3f}</td>{extra}</tr>')
        parts.append("</table></div>")
    parts.append("</div>")
    return "".join(parts)


def write_downloads(rows: list[dict], folder: Path) -> tuple[str, str]:
    """All scores as CSV (one row per file, one column per classifier and category) and JSON."""
    folder.mkdir(parents=True, exist_ok=True)
    js = folder / "scores.json"
    js.write_text(json.dumps([{**r, "file": _display_name(r["file"])} for r in rows], indent=1))
    kinds = [k for k in ("tuned", "handcrafted") if any(f"{k}_scores" in r for r in rows)]
    cats: list[str] = []
    for r in rows:
        for k in kinds:
            for c in (r.get(f"{k}_scores") or {}):
                if c not in cats:
                    cats.append(c)
    cs = folder / "scores.csv"
    with open(cs, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "status", "error"] + [f"{k}:{c}" for k in kinds for c in cats])
        for r in rows:
            w.writerow([_display_name(r["file"]), r["status"], r.get("error", "")] +
                       [(f"{r[f'{k}_scores'][c]:.6f}" if c in (r.get(f"{k}_scores") or {}) else "")
                        for k in kinds for c in cats])
    return str(cs), str(js)


def first_figure(rows: list[dict], k: int, threshold: float):
    for r in rows:
        if r["status"] == "ok":
            main = "tuned" if "tuned_scores" in r else "handcrafted"
            base = r.get("handcrafted_scores") if main == "tuned" else None
            return figures.score_bars(_top(r, main, k), base, threshold, title=_display_name(r["file"]))
    return figures.score_bars([], None)


# ---- widgets and events ------------------------------------------------------------------------

def build(ctx) -> dict:
    w: dict = {}
    w["note"] = gr.Markdown(weights_note(ctx.settings.backbone_spec()), elem_id="classify-note")
    w["files"] = gr.File(label="Images (or a zip of a folder)", file_count="multiple",
                         elem_id="classify-files")
    with gr.Row():
        w["k"] = gr.Slider(1, 10, value=3, step=1, label="Top k", elem_id="classify-k")
        w["threshold"] = gr.Slider(-1, 1, value=0.0, step=0.01, label="Threshold (labels at or over it in bold)",
                                   elem_id="classify-threshold")
        w["run"] = gr.Button("Classify", variant="primary", elem_id="classify-run")
    w["msg"] = gr.Markdown(elem_id="classify-msg")
    w["rows"] = gr.State([])
    w["html"] = gr.HTML(elem_id="classify-results")
    w["plot"] = gr.Plot(label="First image: tuned vs hand-crafted")
    with gr.Row():
        w["csv"] = gr.File(label="All scores (CSV)", interactive=False, elem_id="classify-csv")
        w["json"] = gr.File(label="All scores (JSON)", interactive=False, elem_id="classify-json")
    return w


def wire(ctx, w: dict, page: Page) -> None:
    state = page.state

    def run(st, files, k, thr):
        rows, msg = classify(ctx, st, files, k)
        if not rows:
            return rows, msg, "", figures.score_bars([], None), None, None
        cs, js = write_downloads(rows, ctx.tmp_dir())
        return rows, msg, results_html(rows, int(k), thr), first_figure(rows, int(k), thr), cs, js

    w["run"].click(run, [state, w["files"], w["k"], w["threshold"]],
                   [w["rows"], w["msg"], w["html"], w["plot"], w["csv"], w["json"]])

    def redraw(rows, k, thr):
        return results_html(rows, int(k), thr), first_figure(rows, int(k), thr)

    for ctl in (w["k"], w["threshold"]):
        ctl.release(redraw, [w["rows"], w["k"], w["threshold"]], [w["html"], w["plot"]])


def outputs(w: dict) -> list:
    return []


def refresh(ctx, state, w: dict) -> tuple:
    return ()
