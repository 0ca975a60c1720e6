"""Tune the global and local hierarchical prompts on frozen description features.

METHOD.md sections 3-4 and 7, paper sections 3.3-3.4. Every point where this project once departed
from the authors' code (shuoyang129/image-free-multi-label-image-recognition, ``models/baseline.py``,
``utils/trainers_baseline.py``) is a setting whose DEFAULT is the authors' choice; the other value
is the earlier behaviour. One step, for a batch of sentences:

1. Description features are frozen: every sentence's global (EOS) and local (every token) features
   are computed ONCE by ``backbone.text_features`` and cached (:func:`description_features`: in
   memory, and on disk when ``TrainConfig.feature_cache_dir`` is set, keyed by the backbone name and
   a hash of the texts).
2. Noise (paper eq. 7 and 10): xi ~ N(0, ``noise_std``^2) per component, fresh every step, added to
   the L2-normalised global and token features. Default 0.1 and NOT normalised again
   (``noise_renormalize=False``), the authors'; the earlier 0.02 + renormalise was ~6x weaker on the
   scores.
3. Class embeddings (:meth:`Trainer.class_embeddings`): both prompt sets go through the frozen text
   encoder (:class:`PromptEncoder`, ``config.method``). ``hand_residual``:
   ``"sum"`` (default, the authors'): E_i = normalise(enc(learned_i) + enc(hand_i).detach()), the two
   UNNORMALISED projected EOS features summed, in both branches; ``"anchored"`` (ours):
   normalise(enc(learned_i) - enc(learned_i at step 0) + enc(hand_i)), which starts EXACTLY at the
   zero-shot classifier (the authors' sum starts between it and the random prompts' encoding);
   ``"off"``: normalise(enc(learned_i)) (the earlier behaviour).
   ``local_prompt``: ``"shared"`` (default, the authors'): the local set is one context of
   ``layout.total`` tokens shared by every category, so all rows share a 33-token prefix and the
   prefix encoder encodes it once; ``"hierarchical"``: the local set has the global layout (the
   paper's "identical structure"). The two sets have seeds ``seed`` and ``seed + 1``.
4. Scores: S^G_i = <T^G, G_i>; S^L_i = sum_j softmax_j(s_ij / t) * s_ij over the sentence's real
   tokens (padding masked), s_ij = <L_i, T^L_j>, t = ``local_temperature``.
5. Ranking loss on each branch: sum over positive i and negative j of max(0, m - c*S_i + c*S_j),
   averaged over the batch. TaI-DPT and the authors multiply both similarities by a fixed logit scale
   of 4.0 before ``ranking_loss(..., scale_=1.0, margin_=1)``, and scale the local token
   similarities by 50 (text; 40 for images) before the softmax. We match that: ``score_scale`` c = 4,
   ``margin`` m = 1, ``local_temperature`` t = 1/50, ``inference_local_temperature`` = 1/40.
6. Order loss (engine.losses). ``order_form="pairs"`` (default, the authors'): upper-triangle class
   pairs of E E^T x ``order_scale`` (100), one softmax over the pairs, KL(hand || learned), sum;
   ``order_branches="global"`` (default, the authors') applies it to the global embeddings only,
   ``"both"`` to the local ones too. ``order_form="rows"``: the earlier row-softmax form at
   ``order_temperature``, on both branches. Total = rank_G + rank_L + lambda1 * (order_G + order_L),
   lambda1 = 0.2.

Schedule, by optimiser steps: a run takes ``max(min_steps, epochs * steps_per_epoch)`` steps, so a
small corpus or a big batch still gets enough updates (the authors run hundreds of steps over tens
of thousands of sentences). ``milestones`` are given in epochs out of ``epochs`` (paper: 2 and 5 of
10) and placed at the same FRACTION of the run's steps; the learning rate is multiplied by ``gamma``
there. With ``min_steps=0`` this is the paper's per-epoch schedule exactly. Sentences are drawn
epoch by epoch (a fresh shuffle per pass). SGD with momentum 0.9, weight decay 5e-4, lr 0.002
(CoOp, TaI-DPT and the authors, via Dassl's SGD defaults). ``min_steps`` default 30, set by the
time budget (VOC preset < 3 min, COCO < 10 min on the 2-core CPU): bench/bench_train.py measured
about 5.4 s of CPU per thread per step for the VOC preset (20 categories, RN50 text tower, under a
load average of 15), so 30 steps (3x the paper's 10 for 220 sentences at batch 512) is what fits;
bench/bench_accuracy.py's proxy prefers more steps (README "Benchmarks"), so on a GPU raise it.

Batch size 512 (TaI-DPT's and the authors'): a step costs two passes of every category's prompt
through the text transformer (forward and backward) whatever the batch, while the sentence side is a
few matrix products on cached features; so the wall time of a run is set by the NUMBER of steps.

Inference settings written into the classifier: ``lambda2``, ``inference_local_temperature``,
``fusion`` ("softmax", the authors'), ``fusion_scale`` (4), ``image_resize`` ("squash") and
``dense_positional`` (False); see engine.classifier.

Progress, cancel, resume: ``on_step(StepInfo)`` after every step; ``should_stop()`` is polled before
every step (and between feature batches) - when it returns True, a checkpoint is written and the
result so far comes back with ``cancelled=True``. With ``checkpoint_path`` a checkpoint (prompt
parameters, optimizer, scheduler, step, RNG states, history) is written after every pass over the
sentences and on cancel; a call that finds one for the same run (same config, corpus, categories
and backbone) resumes from it and ends, on the CPU, bit-for-bit where an uninterrupted run ends.
Sentence order comes from a generator seeded with (seed, epoch), the noise from a generator whose
state is saved (nothing else draws random numbers, so the process-wide torch RNG is neither used nor
touched).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from engine.classifier import Classifier, local_scores
from engine.description_features import description_features, texts_key
from engine.losses import add_noise, order_loss_pairs, order_loss_rows, ranking_loss
from engine.prefix_encoder import PromptEncoder
from engine.prompts import HierarchicalPrompts, PromptLayout, PromptStructure
from engine.errors import EngineError

CHECKPOINT_VERSION = 2  # 2: the learning-rate scheduler counts optimiser steps, not epochs
HAND_RESIDUALS = ("sum", "anchored", "off")
ORDER_FORMS = ("pairs", "rows")
ORDER_BRANCHES = ("global", "both")
LOCAL_PROMPTS = ("shared", "hierarchical")


class CheckpointError(EngineError, ValueError):
    """A checkpoint file that cannot be resumed from (the message says why)."""


@dataclass
class TrainConfig:
    """Training settings; defaults follow the authors' code (see the module docstring)."""

    epochs: int = 10
    min_steps: int = 30
    lr: float = 0.002
    milestones: tuple[int, ...] = (2, 5)
    gamma: float = 0.1
    batch_size: int = 512
    noise_std: float = 0.1
    noise_renormalize: bool = False
    hand_residual: str = "sum"
    local_prompt: str = "shared"
    margin: float = 1.0
    score_scale: float = 4.0
    lambda1: float = 0.2
    order_form: str = "pairs"
    order_scale: float = 100.0
    order_branches: str = "global"
    order_temperature: float = 1.0
    local_temperature: float = 1.0 / 50.0
    inference_local_temperature: float = 1.0 / 40.0
    lambda2: float = 0.65
    fusion: str = "softmax"
    fusion_scale: float = 4.0
    image_resize: str = "squash"
    dense_positional: bool = False
    momentum: float = 0.9
    weight_decay: float = 5e-4
    init_std: float = 0.02
    seed: int = 0
    layout: PromptLayout = field(default_factory=PromptLayout)
    method: str = "prefix"
    feature_batch_size: int = 256
    feature_cache_dir: str | None = None
    encode_chunk_size: int = 0  # prompt encoding: categories per chunk (0 = from free memory; engine.chunked_encoding)

    def __post_init__(self):
        if isinstance(self.layout, dict):
            self.layout = PromptLayout(**self.layout)
        self.milestones = tuple(int(m) for m in self.milestones)
        checks = [
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.min_steps >= 0, "min_steps must be >= 0"),
            (self.lr > 0, "lr must be positive"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.noise_std >= 0, "noise_std must be >= 0"),
            (self.score_scale > 0, "score_scale must be positive"),
            (self.local_temperature > 0 and self.inference_local_temperature > 0, "temperatures must be positive"),
            (self.order_temperature > 0 and self.order_scale > 0, "order_temperature and order_scale must be positive"),
            (0.0 <= self.lambda2 <= 1.0, "lambda2 must lie in [0, 1]"),
            (self.lambda1 >= 0, "lambda1 must be >= 0"),
            (self.method in ("prefix", "naive", "padded"), "method must be prefix, naive or padded"),
            (self.hand_residual in HAND_RESIDUALS, f"hand_residual must be one of {', '.join(HAND_RESIDUALS)}"),
            (self.order_form in ORDER_FORMS, f"order_form must be one of {', '.join(ORDER_FORMS)}"),
            (self.order_branches in ORDER_BRANCHES, f"order_branches must be one of {', '.join(ORDER_BRANCHES)}"),
            (self.local_prompt in LOCAL_PROMPTS, f"local_prompt must be one of {', '.join(LOCAL_PROMPTS)}"),
            (self.fusion in ("softmax", "linear"), "fusion must be softmax or linear"),
            (self.fusion_scale > 0, "fusion_scale must be positive"),
            (self.image_resize in ("squash", "center_crop"), "image_resize must be squash or center_crop"),
            (int(self.encode_chunk_size) == self.encode_chunk_size and self.encode_chunk_size >= 0,
             "encode_chunk_size must be a whole number >= 0 (0 = automatic)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"Invalid training setting: {message}.")

    @property
    def local_layout(self) -> PromptLayout:
        """The local prompt set's layout: one shared context of ``layout.total`` tokens, or the global layout."""
        return dataclasses.replace(self.layout, mode="shared") if self.local_prompt == "shared" else self.layout

    def inference_settings(self) -> dict:
        """Keywords of :class:`Classifier` that say how to score images with the tuned prompts."""
        return {"lambda2": self.lambda2, "local_temperature": self.inference_local_temperature,
                "fusion": self.fusion, "fusion_scale": self.fusion_scale, "image_resize": self.image_resize,
                "dense_positional": self.dense_positional}

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d


def schedule(n_sentences: int, config: TrainConfig) -> tuple[int, int, list[int]]:
    """(steps per pass over the sentences, total steps, milestone steps) of a run.

    total = max(min_steps, epochs * steps_per_epoch); a milestone m (in epochs out of ``epochs``)
    falls at step round(total * m / epochs), at least 1.
    """
    per_epoch = math.ceil(n_sentences / config.batch_size)
    total = max(config.min_steps, config.epochs * per_epoch)
    return per_epoch, total, [max(1, round(total * m / config.epochs)) for m in config.milestones]


@dataclass
class Corpus:
    """Training sentences and their labels (category names)."""

    texts: list[str]
    labels: list[list[str]]

    def __post_init__(self):
        self.texts = [str(t) for t in self.texts]
        self.labels = [list(lab) for lab in self.labels]
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} sentences but {len(self.labels)} label lists.")


