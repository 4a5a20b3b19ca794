"""The evidence lower bound, term by term (post eq. 3).

    −log p_θ(x_0) ≤ L_T + Σ_{t≥1} L_{t−1} + L_0
    L_T     = KL(q(x_T | x_0) ‖ p(x_T))                       the prior term
    L_{t−1} = KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t))   the denoising terms
    L_0     = −log p_θ(x_0 | x_1)                              the decoder (reconstruction) term

Every term between Gaussians has the closed form below (the post's step "from KL collapses to a mean MSE").
"""
import numpy as np


def gaussian_kl(mean1, var1, mean2, var2):
    """KL(N(mean1, var1 I) ‖ N(mean2, var2 I)) in nats, summed over the last axis (per example).

    Per dimension ½ [log(var2/var1) + (var1 + (mean1 − mean2)²)/var2 − 1]. With var1 = var2 = σ² it is
    ‖mean1 − mean2‖² / (2σ²): the post's eq. after (5).
    """
    per_dim = 0.5 * (np.log(var2) - np.log(var1) + (var1 + (mean1 - mean2) ** 2) / var2 - 1.0)
    return np.sum(per_dim, axis=-1)
