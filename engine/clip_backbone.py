"""The frozen CLIP backbone: load an open_clip model, and read text and image features off it.

What it loads (METHOD.md sections 3 and 5; paper sections 3.3 and 3.5):

* any open_clip architecture name with a pretrained tag (the paper's default: ``RN50``/``openai``);
* a local weights file (``BackboneSpec.checkpoint``, or the ``IFS_CLIP_CHECKPOINT`` environment
  variable), which open_clip loads as its ``pretrained`` argument;
* the tiny test configurations in ``assets/clip_configs/`` (``tiny-rn``: a ModifiedResNet image
  tower, ``tiny-vit``: a ViT), registered with ``open_clip.add_model_config``. They keep CLIP's real
  BPE tokenizer (vocabulary 49408, context 77) but have small widths and 64-pixel images.

``pretrained=None`` means random weights, initialised under ``BackboneSpec.seed`` so that two loads
give the same model (benchmarks use ``BackboneSpec("RN50", pretrained=None)``). Weights are never
downloaded while offline (``HF_HUB_OFFLINE=1`` or ``IFS_OFFLINE=1``): a missing file raises
:class:`MissingWeightsError` with one sentence that names it and says how to provide it.

Every model is frozen (``requires_grad=False``, eval mode) and cached per (spec, device).

Features:

* text, global: the EOS token's feature after ``ln_final`` and the text projection (open_clip finds
  EOS as the argmax of the token ids); local: every token's feature after the same two steps; both
  L2-normalised; rows trimmed to the longest real row of the batch (the causal mask makes the
  trimmed tail irrelevant to the kept tokens).
* image, global: CLIP's own image embedding. Dense, ResNet (as DualCoOp and the authors' code do):
  the last feature map through the attention pool's value projection (``v_proj``) and output
  projection (``c_proj``) at every position - what the attention pool would output if each position
  attended only to itself. The pool's spatial positional embeddings are NOT added by default (the
  authors' ``models/baseline.py``; METHOD.md section 7); ``dense_positional=True`` adds them (this
  project's earlier behaviour). ViT: every patch token (not the class token) through ``ln_post`` and
  ``proj``. Both L2-normalised, ``[B, P, d]``.
* image preprocessing (:meth:`Backbone.image_transform`): ``"squash"`` (default, the authors' test
  transform) resizes the whole image to the model's input size (224 x 224 for RN50), aspect ratio
  not kept, so objects at the edges stay in view; ``"center_crop"`` is open_clip's own transform
  (shorter side resized, centre cropped). ``Backbone.preprocess`` is the squash transform.
"""
from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlparse
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import open_clip
from open_clip.pretrained import HF_WEIGHTS_NAME, _get_safe_alternatives, get_pretrained_cfg

from engine.device import parse_device, pick_device
from engine.errors import EngineError

CLIP_CONFIG_DIR = Path(__file__).resolve().parent.parent / "assets" / "clip_configs"
TINY_MODELS = ("tiny-rn", "tiny-vit")
CHECKPOINT_ENV = "IFS_CLIP_CHECKPOINT"


class BackboneError(EngineError, ValueError):
    """A CLIP model, tag or weights file that cannot make a backbone; the message says which."""


class MissingWeightsError(EngineError, RuntimeError):
    """The CLIP weights asked for are not on this machine (the message says how to provide them)."""


@dataclass(frozen=True)
class BackboneSpec:
    """Which CLIP to load.

    model: an open_clip architecture name ("RN50", "ViT-B-32", ...) or "tiny-rn" / "tiny-vit".
    pretrained: an open_clip pretrained tag ("openai", ...), or None for random weights.
    checkpoint: a local weights file; overrides the tag's download (the tag still decides QuickGELU).
    seed: the random-init seed (used when no weights are loaded).
    quick_gelu: None = follow the pretrained tag (OpenAI weights were trained with QuickGELU).
    cache_dir: where open_clip keeps downloaded weights (None = its default).
    """

    model: str = "RN50"
    pretrained: str | None = "openai"
    checkpoint: str | None = None
    seed: int = 0
    quick_gelu: bool | None = None
    cache_dir: str | None = None


