"""Training on a bigger vocabulary than the one scored: borrow another project's or a preset's sentences.

The authors score VOC 2007 with the model they train on the COCO-80 corpus and take VOC's 20 columns
(METHOD.md section 7). Here a :class:`Vocabulary` (categories, their super-categories, hand-crafted
prompts, synonyms, and labelled sentences) absorbs others with :func:`borrow`:

* a borrowed category that matches one of ours - by name or by a synonym on either side, compared
  loosely (case, spaces, ``_``/``-`` ignored: COCO's "dining table" meets VOC's "diningtable",
  "airplane" meets "aeroplane" through VOC's synonym) - becomes ours: its sentences' labels are
  renamed to our category;
* any other borrowed category joins the training vocabulary with its own super-category, prompt and
  synonyms (it trains prompts, and is dropped again when scoring, :meth:`Classifier.select`);
* the borrowed sentences are appended after ours (labels renamed, duplicates of a text dropped).

The scored vocabulary stays ``own.categories``: train on the result, then
``classifier.select(own.categories, own.synonyms)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from engine.datasets import name_key
from engine.train import Corpus


@dataclass
class Vocabulary:
    """Categories with what training needs: super-categories, prompts, synonyms, labelled sentences."""

    categories: list[str]
    super_of: dict[str, str] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)
    synonyms: dict[str, list[str]] = field(default_factory=dict)
    corpus: Corpus = field(default_factory=lambda: Corpus([], []))
    name: str = ""

    def handcrafted(self, template: str = "a photo of a {}.") -> list[str]:
        """One hand-crafted prompt per category (its own, else ``template``)."""
        return [self.prompts.get(c) or template.format(c) for c in self.categories]

    @classmethod
    def from_knowledge(cls, categories, knowledge: dict, prompts=None, super_of=None, synonyms=None,
                       name: str = "") -> "Vocabulary":
        """From a knowledge dict (engine.presets ``knowledge_to_dict`` form): sentences with labels
        among ``categories`` (other labels dropped, unlabelled sentences skipped)."""
        cats = list(categories)
        known = set(cats)
        texts, labels = [], []
        for s in knowledge.get("sentences", []):
            labs = [lab for lab in s.get("labels", []) if lab in known]
            if labs and s.get("text", "").strip():
                texts.append(s["text"])
                labels.append(labs)
        syn = {c: list(v) for c, v in {**(knowledge.get("synonyms") or {}), **(synonyms or {})}.items()}
        return cls(cats, dict(super_of or knowledge.get("super_of") or {}), dict(prompts or {}), syn,
                   Corpus(texts, labels), name)


def _keys(name: str, synonyms: dict[str, list[str]]) -> list[str]:
    return [name_key(name)] + [name_key(s) for s in synonyms.get(name, []) if name_key(s)]


def match_categories(own: Vocabulary, other: Vocabulary) -> dict[str, str]:
    """{other category: our category} for the borrowed categories that are ours by name or synonym."""
    ours: dict[str, str] = {}
    for c in own.categories:  # names first, so a name always wins over another category's synonym
        ours.setdefault(name_key(c), c)
    for c in own.categories:
        for k in _keys(c, own.synonyms)[1:]:
            ours.setdefault(k, c)
    out = {}
    for b in other.categories:
        hit = next((ours[k] for k in _keys(b, other.synonyms) if k in ours), None)
        if hit is not None:
            out[b] = hit
    return out


def borrow(own: Vocabulary, *others: Vocabulary) -> Vocabulary:
    """``own`` grown by ``others``' categories and sentences (module docstring)."""
    cats, super_of = list(own.categories), dict(own.super_of)
    prompts, synonyms = dict(own.prompts), {c: list(v) for c, v in own.synonyms.items()}
    texts, labels = list(own.corpus.texts), [list(lab) for lab in own.corpus.labels]
    seen = set(texts)
    for other in others:
        rename = match_categories(Vocabulary(cats, synonyms=synonyms), other)
        for b in other.categories:
            if b in rename:
                continue
            rename[b] = b
            if b not in cats:
                cats.append(b)
                if other.super_of.get(b):
                    super_of[b] = other.super_of[b]
                if other.prompts.get(b):
                    prompts[b] = other.prompts[b]
                synonyms[b] = list(other.synonyms.get(b, []))
        for text, labs in zip(other.corpus.texts, other.corpus.labels):
            if text in seen:
                continue
            seen.add(text)
            texts.append(text)
            labels.append(list(dict.fromkeys(rename.get(lab, lab) for lab in labs)))
    name = " + ".join(v.name for v in (own, *others) if v.name)
    return Vocabulary(cats, super_of, prompts, synonyms, Corpus(texts, labels), name)
