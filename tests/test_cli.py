"""The command line end to end: new -> knowledge (recorded real answers of the bundled LLM,
tests/llm_replay.py) -> train (tiny CLIP) -> predict / evaluate / export / import, a predict
process killed with SIGKILL and resumed, and bad input."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine.__main__ import main
from engine.metrics import evaluate_scores
from tests.llm_replay import RECORDING
from tests.test_datasets import _img, make_coco, make_voc

ROOT = Path(__file__).resolve().parent.parent
CLIP = ["--clip-model", "tiny-rn"]
# tiny counts over the question types that make sentences and scene groups (the knowledge tests
# cover every question type), answered from the recording
KNOWLEDGE = ["--llm-replay", str(RECORDING),
             "--set", "steps=common,attributes,coarse_sentences,scenes,scene_sentences",
             "--set", "n_common=2", "--set", "n_attributes=2", "--set", "attributes_per_category=1",
             "--set", "n_coarse_sentences=3", "--set", "pairs_per_group=1", "--set", "max_scene_pairs=1",
             "--set", "n_scene_sentences=2", "--set", "tokens_per_sentence=30", "--set", "tokens_per_phrase=6",
             "--set", "sampling.max_tokens=96"]


def cli(*args, capsys=None):
    rc = main([str(a) for a in args])
    out = capsys.readouterr() if capsys else None
    return rc, out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-category project taken through new -> knowledge -> train by the command line."""
    tmp = tmp_path_factory.mktemp("cli")
    db = tmp / "db" / "studio.db"
    vocab = tmp / "vocab.txt"
    vocab.write_text("cat\ndog, person\n")
    assert main(["--db", str(db), "new", "pets", "--vocab", str(vocab)]) == 0
    assert main(["--db", str(db), "--quiet", "--llm", "smollm2", "knowledge", "pets", *KNOWLEDGE]) == 0
    assert main(["--db", str(db), "--quiet", *CLIP, "train", "pets", "--epochs", "1",
                 "--batch-size", "16"]) == 0
    return db, tmp


def test_full_path_new_knowledge_train_predict(trained, tmp_path, capsys):
    db, _ = trained
    from engine import workflow as wf

    store = wf.open_store(db)
    pid = wf.find_project(store, "pets")
    assert [c.name for c in store.list_categories(pid)] == ["cat", "dog", "person"]
    sentences = store.list_sentences(pid, enabled_only=True)
    assert len(sentences) >= 6 and all(s.labels for s in sentences)
    row, clf = wf.latest_classifier(store, pid)
    assert clf is not None and clf.categories == ["cat", "dog", "person"] and Path(row.path).exists()

    for i in range(3):
        _img(tmp_path / "imgs" / f"{i}.jpg", i)
    out = tmp_path / "pred.jsonl"
    rc, _ = cli("--db", db, "--quiet", "predict", "pets", tmp_path / "imgs", "-o", out, "--top-k", "2",
                capsys=capsys)  # no --clip-model: the classifier's own backbone is used
    assert rc == 0
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows)
    assert all(len(r["tuned_top_k"]) == 2 and len(r["handcrafted_top_k"]) == 2 for r in rows)
    assert all(set(r["tuned_scores"]) == {"cat", "dog", "person"} for r in rows)


def _scores_from_predict(path, images, key):
    rows = {r["file"]: r for r in map(json.loads, path.read_text().splitlines())}
    return np.array([[rows[str(p)][f"{key}_scores"][c] for c in ("cat", "dog", "person")] for p in images])


def test_evaluate_voc_and_coco_layouts_via_cli(trained, tmp_path, capsys):
    """evaluate's figures equal engine.metrics on the scores predict writes for the same images."""
    db, _ = trained
    voc = make_voc(tmp_path / "VOCdevkit" / "VOC2007", {
        f"{i:06d}": o for i, o in enumerate([[("cat", 0)], [("dog", 0), ("person", 0)], [("person", 0)],
                                             [("cat", 0), ("dog", 1)], [("bird", 0)]])})
    coco = make_coco(tmp_path / "coco", {"a.jpg": ["cat"], "b.jpg": ["dog", "person"], "c.jpg": [],
                                         "d.jpg": ["person"]}, ["person", "dog", "cat"])
    from engine.datasets import read_coco, read_voc

    for dataset, data in ((tmp_path / "VOCdevkit", read_voc(voc, ["cat", "dog", "person"])),
                          (coco, read_coco(coco, categories=["cat", "dog", "person"]))):
        js = tmp_path / f"eval-{data.kind}.json"
        rc, out = cli("--db", db, "--quiet", "evaluate", "pets", dataset, "--json", js, capsys=capsys)
        assert rc == 0, out.err
        assert "mAP" in out.out and "per-category AP" in out.out
        res = json.loads(js.read_text())
        assert res["images"] == len(data) and set(res["results"]) == {"tuned", "handcrafted"}
        pred = tmp_path / f"pred-{data.kind}.jsonl"
        assert cli("--db", db, "--quiet", "predict", "pets", *data.images, "-o", pred)[0] == 0
        for key in ("tuned", "handcrafted"):
            exp = evaluate_scores(_scores_from_predict(pred, data.images, key), data.targets,
                                  ["cat", "dog", "person"])
            got = res["results"][key]
            for m in ("mAP", "CF1", "OF1", "CP", "CR", "OP", "OR"):
                assert got[m] == pytest.approx(exp[m], abs=1e-3), (data.kind, key, m)
            for c, ap in exp["per_category_ap"].items():
                assert (got["per_category_ap"][c] is None) == (ap is None)
                if ap is not None:
                    assert got["per_category_ap"][c] == pytest.approx(ap, abs=1e-3)
    assert "bird" in json.loads((tmp_path / "eval-voc.json").read_text())["unmatched_labels"]


