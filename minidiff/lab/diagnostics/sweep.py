"""Stability sweeps: train a grid of learning rate × target × schedule × weighting × seed and record what happens.

Each cell is one run in its own folder under OUT/runs, checked every `check_every` steps (`checks.py` says how,
`cell.py` what a cell's row holds). Three engines train the cells, with the same files and the same rows:

- stacked (the default): the cells that share a network shape are trained together as stacks
  (`runs.stack.train_stack`, `minidiff/stacked.py`: each run of a stack bit for bit as alone), one stack per worker
  process; a cell whose shape no other cell shares goes to the process pool.
- processes: one cell per task in a pool of `spawn`ed processes, each with one BLAS thread (more threads than cores
  only make every run slower) — the single-run path.
- dask: the stacks as tasks on an existing Dask cluster (`cluster.py`; the optional extra `minidiff[cluster]`).

The quality bar is `BAR_OVER_FLOOR` times the data-vs-data floor at the checks' sample size
(`metrics.energy_floor`, computed once per sweep: every cell shares the dataset and n).

Resume. `run_sweep(..., resume=True)` continues the sweep in OUT: cells that finished are read back from their
folder (`cell.finished`), the others go on from their checkpoints (cell.py, "Resume"); the settings must be those
the sweep started with (OUT/settings.json).

Progress: one bar over all cells' steps, with the count of cells that diverged so far.

Results: OUT/sweep.csv (one row per cell) and OUT/sweep.json (the settings, the rows and each cell's checks).
"""
import ctypes
import dataclasses
import multiprocessing
import os
import queue
import signal
import sys

import numpy as np

from minidiff.accel import backend
from minidiff.errors import Interrupted, UsageError
from minidiff import data, metrics
from minidiff.runs import checkpoint as ckpt, datafile, files, loop
from minidiff.runs.progress import Batched, open_bar
from minidiff.runs.stack import SHARED
from minidiff.train import TrainConfig
from minidiff.lab.diagnostics.applied import save_csv, save_json, to_plain
from minidiff.lab.diagnostics.checks import BLOWUP_FACTOR, EVAL_STREAM
from minidiff.lab.diagnostics.cell import Cell, Task, cell_name, finished, run_task
from minidiff.targets import TARGETS

BAR_OVER_FLOOR = 3.0       # the default quality bar: energy distance ≤ 3 × the data-vs-data floor
BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
ENGINES = ("stacked", "processes", "dask")
SETTINGS_FILE = "settings.json"
REPORT_EVERY = 0.2         # seconds between a worker's progress reports
PR_SET_PDEATHSIG = 1       # prctl(2): the signal a process gets when its parent dies (<linux/prctl.h>)
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


def stacks(members, n_stacks):
    """The cells grouped by what a stack shares (`runs.stack.SHARED`), each group dealt round-robin into at most
    n_stacks stacks (so that every stack gets cells of every learning rate, and the stacks end together); and the
    cells that share their shape with no other, to be trained alone."""
    groups = {}
    for index, config in members:
        groups.setdefault(tuple(getattr(config, name) for name in SHARED), []).append((index, config))
    together = [g[i::min(n_stacks, len(g))] for g in groups.values() if len(g) > 1 for i in range(min(n_stacks,
                                                                                                          len(g)))]
    alone = [g[0] for g in groups.values() if len(g) == 1]
    return together, alone


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


