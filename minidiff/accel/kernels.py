"""The GPU's fused elementwise kernels: one pass over memory where NumPy's way takes several (CuPy only).

On a GPU the matrix products go to cuBLAS and take the same time in any framework; what separates a fast training
step from a slow one is the elementwise work around them. CuPy runs every ufunc as a kernel of its own — a launch
of some 10 µs of Python and driver time, and a full pass over memory — so SiLU written as NumPy writes it for the
CPU (`z *= 0.5; s = tanh(z); s += 1; z *= s; s *= 0.5`, backend.py) is five kernels and ten passes over a (B, 256)
array. Each function here computes the same formula as its NumPy counterpart, named in its comment, as one
`cupy.ElementwiseKernel`: CUDA C compiled at first use for each dtype, one launch, each input read once and each
output written once. An earlier measurement found what SiLU alone gains (19.1 → 13.3 ms a step at batch 131072); the loss,
the noisy input x_t, Adam, the EMA and the random draws of a step are fused here the same way. Measured on an H200
(benchmarks/gpu.py, fp32, forward, backward and Adam): 180 kernels a step without these, 54 with them (PyTorch eager
launches 62), and 18.3 → 4.7 ms a step at batch 131072, where PyTorch takes 4.5.

Numbers. Each kernel keeps the NumPy formula's order of operations, so results differ only by rounding: CUDA's
tanh, sin, cos and log are within an ulp or two of the C library's, and the CUDA compiler contracts a·b + c into
one fused multiply-add (one rounding where NumPy has two). `tests/test_gpu.py` compares every kernel with the NumPy
formula in float64, to 1e-12.

This module never imports CuPy: `backend.use_device` builds `Kernels(cupy)` from the module it has loaded.
"""
import numpy as np

# SplitMix64 (minidiff/accel/counter.py has the formulas): the word n of the stream with key k, as a uniform in [0, 1)
_COUNTER = r"""
__device__ double minidiff_uniform(unsigned long long key, unsigned long long n) {
    unsigned long long z = key + (n + 1ULL) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z = z ^ (z >> 31);
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}
"""

# name: (inputs, outputs, body, preamble)
SOURCES = {
    # backend._silu_inplace after the bias add of backend._linear: y = SiLU(z + b) written over z, and σ kept
    "bias_silu_saved": ("T b", "T z, T s", """
        T half = (z + b) * (T)0.5;          // (z + b)/2
        T two_sigma = (T)1 + tanh(half);    // 1 + tanh((z + b)/2) = 2σ(z + b)
        z = half * two_sigma;               // y = (z + b) σ(z + b)
        s = two_sigma * (T)0.5;             // σ(z + b)
    """, ""),
    "bias_silu": ("T b", "T z", """
        T half = (z + b) * (T)0.5;
        z = half * ((T)1 + tanh(half));
    """, ""),
    # backend._residual_linear_silu: out = h + SiLU(z + b), with y and σ kept for the backward
    "bias_silu_residual_saved": ("T b, T h", "T z, T s, T out", """
        T half = (z + b) * (T)0.5;
        T two_sigma = (T)1 + tanh(half);
        z = half * two_sigma;
        s = two_sigma * (T)0.5;
        out = h + z;
    """, ""),
    "bias_silu_residual": ("T b, T h", "T out", """
        T half = (out + b) * (T)0.5;
        out = half * ((T)1 + tanh(half)) + h;
    """, ""),
    # backend._silu_backward: z̄ = ȳ (s + y (1 − s))
    "silu_backward": ("T g, T s, T y", "T gz", """
        gz = (((T)1 - s) * y + s) * g;
    """, ""),
    # backend._sinusoids: [sin(x_d ω_k) | cos(x_d ω_k)], written into the two halves of the output
    "sinusoids": ("T x, T omega", "T sin_part, T cos_part", """
        T angle = x * omega;
        sin_part = sin(angle);
        cos_part = cos(angle);
    """, ""),
    # backend._weighted_squared_error: ℓ_i = w_i Σ_j (pred_ij − target_ij)², one thread per example
    "squared_error": ("raw T pred, raw T target, T w, int64 dim", "T loss", """
        T total = 0;
        for (long long j = i * dim; j < (i + 1) * dim; ++j) {
            T r = pred[j] - target[j];
            total += r * r;
        }
        loss = total * w;
    """, ""),
    # backend._weighted_squared_error_vjp: pred̄_ij = (pred_ij − target_ij) · 2 ℓ̄_i w_i
    "squared_error_backward": ("T pred, T target, T w, T g", "T g_pred", """
        g_pred = (pred - target) * ((T)2 * g * w);
    """, ""),
    # train.per_example_loss: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε and X = a_t x_0 + b_t ε, the tables read at t
    "noisy_and_target": ("T x0, T eps, int64 t, raw T c_x, raw T c_eps, raw T a, raw T b", "T x_t, T target", """
        x_t = c_x[t] * x0 + c_eps[t] * eps;
        target = a[t] * x0 + b[t] * eps;
    """, ""),
    # optim.adam_step: Kingma & Ba 2015, Alg. 1, in the arrangement written there, the gradient scaled first
    "adam": ("T g, T theta, T m, T v, T scale, T one_minus_beta1, T one_minus_beta2, T eps_hat, T step_size, "
             "T decay", "T theta_new, T m_new, T v_new", """
        T g_scaled = g * scale;
        T m_t = (g_scaled - m) * one_minus_beta1 + m;
        T v_t = (g_scaled * g_scaled - v) * one_minus_beta2 + v;
        T update = m_t / (sqrt(v_t) + eps_hat) * step_size;
        if (decay != (T)0) update = update - decay * theta;
        theta_new = update + theta;
        m_new = m_t;
        v_new = v_t;
    """, ""),
    # optim.ema_update: θ̄ + (1 − decay)(θ − θ̄)
    "ema": ("T theta, T ema, T one_minus_decay", "T ema_new", """
        ema_new = (theta - ema) * one_minus_decay + ema;
    """, ""),
    # counter.uniform, counter.integers, counter.normal
    "uniform": ("uint64 key", "float64 u", "u = minidiff_uniform(key, i);", _COUNTER),
    "integers": ("uint64 key, int64 high", "int64 k", "k = (long long)(minidiff_uniform(key, i) * (double)high);",
                 _COUNTER),
    "normal": ("uint64 key", "T x", """
        double u1 = minidiff_uniform(key, 2 * (unsigned long long)i);
        double u2 = minidiff_uniform(key, 2 * (unsigned long long)i + 1);
        x = (T)(sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2));
    """, _COUNTER),
}


