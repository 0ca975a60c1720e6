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

import hashlib
import json
import os
import random
import re
import threading
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from itertools import combinations
from pathlib import Path
from typing import Callable, Iterable, Protocol

from engine.graph import label_sentence, mentions, variants  # noqa: F401
from engine.llm import Prompt, SamplingSettings
from engine.parsing import ParseSettings, _key, dedupe, parse_groups, parse_phrases, parse_sentences

STEPS = ("synonyms", "super", "common", "attributes", "coarse_sentences", "filter",
         "fine_sentences", "scenes", "scene_sentences")


@dataclass(frozen=True)
class StepTemplate:
    """One question. `question` goes to chat models. Base models complete `primer` followed by
    `answer_start` and stop at `stop` (plus "\\n{n+1}." for numbered lists of n items).
    Fields: {category} {category1} {category2} {attribute} {attributes} {objects} {count} {n}."""

    question: str
    primer: str
    answer_start: str = "1."
    stop: tuple[str, ...] = ("\n\n",)


DEFAULT_TEMPLATES: dict[str, StepTemplate] = {
    "synonyms": StepTemplate(
        'Give {n} other names or synonyms that people use for the object {category}. '
        'Answer with a comma-separated list of names only.',
        'Other names for "sofa": couch, settee, divan.\nOther names for "bicycle": bike, cycle.\n'
        'Other names for {category}:', "", ("\n",)),
    "super": StepTemplate(
        'Words: {objects}.\nGroup the above {count} words into a few super-categories by what they are '
        '(for example animal, vehicle, furniture). Answer with one line per super-category, like '
        '"super-category: word, word".',
        'Words: "apple", "hammer", "banana", "saw".\nThe words grouped by what they are:\n'
        'fruit: apple, banana\ntool: hammer, saw\n\nWords: {objects}.\nThe words grouped by what they are:\n', ""),
    "common": StepTemplate(
        'Words: {objects}.\nPlease summarize {n} attributes that may be common to the above {count} words. '
        'Answer with a numbered list of short visual attributes.',
        'Words: {objects}.\nA numbered list of {n} visual attributes common to these words:\n'),
    "attributes": StepTemplate(
        'Please summarize {n} visual attributes of {category}. Answer with a numbered list of short attributes.',
        'A numbered list of {n} visual attributes of {category}:\n'),
    "coarse_sentences": StepTemplate(
        'Please help me generate {n} different sentences about {category} from the angle of the {attribute}. '
        'Each sentence describes a photo. Answer with a numbered list.',
        'Here are {n} different sentences describing a photo of {category}, from the angle of the {attribute}:\n'),
    "filter": StepTemplate(
        'Attributes: {attributes}.\nPlease delete the above attribute words that are not very relevant to '
        '{category}. Finally, {n} attribute words remain. Answer with a numbered list of the remaining words.',
        'Attributes: {attributes}.\nThe {n} attributes from this list most relevant to {category}:\n'),
    "fine_sentences": StepTemplate(
        'Please write {n} different sentences describing the {attribute} of {category} as seen in a photo. '
        'Answer with a numbered list.',
        'Here are {n} different sentences describing the {attribute} of {category} as seen in a photo:\n'),
    "scenes": StepTemplate(
        'Words: {objects}.\nCategorize the above words according to possible common occurrences in a scene. '
        'Answer with one line per scene, like "scene: word, word, word".',
        'Words: "fork", "cow", "plate", "grass", "tractor".\nThe words grouped by the scenes where they appear '
        'together:\nkitchen: fork, plate\nfarm: cow, grass, tractor\n\nWords: {objects}.\nThe words grouped by '
        'the scenes where they appear together:\n', ""),
    "scene_sentences": StepTemplate(
        'Please generate {n} different descriptive sentences for a scene containing {category1} and {category2}. '
        'Answer with a numbered list.',
        'Here are {n} different descriptive sentences of a photo of a scene containing {category1} and {category2}:\n'),
}

