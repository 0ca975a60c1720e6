"""Crafted archives: JSON nested too deep, integers beyond 64 bits, NaN and Infinity, too many rows
are refused with one sentence before anything is written (issue 11, finding 6); a hypothesis fuzz
of rows.json inside an otherwise valid zip never ends in anything but an import or an ArchiveError."""
import json
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from engine.storage.json_limits import JsonLimitError, loads_limited
from engine.storage import ArchiveError, Store, StoreSettings
from tests.test_storage import all_counts, tree


def test_loads_limited():
    assert loads_limited(b'{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}
    for text in ("[" * 100_000 + "]" * 100_000, "[1e999]", "[NaN]", "[-Infinity]", str(2 ** 70),
                 "[" * 40 + "]" * 40):
        with pytest.raises(JsonLimitError):
            loads_limited(text)
    assert loads_limited(str(2 ** 63 - 1)) == 2 ** 63 - 1


@pytest.fixture(scope="module")
def good_parts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("arch")
    src = Store(tmp / "src.db")
    pid = src.create_project("kitchen", categories=["cup", "knife"])
    src.replace_sentences(pid, [dict(text="a cup and a knife", labels=["cup", "knife"], source="s")])
    run = src.create_run(pid, {"x": 1})
    src.add_run_steps(run, [{"step": 1, "total": 0.5}])
    archive = src.export_project(pid, tmp / "good.zip")
    src.close()
    with zipfile.ZipFile(archive) as z:
        return {n: z.read(n) for n in z.namelist()}


def _zip(path: Path, parts: dict, rows_text: str | bytes) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for n, d in parts.items():
            z.writestr(n, rows_text if n == "rows.json" else d)
    return path


def _crafted(good_parts) -> dict[str, str]:
    rows = json.loads(good_parts["rows.json"])
    text = json.dumps(rows)
    cases = {}
    deep = "[" * 50_000 + "]" * 50_000
    cases["deep nesting"] = text.replace('"settings": {}', f'"settings": {{"x": {deep}}}', 1)
    r = json.loads(text)
    r["run_step"][0]["step"] = 2 ** 70
    cases["huge int"] = json.dumps(r)
    r = json.loads(text)
    r["run_step"][0]["data"] = {"total": float("nan")}
    cases["NaN"] = json.dumps(r)  # json.dumps writes NaN
    r = json.loads(text)
    r["sentence"][0]["labels"] = [1e308 * 10]
    cases["Infinity"] = json.dumps(r)
    r = json.loads(text)
    r["project"]["graph_tau"] = -(2 ** 64)
    cases["negative huge int"] = json.dumps(r)
    r = json.loads(text)
    r["sentence"][0]["enabled"] = -1  # a flag SQLite cannot hold (found by test_fuzz_import_rows)
    cases["flag -1"] = json.dumps(r)
    return cases


@pytest.mark.parametrize("what", ["deep nesting", "huge int", "NaN", "Infinity", "negative huge int", "flag -1"])
def test_crafted_json_is_refused_before_writing(tmp_path, good_parts, what):
    archive = _zip(tmp_path / "a.zip", good_parts, _crafted(good_parts)[what])
    db = tmp_path / "dst.db"
    store = Store(db)
    store.create_project("other")
    counts, files = all_counts(db), tree(store.files_root)
    with pytest.raises(ArchiveError) as info:
        store.import_project(archive)
    msg = str(info.value)
    assert "Nothing was imported" in msg and "\n" not in msg and len(msg) < 400, msg
    assert "INSERT" not in msg and "SELECT" not in msg  # no raw SQL shown to the visitor
    assert all_counts(db) == counts and tree(store.files_root) == files
    store.close()


def test_row_limit_is_checked_before_writing(tmp_path, good_parts):
    rows = json.loads(good_parts["rows.json"])
    step = rows["run_step"][0]
    rows["run_step"] = [{**step, "id": 10 + i, "step": i} for i in range(2_001)]
    archive = _zip(tmp_path / "many.zip", good_parts, json.dumps(rows))
    db = tmp_path / "dst.db"
    store = Store(db, StoreSettings(max_archive_rows=2_000))
    counts = all_counts(db)
    with pytest.raises(ArchiveError, match="rows"):
        store.import_project(archive)
    assert all_counts(db) == counts
    store.close()
    big = Store(tmp_path / "ok.db")  # the default limit takes them
    assert big.import_project(archive)
    big.close()


# ---- fuzz ----------------------------------------------------------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2 ** 80), max_value=2 ** 80),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
_json = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                     max_leaves=20)
_TABLES = ["project", "category", "answer", "attribute", "sentence", "edge", "clique", "run", "run_step",
           "classifier", "evaluation"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_import_rows(tmp_path_factory, good_parts, data):
    """Random JSON shapes and values, either wholesale or spliced into one field of a valid
    rows.json: import either succeeds or raises ArchiveError (nothing written); nothing else."""
    rows = json.loads(good_parts["rows.json"])
    mode = data.draw(st.sampled_from(["whole", "table", "field"]))
    if mode == "whole":
        rows = data.draw(_json)
    elif mode == "table":
        rows[data.draw(st.sampled_from(_TABLES))] = data.draw(_json)
    else:
        table = data.draw(st.sampled_from([t for t in _TABLES if rows.get(t)]))
        row = rows[table] if table == "project" else rows[table][0]
        row[data.draw(st.sampled_from(sorted(row) + ["extra"]))] = data.draw(_json)
    text = json.dumps(rows)  # may hold NaN / Infinity / huge ints: what a crafted file can hold
    d = tmp_path_factory.mktemp("fz")
    archive = _zip(d / "f.zip", good_parts, text)
    store = Store(d / "dst.db")
    counts = all_counts(d / "dst.db")
    try:
        pid = store.import_project(archive)
    except ArchiveError as exc:
        assert "\n" not in str(exc)
        assert all_counts(d / "dst.db") == counts
    else:
        assert store.get_project(pid).name
        from engine import workflow as wf

        wf.project_info(store, pid)  # what the studio shows after an import reads back
    finally:
        store.close()
