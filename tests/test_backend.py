"""The primitives against central finite differences and against the same expressions in autograd.numpy."""
import autograd
import autograd.numpy as anp
import numpy as np
import pytest

from minidiff.accel import backend
from minidiff.accel.autodiff import value_and_vjp
from minidiff.layers import concat, linear, linear_silu, mean_square_error, residual_linear_silu, silu, sinusoids, weighted_squared_error

FD_STEP = 1e-6       # central differences in fp64: truncation O(h²) ~ 1e-12, rounding O(1e-16 / h) ~ 1e-10
FD_RTOL = 1e-6       # relative to the largest gradient entry
REF_TOL = 1e-12      # hand-written VJPs vs autograd's on the same expression, fp64
FP32_RTOL = 1e-5     # fp32 forward vs fp64 forward: a few fp32 ulps (2^-23 ≈ 1.2e-7) through short sums


def _silu_ref(z):
    return z / (1 + anp.exp(-z))


def _sinusoids_ref(x, omega):
    angle = x[:, :, None] * omega
    return anp.concatenate([anp.sin(angle).reshape(x.shape[0], -1), anp.cos(angle).reshape(x.shape[0], -1)], 1)


def _inputs(rng, *shapes):
    return tuple(rng.standard_normal(s) for s in shapes)


# name: (primitive, the same expression in autograd.numpy, inputs, the argnums to differentiate)
CASES = {
    "silu": (silu, _silu_ref, lambda r: _inputs(r, (4, 5)) , (0,)),
    "linear": (linear, lambda x, W, b: anp.dot(x, W) + b, lambda r: _inputs(r, (4, 3), (3, 5), (5,)), (0, 1, 2)),
    "linear_silu": (linear_silu, lambda x, W, b: _silu_ref(anp.dot(x, W) + b),
                    lambda r: _inputs(r, (4, 3), (3, 5), (5,)), (0, 1, 2)),
    "residual_linear_silu": (residual_linear_silu, lambda h, W, b: h + _silu_ref(anp.dot(h, W) + b),
                             lambda r: _inputs(r, (4, 5), (5, 5), (5,)), (0, 1, 2)),
    "concat_columns": (lambda a, b: concat(a, b, axis=1), lambda a, b: anp.concatenate([a, b], axis=1),
                       lambda r: _inputs(r, (4, 2), (4, 3)), (0, 1)),
    "concat_rows": (lambda a, b: concat(a, b, axis=0), lambda a, b: anp.concatenate([a, b], axis=0),
                    lambda r: _inputs(r, (2, 3), (4, 3)), (0, 1)),
    "sinusoids": (sinusoids, _sinusoids_ref, lambda r: (r.standard_normal((4, 2)), np.array([1.0, 3.0, 0.5])), (0,)),
    "mean_square_error": (mean_square_error, lambda p, q, w: anp.mean(w[:, None] * (p - q) ** 2),
                          lambda r: _inputs(r, (4, 3), (4, 3)) + (r.uniform(0.5, 2, 4),), (0, 1)),
    "mean_square_error_unweighted": (mean_square_error, lambda p, q: anp.mean((p - q) ** 2),
                                     lambda r: _inputs(r, (4, 3), (4, 3)), (0, 1)),
    "weighted_squared_error": (weighted_squared_error, lambda p, q, w: w * anp.sum((p - q) ** 2, axis=1),
                               lambda r: _inputs(r, (4, 3), (4, 3)) + (r.uniform(0.5, 2, 4),), (0, 1)),
}


def _projected(f, cotangent):
    """L(inputs) = Σ c ⊙ f(inputs): its gradient is the VJP of f with c."""
    return lambda *inputs: anp.sum(cotangent * f(*inputs))


def _central_differences(L, inputs, argnum):
    """∂L/∂inputs[argnum], one entry at a time."""
    a = inputs[argnum]
    grad = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        up, down = a.copy(), a.copy()
        up[i] += FD_STEP
        down[i] -= FD_STEP
        grad[i] = (L(*inputs[:argnum], up, *inputs[argnum + 1:]) -
                   L(*inputs[:argnum], down, *inputs[argnum + 1:])) / (2 * FD_STEP)
    return grad


@pytest.mark.parametrize("name", CASES)
def test_gradient_matches_finite_differences_and_autograd_numpy(name, rng):
    f, ref, make_inputs, argnums = CASES[name]
    inputs = make_inputs(rng)
    cotangent = rng.standard_normal(np.shape(ref(*inputs)))
    for argnum in argnums:
        ours = autograd.grad(_projected(f, cotangent), argnum)(*inputs)
        fd = _central_differences(_projected(f, cotangent), inputs, argnum)
        theirs = autograd.grad(_projected(ref, cotangent), argnum)(*inputs)
        np.testing.assert_allclose(ours, fd, rtol=FD_RTOL, atol=FD_RTOL * np.abs(fd).max())
        np.testing.assert_allclose(ours, theirs, rtol=REF_TOL, atol=REF_TOL)
        assert ours.dtype == inputs[argnum].dtype


