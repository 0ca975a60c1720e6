"""The question pipeline of paper section 3.2 (METHOD.md section 1), resumable through an answer cache.

Steps, in the order they run (`STEPS`), each an editable template (question for chat models;
primer + answer start + stop for base models) with the paper's wording as the default question:

  synonyms         other names of each category (for label matching; skipped for categories that
                   already have synonyms, and when n_synonyms == 0)
  super            super-categories (skipped when `super_of` covers every category, e.g. COCO/VOC)
  common           Pi1a  common attributes A_c of all categories
  attributes       Pi1b  per-category attributes A_s,i
  coarse_sentences Pi2   sentences about a category from the angle of an attribute of A_c U A_s,i
  filter           Pi3   delete the attributes not very relevant to the category -> fine attributes
  fine_sentences   Pi3   sentences about a category from the angle of a fine attribute (D^f)
  scenes           Pi4   scene subgroups G of the categories
  scene_sentences  Pi5   sentences about a scene holding two categories of one subgroup (D^r)

Method choices the paper leaves open (each a KnowledgeSettings field):
- Attribute pool for Pi2: A_s,i and A_c interleaved (specific first), the first
  `attributes_per_category` of it (None = all, the paper's choice).
- Pi3 keeps only attributes that were in the list it was given (a small model invents new ones);
  when it keeps none, the first `n_keep` of the list stay, so a category never loses all.
- Fine sentences use their own template wording so that their question text (the cache key)
  differs from Pi2's for the same attribute.
- Pi5: per subgroup, `pairs_per_group` pairs drawn with the seed (None = every pair), at most
  `max_scene_pairs` in all. When the LLM's scene answer yields no subgroup of two or more known
  categories, `scene_fallback` decides: "super" (super-category groups) or "all" (one group).
- Sentences are deduplicated over the whole corpus (case- and punctuation-insensitive).
- Each answer gets a token budget: `tokens_per_phrase` / `tokens_per_sentence` times the count
  asked for, capped by `sampling.max_tokens`. This keeps a small model from rambling.
- Category names enter prompts as data only: control characters and newlines removed, quotes
  removed, whitespace collapsed, cut to `name_max_chars`, then put between double quotes.

The sentence quality gate (engine.sentence_gate) runs as answers are parsed: a sentence it rejects
is kept in `Knowledge.rejected` with its reason (counted per reason in `Knowledge.stats`); one it
keeps without a trailing claim carries the clause cut off in `Sentence.cut`. A
sentence question that yields fewer kept sentences than asked for is asked again for the missing
count with the next seed, at most `max_retries` more times. Labels (engine.graph.label_evidence):
the asked categories, plus another category only on strong evidence (its name, or an accepted
synonym that is neither generic nor the head noun of another category); the evidence is kept per
sentence. Accepted synonyms are the given ones (the user's, a preset's); the LLM's synonyms are
`Knowledge.suggested_synonyms` (also listed in `Knowledge.synonyms`, which steers attribute
filtering and scene grouping as before) until a person accepts them.
Junk attributes (engine.sentence_gate.junk_attribute) never become attributes.

Code layout: one function per step (`_step_synonyms` ... `_step_scene_sentences`, in `STEP_FUNCTIONS`
order) over a shared `_Build` state and the runner of engine.knowledge_runner.

Resumability (METHOD.md section 1): every answer is written to the cache as soon as it arrives,
keyed by `answer_key(model id, the exact prompt the model sees, sampling settings)`. A re-run asks
only questions whose key is missing. Answers depend only on that key (the sampler is seeded on
every call), so an interrupted and resumed run ends with the same Knowledge as an uninterrupted
one. Later steps' questions contain earlier answers, so changing an answer changes the keys below.

Regenerating: `build_knowledge(..., regenerate=Regenerate(steps=..., categories=..., keys=...))`
re-asks the matching questions with a fresh random seed (recorded in the answer's meta) and
overwrites their cache entries (AnswerCache.put with an existing key replaces it); questions that
depend on changed answers then get new keys and are asked too. Everything else comes from the cache.
"""
from __future__ import annotations

