"""Training (METHOD.md sections 3-4): the corpus (enabled sentences), the hand-crafted prompts
(order-loss reference), one recorded run per call, and the past runs' listing and loss history."""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Callable, Sequence

from engine.storage.run_lease import current_lease, lease_is_dead
from engine.workflow.base import SETTINGS, WorkflowError, WorkflowSettings, owned, project_dir, require_row
from engine.workflow.graph import project_structure


@owned
def handcrafted_prompts(store, project_id: int, settings: WorkflowSettings | None = None) -> list[str]:
    """Each category's hand-crafted prompt (its own, else the template), in category order."""
    s = settings or SETTINGS
    return [c.prompt or s.handcrafted_template.format(name=c.name) for c in store.list_categories(project_id)]


@owned
def training_corpus(store, project_id: int):
    """:class:`engine.train.Corpus` of the enabled sentences with at least one label."""
    from engine.train import Corpus

    names = set(c.name for c in store.list_categories(project_id))
    texts, labels = [], []
    for s in store.list_sentences(project_id, enabled_only=True):
        lab = [l for l in s.labels if l in names]
        if lab and s.text.strip():
            texts.append(s.text)
            labels.append(lab)
    return Corpus(texts=texts, labels=labels)


@dataclass
class TrainOutcome:
    """What :func:`train_project` returns: the run and classifier ids, the classifier file, the
    loss history and whether it was cancelled (then no classifier is recorded)."""

    run_id: int
    classifier_id: int | None
    classifier_path: Path | None
    history: list
    cancelled: bool
    elapsed_s: float


def _jsonable(obj):
    if is_dataclass(obj):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def spec_to_dict(spec) -> dict:
    """A :class:`BackboneSpec` as JSON (recorded with runs and classifiers)."""
    return _jsonable(spec)


def spec_from_dict(d: dict):
    """The :class:`BackboneSpec` recorded by :func:`spec_to_dict` (unknown keys ignored)."""
    from engine.clip_backbone import BackboneSpec

    known = {f.name for f in fields(BackboneSpec)}
    return BackboneSpec(**{k: v for k, v in d.items() if k in known})


def _borrowed_inputs(store, project_id: int, borrow_from):
    """(structure, hand-crafted prompts, corpus, the project's vocabulary) of a run on the project's
    vocabulary grown by ``borrow_from`` (engine.workflow.vocabularies). The fine groups are the
    cliques of the grown corpus's co-occurrence graph at the default tau (the project's own edge
    edits name only its own categories and are not applied here)."""
    from engine.reproduce import prompt_structure
    from engine.workflow.vocabularies import training_vocabulary

    own, grown = training_vocabulary(store, project_id, borrow_from)
    template = SETTINGS.handcrafted_template.replace("{name}", "{}")
    return prompt_structure(grown, SETTINGS.tau), grown.handcrafted(template), grown.corpus, own


def _run_inputs(store, project_id: int, borrow_from):
    """(structure, hand-crafted prompts, corpus, the project's vocabulary or None) of a run."""
    if borrow_from:
        return _borrowed_inputs(store, project_id, list(borrow_from))
    return (project_structure(store, project_id), handcrafted_prompts(store, project_id),
            training_corpus(store, project_id), None)


