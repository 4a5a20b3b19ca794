"""`minidiff figures`: every figure of the project and docs/study.md, regenerated from scratch.

The options are the fields of the library's config (lab/study/make.py: FiguresConfig), which checks them before
the first experiment; a study without the data of every figure is refused after the figures (exit status 1).
"""
import click

from minidiff.lab.study import make
from minidiff.cli.common import device_option, option, progress_bar


@click.command("figures")
@click.option("--quick", is_flag=True, help="small budgets: the whole set in a few minutes (to check, not to read)")
@click.option("--only", "names", multiple=True, metavar="NAME", help="only these figures (repeat); default: all")
@option("--out", "output folder", make.FiguresConfig, type=click.Path(file_okay=False))
@click.option("--svg", is_flag=True, help="also write SVG files")
@option("--seed", None, make.FiguresConfig, type=click.IntRange(min=0))
@option("--workers", "processes for the stacks of runs and the likelihoods", make.FiguresConfig, type=click.IntRange(min=1))
@click.option("--study", type=click.Path(dir_okay=False), default=None,
              help=f"also write the study (markdown) from the data [default: {make.STUDY_FILE} for a full set]")
@click.option("--quiet", is_flag=True, help="no progress bar")
@device_option
def figures_command(quiet, **options):
    """Regenerate every figure of the project (and the study's numbers) from scratch."""
    try:
        make.make(make.FiguresConfig(**options), progress=progress_bar(quiet), echo=click.echo)
    except make.IncompleteStudy as err:
        raise click.ClickException(str(err)) from None


COMMANDS = (figures_command,)
