"""The Dask engine: a sweep on a Dask cluster gives the rows and files of the process engine.

The cluster is a `distributed.LocalCluster` started by the test itself (one worker with two threads, in this process),
so the test needs dask.distributed (the `cluster` extra, also in `test`) but no machine beyond this one. The
reference is the process engine: each cell trained alone, in this process.
"""
import pytest

from minidiff.lab.diagnostics import cluster, sweep
from test_diagnostics_sweep import ENGINE_GRID, comparable_rows, folder_files

distributed = pytest.importorskip("distributed")


def test_the_dask_engine_gives_the_rows_and_files_of_the_process_engine(tmp_path):
    settings = sweep.SweepConfig(**ENGINE_GRID)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as local:
        on_dask = sweep.run_sweep(settings, str(tmp_path / "dask"), engine="dask", scheduler=local.scheduler_address)
    alone = sweep.run_sweep(settings, str(tmp_path / "alone"), engine="processes")
    assert {r["status"] for r in on_dask} == {"ok", "blow-up", "diverged"}
    assert comparable_rows(on_dask, tmp_path / "dask") == comparable_rows(alone, tmp_path / "alone")
    assert folder_files(tmp_path / "dask") == folder_files(tmp_path / "alone")  # written back by the client


def test_a_scheduler_that_cannot_be_reached_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", "1s")
    settings = sweep.SweepConfig(**{**ENGINE_GRID, "lrs": (1e-3,), "seeds": (0,)})
    with pytest.raises(cluster.ClusterError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:1"):
        sweep.run_sweep(settings, str(tmp_path), engine="dask", scheduler="tcp://127.0.0.1:1")
    with pytest.raises(cluster.ClusterError, match="needs the scheduler's address"):
        sweep.run_sweep(settings, str(tmp_path), engine="dask")
