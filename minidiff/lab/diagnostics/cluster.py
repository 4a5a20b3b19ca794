"""Sweeps that outgrow one machine: the sweep's stacks as tasks on an existing Dask cluster (`dask.distributed`).

    minidiff sweep … --engine dask --scheduler tcp://HOST:8786

This is the one module of minidiff that imports Dask, and only when the dask engine is chosen
(pip install 'minidiff[cluster]'). The cells are grouped into as many stacks as the cluster has worker threads
(`sweep.tasks`); each task trains its stack — or one cell that shares its shape with no other — in a temporary
folder on its worker and returns, by value, the rows, the checks and every file of its run folders. The client
writes the files into OUT/runs, with the worker's folder replaced by OUT in every path a row names. So the workers
need minidiff and its dependencies (and any --data-file at the same path), but no disk shared with the client.
Progress comes back through a Dask queue, as the workers go.

Resume: cells that finished before are read from OUT and not sent; a cell cut off in the middle starts again on
its worker (the same numbers: the run is reproducible from its config).
"""
import dataclasses
import os
import shutil
import tempfile
import uuid

from minidiff.errors import UsageError
from minidiff.runs import files
from minidiff.runs.progress import Batched
from minidiff.lab.diagnostics.cell import cell_name, finished, record, run_task

REPORT_EVERY = 0.5  # seconds between a worker's progress reports
CONNECT_TIMEOUT = "10s"  # how long the client tries to reach the scheduler


class ClusterError(UsageError):
    """The Dask engine cannot run: Dask is not installed, or the scheduler cannot be reached (one line)."""


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ClusterError("the dask engine needs dask.distributed; pip install 'minidiff[cluster]'") from None
    return distributed


def run_on_cluster(make_tasks, scheduler, tally):
    """Every cell's (row, checks), trained on the cluster at `scheduler` (an address, or a distributed Cluster).

    make_tasks(n) gives the sweep's cell.Tasks for n stacks; tally(steps, diverged) moves the progress bar."""
    distributed = _distributed()
    if scheduler is None:
        raise ClusterError("the dask engine needs the scheduler's address (--scheduler tcp://HOST:8786)")
    try:
        client = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as err:
        raise ClusterError(f"cannot reach the Dask scheduler at {scheduler}: {err}") from None
    with client:
        threads = max(sum(client.nthreads().values()), 1)
        done, remote = [], []
        for task in make_tasks(threads):
            left = tuple((i, c) for i, c in task.members if finished(_run_dir(task.out_dir, i, c)) is None)
            done += [finished(_run_dir(task.out_dir, i, c)) for i, c in task.members if (i, c) not in left]
            if left:
                remote.append(dataclasses.replace(task, members=left, resume=False))
        reports = distributed.Queue(f"minidiff-progress-{uuid.uuid4().hex}", client=client)
        futures = [client.submit(_on_worker, task, reports.name, pure=False) for task in remote]
        for future in _as_they_come(distributed, futures, reports, tally):
            rows, folder_files, worker_dir = future.result()
            done += _write_back(rows, folder_files, worker_dir, remote[futures.index(future)].out_dir)
    return done


def _as_they_come(distributed, futures, reports, tally):
    """The futures as they finish, passing the workers' progress reports on to tally meanwhile."""
    pending = list(futures)
    while pending:
        try:
            distributed.wait(pending, timeout=REPORT_EVERY, return_when="FIRST_COMPLETED")
        except TimeoutError:
            pass
        _drain(reports, tally)
        for future in [f for f in pending if f.done()]:
            pending.remove(future)
            yield future


def _drain(reports, tally):
    """Pass every progress report waiting in the queue on to tally."""
    for steps, diverged in reports.get(batch=True):
        tally(steps, diverged)


def _on_worker(task, queue_name):
    """On a worker: train the task in a temporary folder; (rows, {path: bytes} of its run folders, that folder)."""
    import distributed
    reports = distributed.Queue(queue_name)
    report = Batched(lambda steps, diverged: reports.put((steps, diverged)), REPORT_EVERY)
    worker_dir = tempfile.mkdtemp(prefix="minidiff-sweep-")
    try:
        task = dataclasses.replace(task, out_dir=worker_dir)
        rows = run_task(task, report)
        report.flush()
        return rows, _read_folder(os.path.join(worker_dir, "runs")), worker_dir
    finally:
        shutil.rmtree(worker_dir, ignore_errors=True)


def _read_folder(folder):
    """{path relative to folder: bytes} of every file under it."""
    found = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = f.read()
    return found


def _write_back(rows, folder_files, worker_dir, out_dir):
    """Write the task's files into OUT/runs and give its rows the client's paths; cell.json is written again with
    them (the worker's copy names the worker's folder)."""
    for relative, data in folder_files.items():
        path = os.path.join(out_dir, "runs", relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        files.atomic_write(path, lambda f, data=data: f.write(data))
    fixed = []
    for row, history in rows:
        row = {k: v.replace(worker_dir, out_dir) if isinstance(v, str) else v for k, v in row.items()}
        record(row["run_dir"], row, history)
        fixed.append((row, history))
    return fixed


def _run_dir(out_dir, index, config):
    return os.path.join(out_dir, "runs", cell_name(index, config))
