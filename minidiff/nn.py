"""The denoiser: an MLP over a params dict.

The network reads a noisy point x_t (B, D) and a time input t (B,) and returns one vector per point (B, D): the
prediction of whichever target it is trained on (ε, x0, v, score, μ, flow or edm). The default is the 34-256-256-256-2 MLP:

    input  = [x | emb(t)]                        2 + 32 = 34 features
    h      = SiLU(input W_in + b_in)             256
    h      = h + SiLU(h W_i + b_i),  i = 0, 1    256, 256   (residual, He et al. 2016; plain SiLU layers if off)
    output = h W_out + b_out                     2

emb(t) is the sinusoidal embedding of the Transformer (Vaswani et al. 2017, §3.5), which Ho et al. 2020 (App. B)
use for the diffusion time: emb(t) = [sin(t ω_k) | cos(t ω_k)], ω_k = 10000^(−2k/E), k = 0 … E/2 − 1. Its
wavelengths run from 2π to 10000·2π, so it separates integer inputs across roughly [0, 1000): pass the 0-based
timestep index t = 0 … T−1 (or a time in [0, 1] scaled by 1000, or a log-SNR). Optional Fourier features of x,
[sin(x ω_k) | cos(x ω_k)] with ω_k = 2^k π (Mildenhall et al. 2020, eq. 4; Tancik et al. 2020), help an MLP fit
fine detail.

Params are a flat dict of str -> array, all trainable, saved as they are to `.npz` (with the learned weighting also
`uncertainty.W`, `uncertainty.b`, read by `uncertainty` alone). `apply` reads the architecture
from the keys and shapes: D from `out.W`, E from `in.W`, the Fourier count from `in.W_fourier` (present only when
on), the hidden layers from `residual.{i}.*` or `hidden.{i}.*`. The first layer's weight is kept in two blocks,
`in.W` for [x | emb(t)] and `in.W_fourier` for the Fourier features, so that both sizes can be read back; the layer
is still one matrix product over the concatenated features.
"""
import dataclasses
import itertools
import math
import numbers

import numpy as np

from minidiff.accel.backend import constant, get_xp
from minidiff.layers import concat, linear, linear_silu, residual_linear_silu, sinusoids

MAX_PERIOD = 10_000          # Vaswani et al. 2017, §3.5: wavelengths in a geometric progression from 2π to 10000·2π
FOURIER_BASE = math.pi       # Mildenhall et al. 2020, eq. (4): frequencies 2^0 π, 2^1 π, …, 2^(F−1) π
HE_GAIN = 2.0                # He et al. 2015, eq. (10): Var[W] = 2 / fan_in keeps the scale through ReLU-like units


