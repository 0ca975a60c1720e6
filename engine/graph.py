"""Labels of sentences, the co-occurrence graph and its maximal cliques (METHOD.md sections 1-2).

- A sentence's labels: the categories it was asked about, plus every category whose name or one
  of its strong synonyms appears in it (`strong_synonyms`: not a generic word, not the head noun of
  another category; a mention inside a longer mention of another category does not count, nor a
  colour-named category used as a colour: "an orange bus"). Matching is on word boundaries, case-insensitive, and
  plural-insensitive (regular English plurals -s/-es/-ies, a short table of irregular ones, and a
  multi-word name matches with any whitespace or a hyphen between its words; "diningtable" also
  matches "dining table" when that is given as a synonym).
- Weight of (a, b) = number of sentences whose labels contain both.
- Edge when weight >= tau; the user's added edges are then put in and removed edges taken out
  (edits win over the threshold).
- Fine groups = maximal cliques of size >= 2 (networkx find_cliques), each sorted in category
  order, the list sorted by the position of their first category: the `cliques` argument of
  engine.prompts.PromptStructure.
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from itertools import combinations
from typing import Iterable, Iterator

import networkx as nx

IRREGULAR = {
    "person": "people", "man": "men", "woman": "women", "child": "children", "mouse": "mice",
    "foot": "feet", "tooth": "teeth", "goose": "geese", "ox": "oxen", "knife": "knives",
    "leaf": "leaves", "wolf": "wolves", "sheep": "sheep", "fish": "fish", "deer": "deer",
    "bus": "buses", "glass": "glasses", "cactus": "cacti",
}


def _plural(word: str) -> str:
    w = word.lower()
    if w in IRREGULAR:
        return IRREGULAR[w]
    if re.search(r"[^aeiou]y$", w):
        return w[:-1] + "ies"
    if re.search(r"(s|x|z|ch|sh)$", w):
        return w + "es"
    if w.endswith("fe"):
        return w[:-2] + "ves"
    return w + "s"


def _singular(word: str) -> str:
    w = word.lower()
    for sing, plur in IRREGULAR.items():
        if w == plur:
            return sing
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if re.search(r"(ses|xes|zes|ches|shes)$", w):
        return w[:-2]
    if w.endswith("s") and not w.endswith("ss") and len(w) > 3:
        return w[:-1]
    return w


def variants(name: str) -> set[str]:
    """Surface forms of a name: itself, its singular, its plural (the last word inflects)."""
    words = name.strip().lower().split()
    if not words:
        return set()
    head, last = words[:-1], words[-1]
    forms = {last, _plural(last), _singular(last), _plural(_singular(last))}
    return {" ".join(head + [f]) for f in forms if f}


def _spelled(word: str) -> str:
    """A word as a regex that also matches it written open or hyphenated: a one-word name of 6+
    letters may be split anywhere ("lawnmower" matches "lawn mower", "pottedplant" "potted plant")."""
    if len(word) < 6 or not word.isalpha():
        return re.escape(word)
    return r"[\s\-]?".join(re.escape(ch) for ch in word)


_UNSPACED_SCRIPTS = ("CJK", "HIRAGANA", "KATAKANA", "THAI", "LAO", "KHMER", "MYANMAR")


@lru_cache(maxsize=4096)
def _pattern(name: str) -> re.Pattern:
    """Any surface form of ``name`` (case, plural, words joined by spaces, hyphens or nothing:
    "garden hose" matches "garden-hose" and "gardenhose") as a whole word; in a script written
    without spaces between words (Chinese, Japanese, Thai) anywhere in the text."""
    alts = sorted(variants(name), key=len, reverse=True)
    body = "|".join(r"[\s\-]*".join(_spelled(w) for w in alt.split()) for alt in alts)
    if any(unicodedata.name(ch, "").startswith(_UNSPACED_SCRIPTS) for ch in name):
        return re.compile(rf"(?:{body})", re.I)  # Chinese, Japanese: words are not set apart by spaces
    return re.compile(rf"(?<![\w\-])(?:{body})(?![\w\-])", re.I)


def mentions(text: str, categories: Iterable[str], synonyms: dict[str, list[str]] | None = None,
             whole: bool = False) -> list[str]:
    """Categories whose name or a synonym appears in `text` (with `whole`: is all of `text`), in
    category order."""
    synonyms = synonyms or {}
    found = []
    for cat in categories:
        for form in [cat, *synonyms.get(cat, [])]:
            pattern = _pattern(form.strip()) if form and form.strip() else None
            if pattern and (pattern.fullmatch if whole else pattern.search)(text or ""):
                found.append(cat)
                break
    return found


#: Words too general to be evidence of one category ("truck", "box", "vehicle" name many things).
GENERIC_WORDS = frozenset("""
object objects thing things item items stuff device devices machine machines equipment tool tools
vehicle vehicles car truck trucks box boxes container containers animal animals creature pet pets
person people man men woman women kid kids child children human humans furniture appliance
structure unit set piece part platform board frame stand holder case bag cart carrier transport
plant plants food foods dish meal drink toy gear material materials product products good goods
lift lifter loader jack mover hauler
""".split())


#: Category names that are also colour words: "an orange bus" names a colour, "an orange on the
#: plate" the fruit (`_names_a_colour`).
COLOUR_NAMES = frozenset("orange lime olive peach plum cherry lemon salmon lavender coral mint ivory".split())
_COLOURS = COLOUR_NAMES | frozenset("""red green blue yellow black white brown grey gray pink purple
gold silver beige tan""".split())
#: Words after the fruit, not after the colour: "an orange on the plate", "orange slices".
_AFTER_THE_THING = frozenset("""on in at with is are was were be sits sit lies lie rests rest hangs hang
rolls roll from beside next near by of that which has have had to for into onto under over inside
between among slice slices wedge wedges peel peels segment segments tree trees half halves""".split())
_NEXT_WORDS = re.compile(r"[\s\-]+([A-Za-z]+)(?:\s+([A-Za-z]+))?")
_NEXT_IN_LIST = re.compile(r"\s*,\s*(?:and\s+|or\s+)?([A-Za-z]+)")
#: Words before a colour, not before the fruit: "painted bright orange", "shades of yellow and orange".
_BEFORE_A_COLOUR = frozenset("""bright deep dark light pale soft vibrant vivid creamy burnt neon golden
painted""".split())
_SHADES = frozenset("shade shades hue hues tone tones".split())
_BEFORE_A_COLOUR_OR_COLOUR = _COLOURS | _BEFORE_A_COLOUR


def _names_a_colour(text: str, match: re.Match) -> bool:
    """A singular mention of a colour-named category used as a colour: followed by a word that is
    not a preposition or verb ("orange bus", "orange-coloured"), or by "and"/"or" and a colour
    ("orange and white cat"); or in a list of colours or after a shade word ("red, orange, and
    pink", "painted bright orange", "shades of yellow and orange"). Plurals ("oranges") and
    "orange." / "orange on the table" are the thing."""
    if match.group(0).lower() not in COLOUR_NAMES:
        return False
    before = [w.lower() for w in re.findall(r"[A-Za-z]+", text[:match.start()])[-4:]]
    while before and before[-1] in ("and", "or"):
        before.pop()
    if before and (before[-1] in _BEFORE_A_COLOUR_OR_COLOUR or (before[-1] == "of" and len(before) > 1
                                                                 and before[-2] in _SHADES)):
        return True  # "red, orange", "bright orange", "shades of yellow and orange"
    listed = _NEXT_IN_LIST.match(text, match.end())
    if listed and listed.group(1).lower() in _COLOURS:
        return True  # "orange, blue, and pink"
    nxt = _NEXT_WORDS.match(text, match.end())
    if not nxt:
        return False
    word, after = nxt.group(1).lower(), (nxt.group(2) or "").lower()
    if word in ("and", "or"):
        return after in _COLOURS
    return word not in _AFTER_THE_THING


def _thing_matches(text: str, category: str, synonyms: Iterable[str] = ()) -> Iterator[tuple[str, re.Match]]:
    """("name" | "synonym", match) for each place `text` names `category` as the thing: its name
    first, then each synonym, in text order; a colour use ("an orange ball": `_names_a_colour`) is
    skipped."""
    for kind, form in [("name", category), *(("synonym", syn) for syn in synonyms)]:
        form = (form or "").strip()
        for m in _pattern(form).finditer(text) if form else ():
            if not _names_a_colour(text, m):
                yield kind, m


def names_the_thing(text: str, category: str, synonyms: Iterable[str] = ()) -> bool:
    """Whether `text` names `category` as the thing: by its name or one of `synonyms`, used at
    least once not as a colour ("an orange on the plate" names the fruit, "an orange ball" and "the
    orange sky" do not: `_names_a_colour`). For a category that is not a colour word this is
    `mentions(text, [category], {category: synonyms})`."""
    return next(_thing_matches(text or "", category, synonyms), None) is not None


def head_noun(name: str) -> str:
    ws = name.strip().lower().split()
    return ws[-1] if ws else ""


_GENERIC_FORMS = frozenset(g for w in GENERIC_WORDS for g in variants(w))


def strong_synonyms(categories: list[str], synonyms: dict[str, list[str]] | None) -> dict[str, list[str]]:
    """The synonyms that count as evidence of their category: not a generic word
    (`GENERIC_WORDS`), not another category's name, and not the head noun (last word) of another
    category's name ("truck" is the head of "hand truck", so it never labels a sentence
    "forklift"; "box" is the head of "cardboard box", so it never labels one "pallet")."""
    synonyms = synonyms or {}
    key = (tuple(categories), tuple((c, tuple(synonyms.get(c, []))) for c in categories))
    return {c: list(v) for c, v in _strong_synonyms(key).items()}


@lru_cache(maxsize=64)
def _strong_synonyms(key) -> dict[str, tuple[str, ...]]:
    categories, synonyms = key[0], dict(key[1])
    owners: dict[str, set[str]] = {}  # a name's or head noun's surface form -> the categories it names
    for o in categories:
        for form in variants(o) | variants(head_noun(o)):
            owners.setdefault(form, set()).add(o)
    out: dict[str, tuple[str, ...]] = {}
    for c in categories:
        keep = []
        for syn in synonyms.get(c, ()):
            forms = variants(syn)
            if not forms or forms & _GENERIC_FORMS:
                continue
            if any(owners.get(f, set()) - {c} for f in forms):
                continue
            keep.append(syn)
        out[c] = tuple(keep)
    return out


def label_evidence(text: str, categories: list[str], synonyms: dict[str, list[str]] | None,
                   asked: list[str]) -> dict[str, str]:
    """{category: why it is a label of `text`}: "asked" for the categories the question was about;
    for another category, "name: <form>" when its name appears, or "synonym: <syn>" when one of its
    strong synonyms (`strong_synonyms`) does. A name or synonym inside a longer mention of another
    category does not count ("truck" in "hand truck"), nor does a colour-named category used as a
    colour ("an orange bus": `_names_a_colour`)."""
    strong = strong_synonyms(categories, synonyms)
    text = text or ""
    spans = [(m.start(), m.end(), c) for c in categories for m in _pattern(c).finditer(text)]
    ev: dict[str, str] = {a: "asked" for a in dict.fromkeys(asked)}
    for c in categories:
        if c in ev:
            continue
        for kind, m in _thing_matches(text, c, strong.get(c, [])):
            inside = any(a <= m.start() and m.end() <= b and o != c and (b - a) > (m.end() - m.start())
                         for a, b, o in spans)
            if not inside:
                ev[c] = f"{kind}: {m.group(0)}"
                break
    return ev


def label_sentence(text: str, categories: list[str], synonyms: dict[str, list[str]] | None,
                   asked: list[str]) -> list[str]:
    """The asked categories plus every category with strong evidence in the text
    (`label_evidence`), in category order (asked names not in `categories` are kept at the end)."""
    hit = set(label_evidence(text, categories, synonyms, asked))
    ordered = [c for c in categories if c in hit]
    return ordered + [a for a in dict.fromkeys(asked) if a not in categories]


def cooccurrence(label_lists: Iterable[Iterable[str]], categories: list[str]) -> dict[tuple[str, str], int]:
    """{(a, b): number of label lists holding both}, a before b in category order, zero pairs left out."""
    pos = {c: i for i, c in enumerate(categories)}
    weights: dict[tuple[str, str], int] = {}
    for labels in label_lists:
        present = sorted({l for l in labels if l in pos}, key=pos.__getitem__)
        for a, b in combinations(present, 2):
            weights[(a, b)] = weights.get((a, b), 0) + 1
    return weights


def build_graph(weights: dict[tuple[str, str], int], categories: list[str], tau: int,
                added: Iterable[tuple[str, str]] = (), removed: Iterable[tuple[str, str]] = ()) -> nx.Graph:
    """Nodes = categories; edge (a, b) with attribute weight when weight >= tau; then the user's
    added edges are added (weight kept if known) and removed edges dropped."""
    g = nx.Graph()
    g.add_nodes_from(categories)
    for (a, b), w in weights.items():
        if a in g and b in g and a != b and w >= tau:
            g.add_edge(a, b, weight=w)
    for a, b in added:
        if a in g and b in g and a != b:
            g.add_edge(a, b, weight=weights.get((a, b), weights.get((b, a), 0)), user=True)
    for a, b in removed:
        if g.has_edge(a, b):
            g.remove_edge(a, b)
    return g


def maximal_cliques(graph: nx.Graph) -> list[list[str]]:
    """Maximal cliques of size >= 2, members in node order, cliques sorted by first member."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    cliques = [sorted(c, key=order.__getitem__) for c in nx.find_cliques(graph) if len(c) >= 2]
    return sorted(cliques, key=lambda c: [order[n] for n in c])
