"""The runs of the study's second edition, trained as stacks and measured cell by cell.

    measure_all(context) -> {settings, floors, cells: [one dict per run]}

Every run of `formulations.run_list` is one cell: trained with `runs.stack.train_stack` together with the runs that
share its network shape (each bit for bit as it would train alone), then measured on its EMA weights:

- quality at two sampler settings, the energy distance of `rank_quality_n` samples to as many held-out points:
  *full*, ancestral DDPM over all T steps — every model is asked only at the timesteps it was trained on, and the
  chain is the one whose bound training minimises, so no target is favoured by a skipped step; and *fast*, DDIM
  (η = 0) in FAST_STEPS steps from t = T − 1, the few-step deterministic setting practitioners use — where an
  ε-model's x0 estimate at the cosine schedule's first step is divided by √ᾱ_{T−1};
- on the exact mixture, KL(data ‖ model) = E[log p_data(x) − log p_model(x)] over held-out x: the oracle's exact
  log-density minus the model's probability-flow log-density (likelihood.flow_nll, Hutchinson's divergence with
  one Rademacher probe per point: unbiased, so the mean is the KL up to its standard error and the solver's
  tolerance);
- the bound −ELBO in bits per dimension (`bound_bits`: L_0 and L_T of every point, Σ L_t by stratified t);
- the gradient noise at initialisation: B_simple = tr Σ / ‖G‖² of the per-example gradients of the formulation's
  own loss, with t drawn by its own time sampler and its importance weights (McCandlish et al. 2018);
- along training, every steps/CHECKS steps, the fast-sampler quality (the step at which quality collapses).

A diverged run keeps its divergence step; its metrics are missing (ranked last, `ranks.py`).

Cells are cached in the context's folder by their configuration, so that a figure redrawn with unchanged settings
reuses them; each cell's numbers depend only on its own seed, never on which stack or worker it ran in.
"""
import dataclasses
import hashlib
import json
import os
import sys
import warnings
import zlib

import numpy as np

from minidiff import data as datasets, metrics
from minidiff.elbo import check_terminal_snr, prior_term, reverse_variances, terms_at
from minidiff.likelihood import flow_nll, network_model
from minidiff.objective import timestep_sampler
from minidiff.runs import files, loop as run, stack as runstack
from minidiff.runs.progress import open_bar
from minidiff.train import DivergenceError, TrainConfig, make_problem, model_fn
from minidiff.lab.diagnostics import gradvar, pergrad
from minidiff.lab.diagnostics.applied import to_plain
from minidiff.lab.diagnostics.sweep import BAR_OVER_FLOOR, pool_map
from minidiff.lab.study import formulations as forms

EVAL_STREAM = 11  # the measurements' generators: [seed, EVAL_STREAM, purpose, …], apart from every run's own
FAST_STEPS = 25   # the fast sampler: DDIM η = 0 in this many steps (Song et al. 2021, DDIM, Table 1: 10–100)
CHECKS = 4        # quality checks along each run (and one at step 0)
HIDDEN_DEPTH = 2  # the ranked network: hidden × 2 residual SiLU blocks (the sweep's), batch 128, Adam, EMA
BATCH = 128
ODE_TOL = 1e-3    # rtol = atol of the KL's probability-flow solve (the oracle's KL at this tolerance: test)
GRAD_N = 512      # examples of the gradient-noise estimate
BOUND_PASSES = 16  # stratified draws of t per point in the bound (bound_bits)
FLOOR_REPEATS = 5
MIN_STACK = 8     # a group of runs is split over the workers only into stacks of at least this many


def settings(budget):
    return dict(steps=budget.rank_steps, hidden=budget.rank_hidden, depth=HIDDEN_DEPTH, batch_size=BATCH,
                seeds=budget.rank_seeds, lrs=list(budget.rank_lrs), quality_n=budget.rank_quality_n,
                kl_n=budget.rank_kl_n, fast_steps=FAST_STEPS, checks=CHECKS, ode_tol=ODE_TOL, grad_n=GRAD_N,
                bar_over_floor=BAR_OVER_FLOOR, T=TrainConfig.T)


