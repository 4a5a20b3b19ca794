"""Noise schedules: how much noise each forward step adds, and what that does to the signal-to-noise ratio.

The forward process adds Gaussian noise in T small steps, x_t = √α_t x_{t-1} + √β_t ε (post eq. 6), with
α_t = 1 − β_t. Composing the steps gives q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I) with ᾱ_t = Π_{s≤t} α_s, so a
schedule is fully described by the decreasing curve ᾱ_t. Its signal-to-noise ratio is SNR_t = ᾱ_t / (1 − ᾱ_t)
and its log-SNR λ_t = log SNR_t (Kingma et al. 2021). A schedule is "good to the end" when ᾱ_{T-1} ≈ 0: only
then is x_T close to the prior N(0, I) and the prior term L_T of the ELBO (post eq. 3) negligible.

Timesteps are 0-based, t = 0 … T−1, and `alpha_bar[t]` is ᾱ after t+1 noising steps (as diffusers and
improved-diffusion index). `alpha_bar_prev[t]` is ᾱ after t steps, with ᾱ_{-1} = 1 (no noise yet).

The named schedules (linear, cosine, …) and how each sets β_t are in named_schedules.py; `make_schedule` turns a
name into a Schedule here. Each also has a continuous-time log-SNR λ(u) (`log_snr_continuous`), the view of
Kingma et al. 2021 in which the weighting of a loss is a function w(λ); between the integer steps a Schedule is
read by `between_steps`. The timesteps a sampler with fewer steps visits are in spacing.py.

A log-SNR shift s moves any schedule along λ: λ → λ − 2 log s, so ᾱ' = sigmoid(λ − 2 log s) at every step
(`shifted`). s > 1 spends more steps at high noise. On the rectified flow it is SD3's time shift
u' = s u / (1 + (s − 1) u) (Esser et al. 2024, eqs. 23–24; diffusers' `shift`), and a shift by d/64 is the
resolution shift of Hoogeboom et al. 2023, §3.1, for an image of side d (λ_cosine + 2 log(64/d)).
"""
import dataclasses
import warnings
from typing import NamedTuple

import numpy as np

# SCHEDULES, ScheduleError, check_name, SPACINGS and timestep_spacing: the rest of minidiff reads them from here.
from minidiff.named_schedules import REFERENCE_T, SCHEDULES, ScheduleError, check_name, check_shift, lookup, shifted  # noqa: F401
from minidiff.spacing import SPACINGS, timestep_spacing  # noqa: F401

PRIOR_KL_WARN = 1e-3  # nats per dimension: above this the prior term L_T is not "extremely small"


class PriorTermWarning(UserWarning):
    """The schedule ends far enough from pure noise that the prior term L_T is not negligible."""


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
    """Every per-timestep constant of a schedule, computed once (arrays of length T, float64).

    coef_x0 and coef_xt are the two coefficients of the posterior mean μ̃ (post eq. 8), kept here so that the
    forward process, the targets and the sampler read them from one place.
    """

    name: str
    T: int
    betas: np.ndarray
    alphas: np.ndarray
    alpha_bar: np.ndarray
    alpha_bar_prev: np.ndarray
    snr: np.ndarray
    log_snr: np.ndarray
    beta_tilde: np.ndarray
    coef_x0: np.ndarray
    coef_xt: np.ndarray
    zero_terminal_snr: bool = False
    options: dict = dataclasses.field(default_factory=dict)
    shift: float = 1.0  # the log-SNR shift s: λ → λ − 2 log s (module docstring)

    @property
    def prior_kl(self):
        """KL(q(x_T|x_0) ‖ N(0, I)) per dimension, in nats, for data with unit variance.

        Per dimension KL(N(√ᾱ x0, 1−ᾱ) ‖ N(0, 1)) = ½[(1−ᾱ) + ᾱ x0² − 1 − log(1−ᾱ)]; with E[x0²] = 1 the first
        three terms cancel and what is left is −½ log(1 − ᾱ_{T-1}).
        """
        return -0.5 * np.log1p(-self.alpha_bar[-1])

    def log_snr_continuous(self, u):
        """λ(u) for u ∈ [0, 1], the continuous-time log-SNR of this schedule (see `log_snr_continuous`)."""
        return log_snr_continuous(self.name, u, T=self.T, zero_terminal_snr=self.zero_terminal_snr,
                                  shift=self.shift, **self.options)

    def describe(self):
        """A one-line summary: name, T, the ends of ᾱ and λ, the prior term."""
        shift = f" (log-SNR shift {self.shift:g})" if self.shift != 1 else ""
        return (f"{self.name}{' (zero terminal SNR)' if self.zero_terminal_snr else ''}{shift}, T={self.T}: "
                f"alpha_bar {self.alpha_bar[0]:.6g} -> {self.alpha_bar[-1]:.6g}, "
                f"log-SNR {self.log_snr[0]:.4g} -> {self.log_snr[-1]:.4g}, prior KL {self.prior_kl:.3g} nats/dim")


