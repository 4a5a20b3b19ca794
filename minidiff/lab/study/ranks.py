"""What the second edition concludes, computed from its stored cells alone (figures/data/formulation_ranking.json,
lr_stability.json and schedule_kl.json).

Nothing here trains or samples: every function reads the cells that `ranking.measure_all` wrote, so the tables,
the figures and the conclusion of docs/study.md follow from the data, and a changed number changes them.

- `summary(values)`: mean and 95 % interval over seeds (Student's t), infinite when a seed diverged.
- `ranking(data)`: the formulations ranked SD3-style (Esser et al. 2024, §5.1): within each (dataset, metric) the
  formulations are ranked by their mean over seeds (1 = best, ties share the mean of their places, a missing or
  infinite value ranks last), and the ranks are averaged over every (dataset, metric).
- `stability(data)`: per formulation and learning rate on the stability dataset, how many seeds diverged, how many
  reached the quality bar with each sampler, and the step at which quality collapsed.
- `schedule_table(data)`, `resolution_table(data)`: the schedules and the log-SNR shifts ranked by exact KL.
"""
import math

import numpy as np

# Student's t quantiles t_{0.975, ν}, ν = n − 1 (Abramowitz & Stegun 1964, Table 26.10)
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
METRICS = {  # every metric is better when lower
    "ed_full": "energy distance, DDPM (all T steps)",
    "ed_fast": "energy distance, DDIM",
    "kl": "KL(data ‖ model), nats",
    "bits_per_dim": "−ELBO, bits/dim",
    "b_simple": "gradient noise B_simple at init",
}
COLLAPSE_FACTOR = 3.0  # quality has collapsed at a check whose energy distance is 3 × the best before it, above the bar


def _number(value):
    return float("inf") if value is None else float(value)


def summary(values):
    """(mean, low, high) of the 95 % t-interval over the values; inf where any value is missing or infinite."""
    x = np.array([_number(v) for v in values], dtype=np.float64)
    if len(x) == 0:
        return (float("nan"),) * 3
    if not np.all(np.isfinite(x)):
        return (float("inf"),) * 3
    mean = float(x.mean())
    if len(x) < 2:
        return mean, mean, mean
    half = T_975.get(len(x) - 1, 1.96) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return mean, mean - half, mean + half


def cells(data, group, dataset=None, formulation=None, lr=None):
    return [c for c in data["cells"] if c["group"] == group and (dataset is None or c["dataset"] == dataset)
            and (formulation is None or c["formulation"] == formulation) and (lr is None or c["lr"] == lr)]


def values(data, group, dataset, formulation, metric, lr=None):
    """The metric of each seed's cell; None for a seed whose run diverged or did not measure it."""
    return [c.get(metric) if c["status"] == "ok" else None for c in cells(data, group, dataset, formulation, lr)]


def places(scores):
    """Ranks 1…n of scores (lower is better); ties (infinities included) share the mean of their places."""
    scores = [_number(s) if not (isinstance(s, float) and math.isnan(s)) else float("inf") for s in scores]
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def metric_columns(data):
    """[(dataset, metric)] over which the ranks are aggregated: every metric, KL only where it is exact."""
    return [(d, m) for d in data["datasets"] for m in METRICS if m != "kl" or d == data["exact_dataset"]]


def ranking(data):
    """[{formulation, mean_rank, ranks: {(dataset, metric): rank}, means: {…}}] sorted best first."""
    names, columns = data["ranked"], metric_columns(data)
    ranks = {name: {} for name in names}
    means = {name: {} for name in names}
    for dataset, metric in columns:
        scores = [summary(values(data, "rank", dataset, name, metric))[0] for name in names]
        for name, score, place in zip(names, scores, places(scores)):
            ranks[name][(dataset, metric)], means[name][(dataset, metric)] = place, score
    rows = [dict(formulation=name, mean_rank=float(np.mean(list(ranks[name].values()))), ranks=ranks[name],
                 means=means[name]) for name in names]
    return sorted(rows, key=lambda r: (r["mean_rank"], r["formulation"]))


