"""The minidiff command line: `minidiff COMMAND --help` (or `python cli.py COMMAND --help`).

Each command parses and validates its options, then calls one library function; nothing is written before the
options are known to be good. Usage errors exit with code 2 and one line (click's convention).
"""
import dataclasses
import os
import shutil
import warnings

import click
import numpy as np

from minidiff import checkpoint, data, figures, schedules as schedules_module
from minidiff.train import ON_DIVERGENCE, TrainConfig

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
    from minidiff import run
    config = TrainConfig(**options)
    out = out or os.path.join("runs", f"{_data_name(config)}-{config.target}-{config.schedule}-s{config.seed}")
    _check_flags(resume, force)
    config = _resumable(out, config) if resume else config
    name = _data_name(config)
    _check_config(config)
    if not resume:
        _prepare_out(out, force)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", schedules_module.PriorTermWarning)
        from minidiff.train import make_problem
        make_problem(config)
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    click.echo(f"training {config.target} on {name} ({config.schedule}, T={config.T}, {config.weighting}) "
               f"for {config.steps} steps into {out}")
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
    if not os.path.isfile(os.path.join(out, checkpoint.CONFIG_FILE)):
        raise click.UsageError(f"cannot resume {out!r}: it has no {checkpoint.CONFIG_FILE}, so no run to continue; "
                               f"start the run without --resume")
    try:
        stored, network, _ = run.load_config(out)
        has_checkpoint = os.path.exists(os.path.join(out, checkpoint.CHECKPOINT_FILE))  # not before step 0 was saved
        step = run.load_checkpoint(out, stored, network)[0].step if has_checkpoint else 0
    except checkpoint.CheckpointError as err:
        raise click.UsageError(f"cannot resume {out!r}: {err}") from None
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


@main.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(exists=True, file_okay=False))
@click.option("--n", type=click.IntRange(min=1), default=2000, show_default=True, help="number of samples")
@click.option("--sampler", type=click.Choice(["ddpm", "ddim", "ode"]), default="ddpm", show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=None, help="sampling steps [default: T]")
@click.option("--spacing", type=click.Choice(schedules_module.SPACINGS), default="linspace", show_default=True)
@click.option("--eta", type=click.FloatRange(min=0), default=0.0, show_default=True, help="DDIM's η")
@click.option("--variance", type=click.Choice(["beta_tilde", "beta"]), default="beta_tilde", show_default=True,
              help="DDPM's σ_t²")
@click.option("--clip", type=click.FloatRange(min=0, min_open=True), default=None, help="clip x0_hat to ±CLIP")
@click.option("--weights", type=click.Choice(["ema", "raw"]), default="ema", show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="save the samples (.npy)")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="save a plot (.png/.svg)")
def sample(run_dir, n, sampler, steps, spacing, eta, variance, clip, weights, seed, out, plot):
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
        x = draw(model, config.target, problem.schedule, (n, network.data_dim), np.random.default_rng(seed),
                 sampler=sampler, steps=steps, spacing=spacing, eta=eta, variance=variance, clip=clip)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    if stats is not None:
        x = data.unstandardize(x, stats)
    if out:
        checkpoint.atomic_write(out, lambda f: np.save(f, x))
        click.echo(f"wrote {n} samples to {out}")
    if plot:
        figures.save(figures.samples_figure(x, held, title=f"{sampler}, {steps or config.T} steps"), plot)
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