VOCABULARY_STEPS = frozenset({"super", "common", "scenes"})
_FIELDS = {"category", "category1", "category2", "attribute", "attributes", "objects", "count", "n"}


@dataclass
class KnowledgeSettings:
    """Templates and counts. Defaults are CPU-sized (a 20-category vocabulary in minutes on two
    cores with the bundled model); `KnowledgeSettings.paper()` has the paper's counts."""

    templates: dict[str, StepTemplate] = field(default_factory=lambda: dict(DEFAULT_TEMPLATES))
    steps: tuple[str, ...] = STEPS
    n_synonyms: int = 3
    n_common: int = 5
    n_attributes: int = 5
    attributes_per_category: int | None = 2
    n_coarse_sentences: int = 3
    n_keep: int = 3
    fine_attributes_per_category: int | None = 2
    n_fine_sentences: int = 3
    pairs_per_group: int | None = 2
    max_scene_pairs: int | None = 10
    n_scene_sentences: int = 3
    scene_fallback: str = "super"
    tokens_per_phrase: int = 8
    tokens_per_sentence: int = 40
    tokens_overhead: int = 16
    name_max_chars: int = 40
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    parse: ParseSettings = field(default_factory=ParseSettings)

    @classmethod
    def paper(cls) -> "KnowledgeSettings":
        """The paper's counts (section 3.2): 90 common attributes, 100 sentences per question,
        70 attributes kept. The paper does not give n_2 (per-category attributes): 30 here. Every
        attribute and every pair of a subgroup is asked. Needs a long context (GPU or API)."""
        return cls(n_synonyms=5, n_common=90, n_attributes=30, attributes_per_category=None,
                   n_coarse_sentences=100, n_keep=70, fine_attributes_per_category=None,
                   n_fine_sentences=100, pairs_per_group=None, max_scene_pairs=None,
                   n_scene_sentences=100, sampling=SamplingSettings(max_tokens=6000))

    def validate(self) -> None:
        unknown = set(self.steps) - set(STEPS)
        if unknown:
            raise ValueError(f"Unknown knowledge steps {sorted(unknown)}; the steps are {', '.join(STEPS)}.")
        for step in STEPS:
            t = self.templates.get(step)
            if t is None:
                raise ValueError(f"The template for step {step!r} is missing.")
            for text in (t.question, t.primer):
                for name in re.findall(r"(?<!\{)\{([^{}]*)\}", text):
                    if name not in _FIELDS:
                        raise ValueError(f"The {step} template uses {{{name}}}; the fields are "
                                         f"{', '.join('{' + f + '}' for f in sorted(_FIELDS))}.")
        if self.scene_fallback not in ("super", "all"):
            raise ValueError("scene_fallback must be 'super' or 'all'.")


@dataclass
class Sentence:
    text: str
    labels: list[str]
    source: str          # "coarse" | "fine" | "scene"
    category: str        # the (first) category asked about
    asked: list[str] = field(default_factory=list)


@dataclass
class Answer:
    """One question and its answer: what the UI shows (raw beside parsed)."""

    key: str
    step: str
    categories: list[str]
    question: str
    raw: str
    items: list
    cached: bool
    meta: dict = field(default_factory=dict)


@dataclass
class Knowledge:
    categories: list[str] = field(default_factory=list)
    common_attributes: list[str] = field(default_factory=list)
    attributes: dict[str, list[str]] = field(default_factory=dict)
    filtered_attributes: dict[str, list[str]] = field(default_factory=dict)
    scene_groups: list[list[str]] = field(default_factory=list)
    super_of: dict[str, str] = field(default_factory=dict)
    synonyms: dict[str, list[str]] = field(default_factory=dict)
    sentences: list[Sentence] = field(default_factory=list)
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
        d["answers"] = [Answer(**a) for a in d.get("answers", [])]
        return cls(**d)


