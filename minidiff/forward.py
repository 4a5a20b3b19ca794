"""The forward process: how data becomes noise, one step at a time or all at once, and the way back.

One step (post eq. 6):   q(x_t | x_{t-1}) = N(√α_t x_{t-1}, β_t I)
Many steps at once:      q(x_t | x_0)     = N(√ᾱ_t x_0, (1 − ᾱ_t) I),  ᾱ_t = Π_{s≤t} α_s
  because a sum of independent Gaussians is Gaussian: the means multiply and the variances compose as
  (1 − ᾱ_{t-1}) α_t + β_t = 1 − ᾱ_t.
The posterior (post eqs. 6–8): by Bayes, q(x_{t-1} | x_t, x_0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x_0), a product
of two Gaussians in x_{t-1}, hence Gaussian with
  μ̃_t  = [√α_t (1 − ᾱ_{t-1}) x_t + √ᾱ_{t-1} β_t x_0] / (1 − ᾱ_t)     (post eq. 8)
  β̃_t  = β_t (1 − ᾱ_{t-1}) / (1 − ᾱ_t)
At t = 0 (the first step), ᾱ_{-1} = 1: the posterior is a point mass at x_0 (μ̃ = x_0, β̃ = 0).

All functions take 0-based timesteps t (an int, or an int array of shape (B,) for a batch x of shape (B, ...))
and noise eps drawn by the caller, so that every result is reproducible from the caller's generator.
"""
import numpy as np

from minidiff.schedules import at

VARIANCES = ("beta_tilde", "beta")  # the fixed reverse-process variances σ_t² (Ho et al. 2020, §3.2)


def q_sample(schedule, x0, t, eps):
    """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, a draw from q(x_t | x_0) (Ho et al. 2020, eq. 4)."""
    alpha_bar = at(schedule.alpha_bar, t, x0)
    return np.sqrt(alpha_bar) * x0 + np.sqrt(1.0 - alpha_bar) * eps


def q_step(schedule, x_prev, t, eps):
    """x_t = √α_t x_{t-1} + √β_t ε, one step of the forward chain (post eq. 6; Ho et al. 2020, eq. 2)."""
    return np.sqrt(at(schedule.alphas, t, x_prev)) * x_prev + np.sqrt(at(schedule.betas, t, x_prev)) * eps


def q_posterior(schedule, x0, x_t, t):
    """(μ̃_t, β̃_t) of q(x_{t-1} | x_t, x_0) (post eq. 8); the variance is broadcast to x_t's shape."""
    mean = at(schedule.coef_x0, t, x_t) * x0 + at(schedule.coef_xt, t, x_t) * x_t
    variance = np.broadcast_to(at(schedule.beta_tilde, t, x_t), np.shape(x_t))
    return mean, variance


def product_of_gaussians(mean1, var1, mean2, var2):
    """N(m1, v1) · N(m2, v2) ∝ N(m, v) with v = v1 v2 / (v1 + v2) and m = (m1 v2 + m2 v1) / (v1 + v2).

    The post derives eq. (8) this way: as densities in x_{t-1}, q(x_t|x_{t-1}) is N(x_t/√α_t, β_t/α_t) and
    q(x_{t-1}|x_0) is N(√ᾱ_{t-1} x_0, 1 − ᾱ_{t-1}). Kept as a function so the tests can check eq. (8) against it.
    """
    return (mean1 * var2 + mean2 * var1) / (var1 + var2), var1 * var2 / (var1 + var2)


def posterior_variance(schedule, kind="beta_tilde"):
    """The fixed reverse-process variance σ_t² for t = 0 … T−1 (Ho et al. 2020, §3.2).

    'beta_tilde' (σ² = β̃, optimal when x_0 is a point) or 'beta' (σ² = β, optimal for x_0 ~ N(0, I)).
    β̃_0 = 0, so for 'beta_tilde' the first entry is replaced by β̃_1, as improved-diffusion clips it: the
    decoder p(x_0 | x_1) then keeps a positive variance.
    """
    if kind == "beta":
        return schedule.betas.copy()
    if kind != "beta_tilde":
        raise ValueError(f"unknown reverse variance {kind!r}; choose 'beta_tilde' or 'beta'")
    variance = schedule.beta_tilde.copy()
    variance[0] = schedule.beta_tilde[1] if schedule.T > 1 else schedule.betas[0]
    return variance
