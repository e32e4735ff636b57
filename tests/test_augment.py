"""Training augmentations: geometry shared by image and labels, noise statistics, seeding."""

from __future__ import annotations

import numpy as np
import pytest

from opsef_core.train.data import Augmentation, augment


def _pair(shape=(32, 32)):
    rng = np.random.default_rng(1)
    img = rng.uniform(10, 200, shape).astype(np.float32)
    lab = np.zeros(shape, np.int32)
    lab[2:9, 3:12] = 1
    lab[-10:-2, -7:-1] = 2
    return img, lab


def test_probability_zero_changes_nothing():
    img, lab = _pair()
    opts = Augmentation(flips=True, rotations90=True, intensity_scale=(0.5, 2.0), gaussian_noise=0.3,
                        poisson_noise=True, probability=0.0)
    a, b = augment(img, lab, np.random.default_rng(0), opts)
    np.testing.assert_array_equal(a, img)
    np.testing.assert_array_equal(b, lab)


@pytest.mark.parametrize("ndim", [2, 3])
def test_geometric_transforms_move_image_and_labels_together(ndim):
    shape = (32, 32) if ndim == 2 else (4, 32, 32)
    rng = np.random.default_rng(3)
    lab = rng.integers(0, 5, shape).astype(np.int32)
    img = lab.astype(np.float32) * 10  # the image is a function of the labels
    opts = Augmentation(flips=True, rotations90=True, intensity_scale=None, probability=1.0)
    seen = set()
    for seed in range(12):
        a, b = augment(img, lab, np.random.default_rng(seed), opts)
        np.testing.assert_array_equal(a, b.astype(np.float32) * 10)
        if ndim == 3:  # z is never flipped or rotated
            assert {tuple(np.unique(b[z])) for z in range(4)} == {tuple(np.unique(lab[z])) for z in range(4)}
        seen.add(b.tobytes())
    assert len(seen) > 1  # the seeds give different transforms
    # a channel axis in front follows the same transform
    img_c = np.stack([img, img + 1])
    a, b = augment(img_c, lab, np.random.default_rng(5), opts, channel_axis=0)
    np.testing.assert_array_equal(a[0], b * 10.0)
    np.testing.assert_array_equal(a[1], b * 10.0 + 1)


def test_same_seed_same_result():
    img, lab = _pair()
    opts = Augmentation(gaussian_noise=0.2, poisson_noise=True, probability=0.7)
    a1, b1 = augment(img, lab, np.random.default_rng(42), opts)
    a2, b2 = augment(img, lab, np.random.default_rng(42), opts)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(b1, b2)


def test_gaussian_noise_has_the_asked_sigma():
    img = np.full((256, 256), 100.0, np.float32)
    img[:, :128] = 50.0  # std 25
    lab = np.zeros(img.shape, np.int32)
    opts = Augmentation(flips=False, rotations90=False, intensity_scale=None, gaussian_noise=0.2, probability=1.0)
    a, b = augment(img, lab, np.random.default_rng(0), opts)
    resid = a - img
    assert abs(resid.mean()) < 0.2
    assert resid.std() == pytest.approx(0.2 * 25, rel=0.03)
    np.testing.assert_array_equal(b, lab)


def test_poisson_noise_keeps_the_mean_and_scales_variance_with_signal():
    img = np.zeros((256, 256), np.float32)
    img[:, 128:] = 1.0  # min 0, max 1 -> 255 counts full scale
    lab = np.zeros(img.shape, np.int32)
    opts = Augmentation(flips=False, rotations90=False, intensity_scale=None, poisson_noise=True, probability=1.0)
    a, _ = augment(img, lab, np.random.default_rng(0), opts)
    bright, dark = a[:, 128:], a[:, :128]
    assert bright.mean() == pytest.approx(1.0, rel=0.01)
    # shot noise: variance of counts equals their mean (255), i.e. std 1/sqrt(255) in image units
    assert bright.std() == pytest.approx(1 / np.sqrt(255), rel=0.05)
    assert dark.std() == 0.0  # zero counts stay zero
