"""The sd3 text path: ``encode_prompts`` and ``build_sd3_generator`` without precomputed prompt embeddings.

A tiny Stable Diffusion 3 pipeline (two CLIP text encoders, a T5 encoder, their tokenizers, scheduler, VAE and
transformer, all randomly initialised and made locally) is saved in diffusers' layout and loaded back through the
project's code, fully offline. This checks the plumbing (shapes, which encoder feeds what), not real weights.
"""

import json

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer, T5Config, T5EncoderModel, T5Tokenizer

from alignflow.generator.model import GeneratorConfig
from alignflow.generator.sd3 import build_sd3_generator, encode_prompts

JOINT_DIM = 32  # transformer joint_attention_dim = T5 d_model; must be >= the two CLIP widths together (16 + 16)
CLIP_HIDDEN = 16
CLIP_PROJECTIONS = (8, 4)  # pooled_projection_dim = 12
CLIP_TOKENS = 77  # CLIP model_max_length, as in the real SD3 tokenizers
T5_TOKENS = 256  # encode_prompt's default max_sequence_length


def _byte_chars() -> list[str]:
    """GPT-2 / CLIP byte-to-unicode table: the characters a byte-level BPE vocabulary is built from."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def tiny_clip_tokenizer(directory) -> CLIPTokenizer:
    chars = _byte_chars()
    tokens = ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars] + ["an</w>", "im", "image</w>"]
    merges = ["a n</w>", "i m", "im a", "ima g", "imag e</w>"]
    tokens += ["ima", "imag"]
    vocab = {token: index for index, token in enumerate(tokens)}
    directory.mkdir(parents=True)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(
        vocab=str(directory / "vocab.json"), merges=str(directory / "merges.txt"), model_max_length=CLIP_TOKENS
    )


def tiny_t5_tokenizer() -> T5Tokenizer:
    # Unigram pieces with log-probabilities; <pad>=0, </s>=1, <unk>=2 as in T5.
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(f"▁{word}", -1.0) for word in ("an", "image", "of", "a", "polyp")]
    pieces += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


def tiny_clip_encoder(tokenizer: CLIPTokenizer, projection_dim: int) -> CLIPTextModelWithProjection:
    return CLIPTextModelWithProjection(
        CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=CLIP_HIDDEN, intermediate_size=32, num_hidden_layers=1,
            num_attention_heads=2, max_position_embeddings=CLIP_TOKENS, projection_dim=projection_dim,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        )
    )


def tiny_sd3_pipeline(root):
    torch.manual_seed(0)
    tokenizer = tiny_clip_tokenizer(root / "clip_vocab")
    tokenizer_3 = tiny_t5_tokenizer()
    pipeline = StableDiffusion3Pipeline(
        transformer=SD3Transformer2DModel(
            sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8,
            num_attention_heads=2, joint_attention_dim=JOINT_DIM, caption_projection_dim=16,
            pooled_projection_dim=sum(CLIP_PROJECTIONS), pos_embed_max_size=16,
        ),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8), latent_channels=4,
            norm_num_groups=4, layers_per_block=1, scaling_factor=1.5305, shift_factor=0.0609,
        ),
        text_encoder=tiny_clip_encoder(tokenizer, CLIP_PROJECTIONS[0]),
        tokenizer=tokenizer,
        text_encoder_2=tiny_clip_encoder(tokenizer, CLIP_PROJECTIONS[1]),
        tokenizer_2=tokenizer,
        text_encoder_3=T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer_3), d_model=JOINT_DIM, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                relative_attention_num_buckets=8, pad_token_id=tokenizer_3.pad_token_id,
                eos_token_id=tokenizer_3.eos_token_id, decoder_start_token_id=0,
            )
        ),
        tokenizer_3=tokenizer_3,
    )
    folder = root / "sd3"
    pipeline.save_pretrained(folder)
    return folder


def test_sd3_prompts_are_encoded_by_the_pipeline_text_encoders(tmp_path):
    folder = tiny_sd3_pipeline(tmp_path)
    for sub in ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "text_encoder_3",
                "tokenizer_3", "scheduler"):
        assert (folder / sub).is_dir(), sub
    assert (folder / "model_index.json").is_file()

    config = GeneratorConfig(kind="sd3", pretrained=str(folder), prompt="An image of a polyp", resolution=64,
                             controlnet_layers=1, num_classes=2)
    embeds, pooled = encode_prompts(config)
    assert embeds.shape == (2, CLIP_TOKENS + T5_TOKENS, JOINT_DIM)
    assert pooled.shape == (2, sum(CLIP_PROJECTIONS))
    assert embeds.device.type == "cpu" and pooled.device.type == "cpu"
    assert torch.isfinite(embeds).all() and torch.isfinite(pooled).all()
    # index 0 = empty prompt, index 1 = the template; CLIP part, T5 part and pooled vectors all depend on the text
    assert not torch.allclose(embeds[0, :CLIP_TOKENS], embeds[1, :CLIP_TOKENS])
    assert not torch.allclose(embeds[0, CLIP_TOKENS:], embeds[1, CLIP_TOKENS:])
    assert not torch.allclose(pooled[0], pooled[1])
    # the two CLIP widths are zero-padded up to the T5 width
    assert torch.all(embeds[:, :CLIP_TOKENS, 2 * CLIP_HIDDEN:] == 0)

    model = build_sd3_generator(config)  # no prompt_embeddings: the text encoders run inside
    assert config.latent_channels == 4
    assert not any(p.requires_grad for p in model.transformer.parameters())
    assert any(p.requires_grad for p in model.controlnet.parameters())
    assert torch.allclose(model.conditioning.tokens, embeds) and torch.allclose(model.conditioning.pooled, pooled)

    side = config.latent_size
    x = torch.randn(2, 4, side, side)
    mask_latents = torch.randn(2, 4, side, side)
    t = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        velocity = model.velocity(x, t, mask_latents, keep=torch.tensor([False, True]))
    assert velocity.shape == x.shape
    assert torch.isfinite(velocity).all()
