"""Step 3, Sentences: browse, search and filter the training sentences by category and source
question; edit a sentence or its labels; disable or delete it (after a confirmation; the editor
is cleared); counts per category so an under-covered category shows, with a line saying why they
differ from the number of sentences listed. Sentences the quality gate rejected are listed
disabled with their reason (column "rejected"); ticking Enabled and saving restores one. "why
labelled" shows each label's evidence (asked, or the name / synonym found); "claim cut off" the
trailing clause the gate took off the model's line (engine.sentence_gate.cut_claim)."""
from __future__ import annotations

import gradio as gr

from engine import workflow as wf
from studio.common import Page, err, explain, md, ok, project_id, visitor_of

TITLE, TAB_ID = "3 Sentences", "sentences"
HEADERS = ["id", "text", "labels", "source", "enabled", "rejected", "why labelled", "claim cut off"]
PAGE = 200


# ---- handlers ----------------------------------------------------------------------------------

def table(ctx, state, category=None, source=None, search="", include_disabled=True):
    """-> (rows for the table, shown/total text)."""
    pid = project_id(state)
    if pid is None:
        return [], "No project open."
    rows = wf.list_sentences(ctx.store, pid, category=category or None, source=source or None,
                             search=search or "", include_disabled=include_disabled, visitor=visitor_of(ctx, state))
    out = [[r["id"], r["text"], ", ".join(r["labels"]), r["source"], bool(r["enabled"]), r["rejected"] or "",
            "; ".join(f"{k}: {v}" for k, v in r["evidence"].items()), r["cut"]] for r in rows[:PAGE]]
    more = f" (first {PAGE} shown)" if len(rows) > PAGE else ""
    gate = wf.rejection_counts(ctx.store, pid, visitor=visitor_of(ctx, state))
    rejected = (" Rejected by the quality gate (disabled, restorable): "
                + ", ".join(f"{k} {v}" for k, v in gate.items()) + ".") if gate else ""
    return out, (f"{len(rows)} sentences match{more}, disabled ones included. The counts per "
                 f"category count enabled sentences only, and a sentence with several labels counts "
                 f"once for each of them, so the two numbers differ.{rejected}")


def counts(ctx, state):
    """Rows [category, enabled sentences labelled with it], fewest first."""
    pid = project_id(state)
    if pid is None:
        return []
    c = wf.sentence_counts(ctx.store, pid, visitor=visitor_of(ctx, state))
    return sorted(([k, v] for k, v in c.items()), key=lambda r: (r[1], r[0]))


def filter_updates(ctx, state, category="", source=""):
    """Dropdown updates for the category and source filters (new sources appear after knowledge
    is generated); the chosen values stay when they still exist."""
    cats, sources = filters(ctx, state)
    return (gr.update(choices=cats, value=category if category in cats else ""),
            gr.update(choices=sources, value=source if source in sources else ""))


def filters(ctx, state):
    """-> (category choices, source choices)."""
    pid = project_id(state)
    if pid is None:
        return [], []
    info = wf.project_info(ctx.store, pid, visitor=visitor_of(ctx, state))
    return [""] + info["categories"], [""] + wf.sentence_sources(ctx.store, pid, visitor=visitor_of(ctx, state))


def pick(rows, evt_index):
    """The sentence fields of the clicked table row -> (id, text, labels, enabled)."""
    if hasattr(rows, "values"):
        rows = rows.values.tolist()
    if evt_index is None or not rows:
        return None, "", "", True
    r = rows[evt_index[0] if isinstance(evt_index, (list, tuple)) else evt_index]
    return int(r[0]), r[1], r[2], bool(r[4])


def save(ctx, state, sid, text, labels, enabled) -> str:
    pid = project_id(state)
    if pid is None or sid in (None, ""):
        return err("Pick a sentence in the table first.")
    labs = [x.strip() for x in (labels or "").split(",") if x.strip()]
    try:
        wf.update_sentence(ctx.store, pid, int(sid), text=text, labels=labs, enabled=bool(enabled), visitor=visitor_of(ctx, state))
    except Exception as exc:
        return explain(exc)
    return ok(f"Saved sentence {int(sid)}.")


def delete(ctx, state, sid) -> str:
    pid = project_id(state)
    if pid is None or sid in (None, ""):
        return err("Pick a sentence in the table first.")
    try:
        wf.delete_sentence(ctx.store, pid, int(sid), visitor=visitor_of(ctx, state))
    except Exception as exc:
        return explain(exc)
    return ok(f"Deleted sentence {int(sid)}.")


def confirm_delete(ctx, state, sid):
    """The confirmed delete -> (message, cleared editor: id, text, labels, enabled, confirm row
    hidden); the editor keeps the sentence when the delete failed."""
    msg = delete(ctx, state, sid)
    if msg.startswith("⚠️"):
        return msg, gr.update(), gr.update(), gr.update(), gr.update(), gr.update(visible=False)
    return msg, None, "", "", True, gr.update(visible=False)


