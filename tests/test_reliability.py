"""Reliability: divergence is caught, checkpoints refuse anything but themselves and never run code, a run killed at
any moment resumes to the same bytes, every bad input gets one line and no traceback, the same command gives the
same files."""
import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

import cli
from minidiff.runs import checkpoint as ckpt, files
from minidiff.runs import datafile, loop as run, log as runlog
from minidiff import nn, optim
from minidiff.train import DivergenceError, TrainConfig, make_problem, train_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(T=50, hidden=16, depth=1, time_dim=8, batch_size=16, n_train=200, log_every=10, checkpoint_every=10)
TINY_ARGS = ["--T", "50", "--hidden", "16", "--depth", "1", "--time-dim", "8", "--batch-size", "16", "--n-train", "200",
             "--log-every", "10", "--quiet"]
QUIET = dict(progress=False, echo=lambda *_: None, evaluate=False)


def invoke(*args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


def files_of(folder):
    """{relative path: SHA-256 of its bytes} of every file under folder."""
    found = {}
    for here, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(here, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return found


def assert_one_line_error(result, message, code=2):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)  # not an uncaught error
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], result.output


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 30-step run of the CLI (gmm2d, v target), checkpointed every 10 steps."""
    out = tmp_path_factory.mktemp("finished") / "run"
    result = invoke("train", "--dataset", "gmm2d", "--target", "v", "--steps", "30", "--checkpoint-every", "10",
                    "--out", out, *TINY_ARGS)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def other_checkpoint(tmp_path_factory):
    """The checkpoint of a run with the same network but other options (moons, eps)."""
    out = tmp_path_factory.mktemp("other")
    run.train(TrainConfig(dataset="moons", target="eps", steps=1, **TINY), str(out), **QUIET)
    return out / ckpt.CHECKPOINT_FILE


# --- checkpoints: what they hold, and what they refuse ---------------------------------------------------------

def tiny_tree():
    return {"step": 3, "params": {"in.W": np.arange(6.0).reshape(2, 3), "in.b": np.zeros(3, np.float32)}, "note": "x"}


def test_a_checkpoint_round_trip_is_exact_and_its_bytes_carry_no_date(tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    ckpt.save_arrays(a, tiny_tree())
    ckpt.save_arrays(b, tiny_tree())
    tree = ckpt.load_arrays(a)
    assert tree["step"] == 3 and str(tree["note"]) == "x" and list(tree["params"]) == ["in.W", "in.b"]
    np.testing.assert_array_equal(tree["params"]["in.W"], np.arange(6.0).reshape(2, 3))
    assert tree["params"]["in.b"].dtype == np.float32
    with zipfile.ZipFile(a) as archive:
        assert {info.date_time for info in archive.infolist()} == {ckpt.ZIP_EPOCH}  # not the time of writing
        assert {"format.npy", "format_version.npy", "checksum.npy"} <= set(archive.namelist())
    assert a.read_bytes() == b.read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(files.TEMPORARY_PREFIX)] == []


def test_the_checksum_is_sha256_over_name_dtype_shape_and_bytes():
    flat = {"b": np.array([1.5, 2.0]), "a": np.array(7)}
    digest = hashlib.sha256()  # recomputed here, independently, in sorted order
    for key, value in [("a", np.array(7)), ("b", np.array([1.5, 2.0]))]:
        digest.update(f"{key}\0{value.dtype.str}\0{value.shape}\0".encode() + value.tobytes())
    assert ckpt.checksum(flat) == digest.hexdigest()
    assert ckpt.checksum({**flat, "a": np.array(8)}) != digest.hexdigest()


class Payload:
    """An object whose unpickling would create a file: proof, if the file appears, that code ran on load."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def _rewrite_entry(path, key, array, version=None):
    """Replace one entry of a checkpoint by a valid .npy of `array` (a valid zip, the old checksum kept)."""
    with np.load(path) as archive:
        flat = {k: archive[k] for k in archive.files}
    flat[key] = array
    if version is not None:  # a consistent file of another version: its checksum is recomputed
        flat["format_version"] = np.asarray(version)
        flat["checksum"] = np.asarray(ckpt.checksum(flat))
    with open(path, "wb") as f:
        ckpt._write_npz(f, flat)


