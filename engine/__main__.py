"""The command line: ``python -m engine`` (or the ``image-free`` console script).

Every subcommand is one :mod:`engine.workflow` call over the same project database the studio uses:

    new        a project from a preset (--preset voc2007|coco) or a vocabulary (--vocab FILE, --names)
    list       the projects in the database
    knowledge  ask the LLM the questions (resumable; progress bar)
    graph      recompute the co-occurrence graph at a threshold
    train      tune the prompts (progress bar with live losses)
    predict    score a folder (recursively) or files -> CSV or JSON lines (resumable)
    evaluate   VOC folder / COCO JSON / CSV -> mAP, F1@k, per-category AP (JSON + table)
    reproduce  the paper's table: preset knowledge -> train (paper's settings) -> VOC/COCO test split
    export     a project to one archive
    import     an archive into the database

Ctrl-C once stops long work cooperatively (what is done is kept; run again to resume); twice
aborts. Errors print one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
from pathlib import Path

from engine.errors import EngineError


# --------------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------------

def _add_global(p: argparse.ArgumentParser, suppress: bool) -> None:
    d = argparse.SUPPRESS if suppress else None
    g = p.add_argument_group("global options")
    g.add_argument("--db", default=d, help="project database (default: $IFS_DB or the user data folder)")
    g.add_argument("--device", default=d, help="torch device (default: cuda when present, else cpu)")
    g.add_argument("--clip-model", default=d, help="open_clip architecture, or tiny-rn / tiny-vit "
                   "(default: the model the project's classifier was trained with, else RN50)")
    g.add_argument("--clip-pretrained", default=d, help="open_clip pretrained tag (default openai; "
                   "'none' = random weights; tiny models are always random)")
    g.add_argument("--clip-checkpoint", default=d, help="local CLIP weights file")
    g.add_argument("--llm", default=d, help="bundled LLM: qwen1.5b (default), smollm2 or gemma3")
    g.add_argument("--gguf", default=d, help="path of any GGUF model file (llama.cpp)")
    g.add_argument("--llm-replay", default=d, help="recording of real LLM answers to replay (tests)")
    g.add_argument("--hub", default=d, help="Hub GGUF, fetched once: a curated name or OWNER/REPO/FILE.gguf")
    g.add_argument("--openai-base-url", default=d, help="OpenAI-compatible server, e.g. http://host:8000/v1")
    g.add_argument("--openai-model", default=d, help="model name on that server")
    g.add_argument("--openai-api-key", default=d, help="API key (default: $OPENAI_API_KEY)")
    g.add_argument("--llm-threads", type=int, default=d, help="llama.cpp threads")
    g.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS if suppress else False,
                   help="no progress bars")


def _sets(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override any {what} field (repeatable), e.g. --set epochs=1")


class UsageError(EngineError, SystemExit):
    """A command line that cannot run (bad --set, a number out of range): one line, exit 2."""

    def __init__(self, message: str):
        super().__init__(message)
        self.code = 2  # a SystemExit too: outside main() it still stops with status 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage block) and exit status 2."""
    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="image-free", description=__doc__.split("\n\n")[0],
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_global(ap, suppress=False)
    sub = ap.add_subparsers(dest="command", required=True)

    def cmd(name, help_):
        p = sub.add_parser(name, help=help_, description=help_)
        _add_global(p, suppress=True)
        return p

    p = cmd("new", "create a project from a preset or a vocabulary")
    p.add_argument("name")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", help="voc2007 or coco")
    src.add_argument("--vocab", help="file of category names, one a line or comma-separated")
    src.add_argument("--names", help="category names inline, comma-separated")

    cmd("list", "list the projects")

    p = cmd("knowledge", "generate knowledge with the LLM (resumable)")
    p.add_argument("project", help="project id or name")
    p.add_argument("--paper", action="store_true", help="the paper's full question counts")
    p.add_argument("--tau", type=int, default=None, help="co-occurrence threshold for the graph")
    _sets(p, "KnowledgeSettings")

    p = cmd("graph", "recompute the co-occurrence graph and its cliques")
    p.add_argument("project")
    p.add_argument("--tau", type=int, default=None)

    p = cmd("train", "tune the hierarchical prompts")
    p.add_argument("project")
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--borrow", action="append", default=[], metavar="SOURCE",
                   help="also train on the sentences of a preset (voc2007, coco) or another project "
                        "(repeatable); the classifier keeps this project's categories")
    _sets(p, "TrainConfig")

    p = cmd("predict", "score images: a folder (recursively) or files")
    p.add_argument("project")
    p.add_argument("inputs", nargs="+", help="image files and/or folders")
    p.add_argument("-o", "--output", required=True, help=".csv/.jsonl (resumable); --ray: folder/URI")
    p.add_argument("--format", choices=("csv", "jsonl", "parquet"), help="default: the output's suffix (--ray: parquet)")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--no-baseline", action="store_true", help="tuned classifier only")
    _loader_opts(p)

    p = cmd("evaluate", "mAP / F1@k on a labelled set, tuned vs hand-crafted")
    p.add_argument("project")
    p.add_argument("dataset", help="VOC folder, COCO instances JSON, or CSV/TSV of filename,labels")
    p.add_argument("--images", help="image folder (COCO/CSV; default: found beside the labels)")
    p.add_argument("--split", default="test", help="VOC ImageSets/Main split (default test)")
    p.add_argument("--include-difficult", action="store_true",
                   help="VOC: objects flagged difficult count as positives (default: left out, the standard protocol)")
    p.add_argument("-k", type=int, default=3, help="top-k for the F1 figures")
    p.add_argument("--json", help="write the result here (default: evaluation-<project>.json)")
    _loader_opts(p)

    _reproduce_options(cmd("reproduce", "the paper's table: train on the preset knowledge, score the test split"))

    p = cmd("export", "write a project to one archive")
    p.add_argument("project")
    p.add_argument("path")

    p = cmd("import", "read an archive into the database")
    p.add_argument("path")
    return ap


