"""Training: the one loss every target and weighting shares, the step, and the loop with its run folder.

The loss (Ho et al. 2020, Alg. 1, generalised to any target X and weighting w):

    t ~ p(t),  x_0 ~ data,  ε ~ N(0, I),  x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε
    L(θ) = E[ w_X(t) / (T p(t)) · ‖X(x_0, ε, t) − f_θ(x_t, t)‖² ]

Every target is linear in (x_0, ε), X = a_t x_0 + b_t ε, so the coefficients a_t, b_t are read once off
`targets.make_target` and the loss needs no per-target code. With p(t) uniform the factor 1/(T p(t)) is 1;
importance sampling of t (Nichol & Dhariwal 2021, §3.3) changes p(t) and keeps the loss unbiased through it.
"""
import dataclasses

import numpy as np

from . import nn, optim
from .backend import get_xp, value_and_vjp, weighted_squared_error
from .schedules import make_schedule
from .targets import canonical_target, loss_weight, make_target, parse_weighting
from .timesteps import TimestepSampler

DTYPES = {"float32": np.float32, "float64": np.float64}
TIME_INPUTS = ("t", "log_snr")
EMBED_RANGE = 1000.0  # the sinusoidal embedding is built for inputs in [0, 1000) (nn.py)
LOG_SNR_CLIP = 20.0  # λ is clipped to [−20, 20] before it is fed to the network (λ = −∞ at zero terminal SNR)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run; saved as config.json and enough to reproduce it bit for bit."""
    dataset: str = "moons"
    data_file: str = None
    n_train: int = 20_000
    standardize: bool = False
    target: str = "eps"
    schedule: str = "cosine"
    T: int = 1000
    zero_terminal_snr: bool = False
    weighting: str = "uniform"
    t_sampling: str = "uniform"
    steps: int = 10_000
    batch_size: int = 256
    lr: float = 2e-3
    warmup_steps: int = 200
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    dtype: str = "float32"
    seed: int = 0
    hidden: int = 256
    depth: int = 3
    time_dim: int = 32
    fourier_features: int = 0
    time_input: str = "t"
    log_every: int = 100
    checkpoint_every: int = 1000

    def network(self, data_dim):
        return nn.Config(data_dim=data_dim, hidden=self.hidden, depth=self.depth, time_dim=self.time_dim,
                         fourier_features=self.fourier_features)


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """The per-timestep constants of the loss, computed once and cast to the training dtype (arrays of length T)."""
    schedule: object
    target: str
    sqrt_alpha_bar: np.ndarray
    sqrt_one_minus_alpha_bar: np.ndarray
    a: np.ndarray  # X = a_t x_0 + b_t ε
    b: np.ndarray
    weight: np.ndarray  # w_X(t)
    time_input: np.ndarray  # what the network sees for timestep t
    dtype: type


def time_inputs(schedule, kind, t):
    """The network's time input for (possibly fractional) timesteps t: t scaled to [0, 1000), or mapped λ."""
    t = np.asarray(t, dtype=np.float64)
    if kind == "t":
        return t * (EMBED_RANGE / schedule.T)
    lam = np.interp(t, np.arange(schedule.T), np.clip(schedule.log_snr, -LOG_SNR_CLIP, LOG_SNR_CLIP))
    return EMBED_RANGE * (LOG_SNR_CLIP - lam) / (2 * LOG_SNR_CLIP)


def make_problem(config, schedule=None):
    schedule = schedule or make_schedule(config.schedule, config.T, zero_terminal_snr=config.zero_terminal_snr)
    target, dtype, t = canonical_target(config.target), DTYPES[config.dtype], np.arange(config.T)
    name, gamma = parse_weighting(config.weighting)
    weight = loss_weight(name, target, schedule, gamma=gamma)
    cast = lambda v: np.asarray(v, dtype=dtype)  # noqa: E731
    return Problem(schedule=schedule, target=target, sqrt_alpha_bar=cast(np.sqrt(schedule.alpha_bar)),
                   sqrt_one_minus_alpha_bar=cast(np.sqrt(1 - schedule.alpha_bar)),
                   a=cast(make_target(target, schedule, np.ones(config.T), np.zeros(config.T), t)),
                   b=cast(make_target(target, schedule, np.zeros(config.T), np.ones(config.T), t)),
                   weight=cast(weight), time_input=cast(time_inputs(schedule, config.time_input, t)), dtype=dtype)


def per_example_loss(params, problem, x0, eps, t):
    """w_X(t) ‖X − f_θ(x_t, t)‖² for each example (shape (B,)): the loss before averaging."""
    col = lambda v: v[t][:, None]  # noqa: E731  (per-example factor, broadcast over the data dimension)
    x_t = col(problem.sqrt_alpha_bar) * x0 + col(problem.sqrt_one_minus_alpha_bar) * eps  # (B, D)
    target = col(problem.a) * x0 + col(problem.b) * eps  # (B, D)
    prediction = nn.apply(params, x_t, problem.time_input[t])  # (B, D)
    return weighted_squared_error(prediction, target, problem.weight[t])  # (B,)


