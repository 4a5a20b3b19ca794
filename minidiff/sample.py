"""Sampling: run the reverse process from noise to data with a trained network (or any model).

`model(x_t, t) -> prediction` predicts one of the seven targets; every sampler turns the prediction into
(x0_hat, eps_hat) with `targets.to_x0_eps`, so one sampler serves all targets. With fewer steps than T, the
sampler visits a subsequence τ_0 > τ_1 > … of the training timesteps (`timestep_spacing`) and treats it as a
diffusion of its own (`respaced`): ᾱ is read at those timesteps, the step from τ_i to τ_{i+1} has
β'_i = 1 − ᾱ_{τ_i} / ᾱ_{τ_{i+1}} (Nichol & Dhariwal 2021, §4), and ᾱ = 1 after the last step.

- ddpm: ancestral sampling, Ho et al. 2020, Alg. 2: x_{t−1} = μ_θ(x_t, t) + σ_t z, with σ_t² = β̃_t or β_t and
  no noise at the last step (line 4: z = 0 when t = 1).
- ddim: Song et al. 2021 (DDIM), eq. (12): x_prev = √ᾱ_prev x0_hat + √(1 − ᾱ_prev − σ²) eps_hat + σ z, with
  σ = η √((1 − ᾱ_prev)/(1 − ᾱ)) √(1 − ᾱ/ᾱ_prev) (eq. 16); η = 0 is deterministic, η = 1 is DDPM with β̃.
- ode: the probability-flow ODE (Song et al. 2021, SDE paper, eq. 13) in the variables of Karras et al. 2022,
  y = x/√ᾱ and σ = √((1 − ᾱ)/ᾱ), in which it reads dy/dσ = eps_hat; solved with Heun's method (Karras et al.
  2022, Alg. 1), with an Euler step where Heun is undefined (the last step to σ = 0, or a first step from σ = ∞).
"""
import numpy as np

from minidiff.forward import posterior_variance
from minidiff.schedules import from_betas, timestep_spacing
from minidiff.targets import check_identifiable, to_x0_eps

SAMPLERS = ("ddpm", "ddim", "ode")


def respaced(schedule, timesteps):
    """The diffusion restricted to `timesteps`: a Schedule whose step k is the k-th smallest of them."""
    alpha_bar = schedule.alpha_bar[np.sort(timesteps)]
    alpha_bar_prev = np.concatenate([[1.0], alpha_bar[:-1]])
    with np.errstate(divide="ignore", invalid="ignore"):
        betas = np.where(alpha_bar_prev > 0, 1.0 - alpha_bar / alpha_bar_prev, 1.0)
    return from_betas(betas, schedule.name, zero_terminal_snr=schedule.zero_terminal_snr, alpha_bar=alpha_bar)


def predict_x0_eps(model, target, schedule, x, t, clip=None):
    """(x0_hat, eps_hat) from the model at training timestep t; clip=c clips x0_hat to [−c, c] and recomputes
    eps_hat so that x = √ᾱ x0_hat + √(1 − ᾱ) eps_hat still holds."""
    x0_hat, eps_hat = to_x0_eps(target, schedule, model(x, np.full(len(x), t)), x, t)
    if clip is not None:
        x0_hat = np.clip(x0_hat, -clip, clip)
        if schedule.alpha_bar[t] < 1:
            eps_hat = (x - np.sqrt(schedule.alpha_bar[t]) * x0_hat) / np.sqrt(1 - schedule.alpha_bar[t])
    return x0_hat, eps_hat


def _sigma(alpha_bar):
    """σ = √((1 − ᾱ)/ᾱ), the noise level of y = x/√ᾱ (Karras et al. 2022, Table 1, VP column)."""
    with np.errstate(divide="ignore"):
        return np.sqrt((1 - alpha_bar) / alpha_bar)


