"""Samplers driven by the exact optimal denoiser of Gaussian data, whose samples must reproduce the data."""
import warnings

import numpy as np
import pytest

from minidiff.sample import ddim_invert, respaced, sample
from minidiff.schedules import make_schedule, timestep_spacing
from minidiff.targets import TARGETS, make_target

MEAN = np.array([1.0, -0.5])
COV = np.array([[1.5, 0.6], [0.6, 0.8]])


def gaussian_denoiser(schedule, target, mean=MEAN, cov=COV):
    """The MMSE prediction for x_0 ~ N(mean, cov), in closed form (a linear Gaussian posterior):
    E[x_0 | x_t] = m + √ᾱ C (ᾱ C + (1 − ᾱ) I)^{-1} (x_t − √ᾱ m),  E[ε | x_t] = (x_t − √ᾱ E[x_0 | x_t]) / √(1 − ᾱ)."""
    def model(x_t, t):
        t = int(np.atleast_1d(t)[0])
        a = schedule.alpha_bar[t]
        gain = np.sqrt(a) * cov @ np.linalg.inv(a * cov + (1 - a) * np.eye(len(mean)))
        x0_hat = mean + (x_t - np.sqrt(a) * mean) @ gain.T
        eps_hat = (x_t - np.sqrt(a) * x0_hat) / np.sqrt(1 - a) if a < 1 else np.zeros_like(x_t)
        return make_target(target, schedule, x0_hat, eps_hat, t)
    return model


def assert_moments(x, atol_mean, atol_cov):
    np.testing.assert_allclose(x.mean(0), MEAN, atol=atol_mean)
    np.testing.assert_allclose(np.cov(x.T), COV, atol=atol_cov)


N = 20_000  # standard error of the mean ≈ √(1.5/N) = 0.009; of a covariance entry ≈ 0.015


@pytest.mark.parametrize("target", TARGETS)
def test_ddpm_with_the_exact_denoiser_reproduces_gaussian_data(rng, target):
    s = make_schedule("cosine", 1000)
    x = sample(gaussian_denoiser(s, target), target, s, (N, 2), rng)
    assert_moments(x, atol_mean=0.04, atol_cov=0.07)


@pytest.mark.parametrize("sampler, steps", [("ddim", 50), ("ode", 50), ("ddpm", 100)])
def test_fewer_steps_still_reproduce_gaussian_data(rng, sampler, steps):
    s = make_schedule("cosine", 1000)
    x = sample(gaussian_denoiser(s, "v"), "v", s, (N, 2), rng, sampler=sampler, steps=steps)
    assert_moments(x, atol_mean=0.04, atol_cov=0.08)


def test_heun_is_second_order_where_ddim_is_first(rng):
    """On the same σ grid, Heun's error in the covariance falls much faster with the step count than Euler's."""
    s = make_schedule("cosine", 1000)
    x_T = rng.standard_normal((N, 2))
    error = {}
    for sampler in ("ddim", "ode"):
        for steps in (12, 48):
            x = sample(gaussian_denoiser(s, "v"), "v", s, x_T.shape, rng, sampler=sampler, steps=steps,
                       spacing="karras", x_T=x_T)
            error[sampler, steps] = np.abs(np.cov(x.T) - np.cov(sample(
                gaussian_denoiser(s, "v"), "v", s, x_T.shape, rng, sampler="ddim", x_T=x_T).T)).max()
    assert error["ode", 48] < error["ddim", 48] / 4
    assert error["ode", 48] < error["ode", 12] / 4


def test_zero_terminal_snr_with_v_starts_from_pure_noise(rng):
    s = make_schedule("linear", 1000, zero_terminal_snr=True)
    for sampler, steps, spacing in [("ddpm", 1000, "trailing"), ("ddim", 100, "trailing"), ("ode", 100, "karras")]:
        x = sample(gaussian_denoiser(s, "v"), "v", s, (N, 2), rng, sampler=sampler, steps=steps, spacing=spacing)
        assert_moments(x, atol_mean=0.04, atol_cov=0.1)
    with pytest.raises(ValueError, match="zero SNR"):
        sample(gaussian_denoiser(s, "eps"), "eps", s, (10, 2), rng, steps=50, spacing="trailing")


