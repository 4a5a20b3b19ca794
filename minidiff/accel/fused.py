"""The one table of fused GPU kernels: which plain function of a chapter each kernel of `kernels.py` replaces.

A chapter writes each operation once, in plain NumPy, and marks the few that have a fused kernel with
`@fusable("name")`. When the fused kernels are in use (on CuPy, unless MINIDIFF_FUSED=0: `backend.fused()`) and the
entry's arrays qualify (one float dtype, say), the call goes to the kernel; otherwise to the plain function — the one
the reader reads. So the chapters hold no branch on the device, and this table is the whole of what the GPU does
differently: each entry names its kernel, the arrays it needs to agree, and how the arguments map onto it.
"""
import functools

import numpy as np

from minidiff.accel.backend import fused


def _same_float(*arrays):
    """Do the arrays share one floating dtype (what every elementwise kernel is compiled for)?"""
    return arrays[0].dtype.kind == "f" and all(a.dtype == arrays[0].dtype for a in arrays)


def _one_run(*arrays):
    """Are these the arrays of one run, a batch of rows (B, n) and its vectors (n,)? The kernels are written for
    that layout; a stack of runs (a leading run axis, `minidiff/stacked.py`) takes the plain path."""
    return arrays[0].ndim == 2 and all(a.ndim <= 2 for a in arrays[1:])


def _silu(k, z, saved, b=None):
    return k.bias_silu(z, z.dtype.type(0) if b is None else b, saved)


def _adam(k, theta, g, m, v, one_minus_beta1, one_minus_beta2, eps_hat, step_size, decay, grad_scale):
    return k.adam(theta, g, m, v, grad_scale, one_minus_beta1, one_minus_beta2, eps_hat, step_size, decay)


def _numbers(*values):
    """Are these plain numbers (the kernels take one coefficient for the whole array, not one per run)?"""
    return not any(hasattr(v, "shape") for v in values)


def _noisy_and_target(k, problem, x0, eps, t):
    tables = (problem.sqrt_alpha_bar, problem.sqrt_one_minus_alpha_bar, problem.a, problem.b)
    return k.noisy_and_target(t, x0, eps, *tables)


# name: (does the call qualify?, the kernel call) — each with the plain function's own arguments after the kernels.
TABLE = {
    # layers: the network's operations (kernels.py: bias_silu, silu_backward, bias_silu_residual, sum_rows, …)
    "silu_inplace": (lambda z, saved, b=None: _same_float(z) if b is None else _same_float(z, b) and _one_run(z, b),
                     _silu),
    "silu_backward": (lambda g, saved: _same_float(g, saved["s"], saved["y"]),
                      lambda k, g, saved: k.silu_backward(g, saved["s"], saved["y"])),
    "residual_linear_silu": (lambda h, W, b, saved: _same_float(h, W, b) and _one_run(h, W, b),
                             lambda k, h, W, b, saved: k.bias_silu_residual(h.dot(W), b, h, saved)),
    "sum_rows": (lambda g: _same_float(g) and _one_run(g), lambda k, g: k.sum_rows(g)),
    "sinusoids": (lambda x, omega, saved: _same_float(x, omega) and _one_run(x, omega),
                  lambda k, x, omega, saved: k.sinusoids(x, omega)),
    "squared_error": (lambda pred, target, weights, saved: _same_float(pred, target) and weights.ndim == 1,
                      lambda k, pred, target, weights, saved: k.squared_error(pred, target, weights)),
    "squared_error_backward": (lambda g, pred, target, weights, saved: _same_float(pred, target) and weights.ndim == 1,
                               lambda k, g, pred, target, weights, saved:
                               k.squared_error_backward(g, pred, target, weights)),
    # optim: Adam's and the EMA's update of one array (kernels.py: adam, ema)
    "adam_step": (lambda theta, g, *rest, **hyper: g.dtype == theta.dtype and _numbers(*rest, *hyper.values()), _adam),
    "ema_step": (lambda theta, ema, rate: theta.dtype == ema.dtype and _numbers(rate),
                 lambda k, theta, ema, rate: k.ema(theta, ema, rate)),
    # train: x_t and the target in one pass (kernels.py: noisy_and_target)
    "noisy_and_target": (lambda problem, x0, eps, t: t.dtype == np.int64 and x0.dtype == eps.dtype == problem.a.dtype
                         and t.ndim == 1, _noisy_and_target),
    # counter: the counter-based random numbers (kernels.py: uniform, integers, normal)
    "uniform": (lambda key, n: True, lambda k, key, n: k.uniform(key, n)),
    "integers": (lambda key, n, high: True, lambda k, key, n, high: k.integers(key, n, high)),
    "normal": (lambda key, shape, dtype: True,
               lambda k, key, shape, dtype: k.normal(key, int(np.prod(shape)), dtype).reshape(shape)),
}


def fusable(name):
    """Decorator: the plain function, or its fused kernel TABLE[name] when the kernels are in use and it qualifies."""
    qualifies, kernel_call = TABLE[name]

    def decorate(plain):
        @functools.wraps(plain)
        def call(*args, **options):
            kernels = fused()
            if kernels is not None and qualifies(*args, **options):
                return kernel_call(kernels, *args, **options)
            return plain(*args, **options)
        return call
    return decorate
