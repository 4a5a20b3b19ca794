"""The data: toy datasets and Gaussian mixtures with exact answers (a user's own file: `minidiff/runs/datafile.py`).

Every generator is a pure function `(n, rng) -> (n, D)` float64 array that draws i.i.d. points from a fixed
distribution, so two calls with fresh generators give two independent samples (which the data-vs-data floor of
`metrics.energy_floor` needs). All datasets are scaled to span roughly ±3, the scale of the common `moons` setup
and of a standard normal prior. Four of these are Gaussian mixtures (`gaussian`, `gmm1d`, `gmm2d`,
`8gaussians`): for those `get_mixture(name)` returns the mixture, whose density, score and optimal denoiser are
exact (`minidiff.mixture`).

Beyond the plane (`minidiff.images`): `digits`, the 8×8 handwritten digits of UCI (1,797 images on 17 grey levels,
in [−1, 1]); `smooth8x8`, `smooth16x16`, `smooth32x32`, a mixture of smooth images and its nearest-neighbour
upsamplings; `brightness` and `brightness32`, smooth images whose mean brightness spreads over [−1, 1]. All but
`digits` are low-rank Gaussian mixtures (`minidiff.lowrank`) with the exact oracle in 64 to 1024 dimensions. These
live on the scale [−1, 1] of images rather than ±3, and say their image shape and, for discrete data, their number
of grey levels.

Sources of the shapes: scikit-learn's `make_moons`/`make_circles`/`make_swiss_roll` (Pedregosa et al. 2011) and
the toy densities of FFJORD (Grathwohl et al. 2019); each definition is written out in its docstring. Where those
place points on an evenly spaced grid (sklearn's moons and circles), points here are drawn i.i.d. from the same
curve.
"""
import dataclasses
from typing import Callable, Optional

import numpy as np

from minidiff import images
from minidiff.mixture import GaussianMixture, check_count, check_rng

MOONS_NOISE = 0.05  # std of the noise added to the unit moons, before the rescale (common toy-diffusion setup)
MOONS_SHIFT, MOONS_SCALE, MOONS_OFFSET = 0.3, (2.0, 3.0), -1.0  # x ← (x + 0.3)·2 − 1, y ← (y + 0.3)·3 − 1
CIRCLES_RADII = (2.5, 1.25)  # sklearn make_circles with factor 0.5, scaled by 2.5
CIRCLES_NOISE = 0.1
LINE_HALF_WIDTH = 3.0  # the diagonal from (−3, −3) to (3, 3)
LINE_NOISE = 0.05  # thin: the data lies close to a 1-D curve, where the score is steep
SWISSROLL_SCALE, SWISSROLL_NOISE = 1 / 5, 1.0  # FFJORD: make_swiss_roll(noise=1.0)[:, [0, 2]] / 5
SPIRALS_MAX_ANGLE = 3 * np.pi  # FFJORD's "2spirals": 540° = 1.5 turns
SPIRALS_SCALE, SPIRALS_NOISE = 1 / 3, 0.1  # FFJORD's "2spirals"
CHECKERBOARD_HALF_WIDTH, CHECKERBOARD_CELLS = 3.0, 4  # FFJORD's 4×4 board on [−2, 2]², rescaled to [−3, 3]²
EIGHT_GAUSSIANS_RADIUS = 4 / np.sqrt(2)  # FFJORD: centres at radius 4, then the data is divided by 1.414 (≈ √2)
EIGHT_GAUSSIANS_STD = 0.5 / np.sqrt(2)


# --- toy generators -------------------------------------------------------------------------------------------

def moons(n, rng):
    """Two interleaved half circles: with θ ~ U(0, π), the upper moon (cos θ, sin θ) or, with probability ½,
    the lower moon (1 − cos θ, ½ − sin θ); plus N(0, 0.05²) noise; then x ← (x + 0.3)·2 − 1, y ← (y + 0.3)·3 − 1.
    Spans x ∈ [−2.4, 3.6], y ∈ [−1.6, 2.9]; mean (0.6, 0.65)."""
    theta = np.pi * rng.random(n)
    lower = rng.random(n) < 0.5
    x = np.where(lower, 1.0 - np.cos(theta), np.cos(theta))
    y = np.where(lower, 0.5 - np.sin(theta), np.sin(theta))
    points = np.stack([x, y], axis=1) + MOONS_NOISE * rng.standard_normal((n, 2))  # (n, 2)
    return (points + MOONS_SHIFT) * np.array(MOONS_SCALE) + MOONS_OFFSET


