"""Per-example gradients, the gradient-noise estimators and the target statistics, each against an independent
answer: autograd's batch gradient, a per-example loop, closed forms for linear regression and Gaussian data."""
import numpy as np
import pytest
from autograd import grad

from minidiff import nn
from minidiff.data import get_mixture
from minidiff.lab.diagnostics import gradvar, pergrad, target_stats
from minidiff.schedules import make_schedule
from minidiff.targets import TARGETS, make_target
from minidiff.train import TrainConfig, loss_and_grad, make_problem, per_example_loss

SMALL = dict(T=50, hidden=16, depth=3, time_dim=8, dtype="float64", schedule="cosine")


def small_problem(rng, target="v", weighting="min-snr", **kw):
    """A small fp64 network with a non-zero output layer (at init it is zero and only it would get gradient)."""
    config = TrainConfig(target=target, weighting=weighting, **{**SMALL, **kw})
    params = nn.init(np.random.default_rng(1), config.network(2), dtype=np.float64)
    params["out.W"] = 0.3 * rng.standard_normal(params["out.W"].shape)
    params["out.b"] = 0.1 * rng.standard_normal(params["out.b"].shape)
    return make_problem(config), params


def examples(rng, T, n=24):
    return rng.standard_normal((n, 2)), rng.standard_normal((n, 2)), rng.integers(0, T, n)


@pytest.mark.parametrize("target", TARGETS)
def test_per_example_gradients_average_to_the_batch_gradient(rng, target):
    problem, params = small_problem(rng, target)
    x0, eps, t = examples(rng, problem.schedule.T)
    per_example = pergrad.per_example_grads(params, problem, x0, eps, t)
    _, batch, _ = loss_and_grad(params, problem, x0, eps, t)
    for name in params:
        np.testing.assert_allclose(per_example[name].mean(axis=0), batch[name], rtol=1e-10, atol=1e-12)


def test_outer_products_equal_one_backward_pass_per_example(rng):
    problem, params = small_problem(rng)
    x0, eps, t = examples(rng, problem.schedule.T, n=6)
    fast = pergrad.grads_from_factors(*pergrad.layer_factors(params, problem, x0, eps, t))
    for i in range(len(x0)):  # the loss of example i alone, differentiated by autograd
        one = grad(lambda p: per_example_loss(p, problem, x0[i:i + 1], eps[i:i + 1], t[i:i + 1]).sum())(params)
        for name in params:
            np.testing.assert_allclose(fast[name][i], one[name], rtol=1e-10, atol=1e-13)


def test_the_tapped_network_gives_the_same_losses_and_is_restored(rng):
    problem, params = small_problem(rng)
    x0, eps, t = examples(rng, problem.schedule.T)
    before = {name: getattr(nn, name) for name in pergrad.LAYER_FUNCTIONS}
    probes = {p: np.zeros((len(t), params[p + ".W"].shape[1])) for p in pergrad.layer_prefixes(params)}
    with pergrad._tapped(params, probes, {}):
        tapped = per_example_loss(params, problem, x0, eps, t)
    np.testing.assert_array_equal(tapped, per_example_loss(params, problem, x0, eps, t))  # bit for bit
    assert {name: getattr(nn, name) for name in pergrad.LAYER_FUNCTIONS} == before


def test_a_network_with_fourier_features_falls_back_to_the_loop(rng):
    problem, params = small_problem(rng, fourier_features=2)
    x0, eps, t = examples(rng, problem.schedule.T, n=5)
    with pytest.raises(pergrad.UntappableNetwork):
        pergrad.layer_factors(params, problem, x0, eps, t)
    per_example = pergrad.per_example_grads(params, problem, x0, eps, t)
    _, batch, _ = loss_and_grad(params, problem, x0, eps, t)
    np.testing.assert_allclose(per_example["in.W_fourier"].mean(axis=0), batch["in.W_fourier"], rtol=1e-10)


def test_norms_and_group_sums_without_forming_the_gradients(rng):
    problem, params = small_problem(rng)
    x0, eps, t = examples(rng, problem.schedule.T, n=30)
    groups = t * 3 // problem.schedule.T
    sq_norms, sums = pergrad.gradient_sums(params, problem, x0, eps, t, groups, 3)
    loop = pergrad.per_example_grads_loop(params, problem, x0, eps, t)
    flat = np.concatenate([g.reshape(len(t), -1) for g in loop.values()], axis=1)  # (B, P)
    np.testing.assert_allclose(sq_norms, np.sum(flat ** 2, axis=1), rtol=1e-10)
    for name, g in loop.items():
        for k in range(3):
            np.testing.assert_allclose(sums[name][k], g[groups == k].sum(axis=0), rtol=1e-10, atol=1e-12)


def regression_gradients(rng, delta, sigma, n):
    """g_i = x_i (x_iᵀ δ − σ ξ_i): the per-example gradients of ½(x_iᵀθ − y_i)² with y = x_iᵀθ* + σ ξ, δ = θ − θ*."""
    x = rng.standard_normal((n, len(delta)))
    return x * (x @ delta - sigma * rng.standard_normal(n))[:, None]


