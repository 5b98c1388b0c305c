"""CuPy kernels behind ``MINIPPO_BACKEND=cupy``: the ``gae.cu``, ``adam.cu`` and ``act.cu`` RawKernels.
The update's matmuls need no wrapper: ``minippo.nn`` calls ``np.dot``, which dispatches to cuBLAS
for cupy arrays; the rollout's act runs its two MLPs in ``act.cu`` (``kernels/gpu_act.py``), one
launch where cuBLAS and the array operations took ~16.

Nothing here touches CUDA at import: cupy is imported, a ``.cu`` file read and compiled (NVRTC,
cached by CuPy on disk) on the first call that needs it. Inputs and outputs are ``cupy.ndarray`` on
the current device; rollout tensors, parameters and Adam state stay there. Data crosses to the host
at the env boundary (``backend.to_device`` / ``backend.asnumpy``) and for 2 syncs per minibatch
(the logged stats read back in one copy with the verdict of the value checks, the gradient norm):
docs/kernels.md lists every copy.

The CUDA sources are also compiled by ``nvcc -ptx`` and executed on the CPU through a host shim in
``tests/test_kernels_gpu.py``, ``tests/test_kernels_gpu_adam.py`` and ``tests/test_kernels_gpu_act.py``,
and this wrapper is tested
against numpy stand-ins for cupy, so the path is checked on machines without a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from types import ModuleType
from typing import Any

import numpy as np

Array = Any  # cupy.ndarray

SOURCE = "gae.cu"
ADAM_SOURCE = "adam.cu"
ACT_SOURCE = "act.cu"
SOURCES = (SOURCE, ADAM_SOURCE, ACT_SOURCE)
BLOCK = 128
"""Threads per block; one thread per environment, so a 64-env rollout is one block."""
KERNEL_NAMES = {np.dtype(np.float32): "gae_f32", np.dtype(np.float64): "gae_f64"}
CHECK_NAMES = {np.dtype(np.float32): "dones_check_f32", np.dtype(np.float64): "dones_check_f64"}
CHECK_BLOCK = 256
CHECK_GRID_MAX = 1024
"""The dones check is a grid-stride loop: at most this many blocks of ``CHECK_BLOCK`` threads (a
few per SM; a larger rollout loops)."""
GATHER_NAMES = {np.dtype(np.float32): "adam_gather_f32", np.dtype(np.float64): "adam_gather_f64"}
UPDATE_NAMES = {np.dtype(np.float32): "adam_update_f32", np.dtype(np.float64): "adam_update_f64"}
ADAM_BLOCK = 256
ADAM_BLOCKS_MAX = 64
"""The Adam kernels give every parameter array the same number of blocks, ceil(largest size /
ADAM_BLOCK), at most this many (16384 elements a pass; a larger array loops)."""
GRID_MAX = 2**31 - 1
"""CUDA's limit on a launch's blocks in x."""
INDEX_MAX = 2**31 - 1 - BLOCK
"""The largest T or N GAE takes: its kernels index in int, and the last block's threads (up to
``BLOCK - 1`` past N) must not wrap."""
ACT_NAMES = {np.dtype(np.float32): "act_forward_f32", np.dtype(np.float64): "act_forward_f64"}
ACT_BLOCK_MAX = 256
"""Threads per block of the act kernel: the widest of the input and every layer's outputs, rounded up
to a warp, at most this."""
ACT_SHARED_MAX = 48 * 1024
"""Dynamic shared memory a block may ask for without opting in (every CUDA GPU since sm_20): the act
kernel's two activation rows must fit, 2 * width * itemsize bytes."""
NVRTC_OPTIONS = ("--fmad=false",)  # no FMA contraction: bit-identical with the CPU backends

_modules: dict[str, tuple[Any, dict[str, Any]]] = {}
"""Source name -> (its cupy.RawModule, compiled on first use; the RawKernels taken from it, by name:
``get_function`` makes a new RawKernel, looked up on the device again, at each call)."""


def _cupy() -> ModuleType:
    import cupy  # deferred: importing minippo.kernels.gpu must not need (or start) CUDA

    return cupy


