"""Databases keep to themselves (issue 11, findings 3, 7 and 8): two databases in one folder never
share a project files folder (and the files of an older layout move to the database's own folder);
opening a foreign or newer database changes none of its bytes; a long import writes in bounded
transactions, so another writer gets in between them."""
import hashlib
import os
import sqlite3
from pathlib import Path

import pytest

from engine.storage import SCHEMA_VERSION, SchemaVersionError, StorageError, Store, StoreSettings


def _classifier(store: Store, pid: int, content: bytes) -> Path:
    path = store.project_folder(pid) / "classifier-run1.safetensors"
    path.write_bytes(content)
    store.add_classifier(pid, None, path, hashlib.sha256(content).hexdigest())
    return path


def test_two_databases_in_one_folder_do_not_share_files(tmp_path):
    x, y = Store(tmp_path / "x.db"), Store(tmp_path / "y.db")
    px, py = x.create_project("p"), y.create_project("p")
    assert px == py == 1
    assert x.project_folder(px) != y.project_folder(py)
    fx = _classifier(x, px, b"x" * 100)
    fy = _classifier(y, py, b"y" * 100)
    assert fx.read_bytes() == b"x" * 100 and fy.read_bytes() == b"y" * 100
    y.delete_project(py)
    assert fx.is_file() and fx.read_bytes() == b"x" * 100
    assert x.list_classifiers(px)[0].path == str(fx)
    x.close()
    y.close()


def test_files_of_the_shared_layout_move_to_the_database_folder(tmp_path):
    """A schema-2 database whose classifier lives in <folder>/projects/<id>/ (the old layout)."""
    db = tmp_path / "old.db"
    s = Store(db)
    pid = s.create_project("p")
    s.close()
    old = tmp_path / "projects" / str(pid) / "classifier-run1.safetensors"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"weights")
    con = sqlite3.connect(db)
    con.execute("INSERT INTO classifier (project_id, run_id, path, sha256, created) VALUES (?, NULL, ?, ?, "
                "'2026-01-01 00:00:00')", (pid, str(old), hashlib.sha256(b"weights").hexdigest()))
    if SCHEMA_VERSION > 3:  # make it look like a file written before this release
        con.execute("DELETE FROM schema_version")
        con.execute("INSERT INTO schema_version VALUES (3, '2026-01-01 00:00:00')")
        for table, column in (("run", "lease"), ("sentence", "cut")):  # what versions 4 and 5 added
            if column in [r[1] for r in con.execute(f"PRAGMA table_info({table})")]:
                con.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    con.commit()
    con.close()
    s = Store(db)
    row = s.list_classifiers(pid)[0]
    assert Path(row.path).read_bytes() == b"weights"
    assert Path(row.path).parent == s.project_folder(pid, create=False)
    assert not Path(row.path).is_relative_to(tmp_path / "projects")
    assert not old.exists()
    s.close()


def _digest(path: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in path.parent.iterdir()
            if p.name.startswith(path.name)}


@pytest.mark.parametrize("kind", ["foreign", "newer"])
def test_opening_refused_database_changes_nothing(tmp_path, kind):
    db = tmp_path / "f.db"
    con = sqlite3.connect(db)
    if kind == "foreign":
        con.execute("CREATE TABLE t (x)")
        con.execute("INSERT INTO t VALUES (1)")
    else:
        con.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied TEXT)")
        con.execute("INSERT INTO schema_version VALUES (99, '2030-01-01')")
    con.commit()
    con.close()
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    before = _digest(db)
    with pytest.raises((StorageError, SchemaVersionError)):
        Store(db)
    assert _digest(db) == before  # no -wal / -shm left beside it, same bytes
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_import_writes_in_bounded_transactions(tmp_path):
    src = Store(tmp_path / "src.db")
    pid = src.create_project("big", categories=["a", "b"])
    src.replace_sentences(pid, [dict(text=f"sentence {i}", labels=["a"]) for i in range(1200)])
    archive = src.export_project(pid, tmp_path / "big.zip")
    src.close()

    db = tmp_path / "dst.db"
    dst = Store(db, StoreSettings(import_batch_rows=100))
    other = Store(db, StoreSettings(busy_timeout_ms=50))  # would fail at once on a held lock
    between = []

    def progress(done, total):
        if 0 < done < total:  # between two of the import's transactions
            between.append(other.create_project(f"made during import {len(between)}"))

    new = dst.import_project(archive, on_progress=progress)
    assert len(between) >= 5
    assert len(dst.list_sentences(new)) == 1200
    names = [p.name for p in dst.list_projects()]
    assert "big" in names and all(f"made during import {i}" in names for i in range(len(between)))
    other.close()
    dst.close()


def test_an_interrupted_import_is_not_a_project(tmp_path):
    src = Store(tmp_path / "src.db")
    pid = src.create_project("big", categories=["a"])
    src.replace_sentences(pid, [dict(text=f"s {i}", labels=["a"]) for i in range(500)])
    archive = src.export_project(pid, tmp_path / "big.zip")
    src.close()
    dst = Store(tmp_path / "dst.db", StoreSettings(import_batch_rows=100))

    def boom(done, total):
        if done > 200:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        dst.import_project(archive, on_progress=boom)
    assert dst.list_projects() == []
    assert [p for p in dst.files_root.rglob("*") if p.is_file()] == []
    dst.close()