def _reproduce_options(p) -> None:
    p.add_argument("dataset", choices=("voc2007", "coco"))
    p.add_argument("--data", required=True, help="VOC 2007 folder (or VOCdevkit), or COCO instances "
                   "JSON / a folder holding annotations/instances_val2014.json and val2014/")
    p.add_argument("--knowledge", help="use this project's sentences instead of the preset's")
    p.add_argument("--no-borrow", action="store_true",
                   help="voc2007: train on VOC's sentences only (default: COCO's are borrowed, as the authors do)")
    p.add_argument("--json", help="also write the results here")
    _sets(p, "TrainConfig")
    _loader_opts(p)


def _loader_opts(p) -> None:
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="image-decoding worker processes")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS", help="run on Ray Data: a local "
                   "instance, or the cluster at ADDRESS (ray://host:10001, host:6379); after the sources")
    p.add_argument("--ray-actors", type=int, help="model actors (default: one per GPU, else 1)")
    p.add_argument("--ray-gpus-per-actor", type=float, help="default: 1 when the cluster has GPUs, else 0")


def _ray_settings(args, fmt: str | None = None):
    """RaySettings from --ray and its options (None without --ray)."""
    from engine.ray_predict import RaySettings

    return None if not args.ray else RaySettings(address=args.ray, actors=args.ray_actors, gpus_per_actor=args.ray_gpus_per_actor,
                       batch_size=args.batch_size, fmt=fmt or "parquet")


