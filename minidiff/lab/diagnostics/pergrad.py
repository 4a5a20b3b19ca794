"""Per-example gradients of the training loss, for a whole batch at once (Goodfellow 2015).

The batch loss is a mean of per-example losses L_i (`train.per_example_loss`), and reverse mode gives its
gradient, the mean of the g_i = ∇_θ L_i, in one backward pass. Gradient noise needs the g_i themselves, which
naively takes one backward pass per example. The denoiser is a stack of affine layers z = x W + b, and for those
the per-example gradient is an outer product (Goodfellow 2015, "Efficient per-example gradient computations"):

    ∇_W L_i = x_iᵀ z̄_i,    ∇_b L_i = z̄_i,    z̄_i = ∂L_i/∂z_i  (row i of the layer's output gradient)

and z̄_i for every i comes out of ONE backward pass of Σ_i L_i, because L_i depends on row i of z only. So a
forward pass records each layer's input x, a backward pass gives each z̄ — as the gradient with respect to a zero
"probe" added to z — and the g_i follow without a per-example loop. Their squared norms need not even be formed:
‖x_iᵀ z̄_i‖² = ‖x_i‖² ‖z̄_i‖².

To see x and z̄ inside `nn.apply` without a second copy of the network, `_tapped` runs it with its three layer
functions replaced, for the duration of one call, by the same layers written as `layers.linear` plus the probe,
then `layers.silu` (bit for bit the same numbers as the fused primitives; the replacement is module-wide, so the
tap is not for threads that call the network at the same time). A network with a weight that is not
one params entry (Fourier features: `in.W` and `in.W_fourier` are joined first) is refused by the tap, and
`per_example_grads` then takes the plain loop of `per_example_grads_loop`, the reference the tests compare with.

On a GPU (backend.use_device) the forward and backward passes run on the device and the factors x and z̄ come back
to the host, where the rest of the measurement is done.
"""
import contextlib

import numpy as np
from autograd.tracer import getval

from minidiff.accel import backend
from minidiff import layers, nn
from minidiff.accel.autodiff import value_and_vjp
from minidiff.train import per_example_loss

LAYER_FUNCTIONS = ("linear", "linear_silu", "residual_linear_silu")  # the names nn.apply calls its layers by


class UntappableNetwork(NotImplementedError):
    """The network has a layer whose weight is not one params entry, so the outer-product trick does not apply."""


def layer_prefixes(params):
    """The affine layers' key prefixes ('in', 'residual.0', …, 'out'): every `PREFIX.W` with its `PREFIX.b`."""
    return [key[:-2] for key in params if key.endswith(".W") and key[:-2] + ".b" in params]


@contextlib.contextmanager
def _tapped(params, probes, inputs):
    """nn.apply's layers, for the block's duration, as z = x W + b + probe (recording x), then SiLU."""
    prefix_of = {id(params[p + ".W"]): p for p in layer_prefixes(params)}

    def affine(x, W, b):
        prefix = prefix_of.get(id(getval(W)))
        if prefix is None:
            raise UntappableNetwork("a layer's weight is not a single params entry (Fourier features?)")
        inputs[prefix] = getval(x)                                                  # (B, n)
        return probes[prefix] + layers.linear(x, W, b)    # (B, m); the traced probe first (CuPy's + refuses a box)

    tapped = {"linear": affine,
              "linear_silu": lambda x, W, b: layers.silu(affine(x, W, b)),
              "residual_linear_silu": lambda h, W, b: h + layers.silu(affine(h, W, b))}
    original = {name: getattr(nn, name) for name in LAYER_FUNCTIONS}
    try:
        for name in LAYER_FUNCTIONS:
            setattr(nn, name, tapped[name])
        yield
    finally:
        for name, function in original.items():
            setattr(nn, name, function)


