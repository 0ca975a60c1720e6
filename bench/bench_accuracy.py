"""Benchmark: an accuracy PROXY for the training settings (issue 10), runnable on this CPU.

NOT real accuracy. The CLIP here has RANDOM weights (the tiny test model ``tiny-rn`` by default), and
no image is scored: part of a preset's generated sentences trains the prompts, and the held-out
sentences are scored AS IF they were images (their global EOS feature in place of the image's, their
token features in place of its dense features, padding masked) - TaI-DPT's argument that text and
image features share one space. What it can show: whether a setting helps the prompts learn the
sentence -> label mapping relative to the hand-crafted prompts, on the same random encoder.
Settings that act on images only (RN50 dense positional embedding, squash vs centre crop, VOC
difficult objects) cannot be measured here and are not listed.

For each seed: the sentences are split (``--train-fraction`` for training, the rest held out) under
that seed; the full default ``TrainConfig`` and each setting toggled ALONE to its other value train
with that seed; held-out mAP is printed as mean and spread (population std) over the seeds, plus the
hand-crafted zero-shot baseline on the same held-out sentences (default scoring, and linear fusion).

Usage: ``.venv/bin/python bench/bench_accuracy.py [--preset voc2007] [--seeds 3] [--model tiny-rn]
[--min-steps-sweep 0,50,100,200,400] [--threads 2]``
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.classifier import Classifier  # noqa: E402
from engine.clip_backbone import BackboneSpec, load_backbone  # noqa: E402
from engine.graph import build_graph, cooccurrence, maximal_cliques  # noqa: E402
from engine.metrics import mean_average_precision  # noqa: E402
from engine.presets import load_preset, load_preset_knowledge  # noqa: E402
from engine.prompts import PromptStructure  # noqa: E402
from engine.train import Corpus, TrainConfig, train  # noqa: E402

#: (row label, overrides): each departure from the authors' code, toggled alone
TOGGLES = [
    ("full default (authors')", {}),
    ("hand_residual=off", {"hand_residual": "off"}),
    ("hand_residual=anchored", {"hand_residual": "anchored"}),
    ("order_form=rows (both branches)", {"order_form": "rows"}),
    ("order_branches=both", {"order_branches": "both"}),
    ("noise 0.02 + renormalise", {"noise_std": 0.02, "noise_renormalize": True}),
    ("fusion=linear", {"fusion": "linear"}),
    ("local_prompt=hierarchical", {"local_prompt": "hierarchical"}),
    ("min_steps=0 (epoch schedule)", {"min_steps": 0}),
]


def split(preset_key: str, fraction: float, seed: int):
    data = load_preset_knowledge(preset_key)
    if data is None:
        raise SystemExit(f"The preset {preset_key} has no knowledge file.")
    rows = [(s["text"], list(s["labels"])) for s in data["sentences"] if s["labels"]]
    random.Random(seed).shuffle(rows)
    cut = int(len(rows) * fraction)
    return Corpus(*zip(*rows[:cut])), Corpus(*zip(*rows[cut:]))


def held_out_map(backbone, clf: Classifier, held: Corpus, categories: list[str]) -> float:
    feats = backbone.text_features(held.texts)
    y = torch.tensor([[float(c in labs) for c in categories] for labs in held.labels])
    return float(mean_average_precision(clf.scores(feats.glob, feats.local, feats.mask), y))


def structure_of(preset, corpus: Corpus, tau: int = 2) -> PromptStructure:
    graph = build_graph(cooccurrence(corpus.labels, preset.categories), preset.categories, tau)
    return PromptStructure(preset.categories, preset.super_of, maximal_cliques(graph))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="voc2007")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--model", default="tiny-rn")
    ap.add_argument("--train-fraction", type=float, default=0.6)
    ap.add_argument("--batch-size", type=int, default=None, help="default: TrainConfig's")
    ap.add_argument("--min-steps-sweep", default="", help="e.g. 0,50,100,200,400: the default config at each")
    ap.add_argument("--only", default="", help="comma-separated row labels to run (default: all)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    preset = load_preset(args.preset)
    cats = preset.categories
    handcrafted = [preset.prompts.get(c, f"a photo of a {c}.") for c in cats]
    backbone = load_backbone(BackboneSpec(args.model, pretrained=None), "cpu")
    base = {"batch_size": args.batch_size} if args.batch_size else {}
    rows = [(label, over) for label, over in TOGGLES if not args.only or label in args.only.split(",")]
    rows += [(f"min_steps={m}", {"min_steps": int(m)}) for m in args.min_steps_sweep.split(",") if m.strip()]
    results: dict[str, list[float]] = {label: [] for label, _ in rows}
    results["hand-crafted zero-shot"] = []
    results["hand-crafted, linear fusion"] = []
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        train_set, held = split(args.preset, args.train_fraction, seed)
        structure = structure_of(preset, train_set)
        hand = Classifier.from_prompts(backbone, cats, handcrafted)
        results["hand-crafted zero-shot"].append(held_out_map(backbone, hand, held, cats))
        linear = Classifier.from_prompts(backbone, cats, handcrafted, fusion="linear")
        results["hand-crafted, linear fusion"].append(held_out_map(backbone, linear, held, cats))
        for label, over in rows:
            config = TrainConfig(**{**base, **over}, seed=seed)
            clf = train(backbone, structure, handcrafted, train_set, config).classifier
            results[label].append(held_out_map(backbone, clf, held, cats))
    wall = time.perf_counter() - t0

    print("bench_accuracy: PROXY, NOT REAL ACCURACY - random-weight CLIP "
          f"({backbone.name}), held-out generated sentences scored as if they were images")
    print(f"preset {args.preset}: {len(cats)} categories, {len(train_set.texts)} training / {len(held.texts)} "
          f"held-out sentences per seed, seeds 0..{args.seeds - 1}, batch {TrainConfig(**base).batch_size}, "
          f"default min_steps {TrainConfig().min_steps}")
    default = statistics.mean(results[rows[0][0]]) if rows and rows[0][1] == {} else None
    print(f"{'setting':<34}{'held-out mAP mean':>19}{'spread (std)':>14}{'vs default':>12}   per seed")
    for label, values in results.items():
        mean = statistics.mean(values)
        spread = statistics.pstdev(values) if len(values) > 1 else 0.0
        delta = f"{mean - default:+.2f}" if default is not None else ""
        print(f"{label:<34}{mean:19.2f}{spread:14.2f}{delta:>12}   " + " ".join(f"{v:.2f}" for v in values))
    print(f"not measurable on sentences (image-side settings): dense_positional, image_resize, VOC difficult")
    print(f"wall {wall:.0f} s, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
