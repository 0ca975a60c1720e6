"""Predict and evaluate on Ray Data: from one machine to a cluster.

The pipeline (one Ray Data dataset, streamed):

  read_binary_files(sources)   Ray lists the folders (recursively, image extensions) and the named
                               files, on any filesystem Ray reads (local paths, s3://, gs://, ...)
                               and reads each file's bytes in parallel read tasks
  -> map_batches(decode_batch) parallel CPU tasks: drop files already in the output, decode +
                               preprocess (engine.datasets.decode_image, as the local loader does)
  -> map_batches(ImageScorer)  a pool of `actors` model actors, each loads the CLIP image tower and
                               the classifiers once (`num_gpus` each when the cluster has GPUs) and
                               scores `batch_size` images per call with engine.batch_scoring (the
                               local path's scoring code: same rows, same scores)
  -> write_parquet / write_csv / write_json   shards in the output folder, plus `_summary.json`

Rows (engine.batch_scoring) are stored flat: ``file``, ``status``, ``error``, per classifier
``<name>_top_k`` (category names, best first; a JSON list in CSV) and one ``<name>:<category>``
score column per category (null for unreadable files). `read_output` turns shards back into
the local path's row dicts.

Resuming: before a run, the ``file`` column of every readable shard already in the output is read;
those files are dropped before decoding (their bytes are still read by the read tasks), so a
re-run with the same output scores only what is missing. Ray retries a task whose worker died
(the actor pool restarts actors and retries their tasks), so every file is scored exactly once.

Ray is optional: `require_ray()` says how to install it (``pip install '.[ray]'`` or
``pip install -r requirements-ray.txt``).
"""
from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from engine.batch_scoring import error_row, predict_rows, score_pixels
from engine.classifier import image_transform_for
from engine.datasets import IMAGE_EXTENSIONS, DatasetError, decode_image
from engine.errors import EngineError

FORMATS = ("parquet", "csv", "jsonl")
SUFFIX = {"parquet": ".parquet", "csv": ".csv", "jsonl": ".json"}
SUMMARY = "_summary.json"
INSTALL = "pip install '.[ray]' (or pip install -r requirements-ray.txt)"


class RayUnavailable(EngineError):
    """Ray Data is not installed; the message says how to install it."""


class RayPredictError(EngineError):
    """Bad input for the Ray path (one sentence)."""


@dataclass
class RaySettings:
    """How the Ray path runs.

    address: a Ray cluster (``ray://host:10001`` or ``host:6379``; "auto" = RAY_ADDRESS or a
    running local instance); None starts a private local instance for the run (or uses the one
    already initialised in this process). actors: model actors (None = one per GPU of the
    cluster, else 1). gpus_per_actor: None = 1 when the cluster has GPUs, else 0.
    batch_size: images per model call (and per decode task). fmt: output shards, parquet | csv
    | jsonl. draft_size: as LoaderSettings.draft_size (JPEG reduced-scale decoding).
    """

    address: str | None = None
    actors: int | None = None
    gpus_per_actor: float | None = None
    cpus_per_actor: float = 1.0
    batch_size: int = 32
    fmt: str = "parquet"
    draft_size: int | None = None


@dataclass
class RayPredictSummary:
    """Counts of a run: ``scored`` new files, ``failed`` unreadable ones (reported), ``skipped``
    already in the output; ``shards`` in the output; ``seconds`` of the Ray run."""

    output: str | None
    total: int
    scored: int = 0
    failed: int = 0
    skipped: int = 0
    cancelled: bool = False
    shards: int = 0
    seconds: float = 0.0
    actors: int = 0
    gpus_per_actor: float = 0.0
    rows: list = field(default_factory=list)


