"""The checks of a sweep's cells: what each check measures, and how the cells of a stack are checked together.

Every `check_every` steps (and at step 0) a cell's EMA model is checked on the cell's own generator, never the
run's (SeedSequence([seed, EVAL_STREAM])), its network in the dtype the run trained in — as `minidiff sample` and
`minidiff elbo` evaluate a run — and the samplers' updates and the bound's terms in fp64:

- the training loss of the EMA weights on one fixed evaluation batch (the run's own target and weighting);
- the energy distance of `quality_n` ancestral samples (DDPM respaced to `quality_steps` steps) to as many
  held-out points. (Not DDIM: from t = T − 1 of the cosine schedule, where ᾱ ≈ 2e-9, its first deterministic step
  multiplies an ε-model's error by √(ᾱ_prev / ᾱ_{T−1}), and ε-runs would look broken when they are not.)

A cell has diverged when training raises `train.DivergenceError` (a non-finite or exploding loss or gradient), or
when the evaluation loss is non-finite or grows `blowup_factor` times above its value at initialisation (BlowUp).
A cell that finishes gets its bound, −ELBO on quality_n held-out points with every one of the T terms
(`elbo.elbos`).

Together. Past training, what a cell costs is these checks: 500 samples through 100 steps, nine times, and 500
points through T = 1000 bound terms, about as many network evaluations as its training. The cells of a stack are
checked at once: each sampler step and each bound term is one stacked network evaluation for all of them
(`runs.stack.sample_stack`, `runs.stack.stacked_models`), and each bound term one computation for the cells of a
target (`elbo.elbos`), while each cell draws from its own generator in the order it would alone. A cell trained
alone is checked by the same functions, as a stack of one, so both engines give the same numbers, bit for bit.
"""
import os

import numpy as np

from minidiff import metrics
from minidiff.elbo import elbos
from minidiff.runs import checkpoint as ckpt, datafile, files, loop as run, stack as runstack
from minidiff.train import make_problem
from minidiff.lab.diagnostics import gradvar, landscape

BLOWUP_FACTOR = 100.0      # an evaluation loss 100 × its initial value counts as divergence
EVAL_STREAM = 1            # the checks' generator: SeedSequence([seed, EVAL_STREAM]), apart from the run's four
CHECKS_FILE = "checks.json"


class BlowUp(RuntimeError):
    """The evaluation loss became non-finite or grew beyond blowup_factor times its initial value."""

    def __init__(self, message, step):
        super().__init__(message)
        self.step = step


class Checks:
    """The periodic checks of one cell (module docstring): its generator, evaluation batch and history. Called with
    the state after each segment; `check_together` checks the cells of a stack at once."""

    def __init__(self, config, sweep):
        self.config, self.sweep, self.history = config, sweep, []
        self.rng = np.random.default_rng([config.seed, EVAL_STREAM])
        x_train, self.x_held, self.stats = run.load_training_data(config, run.generators(config.seed)[0])
        self.problem = make_problem(config)
        x0, eps, t = gradvar.draw_examples(x_train, sweep.eval_n, config.T, self.rng)
        self.batch = x0.astype(self.problem.dtype), eps.astype(self.problem.dtype), t  # as training draws them

    def __call__(self, state):
        failed = check_together([self], [state])
        if failed:
            raise failed[0]

    def bound(self, params):
        """{elbo_nats, elbo_bits_per_dim, elbo_stderr_nats} of the EMA model on quality_n held-out points."""
        return bounds_together([self], [params])[0]

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


def check_together(checks, states):
    """Check each cell checks[r] at its state states[r] (the cells of one stack, at one step): every EMA model's
    evaluation loss, then the energy samples of those whose loss is finite, drawn together (`energies`). Records
    each check in its history; returns {r: BlowUp} for the cells whose loss is non-finite or blew up."""
    emas = [state.ema for state in states]
    with np.errstate(all="ignore"):
        losses = [landscape.loss_at(params, c.problem, c.batch) for params, c in zip(emas, checks)]
        finite = [r for r, loss in enumerate(losses) if np.isfinite(loss)]
        measured = dict(zip(finite, energies([checks[r] for r in finite], [emas[r] for r in finite])))
    failed = {}
    for r, (c, state, loss) in enumerate(zip(checks, states, losses)):
        c.history.append(dict(step=state.step, eval_loss=loss, energy_distance=measured.get(r, float("nan"))))
        first = c.history[0]["eval_loss"]
        if not np.isfinite(loss) or loss > c.sweep.blowup_factor * first:
            failed[r] = BlowUp(f"step {state.step}: evaluation loss {loss:.4g} (at initialisation {first:.4g})",
                               state.step)
    return failed


def by_T(checks):
    """The positions of the cells, grouped by T (a stack is sampled and bounded together only within one T)."""
    groups = {}
    for r, c in enumerate(checks):
        groups.setdefault(c.config.T, []).append(r)
    return list(groups.values())


def energies(checks, emas):
    """The energy distance of each cell's quality_n ancestral samples (DDPM respaced to quality_steps) to as many
    held-out points: the cells of one T sampled as one stack (`runs.stack.sample_stack`), each from its checks'
    generator — the samples `sample.sample` draws with it, to rounding, and the same in either engine."""
    out = [None] * len(checks)
    for group in by_T(checks):
        cells = [checks[r] for r in group]
        sweep = cells[0].sweep
        samples = runstack.sample_stack([emas[r] for r in group], [c.problem for c in cells],
                                        [c.config for c in cells], sweep.quality_n, [c.rng for c in cells],
                                        sampler="ddpm", steps=min(sweep.quality_steps, cells[0].config.T))
        for r, x in zip(group, samples):
            out[r] = _energy(checks[r], x)
    return out


def _energy(checks, x):
    if checks.stats is not None:
        x = datafile.unstandardize(x, checks.stats)
    if not np.all(np.isfinite(x)):
        return float("inf")
    distance = metrics.energy_distance(x, checks.x_held[:len(x)])
    return distance if np.isfinite(distance) else float("inf")  # points so far out that distances overflow


def bounds_together(checks, emas):
    """[{elbo_nats, elbo_bits_per_dim, elbo_stderr_nats}] of each cell's EMA model on its quality_n held-out points,
    every T term (`elbo.elbos`), the networks of one T evaluated as one stack (`runs.stack.stacked_models`)."""
    out = [None] * len(checks)
    for group in by_T(checks):
        cells = [checks[r] for r in group]
        forward = runstack.stacked_models([emas[r] for r in group], [c.problem for c in cells],
                                          [c.config for c in cells], np.arange(cells[0].config.T))
        with np.errstate(all="ignore"):
            bounds = elbos(forward, [c.problem.schedule for c in cells],
                           [c.x_held[:c.sweep.quality_n] for c in cells], targets=[c.problem.target for c in cells],
                           rngs=[c.rng for c in cells], stats=[c.stats for c in cells])
        for r, bound in zip(group, bounds):
            out[r] = dict(elbo_nats=bound.nats, elbo_bits_per_dim=bound.bits_per_dim,
                          elbo_stderr_nats=bound.stderr_nats)
    return out
