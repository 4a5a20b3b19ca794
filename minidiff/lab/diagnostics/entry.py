"""The diagnostics as entry points: a config dataclass and one function each, for `minidiff gradvar`, `landscape`
and `sweep`.

    gradvar(GradvarConfig(...), progress) -> Report       gradient noise (applied.gradvar_*)
    landscape(LandscapeConfig(...), progress) -> Report   loss landscapes (applied.landscape_*)
    sweep(SweepRequest(...), progress, echo) -> Report    a stability sweep (sweep.run_sweep)

Each checks everything it is given before any work — its output files, its run folders, the values that only
the measurement can judge — and refuses with a UsageError; then it measures, writes its files (reports.py) and
returns the lines to print with the paths it wrote. The defaults are the commands'.
"""
import dataclasses
import math
import os
import shutil
from typing import NamedTuple

from minidiff.errors import RunError, UsageError, check_number
from minidiff.runs import checkpoint, files, folder
from minidiff.runs.progress import silent
from minidiff.targets import TARGETS
from minidiff.train import TrainConfig, validate
from minidiff.lab import reports
from minidiff.lab.diagnostics import applied, sweep as sweeps

DATA_EXTENSIONS = (".json",)
DEFAULT_WORKERS = os.cpu_count() or 1  # processes of a sweep: one per core


class Report(NamedTuple):
    """The lines a command prints, and the files it wrote, in order."""
    lines: list
    written: list


@dataclasses.dataclass(frozen=True)
class GradvarConfig:
    """Gradient noise at initialisation for every schedule × target × weighting (no runs), or of trained run
    folders at their checkpoints and along their parameter snapshots."""
    runs: tuple = ()
    dataset: str = TrainConfig.dataset
    schedules: tuple = ("cosine", "linear")
    targets: tuple = TARGETS
    weightings: tuple = ("uniform", "min-snr", "elbo")
    own_weighting: bool = True  # with runs: each run's own weighting instead of `weightings`
    T: int = TrainConfig.T
    n: int = 4096  # examples (x_0, ε, t) whose gradients are measured
    buckets: int = 10  # t- or λ-buckets
    by: str = "t"  # gradvar.BUCKET_KINDS
    hidden: int = TrainConfig.hidden
    depth: int = TrainConfig.depth
    weights: str = "ema"  # folder.WEIGHTS
    along: bool = True  # with runs: also at each parameter snapshot
    seed: int = 0
    out: str = "gradvar.json"
    plot: str = None  # None: out with .png


@dataclasses.dataclass(frozen=True)
class LandscapeConfig:
    """Loss landscapes of trained run folders, with the interpolation between the first two."""
    runs: tuple = ()
    span: float = 1.0  # slices reach α in [-span, span], in units of each filter's norm
    points: int = 41  # points of each 1-D slice (odd, so that α = 0 is one of them)
    grid: int = 15  # points per side of the 2-D slice
    n: int = 512  # examples in the one fixed batch
    weights: str = "ema"  # folder.WEIGHTS
    interpolate: bool = True
    seed: int = 0
    out: str = "landscape.json"
    plot: str = None  # None: out with .png


@dataclasses.dataclass(frozen=True)
class SweepRequest:
    """A stability sweep into the folder `out`: the grid, the options its cells share (short, small runs), the
    checks (sweep.SweepConfig's), and how many processes."""
    lrs: tuple = (1e-3, 1e-2, 1e-1, 1.0)
    targets: tuple = TARGETS
    schedules: tuple = ("cosine",)
    weightings: tuple = ("uniform",)
    seeds: tuple = (0, 1)
    dataset: str = TrainConfig.dataset
    T: int = TrainConfig.T
    steps: int = 2000
    batch_size: int = 128
    hidden: int = 64
    depth: int = 2
    check_every: int = sweeps.SweepConfig.check_every
    quality_n: int = sweeps.SweepConfig.quality_n
    quality_steps: int = sweeps.SweepConfig.quality_steps
    quality_bar: float = sweeps.SweepConfig.quality_bar
    workers: int = DEFAULT_WORKERS
    engine: str = sweeps.ENGINES[0]  # stacked: the cells that share a network trained as stacks (sweep.py)
    scheduler: str = None  # the Dask scheduler's address, for the dask engine
    out: str = "sweep"
    force: bool = False  # clear a sweep already in `out`
    resume: bool = False  # continue the sweep in `out` (after a kill), with the options it started with

    def settings(self):
        """The sweep.SweepConfig: every cell logs and checkpoints at each check."""
        base = dict(dataset=self.dataset, T=self.T, steps=self.steps, batch_size=self.batch_size, hidden=self.hidden,
                    depth=self.depth, log_every=self.check_every, checkpoint_every=self.check_every)
        return sweeps.SweepConfig(lrs=self.lrs, targets=self.targets, schedules=self.schedules,
                                  weightings=self.weightings, seeds=self.seeds, base=base, check_every=self.check_every,
                                  quality_n=self.quality_n, quality_steps=self.quality_steps,
                                  quality_bar=self.quality_bar)


