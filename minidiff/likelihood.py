"""The exact likelihood of the probability-flow ODE (Song et al. 2021, SDE paper, eq. 13 and App. D).

The ODE. Write the noise level as an angle φ ∈ (0, π/2], cos φ = √ᾱ, sin φ = √(1−ᾱ), so x_φ = cos φ x_0 + sin φ ε.
The probability-flow ODE moves x_φ deterministically so that its law stays q_φ; with the model's (x0_hat, eps_hat)

    dx/dφ = v̂ = cos φ eps_hat − sin φ x0_hat                      (Salimans & Ho 2022, §4 and App. D: v is dx/dφ)

This is the ODE that sample.py integrates with Heun in Karras et al.'s variables y = x / cos φ, σ = tan φ:
dy/dσ = cos² φ (v̂ / cos φ + x sin φ / cos² φ) = cos φ v̂ + sin φ x = eps_hat, using x = cos φ x0_hat + sin φ
eps_hat (Karras et al. 2022, eq. 4 and Table 1). The angle is the same ODE in variables that stay finite at both
ends, including ᾱ = 0 (zero terminal SNR: σ = ∞ but φ = π/2), which is why the likelihood uses it.

The likelihood. Along the flow the log-density changes by the instantaneous change of variables (Chen et al.
2018, Thm. 1): d log p(x_φ)/dφ = −tr(∂v̂/∂x), so with the prior at the noise end φ_1

    log p(x_{φ_0}) = log N(x_{φ_1}; 0, I) + ∫_{φ_0}^{φ_1} tr(∂v̂/∂x) dφ        (Song et al. 2021, App. D.2)

v̂ = a P + b x is linear in the model's prediction P of any target (targets.to_x0_eps), so the trace is
a tr(∂P/∂x) + b D, with tr(∂P/∂x) exact: the model's own `jacobian_trace` where it has one (the oracle's is
analytic), else D vector-Jacobian products by autograd (fine in the low dimensions of toy data).

The ends and the time between steps.
- Noise end: φ_1 = φ_{T−1}, where the samplers start from N(0, I). If ᾱ_{T−1} > 0 the prior does not match
  q_{T−1}; that mismatch is part of this model, as L_T is part of the bound.
- Data end: φ_0 = φ at t = 0, the least noise the network was trained on; below it the network is never
  evaluated. The model's x_0 is y = x_{φ_0} / cos φ_0, so log p(x_0) = log p(x_{φ_0} = cos φ_0 x_0) + D log cos φ_0:
  the density of the data blurred by N(0, tan² φ_0 I) (tan φ_0 = 0.01 for linear, T = 1000).
- Between steps φ is linear in t (`schedules.between_steps`): finite everywhere, and the oracle's answers depend
  on ᾱ only, so for the oracle the choice cancels; a network is evaluated at fractional t (train.model_fn's time
  input is interpolated).
"""
import dataclasses

import numpy as np
from autograd import make_vjp

from minidiff.errors import RunError

from minidiff.elbo import check_terminal_snr, log_scale, standardized
from minidiff.schedules import between_steps, step_angles, timestep_at
from minidiff.targets import canonical_target, to_x0_eps

LOG_2PI = np.log(2.0 * np.pi)
RTOL, ATOL = 1e-5, 1e-5  # default tolerances of the ODE solver, per component of (x, ∫ tr)
MAX_STEPS = 2_000  # steps tried, accepted or rejected: ~10× what a trained model needs (~200 at rtol = atol = 1e-5)
MIN_STEP = 1e-12  # of the interval: a step size below it has collapsed (a right-hand side too steep to follow)
# Step-size control, Hairer, Nørsett & Wanner 1993, §II.4, eqs. (4.12)–(4.13): a safety factor and bounds on
# how much one step may shrink or grow the next.
SAFETY, FAC_MIN, FAC_MAX = 0.9, 0.2, 5.0
ERROR_ORDER = 5  # h ∝ err^(−1/5): the error estimate of a 5(4) pair is O(h^5)


# --- the velocity and its divergence --------------------------------------------------------------------------

