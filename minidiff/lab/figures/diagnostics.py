"""The diagnostics figures: gradient noise against t, bucket cosines, target scales, loss landscapes, sweeps.

Each reads the plain records that `minidiff.lab.diagnostics` writes to JSON, so a figure can be redrawn from the file.
"""
import numpy as np

from minidiff.lab.diagnostics.tables import divergence_table

from minidiff.lab.figures.style import new_figure

STAT_LABELS = {"trace_cov": "tr Σ (per-example gradient variance)", "b_simple": "B_simple = tr Σ / |G|²",
               "grad_sq": "|G|² (unbiased)", "mean_norm": "mean ‖g_i‖"}


def _centres(buckets):
    return np.array([(b["t_lo"] + b["t_hi"]) / 2 for b in buckets], dtype=float)


def gradvar_figure(records, stat="trace_cov"):
    """`stat` against t per target: one panel per (weighting, schedule), weightings down, schedules across."""
    records = [r for r in records if "buckets" in r]
    weightings = list(dict.fromkeys(r["weighting"] for r in records))
    schedules = list(dict.fromkeys(r["schedule"] for r in records))
    targets = list(dict.fromkeys(r["target"] for r in records))
    fig, axes = new_figure(len(schedules), nrows=len(weightings), width=3.6, height=2.8)
    for r in records:
        ax = axes[weightings.index(r["weighting"]), schedules.index(r["schedule"])]
        values = np.array([b[stat] for b in r["buckets"]], dtype=float)
        ax.semilogy(_centres(r["buckets"]), np.where(values > 0, values, np.nan), "o-", ms=2.5, lw=1.2,
                    color=f"C{targets.index(r['target'])}", label=r["target"])
    for (i, weighting), (j, schedule) in ((a, b) for a in enumerate(weightings) for b in enumerate(schedules)):
        axes[i, j].set_title(f"{schedule}, {weighting}", fontsize=8)
        axes[i, j].set_xlabel("t (bucket centre)")
    for i in range(len(weightings)):
        axes[i, 0].set_ylabel(STAT_LABELS.get(stat, stat), fontsize=7)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"Gradient noise against t per target ({records[0]['source'] if records else ''})")
    fig.tight_layout()
    return fig


