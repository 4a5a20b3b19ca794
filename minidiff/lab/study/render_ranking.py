"""The tables and numbers of the study's second edition, for render.py: each a function of the stored data only,
through `ranks.py` (the ranking, the learning-rate ranges, the schedules and shifts by exact KL)."""
import math

from minidiff.lab.study import ranks
from minidiff.lab.study.text import fmt, table

DATASET_NAMES = {"moons": "two moons", "smooth8x8": "8×8 mixture", "digits": "digits", "smooth16x16": "16×16 mixture"}


def _ci(triple):
    mean, lo, hi = triple
    if mean is None or (isinstance(mean, float) and (math.isinf(mean) or math.isnan(mean))):
        return fmt(mean)
    return f"{fmt(mean)} [{fmt(lo, 2)}, {fmt(hi, 2)}]"


def _ranking(d):
    return ranks.ranking(d["formulation_ranking"])


def _per_dataset_rank(row, dataset):
    mine = [r for (d, _), r in row["ranks"].items() if d == dataset]
    return sum(mine) / len(mine)


def ranking_table(d):
    data = d["formulation_ranking"]
    exact = data["exact_dataset"]
    rows = []
    for place, row in enumerate(_ranking(d), 1):
        name = row["formulation"]
        per = " · ".join(fmt(_per_dataset_rank(row, ds), 2) for ds in data["datasets"])
        rows.append([str(place), name, data["formulations"][name]["source"], fmt(row["mean_rank"], 3), per,
                     _ci(ranks.summary(ranks.values(data, "rank", exact, name, "kl")))])
    return table(["#", "formulation", "from", "mean rank", "rank on " + " · ".join(DATASET_NAMES[x] for x in
                                                                                   data["datasets"]),
                   f"KL on the {DATASET_NAMES[exact]} (nats)"], rows)


def metrics_table(d, dataset):
    data = d["formulation_ranking"]
    metrics = [m for m in ranks.METRICS if m != "kl" or dataset == data["exact_dataset"]]
    rows = []
    for row in _ranking(d):
        name = row["formulation"]
        mine = ranks.cells(data, "rank", dataset, name)
        diverged = sum(c["status"] == "diverged" for c in mine)
        rows.append([name] + [_ci(ranks.summary(ranks.values(data, "rank", dataset, name, m))) for m in metrics]
                    + [f"{diverged}/{len(mine)}"])
    return table(["formulation"] + [ranks.METRICS[m] for m in metrics] + ["diverged"], rows)


def _stability(d):
    return ranks.stability(d["lr_stability"])


def _lrs(d):
    return sorted(d["lr_stability"]["settings"]["lrs"])


def _range_text(lrs):
    return ", ".join(f"{lr:g}" for lr in lrs) if lrs else "none"


def stability_table(d):
    grid, _ = _stability(d)
    lrs = _lrs(d)
    rows = []
    for name, by_lr in grid.items():
        steps = sorted(s for lr in lrs for s in by_lr[lr]["collapse_steps"])
        rows.append([name, _range_text(ranks.lr_range(by_lr, lrs)), _range_text(ranks.lr_range(by_lr, lrs,
                                                                                                "reached_fast"))]
                    + ["{reached_full}·{reached_fast}·{diverged}".format(**by_lr[lr]) for lr in lrs]
                    + [str(steps[0]) if steps else "–"])
    return table(["formulation", "lr where every seed reaches the bar (DDPM)", "the same with DDIM"]
                  + [f"lr {lr:g}" for lr in lrs] + ["earliest collapse (step)"], rows)


def schedule_table(d):
    data = d["schedule_kl"]
    rows = [[str(i), r["schedule"], data["formulations"][r["schedule"]]["source"], _ci(r["kl"]), _ci(r["ed_full"])]
            for i, r in enumerate(ranks.schedule_table(data), 1)]
    return table(["#", "schedule (v, uniform)", "from", "KL (nats)", "energy distance, DDPM"], rows)


def resolution_table(d):
    data = d["schedule_kl"]
    rows = []
    for r in ranks.resolution_table(data):
        rows.append([f"{r['side']}×{r['side']}", str(r["side"] ** 2)] + [_ci(r["kl"][s]) for s in data["shifts"]]
                    + [fmt(r["best"]), fmt(r["best_ed"]), fmt(r["predicted"])])
    return table(["image", "D"] + [f"KL, s = {s:g}" for s in data["shifts"]]
                 + ["least KL at s", "least energy distance at s", "2 log(d/d₀), SD3"], rows)


