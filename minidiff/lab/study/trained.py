"""The trained runs and the measurements that several figures of the study share.

A run is trained into the context's cache the first time a figure needs it and reused while its configuration is
unchanged (runs are seeded: reusing one gives the numbers retraining would). Quality is the energy distance of
`budget.quality_n` ancestral samples (DDPM, all T steps, EMA weights) to as many held-out points, next to the
data-vs-data floor at the same size (`metrics.energy_floor`).
"""
import os
import shutil
import types
import warnings

import numpy as np

from minidiff import data as datasets, metrics
from minidiff.runs import loop as run, stack as runstack
from minidiff.runs.checkpoint import CheckpointError
from minidiff.lab.diagnostics import trajectory
from minidiff.lab.diagnostics.sweep import pool_map
from minidiff.elbo import elbo
from minidiff.likelihood import flow_nll, network_model
from minidiff.mixture import oracle
from minidiff.sample import sample
from minidiff.schedules import PriorTermWarning, make_schedule
from minidiff.targets import TARGETS
from minidiff.train import TrainConfig, make_problem, model_fn

EVAL_STREAM = 7  # the evaluation generators: SeedSequence([seed, EVAL_STREAM, …]), apart from every run's own
FLOOR_REPEATS = 5
LIKELIHOOD_DATASET = "gmm2d"
VARIANCES = ("beta_tilde", "beta")
# (label, schedule, T, zero terminal SNR, options): the bound of the exact denoiser on each — the post's claim that
# L_0 and L_T are "extremely small" is checked on each; linear at T = 50 with the T = 1000 endpoints left unscaled
# is the setting where L_T is not small.
SCHEDULE_CASES = [
    ("linear, T=50", "linear", 50, False, {}),
    ("linear, T=50, unscaled β", "linear", 50, False, {"beta_start": 1e-4, "beta_end": 0.02}),
    ("linear, T=1000", "linear", 1000, False, {}),
    ("cosine, T=1000", "cosine", 1000, False, {}),
    ("sigmoid, T=1000", "sigmoid", 1000, False, {}),
    ("scaled_linear, T=1000", "scaled_linear", 1000, False, {}),
    ("linear, T=1000, zero terminal SNR", "linear", 1000, True, {}),
]
DIVERGED_GAP = 1e3  # nats: a flow NLL this far from the exact NLL has run off (the study counts such points)
ORACLE_TARGET = "v"  # defined at zero terminal SNR too; every target gives the same oracle in exact arithmetic


def _rng(context, *stream):
    return np.random.default_rng([context.seed, EVAL_STREAM, *stream])


def _finished(out, config, snapshots):
    try:
        stored, _, _, state = run.load_run(out)
    except (CheckpointError, OSError, KeyError, TypeError, ValueError):
        return False
    return stored == config and state.step == config.steps and (trajectory.has_snapshots(out) or not snapshots)


def trained(context, name, config, snapshots=False):
    """The run folder of `config` in the cache, trained now unless an identical finished run is there."""
    out = context.path(name)
    if not _finished(out, config, snapshots):
        shutil.rmtree(out, ignore_errors=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PriorTermWarning)
            if snapshots:
                trajectory.train_with_snapshots(config, out, context.budget.snapshot_every, evaluate=False)
            else:
                run.train(config, out, evaluate=False)
    return out


def prefetch(context, jobs):
    """Train the runs of jobs [(name, config, snapshots)] that the cache does not hold yet, as stacks — one per
    dataset, in up to context.workers processes (`runs.stack.train_stack`: each run bit for bit as `trained` would
    train it alone, the same files) — so that `trained` then finds them finished."""
    todo = {}
    for name, config, snapshots in jobs:
        out = context.path(name)
        if not _finished(out, config, snapshots):
            todo.setdefault(config.dataset, []).append((out, config, snapshots))
    groups = [(members, context.budget.snapshot_every) for members in todo.values()]
    for _ in pool_map(_train_together, groups, context.workers):
        pass


