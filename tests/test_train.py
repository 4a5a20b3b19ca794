"""The training loss and loop: exact gradients, a loss that falls for every target, exact resume."""
import dataclasses
import json
import os

import numpy as np
import pytest

from minidiff import nn
from minidiff.data import get_mixture
from minidiff.mixture import irreducible_loss
from minidiff.runs.loop import load_run, train
from minidiff.targets import TARGETS, make_target
from minidiff.timesteps import HISTORY, make_timestep_sampler
from minidiff.train import ConfigError, TrainConfig, loss_and_grad, make_problem, per_example_loss, time_inputs, validate
from minidiff.forward import q_sample

TINY = dict(T=50, hidden=16, depth=2, time_dim=8, dtype="float64", n_train=256, batch_size=32, log_every=5,
            checkpoint_every=10, warmup_steps=5, schedule="cosine")


def tiny_problem(target, weighting="uniform", **kw):
    config = TrainConfig(target=target, weighting=weighting, **{**TINY, **kw})
    params = nn.init(np.random.default_rng(0), config.network(2), dtype=np.float64)
    return config, make_problem(config), params


def batch(rng, T, B=16):
    return rng.standard_normal((B, 2)), rng.standard_normal((B, 2)), rng.integers(0, T, B)


@pytest.mark.parametrize("target", TARGETS)
def test_loss_is_the_weighted_squared_error_of_the_target(rng, target):
    """per_example_loss uses X = a_t x0 + b_t ε; compare with make_target and the network called directly."""
    config, problem, params = tiny_problem(target, weighting="min-snr")
    x0, eps, t = batch(rng, config.T)
    x_t = q_sample(problem.schedule, x0, t, eps)
    prediction = nn.apply(params, x_t, time_inputs(problem.schedule, "t", t))
    expected = problem.weight[t] * np.sum((prediction - make_target(target, problem.schedule, x0, eps, t)) ** 2, 1)
    np.testing.assert_allclose(per_example_loss(params, problem, x0, eps, t), expected, rtol=1e-12)


@pytest.mark.parametrize("target", TARGETS)
def test_gradient_of_the_loss_matches_central_differences(rng, target):
    config, problem, params = tiny_problem(target, weighting="snr")
    x0, eps, t = batch(rng, config.T)
    _, grads, _ = loss_and_grad(params, problem, x0, eps, t)
    h = 1e-6
    for name in params:  # two entries of every parameter array
        for index in [(0,) * params[name].ndim, tuple(s - 1 for s in params[name].shape)]:
            plus = {**params, name: params[name].copy()}
            minus = {**params, name: params[name].copy()}
            plus[name][index] += h
            minus[name][index] -= h
            numeric = (per_example_loss(plus, problem, x0, eps, t).mean()
                       - per_example_loss(minus, problem, x0, eps, t).mean()) / (2 * h)
            assert grads[name][index] == pytest.approx(numeric, rel=1e-6, abs=1e-9), (name, index)


def test_importance_weights_keep_the_loss_unbiased(rng):
    """E_p[L_t / (T p_t)] = (1/T) Σ_t L_t for any p: check with a warmed-up sampler and known per-t losses."""
    T = 20
    sampler = make_timestep_sampler("importance", T)
    losses = np.linspace(0.1, 5.0, T)
    for _ in range(HISTORY):
        sampler = sampler.update(np.arange(T), losses)
    assert sampler.warm
    t, weight = sampler.sample(rng, 200_000)
    estimate = np.mean(losses[t] * weight)
    assert estimate == pytest.approx(losses.mean(), rel=0.01)
    p = sampler.probabilities()
    np.testing.assert_allclose(p, 0.999 * losses / losses.sum() + 0.001 / T, rtol=1e-12)  # √E[L²] = L here


def test_importance_history_keeps_the_last_ten_losses_in_order_of_arrival():
    sampler = make_timestep_sampler("importance", 3)
    sampler = sampler.update(np.array([1] * 12 + [2]), np.arange(13.0))
    assert sorted(sampler.history[1]) == list(np.arange(2.0, 12.0)) and sampler.count[1] == 12
    assert sampler.history[2, 0] == 12.0 and not sampler.warm


