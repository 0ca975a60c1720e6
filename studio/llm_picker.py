"""The Knowledge tab's choice of language model: a bundled model, a GGUF file, a model from the
Hugging Face Hub, or an OpenAI-compatible endpoint.

A Hub model is one of the curated list (name, size, what it is for) or, where the operator allows
it, any repository and file typed as ``OWNER/REPO/FILE.gguf``. "Download" fetches the file once
through huggingface_hub into the Hub cache, with a progress bar fed by the download's byte count
("Cancel download" stops it and removes the partial file);
generating with a Hub model that is not cached downloads it first the same way. A file already in
the cache is used from there. When the file is not cached and this machine is offline (or the
repository or file does not exist), one sentence says so next to the picker and nothing else on
the page changes.

A shared studio (``StudioSettings.private_projects``) downloads only the curated models unless
the operator sets ``IFS_HUB_ANY_FILE=1`` (``StudioSettings.hub_any_file``): a visitor cannot make
the server fetch an arbitrary repository. With ``IFS_HUB_DOWNLOADS=0`` (``StudioSettings.hub_downloads``)
the studio downloads nothing: only the Hub models already in the cache can be picked to generate."""
from __future__ import annotations

import threading
from pathlib import Path

import gradio as gr

from engine import workflow as wf
from studio.common import CancellableJob, Worker, explain, md, ok

LLM_KINDS = [("Bundled model", "bundled"), ("GGUF file", "gguf"), ("Hugging Face Hub model", "hub"),
             ("OpenAI-compatible endpoint", "openai")]
BUNDLED = [("Qwen2.5-Coder 1.5B Instruct (best sentences)", "qwen1.5b"), ("SmolLM2 135M Instruct (fast)", "smollm2"),
           ("Gemma 3 270M base (fast)", "gemma3")]
ANY_FILE = "any"  # the Hub dropdown's entry for a repository + file typed in the box


def hub_choices(ctx) -> list[tuple[str, str]]:
    """(label, value) of the Hub dropdown: the curated models, then "any repository + file" where
    the operator allows it."""
    out = [(c.label, c.name) for c in wf.hub_models()]
    if ctx.settings.hub_any_file:
        out.append(("Any repository + file (type OWNER/REPO/FILE.gguf below)", ANY_FILE))
    return out


def hub_choice(ctx, picked: str | None, typed: str | None) -> str:
    """The Hub model the picker names: a curated name, or the typed ``OWNER/REPO/FILE.gguf`` when
    "any repository + file" is picked. ValueError (one sentence) when that is not allowed or empty."""
    if picked != ANY_FILE:
        return picked or wf.hub_models()[0].name
    if not ctx.settings.hub_any_file:
        raise ValueError("This shared studio downloads only the curated Hub models; pick one of the list.")
    typed = (typed or "").strip()
    if typed.count("/") < 2:
        raise ValueError("Type the Hub model as OWNER/REPO/FILE.gguf (for example "
                         "Qwen/Qwen2.5-7B-Instruct-GGUF/qwen2.5-7b-instruct-q4_k_m.gguf), or pick a curated one.")
    return typed


def llm_spec(ctx, kind, name, path, base_url, model, hub_picked=None, hub_typed=None):
    """The LLMSpec of the picker's widgets (a shared studio keeps the operator's path, endpoint and,
    unless allowed, curated Hub models only: StudioSettings.llm_spec)."""
    if kind == "hub":
        name = hub_choice(ctx, hub_picked, hub_typed)
    return ctx.settings.llm_spec(kind=kind, name=name, path=path or None,
                                 base_url=base_url or None, model=model or None)


def _mb(n: int | None) -> str:
    return f"{(n or 0) / 1e6:,.1f} MB"


def download(ctx, picked, typed, cancel: threading.Event | None = None):
    """Generator of (message, bytes so far, file size) for the Hub model the picker names: a
    cached file is reported at once (nothing downloaded), else huggingface_hub downloads it with
    its byte count reported, stopping when ``cancel`` is set; ends with a ✅ message or a ⚠️ one
    that says why not."""
    try:
        choice = hub_choice(ctx, picked, typed)
        ctx.settings.llm_spec(kind="hub", name=choice)  # refuses a file the operator does not allow
        info = wf.hub_model(choice)
    except Exception as exc:
        yield explain(exc), 0, 0
        return
    what = f"{info.repo}/{info.filename}"
    if info.cached:
        try:
            size = Path(wf.download_hub_model(choice)).stat().st_size  # opened from the cache
        except Exception as exc:
            yield explain(exc), 0, 0
            return
        yield ok(f"{md(what)} is in the Hub cache ({_mb(size)}): generating uses it."), size, size
        return
    yield f"Downloading {md(what)} from the Hub...", 0, 0

    def job(emit, should_stop):
        return wf.download_hub_model(choice, on_bytes=lambda done, total: emit((done, total)),
                                     should_stop=should_stop)

    done = total = 0
    for kind, payload in Worker(job, cancel or threading.Event()):
        if kind == "item":
            done, total = payload
            of = f" of {_mb(total)}" if total else ""
            yield f"Downloading {md(what)}: {_mb(done)}{of}", done, total or 0
        elif kind == "done":
            size = Path(payload).stat().st_size
            yield ok(f"Downloaded {md(what)} ({_mb(size)}) into the Hub cache: generating uses it."), size, size
        else:
            yield explain(payload), done, total


