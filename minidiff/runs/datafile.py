"""The user's own data file: reading it safely, checking it, and standardising it.

    load_data_file(path) -> (n, D) float64 array      a .npy or .csv file, each refusal a DataError
    standardize(x) -> (x_std, stats), unstandardize(x, stats)

A file is checked before it is used, and each check names the file, what is wrong and what is allowed: the file exists and has a known extension (DATA_EXTENSIONS); it is not larger than MAX_FILE_BYTES on disk; a
.npy file holds a numeric array (read with allow_pickle=False, its size taken from the header before the data is
loaded); a .csv file holds comma-separated numbers with at most one header line; there are at least MIN_ROWS rows,
at most MAX_VALUES numbers, and no NaN or Inf.

"""
import hashlib
import os

import numpy as np

from minidiff.errors import UsageError

DATA_EXTENSIONS = (".npy", ".csv")
MIN_ROWS = 2  # a spread (and standardize's std) needs at least two points
MAX_VALUES = 2 ** 25  # 33.5 M numbers = 256 MiB as float64: far above any toy set, below a laptop's memory
MAX_FILE_BYTES = 2 ** 29  # 512 MiB on disk, checked before anything is read (CSV spends ~16 bytes a number)


class DataError(UsageError):
    """A data file that cannot be used: the message names the file, what is wrong and what is allowed."""


def load_data_file(path):
    """The rows of a user's data file as an (n, D) float64 array.

    .npy: a numeric array, loaded with allow_pickle=False (object arrays are refused). .csv: numbers separated by
    commas, one row per line, with at most one header line. A 1-D array of n values is read as n points in
    D = 1. Refused, with a DataError naming the file: a missing file, another extension, no data, non-numeric
    values, NaN or Inf, more than 2 dimensions, fewer than MIN_ROWS rows, more than MAX_VALUES numbers.
    """
    path = str(path)
    _check_file(path)
    values = _read_npy(path) if path.lower().endswith(".npy") else _read_csv(path)
    if values.ndim == 1:
        values = values[:, None]  # n values: n points in one dimension
    return _check_values(path, values)


def file_checksum(path):
    """The SHA-256 of the file's bytes, in hex: what a run records of its data file, and checks at every later use."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_run_data(path, sha256):
    """The rows of a run's data file, after checking that it is still the file the run was trained on (sha256:
    the checksum recorded when the run started; None for a run that is starting now)."""
    points = load_data_file(path)
    if sha256 is not None and file_checksum(path) != sha256:
        raise DataError(f"data file {path!r} is not the one this run was trained on (its SHA-256 differs from the "
                        f"one recorded in config.json); put the original file back, or start a new run")
    return points


def _check_file(path):
    if not os.path.isfile(path):
        raise DataError(f"data file {path!r} does not exist (or is not a file)")
    if not path.lower().endswith(DATA_EXTENSIONS):
        raise DataError(f"data file {path!r} has an unsupported extension; use one of: {', '.join(DATA_EXTENSIONS)}")
    if os.path.getsize(path) > MAX_FILE_BYTES:
        raise DataError(f"data file {path!r} is larger than {MAX_FILE_BYTES} bytes; give a smaller sample")


def _read_npy(path):
    shape, dtype = _npy_header(path)
    if dtype.hasobject:
        raise DataError(f"data file {path!r} holds Python objects (pickled); only numeric arrays are allowed "
                        f"(.npy files are loaded with allow_pickle=False)")
    if dtype.kind not in "iuf":
        raise DataError(f"data file {path!r} has dtype {dtype}; only integer or float arrays are allowed")
    if int(np.prod(shape)) > MAX_VALUES:
        raise DataError(f"data file {path!r} holds {int(np.prod(shape))} numbers, more than the limit {MAX_VALUES}")
    try:
        return np.load(path, allow_pickle=False).astype(np.float64)
    except (ValueError, OSError, EOFError) as error:  # e.g. a truncated file
        raise DataError(f"data file {path!r} is not a readable .npy file: {error}") from None


def _npy_header(path):
    """(shape, dtype) from the .npy header, read without loading the array (NumPy's .npy format, NEP 1)."""
    try:
        with open(path, "rb") as file:
            version = np.lib.format.read_magic(file)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(file)
    except (ValueError, OSError, EOFError) as error:
        raise DataError(f"data file {path!r} is not a .npy file (NumPy's binary format): {error}") from None
    return shape, dtype


def _read_csv(path):
    with open(path, encoding="utf-8", errors="replace") as file:
        rows = [(number, line) for number, line in enumerate(file, start=1) if line.strip()]  # (line number, text)
    if rows and not _is_numeric_row(rows[0][1]):
        rows = rows[1:]  # one header line
    if not rows:
        raise DataError(f"data file {path!r} has no data rows; give numbers separated by commas, one row per line")
    try:
        return np.loadtxt([line for _, line in rows], delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError:
        raise DataError(f"data file {path!r}: {_csv_problem(rows)}") from None


def _csv_problem(rows):
    """What is wrong with the first bad line: a non-numeric value, or a change in the number of columns."""
    width = len(rows[0][1].split(","))
    for number, line in rows:
        if not _is_numeric_row(line):
            return f"line {number} is not numbers separated by commas ({line.strip()[:40]!r}); one header line at most"
        if len(line.split(",")) != width:
            return f"line {number} has {len(line.split(','))} values, the first data line has {width}"
    return "it could not be parsed as comma-separated numbers"


def _is_numeric_row(line):
    try:
        [float(value) for value in line.split(",")]
        return True
    except ValueError:
        return False


def _check_values(path, values):
    if values.ndim != 2:
        raise DataError(f"data file {path!r} holds a {values.ndim}-D array of shape {values.shape}; "
                        f"give a 2-D array (n points, D dimensions) or a 1-D array of n values")
    if values.shape[1] == 0 or values.shape[0] < MIN_ROWS:
        raise DataError(f"data file {path!r} has shape {values.shape}; at least {MIN_ROWS} rows and 1 column "
                        f"are needed")
    if values.size > MAX_VALUES:
        raise DataError(f"data file {path!r} holds {values.size} numbers, more than the limit {MAX_VALUES}")
    bad = np.flatnonzero(~np.all(np.isfinite(values), axis=1))
    if len(bad):
        raise DataError(f"data file {path!r} has NaN or Inf in {len(bad)} data row(s), the first is data row "
                        f"{bad[0] + 1} (counting from 1, header excluded); all values must be finite")
    return values


def standardize(x):
    """(x − mean) / std per column, with the statistics as plain lists so they save in a JSON config.

    Returns (x_standardized, {"mean": [...], "std": [...]}); std is the population std (ddof = 0). A constant
    column cannot be scaled to unit variance and is refused.
    """
    x = np.asarray(x, dtype=np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0)
    if np.any(std == 0):
        raise DataError(f"column(s) {np.flatnonzero(std == 0).tolist()} are constant (std 0) and cannot be "
                        f"standardized; remove them")
    return (x - mean) / std, {"mean": mean.tolist(), "std": std.tolist()}


def unstandardize(x, stats):
    """The inverse of `standardize`: x · std + mean, with stats as `standardize` returned them."""
    return np.asarray(x, dtype=np.float64) * np.asarray(stats["std"]) + np.asarray(stats["mean"])