def config_of(budget, dataset, formulation, lr, seed):
    steps = budget.rank_steps
    return TrainConfig(dataset=dataset, steps=steps, batch_size=BATCH, lr=lr, warmup_steps=steps // 10,
                       hidden=budget.rank_hidden, depth=HIDDEN_DEPTH, seed=seed, log_every=max(steps // 20, 1),
                       checkpoint_every=steps, **formulation.options())


def _rng(seed, *stream):
    return np.random.default_rng([seed, EVAL_STREAM, *stream])


def held_out(dataset, n, seed):
    """The held-out points every cell of a dataset is measured against (not the runs' training draws)."""
    return datasets.sample_dataset(dataset, n, _rng(seed, 0, _stream(dataset)))


def _stream(name):
    return zlib.crc32(name.encode())  # a dataset's own generator stream, the same in every process


# --- one cell's measurements -------------------------------------------------------------------------------------

def energy(x, held):
    """Energy distance of samples x to held, infinite for samples that are not finite (or so far out that it
    overflows)."""
    with np.errstate(all="ignore"):
        distance = metrics.energy_distance(x, held) if np.all(np.isfinite(x)) else float("inf")
    return float(distance) if np.isfinite(distance) else float("inf")


def qualities(emas, problems, configs, held, rngs, sampler):
    """Energy distance to held of len(held) samples of each run, drawn together (`runs.stack.sample_stack`): 'full'
    is DDPM over all T steps, 'fast' DDIM η = 0 in FAST_STEPS steps (module docstring)."""
    kind, steps = ("ddpm", None) if sampler == "full" else ("ddim", FAST_STEPS)
    with np.errstate(all="ignore"):
        x = runstack.sample_stack(emas, problems, configs, len(held), rngs, sampler=kind, steps=steps)
    return [energy(x_r, held) for x_r in x]


def gradient_noise(params, config, x_train, rng):
    """(B_simple, tr Σ) of the per-example gradients of the run's weighted loss at `params`, t from its sampler."""
    problem = make_problem(dataclasses.replace(config, dtype="float64"))
    params = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    x0 = x_train[rng.integers(0, len(x_train), GRAD_N)].astype(np.float64)
    t, weight = timestep_sampler(config, schedule=problem.schedule).sample(rng, GRAD_N)
    eps = rng.standard_normal(x0.shape)
    grads = pergrad.per_example_grads(params, problem, x0, eps, t)
    flat = np.concatenate([g.reshape(GRAD_N, -1) for g in grads.values()], axis=1)
    if weight is not None:
        flat = flat * np.asarray(weight, dtype=np.float64)[:, None]
    stats = gradvar.noise_stats_of_samples(flat)
    return stats.b_simple, stats.trace_cov


def kl_to_data(mixture, model, schedule, target, x, rng=None, probes=1, tol=ODE_TOL):
    """(KL, its standard error) of data ‖ model in nats from held-out points x of the mixture: the mean over x of
    log p_data(x) − log p_model(x), p_model by the model's probability-flow ODE (Hutchinson's divergence with
    `probes` probes drawn from rng; 0: the exact trace)."""
    with np.errstate(all="ignore"):
        flow = flow_nll(model, schedule, x, target=target, rtol=tol, atol=tol, probes=probes, rng=rng)
    gap = flow.per_example + mixture.log_prob(x)  # log p_data − log p_model, per point
    if not np.all(np.isfinite(gap)):
        return float("inf"), None
    return float(gap.mean()), float(gap.std(ddof=1) / np.sqrt(len(gap)))


def bound_bits(model, problem, held, rng):
    """−ELBO in bits per dimension of the held-out points, None where the bound is undefined (ε at zero SNR).

    L_T exactly, L_0 of every point, and Σ_{t≥1} L_t by one timestep per point stratified over 1 … T−1 (point i in
    its own stratum of (T − 1)/n steps, in a random order), averaged over BOUND_PASSES such draws: unbiased, with
    far less variance than a uniform t, because L_t spans orders of magnitude over t and L_0 — a log-density — is
    never weighted by T."""
    schedule, target, (n, dim) = problem.schedule, problem.target, held.shape
    with np.errstate(all="ignore"):
        try:
            check_terminal_snr(schedule, target)
        except ValueError:
            return None
        sigma2 = reverse_variances(schedule, "beta_tilde")
        decoder = terms_at(model, schedule, held, np.zeros(n, dtype=np.int64), rng.standard_normal(held.shape),
                           target=target, sigma2=sigma2)
        denoising = np.zeros(n)
        for _ in range(BOUND_PASSES):
            t = 1 + np.floor((rng.permutation(n) + rng.random(n)) * (schedule.T - 1) / n).astype(np.int64)
            denoising += (schedule.T - 1) / BOUND_PASSES * terms_at(model, schedule, held, t,
                                                                    rng.standard_normal(held.shape), target=target,
                                                                    sigma2=sigma2)
        nats = float(np.mean(prior_term(schedule, held) + decoder + denoising))
    return nats / (dim * np.log(2.0)) if np.isfinite(nats) else float("inf")


def exact_kl(cell, ema, problem, config, held, budget, seed):
    """{kl, kl_stderr} on a mixture dataset, {} elsewhere."""
    if config.dataset != forms.EXACT_DATASET and cell["group"] != "resolution":
        return {}
    try:
        kl, stderr = kl_to_data(datasets.get_mixture(config.dataset), network_model(ema, problem, config),
                                problem.schedule, problem.target, held[:budget.rank_kl_n], _rng(seed, 4, cell["index"]))
    except (ValueError, FloatingPointError, ArithmeticError):
        kl, stderr = float("inf"), None
    return dict(kl=kl, kl_stderr=stderr)


# --- a stack of cells, in one worker ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Task:
    cells: tuple   # the cells' dicts (index, group, dataset, formulation, lr, seed); one dataset per task
    configs: tuple
    folder: str
    budget: object
    seed: int


def run_task(task):
    """Train the task's cells as one stack, then measure each: [cell dict with its results] in the task's order."""
    budget, seed, configs = task.budget, task.seed, task.configs
    out_dirs = [os.path.join(task.folder, "runs", f"{c['index']:04d}") for c in task.cells]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the schedules' prior-term warnings: the study reports L_T itself
        problems = [make_problem(config) for config in configs]
    x_train = run.load_training_data(configs[0], run.generators(0)[0])[0]
    held = held_out(configs[0].dataset, budget.rank_quality_n, seed)
    snapshots, noise = {}, {}  # {step: {r: EMA weights}}, {r: (B_simple, tr Σ) at step 0}

    def on_segment(r, state):
        if state.step == 0:
            with np.errstate(all="ignore"):
                noise[r] = gradient_noise(state.params, configs[r], x_train, _rng(seed, 5, task.cells[r]["index"]))
        else:
            snapshots.setdefault(state.step, {})[r] = {k: np.array(v) for k, v in state.ema.items()}  # as trained

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        outcomes = runstack.train_stack(list(configs), out_dirs, segment=max(budget.rank_steps // CHECKS, 1),
                                        on_segment=on_segment)
        checks = {r: [] for r in range(len(configs))}
        for step in sorted(snapshots):
            runs = sorted(snapshots[step])
            rngs = [_rng(seed, 6, task.cells[r]["index"], step) for r in runs]
            scores = qualities([snapshots[step][r] for r in runs], [problems[r] for r in runs],
                               [configs[r] for r in runs], held[:budget.rank_check_n], rngs, "fast")
            for r, score in zip(runs, scores):
                checks[r].append(dict(step=step, ed_fast=score))
        finished = [r for r, outcome in enumerate(outcomes) if not isinstance(outcome, Exception)]
        final = {r: snapshots[configs[r].steps][r] for r in finished}
        measured = {r: {} for r in finished}
        for sampler, stream in (("full", 1), ("fast", 2)):
            if finished:
                rngs = [_rng(seed, stream, task.cells[r]["index"]) for r in finished]
                scores = qualities([final[r] for r in finished], [problems[r] for r in finished],
                                   [configs[r] for r in finished], held, rngs, sampler)
                for r, score in zip(finished, scores):
                    measured[r]["ed_" + sampler] = score
        results = []
        for r, (cell, outcome) in enumerate(zip(task.cells, outcomes)):
            row = dict(cell, checks=checks[r])
            row["b_simple"], row["trace_cov"] = noise.get(r, (None, None))
            if isinstance(outcome, DivergenceError):
                row.update(status="diverged", diverged_at_step=getattr(outcome, "step", None))
            elif isinstance(outcome, Exception):
                row.update(status="error", reason=f"{type(outcome).__name__}: {outcome}")
            else:
                model = model_fn(final[r], problems[r], configs[r])
                row.update(status="ok", final_loss=float(outcome.final_loss), **measured[r],
                           bits_per_dim=bound_bits(model, problems[r], held, _rng(seed, 3, cell["index"])),
                           **exact_kl(cell, final[r], problems[r], configs[r], held, budget, seed))
            results.append(row)
    return to_plain(results)


def _key(task):
    """The cache key of a task's results: its configs, the settings, and the source of the code that measures them
    (a changed measurement is not read back from an older cache)."""
    code = "".join(open(module.__file__, encoding="utf-8").read() for module in (sys.modules[__name__], runstack))
    text = json.dumps([[dataclasses.asdict(c) for c in task.configs], settings(task.budget), task.seed,
                       task.budget.rank_check_n, code], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cached(task):
    path = os.path.join(task.folder, f"{_key(task)}.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    return None


def _run_and_cache(task):
    results = run_task(task)
    files.atomic_write(os.path.join(task.folder, f"{_key(task)}.json"), lambda f: f.write(json.dumps(results).encode()))
    return results


def tasks(budget, folder, seed, workers):
    """The cells of run_list grouped into stacks: by what a stack shares, each group dealt into `workers` stacks."""
    cells = [dict(index=i, group=g, dataset=d, formulation=f.name, lr=lr, seed=s)
             for i, (g, d, f, lr, s) in enumerate(forms.run_list(budget))]
    configs = [config_of(budget, d, f, lr, s) for g, d, f, lr, s in forms.run_list(budget)]
    groups = {}
    for cell, config in zip(cells, configs):
        shared = (config.dataset,) + tuple(getattr(config, name) for name in runstack.SHARED)
        groups.setdefault(shared, []).append((cell, config))
    out = []
    for members in groups.values():
        n = max(1, min(workers, len(members) // MIN_STACK))
        for k in range(n):
            part = members[k::n]
            out.append(Task(tuple(c for c, _ in part), tuple(cfg for _, cfg in part), folder, budget, seed))
    return out


def _cost(task):
    """A task's work, roughly: its runs × its data dimension."""
    dataset = task.configs[0].dataset
    return len(task.cells) * datasets.sample_dataset(dataset, 1, np.random.default_rng(0)).shape[1]


def measure_all(context):
    """Every cell of the second edition, measured (module docstring); and each dataset's data-vs-data floor."""
    budget, seed = context.budget, context.seed
    folder = context.path("ranking")
    os.makedirs(os.path.join(folder, "runs"), exist_ok=True)
    work = tasks(budget, folder, seed, context.workers)
    done = {i: cached for i, task in enumerate(work) if (cached := _cached(task)) is not None}
    todo = [i for i in range(len(work)) if i not in done]
    todo.sort(key=lambda i: -_cost(work[i]))  # the largest first, so that the workers end together
    with open_bar(context.progress, sum(len(work[i].cells) for i in todo), "second edition, runs") as bar:
        for result, i in zip(pool_map(_run_and_cache, [work[i] for i in todo], context.workers), todo):
            done[i] = result
            bar.update(len(result))
    cells = sorted((c for result in done.values() for c in result), key=lambda c: c["index"])
    floors = {}
    for dataset in sorted({c["dataset"] for c in cells}):
        source = lambda n, rng, d=dataset: datasets.sample_dataset(d, n, rng)  # noqa: E731
        floors[dataset] = dict(zip(("mean", "stderr"), metrics.energy_floor(
            source, budget.rank_quality_n, _rng(seed, 7, _stream(dataset)), FLOOR_REPEATS)))
        checks_floor = metrics.energy_floor(source, budget.rank_check_n, _rng(seed, 8, _stream(dataset)), FLOOR_REPEATS)
        floors[dataset]["checks_mean"] = checks_floor[0]
    forms_by_name = {f.name: f for f in forms.FORMULATIONS + forms.SCHEDULE_VARIANTS}
    sources = {name: dict(source=f.source, target=f.target, weighting=f.weighting, t_sampling=f.t_sampling,
                          schedule=f.schedule, zero_terminal_snr=f.zero_terminal_snr)
               for name, f in forms_by_name.items()}
    return dict(settings=settings(budget), floors=floors, formulations=sources,
                ranked=[f.name for f in forms.FORMULATIONS], schedules=[f.name for f in forms.SCHEDULE_VARIANTS],
                datasets=list(forms.RANKED_DATASETS), exact_dataset=forms.EXACT_DATASET,
                stability_dataset=forms.STABILITY_DATASET,
                resolutions=[dict(dataset=d, side=side) for d, side in forms.RESOLUTIONS], base_side=forms.BASE_SIDE,
                shifts=list(forms.SHIFTS), cells=cells)
