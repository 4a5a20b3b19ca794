"""What every command group shares: options whose defaults are the library's, comma-separated lists that the
library checks, which options the user typed, the device option, the progress bar, and printing lines."""
import dataclasses
import sys

import click

from minidiff.errors import UsageError

from minidiff import schedules, targets
from minidiff.accel import backend
from minidiff.train import TrainConfig


def default_of(config, name):
    """The default of the field `name` of the dataclass `config`."""
    return {f.name: f.default for f in dataclasses.fields(config)}[name]


def option(name, help, config=TrainConfig, **kwargs):
    """A click option whose default is the library config's field of that name (TrainConfig's unless `config`
    says), so that the library and the CLI never disagree."""
    field = name.split("/")[0].lstrip("-").replace("-", "_")
    kwargs.setdefault("default", default_of(config, field))
    return click.option(name, field, help=help, show_default=True, **kwargs)


def list_option(name, help, config, parse=str, check=None):
    """A comma-separated list option, its default the library config's: parsed, and each item checked by `check`
    (a library check), while the options are read; a bad item is a usage error naming the option."""
    default = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default_of(config, name.lstrip("-")))

    def callback(ctx, param, value):
        items = [v.strip() for v in value.split(",") if v.strip()]
        if not items:
            raise click.BadParameter("give at least one value, separated by commas")
        try:
            return tuple(check(parse(v)) if check else parse(v) for v in items)
        except UsageError as err:  # the library check's
            raise click.BadParameter(str(err)) from None
        except ValueError as err:  # parse's: float('x'), int('1.5')
            raise click.BadParameter(f"each value must be a {_kind(parse)} ({err})") from None
    return click.option(name, default=default, show_default=True, help=help, callback=callback)


def _kind(parse):
    return {int: "whole number", float: "number"}.get(parse, "name")


def weighting_name(name):
    """`name`, if targets.parse_weighting reads it."""
    targets.parse_weighting(name)
    return name


schedule_name, target_name = schedules.check_name, targets.canonical_target


def given_options():
    """The names of the options that were typed on the command line (the others hold their defaults)."""
    ctx = click.get_current_context()
    return frozenset(k for k in ctx.params if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE)


def _use_device(ctx, param, value):
    """--device: make the backend use it while the options are read; a usage error if it cannot be used."""
    try:
        backend.use_device(value)
    except backend.DeviceError as err:  # while the options are read: click names the option and its variable
        raise click.BadParameter(str(err)) from None
    return backend.device()


device_option = click.option("--device", envvar=backend.DEVICE_VARIABLE, show_envvar=True, default="cpu",
                             show_default=True, callback=_use_device, expose_value=False,
                             help="where the arrays live: cpu (NumPy) or gpu (CuPy)")


def echo_lines(lines, written=()):
    """Print a table's lines, then the files written (if any)."""
    for line in lines:
        click.echo(line)
    if written:
        click.echo(f"wrote {', '.join(written)}")


def progress_bar(quiet):
    """The library's bar factory (`minidiff/runs/progress.py`) drawn with click on stderr, or None with --quiet."""
    if quiet:
        return None

    def bar(length, label, show=None):
        return _Bar(click.progressbar(length=length, label=label, show_pos=True, width=24, item_show_func=show,
                                      file=sys.stderr))
    return bar


class _Bar:
    """click's progress bar with the library's update(n, item) (click's own takes the item as current_item)."""

    def __init__(self, bar):
        self._bar = bar

    def __enter__(self):
        self._bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self._bar.__exit__(*exc)

    def update(self, n, item=None):
        self._bar.update(n, item)
