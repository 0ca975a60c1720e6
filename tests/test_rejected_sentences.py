"""The quality gate's rejections in a project (issue 12): stored disabled with their reason beside
the kept sentences (real SQLite), counted per reason, listed with the label evidence and the claim
the gate cut off, restorable;
a v1 database migrates to the schema that holds them."""
import shutil
from pathlib import Path

import pytest

from engine import workflow as wf
from engine.storage import SCHEMA_VERSION, Store

FIXTURE_V1 = Path(__file__).resolve().parent / "fixtures" / "storage_v1.db"

KNOWLEDGE = {
    "attributes": {"forklift": ["yellow paint"], "pallet": ["wooden slats"]},
    "filtered_attributes": {"forklift": ["yellow paint"], "pallet": ["wooden slats"]},
    "super_of": {}, "synonyms": {"forklift": ["lift truck", "truck"]},
    "sentences": [
        {"text": "A yellow forklift lifts a pallet of bricks.", "labels": ["forklift", "pallet"],
         "source": "coarse", "category": "forklift", "asked": ["forklift"],
         "evidence": {"forklift": "asked", "pallet": "name: pallet"}},
        {"text": "A wooden pallet leans against the wall.", "labels": ["pallet"], "source": "coarse",
         "category": "pallet", "asked": ["pallet"], "evidence": {"pallet": "asked"},
         "cut": ", making it easy to reach with a forklift."},
    ],
    "rejected": [
        {"text": "The 3 sentences below describe a pallet:", "reason": "preamble", "source": "coarse",
         "categories": ["pallet"], "detail": ""},
        {"text": "The words in the list are pallet, skid.", "reason": "meta", "source": "coarse",
         "categories": ["pallet"], "detail": "words"},
        {"text": "A worker drives along the aisle of the warehouse.", "reason": "off_topic", "source": "coarse",
         "categories": ["forklift"], "detail": "no mention of forklift"},
    ],
}


@pytest.fixture
def project(tmp_path):
    store = Store(tmp_path / "studio.db")
    pid = wf.create_project(store, "warehouse", "forklift, pallet")
    wf.store_knowledge(store, pid, KNOWLEDGE)
    yield store, pid
    store.close()


def test_rejections_are_stored_disabled_with_reasons_and_evidence(project):
    store, pid = project
    rows = wf.list_sentences(store, pid)
    kept = [r for r in rows if r["enabled"]]
    rejected = [r for r in rows if r["rejected"]]
    assert [r["text"] for r in kept] == [s["text"] for s in KNOWLEDGE["sentences"]]
    assert kept[0]["evidence"] == {"forklift": "asked", "pallet": "name: pallet"}
    assert [r["cut"] for r in kept] == ["", ", making it easy to reach with a forklift."]
    assert [(r["rejected"], r["enabled"]) for r in rejected] == [("preamble", False), ("meta", False),
                                                                ("off_topic", False)]
    assert wf.rejection_counts(store, pid) == {"preamble": 1, "meta": 1, "off_topic": 1}
    # training and the graph see the kept sentences only
    assert wf.sentence_counts(store, pid) == {"forklift": 1, "pallet": 2}
    assert len(wf.list_sentences(store, pid, include_disabled=False)) == 2


def test_restore_puts_a_rejected_sentence_back(project):
    store, pid = project
    off = next(r for r in wf.list_sentences(store, pid) if r["rejected"] == "off_topic")
    assert wf.restore_sentences(store, pid, [off["id"]]) == 1
    again = next(r for r in wf.list_sentences(store, pid) if r["id"] == off["id"])
    assert again["enabled"] and again["rejected"] is None
    assert wf.rejection_counts(store, pid) == {"preamble": 1, "meta": 1}
    assert wf.sentence_counts(store, pid)["forklift"] == 2
    with pytest.raises(wf.WorkflowError, match="not in this project"):
        wf.restore_sentences(store, pid, [10_000])


def test_v1_database_migrates_to_the_schema_with_rejections(tmp_path):
    db = tmp_path / "old.db"
    shutil.copy(FIXTURE_V1, db)
    store = Store(db)
    try:
        assert store.schema_version() == SCHEMA_VERSION
        pid = store.list_projects()[0].id
        old = store.list_sentences(pid)
        assert all(s.rejected is None and s.evidence == {} and s.cut == "" for s in old)
        wf.store_knowledge(store, pid, {"sentences": [], "rejected": KNOWLEDGE["rejected"][:1]})
        assert store.rejection_counts(pid) == {"preamble": 1}
    finally:
        store.close()


def test_enabling_a_rejected_sentence_in_the_editor_restores_it(project):
    store, pid = project
    meta = next(r for r in wf.list_sentences(store, pid) if r["rejected"] == "meta")
    wf.update_sentence(store, pid, meta["id"], meta["text"], meta["labels"], enabled=True)
    again = next(r for r in wf.list_sentences(store, pid) if r["id"] == meta["id"])
    assert again["enabled"] and again["rejected"] is None
    assert "meta" not in wf.rejection_counts(store, pid)
