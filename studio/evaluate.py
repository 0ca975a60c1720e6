"""Step 7, Evaluate: upload a labelled set - one zip (a VOC folder, a COCO JSON with its images, or
a CSV/TSV of filename,labels with its images) or a CSV/TSV plus the images - or, on your own
machine, give its path; get mAP and F1@3 of the tuned prompts vs the hand-crafted baseline on the
same images (METHOD.md section 6), a per-category AP chart, the set's labels that match no
category, and confidences calibrated on the set for the Classify step."""
from __future__ import annotations

import gradio as gr

from engine import workflow as wf
from studio import figures
from studio.common import CancellableJob, Page, Worker, err, explain, md, md_list, ok, project_id, visitor_of

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


def done_message(result: dict) -> str:
    """What was evaluated, what could not be read, which labels matched no category, and that
    Classify's confidences are now calibrated (all names escaped)."""
    fails = result.get("failures") or []
    lines = [ok(f"{result['images']} images evaluated ({md(result['dataset'].rsplit('/', 1)[-1])})"
                + (f"; {len(fails)} could not be read (first: "
                   f"{md(fails[0]['file'].rsplit('/', 1)[-1])}: {md(fails[0]['error'])})" if fails else "")
                + ".")]
    if result.get("unmatched_labels"):
        lines.append(f"Labels in the set that match no category (left out): "
                     f"{md_list(result['unmatched_labels'], 30)}.")
    if result.get("calibration"):
        lines.append("The Classify step's confidences are now calibrated on this set.")
    return "  \n".join(lines)


def evaluate(ctx, state, dataset, image_dir, cancel, uploads=None):
    """Generator of (message, metrics rows, figure or None): ``uploads`` (files) when given, else
    the server path ``dataset`` (+ ``image_dir``)."""
    pid = project_id(state)
    if pid is None:
        yield err("Open a project first."), [], None
        return
    if not uploads and not (dataset or "").strip():
        yield err("Upload a labelled set (one zip, or a CSV/TSV with its images) first."), [], None
        return
    if not uploads and ctx.settings.private_projects:
        yield err("This shared studio reads no paths on its server: upload the labelled set instead."), [], None
        return

    def job(emit, should_stop):
        progress = lambda d, t: emit((d, t))  # noqa: E731
        if uploads:
            return wf.evaluate_uploads(ctx.store, pid, uploads, ctx.tmp_dir(),
                                       backbone_spec=ctx.settings.backbone_spec(),
                                       on_progress=progress, should_stop=should_stop, visitor=visitor_of(ctx, state))
        return wf.evaluate_project(ctx.store, pid, dataset.strip(), image_dir=(image_dir or "").strip() or None,
                                   backbone_spec=ctx.settings.backbone_spec(),
                                   on_progress=progress, should_stop=should_stop, visitor=visitor_of(ctx, state))

    for kind, payload in Worker(job, cancel):
        if kind == "item":
            yield f"Scored {payload[0]} of {payload[1]} images...", [], None
        elif kind == "done":
            yield done_message(payload), metrics_rows(payload), ap_figure(payload)
        else:
            yield explain(payload), [], None


def build(ctx) -> dict:
    w: dict = {}
    w["files"] = gr.File(label="Labelled set: one zip, or a CSV/TSV of filename,labels plus its images",
                         file_count="multiple", elem_id="eval-files")
    with gr.Row():
        w["run"] = gr.Button("Evaluate", variant="primary", elem_id="eval-run")
        w["cancel"] = gr.Button("Cancel", variant="stop", elem_id="eval-cancel")
    w["msg"] = gr.Markdown(elem_id="eval-msg")
    with gr.Accordion("On this machine: a labelled set by its path", open=False,
                      visible=not ctx.settings.private_projects):
        with gr.Row():
            w["dataset"] = gr.Textbox(label="VOC folder, COCO instances JSON, or CSV/TSV of filename,labels",
                                      scale=3, elem_id="eval-dataset")
            w["images"] = gr.Textbox(label="Image folder (COCO/CSV, when not next to the file)", scale=2,
                                     elem_id="eval-images")
        w["run_path"] = gr.Button("Evaluate from this path", elem_id="eval-run-path")
        w["path_msg"] = gr.Markdown(elem_id="eval-path-msg")
    w["table"] = gr.Dataframe(headers=["metric", "tuned", "hand-crafted"], interactive=False,
                              elem_id="eval-table")
    w["plot"] = gr.Plot(label="Per-category AP", elem_id="eval-plot")
    return w


def wire(ctx, w: dict, page: Page) -> None:
    job = CancellableJob(ctx, "evaluate")

    def run(st, files, ds, imgs, request: gr.Request):
        with job.running(request) as cancel:
            for msg, rows, fig in evaluate(ctx, st, ds, imgs, cancel, uploads=files):
                yield msg, (rows if rows else gr.update()), (fig if fig is not None else gr.update())

    def run_path(st, ds, imgs, request: gr.Request):
        yield from run(st, None, ds, imgs, request)

    w["run"].click(run, [page.state, w["files"], w["dataset"], w["images"]], [w["msg"], w["table"], w["plot"]])
    w["run_path"].click(run_path, [page.state, w["dataset"], w["images"]],
                        [w["path_msg"], w["table"], w["plot"]])
    job.wire_cancel(w["cancel"], w["msg"])


def outputs(w: dict) -> list:
    return [w["msg"], w["path_msg"], w["table"], w["plot"]]


def refresh(ctx, state, w: dict) -> tuple:
    """Another project: the previous one's figures and messages go."""
    return "", "", [], figures.ap_bars({})
