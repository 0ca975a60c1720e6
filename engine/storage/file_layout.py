"""Where a database keeps its project files, and the move away from the old shared folder.

Project ``<id>``'s files (classifiers, training checkpoints, the sentence-feature cache) live in
``<database file>.files/<id>/``: next to ``studio.db`` that is ``studio.db.files/``, so two
databases in one folder never share a project folder (``StoreSettings.files_dir`` overrides the
root).

Before schema 4 they lived in ``<database folder>/projects/<id>/``, one folder for every database
there: deleting project 1 of one database deleted project 1's files of the other, and training in
one overwrote the other's ``classifier-run1.safetensors``. The migration to schema 4 copies each
classifier file that this database's rows point to in that old folder, and whose content still
matches the sha256 the row recorded (a file another database overwrote is not ours), into the new
folder and points the row at the copy, in the migration's transaction; the old files go once it
has committed. Checkpoints and feature caches are not moved: which database they belong to cannot
be told, and both are rebuilt when needed.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def default_files_root(db_path: Path) -> Path:
    """``<database file>.files`` beside the database."""
    db_path = Path(db_path).resolve()
    return db_path.parent / f"{db_path.name}.files"


def legacy_files_root(db_path: Path) -> Path:
    """The ``projects/`` folder beside the database that schema 2 used (shared by every database)."""
    return Path(db_path).resolve().parent / "projects"


def copy_legacy_classifiers(conn, db_path: Path, files_root: Path) -> list[Path]:
    """Inside the schema-4 migration's transaction (``conn``): copy this database's classifier
    files out of the legacy folder and point their rows at the copies. Returns the legacy files to
    delete after the transaction has committed."""
    legacy = legacy_files_root(db_path)
    copied: list[Path] = []
    rows = conn.exec_driver_sql("SELECT id, project_id, path, sha256 FROM classifier").fetchall()
    for cid, pid, path, sha in rows:
        src = Path(path)
        try:
            if not src.is_file() or not src.resolve().is_relative_to(legacy):
                continue
            data = src.read_bytes()
        except OSError:
            continue
        if hashlib.sha256(data).hexdigest() != sha:
            continue  # overwritten by another database: the row stays as it was (broken before)
        dest = files_root / str(int(pid)) / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".moving")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
        conn.exec_driver_sql("UPDATE classifier SET path = ? WHERE id = ?", (str(dest), cid))
        copied.append(src)
    return copied


def remove_legacy_files(files: list[Path]) -> None:
    """Delete the copied legacy files, then their folders when empty."""
    for f in files:
        f.unlink(missing_ok=True)
        for folder in (f.parent, f.parent.parent):
            try:
                folder.rmdir()  # only when empty
            except OSError:
                break
