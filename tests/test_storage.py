"""engine.storage on real SQLite files: CRUD, graph edits, the answer cache, export/import round
trip, refused archives, a writer killed with SIGKILL, two writer processes, the v1 -> v2 migration."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from engine.storage import (SCHEMA_VERSION, ArchiveError, NameClashError, NotFoundError, SchemaVersionError,
                            StorageError, Store, StoreSettings, default_db_path)

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_V1 = Path(__file__).resolve().parent / "fixtures" / "storage_v1.db"


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "studio.db")
    yield s
    s.close()


def full_project(store: Store, tmp_path: Path, name: str = "kitchen") -> int:
    """A project with a row of every entity, including a real classifier file."""
    pid = store.create_project(name, settings={"preset": None, "tau": 2})
    store.add_category(pid, "cup", super_category="tableware", prompt="a photo of a cup.", synonyms=["mug"])
    store.add_category(pid, "knife", super_category="tableware")
    store.add_category(pid, "oven", super_category="appliance", synonyms=["stove", "range"])
    cache = store.answer_cache(pid)
    cache.put("attributes|cup", "List attributes of a cup.", "1. ceramic\n2. handle", ["ceramic", "handle"],
              {"model": "smollm2", "step": "attributes", "sampling": {"seed": 0}})
    cache.put("scene|all", "Describe a kitchen.", "A cup and a knife.", ["A cup and a knife."], {"model": "smollm2"})
    store.replace_attributes(pid, [dict(category="cup", text="ceramic", kept=True),
                                   dict(category="cup", text="handle", kept=False),
                                   dict(category=None, text="on a counter", kept=True, edited=True)])
    store.replace_sentences(pid, [
        dict(text="a cup next to a knife", labels=["cup", "knife"], source="coarse", category="cup"),
        dict(text="a knife on a board", labels=["knife"], source="fine", category="knife"),
        dict(text="a warm oven, a cup", labels=["oven", "cup"], source="scene", category="oven", enabled=False)])
    store.set_graph(pid, {("cup", "knife"): 3, ("oven", "cup"): 1}, tau=2, cliques=[["cup", "knife"]])
    store.set_edge_edit(pid, "oven", "knife", "add")
    store.set_edge_edit(pid, "cup", "oven", "remove")
    run = store.create_run(pid, {"train": {"epochs": 1, "lr": 0.002}, "backbone": {"model": "tiny-rn"}})
    store.add_run_steps(run, [{"step": i, "epoch": 0, "total": 1.0 / i, "rank_global": 0.5} for i in range(1, 6)])
    store.finish_run(run, "done", 3.5)
    failed = store.create_run(pid, {"train": {"epochs": 9}})
    store.finish_run(failed, "cancelled", 0.2)
    clf_path = store.project_folder(pid) / f"classifier-run{run}.safetensors"
    clf_path.write_bytes(os.urandom(3000))
    cid = store.add_classifier(pid, run, clf_path, hashlib.sha256(clf_path.read_bytes()).hexdigest())
    store.add_evaluation(pid, "voc-mini", {"mAP": 61.5, "results": {"tuned": {"mAP": 61.5, "per_category_ap":
                         {"cup": 0.7, "knife": float("nan")}}}}, classifier_id=cid)
    return pid


def snapshot(store: Store, pid: int) -> dict:
    """Every entity of a project, with ids, project ids, paths and times left out."""
    def rows(objs, drop=("id", "project_id", "created", "updated", "finished", "applied")):
        return [{k: v for k, v in o.model_dump().items() if k not in drop} for o in objs]

    p = store.get_project(pid)
    runs = store.list_runs(pid)
    clfs = store.list_classifiers(pid)
    return {
        "project": {"settings": p.settings, "graph_tau": p.graph_tau},
        "categories": rows(store.list_categories(pid)),
        "answers": rows(store.list_answers(pid)),
        "attributes": rows(store.list_attributes(pid)),
        "sentences": rows(store.list_sentences(pid)),
        "graph": store.get_graph(pid), "edits": store.edge_edits(pid), "cliques": store.get_cliques(pid),
        "runs": rows(runs), "steps": [store.run_steps(r.id) for r in runs],
        "classifiers": [(c.sha256, hashlib.sha256(Path(c.path).read_bytes()).hexdigest(),
                         [r.id for r in runs].index(c.run_id)) for c in clfs],
        "evaluations": [(e.dataset, e.metrics, e.per_category_ap, [c.id for c in clfs].index(e.classifier_id))
                        for e in store.list_evaluations(pid)],
    }


def all_counts(db: Path) -> dict:
    con = sqlite3.connect(db)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
    finally:
        con.close()


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# --------------------------------------------------------------------------------------------------
# Basics
# --------------------------------------------------------------------------------------------------

def test_pragmas_and_fresh_schema(store):
    con = sqlite3.connect(store.path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    assert store.schema_version() == SCHEMA_VERSION
    assert store.integrity_check() == "ok"
    with store._write_engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == StoreSettings().busy_timeout_ms


def test_default_path_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("IFS_DB", str(tmp_path / "x.db"))
    assert default_db_path() == tmp_path / "x.db"
    monkeypatch.delenv("IFS_DB")
    monkeypatch.setenv("SPACE_ID", "me/space")
    assert default_db_path() == ROOT / "data" / "studio.db"
    monkeypatch.delenv("SPACE_ID")
    assert default_db_path().name == "studio.db" and "image-free-studio" in str(default_db_path())


def test_projects_crud_and_errors(store):
    a = store.create_project("  my   project ")
    b = store.create_project("other")
    assert [p.name for p in store.list_projects()] == ["my project", "other"]
    with pytest.raises(NameClashError, match="already exists"):
        store.create_project("other")
    with pytest.raises(NameClashError):
        store.rename_project(a, "other")
    store.rename_project(a, "renamed")
    assert store.get_project(a).name == "renamed"
    assert store.set_project_settings(a, {"x": 1}) == {"x": 1}
    assert store.set_project_settings(a, {"y": 2}) == {"x": 1, "y": 2}
    with pytest.raises(StorageError, match="non-empty name"):
        store.create_project("   ")
    store.add_category(b, "dog")
    folder = store.project_folder(b)
    (folder / "f.bin").write_bytes(b"x")
    store.delete_project(b)
    assert not folder.exists()
    with pytest.raises(NotFoundError, match="does not exist"):
        store.get_project(b)
    assert store.list_categories(b) == []
    assert all_counts(store.path)["category"] == 0  # cascaded
    c = store.create_project("third")
    assert c > b  # ids are never reused: a deleted project's folder cannot be inherited


def test_create_project_with_categories_is_one_transaction(store):
    pid = store.create_project("p", categories=["cup", dict(name="oven", super_category="appliance",
                                                            synonyms=["stove"], prompt="an oven.")])
    cats = store.list_categories(pid)
    assert [(c.name, c.position, c.super_category, c.synonyms) for c in cats] == [
        ("cup", 0, None, []), ("oven", 1, "appliance", ["stove"])]
    with pytest.raises(NameClashError, match="Duplicate"):
        store.create_project("q", categories=["cup", "cup"])
    with pytest.raises(NameClashError, match="already exists"):
        store.create_project("p", categories=["knife"])
    assert [p.name for p in store.list_projects()] == ["p"]
    assert all_counts(store.path)["category"] == 2


def test_categories(store):
    pid = store.create_project("p")
    cid = store.add_category(pid, "cup", synonyms=["mug"], prompt="a cup.")
    store.add_category(pid, "knife")
    with pytest.raises(NameClashError):
        store.add_category(pid, "cup")
    store.update_category(cid, super_category="tableware")  # prompt and synonyms left as they were
    c = store.get_category(cid)
    assert (c.super_category, c.synonyms, c.prompt) == ("tableware", ["mug"], "a cup.")
    store.update_category(cid, prompt=None)
    assert store.get_category(cid).prompt is None
    store.replace_attributes(pid, [dict(category="knife", text="sharp"), dict(category="cup", text="round")])
    ids = store.set_categories(pid, [dict(name="oven"), dict(name="cup", synonyms=["beaker"])])
    assert [c.name for c in store.list_categories(pid)] == ["oven", "cup"]
    assert ids[1] == cid  # kept its id
    assert [a.text for a in store.list_attributes(pid)] == ["round"]  # knife's went with it
    store.delete_category(cid)
    assert [c.name for c in store.list_categories(pid)] == ["oven"]
    assert store.list_attributes(pid) == []


def test_sentences_filters_edits_counts(store):
    pid = store.create_project("p")
    for n in ("cup", "knife", "oven"):
        store.add_category(pid, n)
    store.replace_sentences(pid, [
        dict(text="A cup and a Knife", labels=["cup", "knife"], source="coarse", category="cup"),
        dict(text="a knife", labels=["knife"], source="fine", category="knife"),
        dict(text="a cupboard", labels=[], source="fine", category="cup")])
    assert [s.text for s in store.list_sentences(pid, category="knife")] == ["A cup and a Knife", "a knife"]
    assert [s.text for s in store.list_sentences(pid, source="fine", search="CUP")] == ["a cupboard"]
    assert [s.text for s in store.list_sentences(pid, asked="cup")] == ["A cup and a Knife", "a cupboard"]
    assert store.sentence_counts(pid) == {"cup": 1, "knife": 2, "oven": 0}
    assert store.sentence_sources(pid) == ["coarse", "fine"]
    sid = store.list_sentences(pid)[1].id
    store.update_sentence(sid, enabled=False)
    assert not store.get_sentence(sid).edited  # disabling is not an edit of the text
    assert store.sentence_counts(pid)["knife"] == 1
    assert store.count_sentences(pid, enabled_only=True) == 2
    store.update_sentence(sid, text="a sharp knife", labels=["knife", "oven"])
    s = store.get_sentence(sid)
    assert (s.text, s.labels, s.edited, s.enabled) == ("a sharp knife", ["knife", "oven"], True, False)
    new = store.add_sentences(pid, [dict(text="an oven", labels=["oven"], source="user")])
    assert store.list_sentences(pid, limit=1, offset=3)[0].id == new[0]
    store.delete_sentence(sid)
    assert store.delete_sentences(new) == 1
    assert len(store.list_sentences(pid)) == 2
    with pytest.raises(NotFoundError):
        store.update_sentence(sid, text="gone")


def test_queries_answered_in_sql(store):
    """What the workflow asks the store instead of filtering rows in Python: categories per
    project, one category's attributes replaced, steps per run, case-folded search."""
    a = store.create_project("a", categories=["cup", "knife", "oven"])
    b = store.create_project("b", categories=["pan"])
    store.create_project("empty")
    assert store.category_counts() == {a: 3, b: 1}
    store.replace_attributes(a, [dict(category="cup", text="round"), dict(category="knife", text="sharp"),
                                 dict(category=None, text="in a kitchen")])
    store.replace_attributes(a, [dict(category="cup", text="deep", edited=True)], category="cup")
    assert [(x.category, x.text) for x in store.list_attributes(a)] == [
        ("knife", "sharp"), (None, "in a kitchen"), ("cup", "deep")]
    store.replace_attributes(a, [], category=None)  # the common ones only
    assert [(x.category, x.text) for x in store.list_attributes(a)] == [("knife", "sharp"), ("cup", "deep")]
    run, idle = store.create_run(a, {}), store.create_run(a, {})
    other = store.create_run(b, {})
    store.add_run_steps(run, [{"step": 1, "total": 2.0}, {"step": 2, "total": 1.5, "lr": 0.1}])
    store.add_run_steps(other, [{"step": 1, "total": 9.0}])
    assert store.run_step_summaries(a) == {run: (2, store.run_steps(run)[-1])}
    assert store.run_step_summaries(a)[run][1] == {"step": 2, "total": 1.5, "lr": 0.1} and idle not in store.run_step_summaries(a)
    store.replace_sentences(a, [dict(text="Die STRASSE ist nass", labels=["cup"]),
                                dict(text="Élan of a cup", labels=["cup"]), dict(text="a knife", labels=["knife"])])
    # Python's casefold, not SQLite's ASCII-only lower(): ß matches SS, É matches é
    assert [s.text for s in store.list_sentences(a, search="straße")] == ["Die STRASSE ist nass"]
    assert [s.text for s in store.list_sentences(a, search="élan")] == ["Élan of a cup"]
    assert store.count_sentences(a, search="ÉLAN") == 1
    sid = store.list_sentences(a)[2].id
    store.update_sentence(sid, text="a sharp knife")
    store.add_sentences(a, [dict(text="my own", labels=["cup"], source="user")])
    assert [s.text for s in store.list_sentences(a, by_user=True)] == ["a sharp knife", "my own"]
    assert store.find_category(a, "knife").name == "knife" and store.find_category(a, "Knife") is None
    assert store.find_category(b, "knife") is None


