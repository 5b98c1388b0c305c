"""A strict numpy-backed stand-in for the CuPy calls minippo makes, for tests on machines without a GPU.

``tests/test_kernels_gpu.py``'s stand-in checks the GAE wrapper; this one runs the whole trainer on
the cupy backend and holds it to the rules of real CuPy that plain numpy arrays would let pass:

- a device array (``ndarray``: a host array behind numpy's dispatch protocols, its class's module
  ``cupy``) never turns into a host array implicitly: ``np.asarray(dev)`` raises TypeError, as
  ``cupy.ndarray.__array__`` does; only ``.get()`` / ``cupy.asnumpy`` copy to the host;
- numpy functions and ufuncs that mix a device array with a host array raise TypeError, as CuPy's
  ``__array_ufunc__`` / ``__array_function__`` do (a 0-d one too, except in comparisons);
- ``dev[basic index] = host_array`` (or a list) raises: CuPy sends a value that is not a cupy array
  to ``ndarray.fill``, which takes scalars only (``dev[...] = cupy.asarray(host)`` is the way);
- a host array or list in an index (``dev[host_idx]``) works, as in CuPy, and counts as an upload:
  CuPy copies it to the device on every such indexing; integers alone give a 0-d view, as CuPy's
  ``dev[0]`` is (numpy gives a copied scalar); device arrays' ``flags`` are CuPy's (no ``writeable``);
- ``RawModule(...).get_function(name)(grid, block, args)`` checks the argument types that
  ``kernels/gae.cu`` declares and runs numpy in its place: the dones check sets the flag for an entry
  other than 0 or 1, and the GAE kernel (``minippo.advantages.gae_numpy``) writes nothing when it is set;
  ``kernels/adam.cu``'s two kernels run their lines as numpy operations on the arrays whose addresses
  their table holds (``ndarray.data.ptr`` is the host address of the array's first element), and
  ``kernels/act.cu``'s MLP forward likewise, as ``minippo.nn`` computes it on numpy;
- only the numpy functions, ufuncs and array methods listed below (``FUNCTIONS``, ``UFUNCS``,
  ``METHODS``) work on a device array: the ones minippo uses, each checked to exist in real CuPy
  (``test_standin_allows_only_what_real_cupy_has``, where CuPy is installed). CuPy answers a numpy
  function it lacks with TypeError; so does the stand-in for anything not listed, so a new call on
  the cupy path fails here until it is checked against CuPy and added.

``STATS`` counts the copies each way, the implicit syncs (``bool``, ``float``) and the device
operations (``ops``: each ufunc, numpy function, array method, assignment, advanced index and
kernel launch, about one GPU kernel or library call each) for tests that want to see them.
"""

from __future__ import annotations

import ctypes
import functools
import os
import stat
import types
from typing import Any

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

STATS = {"get": 0, "upload": 0, "bool": 0, "float": 0, "ops": 0}

# What minippo applies to device arrays (session 34: recorded over the cupy tests, then checked
# against CuPy 14.2's namespace, and the keywords used against its signatures: clip(out=),
# concatenate(axis=), zeros_like(shape=), the ufuncs' out=).
FUNCTIONS = frozenset({"clip", "concatenate", "dot", "full_like", "ones_like", "stack", "var", "vdot",
                       "where", "zeros_like"})
UFUNCS = frozenset({"absolute", "add", "bitwise_and", "bitwise_or", "divide", "equal", "exp", "expm1",
                    "greater", "greater_equal", "invert", "isfinite", "less", "less_equal", "log",
                    "maximum", "multiply", "negative", "not_equal", "power", "sqrt", "subtract", "tanh"})
METHODS = frozenset({"all", "any", "argmax", "astype", "copy", "max", "mean", "reshape", "std", "sum"})


