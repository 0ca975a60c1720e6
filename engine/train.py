"""Tune the global and local hierarchical prompts on frozen description features.

METHOD.md sections 3-4, paper sections 3.3-3.4. One step, for a batch of sentences:

1. Description features are frozen: every sentence's global (EOS) and local (every token) features
   are computed ONCE by ``backbone.text_features`` and cached (:func:`description_features`: in
   memory, and on disk when ``TrainConfig.feature_cache_dir`` is set, keyed by the backbone name and
   a hash of the texts).
2. Gaussian noise xi ~ N(0, noise_std^2) per component is added to the L2-normalised global and
   local features, fresh every step (paper eq. 7 and 10); the scores below are cosines, so the noisy
   features are normalised again.
3. Class embeddings: both prompt sets (two independent :class:`HierarchicalPrompts`, seeds ``seed``
   and ``seed + 1``) go through the frozen text encoder (:class:`PromptEncoder`, ``config.method``);
   G_i and L_i are normalised.
4. Scores: S^G_i = cos(T^G, G_i); S^L_i = sum_j softmax_j(s_ij / t) * s_ij over the sentence's real
   tokens (padding masked), s_ij = cos(L_i, T^L_j), t = ``local_temperature``.
5. Ranking loss on each branch: sum over positive i and negative j of max(0, m - c*S_i + c*S_j),
   averaged over the batch. The paper writes m = 1 on similarities. TaI-DPT's code (the paper's
   peer, guozix/TaI-DPT ``trainers/Caption_distill_double.py`` + ``trainers/utils.py``) multiplies
   BOTH the global and the local similarities by a fixed logit scale of 4.0 before its
   ``ranking_loss(..., scale_=1.0, margin_=1)`` (sum over pairs, mean over the batch), and scales the
   local token similarities by 50 (text; 40 for images) before the softmax. We match that: ``score_scale``
   c = 4.0, ``margin`` m = 1.0 (i.e. a margin of 0.25 in cosine units), ``local_temperature`` t = 1/50
   while training, ``inference_local_temperature`` = 1/40 written into the classifier.
6. Order loss: D^k = E_k E_k^T over the normalised class embeddings (k = global, local, hand-crafted);
   KL(softmax_rows(D^H / T) || softmax_rows(D^k / T)) for k = G and L, mean over rows, D^H fixed;
   T = ``order_temperature`` (1.0: the paper's plain softmax). Total = rank_G + rank_L +
   lambda1 * (order_G + order_L), lambda1 = 0.2.

Optimisation: only the prompt vectors train (CLIP is frozen). SGD with momentum 0.9 and weight
decay 5e-4, as CoOp and TaI-DPT do (both via Dassl's SGD defaults); the paper's schedule: 10 epochs,
lr 0.002, x0.1 after epochs 2 and 5 (a MultiStepLR stepped per epoch).

Batch size (ours, METHOD.md section 4): a step costs two passes of every category's prompt through
the text transformer (forward and backward) whatever the batch, while the sentence side is a few
matrix products on cached features; so the wall time of a run is set by the NUMBER of steps.
Default 512, TaI-DPT's own value: 2,000 sentences make 4 steps per epoch, 40 in all. Measured by
bench/bench_train.py (20 categories, RN50-sized text tower, 2 threads, on the shared 2-core machine):
about 4.9 s of CPU per thread per step and 32 s of feature precompute, i.e. roughly 230 s for the run
on an idle machine - above the 3-minute target; batch 1024 halves the steps (20) and measured
about 117 s, but its prompts train less (last-step loss 67.3 against 58.1). Smaller
batches train better per epoch when time allows (on the synthetic 20-category corpus of the bench
with the tiny CLIP: held-out mAP 45 with 128 against 35 with 512, hand-crafted 23).

Noise std (ours; the paper gives no value): 0.02 per component. With d = 512-1024 the noise vector's
norm is about 0.45-0.64 of the (unit) feature, i.e. a clean/noisy cosine of about 0.85-0.9.

Progress, cancel, resume: ``on_step(StepInfo)`` after every step; ``should_stop()`` is polled before
every step (and between feature batches) - when it returns True, a checkpoint is written and the
result so far comes back with ``cancelled=True``. With ``checkpoint_path`` a checkpoint (prompt
parameters, optimizer, scheduler, step, RNG states, history) is written after every epoch and on
cancel; a call that finds one for the same run (same config, corpus, categories and backbone)
resumes from it and ends, on the CPU, bit-for-bit where an uninterrupted run ends. Sentence order
comes from a generator seeded with (seed, epoch), the noise from a generator whose state is saved
(nothing else draws random numbers, so the process-wide torch RNG is neither used nor touched).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from engine.classifier import Classifier, local_scores
from engine.clip_backbone import TextFeatures
from engine.prefix_encoder import PromptEncoder
from engine.prompts import HierarchicalPrompts, PromptLayout, PromptStructure
from engine.errors import EngineError

CHECKPOINT_VERSION = 1


class CheckpointError(EngineError, ValueError):
    """A checkpoint file that cannot be resumed from (the message says why)."""


@dataclass
class TrainConfig:
    """Training settings; defaults follow the paper and TaI-DPT (see the module docstring)."""

    epochs: int = 10
    lr: float = 0.002
    milestones: tuple[int, ...] = (2, 5)
    gamma: float = 0.1
    batch_size: int = 512
    noise_std: float = 0.02
    margin: float = 1.0
    score_scale: float = 4.0
    lambda1: float = 0.2
    local_temperature: float = 1.0 / 50.0
    inference_local_temperature: float = 1.0 / 40.0
    lambda2: float = 0.65
    order_temperature: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    init_std: float = 0.02
    seed: int = 0
    layout: PromptLayout = field(default_factory=PromptLayout)
    method: str = "prefix"
    feature_batch_size: int = 256
    feature_cache_dir: str | None = None

    def __post_init__(self):
        if isinstance(self.layout, dict):
            self.layout = PromptLayout(**self.layout)
        self.milestones = tuple(int(m) for m in self.milestones)
        checks = [
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.lr > 0, "lr must be positive"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.noise_std >= 0, "noise_std must be >= 0"),
            (self.score_scale > 0, "score_scale must be positive"),
            (self.local_temperature > 0 and self.inference_local_temperature > 0, "temperatures must be positive"),
            (self.order_temperature > 0, "order_temperature must be positive"),
            (0.0 <= self.lambda2 <= 1.0, "lambda2 must lie in [0, 1]"),
            (self.lambda1 >= 0, "lambda1 must be >= 0"),
            (self.method in ("prefix", "naive", "padded"), "method must be prefix, naive or padded"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"Invalid training setting: {message}.")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d


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


# ---- description features -------------------------------------------------------------------

_feature_cache: "OrderedDict[tuple, TextFeatures]" = OrderedDict()
_feature_lock = threading.Lock()
FEATURE_CACHE_ENTRIES = 2


def texts_key(backbone_name: str, texts: list[str]) -> str:
    """A stable hash of (backbone name, texts) naming cached description features."""
    h = hashlib.sha256(backbone_name.encode())
    for t in texts:
        h.update(b"\x00" + t.encode())
    return h.hexdigest()[:32]


def description_features(backbone, texts: list[str], batch_size: int = 256, cache_dir: str | None = None,
                         should_stop: Callable[[], bool] | None = None) -> TextFeatures | None:
    """Frozen global/local features of ``texts`` (CPU float32), computed once per (backbone, texts).

    Returns None when ``should_stop()`` turned True while computing (nothing is cached then).
    """
    key = (backbone.name, str(backbone.device), texts_key(backbone.name, texts))
    with _feature_lock:
        if key in _feature_cache:
            _feature_cache.move_to_end(key)
            return _feature_cache[key]
    path = None
    if cache_dir:
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in backbone.name)
        path = Path(cache_dir) / f"features-{safe}-{key[2]}.safetensors"
    feats = _load_features(path) if path is not None else None
    if feats is None:
        parts = []
        for start in range(0, len(texts), batch_size):
            if should_stop is not None and should_stop():
                return None
            parts.append(backbone.text_features(texts[start:start + batch_size], batch_size=batch_size))
        feats = TextFeatures.concat(parts, backbone.embed_dim)
        if path is not None:
            _save_features(path, feats)
    with _feature_lock:
        _feature_cache[key] = feats
        while len(_feature_cache) > FEATURE_CACHE_ENTRIES:
            _feature_cache.popitem(last=False)
    return feats


def _save_features(path: Path, feats: TextFeatures) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({"glob": feats.glob.contiguous(), "local": feats.local.contiguous(),
               "mask": feats.mask.to(torch.uint8).contiguous()}, str(tmp))
    os.replace(tmp, path)


def _load_features(path: Path) -> TextFeatures | None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        t = load_file(str(path))
        return TextFeatures(t["glob"], t["local"], t["mask"].to(torch.bool))
    except (SafetensorError, OSError, KeyError, RuntimeError):
        return None  # a damaged cache file is recomputed (and overwritten)


# ---- losses -----------------------------------------------------------------------------------

def ranking_loss(scores: torch.Tensor, targets: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean over the batch of sum_{i pos, j neg} max(0, margin - s_i + s_j); scores/targets [B, N]."""
    diff = margin - scores[:, :, None] + scores[:, None, :]  # [B, i, j]
    pairs = targets[:, :, None] * (1.0 - targets[:, None, :])
    return (F.relu(diff) * pairs).sum(dim=(1, 2)).mean()


