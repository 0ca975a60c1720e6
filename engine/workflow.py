"""Project-level actions: what the studio and the command line call, one function each.

Every function takes an open :class:`engine.storage.Store` and a project id, does one job over
the engine modules, writes its results through the store, and returns plain data. Long actions
take ``on_progress``/``on_step`` callbacks and a ``should_stop`` callable (cooperative cancel).

Method choices (METHOD.md):
- Vocabulary: names one a line or comma-separated; limits are :class:`WorkflowSettings` fields.
- Knowledge (section 1): the answers are cached in the store as they arrive
  (``store.answer_cache``), so a killed run resumes; the resulting attributes, sentences,
  super-categories and synonyms are written when the run ends. User-set super-categories and
  synonyms win over the LLM's.
- Graph (section 2): weights are recomputed from the enabled sentences' labels; the user's added and
  removed edges are kept apart by the store and re-applied after every recomputation.
- Training (sections 3-4): corpus = enabled sentences; the hand-crafted prompt of each category is
  the order-loss reference. The classifier file lands in ``<db folder>/projects/<id>/``.
- Inference (section 5) and evaluation (section 6): the tuned classifier and the hand-crafted
  zero-shot baseline score the same image features from one image-encoder pass.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from engine.datasets import (DatasetError, LabelledSet, LoaderSettings, image_loader, list_images,
                             read_labelled_set)

DEFAULT_HANDCRAFTED = "a photo of a {name}."


class VocabularyError(ValueError):
    """A vocabulary that cannot make a project; the message says what to fix."""


class WorkflowError(RuntimeError):
    """An action that cannot run in the project's current state (e.g. no sentences to train on)."""


@dataclass
class WorkflowSettings:
    """Limits and defaults of project actions.

    ``max_categories``/``max_name_length`` bound a vocabulary; ``handcrafted_template`` is the
    zero-shot prompt for a category without one of its own; ``tau`` the default co-occurrence
    threshold (METHOD.md section 2); ``loss_flush_steps`` how many training steps' losses are
    buffered before one store write.
    """

    max_categories: int = 1000
    max_name_length: int = 64
    handcrafted_template: str = DEFAULT_HANDCRAFTED
    tau: int = 3
    loss_flush_steps: int = 20


SETTINGS = WorkflowSettings()


# --------------------------------------------------------------------------------------------------
# Store
# --------------------------------------------------------------------------------------------------

def default_store_path() -> Path:
    """``$IFS_DB`` when set; in a Hugging Face Space (``$SPACE_ID``) ``data/studio.db`` in the app's
    folder; else ``studio.db`` under the user's data directory (engine.storage.default_db_path)."""
    from engine.storage import default_db_path

    return default_db_path()


def open_store(path: str | Path | None = None):
    """Open (creating when needed) the project database at ``path`` or :func:`default_store_path`."""
    from engine.storage import Store

    path = Path(path).expanduser() if path else default_store_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    return Store(path)


def project_dir(store, project_id: int) -> Path:
    """Folder for a project's files (classifiers, checkpoints): ``<db folder>/projects/<id>``."""
    return store.project_folder(project_id)


