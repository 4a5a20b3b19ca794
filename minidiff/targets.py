"""What the network predicts: seven re-parameterisations of one posterior mean, and how to weight their losses.

Every target is a fixed linear combination of the clean data x_0 and the noise ε (the post's "two orthogonal
dimensions"), with coefficients that depend on t only. Writing s_t = √ᾱ_t and σ_t = √(1 − ᾱ_t), so that
x_t = s_t x_0 + σ_t ε:

    eps    ε                                  Ho et al. 2020, eq. (12)
    x0     x_0                                the post's x0- ("sample"-) prediction
    v      s_t ε − σ_t x_0                    Salimans & Ho 2022, §4 (the post writes √α_t; the standard is √ᾱ_t)
    score  −ε / σ_t  = ∇ log q(x_t | x_0)     Song et al. 2021, eq. (3)
    mu     μ̃_t = coef_x0 x_0 + coef_xt x_t   post eq. (8)
    flow   ε − x_0                            Liu et al. 2023; Lipman et al. 2023 (the velocity dz/dτ)
    edm    (σ_t x_0 − σ_d² s_t ε) / (σ_d r_t) Karras et al. 2022, Table 1 (F*; r_t = √(σ_t² + σ_d² s_t²))

flow is the velocity of the interpolant z_τ = (1 − τ) x_0 + τ ε = x_t / (s_t + σ_t), τ = σ_t / (s_t + σ_t), which
every schedule is after that rescale (the rectified_flow schedule's own, τ = u); edm is EDM's F-target for data of
standard deviation σ_d, written 'edm:sigma_data=0.57' (plain 'edm': the paper's σ_d = 0.5). Both are derived in
preconditioning.py. Given x_t, any one prediction fixes both x0_hat and eps_hat (`to_x0_eps`), hence the posterior
mean μ_θ — so all seven give "the same analytic mean" (post, §Training Objective). What differs is the scale of the target and how
an error in it maps to an error in x_0 (`mse_factor`): at fixed x_t, ‖X − X̂‖² = k_X · ‖x_0 − x0_hat‖².

Loss weightings are written in x_0-space (the convention of Salimans & Ho 2022 and Hang et al. 2023): a
weighting w_x0(SNR) on ‖x_0 − x0_hat‖² becomes w_x0 / k_X on target X. The `elbo` weighting instead makes the
loss equal to the KL terms of the bound, and `uniform` is the target's own plain MSE.
"""
import re

import numpy as np

from minidiff import options, preconditioning, timesteps, weightings
from minidiff.forward import posterior_variance
from minidiff.schedules import at

TARGETS = ("eps", "x0", "v", "score", "mu", "flow", "edm")
ALIASES = {"epsilon": "eps", "sample": "x0", "v_prediction": "v",  # diffusers' prediction_type names
           "flow_prediction": "flow", "karras": "edm"}  # diffusers' flow_prediction; k-diffusion's Denoiser scalings
TARGET_OPTIONS = {name: {} for name in TARGETS} | {"edm": {"sigma_data": preconditioning.EDM_SIGMA_DATA}}
WEIGHTINGS = ("uniform", "elbo", "snr", "trunc-snr", "min-snr") + tuple(weightings.WEIGHTING_OPTIONS)
MIN_SNR_GAMMA = 5.0  # Hang et al. 2023, §4: γ = 5


def parse_target(spec):
    """(name, σ_d) of a target spec: 'edm' or 'edm:sigma_data=0.57', another target or one of its aliases
    (σ_d is EDM's 0.5 where the spec does not give it, and unused by the other targets)."""
    name, values = options.parse(spec, TARGET_OPTIONS, "target", ALIASES)
    sigma_data = values.get("sigma_data", preconditioning.EDM_SIGMA_DATA)
    if not (np.isfinite(sigma_data) and sigma_data > 0):
        raise ValueError(f"target edm needs sigma_data > 0, got {sigma_data}")
    return name, sigma_data


def canonical_target(name):
    """The canonical spec of `name`: the target's own name for an alias, 'edm:sigma_data=…' only off σ_d = 0.5."""
    name, sigma_data = parse_target(name)
    return options.spec(name, {"sigma_data": sigma_data}, TARGET_OPTIONS[name])


