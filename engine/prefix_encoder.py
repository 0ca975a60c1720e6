"""Encode every category's prompt row through the frozen CLIP text transformer.

A row is ``[SOS] context(total) name-tokens "." [EOS]`` (METHOD.md section 3); the class embedding
is the EOS token's state after ``ln_final`` and the text projection (not normalised), as in CoOp.
Three methods, equal in value (tests check values and gradients within 1e-4):

* ``padded``: every row padded to the context length (77), as CoOp-style code does;
* ``naive``: rows trimmed to the longest real row (the causal mask makes the tail irrelevant);
* ``prefix``: the rows form a prefix tree (SOS + shared tokens are the same for every category, the
  coarse block for every member of a super-category, the fine block for every member of a clique
  set inside it, ...). Under a causal mask a token's state depends only on its prefix, so each
  tree level is encoded once and its per-layer keys/values are reused by its children. Attention
  is written out by hand from the frozen ``nn.MultiheadAttention`` weights of each open_clip
  resblock (``in_proj_weight``/``in_proj_bias``, ``out_proj``), with the block's own ``ln_1``,
  ``ls_1``, ``ln_2``, ``mlp``, ``ls_2``; positional embeddings are added by absolute position.

How the tree is cut into levels: the row is a chain of parts (SOS, the prompt blocks of
engine.prompts.prompt_segments, then name+"."+EOS). A new level starts where the tree branches
(the number of distinct prefixes grows); parts that do not branch join the current level. The
last level (names differ in length) is split into buckets of equal length, so nothing is padded.
All tokens of all levels are packed into one ``[tokens, width]`` tensor: layer norms, the q/k/v
and output projections and the MLP run once per layer over it; attention runs once per level
(bucket), each node attending to the keys/values of its path gathered by one index per layer.

Any subset of the categories can be planned as a tree of its own (:meth:`PromptEncoder.plan`):
engine.chunked_encoding cuts the vocabulary into such chunks so that peak memory is set by the
chunk size, not the vocabulary (``chunk_size``; the default picks it from free memory).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.clip_backbone import Backbone
from engine.chunked_encoding import ChunkPlan
from engine.prompts import HierarchicalPrompts, PromptLayout, PromptStructure, prompt_segments

METHODS = ("prefix", "naive", "padded")


@dataclass
class _Level:
    """One level of the prefix tree: its nodes are encoded together."""

    parts: list[tuple[str, int]]  # (kind, length) in order; kind "sos", "name" or a prompt block kind
    reps: torch.Tensor  # [n] a category that holds each node's tokens
    start: int  # absolute position of the level's first token
    length: int  # tokens per node
    offset: int = 0  # where the level's nodes begin in the packed [all tokens] tensor
    mask: torch.Tensor | None = None  # [length, start + length] bool: what each new token may attend to
    key_rows: torch.Tensor | None = None  # [n, start + length] packed rows of each node's path (prefix + own)


@dataclass
class PrefixTree:
    """The prefix tree of some categories' rows, planned once, encoded as one packed tensor."""

    categories: list[int]  # the categories it encodes, in output order
    levels: list[_Level]
    key_rows: torch.Tensor  # every level's path rows, flattened (one gather per layer)
    positions: torch.Tensor  # every packed token's absolute position
    eos_rows: torch.Tensor  # [n] the packed row of each category's EOS token, in ``categories`` order

    @property
    def tokens(self) -> int:
        """Token rows pushed through each layer."""
        return sum(len(lv.reps) * lv.length for lv in self.levels)


