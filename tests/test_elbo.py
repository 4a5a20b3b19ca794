"""The variational bound, each piece checked against something independent: Monte Carlo, a closed form derived
another way, the exact likelihood of mixtures, the training loss's `elbo` weighting; and the `elbo` command."""
import numpy as np
import pytest
from click.testing import CliRunner

import cli
import minidiff
from minidiff import make_schedule, q_sample
from minidiff.data import get_mixture
from minidiff.elbo import gaussian_kl, gaussian_nll, prior_term, terms_at
from minidiff.forward import posterior_variance
from minidiff.mixture import GaussianMixture, oracle
from minidiff.targets import TARGETS, loss_weight, make_target

Z = 5.0  # Monte Carlo tolerance in standard errors: a false alarm has probability ~6e-7 per comparison


# --- the pieces -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("var1, var2", [(1.0, 1.0), (0.3, 2.0), (2.5, 0.4)])
def test_gaussian_kl_matches_monte_carlo(var1, var2, rng):
    # KL(p ‖ q) = E_p[log p(x) − log q(x)], with the log-densities written out per dimension
    mean1, mean2, n = np.array([0.3, -1.0, 2.0]), np.array([0.0, 0.5, 1.0]), 400_000
    x = mean1 + np.sqrt(var1) * rng.standard_normal((n, 3))
    log_ratio = np.sum(-0.5 * np.log(var1) - (x - mean1) ** 2 / (2 * var1)
                       + 0.5 * np.log(var2) + (x - mean2) ** 2 / (2 * var2), axis=1)
    kl = gaussian_kl(mean1, var1, mean2, var2)
    assert abs(kl - log_ratio.mean()) < Z * log_ratio.std() / np.sqrt(n)


def test_gaussian_nll_matches_the_mixture_density(rng):
    mean, var = np.array([0.5, -2.0]), 0.3
    x = rng.standard_normal((20, 2))
    one = GaussianMixture([1.0], [mean], [var * np.eye(2)])  # log-density by an eigenbasis and log-sum-exp
    np.testing.assert_allclose(gaussian_nll(x, mean, var), -one.log_prob(x), rtol=1e-12)


def test_prior_term_matches_the_schedule_prior_kl():
    # for data with x_0² = 1 in every dimension the prior term is D · Schedule.prior_kl (schedules.py docstring)
    x0 = np.array([[1.0, -1.0, 1.0], [-1.0, -1.0, 1.0]])
    for schedule in (make_schedule("linear", 50, beta_end=0.02, warn=False), make_schedule("cosine", 100)):
        np.testing.assert_allclose(prior_term(schedule, x0), 3 * schedule.prior_kl, rtol=1e-12)
    assert np.all(prior_term(make_schedule("cosine", 100, zero_terminal_snr=True), x0 * 7.0) == 0.0)


@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
@pytest.mark.parametrize("target", TARGETS)
def test_elbo_weighting_times_squared_error_is_T_times_the_term(target, variance, rng):
    # loss_weight('elbo'): w_X(t) ‖X − X̂‖² = T · KL_t up to the part that does not depend on the prediction:
    # (D/2)[β̃/σ² − 1 − log(β̃/σ²)] for t ≥ 1, (D/2) log(2π σ_0²) for the decoder at t = 0.
    schedule, n, D = make_schedule("cosine", 40), 200, 3
    x0, eps = rng.standard_normal((n, D)), rng.standard_normal((n, D))
    t = np.arange(n) % schedule.T
    def model(x_t, t):  # any prediction: a fixed nonlinear function of (x_t, t)
        return np.sin(x_t + 0.1 * t[:, None]) * 0.7
    sigma2 = posterior_variance(schedule, variance)
    terms = terms_at(model, schedule, x0, t, eps, target=target, sigma2=sigma2)
    x_t = q_sample(schedule, x0, t, eps)
    error = np.sum((make_target(target, schedule, x0, eps, t) - model(x_t, t)) ** 2, axis=1)
    ratio = schedule.beta_tilde[t] / sigma2[t]
    with np.errstate(divide="ignore"):
        constant = np.where(t == 0, D / 2 * np.log(2 * np.pi * sigma2[t]), D / 2 * (ratio - 1 - np.log(ratio)))
    weighted = loss_weight("elbo", target, schedule, variance=variance)[t] * error
    np.testing.assert_allclose(weighted, schedule.T * (terms - constant), rtol=1e-9, atol=1e-9)


# --- single-Gaussian data: a closed form ------------------------------------------------------------------------