# --------------------------------------------------------------------------------------------------
# Vocabulary and projects
# --------------------------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def parse_vocabulary(text: str, settings: WorkflowSettings | None = None) -> list[str]:
    """Category names from text: one a line, or comma-separated (both may mix).

    Raises :class:`VocabularyError` for: no names; a blank name between commas; a name over
    ``max_name_length`` characters or with control characters; duplicates (case-insensitive, the
    message names them); more than ``max_categories`` names. Blank lines are ignored and inner
    whitespace is collapsed.
    """
    s = settings or SETTINGS
    names: list[str] = []
    for ln_no, line in enumerate((text or "").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(",")
        for k, part in enumerate(parts):
            name = " ".join(part.split())
            if not name:
                if k == len(parts) - 1 and len(parts) > 1:  # trailing comma: harmless
                    continue
                raise VocabularyError(f"Line {ln_no} has a blank name (two commas in a row or a "
                                      f"leading comma); remove it.")
            if _CONTROL.search(name):
                raise VocabularyError(f"The name {name!r} contains control characters.")
            if len(name) > s.max_name_length:
                raise VocabularyError(f"The name {name[:30]!r}... is {len(name)} characters long; "
                                      f"the limit is {s.max_name_length}.")
            names.append(name)
    if not names:
        raise VocabularyError("The vocabulary is empty: type category names, one a line or "
                              "separated by commas.")
    seen: dict[str, str] = {}
    dups: list[str] = []
    for n in names:
        key = n.casefold()
        if key in seen and n not in dups:
            dups.append(n)
        seen.setdefault(key, n)
    if dups:
        raise VocabularyError("Duplicate names (case does not count): " + ", ".join(dups) + ".")
    if len(names) > s.max_categories:
        raise VocabularyError(f"{len(names)} categories is over the limit of {s.max_categories}.")
    return names


def create_project(store, name: str, categories: Sequence[str] | str | None = None,
                   preset: str | None = None, settings: WorkflowSettings | None = None) -> int:
    """Create a project from a vocabulary (list of names or raw text) or a preset key
    (``voc2007``, ``coco``: names, super-categories, hand-crafted prompts, synonyms, and the
    preset's pre-generated knowledge when it exists). Returns the project id."""
    s = settings or SETTINGS
    if preset:
        from engine.presets import load_preset, load_preset_knowledge

        p = load_preset(preset)
        rows = [dict(name=c, super_category=p.super_of.get(c), prompt=p.prompts.get(c),
                     synonyms=list(p.synonyms.get(c, []))) for c in p.categories]
        knowledge = load_preset_knowledge(p.key)
        meta = {"preset": p.key}
    else:
        if categories is None:
            raise VocabularyError("Give a vocabulary or choose a preset.")
        names = parse_vocabulary(categories if isinstance(categories, str) else "\n".join(categories), s)
        rows = [dict(name=c, super_category=None, prompt=None, synonyms=[]) for c in names]
        knowledge = None
        meta = {}
    name = (name or "").strip()
    if not name:
        raise VocabularyError("The project needs a name.")
    pid = store.create_project(name, settings=meta)
    try:
        store.set_categories(pid, rows)
    except BaseException:
        store.delete_project(pid)
        raise
    if knowledge:
        _store_knowledge_dict(store, pid, knowledge, source_model=f"preset:{preset}")
        recompute_graph(store, pid, s.tau)
    return pid


# --------------------------------------------------------------------------------------------------
# Knowledge
# --------------------------------------------------------------------------------------------------

def generate_knowledge(store, project_id: int, llm_spec=None, settings=None,
                       on_progress: Callable | None = None, should_stop: Callable | None = None,
                       tau: int | None = None):
    """Ask the LLM every question (engine.knowledge), resumable through the store's answer cache,
    then store attributes, sentences, super-categories and synonyms, and recompute the graph.

    Returns the ``Knowledge``; when cancelled, what was answered stays cached and the stored
    knowledge is left as it was (run again to resume)."""
    from engine.knowledge import KnowledgeSettings, build_knowledge
    from engine.llm import LLMSpec, open_llm

    cats = store.list_categories(project_id)
    names = [c.name for c in cats]
    super_of = {c.name: c.super_category for c in cats if c.super_category}
    synonyms = {c.name: list(c.synonyms or []) for c in cats if c.synonyms}
    llm = open_llm(llm_spec or LLMSpec())
    knowledge = build_knowledge(names, llm, settings or KnowledgeSettings(), store.answer_cache(project_id),
                                on_progress=on_progress, should_stop=should_stop,
                                super_of=super_of or None, synonyms=synonyms or None)
    if getattr(knowledge, "cancelled", False):
        return knowledge
    from engine.presets import knowledge_to_dict

    _store_knowledge_dict(store, project_id, knowledge_to_dict(knowledge), source_model=llm.id)
    recompute_graph(store, project_id, tau if tau is not None else SETTINGS.tau)
    return knowledge


def _store_knowledge_dict(store, project_id: int, k: dict, source_model: str = "") -> None:
    """Write a knowledge dict (presets.knowledge_to_dict form) into the project."""
    cats = {c.name: c for c in store.list_categories(project_id)}
    for name, c in cats.items():
        sup = c.super_category or (k.get("super_of") or {}).get(name)
        syn = list(c.synonyms or [])
        for s_ in (k.get("synonyms") or {}).get(name, []):
            if s_.casefold() not in {x.casefold() for x in syn} and s_.casefold() != name.casefold():
                syn.append(s_)
        store.update_category(c.id, super_category=sup, synonyms=syn)
    attrs = k.get("attributes") or {}
    kept = k.get("filtered_attributes") or {}
    edited = {(a.category, a.text): a.kept for a in store.list_attributes(project_id) if a.edited}
    rows = []
    for name in cats:
        keep = set(kept.get(name, attrs.get(name, [])))
        for a in attrs.get(name, []):
            rows.append(dict(category=name, text=a, kept=edited.get((name, a), a in keep),
                             edited=(name, a) in edited))
    for a in k.get("common_attributes") or []:
        rows.append(dict(category=None, text=a, kept=edited.get((None, a), True), edited=(None, a) in edited))
    store.replace_attributes(project_id, rows)
    # the user's edited or hand-added sentences survive a regeneration
    mine = [s_ for s_ in store.list_sentences(project_id) if s_.edited or s_.source == "user"]
    have = {s_.text.casefold() for s_ in mine}
    rows = [dict(text=s_.text, labels=list(s_.labels), source=s_.source, category=s_.category,
                 enabled=s_.enabled, edited=s_.edited) for s_ in mine]
    rows += [dict(text=s_["text"], labels=list(s_["labels"]), source=s_.get("source", ""),
                  category=s_.get("category")) for s_ in k.get("sentences") or []
             if s_["text"].casefold() not in have]
    store.replace_sentences(project_id, rows)


# --------------------------------------------------------------------------------------------------
# Graph and prompt structure
# --------------------------------------------------------------------------------------------------

@dataclass
class GraphView:
    """The project's co-occurrence graph after user edits: ``weights`` {(a, b): n}, ``graph``
    (networkx), ``cliques`` (maximal, size >= 2), ``tau``."""

    weights: dict
    graph: object
    cliques: list[list[str]]
    tau: int


def recompute_graph(store, project_id: int, tau: int | None = None) -> GraphView:
    """Weights from the enabled sentences' labels, edges where weight >= tau, the user's added and
    removed edges re-applied, maximal cliques stored (METHOD.md section 2)."""
    from engine.graph import build_graph, cooccurrence, maximal_cliques

    tau = SETTINGS.tau if tau is None else int(tau)
    names = [c.name for c in store.list_categories(project_id)]
    labels = [s.labels for s in store.list_sentences(project_id, enabled_only=True)]
    weights = cooccurrence(labels, names)
    added, removed = store.edge_edits(project_id)
    graph = build_graph(weights, names, tau, added=added, removed=removed)
    cliques = maximal_cliques(graph)
    store.set_graph(project_id, weights=weights, tau=tau, cliques=cliques)
    return GraphView(weights, graph, cliques, tau)


def project_structure(store, project_id: int):
    """The :class:`engine.prompts.PromptStructure` of a project: categories, super-categories and
    the stored cliques."""
    from engine.prompts import PromptStructure

    cats = store.list_categories(project_id)
    super_of = {c.name: c.super_category for c in cats if c.super_category}
    return PromptStructure(categories=[c.name for c in cats], super_of=super_of,
                           cliques=[list(q) for q in store.get_cliques(project_id)])


def handcrafted_prompts(store, project_id: int, settings: WorkflowSettings | None = None) -> list[str]:
    """Each category's hand-crafted prompt (its own, else the template), in category order."""
    s = settings or SETTINGS
    return [c.prompt or s.handcrafted_template.format(name=c.name) for c in store.list_categories(project_id)]


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


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------

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


def train_project(store, project_id: int, backbone_spec=None, train_config=None,
                  on_step: Callable | None = None, should_stop: Callable | None = None,
                  device=None) -> TrainOutcome:
    """Tune the project's prompts on its enabled sentences; record the run (config, status,
    per-step losses, timing); on success write ``classifier-run<id>.safetensors`` in the project
    folder and record it. A killed run resumes from its checkpoint when started again with the same
    config (the run row of an unfinished run with an identical config is reused)."""
    from engine.clip_backbone import BackboneSpec, load_backbone
    from engine.train import TrainConfig, train

    spec = backbone_spec or BackboneSpec()
    config = train_config or TrainConfig()
    corpus = training_corpus(store, project_id)
    if not corpus.texts:
        raise WorkflowError("This project has no enabled, labelled sentences: generate knowledge first.")
    structure = project_structure(store, project_id)
    handcrafted = handcrafted_prompts(store, project_id)
    backbone = load_backbone(spec, device=device)
    cfg_json = {"train": _jsonable(config), "backbone": spec_to_dict(spec), "n_sentences": len(corpus.texts),
                "corpus_sha256": hashlib.sha256(json.dumps([corpus.texts, corpus.labels]).encode()).hexdigest()}
    runs = store.list_runs(project_id)
    if runs and runs[-1].status in ("cancelled", "failed") and runs[-1].config == cfg_json:
        run_id = runs[-1].id  # same settings and sentences: resume from its checkpoint
        store.set_run_status(run_id, "running")
    else:
        run_id = store.create_run(project_id, cfg_json)
    folder = project_dir(store, project_id)
    if getattr(config, "feature_cache_dir", "unset") is None:  # frozen sentence features, reused by later runs
        import dataclasses

        config = dataclasses.replace(config, feature_cache_dir=str(folder / "features"))
    ckpt = folder / f"run{run_id}.ckpt"
    buffer: list[dict] = []
    t0 = time.time()

    def step_cb(info):
        buffer.append({"step": info.step, "epoch": info.epoch, "lr": info.lr,
                       "elapsed_s": info.elapsed_s, **{k: float(v) for k, v in info.losses.items()}})
        if len(buffer) >= SETTINGS.loss_flush_steps:
            store.add_run_steps(run_id, list(buffer))
            buffer.clear()
        if on_step is not None:
            on_step(info)

    try:
        result = train(backbone, structure, handcrafted, corpus, config, on_step=step_cb,
                       should_stop=should_stop, checkpoint_path=ckpt)
    except BaseException:
        if buffer:
            store.add_run_steps(run_id, buffer)
        store.finish_run(run_id, "failed", time.time() - t0)
        raise
    if buffer:
        store.add_run_steps(run_id, buffer)
    elapsed = time.time() - t0
    if result.cancelled:
        store.finish_run(run_id, "cancelled", elapsed)
        return TrainOutcome(run_id, None, None, result.history, True, elapsed)
    clf = result.classifier
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


# --------------------------------------------------------------------------------------------------
# Classifiers and scoring
# --------------------------------------------------------------------------------------------------

def latest_classifier(store, project_id: int):
    """``(classifier_row, Classifier)`` of the project's newest classifier, or ``(None, None)``."""
    from engine.classifier import Classifier

    rows = store.list_classifiers(project_id)
    if not rows:
        return None, None
    row = rows[-1]
    return row, Classifier.load(row.path)


def project_backbone_spec(store, project_id: int, override=None):
    """The backbone to use: ``override`` when given, else the one the latest classifier was
    trained with, else the default :class:`BackboneSpec`."""
    from engine.clip_backbone import BackboneSpec

    if override is not None:
        return override
    row, clf = latest_classifier(store, project_id)
    if clf is not None and (clf.meta or {}).get("backbone"):
        return spec_from_dict(clf.meta["backbone"])
    return BackboneSpec()


def project_classifiers(store, project_id: int, backbone, include_tuned: bool = True):
    """``{"tuned": Classifier?, "handcrafted": Classifier}`` for scoring one image pass twice."""
    from engine.classifier import Classifier

    cats = [c.name for c in store.list_categories(project_id)]
    out = {}
    if include_tuned:
        _, clf = latest_classifier(store, project_id)
        if clf is not None:
            if list(clf.categories) != cats:
                raise WorkflowError("The project's categories changed since its classifier was "
                                    "trained; train again.")
            if clf.model_name != backbone.name:
                raise WorkflowError(f"The classifier was trained on {clf.model_name}, but the "
                                    f"backbone loaded is {backbone.name}; use the same CLIP model.")
            out["tuned"] = clf
    out["handcrafted"] = Classifier.from_prompts(backbone, cats, handcrafted_prompts(store, project_id))
    return out


def stream_scores(backbone, classifiers: dict, files: Sequence[str | Path],
                  loader: LoaderSettings | None = None, should_stop: Callable | None = None):
    """Yield ``(indices, {name: scores [b, N] float32 CPU}, failures)`` per batch, in file order:
    images decode in DataLoader workers, one image-encoder pass per batch feeds every classifier."""
    import torch

    dl = image_loader(files, backbone.preprocess, loader, pin_memory=backbone.device.type == "cuda")
    with torch.inference_mode():
        for batch in dl:
            scores = {}
            if batch.pixels is not None:
                pix = batch.pixels.to(backbone.device, non_blocking=True)
                glob, dense = backbone.image_features(pix)
                scores = {k: c.scores(glob, dense).float().cpu() for k, c in classifiers.items()}
            yield batch.indices, scores, batch.failures
            if should_stop is not None and should_stop():
                return


# --------------------------------------------------------------------------------------------------
# Prediction
# --------------------------------------------------------------------------------------------------

@dataclass
class PredictSummary:
    """Counts of a predict run: ``scored`` new files, ``failed`` unreadable ones (reported in the
    output), ``skipped`` already in the output from an earlier run, ``cancelled``."""

    output: Path | None
    total: int
    scored: int = 0
    failed: int = 0
    skipped: int = 0
    cancelled: bool = False
    rows: list = field(default_factory=list)


def _done_files(path: Path, fmt: str) -> set[str]:
    """Files already present in an earlier output (scored or reported), for resuming. A torn last
    line (killed mid-write) is dropped so the file is rewritten cleanly."""
    done: set[str] = set()
    if not path.exists() or path.stat().st_size == 0:
        return done
    raw = path.read_bytes()
    if not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]
        path.write_bytes(raw)
    text = raw.decode("utf-8", errors="replace")
    if fmt == "jsonl":
        for line in text.splitlines():
            try:
                done.add(json.loads(line)["file"])
            except (ValueError, KeyError, TypeError):
                continue
    else:
        rows = list(csv.reader(io.StringIO(text)))
        for r in rows[1:]:
            if r:
                done.add(r[0])
    return done