def check_identifiable(name, alpha_bar):
    """A ValueError for an eps or score model asked for x0_hat where ᾱ = 0 (zero SNR): there x_t = ε carries nothing
    of x_0, and x0_hat = (x_t − √(1 − ᾱ) ε_hat)/√ᾱ divides by zero (Lin et al. 2023, §3.2). v and x0 are defined."""
    if canonical_target(name) in ("eps", "score") and alpha_bar == 0:
        raise ValueError(f"an {name}-prediction model is undefined at zero terminal SNR (zero SNR): x_0 cannot be "
                         f"recovered from ε where ᾱ = 0 (Lin et al. 2023, §3.2); use a target defined there "
                         f"(x0, v, mu, flow or edm)")


def make_target(name, schedule, x0, eps, t):
    """The regression target of `name` for x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (table above)."""
    name, sigma_data = parse_target(name)
    alpha_bar = at(schedule.alpha_bar, t, x0)
    if name == "eps":
        return eps
    if name == "x0":
        return x0
    if name == "v":
        return np.sqrt(alpha_bar) * eps - np.sqrt(1.0 - alpha_bar) * x0  # Salimans & Ho 2022, §4
    if name == "score":
        return -eps / np.sqrt(1.0 - alpha_bar)  # ∇_{x_t} log q(x_t | x_0)
    if name == "flow":
        return eps - x0  # dz/dτ of z_τ = (1 − τ) x_0 + τ ε
    if name == "edm":
        a, b = preconditioning.edm_target_coefficients(alpha_bar, sigma_data)
        return a * x0 + b * eps  # F* = (x_0 − c_skip x̂) / c_out (Karras et al. 2022, Table 1)
    x_t = np.sqrt(alpha_bar) * x0 + np.sqrt(1.0 - alpha_bar) * eps
    return at(schedule.coef_x0, t, x0) * x0 + at(schedule.coef_xt, t, x0) * x_t  # post eq. (8)


def to_x0_eps(name, schedule, prediction, x_t, t):
    """(x0_hat, eps_hat) implied by a prediction of target `name` at x_t: invert the target's row of the table.

    Defined everywhere except eps and score at zero SNR (ᾱ = 0), where x_t carries no information about x_0
    and x0_hat = (x_t − σ ε̂)/s divides by s = 0 (Lin et al. 2023, §3.2: use v or x0 there).
    """
    name, sigma_data = parse_target(name)
    alpha_bar = at(schedule.alpha_bar, t, x_t)
    s, sigma = np.sqrt(alpha_bar), np.sqrt(1.0 - alpha_bar)
    if name == "v":  # Salimans & Ho 2022, eqs. in §4 and App. D
        return s * x_t - sigma * prediction, s * prediction + sigma * x_t
    if name == "flow":  # x_t = s x_0 + σ ε with ε = x_0 + u, solved for x_0 and ε
        return (x_t - sigma * prediction) / (s + sigma), (x_t + s * prediction) / (s + sigma)
    if name == "x0":
        x0_hat = prediction
    elif name == "edm":  # D = c_skip x̂ + c_out F (Karras et al. 2022, Table 1), on x_t (preconditioning.on_x_t)
        c_skip, c_out, _ = preconditioning.on_x_t(alpha_bar, sigma_data)
        x0_hat = c_skip * x_t + c_out * prediction
    elif name == "mu":  # post eq. (8) solved for x_0
        x0_hat = (prediction - at(schedule.coef_xt, t, x_t) * x_t) / at(schedule.coef_x0, t, x_t)
    else:
        eps_hat = prediction if name == "eps" else -sigma * prediction  # score = −ε / σ
        return (x_t - sigma * eps_hat) / s, eps_hat  # Ho et al. 2020, eq. (4) solved for x_0
    return x0_hat, (x_t - s * x0_hat) / sigma


def predicted_mean(name, schedule, prediction, x_t, t, clip=None):
    """μ_θ(x_t, t): the posterior mean (post eq. 8) with x_0 replaced by the prediction's x0_hat.

    clip=c clips x0_hat to [−c, c] first (Ho et al. 2020's sampler does this for images in [−1, 1]).
    """
    x0_hat, _ = to_x0_eps(name, schedule, prediction, x_t, t)
    if clip is not None:
        x0_hat = np.clip(x0_hat, -clip, clip)
    return at(schedule.coef_x0, t, x_t) * x0_hat + at(schedule.coef_xt, t, x_t) * x_t