@pytest.mark.parametrize("name", CASES)
def test_forward_matches_autograd_numpy_and_fp32_matches_fp64(name, rng):
    f, ref, make_inputs, _ = CASES[name]
    inputs = make_inputs(rng)
    out64 = f(*inputs)
    np.testing.assert_allclose(out64, ref(*inputs), rtol=REF_TOL, atol=REF_TOL)
    out32 = f(*(a.astype(np.float32) for a in inputs))
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=FP32_RTOL, atol=FP32_RTOL * np.abs(out64).max())


def test_fp32_gradients_stay_fp32(rng):
    x, W, b = (a.astype(np.float32) for a in _inputs(rng, (4, 5), (5, 5), (5,)))
    grads = autograd.grad(lambda W, b: mean_square_error(residual_linear_silu(x, W, b), x), (0, 1))(W, b)
    assert [g.dtype for g in grads] == [np.float32, np.float32]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_silu_is_finite_and_silent_far_from_zero(dtype):
    z = np.array([-1000.0, -100.0, 0.0, 100.0, 1000.0], dtype=dtype)
    with np.errstate(all="raise"):
        y = silu(z)
        dy = autograd.elementwise_grad(silu)(z)
    # SiLU(z) → 0 for z → −∞ and → z for z → +∞; its slope → 0 and → 1; SiLU(0) = 0, SiLU'(0) = σ(0) = ½
    np.testing.assert_allclose(y, [0, 0, 0, 100, 1000], atol=1e-30)
    np.testing.assert_allclose(dy, [0, 0, 0.5, 1, 1], atol=1e-30)


def test_vjp_reused_and_inputs_untouched(rng):
    """autograd.jacobian calls each VJP once per output: the saved values and the gradient must not change."""
    x, W, b = _inputs(rng, (3, 4), (4, 4), (4,))
    copies = [a.copy() for a in (x, W, b)]
    vjp, out = autograd.make_vjp(lambda x: residual_linear_silu(x, W, b))(x)
    g = rng.standard_normal(out.shape)
    g_copy = g.copy()
    first, second = vjp(g), vjp(g)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(g, g_copy)
    for a, c in zip((x, W, b), copies):
        np.testing.assert_array_equal(a, c)


def test_second_derivatives_raise(rng):
    z = rng.standard_normal(3)
    first = autograd.grad(lambda z: anp.sum(silu(z)))
    with pytest.raises(NotImplementedError, match="second derivatives"):
        autograd.grad(lambda z: anp.sum(first(z)))(z)


@pytest.mark.parametrize("loss", [mean_square_error, lambda p, q, w: anp.sum(weighted_squared_error(p, q, w))])
def test_loss_weights_are_constants(rng, loss):
    p, q, w = _inputs(rng, (4, 3), (4, 3), (4,))
    with pytest.raises(NotImplementedError, match="weights"):
        autograd.grad(lambda w: loss(p, q, w))(w)


@pytest.mark.parametrize("name", CASES)
def test_untraced_call_gives_the_traced_value_bit_for_bit_and_leaves_inputs_alone(name, rng):
    """Without a trace a primitive runs as a plain function that saves nothing (and may work in place)."""
    f, _, make_inputs, argnums = CASES[name]
    inputs = make_inputs(rng)
    copies = [a.copy() for a in inputs]
    plain = f(*inputs)
    traced = autograd.make_vjp(lambda a: f(*inputs[:argnums[0]], a, *inputs[argnums[0] + 1:]))(inputs[argnums[0]])[1]
    assert not autograd.tracer.isbox(plain)
    np.testing.assert_array_equal(plain, traced)
    for a, c in zip(inputs, copies):
        np.testing.assert_array_equal(a, c)


def test_value_and_vjp_matches_autograd_on_a_dict(rng):
    """Several arrays at once, one used twice and one not at all, against autograd's grad of the same dict."""
    x = rng.standard_normal((5, 3))
    params = {"W": rng.standard_normal((3, 3)), "b": rng.standard_normal(3), "unused": rng.standard_normal(2)}
    weights = rng.uniform(0.5, 2, 5)

    def losses(p):
        h = residual_linear_silu(linear_silu(x, p["W"], p["b"]), p["W"], p["b"])     # W and b used twice
        return weighted_squared_error(h, x, weights)                                # (5,)

    seed = rng.standard_normal(5)
    value, vjp = value_and_vjp(lambda *arrays: losses(dict(zip(params, arrays))), *params.values())
    ours = dict(zip(params, vjp(seed)))
    theirs = autograd.grad(lambda p: anp.sum(seed * losses(p)))(params)
    np.testing.assert_allclose(value, losses(params), rtol=REF_TOL)
    for k in params:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=REF_TOL, atol=REF_TOL)
    np.testing.assert_array_equal(ours["unused"], np.zeros(2))
    # an output that depends on none of the arrays: zero gradients, like autograd's make_vjp
    value, vjp = value_and_vjp(lambda W: x.sum(), params["W"])
    assert value == x.sum() and np.all(vjp(1.0)[0] == 0)


def test_numpy_backend():
    assert backend.get_xp() is np
    a = np.arange(3.0)
    np.testing.assert_array_equal(backend.to_numpy(a), a)
    assert backend.to_numpy([1, 2]).tolist() == [1, 2]
