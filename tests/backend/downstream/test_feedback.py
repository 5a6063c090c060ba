"""Generative Feedback (free-lunch Eq. 7-11): the soft mask, its agreement with the generation path, where its
gradient goes, bad input, and a downstream run that trains with it on real pairs."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from alignflow.data import load_pairs, mask_to_rgb, scan_dataset
from alignflow.downstream import DownstreamConfig, evaluate_segmentation
from alignflow.downstream.feedback import GenerativeFeedback, soft_mask_image
from alignflow.errors import InputError
from alignflow.flow_matching import interpolate
from alignflow.generator.alignment_regularization import predicted_noise
from alignflow.generator.config import TrainConfig
from alignflow.generator.sampling import LoadedGenerator, load_generator
from alignflow.generator.training import train
from alignflow.runs.events import read_events

TINY_GENERATOR = {"resolution": 32, "num_layers": 2, "controlnet_layers": 1, "attention_head_dim": 8,
                  "num_attention_heads": 2, "context_tokens": 2, "patch_size": 1}
SMALL_UNET = {"channels": [8, 16, 32, 64], "num_res_units": 1}


@pytest.fixture(scope="module")
def trained_generator(tmp_path_factory, kvasir_train) -> Path:
    """A tiny generator trained for 2 steps on the downstream training pairs (a real generator folder)."""
    out = tmp_path_factory.mktemp("feedback_generator")
    return train(TrainConfig(source=str(kvasir_train), out=str(out), steps=2, batch_size=2, device="cpu", checkpoint_every=100,
                             preview_every=100, generator=dict(TINY_GENERATOR)))


@pytest.fixture(scope="module")
def generator(trained_generator) -> LoadedGenerator:
    """That generator with its ControlNet's zero-initialised layers (input embedding, output projections) drawn at
    random, as training would leave them: after 2 steps they are still ~1e-4, so the mask would barely matter."""
    loaded = load_generator(trained_generator, torch.device("cpu"))
    draws = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in loaded.model.controlnet.named_parameters():
            if name.startswith(("controlnet_blocks", "pos_embed_input")):
                parameter.copy_(torch.randn(parameter.shape, generator=draws) * 0.05)
    return loaded


def test_the_soft_mask_is_eq9_for_two_classes_and_the_hard_mask_image_for_one_hot_logits():
    logits = torch.randn(2, 2, 8, 8)
    image = soft_mask_image(logits, 0.5)
    expected = torch.softmax(logits / 0.5, dim=1)[:, 1]
    assert image.shape == (2, 3, 8, 8) and all(torch.allclose(image[:, c], expected) for c in range(3))
    masks = torch.randint(0, 3, (2, 8, 8))
    one_hot = F.one_hot(masks, 3).permute(0, 3, 1, 2).float() * 100.0
    assert torch.allclose(soft_mask_image(one_hot, 1.0), mask_to_rgb(masks, 3), atol=1e-6)


def test_feedback_on_the_true_masks_is_the_generators_noise_loss_on_its_own_conditioning(generator, kvasir_train):
    """With one-hot logits of the real masks, L_fb conditions the generator exactly as generation does (Eq. 10)."""
    images, masks = load_pairs(scan_dataset(kvasir_train), 32, range(2))
    one_hot = F.one_hot(masks, 2).permute(0, 3, 1, 2).float() * 100.0
    loss = GenerativeFeedback(generator)(images, one_hot, generator=torch.Generator().manual_seed(7))

    draws = torch.Generator().manual_seed(7)
    x1 = generator.codec.encode_images(images)
    eps = torch.randn(x1.shape, generator=draws)
    t = torch.rand(2, generator=draws)
    x_t = interpolate(x1, eps, t)
    velocity = generator.model.velocity(x_t, t, generator.codec.encode_masks(masks))
    assert loss.item() == pytest.approx(F.mse_loss(predicted_noise(x_t, t, velocity), eps).item(), rel=1e-4)
    wrong = GenerativeFeedback(generator)(images, one_hot.roll(8, dims=3), generator=torch.Generator().manual_seed(7))
    assert abs(wrong.item() - loss.item()) > 1e-6  # the mask does steer the generator


def test_the_gradient_reaches_the_segmenter_and_not_the_generator(generator, kvasir_train):
    images, _ = load_pairs(scan_dataset(kvasir_train), 32, range(2))
    segmenter = torch.nn.Conv2d(3, 2, 3, padding=1)
    feedback = GenerativeFeedback(generator, temperature=0.5)
    feedback(images, segmenter(images)).backward()
    assert segmenter.weight.grad is not None and segmenter.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in feedback.parameters())


def test_bad_feedback_settings_are_input_errors(tmp_path, kvasir_train, kvasir_test, generator):
    base = dict(train=str(kvasir_train), test={"kvasir": str(kvasir_test)}, out=str(tmp_path / "run"), resolution=32)
    for values, flag in (({"w_feedback": -1.0, "feedback_generator": "g"}, "--w-feedback"),
                         ({"feedback_temperature": 0.0}, "--feedback-temperature"),
                         ({"feedback_temperature": 1.5}, "--feedback-temperature"),
                         ({"w_feedback": 1.0}, "--feedback-generator"),
                         ({"w_feedback": 1.0, "feedback_generator": "g", "model": "medflowseg"}, "--w-feedback"),
                         ({"w_feedback": 1.0, "feedback_generator": "g", "batch_size": 4, "feedback_batch_size": 5}, "--feedback-batch-size"),
                         ({"w_feedback": 1.0, "feedback_generator": "g", "feedback_batch_size": 0}, "--feedback-batch-size")):
        with pytest.raises(InputError, match=flag):
            DownstreamConfig.from_dict({**base, **values})
    feedback = GenerativeFeedback(generator)
    with pytest.raises(InputError, match="--feedback-generator.*64 px"):
        feedback.check_compatible(64, 2, "--feedback-generator")
    with pytest.raises(InputError, match="--feedback-generator.*3 mask classes"):
        feedback.check_compatible(32, 3, "--feedback-generator")


def test_a_downstream_run_trains_with_feedback_and_logs_both_terms(tmp_path, kvasir_train, kvasir_test, trained_generator):
    config = DownstreamConfig.from_dict(dict(
        train=str(kvasir_train), test={"kvasir": str(kvasir_test)}, out=str(tmp_path / "run"), model="unet",
        model_options=dict(SMALL_UNET), steps=3, batch_size=4, resolution=32, device="cpu", seed=3, log_every=1,
        checkpoint_every=100, preview_every=100, feedback_generator=str(trained_generator.parent), w_feedback=1.0,
        feedback_temperature=0.5, feedback_batch_size=2))
    results = evaluate_segmentation(config)
    progress = [e for e in read_events(tmp_path / "run") if e["type"] == "progress" and e.get("stage") == "downstream"]
    assert [e["step"] for e in progress] == [1, 2, 3]
    for event in progress:
        assert event["loss_feedback"] > 0
        assert event["loss"] == pytest.approx(event["loss_segmentation"] + event["loss_feedback"], rel=1e-5)
    assert results["config"]["feedback_generator"] == str(trained_generator.parent.resolve())
    assert 0 <= results["test"]["kvasir"]["dice"] <= 1
    # The generator folder must match the segmenter's resolution: named, before any training.
    bad = DownstreamConfig.from_dict({**config.to_dict(), "out": str(tmp_path / "bad"), "resolution": 64})
    with pytest.raises(InputError, match="--feedback-generator"):
        evaluate_segmentation(bad)
    assert load_generator(trained_generator, torch.device("cpu")).config.resolution == 32
