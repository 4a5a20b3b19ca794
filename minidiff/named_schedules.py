"""The named noise schedules: how each sets the noise of every step.

Two families of schedules are in use, and both are here:
- β-space schedules fix the per-step noise β_t (linear, quadratic, scaled_linear, sigmoid_beta);
- ᾱ-space schedules fix a continuous curve ᾱ(u), u ∈ [0, 1], and read β off it (cosine, sigmoid, rectified_flow).
Each is a pair: the discrete β_t, t = 0 … T−1, and the continuous log ᾱ(u), u ∈ [0, 1], whose samples at
u = (t+1)/T it follows (exactly for ᾱ-space schedules, in the limit of many steps for β-space ones, where the
per-step β_t becomes a rate T·β(u) and log ᾱ(u) = −∫_0^u T·β(s) ds). The continuous curve gives each schedule a
continuous-time log-SNR λ(u) (`schedules.log_snr_continuous`), the view of Kingma et al. 2021 in which the weighting
of a loss is a function w(λ). `schedules.make_schedule` turns a name into a Schedule.
"""
import inspect

import numpy as np

from minidiff.errors import UsageError

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


class ScheduleError(UsageError):
    """An unknown schedule name or an invalid schedule value."""


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


def _rectified_flow(T):
    """Liu et al. 2023; Lipman et al. 2023; Esser et al. 2024, §2: z_u = (1 − u) x_0 + u ε, u = (t+1)/T.

    In the variance-preserving form x_t = z_u / √((1 − u)² + u²): ᾱ(u) = (1 − u)² / ((1 − u)² + u²), and the
    log-SNR is λ(u) = 2 log((1 − u)/u). At u = 1 (t = T−1) ᾱ = 0: the schedule ends at pure noise, as
    diffusers' FlowMatchEulerDiscreteScheduler does (its sigmas are u = T/T … 1/T).
    """
    def log_alpha_bar(u):
        with np.errstate(divide="ignore"):
            return 2 * np.log1p(-u) - np.log((1 - u) ** 2 + u ** 2)
    return _from_continuous(log_alpha_bar, T, max_beta=1.0)


SCHEDULES = {
    "linear": (_linear, "β linear from 1e-4 to 0.02 at T=1000, scaled by 1000/T (Ho et al. 2020)"),
    "quadratic": (_sqrt_linear(LINEAR_BETAS), "√β linear from √1e-4 to √0.02 at T=1000, scaled by 1000/T "
                                              "(Ho et al. 2020, released code)"),
    "scaled_linear": (_sqrt_linear(SCALED_LINEAR_BETAS), "√β linear from √0.00085 to √0.012 at T=1000, scaled "
                                                         "by 1000/T (Stable Diffusion)"),
    "sigmoid_beta": (_sigmoid_beta, "β = sigmoid(linspace(−6, 6)) between 1e-4 and 0.02 at T=1000 (GeoDiff)"),
    "cosine": (_cosine, "ᾱ = cos² curve with s = 0.008, β clipped at 0.999 (Nichol & Dhariwal 2021)"),
    "sigmoid": (_sigmoid, "ᾱ = a sigmoid curve, start −3, end 3, τ = 1 (Chen 2023)"),
    "rectified_flow": (_rectified_flow, "x_t ∝ (1 − u) x_0 + u ε, u = (t+1)/T, ending at pure noise "
                                        "(Liu et al. 2023; Esser et al. 2024)"),
}


def check_name(name):
    """`name`, if it is one of SCHEDULES; a ScheduleError naming them otherwise."""
    if name not in SCHEDULES:
        raise ScheduleError(f"unknown schedule {name!r}; choose one of: {', '.join(SCHEDULES)}")
    return name


# --- the log-SNR shift ----------------------------------------------------------------------------------------

def shifted(alpha_bar, shift):
    """ᾱ' = sigmoid(λ − 2 log s) for λ = log(ᾱ / (1 − ᾱ)): the same schedule moved along λ (schedules.py's
    docstring: SD3's time shift, Esser et al. 2024, eqs. 23–24).

    Written as ᾱ' = ᾱ / (ᾱ + s² (1 − ᾱ)), which keeps ᾱ = 0 at 0 and needs no logarithm.
    """
    alpha_bar = np.asarray(alpha_bar, dtype=np.float64)
    return alpha_bar / (alpha_bar + shift ** 2 * (1.0 - alpha_bar))


MAX_SHIFT = 1e6  # λ moved by at most 2 log 1e6 ≈ 27.6 either way: beyond it ᾱ is 0 or 1 to double precision


def check_shift(shift):
    if isinstance(shift, bool) or not isinstance(shift, (int, float, np.floating, np.integer)) \
            or not (np.isfinite(shift) and 1 / MAX_SHIFT <= shift <= MAX_SHIFT):
        raise ScheduleError(f"the log-SNR shift must be a number between {1 / MAX_SHIFT:g} and {MAX_SHIFT:g} "
                            f"(1: no shift), got {shift!r}")


def lookup(name, T, options):
    """(β_t, log ᾱ(u)) of the schedule `name` with T steps and its own options; a ScheduleError for an unknown
    name or option, or a T that is not an integer >= 1."""
    check_name(name)
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
        raise ScheduleError(f"T must be an integer >= 1, got {T!r}")
    fn = SCHEDULES[name][0]
    allowed = list(inspect.signature(fn).parameters)[1:]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ScheduleError(f"schedule {name!r} has no option {', '.join(unknown)}; its options are: "
                            f"{', '.join(allowed) or 'none'}")
    return fn(int(T), **options)
