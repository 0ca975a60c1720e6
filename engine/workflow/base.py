"""What every workflow module shares: the errors a user can fix, the limits and defaults of
project actions, opening the project database, and who may act on a project (:func:`owned`)."""
from __future__ import annotations

import contextvars
import functools
import inspect
from dataclasses import dataclass
from pathlib import Path

from engine.errors import EngineError

DEFAULT_HANDCRAFTED = "a photo of a {name}."


class VocabularyError(EngineError, ValueError):
    """A vocabulary that cannot make a project; the message says what to fix."""


class WorkflowError(EngineError, RuntimeError):
    """An action that cannot run in the project's current state (e.g. no sentences to train on)."""


@dataclass
class WorkflowSettings:
    """Limits and defaults of project actions.

    ``max_categories``/``max_name_length`` bound a vocabulary; ``handcrafted_template`` is the
    zero-shot prompt for a category without one of its own; ``tau`` the default co-occurrence
    threshold (METHOD.md section 2); ``loss_flush_steps`` how many training steps' losses are
    buffered before one store write.
    """

    max_categories: int = 1000
    max_name_length: int = 64
    handcrafted_template: str = DEFAULT_HANDCRAFTED
    tau: int = 3
    loss_flush_steps: int = 20


SETTINGS = WorkflowSettings()


def default_store_path() -> Path:
    """``$IFS_DB`` when set; in a Hugging Face Space (``$SPACE_ID``) ``data/studio.db`` in the app's
    folder; else ``studio.db`` under the user's data directory (engine.storage.default_db_path)."""
    from engine.storage import default_db_path

    return default_db_path()


def open_store(path: str | Path | None = None):
    """Open (creating when needed) the project database at ``path`` or :func:`default_store_path`."""
    from engine.storage import Store

    path = Path(path).expanduser() if path else default_store_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    return Store(path)


# -- who may act on a project ----------------------------------------------------------------------
# In a shared studio (``private_projects``) every project belongs to the visitor that made or
# imported it; every project action takes that visitor (``visitor=``, added by :func:`owned`) and
# refuses a project it does not own, whatever id the request names. ``visitor=None`` (the command
# line, a studio on one's own machine) checks nothing.

class NotYoursError(WorkflowError):
    """A project (or a row of one) that is not the visitor's, or that does not exist."""


def require_owner(store, project_id, visitor: str | None) -> None:
    """Raise :class:`NotYoursError` unless ``visitor`` is None or owns ``project_id`` (a project
    that does not exist gives the same answer: an id reveals nothing)."""
    if visitor is None:
        return
    from engine.storage import NotFoundError

    try:
        owner = (store.get_project(int(project_id)).settings or {}).get("owner")
    except (NotFoundError, TypeError, ValueError):
        owner = None
    if owner is None or owner != visitor:
        raise NotYoursError(f"Project {project_id} is not one of your projects; open one of yours.")


def require_row(row_project_id: int, project_id: int) -> None:
    """A row named by id (a sentence, a run) must belong to the project the action is on."""
    if int(row_project_id) != int(project_id):
        raise NotYoursError(f"That row is not one of project {project_id}'s; it is not one of your projects.")


#: the visitor of the owned action running now: an action it calls on another project (borrowing
#: that project's sentences, say) is checked against the same visitor
_CURRENT_VISITOR: contextvars.ContextVar[str | None] = contextvars.ContextVar("visitor", default=None)


def current_visitor() -> str | None:
    """The visitor of the owned action running now (None outside one, or for the operator)."""
    return _CURRENT_VISITOR.get()


def owned(action):
    """Give ``action(store, project_id, ...)`` a keyword ``visitor``, checked before it runs. An
    owned action called inside another without ``visitor`` is checked against the outer one's."""
    sig = inspect.signature(action)
    if list(sig.parameters)[:2] != ["store", "project_id"]:
        raise TypeError(f"{action.__name__} does not take (store, project_id, ...)")

    @functools.wraps(action)
    def checked(store, project_id, *args, visitor: str | None = None, **kwargs):
        visitor = visitor if visitor is not None else _CURRENT_VISITOR.get()
        require_owner(store, project_id, visitor)
        token = _CURRENT_VISITOR.set(visitor)
        try:
            return action(store, project_id, *args, **kwargs)
        finally:
            _CURRENT_VISITOR.reset(token)

    params = list(sig.parameters.values())
    at = next((i for i, p in enumerate(params) if p.kind is p.VAR_KEYWORD), len(params))
    params.insert(at, inspect.Parameter("visitor", inspect.Parameter.KEYWORD_ONLY, default=None))
    checked.__signature__ = sig.replace(parameters=params)
    return checked


@owned
def project_dir(store, project_id: int) -> Path:
    """Folder for a project's files (classifiers, checkpoints): ``<database file>.files/<id>``."""
    return store.project_folder(project_id)


@owned
def get_category(store, project_id: int, name: str):
    """The category row called ``name`` (raises WorkflowError when the project has none)."""
    c = store.find_category(project_id, name)
    if c is None:
        raise WorkflowError(f"The project has no category {name!r}.")
    return c
