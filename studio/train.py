"""Step 5, Train: the settings with the paper's defaults (``TrainConfig()`` and ``PromptLayout()``
as the engine defines them; the widgets are made from their fields, each checked with a message
next to them), the device shown, start, live loss curves while it runs (order losses on their own
axis), elapsed and remaining time, cancel, the past runs numbered within the project, and which
run's classifier is in use. A panel offers to provide the CLIP weights when they are missing."""
from __future__ import annotations

import dataclasses

import gradio as gr

from engine import workflow as wf
from studio import figures
from studio.common import visitor_of
from studio.common import (CancellableJob, Page, Worker, build_weights_panel, err, explain, number_problems, ok,
                           problems_text, project_id, wire_weights_panel)

TITLE, TAB_ID = "5 Train", "train"
MODES = ["hierarchical", "shared", "specific"]
MAIN_FIELDS = ("epochs", "lr", "batch_size", "noise_std", "lambda1", "lambda2")


def _numeric_fields(cls) -> list[tuple[str, object]]:
    d = cls()
    return [(f.name, getattr(d, f.name)) for f in dataclasses.fields(cls)
            if isinstance(getattr(d, f.name), (int, float)) and not isinstance(getattr(d, f.name), bool)]


def config_fields() -> tuple[list, list]:
    """((name, default) of TrainConfig's numeric fields, of PromptLayout's block sizes)."""
    return _numeric_fields(wf.TrainConfig), _numeric_fields(wf.PromptLayout)


def settings_problems(values: dict, layout_values: dict) -> list[str]:
    """Bad or empty number boxes: epochs and batch size at least 1, other whole numbers and every
    other number at least 0 (the engine checks the finer limits)."""
    tf, lf = config_fields()
    mins = {n: (1 if n in ("epochs", "batch_size") else 0, isinstance(d, int)) for n, d in tf}
    problems = number_problems(values, mins)
    return problems + number_problems({f"{n} tokens": v for n, v in layout_values.items()},
                                      {f"{n} tokens": (0, True) for n, _ in lf})


def make_config(values: dict, layout_values: dict, mode: str):
    def cast(default, v):
        return int(v) if isinstance(default, int) else float(v)

    tf, lf = config_fields()
    layout = wf.PromptLayout(**{n: cast(d, layout_values[n]) for n, d in lf if layout_values.get(n) is not None},
                             mode=mode or "hierarchical")
    kw = {n: cast(d, values[n]) for n, d in tf if values.get(n) is not None}
    return wf.TrainConfig(**kw, layout=layout)


def device_text() -> str:
    kind, name = wf.device_description()
    if kind == "cuda":
        return f"Device: **CUDA** ({name})"
    return "Device: **CPU** (no CUDA device found)"


def _fmt_s(s: float) -> str:
    s = int(round(max(0.0, s)))
    return f"{s // 60}:{s % 60:02d}"


def step_dict(info) -> dict:
    return {"step": info.step, "epoch": info.epoch, "lr": info.lr,
            "losses": {k: float(v) for k, v in info.losses.items()}, "elapsed_s": info.elapsed_s,
            "total_steps": info.total_steps}


def timing_text(h: dict) -> str:
    done = h["step"]  # StepInfo.step is 1-based
    rate = h["elapsed_s"] / max(done, 1)
    remaining = rate * max(h["total_steps"] - done, 0)
    return (f"Step {done} of {h['total_steps']} · epoch {h['epoch'] + 1} · "
            f"loss {h['losses'].get('total', float('nan')):.4f} · elapsed {_fmt_s(h['elapsed_s'])} · "
            f"remaining about {_fmt_s(remaining)}")


# ---- handlers ----------------------------------------------------------------------------------

def run(ctx, state, config, cancel):
    """Generator of (status text, history list of step dicts); trains in a thread."""
    pid = project_id(state)
    if pid is None:
        yield err("Open a project first."), []
        return
    spec = ctx.settings.backbone_spec()

    def job(emit, should_stop):
        seen: list[dict] = []

        def on_step(info):
            seen.append(step_dict(info))
            emit(list(seen))  # the page may skip some updates; each carries every step so far

        return wf.train_project(ctx.store, pid, spec, config, on_step=on_step, should_stop=should_stop, visitor=visitor_of(ctx, state))

    history: list[dict] = []
    yield "Loading CLIP and encoding the sentences...", history
    for kind, payload in Worker(job, cancel, min_interval=0.5):
        if kind == "item":
            history = payload
            yield timing_text(history[-1]), history
        elif kind == "done":
            history = [step_dict(i) for i in payload.history] or history
            if payload.cancelled:
                yield ok(f"Cancelled after {len(history)} steps; nothing was saved as a classifier."), history
            else:
                number = wf.run_number(ctx.store, pid, payload.run_id, visitor=visitor_of(ctx, state))
                yield ok(f"Trained in {_fmt_s(payload.elapsed_s)}: run {number} of this project; its "
                         f"classifier is now the one in use."), history
        else:
            yield explain(payload), history


RUN_HEADERS = ["run", "status", "started", "steps", "final loss", "seconds", "config", "in use"]


def past_runs(ctx, state) -> list[list]:
    """Rows of the past-runs table, newest first; ``run`` is the number within the project."""
    pid = project_id(state)
    if pid is None:
        return []
    return [[r["number"], r["status"], r["created"], r["steps"], r["final_loss"], r["elapsed"], r["config"],
             "yes" if r["in_use"] else ""] for r in wf.list_runs(ctx.store, pid, visitor=visitor_of(ctx, state))]