def test_graph_user_edits_survive_recompute(store):
    pid = store.create_project("p")
    store.set_graph(pid, {("cup", "knife"): 4, ("knife", "cup"): 1, ("oven", "cup"): 2}, tau=3,
                    cliques=[["cup", "knife"]])
    store.set_edge_edit(pid, "oven", "knife", "add")
    store.set_edge_edit(pid, "knife", "cup", "remove")
    store.set_edge_edit(pid, "cup", "oven", "add")
    store.set_edge_edit(pid, "oven", "cup", "remove")  # a new edit of a pair replaces the old one
    weights, tau = store.get_graph(pid)
    assert weights == {("cup", "knife"): 5, ("cup", "oven"): 2} and tau == 3
    store.set_graph(pid, {("cup", "oven"): 7}, tau=5, cliques=[])
    assert store.get_graph(pid) == ({("cup", "oven"): 7}, 5)
    assert store.get_cliques(pid) == []
    assert store.edge_edits(pid) == ([("knife", "oven")], [("cup", "knife"), ("cup", "oven")])
    store.set_edge_edit(pid, "cup", "knife", "reset")
    assert store.edge_edits(pid) == ([("knife", "oven")], [("cup", "oven")])
    store.clear_edge_edits(pid)
    assert store.edge_edits(pid) == ([], [])
    assert store.get_graph(pid)[0] == {("cup", "oven"): 7}
    with pytest.raises(StorageError, match="add, remove or reset"):
        store.set_edge_edit(pid, "a", "b", "flip")


