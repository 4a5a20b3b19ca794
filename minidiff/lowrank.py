"""Gaussian mixtures in any dimension: low-rank-plus-isotropic covariances, whose oracle costs O(D r) a point.

A dense covariance costs D³ to factor and D² a point. A family of images is better described by a few directions of
strong, correlated variation (the pixels of a stroke move together) plus independent pixel noise:

    Σ_k = U_k U_kᵀ + s_k² I,        U_k of shape (D, r), r ≪ D

With the thin SVD U_k = Q_k diag(σ_k) V_kᵀ (Q_k: r orthonormal columns), Σ_k = Q_k diag(σ_k² + s_k²) Q_kᵀ +
s_k² (I − Q_k Q_kᵀ): the eigenvalues are λ_kj = σ_kj² + s_k² on the columns of Q_k and s_k² on the D − r directions
orthogonal to them. This is mixture.py's eigenbasis with the D − r equal eigenvalues kept as one number (the matrix
determinant lemma and Woodbury's identity, written in the eigenbasis). The noised covariance S_k = ᾱ Σ_k + (1−ᾱ) I
(Ho et al. 2020, eq. 4) keeps the eigenvectors, with eigenvalues s_j = ᾱ λ_j + 1 − ᾱ on Q_k and s_⊥ = ᾱ s_k² + 1 − ᾱ
off it, so q_t is low-rank-plus-isotropic too. Split the residual d = x_t − √ᾱ m_k into z = Q_kᵀ d and
d_⊥ = d − Q_k z; then

  log N(x_t; √ᾱ m_k, S_k) = −½ [D log 2π + Σ_j log s_j + (D − r) log s_⊥ + Σ_j z_j² / s_j + ‖d_⊥‖² / s_⊥]
  u_k = S_k⁻¹ d            = Q_k (z / s) + d_⊥ / s_⊥
  Σ_k u_k                  = Q_k (λ z / s) + s_k² d_⊥ / s_⊥
  tr[(1−ᾱ) Σ_k S_k⁻¹]      = (1−ᾱ) [Σ_j λ_j / s_j + (D − r) s_k² / s_⊥]

and mixture.py's formulas finish the oracle unchanged: E[x_0|x_t, k] = m_k + √ᾱ Σ_k u_k, E[ε|x_t, k] = √(1−ᾱ) u_k,
the responsibilities, the law of total covariance, ∇ log q_t = −Σ r_k u_k. `mixture.oracle`, `irreducible_loss` and
`nll` take a LowRankMixture as they take a GaussianMixture.

Nothing of K × D numbers per point is formed for the density, the score or the denoiser: z = Q_kᵀ x − √ᾱ Q_kᵀ m_k and
‖d‖² = ‖x‖² − 2√ᾱ x·m_k + ᾱ ‖m_k‖² are matrix products, ‖d_⊥‖² = ‖d‖² − ‖z‖² (Q_k is orthonormal), and
Σ_k r_k u_k, Σ_k r_k E[x_0|x_t, k] are sums of d_k = x − √ᾱ m_k and of Q_k times a vector, matrix products again:
O(D K r) a point. Only tr Cov[x_0|x_t] forms each E[x_0|x_t, k], since its spread term Σ r_k ‖E_k − E‖² taken from
inner products would cancel catastrophically (both sides ≈ ‖x‖²); rows are processed in blocks so that no array
holds more than MAX_BLOCK numbers.
"""
import dataclasses
from typing import NamedTuple

import numpy as np

from minidiff.mixture import LOG_2PI, WEIGHT_SUM_TOL, GaussianMixture, _alpha_bar_rows, _check_points, check_count, check_rng

MAX_BLOCK = 2 ** 22  # numbers in one (rows, K, D) or (rows, K, r) array: 32 MiB in float64