# --- how an error in each target relates to an error in x_0 and in μ ------------------------------------------

def mse_factor(name, schedule, t):
    """k_X(t) with ‖X − X̂‖² = k_X ‖x_0 − x0_hat‖² at fixed x_t (docs/derivation.md, eq. (8g)).

    From the table: at fixed x_t, dε/dx_0 = −s/σ, so eps: SNR; x0: 1; v: 1 + SNR; score: SNR / (1 − ᾱ);
    mu: coef_x0²; flow: (1 + √SNR)²; edm: 1/c_out² = SNR + σ_d⁻² (preconditioning.py).
    """
    name, sigma_data = parse_target(name)
    snr, alpha_bar = schedule.snr[t], schedule.alpha_bar[t]
    return {"eps": snr, "x0": np.ones_like(snr), "v": 1.0 + snr, "score": snr / (1.0 - alpha_bar),
            "mu": schedule.coef_x0[t] ** 2, "flow": (1.0 + np.sqrt(snr)) ** 2, "edm": snr + sigma_data ** -2}[name]


def mean_coefficient(name, schedule, t):
    """c_X(t) = |∂μ_θ/∂X| at fixed x_t, so that ‖μ̃ − μ_θ‖² = c_X² ‖X − X̂‖².

    eps: β / (√α σ) (Ho et al. 2020, eq. 11); score: β / √α; x0: coef_x0; v: coef_x0 σ; mu: 1;
    flow: coef_x0 σ / (s + σ); edm: coef_x0 c_out.
    """
    name, sigma_data = parse_target(name)
    betas, alphas, sigma = schedule.betas[t], schedule.alphas[t], np.sqrt(1.0 - schedule.alpha_bar[t])
    coef_x0, c_out = schedule.coef_x0[t], preconditioning.on_x_t(schedule.alpha_bar[t], sigma_data)[1]
    with np.errstate(divide="ignore"):
        return {"eps": betas / (np.sqrt(alphas) * sigma), "score": betas / np.sqrt(alphas), "x0": coef_x0,
                "v": coef_x0 * sigma, "mu": np.ones_like(betas), "edm": coef_x0 * c_out,
                "flow": coef_x0 * sigma / (np.sqrt(schedule.alpha_bar[t]) + sigma)}[name]


# --- loss weightings ------------------------------------------------------------------------------------------
# Each snr-family weighting is a function of SNR on the x_0-MSE, given twice: as w_x0(SNR) and as
# w_eps(SNR) = w_x0(SNR) / SNR, the same weight on the ε-MSE, written so that it stays finite at SNR = 0.

def _x0_and_eps_forms(name, snr, gamma):
    with np.errstate(divide="ignore"):
        inv_snr = 1.0 / snr
    if name == "snr":  # the ε-MSE itself (Ho et al. 2020's L_simple)
        return snr, np.ones_like(snr)
    if name == "trunc-snr":  # Salimans & Ho 2022, §4: max(SNR, 1)
        return np.maximum(snr, 1.0), np.maximum(1.0, inv_snr)
    return np.minimum(snr, gamma), np.minimum(1.0, gamma * inv_snr)  # Hang et al. 2023, eq. (9): min(SNR, γ)


def parse_weighting(weighting, gamma=None):
    """('min-snr', 5.0) from 'min-snr', 'min-snr-5' or 'min-snr-γ=5'; other names pass through with gamma None,
    those of weightings.py as their canonical spec ('p2:gamma=0.5', 'edm:sigma_data=0.57')."""
    match = re.fullmatch(r"min-snr(?:-(?:γ=|gamma=)?([0-9.eE+-]+))?", weighting)
    if match:
        value = float(match.group(1)) if match.group(1) else (MIN_SNR_GAMMA if gamma is None else gamma)
        if not value > 0:
            raise ValueError(f"min-snr needs γ > 0, got {value}")
        return "min-snr", value
    if weighting in WEIGHTINGS:
        return weighting, None
    if weighting.partition(":")[0] in tuple(weightings.WEIGHTING_OPTIONS) + tuple(weightings.ALIASES):
        return weightings.canonical(weighting), None
    raise ValueError(f"unknown weighting {weighting!r}; choose one of: {', '.join(WEIGHTINGS)} "
                     f"(min-snr takes γ as min-snr-5; p2, sigmoid and edm take options as p2:k=1,gamma=0.5)")


