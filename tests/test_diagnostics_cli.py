"""`minidiff gradvar`, `landscape` and `sweep`: the files they write, and one-line usage errors that write nothing."""
import json
import os

import pytest
from click.testing import CliRunner

import cli
from minidiff.lab.diagnostics import trajectory
from minidiff.train import TrainConfig

TINY_NET = ["--T", "40", "--hidden", "16", "--depth", "1"]
TINY_SWEEP = ["--dataset", "gmm2d", "--T", "40", "--steps", "20", "--batch-size", "16", "--hidden", "16", "--depth",
              "1", "--check-every", "10", "--quality-n", "50", "--quality-steps", "10", "--workers", "1", "--quiet"]


def run(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two tiny runs with parameter snapshots, eps and v, same network."""
    root = tmp_path_factory.mktemp("runs")
    paths = []
    for target in ("eps", "v"):
        config = TrainConfig(dataset="gmm2d", target=target, T=40, hidden=16, depth=1, time_dim=8, n_train=256,
                             batch_size=32, steps=20, warmup_steps=5, log_every=5, checkpoint_every=5)
        trajectory.train_with_snapshots(config, str(root / target), 5, evaluate=False)
        paths.append(str(root / target))
    return paths


def test_gradvar_at_initialisation_writes_data_and_figures(tmp_path):
    out = tmp_path / "g.json"
    result = run("gradvar", *TINY_NET, "--dataset", "gmm2d", "--n", "64", "--buckets", "4", "--schedules", "cosine",
                 "--targets", "eps,v", "--weightings", "uniform,min-snr", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert [(r["target"], r["weighting"]) for r in saved["records"]] == [("eps", "uniform"), ("eps", "min-snr"),
                                                                         ("v", "uniform"), ("v", "min-snr")]
    assert len(saved["records"][0]["buckets"]) == 4 and saved["records"][0]["all"]["n"] == 64
    assert set(saved["targets"]["scales"]["cosine"]) == {"eps", "v"} and saved["targets"]["floors"]  # gmm2d: exact
    assert len((tmp_path / "g.csv").read_text().splitlines()) == 1 + 4 * 5  # header, then 'all' and 4 buckets each
    assert {p.name for p in tmp_path.iterdir()} == {"g.json", "g.csv", "g.png", "g_cosine.png", "g_targets.png"}


def test_gradvar_of_runs_measures_along_the_snapshots(tmp_path, two_runs):
    out = tmp_path / "g.json"
    result = run("gradvar", two_runs[0], "--n", "32", "--buckets", "2", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    records = json.loads(out.read_text())["records"]
    assert [(r["weights"], r["step"]) for r in records] == [("ema", 20)] + [("raw", s) for s in (0, 5, 10, 15, 20)]
    assert all(r["weighting"] == "uniform" for r in records)  # the run's own weighting by default
    assert (tmp_path / "g_along.png").exists()


def test_landscape_writes_slices_interpolation_and_trajectory(tmp_path, two_runs):
    out = tmp_path / "l.json"
    result = run("landscape", *two_runs, "--points", "5", "--grid", "3", "--n", "16", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert [r["target"] for r in saved["runs"]] == ["eps", "v"]
    assert saved["runs"][0]["surface"][1][1] == pytest.approx(saved["runs"][0]["loss"], rel=1e-12)
    assert len(saved["interpolation"]["loss_a"]) == 41
    assert {p.name for p in tmp_path.iterdir()} == {"l.json", "l.csv", "l.png", "l_interpolation.png",
                                                    "l_trajectory.png"}


def test_sweep_writes_its_folder(tmp_path):
    out = tmp_path / "s"
    result = run("sweep", "--lrs", "1e-3", "--targets", "x0", "--seeds", "0", *TINY_SWEEP, "--out", out)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"sweep.csv", "sweep.json", "sweep.png", "settings.json", "runs"}
    assert json.loads((out / "sweep.json").read_text())["rows"][0]["status"] == "ok"
    again = run("sweep", "--lrs", "1e-3", "--targets", "x0", "--seeds", "0", *TINY_SWEEP, "--out", out)
    assert again.exit_code == 2 and "already holds a sweep" in again.output
    other = run("sweep", "--lrs", "1e-2", "--targets", "x0", "--seeds", "0", *TINY_SWEEP, "--out", out, "--resume")
    assert other.exit_code == 2 and "started with other settings (lrs differ)" in other.output
    done = run("sweep", "--lrs", "1e-3", "--targets", "x0", "--seeds", "0", *TINY_SWEEP, "--out", out, "--resume")
    assert done.exit_code == 0, done.output  # every cell finished: read back, the tables written again


@pytest.mark.parametrize("args, message", [
    (["gradvar", "--targets", "eps,nope"], "unknown target 'nope'"),
    (["gradvar", "--weightings", "min-snr-0"], "min-snr needs γ > 0"),
    (["gradvar", "--schedules", "cosin"], "unknown schedule 'cosin'"),
    (["gradvar", "--T", "5", "--buckets", "6"], "at most T = 5 buckets"),
    (["gradvar", "--out", "g.txt"], "must end in .json"),
    (["gradvar", "--out", "/no/such/folder/g.json"], "does not exist"),
    (["gradvar", "--plot", "g.pdf"], "must end in .png or .svg"),
    (["gradvar", "--schedules", "linear", "--T", "10"], "no combination can be measured"),
    (["landscape"], "Missing argument"),
    (["landscape", "{tmp}", "--points", "6"], "is even"),
    (["landscape", "{tmp}"], "cannot load run"),
    (["sweep", "--lrs", "1e-3,-1"], "-1.0 is not a positive number"),
    (["sweep", "--seeds", "a"], "invalid literal"),
    (["sweep", "--dataset", "nope"], "unknown dataset 'nope'"),
    (["sweep", "--out", "{tmp}/file"], "is a file"),
    (["sweep", "--engine", "threads"], "'threads' is not one of 'stacked', 'processes', 'dask'"),
    (["sweep", "--engine", "dask"], "--engine dask needs --scheduler ADDRESS"),
    (["sweep", "--scheduler", "tcp://127.0.0.1:1"], "--scheduler goes with --engine dask only"),
    (["sweep", "--resume", "--out", "{tmp}/nothing"], "holds no sweep to resume"),
    (["sweep", "--resume", "--force"], "give one of them"),
])
def test_usage_errors_exit_2_with_one_line_and_write_nothing(tmp_path, args, message):
    (tmp_path / "file").write_text("")
    before = set(os.listdir(tmp_path))
    cwd = os.getcwd()
    os.chdir(tmp_path)  # any default output would land here
    try:
        result = run(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    finally:
        os.chdir(cwd)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith("Error:")
    assert set(os.listdir(tmp_path)) == before