def _top_k(row, categories, k):
    from engine.classifier import top_k

    return [[name, _f32(score)] for name, score in top_k(row, categories, k)]


def _f32(v) -> float:
    """A float32 score as the shortest decimal that reads back to the same float32 (9 digits)."""
    return float(f"{float(v):.9g}")


def predict_rows(categories: list[str], indices, scores: dict, files, top_k: int) -> list[dict]:
    """Output rows (dicts) of one batch: file, status, top-k of each classifier, all scores."""
    rows = []
    arrays = {name: sc.numpy() for name, sc in scores.items()}
    for j, i in enumerate(indices):
        row = {"file": str(files[i]), "status": "ok", "error": ""}
        for name, arr in arrays.items():
            vals = arr[j]
            row[f"{name}_top_k"] = _top_k(vals, categories, top_k)
            row[f"{name}_scores"] = dict(zip(categories, [_f32(v) for v in vals.tolist()]))
        rows.append(row)
    return rows


def _csv_header(categories, names):
    head = ["file", "status", "error"]
    for n in names:
        head.append(f"{n}_top_k")
    for n in names:
        head += [f"{n}:{c}" for c in categories]
    return head


def _csv_line(row, categories, names):
    out = [row["file"], row["status"], row["error"]]
    for n in names:
        tk = row.get(f"{n}_top_k") or []
        out.append(";".join(f"{c}:{v:.4f}" for c, v in tk))
    for n in names:
        sc = row.get(f"{n}_scores") or {}
        out += [repr(sc[c]) if c in sc else "" for c in categories]
    return out


