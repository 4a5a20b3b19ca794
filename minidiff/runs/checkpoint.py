"""Run folders and checkpoints: everything a run needs to continue exactly where it stopped, and nothing that runs.

A run folder holds
    config.json       the TrainConfig, the network Config and the data standardisation, as plain JSON
                      (`folder.save_config`)
    checkpoint.npz    the step, params, EMA params, Adam state, the training generator, the importance sampler,
                      the loss guard, the loss log's row under way, and the config (`folder.save_checkpoint`)
    loss_log.csv      one row per logged step (`log.LossLog`)
    samples.npy, samples.png, quality.json   written at the end of training, quality.json last

A checkpoint is NumPy's .npz layout (a zip of .npy arrays) with three entries of its own:
    format            "minidiff checkpoint": tells a checkpoint from any other .npz
    format_version    FORMAT_VERSION: a file of another version is refused, never misread
    checksum          SHA-256 over every other entry's name, dtype, shape and bytes: a changed file is refused
Loading checks, in order: the file starts like a zip archive; every entry is a plain array read with
allow_pickle=False (an entry holding a Python object is refused unread, so loading never runs code); the format;
the version; the checksum. Each failure is a CheckpointError with a one-line reason.

Every file is written atomically (`minidiff/runs/files.py`), so a run killed at any moment leaves the previous
complete file in place. Files are deterministic: checkpoint entries carry
a fixed date instead of the time of writing, so the same state gives the same bytes.
"""
import hashlib
import io
import json
import os
import zipfile

import numpy as np

from minidiff.errors import UsageError
from minidiff.runs.files import atomic_write

CONFIG_FILE, CHECKPOINT_FILE, LOG_FILE = "config.json", "checkpoint.npz", "loss_log.csv"
SNAPSHOT_FILE = "snapshots.npz"  # the parameters along the run, when they are kept (lab/diagnostics/trajectory.py)
FORMAT_NAME = "minidiff checkpoint"
FORMAT_VERSION = 2  # 1: the first layout, without format name, checksum or config (refused)
RESERVED = ("format", "format_version", "checksum")
ZIP_MAGIC = b"PK\x03\x04"  # a zip archive starts with a local file header (PKWARE APPNOTE.TXT, §4.3.7)
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can carry (MS-DOS date, APPNOTE.TXT §4.4.6)


class CheckpointError(UsageError):
    """A checkpoint or run folder that cannot be used, with the reason."""


def load_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot be read ({err.strerror})") from None


# --- nested dicts as flat npz entries -------------------------------------------------------------------------

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


def checksum(flat):
    """SHA-256 (FIPS 180-4) over every entry but `checksum`, in sorted order: name, dtype, shape, then the bytes."""
    digest = hashlib.sha256()
    for key in sorted(k for k in flat if k != "checksum"):
        array = np.asarray(flat[key])
        digest.update(f"{key}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(array.tobytes(order="C"))
    return digest.hexdigest()


# --- checkpoints ----------------------------------------------------------------------------------------------

def save_arrays(path, tree):
    """Write a nested dict of arrays, numbers and strings to path, atomically, with format, version and checksum."""
    flat = {}
    for key, value in flatten(tree).items():
        if key in RESERVED or not isinstance(value, (np.ndarray, np.generic, int, float, str)):
            raise TypeError(f"checkpoint entry {key!r} is a {type(value).__name__}; only arrays, numbers, strings "
                            f"under names other than {', '.join(RESERVED)}")
        flat[key] = np.asarray(value)
    flat.update(format=np.asarray(FORMAT_NAME), format_version=np.asarray(FORMAT_VERSION))
    flat["checksum"] = np.asarray(checksum(flat))
    atomic_write(path, lambda f: _write_npz(f, flat))


def _write_npz(file, flat):
    """np.savez's layout (entries in the dict's order), with a fixed date, so that equal arrays give equal bytes."""
    with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as archive:
        for key in flat:
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, flat[key], allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(key + ".npy", date_time=ZIP_EPOCH), buffer.getvalue())


def load_arrays(path):
    """The nested dict that save_arrays wrote; a file that is not one, or was changed, raises CheckpointError."""
    flat = _read_npz(path)
    _check_format(path, flat)
    return unflatten({k: v for k, v in flat.items() if k not in RESERVED})


def _read_npz(path):
    """Every entry of the .npz at path, read with allow_pickle=False, so that no Python object is ever unpickled."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(ZIP_MAGIC))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot be read ({err.strerror})") from None
    if head != ZIP_MAGIC:
        raise CheckpointError(f"{path}: not a checkpoint: " + ("the file is empty" if not head else
                                                               "not a zip archive (.npz)"))
    flat = {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            for key in archive.files:
                flat[key] = _entry(path, archive, key)
    except CheckpointError:
        raise
    except Exception as err:  # a damaged zip raises BadZipFile, EOFError, OSError, zlib.error, …: all mean the same
        raise CheckpointError(f"{path}: truncated or damaged ({type(err).__name__}: {err})") from None
    return flat


def _entry(path, archive, key):
    try:
        value = archive[key]
    except ValueError as err:
        if "allow_pickle" not in str(err):
            raise
        raise CheckpointError(f"{path}: entry {key!r} holds a pickled Python object; refused unread (a checkpoint "
                              f"holds only numeric and string arrays)") from None
    if not isinstance(value, np.ndarray):  # a zip member that is not a .npy array comes back as raw bytes
        raise CheckpointError(f"{path}: entry {key!r} is not a NumPy array; not a checkpoint")
    return value


def _check_format(path, flat):
    version = _scalar(flat.get("format_version"))
    if "format" not in flat and version is None:
        names = ", ".join(sorted(flat)[:5]) or "nothing"
        raise CheckpointError(f"{path}: not a minidiff checkpoint (an .npz without its format entry; it holds "
                              f"{names})")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version}; this minidiff reads version "
                              f"{FORMAT_VERSION} only")
    if _scalar(flat.get("format")) != FORMAT_NAME:
        raise CheckpointError(f"{path}: not a minidiff checkpoint (its format entry is not {FORMAT_NAME!r})")
    if _scalar(flat.get("checksum")) != checksum(flat):
        raise CheckpointError(f"{path}: checksum mismatch; the file was changed or damaged after it was written")


def _scalar(value):
    """The Python value of a 0-d array entry (None for a missing or non-scalar entry)."""
    if not isinstance(value, np.ndarray) or value.shape != () or value.dtype.kind not in "iuU":
        return None
    return value.item()
