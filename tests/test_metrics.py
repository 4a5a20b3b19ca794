"""The energy distance against brute force, closed forms for Gaussians in 1-D, and its own bias formula."""
import math
import tracemalloc

import numpy as np
import pytest

from minidiff.metrics import energy_distance, energy_floor, mean_distance

Z = 5.0  # Monte Carlo tolerance in standard errors


def folded_normal_mean(delta, s):
    """E|W| for W ~ N(delta, s²): s √(2/π) exp(−delta²/2s²) + delta · erf(delta / (s√2))."""
    return (s * math.sqrt(2 / math.pi) * math.exp(-delta ** 2 / (2 * s ** 2))
            + delta * math.erf(delta / (s * math.sqrt(2))))


def test_identical_samples_are_at_distance_zero(rng):
    x = rng.standard_normal((300, 2))
    assert energy_distance(x, x) < 1e-14
    assert energy_distance(x, x[rng.permutation(300)]) < 1e-14
    assert energy_distance(x, np.concatenate([x, x])) < 1e-14  # the same empirical distribution


def test_energy_distance_grows_with_a_mean_shift(rng):
    x, z = rng.standard_normal((300, 2)), rng.standard_normal((300, 2))
    shifts = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0]
    values = [energy_distance(x, z + [shift, 0.0]) for shift in shifts]
    assert values[0] > 0 and np.all(np.diff(values) > 0)


def test_mean_distance_matches_brute_force_and_is_the_same_in_any_block_size(rng):
    a, b = rng.standard_normal((37, 3)), rng.standard_normal((23, 3)) + 1
    brute = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1).mean()  # (37, 23, 3) all at once
    for pairs_per_block in [1, 7, 23, 100, 2 ** 21]:
        assert mean_distance(a, b, pairs_per_block) == pytest.approx(brute, rel=1e-13)
    assert energy_distance(a, b, pairs_per_block=5) == pytest.approx(energy_distance(a, b), rel=1e-12)


def test_cross_term_matches_the_folded_normal_closed_form(rng):
    # X ~ N(0, 1), Y ~ N(0.5, 1.5²): E|X − Y| = E|W|, W ~ N(−0.5, 1 + 1.5²)
    values = [mean_distance(rng.standard_normal((200, 1)), 0.5 + 1.5 * rng.standard_normal((300, 1)))
              for _ in range(40)]
    expected = folded_normal_mean(-0.5, math.sqrt(1 + 1.5 ** 2))
    assert abs(np.mean(values) - expected) < Z * np.std(values, ddof=1) / np.sqrt(len(values))


def test_v_statistic_has_the_stated_expectation(rng):
    # E[E_V] = E(P, Q) + E|X − X'|/n + E|Y − Y'|/m, with E|X − X'| = 2σ/√π for N(·, σ²) (module docstring)
    n, m, sx, sy, delta = 40, 60, 1.0, 1.5, 0.5
    within_x, within_y = 2 * sx / math.sqrt(math.pi), 2 * sy / math.sqrt(math.pi)
    population = 2 * folded_normal_mean(delta, math.hypot(sx, sy)) - within_x - within_y
    expected = population + within_x / n + within_y / m
    values = [energy_distance(sx * rng.standard_normal((n, 1)), delta + sy * rng.standard_normal((m, 1)))
              for _ in range(300)]
    se = np.std(values, ddof=1) / np.sqrt(len(values))
    assert abs(np.mean(values) - expected) < Z * se
    assert np.mean(values) - population > Z * se  # the bias is resolved: this is not the unbiased U-statistic


def test_energy_floor_is_the_bias_of_two_samples_of_the_same_data(rng):
    # P = Q = N(0, 1): E[E_V] = 2 · (2/√π) / n
    n = 50
    mean, stderr = energy_floor(lambda k, r: r.standard_normal((k, 1)), n, rng, repeats=200)
    assert abs(mean - 4 / math.sqrt(math.pi) / n) < Z * stderr
    again = energy_floor(lambda k, r: r.standard_normal((k, 1)), n, np.random.default_rng(1), repeats=3)
    assert again == energy_floor(lambda k, r: r.standard_normal((k, 1)), n, np.random.default_rng(1), repeats=3)


def test_blocks_bound_the_memory(rng):
    x, y = rng.standard_normal((2000, 2)), rng.standard_normal((2000, 2))
    tracemalloc.start()
    energy_distance(x, y, pairs_per_block=2 ** 14)  # blocks of 8 rows × 2000
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2 ** 20  # 1 MiB; all 2000 × 2000 distances at once would take 32 MiB


@pytest.mark.slow
def test_ten_thousand_points_each_fit_in_a_few_mib(rng):
    x, y = rng.standard_normal((10_000, 2)), rng.standard_normal((10_000, 2)) + [0.1, 0.0]
    tracemalloc.start()
    value = energy_distance(x, y)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 * 2 ** 20 and value > 0  # 10k × 10k distances at once would take 800 MB


def test_bad_samples_are_refused(rng):
    x = rng.standard_normal((10, 2))
    with pytest.raises(ValueError, match="NaN or Inf in 1 of 10 rows"):
        energy_distance(x, np.where(np.arange(10)[:, None] == 3, np.nan, x))
    with pytest.raises(ValueError, match="same dimension"):
        energy_distance(x, x[:, :1])
    with pytest.raises(ValueError, match="shape"):
        energy_distance(x[:, 0], x)
    with pytest.raises(TypeError, match="Generator"):
        energy_floor(lambda k, r: r.standard_normal((k, 1)), 10, 0)
    with pytest.raises(ValueError, match="repeats"):
        energy_floor(lambda k, r: r.standard_normal((k, 1)), 10, rng, repeats=1)
