"""The one switch between array backends: ``MINIPPO_BACKEND``.

Values: ``numpy`` (default), ``numba`` (Numba CPU kernels for the hot loops), ``cupy`` (arrays
and kernels on a CUDA GPU) and ``auto`` (cupy if a device works, else numba if installed, else
numpy). The variable is read once, at first use of :data:`name` or :data:`xp`, never at import.
In ``minippo/`` this module is the only place that imports numba or cupy; the kernels it selects
(``kernels/cpu*.py``, ``kernels/gpu.py``) import them when they are first loaded.

Usage::

    from minippo import backend
    backend.name          # "numpy" | "numba" | "cupy"
    backend.xp            # the array module: numpy, or cupy for the GPU backend
    backend.to_device(a)  # host numpy array -> backend array (no copy on CPU backends)
    backend.asnumpy(a)    # backend array -> host numpy array
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from types import ModuleType
from typing import Any

import numpy as np

ALLOWED = ("numpy", "numba", "cupy", "auto")
ENV_VAR = "MINIPPO_BACKEND"

log = logging.getLogger("minippo")

_resolved: tuple[str, ModuleType] | None = None


def _numba_ok() -> None:
    try:
        import numba  # noqa: F401
    except ImportError as e:
        if isinstance(e, ModuleNotFoundError) and e.name in (None, "numba"):
            raise ImportError(
                f"{ENV_VAR}=numba but numba is not installed ({e}); "
                "install it with: pip install 'minippo[numba]'"
            ) from e
        # installed but broken: one of its own imports missing (llvmlite), or a refusal of this
        # environment such as numba's "Numba needs NumPy 2.3 or less"
        remedy = ("reinstall it with: pip install --force-reinstall 'minippo[numba]'"
                  if isinstance(e, ModuleNotFoundError) else
                  "install a numba release that supports this numpy (pip install -U 'minippo[numba]'), "
                  "or use MINIPPO_BACKEND=numpy")
        raise ImportError(f"{ENV_VAR}=numba: numba is installed but cannot be imported ({e}); {remedy}") from e
    except Exception as e:  # its import refused a setting of its own (NUMBA_NUM_THREADS=0: a ValueError)
        raise ImportError(f"{ENV_VAR}=numba: numba is installed but cannot be imported ({type(e).__name__}: {e}); "
                          "check the NUMBA_* environment variables, or use MINIPPO_BACKEND=numpy") from e


def _prepare_numba() -> None:
    """What the numba backend needs before its kernels are imported (each time it is resolved):

    - numba's compiler on (``NUMBA_DISABLE_JIT=1`` leaves plain Python functions, which the kernels'
      vector intrinsics cannot run): RuntimeError otherwise, so that ``auto`` falls back to numpy;
    - a folder numba can write its cache to: ``@njit(cache=True)`` raises at import where neither
      the kernels' folder nor a user cache folder is writable (a read-only install run by a user
      without a home). Then the cache goes to a new temporary folder (``NUMBA_CACHE_DIR``, which
      processes started from this one inherit), removed when this process exits, with a warning
      (logged at INFO where warm kernels were linked, as below: such an image is meant to run so):
      the compiles are not kept. Kernels compiled there before (a read-only ``NUMBA_CACHE_DIR`` or
      kernels folder, warmed when it was writable: an image built, then mounted read-only) are
      linked into it (:func:`_link_warm_cache`), so they load instead of compiling again.
    """
    import numba

    if numba.config.DISABLE_JIT:
        raise RuntimeError(f"{ENV_VAR}=numba needs numba's compiler, but NUMBA_DISABLE_JIT=1 turns it off: "
                           f"unset NUMBA_DISABLE_JIT, or use {ENV_VAR}=numpy")
    from importlib.util import find_spec

    spec = find_spec("minippo.kernels")
    folder = list(spec.submodule_search_locations)[0] if spec and spec.submodule_search_locations else None
    if folder is None:
        return
    # A function said to be defined in cpu.py: numba looks for a cache folder for it as for the kernels
    probe: dict[str, Any] = {}
    exec(compile("def minippo_cache_probe():\n    return 0\n", os.path.join(folder, "cpu.py"), "exec"), probe)
    try:
        found = numba.njit(cache=True)(probe["minippo_cache_probe"])  # compiles nothing: finds the cache folder
        where = getattr(getattr(found, "_cache", None), "_cache_path", None)
        asked = numba.config.CACHE_DIR
        if asked and isinstance(where, str) and not _inside(where, asked):
            # numba passes over a NUMBA_CACHE_DIR it cannot write (a file, read-only) without a word, to
            # the kernels' folder: into site-packages, which the variable was set to keep it out of
            log.warning("numba cannot write its cache in NUMBA_CACHE_DIR=%r: it caches the kernels in %s "
                        "instead", asked, where)
    except RuntimeError as e:  # "cannot cache function ...: no locator available"
        import atexit
        import shutil
        import tempfile

        sub = _cache_subpath(folder)
        warm = [os.path.join(d, sub) for d in (numba.config.CACHE_DIR,) if d]
        warm.append(os.path.join(folder, "__pycache__"))  # numba's in-tree cache, the default
        tmp = tempfile.mkdtemp(prefix="minippo-numba-cache-")
        atexit.register(shutil.rmtree, tmp, True)
        linked = _link_warm_cache(warm, os.path.join(tmp, sub))
        os.environ["NUMBA_CACHE_DIR"] = tmp  # (numba's config reloads from the environment)
        numba.config.CACHE_DIR = tmp
        reuse = f", starting from the {linked[1]} kernels compiled in {linked[0]}" if linked else ""
        # a warmed read-only image is meant to run so: INFO then (numba's compiles, if any, are logged)
        log.log(logging.INFO if linked else logging.WARNING,
                "numba cannot write its cache beside the kernels (%s) or in a user cache folder (%s): caching in "
                "%s until this process exits%s; set NUMBA_CACHE_DIR to a folder this user may write to keep new "
                "compiles", folder, e, tmp, reuse)


def _inside(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or in it (no on another drive: commonpath's ValueError on Windows)."""
    try:
        return os.path.commonpath([os.path.abspath(path), os.path.abspath(folder)]) == os.path.abspath(folder)
    except ValueError:
        return False


