"""minidiff — a small, exact diffusion engine in NumPy with autograd gradients.

Read the source in this order; each module is one concept and cites the equations it implements (the reference
post is ../shared/seed/stability-of-diffusion-training.md, cited as "post eq. (n)").

  The arrays
  1. backend     the array module: NumPy, or CuPy on a GPU; moving arrays between them
  2. primitives  the few operations the network is made of, forward and backward side by side
     (kernels, counter: their fused GPU kernels and the GPU's counter-based random numbers)
  The mathematics
  3. schedules   β, α, ᾱ, SNR, log-SNR; zero terminal SNR; the schedule between its steps
     (named_schedules, spacing: the named schedules' β; the timesteps a sampler with fewer steps visits)
  4. forward     q(x_t | x_0), q(x_t | x_{t−1}), the posterior q(x_{t−1} | x_t, x_0)   (post eqs. 6–8)
  5. targets     eps, x0, v, score, mu: conversions, loss weightings, implied w(λ)
  6. elbo        Gaussian KL; L_T, L_{t−1}, L_0; the whole bound                    (post eq. 3)
     (discrete: the discretised decoder of discrete data, a bound on the probability of its values)
  The data
  7. mixture     Gaussian mixtures: exact density, score, optimal denoiser (the oracle)
     (lowrank: the same in any dimension, for covariances U Uᵀ + s² I)
  8. data        toy datasets
     (datafile: the user's own files, read without pickle, checked, standardised;
      images: the 8×8 digits, and mixtures that look like families of images)
  Learning
  9. nn          the MLP denoiser over a params dict
 10. optim       Adam, gradient clipping, learning-rate schedule, EMA
 11. timesteps   how t is drawn: uniform, stratified, importance
 12. train       the one loss of every target and weighting; a training step
 13. checkpoint  run folders, atomic files, loading without pickle
 14. run         a whole run: data, loop, samples and quality
     (runlog: the loss log and the divergence guard; runfolder: a run's state saved to its folder and loaded)
  Using a model
 15. sample      ancestral DDPM, DDIM (and its inversion), the probability-flow ODE
 16. likelihood  the probability-flow ODE's exact likelihood
 17. evaluate    a run or the oracle side by side: the bound, the PF-ODE NLL, the exact NLL
 18. metrics     energy distance against held-out data, with the data-vs-data floor
  Measuring
 19. diagnostics gradient noise per timestep, loss landscapes, trajectories, stability sweeps
 20. figures     every figure, a function returning a matplotlib Figure
 21. study       the experiments behind the figures and the numbers of docs/study.md

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
"""
from . import forward, schedules, targets
from .forward import q_posterior, q_sample, q_step
from .schedules import Schedule, make_schedule, timestep_spacing
from .elbo import elbo  # the function; the module stays importable as `from minidiff.elbo import …`

__all__ = ["Schedule", "make_schedule", "timestep_spacing", "q_sample", "q_step", "q_posterior",
           "forward", "schedules", "targets", "elbo"]