def gradvar(config, progress=None):
    """Measure, write (data, CSV, figures) and tabulate the gradient noise that `config` asks for."""
    plot = data_and_plot(config.out, config.plot)
    loadable_runs(config.runs)
    if not config.runs:
        applied.check_measurable(config.dataset, config.schedules, config.targets, config.weightings, T=config.T)
    smallest_T = min([folder.load_config(r)[0].T for r in config.runs] or [config.T])
    if config.buckets > smallest_T:
        raise UsageError(f"at most T = {smallest_T} buckets", option="--buckets")
    measure = dict(n=config.n, n_buckets=config.buckets, by=config.by, seed=config.seed, progress=progress)
    scales = None
    if config.runs:
        weightings = (None,) if config.own_weighting else config.weightings
        records = applied.gradvar_of_runs(config.runs, weightings, weights=config.weights, along=config.along,
                                          **measure)
    else:
        records = applied.gradvar_at_init(config.dataset, config.schedules, config.targets, config.weightings,
                                          T=config.T, network=dict(hidden=config.hidden, depth=config.depth), **measure)
        scales = applied.target_study(config.dataset, config.schedules, config.targets, config.weightings, T=config.T,
                                      seed=config.seed)
    settings = dict(runs=config.runs, n=config.n, buckets=config.buckets, by=config.by, seed=config.seed)
    check_finite([r["all"][k] for r in records for k in ("mean_norm", "trace_cov")], "gradient noise")
    written = reports.write_gradvar(records, config.out, plot, settings, targets=scales)
    return Report(reports.gradvar_table(records), written)


def landscape(config, progress=None):
    """Measure, write (data, CSV, figures) and tabulate the loss landscapes that `config` asks for."""
    plot = data_and_plot(config.out, config.plot)
    if config.points % 2 == 0:
        raise UsageError(f"{config.points} is even; give an odd number so that α = 0 is on the slice",
                         option="--points")
    check_number(config.span, "--span")
    if not config.runs:
        raise UsageError("give at least one RUN folder")
    loadable_runs(config.runs)
    runs, pair = config.runs, config.interpolate and len(config.runs) >= 2
    if pair and not applied.same_network(runs[0], runs[1]):
        raise UsageError(f"runs {runs[0]!r} and {runs[1]!r} have different networks; use --no-interpolate")
    results = applied.landscapes_of_runs(runs, span=config.span, points=config.points, grid=config.grid, n=config.n,
                                         seed=config.seed, weights=config.weights, progress=progress)
    line = applied.interpolation_between(runs[0], runs[1], n=config.n, seed=config.seed,
                                         weights=config.weights) if pair else None
    check_finite([r["loss"] for r in results], "loss at the run's parameters")
    written = reports.write_landscape(results, line, config.out, plot)
    return Report(reports.landscape_table(results), written)


