"""The study: the experiments behind every figure in figures/ and every number in docs/study.md.

`minidiff figures` runs them. Each entry of `FIGURES` computes its data — plain JSON, saved as
figures/data/NAME.json — and draws its figure from that data alone (figures/NAME.png); `report.render` then fills
the tables and numbers of docs/study.md from the same JSON files, so the study carries no number typed by hand.
Everything is seeded: the same command on the same machine writes the same bytes.

Two budgets: `QUICK` renders the whole set in a few minutes on a 2-core laptop (short runs, few samples — for
checking that everything works), `FULL` is what figures/ holds.
"""
import dataclasses
import json
import os


from minidiff.accel import backend
from minidiff.lab import figures
from minidiff.runs.files import atomic_write
from minidiff.runs.progress import open_bar
from minidiff.lab.diagnostics.applied import to_plain
from minidiff.lab.study import trained


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much compute each experiment may spend."""
    name: str
    train_steps: int  # steps of each training run (moons and gmm2d, every target)
    snapshot_every: int  # parameters are kept every this many steps (trajectory PCA, gradient noise along a run)
    quality_n: int  # samples drawn for the energy distance, against as many held-out points
    gradvar_n: int  # examples for the gradient statistics
    elbo_n: int  # data points of the likelihood bounds
    ode_tol: float  # rtol = atol of the probability-flow solves
    landscape_n: int  # examples of the fixed batch a landscape is evaluated on
    landscape_points: int  # points of a 1-D slice
    landscape_grid: int  # points per side of a 2-D slice
    rank_seeds: int  # seeds of every formulation's cell (formulations.py, ranking.py)
    rank_steps: int
    rank_hidden: int
    rank_lrs: tuple  # the first is the ranking's learning rate; with the others, the stability grid
    rank_quality_n: int  # samples per energy distance at the end of a run
    rank_check_n: int  # samples per energy distance of the checks along a run
    rank_kl_n: int  # held-out points of the exact KL
    resolution_seeds: int


QUICK = Budget("quick", train_steps=300, snapshot_every=100, quality_n=500, gradvar_n=512, elbo_n=200, ode_tol=1e-3,
               landscape_n=256, landscape_points=15, landscape_grid=7, rank_seeds=2, rank_steps=100, rank_hidden=32,
               rank_lrs=(1e-2, 1e-1), rank_quality_n=200, rank_check_n=100, rank_kl_n=32, resolution_seeds=1)
FULL = Budget("full", train_steps=4000, snapshot_every=500, quality_n=2000, gradvar_n=4096, elbo_n=500,
              ode_tol=1e-5, landscape_n=1024, landscape_points=41, landscape_grid=21,
              rank_seeds=5,
              rank_steps=1000, rank_hidden=64, rank_lrs=(1e-2, 1e-3, 3e-2, 1e-1), rank_quality_n=256,
              rank_check_n=128, rank_kl_n=128, resolution_seeds=3)


# On a GPU (`minidiff figures --device gpu`) the same study with the budgets a GPU affords: twice the seeds, four
# times the steps, a 128-wide network, four times the samples. (Not yet run: no session has had a GPU for it.)
GPU = dataclasses.replace(FULL, name="gpu", rank_seeds=10, rank_steps=4000, rank_hidden=128, rank_quality_n=1024,
                          rank_check_n=512, rank_kl_n=512, resolution_seeds=5)


def budget_for(quick, device):
    """QUICK for --quick; else FULL on the CPU and GPU on a GPU."""
    return QUICK if quick else GPU if device == "gpu" else FULL


@dataclasses.dataclass(frozen=True)
class Entry:
    title: str
    compute: object  # (context) -> data (dict of plain JSON values)
    draw: object  # (data) -> matplotlib Figure


def _entries():
    from minidiff.lab.study import experiments as e
    return {
        "schedules": Entry("ᾱ, SNR and log-SNR of every schedule, with zero terminal SNR", e.schedules, e.draw_schedules),
        "forward": Entry("the forward process on two moons", e.forward, e.draw_forward),
        "target_scale": Entry("the scale of each target against t, and its irreducible loss", e.target_scale,
                              e.draw_target_scale),
        "weighting": Entry("the implied weighting w(λ) of every target and weighting", e.weighting, e.draw_weighting),
        "elbo_terms": Entry("the bound term by term for each schedule (the oracle)", e.elbo_terms, e.draw_elbo_terms),
        "training": Entry("training curves per target on two moons", e.training, e.draw_training),
        "samples": Entry("samples per target on two moons", e.samples, e.draw_samples),
        "gradvar": Entry("gradient noise against t per target, schedule and weighting", e.gradvar, e.draw_gradvar),
        "gradvar_along": Entry("gradient noise along training", e.gradvar_along, e.draw_gradvar_along),
        "landscape": Entry("loss-landscape slices per target", e.landscape, e.draw_landscape),
        "trajectory": Entry("training trajectories in their PCA plane", e.trajectory, e.draw_trajectory),
        "nll": Entry("model NLL against the oracle's exact NLL on gmm2d", e.nll, e.draw_nll),
        "formulation_ranking": Entry("formulations ranked over datasets, metrics and seeds", e.formulation_ranking,
                                     e.draw_formulation_ranking),
        "lr_stability": Entry("learning-rate ranges per formulation, by sampler", e.lr_stability, e.draw_lr_stability),
        "schedule_kl": Entry("schedules and resolution shifts by exact KL", e.schedule_kl, e.draw_schedule_kl),
        "brightness": Entry("terminal SNR and the brightness of images (the exact denoiser)", e.brightness,
                            e.draw_brightness),
    }


FIGURE_NAMES = ("schedules", "forward", "target_scale", "weighting", "elbo_terms", "training", "samples", "gradvar",
                "gradvar_along", "landscape", "trajectory", "nll", "brightness", "formulation_ranking", "lr_stability",
                "schedule_kl")


SHARED_RUNS = ("training", "samples", "gradvar_along", "landscape", "trajectory", "nll")  # the runs per target


class Context:
    """What every experiment shares: the budget, the seed, where runs are cached, worker count, progress."""

    def __init__(self, budget, seed, cache_dir, workers=1, progress=None):
        self.budget, self.seed, self.cache_dir, self.workers = budget, seed, cache_dir, workers
        self.progress = progress  # a bar factory (runs/progress.py) for the experiments' own long steps
        self._memo = {}
        os.makedirs(cache_dir, exist_ok=True)

    def path(self, *parts):
        return os.path.join(self.cache_dir, *parts)

    def memo(self, key, compute):
        """compute() once per key for this context: results that several figures share."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]


