"""Predict on awkward inputs (issue 11, findings 5 and 8): a file name that is not UTF-8, a dangling
symbolic link, an unreadable file each become a ``status=error`` row and the run goes on; resume
keys on the resolved absolute path (the same files given three ways are scored once); an output
written by another project or with another header is refused before anything is appended."""
import csv
import json
import os

import pytest
import torch

from engine import workflow as wf
from engine.classifier import Classifier
from engine.clip_backbone import BackboneSpec, load_backbone
from engine.datasets import LoaderSettings
from tests.test_datasets import _img

CATS = ["cat", "dog", "person"]
LOADER = LoaderSettings(batch_size=2, workers=0)


@pytest.fixture(scope="module")
def backbone():
    return load_backbone(BackboneSpec("tiny-rn", pretrained=None), device="cpu")


@pytest.fixture(scope="module")
def classifiers(backbone):
    g = torch.Generator().manual_seed(1)
    return {"tuned": Classifier(CATS, torch.randn(3, backbone.embed_dim, generator=g),
                                torch.randn(3, backbone.embed_dim, generator=g), backbone.name)}


def _rows(out):
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def test_non_utf8_name_dangling_link_unreadable_file(tmp_path, backbone, classifiers):
    folder = tmp_path / "imgs"
    _img(folder / "ok.jpg", 0)
    bad_name = os.fsencode(str(folder)) + b"/caf\xe9.jpg"  # Latin-1 bytes: not UTF-8
    with open(bad_name, "wb") as fh:
        fh.write((folder / "ok.jpg").read_bytes())
    os.symlink(folder / "gone.jpg", folder / "dangling.jpg")
    locked = _img(folder / "locked.jpg", 1)
    os.chmod(locked, 0)
    for fmt in ("jsonl", "csv"):
        out = tmp_path / f"out.{fmt}"
        for attempt in range(2):  # a second run resumes: nothing new, no crash
            s = wf.predict_with(backbone, classifiers, CATS, [folder], out, loader=LOADER)
            assert s.total == 4
            if attempt == 0:
                assert s.scored + s.failed == 4
            else:
                assert s.skipped == 4 and s.scored == s.failed == 0
        if fmt == "jsonl":
            status = {r["file"].rsplit("/", 1)[-1]: (r["status"], r["error"]) for r in _rows(out)}
        else:
            status = {r["file"].rsplit("/", 1)[-1]: (r["status"], r["error"])
                      for r in csv.DictReader(out.open(encoding="utf-8"))}
        assert len(status) == 4
        assert status["ok.jpg"][0] == "ok"
        assert status["dangling.jpg"][0] == "error" and status["dangling.jpg"][1]
        odd = [k for k in status if k.startswith("caf")]
        assert len(odd) == 1 and status[odd[0]][0] == "error" and "UTF-8" in status[odd[0]][1]
        if os.geteuid() != 0:  # root reads a file whatever its mode
            assert status["locked.jpg"][0] == "error"


def test_unreadable_path_given_directly(tmp_path, backbone, classifiers):
    """/proc/self/mem opens but every read fails (EIO), also for root."""
    out = tmp_path / "o.jsonl"
    _img(tmp_path / "a.jpg", 0)
    s = wf.predict_with(backbone, classifiers, CATS, [tmp_path / "a.jpg", "/proc/self/mem"], out, loader=LOADER)
    assert (s.scored, s.failed) == (1, 1)
    assert [r["status"] for r in _rows(out)] == ["ok", "error"]


def test_resume_keys_on_resolved_absolute_path(tmp_path, backbone, classifiers, monkeypatch):
    folder = tmp_path / "imgs"
    for i in range(3):
        _img(folder / f"{i}.jpg", i)
    os.symlink(folder, tmp_path / "link")
    out = tmp_path / "o.jsonl"
    monkeypatch.chdir(tmp_path)
    first = wf.predict_with(backbone, classifiers, CATS, [folder], out, loader=LOADER)
    assert first.scored == 3
    for inputs in (["imgs"], [str(tmp_path / "link")], ["./imgs/../imgs/0.jpg", "imgs/1.jpg", "link/2.jpg"]):
        again = wf.predict_with(backbone, classifiers, CATS, inputs, out, loader=LOADER)
        assert (again.scored, again.skipped) == (0, 3), inputs
    files = [r["file"] for r in _rows(out)]
    assert sorted(files) == sorted(str((folder / f"{i}.jpg").resolve()) for i in range(3))


def test_output_of_another_project_or_header_is_refused(tmp_path, backbone, classifiers):
    _img(tmp_path / "imgs" / "a.jpg", 0)
    _img(tmp_path / "imgs" / "b.jpg", 1)
    other_cats = ["car", "bus", "bike"]
    other = {"tuned": Classifier(other_cats, classifiers["tuned"].global_emb, classifiers["tuned"].local_emb,
                                 backbone.name)}
    for fmt in ("csv", "jsonl"):
        out = tmp_path / f"other.{fmt}"
        wf.predict_with(backbone, other, other_cats, [tmp_path / "imgs" / "a.jpg"], out, loader=LOADER)
        before = out.read_bytes()
        with pytest.raises(wf.WorkflowError, match="another project|other header|different"):
            wf.predict_with(backbone, classifiers, CATS, [tmp_path / "imgs"], out, loader=LOADER)
        assert out.read_bytes() == before
    foreign = tmp_path / "notes.csv"
    foreign.write_text("name,age\nbob,3\n")
    with pytest.raises(wf.WorkflowError):
        wf.predict_with(backbone, classifiers, CATS, [tmp_path / "imgs"], foreign, loader=LOADER)
    assert foreign.read_text() == "name,age\nbob,3\n"
    junk = tmp_path / "junk.jsonl"
    junk.write_text('{"hello": 1}\n')
    with pytest.raises(wf.WorkflowError):
        wf.predict_with(backbone, classifiers, CATS, [tmp_path / "imgs"], junk, loader=LOADER)
    assert junk.read_text() == '{"hello": 1}\n'
