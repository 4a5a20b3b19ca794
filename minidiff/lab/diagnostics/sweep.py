"""Stability sweeps: train a grid of learning rate × target × schedule × weighting × seed and record what happens.

Each cell is one run (`trajectory.train_with_snapshots`, so its parameters are kept every `check_every` steps for
`minidiff landscape`) in its own folder under OUT/runs, run in parallel across local cores: a pool of `spawn`ed
processes, each with one BLAS thread (more threads than cores only make every run slower). Every `check_every`
steps — and at step 0 — the EMA model is checked on its own generator, never the run's:

- the training loss of the EMA weights on one fixed evaluation batch (the run's own target and weighting);
- the energy distance of `quality_n` ancestral samples (DDPM respaced to `quality_steps` steps) to as many
  held-out points. (Not DDIM: from t = T − 1 of the cosine schedule, where ᾱ ≈ 2e-9, its first deterministic step
  multiplies an ε-model's error by √(ᾱ_prev / ᾱ_{T−1}), and ε-runs would look broken when they are not.)

A cell has diverged when training raises `train.DivergenceError` (a non-finite or exploding loss or gradient), or
when the evaluation loss is non-finite or grows `blowup_factor` times above its value at initialisation. Its
"steps to the bar" is the first checked step whose energy distance is at most the quality bar — by default
`BAR_OVER_FLOOR` times the data-vs-data floor at the same sample size (`metrics.energy_floor`, computed once per
sweep: every cell shares the dataset and n). The final quality is the last check's energy distance, printed with
that floor. A cell that finishes also gets its bound on the negative log-likelihood of those held-out points,
−ELBO in nats per example and bits per dimension (`minidiff.elbo`, all T terms: t_sampling='exact').

Results: OUT/sweep.csv (one row per cell) and OUT/sweep.json (the settings, the rows and each cell's checks).
"""
import dataclasses
import multiprocessing
import os
import time
import warnings

import numpy as np

from minidiff.accel import backend
from minidiff import data, metrics
from minidiff.runs import datafile, loop as run
from minidiff.runs.progress import open_bar, silent
from minidiff.elbo import elbo
from minidiff.sample import sample
from minidiff.train import ConfigError, DivergenceError, TrainConfig, make_problem, model_fn, validate
from minidiff.lab.diagnostics import gradvar, landscape, trajectory
from minidiff.lab.diagnostics.applied import save_csv, save_json
from minidiff.targets import TARGETS

BAR_OVER_FLOOR = 3.0       # the default quality bar: energy distance ≤ 3 × the data-vs-data floor
BLOWUP_FACTOR = 100.0      # an evaluation loss 100 × its initial value counts as divergence
BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
EVAL_STREAM = 1            # the checks' generator: SeedSequence([seed, EVAL_STREAM]), apart from the run's four
COLUMNS = ("index", "lr", "target", "schedule", "weighting", "seed", "status", "diverged", "diverged_at_step",
           "last_good_step",
           "steps_to_bar", "final_loss", "final_eval_loss", "energy_distance", "energy_floor", "energy_floor_stderr",
           "quality_bar", "elbo_nats", "elbo_bits_per_dim", "elbo_stderr_nats", "wall_s", "reason", "run_dir")


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """The grid and the checks. `base` holds the TrainConfig options shared by every cell."""
    lrs: tuple = (1e-3, 1e-2)
    targets: tuple = TARGETS
    schedules: tuple = ("cosine",)
    weightings: tuple = ("uniform",)
    seeds: tuple = (0,)
    base: dict = dataclasses.field(default_factory=dict)
    check_every: int = 250
    eval_n: int = 512
    quality_n: int = 500
    quality_steps: int = 100
    quality_bar: float = None      # None: BAR_OVER_FLOOR × the floor
    blowup_factor: float = BLOWUP_FACTOR