def test_answer_cache_protocol(store):
    from engine.knowledge import AnswerCache

    pid = store.create_project("p")
    other = store.create_project("q")
    cache = store.answer_cache(pid)
    for name in ("get", "put"):
        assert callable(getattr(cache, name)) and hasattr(AnswerCache, name)
    assert cache.get("k") is None
    cache.put("k", "question?", "raw 1", ["a"], {"model": "m1", "step": "attributes"})
    first = store.get_answer(pid, "k")
    cache.put("k", "question?", "raw 2", ["b"], {"model": "m2"})  # put with an existing key replaces
    assert cache.get("k") == "raw 2"
    row = store.get_answer(pid, "k")
    assert (row.items, row.model, row.settings, row.created) == (["b"], "m2", {"model": "m2"}, first.created)
    assert row.updated >= first.updated
    assert store.answer_cache(other).get("k") is None  # project-scoped
    assert len(store.list_answers(pid)) == 1
    assert store.delete_answers(pid, ["k"]) == 1 and cache.get("k") is None
    with pytest.raises(NotFoundError):
        store.answer_cache(999)


def test_runs_classifiers_evaluations(store, tmp_path):
    pid = store.create_project("p")
    run = store.create_run(pid, {"train": {"epochs": 2}})
    assert store.get_run(run).status == "running"
    store.add_run_step(run, {"step": 1, "total": 2.0})
    store.add_run_steps(run, [{"step": 2, "total": 1.5}, {"step": 3, "total": 1.0}])
    assert [s["total"] for s in store.run_steps(run)] == [2.0, 1.5, 1.0]
    assert store.delete_run_steps(run, after_step=1) == 2  # a resumed run redoes steps 2..
    store.add_run_steps(run, [{"step": 2, "total": 1.4}, {"step": 3, "total": 0.9}])
    assert [s["total"] for s in store.run_steps(run)] == [2.0, 1.4, 0.9]
    with pytest.raises(StorageError, match="status"):
        store.finish_run(run, "exploded")
    with pytest.raises(NotFoundError):
        store.add_run_steps(9999, [{"step": 1}])
    dangling = store.create_run(pid, {}, status="queued")
    assert store.fail_unfinished_runs(pid) == 2
    assert store.get_run(dangling).status == "failed"
    store.finish_run(run, "done", 4.25)
    r = store.get_run(run)
    assert (r.status, r.elapsed_s) == ("done", 4.25) and r.finished >= r.created
    f = tmp_path / "c.safetensors"
    f.write_bytes(b"abc")
    cid = store.add_classifier(pid, run, f, hashlib.sha256(b"abc").hexdigest())
    assert store.list_classifiers(pid)[-1].id == cid
    eid = store.add_evaluation(pid, "coco", {"results": {"tuned": {"mAP": float("nan"),
                                                                   "per_category_ap": {"cup": None}}}})
    e = store.get_evaluation(eid)
    assert e.metrics["results"]["tuned"]["mAP"] is None and e.per_category_ap == {"tuned": {"cup": None}}
    store.delete_run(run)
    assert store.get_classifier(cid).run_id is None  # the file record outlives its run
    store.delete_classifier(cid, remove_file=True)
    assert not f.exists() and store.list_classifiers(pid) == []