def at(values, t, x):
    """`values[t]` shaped to broadcast against a batch `x` of any shape.

    t is an int (one timestep for the whole batch) or an int array of shape (B,) (one per example, x of shape
    (B, ...)). This is the one place that turns a per-timestep constant into a per-example factor.
    """
    v = values[t]
    if np.ndim(v) == 0:
        return v
    return v.reshape(v.shape + (1,) * (np.ndim(x) - v.ndim))


def stack_schedules(schedules):
    """R schedules of one T as one, for R runs evaluated together at one timestep: every table (T, R, 1), so that
    `at(table, t, x)` at an int t gives each run's value as an (R, 1, 1) column against x (R, n, D) — and the
    functions that read a schedule through `at` (q_sample, q_posterior, the targets' conversions) compute, run by
    run, what they compute for that run's own schedule."""
    if len({s.T for s in schedules}) != 1:
        raise ValueError(f"schedules stacked together share T, got {sorted({s.T for s in schedules})}")
    tables = {f.name: np.stack([getattr(s, f.name) for s in schedules], axis=1)[..., None]
              for f in dataclasses.fields(Schedule) if isinstance(getattr(schedules[0], f.name), np.ndarray)}
    return dataclasses.replace(schedules[0], name="stack", **tables)


# --- building a Schedule from β or from ᾱ -----------------------------------------------------------------

def from_betas(betas, name="custom", *, zero_terminal_snr=False, options=None, alpha_bar=None):
    """A Schedule from per-step noise levels β_t ∈ (0, 1], t = 0 … T−1.

    alpha_bar: the exact ᾱ_t when the caller knows them (a respaced schedule), instead of the product of the α_t.
    """
    betas = np.asarray(betas, dtype=np.float64)
    _check_betas(betas, name)
    T = len(betas)
    alphas = 1.0 - betas
    with np.errstate(divide="ignore"):
        log_alpha_bar = np.cumsum(np.log1p(-betas)) if alpha_bar is None else np.log(alpha_bar)  # ᾱ_t = Π α_s
    alpha_bar = np.exp(log_alpha_bar)
    one_minus_alpha_bar = -np.expm1(log_alpha_bar)  # 1 − ᾱ without cancellation when ᾱ ≈ 1
    alpha_bar_prev = np.concatenate([[1.0], alpha_bar[:-1]])  # ᾱ_{-1} = 1
    one_minus_alpha_bar_prev = np.concatenate([[0.0], one_minus_alpha_bar[:-1]])
    snr = alpha_bar / one_minus_alpha_bar
    with np.errstate(divide="ignore"):
        log_snr = log_alpha_bar - np.log(one_minus_alpha_bar)
    # Posterior q(x_{t-1} | x_t, x_0) = N(μ̃, β̃ I), post eq. (8) and Ho et al. 2020, eq. (7):
    beta_tilde = betas * one_minus_alpha_bar_prev / one_minus_alpha_bar
    coef_x0 = betas * np.sqrt(alpha_bar_prev) / one_minus_alpha_bar
    coef_xt = one_minus_alpha_bar_prev * np.sqrt(alphas) / one_minus_alpha_bar
    return Schedule(name=name, T=T, betas=betas, alphas=alphas, alpha_bar=alpha_bar,
                    alpha_bar_prev=alpha_bar_prev, snr=snr, log_snr=log_snr, beta_tilde=beta_tilde,
                    coef_x0=coef_x0, coef_xt=coef_xt, zero_terminal_snr=zero_terminal_snr,
                    options=dict(options or {}))


