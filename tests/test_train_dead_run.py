"""A training process killed with SIGKILL (issue 11, finding 4): its run row stays "running" with
the dead process as its owner; the next ``train`` sees the owner is gone, takes the same run over and
resumes from its last checkpoint, ending at exactly the final loss of an uninterrupted run, with
one step record per step. A run whose owner is alive is not taken over."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import workflow as wf
from engine.storage import Store
from tests.test_train import CATS, synthetic_corpus

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ["--clip-model", "tiny-rn", "--quiet", "train", "p", "--epochs", "3", "--batch-size", "8",
         "--set", "milestones=2"]


def _project(db: Path) -> int:
    store = Store(db)
    pid = wf.create_project(store, "p", CATS)
    corpus = synthetic_corpus(160, seed=3)
    store.replace_sentences(pid, [dict(text=t, labels=l, source="test") for t, l in
                                  zip(corpus.texts, corpus.labels)])
    store.close()
    return pid


def _cmd(db: Path) -> list[str]:
    return [sys.executable, "-m", "engine", "--db", str(db), *TRAIN]


ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _final(db: Path, pid: int):
    store = Store(db)
    runs = store.list_runs(pid)
    steps = store.run_steps(runs[-1].id)
    out = runs, steps
    store.close()
    return out


@pytest.mark.timeout(900)
def test_sigkilled_training_resumes_to_the_same_final_loss(tmp_path):
    ref_db, db = tmp_path / "ref.db", tmp_path / "killed.db"
    pid = _project(ref_db)
    assert _project(db) == pid
    res = subprocess.run(_cmd(ref_db), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    ref_runs, ref_steps = _final(ref_db, pid)
    assert [r.status for r in ref_runs] == ["done"] and len(ref_steps) == 60

    proc = subprocess.Popen(_cmd(db), cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    store = Store(db)
    folder = store.project_folder(pid, create=False)
    deadline = time.time() + 600
    # kill after the first epoch's checkpoint and some steps of the second epoch were recorded
    while time.time() < deadline and proc.poll() is None:
        runs = store.list_runs(pid)
        if runs and (folder / f"run{runs[-1].id}.ckpt").exists() and len(store.run_steps(runs[-1].id)) >= 40:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed: " + proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = store.list_runs(pid)
    assert [r.status for r in killed] == ["running"]  # nobody told the database
    store.close()

    res = subprocess.run(_cmd(db), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    runs, steps = _final(db, pid)
    assert [r.id for r in runs] == [killed[0].id] and runs[0].status == "done"  # the same run, taken over
    assert [s["step"] for s in steps] == list(range(1, 61))                    # each step once
    assert steps[-1]["total"] == pytest.approx(ref_steps[-1]["total"], rel=1e-6, abs=1e-7)
    assert f"final loss {ref_steps[-1]['total']:.4f}" in res.stdout


def test_a_live_run_is_not_taken_over(tmp_path):
    """A run row owned by a live process (this one) is left alone: train refuses with one sentence."""
    db = tmp_path / "s.db"
    pid = _project(db)
    store = Store(db)
    run = store.create_run(pid, {"x": 1})
    wf.claim_run(store, run)  # owned by this (live) process
    with pytest.raises(wf.WorkflowError, match="already training"):
        wf.train_project(store, pid, train_config=None, backbone_spec=None, device="cpu")
    assert store.get_run(run).status == "running"
    assert wf.run_is_dead(store.get_run(run)) is False
    store.close()