def velocity_coefficients(target, view):
    """(a, b), each (B,), with v̂ = a P + b x for a prediction P of `target`: read off targets.to_x0_eps."""
    n = len(view.alpha_bar)
    rows, ones, zeros = np.arange(n), np.ones((n, 1)), np.zeros((n, 1))
    cos, sin = np.sqrt(view.alpha_bar), np.sqrt(1.0 - view.alpha_bar)
    velocity = []
    for P, x in ((ones, zeros), (zeros, ones)):
        x0_hat, eps_hat = to_x0_eps(target, view, P, x, rows)
        velocity.append((cos[:, None] * eps_hat - sin[:, None] * x0_hat)[:, 0])  # dx/dφ = cos φ ε̂ − sin φ x̂0
    return velocity[0], velocity[1]


def prediction_trace(model, x, t, probes=None):
    """(P, tr ∂P/∂x): the model's prediction at (x, t) and the trace of its Jacobian per row.

    Exactly: `model.jacobian_trace(x, t)` if the model has one; else D vector-Jacobian products by autograd, one per
    output coordinate (rows are independent, so one product with e_d in every row gives every row's ∂P_d/∂x).
    With probes (K, n, D), Hutchinson's estimate instead: the mean over k of z_kᵀ (∂P/∂x) z_k, K products whatever
    D is; unbiased when E[z zᵀ] = I (Rademacher z, Hutchinson 1990), as FFJORD does (Grathwohl et al. 2019, §3.1).
    """
    if hasattr(model, "jacobian_trace") and probes is None:
        return model(x, t), model.jacobian_trace(x, t)
    try:
        vjp, prediction = make_vjp(lambda x_: model(x_, t))(x)
    except (TypeError, ValueError) as error:
        if probes is not None and hasattr(model, "jacobian_trace"):
            raise TypeError(f"Hutchinson's probes need a model autograd can differentiate ({error}); this one has an "
                            f"exact jacobian_trace: use probes=0") from None
        raise TypeError(f"the model cannot be differentiated by autograd with respect to x_t ({error}); give it a "
                        f"jacobian_trace(x_t, t) method, or use likelihood.network_model for a trained run") from None
    trace = np.zeros(len(x))
    if probes is not None:
        for z in probes:
            trace += np.sum(vjp(z) * z, axis=1) / len(probes)
        return np.asarray(prediction), trace
    for d in range(x.shape[1]):
        unit = np.zeros_like(x)
        unit[:, d] = 1.0
        trace += vjp(unit)[:, d]
    return np.asarray(prediction), trace


def network_model(params, problem, config):
    """A trained run's network as model(x_t, t) that autograd can differentiate with respect to x_t.

    The same network as train.model_fn (nn.apply on train.time_inputs), in float64: model_fn's casts go through
    np.asarray, which stops autograd's trace. The params are cast once; outputs agree with model_fn to fp32 round-off.
    x_t and the prediction are host arrays; the network runs on the device in use, x_t crossing to it and the
    prediction back by the traced transfers of backend.py, so the gradient makes the same trip in reverse.
    """
    from minidiff import nn  # imported here: the likelihood of a mixture's oracle needs no network code
    from minidiff.accel.backend import to_device, to_numpy, transfer_to_device, transfer_to_host
    from minidiff.train import input_scale_at, time_inputs
    params64 = {key: to_device(np.asarray(to_numpy(value), dtype=np.float64)) for key, value in params.items()}

    def model(x_t, t):
        t = np.broadcast_to(t, (len(x_t),))
        time = time_inputs(problem.schedule, config.time_input, t)
        x_in = x_t * input_scale_at(problem, t)  # c_in x_t for the edm target, as train.model_fn
        return transfer_to_host(nn.apply(params64, transfer_to_device(x_in), to_device(time)))
    return model


# --- the solver: Dormand–Prince 5(4) ---------------------------------------------------------------------------
# Dormand & Prince 1980, RK5(4)7M (Hairer, Nørsett & Wanner 1993, §II.5, Table 5.2): nodes c, stages A, the
# 5th-order weights B (also the last stage row: "first same as last") and E = B − B̂, B̂ the embedded 4th order.
DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
DP_A = ((), (1 / 5,), (3 / 40, 9 / 40), (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84))
DP_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)