def betas_from_alpha_bar(alpha_bar, max_beta=1.0):
    """β_t = 1 − ᾱ_t / ᾱ_{t-1} with ᾱ_{-1} = 1, optionally clipped at max_beta (Nichol & Dhariwal 2021, §3.2)."""
    alpha_bar = np.asarray(alpha_bar, dtype=np.float64)
    if np.any(np.diff(alpha_bar) > 0) or np.any(alpha_bar > 1) or np.any(alpha_bar < 0):
        raise ScheduleError("alpha_bar must be non-increasing and within [0, 1]")
    alpha_bar_prev = np.concatenate([[1.0], alpha_bar[:-1]])
    with np.errstate(divide="ignore", invalid="ignore"):
        betas = np.where(alpha_bar_prev > 0, 1.0 - alpha_bar / alpha_bar_prev, 1.0)
    return np.minimum(betas, max_beta)


def _check_betas(betas, name):
    if betas.ndim != 1 or len(betas) < 1:
        raise ScheduleError(f"schedule {name!r}: betas must be a non-empty 1-D array, got shape {betas.shape}")
    if not np.all(np.isfinite(betas)):
        raise ScheduleError(f"schedule {name!r}: betas contain NaN or Inf")
    bad = np.flatnonzero((betas <= 0) | (betas > 1))
    if len(bad):
        t = bad[0]
        raise ScheduleError(f"schedule {name!r}: beta[{t}] = {betas[t]:.6g} is outside (0, 1]; every beta must "
                            f"be in (0, 1] so that alpha_bar decreases and stays non-negative")


# --- zero terminal SNR ----------------------------------------------------------------------------------------

def rescale_zero_terminal_snr(alpha_bar):
    """Shift and scale √ᾱ so that it ends at exactly 0 and keeps its first value (Lin et al. 2023, Alg. 1).

    s = √ᾱ;  s ← (s − s_{T−1}) · s_0 / (s_0 − s_{T−1});  ᾱ = s².  The last step then has SNR = 0: x_T is pure
    noise, as the sampler assumes when it starts from N(0, I).
    """
    s = np.sqrt(np.asarray(alpha_bar, dtype=np.float64))
    s0, s_last = s[0], s[-1]
    if not s0 > s_last:
        raise ScheduleError("zero-terminal-SNR rescale needs alpha_bar[0] > alpha_bar[-1] (T >= 2)")
    return ((s - s_last) * s0 / (s0 - s_last)) ** 2


def _log_alpha_bar_zero_terminal(log_alpha_bar_fn):
    """The same rescale on the continuous curve: s(u) = (√ᾱ(u) − √ᾱ(1)) / (√ᾱ(0) − √ᾱ(1)) · √ᾱ(0)."""
    s0, s1 = np.exp(0.5 * log_alpha_bar_fn(0.0)), np.exp(0.5 * log_alpha_bar_fn(1.0))
    def log_alpha_bar(u):
        with np.errstate(divide="ignore"):
            return 2 * np.log(np.maximum((np.exp(0.5 * log_alpha_bar_fn(u)) - s1) * s0 / (s0 - s1), 0.0))
    return log_alpha_bar


# --- the entry point ------------------------------------------------------------------------------------------

def make_schedule(name, T=REFERENCE_T, *, zero_terminal_snr=False, shift=1.0, warn=True, **options):
    """The Schedule `name` with T steps, optionally rescaled to zero terminal SNR (Lin et al. 2023), then shifted
    in log-SNR by λ → λ − 2 log(shift) (module docstring).

    options are the named schedule's own (e.g. beta_start, beta_end for linear; s for cosine). Warns with
    PriorTermWarning when the schedule ends so far from noise that the prior term is not negligible.
    """
    betas, _ = lookup(name, T, options)
    _check_betas(np.asarray(betas), name)
    check_shift(shift)
    alpha_bar = None
    if zero_terminal_snr:
        alpha_bar = rescale_zero_terminal_snr(np.cumprod(1.0 - betas))
        betas = betas_from_alpha_bar(alpha_bar)
        betas[0] = 1.0 - alpha_bar[0]  # α_0 = ᾱ_0 (Lin et al. 2023, Alg. 1)
        alpha_bar = None
    if shift != 1:
        alpha_bar = shifted(np.cumprod(1.0 - betas), shift)
        betas = betas_from_alpha_bar(alpha_bar)
    schedule = from_betas(betas, name, zero_terminal_snr=zero_terminal_snr, options=options, alpha_bar=alpha_bar)
    schedule = dataclasses.replace(schedule, shift=float(shift))
    if warn and schedule.prior_kl > PRIOR_KL_WARN:
        warnings.warn(f"schedule {name} at T={T} ends at alpha_bar={schedule.alpha_bar[-1]:.4g}: the prior term "
                      f"KL(q(x_T|x_0) || N(0, I)) is {schedule.prior_kl:.3g} nats per dimension for unit-variance "
                      f"data, not negligible (use more steps, another schedule or zero_terminal_snr=True)",
                      PriorTermWarning, stacklevel=2)
    return schedule


