"""The edm, p2, sigmoid and learned weightings against their published forms, and EDM2's optimum u* = log L."""
import warnings

import numpy as np
import pytest

from minidiff import nn
from minidiff.forward import q_sample
from minidiff.preconditioning import edm_loss_weight, edm_sigma
from minidiff.accel.autodiff import value_and_vjp
from minidiff.layers import uncertainty_weighted
from minidiff.schedules import PriorTermWarning, make_schedule
from minidiff.targets import TARGETS, implied_weighting, loss_weight, make_target, parse_weighting


def schedule(name="cosine", T=1000, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PriorTermWarning)
        return make_schedule(name, T, **kw)


def test_edm_weighting_is_karras_lambda_of_sigma():
    """On x_0: λ(σ) = (σ² + σ_d²)/(σ σ_d)² at σ = √((1 − ᾱ)/ᾱ) (Table 1); on the edm target: 1."""
    s = schedule("linear")
    for sigma_data in (0.5, 1.3):
        spec = f"edm:sigma_data={sigma_data}"
        np.testing.assert_allclose(loss_weight(spec, "x0", s), edm_loss_weight(edm_sigma(s.alpha_bar), sigma_data),
                                   rtol=1e-9)
        np.testing.assert_allclose(loss_weight(spec, f"edm:sigma_data={sigma_data}", s), 1.0, rtol=1e-12)
    assert loss_weight("karras", "x0", s)[10] == pytest.approx(s.snr[10] + 4.0, rel=1e-12)  # k-diffusion's name


def test_p2_weighting_of_choi_et_al():
    """ε-MSE × (k + SNR)^(−γ): at SNR = 1 (the rectified flow's middle step) 0.5 for γ = 1, 0.707107 for γ = ½."""
    s = schedule("rectified_flow", 4)
    assert s.snr[1] == pytest.approx(1.0, rel=1e-13)
    assert loss_weight("p2", "eps", s)[1] == pytest.approx(0.5, rel=1e-12)
    assert loss_weight("p2:gamma=0.5", "eps", s)[1] == pytest.approx(0.707107, rel=1e-6)
    assert loss_weight("p2:k=3,gamma=2", "eps", s)[1] == pytest.approx(1 / 16, rel=1e-12)


@pytest.mark.parametrize("bias, at_zero", [(0.0, 0.5), (2.0, 0.880797)])
def test_sigmoid_weighting_implies_sigmoid_of_b_minus_lambda(bias, at_zero):
    """Kingma & Gao 2023: w(λ) = sigmoid(b − λ), for every target; at λ = 0 it is 0.5 (b = 0), 0.880797 (b = 2)."""
    s = schedule("cosine")
    for target in ("eps", "x0", "v", "flow", "edm"):
        lam, w = implied_weighting(f"sigmoid:b={bias}", target, s)
        np.testing.assert_allclose(w[:-1], 1 / (1 + np.exp(lam[:-1] - bias)), rtol=1e-9, err_msg=target)
    middle = schedule("rectified_flow", 4)  # λ_1 = 0
    assert implied_weighting(f"sigmoid:b={bias}", "flow", middle)[1][1] == pytest.approx(at_zero, rel=1e-6)


def perturbed_errors(rng, s):
    """‖X − X̂‖² of every target for one random error in x0_hat at fixed x_t, and that x_0 error."""
    t = np.arange(s.T)
    x0, eps = rng.standard_normal((2, s.T, 2))
    x_t = q_sample(s, x0, t, eps)
    x0_hat = x0 + rng.standard_normal(x0.shape)
    eps_hat = (x_t - np.sqrt(s.alpha_bar[:, None]) * x0_hat) / np.sqrt(1 - s.alpha_bar[:, None])
    return {name: np.sum((make_target(name, s, x0, eps, t) - make_target(name, s, x0_hat, eps_hat, t)) ** 2, -1)
            for name in TARGETS}, np.sum((x0 - x0_hat) ** 2, -1)


