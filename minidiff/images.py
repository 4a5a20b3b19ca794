"""Small images: the 8×8 handwritten digits, and Gaussian mixtures that look like families of images.

An image of side n is a point in D = n² dimensions, its pixels in row-major order, on the scale [−1, 1] of
Ho et al. 2020 (§3.3). Three kinds, all returned as (N, D) float64 arrays or as mixtures with the exact oracle:

- `digits`: the 1,797 8×8 handwritten digits of the UCI "Optical Recognition of Handwritten Digits" set (Alpaydin &
  Kaynak 1998; UCI Machine Learning Repository, CC BY 4.0; its test set, as scikit-learn ships it). Each pixel
  counts the ink in a 4×4 block of a 32×32 bitmap: an integer 0 … 16, so 17 grey levels, scaled by v/8 − 1.
  Shipped as minidiff/datasets/digits.npz (uint8 images (1797, 8, 8) and labels (1797,)), read without pickle.
- `smooth_images(side)`: a seeded mixture of K smooth random images, each component Σ = U Uᵀ + s² I with r smooth
  random images as the columns of U (lowrank.py): strongly correlated pixels plus a little pixel noise. The 16×16
  and 32×32 presets are the 8×8 one upsampled by nearest neighbour (`upsample`): the same content at higher
  resolution, the setting of Hoogeboom et al. 2023's resolution shift (§3.1), with the same pixel noise s².
- `brightness_images(side)`: smooth images whose mean brightness spreads over [−1, 1]: component k has brightness
  c_k (evenly spaced) plus N(0, 0.1²) from one more column of U, the constant image. With a schedule that leaks
  signal at its last step, the mean of x_T keeps √ᾱ_{T−1} of the brightness, and sampling from N(0, I) cannot
  reach the extremes (Lin et al. 2023, §3.1).

Smooth random images are white noise blurred by a Gaussian of width SMOOTH_LENGTH pixels along rows and columns
(G W Gᵀ), scaled to unit root-mean-square.
"""
import functools
import os

import numpy as np

from minidiff.lowrank import LowRankMixture

DIGITS_FILE = os.path.join(os.path.dirname(__file__), "datasets", "digits.npz")
DIGITS_SIDE, DIGITS_LEVELS = 8, 17  # 8×8 pixels, each an integer 0 … 16
BASE_SIDE = 8  # the presets are drawn at 8×8 and upsampled
SMOOTH_SEED, BRIGHTNESS_SEED = 2023, 2024  # each preset is one fixed draw
SMOOTH_LENGTH = 1.5  # blur width in pixels of an 8×8 image: a few blobs per image
SMOOTH_COMPONENTS, SMOOTH_RANK = 6, 6  # K components, r directions of variation each
SMOOTH_MEAN_RMS, SMOOTH_FACTOR_RMS = 0.5, 0.12  # root-mean-square of a component's mean and of each column of U
PIXEL_STD = 0.05  # s: independent noise per pixel, at every resolution
BRIGHTNESS_COMPONENTS, BRIGHTNESS_CENTRE = 8, 0.85  # brightness c_k evenly spaced in [−0.85, 0.85]
BRIGHTNESS_STD = 0.1  # the spread of the brightness within a component (the constant column of U)
BRIGHTNESS_PATTERN_RMS = 0.3  # the zero-mean smooth pattern on top of the brightness


# --- the digits -------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _digit_pixels():
    with np.load(DIGITS_FILE, allow_pickle=False) as file:
        images, labels = file["images"], file["labels"]
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_digits():
    """(images, labels): the 1,797 digits as uint8 (1797, 8, 8) with values 0 … 16, and their labels 0 … 9."""
    return _digit_pixels()


def to_unit_range(values, levels):
    """Integer grey values 0 … levels−1 → [−1, 1]: v · 2/(levels−1) − 1 (Ho et al. 2020, §3.3)."""
    return np.asarray(values, dtype=np.float64) * (2.0 / (levels - 1)) - 1.0


def digits(n, rng):
    """n digits drawn uniformly with replacement from the 1,797, as (n, 64) values on 17 levels in [−1, 1]."""
    images = _digit_pixels()[0].reshape(-1, DIGITS_SIDE ** 2)
    return to_unit_range(images[rng.integers(0, len(images), n)], DIGITS_LEVELS)


