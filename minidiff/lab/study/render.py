"""docs/study.md from its template and the figures' data: every number in the study comes from figures/data/*.json.

The template (template.md beside this file) is markdown with placeholders `{{NAME}}` or `{{NAME:ARG:…}}`, each
replaced by VALUES[NAME](data, ARG, …): one number read from the data, or with `{{table:NAME}}` a whole markdown
table. An unknown placeholder is an error, never left in the text.
"""
import json
import math
import os
import re

import numpy as np

from minidiff.runs.files import atomic_write
from minidiff.targets import TARGETS as ALL_TARGETS
from minidiff.lab.study import FIGURE_NAMES, data_path, render_ranking
from minidiff.lab.study.text import fmt, table  # noqa: F401  (fmt: the study's number format, tested)

NEEDED = FIGURE_NAMES
TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "template.md")
TARGETS = tuple(ALL_TARGETS)
LAMBDAS = (6.0, 0.0, -6.0)  # log-SNR at which the weighting table reads w(λ): little noise, SNR = 1, much noise


def _pm(pair):
    return f"{fmt(pair[0])} ± {fmt(pair[1], 2)}"


# --- the tables ----------------------------------------------------------------------------------------------------

def schedules_table(d):
    rows = [[r["name"] + (" (β unscaled)" if r["unscaled"] else ""), str(r["T"]), "yes" if r["zero_terminal_snr"]
             else "no", r["alpha_bar_last"], r["log_snr_first"], r["log_snr_last"] if r["log_snr_last"] is not None
             else float("-inf"), r["prior_kl"]] for r in d["schedules"]["rows"]]
    return table(["schedule", "T", "zero SNR", "ᾱ_{T−1}", "λ_0", "λ_{T−1}", "prior KL (nats/dim)"], rows)


def elbo_terms_table(d):
    e = d["elbo_terms"]
    rows = [[r["label"], r["alpha_bar_last"], r["beta_tilde"]["prior"], r["beta_tilde"]["denoising"],
             r["beta_tilde"]["decoder"], _pm(r["beta_tilde"]["bound"]), _pm(r["beta"]["bound"]),
             _pm(r["beta_tilde"]["gap"]), _pm(r["beta"]["gap"]), _pm(r["flow"]["gap"])] for r in e["rows"]]
    return table(["schedule", "ᾱ_{T−1}", "L_T", "Σ L_t (β̃)", "L_0 (β̃)", "bound, σ²=β̃", "bound, σ²=β",
                  "gap, β̃", "gap, β", "PF-ODE − exact"], rows)


def _scale(d, schedule, target):
    return d["target_scale"]["scales"][schedule][target]


