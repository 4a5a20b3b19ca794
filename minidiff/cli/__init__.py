"""The minidiff command line: `minidiff COMMAND --help` (or `python cli.py COMMAND --help`, `python -m minidiff`).

A thin layer over the library, one module per command group:
  info      schedules, datasets          the library's tables of its schedules and datasets
  train     train, sample                starting or continuing a run in a folder, drawing samples from one
  measure   elbo, gradvar, landscape     bounds and likelihoods, gradient noise, loss landscapes
  sweep     sweep                        a stability sweep
  figures   figures                      every figure of the project and docs/study.md
Each command reads its options into a library config, whose fields give the options their defaults, and calls
one library function; the library checks everything before any work is done, so nothing is written before the
options are known to be good. Its refusals are `minidiff.errors.UsageError`, which the group (`Group`) turns into
click's usage error for every command: the message on one line, exit status 2 (click's convention). The group also
gives every command the same ends: a failure of the work (`minidiff.errors.RunError`) or of the disk (an OSError:
full, read-only, gone) is one line and exit status 1; Ctrl-C or SIGTERM is one line and exit status 130.
"""
import os
import signal
import sys
import threading

import click

from minidiff.errors import Interrupted, RunError, UsageError
from minidiff.runs.loop import EXIT_INTERRUPTED
from minidiff.cli import figures, info, measure, sweep, train

VERSION = "0.1.0"
INTERNAL_ERROR = "internal error"  # what an unexpected exception is called: a bug, never the user's mistake
DEBUG_VARIABLE = "MINIDIFF_DEBUG"


class Group(click.Group):
    """The minidiff group: a library UsageError raised while a command reads its options or runs becomes click's
    usage error — the command's usage, then its message on one `Error:` line, exit status 2 — here and nowhere
    else."""

    def invoke(self, ctx):
        previous = signal.signal(signal.SIGTERM, _interrupt) if _main_thread() else None
        try:
            return super().invoke(ctx)
        except UsageError as err:
            raise _click_error(err, _command_context(self, ctx)) from None
        except RunError as err:
            raise click.ClickException(str(err)) from None
        except Interrupted as err:  # what was kept, and how to go on
            click.echo(str(err), err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        except BrokenPipeError:  # the reader went away (`minidiff schedules | head`): stop quietly, as Unix tools do
            _quiet_stdout()
            raise click.exceptions.Exit(1) from None
        except OSError as err:  # the disk: full, read-only, removed under us
            raise click.ClickException(f"cannot go on: {_os_message(err)}") from None
        except KeyboardInterrupt:
            click.echo("interrupted; nothing unfinished was written as if complete", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as err:  # a bug of minidiff's: one line for the user (MINIDIFF_DEBUG=1 shows the traceback)
            if os.environ.get(DEBUG_VARIABLE):
                raise
            raise click.ClickException(f"{INTERNAL_ERROR} ({type(err).__name__}: {err}); please report it, with the "
                                       f"command (run it with {DEBUG_VARIABLE}=1 for the traceback)") from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame):
    """SIGTERM, outside the training loop (which has its own, `runs.loop.stop_requests`): stop as Ctrl-C does."""
    raise KeyboardInterrupt


def _main_thread():
    return threading.current_thread() is threading.main_thread()


def _quiet_stdout():
    """Point stdout at /dev/null, so that Python's flush at exit does not report the closed pipe again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (a test's captured stream)
        pass


def _os_message(err):
    """'PATH: reason' of an OSError, in one line."""
    where = f"{err.filename}: " if getattr(err, "filename", None) else ""
    return f"{where}{err.strerror or err}"


def _click_error(err, ctx):
    """click's error for a library UsageError: 'Invalid value for OPTION: …' when it names its option."""
    if err.option is not None:
        return click.BadParameter(str(err), ctx=ctx, param_hint=err.option)
    return click.UsageError(str(err), ctx=ctx)


def _command_context(group, ctx):
    """A context of the command that failed (its own is closed by now): the usage line is that command's."""
    if ctx.invoked_subcommand is None:
        return ctx
    return click.Context(group.get_command(ctx, ctx.invoked_subcommand), info_name=ctx.invoked_subcommand, parent=ctx)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, prog_name="minidiff")
def main():
    """minidiff: a small, exact diffusion engine in NumPy with autograd gradients."""


for _group in (info, train, measure, sweep, figures):
    for _command in _group.COMMANDS:
        main.add_command(_command)


if __name__ == "__main__":
    main()
