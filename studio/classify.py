"""Step 6, Classify: drop one or many images (or a zip of a folder) and see them as a gallery: a
thumbnail per image with its top-k labels as chips (a 0-1 confidence, bold over the category's
threshold; a note says what the number means), the hand-crafted zero-shot prompts' chips beside on
demand (one image pass scores both), and a CSV/JSON download of all scores. A file that is not an
image, or a zip member that was refused, gets its own card with the reason; the others still run."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import gradio as gr

from engine import workflow as wf
from studio import gallery
from studio.common import visitor_of
from studio.common import (Page, build_weights_panel, err, explain, md, ok, project_id,
                           wire_weights_panel)

TITLE, TAB_ID = "6 Classify", "classify"
MAX_K = 10


def classify(ctx, state, paths, k: int = MAX_K):
    """-> (workflow.ClassifiedUploads or None, message). Cards carry chips for the top ``k``."""
    pid = project_id(state)
    if pid is None:
        return None, err("Open a project first.")
    if not paths:
        return None, err("Drop one or more images (or a zip of a folder) first.")
    try:
        res = wf.classify_uploads(ctx.store, pid, paths, ctx.tmp_dir(), k=int(k),
                                  backbone_spec=ctx.settings.backbone_spec(), visitor=visitor_of(ctx, state))
    except Exception as exc:
        return None, explain(exc)
    msg = f"{res.scored} images scored" + (f", {res.failed} could not be read" if res.failed else "") + "."
    if not res.has_classifier:
        msg += (" This project has no trained classifier yet: the hand-crafted zero-shot prompts "
                "are shown alone.")
    return res, ok(msg) if res.scored else err(msg)


def kinds_shown(res, compare: bool) -> list[str]:
    """The chip rows per card: the tuned prompts (when trained), the hand-crafted ones beside them
    on demand (or alone before training)."""
    if res is None:
        return []
    if not res.has_classifier:
        return ["handcrafted"]
    return ["tuned", "handcrafted"] if compare else ["tuned"]


def results_html(res, k: int, compare: bool) -> str:
    if res is None:
        return ""
    cards = [{**c, "chips": {kind: chips[:int(k)] for kind, chips in c["chips"].items()}} for c in res.cards]
    return gallery.gallery_html(cards, kinds_shown(res, compare))


def write_downloads(rows: list[dict], folder: Path) -> tuple[str, str]:
    """All scores as CSV (one row per file, one column per classifier and category) and JSON;
    ``file`` is the name shown (a zip member keeps its path)."""
    folder.mkdir(parents=True, exist_ok=True)
    js = folder / "scores.json"
    js.write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
    kinds = [k for k in ("tuned", "handcrafted") if any(f"{k}_scores" in r for r in rows)]
    cats: list[str] = []
    for r in rows:
        for k in kinds:
            cats += [c for c in (r.get(f"{k}_scores") or {}) if c not in cats]
    cs = folder / "scores.csv"
    with open(cs, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "status", "error"] + [f"{k}:{c}" for k in kinds for c in cats])
        for r in rows:
            w.writerow([r["file"], r["status"], r.get("error", "")] +
                       [(f"{r[f'{k}_scores'][c]:.6f}" if c in (r.get(f"{k}_scores") or {}) else "")
                        for k in kinds for c in cats])
    return str(cs), str(js)


# ---- widgets and events ------------------------------------------------------------------------

def build(ctx) -> dict:
    w: dict = {"weights": build_weights_panel(ctx, "classify")}
    w["files"] = gr.File(label="Images (or a zip of a folder)", file_count="multiple",
                         elem_id="classify-files")
    with gr.Row():
        w["k"] = gr.Slider(1, MAX_K, value=3, step=1, label="Labels per image (top k)", elem_id="classify-k")
        w["compare"] = gr.Checkbox(label="Show the hand-crafted prompts' labels beside", value=False,
                                   elem_id="classify-compare")
        w["run"] = gr.Button("Classify", variant="primary", elem_id="classify-run")
    w["msg"] = gr.Markdown(elem_id="classify-msg")
    w["note"] = gr.Markdown(elem_id="classify-note")
    w["result"] = gr.State(None)
    w["html"] = gr.HTML(elem_id="classify-results")
    with gr.Row():
        w["csv"] = gr.File(label="All scores (CSV)", interactive=False, elem_id="classify-csv")
        w["json"] = gr.File(label="All scores (JSON)", interactive=False, elem_id="classify-json")
    return w


def wire(ctx, w: dict, page: Page) -> None:
    wire_weights_panel(ctx, w["weights"], page.tab)

    def run(st, files, k, compare):
        res, msg = classify(ctx, st, files, MAX_K)
        if res is None:
            return None, msg, "", "", None, None
        cs, js = write_downloads(res.rows, ctx.tmp_dir())
        return res, msg, md(res.note), results_html(res, k, compare), cs, js

    w["run"].click(run, [page.state, w["files"], w["k"], w["compare"]],
                   [w["result"], w["msg"], w["note"], w["html"], w["csv"], w["json"]])
    # .change: a dragged slider and a number typed into its box (Enter) both redraw
    for ctl in (w["k"], w["compare"]):
        ctl.change(results_html, [w["result"], w["k"], w["compare"]], [w["html"]])


def outputs(w: dict) -> list:
    return [w["result"], w["msg"], w["note"], w["html"], w["csv"], w["json"]]


def refresh(ctx, state, w: dict) -> tuple:
    """Another project: nothing of the previous one's results stays on the page."""
    return None, "", "", "", None, None
