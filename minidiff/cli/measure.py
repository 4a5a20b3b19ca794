"""`minidiff elbo`, `gradvar` and `landscape`: measuring a run, the oracle, or configurations at initialisation.

Each command reads its options into the library's config (lab/evaluate.py: ElboConfig; lab/diagnostics/entry.py:
GradvarConfig, LandscapeConfig), whose fields give the options their defaults; the library checks everything
before any work, measures and writes its files; the command prints the lines it returns and saves the figure.
"""
import click

from minidiff import data, forward
from minidiff.elbo import ESTIMATES
from minidiff.runs.folder import WEIGHTS
from minidiff.lab import evaluate, figures
from minidiff.lab.diagnostics import entry
from minidiff.lab.diagnostics.gradvar import BUCKET_KINDS
from minidiff.lab.diagnostics.entry import GradvarConfig, LandscapeConfig
from minidiff.cli.common import (device_option, echo_lines, given_options, list_option, option, progress_bar,
                                 schedule_name, target_name, weighting_name)

ORACLE = evaluate.ORACLE_DEFAULTS


@click.command()
@click.argument("run_dir", metavar="[RUN]", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--oracle", is_flag=True,
              help="also (with RUN) or only (without RUN) evaluate the exact optimal denoiser of a mixture dataset")
@click.option("--dataset", default=None, help=f"without RUN: a mixture dataset [default: {ORACLE['dataset']}]")
@click.option("--schedule", default=None, help=f"without RUN: noise schedule [default: {ORACLE['schedule']}]")
@click.option("--T", "T", type=click.IntRange(min=2), default=None,
              help=f"without RUN: diffusion steps [default: {ORACLE['T']}]")
@click.option("--zero-terminal-snr", is_flag=True, help="without RUN: rescale the schedule to SNR = 0 at the end")
@click.option("--target", default=None, help=f"without RUN: the oracle's target [default: {ORACLE['target']}]")
@option("--weights", None, evaluate.ElboConfig, type=click.Choice(WEIGHTS))
@option("--n", "data points evaluated", evaluate.ElboConfig, type=click.IntRange(min=2))
@option("--seed", "seed of the data points and the noise", evaluate.ElboConfig, type=int)
@option("--variance", "σ_t² of p(x_{t-1}|x_t) and of the decoder", evaluate.ElboConfig,
        type=click.Choice(forward.VARIANCES))
@option("--t-sampling", "all T terms, or one sampled t per point (unbiased, with its standard error)",
        evaluate.ElboConfig, type=click.Choice(ESTIMATES))
@option("--ode/--no-ode", "also the probability-flow ODE likelihood", evaluate.ElboConfig)
@option("--rtol", "relative tolerance of the ODE solver", evaluate.ElboConfig,
        type=click.FloatRange(min=0, min_open=True))
@option("--atol", "absolute tolerance of the ODE solver", evaluate.ElboConfig,
        type=click.FloatRange(min=0, min_open=True))
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="save L_t against t (.png/.svg)")
@device_option
def elbo(**options):
    """The variational bound term by term, the probability-flow NLL, and for mixtures the exact NLL and the gap.

    `minidiff elbo RUN` evaluates a trained run (EMA weights by default) on n fresh points of its dataset (its
    held-out points for a data file); `minidiff elbo --oracle --dataset gmm2d --schedule cosine --T 1000`
    evaluates the analytic optimal denoiser alone. Nats per example and bits per dimension.
    """
    config = evaluate.ElboConfig(**options)
    result = evaluate.evaluate(config, progress=progress_bar(quiet=False), echo=click.echo)
    echo_lines(evaluate.table(result.bounds, result.flows, result.exact, result.discrete))
    if config.plot is not None:
        figures.save(figures.elbo_terms_figure(result.bounds, title=result.title), config.plot)
        click.echo(f"wrote {config.plot}")


