"""Cost of the store's small writes, side by side for each ``StoreSettings.synchronous`` level.

One transaction per write, as the app does them: a training step's losses (``add_run_step``), a
knowledge answer (``answer_cache().put``), a sentence edit (``update_sentence``); plus the reads a
studio page does (``list_sentences`` with a category filter over 5000 sentences) and an export /
import of that project. Prints milliseconds per operation (median of rounds).

    .venv/bin/python bench/bench_storage.py [--n 200] [--levels FULL NORMAL]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.storage import Store, StoreSettings  # noqa: E402


def per_op(fn, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t0) / n * 1000


def bench(level: str, n: int, folder: Path) -> dict:
    store = Store(folder / f"{level}.db", StoreSettings(synchronous=level))
    pid = store.create_project("bench", categories=[f"cat{i}" for i in range(80)])
    store.replace_sentences(pid, [dict(text=f"a photo with cat{i % 80} and cat{(i * 7) % 80}",
                                       labels=[f"cat{i % 80}", f"cat{(i * 7) % 80}"], source="coarse")
                                  for i in range(5000)])
    run = store.create_run(pid, {})
    cache = store.answer_cache(pid)
    ids = [s.id for s in store.list_sentences(pid, limit=n)]
    out = {
        "run step": per_op(lambda i: store.add_run_step(run, {"step": i, "total": 1.0, "rank_global": 0.5}), n),
        "answer put": per_op(lambda i: cache.put(f"k{i}", "q", "raw " * 100, ["x"] * 20, {"model": "m"}), n),
        "sentence edit": per_op(lambda i: store.update_sentence(ids[i % len(ids)], text=f"edited {i}"), n),
        "filter 5000": per_op(lambda i: store.list_sentences(pid, category=f"cat{i % 80}"), max(5, n // 20)),
        "counts 5000": per_op(lambda i: store.sentence_counts(pid), max(5, n // 20)),
    }
    t0 = time.perf_counter()
    archive = store.export_project(pid, folder / f"{level}.zip")
    out["export"] = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    store.import_project(archive)
    out["import"] = (time.perf_counter() - t0) * 1000
    store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--levels", nargs="+", default=["FULL", "NORMAL"])
    args = ap.parse_args()
    results: dict[str, dict[str, list[float]]] = {lv: {} for lv in args.levels}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for lv in args.levels:  # interleaved, so machine load hits both alike
                d = Path(tmp) / f"r{r}"
                d.mkdir(exist_ok=True)
                for k, v in bench(lv, args.n, d).items():
                    results[lv].setdefault(k, []).append(v)
    keys = list(next(iter(results.values())))
    print(f"{'ms per operation (median of ' + str(args.rounds) + ')':<34}" + "".join(f"{lv:>12}" for lv in args.levels))
    for k in keys:
        print(f"{k:<34}" + "".join(f"{statistics.median(results[lv][k]):>12.3f}" for lv in args.levels))


if __name__ == "__main__":
    main()
