"""The minidiff command line: `minidiff COMMAND --help` (or `python cli.py COMMAND --help`).

Each command parses and validates its options, then calls one library function; nothing is written before the
options are known to be good. Usage errors exit with code 2 and one line (click's convention).
"""
import dataclasses
import os
import shutil
import sys
import warnings

import click
import numpy as np

from minidiff import backend, checkpoint, data, figures, schedules as schedules_module
from minidiff.train import ON_DIVERGENCE, RANDOMNESS, TrainConfig

DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
RUN_FILES = ("config.json", "checkpoint.npz", "loss_log.csv", "samples.npy", "samples.png", "quality.json")


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
    if not path.lower().endswith(extensions):
        raise click.BadParameter(f"{path!r} must end in {' or '.join(extensions)}", param_hint="output file")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise click.BadParameter(f"folder {folder!r} does not exist", param_hint="output file")
    if os.path.isdir(path) or not os.access(folder, os.W_OK):
        raise click.BadParameter(f"{path!r} cannot be written (a folder, or in a folder without write permission)",
                                 param_hint="output file")


def _echo_lines(lines, written=()):
    """Print a table's lines, then the files written (if any)."""
    for line in lines:
        click.echo(line)
    if written:
        click.echo(f"wrote {', '.join(written)}")


def _use_device(ctx, param, value):
    """--device: make the backend use it while the options are read; a usage error if it cannot be used."""
    try:
        backend.use_device(value)
    except backend.DeviceError as err:
        raise click.BadParameter(str(err)) from None
    return backend.device()


device_option = click.option("--device", envvar=backend.DEVICE_VARIABLE, show_envvar=True, default="cpu",
                             show_default=True, callback=_use_device, expose_value=False,
                             help="where the arrays live: cpu (NumPy) or gpu (CuPy)")


def option(name, help, **kwargs):
    """A click option whose default is TrainConfig's, so the library and the CLI never disagree."""
    field = name.split("/")[0].lstrip("-").replace("-", "_")
    kwargs.setdefault("default", DEFAULTS[field])
    return click.option(name, field, help=help, show_default=True, **kwargs)


@main.command()
@option("--dataset", "toy dataset (see `minidiff datasets`)")
@click.option("--data", "data_file", type=click.Path(dir_okay=False), default=None,
              help="train on your own points instead: an (n, D) .npy or .csv file")
@option("--n-train", "training points drawn from the toy dataset", type=click.IntRange(min=2))
@option("--standardize/--no-standardize", "scale the data to zero mean, unit variance (undone when sampling)")
@option("--target", "what the network predicts: eps, x0, v, score, mu")
@option("--schedule", "noise schedule (see `minidiff schedules`)")
@option("--T", "diffusion steps", type=click.IntRange(min=1))
@option("--zero-terminal-snr/--no-zero-terminal-snr", "rescale the schedule to SNR = 0 at the last step")
@option("--weighting", "loss weighting: uniform, elbo, snr, trunc-snr, min-snr[-γ]")
@option("--t-sampling", "how t is drawn: uniform, stratified, importance")
@option("--steps", "training steps", type=click.IntRange(min=1))
@option("--batch-size", "examples per step", type=click.IntRange(min=1))
@option("--lr", "peak learning rate (Adam)", type=float)
@option("--warmup-steps", "linear warmup steps", type=click.IntRange(min=0))
@option("--min-lr-ratio", "final learning rate / peak (cosine decay)", type=float)
@option("--grad-clip", "clip the global gradient norm to this", type=float)
@option("--ema-decay", "decay of the weights' exponential moving average", type=float)
@option("--dtype", "float32 or float64", type=click.Choice(["float32", "float64"]))
@option("--seed", "seed of every random number in the run", type=click.IntRange(min=0))
@option("--hidden", "width of the MLP", type=click.IntRange(min=1))
@option("--depth", "hidden layers of the MLP", type=click.IntRange(min=1))
@option("--time-dim", "size of the sinusoidal time embedding (even)", type=click.IntRange(min=2))
@option("--fourier-features", "log-spaced Fourier features of the input (0: off)", type=click.IntRange(min=0))
@option("--time-input", "the network sees t, or log_snr", type=click.Choice(["t", "log_snr"]))
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
              help="run folder [default: runs/DATASET-TARGET-SCHEDULE-sSEED]")
@click.option("--resume", is_flag=True, help="continue the run in --out from its last checkpoint")
@click.option("--force", is_flag=True, help="overwrite an existing run folder")
@click.option("--quiet", is_flag=True, help="no progress bar")
def train(out, resume, force, quiet, **options):
    """Train a denoiser; writes a run folder with checkpoints, the loss log, samples and their quality.

    Exit status: 0 when training finished; 1 when it diverged (the message names the last good checkpoint); 2 for a
    bad option, file or run folder, with nothing written; 130 when stopped by Ctrl-C, after saving a checkpoint.
    """
    options["randomness"] = options["randomness"] or ("counter" if backend.device() == "gpu" else "numpy")
    config = TrainConfig(**options)
    out = out or os.path.join("runs", f"{_data_name(config)}-{config.target}-{config.schedule}-s{config.seed}")
    _check_flags(resume, force)
    config = _resumable(out, config) if resume else config
    name = _data_name(config)
    _check_config(config)
    if not resume:
        _prepare_out(out, force)
    _echo_schedule_warnings(config)
    click.echo(f"training {config.target} on {name} ({config.schedule}, T={config.T}, {config.weighting}) "
               f"for {config.steps} steps into {out}")
    _run_training(config, out, resume, quiet)


def _echo_schedule_warnings(config):
    """What the run's schedule warns about (a prior term that is not negligible), said once before training."""
    from minidiff.train import make_problem
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", schedules_module.PriorTermWarning)
        make_problem(config)
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)


def _run_training(config, out, resume, quiet):
    """run.train: a divergence is a one-line error (exit 1); Ctrl-C exits with 130, the checkpoint saved."""
    from minidiff import run
    try:
        run.train(config, out, resume=resume, progress=not quiet)
    except run.DivergenceError as err:
        raise click.ClickException(str(err)) from None
    except run.Interrupted as err:
        click.echo(str(err), err=True)
        raise click.exceptions.Exit(run.EXIT_INTERRUPTED) from None
    except KeyboardInterrupt:  # after the loop (while sampling at the end): the final checkpoint is on disk
        click.echo("interrupted after training; the final checkpoint is saved, --resume draws the samples", err=True)
        raise click.exceptions.Exit(run.EXIT_INTERRUPTED) from None


def _data_name(config):
    """The toy dataset's name, or the data file's name without folder and extension."""
    return os.path.splitext(os.path.basename(config.data_file))[0] if config.data_file else config.dataset


def _check_flags(resume, force):
    """Options that cannot go together."""
    ctx = click.get_current_context()
    if resume and force:
        raise click.UsageError("--resume continues the run in --out and --force starts it again; give one of them")
    typed = [ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE for k in ("dataset", "data_file")]
    if all(typed):
        raise click.UsageError("--dataset and --data both given; train on a toy dataset or on your file, not both")


def _check_config(config):
    """Every option and the data file, checked before anything is written: a usage error on the first bad one."""
    from minidiff import run
    from minidiff.train import ConfigError, validate
    try:
        validate(config)
        if config.data_file:  # read, split and standardised exactly as training will (data.DataError if it cannot)
            run.load_training_data(config, run.generators(config.seed)[0])
    except (ConfigError, data.DataError) as err:
        raise click.UsageError(str(err)) from None