def _error_norm(delta, y_old, y_new, rtol, atol):
    """max over rows of the RMS of delta / (atol + rtol max(|y_old|, |y_new|)) (Hairer et al., eq. II.4.11)."""
    scale = atol + rtol * np.maximum(np.abs(y_old), np.abs(y_new))
    return float(np.max(np.sqrt(np.mean((delta / scale) ** 2, axis=1))))


def _initial_step(f, s0, y0, f0, rtol, atol, direction):
    """Hairer et al. 1993, §II.4, "Starting step size" (its constants as printed): from ‖y0‖, ‖f0‖ and a trial
    Euler step, h = (0.01 / max(‖f0‖, ‖f'‖))^(1/5), at most 100 times the trial step."""
    norm = lambda v: _error_norm(v, y0, y0, rtol, atol)  # noqa: E731
    d0, d1 = norm(y0), norm(f0)
    h0 = 1e-6 if min(d0, d1) < 1e-5 else 0.01 * d0 / d1
    d2 = norm(f(s0 + direction * h0, y0 + direction * h0 * f0) - f0) / h0
    h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** (1 / ERROR_ORDER)
    return min(100 * h0, h1)


class SolverError(RunError):
    """The ODE solver could not reach the end: a non-finite right-hand side (a diverged model), or too many steps."""


def solve_ode(f, s0, s1, y0, *, rtol=RTOL, atol=ATOL, max_steps=MAX_STEPS, progress=None):
    """y(s1) for dy/ds = f(s, y), y(s0) = y0 of shape (B, M), by adaptive Dormand–Prince 5(4).

    One step size for all rows; a step is accepted when every row's scaled error is ≤ 1. progress(fraction)
    is called with the fraction of [s0, s1] covered by each accepted step. Returns (y1, evaluations, steps).
    The work is bounded: at most max_steps steps are tried, rejected ones included; a NaN or Inf from f, or a step
    size below MIN_STEP of the interval, stops the solve at once (rejected steps would only shrink h without end) —
    each a SolverError.
    """
    direction = 1.0 if s1 >= s0 else -1.0
    s, y, k_first = s0, np.array(y0, dtype=np.float64), _finite(f(s0, y0), s0)
    h, evals, steps = _initial_step(f, s0, y, k_first, rtol, atol, direction), 2, 0
    for _ in range(max_steps):
        if direction * (s1 - s) <= 0:
            return y, evals, steps
        if not h >= MIN_STEP * abs(s1 - s0):  # (also catches h = NaN)
            raise SolverError(f"the ODE solver's step size collapsed at φ = {s:.4g} after {steps} steps: the "
                              f"model's velocity is too steep to follow (has it diverged?)")
        h = min(h, abs(s1 - s))
        k = [k_first]
        for c, row in zip(DP_C[1:], DP_A[1:]):
            k.append(_finite(f(s + direction * c * h, y + direction * h * sum(a * kj for a, kj in zip(row, k))), s))
        evals += 6
        y_new = y + direction * h * sum(a * kj for a, kj in zip(DP_A[-1], k))  # = the last stage's input
        err = _error_norm(direction * h * sum(e * kj for e, kj in zip(DP_E, k)), y, y_new, rtol, atol)
        if err <= 1.0:
            s, y, k_first, steps = s + direction * h, y_new, k[-1], steps + 1
            if progress is not None:
                progress(h / abs(s1 - s0))
        h *= min(FAC_MAX, max(FAC_MIN, SAFETY * (err + 1e-300) ** (-1 / ERROR_ORDER)))
    if direction * (s1 - s) <= 0:
        return y, evals, steps
    raise SolverError(f"the ODE solver tried {max_steps} steps ({steps} accepted) without reaching the end: the "
                      f"model's velocity is too steep to follow (has it diverged? a healthy model needs a few hundred; "
                      f"else loosen --rtol/--atol)")


