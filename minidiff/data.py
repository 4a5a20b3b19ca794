"""The data: toy datasets, Gaussian mixtures with exact answers, and the user's own files.

Every generator is a pure function `(n, rng) -> (n, D)` float64 array that draws i.i.d. points from a fixed
distribution, so two calls with fresh generators give two independent samples (which the data-vs-data floor of
`metrics.energy_floor` needs). All datasets are scaled to span roughly ±3, the scale of the common `moons` setup
and of a standard normal prior. Four are Gaussian mixtures (`gaussian`, `gmm1d`, `gmm2d`, `8gaussians`): for
those `get_mixture(name)` returns the mixture, whose density, score and optimal denoiser are exact
(`minidiff.mixture`).

Sources of the shapes: scikit-learn's `make_moons`/`make_circles`/`make_swiss_roll` (Pedregosa et al. 2011) and
the toy densities of FFJORD (Grathwohl et al. 2019); each definition is written out in its docstring. Where those
place points on an evenly spaced grid (sklearn's moons and circles), points here are drawn i.i.d. from the same
curve.
"""
import dataclasses
import os
from typing import Callable, Optional

import numpy as np

from .mixture import GaussianMixture, check_count, check_rng

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
    """A named data source: a one-line description, a sampler (n, rng) -> (n, D), and its mixture if exact."""

    description: str
    sample: Callable[[int, np.random.Generator], np.ndarray]
    mixture: Optional[GaussianMixture] = None


def _exact(description, mixture):
    return Dataset(description, mixture.sample, mixture)


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
    """The exact GaussianMixture behind dataset `name` (an error for datasets without a closed-form density)."""
    mixture = _lookup(name).mixture
    if mixture is None:
        exact = [key for key, value in DATASETS.items() if value.mixture is not None]
        raise ValueError(f"dataset {name!r} has no exact density; these do: {', '.join(exact)}")
    return mixture


# --- the user's own data --------------------------------------------------------------------------------------

DATA_EXTENSIONS = (".npy", ".csv")
MIN_ROWS = 2  # a spread (and standardize's std) needs at least two points
MAX_VALUES = 2 ** 25  # 33.5 M numbers = 256 MiB as float64: far above any toy set, below a laptop's memory
MAX_FILE_BYTES = 2 ** 29  # 512 MiB on disk, checked before anything is read (CSV spends ~16 bytes a number)


class DataError(ValueError):
    """A data file that cannot be used: the message names the file, what is wrong and what is allowed."""


def load_data_file(path):
    """The rows of a user's data file as an (n, D) float64 array.

    .npy: a numeric array, loaded with allow_pickle=False (object arrays are refused). .csv: numbers separated by
    commas, one row per line, with at most one header line. A 1-D array of n values is read as n points in
    D = 1. Refused, with a DataError naming the file: a missing file, another extension, no data, non-numeric
    values, NaN or Inf, more than 2 dimensions, fewer than MIN_ROWS rows, more than MAX_VALUES numbers.
    """
    path = str(path)
    _check_file(path)
    values = _read_npy(path) if path.lower().endswith(".npy") else _read_csv(path)
    if values.ndim == 1:
        values = values[:, None]  # n values: n points in one dimension
    return _check_values(path, values)


def _check_file(path):
    if not os.path.isfile(path):
        raise DataError(f"data file {path!r} does not exist (or is not a file)")
    if not path.lower().endswith(DATA_EXTENSIONS):
        raise DataError(f"data file {path!r} has an unsupported extension; use one of: {', '.join(DATA_EXTENSIONS)}")
    if os.path.getsize(path) > MAX_FILE_BYTES:
        raise DataError(f"data file {path!r} is larger than {MAX_FILE_BYTES} bytes; give a smaller sample")


