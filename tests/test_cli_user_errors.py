"""Every user error of the command line ends in exit status 2 and one line on stderr, never a
traceback (issue 11, finding 8): bad --set values, unknown devices and CLIP models, a weights file
that is not one, an output that is a folder, out-of-range numbers, unreadable or malformed labelled
sets, and a classifier file with absurd metadata."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.__main__ import main
from tests.test_datasets import _img, make_coco, make_voc

ROOT = Path(__file__).resolve().parent.parent
CLIP = ["--clip-model", "tiny-rn"]


def run_cli(args, capsys):
    """``main(args)`` as the shell sees it: (exit status, stdout, stderr)."""
    try:
        rc = main([str(a) for a in args])
    except SystemExit as exc:  # argparse and friends
        rc = exc.code if isinstance(exc.code, int) else 1
        if not isinstance(exc.code, int) and exc.code is not None:
            print(exc.code, file=sys.stderr)
    out = capsys.readouterr()
    return rc, out.out, out.err


def assert_one_line_error(rc, err, needle=None):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, (rc, err)
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("error: "), err
    if needle:
        assert needle.lower() in lines[0].lower(), err


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project with two images to score and a few labelled sets (no classifier: baseline only)."""
    tmp = tmp_path_factory.mktemp("clierr")
    db = tmp / "s.db"
    assert main(["--db", str(db), "new", "p", "--names", "cat, dog, person"]) == 0
    for i in range(2):
        _img(tmp / "imgs" / f"{i}.jpg", i)
    return db, tmp


@pytest.mark.parametrize("sets,needle", [
    (["epochs=0"], "epochs"),             # fails TrainConfig's validation
    (["lr=abc"], "lr"),                   # not a number
    (["nope=1"], "unknown setting"),      # no such field
    (["epochs"], "KEY=VALUE"),            # no '='
    (["layout.mode=banana"], "mode"),     # nested field, bad value
])
def test_train_set_errors(project, capsys, sets, needle):
    db, _ = project
    args = ["--db", db, *CLIP, "train", "p"]
    for s in sets:
        args += ["--set", s]
    rc, _, err = run_cli(args, capsys)
    assert_one_line_error(rc, err, needle)


def test_knowledge_set_error_before_the_llm_loads(project, capsys):
    db, _ = project
    rc, _, err = run_cli(["--db", db, "--llm", "no-such-llm", "knowledge", "p", "--set", "steps=banana"], capsys)
    assert_one_line_error(rc, err, "banana")


@pytest.mark.parametrize("extra,needle", [
    (["--device", "banana"], "banana"),
    (["--clip-model", "NoSuchModel"], "NoSuchModel"),
    (["--clip-model", "RN50", "--clip-checkpoint", "/etc/passwd"], "/etc/passwd"),
])
def test_backbone_and_device_errors(project, capsys, extra, needle):
    db, tmp = project
    rc, _, err = run_cli(["--db", db, "--quiet", *extra, "predict", "p", tmp / "imgs", "-o",
                          tmp / "x.jsonl"], capsys)
    assert_one_line_error(rc, err, needle)


def test_output_is_a_directory(project, capsys, tmp_path):
    db, tmp = project
    rc, _, err = run_cli(["--db", db, "--quiet", *CLIP, "predict", "p", tmp / "imgs", "-o", tmp_path],
                         capsys)
    assert_one_line_error(rc, err, str(tmp_path))


def test_negative_top_k_is_refused(project, capsys, tmp_path):
    db, tmp = project
    out = tmp_path / "o.jsonl"
    rc, _, err = run_cli(["--db", db, "--quiet", *CLIP, "predict", "p", tmp / "imgs", "-o", out,
                          "--top-k", "-5"], capsys)
    assert_one_line_error(rc, err, "top-k")
    assert not out.exists()


def test_evaluate_k_zero_fails_before_scoring(project, capsys, tmp_path):
    db, tmp = project
    coco = make_coco(tmp_path / "coco", {"a.jpg": ["cat"]}, ["cat", "dog", "person"])
    rc, out, err = run_cli(["--db", db, "--quiet", *CLIP, "evaluate", "p", coco, "-k", "0",
                            "--json", tmp_path / "e.json"], capsys)
    assert_one_line_error(rc, err, "-k")
    assert not (tmp_path / "e.json").exists()


