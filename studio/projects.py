"""Step 1, Projects: create (own vocabulary or a preset), open, rename, delete with confirmation,
export to one file and import one. Every action is one ``engine.workflow`` call."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from engine import workflow as wf
from studio.common import Page, err, explain, md, md_list, ok, project_id, visitor_of

TITLE, TAB_ID = "1 Projects", "projects"
OWN = "My own vocabulary"


def source_choices() -> list[tuple[str, str]]:
    return [(OWN, "own")] + [(name, key) for key, name in wf.list_presets()]


# ---- handlers (plain functions: tested without a browser) -------------------------------------

def project_choices(ctx, state) -> list[tuple[str, int]]:
    return [(f"{p['name']} ({p['n_categories']} categories)", p["id"])
            for p in wf.list_projects(ctx.store, owner=visitor_of(ctx, state))]


def create(ctx, state, source: str, name: str, vocabulary: str):
    """-> (new state, message). A bad vocabulary gives a message and creates nothing."""
    state = dict(state or {})
    try:
        if source and source != "own":
            preset_name = dict((k, n) for k, n in wf.list_presets())[source]
            pid = wf.create_project(ctx.store, (name or "").strip() or preset_name, preset=source)
        else:
            pid = wf.create_project(ctx.store, name, vocabulary)
        if visitor_of(ctx, state):
            wf.set_owner(ctx.store, pid, visitor_of(ctx, state))
    except Exception as exc:  # engine errors carry the explanation
        return state, explain(exc)
    state["project"] = pid
    info = wf.project_info(ctx.store, pid, visitor=visitor_of(ctx, state))
    return state, ok(f"Created project **{md(info['name'])}** with {info['n_categories']} categories.")


def open_project(ctx, state, pid):
    state = dict(state or {})
    state["project"] = int(pid) if pid not in (None, "") else None
    return state


def summary(ctx, state) -> str:
    pid = project_id(state)
    if pid is None:
        return "No project open. Create one or pick one above."
    try:
        info = wf.project_info(ctx.store, pid, visitor=visitor_of(ctx, state))
    except Exception as exc:
        return explain(exc)
    cats = md_list(info["categories"], 40)
    return (f"### {md(info['name'])}\n{info['n_categories']} categories: {cats}\n\n"
            f"Sentences: {info.get('n_sentences', 0)} · runs: {info.get('n_runs', 0)} · "
            f"classifier: {'yes' if info.get('has_classifier') else 'not yet'}")


def rename(ctx, state, new_name: str) -> str:
    pid = project_id(state)
    if pid is None:
        return err("Open a project first.")
    try:
        wf.rename_project(ctx.store, pid, new_name, visitor=visitor_of(ctx, state))
    except Exception as exc:
        return explain(exc)
    return ok(f"Renamed to **{md(new_name.strip())}**.")


def delete(ctx, state):
    pid = project_id(state)
    state = dict(state or {})
    if pid is None:
        return state, err("Open a project first.")
    try:
        name = wf.project_info(ctx.store, pid, visitor=visitor_of(ctx, state))["name"]
        wf.delete_project(ctx.store, pid, visitor=visitor_of(ctx, state))
    except Exception as exc:
        return state, explain(exc)
    state["project"] = None
    return state, ok(f"Deleted **{md(name)}**.")


def export(ctx, state):
    """-> (archive path or None, message)."""
    pid = project_id(state)
    if pid is None:
        return None, err("Open a project first.")
    try:
        name = wf.project_info(ctx.store, pid, visitor=visitor_of(ctx, state))["name"]
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:60] or "project"
        path = wf.export_project(ctx.store, pid, ctx.tmp_dir() / f"{safe}.ifs.zip", visitor=visitor_of(ctx, state))
    except Exception as exc:
        return None, explain(exc)
    return str(path), ok(f"Exported to {md(Path(path).name)}.")


def import_(ctx, state, file_path):
    state = dict(state or {})
    if not file_path:
        return state, err("Choose an exported project file first.")
    try:
        pid = wf.import_project(ctx.store, file_path)
        if visitor_of(ctx, state):
            wf.set_owner(ctx.store, pid, visitor_of(ctx, state))
    except Exception as exc:
        return state, explain(exc)
    state["project"] = pid
    return state, ok(f"Imported **{md(wf.project_info(ctx.store, pid, visitor=visitor_of(ctx, state))['name'])}**.")


# ---- widgets and events ------------------------------------------------------------------------

def build(ctx) -> dict:
    w: dict = {}
    with gr.Row():
        with gr.Column(scale=2):
            gr.Markdown("#### New project")
            w["source"] = gr.Radio(source_choices(), value="own", label="Start from",
                                   elem_id="new-source")
            w["name"] = gr.Textbox(label="Project name", elem_id="new-name")
            w["vocab"] = gr.Textbox(label="Category names (one a line or comma-separated)",
                                    lines=5, elem_id="new-vocab",
                                    placeholder="forklift, pallet, helmet, spill")
            w["create"] = gr.Button("Create project", variant="primary", elem_id="create-project")
            w["msg"] = gr.Markdown(elem_id="projects-msg")
        with gr.Column(scale=3):
            w["summary"] = gr.Markdown(elem_id="project-summary")
            with gr.Row():
                w["new_name"] = gr.Textbox(label="New name", scale=3, elem_id="rename-text")
                w["rename"] = gr.Button("Rename", scale=1, elem_id="rename-project")
            w["manage_msg"] = gr.Markdown(elem_id="projects-manage-msg")
            with gr.Row():
                w["export"] = gr.Button("Export project", elem_id="export-project")
                w["delete"] = gr.Button("Delete project", variant="stop", elem_id="delete-project")
            with gr.Row(visible=False) as w["confirm_row"]:
                gr.Markdown("Delete this project and everything in it?")
                w["confirm_yes"] = gr.Button("Yes, delete", variant="stop", elem_id="delete-yes")
                w["confirm_no"] = gr.Button("No", elem_id="delete-no")
            w["export_file"] = gr.File(label="Exported file", interactive=False)
            w["import_file"] = gr.File(label="Import a project file", file_types=[".zip", ".ifs"],
                                       elem_id="import-file")
            w["import"] = gr.Button("Import", elem_id="import-project")
    return w


def wire(ctx, w: dict, page: Page) -> None:
    """Create, delete and import change the open project: every tab is redrawn after them."""
    state, selector, after = page.state, page.selector, page.redraw_after
    after(w["create"].click(lambda s, src, n, v: create(ctx, s, src, n, v),
                            [state, w["source"], w["name"], w["vocab"]], [state, w["msg"]]))
    w["rename"].click(lambda s, n: rename(ctx, s, n), [state, w["new_name"]], [w["manage_msg"]]).then(
        lambda s: (gr.update(choices=project_choices(ctx, s), value=project_id(s)), summary(ctx, s)),
        [state], [selector, w["summary"]])
    page.tab.select(lambda s: summary(ctx, s), [state], [w["summary"]])  # runs/sentences may have changed
    w["delete"].click(lambda: gr.update(visible=True), None, [w["confirm_row"]])
    w["confirm_no"].click(lambda: gr.update(visible=False), None, [w["confirm_row"]])
    after(w["confirm_yes"].click(lambda s: delete(ctx, s), [state], [state, w["manage_msg"]]).then(
        lambda: gr.update(visible=False), None, [w["confirm_row"]]))
    w["export"].click(lambda s: export(ctx, s), [state], [w["export_file"], w["manage_msg"]])
    after(w["import"].click(lambda s, f: import_(ctx, s, f), [state, w["import_file"]],
                            [state, w["manage_msg"]]))


def outputs(w: dict) -> list:
    """The summary and the exported file (of the previous project); the messages stay: they
    report the action that changed the open project."""
    return [w["summary"], w["export_file"]]


def refresh(ctx, state, w: dict) -> tuple:
    return summary(ctx, state), None
