"""The second edition's measurements and conclusions: the exact KL against closed forms, the stratified bound against
the exact sum, the prefetched stacks against runs alone, and the ranking computed from the stored cells."""
import copy
import dataclasses

import numpy as np
import pytest

from minidiff.mixture import GaussianMixture, oracle
from minidiff.schedules import make_schedule
from minidiff.lab import study
from minidiff.lab.study import formulations as forms, ranking, ranks


def _gaussian(mean, cov):
    return GaussianMixture(np.ones(1), np.array([mean], float), np.array([cov], float))


def _gaussian_kl(m0, S0, m1, S1):
    """KL(N(m0, S0) ‖ N(m1, S1)) in closed form."""
    d, inv = len(m0), np.linalg.inv(S1)
    diff = np.asarray(m1) - np.asarray(m0)
    return 0.5 * (np.trace(inv @ S0) + diff @ inv @ diff - d + np.log(np.linalg.det(S1) / np.linalg.det(S0)))


# --- KL(data ‖ model) ----------------------------------------------------------------------------------------------

def test_kl_of_the_oracle_itself_is_zero_within_its_error():
    mixture = _gaussian([0.5, -1.0, 0.0], np.diag([1.0, 0.5, 2.0]))
    schedule = make_schedule("cosine", 1000)
    x = mixture.sample(400, np.random.default_rng(0))
    kl, stderr = ranking.kl_to_data(mixture, oracle(mixture, schedule, "v"), schedule, "v", x, probes=0, tol=1e-6)
    # the model's density is the data's blurred by N(0, tan² φ_0 I) at the data end: a KL of order D tan² φ_0 ≈ 1e-7
    assert abs(kl) < 1e-3 and stderr < 1e-3, (kl, stderr)


def test_kl_of_a_wrong_gaussian_matches_the_closed_form():
    m0, S0 = np.zeros(2), np.array([[1.0, 0.3], [0.3, 0.6]])
    m1, S1 = np.array([0.4, -0.2]), np.array([[1.5, 0.0], [0.0, 0.5]])
    data, model_mixture = _gaussian(m0, S0), _gaussian(m1, S1)
    schedule = make_schedule("linear", 1000)
    x = data.sample(4000, np.random.default_rng(1))
    kl, stderr = ranking.kl_to_data(data, oracle(model_mixture, schedule, "eps"), schedule, "eps", x, probes=0,
                                    tol=1e-6)
    exact = _gaussian_kl(m0, S0, m1, S1)
    assert kl > 0 and abs(kl - exact) < 4 * stderr + 2e-3, (kl, stderr, exact)


# --- the ranking, from the stored cells ----------------------------------------------------------------------------

def _data(scores):
    """A stored ranking: scores[formulation][dataset][metric] = per-seed values."""
    cells = []
    for name, by_dataset in scores.items():
        for dataset, by_metric in by_dataset.items():
            for seed in range(len(next(iter(by_metric.values())))):
                cell = dict(group="rank", dataset=dataset, formulation=name, lr=1e-3, seed=seed, status="ok")
                cell.update({m: v[seed] for m, v in by_metric.items()})
                cells.append(cell)
    return dict(cells=cells, ranked=list(scores), datasets=["a", "b"], exact_dataset="b")


def _scores():
    metrics = {"ed_full": [1.0, 1.2], "ed_fast": [2.0, 2.0], "bits_per_dim": [3.0, 3.1], "b_simple": [5.0, 6.0]}
    worse = {m: [v * 2 for v in values] for m, values in metrics.items()}
    return {"good": {"a": metrics, "b": dict(metrics, kl=[0.1, 0.2])},
            "bad": {"a": worse, "b": dict(worse, kl=[0.3, 0.5])},
            "mixed": {"a": dict(worse, ed_full=[0.5, 0.6]), "b": dict(worse, kl=[0.05, 0.05])}}


