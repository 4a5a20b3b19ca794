"""Data beyond the plane through the whole engine: the network's widths follow the data, the CLI trains, samples and
evaluates in 7 and 64 dimensions, the oracle's likelihoods in 64 dimensions match the exact density, and the samples
figure is an image grid or a matrix of pairwise projections holding exactly the points it was given."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

import cli
from minidiff.lab import figures
from minidiff import make_schedule
from minidiff.runs import loop as runs
from minidiff.data import get_mixture
from minidiff.elbo import elbo
from minidiff.likelihood import flow_nll
from minidiff.mixture import oracle

TINY = ["--T", "50", "--hidden", "16", "--depth", "2", "--time-dim", "8", "--batch-size", "32", "--n-train", "256",
        "--steps", "20", "--log-every", "5", "--checkpoint-every", "5", "--quiet"]
Z = 5.0  # Monte Carlo tolerance in standard errors


def invoke(*args):
    result = CliRunner().invoke(cli.main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    invoke("train", "--dataset", "digits", "--target", "v", "--out", out, *TINY)
    return out


def test_the_network_and_the_samples_follow_the_dimension_of_the_data(digits_run, tmp_path):
    params = runs.load_run(str(digits_run))[3].params
    assert params["in.W"].shape == (64 + 8, 16) and params["out.W"].shape == (16, 64)  # [x | emb(t)] → … → x
    assert np.load(digits_run / "samples.npy").shape == (2000, 64)
    invoke("sample", digits_run, "--n", "30", "--steps", "10", "--out", tmp_path / "x.npy", "--plot",
           tmp_path / "x.png", "--quiet")
    assert np.load(tmp_path / "x.npy").shape == (30, 64) and (tmp_path / "x.png").stat().st_size > 10_000


def test_a_data_file_of_seven_columns_trains_and_samples(tmp_path):
    points = np.random.default_rng(0).standard_normal((300, 7)) * np.arange(1, 8)
    np.save(tmp_path / "d.npy", points)
    out = tmp_path / "run"
    invoke("train", "--data", tmp_path / "d.npy", "--standardize", "--out", out, *TINY)
    assert np.load(out / "samples.npy").shape == (60, 7)  # as many samples as held-out points: 300 // 5
    assert runs.load_run(str(out))[3].params["out.W"].shape == (16, 7)


def test_elbo_of_a_digits_run_reports_the_discrete_bound(digits_run):
    output = invoke("elbo", digits_run, "--n", "20", "--no-ode").output
    rows = {line[:38].strip(): line[38:].strip() for line in output.splitlines()}
    assert "discrete data, 17 levels" in rows
    continuous, discrete = (float(rows[key].split()[0]) for key in ("bound on −log p(x_0)", "bound on −log P(x_0)"))
    terms = [float(rows[key]) for key in ("L_T   prior KL(q(x_T|x_0) || N(0,I))", "Σ L_t denoising KLs, t = 1 … T−1",
                                          "L_0   discretised −log P(x_0|x_1)")]
    assert discrete == pytest.approx(sum(terms), abs=2e-4)  # the same L_T and Σ L_t, the discretised L_0
    assert discrete > 0 and discrete != continuous


@pytest.mark.parametrize("command", [
    ["gradvar", "--dataset", "digits", "--T", "100", "--hidden", "16", "--depth", "1", "--n", "32", "--buckets", "2",
     "--schedules", "cosine", "--targets", "eps", "--weightings", "uniform"],
    ["sweep", "--lrs", "1e-3", "--targets", "x0", "--seeds", "0", "--dataset", "brightness", "--T", "40", "--steps",
     "10", "--batch-size", "16", "--hidden", "16", "--depth", "1", "--check-every", "5", "--quality-n", "40",
     "--quality-steps", "5", "--workers", "1"],
])
def test_diagnostics_run_on_64_dimensional_data(command, tmp_path):
    out = tmp_path / ("g.json" if command[0] == "gradvar" else "s")
    invoke(*command, "--out", out, "--quiet")
    saved = json.loads((out if command[0] == "gradvar" else out / "sweep.json").read_text())
    row = saved["records"][0]["all"] if command[0] == "gradvar" else saved["rows"][0]
    numbers = [v for v in row.values() if isinstance(v, float)]
    assert numbers and all(np.isfinite(numbers))


def test_landscape_of_a_digits_run(digits_run, tmp_path):
    invoke("landscape", digits_run, "--points", "5", "--grid", "3", "--n", "16", "--out", tmp_path / "l.json",
           "--quiet")
    saved = json.loads((tmp_path / "l.json").read_text())["runs"][0]
    assert np.all(np.isfinite(saved["slice_d"])) and len(saved["slice_d"]) == 5


# --- the oracle's likelihoods in 64 dimensions ---------------------------------------------------------------------

def test_flow_nll_of_the_64_dimensional_oracle_is_the_exact_nll(rng):
    # the oracle's flow is the true flow of q_t: −log p(x_0) = −log q_0(√ᾱ_0 x_0) − (D/2) log ᾱ_0 at zero terminal SNR
    mixture, schedule = get_mixture("smooth8x8"), make_schedule("cosine", 200, zero_terminal_snr=True)
    x0 = mixture.sample(12, rng)
    result = flow_nll(oracle(mixture, schedule, "v"), schedule, x0, target="v", rtol=1e-6, atol=1e-6)
    a0 = schedule.alpha_bar[0]
    expected = -mixture.noised(a0).log_prob(np.sqrt(a0) * x0) - 64 / 2 * np.log(a0)
    assert np.abs(result.per_example - expected).max() < 1e-3  # 64 dimensions: the solver's error grows with D


def test_bound_of_the_64_dimensional_oracle_is_above_the_exact_nll(rng):
    mixture, schedule = get_mixture("brightness"), make_schedule("cosine", 100)
    x0 = mixture.sample(200, rng)
    bound = elbo(oracle(mixture, schedule, "eps"), schedule, x0, target="eps", rng=rng)
    gap = bound.per_example + mixture.log_prob(x0)  # paired: the spread of the data's own NLL cancels
    assert gap.mean() > -Z * gap.std(ddof=1) / np.sqrt(len(gap))


# --- the samples figure ------------------------------------------------------------------------------------------

def test_samples_figure_of_images_shows_the_first_64_images(rng):
    data, samples = rng.uniform(-1, 1, (100, 48)), rng.uniform(-1, 1, (70, 48))  # 6 × 8 images
    fig = figures.samples_figure(samples, data, image_shape=(6, 8))
    for ax, x in zip(fig.axes, (data, samples)):
        mosaic = ax.images[0].get_array()
        for i, j in [(0, 0), (3, 5), (7, 7)]:  # tile (i, j) of the 8 × 8 grid is image 8 i + j
            np.testing.assert_array_equal(mosaic[i * 7:i * 7 + 6, j * 9:j * 9 + 8], x[8 * i + j].reshape(6, 8))


def test_samples_figure_of_other_data_is_a_matrix_of_pairwise_projections(rng):
    data, samples = rng.standard_normal((50, 9)), rng.standard_normal((40, 9))
    fig = figures.samples_figure(samples, data)
    assert len(fig.axes) == 16  # the first four coordinates, pairwise
    panel = fig.axes[1 * 4 + 2]  # row 1, column 2: coordinate 2 across, coordinate 1 up
    points = [c.get_offsets() for c in panel.collections]
    np.testing.assert_array_equal(points[0], data[:, [2, 1]])
    np.testing.assert_array_equal(points[1], samples[:, [2, 1]])