def _train_together(group):
    """One stack of (folder, config, snapshots) with the snapshots `train_with_snapshots` would save."""
    members, every = group
    paths = {}
    for out, _, _ in members:
        shutil.rmtree(out, ignore_errors=True)

    def on_segment(r, state):
        out, _, snapshots = members[r]
        if snapshots:
            trajectory.add_snapshot(out, paths.setdefault(r, ([], [])), state.step, state.params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PriorTermWarning)
        outcomes = runstack.train_stack([c for _, c, _ in members], [o for o, _, _ in members], segment=every,
                                        on_segment=on_segment)
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            raise outcome


def run_config(context, dataset, target, **options):
    steps = context.budget.train_steps
    log_every = min(100, max(steps // 20, 1))
    every = context.budget.snapshot_every
    return TrainConfig(dataset=dataset, target=target, steps=steps, seed=context.seed, log_every=log_every,
                       checkpoint_every=every - every % log_every or log_every, **options)


def default_jobs(context):
    """[(name, config, snapshots)] of the runs per target that several figures share (moons_run, and the
    likelihood runs on LIKELIHOOD_DATASET)."""
    jobs = [(f"moons-{target}-cosine", run_config(context, "moons", target, schedule="cosine",
                                                  zero_terminal_snr=False), True) for target in TARGETS]
    return jobs + [(f"{LIKELIHOOD_DATASET}-{target}", run_config(context, LIKELIHOOD_DATASET, target), False)
                   for target in TARGETS]


def moons_run(context, target, schedule="cosine", zero_terminal_snr=False, snapshots=True):
    """(folder, config) of the default configuration on two moons for `target` (and a schedule)."""
    config = run_config(context, "moons", target, schedule=schedule, zero_terminal_snr=zero_terminal_snr)
    name = f"moons-{target}-{schedule}{'-zero-snr' if zero_terminal_snr else ''}"
    return trained(context, name, config, snapshots), config


def held_out(context, dataset):
    """budget.quality_n held-out points of the dataset, the same for every run of the study."""
    return context.memo(("held", dataset), lambda: datasets.sample_dataset(dataset, context.budget.quality_n,
                                                                           _rng(context, 0)))


def floor(context, dataset):
    source = lambda n, rng: datasets.sample_dataset(dataset, n, rng)  # noqa: E731
    return context.memo(("floor", dataset), lambda: metrics.energy_floor(source, context.budget.quality_n,
                                                                         _rng(context, 1), FLOOR_REPEATS))


def quality(context, out):
    """{samples, energy_distance, energy_floor, energy_floor_stderr} of the EMA model of a run folder."""
    def measure():
        config, _, stats, state = run.load_run(out)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PriorTermWarning)
            problem = make_problem(config)
        held = held_out(context, config.dataset)
        with np.errstate(all="ignore"):
            x = sample(model_fn(state.ema, problem, config), problem.target, problem.schedule, held.shape,
                       _rng(context, 2))
        if stats is not None:
            x = datasets.unstandardize(x, stats)
        finite = bool(np.all(np.isfinite(x)))
        distance = metrics.energy_distance(x, held) if finite else float("inf")
        mean, stderr = floor(context, config.dataset)
        return dict(samples=x, energy_distance=distance, energy_floor=mean, energy_floor_stderr=stderr)
    return dict(context.memo(("quality", out), measure))


# --- likelihood ---------------------------------------------------------------------------------------------------

def _mean_se(values):
    values = np.asarray(values, dtype=np.float64)
    return [float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))]


def _bound_record(bound, exact):
    return dict(prior=bound.prior, denoising=bound.denoising, decoder=bound.decoder, bound=_mean_se(bound.per_example),
                bits_per_dim=bound.bits_per_dim, gap=_mean_se(bound.per_example - exact))