def test_ranking_is_computed_from_the_stored_numbers():
    scores = _scores()
    rows = ranks.ranking(_data(scores))
    assert [r["formulation"] for r in rows] == ["good", "mixed", "bad"]
    assert len(rows[0]["ranks"]) == 9  # 4 metrics on a, and 5 (with KL) on b
    # mixed: first in (a, ed_full) and (b, kl), tied with bad elsewhere (both double good's) → 2.5 in the other 7
    assert rows[1]["mean_rank"] == pytest.approx((1 + 1 + 7 * 2.5) / 9)
    changed = copy.deepcopy(scores)
    for dataset in ("a", "b"):
        for metric in changed["mixed"][dataset]:
            changed["mixed"][dataset][metric] = [v / 10 for v in changed["mixed"][dataset][metric]]
    assert ranks.ranking(_data(changed))[0]["formulation"] == "mixed"


def test_a_diverged_seed_ranks_its_formulation_last_there():
    data = _data(_scores())
    for cell in data["cells"]:
        if cell["formulation"] == "good" and cell["dataset"] == "a" and cell["seed"] == 1:
            cell["status"] = "diverged"
    rows = {r["formulation"]: r for r in ranks.ranking(data)}
    assert all(rows["good"]["ranks"][("a", m)] == 3 for m in ("ed_full", "ed_fast", "bits_per_dim", "b_simple"))


