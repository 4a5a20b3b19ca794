"""Writing files so that a kill at any moment leaves either the old file or the new one, never half of one.

Every file minidiff writes — checkpoints, logs, samples, figures, the study — goes through `atomic_write`: the bytes
go to a temporary name in the same folder, are flushed to disk, and the temporary file is renamed over the old one
(a rename within one file system is atomic on POSIX), then the folder itself is flushed so that the rename survives
a power cut. A process killed in the middle leaves at most a hidden temporary file, which `remove_temporaries` clears.

Before any work, `check_output_file` refuses (a UsageError) an output file that could not be written at the end.
"""
import contextlib
import json
import os
import shutil
import tempfile

from minidiff.errors import UsageError

TEMPORARY_PREFIX = ".tmp-"
FIGURE_EXTENSIONS = (".png", ".svg")  # the figure files minidiff writes (lab/figures: save)
OUTPUT_FILE = "output file"  # what a refused output file's message names
FILE_MODE = 0o666  # what open() would give a new file, before the umask
_UMASK = os.umask(0o022)  # read the process's umask (os.umask sets a new one and returns the old) …
os.umask(_UMASK)  # … and put it back


def atomic_write(path, write):
    """Call write(file_object) on a temporary file next to path, fsync it, rename it over path, fsync the folder."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            try:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            except OSError as err:  # NumPy says "4000 requested and 2032 written": say which file, and why
                raise OSError(err.errno, f"could not be written ({err.strerror or err}); is the disk full?",
                              path) from None
        os.chmod(tmp, FILE_MODE & ~_UMASK)  # mkstemp makes the file private (0600); give it the usual mode
        os.replace(tmp, path)
        _fsync_folder(folder)  # the rename itself reaches the disk (POSIX: a directory entry is data of the folder)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _fsync_folder(folder):
    if os.name == "nt":  # Windows cannot open a folder; its rename is made durable by the file system
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_temporaries(folder):
    """Delete the temporary files that a run killed in the middle of a write left in folder (and the temporary
    folders that earlier versions made for a figure's own temporary file)."""
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name.startswith(TEMPORARY_PREFIX) and os.path.isdir(path):
            shutil.rmtree(path)
        elif name.startswith(TEMPORARY_PREFIX):
            os.remove(path)


def save_json(path, obj):
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()))


def check_output_folder(out, option="--out"):
    """A UsageError, before any work, for a folder that is a file or cannot be made or written (read-only)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"{option} {out!r} is a file, not a folder")
    parent = os.path.abspath(out)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise UsageError(f"{option} {out!r} cannot be written: {parent!r} is not a writable folder")


def check_output_file(path, extensions):
    """A UsageError, before any work, for an output file whose folder is missing or whose type is unknown."""
    if not path.lower().endswith(extensions):
        raise UsageError(f"{path!r} must end in {' or '.join(extensions)}", option=OUTPUT_FILE)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"folder {folder!r} does not exist", option=OUTPUT_FILE)
    if os.path.isdir(path) or not os.access(folder, os.W_OK):
        raise UsageError(f"{path!r} cannot be written (a folder, or in a folder without write permission)",
                         option=OUTPUT_FILE)


class FolderBusy(UsageError):
    """Another process holds the folder: a second writer is refused before it writes anything."""


@contextlib.contextmanager
def exclusive(folder, what="run folder"):
    """Hold an exclusive OS lock on `folder` (which must exist) while the block runs: one writer per folder.

    The lock is flock(2) on the folder itself, so it leaves no file behind, and the kernel releases it when the
    process ends, however it ends (kill -9 included): a stale lock cannot outlive its holder. A second process that
    asks for it gets FolderBusy at once instead of waiting. Where flock is unavailable (not POSIX) there is no lock.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no flock; one writer is then the user's to keep
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusy(f"{what} {folder!r} is in use by another minidiff process; wait for it to finish, "
                             f"or choose another folder") from None
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock
