"""Projects persist in one SQLite file: SQLModel tables, schema migrations, export/import archives.

Choices (see README "Settings" for the user-facing ones, :class:`StoreSettings` for all):

- One database file; WAL journal, ``foreign_keys=ON``, a busy timeout, ``synchronous`` FULL by
  default. Every write method is one transaction opened with ``BEGIN IMMEDIATE`` (the write lock
  is taken up front, so two writers queue on the busy timeout instead of failing on a lock
  upgrade); a process killed mid-write leaves the last committed state (SQLite's journal).
- No module-global mutable state and one session per operation: two studio sessions share only
  what has been committed; on the same row the last committed write wins.
- Schema version in ``schema_version``; forward migrations ``_MIGRATIONS[v]`` take v to v+1, each
  in one transaction. A database written by a newer program is refused, never altered.
  Version 1 had no cliques table and no graph threshold; version 2 added both (METHOD.md
  section 2: the cliques computed at the threshold tau become prompt blocks, so they are stored
  with the threshold they were computed at).
- Categories are referenced by name in attribute and sentence rows (knowledge refers to them by
  name and a name is unique within a project).
- Graph edges carry an ``origin``: ``computed`` edges are replaced by every recomputation,
  ``user-added`` / ``user-removed`` edits are kept apart and survive it (METHOD.md section 2).
- Per-step training losses are rows of ``run_step`` (one small insert per step or per batch of
  steps): a killed run keeps every step written before the kill.
- Export: one zip with ``manifest.json`` (format, schema version, file hashes), ``rows.json``
  (every row of the project) and ``files/`` (classifier files). Import validates everything
  (member names, symlinks, sizes, version, rows, file hashes) before the first write, then
  writes in one transaction; a name clash becomes "name (2)".
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator, Optional

from sqlalchemy import JSON, CheckConstraint, Column, ForeignKey, Index, Integer, UniqueConstraint, event, text
from sqlalchemy import create_engine, delete, func, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import registry
from sqlalchemy.orm import Session
from sqlmodel import Field, SQLModel

SCHEMA_VERSION = 2
ARCHIVE_FORMAT = "image-free-studio-project"
RUN_STATUSES = ("queued", "running", "done", "cancelled", "failed")
EDGE_ORIGINS = ("computed", "user-added", "user-removed")


# --------------------------------------------------------------------------------------------------
# Errors and settings
# --------------------------------------------------------------------------------------------------

class StorageError(RuntimeError):
    """A storage failure whose message says what happened and what to do."""


class NotFoundError(StorageError, LookupError):
    """A project / row id that does not exist (deleted, or never created)."""


class NameClashError(StorageError, ValueError):
    """A project or category name already taken."""


class SchemaVersionError(StorageError):
    """A database or archive of a schema version this program does not know."""


class ArchiveError(StorageError, ValueError):
    """An archive refused on import (nothing was written)."""


ImportRefused = ArchiveError


@dataclass
class StoreSettings:
    """Connection and archive settings.

    ``busy_timeout_ms``: how long a writer waits for another one's transaction before failing.
    ``synchronous``: SQLite's durability level (FULL survives power loss; NORMAL survives a killed
    process and is faster). ``files_dir``: where project files (classifiers) live, default
    ``<database folder>/projects``. ``max_member_bytes`` / ``max_archive_bytes`` /
    ``max_members``: import refuses archives beyond these (uncompressed sizes).
    """

    busy_timeout_ms: int = 30_000
    synchronous: str = "FULL"
    files_dir: str | None = None
    max_member_bytes: int = 512 * 1024 * 1024
    max_archive_bytes: int = 2 * 1024 * 1024 * 1024
    max_members: int = 10_000


def default_db_path() -> Path:
    """``$IFS_DB`` when set; in a Hugging Face Space (``$SPACE_ID`` set) ``data/studio.db`` in the
    app's folder; else ``studio.db`` under platformdirs' user data dir for "image-free-studio"."""
    env = os.environ.get("IFS_DB")
    if env:
        return Path(env).expanduser()
    if os.environ.get("SPACE_ID"):
        return Path(__file__).resolve().parent.parent / "data" / "studio.db"
    from platformdirs import user_data_dir

    return Path(user_data_dir("image-free-studio", appauthor=False)) / "studio.db"


def _now() -> datetime:
    return datetime.now(timezone.utc)


# --------------------------------------------------------------------------------------------------
# Tables (own registry: nothing else's SQLModel tables mix into this schema)
# --------------------------------------------------------------------------------------------------

class _Base(SQLModel, registry=registry()):
    pass


def _fk(target: str, nullable: bool = False, ondelete: str = "CASCADE"):
    return Field(default=None, sa_column=Column(Integer, ForeignKey(target, ondelete=ondelete),
                                                nullable=nullable, index=True))


def _json(default_factory=dict):
    return Field(default_factory=default_factory, sa_column=Column(JSON, nullable=False))


class SchemaVersion(_Base, table=True):
    __tablename__ = "schema_version"
    version: int = Field(primary_key=True)
    applied: datetime = Field(default_factory=_now)


class Project(_Base, table=True):
    __tablename__ = "project"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused: project folders stay unique
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(sa_column_kwargs={"unique": True, "nullable": False})
    created: datetime = Field(default_factory=_now)
    settings: dict = _json()
    graph_tau: Optional[int] = None  # schema 2


class Category(_Base, table=True):
    __tablename__ = "category"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    project_id: int = _fk("project.id")
    position: int = 0
    name: str
    synonyms: list = _json(list)
    super_category: Optional[str] = None
    prompt: Optional[str] = None


class Answer(_Base, table=True):
    __tablename__ = "answer"
    __table_args__ = (UniqueConstraint("project_id", "key"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    project_id: int = _fk("project.id")
    key: str
    question: str = ""
    raw: str = ""
    items: list = _json(list)
    model: str = ""
    settings: dict = _json()
    created: datetime = Field(default_factory=_now)
    updated: datetime = Field(default_factory=_now)


class Attribute(_Base, table=True):
    __tablename__ = "attribute"
    id: Optional[int] = Field(default=None, primary_key=True)
    project_id: int = _fk("project.id")
    category: Optional[str] = Field(default=None, index=True)  # None: a common attribute
    text: str
    kept: bool = True
    edited: bool = False


class Sentence(_Base, table=True):
    __tablename__ = "sentence"
    id: Optional[int] = Field(default=None, primary_key=True)
    project_id: int = _fk("project.id")
    text: str
    labels: list = _json(list)
    source: str = ""
    category: Optional[str] = None  # the (first) category asked about
    enabled: bool = True
    edited: bool = False


class Edge(_Base, table=True):
    __tablename__ = "edge"
    __table_args__ = (UniqueConstraint("project_id", "a", "b", "origin"),
                      CheckConstraint("origin IN ('computed', 'user-added', 'user-removed')", name="edge_origin"))
    id: Optional[int] = Field(default=None, primary_key=True)
    project_id: int = _fk("project.id")
    a: str
    b: str
    weight: float = 0.0
    origin: str = "computed"


class Clique(_Base, table=True):  # schema 2
    __tablename__ = "clique"
    id: Optional[int] = Field(default=None, primary_key=True)
    project_id: int = _fk("project.id")
    position: int = 0
    members: list = _json(list)


class Run(_Base, table=True):
    __tablename__ = "run"
    __table_args__ = (CheckConstraint("status IN ('queued', 'running', 'done', 'cancelled', 'failed')",
                                      name="run_status"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    project_id: int = _fk("project.id")
    config: dict = _json()
    status: str = "running"
    created: datetime = Field(default_factory=_now)
    finished: Optional[datetime] = None
    elapsed_s: Optional[float] = None


class RunStep(_Base, table=True):
    __tablename__ = "run_step"
    id: Optional[int] = Field(default=None, primary_key=True)
    run_id: int = _fk("run.id")
    step: int
    data: dict = _json()


class ClassifierFile(_Base, table=True):
    __tablename__ = "classifier"
    id: Optional[int] = Field(default=None, primary_key=True)
    project_id: int = _fk("project.id")
    run_id: Optional[int] = _fk("run.id", nullable=True, ondelete="SET NULL")
    path: str
    sha256: str
    created: datetime = Field(default_factory=_now)


class Evaluation(_Base, table=True):
    __tablename__ = "evaluation"
    id: Optional[int] = Field(default=None, primary_key=True)
    project_id: int = _fk("project.id")
    classifier_id: Optional[int] = _fk("classifier.id", nullable=True, ondelete="SET NULL")
    dataset: str = ""
    metrics: dict = _json()
    per_category_ap: dict = _json()
    created: datetime = Field(default_factory=_now)


METADATA = _Base.metadata

# Export order (parents before children) and each table's rows' project-scoped references.
_EXPORT_TABLES = {"category": Category, "answer": Answer, "attribute": Attribute, "sentence": Sentence,
                  "edge": Edge, "clique": Clique, "run": Run, "run_step": RunStep,
                  "classifier": ClassifierFile, "evaluation": Evaluation}
# Columns an archive of an older schema may lack, with the value they take.
_ARCHIVE_DEFAULTS = {1: {"project": {"graph_tau": None}, "clique": None}}


# --------------------------------------------------------------------------------------------------
# Migrations: _MIGRATIONS[v] takes a database from schema v to v + 1 (raw SQL, one transaction)
# --------------------------------------------------------------------------------------------------

_MIGRATIONS: dict[int, list[str]] = {
    1: [
        "ALTER TABLE project ADD COLUMN graph_tau INTEGER",
        "CREATE TABLE clique (id INTEGER NOT NULL, project_id INTEGER NOT NULL, position INTEGER NOT NULL, "
        "members JSON NOT NULL, PRIMARY KEY (id), FOREIGN KEY(project_id) REFERENCES project (id) "
        "ON DELETE CASCADE)",
        "CREATE INDEX ix_clique_project_id ON clique (project_id)",
    ],
}


# --------------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------------

_UNSET: Any = object()


class Store:
    """All persistence of the studio and the command line. Methods return detached rows (SQLModel
    instances; JSON columns as lists/dicts) or plain data; every write is one transaction."""

    def __init__(self, path: str | Path | None = None, settings: StoreSettings | None = None):
        self.settings = settings or StoreSettings()
        self.path = Path(path) if path else default_db_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.files_root = (Path(self.settings.files_dir) if self.settings.files_dir
                           else self.path.resolve().parent / "projects")
        url = f"sqlite:///{self.path}"
        self._read_engine = self._make_engine(url, immediate=False)
        self._write_engine = self._make_engine(url, immediate=True)
        try:
            self._prepare_schema()
        except BaseException:
            self.close()
            raise

    # -- connections -------------------------------------------------------------------------------

    def _make_engine(self, url: str, immediate: bool):
        s = self.settings
        if s.synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise StorageError(f"StoreSettings.synchronous must be OFF, NORMAL, FULL or EXTRA, not {s.synchronous!r}.")
        eng = create_engine(url, connect_args={"check_same_thread": False, "timeout": s.busy_timeout_ms / 1000})

        @event.listens_for(eng, "connect")
        def _on_connect(dbapi_conn, _rec):
            dbapi_conn.isolation_level = None  # the driver's own BEGIN is off; _on_begin emits ours
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout = {int(s.busy_timeout_ms)}")
            cur.execute("PRAGMA foreign_keys = ON")
            mode = cur.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"{self.path}: cannot switch the database to WAL mode (got {mode}).")
            cur.execute(f"PRAGMA synchronous = {s.synchronous.upper()}")
            cur.close()

        @event.listens_for(eng, "begin")
        def _on_begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return eng

    @contextmanager
    def _session(self, write: bool = True) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error."""
        with Session(self._write_engine if write else self._read_engine, expire_on_commit=False) as ses:
            try:
                yield ses
                if write:
                    ses.commit()
            except OperationalError as exc:
                ses.rollback()
                raise StorageError(f"Database {self.path}: {exc.orig}") from exc
            except BaseException:
                ses.rollback()
                raise

    def close(self) -> None:
        """Release the connections (the file stays as committed)."""
        self._read_engine.dispose()
        self._write_engine.dispose()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- schema ------------------------------------------------------------------------------------

    def _prepare_schema(self) -> None:
        try:
            with self._write_engine.begin() as conn:
                tables = {r[0] for r in conn.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
                if "schema_version" not in tables:
                    if tables - {"sqlite_sequence"}:
                        raise StorageError(f"{self.path} is an SQLite database but not an Image-Free Studio "
                                           f"one (no schema_version table); choose another file.")
                    METADATA.create_all(conn)
                    conn.execute(SchemaVersion.__table__.insert().values(version=SCHEMA_VERSION, applied=_now()))
                    return
            version = self.schema_version()
            if version > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"{self.path} has schema version {version}, written by a newer Image-Free Studio; this "
                    f"one knows up to {SCHEMA_VERSION}. Upgrade the program (the file was not changed).")
            while version < SCHEMA_VERSION:
                self._migrate(version)
                version = self.schema_version()
        except OperationalError as exc:
            raise StorageError(f"Cannot open the database {self.path}: {exc.orig}") from exc
        except Exception as exc:
            if isinstance(exc, StorageError):
                raise
            import sqlite3

            if isinstance(getattr(exc, "orig", exc), sqlite3.DatabaseError):
                raise StorageError(f"Cannot open the database {self.path}: {getattr(exc, 'orig', exc)}") from exc
            raise

    def _migrate(self, version: int) -> None:
        """Schema ``version`` -> ``version + 1`` in one transaction (re-checked under the write lock,
        so two processes opening an old file migrate it once)."""
        with self._write_engine.begin() as conn:
            current = conn.exec_driver_sql("SELECT max(version) FROM schema_version").scalar()
            if current != version:
                return
            if version not in _MIGRATIONS:
                raise SchemaVersionError(f"{self.path}: no migration from schema version {version}.")
            for sql in _MIGRATIONS[version]:
                conn.exec_driver_sql(sql)
            conn.execute(SchemaVersion.__table__.insert().values(version=version + 1, applied=_now()))

    def schema_version(self) -> int:
        with self._read_engine.connect() as conn:
            v = conn.exec_driver_sql("SELECT max(version) FROM schema_version").scalar()
        return int(v or 0)

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``'s answer ("ok" when the file is sound)."""
        with self._read_engine.connect() as conn:
            return "\n".join(str(r[0]) for r in conn.exec_driver_sql("PRAGMA integrity_check"))

    # -- projects ----------------------------------------------------------------------------------

    def create_project(self, name: str, settings: dict | None = None,
                       categories: Iterable[str | dict] | None = None) -> int:
        """A new project, with its ``categories`` (names, or dicts as :meth:`set_categories`
        takes) in the same transaction; raises :class:`NameClashError` when the name is taken or
        two categories share a name (then nothing is written)."""
        name = _clean_name(name, "project")
        rows = [r if isinstance(r, dict) else {"name": r} for r in (categories or [])]
        names = [_clean_name(r.get("name"), "category") for r in rows]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise NameClashError(f"Duplicate category names: {', '.join(dup)}.")
        try:
            with self._session() as s:
                p = Project(name=name, settings=dict(settings or {}))
                s.add(p)
                s.flush()
                s.add_all([Category(project_id=p.id, position=i, name=n, synonyms=list(r.get("synonyms") or []),
                                    super_category=r.get("super_category") or None, prompt=r.get("prompt") or None)
                           for i, (n, r) in enumerate(zip(names, rows))])
                return p.id
        except IntegrityError as exc:
            raise NameClashError(f"A project named {name!r} already exists; choose another name.") from exc

    def list_projects(self) -> list[Project]:
        """Every project, oldest first."""
        with self._session(write=False) as s:
            return list(s.execute(select(Project).order_by(Project.id)).scalars())

    def get_project(self, project_id: int) -> Project:
        with self._session(write=False) as s:
            return self._project(s, project_id)

    def find_project(self, name: str) -> Project | None:
        with self._session(write=False) as s:
            return s.execute(select(Project).where(Project.name == name)).scalars().first()

    def rename_project(self, project_id: int, name: str) -> None:
        name = _clean_name(name, "project")
        try:
            with self._session() as s:
                p = self._project(s, project_id)
                p.name = name
                s.add(p)
        except IntegrityError as exc:
            raise NameClashError(f"A project named {name!r} already exists; choose another name.") from exc

    def set_project_settings(self, project_id: int, settings: dict, merge: bool = True) -> dict:
        """Store the project's settings (merged into the stored ones unless ``merge=False``)."""
        with self._session() as s:
            p = self._project(s, project_id)
            p.settings = {**(p.settings or {}), **settings} if merge else dict(settings)
            s.add(p)
            return dict(p.settings)

    def delete_project(self, project_id: int, remove_files: bool = True) -> None:
        """Delete the project and every row of it; then its files folder (when ``remove_files``)."""
        with self._session() as s:
            s.delete(self._project(s, project_id))
        if remove_files:
            folder = self.project_folder(project_id, create=False)
            if folder.is_dir() and folder.resolve().parent == self.files_root.resolve():
                shutil.rmtree(folder, ignore_errors=True)

    def project_folder(self, project_id: int, create: bool = True) -> Path:
        """``<files_dir>/<project id>``: the project's files (classifiers, checkpoints)."""
        d = self.files_root / str(int(project_id))
        if create:
            d.mkdir(parents=True, exist_ok=True)
        return d

    @staticmethod
    def _project(s: Session, project_id: int) -> Project:
        return Store._get(s, Project, project_id, "Project")

    @staticmethod
    def _get(s: Session, model, row_id: int, what: str):
        row = s.get(model, row_id)
        if row is None:
            raise NotFoundError(f"{what} {row_id} does not exist (deleted?).")
        return row

    # -- categories --------------------------------------------------------------------------------

    def add_category(self, project_id: int, name: str, super_category: str | None = None,
                     prompt: str | None = None, synonyms: Iterable[str] = ()) -> int:
        """Append a category (last position); raises :class:`NameClashError` on a duplicate name."""
        name = _clean_name(name, "category")
        try:
            with self._session() as s:
                self._project(s, project_id)
                pos = s.execute(select(func.coalesce(func.max(Category.position) + 1, 0))
                             .where(Category.project_id == project_id)).scalar()
                c = Category(project_id=project_id, position=pos, name=name, synonyms=list(synonyms),
                             super_category=super_category or None, prompt=prompt or None)
                s.add(c)
                s.flush()
                return c.id
        except IntegrityError as exc:
            raise NameClashError(f"The project already has a category {name!r}.") from exc

    def set_categories(self, project_id: int, rows: Iterable[dict]) -> list[int]:
        """Make the project's categories exactly ``rows`` (dicts: name, super_category, prompt,
        synonyms), in that order. A category whose name stays keeps its id; the attributes of a
        category that goes are deleted with it."""
        rows = [dict(r) for r in rows]
        names = [_clean_name(r["name"], "category") for r in rows]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise NameClashError(f"Duplicate category names: {', '.join(dup)}.")
        with self._session() as s:
            self._project(s, project_id)
            old = {c.name: c for c in s.execute(select(Category).where(Category.project_id == project_id)).scalars()}
            gone = [n for n in old if n not in names]
            for n in gone:
                s.delete(old[n])
            if gone:
                s.execute(delete(Attribute).where(Attribute.project_id == project_id, Attribute.category.in_(gone)))
            s.flush()
            ids = []
            for pos, (name, r) in enumerate(zip(names, rows)):
                c = old.get(name) or Category(project_id=project_id, name=name)
                c.position = pos
                c.super_category = r.get("super_category") or None
                c.prompt = r.get("prompt") or None
                c.synonyms = list(r.get("synonyms") or [])
                s.add(c)
                s.flush()
                ids.append(c.id)
            return ids

    def list_categories(self, project_id: int) -> list[Category]:
        """The project's categories in their order."""
        with self._session(write=False) as s:
            return list(s.execute(select(Category).where(Category.project_id == project_id)
                               .order_by(Category.position, Category.id)).scalars())

    def get_category(self, category_id: int) -> Category:
        with self._session(write=False) as s:
            return self._get(s, Category, category_id, "Category")

    def update_category(self, category_id: int, super_category=_UNSET, synonyms=_UNSET, prompt=_UNSET,
                        position=_UNSET) -> None:
        """Change the given fields (an argument left out keeps its value; ``None`` clears it)."""
        with self._session() as s:
            c = self._get(s, Category, category_id, "Category")
            if super_category is not _UNSET:
                c.super_category = super_category or None
            if synonyms is not _UNSET:
                c.synonyms = list(synonyms or [])
            if prompt is not _UNSET:
                c.prompt = prompt or None
            if position is not _UNSET:
                c.position = int(position)
            s.add(c)

    def delete_category(self, category_id: int) -> None:
        """Delete a category and its attributes (sentences keep their text; labels are untouched)."""
        with self._session() as s:
            c = self._get(s, Category, category_id, "Category")
            s.execute(delete(Attribute).where(Attribute.project_id == c.project_id, Attribute.category == c.name))
            s.delete(c)

    # -- knowledge answers -------------------------------------------------------------------------

    def answer_cache(self, project_id: int) -> "StoreAnswerCache":
        """A project-scoped ``engine.knowledge.AnswerCache`` writing into this database."""
        with self._session(write=False) as s:
            self._project(s, project_id)
        return StoreAnswerCache(self, project_id)

    def put_answer(self, project_id: int, key: str, question: str, raw: str, items: list,
                   meta: dict | None = None) -> None:
        """Insert or replace the answer under ``key`` (created kept, updated refreshed)."""
        meta = dict(meta or {})
        now = _now()
        values = dict(project_id=project_id, key=key, question=question or "", raw=raw or "",
                      items=list(items or []), model=str(meta.get("model") or ""), settings=meta,
                      created=now, updated=now)
        stmt = sqlite_insert(Answer.__table__).values(**values)
        stmt = stmt.on_conflict_do_update(index_elements=["project_id", "key"],
                                          set_={k: stmt.excluded[k] for k in
                                                ("question", "raw", "items", "model", "settings", "updated")})
        try:
            with self._session() as s:
                s.execute(stmt)
        except IntegrityError as exc:
            raise NotFoundError(f"Project {project_id} does not exist (deleted?).") from exc

    def get_answer(self, project_id: int, key: str) -> Answer | None:
        with self._session(write=False) as s:
            return s.execute(select(Answer).where(Answer.project_id == project_id, Answer.key == key)).scalars().first()

    def list_answers(self, project_id: int) -> list[Answer]:
        """Every stored answer, in the order first asked."""
        with self._session(write=False) as s:
            return list(s.execute(select(Answer).where(Answer.project_id == project_id).order_by(Answer.id)).scalars())

    def delete_answers(self, project_id: int, keys: Iterable[str] | None = None) -> int:
        """Forget the answers under ``keys`` (all when None) so they are asked again; returns how many."""
        with self._session() as s:
            q = delete(Answer).where(Answer.project_id == project_id)
            if keys is not None:
                q = q.where(Answer.key.in_(list(keys)))
            return s.execute(q).rowcount

    # -- attributes --------------------------------------------------------------------------------

    def replace_attributes(self, project_id: int, rows: Iterable[dict]) -> None:
        """Make the project's attributes exactly ``rows`` (dicts: category (None = common), text,
        kept, edited)."""
        with self._session() as s:
            self._project(s, project_id)
            s.execute(delete(Attribute).where(Attribute.project_id == project_id))
            s.add_all([Attribute(project_id=project_id, category=r.get("category"), text=str(r["text"]),
                                 kept=bool(r.get("kept", True)), edited=bool(r.get("edited", False)))
                       for r in rows])

    def list_attributes(self, project_id: int, category: str | None = _UNSET) -> list[Attribute]:
        """Attributes of the project (of one category when given; ``None`` = the common ones)."""
        with self._session(write=False) as s:
            q = select(Attribute).where(Attribute.project_id == project_id)
            if category is not _UNSET:
                q = q.where(Attribute.category.is_(None) if category is None else Attribute.category == category)
            return list(s.execute(q.order_by(Attribute.id)).scalars())

    def update_attribute(self, attribute_id: int, text: str | None = None, kept: bool | None = None) -> None:
        """Edit one attribute (marked as edited by the user)."""
        with self._session() as s:
            a = self._get(s, Attribute, attribute_id, "Attribute")
            if text is not None:
                a.text = text
            if kept is not None:
                a.kept = bool(kept)
            a.edited = True
            s.add(a)

    # -- sentences ---------------------------------------------------------------------------------

    def replace_sentences(self, project_id: int, rows: Iterable[dict]) -> None:
        """Make the project's sentences exactly ``rows`` (dicts: text, labels, source, category,
        enabled, edited)."""
        with self._session() as s:
            self._project(s, project_id)
            s.execute(delete(Sentence).where(Sentence.project_id == project_id))
            s.add_all([_sentence(project_id, r) for r in rows])

    def add_sentences(self, project_id: int, rows: Iterable[dict]) -> list[int]:
        """Append sentences (same dicts as :meth:`replace_sentences`); returns their ids."""
        with self._session() as s:
            self._project(s, project_id)
            objs = [_sentence(project_id, r) for r in rows]
            s.add_all(objs)
            s.flush()
            return [o.id for o in objs]

    def list_sentences(self, project_id: int, enabled_only: bool = False, category: str | None = None,
                       source: str | None = None, search: str | None = None, asked: str | None = None,
                       limit: int | None = None, offset: int = 0) -> list[Sentence]:
        """Sentences in insertion order, filtered by: enabled, ``category`` (among the labels),
        ``source`` (question), ``search`` (case-insensitive substring), ``asked`` (the category the
        question was about)."""
        with self._session(write=False) as s:
            q = self._sentence_query(project_id, enabled_only, category, source, search, asked)
            q = q.order_by(Sentence.id).offset(offset)
            if limit is not None:
                q = q.limit(limit)
            return list(s.execute(q).scalars())

    def count_sentences(self, project_id: int, enabled_only: bool = False, category: str | None = None,
                        source: str | None = None, search: str | None = None) -> int:
        with self._session(write=False) as s:
            q = self._sentence_query(project_id, enabled_only, category, source, search, None)
            return s.execute(select(func.count()).select_from(q.subquery())).scalar()

    @staticmethod
    def _sentence_query(project_id, enabled_only, category, source, search, asked):
        q = select(Sentence).where(Sentence.project_id == project_id)
        if enabled_only:
            q = q.where(Sentence.enabled.is_(True))
        if category:
            q = q.where(text("EXISTS (SELECT 1 FROM json_each(sentence.labels) WHERE json_each.value = :cat)")
                        .bindparams(cat=category))
        if source:
            q = q.where(Sentence.source == source)
        if asked:
            q = q.where(Sentence.category == asked)
        if search:
            q = q.where(func.instr(func.lower(Sentence.text), search.lower()) > 0)
        return q

    def sentence_counts(self, project_id: int, enabled_only: bool = True) -> dict[str, int]:
        """Sentences labelled with each category ({name: n}, 0 for an uncovered category)."""
        counts = {c.name: 0 for c in self.list_categories(project_id)}
        sql = ("SELECT j.value, count(*) FROM sentence, json_each(sentence.labels) AS j "
               "WHERE sentence.project_id = :pid" + (" AND sentence.enabled = 1" if enabled_only else "") +
               " GROUP BY j.value")
        with self._session(write=False) as s:
            for name, n in s.execute(text(sql), {"pid": project_id}):
                if name in counts:
                    counts[name] = int(n)
        return counts

    def sentence_sources(self, project_id: int) -> list[str]:
        with self._session(write=False) as s:
            return sorted(r for r in s.execute(select(Sentence.source).distinct()
                                            .where(Sentence.project_id == project_id)).scalars() if r)

    def get_sentence(self, sentence_id: int) -> Sentence:
        with self._session(write=False) as s:
            return self._get(s, Sentence, sentence_id, "Sentence")

    def update_sentence(self, sentence_id: int, text: str | None = None, labels: Iterable[str] | None = None,
                        enabled: bool | None = None) -> None:
        """Edit a sentence; a changed text or labels marks it as edited by the user."""
        with self._session() as s:
            row = self._get(s, Sentence, sentence_id, "Sentence")
            if text is not None and text != row.text:
                row.text, row.edited = text, True
            if labels is not None and list(labels) != list(row.labels):
                row.labels, row.edited = list(labels), True
            if enabled is not None:
                row.enabled = bool(enabled)
            s.add(row)

    def set_sentences_enabled(self, sentence_ids: Iterable[int], enabled: bool) -> int:
        with self._session() as s:
            return s.execute(update(Sentence).where(Sentence.id.in_(list(sentence_ids)))
                             .values(enabled=bool(enabled))).rowcount

    def delete_sentence(self, sentence_id: int) -> None:
        with self._session() as s:
            s.delete(self._get(s, Sentence, sentence_id, "Sentence"))

    def delete_sentences(self, sentence_ids: Iterable[int]) -> int:
        with self._session() as s:
            return s.execute(delete(Sentence).where(Sentence.id.in_(list(sentence_ids)))).rowcount

    # -- graph -------------------------------------------------------------------------------------

    def set_graph(self, project_id: int, weights: dict, tau: int | None = None,
                  cliques: Iterable[Iterable[str]] = ()) -> None:
        """Replace the computed edges (``weights`` {(a, b): n}, every non-zero pair), the threshold
        and the cliques; the user's edge edits are untouched."""
        with self._session() as s:
            p = self._project(s, project_id)
            p.graph_tau = None if tau is None else int(tau)
            s.add(p)
            s.execute(delete(Edge).where(Edge.project_id == project_id, Edge.origin == "computed"))
            merged: dict[tuple[str, str], float] = {}
            for (a, b), w in dict(weights).items():
                if a != b and w:
                    key = tuple(sorted((str(a), str(b))))
                    merged[key] = merged.get(key, 0.0) + float(w)
            s.add_all([Edge(project_id=project_id, a=a, b=b, weight=w, origin="computed")
                       for (a, b), w in merged.items()])
            s.execute(delete(Clique).where(Clique.project_id == project_id))
            s.add_all([Clique(project_id=project_id, position=i, members=list(q)) for i, q in enumerate(cliques)])

    def get_graph(self, project_id: int) -> tuple[dict, int | None]:
        """``(weights {(a, b): w}, tau)`` as last stored by :meth:`set_graph`."""
        with self._session(write=False) as s:
            p = self._project(s, project_id)
            rows = s.execute(select(Edge).where(Edge.project_id == project_id, Edge.origin == "computed")
                          .order_by(Edge.id)).scalars()
            w = {(e.a, e.b): (int(e.weight) if float(e.weight).is_integer() else e.weight) for e in rows}
            return w, p.graph_tau

    def get_cliques(self, project_id: int) -> list[list[str]]:
        with self._session(write=False) as s:
            return [list(c.members) for c in s.execute(select(Clique).where(Clique.project_id == project_id)
                                                     .order_by(Clique.position, Clique.id)).scalars()]

    def set_edge_edit(self, project_id: int, a: str, b: str, action: str) -> None:
        """``action``: "add" (a user-added edge), "remove" (a user-removed one) or "reset" (forget
        the edit of this pair). Pairs are unordered."""
        if action not in ("add", "remove", "reset"):
            raise StorageError(f"Edge edit action must be add, remove or reset, not {action!r}.")
        if a == b:
            raise StorageError("An edge joins two different categories.")
        a, b = sorted((str(a), str(b)))
        with self._session() as s:
            self._project(s, project_id)
            s.execute(delete(Edge).where(Edge.project_id == project_id, Edge.a == a, Edge.b == b,
                                         Edge.origin != "computed"))
            if action != "reset":
                s.add(Edge(project_id=project_id, a=a, b=b, weight=0.0,
                           origin="user-added" if action == "add" else "user-removed"))

    def edge_edits(self, project_id: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """``(added, removed)`` pairs of the user's edge edits."""
        with self._session(write=False) as s:
            rows = list(s.execute(select(Edge).where(Edge.project_id == project_id, Edge.origin != "computed")
                               .order_by(Edge.id)).scalars())
        return ([(e.a, e.b) for e in rows if e.origin == "user-added"],
                [(e.a, e.b) for e in rows if e.origin == "user-removed"])

    def clear_edge_edits(self, project_id: int) -> None:
        with self._session() as s:
            s.execute(delete(Edge).where(Edge.project_id == project_id, Edge.origin != "computed"))

    # -- training runs -----------------------------------------------------------------------------

    def create_run(self, project_id: int, config: dict, status: str = "running") -> int:
        _check_status(status)
        with self._session() as s:
            self._project(s, project_id)
            r = Run(project_id=project_id, config=dict(config or {}), status=status)
            s.add(r)
            s.flush()
            return r.id

    def set_run_status(self, run_id: int, status: str) -> None:
        _check_status(status)
        with self._session() as s:
            r = self._get(s, Run, run_id, "Run")
            r.status = status
            s.add(r)

    def add_run_step(self, run_id: int, step: dict) -> None:
        self.add_run_steps(run_id, [step])

    def add_run_steps(self, run_id: int, steps: Iterable[dict]) -> None:
        """Append per-step records (dicts with "step" and the losses, lr, epoch ...), one transaction."""
        rows = [dict(run_id=run_id, step=int(st.get("step", 0)),
                     data={k: v for k, v in st.items() if k != "step"}) for st in steps]
        if not rows:
            return
        try:
            with self._session() as s:
                s.execute(RunStep.__table__.insert(), rows)
        except IntegrityError as exc:
            raise NotFoundError(f"Run {run_id} does not exist (deleted?).") from exc

    def delete_run_steps(self, run_id: int, after_step: int = -1) -> int:
        """Drop the run's step records with ``step > after_step`` (all by default), e.g. the steps
        a resumed run will redo after its last checkpoint; returns how many."""
        with self._session() as s:
            return s.execute(delete(RunStep).where(RunStep.run_id == run_id, RunStep.step > after_step)).rowcount

    def run_steps(self, run_id: int) -> list[dict]:
        """The run's step records in order: ``{"step": n, **data}``."""
        with self._session(write=False) as s:
            return [{"step": r.step, **(r.data or {})} for r in
                    s.execute(select(RunStep).where(RunStep.run_id == run_id).order_by(RunStep.id)).scalars()]

    def finish_run(self, run_id: int, status: str, elapsed_s: float | None = None) -> None:
        """End a run: done / cancelled / failed, with its duration."""
        _check_status(status)
        with self._session() as s:
            r = self._get(s, Run, run_id, "Run")
            r.status, r.finished = status, _now()
            if elapsed_s is not None:
                r.elapsed_s = float(elapsed_s)
            s.add(r)

    def list_runs(self, project_id: int) -> list[Run]:
        with self._session(write=False) as s:
            return list(s.execute(select(Run).where(Run.project_id == project_id).order_by(Run.id)).scalars())

    def get_run(self, run_id: int) -> Run:
        with self._session(write=False) as s:
            return self._get(s, Run, run_id, "Run")

    def fail_unfinished_runs(self, project_id: int | None = None) -> int:
        """Mark queued/running runs as failed (after a restart nothing runs them); returns how many.
        Call it only when no other process can be training on this database."""
        with self._session() as s:
            q = update(Run).where(Run.status.in_(("queued", "running")))
            if project_id is not None:
                q = q.where(Run.project_id == project_id)
            return s.execute(q.values(status="failed", finished=_now())).rowcount

    def delete_run(self, run_id: int) -> None:
        with self._session() as s:
            s.delete(self._get(s, Run, run_id, "Run"))

    # -- classifiers and evaluations ---------------------------------------------------------------

    def add_classifier(self, project_id: int, run_id: int | None, path: str | Path, sha256: str) -> int:
        with self._session() as s:
            self._project(s, project_id)
            c = ClassifierFile(project_id=project_id, run_id=run_id, path=str(path), sha256=str(sha256))
            s.add(c)
            s.flush()
            return c.id

    def list_classifiers(self, project_id: int) -> list[ClassifierFile]:
        """The project's classifier files, oldest first (the last is the newest)."""
        with self._session(write=False) as s:
            return list(s.execute(select(ClassifierFile).where(ClassifierFile.project_id == project_id)
                               .order_by(ClassifierFile.id)).scalars())

    def get_classifier(self, classifier_id: int) -> ClassifierFile:
        with self._session(write=False) as s:
            return self._get(s, ClassifierFile, classifier_id, "Classifier")

    def delete_classifier(self, classifier_id: int, remove_file: bool = False) -> None:
        with self._session() as s:
            c = self._get(s, ClassifierFile, classifier_id, "Classifier")
            path = Path(c.path)
            s.delete(c)
        if remove_file and path.is_file():
            path.unlink()

    def add_evaluation(self, project_id: int, dataset: str, metrics: dict, per_category_ap: dict | None = None,
                       classifier_id: int | None = None) -> int:
        """Store an evaluation. ``per_category_ap`` defaults to what ``metrics`` holds:
        ``metrics["per_category_ap"]``, or ``{name: results[name]["per_category_ap"]}`` for a
        workflow result comparing several classifiers."""
        if per_category_ap is None:
            per_category_ap = metrics.get("per_category_ap")
            if per_category_ap is None and isinstance(metrics.get("results"), dict):
                per_category_ap = {k: v.get("per_category_ap", {}) for k, v in metrics["results"].items()
                                   if isinstance(v, dict)}
        with self._session() as s:
            self._project(s, project_id)
            e = Evaluation(project_id=project_id, classifier_id=classifier_id, dataset=str(dataset),
                           metrics=_strict_json(metrics), per_category_ap=_strict_json(per_category_ap or {}))
            s.add(e)
            s.flush()
            return e.id

    def list_evaluations(self, project_id: int) -> list[Evaluation]:
        with self._session(write=False) as s:
            return list(s.execute(select(Evaluation).where(Evaluation.project_id == project_id)
                               .order_by(Evaluation.id)).scalars())

    def get_evaluation(self, evaluation_id: int) -> Evaluation:
        with self._session(write=False) as s:
            return self._get(s, Evaluation, evaluation_id, "Evaluation")

    # -- export / import ---------------------------------------------------------------------------

    def export_project(self, project_id: int, path: str | Path) -> Path:
        """Write the project to one zip at ``path``: manifest.json, rows.json, files/ (classifier
        files). Read in one transaction (a consistent snapshot); the zip appears atomically."""
        path = Path(path)
        with self._session(write=False) as s:
            p = self._project(s, project_id)
            rows: dict[str, Any] = {"project": _row_dict(p, exclude=("id",))}
            for name, model in _EXPORT_TABLES.items():
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
                    "exported": _now().isoformat(), "files": files}
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

    def import_project(self, path: str | Path, name: str | None = None) -> int:
        """Import an archive of :meth:`export_project` as a new project (renamed "name (2)" ... on a
        clash); returns its id. Everything is validated before the first write; a refused archive
        raises :class:`ArchiveError` and leaves the database and the files folder untouched."""
        archive = _read_archive(Path(path), self.settings)
        rows = archive.rows
        written: list[Path] = []
        folder: Path | None = None
        try:
            with self._session() as s:
                taken = set(s.execute(select(Project.name)).scalars())
                base = _clean_name(name or rows["project"]["name"], "project")
                new_name, k = base, 2
                while new_name in taken:
                    new_name, k = f"{base} ({k})", k + 1
                pr = rows["project"]
                p = Project(name=new_name, created=pr["created"], settings=pr["settings"],
                            graph_tau=pr["graph_tau"])
                s.add(p)
                s.flush()
                pid = p.id
                folder = self.project_folder(pid, create=False).resolve()
                ids: dict[str, dict[int, int]] = {t: {} for t in _EXPORT_TABLES}
                bulk: list[dict] = []
                for table, model in _EXPORT_TABLES.items():
                    for r in rows[table]:
                        vals = {k: v for k, v in r.items() if k not in ("id", "file")}
                        if table == "run_step":
                            vals["run_id"] = ids["run"][r.get("run_id")]
                        else:
                            vals["project_id"] = pid
                        if table == "classifier":
                            vals["run_id"] = ids["run"].get(r.get("run_id"))
                            target = folder / PurePosixPath(r["file"]).name
                            if target.resolve().parent != folder:
                                raise ArchiveError(f"Refused: {r['file']!r} would land outside {folder}.")
                            folder.mkdir(parents=True, exist_ok=True)
                            written.append(target)
                            target.write_bytes(archive.files[r["file"]])
                            vals["path"] = str(target)
                        if table == "evaluation":
                            vals["classifier_id"] = ids["classifier"].get(r.get("classifier_id"))
                        obj = model(**vals)
                        if table in ("run", "classifier"):  # ids referenced by later rows
                            s.add(obj)
                            s.flush()
                            ids[table][r["id"]] = obj.id
                        else:
                            bulk.append({c.name: getattr(obj, c.name) for c in model.__table__.columns
                                         if c.name != "id"})
                    if bulk:
                        s.execute(model.__table__.insert(), bulk)
                        bulk.clear()
        except BaseException:
            for f in written:
                f.unlink(missing_ok=True)
            if folder is not None and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
            raise
        return pid