def _damage(kind, path, marker):
    if kind in ("truncated", "flipped byte", "tampered", "version 3"):
        ckpt.save_arrays(path, tiny_tree())
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("step,loss\n1,0.5\n")
    elif kind == "pickle":
        path.write_bytes(pickle.dumps(Payload(marker)))
    elif kind == "foreign npz":
        np.savez(path, weights=np.ones(3))
    elif kind == "pickled entry":
        np.savez(path, params=np.array([Payload(marker)], dtype=object))
    elif kind == "version 1":
        np.savez(path, format_version=np.asarray(1), step=np.asarray(3))
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "flipped byte":
        raw = bytearray(path.read_bytes())
        raw[raw.index(np.arange(6.0).tobytes()) + 3] ^= 0xFF  # inside the array data of params/in.W
        path.write_bytes(bytes(raw))
    elif kind == "tampered":
        _rewrite_entry(path, "params/in.W", np.arange(6.0).reshape(2, 3) + 1)
    elif kind == "version 3":
        _rewrite_entry(path, "step", np.asarray(3), version=3)
    elif kind == "a folder":
        path.mkdir()


@pytest.mark.parametrize("kind, reason", [
    ("missing", "no such file"),
    ("a folder", "cannot be read"),
    ("empty", "the file is empty"),
    ("text", "not a zip archive"),
    ("pickle", "not a zip archive"),
    ("foreign npz", "not a minidiff checkpoint"),
    ("pickled entry", "holds a pickled Python object; refused unread"),
    ("version 1", "format version 1; this minidiff reads version 2"),
    ("version 3", "format version 3; this minidiff reads version 2"),
    ("truncated", "truncated or damaged"),
    ("flipped byte", "truncated or damaged"),  # the zip's own CRC-32 sees it first
    ("tampered", "checksum mismatch"),
])
def test_a_bad_checkpoint_is_refused_with_one_line_and_no_code_runs(tmp_path, kind, reason):
    path, marker = tmp_path / "checkpoint.npz", tmp_path / "pwned"
    _damage(kind, path, str(marker))
    with pytest.raises(ckpt.CheckpointError) as caught:
        ckpt.load_arrays(path)
    message = str(caught.value)
    assert reason in message and str(path) in message and "\n" not in message
    assert not marker.exists()


# --- divergence -------------------------------------------------------------------------------------------------

def _start(config):
    """(state, problem, x_train) exactly as run.train starts `config`."""
    data_rng, init_rng, train_rng, _ = run.generators(config.seed)
    x_train = run.load_training_data(config, data_rng)[0]
    problem = make_problem(config)
    return run.initial_state(config, x_train.shape[1], init_rng, train_rng), problem, x_train.astype(problem.dtype)


def test_train_step_checks_before_it_updates():
    config = TrainConfig(**TINY)
    state, problem, x_train = _start(config)
    before = {k: v.copy() for k, v in state.params.items()}
    with pytest.raises(DivergenceError, match=r"step 1: loss explosion, loss .* × the running median 1e-12"):
        train_step(state, problem, config, x_train, loss_median=1e-12)  # any loss is above 10⁴ × 1e-12
    assert state.step == 0 and state.adam["step"] == 0
    for name in before:
        np.testing.assert_array_equal(state.params[name], before[name])
    assert train_step(state, problem, config, x_train, loss_median=1e12)[0].step == 1  # far below: a normal step


def test_a_non_finite_loss_stops_training_and_names_the_last_good_checkpoint(tmp_path):
    config = TrainConfig(steps=40, lr=1e30, grad_clip=float("inf"), **TINY)  # step 1 sends the weights to ~1e28
    with pytest.raises(DivergenceError) as caught:
        run.train(config, str(tmp_path), **QUIET)
    message, lr = str(caught.value), optim.lr_at(1, config.lr, config.warmup_steps, config.steps, config.min_lr_ratio)
    for part in ("training diverged at step 2: non-finite loss", "with t in [", "target eps", f"lr {lr:.3g}",
                 f"the last good checkpoint is {tmp_path / 'checkpoint.npz'} (step 0)"):
        assert part in message
    assert "\n" not in message and caught.value.step == 2
    state = run.load_run(str(tmp_path))[3]
    initial = nn.init(run.generators(config.seed)[1], config.network(2), dtype=np.float32)
    assert state.step == 0
    for name in initial:
        np.testing.assert_array_equal(state.params[name], initial[name])


