"""Progress, as the library reports it: through a callback, so that nothing below the command line draws.

A long computation takes `progress`, a bar factory: `progress(length, label, show)` returns a context manager whose
value has `update(n, item=None)`, advancing the bar by n (show(item), if given, is the text drawn beside it). The CLI
passes one made of click's progress bar (`minidiff/cli/common.py`); None, the library's default, draws nothing —
what tests, workers and `--quiet` want. The chapters below take an even simpler `progress(n)` callable.
"""
import contextlib
import time


class _Silent:
    """A bar that draws nothing."""

    def update(self, n, item=None):
        pass


def open_bar(progress, length, label, show=None):
    """progress(length, label, show), or for progress None (or False) a bar that draws nothing."""
    if not progress:
        return contextlib.nullcontext(_Silent())
    return progress(max(length, 0), label, show)


def silent(*_):
    """An echo that says nothing (the library's default: only the CLI prints)."""


class Batched:
    """A report(steps, diverged) — the sweep's progress callback — that passes its sums on to send(steps,
    diverged) at most every `every` seconds (at once for a divergence), and on flush: for a worker that reports to
    another process."""

    def __init__(self, send, every):
        self.send, self.every, self.steps, self.diverged, self.last = send, every, 0, 0, time.monotonic()

    def __call__(self, steps, diverged):
        self.steps, self.diverged = self.steps + steps, self.diverged + int(diverged)
        if diverged or time.monotonic() - self.last >= self.every:
            self.flush()

    def flush(self):
        if self.steps or self.diverged:
            self.send(self.steps, self.diverged)
        self.steps, self.diverged, self.last = 0, 0, time.monotonic()
