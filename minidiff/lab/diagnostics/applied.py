"""The diagnostics applied to configurations and run folders: what `minidiff gradvar` and `landscape` call.

Every measurement is made in float64 (the reference dtype) on the data as the network sees it — the run's own
training points, standardised if the run was — with the run's loss (`train.make_problem`), and with its own
generator seeded from `seed`, so a measurement never touches a run's random state. The same examples (x_0, ε, t)
serve every configuration that shares T: differences between rows are then the configurations', not the draws'.
"""
import dataclasses
import io
import json

import numpy as np

from minidiff.runs import files, loop as run
from minidiff.runs.progress import open_bar
from minidiff import data, nn
from minidiff.schedules import make_schedule
from minidiff.targets import implied_weighting
from minidiff.train import ConfigError, TrainConfig, learned_uncertainty, make_problem, validate
from minidiff.lab.diagnostics import gradvar, landscape, target_stats, trajectory

DIAGNOSTIC_DTYPE = "float64"
PATH_MARGIN = 1.2  # the PCA plane is drawn 20 % beyond the farthest point of the path
GRADVAR_COLUMNS = ("source", "step", "weights", "dataset", "schedule", "T", "target", "weighting", "bucket", "t_lo",
                   "t_hi", "log_snr_at_t_lo", "log_snr_at_t_hi", "n", "mean_norm", "mean_grad_sq", "trace_cov",
                   "grad_sq", "b_simple", "cosine_to_all")


def training_points(config):
    """The run's training points exactly as `run.train` draws them (standardised if the run was)."""
    return run.load_training_data(config, run.generators(config.seed)[0])[0]


def _problem(config):
    config = dataclasses.replace(config, dtype=DIAGNOSTIC_DTYPE)
    validate(config)
    return config, make_problem(config)


def init_setup(config):
    """(config, problem, params at initialisation as `run.train` would start, training points), in float64."""
    config, problem = _problem(config)
    x_data = training_points(config)
    params = nn.init(run.generators(config.seed)[1], config.network(x_data.shape[1]), dtype=np.float64)
    return config, problem, params, x_data


def run_setup(run_dir, weights="ema", weighting=None, params=None):
    """(config, problem, params, training points) of a run folder, its weighting optionally replaced."""
    config, _, _, state = run.load_run(run_dir)
    if weighting is not None:
        config = dataclasses.replace(config, weighting=weighting)
    config, problem = _problem(config)
    source = params if params is not None else (state.ema if weights == "ema" else state.params)
    return config, problem, {k: np.asarray(v, dtype=np.float64) for k, v in source.items()}, training_points(config)


def _record(config, source, step, weights, result):
    return dict(source=source, step=int(step), weights=weights, dataset=config.data_file or config.dataset,
                schedule=config.schedule, T=config.T, target=config.target, weighting=config.weighting, **result)


def check_measurable(dataset, schedules, targets, weightings, *, T):
    """A ConfigError, before any work, when no schedule × target × weighting can be trained (gradvar_at_init skips
    each one that cannot, with its reason)."""
    reasons = []
    for config in (TrainConfig(dataset=dataset, schedule=s, T=T, target=x, weighting=w)
                   for s in schedules for x in targets for w in weightings):
        try:
            validate(config)
            return
        except ConfigError as err:
            reasons.append(str(err))
    raise ConfigError(f"no combination can be measured: {reasons[0]}")


def gradvar_at_init(dataset, schedules, targets, weightings, *, T, n, n_buckets=10, by="t", seed=0, network=None,
                    progress=None):
    """Gradient noise at initialisation for every schedule × target × weighting: a list of records (skipped
    combinations, e.g. an infinite weight, carry a 'skipped' reason instead of numbers)."""
    jobs = [(s, x, w) for s in schedules for x in targets for w in weightings]
    records, examples = [], None
    with open_bar(progress, len(jobs), "gradvar") as bar:
        for schedule, target, weighting in _advancing(jobs, bar):
            config = TrainConfig(dataset=dataset, schedule=schedule, T=T, target=target, weighting=weighting,
                                 seed=seed, **(network or {}))
            try:
                config, problem, params, x_data = init_setup(config)
            except ConfigError as err:
                records.append(dict(_record(config, "init", 0, "init", {}), skipped=str(err)))
                continue
            examples = examples or gradvar.draw_examples(x_data, n, T, np.random.default_rng(seed))
            records.append(_record(config, "init", 0, "init", gradvar.measure(params, problem, *examples,
                                                                              n_buckets=n_buckets, by=by)))
    return records


