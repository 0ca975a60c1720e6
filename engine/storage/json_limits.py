"""JSON from outside (an imported archive, a classifier file's metadata) parsed within limits.

``json.loads`` alone lets a crafted file crash the reader in ways that are not a clear refusal:
deep nesting ends in RecursionError, ``NaN``/``Infinity`` and ``1e999`` are not valid in SQLite's
strict JSON (the store then fails with raw SQL in the message), a 2^70 integer overflows SQLite's
64-bit integers. :func:`loads_limited` refuses each of these with one sentence
(:class:`JsonLimitError`) before anything is written anywhere.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from engine.errors import EngineError

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1


class JsonLimitError(EngineError, ValueError):
    """JSON beyond a limit (nesting, number range, non-finite number); one sentence."""


@dataclass(frozen=True)
class JsonLimits:
    """``max_depth``: nested arrays/objects; integers must fit SQLite's 64-bit range; floats must
    be finite; ``max_string``: characters in one string (keys included)."""

    max_depth: int = 32
    max_string: int = 1_000_000


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > 19:
        raise JsonLimitError(f"the number {text[:24]}... is out of range (integers must fit in 64 bits).")
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        raise JsonLimitError(f"the number {text} is out of range (integers must fit in 64 bits).")
    return value


def _parse_float(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise JsonLimitError(f"the number {text[:24]} is out of range (numbers must be finite).")
    return value


def _parse_constant(name: str):
    raise JsonLimitError(f"{name} is not a number JSON allows (numbers must be finite).")


def check_shape(obj, limits: JsonLimits = JsonLimits()) -> None:
    """Walk ``obj`` (no recursion) and refuse nesting deeper than ``limits.max_depth`` or strings
    longer than ``limits.max_string``."""
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > limits.max_depth:
                raise JsonLimitError(f"it nests deeper than {limits.max_depth} levels.")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for k, v in items:
                if isinstance(k, str) and len(k) > limits.max_string:
                    raise JsonLimitError(f"a key is longer than {limits.max_string} characters.")
                stack.append((v, depth + 1))
        elif isinstance(value, str) and len(value) > limits.max_string:
            raise JsonLimitError(f"a text is longer than {limits.max_string} characters.")


def loads_limited(data: bytes | str, limits: JsonLimits = JsonLimits()):
    """Parse JSON text within ``limits`` (see the module); :class:`JsonLimitError` or
    ``ValueError`` (not JSON at all) otherwise."""
    if isinstance(data, bytes):
        data = data.decode("utf-8")
    try:
        obj = json.loads(data, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except RecursionError:
        raise JsonLimitError(f"it nests deeper than {limits.max_depth} levels.") from None
    check_shape(obj, limits)
    return obj