class PromptEncoder(nn.Module):
    """Class embeddings [N, d] of the categories' prompt rows, by one of METHODS.

    ``names`` defaults to the structure's category names (a name may differ from the category
    key, e.g. a nicer wording); the frozen token embeddings of "name." are computed once here.
    ``chunk_size`` (prefix method): at most this many categories are encoded with gradients at a
    time (see engine.chunked_encoding); 0 = chosen from free memory when the encoder is built
    (then fixed: ``self.chunk_size``); a value >= the number of categories = one pass.
    """

    def __init__(self, backbone: Backbone, structure: PromptStructure, layout: PromptLayout | None = None,
                 names: list[str] | None = None, chunk_size: int = 0):
        super().__init__()
        self.backbone = backbone
        self.structure = structure
        self.layout = layout or PromptLayout()
        names = list(names or structure.categories)
        if len(names) != len(structure.categories):
            raise ValueError("PromptEncoder needs one name per category.")
        if int(chunk_size) != chunk_size or chunk_size < 0:
            raise ValueError(f"The encoding chunk size must be a whole number >= 0 (0 = automatic), "
                             f"got {chunk_size}.")
        device = backbone.device
        total = self.layout.total
        ids = backbone.tokenize([f"{n}." for n in names])
        eos = ids.argmax(-1)
        # name tokens: between SOS and EOS ("." included); then EOS
        self.name_lengths = eos.tolist()  # tokens after SOS: name, ".", EOS
        too_long = [n for n, k in zip(names, self.name_lengths) if 1 + total + k > backbone.context_length]
        if too_long:
            raise ValueError(
                f"Prompt rows must fit {backbone.context_length} tokens ({total} context tokens + name + EOS); "
                f"too long: {too_long}."
            )
        n = len(names)
        longest = max(self.name_lengths)
        tail = torch.zeros(n, longest, dtype=torch.long)  # name + "." + EOS, zero padded
        for i, k in enumerate(self.name_lengths):
            tail[i, :k] = ids[i, 1:1 + k]
        with torch.no_grad():
            emb = backbone.text.token_embedding
            self.register_buffer("sos_embedding", emb(torch.tensor([backbone.sot_id], device=device)), persistent=False)
            self.register_buffer("tail_embedding", emb(tail.to(device)), persistent=False)
            self.register_buffer("pad_embedding", emb(torch.zeros(1, dtype=torch.long, device=device)), persistent=False)
        self.register_buffer("eos_index", torch.tensor([1 + total + k - 1 for k in self.name_lengths], device=device),
                             persistent=False)
        self.segments = prompt_segments(structure, self.layout)
        self.tree = self.plan(list(range(n)))
        self.chunks = ChunkPlan(self, int(chunk_size))

    @property
    def levels(self) -> list[_Level]:
        """The levels of the whole vocabulary's prefix tree."""
        return self.tree.levels

    @property
    def chunk_size(self) -> int:
        return self.chunks.size

    # ---- full rows (padded / naive) --------------------------------------------------------------
    def full_rows(self, context: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Token embeddings of the whole rows [N, length, width]; length defaults to the longest real row."""
        n = context.shape[0]
        longest = int(self.eos_index.max()) + 1
        length = longest if length is None else length
        rows = torch.cat([self.sos_embedding.expand(n, 1, -1), context.to(self.sos_embedding.dtype),
                          self.tail_embedding], dim=1)
        if length > rows.shape[1]:
            rows = torch.cat([rows, self.pad_embedding.expand(n, length - rows.shape[1], -1)], dim=1)
        return rows[:, :length]

    def _encode_rows(self, rows: torch.Tensor) -> torch.Tensor:
        states = self.backbone.run_text_transformer(rows)
        eos = states[torch.arange(rows.shape[0], device=rows.device), self.eos_index]
        return self.backbone.project_text(eos)

    # ---- prefix tree ------------------------------------------------------------------------------
    def _part_keys(self, members: list[int]) -> tuple[list[tuple[str, int]], list[list[tuple]]]:
        """The row's parts (kind, length) and, per part, each member's prefix identity after it."""
        parts = [("sos", 1)] + [(seg.kind, seg.length) for seg in self.segments]
        parts.append(("name", max(self.name_lengths[i] for i in members)))
        ids = [[0] * len(members)] + [[seg.ids[i] for i in members] for seg in self.segments] + [members]
        keys = []  # keys[p][m]: member m's prefix identity after part p
        for p, own in enumerate(ids):
            keys.append([(keys[-1][m] if p else ()) + (own[m],) for m in range(len(members))])
        return parts, keys

    def plan(self, members: list[int]) -> PrefixTree:
        """The prefix tree of the categories ``members`` (indices; the output follows their order)."""
        device = self.sos_embedding.device
        parts, keys = self._part_keys(members)
        groups: list[list[int]] = []  # part indices per level: a level starts where the tree branches
        for p in range(len(parts)):
            if p == 0 or len(set(keys[p])) > len(set(keys[p - 1])):
                groups.append([p])
            else:
                groups[-1].append(p)

        levels, start, offset = [], 0, 0
        prev_nodes, prev_rows = None, None  # previous tree level: prefix key -> node index; node -> path rows
        for g, group in enumerate(groups):
            node_of = {}
            for m, key in enumerate(keys[group[-1]]):
                node_of.setdefault(key, m)  # first member with that prefix holds the node's tokens
            firsts = list(node_of.values())
            reps = [members[m] for m in firsts]
            parent = [prev_nodes[keys[group[0] - 1][m]] for m in firsts] if prev_nodes is not None else [0] * len(reps)
            fixed = sum(parts[p][1] for p in group if parts[p][0] != "name")
            named = parts[group[-1]][0] == "name"
            lengths = [fixed + (self.name_lengths[r] if named else 0) for r in reps]
            # nodes of one level are encoded together; the last level's rows differ in length (the names),
            # so it is split into buckets of equal length: no padding anywhere
            tree_level_rows = {}
            for length in sorted(set(lengths)):
                bucket = [j for j, node_length in enumerate(lengths) if node_length == length]
                rows = offset + torch.arange(len(bucket) * length).view(len(bucket), length)
                if prev_rows is not None:
                    rows = torch.cat([prev_rows[torch.tensor([parent[j] for j in bucket])], rows], dim=1)
                # causal under a prefix of `start` tokens: new token j sees the whole prefix and new tokens <= j
                mask = torch.arange(start + length)[None, :] <= (start + torch.arange(length))[:, None]
                levels.append(_Level([parts[p] for p in group], torch.tensor([reps[j] for j in bucket], device=device),
                                     start, length, offset, mask.to(device), rows.to(device)))
                for m, j in enumerate(bucket):
                    tree_level_rows[j] = rows[m]
                offset += len(bucket) * length
            prev_nodes = {key: j for j, key in enumerate(node_of)}
            prev_rows = torch.stack([tree_level_rows[j] for j in range(len(reps))]) if g < len(groups) - 1 else None
            start += max(lengths)
        return self._packed_tree(members, levels)

    def _packed_tree(self, members: list[int], levels: list[_Level]) -> PrefixTree:
        device = self.sos_embedding.device
        key_rows = torch.cat([lv.key_rows.flatten() for lv in levels])  # all levels' paths: one gather per layer
        positions = torch.cat([torch.arange(lv.start, lv.start + lv.length).repeat(len(lv.reps)) for lv in levels])
        where = {c: m for m, c in enumerate(members)}
        eos_rows = torch.zeros(len(members), dtype=torch.long)
        eos_index = self.eos_index.tolist()
        for lv in levels:
            if lv.parts[-1][0] == "name":
                for j, i in enumerate(lv.reps.tolist()):
                    eos_rows[where[i]] = lv.offset + j * lv.length + eos_index[i] - lv.start
        return PrefixTree(list(members), levels, key_rows, positions.to(device), eos_rows.to(device))

    def _level_tokens(self, prompts: HierarchicalPrompts, level: _Level) -> torch.Tensor:
        pieces = []
        for kind, _ in level.parts:
            if kind == "sos":
                pieces.append(self.sos_embedding.expand(len(level.reps), 1, -1))
            elif kind == "name":
                pieces.append(self.tail_embedding[level.reps, :level.length - sum(k for _, k in level.parts[:-1])])
            else:
                pieces.append(prompts.block(kind, level.reps).to(self.sos_embedding.dtype))
        return torch.cat(pieces, dim=1)

    def encode_tree(self, prompts: HierarchicalPrompts, tree: PrefixTree) -> torch.Tensor:
        """Class embeddings [len(tree.categories), d] of one prefix tree, in one pass."""
        text = self.backbone.text
        # all nodes of all levels packed into one [tokens, width] tensor: per-token work (layer norms,
        # projections, MLP) runs once per layer over it; only attention goes level by level
        x = torch.cat([self._level_tokens(prompts, lv).flatten(0, 1) for lv in tree.levels])
        x = x + text.positional_embedding[tree.positions].to(x.dtype)
        for block in text.transformer.resblocks:
            x = _tree_block(block, x, tree.levels, tree.key_rows, self.backbone.heads)
        return self.backbone.project_text(text.ln_final(x[tree.eos_rows]))

    # ---- entry point ------------------------------------------------------------------------------
    def encode(self, prompts: HierarchicalPrompts, method: str = "prefix") -> torch.Tensor:
        """Class embeddings [N, d] (projected, not normalised); gradients flow to ``prompts``."""
        if method == "prefix":
            return self.chunks.encode(self, prompts)
        if method == "naive":
            return self._encode_rows(self.full_rows(prompts.rows()))
        if method == "padded":
            return self._encode_rows(self.full_rows(prompts.rows(), self.backbone.context_length))
        raise ValueError(f"Unknown encoding method {method!r}; use one of {METHODS}.")

    def forward(self, prompts: HierarchicalPrompts, method: str = "prefix") -> torch.Tensor:
        return self.encode(prompts, method)


def _tree_block(block: nn.Module, x: torch.Tensor, levels: list[_Level], key_rows: torch.Tensor,
                heads: int) -> torch.Tensor:
    """One open_clip ResidualAttentionBlock over the packed tokens ``x`` [T, w] of a prefix tree.

    Attention is done by hand from the block's frozen nn.MultiheadAttention weights. Keys and values
    are computed once per packed token; a node's tokens attend to the keys/values of its path
    (every ancestor's tokens, then causally its own). ``key_rows`` lists, level after level, the
    packed rows of every node's path, so one gather per layer fetches all of them.
    """
    attn = block.attn
    if not isinstance(attn, nn.MultiheadAttention) or getattr(block, "ln_1_kv", None) is not None:
        raise ValueError("The prefix encoder needs open_clip's standard text resblocks (nn.MultiheadAttention).")
    w = x.shape[-1]
    hd = w // heads
    q_all, kv_all = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).split([w, 2 * w], dim=1)
    queries = q_all.split([len(lv.reps) * lv.length for lv in levels])
    paths = kv_all[key_rows].split([lv.key_rows.numel() for lv in levels])
    outs = []
    for lv, q, kv in zip(levels, queries, paths):
        n, t = len(lv.reps), lv.length
        q = q.view(n, t, heads, hd).transpose(1, 2)  # [n, H, t, hd]
        k, v = kv.view(n, -1, 2, heads, hd).permute(2, 0, 3, 1, 4)  # [n, H, start + t, hd]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=lv.mask)
        outs.append(out.transpose(1, 2).reshape(n * t, w))
    x = x + block.ls_1(attn.out_proj(torch.cat(outs)))
    return x + block.ls_2(block.mlp(block.ln_2(x)))
