"""Starting or continuing a run in a folder: every check before anything is written.

    plan = prepare(Request(config, out, resume=False, force=False, given=frozenset()))
    loop.train(plan.config, plan.out, resume=plan.resume, …)

`prepare` refuses, with a UsageError and nothing written:
- options that do not go together: resume with force, a toy dataset and a data file both given;
- a fresh run into a path that is a file, cannot be created, or already holds a run (with force it is started
  again: the old run's files, RUN_FILES, are deleted and nothing else — the last thing `prepare` does);
- a resume of a folder without a run or with a damaged one, with options other than those a resume may change
  (`folder.RESUMABLE`) that differ from the stored run's, or of a run that has finished;
- a config that `train.validate` refuses, or a data file that cannot be read the way training will read it.

`given` names the options the user gave (TrainConfig's field names). On resume only these count as asked for: the
stored run's values stand for the others.
"""
import contextlib
import dataclasses
import os
import warnings

from minidiff import objective
from minidiff.accel import backend
from minidiff.errors import UsageError
from minidiff.runs import checkpoint, files, folder, loop
from minidiff.schedules import PriorTermWarning
from minidiff.train import TrainConfig, make_problem, validate

RUNS_FOLDER = "runs"  # where a run goes when no folder is given: runs/DATA-TARGET-SCHEDULE-sSEED
RUN_FILES = (checkpoint.CONFIG_FILE, checkpoint.CHECKPOINT_FILE, checkpoint.LOG_FILE, "samples.npy", loop.SAMPLES_PLOT,
             loop.QUALITY_FILE, checkpoint.SNAPSHOT_FILE)  # what a run writes (checkpoint.py): all that force deletes


@dataclasses.dataclass(frozen=True)
class Request:
    """A run to start in `out` (None: `default_out`), or with resume to continue there. config.randomness None: the
    device's own (`default_randomness`)."""
    config: TrainConfig = TrainConfig()
    out: str = None
    resume: bool = False
    force: bool = False
    given: frozenset = frozenset()  # the options the user gave (TrainConfig's field names)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What `prepare` found good: the config to train (on resume, the stored run's), its folder, and what the
    schedule warns about (a prior term that is not negligible), to be said once before training."""
    config: TrainConfig
    out: str
    resume: bool
    warnings: tuple = ()
    notes: tuple = ()  # what was measured for the run, to be said before training (σ_d of EDM's target)

    def describe(self):
        c = self.config
        return (f"training {c.target} on {data_name(c)} ({c.schedule}, T={c.T}, {c.weighting}) for {c.steps} steps "
                f"into {self.out}")


def default_randomness():
    """numpy on the cpu, counter on the gpu: how batch, t and noise are drawn when nobody says (backend.py)."""
    return "counter" if backend.device() == "gpu" else "numpy"


def data_name(config):
    """The toy dataset's name, or the data file's name without folder and extension."""
    return os.path.splitext(os.path.basename(config.data_file))[0] if config.data_file else config.dataset


def default_out(config):
    return os.path.join(RUNS_FOLDER, f"{data_name(config)}-{config.target}-{config.schedule}-s{config.seed}")


def prepare(request, delete=True):
    """The Plan of a Request, after every check (module docstring); a UsageError on the first that fails. With
    force (and delete), the old run's files in the folder are deleted, after every check has passed; `claim` does
    the same under the folder's lock."""
    config = request.config
    config = dataclasses.replace(config, randomness=config.randomness or default_randomness())
    out = request.out or default_out(config)
    _check_flags(request)
    if request.resume:
        config = _resumable(out, config, request.given)
    _check_config(config)
    config, notes = _measured(config, request)
    said = schedule_warnings(config)
    if not request.resume:
        _prepare_out(out, request.force)
        if delete:
            _delete_run(out)
    return Plan(config, out, request.resume, said, notes)


def _measured(config, request):
    """(config, notes): EDM's σ_d measured from the training points when the run needs one and it was not given
    (on resume the stored run's stands)."""
    if request.resume or "sigma_data" in request.given or not objective.needs_sigma_data(config):
        return config, ()
    x_train = loop.load_training_data(config, loop.generators(config.seed)[0])[0]
    config = objective.with_measured_sigma_data(config, x_train)
    return config, (f"sigma_data = {config.sigma_data:.6g}, the standard deviation of the training data",)


