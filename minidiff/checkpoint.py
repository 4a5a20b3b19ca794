"""Run folders and checkpoints: everything a run needs to continue exactly where it stopped.

A run folder holds
    config.json       the TrainConfig, the network Config and the data standardisation, as plain JSON
    checkpoint.npz    params, EMA params, Adam state, the training generator's state, the step (see `save`)
    loss_log.csv      one row per logged step
    samples.png, samples.npy, quality.json   written at the end of training
Arrays are saved with `np.savez` and loaded with `allow_pickle=False`, so loading a checkpoint never runs code.
Every file is written to a temporary name in the same folder, flushed to disk and renamed over the old one, so a
run killed at any moment leaves the previous complete file in place.
"""
import json
import os
import tempfile

import numpy as np

CONFIG_FILE, CHECKPOINT_FILE, LOG_FILE = "config.json", "checkpoint.npz", "loss_log.csv"


class CheckpointError(ValueError):
    """A checkpoint or run folder that cannot be used, with the reason."""


def atomic_write(path, write):
    """Call write(file_object) on a temporary file next to path, fsync it, then rename it over path."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_json(path, obj):
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()))


def load_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None


def flatten(tree, prefix=""):
    """{'a': {'b': x}} -> {'a/b': x}: nested dicts of arrays as one flat dict for npz."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def unflatten(flat):
    tree = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def save_arrays(path, tree):
    """Write a nested dict of arrays, numbers and strings to path atomically (strings as unicode arrays)."""
    flat = {}
    for key, value in flatten(tree).items():
        if not isinstance(value, (np.ndarray, np.generic, int, float, str)):
            raise TypeError(f"checkpoint entry {key!r} is a {type(value).__name__}; only arrays, numbers, strings")
        flat[key] = np.asarray(value)
    atomic_write(path, lambda f: np.savez(f, **flat))


def load_arrays(path):
    """The nested dict that save_arrays wrote; refuses anything that would need pickle."""
    try:
        with np.load(path, allow_pickle=False) as data:
            flat = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except ValueError as err:
        raise CheckpointError(f"{path}: refused, it holds Python objects that would need pickle ({err})") from None
    except Exception as err:  # zipfile.BadZipFile, EOFError, OSError: a truncated or foreign file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None
    return unflatten(flat)