def target_scale_table(d):
    rows = []
    for target in TARGETS:
        curve = _scale(d, "cosine", target)
        k = d["target_scale"]["mse_factor"]["cosine"][target]["k"]
        rows.append([target, curve[0], curve[len(curve) // 2], curve[-1], _range(curve), k[0], k[1], k[2]])
    return table(["target", "RMS at t=0", "RMS at t=T/2", "RMS at t=T−1", "max / min", "k_X at t=0", "k_X at t=T/2",
                  "k_X at t=T−1"], rows)


def _record(records, target, schedule="cosine", weighting="uniform", step=None, weights=None):
    for r in records:
        if (r["target"] == target and r["schedule"] == schedule and r["weighting"] == weighting and "all" in r
                and (step is None or r["step"] == step) and (weights is None or r["weights"] == weights)):
            return r
    return None


def gradvar_table(d):
    records = d["gradvar"]["records"]
    rows = []
    for target in TARGETS:
        row = [target]
        for weighting in ("uniform", "min-snr", "elbo"):
            r = _record(records, target, weighting=weighting)
            row += [r["all"]["trace_cov"], r["all"]["b_simple"]] if r else [None, None]
        rows.append(row)
    return table(["target", "tr Σ, uniform", "B_simple, uniform", "tr Σ, min-SNR", "B_simple, min-SNR",
                  "tr Σ, ELBO", "B_simple, ELBO"], rows)


def gradvar_along_table(d):
    records = [r for r in d["gradvar_along"]["records"] if r["weights"] == "raw"]
    rows = []
    for target in TARGETS:
        mine = sorted((r for r in records if r["target"] == target), key=lambda r: r["step"])
        first, last = mine[0]["all"], mine[-1]["all"]
        rows.append([target, first["trace_cov"], last["trace_cov"], first["b_simple"], last["b_simple"]])
    return table(["target", "tr Σ at step 0", "tr Σ at the end", "B_simple at step 0", "B_simple at the end"], rows)


def landscape_table(d):
    rows = []
    for r in d["landscape"]["results"]:
        pca = r.get("pca", {})
        ratios = pca.get("ratios", [None, None])
        rows.append([r["target"], r["loss"], r["curvature_d"], r["curvature_e"], r["relative_curvature_d"],
                     r["relative_curvature_e"], ratios[0], ratios[1]])
    walk = d["landscape"]["results"][0].get("pca", {}).get("random_walk", [None, None])
    rows.append(["random walk", None, None, None, None, None, walk[0], walk[1]])
    return table(["target", "loss f(θ)", "f″ along d", "f″ along e", "f″/f along d", "f″/f along e", "PCA ratio 1",
                  "PCA ratio 2"], rows)


def _weighting_at(curve, log_snr):
    lam, w = np.asarray(curve["log_snr"], dtype=float), np.asarray(curve["w"], dtype=float)
    ok = np.isfinite(lam) & np.isfinite(w)
    return float(np.interp(-log_snr, -lam[ok], w[ok]))  # λ decreases along t


def weighting_table(d):
    panels = d["weighting"]["panels"]
    rows = [[f"{target}, uniform"] + [_weighting_at(panels["cosine, uniform"][target], lam) for lam in LAMBDAS]
            for target in TARGETS]
    rows += [[f"any target, {name}"] + [_weighting_at(panels[f"cosine, {name}"]["eps"], lam) for lam in LAMBDAS]
             for name in ("min-snr", "elbo")]
    return table(["target, weighting"] + [f"w at λ = {lam:g}" for lam in LAMBDAS], rows)


def nll_table(d):
    n = d["nll"]
    rows = []
    for r in n["rows"]:
        net, orc = r["network"], r["oracle"]
        rows.append([r["target"], _pm(net["beta_tilde"]["bound"]), _pm(net["beta"]["bound"]),
                     _pm(net["flow"]["nll"]), net["flow"]["median_gap"], str(net["flow"]["diverged_points"]),
                     _pm(orc["beta"]["bound"]), _pm(orc["flow"]["nll"])])
    return table(["target", "bound, β̃", "bound, β", "PF-ODE NLL", "PF-ODE median gap", "diverged points",
                  "oracle bound, β", "oracle PF-ODE NLL"], rows)


def training_table(d):
    rows = [[r["target"], r["loss"][0], r["loss"][-1], r["energy_distance"], r["energy_floor"]]
            for r in d["training"]["rows"]]
    return table(["target", "first logged loss", "last logged loss", "energy distance", "data floor"], rows)


def brightness_table(d):
    rows = []
    for r in d["brightness"]["rows"]:
        runs = {(x["sampler"], x["zero_terminal_snr"]): x for x in r["runs"]}
        rows.append([r["dataset"], str(r["dim"]), r["leaked_snr"], r["std"], r["beyond"]]
                    + [runs[(sampler, zero)][key] for sampler in ("ddpm", "ddim") for zero in (False, True)
                       for key in ("std", "beyond")])
    return table(["data", "D", "SNR of the brightness left in x_T", "data: std of brightness", "data: beyond ±0.5"]
                 + [f"{sampler.upper()}{', zero SNR' if zero else ''}: {key}" for sampler in ("ddpm", "ddim")
                    for zero in (False, True) for key in ("std", "beyond ±0.5")], rows)


TABLES = {"schedules": schedules_table, "elbo_terms": elbo_terms_table, "target_scale": target_scale_table,
          "gradvar": gradvar_table, "gradvar_along": gradvar_along_table, "landscape": landscape_table,
          "nll": nll_table, "training": training_table, "brightness": brightness_table,
          "weighting": weighting_table, **render_ranking.TABLES}


# --- the numbers quoted in the prose -------------------------------------------------------------------------------

def _elbo_row(d, label):
    return next(r for r in d["elbo_terms"]["rows"] if r["label"] == label)


def _training_row(d, target):
    return next(r for r in d["training"]["rows"] if r["target"] == target)


def _range(curve):
    positive = [v for v in curve if v > 0]
    return max(positive) / min(positive)


WHICH = {"first": 0, "middle": 1, "last": 2}  # t = 0, T/2, T − 1


def _schedule_row(d, name):
    return next(r for r in d["schedules"]["rows"] if r["name"] == name and r["T"] == 1000
                and not r["zero_terminal_snr"])


def _scale_at(d, schedule, target, which):
    curve = _scale(d, schedule, target)
    return curve[[0, len(curve) // 2, -1][WHICH[which]]]


def _k(d, schedule, target, which):
    return d["target_scale"]["mse_factor"][schedule][target]["k"][WHICH[which]]


def _trace_cov(d, target, weighting):
    return _record(d["gradvar"]["records"], target, weighting=weighting)["all"]["trace_cov"]


def _landscape(d, target):
    return next(r for r in d["landscape"]["results"] if r["target"] == target)


def _nll_row(d, target):
    return next(r for r in d["nll"]["rows"] if r["target"] == target)


def _along_end(d, target):
    mine = [r for r in d["gradvar_along"]["records"] if r["weights"] == "raw" and r["target"] == target]
    return max(mine, key=lambda r: r["step"])["all"]


NEAR_NOISE = 1e-3  # ᾱ_{T−1} below this: the schedule ends near pure noise (its prior term is below ~1e-3 nats)


def _near_noise(d):
    """The oracle rows at T = 1000 whose schedule ends near pure noise without being rescaled to zero SNR."""
    return [r for r in d["elbo_terms"]["rows"] if r["T"] == 1000 and not r["zero_terminal_snr"]
            and r["alpha_bar_last"] < NEAR_NOISE]


def _brightness(d, dataset, sampler=None, zero=None):
    row = next(r for r in d["brightness"]["rows"] if r["dataset"] == dataset)
    if sampler is None:
        return row
    return next(x for x in row["runs"] if x["sampler"] == sampler and x["zero_terminal_snr"] == (zero == "zero"))


VALUES = {
    "table": lambda d, name, *args: TABLES[name](d, *args),
    "bright_n": lambda d: str(d["brightness"]["n"]),
    "base_lr": lambda d: fmt(d["formulation_ranking"]["settings"]["lrs"][0]),
    "budget": lambda d: d["training"]["budget"],
    "train_steps": lambda d: str(d["training"]["steps"]),
    "snapshot_every": lambda d: str(d["training"]["snapshot_every"]),
    "exact_nll": lambda d: fmt(d["elbo_terms"]["exact_nll"][0]),
    "elbo_n": lambda d: str(d["elbo_terms"]["n"]),
    "elbo": lambda d, label, variance, term: fmt(_elbo_row(d, label)[variance][term]),
    "elbo_mean": lambda d, label, variance, term: fmt(_elbo_row(d, label)[variance][term][0]),
    "elbo_pm": lambda d, label, variance, term: _pm(_elbo_row(d, label)[variance][term]),
    "prior_max_near_noise": lambda d: fmt(max(r["beta_tilde"]["prior"] for r in _near_noise(d))),
    "flow_gap_max_near_noise": lambda d: fmt(max(abs(r["flow"]["gap"][0]) for r in _near_noise(d))),
    "alpha_bar_last": lambda d, name: fmt(_schedule_row(d, name)["alpha_bar_last"]),
    "sqrt_alpha_bar_last": lambda d, name: fmt(math.sqrt(_schedule_row(d, name)["alpha_bar_last"])),
    "alpha_bar_drop": lambda d, name: fmt(_schedule_row(d, name)["alpha_bar_before_last"]
                                          / _schedule_row(d, name)["alpha_bar_last"]),
    "scale": lambda d, schedule, target, which: fmt(_scale_at(d, schedule, target, which)),
    "scale_range": lambda d, schedule, target: fmt(_range(_scale(d, schedule, target))),
    "k": lambda d, schedule, target, which: fmt(_k(d, schedule, target, which)),
    "coef_x0": lambda d, schedule, which: fmt(math.sqrt(_k(d, schedule, "mu", which))),
    "weight": lambda d, target, lam: fmt(_weighting_at(d["weighting"]["panels"]["cosine, uniform"][target],
                                                       float(lam))),
    "ed": lambda d, target: fmt(_training_row(d, target)["energy_distance"]),
    "floor": lambda d: fmt(d["training"]["rows"][0]["energy_floor"]),
    "gradvar_n": lambda d: str(d["gradvar"]["n"]),
    "trace_cov": lambda d, target, weighting: fmt(_trace_cov(d, target, weighting)),
    "trace_cov_ratio": lambda d, target, a, b, other=None: fmt(_trace_cov(d, target, a)
                                                               / _trace_cov(d, other or target, b)),
    "b_simple_end": lambda d, target: fmt(_along_end(d, target)["b_simple"]),
    "curvature": lambda d, target: fmt(_landscape(d, target)["curvature_d"]),
    "curvature_min": lambda d: fmt(min(min(_landscape(d, t)["curvature_d"], _landscape(d, t)["curvature_e"])
                                       for t in ("eps", "x0", "v", "mu"))),
    "curvature_max": lambda d: fmt(max(max(_landscape(d, t)["curvature_d"], _landscape(d, t)["curvature_e"])
                                       for t in ("eps", "x0", "v", "mu"))),
    "relative_curvature": lambda d, target: fmt(_landscape(d, target)["relative_curvature_d"]),
    "step_rise": lambda d, target, alpha: fmt(0.5 * _landscape(d, target)["relative_curvature_d"] * float(alpha) ** 2),
    "landscape_loss": lambda d, target: fmt(_landscape(d, target)["loss"]),
    "pca": lambda d, target: fmt(_landscape(d, target)["pca"]["ratios"][0]),
    "walk": lambda d: fmt(d["landscape"]["results"][0]["pca"]["random_walk"][0]),
    "nll_n": lambda d: str(d["nll"]["n"]),
    "nll_exact": lambda d: fmt(d["nll"]["exact_nll"][0]),
    "nll_gap": lambda d, target: fmt(_nll_row(d, target)["network"]["flow"]["median_gap"]),
    "nll_bound": lambda d, target, variance: fmt(_nll_row(d, target)["network"][variance]["bound"][0]),
    "nll_flow": lambda d, target: fmt(_nll_row(d, target)["network"]["flow"]["nll"][0]),
    "nll_diverged": lambda d, target: str(_nll_row(d, target)["network"]["flow"]["diverged_points"]),
    "bright": lambda d, dataset, key, sampler=None, zero=None: fmt(_brightness(d, dataset, sampler, zero)[key]),
    **render_ranking.VALUES,
}


def render(template, data):
    """The template with every placeholder {{NAME}} or {{NAME:ARG:…}} replaced by VALUES[NAME](data, ARG, …); an
    argument may itself be a placeholder ({{place_of:{{best_of:eps}}}})."""
    def replace(match):
        name, *args = match.group(1).strip().split(":")
        if name not in VALUES:
            raise KeyError(f"the study template asks for an unknown value {name!r}")
        if name == "table" and args[0] not in TABLES:
            raise KeyError(f"the study template asks for an unknown table {args[0]!r}")
        return VALUES[name](data, *args)
    innermost = re.compile(r"\{\{([^{}]+?)\}\}")  # a placeholder may name another: the inner is filled first
    while innermost.search(template):
        template = innermost.sub(replace, template)
    return template


def write(out_dir, path, template_path=TEMPLATE):
    """Render the study from out_dir/data/*.json into path (atomically)."""
    data = {}
    for name in NEEDED:
        with open(data_path(out_dir, name), encoding="utf-8") as f:
            data[name] = json.load(f)
    with open(template_path, encoding="utf-8") as f:
        text = render(f.read(), data)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    atomic_write(path, lambda f: f.write(text.encode()))
