"""The two exceptions the user hears of: a mistake of theirs (UsageError, exit 2) and a failure of the work (RunError,
exit 1).

Every check that speaks to the user (a name that is not one of the allowed ones, a value out of range, a file or a
run folder that cannot be used) raises `UsageError`, or a subclass named after the module that found the mistake
(train.ConfigError, schedules.ScheduleError, runs.datafile.DataError, runs.checkpoint.CheckpointError,
lab.evaluate.EvaluationError, accel.backend.DeviceError). Its message is one line that names what was wrong and
what is allowed. The command line turns every one of them into its usage error, in one place
(`minidiff/cli/__init__.py`): the message on one `Error:` line, exit status 2.

`option`, when given, names the one option whose value is wrong ('--steps'), so that the command line can say
which; without it the message speaks for itself (options that do not go together, a run folder).

A failure of the work itself — training that diverged, a solver that could not finish, results that are not
finite — is a `RunError` (train.DivergenceError, likelihood.SolverError, …): one line, exit status 1, and nothing
that looks complete is written.
"""
import math


class UsageError(ValueError):
    """A bad option, value, file or run folder: nothing was done; the CLI exits 2 with its one-line message."""

    def __init__(self, message, option=None):
        super().__init__(message)
        self.option = option


def check_number(value, option, low=0.0, low_open=True):
    """value, if it is a finite number above low (or at it, without low_open); a UsageError naming the option
    otherwise (click's float ranges let NaN and Inf through)."""
    if not (math.isfinite(value) and (value > low if low_open else value >= low)):
        raise UsageError(f"{value} is not a finite number {'>' if low_open else '>='} {low:g}", option=option)
    return value


class Interrupted(RuntimeError):
    """The user stopped the work (Ctrl-C or SIGTERM): the CLI says what was kept and exits 130."""


class RunError(RuntimeError):
    """The work failed (diverged, did not converge, gave NaN or Inf): the CLI exits 1 with its one-line message."""