def data_path(out_dir, name):
    return os.path.join(out_dir, "data", f"{name}.json")


def load_data(out_dir, name):
    with open(data_path(out_dir, name), encoding="utf-8") as f:
        return json.load(f)


def regenerate(names, out_dir, *, quick=False, seed=0, svg=False, workers=1, progress=None):
    """Compute, save and draw each named figure into out_dir; returns the files written."""
    entries = _entries()
    budget = budget_for(quick, backend.device())
    os.makedirs(os.path.join(out_dir, "data"), exist_ok=True)
    context = Context(budget, seed, os.path.join(out_dir, "runs", budget.name), workers, progress)
    if set(names) & set(SHARED_RUNS):
        trained.prefetch(context, trained.default_jobs(context))
    written = []
    with open_bar(progress, len(names), "figures", show=lambda name: name) as bar:
        for name in names:
            data = to_plain(dict(entries[name].compute(context), figure=name, budget=budget.name, seed=seed))
            path = data_path(out_dir, name)
            atomic_write(path, lambda f: f.write((json.dumps(data, indent=1, sort_keys=True) + "\n").encode()))
            written.append(path)
            for ext in (".png", ".svg") if svg else (".png",):
                target = os.path.join(out_dir, name + ext)
                figures.save(entries[name].draw(data), target)
                written.append(target)
            bar.update(1, name)
    return written