@dataclasses.dataclass(frozen=True, eq=False)
class LowRankMixture:
    """p(x) = Σ_k w_k N(x; m_k, U_k U_kᵀ + s_k² I): weights (K,), means (K, D), factors U (K, D, r), noise_vars s² (K,).

    float64, read-only; `basis` Q_k (K, D, r) and `eigenvalues` λ_k (K, r) are computed once (module docstring).
    """

    weights: np.ndarray
    means: np.ndarray
    factors: np.ndarray
    noise_vars: np.ndarray

    def __post_init__(self):
        for name in ("weights", "means", "factors", "noise_vars"):
            value = np.array(getattr(self, name), dtype=np.float64)  # a private copy
            value.setflags(write=False)
            object.__setattr__(self, name, value)
        _check_low_rank(self.weights, self.means, self.factors, self.noise_vars)
        K, D, r = self.factors.shape
        Q, sigma = np.zeros((K, D, 0)), np.zeros((K, 0))
        if r:
            Q, sigma, _ = np.linalg.svd(self.factors, full_matrices=False)  # (K, D, min(D, r)), (K, min(D, r))
        for name, value in [("basis", Q), ("eigenvalues", sigma ** 2 + self.noise_vars[:, None]),
                            ("flat_basis", Q.transpose(1, 0, 2).reshape(D, -1)),  # (D, K r): every Q_k side by side
                            ("projected_means", np.einsum("kdj,kd->kj", Q, self.means)),  # (K, r) Q_kᵀ m_k
                            ("mean_norms2", np.sum(self.means ** 2, axis=1))]:  # (K,) ‖m_k‖²
            value.setflags(write=False)
            object.__setattr__(self, name, value)

    @property
    def dim(self):
        return self.means.shape[1]

    @property
    def covs(self):
        """The dense covariances U_k U_kᵀ + s_k² I, (K, D, D): K D² numbers, for checks at moderate D."""
        return self.factors @ self.factors.transpose(0, 2, 1) + self.noise_vars[:, None, None] * np.eye(self.dim)

    def to_dense(self):
        """The same mixture as a GaussianMixture with dense covariances (mixture.py)."""
        return GaussianMixture(self.weights, self.means, self.covs)

    def mean(self):
        """E[x] = Σ_k w_k m_k, shape (D,)."""
        return self.weights @ self.means

    def sample(self, n, rng):
        """n draws, shape (n, D): pick k ~ w, then x = m_k + U_k z + s_k ε with z ~ N(0, I_r), ε ~ N(0, I_D)."""
        check_rng(rng)
        k = rng.choice(len(self.weights), size=check_count(n), p=self.weights)  # (n,)
        z = rng.standard_normal((n, self.factors.shape[2]))  # (n, r)
        eps = rng.standard_normal((n, self.dim))  # (n, D)
        return self.means[k] + np.einsum("ndj,nj->nd", self.factors[k], z) + np.sqrt(self.noise_vars[k])[:, None] * eps

    def noised(self, alpha_bar):
        """q_t, the law of √ᾱ x_0 + √(1−ᾱ) ε: means √ᾱ m_k, factors √ᾱ U_k, noise ᾱ s_k² + 1 − ᾱ."""
        alpha_bar = float(_alpha_bar_rows(alpha_bar, 1)[0])
        return LowRankMixture(self.weights, np.sqrt(alpha_bar) * self.means, np.sqrt(alpha_bar) * self.factors,
                              alpha_bar * self.noise_vars + 1.0 - alpha_bar)

    def log_prob(self, x):
        """log p(x), shape (n,)."""
        return posterior(self, 1.0, x, with_trace=False).log_q

    def score(self, x):
        """∇_x log p(x) = −Σ_k r_k(x) Σ_k⁻¹ (x − m_k), shape (n, D)."""
        return posterior(self, 1.0, x, with_trace=False).score

    def posterior_mean(self, alpha_bar, x_t):
        """(E[x_0|x_t], E[ε|x_t]), each (B, D); E[ε|x_t] = −√(1−ᾱ) ∇ log q_t (Tweedie's formula, Efron 2011)."""
        p = posterior(self, alpha_bar, x_t, with_trace=False)
        return p.x0_hat, -np.sqrt(1.0 - p.alpha_bar)[:, None] * p.score

    def posterior_trace_cov(self, alpha_bar, x_t):
        """tr Cov[x_0|x_t], shape (B,)."""
        return posterior(self, alpha_bar, x_t).trace_cov


def _check_low_rank(weights, means, factors, noise_vars):
    if weights.ndim != 1 or len(weights) < 1:
        raise ValueError(f"mixture weights must be a non-empty 1-D array, got shape {weights.shape}")
    K = len(weights)
    if means.ndim != 2 or means.shape[0] != K or means.shape[1] < 1:
        raise ValueError(f"mixture means must have shape (K={K}, D), got {means.shape}")
    if factors.ndim != 3 or factors.shape[:2] != means.shape:
        raise ValueError(f"mixture factors must have shape (K={K}, D={means.shape[1]}, r), got {factors.shape}")
    if noise_vars.shape != (K,):
        raise ValueError(f"mixture noise_vars must have shape (K={K},), got {noise_vars.shape}")
    if not all(np.all(np.isfinite(a)) for a in (weights, means, factors, noise_vars)):
        raise ValueError("mixture weights, means, factors and noise_vars must be finite (no NaN or Inf)")
    if np.any(weights <= 0) or abs(weights.sum() - 1.0) > WEIGHT_SUM_TOL:
        raise ValueError(f"mixture weights must be positive and sum to 1, got {weights.tolist()}")
    if np.any(noise_vars <= 0):
        raise ValueError("mixture noise_vars must be > 0 (the isotropic part keeps each covariance positive definite)")


# --- the posterior of x_0 given x_t, block by block ------------------------------------------------------------