def source(name: str = SOURCE) -> str:
    """The CUDA source ``name`` (one of :data:`SOURCES`; package data next to this file)."""
    if name not in SOURCES:
        raise ValueError(f"name={name!r} is not a CUDA source of minippo; use one of {SOURCES}")
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _kernel(name: str, file: str = SOURCE) -> Any:
    if file not in _modules:
        _modules[file] = (_cupy().RawModule(code=source(file), options=NVRTC_OPTIONS), {})
    module, functions = _modules[file]
    if name not in functions:
        functions[name] = module.get_function(name)
    return functions[name]


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
    inputs; else into new arrays, then copied). Shapes that differ, or T or N past :data:`INDEX_MAX`,
    raise ValueError before any launch; dones other than 0 and 1 (NaN too) raise ValueError,
    checked on the device before the GAE kernel writes: ``out`` is then left as it was.
    Three device operations (zero a flag, check, GAE) and one read-back of the flag, which waits
    for both kernels.
    """
    cp = _cupy()
    if out is not None:  # (two arrays sharing memory: refused, as compute_gae refuses them)
        from minippo.advantages import _check_out

        _check_out(out)
    gamma, lam = float(gamma), float(lam)  # (a 0-d device array is read back: numpy scalars refuse it)
    dt = np.dtype(rewards.dtype)
    if dt not in KERNEL_NAMES:
        dt = np.dtype(np.float64)
    r, v, d, lv = (cp.ascontiguousarray(cp.asarray(a, dtype=dt)) for a in (rewards, values, dones, last_values))
    # The kernel reads T * N of values and dones and N of last_values by raw pointer: checked here too
    # (compute_gae checks them; a direct call with short arrays would read past their ends)
    if r.ndim != 2 or v.shape != r.shape or d.shape != r.shape or lv.shape != r.shape[1:]:
        raise ValueError(f"rewards, values and dones must have one shape (T, N) and last_values (N,), got "
                         f"{r.shape}, {v.shape}, {d.shape} and {lv.shape}")
    T, N = r.shape
    if max(T, N) > INDEX_MAX:
        raise ValueError(f"T={T} and N={N} must be <= {INDEX_MAX} (the kernels index time and env in int)")
    # dones are checked in their own dtype where it is float32 or float64 (in native byte order: the
    # device has no other): a float64 1 + 1e-12 (or 1e-50) would pass as a float32 1 (or 0). Casts from
    # other dtypes keep 0 and 1 apart from the rest. (cp.asarray first: dones may be a host array beside
    # device rewards, and ascontiguousarray takes device arrays only)
    own = np.dtype(dones.dtype).newbyteorder("=")
    dc = d if own == dt or own not in CHECK_NAMES else cp.ascontiguousarray(cp.asarray(dones, dtype=own))
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


class ArrayTable:
    """The device addresses and flat layout of a list of arrays, for the ``adam.cu`` kernels.

    arrays: n C-contiguous cupy arrays of one dtype (float32 or float64), any shapes; array k takes
    the flat range ``[offsets[k], offsets[k + 1])``. One upload (2n + 1 int64s: the addresses, then
    the offsets). The table keeps the arrays alive: its addresses stay theirs while it exists.
    ``layout``: a table of arrays of the same sizes and dtype (Adam's parameters, for its gradients'
    table each step), whose offsets and launch shape are taken rather than worked out again.
    """

    def __init__(self, arrays: Sequence[Array], layout: ArrayTable | None = None) -> None:
        cp = _cupy()
        if not arrays:
            raise ValueError("arrays is empty: a table needs at least one array")
        dt = np.dtype(arrays[0].dtype) if layout is None else layout.dtype
        if dt not in GATHER_NAMES:
            raise TypeError(f"arrays must be float32 or float64, got {dt}")
        for k, a in enumerate(arrays):
            if not isinstance(a, cp.ndarray) or a.dtype != dt or not a.flags.c_contiguous:
                raise ValueError(f"arrays[{k}] must be a C-contiguous {dt} cupy array, got "
                                 f"{type(a).__name__} {getattr(a, 'dtype', '')}")
        self.sizes = [int(a.size) for a in arrays]
        self.arrays = tuple(arrays)
        self.dtype = dt
        self.n = len(arrays)
        if layout is not None:
            if self.sizes != layout.sizes:
                raise ValueError(f"arrays of sizes {self.sizes} do not have layout's sizes {layout.sizes}")
            self.offsets, self.size, self.blocks_per_array = layout.offsets, layout.size, layout.blocks_per_array
        else:
            self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
            self.size = int(self.offsets[-1])
            self.blocks_per_array = max(1, min(-(-max(self.sizes) // ADAM_BLOCK), ADAM_BLOCKS_MAX))
            if self.n * self.blocks_per_array > GRID_MAX:
                raise ValueError(f"{self.n} arrays of {self.blocks_per_array} blocks each are more than one "
                                 f"launch's {GRID_MAX} blocks")
        addresses = [a.data.ptr for a in arrays]  # (< 2^63: user and device space)
        self.table = cp.asarray(np.concatenate([np.array(addresses, dtype=np.int64), self.offsets]))

    def _launch(self, names: dict, args: tuple) -> None:
        if self.size:
            _kernel(names[self.dtype], ADAM_SOURCE)((self.n * self.blocks_per_array,), (ADAM_BLOCK,),
                                                    (self.table, np.int32(self.n), np.int32(self.blocks_per_array),
                                                     *args))


def adam_gather(grads: ArrayTable, g: Array) -> None:
    """g (size,) <- the arrays of ``grads`` flattened, one after another: one launch."""
    _flat("g", g, grads)
    grads._launch(GATHER_NAMES, (g,))


def adam_update(
    params: ArrayTable, g: Array, m: Array, v: Array, scale: float, lr: float, betas: tuple[float, float],
    eps: float, t: int,
) -> None:
    """One Adam step at step count ``t`` (>= 1) on every array of ``params`` (in place), from the
    flat gradient ``g`` times ``scale`` (the clip; 1.0 for none) and the flat moments ``m``, ``v``
    (size,), updated in place; ``g`` is left as it was. One launch, the same operations in the same
    order and dtype as :meth:`minippo.optim.Adam.step` on numpy, so the same bits."""
    for name, a in (("g", g), ("m", m), ("v", v)):
        _flat(name, a, params)
    b1, b2 = betas
    real = params.dtype.type  # each scalar rounded once, where numpy rounds a Python float operand
    scalars = (real(scale), real(b1), real(1.0 - b1), real(b2), real(1.0 - b2), real(1.0 - b2**t), real(eps),
               real(lr / (1.0 - b1**t)))
    params._launch(UPDATE_NAMES, (g, m, v, *scalars))


def _flat(name: str, a: Array, table: ArrayTable) -> None:
    if not isinstance(a, _cupy().ndarray):
        raise TypeError(f"{name} must be a cupy array (on the device with the table's arrays), got {type(a).__name__}")
    if a.dtype != table.dtype or a.shape != (table.size,) or not a.flags.c_contiguous:
        raise ValueError(f"{name} must be a C-contiguous {table.dtype} vector of {table.size} elements, got "
                         f"{a.dtype} {tuple(a.shape)}")


class LayerTable:
    """The layers of one or two MLPs (the actor's, then the critic's) for the ``act.cu`` kernel: their
    weights' and biases' device addresses and sizes in one int64 upload, kept (the table keeps the
    arrays alive, so the addresses stay theirs). Parameters updated in place (Adam) need no new table.

    nets: one or two lists of (W (fan_in, fan_out), b (fan_out,)) pairs, C-contiguous cupy arrays of
    one dtype (float32 or float64), each layer's fan_in the previous one's fan_out, every network
    taking the same input size. ValueError names what does not fit.
    """

    def __init__(self, nets: Sequence[Sequence[tuple[Array, Array]]]) -> None:
        cp = _cupy()
        if not 1 <= len(nets) <= 2 or not all(nets):
            raise ValueError(f"nets must be one or two non-empty lists of (W, b) layers, got "
                             f"{[len(n) for n in nets]} layers")
        dt = np.dtype(nets[0][0][0].dtype)
        if dt not in ACT_NAMES:
            raise TypeError(f"the layers must be float32 or float64, got {dt}")
        records, self.out_dims = [], []
        self.in_dim = int(nets[0][0][0].shape[0]) if nets[0][0][0].ndim == 2 else -1
        widths = [self.in_dim]
        for i, net in enumerate(nets):
            fan = self.in_dim
            for j, (W, b) in enumerate(net):
                where = f"nets[{i}][{j}]"
                for name, a, nd in (("W", W, 2), ("b", b, 1)):
                    if not isinstance(a, cp.ndarray) or a.dtype != dt or a.ndim != nd or not a.flags.c_contiguous:
                        raise ValueError(f"{where}'s {name} must be a C-contiguous {nd}-d {dt} cupy array, got "
                                         f"{type(a).__name__} {getattr(a, 'dtype', '')} {getattr(a, 'shape', '')}")
                if W.shape[0] != fan or b.shape != (W.shape[1],) or W.shape[1] < 1:
                    raise ValueError(f"{where} has W {tuple(W.shape)} and b {tuple(b.shape)}: expected W ({fan}, n) "
                                     f"and b (n,), n >= 1")
                records += [W.data.ptr, b.data.ptr, fan, int(W.shape[1])]
                fan = int(W.shape[1])
                if j < len(net) - 1:
                    widths.append(fan)
            self.out_dims.append(fan)
        self.width = max(widths)
        self.dtype = dt
        self.n_nets = len(nets)
        self.shared_mem = 2 * self.width * dt.itemsize
        if self.shared_mem > ACT_SHARED_MAX:
            raise ValueError(f"layers {self.width} wide need {self.shared_mem} bytes of shared memory a block, "
                             f"more than {ACT_SHARED_MAX}")
        widest = max(self.width, *self.out_dims)
        self.block = min(ACT_BLOCK_MAX, -(-widest // 32) * 32)
        self.nets = tuple(tuple(net) for net in nets)  # (keeps the arrays alive while the table holds their addresses)
        lengths = [len(net) for net in nets] + [0] * (2 - len(nets))
        self.table = cp.asarray(np.array(lengths + records, dtype=np.int64))


def act_forward(
    layers: LayerTable, x: Array, relu: bool, log_std: Array | None = None, lo: float = 0.0, hi: float = 0.0,
) -> tuple[Array, Array | None]:
    """The MLPs of ``layers`` on x (B, in_dim): (y0 (B, out_0) or, with ``log_std`` (d,), the
    Gaussian's dist params (B, out_0 + d) = [y0, clip(log_std, lo, hi)], and y1 (B, out_1) or None
    with one network). Hidden layers take tanh, or relu with ``relu``; the output layers none. One
    launch; sums in the layers' dtype (bias first, then the inputs in order, as cuBLAS would to
    rounding)."""
    cp = _cupy()
    dt = layers.dtype
    if not isinstance(x, cp.ndarray) or x.ndim != 2 or x.shape[1] != layers.in_dim:
        raise ValueError(f"x must be a (B, {layers.in_dim}) cupy array, got {type(x).__name__} "
                         f"{tuple(getattr(x, 'shape', ()))}")
    x = cp.ascontiguousarray(x, dtype=dt)
    B = int(x.shape[0])
    if B * layers.n_nets > GRID_MAX:
        raise ValueError(f"a batch of {B} rows is more than one launch's {GRID_MAX} blocks")
    n_ls = 0
    if log_std is not None:
        if not (isinstance(log_std, cp.ndarray) and log_std.dtype == dt and log_std.ndim == 1
                and log_std.flags.c_contiguous):
            raise ValueError(f"log_std must be a C-contiguous 1-d {dt} cupy array, got {type(log_std).__name__} "
                             f"{getattr(log_std, 'dtype', '')}")
        n_ls = int(log_std.shape[0])
    y0 = cp.empty((B, layers.out_dims[0] + n_ls), dtype=dt)
    y1 = cp.empty((B, layers.out_dims[1]), dtype=dt) if layers.n_nets == 2 else None
    if B:
        _kernel(ACT_NAMES[dt], ACT_SOURCE)(
            (layers.n_nets * B,), (layers.block,),
            (layers.table, np.int32(layers.n_nets), np.int32(layers.width), x, np.int32(B), np.int32(layers.in_dim),
             np.int32(bool(relu)), y0, np.int32(y0.shape[1]), y0 if y1 is None else y1,
             y0 if log_std is None else log_std, np.int32(n_ls), dt.type(lo), dt.type(hi)),
            shared_mem=layers.shared_mem)
    return y0, y1


# The update's matmuls need no wrapper: on cupy arrays ``minippo.nn.linear_forward``/``linear_backward``
# evaluate ``np.dot(x, W)`` with cuBLAS, so the MLP code is the same on every backend (the rollout's
# act forward is act_forward above).