import random
import re
import time
import unicodedata
from dataclasses import asdict, dataclass, field
from itertools import combinations
from typing import Callable

from engine.answer_cache import AnswerCache, JsonlAnswerCache, MemoryAnswerCache, answer_key  # noqa: F401
from engine.graph import label_evidence, mentions, variants
from engine.knowledge_runner import Answer, Regenerate, _Runner  # noqa: F401
from engine.knowledge_settings import (DEFAULT_TEMPLATES, EXAMPLE_FIELDS, STEPS, VOCABULARY_STEPS,  # noqa: F401
                                       KnowledgeSettings, StepTemplate)
from engine.parsing import _key, dedupe, parse_groups, parse_phrases, parse_sentences
from engine.sentence_gate import Rejection, SentenceGate, junk_attribute


@dataclass
class Sentence:
    text: str
    labels: list[str]
    source: str          # "coarse" | "fine" | "scene"
    category: str        # the (first) category asked about
    asked: list[str] = field(default_factory=list)
    evidence: dict[str, str] = field(default_factory=dict)  # label -> why (engine.graph.label_evidence)
    cut: str = ""  # a trailing claim the sentence gate cut off the model's line (engine.sentence_gate)


@dataclass
class Knowledge:
    categories: list[str] = field(default_factory=list)
    common_attributes: list[str] = field(default_factory=list)
    attributes: dict[str, list[str]] = field(default_factory=dict)
    filtered_attributes: dict[str, list[str]] = field(default_factory=dict)
    scene_groups: list[list[str]] = field(default_factory=list)
    super_of: dict[str, str] = field(default_factory=dict)
    synonyms: dict[str, list[str]] = field(default_factory=dict)
    suggested_synonyms: dict[str, list[str]] = field(default_factory=dict)  # the LLM's, not yet accepted
    sentences: list[Sentence] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    cancelled: bool = False
    stats: dict = field(default_factory=dict)

    def texts(self) -> list[str]:
        return [s.text for s in self.sentences]

    def label_lists(self) -> list[list[str]]:
        return [list(s.labels) for s in self.sentences]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Knowledge":
        d = dict(d)
        d["sentences"] = [Sentence(**s) for s in d.get("sentences", [])]
        d["rejected"] = [Rejection(**r) for r in d.get("rejected", [])]
        d["answers"] = [Answer(**a) for a in d.get("answers", [])]
        return cls(**d)


def clean_name(name: str, max_chars: int = 40) -> str:
    """A category name as data: no control characters, newlines or quotes, collapsed spaces, cut."""
    s = unicodedata.normalize("NFKC", str(name))
    s = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in s)
    s = re.sub(r"[\"'`“”‘’«»{}<>]", "", s)
    s = re.sub(r"\s+", " ", s).strip()
    return s[:max_chars].strip()


def quote(text: str) -> str:
    return f'"{text}"'


def _interleave(a: list[str], b: list[str]) -> list[str]:
    out = []
    for i in range(max(len(a), len(b))):
        out += ([a[i]] if i < len(a) else []) + ([b[i]] if i < len(b) else [])
    return dedupe(out)


def _round_robin(per_category: dict[str, list]) -> list:
    """The first question of every category, then the second of every category, ...: a run
    stopped part-way has sentences for every category, not all of some and none of others."""
    out, lists = [], list(per_category.values())
    for i in range(max((len(x) for x in lists), default=0)):
        out += [x[i] for x in lists if i < len(x)]
    return out


