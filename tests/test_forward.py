"""The forward process and the posterior against Monte Carlo and the product-of-Gaussians derivation."""
import warnings

import numpy as np
import pytest

from minidiff.forward import posterior_variance, product_of_gaussians, q_posterior, q_sample, q_step
from minidiff.schedules import make_schedule

N = 200_000  # Monte Carlo draws; tolerances below are 5 standard errors


def cosine(T=100, **kw):
    return make_schedule("cosine", T, **kw)


@pytest.mark.parametrize("t", [0, 17, 99])
def test_q_sample_has_the_closed_form_moments(rng, t):
    s = cosine()
    x0 = np.array([1.5, -0.7])
    x_t = q_sample(s, np.broadcast_to(x0, (N, 2)), t, rng.standard_normal((N, 2)))
    mean, var = np.sqrt(s.alpha_bar[t]) * x0, 1 - s.alpha_bar[t]
    np.testing.assert_allclose(x_t.mean(0), mean, atol=5 * np.sqrt(var / N))
    np.testing.assert_allclose(x_t.var(0), var, atol=5 * var * np.sqrt(2 / N))


def test_one_step_chain_composed_t_times_equals_q_sample(rng):
    s = cosine(T=30)
    x0, t = 2.0, 29
    x = np.full((N, 1), x0)
    for step in range(t + 1):
        x = q_step(s, x, step, rng.standard_normal((N, 1)))
    mean, var = np.sqrt(s.alpha_bar[t]) * x0, 1 - s.alpha_bar[t]
    assert x.mean() == pytest.approx(mean, abs=5 * np.sqrt(var / N))
    assert x.var() == pytest.approx(var, abs=5 * var * np.sqrt(2 / N))
    # and the chain's variance recursion (1 − ᾱ_{t−1}) α_t + β_t = 1 − ᾱ_t holds exactly
    np.testing.assert_allclose((1 - s.alpha_bar_prev) * s.alphas + s.betas, 1 - s.alpha_bar, rtol=1e-12)


@pytest.mark.parametrize("t", [1, 10, 60])
def test_posterior_by_regression_on_simulated_pairs(rng, t):
    """Draw x_{t−1} ~ q(x_{t−1}|x_0), then x_t ~ q(x_t|x_{t−1}); the regression of x_{t−1} on x_t is μ̃, β̃."""
    s = cosine()
    x0 = 0.8
    x_prev = q_sample(s, np.full(N, x0), t - 1, rng.standard_normal(N))
    x_t = q_step(s, x_prev, t, rng.standard_normal(N))
    slope, intercept = np.polyfit(x_t, x_prev, 1)
    residual_var = np.var(x_prev - (slope * x_t + intercept))
    assert slope == pytest.approx(s.coef_xt[t], abs=5 / np.sqrt(N))
    assert intercept == pytest.approx(s.coef_x0[t] * x0, abs=5 / np.sqrt(N))
    assert residual_var == pytest.approx(s.beta_tilde[t], rel=5 * np.sqrt(2 / N))
    mean, var = q_posterior(s, x0, np.array([0.3]), t)
    assert mean[0] == pytest.approx(s.coef_x0[t] * x0 + s.coef_xt[t] * 0.3, rel=1e-14)
    assert var[0] == s.beta_tilde[t]


def test_post_eq8_is_the_product_of_two_gaussians(rng):
    """The post's derivation: N(x_t/√α_t, β_t/α_t) · N(√ᾱ_{t−1} x_0, 1 − ᾱ_{t−1}), as densities in x_{t−1}."""
    s = cosine(T=1000)
    t = np.arange(1000)
    x0, x_t = rng.standard_normal((2, 1000, 3))
    mean, var = product_of_gaussians(x_t / np.sqrt(s.alphas[t, None]), (s.betas / s.alphas)[t, None],
                                     np.sqrt(s.alpha_bar_prev[t, None]) * x0, (1 - s.alpha_bar_prev)[t, None])
    mu_tilde, beta_tilde = q_posterior(s, x0, x_t, t)
    np.testing.assert_allclose(mu_tilde, mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(beta_tilde, np.broadcast_to(var, x_t.shape), rtol=1e-9, atol=1e-15)
    assert np.all(mu_tilde[0] == x0[0]) and np.all(beta_tilde[0] == 0)  # t = 0: a point mass at x_0


def test_batches_of_any_shape_with_per_example_timesteps(rng):
    s = cosine()
    x0, eps = rng.standard_normal((2, 5, 3, 4))
    t = np.array([0, 3, 50, 98, 99])
    batched = q_sample(s, x0, t, eps)
    for i in range(5):
        np.testing.assert_allclose(batched[i], q_sample(s, x0[i], int(t[i]), eps[i]), rtol=1e-15)
    mean, var = q_posterior(s, x0, batched, t)
    assert mean.shape == var.shape == x0.shape


def test_posterior_variance_choices():
    s = cosine(T=10)
    np.testing.assert_array_equal(posterior_variance(s, "beta"), s.betas)
    sigma2 = posterior_variance(s, "beta_tilde")
    assert sigma2[0] == s.beta_tilde[1] > 0 and np.all(sigma2[1:] == s.beta_tilde[1:])
    with pytest.raises(ValueError, match="beta_tilde"):
        posterior_variance(s, "learned")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert posterior_variance(make_schedule("cosine", 1), "beta_tilde")[0] > 0
