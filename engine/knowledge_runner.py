"""The shared runner of the knowledge steps (engine.knowledge): builds each question from its
template, asks it through the answer cache (engine.answer_cache), records the answer beside its
parsed items, reports progress, honours should_stop, and re-asks what `Regenerate` matches.

A question's cache key is `answer_key(model id, the exact prompt the model sees, sampling
settings)`; the sampler is seeded on every call, so an answer depends only on its key. A retry of a
sentence question (engine.knowledge, KnowledgeSettings.max_retries) uses the next seed, so it has a
key of its own and is resumable like any other question.
"""
from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Iterable

from engine.answer_cache import answer_key
from engine.knowledge_settings import _FIELDS, VOCABULARY_STEPS, example_question
from engine.llm import Prompt, SamplingSettings
from engine.parsing import parse_phrases, parse_sentences

SENTENCE_STEPS = ("coarse_sentences", "fine_sentences", "scene_sentences")


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
    retry: bool = False   # asked again with the next seed: the gate kept fewer sentences than asked for


class _Runner:
    """Asks questions through the cache, reports progress, honours should_stop.

    Progress is (done, total, text). ``total`` is fixed by :meth:`set_plan` before the first
    question: an upper bound on the questions each step asks. ``done`` counts planned questions
    answered (cached ones too) plus those a step turned out not to need (:meth:`skip_rest`), so it
    never passes ``total`` and equals it when the run ends. A gate re-ask (a question asked again
    because too few of its sentences were kept) is reported with ``done`` unchanged."""

    def __init__(self, llm, settings, cache, on_progress, should_stop, regenerate, on_text):
        self.llm, self.settings, self.cache = llm, settings, cache
        self.on_progress, self.should_stop = on_progress, should_stop or (lambda: False)
        self.regenerate = regenerate or Regenerate()
        self.on_text = on_text
        self.done = 0
        self.total = 0
        self.left: dict[str, int] = {}  # planned questions of each step not yet answered or skipped
        self.answers: list[Answer] = []
        self.asked = 0
        self.cancelled = False
        self.partial: list = []  # (question, raw or None) of the ask_all that was cancelled, in order
        self._regenerated: set[str] = set()
        self._record_lock = threading.Lock()

    def set_plan(self, plan: dict[str, int]) -> None:
        """Fix the progress total: ``plan`` is each step's most questions."""
        self.left = {k: v for k, v in plan.items() if v > 0}
        self.total = sum(self.left.values())

    def skip_rest(self, step: str) -> None:
        """The step is over: its planned questions not asked count as done (not needed)."""
        n = self.left.pop(step, 0)
        if n:
            self.done += n
            if self.on_progress:
                self.on_progress(self.done, self.total, f"{step}: {n} planned question(s) not needed")

    def make(self, step: str, cats: list[str], n: int, per_item_tokens: int, numbered: bool = True,
             seed_offset: int = 0, **fields) -> _Question:
        """The question of `step` about `cats` asking for `n` items; `seed_offset` > 0 for a retry."""
        t = self.settings.templates[step]
        values = {k: "" for k in _FIELDS} | {"n": n} | fields
        question = t.question.format(**values)
        primer = t.primer.format(**values)
        stop = tuple(t.stop) + ((f"\n{n + 1}.",) if numbered and t.answer_start else ())
        example = (example_question(step, t), t.example) if t.example else ()
        prompt = Prompt.ask(question, primer=primer, answer_start=t.answer_start, stop=stop, example=example)
        budget = per_item_tokens * max(1, n) + self.settings.tokens_overhead
        sampling = replace(self.settings.sampling, max_tokens=min(self.settings.sampling.max_tokens, budget))
        if seed_offset:
            sampling = replace(sampling, seed=sampling.seed + seed_offset)
        if self.llm.is_chat:
            seen, shown = json.dumps(prompt.messages, ensure_ascii=False), question
        else:
            seen = json.dumps([primer + t.answer_start, list(stop)], ensure_ascii=False)
            shown = primer + t.answer_start
        q = _Question(step, cats, prompt, sampling, shown, retry=seed_offset > 0)
        q.key = answer_key(self.llm.id, seen, sampling)
        return q

    def ask_all(self, questions: list[_Question]) -> list[tuple[_Question, str]] | None:
        """Answers in question order, or None when cancelled (answers so far are cached, and
        :attr:`partial` pairs every question with its answer or None, so a cancelled step can
        still use what came)."""
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
                    self.partial = [(q, results.get(i)) for i, q in enumerate(questions)]
                    return None
                results[i] = self._generate(q, regen)
        else:
            results.update(self._ask_concurrently(todo, workers))
            if self.cancelled:
                self.partial = [(q, results.get(i)) for i, q in enumerate(questions)]
                return None
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
        if step in SENTENCE_STEPS:
            return parse_sentences(raw, self.settings.parse)
        return parse_phrases(raw, self.settings.parse)

    def _record(self, q: _Question, raw: str, cached: bool, meta: dict, items: list | None = None) -> None:
        if items is None:
            items = self._parse(q.step, raw)
        self.answers.append(Answer(q.key, q.step, list(q.cats), q.shown, raw, items, cached, meta))
        shown = q.shown
        if q.retry:
            shown = f"(asked again: the gate kept too few sentences) {shown}"
        elif self.left.get(q.step, 0) > 0:
            self.left[q.step] -= 1
            self.done += 1
        if self.on_progress:
            self.on_progress(self.done, self.total, shown)
