"""Label readers (VOC, COCO, CSV) and the streaming image loader, on real files made here."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.datasets import (DatasetError, LoaderSettings, VocOptions, image_loader, list_images,
                             name_key, read_coco, read_csv, read_labelled_set, read_voc)

SHARED_COCO = Path("/work/shared/eval/coco_val2017")


def _img(path: Path, seed: int, mode="RGB", size=(40, 30)):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], len(mode)), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path)
    return path


def make_voc(root: Path, objects: dict[str, list[tuple[str, int]]], split="test"):
    """VOC2007 layout: objects = {image_id: [(class, difficult)]}."""
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for k, (iid, objs) in enumerate(objects.items()):
        _img(root / "JPEGImages" / f"{iid}.jpg", k)
        obj_xml = "".join(
            f"<object><name>{c}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>{d}</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax>"
            f"<ymax>9</ymax></bndbox></object>" for c, d in objs)
        (root / "Annotations" / f"{iid}.xml").write_text(
            f"<annotation><folder>VOC2007</folder><filename>{iid}.jpg</filename>"
            f"<size><width>40</width><height>30</height><depth>3</depth></size>{obj_xml}</annotation>")
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(objects) + "\n")
    return root


def make_coco(root: Path, labels: dict[str, list[str]], categories: list[str]):
    """COCO instances JSON at root/annotations/instances_val.json, images in root/val/."""
    cats = [{"id": 10 + i, "name": c, "supercategory": "x"} for i, c in enumerate(categories)]
    images, anns = [], []
    for k, (fname, labs) in enumerate(labels.items()):
        _img(root / "val" / fname, 100 + k)
        images.append({"id": 1000 + k, "file_name": fname, "width": 40, "height": 30})
        for lab in labs:
            for _ in range(2):  # two boxes of the same class: still one positive
                anns.append({"id": len(anns) + 1, "image_id": 1000 + k,
                             "category_id": 10 + categories.index(lab), "bbox": [1, 1, 5, 5],
                             "area": 25, "iscrowd": 0})
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    path = root / "annotations" / "instances_val.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def test_voc_reader_labels_split_and_difficult(tmp_path):
    root = make_voc(tmp_path / "VOC2007", {
        "000001": [("dog", 0), ("person", 0), ("dog", 0)],
        "000002": [("diningtable", 0), ("chair", 1)],
        "000003": [("cat", 0)],
    })
    (root / "ImageSets" / "Main" / "val.txt").write_text("000003\n")
    ds = read_voc(root, categories=["person", "dog", "dining table", "chair", "cat"],
                  options=VocOptions(include_difficult=True))
    assert [p.name for p in ds.images] == ["000001.jpg", "000002.jpg", "000003.jpg"]
    assert ds.targets.tolist() == [[1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]]
    strict = read_voc(root, categories=["chair"], options=VocOptions(include_difficult=False))
    assert strict.targets[:, 0].tolist() == [0, 0, 0]
    # the default is the standard protocol (and the authors'): difficult objects are not positives
    assert read_voc(root, categories=["chair"]).targets[:, 0].tolist() == [0, 0, 0]
    val = read_voc(root, options=VocOptions(split="val"))
    assert val.categories == ["cat"] and len(val) == 1
    # the dispatcher recognises a VOCdevkit parent folder too
    assert len(read_labelled_set(tmp_path)) == 3


def test_coco_reader_dedups_boxes_and_finds_images(tmp_path):
    path = make_coco(tmp_path, {"a.jpg": ["cat", "dog"], "b.jpg": [], "c.jpg": ["person"]},
                     ["person", "cat", "dog"])
    ds = read_coco(path, categories=["dog", "cat", "person", "kite"])
    assert all(p.exists() for p in ds.images)
    assert ds.targets.tolist() == [[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]]
    assert read_labelled_set(path).categories == ["person", "cat", "dog"]


def test_csv_reader_forms_and_aliases(tmp_path):
    for k in range(3):
        _img(tmp_path / "images" / f"{k}.png", k)
    (tmp_path / "labels.csv").write_text('filename,labels\n0.png,"cat;Dog"\n1.png,kitty\n2.png,\n')
    ds = read_csv(tmp_path / "labels.csv", categories=["cat", "dog"], aliases={"cat": ["kitty"]})
    assert ds.images[0] == tmp_path / "images" / "0.png"
    assert ds.targets.tolist() == [[1, 1], [1, 0], [0, 0]]
    (tmp_path / "labels.tsv").write_text("0.png\tcat,dog\n1.png\tbird\n")
    ds2 = read_labelled_set(tmp_path / "labels.tsv", categories=["cat", "dog"])
    assert ds2.targets.tolist() == [[1, 1], [0, 0]] and ds2.unmatched == ["bird"]
    (tmp_path / "empty.csv").write_text("filename,labels\n")
    with pytest.raises(DatasetError, match="no rows"):
        read_csv(tmp_path / "empty.csv")
    with pytest.raises(DatasetError, match="does not exist"):
        read_labelled_set(tmp_path / "missing.json")


@pytest.mark.skipif(not SHARED_COCO.exists(), reason="shared COCO sample not present")
def test_real_coco_annotation_files_agree_with_labels_tsv():
    """The real COCO instances JSONs read into the labels the shared labels.tsv lists."""
    truth = {}
    for line in (SHARED_COCO / "labels.tsv").read_text().splitlines():
        f, _, labs = line.partition("\t")
        truth[f] = set(x for x in labs.split(",") if x)
    classes = (SHARED_COCO / "classes.txt").read_text().split("\n")
    classes = [c for c in classes if c]
    checked = 0
    for js in sorted((SHARED_COCO / "source_annotations").glob("*.json")):
        ds = read_coco(js, image_dir=SHARED_COCO / "images", categories=classes)
        assert len(classes) == 80 and not ds.unmatched
        for img, row in zip(ds.images, ds.targets):
            if img.name in truth:
                assert {classes[i] for i in np.flatnonzero(row)} == truth[img.name]
                checked += 1
    assert checked > 0


def test_list_images_recursive_and_loader_reports_bad_files(tmp_path):
    import torch

    good = [_img(tmp_path / "a" / "x.jpg", 1), _img(tmp_path / "a" / "b" / "y.png", 2, "RGBA"),
            _img(tmp_path / "z.bmp", 3)]
    (tmp_path / "a" / "zero.jpg").write_bytes(b"")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "notes.txt").write_text("hello")
    files = list_images([tmp_path])
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        "a/b/y.png", "a/x.jpg", "a/zero.jpg", "bad.jpg", "z.bmp"]

    def preprocess(img):
        return torch.from_numpy(np.asarray(img.resize((8, 8)), dtype=np.float32)).permute(2, 0, 1)

    for workers in (0, 2):
        seen, bad = [], {}
        for batch in image_loader(files, preprocess, LoaderSettings(batch_size=2, workers=workers)):
            if batch.pixels is not None:
                assert batch.pixels.shape == (len(batch.indices), 3, 8, 8)
            seen += batch.indices
            bad.update(batch.failures)
        assert sorted(files[i] for i in seen) == sorted(good)
        assert set(files[i].name for i in bad) == {"zero.jpg", "bad.jpg"}
        assert "0 bytes" in bad[files.index(tmp_path / "a" / "zero.jpg")]


def test_alpha_composited_on_white(tmp_path):
    from engine.datasets import load_rgb

    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert load_rgb(tmp_path / "clear.png").getpixel((0, 0)) == (255, 255, 255)


def test_name_key():
    assert name_key("Dining Table") == name_key("diningtable") == name_key("dining-table")