class AnswerCache(Protocol):
    """Where answers live. put() with an existing key replaces that entry."""

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, question: str, raw: str, items: list, meta: dict) -> None: ...


class JsonlAnswerCache:
    """Answers as JSON lines, appended, flushed and fsync'ed one by one: a kill loses at most the
    answer in flight. On load the last line per key wins; a torn last line (killed mid-write) is
    skipped."""

    def __init__(self, path: str | Path, fsync: bool = True):
        self.path = Path(path)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._rows: dict[str, dict] = {}
        if self.path.exists():
            with self.path.open("r", encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                        self._rows[row["key"]] = row
                    except (ValueError, KeyError, TypeError):
                        continue
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def get(self, key: str) -> str | None:
        row = self._rows.get(key)
        return None if row is None else row["raw"]

    def put(self, key: str, question: str, raw: str, items: list, meta: dict) -> None:
        row = {"key": key, "question": question, "raw": raw, "items": items, "meta": meta}
        line = json.dumps(row, ensure_ascii=False) + "\n"
        with self._lock:
            with self.path.open("a", encoding="utf-8") as f:
                if f.tell() > 0 and not self._ends_with_newline():
                    f.write("\n")
                f.write(line)
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
            self._rows[key] = row

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self) -> list[dict]:
        return list(self._rows.values())


def answer_key(model_id: str, prompt_text: str, sampling: SamplingSettings) -> str:
    """The cache key: sha256 over (model id, the exact prompt the model sees, sampling settings)."""
    blob = json.dumps({"model": model_id, "prompt": prompt_text, "sampling": sampling.to_dict()},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def clean_name(name: str, max_chars: int = 40) -> str:
    """A category name as data: no control characters, newlines or quotes, collapsed spaces, cut."""
    s = unicodedata.normalize("NFKC", str(name))
    s = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in s)
    s = re.sub(r"[\"'`“”‘’«»{}<>]", "", s)
    s = re.sub(r"\s+", " ", s).strip()
    return s[:max_chars].strip()


def quote(text: str) -> str:
    return f'"{text}"'


@dataclass(frozen=True)
class Regenerate:
    """Which questions to ask again (see module docstring). A question matches when its key is in
    `keys`, or when its step is in `steps` (empty: any) and it is about one of `categories`
    (empty: any). With `categories` set, the whole-vocabulary questions (super, common, scenes)
    never match, so regenerating one category does not re-ask (and cascade from) them; ask for
    those with `steps` alone. All three empty means nothing."""

    steps: frozenset = frozenset()
    categories: frozenset = frozenset()
    keys: frozenset = frozenset()

    def __init__(self, steps: Iterable[str] = (), categories: Iterable[str] = (), keys: Iterable[str] = ()):
        object.__setattr__(self, "steps", frozenset(steps))
        object.__setattr__(self, "categories", frozenset(categories))
        object.__setattr__(self, "keys", frozenset(keys))

    def matches(self, key: str, step: str, cats: list[str]) -> bool:
        if key in self.keys:
            return True
        if not self.steps and not self.categories:
            return False
        if self.categories and step in VOCABULARY_STEPS:
            return False  # a question about the whole vocabulary is not "about" one category
        return (not self.steps or step in self.steps) and (not self.categories or bool(self.categories & set(cats)))


@dataclass
class _Question:
    step: str
    cats: list[str]
    prompt: Prompt
    sampling: SamplingSettings
    shown: str
    key: str = ""


