"""The image datasets: the shipped digits against UCI's description of them, the image presets against closed forms
of their construction (nearest-neighbour upsampling, the brightness of a low-rank mixture), Monte Carlo."""
import numpy as np
import pytest

from minidiff import images
from minidiff.data import DATASETS, get_mixture, sample_dataset
from minidiff.lowrank import LowRankMixture

Z = 5.0  # Monte Carlo tolerance in standard errors
IMAGES = [name for name, dataset in DATASETS.items() if dataset.image_shape is not None]
# UCI "Optical Recognition of Handwritten Digits", optdigits.names: examples per class in the test set (optdigits.tes)
UCI_TEST_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


@pytest.mark.parametrize("name", IMAGES)
def test_image_datasets_have_their_shape_and_live_near_the_unit_range(name, rng):
    x = sample_dataset(name, 2000, rng)
    height, width = DATASETS[name].image_shape
    assert x.shape == (2000, height * width) and x.dtype == np.float64 and np.all(np.isfinite(x))
    assert np.quantile(np.abs(x), 0.99) < 2.0 and 0.3 < x.std() < 1.0  # images on [−1, 1], not the plane's ±3


def test_digits_are_the_uci_test_set():
    pixels, labels = images.load_digits()
    assert pixels.shape == (1797, 8, 8) and pixels.dtype == np.uint8 and pixels.min() == 0 and pixels.max() == 16
    np.testing.assert_array_equal(np.bincount(labels), UCI_TEST_COUNTS)
    assert np.all(pixels[:, :, 0].mean(axis=0) < pixels[:, :, 3].mean(axis=0))  # ink is centred, edges are blank


def test_digits_take_17_levels_in_the_unit_range(rng):
    x = sample_dataset("digits", 5000, rng)
    levels = np.unique(x)
    np.testing.assert_allclose(levels, np.linspace(-1, 1, 17), rtol=0, atol=1e-15)
    assert DATASETS["digits"].levels == 17
    pixels = images.load_digits()[0].reshape(-1, 64) / 8.0 - 1.0
    assert np.all(np.abs(x.mean(0) - pixels.mean(0)) < Z * pixels.std(0) / np.sqrt(len(x)) + 1e-12)


def average_pool(images, factor):
    """(..., (8 f)²) → (..., 64): the mean of each f × f block."""
    blocks = images.reshape(images.shape[:-1] + (8, factor, 8, factor))
    return blocks.mean(axis=(-3, -1)).reshape(images.shape[:-1] + (64,))


def test_upsampled_presets_have_the_same_content():
    # average-pooling each f × f block of the upsampled means and directions of variation gives back the 8×8 ones
    small = get_mixture("smooth8x8")
    for name, factor in (("smooth16x16", 2), ("smooth32x32", 4)):
        big = get_mixture(name)
        np.testing.assert_allclose(average_pool(big.means, factor), small.means, rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(average_pool(big.factors.transpose(0, 2, 1), factor),
                                   small.factors.transpose(0, 2, 1), atol=1e-15)
        np.testing.assert_array_equal(big.noise_vars, small.noise_vars)
        block = big.means.reshape(-1, 8, factor, 8, factor)
        assert np.all(block == block[:, :, :1, :, :1])  # nearest neighbour: constant on each block


def test_smooth_images_have_strongly_correlated_neighbouring_pixels():
    cov = get_mixture("smooth8x8").to_dense().cov()
    corr = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    right = [corr[i, i + 1] for i in range(64) if i % 8 != 7]  # each pixel and its right neighbour
    far = [corr[i, j] for i in range(64) for j in range(64) if abs(i // 8 - j // 8) + abs(i % 8 - j % 8) >= 8]
    assert np.mean(right) > 0.7 and np.mean(np.abs(far)) < np.mean(right) / 2


@pytest.mark.parametrize("name", ["brightness", "brightness32"])
def test_brightness_is_the_one_dimensional_mixture_it_is_built_as(name, rng):
    # brightness b = 1ᵀx/D of component k is N(1ᵀm_k/D, ‖U_kᵀ1‖²/D² + s²/D): a 1-D mixture, checked by Monte Carlo
    mixture = get_mixture(name)
    D = mixture.dim
    centre = mixture.means.mean(axis=1)
    var = np.sum(mixture.factors.sum(axis=1) ** 2, axis=1) / D ** 2 + mixture.noise_vars / D
    np.testing.assert_allclose(centre, np.linspace(-0.85, 0.85, 8), atol=1e-14)
    b = np.concatenate([images.brightness(mixture.sample(5000, rng)) for _ in range(6)])  # 30 000 images
    for power in (1, 2):
        exact = np.sum(mixture.weights * (centre ** 2 + var if power == 2 else centre))
        assert abs(np.mean(b ** power) - exact) < Z * np.std(b ** power) / np.sqrt(len(b))
    assert np.quantile(b, 0.01) < -0.9 and np.quantile(b, 0.99) > 0.9  # it spreads over [−1, 1]


def test_digits_mixture_has_one_component_per_digit_with_dequantisation_variance():
    mixture = images.digits_mixture()
    assert mixture.means.shape == (1797, 64) and mixture.factors.shape == (1797, 64, 0)
    np.testing.assert_allclose(mixture.noise_vars, (2 / 16) ** 2 / 12, rtol=1e-15)  # Var U(−Δ/2, Δ/2) = Δ²/12


def test_upsample_refuses_images_that_are_not_square():
    with pytest.raises(ValueError, match="square"):
        images.upsample(LowRankMixture([1.0], np.zeros((1, 6)), np.zeros((1, 6, 0)), [1.0]), 2)