def _host(x: Any, where: str, allow_0d: bool = False) -> Any:
    """A device array's data; a host array is refused, even a 0-d one (CuPy's rule: its argument
    preprocessing takes Python and numpy scalars only), except, with ``allow_0d``, a 0-d one in a
    comparison ufunc (which CuPy unwraps with ``.item()``)."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray) and (x.ndim > 0 or not allow_0d):
        raise TypeError(f"Unsupported type <class 'numpy.ndarray'> in {where}")
    if isinstance(x, (list, tuple)):
        return type(x)(_host(y, where, allow_0d) for y in x)
    return x


_COMPARISONS = {"equal", "not_equal", "less", "less_equal", "greater", "greater_equal"}


def _dev(r: Any) -> Any:
    if isinstance(r, np.ndarray):
        return ndarray(r)
    if isinstance(r, np.generic):  # CuPy's reductions return 0-d device arrays
        return ndarray(np.asarray(r))
    if isinstance(r, tuple):
        return tuple(_dev(y) for y in r)
    return r


def _count_host_indices(keys: tuple) -> None:
    """CuPy uploads a numpy array or list in an index before it gathers or scatters (every time:
    ``a[i] += x`` copies a host ``i`` twice, once to read and once to write); count each."""
    for k in keys:
        if isinstance(k, list) or (isinstance(k, np.ndarray) and k.ndim > 0):
            STATS["upload"] += 1


def _index(key: Any) -> Any:
    if isinstance(key, tuple):
        return tuple(k._a if isinstance(k, ndarray) else k for k in key)
    return key._a if isinstance(key, ndarray) else key


class ndarray(NDArrayOperatorsMixin):  # noqa: N801 - the name CuPy gives it
    """Device array stand-in: a host array behind the rules in the module docstring. Not a
    ``numpy.ndarray`` (neither is ``cupy.ndarray``): ``isinstance(x, np.ndarray)`` is False."""

    __slots__ = ("_a",)

    def __init__(self, a: np.ndarray) -> None:
        self._a = a

    def get(self) -> np.ndarray:
        STATS["get"] += 1
        return self._a.copy()

    @property
    def data(self) -> types.SimpleNamespace:
        """CuPy's MemoryPointer to the first element: ``.ptr``, its address (here a host address)."""
        return types.SimpleNamespace(ptr=self._a.ctypes.data)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __bool__(self) -> bool:
        STATS["bool"] += 1
        return bool(self._a)

    def __float__(self) -> float:
        STATS["float"] += 1
        return float(self._a)

    def __int__(self) -> int:
        STATS["float"] += 1
        return int(self._a)

    def __index__(self) -> int:
        STATS["float"] += 1
        return self._a.__index__()

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self) -> Any:
        return (_dev(r) for r in self._a)

    def __repr__(self) -> str:
        return f"cupy-standin({self._a!r})"

    def __format__(self, spec: str) -> str:
        STATS["float"] += 1
        return format(self._a, spec)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        where = f"ufunc {ufunc.__name__}"
        if ufunc.__name__ not in UFUNCS or method != "__call__":
            raise TypeError(f"{where}.{method} on a device array is not among the ones checked against "
                            "CuPy (strict_cupy.UFUNCS)")
        STATS["ops"] += 1
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = tuple(_host(o, where) for o in out)
        cmp = ufunc.__name__ in _COMPARISONS
        r = getattr(ufunc, method)(*(_host(x, where, cmp) for x in inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _dev(r)

    def __array_function__(self, func: Any, types_: Any, args: Any, kwargs: Any) -> Any:
        where = f"numpy.{func.__name__}"
        if func.__name__ not in FUNCTIONS:
            raise TypeError(f"{where} on a device array is not among the functions checked against CuPy "
                            "(strict_cupy.FUNCTIONS)")
        STATS["ops"] += 1
        r = func(*_host(list(args), where), **{k: _host(v, where) for k, v in kwargs.items()})
        out = kwargs.get("out")
        return out if out is not None else _dev(r)

    def __setitem__(self, key: Any, value: Any) -> None:
        keys = key if isinstance(key, tuple) else (key,)
        _count_host_indices(keys)
        basic = all(k is None or k is Ellipsis or isinstance(k, (slice, int, np.integer)) for k in keys)
        if isinstance(value, np.ndarray):
            if basic and value.ndim > 0:
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            STATS["upload"] += 1
        elif basic and not isinstance(value, (ndarray, int, float, complex, bool, np.generic)):
            # a list or tuple goes to fill too, which takes scalars only
            raise TypeError(f"Unsupported type {type(value)}")
        STATS["ops"] += 1
        self._a[_index(key)] = value._a if isinstance(value, ndarray) else value

    def __getitem__(self, key: Any) -> Any:
        keys = key if isinstance(key, tuple) else (key,)
        _count_host_indices(keys)
        if any(isinstance(k, (ndarray, np.ndarray, list)) for k in keys):  # a gather kernel; a view is none
            STATS["ops"] += 1
        r = self._a[_index(key)]
        if isinstance(r, np.generic):  # every index an integer: CuPy gives a 0-d view, not a copy
            r = self._a[(*_index(keys), ...)]
        return _dev(r)

    @property
    def flags(self) -> Any:
        """CuPy's flags: c_contiguous, f_contiguous and owndata, and no ``writeable`` (a device array is
        always writable), so code that reads numpy's flag on a device array fails here as on CuPy."""
        f = self._a.flags
        return types.SimpleNamespace(c_contiguous=f.c_contiguous, f_contiguous=f.f_contiguous, owndata=f.owndata)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # __array_interface__ and the like would convert implicitly
            raise AttributeError(name)
        attr = getattr(self._a, name)  # shape, dtype, ndim, size, T, flags, sum, max, astype, ...
        if callable(attr):
            if name not in METHODS:
                raise AttributeError(f"{name}: not among the array methods checked against CuPy "
                                     "(strict_cupy.METHODS)")
            def method(*args: Any, **kwargs: Any) -> Any:
                STATS["ops"] += 1
                return _dev(attr(*_host(list(args), name), **{k: _host(v, name) for k, v in kwargs.items()}))
            return method
        return _dev(attr) if isinstance(attr, np.ndarray) else attr


ndarray.__module__ = "cupy"



def asarray(a: Any, dtype: Any = None) -> ndarray:
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == dtype else a.astype(dtype)
    STATS["upload"] += 1
    return ndarray(np.array(a, dtype=dtype, copy=True))


def ascontiguousarray(a: Any, dtype: Any = None) -> ndarray:
    """``cupy.ascontiguousarray``: of a device array only (CuPy's parameter is typed ``_ndarray_base``;
    a host array raises TypeError rather than being uploaded)."""
    if not isinstance(a, ndarray):
        raise TypeError(f"Argument 'a' has incorrect type (expected cupy._core.core._ndarray_base, got "
                        f"{type(a).__name__})")
    a = asarray(a, dtype)
    return a if a._a.flags.c_contiguous else ndarray(np.ascontiguousarray(a._a))


def copyto(dst: ndarray, src: Any) -> None:
    """``cupy.copyto``: into a device array, from a device array or a scalar (a host array raises)."""
    if not isinstance(dst, ndarray):
        raise TypeError(f"copyto destination must be a cupy array, got {type(dst).__name__}")
    np.copyto(dst._a, _host(src, "copyto"))


def may_share_memory(a: ndarray, b: ndarray) -> bool:
    """``cupy.may_share_memory`` (bounds only, as CuPy's default): two device arrays."""
    if not (isinstance(a, ndarray) and isinstance(b, ndarray)):
        raise TypeError("may_share_memory takes two cupy arrays")
    return bool(np.may_share_memory(a._a, b._a))


def shares_memory(a: ndarray, b: ndarray) -> bool:
    """``cupy.shares_memory`` (exact, as CuPy's default): two device arrays."""
    if not (isinstance(a, ndarray) and isinstance(b, ndarray)):
        raise TypeError("shares_memory takes two cupy arrays")
    STATS["ops"] += 1  # (CuPy: a kernel listing the addresses, a sort and a search)
    return bool(np.shares_memory(a._a, b._a))


def _made(fn: Any) -> Any:
    return lambda *args, **kwargs: ndarray(fn(*args, **kwargs))


def _at(address: int, size: int, dtype: Any) -> np.ndarray:
    """The ``size`` elements of ``dtype`` at a (host) address, as a writable array: what a kernel reads
    through a pointer taken from a table."""
    dtype = np.dtype(dtype)
    return np.frombuffer((ctypes.c_char * (size * dtype.itemsize)).from_address(address), dtype=dtype)


def _adam_kernel(name: str) -> Any:
    """adam_gather_* / adam_update_* (kernels/adam.cu): the argument types it declares checked, then its
    lines run as numpy operations on the arrays its address table points at."""
    want = np.float32 if name.endswith("_f32") else np.float64

    def run(grid: tuple, block: tuple, args: tuple) -> None:
        STATS["ops"] += 1
        table, n, blocks = args[:3]
        assert type(table) is ndarray and table._a.dtype == np.int64 and table._a.flags.c_contiguous
        assert type(n) is np.int32 and type(blocks) is np.int32 and table._a.shape == (2 * n + 1,)
        assert grid == (n * blocks,) and block[0] >= 1, "one run of blocks per array"
        arrays = table._a[:n].tolist()
        offsets = table._a[n:].tolist()
        flat = args[3:4] if name.startswith("adam_gather") else args[3:6]
        for a in flat:
            assert type(a) is ndarray and a._a.dtype == want and a._a.flags.c_contiguous and a._a.ndim == 1
            assert a._a.size == offsets[-1]
        if name.startswith("adam_gather"):
            for k in range(n):
                args[3]._a[offsets[k]:offsets[k + 1]] = _at(arrays[k], offsets[k + 1] - offsets[k], want)
            return
        scalars = args[6:]
        assert len(scalars) == 8 and all(type(x) is want for x in scalars), [type(x) for x in scalars]
        scale, b1, one_minus_b1, b2, one_minus_b2, c2, eps, lr_c1 = scalars
        g, m, v = (a._a for a in args[3:6])
        gi = g * scale
        m[...] = m * b1 + one_minus_b1 * gi
        v[...] = v * b2 + one_minus_b2 * (gi * gi)
        step = (m / (np.sqrt(v / c2) + eps)) * lr_c1
        for k in range(n):
            theta = _at(arrays[k], offsets[k + 1] - offsets[k], want)
            theta[...] = theta - step[offsets[k]:offsets[k + 1]]

    assert name in ("adam_gather_f32", "adam_gather_f64", "adam_update_f32", "adam_update_f64"), name
    return run


def _act_kernel(name: str) -> Any:
    """act_forward_* (kernels/act.cu): the argument types it declares checked, then every row of one or
    two MLPs whose layers its table points at, computed as ``minippo.nn`` computes them on numpy
    (``np.dot`` then the bias), so that training on the stand-in still equals numpy's bit for bit. The
    kernel's own order of summation is tested through the shim (tests/test_kernels_gpu_act.py)."""
    want = np.float32 if name.endswith("_f32") else np.float64
    assert name in ("act_forward_f32", "act_forward_f64"), name

    def run(grid: tuple, block: tuple, args: tuple, shared_mem: int = 0) -> None:
        STATS["ops"] += 1
        table, n_nets, width, x, B, obs_dim, relu, y0, ld0, y1, log_std, n_ls, lo, hi = args
        for a in (table, x, y0, y1, log_std):
            assert type(a) is ndarray and a._a.flags.c_contiguous, type(a)
        assert table._a.dtype == np.int64 and all(a._a.dtype == want for a in (x, y0, y1, log_std))
        for i in (n_nets, width, B, obs_dim, relu, ld0, n_ls):
            assert type(i) is np.int32, type(i)
        assert type(lo) is want and type(hi) is want
        assert grid == (n_nets * B,) and 1 <= block[0] <= 1024, (grid, block)
        assert shared_mem == 2 * width * np.dtype(want).itemsize <= 48 * 1024, shared_mem
        assert x._a.shape == (B, obs_dim) and y0._a.shape == (B, ld0)
        t = table._a.tolist()
        rec = 2
        for net, out in enumerate((y0._a, y1._a)[:n_nets]):
            h = x._a
            for layer in range(t[net]):
                W_at, b_at, n_in, n_out = t[rec:rec + 4]
                rec += 4
                assert n_in == h.shape[1] and (layer == t[net] - 1 or n_out <= width)
                s = np.dot(h, _at(W_at, n_in * n_out, want).reshape(n_in, n_out))
                s += _at(b_at, n_out, want)
                h = s if layer == t[net] - 1 else (np.maximum(s, 0) if relu else np.tanh(s))
            out[:, :h.shape[1]] = h
        if n_ls:
            ls = log_std._a
            y0._a[:, ld0 - n_ls:] = np.where(ls < lo, lo, np.where(ls > hi, hi, ls))

    return run


class RawModule:
    def __init__(self, code: str, options: tuple = ()) -> None:
        from minippo.backend import PROBE_SOURCE

        self.adam = "adam_update_f32" in code and "adam_gather_f64" in code
        self.act = "act_forward_f32" in code and "act_forward_f64" in code
        assert self.adam or self.act or ("gae_f32" in code and "gae_f64" in code) or code == PROBE_SOURCE
        self.options = options

    def get_function(self, name: str) -> Any:
        from minippo.advantages import gae_numpy

        if self.adam:
            return _adam_kernel(name)
        if self.act:
            return _act_kernel(name)
        if name == "minippo_probe":  # the backend's check that kernels compile and run
            def probe(grid: tuple, block: tuple, args: tuple) -> None:
                args[0]._a.flat[0] = 2.0
            return probe

        def check(grid: tuple, block: tuple, args: tuple) -> None:  # dones_check_f32/f64
            STATS["ops"] += 1
            d, T, N, bad = args
            assert type(d) is ndarray and d._a.flags.c_contiguous and d._a.dtype == want, type(d)
            assert type(T) is np.int32 and type(N) is np.int32 and d._a.shape == (T, N)
            assert type(bad) is ndarray and bad._a.dtype == np.int32 and bad._a.size == 1
            assert grid[0] >= 1 and block[0] >= 1, "CUDA refuses a launch of 0 blocks or 0 threads"
            if ((d._a != 0) & (d._a != 1)).any():
                bad._a[...] = 1

        def launch(grid: tuple, block: tuple, args: tuple) -> None:
            STATS["ops"] += 1
            r, v, d, lv, g, gl, T, N, adv, ret, bad = args
            for a in (r, v, d, lv, adv, ret):
                assert type(a) is ndarray and a._a.flags.c_contiguous and a._a.dtype == want, type(a)
            assert type(g) is want and type(gl) is want, (type(g), type(gl))
            assert type(T) is np.int32 and type(N) is np.int32
            assert type(bad) is ndarray and bad._a.dtype == np.int32 and bad._a.size == 1
            assert grid[0] >= 1 and block[0] >= 1, "CUDA refuses a launch of 0 blocks or 0 threads"
            assert grid[0] * block[0] >= int(N)
            if bad._a.item():  # the kernel returns before writing
                return
            lam = float(gl) / float(g) if g else 0.0
            a, rr = gae_numpy(*(x._a for x in (r, v, d, lv)), float(g), lam)
            adv._a[...] = a
            ret._a[...] = rr

        want = np.float32 if name.endswith("_f32") else np.float64
        assert name in ("gae_f32", "gae_f64", "dones_check_f32", "dones_check_f64"), name
        return check if name.startswith("dones_check") else launch


def make() -> types.ModuleType:
    """A fresh ``cupy`` module stand-in (put it in ``sys.modules["cupy"]``)."""
    cp = types.ModuleType("cupy")
    cp.__version__ = "0+strict-stand-in"
    cp.ndarray = ndarray
    cp.asarray = asarray
    cp.ascontiguousarray = ascontiguousarray
    cp.copyto = copyto
    cp.may_share_memory = may_share_memory
    cp.shares_memory = shares_memory
    cp.zeros, cp.empty, cp.arange = _made(np.zeros), _made(np.empty), _made(np.arange)
    cp.ones_like = lambda a, dtype=None: ndarray(np.ones_like(_host(a, "ones_like"), dtype=dtype))
    cp.asnumpy = lambda a: a.get() if isinstance(a, ndarray) else np.asarray(a)
    cp.RawModule = RawModule
    device = types.SimpleNamespace(synchronize=lambda: None)
    cp.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
                                    Device=lambda *a: device)
    cp.STATS = STATS
    return cp


@functools.cache
def real_device() -> bool:
    """Whether real CuPy and a CUDA device are here: the tests that also run on a device (marked
    ``gpu``) skip without one. Asked once, at collection, before any test puts the stand-in in its
    place."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def device_param() -> object:
    """``pytest.param("device")`` marked ``gpu`` and skipped without a device."""
    import pytest

    return pytest.param("device", marks=[pytest.mark.gpu, pytest.mark.skipif(
        not real_device(), reason="needs cupy and a CUDA device")])


def pretend_gpu_machine(folder: Any) -> dict[str, str]:
    """The environment (a copy of ``os.environ``) of a pretend GPU machine, for a subprocess:
    ``import cupy`` gives this stand-in with one device, ``nvidia-smi`` names one GPU, and at exit
    the process prints ``strict_cupy stand-in: STATS`` on stderr (uploads, read-backs, syncs), so
    a test can see that the work went to the "device". Its files go under ``folder``. The caller's
    MINIPPO_BACKEND is left out (a shell's =numba made the cupy script run numba): each test names the
    backend it wants, or gets the default."""
    bin_dir, py_dir = os.path.join(folder, "bin"), os.path.join(folder, "py")
    os.makedirs(bin_dir, exist_ok=True)
    os.makedirs(py_dir, exist_ok=True)
    tests = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(py_dir, "cupy.py"), "w") as f:
        f.write(f"import atexit, sys\nsys.path.insert(0, {tests!r})\nimport strict_cupy\n"
                "sys.modules['cupy'] = strict_cupy.make()\n"
                "atexit.register(lambda: print('strict_cupy stand-in:', strict_cupy.STATS, file=sys.stderr))\n")
    smi = os.path.join(bin_dir, "nvidia-smi")
    with open(smi, "w") as f:
        f.write("#!/bin/sh\necho 'GPU 0: strict_cupy stand-in'\n")
    os.chmod(smi, os.stat(smi).st_mode | stat.S_IXUSR)
    env = {k: v for k, v in os.environ.items() if k != "MINIPPO_BACKEND"}
    return {**env, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": py_dir}

