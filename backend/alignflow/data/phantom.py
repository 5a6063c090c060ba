"""A procedural endoscopy-like sample dataset with a known scanner shift, so the demo runs without downloads.

Both domains draw their content (tissue, vessels, lesions) from the same distribution; only the simulated scanner
differs. The target scanner adds a blue-green colour cast, lower contrast, a Gaussian blur and sensor noise, which
is the kind of shift AlignFlow is meant to close, and its parameters are returned so tests can check it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter

from alignflow.atomic import atomic_write_json
from alignflow.data.io import write_image, write_mask
from alignflow.environment import cache_root
from alignflow.errors import InputError

PHANTOM_VERSION = 1  # bump when the generator changes, so cached phantoms are rebuilt
STAMP_NAME = "phantom.json"
_TISSUE = np.array([0.80, 0.40, 0.34])  # mucosa: pinkish red
_LESION = np.array([0.93, 0.62, 0.50])  # polyp-like: paler, yellowish, brighter


@dataclass(frozen=True)
class ScannerShift:
    """Target scanner model: ``noise(blur(contrast(gain * x + offset)))``, all on [0, 1] RGB."""

    gain: tuple[float, float, float] = (0.80, 1.00, 1.22)
    offset: tuple[float, float, float] = (-0.02, 0.04, 0.08)
    contrast: float = 0.70
    blur_sigma: float = 1.0
    noise_sigma: float = 0.03


# --------------------------------------------------------------------------------------------------------------
# Content
# --------------------------------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, size: int, cells: tuple[int, ...] = (3, 6, 12, 24)) -> np.ndarray:
    """Multi-scale value noise in roughly [-1, 1]: random grids upsampled bicubically, coarser grids weigh more."""
    total = np.zeros((size, size), np.float32)
    for cell in cells:
        grid = rng.standard_normal((cell, cell)).astype(np.float32)
        up = np.asarray(Image.fromarray(grid, mode="F").resize((size, size), Image.Resampling.BICUBIC))
        total += up / cell**0.5
    return total / (np.abs(total).max() + 1e-6)


def _vessels(rng: np.random.Generator, size: int) -> np.ndarray:
    """A few thin, wavy, blurred curves in [0, 1]: the submucosal vessels that give real frames their texture."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(2, 5))):
        x, y = rng.uniform(0, size, 2)
        heading = rng.uniform(0, 2 * np.pi)
        points = [(x, y)]
        for _ in range(12):
            heading += rng.normal(0, 0.45)
            x, y = x + np.cos(heading) * size / 10, y + np.sin(heading) * size / 10
            points.append((x, y))
        draw.line(points, fill=255, width=int(rng.integers(1, 3)))
    return gaussian_filter(np.asarray(canvas, np.float32) / 255.0, 0.7)


