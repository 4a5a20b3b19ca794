"""The rectified-flow schedule and the log-SNR shift, against their closed forms and diffusers' sigmas."""
import numpy as np
import pytest

from minidiff.schedules import ScheduleError, between_steps, log_snr_continuous, make_schedule, step_angles, timestep_at


def flow_time(schedule):
    """u = σ/(s + σ), the rectified flow's time of each step, read back from ᾱ."""
    s, sigma = np.sqrt(schedule.alpha_bar), np.sqrt(1 - schedule.alpha_bar)
    return sigma / (s + sigma)


def test_rectified_flow_closed_forms_at_a_quarter_and_a_half():
    """u = 0.25: λ = 2 log 3 = 2.197225, ᾱ = 0.9, x_t / z_u = 1/√(0.75² + 0.25²) = 1.264911; u = 0.5: 0, 0.5, √2."""
    s = make_schedule("rectified_flow", 4)  # u = (t+1)/4 = 0.25, 0.5, 0.75, 1
    assert s.log_snr[0] == pytest.approx(2.197225, abs=1e-6) and s.alpha_bar[0] == pytest.approx(0.9, rel=1e-13)
    assert np.sqrt(s.alpha_bar[0]) + np.sqrt(1 - s.alpha_bar[0]) == pytest.approx(1.264911, rel=1e-6)
    assert s.log_snr[1] == pytest.approx(0.0, abs=1e-13) and s.alpha_bar[1] == pytest.approx(0.5, rel=1e-13)
    assert np.sqrt(s.alpha_bar[1]) + np.sqrt(1 - s.alpha_bar[1]) == pytest.approx(np.sqrt(2), rel=1e-13)
    assert s.alpha_bar[-1] == 0.0 and s.betas[-1] == 1.0  # ends at pure noise


@pytest.mark.parametrize("T", [10, 1000])
def test_rectified_flow_is_its_interpolant_at_every_step(T):
    """x_t = z_u / √((1−u)² + u²) with z_u = (1−u) x_0 + u ε: ᾱ = (1−u)²/((1−u)² + u²), λ = 2 log((1−u)/u)."""
    s = make_schedule("rectified_flow", T)
    u = (np.arange(T) + 1.0) / T
    np.testing.assert_allclose(s.alpha_bar, (1 - u) ** 2 / ((1 - u) ** 2 + u ** 2), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(s.log_snr[:-1], 2 * np.log((1 - u[:-1]) / u[:-1]), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(log_snr_continuous("rectified_flow", u[:-1]), 2 * np.log((1 - u[:-1]) / u[:-1]),
                               rtol=1e-10, atol=1e-12)  # 1 − ᾱ near ᾱ = 1 costs a few digits


# diffusers' FlowMatchEulerDiscreteScheduler with num_train_timesteps = 10: sigmas = timesteps / 10 for the timesteps
# 10, 9, …, 1, shifted by σ' = shift σ / (1 + (shift − 1) σ). For shift = 3, worked by hand as fractions:
# 3·0.9/2.8 = 27/28, 3·0.8/2.6 = 12/13, 2.1/2.4 = 7/8, 1.8/2.2 = 9/11, 1.5/2 = 3/4, 1.2/1.8 = 2/3, 0.9/1.6 = 9/16,
# 0.6/1.4 = 3/7, 0.3/1.2 = 1/4.
DIFFUSERS_SIGMAS = {1.0: [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1],
                    3.0: [1.0, 27 / 28, 12 / 13, 7 / 8, 9 / 11, 3 / 4, 2 / 3, 9 / 16, 3 / 7, 1 / 4]}


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_sigmas_are_those_of_diffusers_flow_match_euler(shift):
    s = make_schedule("rectified_flow", 10, shift=shift)
    np.testing.assert_allclose(flow_time(s)[::-1], DIFFUSERS_SIGMAS[shift], rtol=1e-12)


@pytest.mark.parametrize("name", ["cosine", "linear", "rectified_flow"])
def test_shift_moves_log_snr_by_minus_two_log_s(name):
    """SD3 eqs. (23–24): λ → λ − 2 log α; at α = 3, Δλ = −2.197225 and the flow's t = 0.5 becomes 0.75."""
    plain, moved = make_schedule(name, 1000), make_schedule(name, 1000, shift=3.0)
    finite = np.isfinite(plain.log_snr)
    np.testing.assert_allclose(moved.log_snr[finite] - plain.log_snr[finite], -2.197225, atol=1e-6)
    u = np.linspace(0.05, 0.95, 7)
    np.testing.assert_allclose(log_snr_continuous(name, u, shift=3.0) - log_snr_continuous(name, u), -2.197225,
                               atol=1e-6)
    if name == "rectified_flow":
        assert flow_time(moved)[499] == pytest.approx(0.75, rel=1e-12)
    assert moved.shift == 3.0 and "log-SNR shift 3" in moved.describe()


def test_resolution_shift_of_hoogeboom_et_al():
    """Hoogeboom et al. 2023, §3.1: λ_cosine + 2 log(64/d) for an image of side d — a shift s = d/64."""
    base, shifted = make_schedule("cosine", 1000), make_schedule("cosine", 1000, shift=256 / 64)
    np.testing.assert_allclose(shifted.log_snr[:-1], base.log_snr[:-1] + 2 * np.log(64 / 256), rtol=1e-9)


def test_rectified_flow_between_steps_follows_its_continuous_time():
    """Between steps u = (t+1)/T itself is linear in t: tan φ = s·u/(1 − u); at whole t the schedule's own ᾱ."""
    s = make_schedule("rectified_flow", 20, shift=2.0)
    whole = between_steps(s, np.arange(20.0))
    np.testing.assert_array_equal(whole.alpha_bar, s.alpha_bar)
    t = np.array([0.5, 7.25, 18.9])
    u = 2 * (t + 1) / 20 / (1 + (t + 1) / 20)  # SD3's shift of u = (t+1)/T, by hand
    expected = (1 - u) ** 2 / ((1 - u) ** 2 + u ** 2)
    np.testing.assert_allclose(between_steps(s, t).alpha_bar, expected, rtol=1e-12)
    np.testing.assert_allclose(timestep_at(s, np.arccos(np.sqrt(expected))), t, rtol=1e-12)
    np.testing.assert_allclose(timestep_at(s, step_angles(s)), np.arange(20.0), atol=1e-12)


def test_a_bad_shift_is_refused():
    for bad in (0.0, -1.0, float("inf"), "3", 1e300, 1e-300):  # beyond 1e6 either way ᾱ is 0 or 1 everywhere
        with pytest.raises(ScheduleError, match="log-SNR shift must be a number between"):
            make_schedule("cosine", 100, shift=bad)
