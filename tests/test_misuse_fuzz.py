"""Every subcommand over generated option values: never a traceback, an exit status in {0, 1, 2, 130}, and a usage
error (exit 2) writes nothing.

Each example gives one option of one command a value drawn from the values a hostile user types — out of range,
NaN, inf, negative, empty, too large, not a number, a duplicate, an alias — on top of a cheap valid command line
(a 2-step run, 20 diffusion steps, a handful of points), so that a value that happens to be valid runs in a moment.
"""
import os

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from minidiff.cli import main

VALUES = ["-1", "0", "-0", "nan", "inf", "-inf", "", " ", "abc", "1e400", "0.5", "2", "3", "eps,eps", "epsilon",
          "v,", ",", "moons", "cosine", "uniform", "1,2", "-5,1", "1e300", "logit-normal:m=nan", "p2:k=-1",
          "edm:sigma_data=0", "mode:s=9", "importance-cosmap", "flow", "rectified_flow"]
TINY = ["--hidden", "8", "--depth", "1", "--T", "20", "--batch-size", "8", "--log-every", "2",
        "--checkpoint-every", "2", "--quiet"]
COMMANDS = {  # command: (its cheap valid arguments, with RUN and OUT filled in; the options fuzzed)
    "train": (["--steps", "2", *TINY, "--out", "{out}/new"],
              ["--T", "--steps", "--lr", "--batch-size", "--hidden", "--depth", "--seed", "--ema-decay", "--grad-clip",
               "--target", "--schedule", "--weighting", "--t-sampling", "--snr-shift", "--sigma-data", "--dtype",
               "--n-train", "--time-dim", "--explosion-factor", "--min-lr-ratio", "--warmup-steps", "--dataset"]),
    "sample": (["{run}", "--n", "8", "--steps", "3", "--quiet", "--out", "{out}/x.npy"],
               ["--n", "--steps", "--eta", "--clip", "--sampler", "--spacing", "--seed", "--variance", "--weights"]),
    "elbo": (["{run}", "--n", "2", "--rtol", "1e-2", "--atol", "1e-2"],
             ["--n", "--rtol", "--atol", "--t-sampling", "--seed", "--variance", "--weights"]),
    "gradvar": (["--T", "20", "--n", "16", "--hidden", "8", "--depth", "1", "--targets", "v", "--schedules", "cosine",
                 "--weightings", "uniform", "--buckets", "2", "--quiet", "--out", "{out}/g.json"],
                ["--T", "--n", "--buckets", "--targets", "--schedules", "--weightings", "--by", "--seed"]),
    "landscape": (["{run}", "--points", "5", "--grid", "3", "--n", "8", "--quiet", "--out", "{out}/l.json"],
                  ["--span", "--points", "--grid", "--n", "--seed", "--weights"]),
    "sweep": (["--lrs", "0.01", "--targets", "v", "--seeds", "0", "--steps", "2", "--T", "20", "--hidden", "8",
               "--depth", "1", "--batch-size", "8", "--check-every", "2", "--quality-n", "8", "--quality-steps", "2",
               "--workers", "1", "--quiet", "--out", "{out}/sweep"],
              ["--lrs", "--targets", "--seeds", "--steps", "--T", "--check-every", "--quality-n", "--quality-bar",
               "--workers", "--schedules", "--weightings"]),
    "schedules": ([], ["--T", "--snr-shift"]),
    "figures": (["--only", "schedules", "--quick", "--quiet", "--out", "{out}/figs"], ["--only", "--seed", "--workers"]),
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz") / "run"
    result = CliRunner().invoke(main, ["train", "--steps", "4", *TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return str(out)


def snapshot(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, names in os.walk(folder) for f in names)


@settings(max_examples=250, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.sampled_from(sorted(COMMANDS)).flatmap(
    lambda name: st.tuples(st.just(name), st.sampled_from(COMMANDS[name][1]), st.sampled_from(VALUES))))
def test_no_traceback_anywhere(tiny_run, tmp_path_factory, case):
    command, option, value = case
    out = str(tmp_path_factory.mktemp("out"))
    base, _ = COMMANDS[command]
    args = [a.format(run=tiny_run, out=out) for a in base]
    args = [a for i, a in enumerate(args) if a != option and (i == 0 or args[i - 1] != option)]  # drop its default
    before = snapshot(out)
    result = CliRunner().invoke(main, [command, *args, option, value])
    assert result.exit_code in (0, 1, 2, 130), (case, result.output)
    assert "Traceback" not in result.output and "internal error" not in result.output, (case, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (case, repr(result.exception))
    if result.exit_code == 2:
        assert snapshot(out) == before, (case, "a usage error wrote files")


@pytest.mark.parametrize("command", [
    ["sample", "{run}", "--n", "4", "--clip", "nan"], ["elbo", "{run}", "--n", "2", "--rtol", "nan"],
    ["landscape", "{run}", "--span", "inf", "--points", "5", "--grid", "3", "--n", "4"],
    ["gradvar", "{run}", "--n", "4", "--buckets", "100000"],
    ["train", "--steps", "2", *TINY, "--out", "{out}/a", "--t-sampling", "logit-normal:m=nan"],
    ["train", "--steps", "2", *TINY, "--out", "{out}/b", "--snr-shift", "1e300"]])
def test_values_that_once_raised_a_traceback_are_usage_errors(tiny_run, tmp_path, command):
    """Found by the generated cases above, before they were fixed: each ended in a Python traceback."""
    result = CliRunner().invoke(main, [a.format(run=tiny_run, out=tmp_path) for a in command])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert list(tmp_path.iterdir()) == []
