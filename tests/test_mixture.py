"""Gaussian mixtures and the oracle, each checked against an independent computation: quadrature, finite
differences, Monte Carlo with its standard error, or a closed form written out in the test."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minidiff import make_schedule
from minidiff.data import get_mixture
from minidiff.mixture import GaussianMixture, irreducible_loss, nll, oracle, posterior_cov, posterior_mean, posterior_trace_cov
from minidiff.targets import TARGETS, make_target, mse_factor, to_x0_eps

Z = 5.0  # Monte Carlo tolerance in standard errors: a false alarm has probability ~6e-7 per comparison


def exact_moments(mixture):
    """Mean and covariance of a mixture, written out component by component (law of total covariance)."""
    mean = sum(w * m for w, m in zip(mixture.weights, mixture.means))
    second = sum(w * (c + np.outer(m, m)) for w, m, c in zip(mixture.weights, mixture.means, mixture.covs))
    return mean, second - np.outer(mean, mean)


def assert_moments(x, mean, cov):
    """Sample mean and covariance of x agree with (mean, cov) within Z standard errors, entry by entry."""
    n = len(x)
    centred = x - mean
    assert np.all(np.abs(centred.mean(0)) < Z * x.std(0) / np.sqrt(n))
    products = centred[:, :, None] * centred[:, None, :]  # (n, D, D)
    assert np.all(np.abs(products.mean(0) - cov) < Z * products.std(0) / np.sqrt(n) + 1e-12)


def gaussian_log_pdf(x, mean, cov):
    """log N(x; mean, cov) from slogdet and solve: an implementation independent of the mixture's eigenbasis."""
    D = len(mean)
    diff = x - mean
    maha = np.einsum("ni,ni->n", diff, np.linalg.solve(cov, diff.T).T)
    return -0.5 * (D * np.log(2 * np.pi) + np.linalg.slogdet(cov)[1] + maha)


@pytest.fixture
def gmm2d():
    return get_mixture("gmm2d")


