"""Training: the one loss every target and weighting shares, the step, and the loop with its run folder.

The loss (Ho et al. 2020, Alg. 1, generalised to any target X and weighting w):

    t ~ p(t),  x_0 ~ data,  ε ~ N(0, I),  x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε
    L(θ) = E[ w_X(t) / (T p(t)) · ‖X(x_0, ε, t) − f_θ(x_t, t)‖² ]

Every target is linear in (x_0, ε), X = a_t x_0 + b_t ε, so the coefficients a_t, b_t are read once off
`targets.make_target` and the loss needs no per-target code. With p(t) uniform the factor 1/(T p(t)) is 1;
importance sampling of t (Nichol & Dhariwal 2021, §3.3) changes p(t) and keeps the loss unbiased through it.

On a GPU (backend.use_device) the problem's tables and the params live on the device, the loss takes host or device
arrays and computes on the device, and the batch is drawn as TrainConfig.randomness says (`draw_batch`; the
trade-off is in backend's docstring).
"""
import dataclasses
import math
import numbers

import numpy as np

from minidiff.accel import counter
from minidiff import nn, objective, optim
from minidiff.accel.autodiff import value_and_vjp
from minidiff.accel.backend import get_xp, to_device, to_numpy
from minidiff.accel.fused import fusable
from minidiff.errors import RunError, UsageError
from minidiff.layers import uncertainty_weighted, weighted_squared_error
from minidiff.preconditioning import EDM_SIGMA_DATA
from minidiff.named_schedules import MAX_SHIFT
from minidiff.schedules import between_steps
from minidiff.targets import canonical_target, check_identifiable, loss_weight, make_target, parse_weighting
from minidiff.timesteps import TimestepSampler, parse_t_sampling

DTYPES = {"float32": np.float32, "float64": np.float64}
TIME_INPUTS = ("t", "log_snr")
EMBED_RANGE = 1000.0  # the sinusoidal embedding is built for inputs in [0, 1000) (nn.py)
LOG_SNR_CLIP = 20.0  # λ is clipped to [−20, 20] before it is fed to the network (λ = −∞ at zero terminal SNR)
ON_DIVERGENCE = ("stop", "skip-step")
RANDOMNESS = ("numpy", "counter")  # the run's NumPy generator on the host, or counter.py's where the arrays live
# A loss 10⁴ times the median of the last 100 is an explosion. Largest ratio measured on healthy runs (moons and
# others, 3000–5000 steps): 1.7 for ε, x0, v with uniform weighting (batch 64); for score and μ 26 at batch 256, 90
# at batch 64; with ELBO weighting 260 at batch 256, 2500 at batch 64 (one small-t example can carry most of a
# batch's loss). Runs made to diverge (lr 1 to 100, batch 64) crossed 10⁴ within 115–300 steps. Heavy-tailed setups
# with tiny batches (x0, ELBO weighting, batch 4: 10⁵) need a larger --explosion-factor.
EXPLOSION_FACTOR = 1e4
# Skipped steps leave the parameters as they were, so a run of them retries the same parameters on fresh batches:
# no healthy run above met even one explosion, so ten in a row means the parameters themselves have gone bad.
MAX_SKIPS_IN_A_ROW = 10
MEMORY_LIMIT = 2 ** 34  # 16 GiB: far more than a toy run needs (the default config: ~15 MiB, `memory_estimate`)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run; saved as config.json and enough to reproduce it bit for bit."""
    dataset: str = "moons"
    data_file: str = None
    data_sha256: str = None  # the data file's checksum, recorded when the run starts: later commands check it
    n_train: int = 20_000
    standardize: bool = False
    target: str = "eps"
    schedule: str = "cosine"
    T: int = 1000
    zero_terminal_snr: bool = False
    weighting: str = "uniform"
    t_sampling: str = "uniform"
    steps: int = 4000
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
    on_divergence: str = "stop"  # or "skip-step": drop the update of a diverging step and go on (run.LossGuard)
    explosion_factor: float = EXPLOSION_FACTOR  # a loss above this × the running median of recent losses diverged
    max_skips: int = MAX_SKIPS_IN_A_ROW  # skip-step stops training after this many skipped steps in a row
    randomness: str = "numpy"  # how batch, t and noise are drawn: RANDOMNESS (backend's docstring)
    snr_shift: float = 1.0  # the schedule's log-SNR shift s, λ → λ − 2 log s (schedules.py; SD3's time shift)
    sigma_data: float = EDM_SIGMA_DATA  # EDM's σ_d of the edm target and weighting (the CLI measures it: objective.py)

    def network(self, data_dim):
        return nn.Config(data_dim=data_dim, hidden=self.hidden, depth=self.depth, time_dim=self.time_dim,
                         fourier_features=self.fourier_features, uncertainty=self.learns_uncertainty)

    @property
    def learns_uncertainty(self):
        """Whether the loss is EDM2's e^(−u) L + u with a learned u (the `learned` weighting)."""
        return parse_weighting(self.weighting)[0] == "learned"


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
    time_embedding: np.ndarray  # (T, E): emb(time input) of every timestep, read at each step, not recomputed
    dtype: type
    input_scale: np.ndarray = None  # c_in of the edm target at each t: the network sees c_in x_t (None: x_t)
    learned: bool = False  # the loss is e^(−u) L + u with the network's learned u (nn.uncertainty)


