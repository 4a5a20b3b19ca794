"""Adam, clipping, the lr schedule and EMA against numbers computed by hand."""
import itertools
import math

import numpy as np
import pytest

from minidiff import optim

TOL = 1e-12          # fp64 arithmetic on a handful of numbers


def _copies(d):
    return {k: np.array(v, copy=True) for k, v in d.items()}


def test_adam_two_steps_by_hand():
    # Kingma & Ba 2015, Alg. 1 with lr 0.1, β1 0.9, β2 0.999, ε 1e-8, on θ = (1, −2).
    # Step 1, g = (0.5, −0.1): m = 0.1 g = (0.05, −0.01), v = 0.001 g² = (2.5e-4, 1e-5);
    #   m̂ = m / 0.1 = g, v̂ = v / 0.001 = g², so θ moves by lr · g / (|g| + ε):
    #   θ1 = (1 − 0.1 · 0.5 / (0.5 + 1e-8), −2 + 0.1 · 0.1 / (0.1 + 1e-8)) = (0.900000002, −1.90000001)
    # Step 2, g = (−1, 0.2): m = 0.9 m + 0.1 g = (−0.055, 0.011), v = 0.999 v + 0.001 g² = (1.24975e-3, 4.999e-5);
    #   corrections 1 − 0.9² = 0.19 and 1 − 0.999² = 0.001999:
    #   m̂ = (−0.289473684, 0.0578947368), v̂ = (0.625187594, 0.0250075038), √v̂ = (0.790688051, 0.158137610)
    #   θ2 = θ1 − 0.1 m̂ / (√v̂ + ε) = (0.936610354, −1.93661036)
    theta1 = [1 - 0.1 * 0.5 / (0.5 + 1e-8), -2 + 0.1 * 0.1 / (0.1 + 1e-8)]
    m_hat, v_hat = np.array([-0.055, 0.011]) / 0.19, np.array([1.24975e-3, 4.999e-5]) / 0.001999
    theta2 = theta1 - 0.1 * m_hat / (np.sqrt(v_hat) + 1e-8)
    np.testing.assert_allclose(theta2, [0.9366103542405656, -1.936610360388489], rtol=TOL)

    params = {"w": np.array([1.0, -2.0])}
    state = optim.adam_init(params)
    params, state = optim.adam_update(params, {"w": np.array([0.5, -0.1])}, state, lr=0.1)
    np.testing.assert_allclose(params["w"], theta1, rtol=TOL)
    params, state = optim.adam_update(params, {"w": np.array([-1.0, 0.2])}, state, lr=0.1)
    np.testing.assert_allclose(params["w"], theta2, rtol=TOL)
    assert state["step"] == 2
    np.testing.assert_allclose(state["m.w"], [-0.055, 0.011], rtol=TOL)
    np.testing.assert_allclose(state["v.w"], [1.24975e-3, 4.999e-5], rtol=TOL)


def test_adamw_decays_matrices_not_biases():
    # One step, lr 0.1, λ 0.5: m̂ / (√v̂ + ε) = g / (|g| + ε); θ1 = θ0 − lr (g / (|g| + ε) + λ θ0) for W,
    # θ1 = θ0 − lr g / (|g| + ε) for the bias.
    params = {"W": np.array([[2.0, -4.0]]), "b": np.array([2.0])}
    grads = {"W": np.array([[0.3, -0.3]]), "b": np.array([0.3])}
    new, _ = optim.adam_update(params, grads, optim.adam_init(params), lr=0.1, weight_decay=0.5)
    unit = 0.3 / (0.3 + 1e-8)
    np.testing.assert_allclose(new["W"], [[2 - 0.1 * (unit + 1.0), -4 - 0.1 * (-unit - 2.0)]], rtol=TOL)
    np.testing.assert_allclose(new["b"], [2 - 0.1 * unit], rtol=TOL)


def test_adam_leaves_inputs_alone_keeps_dtype_and_resumes_from_npz(rng, tmp_path):
    params = {"W": rng.standard_normal((3, 2)).astype(np.float32), "b": rng.standard_normal(2).astype(np.float32)}
    grads = [{k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()} for _ in range(2)]
    state = optim.adam_init(params)
    before = (_copies(params), _copies(grads[0]), _copies(state))
    p1, s1 = optim.adam_update(params, grads[0], state, lr=1e-2, weight_decay=0.1)
    for original, copy in zip((params, grads[0], state), before):
        for k in original:
            np.testing.assert_array_equal(original[k], copy[k])
    assert all(v.dtype == np.float32 for v in p1.values())

    np.savez(tmp_path / "adam.npz", **s1)
    with np.load(tmp_path / "adam.npz", allow_pickle=False) as f:
        loaded = dict(f)
    resumed, _ = optim.adam_update(p1, grads[1], loaded, lr=1e-2, weight_decay=0.1)
    straight, _ = optim.adam_update(p1, grads[1], s1, lr=1e-2, weight_decay=0.1)
    for k in params:
        np.testing.assert_array_equal(resumed[k], straight[k])


