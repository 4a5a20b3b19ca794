"""Noise schedules: how much noise each forward step adds, and what that does to the signal-to-noise ratio.

The forward process adds Gaussian noise in T small steps, x_t = √α_t x_{t-1} + √β_t ε (post eq. 6), with
α_t = 1 − β_t. Composing the steps gives q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I) with ᾱ_t = Π_{s≤t} α_s, so a
schedule is fully described by the decreasing curve ᾱ_t. Its signal-to-noise ratio is SNR_t = ᾱ_t / (1 − ᾱ_t)
and its log-SNR λ_t = log SNR_t (Kingma et al. 2021). A schedule is "good to the end" when ᾱ_{T-1} ≈ 0: only
then is x_T close to the prior N(0, I) and the prior term L_T of the ELBO (post eq. 3) negligible.

Timesteps are 0-based, t = 0 … T−1, and `alpha_bar[t]` is ᾱ after t+1 noising steps (as diffusers and
improved-diffusion index). `alpha_bar_prev[t]` is ᾱ after t steps, with ᾱ_{-1} = 1 (no noise yet).

Two families of schedules are in use, and both are here:
- β-space schedules fix the per-step noise β_t (linear, quadratic, scaled_linear, sigmoid_beta);
- ᾱ-space schedules fix a continuous curve ᾱ(u), u ∈ [0, 1], and read β off it (cosine, sigmoid).
Each also has a continuous-time log-SNR λ(u) (`log_snr_continuous`), the view of Kingma et al. 2021 in which
the weighting of a loss is a function w(λ).
"""
import dataclasses
import inspect
import warnings

import numpy as np

# Default endpoints, each with its source. β-space defaults are stated for T = 1000 and scaled by 1000 / T so
# that any T reaches the same final noise level (improved-diffusion's `get_named_beta_schedule`).
REFERENCE_T = 1000
LINEAR_BETAS = (1e-4, 0.02)  # Ho et al. 2020, §4
SCALED_LINEAR_BETAS = (0.00085, 0.012)  # Rombach et al. 2022 (Stable Diffusion's configuration)
SIGMOID_BETA_RANGE = (-6.0, 6.0)  # Xu et al. 2022 (GeoDiff): β = sigmoid(linspace(-6, 6, T)) rescaled
COSINE_OFFSET = 0.008  # Nichol & Dhariwal 2021, eq. (17): s = 0.008
MAX_BETA = 0.999  # Nichol & Dhariwal 2021, §3.2: clip β to avoid a singularity at t = T
SIGMOID_START, SIGMOID_END, SIGMOID_TAU = -3.0, 3.0, 1.0  # Chen 2023, Alg. 1 defaults
SIGMOID_CLIP_MIN = 1e-9  # Chen 2023, Alg. 1
PRIOR_KL_WARN = 1e-3  # nats per dimension: above this the prior term L_T is not "extremely small"


