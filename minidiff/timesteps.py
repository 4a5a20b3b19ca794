"""How training picks the timestep t of each example: uniform, stratified, or importance-sampled.

Every sampler returns (t, weight) with weight = 1 / (T p(t)), so that E_p[weight · L_t] = E_uniform[L_t]: the
choice of p changes the variance of the gradient, never what it estimates.

- uniform:     t ~ U{0, …, T−1} (Ho et al. 2020, Alg. 1).
- stratified:  one u ~ U[0, 1) per batch, u_i = (u + i/B) mod 1, t_i = ⌊u_i T⌋ — the low-discrepancy
               ("antithetic") times of Kingma et al. 2021, App. I.1; every t stays equally likely.
- importance:  p(t) ∝ √E[L_t²] over the last 10 losses seen at t, mixed with 0.001 of the uniform
               distribution; uniform until every t has 10 losses (Nichol & Dhariwal 2021, §3.3).
"""
import dataclasses

import numpy as np

T_SAMPLINGS = ("uniform", "stratified", "importance")
HISTORY = 10  # Nichol & Dhariwal 2021, §3.3: the last 10 values of each loss term
UNIFORM_MIX = 0.001  # Nichol & Dhariwal 2021, §3.3: a small amount of the uniform distribution


@dataclasses.dataclass(frozen=True, eq=False)
class TimestepSampler:
    kind: str
    T: int
    history: np.ndarray = None  # (T, HISTORY) last losses at each t (importance only)
    count: np.ndarray = None  # (T,) how many losses each t has seen

    def sample(self, rng, batch_size):
        """(t, weight): int64 timesteps of shape (B,) and the importance weights 1/(T p(t)) (None if all 1)."""
        if self.kind == "stratified":
            u = (rng.random() + np.arange(batch_size) / batch_size) % 1.0
            return np.minimum((u * self.T).astype(np.int64), self.T - 1), None
        if self.kind == "importance" and self.warm:
            p = self.probabilities()
            t = rng.choice(self.T, size=batch_size, p=p)
            return t, (1.0 / (self.T * p[t])).astype(np.float32)
        return rng.integers(0, self.T, batch_size), None

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


def make_timestep_sampler(kind, T, state=None):
    """A sampler of the given kind, optionally restored from `state()` of an earlier one."""
    if kind not in T_SAMPLINGS:
        raise ValueError(f"unknown t-sampling {kind!r}; choose one of: {', '.join(T_SAMPLINGS)}")
    if kind != "importance":
        return TimestepSampler(kind, T)
    if state:
        return TimestepSampler(kind, T, np.array(state["history"], np.float64), np.array(state["count"], np.int64))
    return TimestepSampler(kind, T, np.zeros((T, HISTORY)), np.zeros(T, np.int64))