@owned
def train_project(store, project_id: int, backbone_spec=None, train_config=None,
                  on_step: Callable | None = None, should_stop: Callable | None = None,
                  device=None, borrow_from: Sequence[str] = ()) -> TrainOutcome:
    """Tune the project's prompts on its enabled sentences; record the run (config, status,
    per-step losses, timing); on success write ``classifier-run<id>.safetensors`` in the project
    folder and record it. A killed run resumes from its checkpoint when started again with the same
    config (the run row of an unfinished run with an identical config is reused).

    ``borrow_from``: preset keys or projects whose sentences train too (a bigger training
    vocabulary); the saved classifier keeps the project's categories only."""
    from engine.clip_backbone import BackboneSpec, load_backbone
    from engine.train import TrainConfig, train

    spec = backbone_spec or BackboneSpec()
    config = train_config or TrainConfig()
    structure, handcrafted, corpus, own = _run_inputs(store, project_id, borrow_from)
    if not corpus.texts:
        raise WorkflowError("This project has no enabled, labelled sentences: generate knowledge first.")
    cfg_json = {"train": _jsonable(config), "backbone": spec_to_dict(spec), "n_sentences": len(corpus.texts),
                "corpus_sha256": hashlib.sha256(json.dumps([corpus.texts, corpus.labels]).encode()).hexdigest()}
    if borrow_from:
        cfg_json["borrow_from"] = list(borrow_from)
    run_id = _start_run(store, project_id, cfg_json)
    try:
        backbone = load_backbone(spec, device=device)
    except BaseException:
        store.finish_run(run_id, "failed")
        raise
    folder = project_dir(store, project_id)
    if getattr(config, "feature_cache_dir", "unset") is None:  # frozen sentence features, reused by later runs
        import dataclasses

        config = dataclasses.replace(config, feature_cache_dir=str(folder / "features"))
    ckpt = folder / f"run{run_id}.ckpt"
    steps = _StepRecorder(store, run_id, on_step)
    t0 = time.time()
    try:
        result = train(backbone, structure, handcrafted, corpus, config, on_step=steps,
                       should_stop=should_stop, checkpoint_path=ckpt)
    except BaseException:
        steps.flush()
        store.finish_run(run_id, "failed", time.time() - t0)
        raise
    steps.flush()
    elapsed = time.time() - t0
    if result.cancelled:
        store.finish_run(run_id, "cancelled", elapsed)
        return TrainOutcome(run_id, None, None, result.history, True, elapsed)
    clf = result.classifier
    if own is not None:  # trained on a bigger vocabulary: keep the project's categories
        clf = clf.select(own.categories, own.synonyms)
        clf.meta.pop("selected_from", None)
        clf.meta["borrow_from"] = list(borrow_from)
        clf.meta["trained_categories"] = len(structure.categories)
    clf.meta = {**(clf.meta or {}), "backbone": spec_to_dict(spec), "run_id": run_id,
                "project": store.get_project(project_id).name}
    path = folder / f"classifier-run{run_id}.safetensors"
    clf.save(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    cid = store.add_classifier(project_id, run_id, str(path), digest)
    store.finish_run(run_id, "done", elapsed)
    if ckpt.exists():
        ckpt.unlink()
    return TrainOutcome(run_id, cid, path, result.history, False, elapsed)


@owned
def run_number(store, project_id: int, run_id: int) -> int:
    """The run's number within its project (1 = the project's first run), what a person sees;
    ``run_id`` is the database's id, shared by every project."""
    ids = [r.id for r in store.list_runs(project_id)]
    if run_id not in ids:
        raise WorkflowError(f"Run {run_id} is not a run of this project.")
    return ids.index(run_id) + 1


class _StepRecorder:
    """``on_step`` of a training run: per-step losses buffered and written every
    ``loss_flush_steps`` steps with a heartbeat of the run's lease; the first step of a process
    drops the steps recorded after the checkpoint it resumed from (they are redone)."""

    def __init__(self, store, run_id: int, on_step: Callable | None):
        self.store, self.run_id, self.on_step = store, run_id, on_step
        self.buffer: list[dict] = []
        self.first = True

    def __call__(self, info) -> None:
        if self.first:
            self.first = False
            self.store.delete_run_steps(self.run_id, after_step=info.step - 1)
        self.buffer.append({"step": info.step, "epoch": info.epoch, "lr": info.lr, "elapsed_s": info.elapsed_s,
                            **{k: float(v) for k, v in info.losses.items()}})
        if len(self.buffer) >= SETTINGS.loss_flush_steps:
            self.flush()
            self.store.renew_run_lease(self.run_id, current_lease())  # the heartbeat
        if self.on_step is not None:
            self.on_step(info)

    def flush(self) -> None:
        if self.buffer:
            self.store.add_run_steps(self.run_id, list(self.buffer))
            self.buffer.clear()


def run_is_dead(run) -> bool:
    """A run whose row says running but whose process is gone (engine.storage.run_lease)."""
    return run.status in ("running", "queued") and lease_is_dead(run.lease)


def claim_run(store, run_id: int) -> None:
    """Record this process as the one training ``run_id`` (its lease, heartbeat now)."""
    store.renew_run_lease(run_id, current_lease())


def _start_run(store, project_id: int, cfg_json: dict) -> int:
    """The run this training writes to. The newest run, when it has the same settings and
    sentences and was cancelled, failed, or left running by a process that died (killed -9, a
    crash), is taken over: training resumes from its checkpoint. A run still trained by a live
    process refuses the start; other dead runs are marked failed."""
    runs = store.list_runs(project_id)
    live = [r for r in runs if r.status in ("running", "queued") and not run_is_dead(r)]
    if live:
        raise WorkflowError(f"This project is already training in another process (run {live[-1].id}); "
                            f"wait for it to finish or cancel it.")
    last = runs[-1] if runs else None
    for r in runs:
        if run_is_dead(r) and not (r is last and r.config == cfg_json):
            store.finish_run(r.id, "failed")
    if last is not None and last.config == cfg_json and (last.status in ("cancelled", "failed") or run_is_dead(last)):
        resumable = lambda r: r.status in ("cancelled", "failed") or run_is_dead(r)  # noqa: E731
        if store.take_over_run(last.id, current_lease(), resumable):
            return last.id
        raise WorkflowError(f"Another process has just taken run {last.id} over.")
    return store.create_run(project_id, cfg_json, lease=current_lease())


@owned
def list_runs(store, project_id: int) -> list[dict]:
    """Past training runs, newest first: id, number (within the project), status, start, steps,
    final loss, seconds, config, and whether its classifier is the one in use."""
    out = []
    summaries = store.run_step_summaries(project_id)
    classifiers = store.list_classifiers(project_id)
    in_use = classifiers[-1].run_id if classifiers else None
    for number, r in enumerate(store.list_runs(project_id), start=1):
        n_steps, last = summaries.get(r.id, (0, {}))
        cfg = r.config or {}
        tc = cfg.get("train", {}) if isinstance(cfg, dict) else {}
        short = ", ".join(f"{k}={tc[k]}" for k in ("epochs", "lr", "batch_size") if k in tc)
        out.append({"id": r.id, "number": number, "status": r.status, "created": str(r.created)[:19],
                    "steps": n_steps, "final_loss": round(last["total"], 4) if "total" in last else None,
                    "elapsed": round(r.elapsed_s or 0, 1), "config": short, "in_use": r.id == in_use})
    return sorted(out, key=lambda x: -x["id"])


@owned
def active_classifier(store, project_id: int) -> dict | None:
    """The classifier that Classify, Evaluate and Export use (the newest): ``{"run": its run's
    number in the project, "created"}``; None before the first finished training."""
    classifiers = store.list_classifiers(project_id)
    if not classifiers:
        return None
    row = classifiers[-1]
    ids = [r.id for r in store.list_runs(project_id)]
    number = ids.index(row.run_id) + 1 if row.run_id in ids else None
    return {"run": number, "created": str(row.created)[:16]}


@owned
def run_history(store, project_id: int, run_id: int) -> list[dict]:
    """A run's stored per-step losses in the form studio.figures.loss_figure takes."""
    require_row(store.get_run(run_id).project_id, project_id)
    keys = ("total", "rank_global", "rank_local", "order_global", "order_local")
    return [{"step": s["step"], "losses": {k: s.get(k) for k in keys}} for s in store.run_steps(run_id)]
