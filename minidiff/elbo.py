"""The evidence lower bound, term by term, for continuous data (post eq. 3; Ho et al. 2020, eq. 5).

    −log p_θ(x_0) ≤ L_T + Σ_{t=1}^{T−1} L_t + L_0                     (nats; the bound on the NLL is −ELBO)
    L_T = KL(q(x_T | x_0) ‖ N(0, I))                                  the prior term
    L_t = KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t)),  t ≥ 1      the denoising terms
    L_0 = −log p_θ(x_0 | x_1)                                         the decoder (reconstruction) term

Indexing. Timesteps are 0-based: the model is called at t = 0 … T−1 and `terms[t]` is the term whose model call is
at t. terms[0] is the decoder (the post's L_0, whose model input is the post's x_1); terms[t], t ≥ 1, is the KL
between the two laws of the state one step before t (the post's L_{t}, i.e. its L_{t−1} with 1-based t + 1).
L_T uses ᾱ_{T−1}, the last state. Σ L_t then has T terms and loss_weight('elbo') satisfies
w_X(t) ‖X − X̂‖² = T · (L_t − its variance part), so the ELBO-weighted training loss estimates the bound.

Every term is between Gaussians. q(x_{t−1} | x_t, x_0) = N(μ̃, β̃ I) (post eq. 8) and p_θ(x_{t−1} | x_t) =
N(μ_θ, σ_t² I) with μ_θ the posterior mean at x0_hat (targets.predicted_mean) and σ_t² fixed, β̃_t or β_t
(forward.posterior_variance, Ho et al. 2020, §3.2). Per dimension (the post's step "from KL to a mean MSE"):
    L_t = ‖μ̃ − μ_θ‖² / (2σ_t²) + (D/2) [β̃_t/σ_t² − 1 − log(β̃_t/σ_t²)]
L_T = Σ_d ½ [(1−ᾱ) + ᾱ x_0d² − 1 − log(1−ᾱ)], zero at zero terminal SNR.

The decoder. The data are continuous, so p_θ(x_0 | x_1) is a Gaussian density, N(x_0; μ_θ(x_1, 0), σ_0² I), and
L_0 = ‖x_0 − μ_θ‖² / (2σ_0²) + (D/2) log(2π σ_0²) (μ_θ at t = 0 is x0_hat: coef_x0 = 1, coef_xt = 0). Its
variance is σ_0² = posterior_variance(schedule, variance)[0] by default, the one the `elbo` weighting uses: β_0
for 'beta', and for 'beta_tilde' the clipped β̃_1 ≈ β_0 β_1 / (β_0 + β_1) of improved-diffusion. For data smooth on
the scale √β_0 the true q(x_0 | x_1) has variance ≈ (1 − ᾱ_0)/ᾱ_0 ≈ β_0, so the clipped value costs about
½ [r − 1 − log r] nats per dimension, r = β_0/σ_0² (≈ 0.1 at linear T = 1000); decoder_variance overrides it.
L_0 is a density: it can be negative, and so can the bound in bits per dimension.

Discrete data. With `levels=K`, for data on K evenly spaced values in [−1, 1], L_0 is the discretised decoder of
Ho et al. 2020 (eq. 13, `discrete.py`) and the bound is on −log P(x_0), a probability; a continuous bound on the
density of the same values converts to it by adding D log(1/Δ), Δ = 2/(K − 1) the bin width.

Estimators. 'exact': all T terms for every example, each KL analytic at one draw of x_t per (x_0, t).
'uniform' / 'importance': one t per example from p(t), the term weighted by 1/p(t) (unbiased for the sum over t);
importance uses p(t) ∝ √E[L_t²] from a pilot pass over a few examples (Nichol & Dhariwal 2021, §3.3, with the
pilot in place of the training history), mixed with a little of the uniform distribution.
"""
import dataclasses

import numpy as np

from minidiff.discrete import discretized_gaussian_nll, grid_index
from minidiff.forward import posterior_variance, q_posterior, q_sample
from minidiff.schedules import at, stack_schedules
from minidiff.targets import canonical_target, check_identifiable, predicted_mean
from minidiff.timesteps import UNIFORM_MIX

