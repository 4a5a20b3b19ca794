"""The figures' shared style, and `save`: every figure file written atomically and without timestamps."""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from minidiff.runs.files import FIGURE_EXTENSIONS, atomic_write  # noqa: E402


STYLE = {"figure.dpi": 100, "savefig.dpi": 120, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3,
         "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
         "svg.hashsalt": "minidiff"}


def new_figure(ncols, nrows=1, width=3.6, height=3.0):
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    return fig, axes


def save(fig, path):
    """Write fig to path (.png or .svg), atomically and without timestamps, so a rerun gives the same bytes.

    The file is written by `minidiff.runs.files.atomic_write`, like every file of a run: a kill leaves at most a hidden
    temporary file (files.TEMPORARY_PREFIX), which the next run in that folder removes.
    """
    ext = os.path.splitext(path)[1].lower()
    if ext not in FIGURE_EXTENSIONS:
        raise ValueError(f"figure file must end in .png or .svg, got {path!r}")
    metadata = {"Software": None} if ext == ".png" else {"Date": None, "Creator": None}
    try:
        with plt.rc_context(STYLE):
            atomic_write(path, lambda f: fig.savefig(f, format=ext[1:], metadata=metadata))
    finally:
        plt.close(fig)
