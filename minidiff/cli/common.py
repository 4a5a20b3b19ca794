"""What every command group shares: the progress bar, the device option, output-file checks."""
import sys

import click


def progress_bar(quiet):
    """The library's bar factory (`minidiff/runs/progress.py`) drawn with click on stderr, or None with --quiet."""
    if quiet:
        return None

    def bar(length, label, show=None):
        return _Bar(click.progressbar(length=length, label=label, show_pos=True, width=24, item_show_func=show,
                                      file=sys.stderr))
    return bar


class _Bar:
    """click's progress bar with the library's update(n, item) (click's own takes the item as current_item)."""

    def __init__(self, bar):
        self._bar = bar

    def __enter__(self):
        self._bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self._bar.__exit__(*exc)

    def update(self, n, item=None):
        self._bar.update(n, item)
