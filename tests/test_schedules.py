"""Schedules against the published numbers (Ho et al. 2020; Nichol & Dhariwal 2021; Rombach et al. 2022; Lin et al. 2023), closed forms and invariants."""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minidiff.elbo import gaussian_kl
from minidiff.schedules import SCHEDULES, PriorTermWarning, ScheduleError, between_steps, from_betas, log_snr_continuous, make_schedule, step_angles, timestep_at, timestep_spacing

REL = 1e-5  # the published values have 6 significant digits


def schedule(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PriorTermWarning)
        return make_schedule(*args, **kwargs)


def test_linear_T1000_matches_ho_et_al():
    s = schedule("linear", 1000)
    assert s.betas[0] == pytest.approx(1e-4, rel=1e-12) and s.betas[999] == pytest.approx(0.02, rel=1e-12)
    assert s.alpha_bar[999] == pytest.approx(4.03583e-5, rel=REL)
    assert np.sqrt(s.alpha_bar[999]) == pytest.approx(0.00635282, rel=REL)
    assert s.log_snr[0] == pytest.approx(9.2102, abs=1e-4) and s.log_snr[-1] == pytest.approx(-10.1177, abs=1e-4)


def test_linear_scales_default_endpoints_with_T_but_not_explicit_ones():
    s = schedule("linear", 50)
    assert s.betas[0] == pytest.approx(0.002, rel=1e-12) and s.betas[-1] == pytest.approx(0.4, rel=1e-12)
    assert s.alpha_bar[49] == pytest.approx(7.74e-6, rel=1e-3)  # known to 3 digits
    with pytest.warns(PriorTermWarning, match="not negligible"):
        unscaled = make_schedule("linear", 50, beta_start=1e-4, beta_end=0.02)
    assert unscaled.alpha_bar[-1] == pytest.approx(0.602952, rel=REL)


def test_scaled_linear_stable_diffusion():
    assert np.sqrt(schedule("scaled_linear", 1000).alpha_bar[999]) == pytest.approx(0.068265, rel=REL)


def test_cosine_T1000_and_T10():
    s = schedule("cosine", 1000)
    assert s.betas[0] == pytest.approx(4.12842e-5, rel=REL)
    assert s.betas[998] == pytest.approx(0.7499994, rel=1e-6)
    assert np.flatnonzero(s.betas >= 0.999).tolist() == [999]  # only the last β is clipped
    assert s.alpha_bar[999] == pytest.approx(2.4287e-9, rel=1e-4)
    expected = [0.027907, 0.075494, 0.124396, 0.177190, 0.237282, 0.309883, 0.404003, 0.536998, 0.743829, 0.999]
    np.testing.assert_allclose(schedule("cosine", 10).betas, expected, rtol=2e-5)


def test_the_two_sigmoids_are_different_schedules():
    beta_space = schedule("sigmoid_beta", 1000)  # GeoDiff
    assert beta_space.betas[0] == pytest.approx(1.49205e-4, rel=REL)
    assert beta_space.betas[999] == pytest.approx(0.0199508, rel=REL)
    alpha_bar_space = schedule("sigmoid", 1000)  # Chen 2023, Alg. 1
    assert alpha_bar_space.betas[0] == pytest.approx(3.0028e-4, rel=1e-4)
    assert alpha_bar_space.betas[999] == pytest.approx(0.999, rel=1e-12)


def test_zero_terminal_snr_on_linear_matches_lin_et_al():
    plain, zero = schedule("linear", 1000), schedule("linear", 1000, zero_terminal_snr=True)
    assert zero.betas[0] == pytest.approx(1e-4, rel=1e-9)
    assert zero.betas[998] == pytest.approx(0.752267, rel=REL)
    assert zero.betas[999] == 1.0 and zero.alpha_bar[999] == 0.0 and zero.snr[999] == 0.0
    assert zero.log_snr[999] == -np.inf and zero.prior_kl == 0.0
    assert np.sqrt(plain.alpha_bar[499]) == pytest.approx(0.280334, rel=REL)
    assert np.sqrt(zero.alpha_bar[499]) == pytest.approx(0.275733, rel=REL)


