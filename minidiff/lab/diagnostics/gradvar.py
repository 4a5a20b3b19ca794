"""Gradient noise of the diffusion loss, per target, weighting and noise level (McCandlish et al. 2018).

From n per-example gradients g_i of one loss (`pergrad`), with ḡ their mean (McCandlish et al. 2018):

    tr Σ̂     = Σ_i ‖g_i − ḡ‖² / (n − 1) = (Σ_i ‖g_i‖² − n ‖ḡ‖²) / (n − 1)     unbiased for tr Σ
    |G|²_u   = ‖ḡ‖² − tr Σ̂ / n                        unbiased for |G|², since E‖ḡ‖² = |G|² + tr Σ / n
    B_simple = tr Σ̂ / |G|²_u          the batch size at which a step's noise equals its signal (ibid., §2.2)

Here g_i = ∇_θ [w_X(t_i) ‖X − f_θ(x_t, t_i)‖²], the very loss training minimises (`train.per_example_loss`). The
post's claim is that the targets "change the conditioning and the gradient statistics seen by the network"; these
numbers measure it. Grouping the examples by t (or λ) bucket shows which noise levels carry the noise, and the
cosine between the buckets' mean gradients shows whether they pull the same way — "conflicting timesteps", which
Min-SNR weighting was made to reconcile (Hang et al. 2023, §3). The cosine of two noisy means is pulled towards 0;
the corrected cosine divides the (unbiased, for a ≠ b) ⟨ḡ_a, ḡ_b⟩ by √(|G_a|²_u |G_b|²_u) instead.

Examples are drawn i.i.d. (x_0 from the data, ε ~ N(0, I), t ~ U{0 … T−1}), so each bucket's numbers are those of
the loss restricted to it, and the row 'all' those of the whole loss a training step sees.
"""
import dataclasses

import numpy as np

from minidiff.train import LOG_SNR_CLIP
from minidiff.lab.diagnostics.pergrad import gradient_sums

CHUNK = 512  # examples per forward/backward pass: bounds the memory of the recorded activations
BUCKET_KINDS = ("t", "log_snr")


@dataclasses.dataclass(frozen=True)
class NoiseStats:
    """Gradient-noise numbers of one group of n examples (module docstring)."""
    n: int
    mean_norm: float        # (1/n) Σ ‖g_i‖
    mean_grad_sq: float     # ‖ḡ‖², biased upwards by tr Σ / n
    trace_cov: float        # tr Σ̂
    grad_sq: float          # |G|²_u
    b_simple: float         # tr Σ̂ / |G|²_u; NaN when |G|²_u ≤ 0 (the noise swamps the signal at this n)


def noise_stats(sq_norms, mean_grad_sq):
    """NoiseStats from the per-example squared norms ‖g_i‖² (n,) and the squared norm of their mean ‖ḡ‖²."""
    sq_norms = np.asarray(sq_norms, dtype=np.float64)
    n = len(sq_norms)
    if n < 2:
        nan = float("nan")
        return NoiseStats(n, float(np.sqrt(sq_norms).mean()) if n else nan, float(mean_grad_sq), nan, nan, nan)
    trace_cov = (sq_norms.sum() - n * mean_grad_sq) / (n - 1)                 # McCandlish et al. 2018, App. A.1
    grad_sq = mean_grad_sq - trace_cov / n
    b_simple = trace_cov / grad_sq if grad_sq > 0 else float("nan")
    return NoiseStats(n, float(np.sqrt(sq_norms).mean()), float(mean_grad_sq), float(trace_cov), float(grad_sq),
                      float(b_simple))


def noise_stats_of_samples(grads):
    """NoiseStats of the rows of an (n, P) matrix of per-example gradients."""
    grads = np.asarray(grads, dtype=np.float64)
    mean = grads.mean(axis=0)
    return noise_stats(np.sum(grads ** 2, axis=1), float(mean @ mean))


# --- buckets of t or of λ ---------------------------------------------------------------------------------------