TABLES = {"formulation_ranking": ranking_table, "metrics": metrics_table, "lr_stability": stability_table,
          "schedule_kl": schedule_table, "resolution": resolution_table}


# --- numbers and names in the prose -------------------------------------------------------------------------------

def _place_of(d, name):
    return next(i for i, r in enumerate(_ranking(d), 1) if r["formulation"] == name)


def _best_of(d, target):
    data = d["formulation_ranking"]
    return next(r["formulation"] for r in _ranking(d) if data["formulations"][r["formulation"]]["target"] == target)


def _compare(d, a, b):
    return "above" if _place_of(d, a) < _place_of(d, b) else "below"


def _widest(d):
    grid, _ = _stability(d)
    width = {name: len(ranks.lr_range(by_lr, _lrs(d))) for name, by_lr in grid.items()}
    most = max(width.values())
    return [name for name, w in width.items() if w == most], most


def _target_order(d):
    data = d["formulation_ranking"]
    order = []
    for r in _ranking(d):
        target = data["formulations"][r["formulation"]]["target"]
        if target not in order:
            order.append(target)
    return order


def _words(items):
    items = list(items)
    return "none" if not items else items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _resolution(d, dataset):
    return next(r for r in ranks.resolution_table(d["schedule_kl"]) if r["dataset"] == dataset)


def _schedule_place(d, name):
    return next(i for i, r in enumerate(ranks.schedule_table(d["schedule_kl"]), 1) if r["schedule"] == name)


def _column_place(d, name, dataset, metric):
    rows = _ranking(d)
    return next(r for r in rows if r["formulation"] == name)["ranks"][(dataset, metric)]


VALUES = {
    "column_place": lambda d, name, dataset, metric: fmt(_column_place(d, name, dataset, metric)),
    "column_mean": lambda d, name, dataset, metric: fmt(next(r for r in _ranking(d) if r["formulation"] == name)[
        "means"][(dataset, metric)]),
    "rank_name": lambda d, place: _ranking(d)[int(place) - 1]["formulation"],
    "rank_source": lambda d, place: d["formulation_ranking"]["formulations"][
        _ranking(d)[int(place) - 1]["formulation"]]["source"],
    "rank_mean": lambda d, place: fmt(_ranking(d)[int(place) - 1]["mean_rank"]),
    "rank_last": lambda d: _ranking(d)[-1]["formulation"],
    "place_of": lambda d, name: str(_place_of(d, name)),
    "n_formulations": lambda d: str(len(d["formulation_ranking"]["ranked"])),
    "n_columns": lambda d: str(len(ranks.metric_columns(d["formulation_ranking"]))),
    "best_of": lambda d, target: _best_of(d, target),
    "compare": lambda d, a, b: _compare(d, a, b),
    "target_order": lambda d: " > ".join(_target_order(d)),
    "rank_setting": lambda d, key: fmt(d["formulation_ranking"]["settings"][key]),
    "widest": lambda d: _words(_widest(d)[0]),
    "widest_count": lambda d: str(_widest(d)[1]),
    "n_lrs": lambda d: str(len(_lrs(d))),
    "confound": lambda d, kind: str(_stability(d)[1][kind]),
    "stab_cells": lambda d: str(sum(_stability(d)[1].values())),
    "schedule_name": lambda d, place: ranks.schedule_table(d["schedule_kl"])[int(place) - 1]["schedule"],
    "schedule_last": lambda d: ranks.schedule_table(d["schedule_kl"])[-1]["schedule"],
    "schedule_place": lambda d, name: str(_schedule_place(d, name)),
    "schedule_compare": lambda d, a, b: "lower" if _schedule_place(d, a) < _schedule_place(d, b) else "higher",
    "diverged_runs": lambda d: str(sum(c["diverged"] for row in _stability(d)[0].values() for c in row.values())),
    "best_shift": lambda d, dataset: fmt(_resolution(d, dataset)["best"]),
    "best_shift_ed": lambda d, dataset: fmt(_resolution(d, dataset)["best_ed"]),
    "predicted_shift": lambda d, dataset: fmt(_resolution(d, dataset)["predicted"]),
    "shift_agrees": lambda d, dataset: ("agrees with" if _resolution(d, dataset)["best"] == _resolution(d, dataset)[
        "predicted"] else "differs from"),
    "quality_bar": lambda d, dataset: fmt(ranks.quality_bar(d["lr_stability"], dataset)),
    "floor_of": lambda d, dataset: fmt(d["formulation_ranking"]["floors"][dataset]["mean"]),
}
