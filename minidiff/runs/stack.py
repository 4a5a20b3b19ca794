"""Many runs at once: R runs of one network shape trained as one stack, each in its own run folder.

    train_stack(configs, out_dirs) -> [RunResult, or the exception that stopped that run]

The arithmetic is `minidiff/stacked.py`'s, which gives every run the numbers it would compute alone; around it, each
run keeps what `loop.train` keeps for one run — its folder, config.json, loss log, divergence guard and checkpoints
(`loop.open_run`, `loop.accept`, `loop.skip_or_stop`, `folder.save_checkpoint`) — so a run of a stack leaves the
same files, byte for byte, as the same config trained alone. The runs must share the network, the batch size, the
dtype and the way batches are drawn; everything else (target, weighting, schedule, T, learning rate, time sampler,
seed, number of steps, divergence options) may differ.

A run that diverges leaves the stack at that step with the folder `loop.train` would leave: the last good
checkpoint, the log rows of the steps before, and its DivergenceError as its outcome; the others go on. A skipped
step (on_divergence="skip-step") keeps the run in the stack with its parameters as they were.

Segments. With segment=k, at step 0, every k steps and at its last step, a run's checkpoint is written and
on_segment(r, state) is called with its TrainState, as `lab.diagnostics.trajectory.train_with_snapshots` calls it
between its segments of `loop.train`; an exception it raises takes run r out of the stack, as its outcome. Or, to
evaluate the runs together, on_segments(pairs) is called once per step with [(r, state)] of every run at a boundary
then (their checkpoints written) and returns {r: exception} for the runs to take out.

Exact resume. With resume=True every run continues from its own checkpoint, at whatever step it reached (the runs
of one stack need not stand at the same step). Ctrl-C or SIGTERM saves every run's checkpoint after the step under
way and raises loop.Interrupted; a SIGKILL leaves each run at its last checkpoint, to resume from.
"""
import concurrent.futures
import dataclasses
import math

import numpy as np

from minidiff import nn, stacked
from minidiff.runs.folder import save_checkpoint
from minidiff.runs.loop import (Interrupted, RunResult, accept, last_loss, loss_median, open_run, skip_or_stop,
                                stop_requests, with_data_checksum)
from minidiff.runs.progress import silent
from minidiff.accel.backend import to_device, to_numpy
from minidiff.forward import posterior_variance
from minidiff.sample import respaced
from minidiff.schedules import timestep_spacing
from minidiff.targets import check_identifiable, to_x0_eps
from minidiff.train import DivergenceError, TrainConfig, input_scale_at, time_inputs

WRITERS = 8  # threads that write the runs' checkpoints at once: each write waits for its disk (fsync), not the CPU
SHARED = ("hidden", "depth", "time_dim", "fourier_features", "learns_uncertainty", "batch_size", "dtype",
          "randomness")  # one per stack


@dataclasses.dataclass(eq=False)
class _Run:
    """One run of the stack, as `loop.train` keeps it: all but its arrays, which are the stack's."""
    index: int              # its position in the caller's list
    config: TrainConfig
    out_dir: str
    problem: object
    x_train: object
    guard: object
    log: object
    saved: int              # the step of its checkpoint on disk


def check_stackable(configs):
    """Raise ValueError unless the configs can train as one stack (the SHARED options, and one data dimension)."""
    for name in SHARED:
        values = sorted({str(getattr(c, name)) for c in configs})
        if len(values) > 1:
            raise ValueError(f"the runs of a stack share {name}, got {', '.join(values)}")


