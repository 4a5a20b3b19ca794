"""The array backend: the one module that knows whether arrays live in NumPy or CuPy.

Every other module asks `get_xp()` for the array module and never imports CuPy itself; the hand-differentiated
operations the network is made of are in `minidiff/layers.py`, written so that one definition serves both.

The device. `use_device("gpu")` (the CLI's `--device gpu`, or MINIDIFF_DEVICE=gpu in the environment, read when
`get_xp()` is first called without a device chosen) makes CuPy the array module; `use_device("cpu")` makes it NumPy
again. Choosing the GPU registers CuPy's arrays with autograd — its ArrayBox for tracing, and `DeviceVSpace`, whose
zeros and ones CuPy makes — and builds the fused kernels of `kernels.py`: on CuPy each primitive's elementwise work
is one kernel (SiLU and its bias add, SiLU's backward, the loss and its backward, the sinusoids), where NumPy's
in-place passes stay as they are (MINIDIFF_FUSED=0 turns the kernels off, for comparison). Arrays cross between host
and device only where a caller asks: `to_device` / `to_numpy`, and the traced `transfer_to_device` /
`transfer_to_host`, whose gradients cross back. Checkpoints are NumPy (run.save_checkpoint), so a run moves freely.

Randomness on a GPU, and the trade-off (TrainConfig.randomness; `train.draw_batch`):
- "numpy": the run's NumPy generator draws the batch, its t and its noise on the host, as on the CPU, and they are
  copied to the device: 2·B·D + B numbers and a few synchronous copies a step. Slow at large batches, but the draws
  are those of the CPU bit for bit, so a GPU run in float64 follows the CPU's loss curve to rounding (tests/test_gpu.py
  checks 1e-10). The CPU's default.
- "counter": a counter-based generator (`counter.py`: each number a hash of seed, step, stream and index) drawn by
  three kernels on the device, nothing copied and nothing to synchronise; its state is the step, so a checkpoint
  needs nothing more. The GPU's default. Other numbers than "numpy"'s, so other curves; the same functions run on
  NumPy, so such a run resumes on the CPU with the same stream (integers exactly, normals to an ulp).

Synchronisation. CuPy queues kernels and returns at once; the host waits only when it reads a value back. A training
step reads back two numbers, once: the loss and the squared gradient norm, after the backward pass and before the
update, because the divergence guard must decide before the update (run.LossGuard) and the clip factor is computed
from the norm (train.train_step). Everything else of the step — the draws, the loss log's sums — stays queued. Cost,
measured on an H200 (README "GPU"): the whole train_step, with this read back in its middle, the draws, clipping and
the EMA, takes 0.6–1.5 ms more than the bare forward-backward-Adam step that reads back at its end (batch 131072:
6.0 against 4.7 ms). Checking only every k steps would save part of that, at the price of updates applied before
their loss is known; the guard's promise — a diverging step changes nothing — was kept instead.

Memory. glibc's malloc gives freed blocks of 128 KiB or more back to the kernel, so every temporary of every step
would be fresh memory, faulted in 4 KiB at a time; `_keep_freed_memory` keeps them (batch 4096: 68 → 55 ms a step;
Adam at any batch: 1.1 → 0.26 ms).
"""
import ctypes
import os
import sys

import numpy
from autograd.extend import VSpace, defvjp_argnums, primitive
from autograd.numpy.numpy_boxes import ArrayBox
from autograd.tracer import isbox

from minidiff.errors import UsageError

DEVICES = ("cpu", "gpu")
DEVICE_VARIABLE = "MINIDIFF_DEVICE"  # the device when none is chosen: cpu (the default) or gpu
FUSED_VARIABLE = "MINIDIFF_FUSED"  # 0: CuPy without the fused kernels (plain ufuncs), for comparison

_xp, _device, _kernels = None, None, None  # set by use_device; get_xp() chooses from the environment at first use
_built_kernels = {}  # id(cupy module) -> its Kernels, compiled once per process


