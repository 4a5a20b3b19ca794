"""Drawing samples from a run folder: what `minidiff sample` does before it saves or plots them.

    samples = sample_run(SampleConfig(run_dir, n=2000, sampler="ddpm", …), progress=None)

The run is loaded (config, network, standardisation, checkpoint); its EMA or raw weights become the model
(`train.model_fn`); `sample.sample` draws from it with the generator default_rng(seed), so the same config gives
the same samples; they come back in the data's units (the run's standardisation undone). Each refusal is a
UsageError, before any drawing: a run that cannot be loaded, more steps than its T, more numbers than a data file
may hold (datafile.MAX_VALUES), a sampler option the run cannot use, or, with held_out, data that cannot be read.
"""
import dataclasses
from typing import NamedTuple, Optional

import numpy as np

from minidiff import data
from minidiff.errors import RunError, UsageError, check_number
from minidiff.runs import checkpoint, datafile, folder, loop
from minidiff.runs.progress import open_bar
from minidiff.sample import sample
from minidiff.train import make_problem, model_fn


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """What to draw from the run in run_dir; the defaults are `minidiff sample`'s."""
    run_dir: str
    n: int = 2000
    sampler: str = "ddpm"  # sample.SAMPLERS
    steps: int = None  # None: the run's T
    spacing: str = None  # schedules.SPACINGS; None: sample.sample's (karras for the ODE, else linspace)
    eta: float = 0.0  # DDIM's η
    variance: str = "beta_tilde"  # DDPM's σ_t²: forward.VARIANCES
    clip: float = None  # clip x0_hat to ±clip
    weights: str = "ema"  # folder.WEIGHTS
    seed: int = 0
    held_out: bool = False  # also read the run's held-out points (what a plot shows the samples against)


class Samples(NamedTuple):
    """The samples (n, D) in the data's units, the run's held-out points (with held_out, else None), a title, and
    the shape of one image for image data (None otherwise: how a plot draws them)."""
    x: np.ndarray
    held: Optional[np.ndarray]
    title: str
    image_shape: Optional[tuple] = None


def sample_run(config, progress=None):
    """Samples of the run in config.run_dir (module docstring); progress: a bar factory (runs/progress.py)."""
    run_config, network, stats, state = _load(config)
    held = _held_out(run_config) if config.held_out else None
    x = _draw(config, run_config, state, (config.n, network.data_dim), progress)
    broken = int(np.sum(~np.all(np.isfinite(x), axis=1)))
    if broken:  # never written as if they were samples
        raise RunError(f"{broken} of {len(x)} samples from run {config.run_dir!r} are NaN or Inf: its model has "
                       f"diverged ({config.weights} weights); nothing was written")
    if stats is not None:
        x = datafile.unstandardize(x, stats)
    image_shape = None if run_config.data_file else data.DATASETS[run_config.dataset].image_shape
    return Samples(x, held, f"{config.sampler}, {config.steps or run_config.T} steps", image_shape)


def _draw(config, run_config, state, shape, progress):
    """The sampler's draws of `shape` from the run's model (in the model's space)."""
    problem = make_problem(run_config)
    model = model_fn(state.ema if config.weights == "ema" else state.params, problem, run_config)
    try:
        with open_bar(progress, config.steps or run_config.T, f"sampling ({config.sampler})") as bar, \
                np.errstate(over="ignore", invalid="ignore"):  # a broken model is reported by the caller
            return sample(model, problem.target, problem.schedule, shape, np.random.default_rng(config.seed),
                          sampler=config.sampler, steps=config.steps, spacing=config.spacing, eta=config.eta,
                          variance=config.variance, clip=config.clip, progress=bar.update)
    except ValueError as err:  # an option the run cannot use (a spacing, a start at zero SNR), found before drawing
        raise UsageError(str(err)) from None


def _load(config):
    """(config, network, stats, state) of the run; a UsageError if it cannot be loaded or the request is too large
    for it."""
    try:
        run_config, network, stats, state = folder.load_run(config.run_dir)
    except checkpoint.CheckpointError as err:
        raise UsageError(f"cannot load run {config.run_dir!r}: {err}") from None
    check_number(config.eta, "--eta", low_open=False)
    if config.clip is not None:
        check_number(config.clip, "--clip")
    if config.steps is not None and config.steps > run_config.T:
        raise UsageError(f"at most T = {run_config.T} steps", option="--steps")
    if config.n * network.data_dim > datafile.MAX_VALUES:
        raise UsageError(f"{config.n} samples of {network.data_dim} numbers are more than {datafile.MAX_VALUES}",
                         option="--n")
    if run_config.data_file:  # the data travel with the run: a changed or deleted file is refused here too
        datafile.load_run_data(run_config.data_file, run_config.data_sha256)
    return run_config, network, stats, state


def _held_out(run_config):
    """The run's held-out points, drawn or read as training drew or read them."""
    try:
        return loop.load_training_data(run_config, loop.generators(run_config.seed)[0])[1]
    except datafile.DataError as err:
        raise UsageError(f"cannot plot against the run's data: {err}") from None
