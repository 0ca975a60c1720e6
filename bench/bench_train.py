"""Benchmark: wall time of a full default training run of each preset (issue 10 targets on the 2-core
CPU: the VOC preset under 3 minutes, the COCO preset under 10).

Set-up per preset: its categories, super-categories and shipped generated sentences
(``assets/presets/{key}_knowledge.json``: 2,115 for VOC 2007, 5,293 for COCO on 2026-11-30), fine groups = cliques of
their co-occurrence graph (tau 3), an RN50-sized CLIP with random weights
(``BackboneSpec("RN50", pretrained=None)``: the text tower is RN50's, 12 layers, width 512),
``TrainConfig()`` defaults (at least ``min_steps`` optimiser steps, prefix-shared encoder, the
authors' shared local context). Printed side by side: the description-feature precompute time, the
training time (all steps), their sum, the step count and seconds per step; beside each wall time the
CPU time of this process (all threads) divided by the thread count: the steadier figure on a machine
shared with other work (it approximates the wall time the run would take with the cores to itself).
``--steps N`` times only the first N steps and extrapolates the training time to the run's steps
(marked "extrapolated").

Usage: ``.venv/bin/python bench/bench_train.py [--preset voc2007,coco] [--batch-size N]
[--min-steps N] [--steps N] [--threads 2]``
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.clip_backbone import BackboneSpec, load_backbone  # noqa: E402
from engine.graph import build_graph, cooccurrence, maximal_cliques  # noqa: E402
from engine.presets import load_preset, load_preset_knowledge  # noqa: E402
from engine.prompts import PromptStructure  # noqa: E402
from engine.train import Corpus, TrainConfig, description_features, schedule, train  # noqa: E402

TARGETS = {"voc2007": 180.0, "coco": 600.0}


def preset_run(key: str):
    """(categories' structure, hand-crafted prompts, corpus) of a preset with its shipped knowledge."""
    preset = load_preset(key)
    data = load_preset_knowledge(key)
    rows = [(s["text"], [l for l in s["labels"] if l in preset.categories]) for s in data["sentences"]]
    corpus = Corpus(*zip(*[(t, l) for t, l in rows if l]))
    graph = build_graph(cooccurrence(corpus.labels, preset.categories), preset.categories, 3)
    structure = PromptStructure(preset.categories, preset.super_of, maximal_cliques(graph))
    return structure, [preset.prompts.get(c, f"a photo of a {c}.") for c in preset.categories], corpus


def bench_preset(backbone, key: str, config: TrainConfig, measure_steps: int | None, threads: int) -> None:
    structure, handcrafted, corpus = preset_run(key)
    # the two phases of train(), timed apart: description features (train() then finds them in its
    # in-memory cache, the same code path it takes itself), then train() proper
    t1, c1 = time.perf_counter(), time.process_time()
    description_features(backbone, corpus.texts, config.feature_batch_size)
    feat_wall, feat_cpu = time.perf_counter() - t1, time.process_time() - c1
    total_steps = schedule(len(corpus.texts), config)[1]
    stop_at = measure_steps if measure_steps and measure_steps < total_steps else None
    seen = []
    t2, c2 = time.perf_counter(), time.process_time()
    result = train(backbone, structure, handcrafted, corpus, config, on_step=seen.append,
                   should_stop=(lambda: len(seen) >= stop_at) if stop_at else None)
    train_wall, train_cpu = time.perf_counter() - t2, time.process_time() - c2
    steps = len(result.history)
    scale = total_steps / max(1, steps)
    train_wall, train_cpu = train_wall * scale, train_cpu * scale
    first, last = result.history[0].losses["total"], result.history[-1].losses["total"]
    total_wall, total_cpu = feat_wall + train_wall, (feat_cpu + train_cpu) / threads
    target = TARGETS.get(key, 180.0)
    label = f"training, {total_steps} steps" + (f" (extrapolated from {steps})" if stop_at else "")
    print(f"-- {key}: {len(structure.categories)} categories, {len(corpus.texts)} sentences, "
          f"{len(structure.cliques)} cliques")
    print(f"{'':<46}{'wall s':>9}{'CPU s/threads':>15}")
    print(f"{'feature precompute':<46}{feat_wall:9.1f}{feat_cpu / threads:15.1f}")
    print(f"{label:<46}{train_wall:9.1f}{train_cpu / threads:15.1f}"
          f"   ({train_wall / total_steps:.2f} s/step wall, {train_cpu / threads / total_steps:.2f} CPU)")
    print(f"{'total':<46}{total_wall:9.1f}{total_cpu:15.1f}")
    print(f"target < {target:.0f} s: wall {'MET' if total_wall < target else 'MISSED'}, CPU/threads "
          f"{'MET' if total_cpu < target else 'MISSED'}   (load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores; CPU/threads approximates the wall time on an idle machine)")
    print(f"loss: first step {first:.3f}, last measured step {last:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="voc2007,coco")
    ap.add_argument("--batch-size", type=int, default=None, help="default: TrainConfig's")
    ap.add_argument("--min-steps", type=int, default=None, help="default: TrainConfig's")
    ap.add_argument("--steps", type=int, default=None, help="time only this many steps and extrapolate")
    ap.add_argument("--model", default="RN50")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    overrides = {k: v for k, v in (("batch_size", args.batch_size), ("min_steps", args.min_steps)) if v is not None}
    config = TrainConfig(**overrides)
    t0 = time.perf_counter()
    backbone = load_backbone(BackboneSpec(args.model, pretrained=None), "cpu")
    threads = torch.get_num_threads()
    print(f"bench_train: {backbone.name} (text width {backbone.width}, embed {backbone.embed_dim}), {threads} "
          f"threads, backbone load {time.perf_counter() - t0:.1f} s (not counted)")
    print(f"config: min_steps={config.min_steps} epochs={config.epochs} batch_size={config.batch_size} "
          f"method={config.method} local_prompt={config.local_prompt} layout={config.layout.shared}/"
          f"{config.layout.coarse}/{config.layout.fine}/{config.layout.specific}")
    for key in args.preset.split(","):
        bench_preset(backbone, key.strip(), config, args.steps, threads)


if __name__ == "__main__":
    main()
