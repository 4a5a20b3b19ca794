"""Many runs as one computation: R runs of one network shape, trained together as arrays with a leading run axis.

A small MLP's training step is mostly Python: at the sweep's size (64 wide, 2 hidden layers, batch 128) its matrix
products are a few MFLOP, a small part of the step's time. But every target is a_t x_0 + b_t ε, every weighting a
function of t and every schedule a table, so R runs that differ in learning rate, target, weighting, schedule, time
sampler and seed are one computation over (R, …) arrays — one batched matrix product per layer — with the same
autograd gradients (`layers.py` and `nn.py` take a leading run axis). What differs from run to run enters as:

    params, EMA, Adam's moments    (R, …) arrays; Adam's step count one per run (a skipped step does not count)
    lr, EMA decay, clip factor     one number per run, each computed by the single run's own function
                                   (optim.lr_at, optim.ema_decay_at, optim.clip_scale), broadcast over (R, 1, …)
    √ᾱ_t, √(1 − ᾱ_t), a_t, b_t,    each run's tables of length T laid end to end, (R·T,): run r reads timestep t at
    w(t), the time input           r·T + t (`stack_problems`)
    t, x_0 and ε                   drawn by each run from its own generator, in the order of a single run
                                   (`train.draw_batch`, once per run), then stacked

Equality is the contract: each run of a stack computes the numbers of that run trained alone, bit for bit, in fp32
and fp64 (tests/test_stacked.py). It holds because every operation on a stack is, per run, the operation of one run:
NumPy's `matmul` of (R, B, n) @ (R, n, m) calls the BLAS gemm of `x.dot(W)` once per run; a run's mean loss and
squared gradient norm are per-run dot products, (R, 1, N) @ (R, N, 1), which call the BLAS dot of `a.dot(b)` once per
run (an `einsum` or a `sum` would add in another order); sums over the batch run over the same axis in the same
order; and NumPy's elementwise functions give each element the same bits wherever it sits in an array. On CuPy the
same code runs (the fused kernels take single runs only, `minidiff/accel/fused.py`); there cuBLAS's batched products
may round differently from its single ones, so a stack there matches single runs to rounding, not to the bit.

A run that diverges keeps its parameters (`train_step` restores them, as a single run's guard does) and the caller
decides, as `runs/loop.py` does for one run, whether it skips the step or leaves the stack (`take`).
"""
import dataclasses
import typing

import numpy as np

from minidiff import optim
from minidiff.accel.autodiff import value_and_vjp
from minidiff.accel.backend import get_xp, to_device, to_numpy
from minidiff.train import TrainState, divergence_error, draw_batch, per_example_loss


# --- stacks of dicts ----------------------------------------------------------------------------------------------

def stack(trees):
    """{name: (R, …)} from R dicts of arrays with the same names and shapes."""
    xp = get_xp()
    return {name: xp.stack([to_device(tree[name]) for tree in trees]) for name in trees[0]}


def run_of(tree, r):
    """Run r's arrays of a stacked dict: views, {name: (…)}."""
    return {name: v[r] for name, v in tree.items()}


def per_run(values, like):
    """One number per run as an array in `like`'s dtype, shaped (R, 1, …) to broadcast against `like` (R, …).

    The numbers are rounded to the dtype once, as NumPy rounds a Python number that meets an array of that dtype:
    each run's slice then computes exactly what the single run computes with its scalar. A stack of one gets the
    number itself, which is the single run's arithmetic to the letter (and its speed)."""
    if len(values) == 1:
        return values[0]
    column = np.asarray(values, dtype=np.float64).astype(like.dtype).reshape((-1,) + (1,) * (like.ndim - 1))
    return to_device(column)


