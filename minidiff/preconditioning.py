"""EDM's preconditioning and the rectified flow's velocity, written in minidiff's variance-preserving notation.

Both are still linear in (x_0, ε), so they are two more rows of the table in targets.py. With s = √ᾱ, σ = √(1 − ᾱ),
x_t = s x_0 + σ ε:

The rectified flow (Liu et al. 2023; Lipman et al. 2023; Esser et al. 2024, §2). Every variance-preserving
schedule is, up to scale, the interpolant z_τ = (1 − τ) x_0 + τ ε: dividing by s + σ gives
x_t / (s + σ) = z_τ with τ = σ / (s + σ) (`flow_time`), and λ = 2 log((1 − τ)/τ). The velocity of that
interpolant, dz/dτ = ε − x_0, is the `flow` target, for the rectified_flow schedule (where τ = u) and for every
other schedule alike, whose own interpolant it is after the rescale. In v: ε − x_0 = (s + σ) v + (σ − s) x_t.

EDM (Karras et al. 2022, Table 1). EDM writes x̂ = x_t / s = x_0 + σ_E ε with σ_E = σ / s = e^(−λ/2), and
its denoiser D(x̂) = c_skip x̂ + c_out F(c_in x̂; c_noise) with

    c_skip = σ_d² / (σ_E² + σ_d²),  c_out = σ_E σ_d / √(σ_E² + σ_d²),  c_in = 1 / √(σ_E² + σ_d²),
    c_noise = ¼ ln σ_E,  and the loss weight λ(σ) = 1 / c_out² = (σ_E² + σ_d²) / (σ_E σ_d)²,

for data of standard deviation σ_d (0.5 in the paper). The network F then regresses the `edm` target
F* = (x_0 − c_skip x̂) / c_out with unit weight. On x_t, with r = √(σ² + σ_d² s²) (the standard deviation of x_t
for data of variance σ_d²):

    c_in x̂ = x_t / r,   c_skip x̂ = (σ_d² s / r²) x_t,   c_out = σ σ_d / r,   F* = (σ x_0 − σ_d² s ε) / (σ_d r),

finite everywhere, zero SNR (s = 0) included. With σ_d = 1, r = 1 and F* = σ x_0 − s ε = −v exactly; an error in
F* is an error in x_0 scaled by 1/c_out, so its MSE is (SNR + σ_d⁻²) times the x_0-MSE (the v-MSE's SNR + 1 at
σ_d = 1). The input scale c_in is applied by the model wrapper (train.model_fn, train.per_example_loss), never by
the samplers, which see F and convert it like any other target.
"""
import numpy as np

EDM_SIGMA_DATA = 0.5  # Karras et al. 2022, Table 1: σ_data
EDM_P_MEAN, EDM_P_STD = -1.2, 1.2  # Karras et al. 2022, Table 1: ln σ ~ N(P_mean, P_std²) in training


def edm_sigma(alpha_bar):
    """σ_E = √((1 − ᾱ)/ᾱ) = e^(−λ/2), EDM's noise level (Karras et al. 2022, Table 1, VP column)."""
    alpha_bar = np.asarray(alpha_bar, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.sqrt((1.0 - alpha_bar) / alpha_bar)


def edm_coefficients(sigma, sigma_data=EDM_SIGMA_DATA):
    """(c_skip, c_out, c_in, c_noise) at EDM's σ, in EDM's own variables (Karras et al. 2022, Table 1)."""
    sigma = np.asarray(sigma, dtype=np.float64)
    root = np.sqrt(sigma ** 2 + sigma_data ** 2)
    return sigma_data ** 2 / root ** 2, sigma * sigma_data / root, 1.0 / root, 0.25 * np.log(sigma)


def edm_loss_weight(sigma, sigma_data=EDM_SIGMA_DATA):
    """λ(σ) = (σ² + σ_d²) / (σ σ_d)², EDM's weight on ‖D − x_0‖² (Karras et al. 2022, Table 1)."""
    sigma = np.asarray(sigma, dtype=np.float64)
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


def on_x_t(alpha_bar, sigma_data=EDM_SIGMA_DATA):
    """(c_skip, c_out, c_in) acting on x_t rather than on x̂ = x_t / s (module docstring): finite at ᾱ = 0."""
    alpha_bar = np.asarray(alpha_bar, dtype=np.float64)
    s, sigma = np.sqrt(alpha_bar), np.sqrt(1.0 - alpha_bar)
    r = np.sqrt(sigma ** 2 + sigma_data ** 2 * alpha_bar)
    return sigma_data ** 2 * s / r ** 2, sigma * sigma_data / r, 1.0 / r


def edm_target_coefficients(alpha_bar, sigma_data=EDM_SIGMA_DATA):
    """(a, b) with F* = a x_0 + b ε = (σ x_0 − σ_d² s ε) / (σ_d r) (module docstring)."""
    alpha_bar = np.asarray(alpha_bar, dtype=np.float64)
    s, sigma = np.sqrt(alpha_bar), np.sqrt(1.0 - alpha_bar)
    r = np.sqrt(sigma ** 2 + sigma_data ** 2 * alpha_bar)
    return sigma / (sigma_data * r), -sigma_data * s / r


def flow_time(alpha_bar):
    """τ = σ / (s + σ): the rectified flow's time of the noise level ᾱ (module docstring), 0 clean, 1 pure noise."""
    alpha_bar = np.asarray(alpha_bar, dtype=np.float64)
    s, sigma = np.sqrt(alpha_bar), np.sqrt(1.0 - alpha_bar)
    return sigma / (s + sigma)


def flow_scale(alpha_bar):
    """s + σ = x_t / z_τ: the factor between the variance-preserving x_t and the flow's interpolant z_τ."""
    alpha_bar = np.asarray(alpha_bar, dtype=np.float64)
    return np.sqrt(alpha_bar) + np.sqrt(1.0 - alpha_bar)
