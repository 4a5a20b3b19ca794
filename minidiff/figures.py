"""Every figure of the project, each a function that returns a matplotlib Figure; `save` writes it.

The CLI only calls these and saves the result, so a figure in `figures/` and one in a notebook are the same code.
Files are deterministic: the PNG/SVG metadata that would carry a date or a version is removed.
"""
import os
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .schedules import SCHEDULES, ScheduleError, make_schedule  # noqa: E402

STYLE = {"figure.dpi": 100, "savefig.dpi": 120, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3,
         "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
         "svg.hashsalt": "minidiff"}


def _figure(ncols, nrows=1, width=3.6, height=3.0):
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    return fig, axes


def save(fig, path):
    """Write fig to path (.png or .svg), atomically and without timestamps, so a rerun gives the same bytes."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".png", ".svg"):
        raise ValueError(f"figure file must end in .png or .svg, got {path!r}")
    metadata = {"Software": None} if ext == ".png" else {"Date": None, "Creator": None}
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(suffix=ext, dir=folder)
    os.close(fd)
    try:
        with plt.rc_context(STYLE):
            fig.savefig(tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
        plt.close(fig)


def schedules_figure(T=1000, names=None, zero_terminal_snr=(False, True)):
    """ᾱ, SNR and log-SNR against t for each named schedule (dashed: its zero-terminal-SNR rescale)."""
    fig, axes = _figure(3)
    for i, name in enumerate(names or SCHEDULES):
        for zero in zero_terminal_snr:
            try:
                schedule = make_schedule(name, T, zero_terminal_snr=zero, warn=False)
            except ScheduleError:
                continue
            style = dict(color=f"C{i}", ls="--" if zero else "-", lw=1.2, label=None if zero else name)
            t = np.arange(T)
            axes[0, 0].plot(t, schedule.alpha_bar, **style)
            axes[0, 1].semilogy(t, schedule.snr, **style)
            axes[0, 2].plot(t, schedule.log_snr, **style)
    for ax, label in zip(axes[0], ["ᾱ_t", "SNR_t", "log-SNR λ_t"]):
        ax.set_xlabel("t")
        ax.set_title(label)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"Noise schedules, T = {T} (dashed: zero terminal SNR)")
    fig.tight_layout()
    return fig
