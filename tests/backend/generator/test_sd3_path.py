"""The paper-faithful sd3 path, exercised with tiny randomly initialised SD3 configs saved in diffusers' layout.

Stable Diffusion 3.5 Medium cannot be downloaded here, so this checks the code path (from_pretrained of transformer,
ControlNet derived from it, VAE with scaling/shift, frozen transformer), not the real weights.
"""

import torch
from diffusers import AutoencoderKL, SD3Transformer2DModel

from alignflow.flow_matching import denoising_loss, partially_tunable_inference
from alignflow.generator.latent_codec import build_codec
from alignflow.generator.model import GeneratorConfig
from alignflow.generator.sd3 import build_sd3_generator


def tiny_sd3(root):
    torch.manual_seed(0)
    SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16, pooled_projection_dim=12,
        pos_embed_max_size=16,
    ).save_pretrained(root / "transformer")
    AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8), latent_channels=4, norm_num_groups=4, layers_per_block=1,
        scaling_factor=1.5305, shift_factor=0.0609,
    ).save_pretrained(root / "vae")
    prompts = (torch.randn(2, 5, 16), torch.randn(2, 12))  # [empty, "An image of ..."] text embeddings
    return GeneratorConfig(kind="sd3", pretrained=str(root), resolution=64, controlnet_layers=1, num_classes=2), prompts


def test_sd3_forward_stage1_and_stage2_steps(tmp_path):
    config, prompts = tiny_sd3(tmp_path)
    model = build_sd3_generator(config, prompt_embeddings=prompts)
    codec = build_codec(config, torch.device("cpu"))
    assert config.latent_channels == 4
    assert not any(p.requires_grad for p in model.transformer.parameters())
    images = torch.rand(2, 3, 64, 64)
    masks = torch.zeros(2, 64, 64, dtype=torch.long)
    masks[:, 16:40, 20:44] = 1
    x1, cm = codec.encode_images(images), codec.encode_masks(masks)
    assert x1.shape == (2, 4, 8, 8)
    optimizer = torch.optim.AdamW(model.tunable_parameters("controlnet"), lr=1e-4)
    # stage 1 step
    loss = denoising_loss(model, x1, cm, cond_dropout=0.5)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    # stage 2 step: frozen steps, one graded step, decode, a differentiable image-space loss
    result = partially_tunable_inference(model, model, torch.randn_like(x1), cm, 18)
    decoded = codec.decode(result.x0_hat)
    assert decoded.shape == images.shape
    decoded.mean().backward()
    assert any(p.grad is not None for p in model.controlnet.parameters())
    assert all(p.grad is None for p in model.transformer.parameters())
    saved = model.saved_state_dict()
    assert saved and not any(key.startswith("transformer.") for key in saved)
    model.load_saved_state_dict(saved)
