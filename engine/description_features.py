"""Frozen description features: every training sentence's global (EOS) and local (every token)
features, computed once per (backbone, texts) and cached - in memory (the last
``FEATURE_CACHE_ENTRIES`` corpora) and, with ``cache_dir``, on disk as safetensors keyed by the
backbone name and a hash of the texts (METHOD.md section 4). A damaged cache file is recomputed.
"""
from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import torch

from engine.clip_backbone import TextFeatures

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