def _coerce(value: str, default):
    if isinstance(default, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{value!r} is not a boolean")
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    if isinstance(default, (tuple, list)):
        items = [v for v in value.replace(",", " ").split() if v]
        proto = default[0] if default else value
        return type(default)(_coerce(v, proto) for v in items)
    if default is None:
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def apply_sets(obj, sets: list[str]):
    """A copy of dataclass ``obj`` with ``KEY=VALUE`` overrides, typed after the current values;
    ``a.b=v`` reaches a nested dataclass field."""
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--set {item!r} is not KEY=VALUE")
        try:
            obj = _set_path(obj, key.strip().split("."), value.strip())
        except (ValueError, TypeError) as exc:  # the settings' own validation
            raise UsageError(f"--set {item}: {exc}") from None
    try:
        if sets and callable(getattr(obj, "validate", None)):
            obj.validate()
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--set: {exc}") from None
    return obj


def _set_path(obj, path, value):
    names = {f.name for f in dataclasses.fields(obj)}
    if path[0] not in names:
        raise UsageError(f"unknown setting {path[0]!r}; known: {', '.join(sorted(names))}")
    cur = getattr(obj, path[0])
    if len(path) > 1:
        new = _set_path(cur, path[1:], value)
    else:
        try:
            new = _coerce(value, cur)
        except ValueError as exc:
            raise UsageError(f"--set {path[0]}={value}: {exc}") from None
    return dataclasses.replace(obj, **{path[0]: new})


def backbone_spec(args):
    """BackboneSpec from the global options, or None to let the project decide."""
    if not (args.clip_model or args.clip_checkpoint or args.clip_pretrained):
        return None
    from engine.clip_backbone import TINY_MODELS, BackboneSpec

    model = args.clip_model or "RN50"
    pre = args.clip_pretrained
    if model in TINY_MODELS or (pre or "").lower() in ("none", "random"):
        pre = None
    elif pre is None:
        pre = "openai"
    return BackboneSpec(model=model, pretrained=pre, checkpoint=args.clip_checkpoint)


def llm_spec(args):
    from engine.llm import spec_from_options

    return spec_from_options(args.llm, args.gguf, args.hub, args.openai_base_url, args.openai_model,
                             args.openai_api_key, args.llm_threads, args.llm_replay)


class StopFlag:
    """First Ctrl-C asks long work to stop cooperatively; the second aborts."""

    def __init__(self):
        self.stop = False

    def __call__(self) -> bool:
        return self.stop

    def install(self):
        def handler(signum, frame):
            if self.stop:
                raise KeyboardInterrupt
            self.stop = True
            print("\nstopping after the current step (Ctrl-C again to abort)...", file=sys.stderr)

        try:
            signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread
            pass
        return self


def _bar(args, total, desc, unit):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=args.quiet, dynamic_ncols=True, file=sys.stderr)


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------

def cmd_new(args, store, stop):
    from engine import workflow as wf

    if args.vocab:
        try:
            text = Path(args.vocab).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise wf.VocabularyError(f"Vocabulary file {args.vocab} cannot be read: {exc}") from exc
        pid = wf.create_project(store, args.name, categories=text)
    elif args.names:
        pid = wf.create_project(store, args.name, categories=args.names)
    else:
        pid = wf.create_project(store, args.name, preset=args.preset)
    n = len(store.list_categories(pid))
    print(f"project {pid} {args.name!r}: {n} categories")
    return 0


def cmd_list(args, store, stop):
    from engine import workflow as wf

    for p in wf.list_projects(store):
        print(f"{p['id']}\t{p['name']}\t{p['n_categories']} categories")
    return 0


def cmd_knowledge(args, store, stop):
    from engine import workflow as wf
    from engine.knowledge import KnowledgeSettings

    pid = wf.find_project(store, args.project)
    settings = KnowledgeSettings.paper() if args.paper else KnowledgeSettings()
    settings = apply_sets(settings, args.sets)
    bar = _bar(args, None, "knowledge", "question")

    def progress(done, total, question=""):
        bar.total = total
        bar.n = done
        bar.set_postfix_str(str(question)[:50].replace("\n", " "), refresh=False)
        bar.refresh()

    try:
        k = wf.generate_knowledge(store, pid, llm_spec(args), settings, on_progress=progress,
                                  should_stop=stop, tau=args.tau)
    finally:
        bar.close()
    if stop():
        print("stopped; answers so far are cached - run the same command again to resume")
        return 1
    print(f"{len(k.sentences)} sentences, {sum(len(v) for v in k.attributes.values())} attributes")
    return 0


