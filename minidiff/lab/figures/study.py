"""The study's own figures, each drawn from the plain data its experiment saved (minidiff.lab.study.experiments)."""
import numpy as np

from minidiff.lab.figures.style import new_figure
from minidiff.lab.figures.basic import _scatter
from minidiff.targets import TARGETS

TARGET_ORDER = TARGETS  # all seven, in the order of targets.TARGETS
FORWARD_LIMIT = 4.5  # axes of the forward-process panels: the data's ±3 and the noise's ±4.5
MARGIN = 0.5  # space around the held-out data in the samples grid
SHOWN_NLL = 1e3  # nats: larger (diverged) NLLs are left out of the NLL bars


def forward_figure(data):
    """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε for the same points at several t: the data dissolving into noise."""
    panels = data["panels"]
    fig, axes = new_figure(len(panels), width=2.3, height=2.4)
    for ax, panel in zip(axes[0], panels):
        _scatter(ax, np.asarray(panel["points"]), c="C0", s=1.5)
        ax.set_title(f"t = {panel['t']}\nᾱ = {panel['alpha_bar']:.3g}, SNR = {panel['snr']:.2g}", fontsize=8)
        ax.set_xlim(-FORWARD_LIMIT, FORWARD_LIMIT)
        ax.set_ylim(-FORWARD_LIMIT, FORWARD_LIMIT)
        ax.set_aspect("equal")
    fig.suptitle(f"q(x_t | x_0) on {data['dataset']} ({data['schedule']}, T = {data['T']})")
    fig.tight_layout()
    return fig


def _weighting_row(key):
    """('schedule, sampler', weighting) of a panel key 'schedule, weighting' or 'schedule, weighting, sampler'."""
    schedule, weighting, *sampler = key.split(", ")
    return f"{schedule}, t {sampler[0] if sampler else 'uniform'}", weighting


def weighting_figure(data):
    """w(λ) (Kingma & Gao 2023) implied by each target under each weighting and time sampler: one panel per
    (schedule, weighting[, sampler]), weightings across, (schedule, sampler) down."""
    panels = data["panels"]
    rows = list(dict.fromkeys(_weighting_row(k)[0] for k in panels))
    weightings = list(dict.fromkeys(_weighting_row(k)[1] for k in panels))
    fig, axes = new_figure(len(weightings), nrows=len(rows), width=2.6, height=2.4)
    for ax in axes.flat:
        ax.axis("off")
    for key, curves in panels.items():
        row, weighting = _weighting_row(key)
        ax = axes[rows.index(row), weightings.index(weighting)]
        ax.axis("on")
        for k, target in enumerate(t for t in TARGET_ORDER if t in curves):
            lam, w = (np.asarray(curves[target][f], dtype=float) for f in ("log_snr", "w"))
            ax.semilogy(lam, np.where(w > 0, w, np.nan), color=f"C{k}", lw=1.2, label=target)
        ax.axhline(1.0, color="0.5", ls=":", lw=0.8)
        ax.set_title(f"{row}, {weighting}", fontsize=7)
        ax.set_xlabel("log-SNR λ")
        ax.invert_xaxis()
    axes[0, 0].set_ylabel("w(λ) (ELBO: w = 1)")
    axes[0, 0].legend(fontsize=6)
    fig.suptitle("The weighting each (target, weighting, time sampler) triple puts on log-SNR (noise grows to the "
                 "right)")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / (2.4 * len(rows))))  # room for the title above the first row
    return fig