def test_not_a_database_and_foreign_database(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StorageError, match="Cannot open"):
        Store(bad)
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with pytest.raises(StorageError, match="not an Image-Free Studio"):
        Store(other)


# --------------------------------------------------------------------------------------------------
# Export / import
# --------------------------------------------------------------------------------------------------

def test_export_import_round_trip_all_entities(tmp_path):
    src = Store(tmp_path / "a" / "studio.db")
    pid = full_project(src, tmp_path)
    before = snapshot(src, pid)
    archive = src.export_project(pid, tmp_path / "out" / "kitchen.zip")
    src.close()
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
        manifest = json.loads(z.read("manifest.json"))
        assert str(tmp_path) not in z.read("rows.json").decode()  # no local paths travel
    assert manifest["schema_version"] == SCHEMA_VERSION and "rows.json" in names
    assert any(n.startswith("files/") for n in names)

    dst = Store(tmp_path / "b" / "studio.db")
    dst.create_project("kitchen")  # clash: the import is renamed
    new = dst.import_project(archive)
    assert dst.get_project(new).name == "kitchen (2)"
    assert snapshot(dst, new) == before
    clf = dst.list_classifiers(new)[0]
    assert Path(clf.path).parent == dst.project_folder(new)  # the file came along, into the new folder
    again = dst.import_project(archive)
    assert dst.get_project(again).name == "kitchen (3)"
    assert snapshot(dst, again) == before
    assert dst.integrity_check() == "ok"
    dst.close()


