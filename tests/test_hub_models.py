"""Models from the Hub (engine.hub_models) through huggingface_hub's real download path, against a
local server on 127.0.0.1 that answers the way the Hub does (tests/hub_server.py; HF_ENDPOINT
points at it; the ``hub`` fixture of tests/conftest.py serves one small GGUF).

Cases: fresh download, cached (no GET again), a connection dropped mid-file that huggingface_hub
resumes with a Range request, offline (HF_HUB_OFFLINE, and no server) with and without a cached
file, a bad repo or file name; and a real GGUF (the bundled SmolLM2) opened through LLMSpec(kind="hub").
"""
from pathlib import Path

import pytest

from engine.hub_models import CURATED, HubModelError, hub_model_path, is_cached, parse_choice, resolve
from engine.llm import LLMError, LLMSpec, Prompt, SamplingSettings, open_llm
from tests.hub_server import FILE, REPO, FakeHub, closed_port_url, online, tiny_gguf


def test_fresh_download_then_cached(hub, tmp_path):
    path = hub_model_path(resolve(REPO, FILE))
    assert path.read_bytes() == hub.data and str(path).startswith(str(tmp_path / "hub-cache"))
    assert path.read_bytes()[:4] == b"GGUF"
    assert len(hub.gets()) == 1 and hub.gets()[0][2] == ""
    again = hub_model_path(resolve(REPO, FILE))
    assert again == path and len(hub.gets()) == 1, "a cached file is not downloaded again"


def test_dropped_connection_resumes_with_a_range_request(monkeypatch, tmp_path):
    # huggingface_hub writes in 10 MiB chunks: a file of 14 MB cut after 12 MB has one chunk on
    # disk when the connection drops, and the retry asks only for the rest.
    data = tiny_gguf(14_000_000)
    h = FakeHub({(REPO, FILE): data})
    online(monkeypatch, h, tmp_path / "hub-cache")
    try:
        h.drop_next_get_at = 12_000_000
        path = hub_model_path(resolve(REPO, FILE))
        assert path.read_bytes() == data
        gets = h.gets()
        assert len(gets) == 2 and gets[0][2] == "", gets
        start = int(gets[1][2].removeprefix("bytes=").rstrip("-"))
        assert 0 < start <= 12_000_000, gets
    finally:
        h.close()


def test_offline_without_and_with_a_cached_file(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubModelError, match="not in the Hub cache"):
        hub_model_path(resolve(REPO, FILE))
    assert hub.log == [], "offline asks the server nothing"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    path = hub_model_path(resolve(REPO, FILE))
    monkeypatch.setenv("IFS_OFFLINE", "1")
    n = len(hub.log)
    assert hub_model_path(resolve(REPO, FILE)) == path and len(hub.log) == n


def test_no_connection(hub, monkeypatch):
    path = hub_model_path(resolve(REPO, FILE))
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())  # nothing answers: a machine without a network
    assert hub_model_path(resolve(REPO, FILE)) == path, "a cached file opens without the server"
    with pytest.raises(HubModelError, match="not in the Hub cache and cannot be downloaded"):
        hub_model_path(resolve(REPO, "other.gguf"))


def test_bad_names_give_one_sentence(hub):
    with pytest.raises(HubModelError, match="no file"):
        hub_model_path(resolve(REPO, "missing.gguf"))
    with pytest.raises(HubModelError, match="no repository"):
        hub_model_path(resolve("nobody/nothing", FILE))
    with pytest.raises(HubModelError, match="not a Hub repository"):
        resolve("no slash", FILE)
    with pytest.raises(HubModelError, match="not a .gguf"):
        resolve(REPO, "weights.bin")
    with pytest.raises(HubModelError, match="Unknown Hub model"):
        resolve("gpt-9")


def test_curated_list_has_a_small_and_a_mid_model_and_chatglm():
    sizes = [m.size_gb for m in CURATED.values()]
    assert any(s <= 1.5 for s in sizes) and any(1.5 < s <= 2.5 for s in sizes)
    assert any("glm" in m.repo.lower() for m in CURATED.values())
    assert all(m.filename.lower().endswith(".gguf") and "q4_k_m" in m.filename.lower() for m in CURATED.values())


def test_a_real_gguf_through_llmspec_hub(monkeypatch, tmp_path):
    from engine.bundled_models import bundled_model_path

    data = Path(bundled_model_path("smollm2")).read_bytes()
    h = FakeHub({("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", "smollm2-135m-instruct-q8_0.gguf"): data})
    online(monkeypatch, h, tmp_path / "hub-cache")
    try:
        spec = LLMSpec(kind="hub", repo="HuggingFaceTB/SmolLM2-135M-Instruct-GGUF",
                       filename="smollm2-135m-instruct-q8_0.gguf", n_threads=1)
        llm = open_llm(spec, cached=False)
        assert llm.is_chat and llm.generate(Prompt.ask("Name a color."), SamplingSettings(max_tokens=4)).strip()
        llm.close()
        with pytest.raises(LLMError, match="no file"):
            open_llm(LLMSpec(kind="hub", repo="HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", filename="nope.gguf"))
    finally:
        h.close()


def test_command_line_hub_option_names_a_curated_model_or_a_file():
    from engine.llm import spec_from_options

    assert spec_from_options(hub="qwen2.5-3b") == LLMSpec(kind="hub", name="qwen2.5-3b")
    s = spec_from_options(hub="Qwen/Qwen2.5-7B-Instruct-GGUF/qwen2.5-7b-instruct-q4_k_m.gguf", n_threads=1)
    assert (s.kind, s.repo, s.filename, s.n_threads) == ("hub", "Qwen/Qwen2.5-7B-Instruct-GGUF",
                                                         "qwen2.5-7b-instruct-q4_k_m.gguf", 1)
    assert spec_from_options().name == "qwen1.5b" and spec_from_options(llm="smollm2").name == "smollm2"


def test_download_reports_its_bytes_and_the_cache_is_known(hub):
    model = resolve(REPO, FILE)
    assert not is_cached(model)
    seen = []
    path = hub_model_path(model, on_bytes=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, len(hub.data)) and seen[-1] == (len(hub.data), len(hub.data)), seen
    assert is_cached(model) and parse_choice(f"{REPO}/{FILE}") == model
    seen.clear()
    assert hub_model_path(model, on_bytes=lambda done, total: seen.append((done, total))) == path
    assert seen == [] and len(hub.gets()) == 1, "a cached file reports no download"