def train_stack(configs, out_dirs, *, resume=False, segment=None, on_segment=None, on_segments=None, on_exit=None,
                advance=None, echo=silent):
    """Train configs[r] into out_dirs[r] for every r, as one stack (module docstring); returns each run's outcome.

    on_exit(r, outcome), if given, is called as run r leaves the stack, its folder complete.
    advance(steps, stopped), if given, is told the run-steps done — at the start those the runs had done before
    (resume), then after every stacked step its own, and for a run that stops early the steps it will not do — and
    the number of runs that stopped early (diverged, or stopped by on_segment or on_segments). echo(text) says what each run
    reports (its skipped steps)."""
    check_stackable(configs)
    if on_segment is not None:
        if on_segments is not None:
            raise ValueError("give on_segment (one run at a time) or on_segments (all at once), not both")
        on_segments = _one_by_one(on_segment)
    configs = [with_data_checksum(config) for config in configs]
    runs, states, outcomes = [], [], [None] * len(configs)
    for i, (config, out_dir) in enumerate(zip(configs, out_dirs)):
        opened = open_run(config, out_dir, resume)
        runs.append(_Run(i, config, out_dir, opened.problem, opened.x_train, opened.guard, opened.log,
                         opened.state.step))
        states.append(opened.state)
    if len({x.shape[1] for x in (r.x_train for r in runs)}) > 1:
        raise ValueError("the runs of a stack share the data dimension")
    stack = stacked.stack_states(states)
    advance = advance or (lambda steps, stopped: None)
    advance(int(stack.step.sum()), 0)
    try:
        with stop_requests() as requested, np.errstate(over="ignore", invalid="ignore", divide="ignore"), \
                concurrent.futures.ThreadPoolExecutor(WRITERS) as writers:
            leaving = _at_boundaries(runs, stack, range(len(runs)), segment, on_segments, outcomes, echo, writers)
            advance(*_unfinished(runs, stack, leaving, outcomes))
            stack, runs = _leave(stack, runs, leaving, outcomes, on_exit)
            problem = stacked.stack_problems([run.problem for run in runs]) if runs else None
            while runs and not requested:
                done = len(runs)
                stack, runs, (left_over, stopped) = _step(stack, problem, runs, outcomes, segment, on_segments, echo,
                                                          writers, on_exit)
                if len(runs) < done and runs:  # some have left: the tables of those that go on
                    problem = stacked.stack_problems([run.problem for run in runs])
                advance(done + left_over, stopped)
            if requested:
                _saved_together(range(len(runs)), runs, stack, writers)
                raise Interrupted(f"interrupted at step {int(stack.step.min())}; every run's checkpoint saved, "
                                  f"continue with --resume")
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once
        raise Interrupted("stopped at once; each run's last checkpoint is kept, continue from it with --resume") \
            from None
    finally:
        for run in runs:
            run.log.close()
    return outcomes


def _step(stack, problem, runs, outcomes, segment, on_segments, echo, writers, on_exit):
    """One step of every run of the stack, each through its guard; (stack, runs that go on, how many of the others
    stopped early)."""
    stack, records = stacked.train_step(stack, problem, [r.problem for r in runs], [r.config for r in runs],
                                        [r.x_train for r in runs], [loss_median(r.guard, r.config) for r in runs])
    leaving, due = [], []
    for j, (run, record) in enumerate(zip(runs, records)):
        step = int(stack.step[j])
        try:
            if record.error is not None:
                run.guard = skip_or_stop(record.error, step, run.guard, run.config, run.log, run.out_dir, run.saved)
            else:
                run.guard = accept(step, record.loss, record.grad_norm, record.t, record.per_example, run.guard,
                                   run.config, run.log)
        except DivergenceError as err:
            outcomes[run.index] = err
            leaving.append(j)
            continue
        if step % run.config.checkpoint_every == 0 and not _is_boundary(run, step, segment):
            due.append(j)  # (a boundary writes its own, below)
    for j, run in _saved_together(due, runs, stack, writers):
        run.saved = int(stack.step[j])
    leaving += _at_boundaries(runs, stack, [j for j in range(len(runs)) if j not in leaving], segment, on_segments,
                              outcomes, echo, writers)
    unfinished = _unfinished(runs, stack, leaving, outcomes)
    stack, left = _leave(stack, runs, leaving, outcomes, on_exit)
    return stack, left, unfinished


def _unfinished(runs, stack, leaving, outcomes):
    """(steps that the leaving runs will not do, how many of them stopped early)."""
    early = [j for j in leaving if not isinstance(outcomes[runs[j].index], RunResult)]
    return sum(runs[j].config.steps - int(stack.step[j]) for j in early), len(early)


