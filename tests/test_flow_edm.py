"""The flow and edm targets: EDM's published constants, F = −v at σ_d = 1, exact round trips, one posterior mean,
and the oracle's optimal prediction against a closed form written out here."""
import warnings

import numpy as np
import pytest

from minidiff.forward import q_posterior, q_sample
from minidiff.mixture import GaussianMixture, irreducible_loss, oracle
from minidiff.preconditioning import edm_coefficients, edm_loss_weight, edm_sigma, flow_time, on_x_t
from minidiff.schedules import PriorTermWarning, make_schedule
from minidiff.targets import TARGETS, canonical_target, make_target, mean_coefficient, mse_factor, parse_target, predicted_mean, to_x0_eps


def schedule(name="cosine", T=1000, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PriorTermWarning)
        return make_schedule(name, T, **kw)


def draw(rng, T):
    return rng.standard_normal((T, 2)), rng.standard_normal((T, 2)), np.arange(T)


# --- EDM's preconditioning against Karras et al. 2022, Table 1 -------------------------------------------------

@pytest.mark.parametrize("sigma, expected", [
    (1.0, (0.2, 0.447214, 0.894427, 0.0, 5.0)),             # σ = 1, σ_d = 0.5: 0.25/1.25, 0.5/√1.25, 1/√1.25, ¼ ln 1, 1.25/0.25
    (0.5, (0.5, 0.353553, 1.414214, -0.173287, 8.0))])      # σ = σ_d = 0.5: ½, 0.25/√0.5, 1/√0.5, ¼ ln ½, 0.5/0.0625
def test_edm_coefficients_match_table_1(sigma, expected):
    c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, 0.5)
    np.testing.assert_allclose([c_skip, c_out, c_in, c_noise, edm_loss_weight(sigma, 0.5)], expected,
                               rtol=1e-6, atol=1e-6)  # the values are printed to six digits
    assert edm_loss_weight(sigma, 0.5) == pytest.approx(1 / c_out ** 2, rel=1e-14)  # λ(σ) = 1/c_out²


@pytest.mark.parametrize("sigma_data", [0.5, 1.0, 2.3])
def test_the_coefficients_on_x_t_are_edms_on_x_hat(sigma_data):
    """x̂ = x_t / s with ᾱ = 1/(1 + σ²): c_skip x̂ = (c_skip/s) x_t, c_in x̂ = (c_in/s) x_t, c_out unchanged."""
    sigma = np.geomspace(1e-3, 1e3, 50)
    alpha_bar = 1 / (1 + sigma ** 2)
    c_skip, c_out, c_in, _ = edm_coefficients(sigma, sigma_data)
    vp_skip, vp_out, vp_in = on_x_t(alpha_bar, sigma_data)
    s = np.sqrt(alpha_bar)
    tol = 1e-9  # at σ = 1e-3, 1 − ᾱ = 1 − 1/(1 + σ²) keeps ten of its digits
    np.testing.assert_allclose(edm_sigma(alpha_bar), sigma, rtol=tol)
    np.testing.assert_allclose(vp_skip, c_skip / s, rtol=tol)
    np.testing.assert_allclose(vp_out, c_out, rtol=tol)
    np.testing.assert_allclose(vp_in, c_in / s, rtol=tol)


@pytest.mark.parametrize("name", ["cosine", "linear", "rectified_flow"])
def test_edm_target_is_minus_v_when_sigma_data_is_one(rng, name):
    """F* = σ x_0 − s ε = −v exactly at σ_d = 1 (fp64, to 1e-12); at σ_d ≠ 1 it is not, and its MSE factor is
    SNR + σ_d⁻² against v's SNR + 1."""
    s = schedule(name)
    x0, eps, t = draw(rng, s.T)
    F = make_target("edm:sigma_data=1", s, x0, eps, t)
    np.testing.assert_allclose(F, -make_target("v", s, x0, eps, t), rtol=0, atol=1e-12)
    F_half = make_target("edm:sigma_data=0.5", s, x0, eps, t)
    assert np.abs(F_half + make_target("v", s, x0, eps, t)).max() > 0.1
    np.testing.assert_allclose(mse_factor("edm:sigma_data=0.5", s, t), s.snr + 4.0, rtol=1e-12)
    np.testing.assert_allclose(mse_factor("edm:sigma_data=1", s, t), mse_factor("v", s, t), rtol=1e-12)


