"""One cell of a stability sweep: its row, and what its folder keeps so that a sweep can resume.

A cell is one run (one TrainConfig) in its own folder under OUT/runs. Every `check_every` steps — and at step 0 —
its parameters are saved to snapshots.npz (for `minidiff landscape`) and its EMA model is checked (`checks.py`: the
evaluation loss, the energy distance of its samples, divergence and blow-up). Its "steps to the bar" is the first
checked step whose energy distance is at most the quality bar. The final quality is the last check's energy
distance. A cell that finishes also gets its bound on the negative log-likelihood of the held-out points, −ELBO in
nats per example and bits per dimension (all T terms).

Two ways to train a cell, with the same files and the same row: alone (`run_cell`: `trajectory.train_with_snapshots`,
segments of `loop.train`), or with the other cells of its stack (`run_stack`: `runs.stack.train_stack`, whose runs
are bit for bit the runs alone). A stack's cells are also checked together, their networks evaluated as one stack
for every sample step and bound term (`checks.check_together`, `checks.bounds_together`); a cell alone is checked
by the same functions as a stack of one, so the two give the same numbers, bit for bit.

Resume. Besides the run's own files (config.json, checkpoint.npz, loss_log.csv) the folder keeps checks.json — the
checks so far and the state of the checks' generator, written after each check — and, once the cell is done,
cell.json: its row and its checks. A resumed stack continues each cell from its checkpoint; a check or a snapshot
that a kill cut off is made again from the checkpoint of its step, with the generator as it was. A cell trained
alone that was cut off starts again from the beginning (the same numbers, later).
"""
import dataclasses
import os
import time
import warnings

import numpy as np

from minidiff.runs import checkpoint as ckpt, files, loop as run, stack as runstack
from minidiff.runs.progress import silent
from minidiff.train import ConfigError, DivergenceError, validate
from minidiff.lab.diagnostics import trajectory
from minidiff.lab.diagnostics.checks import BlowUp, Checks, bounds_together, check_together

CELL_FILE = "cell.json"


def cell_name(index, config):
    return f"{index:03d}-{config.target}-{config.schedule}-{config.weighting}-lr{config.lr:g}-s{config.seed}"


class Cell:
    """One cell from its start to its row: its checks, its snapshots and its files (module docstring)."""

    def __init__(self, index, config, sweep, out_dir, bar):
        self.index, self.config, self.sweep, self.bar = index, config, sweep, bar
        self.run_dir = os.path.join(out_dir, "runs", cell_name(index, config))
        self.started, self.checks, self.path = time.perf_counter(), None, ([], [])

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
                steps, thetas, _, _ = trajectory.load_snapshots(self.run_dir)
                self.path = (list(steps), list(thetas))

    def at_segment(self, state):
        """After a segment of a cell alone: the check of this step, once (train_with_snapshots saves the snapshot)."""
        if self.unchecked(state):
            self.checks(state)
            self.checks.save(self.run_dir)

    def snapshot(self, state):
        """Add the parameters at this step to snapshots.npz, once."""
        trajectory.add_snapshot(self.run_dir, self.path, state.step, state.params)

    def unchecked(self, state):
        return state.step not in [h["step"] for h in self.checks.history]

    def outcome(self, result, bound=None):
        """The outcome's columns, from what training gave: its RunResult, or the exception that stopped it; a
        finished cell's bound is measured here unless the caller measured it (`bounds_together`)."""
        if isinstance(result, (DivergenceError, BlowUp)):
            return dict(status="diverged" if isinstance(result, DivergenceError) else "blow-up", reason=str(result),
                        diverged_at_step=getattr(result, "step", None))
        if isinstance(result, Exception):
            return dict(status="error", reason=f"{type(result).__name__}: {result}")
        last = self.checks.history[-1]
        return dict(status="ok", reason="", final_loss=result.final_loss, final_eval_loss=last["eval_loss"],
                    energy_distance=last["energy_distance"], **(bound or self.checks.bound(self.final_ema())))

    def final_ema(self):
        """The EMA weights of the finished run, from its checkpoint."""
        return run.load_run(self.run_dir)[3].ema

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
                cell.at_segment(state)
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
    """The cells of one stack, trained together with runs.stack.train_stack and checked together (`check_together`,
    `bounds_together`): [(row, checks)] in the task's order."""
    sweep, resume = task.sweep, task.resume
    started, results, cells, done = time.perf_counter(), {}, [], []
    for index, config in task.members:
        cell = Cell(index, config, sweep, task.out_dir, task.bar)
        saved = finished(cell.run_dir) if resume else None
        if saved is not None:
            results[index] = saved
        else:
            cells.append(cell)

    def row(cell, outcome):  # its wall time: from the stack's start
        results[cell.index] = cell.row(outcome, wall_s=time.perf_counter() - started)

    def on_exit(r, result):  # a cell's row as soon as it leaves the stack; the finished ones' bounds together, after
        if isinstance(result, Exception):
            row(cells[r], cells[r].outcome(result))
        else:
            done.append((cells[r], result))

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            for cell in cells:
                cell.open(resume)
            runstack.train_stack([c.config for c in cells], [c.run_dir for c in cells], resume=resume,
                                 segment=sweep.check_every, on_segments=lambda pairs: _checked(cells, pairs),
                                 on_exit=on_exit, advance=report)
            bounds = bounds_together([c.checks for c, _ in done], [c.final_ema() for c, _ in done])
            for (cell, result), bound in zip(done, bounds):
                row(cell, cell.outcome(result, bound))
        except run.Interrupted:
            raise  # not an outcome: the cells are to be resumed
        except Exception as err:  # noqa: BLE001  (the stack could not run: the rows of the cells left say why)
            for cell in cells:
                if cell.index not in results:
                    results[cell.index] = cell.row(dict(status="error", reason=f"{type(err).__name__}: {err}"))
    return [results[index] for index, _ in task.members]


def _checked(cells, pairs):
    """on_segments for train_stack: each cell's snapshot, then the checks of those not yet checked at this step, all
    together, each saved as `Cell.at_segment` saves it (not a check that blew up: cell.json keeps that one); {r:
    BlowUp} for the cells that blew up."""
    for r, state in pairs:
        cells[r].snapshot(state)
    todo = [(r, state) for r, state in pairs if cells[r].unchecked(state)]
    failed = check_together([cells[r].checks for r, _ in todo], [state for _, state in todo])
    for i, (r, _) in enumerate(todo):
        if i not in failed:
            cells[r].checks.save(cells[r].run_dir)
    return {todo[i][0]: err for i, err in failed.items()}