def gradvar_of_runs(run_dirs, weightings=(None,), *, n, n_buckets=10, by="t", seed=0, weights="ema", along=True,
                    progress=None):
    """Gradient noise of trained runs: at each run's checkpoint (its EMA or raw weights) and, with `along`, at
    every snapshot of a run recorded by `trajectory.train_with_snapshots` (raw weights). weightings: None is the
    run's own."""
    jobs = []
    for run_dir in run_dirs:
        points = [(None, weights, run.load_run(run_dir)[3].step)]  # (params, which weights, step)
        if along and trajectory.has_snapshots(run_dir):
            steps, thetas, names, shapes = trajectory.load_snapshots(run_dir)
            points += [(trajectory.unflatten(theta, names, shapes), "raw", step) for step, theta in zip(steps, thetas)]
        jobs += [(run_dir, weighting, *point) for weighting in weightings for point in points]
    records = []
    with open_bar(progress, len(jobs), "gradvar") as bar:
        for run_dir, weighting, params, label, step in _advancing(jobs, bar):
            config, problem, params, x_data = run_setup(run_dir, weights, weighting, params)
            examples = gradvar.draw_examples(x_data, n, config.T, np.random.default_rng(seed))
            result = gradvar.measure(params, problem, *examples, n_buckets=n_buckets, by=by)
            if problem.learned:  # EDM2's learned u(λ) and the weighting it implies (Karras et al. 2024, eq. 16)
                u = learned_uncertainty(params, problem)
                with np.errstate(all="ignore"):
                    lam, w = implied_weighting("learned", problem.target, problem.schedule, uncertainty=u)
                result["uncertainty"] = dict(log_snr=lam, u=u, w=w)
            records.append(_record(config, run_dir, step, label, result))
    return records


def gradvar_rows(records):
    """One CSV row per record and bucket, the whole loss first as bucket 'all'."""
    rows = []
    for record in records:
        if "skipped" in record:
            continue
        head = {k: record[k] for k in GRADVAR_COLUMNS[:8]}
        rows.append(dict(head, bucket="all", **record["all"]))
        for bucket, cos in zip(record["buckets"], record["cosine_to_all"]):
            rows.append(dict(head, **bucket, cosine_to_all=cos))
    return rows


def landscapes_of_runs(run_dirs, *, progress=None, **options):
    """`landscape_of_run(run_dir, **options)` of each run folder, in order, with a progress bar."""
    with open_bar(progress, len(run_dirs), "landscape") as bar:
        return [landscape_of_run(run_dir, **options) for run_dir in _advancing(run_dirs, bar)]


def _advancing(items, bar):
    """The items, one by one, moving the bar past each."""
    for item in items:
        yield item
        bar.update(1)


def network_shapes(params):
    """{name: shape} of a params dict: two runs can be interpolated when theirs are equal."""
    return {k: v.shape for k, v in params.items()}


def same_network(run_a, run_b):
    """Whether two run folders hold networks of the same shapes (the loss between them is then defined)."""
    return network_shapes(run.load_run(run_a)[3].params) == network_shapes(run.load_run(run_b)[3].params)


def landscape_of_run(run_dir, *, span=1.0, points=41, grid=15, n=512, seed=0, weights="ema", pca_plane=True):
    """1-D slices along two filter-normalised random directions d, e with their sharpness, the 2-D slice in
    their plane, and (for a run with snapshots) the trajectory PCA with the loss on its plane."""
    config, problem, params, x_data = run_setup(run_dir, weights)
    rng = np.random.default_rng(seed)
    batch = gradvar.draw_examples(x_data, n, config.T, rng)
    d, e = landscape.random_direction(params, rng), landscape.random_direction(params, rng)
    alphas, plane = np.linspace(-span, span, points), np.linspace(-span, span, grid)
    result = dict(run=run_dir, target=config.target, schedule=config.schedule, weighting=config.weighting,
                  loss=landscape.loss_at(params, problem, batch), alphas=alphas, cos_de=landscape.cosine(d, e),
                  plane=plane, surface=landscape.slice_2d(params, problem, batch, d, e, plane, plane))
    for name, direction in (("d", d), ("e", e)):
        losses = landscape.slice_1d(params, problem, batch, direction, alphas)
        result[f"slice_{name}"] = losses
        result[f"curvature_{name}"], result[f"relative_curvature_{name}"] = landscape.sharpness(alphas, losses)
    if trajectory.has_snapshots(run_dir):
        result["pca"] = _trajectory_plane(run_dir, params, problem, batch, grid if pca_plane else 0)
    return result


