"""Configuration of MedFlowSeg: the model (with the paper's and a CPU-sized preset) and a training run.

Both are dataclasses that read JSON/YAML mappings (``--config FILE``), reject unknown keys by name and are written
to the run folder (``config.json``) and the exported segmenter (``segmenter.json``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from alignflow.config import DictConfig, section
from alignflow.errors import InputError

# Section 4.2: channels {64, 128, 256, 256}, two residual blocks per level, time embedding 256, 256 x 256 images;
# Section 3.4: FA-Attention stacked N = 4 times, R = 2 Neural Modulator blocks.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "channels": [64, 128, 256, 256], "res_blocks": 2, "time_embed_dim": 256, "resolution": 256,
        "token_dim": 256, "attention_heads": 8, "fa_layers": 4, "modulator_blocks": 2, "norm_groups": 32,
    },
    # Trains on a 2-core CPU at 128 px: about 1.1 M parameters, same structure (N = 4, R = 2, all modules).
    "small": {
        "channels": [16, 32, 64, 64], "res_blocks": 1, "time_embed_dim": 64, "resolution": 128,
        "token_dim": 64, "attention_heads": 4, "fa_layers": 4, "modulator_blocks": 2, "norm_groups": 8,
    },
}


@dataclass
class MedFlowSegConfig(DictConfig):
    """Architecture of MedFlowSeg (Section 3). ``num_classes`` counts the background (binary masks: 2)."""

    num_classes: int = 2
    image_channels: int = 3
    resolution: int = 128  # images and labels are resized to a square of this side
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 64])  # one per UNet level, 4 levels
    res_blocks: int = 1  # residual blocks per level (paper: 2)
    time_embed_dim: int = 64  # paper: 256
    norm_groups: int = 8  # GroupNorm groups in the residual blocks
    dropout: float = 0.0
    # FA-Attention (Section 3.4)
    fa_layers: int = 4  # N
    modulator_blocks: int = 2  # R
    token_dim: int = 64
    attention_heads: int = 4
    patch_size: int = 2  # patch embedding of the bottleneck feature (and of its spectrum)
    # DB-SA (Section 3.3): Gaussian kernel sizes of the low- and high-frequency branches
    low_pass_kernel: int = 3
    high_pass_kernel: int = 5
    preset: str | None = None  # the preset these values came from (recorded, not used)

    def validate(self) -> None:
        if self.num_classes < 2:
            raise InputError("num_classes", "at least 2 (background + one class)", str(self.num_classes))
        if len(self.channels) != 4 or min(self.channels) < 1:
            raise InputError("channels", "four positive channel counts, one per UNet level", repr(self.channels))
        for name in ("res_blocks", "time_embed_dim", "fa_layers", "modulator_blocks", "token_dim", "attention_heads", "patch_size"):
            if int(getattr(self, name)) < 1:
                raise InputError(name, "a positive integer", repr(getattr(self, name)))
        if any(c % self.norm_groups for c in self.channels):
            raise InputError("norm_groups", f"a divisor of every channel count {self.channels}", str(self.norm_groups))
        if self.token_dim % self.attention_heads:
            raise InputError("attention_heads", f"a divisor of token_dim={self.token_dim}", str(self.attention_heads))
        multiple = self.downsampling * self.patch_size
        if self.resolution < multiple or self.resolution % multiple:
            raise InputError("resolution", f"a multiple of {multiple} (3 halvings x patch size {self.patch_size})", str(self.resolution))
        for name in ("low_pass_kernel", "high_pass_kernel"):
            if int(getattr(self, name)) < 1 or int(getattr(self, name)) % 2 == 0:
                raise InputError(name, "an odd kernel size", repr(getattr(self, name)))
        if not 0.0 <= self.dropout < 1.0:
            raise InputError("dropout", "a fraction in [0, 1)", str(self.dropout))

    @property
    def downsampling(self) -> int:
        """Bottleneck stride: three stride-2 convolutions between the four levels."""
        return 2 ** (len(self.channels) - 1)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "model") -> MedFlowSegConfig:
        """Values over a preset: ``{"preset": "paper", "resolution": 128}`` is the paper's model at 128 px."""
        values = cls.checked_values(values, where)
        preset = values.get("preset")
        if preset is not None and preset not in PRESETS:
            raise InputError(f"{where}.preset", f"one of {', '.join(PRESETS)}", repr(preset))
        merged = {**(PRESETS[preset] if preset else {}), **values}
        config = cls(**merged)
        config.channels = [int(c) for c in config.channels]
        config.validate()
        return config