class _Runner:
    """Asks questions through the cache, reports progress, honours should_stop."""

    def __init__(self, llm, settings, cache, on_progress, should_stop, regenerate, on_text):
        self.llm, self.settings, self.cache = llm, settings, cache
        self.on_progress, self.should_stop = on_progress, should_stop or (lambda: False)
        self.regenerate = regenerate or Regenerate()
        self.on_text = on_text
        self.done = 0
        self.planned: dict[str, int] = {}
        self.answers: list[Answer] = []
        self.asked = 0
        self.cancelled = False
        self._regenerated: set[str] = set()
        self._record_lock = threading.Lock()

    def total(self) -> int:
        return self.done + sum(self.planned.values())

    def make(self, step: str, cats: list[str], n: int, per_item_tokens: int, numbered: bool = True,
             **fields) -> _Question:
        t = self.settings.templates[step]
        values = {k: "" for k in _FIELDS} | {"n": n} | fields
        question = t.question.format(**values)
        primer = t.primer.format(**values)
        stop = tuple(t.stop) + ((f"\n{n + 1}.",) if numbered and t.answer_start else ())
        prompt = Prompt.ask(question, primer=primer, answer_start=t.answer_start, stop=stop)
        budget = per_item_tokens * max(1, n) + self.settings.tokens_overhead
        sampling = replace(self.settings.sampling, max_tokens=min(self.settings.sampling.max_tokens, budget))
        if self.llm.is_chat:
            seen, shown = json.dumps(prompt.messages, ensure_ascii=False), question
        else:
            seen = json.dumps([primer + t.answer_start, list(stop)], ensure_ascii=False)
            shown = primer + t.answer_start
        q = _Question(step, cats, prompt, sampling, shown)
        q.key = answer_key(self.llm.id, seen, sampling)
        return q

    def ask_all(self, questions: list[_Question]) -> list[tuple[_Question, str]] | None:
        """Answers in question order, or None when cancelled (answers so far are cached)."""
        self.planned[questions[0].step if questions else "_"] = len(questions)
        results: dict[int, str] = {}
        todo = []
        for i, q in enumerate(questions):
            regen = self.regenerate.matches(q.key, q.step, q.cats) and q.key not in self._regenerated
            raw = None if regen else self.cache.get(q.key)
            if raw is not None:
                results[i] = raw
                self._record(q, raw, cached=True, meta={})
            else:
                todo.append((i, q, regen))
        workers = max(1, min(int(getattr(self.llm, "max_concurrency", 1)), len(todo) or 1))
        if workers == 1:
            for i, q, regen in todo:
                if self.should_stop():
                    self.cancelled = True
                    return None
                results[i] = self._generate(q, regen)
        else:
            results.update(self._ask_concurrently(todo, workers))
            if self.cancelled:
                return None
        self.planned.pop(questions[0].step if questions else "_", None)
        return [(q, results[i]) for i, q in enumerate(questions)]

    def _ask_concurrently(self, todo: list, workers: int) -> dict[int, str]:
        """Ask `todo` from `workers` threads (the backend's cap; its own adaptive limit decides how
        many are at the server at once). Each answer is cached as it arrives. should_stop() is
        polled before each question; the first error stops the questions not yet started and is
        raised once the ones in flight are done (their answers are cached)."""
        halt = threading.Event()
        results: dict[int, str] = {}

        def ask(i: int, q: _Question, regen: bool) -> None:
            if halt.is_set():
                return
            if self.should_stop():
                self.cancelled = True
                halt.set()
                return
            try:
                results[i] = self._generate(q, regen)
            except BaseException:
                halt.set()
                raise

        with ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(ask, i, q, regen) for i, q, regen in todo]
        for fut in futures:
            fut.result()  # re-raises the first error, if any
        return results

    def _generate(self, q: _Question, regen: bool) -> str:
        sampling = q.sampling
        meta = {"step": q.step, "categories": q.cats, "model": self.llm.id, "sampling": sampling.to_dict()}
        if regen:
            seed = random.SystemRandom().randrange(2 ** 31)
            sampling = replace(sampling, seed=seed)
            meta["regenerated_seed"] = seed
            self._regenerated.add(q.key)
        t0 = time.perf_counter()
        raw = self.llm.generate(q.prompt, sampling, on_text=self.on_text)
        meta["seconds"] = round(time.perf_counter() - t0, 3)
        meta["time"] = time.time()
        items = self._parse(q.step, raw)
        self.cache.put(q.key, q.shown, raw, items, meta)
        with self._record_lock:  # answers arrive from several threads: count and report one at a time
            self.asked += 1
            self._record(q, raw, cached=False, meta=meta, items=list(items))
        return raw

    def _parse(self, step: str, raw: str) -> list:
        if step in ("coarse_sentences", "fine_sentences", "scene_sentences"):
            return parse_sentences(raw, self.settings.parse)
        return parse_phrases(raw, self.settings.parse)

    def _record(self, q: _Question, raw: str, cached: bool, meta: dict, items: list | None = None) -> None:
        if items is None:
            items = self._parse(q.step, raw)
        self.answers.append(Answer(q.key, q.step, list(q.cats), q.shown, raw, items, cached, meta))
        self.done += 1
        key = q.step
        if self.planned.get(key, 0) > 0:
            self.planned[key] -= 1
        if self.on_progress:
            self.on_progress(self.done, self.total(), q.shown)


