"""Low-rank-plus-isotropic mixtures in any dimension, each answer checked against an independent computation: the
dense-covariance mixture, a direct log-density by slogdet and solve, the 2-D oracle embedded in d dimensions (a
closed form), finite differences and Monte Carlo with its standard error."""
import numpy as np
import pytest

from minidiff import lowrank, make_schedule
from minidiff.data import get_mixture
from minidiff.lowrank import LowRankMixture
from minidiff.mixture import irreducible_loss, nll, oracle, posterior_cov, posterior_mean, posterior_trace_cov

Z = 5.0  # Monte Carlo tolerance in standard errors


def random_low_rank(seed, K=3, D=24, r=4):
    rng = np.random.default_rng(seed)
    return LowRankMixture(rng.dirichlet(np.ones(K)), rng.standard_normal((K, D)), 0.7 * rng.standard_normal((K, D, r)),
                          rng.uniform(0.05, 0.3, K))


def direct_log_prob(mixture, x):
    """log Σ_k w_k N(x; m_k, U_k U_kᵀ + s_k² I), each Gaussian from slogdet and solve of the dense matrix."""
    logs = []
    for w, m, U, s2 in zip(mixture.weights, mixture.means, mixture.factors, mixture.noise_vars):
        cov = U @ U.T + s2 * np.eye(len(m))
        diff = x - m
        maha = np.einsum("ni,ni->n", diff, np.linalg.solve(cov, diff.T).T)
        logs.append(np.log(w) - 0.5 * (len(m) * np.log(2 * np.pi) + np.linalg.slogdet(cov)[1] + maha))
    return np.logaddexp.reduce(logs, axis=0)


@pytest.mark.parametrize("alpha_bar", [0.0, 0.3, 0.9, 1.0])
def test_log_prob_of_noised_mixture_matches_direct_dense_computation(alpha_bar, rng):
    mixture = random_low_rank(1, D=48, r=5)
    x = rng.standard_normal((30, 48)) * 2
    q_t = mixture.noised(alpha_bar)
    np.testing.assert_allclose(q_t.log_prob(x), direct_log_prob(q_t, x), rtol=1e-11)


def test_exact_nll_of_a_256_dimensional_low_rank_mixture_matches_direct_log_density(rng):
    mixture = random_low_rank(2, K=4, D=256, r=6)
    x = mixture.sample(200, rng)
    result = nll(mixture, x)
    assert result.nats == pytest.approx(-direct_log_prob(mixture, x).mean(), rel=1e-11)
    assert result.bits_per_dim == pytest.approx(result.nats / (256 * np.log(2)), rel=1e-15)


@pytest.mark.parametrize("alpha_bar", [0.0, 0.05, 0.5, 0.95, 1.0])
def test_oracle_matches_the_dense_mixture(alpha_bar, rng):
    mixture = random_low_rank(3, D=32, r=5)
    dense = mixture.to_dense()
    x_t = rng.standard_normal((20, 32)) * 2
    for ours, theirs in zip(posterior_mean(mixture, alpha_bar, x_t), posterior_mean(dense, alpha_bar, x_t)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(posterior_trace_cov(mixture, alpha_bar, x_t), posterior_trace_cov(dense, alpha_bar, x_t),
                               rtol=1e-9, atol=1e-11)
    # the trace is the trace of the full posterior covariance, which the dense path computes from `covs`
    np.testing.assert_allclose(posterior_trace_cov(mixture, alpha_bar, x_t),
                               np.trace(posterior_cov(mixture, alpha_bar, x_t), axis1=1, axis2=2), rtol=1e-9,
                               atol=1e-11)


def test_score_matches_finite_differences_of_log_prob(rng):
    mixture = random_low_rank(4, D=16, r=3)
    x = mixture.sample(10, rng) * 1.2
    h = 1e-5  # central differences: error O(h²) plus round-off ~1e-16 / h
    numeric = np.stack([(mixture.log_prob(x + h * e) - mixture.log_prob(x - h * e)) / (2 * h) for e in np.eye(16)], 1)
    np.testing.assert_allclose(mixture.score(x), numeric, rtol=1e-6, atol=1e-6)


def test_rank_above_dimension_and_rank_zero_are_exact(rng):
    full = random_low_rank(5, D=6, r=9)  # U U^T of rank 6 = D: no isotropic complement left
    x = rng.standard_normal((8, 6))
    np.testing.assert_allclose(full.log_prob(x), direct_log_prob(full, x), rtol=1e-11)
    isotropic = LowRankMixture([0.5, 0.5], [[0.0] * 4, [1.0] * 4], np.zeros((2, 4, 0)), [0.2, 0.5])
    np.testing.assert_allclose(isotropic.log_prob(x[:, :4]), direct_log_prob(isotropic, x[:, :4]), rtol=1e-12)


def embedded_gmm2d(d, noise_std, seed):
    """gmm2d in the first two of d coordinates, N(0, s² I) in the rest, then turned by a random rotation R."""
    base = get_mixture("gmm2d")
    lam, vecs = np.linalg.eigh(base.covs)
    U2 = vecs * np.sqrt(lam - noise_std ** 2)[:, None, :]  # Σ_2d − s² I = U2 U2ᵀ: (K, 2, 2)
    U = np.concatenate([U2, np.zeros((3, d - 2, 2))], axis=1)
    means = np.concatenate([base.means, np.zeros((3, d - 2))], axis=1)
    R = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))[0]
    return base, R, LowRankMixture(base.weights, means @ R.T, R @ U, np.full(3, noise_std ** 2))