def _write_zip(path: Path, members: dict, manifest: dict | None = None, rows: dict | None = None):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        if manifest is not None:
            z.writestr("manifest.json", json.dumps(manifest))
        if rows is not None:
            z.writestr("rows.json", json.dumps(rows))
        for name, data in members.items():
            if isinstance(data, zipfile.ZipInfo):
                z.writestr(data, b"target")
            else:
                z.writestr(name, data)
    return path


def _good_parts(tmp_path: Path):
    s = Store(tmp_path / "src" / "studio.db")
    pid = full_project(s, tmp_path)
    archive = s.export_project(pid, tmp_path / "good.zip")
    s.close()
    with zipfile.ZipFile(archive) as z:
        return {n: z.read(n) for n in z.namelist()}


def _malicious(tmp_path: Path) -> dict[str, Path]:
    parts = _good_parts(tmp_path)
    manifest = json.loads(parts["manifest.json"])
    rows = json.loads(parts["rows.json"])
    files = {n: d for n, d in parts.items() if n.startswith("files/")}
    cases = {}
    d = tmp_path / "bad"
    d.mkdir()
    cases["traversal"] = _write_zip(d / "traversal.zip", {**files, "../../evil.py": b"print(1)"}, manifest, rows)
    cases["absolute"] = _write_zip(d / "absolute.zip", {**files, "/tmp/evil.py": b"x"}, manifest, rows)
    # A classifier row pointing its file outside the target folder.
    rows_t = json.loads(parts["rows.json"])
    rows_t["classifier"][0]["file"] = "files/../../../escape.bin"
    man_t = {**manifest, "files": {"files/../../../escape.bin": rows_t["classifier"][0]["sha256"]}}
    cases["file traversal"] = _write_zip(d / "ftrav.zip", {"files/../../../escape.bin": next(iter(files.values()))},
                                         man_t, rows_t)
    link = zipfile.ZipInfo("files/link")
    link.external_attr = (0o120777 << 16)
    cases["symlink"] = _write_zip(d / "symlink.zip", {**files, "files/link": link}, manifest, rows)
    cases["huge member"] = _write_zip(d / "huge.zip", {**files, "files/blob.bin": b"\0" * 3_000_000}, manifest, rows)
    cases["wrong version"] = _write_zip(d / "version.zip", files, {**manifest, "schema_version": 99}, rows)
    cases["version as text"] = _write_zip(d / "version2.zip", files, {**manifest, "schema_version": "2"}, rows)
    cases["not a project"] = _write_zip(d / "foreign.zip", files, {"format": "something-else"}, rows)
    cases["no manifest"] = _write_zip(d / "nomanifest.zip", files, None, rows)
    bad_hash = {n: b"tampered" for n in files}
    cases["tampered file"] = _write_zip(d / "tampered.zip", bad_hash, manifest, rows)
    rows_b = json.loads(parts["rows.json"])
    rows_b["sentence"][0]["labels"] = "not a list"
    cases["bad row"] = _write_zip(d / "badrow.zip", files, manifest, rows_b)
    rows_c = json.loads(parts["rows.json"])
    rows_c["run_step"][0]["run_id"] = 424242
    cases["dangling reference"] = _write_zip(d / "dangling.zip", files, manifest, rows_c)
    (d / "garbage.zip").write_bytes(b"PK\x03\x04 not really a zip")
    cases["not a zip"] = d / "garbage.zip"
    return cases


