"""Storage errors: each message says what happened and what to do (all are EngineErrors)."""
from __future__ import annotations

from engine.errors import EngineError


class StorageError(EngineError, RuntimeError):
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