def test_noise_estimators_are_unbiased_for_linear_regression(rng):
    """x ~ N(0, I_d): G = δ, E‖g‖² = (d + 2)‖δ‖² + d σ² (Isserlis), so tr Σ = (d + 1)‖δ‖² + d σ², |G|² = ‖δ‖²."""
    d, sigma, n, repeats = 5, 0.7, 6, 20_000
    delta = rng.standard_normal(d)
    stats = [gradvar.noise_stats_of_samples(regression_gradients(rng, delta, sigma, n)) for _ in range(repeats)]
    true_trace, true_grad_sq = (d + 1) * delta @ delta + d * sigma ** 2, delta @ delta
    for field, truth in (("trace_cov", true_trace), ("grad_sq", true_grad_sq)):
        values = np.array([getattr(s, field) for s in stats])
        assert abs(values.mean() - truth) < 4 * values.std() / np.sqrt(repeats), field
    naive = np.array([s.mean_grad_sq for s in stats])  # E‖ḡ‖² = |G|² + tr Σ / n: biased, and the test can tell
    assert abs(naive.mean() - true_grad_sq - true_trace / n) < 4 * naive.std() / np.sqrt(repeats)
    assert abs(naive.mean() - true_grad_sq) > 10 * naive.std() / np.sqrt(repeats)


def test_trace_estimate_is_the_centred_sum_of_squares(rng):
    g = rng.standard_normal((9, 4)) + 3.0
    stats = gradvar.noise_stats_of_samples(g)
    assert stats.trace_cov == pytest.approx(np.sum((g - g.mean(0)) ** 2) / 8, rel=1e-12)
    assert stats.b_simple == pytest.approx(stats.trace_cov / (g.mean(0) @ g.mean(0) - stats.trace_cov / 9))


def test_buckets_partition_t_and_order_log_snr():
    schedule = make_schedule("cosine", 100)
    by_t = gradvar.bucket_index(schedule, 4, "t")
    assert np.array_equal(np.bincount(by_t), [25, 25, 25, 25]) and np.all(np.diff(by_t) >= 0)
    by_lam = gradvar.bucket_index(schedule, 5, "log_snr")
    assert set(by_lam) == set(range(5)) and np.all(np.diff(by_lam) >= 0)  # λ falls with t: buckets in order
    with pytest.raises(ValueError, match="between 1 and T"):
        gradvar.bucket_index(schedule, 101)


def test_measure_agrees_with_the_materialised_gradients(rng):
    problem, params = small_problem(rng, target="eps", weighting="uniform")
    x0, eps, t = examples(rng, problem.schedule.T, n=40)
    result = gradvar.measure(params, problem, x0, eps, t, n_buckets=2, chunk=16)  # chunks must not matter
    g = pergrad.per_example_grads_loop(params, problem, x0, eps, t)
    flat = np.concatenate([v.reshape(len(t), -1) for v in g.values()], axis=1)
    expected = gradvar.noise_stats_of_samples(flat)
    assert result["all"]["trace_cov"] == pytest.approx(expected.trace_cov, rel=1e-9)
    assert result["all"]["b_simple"] == pytest.approx(expected.b_simple, rel=1e-9)
    late = t >= problem.schedule.T // 2
    assert result["buckets"][1]["trace_cov"] == pytest.approx(gradvar.noise_stats_of_samples(flat[late]).trace_cov)
    a, b = flat[~late].mean(0), flat[late].mean(0)
    assert result["cosine"][0][1] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), rel=1e-9)


@pytest.mark.parametrize("target", TARGETS)
def test_target_moments_match_monte_carlo(rng, target):
    schedule = make_schedule("linear", 200)
    x0 = get_mixture("gmm2d").sample(40_000, rng)
    second, variance = target_stats.target_moments(schedule, target, x0)
    for t in (0, 60, 199):
        X = make_target(target, schedule, x0, rng.standard_normal(x0.shape), t)
        squared = np.sum(X ** 2, axis=1)
        assert abs(squared.mean() - second[t]) < 4 * squared.std() / np.sqrt(len(X)), (target, t)
        assert np.sum(X.var(axis=0)) == pytest.approx(variance[t], rel=0.05), (target, t)


def test_weighted_floor_of_gaussian_data_is_the_closed_form_mmse(rng):
    """One Gaussian N(0, Σ): per eigenvalue s², the x0-MMSE is s² / (1 + SNR s²) (the Gaussian posterior); ε-MSE = SNR × it."""
    mixture, schedule, t = get_mixture("gaussian"), make_schedule("cosine", 100), np.array([5, 50, 90])
    eig = np.linalg.eigvalsh(mixture.covs[0])
    mmse = np.array([np.sum(eig / (1 + snr * eig)) for snr in schedule.snr[t]])
    floor, stderr = target_stats.weighted_floor(mixture, schedule, "x0", "uniform", t, 2000, rng)
    np.testing.assert_allclose(floor, mmse, rtol=1e-10)  # exact: tr Cov[x0|x_t] does not depend on x_t here
    floor, _ = target_stats.weighted_floor(mixture, schedule, "eps", "snr", t, 2000, rng)  # w_eps = 1 under 'snr'
    np.testing.assert_allclose(floor, schedule.snr[t] * mmse, rtol=1e-10)