def run_sweep(sweep, out_dir, workers=1, progress=None, engine="stacked", resume=False, scheduler=None):
    """Run every cell with `engine` (ENGINES; in `workers` processes, or on the Dask cluster at `scheduler`), write
    OUT/sweep.csv and OUT/sweep.json; return the rows."""
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    _settings(sweep, out_dir, resume)
    floor, floor_err = floor_for(sweep)
    bar = sweep.quality_bar if sweep.quality_bar is not None else BAR_OVER_FLOOR * floor
    grid, results = cells(sweep), {}
    valid = []
    for index, config in grid:  # an invalid cell's row needs no engine
        row = Cell(index, config, sweep, out_dir, bar).first_row()
        if "status" in row:
            results[index] = (row, [])
        else:
            valid.append((index, config))
    total = sum(config.steps for _, config in valid)
    with open_bar(progress, total, "sweep", lambda diverged: None if diverged is None else f"{diverged} diverged") \
            as pbar:
        tally = _Tally(pbar)
        for index, config in valid:
            if resume and finished(os.path.join(out_dir, "runs", cell_name(index, config))) is not None:
                tally(config.steps, 0)  # done before: its steps are done
        try:
            done = _run(engine, valid, sweep, out_dir, bar, resume, workers, scheduler, tally)
        except (KeyboardInterrupt, Interrupted):  # keep what finished, say so, and stop
            return _interrupted(sweep, out_dir, valid, results, floor, floor_err)
    for row, history in done:
        results[row["index"]] = (row, history)
    return _write(sweep, out_dir, results, floor, floor_err)


def _run(engine, valid, sweep, out_dir, bar, resume, workers, scheduler, tally):
    """The (row, checks) of every valid cell, trained by `engine`."""
    if engine == "dask":
        from minidiff.lab.diagnostics import cluster  # the one module that imports dask (an optional extra)
        return cluster.run_on_cluster(lambda n: tasks(valid, sweep, out_dir, bar, resume, n), scheduler, tally)
    return _run_local(tasks(valid, sweep, out_dir, bar, resume, workers if engine == "stacked" else 0), workers,
                      tally)


def _interrupted(sweep, out_dir, valid, results, floor, floor_err):
    """After Ctrl-C or SIGTERM: the rows of the cells that finished, written as an interrupted sweep
    (sweep.json's "interrupted"), then Interrupted — `--resume` trains the rest."""
    for index, config in valid:
        done = finished(os.path.join(out_dir, "runs", cell_name(index, config)))
        if done is not None:
            results[index] = done
    _write(sweep, out_dir, results, floor, floor_err, interrupted=True)
    count = sum(1 for index, _ in valid if index in results)
    raise Interrupted(f"sweep interrupted: {count} of {len(valid)} cells finished, their rows are in "
                      f"{os.path.join(out_dir, 'sweep.csv')} (marked interrupted in sweep.json); continue with "
                      f"--resume") from None


def _settings(sweep, out_dir, resume):
    """Write OUT/settings.json, or with resume check that the sweep there was started with these settings."""
    os.makedirs(os.path.join(out_dir, "runs"), exist_ok=True)
    if resume:
        check_resumable(sweep, out_dir)
    files.save_json(os.path.join(out_dir, SETTINGS_FILE), to_plain(dataclasses.asdict(sweep)))


def check_resumable(sweep, out_dir):
    """A UsageError unless the sweep in out_dir (if any) was started with these settings."""
    path, settings = os.path.join(out_dir, SETTINGS_FILE), to_plain(dataclasses.asdict(sweep))
    if os.path.exists(path):
        saved = ckpt.load_json(path)
        if saved != settings:
            differ = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
            raise UsageError(f"the sweep in {out_dir} was started with other settings ({', '.join(differ)} differ); "
                             f"give the same options to resume it")


class _Tally:
    """The progress bar's count: run-steps done and cells diverged (each worker reports its own)."""

    def __init__(self, bar):
        self.bar, self.diverged = bar, 0

    def __call__(self, steps, diverged):
        self.diverged += int(diverged)
        self.bar.update(steps, self.diverged)


def tasks(valid, sweep, out_dir, bar, resume, n_stacks):
    """The cells as cell.Tasks: at most n_stacks stacks of the cells that share a network shape (none for
    n_stacks 0: every cell alone), and one task per cell that trains alone."""
    together, alone = stacks(valid, n_stacks) if n_stacks > 0 else ([], valid)
    return [Task(tuple(group), sweep, out_dir, bar, resume) for group in together] + [
        Task(((index, config),), sweep, out_dir, bar, resume, stacked=False) for index, config in alone]