def layer_factors(params, problem, x0, eps, t):
    """(inputs, output_grads): for each layer prefix, x (B, n) and z̄ (B, m) with ∇_W L_i = x_iᵀ z̄_i.

    One forward and one backward pass of Σ_i L_i; raises UntappableNetwork when the trick does not apply.
    """
    if set(layer_prefixes(params)) != {key.rsplit(".", 1)[0] for key in params}:
        raise UntappableNetwork("some params are not the weight or bias of an affine layer")
    xp, batch, params = backend.get_xp(), len(x0), backend.tree_to_device(params)
    probes = {p: xp.zeros((batch, params[p + ".W"].shape[1]), params[p + ".W"].dtype) for p in layer_prefixes(params)}
    inputs, names = {}, list(probes)

    def losses(*arrays):                                                            # (B,) the L_i
        with _tapped(params, dict(zip(names, arrays)), inputs):
            return per_example_loss(params, problem, x0, eps, t)

    value, vjp = value_and_vjp(losses, *probes.values())
    output_grads = dict(zip(names, vjp(xp.ones_like(value))))                      # ∂ Σ_i L_i / ∂z per layer
    return backend.tree_to_numpy(inputs), backend.tree_to_numpy(output_grads)


def grads_from_factors(inputs, output_grads):
    """The per-example gradients {name: (B, *shape)} as outer products (module docstring)."""
    grads = {}
    for prefix, z_bar in output_grads.items():
        grads[prefix + ".W"] = np.einsum("bi,bj->bij", inputs[prefix], z_bar)      # (B, n, m)
        grads[prefix + ".b"] = z_bar                                                # (B, m)
    return grads


def per_example_grads_loop(params, problem, x0, eps, t):
    """The reference: ∇_θ L_i by one autograd pass per example, {name: (B, *shape)}."""
    xp, names, params = backend.get_xp(), list(params), backend.tree_to_device(params)

    def one(i):
        loss, vjp = value_and_vjp(lambda *arrays: per_example_loss(
            dict(zip(names, arrays)), problem, x0[i:i + 1], eps[i:i + 1], t[i:i + 1]), *params.values())
        return [backend.to_numpy(g) for g in vjp(xp.ones_like(loss))]

    rows = [one(i) for i in range(len(x0))]
    return {name: np.stack([row[k] for row in rows]) for k, name in enumerate(names)}


def per_example_grads(params, problem, x0, eps, t):
    """∇_θ L_i for every example, {name: (B, *shape)}: outer products where possible, else the loop."""
    try:
        return grads_from_factors(*layer_factors(params, problem, x0, eps, t))
    except UntappableNetwork:
        return per_example_grads_loop(params, problem, x0, eps, t)


def sums_from_grads(grads, groups, n_groups):
    """(‖g_i‖² per example (B,), {name: Σ_{i in group k} g_i (n_groups, *shape)}) from per-example gradients."""
    sq_norms = sum(np.sum(g.reshape(len(g), -1) ** 2, axis=1) for g in grads.values())
    one_hot = np.eye(n_groups)[groups]                                              # (B, G)
    sums = {name: np.tensordot(one_hot, g, axes=(0, 0)) for name, g in grads.items()}
    return sq_norms, sums


def gradient_sums(params, problem, x0, eps, t, groups, n_groups):
    """(‖g_i‖² (B,), per-group gradient sums {name: (G, *shape)}) without forming the g_i when possible.

    groups: an int array (B,) in 0 … n_groups − 1 (a t-bucket per example). Outer-product path:
    ‖g_i‖² = Σ_layers ‖z̄_i‖² (‖x_i‖² + 1) (weight and bias), and Σ_{i∈k} g_i = X_kᵀ Z̄_k per layer.
    """
    try:
        inputs, output_grads = layer_factors(params, problem, x0, eps, t)
    except UntappableNetwork:
        return sums_from_grads(per_example_grads_loop(params, problem, x0, eps, t), groups, n_groups)
    members = [groups == k for k in range(n_groups)]
    sq_norms, sums = 0.0, {}
    for prefix, z_bar in output_grads.items():
        x = inputs[prefix]
        sq_norms = sq_norms + np.sum(z_bar ** 2, axis=1) * (np.sum(x ** 2, axis=1) + 1.0)
        sums[prefix + ".W"] = np.stack([x[k].T @ z_bar[k] for k in members])        # (G, n, m)
        sums[prefix + ".b"] = np.stack([z_bar[k].sum(axis=0) for k in members])     # (G, m)
    return sq_norms, sums