def loss_weight(weighting, target, schedule, *, gamma=None, variance="beta_tilde"):
    """w_X(t), t = 0 … T−1: the weight on ‖X − X̂‖² (a sum over dimensions) for target X.

    uniform:   1 — the target's plain MSE.
    elbo:      T c_X² / (2σ_t²): w_X ‖X − X̂‖² = T · KL(q(x_{t-1}|x_t, x_0) ‖ p_θ(x_{t-1}|x_t)), so the loss
               with t ~ U{0..T−1} is an unbiased estimate of Σ_t L_{t-1}; at t = 0 it is the decoder's squared
               error term with σ_0² as `posterior_variance` sets it.
    snr, trunc-snr, min-snr-γ:  w_x0(SNR) / k_X (docs/derivation.md, eq. (8g); Hang et al. 2023, eq. 9).
    edm, p2, sigmoid:  the same, with weightings.py's w_x0; learned: 1 (its e^(−u) is applied in the loss).
    """
    name, gamma = parse_weighting(weighting, gamma)
    spec, (target, sigma_data) = target, parse_target(target)
    t = np.arange(schedule.T)
    if name in ("uniform", "learned"):
        return np.ones(schedule.T)
    if name == "elbo":  # post: KL = ‖μ̃ − μ_θ‖² / (2σ_q²) + const; Ho et al. 2020, eq. (8)
        with np.errstate(over="ignore"):
            return schedule.T * mean_coefficient(spec, schedule, t) ** 2 / (2 * posterior_variance(schedule, variance))
    w_x0, w_eps = (_x0_and_eps_forms(name, schedule.snr, gamma) if name in ("snr", "trunc-snr", "min-snr")
                   else weightings.x0_and_eps_forms(name, schedule))
    snr, one_minus_alpha_bar = schedule.snr, 1.0 - schedule.alpha_bar
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"eps": w_eps, "score": w_eps * one_minus_alpha_bar, "x0": w_x0, "v": w_x0 / (1.0 + snr),
                "mu": w_x0 / schedule.coef_x0 ** 2, "flow": w_x0 / (1.0 + np.sqrt(snr)) ** 2,
                "edm": w_x0 / (snr + sigma_data ** -2)}[target]


def implied_weighting(weighting, target, schedule, t_sampling="uniform", *, uncertainty=None, **options):
    """(λ_t, w(λ_t)): the weighting function of Kingma & Gao 2023 that the (target, weighting, time sampler)
    triple implies.

    The training loss E_t[w_X ‖X − X̂‖²] with t uniform equals ½ E_u[w(λ) (−dλ/du) ‖ε − ε̂‖²] (Kingma & Gao
    2023, eq. 7) when w(λ_t) = 2 w_X(t) k_X(t) / (SNR_t · (−dλ/du)), u_t = (t+1)/T. A sampler that changes the
    objective (timesteps.py: logit-normal, mode, cosmap, log-normal) multiplies it by T p(t); the importance
    samplers leave it as it is. The learned weighting needs its trained u(λ_t) as `uncertainty` (T,): e^(−u).
    The `elbo` weighting gives w ≈ 1 (the bound itself); ε with `uniform` gives w ∝ sech(λ/2) on the cosine
    schedule; flow on rectified_flow gives e^(−λ/2). Entries where λ = −∞ (zero terminal SNR) are NaN.
    """
    w_target = loss_weight(weighting, target, schedule, **options)
    if parse_weighting(weighting)[0] == "learned":
        if uncertainty is None:
            raise ValueError("the learned weighting's w(λ) is e^(−u(λ)) of a trained run: give uncertainty=u_t")
        w_target = w_target * np.exp(-np.asarray(uncertainty, dtype=np.float64))
    finite, slope = np.isfinite(schedule.log_snr), weightings.log_snr_slope(schedule)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = 2 * w_target * mse_factor(target, schedule, np.arange(schedule.T)) / (schedule.snr * slope)
    distribution = timesteps.time_distribution(t_sampling, schedule.alpha_bar)
    if distribution is not None and not distribution[1]:
        w = w * schedule.T * distribution[0]
    return schedule.log_snr, np.where(finite, w, np.nan)
