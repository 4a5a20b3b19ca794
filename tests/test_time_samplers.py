"""SD3's and EDM's time samplers: published densities and maps, Monte Carlo of what each sampler's loss estimates,
and the implied weighting w(λ) of (target, weighting, sampler) triples against closed forms."""
import math
import warnings

import numpy as np
import pytest

from minidiff.schedules import PriorTermWarning, make_schedule
from minidiff.targets import implied_weighting
from minidiff.timesteps import UNIFORM_MIX, make_timestep_sampler, mode_map, parse_t_sampling, time_cdf, time_distribution

Z = 5.0  # Monte Carlo tolerance in standard errors


def schedule(name="rectified_flow", T=1000, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PriorTermWarning)
        return make_schedule(name, T, **kw)


def normal_cdf(z):
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def logit_normal_pdf(tau, m=0.0, s=1.0):
    """Esser et al. 2024, eq. (19): π(τ; m, s) = 1/(s√(2π)) · 1/(τ(1−τ)) · exp(−(logit τ − m)²/(2s²))."""
    logit = np.log(tau / (1 - tau))
    return np.exp(-(logit - m) ** 2 / (2 * s ** 2)) / (s * np.sqrt(2 * np.pi) * tau * (1 - tau))


@pytest.mark.parametrize("tau, density", [(0.5, 1.595769), (0.25, 1.163652)])
def test_logit_normal_density_of_sd3(tau, density):
    """π(0.5) = 4/√(2π) = 1.595769 and π(0.25) = 1.163652 (m = 0, s = 1), by central differences of F."""
    h = 1e-5
    values = parse_t_sampling("logit-normal")[1]
    numeric = (time_cdf("logit-normal", tau + h, values) - time_cdf("logit-normal", tau - h, values)) / (2 * h)
    assert numeric == pytest.approx(density, abs=1e-6)


def test_mode_and_cosmap_maps_of_sd3():
    """f(0.25; 1.29) = 0.616416; CosMap sends u = 0.25 to τ = 0.292893, the cosine schedule's λ = 1.762747."""
    assert mode_map(0.25, 1.29) == pytest.approx(0.616416, abs=1e-6)
    values = parse_t_sampling("mode:s=1.29")[1]
    u = np.linspace(0.01, 0.99, 25)
    np.testing.assert_allclose(time_cdf("mode", mode_map(u, 1.29), values), 1 - u, atol=1e-12)  # τ = f(u) decreasing
    assert time_cdf("cosmap", 0.292893, {}) == pytest.approx(0.25, abs=2e-6)
    assert 2 * np.log((1 - 0.292893) / 0.292893) == pytest.approx(1.762747, abs=2e-5)
    assert -2 * np.log(np.tan(np.pi * 0.25 / 2)) == pytest.approx(1.762747, abs=1e-6)


def test_mode_scale_outside_the_monotone_range_is_refused():
    parse_t_sampling("mode:s=1.751938")
    parse_t_sampling("mode:s=-1")
    for bad in ("mode:s=1.76", "mode:s=-1.01"):
        with pytest.raises(ValueError, match="not monotone"):
            parse_t_sampling(bad)
    with pytest.raises(ValueError, match="choose one of: uniform, stratified, importance, logit-normal"):
        parse_t_sampling("lognorm")
    with pytest.raises(ValueError, match="has no option 'q'"):
        parse_t_sampling("logit-normal:q=1")


def test_edm_log_normal_is_the_logit_normal_of_its_p_mean_and_p_std():
    """σ_E = τ/(1 − τ), so ln σ_E ~ N(−1.2, 1.2²) is logit τ ~ N(−1.2, 1.2²)."""
    s = schedule("cosine")
    np.testing.assert_allclose(time_distribution("log-normal", s.alpha_bar)[0],
                               time_distribution("logit-normal:m=-1.2,s=1.2", s.alpha_bar)[0], rtol=1e-12)


def test_on_the_rectified_flow_each_step_gets_the_mass_of_its_interval_of_tau():
    """τ_t = (t+1)/T: p(t) = F((t+1)/T) − F(t/T), with F the logit-normal's Φ(logit τ), written out here."""
    s = schedule("rectified_flow", 20)
    p, reweighted = time_distribution("logit-normal:m=0.5,s=0.8", s.alpha_bar)
    edges = np.arange(21) / 20
    F = np.array([0.0] + [normal_cdf((np.log(e / (1 - e)) - 0.5) / 0.8) for e in edges[1:-1]] + [1.0])
    np.testing.assert_allclose(p, np.diff(F), rtol=1e-9, atol=1e-15)
    assert not reweighted and p.sum() == pytest.approx(1.0, abs=1e-14)
    q, reweighted = time_distribution("importance-logit-normal:m=0.5,s=0.8", s.alpha_bar)
    np.testing.assert_allclose(q, (1 - UNIFORM_MIX) * p + UNIFORM_MIX / 20, rtol=1e-12)
    assert reweighted and time_distribution("uniform", s.alpha_bar) is None


