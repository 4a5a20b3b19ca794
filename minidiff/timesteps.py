"""How training picks the timestep t of each example: uniform, stratified, or importance-sampled.

Every sampler returns (t, weight) with weight = 1 / (T p(t)), so that E_p[weight · L_t] = E_uniform[L_t]: the
choice of p changes the variance of the gradient, never what it estimates.

- uniform:     t ~ U{0, …, T−1} (Ho et al. 2020, Alg. 1).
- stratified:  one u ~ U[0, 1) per batch, u_i = (u + i/B) mod 1, t_i = ⌊u_i T⌋ — the low-discrepancy
               ("antithetic") times of Kingma et al. 2021, App. I.1; every t stays equally likely.
- importance:  p(t) ∝ √E[L_t²] over the last 10 losses seen at t, mixed with 0.001 of the uniform
               distribution; uniform until every t has 10 losses (Nichol & Dhariwal 2021, §3.3).

The time samplers of SD3 and EDM instead change the objective (Esser et al. 2024, §3.1; Karras et al. 2022,
Table 1): they draw the rectified flow's time τ = σ/(s + σ) (preconditioning.flow_time) from a density π and
train on it without reweighting. Each is a distribution function F(τ) here:

    logit-normal (m, s)     logit τ ~ N(m, s²)                          Esser et al. 2024, eq. (19); m = 0, s = 1
    mode (s)                τ = 1 − u − s (cos²(πu/2) − 1 + u), u ~ U   Esser et al. 2024, eq. (20); s = 1.29
    cosmap                  τ = 1 − 1/(tan(πu/2) + 1), u ~ U            Esser et al. 2024, eq. (21)
    log-normal (p_mean, p_std)  ln σ_E ~ N(P_mean, P_std²)             Karras et al. 2022, Table 1; −1.2, 1.2

(σ_E = σ/s = τ/(1 − τ), so EDM's log-normal is the logit-normal with m = P_mean, s = P_std.) On minidiff's T steps
a draw of τ falls to the first step t whose τ_t ≥ τ (on the rectified flow, τ_t = (t+1)/T: t = ⌊τ T⌋, as uniform
does), so p(t) = F(τ_t) − F(τ_{t−1}) (`time_distribution`). Each is also offered under 'importance-NAME' with the
weight 1/(T p(t)) — the objective kept, only the variance changed — and, like Nichol & Dhariwal's, mixed with
0.001 of the uniform distribution so that no weight exceeds 1000. Options travel in the name:
'logit-normal:m=0,s=1', 'mode:s=1.29', 'log-normal:p_mean=-1.2,p_std=1.2' (options.py).
"""
import dataclasses
import math

import numpy as np

from minidiff import options
from minidiff.preconditioning import EDM_P_MEAN, EDM_P_STD, flow_time

HISTORY = 10  # Nichol & Dhariwal 2021, §3.3: the last 10 values of each loss term
UNIFORM_MIX = 0.001  # Nichol & Dhariwal 2021, §3.3: a small amount of the uniform distribution
LOGIT_NORMAL_M, LOGIT_NORMAL_S = 0.0, 1.0  # Esser et al. 2024, §5.1: lognorm(0.00, 1.00), the best of their ablation
MODE_SCALE = 1.29  # Esser et al. 2024, Table 1: mode(1.29)
MODE_SCALE_RANGE = (-1.0, 2.0 / (np.pi - 2.0))  # f(u; s) is monotone for −1 ≤ s ≤ 2/(π − 2) = 1.751938
DENSITIES = {"logit-normal": {"m": LOGIT_NORMAL_M, "s": LOGIT_NORMAL_S}, "mode": {"s": MODE_SCALE}, "cosmap": {},
             "log-normal": {"p_mean": EDM_P_MEAN, "p_std": EDM_P_STD}}
T_SAMPLING_OPTIONS = {"uniform": {}, "stratified": {}, "importance": {}} | DENSITIES | {
    f"importance-{name}": values for name, values in DENSITIES.items()}
T_SAMPLINGS = tuple(T_SAMPLING_OPTIONS)
BISECTIONS = 60  # halvings of [0, 1] that invert the mode map to float64 round-off (2⁻⁶⁰ < 1e-18)


# --- the densities of the flow's time τ, and the p(t) they give on T steps -------------------------------------

def _normal_cdf(z):
    return 0.5 * (1.0 + np.vectorize(math.erf)(np.asarray(z, dtype=np.float64) / math.sqrt(2.0)))


def _logit(tau):
    with np.errstate(divide="ignore"):
        return np.log(tau) - np.log1p(-tau)


def mode_map(u, s=MODE_SCALE):
    """τ = f(u; s) = 1 − u − s (cos²(πu/2) − 1 + u) (Esser et al. 2024, eq. 20): decreasing from 1 to 0."""
    u = np.asarray(u, dtype=np.float64)
    return 1.0 - u - s * (np.cos(np.pi * u / 2) ** 2 - 1.0 + u)


def time_cdf(name, tau, values):
    """F(τ) = P(τ' ≤ τ) of the density `name` with its options (module docstring), τ in [0, 1]."""
    tau = np.asarray(tau, dtype=np.float64)
    if name == "logit-normal":
        return _normal_cdf((_logit(tau) - values["m"]) / values["s"])
    if name == "log-normal":  # ln σ_E = logit τ
        return _normal_cdf((_logit(tau) - values["p_mean"]) / values["p_std"])
    if name == "cosmap":  # u = (2/π) arctan(τ / (1 − τ))
        return 2.0 / np.pi * np.arctan2(tau, 1.0 - tau)
    lo, hi = np.zeros_like(tau), np.ones_like(tau)  # mode: F(τ) = 1 − f⁻¹(τ), f decreasing
    for _ in range(BISECTIONS):
        mid = (lo + hi) / 2
        above = mode_map(mid, values["s"]) > tau
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    return 1.0 - (lo + hi) / 2