@dataclass
class _Build:
    """What the steps share: the runner, the knowledge so far, settings, the cleaned names."""

    run: _Runner
    kn: Knowledge
    s: KnowledgeSettings
    cats: list[str]
    given_super: dict[str, str]
    plan: dict[str, int]
    pools: dict[str, list[str]] = field(default_factory=dict)
    gate: SentenceGate | None = None
    t_start: float = field(default_factory=time.perf_counter)

    @property
    def objects(self) -> str:
        return ", ".join(quote(c) for c in self.cats)

    def enabled(self, step: str) -> bool:
        return step in self.s.steps

    def ask(self, questions):
        """Answers of `questions` in order; [] when there are none; None when cancelled."""
        if not questions:
            return []
        return self.run.ask_all(questions)

    @property
    def accepted_synonyms(self) -> dict[str, list[str]]:
        """The synonyms labels and the gate may use: the given (user's or preset's) ones. The
        LLM's are suggestions until a person accepts them ("forklift" got "crane")."""
        sug = self.kn.suggested_synonyms
        return {c: [x for x in self.kn.synonyms.get(c, []) if x not in sug.get(c, [])] for c in self.cats}

    def sentence_gate(self) -> SentenceGate:
        if self.gate is None:
            self.gate = SentenceGate(self.cats, self.accepted_synonyms, self.s.gate)
        return self.gate

    def ask_sentences(self, step: str, source: str, asks: list[tuple[list[str], int, dict]]) -> bool:
        """Ask each (categories, count, template fields) and keep what passes the gate, at most the
        count asked for, asking again for the missing count with the next seed while short (at most
        max_retries times). When the run is stopped, the answers that came before the stop are
        still gated and kept (False is returned).
        Answers are gated in question order, so the result does not depend on answer timing."""
        gate = self.sentence_gate()
        kept = [0] * len(asks)
        todo = list(range(len(asks)))
        for round_ in range(self.s.max_retries + 1):
            qs = [self.run.make(step, asks[i][0], asks[i][1] - kept[i], self.s.tokens_per_sentence,
                                seed_offset=round_, **asks[i][2]) for i in todo]
            res = self.ask(qs)
            cancelled = res is None
            if cancelled:  # keep what was answered before the stop (a partial run's sentences)
                res = self.run.partial
            for i, (q, raw) in zip(todo, res):
                for text in parse_sentences(raw or "", self.s.parse):
                    if kept[i] >= asks[i][1]:
                        self.kn.stats["surplus"] = self.kn.stats.get("surplus", 0) + 1
                        continue  # the count asked for is met; lines beyond it are not used
                    kept_text = gate.check(text, source, q.cats)
                    if kept_text:
                        ev = label_evidence(kept_text.text, self.cats, self.accepted_synonyms, q.cats)
                        labels = [c for c in self.cats if c in ev]
                        self.kn.sentences.append(Sentence(kept_text.text, labels, source, q.cats[0], list(q.cats),
                                                          ev, kept_text.cut))
                        kept[i] += 1
            if cancelled:
                return False
            todo = [i for i in todo if kept[i] < asks[i][1]]
            if not todo:
                break
        return True

    def finish(self, cancelled: bool) -> Knowledge:
        kn, run = self.kn, self.run
        kn.cancelled = cancelled
        kn.answers = run.answers
        gate = self.sentence_gate()
        kn.rejected = list(gate.rejections)
        written = len(kn.sentences) + len(kn.rejected)
        kn.stats.update({"questions": len(run.answers), "asked": run.asked,
                         "cached": sum(a.cached for a in run.answers),
                         "seconds": round(time.perf_counter() - self.t_start, 3),
                         "sentences": len(kn.sentences), "rejected": gate.counts(),
                         "kept_share": round(len(kn.sentences) / written, 4) if written else None})
        return kn


