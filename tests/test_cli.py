"""The command line: output, files written, and one-line usage errors with exit code 2."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args):
    return CliRunner().invoke(cli.main, list(args))


def test_schedules_table_has_every_schedule_and_the_reference_numbers():
    result = run("schedules", "--T", "1000")
    assert result.exit_code == 0, result.output
    rows = {(line.split()[0], line.split()[1]): line.split() for line in result.output.splitlines()[2:-1]}
    assert len(rows) == 14  # seven schedules (rectified_flow the seventh), each plain and zero-terminal-SNR
    linear = rows[("linear", "no")]
    assert float(linear[3]) == pytest.approx(4.036e-5, rel=1e-3)  # linear (Ho et al. 2020): ᾱ_999 = 4.03583e-5
    assert float(rows[("cosine", "yes")][3]) == 0.0 and float(rows[("cosine", "yes")][-1]) == 0.0
    prior_kl = -0.5 * np.log1p(-0.068265 ** 2)  # scaled_linear (Rombach et al. 2022): √ᾱ_999 = 0.068265
    assert float(rows[("scaled_linear", "no")][-1]) == pytest.approx(prior_kl, rel=1e-2)


def test_schedules_table_shows_the_rectified_flow_and_a_shift():
    """u = 1/1000 at t = 0: λ_0 = 2 log(999) = 13.814; shifted by 3: 13.814 − 2 log 3 = 11.616 (by hand)."""
    plain, moved = run("schedules", "--T", "1000"), run("schedules", "--T", "1000", "--snr-shift", "3")
    assert plain.exit_code == 0 and moved.exit_code == 0, moved.output
    row = lambda out: next(line.split() for line in out.splitlines() if line.startswith("rectified_flow"))  # noqa
    assert float(row(plain.output)[6]) == pytest.approx(13.814, abs=1e-3)
    assert float(row(moved.output)[6]) == pytest.approx(11.616, abs=1e-3)
    assert "-2 log 3 = -2.1972" in moved.output


def test_schedules_plot_is_written(tmp_path):
    path = tmp_path / "schedules.png"
    result = run("schedules", "--T", "100", "--plot", str(path))
    assert result.exit_code == 0, result.output
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


@pytest.mark.parametrize("args, message", [
    (["schedules", "--T", "0"], "0 is not in the range x>=1"),
    (["schedules", "--plot", "/no/such/folder/s.png"], "does not exist"),
    (["schedules", "--plot", "s.pdf"], "must end in .png or .svg"),
])
def test_usage_errors_exit_2_with_one_line(tmp_path, args, message):
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_python_cli_py_runs_from_the_checkout():
    out = subprocess.run([sys.executable, "cli.py", "schedules", "--T", "1000"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "cosine" in out.stdout and "sigmoid_beta" in out.stdout


@pytest.mark.skipif(shutil.which("minidiff") is None, reason="the package is not installed (pip install -e .)")
def test_installed_console_script():
    out = subprocess.run(["minidiff", "schedules", "--T", "50"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "linear" in out.stdout


TINY_RUN = ["--T", "50", "--hidden", "16", "--depth", "1", "--time-dim", "8", "--steps", "30", "--batch-size", "16",
            "--n-train", "200", "--log-every", "10", "--checkpoint-every", "10", "--quiet"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    result = run("train", "--dataset", "gmm2d", "--target", "v", "--out", str(out), *TINY_RUN)
    assert result.exit_code == 0, result.output
    return out


def test_train_writes_a_complete_run_folder(tiny_run):
    names = {p.name for p in tiny_run.iterdir()}
    assert {"config.json", "checkpoint.npz", "loss_log.csv", "samples.npy", "samples.png", "quality.json"} <= names
    assert not any(n.startswith(".tmp") for n in names)
    assert np.load(tiny_run / "samples.npy").shape == (2000, 2)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "ode"])
def test_sample_writes_samples_and_a_plot(tiny_run, tmp_path, sampler):
    out, plot = tmp_path / "x.npy", tmp_path / "x.png"
    result = run("sample", str(tiny_run), "--n", "300", "--sampler", sampler, "--steps", "20", "--out", str(out),
                 "--plot", str(plot))
    assert result.exit_code == 0, result.output
    x = np.load(out)
    assert x.shape == (300, 2) and np.all(np.isfinite(x))
    again = tmp_path / "y.npy"
    run("sample", str(tiny_run), "--n", "300", "--sampler", sampler, "--steps", "20", "--out", str(again))
    np.testing.assert_array_equal(np.load(again), x)  # the same seed gives the same samples


def test_train_refuses_to_overwrite_without_force(tiny_run):
    result = run("train", "--dataset", "gmm2d", "--out", str(tiny_run), *TINY_RUN)
    assert result.exit_code == 2 and "--force" in result.output


def test_resume_refuses_changed_options(tiny_run):
    result = run("train", "--out", str(tiny_run), "--resume", "--target", "eps", "--quiet")
    assert result.exit_code == 2 and "target" in result.output


@pytest.mark.parametrize("args, message", [
    (["train", "--dataset", "mnist"], "choose one of: moons"),
    (["train", "--target", "noise"], "eps, x0, v, score, mu"),
    (["train", "--schedule", "linear", "--T", "10"], "T >= 20"),
    (["train", "--target", "eps", "--zero-terminal-snr"], "zero terminal SNR"),
    (["train", "--weighting", "min-snr-0"], "γ > 0"),
    (["train", "--dtype", "float16"], "float16"),
    (["train", "--data", "/no/such/file.npy"], "does not exist"),
    (["train", "--resume", "--out", "/no/such/run"], "cannot resume"),
    (["sample", "/no/such/run"], "does not exist"),
    (["sample", ".", "--sampler", "euler"], "euler"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_datasets_lists_every_dataset(tmp_path):
    result = run("datasets", "--plot", str(tmp_path / "d.png"))
    assert result.exit_code == 0
    for name in ("moons", "8gaussians", "gmm1d"):
        assert name in result.output
    assert (tmp_path / "d.png").stat().st_size > 10_000


def test_the_library_mistakes_are_one_exception_that_keeps_its_old_bases():
    from minidiff import schedules, train
    from minidiff.accel import backend
    from minidiff.errors import UsageError
    from minidiff.lab import evaluate
    from minidiff.runs import checkpoint, datafile
    for error in (train.ConfigError, schedules.ScheduleError, datafile.DataError, checkpoint.CheckpointError,
                  evaluate.EvaluationError, backend.DeviceError):
        assert issubclass(error, UsageError) and issubclass(error, ValueError)
    assert issubclass(backend.DeviceError, RuntimeError)  # what `except RuntimeError` caught before


@pytest.mark.parametrize("option, last_line", [(None, "Error: no such thing"),
                                               ("--thing", "Error: Invalid value for --thing: no such thing")])
def test_the_group_turns_a_usage_error_of_any_command_into_exit_2_under_its_usage(option, last_line):
    from minidiff.cli import Group
    from minidiff.errors import UsageError
    group = Group("minidiff", context_settings={"help_option_names": ["-h", "--help"]})

    @group.command()
    def fails():
        raise UsageError("no such thing", option=option)
    result = CliRunner().invoke(group, ["fails"])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == "Usage: minidiff fails [OPTIONS]" and lines[1] == "Try 'minidiff fails --help' for help."
    assert lines[-1] == last_line