def time_inputs(schedule, kind, t):
    """The network's time input for (possibly fractional) timesteps t: t scaled to [0, 1000), or mapped λ.

    EDM's time input c_noise = ¼ ln σ_E = −λ/8 (Karras et al. 2022, Table 1) is an affine map of λ: mapped onto
    the embedding's range it is exactly the log_snr input, which is how an edm run gives the network c_noise.
    """
    t = np.asarray(t, dtype=np.float64)
    if kind == "t":
        return t * (EMBED_RANGE / schedule.T)
    lam = np.interp(t, np.arange(schedule.T), np.clip(schedule.log_snr, -LOG_SNR_CLIP, LOG_SNR_CLIP))
    return EMBED_RANGE * (LOG_SNR_CLIP - lam) / (2 * LOG_SNR_CLIP)


def make_problem(config, schedule=None):
    """The run's loss constants. problem.target is the target's full spec (objective.target_of: with σ_d for edm),
    the one every sampler, bound and likelihood of this run must be given."""
    schedule = schedule or objective.schedule_of(config)
    target, dtype, t = canonical_target(objective.target_of(config)), DTYPES[config.dtype], np.arange(config.T)
    name, gamma = parse_weighting(objective.weighting_of(config))
    weight = loss_weight(name, target, schedule, gamma=gamma)
    cast = lambda v: to_device(np.asarray(v, dtype=dtype))  # noqa: E731  (the device's copy, made once)
    time_input = cast(time_inputs(schedule, config.time_input, t))
    scale = objective.input_scale(target, schedule.alpha_bar)
    return Problem(schedule=schedule, target=target, sqrt_alpha_bar=cast(np.sqrt(schedule.alpha_bar)),
                   sqrt_one_minus_alpha_bar=cast(np.sqrt(1 - schedule.alpha_bar)),
                   a=cast(make_target(target, schedule, np.ones(config.T), np.zeros(config.T), t)),
                   b=cast(make_target(target, schedule, np.zeros(config.T), np.ones(config.T), t)),
                   weight=cast(weight), time_input=time_input,
                   time_embedding=nn.time_embedding(time_input, config.time_dim, dtype), dtype=dtype,
                   input_scale=None if scale is None else cast(scale), learned=config.learns_uncertainty)


