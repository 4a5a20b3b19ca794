"""`minidiff schedules` and `minidiff datasets`: the library's tables (lab/reports.py), and a figure of each."""
import click

from minidiff.runs import files
from minidiff.schedules import REFERENCE_T
from minidiff.lab import figures, reports
from minidiff.cli.common import echo_lines


@click.command()
@click.option("--T", "T", type=click.IntRange(min=1), default=REFERENCE_T, show_default=True, help="diffusion steps")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="also save ᾱ, SNR, log-SNR plot (.png/.svg)")
@click.option("--snr-shift", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="shift every schedule in log-SNR, λ → λ − 2 log S (SD3's time shift; 1: none)")
def schedules(T, plot, snr_shift):
    """Table of every noise schedule at T steps: ᾱ at both ends, SNR and log-SNR range, prior term."""
    if plot is not None:
        files.check_output_file(plot, files.FIGURE_EXTENSIONS)
    echo_lines(reports.schedules_table(T, snr_shift))
    if plot is not None:
        figures.save(figures.schedules_figure(T, shift=snr_shift), plot)
        click.echo(f"wrote {plot}")


@click.command()
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="save a preview of each (.png/.svg)")
def datasets(plot):
    """List the toy datasets (and those with an exact density)."""
    if plot is not None:
        files.check_output_file(plot, files.FIGURE_EXTENSIONS)
    echo_lines(reports.datasets_table())
    if plot is not None:
        figures.save(figures.datasets_figure(), plot)
        click.echo(f"wrote {plot}")


COMMANDS = (schedules, datasets)