def _saved_together(due, runs, stack, writers):
    """Write the checkpoints of the runs at positions `due`, in threads (each write waits for its disk), and return
    [(position, run)] once all are on disk."""
    jobs = [(j, runs[j], writers.submit(save_checkpoint, runs[j].out_dir, stacked.state_of(stack, j), runs[j].guard,
                                        runs[j].log, runs[j].config)) for j in due]
    for _, _, job in jobs:
        job.result()
    return [(j, run) for j, run, _ in jobs]


def _is_boundary(run, step, segment):
    """Is `step` the end of a segment, or the run's last step?"""
    return step >= run.config.steps or bool(segment and step % segment == 0)


def _at_boundaries(runs, stack, positions, segment, on_segments, outcomes, echo, writers):
    """The runs at `positions` that stand at a segment's end or their last step: write their checkpoints, call
    on_segments with them all, and return the positions of those that leave (stopped by it, or done)."""
    due = [j for j in positions if _is_boundary(runs[j], int(stack.step[j]), segment)]
    for j, run in _saved_together(due, runs, stack, writers):
        run.saved = int(stack.step[j])
    stopped = {}
    if on_segments is not None and due:
        stopped = on_segments([(runs[j].index, _on_host(stacked.state_of(stack, j))) for j in due]) or {}
    leaving = []
    for j in due:
        run, step = runs[j], int(stack.step[j])
        if run.index in stopped:  # the caller's reason to stop this run: its outcome
            outcomes[run.index] = stopped[run.index]
        elif step >= run.config.steps:
            if run.guard.skipped:
                echo(f"{run.out_dir}: skipped {run.guard.skipped} step(s) whose loss diverged")
            outcomes[run.index] = RunResult(run.out_dir, step, last_loss(run.guard), math.nan, math.nan, math.nan,
                                            run.guard.skipped)
        else:
            continue
        leaving.append(j)
    return leaving


def _one_by_one(on_segment):
    """on_segments from a per-run on_segment(r, state): an exception it raises stops that run only."""
    def on_segments(pairs):
        stopped = {}
        for r, state in pairs:
            try:
                on_segment(r, state)
            except Exception as err:  # noqa: BLE001  (the caller's reason to stop run r: its outcome)
                stopped[r] = err
        return stopped
    return on_segments


def _on_host(state):
    """The TrainState with host (NumPy) arrays, as `folder.load_checkpoint` gives it back."""
    host = lambda tree: {k: to_numpy(v) if hasattr(v, "shape") else v for k, v in tree.items()}  # noqa: E731
    return dataclasses.replace(state, params=host(state.params), ema=host(state.ema), adam=host(state.adam))


def _leave(stack, runs, leaving, outcomes, on_exit):
    """The stack and runs without those at positions `leaving` (their logs closed, on_exit told)."""
    if not leaving:
        return stack, runs
    for j in sorted(leaving):
        runs[j].log.close()
        if on_exit is not None:
            on_exit(runs[j].index, outcomes[runs[j].index])
    keep = [j for j in range(len(runs)) if j not in set(leaving)]
    return stacked.take(stack, keep), [runs[j] for j in keep]


# --- sampling many runs at once -------------------------------------------------------------------------------------

def stacked_models(params_list, problems, configs, timesteps):
    """forward(x, i) -> (R, n, D) predictions for x (R, n, D) at timesteps[i]: the R networks of one shape as one
    stacked network (nn.apply on (R, …) params, in their dtype); per run it computes what `train.model_fn` does
    with the same params (the same casts, the same time input and c_in, read from tables over `timesteps` made
    once), so each prediction is that run's."""
    params = stacked.stack([{k: to_numpy(v) for k, v in p.items()} for p in params_list])
    dtype = problems[0].dtype
    timesteps = np.asarray(timesteps)
    time = np.stack([time_inputs(p.schedule, c.time_input, timesteps) for p, c in zip(problems, configs)])  # (R, K)
    scale = np.stack([np.broadcast_to(np.asarray(input_scale_at(p, timesteps), dtype=np.float64).reshape(-1),
                                      timesteps.shape) for p in problems])  # (R, K): c_in, or 1
    time, scaled = to_device(time.astype(dtype)), bool(np.any(scale != 1))

    def forward(x, i):
        x_in = np.asarray(x, dtype=np.float64) * scale[:, i, None, None] if scaled else np.asarray(x, np.float64)
        out = nn.apply(params, to_device(x_in.astype(dtype)), time[:, i:i + 1])
        return np.asarray(to_numpy(out), dtype=np.float64)
    return forward


