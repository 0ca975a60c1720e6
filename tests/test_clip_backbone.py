"""engine.clip_backbone on the tiny in-repo CLIPs (real open_clip code, real tokenizer, random weights)."""
import pytest
import torch
import torch.nn.functional as F

from engine.clip_backbone import (
    Backbone,
    BackboneSpec,
    MissingWeightsError,
    build_backbone,
    load_backbone,
)

TINY_RN = BackboneSpec("tiny-rn", pretrained=None)
TINY_VIT = BackboneSpec("tiny-vit", pretrained=None)


@pytest.fixture(scope="module")
def rn() -> Backbone:
    return load_backbone(TINY_RN, "cpu")


@pytest.fixture(scope="module")
def vit() -> Backbone:
    return load_backbone(TINY_VIT, "cpu")


def test_attributes_and_cache(rn):
    assert rn.name == "tiny-rn/random"
    assert rn.context_length == 77
    assert rn.embed_dim == 64
    assert rn.device == torch.device("cpu")
    assert load_backbone(TINY_RN, "cpu") is rn
    assert all(not p.requires_grad for p in rn.model.parameters())
    assert not rn.model.training


def test_tokenizer_is_clip_bpe(rn):
    ids = rn.tokenize(["a photo of a dog."])
    assert ids.shape == (1, 77)
    # CLIP's BPE vocabulary: <start_of_text>=49406, "a"=320, "photo"=1125, "of"=539, "dog"=1929, "."=269.
    assert ids[0, :8].tolist() == [49406, 320, 1125, 539, 320, 1929, 269, 49407]
    assert ids[0, 8:].eq(0).all()


def test_text_features_shapes_mask_and_norm(rn):
    texts = ["a dog runs on the beach next to a red frisbee.", "a cat", "bus"]
    feats = rn.text_features(texts, batch_size=2)  # two batches of different lengths
    lengths = rn.tokenize(texts).argmax(-1) + 1
    longest = int(lengths.max())
    assert feats.glob.shape == (3, 64)
    assert feats.local.shape == (3, longest, 64)
    assert feats.mask.dtype == torch.bool
    assert feats.mask.sum(1).tolist() == lengths.tolist()
    assert torch.allclose(feats.glob.norm(dim=-1), torch.ones(3), atol=1e-5)
    real = feats.local[feats.mask]
    assert torch.allclose(real.norm(dim=-1), torch.ones(len(real)), atol=1e-5)
    assert feats.local[~feats.mask].abs().sum() == 0
    # global = open_clip's own text embedding (full 77-token rows), normalised
    reference = F.normalize(rn.model.encode_text(rn.tokenize(texts)), dim=-1)
    assert torch.allclose(feats.glob, reference, atol=1e-5)
    # the local feature at EOS is the global feature
    assert torch.allclose(feats.local[torch.arange(3), lengths - 1], feats.glob, atol=1e-6)
    assert torch.allclose(rn.encode_text(texts), feats.glob, atol=1e-5)


@pytest.mark.parametrize("which,patches", [("rn", 2 * 2), ("vit", 4 * 4)])
def test_image_features_shapes(which, patches, request):
    backbone = request.getfixturevalue(which)
    pixels = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    glob, dense = backbone.image_features(pixels)
    assert glob.shape == (3, 64)
    assert dense.shape == (3, patches, 64)
    assert torch.allclose(glob.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(dense.norm(dim=-1), torch.ones(3, patches), atol=1e-5)
    reference = F.normalize(backbone.model.encode_image(pixels), dim=-1)
    assert torch.allclose(glob, reference, atol=1e-5)
    # different positions carry different features: the content differs (no positional embedding
    # is added by default, the authors' dense features), or the positional embedding does (ResNet)
    shaded = pixels.clone()
    shaded[:, :, :, :32] += 3.0  # left half bright
    _, dense_shaded = backbone.image_features(shaded)
    assert (dense_shaded[:, 0] - dense_shaded[:, -1]).abs().max() > 1e-3
    if which == "rn":
        _, dense_pos = backbone.image_features(pixels, dense_positional=True)
        assert (dense_pos[:, 0] - dense_pos[:, -1]).abs().max() > 1e-3


def test_image_features_from_a_real_photo(vit):
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    image = Image.fromarray(skimage_data.chelsea())
    pixels = vit.preprocess(image).unsqueeze(0)
    glob, dense = vit.image_features(pixels)
    assert glob.shape == (1, 64) and dense.shape == (1, 16, 64)


def test_wrong_image_size_is_a_clear_error(rn):
    with pytest.raises(ValueError, match="preprocess"):
        rn.image_features(torch.zeros(1, 3, 32, 32))


def test_tiny_model_is_deterministic_across_loads():
    a = build_backbone(TINY_RN, "cpu").model.state_dict()
    b = build_backbone(TINY_RN, "cpu").model.state_dict()
    c = build_backbone(BackboneSpec("tiny-rn", pretrained=None, seed=1), "cpu").model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["token_embedding.weight"], c["token_embedding.weight"])


def test_missing_checkpoint_file_is_one_clear_error(tmp_path):
    path = tmp_path / "nowhere" / "RN50.pt"
    with pytest.raises(MissingWeightsError) as info:
        load_backbone(BackboneSpec("RN50", checkpoint=str(path)), "cpu")
    message = str(info.value)
    assert str(path) in message and "IFS_CLIP_CHECKPOINT" in message


def test_missing_pretrained_tag_offline_is_one_clear_error(tmp_path, monkeypatch):
    # Offline with an empty cache: must fail at once, without touching the network.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("IFS_CLIP_CHECKPOINT", raising=False)
    with pytest.raises(MissingWeightsError) as info:
        load_backbone(BackboneSpec("RN50", pretrained="openai", cache_dir=str(tmp_path)), "cpu")
    message = str(info.value)
    assert "RN50/openai" in message and "offline" in message and "IFS_CLIP_CHECKPOINT" in message


def test_missing_pretrained_tag_unreachable_host_fails_at_once(tmp_path, monkeypatch):
    # Not declared offline, but the weights' host cannot be reached (a closed loopback port):
    # the clear error comes from the reachability check ("offline"), before any download and its
    # retries (the download path's message says "could not be downloaded" instead).
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("IFS_OFFLINE", raising=False)
    monkeypatch.delenv("IFS_CLIP_CHECKPOINT", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(MissingWeightsError) as info:
        load_backbone(BackboneSpec("RN50", pretrained="openai", cache_dir=str(tmp_path)), "cpu")
    message = str(info.value)
    assert "RN50/openai" in message and "offline" in message and "IFS_CLIP_CHECKPOINT" in message


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown CLIP model"):
        load_backbone(BackboneSpec("no-such-model", pretrained=None), "cpu")
