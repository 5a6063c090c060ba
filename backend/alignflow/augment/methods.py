"""Augmentation methods: what a user with labelled source pairs and a few target images can do besides generating.

Every method maps real source pairs (and, where it uses them, the target references) to new pairs written exactly
like ``generator.pairs.generate_pairs`` writes its own: ``images/`` and ``masks/`` at each mask's original size and
``manifest.json`` with one row per pair naming the method, its parameters, the seed, the source image and mask and
the reference used, so ``alignflow export`` and the report treat every method alike.

- ``translate``: the generator translates each real source image under its own mask (SDEdit-style; one code path
  with generation, ``generate_pairs(source_images=..., strength=...)``).
- ``fda``: Fourier Domain Adaptation (Yang & Soatto, CVPR 2020): the source image's centred low-frequency amplitude
  spectrum is replaced by a reference's, its phase is kept. The image keeps its content (and so its exact label)
  and takes the reference's global colour and illumination.
- ``histogram``: each colour channel's histogram matched to a reference's (scikit-image ``match_histograms``).
- ``photometric``: strong random colour, contrast, gamma, blur and noise (MONAI, ``fidelity.photometric``), no
  reference at all.

The three cheap ones work on each image at its original size (nothing is resized but the reference) and need no
generator. Image i uses seed ``seed + i``: it picks the reference (``reference_for``) or draws the photometric
transform, so any pair can be made again alone from its manifest row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alignflow.data import Pair, list_images, read_image, read_size, resize_image, resize_to, to_tensor, to_uint8
from alignflow.errors import InputError
from alignflow.generator.pairs import GeneratedPairs, generate_pairs, write_synthetic_pairs
from alignflow.progress import ProgressCallback, report_progress
from alignflow.runs.outputs import check_output_folder

GENERATIVE_METHODS = ("generate", "translate")  # need the stage-1 and aligned generators
TRANSFORM_METHODS = ("fda", "histogram", "photometric")  # train nothing
METHODS = GENERATIVE_METHODS + TRANSFORM_METHODS
REFERENCE_METHODS = ("fda", "histogram")
DEFAULT_FDA_BETA = 0.05  # the middle of the authors' 0.01, 0.05, 0.09
DEFAULT_RESOLUTION = 128  # GeneratedPairs.images of the cheap methods (KID, previews): the generator's default side


def check_methods(methods: str | Sequence[str]) -> list[str]:
    """Method names (one, or several to compare) without repeats, or a one-line error naming ``--method``."""
    names = [methods] if isinstance(methods, str) else list(methods)
    unknown = [name for name in names if name not in METHODS]
    if not names or unknown:
        raise InputError("--method", f"one or more of {', '.join(METHODS)}", repr(unknown[0]) if unknown else "none")
    return list(dict.fromkeys(names))


def check_beta(beta: float) -> float:
    """FDA's window size: the half-size b = floor(beta * min(H, W)) must fit the spectrum, so beta is in [0, 0.5]."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= float(beta) <= 0.5:
        raise InputError("--fda-beta", "a window size in [0, 0.5] (a fraction of the image side; the authors use "
                         "0.01, 0.05, 0.09)", repr(beta))
    return float(beta)


# ---------------------------------------------------------------------------------------------------- one image