LOG_2PI = np.log(2.0 * np.pi)
ESTIMATES = ("exact", "uniform", "importance")  # the bound's sum over t: every term, or one sampled t per point
PILOT_SIZE = 64  # examples in the importance sampler's pilot pass over all T terms


def gaussian_kl(mean1, var1, mean2, var2):
    """KL(N(mean1, var1 I) ‖ N(mean2, var2 I)) in nats, summed over the last axis (per example).

    Per dimension ½ [log(var2/var1) + (var1 + (mean1 − mean2)²)/var2 − 1]. With var1 = var2 = σ² it is
    ‖mean1 − mean2‖² / (2σ²): docs/derivation.md, eq. (3b).
    """
    per_dim = 0.5 * (np.log(var2) - np.log(var1) + (var1 + (mean1 - mean2) ** 2) / var2 - 1.0)
    return np.sum(per_dim, axis=-1)


def gaussian_nll(x, mean, var):
    """−log N(x; mean, var I), summed over the last axis: ½ Σ [log(2π var) + (x − mean)²/var]."""
    return 0.5 * np.sum(LOG_2PI + np.log(var) + (x - mean) ** 2 / var, axis=-1)


def prior_term(schedule, x0):
    """L_T = KL(q(x_T | x_0) ‖ N(0, I)) per example, with q(x_T | x_0) = N(√ᾱ_{T−1} x_0, (1 − ᾱ_{T−1}) I).

    gaussian_kl with var2 = 1, per dimension ½ [(1−ᾱ) + ᾱ x_0² − 1 − log(1−ᾱ)], written as ½ [ᾱ (x_0² − 1) −
    log1p(−ᾱ)] so that a small ᾱ_{T−1} does not cancel away.
    """
    alpha_bar = schedule.alpha_bar[-1]
    return 0.5 * np.sum(alpha_bar * (x0 ** 2 - 1.0) - np.log1p(-alpha_bar), axis=-1)


def reverse_variances(schedule, variance="beta_tilde", decoder_variance=None):
    """σ_t², t = 0 … T−1, of p_θ(x_{t−1} | x_t); σ_0² is the decoder's (module docstring)."""
    sigma2 = posterior_variance(schedule, variance)
    if decoder_variance is not None:
        if not (np.isfinite(decoder_variance) and decoder_variance > 0):
            raise ValueError(f"decoder_variance must be a positive number, got {decoder_variance!r}")
        sigma2[0] = decoder_variance
    return sigma2


def log_scale(stats):
    """Σ_d log std_d: −log p_data(x) = −log p_model((x − mean)/std) + Σ log std_d (change of variables)."""
    return 0.0 if stats is None else float(np.sum(np.log(np.asarray(stats["std"], dtype=np.float64))))


def standardized(x0, stats):
    """x0 in the model's space: (x0 − mean) / std with a run's stats, unchanged without."""
    x0 = np.asarray(x0, dtype=np.float64)
    return x0 if stats is None else (x0 - np.asarray(stats["mean"])) / np.asarray(stats["std"])


def check_terminal_snr(schedule, target):
    """eps and score cannot give x0_hat where ᾱ = 0 (Lin et al. 2023, §3.2): refuse before any work."""
    check_identifiable(target, schedule.alpha_bar[-1])


def terms_at(model, schedule, x0, t, eps, *, target, sigma2, levels=None):
    """L_t per example (n,), each row at its own timestep t (n,), at x_t = √ᾱ_t x_0 + √(1−ᾱ_t) eps (post eq. 3);
    with `levels`, L_0 is the discretised decoder's (module docstring)."""
    x_t = q_sample(schedule, x0, t, eps)
    return terms_of(model(x_t, t), schedule, x0, x_t, t, target=target, sigma2=sigma2, levels=levels)


def terms_of(prediction, schedule, x0, x_t, t, *, target, sigma2, levels=None):
    """L_t per example from the model's prediction of `target` at x_t: rows (n, D) each at its timestep t (n,), or
    every row at one int t — also for R runs at once, x (R, n, D) with stacked tables (`schedules.stack_schedules`,
    sigma2 (T, R, 1)), giving (R, n)."""
    mu_theta = predicted_mean(target, schedule, prediction, x_t, t)  # μ_θ(x_t, t)
    var = at(sigma2, t, x_t)
    if np.ndim(t) == 0:
        if t == 0:
            return _decoder(x0, mu_theta, var, levels)
        return gaussian_kl(*q_posterior(schedule, x0, x_t, t), mu_theta, var)  # post eq. (8)
    out = np.empty(len(x0))
    first = t == 0
    out[first] = _decoder(x0[first], mu_theta[first], var[first], levels)
    rest = ~first
    mean_q, var_q = q_posterior(schedule, x0[rest], x_t[rest], t[rest])  # post eq. (8)
    out[rest] = gaussian_kl(mean_q, var_q, mu_theta[rest], var[rest])
    return out


