"""A training run from start to finish: data, the loop and its guard, checkpoints, and the samples at the end.

    train(config, out_dir) -> RunResult

writes the run folder that `checkpoint.py` describes. Randomness comes from four generators spawned from the one
seed, so that drawing the data, initialising the network, training and evaluating never disturb each other
(STYLE rule 7): a run is reproducible bit for bit from its config.

Exact resume. A checkpoint holds everything that changes from step to step: the params, EMA params, Adam's moments,
the training generator's state, the importance sampler's history, the loss guard's window and the loss log's row
under way. It is written at step 0, every config.checkpoint_every steps, at the end, and when Ctrl-C or SIGTERM
asks the loop to stop (after the step under way: `train_step` moves the generator as it goes, so a step cut in the
middle cannot be saved). A run killed at any moment, even by SIGKILL, resumes from its last checkpoint and ends
with the same bytes as a run never interrupted.

Divergence (`LossGuard`). A non-finite loss or gradient, or a loss above config.explosion_factor times the median of
the last EXPLOSION_WINDOW accepted losses, stops training (on_divergence="stop") with the step, the t range, the
target and the learning rate, and the last good checkpoint left on disk; or (on_divergence="skip-step") drops that
update, counts it in the loss log, and stops only after config.max_skips skipped steps in a row.
"""
import contextlib
import dataclasses
import json
import os
import signal
import statistics
import threading

import click
import numpy as np

from . import checkpoint as ckpt
from . import data, metrics, nn, optim
from .backend import bincount, get_xp, to_device, to_numpy
from .checkpoint import CheckpointError, FORMAT_VERSION  # noqa: F401  (part of this module's surface)
from .sample import sample
from .timesteps import HISTORY, make_timestep_sampler
from .train import (DTYPES, DivergenceError, TrainConfig, TrainState, make_problem, model_fn, train_step,  # noqa: F401
                    validate)

QUALITY_SAMPLES = 2000  # samples drawn at the end of a run and compared with as many held-out points
QUALITY_FILE = "quality.json"  # written last: a run folder that holds it has finished
LOSS_BUCKETS = 10  # the loss log reports the loss in 10 equal ranges of t
# The running median is over the last 100 accepted losses: one default log interval, enough for a stable median of
# heavy-tailed losses, short enough to follow the loss as it falls (a stale median is higher: the safe side).
EXPLOSION_WINDOW = 100
EXPLOSION_MIN_LOSSES = 10  # no explosion check before 10 losses are known (the first losses are the largest)
RESUMABLE = ("steps", "on_divergence", "explosion_factor", "max_skips")  # the options --resume may change
ADDED_OPTIONS = {"randomness": "numpy"}  # options newer than some checkpoints: what those runs did
EXIT_INTERRUPTED = 130  # 128 + SIGINT: the shell's exit status for a program stopped by Ctrl-C


@dataclasses.dataclass(frozen=True)
class RunResult:
    out_dir: str
    steps: int
    final_loss: float
    energy_distance: float
    energy_floor: float
    energy_floor_stderr: float
    skipped_steps: int = 0


class Interrupted(RuntimeError):
    """Training was stopped by the user (Ctrl-C or SIGTERM); the message says which checkpoint holds the run."""


