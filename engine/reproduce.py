"""Reproduce the paper's table: train with the paper's settings on the shipped preset knowledge, then
score the test split with the tuned classifier and the hand-crafted baseline, beside the published
figures (METHOD.md section 8).

``python -m engine reproduce voc2007|coco --data PATH [--knowledge PROJECT]`` runs
:func:`reproduce`. What it does, in order:

1. Vocabulary (engine.vocabulary): the preset's categories, super-categories, hand-crafted prompts
   and synonyms, with the preset's generated sentences (or a project's, ``knowledge``). For VOC 2007
   the COCO preset's sentences are borrowed too, as the authors score VOC with their COCO-80 model
   (``borrow_coco``): COCO's "airplane", "couch", "tv", ... train VOC's "aeroplane", "sofa",
   "tvmonitor" through VOC's synonyms, COCO's other 60 categories train with their own prompts.
2. Prompt structure: super-categories from the preset, fine groups = maximal cliques of the
   sentences' co-occurrence graph at ``tau`` (engine.graph).
3. Training: ``TrainConfig()`` - the paper's and the authors' settings (engine.train) - on the
   backbone (default CLIP RN50 with OpenAI weights, 224 px: downloaded by open_clip on a connected
   machine, or a local file; see engine.clip_backbone).
4. Evaluation on the test split: VOC ``ImageSets/Main/test.txt`` with difficult objects left out,
   or COCO's instances JSON (val2014 in the paper); mAP and top-3 F1 (engine.metrics) of the tuned
   classifier (restricted to the scored categories) and of the hand-crafted zero-shot baseline,
   both through the same image pass and the same inference settings.
5. :meth:`ReproduceResult.table`: this run's rows above the paper's, with wall time and device.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from engine.classifier import Classifier, stream_image_scores
from engine.datasets import DatasetError, LoaderSettings, VocOptions, read_coco, read_voc
from engine.errors import EngineError
from engine.graph import build_graph, cooccurrence, maximal_cliques
from engine.metrics import evaluate_scores
from engine.presets import load_preset, load_preset_knowledge
from engine.prompts import PromptStructure
from engine.train import TrainConfig, train
from engine.vocabulary import Vocabulary, borrow

DATASETS = ("voc2007", "coco")

#: METHOD.md section 8 (CLIP RN50, 224 px): {row: {dataset: (mAP, F1@3 or None)}}
PAPER = {
    "hand-crafted zero-shot (paper's prompts)": {"voc2007": (88.4, 52.1), "coco": (67.7, 45.4)},
    "TaI-DPT (captions)": {"voc2007": (88.3, None), "coco": (65.1, None)},
    "TaI++ (LLM pseudo-captions)": {"voc2007": (90.0, None), "coco": (70.8, None)},
    "the paper (hierarchical, ChatGLM)": {"voc2007": (90.4, 58.5), "coco": (72.1, 56.4)},
}


class ReproduceError(EngineError, ValueError):
    """Bad input to a reproduction (the message says what to fix)."""


@dataclass
class ReproduceResult:
    dataset: str
    results: dict  # {"tuned": evaluate_scores dict, "handcrafted": ...}
    num_images: int
    failures: list
    train_sentences: int
    train_categories: int
    steps: int
    wall_s: float
    device: str
    backbone: str
    classifier: Classifier | None = field(default=None, repr=False)

    def table(self) -> str:
        """This run's mAP and top-3 overall F1 beside the paper's figures (plain text)."""
        lines = [f"{self.dataset}: {self.num_images} test images, {self.backbone} on {self.device}, "
                 f"trained {self.steps} steps on {self.train_sentences} sentences over {self.train_categories} "
                 f"categories; wall {self.wall_s:.0f} s",
                 f"{'':<44}{'mAP':>8}{'F1@3 (OF1)':>12}"]
        fmt = lambda v: "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.1f}"
        for name, key in (("this run: hand-crafted zero-shot", "handcrafted"), ("this run: tuned prompts", "tuned")):
            r = self.results[key]
            lines.append(f"{name:<44}{fmt(r['mAP']):>8}{fmt(r['OF1']):>12}")
        for name, figures in PAPER.items():
            m, f1 = figures[self.dataset]
            lines.append(f"{'paper: ' + name:<44}{fmt(m):>8}{fmt(f1):>12}")
        if self.failures:
            lines.append(f"{len(self.failures)} images could not be read and were left out (first: "
                         f"{self.failures[0][0]}: {self.failures[0][1]})")
        return "\n".join(lines)


def preset_vocabulary(key: str, knowledge: dict | None = None) -> Vocabulary:
    """The preset's vocabulary with its shipped knowledge (or ``knowledge``, same dict form)."""
    preset = load_preset(key)
    data = knowledge if knowledge is not None else load_preset_knowledge(key)
    if data is None:
        raise ReproduceError(f"The {key} preset has no generated knowledge; generate it or pass a project's.")
    return Vocabulary.from_knowledge(preset.categories, data, prompts=preset.prompts, super_of=preset.super_of,
                                     synonyms=preset.synonyms, name=key)


