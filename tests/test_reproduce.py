"""engine.vocabulary (training on a bigger vocabulary) and engine.reproduce end to end with the tiny
CLIP on a small VOC-layout and a small COCO-layout fixture built here."""
import json
import random

import pytest
from PIL import Image

from engine.clip_backbone import BackboneSpec, load_backbone
from engine.presets import load_preset
from engine.prompts import PromptLayout
from engine.reproduce import PAPER, ReproduceError, labelled_test_split, reproduce, training_vocabulary
from engine.train import Corpus, TrainConfig
from engine.vocabulary import Vocabulary, borrow, match_categories

FAST = dict(min_steps=3, epochs=1, layout=PromptLayout(shared=4, coarse=2, fine=1, specific=1))


@pytest.fixture(scope="module")
def rn():
    return load_backbone(BackboneSpec("tiny-rn", pretrained=None), "cpu")


def _photo(path, seed):
    rng = random.Random(seed)
    Image.new("RGB", (48 + seed % 3 * 8, 40), tuple(rng.randrange(256) for _ in range(3))).save(path)


def make_voc(root, objects, test_ids):
    """VOC2007 layout: objects = {image_id: [(class, difficult)]}; test.txt lists ``test_ids``."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for n, (image_id, objs) in enumerate(objects.items()):
        _photo(root / "JPEGImages" / f"{image_id}.jpg", n)
        body = "".join(f"<object><name>{c}</name><difficult>{d}</difficult></object>" for c, d in objs)
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.jpg</filename>{body}</annotation>")
    (root / "ImageSets" / "Main" / "test.txt").write_text("\n".join(test_ids) + "\n")
    return root


def make_coco(root, images):
    """COCO layout: annotations/instances_val2014.json + val2014/; images = {file: [category names]}."""
    (root / "annotations").mkdir(parents=True)
    (root / "val2014").mkdir()
    cats = load_preset("coco").categories
    data = {"categories": [{"id": i + 1, "name": c} for i, c in enumerate(cats)], "images": [], "annotations": []}
    for n, (name, labels) in enumerate(images.items()):
        _photo(root / "val2014" / name, n)
        data["images"].append({"id": n + 1, "file_name": name})
        for lab in labels:
            data["annotations"].append({"id": len(data["annotations"]) + 1, "image_id": n + 1,
                                        "category_id": cats.index(lab) + 1})
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(data))
    return root


def test_borrow_matches_by_name_or_synonym_and_keeps_the_rest():
    own = Vocabulary(["aeroplane", "sofa", "dog"], {"dog": "animal"}, {"dog": "a photo of a dog."},
                     {"aeroplane": ["airplane"], "sofa": ["couch"]}, Corpus(["a dog."], [["dog"]]), "voc")
    other = Vocabulary(["airplane", "couch", "Dog", "pizza"], {"pizza": "food"}, {"pizza": "a photo of pizza."},
                       {"pizza": ["pie"]}, Corpus(["an airplane over a couch.", "a dog.", "pizza and a dog."],
                                                  [["airplane", "couch"], ["Dog"], ["pizza", "Dog"]]), "coco")
    assert match_categories(own, other) == {"airplane": "aeroplane", "couch": "sofa", "Dog": "dog"}
    grown = borrow(own, other)
    assert grown.categories == ["aeroplane", "sofa", "dog", "pizza"]
    assert grown.corpus.texts == ["a dog.", "an airplane over a couch.", "pizza and a dog."]  # repeat dropped
    assert grown.corpus.labels == [["dog"], ["aeroplane", "sofa"], ["pizza", "dog"]]
    assert grown.super_of == {"dog": "animal", "pizza": "food"} and grown.synonyms["pizza"] == ["pie"]
    assert grown.handcrafted() == ["a photo of a aeroplane.", "a photo of a sofa.", "a photo of a dog.",
                                   "a photo of pizza."]
    assert grown.name == "voc + coco"


def test_voc_trains_on_the_coco_vocabulary_too():
    scored, trained = training_vocabulary("voc2007")
    assert scored.categories == load_preset("voc2007").categories
    assert len(trained.categories) == 80 and trained.categories[:20] == scored.categories
    assert "couch" not in trained.categories and "pizza" in trained.categories
    assert len(trained.corpus.texts) > len(scored.corpus.texts)
    alone = training_vocabulary("voc2007", borrow_coco=False)[1]
    assert alone.categories == scored.categories
    with pytest.raises(ReproduceError, match="Unknown dataset"):
        training_vocabulary("nus-wide")


def test_reproduce_voc_end_to_end(rn, tmp_path):
    root = make_voc(tmp_path / "VOCdevkit" / "VOC2007", {
        "000001": [("dog", 0), ("person", 0)],
        "000002": [("chair", 1), ("diningtable", 0)],
        "000003": [("cat", 0)],
        "000004": [("car", 0), ("person", 0)],
        "000005": [("bird", 0)],
    }, ["000001", "000002", "000003", "000004"])
    scored, _ = training_vocabulary("voc2007")
    labelled = labelled_test_split("voc2007", tmp_path / "VOCdevkit", scored)
    assert len(labelled) == 4  # the test split only
    chair = scored.categories.index("chair")
    assert labelled.targets[:, chair].tolist() == [0, 0, 0, 0]  # its only box is difficult
    seen = []
    result = reproduce("voc2007", root, rn, config=TrainConfig(**FAST), on_step=seen.append)
    assert result.steps == len(seen) >= 3 and result.train_categories == 80  # steps grow with the preset
    assert result.num_images == 4 and result.classifier.categories == scored.categories
    for key in ("tuned", "handcrafted"):
        assert 0.0 <= result.results[key]["mAP"] <= 100.0
    table = result.table()
    assert "this run: tuned prompts" in table and "paper: the paper (hierarchical, ChatGLM)" in table
    assert f"{PAPER['the paper (hierarchical, ChatGLM)']['voc2007'][0]:.1f}" in table and "cpu" in table
    with pytest.raises(ReproduceError, match="not a VOC 2007 folder"):
        reproduce("voc2007", tmp_path, rn, config=TrainConfig(**FAST))


def test_reproduce_coco_end_to_end(rn, tmp_path):
    root = make_coco(tmp_path / "coco", {"a.jpg": ["person", "dog"], "b.jpg": ["pizza"], "c.jpg": ["car", "bus"]})
    result = reproduce("coco", root, rn, config=TrainConfig(**FAST))
    assert result.num_images == 3 and result.train_categories == 80 and len(result.classifier.categories) == 80
    assert result.results["tuned"]["num_scored_categories"] == 5
    assert "72.1" in result.table() and "67.7" in result.table()
    with pytest.raises(ReproduceError, match="instances_val2014"):
        reproduce("coco", tmp_path, rn, config=TrainConfig(**FAST))


def test_cli_reproduce_and_train_with_borrowed_sentences(tmp_path, capsys):
    from engine import workflow as wf
    from engine.__main__ import main
    from engine.classifier import Classifier

    root = make_voc(tmp_path / "VOC2007", {"000001": [("dog", 0)], "000002": [("car", 0), ("person", 0)]},
                    ["000001", "000002"])
    db = tmp_path / "db" / "studio.db"
    small = ["--set", "min_steps=3", "--set", "epochs=1", "--set", "layout.shared=4", "--set", "layout.coarse=2",
             "--set", "layout.fine=1", "--set", "layout.specific=1"]
    out_json = tmp_path / "r.json"
    rc = main(["--db", str(db), "--quiet", "--clip-model", "tiny-rn", "reproduce", "voc2007", "--data", str(root),
               "--no-borrow", "--workers", "0", "--json", str(out_json), *small])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "this run: tuned prompts" in printed and "paper: hand-crafted zero-shot" in printed
    saved = json.loads(out_json.read_text())
    assert saved["num_images"] == 2 and saved["steps"] >= 3 and set(saved["results"]) == {"tuned", "handcrafted"}
    assert main(["--db", str(db), "--quiet", "reproduce", "coco", "--data", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err

    # a 3-category project with no sentences of its own trains on the COCO preset's
    assert main(["--db", str(db), "new", "vehicles", "--names", "car, bus, airplane"]) == 0
    assert main(["--db", str(db), "--quiet", "--clip-model", "tiny-rn", "train", "vehicles", "--borrow", "coco",
                 *small]) == 0
    store = wf.open_store(db)
    pid = wf.find_project(store, "vehicles")
    clf = Classifier.load(store.list_classifiers(pid)[-1].path)
    assert clf.categories == ["car", "bus", "airplane"] and clf.meta["trained_categories"] == 80
    assert store.list_runs(pid)[-1].config["borrow_from"] == ["coco"]
    own, grown = wf.training_vocabulary(store, pid, ["coco"])
    assert own.corpus.texts == [] and grown.categories[:3] == ["car", "bus", "airplane"]
    with pytest.raises(wf.WorkflowError, match="No project"):
        wf.training_vocabulary(store, pid, ["nonesuch"])