def generators(seed):
    """Independent generators for data, init, training and evaluation, all from one seed (NumPy SeedSequence)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)]


def load_training_data(config, rng):
    """(train, held_out, stats): training points, 2000 held-out points, and the standardisation (or None)."""
    if config.data_file:
        points = data.load_data_file(config.data_file)
        points = points[rng.permutation(len(points))]
        held_out = min(QUALITY_SAMPLES, len(points) // 5)
        x_train, x_held = points[held_out:], points[:held_out]
    else:
        x_train = data.sample_dataset(config.dataset, config.n_train, rng)
        x_held = data.sample_dataset(config.dataset, QUALITY_SAMPLES, rng)
    stats = None
    if config.standardize:
        x_train, stats = data.standardize(x_train)
    return x_train, x_held, stats


def on_device(state):
    """The state with its params, EMA and Adam moments on the device in use (checkpoints hold NumPy arrays)."""
    move = lambda tree: {k: to_device(v) if hasattr(v, "shape") else v for k, v in tree.items()}  # noqa: E731
    return dataclasses.replace(state, params=move(state.params), ema=move(state.ema), adam=move(state.adam))


def initial_state(config, data_dim, init_rng, train_rng):
    params = nn.init(init_rng, config.network(data_dim), dtype=DTYPES[config.dtype])
    return TrainState(step=0, params=params, ema={k: v.copy() for k, v in params.items()},
                      adam=optim.adam_init(params), rng=train_rng,
                      timesteps=make_timestep_sampler(config.t_sampling, config.T))


# --- the loop -------------------------------------------------------------------------------------------------

def train(config, out_dir, *, resume=False, progress=True, echo=click.echo, evaluate=True, stop_at=None):
    """Train `config` into out_dir (or continue the run there with resume=True); returns a RunResult.

    evaluate=False skips the samples and the quality measurement at the end (the result then has NaN there);
    stop_at=n stops after step n as an interruption would, leaving a checkpoint to resume from.
    """
    data_rng, init_rng, train_rng, eval_rng = generators(config.seed)
    x_train, x_held, stats = load_training_data(config, data_rng)
    problem = make_problem(config)
    x_train = x_train.astype(problem.dtype)
    if config.randomness == "counter":  # drawn where the arrays live (train.draw_batch); 'numpy' draws on the host
        x_train = to_device(x_train)
    network = config.network(x_train.shape[1])
    os.makedirs(out_dir, exist_ok=True)
    ckpt.remove_temporaries(out_dir)
    resume = resume and os.path.exists(os.path.join(out_dir, ckpt.CHECKPOINT_FILE))  # else: killed before step 0
    if resume:
        state, guard, pending = load_checkpoint(out_dir, config, network)
        state = on_device(state)
    else:
        state, guard, pending = initial_state(config, x_train.shape[1], init_rng, train_rng), LossGuard(), None
    ckpt.save_json(os.path.join(out_dir, ckpt.CONFIG_FILE), {  # again on resume: it may change the RESUMABLE options
        "format_version": FORMAT_VERSION, "train": dataclasses.asdict(config),
        "network": dataclasses.asdict(network), "standardize": stats})
    log = LossLog(os.path.join(out_dir, ckpt.LOG_FILE), config.T, resume_at=state.step if resume else None,
                  pending=pending)
    if not resume:
        save_checkpoint(out_dir, state, guard, log, config)  # step 0: there is always a last good checkpoint
    state, guard = _loop(state, guard, problem, config, x_train, log, out_dir, progress, stop_at)
    save_checkpoint(out_dir, state, guard, log, config)
    loss = guard.recent[-1] if guard.recent else float("nan")  # the last accepted loss, restored on resume too
    if guard.skipped:
        echo(f"skipped {guard.skipped} step(s) whose loss diverged (column 'skipped' of {ckpt.LOG_FILE})")
    if not evaluate or state.step < config.steps:
        return RunResult(out_dir, state.step, loss, float("nan"), float("nan"), float("nan"), guard.skipped)
    return finish(out_dir, state, problem, config, x_held, stats, eval_rng, loss, echo, guard.skipped)


def _loop(state, guard, problem, config, x_train, log, out_dir, progress, stop_at):
    """Step until config.steps (or stop_at); checkpoint every config.checkpoint_every steps and when asked to stop."""
    end = config.steps if stop_at is None else min(stop_at, config.steps)
    saved, running = state.step, None  # saved: the step of the checkpoint on disk
    show = lambda _: None if running is None else f"loss {running:.4f}"  # noqa: E731
    try:
        with stop_requests() as requested, np.errstate(over="ignore", invalid="ignore", divide="ignore"), \
                click.progressbar(length=max(end - state.step, 0), label="training", show_pos=True, width=24,
                                  hidden=not progress, item_show_func=show) as bar:  # (the guard reports NaN/Inf)
            while state.step < end and not requested:
                state, guard, loss = _step(state, guard, problem, config, x_train, log, out_dir, saved)
                if np.isfinite(loss):  # an exponential moving average, for the progress bar only
                    running = loss if running is None else 0.98 * running + 0.02 * loss
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


def _step(state, guard, problem, config, x_train, log, out_dir, saved):
    """One training step through the guard: (state, guard, loss); a skipped step has loss NaN."""
    median = guard.median() if np.isfinite(config.explosion_factor) else None
    try:
        state, loss, grad_norm, t, per_example = train_step(state, problem, config, x_train, median)
    except DivergenceError as err:
        if config.on_divergence == "stop" or guard.in_a_row >= config.max_skips:
            streak = "" if config.on_divergence == "stop" else \
                f", after {guard.in_a_row} skipped steps in a row (--max-skips {config.max_skips})"
            raise DivergenceError(f"training diverged at {err}{streak}; the last good checkpoint is "
                                  f"{os.path.join(out_dir, ckpt.CHECKPOINT_FILE)} (step {saved})", err.step) from None
        state = dataclasses.replace(state, step=state.step + 1)  # state.rng has drawn the batch; the update is dropped
        log.skip(state.step, force=_row_due(state.step, config))
        return state, guard.skip(), float("nan")
    log.add(state.step, loss, grad_norm, t, per_example, force=_row_due(state.step, config))
    return state, guard.accept(loss), loss


def _row_due(step, config):
    return step % config.log_every == 0 or step == config.steps


@contextlib.contextmanager
def stop_requests():
    """While open, Ctrl-C (SIGINT) and SIGTERM only ask the loop to stop: the list it yields gets the signal's number.
    After the first Ctrl-C a second one raises KeyboardInterrupt at once. Outside the main thread, where Python
    allows no signal handlers, Ctrl-C keeps its usual meaning."""
    requested = []
    if threading.current_thread() is not threading.main_thread():
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


@dataclasses.dataclass(frozen=True)
class LossGuard:
    """The running median that `train_step` compares each loss with, and the count of skipped steps."""
    recent: tuple = ()  # the last EXPLOSION_WINDOW accepted losses, oldest first
    in_a_row: int = 0  # skipped steps since the last accepted one
    skipped: int = 0  # skipped steps in the whole run

    def median(self):
        """The median of the recent losses, or None while fewer than EXPLOSION_MIN_LOSSES are known."""
        return statistics.median(self.recent) if len(self.recent) >= EXPLOSION_MIN_LOSSES else None

    def accept(self, loss):
        return LossGuard((*self.recent, loss)[-EXPLOSION_WINDOW:], 0, self.skipped)

    def skip(self):
        return LossGuard(self.recent, self.in_a_row + 1, self.skipped + 1)

    def state(self):
        return {"recent": np.array(self.recent, np.float64), "in_a_row": self.in_a_row, "skipped": self.skipped}


# --- the end of a run -----------------------------------------------------------------------------------------

def finish(out_dir, state, problem, config, x_held, stats, eval_rng, loss, echo, skipped=0):
    """Sample from the EMA weights, save samples and plot, and measure the energy distance against held-out data."""
    from . import figures
    model = model_fn(state.ema, problem, config)
    with np.errstate(over="ignore", invalid="ignore"):  # a broken model is reported below, not warned about
        x = sample(model, problem.target, problem.schedule, (len(x_held), x_held.shape[1]), eval_rng)
    if stats is not None:
        x = data.unstandardize(x, stats)
    ckpt.atomic_write(os.path.join(out_dir, "samples.npy"), lambda f: np.save(f, x))
    broken = int(np.sum(~np.all(np.isfinite(x), axis=1)))
    if broken:
        raise DivergenceError(f"training ended at step {state.step}, but {broken} of {len(x)} samples from its EMA "
                              f"weights are NaN or Inf: the model has diverged (see {ckpt.LOG_FILE})", state.step)
    distance = metrics.energy_distance(x, x_held)
    if config.data_file:  # the floor resamples the user's points: the best a model of this file can do
        points = data.load_data_file(config.data_file)
        source = lambda n, rng: points[rng.choice(len(points), n)]  # noqa: E731
    else:
        source = lambda n, rng: data.sample_dataset(config.dataset, n, rng)  # noqa: E731
    floor, floor_err = metrics.energy_floor(source, len(x_held), eval_rng)
    result = RunResult(out_dir, state.step, loss, distance, floor, floor_err, skipped)
    with ckpt.scratch_folder(out_dir) as scratch:  # figures.save's temporary file goes there, not into out_dir
        figures.save(figures.samples_figure(x, x_held, title=f"{config.dataset}: {config.target}, {config.schedule}"),
                     os.path.join(scratch, "samples.png"))
        os.replace(os.path.join(scratch, "samples.png"), os.path.join(out_dir, "samples.png"))
    quality = {k: v for k, v in dataclasses.asdict(result).items() if k != "out_dir"}  # a folder may move
    ckpt.save_json(os.path.join(out_dir, QUALITY_FILE), quality)  # last: it marks the run as finished
    echo(f"energy distance of {len(x)} samples to held-out data: {distance:.5f} "
         f"(data-vs-data floor {floor:.5f} ± {floor_err:.5f})")
    return result


class LossLog:
    """loss_log.csv: step, then the means since the previous row of the loss, the gradient norm (before
    clipping) and the per-example loss in each of LOSS_BUCKETS equal ranges of t, then the steps skipped.

    The bucket sums are kept where the per-example losses are computed (on a GPU: on the device, read back only
    when a row is written or a checkpoint saved)."""
    HEADER = "step,loss,grad_norm," + ",".join(f"loss_t{i}" for i in range(LOSS_BUCKETS)) + ",skipped"

    def __init__(self, path, T, resume_at=None, pending=None):
        xp = get_xp()
        self.T, self.rows = T, []
        self.sums, self.counts, self.interval, self.skipped = xp.zeros(LOSS_BUCKETS), xp.zeros(LOSS_BUCKETS), [], 0
        if pending:  # the sums of a row that was under way when the checkpoint was written
            self.sums, self.counts = xp.asarray(pending["sums"]).copy(), xp.asarray(pending["counts"]).copy()
            self.interval = [tuple(row) for row in pending["interval"].reshape(-1, 2)]
            self.skipped = int(pending["skipped"])
        rows = _rows_up_to(path, resume_at, self.HEADER) if resume_at is not None else []
        ckpt.atomic_write(path, lambda f: f.write(("\n".join([self.HEADER, *rows]) + "\n").encode()))
        self.file = open(path, "a")

    def add(self, step, loss, grad_norm, t, per_example, force):
        """Accumulate one step; with force, write a row of the means since the last row."""
        xp = get_xp()
        bucket = xp.minimum(xp.asarray(t) * LOSS_BUCKETS // self.T, LOSS_BUCKETS - 1)
        self.sums += bincount(bucket, xp.asarray(per_example), LOSS_BUCKETS)
        self.counts += bincount(bucket, None, LOSS_BUCKETS)
        self.interval.append((loss, grad_norm))
        if force:
            self._row(step)

    def skip(self, step, force):
        """Count one skipped step (its loss and gradient are not averaged in)."""
        self.skipped += 1
        if force:
            self._row(step)

    def _row(self, step):
        with np.errstate(invalid="ignore"):
            means = to_numpy(self.sums) / to_numpy(self.counts)
        loss, grad_norm = np.mean(self.interval, axis=0) if self.interval else (float("nan"), float("nan"))
        self.rows.append(f"{step},{loss:.6g},{grad_norm:.6g}," + ",".join(f"{m:.6g}" for m in means)
                         + f",{self.skipped}")
        self.sums[:], self.counts[:], self.interval, self.skipped = 0, 0, [], 0

    def pending(self):
        """The sums of the row under way, so that a resumed run writes the same row as an uninterrupted one."""
        return {"sums": to_numpy(self.sums), "counts": to_numpy(self.counts), "skipped": self.skipped,
                "interval": np.array(self.interval, np.float64).reshape(-1, 2)}

    def flush(self):
        if self.rows:
            self.file.write("\n".join(self.rows) + "\n")
            self.file.flush()
            self.rows = []

    def close(self):
        if not self.file.closed:
            self.flush()
            self.file.close()


def _rows_up_to(path, step, header):
    """The rows of an existing log up to `step`; a row cut off by a kill (no newline at its end) is dropped."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().split("\n")[:-1]
    except FileNotFoundError:
        return []
    if not lines or lines[0] != header:
        return []
    return [line for line in lines[1:] if line.split(",", 1)[0].isdigit() and int(line.split(",", 1)[0]) <= step]


