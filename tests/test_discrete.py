"""The discretised decoder (Ho et al. 2020, eq. 13) against closed forms: its probabilities sum to 1, each is a
difference of Gaussian CDFs computed directly with math.erfc where that is accurate, the tails are the asymptotic
series of erfc, and for a decoder wide against the bins P ≈ p Δ."""
import math

import numpy as np
import pytest

from minidiff import images, make_schedule
from minidiff.discrete import discretized_gaussian_nll, grid_index, log_normal_cdf, log_normal_mass
from minidiff.elbo import elbo, reverse_variances
from minidiff.forward import q_sample
from minidiff.mixture import oracle

LEVELS = 17  # the digits' grey levels


def phi(x):
    """Φ(x) = ½ erfc(−x/√2), one value at a time (math.erfc, exact to round-off)."""
    return 0.5 * math.erfc(-x / math.sqrt(2))


def level_probabilities(mean, var, levels=LEVELS):
    grid = np.linspace(-1, 1, levels)[:, None]  # (levels, 1): each level as a one-dimensional point
    return np.exp(-discretized_gaussian_nll(grid, np.full_like(grid, mean), var, levels))


@pytest.mark.parametrize("mean, var", [(0.3, 1e-2), (0.99, 1e-6), (-5.0, 1e-2), (0.0, 100.0), (0.51, 1e-8),
                                       (40.0, 1e-4), (-1.0 - 1e-3, 1.0), (0.0625, 1e-30)])
def test_probabilities_over_the_17_levels_sum_to_one(mean, var):
    p = level_probabilities(mean, var)
    assert np.all(p >= 0) and abs(p.sum() - 1.0) < 1e-12


def test_probability_is_a_difference_of_gaussian_cdfs():
    rng = np.random.default_rng(0)
    for _ in range(200):
        k, mean, std = rng.integers(1, LEVELS - 1), rng.uniform(-1.2, 1.2), rng.uniform(0.05, 1.0)
        x, half = -1 + 2 * k / (LEVELS - 1), 1 / (LEVELS - 1)
        direct = phi((x + half - mean) / std) - phi((x - half - mean) / std)  # no cancellation at these widths
        ours = np.exp(-discretized_gaussian_nll(np.array([[x]]), np.array([[mean]]), std ** 2, LEVELS))[0]
        assert ours == pytest.approx(direct, rel=1e-12)
    # the edge levels take the whole tail: P(−1) = Φ((−1 + Δ/2 − μ)/σ), P(1) = 1 − Φ((1 − Δ/2 − μ)/σ)
    assert level_probabilities(0.2, 0.25)[0] == pytest.approx(phi((-1 + 1 / 16 - 0.2) / 0.5), rel=1e-12)
    assert level_probabilities(0.2, 0.25)[-1] == pytest.approx(1 - phi((1 - 1 / 16 - 0.2) / 0.5), rel=1e-12)


def test_log_cdf_matches_erfc_and_its_tail_series():
    for x in [-37.0, -33.5, -30.0001, -29.0, -10.0, -1.0, 0.0, 2.0, 5.0]:  # erfc is representable down to ≈ −37.5
        assert log_normal_cdf(np.array([x]))[0] == pytest.approx(math.log(phi(x)), rel=1e-12)
    assert log_normal_cdf(np.array([-np.inf]))[0] == -np.inf and log_normal_cdf(np.array([np.inf]))[0] == 0.0
    assert np.isfinite(log_normal_cdf(np.array([-1e5]))[0])  # where Φ itself underflows


def test_far_tail_bins_are_mirror_images():
    # a bin deep in the upper tail (Φ ≈ 1 at both ends) has the mass of its mirror image in the lower tail
    upper = log_normal_mass(np.array([40.0, 9.0]), np.array([41.0, 9.5]))
    lower = log_normal_mass(np.array([-41.0, -9.5]), np.array([-40.0, -9.0]))
    np.testing.assert_allclose(upper, lower, rtol=1e-14)
    assert lower[1] == pytest.approx(math.log(phi(-9.0) - phi(-9.5)), rel=1e-10)


def test_a_wide_decoder_gives_density_times_bin_width():
    # σ ≫ Δ: P = p(x) Δ (1 + O(Δ²/σ²)), i.e. −log P = −log p + log(1/Δ)
    levels, mean, std = 256, 0.3, 0.5
    delta = 2 / (levels - 1)
    x = -1 + delta * 140  # a level near 0.1
    density = math.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
    nll = discretized_gaussian_nll(np.array([[x]]), np.array([[mean]]), std ** 2, levels)[0]
    assert nll == pytest.approx(-math.log(density * delta), abs=(delta / std) ** 2)


