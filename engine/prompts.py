"""Hierarchical learnable prompts: shared, coarse (super-category), fine (clique) and specific tokens.

METHOD.md section 3, paper section 3.3. Category i's context is

    [t_s (shared, 16)] [t_cg (its super-category, 8)] [t_fg (its clique, 4)] [t_c (its own, 4)]

followed (in the text encoder, engine.prefix_encoder) by its name tokens, "." and EOS.

Choices (METHOD.md section 2, ours where the paper is silent):
* a category missing from ``super_of`` gets a coarse group of its own;
* a category in several maximal cliques takes the MEAN of those cliques' fine blocks; a category in
  no clique gets a fine block of its own;
* random init, normal with std 0.02, under a seed (like CoOp's class-specific context);
* ablation modes (paper Table 2): "shared" = all ``total`` tokens shared by every category,
  "specific" = all ``total`` tokens per category, "hierarchical" = the four blocks.

Two independent sets (global and local) are simply two instances with different seeds.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

MODES = ("hierarchical", "shared", "specific")


@dataclass(frozen=True)
class PromptLayout:
    """Block sizes (paper Table 5: 16/8/4/4 is best) and the ablation mode."""

    shared: int = 16
    coarse: int = 8
    fine: int = 4
    specific: int = 4
    mode: str = "hierarchical"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"Prompt mode must be one of {MODES}, got {self.mode!r}.")
        sizes = (self.shared, self.coarse, self.fine, self.specific)
        if any(int(n) != n or n < 0 for n in sizes):
            raise ValueError(f"Prompt block sizes must be whole numbers >= 0, got {sizes}.")
        if self.total < 1:
            raise ValueError("The prompt needs at least one learnable token.")

    @property
    def total(self) -> int:
        return self.shared + self.coarse + self.fine + self.specific


@dataclass
class PromptStructure:
    """Plain inputs: category names, category -> super-category, and the maximal cliques.

    Derived (read-only) fields:
    coarse_groups: the super-category names, in first-seen order (own group for a category missing
        from ``super_of``, named after the category);
    coarse_index[i]: category i's coarse group;
    fine_cliques[i]: the clique indices category i belongs to (empty: none);
    fine_key[i]: identity of category i's fine block: ("cliques", sorted clique ids) when in a clique,
        ("own", i) otherwise. Equal keys mean identical fine tokens.
    """

    categories: list[str]
    super_of: dict[str, str] = field(default_factory=dict)
    cliques: list[list[str]] = field(default_factory=list)

    def __post_init__(self):
        self.categories = [str(c) for c in self.categories]
        if not self.categories:
            raise ValueError("A prompt structure needs at least one category.")
        seen = set()
        dupes = [c for c in self.categories if c in seen or seen.add(c)]
        if dupes:
            raise ValueError(f"Category names must be unique; repeated: {sorted(set(dupes))}.")
        index = {c: i for i, c in enumerate(self.categories)}
        unknown = sorted({c for clique in self.cliques for c in clique if c not in index})
        if unknown:
            raise ValueError(f"Cliques name categories that are not in the vocabulary: {unknown}.")
        self.cliques = [list(dict.fromkeys(clique)) for clique in self.cliques]

        groups: dict[str, int] = {}
        self.coarse_index = []
        for c in self.categories:
            name = self.super_of.get(c) or f"{c} (own)"
            self.coarse_index.append(groups.setdefault(name, len(groups)))
        self.coarse_groups = list(groups)

        self.fine_cliques = [[] for _ in self.categories]
        for k, clique in enumerate(self.cliques):
            for c in clique:
                self.fine_cliques[index[c]].append(k)
        self.fine_key = [
            ("cliques", tuple(ks)) if ks else ("own", i) for i, ks in enumerate(self.fine_cliques)
        ]

    @property
    def alone(self) -> list[int]:
        """Indices of the categories in no clique (each gets a fine block of its own)."""
        return [i for i, ks in enumerate(self.fine_cliques) if not ks]


@dataclass(frozen=True)
class Segment:
    """One block of a prompt row: its kind, length, and per category the id of the block it uses.

    Two categories with the same id hold identical tokens in this block (the prefix tree merges them
    when their earlier blocks are identical too).
    """

    kind: str
    length: int
    ids: tuple[int, ...]


def prompt_segments(structure: PromptStructure, layout: PromptLayout) -> list[Segment]:
    """The blocks of every category's context, in row order (empty blocks left out)."""
    n = len(structure.categories)
    if layout.mode == "shared":
        return [Segment("shared", layout.total, (0,) * n)]
    if layout.mode == "specific":
        return [Segment("specific", layout.total, tuple(range(n)))]
    fine_ids = {key: j for j, key in enumerate(dict.fromkeys(structure.fine_key))}
    segs = [
        Segment("shared", layout.shared, (0,) * n),
        Segment("coarse", layout.coarse, tuple(structure.coarse_index)),
        Segment("fine", layout.fine, tuple(fine_ids[k] for k in structure.fine_key)),
        Segment("specific", layout.specific, tuple(range(n))),
    ]
    return [seg for seg in segs if seg.length > 0]


