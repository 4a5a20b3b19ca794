"""Stability sweeps: the rows a grid writes, divergence recorded as such, the table the heat map reads, and the
engines: stacked and processes give the same rows and files; a stacked sweep killed with SIGKILL resumes to them."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minidiff import metrics, nn
from minidiff.elbo import elbo
from minidiff.runs import checkpoint as ckpt, loop as run
from minidiff.sample import sample
from minidiff.lab.diagnostics import sweep, tables
from minidiff.lab.diagnostics.checks import Checks
from minidiff.train import DivergenceError, TrainConfig, make_problem, model_fn

BASE = dict(dataset="gmm2d", T=40, hidden=16, depth=1, time_dim=8, n_train=256, batch_size=32, steps=20,
            warmup_steps=5, log_every=10, checkpoint_every=10)
TINY = dict(base=BASE, check_every=10, eval_n=32, quality_n=64, quality_steps=10)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_sweep_of_two_tiny_configs_writes_the_expected_rows(tmp_path):
    settings = sweep.SweepConfig(lrs=(1e-3,), targets=("eps", "v"), **TINY)
    rows = sweep.run_sweep(settings, str(tmp_path), workers=2)  # two spawned worker processes
    table = read_csv(tmp_path / "sweep.csv")
    assert list(table[0]) == list(sweep.COLUMNS)
    assert [(r["index"], r["target"], r["lr"], r["status"], r["diverged"]) for r in table] == [
        ("0", "eps", "0.001", "ok", "0"), ("1", "v", "0.001", "ok", "0")]
    for row in table:
        assert float(row["energy_distance"]) >= 0 and float(row["energy_floor"]) > 0
        assert np.isfinite(float(row["elbo_bits_per_dim"])) and float(row["final_loss"]) > 0
        assert os.path.exists(os.path.join(row["run_dir"], "snapshots.npz"))
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert [c["step"] for c in saved["checks"]["0"]] == [0, 10, 20]  # checked at init and every 10 steps
    assert saved["rows"][1]["target"] == rows[1]["target"] == "v"
    assert run.load_run(table[1]["run_dir"])[3].step == BASE["steps"]


# A grid with every outcome: at lr 1e-3 four cells finish; at lr 1e4 (unclipped) two blow up at the check of step 20
# and two diverge in training, at steps 17 and 13.
ENGINE_GRID = dict(lrs=(1e-3, 1e4), targets=("eps", "v"), seeds=(0, 1), check_every=20, eval_n=32, quality_n=64,
                   quality_steps=10, base={**BASE, "steps": 40, "grad_clip": 1e9})
TIMED = ("wall_s",)  # the one column that is a measurement of the machine, not of the cells


def comparable_rows(rows, out_dir):
    """The rows without their times, with the sweep folder's path cut out of every text."""
    return [{k: str(v).replace(str(out_dir), "OUT") for k, v in row.items() if k not in TIMED} for row in rows]


def folder_files(out_dir):
    """Every file under out_dir: bytes, or for the files that record times (the tables and each cell.json) the
    parsed content without those times and with the folder's path cut out."""
    found = {}
    for folder, _, names in os.walk(out_dir):
        for name in names:
            path = os.path.join(folder, name)
            key = os.path.relpath(path, out_dir)
            if name == "sweep.csv":
                found[key] = comparable_rows(read_csv(path), out_dir)
            elif name in ("sweep.json", "cell.json"):
                saved = json.loads(open(path).read())
                found[key] = (comparable_rows(saved.get("rows", [saved.get("row")]), out_dir), saved.get("checks"))
            else:
                found[key] = open(path, "rb").read()
    return found


def test_the_stacked_engine_gives_the_rows_and_files_of_the_process_engine(tmp_path):
    settings = sweep.SweepConfig(**ENGINE_GRID)
    alone = sweep.run_sweep(settings, str(tmp_path / "alone"), engine="processes")  # in this process, one by one
    stacked = sweep.run_sweep(settings, str(tmp_path / "stacked"), engine="stacked")  # one stack of eight
    assert [(r["status"], r.get("diverged_at_step")) for r in stacked] == [("ok", None)] * 4 + [
        ("blow-up", 20), ("diverged", 17), ("blow-up", 20), ("diverged", 13)]
    assert comparable_rows(stacked, tmp_path / "stacked") == comparable_rows(alone, tmp_path / "alone")
    assert folder_files(tmp_path / "stacked") == folder_files(tmp_path / "alone")


KILL_ARGS = ("sweep", "--lrs", "1e-3,1e4", "--targets", "eps,v", "--seeds", "0,1", "--dataset", "gmm2d", "--T", "40",
             "--steps", "600", "--batch-size", "32", "--hidden", "16", "--depth", "1", "--check-every", "100",
             "--quality-n", "64", "--quality-steps", "10", "--workers", "2", "--quiet")  # two stacks in two workers