def test_values_off_the_grid_are_refused():
    with pytest.raises(ValueError, match="17 values"):
        grid_index(np.array([0.0, 0.03]), LEVELS)
    with pytest.raises(ValueError, match="17 values"):
        grid_index(np.array([1.125]), LEVELS)
    with pytest.raises(ValueError, match="integer >= 2"):
        grid_index(np.array([0.0]), 1)
    np.testing.assert_array_equal(grid_index(np.linspace(-1, 1, LEVELS), LEVELS), np.arange(LEVELS))


def direct_probability(x, mean, std, levels=LEVELS):
    """The mass of N(mean, std²) over the bin of the level x, the edge levels taking the whole tail."""
    half = 1 / (levels - 1)
    upper = 1.0 if x == 1 else phi((x + half - mean) / std)
    lower = 0.0 if x == -1 else phi((x - half - mean) / std)
    return upper - lower


def test_discrete_bound_differs_from_the_continuous_one_only_in_its_decoder(rng):
    schedule, D = make_schedule("linear", 20), 4
    x0 = -1 + 2 * rng.integers(0, LEVELS, (50, D)) / (LEVELS - 1)

    def model(x_t, t):  # any model: here an x0-prediction that shrinks x_t
        return 0.9 * x_t
    continuous = elbo(model, schedule, x0, target="x0", rng=np.random.default_rng(1))
    discrete = elbo(model, schedule, x0, target="x0", rng=np.random.default_rng(1), levels=LEVELS)
    assert discrete.prior == continuous.prior and discrete.denoising == continuous.denoising
    np.testing.assert_array_equal(discrete.terms[1:], continuous.terms[1:])
    # the decoder directly, at the same draw of x_1 (the first draw of the bound's generator)
    std = math.sqrt(reverse_variances(schedule)[0])
    x_1 = q_sample(schedule, x0, np.zeros(50, int), np.random.default_rng(1).standard_normal(x0.shape))
    direct = [-sum(math.log(direct_probability(x, m, std)) for x, m in zip(row, 0.9 * row_t))
              for row, row_t in zip(x0, x_1)]
    assert discrete.decoder == pytest.approx(np.mean(direct), rel=1e-10)
    assert discrete.levels == LEVELS and continuous.levels is None


def test_discrete_bound_refuses_data_off_the_grid_and_standardised_data(rng):
    schedule = make_schedule("cosine", 10)
    with pytest.raises(ValueError, match="17 values"):
        elbo(lambda x, t: x, schedule, rng.standard_normal((5, 2)), target="x0", rng=rng, levels=LEVELS)
    with pytest.raises(ValueError, match="standardised"):
        elbo(lambda x, t: x, schedule, np.zeros((5, 2)), target="x0", rng=rng, levels=LEVELS,
             stats={"mean": [0.0, 0.0], "std": [1.0, 1.0]})


def test_l0_of_the_digits_with_the_exact_denoisers_stand_in_is_below_its_tail_bound(rng):
    # if every |x̂_0 − x_0| ≤ e < Δ/2, each pixel's decoder mass outside its bin is at most 2Φ(−(Δ/2 − e)/σ_0), so
    # −log P(x_0|x_1) ≤ −D log(1 − 2Φ(−(Δ/2 − e)/σ_0)): an upper bound from the normal tail alone
    schedule = make_schedule("linear", 1000)
    x0 = images.digits(200, rng)
    sigma2 = reverse_variances(schedule)
    eps = rng.standard_normal(x0.shape)
    x_1 = q_sample(schedule, x0, np.zeros(200, int), eps)
    model = oracle(images.digits_mixture(), schedule, "x0")
    x0_hat = model(x_1, np.zeros(200, int))
    error, half = np.abs(x0_hat - x0).max(), 1 / (LEVELS - 1)  # half = Δ/2
    assert error < half
    bound = -64 * math.log(1 - 2 * phi(-(half - error) / math.sqrt(sigma2[0])))
    l0 = discretized_gaussian_nll(x0, x0_hat, sigma2[0], LEVELS)
    assert np.all(l0 >= 0) and np.all(l0 <= bound) and bound < 0.01  # nats per image (2e-4 bits/dim): negligible
