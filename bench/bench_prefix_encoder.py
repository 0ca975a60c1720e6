"""Benchmark: padded vs naive vs prefix-shared prompt encoding (one training step's text-tower work).

Setting (issue 2, "Speed"): COCO's 80 categories with its 12 super-categories
(assets/presets/coco.json), default blocks 16/8/4/4, an RN50-sized text tower with random weights
(``BackboneSpec("RN50", pretrained=None)``), one prompt set. The fine groups are the hand-written
COCO scene groups in ``SCENE_CLIQUES`` below used directly as cliques (plausible co-occurrence
cliques; they overlap, e.g. "person" is in many, and some categories are in none), so no LLM or
corpus is needed.

A step = encode all 80 class embeddings + backward of a scalar loss to the prompt parameters.
The three encoders are measured side by side in one run, interleaved (warm-up, then ``--repeats``
rounds); the median wall time and the median CPU time of this process are printed (the CPU
time is the steadier figure on a machine shared with other work), with the ratio naive / prefix and the largest difference of
class embeddings (and of prompt gradients) between prefix and naive.

    .venv/bin/python bench/bench_prefix_encoder.py [--repeats 7] [--threads 2] [--mode hierarchical]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

# On a CPU shared with other work, OpenMP threads that spin-wait at every barrier measure the
# machine's load more than the encoders (the prefix path has more, smaller ops); passive waiting
# applies to all three methods alike. Must be set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.clip_backbone import BackboneSpec, load_backbone  # noqa: E402
from engine.prefix_encoder import METHODS, PromptEncoder  # noqa: E402
from engine.presets import load_preset  # noqa: E402
from engine.prompts import HierarchicalPrompts, PromptLayout, PromptStructure  # noqa: E402

SCENE_CLIQUES = [
    ["person", "car", "bus", "truck", "traffic light"],
    ["car", "truck", "traffic light", "stop sign", "fire hydrant", "parking meter"],
    ["person", "bicycle", "motorcycle", "backpack"],
    ["person", "umbrella", "handbag", "bench"],
    ["person", "airplane", "suitcase"],
    ["person", "train", "suitcase"],
    ["person", "boat", "bird"],
    ["person", "skis", "snowboard", "backpack"],
    ["person", "surfboard", "kite"],
    ["person", "sports ball", "baseball bat", "baseball glove"],
    ["person", "tennis racket", "sports ball"],
    ["person", "skateboard", "frisbee", "dog"],
    ["person", "horse", "cow", "sheep"],
    ["elephant", "zebra", "giraffe"],
    ["dining table", "cup", "fork", "knife", "spoon", "bowl", "wine glass", "bottle"],
    ["dining table", "pizza", "cup", "knife"],
    ["dining table", "sandwich", "hot dog", "donut", "cake"],
    ["bowl", "banana", "apple", "orange", "broccoli", "carrot"],
    ["oven", "microwave", "sink", "refrigerator", "toaster"],
    ["couch", "tv", "remote", "potted plant", "chair"],
    ["laptop", "keyboard", "mouse", "cell phone", "tv"],
    ["bed", "book", "clock", "teddy bear"],
    ["sink", "toilet", "toothbrush", "hair drier"],
    ["vase", "potted plant", "dining table", "chair"],
]


def coco_structure() -> PromptStructure:
    preset = load_preset("coco")
    return PromptStructure(preset.categories, preset.super_of, SCENE_CLIQUES)


def token_rows(encoder: PromptEncoder) -> dict[str, int]:
    """Token rows pushed through the transformer per method (the cost model)."""
    n = len(encoder.structure.categories)
    longest = int(encoder.eos_index.max()) + 1
    prefix = sum(len(level.reps) * level.length for level in encoder.levels)
    return {"padded": n * encoder.backbone.context_length, "naive": n * longest, "prefix": prefix}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="RN50")
    ap.add_argument("--device", default=None, help="cpu / cuda (default: CUDA when present)")
    ap.add_argument("--mode", default="hierarchical", choices=["hierarchical", "shared", "specific"])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    backbone = load_backbone(BackboneSpec(args.model, pretrained=None), args.device)
    structure = coco_structure()
    layout = PromptLayout(mode=args.mode)
    prompts = HierarchicalPrompts(structure, layout, width=backbone.width, seed=0).to(backbone.device)
    encoder = PromptEncoder(backbone, structure, layout)
    target = torch.randn(len(structure.categories), backbone.embed_dim,
                         generator=torch.Generator().manual_seed(0)).to(backbone.device)

    def step(method: str) -> tuple[float, float]:
        """(wall seconds, this process's CPU seconds) of one forward + backward."""
        prompts.zero_grad(set_to_none=True)
        if backbone.device.type == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        emb = encoder.encode(prompts, method)
        (emb * target).sum().backward()
        if backbone.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, time.process_time() - c0

    # correctness: values and gradients, prefix vs naive vs padded
    values, grads = {}, {}
    for m in METHODS:
        prompts.zero_grad(set_to_none=True)
        emb = encoder.encode(prompts, m)
        (emb * target).sum().backward()
        values[m] = emb.detach()
        grads[m] = [p.grad.detach().clone() for p in prompts.parameters()]

    def max_diff(a, b):
        return max((x - y).abs().max().item() for x, y in zip(a, b))

    for _ in range(args.warmup):
        for m in METHODS:
            step(m)
    wall = {m: [] for m in METHODS}
    cpu = {m: [] for m in METHODS}
    for _ in range(args.repeats):
        for m in METHODS:
            w, c = step(m)
            wall[m].append(w)
            cpu[m].append(c)
    med = {m: statistics.median(ts) for m, ts in wall.items()}
    cpu_med = {m: statistics.median(ts) for m, ts in cpu.items()}

    rows = token_rows(encoder)
    print(f"backbone {backbone.name} on {backbone.device}, {torch.get_num_threads()} threads; "
          f"text width {backbone.width}, {len(backbone.text.transformer.resblocks)} layers; "
          f"{args.repeats} interleaved repeats after {args.warmup} warm-up; OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY')}; load average {os.getloadavg()[0]:.1f}")
    print(f"COCO: {len(structure.categories)} categories, {len(structure.coarse_groups)} coarse groups, "
          f"{len(structure.cliques)} cliques ({len(structure.alone)} categories in none); layout "
          f"{layout.shared}/{layout.coarse}/{layout.fine}/{layout.specific} mode={layout.mode}")
    print("prefix tree levels: " + "; ".join(
        f"{'+'.join(k for k, _ in lv.parts)} x{len(lv.reps)} ({lv.length} tok)" for lv in encoder.levels))
    print(f"{'method':8s} {'wall median (s)':>16s} {'min':>8s} {'max':>8s} {'cpu median (s)':>15s} {'token rows':>11s}")
    for m in METHODS:
        print(f"{m:8s} {med[m]:16.4f} {min(wall[m]):8.4f} {max(wall[m]):8.4f} {cpu_med[m]:15.4f} {rows[m]:11d}")
    print(f"ratio naive/prefix  = {med['naive'] / med['prefix']:.2f} wall, {cpu_med['naive'] / cpu_med['prefix']:.2f} cpu "
          f"(target >= 2.5 on CPU; token-row ratio {rows['naive'] / rows['prefix']:.2f})")
    print(f"ratio padded/prefix = {med['padded'] / med['prefix']:.2f} wall, {cpu_med['padded'] / cpu_med['prefix']:.2f} cpu")
    print(f"max |class emb prefix - naive|  = {(values['prefix'] - values['naive']).abs().max().item():.2e} "
          f"(target <= 1e-4; embeddings' max |value| {values['naive'].abs().max().item():.2f})")
    print(f"max |class emb padded - naive|  = {(values['padded'] - values['naive']).abs().max().item():.2e}")
    biggest = max(g.abs().max().item() for g in grads["naive"])
    print(f"max |prompt grad prefix - naive| = {max_diff(grads['prefix'], grads['naive']):.2e} "
          f"(float32 round-off: gradients' max |value| {biggest:.1f})")


if __name__ == "__main__":
    main()