def circles(n, rng):
    """Two concentric circles, radius 2.5 and 1.25 chosen with probability ½ each, angle ~ U(0, 2π), plus
    N(0, 0.1²) noise. Spans about ±2.8; mean 0."""
    theta = 2 * np.pi * rng.random(n)
    radius = np.where(rng.random(n) < 0.5, *CIRCLES_RADII)
    points = radius[:, None] * np.stack([np.cos(theta), np.sin(theta)], axis=1)
    return points + CIRCLES_NOISE * rng.standard_normal((n, 2))


def line(n, rng):
    """The diagonal segment (u, u), u ~ U(−3, 3), plus N(0, 0.05²) noise: nearly a 1-D manifold. Mean 0."""
    u = rng.uniform(-LINE_HALF_WIDTH, LINE_HALF_WIDTH, n)
    return np.stack([u, u], axis=1) + LINE_NOISE * rng.standard_normal((n, 2))


def swissroll(n, rng):
    """The 2-D swiss roll: τ = 1.5π(1 + 2u), u ~ U(0, 1), point (τ cos τ, τ sin τ) + N(0, 1) noise, all divided
    by 5 (FFJORD's scaling of sklearn's make_swiss_roll). Spans about ±2.9."""
    tau = 1.5 * np.pi * (1 + 2 * rng.random(n))
    points = np.stack([tau * np.cos(tau), tau * np.sin(tau)], axis=1)
    return SWISSROLL_SCALE * (points + SWISSROLL_NOISE * rng.standard_normal((n, 2)))


def spirals(n, rng):
    """Two interleaved spirals: φ = 3π √u, u ~ U(0, 1), arm a = ±1 with probability ½, point
    a·(−φ cos φ, φ sin φ)/3 + N(0, 0.1²) noise (FFJORD's "2spirals" without its uniform jitter). Spans ±π."""
    phi = SPIRALS_MAX_ANGLE * np.sqrt(rng.random(n))
    arm = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    points = (arm * SPIRALS_SCALE)[:, None] * np.stack([-phi * np.cos(phi), phi * np.sin(phi)], axis=1)
    return points + SPIRALS_NOISE * rng.standard_normal((n, 2))