# --- checkpoints ----------------------------------------------------------------------------------------------

def save_checkpoint(out_dir, state, guard, log, config):
    """Flush the loss log, then write the checkpoint of `state`; returns its step."""
    log.flush()
    host = lambda tree: {k: to_numpy(v) if hasattr(v, "shape") else v for k, v in tree.items()}  # noqa: E731
    ckpt.save_arrays(os.path.join(out_dir, ckpt.CHECKPOINT_FILE), {
        "step": state.step, "params": host(state.params), "ema": host(state.ema), "adam": host(state.adam),
        "rng": json.dumps(state.rng.bit_generator.state), "timesteps": state.timesteps.state(),
        "log": log.pending(), "guard": guard.state(), "config": json.dumps(dataclasses.asdict(config), sort_keys=True)})
    return state.step


def load_checkpoint(out_dir, config, network):
    """(state, guard, pending log row) from out_dir's checkpoint, which must belong to `config` and `network`."""
    path = os.path.join(out_dir, ckpt.CHECKPOINT_FILE)
    tree = ckpt.load_arrays(path)
    _check_layout(path, ckpt.flatten(tree), _layout(config, network))
    _check_config(path, str(tree["config"]), config)
    for group in ("params", "ema"):
        if not all(np.all(np.isfinite(v)) for v in tree[group].values()):
            raise CheckpointError(f"{path}: its {group} hold NaN or Inf")
    rng = np.random.default_rng(0)  # its state is replaced on the next line
    try:
        rng.bit_generator.state = json.loads(str(tree["rng"]))
    except (ValueError, TypeError, KeyError) as err:
        raise CheckpointError(f"{path}: the generator state cannot be restored ({err})") from None
    names = list(_param_shapes(network))  # the network's own order: sums over the params (the gradient norm) go in
    adam = {"step": int(tree["adam"]["step"]), **{f"{m}.{k}": tree["adam"][f"{m}.{k}"] for k in names for m in "mv"}}
    state = TrainState(step=int(tree["step"]), params={k: tree["params"][k] for k in names},
                       ema={k: tree["ema"][k] for k in names}, adam=adam, rng=rng,
                       timesteps=make_timestep_sampler(config.t_sampling, config.T, tree.get("timesteps")))
    g = tree["guard"]
    guard = LossGuard(tuple(float(v) for v in g["recent"][-EXPLOSION_WINDOW:]), int(g["in_a_row"]), int(g["skipped"]))
    return state, guard, tree["log"]


