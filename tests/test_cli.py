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
    assert len(rows) == 12
    linear = rows[("linear", "no")]
    assert float(linear[3]) == pytest.approx(4.036e-5, rel=1e-3)  # REFERENCE: ᾱ_999 = 4.03583e-5
    assert float(rows[("cosine", "yes")][3]) == 0.0 and float(rows[("cosine", "yes")][-1]) == 0.0
    prior_kl = -0.5 * np.log1p(-0.068265 ** 2)  # REFERENCE: √ᾱ_999 = 0.068265 for scaled_linear
    assert float(rows[("scaled_linear", "no")][-1]) == pytest.approx(prior_kl, rel=1e-2)


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