def _trajectory_plane(run_dir, params, problem, batch, grid):
    steps, thetas, names, shapes = trajectory.load_snapshots(run_dir)
    pca = trajectory.trajectory_pca(thetas)
    pca.update(steps=steps, random_walk=trajectory.random_walk_ratios(len(pca["ratios"]), len(thetas)))
    if grid:  # the loss on the PCA plane through the last snapshot, over the extent of the path
        final = trajectory.unflatten(thetas[-1].astype(np.float64), names, shapes)
        u, v = (trajectory.unflatten(c, names, shapes) for c in pca["directions"])
        reach = PATH_MARGIN * np.max(np.abs(pca["coords"])) or 1.0
        pca["plane"] = np.linspace(-reach, reach, grid)
        pca["surface"] = landscape.slice_2d(final, problem, batch, u, v, pca["plane"], pca["plane"])
    del pca["directions"]
    return pca


def interpolation_between(run_a, run_b, *, points=41, n=512, seed=0, weights="ema", margin=0.25):
    """L((1 − α) θ_a + α θ_b) for α from −margin to 1 + margin, under each run's own loss (their targets may
    differ), on one fixed batch."""
    alphas = np.linspace(-margin, 1 + margin, points)
    result = dict(run_a=run_a, run_b=run_b, alphas=alphas)
    (config, _, params_a, x_data), params_b = run_setup(run_a, weights), run_setup(run_b, weights)[2]
    if network_shapes(params_a) != network_shapes(params_b):
        raise ValueError(f"runs {run_a!r} and {run_b!r} have different networks; they cannot be interpolated")
    batch = gradvar.draw_examples(x_data, n, config.T, np.random.default_rng(seed))
    for key, run_dir in (("loss_a", run_a), ("loss_b", run_b)):
        problem = run_setup(run_dir, weights)[1]
        result[key] = landscape.interpolation(params_a, params_b, problem, batch, alphas)
    return result


def target_study(dataset, schedules, targets, weightings, *, T, n=2000, n_times=25, seed=0):
    """The scale of each target against t per schedule, and — for a dataset with an exact density — the weighted
    irreducible loss at n_times timesteps: {'scales': {schedule: {target: (T,)}}, 'floors': {...} or None}."""
    x_data = data.sample_dataset(dataset, n, np.random.default_rng(seed))
    exact = data.DATASETS[dataset].mixture
    t = np.unique(np.linspace(0, T - 1, n_times).astype(int))
    scales, floors = {}, ({} if exact is not None else None)
    for name in schedules:
        schedule = make_schedule(name, T, warn=False)
        scales[name] = target_stats.target_scales(schedule, x_data, targets)
        if exact is None:
            continue
        for weighting in weightings:
            key = f"{name}, {weighting}"
            floors[key] = {x: (t, target_stats.weighted_floor(exact, schedule, x, weighting, t, n,
                                                              np.random.default_rng(seed))[0]) for x in targets}
    return dict(scales=scales, floors=floors)


# --- files ------------------------------------------------------------------------------------------------------

def to_plain(value):
    """Numbers, lists and dicts that json can write, from numpy arrays and scalars."""
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_plain(value.tolist())
    return value.item() if isinstance(value, np.generic) else value


def save_json(path, obj):
    files.atomic_write(path, lambda f: f.write((json.dumps(to_plain(obj), indent=1) + "\n").encode()))


def save_csv(path, rows, columns):
    """rows (dicts) as CSV with a header; missing entries are empty, floats in full precision."""
    text = io.StringIO()
    text.write(",".join(columns) + "\n")
    for row in rows:
        text.write(",".join("" if row.get(c) is None else str(to_plain(row.get(c))) for c in columns) + "\n")
    files.atomic_write(path, lambda f: f.write(text.getvalue().encode()))
