"""Every studio action through its handler, without a browser: real SQLite store, the tiny random
CLIP, and the knowledge pipeline on recorded real answers of the bundled LLM (tests/llm_replay.py:
what a sampled model writes differs between machines, the recording does not)."""
from __future__ import annotations

import threading

import pytest
from PIL import Image

from studio import classify, evaluate, export, graph, knowledge, projects, sentences, train
from studio.context import Ctx, StudioSettings
from tests.llm_replay import RECORDING

VOCAB = "cat\ndog, sofa"


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("studio-handlers")
    return Ctx.open(StudioSettings(db_path=str(tmp / "s.db"), clip_model="tiny-rn", clip_pretrained=None,
                                   llm_kind="replay", llm_name="smollm2", llm_replay=str(RECORDING)))


def small_settings(steps=None, **over):
    counts, limits, _ = knowledge.settings_fields()
    values = {n: 1 for n, _ in counts}
    values.update(over)
    if steps is not None:
        values["steps"] = steps
    return knowledge.make_settings(values)


SCENES = ["a {a} rests near a {b} in the living room", "the {a} and the {b} share a sunny corner",
          "a photo of a {a} beside a {b}", "a fluffy {a} on its own", "a close view of a {a}"]


def write_corpus(ctx, pid):
    """A small labelled corpus through the real store (the knowledge handler's LLM run is tested
    on its own below: the bundled model is slow on a loaded 2-core machine)."""
    from engine import workflow as wf

    names = ["cat", "dog", "sofa"]
    rows = []
    for a in names:
        for b in names:
            for t in SCENES:
                if a != b or "{b}" not in t:
                    text = t.format(a=a, b=b)
                    rows.append(dict(text=text, labels=sorted({a, b} if "{b}" in t else {a}),
                                     source="coarse" if "{b}" not in t else "scene", category=a))
    ctx.store.replace_sentences(pid, rows)
    ctx.store.replace_attributes(pid, [dict(category=c, text=f"{c} attribute {i}", kept=True)
                                       for c in names for i in range(2)])
    wf.recompute_graph(ctx.store, pid, 1)


@pytest.fixture(scope="module")
def trained(ctx):
    """A 3-category project with a corpus and one trained classifier (shared by the tests below)."""
    state, msg = projects.create(ctx, {}, "own", "pets", VOCAB)
    assert "Created" in msg, msg
    write_corpus(ctx, state["project"])
    cfg = train.make_config({"epochs": 1, "batch_size": 16}, {}, "hierarchical")
    steps = list(train.run(ctx, state, cfg, threading.Event()))
    assert "Trained" in steps[-1][0], steps[-1][0]
    assert steps[-1][1], "loss history"
    return state


def test_generate_knowledge_with_recorded_answers(ctx):
    """Two question steps on one category, answered by the bundled model's recorded answers (the
    browser test's questions about "cat"): every answer is kept in the project's store, attributes
    and sentences are stored, and generating again resumes from there (asks nothing new)."""
    state, _ = projects.create(ctx, {}, "own", "llm", "cat")
    spec = knowledge.llm_spec(ctx, "", "", "", "", "")  # the studio's setting: replay
    assert spec.kind == "replay" and spec.path == str(RECORDING)
    settings = small_settings(["attributes", "coarse_sentences"], n_coarse_sentences=3)
    out = list(knowledge.generate(ctx, state, spec, settings, threading.Event()))
    assert out[0][0].startswith("Starting") and "Knowledge ready" in out[-1][0], out[-1]
    answers = ctx.store.list_answers(state["project"])
    assert answers and all(a.raw.strip() for a in answers)
    first = knowledge.category_details(ctx, state, "cat")
    assert first[0]["value"], "the recording holds an attribute of cat that the parser keeps"
    n_sentences = len(sentences.table(ctx, state)[0])
    assert n_sentences > 0
    again = list(knowledge.generate(ctx, state, spec, settings, threading.Event()))
    assert "Knowledge ready" in again[-1][0]
    assert len(ctx.store.list_answers(state["project"])) == len(answers)
    assert knowledge.category_details(ctx, state, "cat")[1:] == first[1:]
    assert len(sentences.table(ctx, state)[0]) == n_sentences