def test_malicious_archives_are_refused_and_write_nothing(tmp_path):
    cases = _malicious(tmp_path)
    db = tmp_path / "target" / "studio.db"
    store = Store(db, StoreSettings(max_member_bytes=1_000_000))
    store.create_project("kitchen")
    counts, files = all_counts(db), tree(store.files_root)
    messages = {}
    for what, path in cases.items():
        with pytest.raises(ArchiveError) as info:
            store.import_project(path)
        messages[what] = str(info.value)
        assert "Nothing was imported" in messages[what], what
        assert all_counts(db) == counts, what
        assert tree(store.files_root) == files, what
    assert not (tmp_path / "escape.bin").exists() and not (tmp_path / "evil.py").exists()
    assert "escapes" in messages["traversal"] and "escapes" in messages["absolute"]
    assert "escapes" in messages["file traversal"]
    assert "symbolic link" in messages["symlink"]
    assert "limit 1000000" in messages["huge member"]
    assert "schema version 99" in messages["wrong version"]
    assert "sha256" in messages["tampered file"]
    assert store.integrity_check() == "ok"
    store.close()


def test_compressed_bomb_is_refused_by_declared_and_read_size(tmp_path):
    parts = _good_parts(tmp_path)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        for n, data in parts.items():
            z.writestr(n, data)
        z.writestr("files/zeros.bin", b"\0" * 20_000_000)  # ~20 KB compressed
    assert bomb.stat().st_size < 200_000
    store = Store(tmp_path / "t.db", StoreSettings(max_member_bytes=5_000_000))
    with pytest.raises(ArchiveError, match="zeros.bin"):
        store.import_project(bomb)
    assert store.list_projects() == []
    store.close()


def test_old_archive_version_imports(tmp_path):
    """An archive of schema 1 (no cliques, no graph threshold) imports with their defaults."""
    parts = _good_parts(tmp_path)
    manifest = json.loads(parts["manifest.json"])
    rows = json.loads(parts["rows.json"])
    del rows["clique"]
    del rows["project"]["graph_tau"]
    files = {n: d for n, d in parts.items() if n.startswith("files/")}
    path = _write_zip(tmp_path / "v1.zip", files, {**manifest, "schema_version": 1}, rows)
    store = Store(tmp_path / "t.db")
    pid = store.import_project(path)
    assert store.get_cliques(pid) == [] and store.get_project(pid).graph_tau is None
    assert len(store.list_sentences(pid)) == 3
    store.close()


# --------------------------------------------------------------------------------------------------
# Crashes and concurrency (real processes)
# --------------------------------------------------------------------------------------------------

WRITER = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from engine.storage import Store
store = Store(sys.argv[2])
tag, seconds = sys.argv[3], float(sys.argv[4])
pid = store.find_project(tag).id
shared = store.find_project("shared").id
cache = store.answer_cache(pid)
run = store.create_run(pid, {"writer": tag})
t_end = time.time() + seconds
i = 0
while seconds <= 0 or time.time() < t_end:
    i += 1
    ids = store.add_sentences(pid, [dict(text=f"{tag} {i} {k} " + "x" * 200, labels=[tag]) for k in range(20)])
    print("S", ",".join(map(str, ids)), flush=True)
    cache.put(f"{tag}-{i}", "q", "raw " * 50, ["a"] * 10, {"model": tag})
    print("A", f"{tag}-{i}", flush=True)
    store.add_run_steps(run, [{"step": i, "total": 1.0 / i}])
    print("R", i, flush=True)
    store.set_project_settings(shared, {"last": f"{tag}-{i}", tag: i})
