"""evaluate.py, what `minidiff elbo` calls: the exact NLL against the gmm1d density written out by hand, the oracle's
flow against it, the table against its numbers recomputed, a run's network against its float64 twin, and the
errors a user can make (each before any work)."""
import numpy as np
import pytest

from minidiff.lab import evaluate
from minidiff.runs import loop as run
from minidiff.elbo import elbo
from minidiff.train import TrainConfig

GMM1D = ([0.3, 0.5, 0.2], [-2.0, 0.5, 2.5], [0.5, 0.4, 0.3])  # data.gmm1d's docstring: weights, means, stds
FLOW_TOL = 0.01  # nats: the oracle's flow is the data's own density, blurred by the first step's noise
FP32_TOL = 1e-4  # the network in float32 (model_fn) against its float64 twin (likelihood.network_model)
TINY = dict(T=20, hidden=8, depth=1, time_dim=8, n_train=100, batch_size=16, steps=4, log_every=2, checkpoint_every=4)


def test_exact_nll_is_the_mixture_density_written_out(rng):
    x0 = 2.0 * rng.standard_normal((50, 1))
    weights, means, stds = (np.array(v) for v in GMM1D)
    density = np.sum(weights * np.exp(-0.5 * ((x0 - means) / stds) ** 2) / (stds * np.sqrt(2 * np.pi)), axis=1)
    np.testing.assert_allclose(evaluate.exact_nll("gmm1d", x0), -np.log(density), rtol=1e-12)
    assert evaluate.exact_nll("moons", x0) is None and evaluate.exact_nll("points.npy", x0) is None


def test_the_oracle_alone_takes_the_defaults_for_what_is_not_given():
    setup = evaluate.oracle_setup(n=10, seed=0)
    assert (setup.name, setup.schedule.name, setup.schedule.T) == ("gmm2d", "cosine", 1000)
    assert list(setup.models) == ["oracle"] and setup.models["oracle"].target == "v" and setup.x0.shape == (10, 2)


def test_the_oracle_s_flow_is_the_data_density_and_its_bound_lies_above_it():
    setup = evaluate.oracle_setup("gmm1d", "linear", 50, n=300, seed=3)
    bounds, flows = evaluate.likelihoods(setup, seed=3, progress=False)
    exact = evaluate.exact_nll(setup.name, setup.x0)
    assert abs(flows["oracle"].nats - exact.mean()) < FLOW_TOL
    assert bounds["oracle"].nats > exact.mean()
    model, target = setup.models["oracle"].model, setup.models["oracle"].target  # the bound's noise: default_rng(seed)
    alone = elbo(model, setup.schedule, setup.x0, target=target, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(bounds["oracle"].per_example, alone.per_example)


def test_the_table_prints_each_number_with_its_standard_error():
    setup = evaluate.oracle_setup("gmm1d", "linear", 20, n=40, seed=0)
    bounds, flows = evaluate.likelihoods(setup, seed=0, t_sampling="uniform", ode=False, progress=False)
    exact = evaluate.exact_nll(setup.name, setup.x0)
    lines = evaluate.table(bounds, flows, exact)
    assert all(len(line) == evaluate.TITLE_WIDTH + evaluate.COLUMN_WIDTH for line in lines)
    rows = {line[:evaluate.TITLE_WIDTH].strip(): line[evaluate.TITLE_WIDTH:].strip() for line in lines}
    gap = bounds["oracle"].per_example - exact
    mean, se = rows["gap: bound − exact"].split(" ± ")
    assert float(mean) == pytest.approx(gap.mean(), abs=5e-5)
    assert float(se) == pytest.approx(np.sqrt(np.sum((gap - gap.mean()) ** 2) / (len(gap) - 1) / len(gap)), abs=5e-5)
    assert "PF-ODE −log p(x_0)" not in rows and "Σ log std (standardised data)" not in rows  # no ODE, no stats
    assert "gap: bound − exact" not in {line[:evaluate.TITLE_WIDTH].strip() for line in
                                        evaluate.table(bounds, flows, None)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three tiny runs (no samples drawn at the end): on gmm2d, on moons (no exact density), and on a data file."""
    root = tmp_path_factory.mktemp("runs")
    points = root / "points.npy"
    np.save(points, np.random.default_rng(0).standard_normal((60, 2)))
    for name, source in (("gmm2d", dict(dataset="gmm2d")), ("moons", dict(dataset="moons")),
                         ("file", dict(data_file=str(points)))):
        run.train(TrainConfig(target="v", **source, **TINY), str(root / name), progress=False, evaluate=False,
                  echo=lambda _: None)
    return root


def test_a_run_beside_the_oracle_of_its_dataset(runs, rng):
    setup = evaluate.run_setup(str(runs / "gmm2d"), n=30, seed=0, with_oracle=True)
    assert list(setup.models) == ["network", "oracle"] and setup.x0.shape == (30, 2) and setup.name == "gmm2d"
    network = setup.models["network"]
    x_t, t = rng.standard_normal((8, 2)), rng.integers(0, TINY["T"], 8)
    np.testing.assert_allclose(network.model(x_t, t), network.differentiable(x_t, t), rtol=FP32_TOL, atol=FP32_TOL)
    raw = evaluate.run_setup(str(runs / "gmm2d"), weights="raw", n=30, seed=0).models["network"]
    assert not np.allclose(raw.model(x_t, t), network.model(x_t, t))  # four Adam steps move the raw weights


def test_a_run_on_a_data_file_is_evaluated_on_points_of_that_file(runs):
    setup = evaluate.run_setup(str(runs / "file"), n=1000, seed=0)
    points = np.load(runs / "points.npy")
    assert setup.name == "points.npy" and 0 < len(setup.x0) < len(points)  # its held-out points only
    assert all(np.any(np.all(points == x, axis=1)) for x in setup.x0)


@pytest.mark.parametrize("call, message", [
    (lambda runs: evaluate.oracle_setup("moons", n=10, seed=0), "has no exact density"),
    (lambda runs: evaluate.oracle_setup(schedule="nope", n=10, seed=0), "unknown schedule"),
    (lambda runs: evaluate.oracle_setup(target="noise", n=10, seed=0), "unknown target"),
    (lambda runs: evaluate.oracle_setup(zero_terminal_snr=True, target="eps", n=10, seed=0), "zero terminal SNR"),
    (lambda runs: evaluate.run_setup(str(runs / "none"), n=10, seed=0), "cannot load run"),
    (lambda runs: evaluate.run_setup(str(runs / "file"), n=10, seed=0, with_oracle=True),
     "--oracle needs a mixture dataset"),
    (lambda runs: evaluate.run_setup(str(runs / "moons"), n=10, seed=0, with_oracle=True),
     "--oracle: dataset 'moons' has no exact density"),
])
def test_what_cannot_be_evaluated_is_an_evaluation_error(runs, call, message):
    with pytest.raises(evaluate.EvaluationError, match=message):
        call(runs)
