"""The five targets: exact round trips, one posterior mean, the MSE identities, and the loss weightings."""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minidiff.elbo import gaussian_kl
from minidiff.forward import posterior_variance, q_posterior, q_sample
from minidiff.schedules import SCHEDULES, PriorTermWarning, make_schedule
from minidiff.targets import TARGETS, WEIGHTINGS, canonical_target, implied_weighting, loss_weight, make_target, mean_coefficient, mse_factor, parse_weighting, predicted_mean, to_x0_eps


def schedule(name="cosine", T=1000, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PriorTermWarning)
        return make_schedule(name, T, **kw)


def draw(rng, T, B=None):
    """A batch with every timestep once: x0, eps of shape (T, 2) and t = 0 … T−1."""
    t = np.arange(T)
    x0, eps = rng.standard_normal((2, T, 2))
    return x0, eps, t


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("zero", [False, True])
def test_round_trip_is_exact_for_every_timestep(rng, target, zero):
    s = schedule(zero_terminal_snr=zero)
    x0, eps, t = draw(rng, s.T)
    x_t = q_sample(s, x0, t, eps)
    with np.errstate(divide="ignore", invalid="ignore"):
        x0_hat, eps_hat = to_x0_eps(target, s, make_target(target, s, x0, eps, t), x_t, t)
    defined = np.ones(s.T, bool)
    if zero and target in ("eps", "score"):
        defined[-1] = False  # x_0 is not identifiable from ε at SNR = 0 (Lin et al. 2023)
        np.testing.assert_allclose(eps_hat[-1], eps[-1], rtol=1e-12)
    np.testing.assert_allclose(x0_hat[defined], x0[defined], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(eps_hat[defined], eps[defined], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_all_targets_give_the_same_posterior_mean(rng, name):
    s = schedule(name, zero_terminal_snr=True)
    x0, eps, t = draw(rng, s.T)
    x_t = q_sample(s, x0, t, eps)
    mu_tilde, _ = q_posterior(s, x0, x_t, t)
    for target in ("x0", "v", "mu"):  # defined at every t, the zero-SNR last step included
        mu = predicted_mean(target, s, make_target(target, s, x0, eps, t), x_t, t)
        np.testing.assert_allclose(mu, mu_tilde, rtol=1e-10, atol=1e-12)
    for target in ("eps", "score"):
        mu = predicted_mean(target, s, make_target(target, s, x0[:-1], eps[:-1], t[:-1]), x_t[:-1], t[:-1])
        np.testing.assert_allclose(mu, mu_tilde[:-1], rtol=1e-9, atol=1e-11)


def test_v_uses_alpha_bar_not_alpha_as_the_post_writes(rng):
    s = schedule()
    x0, eps, t = draw(rng, s.T)
    v = make_target("v", s, x0, eps, t)
    a = s.alpha_bar[:, None]
    np.testing.assert_allclose(v, np.sqrt(a) * eps - np.sqrt(1 - a) * x0, rtol=1e-14)
    wrong = np.sqrt(s.alphas[:, None]) * eps - np.sqrt(1 - a) * x0  # the post's typo
    assert np.abs(v - wrong).max() > 0.5


def perturbed(rng, target, s, x0, eps, t):
    """Errors of every target for one random error in x0_hat at fixed x_t (eps_hat follows from x_t)."""
    x_t = q_sample(s, x0, t, eps)
    x0_hat = x0 + rng.standard_normal(x0.shape)
    eps_hat = (x_t - np.sqrt(s.alpha_bar[t, None]) * x0_hat) / np.sqrt(1 - s.alpha_bar[t, None])
    return {name: np.sum((make_target(name, s, x0, eps, t) - make_target(name, s, x0_hat, eps_hat, t)) ** 2, -1)
            for name in TARGETS}, np.sum((x0 - x0_hat) ** 2, -1)


def test_per_example_mse_identities(rng):
    s = schedule("linear")
    x0, eps, t = draw(rng, s.T)
    err, x0_err = perturbed(rng, None, s, x0, eps, t)
    np.testing.assert_allclose(err["eps"], s.snr * err["x0"], rtol=1e-8)  # docs/derivation.md, eq. (8g): ε-MSE = SNR · x0-MSE
    np.testing.assert_allclose(err["v"], (1 + s.snr) * err["x0"], rtol=1e-8)
    np.testing.assert_allclose(err["v"], (1 + 1 / s.snr) * err["eps"], rtol=1e-8)
    np.testing.assert_allclose(err["score"], err["eps"] / (1 - s.alpha_bar), rtol=1e-8)
    np.testing.assert_allclose(err["mu"], s.coef_x0 ** 2 * err["x0"], rtol=1e-8)
    for name in TARGETS:
        np.testing.assert_allclose(err[name], mse_factor(name, s, t) * x0_err, rtol=1e-8)


def test_mean_coefficient_against_a_finite_change_of_the_prediction(rng):
    s = schedule("linear", 200)
    x0, eps, t = draw(rng, s.T)
    x_t = q_sample(s, x0, t, eps)
    for name in TARGETS:
        prediction = make_target(name, s, x0, eps, t)
        step = rng.standard_normal(prediction.shape)
        delta_mu = predicted_mean(name, s, prediction + step, x_t, t) - predicted_mean(name, s, prediction, x_t, t)
        np.testing.assert_allclose(np.sum(delta_mu ** 2, -1), mean_coefficient(name, s, t) ** 2 * np.sum(step ** 2, -1),
                                   rtol=1e-7)


def test_min_snr_at_t100_matches_hang_et_al():
    s = schedule("linear")
    assert s.snr[100] == pytest.approx(8.5367, rel=1e-4)
    assert loss_weight("min-snr", "eps", s)[100] == pytest.approx(0.58571, rel=1e-4)
    assert loss_weight("min-snr-5", "v", s)[100] == pytest.approx(0.52429, rel=1e-4)
    np.testing.assert_allclose(loss_weight("min-snr-2", "x0", s), np.minimum(s.snr, 2.0))
    np.testing.assert_allclose(loss_weight("trunc-snr", "x0", s), np.maximum(s.snr, 1.0))


@pytest.mark.parametrize("weighting", ["snr", "trunc-snr", "min-snr", "elbo"])
def test_every_target_gets_the_same_loss_for_the_same_error_in_x0(rng, weighting):
    """Weightings are defined once (in x0-space, or as the KL): the target only changes the parameterisation."""
    s = schedule("cosine")
    x0, eps, t = draw(rng, s.T)
    err, _ = perturbed(rng, None, s, x0, eps, t)
    losses = {name: loss_weight(weighting, name, s) * err[name] for name in TARGETS}
    for name in TARGETS:
        np.testing.assert_allclose(losses[name][:-1], losses["x0"][:-1], rtol=1e-8)


@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
def test_elbo_weighting_is_the_gaussian_kl(rng, variance):
    s = schedule("linear", 100)
    x0, eps, t = draw(rng, s.T)
    x_t = q_sample(s, x0, t, eps)
    mu_tilde, _ = q_posterior(s, x0, x_t, t)
    sigma2 = posterior_variance(s, variance)[:, None]
    for name in TARGETS:
        target = make_target(name, s, x0, eps, t)
        prediction = target + 0.1 * rng.standard_normal(target.shape)
        kl = gaussian_kl(mu_tilde, sigma2, predicted_mean(name, s, prediction, x_t, t), sigma2)
        weighted = loss_weight("elbo", name, s, variance=variance) * np.sum((target - prediction) ** 2, -1)
        np.testing.assert_allclose(weighted, s.T * kl, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("weighting", ["uniform", "snr", "min-snr"])
def test_weights_stay_finite_at_zero_terminal_snr(weighting):
    s = schedule("linear", zero_terminal_snr=True)
    for name in TARGETS:
        w = loss_weight(weighting, name, s)
        assert np.all(np.isfinite(w)) and np.all(w >= 0), (name, w[-3:])
    assert loss_weight("min-snr", "eps", s)[-1] == 1.0  # the limit min(SNR, γ)/SNR → 1
    assert np.isinf(loss_weight("elbo", "eps", s)[-1])  # μ is not identifiable from ε at SNR = 0
    assert np.isfinite(loss_weight("elbo", "v", s)).all()


def test_implied_weighting_of_kingma_and_gao():
    s = schedule("linear")
    _, w = implied_weighting("elbo", "v", s)
    np.testing.assert_allclose(w[100:900], 1.0, atol=0.02)  # the ELBO is w(λ) = 1 (up to discretisation)
    c = schedule("cosine")
    lam, w = implied_weighting("uniform", "eps", c)
    ratio = w[50:950] / (1 / np.cosh(lam[50:950] / 2))  # ε-MSE on cosine: w ∝ sech(λ/2)
    np.testing.assert_allclose(ratio, ratio.mean(), rtol=0.01)
    _, w = implied_weighting("uniform", "v", schedule("cosine", zero_terminal_snr=True))
    assert np.isnan(w[-1]) and np.all(np.isfinite(w[:-1]))


def test_names_aliases_and_errors():
    assert [canonical_target(n) for n in ("epsilon", "sample", "v_prediction")] == ["eps", "x0", "v"]
    with pytest.raises(ValueError, match="eps, x0, v, score, mu"):
        canonical_target("noise")
    assert parse_weighting("min-snr-γ=3") == ("min-snr", 3.0) and parse_weighting("elbo") == ("elbo", None)
    with pytest.raises(ValueError, match="choose one of: " + ", ".join(WEIGHTINGS)):
        parse_weighting("p3")  # (p2 is a weighting now: Choi et al. 2022)
    with pytest.raises(ValueError, match="γ > 0"):
        parse_weighting("min-snr-0")


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(list(SCHEDULES)), T=st.integers(20, 1500), target=st.sampled_from(TARGETS),
       seed=st.integers(0, 2 ** 32 - 1), zero=st.booleans())
def test_round_trip_property(name, T, target, seed, zero):
    rng = np.random.default_rng(seed)
    s = schedule(name, T, zero_terminal_snr=zero)
    defined = np.flatnonzero(s.alpha_bar > 0)  # a zero-SNR step (zero=True, or linear at T=20) is tested above
    t = rng.choice(defined, size=64)
    x0, eps = rng.standard_normal((2, 64, 2))
    x_t = q_sample(s, x0, t, eps)
    x0_hat, eps_hat = to_x0_eps(target, s, make_target(target, s, x0, eps, t), x_t, t)
    scale = 1 / np.sqrt(np.minimum(s.alpha_bar[t], 1 - s.alpha_bar[t]))[:, None]  # conditioning of the inversion
    np.testing.assert_allclose(x0_hat, x0, atol=1e-13 * scale.max() + 1e-12)
    np.testing.assert_allclose(eps_hat, eps, atol=1e-13 * scale.max() + 1e-12)
