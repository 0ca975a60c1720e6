"""Step 2, Knowledge: choose the LLM (studio.llm_picker: a Hub model is downloaded first, with its
progress next to the picker), edit question templates and counts, generate with progress
and cancel (resumable: answers are cached per question, so generating again skips what exists),
then inspect and edit per category (attributes kept or dropped, synonyms, the LLM's suggested
synonyms to tick and accept, super-category, hand-crafted prompt, and the prompt in use when the
category has none of its own) and regenerate one category. Every count is checked (at least 1)
with a message next to the boxes."""
from __future__ import annotations

import dataclasses

import gradio as gr

from engine import workflow as wf
from studio import llm_picker
from studio.common import visitor_of
from studio.common import (CancellableJob, Page, Worker, err, explain, md, number_problems, ok, problems_text,
                           project_id)
from studio.llm_picker import llm_spec  # noqa: F401 - the tab's LLM choice, as the tests call it

TITLE, TAB_ID = "2 Knowledge", "knowledge"
SUGGESTIONS_NOTE = ("Suggestions are not used for labels (or the sentence check) until accepted: tick them "
                    "and save the category.")


LIMIT_FIELDS = ("attributes_per_category", "fine_attributes_per_category", "pairs_per_group",
                "max_scene_pairs")


def settings_fields() -> tuple[list, list, list]:
    """From ``KnowledgeSettings``: (counts, limits, templates). Counts are the ``n_*`` fields
    (how many items each question asks for); limits the other whole-number fields (empty = no
    limit where the engine allows None); templates ``(step, question, primer, example)``, example
    None for a step that cannot have a worked example."""
    d = wf.KnowledgeSettings()
    counts, limits = [], []
    for f in dataclasses.fields(wf.KnowledgeSettings):
        val = getattr(d, f.name)
        numeric = isinstance(val, int) and not isinstance(val, bool)
        if f.name.startswith("n_") and numeric:
            counts.append((f.name, val))
        elif f.name in LIMIT_FIELDS or (numeric and f.name not in ("steps",)):
            limits.append((f.name, val))
    templates = [(step, t.question, t.primer, t.example if step in wf.EXAMPLE_FIELDS else None)
                 for step, t in d.templates.items()]
    return counts, limits, templates


def settings_problems(values: dict) -> list[str]:
    """Bad number boxes: a count (items asked for) must be a whole number of at least 1; an
    optional limit may be empty (no limit) or at least 1; the other numbers at least 0."""
    counts, limits, _ = settings_fields()
    mins = {n: (1, True) for n, _ in counts}
    mins.update({n: (1 if n in LIMIT_FIELDS else 0, True) for n, _ in limits})
    given = {n: v for n, v in values.items() if n in mins and not (n in LIMIT_FIELDS and v in (None, ""))}
    return number_problems(given, mins)


def make_settings(values: dict):
    """``KnowledgeSettings`` from the widget values: ``{field: number}`` and
    ``{"question:<step>": text, "primer:<step>": text, "example:<step>": text}``. An empty
    optional limit means None; an empty example means none."""
    problems = settings_problems(values)
    if problems:
        raise ValueError(" ".join(problems))
    base = wf.KnowledgeSettings()
    counts, limits, templates = settings_fields()
    kw: dict = {}
    for name, default in counts + limits:
        val = values.get(name)
        if val in (None, ""):
            if name in LIMIT_FIELDS:
                kw[name] = None
            continue
        kw[name] = int(val)
    if values.get("steps") is not None:
        chosen = set(values["steps"])
        kw["steps"] = tuple(step for step in base.steps if step in chosen)
        if not kw["steps"]:
            raise ValueError("Choose at least one question step.")
    tmpl = dict(base.templates)
    for step, *_ in templates:
        changes = {}
        for part in ("question", "primer", "example"):
            text = values.get(f"{part}:{step}")
            if text is not None and text != getattr(tmpl[step], part):
                changes[part] = text
        if changes:
            tmpl[step] = dataclasses.replace(tmpl[step], **changes)
    settings = dataclasses.replace(base, templates=tmpl, **kw)
    settings.validate()
    return settings


# ---- handlers ----------------------------------------------------------------------------------

