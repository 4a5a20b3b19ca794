"""Every CLI option does what its name says: each is checked against a closed form or an independent equivalence."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

import cli
from minidiff.runs import loop as runs
from minidiff.schedules import make_schedule
from minidiff.train import TIME_INPUTS, time_inputs

TINY = ["--dataset", "gmm2d", "--T", "50", "--hidden", "16", "--depth", "2", "--time-dim", "8", "--batch-size", "32",
        "--n-train", "256", "--log-every", "5", "--checkpoint-every", "5", "--dtype", "float64", "--quiet"]


def invoke(*args):
    result = CliRunner().invoke(cli.main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def params_of(folder):
    return runs.load_run(str(folder))[3].params


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "v"
    invoke("train", *TINY, "--target", "v", "--steps", "40", "--out", out)
    return out


# --- train -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("warmup", [1, 10])
def test_warmup_steps_set_the_first_learning_rate(tmp_path, warmup):
    """Adam's first update is lr · g/(|g| + ε) = ±lr (Kingma & Ba 2015, Alg. 1 with m̂ = g, v̂ = g²), and the warmup
    makes the first lr base · 1/warmup (optim.lr_at). The zero-initialised output bias moves by exactly that."""
    out = tmp_path / "r"
    invoke("train", *TINY, "--steps", "1", "--lr", "0.01", "--warmup-steps", warmup, "--out", out)
    moved = np.abs(params_of(out)["out.b"])
    np.testing.assert_allclose(moved, 0.01 / warmup, rtol=1e-5)


def test_min_lr_ratio_reaches_the_stored_config(tmp_path):
    out = tmp_path / "r"
    invoke("train", *TINY, "--steps", "5", "--min-lr-ratio", "0.25", "--out", out)
    assert json.loads((out / "config.json").read_text())["train"]["min_lr_ratio"] == 0.25


def test_fourier_features_and_log_snr_time_input_shape_the_network(tmp_path):
    out = tmp_path / "r"
    invoke("train", *TINY, "--steps", "5", "--fourier-features", "3", "--time-input", "log_snr", "--out", out)
    params = params_of(out)
    assert params["in.W_fourier"].shape == (2 * 2 * 3, 16)  # sin and cos of 3 frequencies of each of D = 2 inputs
    assert json.loads((out / "config.json").read_text())["train"]["time_input"] == "log_snr"


@pytest.mark.parametrize("zero", [False, True])
def test_log_snr_time_input_runs_forward_with_the_noise_and_stays_in_range(zero):
    """λ falls with t, so the network's input must rise with it, stay in [0, 1000] and be finite at λ = −∞."""
    s = make_schedule("linear", 1000, zero_terminal_snr=zero)
    inputs = time_inputs(s, "log_snr", np.arange(1000))
    assert np.all(np.diff(inputs) >= 0) and inputs[0] > 0 and np.all(np.isfinite(inputs))
    assert inputs.max() <= 1000 and (inputs[-1] == 1000) == zero
    assert TIME_INPUTS == ("t", "log_snr")


def test_counter_randomness_is_reproducible_and_differs_from_numpy(tmp_path):
    for name, randomness in (("a", "counter"), ("b", "counter"), ("c", "numpy")):
        invoke("train", *TINY, "--steps", "10", "--randomness", randomness, "--out", tmp_path / name)
    a, b, c = (params_of(tmp_path / n) for n in "abc")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert any(not np.array_equal(a[key], c[key]) for key in a)


# --- sample ----------------------------------------------------------------------------------------------------

def sampled(folder, tmp_path, name, *args):
    path = tmp_path / f"{name}.npy"
    invoke("sample", folder, "--n", "200", "--steps", "20", "--quiet", "--out", path, *args)
    return np.load(path)


def test_clip_bounds_the_samples(trained, tmp_path):
    """The last ancestral step returns x0_hat itself (coef_x0 = 1, coef_xt = 0 when ᾱ_prev = 1): clipped, |x| ≤ c."""
    x = sampled(trained, tmp_path, "clipped", "--clip", "0.5")
    assert np.abs(x).max() <= 0.5 + 1e-12
    assert np.abs(sampled(trained, tmp_path, "free")).max() > 0.5


def test_ddim_with_eta_one_is_ddpm_through_the_cli(trained, tmp_path):
    """Song et al. 2021: DDIM with η = 1 is ancestral sampling with σ² = β̃; the same seed gives the same points."""
    ddpm = sampled(trained, tmp_path, "ddpm", "--sampler", "ddpm")
    ddim = sampled(trained, tmp_path, "ddim", "--sampler", "ddim", "--eta", "1")
    np.testing.assert_allclose(ddim, ddpm, rtol=1e-9, atol=1e-10)
    assert not np.allclose(sampled(trained, tmp_path, "ddim0", "--sampler", "ddim", "--eta", "0"), ddpm)


@pytest.mark.parametrize("option, value, default", [("--variance", "beta", "beta_tilde"),
                                                    ("--spacing", "trailing", "linspace"),
                                                    ("--weights", "raw", "ema")])
def test_sample_options_change_the_samples(trained, tmp_path, option, value, default):
    changed = sampled(trained, tmp_path, "changed", option, value)
    unchanged = sampled(trained, tmp_path, "unchanged", option, default)
    np.testing.assert_array_equal(unchanged, sampled(trained, tmp_path, "plain"))  # the default is what it says
    assert not np.allclose(changed, unchanged)


# --- elbo --------------------------------------------------------------------------------------------------------

