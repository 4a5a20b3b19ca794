"""Stability sweeps: the rows a grid writes, divergence recorded as such, and the table the heat map reads."""
import csv
import json
import os

import numpy as np
import pytest

from minidiff.runs import loop as run
from minidiff.lab.diagnostics import sweep, tables
from minidiff.train import DivergenceError

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


def test_divergence_and_blow_up_and_invalid_cells_are_recorded(tmp_path, monkeypatch):
    original = run.train_step

    def diverging(state, *args, **kwargs):
        if state.step == 13:
            raise DivergenceError("step 14: non-finite loss (a test)", 14)
        return original(state, *args, **kwargs)

    monkeypatch.setattr(run, "train_step", diverging)  # in-process (workers=1), so the patch reaches the cells
    settings = sweep.SweepConfig(lrs=(1e-3,), targets=("x0",), **TINY)
    row = sweep.run_sweep(settings, str(tmp_path / "a"))[0]
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
