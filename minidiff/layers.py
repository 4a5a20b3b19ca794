"""The operations the denoiser is made of, as autograd primitives with their forward and backward side by side.

autograd's own wrappers assume NumPy arrays in places (`minidiff/accel/autodiff.py` says where), so the network's
operations are written here as primitives whose forward and backward use only the arrays' own methods (`a.dot(b)`, `a.sum(axis=0)`, `a.T`), arithmetic operators and the
elementwise functions of `get_xp()`: one definition serves NumPy and CuPy.

Each primitive keeps its forward and its backward side by side (as micrograd does). For an output z, the backward
turns the upstream gradient z̄ = ∂L/∂z into x̄ = ∂L/∂x for each input x: a vector-Jacobian product (VJP).

Speed. A forward may keep arrays for its backward in `saved`, a dict made fresh for every call (PyTorch's
`ctx.save_for_backward`). In-place operations touch only arrays the function allocated itself — never an input, a
saved value or the incoming gradient, which autograd may hand to several VJPs (and `autograd.jacobian` calls each
VJP once per output).

What can be differentiated: first derivatives with respect to any input — `value_and_grad` w.r.t. the params,
`jacobian`/`elementwise_grad` w.r.t. x. A derivative of a derivative (grad of grad, a Hessian, the gradient of a
Jacobian trace) is not supported: the backward formulas read plain arrays saved by the forward pass, which an outer
trace cannot see, so such a call raises NotImplementedError instead of returning a wrong number.

Where the time goes, and what is done about it (measured on the project's 2-core machine with one BLAS thread, the
default 34-256-256-256-2 network, fp32; `python benchmarks/cpu.py` measures it all again, README "Performance"):
- Matrix products are most of the arithmetic (80 % of a step at batch 4096), and NumPy hands them to BLAS; the rest
  is elementwise passes over (B, 256) arrays, Python and memory. So each primitive makes as few passes and fresh
  arrays as it can, and the loss is one primitive (`weighted_squared_error`).
- Fresh memory page-faults: `backend._keep_freed_memory` keeps freed blocks for the next step.
- autograd's containers: differentiating a function of a params dict scatters each gradient into a zero-filled copy
  of the whole dict. `value_and_vjp` differentiates with respect to each array directly.
- A call with no traced input is a plain call: no trace, nothing saved for a backward that will not come (sampling).

On the GPU each primitive's elementwise work is one fused kernel: the functions marked `@fusable` are replaced by the
kernel that `minidiff/accel/fused.py` names for them. What is written here is the plain NumPy that runs on the CPU.

Many runs at once (`minidiff/stacked.py`). Every operation also takes its arrays with a leading run axis — x (R, B, n),
W (R, n, m), b (R, m) — and computes each run's slice exactly as it would compute that run alone: `x @ W` is one
matrix product per slice (NumPy's matmul calls the same BLAS routine as `x.dot(W)` for each), and the sums run over
the same axis in the same order. The fused GPU kernels take the plain two-dimensional case only; a stack of runs on
the GPU takes the plain path.
"""
from minidiff.accel.autodiff import primitive
from minidiff.accel.backend import get_xp
from minidiff.accel.fused import fusable


def _transposed(a):
    """aᵀ of a matrix, or of each matrix of a stack (…, n, m) -> (…, m, n): a view."""
    return a.swapaxes(-1, -2)


def _row(b):
    """A bias (m,) or a stack of them (R, m) as rows (1, m) or (R, 1, m) that broadcast over the batch: a view."""
    return b[..., None, :]


def _affine_grads(gz, wanted, x, W, skip=None):
    """The backward of z = x W + b:  x̄ = z̄ Wᵀ,  W̄ = xᵀ z̄,  b̄ = Σ_rows z̄  (plus `skip` added to x̄)."""
    grads = []
    for i in wanted:
        if i == 0:
            gx = gz @ _transposed(W)                    # (…, B, n)
            if skip is not None:
                gx += skip
            grads.append(gx)
        elif i == 1:
            grads.append(_transposed(x) @ gz)           # (…, n, m)
        else:
            grads.append(_sum_rows(gz))                 # (…, m)
    return grads