@click.command()
@click.argument("runs", metavar="[RUN]...", nargs=-1, type=click.Path(exists=True, file_okay=False))
@option("--dataset", "without RUN: the data", GradvarConfig, type=click.Choice(data.dataset_names()))
@list_option("--schedules", "without RUN: the schedules compared", GradvarConfig, check=schedule_name)
@list_option("--targets", "without RUN: the targets compared", GradvarConfig, check=target_name)
@list_option("--weightings", "the loss weightings [with RUN: the run's own]", GradvarConfig, check=weighting_name)
@option("--T", "without RUN: steps", GradvarConfig, type=click.IntRange(min=2))
@option("--n", "examples (x_0, ε, t ~ U{0..T-1}) whose gradients are measured", GradvarConfig,
        type=click.IntRange(min=2))
@option("--buckets", "t- or λ-buckets", GradvarConfig, type=click.IntRange(min=1))
@option("--by", "equal ranges of t or of log-SNR", GradvarConfig, type=click.Choice(BUCKET_KINDS))
@option("--hidden", "without RUN: width of the MLP", GradvarConfig, type=click.IntRange(min=1))
@option("--depth", "without RUN: hidden layers", GradvarConfig, type=click.IntRange(min=1))
@option("--weights", "with RUN: the weights at its checkpoint", GradvarConfig, type=click.Choice(WEIGHTS))
@option("--along/--no-along", "with RUN: also at each parameter snapshot (runs of `minidiff sweep` keep them)",
        GradvarConfig)
@option("--seed", "seed of the examples and the initialisation", GradvarConfig, type=int)
@option("--out", "data file (.json); the CSV is written beside it", GradvarConfig, type=click.Path(dir_okay=False))
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="figure (.png/.svg) [default: OUT with .png]; the others are written beside it")
@click.option("--quiet", is_flag=True, help="no progress bar")
@device_option
def gradvar(quiet, **options):
    """Gradient noise per target, weighting and t-bucket: tr Σ, |G|², B_simple, cosines between buckets.

    Without RUN: at initialisation, for every schedule × target × weighting, with the scale of each target
    against t. With RUN folders: at each run's checkpoint and along its parameter snapshots.
    """
    given = given_options()
    entry.check_run_options(options["runs"], given)
    config = GradvarConfig(**options, own_weighting="weightings" not in given)
    echo_lines(*entry.gradvar(config, progress=progress_bar(quiet)))


@click.command()
@click.argument("runs", metavar="RUN...", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@option("--span", "slices reach α in [-SPAN, SPAN] (in units of each filter's norm)", LandscapeConfig,
        type=click.FloatRange(min=0, min_open=True))
@option("--points", "points of each 1-D slice (odd, so that α = 0 is one of them)", LandscapeConfig,
        type=click.IntRange(min=5))
@option("--grid", "points per side of the 2-D slice", LandscapeConfig, type=click.IntRange(min=3))
@option("--n", "examples in the one fixed batch (x_0, ε, t) the loss is evaluated on", LandscapeConfig,
        type=click.IntRange(min=1))
@option("--weights", None, LandscapeConfig, type=click.Choice(WEIGHTS))
@option("--interpolate/--no-interpolate", "also the loss on the segment between the first two runs", LandscapeConfig)
@option("--seed", "seed of the batch and the directions", LandscapeConfig, type=int)
@option("--out", "data file (.json); the sharpness table (.csv) is written beside it", LandscapeConfig,
        type=click.Path(dir_okay=False))
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="figure (.png/.svg) [default: OUT with .png]; the others are written beside it")
@click.option("--quiet", is_flag=True, help="no progress bar")
@device_option
def landscape(quiet, **options):
    """Loss landscapes of trained runs: 1-D and 2-D filter-normalised slices, sharpness, interpolation, PCA path.

    The loss is each run's own training loss on one fixed batch. A run with parameter snapshots (the runs of
    `minidiff sweep`) also gets the PCA of its path, beside the random-walk baseline 6/(π²k²).
    """
    echo_lines(*entry.landscape(LandscapeConfig(**options), progress=progress_bar(quiet)))


COMMANDS = (elbo, gradvar, landscape)