class DeviceError(UsageError, RuntimeError):
    """The device asked for cannot be used (unknown name, CuPy missing, no GPU), in one line."""


def parse_device(name):
    """'cpu' or 'gpu' from a device name as a user types it (any case; empty means cpu)."""
    text = (name or "cpu").strip().lower()
    if text not in DEVICES:
        raise DeviceError(f"unknown device {name!r}; choose one of: {', '.join(DEVICES)}")
    return text


def use_device(name=None):
    """Make `name` ('cpu' or 'gpu'; None: $MINIDIFF_DEVICE, else cpu) the device of every array made from now on.

    Returns the array module. Raises DeviceError, with a one-line reason, for an unknown name or a GPU that CuPy
    cannot reach; the device in use is then unchanged.
    """
    global _xp, _device, _kernels
    name = parse_device(os.environ.get(DEVICE_VARIABLE) if name is None else name)
    if name == "cpu":
        _xp, _device, _kernels = numpy, "cpu", None
        return _xp
    cupy = _import_cupy()
    _register_with_autograd(cupy)
    kernels = None
    if os.environ.get(FUSED_VARIABLE, "1") != "0" and hasattr(cupy, "ElementwiseKernel"):
        from minidiff.accel.kernels import Kernels
        if id(cupy) not in _built_kernels:
            _built_kernels[id(cupy)] = Kernels(cupy)
        kernels = _built_kernels[id(cupy)]
    _xp, _device, _kernels = cupy, "gpu", kernels
    return _xp


