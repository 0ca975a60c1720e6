"""The database schema: SQLModel tables (own registry), the schema version and its migrations.

- Schema version in ``schema_version``; forward migrations ``MIGRATIONS[v]`` take v to v+1, each
  in one transaction. Version 1 had no cliques table and no graph threshold; version 2 added both
  (METHOD.md section 2: the cliques computed at the threshold tau become prompt blocks, so they
  are stored with the threshold they were computed at). Version 3 added a sentence's `rejected`
  reason (the quality gate's, engine.sentence_gate: such a sentence is stored disabled, shown and
  restorable) and its label `evidence` ({label: why}, engine.graph.label_evidence).
  Version 4 gave runs a ``lease`` (the process training it: engine.storage.run_lease) and moved
  project files from the ``projects/`` folder beside the database (shared by every database in
  that folder) to ``<database file>.files/``.
- Categories are referenced by name in attribute and sentence rows (knowledge refers to them by
  name and a name is unique within a project).
- Graph edges carry an ``origin``: ``computed`` edges are replaced by every recomputation,
  ``user-added`` / ``user-removed`` edits are kept apart and survive it (METHOD.md section 2).
- Per-step training losses are rows of ``run_step``: a killed run keeps every step written before.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

from sqlalchemy import JSON, CheckConstraint, Column, ForeignKey, Integer, UniqueConstraint
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

SCHEMA_VERSION = 5
ARCHIVE_FORMAT = "image-free-studio-project"
RUN_STATUSES = ("queued", "running", "done", "cancelled", "failed")
EDGE_ORIGINS = ("computed", "user-added", "user-removed")
IMPORTING = "_importing"  # project setting (the importer's lease) while an import writes its rows


def now() -> datetime:
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
    applied: datetime = Field(default_factory=now)


class Project(_Base, table=True):
    __tablename__ = "project"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused: project folders stay unique
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(sa_column_kwargs={"unique": True, "nullable": False})
    created: datetime = Field(default_factory=now)
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
    created: datetime = Field(default_factory=now)
    updated: datetime = Field(default_factory=now)


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
    rejected: Optional[str] = None  # the quality gate's reason; None for a kept or restored sentence
    evidence: dict = _json(dict)    # {label: why} (engine.graph.label_evidence)
    cut: str = ""                   # a trailing claim the sentence gate cut off (engine.sentence_gate)


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
    created: datetime = Field(default_factory=now)
    finished: Optional[datetime] = None
    elapsed_s: Optional[float] = None
    lease: Optional[dict] = Field(default=None, sa_column=Column(JSON, nullable=True))  # schema 4


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
    created: datetime = Field(default_factory=now)


class Evaluation(_Base, table=True):
    __tablename__ = "evaluation"
    id: Optional[int] = Field(default=None, primary_key=True)
    project_id: int = _fk("project.id")
    classifier_id: Optional[int] = _fk("classifier.id", nullable=True, ondelete="SET NULL")
    dataset: str = ""
    metrics: dict = _json()
    per_category_ap: dict = _json()
    created: datetime = Field(default_factory=now)


METADATA = _Base.metadata

# Export order (parents before children) and each table's rows' project-scoped references.
EXPORT_TABLES = {"category": Category, "answer": Answer, "attribute": Attribute, "sentence": Sentence,
                  "edge": Edge, "clique": Clique, "run": Run, "run_step": RunStep,
                  "classifier": ClassifierFile, "evaluation": Evaluation}
# Columns an archive of an older schema may lack, with the value they take.
ARCHIVE_DEFAULTS = {1: {"project": {"graph_tau": None}, "clique": None}}


# --------------------------------------------------------------------------------------------------
# Migrations: MIGRATIONS[v] takes a database from schema v to v + 1 (raw SQL, one transaction)
# --------------------------------------------------------------------------------------------------

MIGRATIONS: dict[int, list[str]] = {
    1: [
        "ALTER TABLE project ADD COLUMN graph_tau INTEGER",
        "CREATE TABLE clique (id INTEGER NOT NULL, project_id INTEGER NOT NULL, position INTEGER NOT NULL, "
        "members JSON NOT NULL, PRIMARY KEY (id), FOREIGN KEY(project_id) REFERENCES project (id) "
        "ON DELETE CASCADE)",
        "CREATE INDEX ix_clique_project_id ON clique (project_id)",
    ],
    2: [
        "ALTER TABLE sentence ADD COLUMN rejected VARCHAR",
        "ALTER TABLE sentence ADD COLUMN evidence JSON NOT NULL DEFAULT '{}'",
    ],
    3: ["ALTER TABLE run ADD COLUMN lease JSON"],  # + the files move: engine.storage.file_layout
    4: ["ALTER TABLE sentence ADD COLUMN cut VARCHAR NOT NULL DEFAULT ''"],
}