def generate(ctx, state, spec, settings, cancel, category: str | None = None):
    """Generator of (progress text, done, total); ends with a final message. Runs
    ``workflow.generate_knowledge`` (or ``workflow.regenerate_category`` for one ``category``)
    in a thread; ``cancel`` is a threading.Event."""
    pid = project_id(state)
    if pid is None:
        yield err("Open a project first."), 0, 0
        return

    def job(emit, should_stop):
        progress = lambda d, t, q: emit((d, t, q))  # noqa: E731
        if category:
            return wf.regenerate_category(ctx.store, pid, category, spec, settings,
                                          on_progress=progress, should_stop=should_stop, visitor=visitor_of(ctx, state))
        return wf.generate_knowledge(ctx.store, pid, spec, settings,
                                     on_progress=progress, should_stop=should_stop, visitor=visitor_of(ctx, state))

    done = total = 0
    yield "Starting: loading the language model...", 0, 0
    for kind, payload in Worker(job, cancel):
        if kind == "item":
            done, total, question = payload
            yield f"{done} of {total} planned questions done. {str(question)[:160]}", done, total
        elif kind == "done":
            if cancel.is_set():
                yield ok(f"Cancelled after {done} of {total} answers; generate again to resume."), done, total
            else:
                n = len(getattr(payload, "sentences", []) or [])
                yield ok(f"Knowledge ready: {n} sentences."), total, total
        else:
            yield explain(payload), done, total


def category_choices(ctx, state) -> list[str]:
    pid = project_id(state)
    return [] if pid is None else wf.project_info(ctx.store, pid, visitor=visitor_of(ctx, state))["categories"]


def category_details(ctx, state, category):
    """-> (kept-attributes checkbox update, "" for the box of attributes to add, synonyms text,
    super-category, prompt). Every attribute is a choice of the checkbox group (shown once); the
    kept ones are ticked."""
    pid = project_id(state)
    if pid is None or not category:
        return gr.update(choices=[], value=[]), "", "", "", ""
    d = wf.category_details(ctx.store, pid, category, visitor=visitor_of(ctx, state))
    texts = [a["text"] for a in d["attributes"]]
    kept = [a["text"] for a in d["attributes"] if a["kept"]]
    return (gr.update(choices=texts, value=kept), "", ", ".join(d["synonyms"]),
            d["super"] or "", d["prompt"] or "")


def synonym_suggestions(ctx, state, category):
    """The checkbox group of the LLM's synonyms of ``category`` not accepted yet, none ticked."""
    pid = project_id(state)
    if pid is None or not category:
        return gr.update(choices=[], value=[])
    d = wf.category_details(ctx.store, pid, category, visitor=visitor_of(ctx, state))
    return gr.update(choices=list(d["suggested_synonyms"]), value=[])


def details_view(ctx, state, category) -> tuple:
    """:func:`category_details` and then :func:`synonym_suggestions`."""
    return (*category_details(ctx, state, category), synonym_suggestions(ctx, state, category))


def prompt_in_use(ctx, state, category) -> str:
    """The hand-crafted prompt the category is scored with: its own, else the default template."""
    pid = project_id(state)
    if pid is None or not category:
        return ""
    cats = category_choices(ctx, state)
    if category not in cats:
        return ""
    prompt = wf.handcrafted_prompts(ctx.store, pid, visitor=visitor_of(ctx, state))[cats.index(category)]
    own = wf.category_details(ctx.store, pid, category, visitor=visitor_of(ctx, state))["prompt"]
    return f"Prompt in use: {md(prompt)}" + ("" if own else " (the default template; type one above to replace it)")


def save_category(ctx, state, category, new_attributes, kept, synonyms, super_, prompt, accepted=None) -> str:
    """``kept``: the ticked attributes (the others are dropped, not deleted: tick them again to
    keep them); ``new_attributes``: attributes to add, one a line (kept). To change a text, add
    the new one and untick the old. ``accepted``: the LLM's suggested synonyms ticked to accept,
    added to ``synonyms``."""
    pid = project_id(state)
    if pid is None or not category:
        return err("Open a project and choose a category first.")
    old = [a["text"] for a in wf.category_details(ctx.store, pid, category, visitor=visitor_of(ctx, state))["attributes"]]
    kept = set(kept or [])
    attrs = [{"text": text, "kept": text in kept} for text in old]
    seen = {text.casefold() for text in old}
    for line in (new_attributes or "").splitlines():
        text = " ".join(line.split())
        if text and text.casefold() not in seen:
            seen.add(text.casefold())
            attrs.append({"text": text, "kept": True})
    syns = [x.strip() for x in (synonyms or "").replace("\n", ",").split(",") if x.strip()]
    syns += [x for x in accepted or [] if x.casefold() not in {y.casefold() for y in syns}]
    try:
        wf.update_category(ctx.store, pid, category, attributes=attrs, synonyms=syns,
                           super_=(super_ or "").strip() or None, prompt=(prompt or "").strip() or None, visitor=visitor_of(ctx, state))
    except Exception as exc:
        return explain(exc)
    return ok(f"Saved **{md(category)}**.")


