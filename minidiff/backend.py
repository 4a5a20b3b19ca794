"""The array backend: the one module that knows whether arrays live in NumPy or CuPy.

Every other module asks `get_xp()` for the array module and never imports CuPy itself.
"""
import numpy

_xp = numpy


def get_xp():
    """The array module in use: `numpy` (the default) or `cupy`."""
    return _xp


def to_numpy(a):
    """A host NumPy copy of `a`, whichever backend made it."""
    return a.get() if hasattr(a, "get") and not isinstance(a, numpy.ndarray) else numpy.asarray(a)