def cells(sweep):
    """[(index, TrainConfig)] for every point of the grid, in a fixed order."""
    grid = [(lr, target, schedule, weighting, seed) for lr in sweep.lrs for target in sweep.targets
            for schedule in sweep.schedules for weighting in sweep.weightings for seed in sweep.seeds]
    return [(i, TrainConfig(**{**sweep.base, "lr": lr, "target": target, "schedule": schedule,
                               "weighting": weighting, "seed": seed}))
            for i, (lr, target, schedule, weighting, seed) in enumerate(grid)]


def cell_name(index, config):
    return f"{index:03d}-{config.target}-{config.schedule}-{config.weighting}-lr{config.lr:g}-s{config.seed}"


class BlowUp(RuntimeError):
    """The evaluation loss became non-finite or grew beyond blowup_factor times its initial value."""

    def __init__(self, message, step):
        super().__init__(message)
        self.step = step


class Checks:
    """The periodic checks of one cell (module docstring), called with the state after each segment."""

    def __init__(self, config, sweep):
        self.config, self.sweep, self.history = config, sweep, []
        self.rng = np.random.default_rng([config.seed, EVAL_STREAM])
        x_train, self.x_held, self.stats = run.load_training_data(config, run.generators(config.seed)[0])
        self.problem = make_problem(dataclasses.replace(config, dtype="float64"))
        self.batch = gradvar.draw_examples(x_train, sweep.eval_n, config.T, self.rng)

    def __call__(self, state):
        params = {k: np.asarray(v, dtype=np.float64) for k, v in state.ema.items()}
        with np.errstate(all="ignore"):
            loss = landscape.loss_at(params, self.problem, self.batch)
            energy = self.energy(params) if np.isfinite(loss) else float("nan")
        self.history.append(dict(step=state.step, eval_loss=loss, energy_distance=energy))
        first = self.history[0]["eval_loss"]
        if not np.isfinite(loss) or loss > self.sweep.blowup_factor * first:
            raise BlowUp(f"step {state.step}: evaluation loss {loss:.4g} (at initialisation {first:.4g})", state.step)

    def energy(self, params):
        model = model_fn(params, self.problem, self.config)
        x = sample(model, self.problem.target, self.problem.schedule, (self.sweep.quality_n, self.x_held.shape[1]),
                   self.rng, sampler="ddpm", steps=min(self.sweep.quality_steps, self.config.T))
        if self.stats is not None:
            x = datafile.unstandardize(x, self.stats)
        if not np.all(np.isfinite(x)):
            return float("inf")
        distance = metrics.energy_distance(x, self.x_held[:self.sweep.quality_n])
        return distance if np.isfinite(distance) else float("inf")  # points so far out that distances overflow

    def bound(self, params):
        """{elbo_nats, elbo_bits_per_dim, elbo_stderr_nats} of the EMA model on quality_n held-out points."""
        model = model_fn(params, self.problem, self.config)
        with np.errstate(all="ignore"):
            result = elbo(model, self.problem.schedule, self.x_held[:self.sweep.quality_n], target=self.problem.target,
                          rng=self.rng, stats=self.stats)
        return dict(elbo_nats=result.nats, elbo_bits_per_dim=result.bits_per_dim, elbo_stderr_nats=result.stderr_nats)


def run_cell(task):
    """One cell, start to finish: its CSV row and its checks. Runs in a worker process; never raises."""
    index, config, sweep, out_dir, bar = task
    row = dict(index=index, lr=config.lr, target=config.target, schedule=config.schedule,
               weighting=config.weighting, seed=config.seed, quality_bar=bar)
    try:
        validate(config)
    except ConfigError as err:
        return dict(row, status="invalid", reason=str(err)), []
    started, run_dir, checks = time.perf_counter(), os.path.join(out_dir, "runs", cell_name(index, config)), None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # a diverging run overflows on purpose; its row says so
        try:
            checks = Checks(config, sweep)
            outcome = _train(config, run_dir, sweep, checks)
        except Exception as err:  # noqa: BLE001  (one failed cell must not stop the sweep; its row says why)
            outcome = dict(status="error", reason=f"{type(err).__name__}: {err}")
    history = checks.history if checks else []
    row.update(outcome, run_dir=run_dir, diverged=int(outcome["status"] in ("diverged", "blow-up")))
    passed = history[:-1] if outcome["status"] == "blow-up" else history  # the check that failed did not pass
    row["last_good_step"] = passed[-1]["step"] if passed else None
    reached = [h["step"] for h in history if h["energy_distance"] <= bar]
    row["steps_to_bar"] = reached[0] if reached else None
    row["wall_s"] = round(time.perf_counter() - started, 2)
    return row, history