def _flow_record(flow, exact):
    gap = flow.per_example - exact
    finite = np.isfinite(gap)
    return dict(nll=_mean_se(flow.per_example), gap=_mean_se(gap), median_gap=float(np.median(gap)),
                diverged_points=int((~finite).sum() + (np.abs(gap[finite]) > DIVERGED_GAP).sum()))


def oracle_bounds(context):
    """The bound (both reverse variances) and the PF-ODE NLL of the exact denoiser, per schedule."""
    mixture = datasets.get_mixture(LIKELIHOOD_DATASET)
    x0 = mixture.sample(context.budget.elbo_n, _rng(context, 3))
    exact = -mixture.log_prob(x0)
    rows = []
    for label, name, steps, zero, options in SCHEDULE_CASES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PriorTermWarning)
            schedule = make_schedule(name, steps, zero_terminal_snr=zero, **options)
        model = oracle(mixture, schedule, ORACLE_TARGET)
        row = dict(label=label, T=steps, zero_terminal_snr=zero, alpha_bar_last=schedule.alpha_bar[-1])
        for variance in VARIANCES:
            bound = elbo(model, schedule, x0, target=ORACLE_TARGET, rng=_rng(context, 4), variance=variance)
            row[variance] = _bound_record(bound, exact)
        tol = context.budget.ode_tol
        row["flow"] = _flow_record(flow_nll(model, schedule, x0, target=ORACLE_TARGET, rtol=tol, atol=tol), exact)
        rows.append(row)
    return dict(dataset=LIKELIHOOD_DATASET, n=len(x0), target=ORACLE_TARGET, exact_nll=_mean_se(exact), rows=rows)


def trained_likelihoods(context):
    """For each target trained on gmm2d: its bound and PF-ODE NLL next to the oracle's and the exact NLL (the
    targets in up to context.workers processes: each row depends on the seed and its target only)."""
    mixture = datasets.get_mixture(LIKELIHOOD_DATASET)
    x0 = mixture.sample(context.budget.elbo_n, _rng(context, 5))
    exact = -mixture.log_prob(x0)
    for target in TARGETS:  # trained here, in this process, if the cache does not hold them
        trained(context, f"{LIKELIHOOD_DATASET}-{target}", run_config(context, LIKELIHOOD_DATASET, target))
    jobs = [(context.budget, context.seed, context.cache_dir, target, x0, exact) for target in TARGETS]
    rows = list(pool_map(_likelihood_row, jobs, context.workers))
    return dict(dataset=LIKELIHOOD_DATASET, n=len(x0), schedule=TrainConfig.schedule, T=TrainConfig.T,
                steps=context.budget.train_steps, exact_nll=_mean_se(exact), rows=rows)


def _likelihood_row(job):
    """One target's row of trained_likelihoods: the bounds and the flow NLL of its network and of the oracle."""
    budget, seed, cache_dir, target, x0, exact = job
    context = types.SimpleNamespace(seed=seed)  # what _rng reads
    mixture = datasets.get_mixture(LIKELIHOOD_DATASET)
    config, _, stats, state = run.load_run(os.path.join(cache_dir, f"{LIKELIHOOD_DATASET}-{target}"))  # its σ_d
    problem = make_problem(config)
    spec, tol = problem.target, budget.ode_tol
    row = dict(target=target)
    for label, model, flow_model in [("network", model_fn(state.ema, problem, config),
                                      network_model(state.ema, problem, config)),
                                     ("oracle", *2 * [oracle(mixture, problem.schedule, spec)])]:
        with np.errstate(all="ignore"):
            bounds = {v: _bound_record(elbo(model, problem.schedule, x0, target=spec, rng=_rng(context, 6),
                                            variance=v, stats=stats if label == "network" else None), exact)
                      for v in VARIANCES}
            flow = flow_nll(flow_model, problem.schedule, x0, target=spec, rtol=tol, atol=tol,
                            stats=stats if label == "network" else None)
        row[label] = dict(bounds, flow=_flow_record(flow, exact))
    return row