def gaussian_bound(schedule, m, s, sigma2):
    """E_{x_0}[−ELBO] for x_0 ~ N(m, s² I) and the exact optimal denoiser, from the joint Gaussian of the chain.

    Derived without the posterior q(x_{t−1}|x_t, x_0) or any KL, from the other form of the bound (Ho et al. 2020,
    eq. 3): −ELBO = E_q[−log p(x_T) − Σ_t log p_θ(x_{t−1}|x_t) + Σ_t log q(x_t|x_{t−1})]. Per dimension (m_d):
      forward chain x_t = √α_t x_{t−1} + √β_t z, x_{−1} = x_0:  V_t = Var x_t = ᾱ_t s² + 1 − ᾱ_t,  M_t = √ᾱ_t m,
      Cov(x_{t−1}, x_t) = √α_t V_{t−1};
      optimal denoiser E[x_0|x_t] = m + K_t (x_t − M_t), K_t = √ᾱ_t s² / V_t (Gaussian conditioning), so
      μ_θ(x_t) = coef_x0 E[x_0|x_t] + coef_xt x_t = A_t x_t + c_t,
        A_t = coef_x0 K_t + coef_xt,  c_t = coef_x0 (m − K_t M_t);
      E[−log p_θ(x_{t−1}|x_t)] = ½ log(2πσ_t²) + E[(x_{t−1} − A_t x_t − c_t)²] / (2σ_t²), where
      E[(x_{t−1} − A x_t − c)²] = V_{t−1} − 2A Cov + A² V_t + (M_{t−1} − A M_t − c)²;
      E[−log N(x_T; 0, 1)] = ½ log 2π + (V_T + M_T²)/2;  E[log q(x_t|x_{t−1})] = −½ log(2πe β_t).
    """
    alpha_bar, alpha_bar_prev = schedule.alpha_bar, schedule.alpha_bar_prev
    total = 0.0
    for m_d in m:
        V, M = alpha_bar * s ** 2 + 1 - alpha_bar, np.sqrt(alpha_bar) * m_d
        V_prev, M_prev = alpha_bar_prev * s ** 2 + 1 - alpha_bar_prev, np.sqrt(alpha_bar_prev) * m_d
        cov = np.sqrt(schedule.alphas) * V_prev
        K = np.sqrt(alpha_bar) * s ** 2 / V
        A, c = schedule.coef_x0 * K + schedule.coef_xt, schedule.coef_x0 * (m_d - K * M)
        square = V_prev - 2 * A * cov + A ** 2 * V + (M_prev - A * M - c) ** 2
        reverse = np.sum(0.5 * np.log(2 * np.pi * sigma2) + square / (2 * sigma2))
        prior = 0.5 * np.log(2 * np.pi) + (V[-1] + M[-1] ** 2) / 2
        forward = np.sum(0.5 * np.log(2 * np.pi * np.e * schedule.betas))
        total += reverse + prior - forward
    return total


@pytest.mark.parametrize("name, T, zero", [("linear", 20, False), ("cosine", 30, False), ("linear", 25, True)])
@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
def test_bound_of_gaussian_data_matches_closed_form(name, T, zero, variance, rng):
    m, s, n = np.array([0.5, -1.0]), 0.7, 40_000
    mixture = GaussianMixture([1.0], [m], [s ** 2 * np.eye(2)])
    schedule = make_schedule(name, T, zero_terminal_snr=zero)
    bound = minidiff.elbo(oracle(mixture, schedule, "v"), schedule, mixture.sample(n, rng), target="v", rng=rng,
                          variance=variance)
    sigma2 = posterior_variance(schedule, variance)
    assert abs(bound.nats - gaussian_bound(schedule, m, s, sigma2)) < Z * bound.stderr_nats
    # the test has power: the reverse variances shifted by one step miss by far more than Z standard errors
    assert abs(bound.nats - gaussian_bound(schedule, m, s, np.roll(sigma2, 1))) > 4 * Z * bound.stderr_nats


# --- the bound against the exact likelihood ---------------------------------------------------------------------

CASES = [("gmm1d", "linear", False), ("gmm2d", "cosine", False), ("8gaussians", "linear", True)]


@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
@pytest.mark.parametrize("name, schedule_name, zero", CASES)
def test_bound_of_the_oracle_is_never_below_the_exact_nll(name, schedule_name, zero, variance, rng):
    # E[bound] ≥ E[−log p_θ] ≥ E[−log p_data] (Jensen, then Gibbs): the paired gap is ≥ 0 up to Monte Carlo
    mixture, schedule = get_mixture(name), make_schedule(schedule_name, 100, zero_terminal_snr=zero)
    x0 = mixture.sample(500, rng)
    bound = minidiff.elbo(oracle(mixture, schedule, "x0"), schedule, x0, target="x0", rng=rng, variance=variance)
    gap = bound.per_example + mixture.log_prob(x0)
    assert gap.mean() > -Z * gap.std(ddof=1) / np.sqrt(len(gap))