def random_mixture(seed, K=3, D=3):
    """A mixture with random full covariances: in D = 3 an eigenvector matrix is not its own transpose, as it
    can be in 2-D, so a transposed rotation cannot hide."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((K, D, D))
    covs = A @ A.transpose(0, 2, 1) + 0.1 * np.eye(D)
    return GaussianMixture(rng.dirichlet(np.ones(K)), rng.standard_normal((K, D)) * 2, covs)


# --- density, score, sampling ---------------------------------------------------------------------------------

def test_log_prob_integrates_to_one_in_1d():
    mixture = get_mixture("gmm1d")
    grid = np.linspace(-10, 10, 20001)  # step 0.001 ≪ smallest std 0.3
    density = np.exp(mixture.log_prob(grid[:, None]))
    assert abs(np.trapezoid(density, grid) - 1.0) < 1e-9


def test_log_prob_integrates_to_one_in_2d(gmm2d):
    axis = np.linspace(-9, 9, 601)  # step 0.03 ≪ smallest std 0.2; a Riemann sum of a Gaussian converges fast
    xx, yy = np.meshgrid(axis, axis)
    density = np.exp(gmm2d.log_prob(np.stack([xx.ravel(), yy.ravel()], axis=1)))
    assert abs(density.sum() * (axis[1] - axis[0]) ** 2 - 1.0) < 1e-8


def test_log_prob_of_one_gaussian_matches_closed_form(rng):
    mean, cov = np.array([0.5, -1.0]), np.array([[2.0, 0.6], [0.6, 0.5]])
    x = rng.standard_normal((50, 2)) * 3
    mixture = GaussianMixture([1.0], [mean], [cov])
    np.testing.assert_allclose(mixture.log_prob(x), gaussian_log_pdf(x, mean, cov), rtol=1e-12, atol=1e-12)
    two_copies = GaussianMixture([0.25, 0.75], [mean, mean], [cov, cov])  # the same density, split in two
    np.testing.assert_allclose(two_copies.log_prob(x), gaussian_log_pdf(x, mean, cov), rtol=1e-12, atol=1e-12)


def test_log_prob_of_random_3d_mixture_matches_sum_of_gaussians(rng):
    mixture = random_mixture(1)
    x = rng.standard_normal((40, 3)) * 3
    expected = np.log(sum(w * np.exp(gaussian_log_pdf(x, m, c))
                          for w, m, c in zip(mixture.weights, mixture.means, mixture.covs)))
    np.testing.assert_allclose(mixture.log_prob(x), expected, rtol=1e-12)


def test_log_prob_far_from_every_component_is_finite(gmm2d):
    far = np.array([[1e3, -1e3], [60.0, 0.0]])  # each component's density underflows to 0 here
    log_p = gmm2d.log_prob(far)
    expected = np.logaddexp.reduce([np.log(w) + gaussian_log_pdf(far, m, c)
                                    for w, m, c in zip(gmm2d.weights, gmm2d.means, gmm2d.covs)], axis=0)
    np.testing.assert_allclose(log_p, expected, rtol=1e-12)


@pytest.mark.parametrize("name", ["gmm1d", "gmm2d", "8gaussians", "gaussian", "random3d"])
def test_score_matches_finite_differences_of_log_prob(name, rng):
    mixture = random_mixture(2) if name == "random3d" else get_mixture(name)
    x = mixture.sample(20, rng) * 1.3  # include points between and beyond the components
    h = 1e-5  # central differences: error O(h²) ≈ 1e-10 plus round-off ≈ 1e-16 / h
    numeric = np.stack([(mixture.log_prob(x + h * e) - mixture.log_prob(x - h * e)) / (2 * h)
                        for e in np.eye(mixture.dim)], axis=1)
    np.testing.assert_allclose(mixture.score(x), numeric, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["gmm1d", "gmm2d", "8gaussians"])
def test_sample_moments_match_exact_moments(name, rng):
    mixture = get_mixture(name)
    mean, cov = exact_moments(mixture)
    np.testing.assert_allclose(mixture.mean(), mean, atol=1e-12)
    np.testing.assert_allclose(mixture.cov(), cov, atol=1e-12)
    assert_moments(mixture.sample(100_000, rng), mean, cov)


def test_sample_of_one_gaussian_has_its_covariance(rng):
    # one component, so nothing dilutes a within-component error: 400k draws resolve the covariance to ~1%
    mixture = random_mixture(7, K=1)
    assert_moments(mixture.sample(400_000, rng), mixture.means[0], mixture.covs[0])


def test_sample_component_frequencies_match_weights(rng):
    # components 10 standard deviations apart: every point is closest to its own mean (misfit odds ~1e-7)
    mixture = GaussianMixture([0.2, 0.5, 0.3], [[-10.0], [0.0], [10.0]], [[[1.0]]] * 3)
    x = mixture.sample(50_000, rng)
    counts = np.bincount(np.argmin(np.abs(x - mixture.means[:, 0]), axis=1), minlength=3) / len(x)
    assert np.all(np.abs(counts - mixture.weights) < Z * np.sqrt(mixture.weights * (1 - mixture.weights) / len(x)))


@pytest.mark.parametrize("alpha_bar", [0.0, 0.3, 0.9, 1.0])
def test_noised_matches_moments_of_forward_process(gmm2d, alpha_bar, rng):
    x0 = gmm2d.sample(100_000, rng)
    x_t = np.sqrt(alpha_bar) * x0 + np.sqrt(1 - alpha_bar) * rng.standard_normal(x0.shape)  # Ho et al. eq. 4
    mean, cov = exact_moments(gmm2d.noised(alpha_bar))
    assert_moments(x_t, mean, cov)


def test_noised_density_matches_monte_carlo_over_x0(rng):
    mixture, alpha_bar = get_mixture("gmm1d"), 0.6
    x0 = mixture.sample(200_000, rng)[:, 0]
    for x in [-2.0, 0.0, 0.7, 2.5]:
        # q_t(x) = E_{x0}[N(x; √ᾱ x0, 1 − ᾱ)]
        kernel = np.exp(-(x - np.sqrt(alpha_bar) * x0) ** 2 / (2 * (1 - alpha_bar))) / np.sqrt(
            2 * np.pi * (1 - alpha_bar))
        exact = np.exp(mixture.noised(alpha_bar).log_prob(np.array([[x]])))[0]
        assert abs(kernel.mean() - exact) < Z * kernel.std() / np.sqrt(len(x0))


def test_invalid_mixtures_are_refused():
    with pytest.raises(ValueError, match="sum to 1"):
        GaussianMixture([0.5, 0.6], [[0.0], [1.0]], [[[1.0]], [[1.0]]])
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]])
    with pytest.raises(ValueError, match="symmetric"):
        GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 0.5], [0.0, 1.0]]])
    with pytest.raises(ValueError, match="shape"):
        GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0]]])
    with pytest.raises(ValueError, match="finite"):
        GaussianMixture([1.0], [[np.nan]], [[[1.0]]])


# --- the posterior of x0 given x_t ----------------------------------------------------------------------------

@pytest.mark.parametrize("alpha_bar", [0.05, 0.5, 0.95])
def test_posterior_of_one_gaussian_matches_linear_gaussian_closed_form(alpha_bar, rng):
    mean, cov = random_mixture(3, K=1).means[0], random_mixture(3, K=1).covs[0]  # 3-D, full covariance
    x_t = rng.standard_normal((10, 3)) * 2
    # information form (PRML eqs. 2.116–2.117): Cov = (Σ⁻¹ + ᾱ/(1−ᾱ) I)⁻¹, mean = Cov (Σ⁻¹ m + √ᾱ/(1−ᾱ) x_t)
    post_cov = np.linalg.inv(np.linalg.inv(cov) + alpha_bar / (1 - alpha_bar) * np.eye(3))
    post_mean = (post_cov @ (np.linalg.solve(cov, mean)[:, None] + np.sqrt(alpha_bar) / (1 - alpha_bar) * x_t.T)).T
    mixture = GaussianMixture([1.0], [mean], [cov])
    x0_hat, _ = posterior_mean(mixture, alpha_bar, x_t)
    np.testing.assert_allclose(x0_hat, post_mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(posterior_cov(mixture, alpha_bar, x_t), np.broadcast_to(post_cov, (10, 3, 3)),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(posterior_trace_cov(mixture, alpha_bar, x_t), np.trace(post_cov), rtol=1e-10)


@pytest.mark.parametrize("alpha_bar", [0.2, 0.7])
@pytest.mark.parametrize("name", ["gmm2d", "random3d"])
def test_posterior_of_mixture_matches_importance_sampling(name, alpha_bar, rng):
    # E[f(x0) | x_t] = E_{x0 ~ p}[f(x0) q(x_t|x0)] / E_{x0 ~ p}[q(x_t|x0)] with the exact Gaussian likelihood
    mixture = random_mixture(4) if name == "random3d" else get_mixture(name)
    x0 = mixture.sample(400_000, rng)
    x_t = np.sqrt(alpha_bar) * mixture.means + 0.5  # near, not on, each component's noised mean
    x0_hat, _ = posterior_mean(mixture, alpha_bar, x_t)
    trace = posterior_trace_cov(mixture, alpha_bar, x_t)
    np.testing.assert_allclose(np.trace(posterior_cov(mixture, alpha_bar, x_t), axis1=1, axis2=2), trace, rtol=1e-12)
    for i, point in enumerate(x_t):
        w = np.exp(-np.sum((point - np.sqrt(alpha_bar) * x0) ** 2, axis=1) / (2 * (1 - alpha_bar)))
        w /= w.sum()
        mc_mean = w @ x0
        se_mean = np.sqrt(np.sum(w[:, None] ** 2 * (x0 - mc_mean) ** 2, axis=0))  # delta method
        assert np.all(np.abs(x0_hat[i] - mc_mean) < Z * se_mean)
        sq = np.sum((x0 - mc_mean) ** 2, axis=1)
        assert abs(trace[i] - w @ sq) < Z * np.sqrt(np.sum(w ** 2 * (sq - w @ sq) ** 2))


def test_posterior_mean_is_the_conditional_mean_by_orthogonality(rng):
    # E[(x0 − E[x0|x_t]) g(x_t)] = 0 for any g, E[(x0 − x0_hat)(x0 − x0_hat)ᵀ − Cov[x0|x_t]] = 0 (tower property)
    mixture, alpha_bar, n = random_mixture(5), 0.4, 200_000
    x0 = mixture.sample(n, rng)
    x_t = np.sqrt(alpha_bar) * x0 + np.sqrt(1 - alpha_bar) * rng.standard_normal(x0.shape)
    residual = x0 - posterior_mean(mixture, alpha_bar, x_t)[0]
    for g in [np.ones(n), x_t[:, 0], x_t[:, 1] ** 2, np.tanh(x_t[:, 0] * x_t[:, 2])]:
        products = residual * g[:, None]
        assert np.all(np.abs(products.mean(0)) < Z * products.std(0) / np.sqrt(n))
    difference = residual[:, :, None] * residual[:, None, :] - posterior_cov(mixture, alpha_bar, x_t)  # (n, D, D)
    assert np.all(np.abs(difference.mean(0)) < Z * difference.std(0) / np.sqrt(n))
    difference = np.sum(residual ** 2, axis=1) - posterior_trace_cov(mixture, alpha_bar, x_t)
    assert abs(difference.mean()) < Z * difference.std() / np.sqrt(n)


@settings(max_examples=60, deadline=None)
@given(alpha_bar=st.floats(0.0, 1.0), scale=st.floats(0.01, 30.0), seed=st.integers(0, 2 ** 32 - 1))
def test_x_t_is_recovered_from_x0_hat_and_eps_hat(alpha_bar, scale, seed):
    mixture = get_mixture("gmm2d")
    x_t = scale * np.random.default_rng(seed).standard_normal((8, 2))
    x0_hat, eps_hat = posterior_mean(mixture, alpha_bar, x_t)
    rebuilt = np.sqrt(alpha_bar) * x0_hat + np.sqrt(1 - alpha_bar) * eps_hat
    # 1e-12 relative to the largest coordinate: the eigenbasis round trip Q Qᵀ x costs a few ulps of |x|
    np.testing.assert_allclose(rebuilt, x_t, rtol=0, atol=1e-12 * (1 + np.abs(x_t).max()))


@pytest.mark.parametrize("alpha_bar", [0.1, 0.5, 0.99])
def test_eps_hat_is_tweedie_score_of_noised_density(alpha_bar, rng):
    # E[ε|x_t] = −√(1−ᾱ) ∇ log q_t(x_t), with the gradient by central differences of the noised log-density
    mixture = random_mixture(6)
    q_t, x_t, h = mixture.noised(alpha_bar), rng.standard_normal((10, 3)) * 2, 1e-5
    gradient = np.stack([(q_t.log_prob(x_t + h * e) - q_t.log_prob(x_t - h * e)) / (2 * h) for e in np.eye(3)], 1)
    np.testing.assert_allclose(posterior_mean(mixture, alpha_bar, x_t)[1], -np.sqrt(1 - alpha_bar) * gradient,
                               rtol=1e-6, atol=1e-6)


def test_ends_of_the_schedule_are_finite_and_exact(gmm2d, rng):
    x_t = rng.standard_normal((20, 2)) * 3
    x0_hat, eps_hat = posterior_mean(gmm2d, 1.0, x_t)  # no noise: x_t is x0
    np.testing.assert_allclose(x0_hat, x_t, atol=1e-12)
    np.testing.assert_allclose(eps_hat, 0.0, atol=1e-12)
    assert np.all(np.abs(posterior_trace_cov(gmm2d, 1.0, x_t)) < 1e-12)
    x0_hat, eps_hat = posterior_mean(gmm2d, 0.0, x_t)  # pure noise: x_t says nothing about x0
    np.testing.assert_allclose(x0_hat, np.broadcast_to(exact_moments(gmm2d)[0], x_t.shape), atol=1e-12)
    np.testing.assert_allclose(eps_hat, x_t, atol=1e-12)
    np.testing.assert_allclose(posterior_trace_cov(gmm2d, 0.0, x_t), np.trace(exact_moments(gmm2d)[1]), rtol=1e-12)


def test_first_timestep_is_nearly_the_identity(gmm2d, rng):
    schedule = make_schedule("linear", 1000)  # ᾱ_0 = 1 − 1e-4
    x_t = gmm2d.sample(20, rng)
    x0_hat, _ = posterior_mean(gmm2d, schedule.alpha_bar[0], x_t)
    # Tweedie: E[x0|x_t] − x_t = (1/√ᾱ − 1) x_t + (1−ᾱ)/√ᾱ ∇log q_t(x_t), of order 1e-4 · (|score| + |x_t|)
    bound = 1e-4 * (np.abs(gmm2d.score(x_t)) + np.abs(x_t)) * 2
    assert np.all(np.abs(x0_hat - x_t) < bound)


@pytest.mark.parametrize("target", TARGETS)
def test_oracle_with_zero_terminal_snr_is_finite_everywhere(gmm2d, target, rng):
    schedule = make_schedule("linear", 100, zero_terminal_snr=True)
    assert schedule.alpha_bar[-1] == 0.0
    model = oracle(gmm2d, schedule, target)
    x_t = rng.standard_normal((100, 2))
    prediction = model(x_t, np.arange(100))  # one timestep per row, the last with SNR = 0
    assert prediction.shape == (100, 2) and np.all(np.isfinite(prediction))


@pytest.mark.parametrize("target", TARGETS)
def test_oracle_round_trips_through_to_x0_eps(gmm2d, target, rng):
    schedule = make_schedule("cosine", 200)
    t = rng.integers(0, 199, 50)  # not the clipped last step
    x_t = rng.standard_normal((50, 2)) * 2
    x0_hat, eps_hat = to_x0_eps(target, schedule, oracle(gmm2d, schedule, target)(x_t, t), x_t, t)
    expected_x0, expected_eps = posterior_mean(gmm2d, schedule.alpha_bar[t], x_t)
    np.testing.assert_allclose(x0_hat, expected_x0, rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(eps_hat, expected_eps, rtol=1e-7, atol=1e-7)


def test_oracle_per_row_timesteps_match_one_timestep_at_a_time(gmm2d, rng):
    schedule = make_schedule("linear", 50)
    model = oracle(gmm2d, schedule, "v")
    x_t, t = rng.standard_normal((6, 2)), np.array([0, 3, 10, 25, 40, 49])
    rows = np.concatenate([model(x_t[i:i + 1], int(step)) for i, step in enumerate(t)])
    np.testing.assert_allclose(model(x_t, t), rows, rtol=1e-14, atol=1e-15)
    with pytest.raises(ValueError, match="0 … T−1"):
        model(x_t, 50)
    with pytest.raises(ValueError, match="unknown target"):
        oracle(gmm2d, schedule, "noise")


# --- the loss floor and the likelihood ------------------------------------------------------------------------

@pytest.mark.parametrize("target", TARGETS)
def test_irreducible_loss_of_gaussian_data_matches_closed_form(target, rng):
    # x0 ~ N(0, s² I): per dimension the x0-MMSE is s² / (1 + SNR s²) (the Gaussian posterior), times k_X for target X
    s, D = 0.7, 2
    schedule = make_schedule("linear", 1000)
    t = np.array([0, 10, 300, 999])
    mixture = GaussianMixture([1.0], [np.zeros(D)], [s ** 2 * np.eye(D)])
    mean, stderr = irreducible_loss(mixture, schedule, target, t, 100, rng)
    closed = D * s ** 2 / (1 + schedule.snr[t] * s ** 2) * mse_factor(target, schedule, t)
    np.testing.assert_allclose(mean, closed, rtol=1e-10)
    assert np.all(stderr <= 1e-10 * closed)  # tr Cov does not depend on x_t for Gaussian data


@pytest.mark.parametrize("target", TARGETS)
def test_irreducible_loss_equals_the_oracle_mse(gmm2d, target, rng):
    # direct: E‖X − oracle(x_t)‖² over fresh (x0, ε); vs k_X · E tr Cov[x0|x_t]
    schedule, t, n = make_schedule("cosine", 100), 30, 100_000
    x0 = gmm2d.sample(n, rng)
    eps = rng.standard_normal(x0.shape)
    x_t = np.sqrt(schedule.alpha_bar[t]) * x0 + np.sqrt(1 - schedule.alpha_bar[t]) * eps
    error = np.sum((make_target(target, schedule, x0, eps, t) - oracle(gmm2d, schedule, target)(x_t, t)) ** 2, 1)
    floor, floor_se = irreducible_loss(gmm2d, schedule, target, t, n, rng)
    assert abs(error.mean() - floor) < Z * np.hypot(error.std() / np.sqrt(n), floor_se)


def test_irreducible_loss_is_zero_where_the_target_is_determined(gmm2d, rng):
    schedule = make_schedule("linear", 100, zero_terminal_snr=True)
    mean, _ = irreducible_loss(gmm2d, schedule, "eps", 99, 1000, rng)  # ᾱ = 0: ε = x_t exactly
    assert mean == 0.0
    mean, _ = irreducible_loss(gmm2d, schedule, "x0", 99, 1000, rng)  # and x0 is a guess: its variance
    assert mean == pytest.approx(np.trace(exact_moments(gmm2d)[1]), rel=1e-12)


def test_nll_of_gaussian_data_matches_its_entropy(rng):
    # E[−log N(x; 0, s² I)] = (D/2) log(2π e s²), the differential entropy
    s, D = 0.5, 2
    mixture = GaussianMixture([1.0], [np.zeros(D)], [s ** 2 * np.eye(D)])
    result = nll(mixture, mixture.sample(50_000, rng))
    entropy = D / 2 * np.log(2 * np.pi * np.e * s ** 2)
    assert abs(result.nats - entropy) < Z * result.stderr_nats
    assert result.bits_per_dim == pytest.approx(result.nats / (D * math.log(2)), rel=1e-15)
