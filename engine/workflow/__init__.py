"""Project-level actions: what the studio and the command line call, one function each.

Every function takes an open :class:`engine.storage.Store` and a project id, does one job over
the engine modules, writes its results through the store, and returns plain data. Long actions
take ``on_progress``/``on_step`` callbacks and a ``should_stop`` callable (cooperative cancel).
The studio imports nothing from ``engine`` but this package: the settings dataclasses it builds
widgets from (KnowledgeSettings, TrainConfig, PromptLayout, BackboneSpec, LLMSpec) come from here
too, loaded on first use so that ``import engine.workflow`` stays light for the command line.

Modules: base (errors, limits, opening the store), projects, knowledge, sentences, graph,
training, scoring, predict, evaluate, export, models (weights check and install, device, Hub LLMs),
confidence (calibrated confidences and the gallery's cards), uploads (scoring and evaluating
uploaded files), vocabularies (a project's vocabulary, borrowing sentences from presets/projects,
reproducing the paper's table).

Method choices (METHOD.md):
- Vocabulary: names one a line or comma-separated; limits are :class:`WorkflowSettings` fields.
- Knowledge (section 1): the answers are cached in the store as they arrive
  (``store.answer_cache``), so a killed run resumes; the resulting attributes, sentences,
  super-categories and synonyms are written when the run ends. User-set super-categories and
  synonyms win over the LLM's.
- Graph (section 2): weights are recomputed from the enabled sentences' labels; the user's added and
  removed edges are kept apart by the store and re-applied after every recomputation.
- Training (sections 3-4): corpus = enabled sentences; the hand-crafted prompt of each category is
  the order-loss reference. The classifier file lands in ``<db folder>/projects/<id>/``.
- Inference (section 5) and evaluation (section 6): the tuned classifier and the hand-crafted
  zero-shot baseline score the same image features from one image-encoder pass.
"""
from __future__ import annotations

from engine.lazy_api import lazy_api

from engine.datasets import DatasetError, LabelledSet, LoaderSettings, list_images
from engine.errors import EngineError
from engine.workflow.base import (DEFAULT_HANDCRAFTED, SETTINGS, NotYoursError, VocabularyError, WorkflowError,
                                  WorkflowSettings, default_store_path, get_category, open_store, project_dir,
                                  require_owner)
from engine.workflow.evaluate import evaluate_project, format_metrics_table, score_labelled_set
from engine.workflow.export import CLASSIFIER_SNIPPET, export_classifier, export_project, import_project
from engine.workflow.graph import GraphView, edit_edge, graph_data, project_structure, recompute_graph
from engine.workflow.knowledge import (category_details, generate_knowledge, regenerate_category, store_knowledge,
                                       update_category)
from engine.workflow.confidence import confidence_note, project_calibrations
from engine.workflow.models import (HubChoice, WeightsStatus, device_description, download_hub_model,
                                    download_weights, hub_llm_spec, hub_model, hub_models, missing_weights,
                                    use_weights_file, weights_status)
from engine.workflow.predict import PredictSummary, predict_files, predict_rows, predict_with
from engine.workflow.projects import (create_project, delete_project, find_project, list_projects, parse_vocabulary,
                                      project_info, rename_project, set_owner)
from engine.workflow.scoring import latest_classifier, project_backbone_spec, project_classifiers, stream_scores
from engine.workflow.sentences import (delete_sentence, list_sentences, rejection_counts, restore_sentences,
                                       sentence_counts, sentence_sources, update_sentence)
from engine.workflow.training import (TrainOutcome, active_classifier, claim_run, handcrafted_prompts, list_runs,
                                      run_history, run_is_dead, run_number, spec_from_dict, spec_to_dict,
                                      train_project, training_corpus)
from engine.workflow.uploads import ClassifiedUploads, classify_uploads, evaluate_uploads
from engine.workflow.vocabularies import borrow_source, project_vocabulary, reproduce_paper, training_vocabulary

# Settings and names from the engine modules, loaded on first use (torch and open_clip are heavy).
_LAZY = {
    "BackboneSpec": "engine.clip_backbone", "MissingWeightsError": "engine.clip_backbone",
    "KnowledgeSettings": "engine.knowledge", "STEPS": "engine.knowledge", "Regenerate": "engine.knowledge",
    "EXAMPLE_FIELDS": "engine.knowledge",
    "LLMSpec": "engine.llm", "BUNDLED": "engine.llm", "DEFAULT_BUNDLED": "engine.llm",
    "HubModelError": "engine.hub_models",
    "PromptLayout": "engine.prompts",
    "TrainConfig": "engine.train",
    "list_presets": "engine.presets", "PresetError": "engine.presets",
}


__getattr__, __dir__ = lazy_api('engine.workflow', _LAZY, globals())


__all__ = [
    # errors and settings
    "EngineError", "VocabularyError", "WorkflowError", "NotYoursError", "DatasetError", "WorkflowSettings", "SETTINGS",
    "require_owner",
    "DEFAULT_HANDCRAFTED", *_LAZY,
    # store
    "open_store", "default_store_path", "project_dir",
    # projects
    "parse_vocabulary", "create_project", "find_project", "list_projects", "set_owner", "project_info",
    "rename_project", "delete_project", "get_category",
    # knowledge
    "generate_knowledge", "regenerate_category", "store_knowledge", "category_details", "update_category",
    # sentences
    "list_sentences", "sentence_sources", "sentence_counts", "update_sentence", "delete_sentence",
    "rejection_counts", "restore_sentences",
    # graph
    "GraphView", "recompute_graph", "graph_data", "edit_edge", "project_structure",
    # training
    "TrainOutcome", "train_project", "claim_run", "run_is_dead", "training_corpus", "handcrafted_prompts",
    "spec_to_dict", "spec_from_dict", "list_runs", "run_history", "run_number", "active_classifier",
    # vocabularies beyond one project, the paper's table
    "project_vocabulary", "borrow_source", "training_vocabulary", "reproduce_paper",
    # scoring, predict, evaluate
    "latest_classifier", "project_backbone_spec", "project_classifiers", "stream_scores", "PredictSummary",
    "predict_files", "predict_with", "predict_rows", "LoaderSettings", "LabelledSet", "list_images",
    "evaluate_project", "score_labelled_set", "format_metrics_table",
    # uploads and confidences
    "ClassifiedUploads", "classify_uploads", "evaluate_uploads", "project_calibrations", "confidence_note",
    # export
    "export_project", "import_project", "export_classifier", "CLASSIFIER_SNIPPET",
    # models
    "missing_weights", "device_description", "WeightsStatus", "weights_status", "use_weights_file",
    "download_weights", "HubChoice", "hub_models", "hub_model", "download_hub_model", "hub_llm_spec",
]