def test_edm_target_is_f_star_of_karras_et_al(rng):
    """F* = (x_0 − c_skip x̂) / c_out with x̂ = x_t/s and EDM's own coefficients (σ_d = 0.7)."""
    s = schedule("linear")
    x0, eps, t = draw(rng, s.T)
    x_t = q_sample(s, x0, t, eps)
    c_skip, c_out, _, _ = edm_coefficients(edm_sigma(s.alpha_bar)[:, None], 0.7)
    expected = (x0 - c_skip * x_t / np.sqrt(s.alpha_bar)[:, None]) / c_out
    np.testing.assert_allclose(make_target("edm:sigma_data=0.7", s, x0, eps, t), expected, rtol=1e-9, atol=1e-12)


# --- the flow target --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["rectified_flow", "cosine"])
def test_flow_target_is_the_velocity_of_the_rescaled_interpolant(rng, name):
    """z_τ = x_t/(s+σ) = (1−τ) x_0 + τ ε with τ = σ/(s+σ); its velocity ε − x_0 = (s+σ) v + (σ−s) x_t, and an
    error in it is (1 + √SNR) times the error in x_0."""
    s = schedule(name)
    x0, eps, t = draw(rng, s.T)
    x_t = q_sample(s, x0, t, eps)
    a, sigma = np.sqrt(s.alpha_bar)[:, None], np.sqrt(1 - s.alpha_bar)[:, None]
    tau = flow_time(s.alpha_bar)[:, None]
    np.testing.assert_allclose(x_t / (a + sigma), (1 - tau) * x0 + tau * eps, rtol=1e-12, atol=1e-12)
    u = make_target("flow", s, x0, eps, t)
    np.testing.assert_allclose(u, (a + sigma) * make_target("v", s, x0, eps, t) + (sigma - a) * x_t, atol=1e-12)
    np.testing.assert_allclose(mse_factor("flow", s, t), (1 + np.sqrt(s.snr)) ** 2, rtol=1e-12)
    if name == "rectified_flow":
        np.testing.assert_allclose(tau[:, 0], (t + 1) / s.T, rtol=1e-10)  # σ = √(1 − ᾱ) near ᾱ = 1


# --- every target: round trips, one posterior mean ---------------------------------------------------------------