def test_a_loss_explosion_stops_at_the_first_loss_above_factor_times_the_running_median(tmp_path):
    """The rule recomputed independently: replay the run without the guard and find the first step whose loss
    exceeds factor × np.median of the (up to) 100 losses before it, once 10 are known."""
    config = TrainConfig(steps=300, lr=10.0, grad_clip=float("inf"), explosion_factor=10.0, **TINY)
    with pytest.raises(DivergenceError) as caught:
        run.train(config, str(tmp_path), **QUIET)
    state, problem, x_train = _start(config)
    losses, expected = [], None
    while expected is None and state.step < config.steps:
        state, loss, *_ = train_step(state, problem, config, x_train)
        window = losses[-runlog.EXPLOSION_WINDOW:]
        if len(window) >= runlog.EXPLOSION_MIN_LOSSES and loss > config.explosion_factor * np.median(window):
            expected = state.step
        losses.append(loss)
    assert expected is not None and caught.value.step == expected
    assert f"step {expected}: loss explosion" in str(caught.value)
    saved = run.load_run(str(tmp_path))[3].step
    assert saved == (expected - 1) // config.checkpoint_every * config.checkpoint_every
    assert f"(step {saved})" in str(caught.value)


def test_skip_step_drops_each_diverging_update_counts_it_and_resumes_exactly(tmp_path):
    """An explosion factor of 1.3 makes a healthy run skip some steps (its loss varies by ±50%)."""
    config = TrainConfig(steps=60, explosion_factor=1.3, on_divergence="skip-step", max_skips=60, **TINY)
    whole, part = tmp_path / "whole", tmp_path / "part"
    result = run.train(config, str(whole), **QUIET)
    run.train(config, str(part), stop_at=25, **QUIET)
    run.train(config, str(part), resume=True, **QUIET)
    a, b = run.load_run(str(whole))[3], run.load_run(str(part))[3]
    log = np.genfromtxt(whole / "loss_log.csv", delimiter=",", names=True)
    assert 0 < result.skipped_steps == int(log["skipped"].sum()) < config.steps
    assert a.step == config.steps and a.adam["step"] == config.steps - result.skipped_steps  # updates applied
    assert files_of(whole) == files_of(part)


def test_skip_step_stops_after_max_skips_in_a_row(tmp_path):
    config = TrainConfig(steps=40, lr=1e30, grad_clip=float("inf"), on_divergence="skip-step", max_skips=3, **TINY)
    with pytest.raises(DivergenceError) as caught:  # steps 2, 3, 4 are skipped; step 5 is one too many
        run.train(config, str(tmp_path), **QUIET)
    assert caught.value.step == 5 and "after 3 skipped steps in a row (--max-skips 3)" in str(caught.value)


def test_divergence_on_the_command_line_exits_1_with_one_line(tmp_path):
    result = invoke("train", "--out", tmp_path / "run", "--steps", "40", "--lr", "1e30", "--grad-clip", "inf",
                    *TINY_ARGS)
    assert_one_line_error(result, "training diverged at step 2", code=1)
    assert "the last good checkpoint is" in result.output


# --- exact resume ------------------------------------------------------------------------------------------------

KILL_STEPS = 1000  # ~0.5 ms a step: the run is still training well after its first checkpoint has been seen
KILL_ARGS = ["--dataset", "gmm2d", "--target", "v", "--t-sampling", "importance", "--steps", str(KILL_STEPS),
             "--checkpoint-every", "100", *TINY_ARGS]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = invoke("train", "--out", out, *KILL_ARGS)
    assert result.exit_code == 0, result.output
    return files_of(out)


