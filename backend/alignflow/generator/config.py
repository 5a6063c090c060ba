"""Typed, validated configuration of a training run; read from and written to YAML or JSON.

The same dataclass is what the CLI fills from flags, what ``--config FILE`` loads and what a run folder records
(``config.json``), so a run can be repeated or resumed from its folder alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from alignflow.config import DictConfig, section
from alignflow.errors import InputError

# Default learning rates of the compact model trained from scratch: stage 1 learns the source domain; stage 2 only
# moves it towards the references, and a gentler rate keeps the reward from overriding what stage 1 learnt.
STAGE_LEARNING_RATES = {1: 3e-4, 2: 1e-4}


@dataclass
class TrainConfig(DictConfig):
    """Stage 1 (denoising) or stage 2 (denoising + alignment) training of the generator (Algorithm 1)."""

    source: str = ""  # labelled source dataset: a folder with images/ and masks/
    out: str = ""  # run folder
    stage: int = 1
    init: str | None = None  # generator (folder) to start from; stage 2 needs the stage-1 generator
    references: list[str] | str | None = None  # stage 2: folder or files of target-domain images
    num_references: int | None = None  # None = all references given
    steps: int = 1000
    batch_size: int = 8
    # None: the stage's default (STAGE_LEARNING_RATES). The paper fine-tunes a pretrained SD3 ControlNet at 1e-5.
    lr: float | None = None
    weight_decay: float = 1e-2
    cond_dropout: float = 0.1  # fraction of samples without their condition (trains CFG's unconditional branch)
    # Train on every pair and its horizontal, vertical and double flip (4x the encoded set, masks flipped with their
    # images). For small source sets: a compact generator trained from scratch on 100 pairs for 3900 steps sees each
    # pair 312 times and copies them; flips stop the copying, but did not raise the target gain (docs/benchmarks.md,
    # "Flipped pairs for a generator trained on 100 pairs").
    flip_augment: bool = False
    trainable: str = "all"  # "all" (compact) or "controlnet" (the paper, sd3)
    # Stage 2 (Section 3.1-3.2, Algorithm 1)
    w_align: float = 1.0
    # The tunable step index k is drawn from [t_is, num_align_steps - 1]. The paper's 18 (for a pretrained SD3) lets the
    # reward reach only the last two Euler steps; for the compact model that chased texture, not the target's look
    # (docs/benchmarks.md, "Domain-shift experiment": KID to CVC-ClinicDB 0.162 with t_is 10 / lr 3e-4, 0.114 with 5 / 1e-4).
    t_is: int = 5
    num_align_steps: int = 20  # dt = 1 / 20
    align_batch_size: int = 4  # generated images per alignment step (M in Eq. 9)
    reward: str = "mmd"  # "mmd" or "skl"
    frozen_model: str = "current"  # v_theta*: "current" weights under no_grad, or a "snapshot" taken at stage start
    feature_encoder: str = "efficientnet-lite0"
    # Stage 2 in translation mode: None = off (trajectories start from noise, Algorithm 1). A strength s in (0, 1]
    # starts each trajectory from its pair's real latent noised to t0 = 1 - s (Eq. 2, the translation of
    # sampling.generate_images); k is then drawn from [max(t_is, k0), num_align_steps - 1] with k0 = t0 *
    # num_align_steps, so the reward grades exactly the images `generate --from-images --strength s` exports.
    translation_strength: float | None = None
    # Label drift (docs/label-drift.md)
    w_ar: float = 0.0  # Alignment Regularization in every denoising step (adds the generator's mask head); 0 = off
    w_mask: float = 0.0  # stage 2: weight of the mask-consistency loss L_M; 0 = off (ignored in stage 1)
    mask_segmenter: str | None = None  # the frozen reward segmenter of L_M (alignflow train-evaluator --role reward)
    # Housekeeping
    max_pairs: int | None = None  # use only the first N pairs (quick runs)
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"  # "fp32" or "bf16" (autocast)
    checkpoint_every: int = 200
    preview_every: int = 200
    log_every: int = 10
    generator: dict[str, Any] = field(default_factory=dict, metadata=section("alignflow.generator.model:GeneratorConfig"))  # GeneratorConfig overrides (stage 1)

    fixed_on_resume = ("stage", "generator", "trainable", "init")  # the architecture and the starting weights

    @property
    def learning_rate(self) -> float:
        return float(self.lr) if self.lr is not None else STAGE_LEARNING_RATES[self.stage]

    def validate(self) -> None:
        if self.stage not in (1, 2):
            raise InputError("stage", "1 or 2", str(self.stage))
        if self.lr is not None and not self.lr > 0:
            raise InputError("lr", "a positive learning rate", str(self.lr))
        if not self.source:
            raise InputError("--source", "a dataset folder with images/ and masks/", "nothing")
        if not self.out:
            raise InputError("--out", "a run folder", "nothing")
        for name in ("steps", "batch_size", "log_every", "checkpoint_every", "preview_every", "num_align_steps"):
            if int(getattr(self, name)) < 1:
                raise InputError(name, "a positive integer", str(getattr(self, name)))
        if self.stage == 2:
            if not self.init:
                raise InputError("--init", "the stage-1 generator (a run folder or generator folder)", "nothing")
            if not self.references:
                raise InputError("--references", "a folder or files of target-domain reference images", "nothing")
            if not 0 <= self.t_is < self.num_align_steps:
                raise InputError("t_is", f"an integer in [0, {self.num_align_steps - 1}]", str(self.t_is))
            if self.translation_strength is not None:
                self._check_translation_strength()
            if self.align_batch_size < 2 and self.reward == "mmd":
                raise InputError("align_batch_size", "at least 2 (the unbiased MMD needs 2 samples)", str(self.align_batch_size))
        if self.reward not in ("mmd", "skl"):
            raise InputError("reward", "'mmd' or 'skl'", repr(self.reward))
        if self.frozen_model not in ("current", "snapshot"):
            raise InputError("frozen_model", "'current' or 'snapshot'", repr(self.frozen_model))
        if not isinstance(self.flip_augment, bool):
            raise InputError("flip_augment", "true or false", repr(self.flip_augment))
        if not 0.0 <= self.cond_dropout < 1.0:
            raise InputError("cond_dropout", "a fraction in [0, 1)", str(self.cond_dropout))
        for name in ("w_ar", "w_mask"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < float("inf"):
                raise InputError(name, "a finite weight >= 0 (0 turns the term off)", repr(value))
        if self.w_mask > 0 and not self.mask_segmenter:
            raise InputError("--mask-segmenter", "the reward segmenter (alignflow train-evaluator --role reward) when w_mask > 0", "nothing")

    def _check_translation_strength(self) -> None:
        """s must leave at least one Euler step of the alignment grid between t0 = 1 - s and t = 1 to tune."""
        strength, steps = self.translation_strength, self.num_align_steps
        expected = f"a translation strength in (0, 1] that leaves at least one of the {steps} Euler steps (s > {0.5 / steps:g})"
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 < strength <= 1.0:
            raise InputError("translation_strength", expected, repr(strength))
        from alignflow.generator.sampling import translation_start_step  # torch: only when it is used

        if translation_start_step(strength, steps) > steps - 1:
            raise InputError("translation_strength", expected, repr(strength))


@dataclass
class GenerateConfig(DictConfig):
    """``alignflow generate``: images for masks. The defaults are here, not in the parser, so a ``--config`` file's
    values are used unless a flag is typed (and the file alone is enough: the server runs generate jobs so)."""

    config_name = "generate config"
    validate_on_load = True

    generator: str = ""  # a trained generator (run folder or generator folder)
    masks: str = ""  # a dataset folder (images/ + masks/) or a folder of mask files
    out: str = ""  # output folder (images/, masks/, manifest.json)
    steps: int = 28  # Euler steps (the paper's 28)
    guidance: float = 2.0  # classifier-free guidance scale
    batch_size: int = 16
    limit: int | None = None  # at most this many masks
    evaluator: str | None = None  # segmenter scoring each image's mask fidelity into the manifest
    candidates: int = 1  # K images per mask; the one the evaluator segments best is kept
    from_images: bool = False  # translate each real image of masks (a dataset folder) under its own mask
    strength: float | None = None  # translation strength with from_images (None: generator.commands.DEFAULT_STRENGTH)
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    overwrite: bool = False  # replace an existing non-empty out (never one holding the masks or the generator)

    def validate(self) -> None:
        for name, what in (("generator", "a trained generator (run folder or generator folder)"),
                           ("masks", "a dataset folder (images/ + masks/) or a folder of mask files"), ("out", "an output folder")):
            if not getattr(self, name):
                raise InputError(f"--{name}", what, "nothing")
        for name in ("steps", "batch_size", "candidates"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')}", "a positive integer", str(getattr(self, name)))
        if self.limit is not None and self.limit < 1:
            raise InputError("--limit", "a positive number of masks (or none: all)", str(self.limit))
