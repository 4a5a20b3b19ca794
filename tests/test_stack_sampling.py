"""Hutchinson's divergence against the exact trace, and many runs sampled as one stack against sample()."""
import numpy as np
import pytest

from minidiff import nn
from minidiff.likelihood import flow_nll, network_model, prediction_trace
from minidiff.mixture import oracle
from minidiff import data as datasets
from minidiff.elbo import elbo, elbos
from minidiff.schedules import at, make_schedule, stack_schedules
from minidiff.runs.stack import sample_stack, stacked_models
from minidiff.sample import sample
from minidiff.train import TrainConfig, make_problem, model_fn


def test_hutchinson_divergence_is_unbiased():
    config = TrainConfig(dataset="gmm2d", hidden=16, depth=1)
    problem = make_problem(config)
    params = nn.init(np.random.default_rng(2), config.network(3), dtype=np.float64)
    model = network_model(params, problem, config)
    rng = np.random.default_rng(3)
    x, t = rng.standard_normal((5, 3)), np.full(5, 300)
    _, exact = prediction_trace(model, x, t)
    probes = rng.choice([-1.0, 1.0], size=(4000, 5, 3))
    _, estimate = prediction_trace(model, x, t, probes)
    # each row's estimate is the mean of 4000 i.i.d. z'Jz: its error is about the spread of z'Jz / √4000
    per_probe = np.array([prediction_trace(model, x, t, z[None])[1] for z in probes[:200]])
    bound = 5 * per_probe.std(axis=0) / np.sqrt(len(probes)) + 1e-12
    assert np.all(np.abs(estimate - exact) < bound), (estimate, exact, bound)


@pytest.mark.parametrize("sampler,steps", [("ddpm", None), ("ddim", 25)])
def test_sample_stack_is_sample_of_each_run(sampler, steps):
    cases = [dict(target="eps"), dict(target="v", schedule="linear"), dict(target="x0", weighting="min-snr"),
             dict(target="flow", schedule="rectified_flow"), dict(target="edm", weighting="edm"),
             dict(target="mu"), dict(target="score")]
    configs = [TrainConfig(dataset="gmm2d", hidden=16, depth=2, seed=i, **c) for i, c in enumerate(cases)]
    problems = [make_problem(c) for c in configs]
    params = [nn.init(np.random.default_rng(10 + i), c.network(2), dtype=np.float32) for i, c in enumerate(configs)]
    together = sample_stack(params, problems, configs, 50, [np.random.default_rng(20 + i) for i in range(len(cases))],
                            sampler=sampler, steps=steps)
    for i, (p, problem, config) in enumerate(zip(params, problems, configs)):
        alone = sample(model_fn(p, problem, config), problem.target, problem.schedule, (50, 2),
                       np.random.default_rng(20 + i), sampler=sampler, steps=steps)
        np.testing.assert_allclose(together[i], alone, rtol=1e-9, atol=1e-9, err_msg=config.target)


@pytest.mark.parametrize("probes, rng, message", [(-1, None, "whole number"), (1.5, None, "whole number"),
                                                  (True, None, "whole number"), (2, None, "Generator")])
def test_flow_nll_refuses_bad_probes(probes, rng, message):
    mixture = datasets.get_mixture("gmm2d")
    problem = make_problem(TrainConfig(dataset="gmm2d", target="v"))
    with pytest.raises(ValueError, match=message):
        flow_nll(oracle(mixture, problem.schedule, "v"), problem.schedule, mixture.sample(4, np.random.default_rng(0)),
                 target="v", probes=probes, rng=rng)


def test_probes_on_a_model_with_only_an_exact_trace_say_so():
    mixture = datasets.get_mixture("gmm2d")
    problem = make_problem(TrainConfig(dataset="gmm2d", target="v"))
    with pytest.raises(TypeError, match="probes=0"):
        flow_nll(oracle(mixture, problem.schedule, "v"), problem.schedule, mixture.sample(4, np.random.default_rng(0)),
                 target="v", probes=1, rng=np.random.default_rng(1))


def test_bounds_of_a_stack_are_each_runs_elbo_bit_for_bit():
    cases = [dict(target="eps"), dict(target="v", schedule="linear"), dict(target="edm", weighting="edm"),
             dict(target="flow", schedule="rectified_flow"), dict(target="mu")]
    configs = [TrainConfig(dataset="gmm2d", hidden=16, depth=2, T=60, seed=i, **c) for i, c in enumerate(cases)]
    problems = [make_problem(c) for c in configs]
    params = [nn.init(np.random.default_rng(10 + i), c.network(2), dtype=np.float64) for i, c in enumerate(configs)]
    x0 = np.random.default_rng(5).standard_normal((40, 2))
    forward = stacked_models(params, problems, configs, np.arange(60))
    together = elbos(forward, [p.schedule for p in problems],
                     [x0] * len(cases), targets=[c.target for c in configs],
                     rngs=[np.random.default_rng(30 + i) for i in range(len(cases))])
    for i, (p, problem, config) in enumerate(zip(params, problems, configs)):
        alone = elbo(model_fn(p, problem, config), problem.schedule, x0, target=config.target,
                     rng=np.random.default_rng(30 + i))
        assert np.array_equal(together[i].per_example, alone.per_example), config.target
        assert np.array_equal(together[i].terms, alone.terms) and together[i].nats == alone.nats


def test_stacked_schedules_give_each_run_its_own_values_and_refuse_different_T():
    schedules = [make_schedule("cosine", 50), make_schedule("linear", 50), make_schedule("rectified_flow", 50)]
    together = stack_schedules(schedules)
    x = np.zeros((3, 4, 2))
    for t in (0, 17, 49):
        column = at(together.alpha_bar, t, x)  # (R, 1, 1): run r's ᾱ_t against its rows
        assert column.shape == (3, 1, 1)
        assert [float(v) for v in column[:, 0, 0]] == [float(s.alpha_bar[t]) for s in schedules]
    with pytest.raises(ValueError, match="share T"):
        stack_schedules([make_schedule("cosine", 50), make_schedule("cosine", 60)])


def test_bounds_together_refuse_models_of_different_T():
    problems = [make_problem(TrainConfig(dataset="gmm2d", T=T)) for T in (40, 50)]
    with pytest.raises(ValueError, match="share T"):
        elbos(lambda x_t, t: x_t, [p.schedule for p in problems], [np.zeros((3, 2))] * 2, targets=["eps", "eps"],
              rngs=[np.random.default_rng(0), np.random.default_rng(1)])
