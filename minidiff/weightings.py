"""The newer loss weightings: EDM's, P2, sigmoid, and EDM2's learned uncertainty, each as a function of SNR.

Like the older ones in targets.py, each is given twice — as w_x0 on ‖x_0 − x0_hat‖² and as w_eps = w_x0 / SNR on
‖ε − eps_hat‖² — and targets.loss_weight turns them into the weight of any target (w_x0 / k_X).

    edm       w_x0 = SNR + σ_d⁻²  = EDM's λ(σ) = (σ² + σ_d²) / (σ σ_d)² at σ = e^(−λ/2)   Karras et al. 2022, Table 1
    p2        w_eps = (k + SNR)^(−γ)                                                    Choi et al. 2022, eq. (8)
    sigmoid   w(λ) = sigmoid(b − λ) in the form of Kingma & Gao 2023 (eq. 7): with t uniform the ε-MSE gets
              w_eps = ½ sigmoid(b − λ_t) (−dλ/du)_t, u_t = (t+1)/T, so that the implied weighting is sigmoid(b − λ)
    learned   w = 1 and the loss e^(−u) L + u (Karras et al. 2024, eqs. 14–16) with u(λ) a small function learned
              with the network (train.per_example_loss, nn.uncertainty); at its optimum u* = log E[L | λ]

For the edm target with the edm weighting the weight is 1 — EDM's loss is F's plain MSE. The options travel in
the name: 'edm:sigma_data=0.57', 'p2:k=1,gamma=0.5', 'sigmoid:b=2' (options.py).
"""
import numpy as np

from minidiff import options
from minidiff.preconditioning import EDM_SIGMA_DATA

P2_K, P2_GAMMA = 1.0, 1.0  # Choi et al. 2022, §3.3 and Table 1: k = 1, γ = 1 (γ = 0.5 is their other setting)
SIGMOID_BIAS = 0.0  # b = 0 centres the weighting at SNR = 1; Kingma & Gao 2023, §5, tune b per data set
WEIGHTING_OPTIONS = {"edm": {"sigma_data": EDM_SIGMA_DATA}, "p2": {"k": P2_K, "gamma": P2_GAMMA},
                     "sigmoid": {"b": SIGMOID_BIAS}, "learned": {}}
ALIASES = {"karras": "edm"}  # k-diffusion's name for EDM's weighting


def parse(spec):
    """(name, {option: value}) of one of these weightings; a ValueError for another name or a bad option."""
    name, values = options.parse(spec, WEIGHTING_OPTIONS, "weighting", ALIASES)
    if name == "edm" and not values["sigma_data"] > 0:
        raise ValueError(f"the edm weighting needs sigma_data > 0, got {values['sigma_data']}")
    if name == "p2" and not (values["k"] > 0 and values["gamma"] >= 0):
        raise ValueError(f"p2 needs k > 0 and gamma >= 0, got k={values['k']}, gamma={values['gamma']}")
    return name, values


def canonical(spec):
    """The weighting's canonical spec: its name, and the options that differ from their defaults."""
    name, values = parse(spec)
    return options.spec(name, values, WEIGHTING_OPTIONS[name])


def log_snr_slope(schedule):
    """−dλ/du at u_t = (t+1)/T, (T,), by central differences (one-sided at the ends); NaN where λ = −∞."""
    finite = np.isfinite(schedule.log_snr)
    u = (np.arange(schedule.T) + 1.0) / schedule.T
    slope = np.full(schedule.T, np.nan)
    if finite.sum() >= 2:
        slope[finite] = -np.gradient(schedule.log_snr[finite], u[finite])
    return slope


def x0_and_eps_forms(spec, schedule):
    """(w_x0, w_eps), each (T,), of the weighting `spec` on `schedule` (module docstring)."""
    name, values = parse(spec)
    snr = schedule.snr
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if name == "edm":
            inv = values["sigma_data"] ** -2
            return snr + inv, 1.0 + inv / snr
        if name == "p2":
            w_eps = (values["k"] + snr) ** -values["gamma"]
            return snr * w_eps, w_eps
        if name == "sigmoid":
            w_eps = 0.5 / (1.0 + np.exp(schedule.log_snr - values["b"])) * log_snr_slope(schedule)
            return np.where(snr > 0, w_eps * snr, 0.0), np.where(snr > 0, w_eps, np.inf)  # w_x0 → 0 as λ → −∞
    raise ValueError(f"the {name} weighting has no fixed w_x0: it is the target's own MSE, reweighted in the loss")