def _decoder(x0, mu_theta, var, levels):
    """L_0: the Gaussian decoder's −log density, or with `levels` the discretised decoder's (Ho et al. eq. (13))."""
    if levels is None:
        return gaussian_nll(x0, mu_theta, var)
    return discretized_gaussian_nll(x0, mu_theta, var, levels)


@dataclasses.dataclass(frozen=True, eq=False)
class Bound:
    """The variational bound on −log p_θ(x_0), nats per example (averaged over the examples), term by term."""

    nats: float  # L_T + Σ L_t + L_0 (+ Σ log std for standardised data)
    stderr_nats: float  # standard error of `nats` over the examples (and over t for sampled estimators)
    prior: float  # L_T
    denoising: float  # Σ_{t≥1} L_t
    decoder: float  # L_0
    terms: np.ndarray  # (T,) mean L_t at each t ('exact' only; None for sampled estimators)
    terms_stderr: np.ndarray  # (T,) their standard errors ('exact' only)
    per_example: np.ndarray  # (n,) the bound of each example (its estimate for sampled t)
    dim: int
    method: str
    log_scale: float  # Σ_d log std_d for standardised data, else 0
    levels: int = None  # discrete data: L_0 discretised, the bound is on −log P(x_0) (None: continuous)

    def bits(self, nats):
        """nats per example → bits per dimension: nats / (D ln 2)."""
        return nats / (self.dim * np.log(2.0))

    @property
    def bits_per_dim(self):
        return self.bits(self.nats)


