"""What each target asks the network to output, and the part of its loss no network can remove.

Every target is linear in (x_0, ε) with coefficients that depend on t only, X = a_t x_0 + b_t ε (`targets`), and
x_0 ⊥ ε, so its scale against t is exact given the data's first two moments (summed over the D dimensions):

    E‖X‖²    = a_t² E‖x_0‖² + b_t² D
    Var[X]   = a_t² tr Cov[x_0] + b_t² D

This is the post's argument made a number: μ̃ "is highly time-dependent scaling across t", and so is the score
(b_t = −1/σ_t grows without bound as t → 0), while ε (a = 0, b = 1) keeps unit scale at every t and v
(a² + b² = 1 for unit-variance data) nearly so.

The irreducible loss at t is E‖X − E[X | x_t]‖², the loss of the perfect network; for the Gaussian-mixture
datasets it is exact up to Monte Carlo over x_t (`mixture.irreducible_loss`), here multiplied by the weighting
w_X(t) so that it is the floor of the loss as training sees it.
"""
import numpy as np

from minidiff.mixture import irreducible_loss
from minidiff.targets import TARGETS, loss_weight, make_target, parse_weighting


def target_coefficients(schedule, target):
    """(a_t, b_t), each (T,), with X = a_t x_0 + b_t ε, read off `targets.make_target` (as `train.make_problem`)."""
    t, ones, zeros = np.arange(schedule.T), np.ones(schedule.T), np.zeros(schedule.T)
    return make_target(target, schedule, ones, zeros, t), make_target(target, schedule, zeros, ones, t)


def target_moments(schedule, target, x0):
    """(E‖X‖², Var[X]) against t, each (T,), for data whose sample is x0 (n, D) (module docstring)."""
    x0 = np.asarray(x0, dtype=np.float64)
    a, b = target_coefficients(schedule, target)
    dim = x0.shape[1]
    second = np.sum(np.mean(x0 ** 2, axis=0))                                   # E‖x_0‖²
    trace_cov = np.sum(np.var(x0, axis=0))                                       # tr Cov[x_0]
    return a ** 2 * second + b ** 2 * dim, a ** 2 * trace_cov + b ** 2 * dim


def target_scales(schedule, x0, targets=TARGETS):
    """{target: root-mean-square per dimension, √(E‖X‖² / D), (T,)} — the output scale each target demands."""
    dim = np.shape(x0)[1]
    return {name: np.sqrt(target_moments(schedule, name, x0)[0] / dim) for name in targets}


def weighted_floor(mixture, schedule, target, weighting, t, n, rng):
    """(mean, stderr) of w_X(t) E‖X − E[X|x_t]‖² at the timesteps t: the loss floor of a perfect network."""
    name, gamma = parse_weighting(weighting)
    weight = loss_weight(name, target, schedule, gamma=gamma)[np.asarray(t)]
    mean, stderr = irreducible_loss(mixture, schedule, target, t, n, rng)
    return weight * mean, weight * stderr