def _run_local(work, workers, tally):
    """The tasks on this machine: in this process (one worker), or in a pool of processes."""
    if workers <= 1 or len(work) <= 1:
        return [row for task in work for row in run_task(task, tally)]
    reports = multiprocessing.get_context("spawn").Queue()
    pool = _spawn_pool(min(workers, len(work)), reports)
    try:
        pending = [pool.apply_async(_reporting, (task,)) for task in work]
        while not all(job.ready() for job in pending):
            _drain(reports, tally, timeout=REPORT_EVERY)
        _drain(reports, tally, timeout=0)
        return [row for job in pending for row in job.get()]
    except BaseException:  # Ctrl-C, SIGTERM: stop the workers now, not after their cells
        pool.terminate()
        raise
    finally:
        pool.close()
        pool.join()


_reports = None  # in a worker: the queue its progress goes to (`_start_worker`)


def _start_worker(reports):
    """A pool worker's start: keep the progress queue, and die with the parent — a sweep killed with SIGKILL
    takes its workers with it, so that nothing writes into its folder after it (Linux: PR_SET_PDEATHSIG)."""
    global _reports
    _reports = reports
    loop.leave_signals_to_parent()  # Ctrl-C reaches the whole process group: the parent decides
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _reporting(task):
    """run_task in a worker, its progress sent to the parent through the queue."""
    report = Batched(lambda steps, diverged: _reports.put((steps, diverged)), REPORT_EVERY)
    try:
        return run_task(task, report)
    finally:
        report.flush()


def _drain(reports, tally, timeout):
    """Pass every report waiting in the queue on to the bar (waiting up to `timeout` for the first)."""
    try:
        item = reports.get(timeout=timeout) if timeout else reports.get_nowait()
        while True:
            tally(*item)
            item = reports.get_nowait()
    except queue.Empty:
        pass


def _spawn_pool(workers, reports):
    """A pool of `spawn`ed workers that start with one BLAS thread each (the variables are read at import), on the
    device of this process (backend.DEVICE_VARIABLE, read by each worker's first backend.get_xp())."""
    variables = {**{name: "1" for name in BLAS_THREAD_VARIABLES}, backend.DEVICE_VARIABLE: backend.device()}
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        return multiprocessing.get_context("spawn").Pool(workers, initializer=_start_worker, initargs=(reports,))
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def pool_map(function, jobs, workers):
    """function(job) for each job, in order, yielded as each is done: in this process for one worker (or one job),
    else in a pool of `spawn`ed workers with one BLAS thread each (`_spawn_pool`). function must be importable."""
    if workers <= 1 or len(jobs) <= 1:
        yield from map(function, jobs)
        return
    pool = _spawn_pool(min(workers, len(jobs)), multiprocessing.get_context("spawn").Queue())
    try:
        yield from pool.imap(function, jobs, chunksize=1)
    finally:
        pool.close()
        pool.join()


def _write(sweep, out_dir, results, floor, floor_err, interrupted=False):
    """OUT/sweep.csv and OUT/sweep.json from every cell's (row, checks); returns the rows. An interrupted sweep's
    files hold only the cells that finished, and sweep.json says it was interrupted."""
    rows = [dict(results[i][0], energy_floor=floor, energy_floor_stderr=floor_err) for i in sorted(results)]
    save_csv(os.path.join(out_dir, "sweep.csv"), rows, COLUMNS)
    save_json(os.path.join(out_dir, "sweep.json"), dict(settings=dataclasses.asdict(sweep), rows=rows,
                                                        checks={i: results[i][1] for i in sorted(results)},
                                                        **({"interrupted": True} if interrupted else {})))
    return rows