def test_stratified_times_cover_every_stratum(rng):
    t, weight = make_timestep_sampler("stratified", 1000).sample(rng, 100)
    assert weight is None and sorted(t // 10) == list(range(100))


@pytest.mark.parametrize("target", TARGETS)
def test_a_short_run_closes_most_of_the_gap_to_the_oracle_floor(tmp_path, target):
    """On gmm2d the irreducible loss is known exactly (the oracle); 300 steps must close half the gap to it.

    The score target is the exception: its uniform loss is dominated by the first steps, where the target
    −ε/√(1−ᾱ_t) is ~17 times larger than ε, and a 32-wide network closes only about 30% of the gap in 300 steps
    (measured: 29% at 300 steps, 33% at 1000) — it is held to 20%."""
    config = TrainConfig(dataset="gmm2d", target=target, steps=300, lr=3e-3,
                         **{**TINY, "hidden": 32, "log_every": 50, "checkpoint_every": 100})
    train(config, str(tmp_path), progress=False, echo=lambda *_: None, evaluate=False)
    state, problem = load_run(str(tmp_path))[3], make_problem(config)
    rng = np.random.default_rng(7)
    mixture = get_mixture("gmm2d")
    x0, eps, t = mixture.sample(8192, rng), rng.standard_normal((8192, 2)), rng.integers(0, config.T, 8192)
    initial = nn.init(np.random.default_rng(np.random.SeedSequence(config.seed).spawn(4)[1]), config.network(2))
    before = per_example_loss(initial, problem, x0, eps, t).mean()
    after = per_example_loss(state.params, problem, x0, eps, t).mean()
    floor, _ = irreducible_loss(mixture, problem.schedule, target, np.arange(config.T), 4000, rng)
    floor = np.mean(problem.weight * floor)
    fraction_left = 0.8 if target == "score" else 0.5
    assert floor < after and after - floor < fraction_left * (before - floor), (before, after, floor)


def test_resume_gives_bit_identical_parameters(tmp_path):
    config = TrainConfig(steps=40, t_sampling="importance", **TINY)
    whole, part = tmp_path / "whole", tmp_path / "part"
    quiet = dict(progress=False, echo=lambda *_: None, evaluate=False)
    train(config, str(whole), **quiet)
    train(config, str(part), stop_at=17, **quiet)  # as if killed after step 17: resumes from the step-10 checkpoint
    assert load_run(str(part))[3].step == 17
    train(config, str(part), resume=True, **quiet)
    a, b = load_run(str(whole))[3], load_run(str(part))[3]
    assert a.step == b.step == 40
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
        np.testing.assert_array_equal(a.ema[name], b.ema[name])
        np.testing.assert_array_equal(a.adam["m." + name], b.adam["m." + name])
    assert (whole / "loss_log.csv").read_text() == (part / "loss_log.csv").read_text()


@pytest.mark.parametrize("change, message", [
    (dict(target="eps", zero_terminal_snr=True), "zero terminal SNR"),
    (dict(target="x0", weighting="trunc-snr", zero_terminal_snr=True, schedule="linear"), None),
    (dict(dataset="mnist"), "choose one of: moons"),
    (dict(target="noise"), "eps, x0, v, score, mu"),
    (dict(schedule="cosine", T=0), "T must be >= 1"),
    (dict(lr=-1.0), "lr must be a positive"),
    (dict(weighting="p3"), "choose one of: uniform"),  # (p2 is a weighting now: Choi et al. 2022)
    (dict(t_sampling="random"), "uniform, stratified, importance"),
    (dict(checkpoint_every=7, log_every=5), "multiple of log_every"),
    (dict(target="eps", weighting="trunc-snr", zero_terminal_snr=True), "zero terminal SNR"),
])
def test_validation_names_the_bad_option(change, message):
    config = TrainConfig(**{**TINY, **change})
    if message is None:
        validate(config)  # a valid combination passes
        return
    with pytest.raises(ConfigError, match=message):
        validate(config)