@dataclasses.dataclass(frozen=True)
class Config:
    """The denoiser's shape; saved with checkpoints via `dataclasses.asdict`.

    The defaults give minidiff's reference network, the 34-256-256-256-2 MLP with SiLU.
    """
    data_dim: int = 2            # D, dimension of the data
    hidden: int = 256            # H, width of each hidden layer
    depth: int = 3               # number of hidden layers, each followed by SiLU
    time_dim: int = 32           # E, size of the sinusoidal time embedding (even)
    fourier_features: int = 0    # F, log-spaced frequencies per coordinate of x; 0 = off
    residual: bool = True        # h <- h + SiLU(h W + b) on the hidden-to-hidden layers
    uncertainty: bool = False    # also u(t) = emb(t) W_u + b_u, EDM2's learned loss uncertainty (`uncertainty`)

    def __post_init__(self):
        for name in ("data_dim", "hidden", "depth", "time_dim"):
            if not (isinstance(getattr(self, name), numbers.Integral) and getattr(self, name) >= 1):
                raise ValueError(f"Config.{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.time_dim % 2:
            raise ValueError(f"Config.time_dim must be even (sin and cos halves), got {self.time_dim}")
        if not (isinstance(self.fourier_features, numbers.Integral) and self.fourier_features >= 0):
            raise ValueError(f"Config.fourier_features must be an integer >= 0, got {self.fourier_features!r}")


def time_frequencies(time_dim, dtype):
    """ω_k = MAX_PERIOD^(−2k/E), k = 0 … E/2 − 1 (Vaswani et al. 2017, §3.5); made once per device and dtype."""
    k = np.arange(time_dim // 2)
    return constant(("time_frequencies", time_dim, np.dtype(dtype).str),
                    lambda: np.asarray(MAX_PERIOD ** (-2.0 * k / time_dim), dtype=dtype))


def fourier_frequencies(n, dtype):
    """ω_k = 2^k π, k = 0 … n − 1 (Mildenhall et al. 2020, eq. 4); made once per device and dtype."""
    return constant(("fourier_frequencies", n, np.dtype(dtype).str),
                    lambda: np.asarray(FOURIER_BASE * 2.0 ** np.arange(n), dtype=dtype))


def time_embedding(t, time_dim, dtype=np.float64):
    """emb(t) = [sin(t ω_k) | cos(t ω_k)]: (B,) -> (B, time_dim) (any shape (…) -> (…, time_dim)), in `dtype`."""
    t = get_xp().asarray(t, dtype=dtype)
    return sinusoids(t.reshape(t.shape + (1,)), time_frequencies(time_dim, dtype))


def _he_normal(rng, fan_in, shape, dtype):
    """W ~ N(0, 2 / fan_in) (He et al. 2015, eq. 10), drawn in fp64 so that fp32 and fp64 inits agree."""
    return get_xp().asarray(rng.standard_normal(shape) * math.sqrt(HE_GAIN / fan_in), dtype=dtype)


def init(rng, config, dtype=np.float64):
    """Fresh params: He-normal weights (He et al. 2015), zero biases, and a zero output layer.

    The zero output layer (improved-diffusion's `zero_module`, Nichol & Dhariwal 2021) makes the untrained network
    predict 0 everywhere: the mean of ε and of centred data, so the first loss is that of a neutral constant guess
    rather than of a random function of a random scale. Its own gradient hᵀ ō is not zero, so it learns from the
    first step, and the hidden layers receive gradient from the second step on.
    """
    D, H, E, F = config.data_dim, config.hidden, config.time_dim, config.fourier_features
    xp, fan_in = get_xp(), D + E + 2 * D * F
    params = {"in.W": _he_normal(rng, fan_in, (D + E, H), dtype), "in.b": xp.zeros(H, dtype)}
    if F:
        params["in.W_fourier"] = _he_normal(rng, fan_in, (2 * D * F, H), dtype)
    kind = "residual" if config.residual else "hidden"
    for i in range(config.depth - 1):
        params[f"{kind}.{i}.W"] = _he_normal(rng, H, (H, H), dtype)
        params[f"{kind}.{i}.b"] = xp.zeros(H, dtype)
    params["out.W"], params["out.b"] = xp.zeros((H, D), dtype), xp.zeros(D, dtype)
    if config.uncertainty:  # zero: u = 0 at the start, the loss is then the plain weighted loss
        params["uncertainty.W"], params["uncertainty.b"] = xp.zeros((E, 1), dtype), xp.zeros(1, dtype)
    return params


def uncertainty(params, t):
    """u(t) (B, 1): EDM2's learned uncertainty, a linear function of the time embedding (Karras et al. 2024, §3.2
    and eq. 16, where it reads c_noise through Fourier features). Its params are `uncertainty.*`, which `apply`
    never reads: sampling does not see them."""
    W = params["uncertainty.W"]
    emb = _embedded_time(t, get_xp().asarray(t).shape, W.shape[-2], W.dtype)                      # (B, E)
    return linear(emb, W, params["uncertainty.b"])                                               # (B, 1)


def _embedded_time(t, batch_shape, time_dim, dtype):
    """emb(t) of shape batch_shape + (E,): t has the batch's shape, or is shared — a scalar for the whole batch,
    (R, 1) for each run of a stack — and is then embedded once and broadcast (the same numbers: each sin and cos
    is computed on its own)."""
    xp = get_xp()
    t = xp.asarray(t, dtype=dtype)
    if len(t.shape) > len(batch_shape) or any(n not in (1, m) for n, m in zip(t.shape[::-1], batch_shape[::-1])):
        raise ValueError(f"t must be a scalar or have shape {batch_shape} to match x, got shape {t.shape}")
    emb = time_embedding(t, time_dim, dtype)                                                     # (…, E)
    return emb if emb.shape[:-1] == batch_shape else xp.broadcast_to(emb, batch_shape + (time_dim,))


def apply(params, x, t):
    """The network's output (B, D) for points x (B, D) and time inputs t (B,) or a scalar.

    Everything is computed in the params' dtype (x and t are cast to it). t is the 0-based timestep index, or any
    time input scaled to roughly [0, 1000), the range the embedding separates (see the module docstring).

    A stack of R networks (`minidiff/stacked.py`: every param with a leading run axis, W (R, n, m), b (R, m)) maps
    x (R, B, D) and t (R, B) — or (R, 1), one time per run — to (R, B, D), each run as it would alone.
    """
    D = params["out.W"].shape[-1]
    return apply_embedded(params, x, _embedded_time(t, x.shape[:-1], params["in.W"].shape[-2] - D,
                                                    params["in.W"].dtype))


def apply_embedded(params, x, emb):
    """The network's output for points x (B, D) and their time embedding emb (B, E), emb(t) of `time_embedding`:
    `apply` with the embedding computed already (training reads it from a table of every timestep's)."""
    W_in = params["in.W"]
    dtype, D = W_in.dtype, params["out.W"].shape[-1]
    features = [x, emb]                                                                          # (B, D), (B, E)
    if "in.W_fourier" in params:
        n_freq = params["in.W_fourier"].shape[-2] // (2 * D)
        features.append(sinusoids(x, fourier_frequencies(n_freq, x.dtype)))                    # (B, 2 D F)
        W_in = concat(W_in, params["in.W_fourier"], axis=-2)
    h = linear_silu(concat(*features, axis=-1, dtype=dtype), W_in, params["in.b"])              # (B, H)
    for prefix, residual in _hidden_layers(params):
        layer = residual_linear_silu if residual else linear_silu
        h = layer(h, params[prefix + ".W"], params[prefix + ".b"])                                  # (B, H)
    return linear(h, params["out.W"], params["out.b"])                                           # (B, D)


def _hidden_layers(params):
    """The hidden-to-hidden layers in order, as (key prefix, residual?), read from the keys."""
    for i in itertools.count():
        if f"residual.{i}.W" in params:
            yield f"residual.{i}", True
        elif f"hidden.{i}.W" in params:
            yield f"hidden.{i}", False
        else:
            return


def layer_sizes(params):
    """The widths from input to output, e.g. (34, 256, 256, 256, 2) for the default Config."""
    n_fourier = params["in.W_fourier"].shape[-2] if "in.W_fourier" in params else 0
    sizes = [params["in.W"].shape[-2] + n_fourier, params["in.W"].shape[-1]]
    sizes += [params[prefix + ".W"].shape[-1] for prefix, _ in _hidden_layers(params)]
    return tuple(sizes) + (params["out.W"].shape[-1],)


def num_params(params):
    """Total number of scalar parameters."""
    return sum(int(p.size) for p in params.values())