@dataclass
class StepInfo:
    """What ``on_step`` receives after every step."""

    step: int  # 1-based, counted over the whole run
    total_steps: int
    epoch: int  # 0-based
    lr: float
    losses: dict[str, float]  # total, rank_global, rank_local, order_global, order_local
    elapsed_s: float


@dataclass
class TrainResult:
    classifier: Classifier
    history: list[StepInfo]
    cancelled: bool
    feature_seconds: float = 0.0  # time spent computing (or loading) description features
    train_seconds: float = 0.0  # time spent in steps during this call
    resumed_from_step: int = 0


# ---- the loop ---------------------------------------------------------------------------------

def _label_matrix(corpus: Corpus, categories: list[str]) -> torch.Tensor:
    index = {c: i for i, c in enumerate(categories)}
    unknown = sorted({lab for labs in corpus.labels for lab in labs if lab not in index})
    if unknown:
        raise ValueError(f"Sentence labels that are not categories: {', '.join(unknown[:10])}.")
    y = torch.zeros(len(corpus.texts), len(categories))
    for r, labs in enumerate(corpus.labels):
        for lab in labs:
            y[r, index[lab]] = 1.0
    return y


def _fingerprint(backbone, structure: PromptStructure, handcrafted: list[str], corpus: Corpus,
                 config: TrainConfig) -> str:
    cfg = config.to_dict()
    cfg.pop("feature_batch_size")
    cfg.pop("feature_cache_dir")
    cfg.pop("encode_chunk_size")  # changes only float round-off: a run may resume with another
    payload = json.dumps({
        "config": cfg, "backbone": backbone.name, "categories": structure.categories,
        "super_of": structure.super_of, "cliques": structure.cliques, "handcrafted": handcrafted,
        "corpus": texts_key(backbone.name, corpus.texts), "labels": corpus.labels,
    }, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def _save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, fingerprint: str) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or foreign: torch raises several types
        raise CheckpointError(f"The training checkpoint {path} cannot be read ({type(err).__name__}); "
                              f"delete it to start the run afresh.") from err
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} is not a training checkpoint of this program; delete it to start afresh.")
    if state.get("fingerprint") != fingerprint:
        raise CheckpointError(f"The checkpoint {path} belongs to a different run (other settings, sentences, "
                              f"categories or CLIP model); delete it or use another checkpoint path.")
    return state