@pytest.mark.parametrize("alpha_bar", [0.0, 0.2, 0.7, 0.999])
def test_oracle_in_1024_dimensions_is_the_2d_oracle_embedded(alpha_bar, rng):
    d, s = 1024, 0.15
    base, R, mixture = embedded_gmm2d(d, s, seed=6)
    y = np.concatenate([rng.standard_normal((16, 2)) * 2, rng.standard_normal((16, d - 2))], axis=1)
    x_t = y @ R.T  # coordinates y = Rᵀ x
    x0_2d, eps_2d = posterior_mean(base, alpha_bar, y[:, :2])
    rest_var = alpha_bar * s ** 2 + 1 - alpha_bar  # the other d − 2 coordinates: x_t ~ N(0, ᾱ s² + 1 − ᾱ)
    x0_rest = np.sqrt(alpha_bar) * s ** 2 / rest_var * y[:, 2:]  # the Gaussian posterior mean (PRML eq. 2.116)
    eps_rest = np.sqrt(1 - alpha_bar) / rest_var * y[:, 2:]
    x0_hat, eps_hat = posterior_mean(mixture, alpha_bar, x_t)
    np.testing.assert_allclose(x0_hat @ R, np.concatenate([x0_2d, x0_rest], 1), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(eps_hat @ R, np.concatenate([eps_2d, eps_rest], 1), rtol=1e-8, atol=1e-10)
    trace = posterior_trace_cov(base, alpha_bar, y[:, :2]) + (d - 2) * (1 - alpha_bar) * s ** 2 / rest_var
    np.testing.assert_allclose(posterior_trace_cov(mixture, alpha_bar, x_t), trace, rtol=1e-9)
    log_q = base.noised(alpha_bar).log_prob(y[:, :2]) - 0.5 * np.sum(np.log(2 * np.pi * rest_var)
                                                                      + y[:, 2:] ** 2 / rest_var, axis=1)
    np.testing.assert_allclose(mixture.noised(alpha_bar).log_prob(x_t), log_q, rtol=1e-11)


def test_oracle_in_1024_dimensions_is_the_conditional_mean_by_monte_carlo(rng):
    # E[x0 − E[x0|x_t]] = 0 per coordinate and E‖x0 − E[x0|x_t]‖² = E tr Cov[x0|x_t] (tower property)
    mixture, alpha_bar, n = get_mixture("smooth32x32"), 0.3, 4000
    x0 = mixture.sample(n, rng)
    x_t = np.sqrt(alpha_bar) * x0 + np.sqrt(1 - alpha_bar) * rng.standard_normal(x0.shape)
    residual = x0 - posterior_mean(mixture, alpha_bar, x_t)[0]
    assert np.all(np.abs(residual.mean(0)) < Z * residual.std(0) / np.sqrt(n))
    difference = np.sum(residual ** 2, axis=1) - posterior_trace_cov(mixture, alpha_bar, x_t)
    assert abs(difference.mean()) < Z * difference.std() / np.sqrt(n)


def test_sample_moments_and_noised_moments_match_the_exact_ones(rng):
    mixture, n = random_low_rank(7, D=8, r=2), 200_000
    dense = mixture.to_dense()
    for alpha_bar in (1.0, 0.4):
        x0 = mixture.sample(n, rng)
        x_t = np.sqrt(alpha_bar) * x0 + np.sqrt(1 - alpha_bar) * rng.standard_normal(x0.shape)
        mean, cov = mixture.noised(alpha_bar).mean(), mixture.noised(alpha_bar).to_dense().cov()
        np.testing.assert_allclose(cov, dense.noised(alpha_bar).cov(), rtol=1e-12, atol=1e-12)
        centred = x_t - mean
        assert np.all(np.abs(centred.mean(0)) < Z * x_t.std(0) / np.sqrt(n))
        products = centred[:, :, None] * centred[:, None, :]
        assert np.all(np.abs(products.mean(0) - cov) < Z * products.std(0) / np.sqrt(n))


def test_oracle_jacobian_trace_matches_finite_differences(rng):
    mixture, schedule = random_low_rank(8, D=12, r=3), make_schedule("cosine", 100)
    model, t, h = oracle(mixture, schedule, "v"), 40, 1e-5
    x = rng.standard_normal((5, 12))
    numeric = sum((model(x + h * e, t) - model(x - h * e, t))[:, i] / (2 * h) for i, e in enumerate(np.eye(12)))
    np.testing.assert_allclose(model.jacobian_trace(x, t), numeric, rtol=1e-6, atol=1e-6)


def test_irreducible_loss_of_isotropic_gaussian_matches_closed_form(rng):
    # x0 ~ N(0, s² I) in D = 512: x0-MMSE per dimension s² / (1 + SNR s²), as for the dense mixture
    s, D, schedule = 0.4, 512, make_schedule("linear", 1000)
    t = np.array([0, 300, 999])
    mixture = LowRankMixture([1.0], np.zeros((1, D)), np.zeros((1, D, 0)), [s ** 2])
    mean, _ = irreducible_loss(mixture, schedule, "x0", t, 50, rng)
    np.testing.assert_allclose(mean, D * s ** 2 / (1 + schedule.snr[t] * s ** 2), rtol=1e-10)


def test_blocks_of_rows_give_the_same_answers(rng, monkeypatch):
    mixture = random_low_rank(9, K=5, D=40, r=3)
    x = rng.standard_normal((37, 40))
    whole = lowrank.posterior(mixture, 0.6, x)
    monkeypatch.setattr(lowrank, "MAX_BLOCK", 5 * 40 * 4)  # blocks of 4 rows
    for a, b in zip(whole, lowrank.posterior(mixture, 0.6, x)):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)


def test_invalid_low_rank_mixtures_are_refused():
    with pytest.raises(ValueError, match="sum to 1"):
        LowRankMixture([0.5, 0.6], [[0.0], [1.0]], np.zeros((2, 1, 1)), [1.0, 1.0])
    with pytest.raises(ValueError, match="factors must have shape"):
        LowRankMixture([1.0], [[0.0, 0.0]], np.zeros((1, 3, 1)), [1.0])
    with pytest.raises(ValueError, match="noise_vars must be > 0"):
        LowRankMixture([1.0], [[0.0, 0.0]], np.zeros((1, 2, 1)), [0.0])
    with pytest.raises(ValueError, match="finite"):
        LowRankMixture([1.0], [[np.nan, 0.0]], np.zeros((1, 2, 1)), [1.0])
    with pytest.raises(ValueError, match=r"shape \(n, D=2\)"):
        LowRankMixture([1.0], [[0.0, 0.0]], np.zeros((1, 2, 1)), [1.0]).log_prob(np.zeros((3, 5)))
