"""The classifier artefact: two class-embedding matrices, their scoring, and the file they live in.

Once the prompts are tuned, the whole classifier is the global and local class-embedding matrices
(N x d, L2-normalised) plus the CLIP model they belong to (METHOD.md section 5, paper 3.5); an
image then costs one image-encoder pass.

Scoring (:meth:`Classifier.scores`), for an image's global feature I^G [d] and dense features
I^L [P, d] (all L2-normalised):

* S^G_i = cos(I^G, G_i)
* S^L_i = sum_j softmax_j(s_ij / t) * s_ij with s_ij = cos(L_i, I^L_j) over the dense positions j
  (an optional mask leaves positions out, e.g. padding when sentences are scored as images)
* fusion ``"softmax"`` (default; the authors' evaluation, METHOD.md section 7):
  S = lambda2 * softmax_over_classes(c * S^G) + (1 - lambda2) * softmax_over_classes(c * S^L) per
  image, c = ``fusion_scale`` = 4 (their fixed logit scale), lambda2 = 0.65 (paper 4.4). The per-image
  softmax changes how one class's scores rank ACROSS images (what mAP measures), not the order of
  classes within one image's branch. ``"linear"``: S = lambda2 * S^G + (1 - lambda2) * S^L on the raw
  cosines (this project's first behaviour).

``local_temperature`` t defaults to 1/40: TaI-DPT's evaluation scales the dense image similarities by
40 before the spatial softmax (``spatial_SCALE_image``; it uses 50 on text while training). TaI-DPT also
multiplies both scores by a constant logit scale before the per-class softmax (``fusion_scale``).

Image settings inference needs, stored with the classifier so that an image is prepared the way the
classifier expects: ``image_resize`` (``"squash"``: whole image resized to the input size, the
authors'; ``"center_crop"``) and ``dense_positional`` (ResNet dense features with the attention
pool's positional embedding; off, the authors'). See engine.clip_backbone.

The hand-crafted zero-shot baseline (:meth:`Classifier.from_prompts`) goes through the same code:
its class embeddings come from open_clip's ``build_zero_shot_classifier`` and serve as both the
global and the local matrix, fused with the same lambda2 (pass ``lambda2=1.0`` for CLIP's plain
global-only zero-shot score).

File format: ONE safetensors file, tensors ``global_emb`` and ``local_emb`` (float32 [N, d]) and a
metadata entry ``image_free_classifier`` holding JSON: format version, categories, model name,
lambda2, local temperature, fusion, fusion scale, image resize, dense positional, thresholds, free
``meta``. Version 2 added the four inference settings; a version-1 file still loads, with the
behaviour it was made for (linear fusion, centre crop, positional embedding on). Anything else - a
truncated file, a file of another program, a newer format - raises :class:`ClassifierFileError`
with one sentence.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from engine.errors import EngineError
from engine.storage.json_limits import JsonLimitError, JsonLimits, loads_limited

FORMAT_NAME = "image-free-studio/classifier"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
META_KEY = "image_free_classifier"
DEFAULT_LAMBDA2 = 0.65
DEFAULT_LOCAL_TEMPERATURE = 1.0 / 40.0
DEFAULT_FUSION_SCALE = 4.0
FUSIONS = ("softmax", "linear")
#: what a version-1 file meant (it stored none of these)
VERSION1_SETTINGS = {"fusion": "linear", "image_resize": "center_crop", "dense_positional": True}


class ClassifierFileError(EngineError, ValueError):
    """A classifier file that cannot be read (the message says why, in one sentence)."""


class ImageError(EngineError, ValueError):
    """An image that cannot be turned into pixels for the backbone."""


def local_scores(class_emb: torch.Tensor, dense: torch.Tensor, temperature: float,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """S^L [B, N] = sum_j softmax_j(s_ij / t) * s_ij over positions j of ``dense`` [B, P, d].

    ``class_emb`` [N, d] and ``dense`` are expected L2-normalised (so s_ij are cosines); ``mask``
    [B, P] bool keeps True positions only (every row needs at least one). Differentiable.
    """
    sims = torch.einsum("bpd,nd->bnp", dense, class_emb)  # [B, N, P]
    logits = sims / temperature
    if mask is not None:
        keep = mask[:, None, :].to(torch.bool)
        logits = logits.masked_fill(~keep, float("-inf"))
        sims = sims.masked_fill(~keep, 0.0)
    weights = torch.softmax(logits, dim=-1)
    return (weights * sims).sum(dim=-1)


def _unit_rows(x) -> torch.Tensor:
    """float32 CPU rows of unit length (left bit-for-bit alone when already unit, so files round-trip)."""
    x = torch.as_tensor(x).detach().float().cpu()
    if x.ndim == 2 and x.numel() and torch.allclose(x.norm(dim=-1), torch.ones(x.shape[0]), atol=1e-6):
        return x.contiguous()
    return F.normalize(x, dim=-1)


@dataclass
class Classifier:
    """Tuned (or hand-crafted) class embeddings plus everything needed to score and to save them."""

    categories: list[str]
    global_emb: torch.Tensor
    local_emb: torch.Tensor
    model_name: str
    lambda2: float = DEFAULT_LAMBDA2
    local_temperature: float = DEFAULT_LOCAL_TEMPERATURE
    thresholds: dict[str, float] | None = None
    meta: dict = field(default_factory=dict)
    fusion: str = "softmax"
    fusion_scale: float = DEFAULT_FUSION_SCALE
    image_resize: str = "squash"
    dense_positional: bool = False

    def __post_init__(self):
        self.categories = [str(c) for c in self.categories]
        self.global_emb = _unit_rows(self.global_emb)
        self.local_emb = _unit_rows(self.local_emb)
        n = len(self.categories)
        if n == 0:
            raise ValueError("A classifier needs at least one category.")
        if len(set(self.categories)) != n:
            raise ValueError("Category names of a classifier must be unique.")
        for name, emb in (("global_emb", self.global_emb), ("local_emb", self.local_emb)):
            if emb.ndim != 2 or emb.shape[0] != n:
                raise ValueError(f"{name} must be [{n}, d] for {n} categories, got {tuple(emb.shape)}.")
        if self.global_emb.shape != self.local_emb.shape:
            raise ValueError("global_emb and local_emb must have the same shape.")
        if not 0.0 <= float(self.lambda2) <= 1.0:
            raise ValueError(f"lambda2 must lie in [0, 1], got {self.lambda2}.")
        if not float(self.local_temperature) > 0:
            raise ValueError(f"local_temperature must be positive, got {self.local_temperature}.")
        self.lambda2 = float(self.lambda2)
        self.local_temperature = float(self.local_temperature)
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}.")
        if self.image_resize not in ("squash", "center_crop"):
            raise ValueError(f"image_resize must be 'squash' or 'center_crop', got {self.image_resize!r}.")
        if not float(self.fusion_scale) > 0:
            raise ValueError(f"fusion_scale must be positive, got {self.fusion_scale}.")
        self.fusion_scale = float(self.fusion_scale)
        self.dense_positional = bool(self.dense_positional)
        if self.thresholds:
            unknown = sorted(set(self.thresholds) - set(self.categories))
            if unknown:
                raise ValueError(f"Thresholds for unknown categories: {', '.join(unknown)}.")
            self.thresholds = {k: float(v) for k, v in self.thresholds.items()}
        self.meta = dict(self.meta or {})

    @property
    def embed_dim(self) -> int:
        return int(self.global_emb.shape[1])

    # ---- scoring ---------------------------------------------------------------------------------
    def score_parts(self, glob: torch.Tensor, dense: torch.Tensor,
                    mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(S^G [B, N], S^L [B, N]) for global [B, d] and dense [B, P, d] features (normalised here)."""
        if glob.ndim != 2 or dense.ndim != 3 or glob.shape[0] != dense.shape[0]:
            raise ValueError(f"Expected glob [B, d] and dense [B, P, d], got {tuple(glob.shape)} and "
                             f"{tuple(dense.shape)}.")
        if glob.shape[-1] != self.embed_dim or dense.shape[-1] != self.embed_dim:
            raise ValueError(f"Features have dimension {glob.shape[-1]}, but this classifier's embeddings "
                             f"have {self.embed_dim} ({self.model_name}); use the CLIP model it was made for.")
        dev = glob.device
        glob = F.normalize(glob.float(), dim=-1)
        dense = F.normalize(dense.float(), dim=-1)
        s_g = glob @ self.global_emb.to(dev).T
        s_l = local_scores(self.local_emb.to(dev), dense, self.local_temperature,
                           None if mask is None else mask.to(dev))
        return s_g, s_l

    def scores(self, glob: torch.Tensor, dense: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Fused scores [B, N] (see the module docstring: ``fusion``)."""
        return fuse_scores(*self.score_parts(glob, dense, mask), self.lambda2, self.fusion, self.fusion_scale)

    def image_settings(self) -> dict:
        """How images must be prepared for this classifier: ``{"image_resize", "dense_positional"}``."""
        return {"image_resize": self.image_resize, "dense_positional": self.dense_positional}

    def select(self, categories: Sequence[str], aliases: dict[str, Sequence[str]] | None = None) -> "Classifier":
        """A classifier over ``categories`` only, taken from this (bigger) one's rows.

        A wanted category matches a row by name or by one of its ``aliases`` (synonyms), compared
        loosely (case, spaces, ``_``/``-`` ignored: "dining table" meets "diningtable"). Unmatched
        names raise ValueError naming them. Used to score a vocabulary with a model trained on a
        bigger one (the authors score VOC with their COCO-80 model, METHOD.md section 7).
        """
        from engine.datasets import name_key

        index = {name_key(c): i for i, c in enumerate(self.categories)}
        rows, missing = [], []
        for c in categories:
            keys = [name_key(c)] + [name_key(a) for a in (aliases or {}).get(c, [])]
            hit = next((index[k] for k in keys if k in index), None)
            (missing.append(c) if hit is None else rows.append(hit))
        if missing:
            raise ValueError(f"Categories not in this classifier (by name or synonym): {', '.join(missing)}.")
        th = {c: self.thresholds[self.categories[r]] for c, r in zip(categories, rows)
              if self.thresholds and self.categories[r] in self.thresholds}
        meta = dict(self.meta, selected_from=list(self.categories))
        return Classifier(list(categories), self.global_emb[rows], self.local_emb[rows], self.model_name,
                          self.lambda2, self.local_temperature, th or None, meta, self.fusion,
                          self.fusion_scale, self.image_resize, self.dense_positional)

    def predict_labels(self, scores_row: torch.Tensor, k: int | None = 3) -> list[tuple[str, float]]:
        """Labels of one image: its top-k categories, or (k=None) every category at or above its
        threshold; with both, the top-k that pass their thresholds. Categories without a threshold
        pass any score when k is given and never pass when k is None."""
        row = torch.as_tensor(scores_row).detach().float().cpu().reshape(-1)
        ranked = top_k(row, self.categories, len(self.categories) if k is None else k)
        th = self.thresholds or {}
        if k is None:
            return [(c, s) for c, s in ranked if c in th and s >= th[c]]
        return [(c, s) for c, s in ranked if c not in th or s >= th[c]]

    # ---- construction ----------------------------------------------------------------------------
    @classmethod
    def from_prompts(cls, backbone, categories: Sequence[str], prompt_texts=None, *,
                     lambda2: float = DEFAULT_LAMBDA2, local_temperature: float = DEFAULT_LOCAL_TEMPERATURE,
                     templates: Sequence[str] = ("a photo of a {}.",), thresholds=None,
                     **inference) -> "Classifier":
        """The hand-crafted zero-shot baseline, built with open_clip's ``build_zero_shot_classifier``.

        ``prompt_texts``: one entry per category, a prompt string or a list of prompts (averaged, as
        prompt ensembles are); None = ``templates`` formatted with each category name.
        ``inference``: ``fusion``, ``fusion_scale``, ``image_resize``, ``dense_positional`` (defaults:
        the authors'; pass a tuned classifier's :meth:`inference_settings` to score alike).
        """
        from open_clip.zero_shot_classifier import build_zero_shot_classifier

        categories = [str(c) for c in categories]
        if prompt_texts is None:
            table = [[t.format(c) for t in templates] for c in categories]
        else:
            if len(prompt_texts) != len(categories):
                raise ValueError(f"{len(prompt_texts)} prompts for {len(categories)} categories.")
            table = [[p] if isinstance(p, str) else list(p) for p in prompt_texts]
            if any(not row or any(not str(p).strip() for p in row) for row in table):
                raise ValueError("Every category needs a non-empty hand-crafted prompt.")
        index = {c: i for i, c in enumerate(categories)}

        def build(names, count):
            tmpl = [(lambda c, j=j: table[index[c]][j]) for j in range(count)]
            w = build_zero_shot_classifier(backbone.model, backbone.tokenizer, names, tmpl,
                                           num_classes_per_batch=32, device=backbone.device)
            return w.T.float().cpu()  # [n, d]

        counts = {len(row) for row in table}
        if len(counts) == 1:
            emb = build(categories, counts.pop())
        else:  # ragged ensembles: one category at a time
            emb = torch.cat([build([c], len(table[i])) for i, c in enumerate(categories)])
        return cls(categories, emb, emb.clone(), backbone.name, lambda2=lambda2,
                   local_temperature=local_temperature, thresholds=thresholds,
                   meta={"kind": "handcrafted", "prompts": table}, **inference)

    def inference_settings(self) -> dict:
        """The scoring settings (fusion, fusion_scale, image_resize, dense_positional) as keywords."""
        return {"fusion": self.fusion, "fusion_scale": self.fusion_scale, **self.image_settings()}

    # ---- file ------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write one safetensors file (atomically: a temporary file renamed into place)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {
            "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
            "categories": self.categories, "model_name": self.model_name,
            "lambda2": self.lambda2, "local_temperature": self.local_temperature,
            **self.inference_settings(),
            "thresholds": self.thresholds or {}, "embed_dim": self.embed_dim, "meta": self.meta,
        }
        try:
            text = json.dumps(header, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as err:
            raise ValueError(f"Classifier metadata must be plain JSON: {err}") from err
        tmp = path.with_name(path.name + ".tmp")
        save_file({"global_emb": self.global_emb.contiguous().clone(), "local_emb": self.local_emb.contiguous().clone()},
                  str(tmp), metadata={META_KEY: text})
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Classifier":
        """Read a file written by :meth:`save`; anything else raises :class:`ClassifierFileError`."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise ClassifierFileError(f"Classifier file {path} does not exist.")
        try:
            with safe_open(str(path), framework="pt") as f:
                raw_meta = (f.metadata() or {}).get(META_KEY)
                names = set(f.keys())
                tensors = {k: f.get_tensor(k) for k in ("global_emb", "local_emb") if k in names}
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise ClassifierFileError(
                f"{path} is not a readable classifier file (truncated, damaged or not safetensors: {err})."
            ) from err
        if raw_meta is None or len(tensors) != 2:
            raise ClassifierFileError(
                f"{path} is a safetensors file but not an Image-Free Studio classifier (no classifier metadata)."
            )
        try:
            header = loads_limited(raw_meta, JsonLimits(max_depth=64))
            if header.get("format") != FORMAT_NAME:
                raise ValueError("unknown format")
        except JsonLimitError as err:
            raise ClassifierFileError(f"{path} has classifier metadata beyond this program's limits: {err}") from err
        except (ValueError, AttributeError) as err:
            raise ClassifierFileError(f"{path} has damaged or foreign classifier metadata.") from err
        version = header.get("format_version")
        if version not in READABLE_VERSIONS:
            raise ClassifierFileError(
                f"{path} uses classifier format version {version}; this program reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}."
            )
        settings = dict(VERSION1_SETTINGS) if version == 1 else {
            k: header[k] for k in ("fusion", "fusion_scale", "image_resize", "dense_positional") if k in header}
        try:
            return cls(header["categories"], tensors["global_emb"], tensors["local_emb"], header["model_name"],
                       lambda2=header["lambda2"], local_temperature=header["local_temperature"],
                       thresholds=header.get("thresholds") or None, meta=header.get("meta") or {}, **settings)
        except (KeyError, TypeError, ValueError) as err:
            raise ClassifierFileError(f"{path} holds an inconsistent classifier ({err}).") from err


def fuse_scores(s_g: torch.Tensor, s_l: torch.Tensor, lambda2: float, fusion: str = "softmax",
                scale: float = DEFAULT_FUSION_SCALE) -> torch.Tensor:
    """S [B, N] from S^G and S^L [B, N]: ``"softmax"`` = lambda2 * softmax_N(scale * S^G) +
    (1 - lambda2) * softmax_N(scale * S^L), each row (image) on its own; ``"linear"`` = lambda2 * S^G
    + (1 - lambda2) * S^L."""
    if fusion == "softmax":
        s_g, s_l = torch.softmax(scale * s_g, dim=-1), torch.softmax(scale * s_l, dim=-1)
    elif fusion != "linear":
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}.")
    return lambda2 * s_g + (1.0 - lambda2) * s_l


