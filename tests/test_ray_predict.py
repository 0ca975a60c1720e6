"""Predict and evaluate on Ray Data (engine.ray_predict) against the local path, on a local Ray
instance (2 CPUs, started and stopped here) with the tiny random-weight CLIP: the same rows and
scores for a few hundred generated images plus corrupt ones; a model worker killed mid-run
still yields every file exactly once; a second run on the same output scores nothing new."""
import json
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

ray = pytest.importorskip("ray", reason="needs Ray Data (requirements-dev.txt)")

from engine.classifier import Classifier  # noqa: E402
from engine.clip_backbone import BackboneSpec, load_backbone  # noqa: E402
from engine.ray_predict import (ImageScorer, RaySettings, list_shards, predict_on_ray,  # noqa: E402
                                read_output, score_files_on_ray)

N_IMAGES = 240
CATS = ["cat", "dog", "car", "tree", "person"]


@pytest.fixture(scope="module")
def ray_instance():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        sub = root / f"part{i % 3}"
        sub.mkdir(exist_ok=True)
        img = Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).resize((40, 30))
        img.save(sub / (f"img{i:04d}.jpg" if i % 4 else f"img{i:04d}.PNG"))
    (root / "part0" / "notes.txt").write_text("not an image, and not listed (no image extension)")
    (root / "part1" / "text.jpg").write_text("not an image")
    (root / "part1" / "empty.png").write_bytes(b"")
    good = (root / "part2" / "img0002.jpg").read_bytes()
    (root / "part2" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    return root


@pytest.fixture(scope="module")
def model():
    bb = load_backbone(BackboneSpec("tiny-rn", pretrained=None), device="cpu")
    g = torch.Generator().manual_seed(1)
    d = bb.embed_dim
    tuned = Classifier(CATS, torch.randn(5, d, generator=g), torch.randn(5, d, generator=g), bb.name)
    base = Classifier(CATS, torch.randn(5, d, generator=g), torch.randn(5, d, generator=g), bb.name, lambda2=1.0)
    return bb, {"tuned": tuned, "handcrafted": base}


def _local_rows(bb, clfs, sources):
    from engine.workflow import predict_with

    return {r["file"]: r for r in predict_with(bb, clfs, CATS, sources, None, top_k=3).rows}


def _assert_same_rows(local: dict, rows: list[dict], names=("tuned", "handcrafted"), cats=CATS):
    assert sorted(r["file"] for r in rows) == sorted(local)  # every file exactly once
    for r in rows:
        want = local[r["file"]]
        assert (r["status"], r["error"]) == (want["status"], want["error"])
        for name in names:
            if want["status"] != "ok":
                assert f"{name}_scores" not in r
                continue
            assert [c for c, _ in r[f"{name}_top_k"]] == [c for c, _ in want[f"{name}_top_k"]]
            got = np.array([r[f"{name}_scores"][c] for c in cats])
            exp = np.array([want[f"{name}_scores"][c] for c in cats])
            np.testing.assert_allclose(got, exp, atol=1e-5, rtol=0)


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_same_rows_as_the_local_path_and_a_rerun_scores_nothing_new(ray_instance, images, model, tmp_path, fmt):
    bb, clfs = model
    local = _local_rows(bb, clfs, [images])
    assert len(local) == N_IMAGES + 3 and sum(r["status"] == "error" for r in local.values()) == 3
    out = tmp_path / "scores"
    s = predict_on_ray(bb, clfs, CATS, [images], out, top_k=3, settings=RaySettings(batch_size=16, fmt=fmt))
    assert (s.total, s.scored, s.failed, s.skipped) == (N_IMAGES + 3, N_IMAGES, 3, 0)
    rows = read_output(out, fmt, CATS)
    _assert_same_rows(local, rows)
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["scored"] == N_IMAGES and summary["settings"]["batch_size"] == 16
    shards = list_shards(str(out), fmt)
    again = predict_on_ray(bb, clfs, CATS, [images], out, top_k=3, settings=RaySettings(batch_size=16, fmt=fmt))
    assert (again.scored, again.failed, again.skipped) == (0, 0, N_IMAGES + 3)
    assert list_shards(str(out), fmt) == shards and len(read_output(out, fmt, CATS)) == N_IMAGES + 3


def test_resume_after_a_partial_output_and_named_files(ray_instance, images, model, tmp_path):
    bb, clfs = model
    part = sorted(p for p in (images / "part0").iterdir())
    named = [str(part[0]), str(part[1])]
    out = tmp_path / "scores"
    first = predict_on_ray(bb, clfs, CATS, named, out, settings=RaySettings(fmt="csv"))
    assert (first.total, first.scored + first.failed) == (2, 2)
    s = predict_on_ray(bb, clfs, CATS, [images / "part0"] + named, out, settings=RaySettings(fmt="csv"))
    assert s.skipped == 2 * 2 and s.scored + s.failed == len(list((images / "part0").glob("*.*"))) - 1 - 2
    rows = read_output(out, "csv", CATS)
    local = _local_rows(bb, clfs, [images / "part0"])
    assert {r["file"] for r in rows} == set(local)
    _assert_same_rows(local, rows)


def test_a_worker_killed_mid_run_still_yields_every_file_once(ray_instance, images, model, tmp_path):
    bb, clfs = model
    marker = tmp_path / "killed-once"

    class KilledOnce(ImageScorer):
        """The model actor's process dies (SIGKILL) on its third batch, once."""

        calls = 0

        def __call__(self, batch):
            KilledOnce.calls += 1
            if KilledOnce.calls == 3 and not marker.exists():
                marker.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
            return super().__call__(batch)

    out = tmp_path / "scores"
    s = predict_on_ray(bb, clfs, CATS, [images], out, settings=RaySettings(batch_size=16), scorer=KilledOnce)
    assert marker.exists() and int(marker.read_text()) != os.getpid()  # a Ray worker died
    assert (s.scored, s.failed) == (N_IMAGES, 3)
    _assert_same_rows(_local_rows(bb, clfs, [images]), read_output(out, "parquet", CATS))


def test_evaluate_scores_match_the_local_path(ray_instance, images, model):
    from engine.datasets import list_images
    from engine.workflow import score_labelled_set

    bb, clfs = model
    files = [str(p) for p in list_images([images])][:60] + [str(images / "missing.jpg")]

    class Data:
        images = files
        categories = CATS

    local_scores, local_kept, local_fail = score_labelled_set(bb, clfs, Data)
    scores, kept, failures = score_files_on_ray(bb, clfs, CATS, files, RaySettings(batch_size=16))
    assert kept == local_kept and failures == local_fail
    for name in clfs:
        np.testing.assert_allclose(scores[name], local_scores[name], atol=1e-5, rtol=0)


def test_cli_predict_and_evaluate_with_ray_match_the_local_path(ray_instance, images, tmp_path, capsys):
    from engine.__main__ import main

    db, clip, cats = str(tmp_path / "s.db"), ["--clip-model", "tiny-rn"], ["cat", "dog", "car"]
    assert main(["--db", db, "new", "p", "--names", ", ".join(cats)]) == 0
    folder = str(images / "part1")
    local_out, ray_out = tmp_path / "local.jsonl", tmp_path / "ray-out"
    assert main(["--db", db, "--quiet", *clip, "predict", "p", folder, "-o", str(local_out)]) == 0
    capsys.readouterr()
    assert main(["--db", db, "--quiet", *clip, "predict", "p", folder, "-o", str(ray_out),
                 "--batch-size", "16", "--ray"]) == 0
    n = N_IMAGES // 3 + 2
    assert f"{n - 2} scored, 2 unreadable (reported), 0 already in" in capsys.readouterr().out
    local = {r["file"]: r for r in map(json.loads, local_out.read_text().splitlines())}
    _assert_same_rows(local, read_output(ray_out, "parquet", cats), names=("handcrafted",), cats=cats)
    # evaluate --ray: the same figures as the local path on a CSV labelled set
    files = sorted(p.name for p in (images / "part1").iterdir())
    labels = tmp_path / "labels.csv"
    labels.write_text("filename,labels\n" + "".join(f"{f},{cats[i % 3]};{cats[(i + 1) % 3]}\n"
                                                     for i, f in enumerate(files)))
    results = []
    for extra in ([], ["--ray"]):
        out = tmp_path / f"eval{len(extra)}.json"
        assert main(["--db", db, "--quiet", *clip, "evaluate", "p", str(labels), "--images", folder,
                     "--json", str(out), "--batch-size", "16", *extra]) == 0
        results.append(json.loads(out.read_text()))
    local_eval, ray_eval = results
    assert ray_eval["images"] == local_eval["images"] == n - 2 and ray_eval["failures"] == local_eval["failures"]
    for key in ("mAP", "CF1", "OF1"):
        assert ray_eval["results"]["handcrafted"][key] == pytest.approx(local_eval["results"]["handcrafted"][key],
                                                                        abs=1e-4)


def test_without_ray_the_message_says_how_to_install(monkeypatch, tmp_path, capsys):
    import builtins

    from engine import ray_predict

    real = builtins.__import__

    def no_ray(name, *a, **kw):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ray_predict.RayUnavailable, match=r"pip install '\.\[ray\]'"):
        ray_predict.require_ray()
    from engine.__main__ import main

    rc = main(["--db", str(tmp_path / "s.db"), "new", "p", "--names", "cat, dog"])
    rc = main(["--db", str(tmp_path / "s.db"), "--clip-model", "tiny-rn", "predict", "p", str(tmp_path),
               "-o", str(tmp_path / "out"), "--ray"])
    assert rc == 2 and "pip install '.[ray]'" in capsys.readouterr().err
