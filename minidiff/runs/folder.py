"""A run's state in its folder: what `run.train` saves to config.json and checkpoint.npz, and how it comes back.

    save_config / load_config          config.json: the TrainConfig, the network Config and the standardisation
    save_checkpoint / load_checkpoint  checkpoint.npz: the TrainState, the loss guard and the loss log's row under way
    on_device                          a loaded state (NumPy arrays) moved onto the device in use
    load_run                           both, for a finished or interrupted run

`checkpoint.py` writes and reads the files safely (atomically, checksummed, without pickle); this module says what
goes in them. The state ↔ arrays mapping: params, EMA params and Adam's moments as host (NumPy) arrays, the training
generator's state as JSON, the importance sampler's history (`timesteps`), the guard's window (`LossGuard.state`),
the log's sums (`LossLog.pending`), and the config as JSON.

Loading checks, before anything is used: every entry is there with the shape and dtype this run's network and
options give it (`_layout`), the stored config is this run's but for the RESUMABLE options, and the weights are
finite. Each failure is a CheckpointError naming the file and the reason.
"""
import dataclasses
import json
import os

import numpy as np

from minidiff.runs import checkpoint as ckpt, files
from minidiff import nn, objective
from minidiff.accel.backend import to_device, to_numpy
from minidiff.runs.checkpoint import CheckpointError, FORMAT_VERSION
from minidiff.runs.log import LOSS_BUCKETS, LossGuard
from minidiff.timesteps import HISTORY
from minidiff.train import TrainConfig, TrainState, validate

RESUMABLE = ("steps", "on_divergence", "explosion_factor", "max_skips")  # the options --resume may change
WEIGHTS = ("ema", "raw")  # the params of a checkpoint a model is made of: the EMA of the weights, or the weights
ADDED_OPTIONS = {"randomness": "numpy", "data_sha256": None, "snr_shift": 1.0, "sigma_data": 0.5}  # options newer
# than some checkpoints: what those runs did


# --- config.json ----------------------------------------------------------------------------------------------

def save_config(out_dir, config, network, stats):
    """Write config.json: the format version, the TrainConfig, the network Config and the standardisation stats."""
    files.save_json(os.path.join(out_dir, ckpt.CONFIG_FILE), {
        "format_version": FORMAT_VERSION, "train": dataclasses.asdict(config),
        "network": dataclasses.asdict(network), "standardize": stats})


def load_config(out_dir):
    """(TrainConfig, network Config, standardisation stats) of the run in out_dir, each checked."""
    path = os.path.join(out_dir, ckpt.CONFIG_FILE)
    meta = ckpt.load_json(path)
    try:
        if meta["format_version"] != FORMAT_VERSION:
            raise ValueError(f"format version {meta['format_version']}; this minidiff reads version {FORMAT_VERSION}")
        config, network, stats = TrainConfig(**meta["train"]), nn.Config(**meta["network"]), meta["standardize"]
        validate(config)
        if network != config.network(network.data_dim):
            raise ValueError("its network does not match its training options")
        _check_stats(stats, network.data_dim)
    except (KeyError, TypeError, ValueError) as err:  # ConfigError is a ValueError
        raise CheckpointError(f"{path}: not a usable run config ({type(err).__name__}: {err})") from None
    return config, network, stats


def _check_stats(stats, data_dim):
    """None, or a finite mean and a positive std for each of the data_dim dimensions (a ValueError otherwise)."""
    if stats is not None and not (np.shape(stats["mean"]) == np.shape(stats["std"]) == (data_dim,)
                                  and np.all(np.isfinite(stats["mean"])) and np.all(np.greater(stats["std"], 0))):
        raise ValueError("its standardisation is not a finite mean and a positive std per dimension")


def load_run(out_dir):
    """(TrainConfig, network Config, standardisation stats, state) of a finished or interrupted run."""
    config, network, stats = load_config(out_dir)
    return config, network, stats, load_checkpoint(out_dir, config, network)[0]


# --- checkpoint.npz -------------------------------------------------------------------------------------------

def save_checkpoint(out_dir, state, guard, log, config):
    """Flush the loss log, then write the checkpoint of `state`; returns its step."""
    log.flush()
    host = lambda tree: {k: to_numpy(v) if hasattr(v, "shape") else v for k, v in tree.items()}  # noqa: E731
    ckpt.save_arrays(os.path.join(out_dir, ckpt.CHECKPOINT_FILE), {
        "step": state.step, "params": host(state.params), "ema": host(state.ema), "adam": host(state.adam),
        "rng": json.dumps(state.rng.bit_generator.state), "timesteps": state.timesteps.state(),
        "log": log.pending(), "guard": guard.state(), "config": json.dumps(dataclasses.asdict(config), sort_keys=True)})
    return state.step


