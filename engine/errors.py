"""One base for every error a user can fix: the command line and the studio catch
:class:`EngineError` and show its message (one sentence: what happened and what to do).

Each module keeps its own error class next to the code that raises it (``StorageError``,
``WorkflowError``, ``VocabularyError``, ``DatasetError``, ``ClassifierFileError``,
``CheckpointError``, ``MissingWeightsError``, ``LLMError``, ``PresetError`` ...); they all derive
from :class:`EngineError`. Anything else escaping the engine is a bug, not a user error.
"""
from __future__ import annotations


class EngineError(Exception):
    """An error whose message is for the user: what went wrong and how to fix it."""