def _output_format(output: Path | None, fmt: str | None) -> str:
    fmt = (fmt or (output.suffix.lstrip(".") if output else "jsonl")).lower()
    fmt = {"json": "jsonl", "ndjson": "jsonl"}.get(fmt, fmt)
    if fmt not in ("csv", "jsonl"):
        raise WorkflowError(f"Output format {fmt!r} is not csv or jsonl (name the output .csv or .jsonl).")
    return fmt


def predict_with(backbone, classifiers: dict, categories: list[str], inputs: Iterable[str | Path],
                 output: str | Path | None = None, fmt: str | None = None, top_k: int = 3,
                 loader: LoaderSettings | None = None, on_progress: Callable | None = None,
                 should_stop: Callable | None = None) -> PredictSummary:
    """The predict pipeline over given classifiers (see :func:`predict_files`)."""
    files = [str(f) for f in list_images(inputs)]
    out = Path(output) if output else None
    fmt = _output_format(out, fmt)
    done = _done_files(out, fmt) if out else set()
    todo = [f for f in files if f not in done]
    summary = PredictSummary(out, len(files), skipped=len(files) - len(todo))
    names = list(classifiers)
    fh = writer = None
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        new = not out.exists() or out.stat().st_size == 0
        fh = open(out, "a", newline="", encoding="utf-8")
        if fmt == "csv":
            writer = csv.writer(fh)
            if new:
                writer.writerow(_csv_header(categories, names))
    try:
        if on_progress:
            on_progress(summary.skipped, summary.total)
        for indices, scores, failures in stream_scores(backbone, classifiers, todo, loader, should_stop):
            rows = predict_rows(categories, indices, scores, todo, top_k) if indices else []
            order = list(indices) + [i for i, _ in failures]
            rows += [{"file": todo[i], "status": "error", "error": err} for i, err in failures]
            rows = [r for _, r in sorted(zip(order, rows), key=lambda t: t[0])]
            summary.scored += len(indices)
            summary.failed += len(failures)
            if fh is None:
                summary.rows.extend(rows)
            else:
                for r in rows:
                    if writer is not None:
                        writer.writerow(_csv_line(r, categories, names))
                    else:
                        fh.write(json.dumps(r, ensure_ascii=False) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            if on_progress:
                on_progress(summary.skipped + summary.scored + summary.failed, summary.total)
        summary.cancelled = summary.skipped + summary.scored + summary.failed < summary.total
    finally:
        if fh:
            fh.close()
    return summary


def predict_files(store, project_id: int, inputs: Iterable[str | Path], output: str | Path | None = None,
                  fmt: str | None = None, backbone_spec=None, top_k: int = 3,
                  loader: LoaderSettings | None = None, include_baseline: bool = True,
                  on_progress: Callable | None = None, should_stop: Callable | None = None,
                  device=None) -> PredictSummary:
    """Score image files (folders expand recursively, sorted) with the tuned classifier (when the
    project has one) and the hand-crafted baseline, from one image-encoder pass.

    ``output`` (``.csv`` or ``.jsonl``, or ``fmt``) is appended batch by batch and flushed, so a
    killed run loses at most the batch in flight; a re-run skips files already in it (scored or
    reported). Unreadable files get a row with ``status="error"`` and the reason. With no output
    the rows are returned in ``PredictSummary.rows``. ``on_progress(done, total)``.

    Row fields: ``file``, ``status``, ``error``, and per classifier (``tuned``, ``handcrafted``)
    ``<name>_top_k`` ``[[category, score]]`` and ``<name>_scores`` ``{category: score}`` (CSV:
    one ``<name>:<category>`` column per score, top-k as ``cat:score;cat:score``).
    """
    from engine.clip_backbone import load_backbone

    _output_format(Path(output) if output else None, fmt)  # fail before loading anything
    inputs = list_images(inputs)
    spec = project_backbone_spec(store, project_id, backbone_spec)
    backbone = load_backbone(spec, device=device)
    clfs = project_classifiers(store, project_id, backbone)
    if not include_baseline and "tuned" in clfs:
        clfs.pop("handcrafted")
    cats = [c.name for c in store.list_categories(project_id)]
    return predict_with(backbone, clfs, cats, inputs, output, fmt, top_k, loader, on_progress, should_stop)


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------

def score_labelled_set(backbone, classifiers: dict, data: LabelledSet, loader: LoaderSettings | None = None,
                       on_progress: Callable | None = None, should_stop: Callable | None = None):
    """Score every image of ``data``; returns ``(scores {name: ndarray [M', N]}, kept indices,
    failures [(path, reason)])`` - unreadable images are left out of every classifier alike."""
    import numpy as np

    parts: dict[str, list] = {k: [] for k in classifiers}
    kept: list[int] = []
    failures: list[tuple[str, str]] = []
    n = len(data.images)
    for indices, scores, fails in stream_scores(backbone, classifiers, data.images, loader, should_stop):
        kept.extend(indices)
        for k, v in scores.items():
            parts[k].append(v.numpy())
        failures.extend((str(data.images[i]), err) for i, err in fails)
        if on_progress:
            on_progress(len(kept) + len(failures), n)
    N = len(data.categories)
    return ({k: (np.concatenate(v) if v else np.zeros((0, N), np.float32)) for k, v in parts.items()},
            kept, failures)


def evaluate_project(store, project_id: int, dataset: str | Path | LabelledSet, image_dir=None,
                     backbone_spec=None, k: int = 3, loader: LoaderSettings | None = None,
                     on_progress: Callable | None = None, should_stop: Callable | None = None,
                     device=None, save: bool = True) -> dict:
    """mAP, CP/CR/CF1/OP/OR/OF1 at top-``k`` and per-category AP of the tuned classifier and the
    hand-crafted baseline on the same images (METHOD.md section 6), stored as an evaluation row.

    ``dataset``: a VOC folder, a COCO instances JSON or a CSV/TSV of filename,labels (or a
    ready :class:`LabelledSet`). Dataset names are matched to the project's categories
    (synonyms count); unreadable images are skipped for both and listed in ``failures``."""
    from engine.clip_backbone import load_backbone
    from engine.metrics import evaluate_scores

    cats = store.list_categories(project_id)
    names = [c.name for c in cats]
    aliases = {c.name: list(c.synonyms or []) for c in cats}
    data = dataset if isinstance(dataset, LabelledSet) else read_labelled_set(
        dataset, image_dir=image_dir, categories=names, aliases=aliases)
    if list(data.categories) != names:
        raise WorkflowError("The labelled set's categories are not the project's.")
    spec = project_backbone_spec(store, project_id, backbone_spec)
    backbone = load_backbone(spec, device=device)
    clfs = project_classifiers(store, project_id, backbone)
    scores, kept, failures = score_labelled_set(backbone, clfs, data, loader, on_progress, should_stop)
    if should_stop is not None and should_stop():
        raise WorkflowError("Evaluation cancelled.")
    if not kept:
        raise WorkflowError("No image of the labelled set could be read.")
    targets = data.targets[kept]
    result = {
        "dataset": data.source, "kind": data.kind, "images": len(kept), "k": k,
        "backbone": backbone.name, "categories": names,
        "positives": {c: int(v) for c, v in zip(names, targets.sum(0).tolist())},
        "unmatched_labels": data.unmatched,
        "failures": [{"file": f, "error": e} for f, e in failures],
        "results": {name: _finite(evaluate_scores(sc, targets, names, k=k)) for name, sc in scores.items()},
    }
    if save:
        row, _ = latest_classifier(store, project_id) if "tuned" in clfs else (None, None)
        result["evaluation_id"] = store.add_evaluation(project_id, data.source, result,
                                                       classifier_id=row.id if row else None)
    return result


def _finite(obj):
    """nan -> None, recursively (strict JSON for the store and the CLI's file)."""
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def format_metrics_table(result: dict) -> str:
    """A plain-text table: one column per classifier, rows mAP, F1 keys, then per-category AP."""
    names = list(result["results"])
    keys = ["mAP", "CP", "CR", "CF1", "OP", "OR", "OF1"]
    w = max([12] + [len(c) + 2 for c in result["categories"]])

    def fmt(v):
        return "   -  " if v is None or v != v else f"{v:6.2f}"

    lines = [f"{'':<{w}}" + "".join(f"{n:>14}" for n in names)]
    for key in keys:
        lines.append(f"{key + ('@' + str(result['k']) if key != 'mAP' else ''):<{w}}" +
                     "".join(f"{fmt(result['results'][n].get(key)):>14}" for n in names))
    lines.append("per-category AP")
    for c in result["categories"]:
        lines.append(f"  {c:<{w - 2}}" + "".join(
            f"{fmt(result['results'][n]['per_category_ap'].get(c)):>14}" for n in names))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Export / import
# --------------------------------------------------------------------------------------------------

def export_project(store, project_id: int, path: str | Path) -> Path:
    """Write the project (rows + classifier files) to one archive at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    store.export_project(project_id, path)
    return path


def import_project(store, path: str | Path) -> int:
    """Import an archive written by :func:`export_project`; returns the new project id (renamed on a
    name clash)."""
    return store.import_project(Path(path))


def find_project(store, ref: str | int) -> int:
    """A project id from an id or a name (exact, then case-insensitive)."""
    projects = store.list_projects()
    ref_s = str(ref).strip()
    for p in projects:
        if str(p.id) == ref_s or p.name == ref_s:
            return p.id
    for p in projects:
        if p.name.casefold() == ref_s.casefold():
            return p.id
    known = ", ".join(f"{p.id}:{p.name}" for p in projects) or "none"
    raise WorkflowError(f"No project {ref_s!r} (projects: {known}).")


# ==================================================================================================
# Studio-only actions (appended by the studio engineer below this line)
# ==================================================================================================


# --- studio actions ---
# Small read/edit actions the studio's panels need beyond the project-level actions above.
# Each is one function over the store; the studio shows what they return.

def studio_list_projects(store, owner: str | None = None) -> list[dict]:
    """``[{"id", "name", "n_categories"}]`` of every project (only those whose settings name
    ``owner`` when given: a shared Space shows each visitor their own projects), newest last."""
    return [{"id": p.id, "name": p.name, "n_categories": len(store.list_categories(p.id))}
            for p in store.list_projects()
            if owner is None or (p.settings or {}).get("owner") == owner]


def studio_set_owner(store, project_id: int, owner: str) -> None:
    """Record the visitor that made (or imported) a project, in its settings."""
    store.set_project_settings(project_id, {"owner": owner})


def studio_project_info(store, project_id: int) -> dict:
    """Name, category names and counts of one project (raises WorkflowError when it is gone)."""
    try:
        p = store.get_project(project_id)
    except Exception as exc:  # the store's not-found error
        raise WorkflowError(f"Project {project_id} does not exist (deleted?).") from exc
    if p is None:
        raise WorkflowError(f"Project {project_id} does not exist (deleted?).")
    cats = [c.name for c in store.list_categories(project_id)]
    return {"id": p.id, "name": p.name, "categories": cats, "n_categories": len(cats),
            "n_sentences": len(store.list_sentences(project_id, enabled_only=True)),
            "n_runs": len(store.list_runs(project_id)),
            "has_classifier": bool(store.list_classifiers(project_id))}


def studio_rename_project(store, project_id: int, name: str) -> None:
    name = " ".join((name or "").split())
    if not name:
        raise WorkflowError("The new name is empty.")
    store.rename_project(project_id, name)


def studio_delete_project(store, project_id: int) -> None:
    store.delete_project(project_id)


def _category(store, project_id: int, name: str):
    for c in store.list_categories(project_id):
        if c.name == name:
            return c
    raise WorkflowError(f"The project has no category {name!r}.")


def studio_category_details(store, project_id: int, name: str) -> dict:
    """Attributes (text, kept), synonyms, super-category and hand-crafted prompt of one category."""
    c = _category(store, project_id, name)
    attrs = [{"text": a.text, "kept": bool(a.kept)} for a in store.list_attributes(project_id)
             if a.category == name]
    return {"attributes": attrs, "synonyms": list(c.synonyms or []), "super": c.super_category,
            "prompt": c.prompt}


def studio_update_category(store, project_id: int, name: str, attributes=None, synonyms=None,
                           super_=None, prompt=None) -> None:
    """Write the person's edits of one category; attributes replace that category's list (marked
    as edited by the user)."""
    c = _category(store, project_id, name)
    store.update_category(c.id, super_category=super_, synonyms=list(synonyms or []), prompt=prompt)
    if attributes is not None:
        old = {a.text: a for a in store.list_attributes(project_id) if a.category == name}
        rows = [dict(category=a.category, text=a.text, kept=bool(a.kept), edited=bool(a.edited))
                for a in store.list_attributes(project_id) if a.category != name]
        rows += [dict(category=name, text=a["text"], kept=bool(a["kept"]),
                      edited=(a["text"] not in old or bool(old[a["text"]].kept) != bool(a["kept"])
                              or bool(old[a["text"]].edited)))
                 for a in attributes]
        store.replace_attributes(project_id, rows)


def studio_regenerate_category(store, project_id: int, name: str, llm_spec=None, settings=None,
                               on_progress=None, should_stop=None):
    """Ask the questions about one category again with a fresh seed (knowledge.Regenerate);
    questions depending on the new answers follow, everything else comes from the answer cache.
    The user's edited attributes and sentences are kept (as in :func:`generate_knowledge`)."""
    from engine.knowledge import KnowledgeSettings, Regenerate, build_knowledge
    from engine.llm import LLMSpec, open_llm
    from engine.presets import knowledge_to_dict

    _category(store, project_id, name)
    cats = store.list_categories(project_id)
    super_of = {c.name: c.super_category for c in cats if c.super_category}
    synonyms = {c.name: list(c.synonyms or []) for c in cats if c.synonyms}
    llm = open_llm(llm_spec or LLMSpec())
    knowledge = build_knowledge([c.name for c in cats], llm, settings or KnowledgeSettings(),
                                store.answer_cache(project_id), on_progress=on_progress,
                                should_stop=should_stop, super_of=super_of or None,
                                synonyms=synonyms or None, regenerate=Regenerate(categories=[name]))
    if should_stop is not None and should_stop():
        return knowledge
    _store_knowledge_dict(store, project_id, knowledge_to_dict(knowledge), source_model=llm.id)
    recompute_graph(store, project_id)
    return knowledge


def studio_list_sentences(store, project_id: int, category=None, source=None, search: str = "",
                          include_disabled: bool = True) -> list[dict]:
    """Sentences filtered by a category (in its labels), a source question and a search text."""
    q = (search or "").casefold()
    out = []
    for s in store.list_sentences(project_id, enabled_only=not include_disabled):
        if category and category not in s.labels:
            continue
        if source and s.source != source:
            continue
        if q and q not in s.text.casefold():
            continue
        out.append({"id": s.id, "text": s.text, "labels": list(s.labels), "source": s.source,
                    "category": s.category, "enabled": bool(s.enabled)})
    return out


def studio_sentence_sources(store, project_id: int) -> list[str]:
    return sorted({s.source for s in store.list_sentences(project_id) if s.source})


def studio_sentence_counts(store, project_id: int) -> dict[str, int]:
    """Enabled sentences labelled with each category (0 for an uncovered one)."""
    counts = {c.name: 0 for c in store.list_categories(project_id)}
    for s in store.list_sentences(project_id, enabled_only=True):
        for lab in s.labels:
            if lab in counts:
                counts[lab] += 1
    return counts


def studio_update_sentence(store, project_id: int, sentence_id: int, text: str, labels, enabled: bool) -> None:
    text = " ".join((text or "").split())
    if not text:
        raise WorkflowError("A sentence cannot be empty; delete it instead.")
    names = {c.name for c in store.list_categories(project_id)}
    unknown = [l for l in labels if l not in names]
    if unknown:
        raise WorkflowError(f"Unknown labels: {', '.join(unknown)}; use the project's category names.")
    store.update_sentence(sentence_id, text=text, labels=list(labels), enabled=bool(enabled))


def studio_delete_sentence(store, project_id: int, sentence_id: int) -> None:
    store.delete_sentence(sentence_id)


def studio_graph(store, project_id: int, tau=None) -> dict:
    """Recompute the graph at ``tau`` and return plain data for drawing it."""
    g = recompute_graph(store, project_id, tau)
    cats = store.list_categories(project_id)
    added, removed = store.edge_edits(project_id)
    return {"categories": [c.name for c in cats], "edges": [tuple(e) for e in g.graph.edges()],
            "weights": dict(g.weights), "super_of": {c.name: c.super_category for c in cats if c.super_category},
            "cliques": g.cliques, "tau": g.tau, "added": [tuple(p) for p in added],
            "removed": [tuple(p) for p in removed]}


def studio_edit_edge(store, project_id: int, a: str, b: str, action: str) -> None:
    """``action``: "add" or "remove" an edge (kept apart from computed edges), or "clear" every
    edit."""
    if action == "clear":
        store.clear_edge_edits(project_id)
        return
    names = {c.name for c in store.list_categories(project_id)}
    for n in (a, b):
        if n not in names:
            raise WorkflowError(f"The project has no category {n!r}.")
    store.set_edge_edit(project_id, a, b, action)


def studio_list_runs(store, project_id: int) -> list[dict]:
    """Past training runs, newest first: id, status, start, steps, final loss, seconds, config."""
    out = []
    for r in store.list_runs(project_id):
        steps = store.run_steps(r.id)
        cfg = r.config or {}
        tc = cfg.get("train", {}) if isinstance(cfg, dict) else {}
        short = ", ".join(f"{k}={tc[k]}" for k in ("epochs", "lr", "batch_size") if k in tc)
        out.append({"id": r.id, "status": r.status, "created": str(r.created)[:19], "steps": len(steps),
                    "final_loss": round(steps[-1]["total"], 4) if steps and "total" in steps[-1] else None,
                    "elapsed": round(r.elapsed_s or 0, 1), "config": short})
    return sorted(out, key=lambda x: -x["id"])


def studio_run_history(store, project_id: int, run_id: int) -> list[dict]:
    """A run's stored per-step losses in the form studio.figures.loss_figure takes."""
    keys = ("total", "rank_global", "rank_local", "order_global", "order_local")
    return [{"step": s["step"], "losses": {k: s.get(k) for k in keys}} for s in store.run_steps(run_id)]


CLASSIFIER_SNIPPET = '''# pip install -r requirements.txt   (this project's engine)
from PIL import Image
from engine.classifier import Classifier, score_images, top_k
from engine.clip_backbone import BackboneSpec, load_backbone

clf = Classifier.load("{file}")
backbone = load_backbone(BackboneSpec(model={model!r}, pretrained={pretrained!r}))
scores = score_images(backbone, clf, [Image.open("photo.jpg")])
print(top_k(scores[0], clf.categories, k=3))
'''


def studio_export_classifier(store, project_id: int, folder: str | Path):
    """Copy the project's newest classifier into ``folder``, named after the project, and write the
    Python snippet that uses it. -> (file path, snippet, Classifier); WorkflowError when the
    project has no classifier yet."""
    import shutil

    row, clf = latest_classifier(store, project_id)
    if row is None:
        raise WorkflowError("This project has no classifier yet: train it first (step 5).")
    name = str(studio_project_info(store, project_id)["name"]).replace("/", "_")[:60] or "classifier"
    dest = Path(folder) / f"{name}.safetensors"
    shutil.copyfile(row.path, dest)
    bk = (clf.meta or {}).get("backbone") or {}
    snippet = CLASSIFIER_SNIPPET.format(file=dest.name, model=bk.get("model", "RN50"),
                                        pretrained=bk.get("pretrained", "openai"))
    return dest, snippet, clf