def test_knowledge_settings_from_widgets():
    s = small_settings(["attributes", "coarse_sentences"], n_attributes=4)
    assert s.steps == ("attributes", "coarse_sentences") and s.n_attributes == 4
    with pytest.raises(ValueError):
        small_settings([])
    counts, limits, templates = knowledge.settings_fields()
    step, question, primer, example = templates[0]
    assert example is None  # the synonyms question has no worked example
    changed = knowledge.make_settings({f"question:{step}": question + " Be brief."})
    assert changed.templates[step].question.endswith("Be brief.")
    # the sentence steps' worked examples: shown, editable, and emptied means none
    shown = {t[0]: t[3] for t in templates if t[3] is not None}
    assert set(shown) == {"coarse_sentences", "fine_sentences", "scene_sentences"} and all(shown.values())
    edited = knowledge.make_settings({"example:coarse_sentences": "1. A red fire truck parks by a hydrant.",
                                      "example:scene_sentences": ""})
    assert edited.templates["coarse_sentences"].example == "1. A red fire truck parks by a hydrant."
    assert edited.templates["scene_sentences"].example == ""
    assert edited.templates["fine_sentences"].example == shown["fine_sentences"]


@pytest.mark.parametrize("vocab, words", [
    ("", "empty"), ("cat, dog, Cat", "Duplicate"), ("cat,, dog", "blank"),
])
def test_bad_vocabulary_is_explained_and_creates_nothing(ctx, vocab, words):
    before = projects.project_choices(ctx, {})
    state, msg = projects.create(ctx, {}, "own", "bad", vocab)
    assert msg.startswith("⚠️") and words in msg
    assert state.get("project") is None
    assert projects.project_choices(ctx, {}) == before


def test_project_create_rename_export_import_delete(ctx, tmp_path):
    state, msg = projects.create(ctx, {}, "own", "lifecycle", "forklift, pallet, helmet")
    assert "3 categories" in msg
    assert "lifecycle" in projects.summary(ctx, state)
    assert "Renamed" in projects.rename(ctx, state, "warehouse")
    assert "⚠️" in projects.rename(ctx, state, "   ")
    assert "warehouse" in projects.summary(ctx, state)
    path, msg = projects.export(ctx, state)
    assert path and "Exported" in msg
    state2, msg = projects.import_(ctx, {}, path)
    assert "Imported" in msg and state2["project"] != state["project"]
    assert "3 categories" in projects.summary(ctx, state2)
    state3, msg = projects.delete(ctx, state2)
    assert "Deleted" in msg and state3["project"] is None
    ids = [pid for _, pid in projects.project_choices(ctx, {})]
    assert state["project"] in ids and state2["project"] not in ids
    _, msg = projects.import_(ctx, {}, None)
    assert msg.startswith("⚠️")


def test_preset_project_has_vocabulary_and_super_categories(ctx):
    state, msg = projects.create(ctx, {}, "voc2007", "", "")
    assert "20 categories" in msg
    _, _, syn, sup, prompt = knowledge.category_details(ctx, state, "aeroplane")
    assert sup == "vehicle" and "airplane" in syn and "aeroplane" in prompt


@pytest.mark.parametrize("key,count", [("voc2007", 20), ("coco", 80)])
def test_preset_knowledge_reaches_training_in_one_click(ctx, key, count):
    from engine.presets import load_preset, load_preset_knowledge

    data = load_preset_knowledge(key)
    assert data is not None, f"assets/presets/{key}_knowledge.json is missing: run assets/make_preset_knowledge.py {key}"
    state, msg = projects.create(ctx, {}, key, f"{key} with knowledge", "")
    assert f"{count} categories" in msg
    assert data["super_of"] == load_preset(key).super_of  # the dataset's own super-categories are kept
    rows, info = sentences.table(ctx, state)
    assert rows and len(sentences.table(ctx, state, include_disabled=True)[0]) <= len(data["sentences"])
    counts = dict(sentences.counts(ctx, state))
    assert set(counts) == set(data["attributes"]) and sum(counts.values()) > 0


def test_no_project_open_gives_messages_not_errors(ctx):
    assert "No project" in projects.summary(ctx, {})
    assert projects.rename(ctx, {}, "x").startswith("⚠️")
    assert list(train.run(ctx, {}, None, threading.Event()))[-1][0].startswith("⚠️")
    res, msg = classify.classify(ctx, {}, ["x.png"])
    assert res is None and msg.startswith("⚠️")
    assert export.export(ctx, {})[2].startswith("⚠️")