class Posterior(NamedTuple):
    """What the oracle needs at each row of x_t."""

    log_q: np.ndarray  # (B,) log q_t(x_t)
    x0_hat: np.ndarray  # (B, D) E[x_0 | x_t]
    score: np.ndarray  # (B, D) ∇ log q_t(x_t) = −Σ r_k u_k
    trace_cov: np.ndarray  # (B,) tr Cov[x_0 | x_t]
    alpha_bar: np.ndarray  # (B,)


def posterior(mixture, alpha_bar, x_t, with_trace=True):
    """The Posterior of every row of x_t under q_t at noise level ᾱ (a number or one per row, (B,)); without the
    trace (NaN), which alone needs arrays of K D numbers per row, E[x_0|x_t, k] for every k."""
    x = _check_points(mixture, x_t)
    alpha_bar = np.array(_alpha_bar_rows(alpha_bar, len(x)))
    K, D, r = mixture.basis.shape
    rows = max(1, MAX_BLOCK // (K * (D if with_trace else r + 1)))
    blocks = [_block(mixture, alpha_bar[i:i + rows], x[i:i + rows], with_trace)
              for i in range(0, max(len(x), 1), rows)]
    return Posterior(*(np.concatenate(parts) for parts in zip(*blocks)), alpha_bar)


def _block(mixture, alpha_bar, x, with_trace):
    """(log q_t, E[x_0|x_t], ∇ log q_t, tr Cov[x_0|x_t] or NaN) of a block of rows (module docstring)."""
    a = alpha_bar[:, None]  # (B, 1)
    root, lam, noise = np.sqrt(a), mixture.eigenvalues, mixture.noise_vars
    log_q, resp, z, s, s_perp = _responsibilities(mixture, a, x)
    # Σ_k u_k = c d + Q w and u_k = d / s_⊥ + Q y, with c = s_k²/s_⊥, w = (λ/s − c) z, y = (1/s − 1/s_⊥) z
    c = noise / s_perp  # (B, K)
    w, y = (lam / s - c[:, :, None]) * z, (1.0 / s - 1.0 / s_perp[:, :, None]) * z  # (B, K, r)
    x0_hat = resp @ mixture.means + root * _combine(mixture, resp * c, resp[:, :, None] * w, x, root)
    score = -_combine(mixture, resp / s_perp, resp[:, :, None] * y, x, root)
    if not with_trace:
        return log_q, x0_hat, score, np.full(len(x), np.nan)
    x0_k = (1.0 - a * c)[:, :, None] * mixture.means + (root * c)[:, :, None] * x[:, None, :] \
        + root[:, :, None] * np.einsum("kdj,bkj->bkd", mixture.basis, w)  # (B, K, D) m_k + √ᾱ (c d_k + Q_k w_k)
    spread = np.sum((x0_k - x0_hat[:, None, :]) ** 2, axis=-1)  # (B, K)
    D, r = mixture.dim, mixture.basis.shape[2]
    within = (1.0 - a) * (np.sum(lam / s, axis=-1) + (D - r) * noise / s_perp)  # (B, K) tr[(1−ᾱ) Σ_k S_k⁻¹]
    return log_q, x0_hat, score, np.sum(resp * (within + spread), axis=1)


def _responsibilities(mixture, a, x):
    """(log q_t (B,), r_k (B, K), z (B, K, r), s (B, K, r), s_⊥ (B, K)) at ᾱ = a (B, 1), from inner products."""
    (K, D, r), root = mixture.basis.shape, np.sqrt(a)
    x_means = x @ mixture.means.T  # (B, K) x·m_k
    d_norm2 = np.sum(x ** 2, axis=1, keepdims=True) - 2 * root * x_means + a * mixture.mean_norms2  # ‖d‖²
    z = (x @ mixture.flat_basis).reshape(len(x), K, r) - root[:, :, None] * mixture.projected_means  # Q_kᵀ d
    s, s_perp = a[:, :, None] * mixture.eigenvalues + (1.0 - a[:, :, None]), a * mixture.noise_vars + (1.0 - a)
    perp_norm2 = np.maximum(d_norm2 - np.sum(z ** 2, axis=-1), 0.0)  # ‖d_⊥‖² = ‖d‖² − ‖z‖²
    log_joint = np.log(mixture.weights) - 0.5 * (D * LOG_2PI + np.sum(np.log(s) + z ** 2 / s, axis=-1)
                                                 + (D - r) * np.log(s_perp) + perp_norm2 / s_perp)
    top = np.max(log_joint, axis=1, keepdims=True)
    log_q = top[:, 0] + np.log(np.sum(np.exp(log_joint - top), axis=1))  # log-sum-exp
    return log_q, np.exp(log_joint - log_q[:, None]), z, s, s_perp


def _combine(mixture, weight, coefficients, x, root):
    """Σ_k (weight_k d_k + Q_k coefficients_k), (B, D), with d_k = x − √ᾱ m_k: two matrix products."""
    B = len(x)
    return (np.sum(weight, axis=1, keepdims=True) * x - root * (weight @ mixture.means)
            + coefficients.reshape(B, -1) @ mixture.flat_basis.T)