def _cache_subpath(folder: str) -> str:
    """The folder numba caches ``folder``'s functions in under ``NUMBA_CACHE_DIR``: its name and the
    SHA-1 of its absolute path (numba's ``_CacheLocator.get_suitable_cache_subpath``, numba 0.49-0.68)."""
    import hashlib

    path = os.path.abspath(folder)
    return f"{os.path.basename(path)}_{hashlib.sha1(path.encode()).hexdigest()}"


def _link_warm_cache(sources: list[str], dest: str) -> tuple[str, int] | None:
    """Symbolic links in ``dest`` (made) to this Python's numba cache files (``NAME.py312.nbi`` indexes,
    ``NAME.py312.N.nbc`` data, for Python 3.12) of the first folder in ``sources`` that has such an
    index; ``(that folder, the number of indexes)``, or None when none has one. numba reads through the
    links and writes a new index or data file by replacing the link (a temporary file, then
    ``os.replace``), never the file it points to. Where links cannot be made the files are copied."""
    import shutil

    tag = f".py{sys.version_info[0]}{sys.version_info[1]}."  # (numba keeps one index per Python version)
    for src in sources:
        try:
            names = sorted(n for n in os.listdir(src) if tag in n and n.endswith((".nbi", ".nbc")))
        except OSError:  # missing or unreadable: the next one
            continue
        n_index = sum(n.endswith(".nbi") for n in names)
        if not n_index:
            continue
        os.makedirs(dest, exist_ok=True)
        for n in names:
            try:
                os.symlink(os.path.join(src, n), os.path.join(dest, n))
            except OSError:
                try:
                    shutil.copyfile(os.path.join(src, n), os.path.join(dest, n))
                except OSError:  # unreadable: numba compiles what it held
                    pass
        return src, n_index
    return None


def _use_numba() -> None:
    """Everything the numba backend needs, or the error that says why it cannot be used."""
    _numba_ok()
    _prepare_numba()
    _watch_numba_compiles()