def sample(model, target, schedule, shape, rng, *, sampler="ddpm", steps=None, spacing=None, eta=0.0,
           variance="beta_tilde", clip=None, x_T=None, trajectory=False, progress=None):
    """Samples of `shape` from `model` by the chosen sampler: x_0, or (x_0, [x_T, …, x_0]) with trajectory=True.

    steps: sampling steps (default T); spacing: how they are chosen (default 'karras' for the ODE, whose Heun
    steps need a grid even in log σ, else 'linspace'); eta: DDIM's η; variance: DDPM's σ_t²
    ('beta_tilde' or 'beta'); clip: clip x0_hat to [−clip, clip] (off by default: toy data is not in [−1, 1]);
    x_T: the starting noise (drawn from rng when None); progress: called with 1 after each step (a progress bar's
    `update`).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}")
    spacing = spacing or ("karras" if sampler == "ode" else "linspace")
    timesteps = timestep_spacing(schedule.T, steps or schedule.T, spacing, alpha_bar=schedule.alpha_bar)
    check_identifiable(target, schedule.alpha_bar[timesteps[0]])  # the first step must recover x0_hat
    sub = respaced(schedule, timesteps)
    sigma2 = posterior_variance(sub, variance)
    predict = lambda x, t: predict_x0_eps(model, target, schedule, x, t, clip)  # noqa: E731

    def ddpm(x, t, k, t_next):
        x0_hat, _ = predict(x, t)
        mean = sub.coef_x0[k] * x0_hat + sub.coef_xt[k] * x  # post eq. (8) with x0_hat for x_0
        return mean if k == 0 else mean + np.sqrt(sigma2[k]) * rng.standard_normal(x.shape)  # Alg. 2, line 4

    def ddim(x, t, k, t_next):
        x0_hat, eps_hat = predict(x, t)
        alpha_bar, alpha_bar_prev = sub.alpha_bar[k], sub.alpha_bar_prev[k]
        sigma = eta * np.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev))  # (16)
        x_prev = np.sqrt(alpha_bar_prev) * x0_hat + np.sqrt(1 - alpha_bar_prev - sigma ** 2) * eps_hat  # (12)
        return x_prev + sigma * rng.standard_normal(x.shape) if sigma > 0 else x_prev

    def heun(x, t, k, t_next):
        x0_hat, eps_hat = predict(x, t)
        alpha_bar, alpha_bar_prev = sub.alpha_bar[k], sub.alpha_bar_prev[k]
        sigma, sigma_prev = _sigma(alpha_bar), _sigma(alpha_bar_prev)
        x_euler = np.sqrt(alpha_bar_prev) * (x0_hat + sigma_prev * eps_hat)  # y + (σ_prev − σ) eps_hat, σ = ∞ safe
        if t_next is None or not np.isfinite(sigma):
            return x_euler
        _, eps_next = predict(x_euler, t_next)
        y_prev = x / np.sqrt(alpha_bar) + (sigma_prev - sigma) * 0.5 * (eps_hat + eps_next)  # the mean slope
        return np.sqrt(alpha_bar_prev) * y_prev

    step = {"ddpm": ddpm, "ddim": ddim, "ode": heun}[sampler]
    x = rng.standard_normal(shape) if x_T is None else np.array(x_T, dtype=np.float64)
    path = [x]
    for i, t in enumerate(timesteps):
        t_next = int(timesteps[i + 1]) if i + 1 < len(timesteps) else None
        x = step(x, int(t), len(timesteps) - 1 - i, t_next)
        if trajectory:
            path.append(x)
        if progress is not None:
            progress(1)
    return (x, path) if trajectory else x


def ddim_invert(model, target, schedule, x0, *, steps=None, spacing="linspace", fixed_point_iters=0):
    """Run deterministic DDIM (η = 0) from data to noise: the x_T that `sample(..., sampler='ddim')` maps to x0.

    A DDIM step x ↦ x_prev = √ᾱ_prev x0_hat(x) + √(1 − ᾱ_prev) eps_hat(x) is inverted for x. The usual
    inversion (Song et al. 2021, §4.3) evaluates the model once, at x_prev; fixed_point_iters > 0 re-evaluates it
    at the new x until x is a fixed point, which makes the inversion exact (Pan et al. 2023). The iteration holds
    eps_hat fixed where SNR ≥ 1 and x0_hat fixed where SNR < 1, whichever the model's output depends on least,
    so that each update contracts.
    """
    timesteps = timestep_spacing(schedule.T, steps or schedule.T, spacing, alpha_bar=schedule.alpha_bar)[::-1]
    sub = respaced(schedule, timesteps)
    x_prev = np.array(x0, dtype=np.float64)
    for k, t in enumerate(timesteps):
        s, s_prev = np.sqrt(sub.alpha_bar[k]), np.sqrt(sub.alpha_bar_prev[k])
        sigma, sigma_prev = np.sqrt(1 - sub.alpha_bar[k]), np.sqrt(1 - sub.alpha_bar_prev[k])
        x = x_prev
        for _ in range(1 + fixed_point_iters):
            x0_hat, eps_hat = predict_x0_eps(model, target, schedule, x, int(t))
            if s >= sigma:  # x_prev = (s_prev/s)(x − σ eps_hat) + σ_prev eps_hat, solved for x
                x = s / s_prev * (x_prev - sigma_prev * eps_hat) + sigma * eps_hat
            else:  # x_prev = (s_prev − σ_prev s/σ) x0_hat + (σ_prev/σ) x, solved for x
                x = sigma / sigma_prev * (x_prev - (s_prev - sigma_prev * s / sigma) * x0_hat)
        x_prev = x
    return x_prev
