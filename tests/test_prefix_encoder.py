"""engine.prefix_encoder: prefix-shared == naive == padded (values and gradients), on the tiny CLIPs."""
import pytest
import torch
import torch.nn.functional as F

from engine.clip_backbone import BackboneSpec, load_backbone
from engine.prefix_encoder import PromptEncoder
from engine.prompts import HierarchicalPrompts, PromptLayout, PromptStructure

CATEGORIES = ["person", "dog", "cat", "horse", "car", "bus", "truck", "traffic light", "fire hydrant", "pizza"]
SUPER = {"person": "person", "dog": "animal", "cat": "animal", "horse": "animal", "car": "vehicle",
         "bus": "vehicle", "truck": "vehicle", "traffic light": "outdoor", "fire hydrant": "outdoor"}
# overlapping cliques; "fire hydrant" and "pizza" are in none; "pizza" has no super-category
CLIQUES = [["person", "dog", "cat"], ["person", "horse"], ["car", "bus", "truck", "traffic light"],
           ["person", "car"]]

LAYOUTS = [PromptLayout(), PromptLayout(mode="shared"), PromptLayout(mode="specific"),
           PromptLayout(shared=4, coarse=0, fine=3, specific=2)]


@pytest.fixture(scope="module")
def backbone():
    return load_backbone(BackboneSpec("tiny-rn", pretrained=None), "cpu")


@pytest.fixture(scope="module")
def structure():
    return PromptStructure(CATEGORIES, SUPER, CLIQUES)


def _encode_with_grads(encoder, prompts, method):
    prompts.zero_grad(set_to_none=True)
    emb = encoder.encode(prompts, method)
    weights = torch.linspace(-1, 1, emb.numel()).view_as(emb)  # a loss that weighs every output differently
    (emb * weights).sum().backward()
    return emb.detach(), {n: p.grad.clone() for n, p in prompts.named_parameters()}


@pytest.mark.parametrize("layout", LAYOUTS, ids=["hierarchical", "shared", "specific", "16-0-3-2"])
def test_prefix_equals_naive_equals_padded(backbone, structure, layout):
    prompts = HierarchicalPrompts(structure, layout, width=backbone.width, seed=7, init_std=0.3)
    encoder = PromptEncoder(backbone, structure, layout)
    values, grads = {}, {}
    for method in ("padded", "naive", "prefix"):
        values[method], grads[method] = _encode_with_grads(encoder, prompts, method)
    assert values["prefix"].shape == (len(CATEGORIES), backbone.embed_dim)
    assert values["naive"].abs().max() > 0.1
    for method in ("naive", "prefix"):
        assert (values[method] - values["padded"]).abs().max() <= 1e-4, method
        for name, grad in grads["padded"].items():
            assert grad.abs().max() > 0, name
            assert (grads[method][name] - grad).abs().max() <= 1e-4, (method, name)
    # different categories get different embeddings
    assert torch.cdist(values["prefix"], values["prefix"]).add(torch.eye(len(CATEGORIES))).min() > 1e-3


def test_prefix_tree_shares_what_is_shared(backbone, structure):
    encoder = PromptEncoder(backbone, structure, PromptLayout())
    def tree(enc):  # nodes per tree level (the last level comes in buckets of equal name length)
        nodes = {}
        for level in enc.levels:
            key = ("+".join(kind for kind, _ in level.parts), level.start)
            nodes[key] = nodes.get(key, 0) + len(level.reps)
        return list(nodes.items())

    # 5 coarse groups (pizza alone); fine nodes: person | dog+cat, horse | car, bus+truck | light, hydrant | pizza
    assert tree(encoder) == [(("sos+shared", 0), 1), (("coarse", 17), 5), (("fine", 25), 8),
                             (("specific+name", 29), 10)]
    leaves = [level for level in encoder.levels if level.start == 29]
    assert len({level.length for level in leaves}) == len(leaves) > 1  # "traffic light" is longer than "dog"
    assert tree(PromptEncoder(backbone, structure, PromptLayout(mode="shared")))[0] == (("sos+shared", 0), 1)
    assert tree(PromptEncoder(backbone, structure, PromptLayout(mode="specific")))[0] == (("sos", 0), 1)


def test_prompt_of_real_words_matches_open_clip(backbone):
    """Context rows set to the embeddings of "a photo of a" give CLIP's own text embedding."""
    structure = PromptStructure(["dog", "traffic light"])
    layout = PromptLayout(shared=4, coarse=0, fine=0, specific=0, mode="shared")
    prompts = HierarchicalPrompts(structure, layout, width=backbone.width)
    words = backbone.tokenize(["a photo of a"])[0, 1:5]
    with torch.no_grad():
        prompts.shared.copy_(backbone.text.token_embedding(words))
    encoder = PromptEncoder(backbone, structure, layout)
    reference = backbone.model.encode_text(backbone.tokenize(["a photo of a dog.", "a photo of a traffic light."]))
    for method in ("prefix", "naive", "padded"):
        assert torch.allclose(encoder.encode(prompts, method), reference, atol=1e-5), method


def test_vit_backbone_text_tower_too(structure):
    backbone = load_backbone(BackboneSpec("tiny-vit", pretrained=None), "cpu")
    prompts = HierarchicalPrompts(structure, PromptLayout(), width=backbone.width, seed=1, init_std=0.3)
    encoder = PromptEncoder(backbone, structure, PromptLayout())
    with torch.no_grad():
        assert torch.allclose(encoder.encode(prompts, "prefix"), encoder.encode(prompts, "naive"), atol=1e-4)


def test_class_embeddings_are_not_normalised(backbone, structure):
    prompts = HierarchicalPrompts(structure, width=backbone.width)
    emb = PromptEncoder(backbone, structure).encode(prompts)
    assert not torch.allclose(emb.norm(dim=-1), torch.ones(len(CATEGORIES)), atol=1e-3)
    assert torch.isfinite(F.normalize(emb, dim=-1)).all()


def test_bad_input_is_a_clear_error(backbone, structure):
    with pytest.raises(ValueError, match="fit 77 tokens"):
        PromptEncoder(backbone, PromptStructure(["word " * 60]))
    encoder = PromptEncoder(backbone, structure)
    prompts = HierarchicalPrompts(structure, width=backbone.width)
    with pytest.raises(ValueError, match="Unknown encoding method"):
        encoder.encode(prompts, "fast")
