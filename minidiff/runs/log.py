"""What a run records as it goes: the loss log (loss_log.csv) and the divergence guard that watches the loss.

    LossLog(path, T)   one row every config.log_every steps: the means since the previous row of the loss, the
                       gradient norm (before clipping) and the per-example loss in each of LOSS_BUCKETS equal
                       ranges of t, then the count of skipped steps
    LossGuard()        the last EXPLOSION_WINDOW accepted losses, whose median `train_step` compares each new loss
                       with, and the counts of skipped steps

Both are saved in the checkpoint (`runfolder.save_checkpoint`): the guard's window and counts, and the log's row
under way (`LossLog.pending`), so that a resumed run writes the same rows and makes the same decisions as a run never
interrupted.

Divergence. A non-finite loss or gradient, or a loss above config.explosion_factor times the median of the last
EXPLOSION_WINDOW accepted losses, is a diverging step (`train.train_step` raises DivergenceError); `run.py` then
stops, or with on_divergence="skip-step" drops the update and records it here (`LossGuard.skip`, `LossLog.skip`).
"""
import dataclasses
import statistics

import numpy as np

from minidiff.runs import checkpoint as ckpt, files
from minidiff.accel.backend import bincount, get_xp, to_numpy

LOSS_BUCKETS = 10  # the loss log reports the loss in 10 equal ranges of t
# The running median is over the last 100 accepted losses: one default log interval, enough for a stable median of
# heavy-tailed losses, short enough to follow the loss as it falls (a stale median is higher: the safe side).
EXPLOSION_WINDOW = 100
EXPLOSION_MIN_LOSSES = 10  # no explosion check before 10 losses are known (the first losses are the largest)


# --- the divergence guard ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LossGuard:
    """The running median that `train_step` compares each loss with, and the count of skipped steps."""
    recent: tuple = ()  # the last EXPLOSION_WINDOW accepted losses, oldest first
    in_a_row: int = 0  # skipped steps since the last accepted one
    skipped: int = 0  # skipped steps in the whole run

    def median(self):
        """The median of the recent losses, or None while fewer than EXPLOSION_MIN_LOSSES are known."""
        return statistics.median(self.recent) if len(self.recent) >= EXPLOSION_MIN_LOSSES else None

    def accept(self, loss):
        return LossGuard((*self.recent, loss)[-EXPLOSION_WINDOW:], 0, self.skipped)

    def skip(self):
        return LossGuard(self.recent, self.in_a_row + 1, self.skipped + 1)

    def state(self):
        """The guard as checkpoint entries (`from_state` brings it back)."""
        return {"recent": np.array(self.recent, np.float64), "in_a_row": self.in_a_row, "skipped": self.skipped}

    @staticmethod
    def from_state(entries):
        """The guard that `state` saved (at most the last EXPLOSION_WINDOW losses of its window)."""
        recent = tuple(float(v) for v in entries["recent"][-EXPLOSION_WINDOW:])
        return LossGuard(recent, int(entries["in_a_row"]), int(entries["skipped"]))


# --- the loss log -----------------------------------------------------------------------------------------------

class LossLog:
    """loss_log.csv: step, then the means since the previous row of the loss, the gradient norm (before
    clipping) and the per-example loss in each of LOSS_BUCKETS equal ranges of t, then the steps skipped.

    The bucket sums are kept where the per-example losses are computed (on a GPU: on the device, read back only
    when a row is written or a checkpoint saved)."""
    HEADER = "step,loss,grad_norm," + ",".join(f"loss_t{i}" for i in range(LOSS_BUCKETS)) + ",skipped"

    def __init__(self, path, T, resume_at=None, pending=None):
        xp = get_xp()
        self.T, self.rows = T, []
        self.sums, self.counts, self.interval, self.skipped = xp.zeros(LOSS_BUCKETS), xp.zeros(LOSS_BUCKETS), [], 0
        if pending:  # the sums of a row that was under way when the checkpoint was written
            self.sums, self.counts = xp.asarray(pending["sums"]).copy(), xp.asarray(pending["counts"]).copy()
            self.interval = [tuple(row) for row in pending["interval"].reshape(-1, 2)]
            self.skipped = int(pending["skipped"])
        rows = _rows_up_to(path, resume_at, self.HEADER) if resume_at is not None else []
        files.atomic_write(path, lambda f: f.write(("\n".join([self.HEADER, *rows]) + "\n").encode()))
        self.file = open(path, "a")

    def add(self, step, loss, grad_norm, t, per_example, force):
        """Accumulate one step; with force, write a row of the means since the last row."""
        xp = get_xp()
        bucket = xp.minimum(xp.asarray(t) * LOSS_BUCKETS // self.T, LOSS_BUCKETS - 1)
        self.sums += bincount(bucket, xp.asarray(per_example), LOSS_BUCKETS)
        self.counts += bincount(bucket, None, LOSS_BUCKETS)
        self.interval.append((loss, grad_norm))
        if force:
            self._row(step)

    def skip(self, step, force):
        """Count one skipped step (its loss and gradient are not averaged in)."""
        self.skipped += 1
        if force:
            self._row(step)

    def _row(self, step):
        with np.errstate(invalid="ignore"):
            means = to_numpy(self.sums) / to_numpy(self.counts)
        loss, grad_norm = np.mean(self.interval, axis=0) if self.interval else (float("nan"), float("nan"))
        self.rows.append(f"{step},{loss:.6g},{grad_norm:.6g}," + ",".join(f"{m:.6g}" for m in means)
                         + f",{self.skipped}")
        self.sums[:], self.counts[:], self.interval, self.skipped = 0, 0, [], 0

    def pending(self):
        """The sums of the row under way, so that a resumed run writes the same row as an uninterrupted one."""
        return {"sums": to_numpy(self.sums), "counts": to_numpy(self.counts), "skipped": self.skipped,
                "interval": np.array(self.interval, np.float64).reshape(-1, 2)}

    def flush(self):
        if self.rows:
            self.file.write("\n".join(self.rows) + "\n")
            self.file.flush()
            self.rows = []

    def close(self):
        if not self.file.closed:
            self.flush()
            self.file.close()


def _rows_up_to(path, step, header):
    """The rows of an existing log up to `step`; a row cut off by a kill (no newline at its end) is dropped."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().split("\n")[:-1]
    except FileNotFoundError:
        return []
    if not lines or lines[0] != header:
        return []
    return [line for line in lines[1:] if line.split(",", 1)[0].isdigit() and int(line.split(",", 1)[0]) <= step]
