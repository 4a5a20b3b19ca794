"""Gaussian mixtures: data with an exact density, an exact score and an exact optimal denoiser (the oracle).

A mixture p(x_0) = Σ_k w_k N(x_0; m_k, Σ_k) stays a mixture under the forward process. Per component, x_0 and
x_t = √ᾱ x_0 + √(1−ᾱ) ε (Ho et al. 2020, eq. 4) are jointly Gaussian, so (Bishop 2006, PRML eqs. 2.113–2.117):

  q_t(x_t | k)      = N(√ᾱ m_k, S_k),          S_k = ᾱ Σ_k + (1−ᾱ) I
  E[x_0 | x_t, k]   = m_k + √ᾱ Σ_k u_k,        u_k = S_k⁻¹ (x_t − √ᾱ m_k)
  E[ε | x_t, k]     = √(1−ᾱ) u_k               (solve x_t = √ᾱ x_0 + √(1−ᾱ) ε for ε and use S_k − ᾱΣ_k = (1−ᾱ)I)
  Cov[x_0 | x_t, k] = Σ_k − ᾱ Σ_k S_k⁻¹ Σ_k = (1−ᾱ) Σ_k S_k⁻¹

and the mixture's answers weight these by the responsibilities r_k(x_t) ∝ w_k q_t(x_t | k) (PRML eq. 9.13):
E[x_0|x_t] = Σ r_k E[x_0|x_t,k], E[ε|x_t] = Σ r_k E[ε|x_t,k], and by the law of total covariance
Cov[x_0|x_t] = Σ r_k (Cov_k + (E_k − E)(E_k − E)ᵀ). The score of q_t is ∇ log q_t = −Σ r_k u_k, so
E[ε|x_t] = −√(1−ᾱ) ∇ log q_t(x_t): Tweedie's formula (Efron 2011), the identity behind denoising score
matching (Vincent 2011).

Everything is computed in the eigenbasis of Σ_k = Q_k diag(λ_k) Q_kᵀ, where S_k = Q_k diag(ᾱλ_k + 1−ᾱ) Q_kᵀ is
diagonal too: every inverse is a division, every ᾱ in [0, 1] is safe, and both ends are exact — at ᾱ = 1
(no noise) E[x_0|x_t] = x_t and Cov = 0; at ᾱ = 0 (zero terminal SNR) r_k = w_k, E[x_0|x_t] = Σ w_k m_k (the data
mean) and E[ε|x_t] = x_t.
"""
import dataclasses
from typing import NamedTuple

import numpy as np

from minidiff.forward import q_sample
from minidiff.schedules import between_steps
from minidiff.targets import canonical_target, make_target, mse_factor

LOG_2PI = np.log(2.0 * np.pi)
WEIGHT_SUM_TOL = 1e-9  # mixture weights must sum to 1 within this (float64 round-off of a hand-typed list)
SYMMETRY_TOL = 1e-10  # relative asymmetry allowed in a covariance matrix


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianMixture:
    """p(x) = Σ_k w_k N(x; m_k, Σ_k): weights (K,), means (K, D), covs (K, D, D), float64, read-only."""

    weights: np.ndarray
    means: np.ndarray
    covs: np.ndarray

    def __post_init__(self):
        for name in ("weights", "means", "covs"):
            value = np.array(getattr(self, name), dtype=np.float64)  # a private copy
            value.setflags(write=False)
            object.__setattr__(self, name, value)
        _check_mixture(self.weights, self.means, self.covs)

    @property
    def dim(self):
        return self.means.shape[1]

    def mean(self):
        """E[x] = Σ_k w_k m_k, shape (D,)."""
        return self.weights @ self.means

    def cov(self):
        """Cov[x] = Σ_k w_k (Σ_k + m_k m_kᵀ) − E[x] E[x]ᵀ (law of total covariance), shape (D, D)."""
        centred = self.means - self.mean()  # (K, D)
        return np.einsum("k,kij->ij", self.weights, self.covs + centred[:, :, None] * centred[:, None, :])

    def sample(self, n, rng):
        """n draws, shape (n, D): pick k ~ w, then x = m_k + L_k z with Σ_k = L_k L_kᵀ and z ~ N(0, I)."""
        check_rng(rng)
        k = rng.choice(len(self.weights), size=check_count(n), p=self.weights)  # (n,)
        z = rng.standard_normal((n, self.dim))  # (n, D)
        return self.means[k] + np.einsum("nij,nj->ni", np.linalg.cholesky(self.covs)[k], z)

    def log_prob(self, x):
        """log p(x), shape (n,), by a stable log-sum-exp over components."""
        return _components(self, 1.0, x).log_q

    def score(self, x):
        """∇_x log p(x) = −Σ_k r_k(x) Σ_k⁻¹ (x − m_k), shape (n, D)."""
        c = _components(self, 1.0, x)
        return -np.einsum("bk,bkd->bd", c.r, _to_data_basis(c, c.z / c.s))

    def noised(self, alpha_bar):
        """q_t, the law of √ᾱ x_0 + √(1−ᾱ) ε: means √ᾱ m_k, covs ᾱ Σ_k + (1−ᾱ) I (module docstring)."""
        alpha_bar = float(_alpha_bar_rows(alpha_bar, 1)[0])
        eye = np.eye(self.dim)
        return GaussianMixture(self.weights, np.sqrt(alpha_bar) * self.means,
                               alpha_bar * self.covs + (1.0 - alpha_bar) * eye)