def test_clip_by_global_norm_by_hand():
    # ‖g‖ = √(3² + 4² + 12²) = 13; clipping to 6.5 halves every entry
    grads = {"a": np.array([3.0, 4.0]), "b": np.array([[12.0]])}
    clipped, norm = optim.clip_by_global_norm(grads, 6.5)
    assert norm == 13.0
    np.testing.assert_allclose(clipped["a"], [1.5, 2.0], rtol=TOL)
    np.testing.assert_allclose(clipped["b"], [[6.0]], rtol=TOL)
    np.testing.assert_array_equal(grads["a"], [3.0, 4.0])                      # the input is untouched
    unclipped, norm = optim.clip_by_global_norm(grads, 20.0)
    assert norm == 13.0 and unclipped["a"] is grads["a"]
    bad, norm = optim.clip_by_global_norm({"a": np.array([np.nan, 1.0])}, 1.0)
    assert math.isnan(norm) and bad["a"][1] == 1.0                              # left for the caller to guard
    with pytest.raises(ValueError, match="max_norm"):
        optim.clip_by_global_norm(grads, 0.0)


def test_global_norm_does_not_depend_on_the_order_of_the_keys():
    # 1e16 + 1 rounds back to 1e16 (the spacing of doubles there is 2), but 1 + 1 + 1e16 is exactly 1e16 + 2:
    # summed in the dict's order, the norm would depend on how the dict was built. In sorted order (a, b, c), by hand:
    grads = {"b": np.array([1e8]), "a": np.array([1.0]), "c": np.array([1.0])}
    by_hand = math.sqrt((1.0 + 1e16) + 1.0)
    assert by_hand != math.sqrt(1.0 + 1.0 + 1e16)                              # the example does tell orders apart
    for order in itertools.permutations(grads):
        shuffled = {name: grads[name] for name in order}
        assert optim.global_norm(shuffled) == by_hand                           # bit for bit, in every order
        assert optim.clip_by_global_norm(shuffled, 1.0)[1] == by_hand


def test_lr_schedule_by_hand():
    lr = lambda step: optim.lr_at(step, base_lr=1e-3, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert lr(0) == pytest.approx(1e-4, rel=TOL)                                # warmup start: 1/10 of base
    assert lr(4) == pytest.approx(5e-4, rel=TOL)
    assert lr(9) == pytest.approx(1e-3, rel=TOL)                                # warmup end
    assert lr(10) == pytest.approx(1e-3, rel=TOL)                               # cosine start, cos 0 = 1
    # a quarter of the way: 1e-4 + ½ · 9e-4 · (1 + cos(π/4)) = 1e-4 + 4.5e-4 · 1.70710678 = 8.6819805e-4
    assert lr(35) == pytest.approx(8.681980515339464e-4, rel=TOL)
    assert lr(60) == pytest.approx(5.5e-4, rel=TOL)                             # halfway: cos(π/2) = 0
    assert lr(110) == pytest.approx(1e-4, rel=TOL) and lr(500) == pytest.approx(1e-4, rel=TOL)
    assert optim.lr_at(0, 1e-3, 0, 100) == pytest.approx(1e-3, rel=TOL)         # no warmup
    assert optim.lr_at(100, 1e-3, 0, 100) == pytest.approx(0.0, abs=TOL)
    assert optim.lr_at(4, 1e-3, 20, 10) == pytest.approx(2.5e-4, rel=TOL)      # a run shorter than its warmup
    with pytest.raises(ValueError, match="warmup_steps"):
        optim.lr_at(0, 1e-3, -1, 10)


def test_ema_matches_closed_form(rng):
    # Constant θ: θ̄_n − θ = decay^n (θ̄_0 − θ)
    theta, ema0 = rng.standard_normal(4), rng.standard_normal(4)
    ema = {"w": ema0}
    for _ in range(50):
        ema = optim.ema_update(ema, {"w": theta}, 0.9)
    np.testing.assert_allclose(ema["w"], theta + 0.9 ** 50 * (ema0 - theta), rtol=TOL, atol=TOL)
    np.testing.assert_array_equal(optim.ema_init({"w": theta})["w"], theta)


def test_ema_decay_warmup_by_hand():
    assert optim.ema_decay_at(0, 0.999) == pytest.approx(0.1, rel=TOL)          # (1 + 0) / (10 + 0)
    assert optim.ema_decay_at(90, 0.999) == pytest.approx(0.91, rel=TOL)        # 91 / 100
    assert optim.ema_decay_at(10 ** 6, 0.999) == 0.999                           # capped by the decay


def test_adam_matches_algorithm_1_written_out_over_several_steps(rng):
    """The update rearranged for fewer passes (optim.adam_step) against Kingma & Ba 2015, Alg. 1 as printed,
    with AdamW's decoupled decay (Loshchilov & Hutter 2019, Alg. 2) on the matrix, over five steps."""
    lr, b1, b2, eps, decay = 0.01, 0.9, 0.999, 1e-8, 0.1
    params = {"W": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}
    theta, m, v = _copies(params), {k: 0.0 for k in params}, {k: 0.0 for k in params}
    state = optim.adam_init(params)
    for step in range(1, 6):
        grads = {k: rng.standard_normal(p.shape) for k, p in params.items()}
        params, state = optim.adam_update(params, grads, state, lr, weight_decay=decay)
        for k, g in grads.items():
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g ** 2
            m_hat, v_hat = m[k] / (1 - b1 ** step), v[k] / (1 - b2 ** step)
            theta[k] = theta[k] - lr * (m_hat / (np.sqrt(v_hat) + eps) + (decay if k == "W" else 0.0) * theta[k])
            np.testing.assert_allclose(params[k], theta[k], rtol=TOL, atol=TOL)
            np.testing.assert_allclose(state["m." + k], m[k], rtol=TOL, atol=TOL)
            np.testing.assert_allclose(state["v." + k], v[k], rtol=TOL, atol=TOL)
