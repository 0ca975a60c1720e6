"""engine.llm with the real bundled GGUF files: base vs chat from metadata, streaming, seeding,
stop sequences, and clear errors on bad files."""
import pytest

from engine.llm import LLMError, LLMSpec, Prompt, SamplingSettings, open_llm, physical_cores

SHORT = SamplingSettings(max_tokens=12, seed=3)


@pytest.fixture(scope="module")
def smol():
    return open_llm(LLMSpec(kind="bundled", name="smollm2"))


@pytest.fixture(scope="module")
def gemma():
    return open_llm(LLMSpec(kind="bundled", name="gemma3"))


def test_chat_model_detected_and_streams(smol):
    assert smol.is_chat and smol.reuse_prefix and smol.id.startswith("gguf:SmolLM2")
    assert 1 <= smol.n_threads <= physical_cores()
    pieces = []
    text = smol.generate(Prompt.ask('Please summarize 3 visual attributes of "cat".'), SHORT, on_text=pieces.append)
    assert text.strip() and "".join(pieces) == text
    assert 0 < smol.usage.last["completion_tokens"] <= SHORT.max_tokens


def test_same_seed_same_answer(smol):
    p = Prompt.ask('Name 3 colours of a "bus".')
    hot = SamplingSettings(max_tokens=10, seed=11, temperature=1.0)
    first = smol.generate(p, hot)
    smol.generate(Prompt.ask("Say hi."), hot)  # another prompt in between: the KV cache differs
    assert smol.generate(p, hot) == first


def test_base_model_detected_and_primed(gemma):
    assert not gemma.is_chat and gemma.id.endswith(":base")
    assert gemma.reuse_prefix is False  # sliding-window model: see engine.llm docstring
    p = Prompt.ask("unused for a base model", primer='Three visual attributes of "bicycle":\n',
                   answer_start="1.", stop=("\n2.", "\n\n"))
    pieces = []
    text = gemma.generate(p, SamplingSettings(max_tokens=16, seed=0), on_text=pieces.append)
    assert text.startswith("1.") and "".join(pieces) == text and "\n2." not in text
    assert len(text) > 2


def test_mode_override_prompts_a_chat_file_as_base():
    llm = open_llm(LLMSpec(kind="bundled", name="smollm2", mode="base"), cached=False)
    assert not llm.is_chat and llm.id.endswith(":base")
    out = llm.generate(Prompt.ask("x", primer="A list of fruits:\n", answer_start="1.", stop=("\n\n",)),
                       SamplingSettings(max_tokens=8))
    assert out.startswith("1.")


def test_bad_files_and_specs(tmp_path):
    with pytest.raises(LLMError, match="not found"):
        open_llm(LLMSpec(kind="gguf", path=str(tmp_path / "missing.gguf")))
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(LLMError, match="could not load junk.gguf"):
        open_llm(LLMSpec(kind="gguf", path=str(junk)))
    with pytest.raises(LLMError, match="Unknown bundled model"):
        open_llm(LLMSpec(kind="bundled", name="gpt5"))
    with pytest.raises(LLMError, match="Unknown LLM kind"):
        open_llm(LLMSpec(kind="magic"))