def test_export_import_via_cli(trained, tmp_path, capsys):
    db, _ = trained
    archive = tmp_path / "pets.zip"
    assert cli("--db", db, "export", "pets", archive, capsys=capsys)[0] == 0
    other = tmp_path / "other.db"
    rc, out = cli("--db", other, "import", archive, capsys=capsys)
    assert rc == 0 and "imported as project" in out.out
    rc, out = cli("--db", other, "list", capsys=capsys)
    assert "pets" in out.out and "3 categories" in out.out


def test_predict_killed_and_resumed(tmp_path):
    """A real predict process is SIGKILLed mid-run; the re-run scores only what is missing."""
    db = tmp_path / "s.db"
    assert main(["--db", str(db), "new", "p", "--names", "cat, dog, person"]) == 0
    folder = tmp_path / "imgs"
    n = 48
    for i in range(n):
        _img(folder / f"{i:03d}.jpg", i, size=(640, 480))
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "engine", "--db", str(db), "--quiet", *CLIP, "predict", "p", str(folder),
           "-o", str(out), "--batch-size", "2", "--workers", "0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and out.read_text().count("\n") >= 6:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "predict finished before it could be killed: " + proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = [json.loads(l)["file"] for l in out.read_text().splitlines() if l.endswith("}")]
    assert 6 <= len(before) < n
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    skipped = int(res.stdout.split(" already in")[0].split(", ")[-1].split()[0])
    scored = int(res.stdout.split(" scored")[0])
    assert skipped == len(before) and scored == n - len(before)
    files = [json.loads(l)["file"] for l in out.read_text().splitlines()]
    assert sorted(files) == sorted(str(p) for p in folder.iterdir())  # each file exactly once


def test_predict_reports_bad_files_via_cli(tmp_path, capsys):
    db = tmp_path / "s.db"
    assert main(["--db", str(db), "new", "p", "--names", "cat, dog"]) == 0
    _img(tmp_path / "i" / "ok.jpg", 0)
    _img(tmp_path / "i" / "alpha.png", 1, mode="RGBA")
    (tmp_path / "i" / "zero.jpg").write_bytes(b"")
    (tmp_path / "i" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    out = tmp_path / "p.csv"
    rc, o = cli("--db", db, "--quiet", *CLIP, "predict", "p", tmp_path / "i", "-o", out, capsys=capsys)
    assert rc == 0 and "2 scored, 2 unreadable" in o.out
    import csv

    rows = {Path(r["file"]).name: r for r in csv.DictReader(out.open())}
    assert {k: v["status"] for k, v in rows.items()} == {"ok.jpg": "ok", "alpha.png": "ok",
                                                          "zero.jpg": "error", "bad.jpg": "error"}
    assert rows["ok.jpg"]["handcrafted_top_k"].count(":") == 2  # no tuned classifier yet: baseline only


@pytest.mark.parametrize("args,msg", [
    (["new", "x", "--names", "a, A"], "Duplicate"),
    (["new", "x", "--names", " , "], "blank"),
    (["new", "x", "--preset", "imagenet"], "Unknown preset"),
    (["train", "nope"], "No project 'nope'"),
])
def test_bad_input_one_clear_message(tmp_path, capsys, args, msg):
    rc, out = cli("--db", tmp_path / "s.db", *args, capsys=capsys)
    assert rc == 2 and msg in out.err and "Traceback" not in out.err


def test_storage_errors_are_user_errors(tmp_path, capsys):
    """A StorageError (an SQLite file that is not a project database) is an EngineError: one
    message, exit 2."""
    import sqlite3

    db = tmp_path / "other.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE notes (t TEXT)")
    rc, out = cli("--db", db, "list", capsys=capsys)
    assert rc == 2 and "not an Image-Free Studio one" in out.err and "Traceback" not in out.err


def test_train_without_sentences_is_refused(tmp_path, capsys):
    db = tmp_path / "s.db"
    assert main(["--db", str(db), "new", "p", "--names", "cat, dog"]) == 0
    rc, out = cli("--db", db, *CLIP, "train", "p", capsys=capsys)
    assert rc == 2 and "generate knowledge first" in out.err


def test_preset_project_and_set_overrides(tmp_path, capsys):
    from engine.__main__ import apply_sets
    from engine.train import TrainConfig

    cfg = apply_sets(TrainConfig(), ["epochs=2", "milestones=1,2", "layout.shared=8", "method=naive"])
    assert (cfg.epochs, cfg.milestones, cfg.layout.shared, cfg.method) == (2, (1, 2), 8, "naive")
    with pytest.raises(SystemExit, match="unknown setting"):
        apply_sets(TrainConfig(), ["epoch=2"])
    rc, out = cli("--db", tmp_path / "s.db", "new", "voc", "--preset", "voc2007", capsys=capsys)
    assert rc == 0 and "20 categories" in out.out