def _prepare_out(out, force):
    """Refuse an --out that is a file, cannot be created, or already holds a run (unless --force, which deletes the
    old run's files and nothing else)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise click.UsageError(f"--out {out!r} is a file, not a folder")
    parent = os.path.abspath(out)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise click.UsageError(f"--out {out!r} cannot be written: {parent!r} is not a writable folder")
    existing = [f for f in RUN_FILES if os.path.exists(os.path.join(out, f))]
    if existing and not force:
        raise click.UsageError(f"run folder {out!r} already holds a run; use --force to overwrite it or --resume "
                               f"to continue it")
    for f in existing:
        os.remove(os.path.join(out, f))


def _resumable(out, config):
    """The stored config of the run in `out`, with the options that --resume may change taken from the command line;
    a usage error for a folder without a run, a damaged run, other options, or a run that has finished."""
    from minidiff import run
    stored, step = _stored_run(out)
    ctx = click.get_current_context()
    given = {k: v for k, v in dataclasses.asdict(config).items()
             if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE}
    changed = sorted(k for k, v in given.items() if getattr(stored, k) != v and k not in run.RESUMABLE)
    if changed:
        raise click.UsageError(f"--resume continues the stored run; these options differ from it: "
                               f"{', '.join(changed)} (only {', '.join(run.RESUMABLE)} may change)")
    config = dataclasses.replace(stored, **{k: v for k, v in given.items() if k in run.RESUMABLE})
    if step > config.steps:
        raise click.UsageError(f"cannot resume {out!r}: its checkpoint is at step {step}, past --steps {config.steps}")
    if step == config.steps and os.path.exists(os.path.join(out, run.QUALITY_FILE)):
        raise click.UsageError(f"the run in {out!r} has finished ({step} steps); give a larger --steps to train on, "
                               f"or start again with --force instead of --resume")
    return config


def _stored_run(out):
    """(stored config, step of its checkpoint: 0 before the first was saved) of the run in `out`; a usage error for a
    folder without a run or a damaged one."""
    from minidiff import run
    if not os.path.isfile(os.path.join(out, checkpoint.CONFIG_FILE)):
        raise click.UsageError(f"cannot resume {out!r}: it has no {checkpoint.CONFIG_FILE}, so no run to continue; "
                               f"start the run without --resume")
    try:
        stored, network, _ = run.load_config(out)
        has_checkpoint = os.path.exists(os.path.join(out, checkpoint.CHECKPOINT_FILE))  # not before step 0 was saved
        return stored, run.load_checkpoint(out, stored, network)[0].step if has_checkpoint else 0
    except checkpoint.CheckpointError as err:
        raise click.UsageError(f"cannot resume {out!r}: {err}") from None


@main.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(exists=True, file_okay=False))
@click.option("--n", type=click.IntRange(min=1), default=2000, show_default=True, help="number of samples")
@click.option("--sampler", type=click.Choice(["ddpm", "ddim", "ode"]), default="ddpm", show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=None, help="sampling steps [default: T]")
@click.option("--spacing", type=click.Choice(schedules_module.SPACINGS), default=None,
              help="which timesteps a shorter run visits [default: karras for ode, else linspace]")
@click.option("--eta", type=click.FloatRange(min=0), default=0.0, show_default=True, help="DDIM's η")
@click.option("--variance", type=click.Choice(["beta_tilde", "beta"]), default="beta_tilde", show_default=True,
              help="DDPM's σ_t²")
@click.option("--clip", type=click.FloatRange(min=0, min_open=True), default=None, help="clip x0_hat to ±CLIP")
@click.option("--weights", type=click.Choice(["ema", "raw"]), default="ema", show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="save the samples (.npy)")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="save a plot (.png/.svg)")
@click.option("--quiet", is_flag=True, help="no progress bar")
@device_option
def sample(run_dir, n, sampler, steps, spacing, eta, variance, clip, weights, seed, out, plot, quiet):
    """Draw samples from a trained run.

    Exit status 2, with nothing written, for a bad option, a run folder whose config or checkpoint is missing or
    damaged, or an output file in a missing folder.
    """
    from minidiff.sample import sample as draw
    from minidiff.train import make_problem, model_fn
    for path, ext in ((out, (".npy",)), (plot, (".png", ".svg"))):
        if path is not None:
            _check_output_file(path, ext)
    config, network, stats, state, held = _sampling_run(run_dir, n, steps, plot)
    problem = make_problem(config)
    model = model_fn(state.ema if weights == "ema" else state.params, problem, config)
    try:
        with click.progressbar(length=steps or config.T, label=f"sampling ({sampler})", width=24, hidden=quiet,
                               file=sys.stderr) as bar:
            x = draw(model, config.target, problem.schedule, (n, network.data_dim), np.random.default_rng(seed),
                     sampler=sampler, steps=steps, spacing=spacing, eta=eta, variance=variance, clip=clip,
                     progress=bar.update)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    if stats is not None:
        x = data.unstandardize(x, stats)
    image_shape = None if config.data_file else data.DATASETS[config.dataset].image_shape
    _keep_samples(x, out, plot, held, title=f"{sampler}, {steps or config.T} steps", image_shape=image_shape)


def _keep_samples(x, out, plot, held, title, image_shape=None):
    """Save the samples (.npy) and their plot against the held-out points, or without either print their moments."""
    if out:
        checkpoint.atomic_write(out, lambda f: np.save(f, x))
        click.echo(f"wrote {len(x)} samples to {out}")
    if plot:
        figures.save(figures.samples_figure(x, held, title=title, image_shape=image_shape), plot)
        click.echo(f"wrote {plot}")
    if not out and not plot:
        click.echo(f"mean {np.round(x.mean(0), 4).tolist()}, std {np.round(x.std(0), 4).tolist()} "
                   f"(use --out or --plot to keep the samples)")


def _sampling_run(run_dir, n, steps, plot):
    """(config, network, stats, state, held-out points or None) of the run to sample; a usage error if the run
    cannot be loaded, --steps or --n is too large, or the data a plot needs cannot be read."""
    from minidiff import run
    try:
        config, network, stats, state = run.load_run(run_dir)
    except checkpoint.CheckpointError as err:
        raise click.UsageError(f"cannot load run {run_dir!r}: {err}") from None
    if steps is not None and steps > config.T:
        raise click.BadParameter(f"at most T = {config.T} steps", param_hint="--steps")
    if n * network.data_dim > data.MAX_VALUES:
        raise click.BadParameter(f"{n} samples of {network.data_dim} numbers are more than {data.MAX_VALUES}",
                                 param_hint="--n")
    held = None
    if plot:  # the held-out points the plot shows
        try:
            held = run.load_training_data(config, run.generators(config.seed)[0])[1]
        except data.DataError as err:
            raise click.UsageError(f"cannot plot against the run's data: {err}") from None
    return config, network, stats, state, held


@main.command()
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="save a preview of each (.png/.svg)")
def datasets(plot):
    """List the toy datasets (and those with an exact density)."""
    if plot is not None:
        _check_output_file(plot, (".png", ".svg"))
    for name, dataset in data.DATASETS.items():
        click.echo(f"{name:<14}{'exact ' if dataset.mixture is not None else '      '}{dataset.description}")
    click.echo("exact: a Gaussian mixture whose density, score and optimal denoiser are known in closed form")
    if plot is not None:
        figures.save(figures.datasets_figure(), plot)
        click.echo(f"wrote {plot}")


@main.command()
@click.argument("run_dir", metavar="[RUN]", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--oracle", "use_oracle", is_flag=True,
              help="also (with RUN) or only (without RUN) evaluate the exact optimal denoiser of a mixture dataset")
@click.option("--dataset", default=None, help="without RUN: a mixture dataset [default: gmm2d]")
@click.option("--schedule", default=None, help="without RUN: noise schedule [default: cosine]")
@click.option("--T", "T", type=click.IntRange(min=2), default=None, help="without RUN: diffusion steps [default: 1000]")
@click.option("--zero-terminal-snr", is_flag=True, help="without RUN: rescale the schedule to SNR = 0 at the end")
@click.option("--target", default=None, help="without RUN: the oracle's target [default: v]")
@click.option("--weights", type=click.Choice(["ema", "raw"]), default="ema", show_default=True)
@click.option("--n", type=click.IntRange(min=2), default=1000, show_default=True, help="data points evaluated")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the data points and the noise")
@click.option("--variance", type=click.Choice(["beta_tilde", "beta"]), default="beta_tilde", show_default=True,
              help="σ_t² of p(x_{t-1}|x_t) and of the decoder")
@click.option("--t-sampling", type=click.Choice(["exact", "uniform", "importance"]), default="exact",
              show_default=True, help="all T terms, or one sampled t per point (unbiased, with its standard error)")
@click.option("--ode/--no-ode", default=True, show_default=True, help="also the probability-flow ODE likelihood")
@click.option("--rtol", type=click.FloatRange(min=0, min_open=True), default=1e-5, show_default=True,
              help="relative tolerance of the ODE solver")
@click.option("--atol", type=click.FloatRange(min=0, min_open=True), default=1e-5, show_default=True,
              help="absolute tolerance of the ODE solver")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="save L_t against t (.png/.svg)")
@device_option
def elbo(run_dir, use_oracle, dataset, schedule, T, zero_terminal_snr, target, weights, n, seed, variance,
         t_sampling, ode, rtol, atol, plot):
    """The variational bound term by term, the probability-flow NLL, and for mixtures the exact NLL and the gap.

    `minidiff elbo RUN` evaluates a trained run (EMA weights by default) on n fresh points of its dataset (its
    held-out points for a data file); `minidiff elbo --oracle --dataset gmm2d --schedule cosine --T 1000`
    evaluates the analytic optimal denoiser alone. Nats per example and bits per dimension.
    """
    from minidiff import evaluate
    if plot is not None:
        _check_output_file(plot, (".png", ".svg"))
        if t_sampling != "exact":
            raise click.BadParameter("the plot of L_t needs every term: use --t-sampling exact", param_hint="--plot")
    oracle = dict(dataset=dataset, schedule=schedule, T=T, zero_terminal_snr=zero_terminal_snr, target=target)
    setup = _elbo_setup(run_dir, use_oracle, oracle, weights, n, seed)
    click.echo(f"{n} points of {setup.name}; {setup.schedule.describe()}; σ_t² = {variance}, t: {t_sampling}")
    try:
        bounds, flows = evaluate.likelihoods(setup, seed=seed, variance=variance, t_sampling=t_sampling, ode=ode,
                                             rtol=rtol, atol=atol)
    except RuntimeError as err:  # the ODE solver gave up (too many steps)
        raise click.ClickException(str(err)) from None
    discrete = evaluate.discrete_bounds(setup, seed=seed, variance=variance, t_sampling=t_sampling)
    _echo_lines(evaluate.table(bounds, flows, evaluate.exact_nll(setup.name, setup.x0), discrete))
    if plot is not None:
        title = f"{setup.name}, {setup.schedule.name}, T = {setup.schedule.T}"
        figures.save(figures.elbo_terms_figure(bounds, title=title), plot)
        click.echo(f"wrote {plot}")


def _elbo_setup(run_dir, use_oracle, oracle, weights, n, seed):
    """evaluate.Setup of the run (and the oracle beside it), or of the oracle alone (`oracle`: its options); a usage
    error for options that do not go together, or a run, dataset, schedule or target that cannot be evaluated."""
    from minidiff import evaluate
    if run_dir is None and not use_oracle:
        raise click.UsageError("give a RUN folder, or --oracle (with --dataset, --schedule, --T) for the exact "
                               "optimal denoiser of a mixture")
    given = [f"--{key.replace('_', '-')}" for key, value in oracle.items() if value]
    if run_dir is not None and given:
        raise click.UsageError(f"{', '.join(given)} come from the run; give them only without RUN (with --oracle)")
    try:
        if run_dir is None:
            return evaluate.oracle_setup(**oracle, n=n, seed=seed)
        return evaluate.run_setup(run_dir, weights=weights, n=n, seed=seed, with_oracle=use_oracle)
    except evaluate.EvaluationError as err:
        raise click.UsageError(str(err)) from None


# --- diagnostics: gradient noise, loss landscapes, stability sweeps (minidiff.diagnostics) -----------------------

def _list_option(name, default, help, parse=str, check=None):
    """A comma-separated list option, parsed and checked while the options are read: a bad item is a usage error."""
    def callback(ctx, param, value):
        items = [v.strip() for v in value.split(",") if v.strip()]
        if not items:
            raise click.BadParameter("give at least one value, separated by commas")
        try:
            return tuple(check(parse(v)) if check else parse(v) for v in items)
        except ValueError as err:
            raise click.BadParameter(str(err)) from None
    return click.option(name, default=default, show_default=True, help=help, callback=callback)


def _schedule_name(name):
    if name not in schedules_module.SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of: {', '.join(schedules_module.SCHEDULES)}")
    return name


def _weighting_name(name):
    from minidiff.targets import parse_weighting
    parse_weighting(name)
    return name


def _target_name(name):
    from minidiff.targets import canonical_target
    return canonical_target(name)


def _positive(value):
    if not (value > 0 and np.isfinite(value)):
        raise ValueError(f"{value} is not a positive number")
    return value


def _data_and_plot(out, plot):
    """The plot's path, after checking both: OUT must be .json, the plot defaults to OUT with .png."""
    _check_output_file(out, (".json",))
    plot = plot or os.path.splitext(out)[0] + ".png"
    _check_output_file(plot, (".png", ".svg"))
    return plot


