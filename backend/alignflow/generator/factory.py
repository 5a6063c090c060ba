"""Building a generator from its config: the compact model trained from scratch, or SD3 with its ControlNet."""

from __future__ import annotations

from alignflow.generator.model import AlignFlowGenerator, GeneratorConfig, LearnedConditioning, compact_backbones
from alignflow.generator.sd3 import build_sd3_generator


def build_generator(config: GeneratorConfig) -> AlignFlowGenerator:
    """A freshly initialised compact generator, or the sd3 one with its pretrained weights loaded."""
    config.validate()
    if config.kind == "sd3":
        generator = build_sd3_generator(config)
    else:
        transformer, controlnet = compact_backbones(config)
        generator = AlignFlowGenerator(config, transformer, controlnet, LearnedConditioning(config.context_tokens, config.width))
    if config.mask_head:
        generator.add_mask_head()
    return generator
