"""A stand-in for CuPy on machines without a GPU: NumPy arrays behind the wall that CuPy puts between host and device.

CuPy refuses what cannot work on a GPU: turning a device array into a host one without `.get()` (np.asarray raises
TypeError) and mixing host and device arrays in one operation. This module does the same over NumPy, so that the
CPU-only test suite runs the GPU code paths — device selection, autograd's registration, every transfer, the
training loop, checkpoints, sampling, the ELBO, the diagnostics — and fails where a host array meets a device one.
It has no `ElementwiseKernel`, so the backend takes its plain path; the fused kernels are checked on a real GPU.
"""
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import types

import numpy as np


class ndarray(np.lib.mixins.NDArrayOperatorsMixin):
    """A "device" array: a NumPy array that only `.get()` hands back to the host."""
    __slots__ = ("_a",)
    __hash__ = None

    def __init__(self, a):
        self._a = a

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a "
                        "NumPy array explicitly.")

    def get(self):
        return self._a.copy()

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        if any(hasattr(x, "__array_ufunc__") and not isinstance(x, (ndarray, np.ndarray, np.generic))
               for x in inputs + (out or ())):  # `device_array + autograd_box` fails inside CuPy
            raise TypeError(f"Unsupported types {[type(x).__name__ for x in inputs]}")
        if out is not None:
            kwargs["out"] = tuple(_device(o) for o in out)
        result = getattr(ufunc, method)(*(_device(x) for x in inputs), **kwargs)
        return (out[0] if len(out) == 1 else out) if out is not None else _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        if any(not issubclass(t, (ndarray, np.ndarray)) for t in types):
            return NotImplemented
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))

    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    T = property(lambda self: ndarray(self._a.T))

    def __getattr__(self, name):
        if name.startswith("__"):  # no __array_interface__ and the like: NumPy would read the memory through them
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr)
        return lambda *args, **kwargs: _wrap(attr(*_unwrap(args), **_unwrap(kwargs)))

    def __getitem__(self, index):
        return _wrap(self._a[_unwrap(index)])

    def __setitem__(self, index, value):
        self._a[_unwrap(index)] = _device(value)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(row) for row in self._a)

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __bool__(self):
        return bool(self._a)

    def __format__(self, spec):
        return format(self._a, spec)

    def __repr__(self):
        return f"fake_cupy.ndarray({self._a!r})"


def _device(x):
    """The NumPy array under a device array; a host array here is an error, as in CuPy."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray):
        raise TypeError(f"Unsupported type {type(x)}: a host array where a device array belongs")
    return x


def _unwrap(x):
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return _device(x)


def _wrap(x):
    if isinstance(x, np.ndarray):
        return ndarray(x)
    if isinstance(x, np.generic):  # CuPy's reductions give 0-d arrays, not scalars
        return ndarray(np.asarray(x))
    if isinstance(x, (list, tuple)):
        return type(x)(_wrap(v) for v in x)
    return x


def asarray(a, dtype=None):
    if isinstance(a, ndarray):
        return a if dtype is None or np.dtype(dtype) == a.dtype else ndarray(a._a.astype(dtype))
    return ndarray(np.array(a, dtype=dtype, copy=True))


def array(a, dtype=None, copy=True):
    return ndarray(np.array(a._a if isinstance(a, ndarray) else a, dtype=dtype, copy=True))


def ascontiguousarray(a, dtype=None):
    return ndarray(np.ascontiguousarray(a._a if isinstance(a, ndarray) else a, dtype=dtype))


def asnumpy(a):
    return a.get() if isinstance(a, ndarray) else np.asarray(a)


cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))


def __getattr__(name):
    """NumPy's functions, taking and giving device arrays; its types and constants as they are."""
    attr = getattr(np, name)
    if isinstance(attr, type) or not callable(attr):
        return attr
    return lambda *args, **kwargs: _wrap(attr(*_unwrap(args), **_unwrap(kwargs)))


# --- cupy.ElementwiseKernel, on the host ---------------------------------------------------------------------------
# The fused kernels (minidiff/accel/kernels.py) are CUDA C. Compiled as C++ for the host by g++, with CuPy's calling rules
# as kernels.py relies on them, they can be checked on any machine with a compiler: arguments in order, inputs then
# outputs; omitted outputs allocated; the non-raw ones broadcast together and bound by reference at element i (an
# output may be read before it is written); raw ones indexed by their C-order position; a type placeholder T taken
# from the outputs, then the inputs. What this cannot check is CuPy itself: the GPU run does.

C_TYPES = {"float32": "float", "float64": "double", "int64": "long long", "uint64": "unsigned long long",
           "int32": "int"}
CTYPES_SCALARS = {"float": ctypes.c_float, "double": ctypes.c_double, "long long": ctypes.c_longlong,
                  "unsigned long long": ctypes.c_ulonglong, "int": ctypes.c_int}