@fusable("sum_rows")
def _sum_rows(g):
    """Σ_rows g over the batch axis (on the device a product with a vector of ones, which reads g in order: CuPy's
    sum over axis 0 strides across rows)."""
    return g.sum(axis=-2)


# SiLU(z) = z σ(z) (Elfwing et al. 2018; Hendrycks & Gimpel 2016), with σ(z) = ½ (1 + tanh(z/2)): the tanh form
# never overflows (1/(1 + e^(−z)) does for z < −88 in fp32).
#   forward   s = σ(z),  y = z s
#   backward  z̄ = ȳ (s + y (1 − s))        since dy/dz = s + z s (1 − s) = s + y (1 − s)
# On the GPU the bias add, the forward and the backward are one kernel each (kernels.py: bias_silu, silu_backward).

@fusable("silu_inplace")
def _silu_inplace(z, saved, b=None):
    """Overwrite the fresh array z with SiLU(z + b) (b: a bias row, or None); keep y and σ for the backward (if
    there is one)."""
    if b is not None:
        z += _row(b)
    z *= 0.5                                            # z/2
    s = get_xp().tanh(z)                                # tanh(z/2)
    s += 1                                              # 1 + tanh(z/2) = 2σ(z)
    z *= s                                              # z/2 · 2σ(z) = y
    if saved is not None:
        s *= 0.5                                        # σ(z)
        saved["y"], saved["s"] = z, s
    return z


@fusable("silu_backward")
def _silu_backward(g, saved):
    """z̄ = ȳ (s + y (1 − s)), in one fresh buffer."""
    s, y = saved["s"], saved["y"]
    gz = 1 - s
    gz *= y
    gz += s
    gz *= g
    return gz


def _silu(z, saved):
    """SiLU(z) = z σ(z), elementwise."""
    return _silu_inplace(z.copy(), saved)


def _silu_vjp(g, wanted, y, z, saved):
    return [_silu_backward(g, saved)]


# Affine map.
#   forward   z = x W + b                                (B, n) (n, m) (m,) -> (B, m); each run of a stack alike
#   backward  x̄ = z̄ Wᵀ,  W̄ = xᵀ z̄,  b̄ = Σ_rows z̄

def _linear(x, W, b, saved):
    """z = x W + b for a batch of row vectors x (B, n), W (n, m), b (m,)."""
    z = x @ W                                           # (B, m)
    z += _row(b)
    return z


def _linear_vjp(g, wanted, z, x, W, b, saved):
    return _affine_grads(g, wanted, x, W)


# A layer: the affine map and SiLU fused, so that z is never kept and the bias add works in place.
#   forward   y = SiLU(x W + b)
#   backward  z̄ = ȳ (s + y (1 − s)),  then the affine backward with z̄

def _linear_silu(x, W, b, saved):
    """y = SiLU(x W + b)."""
    return _silu_inplace(x @ W, saved, b)


def _linear_silu_vjp(g, wanted, y, x, W, b, saved):
    return _affine_grads(_silu_backward(g, saved), wanted, x, W)


# A residual layer (He et al. 2016): the input skips past the layer and is added to its output.
#   forward   out = h + SiLU(h W + b)
#   backward  z̄ = out̄ (s + y (1 − s)),  h̄ = out̄ + z̄ Wᵀ (the skip passes out̄ through),  W̄ = hᵀ z̄,  b̄ = Σ_rows z̄

@fusable("residual_linear_silu")                       # on the GPU one kernel: bias, SiLU and the skip
def _residual_linear_silu(h, W, b, saved):
    """out = h + SiLU(h W + b), with W square."""
    y = _linear_silu(h, W, b, saved)
    if saved is None:                                   # no backward will read y: add the skip in place
        y += h
        return y
    return h + y


def _residual_linear_silu_vjp(g, wanted, out, h, W, b, saved):
    return _affine_grads(_silu_backward(g, saved), wanted, h, W, skip=g)


# Concatenation along an axis (autograd's own calls `.view(numpy.ndarray)`, which CuPy refuses).
#   forward   out = [a₀ | a₁ | …] along `axis`, cast to `dtype`
#   backward  āᵢ = the slice of out̄ that aᵢ filled, cast back to aᵢ's dtype

