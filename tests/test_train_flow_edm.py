"""Training with the new options: c_in applied once, by the model wrapper; EDM2's loss; exact resume; old run
folders; and the CLI's options, each checked against a closed form or an equivalence."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

import cli
from minidiff.runs import checkpoint as ckpt, files
from minidiff import nn
from minidiff.forward import q_sample
from minidiff.likelihood import network_model
from minidiff.runs.loop import generators, load_run, load_training_data, train
from minidiff.schedules import between_steps
from minidiff.targets import make_target
from minidiff.train import TrainConfig, make_problem, model_fn, per_example_loss, time_inputs

TINY = dict(T=50, hidden=16, depth=2, time_dim=8, dtype="float64", n_train=256, batch_size=32, log_every=5,
            checkpoint_every=10, warmup_steps=5, dataset="gmm2d")
QUIET = dict(progress=False, echo=lambda *_: None, evaluate=False)


def random_params(config, seed=0):
    """Params whose output layer is not zero, so that the network's output depends on its input."""
    rng = np.random.default_rng(seed)
    params = nn.init(rng, config.network(2), dtype=np.float64)
    params["out.W"] = rng.standard_normal(params["out.W"].shape)
    return params


def test_edm_loss_feeds_the_network_c_in_x_t(rng):
    """c_in x_t = x_t / √(σ² + σ_d² s²) (Karras et al. 2022, Table 1, on x_t): the loss, model_fn and the
    likelihood's differentiable model all give the network that same input."""
    config = TrainConfig(target="edm", sigma_data=0.7, schedule="rectified_flow", **TINY)
    problem, params = make_problem(config), random_params(config)
    s = problem.schedule
    x0, eps, t = rng.standard_normal((16, 2)), rng.standard_normal((16, 2)), rng.integers(0, 50, 16)
    x_t = q_sample(s, x0, t, eps)
    c_in = 1 / np.sqrt(1 - s.alpha_bar[t] + 0.49 * s.alpha_bar[t])[:, None]
    prediction = nn.apply(params, c_in * x_t, time_inputs(s, "t", t))
    target = make_target("edm:sigma_data=0.7", s, x0, eps, t)
    np.testing.assert_allclose(per_example_loss(params, problem, x0, eps, t), np.sum((prediction - target) ** 2, 1),
                               rtol=1e-12)
    np.testing.assert_allclose(model_fn(params, problem, config)(x_t, t), prediction, rtol=1e-12)
    np.testing.assert_allclose(network_model(params, problem, config)(x_t, t), prediction, rtol=1e-12)
    half = t + 0.5 * (t < 49)  # between steps c_in follows the schedule's ᾱ there
    alpha_bar = between_steps(s, half).alpha_bar
    expected = nn.apply(params, x_t / np.sqrt(1 - alpha_bar + 0.49 * alpha_bar)[:, None], time_inputs(s, "t", half))
    np.testing.assert_allclose(model_fn(params, problem, config)(x_t, half), expected, rtol=1e-12)


def test_other_targets_feed_the_network_x_t_itself(rng):
    config = TrainConfig(target="flow", schedule="rectified_flow", **TINY)
    problem, params = make_problem(config), random_params(config)
    x_t, t = rng.standard_normal((8, 2)), np.arange(8)
    assert problem.input_scale is None
    np.testing.assert_array_equal(model_fn(params, problem, config)(x_t, t),
                                  nn.apply(params, x_t, time_inputs(problem.schedule, "t", t)))


def test_learned_weighting_loss_is_edm2s(rng):
    """Karras et al. 2024, eq. (16): e^(−u(t)) L + u(t) with L the target's plain loss and u the learned function."""
    config = TrainConfig(target="v", weighting="learned", **TINY)
    problem, params = make_problem(config), random_params(config)
    params["uncertainty.W"] = rng.standard_normal(params["uncertainty.W"].shape)
    x0, eps, t = rng.standard_normal((16, 2)), rng.standard_normal((16, 2)), rng.integers(0, 50, 16)
    plain = per_example_loss(params, make_problem(TrainConfig(target="v", **TINY)), x0, eps, t)
    u = nn.uncertainty(params, time_inputs(problem.schedule, "t", t))[:, 0]
    np.testing.assert_allclose(per_example_loss(params, problem, x0, eps, t), np.exp(-u) * plain + u, rtol=1e-12)


def test_resume_with_every_new_option_is_bit_identical(tmp_path):
    config = TrainConfig(steps=30, target="edm", sigma_data=0.9, schedule="rectified_flow", snr_shift=2.0,
                         weighting="learned", t_sampling="logit-normal:m=0.5,s=1.2", **TINY)
    whole, part = tmp_path / "whole", tmp_path / "part"
    train(config, str(whole), **QUIET)
    train(config, str(part), stop_at=13, **QUIET)
    train(config, str(part), resume=True, **QUIET)
    a, b = load_run(str(whole))[3], load_run(str(part))[3]
    assert a.step == b.step == 30 and "uncertainty.W" in a.params and "uncertainty.b" in a.ema
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
        np.testing.assert_array_equal(a.adam["v." + name], b.adam["v." + name])
    assert np.any(a.params["uncertainty.b"] != 0)  # u is trained with the network