_LIBRARIES = {}


def _params(text):
    """[(raw?, type, name)] of a CuPy parameter list such as 'raw T pred, T w, int64 dim'."""
    params = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        words = item.split()
        params.append((words[0] == "raw", *words[-2:]))
    return params


class _ElementwiseKernel:
    def __init__(self, in_params, out_params, operation, name="kernel", preamble="", **options):
        self.inputs, self.outputs = _params(in_params), _params(out_params)
        self.operation, self.name, self.preamble = operation, name, preamble

    def __call__(self, *args):
        n_in, params = len(self.inputs), self.inputs + self.outputs
        args = list(args) + [None] * (len(params) - len(args))
        T = next((np.dtype(a.dtype) for (_, t, _), a in zip(self.outputs + self.inputs, args[n_in:] + args[:n_in])
                  if t == "T" and hasattr(a, "dtype")), None)  # CuPy: from the outputs first, then the inputs
        dtype = lambda t: T if t == "T" else np.dtype(t)  # noqa: E731
        shape = np.broadcast_shapes(*(a.shape for (raw, _, _), a in zip(params, args)
                                      if not raw and isinstance(a, ndarray)))
        for k in range(n_in, len(params)):
            if args[k] is None:
                args[k] = ndarray(np.empty(shape, dtype(params[k][1])))
        scalars = frozenset(name for (_, _, name), a in zip(params, args) if not isinstance(a, ndarray))
        c_args, written = [ctypes.c_longlong(int(np.prod(shape)))], []
        for k, ((raw, t, name), a) in enumerate(zip(params, args)):
            if isinstance(a, np.ndarray):
                raise TypeError(f"Unsupported type {type(a)}: a host array passed to kernel {self.name}")
            if name in scalars:
                c_args.append(CTYPES_SCALARS[C_TYPES[dtype(t).name]](a.item() if hasattr(a, "item") else a))
                continue
            if a.dtype != dtype(t):
                raise TypeError(f"Type is mismatched. {self.name}: {name} is {a.dtype}, the kernel wants {dtype(t)}")
            buffer = np.ascontiguousarray(a._a) if raw else np.ascontiguousarray(np.broadcast_to(a._a, shape)).copy()
            if k >= n_in and not raw:
                written.append((a, buffer))
            c_args.append(buffer.ctypes.data_as(ctypes.c_void_p))
        self._library(T, scalars)(*c_args)
        for a, buffer in written:
            a._a[...] = buffer
        return args[n_in] if len(self.outputs) == 1 else tuple(args[n_in:])

    def _library(self, T, scalars):
        c = lambda t: C_TYPES[(T if t == "T" else np.dtype(t)).name]  # noqa: E731
        declarations, lines = [], []
        for k, (raw, t, name) in enumerate(self.inputs + self.outputs):
            if name in scalars:
                declarations.append(f"{c(t)} {name}")
                continue
            declarations.append(f"{c(t)}* _raw_{name}")
            if raw:
                lines.append(f"Raw<{c(t)}> {name}{{_raw_{name}}};")
        loop = [f"{'const ' if k < len(self.inputs) else ''}{c(t)} &{name} = _raw_{name}[i];"
                for k, (raw, t, name) in enumerate(self.inputs + self.outputs) if not raw and name not in scalars]
        source = "\n".join([
            "#include <cmath>", "using namespace std;", f"typedef {C_TYPES[T.name] if T else 'double'} T;",
            "template <typename V> struct Raw { V* p; V& operator[](long long i) const { return p[i]; } };",
            self.preamble.replace("__device__", "static inline"),
            f'extern "C" void kernel(long long n, {", ".join(declarations)}) {{', *lines,
            "for (long long i = 0; i < n; ++i) {", *loop, self.operation, "}", "}"])
        if source not in _LIBRARIES:
            folder = tempfile.mkdtemp(prefix="fake_cupy_")
            with open(os.path.join(folder, "k.cpp"), "w") as f:
                f.write(source)
            subprocess.run(["g++", "-O1", "-shared", "-fPIC", "-o", os.path.join(folder, "k.so"),
                            os.path.join(folder, "k.cpp")], check=True, capture_output=True)
            _LIBRARIES[source] = ctypes.CDLL(os.path.join(folder, "k.so")).kernel
        return _LIBRARIES[source]


def with_kernels():
    """This module with ElementwiseKernel (compiled for the host by g++), as another module object; None without
    g++. The backend then takes its fused path, as on a GPU."""
    if shutil.which("g++") is None:
        return None
    module = types.ModuleType("fake_cupy_with_kernels")
    module.__getattr__ = lambda name: getattr(sys.modules[__name__], name)
    module.ElementwiseKernel = _ElementwiseKernel
    return module
