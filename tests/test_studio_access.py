"""The studio as a shared Space serves it (``private_projects``): the real Gradio app on a loopback
port, driven over HTTP the way a browser (or an attacker's script) drives it (issue 11, findings 1
and 2).

1. A visitor presenting another visitor's project id in its browser state is refused for every
   action on that project: nothing of it is shown, nothing changes.
2. A file input takes only a file this visitor uploaded: a server path in a posted FileData is
   refused. That check is Gradio's own (``processing_utils._check_allowed`` with
   ``check_in_upload_folder``: an input file must lie in Gradio's upload folder, whose
   sub-folders are keyed sha256 digests, so only the uploader knows the path); the studio keeps it
   by never widening ``allowed_paths``.
"""
from __future__ import annotations

import hashlib
import json
import socket
import uuid
from pathlib import Path

import httpx
import pytest

SECRET_PROJECT = "victim-secret-project"
SECRET_CATEGORY = "zebracorn"
REFUSAL = "not one of your projects"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    """The launched studio and a small Gradio HTTP client (queue/join + the SSE data stream)."""

    def __init__(self, demo, url: str):
        self.demo, self.url = demo, url
        self.config = httpx.get(url + "config", timeout=30).json()
        self.components = {c["id"]: c for c in self.config["components"]}
        self.state_id = next(c["id"] for c in self.config["components"] if c["type"] == "browserstate")

    def _find(self, key: str, event: str) -> tuple[int, dict]:
        """The dependency fired by ``event`` on the component whose elem_id (or label) is ``key``."""
        for i, dep in enumerate(self.config["dependencies"]):
            for target, ev in dep["targets"]:
                props = self.components.get(target, {}).get("props", {})
                if ev == event and key in (props.get("elem_id"), props.get("value"), props.get("label")):
                    return i, dep
        raise KeyError((key, event))

    def defaults(self, dep: dict) -> list:
        out = []
        for cid in dep["inputs"]:
            props = self.components[cid].get("props", {})
            out.append(props.get("value"))
        return out

    def call(self, key: str, event: str, state: dict, overrides: dict | None = None,
             session: str | None = None) -> dict:
        """Fire one event as a browser would; returns Gradio's completion message."""
        fn_index, dep = self._find(key, event)
        data = self.defaults(dep)
        for k, cid in enumerate(dep["inputs"]):
            if cid == self.state_id:
                data[k] = state
        for k, v in (overrides or {}).items():
            data[k] = v
        session = session or uuid.uuid4().hex
        target = next(t for t, ev in dep["targets"] if ev == event)
        r = httpx.post(self.url + "gradio_api/queue/join", json={
            "data": data, "fn_index": fn_index, "session_hash": session, "event_data": None,
            "trigger_id": target}, timeout=30)
        r.raise_for_status()
        last = None
        with httpx.stream("GET", self.url + f"gradio_api/queue/data?session_hash={session}", timeout=300) as resp:
            for line in resp.iter_lines():
                if line.startswith("data:"):
                    msg = json.loads(line[5:])
                    if msg.get("msg") in ("process_completed", "process_generating"):
                        last = msg
                    if msg.get("msg") == "process_completed":
                        return msg
        return last or {}

    def upload(self, path: Path, session: str) -> dict:
        with open(path, "rb") as fh:
            r = httpx.post(self.url + "gradio_api/upload", files={"files": (path.name, fh)},
                           headers={"session_hash": session}, timeout=60)
        r.raise_for_status()
        server_path = r.json()[0]
        return {"path": server_path, "orig_name": path.name, "size": path.stat().st_size,
                "meta": {"_type": "gradio.FileData"}}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    import gradio as gr  # noqa: F401 - the real app

    from studio.context import StudioSettings
    from studio.layout import build_app

    tmp = tmp_path_factory.mktemp("space")
    settings = StudioSettings(db_path=str(tmp / "studio.db"), data_dir=str(tmp / "data"), clip_model="tiny-rn",
                              clip_pretrained=None, private_projects=True)
    demo = build_app(settings)
    port = _free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                        show_error=True)  # as studio.layout.launch does: errors reach the visitor
    try:
        yield App(demo, f"http://127.0.0.1:{port}/"), tmp
    finally:
        demo.close()


@pytest.fixture(scope="module")
def victim(app):
    """A project owned by the visitor "victim", with sentences, an edge edit and a classifier."""
    import torch

    from engine import workflow as wf
    from engine.classifier import Classifier
    from engine.clip_backbone import BackboneSpec, load_backbone

    a, tmp = app
    store = a.demo.ifs_ctx.store
    pid = wf.create_project(store, SECRET_PROJECT, [SECRET_CATEGORY, "unicorn", "griffin"])
    wf.set_owner(store, pid, "victim")
    store.replace_sentences(pid, [dict(text=f"a {SECRET_CATEGORY} beside a unicorn", labels=[SECRET_CATEGORY, "unicorn"],
                                       source="test"),
                                  dict(text="a griffin alone", labels=["griffin"], source="test")])
    store.set_edge_edit(pid, "unicorn", "griffin", "add")
    backbone = load_backbone(BackboneSpec("tiny-rn", pretrained=None), device="cpu")
    g = torch.Generator().manual_seed(0)
    clf = Classifier([SECRET_CATEGORY, "unicorn", "griffin"], torch.randn(3, backbone.embed_dim, generator=g),
                     torch.randn(3, backbone.embed_dim, generator=g), backbone.name,
                     meta={"backbone": {"model": "tiny-rn", "pretrained": None}})
    path = store.project_folder(pid) / "classifier-run0.safetensors"
    clf.save(path)
    store.add_classifier(pid, None, str(path), hashlib.sha256(path.read_bytes()).hexdigest())
    return pid