def require_ray():
    """Import ray and ray.data, or raise RayUnavailable with the install command."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise RayUnavailable(f"--ray needs Ray Data, which is not installed: {INSTALL}.") from e
    return ray


@contextmanager
def ray_session(address: str | None = None):
    """Use the Ray instance already initialised here, or connect to `address` (None: start a
    local one) for the duration of the block. Remote workers get this package (py_modules)."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    import engine

    runtime_env = None
    if address and address != "local":
        runtime_env = {"py_modules": [str(Path(engine.__file__).parent)]}
    ray.init(address=None if address in (None, "local") else address, runtime_env=runtime_env,
             include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        yield ray
    finally:
        ray.shutdown()


# ---- sources and names ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """One SOURCE as given, where Ray will see it (``resolved``: Ray's path, without scheme for
    URIs, absolute for local paths) and whether it is a folder."""

    given: str
    resolved: str
    is_dir: bool
    scheme: str = ""

    def name_of(self, ray_path: str) -> str | None:
        """The file's key as the local path writes it (a local file: its resolved absolute path,
        engine.workflow.predict_output.file_key; a URI: the source as given + relative path)."""
        if self.is_dir:
            root = self.resolved.rstrip("/") + "/"
            if not ray_path.startswith(root):
                return None
            rel = ray_path[len(root):]
        elif ray_path != self.resolved:
            return None
        if not self.scheme:
            return os.path.realpath(ray_path)
        return self.given.rstrip("/") + "/" + rel if self.is_dir else self.given


def resolve_sources(sources: Iterable[str | Path]) -> list[Source]:
    """Look each source up on its filesystem (pyarrow, as Ray does); a missing one raises."""
    import pyarrow.fs as pafs

    out = []
    for src in sources:
        src = str(src)
        if "://" in src:
            fs, path = pafs.FileSystem.from_uri(src)
            scheme = src.split("://", 1)[0]
        else:
            fs, path, scheme = pafs.LocalFileSystem(), str(Path(src).resolve()), ""
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise DatasetError(f"{src} does not exist.")
        out.append(Source(src, path.rstrip("/") if scheme else path, info.type == pafs.FileType.Directory, scheme))
    return out


def file_name(ray_path: str, sources: Sequence[Source]) -> str:
    for s in sources:
        name = s.name_of(ray_path)
        if name is not None:
            return name
    return ray_path


def read_sources(ray, sources: Sequence[Source]):
    """(A dataset of (bytes, path), the paths Ray listed): folders filtered to image extensions,
    named files as given."""
    exts = [e.lstrip(".") for e in IMAGE_EXTENSIONS]
    uri = [(s.given if s.scheme else s.resolved) for s in sources]
    folders = [u for u, s in zip(uri, sources) if s.is_dir]
    files = [u for u, s in zip(uri, sources) if not s.is_dir]
    parts = []
    if folders:
        parts.append(ray.data.read_binary_files(folders, include_paths=True, file_extensions=exts))
    if files:
        parts.append(ray.data.read_binary_files(files, include_paths=True))
    listed = [p for part in parts for p in part.input_files()]  # Ray's listing, nothing read yet
    return (parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])), listed


# ---- the two map steps ---------------------------------------------------------------------------

def decode_batch(batch: dict, preprocess, sources: Sequence[Source], done: frozenset,
                 draft_size: int | None) -> dict:
    """Ray task: file names, pixels (zeros where unreadable) and reasons; done files dropped."""
    import numpy as np
    import torch
    from PIL import Image

    names, pixels, errors = [], [], []
    for data, path in zip(batch["bytes"], batch["path"]):
        name = file_name(str(path), sources)
        if name in done:
            continue
        tensor, err = decode_image(bytes(data), preprocess, draft_size)
        names.append(name)
        pixels.append(tensor)
        errors.append(err or "")
    blank = None
    if any(t is None for t in pixels):
        blank = torch.zeros_like(preprocess(Image.new("RGB", (8, 8))))
    arr = (np.stack([(blank if t is None else t).numpy() for t in pixels]).astype(np.float32) if pixels
           else np.zeros((0, 3, 1, 1), np.float32))
    return {"file": np.array(names, dtype=object), "pixels": arr, "error": np.array(errors, dtype=object)}


class ImageScorer:
    """Ray actor: the CLIP image tower and the classifiers, loaded once; scores batches of pixels
    through engine.batch_scoring and returns rows as an Arrow table (`rows_to_table`)."""

    def __init__(self, backbone_spec, classifiers: dict, categories: list[str], top_k: int, fmt: str):
        from engine.clip_backbone import load_backbone

        self.backbone = load_backbone(backbone_spec)
        self.classifiers, self.categories, self.top_k, self.fmt = classifiers, categories, top_k, fmt

    def __call__(self, batch: dict):
        import torch

        files = [str(f) for f in batch["file"]]
        ok = [j for j, e in enumerate(batch["error"]) if not e]
        rows = []
        if ok:
            with torch.inference_mode():
                scores = score_pixels(self.backbone, self.classifiers, torch.from_numpy(batch["pixels"][ok]))
            rows = predict_rows(self.categories, range(len(ok)), scores, [files[j] for j in ok], self.top_k)
        rows += [error_row(files[j], str(batch["error"][j])) for j in range(len(files)) if batch["error"][j]]
        return rows_to_table(rows, list(self.classifiers), self.categories, self.fmt)


# ---- rows <-> shards -----------------------------------------------------------------------------

def rows_to_table(rows: list[dict], names: list[str], categories: list[str], fmt: str = "parquet"):
    """Row dicts -> one flat Arrow table (module docstring)."""
    import pyarrow as pa

    cols: dict[str, list] = {"file": [r["file"] for r in rows], "status": [r["status"] for r in rows],
                             "error": [r["error"] for r in rows]}
    fields = [pa.field("file", pa.string()), pa.field("status", pa.string()), pa.field("error", pa.string())]
    for n in names:
        top = [[c for c, _ in r[f"{n}_top_k"]] if f"{n}_top_k" in r else None for r in rows]
        if fmt == "csv":
            cols[f"{n}_top_k"] = [None if t is None else json.dumps(t, ensure_ascii=False) for t in top]
            fields.append(pa.field(f"{n}_top_k", pa.string()))
        else:
            cols[f"{n}_top_k"] = top
            fields.append(pa.field(f"{n}_top_k", pa.list_(pa.string())))
    for n in names:
        for c in categories:
            cols[f"{n}:{c}"] = [r[f"{n}_scores"][c] if f"{n}_scores" in r else None for r in rows]
            fields.append(pa.field(f"{n}:{c}", pa.float64()))
    return pa.table(cols, schema=pa.schema(fields))


def table_to_rows(table, categories: list[str] | None = None) -> list[dict]:
    """Flat table -> the local path's row dicts (top-k pairs and score dicts)."""
    names = [c[: -len("_top_k")] for c in table.column_names if c.endswith("_top_k")]
    out = []
    for rec in table.to_pylist():
        row = {"file": rec["file"], "status": rec["status"], "error": rec["error"] or ""}
        for n in names:
            top = rec[f"{n}_top_k"]
            if top is None:
                continue
            if isinstance(top, str):
                top = json.loads(top)
            cats = categories or [k.split(":", 1)[1] for k in rec if k.startswith(n + ":")]
            scores = {c: rec[f"{n}:{c}"] for c in cats}
            row[f"{n}_top_k"] = [[c, scores[c]] for c in top]
            row[f"{n}_scores"] = scores
        out.append(row)
    return out