def bound_table_figure(data):
    """Grouped bars of L_T, Σ L_t, L_0 and the bound per schedule (σ² = β̃), the exact NLL as a line."""
    fig, axes = new_figure(1, width=8.0, height=3.8)
    ax = axes[0, 0]
    rows = data["rows"]
    x = np.arange(len(rows))
    parts = [("L_T (prior)", lambda r: r["beta_tilde"]["prior"]),
             ("Σ L_t (denoising)", lambda r: r["beta_tilde"]["denoising"]),
             ("L_0 (decoder)", lambda r: r["beta_tilde"]["decoder"]),
             ("bound, σ² = β̃", lambda r: r["beta_tilde"]["bound"][0]),
             ("bound, σ² = β", lambda r: r["beta"]["bound"][0])]
    width = 0.8 / len(parts)
    for j, (name, value) in enumerate(parts):
        bars = ax.bar(x + (j - (len(parts) - 1) / 2) * width, [value(r) for r in rows], width, label=name,
                      color=f"C{j}")
        ax.bar_label(bars, fmt="%.2g", fontsize=5, padding=1)
    ax.axhline(data["exact_nll"][0], color="0.3", ls="--", lw=1, label=f"exact NLL {data['exact_nll'][0]:.3f}")
    ax.axhline(0.0, color="0.6", lw=0.6)
    ax.set_xticks(x, [r["label"].replace(", ", "\n", 1) for r in rows], fontsize=6)
    ax.set_ylabel("nats per example")
    ax.legend(fontsize=6, ncol=6, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    ax.set_title(f"The bound term by term for the exact denoiser of {data['dataset']} ({data['n']} points)")
    fig.tight_layout()
    return fig


def training_figure(data):
    """Left: each target's loss relative to its first logged value; right: the gradient norm (before clipping)."""
    fig, axes = new_figure(2, width=3.8, height=3.0)
    for k, row in enumerate(data["rows"]):
        steps, loss = np.asarray(row["steps"]), np.asarray(row["loss"])
        axes[0, 0].semilogy(steps, loss / loss[0], color=f"C{k}", lw=1.2,
                            label=f"{row['target']}: ED {row['energy_distance']:.2g}")
        axes[0, 1].semilogy(steps, row["grad_norm"], color=f"C{k}", lw=1.0)
    axes[0, 0].set_title("loss / its first logged value", fontsize=9)
    axes[0, 1].set_title("gradient norm (before clipping)", fontsize=9)
    for ax in axes[0]:
        ax.set_xlabel("step")
    axes[0, 0].legend(fontsize=7, title=f"energy distance (floor {data['rows'][0]['energy_floor']:.2g})",
                      title_fontsize=7)
    fig.suptitle(f"Training on {data['dataset']} ({data['schedule']}, T = {data['T']}, {data['steps']} steps)")
    fig.tight_layout()
    return fig


def samples_grid_figure(data):
    """Held-out data, then the samples of each target's model, on common axes."""
    panels = data["panels"]
    fig, axes = new_figure(len(panels) + 1, width=2.4, height=2.5)
    held = np.asarray(data["held_out"])
    lo, hi = held.min(0) - MARGIN, held.max(0) + MARGIN
    _scatter(axes[0, 0], held, c="0.35")
    axes[0, 0].set_title(f"held-out {data['dataset']}", fontsize=8)
    for ax, panel in zip(axes[0, 1:], panels):
        x = np.asarray(panel["samples"], dtype=float)
        _scatter(ax, x[np.all(np.isfinite(x), axis=1)], c="C0")
        ax.set_title(f"{panel['target']}: ED {panel['energy_distance']:.2g}", fontsize=8)
    for ax in axes[0]:
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_aspect("equal")
    fig.tight_layout()
    return fig


def nll_figure(data):
    """Per target: the trained network's bound (σ² = β̃ and β) and PF-ODE NLL, the oracle's, and the exact NLL."""
    fig, axes = new_figure(1, width=7.0, height=3.4)
    ax = axes[0, 0]
    rows = data["rows"]
    x = np.arange(len(rows))
    bars = [("network bound, β̃", "network", "beta_tilde"), ("network bound, β", "network", "beta"),
            ("network PF-ODE NLL", "network", "flow"), ("oracle bound, β", "oracle", "beta"),
            ("oracle PF-ODE NLL", "oracle", "flow")]
    width = 0.8 / len(bars)
    for j, (label, who, key) in enumerate(bars):
        values = [r[who][key]["nll" if key == "flow" else "bound"][0] for r in rows]
        shown = [v if np.isfinite(v) and abs(v) < SHOWN_NLL else np.nan for v in values]
        ax.bar(x + (j - (len(bars) - 1) / 2) * width, shown, width, label=label, color=f"C{j}")
    ax.axhline(data["exact_nll"][0], color="0.2", ls="--", lw=1, label=f"exact NLL {data['exact_nll'][0]:.3f}")
    ax.set_yscale("symlog", linthresh=1.0)  # a poor bound can be 100 times the exact NLL; keep both readable
    ax.set_xticks(x, [r["target"] for r in rows])
    ax.set_ylabel("nats per example")
    ax.legend(fontsize=6, ncol=3)
    ax.set_title(f"{data['dataset']}: trained networks ({data['steps']} steps) against the exact NLL", fontsize=9)
    fig.tight_layout()
    return fig