def _launch(out, *extra):
    return subprocess.Popen([sys.executable, "cli.py", "train", *KILL_ARGS, "--out", str(out), *extra], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(out, process, past_step, timeout=120):
    """Poll until the run's checkpoint is past `past_step` (the rename makes every read see a whole file)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be stopped"
        try:
            if ckpt.load_arrays(out / ckpt.CHECKPOINT_FILE)["step"] >= past_step:
                return
        except ckpt.CheckpointError:
            pass
        time.sleep(0.01)
    pytest.fail(f"no checkpoint past step {past_step} within {timeout} s")


def _resume(out):
    done = subprocess.run([sys.executable, "cli.py", "train", "--out", str(out), "--resume", "--quiet"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_a_run_killed_with_sigkill_resumes_to_the_same_bytes(tmp_path, uninterrupted):
    out = tmp_path / "run"
    process = _launch(out)
    _wait_for_checkpoint(out, process, 100)
    process.kill()  # SIGKILL: no handler, no cleanup
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert ckpt.load_arrays(out / ckpt.CHECKPOINT_FILE)["step"] < KILL_STEPS and not (out / "quality.json").exists()
    _resume(out)
    assert files_of(out) == uninterrupted  # params, EMA, Adam, generators, loss log, samples, plot: every byte


def test_ctrl_c_saves_a_checkpoint_exits_130_and_resumes_to_the_same_bytes(tmp_path, uninterrupted):
    out = tmp_path / "run"
    process = _launch(out)
    _wait_for_checkpoint(out, process, 100)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == run.EXIT_INTERRUPTED and "Traceback" not in stderr
    step = int(ckpt.load_arrays(out / ckpt.CHECKPOINT_FILE)["step"])
    assert f"interrupted (SIGINT) at step {step}; checkpoint saved, continue with --resume" in stderr
    _resume(out)
    assert files_of(out) == uninterrupted


@pytest.mark.slow
def test_kills_at_random_moments_still_resume_to_the_same_bytes(tmp_path, uninterrupted):
    """Six SIGKILLs at random times, from start-up (before config.json exists) to the end; then finish."""
    out, rng = tmp_path / "run", np.random.default_rng(9)
    for delay in rng.uniform(0.2, 3.0, 6):
        resuming = (out / ckpt.CONFIG_FILE).exists()  # killed before config.json: start again, as a user would
        process = _launch(out, *(["--resume"] if resuming else ["--force"]))
        time.sleep(delay)
        process.kill()
        process.communicate()
    if (out / ckpt.CONFIG_FILE).exists() and not (out / "quality.json").exists():
        _resume(out)
    elif not (out / "quality.json").exists():
        assert _launch(out, "--force").wait(timeout=300) == 0
    assert files_of(out) == uninterrupted


def test_resume_drops_a_log_row_cut_off_mid_write_and_stale_temporary_files(tmp_path):
    config = TrainConfig(steps=40, **TINY)
    whole, part = tmp_path / "whole", tmp_path / "part"
    run.train(config, str(whole), **QUIET)
    run.train(config, str(part), stop_at=25, **QUIET)
    with open(part / ckpt.LOG_FILE, "a") as f:
        f.write("3")  # the start of row 30, cut off by a kill: it must not be read as step 3
    (part / (files.TEMPORARY_PREFIX + "abc123")).write_bytes(b"half a checkpoint")
    run.train(config, str(part), resume=True, **QUIET)
    assert files_of(whole) == files_of(part)


def test_a_run_killed_while_drawing_its_final_samples_finishes_on_resume(tmp_path, finished_run):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    (out / "quality.json").unlink()  # written last: without it the run has not finished
    (out / "samples.png").unlink()
    (out / (files.TEMPORARY_PREFIX + "figure")).mkdir()
    (out / (files.TEMPORARY_PREFIX + "figure") / "tmp1234.png").write_bytes(b"")  # figures.save cut off
    result = invoke("train", "--out", out, "--resume", "--quiet")
    assert result.exit_code == 0, result.output
    assert files_of(out) == files_of(finished_run)  # the final loss too, though no step ran after the resume


def test_a_run_killed_before_its_first_checkpoint_starts_again_on_resume(tmp_path):
    config = TrainConfig(steps=20, **TINY)
    whole, part = tmp_path / "whole", tmp_path / "part"
    run.train(config, str(whole), **QUIET)
    run.train(config, str(part), stop_at=0, **QUIET)
    (part / ckpt.CHECKPOINT_FILE).unlink()  # as if killed between config.json and the step-0 checkpoint
    run.train(config, str(part), resume=True, **QUIET)
    assert files_of(whole) == files_of(part)


# --- bad input: one line, exit 2, nothing written ------------------------------------------------------------

def _write_npy(path, array):
    np.save(path, array, allow_pickle=True)
    return path


def _data_file(tmp_path, kind):
    """A user's data file with one defect."""
    path = tmp_path / {"npy3d": "x.npy", "pickled": "x.npy", "text": "x.txt"}.get(kind, "x.csv")
    contents = {"empty": "", "nan": "x,y\n1,2\nnan,3\n4,5\n", "words": "1,2\nthree,4\n5,6\n",
                "constant": "\n".join(f"{i},1" for i in range(20)) + "\n", "good": "1,2\n3,4\n5,6\n7,8\n9,0\n",
                "text": "1,2\n3,4\n", "huge": "1,2\n3,4\n5,6\n"}
    if kind == "npy3d":
        return _write_npy(path, np.zeros((4, 2, 2)))
    if kind == "pickled":
        return _write_npy(path, np.array([{"a": 1}, None], dtype=object))
    path.write_text(contents[kind])
    return path


def _run_copy(tmp_path, finished_run, damage=None):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    if damage:
        damage(out)
    return out


def _truncate(out):
    path = out / ckpt.CHECKPOINT_FILE
    path.write_bytes(path.read_bytes()[:1000])


def _tamper_config(out):
    meta = json.loads((out / ckpt.CONFIG_FILE).read_text())
    meta["train"]["target"] = "noise"
    (out / ckpt.CONFIG_FILE).write_text(json.dumps(meta))


TRAIN_CASES = [
    (["--on-divergence", "explode"], "'explode' is not one of 'stop', 'skip-step'"),
    (["--explosion-factor", "1"], "explosion_factor must be > 1"),
    (["--explosion-factor", "nan"], "explosion_factor must be > 1"),
    (["--max-skips", "0"], "0 is not in the range x>=1"),
    (["--seed", "-1"], "-1 is not in the range x>=0"),
    (["--time-dim", "3"], "time_dim must be even"),
    (["--T", "1000000000"], "more than the limit of 16 GiB"),
    (["--lr", "nan"], "lr must be a positive number"),
    (["--grad-clip", "0"], "grad_clip must be > 0"),
    (["--ema-decay", "1"], "ema_decay must be in [0, 1)"),
    (["--checkpoint-every", "15", "--log-every", "10"], "must be a multiple of log_every"),
    (["--resume", "--force"], "give one of them"),
]
DATA_CASES = [
    ("missing", "does not exist"),
    ("empty", "has no data rows"),
    ("npy3d", "holds a 3-D array"),
    ("nan", "has NaN or Inf in 1 data row(s)"),
    ("words", "line 2 is not numbers separated by commas"),
    ("pickled", "holds Python objects (pickled)"),
    ("text", "unsupported extension"),
    ("huge", "is larger than 10 bytes"),
    ("constant", "are constant (std 0)"),
]


@pytest.mark.parametrize("args, message", TRAIN_CASES)
def test_a_bad_train_option_is_one_line_and_writes_nothing(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(invoke("train", *args), message)
    assert files_of(tmp_path) == {}


@pytest.mark.parametrize("kind, message", DATA_CASES)
def test_a_bad_data_file_is_one_line_and_writes_nothing(tmp_path, monkeypatch, kind, message):
    path = tmp_path / "nothing.csv" if kind == "missing" else _data_file(tmp_path, kind)
    monkeypatch.setattr(datafile, "MAX_FILE_BYTES", 10 if kind == "huge" else datafile.MAX_FILE_BYTES)
    before = files_of(tmp_path)
    assert_one_line_error(invoke("train", "--data", path, "--standardize", "--out", tmp_path / "run", *TINY_ARGS),
                          message)
    assert files_of(tmp_path) == before


def _another_runs_checkpoint(other_checkpoint):
    return lambda out: shutil.copyfile(other_checkpoint, out / ckpt.CHECKPOINT_FILE)


RUN_FOLDER_CASES = [  # (command, damage to a copy of the finished run, extra options, message)
    ("train", None, ["--resume", "--lr", "0.1"], "these options differ from it: lr"),
    ("train", None, ["--resume"], "has finished (30 steps)"),
    ("train", None, ["--resume", "--steps", "5"], "its checkpoint is at step 30, past --steps 5"),
    ("train", None, [], "already holds a run; use --force"),
    ("train", lambda out: (out / ckpt.CONFIG_FILE).unlink(), ["--resume"], "it has no config.json"),
    ("train", lambda out: (out / ckpt.CONFIG_FILE).write_text("{not json"), ["--resume"], "not valid JSON"),
    ("train", _tamper_config, ["--resume"], "not a usable run config"),
    ("train", _truncate, ["--resume", "--steps", "40"], "truncated or damaged"),
    ("train", "other", ["--resume", "--steps", "40"], "written by another run"),
    ("sample", lambda out: (out / ckpt.CHECKPOINT_FILE).unlink(), [], "no such file"),
    ("sample", lambda out: (out / ckpt.CONFIG_FILE).unlink(), [], "no such file"),
    ("sample", _truncate, [], "truncated or damaged"),
    ("sample", lambda out: (out / ckpt.CHECKPOINT_FILE).write_bytes(pickle.dumps([1, 2])), [], "not a zip archive"),
    ("sample", lambda out: np.savez(out / ckpt.CHECKPOINT_FILE, a=1), [], "not a minidiff checkpoint"),
    ("sample", "other", [], "written by another run"),
    ("sample", None, ["--steps", "51"], "at most T = 50 steps"),
    ("sample", None, ["--n", "100000000"], "more than 33554432"),
    ("sample", None, ["--seed", "-1"], "-1 is not in the range x>=0"),
    ("sample", None, ["--out", "no/such/folder/x.npy"], "does not exist"),
    ("sample", lambda out: (out / "x.npy").mkdir(), ["--out", "run/x.npy"], "is a directory"),
    ("sample", None, ["--out", "x.csv"], "must end in .npy"),
]


@pytest.mark.parametrize("command, damage, extra, message", RUN_FOLDER_CASES)
def test_a_bad_run_folder_is_one_line_and_writes_nothing(tmp_path, monkeypatch, finished_run, other_checkpoint,
                                                         command, damage, extra, message):
    damage = _another_runs_checkpoint(other_checkpoint) if damage == "other" else damage
    out = _run_copy(tmp_path, finished_run, damage)
    monkeypatch.chdir(tmp_path)
    before = files_of(tmp_path)
    args = ["--out", "run", *extra] if command == "train" else ["run", *extra]
    assert_one_line_error(invoke(command, *args, *(TINY_ARGS[-1:] if command == "train" else [])), message)
    assert files_of(tmp_path) == before
    assert out.exists()


def test_train_refuses_an_out_that_is_a_file_or_under_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("mine")
    assert_one_line_error(invoke("train", "--out", "file", *TINY_ARGS), "'file' is a file")
    assert_one_line_error(invoke("train", "--out", "file/run", *TINY_ARGS), "is not a writable folder")
    assert_one_line_error(invoke("train", "--dataset", "moons", "--data", "file.csv", *TINY_ARGS), "not both")
    assert files_of(tmp_path) == {"file": hashlib.sha256(b"mine").hexdigest()}


def test_a_pickled_checkpoint_in_a_run_folder_never_runs(tmp_path, finished_run):
    marker = tmp_path / "pwned"
    out = _run_copy(tmp_path, finished_run,
                    lambda out: np.savez(out / ckpt.CHECKPOINT_FILE, params=np.array([Payload(str(marker))], object)))
    for args in (["sample", out], ["train", "--out", out, "--resume", "--steps", "40", "--quiet"]):
        assert_one_line_error(invoke(*args), "holds a pickled Python object; refused unread")
    assert not marker.exists()


# --- determinism ------------------------------------------------------------------------------------------------

def test_the_same_command_gives_the_same_bytes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    command = ["train", "--dataset", "moons", "--steps", "20", "--out", "run", *TINY_ARGS]
    assert invoke(*command).exit_code == 0
    os.rename("run", "first")
    assert invoke(*command).exit_code == 0
    first, again = files_of("first"), files_of("run")
    assert set(first) == {"config.json", "checkpoint.npz", "loss_log.csv", "samples.npy", "samples.png",
                          "quality.json"}
    assert first == again
    for name in ("a", "b"):
        result = invoke("sample", "run", "--n", "200", "--steps", "10", "--out", f"{name}.npy", "--plot", f"{name}.png")
        assert result.exit_code == 0, result.output
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
