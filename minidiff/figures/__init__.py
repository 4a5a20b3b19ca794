"""Every figure of the project, each a function that returns a matplotlib Figure; `save` writes it.

The CLI only calls these and saves the result, so a figure in `figures/` and one in a notebook are the same code.
One submodule per subject (`basic`: schedules, data and samples; the likelihood, diagnostics and study figures in
their own), one shared style here. Files are deterministic: the PNG/SVG metadata that would carry a date or a
version is removed.
"""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..checkpoint import atomic_write  # noqa: E402


STYLE = {"figure.dpi": 100, "savefig.dpi": 120, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3,
         "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
         "svg.hashsalt": "minidiff"}


def new_figure(ncols, nrows=1, width=3.6, height=3.0):
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    return fig, axes


def save(fig, path):
    """Write fig to path (.png or .svg), atomically and without timestamps, so a rerun gives the same bytes.

    The file is written by `checkpoint.atomic_write`, like every file of a run: a kill leaves at most a hidden
    temporary file (checkpoint.TEMPORARY_PREFIX), which the next run in that folder removes.
    """
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".png", ".svg"):
        raise ValueError(f"figure file must end in .png or .svg, got {path!r}")
    metadata = {"Software": None} if ext == ".png" else {"Date": None, "Creator": None}
    try:
        with plt.rc_context(STYLE):
            atomic_write(path, lambda f: fig.savefig(f, format=ext[1:], metadata=metadata))
    finally:
        plt.close(fig)



from .basic import datasets_figure, samples_figure, schedules_figure  # noqa: E402,F401
from .images import brightness_figure, image_samples_figure, pairs_figure  # noqa: E402,F401
from .likelihood import bound_breakdown_figure, elbo_terms_figure  # noqa: E402,F401
from .diagnostics import (bucket_cosine_figure, gradvar_along_figure, gradvar_figure,  # noqa: E402,F401
                          interpolation_figure, landscape_figure, sweep_figure, target_scale_figure, trajectory_figure)
from .study import (bound_table_figure, forward_figure, nll_figure, samples_grid_figure,  # noqa: E402,F401
                    training_figure, weighting_figure, zero_snr_figure)
