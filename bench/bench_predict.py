"""Benchmark: batch prediction throughput and memory, side by side in one run.

For each backbone (the tiny test ResNet and an RN50-sized ResNet, both random weights):

* ``plain``  - open_clip ``model.encode_image`` over the images, fed by the same streaming loader
  (same decoding workers, same batch size): the floor cost of looking at the images at all;
* ``predict`` - ``engine.workflow.predict_with`` with a tuned-style classifier (global + local
  branch, fused scores, top-k, JSON lines written and flushed per batch);
* ``predict+baseline`` - the same with the hand-crafted baseline scored from the same pass;
* the same two comparisons on batches decoded beforehand (model side only: no decoding, no worker
  start-up, so the least noisy figure of what the local branch and the scoring cost).

It prints images/s of each and the ratio predict / plain (target >= 0.85), then the peak resident
memory (main process plus decoding workers, sampled every 10 ms) of ``predict`` on two folder sizes,
which must not grow with the number of images.

Then (when Ray is installed) the Ray Data path (engine.ray_predict: Ray reads, decode tasks, one
model actor, Parquet shards) beside the local path (predict_with, JSON lines) on a local Ray
instance with 2 CPUs (warmed up by one small run), for two folder sizes (tiny-rn): images/s end to
end (the Ray figure includes starting the actor, which loads the model) and the marginal images/s between the two sizes
((n2 - n1) / (t2 - t1): the per-image cost once running, start-up cancelled), with the ratio
Ray / local (aim >= 0.7 on one node: what is measured is Ray's overhead). Two Ray configurations:
the model actor reserving 1 CPU (the default: one decode task at a time beside it on 2 CPUs) and
0 CPUs (two decode tasks at a time, as the local path's two decoding workers).

Usage: ``.venv/bin/python bench/bench_predict.py [--images 96] [--rn50-images 32] [--workers 2]
[--ray-sizes 200,600] [--only-ray]``
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from engine.classifier import Classifier  # noqa: E402
from engine.clip_backbone import BackboneSpec, load_backbone  # noqa: E402
from engine.datasets import LoaderSettings, image_loader, list_images  # noqa: E402
from engine.workflow import predict_with  # noqa: E402


def make_images(folder: Path, n: int, size=(320, 240), seed=0) -> Path:
    """n JPEGs of smooth random colour fields (real JPEG decode cost), in two subfolders."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        base = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize(size, Image.BILINEAR)
        sub = folder / f"part{i % 2}"
        sub.mkdir(exist_ok=True)
        img.save(sub / f"img{i:05d}.jpg", quality=90)
    return folder


def _rss_kb(pid: int) -> int:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out += [int(x) for x in fh.read().split()]
    except OSError:
        pass
    return out


class PeakRSS:
    """Samples RSS of this process plus its children every ``period`` seconds."""

    def __init__(self, period=0.01):
        self.period, self.peak_main, self.peak_total, self._stop = period, 0, 0, threading.Event()

    def __enter__(self):
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        me = os.getpid()
        while not self._stop.is_set():
            main = _rss_kb(me)
            total = main + sum(_rss_kb(c) for c in _children(me))
            self.peak_main, self.peak_total = max(self.peak_main, main), max(self.peak_total, total)
            time.sleep(self.period)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def random_classifier(backbone, n_cat=80, seed=0) -> tuple[Classifier, list[str]]:
    g = torch.Generator().manual_seed(seed)
    cats = [f"category {i}" for i in range(n_cat)]
    d = backbone.embed_dim
    return Classifier(cats, torch.randn(n_cat, d, generator=g), torch.randn(n_cat, d, generator=g),
                      backbone.name), cats


def time_plain(backbone, files, loader) -> float:
    t0 = time.perf_counter()
    n = 0
    with torch.inference_mode():
        for batch in image_loader(files, backbone.preprocess, loader):
            if batch.pixels is not None:
                backbone.model.encode_image(batch.pixels.to(backbone.device))
                n += len(batch.indices)
    return n / (time.perf_counter() - t0)


def time_predict(backbone, clfs, cats, folder, loader, out) -> float:
    if out.exists():
        out.unlink()
    t0 = time.perf_counter()
    s = predict_with(backbone, clfs, cats, [folder], out, loader=loader)
    dt = time.perf_counter() - t0
    assert s.failed == 0 and s.scored == s.total
    return s.scored / dt


