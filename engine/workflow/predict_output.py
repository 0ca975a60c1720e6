"""The file a predict run appends to, and the key each image file goes under.

- An image's key (the ``file`` field) is its resolved absolute path, so the same image given as a
  relative path, through a symbolic link or with ``..`` in it is one row, and a resumed run finds
  it whatever the working folder. A dangling link keeps its own name (its folder resolved).
- A name that is not valid UTF-8 cannot be written into a UTF-8 output as it is: its key shows the
  odd bytes as ``\\xNN`` and the file gets an error row asking for a rename.
- An existing output is appended to only when it is one this project's predict wrote with the same
  columns: CSV, the same header; JSON lines, every row's fields (and score names) as this run
  writes them. Anything else is refused before a byte is written (one sentence). A torn last line
  (a run killed mid-write) is dropped.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from engine.workflow.base import WorkflowError

NOT_UTF8 = "the file name is not valid UTF-8, so it cannot be written into the output; rename the file"


def file_key(path) -> tuple[str, str | None]:
    """``(key, error)``: the key written in the ``file`` field and, for a name that cannot be
    written as UTF-8, the reason the file gets an error row instead of scores."""
    absolute = os.path.abspath(os.fspath(path))
    if os.path.exists(absolute):
        key = os.path.realpath(absolute)
    else:  # a dangling link or a vanished file: its folder resolved, its own name kept
        key = os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute))
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(key).decode("utf-8", "backslashreplace"), NOT_UTF8
    return key, None


def csv_header(categories, names) -> list[str]:
    head = ["file", "status", "error"]
    for n in names:
        head.append(f"{n}_top_k")
    for n in names:
        head += [f"{n}:{c}" for c in categories]
    return head


def _refuse(path: Path, why: str) -> WorkflowError:
    return WorkflowError(f"{path} is not this project's predict output ({why}); nothing was appended: "
                         f"choose another output file.")


def done_files(path: Path, fmt: str, categories: list[str], names: list[str]) -> set[str]:
    """Keys already in the output at ``path`` (scored or reported), after checking that it is this
    project's output with these columns (:class:`WorkflowError` otherwise)."""
    if not path.exists() or path.stat().st_size == 0:
        return set()
    raw = path.read_bytes()
    complete = raw if raw.endswith(b"\n") else raw[: raw.rfind(b"\n") + 1]
    try:
        text = complete.decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse(path, "it is not UTF-8 text") from None
    done = _csv_keys(path, text, categories, names) if fmt == "csv" else _jsonl_keys(path, text, categories, names)
    if complete != raw:
        path.write_bytes(complete)
    return done


def _csv_keys(path: Path, text: str, categories, names) -> set[str]:
    header = csv_header(categories, names)
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise _refuse(path, f"unreadable CSV: {exc}") from None
    if not rows:
        return set()
    if rows[0] != header:
        raise _refuse(path, "another header: another project's categories or other classifiers")
    for r in rows[1:]:
        if r and len(r) != len(header):
            raise _refuse(path, f"a row of {len(r)} fields under a header of {len(header)}")
    return {r[0] for r in rows[1:] if r}


def _jsonl_keys(path: Path, text: str, categories, names) -> set[str]:
    error_fields = {"file", "status", "error"}
    ok_fields = error_fields | {f"{n}_top_k" for n in names} | {f"{n}_scores" for n in names}
    done = set()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise _refuse(path, f"line {n} is not JSON") from None
        if not isinstance(row, dict) or not isinstance(row.get("file"), str):
            raise _refuse(path, f"line {n} is not a row of predict")
        fields = set(row)
        if fields != (ok_fields if row.get("status") == "ok" else error_fields):
            raise _refuse(path, f"line {n} has other fields: another project's output or other classifiers")
        if row["status"] == "ok" and any(not isinstance(row[f"{c}_scores"], dict)
                                         or list(row[f"{c}_scores"]) != list(categories) for c in names):
            raise _refuse(path, f"line {n} scores other categories: another project's output")
        done.add(row["file"])
    return done
