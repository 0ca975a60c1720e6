"""engine.llm_replay: recorded real answers replayed by exact prompt + sampling settings, streamed
like a live backend; a question not recorded is one clear error; recording from the live model."""
import json

import pytest

from engine.llm import LLMError, LLMSpec, Prompt, SamplingSettings, open_llm
from engine.llm_replay import FORMAT, RECORD_ENV, Recording, RecordingLLM, ReplayLLM, replay_key
from tests.llm_replay import RECORDING

CAT = Prompt.ask('Please summarize 2 visual attributes of "cat". Answer with a numbered list of short attributes.',
                 primer='A numbered list of 2 visual attributes of "cat":\n', answer_start="1.", stop=("\n\n",))
SETTINGS = SamplingSettings(max_tokens=32, seed=0)
ANSWER = "1. Soft fur\n2. Pointed ears"


@pytest.fixture(autouse=True)
def replay_only(monkeypatch):
    monkeypatch.delenv(RECORD_ENV, raising=False)


def write_recording(path, answers, is_chat=True):
    rec = Recording(path, {"spec": {"kind": "bundled", "name": "smollm2"}, "id": "gguf:test.gguf:1:chat",
                           "is_chat": is_chat})
    for prompt, settings, text in answers:
        rec.add(prompt, settings, text, is_chat)
    path.write_text(json.dumps(rec.to_dict()))
    return path


def test_replays_the_recorded_answer_streamed(tmp_path):
    llm = open_llm(LLMSpec(kind="replay", path=str(write_recording(tmp_path / "r.json", [(CAT, SETTINGS, ANSWER)]))))
    assert isinstance(llm, ReplayLLM) and llm.is_chat and llm.id == "replay:gguf:test.gguf:1:chat"
    pieces = []
    assert llm.generate(CAT, SETTINGS, on_text=pieces.append) == ANSWER
    assert len(pieces) > 1 and "".join(pieces) == ANSWER
    assert llm.generate(CAT, SETTINGS) == ANSWER and llm.usage.calls == 2


def test_a_question_not_recorded_names_itself(tmp_path):
    llm = ReplayLLM(write_recording(tmp_path / "r.json", [(CAT, SETTINGS, ANSWER)]))
    with pytest.raises(LLMError, match=r'No recorded answer in r\.json for the question .*visual attributes of "cat"'):
        llm.generate(CAT, SamplingSettings(max_tokens=32, seed=1))  # another seed: another answer
    dog = Prompt.ask('Please summarize 2 visual attributes of "dog".')
    with pytest.raises(LLMError, match='attributes of "dog"'):
        llm.generate(dog, SETTINGS)
    assert replay_key(CAT, SETTINGS) != replay_key(CAT, SamplingSettings(max_tokens=33, seed=0))


def test_base_model_recordings_show_the_primer(tmp_path):
    llm = ReplayLLM(write_recording(tmp_path / "r.json", [], is_chat=False))
    assert not llm.is_chat
    with pytest.raises(LLMError, match="A numbered list of 2 visual attributes"):
        llm.generate(CAT, SETTINGS)


def test_an_edited_prompt_does_not_answer_for_the_old_one(tmp_path):
    path = write_recording(tmp_path / "r.json", [(CAT, SETTINGS, ANSWER)])
    data = json.loads(path.read_text())
    data["answers"][0]["prompt"]["messages"][0][1] += " Be brief."
    path.write_text(json.dumps(data))
    with pytest.raises(LLMError, match="No recorded answer"):
        ReplayLLM(path).generate(CAT, SETTINGS)


@pytest.mark.parametrize("content, match", [
    (None, "LLM recording not found"), ("{not json", "not a readable LLM recording"),
    ('{"format": "other"}', "not an LLM recording of format"),
    (json.dumps({"format": FORMAT, "model": {}, "answers": []}), "does not say which model"),
    (json.dumps({"format": FORMAT, "model": {"id": "x", "is_chat": True}, "answers": [{"prompt": {}}]}),
     "Answer 1 of .* is damaged"),
])
def test_bad_recordings_give_one_clear_message(tmp_path, content, match):
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(LLMError, match=match):
        open_llm(LLMSpec(kind="replay", path=str(path)))


def test_replay_needs_a_path():
    with pytest.raises(LLMError, match="needs path="):
        open_llm(LLMSpec(kind="replay"))


def test_the_committed_recording_is_whole():
    rec = Recording.load(RECORDING)
    assert rec.model["spec"] == {"kind": "bundled", "name": "smollm2"} and rec.model["is_chat"]
    assert rec.entries and len(rec.by_key) == len(rec.entries)
    assert all(e["question"] and isinstance(e["answer"], str) for e in rec.entries)
    assert any(e["answer"].strip() for e in rec.entries)


@pytest.mark.llm
def test_recording_from_the_live_model_then_replaying_it(tmp_path, monkeypatch):
    path = tmp_path / "new.json"
    monkeypatch.setenv(RECORD_ENV, "1")
    live = open_llm(LLMSpec(kind="replay", path=str(path), name="smollm2", n_threads=1))
    assert isinstance(live, RecordingLLM) and live.id == f"replay:{live.real.id}"
    short = SamplingSettings(max_tokens=8, seed=0)
    pieces = []
    text = live.generate(CAT, short, on_text=pieces.append)
    assert "".join(pieces) == text
    assert live.generate(CAT, short) == text  # asked once: the second answer is the recorded one
    saved = json.loads(path.read_text())
    assert saved["format"] == FORMAT and len(saved["answers"]) == 1 and saved["answers"][0]["answer"] == text
    assert saved["model"]["id"] == live.real.id
    monkeypatch.delenv(RECORD_ENV)
    replay = open_llm(LLMSpec(kind="replay", path=str(path)))
    assert isinstance(replay, ReplayLLM) and replay.id == live.id and replay.is_chat == live.is_chat
    assert replay.generate(CAT, short) == text