def residual_embeddings(learned: torch.Tensor, hand_raw: torch.Tensor, mode: str = "sum",
                        anchor: torch.Tensor | None = None) -> torch.Tensor:
    """Unit class embeddings [N, d] from the encoded prompts ``learned`` and the UNNORMALISED
    hand-crafted features ``hand_raw`` (both [N, d]): ``"sum"`` normalise(learned + hand),
    ``"anchored"`` normalise(learned - anchor + hand), ``"off"`` normalise(learned). The hand part
    (and the anchor) carry no gradient."""
    if mode == "sum":
        learned = learned + hand_raw.detach()
    elif mode == "anchored":
        learned = learned - anchor.detach() + hand_raw.detach()
    elif mode != "off":
        raise ValueError(f"hand_residual must be one of {HAND_RESIDUALS}, got {mode!r}.")
    return F.normalize(learned, dim=-1)


@dataclass
class TrainState:
    """Everything a run changes as it goes (what a checkpoint holds)."""

    global_prompts: HierarchicalPrompts
    local_prompts: HierarchicalPrompts
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.MultiStepLR
    noise_gen: torch.Generator
    step: int = 0
    elapsed_before: float = 0.0  # seconds of steps taken by earlier calls (resumed runs)
    history: list[StepInfo] = field(default_factory=list)

    def to_checkpoint(self, fingerprint: str, elapsed_s: float) -> dict:
        return {
            "version": CHECKPOINT_VERSION, "fingerprint": fingerprint, "step": self.step,
            "global_prompts": self.global_prompts.state_dict(), "local_prompts": self.local_prompts.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "noise_rng": self.noise_gen.get_state(), "elapsed_s": elapsed_s,
            "history": [dataclasses.asdict(h) for h in self.history],
        }

    def restore(self, state: dict) -> None:
        self.global_prompts.load_state_dict(state["global_prompts"])
        self.local_prompts.load_state_dict(state["local_prompts"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.noise_gen.set_state(state["noise_rng"])
        self.step = int(state["step"])
        self.elapsed_before = float(state["elapsed_s"])
        self.history = [StepInfo(**h) for h in state["history"]]


class Trainer:
    """One run: the frozen inputs, the prompt encoders, the state, and the step (module docstring)."""

    def __init__(self, backbone, structure: PromptStructure, handcrafted: list[str], corpus: Corpus,
                 config: TrainConfig):
        self.config = config
        self.backbone = backbone
        self.categories = list(structure.categories)
        if len(handcrafted) != len(self.categories):
            raise ValueError(f"{len(handcrafted)} hand-crafted prompts for {len(self.categories)} categories.")
        if not corpus.texts:
            raise ValueError("There are no training sentences.")
        self.corpus = corpus
        self.targets = _label_matrix(corpus, self.categories).to(backbone.device)
        self.fingerprint = _fingerprint(backbone, structure, list(handcrafted), corpus, config)
        self.steps_per_epoch, self.total_steps, milestones = schedule(len(corpus.texts), config)
        device = backbone.device
        # hand-crafted prompts: unnormalised projected EOS features (the residual) and their unit rows
        self.hand_raw = backbone.raw_text_embeddings(list(handcrafted)).to(device)
        self.hand = F.normalize(self.hand_raw, dim=-1)
        make = lambda layout, seed: HierarchicalPrompts(structure, layout, width=backbone.width, seed=seed,
                                                        init_std=config.init_std).to(device)
        global_prompts, local_prompts = make(config.layout, config.seed), make(config.local_layout, config.seed + 1)
        self.global_encoder = PromptEncoder(backbone, structure, config.layout, chunk_size=config.encode_chunk_size)
        self.local_encoder = PromptEncoder(backbone, structure, config.local_layout,
                                           chunk_size=config.encode_chunk_size)
        self.anchor = None  # enc(prompts at step 0), for hand_residual="anchored"
        if config.hand_residual == "anchored":
            with torch.no_grad():
                self.anchor = (self._encode(self.global_encoder, global_prompts),
                               self._encode(self.local_encoder, local_prompts))
        params = list(global_prompts.parameters()) + list(local_prompts.parameters())
        optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=config.gamma)
        self.state = TrainState(global_prompts, local_prompts, optimizer, scheduler,
                                torch.Generator().manual_seed(config.seed * 1_000_003 + 17))

    def _encode(self, encoder: PromptEncoder, prompts: HierarchicalPrompts) -> torch.Tensor:
        return encoder.encode(prompts, self.config.method).float()

    def class_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(G, L) [N, d], unit rows, with the hand-crafted residual of ``config.hand_residual``."""
        out = []
        for k, (encoder, prompts) in enumerate(((self.global_encoder, self.state.global_prompts),
                                                (self.local_encoder, self.state.local_prompts))):
            out.append(residual_embeddings(self._encode(encoder, prompts), self.hand_raw, self.config.hand_residual,
                                           None if self.anchor is None else self.anchor[k]))
        return out[0], out[1]

    def losses(self, idx: torch.Tensor, glob_all, local_all, mask_all) -> dict[str, torch.Tensor]:
        """The step's losses for the sentences ``idx`` (noise drawn from the state's generator)."""
        cfg, gen = self.config, self.state.noise_gen
        mask = mask_all[idx]
        length = int(mask.sum(dim=1).max())
        mask = mask[:, :length]
        t_glob = add_noise(glob_all[idx], cfg.noise_std, gen, cfg.noise_renormalize)
        t_local = add_noise(local_all[idx, :length], cfg.noise_std, gen, cfg.noise_renormalize)
        y = self.targets[idx]
        g, l = self.class_embeddings()
        rank_g = ranking_loss(cfg.score_scale * (t_glob @ g.T), y, cfg.margin)
        rank_l = ranking_loss(cfg.score_scale * local_scores(l, t_local, cfg.local_temperature, mask), y, cfg.margin)
        if cfg.order_form == "pairs":
            order_g = order_loss_pairs(g, self.hand, cfg.order_scale)
            order_l = order_loss_pairs(l, self.hand, cfg.order_scale) if cfg.order_branches == "both" else g.new_zeros(())
        else:
            hand_sim = self.hand @ self.hand.T
            order_g = order_loss_rows(g, hand_sim, cfg.order_temperature)
            order_l = order_loss_rows(l, hand_sim, cfg.order_temperature)
        total = rank_g + rank_l + cfg.lambda1 * (order_g + order_l)
        return {"total": total, "rank_global": rank_g, "rank_local": rank_l, "order_global": order_g,
                "order_local": order_l}

    def step(self, idx: torch.Tensor, epoch: int, features, elapsed_s: Callable[[], float]) -> StepInfo:
        """One optimiser step on the sentences ``idx``; the learning-rate scheduler advances too."""
        st = self.state
        lr = st.optimizer.param_groups[0]["lr"]
        losses = self.losses(idx, *features)
        st.optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        st.optimizer.step()
        st.scheduler.step()
        st.step += 1
        info = StepInfo(step=st.step, total_steps=self.total_steps, epoch=epoch, lr=float(lr),
                        losses={k: v.item() for k, v in losses.items()}, elapsed_s=elapsed_s())
        st.history.append(info)
        return info

    def classifier(self) -> Classifier:
        """The tuned classifier as it stands (class embeddings with the residual, inference settings)."""
        with torch.no_grad():
            g, l = self.class_embeddings()
        return Classifier(self.categories, g, l, self.backbone.name, **self.config.inference_settings(),
                          meta={"kind": "tuned", "train": self.config.to_dict(), "sentences": len(self.corpus.texts)})

    def run(self, on_step=None, should_stop=None, checkpoint_path=None) -> TrainResult:
        """Features, then steps until ``total_steps`` (or a stop); see :func:`train`."""
        cfg, st = self.config, self.state
        stop = should_stop or (lambda: False)
        t_start = time.perf_counter()
        feats = description_features(self.backbone, self.corpus.texts, cfg.feature_batch_size,
                                     cfg.feature_cache_dir, should_stop)
        feature_seconds = time.perf_counter() - t_start
        ckpt = Path(checkpoint_path) if checkpoint_path is not None else None
        if ckpt is not None and ckpt.exists():
            st.restore(_load_checkpoint(ckpt, self.fingerprint))
        resumed_from, t_train = st.step, time.perf_counter()
        elapsed = lambda: st.elapsed_before + time.perf_counter() - t_train
        result = lambda cancelled: TrainResult(self.classifier(), st.history, cancelled, feature_seconds,
                                               time.perf_counter() - t_train, resumed_from)

        def checkpoint() -> None:
            if ckpt is not None:
                _save_checkpoint(ckpt, st.to_checkpoint(self.fingerprint, elapsed()))

        if feats is None:  # cancelled while computing features
            return dataclasses.replace(result(True), train_seconds=0.0)
        device = self.backbone.device
        features = (feats.glob.to(device), feats.local.to(device), feats.mask.to(device))
        n, per_epoch, size = len(self.corpus.texts), self.steps_per_epoch, cfg.batch_size
        while st.step < self.total_steps:
            epoch, in_epoch = divmod(st.step, per_epoch)
            order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch))
            for b in range(in_epoch, min(per_epoch, in_epoch + self.total_steps - st.step)):
                if stop():
                    checkpoint()
                    return result(True)
                info = self.step(order[b * size:(b + 1) * size].to(device), epoch, features, elapsed)
                if on_step is not None:
                    on_step(info)
            checkpoint()
        return result(False)


def train(backbone, structure: PromptStructure, handcrafted: list[str], corpus: Corpus,
          config: TrainConfig | None = None, on_step: Callable[[StepInfo], None] | None = None,
          should_stop: Callable[[], bool] | None = None,
          checkpoint_path: str | os.PathLike | None = None) -> TrainResult:
    """Tune both prompt sets on ``corpus``; see the module docstring for every choice."""
    trainer = Trainer(backbone, structure, handcrafted, corpus, config or TrainConfig())
    return trainer.run(on_step, should_stop, checkpoint_path)
