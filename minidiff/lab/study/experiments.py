"""The experiments of the study, one pair per figure: `NAME(context) -> data` and `draw_NAME(data) -> Figure`.

Every data dict is plain JSON (lists, numbers, strings), so a figure can be redrawn — and the study's tables
rebuilt — from figures/data/NAME.json alone. The trained runs that several figures share (one per target on two
moons, one per target on gmm2d, the zero-terminal-SNR runs) are trained once into the context's cache and reused
while their configuration is unchanged; every run is seeded, so reusing one gives the same numbers as retraining it.
"""
import os
import warnings

import numpy as np

from minidiff import data as datasets, images
from minidiff.mixture import oracle
from minidiff.sample import sample
from minidiff.lab import figures
from minidiff.lab.diagnostics import applied
from minidiff.schedules import SCHEDULES, PriorTermWarning, make_schedule
from minidiff.targets import TARGETS, WEIGHTINGS, implied_weighting, mse_factor
from minidiff.train import TrainConfig
from minidiff.lab.study import formulations as forms, ranking, ranks, trained as shared

T = 1000  # every experiment uses the reference T of Ho et al. 2020
FORWARD_STEPS = (0, 50, 150, 300, 500, 999)
ROUND = 5  # decimals kept for points stored in JSON (samples, the forward process)
FLOOR_TIMES = 25  # timesteps at which the oracle's loss floor is estimated (Monte Carlo over x_t)
WEIGHTING_POINTS = 200  # timesteps kept per w(λ) curve, log-spaced in t so that the clean end is dense
BRIGHTNESS_DATASETS = ("brightness", "brightness32")  # 8×8 images and the same at 32×32
BRIGHTNESS_SCHEDULE, BRIGHTNESS_STEPS = "scaled_linear", 100  # Stable Diffusion's schedule leaks: √ᾱ_{T−1} = 0.068


def _quiet_schedule(name, T=T, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PriorTermWarning)
        return make_schedule(name, T, **options)


# --- noise schedules ---------------------------------------------------------------------------------------------

def schedules(context):
    rows = []
    cases = [(name, T, zero, {}) for name in SCHEDULES for zero in (False, True)]
    cases.append(("linear", 50, False, {"beta_start": 1e-4, "beta_end": 0.02}))
    for name, steps, zero, options in cases:
        s = _quiet_schedule(name, steps, zero_terminal_snr=zero, **options)
        rows.append(dict(name=name, T=steps, zero_terminal_snr=zero, unscaled=bool(options),
                         alpha_bar_last=s.alpha_bar[-1], alpha_bar_before_last=s.alpha_bar[-2], log_snr_first=s.log_snr[0],
                         log_snr_last=s.log_snr[-1] if np.isfinite(s.log_snr[-1]) else None, prior_kl=s.prior_kl))
    return dict(T=T, rows=rows)


def draw_schedules(data):
    return figures.schedules_figure(data["T"])


def forward(context):
    rng = np.random.default_rng(context.seed)
    x0 = datasets.sample_dataset("moons", 1000, rng)
    s = _quiet_schedule("cosine")
    panels = []
    for t in FORWARD_STEPS:
        x_t = np.sqrt(s.alpha_bar[t]) * x0 + np.sqrt(1 - s.alpha_bar[t]) * rng.standard_normal(x0.shape)
        panels.append(dict(t=t, alpha_bar=s.alpha_bar[t], snr=s.snr[t], points=np.round(x_t, ROUND)))
    return dict(dataset="moons", schedule="cosine", T=T, panels=panels)


def draw_forward(data):
    return figures.forward_figure(data)


# --- targets and weightings ------------------------------------------------------------------------------------

