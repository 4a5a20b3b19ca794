"""The figures of the study's second edition: the formulations ranked, their learning-rate ranges, and the
schedules and log-SNR shifts by exact KL. Each takes what `lab/study/ranks.py` computed from the stored cells."""
import numpy as np

from minidiff.lab.figures.style import new_figure

DATASET_MARKERS = ("o", "s", "^", "D")


def ranking_figure(rows, columns):
    """Mean rank of each formulation (bars, best on top) and its rank in every (dataset, metric) (markers)."""
    fig, axes = new_figure(1, width=8.0, height=0.28 * len(rows) + 1.4)
    ax = axes[0, 0]
    y = np.arange(len(rows))[::-1]
    ax.barh(y, [r["mean_rank"] for r in rows], color="0.82", height=0.7, label="mean rank")
    datasets = list(dict.fromkeys(d for d, _ in columns))
    metrics = list(dict.fromkeys(m for _, m in columns))
    for (dataset, metric) in columns:
        marker = DATASET_MARKERS[datasets.index(dataset) % len(DATASET_MARKERS)]
        color = f"C{metrics.index(metric)}"
        offset = 0.25 * (datasets.index(dataset) - (len(datasets) - 1) / 2)
        ax.scatter([r["ranks"][(dataset, metric)] for r in rows], y + offset, s=9, marker=marker, color=color,
                   alpha=0.75, lw=0)
    for d, dataset in enumerate(datasets):
        ax.scatter([], [], marker=DATASET_MARKERS[d % len(DATASET_MARKERS)], color="0.3", s=12, label=dataset)
    for m, metric in enumerate(metrics):
        ax.scatter([], [], marker="o", color=f"C{m}", s=12, label=metric)
    ax.set_yticks(y)
    ax.set_yticklabels([r["formulation"] for r in rows], fontsize=7)
    ax.set_xlabel("rank (1 = best)")
    ax.set_xlim(0, len(rows) + 1)
    ax.set_title("formulations ranked over datasets and metrics (mean over seeds in each)")
    ax.legend(fontsize=6, loc="upper right", ncol=2)
    fig.tight_layout()
    return fig


def lr_stability_figure(table, lrs, seeds):
    """Per formulation and learning rate: seeds that reached the quality bar with the full sampler (colour), and
    'full · fast · diverged' counts written in each cell."""
    names = list(table)
    fig, axes = new_figure(1, width=1.3 * len(lrs) + 3.2, height=0.27 * len(names) + 1.3)
    ax = axes[0, 0]
    grid = np.array([[table[n][lr]["reached_full"] for lr in lrs] for n in names], dtype=float)
    ax.imshow(grid, cmap="Greens", vmin=0, vmax=seeds, aspect="auto")
    for i, n in enumerate(names):
        for j, lr in enumerate(lrs):
            c = table[n][lr]
            ax.text(j, i, f"{c['reached_full']}·{c['reached_fast']}·{c['diverged']}", ha="center", va="center",
                    fontsize=6, color="black" if c["reached_full"] < 0.7 * seeds else "white")
    ax.set_xticks(range(len(lrs)))
    ax.set_xticklabels([f"lr {lr:g}" for lr in lrs], fontsize=7)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=7)
    ax.grid(False)
    ax.set_title(f"seeds of {seeds} at the bar: DDPM · DDIM · diverged", fontsize=8)
    fig.tight_layout()
    return fig


def schedule_kl_figure(schedule_rows, resolution_rows):
    """Left: exact KL of the v-models per schedule (mean and 95 % interval over seeds). Right: KL against the
    log-SNR shift at each image size, the shift of Hoogeboom et al. and SD3 marked."""
    fig, axes = new_figure(2, width=4.4, height=3.4)
    ax = axes[0, 0]
    y = np.arange(len(schedule_rows))[::-1]
    means = np.array([r["kl"][0] for r in schedule_rows])
    finite = np.isfinite(means)
    lo = np.array([r["kl"][1] for r in schedule_rows])
    hi = np.array([r["kl"][2] for r in schedule_rows])
    ax.errorbar(means[finite], y[finite], xerr=[(means - lo)[finite], (hi - means)[finite]], fmt="o", ms=4,
                color="C0", capsize=2)
    ax.set_yticks(y)
    ax.set_yticklabels([r["schedule"] for r in schedule_rows], fontsize=7)
    ax.set_xlabel("KL(data ‖ model), nats")
    ax.set_title("schedules by exact KL (v, uniform)", fontsize=8)
    ax = axes[0, 1]
    for i, row in enumerate(resolution_rows):
        shifts = sorted(row["kl"], key=float)
        kl = np.array([row["kl"][s][0] for s in shifts])
        base = np.nanmin(kl[np.isfinite(kl)]) if np.any(np.isfinite(kl)) else 0.0
        ax.plot([float(s) for s in shifts], kl - base, "o-", color=f"C{i}", ms=4,
                label=f"{row['side']}×{row['side']} (KL − its least)")
        ax.axvline(row["predicted"], color=f"C{i}", ls=":", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_yscale("symlog", linthresh=1.0)  # a shift that fails costs thousands of nats; the others differ by tens
    ax.set_ylim(bottom=0.0)
    ax.set_xlabel("log-SNR shift s (dotted: 2 log(d/d₀), SD3)")
    ax.set_ylabel("nats")
    ax.set_title("the resolution shift", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
