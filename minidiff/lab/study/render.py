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
from minidiff.lab.study import FIGURE_NAMES, data_path

NEEDED = FIGURE_NAMES
TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "template.md")
TARGETS = ("eps", "x0", "v", "score", "mu")
LAMBDAS = (6.0, 0.0, -6.0)  # log-SNR at which the weighting table reads w(λ): little noise, SNR = 1, much noise


def fmt(value, digits=3):
    """A number for the text: 3 significant digits, '–' for missing, '∞' and 'NaN' spelled out."""
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e4):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e4:  # plain notation with `digits` significant digits (more for large numbers)
        return f"{value:.{max(digits - 1 - math.floor(math.log10(abs(value))), 0)}f}"
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return "\n".join(lines)


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


def _cells(d, target, lr):
    return [r for r in d["stability"]["rows"] if r["target"] == target and r["lr"] == lr]


def stability_table(d):
    lrs = sorted({r["lr"] for r in d["stability"]["rows"]})
    rows = []
    for target in TARGETS:
        row = [target]
        for lr in lrs:
            cells = _cells(d, target, lr)
            diverged = sum(bool(c["diverged"]) for c in cells)
            reached = sum(c["steps_to_bar"] is not None for c in cells)
            finished = [c["energy_distance"] for c in cells if not c["diverged"] and c["energy_distance"] is not None]
            median = fmt(float(np.median(finished)), 2) if finished else "–"
            row.append(f"{diverged}/{len(cells)} · {reached}/{len(cells)} · {median}")
        rows.append(row)
    return table(["target"] + [f"lr {lr:g}" for lr in lrs], rows)


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


def zero_snr_table(d):
    rows = [[r["schedule"], "yes" if r["zero_terminal_snr"] else "no", r["alpha_bar_last"], r["energy_distance"],
             r["energy_floor"], r["mean_error"]] for r in d["zero_snr"]["rows"]]
    return table(["schedule", "zero SNR", "ᾱ_{T−1}", "energy distance", "data floor", "‖mean error‖"], rows)


TABLES = {"schedules": schedules_table, "elbo_terms": elbo_terms_table, "target_scale": target_scale_table,
          "gradvar": gradvar_table, "gradvar_along": gradvar_along_table, "landscape": landscape_table,
          "stability": stability_table, "nll": nll_table, "training": training_table, "zero_snr": zero_snr_table,
          "weighting": weighting_table}


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


NAMES = {"eps": "ε", "x0": "x0", "v": "v", "score": "the score", "mu": "μ"}
USABLE_OVER_BAR = 2.0  # "usable" samples: a median energy distance within twice the sweep's quality bar


def _words(items, empty="none"):
    """'a', 'a and b', 'a, b and c', or `empty`."""
    items = list(items)
    return empty if not items else items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _holds(cells, kind):
    """Whether the sweep cells of one (target, lr) show `kind`: diverged, reached (the bar), usable or blown (samples
    beyond use: a median energy distance above 1 or infinite)."""
    if kind == "diverged":
        return any(c["diverged"] for c in cells)
    if kind == "reached":
        return any(c["steps_to_bar"] is not None for c in cells)
    finished = [c["energy_distance"] for c in cells if not c["diverged"] and c["energy_distance"] is not None]
    if not finished:
        return False
    median = float(np.median(finished))
    return median > 1 if kind == "blown" else median <= USABLE_OVER_BAR * cells[0]["quality_bar"]


def _sweep_lrs(d):
    return sorted({r["lr"] for r in d["stability"]["rows"]})


VALUES = {
    "table": lambda d, name: TABLES[name](d),
    "stab_targets": lambda d, lr, kind: _words(NAMES[t] for t in TARGETS if _holds(_cells(d, t, float(lr)), kind)),
    "stab_lrs": lambda d, target, kind: _words((f"{lr:g}" for lr in _sweep_lrs(d) if _holds(_cells(d, target, lr), kind)),
                                               empty="no rate"),
    "stab_stopped": lambda d, lr: str(sum(bool(c["diverged"]) for t in TARGETS for c in _cells(d, t, float(lr)))),
    "stab_runs": lambda d, lr: str(sum(len(_cells(d, t, float(lr))) for t in TARGETS)),
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
    "sweep": lambda d, key: fmt(d["stability"]["settings"][key]),
    "nll_n": lambda d: str(d["nll"]["n"]),
    "nll_exact": lambda d: fmt(d["nll"]["exact_nll"][0]),
    "nll_gap": lambda d, target: fmt(_nll_row(d, target)["network"]["flow"]["median_gap"]),
    "nll_bound": lambda d, target, variance: fmt(_nll_row(d, target)["network"][variance]["bound"][0]),
    "nll_flow": lambda d, target: fmt(_nll_row(d, target)["network"]["flow"]["nll"][0]),
    "nll_diverged": lambda d, target: str(_nll_row(d, target)["network"]["flow"]["diverged_points"]),
}


def render(template, data):
    """The template with every placeholder {{NAME}} or {{NAME:ARG:…}} replaced by VALUES[NAME](data, ARG, …)."""
    def replace(match):
        name, *args = match.group(1).strip().split(":")
        if name not in VALUES:
            raise KeyError(f"the study template asks for an unknown value {name!r}")
        if name == "table" and args[0] not in TABLES:
            raise KeyError(f"the study template asks for an unknown table {args[0]!r}")
        return VALUES[name](data, *args)
    return re.sub(r"\{\{(.+?)\}\}", replace, template)


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