def target_scale(context):
    n = context.budget.gradvar_n
    study = applied.target_study("gmm2d", ["cosine", "linear"], TARGETS, ["uniform"], T=T, n=n, n_times=FLOOR_TIMES,
                                 seed=context.seed)
    at = [0, T // 2, T - 1]  # k_X(t) = ‖X − X̂‖² / ‖x_0 − x0_hat‖²: how an error in x_0 shows in each target
    factors = {name: {target: dict(t=at, k=mse_factor(target, _quiet_schedule(name), np.array(at)))
                      for target in TARGETS} for name in ("cosine", "linear")}
    return dict(dataset="gmm2d", T=T, scales=study["scales"], floors=study["floors"], mse_factor=factors)


def draw_target_scale(data):
    floors = {key: {target: tuple(curve) for target, curve in panel.items()} for key, panel in data["floors"].items()}
    return figures.target_scale_figure(data["scales"], floors)


# (schedule, time sampler) rows of the weighting figure: t uniform on three schedules, then SD3's samplers on the
# rectified flow and EDM's log-normal on cosine (Esser et al. 2024, §3.1; Karras et al. 2022, Table 1)
WEIGHTING_ROWS = (("cosine", "uniform"), ("linear", "uniform"), ("rectified_flow", "uniform"),
                  ("rectified_flow", "logit-normal"), ("rectified_flow", "mode"), ("rectified_flow", "cosmap"),
                  ("cosine", "log-normal"))


def weighting(context):
    """w(λ) of every (target, weighting, time sampler) triple; panels 'schedule, weighting[, sampler]'."""
    panels = {}
    for schedule, sampler in WEIGHTING_ROWS:
        s = _quiet_schedule(schedule)
        keep = np.unique(np.geomspace(1, T, WEIGHTING_POINTS).astype(int) - 1)  # dense where λ changes fast
        for name in (w for w in WEIGHTINGS if w != "learned"):  # learned: w(λ) is a trained run's (gradvar RUN)
            curves = {}
            for target in TARGETS:
                with np.errstate(all="ignore"):
                    lam, w = implied_weighting(name, target, s, sampler)
                curves[target] = dict(log_snr=lam[keep], w=w[keep])
            panels[f"{schedule}, {name}" + ("" if sampler == "uniform" else f", {sampler}")] = curves
    return dict(T=T, panels=panels)


def draw_weighting(data):
    return figures.weighting_figure(data)


def elbo_terms(context):
    return shared.oracle_bounds(context)


def draw_elbo_terms(data):
    return figures.bound_table_figure(data)


# --- training, per target ----------------------------------------------------------------------------------------

def training(context):
    rows = []
    for target in TARGETS:
        out, config = shared.moons_run(context, target)
        log = np.loadtxt(os.path.join(out, "loss_log.csv"), delimiter=",", skiprows=1, ndmin=2)
        quality = shared.quality(context, out)
        del quality["samples"]  # drawn by the `samples` figure
        rows.append(dict(target=target, steps=log[:, 0], loss=log[:, 1], grad_norm=log[:, 2],
                         loss_by_t=log[:, 3:13], **quality))
    return dict(dataset="moons", schedule=TrainConfig.schedule, T=T, steps=context.budget.train_steps,
                snapshot_every=context.budget.snapshot_every, quality_n=context.budget.quality_n, rows=rows)


def draw_training(data):
    return figures.training_figure(data)


def samples(context):
    panels = []
    for target in TARGETS:
        out, _ = shared.moons_run(context, target)
        quality = shared.quality(context, out)
        panels.append(dict(target=target, samples=np.round(quality.pop("samples"), ROUND), **quality))
    held = shared.held_out(context, "moons")
    return dict(dataset="moons", held_out=np.round(held, ROUND), panels=panels)


def draw_samples(data):
    return figures.samples_grid_figure(data)


# --- gradient noise, landscapes, trajectories --------------------------------------------------------------------

def gradvar(context):
    records = applied.gradvar_at_init("moons", ["cosine", "linear"], TARGETS, ["uniform", "min-snr", "elbo"], T=T,
                                      n=context.budget.gradvar_n, seed=context.seed)
    return dict(n=context.budget.gradvar_n, records=records)


def draw_gradvar(data):
    return figures.gradvar_figure(data["records"])


def gradvar_along(context):
    run_dirs = [shared.moons_run(context, target)[0] for target in TARGETS]
    records = applied.gradvar_of_runs(run_dirs, n=context.budget.gradvar_n, seed=context.seed)
    for record in records:
        record["source"] = os.path.basename(record["source"])
    return dict(records=records)


def draw_gradvar_along(data):
    return figures.gradvar_along_figure(data["records"])


def landscape(context):
    return context.memo("landscape", lambda: _landscapes(context))


def _landscapes(context):
    b = context.budget
    results = []
    for target in TARGETS:
        out, _ = shared.moons_run(context, target)
        result = applied.landscape_of_run(out, points=b.landscape_points, grid=b.landscape_grid, n=b.landscape_n,
                                          seed=context.seed)
        result["run"] = os.path.basename(result["run"])
        results.append(result)
    return dict(results=results)


def draw_landscape(data):
    return figures.landscape_figure(data["results"])


def trajectory(context):
    """The PCA of each run's path: computed with the landscapes (the loss on the PCA plane needs the same batch)."""
    results = context.memo("landscape", lambda: landscape(context))["results"]
    return dict(results=[dict(target=r["target"], pca=r["pca"]) for r in results if "pca" in r])


def draw_trajectory(data):
    return figures.trajectory_figure(data["results"])


# --- stability, likelihood, terminal SNR -------------------------------------------------------------------------

def nll(context):
    return shared.trained_likelihoods(context)


def draw_nll(data):
    return figures.nll_figure(data)


# --- what the terminal SNR does to images ---------------------------------------------------------------------------

def brightness(context):
    """The brightness of the exact denoiser's samples (v, DDPM and DDIM η = 0) on scaled_linear, with and without
    zero terminal SNR, and the data's. leaked_snr = SNR_{T−1} · D · Var(b): the signal-to-noise ratio of the
    brightness still in x_T (its direction 1/√D carries √D b)."""
    n, rows = context.budget.quality_n, []
    for name in BRIGHTNESS_DATASETS:
        mixture, rng = datasets.get_mixture(name), np.random.default_rng(context.seed)
        data = images.brightness(mixture.sample(n, rng))
        runs = []
        for zero in (False, True):
            schedule = _quiet_schedule(BRIGHTNESS_SCHEDULE, zero_terminal_snr=zero)
            for sampler in ("ddpm", "ddim"):
                x = sample(oracle(mixture, schedule, "v"), "v", schedule, (n, mixture.dim), rng, sampler=sampler,
                           steps=BRIGHTNESS_STEPS)
                b = images.brightness(x)
                runs.append(dict(sampler=sampler, zero_terminal_snr=zero, brightness=np.round(b, ROUND), std=b.std(),
                                 beyond=np.mean(np.abs(b) > images.BRIGHTNESS_CENTRE)))
        leaked = _quiet_schedule(BRIGHTNESS_SCHEDULE).snr[-1] * mixture.dim * data.var()
        rows.append(dict(dataset=name, dim=mixture.dim, data=np.round(data, ROUND), std=data.std(), leaked_snr=leaked,
                         beyond=np.mean(np.abs(data) > images.BRIGHTNESS_CENTRE), runs=runs))
    return dict(schedule=BRIGHTNESS_SCHEDULE, T=T, steps=BRIGHTNESS_STEPS, target="v", n=n, rows=rows)


def draw_brightness(data):
    return figures.brightness_figure(data)


# --- the second edition: formulations ranked, their learning-rate ranges, schedules by exact KL -------------------

def _edition(context, groups, dataset=None):
    """The cells of `groups` (on `dataset`, if given) of the second edition's runs (ranking.py), with its settings."""
    data = context.memo("ranking", lambda: ranking.measure_all(context))
    return dict(data, cells=[c for c in data["cells"] if c["group"] in groups
                             and (dataset is None or c["dataset"] == dataset)])


def formulation_ranking(context):
    return _edition(context, ("rank",))


def draw_formulation_ranking(data):
    return figures.ranking_figure(ranks.ranking(data), ranks.metric_columns(data))


def lr_stability(context):
    return _edition(context, ("rank", "lr"), forms.STABILITY_DATASET)


def draw_lr_stability(data):
    table, _ = ranks.stability(data)
    return figures.lr_stability_figure(table, sorted(data["settings"]["lrs"]), data["settings"]["seeds"])


def schedule_kl(context):
    return _edition(context, ("schedule", "resolution"))


def draw_schedule_kl(data):
    return figures.schedule_kl_figure(ranks.schedule_table(data), ranks.resolution_table(data))
