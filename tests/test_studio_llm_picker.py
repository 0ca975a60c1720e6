"""The Knowledge tab's LLM picker (studio.llm_picker) and its suggested synonyms, through the
handlers: a Hub model downloaded by huggingface_hub's real code from a local server on 127.0.0.1
that answers the way the Hub does (tests/hub_server.py), with its progress; the cache used the
second time; offline and not cached, one sentence next to the picker; a shared studio that
downloads only the curated models; and the LLM's synonyms ticked to accept them."""
from __future__ import annotations

from pathlib import Path

import pytest

from engine import workflow as wf
from engine.hub_models import CURATED
from studio import knowledge, llm_picker, projects
from studio.common import CancellableJob
from studio.context import Ctx, StudioSettings
from tests.hub_server import FILE, REPO, FakeHub, online, tiny_gguf


@pytest.fixture
def ctx(tmp_path):
    return Ctx.open(StudioSettings(db_path=str(tmp_path / "s.db"), clip_model="tiny-rn", clip_pretrained=None))


def shared(ctx, **over) -> Ctx:
    return Ctx(settings=StudioSettings(db_path=ctx.settings.db_path, data_dir=ctx.settings.data_dir,
                                       private_projects=True, **over), store=ctx.store)


def test_any_file_downloads_with_progress_then_comes_from_the_cache(ctx, monkeypatch, tmp_path):
    data = tiny_gguf(12_000_000)  # more than huggingface_hub's 10 MiB chunk: a value between 0 and the end
    h = FakeHub({(REPO, FILE): data})
    online(monkeypatch, h, tmp_path / "hub-cache")
    try:
        out = list(llm_picker.download(ctx, llm_picker.ANY_FILE, f" {REPO}/{FILE} "))
        assert out[0][0].startswith("Downloading") and out[-1][0].startswith("✅"), out
        assert "Downloaded" in out[-1][0] and out[-1][1:] == (len(data), len(data))
        done = [d for _, d, _ in out]
        assert len(set(done)) > 1 and done == sorted(done) and done[-1] == len(data), done
        assert len(h.gets()) == 1
        again = list(llm_picker.download(ctx, llm_picker.ANY_FILE, f"{REPO}/{FILE}"))
        assert len(again) == 1 and "is in the Hub cache" in again[0][0] and again[0][1] == len(data)
        assert len(h.gets()) == 1, "the cached file is not downloaded again"
        spec = knowledge.llm_spec(ctx, "hub", "", "", "", "", llm_picker.ANY_FILE, f"{REPO}/{FILE}")
        assert (spec.kind, spec.repo, spec.filename) == ("hub", REPO, FILE)
    finally:
        h.close()


def test_a_curated_model_is_listed_downloaded_and_then_marked(ctx, monkeypatch, tmp_path):
    model = CURATED["qwen2.5-1.5b"]
    data = tiny_gguf()
    h = FakeHub({(model.repo, model.filename): data})
    online(monkeypatch, h, tmp_path / "hub-cache")
    try:
        choices = llm_picker.hub_choices(ctx)
        assert [v for _, v in choices] == list(CURATED) + [llm_picker.ANY_FILE]
        label = dict((v, k) for k, v in choices)["qwen2.5-1.5b"]
        assert "1.1 GB" in label and "instruct" in label and "downloaded" not in label
        out = list(llm_picker.download(ctx, "qwen2.5-1.5b", "ignored"))
        assert out[-1][0].startswith("✅") and out[-1][1] == len(data) and len(out) >= 2
        assert "downloaded" in dict((v, k) for k, v in llm_picker.hub_choices(ctx))["qwen2.5-1.5b"]
        spec = knowledge.llm_spec(ctx, "hub", "smollm2", "", "", "", "qwen2.5-1.5b", "")
        assert (spec.kind, spec.name, spec.repo) == ("hub", "qwen2.5-1.5b", None)
    finally:
        h.close()