@dataclass
class TextFeatures:
    """Features of a batch of sentences (float32, CPU).

    glob [B, d]: EOS feature after the projection, L2-normalised.
    local [B, L, d]: every token after ln_final and the projection, L2-normalised.
    mask [B, L] bool: True on real tokens (SOS .. EOS); L = longest real row in the batch;
    local is zero where mask is False.
    """

    glob: torch.Tensor
    local: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def concat(cls, parts: list["TextFeatures"], dim: int) -> "TextFeatures":
        """Batches joined row-wise, ``local``/``mask`` zero-padded to the longest batch (empty: no rows)."""
        if not parts:
            return cls(torch.zeros(0, dim), torch.zeros(0, 0, dim), torch.zeros(0, 0, dtype=torch.bool))
        longest = max(p.local.shape[1] for p in parts)
        local = torch.cat([F.pad(p.local, (0, 0, 0, longest - p.local.shape[1])) for p in parts])
        mask = torch.cat([F.pad(p.mask, (0, longest - p.mask.shape[1])) for p in parts])
        return cls(torch.cat([p.glob for p in parts]), local, mask)


_register_lock = threading.Lock()
_registered = False


def register_tiny_configs() -> None:
    """Make the in-repo configs (assets/clip_configs/*.json) known to open_clip (idempotent)."""
    global _registered
    with _register_lock:
        if not _registered:
            open_clip.add_model_config(CLIP_CONFIG_DIR)
            _registered = True


def _offline() -> bool:
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes", "on") for k in ("HF_HUB_OFFLINE", "IFS_OFFLINE"))


def _weights_host(tag_cfg: dict) -> tuple[str, int]:
    """(host, port) that open_clip would download ``tag_cfg``'s weights from."""
    base = tag_cfg.get("url") if not tag_cfg.get("hf_hub") else os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(base or "https://huggingface.co")
    return parsed.hostname or "huggingface.co", parsed.port or (80 if parsed.scheme == "http" else 443)


