"""Loss landscapes: the training loss along lines and planes through the parameters (Li et al. 2018).

    f(α) = L(θ + α d),    f(α, β) = L(θ + α d + β e)

with d, e random directions, filter-normalised (Li et al. 2018, §4): for each output unit j of a
weight matrix — a column of W, as layers compute x W — d_j ← d_j · ‖W_j‖ / (‖d_j‖ + 1e-10); biases get a zero
direction. A step α = 1 then moves every unit by as much as its own weights, which takes away the scale
invariance that makes raw slices of two networks incomparable. Two random directions in n dimensions are nearly
orthogonal, E|cos| ≈ √(2/(πn)), so a plane through two of them is a fair picture of "random" directions (after
filter normalisation n is an effective dimension, `effective_dimension`, below the number of weights).

L is `train.per_example_loss` — the training loss, with its target and weighting — averaged over ONE batch
(x_0, ε, t) drawn once, so the surface is deterministic: a function of the parameters alone.

Also here: the loss on the segment between two solutions, L((1 − α) θ_a + α θ_b) (Goodfellow, Vinyals & Saxe
2015), and a sharpness number per slice, the curvature f''(0) of a quadratic fitted by least squares to f on
|α| ≤ r, reported also relative to f(0): the five targets' losses differ in scale by orders of magnitude, and a
relative curvature is what can be compared across them in one table.
"""
import numpy as np

from minidiff.train import per_example_loss

FILTER_EPS = 1e-10  # Li et al. 2018: keeps a zero direction column finite
FIT_RADIUS = 0.25  # the quadratic for the curvature is fitted on |α| ≤ 0.25 (a quarter of a filter norm)


def filter_normalize(direction, params):
    """d with each column of each weight matrix scaled to the norm of W's column; bias directions set to 0."""
    normalized = {}
    for name, d in direction.items():
        W = params[name]
        if np.ndim(W) < 2:
            normalized[name] = np.zeros_like(d)                                  # Li et al. 2018: biases not moved
            continue
        norm_W = np.linalg.norm(W, axis=0)                                       # (m,) ‖W_j‖ per output unit
        normalized[name] = d * (norm_W / (np.linalg.norm(d, axis=0) + FILTER_EPS))
    return normalized


def random_direction(params, rng):
    """A Gaussian direction with the params' shapes, filter-normalised (float64)."""
    return filter_normalize({k: rng.standard_normal(np.shape(v)) for k, v in params.items()}, params)


def effective_dimension(params):
    """The n for which E|cos(d, e)| ≈ √(2/(πn)) holds for two filter-normalised directions.

    cos(d, e) = Σ_j ‖W_j‖² c_j / Σ_j ‖W_j‖², with c_j the cosine of two random directions in the column's own
    m_j dimensions (Var c_j = 1/m_j); so Var cos = 1/n with n = (Σ_j ‖W_j‖²)² / Σ_j ‖W_j‖⁴ / m_j, which is the
    number of weights when all columns have the same norm and length, and fewer when their norms differ.
    """
    columns = [(np.linalg.norm(W, axis=0) ** 2, W.shape[0]) for W in params.values() if np.ndim(W) >= 2]
    total = sum(np.sum(sq) for sq, _ in columns)
    return total ** 2 / sum(np.sum(sq ** 2) / rows for sq, rows in columns)


def cosine(d, e):
    """cos(d, e) of two directions, flattened over all params."""
    dot = sum(float(np.sum(d[k] * e[k])) for k in d)
    return dot / np.sqrt(sum(float(np.sum(d[k] ** 2)) for k in d) * sum(float(np.sum(e[k] ** 2)) for k in e))


def moved(params, *steps):
    """θ + Σ c · d for (c, d) in steps."""
    return {k: v + sum(c * d[k] for c, d in steps) for k, v in params.items()}


def loss_at(params, problem, batch):
    """The training loss on the fixed batch (x_0, ε, t): the mean of `train.per_example_loss`."""
    x0, eps, t = batch
    return float(np.mean(per_example_loss(params, problem, x0, eps, t)))


def slice_1d(params, problem, batch, direction, alphas):
    """f(α) = L(θ + α d) for each α, shape (len(alphas),)."""
    return np.array([loss_at(moved(params, (a, direction)), problem, batch) for a in alphas])


def slice_2d(params, problem, batch, d, e, alphas, betas):
    """f(α, β) = L(θ + α d + β e), shape (len(alphas), len(betas))."""
    return np.array([[loss_at(moved(params, (a, d), (b, e)), problem, batch) for b in betas] for a in alphas])


def interpolation(params_a, params_b, problem, batch, alphas):
    """L((1 − α) θ_a + α θ_b) for each α (α = 0 is θ_a, α = 1 is θ_b)."""
    line = {k: params_b[k] - params_a[k] for k in params_a}
    return slice_1d(params_a, problem, batch, line, alphas)


def curvature(alphas, losses, radius=FIT_RADIUS):
    """f''(0) of the least-squares quadratic c₀ + c₁ α + c₂ α² through the points with |α| ≤ radius — or through
    the three points nearest α = 0 on a coarser grid (then the central second difference): 2 c₂."""
    alphas, losses = np.asarray(alphas, dtype=np.float64), np.asarray(losses, dtype=np.float64)
    if len(alphas) < 3:
        raise ValueError(f"the curvature fit needs at least 3 points, got {len(alphas)}")
    near = np.abs(alphas) <= radius + 1e-12
    if near.sum() < 3:
        near = np.isin(np.arange(len(alphas)), np.argsort(np.abs(alphas))[:3])
    return 2.0 * np.polyfit(alphas[near], losses[near], 2)[0]


def sharpness(alphas, losses, radius=FIT_RADIUS):
    """(f''(0), f''(0) / f(0)) of one 1-D slice, f(0) read at α = 0 (which the grid must contain)."""
    alphas = np.asarray(alphas, dtype=np.float64)
    centre = np.flatnonzero(np.isclose(alphas, 0.0, atol=1e-12))
    if not len(centre):
        raise ValueError("the slice must contain alpha = 0")
    value = curvature(alphas, losses, radius)
    return value, value / losses[centre[0]]
