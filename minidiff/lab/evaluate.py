"""Evaluating a model: a trained run or the exact oracle, by its bound, its probability-flow NLL and the exact NLL.

What `minidiff elbo` computes, one model to a column of its table:
- the variational bound on −log p_θ(x_0), term by term (elbo.py; post eq. 3);
- the probability-flow ODE's −log p_θ(x_0), exact up to the solver's tolerance (likelihood.py);
- for a mixture dataset, the exact −log p_data(x_0) (mixture.py), and the gaps to it of both.
The models are a trained run's network (its EMA or raw weights) and the analytic optimal denoiser of a mixture
(`mixture.oracle`): the best any network trained on that schedule can do, and so the floor of both gaps.

The points are n fresh points of the dataset, drawn from a generator of their own (a child of SeedSequence(seed)),
apart from the noise of the bound (default_rng(seed)); a run trained on a data file is evaluated on its held-out
points. A gap is paired — bound − exact on the same points — so the spread of the data's own NLL cancels from its
standard error. Everything is in nats per example, and in bits per dimension: nats / (D ln 2).

`evaluate(ElboConfig(...))` is the command's entry point: it checks what the config asks for (`setup_of`: a run or
the oracle, options that go together, a plot that has every term), then measures.
"""
import dataclasses
import os
from typing import Callable, NamedTuple, Optional

import numpy as np

from minidiff.runs import checkpoint, files, loop as run
from minidiff.runs.progress import open_bar, silent
from minidiff import data, likelihood, mixture
from minidiff.elbo import check_terminal_snr, elbo
from minidiff.errors import RunError, UsageError, check_number
from minidiff.schedules import Schedule, make_schedule
from minidiff.targets import canonical_target
from minidiff.train import make_problem, model_fn

ORACLE_DEFAULTS = {"dataset": "gmm2d", "schedule": "cosine", "T": 1000, "target": "v"}  # the oracle alone
ODE_BAR = 1000  # the probability-flow progress bar counts thousandths of the ODE's time interval
TITLE_WIDTH, COLUMN_WIDTH = 38, 22  # the table: the title of a row, then one column per model


class EvaluationError(UsageError):
    """A run, dataset, schedule or target that cannot be evaluated, found before any work."""


class Model(NamedTuple):
    """One column: model(x_t, t) predicting `target`; the standardisation of its run (None: the model sees the data
    as they are); the same model in a form whose Jacobian trace the probability-flow ODE can take."""

    model: Callable
    target: str
    stats: Optional[dict]
    differentiable: Callable


class Setup(NamedTuple):
    """What is evaluated: {label: Model}, their schedule, the points x0 (n, D) in data space, the data's name, and
    for discrete data (on its grid in [−1, 1], not standardised) its number of levels."""

    models: dict
    schedule: Schedule
    x0: np.ndarray
    name: str
    levels: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class ElboConfig:
    """What `minidiff elbo` evaluates: the run in run_dir (with oracle, the optimal denoiser beside it), or without
    run_dir the oracle alone, of dataset, schedule, T, zero_terminal_snr and target (None: ORACLE_DEFAULTS)."""
    run_dir: str = None
    oracle: bool = False
    dataset: str = None
    schedule: str = None
    T: int = None
    zero_terminal_snr: bool = False
    target: str = None
    weights: str = "ema"  # runs.folder.WEIGHTS
    n: int = 1000
    seed: int = 0
    variance: str = "beta_tilde"  # forward.VARIANCES: σ_t² of p(x_{t-1}|x_t) and of the decoder
    t_sampling: str = "exact"  # elbo.ESTIMATES
    ode: bool = True
    rtol: float = likelihood.RTOL
    atol: float = likelihood.ATOL
    plot: str = None  # where the caller will draw L_t against t (.png/.svg): checked here, before any work


class Evaluation(NamedTuple):
    """What `evaluate` measured: the setup, {label: elbo.Bound}, {label: FlowNLL}, the exact NLL (or None), a title,
    and for discrete data the bounds with the discretised decoder ({label: elbo.Bound}; {} otherwise)."""
    setup: Setup
    bounds: dict
    flows: dict
    exact: Optional[np.ndarray]
    title: str
    discrete: dict = {}