def _reachable(host: str, port: int, timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to the weights' host opens within ``timeout_s``. Asked before a
    download so that an offline machine gets the clear error at once instead of after the hub
    client's retries (about 50 s)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _how_to_provide(spec: BackboneSpec) -> str:
    return (
        f"give a local weights file for {spec.model} (BackboneSpec.checkpoint, the CLIP checkpoint setting, "
        f"or the {CHECKPOINT_ENV} environment variable), or run once with internet access so open_clip can "
        f"download the '{spec.pretrained}' weights"
    )


def _cached_tag_file(cfg: dict, cache_dir: str | None) -> str | None:
    """The local file holding a pretrained tag's weights, looked up without touching the network."""
    if cfg.get("file"):
        return cfg["file"] if os.path.isfile(cfg["file"]) else None
    hub = cfg.get("hf_hub", "")
    if hub:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover - huggingface_hub ships with open_clip
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            repo_id, filename = os.path.split(hub)
            filename = filename or HF_WEIGHTS_NAME
            for name in [*_get_safe_alternatives(filename), filename]:
                found = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
                if isinstance(found, str) and os.path.isfile(found):
                    return found
    url = cfg.get("url", "")
    if url:
        path = os.path.join(cache_dir or os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        if os.path.isfile(path):
            return path
    return None


def resolve_weights(spec: BackboneSpec) -> tuple[str | None, bool, str]:
    """Return (weights file or None for random init, quick_gelu, a short label of the source) for ``spec``.

    Raises MissingWeightsError when the weights are not here and cannot be fetched.
    """
    register_tiny_configs()
    if open_clip.get_model_config(spec.model) is None:
        raise BackboneError(
            f"Unknown CLIP model {spec.model!r}; use an open_clip architecture name such as 'RN50' or "
            f"'ViT-B-32', or 'tiny-rn' / 'tiny-vit'."
        )
    tag_cfg = get_pretrained_cfg(spec.model, spec.pretrained) if spec.pretrained else {}
    quick_gelu = bool(tag_cfg.get("quick_gelu", False)) if spec.quick_gelu is None else spec.quick_gelu

    checkpoint = spec.checkpoint
    if checkpoint is None and spec.pretrained is not None and spec.model not in TINY_MODELS:
        checkpoint = os.environ.get(CHECKPOINT_ENV) or None
    if checkpoint is not None:
        if not os.path.isfile(checkpoint):
            raise MissingWeightsError(
                f"The CLIP weights file {checkpoint!r} does not exist; point the CLIP checkpoint setting "
                f"(or {CHECKPOINT_ENV}) at an existing open_clip/OpenAI weights file for {spec.model}."
            )
        return checkpoint, quick_gelu, Path(checkpoint).name
    if spec.pretrained is None:
        return None, quick_gelu, "random"
    if spec.model in TINY_MODELS:
        raise BackboneError(f"{spec.model!r} is a test configuration without pretrained weights; use pretrained=None.")
    if not tag_cfg:
        if os.path.isfile(spec.pretrained):
            return spec.pretrained, quick_gelu, Path(spec.pretrained).name
        tags = open_clip.list_pretrained_tags_by_model(spec.model)
        raise BackboneError(
            f"{spec.pretrained!r} is neither a pretrained tag of {spec.model} nor a file; known tags: {tags}."
        )
    found = _cached_tag_file(tag_cfg, spec.cache_dir)
    if found:
        return found, quick_gelu, spec.pretrained
    where = tag_cfg.get("hf_hub") or tag_cfg.get("url") or spec.pretrained
    if _offline() or not _reachable(*_weights_host(tag_cfg)):
        raise MissingWeightsError(
            f"The CLIP weights {spec.model}/{spec.pretrained} ({where}) are not on this machine and it is offline (or their host cannot be reached); "
            f"{_how_to_provide(spec)}."
        )
    try:
        return open_clip.download_pretrained(tag_cfg, cache_dir=spec.cache_dir), quick_gelu, spec.pretrained
    except Exception as err:  # network down, host unreachable, ...
        raise MissingWeightsError(
            f"The CLIP weights {spec.model}/{spec.pretrained} ({where}) could not be downloaded ({type(err).__name__}); "
            f"{_how_to_provide(spec)}."
        ) from err


def _project(x: torch.Tensor, projection) -> torch.Tensor:
    if projection is None:
        return x
    if isinstance(projection, nn.Linear):
        return projection(x)
    return x @ projection


IMAGE_RESIZE_MODES = ("squash", "center_crop")


def squash_transform(center_crop_transform):
    """open_clip's eval transform with its Resize(short side) + CenterCrop replaced by one Resize to
    the crop size on both sides (the whole image, squashed; same interpolation)."""
    from torchvision import transforms as T

    steps = list(center_crop_transform.transforms)
    crops = [t for t in steps if isinstance(t, T.CenterCrop)]
    resizes = [t for t in steps if isinstance(t, T.Resize)]
    if not crops or not resizes:
        return center_crop_transform
    size = tuple(crops[0].size) if isinstance(crops[0].size, (tuple, list)) else (crops[0].size,) * 2
    if len(size) == 1:
        size = size * 2
    out = []
    for t in steps:
        if isinstance(t, T.CenterCrop):
            continue
        out.append(T.Resize(size, interpolation=t.interpolation, antialias=True) if isinstance(t, T.Resize) else t)
    return T.Compose(out)


class Backbone:
    """A frozen open_clip model with the feature readers the method needs (see module docstring).

    ``preprocess`` is the default image transform (``"squash"``); :meth:`image_transform` gives either.
    """

    def __init__(self, spec: BackboneSpec, model: nn.Module, preprocess, tokenizer, device: torch.device, name: str):
        self.spec = spec
        self.model = model
        self.preprocess_center_crop = preprocess
        self.preprocess = squash_transform(preprocess)
        self.tokenizer = tokenizer
        self.device = device
        self.name = name
        text = model if hasattr(model, "transformer") else getattr(model, "text", None)
        if text is None or not hasattr(text, "transformer") or not hasattr(text, "token_embedding"):
            raise ValueError(f"{name}: only CLIP models with open_clip's own text transformer are supported.")
        self.text = text  # holds token_embedding, positional_embedding, transformer, ln_final, text_projection
        self.context_length = int(text.positional_embedding.shape[0])
        self.width = int(text.positional_embedding.shape[1])
        self.embed_dim = int(model.visual.output_dim)
        self.heads = int(text.transformer.resblocks[0].attn.num_heads)
        self.sot_id = int(tokenizer.sot_token_id)
        self.eot_id = int(tokenizer.eot_token_id)

    # ---- text -------------------------------------------------------------------------------
    def tokenize(self, texts: list[str] | str) -> torch.Tensor:
        """Token ids [B, context_length] (CLIP BPE, SOS .. EOS, zero padding, truncated to fit)."""
        if isinstance(texts, str):
            texts = [texts]
        return self.tokenizer(list(texts))

    def causal_mask(self, length: int) -> torch.Tensor:
        """The text transformer's additive causal mask, cut to ``length`` tokens."""
        mask = getattr(self.text, "attn_mask", None)
        if mask is None:
            mask = torch.full((length, length), float("-inf"), device=self.device).triu_(1)
        return mask[:length, :length].to(self.device)

    def run_text_transformer(self, x: torch.Tensor) -> torch.Tensor:
        """Token embeddings [B, L, width] (positional embeddings NOT yet added) -> ln_final(states) [B, L, width].

        Rows may hold learnable vectors (prompt tuning): gradients flow to ``x``.
        """
        length = x.shape[1]
        x = x + self.text.positional_embedding[:length].to(x.dtype)
        x = self.text.transformer(x, attn_mask=self.causal_mask(length))
        return self.text.ln_final(x)

    def project_text(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the text projection (width -> embed_dim) to ln_final outputs."""
        return _project(x, self.text.text_projection)

    @torch.no_grad()
    def text_features(self, texts: list[str], batch_size: int = 256) -> TextFeatures:
        """Global (EOS) and local (every token) features of ``texts``; see :class:`TextFeatures`."""
        texts = list(texts)
        parts = []
        for start in range(0, len(texts), batch_size):
            ids = self.tokenize(texts[start:start + batch_size]).to(self.device)
            eos = ids.argmax(dim=-1)  # EOS has the largest id
            length = int(eos.max()) + 1
            ids = ids[:, :length]
            states = self.run_text_transformer(self.text.token_embedding(ids))
            feats = F.normalize(self.project_text(states).float(), dim=-1)
            rows = torch.arange(len(ids), device=self.device)
            mask = torch.arange(length, device=self.device)[None, :] <= eos[:, None]
            parts.append(TextFeatures(feats[rows, eos].cpu(),
                                      (feats * mask[..., None]).cpu(),  # padding rows are zero
                                      mask.cpu()))
        return TextFeatures.concat(parts, self.embed_dim)

    @torch.no_grad()
    def encode_text(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised global features [B, d] (float32, CPU), e.g. of hand-crafted prompts."""
        return self.text_features(texts, batch_size=batch_size).glob

    @torch.no_grad()
    def raw_text_embeddings(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """EOS features after the projection, NOT normalised [B, d] (float32, on the device): open_clip's
        own ``encode_text`` (the hand-crafted residual of METHOD.md section 7 sums unnormalised features)."""
        texts = list(texts)
        parts = [self.model.encode_text(self.tokenize(texts[s:s + batch_size]).to(self.device)).float()
                 for s in range(0, len(texts), batch_size)]
        return torch.cat(parts) if parts else torch.zeros(0, self.embed_dim, device=self.device)

    # ---- images ------------------------------------------------------------------------------
    def image_transform(self, resize: str = "squash"):
        """The PIL -> pixels transform: ``"squash"`` (whole image to the input size) or ``"center_crop"``."""
        if resize not in IMAGE_RESIZE_MODES:
            raise ValueError(f"Image resize mode must be one of {IMAGE_RESIZE_MODES}, got {resize!r}.")
        return self.preprocess if resize == "squash" else self.preprocess_center_crop

    @torch.no_grad()
    def image_features(self, pixels: torch.Tensor, dense_positional: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(glob [B, d], dense [B, P, d]) for preprocessed pixels [B, 3, H, W]; both L2-normalised, CPU float32.

        ``dense_positional``: ResNet towers only - add the attention pool's spatial positional
        embeddings before the v/c projections (off: the authors' dense features)."""
        visual = self.model.visual
        pixels = pixels.to(self.device, dtype=next(visual.parameters()).dtype)
        size = getattr(visual, "image_size", None)
        size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        if size[0] is not None and tuple(pixels.shape[-2:]) != size:
            raise ValueError(
                f"{self.name} expects {size[0]}x{size[1]} pixels, got {tuple(pixels.shape[-2:])}; "
                f"prepare images with backbone.preprocess."
            )
        if isinstance(visual, open_clip.modified_resnet.ModifiedResNet):
            glob, dense = self._resnet_features(visual, pixels, dense_positional)
        elif isinstance(visual, open_clip.transformer.VisionTransformer):
            glob, dense = self._vit_features(visual, pixels)
        else:
            raise ValueError(f"{self.name}: dense features need a ModifiedResNet or VisionTransformer image tower.")
        return F.normalize(glob.float(), dim=-1).cpu(), F.normalize(dense.float(), dim=-1).cpu()

    @staticmethod
    def _resnet_features(visual, pixels, dense_positional: bool = False):
        x = visual.stem(pixels)
        for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
            x = layer(x)
        glob = visual.attnpool(x)
        pool = visual.attnpool
        tokens = x.flatten(2).transpose(1, 2)  # [B, HW, C]
        if dense_positional:
            tokens = tokens + pool.positional_embedding[1:].to(tokens.dtype)  # spatial positions (0 = the mean token)
        dense = pool.c_proj(pool.v_proj(tokens))
        return glob, dense

    @staticmethod
    def _vit_features(visual, pixels):
        if visual.attn_pool is not None:
            raise ValueError("ViT towers with an attentional pooler have no per-patch features to read.")
        x = visual.transformer(visual._embeds(pixels))
        glob, _ = visual._pool(x)
        if visual.proj is not None:
            glob = glob @ visual.proj
        patches = visual.ln_post(x[:, 1:])  # drop the class token
        dense = patches @ visual.proj if visual.proj is not None else patches
        return glob, dense


_cache: dict[tuple[BackboneSpec, str], Backbone] = {}
_cache_lock = threading.Lock()


def build_backbone(spec: BackboneSpec, device: torch.device | str | None = None) -> Backbone:
    """Build the frozen backbone for ``spec`` (no cache; see :func:`load_backbone`)."""
    device = parse_device(device) if device is not None else pick_device()
    weights, quick_gelu, label = resolve_weights(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                spec.model, pretrained=weights, force_quick_gelu=quick_gelu, device="cpu",
                cache_dir=spec.cache_dir,
            )
        except Exception as err:  # noqa: BLE001 - a user's weights file can fail in any way
            if weights is None:
                raise
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise BackboneError(
                f"Could not load CLIP weights {weights!r} into {spec.model} ({type(err).__name__}: {first}). "
                f"Check that the file holds weights of this architecture."
            ) from err
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(spec.model)
    return Backbone(spec, model, preprocess, tokenizer, device, f"{spec.model}/{label}")


def load_backbone(spec: BackboneSpec | None = None, device: torch.device | str | None = None) -> Backbone:
    """Load (or fetch from the cache) the frozen backbone described by ``spec`` on ``device``."""
    spec = spec or BackboneSpec()
    device = parse_device(device) if device is not None else pick_device()
    key = (spec, str(device))
    with _cache_lock:
        if key not in _cache:
            _cache[key] = build_backbone(spec, device)
        return _cache[key]
