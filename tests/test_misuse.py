"""Every command survives misuse: no hang, one writer per folder, data kept with the run, clear refusals.

Each test reproduces a defect found by trying the commands as a hostile user would, then checks the fix.
"""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from minidiff.runs import datafile, files, folder, loop as run
from minidiff.train import TrainConfig

TINY = dict(steps=6, hidden=8, depth=1, time_dim=4, T=20, batch_size=8, log_every=2, checkpoint_every=4)
HOLD = "import sys, time; from minidiff.runs import files\nwith files.exclusive(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)\n"


def holder(folder):
    """A process that holds the folder's lock until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_and_kill_9_releases_the_lock(tmp_path):
    proc = holder(tmp_path)
    try:
        with pytest.raises(files.FolderBusy, match="in use by another minidiff process"):
            with files.exclusive(str(tmp_path)):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with files.exclusive(str(tmp_path)):  # the kernel released the dead holder's lock
        pass
    assert os.listdir(tmp_path) == []  # the lock leaves no file behind


def write_points(path, n, seed=0):
    np.save(path, np.random.default_rng(seed).normal(size=(n, 2)))


def test_a_run_records_its_data_and_refuses_a_changed_file(tmp_path):
    data = tmp_path / "points.npy"
    write_points(data, 200)
    out = str(tmp_path / "run")
    run.train(TrainConfig(data_file=str(data), **TINY), out, evaluate=False)
    config = folder.load_config(out)[0]
    assert config.data_sha256 == datafile.file_checksum(str(data))
    run.load_training_data(config, run.generators(config.seed)[0])  # the same file: accepted
    write_points(data, 200, seed=1)  # the same shape, other points: what --resume used to train on silently
    with pytest.raises(datafile.DataError, match="not the one this run was trained on"):
        run.load_training_data(config, run.generators(config.seed)[0])
    data.unlink()
    with pytest.raises(datafile.DataError, match="does not exist"):
        run.load_training_data(config, run.generators(config.seed)[0])


@pytest.mark.parametrize("rows", [2, 4, 9])
def test_too_few_rows_for_a_held_out_split_are_refused_up_front(tmp_path, rows):
    data = tmp_path / "few.npy"
    write_points(data, rows)
    with pytest.raises(datafile.DataError, match="at least 10 rows"):
        run.load_training_data(TrainConfig(data_file=str(data), **TINY), run.generators(0)[0])


def test_train_into_a_folder_another_process_writes_is_refused_and_deletes_nothing(tmp_path):
    """Two `train --force` into one folder used to both exit 0 and leave a folder mixed from both runs."""
    from click.testing import CliRunner
    from minidiff.cli import main
    out = tmp_path / "run"
    args = ["train", "--steps", "4", "--hidden", "8", "--depth", "1", "--T", "20", "--batch-size", "8",
            "--log-every", "2", "--checkpoint-every", "4", "--out", str(out), "--quiet"]
    assert CliRunner().invoke(main, args).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = holder(out)  # stands for a first writer still training there
    try:
        result = CliRunner().invoke(main, args + ["--force"])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert result.exit_code == 2 and "in use by another minidiff process" in result.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert CliRunner().invoke(main, args + ["--force"]).exit_code == 0  # the holder is gone: --force works again


def diverged_run(tmp_path):
    """The issue's recipe for a run whose weights blow up: lr 100, no warmup, no clipping."""
    from click.testing import CliRunner
    from minidiff.cli import main
    out = tmp_path / "r_div"
    result = CliRunner().invoke(main, ["train", "--steps", "200", "--hidden", "16", "--T", "50", "--lr", "100",
                                       "--warmup-steps", "0", "--grad-clip", "1e9", "--out", str(out), "--quiet"])
    assert result.exit_code == 1 and "diverged" in result.output
    return out


def test_the_commands_on_a_diverged_run_end_in_one_line_and_write_nothing(tmp_path):
    """elbo used to hang on this run; sample wrote its NaN samples with exit 0."""
    from click.testing import CliRunner
    from minidiff.cli import main
    out = diverged_run(tmp_path)
    samples = tmp_path / "x.npy"
    result = CliRunner().invoke(main, ["sample", str(out), "--n", "50", "--steps", "10", "--out", str(samples),
                                       "--quiet"])
    assert result.exit_code in (1, 2) and "Traceback" not in result.output and not samples.exists()
    result = CliRunner().invoke(main, ["elbo", str(out), "--n", "2", "--rtol", "1e-3", "--atol", "1e-3"])
    assert result.exit_code in (1, 2) and "Traceback" not in result.output
    assert str(out) in result.output or "cannot load run" in result.output  # the message names the run


