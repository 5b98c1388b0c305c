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
NVRTC_OPTIONS = ("--fmad=false",)  # no FMA contraction: bit-identical with the CPU backends

_module: Any = None  # cupy.RawModule, compiled on first use


def _cupy() -> ModuleType:
    import cupy  # deferred: importing minippo.kernels.gpu must not need (or start) CUDA

    return cupy


def source() -> str:
    """The CUDA source of the GAE kernels (package data next to this file)."""
    return resources.files(__package__).joinpath(SOURCE).read_text(encoding="utf-8")


def _kernel(dtype: np.dtype) -> Any:
    global _module
    if _module is None:
        _module = _cupy().RawModule(code=source(), options=NVRTC_OPTIONS)
    return _module.get_function(KERNEL_NAMES[dtype])


def gae(
    rewards: Array, values: Array, dones: Array, last_values: Array, gamma: float, lam: float
) -> tuple[Array, Array]:
    """GAE(gamma, lambda) on the GPU (see ``minippo.advantages.compute_gae``).

    rewards, values, dones (T, N) float32/float64 (dones 0/1), last_values (N,) = V(s_T)
    -> (advantages (T, N), returns (T, N)), cupy arrays in the dtype of rewards (float64 for any
    other dtype).
    """
    cp = _cupy()
    dt = np.dtype(rewards.dtype)
    if dt not in KERNEL_NAMES:
        dt = np.dtype(np.float64)
    r, v, d = (cp.ascontiguousarray(cp.asarray(a, dtype=dt)) for a in (rewards, values, dones))
    lv = cp.ascontiguousarray(cp.asarray(last_values, dtype=dt))
    T, N = r.shape
    adv = cp.empty((T, N), dtype=dt)
    returns = cp.empty((T, N), dtype=dt)
    grid = ((N + BLOCK - 1) // BLOCK,)
    # Scalars as numpy scalars of the kernel's parameter types: a Python float would be passed
    # as a double to the float kernel, a Python int as a 64-bit integer.
    scalars = (dt.type(gamma), dt.type(gamma * lam), np.int32(T), np.int32(N))
    args = (r, v, d, lv, *scalars, adv, returns)
    if N > 0 and T > 0:
        _kernel(dt)(grid, (BLOCK,), args)
    return adv, returns


# Matmuls need no wrapper: on cupy arrays ``minippo.nn.linear_forward``/``linear_backward``
# evaluate ``np.dot(x, W)`` with cuBLAS, so the MLP code is the same on every backend.
