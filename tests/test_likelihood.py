"""The probability-flow likelihood: the solver on ODEs with known solutions, the exact Jacobian traces against
finite differences, the oracle's flow NLL against the exact density, and the flow against sample.py's ODE sampler."""
import numpy as np
import pytest

from minidiff import likelihood, make_schedule, nn
from minidiff.data import get_mixture
from minidiff.likelihood import flow, flow_nll, network_model, prediction_trace, solve_ode
from minidiff.mixture import GaussianMixture, oracle, posterior_mean
from minidiff.sample import predict_x0_eps, sample
from minidiff.schedules import between_steps, step_angles
from minidiff.targets import TARGETS
from minidiff.train import TrainConfig, make_problem, model_fn

H = 1e-5  # central differences: truncation O(H²) ≈ 1e-10, round-off ≈ 1e-16 / H ≈ 1e-11, far below 1e-6


def central_trace(f, x):
    """tr ∂f/∂x per row by central differences, one coordinate at a time."""
    return sum((f(x + H * e) - f(x - H * e))[:, d] / (2 * H) for d, e in enumerate(np.eye(x.shape[1])))


# --- the solver ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("forward", [True, False])
def test_solver_follows_a_rotation_both_ways(forward):
    # y' = (y_1, −y_0): y(s) = (cos s, −sin s) from (1, 0); three rows at different phases
    f = lambda s, y: np.stack([y[:, 1], -y[:, 0]], axis=1)  # noqa: E731
    phase = np.array([0.0, 1.0, 2.5])
    exact = lambda s: np.stack([np.cos(s + phase), -np.sin(s + phase)], axis=1)  # noqa: E731
    s0, s1 = (0.0, 2 * np.pi) if forward else (2 * np.pi, 0.0)
    errors = []
    for tol in (1e-4, 1e-8):
        y, evals, steps = solve_ode(f, s0, s1, exact(s0), rtol=tol, atol=tol)
        errors.append(np.abs(y - exact(s1)).max())
        assert errors[-1] < 100 * tol and evals >= 6 * steps  # six new stages per attempted step
    assert errors[1] < errors[0] / 1e3  # the error follows the tolerance


