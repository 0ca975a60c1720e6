"""The studio as people expect it (issue 13), one test per thing that stood in a person's way,
through the handlers with the real store, the tiny random CLIP and real images: names shown as
text, the Classify gallery with calibrated confidences, Evaluate from uploads, the weights panel,
checked number boxes, messages cleared with the project, per-project run numbers, a confirmed
sentence delete, the graph's neighbourhood view."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from studio import classify, evaluate, export, graph, knowledge, projects, sentences, train
from studio.common import md, weights_panel_view
from studio.context import Ctx, StudioSettings
from tests.test_studio_handlers import write_corpus

EVIL = "<b>bold cat</b>"
IMG = "<img src=x>"


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("studio-ux")
    return Ctx.open(StudioSettings(db_path=str(tmp / "s.db"), clip_model="tiny-rn", clip_pretrained=None))


def trained_project(ctx, name, vocab="cat\ndog, sofa"):
    state, msg = projects.create(ctx, {}, "own", name, vocab)
    assert "Created" in msg, msg
    write_corpus(ctx, state["project"])
    steps = list(train.run(ctx, state, train.make_config({"epochs": 1, "batch_size": 16}, {}, "hierarchical"),
                           threading.Event()))
    assert "Trained" in steps[-1][0], steps[-1][0]
    return state, steps[-1][0]


@pytest.fixture(scope="module")
def pets(ctx):
    return trained_project(ctx, "pets")


def images(folder, n=6):
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"img{i}.png"
        Image.new("RGB", (48, 48), ((40 * i) % 255, 200 - 20 * i, 90)).save(p)
        out.append(p)
    return out


def labels_csv(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("filename,labels\n" + "".join(f"{a},{b}\n" for a, b in rows))
    return path


def test_names_are_shown_as_text_everywhere(ctx, tmp_path):
    state, msg = projects.create(ctx, {}, "own", f"my {EVIL}", f"{EVIL}\n{IMG}\nplain")
    assert "&lt;b&gt;bold cat&lt;/b&gt;" in msg and "<b>" not in msg
    summary = projects.summary(ctx, state)
    assert "&lt;b&gt;bold cat&lt;/b&gt;" in summary and "&lt;img src=x&gt;" in summary
    assert "<b>" not in summary and "<img" not in summary
    assert "<b>" not in knowledge.save_category(ctx, state, EVIL, "", [], "", "", "")
    assert "<img" not in graph.edit(ctx, state, EVIL, IMG, "add")
    fig, text = graph.draw(ctx, state, 1)
    drawn = [x for t in fig.data if not t.name.startswith("edge:") for x in t.text]
    assert "&lt;b&gt;bold cat&lt;/b&gt;" in drawn and not any("<" in x for x in drawn)
    assert "<b>" not in text and "&lt;b&gt;bold cat&lt;/b&gt;" in text


def test_classify_shows_a_gallery_with_confidences_on_0_1(ctx, pets, tmp_path):
    state, _ = pets
    res, msg = classify.classify(ctx, state, [str(p) for p in images(tmp_path, 2)])
    assert msg.startswith("✅") and "2 images scored" in msg and "no trained classifier" not in msg
    html = classify.results_html(res, 3, compare=False)
    assert html.count('class="ifs-thumb" src="data:image/jpeg;base64,') == 2
    confidences = [float(x.split('"')[1]) for x in html.split("data-confidence=")[1:]]
    assert len(confidences) == 6 and all(0.0 <= c <= 1.0 for c in confidences)
    assert "Not calibrated yet" in res.note and "not a probability" in res.note


def test_evaluate_from_uploads_calibrates_classify(ctx, pets, tmp_path):
    state, _ = pets
    imgs = images(tmp_path / "u", 6)
    csv = labels_csv(tmp_path / "c" / "labels.csv",
                     [(p.name, lab) for p, lab in zip(imgs, ["cat", "dog", "sofa;cat", "dog", "llama", "cat;dog"])])
    out = list(evaluate.evaluate(ctx, state, "", "", threading.Event(), uploads=[str(csv)] + [str(p) for p in imgs]))
    msg, rows, fig = out[-1]
    assert "6 images evaluated (labels.csv)" in msg, msg
    assert "match no category" in msg and "llama" in msg
    assert rows[0][0] == "mAP" and fig is not None
    assert "now calibrated" in msg
    # Classify now shows probabilities, with per-category thresholds, and says so
    res, _ = classify.classify(ctx, state, [str(imgs[0])])
    assert "calibrated on the labelled set labels.csv (6 images" in res.note
    chips = res.cards[0]["chips"]["tuned"]
    assert len(chips) == 3 and all(0 <= c <= 1 for _, c, _ in chips)
    assert all(on == (c >= 0.5 - 1e-9) for _, c, on in chips), chips  # bold exactly over the threshold


def test_evaluate_says_where_it_looked(ctx, pets, tmp_path):
    state, _ = pets
    other = images(tmp_path / "other", 1)[0]
    csv = labels_csv(tmp_path / "c" / "labels.csv", [("missing.png", "cat")])
    msg = list(evaluate.evaluate(ctx, state, "", "", threading.Event(), uploads=[str(csv), str(other)]))[-1][0]
    assert msg.startswith("⚠️") and "the 1 uploaded images" in msg and "missing.png" in msg
    msg = list(evaluate.evaluate(ctx, state, str(csv), str(tmp_path / "nowhere"), threading.Event()))[-1][0]
    assert msg.startswith("⚠️") and md(str(tmp_path / "nowhere")) in msg  # shown as text
    msg = list(evaluate.evaluate(ctx, state, "", "", threading.Event(), uploads=None))[-1][0]
    assert msg.startswith("⚠️") and "Upload a labelled set" in msg


def test_weights_panel_shows_when_weights_are_missing_and_takes_a_file(ctx, pets, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = Ctx(settings=StudioSettings(db_path=ctx.settings.db_path, data_dir=str(tmp_path / "data"),
                                          clip_model="tiny-rn", clip_pretrained=None,
                                          clip_checkpoint=str(tmp_path / "gone.pt")), store=ctx.store)
    panel, text, download = weights_panel_view(missing)
    assert panel["visible"] is True and "gone.pt" in text and "Upload the weights file" in text
    assert "BackboneSpec" not in text and "checkpoint setting" not in text and not download["visible"]
    from studio.common import use_weights

    assert use_weights(missing, None, "").startswith("⚠️")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not weights")
    assert "does not hold weights" in use_weights(missing, str(bad), "")
    from engine.clip_backbone import BackboneSpec, load_backbone

    good = tmp_path / "upload" / "tiny.pt"
    good.parent.mkdir()
    torch.save(load_backbone(BackboneSpec(model="tiny-rn", pretrained=None)).model.state_dict(), good)
    assert "Using the weights file tiny.pt" in use_weights(missing, str(good), "")
    assert missing.settings.clip_checkpoint.endswith("tiny.pt")
    assert weights_panel_view(missing)[0]["visible"] is False


def test_number_boxes_are_checked(ctx):
    problems = train.settings_problems({"epochs": 0, "batch_size": None, "lr": 0.002}, {"shared": 16})
    assert any(p.startswith("epochs: give a whole number of at least 1") for p in problems)
    assert any(p.startswith("batch size: the box is empty") for p in problems)
    assert len(problems) == 2
    assert knowledge.settings_problems({"n_attributes": 0, "attributes_per_category": None}) == [
        "n attributes: give a whole number of at least 1 (not 0)."]
    with pytest.raises(ValueError, match="n attributes"):
        knowledge.make_settings({"n_attributes": 0})


def test_messages_and_results_are_cleared_when_the_project_changes(ctx, pets):
    state, _ = pets
    k = knowledge.refresh(ctx, state, None)
    assert k[7:10] == ("", "", "")  # run, category and count messages
    assert classify.refresh(ctx, state, None) == (None, "", "", "", None, None)
    assert evaluate.refresh(ctx, state, None)[:3] == ("", "", [])
    assert export.refresh(ctx, state, None) == (None, "", "")
    g = graph.refresh(ctx, state, {"tau": SimpleNamespace(value=1)})
    assert g[-1] == ""


def test_run_numbers_are_per_project_and_the_classifier_in_use_is_named(ctx, pets):
    first, _ = pets
    second, msg = trained_project(ctx, "second project")
    assert "run 1 of this project" in msg
    runs = train.past_runs(ctx, second)
    assert [r[0] for r in runs] == [1] and runs[0][-1] == "yes"
    assert "run 1" in train.active_text(ctx, second)
    assert train.run_curve(ctx, second, 1).data
    _, path_msg = export.export(ctx, second)[0], export.export(ctx, second)[2]
    assert "run 1 of this project" in path_msg


def test_sentence_delete_asks_first_and_clears_the_editor(ctx, pets):
    state, _ = pets
    rows, info = sentences.table(ctx, state)
    assert "enabled sentences only" in info and "counts once for each" in info
    sid = rows[0][0]
    msg, row, text = sentences.ask_delete(sid)
    assert row["visible"] is True and f"Delete sentence {sid}?" in text
    assert sid in {r[0] for r in sentences.table(ctx, state)[0]}  # nothing deleted yet
    out = sentences.confirm_delete(ctx, state, sid)
    assert "Deleted" in out[0] and out[1:5] == (None, "", "", True) and out[5]["visible"] is False
    assert sid not in {r[0] for r in sentences.table(ctx, state)[0]}
    assert sentences.save(ctx, state, None, "", "", True).startswith("⚠️")  # nothing left to save
    assert sentences.ask_delete(None)[0].startswith("⚠️")


def test_sentence_filters_follow_new_sources(ctx, pets):
    state, _ = pets
    cats, sources = sentences.filter_updates(ctx, state, "dog", "scene")
    assert cats["value"] == "dog" and "scene" in sources["choices"] and sources["value"] == "scene"
    ctx.store.add_sentences(state["project"], [dict(text="a dog naps", labels=["dog"], source="fine",
                                                    category="dog")])
    _, sources = sentences.filter_updates(ctx, state, "", "")
    assert "fine" in sources["choices"]


def test_the_prompt_in_use_is_shown(ctx, pets):
    state, _ = pets
    assert "a photo of a dog." in knowledge.prompt_in_use(ctx, state, "dog")
    assert "default template" in knowledge.prompt_in_use(ctx, state, "dog")


def test_graph_neighbourhood_of_one_category(ctx, pets):
    state, _ = pets
    fig, text = graph.draw(ctx, state, 1, focus="sofa")
    assert "cliques with sofa: 1" in text
    nodes = {x: (t.x[i], t.y[i]) for t in fig.data if not t.name.startswith("edge:") for i, x in enumerate(t.text)}
    assert nodes["sofa"] == (0.0, 0.0)