def _conversions(problem, timesteps):
    """(x0 from P, x0 from x, ε from P, ε from x) at the timesteps, each (K,): targets.to_x0_eps is linear in
    (P, x_t), x0_hat = a P + b x_t and eps_hat = c P + d x_t, so its coefficients are its values at unit inputs."""
    ones, zeros = np.ones((len(timesteps), 1)), np.zeros((len(timesteps), 1))
    x0_p, eps_p = to_x0_eps(problem.target, problem.schedule, ones, zeros, timesteps)
    x0_x, eps_x = to_x0_eps(problem.target, problem.schedule, zeros, ones, timesteps)
    return x0_p[:, 0], x0_x[:, 0], eps_p[:, 0], eps_x[:, 0]


def sample_stack(params_list, problems, configs, n, rngs, *, sampler="ddpm", steps=None):
    """(R, n, D) samples of R runs of one network shape and one T, drawn together: `sample.sample` with
    sampler 'ddpm' (σ² = β̃) or 'ddim' (η = 0) on the linspace grid of `steps` (default T), with the networks
    evaluated as one stack (`stacked_models`) and each run's update read from its own tables. Run r draws its
    x_T and its noise from rngs[r] in the order sample() does, so its samples are those of sample() with that
    generator, to rounding (the conversion to (x0_hat, eps_hat) is applied as coefficients, not by to_x0_eps)."""
    if sampler not in ("ddpm", "ddim"):
        raise ValueError(f"sample_stack draws with ddpm or ddim, not {sampler!r}")
    T = {p.schedule.T for p in problems}
    if len(T) != 1:
        raise ValueError(f"the runs sampled together share T, got {sorted(T)}")
    T = T.pop()
    timesteps = timestep_spacing(T, steps or T, "linspace")
    forward, R = stacked_models(params_list, problems, configs, timesteps), len(problems)
    D = np.shape(params_list[0]["out.W"])[-1]
    subs = []
    for p in problems:
        check_identifiable(p.target, p.schedule.alpha_bar[timesteps[0]])
        subs.append(respaced(p.schedule, timesteps))
    column = lambda rows: np.asarray(rows, dtype=np.float64).reshape(R, -1)  # noqa: E731  (R, K) tables
    x0_p, x0_x, eps_p, eps_x = (column(rows) for rows in zip(*(_conversions(p, timesteps) for p in problems)))
    if sampler == "ddpm":
        coef_x0, coef_xt = column([s.coef_x0 for s in subs]), column([s.coef_xt for s in subs])
        noise = np.sqrt(column([posterior_variance(s, "beta_tilde") for s in subs]))
    else:
        alpha_bar_prev = column([s.alpha_bar_prev for s in subs])
    x = np.stack([rng.standard_normal((n, D)) for rng in rngs])
    for i in range(len(timesteps)):
        k, at = len(timesteps) - 1 - i, lambda table, j: table[:, j, None, None]  # noqa: E731
        prediction = forward(x, i)
        x0_hat = at(x0_p, i) * prediction + at(x0_x, i) * x
        if sampler == "ddpm":
            mean = at(coef_x0, k) * x0_hat + at(coef_xt, k) * x  # post eq. (8) with x0_hat for x_0
            x = mean if k == 0 else mean + at(noise, k) * np.stack([rng.standard_normal((n, D)) for rng in rngs])
        else:
            eps_hat = at(eps_p, i) * prediction + at(eps_x, i) * x
            x = np.sqrt(at(alpha_bar_prev, k)) * x0_hat + np.sqrt(1 - at(alpha_bar_prev, k)) * eps_hat  # DDIM (12), η = 0
    return x
