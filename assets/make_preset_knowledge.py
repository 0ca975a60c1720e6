"""Regenerate the presets' knowledge at scale with this project's own pipeline (METHOD.md section 1,
issue 12): the default bundled LLM, the sentence quality gate, and the paper's question mix
(coarse attribute sentences, fine attribute sentences, scene pairs from every scene group).

    .venv/bin/python assets/make_preset_knowledge.py voc2007 [coco] [--llm qwen1.5b] [--threads 1]

Resumable: every answer goes to ``assets/presets/{key}_answers.jsonl`` as it arrives (committed
beside the preset), so a killed or later run continues where the last one stopped. Every
`--save-every` new answers the knowledge so far is written to ``assets/presets/{key}_knowledge.json``
(``engine.presets.knowledge_to_dict`` form; ``meta.complete`` says whether every question was
answered) - but only when it holds at least as many sentences as the file already there, so the
shipped preset is never replaced by a smaller one, except by a complete run that reaches its
target. The same model continues a preset with the question templates recorded in its meta (so
the cache stays valid when the defaults change). The preset's own super-categories and synonyms
are passed in, so COCO keeps COCO's super-categories.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.knowledge import JsonlAnswerCache, KnowledgeSettings, build_knowledge  # noqa: E402
from engine.knowledge_settings import DEFAULT_TEMPLATES, StepTemplate  # noqa: E402
from engine.llm import DEFAULT_BUNDLED, BUNDLED, LLMSpec, SamplingSettings, open_llm  # noqa: E402
from engine.presets import (PRESET_DIR, knowledge_to_dict, load_preset, load_preset_knowledge,  # noqa: E402
                            save_preset_knowledge)

#: kept sentences each preset must reach (issue 12)
TARGETS = {"voc2007": 2000, "coco": 5000}


def preset_settings(key: str) -> KnowledgeSettings:
    """The paper's question mix at a size that reaches TARGETS: VOC (20 categories) 60 coarse +
    30 fine sentences per category + every pair of each scene group (at most 60) x 10. The first
    complete VOC run (4 attributes, 6 pairs per group) kept 1,565 sentences: Qwen's scene answer
    gave few groups and the gate keeps ~0.76 of what it writes; under the gate's purpose rules of
    2026-11-30 two retries per question gave 1,978, so VOC asks up to four. COCO (80 categories): 40 coarse + 20
    fine sentences per category + the scene pairs (at most 240; Qwen's scene answer gave 78) x 10. With 30
    coarse per category the complete run asked for 4,780 and kept 4,571 (retries fill most questions), so a
    fourth attribute per category: 5,580 asked for 5,000 kept."""
    sampling = SamplingSettings(max_tokens=512)
    if key == "coco":
        return KnowledgeSettings(n_common=6, n_attributes=6, attributes_per_category=4, n_coarse_sentences=10,
                                 n_keep=3, fine_attributes_per_category=2, n_fine_sentences=10,
                                 pairs_per_group=6, max_scene_pairs=240, n_scene_sentences=10, sampling=sampling)
    return KnowledgeSettings(n_common=6, n_attributes=6, attributes_per_category=6, n_coarse_sentences=10,
                             n_keep=3, fine_attributes_per_category=3, n_fine_sentences=10,
                             pairs_per_group=None, max_scene_pairs=60, n_scene_sentences=10, max_retries=4,
                             sampling=sampling)


#: A photo caption as a model of the style asked for, added to the coarse and fine sentence questions
#: of a preset started now. With it, Qwen2.5-Coder-1.5B kept 0.61 of what it wrote on the benchmark's
#: kitchen vocabulary (0.48 without) and 35 of 36 coarse and fine sentences on a garden dev
#: vocabulary. It is not a default of the engine: SmolLM2-135M copies it ("The cat in the yellow
#: school bus is named Cat"), and in the scene question it made Qwen drop one of the two objects.
EXAMPLE = 'For example, for "school bus": "A yellow school bus waits at the curb while children climb aboard." '


def preset_templates() -> dict[str, StepTemplate]:
    """The default templates with :data:`EXAMPLE` before the answer format of the coarse and fine
    sentence questions."""
    out = dict(DEFAULT_TEMPLATES)
    for step in ("coarse_sentences", "fine_sentences"):
        t = out[step]
        head, sep, tail = t.question.rpartition("Answer with")
        out[step] = replace(t, question=head + EXAMPLE + sep + tail)
    return out


def recorded_templates(key: str, llm_id: str) -> dict[str, StepTemplate] | None:
    """The question templates the shipped preset was generated with, when ``llm_id`` generated it
    (None otherwise). A preset is continued with its own questions, so its answer cache (keyed by the
    exact prompt) stays valid after the default templates change."""
    meta = (load_preset_knowledge(key) or {}).get("meta") or {}
    if meta.get("llm") != llm_id:
        return None
    templates = json.loads(meta.get("settings") or "{}").get("templates")
    if not templates:
        return None
    return {step: StepTemplate(t["question"], t["primer"], t["answer_start"], tuple(t["stop"]), t.get("example", ""))
            for step, t in templates.items()}


def answers_path(key: str) -> Path:
    return PRESET_DIR / f"{key}_answers.jsonl"


def save_if_not_smaller(key: str, knowledge, meta: dict) -> bool:
    """Write the preset knowledge unless the file there already holds more sentences; a complete
    run that reaches the target is always written (a stricter gate may keep fewer than before)."""
    old = load_preset_knowledge(key) or {}
    reached = meta.get("complete") and len(knowledge.sentences) >= TARGETS.get(key, 0)
    if len(knowledge.sentences) < len(old.get("sentences") or []) and not reached:
        return False
    save_preset_knowledge(key, knowledge_to_dict(knowledge, meta))
    return True


def make(key: str, llm_name: str = DEFAULT_BUNDLED, threads: int = 1, save_every: int = 20,
         ask: bool = True) -> Path:
    """Generate (or, with ask=False, only rebuild from the cached answers) one preset's knowledge."""
    preset = load_preset(key)
    llm = open_llm(LLMSpec(kind="bundled", name=llm_name, n_threads=threads))
    settings = preset_settings(key)
    settings = replace(settings, templates=recorded_templates(key, llm.id) or preset_templates())
    cache = JsonlAnswerCache(answers_path(key))
    t0 = time.time()
    while True:
        start = llm.usage.calls

        def progress(done, total, question):
            print(f"\r{key}: {done}/{total} answers ({llm.usage.calls} asked now), {time.time() - t0:.0f}s",
                  end="", flush=True)

        knowledge = build_knowledge(preset.categories, llm, settings, cache, on_progress=progress,
                                    should_stop=lambda: not ask or llm.usage.calls - start >= save_every,
                                    super_of=preset.super_of,
                                    synonyms={k: v for k, v in preset.synonyms.items() if v})
        meta = {"preset": key, "llm": llm.id, "settings": json.dumps(asdict(settings), default=str),
                "gate": True, "complete": not knowledge.cancelled, "target": TARGETS.get(key),
                "answers": len(cache), "kept_share": knowledge.stats.get("kept_share"),
                "rejected": knowledge.stats.get("rejected"), "made_by": "assets/make_preset_knowledge.py"}
        saved = save_if_not_smaller(key, knowledge, meta)
        print(f"\n{key}: {len(knowledge.sentences)} kept sentences, {len(knowledge.rejected)} rejected, "
              f"{len(cache)} answers cached; preset file {'written' if saved else 'kept (it holds more)'}", flush=True)
        if not knowledge.cancelled or not ask:
            return PRESET_DIR / f"{key}_knowledge.json"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("presets", nargs="*", default=["voc2007"])
    ap.add_argument("--llm", default=DEFAULT_BUNDLED, choices=list(BUNDLED))
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp threads (1 is fastest on a shared machine)")
    ap.add_argument("--save-every", type=int, default=20, help="write the preset every N new answers")
    ap.add_argument("--no-ask", action="store_true", help="only rebuild the preset from the cached answers")
    args = ap.parse_args(argv)
    for key in args.presets:
        make(key, args.llm, args.threads, args.save_every, ask=not args.no_ask)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