@contextlib.contextmanager
def claim(request):
    """prepare(request), and the run folder held by this process alone while the block runs (files.exclusive).

    The checks run first and write nothing; then the folder is made, locked, and only then, under the lock, does
    force delete the old run's files — so a second writer, refused with files.FolderBusy, has deleted nothing.
    """
    plan = prepare(request, delete=False)
    os.makedirs(plan.out, exist_ok=True)
    with files.exclusive(plan.out):
        if not plan.resume:
            _prepare_out(plan.out, request.force)  # again under the lock: the folder may have changed meanwhile
            _delete_run(plan.out)
        yield plan


def schedule_warnings(config):
    """What the run's schedule warns about (schedules.PriorTermWarning), as lines."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PriorTermWarning)
        make_problem(config)
    return tuple(str(w.message) for w in caught)


def _check_flags(request):
    """Options that cannot go together."""
    if request.resume and request.force:
        raise UsageError("--resume continues the run in --out and --force starts it again; give one of them")
    if {"dataset", "data_file"} <= request.given:
        raise UsageError("--dataset and --data both given; train on a toy dataset or on your file, not both")


def _check_config(config):
    """Every option and the data file: read, split and standardised exactly as training will (DataError if not)."""
    validate(config)
    if config.data_file:
        loop.load_training_data(config, loop.generators(config.seed)[0])


def _prepare_out(out, force):
    """Refuse an out that is a file, cannot be created, or already holds a run (unless force); with force, refuse a
    folder that holds anything but a run's files (force deletes only what a run wrote)."""
    files.check_output_folder(out)
    existing = [f for f in RUN_FILES if os.path.exists(os.path.join(out, f))]
    if existing and not force:
        raise UsageError(f"run folder {out!r} already holds a run; use --force to overwrite it or --resume to "
                         f"continue it")
    others = sorted(f for f in os.listdir(out) if f not in RUN_FILES and not f.startswith(files.TEMPORARY_PREFIX)) \
        if force and os.path.isdir(out) else []
    if others:
        raise UsageError(f"--force deletes only a run's own files, and {out!r} holds others too "
                         f"({', '.join(others[:3])}{', …' if len(others) > 3 else ''}); choose another folder")


def _delete_run(out):
    """Delete the run files in out (what force starts again from); nothing else is touched."""
    for f in RUN_FILES:
        if os.path.exists(os.path.join(out, f)):
            os.remove(os.path.join(out, f))


def _resumable(out, config, given):
    """The stored config of the run in `out`, with the options that a resume may change taken from `config` where
    given; a UsageError for a folder without a run, a damaged run, other options, or a run that has finished."""
    stored, step = _stored_run(out)
    asked = {k: v for k, v in dataclasses.asdict(config).items() if k in given}
    changed = sorted(k for k, v in asked.items() if getattr(stored, k) != v and k not in folder.RESUMABLE)
    if changed:
        raise UsageError(f"--resume continues the stored run; these options differ from it: {', '.join(changed)} "
                         f"(only {', '.join(folder.RESUMABLE)} may change)")
    config = dataclasses.replace(stored, **{k: v for k, v in asked.items() if k in folder.RESUMABLE})
    if step > config.steps:
        raise UsageError(f"cannot resume {out!r}: its checkpoint is at step {step}, past --steps {config.steps}")
    if step == config.steps and os.path.exists(os.path.join(out, loop.QUALITY_FILE)):
        raise UsageError(f"the run in {out!r} has finished ({step} steps); give a larger --steps to train on, or "
                         f"start again with --force instead of --resume")
    return config


def _stored_run(out):
    """(stored config, step of its checkpoint: 0 before the first was saved) of the run in `out`; a UsageError for a
    folder without a run or a damaged one."""
    if not os.path.isfile(os.path.join(out, checkpoint.CONFIG_FILE)):
        raise UsageError(f"cannot resume {out!r}: it has no {checkpoint.CONFIG_FILE}, so no run to continue; start "
                         f"the run without --resume")
    try:
        stored, network, _ = folder.load_config(out)
        has_checkpoint = os.path.exists(os.path.join(out, checkpoint.CHECKPOINT_FILE))  # not before step 0 was saved
        return stored, folder.load_checkpoint(out, stored, network)[0].step if has_checkpoint else 0
    except checkpoint.CheckpointError as err:
        raise UsageError(f"cannot resume {out!r}: {err}") from None