def digits_mixture(variance=None):
    """A stand-in for the digits' exact denoiser: the 1,797 digits as equal components N(x_i, s² I).

    The default s² = Δ²/12, Δ = 2/16 the step between grey levels, is the variance of uniform dequantisation (a
    pixel spread evenly over its bin). Its oracle is the exact MMSE denoiser of this smoothed data set."""
    x = to_unit_range(_digit_pixels()[0].reshape(-1, DIGITS_SIDE ** 2), DIGITS_LEVELS)
    variance = (2.0 / (DIGITS_LEVELS - 1)) ** 2 / 12 if variance is None else variance
    return LowRankMixture(np.full(len(x), 1.0 / len(x)), x, np.zeros(x.shape + (0,)), np.full(len(x), variance))


# --- smooth random images ---------------------------------------------------------------------------------------

def smooth_fields(rng, n, side=BASE_SIDE, length=SMOOTH_LENGTH):
    """n smooth random images (n, side²): G W Gᵀ for white W, G the Gaussian blur, each of unit RMS."""
    offsets = np.arange(side)[:, None] - np.arange(side)[None, :]
    blur = np.exp(-offsets ** 2 / (2 * length ** 2))  # (side, side)
    fields = blur @ rng.standard_normal((n, side, side)) @ blur.T
    fields = fields.reshape(n, side * side)
    return fields / np.sqrt(np.mean(fields ** 2, axis=1, keepdims=True))


def upsample(mixture, factor):
    """The mixture of images upsampled by nearest neighbour: every pixel becomes a factor × factor block.

    Means and the columns of U are upsampled; the pixel noise s² stays s² per pixel (the same content at a
    higher resolution, with fresh pixel noise)."""
    side = int(round(np.sqrt(mixture.dim)))
    if side * side != mixture.dim or factor < 1:
        raise ValueError(f"upsample needs square images (D = side²) and a factor >= 1, got D = {mixture.dim}")

    def grow(images):  # (..., side²) -> (..., (factor side)²)
        square = images.reshape(images.shape[:-1] + (side, side))
        return np.repeat(np.repeat(square, factor, -2), factor, -1).reshape(images.shape[:-1] + (-1,))
    factors = np.moveaxis(grow(np.moveaxis(mixture.factors, 1, 2)), 1, 2)  # (K, D, r) -> (K, factor² D, r)
    return LowRankMixture(mixture.weights, grow(mixture.means), factors, mixture.noise_vars)


def _at_side(mixture, side):
    if side % BASE_SIDE:
        raise ValueError(f"image presets come at multiples of {BASE_SIDE} pixels a side, got {side}")
    return upsample(mixture, side // BASE_SIDE) if side > BASE_SIDE else mixture


def smooth_images(side=BASE_SIDE):
    """The smooth-image preset at side × side (module docstring): K = 6 components, r = 6, s = 0.05."""
    rng = np.random.default_rng(SMOOTH_SEED)
    K, r = SMOOTH_COMPONENTS, SMOOTH_RANK
    means = SMOOTH_MEAN_RMS * smooth_fields(rng, K)  # (K, 64)
    factors = SMOOTH_FACTOR_RMS * smooth_fields(rng, K * r).reshape(K, r, -1).transpose(0, 2, 1)  # (K, 64, r)
    base = LowRankMixture(np.full(K, 1.0 / K), means, factors, np.full(K, PIXEL_STD ** 2))
    return _at_side(base, side)


def _zero_mean(images):
    return images - images.mean(axis=-1, keepdims=True)


def brightness_images(side=BASE_SIDE):
    """The brightness preset at side × side (module docstring): mean brightness c_k + N(0, 0.1²), c_k evenly in
    [−0.85, 0.85], on zero-mean smooth patterns; K = 8, r = 6 (5 patterns and the constant image), s = 0.05."""
    rng = np.random.default_rng(BRIGHTNESS_SEED)
    K, D, r = BRIGHTNESS_COMPONENTS, BASE_SIDE ** 2, SMOOTH_RANK
    centres = np.linspace(-BRIGHTNESS_CENTRE, BRIGHTNESS_CENTRE, K)
    means = centres[:, None] + BRIGHTNESS_PATTERN_RMS * _zero_mean(smooth_fields(rng, K))  # (K, 64)
    patterns = SMOOTH_FACTOR_RMS * _zero_mean(smooth_fields(rng, K * (r - 1))).reshape(K, r - 1, D)
    constant = np.full((K, 1, D), BRIGHTNESS_STD)  # brightness b ← b + 0.1 z
    factors = np.concatenate([patterns, constant], axis=1).transpose(0, 2, 1)  # (K, 64, r)
    base = LowRankMixture(np.full(K, 1.0 / K), means, factors, np.full(K, PIXEL_STD ** 2))
    return _at_side(base, side)


def brightness(x):
    """The mean brightness of each image, (n,): the mean over its pixels."""
    return np.asarray(x, dtype=np.float64).mean(axis=1)