def _step_synonyms(b: _Build) -> bool:
    s, kn = b.s, b.kn
    need = [c for c in b.cats if not kn.synonyms[c]] if (b.enabled("synonyms") and s.n_synonyms > 0) else []
    qs = [b.run.make("synonyms", [c], s.n_synonyms, s.tokens_per_phrase, numbered=False, category=quote(c))
          for c in need]
    res = b.ask(qs)
    if res is None:
        return False
    for q, raw in res:
        c = q.cats[0]
        own = variants(c)
        others = [o for o in b.cats if o != c]
        found = [p for p in parse_phrases(raw, s.parse, limit=s.n_synonyms)
                 if p.lower() not in own and len(p.split()) <= 3 and not mentions(p, others, None)
                 and not mentions(p, [c], None) and not junk_attribute(p)]
        kn.synonyms[c] = dedupe(kn.synonyms[c] + found)
        kn.suggested_synonyms[c] = [x for x in kn.synonyms[c] if x in found]
    return True


def _step_super(b: _Build) -> bool:
    if not b.plan["super"]:
        return True
    missing = [c for c in b.cats if c not in b.given_super]
    res = b.ask([b.run.make("super", missing, len(missing), 6, numbered=False,
                            objects=", ".join(quote(c) for c in missing), count=len(missing))])
    if res is None:
        return False
    for title, names in parse_groups(res[0][1], lambda t: mentions(t, missing, b.kn.synonyms)):
        title = title.strip().lower()
        if title and title not in ("super-category", "super category", "category", "group"):
            for n in names:
                b.kn.super_of.setdefault(n, title)
    return True


_ARTICLE = re.compile(r"^(?:a|an|the)\s+", re.I)


def _attributes_of(b: _Build, raw: str, n: int) -> list[str]:
    """Attributes parsed from an answer, without a leading article ("A round head" -> "round head":
    the sentence question asks 'from the angle of the "round head"'), junk and category names left out."""
    phrases = [_ARTICLE.sub("", a) for a in parse_phrases(raw, b.s.parse, limit=n)]
    return [a for a in phrases if a and not mentions(a, b.cats, b.kn.synonyms) and not junk_attribute(a)]


def _step_common(b: _Build) -> bool:
    """Pi1a: attributes common to all categories."""
    if not b.plan["common"]:
        return True
    res = b.ask([b.run.make("common", list(b.cats), b.s.n_common, b.s.tokens_per_phrase,
                            objects=b.objects, count=len(b.cats))])
    if res is None:
        return False
    b.kn.common_attributes = _attributes_of(b, res[0][1], b.s.n_common)
    return True


def _step_attributes(b: _Build) -> bool:
    """Pi1b: attributes of each category; then the Pi2 pools (A_s,i and A_c interleaved)."""
    if b.enabled("attributes"):
        res = b.ask([b.run.make("attributes", [c], b.s.n_attributes, b.s.tokens_per_phrase, category=quote(c))
                     for c in b.cats])
        if res is None:
            return False
        for q, raw in res:
            b.kn.attributes[q.cats[0]] = _attributes_of(b, raw, b.s.n_attributes)
    b.pools = {c: _interleave(b.kn.attributes.get(c, []), b.kn.common_attributes) for c in b.cats}
    return True


def _step_coarse_sentences(b: _Build) -> bool:
    """Pi2: sentences about a category from the angle of an attribute of its pool."""
    if not b.enabled("coarse_sentences"):
        return True
    asks = _round_robin({c: [([c], b.s.n_coarse_sentences, dict(category=quote(c), attribute=quote(a)))
                             for a in b.pools[c][:b.s.attributes_per_category]] for c in b.cats})
    return b.ask_sentences("coarse_sentences", "coarse", asks)


def _step_filter(b: _Build) -> bool:
    """Pi3: delete the attributes not very relevant to each category (kept: only listed ones)."""
    s, kn = b.s, b.kn
    if not b.enabled("filter"):
        kn.filtered_attributes = {c: b.pools[c][:s.n_keep] for c in b.cats}
        return True
    qs = [b.run.make("filter", [c], s.n_keep, s.tokens_per_phrase, category=quote(c),
                     attributes=", ".join(b.pools[c])) for c in b.cats if b.pools[c]]
    res = b.ask(qs)
    if res is None:
        return False
    for q, raw in res:
        c = q.cats[0]
        listed = {_key(a): a for a in b.pools[c]}
        kept = [listed[k] for k in map(_key, parse_phrases(raw, s.parse)) if k in listed]
        kn.filtered_attributes[c] = dedupe(kept)[:s.n_keep] or b.pools[c][:s.n_keep]
    return True


