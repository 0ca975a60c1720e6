"""What every workflow module shares: the errors a user can fix, the limits and defaults of
project actions, and opening the project database."""
from __future__ import annotations

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


def project_dir(store, project_id: int) -> Path:
    """Folder for a project's files (classifiers, checkpoints): ``<db folder>/projects/<id>``."""
    return store.project_folder(project_id)

def get_category(store, project_id: int, name: str):
    """The category row called ``name`` (raises WorkflowError when the project has none)."""
    c = store.find_category(project_id, name)
    if c is None:
        raise WorkflowError(f"The project has no category {name!r}.")
    return c