@pytest.mark.parametrize("spacing, expected", [
    ("linspace", [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]),
    ("leading", [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]),
    ("trailing", [999, 899, 799, 699, 599, 499, 399, 299, 199, 99])])
def test_timestep_spacing(spacing, expected):
    assert timestep_spacing(1000, 10, spacing).tolist() == expected


@pytest.mark.parametrize("name, zero", [("cosine", False), ("linear", True)])
@pytest.mark.parametrize("n", [1, 2, 10, 25, 999, 1000])
def test_karras_spacing_gives_n_distinct_steps_from_T_minus_1(name, zero, n):
    s = schedule(name, 1000, zero_terminal_snr=zero)
    steps = timestep_spacing(1000, n, "karras", alpha_bar=s.alpha_bar)
    assert len(steps) == n and steps[0] == 999 and np.all(np.diff(steps) < 0)
    assert n == 1 or steps[-1] == 0


def test_karras_spacing_follows_the_rho_grid():
    """Karras et al. 2022, eq. (5), ρ = 7: the chosen steps' σ are the nearest to the grid (within one step)."""
    s = schedule("linear", 1000)
    sigma = np.sqrt((1 - s.alpha_bar) / s.alpha_bar)
    steps = timestep_spacing(1000, 8, "karras", alpha_bar=s.alpha_bar)
    grid = (sigma[-1] ** (1 / 7) + np.linspace(0, 1, 8) * (sigma[0] ** (1 / 7) - sigma[-1] ** (1 / 7))) ** 7
    nearest = [np.argmin(np.abs(np.log(sigma) - np.log(g))) for g in grid]
    np.testing.assert_array_equal(steps, nearest)


def test_timestep_spacing_offset_and_errors():
    assert timestep_spacing(1000, 10, "leading", offset=1).tolist()[0] == 901
    assert timestep_spacing(7, 7).tolist() == list(range(6, -1, -1))
    with pytest.raises(ScheduleError, match="linspace, leading, trailing, karras"):
        timestep_spacing(1000, 10, "uniform")
    with pytest.raises(ScheduleError, match="between 1 and T"):
        timestep_spacing(10, 11)
    with pytest.raises(ScheduleError, match="outside"):
        timestep_spacing(1000, 10, "leading", offset=100)


def test_prior_kl_equals_monte_carlo_kl_for_unit_variance_data(rng):
    s = schedule("linear", 50, beta_start=1e-4, beta_end=0.02)
    x0 = rng.standard_normal((200_000, 1))
    alpha_bar = s.alpha_bar[-1]
    kl = gaussian_kl(np.sqrt(alpha_bar) * x0, 1 - alpha_bar, 0.0, 1.0)
    assert s.prior_kl == pytest.approx(kl.mean(), abs=4 * kl.std() / np.sqrt(len(kl)))


def test_warns_only_when_the_prior_term_is_not_small():
    with warnings.catch_warnings():
        warnings.simplefilter("error", PriorTermWarning)
        make_schedule("linear", 1000)
        make_schedule("cosine", 1000)
    with pytest.warns(PriorTermWarning, match="scaled_linear"):
        make_schedule("scaled_linear", 1000)


def test_errors_name_what_is_allowed():
    with pytest.raises(ScheduleError, match="choose one of: linear, quadratic"):
        make_schedule("laplace")
    with pytest.raises(ScheduleError, match="T must be an integer >= 1"):
        make_schedule("cosine", 0)
    with pytest.raises(ScheduleError, match="its options are: s, max_beta"):
        make_schedule("cosine", 100, beta_end=0.02)
    with pytest.raises(ScheduleError, match="T >= 20"):
        make_schedule("linear", 10)
    with pytest.raises(ScheduleError, match=r"beta\[1\] = 0 is outside \(0, 1\]"):
        from_betas([0.1, 0.0, 0.2])
    with pytest.raises(ScheduleError, match="outside"):
        from_betas([0.1, 1.5])


