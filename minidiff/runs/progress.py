"""Progress, as the library reports it: through a callback, so that nothing below the command line draws.

A long computation takes `progress`, a bar factory: `progress(length, label, show)` returns a context manager whose
value has `update(n, item=None)`, advancing the bar by n (show(item), if given, is the text drawn beside it). The CLI
passes one made of click's progress bar (`minidiff/cli/common.py`); None, the library's default, draws nothing —
what tests, workers and `--quiet` want. The chapters below take an even simpler `progress(n)` callable.
"""
import contextlib


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
