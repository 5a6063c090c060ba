"""L_M, the stage-2 mask-consistency loss: gradients, and a real stage-2 run with it (tiny models, real data)."""

import copy
import json
import shutil

import pytest
import torch

from alignflow.cli import main
from alignflow.data import all_flips, load_masks
from alignflow.fidelity.mask_consistency import MaskConsistencyReward
from alignflow.fidelity.segmenter import Segmenter, SegmenterConfig
from alignflow.flow_matching import frozen_euler, tunable_jump
from alignflow.generator.config import TrainConfig
from alignflow.generator.factory import build_generator
from alignflow.generator.latent_codec import build_codec
from alignflow.generator.model import GeneratorConfig
from alignflow.generator.training import Trainer
from alignflow.runs.events import read_events

TINY = dict(resolution=32, num_layers=2, controlnet_layers=1, attention_head_dim=8, num_attention_heads=2, context_tokens=2, patch_size=1)
TINY_SEGMENTER = dict(architecture="basic-unet", channels=[4, 4, 8, 8, 16, 4], resolution=32)


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    model = build_generator(GeneratorConfig(**TINY))
    for parameter in model.controlnet.parameters():
        torch.nn.init.normal_(parameter, std=0.02)
    codec = build_codec(model.config, torch.device("cpu"))
    reward = MaskConsistencyReward(Segmenter(SegmenterConfig(**TINY_SEGMENTER)))
    masks = torch.zeros(2, 32, 32, dtype=torch.long)
    masks[0, 8:20, 8:20] = 1
    masks[1, 16:30, 4:12] = 1
    return model, codec, reward, masks


def mask_loss(model, frozen, codec, reward, masks, k, detach_start=False):
    mask_latents = codec.encode_masks(masks).detach()
    noise = torch.randn(masks.shape[0], 32, 4, 4, generator=torch.Generator().manual_seed(3))
    x_s = frozen_euler(frozen, noise, mask_latents, k)
    x_s = x_s.detach() if detach_start else x_s
    images = codec.decode(tunable_jump(model, x_s, k / 20, mask_latents))
    return reward(images, masks)


def test_gradient_reaches_only_the_tunable_weights_through_the_graded_step(parts):
    model, codec, reward, masks = parts
    model = copy.deepcopy(model)
    model.transformer.requires_grad_(False)  # the paper tunes the ControlNet only
    model.conditioning.requires_grad_(False)
    snapshot = copy.deepcopy(model).requires_grad_(False)
    loss = mask_loss(model, snapshot, codec, reward, masks, 18)
    loss.backward()
    assert loss > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.controlnet.parameters())
    for frozen, name in [(model.transformer, "transformer"), (model.conditioning, "conditioning"), (snapshot, "v_theta*"),
                         (reward.segmenter, "segmenter"), (codec, "autoencoder")]:
        assert all(p.grad is None for p in frozen.parameters()), name
    # Only the graded step carries the gradient: the same gradient with the frozen steps' output detached.
    full = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    mask_loss(model, snapshot, codec, reward, masks, 18, detach_start=True).backward()
    for name, grad in full.items():
        assert torch.allclose(grad, dict(model.named_parameters())[name].grad, atol=1e-6), name


def test_loss_prefers_images_that_show_their_mask(parts):
    _, _, reward, masks = parts
    trained = MaskConsistencyReward(Segmenter(SegmenterConfig(**TINY_SEGMENTER)))
    images = masks[:, None].float().expand(-1, 3, -1, -1).contiguous()
    optimizer = torch.optim.Adam(trained.segmenter.parameters(), lr=1e-2)
    trained.segmenter.requires_grad_(True).train()
    for _ in range(30):  # a segmenter that learned "bright = lesion"
        optimizer.zero_grad()
        trained(images, masks).backward()
        optimizer.step()
    trained.segmenter.requires_grad_(False).eval()
    assert trained(images, masks) < trained(images, masks.roll(8, dims=-1))


def test_stage2_run_with_mask_loss(tmp_path, kvasir, clinicdb, make_pairs):
    make_pairs(kvasir, tmp_path / "data", 4)
    (tmp_path / "refs").mkdir()
    for image in sorted((clinicdb / "images").glob("*.png"))[:3]:
        shutil.copy(image, tmp_path / "refs" / image.name)
    common = ["--source", str(tmp_path / "data"), "--steps", "1", "--batch-size", "2", "--device", "cpu"]
    assert main(["train-evaluator", "--role", "reward", "--out", str(tmp_path / "reward"), "--resolution", "32", *common]) == 0
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"generator": TINY, "align_batch_size": 2, "log_every": 1}))
    assert main(["train", "--out", str(tmp_path / "s1"), "--config", str(config), *common]) == 0
    args = ["align", "--init", str(tmp_path / "s1"), "--references", str(tmp_path / "refs"), "--out", str(tmp_path / "s2"),
            "--config", str(config), *common]
    assert main([*args, "--w-mask", "-0.5", "--mask-segmenter", str(tmp_path / "reward")]) == 2
    assert main([*args, "--w-mask", "1.0"]) == 2  # no segmenter
    assert main([*args, "--w-mask", "1.0", "--mask-segmenter", str(tmp_path / "reward")]) == 0
    progress = [e for e in read_events(tmp_path / "s2") if e["type"] == "progress" and e.get("stage") == 2]
    assert progress and all(e["loss_mask"] > 0 for e in progress)
    assert "mask_reward" in json.loads((tmp_path / "s2" / "summary.json").read_text())["seconds_per_step"]
    info = json.loads((tmp_path / "s2" / "generator" / "generator.json").read_text())["_info"]
    assert info["mask_segmenter"] == str(tmp_path / "reward")
    # With flipped pairs, each L_M target is its latent row's mask, flipped the same way (flip-major rows).
    flipped = TrainConfig.from_dict({**json.loads((tmp_path / "s2" / "config.json").read_text()), "flip_augment": True,
                                     "out": str(tmp_path / "s2_flipped")})
    trainer = Trainer(flipped)
    trainer._prepare()
    masks = load_masks(sorted((tmp_path / "data" / "masks").iterdir()), 32)
    assert len(trainer.mask_ids) == len(trainer.image_latents) == 16
    torch.testing.assert_close(trainer.mask_ids.long(), all_flips(masks))