def sweep(request, *, progress=None, echo=silent):
    """Run, write and tabulate the sweep that `request` asks for, after checking the options its cells share and
    its folder; echo(line) hears what is about to run."""
    settings = request.settings()
    validate(TrainConfig(**settings.base, schedule=settings.schedules[0], target="v"))
    _check_engine(request)
    _prepare_sweep_out(request.out, request.force, request.resume, delete=False)
    os.makedirs(request.out, exist_ok=True)
    with files.exclusive(request.out, what="sweep folder"):  # one sweep writes here; force deletes under the lock
        _prepare_sweep_out(request.out, request.force, request.resume)
        if request.resume:
            sweeps.check_resumable(settings, request.out)
        count = len(sweeps.cells(settings))
        where = f"the Dask cluster at {request.scheduler}" if request.engine == "dask" else \
            f"{request.workers} worker(s)"
        echo(f"{count} runs of {request.steps} steps on {request.dataset}, engine {request.engine}, {where}, into "
             f"{request.out}")
        rows = sweeps.run_sweep(settings, request.out, workers=min(request.workers, count), progress=progress,
                                engine=request.engine, resume=request.resume, scheduler=request.scheduler)
        return Report(reports.sweep_table(rows), reports.write_sweep(rows, request.out))


def _check_engine(request):
    """The engine's name, and a scheduler exactly when the engine is dask."""
    if request.engine not in sweeps.ENGINES:
        raise UsageError(f"unknown engine {request.engine!r}; choose one of: {', '.join(sweeps.ENGINES)}",
                         option="--engine")
    if (request.engine == "dask") != (request.scheduler is not None):
        raise UsageError("--engine dask needs --scheduler ADDRESS, and --scheduler goes with --engine dask only")


RUN_OWNED = ("dataset", "schedules", "targets", "T", "hidden", "depth")  # gradvar RUN reads these from the run


def check_run_options(runs, given):
    """A UsageError for options that a run fixes (RUN_OWNED) given with RUN folders: they would be ignored."""
    owned = [f"--{name.replace('_', '-')}" for name in RUN_OWNED if name in given]
    if runs and owned:
        raise UsageError(f"{', '.join(owned)} come from the run; give them only without RUN")


def check_finite(numbers, what):
    """A RunError when the headline numbers of a measurement (the loss, the mean gradient norm, tr Σ) are NaN or
    Inf — a model whose predictions overflow: nothing is then written as if it were a measurement. (Other numbers
    may be NaN by right: B_simple where the unbiased |G|² is ≤ 0, the statistics of an empty λ-bucket.)"""
    if not all(math.isfinite(float(x)) for x in numbers):
        raise RunError(f"the {what} is NaN or Inf: the model's predictions are not finite (has it diverged?); "
                       f"nothing was written")


def check_lr(value):
    """`value`, if it is a positive number (a learning rate of a sweep's grid); a UsageError otherwise."""
    if not (value > 0 and math.isfinite(value)):
        raise UsageError(f"{value} is not a positive number")
    return value


def data_and_plot(out, plot):
    """The plot's path, after checking both: out must be .json, the plot defaults to out with .png."""
    files.check_output_file(out, DATA_EXTENSIONS)
    plot = plot or os.path.splitext(out)[0] + files.FIGURE_EXTENSIONS[0]
    files.check_output_file(plot, files.FIGURE_EXTENSIONS)
    return plot


def loadable_runs(runs):
    """A UsageError, before any work, for a run folder that holds no loadable run."""
    for run_dir in runs:
        try:
            folder.load_run(run_dir)
        except (checkpoint.CheckpointError, KeyError, TypeError, ValueError, OSError) as err:
            raise UsageError(f"cannot load run {run_dir!r}: {str(err).splitlines()[0]}") from None


def _prepare_sweep_out(out, force, resume=False, delete=True):
    """A UsageError for a file in the way, or a sweep already there without force or resume (force clears its runs,
    if delete; resume needs one there)."""
    files.check_output_folder(out)
    if force and resume:
        raise UsageError("--resume continues the sweep in --out and --force starts it again; give one of them")
    if resume:
        if not os.path.exists(os.path.join(out, sweeps.SETTINGS_FILE)):
            raise UsageError(f"folder {out!r} holds no sweep to resume (no {sweeps.SETTINGS_FILE})")
        return
    if os.path.exists(os.path.join(out, "sweep.json")) or os.path.isdir(os.path.join(out, "runs")):
        if not force:
            raise UsageError(f"folder {out!r} already holds a sweep; use --force to overwrite it, or --resume to "
                             f"continue it")
        if delete:
            shutil.rmtree(os.path.join(out, "runs"), ignore_errors=True)