def top_k(scores_row, categories: Sequence[str], k: int) -> list[tuple[str, float]]:
    """The k highest-scoring (category, score) pairs of one row, best first (ties: lower index)."""
    row = torch.as_tensor(scores_row).detach().float().cpu().reshape(-1)
    if row.numel() != len(categories):
        raise ValueError(f"{row.numel()} scores for {len(categories)} categories.")
    k = max(0, min(int(k), row.numel()))
    values = row.numpy()
    order = np.argsort(-values, kind="stable")[:k]  # stable: ties keep the lower index first
    return [(categories[i], float(values[i])) for i in order]


def _pixels(backbone, images, resize: str = "squash") -> torch.Tensor:
    out = []
    transform = backbone.image_transform(resize)
    for n, img in enumerate(images):
        try:
            if getattr(img, "mode", "RGB") != "RGB":
                img = img.convert("RGB")
            out.append(transform(img))
        except Exception as err:  # PIL decode errors come in many types
            raise ImageError(f"Image {n} cannot be prepared for {backbone.name}: {err}") from err
    return torch.stack(out)


@torch.no_grad()
def score_images(backbone, classifier: Classifier, images: Sequence, batch_size: int = 32) -> torch.Tensor:
    """Fused scores [B, N] (CPU float32) of PIL images; an unusable image raises :class:`ImageError`."""
    if classifier.model_name != backbone.name:
        raise ValueError(f"The classifier was made for {classifier.model_name}, not {backbone.name}.")
    parts = []
    images = list(images)
    for start in range(0, len(images), batch_size):
        pixels = _pixels(backbone, images[start:start + batch_size], classifier.image_resize)
        glob, dense = backbone.image_features(pixels, dense_positional=classifier.dense_positional)
        parts.append(classifier.scores(glob, dense).float().cpu())
    if not parts:
        return torch.zeros(0, len(classifier.categories))
    return torch.cat(parts)



