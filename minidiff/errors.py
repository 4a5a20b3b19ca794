"""The one exception of a user's mistake: a bad option, value, file or run folder, found before any work.

Every check that speaks to the user (a name that is not one of the allowed ones, a value out of range, a file or a
run folder that cannot be used) raises `UsageError`, or a subclass named after the module that found the mistake
(train.ConfigError, schedules.ScheduleError, runs.datafile.DataError, runs.checkpoint.CheckpointError,
lab.evaluate.EvaluationError, accel.backend.DeviceError). Its message is one line that names what was wrong and
what is allowed. The command line turns every one of them into its usage error, in one place
(`minidiff/cli/__init__.py`): the message on one `Error:` line, exit status 2.

`option`, when given, names the one option whose value is wrong ('--steps'), so that the command line can say
which; without it the message speaks for itself (options that do not go together, a run folder).
"""


class UsageError(ValueError):
    """A bad option, value, file or run folder: nothing was done; the CLI exits 2 with its one-line message."""

    def __init__(self, message, option=None):
        super().__init__(message)
        self.option = option
