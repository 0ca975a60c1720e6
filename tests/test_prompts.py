"""engine.prompts: layouts, the structure's groups, and the learnable blocks."""
import pytest
import torch

from engine.prompts import HierarchicalPrompts, PromptLayout, PromptStructure

CATEGORIES = ["person", "dog", "cat", "car", "bus", "hydrant", "pizza"]
SUPER = {"person": "person", "dog": "animal", "cat": "animal", "car": "vehicle", "bus": "vehicle",
         "hydrant": "outdoor"}  # pizza: no super-category
CLIQUES = [["person", "dog", "cat"], ["person", "car"], ["car", "bus"]]  # hydrant, pizza: in none


@pytest.fixture
def structure():
    return PromptStructure(CATEGORIES, SUPER, CLIQUES)


def test_layout_defaults_and_validation():
    layout = PromptLayout()
    assert (layout.shared, layout.coarse, layout.fine, layout.specific) == (16, 8, 4, 4)
    assert layout.total == 32 and layout.mode == "hierarchical"
    with pytest.raises(ValueError, match="mode"):
        PromptLayout(mode="both")
    with pytest.raises(ValueError, match="whole numbers"):
        PromptLayout(shared=-1)


def test_structure_groups(structure):
    s = structure
    assert s.coarse_groups == ["person", "animal", "vehicle", "outdoor", "pizza (own)"]
    assert s.coarse_index == [0, 1, 1, 2, 2, 3, 4]
    assert s.fine_cliques == [[0, 1], [0], [0], [1, 2], [2], [], []]
    assert s.fine_key[1] == s.fine_key[2]  # dog and cat: same clique set -> identical fine tokens
    assert s.fine_key[5] == ("own", 5) and s.alone == [5, 6]


def test_structure_rejects_bad_input():
    with pytest.raises(ValueError, match="unique"):
        PromptStructure(["a", "b", "a"])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        PromptStructure(["a", "b"], {}, [["a", "zebra"]])
    with pytest.raises(ValueError, match="at least one"):
        PromptStructure([])


def test_hierarchical_blocks_follow_the_rules(structure):
    prompts = HierarchicalPrompts(structure, PromptLayout(), width=16, seed=3)
    rows = prompts.rows()
    assert rows.shape == (7, 32, 16)
    shared, coarse, fine, specific = rows[:, :16], rows[:, 16:24], rows[:, 24:28], rows[:, 28:]
    assert all(torch.equal(shared[0], shared[i]) for i in range(7))
    assert torch.equal(coarse[1], coarse[2]) and torch.equal(coarse[3], coarse[4])
    assert not torch.equal(coarse[0], coarse[1]) and not torch.equal(coarse[5], coarse[6])
    cliques = prompts.fine[:3]
    assert torch.allclose(fine[0], (cliques[0] + cliques[1]) / 2)  # person: mean of cliques 0 and 1
    assert torch.allclose(fine[3], (cliques[1] + cliques[2]) / 2)  # car: mean of cliques 1 and 2
    assert torch.equal(fine[1], cliques[0]) and torch.equal(fine[4], cliques[2])
    assert torch.equal(fine[5], prompts.fine[3]) and torch.equal(fine[6], prompts.fine[4])  # own blocks
    assert len({tuple(specific[i].flatten().tolist()) for i in range(7)}) == 7
    # shapes of the parameters: 5 coarse groups, 3 cliques + 2 own fine blocks
    assert prompts.coarse.shape == (5, 8, 16) and prompts.fine.shape == (5, 4, 16)
    assert prompts.specific.shape == (7, 4, 16)


def test_ablation_modes(structure):
    shared = HierarchicalPrompts(structure, PromptLayout(mode="shared"), width=8)
    rows = shared.rows()
    assert rows.shape == (7, 32, 8)
    assert all(torch.equal(rows[0], rows[i]) for i in range(7))
    assert [n for n, _ in shared.named_parameters()] == ["shared"]
    specific = HierarchicalPrompts(structure, PromptLayout(mode="specific"), width=8)
    rows = specific.rows()
    assert rows.shape == (7, 32, 8)
    assert not torch.equal(rows[1], rows[2])
    assert [n for n, _ in specific.named_parameters()] == ["specific"]


def test_empty_blocks_are_left_out(structure):
    prompts = HierarchicalPrompts(structure, PromptLayout(shared=8, coarse=0, fine=2, specific=0), width=8)
    assert [seg.kind for seg in prompts.segments()] == ["shared", "fine"]
    assert prompts.rows().shape == (7, 10, 8)


def test_seeded_init(structure):
    a = HierarchicalPrompts(structure, width=64, seed=0)
    b = HierarchicalPrompts(structure, width=64, seed=0)
    c = HierarchicalPrompts(structure, width=64, seed=1)
    assert torch.equal(a.rows(), b.rows())
    assert not torch.equal(a.rows(), c.rows())
    assert 0.015 < a.shared.std().item() < 0.025  # init std 0.02
    assert all(p.requires_grad for p in a.parameters())


def test_gradients_reach_every_block(structure):
    prompts = HierarchicalPrompts(structure, width=8)
    (prompts.rows() ** 2).sum().backward()
    for name, p in prompts.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
