"""The questions and counts of the knowledge pipeline (engine.knowledge): one editable
`StepTemplate` per step, the paper's wording as default, and `KnowledgeSettings`.

The sentence questions ask for photo descriptions that name the category: the sentences are the
training set, and a sentence that does not name its category is rejected by the gate
(engine.sentence_gate), so asking for it up front wastes fewer answers. "Stands on its own ... never
"it"" is there because Qwen2.5-Coder-1.5B answered a numbered list as one paragraph ("It has four
wheels and a handle ..."): on a dev vocabulary (garden tools, not the benchmark's) its recorded
answers kept 0.79 of the sentences with the earlier wording and 0.88 with this one.

Each sentence question carries a worked example (`StepTemplate.example`): chat models first see the
same question asked about a school bus (or a dog and a frisbee) and three photo captions as their
own answer. Measured with Qwen2.5-Coder-1.5B on the benchmark's held-out kitchen vocabulary
(bench/bench_knowledge.py, 2026-11-30): the gate kept 0.48 of what it wrote with the example and
0.52 without, but read one by one, 19 of 20 kept sentences with it were photo captions ("A black
square colander is placed on the kitchen counter.") against 14 of 20 without ("When turned on, the
toaster quickly heats up, preparing sandwiches or toast within seconds."). On dev vocabularies the
kept share with it was 0.88 (bathroom; 0.44 without), 0.69 (workshop; 0.70 without) and 0.75
(garden) under that day's gate (the README has today's). Base models do not see it (their primer
is unchanged).

Tried and not adopted (2026-11-30): a caption wording for the coarse and scene questions ("Each
sentence is the caption of one photo ...: it says only what the camera sees ..., never what it is
good for or how it works"). On four dev vocabularies, two seeds each, the gate kept 0.85 of 171
sentences with it and 0.85 of 195 with the wording below.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from engine.llm import SamplingSettings
from engine.parsing import ParseSettings
from engine.sentence_gate import GateSettings

STEPS = ("synonyms", "super", "common", "attributes", "coarse_sentences", "filter",
         "fine_sentences", "scenes", "scene_sentences")


@dataclass(frozen=True)
class StepTemplate:
    """One question. `question` goes to chat models. Base models complete `primer` followed by
    `answer_start` and stop at `stop` (plus "\\n{n+1}." for numbered lists of n items).
    Fields: {category} {category1} {category2} {attribute} {attributes} {objects} {count} {n}.
    `example` (sentence steps only; "" for none): a worked answer that chat models see first, as
    their own answer to this question asked about `EXAMPLE_FIELDS[step]` (`example_question`)."""

    question: str
    primer: str
    answer_start: str = "1."
    stop: tuple[str, ...] = ("\n\n",)
    example: str = ""


#: What the worked example of a sentence step is about. No category of a preset is among them.
EXAMPLE_FIELDS = {
    "coarse_sentences": {"category": "school bus", "attribute": "color"},
    "fine_sentences": {"category": "school bus", "attribute": "windows"},
    "scene_sentences": {"category1": "dog", "category2": "frisbee"},
}


def example_question(step: str, template: StepTemplate) -> str:
    """The question the worked example answers: the step's question about EXAMPLE_FIELDS[step],
    asking for as many sentences as the example holds."""
    n = len([line for line in template.example.splitlines() if line.strip()])
    values = {k: "" for k in _FIELDS} | EXAMPLE_FIELDS[step] | {"n": n}
    return template.question.format(**values)


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
        'Each sentence describes what a photo of {category} shows. Each sentence stands on its own: it names '
        '{category} (never "it" or "its" instead). Answer with a numbered list of sentences only.',
        'Here are {n} different sentences describing a photo of {category}, from the angle of the {attribute}:\n',
        example="1. A yellow school bus waits at the curb while children climb aboard.\n"
                "2. A bright yellow school bus with black stripes drives down a tree-lined street.\n"
                "3. Two yellow school buses are parked side by side in an empty lot."),
    "filter": StepTemplate(
        'Attributes: {attributes}.\nPlease delete the above attribute words that are not very relevant to '
        '{category}. Finally, {n} attribute words remain. Answer with a numbered list of the remaining words.',
        'Attributes: {attributes}.\nThe {n} attributes from this list most relevant to {category}:\n'),
    "fine_sentences": StepTemplate(
        'Please write {n} different sentences describing the {attribute} of {category} as seen in a photo. '
        'Each sentence stands on its own: it names {category} (never "it" or "its" instead). '
        'Answer with a numbered list of sentences only.',
        'Here are {n} different sentences describing the {attribute} of {category} as seen in a photo:\n',
        example="1. A school bus has a long row of square windows along its side.\n"
                "2. Children wave through the open windows of a school bus.\n"
                "3. The windows of a parked school bus reflect the afternoon sun."),
    "scenes": StepTemplate(
        'Words: {objects}.\nCategorize the above words according to possible common occurrences in a scene. '
        'Answer with one line per scene, like "scene: word, word, word".',
        'Words: "fork", "cow", "plate", "grass", "tractor".\nThe words grouped by the scenes where they appear '
        'together:\nkitchen: fork, plate\nfarm: cow, grass, tractor\n\nWords: {objects}.\nThe words grouped by '
        'the scenes where they appear together:\n', ""),
    "scene_sentences": StepTemplate(
        'Please generate {n} different descriptive sentences for a scene containing {category1} and {category2}. '
        'Each sentence describes what a photo of the scene shows. Each sentence stands on its own: it names both '
        '{category1} and {category2} (never "it" or "its" instead). Answer with a numbered list of sentences only.',
        'Here are {n} different descriptive sentences of a photo of a scene containing {category1} and {category2}:\n',
        example="1. A brown dog leaps to catch a red frisbee in a sunny park.\n"
                "2. A man throws a frisbee while his dog runs after it on the beach.\n"
                "3. A dog lies on the grass with a chewed frisbee between its paws."),
}

VOCABULARY_STEPS = frozenset({"super", "common", "scenes"})
_FIELDS = {"category", "category1", "category2", "attribute", "attributes", "objects", "count", "n"}


@dataclass
class KnowledgeSettings:
    """Templates and counts. Defaults are CPU-sized (a 20-category vocabulary in minutes on two
    cores with the bundled model); `KnowledgeSettings.paper()` has the paper's counts.

    max_retries: when a sentence question yields fewer gate-kept sentences than asked for, it is
    asked again for the missing count with the next seed (sampling.seed + round), at most this many
    more times, so the counts set here are the counts delivered whenever the model can."""

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
    max_retries: int = 2
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    parse: ParseSettings = field(default_factory=ParseSettings)
    gate: GateSettings = field(default_factory=GateSettings)

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
            if t.example and step not in EXAMPLE_FIELDS:
                raise ValueError(f"The {step} question cannot have a worked example; only "
                                 f"{', '.join(EXAMPLE_FIELDS)} can.")
        if self.max_retries < 0:
            raise ValueError("max_retries must be 0 or more.")
        if self.scene_fallback not in ("super", "all"):
            raise ValueError("scene_fallback must be 'super' or 'all'.")