@pytest.mark.parametrize("tau", ["1e21", "1000000000000000000000", "-1"])
def test_graph_tau_out_of_range(project, capsys, tau):
    db, _ = project
    rc, _, err = run_cli(["--db", db, "graph", "p", "--tau", tau], capsys)
    assert_one_line_error(rc, err, "tau")


def test_voc_split_file_not_utf8(project, capsys, tmp_path):
    db, _ = project
    voc = make_voc(tmp_path / "VOC2007", {"000001": [("cat", 0)]})
    (voc / "ImageSets" / "Main" / "test.txt").write_bytes(b"00000\xff1\n")
    rc, _, err = run_cli(["--db", db, *CLIP, "evaluate", "p", voc], capsys)
    assert_one_line_error(rc, err, "UTF-8")


@pytest.mark.parametrize("data", [
    {"images": [{"id": 1}], "categories": [{"id": 1, "name": "cat"}]},                    # no file_name
    {"images": [{"id": "x", "file_name": "a.jpg"}], "categories": []},                    # id as text
    {"images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 1, "name": "cat"}],
     "annotations": [{"image_id": 1, "category_id": [1]}]},                                # mistyped ann
    {"images": {"id": 1}, "categories": []},                                               # images not a list
    {"categories": [{"id": 1, "name": "cat"}]},                                            # no images
    [1, 2, 3],                                                                            # not an object
    {"images": [5], "categories": []},                                                    # image not an object
])
def test_coco_json_missing_or_mistyped_keys(project, capsys, tmp_path, data):
    db, _ = project
    js = tmp_path / "instances.json"
    js.write_text(json.dumps(data))
    rc, _, err = run_cli(["--db", db, *CLIP, "evaluate", "p", js], capsys)
    assert_one_line_error(rc, err, "COCO")


def test_csv_field_over_the_csv_module_limit(project, capsys, tmp_path):
    db, _ = project
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text('filename,labels\n"' + "a" * 140_000 + '",cat\n')
    rc, _, err = run_cli(["--db", db, *CLIP, "evaluate", "p", csv_path], capsys)
    assert_one_line_error(rc, err, "labels.csv")


def test_classifier_with_deeply_nested_metadata(tmp_path, capsys):
    """A classifier file (e.g. arrived in an archive) whose metadata nests 100,000 levels."""
    import torch
    from safetensors.torch import save_file

    from engine import workflow as wf
    from engine.classifier import FORMAT_NAME, FORMAT_VERSION, META_KEY

    db = tmp_path / "s.db"
    assert main(["--db", str(db), "new", "p", "--names", "cat, dog"]) == 0
    store = wf.open_store(db)
    pid = wf.find_project(store, "p")
    header = ('{"format": "%s", "format_version": %d, "categories": ["cat", "dog"], "model_name": '
              '"tiny-rn/random", "lambda2": 0.5, "local_temperature": 0.02, "meta": %s}'
              % (FORMAT_NAME, FORMAT_VERSION, "[" * 100_000 + "]" * 100_000))
    clf = tmp_path / "deep.safetensors"
    save_file({"global_emb": torch.ones(2, 8), "local_emb": torch.ones(2, 8)}, str(clf),
              metadata={META_KEY: header})
    import hashlib

    store.add_classifier(pid, None, str(clf), hashlib.sha256(clf.read_bytes()).hexdigest())
    store.close()
    _img(tmp_path / "imgs" / "a.jpg", 0)
    rc, _, err = run_cli(["--db", db, "--quiet", *CLIP, "predict", "p", tmp_path / "imgs", "-o",
                          tmp_path / "o.jsonl"], capsys)
    assert_one_line_error(rc, err, "deep.safetensors")


def test_argparse_errors_are_one_line_too(capsys, tmp_path):
    rc, _, err = run_cli(["--db", tmp_path / "s.db", "graph", "p", "--tau", "many"], capsys)
    assert_one_line_error(rc, err, "tau")


def test_a_real_process_exits_2_with_one_line(tmp_path):
    """The same through the shell (python -m engine): exit status 2, one line, no traceback."""
    res = subprocess.run([sys.executable, "-m", "engine", "--db", str(tmp_path / "s.db"), "--device", "banana",
                          "new", "p", "--names", "a"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    # 'new' does not use the device, but the option is checked before any command runs
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "banana" in res.stderr, res.stderr