def training_vocabulary(dataset: str, knowledge: Vocabulary | None = None, borrow_coco: bool = True):
    """(scored vocabulary, training vocabulary) for ``dataset`` (module docstring, step 1)."""
    if dataset not in DATASETS:
        raise ReproduceError(f"Unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}.")
    scored = preset_vocabulary(dataset, None if knowledge is None else {"sentences": []})
    trained = scored if knowledge is None else borrow(scored, knowledge)  # a project's extra categories train
    if dataset == "voc2007" and borrow_coco:
        trained = borrow(trained, preset_vocabulary("coco"))
    if not trained.corpus.texts:
        raise ReproduceError("The knowledge has no labelled sentence for these categories.")
    return scored, trained


def prompt_structure(vocab: Vocabulary, tau: int = 3) -> PromptStructure:
    """Super-categories from the vocabulary, cliques of its sentences' co-occurrence graph at ``tau``."""
    graph = build_graph(cooccurrence(vocab.corpus.labels, vocab.categories), vocab.categories, tau)
    return PromptStructure(vocab.categories, vocab.super_of, maximal_cliques(graph))


def labelled_test_split(dataset: str, data: str | Path, vocab: Vocabulary):
    """The labelled test images: a VOC 2007 folder (or its VOCdevkit parent), or a COCO instances
    JSON / a folder holding ``annotations/instances_val2014.json`` (or val2017)."""
    path = Path(data)
    if not path.exists():
        raise ReproduceError(f"{path} does not exist.")
    if dataset == "voc2007":
        root = path if (path / "Annotations").is_dir() else path / "VOC2007"
        if not (root / "Annotations").is_dir():
            raise ReproduceError(f"{path} is not a VOC 2007 folder (no Annotations/ in it or in VOC2007/).")
        return read_voc(root, vocab.categories, VocOptions(split="test", include_difficult=False), vocab.synonyms)
    if path.is_dir():
        found = [path / "annotations" / f"instances_{s}.json" for s in ("val2014", "val2017")]
        found = [p for p in found if p.exists()]
        if not found:
            raise ReproduceError(f"{path} holds no annotations/instances_val2014.json (or val2017).")
        path = found[0]
    return read_coco(path, None, vocab.categories, vocab.synonyms)


def prepare(dataset: str, data: str | Path, knowledge: Vocabulary | None = None, borrow_coco: bool = True):
    """(scored vocabulary, training vocabulary, labelled test split): everything read before any
    model is loaded, so that bad input fails at once."""
    scored, trained = training_vocabulary(dataset, knowledge, borrow_coco)
    try:
        labelled = labelled_test_split(dataset, data, scored)
    except DatasetError as err:
        raise ReproduceError(str(err)) from err
    if not len(labelled):
        raise ReproduceError(f"{data} lists no test images.")
    return scored, trained, labelled


def reproduce(dataset: str, data: str | Path, backbone, knowledge: Vocabulary | None = None,
              config: TrainConfig | None = None, borrow_coco: bool = True, tau: int = 3,
              loader: LoaderSettings | None = None, on_step: Callable | None = None,
              log: Callable[[str], None] = lambda s: None, prepared=None) -> ReproduceResult:
    """Train and evaluate as the module docstring says; ``backbone`` from engine.clip_backbone;
    ``prepared``: what :func:`prepare` returned for the same arguments (else it is called here)."""
    t0 = time.perf_counter()
    scored, trained, labelled = prepared or prepare(dataset, data, knowledge, borrow_coco)
    config = config or TrainConfig()
    log(f"training on {len(trained.corpus.texts)} sentences, {len(trained.categories)} categories "
        f"({trained.name}), {backbone.name}")
    result = train(backbone, prompt_structure(trained, tau), trained.handcrafted(), trained.corpus, config,
                   on_step=on_step)
    tuned = result.classifier.select(scored.categories, scored.synonyms)
    baseline = Classifier.from_prompts(backbone, scored.categories, scored.handcrafted(),
                                       lambda2=tuned.lambda2, local_temperature=tuned.local_temperature,
                                       **tuned.inference_settings())
    log(f"scoring {len(labelled)} test images")
    classifiers = {"tuned": tuned, "handcrafted": baseline}
    parts: dict[str, list] = {k: [] for k in classifiers}
    kept, failures = [], []
    for indices, scores, fails in stream_image_scores(backbone, classifiers, labelled.images, loader):
        kept.extend(indices)
        for k, v in scores.items():
            parts[k].append(v.numpy())
        failures.extend((str(labelled.images[i]), err) for i, err in fails)
    if not kept:
        raise ReproduceError(f"None of the {len(labelled)} test images could be read.")
    targets = labelled.targets[kept]
    results = {k: evaluate_scores(np.concatenate(v), targets, scored.categories) for k, v in parts.items()}
    return ReproduceResult(dataset, results, len(kept), failures, len(trained.corpus.texts), len(trained.categories),
                           len(result.history), time.perf_counter() - t0, str(backbone.device), backbone.name, tuned)