def fourier_domain_adaptation(source: torch.Tensor, reference: torch.Tensor, beta: float) -> torch.Tensor:
    """FDA (Yang & Soatto 2020, Eq. 1): the source's amplitude spectrum in the centred low-frequency window takes the
    reference's values; the source's phase is kept everywhere. Images [..., C, H, W] in [0, 1] of the same size.

    The window is the authors' training code's (their torch ``low_freq_mutate``): frequencies -b .. b - 1 along each
    axis with b = floor(beta * min(H, W)), so beta = 0 leaves the image as it is (their numpy demo's 2b + 1 window
    would still swap the mean colour there). Computed in float64 so that the round trip is exact to ~1e-12; the
    result is clamped to [0, 1].
    """
    check_beta(beta)
    if reference.shape != source.shape:
        raise InputError("reference", f"an image of the source's shape {tuple(source.shape)}", str(tuple(reference.shape)))
    height, width = source.shape[-2:]
    b = math.floor(min(height, width) * beta)
    spectrum = torch.fft.fft2(source.double())
    amplitude = torch.fft.fftshift(spectrum.abs(), dim=(-2, -1))
    reference_amplitude = torch.fft.fftshift(torch.fft.fft2(reference.double()).abs(), dim=(-2, -1))
    rows, cols = slice(height // 2 - b, height // 2 + b), slice(width // 2 - b, width // 2 + b)
    amplitude[..., rows, cols] = reference_amplitude[..., rows, cols]
    mixed = torch.polar(torch.fft.ifftshift(amplitude, dim=(-2, -1)), spectrum.angle())
    return torch.fft.ifft2(mixed).real.clamp(0.0, 1.0).to(source.dtype)


def histogram_matching(source: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Each colour channel of ``source`` [3, H, W] given the histogram of the same channel of ``reference`` [3, h, w]
    (any size), with scikit-image's ``match_histograms``."""
    from skimage.exposure import match_histograms

    matched = match_histograms(source.permute(1, 2, 0).numpy(), reference.permute(1, 2, 0).numpy(), channel_axis=-1)
    return torch.from_numpy(np.ascontiguousarray(matched)).permute(2, 0, 1).float().clamp(0.0, 1.0)


def photometric(source: torch.Tensor, seed: int) -> torch.Tensor:
    """One draw of the strong photometric augmentation (``fidelity.photometric``) for image [3, H, W]."""
    from alignflow.fidelity.photometric import augment_photometric, photometric_transform

    return augment_photometric(photometric_transform(seed), source.unsqueeze(0))[0]


def reference_for(seed: int, count: int) -> int:
    """Which of ``count`` references the image with this seed is moved towards (uniform, from its seed alone)."""
    return int(np.random.default_rng(seed).integers(count))


# ---------------------------------------------------------------------------------------------------- pairs


def fda_pairs(pairs: Sequence[Pair], references: Sequence[Path | str] | Path | str, out: Path, *,
              beta: float = DEFAULT_FDA_BETA, seed: int = 0, resolution: int = DEFAULT_RESOLUTION,
              on_progress: ProgressCallback | None = None, overwrite: bool = False) -> GeneratedPairs:
    """FDA copies of the source pairs, each towards a random one of ``references`` (a folder or files)."""
    return transform_pairs("fda", pairs, out, references=references, beta=beta, seed=seed, resolution=resolution,
                           on_progress=on_progress, overwrite=overwrite)


def histogram_pairs(pairs: Sequence[Pair], references: Sequence[Path | str] | Path | str, out: Path, *, seed: int = 0,
                    resolution: int = DEFAULT_RESOLUTION, on_progress: ProgressCallback | None = None,
                    overwrite: bool = False) -> GeneratedPairs:
    """Histogram-matched copies of the source pairs, each to a random one of ``references``."""
    return transform_pairs("histogram", pairs, out, references=references, seed=seed, resolution=resolution,
                           on_progress=on_progress, overwrite=overwrite)


def photometric_pairs(pairs: Sequence[Pair], out: Path, *, seed: int = 0, resolution: int = DEFAULT_RESOLUTION,
                      on_progress: ProgressCallback | None = None, overwrite: bool = False) -> GeneratedPairs:
    """Photometrically augmented copies of the source pairs (no reference)."""
    return transform_pairs("photometric", pairs, out, seed=seed, resolution=resolution, on_progress=on_progress,
                           overwrite=overwrite)


def translate_pairs(generator: Any, pairs: Sequence[Pair], out: Path, *, strength: float, **sampling: Any) -> GeneratedPairs:
    """The generator's translations of the source pairs' images under their own masks: ``generate_pairs`` with
    ``source_images`` (``sampling``: seed, num_steps, guidance_scale, batch_size, precision, evaluator, ...)."""
    pairs = _check_pairs(pairs)
    return generate_pairs(generator, [pair.mask for pair in pairs], out, stems=[pair.stem for pair in pairs],
                          source_images=[pair.image for pair in pairs], strength=strength, **sampling)


def transform_pairs(method: str, pairs: Sequence[Pair], out: Path, *,
                    references: Sequence[Path | str] | Path | str | None = None, beta: float = DEFAULT_FDA_BETA,
                    seed: int = 0, resolution: int = DEFAULT_RESOLUTION,
                    on_progress: ProgressCallback | None = None, overwrite: bool = False) -> GeneratedPairs:
    """One of the cheap methods (``fda``, ``histogram``, ``photometric``) on every pair, written all or nothing.

    The images are streamed to ``out`` at their original size; ``GeneratedPairs.images`` holds them square-resized to
    ``resolution`` (as references and targets are read for KID). ``references`` are ignored by ``photometric``. An
    existing non-empty ``out`` is replaced only with ``overwrite``, never one holding the pairs or references read.
    """
    if method not in TRANSFORM_METHODS:
        raise InputError("--method", f"one of {', '.join(TRANSFORM_METHODS)} (generate and translate need a generator)",
                         repr(method))
    parameters: dict[str, Any] = {"beta": check_beta(beta)} if method == "fda" else {}
    pairs = _check_pairs(pairs)
    reference_files = _reference_files(references) if method in REFERENCE_METHODS else []
    check_output_folder(out, "generate", inputs=[[pair.image for pair in pairs], reference_files], overwrite=overwrite)
    seeds = [seed + i for i in range(len(pairs))]
    chosen = [reference_files[reference_for(s, len(reference_files))] if reference_files else None for s in seeds]
    transform = _one_image_transform(method, parameters, reference_files)
    small: list[torch.Tensor] = []

    def transformed() -> Iterator[torch.Tensor]:
        for i, (pair, image_seed, reference) in enumerate(zip(pairs, seeds, chosen)):
            image = transform(to_tensor(read_image(pair.image)), reference, image_seed)
            small.append(to_tensor(resize_image(to_uint8(image), resolution)))
            report_progress(on_progress, method, i + 1, len(pairs))
            yield image

    from alignflow.export.manifest import software_versions

    provenance = {"method": method, **parameters, "references": [str(path) for path in reference_files],
                  "generator": None, "checkpoint_sha256": None, "guidance_scale": None, "sample_steps": None,
                  "software": software_versions()}
    per_image = [{"source_image": str(pair.image), "reference": str(reference) if reference else None}
                 for pair, reference in zip(pairs, chosen)]
    stems = [pair.stem for pair in pairs]
    rows = write_synthetic_pairs(Path(out), stems, transformed(), [pair.mask for pair in pairs], seeds, provenance,
                                 per_image, overwrite=overwrite)
    return GeneratedPairs(Path(out), stems, torch.stack(small), seeds, rows)


def _one_image_transform(method: str, parameters: dict[str, Any], references: list[Path]
                         ) -> Callable[[torch.Tensor, Path | None, int], torch.Tensor]:
    """(image [3, H, W], its reference file, its seed) -> the transformed image; references are read once each."""
    cache: dict[Path, np.ndarray] = {}

    def reference_image(path: Path) -> torch.Tensor:
        if path not in cache:
            cache[path] = read_image(path)
        return to_tensor(cache[path])

    def apply(image: torch.Tensor, reference: Path | None, seed: int) -> torch.Tensor:
        if method == "photometric":
            return photometric(image, seed)
        target = reference_image(reference)
        if method == "histogram":
            return histogram_matching(image, target)
        # FDA compares spectra bin for bin: the reference at the source's size (antialiased bicubic), as the authors do
        resized = to_tensor(resize_to(to_uint8(target), tuple(image.shape[-2:]), kind="image"))
        return fourier_domain_adaptation(image, resized, parameters["beta"])

    return apply


def _check_pairs(pairs: Sequence[Pair]) -> list[Pair]:
    """At least one pair, each image of its mask's size (checked from the file headers before anything is written)."""
    pairs = list(pairs)
    if not pairs:
        raise InputError("--source", "at least one image-mask pair", "none")
    for pair in pairs:
        if read_size(pair.image) != read_size(pair.mask):
            raise InputError(pair.mask, f"a mask of its image's size {read_size(pair.image)}", str(read_size(pair.mask)))
    return pairs


def _reference_files(references: Sequence[Path | str] | Path | str | None) -> list[Path]:
    if references is None or (not isinstance(references, (str, Path)) and len(references) == 0):
        raise InputError("--references", "target-domain reference images (a folder or files) for fda and histogram", "none")
    for path in [references] if isinstance(references, (str, Path)) else references:
        if not Path(path).exists():
            raise InputError("--references", "an existing folder or files of target-domain images", f"{path} (no such file)")
    return list_images(references)