@pytest.mark.parametrize("weighting", ["edm", "p2", "p2:k=2,gamma=0.5", "sigmoid:b=1", "min-snr"])
@pytest.mark.parametrize("name", ["cosine", "rectified_flow"])
def test_each_weighting_gives_every_target_the_same_loss_for_the_same_error_in_x0(rng, weighting, name):
    s = schedule(name)
    err, x0_err = perturbed_errors(rng, s)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = loss_weight(weighting, "x0", s) * x0_err
        for target in TARGETS:
            if target in ("eps", "score") and name == "rectified_flow":
                continue  # ε cannot reach x_0 at the flow's zero-SNR last step
            np.testing.assert_allclose((loss_weight(weighting, target, s) * err[target])[:-1], expected[:-1],
                                       rtol=1e-8, err_msg=target)


def test_weighting_names_and_errors():
    assert parse_weighting("p2:γ=0.5") == ("p2:gamma=0.5", None) and parse_weighting("p2:k=1") == ("p2", None)
    assert parse_weighting("learned") == ("learned", None)
    with pytest.raises(ValueError, match="p2 has no option 'b'"):
        parse_weighting("p2:b=1")
    with pytest.raises(ValueError, match="k > 0"):
        parse_weighting("p2:k=0")
    with pytest.raises(ValueError, match="needs its trained u|give uncertainty"):
        implied_weighting("learned", "v", schedule())


# --- EDM2's learned uncertainty (Karras et al. 2024, eqs. 14–16) ---------------------------------------------------

def test_uncertainty_loss_and_its_gradient_against_central_differences(rng):
    losses, u = rng.random(7) + 0.1, rng.standard_normal((7, 1))
    value, vjp = value_and_vjp(uncertainty_weighted, losses, u)
    np.testing.assert_allclose(value, np.exp(-u[:, 0]) * losses + u[:, 0], rtol=1e-14)
    g = rng.standard_normal(7)
    g_losses, g_u = vjp(g)
    h = 1e-6
    for i in range(7):
        step = np.zeros((7, 1))
        step[i] = h
        numeric = g @ (uncertainty_weighted(losses, u + step) - uncertainty_weighted(losses, u - step)) / (2 * h)
        assert g_u[i, 0] == pytest.approx(numeric, rel=1e-7)
    np.testing.assert_allclose(g_losses, g * np.exp(-u[:, 0]), rtol=1e-14)


def test_learned_uncertainty_reaches_log_of_a_fixed_loss():
    """On a fixed loss L̄ = 0.25 at every t, minimising e^(−u) L̄ + u over u's params reaches u* = ln 0.25 =
    −1.386294 at every t, and the loss there is 1 + u* = −0.386294 (closed form)."""
    config = nn.Config(data_dim=2, hidden=8, depth=1, time_dim=2, uncertainty=True)  # u = w·[sin t, cos t] + b
    params = nn.init(np.random.default_rng(0), config)
    names = ["uncertainty.W", "uncertainty.b"]
    t = np.linspace(0, 999, 64)
    losses = np.full(64, 0.25)
    for _ in range(500):  # Newton's step on the bias would be exact; plain gradient descent is what training does
        value, vjp = value_and_vjp(lambda W, b: uncertainty_weighted(losses, nn.uncertainty(
            {**params, "uncertainty.W": W, "uncertainty.b": b}, t)), *(params[k] for k in names))
        for name, grad in zip(names, vjp(np.full(64, 1 / 64))):
            params[name] = params[name] - 0.5 * grad
    np.testing.assert_allclose(nn.uncertainty(params, t)[:, 0], -1.386294, atol=1e-6)
    assert value.mean() == pytest.approx(-0.386294, abs=1e-6)


def test_the_network_ignores_the_uncertainty_params(rng):
    config = nn.Config(data_dim=2, hidden=8, depth=2, time_dim=8, uncertainty=True)
    params = nn.init(np.random.default_rng(1), config)
    params["out.W"] = rng.standard_normal(params["out.W"].shape)
    x, t = rng.standard_normal((5, 2)), np.arange(5.0)
    without = {k: v for k, v in params.items() if not k.startswith("uncertainty.")}
    np.testing.assert_array_equal(nn.apply(params, x, t), nn.apply(without, x, t))
    assert nn.init(np.random.default_rng(1), nn.Config(data_dim=2, hidden=8, depth=2, time_dim=8)).keys() == \
        without.keys()
