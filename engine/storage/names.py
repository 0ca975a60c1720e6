"""The one rule every project and category name obeys, whichever way it comes in (typed in the
studio, a vocabulary file, the command line, an imported archive).

A name is cleaned, then checked:

- a leading byte-order mark (U+FEFF, what some editors put at the start of a UTF-8 file) is dropped;
- the text is NFC-normalised (so "café" typed with a combining accent and with a precomposed
  "é" are the same name);
- runs of whitespace become one space, and the ends are trimmed;
- refused: an empty name; control characters (newline, NUL, ANSI escape ...); invisible format
  characters (zero-width space/joiner, bidirectional overrides, a BOM inside the name); line and
  paragraph separators; lone surrogates; more than ``max_length`` characters.

Two names are the same when their :func:`name_key` is: NFC, then case-folded (so "Cat", "CAT" and
"cat" clash, and so do NFC/NFD look-alikes). Every refusal is one sentence.
"""
from __future__ import annotations

import unicodedata
from typing import Iterable

from engine.errors import EngineError

BOM = "\ufeff"
MAX_NAME_LENGTH = 64
MAX_PROJECT_NAME_LENGTH = 100
# Unicode general categories a name may not contain: Cc control, Cf format (zero-width, bidi
# overrides, BOM), Cs surrogates, Zl/Zp line/paragraph separators.
_REFUSED_CATEGORIES = {"Cc": "a control character", "Cf": "an invisible formatting character",
                       "Cs": "an unpaired surrogate", "Zl": "a line separator", "Zp": "a paragraph separator"}


class NameRuleError(EngineError, ValueError):
    """A name the rule refuses; the message (one sentence) says which name and why."""


def _shown(name: str, limit: int = 30) -> str:
    """A short, escaped rendering of a refused name for a message (no raw control characters)."""
    short = name if len(name) <= limit else name[:limit] + "..."
    return ascii(short) if any(unicodedata.category(ch) in _REFUSED_CATEGORIES for ch in short) else repr(short)


def clean_name(raw, what: str = "name", max_length: int = MAX_NAME_LENGTH) -> str:
    """The cleaned name (see the module), or :class:`NameRuleError`."""
    if not isinstance(raw, str):
        raise NameRuleError(f"A {what} must be text, not {type(raw).__name__}.")
    text = raw.lstrip(BOM)
    for ch in text:
        cat = unicodedata.category(ch)
        if cat in _REFUSED_CATEGORIES and ch not in "\t\n\r\v\f":  # tabs collapse; breaks: below
            raise NameRuleError(f"The {what} {_shown(text)} contains {_REFUSED_CATEGORIES[cat]} "
                                f"(U+{ord(ch):04X}); remove it.")
    if any(ch in text for ch in "\r\n\v\f"):
        raise NameRuleError(f"The {what} {_shown(text)} contains a control character (a line break); remove it.")
    name = " ".join(unicodedata.normalize("NFC", text).split())
    if not name:
        raise NameRuleError(f"A {what} cannot be empty.")
    if len(name) > max_length:
        raise NameRuleError(f"The {what} {_shown(name)} is {len(name)} characters long; the limit is {max_length}.")
    return name


def name_key(name: str) -> str:
    """What makes two names the same: NFC, case-folded (then NFC again: folding may decompose)."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())


def check_unique(names: Iterable[str], what: str = "names") -> None:
    """Raise :class:`NameRuleError` naming the duplicates (case and Unicode form do not count)."""
    seen: dict[str, str] = {}
    dups: list[str] = []
    for n in names:
        key = name_key(n)
        if key in seen and n not in dups:
            dups.append(n)
        seen.setdefault(key, n)
    if dups:
        raise NameRuleError(f"Duplicate {what} (case does not count): {', '.join(_shown(d) for d in dups)}.")


def clean_names(raws: Iterable, what: str = "category name", max_length: int = MAX_NAME_LENGTH,
                max_count: int | None = None) -> list[str]:
    """Every name cleaned, then checked for duplicates and (optionally) their number."""
    names = [clean_name(r, what, max_length) for r in raws]
    if max_count is not None and len(names) > max_count:
        raise NameRuleError(f"{len(names)} {what}s is over the limit of {max_count}.")
    check_unique(names, what + "s")
    return names
