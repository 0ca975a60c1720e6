"""Step 8, Export: download the project's newest classifier file and a short Python snippet that
loads it and labels images with the engine."""
from __future__ import annotations

import shutil

import gradio as gr

from engine import workflow as wf
from studio.common import err, explain, ok, project_id

SNIPPET = '''# pip install -r requirements.txt   (this project's engine)
from PIL import Image
from engine.classifier import Classifier, score_images, top_k
from engine.clip_backbone import BackboneSpec, load_backbone

clf = Classifier.load("{file}")
backbone = load_backbone(BackboneSpec(model={model!r}, pretrained={pretrained!r}))
scores = score_images(backbone, clf, [Image.open("photo.jpg")])
print(top_k(scores[0], clf.categories, k=3))
'''


def export(ctx, state):
    """-> (classifier file path or None, snippet, message)."""
    pid = project_id(state)
    if pid is None:
        return None, "", err("Open a project first.")
    try:
        row, clf = wf.latest_classifier(ctx.store, pid)
    except Exception as exc:
        return None, "", explain(exc)
    if row is None:
        return None, "", err("This project has no classifier yet: train it first (step 5).")
    folder = ctx.tmp_dir()
    name = f"{wf.studio_project_info(ctx.store, pid)['name']}".replace("/", "_")[:60] or "classifier"
    dest = folder / f"{name}.safetensors"
    shutil.copyfile(row.path, dest)
    bk = (clf.meta or {}).get("backbone") or {}
    snippet = SNIPPET.format(file=dest.name, model=bk.get("model", "RN50"),
                             pretrained=bk.get("pretrained", "openai"))
    return str(dest), snippet, ok(f"Classifier of {len(clf.categories)} categories, trained on {clf.model_name}.")


def build_export(ctx) -> dict:
    w: dict = {}
    w["run"] = gr.Button("Prepare the classifier file", variant="primary", elem_id="export-run")
    w["msg"] = gr.Markdown(elem_id="export-msg")
    w["file"] = gr.File(label="Classifier (safetensors + JSON metadata)", interactive=False,
                        elem_id="export-file")
    w["snippet"] = gr.Code(language="python", label="Use it from Python", elem_id="export-snippet")
    return w


def wire_export(ctx, w: dict, state) -> None:
    w["run"].click(lambda st: export(ctx, st), [state], [w["file"], w["snippet"], w["msg"]])
