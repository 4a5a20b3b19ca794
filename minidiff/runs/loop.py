"""A whole run: its data, the training loop, and at the end the samples and their quality.

    train(config, out_dir) -> RunResult

writes the run folder that `checkpoint.py` describes. Randomness comes from four generators spawned from the one
seed, so that drawing the data, initialising the network, training and evaluating never disturb each other:
a run is reproducible bit for bit from its config.

Exact resume. A checkpoint (`runfolder.save_checkpoint`) holds everything that changes from step to step: the
params, EMA params, Adam's moments, the training generator's state, the importance sampler's history, the loss
guard's window and the loss log's row under way. It is written at step 0, every config.checkpoint_every steps, at
the end, and when Ctrl-C or SIGTERM asks the loop to stop (after the step under way: `train_step` moves the
generator as it goes, so a step cut in the middle cannot be saved). A run killed at any moment, even by SIGKILL,
resumes from its last checkpoint and ends with the same bytes as a run never interrupted.

Divergence (`runlog.LossGuard`). A diverging step (a non-finite loss or gradient, or a loss explosion) stops
training (on_divergence="stop") with the step, the t range, the target and the learning rate, and the last good
checkpoint left on disk; or (on_divergence="skip-step") drops that update, counts it in the loss log, and stops only
after config.max_skips skipped steps in a row.
"""
import contextlib
import dataclasses
import os
import signal
import threading

import numpy as np

from minidiff import errors
from minidiff.runs import checkpoint as ckpt, files
from minidiff import data, metrics, nn, objective, optim
from minidiff.runs import datafile
from minidiff.accel.backend import to_device
from minidiff.runs.folder import load_checkpoint, on_device, save_checkpoint, save_config
# A name of run too: run.load_run, used across the package.
from minidiff.runs.folder import load_run  # noqa: F401
from minidiff.runs.log import LossGuard, LossLog
from minidiff.runs.progress import open_bar, silent
from minidiff.sample import sample
from minidiff.train import DTYPES, DivergenceError, TrainState, make_problem, model_fn, train_step

QUALITY_SAMPLES = 2000  # samples drawn at the end of a run and compared with as many held-out points
MIN_HELD_OUT = 2  # held-out points of a data file: the energy distance needs two
QUALITY_FILE = "quality.json"  # written last: a run folder that holds it has finished
SAMPLES_PLOT = "samples.png"  # the final samples against the held-out points, drawn by the plot the caller gives
PROGRESS_SMOOTHING = 0.98  # the progress bar's loss: an exponential moving average over about the last 50 steps
EXIT_INTERRUPTED = 130  # 128 + SIGINT: the shell's exit status for a program stopped by Ctrl-C


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What `train` returns: the steps done, the last accepted loss, and the quality (NaN where not measured)."""
    out_dir: str
    steps: int
    final_loss: float
    energy_distance: float
    energy_floor: float
    energy_floor_stderr: float
    skipped_steps: int = 0


class Interrupted(errors.Interrupted):
    """Training was stopped by the user (Ctrl-C or SIGTERM); the message says which checkpoint holds the run."""


def generators(seed):
    """Independent generators for data, init, training and evaluation, all from one seed (NumPy SeedSequence)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)]