ELBO_ORACLE_DEFAULTS = {"dataset": "gmm2d", "schedule": "cosine", "T": 1000, "target": "v"}  # `elbo --oracle` alone
ODE_BAR = 1000  # the probability-flow progress bar counts thousandths of the ODE's time interval


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
def elbo(run_dir, use_oracle, dataset, schedule, T, zero_terminal_snr, target, weights, n, seed, variance,
         t_sampling, ode, rtol, atol, plot):
    """The variational bound term by term, the probability-flow NLL, and for mixtures the exact NLL and the gap.

    `minidiff elbo RUN` evaluates a trained run (EMA weights by default) on n fresh points of its dataset (its
    held-out points for a data file); `minidiff elbo --oracle --dataset gmm2d --schedule cosine --T 1000`
    evaluates the analytic optimal denoiser alone. Nats per example and bits per dimension.
    """
    if plot is not None:
        _check_output_file(plot, (".png", ".svg"))
        if t_sampling != "exact":
            raise click.BadParameter("the plot of L_t needs every term: use --t-sampling exact", param_hint="--plot")
    models, schedule, x0, name = _elbo_setup(run_dir, use_oracle, dataset, schedule, T, zero_terminal_snr,
                                                    target, weights, n, seed)
    exact = None
    if name in data.DATASETS and data.DATASETS[name].mixture is not None:
        exact = -data.get_mixture(name).log_prob(x0)  # (n,) the exact NLL of each point
    click.echo(f"{n} points of {name}; {schedule.describe()}; σ_t² = {variance}, t: {t_sampling}")
    try:
        bounds, flows = _elbo_evaluate(models, schedule, x0, seed, variance, t_sampling, ode, rtol, atol)
    except RuntimeError as err:  # the ODE solver gave up (too many steps)
        raise click.ClickException(str(err)) from None
    _echo_elbo_table(bounds, flows, exact)
    if plot is not None:
        figures.save(figures.elbo_terms_figure(bounds, title=f"{name}, {schedule.name}, T = {schedule.T}"), plot)
        click.echo(f"wrote {plot}")


def _elbo_evaluate(models, schedule, x0, seed, variance, t_sampling, ode, rtol, atol):
    """({label: elbo.Bound}, {label: likelihood.FlowNLL}), with a progress bar over the terms and the ODE solve."""
    from minidiff import likelihood
    from minidiff.elbo import elbo as bound_of
    bounds, flows = {}, {}
    for label, (model, model_target, model_stats, ode_model) in models.items():
        calls = {"exact": schedule.T, "importance": schedule.T + 1, "uniform": 1}[t_sampling]  # see elbo()
        with click.progressbar(length=calls, label=f"bound ({label})",
                               file=click.get_text_stream("stderr")) as bar:
            bounds[label] = bound_of(model, schedule, x0, target=model_target, rng=np.random.default_rng(seed),
                                     variance=variance, t_sampling=t_sampling, stats=model_stats,
                                     progress=bar.update)
        if ode:
            with click.progressbar(length=ODE_BAR, label=f"PF-ODE ({label})",
                                   file=click.get_text_stream("stderr")) as bar:
                flows[label] = likelihood.flow_nll(ode_model, schedule, x0, target=model_target, rtol=rtol, atol=atol,
                                                   stats=model_stats, progress=_fraction_bar(bar))
    return bounds, flows


def _fraction_bar(bar):
    """progress(fraction) for the ODE solver, moving `bar` (of length ODE_BAR) without rounding drift."""
    done = [0.0]

    def progress(fraction):
        before = round(ODE_BAR * done[0])
        done[0] += fraction
        bar.update(round(ODE_BAR * done[0]) - before)
    return progress


