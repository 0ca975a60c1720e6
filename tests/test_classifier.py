"""engine.classifier: scoring maths, the safetensors file and its errors, the hand-crafted baseline,
and scoring real photos through the tiny CLIPs."""
import json
import struct

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from engine.classifier import (
    Classifier,
    ClassifierFileError,
    ImageError,
    local_scores,
    score_images,
    top_k,
)
from engine.clip_backbone import BackboneSpec, load_backbone

CATS = ["cat", "dog", "car"]


def _clf(d=8, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    return Classifier(CATS, torch.randn(3, d, generator=g), torch.randn(3, d, generator=g), "tiny-rn/random", **kw)


def test_scores_follow_the_formulas():
    clf = _clf(lambda2=0.65, local_temperature=0.1, fusion="linear")
    g = torch.Generator().manual_seed(1)
    glob, dense = torch.randn(2, 8, generator=g), torch.randn(2, 5, 8, generator=g)
    s = clf.scores(glob, dense)
    soft = _clf(lambda2=0.65, local_temperature=0.1).scores(glob, dense)  # the default: per-image softmax
    s_g, s_l = clf.score_parts(glob, dense)
    assert torch.allclose(soft, 0.65 * torch.softmax(4 * s_g, -1) + 0.35 * torch.softmax(4 * s_l, -1), atol=1e-6)
    gn, dn = F.normalize(glob, dim=-1), F.normalize(dense, dim=-1)
    for b in range(2):
        for i in range(3):
            sg = float(gn[b] @ clf.global_emb[i])
            sims = dn[b] @ clf.local_emb[i]
            sl = float((torch.softmax(sims / 0.1, 0) * sims).sum())
            assert float(s[b, i]) == pytest.approx(0.65 * sg + 0.35 * sl, abs=1e-5)


def test_local_score_mask_ignores_padding():
    emb = F.normalize(torch.randn(3, 8), dim=-1)
    dense = F.normalize(torch.randn(1, 6, 8), dim=-1)
    mask = torch.tensor([[True, True, True, False, False, False]])
    garbage = dense.clone()
    garbage[:, 3:] = F.normalize(torch.randn(1, 3, 8), dim=-1)
    a = local_scores(emb, dense, 0.05, mask)
    b = local_scores(emb, garbage, 0.05, mask)
    c = local_scores(emb, dense[:, :3], 0.05)
    assert torch.allclose(a, b) and torch.allclose(a, c, atol=1e-6)


def test_round_trip(tmp_path):
    clf = _clf(thresholds={"dog": 0.25}, meta={"run_id": 7, "note": "é"})
    path = clf.save(tmp_path / "sub" / "c.safetensors")
    back = Classifier.load(path)
    assert back.categories == CATS and back.model_name == "tiny-rn/random"
    assert torch.equal(back.global_emb, clf.global_emb) and torch.equal(back.local_emb, clf.local_emb)
    assert back.lambda2 == clf.lambda2 and back.local_temperature == clf.local_temperature
    assert back.thresholds == {"dog": 0.25} and back.meta == {"run_id": 7, "note": "é"}
    x = torch.randn(4, 8), torch.randn(4, 3, 8)
    assert torch.equal(back.scores(*x), clf.scores(*x))
    assert not list(tmp_path.glob("sub/*.tmp"))


def test_truncated_file(tmp_path):
    path = _clf().save(tmp_path / "c.safetensors")
    data = path.read_bytes()
    for cut in (len(data) - 10, 40, 5):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(ClassifierFileError, match="not a readable classifier file"):
            Classifier.load(bad)


def test_foreign_files(tmp_path):
    other = tmp_path / "model.safetensors"
    save_file({"weight": torch.randn(3, 3)}, str(other), metadata={"format": "pt"})
    with pytest.raises(ClassifierFileError, match="not an Image-Free Studio classifier"):
        Classifier.load(other)
    text = tmp_path / "notes.txt"
    text.write_text("forklift, pallet, helmet\n" * 20)
    with pytest.raises(ClassifierFileError, match="not a readable classifier file"):
        Classifier.load(text)
    with pytest.raises(ClassifierFileError, match="does not exist"):
        Classifier.load(tmp_path / "missing.safetensors")
    # right tensors, someone else's metadata
    foreign = tmp_path / "foreign.safetensors"
    save_file({"global_emb": torch.randn(3, 8), "local_emb": torch.randn(3, 8)}, str(foreign),
              metadata={"image_free_classifier": json.dumps({"format": "other"})})
    with pytest.raises(ClassifierFileError, match="foreign classifier metadata"):
        Classifier.load(foreign)


def test_wrong_format_version_and_inconsistent_header(tmp_path):
    path = _clf().save(tmp_path / "c.safetensors")
    data = bytearray(path.read_bytes())
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = json.loads(header["__metadata__"]["image_free_classifier"])
    meta["format_version"] = 99
    clf = Classifier.load(path)
    future = tmp_path / "future.safetensors"
    save_file({"global_emb": clf.global_emb, "local_emb": clf.local_emb}, str(future),
              metadata={"image_free_classifier": json.dumps(meta)})
    with pytest.raises(ClassifierFileError, match="format version 99"):
        Classifier.load(future)
    meta["format_version"] = 1
    meta["categories"] = ["only-one"]
    broken = tmp_path / "broken.safetensors"
    save_file({"global_emb": clf.global_emb, "local_emb": clf.local_emb}, str(broken),
              metadata={"image_free_classifier": json.dumps(meta)})
    with pytest.raises(ClassifierFileError, match="inconsistent"):
        Classifier.load(broken)


def test_bad_construction():
    with pytest.raises(ValueError, match="unique"):
        Classifier(["a", "a"], torch.randn(2, 4), torch.randn(2, 4), "m")
    with pytest.raises(ValueError, match=r"\[3, d\]"):
        Classifier(CATS, torch.randn(2, 4), torch.randn(2, 4), "m")
    with pytest.raises(ValueError, match="lambda2"):
        _clf(lambda2=1.5)
    with pytest.raises(ValueError, match="unknown categories"):
        _clf(thresholds={"horse": 0.1})
    with pytest.raises(ValueError, match="dimension"):
        _clf().scores(torch.randn(1, 5), torch.randn(1, 2, 5))


def test_top_k_and_thresholds():
    row = torch.tensor([0.2, 0.9, 0.5])
    assert top_k(row, CATS, 2) == [("dog", pytest.approx(0.9)), ("car", pytest.approx(0.5))]
    assert [c for c, _ in top_k(torch.tensor([0.1, 0.1, 0.1]), CATS, 2)] == ["cat", "dog"]
    clf = _clf(thresholds={"dog": 0.95, "car": 0.4})
    assert [c for c, _ in clf.predict_labels(row, k=2)] == ["car"]        # dog fails its threshold
    assert [c for c, _ in clf.predict_labels(row, k=None)] == ["car"]     # only thresholded categories
    assert [c for c, _ in _clf().predict_labels(row, k=3)] == ["dog", "car", "cat"]


@pytest.fixture(scope="module")
def rn():
    return load_backbone(BackboneSpec("tiny-rn", pretrained=None), "cpu")


def test_from_prompts_matches_open_clip_and_scores_photos(rn):
    prompts = ["a photo of a cat.", "a photo of a dog.", "a photo of a car."]
    clf = Classifier.from_prompts(rn, CATS, prompts)
    expected = F.normalize(rn.encode_text(prompts), dim=-1)
    assert torch.allclose(clf.global_emb, expected, atol=1e-5)
    assert torch.equal(clf.global_emb, clf.local_emb)
    # an ensemble of prompts is averaged, ragged ensembles work
    ens = Classifier.from_prompts(rn, CATS, [["a cat.", "a photo of a cat."], "a dog.", ["a car."]])
    mean_cat = F.normalize(rn.encode_text(["a cat.", "a photo of a cat."]).mean(0), dim=-1)
    assert torch.allclose(ens.global_emb[0], mean_cat, atol=1e-5)
    with pytest.raises(ValueError, match="2 prompts for 3"):
        Classifier.from_prompts(rn, CATS, prompts[:2])

    from skimage import data
    from PIL import Image
    images = [Image.fromarray(data.chelsea()), Image.fromarray(data.coffee()), Image.fromarray(data.camera())]
    s = score_images(rn, clf, images, batch_size=2)
    assert s.shape == (3, 3) and torch.isfinite(s).all()
    glob, dense = rn.image_features(torch.stack([rn.preprocess(images[0].convert("RGB"))]))
    assert torch.allclose(s[0], clf.scores(glob, dense)[0], atol=1e-5)
    with pytest.raises(ImageError, match="Image 0"):
        score_images(rn, clf, ["not an image"])