def test_train_without_sentences_says_what_to_do(ctx):
    state, _ = projects.create(ctx, {}, "own", "empty", "a, b")
    out = list(train.run(ctx, state, train.make_config({"epochs": 1}, {}, "hierarchical"), threading.Event()))
    assert out[-1][0].startswith("⚠️") and "knowledge" in out[-1][0]


def test_knowledge_cancel(ctx):
    state, _ = projects.create(ctx, {}, "own", "cancelled", "cup, plate")
    spec = knowledge.llm_spec(ctx, "replay", "smollm2", "", "", "")
    stop = threading.Event()
    stop.set()
    out = list(knowledge.generate(ctx, state, spec, small_settings(), stop))
    assert "Cancelled" in out[-1][0]
    assert sentences.table(ctx, state)[0] == []


def test_category_edit_persists(ctx, trained):
    cat = knowledge.category_choices(ctx, trained)[0]
    keep, text, syn, sup, prompt = knowledge.category_details(ctx, trained, cat)
    attrs = keep["choices"]
    assert len(attrs) == 2 and keep["value"] == attrs and text == ""  # listed once, as ticks
    # drop the first, add one (an existing text typed again is not added twice)
    msg = knowledge.save_category(ctx, trained, cat, f"{attrs[1]}\nsoft fur", attrs[1:], "kitty, feline",
                                  "animal", "a photo of a cat.")
    assert "Saved" in msg
    keep2, text2, syn2, sup2, prompt2 = knowledge.category_details(ctx, trained, cat)
    assert keep2["choices"] == attrs + ["soft fur"] and text2 == ""
    assert keep2["value"] == [attrs[1], "soft fur"]
    assert syn2 == "kitty, feline" and sup2 == "animal" and prompt2 == "a photo of a cat."
    edited = {a.text: a.edited for a in ctx.store.list_attributes(trained["project"], cat)}
    assert edited[attrs[0]] and not edited[attrs[1]]


def test_sentences_browse_filter_edit_delete(ctx, trained):
    rows, info = sentences.table(ctx, trained)
    assert rows and "sentences match" in info
    counts = dict(sentences.counts(ctx, trained))
    assert set(counts) == {"cat", "dog", "sofa"}
    cat_rows, _ = sentences.table(ctx, trained, category="dog")
    assert all("dog" in r[2] for r in cat_rows)
    word = rows[0][1].split()[0]
    found, _ = sentences.table(ctx, trained, search=word.upper())
    assert any(r[0] == rows[0][0] for r in found)
    sid = rows[0][0]
    assert "Saved" in sentences.save(ctx, trained, sid, "a cat sleeps on a sofa", "cat, sofa", False)
    after = {r[0]: r for r in sentences.table(ctx, trained)[0]}
    assert after[sid][1] == "a cat sleeps on a sofa" and after[sid][4] is False
    assert sentences.save(ctx, trained, sid, "x", "unicorn", True).startswith("⚠️")
    assert "Deleted" in sentences.delete(ctx, trained, sid)
    assert sid not in {r[0] for r in sentences.table(ctx, trained)[0]}


def test_graph_edits_survive_recompute(ctx, trained):
    fig, text = graph.draw(ctx, trained, 1)
    assert "edges" in text
    assert "Added" in graph.edit(ctx, trained, "cat", "sofa", "add")
    for tau in (50, 1):  # recompute at two thresholds: the user's edge stays
        fig, text = graph.draw(ctx, trained, tau)
        assert any(t.name in ("edge:cat|sofa", "edge:sofa|cat") for t in fig.data), text
    assert "Removed" in graph.edit(ctx, trained, "cat", "sofa", "remove")
    fig, _ = graph.draw(ctx, trained, 1)
    assert not any(t.name in ("edge:cat|sofa", "edge:sofa|cat") for t in fig.data)
    assert graph.edit(ctx, trained, "cat", "cat", "add").startswith("⚠️")
    assert "cleared" in graph.edit(ctx, trained, None, None, "clear")


def test_train_cancel_saves_no_classifier(ctx, trained):
    stop = threading.Event()
    stop.set()
    before = len(train.past_runs(ctx, trained))
    out = list(train.run(ctx, trained, train.make_config({"epochs": 1, "batch_size": 4}, {}, "hierarchical"), stop))
    assert "Cancelled" in out[-1][0], out[-1][0]
    runs = train.past_runs(ctx, trained)
    assert len(runs) == before + 1 and runs[0][1] == "cancelled"


