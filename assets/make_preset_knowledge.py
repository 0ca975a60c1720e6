"""Regenerate the presets' knowledge with this project's own pipeline (METHOD.md section 1).

    .venv/bin/python assets/make_preset_knowledge.py voc2007 [coco] [--llm smollm2|gemma3]

Writes ``assets/presets/{key}_knowledge.json`` (engine.presets.knowledge_to_dict form). Answers
are cached in ``<user cache dir>/image-free-studio/preset-knowledge/{key}-<llm>.jsonl`` as they arrive, so a killed run resumes where it
stopped. Uses the bundled LLM and ``KnowledgeSettings()`` (the CPU-sized defaults); the preset's own
super-categories and synonyms are passed in, so COCO keeps COCO's super-categories.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.knowledge import JsonlAnswerCache, KnowledgeSettings, build_knowledge  # noqa: E402
from engine.llm import LLMSpec, open_llm  # noqa: E402
from engine.presets import knowledge_to_dict, load_preset, save_preset_knowledge  # noqa: E402


def make(key: str, llm_name: str = "smollm2") -> Path:
    preset = load_preset(key)
    llm = open_llm(LLMSpec(kind="bundled", name=llm_name))
    settings = KnowledgeSettings()
    from platformdirs import user_cache_dir

    cache_dir = Path(user_cache_dir("image-free-studio", appauthor=False)) / "preset-knowledge"
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache = JsonlAnswerCache(cache_dir / f"{key}-{llm_name}.jsonl")
    t0 = time.time()

    def progress(done, total, question):
        print(f"\r{key}: {done}/{total} answers, {time.time() - t0:.0f}s", end="", flush=True)

    knowledge = build_knowledge(preset.categories, llm, settings, cache, on_progress=progress,
                                super_of=preset.super_of,
                                synonyms={k: v for k, v in preset.synonyms.items() if v})
    print()
    meta = {"preset": key, "llm": llm.id, "settings": repr(settings),
            "generated_s": round(time.time() - t0, 1), "made_by": "assets/make_preset_knowledge.py"}
    path = save_preset_knowledge(key, knowledge_to_dict(knowledge, meta))
    print(f"{key}: {len(knowledge.sentences)} sentences -> {path}")
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("presets", nargs="*", default=["voc2007"])
    ap.add_argument("--llm", default="smollm2", choices=["smollm2", "gemma3"])
    args = ap.parse_args(argv)
    for key in args.presets:
        make(key, args.llm)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