def loss_and_grad(params, problem, x0, eps, t, importance_weight=None):
    """(mean loss, grads, per-example losses): one forward and one backward pass through `per_example_loss`.

    The loss is L = (1/B) Σ_i u_i ℓ_i, with ℓ_i the per-example losses and u_i the importance weights (1 without), so
    ∂L/∂ℓ_i = u_i / B: the backward pass starts from that vector at ℓ, and the mean is one dot product outside the
    trace. The params are differentiated as separate arrays, not as a dict (`backend.value_and_vjp`).
    """
    names = list(params)
    losses, vjp = value_and_vjp(lambda *arrays: per_example_loss(dict(zip(names, arrays)), problem, x0, eps, t),
                                *params.values())  # (B,)
    xp, batch = get_xp(), losses.shape[0]
    u = xp.ones(batch, losses.dtype) if importance_weight is None else xp.asarray(importance_weight, losses.dtype)
    dloss_dlosses = u / batch  # ∂L/∂ℓ_i  (B,)
    return dloss_dlosses.dot(losses), dict(zip(names, vjp(dloss_dlosses))), losses


def model_fn(params, problem, config):
    """model(x_t, t) -> prediction (float64): the network as the samplers and the ELBO see it."""
    def model(x_t, t):
        time = time_inputs(problem.schedule, config.time_input, np.broadcast_to(t, (len(x_t),)))
        out = nn.apply(params, np.asarray(x_t, dtype=problem.dtype), time.astype(problem.dtype))
        return np.asarray(out, dtype=np.float64)
    return model


@dataclasses.dataclass(frozen=True, eq=False)
class TrainState:
    """What changes from step to step; saved whole in every checkpoint."""
    step: int
    params: dict
    ema: dict
    adam: dict
    rng: np.random.Generator
    timesteps: TimestepSampler


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss or gradient; the message names the step and the t range."""


def train_step(state, problem, config, x_train):
    """One step of Ho et al. 2020, Alg. 1 with Adam; returns (new state, loss, grad norm, t, per-example loss)."""
    rng = state.rng
    x0 = x_train[rng.integers(0, len(x_train), config.batch_size)]  # (B, D)
    t, importance_weight = state.timesteps.sample(rng, config.batch_size)
    eps = rng.standard_normal(x0.shape, dtype=problem.dtype)  # (B, D)
    loss, grads, per_example = loss_and_grad(state.params, problem, x0, eps, t, importance_weight)
    grads, grad_norm = optim.clip_by_global_norm(grads, config.grad_clip)
    if not (np.isfinite(loss) and np.isfinite(grad_norm)):
        raise DivergenceError(f"step {state.step + 1}: non-finite {'loss' if not np.isfinite(loss) else 'gradient'}"
                              f" with t in [{t.min()}, {t.max()}] (target {config.target}, lr {config.lr:g})")
    lr = optim.lr_at(state.step, config.lr, config.warmup_steps, config.steps, config.min_lr_ratio)
    params, adam = optim.adam_update(state.params, grads, state.adam, lr)
    ema = optim.ema_update(state.ema, params, optim.ema_decay_at(state.step, config.ema_decay))
    new = dataclasses.replace(state, step=state.step + 1, params=params, ema=ema, adam=adam,
                              timesteps=state.timesteps.update(t, per_example))
    return new, float(loss), float(grad_norm), t, per_example


class ConfigError(ValueError):
    """A TrainConfig that cannot run, with a one-line reason naming the option and what is allowed."""


def validate(config):
    """Check every option of a TrainConfig before any work is done; raise ConfigError on the first bad one."""
    from . import data
    from .timesteps import T_SAMPLINGS
    positive = ["n_train", "T", "steps", "batch_size", "hidden", "depth", "time_dim", "log_every", "checkpoint_every"]
    for name in positive:
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(config, name)}")
    checks = [(config.lr > 0 and np.isfinite(config.lr), f"lr must be a positive number, got {config.lr}"),
              (0 <= config.ema_decay < 1, f"ema_decay must be in [0, 1), got {config.ema_decay}"),
              (config.grad_clip > 0, f"grad_clip must be > 0 (use inf for no clipping), got {config.grad_clip}"),
              (0 <= config.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {config.min_lr_ratio}"),
              (config.warmup_steps >= 0, f"warmup_steps must be >= 0, got {config.warmup_steps}"),
              (config.fourier_features >= 0, f"fourier_features must be >= 0, got {config.fourier_features}"),
              (config.dtype in DTYPES, f"unknown dtype {config.dtype!r}; choose one of: {', '.join(DTYPES)}"),
              (config.time_input in TIME_INPUTS, f"unknown time input {config.time_input!r}; choose one of: "
                                                 f"{', '.join(TIME_INPUTS)}"),
              (config.t_sampling in T_SAMPLINGS, f"unknown t-sampling {config.t_sampling!r}; choose one of: "
                                                 f"{', '.join(T_SAMPLINGS)}"),
              (config.checkpoint_every % config.log_every == 0,
               f"checkpoint_every ({config.checkpoint_every}) must be a multiple of log_every ({config.log_every})")]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    if not config.data_file and config.dataset not in data.DATASETS:
        raise ConfigError(f"unknown dataset {config.dataset!r}; choose one of: {', '.join(data.DATASETS)}")
    try:
        target = canonical_target(config.target)
        parse_weighting(config.weighting)
        schedule = make_schedule(config.schedule, config.T, zero_terminal_snr=config.zero_terminal_snr, warn=False)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if target in ("eps", "score") and schedule.alpha_bar[-1] == 0:
        raise ConfigError(f"the {target} target cannot be used with zero terminal SNR: at the last step x_t is "
                          f"pure noise and x_0 cannot be recovered from ε (Lin et al. 2023); use --target v or x0")
    weight = make_problem(config, schedule).weight
    if not np.all(np.isfinite(weight)):
        bad = np.flatnonzero(~np.isfinite(weight))
        raise ConfigError(f"the {config.weighting} weighting of the {target} target is infinite at t = {bad[0]} "
                          f"for this schedule; choose another weighting or target")
    return schedule
