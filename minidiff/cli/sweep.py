"""`minidiff sweep`: a stability sweep, learning rate × target × schedule × weighting × seed.

The options are the fields of the library's request (lab/diagnostics/entry.py: SweepRequest), which gives them
their defaults and checks them, and the folder, before the first cell runs.
"""
import click

from minidiff.lab.diagnostics import entry
from minidiff.lab.diagnostics.entry import SweepRequest
from minidiff.lab.diagnostics.sweep import ENGINES
from minidiff.cli.common import (device_option, echo_lines, list_option, option, progress_bar, schedule_name,
                                 target_name, weighting_name)


@click.command()
@list_option("--lrs", "peak learning rates", SweepRequest, parse=float, check=entry.check_lr)
@list_option("--targets", "targets", SweepRequest, check=target_name)
@list_option("--schedules", "schedules", SweepRequest, check=schedule_name)
@list_option("--weightings", "loss weightings", SweepRequest, check=weighting_name)
@list_option("--seeds", "seeds", SweepRequest, parse=int)
@option("--dataset", "toy dataset", SweepRequest)
@option("--T", "diffusion steps", SweepRequest, type=click.IntRange(min=1))
@option("--steps", "training steps per run", SweepRequest, type=click.IntRange(min=1))
@option("--batch-size", None, SweepRequest, type=click.IntRange(min=1))
@option("--hidden", "width of the MLP", SweepRequest, type=click.IntRange(min=1))
@option("--depth", "hidden layers", SweepRequest, type=click.IntRange(min=1))
@option("--check-every", "steps between checks (and parameter snapshots)", SweepRequest, type=click.IntRange(min=1))
@option("--quality-n", "samples and held-out points of each quality check", SweepRequest, type=click.IntRange(min=2))
@option("--quality-steps", "sampling steps of each quality check (ancestral, respaced)", SweepRequest,
        type=click.IntRange(min=1))
@click.option("--quality-bar", type=click.FloatRange(min=0, min_open=True), default=None,
              help="energy distance that counts as reached [default: 3 x the data-vs-data floor]")
@option("--workers", "parallel processes (the stacked engine: one stack each)", SweepRequest,
        type=click.IntRange(min=1))
@option("--engine", "stacked: cells that share a network trained as stacks; processes: one cell per process; "
        "dask: stacks on a Dask cluster (--scheduler)", SweepRequest, type=click.Choice(ENGINES))
@option("--scheduler", "the Dask scheduler's address, e.g. tcp://HOST:8786 (--engine dask)", SweepRequest,
        metavar="ADDRESS")
@option("--out", "sweep folder", SweepRequest, type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="overwrite an existing sweep folder")
@click.option("--resume", is_flag=True, help="continue the sweep in --out (after a kill) with the same options")
@click.option("--quiet", is_flag=True, help="no progress bar")
@device_option
def sweep(quiet, **options):
    """Stability sweep: learning rate × target × schedule × weighting × seed, as stacks of runs in parallel processes.

    Records divergence, steps to the quality bar, final energy distance (with its floor) and the ELBO of every
    cell in OUT/sweep.csv and OUT/sweep.json, draws OUT/sweep.png, and keeps each run (with its parameter
    snapshots, for `minidiff landscape` and `minidiff gradvar`) in OUT/runs. Every engine gives the same rows.
    """
    echo_lines(*entry.sweep(SweepRequest(**options), progress=progress_bar(quiet), echo=click.echo))


COMMANDS = (sweep,)
