"""One cell of a stability sweep: its checks, its row, and what its folder keeps so that a sweep can resume.

A cell is one run (one TrainConfig) in its own folder under OUT/runs. Every `check_every` steps — and at step 0 —
its parameters are saved to snapshots.npz (for `minidiff landscape`) and the EMA model is checked on its own
generator, never the run's:

- the training loss of the EMA weights on one fixed evaluation batch (the run's own target and weighting);
- the energy distance of `quality_n` ancestral samples (DDPM respaced to `quality_steps` steps) to as many
  held-out points. (Not DDIM: from t = T − 1 of the cosine schedule, where ᾱ ≈ 2e-9, its first deterministic step
  multiplies an ε-model's error by √(ᾱ_prev / ᾱ_{T−1}), and ε-runs would look broken when they are not.)

A cell has diverged when training raises `train.DivergenceError` (a non-finite or exploding loss or gradient), or
when the evaluation loss is non-finite or grows `blowup_factor` times above its value at initialisation (BlowUp).
Its "steps to the bar" is the first checked step whose energy distance is at most the quality bar. The final
quality is the last check's energy distance. A cell that finishes also gets its bound on the negative
log-likelihood of those held-out points, −ELBO in nats per example and bits per dimension (`minidiff.elbo`, all T
terms).

Two ways to train a cell, with the same files and the same row: alone (`run_cell`: `trajectory.train_with_snapshots`,
segments of `loop.train`), or with the other cells of its stack (`run_stack`: `runs.stack.train_stack`, whose runs
are bit for bit the runs alone). Either way the checks are this module's, cell by cell.

Resume. Besides the run's own files (config.json, checkpoint.npz, loss_log.csv) the folder keeps checks.json — the
checks so far and the state of the checks' generator, written after each check — and, once the cell is done,
cell.json: its row and its checks. A resumed stack continues each cell from its checkpoint; a check or a snapshot
that a kill cut off is made again from the checkpoint of its step, with the generator as it was. A cell trained
alone that was cut off starts again from the beginning (the same numbers, later).
"""
import dataclasses
import json
import os
import time
import warnings

import numpy as np

from minidiff import metrics
from minidiff.runs import checkpoint as ckpt, datafile, files, loop as run, stack as runstack
from minidiff.runs.progress import silent
from minidiff.elbo import elbo
from minidiff.sample import sample
from minidiff.train import ConfigError, DivergenceError, make_problem, model_fn, validate
from minidiff.lab.diagnostics import gradvar, landscape, trajectory

BLOWUP_FACTOR = 100.0      # an evaluation loss 100 × its initial value counts as divergence
EVAL_STREAM = 1            # the checks' generator: SeedSequence([seed, EVAL_STREAM]), apart from the run's four
CHECKS_FILE, CELL_FILE = "checks.json", "cell.json"


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

    def save(self, run_dir):
        """checks.json: the checks so far and the generator's state, to continue from (`restore`)."""
        files.save_json(os.path.join(run_dir, CHECKS_FILE), dict(history=self.history,
                                                                 rng=self.rng.bit_generator.state))

    def restore(self, run_dir):
        """Continue from checks.json in run_dir, if there is one (the evaluation batch is drawn again, as at first)."""
        path = os.path.join(run_dir, CHECKS_FILE)
        if os.path.exists(path):
            saved = ckpt.load_json(path)
            self.history, self.rng.bit_generator.state = saved["history"], saved["rng"]


class Cell:
    """One cell from its start to its row: its checks, its snapshots and its files (module docstring)."""

    def __init__(self, index, config, sweep, out_dir, bar):
        self.index, self.config, self.sweep, self.bar = index, config, sweep, bar
        self.run_dir = os.path.join(out_dir, "runs", cell_name(index, config))
        self.started, self.checks, self.snapshots = time.perf_counter(), None, ([], [], None, None)

    def first_row(self):
        row = dict(index=self.index, lr=self.config.lr, target=self.config.target, schedule=self.config.schedule,
                   weighting=self.config.weighting, seed=self.config.seed, quality_bar=self.bar)
        try:
            validate(self.config)
        except ConfigError as err:
            return dict(row, status="invalid", reason=str(err))
        return row

    def open(self, resume):
        """Make the checks (restored from the folder with resume=True), and the snapshots so far."""
        self.checks = Checks(self.config, self.sweep)
        if resume:
            self.checks.restore(self.run_dir)
            if trajectory.has_snapshots(self.run_dir):
                steps, thetas, names, shapes = trajectory.load_snapshots(self.run_dir)
                self.snapshots = (list(steps), list(thetas), names, shapes)

    def at_segment(self, state, snapshot=True):
        """After a segment: the snapshot (unless the caller saves it) and the check of this step, each once."""
        steps, thetas, _, _ = self.snapshots
        if snapshot and state.step not in steps:
            theta, names, shapes = trajectory.flatten(state.params)
            steps.append(state.step)
            thetas.append(theta)
            self.snapshots = (steps, thetas, names, shapes)
            trajectory.save_snapshots(self.run_dir, steps, thetas, names, shapes)
        if state.step not in [h["step"] for h in self.checks.history]:
            self.checks(state)
            self.checks.save(self.run_dir)

    def outcome(self, result):
        """The outcome's columns, from what training gave: its RunResult, or the exception that stopped it."""
        if isinstance(result, (DivergenceError, BlowUp)):
            return dict(status="diverged" if isinstance(result, DivergenceError) else "blow-up", reason=str(result),
                        diverged_at_step=getattr(result, "step", None))
        if isinstance(result, Exception):
            return dict(status="error", reason=f"{type(result).__name__}: {result}")
        last = self.checks.history[-1]
        ema = {k: np.asarray(v, dtype=np.float64) for k, v in run.load_run(self.run_dir)[3].ema.items()}
        return dict(status="ok", reason="", final_loss=result.final_loss, final_eval_loss=last["eval_loss"],
                    energy_distance=last["energy_distance"], **self.checks.bound(ema))

    def row(self, outcome, wall_s=None):
        """(row, checks) of the finished cell; cell.json records both."""
        history = self.checks.history if self.checks else []
        row = dict(self.first_row(), **outcome, run_dir=self.run_dir,
                   diverged=int(outcome["status"] in ("diverged", "blow-up")))
        passed = history[:-1] if outcome["status"] == "blow-up" else history  # the check that failed did not pass
        row["last_good_step"] = passed[-1]["step"] if passed else None
        reached = [h["step"] for h in history if h["energy_distance"] <= self.bar]
        row["steps_to_bar"] = reached[0] if reached else None
        row["wall_s"] = round(time.perf_counter() - self.started if wall_s is None else wall_s, 2)
        record(self.run_dir, row, history)
        return row, history