def _elbo_setup(run_dir, use_oracle, dataset, schedule_name, T, zero_terminal_snr, target, weights, n, seed):
    """({label: (model, target, stats, differentiable model)}, schedule, x0, dataset name), or a UsageError."""
    from minidiff import likelihood, mixture, run
    from minidiff.schedules import ScheduleError, make_schedule
    from minidiff.targets import canonical_target
    from minidiff.train import make_problem, model_fn
    data_rng = np.random.SeedSequence(seed).spawn(1)[0]
    models = {}
    if run_dir is None:
        if not use_oracle:
            raise click.UsageError("give a RUN folder, or --oracle (with --dataset, --schedule, --T) for the exact "
                                   "optimal denoiser of a mixture")
        name = dataset or ELBO_ORACLE_DEFAULTS["dataset"]
        target = target or ELBO_ORACLE_DEFAULTS["target"]
        try:
            mix = data.get_mixture(name)
            target = canonical_target(target)
            schedule = make_schedule(schedule_name or ELBO_ORACLE_DEFAULTS["schedule"], T or ELBO_ORACLE_DEFAULTS["T"],
                                     zero_terminal_snr=zero_terminal_snr, warn=False)
            likelihood.check_terminal_snr(schedule, target)
        except (ValueError, ScheduleError) as err:
            raise click.UsageError(str(err)) from None
        x0 = mix.sample(n, np.random.default_rng(data_rng))
        oracle = mixture.oracle(mix, schedule, target)
        return {"oracle": (oracle, target, None, oracle)}, schedule, x0, name
    given = [flag for flag, value in (("--dataset", dataset), ("--schedule", schedule_name), ("--T", T),
                                      ("--zero-terminal-snr", zero_terminal_snr), ("--target", target)) if value]
    if given:
        raise click.UsageError(f"{', '.join(given)} come from the run; give them only without RUN (with --oracle)")
    try:
        config, _, stats, state = run.load_run(run_dir)
    except (checkpoint.CheckpointError, KeyError, TypeError, ValueError, OSError) as err:
        raise click.UsageError(f"cannot load run {run_dir!r}: {err}") from None
    problem = make_problem(config)
    schedule = problem.schedule
    name = os.path.basename(config.data_file) if config.data_file else config.dataset
    if config.data_file:
        if use_oracle:
            raise click.UsageError(f"--oracle needs a mixture dataset; run {run_dir!r} was trained on a data file")
        x0 = run.load_training_data(config, run.generators(config.seed)[0])[1][:n]
    else:
        x0 = data.sample_dataset(config.dataset, n, np.random.default_rng(data_rng))
    params = state.ema if weights == "ema" else state.params
    models["network"] = (model_fn(params, problem, config), config.target, stats,
                         likelihood.network_model(params, problem, config))
    if use_oracle:
        try:
            mix = data.get_mixture(config.dataset)
        except ValueError as err:
            raise click.UsageError(f"--oracle: {err}") from None
        oracle = mixture.oracle(mix, schedule, config.target)
        models["oracle"] = (oracle, config.target, None, oracle)
    return models, schedule, x0, name


def _echo_elbo_table(bounds, flows, exact):
    """Each model a column: the terms of the bound, the bound, the PF-ODE NLL, and the gaps to the exact NLL."""
    labels, dim = list(bounds), bounds[next(iter(bounds))].dim
    _row("nats per example", labels)
    _row("L_T   prior KL(q(x_T|x_0) || N(0,I))", [f"{bounds[k].prior:.4f}" for k in labels])
    _row("Σ L_t denoising KLs, t = 1 … T−1", [f"{bounds[k].denoising:.4f}" for k in labels])
    _row("L_0   decoder −log p(x_0|x_1)", [f"{bounds[k].decoder:.4f}" for k in labels])
    if any(b.log_scale for b in bounds.values()):
        _row("Σ log std (standardised data)", [f"{bounds[k].log_scale:.4f}" for k in labels])
    _row("bound on −log p(x_0)", [_mean_se(bounds[k].per_example) for k in labels])
    _row("  in bits/dim", [f"{bounds[k].bits_per_dim:.4f}" for k in labels])
    if flows:
        _row("PF-ODE −log p(x_0)", [_mean_se(flows[k].per_example) for k in labels])
        _row("  in bits/dim", [f"{flows[k].bits_per_dim:.4f}" for k in labels])
    if exact is not None:
        _row("exact −log p_data(x_0)", [_mean_se(exact)] * len(labels))
        _row("  in bits/dim", [f"{exact.mean() / (dim * np.log(2)):.4f}"] * len(labels))
        _row("gap: bound − exact", [_mean_se(bounds[k].per_example - exact) for k in labels])
        if flows:
            _row("gap: PF-ODE − exact", [_mean_se(flows[k].per_example - exact) for k in labels])


def _row(title, values):
    click.echo(f"{title:<38}" + "".join(f"{v:>22}" for v in values))


def _mean_se(values):
    """mean ± standard error over the points (for a gap: paired on the same points, so the data's spread cancels)."""
    return f"{values.mean():.4f} ± {values.std(ddof=1) / np.sqrt(len(values)):.4f}"


if __name__ == "__main__":
    main()
