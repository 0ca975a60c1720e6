"""Project actions: vocabulary parsing, batch prediction (bad files, resume), evaluation metrics."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from engine import workflow as wf
from engine.workflow import evaluate as wf_evaluate
from engine.workflow import predict as wf_predict
from engine.classifier import Classifier
from engine.clip_backbone import BackboneSpec, load_backbone
from engine.datasets import LoaderSettings, load_rgb, read_coco, read_voc
from engine.metrics import evaluate_scores
from tests.test_datasets import _img, make_coco, make_voc

CATS = ["cat", "dog", "person"]


@pytest.fixture(scope="module")
def backbone():
    return load_backbone(BackboneSpec("tiny-rn", pretrained=None), device="cpu")


@pytest.fixture(scope="module")
def classifiers(backbone):
    g = torch.Generator().manual_seed(1)
    tuned = Classifier(CATS, torch.randn(3, backbone.embed_dim, generator=g),
                       torch.randn(3, backbone.embed_dim, generator=g), backbone.name)
    base = Classifier.from_prompts(backbone, CATS, [f"a photo of a {c}." for c in CATS])
    return {"tuned": tuned, "handcrafted": base}


# ---- vocabulary -----------------------------------------------------------------------------------

def test_parse_vocabulary_forms():
    assert wf.parse_vocabulary("forklift, pallet,helmet\n\n spill  \nhard   hat,") == [
        "forklift", "pallet", "helmet", "spill", "hard hat"]


@pytest.mark.parametrize("text,match", [
    ("", "empty"), ("  \n \n", "empty"), ("a,,b", "blank"), (", a", "blank"),
    ("Cat\ndog\ncat", "Duplicate.*cat"), ("x" * 65, "limit is 64"), ("a\x07b", "control"),
])
def test_parse_vocabulary_errors(text, match):
    with pytest.raises(wf.VocabularyError, match=match):
        wf.parse_vocabulary(text)


def test_parse_vocabulary_size_limit():
    s = wf.WorkflowSettings(max_categories=3)
    assert len(wf.parse_vocabulary("a,b,c", s)) == 3
    with pytest.raises(wf.VocabularyError, match="over the limit of 3"):
        wf.parse_vocabulary("a,b,c,d", s)


# ---- predict --------------------------------------------------------------------------------------

def _bad_folder(root):
    good = [_img(root / "a.jpg", 1), _img(root / "sub" / "b.jpg", 2, size=(100, 60)),
            _img(root / "sub" / "deep" / "alpha.png", 3, mode="RGBA")]
    (root / "sub" / "zero.jpg").write_bytes(b"")
    corrupt = root / "corrupt.jpg"
    corrupt.write_bytes((root / "a.jpg").read_bytes()[:40])  # a real JPEG header, cut short
    (root / "readme.txt").write_text("not an image, not listed from a folder")
    return good, [root / "sub" / "zero.jpg", corrupt]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_predict_reports_bad_files_and_scores_good_ones(tmp_path, backbone, classifiers, fmt):
    good, bad = _bad_folder(tmp_path / "imgs")
    out = tmp_path / f"out.{fmt}"
    s = wf.predict_with(backbone, classifiers, CATS, [tmp_path / "imgs"], out, top_k=2,
                        loader=LoaderSettings(batch_size=2, workers=1))
    assert (s.total, s.scored, s.failed, s.skipped) == (5, 3, 2, 0)
    if fmt == "jsonl":
        rows = {r["file"]: r for r in map(json.loads, out.read_text().splitlines())}
        assert set(rows) == {str(p) for p in good + bad}
        for p in bad:
            assert rows[str(p)]["status"] == "error" and rows[str(p)]["error"]
        assert "0 bytes" in rows[str(bad[0])]["error"]
        # the scores written are the classifier's scores of the preprocessed image
        for p in good:
            pix = backbone.preprocess(load_rgb(p)).unsqueeze(0)
            exp = classifiers["tuned"].scores(*backbone.image_features(pix))[0]
            got = [rows[str(p)]["tuned_scores"][c] for c in CATS]
            assert np.allclose(got, exp.numpy(), atol=1e-5)
            assert [c for c, _ in rows[str(p)]["tuned_top_k"]] == [CATS[i] for i in exp.argsort(descending=True)[:2]]
            assert len(rows[str(p)]["handcrafted_top_k"]) == 2
    else:
        import csv

        rows = list(csv.reader(out.open()))
        assert rows[0][:4] == ["file", "status", "error", "tuned_top_k"]
        assert "tuned:cat" in rows[0] and "handcrafted:person" in rows[0]
        status = {r[0]: r[1] for r in rows[1:]}
        assert status == {**{str(p): "ok" for p in good}, **{str(p): "error" for p in bad}}


def test_predict_stop_and_resume_without_rescoring(tmp_path, backbone, classifiers):
    folder = tmp_path / "imgs"
    for i in range(7):
        _img(folder / f"{i}.jpg", i)
    out = tmp_path / "out.jsonl"
    calls = []

    def stop_after_two_batches():
        calls.append(1)
        return len(calls) >= 2

    loader = LoaderSettings(batch_size=2, workers=0)
    first = wf.predict_with(backbone, classifiers, CATS, [folder], out, loader=loader,
                            should_stop=stop_after_two_batches)
    assert first.cancelled and first.scored == 4
    # a torn last line (killed mid-write) is discarded and that file scored again
    with out.open("a") as fh:
        fh.write('{"file": "' + str(folder / "4.jpg") + '", "sta')
    second = wf.predict_with(backbone, classifiers, CATS, [folder], out, loader=loader)
    assert (second.skipped, second.scored, second.cancelled) == (4, 3, False)
    files = [json.loads(l)["file"] for l in out.read_text().splitlines()]
    assert sorted(files) == sorted(str(folder / f"{i}.jpg") for i in range(7))
    third = wf.predict_with(backbone, classifiers, CATS, [folder], out, loader=loader)
    assert (third.skipped, third.scored) == (7, 0)


def test_output_format_checked():
    with pytest.raises(wf.WorkflowError, match="csv or jsonl"):
        wf_predict._output_format(None, "xml")


# ---- evaluation -----------------------------------------------------------------------------------

def _independent_scores(backbone, clf, images):
    """Scores computed without the streaming loader: PIL -> preprocess -> features -> classifier."""
    pix = torch.stack([backbone.preprocess(load_rgb(p)) for p in images])
    with torch.no_grad():
        return clf.scores(*backbone.image_features(pix)).numpy()


def _check_metrics(backbone, classifiers, data):
    scores, kept, failures = wf.score_labelled_set(backbone, classifiers, data,
                                                   LoaderSettings(batch_size=3, workers=1))
    assert kept == list(range(len(data))) and not failures
    for name, clf in classifiers.items():
        ref = _independent_scores(backbone, clf, data.images)
        assert np.allclose(scores[name], ref, atol=1e-5)
        got = wf_evaluate._finite(evaluate_scores(scores[name], data.targets, CATS))
        exp = wf_evaluate._finite(evaluate_scores(ref, data.targets, CATS))
        for key in ("mAP", "CF1", "OF1", "CP", "CR", "OP", "OR"):
            assert got[key] == pytest.approx(exp[key], abs=1e-6)
        assert got["per_category_ap"] == pytest.approx(exp["per_category_ap"], abs=1e-6)


def test_evaluate_voc_and_coco_layouts_match_metrics(tmp_path, backbone, classifiers):
    voc = make_voc(tmp_path / "VOC2007", {
        f"{i:06d}": objs for i, objs in enumerate([
            [("cat", 0)], [("dog", 0), ("person", 0)], [("person", 1)], [("cat", 0), ("dog", 0)],
            [("person", 0)], [("dog", 0)]])})
    _check_metrics(backbone, classifiers, read_voc(voc, categories=CATS))
    coco = make_coco(tmp_path / "coco", {"a.jpg": ["cat"], "b.jpg": ["dog", "person"], "c.jpg": [],
                                         "d.jpg": ["person", "cat"], "e.jpg": ["dog"]}, ["person", "dog", "cat"])
    _check_metrics(backbone, classifiers, read_coco(coco, categories=CATS))
