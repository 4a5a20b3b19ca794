"""What a run's options make of the loss: its schedule, the full specs of its target and weighting, its t-sampler.

A TrainConfig names its target, weighting and t-sampling; some of them carry numbers that the config holds as
fields of their own (the log-SNR shift, EDM's σ_d). These functions put the two together, once, so that the loss,
the samplers, the ELBO and the likelihood all read the same spec (train.make_problem keeps it as problem.target).

σ_d, EDM's standard deviation of the data (Karras et al. 2022, Table 1), is the config's `sigma_data`, 0.5 as in
the paper unless given. `minidiff train` measures it from the training points when --sigma-data is not given
(`with_measured_sigma_data`: √ of the variance averaged over the dimensions, the σ_d of data whose every coordinate
has that variance) and the number is saved in config.json, so a run never depends on the measurement again.
"""
import dataclasses

import numpy as np

from minidiff import preconditioning
from minidiff.schedules import make_schedule
from minidiff.targets import parse_target, parse_weighting
from minidiff.timesteps import make_timestep_sampler


def schedule_of(config, warn=True):
    """The run's Schedule: its name, T, zero-terminal-SNR rescale and log-SNR shift."""
    return make_schedule(config.schedule, config.T, zero_terminal_snr=config.zero_terminal_snr,
                         shift=config.snr_shift, warn=warn)


def needs_sigma_data(config):
    """Whether the run's target or weighting is EDM's and does not give σ_d in its own spec."""
    target_open = parse_target(config.target)[0] == "edm" and "sigma_data" not in config.target
    weighting_open = parse_weighting(config.weighting)[0].startswith("edm") and "sigma_data" not in config.weighting
    return target_open or weighting_open


def measured_sigma_data(x):
    """σ_d = √(mean over dimensions of Var[x_d]) of the training points x (n, D)."""
    return float(np.sqrt(np.mean(np.var(np.asarray(x, dtype=np.float64), axis=0))))


def with_measured_sigma_data(config, x_train):
    """The config with sigma_data measured from its training points x_train (those the network sees)."""
    return dataclasses.replace(config, sigma_data=measured_sigma_data(x_train))


def _with_option(spec, name, sigma_data):
    if name != "edm" or "sigma_data" in spec:
        return spec
    return f"{spec.partition(':')[0]}:sigma_data={float(sigma_data)!r}"


def target_of(config):
    """The target's full spec: 'edm:sigma_data=…' with the config's σ_d, any other target as it is named."""
    return _with_option(config.target, parse_target(config.target)[0], config.sigma_data)


def weighting_of(config):
    """The weighting's full spec: 'edm:sigma_data=…' with the config's σ_d, any other as it is named."""
    name = parse_weighting(config.weighting)[0].partition(":")[0]
    return _with_option(config.weighting, name, config.sigma_data)


def timestep_sampler(config, state=None, schedule=None):
    """The run's TimestepSampler (restored from a checkpoint's `state` if given); a density sampler reads the
    noise levels of the run's schedule."""
    schedule = schedule or schedule_of(config, warn=False)
    return make_timestep_sampler(config.t_sampling, config.T, state, alpha_bar=schedule.alpha_bar)


def input_scale(target, alpha_bar):
    """c_in on x_t (preconditioning.on_x_t) for the edm target at these ᾱ, else None (the network sees x_t)."""
    name, sigma_data = parse_target(target)
    return preconditioning.on_x_t(alpha_bar, sigma_data)[2] if name == "edm" else None