def progress_update(done: int, total: int):
    """The download slider (MB) for ``done`` of ``total`` bytes."""
    return gr.update(value=round(done / 1e6, 1), maximum=max(round(total / 1e6, 1), 0.1))


def build(ctx) -> dict:
    """The LLM row: kind, bundled model, GGUF path, endpoint, and the Hub picker (shown for the
    Hub kind) with its Download button, message and progress bar."""
    w: dict = {}
    s = ctx.settings
    with gr.Row():
        replay = [("Recorded answers (replay)", "replay")] if s.llm_kind == "replay" else []
        w["llm_kind"] = gr.Radio(LLM_KINDS + replay, value=s.llm_kind, label="LLM", elem_id="llm-kind")
        bundled = s.llm_name if s.llm_name in dict((v, k) for k, v in BUNDLED) else BUNDLED[0][1]
        w["llm_name"] = gr.Dropdown(BUNDLED, value=bundled, label="Bundled model")
        # a shared studio takes no server path or endpoint from its visitors (StudioSettings.llm_spec)
        w["llm_path"] = gr.Textbox(value=s.llm_path or "", label="GGUF file path",
                                   interactive=not s.private_projects)
        w["llm_url"] = gr.Textbox(value=s.llm_base_url or "", label="Endpoint base URL",
                                  interactive=not s.private_projects)
        w["llm_model"] = gr.Textbox(value=s.llm_model or "", label="Endpoint model name")
    choices = hub_choices(ctx)
    picked, typed = choices[0][1], ""
    if s.llm_kind == "hub" and s.llm_name in [v for _, v in choices]:
        picked = s.llm_name
    elif s.llm_kind == "hub" and s.hub_any_file and s.llm_name.count("/") >= 2:  # IFS_LLM_NAME=OWNER/REPO/FILE
        picked, typed = ANY_FILE, s.llm_name
    with gr.Group(visible=s.llm_kind == "hub") as w["hub_group"]:
        with gr.Row():
            w["hub_model"] = gr.Dropdown(choices, value=picked, label="Hub model (GGUF)", elem_id="hub-model",
                                         scale=2)
            w["hub_file"] = gr.Textbox(value=typed, label="Any repository + file: OWNER/REPO/FILE.gguf", elem_id="hub-file",
                                       placeholder="Qwen/Qwen2.5-7B-Instruct-GGUF/qwen2.5-7b-instruct-q4_k_m.gguf",
                                       interactive=bool(s.hub_any_file), scale=2)
            with gr.Column(scale=0, min_width=150):  # stacked, at their own height (not the row's)
                w["hub_download"] = gr.Button("Download", elem_id="hub-download", size="sm")
                w["hub_cancel"] = gr.Button("Cancel download", variant="stop", elem_id="hub-cancel", size="sm")
        w["hub_msg"] = gr.Markdown(elem_id="hub-msg")
        w["hub_progress"] = gr.Slider(0, 1, value=0, label="Downloaded (MB)", interactive=False,
                                      elem_id="hub-progress")
    return w


def wire(ctx, w: dict) -> None:
    """The Hub picker shows for the Hub kind; Download reports its progress next to the picker
    (and changes nothing else on the page)."""
    w["llm_kind"].change(lambda kind: gr.update(visible=kind == "hub"), [w["llm_kind"]], [w["hub_group"]])

    job = CancellableJob(ctx, "hub-download")

    def fetch(request: gr.Request, picked, typed):
        with job.running(request) as cancel:
            for text, done, total in download(ctx, picked, typed, cancel):
                yield text, progress_update(done, total)

    w["hub_download"].click(fetch, [w["hub_model"], w["hub_file"]], [w["hub_msg"], w["hub_progress"]])
    job.wire_cancel(w["hub_cancel"], w["hub_msg"])
    w["hub_model"].change(lambda picked: ("", gr.update(value=0, maximum=1)), [w["hub_model"]],
                          [w["hub_msg"], w["hub_progress"]])


def inputs(w: dict) -> list:
    """The widgets :func:`llm_spec` reads, in its order."""
    return [w["llm_kind"], w["llm_name"], w["llm_path"], w["llm_url"], w["llm_model"], w["hub_model"], w["hub_file"]]

