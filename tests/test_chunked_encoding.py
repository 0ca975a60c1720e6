"""engine.chunked_encoding: the prompt tree encoded in chunks, re-encoded during backward, gives the
one-pass embeddings and gradients (float32 round-off) for several chunk sizes, including chunks that
split a prefix group; the forward keeps no activations; the automatic size and the setting."""
import pytest
import torch

from engine.chunked_encoding import ChunkPlan, activation_bytes_per_category, auto_chunk_size, tree_order
from engine.clip_backbone import BackboneSpec, load_backbone
from engine.device import free_memory
from engine.prefix_encoder import PromptEncoder
from engine.prompts import HierarchicalPrompts, PromptLayout, PromptStructure

ADJECTIVES = ["red", "small", "wooden", "old", "bright", "round"]
NOUNS = ["chair", "lamp", "boat", "bird", "clock"]


def _structure() -> PromptStructure:
    """30 two-word categories; super-groups of 7 (the last smaller), cliques of 3 that overlap a
    super-group boundary; one category in two cliques, one in none, one without a super-category."""
    names = [f"{a} {n}" for n in NOUNS for a in ADJECTIVES]
    super_of = {c: f"group {i // 7}" for i, c in enumerate(names) if i != 29}
    cliques = [names[i:i + 3] for i in range(0, 27, 3)] + [[names[4], names[9]]]
    return PromptStructure(names, super_of, cliques)


@pytest.fixture(scope="module")
def backbone():
    return load_backbone(BackboneSpec("tiny-rn", pretrained=None), "cpu")


@pytest.fixture(scope="module")
def structure():
    return _structure()


def _value_and_grads(encoder, prompts):
    prompts.zero_grad(set_to_none=True)
    emb = encoder.encode(prompts)
    weights = torch.linspace(-1, 1, emb.numel()).view_as(emb)  # every output weighed differently
    (emb * weights).sum().backward()
    return emb.detach(), {n: p.grad.clone() for n, p in prompts.named_parameters()}


def _coarse_groups_per_chunk(encoder: PromptEncoder) -> list[set[int]]:
    return [{encoder.structure.coarse_index[c] for c in tree.categories} for tree in encoder.chunks.trees]


@pytest.mark.parametrize("layout,sizes", [(PromptLayout(), (4, 7, 29)), (PromptLayout(mode="specific"), (7,)),
                                          (PromptLayout(shared=4, coarse=0, fine=3, specific=2), (7,))],
                         ids=["hierarchical", "specific", "4-0-3-2"])