def checkerboard(n, rng):
    """Uniform on the 8 "black" cells (column i + row j even) of a 4×4 board tiling [−3, 3]² with cells of side
    1.5 (FFJORD's checkerboard, rescaled). Density 1/18 on the black cells; mean 0."""
    cell = 2 * CHECKERBOARD_HALF_WIDTH / CHECKERBOARD_CELLS
    column = rng.integers(0, CHECKERBOARD_CELLS, n)
    row = 2 * rng.integers(0, CHECKERBOARD_CELLS // 2, n) + column % 2  # same parity as the column
    corner = np.stack([column, row], axis=1) * cell - CHECKERBOARD_HALF_WIDTH  # (n, 2)
    return corner + cell * rng.random((n, 2))


# --- the Gaussian mixtures ------------------------------------------------------------------------------------

def _rotated_cov(stds, degrees):
    """R diag(stds²) Rᵀ, R the rotation by `degrees`: an ellipse with axes stds, turned."""
    a = np.deg2rad(degrees)
    R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return R @ np.diag(np.square(stds)) @ R.T


def eight_gaussians():
    """Eight equal Gaussians, centres at radius 2√2 and angles 0°, 45°, …, 315°, each N(·, (0.5/√2)² I) (FFJORD)."""
    angles = 2 * np.pi * np.arange(8) / 8
    means = EIGHT_GAUSSIANS_RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return GaussianMixture(np.full(8, 1 / 8), means, np.tile(EIGHT_GAUSSIANS_STD ** 2 * np.eye(2), (8, 1, 1)))


def gaussian():
    """One correlated 2-D Gaussian: mean 0, axes with stds 1.5 and 0.5, turned by 30°."""
    return GaussianMixture([1.0], [[0.0, 0.0]], [_rotated_cov([1.5, 0.5], 30)])


def gmm1d():
    """Three 1-D Gaussians: weights (0.3, 0.5, 0.2), means (−2, 0.5, 2.5), stds (0.5, 0.4, 0.3)."""
    return GaussianMixture([0.3, 0.5, 0.2], [[-2.0], [0.5], [2.5]], np.square([0.5, 0.4, 0.3])[:, None, None])


def gmm2d():
    """Three 2-D Gaussians of unequal weight (0.5, 0.3, 0.2) and shape: means (−1.5, −1), (1.5, −0.5), (0, 2);
    stds (0.8, 0.3) at 45°, (0.5, 0.5), (1.0, 0.2) at −20°."""
    covs = [_rotated_cov([0.8, 0.3], 45), _rotated_cov([0.5, 0.5], 0), _rotated_cov([1.0, 0.2], -20)]
    return GaussianMixture([0.5, 0.3, 0.2], [[-1.5, -1.0], [1.5, -0.5], [0.0, 2.0]], covs)


# --- the registry ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Dataset:
    """A named data source: a one-line description, a sampler (n, rng) -> (n, D), its mixture if exact (a
    GaussianMixture or a lowrank.LowRankMixture), the (height, width) of its images if it is image data, and the
    number of values each coordinate takes if it is discrete (on an even grid over [−1, 1])."""

    description: str
    sample: Callable[[int, np.random.Generator], np.ndarray]
    mixture: Optional[object] = None
    image_shape: Optional[tuple] = None
    levels: Optional[int] = None


def _exact(description, mixture, image_shape=None):
    return Dataset(description, mixture.sample, mixture, image_shape)


DATASETS = {
    "moons": Dataset("two interleaved half circles, noise 0.05, then x <- (x+0.3)*2-1, y <- (y+0.3)*3-1", moons),
    "circles": Dataset("two concentric circles, radii 2.5 and 1.25, noise 0.1", circles),
    "line": Dataset("the diagonal segment from (-3, -3) to (3, 3), noise 0.05", line),
    "swissroll": Dataset("a 2-D swiss roll, 1.5 turns, noise 0.2, spanning about ±2.9", swissroll),
    "8gaussians": _exact("eight Gaussians on a circle of radius 2.83, std 0.35 (exact density)", eight_gaussians()),
    "checkerboard": Dataset("uniform on the black cells of a 4x4 checkerboard on [-3, 3]^2", checkerboard),
    "spirals": Dataset("two interleaved spirals of 1.5 turns, noise 0.1, spanning about ±3.1", spirals),
    "gaussian": _exact("one correlated 2-D Gaussian, stds 1.5 and 0.5 turned by 30 degrees (exact)", gaussian()),
    "gmm1d": _exact("a 1-D mixture of three Gaussians, means -2, 0.5, 2.5 (exact density)", gmm1d()),
    "gmm2d": _exact("a 2-D mixture of three unequal, elongated Gaussians (exact density)", gmm2d()),
    "digits": Dataset("the 1797 8x8 handwritten digits of UCI (Alpaydin & Kaynak 1998), 17 grey levels in [-1, 1]",
                      images.digits, image_shape=(8, 8), levels=images.DIGITS_LEVELS),
    "smooth8x8": _exact("8x8 smooth random images: 6 low-rank Gaussians, rank 6, pixel noise 0.05 (exact)",
                        images.smooth_images(8), (8, 8)),
    "smooth16x16": _exact("smooth8x8 upsampled to 16x16 by nearest neighbour, D = 256 (exact)",
                          images.smooth_images(16), (16, 16)),
    "smooth32x32": _exact("smooth8x8 upsampled to 32x32 by nearest neighbour, D = 1024 (exact)",
                          images.smooth_images(32), (32, 32)),
    "brightness": _exact("8x8 smooth images whose mean brightness spreads over [-1, 1] (exact)",
                         images.brightness_images(8), (8, 8)),
    "brightness32": _exact("brightness upsampled to 32x32 by nearest neighbour, D = 1024 (exact)",
                           images.brightness_images(32), (32, 32)),
}


def dataset_names():
    """The dataset names, in the order `minidiff datasets` lists them."""
    return list(DATASETS)


def _lookup(name):
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name]


def sample_dataset(name, n, rng):
    """n i.i.d. points from the dataset `name`, shape (n, D), float64, reproducible from rng."""
    dataset = _lookup(name)
    check_rng(rng)
    return np.asarray(dataset.sample(check_count(n), rng), dtype=np.float64)


def get_mixture(name):
    """The exact mixture behind dataset `name`, a GaussianMixture or a lowrank.LowRankMixture (an error for datasets
    without a closed-form density)."""
    mixture = _lookup(name).mixture
    if mixture is None:
        exact = [key for key, value in DATASETS.items() if value.mixture is not None]
        raise ValueError(f"dataset {name!r} has no exact density; these do: {', '.join(exact)}")
    return mixture