def time_distribution(kind, alpha_bar):
    """(p(t), reweighted) of a density sampler on the steps with these ᾱ, or None for uniform, stratified and
    importance (module docstring); p is mixed with UNIFORM_MIX of uniform when reweighted."""
    name, values = parse_t_sampling(kind)
    base = name.removeprefix("importance-")
    if base not in DENSITIES:
        return None
    tau = flow_time(alpha_bar)
    cdf = time_cdf(base, np.concatenate([[0.0], tau[:-1], [1.0]]), values)
    p = np.maximum(np.diff(cdf), 0.0)
    p = p / p.sum()
    reweighted = name != base
    return ((1 - UNIFORM_MIX) * p + UNIFORM_MIX / len(p) if reweighted else p), reweighted


def parse_t_sampling(kind):
    """(name, {option: value}) of a t-sampling spec; a ValueError naming what is allowed."""
    name, values = options.parse(kind, T_SAMPLING_OPTIONS, "t-sampling")
    if name.endswith("logit-normal") and not values["s"] > 0 or name.endswith("log-normal") and not values["p_std"] > 0:
        raise ValueError(f"t-sampling {name} needs a positive spread, got {values}")
    low, high = MODE_SCALE_RANGE
    if name.endswith("mode") and not low <= values["s"] <= high:
        raise ValueError(f"t-sampling {name} needs {low:g} <= s <= {high:.6f} (else τ = f(u) is not monotone), "
                         f"got s = {values['s']}")
    return name, values


# --- the sampler -------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class TimestepSampler:
    kind: str
    T: int
    history: np.ndarray = None  # (T, HISTORY) last losses at each t (importance only)
    count: np.ndarray = None  # (T,) how many losses each t has seen
    fixed: np.ndarray = None  # (T,) p(t) of a density sampler (`time_distribution`)
    reweighted: bool = False  # whether a density sampler weights by 1/(T p(t)) (importance-NAME)

    def sample(self, rng, batch_size):
        """(t, weight): int64 timesteps of shape (B,) and the importance weights 1/(T p(t)) (None if all 1)."""
        if self.kind == "stratified":
            u = (rng.random() + np.arange(batch_size) / batch_size) % 1.0
            return np.minimum((u * self.T).astype(np.int64), self.T - 1), None
        p = self.distribution()
        if p is not None:
            t = rng.choice(self.T, size=batch_size, p=p)
            return t, (1.0 / (self.T * p[t])).astype(np.float32) if self.weights_losses else None
        return rng.integers(0, self.T, batch_size), None

    def distribution(self):
        """p(t) if t is not drawn uniformly (a density sampler, or importance once warm), else None."""
        if self.fixed is not None:
            return self.fixed
        return self.probabilities() if self.kind == "importance" and self.warm else None

    @property
    def weights_losses(self):
        """Whether each loss is weighted by 1/(T p(t)), keeping the objective of uniform t."""
        return self.kind == "importance" or self.reweighted

    @property
    def warm(self):
        return self.count is not None and bool(np.all(self.count >= HISTORY))

    def probabilities(self):
        """p(t) ∝ √E[L_t²], mixed with UNIFORM_MIX of the uniform distribution."""
        root_mean_square = np.sqrt(np.mean(self.history ** 2, axis=1))
        p = root_mean_square / root_mean_square.sum()
        return (1 - UNIFORM_MIX) * p + UNIFORM_MIX / self.T

    def update(self, t, losses):
        """A sampler that has also seen `losses` at timesteps `t` (a no-op unless importance sampling).

        Each t keeps a ring of its last HISTORY losses; within a batch, repeats of one t fill consecutive slots
        in batch order, exactly as if the losses had arrived one at a time.
        """
        if self.kind != "importance":
            return self
        t = np.asarray(t)
        order = np.argsort(t, kind="stable")
        t_sorted = t[order]
        repeat = np.arange(len(t)) - np.searchsorted(t_sorted, t_sorted, side="left")  # 0, 1, … within each t
        history = self.history.copy()
        history[t_sorted, (self.count[t_sorted] + repeat) % HISTORY] = np.asarray(losses, np.float64)[order]
        return dataclasses.replace(self, history=history, count=self.count + np.bincount(t, minlength=self.T))

    def state(self):
        """The arrays a checkpoint needs to restore this sampler exactly."""
        return {} if self.kind != "importance" else {"history": self.history, "count": self.count}


def make_timestep_sampler(kind, T, state=None, alpha_bar=None):
    """A sampler of the given kind, optionally restored from `state()` of an earlier one; a density sampler needs
    the schedule's alpha_bar (its p(t) is fixed by the steps' noise levels)."""
    parse_t_sampling(kind)
    distribution = time_distribution(kind, np.zeros(T) if alpha_bar is None else alpha_bar)
    if distribution is not None:
        if alpha_bar is None or len(alpha_bar) != T:
            raise ValueError(f"t-sampling {kind} needs the schedule's alpha_bar (length T = {T})")
        return TimestepSampler(kind, T, fixed=distribution[0], reweighted=distribution[1])
    if kind != "importance":
        return TimestepSampler(kind, T)
    if state:
        return TimestepSampler(kind, T, np.array(state["history"], np.float64), np.array(state["count"], np.int64))
    return TimestepSampler(kind, T, np.zeros((T, HISTORY)), np.zeros(T, np.int64))