def _loadable_runs(runs):
    """A usage error, before any work, for a RUN folder that holds no loadable run."""
    from minidiff import run
    for run_dir in runs:
        try:
            run.load_run(run_dir)
        except (checkpoint.CheckpointError, KeyError, TypeError, ValueError, OSError) as err:
            raise click.UsageError(f"cannot load run {run_dir!r}: {str(err).splitlines()[0]}") from None


@main.command()
@click.argument("runs", metavar="[RUN]...", nargs=-1, type=click.Path(exists=True, file_okay=False))
@click.option("--dataset", type=click.Choice(data.dataset_names()), default="moons", show_default=True,
              help="without RUN: the data")
@_list_option("--schedules", "cosine,linear", "without RUN: the schedules compared", check=_schedule_name)
@_list_option("--targets", "eps,x0,v,score,mu", "without RUN: the targets compared", check=_target_name)
@_list_option("--weightings", "uniform,min-snr,elbo", "the loss weightings [with RUN: the run's own]",
              check=_weighting_name)
@click.option("--T", "T", type=click.IntRange(min=2), default=1000, show_default=True, help="without RUN: steps")
@click.option("--n", type=click.IntRange(min=2), default=4096, show_default=True,
              help="examples (x_0, ε, t ~ U{0..T-1}) whose gradients are measured")
