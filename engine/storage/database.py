"""The connection to one SQLite file: settings, WAL/foreign keys/busy timeout, one transaction per
operation (``BEGIN IMMEDIATE`` for writes), schema creation and migration, and the small helpers
every table group uses.

- One database file; WAL journal, ``foreign_keys=ON``, a busy timeout, ``synchronous`` FULL by
  default. Every write method is one transaction opened with ``BEGIN IMMEDIATE`` (the write lock
  is taken up front, so two writers queue on the busy timeout instead of failing on a lock
  upgrade); a process killed mid-write leaves the last committed state (SQLite's journal).
- No module-global mutable state and one session per operation: two studio sessions share only
  what has been committed; on the same row the last committed write wins.
- A database written by a newer program is refused, never altered.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from engine.storage.errors import NotFoundError, SchemaVersionError, StorageError
from engine.storage.file_layout import copy_legacy_classifiers, default_files_root, remove_legacy_files
from engine.storage.names import MAX_NAME_LENGTH, MAX_PROJECT_NAME_LENGTH, NameRuleError, name_key
from engine.storage.names import clean_name as names_rule
from engine.storage.schema import (METADATA, MIGRATIONS, RUN_STATUSES, SCHEMA_VERSION, Project, SchemaVersion,
                                   now)

UNSET: Any = object()  # "argument left out" (None is a value: it clears a field)


@dataclass
class StoreSettings:
    """Connection and archive settings.

    ``busy_timeout_ms``: how long a writer waits for another one's transaction before failing.
    ``synchronous``: SQLite's durability level (FULL survives power loss; NORMAL survives a killed
    process and is faster). ``files_dir``: where project files (classifiers) live, default
    ``<database file>.files`` (engine.storage.file_layout). ``max_member_bytes`` /
    ``max_archive_bytes`` / ``max_members``: import refuses archives beyond these (uncompressed
    sizes); ``max_archive_rows``: rows of all tables together; ``import_batch_rows``: rows written
    per transaction on import (other writers get in between two).
    """

    busy_timeout_ms: int = 30_000
    synchronous: str = "FULL"
    files_dir: str | None = None
    max_member_bytes: int = 512 * 1024 * 1024
    max_archive_bytes: int = 2 * 1024 * 1024 * 1024
    max_members: int = 10_000
    max_archive_rows: int = 200_000
    import_batch_rows: int = 2_000


def default_db_path() -> Path:
    """``$IFS_DB`` when set; in a Hugging Face Space (``$SPACE_ID`` set) ``data/studio.db`` in the
    app's folder; else ``studio.db`` under platformdirs' user data dir for "image-free-studio"."""
    env = os.environ.get("IFS_DB")
    if env:
        return Path(env).expanduser()
    if os.environ.get("SPACE_ID"):
        return Path(__file__).resolve().parents[2] / "data" / "studio.db"
    from platformdirs import user_data_dir

    return Path(user_data_dir("image-free-studio", appauthor=False)) / "studio.db"


class Database:
    """Connections, transactions and schema of one database file; the table groups
    (:mod:`engine.storage.projects`, ...) add their methods on top of it."""

    def __init__(self, path: str | Path | None = None, settings: StoreSettings | None = None):
        self.settings = settings or StoreSettings()
        self.path = Path(path) if path else default_db_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.files_root = (Path(self.settings.files_dir) if self.settings.files_dir
                           else default_files_root(self.path))
        inspect_database(self.path)  # refuses a foreign or newer file before anything writes to it
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
            # Python's casefold for case-insensitive search (SQLite's lower() folds ASCII only)
            dbapi_conn.create_function("casefold", 1, _casefold, deterministic=True)

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

    def __enter__(self) -> "Database":
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
                    conn.execute(SchemaVersion.__table__.insert().values(version=SCHEMA_VERSION, applied=now()))
                    return
            version = self.schema_version()
            if version > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"{self.path} has schema version {version}, written by a newer Image-Free Studio; this "
                    f"one knows up to {SCHEMA_VERSION}. Upgrade the program (the file was not changed).")
            while version < SCHEMA_VERSION:
                self._migrate(version)
                before, version = version, self.schema_version()
                if version <= before:  # e.g. an empty schema_version table: no migration applies
                    raise SchemaVersionError(f"{self.path}: cannot migrate from schema version {before}.")
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
        so two processes opening an old file migrate it once). 3 -> 4 also copies the classifier
        files out of the folder databases used to share (engine.storage.file_layout)."""
        copied: list[Path] = []
        with self._write_engine.begin() as conn:
            current = conn.exec_driver_sql("SELECT max(version) FROM schema_version").scalar()
            if current != version:
                return
            if version not in MIGRATIONS:
                raise SchemaVersionError(f"{self.path}: no migration from schema version {version}.")
            for sql in MIGRATIONS[version]:
                conn.exec_driver_sql(sql)
            if version == 3 and not self.settings.files_dir:
                copied = copy_legacy_classifiers(conn, self.path, self.files_root)
            conn.execute(SchemaVersion.__table__.insert().values(version=version + 1, applied=now()))
        remove_legacy_files(copied)

    def schema_version(self) -> int:
        with self._read_engine.connect() as conn:
            v = conn.exec_driver_sql("SELECT max(version) FROM schema_version").scalar()
        return int(v or 0)

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``'s answer ("ok" when the file is sound)."""
        with self._read_engine.connect() as conn:
            return "\n".join(str(r[0]) for r in conn.exec_driver_sql("PRAGMA integrity_check"))


    @staticmethod
    def _project(s: Session, project_id: int) -> Project:
        return Database._get(s, Project, project_id, "Project")

    @staticmethod
    def _get(s: Session, model, row_id: int, what: str):
        row = s.get(model, row_id)
        if row is None:
            raise NotFoundError(f"{what} {row_id} does not exist (deleted?).")
        return row