@dataclass
class SegmenterTrainConfig(DictConfig):
    """A MedFlowSeg training run (Eq. 5: L = L_vel + lambda (L_dice + alpha L_ce))."""

    source: str = ""  # a dataset folder with images/ and masks/ (empty when tensors are passed to the API)
    out: str = ""  # run folder
    # Continue from a trained segmenter (folder or run folder): its architecture and weights; preset, resolution and
    # model are then not used, and the data must have its classes. Fine-tuning on new labelled data, e.g. target scans.
    init: str | None = None
    preset: str = "small"
    resolution: int | None = None  # overrides the preset's resolution
    model: dict[str, Any] = field(default_factory=dict, metadata=section("alignflow.segmentation.config:MedFlowSegConfig"))
    steps: int = 2000
    batch_size: int = 8  # paper: 48 on four A100s
    lr: float = 1e-4  # Section 4.2 (AdamW)
    weight_decay: float = 0.0
    lambda_aux: float = 0.1  # lambda, Eq. 5
    alpha_ce: float = 10.0  # alpha, Eq. 4
    ema_decay: float = 0.999  # paper: 0.9999 (hundreds of thousands of steps); warmed up, see trainer
    flip_augment: bool = True  # random horizontal and vertical flips of image and mask together
    max_pairs: int | None = None  # train on the first N pairs only
    num_classes: int | None = None  # fixes the class count when the data may not show every class
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    log_every: int = 10
    checkpoint_every: int = 200
    preview_every: int = 500

    fixed_on_resume = ("init", "preset", "resolution", "model", "num_classes")  # the architecture (runs.loop)

    def validate(self) -> None:
        if not self.out:
            raise InputError("--out", "a run folder", "nothing")
        if self.preset not in PRESETS:
            raise InputError("--preset", f"one of {', '.join(PRESETS)}", repr(self.preset))
        for name in ("steps", "batch_size", "log_every", "checkpoint_every", "preview_every"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"--{name.replace('_', '-')}", "a positive integer", str(getattr(self, name)))
        if self.max_pairs is not None and self.max_pairs < 1:
            raise InputError("--max-pairs", "a positive integer", str(self.max_pairs))
        if self.num_classes is not None and self.num_classes < 2:
            raise InputError("--num-classes", "at least 2 (background + one class)", str(self.num_classes))
        if self.lr <= 0:
            raise InputError("--lr", "a positive learning rate", str(self.lr))
        if not 0.0 <= self.ema_decay < 1.0:
            raise InputError("ema_decay", "a decay in [0, 1)", str(self.ema_decay))
        if self.lambda_aux < 0 or self.alpha_ce < 0:
            raise InputError("lambda_aux/alpha_ce", "non-negative loss weights", f"{self.lambda_aux}, {self.alpha_ce}")
        self.model_config(self.num_classes or 2)  # model settings are checked before any data is read

    def model_config(self, num_classes: int) -> MedFlowSegConfig:
        values: dict[str, Any] = {"preset": self.preset, **self.model, "num_classes": num_classes}
        if self.resolution is not None:
            values["resolution"] = self.resolution
        return MedFlowSegConfig.from_dict(values, where="model")


@dataclass
class SegmentConfig(DictConfig):
    """``alignflow segment``: ensemble inference of a trained MedFlowSeg on a folder of images (the paper samples
    10 x 50 steps)."""

    config_name = "segment config"
    validate_on_load = True

    segmenter: str = ""  # a trained segmenter (train-segmenter run folder or its segmenter/ folder)
    images: list[str] | str = ""  # a folder of images or image files
    out: str = ""  # output folder (labels/, uncertainty/, posterior/, samples/, manifest.json)
    num_samples: int = 10  # ensemble size M
    steps: int = 50  # Euler steps per sample
    batch_size: int = 4  # images per model call (each holds M label maps)
    fusion: str = "staple"  # "staple" or "vote"
    limit: int | None = None  # at most this many images
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    overwrite: bool = False  # replace an existing non-empty out (never one holding the images or the segmenter)

    def validate(self) -> None:
        for name, what in (("segmenter", "a trained segmenter folder"), ("images", "a folder of images or image files"),
                           ("out", "an output folder")):
            if not getattr(self, name):
                raise InputError(f"--{name}", what, "nothing")
        for name in ("num_samples", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')}", "a positive integer", str(getattr(self, name)))
        if self.limit is not None and self.limit < 1:
            raise InputError("--limit", "a positive number of images (or none: all)", str(self.limit))
        if self.fusion not in ("staple", "vote"):
            raise InputError("--fusion", "staple or vote", repr(self.fusion))