def fixed_losses(T):
    """A per-timestep loss ℓ_t with a spike at small t (τ < 0.05 on the rectified flow), as the score's has."""
    t = np.arange(T)
    return 1.0 + np.sin(t / 50.0) ** 2 + 10.0 * (t < T // 20)


@pytest.mark.parametrize("name", ["logit-normal", "mode", "cosmap", "log-normal"])
def test_training_distribution_changes_the_objective_and_importance_keeps_it(rng, name):
    """Monte Carlo over 200 000 draws: t ~ p with weight 1 estimates Σ_t p(t) ℓ_t (the objective changed, as
    published); importance-NAME with weight 1/(T p(t)) estimates the uniform mean (1/T) Σ_t ℓ_t."""
    s, n = schedule("rectified_flow"), 200_000
    losses = fixed_losses(s.T)
    train_on = make_timestep_sampler(name, s.T, alpha_bar=s.alpha_bar)
    t, weight = train_on.sample(rng, n)
    assert weight is None
    changed = losses[t]
    expected = np.sum(time_distribution(name, s.alpha_bar)[0] * losses)
    assert abs(changed.mean() - expected) < Z * changed.std() / np.sqrt(n)
    assert abs(expected - losses.mean()) > 10 * changed.std() / np.sqrt(n)  # a different objective
    t, weight = make_timestep_sampler(f"importance-{name}", s.T, alpha_bar=s.alpha_bar).sample(rng, n)
    kept = weight * losses[t]
    assert abs(kept.mean() - losses.mean()) < Z * kept.std() / np.sqrt(n)
    assert weight.max() <= 1 / UNIFORM_MIX * (1 + 1e-6)


def test_logit_normal_draws_follow_its_distribution_function(rng):
    """The fraction of draws with τ_t ≤ 0.25 and ≤ 0.5: Φ(logit 0.25) = Φ(−1.098612) and Φ(0) = ½."""
    s, n = schedule("rectified_flow"), 200_000
    t, _ = make_timestep_sampler("logit-normal", s.T, alpha_bar=s.alpha_bar).sample(rng, n)
    for tau in (0.25, 0.5):
        expected = normal_cdf(np.log(tau / (1 - tau)))
        fraction = np.mean((t + 1) / s.T <= tau)
        assert abs(fraction - expected) < Z * np.sqrt(expected * (1 - expected) / n)


def test_density_samplers_need_the_schedule():
    with pytest.raises(ValueError, match="needs the schedule's alpha_bar"):
        make_timestep_sampler("cosmap", 100)


# --- the implied weighting of a (target, weighting, sampler) triple (Kingma & Gao 2023) --------------------------

def test_flow_on_the_rectified_flow_with_uniform_t_is_exp_minus_half_lambda():
    """Esser et al. 2024, §3.1: uniform t on the rectified flow's velocity is w(λ) = e^(−λ/2)."""
    s = schedule("rectified_flow")
    lam, w = implied_weighting("uniform", "flow", s)
    inner = slice(50, 950)  # −dλ/du by central differences: its error grows as (1/(T u))² towards the ends
    np.testing.assert_allclose(w[inner], np.exp(-lam[inner] / 2), rtol=1e-3)
    _, w_is = implied_weighting("uniform", "flow", s, "importance-logit-normal")
    np.testing.assert_array_equal(w_is, w)  # importance sampling keeps the objective


def test_logit_normal_multiplies_the_weighting_by_its_density():
    """Sampling from π equals the weight π(τ) under uniform t: w(λ) = e^(−λ/2) π(τ(λ)) (Esser et al. 2024)."""
    s = schedule("rectified_flow")
    lam, w = implied_weighting("uniform", "flow", s, "logit-normal")
    tau = (np.arange(s.T) + 0.5) / s.T  # the middle of each step's interval of τ
    inner = slice(20, 980)
    np.testing.assert_allclose(w[inner], (np.exp(-lam / 2) * logit_normal_pdf(tau))[inner], rtol=1e-2)


def test_edm_triple_is_karras_weighting_times_the_log_normal():
    """edm target, edm weighting, ln σ ~ N(−1.2, 1.2²): w(λ) = (2/σ_d²) N(λ; 2.4, 2.4²) (e^(−λ) + σ_d²)."""
    s = schedule("cosine")
    lam, w = implied_weighting("edm", "edm", s, "log-normal")
    normal = np.exp(-(lam - 2.4) ** 2 / (2 * 2.4 ** 2)) / (2.4 * np.sqrt(2 * np.pi))
    expected = 2 / 0.25 * normal * (np.exp(-lam) + 0.25)
    inner = slice(100, 900)
    np.testing.assert_allclose(w[inner], expected[inner], rtol=2e-2)
    _, w_x0 = implied_weighting("edm", "x0", s, "log-normal")
    np.testing.assert_allclose(w_x0[inner], w[inner], rtol=1e-9)  # the weighting, not the target, fixes w(λ)