def _slices(arrays, axis):
    """For each array, the index that selects its block of the concatenation along `axis`."""
    axis, start, blocks = axis % arrays[0].ndim, 0, []
    for a in arrays:
        blocks.append((slice(None),) * axis + (slice(start, start + a.shape[axis]),))
        start += a.shape[axis]
    return blocks


def _concat(*arrays, axis, saved, dtype=None):
    """Concatenate `arrays` along `axis` into one array of `dtype` (default: their common dtype)."""
    xp = get_xp()
    shape = list(arrays[0].shape)
    shape[axis] = sum(a.shape[axis] for a in arrays)        # (a negative axis counts from the end, as in NumPy)
    out = xp.empty(shape, dtype=xp.result_type(*arrays) if dtype is None else dtype)
    for a, block in zip(arrays, _slices(arrays, axis)):
        out[block] = a
    return out


def _concat_vjp(g, wanted, out, *arrays, axis, saved, dtype=None):
    blocks = _slices(arrays, axis)
    return [g[blocks[i]].astype(arrays[i].dtype, copy=False) for i in wanted]


# Sinusoidal features at given angular frequencies ω (Vaswani et al. 2017, §3.5; Tancik et al. 2020).
#   forward   out = [sin(x_d ω_k) | cos(x_d ω_k)]  for every column d and frequency k   (B, D), (K,) -> (B, 2 D K)
#   backward  x̄_d = Σ_k ω_k (sin̄_dk cos(x_d ω_k) − cos̄_dk sin(x_d ω_k))   — read sin and cos back from out
# Leading axes (a stack of runs, (R, B, D)) are carried through.

@fusable("sinusoids")
def _sinusoids(x, omega, saved):
    """[sin(x_d ω_k) | cos(x_d ω_k)] over columns d of x (…, D) and frequencies ω (K,): shape (…, 2·D·K)."""
    xp = get_xp()
    *lead, D = x.shape
    angle = x.reshape(*lead, D, 1) * omega              # (…, D, K)
    out = xp.empty((*lead, 2, D, omega.shape[0]), dtype=angle.dtype)
    xp.sin(angle, out=out[..., 0, :, :])
    xp.cos(angle, out=out[..., 1, :, :])
    return out.reshape(*lead, -1)


def _sinusoids_vjp(g, wanted, out, x, omega, saved):
    if wanted != (0,):
        raise NotImplementedError("minidiff.layers.sinusoids: the frequencies are constants, not differentiable")
    shape = (*x.shape[:-1], 2, x.shape[-1], omega.shape[0])
    g, out = g.reshape(shape), out.reshape(shape)       # (…, 2, D, K): [..., 0, :, :] is sin, [..., 1, :, :] is cos
    sin_part, cos_part = (slice(None),) * (len(shape) - 3) + (0,), (slice(None),) * (len(shape) - 3) + (1,)
    return [(g[sin_part] * out[cos_part] - g[cos_part] * out[sin_part]).dot(omega)]


# Mean squared error, optionally weighted per example; N is the number of entries of r.
#   forward   r = pred − target,  L = (1/N) Σ_i w_i Σ_j r_ij²      (w_i = 1 when no weights are given)
#   backward  pred̄ = L̄ (2/N) w_i r_ij,  target̄ = −pred̄

def _mean_square_error(pred, target, weights=None, *, saved):
    """(1/N) Σ w_i ‖pred_i − target_i‖² over the batch, N = pred.size; weights (B,) or None (all ones)."""
    r = pred - target                                   # (B, …)
    if saved is not None:
        saved["r"] = r
    if weights is None:
        return r.ravel().dot(r.ravel()) / r.size
    return (r * r).reshape(r.shape[0], -1).sum(axis=1).dot(weights.astype(r.dtype, copy=False)) / r.size


def _mean_square_error_vjp(g, wanted, loss, pred, target, weights=None, *, saved):
    r = saved["r"]
    gr = r * (2 * g / r.size)
    if weights is not None:
        gr *= weights.astype(r.dtype, copy=False).reshape((-1,) + (1,) * (r.ndim - 1))
    grads = {0: gr, 1: -gr}
    if 2 in wanted:
        raise NotImplementedError("minidiff.layers.mean_square_error: the weights are constants")
    return [grads[i] for i in wanted]