def _cupy_module() -> ModuleType:
    try:
        import cupy
    except ModuleNotFoundError as e:
        if e.name not in (None, "cupy"):  # cupy is there, one of its own imports is missing
            raise ImportError(f"{ENV_VAR}=cupy: cupy is installed but cannot be imported ({e}); reinstall "
                              "it with pip install 'minippo[cuda]'") from e
        raise ImportError(
            f"{ENV_VAR}=cupy but cupy is not installed ({e}); "
            "install it with: pip install 'minippo[cuda]' (needs an NVIDIA driver for CUDA 12)"
        ) from e
    except ImportError as e:  # installed but broken: CuPy raises this when its CUDA libraries fail to load
        raise ImportError(
            f"{ENV_VAR}=cupy: cupy is installed but cannot be imported ({e}); reinstall it with "
            "pip install 'minippo[cuda]' (CuPy for CUDA 12 with its library wheels; needs an NVIDIA driver)"
        ) from e
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError when no driver is present
        raise RuntimeError(
            f"{ENV_VAR}=cupy but no CUDA device is usable ({type(e).__name__}: {e}); "
            f"use {ENV_VAR}=numpy or numba on this machine"
        ) from e
    if n < 1:
        raise RuntimeError(f"{ENV_VAR}=cupy but no CUDA device was found; use numpy or numba")
    try:
        _probe(cupy)
    except Exception as e:  # NVRTC or cuBLAS missing or not matching the driver, an unusable device
        raise RuntimeError(
            f"{ENV_VAR}=cupy: a CUDA device was found but CuPy cannot run on it ({type(e).__name__}: {e}); "
            "the CUDA libraries it needs (NVRTC, cuBLAS) are missing or do not match the driver: "
            "install the CUDA Toolkit, or the toolkit wheels with your CuPy package "
            "(pip install 'cupy-cuda12x[ctk]>=14', which minippo[cuda] installs), "
            f"else use {ENV_VAR}=numpy or numba"
        ) from e
    return cupy


PROBE_SOURCE = 'extern "C" __global__ void minippo_probe(float* x) { x[0] = 2.0f; }'


def _probe(cupy: ModuleType) -> None:
    """What minippo does on the device, once, small: an NVRTC-compiled kernel (GAE is one) and a
    cuBLAS product (the MLPs), read back. A machine with a driver but without the CUDA libraries
    passes ``getDeviceCount`` and fails only here, so ``auto`` can still fall back."""
    x = cupy.asarray(np.ones((2, 2), np.float32))
    cupy.RawModule(code=PROBE_SOURCE).get_function("minippo_probe")((1,), (1,), (x,))  # x = [[2, 1], [1, 1]]
    got = float(np.dot(x, x).sum())
    if got != 13.0:
        raise RuntimeError(f"a 2 x 2 product on the device gave {got}, expected 13")


def resolve(value: str | None = None) -> tuple[str, ModuleType]:
    """Turn a backend request into ``(name, array_module)``; raises if it cannot load.

    ``value`` defaults to the environment variable. Only ``auto`` falls back.
    """
    raw = os.environ.get(ENV_VAR, "numpy") if value is None else value
    choice = raw.strip().lower() or "numpy"
    if choice not in ALLOWED:
        raise ValueError(f"{ENV_VAR}={raw!r} is not a backend; allowed values: {', '.join(ALLOWED)}")
    if choice == "numpy":
        return "numpy", np
    if choice == "numba":
        _use_numba()
        return "numba", np
    if choice == "cupy":
        return "cupy", _cupy_module()
    # auto: try the fastest first, say what was picked and why each faster one was not.
    try:
        cp = _cupy_module()
        log.info("%s=auto picked cupy", ENV_VAR)
        return "cupy", cp
    except (ImportError, RuntimeError) as e:
        why_not = [f"not cupy: {_why(e)}"]
    try:
        _use_numba()
        log.info("%s=auto picked numba (%s)", ENV_VAR, why_not[0])
        return "numba", np
    except (ImportError, RuntimeError) as e:
        why_not.append(f"not numba: {_why(e)}")
        log.info("%s=auto picked numpy (%s)", ENV_VAR, "; ".join(why_not))
        return "numpy", np


def _why(e: Exception) -> str:
    """A backend's refusal without its opening "MINIPPO_BACKEND=x but" (the user asked for auto)."""
    return re.sub(rf"^{ENV_VAR}=\w+(:| but)? ", "", str(e))


COMPILING_MESSAGE = ("numba is compiling its kernels, once per machine, net shape and dtype (CartPole's preset: "
                     "~23 s on a 2-core x86 VM); numba caches them on disk, and later runs load them in about a second")

_compiles: Any = None  # the listener on numba's compile events, once the numba backend is chosen


