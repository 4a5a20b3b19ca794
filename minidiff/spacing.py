"""Timestep spacing: which of the T training timesteps a sampler visits when it takes fewer steps.

A sampler with n < T steps walks a descending subsequence τ_0 > τ_1 > … of the training timesteps and treats it as
a diffusion of its own (sample.py, `respaced`). linspace, leading and trailing are the spacings compared by Lin et
al. 2023 (Table 2); karras puts the steps on the σ grid of Karras et al. 2022, eq. (5), σ = √((1 − ᾱ)/ᾱ).
"""
import numpy as np

from minidiff.named_schedules import ScheduleError

SPACINGS = ("linspace", "leading", "trailing", "karras")  # Lin et al. 2023, Table 2; Karras et al. 2022
KARRAS_RHO = 7.0  # Karras et al. 2022, eq. (5) and Table 1


def timestep_spacing(T, num_steps, spacing="linspace", offset=0, alpha_bar=None):
    """The descending training timesteps a sampler visits when it takes num_steps ≤ T steps.

    linspace: round(linspace(0, T−1, n)); leading: 0, T//n, 2T//n, … (+ offset); trailing: round(T − k T/n) − 1.
    With T = 1000, n = 10: [999, 888, …, 0], [900, 800, …, 0], [999, 899, …, 99] (Lin et al. 2023, Table 2, 0-based).
    karras (needs alpha_bar): the timesteps nearest to Karras et al.'s σ grid, eq. (5), with σ = √((1 − ᾱ)/ᾱ):
    dense where σ is small, the grid on which an ODE solver's error is even (at most n steps, repeats merged).
    One step, for every spacing, is [T − 1]: sampling starts from the noise end.
    """
    if spacing not in SPACINGS:
        raise ScheduleError(f"unknown timestep spacing {spacing!r}; choose one of: {', '.join(SPACINGS)}")
    if not 1 <= num_steps <= T:
        raise ScheduleError(f"the number of sampling steps must be between 1 and T={T}, got {num_steps}")
    if num_steps == 1:  # one step goes from the noise end to the data: linspace and leading would visit t = 0 alone
        return np.array([T - 1], dtype=np.int64)
    if spacing == "karras":
        return _karras_timesteps(np.asarray(alpha_bar, dtype=np.float64), num_steps)
    if spacing == "linspace":
        steps = np.round(np.linspace(0, T - 1, num_steps))
    elif spacing == "leading":
        steps = np.arange(num_steps) * (T // num_steps) + offset
    else:
        steps = np.round(np.arange(T, 0, -T / num_steps))[::-1] - 1
    steps = steps.astype(np.int64)
    if steps.min() < 0 or steps.max() > T - 1 or len(np.unique(steps)) != num_steps:
        raise ScheduleError(f"{spacing} spacing with offset {offset} gives timesteps outside 0..{T - 1}")
    return steps[::-1].copy()


def _karras_timesteps(alpha_bar, n):
    """σ_i = (σ_max^{1/ρ} + i/(n−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, each mapped to the t of nearest log σ."""
    with np.errstate(divide="ignore"):
        log_sigma = 0.5 * (np.log1p(-alpha_bar) - np.log(alpha_bar))  # increasing in t; +∞ at zero SNR
    finite = np.flatnonzero(np.isfinite(log_sigma))
    if n == 1 or len(finite) < 2:
        return np.array([len(alpha_bar) - 1])
    lo, hi = np.exp(log_sigma[finite[0]] / KARRAS_RHO), np.exp(log_sigma[finite[-1]] / KARRAS_RHO)
    for m in range(n, len(alpha_bar) + 1):  # a finer grid until n distinct timesteps are reached
        target = KARRAS_RHO * np.log(hi + np.linspace(0, 1, m) * (lo - hi))  # log σ_i, descending
        right = np.clip(np.searchsorted(log_sigma[finite], target), 1, len(finite) - 1)
        nearer_left = target - log_sigma[finite][right - 1] < log_sigma[finite][right] - target
        steps = np.unique(np.append(finite[right - nearer_left], len(alpha_bar) - 1))  # always start at T − 1
        if len(steps) >= n:
            break
    while len(steps) < n:  # n close to T: fill the widest gap in log σ that still has a timestep inside
        gaps = np.where(np.diff(steps) > 1, np.diff(log_sigma[steps]), -np.inf)
        i = int(np.argmax(gaps))
        steps = np.insert(steps, i + 1, (steps[i] + steps[i + 1]) // 2)
    steps = steps[::-1]
    return np.delete(steps, range(1, 1 + len(steps) - n))  # an overshoot: drop the steps next to T − 1
