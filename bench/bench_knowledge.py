"""Knowledge acquisition benchmark: prints, side by side in one run,

1. tokens/s of each bundled model on this CPU (generation, and prompt evaluation);
2. naive loop vs the optimised one on the same questions: naive = llama-cpp-python's default
   thread count (half the logical cores) and the KV cache reset before every question; optimised =
   engine.llm's default threads (idle physical cores) and prompt-prefix reuse (engine.llm docstring);
3. wall time to build the default knowledge (KnowledgeSettings()) for PASCAL VOC's categories end
   to end (assets/presets/voc2007.json, with the preset's super-categories and synonyms, as the
   studio passes them), and a quality figure per model: the share of requested sentences that
   parse, mention their category, and are not duplicates.

Quick subsets for a loaded machine:
    .venv/bin/python bench/bench_knowledge.py --categories 4 --compare-categories 2
Full run:
    .venv/bin/python bench/bench_knowledge.py
Extra GGUF files (e.g. a stronger model, measurement only): --gguf PATH [--gguf PATH ...].
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.graph import mentions  # noqa: E402
from engine.knowledge import KnowledgeSettings, build_knowledge  # noqa: E402
from engine.llm import LLMSpec, Prompt, SamplingSettings, default_threads, open_llm, physical_cores  # noqa: E402
from engine.presets import load_preset  # noqa: E402

SENTENCE_STEPS = {"coarse_sentences": "n_coarse_sentences", "fine_sentences": "n_fine_sentences",
                  "scene_sentences": "n_scene_sentences"}


def load_voc():
    p = load_preset("voc2007")
    return p.categories, p.super_of, p.synonyms


def tokens_per_second(spec: LLMSpec, n_tokens: int) -> dict:
    llm = open_llm(spec, cached=False)
    p = Prompt.ask("Please write a short paragraph describing a busy city street in a photo.",
                   primer="A short paragraph describing a busy city street in a photo:\n")
    s = SamplingSettings(max_tokens=n_tokens, temperature=0.7, seed=0)
    llm.generate(Prompt.ask("Hello."), SamplingSettings(max_tokens=4))  # warm-up
    t0 = time.perf_counter()
    text = llm.generate(p, s)
    dt = time.perf_counter() - t0
    out = llm.usage.last["completion_tokens"]
    # prompt evaluation alone: a long prompt, one token out, fresh cache
    long_q = "Describe these objects: " + ", ".join(["a red bicycle leaning on a wall"] * 20)
    llm._llama.reset()
    t1 = time.perf_counter()
    llm.generate(Prompt.ask(long_q, primer=long_q + "\n"), SamplingSettings(max_tokens=1))
    pdt = time.perf_counter() - t1
    ptoks = llm.usage.last["prompt_tokens"]
    return {"model": llm.id, "chat": llm.is_chat, "gen_tok_s": out / dt, "gen_tokens": out,
            "prompt_tok_s": ptoks / pdt if pdt else float("nan"), "threads": llm.n_threads, "sample": text[:80]}


def quality(kn, settings: KnowledgeSettings) -> dict:
    requested = 0
    for a in kn.answers:
        if a.step in SENTENCE_STEPS:
            requested += getattr(settings, SENTENCE_STEPS[a.step])
    parsed = sum(len(a.items) for a in kn.answers if a.step in SENTENCE_STEPS)
    good = sum(1 for s in kn.sentences if all(mentions(s.text, [c], kn.synonyms) for c in s.asked))
    return {"requested": requested, "parsed": parsed, "unique": len(kn.sentences), "good": good,
            "quality": good / requested if requested else float("nan")}


def build(spec, cats, super_of, synonyms, settings):
    llm = open_llm(spec, cached=False)
    t0 = time.perf_counter()
    kn = build_knowledge(cats, llm, settings, super_of=super_of, synonyms=synonyms)
    wall = time.perf_counter() - t0
    u = llm.usage
    return kn, {"wall_s": wall, "questions": u.calls, "gen_tokens": u.completion_tokens,
                "tok_s": u.completion_tokens / wall if wall else float("nan"), "q_per_min": 60 * u.calls / wall}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2,gemma3", help="bundled models, comma-separated")
    ap.add_argument("--gguf", action="append", default=[], help="extra GGUF file to measure")
    ap.add_argument("--categories", type=int, default=20, help="first N VOC categories for the end-to-end build")
    ap.add_argument("--compare-categories", type=int, default=3,
                    help="first N categories for the naive-vs-optimised comparison (0 skips it)")
    ap.add_argument("--compare-steps", default="attributes,coarse_sentences",
                    help="knowledge steps asked in the naive-vs-optimised comparison")
    ap.add_argument("--tps-tokens", type=int, default=64, help="tokens generated for the tokens/s figure")
    ap.add_argument("--skip-build", action="store_true", help="only tokens/s and the comparison")
    args = ap.parse_args(argv)

    specs = [LLMSpec(kind="bundled", name=m.strip()) for m in args.models.split(",") if m.strip()]
    specs += [LLMSpec(kind="gguf", path=p) for p in args.gguf]
    cats, super_of, synonyms = load_voc()
    settings = KnowledgeSettings()
    print(f"# machine: {os.cpu_count()} logical cores, {physical_cores()} physical; load {os.getloadavg()}; "
          f"default threads now {default_threads()}")

    print("\n## tokens/s (generation after warm-up; prompt evaluation of a ~200-token prompt)")
    print(f"{'model':55s} {'kind':5s} {'threads':>7s} {'gen tok/s':>10s} {'prompt tok/s':>13s}")
    for spec in specs:
        r = tokens_per_second(spec, args.tps_tokens)
        print(f"{r['model']:55s} {'chat' if r['chat'] else 'base':5s} {r['threads']:7d} "
              f"{r['gen_tok_s']:10.1f} {r['prompt_tok_s']:13.1f}", flush=True)

    if args.compare_categories:
        sub = cats[:args.compare_categories]
        cmp_settings = KnowledgeSettings(steps=tuple(x for x in args.compare_steps.split(",") if x))
        print(f"\n## naive loop vs optimised, same questions (steps {args.compare_steps}, default counts, "
              f"{len(sub)} VOC categories)")
        print(f"{'model':55s} {'variant':10s} {'threads':>7s} {'prefix':>6s} {'questions':>9s} "
              f"{'wall s':>8s} {'q/min':>7s} {'tok/s':>7s}")
        for spec in specs:
            # llama-cpp-python's own default thread count, cache reset before every question
            naive = LLMSpec(**{**spec.__dict__, "n_threads": max(1, (os.cpu_count() or 2) // 2), "reuse_prefix": False})
            fast = LLMSpec(**{**spec.__dict__, "n_threads": None, "reuse_prefix": None})
            for label, sp in (("naive", naive), ("optimised", fast)):
                _, r = build(sp, sub, super_of, synonyms, cmp_settings)
                threads = open_llm(sp).n_threads
                print(f"{open_llm(sp).id:55s} {label:10s} {threads:7d} {str(open_llm(sp).reuse_prefix):>6s} {r['questions']:9d} "
                      f"{r['wall_s']:8.1f} {r['q_per_min']:7.1f} {r['tok_s']:7.1f}", flush=True)

    if not args.skip_build:
        sub = cats[:args.categories]
        print(f"\n## default knowledge for VOC, {len(sub)} categories, end to end (optimised)")
        print(f"{'model':55s} {'questions':>9s} {'wall s':>8s} {'sentences':>9s} {'requested':>9s} "
              f"{'parsed':>7s} {'good':>5s} {'quality':>7s}")
        for spec in specs:
            kn, r = build(spec, sub, super_of, synonyms, settings)
            q = quality(kn, settings)
            print(f"{open_llm(spec).id:55s} {r['questions']:9d} {r['wall_s']:8.1f} {q['unique']:9d} "
                  f"{q['requested']:9d} {q['parsed']:7d} {q['good']:5d} {q['quality']:7.2f}", flush=True)
    print("\nquality = sentences that parse, mention every category they were asked about, and are not "
          "duplicates, over the number of sentences the questions asked for.")


if __name__ == "__main__":
    main()