def test_jobs_cancel_only_their_own_session():
    from studio.context import Jobs

    jobs = Jobs()
    a, b = jobs.start("visitor-a", "train"), jobs.start("visitor-b", "train")
    assert jobs.cancel("visitor-a", "train") and a.is_set() and not b.is_set()
    jobs.finish("visitor-a", "train", a)
    assert not jobs.cancel("visitor-a", "train")


def test_past_runs_listed_with_losses(ctx, trained):
    runs = [r for r in train.past_runs(ctx, trained) if r[1] == "done"]
    assert runs and runs[0][3] > 0
    fig = train.run_curve(ctx, trained, runs[0][0])
    assert fig.data and len(fig.data[0].x) == runs[0][3]
    assert "CPU" in train.device_text() or "CUDA" in train.device_text()


def _images(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.jpg"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(a)
    Image.new("RGB", (50, 70), (20, 30, 200)).save(b)
    t = tmp_path / "notes.txt"
    t.write_text("not an image")
    return [str(a), str(b), str(t)]


def test_classify_images_and_a_text_file(ctx, trained, tmp_path):
    res, msg = classify.classify(ctx, trained, _images(tmp_path), k=2)
    assert "2 images scored" in msg and "1 could not be read" in msg
    rows = res.rows
    bad = [r for r in rows if r["status"] != "ok"]
    assert len(bad) == 1 and "not an image" in bad[0]["error"]
    ok_rows = [r for r in rows if r["status"] == "ok"]
    assert len(ok_rows) == 2 and all("tuned_scores" in r and "handcrafted_scores" in r for r in ok_rows)
    html = classify.results_html(res, k=2, compare=False)
    assert html.count('<span class="ifs-chip') == 4 and "notes.txt" in html and "ifs-error" in html
    assert html.count('class="ifs-thumb" src="data:image/jpeg;base64,') == 2
    assert classify.results_html(res, k=2, compare=True).count('<span class="ifs-chip') == 8
    csv_path, json_path = classify.write_downloads(rows, tmp_path / "out")
    lines = open(csv_path).read().splitlines()
    assert len(lines) == 4 and "tuned:cat" in lines[0] and "handcrafted:sofa" in lines[0]


def test_classify_zip_keeps_paths_and_refuses_only_the_escaping_member(ctx, trained, tmp_path):
    import zipfile

    imgs = _images(tmp_path)
    good = tmp_path / "folder.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.write(imgs[0], "pics/a.png")
        zf.write(imgs[1], "pics/b.jpg")
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../../evil.png", b"x")
        zf.write(imgs[0], "sub/kept.png")
    res, msg = classify.classify(ctx, trained, [str(good), str(bad)], k=1)
    assert [r["file"] for r in res.rows if r["status"] == "ok"] == \
        ["folder.zip/pics/a.png", "folder.zip/pics/b.jpg", "bad.zip/sub/kept.png"]
    refused = [r for r in res.rows if r["status"] != "ok"]
    assert len(refused) == 1 and refused[0]["file"] == "bad.zip/../../evil.png"
    assert "refused" in refused[0]["error"]
    # the project has a classifier: no message may say otherwise
    assert "3 images scored, 1 could not be read." in msg and "no trained classifier" not in msg


def test_missing_clip_weights_are_explained(ctx, trained, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = Ctx(settings=StudioSettings(db_path=ctx.settings.db_path, data_dir=ctx.settings.data_dir,
                                          clip_model="RN50", clip_pretrained="openai",
                                          clip_checkpoint=str(tmp_path / "missing.pt")),
                  store=ctx.store)
    from studio.common import weights_panel_view

    panel, text, download = weights_panel_view(offline)
    assert panel["visible"] is True and "missing.pt" in text and not download["visible"]
    res, msg = classify.classify(offline, trained, _images(tmp_path)[:1])
    assert res is None and msg.startswith("⚠️") and "missing.pt" in msg


def test_evaluate_on_a_csv_set(ctx, trained, tmp_path):
    imgs = _images(tmp_path)
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text(f"filename,labels\na.png,cat\nb.jpg,dog sofa\n")
    out = list(evaluate.evaluate(ctx, trained, str(csv_path), str(tmp_path), threading.Event()))
    msg, rows, fig = out[-1]
    assert "2 images evaluated" in msg, msg
    assert rows[0][0] == "mAP" and len(rows[0]) == 3
    assert fig is not None and len(fig.data) == 2
    assert list(evaluate.evaluate(ctx, trained, "", "", threading.Event()))[-1][0].startswith("⚠️")


def test_export_classifier_and_snippet(ctx, trained):
    path, snippet, msg = export.export(ctx, trained)
    assert path.endswith(".safetensors") and "3 categories" in msg
    from engine.classifier import Classifier

    assert Classifier.load(path).categories == ["cat", "dog", "sofa"]
    assert "Classifier.load" in snippet and "tiny-rn" in snippet
    compile(snippet, "snippet", "exec")


def test_private_projects_are_seen_by_their_visitor_only(ctx):
    private = Ctx(settings=StudioSettings(db_path=ctx.settings.db_path, data_dir=ctx.settings.data_dir,
                                          clip_model="tiny-rn", clip_pretrained=None,
                                          private_projects=True), store=ctx.store)
    alice, msg = projects.create(private, {"visitor": "alice"}, "own", "alice's", "apple, pear")
    assert "Created" in msg
    bob = {"visitor": "bob"}
    assert alice["project"] in [pid for _, pid in projects.project_choices(private, alice)]
    assert alice["project"] not in [pid for _, pid in projects.project_choices(private, bob)]
    assert alice["project"] in [pid for _, pid in projects.project_choices(ctx, {})]  # local: all


def test_settings_from_env():
    s = StudioSettings.from_env({"IFS_DB": "/tmp/a.db", "IFS_CLIP_MODEL": "tiny-vit",
                                 "IFS_CLIP_PRETRAINED": "none", "IFS_LLM": "openai",
                                 "IFS_LLM_BASE_URL": "http://127.0.0.1:9/v1", "IFS_PORT": "7999"})
    assert s.db_path == "/tmp/a.db" and s.clip_pretrained is None and s.clip_model == "tiny-vit"
    assert s.llm_kind == "openai" and s.llm_base_url.endswith("/v1") and s.port == 7999
    assert s.backbone_spec().model == "tiny-vit" and not s.private_projects
    assert StudioSettings.from_env({"SPACE_ID": "me/studio", "IFS_DB": "/tmp/a.db"}).private_projects


def test_replay_backend_chosen_from_env():
    s = StudioSettings.from_env({"IFS_DB": "/tmp/a.db", "IFS_LLM": "replay", "IFS_LLM_REPLAY": "/tmp/rec.json",
                                 "IFS_LLM_PATH": "/tmp/model.gguf"})
    spec = s.llm_spec()
    # the name is the live model a recording run asks: the studio's bundled default
    assert (spec.kind, spec.path, spec.name) == ("replay", "/tmp/rec.json", "qwen1.5b")
    assert s.llm_spec(kind="gguf").path == "/tmp/model.gguf"  # the GGUF path stays the GGUF kind's


def test_layout_builds(ctx):
    from studio.layout import build_app

    demo = build_app(ctx=ctx)
    assert demo.ifs_ctx is ctx


def test_a_shared_studio_takes_no_server_path_or_endpoint_from_visitors(ctx):
    """In a shared Space a visitor cannot make the server read a path on its disk (an evaluation
    set, a GGUF file) or call another host (an OpenAI-compatible endpoint)."""
    shared = Ctx(settings=StudioSettings(db_path=ctx.settings.db_path, data_dir=ctx.settings.data_dir,
                                         clip_model="tiny-rn", clip_pretrained=None,
                                         llm_path="/srv/operator.gguf", private_projects=True), store=ctx.store)
    st, _ = projects.create(shared, {"visitor": "mallory"}, "own", "mallory's", "apple, pear")
    out = list(evaluate.evaluate(shared, st, "/etc", None, threading.Event()))
    assert len(out) == 1 and "reads no paths on its server" in out[0][0] and out[0][1] == []
    spec = shared.settings.llm_spec(kind="gguf", path="/etc/passwd")
    assert spec.path == "/srv/operator.gguf"
    spec = shared.settings.llm_spec(kind="openai", base_url="http://169.254.169.254/v1")
    assert spec.base_url is None
    # a local studio keeps both routes
    assert ctx.settings.llm_spec(kind="gguf", path="/tmp/x.gguf").path == "/tmp/x.gguf"