def test_gap_of_the_oracle_shrinks_as_T_grows(rng):
    # measured (gmm2d, linear, β̃, 1000 points): the gap falls by ≈ 5.0 nats from T = 20 to 80 and by ≈ 1.3 from
    # 80 to 320, each 8 to 15 standard errors
    mixture = get_mixture("gmm2d")
    x0 = mixture.sample(1000, rng)
    gaps = []
    for T in (20, 80, 320):
        schedule = make_schedule("linear", T)
        bound = minidiff.elbo(oracle(mixture, schedule, "v"), schedule, x0, target="v", rng=rng)
        gaps.append(bound.per_example + mixture.log_prob(x0))
    for wide, narrow in zip(gaps, gaps[1:]):
        difference = wide - narrow  # paired: the same points
        assert difference.mean() > Z * difference.std(ddof=1) / np.sqrt(len(difference))


@pytest.mark.parametrize("t_sampling", ["uniform", "importance"])
def test_sampled_t_estimate_agrees_with_the_exact_sum(t_sampling, rng):
    # four independent estimates of 2000 points each; with fewer points the uniform estimator's rare decoder draws
    # (L_0 weighted by T) make its standard error itself unreliable
    mixture, schedule = get_mixture("gmm2d"), make_schedule("cosine", 200)
    model = oracle(mixture, schedule, "eps")
    x0 = mixture.sample(8000, rng)
    exact = minidiff.elbo(model, schedule, x0[:1000], target="eps", rng=rng)
    z = []
    for part in np.split(x0, 4):
        sampled = minidiff.elbo(model, schedule, part, target="eps", rng=rng, t_sampling=t_sampling)
        assert sampled.terms is None and sampled.method == t_sampling
        z.append((sampled.nats - exact.nats) / np.hypot(sampled.stderr_nats, exact.stderr_nats))
    assert np.all(np.abs(z) < Z)
    assert abs(np.mean(z)) * np.sqrt(len(z)) < Z  # no shared bias across the estimates


def test_importance_sampling_reduces_the_standard_error(rng):
    mixture, schedule = get_mixture("gmm2d"), make_schedule("cosine", 200)
    model, x0 = oracle(mixture, schedule, "v"), mixture.sample(2000, rng)
    uniform = minidiff.elbo(model, schedule, x0, target="v", rng=rng, t_sampling="uniform")
    importance = minidiff.elbo(model, schedule, x0, target="v", rng=rng, t_sampling="importance")
    assert importance.stderr_nats < uniform.stderr_nats / 2  # measured: about 4× smaller


def test_standardised_data_adds_the_log_std(rng):
    # with a run's stats the model sees (x − mean)/std and −log p_data = −log p_model + Σ log std (change of variables)
    mixture, schedule = get_mixture("gmm2d"), make_schedule("cosine", 30)
    stats = {"mean": [0.3, -0.2], "std": [2.0, 0.5]}
    x_data = mixture.sample(50, rng)
    model = oracle(mixture, schedule, "x0")
    with_stats = minidiff.elbo(model, schedule, x_data, target="x0", rng=np.random.default_rng(1), stats=stats)
    by_hand = minidiff.elbo(model, schedule, (x_data - stats["mean"]) / stats["std"], target="x0",
                            rng=np.random.default_rng(1))
    np.testing.assert_allclose(with_stats.per_example, by_hand.per_example + np.log(2.0 * 0.5), rtol=1e-12)
    assert with_stats.log_scale == pytest.approx(np.log(1.0))


def test_result_has_every_term_and_bits_per_dim(rng):
    mixture, schedule = get_mixture("gmm1d"), make_schedule("linear", 50)
    bound = minidiff.elbo(oracle(mixture, schedule, "v"), schedule, mixture.sample(100, rng), target="v", rng=rng)
    assert bound.terms.shape == (50,) and bound.terms_stderr.shape == (50,)
    assert bound.decoder == pytest.approx(bound.terms[0]) and bound.denoising == pytest.approx(bound.terms[1:].sum())
    assert bound.nats == pytest.approx(bound.prior + bound.denoising + bound.decoder, rel=1e-12)
    assert bound.bits_per_dim == pytest.approx(bound.nats / np.log(2.0), rel=1e-12)  # D = 1
    assert np.all(bound.terms[1:] >= 0)  # every KL is non-negative