# --- the problem: each run's tables end to end ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class StackedProblem:
    """R `train.Problem`s as one: each table (R·T,) holds the runs' tables end to end, so that `train.per_example_loss`
    reads run r's entry for timestep t at index `offsets[r] + t` (`flat_timesteps`)."""
    schedule: tuple
    target: tuple
    sqrt_alpha_bar: np.ndarray
    sqrt_one_minus_alpha_bar: np.ndarray
    a: np.ndarray
    b: np.ndarray
    weight: np.ndarray
    time_input: np.ndarray
    time_embedding: np.ndarray  # (R·T, E)
    dtype: type
    offsets: np.ndarray  # (R, 1): where each run's tables start
    input_scale: np.ndarray = None  # c_in of the runs with the edm target, 1 for the others (None: no run has it)
    learned: bool = False  # the runs learn their uncertainty (all or none: it is part of the network)


TABLES = ("sqrt_alpha_bar", "sqrt_one_minus_alpha_bar", "a", "b", "weight", "time_input", "time_embedding")


def stack_problems(problems):
    """The StackedProblem of R problems of one dtype (their T may differ)."""
    xp, dtypes = get_xp(), {p.dtype for p in problems}
    if len(dtypes) != 1:
        raise ValueError(f"the runs of a stack share one dtype, got {sorted(np.dtype(d).name for d in dtypes)}")
    if len({p.learned for p in problems}) != 1:
        raise ValueError("the runs of a stack all learn their uncertainty, or none does")
    lengths = [len(p.a) for p in problems]
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64).reshape(-1, 1)
    tables = {name: xp.concatenate([getattr(p, name) for p in problems]) for name in TABLES}
    scaled = any(p.input_scale is not None for p in problems)  # c_in x_t, and 1 · x_t (exact) for the others
    input_scale = xp.concatenate([xp.ones_like(p.a) if p.input_scale is None else p.input_scale
                                  for p in problems]) if scaled else None
    return StackedProblem(schedule=tuple(p.schedule for p in problems), target=tuple(p.target for p in problems),
                          dtype=problems[0].dtype, offsets=to_device(offsets), input_scale=input_scale,
                          learned=problems[0].learned, **tables)


def flat_timesteps(problem, t):
    """Each run's timesteps t (R, B) as indices into the problem's end-to-end tables."""
    return t + problem.offsets


# --- the state of R runs ----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class StackState:
    """R `train.TrainState`s as one: the arrays stacked, the generators and time samplers one per run."""
    step: np.ndarray        # (R,) each run's step (the runs of a stack may stand at different steps)
    params: dict            # {name: (R, …)}
    ema: dict
    adam: dict              # {"step": (R,) host ints, "m.name": (R, …), "v.name": (R, …)}
    rngs: tuple             # R numpy Generators
    timesteps: tuple        # R TimestepSamplers

    def __len__(self):
        return len(self.step)


def stack_states(states):
    """The StackState of R TrainStates of one network shape and dtype."""
    adam = stack([{k: v for k, v in s.adam.items() if k != "step"} for s in states])
    return StackState(step=np.array([s.step for s in states], np.int64), params=stack([s.params for s in states]),
                      ema=stack([s.ema for s in states]),
                      adam={"step": np.array([int(s.adam["step"]) for s in states], np.int64), **adam},
                      rngs=tuple(s.rng for s in states), timesteps=tuple(s.timesteps for s in states))


def state_of(states, r):
    """Run r's TrainState (its arrays are views into the stack)."""
    adam = {"step": int(states.adam["step"][r]), **{k: v[r] for k, v in states.adam.items() if k != "step"}}
    return TrainState(step=int(states.step[r]), params=run_of(states.params, r), ema=run_of(states.ema, r), adam=adam,
                      rng=states.rngs[r], timesteps=states.timesteps[r])


def take(states, runs):
    """The stack of the runs `runs` (indices, in order): the ones that go on when others leave."""
    pick = lambda tree: {k: v[_index(v, runs)] for k, v in tree.items()}  # noqa: E731  (fancy indexing copies)
    return StackState(step=states.step[_index(states.step, runs)], params=pick(states.params), ema=pick(states.ema),
                      adam=pick(states.adam), rngs=tuple(states.rngs[i] for i in runs),
                      timesteps=tuple(states.timesteps[i] for i in runs))