def per_example_loss(params, problem, x0, eps, t):
    """w_X(t) ‖X − f_θ(x_t, t)‖² for each example (shape (B,)): the loss before averaging.

    The params, x0, eps and t may be host or device arrays: the loss is computed on the device in use (host arrays
    are copied there first), and so is what it returns.
    """
    params = {k: to_device(v) for k, v in params.items()}
    x0, eps, t = to_device(x0), to_device(eps), to_device(t)
    x_t, target = noisy_and_target(problem, x0, eps, t)  # (B, D), (B, D)
    if problem.input_scale is not None:
        x_t = problem.input_scale[t][..., None] * x_t  # c_in x_t (Karras et al. 2022, Table 1)
    if problem.time_embedding.shape[-1] == params["in.W"].shape[-2] - x0.shape[-1]:
        # the time embedding read from the table: the numbers nn.apply computes from t, each sin and cos once
        prediction = nn.apply_embedded(params, x_t, problem.time_embedding.take(t, axis=0))  # (B, D)
    else:  # a network with another embedding size than the config's
        prediction = nn.apply(params, x_t, problem.time_input[t])  # (B, D)
    losses = weighted_squared_error(prediction, target, problem.weight[t])  # (B,)
    if problem.learned:  # Karras et al. 2024, eq. (16): e^(−u) L + u
        return uncertainty_weighted(losses, nn.uncertainty(params, problem.time_input[t]))
    return losses


@fusable("noisy_and_target")
def noisy_and_target(problem, x0, eps, t):
    """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (Ho et al. 2020, eq. 4) and the target X = a_t x_0 + b_t ε, each (B, D).

    The tables are read at each example's t and broadcast over the data dimension; on the GPU both come out of one
    kernel (kernels.py: noisy_and_target).
    """
    col = lambda v: v[t][..., None]  # noqa: E731  (per-example factor, broadcast over the data dimension)
    x_t = col(problem.sqrt_alpha_bar) * x0 + col(problem.sqrt_one_minus_alpha_bar) * eps  # (B, D)
    target = col(problem.a) * x0 + col(problem.b) * eps  # (B, D)
    return x_t, target


def loss_and_grad(params, problem, x0, eps, t, importance_weight=None):
    """(mean loss, grads, per-example losses): one forward and one backward pass through `per_example_loss`.

    The loss is L = (1/B) Σ_i u_i ℓ_i, with ℓ_i the per-example losses and u_i the importance weights (1 without), so
    ∂L/∂ℓ_i = u_i / B: the backward pass starts from that vector at ℓ, and the mean is one dot product outside the
    trace. The params are differentiated as separate arrays, not as a dict (`minidiff/accel/autodiff.py`).
    """
    names = list(params)
    losses, vjp = value_and_vjp(lambda *arrays: per_example_loss(dict(zip(names, arrays)), problem, x0, eps, t),
                                *params.values())  # (B,)
    xp, batch = get_xp(), losses.shape[0]
    u = xp.ones(batch, losses.dtype) if importance_weight is None else xp.asarray(importance_weight, losses.dtype)
    dloss_dlosses = u / batch  # ∂L/∂ℓ_i  (B,)
    return dloss_dlosses.dot(losses), dict(zip(names, vjp(dloss_dlosses))), losses


def model_fn(params, problem, config):
    """model(x_t, t) -> prediction (float64): the network as the samplers and the ELBO see it.

    x_t and t are host arrays, and so is the prediction; the network runs on the device in use (its params are
    copied there once), so each call moves x_t up and the prediction back: 2·B·D numbers.
    """
    params = {k: to_device(v) for k, v in params.items()}

    def model(x_t, t):
        t = np.broadcast_to(t, (len(x_t),))
        shared = len(t) > 0 and bool(np.all(t == t[0]))  # a sampler's step: one time, embedded once for the batch
        time = time_inputs(problem.schedule, config.time_input, t[:1] if shared else t)
        x_in = np.asarray(x_t, dtype=np.float64) * input_scale_at(problem, t)
        out = nn.apply(params, to_device(x_in.astype(problem.dtype)), to_device(time.astype(problem.dtype)))
        return np.asarray(to_numpy(out), dtype=np.float64)
    return model


