"""Projects persist in one SQLite file: SQLModel tables, schema migrations, export/import archives.

Modules: :mod:`~engine.storage.errors` (StorageError and kin), :mod:`~engine.storage.schema`
(tables, schema version, migrations), :mod:`~engine.storage.database` (connections,
transactions, schema set-up, :class:`StoreSettings`), the table groups
:mod:`~engine.storage.projects`, :mod:`~engine.storage.knowledge`, :mod:`~engine.storage.runs`,
:mod:`~engine.storage.archive` (export/import and validation), and :mod:`~engine.storage.store`
(the :class:`Store` that combines them). See README "Settings" for the user-facing choices.
"""
from engine.storage.database import StoreSettings, default_db_path
from engine.storage.errors import (ArchiveError, ImportRefused, NameClashError, NotFoundError, SchemaVersionError,
                                   StorageError)
from engine.storage.knowledge import StoreAnswerCache
from engine.storage.schema import (ARCHIVE_FORMAT, EDGE_ORIGINS, METADATA, RUN_STATUSES, SCHEMA_VERSION, Answer,
                                   Attribute, Category, ClassifierFile, Clique, Edge, Evaluation, Project, Run,
                                   RunStep, SchemaVersion, Sentence)
from engine.storage.store import Store

__all__ = ["Store", "StoreSettings", "StoreAnswerCache", "default_db_path", "StorageError", "NotFoundError",
           "NameClashError", "SchemaVersionError", "ArchiveError", "ImportRefused", "SCHEMA_VERSION",
           "ARCHIVE_FORMAT", "RUN_STATUSES", "EDGE_ORIGINS", "METADATA", "Answer", "Attribute", "Category",
           "ClassifierFile", "Clique", "Edge", "Evaluation", "Project", "Run", "RunStep", "SchemaVersion",
           "Sentence"]