def cmd_graph(args, store, stop):
    from engine import workflow as wf

    pid = wf.find_project(store, args.project)
    view = wf.recompute_graph(store, pid, args.tau)
    print(f"tau={view.tau}: {view.graph.number_of_edges()} edges, {len(view.cliques)} cliques")
    for q in view.cliques:
        print("  " + ", ".join(q))
    return 0


def cmd_train(args, store, stop):
    from engine import workflow as wf
    from engine.train import TrainConfig

    pid = wf.find_project(store, args.project)
    cfg = TrainConfig()
    for opt, field in (("epochs", "epochs"), ("lr", "lr"), ("batch_size", "batch_size"), ("seed", "seed")):
        if getattr(args, opt) is not None:
            try:
                cfg = dataclasses.replace(cfg, **{field: getattr(args, opt)})
            except (ValueError, TypeError) as exc:
                raise UsageError(f"--{opt.replace('_', '-')}: {exc}") from None
    cfg = apply_sets(cfg, args.sets)
    bar = _bar(args, None, "train", "step")

    def on_step(info):
        bar.total = info.total_steps
        bar.n = info.step
        bar.set_postfix(epoch=info.epoch, lr=f"{info.lr:.2g}",
                        loss=f"{float(info.losses.get('total', float('nan'))):.4f}",
                        rank=f"{float(info.losses.get('rank_global', float('nan'))):.3f}", refresh=False)
        bar.refresh()

    try:
        out = wf.train_project(store, pid, backbone_spec(args), cfg, on_step=on_step, should_stop=stop,
                               device=args.device, borrow_from=args.borrow)
    finally:
        bar.close()
    if out.cancelled:
        print(f"run {out.run_id} stopped after {len(out.history)} steps; its checkpoint is kept")
        return 1
    last = out.history[-1].losses if out.history else {}
    print(f"run {out.run_id}: {len(out.history)} steps in {out.elapsed_s:.1f}s, final loss "
          f"{float(last.get('total', float('nan'))):.4f}; classifier {out.classifier_path}")
    return 0


def _loader(args):
    from engine.datasets import LoaderSettings

    return LoaderSettings(batch_size=args.batch_size, workers=args.workers)


def cmd_predict(args, store, stop):
    from engine import workflow as wf

    pid = wf.find_project(store, args.project)
    bar = _bar(args, None, "predict", "img")

    def progress(done, total):
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        s = wf.predict_files(store, pid, args.inputs, args.output, fmt=args.format,
                             backbone_spec=backbone_spec(args), top_k=args.top_k, loader=_loader(args),
                             include_baseline=not args.no_baseline, on_progress=progress,
                             should_stop=stop, device=args.device, ray=_ray_settings(args, args.format))
    finally:
        bar.close()
    print(f"{s.scored} scored, {s.failed} unreadable (reported), {s.skipped} already in "
          f"{s.output}; {s.total} files")
    return 1 if s.cancelled else 0