def _train(config, run_dir, sweep, checks):
    """Train one cell with its checks; the outcome's columns (status, reason, and for a finished run its quality)."""
    try:
        result = trajectory.train_with_snapshots(config, run_dir, sweep.check_every, on_segment=checks,
                                                 evaluate=False, echo=silent)
    except (DivergenceError, BlowUp) as err:
        return dict(status="diverged" if isinstance(err, DivergenceError) else "blow-up", reason=str(err),
                    diverged_at_step=getattr(err, "step", None))
    last = checks.history[-1]
    ema = {k: np.asarray(v, dtype=np.float64) for k, v in run.load_run(run_dir)[3].ema.items()}
    return dict(status="ok", reason="", final_loss=result.final_loss, final_eval_loss=last["eval_loss"],
                energy_distance=last["energy_distance"], **checks.bound(ema))


def _spawn_pool(workers):
    """A pool of `spawn`ed workers that start with one BLAS thread each (the variables are read at import), on the
    device of this process (backend.DEVICE_VARIABLE, read by each worker's first backend.get_xp())."""
    variables = {**{name: "1" for name in BLAS_THREAD_VARIABLES}, backend.DEVICE_VARIABLE: backend.device()}
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        return multiprocessing.get_context("spawn").Pool(workers)
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def floor_for(sweep):
    """(mean, stderr) of the data-vs-data energy distance at quality_n points: the floor every cell shares.

    Fresh draws from a toy dataset; for the user's file, resamples of its points (as `run.finish` does)."""
    config = TrainConfig(**sweep.base)
    if config.data_file:
        points = datafile.load_data_file(config.data_file)
        source = lambda n, rng: points[rng.choice(len(points), n)]  # noqa: E731
    else:
        source = lambda n, rng: data.sample_dataset(config.dataset, n, rng)  # noqa: E731
    return metrics.energy_floor(source, sweep.quality_n, np.random.default_rng([config.seed, EVAL_STREAM]))


def run_sweep(sweep, out_dir, workers=1, progress=None):
    """Run every cell (in `workers` processes), write OUT/sweep.csv and OUT/sweep.json; return the rows."""
    floor, floor_err = floor_for(sweep)
    bar = sweep.quality_bar if sweep.quality_bar is not None else BAR_OVER_FLOOR * floor
    os.makedirs(os.path.join(out_dir, "runs"), exist_ok=True)
    tasks = [(i, config, sweep, out_dir, bar) for i, config in cells(sweep)]
    results = {}
    pool = _spawn_pool(workers) if workers > 1 else None
    try:
        done = pool.imap_unordered(run_cell, tasks) if pool else map(run_cell, tasks)
        with open_bar(progress, len(tasks), "sweep") as pbar:
            for row, history in done:
                results[row["index"]] = (dict(row, energy_floor=floor, energy_floor_stderr=floor_err), history)
                pbar.update(1)
    finally:
        if pool:
            pool.close()
            pool.join()
    rows = [results[i][0] for i in sorted(results)]
    save_csv(os.path.join(out_dir, "sweep.csv"), rows, COLUMNS)
    save_json(os.path.join(out_dir, "sweep.json"), dict(settings=dataclasses.asdict(sweep), rows=rows,
                                                        checks={i: results[i][1] for i in sorted(results)}))
    return rows