def ask_delete(sid):
    """The delete button: ask first (or say what to pick)."""
    if sid in (None, ""):
        return err("Pick a sentence in the table first."), gr.update(visible=False), ""
    return "", gr.update(visible=True), f"Delete sentence {int(sid)}? This cannot be undone."


# ---- widgets and events ------------------------------------------------------------------------

def build(ctx) -> dict:
    w: dict = {}
    with gr.Row():
        w["category"] = gr.Dropdown([""], value="", label="Category", elem_id="sent-category")
        w["source"] = gr.Dropdown([""], value="", label="Source question", elem_id="sent-source")
        w["search"] = gr.Textbox(label="Search", elem_id="sent-search")
        w["refresh"] = gr.Button("Show", elem_id="sent-show")
    with gr.Row():
        with gr.Column(scale=3):
            w["info"] = gr.Markdown()
            w["table"] = gr.Dataframe(headers=HEADERS, interactive=False, wrap=True,
                                      elem_id="sent-table", max_height=420,
                                      column_widths=["5%", "38%", "12%", "8%", "7%", "8%", "11%", "11%"])
        with gr.Column(scale=1):
            w["counts"] = gr.Dataframe(headers=["category", "sentences"], interactive=False,
                                       label="Sentences per category (fewest first)",
                                       elem_id="sent-counts")
    with gr.Row():
        w["sid"] = gr.Number(label="Sentence id", precision=0, interactive=False)
        w["text"] = gr.Textbox(label="Text", scale=4, elem_id="sent-text")
        w["labels"] = gr.Textbox(label="Labels (comma-separated)", scale=2, elem_id="sent-labels")
        w["enabled"] = gr.Checkbox(label="Enabled", value=True)
    with gr.Row():
        w["save"] = gr.Button("Save sentence", elem_id="sent-save")
        w["delete"] = gr.Button("Delete sentence", variant="stop", elem_id="sent-delete")
    with gr.Row(visible=False, elem_id="sent-confirm") as w["confirm_row"]:
        w["confirm_text"] = gr.Markdown()
        w["confirm_yes"] = gr.Button("Yes, delete", variant="stop", elem_id="sent-delete-yes")
        w["confirm_no"] = gr.Button("No, keep it", elem_id="sent-delete-no")
    w["msg"] = gr.Markdown(elem_id="sent-msg")
    return w


def wire(ctx, w: dict, page: Page) -> None:
    state = page.state

    def show(st, c, s, q):
        rows, info = table(ctx, st, c, s, q)
        return rows, info, counts(ctx, st)

    view_in = [state, w["category"], w["source"], w["search"]]
    view_out = [w["table"], w["info"], w["counts"]]
    for trigger in (w["refresh"].click, w["search"].submit, w["category"].change, w["source"].change):
        trigger(show, view_in, view_out)

    def on_select(rows, evt: gr.SelectData):
        return pick(rows, evt.index)

    w["table"].select(on_select, [w["table"]], [w["sid"], w["text"], w["labels"], w["enabled"]])
    w["save"].click(lambda st, i, t, l, e: save(ctx, st, i, t, l, e),
                    [state, w["sid"], w["text"], w["labels"], w["enabled"]], [w["msg"]]).then(
        show, view_in, view_out)
    editor = [w["sid"], w["text"], w["labels"], w["enabled"]]
    w["delete"].click(ask_delete, [w["sid"]], [w["msg"], w["confirm_row"], w["confirm_text"]])
    w["confirm_no"].click(lambda: (gr.update(visible=False), ""), None, [w["confirm_row"], w["msg"]])
    w["confirm_yes"].click(lambda st, i: confirm_delete(ctx, st, i), [state, w["sid"]],
                           [w["msg"]] + editor + [w["confirm_row"]]).then(show, view_in, view_out)
    # knowledge may have changed since the project was opened: filters and table redrawn on
    # entering the tab (a new source question appears without a manual refresh)
    page.tab.select(lambda st, c, s: filter_updates(ctx, st, c, s), [state, w["category"], w["source"]],
                    [w["category"], w["source"]]).then(show, view_in, view_out)


def outputs(w: dict) -> list:
    return [w["category"], w["source"], w["table"], w["info"], w["counts"], w["msg"], w["sid"], w["text"],
            w["labels"], w["enabled"], w["confirm_row"]]


def refresh(ctx, state, w: dict) -> tuple:
    """Values of :func:`outputs` when the project changes (editor and messages cleared)."""
    rows, info = table(ctx, state)
    return (*filter_updates(ctx, state), rows, info, counts(ctx, state), "", None, "", "", True,
            gr.update(visible=False))