def _import_cupy():
    """CuPy, checked to see at least one GPU; DeviceError otherwise."""
    try:
        import cupy
    except Exception as err:  # noqa: BLE001  (ImportError, or a CUDA library that fails to load)
        raise DeviceError(f"the gpu device needs CuPy, and it cannot be imported ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else 'no message'}); pip install 'minidiff[gpu]'"
                          ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # noqa: BLE001  (cupy.cuda.runtime.CUDARuntimeError: no driver, no device)
        count, reason = 0, str(err).splitlines()[0] if str(err) else type(err).__name__
    else:
        reason = "no CUDA device is visible"
    if count < 1:
        raise DeviceError(f"the gpu device needs an NVIDIA GPU, and CuPy found none ({reason})")
    return cupy


def get_xp():
    """The array module in use: `numpy` (the default) or `cupy`."""
    return _xp if _xp is not None else use_device()


def device():
    """The device in use: 'cpu' or 'gpu'."""
    get_xp()
    return _device


def fused():
    """The fused CuPy kernels (`kernels.Kernels`) when they are in use, else None."""
    return _kernels


# --- moving arrays ----------------------------------------------------------------------------------------------

def to_numpy(a):
    """A host NumPy copy of `a`, whichever backend made it."""
    return a.get() if hasattr(a, "get") and not isinstance(a, numpy.ndarray) else numpy.asarray(a)


def to_device(a):
    """`a` as an array of the device in use (a copy only when it lives elsewhere). A traced value is returned as it
    is: it is already on the device of the trace (to move one, use `transfer_to_device`)."""
    xp = get_xp()
    if xp is numpy or isbox(a) or isinstance(a, xp.ndarray):
        return a
    return xp.asarray(a)


_constants = {}  # (id of the array module, key) -> a small constant array, made once


def constant(key, make):
    """The constant array `make()` (NumPy) as an array of the device in use, made and copied once, then reused:
    a copy to the device waits for the queued work to finish, which would cost a sync on every call. Not to be
    written to."""
    xp = get_xp()
    if (id(xp), key) not in _constants:
        _constants[(id(xp), key)] = xp.asarray(make())
    return _constants[(id(xp), key)]


def tree_to_numpy(tree):
    """{name: host array} of a dict of arrays."""
    return {k: to_numpy(v) for k, v in tree.items()}


def tree_to_device(tree):
    """{name: device array} of a dict of arrays."""
    return {k: to_device(v) for k, v in tree.items()}


# The same moves as autograd primitives: a value traced on the host goes through a network on the device and back,
# and its gradient makes the reverse trip (likelihood.network_model differentiates the network w.r.t. x this way).
#   forward   y = x on the device           backward   x̄ = ȳ on the host
transfer_to_device = primitive(lambda x: to_device(x))
transfer_to_host = primitive(lambda x: to_numpy(x))
defvjp_argnums(transfer_to_device, lambda wanted, y, args, kwargs: lambda g: [to_numpy(g)])
defvjp_argnums(transfer_to_host, lambda wanted, y, args, kwargs: lambda g: [to_device(g)])


# --- CuPy arrays in autograd ------------------------------------------------------------------------------------

class DeviceVSpace(VSpace):
    """autograd's view of a CuPy array: its shape and dtype, and zeros and ones that CuPy makes.

    autograd's ArrayVSpace calls np.asarray on the value, which CuPy refuses; everything else a
    backward pass asks of a vector space (adding two gradients) is the arrays' own arithmetic.
    """
    module = None  # the CuPy module, set by _register_with_autograd

    def __init__(self, value):
        self.shape, self.dtype = value.shape, value.dtype

    @property
    def size(self):
        return int(numpy.prod(self.shape))

    @property
    def ndim(self):
        return len(self.shape)

    def zeros(self):
        return self.module.zeros(self.shape, dtype=self.dtype)

    def ones(self):
        return self.module.ones(self.shape, dtype=self.dtype)

    def standard_basis(self):
        for index in numpy.ndindex(*self.shape):
            vector = self.zeros()
            vector[index] = 1
            yield vector

    def randn(self):
        return self.module.asarray(numpy.random.default_rng().standard_normal(self.shape), dtype=self.dtype)

    def _inner_prod(self, x, y):
        return x.ravel().dot(y.ravel())


def _register_with_autograd(cupy):
    """Trace CuPy arrays as autograd traces NumPy arrays: the same box, a vector space of their own."""
    DeviceVSpace.module = cupy
    ArrayBox.register(cupy.ndarray)
    VSpace.register(cupy.ndarray, DeviceVSpace)


def bincount(x, weights, length):
    """numpy.bincount(x, weights, minlength=length) for ints x in 0 … length − 1 (float64 sums of the weights, or
    counts when weights is None), computed where x lives and in the same order every time.

    CuPy's own bincount adds with atomics, in whatever order the threads arrive, so its float sums change from run
    to run in their last bits; on the device a one-hot matrix-vector product adds in a fixed order instead.
    """
    xp = get_xp()
    if xp is numpy:
        return numpy.bincount(x, weights=weights, minlength=length)
    one_hot = x[:, None] == xp.arange(length)                                       # (n, length)
    if weights is None:
        return one_hot.sum(axis=0)
    return weights.astype(xp.float64).dot(one_hot.astype(xp.float64))


# glibc's malloc gives a freed block of 128 KiB or more back to the kernel (munmap, or a trim of the heap top), so
# the next array of that size is fresh memory that page-faults on first touch. Keeping freed blocks in the heap
# (mallopt's M_MMAP_THRESHOLD and M_TRIM_THRESHOLD) lets each step reuse the memory of the step before. A user's own
# MALLOC_* or GLIBC_TUNABLES settings are left alone, and elsewhere than glibc this does nothing.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3    # glibc's <malloc.h>
KEEP_BLOCKS_BELOW = 1 << 30                   # bytes: any array the toy networks make
MMAP_THRESHOLD_MAX = 32 << 20                 # the most that older glibc accepts on 64-bit (mallopt(3))


def _keep_freed_memory():
    if not sys.platform.startswith("linux") or any(
            k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")):
        return
    libc = ctypes.CDLL(None)
    if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version"):
        if not libc.mallopt(M_MMAP_THRESHOLD, KEEP_BLOCKS_BELOW):
            libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
        libc.mallopt(M_TRIM_THRESHOLD, KEEP_BLOCKS_BELOW)


_keep_freed_memory()
