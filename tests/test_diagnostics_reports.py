"""What `gradvar`, `landscape` and `sweep` write and print (diagnostics/reports.py), and the checks applied.py makes
for them: each table's numbers read back against the records, each file against what it must hold."""
import json
import os

import pytest

from minidiff.lab import reports
from minidiff.lab.diagnostics import applied, trajectory
from minidiff.train import ConfigError, TrainConfig

PRINTED = 5e-4  # relative: the tables print four significant digits
TINY = dict(dataset="gmm2d", T=20, time_dim=8, n_train=128, batch_size=16, steps=10, warmup_steps=2, log_every=5,
            checkpoint_every=5)


def test_no_measurable_combination_is_a_config_error_with_the_first_reason():
    with pytest.raises(ConfigError, match="no combination can be measured: at T=10 the default beta_end"):
        applied.check_measurable("moons", ["linear"], ["eps"], ["uniform"], T=10)
    assert applied.check_measurable("moons", ["linear", "cosine"], ["eps"], ["uniform"], T=10) is None


def test_gradvar_files_and_table(tmp_path):
    # at T = 10 the linear schedule is undefined: its record is skipped, with the reason, and drawn nowhere
    records = applied.gradvar_at_init("gmm2d", ["cosine", "linear"], ["eps"], ["uniform"], T=10, n=32, n_buckets=2,
                                      network=dict(hidden=8, depth=1))
    scales = applied.target_study("gmm2d", ["cosine"], ["eps"], ["uniform"], T=10, n=64, n_times=3)
    out, plot = str(tmp_path / "g.json"), str(tmp_path / "g.png")
    written = reports.write_gradvar(records, out, plot, {"n": 32}, targets=scales)
    assert written == [out, str(tmp_path / "g.csv"), plot, str(tmp_path / "g_targets.png")]
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in written)
    saved = json.loads((tmp_path / "g.json").read_text())
    assert saved["settings"] == {"n": 32} and set(saved["targets"]) == {"scales", "floors"}
    assert len((tmp_path / "g.csv").read_text().splitlines()) == 1 + 1 + 2  # header, then 'all' and two buckets
    header, measured, skipped = reports.gradvar_table(records)
    assert header.split()[-3:] == ["Σ", "|G|²", "B_simple"]
    numbers = [float(v) for v in measured.split()[-3:]]
    truth = [records[0]["all"][k] for k in ("trace_cov", "grad_sq", "b_simple")]
    assert numbers == pytest.approx(truth, rel=PRINTED)
    assert skipped.endswith(f"skipped: {records[1]['skipped']}")


@pytest.fixture(scope="module")
def snapshot_runs(tmp_path_factory):
    """Two tiny runs with parameter snapshots: the same network, and one of another width."""
    root = tmp_path_factory.mktemp("runs")
    for name, hidden in (("a", 8), ("b", 8), ("wide", 12)):
        trajectory.train_with_snapshots(TrainConfig(target="v", hidden=hidden, depth=1, **TINY), str(root / name), 5,
                                        evaluate=False, echo=lambda *_: None)
    return [str(root / name) for name in ("a", "b", "wide")]


def test_same_network_compares_the_parameter_shapes(snapshot_runs):
    a, b, wide = snapshot_runs
    assert applied.same_network(a, b) and not applied.same_network(a, wide)


def test_landscape_files_and_table(snapshot_runs, tmp_path):
    a, b, _ = snapshot_runs
    options = dict(span=0.5, points=5, grid=3, n=16, seed=1)
    results = applied.landscapes_of_runs([a, b], **options)
    assert [r["run"] for r in results] == [a, b]
    assert results[1]["curvature_d"] == applied.landscape_of_run(b, **options)["curvature_d"]
    out, plot = str(tmp_path / "l.json"), str(tmp_path / "l.svg")
    written = reports.write_landscape(results, None, out, plot)
    assert written == [out, str(tmp_path / "l.csv"), plot, str(tmp_path / "l_trajectory.svg")]
    assert (tmp_path / "l.csv").read_text().splitlines()[0] == ",".join(reports.LANDSCAPE_COLUMNS)
    rows = reports.landscape_rows(results)
    assert [rows[0]["pca_ratio_1"], rows[0]["pca_ratio_2"]] == list(results[0]["pca"]["ratios"][:2])
    line = reports.landscape_table(results)[1].split()
    assert line[0] == "a" and float(line[2]) == pytest.approx(results[0]["loss"], rel=PRINTED)
    assert float(line[5].rstrip(",")) == pytest.approx(rows[0]["pca_ratio_1"], abs=0.005)


def test_sweep_table_marks_what_was_not_reached():
    rows = [dict(lr=0.001, target="v", schedule="cosine", weighting="uniform", seed=0, status="ok", steps_to_bar=250,
                 energy_distance=0.0125, elbo_bits_per_dim=2.5),
            dict(lr=1.0, target="eps", schedule="cosine", weighting="uniform", seed=1, status="diverged",
                 steps_to_bar=None, energy_distance=None, elbo_bits_per_dim=None)]
    _, ok, diverged = reports.sweep_table(rows)
    assert ok.split()[-3:] == ["250", "0.0125", "2.5"] and diverged.split()[-4:] == ["diverged", "-", "-", "-"]
