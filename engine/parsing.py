"""Raw LLM text -> clean items (METHOD.md section 1: "LLM output is messy").

What small models really write, and what this module does with it:
- numbered / lettered / bulleted lists ("1.", "2)", "(a)", "-", "*", "•", markdown "**bold**",
  headings "###"): markers and emphasis are stripped;
- several items on one line: phrases split on commas / semicolons / slashes, an inline numbered
  run ("1. red 2. blue") is split at its numbers; a line with several sentences is split into them;
- preambles and sign-offs ("Sure! Here are ten attributes:", "I hope this helps"): dropped;
- "Head: description" lines: for phrases the short head is the item (also "Head - description"),
  for sentences the head is stripped when the rest is a sentence;
- echoes of a completion prompt ("Question: ...", "Answer:"): dropped / stripped;
- refusals ("I'm sorry, I can't..."): dropped;
- cut-off answers: a last sentence without end punctuation, or a last phrase ending in a function
  word ("red and"), is dropped when the text itself ends mid-line;
- repeats: dropped case- and punctuation-insensitively, first occurrence kept;
- other languages: no ASCII assumptions; any Unicode letters count.
Every function returns items that are non-empty, stripped and distinct. The raw answer is kept
beside the items by the caller (engine.knowledge.Answer).
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_MARKER = re.compile(r"^\s*(?:[-*•·‣◦▪●–—+>#]+(?=\s)|[•·‣◦▪●]+|\(?\d{1,3}\s*[.)\]:]|\(?[A-Za-z][.)](?=\s)|\[\d{1,3}\])\s*")
_INLINE_NUM = re.compile(r"\s+(?=\(?\d{1,3}[.)]\s+\S)")
_SENT_SPLIT = re.compile(r"(?<=[.!?。！？])\s+(?=[\"'“(]?[A-Z0-9À-Ý])")
_REFUSAL = re.compile(
    r"\b(i'?m sorry|i am sorry|i apologi[sz]e|i can(?:no|')t|i am unable|i'?m unable|as an ai\b|"
    r"i do not have|i don't have|language model)", re.I)
_PREAMBLE = re.compile(
    r"^(sure|certainly|of course|okay|ok|absolutely|here (?:are|is)|below (?:are|is)|the following|"
    r"these are|i hope|hope this|let me know|note:|in summary|in conclusion|great question)\b", re.I)
_ECHO = re.compile(r"^(question|answer|q|a|user|assistant)\s*:\s*", re.I)
_EMPH = re.compile(r"(\*\*|__|\*|`|~~)")
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")
_FUNCTION_END = re.compile(r"\b(and|or|of|the|a|an|with|to|in|on|for|is|are|its|their|that)$", re.I)
_HEAD = re.compile(r"^([^:：]{1,40})[:：]\s*(.*)$")
#: A phrase's "Head - description" (Qwen: "- High heat - Can be used for deep-frying, grilling"): a
#: dash with spaces around it, so "stainless-steel" is one word. Phrases only: in a sentence the
#: dash is punctuation ("A kettle - shiny and new - sits on the stove").
_DASH_HEAD = re.compile(r"^([^:：]{1,40}?)\s+[-–—]\s+(.*)$")


@dataclass(frozen=True)
class ParseSettings:
    """How items are accepted. Phrases (attributes, names) and sentences differ in length."""

    phrase_max_words: int = 6
    sentence_min_words: int = 3
    sentence_max_chars: int = 400
    item_max_chars: int = 80


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch if (ch in "\n\t" or unicodedata.category(ch)[0] != "C") else " " for ch in text)
    text = _TAG.sub(lambda m: "\n" if m.group(0).lower().startswith(("<br", "<li", "<p")) else "", text)
    return text.replace("\t", " ").replace("\r", "\n")


def _strip_item(s: str) -> str:
    s = _EMPH.sub("", s)
    s = re.sub(r"\s+", " ", s).strip()
    s = s.strip(" \"'“”‘’«»[]{}")
    if s.startswith("(") and s.endswith(")"):
        s = s[1:-1].strip()
    return s


def _strip_marker(line: str) -> str:
    prev = None
    while prev != line:
        prev = line
        line = _MARKER.sub("", line, count=1)
        line = _EMPH.sub("", line).strip() if line.startswith(("**", "__")) else line
    return line.strip()


def _has_letter(s: str) -> bool:
    return any(ch.isalpha() for ch in s)


def _key(s: str) -> str:
    return re.sub(r"[\W_]+", " ", s.casefold()).strip()


def dedupe(items) -> list[str]:
    """Drop empties and repeats (case- and punctuation-insensitive), keep first order."""
    seen, out = set(), []
    for it in items:
        it = (it or "").strip()
        k = _key(it)
        if not it or not k or k in seen:
            continue
        seen.add(k)
        out.append(it)
    return out


def _lines(raw: str) -> list[tuple[str, bool]]:
    """Content lines (marker stripped) with a flag: did the line carry a list marker?"""
    out = []
    for line in _norm(raw or "").split("\n"):
        line = line.strip()
        if not line:
            continue
        parts = _INLINE_NUM.split(line) if re.match(r"^\(?\d{1,3}[.)]", line) else [line]
        for part in parts:
            had_marker = bool(_MARKER.match(part))
            body = _strip_marker(part)
            body = _ECHO.sub("", body).strip()
            if body:
                out.append((body, had_marker))
    return out


def _is_noise(line: str, had_marker: bool) -> bool:
    if _REFUSAL.search(line):
        return True
    if not had_marker and _PREAMBLE.match(line):
        return True
    if not had_marker and line.rstrip().endswith((":", "：")):
        return True
    return not _has_letter(line)


def _cut_off(raw: str) -> bool:
    """True when the answer stops mid-line (no newline and no end punctuation at the end)."""
    tail = (raw or "").rstrip(" ")
    return bool(tail) and not tail.endswith(("\n", ".", "!", "?", "。", "！", "？", '"', "”", ")", "*"))


def parse_phrases(raw: str, settings: ParseSettings = ParseSettings(), limit: int | None = None) -> list[str]:
    """Short items (attributes, synonyms): one per list entry, several per line when separated
    by commas, semicolons or slashes. Items longer than `phrase_max_words` are dropped unless they
    start with a short "Head:" (then the head is the item)."""
    lines = [(body, m) for body, m in _lines(raw) if not _is_noise(body, m)]
    items: list[str] = []
    for idx, (body, _) in enumerate(lines):
        head = _HEAD.match(body) or _DASH_HEAD.match(body)
        if head and len(head.group(1).split()) <= settings.phrase_max_words:
            pieces = [head.group(1)]
        else:
            pieces = re.split(r"\s*[,;/，；、]\s*", body)
        last_line = idx == len(lines) - 1
        for j, piece in enumerate(pieces):
            p = _strip_item(piece).rstrip(".!?。")
            p = re.sub(r"^(and|or)\s+", "", p, flags=re.I).strip()
            if not p or not _has_letter(p) or len(p) > settings.item_max_chars:
                continue
            if len(p.split()) > settings.phrase_max_words:
                continue
            if last_line and j == len(pieces) - 1 and _cut_off(raw) and _FUNCTION_END.search(p):
                continue
            items.append(p)
    out = dedupe(items)
    return out[:limit] if limit else out


def parse_sentences(raw: str, settings: ParseSettings = ParseSettings(), limit: int | None = None) -> list[str]:
    """Sentences: one per list entry, split further when an entry holds several; a short
    "Head:" prefix is removed; fewer than `sentence_min_words` words is not a sentence; a last
    sentence cut off by the token limit is dropped."""
    lines = [(body, m) for body, m in _lines(raw) if not _is_noise(body, m)]
    cut = _cut_off(raw)
    items: list[str] = []
    for idx, (body, _) in enumerate(lines):
        head = _HEAD.match(body)
        if head and len(head.group(1).split()) <= 4 and len(head.group(2).split()) >= settings.sentence_min_words:
            body = head.group(2)
        pieces = _SENT_SPLIT.split(body)
        for j, piece in enumerate(pieces):
            s = _strip_item(piece)
            if len(s.split()) < settings.sentence_min_words or len(s) > settings.sentence_max_chars:
                continue
            if not _has_letter(s) or _REFUSAL.search(s):
                continue
            if cut and idx == len(lines) - 1 and j == len(pieces) - 1:
                continue
            items.append(s)
    out = dedupe(items)
    return out[:limit] if limit else out


def parse_groups(raw: str, find, exclusive: bool = True) -> list[tuple[str, list[str]]]:
    """Grouped answers ("Vehicles: car, bus" or a heading followed by a list).

    `find(text) -> list[str]` returns the known names a text mentions (engine.graph.mentions).
    Returns (group heading, [names]) in answer order; a line of its own with a list of names and
    no heading gets heading "". With `exclusive` (super-categories) a name is kept only in the
    first group that mentions it; without (scene subgroups) groups may overlap."""
    groups: list[tuple[str, list[str]]] = []
    current: tuple[str, list[str]] | None = None
    for body, had_marker in _lines(raw):
        if _REFUSAL.search(body):
            continue
        head = _HEAD.match(body)
        if head:
            title = _strip_item(head.group(1))
            names = find(head.group(2))
            current = (title, list(names))
            groups.append(current)
            continue
        names = find(body)
        if had_marker and current is not None and len(names) <= 1:
            current[1].extend(names)
        elif len(names) >= 2:
            groups.append(("", list(names)))
            current = None
        elif not had_marker and len(body.split()) <= 5 and not names:
            current = (_strip_item(body).rstrip(":"), [])
            groups.append(current)
        elif names and current is not None:
            current[1].extend(names)
    seen: set[str] = set()
    out = []
    for title, names in groups:
        kept = [n for n in dict.fromkeys(names) if not (exclusive and n in seen)]
        seen.update(kept)
        if kept:
            out.append((title, kept))
    return out