def _interleave(a: list[str], b: list[str]) -> list[str]:
    out = []
    for i in range(max(len(a), len(b))):
        out += ([a[i]] if i < len(a) else []) + ([b[i]] if i < len(b) else [])
    return dedupe(out)


def build_knowledge(categories: list[str], llm, settings: KnowledgeSettings | None = None,
                    cache: AnswerCache | None = None,
                    on_progress: Callable[[int, int, str], None] | None = None,
                    should_stop: Callable[[], bool] | None = None,
                    super_of: dict[str, str] | None = None,
                    synonyms: dict[str, list[str]] | None = None,
                    regenerate: Regenerate | None = None,
                    on_text: Callable[[str], None] | None = None) -> Knowledge:
    """Ask the LLM the paper's questions about `categories` and return labelled sentences.

    llm: an engine.llm backend. cache: an AnswerCache (default: in-memory, nothing persists).
    on_progress(done, total, question_text) after every answer (cached ones too); `total` is the
    best estimate so far (later steps' counts are known once earlier answers are in).
    should_stop(): polled before every question; when it returns True the run stops, every answer
    so far is in the cache, and the partial Knowledge comes back with cancelled=True.
    super_of / synonyms: given groups and names (a preset's); the LLM is asked only for the rest.
    regenerate: re-ask matching questions with a fresh seed (module docstring). on_text: streamed
    text of the answer being generated.
    """
    settings = settings or KnowledgeSettings()
    settings.validate()
    cache = cache if cache is not None else _MemoryCache()
    cats = [clean_name(c, settings.name_max_chars) for c in categories]
    if not cats or any(not c for c in cats):
        raise ValueError("Give at least one category, each with a non-empty name.")
    if len(set(c.lower() for c in cats)) != len(cats):
        raise ValueError("Category names must be distinct (after removing quotes and control characters).")
    rename = dict(zip(categories, cats))
    super_of = {rename.get(k, k): v for k, v in (super_of or {}).items() if rename.get(k, k) in cats}
    given_syn = {rename.get(k, k): list(v) for k, v in (synonyms or {}).items() if rename.get(k, k) in cats}
    s = settings
    run = _Runner(llm, s, cache, on_progress, should_stop, regenerate, on_text)
    kn = Knowledge(categories=cats, super_of=dict(super_of),
                   synonyms={c: list(given_syn.get(c, [])) for c in cats})
    objects = ", ".join(quote(c) for c in cats)
    enabled = set(s.steps)
    t_start = time.perf_counter()
    raw_sentences: list[tuple[str, str, str, list[str]]] = []  # text, source, category, asked

    def finish(cancelled: bool) -> Knowledge:
        kn.cancelled = cancelled
        kn.answers = run.answers
        seen = set()
        for text, source, cat, asked in raw_sentences:
            k = _key(text)
            if k in seen:
                continue
            seen.add(k)
            kn.sentences.append(Sentence(text, label_sentence(text, cats, kn.synonyms, asked), source, cat, asked))
        kn.stats = {"questions": len(run.answers), "asked": run.asked,
                    "cached": sum(a.cached for a in run.answers), "seconds": round(time.perf_counter() - t_start, 3),
                    "sentences": len(kn.sentences)}
        return kn

    # Rough plan for the progress total (refined as steps run).
    need_syn = [c for c in cats if not kn.synonyms[c]] if ("synonyms" in enabled and s.n_synonyms > 0) else []
    plan = {"synonyms": len(need_syn),
            "super": int("super" in enabled and any(c not in super_of for c in cats)),
            "common": int("common" in enabled and s.n_common > 0),
            "attributes": len(cats) if "attributes" in enabled else 0,
            "coarse_sentences": len(cats) * (s.attributes_per_category or s.n_attributes) if "coarse_sentences" in enabled else 0,
            "filter": len(cats) if "filter" in enabled else 0,
            "fine_sentences": len(cats) * (s.fine_attributes_per_category or s.n_keep) if "fine_sentences" in enabled else 0,
            "scenes": int("scenes" in enabled and len(cats) > 1),
            "scene_sentences": (s.max_scene_pairs or len(cats)) if "scene_sentences" in enabled and len(cats) > 1 else 0}
    run.planned.update({k: v for k, v in plan.items() if v})

    def step(questions, name=""):
        if not questions:
            run.planned.pop(name, None)  # nothing to ask: the progress total shrinks
            return []
        return run.ask_all(questions)

    # synonyms
    if need_syn:
        qs = [run.make("synonyms", [c], s.n_synonyms, s.tokens_per_phrase, numbered=False, category=quote(c))
              for c in need_syn]
        res = step(qs, "synonyms")
        if res is None:
            return finish(True)
        for q, raw in res:
            c = q.cats[0]
            own = variants(c)
            others = [o for o in cats if o != c]
            found = [p for p in parse_phrases(raw, s.parse, limit=s.n_synonyms)
                     if p.lower() not in own and len(p.split()) <= 3 and not mentions(p, others, None)
                     and not mentions(p, [c], None)]
            kn.synonyms[c] = dedupe(kn.synonyms[c] + found)
    # super-categories
    if plan["super"]:
        missing = [c for c in cats if c not in super_of]
        res = step([run.make("super", missing, len(missing), 6, numbered=False,
                             objects=", ".join(quote(c) for c in missing), count=len(missing))])
        if res is None:
            return finish(True)
        for title, names in parse_groups(res[0][1], lambda t: mentions(t, missing, kn.synonyms)):
            title = title.strip().lower()
            if title and title not in ("super-category", "super category", "category", "group"):
                for n in names:
                    kn.super_of.setdefault(n, title)
    # Pi1a common attributes
    if plan["common"]:
        res = step([run.make("common", list(cats), s.n_common, s.tokens_per_phrase, objects=objects, count=len(cats))])
        if res is None:
            return finish(True)
        kn.common_attributes = [a for a in parse_phrases(res[0][1], s.parse, limit=s.n_common)
                                if not mentions(a, cats, kn.synonyms)]
    # Pi1b per-category attributes
    if "attributes" in enabled:
        res = step([run.make("attributes", [c], s.n_attributes, s.tokens_per_phrase, category=quote(c)) for c in cats])
        if res is None:
            return finish(True)
        for q, raw in res:
            c = q.cats[0]
            kn.attributes[c] = [a for a in parse_phrases(raw, s.parse, limit=s.n_attributes)
                                if not mentions(a, cats, kn.synonyms)]
    pools = {c: _interleave(kn.attributes.get(c, []), kn.common_attributes) for c in cats}
    # Pi2 coarse attribute sentences
    if "coarse_sentences" in enabled:
        qs = [run.make("coarse_sentences", [c], s.n_coarse_sentences, s.tokens_per_sentence,
                       category=quote(c), attribute=quote(a))
              for c in cats for a in pools[c][:s.attributes_per_category]]
        run.planned["coarse_sentences"] = 0
        res = step(qs, "coarse_sentences")
        if res is None:
            return finish(True)
        for q, raw in res:
            raw_sentences += [(t, "coarse", q.cats[0], q.cats) for t in parse_sentences(raw, s.parse)]
    # Pi3 filtering
    if "filter" in enabled:
        qs = [run.make("filter", [c], s.n_keep, s.tokens_per_phrase, category=quote(c),
                       attributes=", ".join(pools[c])) for c in cats if pools[c]]
        res = step(qs, "filter")
        if res is None:
            return finish(True)
        for q, raw in res:
            c = q.cats[0]
            listed = {_key(a): a for a in pools[c]}
            kept = [listed[k] for k in map(_key, parse_phrases(raw, s.parse)) if k in listed]
            kn.filtered_attributes[c] = dedupe(kept)[:s.n_keep] or pools[c][:s.n_keep]
    else:
        kn.filtered_attributes = {c: pools[c][:s.n_keep] for c in cats}
    # Pi3 fine-grained sentences
    if "fine_sentences" in enabled:
        qs = [run.make("fine_sentences", [c], s.n_fine_sentences, s.tokens_per_sentence,
                       category=quote(c), attribute=a)
              for c in cats for a in kn.filtered_attributes.get(c, [])[:s.fine_attributes_per_category]]
        res = step(qs, "fine_sentences")
        if res is None:
            return finish(True)
        for q, raw in res:
            raw_sentences += [(t, "fine", q.cats[0], q.cats) for t in parse_sentences(raw, s.parse)]
    # Pi4 scene subgroups
    if plan["scenes"]:
        res = step([run.make("scenes", list(cats), len(cats), 6, numbered=False, objects=objects, count=len(cats))])
        if res is None:
            return finish(True)
        groups = [names for _, names in parse_groups(res[0][1], lambda t: mentions(t, cats, kn.synonyms),
                                                   exclusive=False) if len(names) >= 2]
        kn.stats["scene_groups_source"] = "llm"
        if not groups:
            kn.stats["scene_groups_source"] = s.scene_fallback
            if s.scene_fallback == "super":
                by: dict[str, list[str]] = {}
                for c in cats:
                    if c in kn.super_of:
                        by.setdefault(kn.super_of[c], []).append(c)
                groups = [g for g in by.values() if len(g) >= 2]
            if not groups:
                groups = [list(cats)]
        kn.scene_groups = groups
    # Pi5 scene sentences
    if "scene_sentences" in enabled and kn.scene_groups:
        rng = random.Random(s.sampling.seed)
        pairs: list[tuple[str, str]] = []
        for g in kn.scene_groups:
            options = [p for p in combinations(g, 2) if p not in pairs]
            rng.shuffle(options)
            pairs += options[:s.pairs_per_group] if s.pairs_per_group is not None else options
        pairs = pairs[:s.max_scene_pairs] if s.max_scene_pairs is not None else pairs
        qs = [run.make("scene_sentences", [a, b], s.n_scene_sentences, s.tokens_per_sentence,
                       category1=quote(a), category2=quote(b)) for a, b in pairs]
        run.planned.pop("scene_sentences", None)
        res = step(qs, "scene_sentences")
        if res is None:
            return finish(True)
        for q, raw in res:
            raw_sentences += [(t, "scene", q.cats[0], q.cats) for t in parse_sentences(raw, s.parse)]
    return finish(False)


class _MemoryCache:
    def __init__(self):
        self.rows: dict[str, str] = {}

    def get(self, key):
        return self.rows.get(key)

    def put(self, key, question, raw, items, meta):
        self.rows[key] = raw