def test_solver_meets_the_tolerance_in_every_row():
    # y' = −k y per row, rates from slow to fast: the shared step must satisfy the fastest row
    k = np.array([[0.1], [1.0], [20.0]])
    y, _, _ = solve_ode(lambda s, y: -k * y, 0.0, 1.0, np.ones((3, 1)), rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(y, np.exp(-k), rtol=1e-5, atol=1e-9)


def test_solver_reports_progress_up_to_one():
    seen = []
    solve_ode(lambda s, y: -y, 0.0, 2.0, np.ones((1, 1)), progress=seen.append)
    assert sum(seen) == pytest.approx(1.0, rel=1e-12) and min(seen) > 0


# --- the oracle between steps -------------------------------------------------------------------------------------

def test_oracle_at_fractional_t_is_the_posterior_mean_at_the_interpolated_noise(rng):
    mixture, schedule = get_mixture("gmm2d"), make_schedule("linear", 100)
    x = rng.standard_normal((6, 2))
    t = np.array([0.0, 0.25, 10.5, 50.0, 98.9, 99.0])
    alpha_bar = between_steps(schedule, t).alpha_bar
    np.testing.assert_allclose(oracle(mixture, schedule, "x0")(x, t), posterior_mean(mixture, alpha_bar, x)[0],
                               rtol=1e-12)
    whole = oracle(mixture, schedule, "mu")
    np.testing.assert_allclose(whole(x, np.array([0, 3, 99, 5, 6, 7])), whole(x, np.array([0., 3, 99, 5, 6, 7])),
                               rtol=1e-12, atol=1e-14)


# --- exact traces --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("t", [0.0, 7.0, 23.4, 49.0])
def test_oracle_jacobian_trace_matches_finite_differences(target, t, rng):
    # the last step of a zero-terminal-SNR schedule is included for the targets defined there
    zero = target not in ("eps", "score")
    mixture = GaussianMixture([0.4, 0.6], [[-1.0, 0.5, 0.0], [1.0, 0.0, 2.0]],
                              [np.diag([0.3, 1.0, 0.5]), [[1.0, 0.4, 0.0], [0.4, 0.5, 0.1], [0.0, 0.1, 0.8]]])
    schedule = make_schedule("linear", 50, zero_terminal_snr=zero)
    model, x, rows = oracle(mixture, schedule, target), rng.standard_normal((5, 3)), np.full(5, t)
    expected = central_trace(lambda x_: model(x_, rows), x)
    np.testing.assert_allclose(model.jacobian_trace(x, rows), expected, rtol=1e-6, atol=1e-6 * (1 + np.abs(
        expected).max()))


def tiny_network(seed=0):
    """A small network with a random (nonzero) output layer, and its run's problem and config."""
    config = TrainConfig(dataset="gmm2d", target="v", T=50, hidden=16, depth=2, time_dim=8)
    params = nn.init(np.random.default_rng(seed), config.network(2), dtype=np.float32)
    params["out.W"] = np.random.default_rng(seed + 1).standard_normal(params["out.W"].shape).astype(np.float32)
    return params, make_problem(config), config


def test_network_trace_by_autograd_matches_finite_differences(rng):
    params, problem, config = tiny_network()
    model = network_model(params, problem, config)
    x, t = rng.standard_normal((7, 2)), np.array([0, 3.5, 10, 20.25, 30, 40, 49])
    prediction, trace = prediction_trace(model, x, t)
    np.testing.assert_allclose(trace, central_trace(lambda x_: model(x_, t), x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(prediction, model_fn(params, problem, config)(x, t), rtol=1e-5, atol=1e-5)  # fp32


def test_a_model_autograd_cannot_trace_is_refused_with_a_clear_error(rng):
    params, problem, config = tiny_network()
    with pytest.raises(TypeError, match="autograd"):
        prediction_trace(model_fn(params, problem, config), rng.standard_normal((3, 2)), np.zeros(3))


# --- the likelihood of the oracle's flow -------------------------------------------------------------------------

def exact_flow_nll(mixture, schedule, x0, latent):
    """What the oracle's flow must give, from the exact densities alone (likelihood.py docstring).

    The oracle's flow is the true flow of q_t, so log p(x_{φ_0}) − log N(x_{φ_1}) = log q_0(x_{φ_0}) −
    log q_{T−1}(x_{φ_1}). Hence −log p(x_0) = −log q_0(√ᾱ_0 x_0) − (D/2) log ᾱ_0 + log q_{T−1}(z) − log N(z; 0, I)
    with z the flow's latent; the last two cancel at zero terminal SNR.
    """
    a0, aT, D = schedule.alpha_bar[0], schedule.alpha_bar[-1], mixture.dim
    data_end = -mixture.noised(a0).log_prob(np.sqrt(a0) * x0) - D / 2 * np.log(a0)
    prior = -0.5 * np.sum(np.log(2 * np.pi) + latent ** 2, axis=1)
    return data_end + mixture.noised(aT).log_prob(latent) - prior


TOL = 1e-6  # solver tolerance below; measured error of the NLL ≤ 1e-5 nats, asserted ≤ 5e-5 (a small multiple
#            of the tolerance, as for the global error of any adaptive solver)


@pytest.mark.parametrize("name, schedule_args, target", [
    ("gmm1d", ("linear", 1000, False), "eps"),
    ("gmm2d", ("cosine", 1000, False), "score"),
    ("gmm2d", ("linear", 50, False), "mu"),
    ("8gaussians", ("linear", 200, True), "v"),
    ("gaussian", ("sigmoid", 100, True), "x0"),
])
def test_flow_nll_of_the_oracle_is_the_exact_nll(name, schedule_args, target, rng):
    mixture = get_mixture(name)
    schedule = make_schedule(schedule_args[0], schedule_args[1], zero_terminal_snr=schedule_args[2])
    x0 = mixture.sample(60, rng)
    result = flow_nll(oracle(mixture, schedule, target), schedule, x0, target=target, rtol=TOL, atol=TOL)
    expected = exact_flow_nll(mixture, schedule, x0, result.latent)
    assert np.abs(result.per_example - expected).max() < 5e-5
    assert abs(result.nats - (-mixture.log_prob(x0).mean())) < 0.01  # the blur of the first step is small
    assert result.bits_per_dim == pytest.approx(result.nats / (mixture.dim * np.log(2)), rel=1e-12)


def test_flow_nll_error_follows_the_tolerance(rng):
    mixture, schedule = get_mixture("gmm2d"), make_schedule("cosine", 1000)
    x0 = mixture.sample(30, rng)
    errors = []
    for tol in (1e-3, 1e-7):
        result = flow_nll(oracle(mixture, schedule, "v"), schedule, x0, target="v", rtol=tol, atol=tol)
        errors.append(np.abs(result.per_example - exact_flow_nll(mixture, schedule, x0, result.latent)).max())
    assert errors[1] < errors[0] / 100


def test_flow_nll_of_standardised_data_adds_the_log_std(rng):
    # a mixture in data space and the same mixture standardised: the standardised oracle with the stats must give
    # the exact data-space NLL (change of variables), up to the blur of the first step computed exactly
    mixture = get_mixture("gmm2d")
    mean, std = np.array([0.5, -0.3]), np.array([2.0, 0.7])
    scaled = GaussianMixture(mixture.weights, (mixture.means - mean) / std, mixture.covs / np.outer(std, std))
    schedule = make_schedule("cosine", 200)
    x_data = mixture.sample(40, rng)
    result = flow_nll(oracle(scaled, schedule, "v"), schedule, x_data, target="v", rtol=TOL, atol=TOL,
                      stats={"mean": mean.tolist(), "std": std.tolist()})
    expected = exact_flow_nll(scaled, schedule, (x_data - mean) / std, result.latent) + np.sum(np.log(std))
    assert np.abs(result.per_example - expected).max() < 5e-5
    assert abs(result.nats - (-mixture.log_prob(x_data).mean())) < 0.01


def test_flow_is_the_ode_of_the_sampler(rng):
    # sample.py's Heun sampler (dy/dσ = eps_hat) from the same noise converges to this flow (dx/dφ = v̂), at Heun's
    # second order: halving the step size divides the difference by 4 (measured ratios 4.1, 3.9)
    mixture, x_T = get_mixture("gmm2d"), rng.standard_normal((40, 2))
    differences = []
    for T in (100, 400):
        schedule = make_schedule("cosine", T)
        model, phi = oracle(mixture, schedule, "eps"), step_angles(schedule)
        state, _, _ = solve_ode(flow(model, schedule, "eps"), phi[-1], phi[0],
                                np.concatenate([x_T, np.zeros((40, 1))], axis=1), rtol=1e-9, atol=1e-9)
        x0_flow = predict_x0_eps(model, "eps", schedule, state[:, :-1], 0)[0]  # the sampler's last (Euler) step
        x0_heun = sample(model, "eps", schedule, x_T.shape, rng, sampler="ode", x_T=x_T)
        differences.append(np.sqrt(np.mean((x0_flow - x0_heun) ** 2)))
    assert 12 < differences[0] / differences[1] < 20  # 4² = 16 for two halvings
    assert differences[1] < 5e-3  # measured 6e-4 to 1.5e-3 (RMS over points) at T = 400


def test_eps_model_at_zero_terminal_snr_is_refused(rng):
    mixture, schedule = get_mixture("gmm2d"), make_schedule("cosine", 50, zero_terminal_snr=True)
    with pytest.raises(ValueError, match="zero terminal SNR"):
        flow_nll(oracle(mixture, schedule, "eps"), schedule, mixture.sample(3, rng), target="eps")


@pytest.mark.parametrize("target", ["v", "x0"])
def test_flow_nll_of_an_untrained_network_matches_its_closed_form(target, rng):
    # nn.init's zero output layer predicts 0 everywhere, which makes the flow solvable by hand:
    #   v = 0:  dx/dφ = v̂ = 0, x stays at cos φ_0 x_0 and the trace is 0;
    #   x0 = 0: ε̂ = x / sin φ, v̂ = cos φ ε̂ = cot φ x, so x(φ) = x(φ_0) sin φ / sin φ_0
    #           and ∫ tr = ∫ D cot φ dφ = D log(sin φ_1 / sin φ_0).
    # Then −log p(x_0) = −log N(x(φ_1); 0, I) − ∫ tr − D log cos φ_0 (likelihood.py docstring).
    config = TrainConfig(dataset="gmm2d", target=target, schedule="cosine", T=100, hidden=16, depth=2, time_dim=8)
    params = nn.init(np.random.default_rng(0), config.network(2), dtype=np.float32)
    problem = make_problem(config)
    phi = step_angles(problem.schedule)
    x0, D = get_mixture("gmm2d").sample(20, rng), 2
    growth = 1.0 if target == "v" else np.sin(phi[-1]) / np.sin(phi[0])
    latent = np.cos(phi[0]) * x0 * growth
    expected = 0.5 * np.sum(np.log(2 * np.pi) + latent ** 2, axis=1) - D * np.log(growth) - D * np.log(np.cos(phi[0]))
    result = flow_nll(network_model(params, problem, config), problem.schedule, x0, target=target, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(result.latent, latent, rtol=1e-5)
    np.testing.assert_allclose(result.per_example, expected, rtol=1e-6, atol=5e-5)


def test_the_solver_stops_at_once_on_a_non_finite_right_hand_side():
    """A diverged model's NaN velocity used to make every step fail and shrink h without end: now one SolverError."""
    calls = []

    def f(s, y):
        calls.append(s)
        return np.full_like(y, np.nan) if s > 0.3 else -y

    with pytest.raises(likelihood.SolverError, match="NaN or Inf"):
        likelihood.solve_ode(f, 0.0, 1.0, np.ones((3, 2)))
    assert len(calls) < 200  # stopped at the first NaN, not after a long search


def test_the_solver_bounds_its_work_rejected_steps_included():
    """dy/ds = 1/(0.5 − s)² blows up inside the interval: no step size gets past s = 0.5. The solver gives up with a
    SolverError after at most max_steps tries (each 6 evaluations), never loops for ever."""
    evaluations = []

    def f(s, y):
        evaluations.append(s)
        return np.full_like(y, 1.0 / (0.5 - s) ** 2)

    with pytest.raises(likelihood.SolverError):
        likelihood.solve_ode(f, 0.0, 1.0, np.zeros((1, 1)), max_steps=500)
    assert len(evaluations) <= 2 + 6 * 500 + 1