def run_generation(ctx, job, state, llm_values, field_values: dict, category=None, request=None):
    """The Generate (and Regenerate) button: yields (message, progress, count message, Hub message,
    Hub progress). ``llm_values``: the picker's widgets (:func:`studio.llm_picker.inputs`);
    ``field_values``: ``{field: value}`` of the settings widgets. A Hub model's file comes first
    (downloaded with its progress next to the picker, or refused there in one sentence)."""
    kind, hub_picked, hub_typed = llm_values[0], llm_values[5], llm_values[6]
    problems = settings_problems(field_values)
    if problems:
        yield err("Fix the numbers marked above first."), gr.update(), problems_text(problems), gr.update(), gr.update()
        return
    try:
        spec = llm_spec(ctx, *llm_values)
        settings = make_settings(field_values)
    except Exception as exc:
        yield explain(exc), gr.update(), "", gr.update(), gr.update()
        return
    with job.running(request) as cancel:  # Cancel stops the Hub download as well as the questions
        if kind == "hub":
            for text, done, total in llm_picker.download(ctx, hub_picked, hub_typed, cancel):
                yield gr.update(), gr.update(), "", text, llm_picker.progress_update(done, total)
            if cancel.is_set():
                yield ok("Cancelled while downloading the Hub model; nothing was asked."), gr.update(), "", \
                    gr.update(), gr.update()
                return
            if text.startswith("⚠️"):
                yield err("The Hub model is not here: see the message next to the picker."), gr.update(), "", \
                    gr.update(), gr.update()
                return
        for text, done, total in generate(ctx, state, spec, settings, cancel, category):
            yield md(text) if not text.startswith(("✅", "⚠️")) else text, \
                gr.update(value=done, maximum=max(total, 1)), "", gr.update(), gr.update()


# ---- widgets and events ------------------------------------------------------------------------

def build(ctx) -> dict:
    w: dict = llm_picker.build(ctx)
    w["fields"] = {}
    counts, limits, templates = settings_fields()
    w["fields"]["steps"] = gr.CheckboxGroup(list(wf.STEPS), value=list(wf.STEPS), elem_id="ks-steps",
                                            label="Question steps to run (paper section 3.2)")
    with gr.Accordion("Counts (items asked for per question)", open=True):
        with gr.Row():
            for name, default in counts:
                w["fields"][name] = gr.Number(value=default, label=name[2:].replace("_", " "),
                                              precision=0, elem_id=f"ks-{name}", min_width=120)
    w["fields_msg"] = gr.Markdown(elem_id="ks-fields-msg")
    with gr.Accordion("Limits (empty = ask every one)", open=False):
        with gr.Row():
            for name, default in limits:
                w["fields"][name] = gr.Number(value=default, label=name.replace("_", " "),
                                              precision=0, elem_id=f"ks-{name}", min_width=120)
    with gr.Accordion("Question templates (chat models get the question, base models the primer)",
                      open=False):
        for step, question, primer, example in templates:
            with gr.Row():
                w["fields"][f"question:{step}"] = gr.Textbox(value=question, label=f"{step}: question", lines=2)
                w["fields"][f"primer:{step}"] = gr.Textbox(value=primer, label=f"{step}: primer", lines=2)
                if example is not None:
                    about = " and ".join(wf.EXAMPLE_FIELDS[step].values())
                    w["fields"][f"example:{step}"] = gr.Textbox(
                        value=example, lines=3, elem_id=f"ks-example-{step}",
                        label=f"{step}: worked example, about {about} (chat models see it first; empty = none)")
    with gr.Row():
        w["generate"] = gr.Button("Generate knowledge", variant="primary", elem_id="gen-knowledge")
        w["cancel"] = gr.Button("Cancel", variant="stop", elem_id="cancel-knowledge")
    w["msg"] = gr.Markdown(elem_id="knowledge-msg")
    w["progress"] = gr.Slider(0, 1, value=0, label="Answers", interactive=False,
                              elem_id="knowledge-progress")
    gr.Markdown("#### Per category")
    with gr.Row():
        w["category"] = gr.Dropdown([], label="Category", elem_id="kn-category")
        w["regen"] = gr.Button("Regenerate this category", elem_id="regen-category")
    w["keep"] = gr.CheckboxGroup([], label="Attributes kept (untick to drop one)", elem_id="kn-keep")
    w["attrs"] = gr.Textbox(label="Add attributes (one a line; to change one, add the new text and "
                                  "untick the old)", lines=2, elem_id="kn-attributes")
    with gr.Row():
        w["synonyms"] = gr.Textbox(label="Synonyms (comma-separated)", elem_id="kn-synonyms")
        w["super"] = gr.Textbox(label="Super-category", elem_id="kn-super")
        w["prompt"] = gr.Textbox(label="Hand-crafted prompt (empty = the default template)", elem_id="kn-prompt")
    w["suggested"] = gr.CheckboxGroup([], label="The LLM's suggested synonyms (tick to accept, then save)",
                                      info=SUGGESTIONS_NOTE, elem_id="kn-suggested")
    w["prompt_used"] = gr.Markdown(elem_id="kn-prompt-used")
    with gr.Row():
        w["save"] = gr.Button("Save category", elem_id="save-category", scale=0, min_width=160)
        w["cat_msg"] = gr.Markdown(elem_id="kn-cat-msg")
    return w