def _layout(config, network):
    """{entry: (shape, dtype kinds)} of a checkpoint of this config (None in a shape: any length)."""
    shapes = _param_shapes(network)
    layout = {"step": ((), "iu"), "rng": ((), "U"), "config": ((), "U"), "adam/step": ((), "iu"),
              "log/sums": ((LOSS_BUCKETS,), "f"), "log/counts": ((LOSS_BUCKETS,), "f"), "log/skipped": ((), "iu"),
              "log/interval": ((None, 2), "f"), "guard/recent": ((None,), "f"), "guard/in_a_row": ((), "iu"),
              "guard/skipped": ((), "iu")}
    for name, shape in shapes.items():
        for group in ("params/", "ema/", "adam/m.", "adam/v."):
            layout[group + name] = (shape, "f")
    if config.t_sampling == "importance":
        layout.update({"timesteps/history": ((config.T, HISTORY), "f"), "timesteps/count": ((config.T,), "iu")})
    return layout


def _param_shapes(network):
    """{name: shape} of the network's params, in the order nn.init makes them (its values are thrown away)."""
    return {k: v.shape for k, v in nn.init(np.random.default_rng(0), network).items()}


def _check_layout(path, flat, layout):
    if set(flat) != set(layout):
        odd = sorted(set(flat) ^ set(layout))
        raise CheckpointError(f"{path}: does not fit this run's network and options (entries missing or extra: "
                              f"{', '.join(odd[:4])}{', …' if len(odd) > 4 else ''})")
    for key, (shape, kinds) in layout.items():
        value = flat[key]
        fits = len(value.shape) == len(shape) and all(e is None or e == s for e, s in zip(shape, value.shape))
        if not fits or value.dtype.kind not in kinds:
            raise CheckpointError(f"{path}: entry {key!r} has shape {value.shape} and dtype {value.dtype}, which "
                                  f"do not fit this run's network and options")