def bucket_index(schedule, n_buckets, by="t"):
    """The bucket of each timestep, (T,) ints: n equal ranges of t, or of λ clipped to ±LOG_SNR_CLIP (high λ first)."""
    if by not in BUCKET_KINDS:
        raise ValueError(f"unknown bucket kind {by!r}; choose one of: {', '.join(BUCKET_KINDS)}")
    if not 1 <= n_buckets <= schedule.T:
        raise ValueError(f"the number of buckets must be between 1 and T = {schedule.T}, got {n_buckets}")
    t = np.arange(schedule.T)
    if by == "t":
        return t * n_buckets // schedule.T
    lam = np.clip(schedule.log_snr, -LOG_SNR_CLIP, LOG_SNR_CLIP)
    hi, lo = lam.max(), lam.min()
    return np.minimum(((hi - lam) / max(hi - lo, np.finfo(float).tiny) * n_buckets).astype(int), n_buckets - 1)


def bucket_ranges(schedule, index, n_buckets):
    """For each bucket: (t_lo, t_hi, λ at t_lo, λ at t_hi), NaN for an empty bucket."""
    ranges = []
    for k in range(n_buckets):
        t = np.flatnonzero(index == k)
        ranges.append((int(t[0]), int(t[-1]), float(schedule.log_snr[t[0]]), float(schedule.log_snr[t[-1]]))
                      if len(t) else (float("nan"),) * 4)
    return ranges


# --- the measurement --------------------------------------------------------------------------------------------

def draw_examples(x_data, n, T, rng):
    """(x_0, ε, t): n rows of the data, n standard normals, n timesteps uniform on 0 … T−1."""
    x0 = x_data[rng.integers(0, len(x_data), n)]                                 # (n, D)
    eps = rng.standard_normal(x0.shape)                                          # (n, D)
    return x0, eps, rng.integers(0, T, n)


def measure(params, problem, x0, eps, t, n_buckets=10, by="t", chunk=CHUNK):
    """The gradient noise of the loss `problem` at `params` on the examples (x_0, ε, t).

    Returns a dict: 'all' and 'buckets' (NoiseStats as dicts, with each bucket's t and λ range), and the
    'cosine' and 'cosine_corrected' matrices between the buckets' mean gradients, and 'cosine_to_all'.
    """
    index = bucket_index(problem.schedule, n_buckets, by)
    groups = index[t]
    sq_norms, sums = np.zeros(len(t)), np.zeros((n_buckets, 0))
    for start in range(0, len(t), chunk):
        part = slice(start, start + chunk)
        sq, by_name = gradient_sums(params, problem, x0[part], eps[part], t[part], groups[part], n_buckets)
        sq_norms[part] = sq
        flat = np.concatenate([g.reshape(n_buckets, -1) for g in by_name.values()], axis=1)   # (G, P)
        sums = flat if sums.shape[1] == 0 else sums + flat
    counts = np.bincount(groups, minlength=n_buckets)
    means = sums / np.maximum(counts, 1)[:, None]                                # (G, P) ḡ per bucket
    total = sums.sum(axis=0) / len(t)                                            # (P,) ḡ of the whole loss
    buckets = []
    for k, (t_lo, t_hi, lam_lo, lam_hi) in enumerate(bucket_ranges(problem.schedule, index, n_buckets)):
        stats = noise_stats(sq_norms[groups == k], float(means[k] @ means[k]))
        buckets.append(dict(bucket=k, t_lo=t_lo, t_hi=t_hi, log_snr_at_t_lo=lam_lo, log_snr_at_t_hi=lam_hi,
                            **dataclasses.asdict(stats)))
    result = dict(all=dataclasses.asdict(noise_stats(sq_norms, float(total @ total))), buckets=buckets)
    result.update(bucket_cosines(means, np.array([b["grad_sq"] for b in buckets]), total))
    return result


def bucket_cosines(means, grad_sq, total):
    """cos(ḡ_a, ḡ_b), the corrected cosine ⟨ḡ_a, ḡ_b⟩ / √(|G_a|²_u |G_b|²_u) (a ≠ b), and cos(ḡ_a, ḡ)."""
    gram = means @ means.T                                                       # (G, G)
    norms = np.sqrt(np.diag(gram))
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = gram / np.outer(norms, norms)
        root = np.sqrt(np.where(grad_sq > 0, grad_sq, np.nan))
        corrected = gram / np.outer(root, root)
        to_all = means @ total / (norms * np.sqrt(total @ total))
    np.fill_diagonal(corrected, 1.0)
    return dict(cosine=cosine.tolist(), cosine_corrected=corrected.tolist(), cosine_to_all=to_all.tolist())