def _step_fine_sentences(b: _Build) -> bool:
    """Pi3: sentences from the angle of a fine (kept) attribute."""
    if not b.enabled("fine_sentences"):
        return True
    asks = _round_robin({c: [([c], b.s.n_fine_sentences, dict(category=quote(c), attribute=a))
                             for a in b.kn.filtered_attributes.get(c, [])[:b.s.fine_attributes_per_category]]
                         for c in b.cats})
    return b.ask_sentences("fine_sentences", "fine", asks)


def _step_scenes(b: _Build) -> bool:
    """Pi4: scene subgroups; `scene_fallback` when the answer yields none of two or more."""
    if not b.plan["scenes"]:
        return True
    kn, s = b.kn, b.s
    res = b.ask([b.run.make("scenes", list(b.cats), len(b.cats), 6, numbered=False, objects=b.objects,
                            count=len(b.cats))])
    if res is None:
        return False
    groups = [names for _, names in parse_groups(res[0][1], lambda t: mentions(t, b.cats, kn.synonyms),
                                               exclusive=False) if len(names) >= 2]
    kn.stats["scene_groups_source"] = "llm"
    if groups and s.scene_fallback == "super":
        added = _super_groups_for_uncovered(b, groups)
        if added:
            kn.stats["scene_groups_source"] = "llm+super"
        groups += added
    if not groups:
        kn.stats["scene_groups_source"] = s.scene_fallback
        if s.scene_fallback == "super":
            groups = _super_groups(b)
        if not groups:
            groups = [list(b.cats)]
    kn.scene_groups = groups[:len(b.cats)]  # at most one group per category (the progress plan's bound)
    return True


def _super_groups(b: _Build) -> list[list[str]]:
    """The categories grouped by super-category (groups of two or more)."""
    by: dict[str, list[str]] = {}
    for c in b.cats:
        if c in b.kn.super_of:
            by.setdefault(b.kn.super_of[c], []).append(c)
    return [g for g in by.values() if len(g) >= 2]


def _super_groups_for_uncovered(b: _Build, groups: list[list[str]]) -> list[list[str]]:
    """The super-category groups holding a category that no scene group of the answer names: an
    answer like "scene: bird, dog, horse" for twenty categories must not leave the other seventeen
    without scene sentences."""
    covered = {c for g in groups for c in g}
    return [g for g in _super_groups(b) if not set(g) <= covered]


def _step_scene_sentences(b: _Build) -> bool:
    """Pi5: per subgroup, sentences about a scene holding two of its categories."""
    s = b.s
    if not (b.enabled("scene_sentences") and b.kn.scene_groups):
        return True
    rng = random.Random(s.sampling.seed)
    pairs: list[tuple[str, str]] = []
    for g in b.kn.scene_groups:
        options = [p for p in combinations(g, 2) if p not in pairs]
        rng.shuffle(options)
        pairs += options[:s.pairs_per_group] if s.pairs_per_group is not None else options
    pairs = pairs[:s.max_scene_pairs] if s.max_scene_pairs is not None else pairs
    asks = [([a, c], s.n_scene_sentences, dict(category1=quote(a), category2=quote(c))) for a, c in pairs]
    return b.ask_sentences("scene_sentences", "scene", asks)


STEP_FUNCTIONS: tuple[Callable[[_Build], bool], ...] = (
    _step_synonyms, _step_super, _step_common, _step_attributes, _step_coarse_sentences,
    _step_filter, _step_fine_sentences, _step_scenes, _step_scene_sentences)


def _scene_pairs_bound(s: KnowledgeSettings, n: int) -> int:
    """Most scene pairs :func:`_step_scene_sentences` can ask about (at most n groups are used)."""
    bound = n * (n - 1) // 2
    if s.pairs_per_group is not None:
        bound = min(bound, s.pairs_per_group * n)
    return bound if s.max_scene_pairs is None else min(bound, s.max_scene_pairs)