def _compile_listener() -> Any:
    """A listener for numba's ``numba:compile`` event (numba's event API, ``numba.core.event``),
    which numba broadcasts around each real compile (a load from its disk cache is not one). It logs
    :data:`COMPILING_MESSAGE` at INFO when its first compile starts, so that a first run says why it
    waits, and adds up in ``seconds`` the wall time of the outermost compiles (a kernel's compile
    compiles the helpers it calls inside its own: those are not counted twice), in all and per thread
    (``by_thread``, keyed by ``threading.get_ident()``). numba compiles under one process-wide lock, in
    the thread that calls the kernel, so one compile (with its nested ones) runs at a time."""
    from numba.core import event

    class Compiles(event.Listener):
        def __init__(self) -> None:
            self.seconds = 0.0
            self.by_thread: dict[int, float] = {}
            self.depth = 0
            self.started = 0.0
            self.announced = False

        def on_start(self, ev: Any) -> None:
            self.depth += 1  # (first: a Ctrl-C inside the log call below would leave it one short)
            if self.depth == 1:
                self.started = time.perf_counter()
                if not self.announced:
                    self.announced = True
                    log.info(COMPILING_MESSAGE)

        def on_end(self, ev: Any) -> None:
            self.depth -= 1
            if self.depth == 0:
                spent = time.perf_counter() - self.started
                self.seconds += spent
                thread = threading.get_ident()
                self.by_thread[thread] = self.by_thread.get(thread, 0.0) + spent

    return Compiles()


def _watch_numba_compiles() -> None:
    """Register the process's one compile listener (see :func:`_compile_listener`); idempotent."""
    global _compiles
    if _compiles is None:
        from numba.core import event

        _compiles = _compile_listener()
        event.register("numba:compile", _compiles)


def numba_compile_seconds(this_thread: bool = False) -> float:
    """Wall seconds this process has spent in numba's compiler since the numba backend was first
    chosen (minippo's kernels, and any other numba code compiled meanwhile; loads from numba's disk
    cache are not compiles); 0.0 before, and on the numpy and cupy backends. ``this_thread``: only
    the compiles run in the calling thread (numba compiles in the thread that first calls a kernel).
    ``PPO.learn`` leaves its own thread's out of its ``fps``: they are paid once per machine, net
    shape and dtype (another thread's compile, meanwhile, is not time this trainer did not run)."""
    if _compiles is None:
        return 0.0
    return _compiles.by_thread.get(threading.get_ident(), 0.0) if this_thread else _compiles.seconds


def _get() -> tuple[str, ModuleType]:
    global _resolved
    if _resolved is None:
        _resolved = resolve()
    return _resolved


def resolved() -> tuple[str, ModuleType]:
    """``(name, array module)`` of the backend in use (resolved on first call); a cheap accessor for
    hot paths (~0.1 us, vs ~0.4 us for the module attribute ``name``). Same object until reset()."""
    return _resolved if _resolved is not None else _get()


_numba_kernels: dict[str, tuple[Any, ModuleType | None]] = {}


def numba_kernels(family: str) -> ModuleType | None:
    """``minippo.kernels.<family>`` (e.g. ``"cpu"``, ``"cpu_act"``) when the backend resolved to
    numba, else None. For hot paths: cached against the resolved state (~0.1 us), and
    :func:`reset` still takes effect. Importing the module compiles nothing (numba is lazy)."""
    hit = _numba_kernels.get(family)
    if hit is not None and hit[0] is _resolved:  # the hot path: resolved, and nothing reset since
        return hit[1]
    state = resolved()  # raises on a bad MINIPPO_BACKEND
    if hit is None or hit[0] is not state:
        module = None
        if state[0] == "numba":
            import importlib

            module = importlib.import_module(f"minippo.kernels.{family}")
        hit = _numba_kernels[family] = (state, module)
    return hit[1]


def reset() -> None:
    """Forget the resolved backend so the next use reads ``MINIPPO_BACKEND`` again (tests)."""
    global _resolved
    _resolved = None


def asnumpy(a: Any) -> np.ndarray:
    """Backend array (or scalar) -> host ``numpy.ndarray``; a no-op for numpy arrays."""
    if isinstance(a, np.ndarray):
        return a
    get = getattr(a, "get", None)  # cupy.ndarray.get() copies device -> host
    if callable(get) and type(a).__module__.startswith("cupy"):
        return get()
    return np.asarray(a)


def to_device(a: Any, dtype: Any = None) -> Any:
    """Host array -> backend array (``cupy.asarray`` on the GPU backend, else ``numpy.asarray``)."""
    return _get()[1].asarray(a, dtype=dtype)


def array_module(a: Any) -> ModuleType:
    """The array module that owns ``a`` (cupy for cupy arrays, numpy otherwise), whatever the backend,
    without importing cupy or resolving the backend (a cupy array means cupy is imported)."""
    if type(a).__module__.startswith("cupy"):
        return sys.modules["cupy"]
    return np


def __getattr__(attr: str) -> Any:
    if attr == "name":
        return _get()[0]
    if attr == "xp":
        return _get()[1]
    raise AttributeError(f"module 'minippo.backend' has no attribute {attr!r}")
