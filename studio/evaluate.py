"""Step 7, Evaluate: point at a labelled set (a VOC folder, a COCO annotation JSON, or a CSV of
filename and labels) and get mAP and F1@3 of the tuned prompts vs the hand-crafted baseline on the
same images (METHOD.md section 6), with a per-category AP bar chart."""
from __future__ import annotations

import gradio as gr

from engine import workflow as wf
from studio import figures
from studio.common import CancellableJob, Page, Worker, err, explain, ok, project_id

TITLE, TAB_ID = "7 Evaluate", "evaluate"
METRIC_KEYS = ["mAP", "CP", "CR", "CF1", "OP", "OR", "OF1"]


def metrics_rows(result: dict) -> list[list]:
    names = list(result["results"])
    rows = []
    for key in METRIC_KEYS:
        label = key if key == "mAP" else f"{key}@{result['k']}"
        rows.append([label] + [None if result["results"][n].get(key) is None
                               else round(float(result["results"][n][key]), 2) for n in names])
    return rows


def ap_figure(result: dict):
    res = result["results"]
    tuned = res.get("tuned") or res.get("handcrafted")
    base = res.get("handcrafted") if "tuned" in res else None
    return figures.ap_bars(tuned["per_category_ap"], base["per_category_ap"] if base else None)


def evaluate(ctx, state, dataset, image_dir, cancel):
    """Generator of (message, metrics rows, headers, figure or None)."""
    pid = project_id(state)
    if pid is None:
        yield err("Open a project first."), [], None
        return
    if not (dataset or "").strip():
        yield err("Give the path of a VOC folder, a COCO annotation JSON or a CSV."), [], None
        return

    def job(emit, should_stop):
        return wf.evaluate_project(ctx.store, pid, dataset.strip(), image_dir=(image_dir or "").strip() or None,
                                   backbone_spec=ctx.settings.backbone_spec(),
                                   on_progress=lambda d, t: emit((d, t)), should_stop=should_stop)

    for kind, payload in Worker(job, cancel):
        if kind == "item":
            yield f"Scored {payload[0]} of {payload[1]} images...", [], None
        elif kind == "done":
            n_fail = len(payload.get("failures") or [])
            msg = ok(f"{payload['images']} images evaluated" +
                     (f"; {n_fail} could not be read" if n_fail else "") + ".")
            yield msg, metrics_rows(payload), ap_figure(payload)
        else:
            yield explain(payload), [], None


def build(ctx) -> dict:
    w: dict = {}
    with gr.Row():
        w["dataset"] = gr.Textbox(label="Labelled set: VOC folder, COCO instances JSON, or CSV of filename,labels",
                                  scale=3, elem_id="eval-dataset")
        w["images"] = gr.Textbox(label="Image folder (COCO/CSV, when not next to the file)", scale=2,
                                 elem_id="eval-images")
    with gr.Row():
        w["run"] = gr.Button("Evaluate", variant="primary", elem_id="eval-run")
        w["cancel"] = gr.Button("Cancel", variant="stop")
    w["msg"] = gr.Markdown(elem_id="eval-msg")
    w["table"] = gr.Dataframe(headers=["metric", "tuned", "hand-crafted"], interactive=False,
                              elem_id="eval-table")
    w["plot"] = gr.Plot(label="Per-category AP", elem_id="eval-plot")
    return w


def wire(ctx, w: dict, page: Page) -> None:
    job = CancellableJob(ctx, "evaluate")

    def run(st, ds, imgs, request: gr.Request):
        with job.running(request) as cancel:
            for msg, rows, fig in evaluate(ctx, st, ds, imgs, cancel):
                yield msg, (rows if rows else gr.update()), (fig if fig is not None else gr.update())

    w["run"].click(run, [page.state, w["dataset"], w["images"]], [w["msg"], w["table"], w["plot"]])
    job.wire_cancel(w["cancel"], w["msg"])


def outputs(w: dict) -> list:
    return []


def refresh(ctx, state, w: dict) -> tuple:
    return ()