def test_offline_and_not_cached_is_said_next_to_the_picker(ctx, hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = list(llm_picker.download(ctx, llm_picker.ANY_FILE, f"{REPO}/{FILE}"))
    assert len(out) == 2 and out[-1][0].startswith("⚠️"), out
    assert "not in the Hub cache and this machine is offline" in out[-1][0]
    assert hub.log == [], "offline asks the server nothing"
    out = list(llm_picker.download(ctx, llm_picker.ANY_FILE, "no slashes"))
    assert out == [(out[0][0], 0, 0)] and "OWNER/REPO/FILE.gguf" in out[0][0]


def test_download_changes_nothing_but_the_message_and_the_bar(ctx):
    """The Download event's outputs are the picker's message and progress bar only: whatever was
    typed anywhere else on the page stays."""
    from studio.layout import build_app

    demo = build_app(ctx=ctx)
    ids = {getattr(b, "elem_id", None): b._id for b in demo.blocks.values()}
    deps = [d for d in demo.config["dependencies"] if ids["hub-download"] in [t[0] for t in d["targets"]]]
    assert len(deps) == 1 and sorted(deps[0]["outputs"]) == sorted([ids["hub-msg"], ids["hub-progress"]])
    assert deps[0]["inputs"] == [ids["hub-model"], ids["hub-file"]]


def test_a_shared_studio_downloads_only_curated_models_unless_the_operator_allows(ctx, hub):
    strict = shared(ctx)
    assert llm_picker.ANY_FILE not in [v for _, v in llm_picker.hub_choices(strict)]
    out = list(llm_picker.download(strict, llm_picker.ANY_FILE, f"{REPO}/{FILE}"))
    assert len(out) == 1 and "only the curated Hub models" in out[0][0] and hub.log == []
    with pytest.raises(ValueError, match="only the curated"):
        strict.settings.llm_spec(kind="hub", name=f"{REPO}/{FILE}")
    assert strict.settings.llm_spec(kind="hub", name="qwen2.5-3b").name == "qwen2.5-3b"
    allowed = shared(ctx, hub_any_file=True)
    out = list(llm_picker.download(allowed, llm_picker.ANY_FILE, f"{REPO}/{FILE}"))
    assert out[-1][0].startswith("✅") and out[-1][1] == len(hub.data)
    env = {"IFS_PRIVATE_PROJECTS": "1"}
    assert StudioSettings.from_env(env).hub_any_file is False
    assert StudioSettings.from_env({**env, "IFS_HUB_ANY_FILE": "1"}).hub_any_file is True
    assert StudioSettings.from_env({}).hub_any_file is True


def test_downloads_turned_off_leave_only_cached_models(ctx, monkeypatch, tmp_path):
    model = CURATED["qwen2.5-1.5b"]
    h = FakeHub({(model.repo, model.filename): tiny_gguf(), (REPO, FILE): tiny_gguf()})
    online(monkeypatch, h, tmp_path / "hub-cache")
    try:
        assert list(llm_picker.download(ctx, llm_picker.ANY_FILE, f"{REPO}/{FILE}"))[-1][0].startswith("✅")
        fetched = len(h.gets())
        closed = shared(ctx, hub_any_file=True, hub_downloads=False)
        out = list(llm_picker.download(closed, "qwen2.5-1.5b", ""))
        assert len(out) == 1 and out[0][0].startswith("⚠️") and "does not download" in out[0][0], out
        with pytest.raises(ValueError, match="does not download"):
            closed.settings.llm_spec(kind="hub", name="qwen2.5-1.5b")
        assert len(h.gets()) == fetched, "nothing was fetched"
        cached = list(llm_picker.download(closed, llm_picker.ANY_FILE, f"{REPO}/{FILE}"))
        assert len(cached) == 1 and "is in the Hub cache" in cached[0][0]
        assert closed.settings.llm_spec(kind="hub", name=f"{REPO}/{FILE}").kind == "hub"
    finally:
        h.close()
    assert StudioSettings.from_env({"IFS_HUB_DOWNLOADS": "0"}).hub_downloads is False
    assert StudioSettings.from_env({}).hub_downloads is True


def test_suggested_synonyms_are_ticked_to_accept(ctx):
    state, msg = projects.create(ctx, {}, "own", "yard", "forklift, pallet")
    assert "Created" in msg, msg
    pid = state["project"]
    wf.store_knowledge(ctx.store, pid, {"synonyms": {"forklift": ["lift truck", "crane", "truck"]},
                                        "suggested_synonyms": {"forklift": ["crane", "truck"]}})
    keep, _, syn, _, _, suggested = knowledge.details_view(ctx, state, "forklift")
    assert syn == "lift truck" and suggested["choices"] == ["crane", "truck"] and suggested["value"] == []
    assert knowledge.refresh(ctx, state, None)[-1]["choices"] == ["crane", "truck"]
    assert "not" in knowledge.SUGGESTIONS_NOTE and "accepted" in knowledge.SUGGESTIONS_NOTE
    msg = knowledge.save_category(ctx, state, "forklift", "", keep["value"], syn, "", "", ["truck"])
    assert "Saved" in msg
    _, _, syn2, _, _, suggested2 = knowledge.details_view(ctx, state, "forklift")
    assert syn2 == "lift truck, truck" and suggested2["choices"] == ["crane"]
    assert wf.category_details(ctx.store, pid, "forklift")["synonyms"] == ["lift truck", "truck"]
    assert knowledge.synonym_suggestions(ctx, state, "pallet")["choices"] == []


def test_the_picker_starts_on_the_configured_hub_model(ctx):
    import gradio as gr

    for name, picked, typed in (("qwen2.5-3b", "qwen2.5-3b", ""),
                                (f"{REPO}/{FILE}", llm_picker.ANY_FILE, f"{REPO}/{FILE}")):
        c = Ctx(settings=StudioSettings(db_path=ctx.settings.db_path, llm_kind="hub", llm_name=name), store=ctx.store)
        with gr.Blocks():
            w = llm_picker.build(c)
        assert (w["hub_model"].value, w["hub_file"].value) == (picked, typed)
        spec = llm_picker.llm_spec(c, "hub", "", "", "", "", w["hub_model"].value, w["hub_file"].value)
        assert spec == c.settings.llm_spec(), "the picker's first choice is the configured model"


def hub_generation(ctx, state, choice: str):
    counts, _, _ = knowledge.settings_fields()
    fields = {**{n: 1 for n, _ in counts}, "steps": ["attributes"]}
    llm = ("hub", "", "", "", "", llm_picker.ANY_FILE, choice)
    return list(knowledge.run_generation(ctx, CancellableJob(ctx, "knowledge"), state, llm, fields))


def test_generating_with_a_hub_model_downloads_it_first(ctx, monkeypatch, tmp_path):
    """Generate with a Hub model that is not cached: the file is downloaded first (its progress
    next to the picker), then the real model (the bundled SmolLM2's GGUF, served by the local Hub)
    answers; the second time the cached file is used. Asserts on structure, not on the words."""
    from engine.bundled_models import bundled_model_path

    repo, fname = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", "smollm2-135m-instruct-q8_0.gguf"
    data = Path(bundled_model_path("smollm2")).read_bytes()
    h = FakeHub({(repo, fname): data})
    online(monkeypatch, h, tmp_path / "hub-cache")
    try:
        state, _ = projects.create(ctx, {}, "own", "hub run", "cat")
        out = hub_generation(ctx, state, f"{repo}/{fname}")
        hub_msgs = [o[3] for o in out if isinstance(o[3], str)]
        assert hub_msgs[0].startswith("Downloading") and hub_msgs[-1].startswith("✅ Downloaded"), hub_msgs
        assert out[-1][0].startswith("✅") and "Knowledge ready" in out[-1][0], out[-1]
        assert ctx.store.list_answers(state["project"]) and len(h.gets()) == 1
        again = hub_generation(ctx, state, f"{repo}/{fname}")
        assert "is in the Hub cache" in again[0][3] and "Knowledge ready" in again[-1][0]
        assert len(h.gets()) == 1, "the cached file is used"
    finally:
        h.close()


def test_generating_offline_with_a_hub_model_not_cached_asks_nothing(ctx, hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    state, _ = projects.create(ctx, {}, "own", "offline run", "cat")
    out = hub_generation(ctx, state, f"{REPO}/{FILE}")
    assert "next to the picker" in out[-1][0] and "this machine is offline" in out[-2][3]
    assert all(o[2] == "" for o in out), "the count messages stay empty"
    assert ctx.store.list_answers(state["project"]) == [] and hub.log == []


def test_a_download_can_be_cancelled_and_leaves_no_partial_file(ctx, monkeypatch, tmp_path):
    """A long download stops at the next chunk once cancelled (the engine, and the picker's
    handler with its cancel flag set), nothing half-written stays in the cache, and a later
    download fetches the whole file."""
    import threading

    data = tiny_gguf(25_000_000)  # three of huggingface_hub's 10 MiB chunks
    h = FakeHub({(REPO, FILE): data})
    cache = tmp_path / "hub-cache"
    online(monkeypatch, h, cache)
    try:
        seen = []
        with pytest.raises(wf.HubModelError, match="cancelled"):
            wf.download_hub_model(f"{REPO}/{FILE}", on_bytes=lambda d, t: seen.append(d),
                                  should_stop=lambda: seen[-1] > 0)
        assert 0 < max(seen) < len(data)
        assert not [p for p in cache.rglob("*") if p.is_file() and p.stat().st_size >= 10_000_000]
        assert not wf.hub_model(f"{REPO}/{FILE}").cached
        cancel = threading.Event()
        cancel.set()
        out = list(llm_picker.download(ctx, llm_picker.ANY_FILE, f"{REPO}/{FILE}", cancel))
        assert out[-1][0].startswith("⚠️") and "cancelled" in out[-1][0] and out[-1][1] < len(data), out[-1]
        done = list(llm_picker.download(ctx, llm_picker.ANY_FILE, f"{REPO}/{FILE}"))
        assert done[-1][0].startswith("✅") and done[-1][1] == len(data)
        assert Path(wf.download_hub_model(f"{REPO}/{FILE}")).read_bytes() == data
    finally:
        h.close()
