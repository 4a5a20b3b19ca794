"""Discrete data: the discretised Gaussian decoder of Ho et al. 2020 (§3.3, eq. 13), and bits on discrete values.

Images are integers: 8-bit pixels take K = 256 values, the digits K = 17. Scaled to [−1, 1], the values are
x = −1 + kΔ, k = 0 … K−1, with bin width Δ = 2/(K − 1). A density on such data says nothing by itself (it can be
made arbitrarily large at the grid points); what is measured is the probability of the values. The decoder
p_θ(x_0 | x_1) gives each coordinate the mass of N(μ_θ, σ_0²) over its bin:

    P(x | μ, σ²) = Φ((x + Δ/2 − μ)/σ) − Φ((x − Δ/2 − μ)/σ),     with x − Δ/2 = −∞ at k = 0 and x + Δ/2 = +∞ at k = K−1

so the K probabilities sum to 1, and −log P(x_0) ≥ 0. The two are compared through P ≈ p Δ^D for a density p
that is smooth on the scale Δ: −log P = −log p + D log(1/Δ), i.e. a continuous bound in nats converts to a bound on
the discrete values by adding D log(1/Δ) (log₂(1/Δ) = 3 bits per dimension for the digits, 7 for 8-bit images).

Ho et al.'s code uses a tanh approximation of Φ; here Φ is exact to round-off, through math.erfc and, deep in the
tail where erfc underflows, its asymptotic series, and a difference of two values of Φ near 1 is taken on the mirror
side, where they are small.
"""
import math

import numpy as np

LOG_CDF_TAIL = -30.0  # below this log Φ uses the asymptotic series, whose first omitted term is 105/x⁸ < 2e-10
GRID_TOL = 1e-6  # discrete data must lie this close (in units of the bin width) to one of its levels


def log_normal_cdf(x):
    """log Φ(x), elementwise, accurate in both tails.

    Φ(x) = ½ erfc(−x/√2) (math.erfc, exact to round-off); below LOG_CDF_TAIL, where erfc underflows, the asymptotic
    series log Φ(x) = −x²/2 − log(−x √(2π)) + log(1 − 1/x² + 3/x⁴ − 15/x⁶) (Abramowitz & Stegun 1964, 7.1.23)."""
    x = np.asarray(x, dtype=np.float64)
    tail = x < LOG_CDF_TAIL
    with np.errstate(divide="ignore"):  # log Φ(−∞) = −∞
        body = np.log(0.5 * np.frompyfunc(math.erfc, 1, 1)(-np.where(tail, 0.0, x) / math.sqrt(2.0)).astype(float))
    y = np.where(tail, x, LOG_CDF_TAIL)  # the series only where it is used
    inv2 = 1.0 / y ** 2
    series = -0.5 * y ** 2 - np.log(-y * math.sqrt(2 * math.pi)) + np.log1p(-inv2 + 3 * inv2 ** 2 - 15 * inv2 ** 3)
    return np.where(tail, series, body)


def log_normal_mass(a, b):
    """log(Φ(b) − Φ(a)) for a < b, without cancellation: a bin right of 0 is mirrored (Φ(b) − Φ(a) = Φ(−a) − Φ(−b))
    so that Φ is small at its upper end, then log Φ(b) + log(1 − exp(log Φ(a) − log Φ(b)))."""
    mirror = np.asarray(a + b) > 0
    lower, upper = np.where(mirror, -b, a), np.where(mirror, -a, b)
    log_upper = log_normal_cdf(upper)
    with np.errstate(divide="ignore"):  # an empty bin (a = b) has log mass −∞
        return log_upper + np.log(-np.expm1(log_normal_cdf(lower) - log_upper))


def discretized_gaussian_nll(x, mean, var, levels):
    """−log P(x), summed over the last axis, of the discretised decoder (Ho et al. 2020, eq. 13; module docstring):
    per coordinate the mass of N(mean, var) over the bin of x among `levels` evenly spaced values in [−1, 1]."""
    k = grid_index(x, levels)
    half, std = 1.0 / (levels - 1), np.sqrt(var)
    lower = np.where(k == 0, -np.inf, (x - half - mean) / std)
    upper = np.where(k == levels - 1, np.inf, (x + half - mean) / std)
    return -np.sum(log_normal_mass(lower, upper), axis=-1)


def grid_index(x, levels):
    """The level k = 0 … levels−1 of each value x = −1 + 2k/(levels − 1); a ValueError for values off the grid."""
    if not (isinstance(levels, (int, np.integer)) and levels >= 2):
        raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
    position = (np.asarray(x, dtype=np.float64) + 1.0) * (levels - 1) / 2.0
    k = np.rint(position)
    if np.any(np.abs(position - k) > GRID_TOL) or np.any((k < 0) | (k > levels - 1)):
        raise ValueError(f"discrete data must take the {levels} values −1 + 2k/{levels - 1}, k = 0 … {levels - 1}")
    return k.astype(np.int64)
