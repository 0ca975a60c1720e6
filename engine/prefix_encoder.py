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
(the number of distinct prefixes grows); parts that do not branch join the current level. All
nodes of one level are encoded together as one ``[nodes, tokens, width]`` tensor; only the last
level has rows of unequal length, padded at the end (harmless under the causal mask).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.clip_backbone import Backbone
from engine.prompts import HierarchicalPrompts, PromptLayout, PromptStructure, prompt_segments

METHODS = ("prefix", "naive", "padded")


@dataclass
class _Level:
    """One level of the prefix tree: its nodes are encoded together."""

    parts: list[tuple[str, int]]  # (kind, length) in order; kind "sos", "name" or a prompt block kind
    reps: torch.Tensor  # [n] a category that holds each node's tokens
    parent: torch.Tensor | None  # [n] index of each node's parent in the previous level
    start: int  # absolute position of the level's first token
    length: int  # tokens per node (the longest, for the last level)


class PromptEncoder(nn.Module):
    """Class embeddings [N, d] of the categories' prompt rows, by one of METHODS.

    ``names`` defaults to the structure's category names (a name may differ from the category
    key, e.g. a nicer wording); the frozen token embeddings of "name." are computed once here.
    """

    def __init__(self, backbone: Backbone, structure: PromptStructure, layout: PromptLayout | None = None,
                 names: list[str] | None = None):
        super().__init__()
        self.backbone = backbone
        self.structure = structure
        self.layout = layout or PromptLayout()
        names = list(names or structure.categories)
        if len(names) != len(structure.categories):
            raise ValueError("PromptEncoder needs one name per category.")
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
        self.levels = self._plan(device)

    # ---- full rows (padded / naive) --------------------------------------------------------------
    def full_rows(self, context: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Token embeddings of the whole rows [N, length, width]; length defaults to the longest real row."""
        n, total = context.shape[0], context.shape[1]
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
    def _plan(self, device) -> list[_Level]:
        n = len(self.structure.categories)
        parts = [("sos", 1, (0,) * n)]
        parts += [(seg.kind, seg.length, seg.ids) for seg in prompt_segments(self.structure, self.layout)]
        parts.append(("name", max(self.name_lengths), tuple(range(n))))
        keys = []  # keys[p][i]: category i's prefix identity after part p
        for p, (_, _, ids) in enumerate(parts):
            keys.append([(keys[-1][i] if p else ()) + (ids[i],) for i in range(n)])

        groups: list[list[int]] = []  # part indices per level
        for p in range(len(parts)):
            if p == 0 or len(set(keys[p])) > len(set(keys[p - 1])):
                groups.append([p])
            else:
                groups[-1].append(p)

        levels, start, prev_nodes = [], 0, None
        for group in groups:
            last = keys[group[-1]]
            node_of = {}
            for i, key in enumerate(last):
                node_of.setdefault(key, i)  # first category with that prefix holds the node's tokens
            reps = list(node_of.values())
            parent = None
            if prev_nodes is not None:
                before = keys[group[0] - 1]
                parent = torch.tensor([prev_nodes[before[r]] for r in reps], device=device)
            length = sum(parts[p][1] for p in group)
            levels.append(_Level([(parts[p][0], parts[p][1]) for p in group], torch.tensor(reps, device=device),
                                 parent, start, length))
            prev_nodes = {key: j for j, key in enumerate(node_of)}
            start += length
        self.leaf_of_category = torch.tensor([prev_nodes[k] for k in keys[-1]], device=device)
        return levels

    def _level_tokens(self, prompts: HierarchicalPrompts, level: _Level) -> torch.Tensor:
        pieces = []
        for kind, _ in level.parts:
            if kind == "sos":
                pieces.append(self.sos_embedding.expand(len(level.reps), 1, -1))
            elif kind == "name":
                pieces.append(self.tail_embedding[level.reps])
            else:
                pieces.append(prompts.block(kind, level.reps).to(self.sos_embedding.dtype))
        return torch.cat(pieces, dim=1)

    def _encode_prefix(self, prompts: HierarchicalPrompts) -> torch.Tensor:
        text = self.backbone.text
        blocks = text.transformer.resblocks
        heads = self.backbone.heads
        cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per layer (K, V) of the previous level
        for level in self.levels:
            x = self._level_tokens(prompts, level)
            x = x + text.positional_embedding[level.start:level.start + x.shape[1]].to(x.dtype)
            new_cache = []
            for layer, block in enumerate(blocks):
                past = None
                if cache is not None:
                    k_prev, v_prev = cache[layer]
                    past = (k_prev[level.parent], v_prev[level.parent])
                x, k, v = _block_with_prefix(block, x, past, heads)
                new_cache.append((k, v))
            cache = new_cache
        # x: the last level's states; pick each category's EOS
        states = x[self.leaf_of_category, self.eos_index - self.levels[-1].start]
        return self.backbone.project_text(text.ln_final(states))

    # ---- entry point ------------------------------------------------------------------------------
    def encode(self, prompts: HierarchicalPrompts, method: str = "prefix") -> torch.Tensor:
        """Class embeddings [N, d] (projected, not normalised); gradients flow to ``prompts``."""
        if method == "prefix":
            return self._encode_prefix(prompts)
        if method == "naive":
            return self._encode_rows(self.full_rows(prompts.rows()))
        if method == "padded":
            return self._encode_rows(self.full_rows(prompts.rows(), self.backbone.context_length))
        raise ValueError(f"Unknown encoding method {method!r}; use one of {METHODS}.")

    def forward(self, prompts: HierarchicalPrompts, method: str = "prefix") -> torch.Tensor:
        return self.encode(prompts, method)


def _block_with_prefix(block: nn.Module, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None,
                       heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One open_clip ResidualAttentionBlock over new tokens ``x`` [n, t, w] that follow cached keys/values.

    ``past``: (K, V) [n, heads, P, head_dim] of the P tokens before ``x``. Returns the new states and
    the (K, V) of all P + t tokens. Causal: token j of ``x`` sees the whole past and x[:j+1].
    """
    attn = block.attn
    if not isinstance(attn, nn.MultiheadAttention) or getattr(block, "ln_1_kv", None) is not None:
        raise ValueError("The prefix encoder needs open_clip's standard text resblocks (nn.MultiheadAttention).")
    n, t, w = x.shape
    hd = w // heads
    qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = (z.view(n, t, heads, hd).transpose(1, 2) for z in qkv.chunk(3, dim=-1))
    p = 0
    if past is not None:
        p = past[0].shape[2]
        k = torch.cat([past[0], k], dim=2)
        v = torch.cat([past[1], v], dim=2)
    allowed = torch.arange(p + t, device=x.device)[None, :] <= (p + torch.arange(t, device=x.device))[:, None]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    out = attn.out_proj(out.transpose(1, 2).reshape(n, t, w))
    x = x + block.ls_1(out)
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return x, k, v
