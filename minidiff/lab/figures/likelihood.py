"""The likelihood figures: the terms of the variational bound against t, and the bound's breakdown per schedule."""
import numpy as np

from minidiff.lab.figures.style import new_figure


def elbo_terms_figure(bounds, title=""):
    """L_t against t for each labelled elbo.Bound (exact sums): the KL terms on a log scale, L_0 and L_T marked.

    Left: L_t, t = 1 … T−1 (each a KL, ≥ 0), with L_0 (a density, any sign) written in the legend. Right: the
    running sum L_0 + Σ_{s≤t} L_s, which ends at the bound less L_T: where along t the nats are spent.
    """
    fig, axes = new_figure(2, width=4.2, height=3.2)
    for i, (label, bound) in enumerate(bounds.items()):
        if bound.terms is None:
            raise ValueError(f"bound {label!r} has no per-t terms: compute it with t_sampling='exact'")
        t = np.arange(len(bound.terms))
        axes[0, 0].semilogy(t[1:], np.maximum(bound.terms[1:], np.finfo(float).tiny), color=f"C{i}", lw=1.2,
                            label=f"{label}: L_0 = {bound.decoder:.3g}, L_T = {bound.prior:.2g}")
        axes[0, 1].plot(t, np.cumsum(bound.terms), color=f"C{i}", lw=1.2, label=f"{label}: bound {bound.nats:.4g}")
    axes[0, 0].set_title("denoising terms L_t (nats per example)")
    axes[0, 1].set_title("L_0 + Σ_{s ≤ t} L_s")
    for ax in axes[0]:
        ax.set_xlabel("t")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def bound_breakdown_figure(rows, exact=None, title=""):
    """Grouped bars of L_T, Σ L_t and L_0 (nats per example) for each (label, elbo.Bound) in rows.

    exact: the data's exact NLL, drawn as a horizontal line: the bound (the sum of the three bars) lies above it.
    """
    fig, axes = new_figure(1, width=7.5, height=3.8)
    ax = axes[0, 0]
    x = np.arange(len(rows))
    parts = [("L_T (prior)", lambda b: b.prior), ("Σ L_t (denoising)", lambda b: b.denoising),
             ("L_0 (decoder)", lambda b: b.decoder), ("bound", lambda b: b.nats)]
    width = 0.8 / len(parts)
    for j, (name, value) in enumerate(parts):
        heights = [value(bound) for _, bound in rows]
        bars = ax.bar(x + (j - (len(parts) - 1) / 2) * width, heights, width, label=name, color=f"C{j}")
        ax.bar_label(bars, fmt="%.3g", fontsize=6, padding=1)
    if exact is not None:
        ax.axhline(exact, color="0.3", ls="--", lw=1, label=f"exact NLL {exact:.4g}")
    ax.axhline(0.0, color="0.6", lw=0.6)
    ax.set_xticks(x, [label for label, _ in rows], fontsize=7)
    ax.set_ylabel("nats per example")
    ax.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    ax.set_title(title)
    fig.tight_layout()
    return fig
