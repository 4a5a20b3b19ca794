"""A training run from start to finish: data, the loop, checkpoints, and the samples and quality at the end.

    train(config, out_dir) -> RunResult

writes the run folder that `checkpoint.py` describes. Randomness comes from four generators spawned from the one
seed, so that drawing the data, initialising the network, training and evaluating never disturb each other
(STYLE rule 7): a run is reproducible bit for bit from its config, and resumes exactly from a checkpoint.
"""
import dataclasses
import json
import os

import click
import numpy as np

from . import checkpoint as ckpt
from . import data, metrics, nn, optim
from .sample import sample
from .timesteps import make_timestep_sampler
from .train import DTYPES, DivergenceError, TrainConfig, TrainState, make_problem, model_fn, train_step  # noqa: F401

QUALITY_SAMPLES = 2000  # samples drawn at the end of a run and compared with as many held-out points
LOSS_BUCKETS = 10  # the loss log reports the loss in 10 equal ranges of t
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class RunResult:
    out_dir: str
    steps: int
    final_loss: float
    energy_distance: float
    energy_floor: float
    energy_floor_stderr: float


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


def initial_state(config, data_dim, init_rng, train_rng):
    params = nn.init(init_rng, config.network(data_dim), dtype=DTYPES[config.dtype])
    return TrainState(step=0, params=params, ema={k: v.copy() for k, v in params.items()},
                      adam=optim.adam_init(params), rng=train_rng,
                      timesteps=make_timestep_sampler(config.t_sampling, config.T))


def save_checkpoint(out_dir, state, log):
    ckpt.save_arrays(os.path.join(out_dir, ckpt.CHECKPOINT_FILE), {
        "format_version": FORMAT_VERSION, "step": state.step, "params": state.params, "ema": state.ema,
        "adam": state.adam, "rng": json.dumps(state.rng.bit_generator.state),
        "timesteps": state.timesteps.state(), "log": log.pending()})


def load_checkpoint(out_dir, config):
    tree = ckpt.load_arrays(os.path.join(out_dir, ckpt.CHECKPOINT_FILE))
    rng = np.random.default_rng()
    rng.bit_generator.state = json.loads(str(tree["rng"]))
    adam = {k: (int(v) if np.ndim(v) == 0 else v) for k, v in tree["adam"].items()}
    state = TrainState(step=int(tree["step"]), params=tree["params"], ema=tree["ema"], adam=adam, rng=rng,
                       timesteps=make_timestep_sampler(config.t_sampling, config.T, tree.get("timesteps")))
    return state, tree.get("log")


def train(config, out_dir, *, resume=False, progress=True, echo=click.echo, evaluate=True, stop_at=None):
    """Train `config` into out_dir (or continue the run there with resume=True); returns a RunResult.

    evaluate=False skips the samples and the quality measurement at the end (the result then has NaN there);
    stop_at=n stops after step n as an interruption would, leaving a checkpoint to resume from.
    """
    data_rng, init_rng, train_rng, eval_rng = generators(config.seed)
    x_train, x_held, stats = load_training_data(config, data_rng)
    problem = make_problem(config)
    x_train = x_train.astype(problem.dtype)
    os.makedirs(out_dir, exist_ok=True)
    pending = None
    if resume:
        state, pending = load_checkpoint(out_dir, config)
    else:
        state = initial_state(config, x_train.shape[1], init_rng, train_rng)
        ckpt.save_json(os.path.join(out_dir, ckpt.CONFIG_FILE), {
            "format_version": FORMAT_VERSION, "train": dataclasses.asdict(config),
            "network": dataclasses.asdict(config.network(x_train.shape[1])), "standardize": stats})
    log = LossLog(os.path.join(out_dir, ckpt.LOG_FILE), config.T, resume_at=state.step if resume else None,
                  pending=pending)
    state, loss = _loop(state, problem, config, x_train, log, out_dir, progress, stop_at)
    save_checkpoint(out_dir, state, log)
    if not evaluate or state.step < config.steps:
        return RunResult(out_dir, state.step, loss, float("nan"), float("nan"), float("nan"))
    return finish(out_dir, state, problem, config, x_held, stats, eval_rng, loss, echo)


def _loop(state, problem, config, x_train, log, out_dir, progress, stop_at):
    """Step until config.steps (or stop_at); checkpoint every config.checkpoint_every steps and on Ctrl-C."""
    end = config.steps if stop_at is None else min(stop_at, config.steps)
    running, loss = None, float("nan")
    try:
        with click.progressbar(length=end - state.step, label="training", show_pos=True, width=24, hidden=not progress,
                               item_show_func=lambda _: None if running is None else f"loss {running:.4f}") as bar:
            while state.step < end:
                state, loss, grad_norm, t, per_example = train_step(state, problem, config, x_train)
                running = loss if running is None else 0.98 * running + 0.02 * loss
                log.add(state.step, loss, grad_norm, t, per_example,
                        force=state.step % config.log_every == 0 or state.step == config.steps)
                if state.step % config.checkpoint_every == 0:
                    log.flush()
                    save_checkpoint(out_dir, state, log)
                bar.update(1)
    except KeyboardInterrupt:
        log.flush()
        save_checkpoint(out_dir, state, log)  # every field of `state` belongs to one completed step
        raise Interrupted(f"interrupted at step {state.step}; checkpoint saved, continue with --resume") from None
    finally:
        log.close()
    return state, loss