def _blob(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """An irregular lesion: an ellipse whose radius is perturbed by low harmonics. Returns (inside, dome height)."""
    cy, cx = rng.uniform(0.2, 0.8, 2) * size
    radius = rng.uniform(0.08, 0.20) * size
    aspect, tilt = rng.uniform(0.7, 1.3), rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(tilt) + dy * np.sin(tilt)
    v = (-dx * np.sin(tilt) + dy * np.cos(tilt)) * aspect
    dist, angle = np.hypot(u, v), np.arctan2(v, u)
    wobble = sum(rng.uniform(0, 0.18) / k * np.cos(k * angle + rng.uniform(0, 2 * np.pi)) for k in range(2, 6))
    edge = radius * (1.0 + wobble)
    inside = dist < edge
    dome = np.clip(1.0 - (dist / edge) ** 2, 0.0, 1.0)
    return inside, dome


def _vignette(size: int, strength: float = 0.45) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = np.hypot(yy - size / 2, xx - size / 2) / (size / 2 * np.sqrt(2))
    return 1.0 - strength * r**2.5


def _scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One clean frame (float RGB in [0, 1]) and its binary lesion mask."""
    tissue = _TISSUE[None, None, :] * (1.0 + 0.22 * _smooth_noise(rng, size)[:, :, None])
    tissue = tissue * (1.0 - 0.35 * _vessels(rng, size)[:, :, None] * np.array([0.6, 1.0, 1.0]))
    mask = np.zeros((size, size), bool)
    for _ in range(int(rng.integers(1, 4))):
        inside, dome = _blob(rng, size)
        bumps = 1.0 + 0.12 * _smooth_noise(rng, size, cells=(16, 32))[:, :, None]
        lesion = _LESION[None, None, :] * bumps * (0.85 + 0.25 * dome[:, :, None])
        tissue = np.where(inside[:, :, None], lesion, tissue)
        mask |= inside
    image = tissue * _vignette(size)[:, :, None]
    return np.clip(image, 0.0, 1.0), mask


def apply_scanner_shift(image: np.ndarray, shift: ScannerShift, rng: np.random.Generator) -> np.ndarray:
    """Simulate the target scanner on a float RGB frame in [0, 1]."""
    out = image * np.asarray(shift.gain) + np.asarray(shift.offset)
    out = out.mean(axis=(0, 1), keepdims=True) + shift.contrast * (out - out.mean(axis=(0, 1), keepdims=True))
    out = gaussian_filter(out, sigma=(shift.blur_sigma, shift.blur_sigma, 0))
    out = out + rng.normal(0.0, shift.noise_sigma, out.shape)
    return np.clip(out, 0.0, 1.0)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------------------
# Writing and caching
# --------------------------------------------------------------------------------------------------------------


def _write_domain(folder: Path, prefix: str, count: int, size: int, seed: int, shift: ScannerShift | None) -> None:
    domain_id = 0 if shift is None else 1
    for i in range(count):
        rng = np.random.default_rng([seed, domain_id, i])  # one stream per image: independent of count
        image, mask = _scene(rng, size)
        if shift is not None:
            image = apply_scanner_shift(image, shift, rng)
        write_image(folder / "images" / f"{prefix}_{i:03d}.png", _to_uint8(image))
        write_mask(folder / "masks" / f"{prefix}_{i:03d}.png", mask.astype(np.uint8))


def _parameters(n_source: int, n_target: int, size: int, seed: int, shift: ScannerShift) -> dict:
    return {
        "version": PHANTOM_VERSION,
        "n_source": n_source,
        "n_target": n_target,
        "size": size,
        "seed": seed,
        "shift": asdict(shift),
    }


def _is_complete(out_dir: Path, params: dict) -> bool:
    """True if the stamp (written last) matches and every expected file is there."""
    stamp = out_dir / STAMP_NAME
    try:
        if json.loads(stamp.read_text(encoding="utf-8")) != json.loads(json.dumps(params)):
            return False
    except (OSError, ValueError):
        return False
    counts = {"source": params["n_source"], "target": params["n_target"]}
    return all(
        len(list((out_dir / dom / kind).glob("*.png"))) == n for dom, n in counts.items() for kind in ("images", "masks")
    )


def _check_params(n_source: int, n_target: int, size: int) -> None:
    for name, value, low in (("n_source", n_source, 1), ("n_target", n_target, 1), ("size", size, 32)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InputError(name, f"an integer >= {low}", got=repr(value))


def _result(out_dir: Path, params: dict) -> dict:
    return {**params, "root": out_dir, "source": out_dir / "source", "target": out_dir / "target"}


def make_phantom(out_dir: Path | str, n_source: int = 48, n_target: int = 32, size: int = 128, seed: int = 0) -> dict:
    """Write ``out_dir/{source,target}/{images,masks}/*.png`` and return paths and parameters (incl. ``shift``).

    Deterministic for ``seed`` (identical bytes). Target masks exist only for evaluation. Nothing is rewritten when
    ``out_dir`` already holds a complete phantom with the same parameters (checked through ``phantom.json``,
    written last); otherwise the domains are built in a temporary sibling folder and moved in, so an interrupted
    run never leaves a half-built phantom that looks complete.
    """
    _check_params(n_source, n_target, size)
    out_dir, shift = Path(out_dir), ScannerShift()
    params = _parameters(int(n_source), int(n_target), int(size), int(seed), shift)
    if _is_complete(out_dir, params):
        return _result(out_dir, params)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / STAMP_NAME).unlink(missing_ok=True)
    build = Path(tempfile.mkdtemp(dir=out_dir, prefix=".build.", suffix=".tmp"))
    try:
        _write_domain(build / "source", "source", int(n_source), int(size), int(seed), None)
        _write_domain(build / "target", "target", int(n_target), int(size), int(seed), shift)
        for domain in ("source", "target"):
            shutil.rmtree(out_dir / domain, ignore_errors=True)
            os.replace(build / domain, out_dir / domain)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    atomic_write_json(out_dir / STAMP_NAME, params)
    return _result(out_dir, params)


def phantom_dir() -> Path:
    """The cached default phantom (``<cache>/phantom``), generated on first use (a few hundred ms)."""
    path = cache_root() / "phantom"
    make_phantom(path)
    return path