def _check_mixture(weights, means, covs):
    if weights.ndim != 1 or len(weights) < 1:
        raise ValueError(f"mixture weights must be a non-empty 1-D array, got shape {weights.shape}")
    K = len(weights)
    if means.ndim != 2 or means.shape[0] != K or means.shape[1] < 1:
        raise ValueError(f"mixture means must have shape (K={K}, D), got {means.shape}")
    D = means.shape[1]
    if covs.shape != (K, D, D):
        raise ValueError(f"mixture covs must have shape (K={K}, D={D}, D={D}), got {covs.shape}")
    if not (np.all(np.isfinite(weights)) and np.all(np.isfinite(means)) and np.all(np.isfinite(covs))):
        raise ValueError("mixture weights, means and covs must be finite (no NaN or Inf)")
    if np.any(weights <= 0) or abs(weights.sum() - 1.0) > WEIGHT_SUM_TOL:
        raise ValueError(f"mixture weights must be positive and sum to 1, got {weights.tolist()}")
    scale = np.max(np.abs(covs), axis=(1, 2), keepdims=True)
    if np.any(np.abs(covs - covs.transpose(0, 2, 1)) > SYMMETRY_TOL * scale):
        raise ValueError("each mixture covariance must be symmetric")
    if np.any(np.linalg.eigvalsh(covs) <= 0):
        raise ValueError("each mixture covariance must be positive definite (all eigenvalues > 0)")


def check_count(n):
    """n as an int, or a ValueError unless it is an integer >= 1."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"the number of points must be an integer >= 1, got {n!r}")
    return int(n)


def check_rng(rng):
    """A TypeError unless rng is a numpy Generator (randomness only through an explicit one)."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")


def _check_points(mixture, x):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != mixture.dim:
        raise ValueError(f"points must have shape (n, D={mixture.dim}), got {x.shape}")
    return x


def _alpha_bar_rows(alpha_bar, n):
    """ᾱ as one value per row, shape (n,), checked to lie in [0, 1]."""
    alpha_bar = np.asarray(alpha_bar, dtype=np.float64)
    if alpha_bar.ndim > 1 or (alpha_bar.ndim == 1 and len(alpha_bar) != n):
        raise ValueError(f"alpha_bar must be a number or have shape ({n},), got shape {alpha_bar.shape}")
    if not np.all((alpha_bar >= 0) & (alpha_bar <= 1)):
        raise ValueError("alpha_bar must lie in [0, 1]")
    return np.broadcast_to(alpha_bar, (n,))


# --- per-component terms in the eigenbasis of Σ_k -------------------------------------------------------------

class _Components(NamedTuple):
    r: np.ndarray  # (B, K) responsibilities r_k(x_t)
    log_q: np.ndarray  # (B,) log q_t(x_t)
    z: np.ndarray  # (B, K, D) Q_kᵀ (x_t − √ᾱ m_k), the residual in the eigenbasis
    s: np.ndarray  # (B, K, D) eigenvalues of S_k: ᾱ λ_k + 1 − ᾱ
    lam: np.ndarray  # (K, D) eigenvalues λ_k of Σ_k
    Q: np.ndarray  # (K, D, D) eigenvectors of Σ_k, as columns
    alpha_bar: np.ndarray  # (B, 1, 1)