def test_interval_is_students_t():
    mean, lo, hi = ranks.summary([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.776 * np.std([1, 2, 3, 4, 5], ddof=1) / np.sqrt(5)  # t_{0.975, 4} = 2.776
    assert (mean, lo, hi) == pytest.approx((3.0, 3.0 - half, 3.0 + half))
    assert ranks.summary([1.0, None])[0] == float("inf")


def test_places_share_ties_and_put_missing_last():
    assert ranks.places([3.0, 1.0, 3.0, None, float("nan")]) == [2.5, 1.0, 2.5, 4.5, 4.5]


def test_collapse_is_the_first_check_far_above_the_best_before():
    cell = dict(status="ok", checks=[dict(step=250, ed_fast=1.0), dict(step=500, ed_fast=0.5),
                                     dict(step=750, ed_fast=1.4), dict(step=1000, ed_fast=9.0)])
    assert ranks.collapse_step(cell, bar=0.1) == 1000  # 1.4 < 3 × 0.5; 9.0 > 3 × 0.5
    assert ranks.collapse_step(cell, bar=10.0) is None  # never above the bar
    assert ranks.collapse_step(dict(status="diverged", diverged_at_step=42, checks=[]), bar=1.0) == 42


# --- the pipeline, at a toy budget -----------------------------------------------------------------------------------

def test_a_stack_of_cells_trains_and_is_measured(tmp_path):
    budget = dataclasses.replace(study.QUICK, rank_steps=8, rank_hidden=8, rank_quality_n=40, rank_check_n=20,
                                 rank_kl_n=8)
    picks = [forms.FORMULATIONS[1], forms.FORMULATIONS[9], forms.FORMULATIONS[17]]  # eps, v, flow
    cells = tuple(dict(index=i, group="rank", dataset="smooth8x8", formulation=f.name, lr=1e-3, seed=0)
                  for i, f in enumerate(picks))
    configs = tuple(ranking.config_of(budget, "smooth8x8", f, 1e-3, 0) for f in picks)
    (tmp_path / "runs").mkdir()
    rows = ranking.run_task(ranking.Task(cells, configs, str(tmp_path), budget, 0))
    for row in rows:
        assert row["status"] == "ok"
        assert [c["step"] for c in row["checks"]] == [2, 4, 6, 8]
        for key in ("ed_full", "ed_fast", "kl", "b_simple", "bits_per_dim"):
            assert np.isfinite(row[key]), (row["formulation"], key)
        assert row["kl"] > 0  # 8 steps of training are far from the data
    again = ranking.run_task(ranking.Task(cells, configs, str(tmp_path / "again"), budget, 0))
    assert again == rows  # every number from the seed alone


def test_stratified_bound_agrees_with_the_exact_sum():
    from types import SimpleNamespace
    from minidiff import data as datasets
    from minidiff.elbo import elbo
    mixture = datasets.get_mixture("gmm2d")
    schedule = make_schedule("cosine", 1000)
    model = oracle(mixture, schedule, "v")
    x = mixture.sample(300, np.random.default_rng(4))
    exact = elbo(model, schedule, x, target="v", rng=np.random.default_rng(5), t_sampling="exact").bits_per_dim
    problem = SimpleNamespace(schedule=schedule, target="v")
    draws = np.array([ranking.bound_bits(model, problem, x, np.random.default_rng(100 + i)) for i in range(20)])
    # the exact sum has its own draw of x_t per term: both estimate the same bound, each with noise
    assert abs(draws.mean() - exact) < 4 * draws.std(ddof=1) / np.sqrt(len(draws)) + 0.02, (draws.mean(), exact)
    assert draws.std() < 0.5  # bits per dimension at 300 points: a mean over seeds separates ~0.5 bit/dim


def test_prefetched_stacks_leave_the_files_of_runs_trained_alone(tmp_path):
    import filecmp
    import os
    from minidiff.lab.study import trained
    budget = dataclasses.replace(study.QUICK, train_steps=40, snapshot_every=20)
    alone = study.Context(budget, 0, str(tmp_path / "alone"))
    together = study.Context(budget, 0, str(tmp_path / "together"))
    jobs = [(f"moons-{t}", trained.run_config(alone, "moons", t), True) for t in ("eps", "flow", "edm")]
    jobs.append(("gmm2d-v", trained.run_config(alone, "gmm2d", "v"), False))
    for name, config, snapshots in jobs:
        trained.trained(alone, name, config, snapshots)
    trained.prefetch(together, jobs)
    for name, _, _ in jobs:
        a, b = tmp_path / "alone" / name, tmp_path / "together" / name
        names = sorted(os.listdir(a))
        assert names == sorted(os.listdir(b)), name
        match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
        assert not mismatch and not errors, (name, mismatch, errors)


def test_the_committed_ranking_follows_its_numbers():
    """The committed figures/data: moving the last formulation's numbers to the best of each column puts it first."""
    import json
    import os
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "figures", "data",
                        "formulation_ranking.json")
    data = json.load(open(path, encoding="utf-8"))
    rows = ranks.ranking(data)
    last = rows[-1]["formulation"]
    changed = copy.deepcopy(data)
    for dataset, metric in ranks.metric_columns(data):
        best = min(r["means"][(dataset, metric)] for r in rows)
        for cell in ranks.cells(changed, "rank", dataset, last):
            cell["status"], cell[metric] = "ok", best / 2 if best > 0 else best - 1
    assert ranks.ranking(changed)[0]["formulation"] == last != rows[0]["formulation"]


def test_figures_on_a_gpu_without_cupy_is_refused_before_any_work(tmp_path, monkeypatch):
    import sys
    from click.testing import CliRunner
    import cli
    from minidiff.accel import backend
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError
    try:
        result = CliRunner().invoke(cli.main, ["figures", "--device", "gpu", "--out", str(tmp_path / "out")])
    finally:
        backend.use_device("cpu")
    assert result.exit_code == 2 and "--device" in result.output, result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["formulation_ranking", "lr_stability", "schedule_kl"])
def test_the_second_editions_figures_draw_from_the_committed_data(tmp_path, name):
    import json
    import os
    from minidiff.lab import figures
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    data = json.load(open(study.data_path(os.path.join(root, "figures"), name), encoding="utf-8"))
    figures.save(study._entries()[name].draw(data), str(tmp_path / f"{name}.png"))
    png = (tmp_path / f"{name}.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