print("DONE", flush=True)
"""


def _spawn_writer(db: Path, tag: str, seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(ROOT), str(db), tag, str(seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _record(line: str, committed: dict) -> None:
    kind, _, rest = line.strip().partition(" ")
    if kind == "S":
        committed["S"].update(int(x) for x in rest.split(","))
    elif kind == "A":
        committed["A"].add(rest)
    elif kind == "R":
        committed["R"].add(int(rest))


def _check_committed(db: Path, tag: str, committed: dict) -> None:
    store = Store(db)
    try:
        assert store.integrity_check() == "ok"
        pid = store.find_project(tag).id
        have = {s.id for s in store.list_sentences(pid)}
        assert committed["S"] <= have, f"lost sentences {sorted(committed['S'] - have)[:5]}"
        keys = {a.key for a in store.list_answers(pid)}
        assert committed["A"] <= keys
        steps = {s["step"] for r in store.list_runs(pid) for s in store.run_steps(r.id)}
        assert committed["R"] <= steps
    finally:
        store.close()


def test_sigkill_mid_writes_keeps_every_committed_row(tmp_path):
    db = tmp_path / "studio.db"
    with Store(db) as s:
        s.create_project("killed")
        s.create_project("shared")
    committed = {"S": set(), "A": set(), "R": set()}
    for round_, lines_before_kill in enumerate((7, 40, 150, 23)):
        proc = _spawn_writer(db, "killed", 0)
        seen = 0
        for line in proc.stdout:
            _record(line, committed)
            seen += 1
            if seen >= lines_before_kill:
                os.kill(proc.pid, signal.SIGKILL)
                break
        # Keep what reached the pipe before the kill landed.
        for line in proc.stdout:
            _record(line, committed)
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
        _check_committed(db, "killed", committed)
    assert len(committed["S"]) > 100
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA foreign_key_check").fetchall() == []
    con.close()


def test_two_processes_write_concurrently(tmp_path):
    db = tmp_path / "studio.db"
    with Store(db) as s:
        for name in ("alpha", "beta", "shared"):
            s.create_project(name)
    procs = {tag: _spawn_writer(db, tag, 4.0) for tag in ("alpha", "beta")}
    results = {}
    for tag, proc in procs.items():
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        committed = {"S": set(), "A": set(), "R": set()}
        lines = out.splitlines()
        assert lines[-1] == "DONE"
        for line in lines[:-1]:
            _record(line, committed)
        results[tag] = committed
    for tag, committed in results.items():
        assert len(committed["S"]) >= 20
        _check_committed(db, tag, committed)
    with Store(db) as s:
        # Same row, two writers: one of the two last writes won, whole (no torn JSON).
        shared = s.find_project("shared").settings
        assert shared["last"] in {f"alpha-{max(results['alpha']['R'])}", f"beta-{max(results['beta']['R'])}"}
        # Different projects never mixed.
        for tag in ("alpha", "beta"):
            pid = s.find_project(tag).id
            assert all(x.labels == [tag] for x in s.list_sentences(pid))


def test_threads_share_one_store(tmp_path):
    """The studio's worker threads share one Store: a session per operation, no lost write."""
    import threading

    store = Store(tmp_path / "s.db")
    pids = [store.create_project(f"p{i}") for i in range(4)]
    errors, done = [], {pid: [] for pid in pids}

    def work(pid):
        try:
            for i in range(25):
                done[pid] += store.add_sentences(pid, [dict(text=f"{pid}-{i}", labels=[])])
                store.set_project_settings(pids[0], {"last": pid})
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(pid,)) for pid in pids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for pid in pids:
        assert [s.id for s in store.list_sentences(pid)] == done[pid]
        assert all(s.text.startswith(f"{pid}-") for s in store.list_sentences(pid))
    assert store.get_project(pids[0]).settings["last"] in pids
    store.close()


def test_two_stores_in_one_process_see_only_committed_state(tmp_path):
    """Two sessions (two Store objects on one file, as two app workers): a write is visible to the
    other as soon as it commits, and a failed transaction leaves nothing behind."""
    a, b = Store(tmp_path / "s.db"), Store(tmp_path / "s.db")
    pid = a.create_project("p")
    assert [p.name for p in b.list_projects()] == ["p"]
    with pytest.raises(KeyError):
        a.replace_sentences(pid, [dict(text="ok", labels=[]), dict(labels=["no text"])])
    assert b.list_sentences(pid) == []
    a.close()
    b.close()


# --------------------------------------------------------------------------------------------------
# Migration
# --------------------------------------------------------------------------------------------------

def _schema(db: Path) -> dict:
    con = sqlite3.connect(db)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
        out = {}
        for t in tables:
            cols = sorted((r[1], r[2].upper(), r[3], r[5]) for r in con.execute(f'PRAGMA table_info("{t}")'))
            fks = sorted(tuple(r[2:7]) for r in con.execute(f'PRAGMA foreign_key_list("{t}")'))
            idx = sorted(r[1] for r in con.execute(f'PRAGMA index_list("{t}")') if not r[1].startswith("sqlite_"))
            out[t] = (cols, fks, idx)
        return out
    finally:
        con.close()