class Interrupted(RuntimeError):
    """Training was stopped by the user (Ctrl-C) after its state was saved."""


def finish(out_dir, state, problem, config, x_held, stats, eval_rng, loss, echo):
    """Sample from the EMA weights, save samples and plot, and measure the energy distance against held-out data."""
    from . import figures
    model = model_fn(state.ema, problem, config)
    x = sample(model, problem.target, problem.schedule, (len(x_held), x_held.shape[1]), eval_rng)
    if stats is not None:
        x = data.unstandardize(x, stats)
    np.save(os.path.join(out_dir, "samples.npy"), x)
    distance = metrics.energy_distance(x, x_held)
    if config.data_file:  # the floor resamples the user's points: the best a model of this file can do
        points = data.load_data_file(config.data_file)
        source = lambda n, rng: points[rng.choice(len(points), n)]  # noqa: E731
    else:
        source = lambda n, rng: data.sample_dataset(config.dataset, n, rng)  # noqa: E731
    floor, floor_err = metrics.energy_floor(source, len(x_held), eval_rng)
    result = RunResult(out_dir, state.step, loss, distance, floor, floor_err)
    ckpt.save_json(os.path.join(out_dir, "quality.json"), dataclasses.asdict(result))
    figures.save(figures.samples_figure(x, x_held, title=f"{config.dataset}: {config.target}, {config.schedule}"),
                 os.path.join(out_dir, "samples.png"))
    echo(f"energy distance of {len(x)} samples to held-out data: {distance:.5f} "
         f"(data-vs-data floor {floor:.5f} ± {floor_err:.5f})")
    return result


class LossLog:
    """loss_log.csv: step, then the means since the previous row of the loss, the gradient norm (before
    clipping) and the per-example loss in each of LOSS_BUCKETS equal ranges of t."""

    def __init__(self, path, T, resume_at=None, pending=None):
        self.T, self.rows = T, []
        self.sums, self.counts, self.interval = np.zeros(LOSS_BUCKETS), np.zeros(LOSS_BUCKETS), []
        if pending:  # the sums of a row that was under way when the checkpoint was written
            self.sums, self.counts = pending["sums"].copy(), pending["counts"].copy()
            self.interval = [tuple(row) for row in pending["interval"].reshape(-1, 2)]
        if resume_at is not None and os.path.exists(path):  # drop rows logged after the checkpoint
            with open(path) as f:
                lines = f.read().splitlines()
            keep = [lines[0]] + [ln for ln in lines[1:] if int(ln.split(",")[0]) <= resume_at]
            ckpt.atomic_write(path, lambda f: f.write(("\n".join(keep) + "\n").encode()))
        else:
            header = "step,loss,grad_norm," + ",".join(f"loss_t{i}" for i in range(LOSS_BUCKETS))
            ckpt.atomic_write(path, lambda f: f.write((header + "\n").encode()))
        self.file = open(path, "a")

    def add(self, step, loss, grad_norm, t, per_example, force):
        """Accumulate one step; with force, write a row of the means since the last row."""
        bucket = np.minimum(np.asarray(t) * LOSS_BUCKETS // self.T, LOSS_BUCKETS - 1)
        self.sums += np.bincount(bucket, weights=per_example, minlength=LOSS_BUCKETS)
        self.counts += np.bincount(bucket, minlength=LOSS_BUCKETS)
        self.interval.append((loss, grad_norm))
        if force:
            with np.errstate(invalid="ignore"):
                means = self.sums / self.counts
            loss, grad_norm = np.mean(self.interval, axis=0)
            self.rows.append(f"{step},{loss:.6g},{grad_norm:.6g}," + ",".join(f"{m:.6g}" for m in means))
            self.sums[:], self.counts[:], self.interval = 0, 0, []

    def pending(self):
        """The sums of the row under way, so that a resumed run writes the same row as an uninterrupted one."""
        return {"sums": self.sums, "counts": self.counts, "interval": np.array(self.interval, np.float64).reshape(-1, 2)}

    def flush(self):
        if self.rows:
            self.file.write("\n".join(self.rows) + "\n")
            self.file.flush()
            self.rows = []

    def close(self):
        if not self.file.closed:
            self.flush()
            self.file.close()


def load_run(out_dir):
    """(TrainConfig, network Config, standardisation stats, state) of a finished or interrupted run."""
    meta = ckpt.load_json(os.path.join(out_dir, ckpt.CONFIG_FILE))
    config = TrainConfig(**meta["train"])
    return config, nn.Config(**meta["network"]), meta.get("standardize"), load_checkpoint(out_dir, config)[0]

