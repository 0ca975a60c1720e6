"""One project as one zip file: export, and import after full validation.

Export: one zip with ``manifest.json`` (format, schema version, file hashes), ``rows.json``
(every row of the project) and ``files/`` (classifier files). Import validates everything
(member names, symlinks, sizes, version, JSON nesting and number ranges, row count, names by the
one name rule of engine.storage.names, rows, file hashes) before the first write, then writes in
transactions of a bounded number of rows (the project hidden until the last); a name clash
becomes "name (2)".
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import JSON, select

from engine.storage.database import Database, StoreSettings, clean_name, duplicate_names
from engine.storage.errors import ArchiveError, StorageError
from engine.storage.json_limits import JsonLimitError, JsonLimits, loads_limited
from engine.storage.run_lease import current_lease, lease_is_dead
from engine.storage.schema import (ARCHIVE_DEFAULTS, ARCHIVE_FORMAT, EDGE_ORIGINS, EXPORT_TABLES, IMPORTING,
                                   RUN_STATUSES, SCHEMA_VERSION, Project, Run, RunStep, now)


class ArchiveTables(Database):
    """Export a project to an archive; import one as a new project."""

    # -- export / import ---------------------------------------------------------------------------

    def export_project(self, project_id: int, path: str | Path) -> Path:
        """Write the project to one zip at ``path``: manifest.json, rows.json, files/ (classifier
        files). Read in one transaction (a consistent snapshot); the zip appears atomically."""
        path = Path(path)
        with self._session(write=False) as s:
            p = self._project(s, project_id)
            rows: dict[str, Any] = {"project": _row_dict(p, exclude=("id",))}
            for name, model in EXPORT_TABLES.items():
                if model is RunStep:
                    q = (select(RunStep).join(Run, Run.id == RunStep.run_id)
                         .where(Run.project_id == project_id).order_by(RunStep.id))
                else:
                    q = select(model).where(model.project_id == project_id).order_by(model.id)
                rows[name] = [_row_dict(r, exclude=("project_id",)) for r in s.execute(q).scalars()]
        files: dict[str, str] = {}
        sources: dict[str, Path] = {}
        missing = []
        for row in rows["classifier"]:
            src = Path(row["path"])
            if not src.is_file():
                missing.append(str(src))
                continue
            member = f"files/{row['id']}-{_safe_basename(src.name)}"
            row["file"] = member
            row["path"] = src.name  # no local folder names in the archive; import sets the new path
            files[member] = row["sha256"]
            sources[member] = src
        if missing:
            raise StorageError("Cannot export: classifier file(s) missing: " + ", ".join(missing) +
                               ". Restore them or delete those classifiers first.")
        manifest = {"format": ARCHIVE_FORMAT, "schema_version": SCHEMA_VERSION, "project": rows["project"]["name"],
                    "exported": now().isoformat(), "files": files}
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".export-", suffix=".zip", dir=path.parent)
        os.close(fd)
        try:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
                z.writestr("manifest.json", json.dumps(manifest, indent=1, ensure_ascii=False))
                z.writestr("rows.json", json.dumps(rows, ensure_ascii=False))
                for member, src in sources.items():
                    data = src.read_bytes()
                    if hashlib.sha256(data).hexdigest() != files[member]:
                        raise StorageError(f"Cannot export: {src} changed since it was recorded (sha256 differs).")
                    z.writestr(member, data)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    def import_project(self, path: str | Path, name: str | None = None, on_progress=None) -> int:
        """Import an archive of :meth:`export_project` as a new project (renamed "name (2)" ... on a
        clash); returns its id. Everything is validated before the first write; a refused archive
        raises :class:`ArchiveError` and leaves the database and the files folder untouched.

        The rows are written in transactions of ``StoreSettings.import_batch_rows`` rows, so other
        writers (another visitor creating a project) wait for one batch, never for the whole
        import; ``on_progress(rows written, rows in all)`` is called between two. Until the last
        batch the project is marked as importing (:data:`IMPORTING`) and not listed; an import
        that fails or is interrupted deletes what it wrote."""
        archive = _read_archive(Path(path), self.settings)
        rows = archive.rows
        self._forget_dead_imports()
        written: list[Path] = []
        pid: int | None = None
        try:
            pid, ids = self._import_head(rows, archive.files, name, written)
            total = sum(len(rows[t]) for t in EXPORT_TABLES)
            done = len(rows["run"]) + len(rows["classifier"])
            batch = max(1, int(self.settings.import_batch_rows))
            for table, model in EXPORT_TABLES.items():
                if table in ("run", "classifier"):
                    continue
                prepared = [_import_values(table, model, r, pid, ids) for r in rows[table]]
                for k in range(0, len(prepared), batch):
                    with self._session() as s:
                        s.execute(model.__table__.insert(), prepared[k:k + batch])
                    done += len(prepared[k:k + batch])
                    if on_progress is not None:
                        on_progress(done, total)
            with self._session() as s:
                p = self._project(s, pid)
                p.settings = {k: v for k, v in (p.settings or {}).items() if k != IMPORTING}
                s.add(p)
        except BaseException:
            if pid is not None:
                with self._session() as s:
                    s.delete(self._project(s, pid))
            for f in written:
                f.unlink(missing_ok=True)
            folder = self.project_folder(pid, create=False) if pid is not None else None
            if folder is not None and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
            raise
        return pid

    def _forget_dead_imports(self) -> None:
        """Delete the projects of imports whose process died before it finished (killed mid-way)."""
        for p in self.list_projects(include_importing=True):
            if IMPORTING in (p.settings or {}) and lease_is_dead(p.settings[IMPORTING]):
                self.delete_project(p.id)

    def _import_head(self, rows: dict, files: dict, name, written: list) -> tuple[int, dict]:
        """First transaction of an import: the project (marked as importing), its runs and its
        classifiers (their new ids are referenced by later rows; their files are written)."""
        with self._session() as s:
            taken = set(s.execute(select(Project.name)).scalars())
            base = clean_name(name or rows["project"]["name"], "project")
            new_name, k = base, 2
            while new_name in taken:
                new_name, k = f"{base} ({k})", k + 1
            pr = rows["project"]
            p = Project(name=new_name, created=pr["created"], graph_tau=pr["graph_tau"],
                        settings={**pr["settings"], IMPORTING: current_lease()})
            s.add(p)
            s.flush()
            pid = p.id
            folder = self.project_folder(pid, create=False).resolve()
            ids: dict[str, dict[int, int]] = {t: {} for t in EXPORT_TABLES}
            for table in ("run", "classifier"):
                model = EXPORT_TABLES[table]
                for r in rows[table]:
                    vals = _import_values(table, model, r, pid, ids)
                    if table == "classifier":
                        target = folder / PurePosixPath(r["file"]).name
                        if target.resolve().parent != folder:
                            raise ArchiveError(f"Refused: {r['file']!r} would land outside {folder}.")
                        folder.mkdir(parents=True, exist_ok=True)
                        written.append(target)
                        target.write_bytes(files[r["file"]])
                        vals["path"] = str(target)
                    obj = model(**vals)
                    s.add(obj)
                    s.flush()
                    ids[table][r["id"]] = obj.id
            return pid, ids


def _import_values(table: str, model, r: dict, pid: int, ids: dict) -> dict:
    """The column values of one archive row in this database: new project id, references to the
    runs and classifiers already written, no id (a new one is given), no lease (nobody trains it)."""
    vals = {k: v for k, v in r.items() if k not in ("id", "file")}
    if table == "run_step":
        vals["run_id"] = ids["run"][r.get("run_id")]
    else:
        vals["project_id"] = pid
    if table == "run":
        vals["lease"] = None
    if table == "classifier":
        vals["run_id"] = ids["run"].get(r.get("run_id"))
    if table == "evaluation":
        vals["classifier_id"] = ids["classifier"].get(r.get("classifier_id"))
    if table in ("run", "classifier"):
        return vals
    obj = model(**vals)
    return {c.name: getattr(obj, c.name) for c in model.__table__.columns if c.name != "id"}


def _row_dict(row, exclude=()) -> dict:
    out = {}
    for col in row.__table__.columns:
        if col.name in exclude:
            continue
        v = getattr(row, col.name)
        out[col.name] = v.isoformat() if isinstance(v, datetime) else v
    return out



def _safe_basename(name: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).lstrip(".")
    return keep[:100] or "file"



@dataclass
class _Archive:
    manifest: dict
    rows: dict
    files: dict[str, bytes]


_PY_TYPES = {int: (int,), float: (int, float), str: (str,), bool: (bool, int), dict: (dict,), list: (list,),
             datetime: (str,)}


def _read_archive(path: Path, settings: StoreSettings) -> _Archive:
    """Open and validate an archive completely (no writes); raise :class:`ArchiveError`."""
    def refuse(msg: str):
        raise ArchiveError(f"Refused {path.name}: {msg} Nothing was imported.")

    if not path.is_file():
        refuse("no such file.")
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        refuse(f"not a project archive (zip) ({exc}).")
    with z:
        names = _check_members(z.infolist(), settings, refuse)

        def read(n: str) -> bytes:
            try:
                with z.open(n) as f:
                    data = f.read(settings.max_member_bytes + 1)
            except KeyError:
                refuse(f"it lacks {n}.")
            except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, ValueError) as exc:
                refuse(f"member {n!r} is damaged ({exc}).")
            if len(data) > settings.max_member_bytes:
                refuse(f"member {n!r} is larger than {settings.max_member_bytes} bytes.")
            return data

        def load_json(n: str):
            try:
                return loads_limited(read(n), JsonLimits())
            except JsonLimitError as exc:
                refuse(f"{n} is beyond this program's limits: {exc}")
            except (UnicodeDecodeError, ValueError) as exc:
                refuse(f"{n} is not valid JSON ({exc}).")

        manifest = load_json("manifest.json")
        if not isinstance(manifest, dict) or manifest.get("format") != ARCHIVE_FORMAT:
            refuse("manifest.json does not describe an Image-Free Studio project.")
        version = manifest.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SCHEMA_VERSION:
            refuse(f"unknown schema version {version!r} (this program reads 1 to {SCHEMA_VERSION}).")
        files_decl = manifest.get("files") or {}
        if not isinstance(files_decl, dict):
            refuse("manifest.json's files is not a mapping.")
        rows = _validate_rows(load_json("rows.json"), version, refuse, settings.max_archive_rows)
        files: dict[str, bytes] = {}
        for r in rows["classifier"]:
            member = r.get("file")
            if not isinstance(member, str) or member not in names or files_decl.get(member) != r["sha256"]:
                refuse(f"classifier {r['id']}'s file {member!r} is missing or undeclared.")
            data = read(member)
            if hashlib.sha256(data).hexdigest() != r["sha256"]:
                refuse(f"{member} does not match its sha256 (damaged archive).")
            files[member] = data
        extra = names - {"manifest.json", "rows.json"} - set(files)
        if extra:
            refuse(f"unexpected member(s) {sorted(extra)}.")
        return _Archive(manifest, rows, files)



def _check_members(infos, settings: StoreSettings, refuse) -> set[str]:
    """The member names, after refusing: too many or too large members, paths that escape the
    folder, links, directories, duplicates and anything but manifest.json, rows.json, files/*."""
    if len(infos) > settings.max_members:
        refuse(f"{len(infos)} members (limit {settings.max_members}).")
    total = 0
    names = set()
    for info in infos:
        n = info.filename
        pp = PurePosixPath(n)
        if (not n or n.startswith(("/", "\\")) or "\\" in n or ".." in pp.parts or ":" in n
                or "\x00" in n or pp.is_absolute()):
            refuse(f"member {n!r} has a path that escapes the target folder.")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            refuse(f"member {n!r} is a symbolic link.")
        if info.is_dir():
            refuse(f"member {n!r} is a directory entry; archives hold files only.")
        if n in names:
            refuse(f"member {n!r} appears twice.")
        names.add(n)
        if info.file_size > settings.max_member_bytes:
            refuse(f"member {n!r} is {info.file_size} bytes (limit {settings.max_member_bytes}, "
                   f"StoreSettings.max_member_bytes).")
        total += info.file_size
        if total > settings.max_archive_bytes:
            refuse(f"members total over {settings.max_archive_bytes} bytes (StoreSettings.max_archive_bytes).")
        if n not in ("manifest.json", "rows.json") and not (
                len(pp.parts) == 2 and pp.parts[0] == "files" and pp.parts[1] == _safe_basename(pp.parts[1])):
            refuse(f"unexpected member {n!r}.")
    return names


def _validate_rows(rows, version: int, refuse, max_rows: int) -> dict:
    """Check every row against the tables' columns (types, ids, references) and the names against
    the name rule; refuse more than ``max_rows`` rows; fill the columns an older archive version
    lacks; parse timestamps."""
    if not isinstance(rows, dict) or not isinstance(rows.get("project"), dict):
        refuse("rows.json has no project.")
    n_rows = sum(len(v) for v in rows.values() if isinstance(v, list))
    if n_rows > max_rows:
        refuse(f"it holds {n_rows:,} rows (limit {max_rows:,}, StoreSettings.max_archive_rows).")
    defaults = ARCHIVE_DEFAULTS.get(version, {}) if version < SCHEMA_VERSION else {}
    out: dict[str, Any] = {}

    def check(table: str, model, r, extra_ok=()):
        if not isinstance(r, dict):
            refuse(f"a {table} row is not an object.")
        r = {**(defaults.get(table) or {}), **r}
        for col in model.__table__.columns:
            if col.name in ("project_id",) or (table == "project" and col.name == "id"):
                continue
            if col.name not in r:
                if col.nullable:
                    r[col.name] = None
                elif not model.model_fields[col.name].is_required():
                    continue
                else:
                    refuse(f"a {table} row lacks {col.name!r}.")
            v = r[col.name]
            if v is None:
                if not col.nullable and not col.primary_key:
                    refuse(f"a {table} row has no {col.name}.")
                continue
            ctype = getattr(col.type, "impl_instance", col.type)  # TypeDecorators: their SQL type
            try:
                pytype = ctype.python_type
            except NotImplementedError:
                pytype = dict
            if isinstance(col.type, JSON):
                pytype = list if model.model_fields[col.name].annotation is list else dict
            if not isinstance(v, _PY_TYPES.get(pytype, (pytype,))) or (pytype is int and isinstance(v, bool)):
                refuse(f"{table}.{col.name} has a value of the wrong type ({type(v).__name__}).")
            if pytype is bool and v not in (0, 1):  # SQLite stores a flag as 0/1; -1 or 2 is no flag
                refuse(f"{table}.{col.name} is not true or false ({v!r}).")
            if pytype is datetime:
                try:
                    t = datetime.fromisoformat(v)
                    r[col.name] = t if t.tzinfo else t.replace(tzinfo=timezone.utc)
                except ValueError:
                    refuse(f"{table}.{col.name} is not a timestamp ({v!r}).")
        unknown = set(r) - {c.name for c in model.__table__.columns} - set(extra_ok)
        if unknown:
            refuse(f"{table} rows carry unknown fields {sorted(unknown)}.")
        return r

    out["project"] = check("project", Project, rows["project"])
    try:
        out["project"]["name"] = clean_name(out["project"].get("name"), "project")
    except StorageError as exc:
        refuse(str(exc))
    out["project"].setdefault("settings", {})
    out["project"].setdefault("graph_tau", None)
    out["project"].setdefault("created", now())
    for table, model in EXPORT_TABLES.items():
        lst = rows.get(table)
        if lst is None and table in defaults:
            lst = []
        if not isinstance(lst, list):
            refuse(f"rows.json lacks the {table} rows.")
        checked = [check(table, model, r, extra_ok=("file",) if table == "classifier" else ()) for r in lst]
        ids = [r.get("id") for r in checked]
        if any(not isinstance(i, int) for i in ids) or len(set(ids)) != len(ids):
            refuse(f"{table} rows need distinct integer ids.")
        out[table] = checked
    _check_references(out, refuse)
    return out


def _check_references(out: dict, refuse) -> None:
    """Refuse rows that refer to rows not in the archive, unknown edge origins and run statuses,
    and two categories of one name."""
    run_ids = {r["id"] for r in out["run"]}
    clf_ids = {r["id"] for r in out["classifier"]}
    if any(r.get("run_id") not in run_ids for r in out["run_step"]):
        refuse("a run step refers to a run not in the archive.")
    if any(r.get("run_id") is not None and r["run_id"] not in run_ids for r in out["classifier"]):
        refuse("a classifier refers to a run not in the archive.")
    if any(r.get("classifier_id") is not None and r["classifier_id"] not in clf_ids for r in out["evaluation"]):
        refuse("an evaluation refers to a classifier not in the archive.")
    for r in out["edge"]:
        if r.get("origin", "computed") not in EDGE_ORIGINS:
            refuse(f"edge origin {r.get('origin')!r} is unknown.")
    for r in out["run"]:
        if r.get("status", "running") not in RUN_STATUSES:
            refuse(f"run status {r.get('status')!r} is unknown.")
    try:
        names = [clean_name(r["name"], "category") for r in out["category"]]
    except StorageError as exc:
        refuse(str(exc))
    if duplicate_names(names):
        refuse(f"two categories share a name (case does not count): {', '.join(map(repr, duplicate_names(names)))}.")
    for r, n in zip(out["category"], names):
        r["name"] = n