def evaluate(config, *, progress=None, echo=silent):
    """The bounds and PF-ODE NLLs that `config` asks for, after every check (`setup_of`); echo(line) hears what is
    evaluated before the work starts. RuntimeError when the ODE solver gives up."""
    setup = setup_of(config)
    echo(f"{config.n} points of {setup.name}; {setup.schedule.describe()}; σ_t² = {config.variance}, "
         f"t: {config.t_sampling}")
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # a broken model is reported below, not warned about
            bounds, flows = likelihoods(setup, seed=config.seed, variance=config.variance,
                                        t_sampling=config.t_sampling, ode=config.ode, rtol=config.rtol,
                                        atol=config.atol, progress=progress)
    except likelihood.SolverError as err:
        raise RunError(f"{config.run_dir or 'the oracle'}: {err}") from None
    title = f"{setup.name}, {setup.schedule.name}, T = {setup.schedule.T}"
    discrete = discrete_bounds(setup, seed=config.seed, variance=config.variance, t_sampling=config.t_sampling,
                               progress=progress)
    _check_finite(config, {**bounds, **flows, **{f"{k} (discrete)": v for k, v in discrete.items()}})
    return Evaluation(setup, bounds, flows, exact_nll(setup.name, setup.x0), title, discrete)


def _check_finite(config, results):
    """A RunError naming the run for a bound or NLL that is NaN or Inf: it is never reported as if it were one."""
    broken = [label for label, result in results.items() if not np.isfinite(result.nats)]
    if broken:
        raise RunError(f"the likelihood of {config.run_dir or 'the oracle'!r} is NaN or Inf ({', '.join(broken)}): "
                       f"its model's predictions are not finite (has it diverged?)")


def setup_of(config):
    """The Setup of the run (and the oracle beside it), or of the oracle alone; a UsageError for a plot that lacks
    terms, options that do not go together, or a run, dataset, schedule or target that cannot be evaluated."""
    if config.plot is not None:
        files.check_output_file(config.plot, files.FIGURE_EXTENSIONS)
        if config.t_sampling != "exact":
            raise UsageError("the plot of L_t needs every term: use --t-sampling exact", option="--plot")
    check_number(config.rtol, "--rtol")
    check_number(config.atol, "--atol")
    if config.run_dir is None and not config.oracle:
        raise UsageError("give a RUN folder, or --oracle (with --dataset, --schedule, --T) for the exact optimal "
                         "denoiser of a mixture")
    oracle = {key: getattr(config, key) for key in ("dataset", "schedule", "T", "zero_terminal_snr", "target")}
    given = [f"--{key.replace('_', '-')}" for key, value in oracle.items() if value]
    if config.run_dir is not None and given:
        raise UsageError(f"{', '.join(given)} come from the run; give them only without RUN (with --oracle)")
    if config.run_dir is None:
        return oracle_setup(**oracle, n=config.n, seed=config.seed)
    return run_setup(config.run_dir, weights=config.weights, n=config.n, seed=config.seed, with_oracle=config.oracle)


def _points_rng(seed):
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])


def _oracle(mix, schedule, target):
    model = mixture.oracle(mix, schedule, target)
    return Model(model, target, None, model)  # analytic: it carries its own jacobian_trace


def oracle_setup(dataset=None, schedule=None, T=None, zero_terminal_snr=False, target=None, *, n, seed):
    """The optimal denoiser of a mixture dataset alone, on n of its points (ORACLE_DEFAULTS for what is not given)."""
    name = dataset or ORACLE_DEFAULTS["dataset"]
    try:
        mix = data.get_mixture(name)
        target = canonical_target(target or ORACLE_DEFAULTS["target"])
        schedule = make_schedule(schedule or ORACLE_DEFAULTS["schedule"], T or ORACLE_DEFAULTS["T"],
                                 zero_terminal_snr=zero_terminal_snr, warn=False)
        check_terminal_snr(schedule, target)
    except ValueError as err:  # an unknown dataset, target or schedule (ScheduleError), or an undefined target
        raise EvaluationError(str(err)) from None
    return Setup({"oracle": _oracle(mix, schedule, target)}, schedule, mix.sample(n, _points_rng(seed)), name)


