"""The commands' library entry points, without the command line: every check comes before any work, and each
refusal is one UsageError (naming its option where it is about one value)."""
import dataclasses
import os

import numpy as np
import pytest

from minidiff.errors import UsageError
from minidiff.lab import evaluate
from minidiff.lab.diagnostics import entry
from minidiff.lab.study import make
from minidiff.runs import checkpoint, folder, loop, sampling, start
from minidiff.sample import sample
from minidiff.train import TrainConfig, make_problem, model_fn

TINY = TrainConfig(dataset="gmm2d", target="v", T=20, hidden=8, depth=1, time_dim=8, n_train=64, batch_size=16,
                   steps=20, warmup_steps=2, log_every=5, checkpoint_every=5)


@pytest.fixture(scope="module")
def half_run(tmp_path_factory):
    """A run of 20 steps stopped after 10, its checkpoint at step 10."""
    out = str(tmp_path_factory.mktemp("runs") / "half")
    loop.train(TINY, out, stop_at=10)
    return out


def test_a_fresh_start_checks_everything_before_force_deletes_the_old_runs_files_and_refuses_others(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / checkpoint.CONFIG_FILE).write_text("{}")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="already holds a run"):
        start.prepare(start.Request(TINY, str(out)))
    with pytest.raises(UsageError, match="T must be >= 1"):
        start.prepare(start.Request(dataclasses.replace(TINY, T=0), str(out), force=True))
    assert sorted(p.name for p in out.iterdir()) == [checkpoint.CONFIG_FILE, "notes.txt"]  # a refusal deletes nothing
    with pytest.raises(UsageError, match="deletes only a run's own files"):  # force never deletes what it did not write
        start.prepare(start.Request(TINY, str(out), force=True))
    assert sorted(p.name for p in out.iterdir()) == [checkpoint.CONFIG_FILE, "notes.txt"]
    (out / "notes.txt").unlink()
    plan = start.prepare(start.Request(TINY, str(out), force=True))
    assert list(out.iterdir()) == [] and plan.out == str(out) and not plan.resume


def test_options_that_do_not_go_together_are_refused(tmp_path):
    with pytest.raises(UsageError, match="give one of them"):
        start.prepare(start.Request(TINY, str(tmp_path / "a"), resume=True, force=True))
    with pytest.raises(UsageError, match="not both"):
        start.prepare(start.Request(TINY, str(tmp_path / "b"), given=frozenset({"dataset", "data_file"})))
    assert list(tmp_path.iterdir()) == []


def test_the_default_folder_and_randomness():
    assert start.default_out(TINY) == os.path.join("runs", "gmm2d-v-cosine-s0")
    assert start.default_randomness() == "numpy"  # on the cpu: the run's generator (backend.py)


def test_a_resume_takes_from_the_request_only_the_resumable_options_given(half_run):
    asked = dataclasses.replace(TINY, steps=30, hidden=64)
    plan = start.prepare(start.Request(asked, half_run, resume=True, given=frozenset({"steps"})))
    assert plan.config == dataclasses.replace(TINY, steps=30) and plan.resume  # hidden: not given, the stored 8
    with pytest.raises(UsageError, match="differ from it: hidden"):
        start.prepare(start.Request(asked, half_run, resume=True, given=frozenset({"steps", "hidden"})))
    with pytest.raises(UsageError, match="past --steps 5"):
        start.prepare(start.Request(dataclasses.replace(TINY, steps=5), half_run, resume=True,
                                    given=frozenset({"steps"})))


def test_sample_run_draws_what_the_sampler_draws_from_the_runs_weights(half_run):
    samples = sampling.sample_run(sampling.SampleConfig(half_run, n=64, steps=5, seed=3, weights="raw"))
    config, network, _, state = folder.load_run(half_run)
    problem = make_problem(config)
    expected = sample(model_fn(state.params, problem, config), config.target, problem.schedule, (64, 2),
                      np.random.default_rng(3), steps=5)
    np.testing.assert_array_equal(samples.x, expected)
    assert samples.held is None and samples.title == "ddpm, 5 steps"
    with pytest.raises(UsageError) as refused:
        sampling.sample_run(sampling.SampleConfig(half_run, steps=config.T + 1))
    assert refused.value.option == "--steps" and str(refused.value) == f"at most T = {config.T} steps"


def test_the_diagnostics_refuse_before_any_work(tmp_path, half_run):
    with pytest.raises(UsageError) as refused:
        entry.landscape(entry.LandscapeConfig(runs=(half_run,), points=4, out=str(tmp_path / "l.json")))
    assert refused.value.option == "--points"
    with pytest.raises(UsageError) as refused:
        entry.gradvar(entry.GradvarConfig(dataset="gmm2d", T=4, buckets=5, out=str(tmp_path / "g.json")))
    assert refused.value.option == "--buckets"
    with pytest.raises(UsageError, match="cannot load run"):
        entry.gradvar(entry.GradvarConfig(runs=(str(tmp_path),), out=str(tmp_path / "g.json")))
    with pytest.raises(UsageError, match="must end in .json"):
        entry.data_and_plot(str(tmp_path / "g.csv"), None)
    assert entry.data_and_plot(str(tmp_path / "g.json"), None) == str(tmp_path / "g.png")
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_is_refused_before_its_folder_is_touched(tmp_path):
    (tmp_path / "sweep.json").write_text("{}")
    with pytest.raises(UsageError, match="already holds a sweep"):
        entry.sweep(entry.SweepRequest(out=str(tmp_path)))
    with pytest.raises(UsageError, match="T must be >= 1"):
        entry.sweep(entry.SweepRequest(T=0, out=str(tmp_path / "new")))
    assert [p.name for p in tmp_path.iterdir()] == ["sweep.json"]


def test_the_study_goes_to_the_docs_only_for_a_whole_full_set():
    assert make.study_path(make.FiguresConfig()) == make.STUDY_FILE
    for partial in (dict(quick=True), dict(names=("schedules",)), dict(out="elsewhere")):
        assert make.study_path(make.FiguresConfig(**partial)) is None
    with pytest.raises(UsageError) as refused:
        make.study_path(make.FiguresConfig(names=("no_such_figure",)))
    assert refused.value.option == "--only"


def test_an_elbo_request_is_checked_before_any_work(tmp_path, half_run):
    with pytest.raises(UsageError, match="give a RUN folder, or --oracle"):
        evaluate.setup_of(evaluate.ElboConfig())
    with pytest.raises(UsageError) as refused:
        evaluate.setup_of(evaluate.ElboConfig(oracle=True, t_sampling="uniform", plot=str(tmp_path / "l.png")))
    assert refused.value.option == "--plot"
    with pytest.raises(UsageError, match="--schedule come from the run"):
        evaluate.setup_of(evaluate.ElboConfig(run_dir=half_run, schedule="linear"))