def _finite(k, s):
    """k, after checking that the right-hand side is finite at s (else the model has diverged: SolverError)."""
    if not np.all(np.isfinite(k)):
        raise SolverError(f"the probability-flow ODE's velocity is NaN or Inf (at φ = {s:.4g}): the model's "
                          f"predictions are not finite, so its likelihood cannot be computed (has it diverged?)")
    return k


# --- the likelihood ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class FlowNLL:
    """−log p(x_0) under the model's probability-flow ODE, per example and averaged."""

    nats: float  # mean over examples, nats per example
    stderr_nats: float  # standard error of that mean
    bits_per_dim: float  # nats / (D ln 2)
    per_example: np.ndarray  # (n,)
    latent: np.ndarray  # (n, D): x at the noise end φ_{T−1}, in the model's space
    prior_log_prob: np.ndarray  # (n,) log N(latent; 0, I)
    trace_integral: np.ndarray  # (n,) ∫ tr(∂v̂/∂x) dφ from the data end to the noise end
    log_scale: float  # Σ_d log std_d added for standardised data (0 otherwise)
    evaluations: int  # right-hand-side evaluations of the solver
    steps: int  # accepted solver steps


def flow(model, schedule, target, probes=None):
    """f(φ, [x | ℓ]) = [v̂ | tr ∂v̂/∂x]: the probability-flow ODE augmented with the divergence, (B, D+1); with
    probes, the divergence is Hutchinson's estimate with those probes (`prediction_trace`)."""
    target = canonical_target(target)

    def f(phi, state):
        x = state[:, :-1]
        t = np.full(len(x), timestep_at(schedule, phi))
        view = between_steps(schedule, t)
        a, b = velocity_coefficients(target, view)
        prediction, trace = prediction_trace(model, x, t, probes)
        return np.concatenate([a[:, None] * prediction + b[:, None] * x, (a * trace + b * x.shape[1])[:, None]], 1)
    return f


def flow_nll(model, schedule, x0, *, target, rtol=RTOL, atol=ATOL, stats=None, progress=None, probes=0, rng=None):
    """−log p(x_0) of the model's probability-flow ODE, exactly up to the solver's tolerance (module docstring).

    x0 (n, D) is in data space; with a run's standardisation stats the model lives in standardised space and
    Σ log std_d is added (change of variables). progress(fraction) follows the solve.
    probes=K > 0: the divergence by Hutchinson's estimate with K Rademacher probes per example, drawn once from rng
    and kept along the whole solve (the path x_φ does not depend on them, so the log-density of each example is
    unbiased, with a variance that K reduces); for networks in many dimensions, where D products per step are too
    many. 0: exact.
    """
    check_terminal_snr(schedule, target)
    x = standardized(x0, stats)
    n, D = x.shape
    phi = step_angles(schedule)
    if isinstance(probes, bool) or not isinstance(probes, (int, np.integer)) or probes < 0:
        raise ValueError(f"probes must be a whole number >= 0 (0: the exact trace), got {probes!r}")
    if probes and not isinstance(rng, np.random.Generator):
        raise ValueError("Hutchinson's probes are drawn from rng: give a numpy.random.Generator")
    z = rng.choice([-1.0, 1.0], size=(probes, n, D)) if probes else None
    state, evals, steps = solve_ode(flow(model, schedule, target, z), phi[0], phi[-1], np.concatenate(
        [np.cos(phi[0]) * x, np.zeros((n, 1))], axis=1), rtol=rtol, atol=atol, progress=progress)
    latent, trace_integral = state[:, :-1], state[:, -1]
    prior = -0.5 * np.sum(LOG_2PI + latent ** 2, axis=1)  # log N(x; 0, I)
    per_example = -(prior + trace_integral + D * np.log(np.cos(phi[0]))) + log_scale(stats)
    nats = float(np.mean(per_example))
    stderr = float(np.std(per_example, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return FlowNLL(nats, stderr, nats / (D * np.log(2.0)), per_example, latent, prior, trace_integral,
                   log_scale(stats), evals, steps)
