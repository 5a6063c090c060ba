"""Segmenting images with a trained MedFlowSeg: an ensemble of M Euler-sampled label maps per image, drawn as one
batch, fused by STAPLE, with per-pixel uncertainty maps. This is the API the napari plugin and ``alignflow segment``
call:

    segmenter = load_segmenter("runs/seg")                      # a run folder or its segmenter/ folder
    result = segment_images(segmenter, images, num_samples=10, num_steps=50, seed=0)
    result[0].labels, result[0].uncertainty["entropy"], result[0].samples

Outputs have each input image's own size: samples are drawn at the model's resolution, resized back to the image
(nearest neighbour) and fused there, so the variance and entropy maps are exactly 0 wherever every sample agrees.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
import torch.nn.functional as F

from alignflow.atomic import atomic_open, atomic_write_json
from alignflow.data import resize_image, resize_to, to_tensor, write_image, write_mask
from alignflow.device import autocast, resolve_device
from alignflow.errors import InputError
from alignflow.segmentation.config import MedFlowSegConfig
from alignflow.segmentation.flow import decode_labels, euler_sample
from alignflow.segmentation.model import MedFlowSeg
from alignflow.segmentation.staple import StapleResult, staple, vote_fractions
from alignflow.segmentation.trainer import read_segmenter
from alignflow.segmentation.uncertainty import UNCERTAINTY_KINDS, maximum_value, uncertainty_maps

FUSIONS = ("staple", "vote")


@dataclass
class LoadedSegmenter:
    model: MedFlowSeg
    info: dict[str, Any]
    folder: Path
    device: torch.device

    @property
    def config(self) -> MedFlowSegConfig:
        return self.model.config


def load_segmenter(folder: str | Path, device: str | torch.device = "auto") -> LoadedSegmenter:
    """A trained segmenter from its folder (or a run folder holding ``segmenter/``); weights via safetensors only."""
    model, info, folder = read_segmenter(Path(folder))
    device = device if isinstance(device, torch.device) else resolve_device(device)
    return LoadedSegmenter(model.to(device).eval().requires_grad_(False), info, folder, device)


@dataclass
class ImageSegmentation:
    """One image's result, at the image's own size."""

    labels: np.ndarray  # [H, W] uint8, the fused class ids
    samples: np.ndarray  # [M, H, W] uint8, the ensemble members
    posterior: np.ndarray  # [K, H, W] float32, STAPLE posterior (vote fractions with fusion="vote")
    uncertainty: dict[str, np.ndarray]  # "staple", "variance", "entropy" -> [H, W] float32


@dataclass
class SegmentationResult:
    images: list[ImageSegmentation]
    num_classes: int
    num_samples: int
    num_steps: int
    seed: int
    fusion: str
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> ImageSegmentation:
        return self.images[index]


def _model_input(image: np.ndarray | torch.Tensor, resolution: int, where: str) -> tuple[torch.Tensor, tuple[int, int]]:
    """One image (uint8 H x W x 3 array, or float [3, H, W] tensor in [0, 1]) at the model's resolution + its size."""
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3 or not image.is_floating_point():
            raise InputError(where, "a float tensor [3, H, W] in [0, 1]", f"{image.dtype} {tuple(image.shape)}")
        size = (int(image.shape[1]), int(image.shape[2]))
        if size != (resolution, resolution):
            image = F.interpolate(image[None].float(), size=(resolution, resolution), mode="bicubic", antialias=True, align_corners=False)[0]
        return image.float().clamp(0, 1), size
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise InputError(where, "a uint8 H x W x 3 RGB image", f"{array.dtype} of shape {array.shape}")
    return to_tensor(resize_image(array, resolution)), (array.shape[0], array.shape[1])


def fuse(samples: np.ndarray, num_classes: int, fusion: str = "staple") -> StapleResult:
    """Fuse label maps [M, H, W]: STAPLE (the paper) or a plain majority vote (posterior = vote fractions)."""
    if fusion == "staple":
        return staple(samples, num_classes)
    votes = vote_fractions(samples, num_classes)
    return StapleResult(votes.argmax(axis=0).astype(np.uint8), votes, np.zeros((samples.shape[0], num_classes, num_classes), np.float32))


