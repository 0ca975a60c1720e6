"""The recording of real LLM answers that the tests replay (engine.llm_replay).

Tests whose pass or fail would otherwise depend on what the sampled bundled model writes on this
machine run the real pipeline through `REPLAY_SPEC` instead. Re-record (after changing a question,
a count or a template the tests use) with `python tests/fixtures/llm_replay/record.py`."""
from pathlib import Path

from engine.llm import LLMSpec

RECORDING = Path(__file__).resolve().parent / "fixtures" / "llm_replay" / "smollm2.json"
REPLAY_SPEC = LLMSpec(kind="replay", path=str(RECORDING), name="smollm2", n_threads=1)