def elbo(model, schedule, x0, *, target, rng, variance="beta_tilde", t_sampling="exact", decoder_variance=None,
         stats=None, pilot=PILOT_SIZE, progress=None, levels=None):
    """The bound −ELBO ≥ −log p_θ(x_0) for the rows of x0 (n, D), term by term (module docstring).

    model(x_t, t) predicts `target`; rng draws every x_t and t. variance: σ_t² 'beta_tilde' or 'beta';
    t_sampling: 'exact', 'uniform' or 'importance'; stats: a run's standardisation (x0 is then in data space);
    progress(k) is called after each batch of k model calls (T calls for 'exact', T + 1 for 'importance', 1 for
    'uniform'); levels: for data on that many evenly spaced values in [−1, 1], the discretised decoder and a bound
    on −log P(x_0) (Ho et al. 2020, eq. 13).
    """
    target = canonical_target(target)
    if t_sampling not in ESTIMATES:
        raise ValueError(f"unknown t-sampling {t_sampling!r}; choose one of: {', '.join(ESTIMATES)}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    check_terminal_snr(schedule, target)
    sigma2 = reverse_variances(schedule, variance, decoder_variance)
    if levels is not None:
        if stats is not None:
            raise ValueError("the discretised decoder needs the data on its levels in [−1, 1]; it cannot be used "
                             "with standardised data")
        grid_index(x0, levels)
    x0 = standardized(x0, stats)

    def run(x, t):  # L_t of each row at its timestep, with a fresh draw of x_t
        return terms_at(model, schedule, x, t, rng.standard_normal(x.shape), target=target, sigma2=sigma2,
                        levels=levels)
    alone = lambda x_t, t: model(x_t[0], np.full(x_t.shape[1], t))[None]  # noqa: E731  (a stack of one)
    if t_sampling == "exact":
        terms = _all_terms(alone, [schedule], x0[None], [rng], [target], [sigma2], levels, progress)[0]  # (T, n)
        return _summary(terms, terms[0], terms[1:].sum(0), prior_term(schedule, x0), x0.shape[1], t_sampling, stats,
                        levels)
    p = np.full(schedule.T, 1.0 / schedule.T)
    if t_sampling == "importance":
        p = _proposal(_all_terms(alone, [schedule], x0[None, :pilot], [rng], [target], [sigma2], levels, progress)[0])
    t = rng.choice(schedule.T, size=len(x0), p=p)
    weighted = run(x0, t) / p[t]  # E_{t~p}[L_t / p(t)] = Σ_t L_t
    if progress is not None:
        progress(1)
    return _summary(None, np.where(t == 0, weighted, 0.0), np.where(t > 0, weighted, 0.0),
                    prior_term(schedule, x0), x0.shape[1], t_sampling, stats, levels)


def elbos(predict, schedules, x0s, *, targets, rngs, variance="beta_tilde", stats=None, progress=None):
    """The exact bounds of R models at once, for a caller that evaluates their networks together (a stack of runs:
    `runs.stack.stacked_models`): predict(x_t, t) -> the R models' predictions (R, n, D) at x_t (R, n, D), every
    row at timestep t. The x0s have n rows each. Bound r is elbo(model_r, schedules[r], x0s[r],
    target=targets[r], rng=rngs[r], variance=variance, stats=stats[r]) bit for bit when predict gives what model_r
    gives: run r draws its x_t from rngs[r] in elbo's order, and its terms are computed by the same functions,
    the runs of one target at once."""
    R = len(schedules)
    stats = [None] * R if stats is None else stats
    targets = [canonical_target(target) for target in targets]
    for schedule, target in zip(schedules, targets):
        check_terminal_snr(schedule, target)
    sigma2s = [reverse_variances(schedule, variance) for schedule in schedules]
    x0 = np.stack([standardized(x, s) for x, s in zip(x0s, stats)])  # (R, n, D)
    terms = _all_terms(predict, schedules, x0, rngs, targets, sigma2s, None, progress)  # (R, T, n)
    return [_summary(terms[r], terms[r][0], terms[r][1:].sum(0), prior_term(schedules[r], x0[r]), x0.shape[2],
                     "exact", stats[r]) for r in range(R)]


def _all_terms(predict, schedules, x0, rngs, targets, sigma2s, levels, progress):
    """Every L_t for every row of every run, (R, T, n), for x0 (R, n, D): per t, each run draws x_t from its own
    generator, then one call of predict for all runs, and the terms of the runs of each target together."""
    (R, n, D), T = x0.shape, schedules[0].T
    groups = {}
    for r, target in enumerate(targets):
        groups.setdefault(target, []).append(r)
    tables = {target: (rows, stack_schedules([schedules[r] for r in rows]),
                       np.stack([sigma2s[r] for r in rows], axis=1)[..., None]) for target, rows in groups.items()}
    schedule, terms = stack_schedules(schedules), np.empty((R, T, n))
    for t in range(T):
        eps = np.stack([rng.standard_normal((n, D)) for rng in rngs])  # (R, n, D)
        x_t = q_sample(schedule, x0, t, eps)  # post eq. (3), each run at its own schedule
        prediction = predict(x_t, t)
        for target, (rows, stacked, sigma2) in tables.items():
            terms[rows, t] = terms_of(prediction[rows], stacked, x0[rows], x_t[rows], t, target=target,
                                      sigma2=sigma2, levels=levels)
        if progress is not None:
            progress(1)
    return terms


def _proposal(pilot_terms):
    """p(t) ∝ √E[L_t²] over the pilot, mixed with UNIFORM_MIX of uniform (Nichol & Dhariwal 2021, §3.3).

    L_0 is a density and may be negative; its magnitude is what matters for the variance, hence the square.
    """
    root_mean_square = np.sqrt(np.mean(pilot_terms ** 2, axis=1))
    T = len(root_mean_square)
    return (1 - UNIFORM_MIX) * root_mean_square / root_mean_square.sum() + UNIFORM_MIX / T


def _stderr(values):
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


def _summary(terms, decoder, denoising, prior, dim, method, stats, levels=None):
    """Average the per-example pieces into a Bound."""
    per_example = prior + decoder + denoising + log_scale(stats)
    means = None if terms is None else terms.mean(axis=1)
    stderrs = None if terms is None else np.array([_stderr(row) for row in terms])
    return Bound(float(per_example.mean()), _stderr(per_example), float(prior.mean()), float(denoising.mean()),
                 float(decoder.mean()), means, stderrs, per_example, dim, method, log_scale(stats), levels)