def on_device(state):
    """The state with its params, EMA and Adam moments on the device in use (checkpoints hold NumPy arrays)."""
    move = lambda tree: {k: to_device(v) if hasattr(v, "shape") else v for k, v in tree.items()}  # noqa: E731
    return dataclasses.replace(state, params=move(state.params), ema=move(state.ema), adam=move(state.adam))


def load_checkpoint(out_dir, config, network):
    """(state, guard, pending log row) from out_dir's checkpoint, which must belong to `config` and `network`."""
    path = os.path.join(out_dir, ckpt.CHECKPOINT_FILE)
    tree = ckpt.load_arrays(path)
    _check_layout(path, ckpt.flatten(tree), _layout(config, network))
    _check_config(path, str(tree["config"]), config)
    for group in ("params", "ema"):
        if not all(np.all(np.isfinite(v)) for v in tree[group].values()):
            raise CheckpointError(f"{path}: its {group} hold NaN or Inf")
    return _state(path, tree, config, network), LossGuard.from_state(tree["guard"]), tree["log"]


def _state(path, tree, config, network):
    """The TrainState that save_checkpoint wrote as `tree`, its params in the network's own order (nn.init's),
    so that a resumed run saves its checkpoints entry for entry as an uninterrupted one."""
    names = list(_param_shapes(network))
    adam = {"step": int(tree["adam"]["step"]), **{f"{m}.{k}": tree["adam"][f"{m}.{k}"] for k in names for m in "mv"}}
    return TrainState(step=int(tree["step"]), params={k: tree["params"][k] for k in names},
                      ema={k: tree["ema"][k] for k in names}, adam=adam, rng=_generator(path, str(tree["rng"])),
                      timesteps=objective.timestep_sampler(config, tree.get("timesteps")))


def _generator(path, text):
    """The training generator whose bit generator's state save_checkpoint wrote as JSON `text`."""
    rng = np.random.default_rng(0)  # its state is replaced on the next line
    try:
        rng.bit_generator.state = json.loads(text)
    except (ValueError, TypeError, KeyError) as err:
        raise CheckpointError(f"{path}: the generator state cannot be restored ({err})") from None
    return rng


def _layout(config, network):
    """{entry: (shape, dtype kinds)} of a checkpoint of this config (None in a shape: any length)."""
    shapes = _param_shapes(network)
    layout = {"step": ((), "iu"), "rng": ((), "U"), "config": ((), "U"), "adam/step": ((), "iu"),
              "log/sums": ((LOSS_BUCKETS,), "f"), "log/counts": ((LOSS_BUCKETS,), "f"), "log/skipped": ((), "iu"),
              "log/interval": ((None, 2), "f"), "guard/recent": ((None,), "f"), "guard/in_a_row": ((), "iu"),
              "guard/skipped": ((), "iu")}
    for name, shape in shapes.items():
        for group in ("params/", "ema/", "adam/m.", "adam/v."):
            layout[group + name] = (shape, "f")
    if config.t_sampling == "importance":
        layout.update({"timesteps/history": ((config.T, HISTORY), "f"), "timesteps/count": ((config.T,), "iu")})
    return layout


def _param_shapes(network):
    """{name: shape} of the network's params, in the order nn.init makes them (its values are thrown away)."""
    return {k: v.shape for k, v in nn.init(np.random.default_rng(0), network).items()}


def _check_layout(path, flat, layout):
    if set(flat) != set(layout):
        odd = sorted(set(flat) ^ set(layout))
        raise CheckpointError(f"{path}: does not fit this run's network and options (entries missing or extra: "
                              f"{', '.join(odd[:4])}{', …' if len(odd) > 4 else ''})")
    for key, (shape, kinds) in layout.items():
        value = flat[key]
        fits = len(value.shape) == len(shape) and all(e is None or e == s for e, s in zip(shape, value.shape))
        if not fits or value.dtype.kind not in kinds:
            raise CheckpointError(f"{path}: entry {key!r} has shape {value.shape} and dtype {value.dtype}, which "
                                  f"do not fit this run's network and options")


def _check_config(path, text, config):
    """The config stored in the checkpoint must be `config`, but for the options that --resume may change."""
    try:
        stored = json.loads(text)
    except ValueError:
        raise CheckpointError(f"{path}: its config is not valid JSON") from None
    current = dataclasses.asdict(config)
    stored = stored if isinstance(stored, dict) else {}
    stored = {**ADDED_OPTIONS, **stored}
    differ = sorted(k for k in set(stored) | set(current) if k not in RESUMABLE and stored.get(k) != current.get(k))
    if differ:
        raise CheckpointError(f"{path}: written by another run (its config differs from this run's in: "
                              f"{', '.join(differ)})")