def learned_uncertainty(params, problem):
    """u(t) for t = 0 … T−1 of a run with the learned weighting (nn.uncertainty on the run's time inputs), (T,)."""
    params = {k: to_device(v) for k, v in params.items()}
    return np.asarray(to_numpy(nn.uncertainty(params, problem.time_input)), dtype=np.float64)[:, 0]


def input_scale_at(problem, t):
    """c_in at (possibly fractional) timesteps t, as a (B, 1) column, or 1: what the network's input x_t is
    multiplied by (the edm target's preconditioning; 1 for every other target)."""
    if problem.input_scale is None:
        return 1.0
    scale = objective.input_scale(problem.target, between_steps(problem.schedule, np.asarray(t, float)).alpha_bar)
    return scale[:, None]


@dataclasses.dataclass(frozen=True, eq=False)
class TrainState:
    """What changes from step to step; saved whole in every checkpoint."""
    step: int
    params: dict
    ema: dict
    adam: dict
    rng: np.random.Generator
    timesteps: TimestepSampler


class DivergenceError(RunError):
    """Training produced a non-finite loss or gradient, or a loss explosion; raised before the update is applied.

    The message names the step, what went wrong, the t range of the batch, the target and the learning rate;
    `step` is the step that diverged (1-based, as the loss log counts)."""

    def __init__(self, message, step):
        super().__init__(message)
        self.step = step


def train_step(state, problem, config, x_train, loss_median=None):
    """One step of Ho et al. 2020, Alg. 1 with Adam; returns (new state, loss, grad norm, t, per-example loss).

    The guard comes between the gradient and the update: a non-finite loss or gradient, or a loss above
    config.explosion_factor × `loss_median` (the running median of recent losses that the loop keeps,
    `run.LossGuard`; None: not known yet), raises DivergenceError and changes nothing but `state.rng`, which has
    drawn this step's batch (so that a skipped step is followed by a fresh batch).

    The loss and the gradient norm come back to the host as Python floats, the step's one synchronisation on a GPU
    (backend's docstring); t and the per-example losses stay where they were computed.
    """
    x0, eps, t, importance_weight = draw_batch(state, problem, config, x_train)
    loss, grads, per_example = loss_and_grad(state.params, problem, x0, eps, t, importance_weight)
    loss, grad_norm = float(loss), math.sqrt(float(optim.squared_norm(grads)))  # read back: the guard needs them
    lr = optim.lr_at(state.step, config.lr, config.warmup_steps, config.steps, config.min_lr_ratio)
    error = divergence_error(state.step, loss, grad_norm, loss_median, t, config, lr)
    if error is not None:
        raise error
    params, adam = optim.adam_update(state.params, grads, state.adam, lr,
                                     grad_scale=optim.clip_scale(grad_norm, config.grad_clip))  # Pascanu et al. 2013
    ema = optim.ema_update(state.ema, params, optim.ema_decay_at(state.step, config.ema_decay))
    # importance sampling keeps its loss history on the host: with it, and only then, a second read back a step
    seen = (to_numpy(t), to_numpy(per_example)) if state.timesteps.kind == "importance" else (t, per_example)
    new = dataclasses.replace(state, step=state.step + 1, params=params, ema=ema, adam=adam,
                              timesteps=state.timesteps.update(*seen))
    return new, loss, grad_norm, t, per_example