def run_setup(run_dir, *, weights="ema", n, seed, with_oracle=False):
    """A trained run's network ('ema' or 'raw' weights), with_oracle beside the optimal denoiser of its mixture
    dataset, on n fresh points of its dataset (at most n of its held-out points for a data file)."""
    try:
        config, _, stats, state = run.load_run(run_dir)
    except (checkpoint.CheckpointError, KeyError, TypeError, ValueError, OSError) as err:
        raise EvaluationError(f"cannot load run {run_dir!r}: {err}") from None
    problem = make_problem(config)
    params = state.ema if weights == "ema" else state.params
    models = {"network": Model(model_fn(params, problem, config), problem.target, stats,
                               likelihood.network_model(params, problem, config))}
    if with_oracle:
        models["oracle"] = _oracle(_mixture_of_run(run_dir, config), problem.schedule, problem.target)
    if config.data_file:
        x0 = run.load_training_data(config, run.generators(config.seed)[0])[1][:n]
    else:
        x0 = data.sample_dataset(config.dataset, n, _points_rng(seed))
    name = os.path.basename(config.data_file) if config.data_file else config.dataset
    levels = None if config.data_file or stats is not None else data.DATASETS[config.dataset].levels
    return Setup(models, problem.schedule, x0, name, levels)


def _mixture_of_run(run_dir, config):
    if config.data_file:
        raise EvaluationError(f"--oracle needs a mixture dataset; run {run_dir!r} was trained on a data file")
    try:
        return data.get_mixture(config.dataset)
    except ValueError as err:
        raise EvaluationError(f"--oracle: {err}") from None


def exact_nll(name, x0):
    """−log p_data(x_0) of each point, (n,), for a dataset with an exact density; None for the others."""
    if name in data.DATASETS and data.DATASETS[name].mixture is not None:
        return -data.get_mixture(name).log_prob(x0)
    return None


def likelihoods(setup, *, seed, variance="beta_tilde", t_sampling="exact", ode=True, rtol=likelihood.RTOL,
                atol=likelihood.ATOL, progress=None):
    """({label: elbo.Bound}, {label: likelihood.FlowNLL}, empty without `ode`) of every model of `setup`, each bound
    with the noise of default_rng(seed); progress bars on stderr. RuntimeError when the ODE solver gives up."""
    calls = {"exact": setup.schedule.T, "importance": setup.schedule.T + 1, "uniform": 1}[t_sampling]  # see elbo()
    bounds, flows = {}, {}
    for label, (model, target, stats, differentiable) in setup.models.items():
        with _bar(calls, f"bound ({label})", progress) as bar:
            bounds[label] = elbo(model, setup.schedule, setup.x0, target=target, rng=np.random.default_rng(seed),
                                 variance=variance, t_sampling=t_sampling, stats=stats, progress=bar.update)
        if ode:
            with _bar(ODE_BAR, f"PF-ODE ({label})", progress) as bar:
                flows[label] = likelihood.flow_nll(differentiable, setup.schedule, setup.x0, target=target,
                                                   rtol=rtol, atol=atol, stats=stats, progress=_fraction_bar(bar))
    return bounds, flows


def discrete_bounds(setup, *, seed, variance="beta_tilde", t_sampling="exact", progress=None):
    """{label: elbo.Bound} with the discretised decoder (Ho et al. 2020, eq. 13) for discrete data, on the same
    noise as `likelihoods` (so only L_0 differs for t_sampling 'exact'); {} for continuous data."""
    if setup.levels is None:
        return {}
    calls = {"exact": setup.schedule.T, "importance": setup.schedule.T + 1, "uniform": 1}[t_sampling]
    bounds = {}
    for label, (model, target, stats, _) in setup.models.items():
        with _bar(calls, f"discrete bound ({label})", progress) as bar:
            bounds[label] = elbo(model, setup.schedule, setup.x0, target=target, rng=np.random.default_rng(seed),
                                 variance=variance, t_sampling=t_sampling, stats=stats, progress=bar.update,
                                 levels=setup.levels)
    return bounds