@torch.no_grad()
def segment_images(
    segmenter: LoadedSegmenter,
    images: Sequence[np.ndarray | torch.Tensor] | torch.Tensor,
    *,
    num_samples: int = 10,
    num_steps: int = 50,
    seed: int = 0,
    batch_size: int = 4,
    fusion: str = "staple",
    precision: str = "fp32",
    on_image: Callable[[int, int], None] | None = None,
) -> SegmentationResult:
    """Segment images (uint8 H x W x 3 arrays of any size, or float [3, H, W] tensors / one [N, 3, H, W] tensor in
    [0, 1]) with ``num_samples`` Euler samples of ``num_steps`` steps each (paper: 10 and 50).

    Image i's ensemble starts from noise seeded with ``seed + i``, so its result does not depend on ``batch_size``
    (images per model call; the call holds batch_size x num_samples label maps).
    """
    for name, value in (("num_samples", num_samples), ("num_steps", num_steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(name, "a positive integer", repr(value))
    if fusion not in FUSIONS:
        raise InputError("fusion", f"one of {', '.join(FUSIONS)}", repr(fusion))
    images = list(images)
    if not images:
        raise InputError("images", "at least one image", "none")
    model, device = segmenter.model, segmenter.device
    config = model.config
    resolution, num_classes = config.resolution, config.num_classes
    started = time.perf_counter()
    results: list[ImageSegmentation] = []
    for start in range(0, len(images), batch_size):
        prepared = [_model_input(image, resolution, f"images[{start + i}]") for i, image in enumerate(images[start : start + batch_size])]
        batch = torch.stack([tensor for tensor, _ in prepared]).to(device)
        noise = torch.cat([
            torch.randn(num_samples, num_classes, resolution, resolution, generator=torch.Generator().manual_seed(seed + start + i))
            for i in range(len(prepared))
        ]).to(device)
        with autocast(device, precision):
            cond = model.condition(batch).repeat(num_samples)  # the Condition Network runs once per image
            labels = decode_labels(euler_sample(model, cond, noise, num_steps).float())
        labels = labels.view(len(prepared), num_samples, resolution, resolution).cpu().numpy()
        for (_, size), image_samples in zip(prepared, labels):
            samples = np.stack([resize_to(sample, size, kind="mask") for sample in image_samples])
            fused = fuse(samples, num_classes, fusion)
            results.append(ImageSegmentation(fused.labels, samples, fused.posterior, uncertainty_maps(samples, fused, num_classes)))
            if on_image is not None:
                on_image(len(results), len(images))
    return SegmentationResult(results, num_classes, num_samples, num_steps, seed, fusion, time.perf_counter() - started,
                              {"precision": precision, "segmenter": str(segmenter.folder)})


# --------------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------------


def _write_tiff(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()  # tifffile wants a named file; the atomic temporary is an anonymous descriptor
    # minisblack: a stack of 3 or 4 planes is a stack, not an RGB(A) picture.
    tifffile.imwrite(buffer, np.ascontiguousarray(array), photometric="minisblack")
    with atomic_open(path) as handle:
        handle.write(buffer.getvalue())


def render_uncertainty(values: np.ndarray, kind: str, num_classes: int) -> np.ndarray:
    """A grey uint8 picture of an uncertainty map on a fixed scale (0 = certain, white = the kind's maximum), so
    pictures of different images compare."""
    return np.clip(np.rint(values / maximum_value(kind, num_classes) * 255.0), 0, 255).astype(np.uint8)


def write_segmentations(out: Path, stems: Sequence[str], result: SegmentationResult) -> Path:
    """Write a result as files:

        out/labels/<stem>.png                      fused class ids (binary: 0/255)
        out/uncertainty/<stem>_<kind>.tif (.png)   float32 map (and its grey rendering) per kind
        out/posterior/<stem>.tif                   float32 [K, H, W] STAPLE posterior
        out/samples/<stem>.tif                     uint8 [M, H, W] the ensemble members
        out/manifest.json                          settings, files, classes
    """
    out = Path(out)
    if len(stems) != len(result):
        raise InputError("stems", f"one name per segmented image ({len(result)})", str(len(stems)))
    files = []
    for stem, item in zip(stems, result.images):
        write_mask(out / "labels" / f"{stem}.png", item.labels)
        entry = {"stem": stem, "labels": f"labels/{stem}.png", "posterior": f"posterior/{stem}.tif", "samples": f"samples/{stem}.tif", "uncertainty": {}}
        for kind in UNCERTAINTY_KINDS:
            _write_tiff(out / "uncertainty" / f"{stem}_{kind}.tif", item.uncertainty[kind])
            write_image(out / "uncertainty" / f"{stem}_{kind}.png", render_uncertainty(item.uncertainty[kind], kind, result.num_classes))
            entry["uncertainty"][kind] = f"uncertainty/{stem}_{kind}.tif"
        _write_tiff(out / "posterior" / f"{stem}.tif", item.posterior)
        _write_tiff(out / "samples" / f"{stem}.tif", item.samples)
        files.append(entry)
    manifest = {"num_classes": result.num_classes, "num_samples": result.num_samples, "num_steps": result.num_steps,
                "seed": result.seed, "fusion": result.fusion, "seconds": result.seconds, **result.settings,
                "uncertainty_maxima": {kind: maximum_value(kind, result.num_classes) for kind in UNCERTAINTY_KINDS},
                "files": files}
    atomic_write_json(out / "manifest.json", manifest)
    return out