def _output_fs(output: str):
    import pyarrow.fs as pafs

    if "://" in output:
        return pafs.FileSystem.from_uri(output)
    return pafs.LocalFileSystem(), str(Path(output).resolve())


def list_shards(output: str, fmt: str) -> list[str]:
    """Shard files in the output folder (names starting with _ or . are not shards)."""
    import pyarrow.fs as pafs

    fs, root = _output_fs(output)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=False))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(SUFFIX[fmt])
                  and not i.base_name.startswith(("_", ".")))


def read_shards(output: str, fmt: str, columns: list[str] | None = None):
    """(Arrow table of every readable shard, unreadable shard paths). A shard torn by a killed
    run is unreadable: it is reported and its files count as not done."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    fs, _ = _output_fs(output)
    tables, bad = [], []
    for path in list_shards(output, fmt):
        try:
            if fmt == "parquet":
                t = pq.read_table(path, columns=columns, filesystem=fs)
            else:
                with fs.open_input_stream(path) as fh:
                    t = (pacsv.read_csv(fh) if fmt == "csv" else pajson.read_json(fh))
                t = t.select(columns) if columns else t
            tables.append(t)
        except (pa.ArrowInvalid, OSError, KeyError):
            bad.append(path)
    if not tables:
        return None, bad
    return pa.concat_tables(tables, promote_options="permissive"), bad


def read_output(output: str | Path, fmt: str = "parquet", categories: list[str] | None = None) -> list[dict]:
    """Every row of a Ray predict output folder, as the local path's row dicts."""
    table, _ = read_shards(str(output), fmt)
    return [] if table is None else table_to_rows(table, categories)


