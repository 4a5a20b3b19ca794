"""The path training takes: parameters saved along a run, and what a PCA of that path can and cannot show.

Snapshots. `train_with_snapshots` runs `run.train` in segments — stop_at = 0, k, 2k, …, then resume — which the
run folder's exact resume makes the same run as one uninterrupted call, and after each segment appends the raw
parameters to `snapshots.npz` in the run folder (a (snapshots, P) matrix, its steps, and each array's name and
shape). The training loop itself is untouched.

PCA of the path (Li et al. 2018, §7): the rows θ_i − θ_final, centred, by SVD; the first two directions span the
plane in which the path is drawn, and the explained-variance ratios say how much of the path that plane holds. A
warning comes with it (Antognini & Sohl-Dickstein 2018): a pure random walk in many dimensions gives the ratios
6 / (π² k²) — 0.61, 0.15, 0.068, … — so a path that looks "two-dimensional" by these numbers may be nothing but
noise. `random_walk_ratios` gives that baseline, exactly for the number of snapshots at hand (a path of a few
snapshots has a larger first ratio even when it is a random walk); compare with it before reading meaning into a
trajectory.
"""
import json
import os

import numpy as np

from minidiff.runs import checkpoint, loop as run
from minidiff.runs.progress import silent
from minidiff.lab.figures.basic import save_samples

SNAPSHOT_FILE = checkpoint.SNAPSHOT_FILE


def flatten(params):
    """(θ as one vector, the names, the shapes), in the params' own key order."""
    names = list(params)
    return np.concatenate([np.ravel(params[k]) for k in names]), names, [list(np.shape(params[k])) for k in names]


def unflatten(vector, names, shapes):
    """The params dict of a flat vector (the inverse of `flatten`)."""
    sizes = [int(np.prod(s)) for s in shapes]
    pieces = np.split(np.asarray(vector), np.cumsum(sizes)[:-1])
    return {k: p.reshape(s) for k, p, s in zip(names, pieces, shapes)}


def save_snapshots(run_dir, steps, thetas, names, shapes):
    checkpoint.save_arrays(os.path.join(run_dir, SNAPSHOT_FILE), {
        "steps": np.asarray(steps, dtype=np.int64), "thetas": np.asarray(thetas),
        "layout": json.dumps({"names": names, "shapes": shapes})})


def add_snapshot(run_dir, path, step, params):
    """Append the params at `step` to a path ([steps], [θ]) — once — and save the path as snapshots.npz."""
    steps, thetas = path
    if step in steps:
        return
    theta, names, shapes = flatten(params)
    steps.append(step)
    thetas.append(theta)
    save_snapshots(run_dir, steps, thetas, names, shapes)


def load_snapshots(run_dir):
    """(steps (k,), thetas (k, P), names, shapes) of a run recorded by `train_with_snapshots`."""
    tree = checkpoint.load_arrays(os.path.join(run_dir, SNAPSHOT_FILE))
    layout = json.loads(str(tree["layout"]))
    return np.asarray(tree["steps"]), np.asarray(tree["thetas"]), layout["names"], layout["shapes"]


def has_snapshots(run_dir):
    return os.path.exists(os.path.join(run_dir, SNAPSHOT_FILE))


def train_with_snapshots(config, out_dir, every, *, on_segment=None, progress=None, evaluate=True, echo=silent,
                         plot=save_samples):
    """Train `config` into out_dir in segments of `every` steps, saving the parameters after each (module docstring).

    on_segment(state), if given, is called after every segment, the first at step 0 (the initialisation); it
    may raise to stop the run early. Returns run.train's RunResult of the last segment (with the quality at the
    end when evaluate). A DivergenceError from training propagates; the snapshots before it are kept.
    """
    if not every >= 1:
        raise ValueError(f"the snapshot interval must be >= 1 step, got {every}")
    stops = list(range(0, config.steps, every)) + [config.steps]
    path, result = ([], []), None
    for i, stop in enumerate(stops):
        last = stop == config.steps
        result = run.train(config, out_dir, resume=i > 0, progress=progress, evaluate=evaluate and last,
                           stop_at=stop, echo=echo if last else silent, plot=plot)
        state = run.load_run(out_dir)[3]
        add_snapshot(out_dir, path, state.step, state.params)
        if on_segment is not None:
            on_segment(state)
    return result


def trajectory_pca(thetas, n_components=2):
    """PCA of a path of parameters (k, P): a dict of the explained-variance ratios of every component, the path's
    coordinates (k, n_components) in the plane of the first ones (the last point at the origin), and the directions
    (n_components, P) — Li et al. 2018, §7."""
    thetas = np.asarray(thetas, dtype=np.float64)
    if thetas.ndim != 2 or len(thetas) < 3:
        raise ValueError(f"a trajectory PCA needs at least 3 snapshots as rows of a 2-D array, got {thetas.shape}")
    rows = thetas - thetas[-1]                                                   # (k, P) θ_i − θ_final
    centred = rows - rows.mean(axis=0)
    # k ≪ P: the eigenvectors u of the small Gram matrix C Cᵀ (k, k) give the principal directions Cᵀ u / s
    variances, u = np.linalg.eigh(centred @ centred.T)
    variances, u = np.maximum(variances[::-1], 0.0), u[:, ::-1]                  # largest first
    ratios = variances / variances.sum()
    directions = (centred.T @ u[:, :n_components] / np.sqrt(variances[:n_components])).T   # (n_components, P)
    return dict(ratios=ratios, coords=rows @ directions.T, directions=directions)


def random_walk_ratios(n_components, n_snapshots=None):
    """The explained-variance ratios of a high-dimensional random walk's PCA: 6 / (π² k²), k = 1 … n — 0.608,
    0.152, 0.0675, … (Antognini & Sohl-Dickstein 2018, eq. 9) — the limit of many snapshots.

    With n_snapshots = m, the exact ratios for m equally spaced points of the walk: in many dimensions the centred
    Gram matrix of the path concentrates on its mean, proportional to C L Lᵀ C (L the m × m lower-triangular matrix
    of ones that sums the steps, C = I − 11ᵀ/m the centring), whose eigenvalues are then the ratios.
    """
    if n_snapshots is None:
        k = np.arange(1, n_components + 1)
        return 6.0 / (np.pi ** 2 * k ** 2)
    m = int(n_snapshots)
    centring, cumulative = np.eye(m) - 1.0 / m, np.tril(np.ones((m, m)))
    walk = centring @ cumulative
    variances = np.sort(np.linalg.eigvalsh(walk @ walk.T))[::-1]
    return (variances / variances.sum())[:n_components]