class HierarchicalPrompts(nn.Module):
    """The learnable context vectors of every category (one prompt set).

    Parameters (those present depend on the mode and on the block sizes):
    shared [S, w], coarse [G, C, w], fine [K + A, F, w] (K cliques, then A own blocks for the
    categories in no clique), specific [N, Sp, w]. In "shared" mode only ``shared`` [total, w]; in
    "specific" mode only ``specific`` [N, total, w].
    """

    def __init__(self, structure: PromptStructure, layout: PromptLayout | None = None, width: int = 512,
                 seed: int = 0, init_std: float = 0.02):
        super().__init__()
        layout = layout or PromptLayout()
        self.structure = structure
        self.layout = layout
        self.width = width
        n = len(structure.categories)
        gen = torch.Generator().manual_seed(seed)

        def param(*shape):
            return nn.Parameter(torch.randn(*shape, width, generator=gen) * init_std)

        self.shared = self.coarse = self.fine = self.specific = None
        if layout.mode == "shared":
            self.shared = param(layout.total)
        elif layout.mode == "specific":
            self.specific = param(n, layout.total)
        else:
            if layout.shared:
                self.shared = param(layout.shared)
            if layout.coarse:
                self.coarse = param(len(structure.coarse_groups), layout.coarse)
            if layout.fine:
                self.fine = param(len(structure.cliques) + len(structure.alone), layout.fine)
            if layout.specific:
                self.specific = param(n, layout.specific)
        # category -> fine blocks averaging matrix [N, K + A] (rows sum to 1): the mean-of-cliques rule
        mix = torch.zeros(n, len(structure.cliques) + len(structure.alone))
        own = {i: len(structure.cliques) + a for a, i in enumerate(structure.alone)}
        for i, ks in enumerate(structure.fine_cliques):
            for k in ks or [own[i]]:
                mix[i, k] = 1.0 / max(1, len(ks))
        self.register_buffer("fine_mix", mix, persistent=False)

    @property
    def num_categories(self) -> int:
        return len(self.structure.categories)

    def segments(self) -> list[Segment]:
        """The row's blocks in order, with block identities per category (used for the prefix tree)."""
        return prompt_segments(self.structure, self.layout)

    def block(self, kind: str, categories: torch.Tensor | None = None) -> torch.Tensor:
        """The ``kind`` block's tokens for the given category indices (default: all): [n, length, w]."""
        n = self.num_categories
        idx = torch.arange(n, device=self.fine_mix.device) if categories is None else categories
        if kind == "shared":
            return self.shared.unsqueeze(0).expand(len(idx), -1, -1)
        if kind == "coarse":
            coarse_index = torch.tensor(self.structure.coarse_index, device=idx.device)
            return self.coarse[coarse_index[idx]]
        if kind == "fine":
            return torch.einsum("nk,kfw->nfw", self.fine_mix[idx], self.fine)
        if kind == "specific":
            return self.specific[idx]
        raise ValueError(f"Unknown prompt block {kind!r}.")

    def rows(self) -> torch.Tensor:
        """Every category's context tokens: [N, layout.total, width]."""
        return torch.cat([self.block(seg.kind) for seg in self.segments()], dim=1)

    def forward(self) -> torch.Tensor:
        return self.rows()