def test_a_run_folder_from_before_these_options_still_loads_and_resumes(tmp_path):
    """config.json and the checkpoint's config without snr_shift, sigma_data and the network's uncertainty: what
    those runs did (1, 0.5, none)."""
    out = tmp_path / "old"
    config = TrainConfig(steps=20, target="v", **TINY)
    train(config, str(out), stop_at=10, **QUIET)
    meta = json.loads((out / "config.json").read_text())
    for key in ("snr_shift", "sigma_data"):
        del meta["train"][key]
    del meta["network"]["uncertainty"]
    files.save_json(str(out / "config.json"), meta)
    tree = ckpt.load_arrays(str(out / "checkpoint.npz"))
    stored = json.loads(str(tree["config"]))
    for key in ("snr_shift", "sigma_data"):
        del stored[key]
    tree["config"] = json.dumps(stored, sort_keys=True)
    ckpt.save_arrays(str(out / "checkpoint.npz"), tree)
    loaded = load_run(str(out))[0]
    assert loaded.snr_shift == 1.0 and loaded.sigma_data == 0.5
    train(loaded, str(out), resume=True, **QUIET)
    assert load_run(str(out))[3].step == 20


# --- the CLI ------------------------------------------------------------------------------------------------------

CLI_TINY = ["--dataset", "gmm2d", "--T", "50", "--hidden", "16", "--depth", "2", "--time-dim", "8", "--batch-size",
            "32", "--n-train", "256", "--log-every", "5", "--checkpoint-every", "5", "--dtype", "float64", "--quiet"]


def invoke(*args):
    result = CliRunner().invoke(cli.main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def stored(out):
    return json.loads((out / "config.json").read_text())["train"]


def test_sigma_data_defaults_to_the_measured_standard_deviation_of_the_training_data(tmp_path):
    out = tmp_path / "edm"
    result = invoke("train", *CLI_TINY, "--target", "edm", "--steps", "5", "--out", out)
    config = TrainConfig(**{**stored(out), "sigma_data": 0.5})
    x_train = load_training_data(config, generators(config.seed)[0])[0]
    expected = np.sqrt(np.mean(np.var(x_train, axis=0)))  # √(variance averaged over the two dimensions)
    assert stored(out)["sigma_data"] == pytest.approx(expected, rel=1e-12)
    assert "standard deviation of the training data" in result.output
    given = tmp_path / "given"
    invoke("train", *CLI_TINY, "--target", "edm", "--sigma-data", "0.7", "--steps", "5", "--out", given)
    assert stored(given)["sigma_data"] == 0.7
    plain = tmp_path / "v"
    invoke("train", *CLI_TINY, "--target", "v", "--steps", "5", "--out", plain)
    assert stored(plain)["sigma_data"] == 0.5  # not needed: the library's default, untouched


def test_the_new_options_reach_the_run_and_resume(tmp_path):
    out = tmp_path / "rf"
    options = ["--target", "flow", "--schedule", "rectified_flow", "--t-sampling", "logit-normal:m=0,s=1",
               "--snr-shift", "3", "--weighting", "p2:gamma=0.5"]
    invoke("train", *CLI_TINY, *options, "--steps", "5", "--out", out)
    train_options = stored(out)
    assert (train_options["target"], train_options["t_sampling"], train_options["snr_shift"],
            train_options["weighting"]) == ("flow", "logit-normal:m=0,s=1", 3.0, "p2:gamma=0.5")
    invoke("train", *CLI_TINY, "--steps", "10", "--resume", "--out", out)
    assert load_run(str(out))[3].step == 10
    invoke("sample", out, "--n", "50", "--steps", "10", "--out", tmp_path / "x.npy")
    assert np.all(np.isfinite(np.load(tmp_path / "x.npy")))


@pytest.mark.parametrize("args, message", [
    (["--t-sampling", "logit-normal:q=1"], "has no option 'q'"),
    (["--weighting", "p2:k=0"], "k > 0"),
    (["--target", "velocity"], "flow, edm"),
    (["--target", "eps", "--schedule", "rectified_flow"], "zero terminal SNR"),
    (["--t-sampling", "mode:s=3"], "not monotone"),
])
def test_bad_new_options_are_usage_errors(tmp_path, args, message):
    result = CliRunner().invoke(cli.main, ["train", *CLI_TINY, *args, "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "r").exists()


def test_gradvar_of_a_learned_run_plots_its_uncertainty(tmp_path):
    """The record carries u(λ_t) at every t — nn.uncertainty on the run's own time inputs — and e^(−u) times the
    uniform weighting's w(λ); the figure is written beside the main one."""
    from minidiff.targets import implied_weighting
    out = tmp_path / "learned"
    invoke("train", *CLI_TINY, "--target", "flow", "--weighting", "learned", "--steps", "10", "--out", out)
    data = tmp_path / "g.json"
    invoke("gradvar", out, "--n", "32", "--buckets", "2", "--no-along", "--out", data, "--quiet")
    record = json.loads(data.read_text())["records"][0]
    config, _, _, state = load_run(str(out))
    problem = make_problem(config)
    u = nn.uncertainty(state.ema, problem.time_input)[:, 0]
    np.testing.assert_allclose(record["uncertainty"]["u"], u, rtol=1e-12)
    _, w = implied_weighting("uniform", "flow", problem.schedule)
    np.testing.assert_allclose(np.array(record["uncertainty"]["w"], float)[:-1], (np.exp(-u) * w)[:-1], rtol=1e-12)
    assert (tmp_path / "g_uncertainty.png").stat().st_size > 10_000