@click.option("--buckets", type=click.IntRange(min=1), default=10, show_default=True, help="t- or λ-buckets")
@click.option("--by", type=click.Choice(["t", "log_snr"]), default="t", show_default=True,
              help="equal ranges of t or of log-SNR")
@option("--hidden", "without RUN: width of the MLP", type=click.IntRange(min=1))
@option("--depth", "without RUN: hidden layers", type=click.IntRange(min=1))
@click.option("--weights", type=click.Choice(["ema", "raw"]), default="ema", show_default=True,
              help="with RUN: the weights at its checkpoint")
@click.option("--along/--no-along", default=True, show_default=True,
              help="with RUN: also at each parameter snapshot (runs of `minidiff sweep` keep them)")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the examples and the initialisation")
@click.option("--out", type=click.Path(dir_okay=False), default="gradvar.json", show_default=True,
              help="data file (.json); the CSV is written beside it")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="figure (.png/.svg) [default: OUT with .png]; the others are written beside it")
@click.option("--quiet", is_flag=True, help="no progress bar")
@device_option
def gradvar(runs, dataset, schedules, targets, weightings, T, n, buckets, by, hidden, depth, weights, along, seed,
            out, plot, quiet):
    """Gradient noise per target, weighting and t-bucket: tr Σ, |G|², B_simple, cosines between buckets.

    Without RUN: at initialisation, for every schedule × target × weighting, with the scale of each target
    against t. With RUN folders: at each run's checkpoint and along its parameter snapshots.
    """
    from minidiff.diagnostics import reports, studies
    plot = _data_and_plot(out, plot)
    _loadable_runs(runs)
    if not runs:
        _measurable(dataset, schedules, targets, weightings, T)
        if buckets > T:
            raise click.BadParameter(f"at most T = {T} buckets", param_hint="--buckets")
    measure = dict(n=n, n_buckets=buckets, by=by, seed=seed, progress=not quiet)
    if runs:
        given = click.get_current_context().get_parameter_source("weightings") == click.core.ParameterSource.COMMANDLINE
        records = studies.gradvar_of_runs(runs, weightings if given else (None,), weights=weights, along=along,
                                          **measure)
        scales = None
    else:
        records = studies.gradvar_at_init(dataset, schedules, targets, weightings, T=T,
                                          network=dict(hidden=hidden, depth=depth), **measure)
        scales = studies.target_study(dataset, schedules, targets, weightings, T=T, seed=seed)
    written = reports.write_gradvar(records, out, plot, dict(runs=runs, n=n, buckets=buckets, by=by, seed=seed),
                                    targets=scales)
    _echo_lines(reports.gradvar_table(records), written)