def test_elbo_is_exported_and_the_module_stays_importable():
    import sys
    assert callable(minidiff.elbo) and minidiff.elbo is sys.modules["minidiff.elbo"].elbo
    from minidiff.elbo import gaussian_kl as again
    assert again is gaussian_kl


def test_bad_arguments_are_refused_before_any_work(rng):
    mixture, schedule = get_mixture("gmm2d"), make_schedule("linear", 20, zero_terminal_snr=True)
    x0 = mixture.sample(10, rng)
    with pytest.raises(ValueError, match="zero terminal SNR"):
        minidiff.elbo(oracle(mixture, schedule, "eps"), schedule, x0, target="eps", rng=rng)
    with pytest.raises(ValueError, match="unknown t-sampling"):
        minidiff.elbo(oracle(mixture, schedule, "v"), schedule, x0, target="v", rng=rng, t_sampling="sobol")
    with pytest.raises(TypeError, match="Generator"):
        minidiff.elbo(oracle(mixture, schedule, "v"), schedule, x0, target="v", rng=0)
    with pytest.raises(ValueError, match="decoder_variance"):
        minidiff.elbo(oracle(mixture, schedule, "v"), schedule, x0, target="v", rng=rng, decoder_variance=-1.0)


# --- the command ------------------------------------------------------------------------------------------------

def invoke(*args):
    return CliRunner().invoke(cli.main, list(args))


def table(output):
    """{row title: [values]} from the command's table (the rows after the header)."""
    rows = {}
    for line in output.splitlines():
        if line[:38].strip() and len(line) > 38:
            rows[line[:38].strip()] = line[38:].split()
    return rows


def test_elbo_command_with_the_oracle_alone(tmp_path):
    plot = tmp_path / "terms.png"
    result = invoke("elbo", "--oracle", "--dataset", "gmm1d", "--schedule", "linear", "--T", "100", "--n", "300",
                    "--plot", str(plot))
    assert result.exit_code == 0, result.output
    rows = table(result.output)
    flow, exact = float(rows["PF-ODE −log p(x_0)"][0]), float(rows["exact −log p_data(x_0)"][0])
    assert abs(flow - exact) < 0.01  # the oracle's flow is the data's own, blurred by the first step's noise
    assert float(rows["gap: bound − exact"][0]) > 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from minidiff.runs import loop as run
    from minidiff.train import TrainConfig
    out = str(tmp_path_factory.mktemp("run"))
    run.train(TrainConfig(dataset="gmm2d", target="v", schedule="cosine", steps=20, T=50, hidden=16, depth=2,
                          n_train=500, log_every=10, checkpoint_every=20), out, progress=False, echo=lambda _: None)
    return out


def test_elbo_command_on_a_trained_run_beside_the_oracle(tiny_run):
    result = invoke("elbo", tiny_run, "--oracle", "--n", "100", "--t-sampling", "importance")
    assert result.exit_code == 0, result.output
    rows = table(result.output)
    assert rows["nats per example"] == ["network", "oracle"]
    network_gap, oracle_gap = float(rows["gap: bound − exact"][0]), float(rows["gap: bound − exact"][3])
    assert network_gap > oracle_gap  # twenty training steps are far from the optimal denoiser


@pytest.mark.parametrize("args, message", [
    (["elbo"], "give a RUN folder, or --oracle"),
    (["elbo", "--oracle", "--dataset", "moons"], "has no exact density"),
    (["elbo", "--oracle", "--schedule", "nope"], "unknown schedule"),
    (["elbo", "--oracle", "--target", "noise"], "unknown target"),
    (["elbo", "--oracle", "--zero-terminal-snr", "--target", "eps"], "zero terminal SNR"),
    (["elbo", "--oracle", "--n", "1"], "1 is not in the range"),
    (["elbo", "--oracle", "--plot", "terms.pdf"], "must end in .png or .svg"),
    (["elbo", "--oracle", "--plot", "t.png", "--t-sampling", "uniform"], "needs every term"),
    (["elbo", "--oracle", "--rtol", "0"], "--rtol"),
    (["elbo", "/no/such/run"], "does not exist"),
])
def test_elbo_usage_errors_exit_2_with_one_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_elbo_usage_errors_on_a_run(tiny_run, tmp_path):
    result = invoke("elbo", tiny_run, "--T", "100")
    assert result.exit_code == 2 and "come from the run" in result.output
    result = invoke("elbo", str(tmp_path))  # a folder that holds no run
    assert result.exit_code == 2 and "cannot load run" in result.output
