"""The sentence quality gate: which parsed LLM lines become training sentences (issue 12).

The sentences are the training set: prompts are tuned on them and on nothing else, so a line that
does not describe a photo of its category is a wrong training example. Every parsed sentence
passes `SentenceGate.check` in answer order; a line that fails is kept as a `Rejection` with its
reason (the studio shows and can restore them) and counted per reason. Reasons, checked in this
order:

  preamble        a list heading or sign-off: ends in ":" or starts like "Here are ..." / "The
                  following ..." / "The N sentences below ..."
  mixed_script    letters of another script in a sentence about a vocabulary written in Latin
                  letters: the model slipped into another language ("glints like钻石", "ready
                  for装载 goods"); a vocabulary with non-Latin names is not checked
  meta            talk about the text instead of the photo: sentences, lists, words, grammar,
                  typos, synonyms, "this description" (unless that word is part of a category name);
                  a category name in quotes (talk about the word: 'made entirely out of "stapler"');
                  the writer's own voice ("I noticed", "my suitcase") or the reader addressed ("your
                  home", "When you press the pedal"): a story or advice, not a caption
  trivia          facts no photo shows: years and centuries, films/books/songs, laws and
                  regulations, organisations and companies, history, statistics, general
                  facts of use ("commonly used in the food industry", "is capable of ..."),
                  claims of purpose ("ideal for", "designed to", "ensuring", "allows the rider",
                  "provides comfort", "offers a view", "is used to store", "serves as", "helps drivers
                  see", "a crucial component", "plays a role"), general claims ("can vary",
                  "depending on", "depends on", "comes in various colors", "typically", "known for", "may be",
                  "an excellent choice", "allowing it to", "allowed the user to", "often seen", "materials
                  such as"),
                  meanings ("a symbol of freedom", "iconic", "reminds", "suggesting that", "a sign of
                  freshness", "a reflection of its beauty", "the importance of"), qualities no photo
                  shows ("durable", "makes it easy to clean", "for easy access", "essential for",
                  "affects how", "a masterpiece", "aesthetic appeal"), decor talk ("adds character to
                  any space", "a statement piece"),
                  likenesses ("is like a living statue", "resembled those of a sheep": "shaped like a
                  cone" is a shape and stays),
                  invitations ("inviting people to sit") and measurements ("26 inches", "2 liters",
                  "70 miles per hour", "375°F"); a hand action
                  in the passive is a caption, not a claim ("A brown spoon is used to mix flour and
                  eggs": `HAND_ACTIONS`), and so is one done by a person seen in the photo ("is used
                  by a worker to remove a nut"; "used by carpenters to cut wood" is a habit)
  too_short       fewer than `min_words` words
  too_long        more than `max_words` words or `max_chars` characters
  off_topic       does not mention every category it was asked about, by name (any plural, case,
                  or spelling open, hyphenated or closed: "lawn mower" for "lawnmower"; a colour-named
                  category as the thing, not the colour: "an orange ball" and "the orange sky" do
                  not name the fruit, `engine.graph.names_the_thing`), by the
                  last word of a multi-word name ("the hose" for "garden hose", unless that word
                  is generic or another category's) or by an accepted synonym (`strong_synonyms`).
                  A scene line naming one of its two categories stays off-topic: on the VOC cache
                  about 2 in 5 such lines show the other object under another word ("cyclists",
                  "the bike", "pigeons"), so keeping them labelled with the one named would train
                  the other as a negative (tried and reverted, 2026-11-30)
  duplicate       the same words as a kept sentence (case and punctuation ignored)
  near_duplicate  word-set Jaccard similarity >= `near_duplicate` with a kept sentence asked about
                  the same categories

A sentence that fails only for a claim in a trailing clause ("The colander has a square shape
with four sides, making it easy to fit into containers.") is kept without that clause when what is
left passes every check ("The colander has a square shape with four sides."); the clause cut off is
kept beside the sentence (`Kept.cut`, shown in the studio). A claim in the main clause ("A hammer is
used to drive nails") is not cut: the sentence is rejected.

Attributes pass `junk_attribute` ("The words in the list are" never becomes an attribute).
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass, field

from engine.graph import head_noun, mentions, names_the_thing, strong_synonyms

REASONS = ("preamble", "mixed_script", "meta", "trivia", "too_short", "too_long", "off_topic", "duplicate",
           "near_duplicate")

_PREAMBLE = re.compile(
    r"^(sure|certainly|of course|okay|absolutely|here (?:are|is)|below (?:are|is)|the following|"
    r"these are|the (?:\w+ ){0,2}(?:sentences?|descriptions?|phrases?) (?:below|above|that follow)|"
    r"i hope|hope this|let me know|in summary|in conclusion|note\b)", re.I)
_META = re.compile(
    r"\b(sentences?|lists?|words?|wording|grammar|grammatical|typos?|spelling|misspell\w*|phrases?|"
    r"vocabulary|synonyms?|adjectives?|nouns?|verbs?|paragraphs?|"
    r"(?:this|the above|the following) (?:description|text|answer|example)s?)\b", re.I)
#: Actions a photo shows a tool doing in a hand: "A brown spoon is used to mix together flour and
#: eggs", "A heavy hammer is used to drive nails into wood" are captions in the passive; "is used to
#: store food", "is used for transporting cargo" or "to create immersive environments" is what a
#: thing is for, and stays a claim (`_TRIVIA`).
HAND_ACTIONS = tuple((
    "stir stirring mix mixing whisk whisking beat beating cut cutting chop chopping slice slicing "
    "carve carving dice dicing peel peeling mash mashing grate grating scoop scooping pour pouring "
    "dip dipping spread spreading scrape scraping flip flipping lift lifting hit hitting catch "
    "catching throw throwing wipe wiping scrub scrubbing wash washing rinse rinsing brush brushing "
    "comb combing sweep sweeping drain draining strain straining fry frying toast toasting grill "
    "grilling drill drilling saw sawing tighten tightening loosen loosening hammer hammering sand "
    "sanding paint painting sew sewing knit knitting dig digging rake raking trim trimming prune "
    "pruning mow mowing shovel shoveling drive driving strike striking pound pounding break breaking "
    "measure measuring mark marking hold holding open opening dry drying water watering spray "
    "spraying fill filling squeeze squeezing push pushing pull pulling tie tying wrap wrapping carry "
    "carrying serve serving eat eating drink drinking remove removing attach attaching fasten fastening "
    "secure securing staple stapling crush crushing clean cleaning press pressing punch punching glue "
    "gluing install installing").split())
#: "used by" a person seen doing a hand action: "A blue screwdriver is used by a worker to remove a nut
#: from a pipe" is a caption; "used by carpenters to cut wood" (a habit of a kind) and "used by a baker
#: to make cookies" (not a hand action) stay claims.
_HAND_ACTION = r"(?:" + "|".join(HAND_ACTIONS) + r")\b"
_USED_BY_PERSON = r"(?:a|an|the|one|two|his|her|their)\s(?:[\w-]+\s){1,3}?to " + _HAND_ACTION
_TRIVIA = re.compile(
    r"\b(1[0-9]{3}|20[0-9]{2})s?\b|\b\d+(?:st|nd|rd|th) century\b|"
    r"\b(films?|movies?|novels?|albums?|songs?|tv series|television series|episodes?|directed by|"
    r"starring|box office|laws?|legislation|regulations?|statutes?|congress|parliament|"
    r"government|organi[sz]ations?|associations?|agency|agencies|institutes?|osha|"
    r"compan(?:y|ies)|corporations?|manufacturers?|brand names?|trademark|founded|invented|inventor|"
    r"patent(?:ed)?|history|historical|historically|statistics?|percent|per cent|million|billion|"
    r"according to|studies show|research(?:ers)? (?:show|found)|wikipedia|encyclopedia|"
    r"(?:commonly|typically|widely|often|usually|frequently|mainly|primarily) used|"
    r"(?:is|are) used (?:by (?!" + _USED_BY_PERSON + ")|in|as|(?:to|for) (?!" + _HAND_ACTION + "))|"
    r"industry|industries|industrial|essential tool|capable of|"
    # what it is for, not what a photo shows
    r"(?:ideal|perfect|suitable|designed|built) (?:for|to)|ensur(?:e|es|ing)|"
    r"can (?:also |often |even |easily )?be used (?:for|to|as|in)|"
    r"provid(?:es?|ing)|offer(?:s|ing)|"
    r"making it (?:easy|easier|ideal|perfect|suitable|comfortable|convenient)|"
    r"allow(?:s|ed|ing)? (?:the|you|users?|people|passengers|riders?|drivers?|it|them|for|viewers?|guests?|"
    r"visitors?|owners?|readers?|players?|customers?|diners?)|"
    r"serv(?:es?|ing) as|plays? an? (?:\w+ )?role|contribut(?:es?|ing) to|"
    r"(?:crucial|important|vital|essential|key) (?:part|component|role|feature|element)s?|"
    # "helps it fly", "helps drivers see", "helps to reduce"; not "a man helps a child"
    r"help(?:s|ing)?(?: to)? (?!(?:a|an|the|his|her|their|my|your|our|him|them|us|me|each|one|out|with)\b)\w+|"
    r"can vary|varies|depending on|depends? on|(?:available|come|comes) in (?:many|various|different|a variety)|"
    r"known (?:for|as)|may (?:be|have|also|help)|typically|generally|"
    r"mak(?:e|es|ing) (?:it|them) (?:an? )?(?:excellent|great|good|ideal|perfect|popular|effective|versatile)|"
    r"(?:excellent|great|good|popular|ideal|perfect|versatile|traditional) (?:choice|option)s?|"
    r"efficient(?:ly)?|(?:its|their|fuel|energy) efficiency|maximi[sz]e|cost-effective|"
    # what it means or is like to own, not what a photo shows
    r"iconic|symbol(?:s|izes?|izing)?(?= of)|remind(?:s|ing)?|suggest(?:s|ing)? (?:a|an|that|the)|"
    r"(?:makes?|made) (?:it|them) (?:easy|easier|ideal|perfect|suitable|comfortable|convenient|difficult|hard)|"
    r"(?:often|commonly|usually|frequently) (?:found|made|seen|associated|depicted)|durab(?:le|ility)|"
    r"materials? (?:like|such as)|(?:essential|crucial|vital|important|necessary) (?:for|to|in)|"
    r"affect(?:s|ing)? (?:how|the|its|their)|for easy \w+|invit(?:es|ing) (?:viewers|people|you|guests)|"
    r"signature (?:feature|look|style|element)|masterpieces?|(?:visual|aesthetic|unique|overall) appeal|"
    r"(?:(?<=is )|(?<=are )|(?<=as )|(?<=, ))a (?:sign|reflection) of|the importance of|"
    # decor talk: "adds character to any space", "a statement piece"
    r"to any (?:room|space|home|kitchen|outfit|setting|decor)|statement piece|"
    # a likeness no photo shows: "is like a living statue", "ears that resembled those of a sheep"
    r"(?:is|are|was|were) like (?:a|an|the)|resembl(?:es?|ed|ing) (?:those|that) of|"
    # measurements no photo shows
    r"\d+(?:\.\d+)?[ -]?(?:inch(?:es)?|feet|foot|ft|cm|mm|centimet(?:er|re)s?|met(?:er|re)s?|kilomet(?:er|re)s?|"
    r"km|miles?|mph|kg|kilograms?|pounds?|lbs?|tons?|lit(?:er|re)s?|gallons?|degrees?|volts?|watts?|"
    r"horsepower|hp)|ph levels?)\b|%|°", re.I)
#: Where a trailing clause starts: ", which ...", " that ...", ", allowing ...", ", perfect for ...",
#: " designed for ..." after a noun (cut_claim).
_CLAUSE = re.compile(
    r"(?:,\s+|\s+(?=(?:which|that|who)\b))(?:which|that|who|(?:thus |also )?(?:making|allowing|enabling|"
    r"providing|offering|ensuring|giving|helping|creating|adding|perfect|ideal|designed|built|suitable|used|"
    r"serving|inviting|as it|so that|for)\b)|\s+(?=(?:designed|built|used) (?:for|to)\b|for easy\b)", re.I)
#: A cut may not leave a head that ends mid-clause ("The oven mitts are.").
_DANGLING = frozenset("a an the of and or but is are was were be been being it its their very also not so "
                      "to with as by for in on at".split())
_QUOTED = re.compile(r"[\"“”]\s*([^\"“”]{1,60}?)\s*[\"“”]")
#: The writer's own voice ("I noticed", "my suitcase") or the reader addressed ("adds warmth to your
#: home", "When you press the pedal"); "you can see a bus" alone is left to the other rules.
_NARRATION = re.compile(r"(?<![\w-])(?:I|I'm|I've|I'd|[Mm]y|[Mm]e|[Yy]our|[Yy]ours|[Yy]ou're|[Yy]ou'll|[Yy]ou'd|"
                        r"[Ww]hen you)(?![\w-])")  # not "I-beam"
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*", re.U)
_STOP = frozenset("a an the of in on at to is are was were be with and or its their his her this that "
                  "it by for from as into over under".split())


@dataclass(frozen=True)
class GateSettings:
    """Thresholds of the gate (module docstring)."""

    min_words: int = 5
    max_words: int = 45
    max_chars: int = 300
    near_duplicate: float = 0.75
    require_all_asked: bool = True
    accept_head_noun: bool = True  # "the hose" names "garden hose" (not a generic word nor another category's)


@dataclass(frozen=True)
class Kept:
    """A sentence the gate keeps: its text, and the trailing claim cut off it ("" when none)."""

    text: str
    cut: str = ""


@dataclass
class Rejection:
    """A parsed sentence the gate did not keep, with why (one of REASONS) and where it came from."""

    text: str
    reason: str
    source: str
    categories: list[str]
    detail: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def words(text: str) -> list[str]:
    return [w.casefold() for w in _WORD.findall(text or "")]


def _content_set(text: str) -> frozenset[str]:
    return frozenset(w for w in words(text) if w not in _STOP)


def _category_words(categories: list[str], synonyms: dict[str, list[str]]) -> set[str]:
    out = set()
    for c in categories:
        for form in [c, *synonyms.get(c, [])]:
            out.update(words(form))
    return out


def cut_claim(text: str) -> tuple[str, str] | None:
    """(head, cut) when a claim no photo shows (`_TRIVIA`) starts in a trailing clause: the head is
    the sentence up to that clause, ended with ".", and cut is the clause taken off.
    "The colander has a square shape with four sides, making it easy to fit into containers." ->
    ("The colander has a square shape with four sides.", ", making it easy to fit into containers.").
    None when the claim is the main clause ("A hammer is used to drive nails") or nothing is left."""
    t = (text or "").strip()
    m = _TRIVIA.search(t)
    if not m:
        return None
    starts = [c.start() for c in _CLAUSE.finditer(t) if 0 < c.start() <= m.start()]
    if not starts:
        return None
    head = t[:starts[-1]].rstrip(" ,;:-")
    w = words(head)
    if not w or w[-1] in _DANGLING:
        return None
    return head + ".", t[len(head):]


def _non_latin_letters(text: str) -> list[str]:
    return [ch for ch in text if ch.isalpha() and not unicodedata.name(ch, "").startswith("LATIN")]


def junk_attribute(text: str) -> bool:
    """An attribute that is list talk or a cut-off clause ("The words in the list are")."""
    t = (text or "").strip()
    if not t or _META.search(t) or _PREAMBLE.match(t) or t.endswith((":", "：")):
        return True
    w = words(t)
    return not w or len(w) > 6 or w[-1] in {"are", "is", "was", "were", "the", "a", "an", "of", "and", "or"}


@dataclass
class SentenceGate:
    """Checks sentences in order, remembering the kept ones (for duplicates) and the rejections."""

    categories: list[str]
    synonyms: dict[str, list[str]] = field(default_factory=dict)
    settings: GateSettings = field(default_factory=GateSettings)
    rejections: list[Rejection] = field(default_factory=list)

    def __post_init__(self):
        named = {c: list(self.synonyms.get(c, [])) for c in self.categories}
        if self.settings.accept_head_noun:
            for c in self.categories:
                if len(c.split()) > 1:
                    named[c].append(head_noun(c))
        self.accepted = strong_synonyms(self.categories, named)
        self._own_words = _category_words(self.categories, self.synonyms)
        self._latin_vocabulary = not any(_non_latin_letters(c) for c in self.categories)
        self._exact: set[tuple[str, ...]] = set()
        self._kept_sets: dict[tuple[str, ...], list[frozenset[str]]] = {}

    def reason(self, text: str, asked: list[str]) -> tuple[str, str] | None:
        """(reason, detail) when `text` fails the gate, None when it passes. Does not remember it."""
        s = self.settings
        t = (text or "").strip()
        if t.endswith((":", "：")) or _PREAMBLE.match(t):
            return "preamble", ""
        foreign = _non_latin_letters(t) if self._latin_vocabulary else []
        if foreign:
            return "mixed_script", "".join(foreign[:8])
        m = _META.search(t)
        if m and m.group(0).casefold() not in self._own_words:
            return "meta", m.group(0)
        m = _NARRATION.search(t)
        if m:
            return "meta", m.group(0)
        for q in _QUOTED.finditer(t):  # a category name in quotes: talk about the word
            if mentions(q.group(1), self.categories, self.synonyms, whole=True):
                return "meta", q.group(0)
        m = _TRIVIA.search(t)
        if m and m.group(0).casefold() not in self._own_words:
            return "trivia", m.group(0)
        w = words(t)
        if len(w) < s.min_words:
            return "too_short", f"{len(w)} words"
        if len(w) > s.max_words or len(t) > s.max_chars:
            return "too_long", f"{len(w)} words"
        missing = [c for c in asked if not names_the_thing(t, c, self.accepted.get(c, []))]
        if missing and (s.require_all_asked or len(missing) == len(asked)):
            return "off_topic", "no mention of " + ", ".join(missing)
        if tuple(w) in self._exact:
            return "duplicate", ""
        content = _content_set(t)
        for other in self._kept_sets.get(tuple(asked), []):
            union = len(content | other)
            if union and len(content & other) / union >= s.near_duplicate:
                return "near_duplicate", ""
        return None

    def check(self, text: str, source: str, asked: list[str]) -> Kept | None:
        """The sentence to keep (remembered for the duplicate checks), or None with its Rejection
        recorded. A sentence that fails only for a claim in a trailing clause is kept without that
        clause (`cut_claim`) when what is left passes every check; `Kept.cut` holds what was cut."""
        why = self.reason(text, asked)
        kept = Kept(text.strip())
        if why is not None and why[0] == "trivia":
            parts = cut_claim(text)
            if parts and self.reason(parts[0], asked) is None:
                why, kept = None, Kept(*parts)
        if why is not None:
            self.rejections.append(Rejection(text, why[0], source, list(asked), why[1]))
            return None
        self._exact.add(tuple(words(kept.text)))
        self._kept_sets.setdefault(tuple(asked), []).append(_content_set(kept.text))
        return kept

    def counts(self) -> dict[str, int]:
        """Rejections per reason, every reason listed (zeros too)."""
        out = {r: 0 for r in REASONS}
        for r in self.rejections:
            out[r.reason] = out.get(r.reason, 0) + 1
        return out