def test_chunked_gradients_equal_one_pass(backbone, structure, layout, sizes):
    n = len(structure.categories)
    prompts = HierarchicalPrompts(structure, layout, width=backbone.width, seed=3, init_std=0.3)
    one_pass = PromptEncoder(backbone, structure, layout, chunk_size=n)
    assert one_pass.chunks.inverse is None and len(one_pass.chunks.trees) == 1
    reference, reference_grads = _value_and_grads(one_pass, prompts)
    assert reference.abs().max() > 0.1
    for size in sizes:  # 4 and 7 split the 7-member super-groups; 29 leaves one category alone
        encoder = PromptEncoder(backbone, structure, layout, chunk_size=size)
        assert len(encoder.chunks.trees) == -(-n // size)
        assert sorted(c for tree in encoder.chunks.trees for c in tree.categories) == list(range(n))
        values, grads = _value_and_grads(encoder, prompts)
        assert (values - reference).abs().max() <= 1e-5, size
        for name, grad in reference_grads.items():
            assert grad.abs().max() > 0, name
            assert (grads[name] - grad).abs().max() <= 1e-5 * max(1.0, grad.abs().max().item()), (size, name)


def test_chunks_follow_the_tree_and_may_split_a_group(backbone, structure):
    order = tree_order(PromptEncoder(backbone, structure, chunk_size=len(structure.categories)))
    coarse = [structure.coarse_index[i] for i in order]
    assert coarse == sorted(coarse)  # a super-category's members are consecutive
    # 4 + 4 + ... categories per chunk: the 7-member super-groups are split between chunks
    encoder = PromptEncoder(backbone, structure, chunk_size=4)
    groups = _coarse_groups_per_chunk(encoder)
    assert any(a & b for a, b in zip(groups, groups[1:]))  # a group that two chunks share
    # a chunk is a prefix tree of its own: one shared root, its groups' nodes once each
    first = encoder.chunks.trees[0]
    assert len(first.levels[0].reps) == 1 and first.tokens < encoder.tree.tokens


def test_chunked_forward_keeps_no_activations_and_recomputes_each_chunk_once(backbone, structure):
    n = len(structure.categories)
    prompts = HierarchicalPrompts(structure, PromptLayout(), width=backbone.width, seed=0)

    def saved_bytes(encoder):
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            emb = encoder.encode(prompts)
        return total, emb

    one_pass_bytes, _ = saved_bytes(PromptEncoder(backbone, structure, chunk_size=n))
    encoder = PromptEncoder(backbone, structure, chunk_size=6)
    chunked_bytes, emb = saved_bytes(encoder)
    assert one_pass_bytes > 1_000_000 and chunked_bytes < one_pass_bytes / 100

    calls = []
    plain = encoder.encode_tree

    def counting(p, tree):
        calls.append((len(tree.categories), torch.is_grad_enabled()))
        return plain(p, tree)

    encoder.encode_tree = counting
    emb = encoder.encode(prompts)
    assert [size for size, _ in calls] == [6] * 5
    emb.sum().backward()
    assert len(calls) == 10 and all(grad for _, grad in calls[5:])  # each chunk re-encoded once, with grad
    with torch.no_grad():  # without gradients: chunk by chunk, nothing to recompute
        assert torch.allclose(encoder.encode(prompts), emb.detach(), atol=1e-6)


def test_automatic_chunk_size_and_bad_setting(backbone, structure):
    free = free_memory("cpu")
    assert free is None or free > 0
    per_category = activation_bytes_per_category(PromptEncoder(backbone, structure, chunk_size=1))
    assert per_category > 0
    encoder = PromptEncoder(backbone, structure)  # 0 = automatic: resolved once, when built
    assert encoder.chunk_size == min(len(structure.categories), auto_chunk_size(encoder)) >= 1
    assert PromptEncoder(backbone, structure, chunk_size=1000).chunk_size == len(structure.categories)
    for bad in (-1, 2.5):
        with pytest.raises(ValueError, match="chunk size"):
            PromptEncoder(backbone, structure, chunk_size=bad)
    assert isinstance(ChunkPlan(encoder, 5).trees[0].categories, list)


def test_training_with_chunks_matches_one_pass_and_resumes_across_chunk_sizes(backbone, structure, tmp_path):
    from engine.train import Corpus, TrainConfig, train

    names = structure.categories
    pairs = list(zip(names, names[3:] + names[:3]))
    corpus = Corpus([f"a {a} beside a {b}." for a, b in pairs], [[a, b] for a, b in pairs])
    hand = [f"a photo of a {c}." for c in names]

    def config(size):
        layout = PromptLayout(shared=2, coarse=2, fine=1, specific=1)
        return TrainConfig(epochs=2, min_steps=0, batch_size=30, layout=layout, encode_chunk_size=size)

    one_pass = train(backbone, structure, hand, corpus, config(len(names)))
    chunked = train(backbone, structure, hand, corpus, config(8))
    assert len(chunked.history) == len(one_pass.history) == 2
    for a, b in zip(chunked.history, one_pass.history):
        assert a.losses["total"] == pytest.approx(b.losses["total"], rel=1e-5)
    # the chunk size is not part of a run's identity: a run stopped with one size resumes with another
    ckpt = tmp_path / "run.ckpt"
    stopped = train(backbone, structure, hand, corpus, config(8), should_stop=lambda: ckpt.exists(),
                    checkpoint_path=ckpt)
    assert stopped.cancelled and len(stopped.history) == 1
    resumed = train(backbone, structure, hand, corpus, config(0), checkpoint_path=ckpt)
    assert not resumed.cancelled and resumed.resumed_from_step == 1 and len(resumed.history) == 2
    for run in (chunked, resumed):
        assert (run.classifier.global_emb - one_pass.classifier.global_emb).abs().max() <= 1e-4
        assert (run.classifier.local_emb - one_pass.classifier.local_emb).abs().max() <= 1e-4
    with pytest.raises(ValueError, match="encode_chunk_size"):
        TrainConfig(encode_chunk_size=-1)