def draw_batch(state, problem, config, x_train):
    """(x_0, ε, t, importance weights or None) of this step, on the device in use.

    randomness 'numpy': the run's generator state.rng draws on the host (x_train a host array) — the CPU's numbers.
    'counter': counter.py's streams of (seed, step) draw where x_train lives, with nothing to carry in the state.
    """
    B = config.batch_size
    if config.randomness == "counter":
        x0 = x_train[counter.integers(counter.stream_key(config.seed, state.step, "data"), B, len(x_train))]
        t, importance_weight = counter_timesteps(state.timesteps, counter.stream_key(config.seed, state.step, "t"), B)
        eps = counter.normal(counter.stream_key(config.seed, state.step, "noise"), x0.shape, problem.dtype)
        return to_device(x0), eps, t, importance_weight
    rng, x_train = state.rng, to_numpy(x_train)
    x0 = x_train.take(rng.integers(0, len(x_train), B), axis=0)  # (B, D)
    t, importance_weight = state.timesteps.sample(rng, B)
    eps = rng.standard_normal(x0.shape, dtype=problem.dtype)  # (B, D)
    return to_device(x0), to_device(eps), to_device(t), importance_weight


def counter_timesteps(sampler, key, batch_size):
    """`TimestepSampler.sample` with counter.py's uniforms for the generator's: (t, importance weights or None).

    The same rules (timesteps.py): uniform ⌊u T⌋; stratified u_i = (u + i/B) mod 1 from one u; importance and the
    density samplers by inverting the cumulative p(t) at each u (p is on the host; p and the weights go to the device).
    """
    xp, T = get_xp(), sampler.T
    if sampler.kind == "stratified":
        u = (counter.scalar_uniform(key) + xp.arange(batch_size) / batch_size) % 1.0
        return xp.minimum((u * T).astype(np.int64), T - 1), None
    p = sampler.distribution()
    if p is not None:
        t = xp.minimum(xp.searchsorted(to_device(np.cumsum(p)), counter.uniform(key, batch_size), side="right"), T - 1)
        return t, (1.0 / (T * to_device(p)[t])).astype(np.float32) if sampler.weights_losses else None
    return counter.integers(key, batch_size, T), None


def divergence_error(step, loss, grad_norm, loss_median, t, config, lr):
    """The DivergenceError of the 0-based update `step` (its loss, gradient norm, the running median, its batch's
    timesteps t and its learning rate), or None when the step is sound."""
    problem_found = _divergence(loss, grad_norm, loss_median, config.explosion_factor)
    if not problem_found:
        return None
    return DivergenceError(f"step {step + 1}: {problem_found} with t in [{int(t.min())}, {int(t.max())}] "
                           f"(target {config.target}, lr {lr:.3g})", step + 1)


def _divergence(loss, grad_norm, loss_median, factor):
    """What is wrong with this step, in words, or None: a non-finite loss or gradient, or a loss explosion."""
    if not math.isfinite(loss):
        return f"non-finite loss {loss}"
    if not math.isfinite(grad_norm):
        return f"non-finite gradient (norm {grad_norm})"
    if loss_median is not None and loss > factor * loss_median:
        return (f"loss explosion, loss {loss:.4g} is {loss / loss_median:.3g} × the running median {loss_median:.4g} "
                f"(explosion factor {factor:g})")
    return None


class ConfigError(UsageError):
    """A TrainConfig that cannot run, with a one-line reason naming the option and what is allowed."""


def validate(config):
    """Check every option of a TrainConfig before any work is done; raise ConfigError on the first bad one.

    Returns the schedule. Types come first (a config read back from config.json may hold anything), then ranges
    and names, then the memory the run would need, then the combinations that only the schedule can judge."""
    _check_types(config)
    for ok, message in _range_checks(config):
        if not ok:
            raise ConfigError(message)
    if memory_estimate(config) > MEMORY_LIMIT:
        raise ConfigError(f"this run would need about {memory_estimate(config) / 2 ** 30:.0f} GiB (from T, n_train, "
                          f"batch_size, hidden, depth), more than the limit of {MEMORY_LIMIT / 2 ** 30:.0f} GiB")
    return _check_combinations(config)


def _check_types(config):
    kinds = {int: numbers.Integral, float: numbers.Real, str: str, bool: bool}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.type not in kinds or (field.name in ("data_file", "data_sha256") and value is None):
            continue
        if isinstance(value, bool) != (field.type is bool) or not isinstance(value, kinds[field.type]):
            raise ConfigError(f"{field.name} must be of type {field.type.__name__}, got {value!r}")


