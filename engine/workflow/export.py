"""Taking things out and bringing them in: a project archive (export/import), and the newest
classifier file with the Python snippet that uses it."""
from __future__ import annotations

import shutil
from pathlib import Path

from engine.workflow.base import WorkflowError, owned
from engine.workflow.projects import project_info
from engine.workflow.scoring import latest_classifier


@owned
def export_project(store, project_id: int, path: str | Path) -> Path:
    """Write the project (rows + classifier files) to one archive at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    store.export_project(project_id, path)
    return path


def import_project(store, path: str | Path) -> int:
    """Import an archive written by :func:`export_project`; returns the new project id (renamed on a
    name clash)."""
    return store.import_project(Path(path))


CLASSIFIER_SNIPPET = '''# pip install -r requirements.txt   (this project's engine)
from PIL import Image
from engine.classifier import Classifier, score_images, top_k
from engine.clip_backbone import BackboneSpec, load_backbone

clf = Classifier.load("{file}")
backbone = load_backbone(BackboneSpec(model={model!r}, pretrained={pretrained!r}))
scores = score_images(backbone, clf, [Image.open("photo.jpg")])
print(top_k(scores[0], clf.categories, k=3))
'''


@owned
def export_classifier(store, project_id: int, folder: str | Path):
    """Copy the project's newest classifier into ``folder``, named after the project, and write the
    Python snippet that uses it. -> (file path, snippet, Classifier); WorkflowError when the
    project has no classifier yet."""
    row, clf = latest_classifier(store, project_id)
    if row is None:
        raise WorkflowError("This project has no classifier yet: train it first (step 5).")
    name = str(project_info(store, project_id)["name"]).replace("/", "_")[:60] or "classifier"
    dest = Path(folder) / f"{name}.safetensors"
    shutil.copyfile(row.path, dest)
    bk = (clf.meta or {}).get("backbone") or {}
    snippet = CLASSIFIER_SNIPPET.format(file=dest.name, model=bk.get("model", "RN50"),
                                        pretrained=bk.get("pretrained", "openai"))
    return dest, snippet, clf