def load_training_data(config, rng):
    """(train, held_out, stats): training points, 2000 held-out points, and the standardisation (or None)."""
    if config.data_file:
        points = datafile.load_run_data(config.data_file, config.data_sha256)
        points = points[rng.permutation(len(points))]
        held_out = min(QUALITY_SAMPLES, len(points) // 5)
        if held_out < MIN_HELD_OUT:
            raise datafile.DataError(f"data file {config.data_file!r} has {len(points)} rows; a run holds a fifth of "
                                     f"them out to measure its samples, at least {MIN_HELD_OUT}: give at least "
                                     f"{5 * MIN_HELD_OUT} rows")
        x_train, x_held = points[held_out:], points[:held_out]
    else:
        x_train = data.sample_dataset(config.dataset, config.n_train, rng)
        x_held = data.sample_dataset(config.dataset, QUALITY_SAMPLES, rng)
    stats = None
    if config.standardize:
        x_train, stats = datafile.standardize(x_train)
    return x_train, x_held, stats


def initial_state(config, data_dim, init_rng, train_rng):
    params = nn.init(init_rng, config.network(data_dim), dtype=DTYPES[config.dtype])
    return TrainState(step=0, params=params, ema={k: v.copy() for k, v in params.items()},
                      adam=optim.adam_init(params), rng=train_rng,
                      timesteps=objective.timestep_sampler(config))


# --- the loop -------------------------------------------------------------------------------------------------

def train(config, out_dir, *, resume=False, progress=None, echo=silent, evaluate=True, stop_at=None, plot=None):
    """Train `config` into out_dir (or continue the run there with resume=True); returns a RunResult.

    progress: a bar factory (`minidiff/runs/progress.py`); echo(text) says what the run reports; plot(x, x_held,
    title, path), if given, draws the final samples against the held-out points into samples.png (the CLI passes
    `minidiff.lab.figures.save_samples`: drawing is the lab's, not the run's).

    evaluate=False skips the samples and the quality measurement at the end (the result then has NaN there);
    stop_at=n stops after step n as an interruption would, leaving a checkpoint to resume from.
    """
    config = with_data_checksum(config)
    opened = open_run(config, out_dir, resume)
    state, guard = _loop(opened.state, opened.guard, opened.problem, config, opened.x_train, opened.log, out_dir,
                         progress, stop_at)
    save_checkpoint(out_dir, state, guard, opened.log, config)
    loss = last_loss(guard)
    if guard.skipped:
        echo(f"skipped {guard.skipped} step(s) whose loss diverged (column 'skipped' of {ckpt.LOG_FILE})")
    if not evaluate or state.step < config.steps:
        return RunResult(out_dir, state.step, loss, float("nan"), float("nan"), float("nan"), guard.skipped)
    return finish(out_dir, state, opened.problem, config, opened.x_held, opened.stats, opened.eval_rng, loss, echo,
                  guard.skipped, plot)


@dataclasses.dataclass(eq=False)
class OpenRun:
    """A run ready to train: its data and loss constants, and its state, guard and loss log (fresh or resumed)."""
    problem: object
    x_train: object
    x_held: object
    stats: dict
    eval_rng: np.random.Generator
    state: object
    guard: LossGuard
    log: LossLog


def open_run(config, out_dir, resume):
    """The run of `config` in out_dir, fresh or (resume=True) continued from its checkpoint there (`_start`).

    The config must carry its data file's checksum, if it has a data file (`with_data_checksum`)."""
    data_rng, init_rng, train_rng, eval_rng = generators(config.seed)
    x_train, x_held, stats = load_training_data(config, data_rng)
    problem = make_problem(config)
    x_train = x_train.astype(problem.dtype)
    if config.randomness == "counter":  # drawn where the arrays live (train.draw_batch); 'numpy' draws on the host
        x_train = to_device(x_train)
    network = config.network(x_train.shape[1])
    state, guard, log = _start(out_dir, config, network, stats, (init_rng, train_rng), resume)
    return OpenRun(problem, x_train, x_held, stats, eval_rng, state, guard, log)


def with_data_checksum(config):
    """The config with its data file's SHA-256, if it has a data file and no checksum yet: the data travels with the
    run as its checksum."""
    if config.data_file and config.data_sha256 is None:
        return dataclasses.replace(config, data_sha256=datafile.file_checksum(config.data_file))
    return config


def last_loss(guard):
    """The last accepted loss (restored on resume too), NaN before any."""
    return guard.recent[-1] if guard.recent else float("nan")


def _start(out_dir, config, network, stats, rngs, resume):
    """(state, guard, loss log) of a fresh run, or of the run in out_dir continued from its checkpoint.

    Writes config.json (again on resume: it may change the RESUMABLE options) and opens the loss log; a fresh run
    saves its step-0 checkpoint at once, so that there is always a last good checkpoint."""
    os.makedirs(out_dir, exist_ok=True)
    files.remove_temporaries(out_dir)
    resume = resume and os.path.exists(os.path.join(out_dir, ckpt.CHECKPOINT_FILE))  # else: killed before step 0
    if resume:
        state, guard, pending = load_checkpoint(out_dir, config, network)
        state = on_device(state)
    else:
        state, guard, pending = initial_state(config, network.data_dim, *rngs), LossGuard(), None
    save_config(out_dir, config, network, stats)
    log = LossLog(os.path.join(out_dir, ckpt.LOG_FILE), config.T, resume_at=state.step if resume else None,
                  pending=pending)
    if not resume:
        save_checkpoint(out_dir, state, guard, log, config)
    return state, guard, log


def _loop(state, guard, problem, config, x_train, log, out_dir, progress, stop_at):
    """Step until config.steps (or stop_at); checkpoint every config.checkpoint_every steps and when asked to stop."""
    end = config.steps if stop_at is None else min(stop_at, config.steps)
    saved, running = state.step, None  # saved: the step of the checkpoint on disk
    show = lambda _: None if running is None else f"loss {running:.4f}"  # noqa: E731
    try:
        with stop_requests() as requested, np.errstate(over="ignore", invalid="ignore", divide="ignore"), \
                _progress_bar(end - state.step, progress, show) as bar:  # (the guard reports NaN/Inf)
            while state.step < end and not requested:
                state, guard, loss = _step(state, guard, problem, config, x_train, log, out_dir, saved)
                running = _smoothed(running, loss)
                if state.step % config.checkpoint_every == 0:
                    saved = save_checkpoint(out_dir, state, guard, log, config)
                bar.update(1)
            if requested:
                save_checkpoint(out_dir, state, guard, log, config)
                raise Interrupted(f"interrupted ({signal.Signals(requested[0]).name}) at step {state.step}; "
                                  f"checkpoint saved, continue with --resume")
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once
        raise Interrupted(f"stopped at once; the checkpoint of step {saved} is kept, continue from it with "
                          f"--resume") from None
    finally:
        log.close()
    return state, guard


def _progress_bar(length, progress, show):
    """The progress bar over `length` steps (`minidiff/runs/progress.py`); show(item) gives the text beside it."""
    return open_bar(progress, length, "training", show)


def _smoothed(running, loss):
    """The progress bar's running loss after `loss` (a skipped step, loss NaN, leaves it as it was)."""
    if not np.isfinite(loss):
        return running
    return loss if running is None else PROGRESS_SMOOTHING * running + (1 - PROGRESS_SMOOTHING) * loss


def _step(state, guard, problem, config, x_train, log, out_dir, saved):
    """One training step through the guard: (state, guard, loss); a skipped step has loss NaN."""
    try:
        state, loss, grad_norm, t, per_example = train_step(state, problem, config, x_train, loss_median(guard, config))
    except DivergenceError as err:
        state = dataclasses.replace(state, step=state.step + 1)  # state.rng has drawn the batch; the update is dropped
        return state, skip_or_stop(err, state.step, guard, config, log, out_dir, saved), float("nan")
    return state, accept(state.step, loss, grad_norm, t, per_example, guard, config, log), loss


def loss_median(guard, config):
    """The running median the next step's loss is compared with (None: not known yet, or the check is off)."""
    return guard.median() if np.isfinite(config.explosion_factor) else None


def accept(step, loss, grad_norm, t, per_example, guard, config, log):
    """A sound step, the `step`-th, into the loss log and the guard; returns the guard."""
    log.add(step, loss, grad_norm, t, per_example, force=_row_due(step, config))
    return guard.accept(loss)


def skip_or_stop(err, step, guard, config, log, out_dir, saved):
    """A diverging step, the `step`-th: skipped and counted in the loss log (returns the guard), or the
    DivergenceError that stops the run, naming its last good checkpoint (the one of step `saved`)."""
    if config.on_divergence == "stop" or guard.in_a_row >= config.max_skips:
        streak = "" if config.on_divergence == "stop" else \
            f", after {guard.in_a_row} skipped steps in a row (--max-skips {config.max_skips})"
        raise DivergenceError(f"training diverged at {err}{streak}; the last good checkpoint is "
                              f"{os.path.join(out_dir, ckpt.CHECKPOINT_FILE)} (step {saved})", err.step) from None
    log.skip(step, force=_row_due(step, config))
    return guard.skip()


def _row_due(step, config):
    return step % config.log_every == 0 or step == config.steps


_signals_left_to_parent = False


def leave_signals_to_parent():
    """In a worker process: Ctrl-C is ignored (it reaches the whole process group; the parent stops the sweep) and
    SIGTERM ends the process at once, as the parent's pool.terminate() expects; training installs no handler."""
    global _signals_left_to_parent
    _signals_left_to_parent = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def stop_requests():
    """While open, Ctrl-C (SIGINT) and SIGTERM only ask the loop to stop: the list it yields gets the signal's number.
    After the first Ctrl-C a second one raises KeyboardInterrupt at once. Outside the main thread, where Python
    allows no signal handlers, Ctrl-C keeps its usual meaning; so it does in a worker process of a sweep, whose
    parent decides for it (`leave_signals_to_parent`)."""
    requested = []
    if _signals_left_to_parent or threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def ask(signum, frame):
        requested.append(signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = {s: signal.signal(s, ask) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)


# --- the end of a run -----------------------------------------------------------------------------------------

def finish(out_dir, state, problem, config, x_held, stats, eval_rng, loss, echo, skipped=0, plot=None):
    """Sample from the EMA weights, save samples and plot, and measure the energy distance against held-out data."""
    x = _final_samples(out_dir, state, problem, config, (len(x_held), x_held.shape[1]), stats, eval_rng)
    distance = metrics.energy_distance(x, x_held)
    floor, floor_err = metrics.energy_floor(_data_source(config), len(x_held), eval_rng)
    result = RunResult(out_dir, state.step, loss, distance, floor, floor_err, skipped)
    if plot is not None:
        image_shape = None if config.data_file else data.DATASETS[config.dataset].image_shape
        plot(x, x_held, f"{config.dataset}: {config.target}, {config.schedule}", os.path.join(out_dir, SAMPLES_PLOT),
             image_shape=image_shape)
    quality = {k: v for k, v in dataclasses.asdict(result).items() if k != "out_dir"}  # a folder may move
    files.save_json(os.path.join(out_dir, QUALITY_FILE), quality)  # last: it marks the run as finished
    echo(f"energy distance of {len(x)} samples to held-out data: {distance:.5f} "
         f"(data-vs-data floor {floor:.5f} ± {floor_err:.5f})")
    return result


def _final_samples(out_dir, state, problem, config, shape, stats, eval_rng):
    """Samples of `shape` from the EMA weights, in the data's units, saved as samples.npy; NaN or Inf samples
    mean the model has diverged (DivergenceError, and nothing saved)."""
    model = model_fn(state.ema, problem, config)
    with np.errstate(over="ignore", invalid="ignore"):  # a broken model is reported below, not warned about
        x = sample(model, problem.target, problem.schedule, shape, eval_rng)
    if stats is not None:
        x = datafile.unstandardize(x, stats)
    broken = int(np.sum(~np.all(np.isfinite(x), axis=1)))
    if broken:  # never written as if they were samples
        raise DivergenceError(f"training ended at step {state.step}, but {broken} of {len(x)} samples from its EMA "
                              f"weights are NaN or Inf: the model has diverged (see {ckpt.LOG_FILE})", state.step)
    files.atomic_write(os.path.join(out_dir, "samples.npy"), lambda f: np.save(f, x))
    return x


def _data_source(config):
    """(n, rng) -> n fresh points of the run's data, for the energy floor: for the user's file, resamples of its
    points (the best a model of this file can do)."""
    if config.data_file:
        points = datafile.load_data_file(config.data_file)
        return lambda n, rng: points[rng.choice(len(points), n)]
    return lambda n, rng: data.sample_dataset(config.dataset, n, rng)