def test_migration_v1_to_current(tmp_path):
    db = tmp_path / "old.db"
    shutil.copy(FIXTURE_V1, db)
    con = sqlite3.connect(db)
    assert con.execute("SELECT max(version) FROM schema_version").fetchone()[0] == 1
    assert "clique" not in {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
    con.close()
    store = Store(db)
    assert store.schema_version() == SCHEMA_VERSION
    assert store.integrity_check() == "ok"
    fresh = tmp_path / "fresh.db"
    Store(fresh).close()
    assert _schema(db) == _schema(fresh)  # migrated schema == schema created from scratch
    p = store.find_project("kitchen")
    assert p.graph_tau is None and p.settings == {"preset": None}
    assert [c.name for c in store.list_categories(p.id)] == ["cup", "knife", "oven"]
    assert store.answer_cache(p.id).get("attributes|cup|v1") == "1. ceramic\n2. handle"
    assert store.edge_edits(p.id) == ([("knife", "oven")], [])
    assert store.run_steps(store.list_runs(p.id)[0].id) == [{"step": 1, "total": 1.25, "lr": 0.002}]
    assert store.list_evaluations(p.id)[0].per_category_ap == {"tuned": {"cup": 0.5}}
    # What version 2 added works on the migrated file, and user edits survive it.
    store.set_graph(p.id, {("cup", "knife"): 5}, tau=3, cliques=[["cup", "knife"]])
    assert store.get_cliques(p.id) == [["cup", "knife"]] and store.get_project(p.id).graph_tau == 3
    assert store.edge_edits(p.id) == ([("knife", "oven")], [])
    store.close()
    Store(db).close()  # opening again migrates nothing
    con = sqlite3.connect(db)
    assert [r[0] for r in con.execute("SELECT version FROM schema_version ORDER BY version")] == list(
        range(1, SCHEMA_VERSION + 1))
    con.close()


def test_newer_database_is_refused_unchanged(tmp_path):
    db = tmp_path / "new.db"
    Store(db).close()
    con = sqlite3.connect(db)
    con.execute("INSERT INTO schema_version VALUES (99, '2030-01-01 00:00:00')")
    con.commit()
    con.close()
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    with pytest.raises(SchemaVersionError, match="newer"):
        Store(db)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest


def test_round_trip_any_text(tmp_path_factory):
    """Unicode, quotes, newlines and odd JSON in every text field survive export and import."""
    from hypothesis import HealthCheck, given, settings, strategies as st

    from engine.storage.names import NameRuleError, clean_name, name_key

    def passes_name_rule(x):
        try:
            return clean_name(x, max_length=100) == x
        except NameRuleError:
            return False

    txt = st.text(min_size=1, max_size=30).filter(lambda x: x.strip())
    pnames = txt.filter(passes_name_rule)  # project and category names obey the one name rule
    names = st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Cf", "Zs", "Zl", "Zp")),
                             min_size=1, max_size=12).filter(passes_name_rule),
                     min_size=1, max_size=5, unique_by=name_key)

    @settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(pname=pnames, cats=names, sentences=st.lists(txt, max_size=5), answer=st.text(max_size=200),
           # integers within the 64 bits that imports accept (engine.storage.json_limits)
           extra=st.dictionaries(st.text(max_size=8),
                                 st.one_of(st.none(), st.integers(-2**63, 2**63 - 1), st.text(max_size=8)),
                                 max_size=3))
    def check(pname, cats, sentences, answer, extra):
        d = tmp_path_factory.mktemp("rt")
        src = Store(d / "a.db")
        pid = src.create_project(pname, settings=extra, categories=cats)
        src.replace_sentences(pid, [dict(text=s, labels=cats[:2], source=s[:5], category=cats[0]) for s in sentences])
        src.answer_cache(pid).put(answer, answer, answer, [answer], {"x": extra})
        src.replace_attributes(pid, [dict(category=c, text=c + "\n" + answer) for c in cats])
        before = snapshot(src, pid)
        archive = src.export_project(pid, d / "p.zip")
        src.close()
        dst = Store(d / "b.db")
        new = dst.import_project(archive)
        assert dst.get_project(new).name == " ".join(pname.split())
        assert snapshot(dst, new) == before
        dst.close()

    check()