def quality_bar(data, dataset, checks=False):
    floor = data["floors"][dataset]
    return data["settings"]["bar_over_floor"] * floor["checks_mean" if checks else "mean"]


def collapse_step(cell, bar):
    """The first check at which the fast-sampler quality is COLLAPSE_FACTOR × its best so far and above the bar, or
    the step a divergence stopped the run; None if quality never collapsed."""
    best = float("inf")
    for check in cell["checks"]:
        value = _number(check["ed_fast"])
        if value > COLLAPSE_FACTOR * best and value > bar:
            return check["step"]
        best = min(best, value)
    return cell.get("diverged_at_step") if cell["status"] == "diverged" else None


def stability(data):
    """{formulation: {lr: {runs, diverged, reached_full, reached_fast, collapsed, collapse_steps}}} on the
    stability dataset (the base learning rate's cells are the ranking's), and the sampler confound counts."""
    dataset = data["stability_dataset"]
    bar, check_bar = quality_bar(data, dataset), quality_bar(data, dataset, checks=True)
    base, lrs = data["settings"]["lrs"][0], sorted(data["settings"]["lrs"])
    table, confound = {}, dict(full_only=0, fast_only=0, both=0, neither=0)
    for name in data["ranked"]:
        table[name] = {}
        for lr in lrs:
            group = "rank" if lr == base else "lr"
            mine = cells(data, group, dataset, name, lr)
            full = [c["status"] == "ok" and _number(c.get("ed_full")) <= bar for c in mine]
            fast = [c["status"] == "ok" and _number(c.get("ed_fast")) <= bar for c in mine]
            steps = [collapse_step(c, check_bar) for c in mine]
            table[name][lr] = dict(runs=len(mine), diverged=sum(c["status"] == "diverged" for c in mine),
                                   reached_full=sum(full), reached_fast=sum(fast),
                                   collapsed=sum(s is not None for s in steps),
                                   collapse_steps=[s for s in steps if s is not None])
            for a, b in zip(full, fast):
                confound["both" if a and b else "full_only" if a else "fast_only" if b else "neither"] += 1
    return table, confound


def lr_range(row, lrs, key="reached_full"):
    """The learning rates at which every seed reached the bar (by `key`), as a list."""
    return [lr for lr in lrs if row[lr]["runs"] and row[lr][key] == row[lr]["runs"]]


def schedule_table(data):
    """[{schedule, kl: (mean, lo, hi), ed_full: …}] of the v-models on the exact mixture, best KL first."""
    rows = []
    for name in data["schedules"]:
        rows.append(dict(schedule=name, kl=summary(values(data, "schedule", data["exact_dataset"], name, "kl")),
                         ed_full=summary(values(data, "schedule", data["exact_dataset"], name, "ed_full"))))
    return sorted(rows, key=lambda r: (r["kl"][0], r["schedule"]))


def resolution_table(data):
    """[{dataset, side, predicted, best, kl: {shift: (mean, lo, hi)}, best_ed, ed: {…}}]: the shift of least KL
    (and of least energy distance, DDPM) at each image size, next to the shift Hoogeboom et al. and SD3 predict
    (side / base side)."""
    out = []
    for entry in data["resolutions"]:
        dataset, side = entry["dataset"], entry["side"]
        kl, ed = {}, {}
        for shift in data["shifts"]:
            name = f"{side}×{side}, s = {shift:g}"
            kl[shift] = summary(values(data, "resolution", dataset, name, "kl"))
            ed[shift] = summary(values(data, "resolution", dataset, name, "ed_full"))
        best = min(kl, key=lambda s: (kl[s][0], s))
        best_ed = min(ed, key=lambda s: (ed[s][0], s))
        out.append(dict(dataset=dataset, side=side, predicted=side / data["base_side"], best=best, kl=kl, ed=ed,
                        best_ed=best_ed))
    return out