def record(run_dir, row, history):
    """cell.json: the finished cell's row and checks (where its folder exists: an invalid cell has none)."""
    if os.path.isdir(run_dir):
        files.save_json(os.path.join(run_dir, CELL_FILE), dict(row=row, checks=history))


def finished(run_dir):
    """(row, checks) of a cell that cell.json says is done, else None."""
    path = os.path.join(run_dir, CELL_FILE)
    if not os.path.exists(path):
        return None
    saved = ckpt.load_json(path)
    return saved["row"], saved["checks"]


@dataclasses.dataclass(frozen=True)
class Task:
    """Cells to train in one worker: together as a stack, or (stacked=False) one cell alone."""
    members: tuple          # ((index, TrainConfig), …)
    sweep: object           # the SweepConfig
    out_dir: str
    bar: float              # the quality bar
    resume: bool
    stacked: bool = True


def run_task(task, report=None):
    """[(row, checks)] of the task's cells, in its order; report(steps, diverged) is told the run-steps done and
    the cells that diverged, as they happen. Never raises but for an interruption (loop.Interrupted)."""
    report = report or (lambda steps, diverged: None)
    if task.stacked:
        return run_stack(task, report)
    return [run_cell(task, index, config, report) for index, config in task.members]


def run_cell(task, index, config, report):
    """One cell alone, start to finish: (row, checks), with trajectory.train_with_snapshots."""
    sweep, out_dir, bar, resume = task.sweep, task.out_dir, task.bar, task.resume
    cell = Cell(index, config, sweep, out_dir, bar)
    done = finished(cell.run_dir) if resume else None
    if done is not None:
        return done
    row = cell.first_row()
    if "status" in row:
        return row, []
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # a diverging run overflows on purpose; its row says so
        try:
            cell.open(resume=False)  # a cell cut off in the middle starts again (module docstring)
            previous = [0]

            def on_segment(state):
                report(state.step - previous[0], False)
                previous[0] = state.step
                cell.at_segment(state, snapshot=False)  # train_with_snapshots saves them
            result = trajectory.train_with_snapshots(config, cell.run_dir, sweep.check_every, on_segment=on_segment,
                                                     evaluate=False, echo=silent)
        except run.Interrupted:
            raise  # not an outcome: the cell is to be resumed
        except Exception as err:  # noqa: BLE001  (one failed cell must not stop the sweep; its row says why)
            result = err
        outcome = cell.outcome(result)
    report(0, outcome["status"] in ("diverged", "blow-up"))
    return cell.row(outcome)


def run_stack(task, report):
    """The cells of one stack, trained together with runs.stack.train_stack: [(row, checks)] in the task's order."""
    sweep, resume = task.sweep, task.resume
    started, results, cells = time.perf_counter(), {}, []
    for index, config in task.members:
        cell = Cell(index, config, sweep, task.out_dir, task.bar)
        done = finished(cell.run_dir) if resume else None
        if done is not None:
            results[index] = done
        else:
            cells.append(cell)
    def on_exit(r, result):  # a cell's row as soon as it leaves the stack (its wall time: from the stack's start)
        results[cells[r].index] = cells[r].row(cells[r].outcome(result), wall_s=time.perf_counter() - started)

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            for cell in cells:
                cell.open(resume)
            runstack.train_stack([c.config for c in cells], [c.run_dir for c in cells], resume=resume,
                                 segment=sweep.check_every, on_segment=lambda r, state: cells[r].at_segment(state),
                                 on_exit=on_exit, advance=report)
        except run.Interrupted:
            raise  # not an outcome: the cells are to be resumed
        except Exception as err:  # noqa: BLE001  (the stack could not run: the rows of the cells left say why)
            for cell in cells:
                if cell.index not in results:
                    results[cell.index] = cell.row(dict(status="error", reason=f"{type(err).__name__}: {err}"))
    return [results[index] for index, _ in task.members]