class ScheduleError(ValueError):
    """An unknown schedule name or an invalid schedule value."""


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
                                  **self.options)

    def describe(self):
        """A one-line summary: name, T, the ends of ᾱ and λ, the prior term."""
        return (f"{self.name}{' (zero terminal SNR)' if self.zero_terminal_snr else ''}, T={self.T}: "
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


# --- the named schedules ------------------------------------------------------------------------------------
# Each is a pair: the discrete β_t, t = 0 … T−1, and the continuous log ᾱ(u), u ∈ [0, 1], whose samples at
# u = (t+1)/T it follows (exactly for ᾱ-space schedules, in the limit of many steps for β-space ones, where the
# per-step β_t becomes a rate T·β(u) and log ᾱ(u) = −∫_0^u T·β(s) ds).

def _scaled(endpoints, T, beta_start, beta_end):
    """Explicit endpoints are used as given; the defaults are scaled by 1000 / T (improved-diffusion)."""
    scale = REFERENCE_T / T
    b0 = endpoints[0] * scale if beta_start is None else beta_start
    b1 = endpoints[1] * scale if beta_end is None else beta_end
    if beta_end is None and b1 > 1:
        raise ScheduleError(f"at T={T} the default beta_end {endpoints[1]:g}·1000/T = {b1:g} exceeds 1; use "
                            f"T >= {int(np.ceil(REFERENCE_T * endpoints[1]))}, give beta_end <= 1, or a cosine "
                            f"or sigmoid schedule")
    return b0, b1


def _linear(T, beta_start=None, beta_end=None):
    """Ho et al. 2020, §4: β linear from 1e-4 to 0.02 (at T = 1000)."""
    b0, b1 = _scaled(LINEAR_BETAS, T, beta_start, beta_end)
    betas = np.linspace(b0, b1, T)
    return betas, lambda u: -T * (b0 * u + (b1 - b0) * u ** 2 / 2)


def _sqrt_linear(endpoints):
    def schedule(T, beta_start=None, beta_end=None):
        """√β linear between √β_start and √β_end."""
        b0, b1 = _scaled(endpoints, T, beta_start, beta_end)
        a, b = np.sqrt(b0), np.sqrt(b1)
        betas = np.linspace(a, b, T) ** 2
        if np.isclose(a, b):
            return betas, lambda u: -T * b0 * u
        return betas, lambda u: -T * ((a + (b - a) * u) ** 3 - a ** 3) / (3 * (b - a))
    return schedule


def _softplus(z):
    return np.logaddexp(0.0, z)


def _sigmoid_beta(T, beta_start=None, beta_end=None):
    """Xu et al. 2022 (GeoDiff): β = sigmoid(linspace(−6, 6, T)) · (β_end − β_start) + β_start."""
    b0, b1 = _scaled(LINEAR_BETAS, T, beta_start, beta_end)
    lo, hi = SIGMOID_BETA_RANGE
    betas = 1.0 / (1.0 + np.exp(-np.linspace(lo, hi, T))) * (b1 - b0) + b0
    # ∫_0^u sigmoid(lo + (hi − lo) s) ds = [softplus(lo + (hi − lo) u) − softplus(lo)] / (hi − lo)
    return betas, lambda u: -T * (b0 * u + (b1 - b0) * (_softplus(lo + (hi - lo) * u) - _softplus(lo)) / (hi - lo))


def _from_continuous(log_alpha_bar_fn, T, max_beta):
    """β_t = 1 − ᾱ((t+1)/T) / ᾱ(t/T), clipped at max_beta (Nichol & Dhariwal 2021, eq. 17 and §3.2)."""
    u = np.arange(T + 1) / T
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.exp(log_alpha_bar_fn(u[1:]) - log_alpha_bar_fn(u[:-1]))
    betas = np.minimum(1.0 - np.nan_to_num(ratio, nan=0.0), max_beta)
    return betas, log_alpha_bar_fn


def _cosine(T, s=COSINE_OFFSET, max_beta=MAX_BETA):
    """Nichol & Dhariwal 2021, eq. (17): ᾱ(u) = f(u)/f(0), f(u) = cos²((u + s)/(1 + s) · π/2)."""
    def log_alpha_bar(u):
        with np.errstate(divide="ignore"):
            return 2 * (np.log(np.abs(np.cos((u + s) / (1 + s) * np.pi / 2))) - np.log(np.cos(s / (1 + s) * np.pi / 2)))
    return _from_continuous(log_alpha_bar, T, max_beta)


def _sigmoid(T, start=SIGMOID_START, end=SIGMOID_END, tau=SIGMOID_TAU, clip_min=SIGMOID_CLIP_MIN, max_beta=MAX_BETA):
    """Chen 2023, Alg. 1: ᾱ(u) = [σ(end/τ) − σ((u(end − start) + start)/τ)] / [σ(end/τ) − σ(start/τ)]."""
    if not start < end or tau <= 0:
        raise ScheduleError(f"sigmoid schedule needs start < end and tau > 0, got {start}, {end}, {tau}")
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    v_start, v_end = sig(start / tau), sig(end / tau)
    def log_alpha_bar(u):
        return np.log(np.clip((v_end - sig((u * (end - start) + start) / tau)) / (v_end - v_start), clip_min, 1.0))
    return _from_continuous(log_alpha_bar, T, max_beta)


SCHEDULES = {
    "linear": (_linear, "β linear from 1e-4 to 0.02 at T=1000, scaled by 1000/T (Ho et al. 2020)"),
    "quadratic": (_sqrt_linear(LINEAR_BETAS), "√β linear from √1e-4 to √0.02 at T=1000, scaled by 1000/T "
                                              "(Ho et al. 2020, released code)"),
    "scaled_linear": (_sqrt_linear(SCALED_LINEAR_BETAS), "√β linear from √0.00085 to √0.012 at T=1000, scaled "
                                                         "by 1000/T (Stable Diffusion)"),
    "sigmoid_beta": (_sigmoid_beta, "β = sigmoid(linspace(−6, 6)) between 1e-4 and 0.02 at T=1000 (GeoDiff)"),
    "cosine": (_cosine, "ᾱ = cos² curve with s = 0.008, β clipped at 0.999 (Nichol & Dhariwal 2021)"),
    "sigmoid": (_sigmoid, "ᾱ = a sigmoid curve, start −3, end 3, τ = 1 (Chen 2023)"),
}


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

def _lookup(name, T, options):
    if name not in SCHEDULES:
        raise ScheduleError(f"unknown schedule {name!r}; choose one of: {', '.join(SCHEDULES)}")
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
        raise ScheduleError(f"T must be an integer >= 1, got {T!r}")
    fn = SCHEDULES[name][0]
    allowed = list(inspect.signature(fn).parameters)[1:]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ScheduleError(f"schedule {name!r} has no option {', '.join(unknown)}; its options are: "
                            f"{', '.join(allowed) or 'none'}")
    return fn(int(T), **options)


def make_schedule(name, T=REFERENCE_T, *, zero_terminal_snr=False, warn=True, **options):
    """The Schedule `name` with T steps, optionally rescaled to zero terminal SNR (Lin et al. 2023).

    options are the named schedule's own (e.g. beta_start, beta_end for linear; s for cosine). Warns with
    PriorTermWarning when the schedule ends so far from noise that the prior term is not negligible.
    """
    betas, _ = _lookup(name, T, options)
    _check_betas(np.asarray(betas), name)
    if zero_terminal_snr:
        alpha_bar = rescale_zero_terminal_snr(np.cumprod(1.0 - betas))
        betas = betas_from_alpha_bar(alpha_bar)
        betas[0] = 1.0 - alpha_bar[0]  # α_0 = ᾱ_0 (Lin et al. 2023, Alg. 1)
    schedule = from_betas(betas, name, zero_terminal_snr=zero_terminal_snr, options=options)
    if warn and schedule.prior_kl > PRIOR_KL_WARN:
        warnings.warn(f"schedule {name} at T={T} ends at alpha_bar={schedule.alpha_bar[-1]:.4g}: the prior term "
                      f"KL(q(x_T|x_0) || N(0, I)) is {schedule.prior_kl:.3g} nats per dimension for unit-variance "
                      f"data, not negligible (use more steps, another schedule or zero_terminal_snr=True)",
                      PriorTermWarning, stacklevel=2)
    return schedule


def log_snr_continuous(name, u, T=REFERENCE_T, *, zero_terminal_snr=False, **options):
    """λ(u) = log ᾱ(u) − log(1 − ᾱ(u)) for u ∈ [0, 1], the continuous-time log-SNR (Kingma et al. 2021).

    For the cosine schedule without the offset s this is λ(u) = −2 log tan(πu/2) (REFERENCE.md). λ is +∞ at
    u = 0 (no noise) and −∞ at u = 1 with zero terminal SNR.
    """
    u = np.asarray(u, dtype=np.float64)
    if np.any((u < 0) | (u > 1)):
        raise ScheduleError("u must lie in [0, 1]")
    _, log_alpha_bar_fn = _lookup(name, T, options)
    if zero_terminal_snr:
        log_alpha_bar_fn = _log_alpha_bar_zero_terminal(log_alpha_bar_fn)
    log_alpha_bar = log_alpha_bar_fn(u)
    with np.errstate(divide="ignore"):
        return log_alpha_bar - np.log(-np.expm1(log_alpha_bar))


# --- timestep spacing for sampling with fewer steps -----------------------------------------------------------

SPACINGS = ("linspace", "leading", "trailing", "karras")  # Lin et al. 2023, Table 2; Karras et al. 2022
KARRAS_RHO = 7.0  # Karras et al. 2022, eq. (5) and Table 1


def timestep_spacing(T, num_steps, spacing="linspace", offset=0, alpha_bar=None):
    """The descending training timesteps a sampler visits when it takes num_steps ≤ T steps.

    linspace: round(linspace(0, T−1, n)); leading: 0, T//n, 2T//n, … (+ offset); trailing: round(T − k T/n) − 1.
    With T = 1000, n = 10: [999, 888, …, 0], [900, 800, …, 0], [999, 899, …, 99] (REFERENCE.md).
    karras (needs alpha_bar): the timesteps nearest to Karras et al.'s σ grid, eq. (5), with σ = √((1 − ᾱ)/ᾱ):
    dense where σ is small, the grid on which an ODE solver's error is even (at most n steps, repeats merged).
    """
    if spacing not in SPACINGS:
        raise ScheduleError(f"unknown timestep spacing {spacing!r}; choose one of: {', '.join(SPACINGS)}")
    if not 1 <= num_steps <= T:
        raise ScheduleError(f"the number of sampling steps must be between 1 and T={T}, got {num_steps}")
    if spacing == "karras":
        return _karras_timesteps(np.asarray(alpha_bar, dtype=np.float64), num_steps)
    if spacing == "linspace":
        steps = np.round(np.linspace(0, T - 1, num_steps))
    elif spacing == "leading":
        steps = np.arange(num_steps) * (T // num_steps) + offset
    else:
        steps = np.round(np.arange(T, 0, -T / num_steps))[::-1] - 1
    steps = steps.astype(np.int64)
    if steps.min() < 0 or steps.max() > T - 1 or len(np.unique(steps)) != num_steps:
        raise ScheduleError(f"{spacing} spacing with offset {offset} gives timesteps outside 0..{T - 1}")
    return steps[::-1].copy()


def _karras_timesteps(alpha_bar, n):
    """σ_i = (σ_max^{1/ρ} + i/(n−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, each mapped to the t of nearest log σ."""
    with np.errstate(divide="ignore"):
        log_sigma = 0.5 * (np.log1p(-alpha_bar) - np.log(alpha_bar))  # increasing in t; +∞ at zero SNR
    finite = np.flatnonzero(np.isfinite(log_sigma))
    if n == 1 or len(finite) < 2:
        return np.array([len(alpha_bar) - 1])
    lo, hi = np.exp(log_sigma[finite[0]] / KARRAS_RHO), np.exp(log_sigma[finite[-1]] / KARRAS_RHO)
    for m in range(n, len(alpha_bar) + 1):  # a finer grid until n distinct timesteps are reached
        target = KARRAS_RHO * np.log(hi + np.linspace(0, 1, m) * (lo - hi))  # log σ_i, descending
        right = np.clip(np.searchsorted(log_sigma[finite], target), 1, len(finite) - 1)
        nearer_left = target - log_sigma[finite][right - 1] < log_sigma[finite][right] - target
        steps = np.unique(np.append(finite[right - nearer_left], len(alpha_bar) - 1))  # always start at T − 1
        if len(steps) >= n:
            break
    while len(steps) < n:  # n close to T: fill the widest gap in log σ that still has a timestep inside
        gaps = np.where(np.diff(steps) > 1, np.diff(log_sigma[steps]), -np.inf)
        i = int(np.argmax(gaps))
        steps = np.insert(steps, i + 1, (steps[i] + steps[i + 1]) // 2)
    steps = steps[::-1]
    return np.delete(steps, range(1, 1 + len(steps) - n))  # an overshoot: drop the steps next to T − 1
