"""The Store: one object over the project database, made of the table groups."""
from __future__ import annotations

from engine.storage.archive import ArchiveTables
from engine.storage.knowledge import KnowledgeTables
from engine.storage.projects import ProjectTables
from engine.storage.runs import RunTables


class Store(ProjectTables, KnowledgeTables, RunTables, ArchiveTables):
    """All persistence of the studio and the command line. Methods return detached rows (SQLModel
    instances; JSON columns as lists/dicts) or plain data; every write is one transaction.

    ``Store(path=None, settings=None)``: the database file (default :func:`default_db_path`),
    created or migrated on open. Method groups: projects and categories
    (:class:`~engine.storage.projects.ProjectTables`), answers, attributes, sentences and graph
    (:class:`~engine.storage.knowledge.KnowledgeTables`), runs, classifiers and evaluations
    (:class:`~engine.storage.runs.RunTables`), export/import
    (:class:`~engine.storage.archive.ArchiveTables`)."""
