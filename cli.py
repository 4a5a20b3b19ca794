"""The minidiff command line: `minidiff COMMAND --help` (or `python cli.py COMMAND --help`).

Each command parses and validates its options, then calls one library function; nothing is written before the
options are known to be good. Usage errors exit with code 2 and one line (click's convention).
"""
import warnings

import click
import numpy as np

from minidiff import figures, schedules as schedules_module


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option("0.1.0", prog_name="minidiff")
def main():
    """minidiff: a small, exact diffusion engine in NumPy with autograd gradients."""


@main.command()
@click.option("--T", "T", type=click.IntRange(min=1), default=1000, show_default=True, help="diffusion steps")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="also save ᾱ, SNR, log-SNR plot (.png/.svg)")
def schedules(T, plot):
    """Table of every noise schedule at T steps: ᾱ at both ends, SNR and log-SNR range, prior term."""
    if plot is not None:
        _check_output_file(plot, (".png", ".svg"))
    header = f"{'schedule':<16}{'zero-SNR':>9}{'ᾱ_0':>12}{'ᾱ_T-1':>12}{'SNR_0':>11}{'SNR_T-1':>11}" \
             f"{'λ_0':>9}{'λ_T-1':>9}{'prior KL':>11}"
    click.echo(header)
    click.echo("-" * len(header))
    for name in schedules_module.SCHEDULES:
        for zero in (False, True):
            try:
                s = schedules_module.make_schedule(name, T, zero_terminal_snr=zero, warn=False)
            except schedules_module.ScheduleError as err:
                click.echo(f"{name:<16}{'yes' if zero else 'no':>9}  not defined: {err}")
                continue
            click.echo(f"{name:<16}{'yes' if zero else 'no':>9}{s.alpha_bar[0]:>12.6g}{s.alpha_bar[-1]:>12.4g}"
                       f"{s.snr[0]:>11.4g}{s.snr[-1]:>11.3g}{s.log_snr[0]:>9.3f}{s.log_snr[-1]:>9.3f}"
                       f"{s.prior_kl:>11.3g}")
    click.echo(f"prior KL: KL(q(x_T|x_0) || N(0, I)) in nats per dimension for unit-variance data; "
               f"above {schedules_module.PRIOR_KL_WARN:g} it is not negligible.")
    if plot is not None:
        figures.save(figures.schedules_figure(T), plot)
        click.echo(f"wrote {plot}")


def _check_output_file(path, extensions):
    """A usage error, before any work, for an output file whose folder is missing or whose type is unknown."""
    import os
    if not path.lower().endswith(extensions):
        raise click.BadParameter(f"{path!r} must end in {' or '.join(extensions)}", param_hint="output file")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise click.BadParameter(f"folder {folder!r} does not exist", param_hint="output file")


if __name__ == "__main__":
    main()