# ---- the runs ------------------------------------------------------------------------------------

def _placement(ray, settings: RaySettings) -> tuple[int, float]:
    """(actors, gpus per actor) from the settings and the cluster's resources."""
    gpus = float(ray.cluster_resources().get("GPU", 0))
    per = settings.gpus_per_actor if settings.gpus_per_actor is not None else (1.0 if gpus else 0.0)
    actors = settings.actors or (max(1, int(gpus // per)) if per else 1)
    if actors < 1 or settings.batch_size < 1:
        raise RayPredictError("The actor count and the batch size must be at least 1.")
    return actors, per


def _scored(ray, ds, preprocess, sources, done, backbone_spec, classifiers, categories, top_k,
            settings: RaySettings, scorer=ImageScorer):
    """The dataset of output rows (Arrow tables) for `ds` (bytes, path)."""
    actors, gpus = _placement(ray, settings)
    decoded = ds.map_batches(decode_batch, batch_size=settings.batch_size, batch_format="numpy",
                             fn_kwargs={"preprocess": preprocess, "sources": list(sources), "done": done,
                                        "draft_size": settings.draft_size},
                             num_cpus=1, max_retries=-1)
    # The decode tasks' remote args (max_retries: a task whose worker died is retried until it
    # succeeds) differ from the actors', so Ray Data keeps decoding a stage of parallel tasks
    # instead of fusing it into the model actor.
    return decoded.map_batches(scorer, batch_size=settings.batch_size, batch_format="numpy",
                               fn_constructor_args=(backbone_spec, classifiers, list(categories), top_k,
                                                    settings.fmt),
                               compute=ray.data.ActorPoolStrategy(size=actors), num_gpus=gpus,
                               num_cpus=settings.cpus_per_actor)


def predict_on_ray(backbone, classifiers: dict, categories: list[str], sources: Iterable[str | Path],
                   output: str | Path, top_k: int = 3, settings: RaySettings | None = None,
                   scorer=ImageScorer) -> RayPredictSummary:
    """Score every image of `sources` on Ray Data into shards in the folder (or URI) `output`,
    skipping files already there; writes `_summary.json` beside the shards. `backbone` is the
    loaded backbone (its spec goes to the actors; the transform the classifiers ask for,
    engine.classifier.image_transform_for, to the decode tasks). `scorer`:
    the actor class (ImageScorer or a subclass)."""
    s = settings or RaySettings()
    if s.fmt not in FORMATS:
        raise RayPredictError(f"Output format {s.fmt!r} is not one of {', '.join(FORMATS)}.")
    output = str(output)
    srcs = resolve_sources(sources)
    with ray_session(s.address) as ray:
        ray.data.DataContext.get_current().enable_progress_bars = False
        before, bad = read_shards(output, s.fmt, ["file", "status"])
        done = frozenset(before.column("file").to_pylist()) if before is not None else frozenset()
        ds, paths = read_sources(ray, srcs)
        listed = [file_name(p, srcs) for p in paths]
        todo = [f for f in listed if f not in done]
        summary = RayPredictSummary(output, len(listed), skipped=len(listed) - len(todo))
        summary.actors, summary.gpus_per_actor = _placement(ray, s)
        t0 = time.perf_counter()
        if todo:
            transform = image_transform_for(backbone, classifiers)
            rows = _scored(ray, ds, transform, srcs, done, backbone.spec, classifiers, categories,
                           top_k, s, scorer)
            write = {"parquet": rows.write_parquet, "csv": rows.write_csv, "jsonl": rows.write_json}[s.fmt]
            write(output)
        summary.seconds = round(time.perf_counter() - t0, 3)
    after, bad = read_shards(output, s.fmt, ["file", "status"])
    new = [st for f, st in zip(after.column("file").to_pylist(), after.column("status").to_pylist())
           if f not in done] if after is not None else []
    summary.scored = sum(st == "ok" for st in new)
    summary.failed = len(new) - summary.scored
    summary.shards = len(list_shards(output, s.fmt))
    summary.cancelled = summary.skipped + summary.scored + summary.failed < summary.total
    _write_summary(output, summary, s, bad)
    return summary


def _write_summary(output: str, summary: RayPredictSummary, settings: RaySettings, bad: list[str]) -> None:
    fs, root = _output_fs(output)
    fs.create_dir(root, recursive=True)
    d = {k: v for k, v in asdict(summary).items() if k != "rows"}
    d.update(settings={k: v for k, v in asdict(settings).items()}, unreadable_shards=bad,
             images_per_s=round(summary.scored / summary.seconds, 2) if summary.seconds else None)
    with fs.open_output_stream(root.rstrip("/") + "/" + SUMMARY) as fh:
        fh.write(json.dumps(d, indent=1).encode())


def score_files_on_ray(backbone, classifiers: dict, categories: list[str], files: Sequence[str | Path],
                       settings: RaySettings | None = None):
    """Scores of every file (evaluate): ``(scores {name: ndarray [M', N] float32}, kept indices,
    failures [(file, reason)])`` in file order, as the local path's score_labelled_set returns."""
    import numpy as np

    s = settings or RaySettings()
    files = [str(f) for f in files]
    srcs = resolve_existing(files)
    missing = [f for f in files if f not in {x.given for x in srcs}]
    by_name: dict[str, dict] = {}
    if srcs:
        with ray_session(s.address) as ray:
            ray.data.DataContext.get_current().enable_progress_bars = False
            transform = image_transform_for(backbone, classifiers)
            rows = _scored(ray, read_sources(ray, srcs)[0], transform, srcs, frozenset(), backbone.spec,
                           classifiers, categories, len(categories), replace_fmt(s, "parquet"))
            for batch in rows.iter_batches(batch_format="pyarrow", batch_size=None):
                for row in table_to_rows(batch, list(categories)):
                    by_name[row["file"]] = row
    kept, failures = [], []
    parts: dict[str, list] = {n: [] for n in classifiers}
    for i, f in enumerate(files):
        row = by_name.get(os.path.realpath(f)) if f not in missing else None
        if row is None or row["status"] != "ok":
            reason = row["error"] if row else decode_image(f, lambda im: im)[1]
            failures.append((f, reason))
            continue
        kept.append(i)
        for n in classifiers:
            parts[n].append([row[f"{n}_scores"][c] for c in categories])
    N = len(categories)
    return ({n: np.asarray(v, np.float32).reshape(-1, N) for n, v in parts.items()}, kept, failures)


def resolve_existing(files: Sequence[str]) -> list[Source]:
    """Sources for the files that exist (a labelled set may list missing images: they fail)."""
    out = []
    for f in files:
        try:
            out += resolve_sources([f])
        except DatasetError:
            continue
    return out


def replace_fmt(settings: RaySettings, fmt: str) -> RaySettings:
    from dataclasses import replace

    return replace(settings, fmt=fmt)