def order_loss(emb: torch.Tensor, reference_sim: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(softmax_rows(D^H / T) || softmax_rows(E E^T / T)), mean over rows; ``emb`` normalised [N, d]."""
    log_p = F.log_softmax(emb @ emb.T / temperature, dim=-1)
    target = F.softmax(reference_sim / temperature, dim=-1)
    return F.kl_div(log_p, target, reduction="batchmean")


def _noisy(x: torch.Tensor, std: float, gen: torch.Generator) -> torch.Tensor:
    if std > 0:
        x = x + (torch.randn(x.shape, generator=gen) * std).to(x.device)
    return F.normalize(x, dim=-1)


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


def train(backbone, structure: PromptStructure, handcrafted: list[str], corpus: Corpus,
          config: TrainConfig | None = None, on_step: Callable[[StepInfo], None] | None = None,
          should_stop: Callable[[], bool] | None = None,
          checkpoint_path: str | os.PathLike | None = None) -> TrainResult:
    """Tune both prompt sets on ``corpus``; see the module docstring for every choice."""
    config = config or TrainConfig()
    categories = list(structure.categories)
    n_cat = len(categories)
    if len(handcrafted) != n_cat:
        raise ValueError(f"{len(handcrafted)} hand-crafted prompts for {n_cat} categories.")
    if not corpus.texts:
        raise ValueError("There are no training sentences.")
    targets_all = _label_matrix(corpus, categories)
    device = backbone.device
    stop = should_stop or (lambda: False)
    t_start = time.perf_counter()

    # frozen inputs
    feats = description_features(backbone, corpus.texts, config.feature_batch_size,
                                 config.feature_cache_dir, should_stop)
    feature_seconds = time.perf_counter() - t_start
    hand = F.normalize(backbone.encode_text(list(handcrafted)).float(), dim=-1).to(device)
    hand_sim = hand @ hand.T

    # learnable prompts and their encoder
    global_prompts = HierarchicalPrompts(structure, config.layout, width=backbone.width, seed=config.seed,
                                         init_std=config.init_std).to(device)
    local_prompts = HierarchicalPrompts(structure, config.layout, width=backbone.width, seed=config.seed + 1,
                                        init_std=config.init_std).to(device)
    encoder = PromptEncoder(backbone, structure, config.layout)
    params = list(global_prompts.parameters()) + list(local_prompts.parameters())
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(config.milestones),
                                                     gamma=config.gamma)
    noise_gen = torch.Generator().manual_seed(config.seed * 1_000_003 + 17)

    def make_classifier() -> Classifier:
        with torch.no_grad():
            g = F.normalize(encoder.encode(global_prompts, config.method).float(), dim=-1)
            l = F.normalize(encoder.encode(local_prompts, config.method).float(), dim=-1)
        return Classifier(categories, g, l, backbone.name, lambda2=config.lambda2,
                          local_temperature=config.inference_local_temperature,
                          meta={"kind": "tuned", "train": config.to_dict(), "sentences": len(corpus.texts)})

    n = len(corpus.texts)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    history: list[StepInfo] = []
    step = 0
    elapsed_before = 0.0
    ckpt = Path(checkpoint_path) if checkpoint_path is not None else None
    fingerprint = _fingerprint(backbone, structure, list(handcrafted), corpus, config)

    if ckpt is not None and ckpt.exists():
        state = _load_checkpoint(ckpt, fingerprint)
        global_prompts.load_state_dict(state["global_prompts"])
        local_prompts.load_state_dict(state["local_prompts"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        noise_gen.set_state(state["noise_rng"])
        step = int(state["step"])
        elapsed_before = float(state["elapsed_s"])
        history = [StepInfo(**h) for h in state["history"]]
    resumed_from = step

    def checkpoint() -> None:
        if ckpt is None:
            return
        _save_checkpoint(ckpt, {
            "version": CHECKPOINT_VERSION, "fingerprint": fingerprint, "step": step,
            "global_prompts": global_prompts.state_dict(), "local_prompts": local_prompts.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "noise_rng": noise_gen.get_state(),
            "elapsed_s": elapsed_before + (time.perf_counter() - t_train),
            "history": [dataclasses.asdict(h) for h in history],
        })

    t_train = time.perf_counter()
    if feats is None:  # cancelled while computing features
        return TrainResult(make_classifier(), history, True, feature_seconds, 0.0, resumed_from)

    glob_all = feats.glob.to(device)
    local_all = feats.local.to(device)
    mask_all = feats.mask.to(device)
    targets_all = targets_all.to(device)

    while step < total_steps:
        epoch, in_epoch = divmod(step, steps_per_epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed * 7919 + epoch))
        for b in range(in_epoch, steps_per_epoch):
            if stop():
                checkpoint()
                return TrainResult(make_classifier(), history, True, feature_seconds,
                                   time.perf_counter() - t_train, resumed_from)
            idx = order[b * config.batch_size:(b + 1) * config.batch_size].to(device)
            mask = mask_all[idx]
            length = int(mask.sum(dim=1).max())
            mask = mask[:, :length]
            t_glob = _noisy(glob_all[idx], config.noise_std, noise_gen)
            t_local = _noisy(local_all[idx, :length], config.noise_std, noise_gen)
            y = targets_all[idx]

            g = F.normalize(encoder.encode(global_prompts, config.method).float(), dim=-1)
            l = F.normalize(encoder.encode(local_prompts, config.method).float(), dim=-1)
            s_g = t_glob @ g.T
            s_l = local_scores(l, t_local, config.local_temperature, mask)
            rank_g = ranking_loss(config.score_scale * s_g, y, config.margin)
            rank_l = ranking_loss(config.score_scale * s_l, y, config.margin)
            order_g = order_loss(g, hand_sim, config.order_temperature)
            order_l = order_loss(l, hand_sim, config.order_temperature)
            total = rank_g + rank_l + config.lambda1 * (order_g + order_l)

            lr = optimizer.param_groups[0]["lr"]
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            step += 1
            info = StepInfo(step=step, total_steps=total_steps, epoch=epoch, lr=float(lr),
                            losses={"total": total.item(), "rank_global": rank_g.item(),
                                    "rank_local": rank_l.item(), "order_global": order_g.item(),
                                    "order_local": order_l.item()},
                            elapsed_s=elapsed_before + time.perf_counter() - t_train)
            history.append(info)
            if on_step is not None:
                on_step(info)
        scheduler.step()
        checkpoint()

    return TrainResult(make_classifier(), history, False, feature_seconds, time.perf_counter() - t_train,
                       resumed_from)
