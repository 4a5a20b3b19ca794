"""`minidiff train` and `minidiff sample`: start or continue a run in a folder, and draw samples from one.

Every check of the options, the data and the run folder, and the resume policy, are the library's
(`minidiff/runs/start.py`, `minidiff/runs/sampling.py`). Here the options are read, the plan is said, and the way
training ends becomes the exit status: 1 when it diverged, 130 when it was stopped by Ctrl-C (after a checkpoint).
"""
import click
import numpy as np

from minidiff import forward, schedules
from minidiff.sample import SAMPLERS
from minidiff.train import DTYPES, ON_DIVERGENCE, RANDOMNESS, TIME_INPUTS, DivergenceError, TrainConfig
from minidiff.runs import files, loop, start
from minidiff.runs.folder import WEIGHTS
from minidiff.runs.sampling import SampleConfig, sample_run
from minidiff.lab import figures
from minidiff.cli.common import device_option, given_options, option, progress_bar

SAMPLES_EXTENSIONS = (".npy",)


@click.command()
@option("--dataset", "toy dataset (see `minidiff datasets`)")
@click.option("--data", "data_file", type=click.Path(dir_okay=False), default=None,
              help="train on your own points instead: an (n, D) .npy or .csv file")
@option("--n-train", "training points drawn from the toy dataset", type=click.IntRange(min=2))
@option("--standardize/--no-standardize", "scale the data to zero mean, unit variance (undone when sampling)")
@option("--target", "what the network predicts: eps, x0, v, score, mu, flow (ε − x0), edm (EDM's F)")
@click.option("--sigma-data", type=click.FloatRange(min=0, min_open=True), default=None,
              help="EDM's σ_data for --target edm and --weighting edm [default: the training data's measured standard "
                   "deviation, √(variance averaged over the dimensions), saved in config.json]")
@option("--schedule", "noise schedule (see `minidiff schedules`)")
@option("--T", "diffusion steps", type=click.IntRange(min=1))
@option("--zero-terminal-snr/--no-zero-terminal-snr", "rescale the schedule to SNR = 0 at the last step")
@option("--weighting", "loss weighting: uniform, elbo, snr, trunc-snr, min-snr[-γ], edm, p2[:k=1,gamma=1], "
                       "sigmoid[:b=0], learned (EDM2's learned uncertainty)")
@option("--t-sampling", "how t is drawn: uniform, stratified, importance; SD3's and EDM's densities of the flow's "
                        "time, which change the objective: logit-normal[:m=0,s=1], mode[:s=1.29], cosmap, "
                        "log-normal[:p_mean=-1.2,p_std=1.2]; importance-NAME: the same draws weighted by 1/(T p(t)), "
                        "the objective kept")
@option("--snr-shift", "shift the schedule in log-SNR, λ → λ − 2 log S (SD3's time shift; 1: none)",
        type=click.FloatRange(min=0, min_open=True))
@option("--steps", "training steps", type=click.IntRange(min=1))
@option("--batch-size", "examples per step", type=click.IntRange(min=1))
@option("--lr", "peak learning rate (Adam)", type=float)
@option("--warmup-steps", "linear warmup steps", type=click.IntRange(min=0))
@option("--min-lr-ratio", "final learning rate / peak (cosine decay)", type=float)
@option("--grad-clip", "clip the global gradient norm to this", type=float)
@option("--ema-decay", "decay of the weights' exponential moving average", type=float)
@option("--dtype", "float32 or float64", type=click.Choice(list(DTYPES)))
@option("--seed", "seed of every random number in the run", type=click.IntRange(min=0))
@option("--hidden", "width of the MLP", type=click.IntRange(min=1))
@option("--depth", "hidden layers of the MLP", type=click.IntRange(min=1))
@option("--time-dim", "size of the sinusoidal time embedding (even)", type=click.IntRange(min=2))
@option("--fourier-features", "log-spaced Fourier features of the input (0: off)", type=click.IntRange(min=0))
@option("--time-input", "the network sees t, or log_snr", type=click.Choice(TIME_INPUTS))
@option("--log-every", "steps between rows of loss_log.csv", type=click.IntRange(min=1))
@option("--checkpoint-every", "steps between checkpoints", type=click.IntRange(min=1))
@option("--on-divergence", "on a NaN/Inf or exploding loss: stop, or skip-step (drop that update, count it, go on)",
        type=click.Choice(ON_DIVERGENCE))
@option("--explosion-factor", "a loss above this × the median of the last 100 losses has diverged (inf: off)",
        type=float)
