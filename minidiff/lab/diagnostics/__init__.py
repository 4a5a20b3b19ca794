"""Diagnostics: what the targets, schedules and weightings do to the gradients, the landscape and stability.

The post claims that the five targets "yield the same analytic mean" but "change the conditioning and the gradient
statistics seen by the network". These modules measure it, always on the one training loss
(`train.per_example_loss`), never on a copy of it. Read in this order:

  pergrad        per-example gradients of the loss for a whole batch at once (Goodfellow 2015)
  gradvar        tr Σ, |G|², the gradient noise scale B_simple per t-bucket, cosines between buckets
                 (McCandlish et al. 2018; Hang et al. 2023)
  target_stats   the scale of each target against t; the irreducible loss of a perfect network
  landscape      filter-normalised slices, interpolation, sharpness (Li et al. 2018)
  trajectory     parameters recorded along a run; PCA of the path against the random-walk baseline
  studies        the above applied to configurations and run folders (what the CLI calls), CSV and JSON
  sweep          learning rate × target × schedule × weighting × seed, in parallel: divergence and quality
  reports        what `minidiff gradvar`, `landscape` and `sweep` write (data, CSV, figures) and print
"""
from minidiff.lab.diagnostics import gradvar, landscape, pergrad, applied, sweep, target_stats, trajectory  # noqa: F401
from minidiff.lab.diagnostics.gradvar import NoiseStats, measure, noise_stats  # noqa: F401
from minidiff.lab.diagnostics.landscape import filter_normalize, random_direction, slice_1d, slice_2d  # noqa: F401
from minidiff.lab.diagnostics.pergrad import per_example_grads  # noqa: F401
from minidiff.lab.diagnostics.sweep import SweepConfig, run_sweep  # noqa: F401
from minidiff.lab.diagnostics.trajectory import train_with_snapshots, trajectory_pca  # noqa: F401
