"""Step 8, Export: download the project's newest classifier file and a short Python snippet that
loads it and labels images with the engine."""
from __future__ import annotations

import gradio as gr

from engine import workflow as wf
from studio.common import Page, err, explain, md, ok, project_id, visitor_of

TITLE, TAB_ID = "8 Export", "export"


def export(ctx, state):
    """-> (classifier file path or None, snippet, message)."""
    pid = project_id(state)
    if pid is None:
        return None, "", err("Open a project first.")
    try:
        dest, snippet, clf = wf.export_classifier(ctx.store, pid, ctx.tmp_dir(), visitor=visitor_of(ctx, state))
    except Exception as exc:
        return None, "", explain(exc)
    active = wf.active_classifier(ctx.store, pid, visitor=visitor_of(ctx, state))
    return str(dest), snippet, ok(f"The classifier in use (run {active['run']} of this project): "
                                  f"{len(clf.categories)} categories, trained on {md(clf.model_name)}.")


def build(ctx) -> dict:
    w: dict = {}
    w["run"] = gr.Button("Prepare the classifier file", variant="primary", elem_id="export-run")
    w["msg"] = gr.Markdown(elem_id="export-msg")
    w["file"] = gr.File(label="Classifier (safetensors + JSON metadata)", interactive=False,
                        elem_id="export-file")
    w["snippet"] = gr.Code(language="python", label="Use it from Python", elem_id="export-snippet")
    return w


def wire(ctx, w: dict, page: Page) -> None:
    w["run"].click(lambda st: export(ctx, st), [page.state], [w["file"], w["snippet"], w["msg"]])


def outputs(w: dict) -> list:
    return [w["file"], w["snippet"], w["msg"]]


def refresh(ctx, state, w: dict) -> tuple:
    """Another project: the previous one's file, snippet and message go."""
    return None, "", ""
