"""The authors' choices (METHOD.md section 7) on hand-worked numbers: the hand-crafted residual, the
order loss, the noise, the per-image softmax fusion, the step schedule, the RN50 dense features, the
squash preprocessing, the classifier file's inference settings, and a bigger training vocabulary."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from engine.classifier import Classifier, fuse_scores
from engine.clip_backbone import BackboneSpec, load_backbone
from engine.losses import add_noise, order_loss_pairs, order_loss_rows
from engine.metrics import mean_average_precision
from engine.prompts import PromptLayout, PromptStructure
from engine.train import Corpus, TrainConfig, Trainer, residual_embeddings, schedule, train

from tests.test_train import CATS, CLIQUES, HANDCRAFTED, SUPER, synthetic_corpus

SMALL = PromptLayout(shared=4, coarse=2, fine=2, specific=2)


@pytest.fixture(scope="module")
def rn():
    return load_backbone(BackboneSpec("tiny-rn", pretrained=None), "cpu")


@pytest.fixture(scope="module")
def structure():
    return PromptStructure(CATS, SUPER, CLIQUES)


def _unit_rows_with_cosines(c01, c02, c12):
    """Three unit vectors whose pairwise cosines are the given ones (Cholesky of their Gram matrix)."""
    gram = torch.tensor([[1.0, c01, c02], [c01, 1.0, c12], [c02, c12, 1.0]], dtype=torch.float64)
    return torch.linalg.cholesky(gram)


def test_residual_sums_unnormalised_features_then_normalises():
    learned = torch.tensor([[3.0, 0.0], [0.0, 2.0]])
    hand = torch.tensor([[0.0, 4.0], [0.0, 2.0]])
    out = residual_embeddings(learned, hand, "sum")
    # [3, 0] + [0, 4] = [3, 4] -> [0.6, 0.8]; normalising each part first would give [0.707, 0.707]
    assert torch.allclose(out, torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    anchored = residual_embeddings(learned + 1.0, hand, "anchored", anchor=learned + 1.0)
    assert torch.allclose(anchored, torch.tensor([[0.0, 1.0], [0.0, 1.0]]))  # starts at the hand prompt
    assert torch.allclose(residual_embeddings(learned, hand, "off"), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    # the hand part carries no gradient
    leaf = learned.clone().requires_grad_(True)
    h = hand.clone().requires_grad_(True)
    residual_embeddings(leaf, h, "sum").sum().backward()
    assert h.grad is None and leaf.grad is not None


def test_trainer_class_embeddings_are_the_residual_of_both_branches(rn, structure):
    trainer = Trainer(rn, structure, HANDCRAFTED, synthetic_corpus(8, 0), TrainConfig(layout=SMALL))
    g, l = trainer.class_embeddings()
    with torch.no_grad():
        enc_g = trainer.global_encoder.encode(trainer.state.global_prompts).float()
        enc_l = trainer.local_encoder.encode(trainer.state.local_prompts).float()
        hand = rn.model.encode_text(rn.tokenize(HANDCRAFTED)).float()
    assert torch.allclose(g, F.normalize(enc_g + hand, dim=-1), atol=1e-6)
    assert torch.allclose(l, F.normalize(enc_l + hand, dim=-1), atol=1e-6)
    # the authors' local prompt: one shared context, so every row starts with the same 1 + total tokens
    assert trainer.state.local_prompts.shared.shape == (SMALL.total, rn.width)
    assert trainer.state.local_prompts.specific is None


def test_order_loss_pairs_on_three_classes_by_hand():
    learned = _unit_rows_with_cosines(0.50, 0.51, 0.52)  # pairs (0,1), (0,2), (1,2)
    hand = _unit_rows_with_cosines(0.52, 0.51, 0.50)
    # x100: logits 50, 51, 52 -> p = [1, e, e^2] / Z ; hand: q = [e^2, e, 1] / Z, Z = 1 + e + e^2
    # KL(q || p) = q0 log(q0/p0) + q1 * 0 + q2 log(q2/p2) = q0 * 2 - q2 * 2 = 2 (e^2 - 1) / Z
    e = math.e
    expected = 2 * (e ** 2 - 1) / (1 + e + e ** 2)
    assert float(order_loss_pairs(learned, hand, 100.0)) == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(1.1504, abs=1e-4)
    assert float(order_loss_pairs(hand, hand)) == pytest.approx(0.0, abs=1e-9)
    # the earlier row form is inert on the same example (~1e-4 of it)
    assert float(order_loss_rows(learned, hand @ hand.T)) < 1e-3 * expected


def test_noise_is_added_without_renormalising():
    x = F.normalize(torch.randn(4, 512, generator=torch.Generator().manual_seed(0)), dim=-1)
    noisy = add_noise(x, 0.1, torch.Generator().manual_seed(1))
    expect = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(1)) * 0.1
    assert torch.equal(noisy, expect)
    # norm^2 ~ 1 + 512 * 0.01 = 6.1: the noisy features are far off the unit sphere
    assert noisy.norm(dim=-1).mean() == pytest.approx(math.sqrt(6.12), rel=0.1)
    renorm = add_noise(x, 0.1, torch.Generator().manual_seed(1), renormalize=True)
    assert torch.allclose(renorm.norm(dim=-1), torch.ones(4))
    defaults = TrainConfig()
    assert (defaults.noise_std, defaults.noise_renormalize) == (0.1, False)


def test_softmax_fusion_per_image_changes_a_class_ranking():
    # two images, two classes; S^L = S^G to keep the numbers small
    s = torch.tensor([[0.30, 0.29],   # image A
                      [0.28, 0.10]])  # image B
    linear = fuse_scores(s, s, 0.65, "linear")
    soft = fuse_scores(s, s, 0.65, "softmax", 4.0)
    # linear: class 0 ranks A (0.30) above B (0.28)
    assert linear[:, 0].tolist() == pytest.approx([0.30, 0.28])
    # softmax over classes of 4 S, per image: A: sigmoid(4 * 0.01) = 0.50999, B: sigmoid(4 * 0.18) = 0.67261
    assert soft[:, 0].tolist() == pytest.approx([1 / (1 + math.exp(-0.04)), 1 / (1 + math.exp(-0.72))], abs=1e-6)
    assert soft[1, 0] > soft[0, 0]  # class 0 now ranks B above A
    # 0.65 / 0.35 weights on different branches, by hand for image B
    s_l = torch.tensor([[0.0, 0.0], [0.0, 0.25]])
    got = fuse_scores(s, s_l, 0.65, "softmax", 4.0)
    b_g = 1 / (1 + math.exp(-0.72))
    b_l = 1 / (1 + math.exp(1.0))
    assert float(got[1, 0]) == pytest.approx(0.65 * b_g + 0.35 * b_l, abs=1e-6)
    assert Classifier(["a", "b"], torch.eye(2), torch.eye(2), "m").fusion == "softmax"


def test_schedule_is_by_steps_with_proportional_milestones(rn, structure):
    assert schedule(100, TrainConfig(batch_size=32, min_steps=200)) == (4, 200, [40, 100])
    assert schedule(100_000, TrainConfig(batch_size=512, min_steps=200)) == (196, 1960, [392, 980])
    assert schedule(100, TrainConfig(batch_size=32, min_steps=0)) == (4, 40, [8, 20])
    corpus = synthetic_corpus(40, seed=7)
    config = TrainConfig(epochs=10, batch_size=32, min_steps=30, seed=2, layout=SMALL)  # 2 steps a pass
    straight = train(rn, structure, HANDCRAFTED, corpus, config)
    assert [h.lr for h in straight.history] == pytest.approx([0.002] * 6 + [0.0002] * 9 + [0.00002] * 15)
    assert [h.epoch for h in straight.history[:5]] == [0, 0, 1, 1, 2]


def test_resume_is_bit_identical_with_a_step_schedule(rn, structure, tmp_path):
    corpus = synthetic_corpus(40, seed=8)
    config = TrainConfig(epochs=2, batch_size=16, min_steps=12, seed=4, layout=SMALL)  # 3 a pass, 4 passes
    straight = train(rn, structure, HANDCRAFTED, corpus, config)
    calls = {"n": 0}

    def stop_after_7():
        calls["n"] += 1
        return calls["n"] > 7

    ckpt = tmp_path / "r.ckpt"
    part = train(rn, structure, HANDCRAFTED, corpus, config, should_stop=stop_after_7, checkpoint_path=ckpt)
    assert part.cancelled and len(part.history) == 7
    rest = train(rn, structure, HANDCRAFTED, corpus, config, checkpoint_path=ckpt)
    assert rest.resumed_from_step == 7 and len(rest.history) == 12
    assert torch.equal(rest.classifier.global_emb, straight.classifier.global_emb)
    assert torch.equal(rest.classifier.local_emb, straight.classifier.local_emb)
    assert [h.losses for h in rest.history] == [h.losses for h in straight.history]


def test_zero_steps_with_anchored_residual_scores_as_the_zero_shot_baseline(rn, structure):
    held_out = synthetic_corpus(60, seed=9)
    feats = rn.text_features(held_out.texts)
    baseline = Classifier.from_prompts(rn, CATS, HANDCRAFTED)
    config = TrainConfig(hand_residual="anchored", layout=SMALL)
    zero = Trainer(rn, structure, HANDCRAFTED, synthetic_corpus(8, 0), config).classifier()
    a = zero.scores(feats.glob, feats.local, feats.mask)
    b = baseline.scores(feats.glob, feats.local, feats.mask)
    assert torch.allclose(a, b, atol=1e-6)
    y = torch.tensor([[float(c in labs) for c in CATS] for labs in held_out.labels])
    assert mean_average_precision(a, y) == pytest.approx(mean_average_precision(b, y), abs=1e-9)
    # the authors' sum starts between the hand prompt and the random prompts' encoding, not at the baseline
    summed = Trainer(rn, structure, HANDCRAFTED, synthetic_corpus(8, 0), TrainConfig(layout=SMALL)).classifier()
    assert not torch.allclose(summed.global_emb, baseline.global_emb, atol=1e-3)


def test_resnet_dense_features_leave_out_the_positional_embedding(rn):
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    visual = rn.model.visual
    with torch.no_grad():
        x = visual.stem(pixels)
        for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
            x = layer(x)
        tokens = x.flatten(2).transpose(1, 2)
        pool = visual.attnpool
        plain = F.normalize(pool.c_proj(pool.v_proj(tokens)), dim=-1)
        with_pos = F.normalize(pool.c_proj(pool.v_proj(tokens + pool.positional_embedding[1:])), dim=-1)
    _, dense = rn.image_features(pixels)
    _, dense_pos = rn.image_features(pixels, dense_positional=True)
    assert torch.allclose(dense, plain, atol=1e-5) and torch.allclose(dense_pos, with_pos, atol=1e-5)
    assert not torch.allclose(dense, dense_pos, atol=1e-3)


def test_squash_preprocessing_keeps_the_edges(rn):
    img = Image.new("RGB", (256, 64), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 32, 64))  # a red strip on the left edge
    squashed = rn.image_transform("squash")(img)
    cropped = rn.image_transform("center_crop")(img)
    assert squashed.shape == cropped.shape == (3, 64, 64)
    assert rn.preprocess is rn.image_transform("squash")
    # red channel high at the left edge only when the whole image is kept
    assert squashed[0, :, 0].mean() > squashed[2, :, 0].mean()
    assert cropped[0, :, 0].mean() < cropped[2, :, 0].mean()
    with pytest.raises(ValueError, match="resize mode"):
        rn.image_transform("stretch")


def test_classifier_file_keeps_inference_settings_and_reads_version_1(tmp_path):
    g = F.normalize(torch.randn(3, 8), dim=-1)
    clf = Classifier(["a", "b", "c"], g, g, "tiny-rn/random", fusion="linear", fusion_scale=2.0,
                     image_resize="center_crop", dense_positional=True)
    back = Classifier.load(clf.save(tmp_path / "v2.safetensors"))
    assert back.inference_settings() == clf.inference_settings()
    header = {"format": "image-free-studio/classifier", "format_version": 1, "categories": ["a", "b", "c"],
              "model_name": "tiny-rn/random", "lambda2": 0.65, "local_temperature": 0.025, "thresholds": {},
              "embed_dim": 8, "meta": {}}
    save_file({"global_emb": g, "local_emb": g.clone()}, str(tmp_path / "v1.safetensors"),
              metadata={"image_free_classifier": json.dumps(header)})
    old = Classifier.load(tmp_path / "v1.safetensors")
    assert old.inference_settings() == {"fusion": "linear", "fusion_scale": 4.0, "image_resize": "center_crop",
                                        "dense_positional": True}
    tuned = TrainConfig().inference_settings()
    assert (tuned["fusion"], tuned["image_resize"], tuned["dense_positional"]) == ("softmax", "squash", False)


def test_select_scores_a_smaller_vocabulary_by_name_or_synonym():
    g = F.normalize(torch.randn(4, 8, generator=torch.Generator().manual_seed(3)), dim=-1)
    big = Classifier(["person", "diningtable", "tvmonitor", "cup"], g, g.flip(0), "m", thresholds={"cup": 0.3})
    small = big.select(["dining table", "tv", "person"], aliases={"tv": ["tv monitor"]})
    assert small.categories == ["dining table", "tv", "person"]
    assert torch.equal(small.global_emb, g[[1, 2, 0]]) and torch.equal(small.local_emb, g.flip(0)[[1, 2, 0]])
    assert small.inference_settings() == big.inference_settings() and small.thresholds is None
    with pytest.raises(ValueError, match="unicorn"):
        big.select(["person", "unicorn"])


def test_defaults_are_the_authors():
    c = TrainConfig()
    assert (c.hand_residual, c.order_form, c.order_branches, c.order_scale, c.lambda1) == ("sum", "pairs", "global",
                                                                                         100.0, 0.2)
    assert (c.local_prompt, c.fusion, c.fusion_scale, c.lambda2, c.batch_size) == ("shared", "softmax", 4.0, 0.65, 512)
    assert (c.lr, c.momentum, c.weight_decay, c.score_scale, c.margin) == (0.002, 0.9, 5e-4, 4.0, 1.0)
    with pytest.raises(ValueError, match="hand_residual"):
        TrainConfig(hand_residual="maybe")
    assert Corpus(["a"], [["x"]]).texts == ["a"]