def cmd_evaluate(args, store, stop):
    from engine import workflow as wf
    from engine.datasets import VocOptions, read_labelled_set

    pid = wf.find_project(store, args.project)
    cats = store.list_categories(pid)
    data = read_labelled_set(args.dataset, image_dir=args.images, categories=[c.name for c in cats],
                             aliases={c.name: list(c.synonyms or []) for c in cats},
                             voc=VocOptions(split=args.split, include_difficult=args.include_difficult))
    bar = _bar(args, len(data), "evaluate", "img")

    def progress(done, total):
        bar.n = done
        bar.refresh()

    try:
        res = wf.evaluate_project(store, pid, data, backbone_spec=backbone_spec(args), k=args.k,
                                  loader=_loader(args), on_progress=progress, should_stop=stop,
                                  device=args.device, ray=_ray_settings(args))
    finally:
        bar.close()
    out = Path(args.json or f"evaluation-{pid}.json")
    out.write_text(json.dumps(res, indent=1, default=_json_default))
    print(f"{res['images']} images ({len(res['failures'])} unreadable), backbone {res['backbone']}")
    if res["unmatched_labels"]:
        print("labels not in the project: " + ", ".join(res["unmatched_labels"]))
    print(wf.format_metrics_table(res))
    print(f"written: {out}")
    return 0


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    return str(o)


def cmd_export(args, store, stop):
    from engine import workflow as wf

    pid = wf.find_project(store, args.project)
    print(f"written: {wf.export_project(store, pid, args.path)}")
    return 0


def cmd_import(args, store, stop):
    from engine import workflow as wf

    pid = wf.import_project(store, args.path)
    print(f"imported as project {pid} {store.get_project(pid).name!r}")
    return 0


def cmd_reproduce(args, store, stop):
    from engine import workflow as wf
    from engine.datasets import LoaderSettings
    from engine.train import TrainConfig

    cfg = apply_sets(TrainConfig(), args.sets)
    bar = _bar(args, None, "train", "step")

    def on_step(info):
        bar.total = info.total_steps
        bar.n = info.step
        bar.set_postfix(loss=f"{float(info.losses.get('total', float('nan'))):.4f}", refresh=False)
        bar.refresh()

    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr))
    try:
        result = wf.reproduce_paper(store, args.dataset, args.data, args.knowledge, backbone_spec(args), cfg,
                                    device=args.device, borrow_coco=not args.no_borrow,
                                    loader=LoaderSettings(batch_size=args.batch_size, workers=args.workers),
                                    on_step=on_step, log=log)
    finally:
        bar.close()
    print(result.table())
    if args.json:
        Path(args.json).write_text(json.dumps({"dataset": result.dataset, "results": result.results,
                                               "num_images": result.num_images, "steps": result.steps,
                                               "wall_s": result.wall_s, "device": result.device,
                                               "backbone": result.backbone}, indent=1, default=str))
    return 0


COMMANDS = {"new": cmd_new, "list": cmd_list, "knowledge": cmd_knowledge, "graph": cmd_graph,
            "train": cmd_train, "predict": cmd_predict, "evaluate": cmd_evaluate,
            "export": cmd_export, "import": cmd_import, "reproduce": cmd_reproduce}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from engine import workflow as wf

    stop = StopFlag().install()
    try:
        _check_options(args)
        store = wf.open_store(args.db)
        return COMMANDS[args.command](args, store, stop)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (EngineError, OSError) as exc:  # a message for the user, exit 2
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# Ranges of the numeric options: (attribute, option as typed, lowest, highest)
_NUMBER_RANGES = (("top_k", "--top-k", 1, 100_000), ("k", "-k", 1, 100_000), ("tau", "--tau", 0, 1_000_000_000),
                  ("epochs", "--epochs", 1, 1_000_000), ("batch_size", "--batch-size", 1, 1_000_000),
                  ("workers", "--workers", 0, 256), ("seed", "--seed", 0, 2 ** 32 - 1), ("llm_threads", "--llm-threads", 1, 1024),
                  ("ray_actors", "--ray-actors", 1, 100_000))


def _check_options(args) -> None:
    """The device exists and every numeric option lies in its range, before any work."""
    if args.device:
        from engine.device import parse_device
        parse_device(args.device)
    for attr, option, low, high in _NUMBER_RANGES:
        value = getattr(args, attr, None)
        if value is not None and not low <= value <= high:
            raise UsageError(f"{option} must lie between {low} and {high:,}, not {value}.")


if __name__ == "__main__":
    sys.exit(main())