def _components(mixture, alpha_bar, x):
    """r_k, log q_t and the whitened residuals of x_t under q_t (module docstring)."""
    x = _check_points(mixture, x)
    alpha_bar = _alpha_bar_rows(alpha_bar, len(x))[:, None, None]  # (B, 1, 1)
    lam, Q = np.linalg.eigh(mixture.covs)  # (K, D), (K, D, D)
    s = alpha_bar * lam + (1.0 - alpha_bar)  # (B, K, D)
    diff = x[:, None, :] - np.sqrt(alpha_bar) * mixture.means  # (B, K, D)
    z = np.einsum("kij,bki->bkj", Q, diff)  # (B, K, D)
    log_joint = np.log(mixture.weights) - 0.5 * np.sum(LOG_2PI + np.log(s) + z ** 2 / s, axis=-1)  # (B, K)
    top = np.max(log_joint, axis=1, keepdims=True)
    log_q = top[:, 0] + np.log(np.sum(np.exp(log_joint - top), axis=1))  # log-sum-exp
    r = np.exp(log_joint - log_q[:, None])
    return _Components(r, log_q, z, s, lam, Q, alpha_bar)


def _to_data_basis(c, w):
    """Q_k w for each row and component: from the eigenbasis of Σ_k back to data coordinates, (B, K, D)."""
    return np.einsum("kij,bkj->bki", c.Q, w)


def _component_means(mixture, c):
    """E[x_0 | x_t, k] = m_k + √ᾱ Σ_k u_k = m_k + √ᾱ Q_k (λ_k z / s), shape (B, K, D)."""
    return mixture.means + np.sqrt(c.alpha_bar) * _to_data_basis(c, c.lam * c.z / c.s)


# --- the posterior of x_0 given x_t ---------------------------------------------------------------------------

def posterior_mean(mixture, alpha_bar, x_t):
    """(E[x_0|x_t], E[ε|x_t]), each (B, D), for x_t ~ q_t at noise level ᾱ (a number or one per row, (B,)).

    Any other mixture (a lowrank.LowRankMixture) answers from its own factored form."""
    if not isinstance(mixture, GaussianMixture):
        return mixture.posterior_mean(alpha_bar, x_t)
    c = _components(mixture, alpha_bar, x_t)
    x0_k = _component_means(mixture, c)  # (B, K, D)
    eps_k = np.sqrt(1.0 - c.alpha_bar) * _to_data_basis(c, c.z / c.s)  # (B, K, D) √(1−ᾱ) u_k
    return np.einsum("bk,bkd->bd", c.r, x0_k), np.einsum("bk,bkd->bd", c.r, eps_k)


def posterior_cov(mixture, alpha_bar, x_t):
    """Cov[x_0|x_t], shape (B, D, D): Σ_k r_k [(1−ᾱ) Σ_k S_k⁻¹ + (E_k − E)(E_k − E)ᵀ]."""
    c = _components(mixture, alpha_bar, x_t)
    within = np.einsum("kij,bkj,klj->bkil", c.Q, (1.0 - c.alpha_bar) * c.lam / c.s, c.Q)  # (B, K, D, D)
    x0_k = _component_means(mixture, c)
    spread = x0_k - np.einsum("bk,bkd->bd", c.r, x0_k)[:, None, :]  # (B, K, D)
    between = spread[..., :, None] * spread[..., None, :]
    return np.einsum("bk,bkij->bij", c.r, within + between)


def posterior_trace_cov(mixture, alpha_bar, x_t):
    """tr Cov[x_0|x_t], shape (B,): the x_0-MSE of the optimal denoiser at this x_t (any mixture, as above)."""
    if not isinstance(mixture, GaussianMixture):
        return mixture.posterior_trace_cov(alpha_bar, x_t)
    c = _components(mixture, alpha_bar, x_t)
    within = np.sum((1.0 - c.alpha_bar) * c.lam / c.s, axis=-1)  # (B, K) tr[(1−ᾱ) Σ_k S_k⁻¹]
    x0_k = _component_means(mixture, c)
    spread = x0_k - np.einsum("bk,bkd->bd", c.r, x0_k)[:, None, :]
    return np.sum(c.r * (within + np.sum(spread ** 2, axis=-1)), axis=1)


# --- the oracle, the loss floor, the likelihood ---------------------------------------------------------------

def _alpha_bar_at(schedule, t, n):
    """ᾱ_t per row, shape (n,), for t an int or an int array of shape (n,), checked against 0 … T−1."""
    t = np.asarray(t)
    if not np.issubdtype(t.dtype, np.integer) or t.ndim > 1 or (t.ndim == 1 and len(t) != n):
        raise ValueError(f"t must be an int or an int array of shape ({n},), got {t.dtype} of shape {t.shape}")
    if np.any((t < 0) | (t >= schedule.T)):
        raise ValueError(f"timesteps must lie in 0 … T−1 = {schedule.T - 1}")
    return np.broadcast_to(schedule.alpha_bar[t], (n,))