def _sweep_process(out_dir, *extra):
    return subprocess.Popen([sys.executable, "cli.py", *KILL_ARGS, "--out", str(out_dir), *extra],
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _some_checkpoint_past(out_dir, step):
    for folder, _, names in os.walk(out_dir):
        if "checkpoint.npz" in names:
            try:
                if ckpt.load_arrays(os.path.join(folder, "checkpoint.npz"))["step"] >= step:
                    return True
            except ckpt.CheckpointError:
                pass
    return False


def test_a_stacked_sweep_killed_with_sigkill_resumes_to_the_files_of_an_uninterrupted_one(tmp_path):
    """`minidiff sweep` killed with SIGKILL mid-segment — its workers die with it — then `--resume`."""
    whole = _sweep_process(tmp_path / "whole")
    killed = _sweep_process(tmp_path / "killed")
    deadline = time.monotonic() + 300
    while not _some_checkpoint_past(tmp_path / "killed", 200):  # past a check and a snapshot, before the end
        assert killed.poll() is None and time.monotonic() < deadline, "the sweep ended before it could be killed"
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL and not (tmp_path / "killed" / "sweep.csv").exists()
    resumed = _sweep_process(tmp_path / "killed", "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    assert whole.wait(timeout=600) == 0, whole.stderr.read()
    assert folder_files(tmp_path / "killed") == folder_files(tmp_path / "whole")


def test_divergence_and_blow_up_and_invalid_cells_are_recorded(tmp_path, monkeypatch):
    original = run.train_step

    def diverging(state, *args, **kwargs):
        if state.step == 13:
            raise DivergenceError("step 14: non-finite loss (a test)", 14)
        return original(state, *args, **kwargs)

    monkeypatch.setattr(run, "train_step", diverging)  # in-process (workers=1), so the patch reaches the cells
    settings = sweep.SweepConfig(lrs=(1e-3,), targets=("x0",), **TINY)
    row = sweep.run_sweep(settings, str(tmp_path / "a"), engine="processes")[0]
    assert (row["status"], row["diverged"], row["diverged_at_step"], row["last_good_step"]) == ("diverged", 1, 14, 10)
    assert row.get("energy_distance") is None and "non-finite loss" in row["reason"]
    monkeypatch.setattr(run, "train_step", original)
    blowing = sweep.SweepConfig(lrs=(1e-3,), targets=("x0",), blowup_factor=0.5, **TINY)  # any loss "blows up"
    row = sweep.run_sweep(blowing, str(tmp_path / "b"))[0]
    assert (row["status"], row["diverged"], row["last_good_step"]) == ("blow-up", 1, None)
    invalid = sweep.SweepConfig(lrs=(1e-3,), targets=("eps",), **{**TINY, "base": {**BASE, "zero_terminal_snr": True}})
    row = sweep.run_sweep(invalid, str(tmp_path / "c"))[0]
    assert row["status"] == "invalid" and "zero terminal SNR" in row["reason"]


def test_divergence_table_counts_valid_cells_only():
    rows = [dict(target="eps", lr=0.1, diverged=1, status="diverged"), dict(target="eps", lr=0.1, diverged=0,
            status="ok"), dict(target="x0", lr=0.01, diverged=0, status="ok"),
            dict(target="x0", lr=0.1, diverged=None, status="invalid")]
    targets, lrs, rate, count = tables.divergence_table(rows)
    assert targets == ["eps", "x0"] and lrs == [0.01, 0.1]
    np.testing.assert_array_equal(count, [[0, 2], [1, 0]])
    assert rate[0, 1] == 0.5 and rate[1, 0] == 0 and np.isnan(rate[0, 0]) and np.isnan(rate[1, 1])


def test_the_grid_is_every_combination_in_a_fixed_order():
    settings = sweep.SweepConfig(lrs=(1e-3, 1e-2), targets=("eps", "v"), schedules=("cosine", "linear"),
                                 weightings=("uniform", "min-snr"), seeds=(0, 1, 2), base=BASE)
    grid = sweep.cells(settings)
    assert len(grid) == 2 * 2 * 2 * 2 * 3 and [i for i, _ in grid] == list(range(48))
    assert len({(c.lr, c.target, c.schedule, c.weighting, c.seed) for _, c in grid}) == 48
    assert all(c.T == BASE["T"] and c.hidden == BASE["hidden"] for _, c in grid)
    with pytest.raises(TypeError):
        sweep.cells(sweep.SweepConfig(base={"no_such_option": 1}))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_cells_checks_are_its_network_in_its_own_dtype_as_sample_and_elbo_see_it(dtype):
    config = TrainConfig(**{**BASE, "dtype": dtype, "target": "v"})
    checks = Checks(config, sweep.SweepConfig(**TINY))
    params = nn.init(np.random.default_rng(3), config.network(2), dtype=np.dtype(dtype))
    problem = make_problem(config)
    model = model_fn(params, problem, config)
    copy = np.random.default_rng()
    copy.bit_generator.state = checks.rng.bit_generator.state
    want = elbo(model, problem.schedule, checks.x_held[:64], target="v", rng=copy, stats=checks.stats)
    assert checks.bound(params)["elbo_nats"] == want.nats  # bit for bit: elbo on the same draws
    state = run.initial_state(config, 2, np.random.default_rng(3), np.random.default_rng(4))
    copy.bit_generator.state = checks.rng.bit_generator.state
    checks(state)
    x = sample(model_fn(state.ema, problem, config), problem.target, problem.schedule, (64, 2), copy, steps=10)
    want = metrics.energy_distance(x, checks.x_held[:64])
    assert np.isclose(checks.history[-1]["energy_distance"], want, rtol=1e-9, atol=1e-12)  # sample_stack: to rounding