def _snapshot(store, pid):
    p = store.get_project(pid)
    return {"name": p.name, "settings": p.settings, "cats": [c.model_dump() for c in store.list_categories(pid)],
            "sentences": [s.model_dump() for s in store.list_sentences(pid)], "edits": store.edge_edits(pid),
            "attrs": [a.model_dump() for a in store.list_attributes(pid)], "runs": len(store.list_runs(pid)),
            "classifiers": [c.model_dump() for c in store.list_classifiers(pid)],
            "evaluations": len(store.list_evaluations(pid))}


def _image(tmp: Path) -> Path:
    from tests.test_datasets import _img

    return _img(tmp / "probe.jpg", 7)


# (trigger elem_id or label, event, {input index: value} beyond the state)
ACTIONS = {
    "rename": ("rename-project", "click", {1: "pwned"}),
    "delete": ("delete-yes", "click", {}),
    "export project": ("export-project", "click", {}),
    "generate knowledge": ("gen-knowledge", "click", {}),
    "show sentences": ("sent-show", "click", {}),
    "edit sentence": ("sent-save", "click", "sentence"),
    "delete sentence": ("sent-delete-yes", "click", "sentence"),
    "draw graph": ("graph-tau", "change", {}),
    "clear edge edits": ("Clear my edits", "click", {}),
    "train": ("train-start", "click", {}),
    "classify": ("classify-run", "click", "image"),
    "evaluate (uploads)": ("eval-run", "click", "uploaded set"),
    "evaluate (server path)": ("eval-run-path", "click", "labelled set"),
    "export classifier": ("export-run", "click", {}),
}


@pytest.mark.parametrize("action", list(ACTIONS))
def test_another_visitors_project_is_refused(app, victim, action):
    a, tmp = app
    store = a.demo.ifs_ctx.store
    key, event, extra = ACTIONS[action]
    before = _snapshot(store, victim)
    fn_index, dep = a._find(key, event)
    overrides = {}
    session = uuid.uuid4().hex
    if extra == "sentence":
        sid = store.list_sentences(victim)[0].id  # ids are sequential: easy to guess
        overrides = {1: sid}
        if action == "edit sentence":
            overrides.update({2: "overwritten", 3: [], 4: False})
    elif extra == "image":
        overrides = {1: [a.upload(_image(tmp), session)]}
    elif extra == "uploaded set":
        csv_path = tmp / "labels.csv"
        csv_path.write_text(f"probe.jpg,{SECRET_CATEGORY}\n")
        overrides = {1: [a.upload(csv_path, session), a.upload(_image(tmp), session)]}
    elif extra == "labelled set":
        csv_path = tmp / "labels.csv"
        csv_path.write_text(f"probe.jpg,{SECRET_CATEGORY}\n")
        overrides = {1: str(csv_path)}
    elif isinstance(extra, dict):
        overrides = extra
    msg = a.call(key, event, {"project": victim, "visitor": "attacker"}, overrides, session=session)
    shown = json.dumps(msg)
    assert SECRET_CATEGORY not in shown and SECRET_PROJECT not in shown, shown[:2000]
    # a shared studio refuses any server path before it looks at whose project it is
    refusal = "reads no paths on its server" if action == "evaluate (server path)" else REFUSAL
    assert refusal in shown, shown[:2000]
    assert _snapshot(store, victim) == before


def test_the_owner_is_served(app, victim):
    """The same request with the owner's id works (the refusal above is about ownership)."""
    a, _ = app
    msg = a.call("sent-show", "click", {"project": victim, "visitor": "victim"})
    assert SECRET_CATEGORY in json.dumps(msg)


def test_a_posted_server_path_is_refused(app, victim, tmp_path):
    """A FileData naming a file on the server that nobody uploaded: Gradio refuses it (the path is
    not in its upload folder) and nothing is imported."""
    a, _ = app
    store = a.demo.ifs_ctx.store
    from engine import workflow as wf

    server_file = Path("/var/tmp") / f"ifs-{uuid.uuid4().hex}.zip"
    wf.export_project(store, victim, server_file)
    try:
        n = len(store.list_projects())
        msg = a.call("import-project", "click", {"project": None, "visitor": "attacker"},
                     {1: {"path": str(server_file), "meta": {"_type": "gradio.FileData"}}})
        assert msg.get("success") is False and "not uploaded by a user" in json.dumps(msg), json.dumps(msg)[:1000]
        assert len(store.list_projects()) == n
    finally:
        server_file.unlink(missing_ok=True)