def _at_timesteps(schedule, t, n):
    """(schedule-like, t) to read ᾱ and the targets at: the Schedule itself for whole t, or for fractional t
    (floats in [0, T−1], as the probability-flow ODE asks) the per-row `schedules.between_steps` view."""
    if np.issubdtype(np.asarray(t).dtype, np.integer):
        return schedule, t, _alpha_bar_at(schedule, t, n)
    t = np.broadcast_to(np.asarray(t, dtype=np.float64), (n,))
    view = between_steps(schedule, t)
    return view, np.arange(n), view.alpha_bar


def oracle(mixture, schedule, target):
    """model(x_t, t) -> the optimal (MMSE) prediction of `target`, as a perfectly trained network would give.

    Every target is linear in (x_0, ε), so E[X|x_t] = make_target(X, E[x_0|x_t], E[ε|x_t]). t may be fractional
    (between steps, as in `schedules.between_steps`). The model also carries `jacobian_trace(x_t, t)`, the exact
    tr ∂E[X|x_t]/∂x_t that the probability-flow likelihood needs: differentiating Tweedie's formula (Efron 2011,
    §2) gives ∂E[x_0|x_t]/∂x_t = √ᾱ/(1−ᾱ) Cov[x_0|x_t], and E[ε|x_t] = (x_t − √ᾱ E[x_0|x_t])/√(1−ᾱ).
    """
    target = canonical_target(target)

    def model(x_t, t):
        steps, rows, alpha_bar = _at_timesteps(schedule, t, len(x_t))
        x0_hat, eps_hat = posterior_mean(mixture, alpha_bar, x_t)
        return make_target(target, steps, x0_hat, eps_hat, rows)

    def jacobian_trace(x_t, t):
        steps, rows, alpha_bar = _at_timesteps(schedule, t, len(x_t))
        one, zero = np.ones((len(x_t), 1)), np.zeros((len(x_t), 1))
        a = make_target(target, steps, one, zero, rows)[:, 0]  # X = a x_0 + b ε
        b = make_target(target, steps, zero, one, rows)[:, 0]
        s, sigma = np.sqrt(alpha_bar), np.sqrt(1.0 - alpha_bar)
        trace_x0 = s / sigma ** 2 * posterior_trace_cov(mixture, alpha_bar, x_t)  # tr ∂E[x_0|x_t]/∂x_t
        return a * trace_x0 + b * (mixture.dim - s * trace_x0) / sigma
    model.jacobian_trace = jacobian_trace
    return model


def irreducible_loss(mixture, schedule, target, t, n, rng):
    """(mean, stderr) of E_{x_t} ‖X − E[X|x_t]‖² (summed over D) for each timestep in t, shaped like t.

    = k_X(t) · E_{x_t} tr Cov[x_0|x_t] (targets.mse_factor): the floor of the loss a perfect network reaches.
    tr Cov is exact at each x_t; the average over x_t ~ q_t is Monte Carlo with n draws of (x_0, ε), shared
    across timesteps (common random numbers, so the curve over t is smooth). Divide by D for a mean over dims.
    """
    target, t = canonical_target(target), np.asarray(t)
    x0 = mixture.sample(check_count(n), rng)
    eps = rng.standard_normal(x0.shape)
    means, stderrs = [], []
    for step in t.ravel():
        alpha_bar = _alpha_bar_at(schedule, step, n)
        x_t = q_sample(schedule, x0, step, eps)
        loss = mse_factor(target, schedule, step) * posterior_trace_cov(mixture, alpha_bar, x_t)
        means.append(loss.mean())
        stderrs.append(loss.std(ddof=1) / np.sqrt(n) if n > 1 else np.nan)
    return np.reshape(means, t.shape), np.reshape(stderrs, t.shape)


class NLL(NamedTuple):
    """The result of `nll`."""

    nats: float  # −(1/n) Σ log p(x_i), nats per example
    bits_per_dim: float  # nats / (D ln 2)
    stderr_nats: float  # standard error of the mean over examples


def nll(mixture, x):
    """The exact negative log-likelihood of the rows of x under the mixture (a density: bits/dim may be < 0)."""
    log_p = mixture.log_prob(x)
    nats = float(-np.mean(log_p))
    stderr = float(np.std(log_p, ddof=1) / np.sqrt(len(log_p))) if len(log_p) > 1 else float("nan")
    return NLL(nats, float(nats / (mixture.dim * np.log(2.0))), stderr)
