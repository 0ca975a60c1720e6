"""One name rule (engine.storage.names) on every way in: typed (workflow), a vocabulary file (command line),
an imported archive, a rename (issue 11, findings 6 and 8)."""
import json
import zipfile
from pathlib import Path

import pytest

from engine import workflow as wf
from engine.__main__ import main
from engine.storage.names import NameRuleError, check_unique, clean_name, clean_names, name_key
from engine.storage import ArchiveError, Store

BAD = {
    "newline": "fork\nlift",
    "NUL": "fork\x00lift",
    "ANSI escape": "\x1b[31mred\x1b[0m",
    "empty": "   ",
    "1M characters": "x" * 1_000_000,
    "zero-width space": "fork\u200blift",
    "bidi override": "\u202eevil",
    "line separator": "a\u2028b",
    "lone surrogate": "a\udc80b",
}


def test_clean_name_rule():
    assert clean_name("\ufeffforklift") == "forklift"                # BOM dropped
    assert clean_name("  safety   helmet ") == "safety helmet"        # whitespace collapsed
    assert clean_name("cafe\u0301") == "caf\u00e9"                     # NFC
    assert clean_name("a\tb") == "a b"
    for what, raw in BAD.items():
        with pytest.raises(NameRuleError) as info:
            clean_name(raw, "category name")
        msg = str(info.value)
        assert msg.count(".") >= 1 and "\n" not in msg and "\x1b" not in msg and len(msg) < 300, what
    with pytest.raises(NameRuleError, match="limit is 64"):
        clean_name("y" * 65)
    assert clean_name("y" * 64) == "y" * 64


def test_uniqueness_ignores_case_and_unicode_form():
    assert name_key("Caf\u00e9") == name_key("cafe\u0301".upper())
    for pair in (["Cat", "cat"], ["caf\u00e9", "cafe\u0301"], ["STRASSE", "stra\u00dfe"]):
        with pytest.raises(NameRuleError, match="Duplicate"):
            clean_names(pair)
    check_unique(["cat", "dog"])


def test_typed_vocabulary_uses_the_rule(tmp_path):
    store = wf.open_store(tmp_path / "s.db")
    for raw in ("fork\u200blift, pallet", "caf\u00e9\ncafe\u0301", "a\x1b[0m, b"):
        with pytest.raises(wf.VocabularyError):
            wf.create_project(store, "p", raw)
    pid = wf.create_project(store, "p", "cafe\u0301, pallet")
    assert [c.name for c in store.list_categories(pid)] == ["caf\u00e9", "pallet"]
    with pytest.raises(wf.VocabularyError):
        wf.create_project(store, "bad\x00name", "a")
    store.close()


def test_vocabulary_file_bom_is_not_part_of_the_first_name(tmp_path, capsys):
    vocab = tmp_path / "names.txt"
    vocab.write_bytes("\ufeffforklift\npallet\n".encode("utf-8"))
    db = tmp_path / "s.db"
    assert main(["--db", str(db), "new", "p", "--vocab", str(vocab)]) == 0
    store = Store(db)
    assert [c.name for c in store.list_categories(store.list_projects()[0].id)] == ["forklift", "pallet"]
    store.close()
    vocab.write_bytes("fork\u200blift\npallet\n".encode("utf-8"))
    assert main(["--db", str(db), "new", "q", "--vocab", str(vocab)]) == 2
    assert "invisible" in capsys.readouterr().err


def _archive_with(tmp_path: Path, mutate) -> Path:
    src = Store(tmp_path / "src.db")
    pid = src.create_project("kitchen", categories=["cup", "knife"])
    good = src.export_project(pid, tmp_path / "good.zip")
    src.close()
    with zipfile.ZipFile(good) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    rows = json.loads(parts["rows.json"])
    mutate(rows)
    out = tmp_path / f"crafted-{len(list(tmp_path.iterdir()))}.zip"
    with zipfile.ZipFile(out, "w") as z:
        for n, d in parts.items():
            z.writestr(n, json.dumps(rows) if n == "rows.json" else d)
    return out


@pytest.mark.parametrize("what", list(BAD) + ["case duplicate", "NFD duplicate", "bad project name"])
def test_import_refuses_what_typing_refuses(tmp_path, what):
    def mutate(rows):
        if what == "case duplicate":
            rows["category"][1]["name"] = "CUP"
        elif what == "NFD duplicate":
            rows["category"][0]["name"], rows["category"][1]["name"] = "caf\u00e9", "cafe\u0301"
        elif what == "bad project name":
            rows["project"]["name"] = "kitchen\x1b[2J"
        else:
            rows["category"][0]["name"] = BAD[what]
    archive = _archive_with(tmp_path, mutate)
    dst = Store(tmp_path / "dst.db")
    with pytest.raises(ArchiveError) as info:
        dst.import_project(archive)
    msg = str(info.value)
    assert "Nothing was imported" in msg and "\n" not in msg and "\x1b" not in msg and len(msg) < 400
    assert dst.list_projects() == []
    dst.close()


def test_rename_uses_the_rule(tmp_path):
    store = wf.open_store(tmp_path / "s.db")
    pid = wf.create_project(store, "p", "a, b")
    with pytest.raises(wf.WorkflowError):
        wf.rename_project(store, pid, "evil\u202e")
    wf.rename_project(store, pid, "\ufeffnew  name")
    assert store.get_project(pid).name == "new name"
    store.close()
