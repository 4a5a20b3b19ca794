"""minidiff — a small, exact diffusion engine in NumPy with autograd gradients.

Read the source in this order. Each chapter is one concept in plain NumPy and cites the equations it implements:
"post eq. (n)" is equation (n) of `docs/derivation.md`, the derivation of diffusion training from maximum likelihood
that minidiff follows (numbered as the blog post "Analysis of the Stability of Diffusion Model Training" numbers it);
papers are cited by author, year and equation.

  The mathematics
  1. schedules   β, α, ᾱ, SNR, log-SNR; zero terminal SNR; the schedule between its steps
     (named_schedules, spacing: the named schedules' β; the timesteps a sampler with fewer steps visits)
  2. forward     q(x_t | x_0), q(x_t | x_{t−1}), the posterior q(x_{t−1} | x_t, x_0)       (post eqs. (6)–(8))
  3. preconditioning  EDM's c_skip, c_out, c_in, c_noise; the flow's time τ = σ/(s + σ)
     (options: names that carry numbers, 'edm:sigma_data=0.5')
  4. timesteps   how t is drawn: uniform, stratified, importance; SD3's and EDM's densities of the flow's time
  5. targets     eps, x0, v, score, mu, flow, edm: conversions, loss weightings, implied w(λ)
     (weightings: edm, p2, sigmoid, learned)
  6. elbo        Gaussian KL; L_T, L_{t−1}, L_0; the whole bound                          (post eq. (3))
     (discrete: the discretised decoder of discrete data, a bound on the probability of its values)
  The data
  7. mixture     Gaussian mixtures: exact density, score, optimal denoiser (the oracle)
     (lowrank: the same in any dimension, for covariances U Uᵀ + s² I)
  8. data        toy datasets
     (images: the 8×8 digits, and mixtures that look like families of images)
  Learning
  9. layers      the operations the network is made of, forward and backward side by side
 10. nn          the MLP denoiser over a params dict
 11. optim       Adam, gradient clipping, learning-rate schedule, EMA
 12. train       the one loss of every target and weighting; a training step
     (objective: a run's schedule, target, weighting and t-sampler with their numbers)
 13. stacked     many runs as one computation: a leading run axis, each run bit for bit as alone
  Using a model
 14. sample      ancestral DDPM, DDIM (and its inversion), the probability-flow ODE
 15. likelihood  the probability-flow ODE's exact likelihood
 16. metrics     energy distance against held-out data, with the data-vs-data floor

Then the rooms around the chapters; imports point one way, cli → lab → runs → chapters → accel → errors
(tests/test_layout.py):
  errors   the one exception of a user's mistake (UsageError): a bad option, value, file or run folder
  accel/   the accelerator: backend (NumPy or CuPy), autodiff (how layers become autograd primitives), fused (the one
           table of fused GPU kernels), kernels (their CUDA source), counter (the GPU's counter-based randomness)
  runs/    run infrastructure: files (atomic writes), checkpoint, datafile (a user's data file), folder (a run's state
           in its folder), log (the loss log and the divergence guard), progress (the callback), loop (a whole run)
  lab/     measurements: evaluate (bounds and likelihoods of a run or the oracle), diagnostics/ (gradient noise,
           landscapes, trajectories, sweeps), figures/ (each a function returning a Figure), study/ (the experiments
           behind figures/ and docs/study.md), reports (what the measuring commands write)
  cli/     the command line, one module per command group

Glossary (one name per symbol, used everywhere):
  T               number of diffusion steps; timesteps are 0-based, t = 0 … T−1
  beta, alpha     β_t (noise added at step t) and α_t = 1 − β_t
  alpha_bar       ᾱ_t = Π_{s≤t} α_s: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε
  alpha_bar_prev  ᾱ_{t−1}, with ᾱ_{−1} = 1
  snr, log_snr    SNR_t = ᾱ_t / (1 − ᾱ_t) and λ_t = log SNR_t
  beta_tilde      β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t), the posterior variance
  mu_tilde        μ̃_t, the posterior mean (post eq. 8), = coef_x0 · x_0 + coef_xt · x_t
  x0_hat, eps_hat the network's estimates of x_0 and ε
  v               √ᾱ_t ε − √(1 − ᾱ_t) x_0 (Salimans & Ho 2022)
  flow            ε − x_0, the velocity of z_τ = (1 − τ) x_0 + τ ε, τ = σ_t/(s_t + σ_t) (Liu et al. 2023)
  sigma_data      σ_d, EDM's standard deviation of the data (Karras et al. 2022); sigma_E = σ_t/s_t its noise level
  c_skip, c_out, c_in, c_noise   EDM's preconditioning (Karras et al. 2022, Table 1)
  shift           the log-SNR shift s: λ → λ − 2 log s (Esser et al. 2024, eqs. 23–24)
"""
# The reading order of the chapters (a group joined by + is one chapter and its helpers); tests/test_layout.py
# checks that each imports only those before it.
CHAPTERS = ("named_schedules+spacing+schedules", "forward", "options+preconditioning", "timesteps", "weightings+targets",
            "discrete+elbo", "lowrank+mixture", "images+data", "layers", "nn", "optim", "objective+train", "stacked",
            "sample", "likelihood", "metrics")

from minidiff import forward, schedules, targets  # noqa: E402
from minidiff.elbo import elbo  # noqa: E402  (the function; the module stays importable as minidiff.elbo)
from minidiff.forward import q_posterior, q_sample, q_step  # noqa: E402
from minidiff.schedules import Schedule, make_schedule, timestep_spacing  # noqa: E402

__all__ = ["CHAPTERS", "Schedule", "make_schedule", "timestep_spacing", "q_sample", "q_step", "q_posterior",
           "forward", "schedules", "targets", "elbo"]