@pytest.mark.parametrize("target", ["flow", "edm", "edm:sigma_data=0.3", "flow_prediction", "karras"])
@pytest.mark.parametrize("name", ["rectified_flow", "cosine", "linear"])
def test_new_targets_round_trip_through_x0_and_eps_at_every_t(rng, target, name):
    s = schedule(name, zero_terminal_snr=name != "rectified_flow")  # ᾱ = 0 at the last step: both are defined
    x0, eps, t = draw(rng, s.T)
    x_t = q_sample(s, x0, t, eps)
    x0_hat, eps_hat = to_x0_eps(target, s, make_target(target, s, x0, eps, t), x_t, t)
    np.testing.assert_allclose(x0_hat, x0, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(eps_hat, eps, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["rectified_flow", "cosine"])
def test_all_seven_targets_give_the_same_posterior_mean(rng, name):
    s = schedule(name)
    x0, eps, t = draw(rng, s.T)
    x_t = q_sample(s, x0, t, eps)
    mu_tilde, _ = q_posterior(s, x0, x_t, t)
    defined = s.alpha_bar > 0  # eps and score cannot reach x_0 at zero SNR (the rectified flow's last step)
    for target in TARGETS:
        with np.errstate(divide="ignore", invalid="ignore"):
            mu = predicted_mean(target, s, make_target(target, s, x0, eps, t), x_t, t)
        np.testing.assert_allclose(mu[defined], mu_tilde[defined], rtol=1e-9, atol=1e-10, err_msg=target)


def test_mean_coefficient_of_the_new_targets_against_a_finite_change(rng):
    s = schedule("rectified_flow", 200)
    x0, eps, t = draw(rng, s.T)
    x_t = q_sample(s, x0, t, eps)
    for name in ("flow", "edm", "edm:sigma_data=2"):
        prediction = make_target(name, s, x0, eps, t)
        step = rng.standard_normal(prediction.shape)
        delta = predicted_mean(name, s, prediction + step, x_t, t) - predicted_mean(name, s, prediction, x_t, t)
        np.testing.assert_allclose(np.sum(delta ** 2, -1), mean_coefficient(name, s, t) ** 2 * np.sum(step ** 2, -1),
                                   rtol=1e-7, atol=1e-14)


def test_target_names_options_and_errors():
    assert canonical_target("flow_prediction") == "flow" and canonical_target("karras") == "edm"
    assert canonical_target("edm:sigma_data=0.5") == "edm"  # the paper's default is left out
    assert parse_target("edm:σ_data=0.57") == ("edm", 0.57)
    assert parse_target(canonical_target("edm:sigma_data=0.1234567891234")) == ("edm", 0.1234567891234)
    with pytest.raises(ValueError, match="eps, x0, v, score, mu, flow, edm"):
        canonical_target("velocity")
    with pytest.raises(ValueError, match="has no option 'k'.*its options are: sigma_data"):
        canonical_target("edm:k=1")
    with pytest.raises(ValueError, match="sigma_data > 0"):
        canonical_target("edm:sigma_data=0")


# --- the oracle -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["flow", "edm:sigma_data=0.8"])
def test_oracle_gives_the_optimal_prediction_of_one_gaussian_in_closed_form(rng, target):
    """x_0 ~ N(m, c²) per dimension: E[x_0|x_t] = m + s c² (x_t − s m)/(s² c² + σ²), E[ε|x_t] = σ (x_t − s m)/
    (s² c² + σ²) (linear-Gaussian posterior, written out here); the optimal X is a E[x_0|x_t] + b E[ε|x_t]."""
    m, c = np.array([0.7, -1.2]), np.array([0.5, 2.0])
    mixture = GaussianMixture([1.0], m[None], np.diag(c ** 2)[None])
    s = schedule("rectified_flow", 50)
    t = np.arange(50)
    x_t = rng.standard_normal((50, 2)) * 2
    a, sigma = np.sqrt(s.alpha_bar)[:, None], np.sqrt(1 - s.alpha_bar)[:, None]
    x0_mean = m + a * c ** 2 * (x_t - a * m) / (a ** 2 * c ** 2 + sigma ** 2)
    eps_mean = sigma * (x_t - a * m) / (a ** 2 * c ** 2 + sigma ** 2)
    if target == "flow":
        expected = eps_mean - x0_mean
    else:
        r = np.sqrt(sigma ** 2 + 0.64 * a ** 2)
        expected = (sigma * x0_mean - 0.64 * a * eps_mean) / (0.8 * r)
    np.testing.assert_allclose(oracle(mixture, s, target)(x_t, t), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("target", ["flow", "edm"])
def test_oracle_loss_on_gmm2d_is_the_irreducible_loss(rng, target):
    """Monte Carlo ‖X − oracle(x_t)‖² against k_X · E tr Cov[x_0|x_t] (mixture.irreducible_loss), within 5 s.e."""
    from minidiff.data import get_mixture
    mixture, s = get_mixture("gmm2d"), schedule("rectified_flow", 100)
    model = oracle(mixture, s, target)
    for step in (10, 50, 90):
        x0 = mixture.sample(20000, rng)
        eps = rng.standard_normal(x0.shape)
        t = np.full(len(x0), step)
        loss = np.sum((make_target(target, s, x0, eps, t) - model(q_sample(s, x0, t, eps), t)) ** 2, -1)
        floor, floor_err = irreducible_loss(mixture, s, target, np.array([step]), 20000, rng)
        assert abs(loss.mean() - floor[0]) < 5 * np.hypot(loss.std() / np.sqrt(len(loss)), floor_err[0])


@pytest.mark.parametrize("target", ["flow", "edm:sigma_data=0.6"])
def test_samplers_bound_and_likelihood_of_the_oracle_do_not_depend_on_its_target(target):
    """One posterior mean: the oracle predicting flow or edm samples, bounds and flows exactly as predicting v."""
    from minidiff.data import get_mixture
    from minidiff.elbo import elbo
    from minidiff.likelihood import flow_nll
    from minidiff.sample import sample
    mixture, s = get_mixture("gmm2d"), schedule("rectified_flow", 100, shift=2.0)
    x0 = mixture.sample(64, np.random.default_rng(0))
    for sampler in ("ddpm", "ddim", "ode"):
        draws = [sample(oracle(mixture, s, name), name, s, (64, 2), np.random.default_rng(1), sampler=sampler,
                        steps=20) for name in ("v", target)]
        np.testing.assert_allclose(draws[1], draws[0], rtol=1e-8, atol=1e-8, err_msg=sampler)
    bounds = [elbo(oracle(mixture, s, name), s, x0, target=name, rng=np.random.default_rng(2)) for name in ("v", target)]
    np.testing.assert_allclose(bounds[1].per_example, bounds[0].per_example, rtol=1e-9)
    nlls = [flow_nll(oracle(mixture, s, name), s, x0[:16], target=name) for name in ("v", target)]
    np.testing.assert_allclose(nlls[1].per_example, nlls[0].per_example, rtol=1e-6)