def _plan(b: _Build) -> dict[str, int]:
    """The most questions each step can ask: fixed before the first question, so the progress
    total never moves (a step that asks fewer counts the rest as not needed)."""
    s, cats, on = b.s, b.cats, b.enabled
    n = len(cats)
    need_syn = [c for c in cats if not b.kn.synonyms[c]] if (on("synonyms") and s.n_synonyms > 0) else []
    pool = s.n_attributes * on("attributes") + s.n_common * on("common")
    coarse = min(pool, s.attributes_per_category) if s.attributes_per_category is not None else pool
    fine = min(s.n_keep, s.fine_attributes_per_category or s.n_keep)
    return {"synonyms": len(need_syn),
            "super": int(on("super") and any(c not in b.given_super for c in cats)),
            "common": int(on("common") and s.n_common > 0),
            "attributes": n if on("attributes") else 0,
            "coarse_sentences": n * coarse if on("coarse_sentences") else 0,
            "filter": n if on("filter") else 0,
            "fine_sentences": n * fine if on("fine_sentences") else 0,
            "scenes": int(on("scenes") and n > 1),
            "scene_sentences": _scene_pairs_bound(s, n) if on("scene_sentences") and n > 1 else 0}


def build_knowledge(categories: list[str], llm, settings: KnowledgeSettings | None = None,
                    cache: AnswerCache | None = None,
                    on_progress: Callable[[int, int, str], None] | None = None,
                    should_stop: Callable[[], bool] | None = None,
                    super_of: dict[str, str] | None = None,
                    synonyms: dict[str, list[str]] | None = None,
                    regenerate: Regenerate | None = None,
                    on_text: Callable[[str], None] | None = None) -> Knowledge:
    """Ask the LLM the paper's questions about `categories` and return gated, labelled sentences.

    llm: an engine.llm backend. cache: an AnswerCache (default: in-memory, nothing persists).
    on_progress(done, total, question_text) after every answer (cached ones too); `total` is fixed
    before the first question (each step's most questions); a step that needs fewer reports the
    rest as done, a gate re-ask reports `done` unchanged, and a finished run ends at done == total.
    should_stop(): polled before every question; when it returns True the run stops, every answer
    so far is in the cache, and the partial Knowledge comes back with cancelled=True.
    super_of / synonyms: given groups and names (a preset's); the LLM is asked only for the rest.
    regenerate: re-ask matching questions with a fresh seed (module docstring). on_text: streamed
    text of the answer being generated.
    """
    settings = settings or KnowledgeSettings()
    settings.validate()
    cache = cache if cache is not None else MemoryAnswerCache()
    cats = [clean_name(c, settings.name_max_chars) for c in categories]
    if not cats or any(not c for c in cats):
        raise ValueError("Give at least one category, each with a non-empty name.")
    if len(set(c.lower() for c in cats)) != len(cats):
        raise ValueError("Category names must be distinct (after removing quotes and control characters).")
    rename = dict(zip(categories, cats))
    given_super = {rename.get(k, k): v for k, v in (super_of or {}).items() if rename.get(k, k) in cats}
    given_syn = {rename.get(k, k): list(v) for k, v in (synonyms or {}).items() if rename.get(k, k) in cats}
    run = _Runner(llm, settings, cache, on_progress, should_stop, regenerate, on_text)
    kn = Knowledge(categories=cats, super_of=dict(given_super),
                   synonyms={c: list(given_syn.get(c, [])) for c in cats})
    b = _Build(run, kn, settings, cats, given_super, {})
    b.plan = _plan(b)
    run.set_plan(b.plan)
    for step in STEP_FUNCTIONS:
        if not step(b):
            return b.finish(True)
        run.skip_rest(step.__name__.removeprefix("_step_"))
    return b.finish(False)
