"""Benchmark: wall time of a full default training run (issue 2 target: under 3 minutes on the 2-core CPU).

Set-up: the 20 PASCAL VOC categories (super-categories from the preset, two cliques), 2,000
template sentences with 1-3 categories each, an RN50-sized CLIP with random weights
(``BackboneSpec("RN50", pretrained=None)``: the text tower is RN50's, 12 layers, width 512),
``TrainConfig()`` defaults (10 epochs, prefix-shared encoder). Printed side by side: the
description-feature precompute time, the training time (all steps), their sum, the step count and
seconds per step; beside each wall time the CPU time of this process (all threads), divided by the
thread count: the steadier figure on a machine shared with other work (it approximates the wall time
the run would take with the cores to itself).

Usage: ``.venv/bin/python bench/bench_train.py [--sentences 2000] [--batch-size N] [--epochs N] [--threads 2]``
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.clip_backbone import BackboneSpec, load_backbone  # noqa: E402
from engine.presets import load_preset  # noqa: E402
from engine.prompts import PromptStructure  # noqa: E402
from engine.train import Corpus, TrainConfig, description_features, train  # noqa: E402

TEMPLATES = [
    "a {0} standing next to a {1} on a sunny afternoon.",
    "there is a {0} in the picture.",
    "a photo of a {0}, a {1} and a {2} in the same scene.",
    "someone left the {0} near the {1} by the road.",
    "the {0} is partly hidden behind a {1}.",
    "a close view of a {0} with its typical shape and colour.",
    "in the background a {0} and a {1} can be seen while a {2} passes by.",
]


def make_corpus(categories: list[str], n: int, seed: int = 0) -> Corpus:
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        t = rng.choice(TEMPLATES)
        cats = rng.sample(categories, t.count("{"))
        texts.append(t.format(*cats))
        labels.append(cats)
    return Corpus(texts, labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sentences", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=None, help="default: TrainConfig's")
    ap.add_argument("--epochs", type=int, default=None, help="default: TrainConfig's")
    ap.add_argument("--model", default="RN50")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    preset = load_preset("voc2007")
    cats = preset.categories
    structure = PromptStructure(cats, preset.super_of, [["person", "bicycle", "motorbike"], ["chair", "diningtable", "sofa"]])
    handcrafted = [preset.prompts.get(c, f"a photo of a {c}.") for c in cats]
    corpus = make_corpus(cats, args.sentences)
    overrides = {k: v for k, v in (("batch_size", args.batch_size), ("epochs", args.epochs)) if v is not None}
    config = TrainConfig(**overrides)

    t0 = time.perf_counter()
    backbone = load_backbone(BackboneSpec(args.model, pretrained=None), "cpu")
    load_s = time.perf_counter() - t0
    threads = torch.get_num_threads()
    # the two phases of train(), timed apart: description features (train() then finds them in its
    # in-memory cache, the same code path it takes itself), then train() proper
    t1, c1 = time.perf_counter(), time.process_time()
    description_features(backbone, corpus.texts, config.feature_batch_size)
    feat_wall, feat_cpu = time.perf_counter() - t1, time.process_time() - c1
    t2, c2 = time.perf_counter(), time.process_time()
    result = train(backbone, structure, handcrafted, corpus, config)
    train_wall, train_cpu = time.perf_counter() - t2, time.process_time() - c2
    steps = len(result.history)
    first, last = result.history[0].losses["total"], result.history[-1].losses["total"]
    total_wall, total_cpu = feat_wall + train_wall, (feat_cpu + train_cpu) / threads

    print(f"bench_train: {len(cats)} categories, {len(corpus.texts)} sentences, {backbone.name} "
          f"(text width {backbone.width}, embed {backbone.embed_dim}), {threads} threads")
    print(f"config: epochs={config.epochs} batch_size={config.batch_size} method={config.method} "
          f"layout={config.layout.shared}/{config.layout.coarse}/{config.layout.fine}/{config.layout.specific}")
    print(f"{'':<30}{'wall s':>9}{'CPU s/threads':>15}")
    print(f"{'backbone load (not counted)':<30}{load_s:9.1f}")
    print(f"{'feature precompute':<30}{feat_wall:9.1f}{feat_cpu / threads:15.1f}")
    print(f"{'training, ' + str(steps) + ' steps':<30}{train_wall:9.1f}{train_cpu / threads:15.1f}"
          f"   ({train_wall / max(1, steps):.2f} s/step wall, {train_cpu / threads / max(1, steps):.2f} CPU)")
    print(f"{'total':<30}{total_wall:9.1f}{total_cpu:15.1f}")
    print(f"target < 180 s: wall {'MET' if total_wall < 180 else 'MISSED'}, CPU/threads "
          f"{'MET' if total_cpu < 180 else 'MISSED'}   (load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores; CPU/threads approximates the wall time on an idle machine)")
    print(f"loss: first step {first:.3f}, last step {last:.3f}")


if __name__ == "__main__":
    main()