def wire(ctx, w: dict, page: Page) -> None:
    state = page.state
    field_names = list(w["fields"])
    job = CancellableJob(ctx, "knowledge")
    llm_picker.wire(ctx, w)

    def run(st, *args, category=None, request=None):
        n = len(llm_picker.inputs(w))
        yield from run_generation(ctx, job, st, args[:n], dict(zip(field_names, args[n:])), category, request)

    # gr.Request first: Gradio inserts it by position, which works before *args
    def run_all(request: gr.Request, st, *args):
        yield from run(st, *args, request=request)

    def run_one(request: gr.Request, st, cat, *args):
        if not cat:
            yield err("Choose a category first."), gr.update(), "", gr.update(), gr.update()
            return
        yield from run(st, *args, category=cat, request=request)

    inputs = [state] + llm_picker.inputs(w) + [w["fields"][n] for n in field_names]
    run_out = [w["msg"], w["progress"], w["fields_msg"], w["hub_msg"], w["hub_progress"]]
    details = [w["keep"], w["attrs"], w["synonyms"], w["super"], w["prompt"], w["suggested"]]
    gen = w["generate"].click(run_all, inputs, run_out)
    gen.then(lambda st, c: category_view(ctx, st, c, with_suggestions=True), [state, w["category"]],
             [w["category"]] + details)
    counts, limits, _ = settings_fields()
    number_names = [n for n, _ in counts + limits]
    numbers = [w["fields"][n] for n in number_names]
    for box in numbers:  # a bad count is named next to the boxes as soon as it is typed
        box.change(lambda *vals: problems_text(settings_problems(dict(zip(number_names, vals)))),
                   numbers, [w["fields_msg"]])
    w["regen"].click(run_one, [state, w["category"]] + inputs[1:], run_out).then(
        lambda st, c: details_view(ctx, st, c), [state, w["category"]], details)

    job.wire_cancel(w["cancel"], w["msg"])
    w["category"].change(lambda st, c: (*details_view(ctx, st, c), prompt_in_use(ctx, st, c), ""),
                         [state, w["category"]], details + [w["prompt_used"], w["cat_msg"]])
    w["save"].click(lambda st, c, t, k, sy, su, p, acc: save_category(ctx, st, c, t, k, sy, su, p, acc),
                    [state, w["category"], w["attrs"], w["keep"], w["synonyms"], w["super"], w["prompt"],
                     w["suggested"]], [w["cat_msg"]]).then(
        lambda st, c: (*details_view(ctx, st, c), prompt_in_use(ctx, st, c)), [state, w["category"]],
        details + [w["prompt_used"]])


def outputs(w: dict) -> list:
    return [w["category"], w["keep"], w["attrs"], w["synonyms"], w["super"], w["prompt"], w["prompt_used"],
            w["msg"], w["cat_msg"], w["fields_msg"], w["progress"], w["suggested"]]


def refresh(ctx, state, w: dict) -> tuple:
    """Values of :func:`outputs` when the project changes: no message of the previous project
    stays."""
    view = category_view(ctx, state)
    first = view[0]["value"]
    return (*view, prompt_in_use(ctx, state, first), "", "", "", gr.update(value=0, maximum=1),
            synonym_suggestions(ctx, state, first))


def category_view(ctx, state, current=None, with_suggestions=False) -> tuple:
    """Values of :func:`outputs` (category dropdown, keep, attrs, synonyms, super, prompt, and
    with_suggestions the suggested synonyms) for the project's knowledge: the current category
    stays chosen when it still exists."""
    cats = category_choices(ctx, state)
    first = current if current in cats else (cats[0] if cats else None)
    view = (gr.update(choices=cats, value=first), *category_details(ctx, state, first))
    return (*view, synonym_suggestions(ctx, state, first)) if with_suggestions else view
