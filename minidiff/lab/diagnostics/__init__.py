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
  applied        the above applied to configurations and run folders (what the CLI calls), CSV and JSON
  sweep          learning rate × target × schedule × weighting × seed, in parallel: divergence and quality
  tables         the sweep's cells gathered into tables (divergence rate per target and learning rate)
(What `minidiff gradvar`, `landscape` and `sweep` write and print is `minidiff/lab/reports.py`.)
"""
