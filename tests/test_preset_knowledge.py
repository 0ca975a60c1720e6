"""The shipped preset knowledge (assets/presets/*_knowledge.json) is a training set a classifier can
learn from (issue 12): no sentence is a list heading or talks about sentences/lists/words, every
sentence passes the quality gate it was made with, and each preset reaches its size target.

A preset file made before the gate existed (meta without "gate") is an expected failure until it
is regenerated with assets/make_preset_knowledge.py; the answer cache beside it lets that run
continue where the last one stopped."""
import json
import re

import pytest

from engine.graph import label_sentence
from engine.presets import PRESET_DIR, load_preset, load_preset_knowledge
from engine.sentence_gate import REASONS, SentenceGate

TARGETS = {"voc2007": 2000, "coco": 5000}
LIST_TALK = re.compile(r"\b(sentences?|lists?|words?)\b", re.I)


def _gated(key):
    data = load_preset_knowledge(key)
    assert data is not None, f"assets/presets/{key}_knowledge.json is missing"
    if not data.get("meta", {}).get("gate"):
        pytest.xfail(f"{key}: the shipped knowledge predates the sentence gate; regenerate it with "
                     f"assets/make_preset_knowledge.py {key}")
    return data


@pytest.mark.parametrize("key", sorted(TARGETS))
def test_no_list_headings_or_talk_about_sentences(key):
    data = _gated(key)
    bad = [s["text"] for s in data["sentences"] if s["text"].rstrip().endswith((":", "："))
           or LIST_TALK.search(s["text"])]
    assert bad == []


@pytest.mark.parametrize("key", sorted(TARGETS))
def test_every_sentence_passes_the_gate_and_names_its_categories(key):
    data = _gated(key)
    preset = load_preset(key)
    gate = SentenceGate(preset.categories, data.get("synonyms") or {})
    failed = []
    for s in data["sentences"]:
        why = gate.reason(s["text"], s.get("asked") or [s["category"]])
        if why is not None and why[0] not in ("duplicate", "near_duplicate"):
            failed.append((s["text"], why))
    assert failed == []
    assert all(s["category"] in s["labels"] for s in data["sentences"])
    reasons = {r["reason"] for r in data.get("rejected", [])}
    assert reasons <= set(REASONS)


@pytest.mark.parametrize("key", sorted(TARGETS))
def test_every_label_has_the_evidence_the_labelling_rule_asks_for(key):
    """The shipped labels are today's rule's (engine.graph.label_sentence with the accepted
    synonyms): no second label from an LLM synonym, a head noun, or a colour word ("orange bus")."""
    data = _gated(key)
    preset = load_preset(key)
    suggested = data.get("suggested_synonyms") or {}
    accepted = {c: [x for x in v if x not in suggested.get(c, [])] for c, v in (data.get("synonyms") or {}).items()}
    wrong = [(s["text"], s["labels"]) for s in data["sentences"]
             if sorted(s["labels"]) != sorted(label_sentence(s["text"], preset.categories, accepted,
                                                             s.get("asked") or [s["category"]]))]
    assert wrong == []


@pytest.mark.parametrize("key", sorted(TARGETS))
def test_preset_reaches_its_size(key):
    data = _gated(key)
    n = len(data["sentences"])
    if not data["meta"].get("complete") and n < TARGETS[key]:
        answers = PRESET_DIR / f"{key}_answers.jsonl"
        pytest.xfail(f"{key}: generation in progress, {n} of {TARGETS[key]} sentences "
                     f"({sum(1 for _ in answers.open()) if answers.exists() else 0} answers cached)")
    assert n >= TARGETS[key]


def test_answer_cache_beside_a_gated_preset_is_readable():
    for key in TARGETS:
        path = PRESET_DIR / f"{key}_answers.jsonl"
        if path.exists():
            rows = [json.loads(line) for line in path.open() if line.strip()]
            assert rows and all({"key", "question", "raw"} <= set(r) for r in rows)


def test_a_preset_is_continued_with_the_templates_it_was_made_with():
    """assets/make_preset_knowledge.py keys its answer cache by the exact prompt, so a preset made
    by a model is continued with the templates recorded in its meta, whatever the defaults are now."""
    import sys

    sys.path.insert(0, str(PRESET_DIR.parent))
    from make_preset_knowledge import recorded_templates

    from engine.knowledge_settings import KnowledgeSettings, StepTemplate

    for key in TARGETS:
        meta = (load_preset_knowledge(key) or {}).get("meta") or {}
        if not meta.get("gate"):
            continue
        recorded = json.loads(meta["settings"])["templates"]
        templates = recorded_templates(key, meta["llm"])
        assert set(templates) == set(recorded) and all(isinstance(t, StepTemplate) for t in templates.values())
        assert all(templates[k].question == t["question"] and templates[k].primer == t["primer"]
                   and list(templates[k].stop) == t["stop"] for k, t in recorded.items())
        KnowledgeSettings(templates=templates).validate()
        assert recorded_templates(key, "another model") is None