def inspect_database(path: Path) -> int | None:
    """The schema version of the database at ``path`` (None: no file yet, or an empty one), read
    through a read-only connection that changes none of its bytes; a file that is not an
    Image-Free Studio database, or one written by a newer program, is refused here, untouched."""
    import sqlite3
    from urllib.parse import quote

    if not path.exists() or path.stat().st_size == 0:
        return None
    try:
        con = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "schema_version" not in tables:
                if tables - {"sqlite_sequence"}:
                    raise StorageError(f"{path} is an SQLite database but not an Image-Free Studio one (no "
                                       f"schema_version table); choose another file.")
                return None
            version = int(con.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0)
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"Cannot open the database {path}: {exc}") from exc
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(f"{path} has schema version {version}, written by a newer Image-Free Studio; "
                                 f"this one knows up to {SCHEMA_VERSION}. Upgrade the program (the file was "
                                 f"not changed).")
    return version


def _casefold(value):
    return value.casefold() if isinstance(value, str) else value


def clean_name(name, what: str) -> str:
    """A project or category name through the one name rule (engine.storage.names); StorageError if refused."""
    if name is None or (isinstance(name, str) and not name.strip()):
        raise StorageError(f"A {what} needs a non-empty name.")
    try:
        return names_rule(name if isinstance(name, str) else str(name), f"{what} name",
                          MAX_PROJECT_NAME_LENGTH if what == "project" else MAX_NAME_LENGTH)
    except NameRuleError as exc:
        raise StorageError(str(exc)) from None


def duplicate_names(names: list[str]) -> list[str]:
    """The names that clash with an earlier one (case and Unicode form do not count)."""
    seen: set[str] = set()
    dups = []
    for n in names:
        key = name_key(n)
        if key in seen and n not in dups:
            dups.append(n)
        seen.add(key)
    return dups


def check_status(status: str) -> None:
    if status not in RUN_STATUSES:
        raise StorageError(f"Run status must be one of {', '.join(RUN_STATUSES)}, not {status!r}.")


def strict_json(obj):
    """nan/inf -> None, tuples -> lists, keys -> str (SQLite JSON is strict JSON)."""
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {str(k): strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return strict_json(obj.item())
    return obj
