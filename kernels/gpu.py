"""CuPy kernels behind ``MINIPPO_BACKEND=cupy``: the ``gae.cu`` RawKernel. The matmuls need no
wrapper: ``minippo.nn`` calls ``np.dot``, which dispatches to cuBLAS for cupy arrays.

Nothing here touches CUDA at import: cupy is imported, ``gae.cu`` read and compiled (NVRTC, cached
by CuPy on disk) on the first call. Inputs and outputs are ``cupy.ndarray`` on the current device;
rollout tensors, parameters and Adam state stay there. Data crosses to the host at the env boundary
(``backend.to_device`` / ``backend.asnumpy``) and for 7 syncs per minibatch (finiteness tests, the
logged stats read back in one copy, the gradient norm): docs/kernels.md lists every copy.

The CUDA source is also compiled by ``nvcc -ptx`` and executed on the CPU through a host shim in
``tests/test_kernels_gpu.py``, and this wrapper is tested against a numpy stand-in for cupy, so the
path is checked on machines without a GPU.
"""

from __future__ import annotations

from importlib import resources
from types import ModuleType
from typing import Any

import numpy as np

Array = Any  # cupy.ndarray

SOURCE = "gae.cu"
BLOCK = 128
"""Threads per block; one thread per environment, so a 64-env rollout is one block."""
KERNEL_NAMES = {np.dtype(np.float32): "gae_f32", np.dtype(np.float64): "gae_f64"}
CHECK_NAMES = {np.dtype(np.float32): "dones_check_f32", np.dtype(np.float64): "dones_check_f64"}
CHECK_BLOCK = 256
CHECK_GRID_MAX = 1024
"""The dones check is a grid-stride loop: at most this many blocks of ``CHECK_BLOCK`` threads (a
few per SM; a larger rollout loops)."""
NVRTC_OPTIONS = ("--fmad=false",)  # no FMA contraction: bit-identical with the CPU backends

_module: Any = None  # cupy.RawModule, compiled on first use


def _cupy() -> ModuleType:
    import cupy  # deferred: importing minippo.kernels.gpu must not need (or start) CUDA

    return cupy


def source() -> str:
    """The CUDA source of the GAE kernels (package data next to this file)."""
    return resources.files(__package__).joinpath(SOURCE).read_text(encoding="utf-8")


def _kernel(name: str) -> Any:
    global _module
    if _module is None:
        _module = _cupy().RawModule(code=source(), options=NVRTC_OPTIONS)
    return _module.get_function(name)


def _writes_directly(cp: ModuleType, o: Array, dt: np.dtype, shape: tuple, inputs: tuple) -> bool:
    """Whether the kernel can write into ``o`` itself: C-contiguous, of the kernel's dtype and shape,
    and sharing no memory with an input (the kernel's pointers are ``__restrict__``, and a shifted
    overlap would let one thread overwrite what another has still to read)."""
    return (isinstance(o, cp.ndarray) and o.dtype == dt and o.shape == shape and o.flags.c_contiguous
            and not any(cp.may_share_memory(o, a) for a in inputs))


def gae(
    rewards: Array, values: Array, dones: Array, last_values: Array, gamma: float, lam: float,
    out: tuple[Array, Array] | None = None,
) -> tuple[Array, Array]:
    """GAE(gamma, lambda) on the GPU (see ``minippo.advantages.compute_gae``).

    rewards, values, dones (T, N) float32/float64, last_values (N,) = V(s_T)
    -> (advantages (T, N), returns (T, N)), cupy arrays in the dtype of rewards (float64 for any
    other dtype). ``out=(adv, returns)``: two cupy arrays of shape (T, N) to write into and return
    (the kernel writes into them where they are C-contiguous, of that dtype and apart from the
    inputs; else into new arrays, then copied). dones other than 0 and 1 (NaN too) raise
    ValueError, checked on the device before the GAE kernel writes: ``out`` is then left as it was.
    Three device operations (zero a flag, check, GAE) and one read-back of the flag, which waits
    for both kernels.
    """
    cp = _cupy()
    dt = np.dtype(rewards.dtype)
    if dt not in KERNEL_NAMES:
        dt = np.dtype(np.float64)
    r, v, d, lv = (cp.ascontiguousarray(cp.asarray(a, dtype=dt)) for a in (rewards, values, dones, last_values))
    # dones are checked in their own dtype where it is float32 or float64: a float64 1 + 1e-12 (or
    # 1e-50) would pass as a float32 1 (or 0). Casts from other dtypes keep 0 and 1 apart from the rest.
    dc = d if dones.dtype == dt or dones.dtype not in CHECK_NAMES else cp.ascontiguousarray(dones)
    T, N = r.shape
    direct = out is not None and all(_writes_directly(cp, o, dt, (T, N), (r, v, d, lv)) for o in out) \
        and not cp.may_share_memory(out[0], out[1])
    adv, returns = out if direct else (cp.empty((T, N), dtype=dt), cp.empty((T, N), dtype=dt))
    if N > 0 and T > 0:
        bad = cp.zeros((), dtype=np.int32)
        size = T * N
        _kernel(CHECK_NAMES[dc.dtype])((min((size + CHECK_BLOCK - 1) // CHECK_BLOCK, CHECK_GRID_MAX),), (CHECK_BLOCK,),
                                       (dc, np.int32(T), np.int32(N), bad))
        # Scalars as numpy scalars of the kernel's parameter types: a Python float would be passed
        # as a double to the float kernel, a Python int as a 64-bit integer.
        scalars = (dt.type(gamma), dt.type(gamma * lam), np.int32(T), np.int32(N))
        _kernel(KERNEL_NAMES[dt])(((N + BLOCK - 1) // BLOCK,), (BLOCK,), (r, v, d, lv, *scalars, adv, returns, bad))
        if int(bad):  # the one sync: the flag comes back after both kernels have run
            from minippo.advantages import DONES_ERROR

            raise ValueError(DONES_ERROR)
    if out is None or direct:
        return (adv, returns) if out is None else out
    out[0][...], out[1][...] = adv, returns
    return out


# Matmuls need no wrapper: on cupy arrays ``minippo.nn.linear_forward``/``linear_backward``
# evaluate ``np.dot(x, W)`` with cuBLAS, so the MLP code is the same on every backend.