def test_fields_are_consistent_with_their_definitions():
    s = schedule("cosine", 200)
    np.testing.assert_allclose(s.alpha_bar, np.cumprod(1 - s.betas), rtol=1e-13)
    np.testing.assert_allclose(s.alpha_bar_prev[1:], s.alpha_bar[:-1], rtol=1e-15)
    assert s.alpha_bar_prev[0] == 1.0
    np.testing.assert_allclose(s.snr, s.alpha_bar / (1 - s.alpha_bar), rtol=1e-12)
    np.testing.assert_allclose(s.log_snr, np.log(s.snr), rtol=1e-12)
    np.testing.assert_allclose(s.beta_tilde, s.betas * (1 - s.alpha_bar_prev) / (1 - s.alpha_bar), rtol=1e-12)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_continuous_log_snr_follows_the_discrete_schedule(name):
    s = schedule(name, 1000)
    t = np.arange(50, 950)  # away from the clipped last step; β-space schedules agree only in the limit
    lam = log_snr_continuous(name, (t + 1) / 1000, T=1000)
    exact = name in ("cosine", "sigmoid")
    np.testing.assert_allclose(lam, s.log_snr[t], atol=1e-9 if exact else 0.1)


def test_continuous_cosine_log_snr_closed_form():
    u = np.linspace(0.01, 0.99, 50)
    np.testing.assert_allclose(log_snr_continuous("cosine", u, s=0.0), -2 * np.log(np.tan(np.pi * u / 2)),
                               rtol=1e-10, atol=1e-12)
    ends = log_snr_continuous("linear", [0.0, 1.0], zero_terminal_snr=True)
    assert ends[0] == np.inf and ends[1] == -np.inf


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(list(SCHEDULES)), T=st.integers(20, 2000), zero=st.booleans())
def test_every_schedule_is_a_valid_diffusion(name, T, zero):
    s = schedule(name, T, zero_terminal_snr=zero)
    assert s.T == T and all(len(getattr(s, f)) == T for f in ("betas", "alpha_bar", "snr", "log_snr"))
    assert np.all((s.betas > 0) & (s.betas <= 1))
    assert np.all(np.diff(s.alpha_bar) < 0) and s.alpha_bar[0] < 1 and s.alpha_bar[-1] >= 0
    assert np.all(s.beta_tilde <= s.betas * (1 + 1e-12)) and s.beta_tilde[0] == 0
    if zero:
        plain = schedule(name, T)
        assert s.alpha_bar[-1] == 0 and s.betas[-1] == 1
        assert s.alpha_bar[0] == pytest.approx(plain.alpha_bar[0], rel=1e-12)  # α_0 kept (Lin et al. 2023)


# --- between the steps ------------------------------------------------------------------------------------------

def test_between_steps_reads_the_schedule_at_whole_steps_and_interpolates_the_angle():
    schedule = make_schedule("cosine", 50)
    whole = between_steps(schedule, np.arange(50.0))
    np.testing.assert_array_equal(whole.alpha_bar, schedule.alpha_bar)
    np.testing.assert_array_equal(whole.coef_x0, schedule.coef_x0)
    half = between_steps(schedule, np.arange(49) + 0.5)
    phi = step_angles(schedule)
    np.testing.assert_allclose(np.arccos(np.sqrt(half.alpha_bar)), (phi[:-1] + phi[1:]) / 2, rtol=1e-12)
    np.testing.assert_allclose(timestep_at(schedule, np.arccos(np.sqrt(half.alpha_bar))), np.arange(49) + 0.5,
                               rtol=1e-9)
    with pytest.raises(ValueError, match="0 … T−1"):
        between_steps(schedule, [49.5])