def _range_checks(config):
    """(ok, message) for every option that has a range or a list of names."""
    from minidiff import data
    positive = ["n_train", "T", "steps", "batch_size", "hidden", "depth", "time_dim", "log_every", "checkpoint_every",
                "max_skips"]
    names = [("dtype", DTYPES), ("time_input", TIME_INPUTS),
             ("on_divergence", ON_DIVERGENCE), ("randomness", RANDOMNESS)] + (
        [] if config.data_file else [("dataset", data.DATASETS)])
    return [(getattr(config, name) >= 1, f"{name} must be >= 1, got {getattr(config, name)}") for name in positive] + [
        (getattr(config, name) in allowed, f"unknown {name.replace('_', '-')} {getattr(config, name)!r}; choose one "
                                           f"of: {', '.join(allowed)}") for name, allowed in names] + [
        (config.lr > 0 and np.isfinite(config.lr), f"lr must be a positive number, got {config.lr}"),
        (0 <= config.ema_decay < 1, f"ema_decay must be in [0, 1), got {config.ema_decay}"),
        (config.grad_clip > 0, f"grad_clip must be > 0 (use inf for no clipping), got {config.grad_clip}"),
        (0 <= config.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {config.min_lr_ratio}"),
        (config.warmup_steps >= 0, f"warmup_steps must be >= 0, got {config.warmup_steps}"),
        (config.fourier_features >= 0, f"fourier_features must be >= 0, got {config.fourier_features}"),
        (config.seed >= 0, f"seed must be >= 0 (NumPy's SeedSequence), got {config.seed}"),
        (config.time_dim % 2 == 0, f"time_dim must be even (sin and cos halves), got {config.time_dim}"),
        (config.explosion_factor > 1, f"explosion_factor must be > 1 (inf turns the check off), got "
                                      f"{config.explosion_factor}"),
        (1 / MAX_SHIFT <= config.snr_shift <= MAX_SHIFT, f"snr_shift must be between {1 / MAX_SHIFT:g} and "
                                                         f"{MAX_SHIFT:g} (1: no shift), got {config.snr_shift}"),
        (config.sigma_data > 0 and np.isfinite(config.sigma_data), f"sigma_data must be a positive number, got "
                                                                   f"{config.sigma_data}"),
        (config.checkpoint_every % config.log_every == 0,
         f"checkpoint_every ({config.checkpoint_every}) must be a multiple of log_every ({config.log_every})")]


def memory_estimate(config, data_dim=2):
    """Bytes a run needs, roughly, in float64: eight copies of the params (params, EMA, Adam's two moments, the
    gradient and update buffers), four activations per hidden unit and example (kept for the backward pass), the
    training points, and twenty arrays of length T (the schedule, the loss constants, the importance history)."""
    D, H = data_dim, config.hidden
    n_params = (D + config.time_dim + 2 * D * config.fourier_features + 1) * H + (config.depth - 1) * (H + 1) * H \
        + (H + 1) * D
    values = 8 * n_params + 4 * config.batch_size * H * config.depth + config.n_train * D + 20 * config.T
    return 8 * values


def _check_combinations(config):
    """Target, weighting and schedule names, and the combinations of them that cannot train; returns the schedule."""
    try:
        target = canonical_target(config.target)
        parse_weighting(config.weighting)
        parse_t_sampling(config.t_sampling)
        schedule = objective.schedule_of(config, warn=False)
        check_identifiable(target, schedule.alpha_bar[-1])  # x0_hat at the last step
    except ValueError as err:
        raise ConfigError(str(err)) from None
    weight = to_numpy(make_problem(config, schedule).weight)
    if not np.all(np.isfinite(weight)):
        bad = np.flatnonzero(~np.isfinite(weight))
        raise ConfigError(f"the {config.weighting} weighting of the {target} target is infinite at t = {bad[0]} "
                          f"for this schedule; choose another weighting or target")
    return schedule
