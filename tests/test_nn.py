"""The denoiser against an independent autograd.numpy transcription, finite differences and hand values."""
import dataclasses
import math

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

from minidiff import nn

FD_STEP = 1e-6       # central differences in fp64: truncation ~1e-12, rounding ~1e-10
FD_RTOL = 1e-6       # relative to the largest entry
REF_TOL = 1e-12      # our primitives vs autograd.numpy on the same network, fp64
FP32_RTOL = 1e-5     # fp32 vs fp64 forward of a small network, relative to the largest output
SMALL = dict(data_dim=2, hidden=6, depth=3, time_dim=4)    # small enough for finite differences on every param
VARIANTS = [dict(residual=r, fourier_features=f) for r in (True, False) for f in (0, 2)]


def _random_params(rng, config, scale=0.5):
    """Params of the config's shapes with every entry random (the init's zero output layer would hide errors)."""
    return {k: scale * rng.standard_normal(v.shape) for k, v in nn.init(rng, config).items()}


def _batch(rng, config, batch=5):
    return rng.standard_normal((batch, config.data_dim)), rng.integers(0, 1000, batch).astype(float)


def _reference_apply(params, x, t):
    """The same network written out with autograd.numpy, from the documented layout of the params."""
    D = params["out.W"].shape[1]
    E = params["in.W"].shape[0] - D
    omega_t = 10000.0 ** (-2 * np.arange(E // 2) / E)                              # Vaswani et al. 2017, §3.5
    features = [x, anp.sin(t[:, None] * omega_t), anp.cos(t[:, None] * omega_t)]
    W = params["in.W"]
    if "in.W_fourier" in params:
        omega_x = np.pi * 2.0 ** np.arange(params["in.W_fourier"].shape[0] // (2 * D))  # Mildenhall et al. 2020
        angle = x[:, :, None] * omega_x
        features += [anp.sin(angle).reshape(len(x), -1), anp.cos(angle).reshape(len(x), -1)]
        W = anp.concatenate([W, params["in.W_fourier"]], axis=0)
    silu = lambda z: z / (1 + anp.exp(-z))
    h = silu(anp.dot(anp.concatenate(features, axis=1), W) + params["in.b"])
    i = 0
    while f"residual.{i}.W" in params or f"hidden.{i}.W" in params:
        kind = "residual" if f"residual.{i}.W" in params else "hidden"
        branch = silu(anp.dot(h, params[f"{kind}.{i}.W"]) + params[f"{kind}.{i}.b"])
        h = h + branch if kind == "residual" else branch
        i += 1
    return anp.dot(h, params["out.W"]) + params["out.b"]


def test_default_config_is_the_34_256_256_256_2_mlp(rng):
    params = nn.init(rng, nn.Config())
    assert nn.layer_sizes(params) == (34, 256, 256, 256, 2)
    assert {k: v.shape for k, v in params.items()} == {
        "in.W": (34, 256), "in.b": (256,),
        "residual.0.W": (256, 256), "residual.0.b": (256,), "residual.1.W": (256, 256), "residual.1.b": (256,),
        "out.W": (256, 2), "out.b": (2,)}
    assert nn.num_params(params) == 34 * 256 + 256 + 2 * (256 * 256 + 256) + 256 * 2 + 2 == 141058


def test_layer_sizes_with_fourier_features_and_no_residual(rng):
    params = nn.init(rng, nn.Config(fourier_features=3, residual=False, depth=2))
    # 2 + 32 + 2·2·3 inputs; one hidden-to-hidden layer
    assert nn.layer_sizes(params) == (46, 256, 256, 2)
    assert params["in.W_fourier"].shape == (12, 256) and "hidden.0.W" in params and "residual.0.W" not in params


def test_time_embedding_hand_values():
    # E = 4: ω = (10000^0, 10000^(−2/4)) = (1, 0.01); emb(t) = [sin t, sin 0.01t, cos t, cos 0.01t]
    emb = nn.time_embedding(np.array([0.0, 2.0]), 4)
    expected = [[0, 0, 1, 1], [0.9092974268256817, 0.01999866669333308, -0.4161468365471424, 0.9998000066665778]]
    np.testing.assert_allclose(emb, expected, rtol=1e-15, atol=1e-15)
    assert nn.time_embedding(np.array([3]), 32, np.float32).dtype == np.float32


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_apply_matches_autograd_numpy_transcription(variant, rng):
    config = nn.Config(**SMALL, **variant)
    params, (x, t) = _random_params(rng, config), _batch(rng, config)
    np.testing.assert_allclose(nn.apply(params, x, t), _reference_apply(params, x, t), rtol=REF_TOL, atol=REF_TOL)
    loss = lambda f: lambda p: anp.sum(f(p, x, t) ** 2)
    ours, theirs = autograd.grad(loss(nn.apply))(params), autograd.grad(loss(_reference_apply))(params)
    for k in params:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=REF_TOL, atol=REF_TOL * np.abs(theirs[k]).max())


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_param_gradients_match_finite_differences(variant, rng):
    config = nn.Config(**SMALL, **variant)
    params, (x, t) = _random_params(rng, config), _batch(rng, config)
    loss = lambda p: float(np.sum(nn.apply(p, x, t) ** 2))
    grads = autograd.grad(lambda p: anp.sum(nn.apply(p, x, t) ** 2))(params)
    for k, value in params.items():
        fd = np.zeros_like(value)
        for i in np.ndindex(value.shape):
            up, down = value.copy(), value.copy()
            up[i] += FD_STEP
            down[i] -= FD_STEP
            fd[i] = (loss({**params, k: up}) - loss({**params, k: down})) / (2 * FD_STEP)
        np.testing.assert_allclose(grads[k], fd, rtol=FD_RTOL, atol=FD_RTOL * np.abs(fd).max(), err_msg=k)


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_jacobian_wrt_x_matches_finite_differences(variant, rng):
    config = nn.Config(**SMALL, **variant)
    params, (x, t) = _random_params(rng, config), _batch(rng, config)
    jac = autograd.jacobian(lambda x: nn.apply(params, x, t))(x)               # (B, D, B, D)
    fd = np.zeros_like(jac)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += FD_STEP
        down[i] -= FD_STEP
        fd[(...,) + i] = (nn.apply(params, up, t) - nn.apply(params, down, t)) / (2 * FD_STEP)
    np.testing.assert_allclose(jac, fd, rtol=FD_RTOL, atol=FD_RTOL * np.abs(fd).max())
    # each output row depends on its own input row only
    off_diagonal = jac.copy()
    off_diagonal[np.arange(len(x)), :, np.arange(len(x)), :] = 0
    assert np.all(off_diagonal == 0)


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_fp32_params_give_fp32_output_close_to_fp64(variant, rng):
    config = nn.Config(**SMALL, **variant)
    params, (x, t) = _random_params(rng, config), _batch(rng, config)
    params32 = {k: v.astype(np.float32) for k, v in params.items()}
    out64, out32 = nn.apply(params, x, t), nn.apply(params32, x, t)               # x, t fp64 in both
    assert out64.shape == out32.shape == x.shape and out64.dtype == np.float64 and out32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=FP32_RTOL, atol=FP32_RTOL * np.abs(out64).max())
    grads = autograd.grad(lambda p: anp.sum(nn.apply(p, x.astype(np.float32), t) ** 2))(params32)
    assert all(g.dtype == np.float32 for g in grads.values())


def test_init_scheme(rng):
    params = nn.init(rng, nn.Config())
    x, t = _batch(rng, nn.Config())
    assert np.all(nn.apply(params, x, t) == 0)                                  # zero output layer
    assert all(np.all(params[k] == 0) for k in params if k.endswith(".b"))
    # He et al. 2015: std √(2 / fan_in); sampling error of a std from n draws is ~1/√(2n): 0.8% and 0.3% here
    assert params["in.W"].std() == pytest.approx(math.sqrt(2 / 34), rel=0.04)
    assert params["residual.0.W"].std() == pytest.approx(math.sqrt(2 / 256), rel=0.015)


def test_init_is_reproducible_and_dtype_independent():
    config = nn.Config(fourier_features=2)
    p64 = nn.init(np.random.default_rng(7), config)
    p32 = nn.init(np.random.default_rng(7), config, dtype=np.float32)
    for k in p64:
        assert p32[k].dtype == np.float32 and np.array_equal(p32[k], p64[k].astype(np.float32))


def test_params_and_config_round_trip_through_npz(rng, tmp_path):
    config = nn.Config(**SMALL, fourier_features=2)
    params, (x, t) = _random_params(rng, config), _batch(rng, config)
    np.savez(tmp_path / "params.npz", **params)
    with np.load(tmp_path / "params.npz", allow_pickle=False) as f:
        loaded = dict(f)
    np.testing.assert_array_equal(nn.apply(loaded, x, t), nn.apply(params, x, t))
    assert nn.Config(**dataclasses.asdict(config)) == config


def test_scalar_t_is_shared_by_the_batch(rng):
    config = nn.Config(**SMALL)
    params, (x, _) = _random_params(rng, config), _batch(rng, config)
    np.testing.assert_array_equal(nn.apply(params, x, 17), nn.apply(params, x, np.full(len(x), 17.0)))
    with pytest.raises(ValueError, match="t must be"):
        nn.apply(params, x, np.zeros(len(x) + 1))


@pytest.mark.parametrize("bad", [dict(time_dim=3), dict(depth=0), dict(hidden=0), dict(fourier_features=-1)],
                         ids=str)
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        nn.Config(**bad)


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
@pytest.mark.parametrize("importance", [False, True], ids=["uniform", "importance"])
def test_loss_and_grad_matches_plain_autograd_through_the_dict(variant, importance, rng):
    """train.loss_and_grad (each param its own root, the backward seeded with ∂L/∂ℓ_i) against autograd's own
    value_and_grad of the mean loss over the params dict."""
    from minidiff.train import TrainConfig, loss_and_grad, make_problem, per_example_loss
    config = TrainConfig(T=50, dtype="float64", target="v", weighting="min-snr")          # the network is `params`
    params = _random_params(rng, nn.Config(**SMALL, **variant))
    problem, B = make_problem(config), 6
    x0, eps, t = rng.standard_normal((B, 2)), rng.standard_normal((B, 2)), rng.integers(0, config.T, B)
    u = rng.uniform(0.5, 2, B).astype(np.float32) if importance else None
    loss, grads, losses = loss_and_grad(params, problem, x0, eps, t, u)
    mean = lambda p: anp.mean(per_example_loss(p, problem, x0, eps, t) * (1 if u is None else u))  # noqa: E731
    loss_ref, grads_ref = autograd.value_and_grad(mean)(params)
    assert loss == pytest.approx(loss_ref, rel=REF_TOL)
    np.testing.assert_allclose(losses, per_example_loss(params, problem, x0, eps, t), rtol=REF_TOL)
    for k in params:
        np.testing.assert_allclose(grads[k], grads_ref[k], rtol=REF_TOL, atol=REF_TOL * np.abs(grads_ref[k]).max())


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_untraced_apply_is_the_traced_forward_bit_for_bit(variant, rng):
    """Sampling calls apply with plain arrays (no trace, nothing saved): the same numbers as under a trace."""
    config = nn.Config(**SMALL, **variant)
    params, (x, t) = _random_params(rng, config), _batch(rng, config)
    traced = autograd.make_vjp(lambda W: nn.apply({**params, "in.W": W}, x, t))(params["in.W"])[1]
    np.testing.assert_array_equal(nn.apply(params, x, t), traced)