def _check_config(path, text, config):
    """The config stored in the checkpoint must be `config`, but for the options that --resume may change."""
    try:
        stored = json.loads(text)
    except ValueError:
        raise CheckpointError(f"{path}: its config is not valid JSON") from None
    current = dataclasses.asdict(config)
    stored = stored if isinstance(stored, dict) else {}
    stored = {**ADDED_OPTIONS, **stored}
    differ = sorted(k for k in set(stored) | set(current) if k not in RESUMABLE and stored.get(k) != current.get(k))
    if differ:
        raise CheckpointError(f"{path}: written by another run (its config differs from this run's in: "
                              f"{', '.join(differ)})")


def load_config(out_dir):
    """(TrainConfig, network Config, standardisation stats) of the run in out_dir, each checked."""
    path = os.path.join(out_dir, ckpt.CONFIG_FILE)
    meta = ckpt.load_json(path)
    try:
        if meta["format_version"] != FORMAT_VERSION:
            raise ValueError(f"format version {meta['format_version']}; this minidiff reads version {FORMAT_VERSION}")
        config, network, stats = TrainConfig(**meta["train"]), nn.Config(**meta["network"]), meta["standardize"]
        validate(config)
        if network != config.network(network.data_dim):
            raise ValueError("its network does not match its training options")
        if stats is not None and not (np.shape(stats["mean"]) == np.shape(stats["std"]) == (network.data_dim,)
                                      and np.all(np.isfinite(stats["mean"])) and np.all(np.greater(stats["std"], 0))):
            raise ValueError("its standardisation is not a finite mean and a positive std per dimension")
    except (KeyError, TypeError, ValueError) as err:  # ConfigError is a ValueError
        raise CheckpointError(f"{path}: not a usable run config ({type(err).__name__}: {err})") from None
    return config, network, stats


def load_run(out_dir):
    """(TrainConfig, network Config, standardisation stats, state) of a finished or interrupted run."""
    config, network, stats = load_config(out_dir)
    return config, network, stats, load_checkpoint(out_dir, config, network)[0]