def time_model_only(backbone, batches, variants: dict, cats, repeats):
    """Best-of images/s on batches already decoded in memory, interleaved per repeat: plain
    ``encode_image``, then features + fused scores + top-k rows for each classifier set in
    ``variants``. No decoding or process start-up: the model-side cost alone."""
    from engine.workflow import predict_rows

    n = sum(len(b.indices) for b in batches)
    names = [str(i) for i in range(n)]
    best = {"plain": 0.0, **{k: 0.0 for k in variants}}
    with torch.inference_mode():
        for _ in range(repeats):
            t0 = time.perf_counter()
            for b in batches:
                backbone.model.encode_image(b.pixels)
            best["plain"] = max(best["plain"], n / (time.perf_counter() - t0))
            for key, clfs in variants.items():
                t0 = time.perf_counter()
                for b in batches:
                    glob, dense = backbone.image_features(b.pixels)
                    scores = {k: c.scores(glob, dense).float().cpu() for k, c in clfs.items()}
                    predict_rows(cats, b.indices, scores, names, 3)
                best[key] = max(best[key], n / (time.perf_counter() - t0))
    return best


def time_ray_against_local(sizes, workers, batch_size, tmp: Path, actor_cpus=(1.0, 0.0)) -> None:
    """The Ray path beside the local path (module docstring)."""
    try:
        import ray
    except ImportError:
        print("\nRay is not installed (pip install -r requirements-ray.txt): no Ray figures")
        return
    from engine.ray_predict import RaySettings, predict_on_ray

    bb = load_backbone(BackboneSpec("tiny-rn", pretrained=None))
    clf, cats = random_classifier(bb)
    base = Classifier(cats, clf.global_emb.flip(0), clf.global_emb.flip(0), bb.name)
    clfs = {"tuned": clf, "handcrafted": base}
    loader = LoaderSettings(batch_size=batch_size, workers=workers)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        warm = make_images(tmp / "ray-warm-up", 2 * batch_size, seed=5)  # start Ray's worker processes
        predict_on_ray(bb, clfs, cats, [warm], tmp / "ray-warm-up-out", settings=RaySettings(batch_size=batch_size))
        times = {c: {} for c in actor_cpus}
        for n in sizes:
            folder = make_images(tmp / f"ray-{n}", n, seed=7 + n)
            for cpus in actor_cpus:  # interleaved with a local run each: the machine is shared
                t0 = time.perf_counter()
                s = predict_with(bb, clfs, cats, [folder], tmp / f"local-{n}-{cpus}.jsonl", loader=loader)
                t_local = time.perf_counter() - t0
                t0 = time.perf_counter()
                r = predict_on_ray(bb, clfs, cats, [folder], tmp / f"ray-out-{n}-{cpus}",
                                   settings=RaySettings(batch_size=batch_size, actors=1, cpus_per_actor=cpus))
                t_ray = time.perf_counter() - t0
                assert s.scored == r.scored == n
                times[cpus][n] = (t_local, t_ray)
    finally:
        ray.shutdown()
    print(f"\nRay Data path vs local path (tiny-rn, tuned + baseline, 1 model actor, 2 CPUs, batch {batch_size}, "
          f"local: {workers} decode workers; load average {', '.join(f'{x:.2f}' for x in os.getloadavg())})")
    print(f"{'actor CPUs':>10}{'images':>8}{'local img/s':>13}{'ray img/s':>11}{'ratio':>8}")
    for cpus, by_n in times.items():
        for n, (tl, tr) in by_n.items():
            print(f"{cpus:>10g}{n:>8}{n / tl:>13.1f}{n / tr:>11.1f}{(n / tr) / (n / tl):>8.2f}")
        (n1, (l1, r1)), (n2, (l2, r2)) = list(by_n.items())[0], list(by_n.items())[-1]
        if n2 > n1 and l2 > l1 and r2 > r1:
            ml, mr = (n2 - n1) / (l2 - l1), (n2 - n1) / (r2 - r1)
            print(f"{cpus:>10g}{'marginal':>8}{ml:>13.1f}{mr:>11.1f}{mr / ml:>8.2f}   "
                  f"((n2 - n1) / (t2 - t1): start-up cancelled)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=96, help="folder size for tiny-rn")
    ap.add_argument("--rn50-images", type=int, default=32, help="folder size for RN50")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2, help="best of this many timings")
    ap.add_argument("--mem-sizes", default="200,800", help="two folder sizes for the memory figure")
    ap.add_argument("--ray-sizes", default="200,600", help="two folder sizes for the Ray figures")
    ap.add_argument("--only-ray", action="store_true", help="print the Ray figures only")
    args = ap.parse_args()
    loader = LoaderSettings(batch_size=args.batch_size, workers=args.workers)
    if args.only_ray:
        with tempfile.TemporaryDirectory() as tmp:
            time_ray_against_local([int(x) for x in args.ray_sizes.split(",")], args.workers, args.batch_size,
                                   Path(tmp))
        return
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device "
          f"{load_backbone(BackboneSpec('tiny-rn', pretrained=None)).device}, loader {loader}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"\n{'model':<10}{'images':>8}{'plain img/s':>14}{'predict img/s':>15}"
              f"{'ratio':>8}{'+baseline img/s':>17}{'ratio':>8}")
        model_only = []
        for model, n in (("tiny-rn", args.images), ("RN50", args.rn50_images)):
            folder = make_images(tmp / f"{model}-{n}", n)
            files = list_images([folder])
            bb = load_backbone(BackboneSpec(model, pretrained=None))
            clf, cats = random_classifier(bb)
            base = Classifier(cats, clf.global_emb.flip(0), clf.global_emb.flip(0), bb.name)
            out = tmp / "out.jsonl"
            time_plain(bb, files[: args.batch_size], loader)  # warm-up
            plain, pred, both = [], [], []
            for _ in range(args.repeats):  # interleaved, best of: the machine is shared
                plain.append(time_plain(bb, files, loader))
                pred.append(time_predict(bb, {"tuned": clf}, cats, folder, loader, out))
                both.append(time_predict(bb, {"tuned": clf, "handcrafted": base}, cats, folder, loader, out))
            p, q, r = max(plain), max(pred), max(both)
            print(f"{model:<10}{n:>8}{p:>14.1f}{q:>15.1f}{q / p:>8.2f}{r:>17.1f}{r / p:>8.2f}")
            batches = list(image_loader(files, bb.preprocess, LoaderSettings(args.batch_size, workers=0)))
            best = time_model_only(bb, batches, {"tuned": {"tuned": clf},
                                                 "both": {"tuned": clf, "handcrafted": base}}, cats, args.repeats)
            mp, mq, mr = best["plain"], best["tuned"], best["both"]
            model_only.append(f"{model:<10}{n:>8}{mp:>14.1f}{mq:>15.1f}{mq / mp:>8.2f}{mr:>17.1f}{mr / mp:>8.2f}")
        print("\nmodel side only (batches decoded beforehand, same images)")
        print(f"{'model':<10}{'images':>8}{'plain img/s':>14}{'predict img/s':>15}"
              f"{'ratio':>8}{'+baseline img/s':>17}{'ratio':>8}")
        print("\n".join(model_only))

        print("\npeak resident memory of predict (tiny-rn, 80 categories, JSON lines output)")
        print(f"{'images':>8}{'main MiB':>10}{'main+workers MiB':>18}{'img/s':>8}")
        bb = load_backbone(BackboneSpec("tiny-rn", pretrained=None))
        clf, cats = random_classifier(bb)
        for n in (int(x) for x in args.mem_sizes.split(",")):
            folder = make_images(tmp / f"mem-{n}", n, seed=n)
            out = tmp / f"mem-{n}.jsonl"
            with PeakRSS() as m:
                rate = time_predict(bb, {"tuned": clf}, cats, folder, loader, out)
            print(f"{n:>8}{m.peak_main / 1024:>10.1f}{m.peak_total / 1024:>18.1f}{rate:>8.1f}")
        time_ray_against_local([int(x) for x in args.ray_sizes.split(",")], args.workers, args.batch_size, tmp)


if __name__ == "__main__":
    main()