def log_snr_continuous(name, u, T=REFERENCE_T, *, zero_terminal_snr=False, shift=1.0, **options):
    """λ(u) = log ᾱ(u) − log(1 − ᾱ(u)) − 2 log(shift) for u ∈ [0, 1], the continuous-time log-SNR (Kingma et
    al. 2021), shifted as `make_schedule` shifts.

    For the cosine schedule without the offset s this is λ(u) = −2 log tan(πu/2), since ᾱ(u) = cos²(πu/2). λ is +∞ at
    u = 0 (no noise) and −∞ at u = 1 with zero terminal SNR.
    """
    u = np.asarray(u, dtype=np.float64)
    if np.any((u < 0) | (u > 1)):
        raise ScheduleError("u must lie in [0, 1]")
    _, log_alpha_bar_fn = lookup(name, T, options)
    if zero_terminal_snr:
        log_alpha_bar_fn = _log_alpha_bar_zero_terminal(log_alpha_bar_fn)
    check_shift(shift)
    log_alpha_bar = log_alpha_bar_fn(u)
    with np.errstate(divide="ignore"):
        return log_alpha_bar - np.log(-np.expm1(log_alpha_bar)) - 2 * np.log(shift)


# --- the schedule between its steps ---------------------------------------------------------------------------
# The probability-flow ODE runs in continuous time. Write the noise level as an angle φ, cos φ = √ᾱ, sin φ = √(1−ᾱ)
# (x_φ = cos φ x_0 + sin φ ε): φ is finite at both ends, including ᾱ = 0, so between the integer steps φ is taken
# linear in t (likelihood.py's docstring). The rectified flow is defined in continuous time, u = (t+1)/T: between
# its steps it is read off its own curve, tan φ = σ/s = s_shift · u/(1 − u) (named_schedules._rectified_flow).

class StepView(NamedTuple):
    """Per-row constants at (possibly fractional) timesteps, shaped (B,): indexed by row like a Schedule by t, so
    that targets.to_x0_eps / make_target work unchanged with t = np.arange(B)."""

    alpha_bar: np.ndarray
    coef_x0: np.ndarray
    coef_xt: np.ndarray


def step_angles(schedule):
    """φ_t = arctan(√(1−ᾱ_t) / √ᾱ_t), t = 0 … T−1: increasing from ≈ √β_0 to ≤ π/2 (= π/2 at zero SNR)."""
    return np.arctan2(np.sqrt(1.0 - schedule.alpha_bar), np.sqrt(schedule.alpha_bar))


def between_steps(schedule, t):
    """The schedule at timesteps t ∈ [0, T−1], shape (B,), fractional allowed: φ linear in t between steps.

    At whole t the values are the schedule's own. coef_x0, coef_xt (the mu target's) are linear in t between steps.
    """
    t = np.asarray(t, dtype=np.float64)
    if np.any(~np.isfinite(t) | (t < 0) | (t > schedule.T - 1)):
        raise ValueError(f"timesteps must lie in 0 … T−1 = {schedule.T - 1}")
    steps = np.arange(schedule.T)
    whole = np.round(t).astype(np.int64)
    if schedule.name == "rectified_flow":
        phi = np.arctan2(schedule.shift * (t + 1), schedule.T - t - 1)  # tan φ = s_shift u / (1 − u)
    else:
        phi = np.interp(t, steps, step_angles(schedule))
    alpha_bar = np.where(t == whole, schedule.alpha_bar[whole], np.cos(phi) ** 2)
    return StepView(alpha_bar, np.interp(t, steps, schedule.coef_x0), np.interp(t, steps, schedule.coef_xt))


def timestep_at(schedule, phi):
    """The fractional timestep whose angle is φ (the inverse of `between_steps`' interpolation)."""
    if schedule.name == "rectified_flow":  # u/(1 − u) = tan φ / s_shift, t = u T − 1
        ratio = np.tan(phi) / schedule.shift
        return np.clip(ratio / (1.0 + ratio) * schedule.T - 1.0, 0.0, schedule.T - 1.0)
    return np.interp(phi, step_angles(schedule), np.arange(schedule.T, dtype=np.float64))