def _index(array, runs):
    """The run indices as an index array where `array` lives (host or device)."""
    index = np.asarray(runs, dtype=np.int64)
    return index if isinstance(array, np.ndarray) else to_device(index)


# --- the loss and its gradient ----------------------------------------------------------------------------------

def per_run_dot(a, b):
    """Σ_i a_ri b_ri for each run r of two (R, N) arrays, (R,): one BLAS dot per run, as `a[r].dot(b[r])` adds."""
    if len(a) == 1:
        return a[0].dot(b[0]).reshape(1)
    return (a[:, None, :] @ b[:, :, None])[:, 0, 0]


def loss_and_grad(params, problem, x0, eps, t, importance_weight):
    """(mean loss (R,), grads {name: (R, …)}, per-example losses (R, B)): `train.loss_and_grad` for each run.

    t are indices into the problem's tables (`flat_timesteps`); importance_weight (R, B) holds each run's weights
    u_i (1 where a run has none). ∂L_r/∂ℓ_ri = u_ri / B, the mean is a per-run dot product."""
    names = list(params)
    losses, vjp = value_and_vjp(lambda *arrays: per_example_loss(dict(zip(names, arrays)), problem, x0, eps, t),
                                *params.values())  # (R, B)
    dloss_dlosses = importance_weight / losses.shape[-1]  # (R, B)
    return per_run_dot(dloss_dlosses, losses), dict(zip(names, vjp(dloss_dlosses))), losses


def squared_norms(grads):
    """Σ g² of each run over all its arrays, (R,), summed in sorted order of the names as `optim.squared_norm`."""
    R = len(next(iter(grads.values())))
    if R == 1:
        return optim.squared_norm(grads).reshape(1)  # (each array's ravel is the run's own)
    return sum(per_run_dot(grads[name].reshape(R, -1), grads[name].reshape(R, -1)) for name in sorted(grads))


# --- one step of R runs -----------------------------------------------------------------------------------------

def draw_batches(states, problems, configs, x_trains):
    """(x_0 (R, B, D), ε (R, B, D), t (R, B), importance weights (R, B)): each run's `train.draw_batch`, in order."""
    xp, draws = get_xp(), []
    for r, (problem, config, x_train) in enumerate(zip(problems, configs, x_trains)):
        run = TrainState(step=int(states.step[r]), params=None, ema=None, adam=None, rng=states.rngs[r],
                         timesteps=states.timesteps[r])
        draws.append(draw_batch(run, problem, config, x_train))
    together = (lambda arrays: arrays[0][None]) if len(draws) == 1 else xp.stack  # (one run: a view)
    x0, eps, t = (together([d[i] for d in draws]) for i in range(3))
    weights = xp.ones(t.shape, dtype=x0.dtype)
    for r, d in enumerate(draws):
        if d[3] is not None:
            weights[r] = xp.asarray(d[3], dtype=x0.dtype)
    return x0, eps, t, weights


class StepRecord(typing.NamedTuple):
    """What one run's step gave: as `train.train_step` returns it, and the DivergenceError it would have raised."""
    loss: float
    grad_norm: float
    t: object               # (B,) the run's timesteps
    per_example: object     # (B,) its per-example losses
    error: Exception        # None for a sound step


