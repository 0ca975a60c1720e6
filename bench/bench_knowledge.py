"""Knowledge benchmark: which bundled LLM writes the best training sentences (issue 12).

For each bundled model, side by side, on a kitchen vocabulary no test uses
(bench/label_sample_kitchen.json), with a short question mix (synonyms, attributes, coarse
sentences, scenes, scene sentences; no retries, so the gate's raw share is measured):

  s/question     wall seconds per question asked
  kept share     sentences the gate keeps / sentences the model wrote (parsed)
  cut            kept sentences the gate kept without a trailing claim ("..., making it easy to
                 clean": engine.sentence_gate.cut_claim); counted in kept share
  kept/min       kept sentences per minute of wall time
  on-topic       kept sentences that name every category they were asked about (name or plural,
                 no synonyms); 1.00 unless an accepted synonym did it, since the gate rejects the rest
  written on-topic  the same share over every sentence the model wrote (kept or rejected): how
                 often the model names what it was asked about before any gate
  label prec.    precision of the second-category labels on the hand-checked sample
                 (bench/label_sample_kitchen.json), with the synonyms this model gave: the
                 strong-evidence rule (engine.graph.label_evidence) beside the old any-synonym rule
  rejections     per reason (engine.sentence_gate.REASONS)

    .venv/bin/python bench/bench_knowledge.py                      # every bundled model
    .venv/bin/python bench/bench_knowledge.py --models qwen1.5b --categories 4
    .venv/bin/python bench/bench_knowledge.py --gguf PATH          # any other GGUF, measured too
    .venv/bin/python bench/bench_knowledge.py --show 20            # and print 20 random kept sentences
    .venv/bin/python bench/bench_knowledge.py --preset-questions   # the questions presets are made with
    .venv/bin/python bench/bench_knowledge.py --cache /tmp/b.jsonl # keep the answers; a rerun re-gates them
    .venv/bin/python bench/bench_knowledge.py --seeds 3            # three whole runs (seeds 0, 1, 2), pooled:
                                                                   # one run of ~44 sentences moves the share ~0.07

With --cache, a rerun answers from the cache (s/question and kept/min then measure nothing; the
gate's figures are those of the same answers under the current gate).

One llama.cpp thread by default (--threads): on the shared 2-core machine that is the fastest
setting (engine.llm docstring). The machine's load average is printed beside the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.graph import _pattern, label_evidence, mentions  # noqa: E402
from engine.knowledge import JsonlAnswerCache, KnowledgeSettings, build_knowledge  # noqa: E402
from engine.llm import BUNDLED, LLMSpec, SamplingSettings, open_llm  # noqa: E402
from engine.sentence_gate import REASONS  # noqa: E402

SAMPLE = json.loads((ROOT / "bench" / "label_sample_kitchen.json").read_text())


def preset_templates():
    """The questions assets/make_preset_knowledge.py starts a preset with (an example caption)."""
    sys.path.insert(0, str(ROOT / "assets"))
    from make_preset_knowledge import preset_templates as templates

    return templates()


def bench_settings(preset_questions: bool = False, seed: int = 0) -> KnowledgeSettings:
    extra = {"templates": preset_templates()} if preset_questions else {}
    return KnowledgeSettings(**extra, sampling=SamplingSettings(seed=seed),
                             steps=("synonyms", "attributes", "coarse_sentences", "scenes", "scene_sentences"),
                             n_synonyms=3, n_attributes=3, attributes_per_category=1, n_coarse_sentences=5,
                             pairs_per_group=1, max_scene_pairs=3, n_scene_sentences=4, max_retries=0)


def label_precision(vocab: list[str], synonyms: dict[str, list[str]], strong: bool) -> tuple[float, int]:
    """(precision, labels given) of the second-category labels on the hand-checked sample."""
    right = given = 0
    for item in SAMPLE["items"]:
        if strong:
            labels = set(label_evidence(item["text"], vocab, synonyms, item["asked"]))
        else:  # the rule before issue 12: any synonym, anywhere
            labels = set(item["asked"]) | {c for c in vocab for f in [c, *synonyms.get(c, [])]
                                           if f.strip() and _pattern(f.strip()).search(item["text"])}
        extra = labels - set(item["asked"])
        given += len(extra)
        right += len(extra & set(item["truth"]))
    return (right / given if given else 1.0), given


def run(spec: LLMSpec, vocab: list[str], show: int, preset_questions: bool = False, cache=None,
        seeds: tuple[int, ...] = (0,)) -> dict:
    """The figures of one model, pooled over `seeds` (one whole knowledge run per sampling seed)."""
    llm = open_llm(spec, cached=False)
    t0 = time.perf_counter()
    runs = [build_knowledge(vocab, llm, bench_settings(preset_questions, seed), cache) for seed in seeds]
    wall = time.perf_counter() - t0
    kept = [s for kn in runs for s in kn.sentences]
    rejected = [r for kn in runs for r in kn.rejected]
    written = len(kept) + len(rejected)
    on_topic = sum(all(mentions(s.text, [c]) for c in s.asked) for s in kept)
    raw_on_topic = on_topic + sum(all(mentions(r.text, [c]) for c in r.categories) for r in rejected)
    kn = runs[0]  # synonyms (and label precision) of the first seed
    strong_p, strong_n = label_precision(vocab, kn.synonyms, strong=True)
    loose_p, loose_n = label_precision(vocab, kn.synonyms, strong=False)
    per_reason = {r: sum(k.stats.get("rejected", {}).get(r, 0) for k in runs) for r in REASONS}
    out = {"model": llm.id, "questions": llm.usage.calls, "wall_s": wall, "written": written, "kept": len(kept),
           "per_seed": [round(len(k.sentences) / max(1, len(k.sentences) + len(k.rejected)), 2) for k in runs],
           "cut": sum(bool(s.cut) for s in kept),
           "s_per_q": wall / max(1, llm.usage.calls), "kept_share": len(kept) / written if written else 0.0,
           "kept_per_min": 60 * len(kept) / wall, "on_topic": on_topic / len(kept) if kept else 0.0,
           "raw_on_topic": raw_on_topic / written if written else 0.0,
           "prec_strong": strong_p, "n_strong": strong_n, "prec_loose": loose_p, "n_loose": loose_n,
           "rejected": per_reason, "synonyms": kn.synonyms}
    if show:
        rng = random.Random(0)
        out["shown"] = [(s.text + (f"  [cut: {s.cut.strip()}]" if s.cut else ""), s.labels)
                        for s in rng.sample(kept, min(show, len(kept)))]
        out["shown_rejected"] = [(r.text, r.reason) for r in rng.sample(rejected, min(show // 2, len(rejected)))]
    llm.close()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(BUNDLED), help="bundled models, comma-separated")
    ap.add_argument("--gguf", action="append", default=[], help="extra GGUF file to measure")
    ap.add_argument("--categories", type=int, default=8, help="first N categories of the kitchen vocabulary")
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp threads")
    ap.add_argument("--show", type=int, default=0, help="print N random kept sentences per model")
    ap.add_argument("--preset-questions", action="store_true",
                    help="ask the questions presets are made with (an example caption added), not the defaults")
    ap.add_argument("--cache", help="JSON-lines answer cache: a rerun re-gates the same answers")
    ap.add_argument("--seeds", type=int, default=1,
                    help="whole runs per model, sampling seeds 0..N-1, figures pooled (kept share per seed printed)")
    args = ap.parse_args(argv)
    cache = JsonlAnswerCache(args.cache) if args.cache else None
    vocab = SAMPLE["vocabulary"][:args.categories]
    specs = [LLMSpec(kind="bundled", name=m.strip(), n_threads=args.threads) for m in args.models.split(",") if m.strip()]
    specs += [LLMSpec(kind="gguf", path=p, n_threads=args.threads) for p in args.gguf]
    print(f"# {len(vocab)} categories: {', '.join(vocab)}; {args.threads} thread(s); load {os.getloadavg()}")
    head = (f"{'model':52s} {'q':>3s} {'s/q':>6s} {'written':>7s} {'kept':>5s} {'kept share':>10s} {'cut':>4s} "
            f"{'kept/min':>8s} {'on-topic':>8s} {'written on-topic':>16s} {'label prec. strong (n)':>22s} {'any-synonym (n)':>16s}")
    rows = []
    for spec in specs:
        r = run(spec, vocab, args.show, args.preset_questions, cache, tuple(range(args.seeds)))
        rows.append(r)
        print(f"  done {r['model']} in {r['wall_s']:.0f} s; load {os.getloadavg()}", flush=True)
    print("\n" + head)
    for r in rows:
        print(f"{r['model'][:52]:52s} {r['questions']:3d} {r['s_per_q']:6.1f} {r['written']:7d} {r['kept']:5d} "
              f"{r['kept_share']:10.2f} {r['cut']:4d} {r['kept_per_min']:8.1f} {r['on_topic']:8.2f} {r['raw_on_topic']:16.2f} "
              f"{r['prec_strong']:15.2f} ({r['n_strong']:3d}) {r['prec_loose']:9.2f} ({r['n_loose']:3d})")
    print(f"\nrejections per reason ({', '.join(REASONS)}):")
    for r in rows:
        print(f"  {r['model'][:52]:52s} " + " ".join(f"{k}={v}" for k, v in r["rejected"].items() if v)
              + f"; kept share per seed: {r['per_seed']}")
    for r in rows:
        print(f"\nsynonyms from {r['model']}: {json.dumps(r['synonyms'])}")
        for text, labels in r.get("shown", []):
            print(f"  kept  {labels}: {text}")
        for text, reason in r.get("shown_rejected", []):
            print(f"  REJECTED {reason}: {text}")
    print(f"\nload average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
