"""Every figure of the project, each a function that returns a matplotlib Figure; `save` writes it.

The CLI only calls these and saves the result, so a figure in `figures/` and one in a notebook are the same code.
One submodule per subject (`basic`: schedules, data and samples; the likelihood, diagnostics and study figures in
their own), one shared style (`style`). Files are deterministic: the PNG/SVG metadata that would carry a date or a
version is removed.
"""
from minidiff.lab.figures.style import STYLE, new_figure, save  # noqa: F401
from minidiff.lab.figures.basic import datasets_figure, samples_figure, save_samples, schedules_figure  # noqa: E402,F401
from minidiff.lab.figures.likelihood import bound_breakdown_figure, elbo_terms_figure  # noqa: E402,F401
from minidiff.lab.figures.diagnostics import bucket_cosine_figure, gradvar_along_figure, gradvar_figure, interpolation_figure, landscape_figure, sweep_figure, target_scale_figure, trajectory_figure, uncertainty_figure
from minidiff.lab.figures.study import bound_table_figure, forward_figure, nll_figure, samples_grid_figure, training_figure, weighting_figure
from minidiff.lab.figures.ranking import lr_stability_figure, ranking_figure, schedule_kl_figure  # noqa: E402,F401
from minidiff.lab.figures.images import brightness_figure, image_samples_figure, pairs_figure  # noqa: E402,F401
