import numpy as np
import pytest
import torch

from alignflow.data import list_images, load_reference_images
from alignflow.errors import InputError
from alignflow.metrics.kid import KernelInceptionDistanceTo, inception_features, kernel_inception_distance


def test_inception_features_shape():
    assert inception_features(torch.rand(2, 3, 64, 64)).shape == (2, 2048)


def test_kid_separates_the_polyp_domains(kvasir, clinicdb):
    clinic = list_images(clinicdb / "images")
    target = load_reference_images(clinic[:40], 128)
    same_domain = load_reference_images(clinic[300:340], 128)
    other_domain = load_reference_images(list_images(kvasir / "images")[:40], 128)
    kid = KernelInceptionDistanceTo(target, subset_size=40)
    same, _ = kid(same_domain)
    other, _ = kid(other_domain)
    assert other > 1.5 * same
    # the one-shot function agrees with the cached-target one
    assert kernel_inception_distance(other_domain, target, subset_size=40)[0] == pytest.approx(
        KernelInceptionDistanceTo(target, subset_size=40)(other_domain)[0], rel=1e-5)


def test_uint8_nhwc_arrays_are_accepted_and_subset_size_is_checked():
    images = np.random.default_rng(0).integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(InputError, match="subset_size"):
        kernel_inception_distance(images, images, subset_size=5)