def _read_npy(path):
    shape, dtype = _npy_header(path)
    if dtype.hasobject:
        raise DataError(f"data file {path!r} holds Python objects (pickled); only numeric arrays are allowed "
                        f"(.npy files are loaded with allow_pickle=False)")
    if dtype.kind not in "iuf":
        raise DataError(f"data file {path!r} has dtype {dtype}; only integer or float arrays are allowed")
    if int(np.prod(shape)) > MAX_VALUES:
        raise DataError(f"data file {path!r} holds {int(np.prod(shape))} numbers, more than the limit {MAX_VALUES}")
    try:
        return np.load(path, allow_pickle=False).astype(np.float64)
    except (ValueError, OSError, EOFError) as error:  # e.g. a truncated file
        raise DataError(f"data file {path!r} is not a readable .npy file: {error}") from None


def _npy_header(path):
    """(shape, dtype) from the .npy header, read without loading the array (NumPy's .npy format, NEP 1)."""
    try:
        with open(path, "rb") as file:
            version = np.lib.format.read_magic(file)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(file)
    except (ValueError, OSError, EOFError) as error:
        raise DataError(f"data file {path!r} is not a .npy file (NumPy's binary format): {error}") from None
    return shape, dtype


def _read_csv(path):
    with open(path, encoding="utf-8", errors="replace") as file:
        rows = [(number, line) for number, line in enumerate(file, start=1) if line.strip()]  # (line number, text)
    if rows and not _is_numeric_row(rows[0][1]):
        rows = rows[1:]  # one header line
    if not rows:
        raise DataError(f"data file {path!r} has no data rows; give numbers separated by commas, one row per line")
    try:
        return np.loadtxt([line for _, line in rows], delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError:
        raise DataError(f"data file {path!r}: {_csv_problem(rows)}") from None


def _csv_problem(rows):
    """What is wrong with the first bad line: a non-numeric value, or a change in the number of columns."""
    width = len(rows[0][1].split(","))
    for number, line in rows:
        if not _is_numeric_row(line):
            return f"line {number} is not numbers separated by commas ({line.strip()[:40]!r}); one header line at most"
        if len(line.split(",")) != width:
            return f"line {number} has {len(line.split(','))} values, the first data line has {width}"
    return "it could not be parsed as comma-separated numbers"


def _is_numeric_row(line):
    try:
        [float(value) for value in line.split(",")]
        return True
    except ValueError:
        return False


def _check_values(path, values):
    if values.ndim != 2:
        raise DataError(f"data file {path!r} holds a {values.ndim}-D array of shape {values.shape}; "
                        f"give a 2-D array (n points, D dimensions) or a 1-D array of n values")
    if values.shape[1] == 0 or values.shape[0] < MIN_ROWS:
        raise DataError(f"data file {path!r} has shape {values.shape}; at least {MIN_ROWS} rows and 1 column "
                        f"are needed")
    if values.size > MAX_VALUES:
        raise DataError(f"data file {path!r} holds {values.size} numbers, more than the limit {MAX_VALUES}")
    bad = np.flatnonzero(~np.all(np.isfinite(values), axis=1))
    if len(bad):
        raise DataError(f"data file {path!r} has NaN or Inf in {len(bad)} data row(s), the first is data row "
                        f"{bad[0] + 1} (counting from 1, header excluded); all values must be finite")
    return values


def standardize(x):
    """(x − mean) / std per column, with the statistics as plain lists so they save in a JSON config.

    Returns (x_standardized, {"mean": [...], "std": [...]}); std is the population std (ddof = 0). A constant
    column cannot be scaled to unit variance and is refused.
    """
    x = np.asarray(x, dtype=np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0)
    if np.any(std == 0):
        raise DataError(f"column(s) {np.flatnonzero(std == 0).tolist()} are constant (std 0) and cannot be "
                        f"standardized; remove them")
    return (x - mean) / std, {"mean": mean.tolist(), "std": std.tolist()}


def unstandardize(x, stats):
    """The inverse of `standardize`: x · std + mean, with stats as `standardize` returned them."""
    return np.asarray(x, dtype=np.float64) * np.asarray(stats["std"]) + np.asarray(stats["mean"])