def elbo_rows(*args):
    rows = {}
    for line in invoke("elbo", *args).output.splitlines():
        if line[:38].strip() and len(line) > 38:
            rows[line[:38].strip()] = line[38:].split()
    return rows


def test_elbo_variance_beta_tightens_the_oracles_bound():
    """The exact denoiser's bound with σ² = β is closer to the exact NLL than with β̃ (Ho et al. 2020, §3.2: β̃ is
    right only for a point mass; for spread-out data the first steps' reverse variance is ≈ β)."""
    common = ["--oracle", "--dataset", "gmm1d", "--schedule", "linear", "--T", "100", "--n", "300", "--no-ode"]
    tilde = float(elbo_rows(*common)["gap: bound − exact"][0])
    beta = float(elbo_rows(*common, "--variance", "beta")["gap: bound − exact"][0])
    assert 0 < beta < tilde
    assert not any("PF-ODE" in key for key in elbo_rows(*common))  # --no-ode: no flow row


def test_elbo_ode_tolerances_are_used():
    common = ["--oracle", "--dataset", "gmm1d", "--schedule", "linear", "--T", "100", "--n", "200"]
    rows = elbo_rows(*common, "--rtol", "1e-7", "--atol", "1e-7")
    assert abs(float(rows["PF-ODE −log p(x_0)"][0]) - float(rows["exact −log p_data(x_0)"][0])) < 0.01


def test_elbo_weights_choose_the_ema_or_the_raw_network(trained):
    ema = elbo_rows(trained, "--n", "50", "--no-ode")
    raw = elbo_rows(trained, "--n", "50", "--no-ode", "--weights", "raw")
    assert ema["bound on −log p(x_0)"] != raw["bound on −log p(x_0)"]


# --- diagnostics and figures ---------------------------------------------------------------------------------------

def test_gradvar_by_log_snr_makes_buckets_of_equal_width_in_lambda(tmp_path):
    out = tmp_path / "g.json"
    invoke("gradvar", "--dataset", "gmm2d", "--T", "200", "--hidden", "16", "--depth", "1", "--n", "64", "--buckets",
           "4", "--schedules", "cosine", "--targets", "eps", "--weightings", "uniform", "--by", "log_snr", "--out",
           out, "--quiet")
    buckets = json.loads(out.read_text())["records"][0]["buckets"]
    lam = np.clip(make_schedule("cosine", 200).log_snr, -20, 20)  # λ, clipped as the buckets clip it
    width = (lam.max() - lam.min()) / 4
    for k, bucket in enumerate(buckets):  # bucket k holds the t whose λ lies in [max − (k+1) w, max − k w]
        inside = lam[bucket["t_lo"]:bucket["t_hi"] + 1]
        assert inside.max() <= lam.max() - k * width + 1e-9 and inside.min() >= lam.max() - (k + 1) * width - 1e-9
    assert len({b["t_hi"] - b["t_lo"] for b in buckets}) > 1  # unequal in t: cosine's λ is not linear in t


def test_gradvar_no_along_and_raw_weights(trained, tmp_path):
    out = tmp_path / "g.json"
    invoke("gradvar", trained, "--n", "32", "--buckets", "2", "--no-along", "--weights", "raw", "--out", out, "--quiet")
    records = json.loads(out.read_text())["records"]
    assert [(r["weights"], r["step"]) for r in records] == [("raw", 40)]


def test_landscape_span_and_no_interpolate(trained, tmp_path):
    out = tmp_path / "l.json"
    invoke("landscape", trained, trained, "--span", "0.25", "--points", "5", "--grid", "3", "--n", "16",
           "--no-interpolate", "--out", out, "--quiet")
    saved = json.loads(out.read_text())
    assert saved["runs"][0]["alphas"] == pytest.approx([-0.25, -0.125, 0.0, 0.125, 0.25])
    assert saved["interpolation"] is None and not (tmp_path / "l_interpolation.png").exists()


def test_sweep_quality_bar_is_the_one_given(tmp_path):
    out = tmp_path / "s"
    invoke("sweep", "--lrs", "1e-3", "--targets", "x0", "--seeds", "0", "--dataset", "gmm2d", "--T", "40", "--steps",
           "20", "--batch-size", "16", "--hidden", "16", "--depth", "1", "--check-every", "10", "--quality-n", "50",
           "--quality-steps", "10", "--workers", "1", "--quality-bar", "0.123", "--out", out, "--quiet")
    assert json.loads((out / "sweep.json").read_text())["rows"][0]["quality_bar"] == 0.123


def test_figures_svg_writes_svg_files(tmp_path):
    invoke("figures", "--quick", "--only", "schedules", "--svg", "--out", tmp_path / "f", "--quiet")
    svg = (tmp_path / "f" / "schedules.svg").read_text()
    assert "<svg" in svg and "</svg>" in svg
    assert (tmp_path / "f" / "schedules.png").exists()


def test_figures_out_that_is_a_file_is_a_usage_error(tmp_path):
    (tmp_path / "f").write_text("")
    result = CliRunner().invoke(cli.main, ["figures", "--quick", "--out", str(tmp_path / "f")])
    assert result.exit_code == 2 and "is a file" in result.output


def test_figures_study_needs_every_figures_data(tmp_path):
    result = CliRunner().invoke(cli.main, ["figures", "--quick", "--only", "schedules", "--out", str(tmp_path / "f"),
                                           "--study", str(tmp_path / "s.md"), "--quiet"])
    assert result.exit_code == 1 and "the study needs the data of forward" in result.output
    assert not (tmp_path / "s.md").exists()