def test_ddim_with_eta_one_is_ddpm_with_beta_tilde():
    s = make_schedule("cosine", 200)
    model = gaussian_denoiser(s, "eps")
    ddpm = sample(model, "eps", s, (500, 2), np.random.default_rng(1), sampler="ddpm", steps=40)
    ddim = sample(model, "eps", s, (500, 2), np.random.default_rng(1), sampler="ddim", steps=40, eta=1.0)
    np.testing.assert_allclose(ddim, ddpm, rtol=1e-9, atol=1e-10)


def test_ddim_eta_zero_is_deterministic_and_invertible(rng):
    s = make_schedule("cosine", 1000)
    model = gaussian_denoiser(s, "x0")
    x_T = rng.standard_normal((200, 2))
    first = sample(model, "x0", s, x_T.shape, np.random.default_rng(1), sampler="ddim", steps=100, x_T=x_T)
    again = sample(model, "x0", s, x_T.shape, np.random.default_rng(2), sampler="ddim", steps=100, x_T=x_T)
    np.testing.assert_array_equal(first, again)  # no randomness at η = 0
    exact = ddim_invert(model, "x0", s, first, steps=100, fixed_point_iters=20)
    np.testing.assert_allclose(exact, x_T, atol=1e-8)
    approximate = ddim_invert(model, "x0", s, first, steps=100)  # the usual one-evaluation inversion
    assert np.abs(approximate - x_T).max() < 0.05


def test_last_ddpm_step_adds_no_noise():
    """Ho et al. 2020, Alg. 2, line 4: with a model that knows x_0 exactly, x_0 comes out exactly."""
    s = make_schedule("cosine", 100)
    x0 = np.array([[0.3, -1.2]])
    model = lambda x_t, t: np.broadcast_to(x0, x_t.shape)  # noqa: E731  (an x0 model that always says x0)
    _, path = sample(model, "x0", s, (1, 2), np.random.default_rng(0), trajectory=True)
    assert len(path) == 101
    np.testing.assert_allclose(path[-1], x0, rtol=1e-12)


def test_respaced_schedule_keeps_alpha_bar_at_the_chosen_timesteps():
    s = make_schedule("cosine", 1000)
    steps = np.array([999, 700, 300, 10])
    sub = respaced(s, steps)
    np.testing.assert_allclose(sub.alpha_bar, s.alpha_bar[np.sort(steps)], rtol=1e-12)
    full = respaced(s, np.arange(999, -1, -1))
    np.testing.assert_allclose(full.betas, s.betas, rtol=1e-9)


def test_unknown_sampler_is_refused(rng):
    s = make_schedule("cosine", 10)
    with pytest.raises(ValueError, match="ddpm, ddim, ode"):
        sample(gaussian_denoiser(s, "eps"), "eps", s, (2, 2), rng, sampler="euler")


@pytest.mark.parametrize("sampler, steps, calls", [("ddpm", 20, 20), ("ode", 12, 12), ("ddim", None, 100)])
def test_progress_is_called_once_per_step(sampler, steps, calls):
    s = make_schedule("cosine", 100)
    seen = []
    sample(gaussian_denoiser(s, "v"), "v", s, (8, 2), np.random.default_rng(0), sampler=sampler, steps=steps,
           progress=seen.append)
    assert seen == [1] * calls


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
def test_one_sampling_step_goes_from_noise_to_data(spacing):
    """One step used to visit t = 0 alone (linspace, leading) and return the starting noise. Now it starts at
    t = T − 1: with the exact denoiser of N(0, 0.1²) data one DDIM step lands at the data's scale, not the noise's."""
    s = make_schedule("cosine", 100)
    assert list(timestep_spacing(100, 1, spacing)) == [99]
    std = 0.1

    def oracle_x0(x, t):  # the x0-prediction of the exact denoiser for x0 ~ N(0, std² I)
        a = s.alpha_bar[t][:, None]
        return np.sqrt(a) * std ** 2 / (a * std ** 2 + 1 - a) * x

    x = sample(oracle_x0, "x0", s, (4000, 2), np.random.default_rng(0), sampler="ddim", steps=1, spacing=spacing)
    assert np.std(x) < 0.2  # the starting noise has std 1; the data 0.1 (one step from t = T−1 cannot do better)
