"""Sample quality: how far generated points are from held-out data, and how far the data is from itself.

The energy distance (Székely & Rizzo 2013) between distributions P and Q, with X, X' ~ P and Y, Y' ~ Q all
independent, is
    E(P, Q) = 2 E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖,
which is ≥ 0 and zero only when P = Q. From samples x_1 … x_n and y_1 … y_m, minidiff uses the V-statistic, the
same formula between the two empirical distributions:
    E_V = 2/(nm) Σ_ij ‖x_i − y_j‖ − 1/n² Σ_ij ‖x_i − x_j‖ − 1/m² Σ_ij ‖y_i − y_j‖.
Why V rather than U (which divides the within-sample sums by n(n − 1) and is unbiased): E_V is an energy
distance itself, so it is never negative and it is zero exactly when the two samples have the same empirical
distribution — a printed quality number that cannot go below zero. Its price is a positive bias,
    E[E_V] = E(P, Q) + E‖X − X'‖ / n + E‖Y − Y'‖ / m
(the diagonal i = j contributes zeros), which is why each number should be printed with `energy_floor`: E_V
between two independent samples of the data at the same size. A model matches the data as well as n points can
tell when its energy distance is within the floor's spread.

Pairwise distances are summed in blocks of rows, so 10 000 × 10 000 points need a few MiB, not 800.
"""
import numpy as np

PAIRS_PER_BLOCK = 2 ** 21  # distances held at once: 16 MiB of float64 per block
FLOOR_REPEATS = 5  # independent data-vs-data pairs averaged by energy_floor


def _check_sample(name, x):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 1:
        raise ValueError(f"sample {name} must have shape (n >= 1, D), got {x.shape}")
    bad = np.flatnonzero(~np.all(np.isfinite(x), axis=1))
    if len(bad):
        raise ValueError(f"sample {name} has NaN or Inf in {len(bad)} of {len(x)} rows (first: row {bad[0]}); "
                         f"the energy distance needs finite points (did training diverge?)")
    return x


def mean_distance(a, b, pairs_per_block=PAIRS_PER_BLOCK):
    """(1 / (n m)) Σ_ij ‖a_i − b_j‖ for a (n, D) and b (m, D), summed over blocks of rows of a."""
    rows = max(1, pairs_per_block // len(b))
    total = 0.0
    for start in range(0, len(a), rows):
        block = a[start:start + rows]  # (r, D)
        squared = np.zeros((len(block), len(b)))  # (r, m)
        for d in range(a.shape[1]):  # one dimension at a time: memory r·m, not r·m·D
            squared += (block[:, d, None] - b[None, :, d]) ** 2
        total += np.sqrt(squared).sum()
    return total / (len(a) * len(b))


def energy_distance(x, y, pairs_per_block=PAIRS_PER_BLOCK):
    """The energy distance V-statistic E_V between samples x (n, D) and y (m, D) (module docstring)."""
    x, y = _check_sample("x", x), _check_sample("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"samples x and y must have the same dimension D, got {x.shape[1]} and {y.shape[1]}")
    cross = mean_distance(x, y, pairs_per_block)
    within_x = mean_distance(x, x, pairs_per_block)
    within_y = mean_distance(y, y, pairs_per_block)
    return max(2 * cross - within_x - within_y, 0.0)  # ≥ 0 exactly; the max only removes round-off below 0


def energy_floor(sample_fn, n, rng, repeats=FLOOR_REPEATS):
    """(mean, stderr) over `repeats` of E_V between two independent draws of n points from sample_fn(n, rng).

    The value a perfect model would score against n held-out points: the statistic's bias plus its noise.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if repeats < 2:
        raise ValueError(f"repeats must be >= 2 to give a standard error, got {repeats}")
    values = np.array([energy_distance(sample_fn(n, rng), sample_fn(n, rng)) for _ in range(repeats)])
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(repeats))
