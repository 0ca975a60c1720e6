"""Class-prompt encoding in bounded memory: the prompt tree in chunks, re-encoded during backward.

A one-pass prefix encoding (engine.prefix_encoder) keeps every layer's activations of every
category until backward: about 7 MB per category and prompt set for an RN50-sized text tower,
7 GB for 1,000 categories. Here the categories, in prompt-tree order (super-category, fine group,
then the category), are cut into chunks of at most ``size`` categories (balanced: chunks differ by
at most one). Each chunk is a prefix tree of its own - its ancestors (SOS + shared, the blocks of
its super-categories and fine groups) are encoded with it, so within a chunk shared prefixes are
encoded once, and a group that two chunks split is encoded in both. Each chunk runs under
``torch.utils.checkpoint`` (non-reentrant): the forward keeps no activations; backward re-encodes
one chunk at a time with gradients, back-propagates its share of the embeddings' gradient and
frees it before the next. Peak memory is one chunk's activations, set by ``size``, whatever the
vocabulary. Exact: the embeddings are the same; each chunk contributes the gradient of its own
embeddings and the contributions add up (a split group's tokens receive both chunks' shares), so
the prompts get the one-pass gradients up to float32 round-off (tests/test_chunked_encoding.py).

Cost: the forward runs twice (once without activations, once again in backward), about 1.5x the
FLOPs of one pass; when one chunk holds the whole vocabulary the encoding is a plain single pass
(no recomputation). Small chunks also keep every tensor small, which matters on the CPU: glibc
serves allocations above its mmap threshold (at most 32 MB) with fresh pages every time, so a
one-pass step at 1,000 categories spends much of its time in page faults (bench/bench_scale.py
prints the minor faults per step).

Automatic size (``size`` = 0): ACTIVATION_SHARE of the device's free memory
(engine.device.free_memory), on the CPU at most CPU_ACTIVATION_CAP, divided by an estimate of one
category's activations taken from the plan (token rows and gathered key/value rows per category,
times layers, width and element size). It is chosen once, when the encoder is built, so a run
never changes it on the way; 0 resolves to a number >= 1.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch.utils.checkpoint import checkpoint

from engine.device import free_memory

if TYPE_CHECKING:  # engine.prefix_encoder imports this module
    from engine.prefix_encoder import PrefixTree, PromptEncoder
    from engine.prompts import HierarchicalPrompts

ACTIVATION_SHARE = 0.25  # of the free memory, for one chunk's activations
CPU_ACTIVATION_CAP = 512 << 20  # bytes; on the CPU the RAM is shared with everything else
UNKNOWN_FREE_MEMORY = 4 << 30  # assumed when the free memory cannot be read
MIN_AUTO_CHUNK = 8
# saved activations per layer, in units of the width: per packed token row and per gathered
# key/value path row (measured on the RN50 text tower by bench/bench_scale.py, rounded up)
TOKEN_ROW_FLOATS = 10
PATH_ROW_FLOATS = 3


def activation_bytes_per_category(encoder: "PromptEncoder") -> float:
    """Estimated bytes of saved activations per category when the whole vocabulary is one pass."""
    tree, backbone = encoder.tree, encoder.backbone
    layers = len(backbone.text.transformer.resblocks)
    element = backbone.text.positional_embedding.element_size()
    rows = TOKEN_ROW_FLOATS * tree.tokens + PATH_ROW_FLOATS * tree.key_rows.numel()
    return layers * element * backbone.width * rows / len(tree.categories)


def activation_budget(device: torch.device) -> int:
    """Bytes one chunk's activations may take on ``device`` (see the module docstring)."""
    free = free_memory(device)
    budget = ACTIVATION_SHARE * (UNKNOWN_FREE_MEMORY if free is None else free)
    if device.type == "cpu":
        budget = min(budget, CPU_ACTIVATION_CAP)
    return int(budget)


def auto_chunk_size(encoder: "PromptEncoder") -> int:
    """Categories per chunk that fit the device's activation budget (at least MIN_AUTO_CHUNK)."""
    fits = activation_budget(encoder.backbone.device) / activation_bytes_per_category(encoder)
    return max(MIN_AUTO_CHUNK, int(fits))


def tree_order(encoder: "PromptEncoder") -> list[int]:
    """Category indices sorted by their path in the prompt tree (block ids in row order)."""
    n = len(encoder.tree.categories)
    return sorted(range(n), key=lambda i: tuple(seg.ids[i] for seg in encoder.segments) + (i,))


class ChunkPlan:
    """The chunks of one encoder's vocabulary, planned once; ``size`` = 0 picks it automatically."""

    def __init__(self, encoder: "PromptEncoder", size: int = 0):
        n = len(encoder.tree.categories)
        self.size = min(n, int(size) or auto_chunk_size(encoder))
        count = math.ceil(n / self.size)
        if count == 1:
            self.trees: list[PrefixTree] = [encoder.tree]
            self.inverse = None
            return
        order = tree_order(encoder)
        bounds = [round(k * n / count) for k in range(count + 1)]
        self.trees = [encoder.plan(order[a:b]) for a, b in zip(bounds, bounds[1:])]
        inverse = torch.empty(n, dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(n)
        self.inverse = inverse.to(encoder.backbone.device)

    def encode(self, encoder: "PromptEncoder", prompts: "HierarchicalPrompts") -> torch.Tensor:
        """Class embeddings [N, d] in category order; with gradients, one chunk's activations at a time."""
        if self.inverse is None:
            return encoder.encode_tree(prompts, self.trees[0])
        if torch.is_grad_enabled():
            parts = [checkpoint(encoder.encode_tree, prompts, tree, use_reentrant=False, preserve_rng_state=False)
                     for tree in self.trees]
        else:
            parts = [encoder.encode_tree(prompts, tree) for tree in self.trees]
        return torch.cat(parts)[self.inverse]