def _measurable(dataset, schedules, targets, weightings, T):
    """A usage error when no schedule × target × weighting can be trained (each that cannot is skipped later)."""
    from minidiff.diagnostics import studies
    from minidiff.train import ConfigError
    try:
        studies.check_measurable(dataset, schedules, targets, weightings, T=T)
    except ConfigError as err:
        raise click.UsageError(str(err)) from None


@main.command()
@click.argument("runs", metavar="RUN...", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--span", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="slices reach α in [-SPAN, SPAN] (in units of each filter's norm)")
@click.option("--points", type=click.IntRange(min=5), default=41, show_default=True,
              help="points of each 1-D slice (odd, so that α = 0 is one of them)")
@click.option("--grid", type=click.IntRange(min=3), default=15, show_default=True,
              help="points per side of the 2-D slice")
@click.option("--n", type=click.IntRange(min=1), default=512, show_default=True,
              help="examples in the one fixed batch (x_0, ε, t) the loss is evaluated on")
@click.option("--weights", type=click.Choice(["ema", "raw"]), default="ema", show_default=True)
@click.option("--interpolate/--no-interpolate", default=True, show_default=True,
              help="also the loss on the segment between the first two runs")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the batch and the directions")
@click.option("--out", type=click.Path(dir_okay=False), default="landscape.json", show_default=True,
              help="data file (.json); the sharpness table (.csv) is written beside it")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="figure (.png/.svg) [default: OUT with .png]; the others are written beside it")
@click.option("--quiet", is_flag=True, help="no progress bar")
@device_option
def landscape(runs, span, points, grid, n, weights, interpolate, seed, out, plot, quiet):
    """Loss landscapes of trained runs: 1-D and 2-D filter-normalised slices, sharpness, interpolation, PCA path.

    The loss is each run's own training loss on one fixed batch. A run with parameter snapshots (the runs of
    `minidiff sweep`) also gets the PCA of its path, beside the random-walk baseline 6/(π²k²).
    """
    from minidiff.diagnostics import reports, studies
    plot = _data_and_plot(out, plot)
    if points % 2 == 0:
        raise click.BadParameter(f"{points} is even; give an odd number so that α = 0 is on the slice",
                                 param_hint="--points")
    _loadable_runs(runs)
    pair = interpolate and len(runs) >= 2
    if pair and not studies.same_network(runs[0], runs[1]):
        raise click.UsageError(f"runs {runs[0]!r} and {runs[1]!r} have different networks; use --no-interpolate")
    results = studies.landscapes_of_runs(runs, span=span, points=points, grid=grid, n=n, seed=seed, weights=weights,
                                         progress=not quiet)
    line = studies.interpolation_between(runs[0], runs[1], n=n, seed=seed, weights=weights) if pair else None
    written = reports.write_landscape(results, line, out, plot)
    _echo_lines(reports.landscape_table(results), written)


@main.command()
@_list_option("--lrs", "1e-3,1e-2,1e-1,1", "peak learning rates", parse=float, check=_positive)
@_list_option("--targets", "eps,x0,v,score,mu", "targets", check=_target_name)
@_list_option("--schedules", "cosine", "schedules", check=_schedule_name)
@_list_option("--weightings", "uniform", "loss weightings", check=_weighting_name)
@_list_option("--seeds", "0,1", "seeds", parse=int)
@option("--dataset", "toy dataset")
@option("--T", "diffusion steps", type=click.IntRange(min=1))
@click.option("--steps", type=click.IntRange(min=1), default=2000, show_default=True, help="training steps per run")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--hidden", type=click.IntRange(min=1), default=64, show_default=True, help="width of the MLP")
@click.option("--depth", type=click.IntRange(min=1), default=2, show_default=True, help="hidden layers")
@click.option("--check-every", type=click.IntRange(min=1), default=250, show_default=True,
              help="steps between checks (and parameter snapshots)")
@click.option("--quality-n", type=click.IntRange(min=2), default=500, show_default=True,
              help="samples and held-out points of each quality check")
@click.option("--quality-steps", type=click.IntRange(min=1), default=100, show_default=True,
              help="sampling steps of each quality check (ancestral, respaced)")
@click.option("--quality-bar", type=click.FloatRange(min=0, min_open=True), default=None,
              help="energy distance that counts as reached [default: 3 x the data-vs-data floor]")
@click.option("--workers", type=click.IntRange(min=1), default=os.cpu_count() or 1, show_default=True,
              help="parallel processes")
@click.option("--out", type=click.Path(file_okay=False), default="sweep", show_default=True, help="sweep folder")
@click.option("--force", is_flag=True, help="overwrite an existing sweep folder")
@click.option("--quiet", is_flag=True, help="no progress bar")
@device_option
def sweep(lrs, targets, schedules, weightings, seeds, dataset, T, steps, batch_size, hidden, depth, check_every,
          quality_n, quality_steps, quality_bar, workers, out, force, quiet):
    """Stability sweep: learning rate × target × schedule × weighting × seed, in parallel processes.

    Records divergence, steps to the quality bar, final energy distance (with its floor) and the ELBO of every
    cell in OUT/sweep.csv and OUT/sweep.json, draws OUT/sweep.png, and keeps each run (with its parameter
    snapshots, for `minidiff landscape` and `minidiff gradvar`) in OUT/runs.
    """
    from minidiff.diagnostics import reports, sweep as sweeps
    from minidiff.train import ConfigError, TrainConfig, validate
    base = dict(dataset=dataset, T=T, steps=steps, batch_size=batch_size, hidden=hidden, depth=depth,
                log_every=check_every, checkpoint_every=check_every)
    try:
        validate(TrainConfig(**base, schedule=schedules[0], target="v"))
    except ConfigError as err:
        raise click.UsageError(str(err)) from None
    _prepare_sweep_out(out, force)
    settings = sweeps.SweepConfig(lrs=lrs, targets=targets, schedules=schedules, weightings=weightings, seeds=seeds,
                                  base=base, check_every=check_every, quality_n=quality_n,
                                  quality_steps=quality_steps, quality_bar=quality_bar)
    click.echo(f"{len(sweeps.cells(settings))} runs of {steps} steps on {dataset}, {workers} worker(s), into {out}")
    rows = sweeps.run_sweep(settings, out, workers=min(workers, len(sweeps.cells(settings))), progress=not quiet)
    _echo_lines(reports.sweep_table(rows), reports.write_sweep(rows, out))


def _prepare_sweep_out(out, force):
    """A usage error for a file in the way, or a sweep already there without --force (which clears it)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise click.UsageError(f"--out {out!r} is a file, not a folder")
    if os.path.exists(os.path.join(out, "sweep.json")) or os.path.isdir(os.path.join(out, "runs")):
        if not force:
            raise click.UsageError(f"folder {out!r} already holds a sweep; use --force to overwrite it")
        shutil.rmtree(os.path.join(out, "runs"), ignore_errors=True)


# --- the study: every figure and docs/study.md (minidiff.study) ------------------------------------------------

@main.command("figures")
@click.option("--quick", is_flag=True, help="small budgets: the whole set in a few minutes (to check, not to read)")
@click.option("--only", "names", multiple=True, metavar="NAME", help="only these figures (repeat); default: all")
@click.option("--out", type=click.Path(file_okay=False), default="figures", show_default=True, help="output folder")
@click.option("--svg", is_flag=True, help="also write SVG files")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=os.cpu_count() or 1, show_default=True,
              help="processes for the stability sweep")
@click.option("--study", type=click.Path(dir_okay=False), default=None,
              help="also write the study (markdown) from the data [default: docs/study.md for a full set]")
@click.option("--quiet", is_flag=True, help="no progress bar")
def figures_command(quick, names, out, svg, seed, workers, study, quiet):
    """Regenerate every figure of the project (and the study's numbers) from scratch."""
    from minidiff import study as study_module
    from minidiff.study import report
    unknown = [n for n in names if n not in study_module.FIGURE_NAMES]
    if unknown:
        raise click.BadParameter(f"unknown figure {unknown[0]!r}; choose from: {', '.join(study_module.FIGURE_NAMES)}",
                                 param_hint="--only")
    if os.path.exists(out) and not os.path.isdir(out):
        raise click.BadParameter(f"{out!r} is a file", param_hint="--out")
    if study is not None:
        _check_output_file(study, (".md",))
    elif not quick and not names and out == "figures":
        study = os.path.join("docs", "study.md")
    chosen = list(names) or list(study_module.FIGURE_NAMES)
    written = study_module.regenerate(chosen, out, quick=quick, seed=seed, svg=svg, workers=workers,
                                      progress=not quiet)
    click.echo(f"wrote {len(written)} files into {out}")
    if study is not None:
        missing = [n for n in report.NEEDED if not os.path.exists(study_module.data_path(out, n))]
        if missing:
            raise click.ClickException(f"the study needs the data of {', '.join(missing)}; run without --only")
        report.write(out, study)
        click.echo(f"wrote {study}")


if __name__ == "__main__":
    main()