def train_step(states, problem, problems, configs, x_trains, loss_medians):
    """One step of every run of the stack: (new stack, [StepRecord per run]).

    Each run goes through `train.train_step`'s arithmetic with its own config and the running median of its own
    guard (loss_medians[r], None when not known). A run whose step diverges keeps its params, EMA, Adam state and
    time sampler (its generator has drawn the batch, as alone); every run's step count advances by one, which is
    where a skipped step leaves a single run (runs/loop.py)."""
    x0, eps, t, weights = draw_batches(states, problems, configs, x_trains)
    losses, grads, per_example = loss_and_grad(states.params, problem, x0, eps, flat_timesteps(problem, t), weights)
    losses, norms = to_numpy(losses).tolist(), np.sqrt(to_numpy(squared_norms(grads)).astype(np.float64)).tolist()
    records, lrs, scales, steps = [], [], [], states.step.tolist()
    for r, (config, step) in enumerate(zip(configs, steps)):
        lrs.append(optim.lr_at(step, config.lr, config.warmup_steps, config.steps, config.min_lr_ratio))
        error = divergence_error(step, losses[r], norms[r], loss_medians[r], t[r], config, lrs[r])
        scales.append(optim.clip_scale(norms[r], config.grad_clip))  # Pascanu et al. 2013
        records.append(StepRecord(losses[r], norms[r], t[r], per_example[r], error))
    params, adam = adam_update(states.params, grads, states.adam, lrs, scales)
    rates = [1 - optim.ema_decay_at(step, config.ema_decay) for step, config in zip(steps, configs)]
    ema = ema_update(states.ema, params, rates)
    bad = [r for r, record in enumerate(records) if record.error is not None]
    if bad:
        params, ema, adam = (_restore(new, old, bad) for new, old in
                             ((params, states.params), (ema, states.ema), (adam, states.adam)))
    timesteps = tuple(sampler if record.error is not None else _seen(sampler, record)
                      for sampler, record in zip(states.timesteps, records))
    return StackState(step=states.step + 1, params=params, ema=ema, adam=adam, rngs=states.rngs,
                      timesteps=timesteps), records


def _seen(sampler, record):
    """The time sampler after a sound step (importance sampling keeps its history on the host, as in train_step)."""
    if sampler.kind != "importance":
        return sampler
    return sampler.update(to_numpy(record.t), to_numpy(record.per_example))


def _restore(new, old, runs):
    """`new` with the runs `runs` put back to `old` (fresh arrays, written in place)."""
    for name, value in new.items():
        value[_index(value, runs)] = old[name][_index(value, runs)]
    return new


def adam_update(params, grads, state, lrs, grad_scales, weight_decay=0.0):
    """`optim.adam_update` for every run at once: each run's step t, lr and clip factor, one update per array."""
    steps = state["step"] + 1
    rows = [optim.adam_coefficients(int(t), lr, weight_decay=weight_decay) for t, lr in zip(steps, lrs)]

    def coefficients(like):  # decay on a run's matrices only, as optim.adam_update decides
        decay = per_run([row["decay"] for row in rows], like) if weight_decay and like.ndim - 1 >= 2 else 0.0
        return dict(one_minus_beta1=rows[0]["one_minus_beta1"], one_minus_beta2=rows[0]["one_minus_beta2"],
                    eps_hat=per_run([row["eps_hat"] for row in rows], like), decay=decay,
                    step_size=per_run([row["step_size"] for row in rows], like), grad_scale=per_run(grad_scales, like))
    columns = _Columns(coefficients)
    new_params, new_state = {}, {"step": steps}
    for name, theta in params.items():
        new_params[name], new_state["m." + name], new_state["v." + name] = optim.adam_step(
            theta, grads[name], state["m." + name], state["v." + name], **columns.like(theta))
    return new_params, new_state


def ema_update(ema, params, rates):
    """`optim.ema_update` for every run at once, rates[r] = 1 − run r's decay."""
    columns = _Columns(lambda like: per_run(rates, like))
    return {name: optim.ema_step(params[name], average, columns.like(average)) for name, average in ema.items()}


class _Columns:
    """make(like) for each rank and dtype of array it is asked about, made once (a step's per-run numbers)."""

    def __init__(self, make):
        self.make, self.made = make, {}

    def like(self, array):
        key = (array.ndim, array.dtype)
        if key not in self.made:
            self.made[key] = self.make(array)
        return self.made[key]
