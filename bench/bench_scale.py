"""Benchmark: prompt encoding at 80 / 320 / 1,000 categories, bounded (chunked) beside one pass.

Setting (issue 14): synthetic two-word category names ("<adjective> <noun>"), super-categories of
10, disjoint cliques of 5, default blocks 16/8/4/4, an RN50-sized text tower with random weights
(``BackboneSpec("RN50", pretrained=None)``), BOTH prompt sets (global and local, as training holds
them). A step = encode both sets + backward of a scalar of both (a fixed linear loss).

Each (vocabulary, encoder) runs in a fresh subprocess, so its peak memory is its own: ``ru_maxrss``
of the process (model included; the resident size after loading the model is printed too) and, on
a GPU, ``torch.cuda.max_memory_allocated``. Per row: chunk size (bounded: chosen automatically from
free memory unless --chunk), step time (median of --repeats after --warmup steps), time per category,
CPU time per step, minor page faults per step (allocator behaviour), peak memory, and the 1-minute
load average when the row finished. Then, per vocabulary, from the bounded child: the order loss
(forward + backward) and classifier scoring of --images images (inference), to check their growth.

    .venv/bin/python bench/bench_scale.py [--sizes 80 320 1000] [--repeats 2] [--warmup 1] [--threads 2] [--chunk 0]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_prefix_encoder.py

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ADJECTIVES = ("red green blue small large old new wooden metal plastic glass paper round square "
              "long short soft hard dark bright broken clean empty heavy tiny").split()
NOUNS = ("chair table lamp cup bottle box bag shoe hat coat door window car boat bird fish tree "
         "flower stone ball book pen knife plate spoon brush clock phone key bell drum rope wheel "
         "sign fence gate bridge tower road basket").split()


def synthetic_structure(n: int):
    """n two-word names, super-categories of 10, disjoint cliques of 5."""
    from engine.prompts import PromptStructure

    if n > len(ADJECTIVES) * len(NOUNS):
        raise ValueError(f"At most {len(ADJECTIVES) * len(NOUNS)} synthetic categories.")
    names = [f"{ADJECTIVES[i % len(ADJECTIVES)]} {NOUNS[i // len(ADJECTIVES)]}" for i in range(n)]
    super_of = {c: f"group {i // 10}" for i, c in enumerate(names)}
    cliques = [names[i:i + 5] for i in range(0, n, 5)]
    return PromptStructure(names, super_of, cliques)


def _rusage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_maxrss * 1024, r.ru_minflt  # Linux: ru_maxrss in KiB


def _current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(args) -> dict:
    import torch
    import torch.nn.functional as F

    from engine.classifier import Classifier
    from engine.clip_backbone import BackboneSpec, load_backbone
    from engine.prefix_encoder import PromptEncoder
    from engine.prompts import HierarchicalPrompts, PromptLayout
    from engine.losses import order_loss_pairs

    torch.set_num_threads(args.threads)
    backbone = load_backbone(BackboneSpec(args.model, pretrained=None), args.device)
    cuda = backbone.device.type == "cuda"
    n = args.child_size
    structure = synthetic_structure(n)
    model_rss = _current_rss()
    chunk = n if args.child_encoder == "one-pass" else args.chunk
    encoder = PromptEncoder(backbone, structure, PromptLayout(), chunk_size=chunk)
    sets = [HierarchicalPrompts(structure, width=backbone.width, seed=s).to(backbone.device) for s in (0, 1)]
    gen = torch.Generator().manual_seed(0)
    targets = [torch.randn(n, backbone.embed_dim, generator=gen).to(backbone.device) for _ in sets]

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def step():
        for p in sets:
            p.zero_grad(set_to_none=True)
        sync()
        t0, c0, f0 = time.perf_counter(), time.process_time(), _rusage()[1]
        loss = sum((encoder.encode(p) * t).sum() for p, t in zip(sets, targets))
        loss.backward()
        sync()
        return time.perf_counter() - t0, time.process_time() - c0, _rusage()[1] - f0

    for _ in range(args.warmup):
        step()
    runs = [step() for _ in range(args.repeats)]
    peak = _rusage()[0]
    out = {"n": n, "encoder": args.child_encoder, "chunk": encoder.chunk_size,
           "chunks": len(encoder.chunks.trees), "wall": statistics.median(r[0] for r in runs),
           "cpu": statistics.median(r[1] for r in runs), "faults": statistics.median(r[2] for r in runs),
           "peak_rss": peak, "model_rss": model_rss,
           "cuda_peak": torch.cuda.max_memory_allocated() if cuda else None, "load": os.getloadavg()[0]}
    if args.child_encoder == "bounded":  # the order loss and inference at this vocabulary
        with torch.no_grad():
            emb = F.normalize(encoder.encode(sets[0]), dim=-1)
        hand = F.normalize(torch.randn(n, backbone.embed_dim, generator=gen), dim=-1).to(emb.device)
        leaf = emb.clone().requires_grad_(True)
        sync()
        t0 = time.perf_counter()
        order_loss_pairs(leaf, hand).backward()  # the default order loss: one softmax over the N(N-1)/2 pairs
        sync()
        out["order_s"] = time.perf_counter() - t0
        classifier = Classifier(structure.categories, emb, emb, backbone.name)
        glob = torch.randn(args.images, backbone.embed_dim, generator=gen)
        dense = torch.randn(args.images, 49, backbone.embed_dim, generator=gen)
        t0 = time.perf_counter()
        classifier.scores(glob, dense)
        out["score_s"] = time.perf_counter() - t0
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[80, 320, 1000])
    ap.add_argument("--model", default="RN50")
    ap.add_argument("--device", default="cpu", help="cpu / cuda")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=0, help="bounded encoder's chunk size (0 = automatic)")
    ap.add_argument("--images", type=int, default=64, help="images scored in the inference check")
    ap.add_argument("--encoders", nargs="+", default=["bounded", "one-pass"], choices=["bounded", "one-pass"])
    ap.add_argument("--child-size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child-encoder", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_size:
        print(json.dumps(child(args)))
        return

    rows = []
    for n in args.sizes:
        for enc in args.encoders:
            cmd = [sys.executable, __file__, "--child-size", str(n), "--child-encoder", enc, "--model", args.model,
                   "--device", args.device, "--repeats", str(args.repeats), "--warmup", str(args.warmup),
                   "--threads", str(args.threads), "--chunk", str(args.chunk), "--images", str(args.images)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{n} {enc}: failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
                continue
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            _print_row(rows[-1], first=len(rows) == 1, args=args)
    _print_summary(rows)


def _print_row(r: dict, first: bool, args) -> None:
    gb = 1e9
    if first:
        print(f"{args.model} text tower, random weights, {args.device}, {args.threads} threads, both prompt sets, "
              f"median of {args.repeats} steps after {args.warmup} warm-up; "
              f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
        print(f"{'categories':>10} {'encoder':>9} {'chunk':>6} {'step s':>8} {'ms/cat':>7} {'cpu s':>7} "
              f"{'faults/step':>11} {'peak RSS GB':>11} {'model GB':>8} {'GPU alloc GB':>12} {'load':>5}")
    cuda = f"{r['cuda_peak'] / gb:12.2f}" if r["cuda_peak"] is not None else f"{'-':>12}"
    print(f"{r['n']:10d} {r['encoder']:>9} {r['chunk']:6d} {r['wall']:8.2f} {1000 * r['wall'] / r['n']:7.2f} "
          f"{r['cpu']:7.2f} {r['faults']:11.0f} {r['peak_rss'] / gb:11.2f} {r['model_rss'] / gb:8.2f} {cuda} "
          f"{r['load']:5.1f}", flush=True)


def _print_summary(rows: list[dict]) -> None:
    bounded = {r["n"]: r for r in rows if r["encoder"] == "bounded"}
    if not bounded:
        return
    smallest, largest = min(bounded), max(bounded)
    per_cat = {n: r["wall"] / n for n, r in bounded.items()}
    cpu_per_cat = {n: r["cpu"] / n for n, r in bounded.items()}
    print(f"bounded, time per category at {largest} / at {smallest}: {per_cat[largest] / per_cat[smallest]:.2f} wall, "
          f"{cpu_per_cat[largest] / cpu_per_cat[smallest]:.2f} cpu (target <= 1.3); peak RSS at {largest}: "
          f"{bounded[largest]['peak_rss'] / 1e9:.2f} GB (target < 3)")
    for n, r in sorted(bounded.items()):
        print(f"{n:5d} categories: order loss fwd+bwd {1000 * r['order_s']:.1f} ms; scoring "
              f"{1000 * r['score_s']:.1f} ms for the images ({r['chunks']} chunks of <= {r['chunk']})")


if __name__ == "__main__":
    main()