def active_text(ctx, state) -> str:
    pid = project_id(state)
    if pid is None:
        return ""
    active = wf.active_classifier(ctx.store, pid, visitor=visitor_of(ctx, state))
    if active is None:
        return "Classifier in use: none yet (start a training below)."
    return (f"Classifier in use: **run {active['run']}** of this project (trained {active['created']}); "
            f"Classify, Evaluate and Export use it.")


def run_curve(ctx, state, number):
    """The loss curves of the project's run ``number`` (as the table shows it)."""
    pid = project_id(state)
    if pid is None or number in (None, ""):
        return figures.loss_figure([])
    runs = {r["number"]: r["id"] for r in wf.list_runs(ctx.store, pid, visitor=visitor_of(ctx, state))}
    if int(number) not in runs:
        return figures.loss_figure([])
    return figures.loss_figure(wf.run_history(ctx.store, pid, runs[int(number)], visitor=visitor_of(ctx, state)),
                               title=f"Run {int(number)}")


# ---- widgets and events ------------------------------------------------------------------------

def build(ctx) -> dict:
    w: dict = {"cfg": {}, "layout": {}, "weights": build_weights_panel(ctx, "train")}
    tf, lf = config_fields()
    spec = ctx.settings.backbone_spec()
    w["device"] = gr.Markdown(f"{device_text()} · CLIP: **{spec.model}/{spec.pretrained or 'random'}**",
                              elem_id="train-device")
    w["active"] = gr.Markdown(elem_id="train-active")
    def number(name, default):
        w["cfg"][name] = gr.Number(value=default, label=name.replace("_", " "),
                                   precision=0 if isinstance(default, int) else None,
                                   elem_id=f"tc-{name}", min_width=110)

    with gr.Accordion("Settings (the paper's defaults)", open=True):
        with gr.Row():
            for name, default in tf:
                if name in MAIN_FIELDS:
                    number(name, default)
        with gr.Row():
            for name, default in lf:
                w["layout"][name] = gr.Number(value=default, label=f"{name} tokens", precision=0,
                                              elem_id=f"tl-{name}", min_width=110)
            w["mode"] = gr.Dropdown(MODES, value="hierarchical", label="Prompt mode")
    with gr.Accordion("More settings", open=False):
        with gr.Row():
            for name, default in tf:
                if name not in MAIN_FIELDS:
                    number(name, default)
    w["cfg_msg"] = gr.Markdown(elem_id="train-settings-msg")
    with gr.Row():
        w["start"] = gr.Button("Start training", variant="primary", elem_id="train-start")
        w["cancel"] = gr.Button("Cancel", variant="stop", elem_id="train-cancel")
    w["status"] = gr.Markdown(elem_id="train-status")
    w["plot"] = gr.Plot(label="Losses", elem_id="train-plot")
    w["history"] = gr.State([])
    gr.Markdown("#### Past runs")
    w["runs"] = gr.Dataframe(headers=RUN_HEADERS,
                             interactive=False, elem_id="train-runs", wrap=True)
    w["run_plot"] = gr.Plot(label="Losses of the run clicked above")
    return w


def wire(ctx, w: dict, page: Page) -> None:
    state = page.state
    cfg_names, layout_names = list(w["cfg"]), list(w["layout"])
    job = CancellableJob(ctx, "train")

    wire_weights_panel(ctx, w["weights"], page.tab)

    def split(vals):
        return dict(zip(cfg_names, vals[:len(cfg_names)])), dict(zip(layout_names, vals[len(cfg_names):]))

    def start(request: gr.Request, st, mode, *vals):  # request first: see knowledge.wire
        problems = settings_problems(*split(vals))
        if problems:
            yield problems_text(problems), err("Fix the settings marked above first."), gr.update()
            return
        try:
            config = make_config(*split(vals), mode)
        except Exception as exc:
            yield explain(exc), err("Fix the settings marked above first."), gr.update()
            return
        with job.running(request) as cancel:
            for text, hist in run(ctx, st, config, cancel):
                yield "", text, figures.loss_figure(hist)

    numbers = [w["cfg"][n] for n in cfg_names] + [w["layout"][n] for n in layout_names]
    inputs = [state, w["mode"]] + numbers
    w["start"].click(start, inputs, [w["cfg_msg"], w["status"], w["plot"]]).then(
        lambda st: (past_runs(ctx, st), active_text(ctx, st)), [state], [w["runs"], w["active"]])
    for box in numbers:  # a bad value is named next to the boxes as soon as it is typed
        box.change(lambda *vals: problems_text(settings_problems(*split(vals))), numbers, [w["cfg_msg"]])

    job.wire_cancel(w["cancel"], w["status"])

    def on_select(rows, evt: gr.SelectData, st=None):
        if hasattr(rows, "values"):
            rows = rows.values.tolist()
        return rows[evt.index[0]][0] if rows else None

    sel_run = gr.State(None)
    w["runs"].select(on_select, [w["runs"]], [sel_run]).then(
        lambda st, r: run_curve(ctx, st, r), [state, sel_run], [w["run_plot"]])


def outputs(w: dict) -> list:
    return [w["runs"], w["plot"], w["run_plot"], w["status"], w["active"]]


def refresh(ctx, state, w: dict) -> tuple:
    """Values of :func:`outputs` when the project changes (no message of the previous one stays)."""
    return past_runs(ctx, state), figures.loss_figure([]), figures.loss_figure([]), "", active_text(ctx, state)