def test_a_full_disk_is_one_line_with_exit_1(tmp_path, monkeypatch):
    """A full disk gave an OSError traceback; here every atomic write fails with ENOSPC, as on a full disk."""
    import errno
    from click.testing import CliRunner
    from minidiff.cli import main

    def full(path, write):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(files, "atomic_write", full)
    result = CliRunner().invoke(main, ["train", "--steps", "4", "--hidden", "8", "--depth", "1", "--T", "20",
                                       "--batch-size", "8", "--log-every", "2", "--checkpoint-every", "4",
                                       "--out", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 1 and "No space left on device" in result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, OSError)


@pytest.mark.parametrize("engine, workers, sig", [("stacked", "1", signal.SIGINT), ("processes", "2", signal.SIGTERM)])
def test_ctrl_c_and_sigterm_stop_a_sweep_keep_its_rows_and_exit_130(tmp_path, engine, workers, sig):
    """Ctrl-C used to mark the current cell failed and go on (one worker) or train every queued cell to the end and
    then write nothing (two). Now the whole process group gets the signal, as from a terminal, and the sweep stops."""
    import time
    out = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "minidiff", "sweep", "--lrs", "0.001,0.01", "--targets", "v",
                             "--seeds", "0", "--steps", "1000000", "--T", "50", "--hidden", "8", "--depth", "1",
                             "--check-every", "500", "--engine", engine, "--workers", workers, "--quiet",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 120
    while not list(out.glob("runs/*/checkpoint.npz")) and time.time() < deadline:  # training has begun
        time.sleep(0.2)
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "sweep interrupted: 0 of 2 cells finished" in err
    import json
    assert json.loads((out / "sweep.json").read_text())["interrupted"] is True


def invoke(*args):
    from click.testing import CliRunner
    from minidiff.cli import main
    return CliRunner().invoke(main, [str(a) for a in args])


TINY_ARGS = ["--hidden", "8", "--depth", "1", "--T", "20", "--batch-size", "8", "--log-every", "2",
             "--checkpoint-every", "2", "--quiet"]


def test_a_diverged_training_saves_no_nan_samples(tmp_path):
    """train used to write samples.npy full of NaN before it said the model had diverged."""
    out = diverged_run(tmp_path)
    assert not (out / "samples.npy").exists() and not (out / "quality.json").exists()


def test_sample_refuses_a_run_whose_data_file_changed(tmp_path):
    """Without --plot, sample did not read the data file at all, so a changed file went unnoticed."""
    data = tmp_path / "points.npy"
    write_points(data, 100)
    assert invoke("train", "--data", data, "--steps", "2", *TINY_ARGS, "--out", tmp_path / "run").exit_code == 0
    write_points(data, 100, seed=1)
    result = invoke("sample", tmp_path / "run", "--n", "4", "--steps", "2", "--quiet")
    assert result.exit_code == 2 and "not the one this run was trained on" in result.output


def test_gradvar_of_a_run_refuses_the_options_the_run_fixes(tmp_path):
    """They used to be ignored without a word (the run's own T, targets, … were measured)."""
    assert invoke("train", "--steps", "2", *TINY_ARGS, "--out", tmp_path / "run").exit_code == 0
    result = invoke("gradvar", tmp_path / "run", "--T", "50", "--targets", "eps", "--out", tmp_path / "g.json")
    assert result.exit_code == 2 and "--targets, --T come from the run" in result.output
    assert not (tmp_path / "g.json").exists()


@pytest.mark.parametrize("shift", ["1e300", "1e-300", "nan"])
def test_schedules_refuses_a_shift_out_of_range(shift):
    """It printed 'not defined' for every schedule and exited 0."""
    result = invoke("schedules", "--snr-shift", shift)
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_a_measurement_of_a_model_whose_predictions_overflow_is_refused(tmp_path):
    """gradvar wrote nan/inf into its .json, .csv and figure and exited 0 for a model whose EMA weights overflow."""
    from minidiff.runs import checkpoint as ckpt
    out = tmp_path / "run"
    assert invoke("train", "--steps", "2", *TINY_ARGS, "--dtype", "float64", "--out", out).exit_code == 0
    tree = ckpt.load_arrays(str(out / "checkpoint.npz"))
    for key in tree["ema"]:
        if key.endswith(".W"):
            tree["ema"][key] = tree["ema"][key] * 1e200  # finite weights, infinite predictions
    ckpt.save_arrays(str(out / "checkpoint.npz"), tree)
    result = invoke("gradvar", out, "--n", "8", "--buckets", "2", "--out", tmp_path / "g.json", "--quiet")
    assert result.exit_code == 1 and "NaN or Inf" in result.output and not (tmp_path / "g.json").exists()