def image_transform_for(backbone, classifiers: dict):
    """The image transform the classifiers ask for (they must agree on ``image_resize``): what the
    local loader and the Ray path's decode tasks both prepare pixels with."""
    modes = {clf.image_resize for clf in classifiers.values()}
    if len(modes) > 1:
        raise ValueError("Classifiers scored in one pass must prepare images alike (image_resize); score them apart.")
    return backbone.image_transform(modes.pop() if modes else "squash")


def stream_image_scores(backbone, classifiers: dict, files: Sequence, loader=None, should_stop=None):
    """Yield ``(indices, {name: scores [b, N] float32 CPU}, failures)`` per batch of image files, in
    file order. Images decode in DataLoader workers (engine.datasets.image_loader) with the transform
    the classifiers ask for (:meth:`Classifier.image_settings`; classifiers scored together must
    agree on ``image_resize``); engine.batch_scoring.score_pixels feeds every classifier from one
    image-encoder pass."""
    from engine.batch_scoring import score_pixels
    from engine.datasets import image_loader

    transform = image_transform_for(backbone, classifiers)
    dl = image_loader(files, transform, loader, pin_memory=backbone.device.type == "cuda")
    with torch.inference_mode():
        for batch in dl:
            scores = {} if batch.pixels is None else score_pixels(backbone, classifiers, batch.pixels)
            yield batch.indices, scores, batch.failures
            if should_stop is not None and should_stop():
                return