class StoreAnswerCache:
    """``engine.knowledge.AnswerCache`` over the store: one row per question key in a project.
    Each put is its own transaction, so a killed knowledge run keeps every answer put before."""

    def __init__(self, store: Store, project_id: int):
        self.store = store
        self.project_id = project_id

    def get(self, key: str) -> str | None:
        row = self.store.get_answer(self.project_id, key)
        return None if row is None else row.raw

    def put(self, key: str, question: str, raw: str, items: list, meta: dict) -> None:
        self.store.put_answer(self.project_id, key, question, raw, items, meta)


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------

def _clean_name(name, what: str) -> str:
    name = " ".join(str(name or "").split())
    if not name:
        raise StorageError(f"A {what} needs a non-empty name.")
    return name


def _check_status(status: str) -> None:
    if status not in RUN_STATUSES:
        raise StorageError(f"Run status must be one of {', '.join(RUN_STATUSES)}, not {status!r}.")


def _sentence(project_id: int, r: dict) -> Sentence:
    return Sentence(project_id=project_id, text=str(r["text"]), labels=list(r.get("labels") or []),
                    source=str(r.get("source") or ""), category=r.get("category"),
                    enabled=bool(r.get("enabled", True)), edited=bool(r.get("edited", False)))


def _strict_json(obj):
    """nan/inf -> None, tuples -> lists, keys -> str (SQLite JSON is strict JSON)."""
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {str(k): _strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict_json(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _strict_json(obj.item())
    return obj


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
        infos = z.infolist()
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
                return json.loads(read(n).decode("utf-8"))
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
        rows = _validate_rows(load_json("rows.json"), version, refuse)
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


def _validate_rows(rows, version: int, refuse) -> dict:
    """Check every row against the tables' columns (types, ids, references); fill the columns an
    older archive version lacks; parse timestamps."""
    if not isinstance(rows, dict) or not isinstance(rows.get("project"), dict):
        refuse("rows.json has no project.")
    defaults = _ARCHIVE_DEFAULTS.get(version, {}) if version < SCHEMA_VERSION else {}
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
        out["project"]["name"] = _clean_name(out["project"].get("name"), "project")
    except StorageError:
        refuse("the project has no name.")
    out["project"].setdefault("settings", {})
    out["project"].setdefault("graph_tau", None)
    out["project"].setdefault("created", _now())
    for table, model in _EXPORT_TABLES.items():
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
    names = [r["name"] for r in out["category"]]
    if len(set(names)) != len(names):
        refuse("two categories share a name.")
    return out