def _bar(length, label, progress):
    return open_bar(progress, length, label)


def _fraction_bar(bar):
    """progress(fraction) for the ODE solver, moving `bar` (of length ODE_BAR) without rounding drift."""
    done = [0.0]

    def progress(fraction):
        before = round(ODE_BAR * done[0])
        done[0] += fraction
        bar.update(round(ODE_BAR * done[0]) - before)
    return progress


# --- the table --------------------------------------------------------------------------------------------------

def table(bounds, flows, exact, discrete=None):
    """The lines of the table, each model a column: the terms of the bound, the bound, the PF-ODE NLL, and the
    gaps to the exact NLL (None: no exact density), each in nats per example and then in bits per dimension; for
    discrete data (`discrete_bounds`) the bound on −log P(x_0) beside the continuous one moved onto the values."""
    labels, dim = list(bounds), bounds[next(iter(bounds))].dim
    rows = [("nats per example", labels),
            ("L_T   prior KL(q(x_T|x_0) || N(0,I))", [f"{bounds[k].prior:.4f}" for k in labels]),
            ("Σ L_t denoising KLs, t = 1 … T−1", [f"{bounds[k].denoising:.4f}" for k in labels]),
            ("L_0   decoder −log p(x_0|x_1)", [f"{bounds[k].decoder:.4f}" for k in labels])]
    if any(b.log_scale for b in bounds.values()):
        rows.append(("Σ log std (standardised data)", [f"{bounds[k].log_scale:.4f}" for k in labels]))
    rows += [("bound on −log p(x_0)", [_mean_se(bounds[k].per_example) for k in labels]),
             ("  in bits/dim", [f"{bounds[k].bits_per_dim:.4f}" for k in labels])]
    if flows:
        rows += [("PF-ODE −log p(x_0)", [_mean_se(flows[k].per_example) for k in labels]),
                 ("  in bits/dim", [f"{flows[k].bits_per_dim:.4f}" for k in labels])]
    if exact is not None:
        rows += [("exact −log p_data(x_0)", [_mean_se(exact)] * len(labels)),
                 ("  in bits/dim", [f"{exact.mean() / (dim * np.log(2)):.4f}"] * len(labels)),
                 ("gap: bound − exact", [_mean_se(bounds[k].per_example - exact) for k in labels])]
        if flows:
            rows.append(("gap: PF-ODE − exact", [_mean_se(flows[k].per_example - exact) for k in labels]))
    if discrete:
        rows += _discrete_rows(bounds, discrete, labels)
    return [f"{title:<{TITLE_WIDTH}}" + "".join(f"{v:>{COLUMN_WIDTH}}" for v in values) for title, values in rows]


def _mean_se(values):
    """mean ± standard error over the points (for a gap: paired on the same points, so the data's spread cancels)."""
    return f"{values.mean():.4f} ± {values.std(ddof=1) / np.sqrt(len(values)):.4f}"


def _discrete_rows(bounds, discrete, labels):
    """The discrete bound's rows; the continuous bound converts to the values by adding D log(1/Δ) (discrete.py)."""
    levels = discrete[labels[0]].levels
    per_dim = np.log2((levels - 1) / 2.0)  # log₂(1/Δ), Δ = 2/(levels − 1)
    return [(f"discrete data, {levels} levels", [""] * len(labels)),
            ("L_0   discretised −log P(x_0|x_1)", [f"{discrete[k].decoder:.4f}" for k in labels]),
            ("bound on −log P(x_0)", [_mean_se(discrete[k].per_example) for k in labels]),
            ("  in bits/dim", [f"{discrete[k].bits_per_dim:.4f}" for k in labels]),
            ("continuous bound + log2(1/Δ), bits/dim", [f"{bounds[k].bits_per_dim + per_dim:.4f}" for k in labels])]