@option("--max-skips", "with skip-step, stop after this many skipped steps in a row", type=click.IntRange(min=1))
@device_option
@click.option("--randomness", type=click.Choice(RANDOMNESS), default=None,
              help="how batch, t and noise are drawn: numpy (the run's generator, on the host: the CPU's numbers) or "
                   "counter (a counter-based generator, on the device) [default: numpy on the cpu, counter on the gpu]")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help=f"run folder [default: {start.RUNS_FOLDER}/DATASET-TARGET-SCHEDULE-sSEED]")
@click.option("--resume", is_flag=True, help="continue the run in --out from its last checkpoint")
@click.option("--force", is_flag=True, help="overwrite an existing run folder")
@click.option("--quiet", is_flag=True, help="no progress bar")
def train(out, resume, force, quiet, **options):
    """Train a denoiser; writes a run folder with checkpoints, the loss log, samples and their quality.

    Exit status: 0 when training finished; 1 when it diverged (the message names the last good checkpoint); 2 for a
    bad option, file or run folder, with nothing written; 130 when stopped by Ctrl-C, after saving a checkpoint.
    """
    if options["sigma_data"] is None:  # not given: measured from the training data (start.prepare)
        del options["sigma_data"]
    request = start.Request(TrainConfig(**options), out, resume=resume, force=force, given=given_options())
    with start.claim(request) as plan:  # the folder is this process's alone until training ends
        for line in plan.warnings:
            click.echo(f"warning: {line}", err=True)
        for line in plan.notes:
            click.echo(line)
        click.echo(plan.describe())
        _run_training(plan, quiet)


def _run_training(plan, quiet):
    """loop.train: a divergence is a one-line error (exit 1); Ctrl-C exits with 130, the checkpoint saved."""
    try:
        loop.train(plan.config, plan.out, resume=plan.resume, progress=progress_bar(quiet), echo=click.echo,
                   plot=figures.save_samples)
    except DivergenceError as err:
        raise click.ClickException(str(err)) from None
    except loop.Interrupted as err:
        click.echo(str(err), err=True)
        raise click.exceptions.Exit(loop.EXIT_INTERRUPTED) from None
    except KeyboardInterrupt:  # after the loop (while sampling at the end): the final checkpoint is on disk
        click.echo("interrupted after training; the final checkpoint is saved, --resume draws the samples", err=True)
        raise click.exceptions.Exit(loop.EXIT_INTERRUPTED) from None


@click.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(exists=True, file_okay=False))
@option("--n", "number of samples", SampleConfig, type=click.IntRange(min=1))
@option("--sampler", None, SampleConfig, type=click.Choice(SAMPLERS))
@click.option("--steps", type=click.IntRange(min=1), default=None, help="sampling steps [default: T]")
@click.option("--spacing", type=click.Choice(schedules.SPACINGS), default=None,
              help="which timesteps a shorter run visits [default: karras for ode, else linspace]")
@option("--eta", "DDIM's η", SampleConfig, type=click.FloatRange(min=0))
@option("--variance", "DDPM's σ_t²", SampleConfig, type=click.Choice(forward.VARIANCES))
@click.option("--clip", type=click.FloatRange(min=0, min_open=True), default=None, help="clip x0_hat to ±CLIP")
@option("--weights", None, SampleConfig, type=click.Choice(WEIGHTS))
@option("--seed", None, SampleConfig, type=click.IntRange(min=0))
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="save the samples (.npy)")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="save a plot (.png/.svg)")
@click.option("--quiet", is_flag=True, help="no progress bar")
@device_option
def sample(run_dir, n, sampler, steps, spacing, eta, variance, clip, weights, seed, out, plot, quiet):
    """Draw samples from a trained run.

    Exit status 2, with nothing written, for a bad option, a run folder whose config or checkpoint is missing or
    damaged, or an output file in a missing folder.
    """
    for path, extensions in ((out, SAMPLES_EXTENSIONS), (plot, files.FIGURE_EXTENSIONS)):
        if path is not None:
            files.check_output_file(path, extensions)
    config = SampleConfig(run_dir, n=n, sampler=sampler, steps=steps, spacing=spacing, eta=eta, variance=variance,
                          clip=clip, weights=weights, seed=seed, held_out=bool(plot))
    samples = sample_run(config, progress=progress_bar(quiet))
    if out:
        files.atomic_write(out, lambda f: np.save(f, samples.x))
        click.echo(f"wrote {len(samples.x)} samples to {out}")
    if plot:
        figures.save(figures.samples_figure(samples.x, samples.held, title=samples.title,
                                            image_shape=samples.image_shape), plot)
        click.echo(f"wrote {plot}")
    if not out and not plot:
        click.echo(f"mean {np.round(samples.x.mean(0), 4).tolist()}, std {np.round(samples.x.std(0), 4).tolist()} "
                   f"(use --out or --plot to keep the samples)")


COMMANDS = (train, sample)