def uncertainty_figure(records):
    """EDM2's learned uncertainty of each run (Karras et al. 2024, eq. 16): u(λ), and the weighting w(λ) of
    Kingma & Gao 2023 that its e^(−u) gives the run's target, against log-SNR."""
    fig, axes = new_figure(2, width=3.6, height=2.8)
    for k, r in enumerate(records):
        curve = r["uncertainty"]
        lam = np.asarray(curve["log_snr"], dtype=float)
        label = f"{r['target']}, {r['schedule']} (step {r['step']})"
        axes[0, 0].plot(lam, np.asarray(curve["u"], dtype=float), color=f"C{k}", lw=1.2, label=label)
        w = np.asarray(curve["w"], dtype=float)
        axes[0, 1].semilogy(lam, np.where(w > 0, w, np.nan), color=f"C{k}", lw=1.2, label=label)
    for ax, title in zip(axes[0], ["learned u(λ) (optimum: log E[L | λ])", "implied w(λ) with e^(−u)"]):
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("log-SNR λ")
        ax.invert_xaxis()
    axes[0, 0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def gradvar_along_figure(records):
    """tr Σ, |G|² and B_simple of the whole loss against the training step, one line per run and weighting."""
    fig, axes = new_figure(3, width=3.4, height=2.8)
    lines = {}
    for r in records:
        if "all" in r and r["weights"] == "raw":
            lines.setdefault((r["source"], r["target"], r["weighting"]), []).append((r["step"], r["all"]))
    for k, ((source, target, weighting), points) in enumerate(lines.items()):
        points.sort(key=lambda p: p[0])
        steps = [p[0] for p in points]
        for ax, stat in zip(axes[0], ("trace_cov", "grad_sq", "b_simple")):
            values = np.array([p[1][stat] for p in points], dtype=float)
            ax.semilogy(steps, np.where(values > 0, values, np.nan), "o-", ms=2.5, color=f"C{k}",
                        label=f"{target}, {weighting}")
    for ax, stat in zip(axes[0], ("trace_cov", "grad_sq", "b_simple")):
        ax.set_title(STAT_LABELS[stat], fontsize=8)
        ax.set_xlabel("training step")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def bucket_cosine_figure(records, key="cosine_corrected"):
    """The cosine between the mean gradients of t-buckets, one heat map per record: conflicting timesteps."""
    records = [r for r in records if key in r]
    fig, axes = new_figure(len(records), width=2.6, height=2.6)
    for ax, r in zip(axes[0], records):
        image = ax.imshow(np.clip(np.array(r[key], dtype=float), -1, 1), cmap="RdBu_r", vmin=-1, vmax=1,
                          origin="lower")
        ax.set_title(f"{r['target']}, {r['schedule']}, {r['weighting']}", fontsize=7)
        ax.set_xlabel("t bucket")
        ax.grid(False)
    axes[0, 0].set_ylabel("t bucket")
    fig.colorbar(image, ax=list(axes[0]), shrink=0.8, label="cos(ḡ_a, ḡ_b)")
    return fig


def target_scale_figure(scales, floors=None):
    """Top: the RMS per dimension of each target against t, one panel per schedule ({schedule: {target: (T,)}}).
    Below, when given: the weighted irreducible loss per t, one panel per key ({key: {target: (t, mean)}})."""
    ncols = max(len(scales), len(floors or {}))
    fig, axes = new_figure(ncols, nrows=2 if floors else 1, width=3.4, height=2.8)
    for ax in axes.flat:
        ax.set_visible(False)
    for row, panels in enumerate([scales] + ([floors] if floors else [])):
        for j, (key, curves) in enumerate(panels.items()):
            ax = axes[row, j]
            ax.set_visible(True)
            for k, (target, curve) in enumerate(curves.items()):
                t, values = (np.arange(len(curve)), curve) if row == 0 else curve
                values = np.asarray(values, dtype=float)
                ax.semilogy(t, np.where(values > 0, values, np.nan), color=f"C{k}", label=target)
            ax.set_title(f"{key}: " + ("√(E‖X‖² / D)" if row == 0 else "w(t) · irreducible loss"), fontsize=8)
            ax.set_xlabel("t")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def landscape_figure(results):
    """Top: f(α)/f(0) along a filter-normalised direction, one line per run; below: each run's 2-D slice."""
    fig, axes = new_figure(max(len(results), 1), nrows=2, width=3.0, height=2.8)
    for k, r in enumerate(results):
        label = f"{r['target']} (f''/f = {r['relative_curvature_d']:.3g})"
        axes[0, 0].semilogy(r["alphas"], np.asarray(r["slice_d"]) / r["loss"], color=f"C{k}", label=label)
        ax = axes[1, k]
        surface = np.log10(np.maximum(np.asarray(r["surface"], dtype=float) / r["loss"], 1e-12))
        contour = ax.contourf(r["plane"], r["plane"], surface.T, levels=20, cmap="viridis")
        ax.plot(0, 0, "w+", ms=8)
        ax.set_title(f"{r['target']}, {r['schedule']}: log10 f/f(0)", fontsize=8)
        ax.set_xlabel("α (along d)")
        ax.set_ylabel("β (along e)")
        ax.grid(False)
        fig.colorbar(contour, ax=ax, shrink=0.8)
    axes[0, 0].set_xlabel("α")
    axes[0, 0].set_title("1-D slices, loss relative to the centre", fontsize=8)
    axes[0, 0].legend(fontsize=6)
    for ax in axes[0, 1:]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def interpolation_figure(result):
    """The loss on the line between two solutions, under each run's own loss."""
    fig, axes = new_figure(1, width=4.0, height=3.0)
    for key, run in (("loss_a", result["run_a"]), ("loss_b", result["run_b"])):
        axes[0, 0].semilogy(result["alphas"], result[key], label=f"loss of {run}")
    axes[0, 0].set_xlabel("α: (1 − α) θ_a + α θ_b")
    axes[0, 0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def trajectory_figure(results):
    """For each run with snapshots: its path on the loss surface of its PCA plane, and the explained-variance
    ratios beside the random-walk baseline 6/(π²k²)."""
    results = [r for r in results if "pca" in r]
    fig, axes = new_figure(max(len(results), 1), nrows=2, width=3.2, height=2.8)
    for k, r in enumerate(results):
        pca, ax = r["pca"], axes[0, k]
        if "surface" in pca:
            ax.contourf(pca["plane"], pca["plane"], np.log10(np.asarray(pca["surface"], dtype=float)).T, levels=20,
                        cmap="viridis")
        coords = np.asarray(pca["coords"])
        ax.plot(coords[:, 0], coords[:, 1], "w.-", ms=3, lw=0.8)
        ax.set_title(f"{r['target']}: path on the PCA plane", fontsize=8)
        ax.grid(False)
        n = min(len(pca["ratios"]), 6)
        ks = np.arange(1, n + 1)
        axes[1, k].bar(ks - 0.2, pca["ratios"][:n], 0.4, label="trajectory")
        axes[1, k].bar(ks + 0.2, pca["random_walk"][:n], 0.4, label="random walk 6/(π²k²)")
        axes[1, k].set_xlabel("component k")
        axes[1, k].legend(fontsize=6)
    fig.tight_layout()
    return fig


def sweep_figure(rows):
    """Over learning rate × target (all schedules, weightings, seeds): the fraction of cells that diverged, and
    the fraction that reached the quality bar."""
    targets, lrs, rate, count = divergence_table(rows)
    reached = [dict(r, diverged=int(r.get("steps_to_bar") is not None)) for r in rows]
    rate_reached = divergence_table(reached)[2]
    fig, axes = new_figure(2, width=1.2 + 0.9 * len(lrs), height=1.0 + 0.45 * len(targets))
    for ax, values, title, cmap in ((axes[0, 0], rate, "divergence rate", "Reds"),
                                    (axes[0, 1], rate_reached, "reached the quality bar", "Greens")):
        ax.imshow(values, cmap=cmap, vmin=0, vmax=1, aspect="auto")
        for (i, j), value in np.ndenumerate(values):
            ax.text(j, i, "–" if np.isnan(value) else f"{value:.2f}\n(n={int(count[i, j])})", ha="center",
                    va="center", fontsize=7, color="white" if value > 0.6 else "black")
        ax.set_xticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
        ax.set_yticks(range(len(targets)), targets)
        ax.set_xlabel("learning rate")
        ax.set_title(title, fontsize=9)
        ax.grid(False)
    fig.tight_layout()
    return fig