class Kernels:
    """The kernels above for one CuPy module, each a method that allocates what it returns (as NumPy would)."""

    def __init__(self, cupy):
        self.cp, self._ones = cupy, {}
        self.k = {name: cupy.ElementwiseKernel(inputs, outputs, body, "minidiff_" + name, preamble=preamble)
                  for name, (inputs, outputs, body, preamble) in SOURCES.items()}

    def bias_silu(self, z, b, saved):
        """z ← SiLU(z + b) in place (z is fresh); σ(z + b) into saved['s'] and y into saved['y'] if saved."""
        if saved is None:
            self.k["bias_silu"](b, z)
            return z
        s = self.cp.empty_like(z)
        self.k["bias_silu_saved"](b, z, s)
        saved["y"], saved["s"] = z, s
        return z

    def bias_silu_residual(self, z, b, h, saved):
        """h + SiLU(z + b) (z is fresh and is overwritten)."""
        if saved is None:
            self.k["bias_silu_residual"](b, h, z)
            return z
        s, out = self.cp.empty_like(z), self.cp.empty_like(z)
        self.k["bias_silu_residual_saved"](b, h, z, s, out)
        saved["y"], saved["s"] = z, s
        return out

    def silu_backward(self, g, s, y):
        return self.k["silu_backward"](g, s, y)

    def sum_rows(self, g):
        """Σ_rows g as one matrix-vector product with a vector of ones (cuBLAS reads g once, in order)."""
        key = (g.shape[0], g.dtype.str)
        if key not in self._ones:
            self._ones[key] = self.cp.ones(g.shape[0], g.dtype)
        return self._ones[key].dot(g)

    def sinusoids(self, x, omega):
        B, D = x.shape
        out = self.cp.empty((B, 2, D, omega.shape[0]), dtype=x.dtype)
        self.k["sinusoids"](x.reshape(B, D, 1), omega, out[:, 0], out[:, 1])
        return out.reshape(B, -1)

    def squared_error(self, pred, target, weights):
        B = pred.shape[0]
        pred, target = self.cp.ascontiguousarray(pred), self.cp.ascontiguousarray(target)
        loss = self.cp.empty(B, pred.dtype)
        self.k["squared_error"](pred, target, weights.astype(pred.dtype, copy=False), np.int64(pred.size // B), loss)
        return loss

    def squared_error_backward(self, g, pred, target, weights):
        column = (-1,) + (1,) * (pred.ndim - 1)
        return self.k["squared_error_backward"](pred, target, weights.astype(pred.dtype, copy=False).reshape(column),
                                                g.astype(pred.dtype, copy=False).reshape(column))

    def noisy_and_target(self, t, x0, eps, c_x, c_eps, a, b):
        return self.k["noisy_and_target"](x0, eps, t.reshape((-1,) + (1,) * (x0.ndim - 1)), c_x, c_eps, a, b)

    def adam(self, theta, g, m, v, scale, one_minus_beta1, one_minus_beta2, eps_hat, step_size, decay):
        T = theta.dtype.type
        return self.k["adam"](g, theta, m, v, T(scale), T(one_minus_beta1), T(one_minus_beta2), T(eps_hat),
                              T(step_size), T(decay))

    def ema(self, theta, ema, one_minus_decay):
        return self.k["ema"](theta, ema, theta.dtype.type(one_minus_decay))

    def uniform(self, key, n):
        out = self.cp.empty(n, self.cp.float64)
        self.k["uniform"](np.uint64(key), out)
        return out

    def integers(self, key, n, high):
        out = self.cp.empty(n, self.cp.int64)
        self.k["integers"](np.uint64(key), np.int64(high), out)
        return out

    def normal(self, key, size, dtype):
        out = self.cp.empty(size, dtype)
        self.k["normal"](np.uint64(key), out)
        return out