# Squared error per example, weighted: the training loss before its batch mean (`train.per_example_loss`).
#   forward   r = pred − target,  ℓ_i = w_i Σ_j r_ij²          (B, …), (B, …), (B,) -> (B,)
#   (a stack of runs: (R, B, D), (R, B, D), (R, B) -> (R, B), the sum over the last axis)
#   backward  pred̄_ij = 2 ℓ̄_i w_i r_ij,  target̄ = −pred̄
# One primitive instead of autograd's generic `-`, `**2`, `.sum` and `*`: one saved array and one pass back, and a
# backward that uses only the arrays' own methods (autograd's `.sum` VJP is one of those that assume NumPy).
# Measured in `train.loss_and_grad` (one thread): 1.03 → 0.93 ms at batch 64 fp32, 2.25 → 2.08 ms in fp64.

@fusable("squared_error")                              # on the GPU one thread per example; its backward recomputes r
def _weighted_squared_error(pred, target, weights, saved):
    """w_i ‖pred_i − target_i‖² for each example i: shape (B,); weights (B,). A stack: weights (R, B), pred
    (R, B, D) -> (R, B)."""
    r = pred - target                                   # (B, …)
    if saved is not None:
        saved["r"] = r
    r_flat = r.reshape(weights.shape + (-1,))           # (B, D), or (R, B, D)
    return (r_flat * r_flat).sum(axis=-1) * weights.astype(r.dtype, copy=False)


def _weighted_squared_error_vjp(g, wanted, losses, pred, target, weights, saved):
    if 2 in wanted:
        raise NotImplementedError("minidiff.layers.weighted_squared_error: the weights are constants")
    g_pred = _squared_error_backward(g, pred, target, weights, saved)
    return [g_pred if i == 0 else -g_pred for i in wanted]


@fusable("squared_error_backward")
def _squared_error_backward(g, pred, target, weights, saved):
    """pred̄_ij = 2 ℓ̄_i w_i r_ij."""
    r = saved["r"]
    scale = (2 * g) * weights.astype(r.dtype, copy=False)                            # 2 ℓ̄_i w_i   (B,)
    return r * scale.reshape(scale.shape + (1,) * (r.ndim - scale.ndim))             # (B, …)


def _uncertainty_weighted(losses, u, saved):
    """e^(−u_i) ℓ_i + u_i for each example: EDM2's loss with a learned uncertainty u (Karras et al. 2024, eq. 16);
    losses (B,), u (B, 1) (a column, as the layer that makes it returns it)."""
    u_flat = u.reshape(losses.shape)                    # (B,), or (R, B) for a stack
    scale = get_xp().exp(-u_flat)                       # (B,)
    if saved is not None:
        saved["scale"] = scale
    return scale * losses + u_flat


def _uncertainty_weighted_vjp(g, wanted, out, losses, u, saved):
    """ℓ̄ = ḡ e^(−u);  ū = ḡ (1 − e^(−u) ℓ), shaped like u."""
    scale = saved["scale"]
    grads = {0: g * scale, 1: (g * (1 - scale * losses)).reshape(u.shape)}
    return [grads[i] for i in wanted]


silu = primitive("silu", _silu, _silu_vjp)
linear = primitive("linear", _linear, _linear_vjp)
linear_silu = primitive("linear_silu", _linear_silu, _linear_silu_vjp)
residual_linear_silu = primitive("residual_linear_silu", _residual_linear_silu, _residual_linear_silu_vjp)
concat = primitive("concat", _concat, _concat_vjp)
sinusoids = primitive("sinusoids", _sinusoids, _sinusoids_vjp)
mean_square_error = primitive("mean_square_error", _mean_square_error, _mean_square_error_vjp)
weighted_squared_error = primitive("weighted_squared_error", _weighted_squared_error, _weighted_squared_error_vjp)
uncertainty_weighted = primitive("uncertainty_weighted", _uncertainty_weighted, _uncertainty_weighted_vjp)
