"""Numba CPU kernels behind ``MINIPPO_BACKEND=numba``: GAE, rewards-to-go, a fused small-batch MLP.

Importing this module imports numba but compiles nothing: every ``@njit(cache=True)`` kernel is
compiled on its first call (per dtype) and cached on disk next to this file.

- :func:`gae`: one pass backward over T: whole 64-byte vectors of envs first (``kernels/simd.py``),
  then 8 envs at a time in registers (vectorised by LLVM's SLP vectoriser; float32's vectors can leave
  8-15 columns, float64's fewer than 8), then the rest row by row with the inner loop over envs;
  shape and gamma/lambda checks inside the kernel.
  :func:`rewards_to_go`: the same vector blocks, then row by row, in rewards' dtype; tested against
  ``kernels/reference.py``. The trainer does not call it: its Monte Carlo estimator (``mc``) is GAE
  with lambda = 1, which gives the same returns.
- :func:`mlp_forward`, :func:`mlp_backward`: a whole tanh/relu MLP in one call. At batch 1..8
  numpy spends most of its time in per-call overhead (~1 us per ufunc or matmul); one compiled call
  removes it. Matmuls go through register tiles of 64-byte vectors (``kernels/simd.py``), which
  also beat BLAS at larger batches when every layer is narrow. ``minippo.nn.MLP`` dispatches here
  up to :func:`max_batch` (measured crossovers, see ``docs/kernels.md``); above it BLAS wins.

float32 tanh uses a vectorisable rational approximation (the 13/6 minimax fit used by Eigen), <= 8
ulp from the correctly rounded tanh (measured on 2M points in [-10, 10]); libm ``tanhf`` does not
vectorise and cost 10 ns per element, more than the rest of the layer. float64 keeps libm tanh, so
float64 gradient checks see the exact function.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic, overload
from numba.np.arrayobj import make_array, populate_array

from minippo._checks import array, real
from minippo.advantages import _REAL_KINDS, _result_dtype

from .simd import (
    VECTOR_BYTES,
    lanes,
    native_vector_bytes,
    vadd,
    vec_type,
    vfma,
    vfold,
    vload,
    vload_first,
    vmul,
    vsplat,
    vstore,
    vstore_first,
    vsub,
    vsum,
)

# The files whose functions this file's kernels compile into themselves, with a digest of each
# (sha256 of the text, first 16 hex digits). numba checks a cached kernel against its own file only,
# so after a change there the cache kept the old code here (and a git pull in an editable install
# did the same); a change there must change this line, which makes numba compile these kernels
# again. tests/test_packaging.py checks the digests and prints the line to write.
SOURCES_BUILT_IN = {"simd.py": "aed7469a9d4dc301"}

MAX_BATCH = 8
"""Largest batch for which ``MLP.forward`` / ``MLP.backward`` use :func:`mlp_forward` /
:func:`mlp_backward`, for an MLP with a layer wider than :data:`SMALL_WIDTH` (measured crossover
with BLAS: 17-256-256-6 is 1.1-1.2x faster fused at batch 8, 0.8-1.0x at 64)."""
SMALL_WIDTH = 64
"""An MLP whose widths are all at most this uses the fused kernels up to :data:`SMALL_MAX_BATCH`."""
SMALL_MAX_BATCH = 256
"""Largest fused batch for an MLP of widths <= :data:`SMALL_WIDTH`. The register tiles beat
OpenBLAS on one or two threads at every batch measured up to 1024 for 4-32-32-2 ... 17-64-64-6
(forward+backward 1.4-1.8x at 64-1024); capped at PPO's minibatch sizes, beyond which BLAS threads
on a machine with many cores may win."""
NARROW_MIN_BATCH = 8
"""From this batch on, a layer with fewer than 8 outputs that :func:`_narrow_rows` does not take
(it is tried first, :func:`_dense`) goes through :func:`_dense_narrow`; below,
through :func:`_mm_acc` like the others (measured crossover, 64 -> 2 and 64 -> 6, with scalar dot
products). Where :func:`_dot_pairs` applies, from batch 2 (64 -> 2 at batch 2 / 3 / 5 / 7: 0.13 /
0.15 / 0.17 / 0.19 us against 0.22 / 0.31 / 0.29 / 0.48 through :func:`_mm_acc`; at batch 1 the
single-row loop is as fast or faster)."""
DX_MM_MIN_BATCH = 4
"""Where :func:`_dx_fold` does not apply (below :data:`DX_FOLD_MAX_BATCH` it is tried first,
:func:`_dense_back`): from this batch on, dx = d W^T goes through a transposed W and :func:`_mm_acc`;
below, through :func:`_dots` against W's rows (measured crossover, 64 x 64)."""
DX_FOLD_MAX_BATCH = 16
"""Below this batch, dx = d W^T goes through :func:`_dx_fold` (dot products on 64-byte vectors, no
transpose) where it applies; from it on the transpose's cost is spread over enough rows (measured
crossover against the transpose: 12-16 rows in float64 at 64 x 64, 24-32 in float32)."""


def max_batch(sizes: list[int]) -> int:
    """Largest batch that an MLP with layer widths ``sizes`` runs through the fused kernels."""
    return SMALL_MAX_BATCH if max(sizes) <= SMALL_WIDTH else MAX_BATCH


ACT_TANH, ACT_TANH_F32, ACT_RELU, ACT_NONE = 0, 1, 2, 3
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_F32, _F64 = _FLOATS

# Why error_model="numpy": Python semantics add a zero check before every float division, which
# stops LLVM from vectorising the tanh loop. Why fastmath={"reassoc", "contract"} (MLP only):
# reassoc lets the dot products of dx = d W^T vectorise (4x faster at batch 8), contract lets
# multiply-adds fuse into FMAs; both keep NaN/inf semantics, unlike fastmath=True. The GAE kernels
# use neither, to stay bit-identical with numpy.
_MLP_JIT = {"cache": True, "error_model": "numpy", "fastmath": {"reassoc", "contract"}}


@intrinsic
def _view_at(typingctx, P, o, K, F):
    """The C-ordered (K, F) view of elements o .. o + K * F of P, a C-ordered array of any number
    of dimensions (read flat); callers check bounds.

    Unlike ``P[o:n].reshape((K, F))``, the view is untracked (no meminfo): creating and dropping it
    takes no reference-count operations and no call to numba's reshape helper. It must not outlive
    the call that holds P."""
    if not (isinstance(P, types.Array) and P.layout == "C"):
        return None
    out = P.copy(ndim=2, layout="C")

    def codegen(context, builder, sig, args):
        o_, K_, F_ = (context.cast(builder, v, t, types.intp) for v, t in zip(args[1:], sig.args[1:], strict=True))
        src = make_array(sig.args[0])(context, builder, args[0])
        view = make_array(out)(context, builder)
        populate_array(view, data=builder.gep(src.data, [o_]),
                       shape=cgutils.pack_array(builder, [K_, F_]),
                       strides=cgutils.pack_array(builder, [builder.mul(F_, src.itemsize), src.itemsize]),
                       itemsize=src.itemsize, meminfo=None, parent=None)
        return view._getvalue()

    return out(P, o, K, F), codegen


# ---------------------------------------------------------------- GAE and rewards-to-go
# Three loop orders, the same arithmetic (so all equal numpy bit for bit):
# - _gae_vectors (session 8): the columns that fill whole 64-byte vectors, 4 vectors at a time, the
#   running advantages and next values in registers across the backward pass over t (explicit
#   vectors, kernels/simd.py; lane by lane the scalar operations, unfused). (2048, 64) float32:
#   ~30 us, about the memory floor, where the row loop below took ~120 us on this VM.
# - _gae_lanes: 8 envs at a time, the same idea on scalars. Compiled with LLVM's SLP vectoriser on
#   (see _compile_with_slp), the 8 lanes become one SIMD vector: the pass costs ~8 cycles per t (the
#   mul+add latency of the recursion). Unsigned indices: numba adds a negative-index wraparound to
#   signed ones, and the resulting selects hide the consecutive addresses the SLP vectoriser needs.
#   Used for the columns the vectors leave, 8 at a time: float32's 16-lane vectors can leave 8-15,
#   float64's 8-lane ones fewer than 8, so on gae()'s path lanes run for float32 only (a layout the
#   vectors cannot load, which gae() never passes, runs lanes below LANES_MAX_N envs in both).
# - _gae_rows: row by row over t, inner loop over the envs, for the last N % 8 columns (and all of a
#   wide array whose layout the vectors cannot load, which gae() never passes: it copies to C order).
LANES_MAX_N = 64
"""Without vector blocks, below this many envs the GAE kernel runs 8-env register lanes, from it on
rows (measured crossover, T = 2048, before the vector blocks)."""


@njit(inline="always")
def _lane(rewards, values, dones, t, n, next_value, next_adv, g, gl, one):
    not_done = one - dones[t, n]
    return rewards[t, n] + g * next_value * not_done - values[t, n] + gl * not_done * next_adv


@njit(inline="always")
def _gae_lanes(rewards, values, dones, last_values, g, gl, zero, one, adv, returns, c):
    """Columns c .. c + 7: all loads of a row first, then all stores (no aliasing in between)."""
    T = rewards.shape[0]
    u = np.uint64
    n0, n1, n2, n3 = u(c), u(c + 1), u(c + 2), u(c + 3)
    n4, n5, n6, n7 = u(c + 4), u(c + 5), u(c + 6), u(c + 7)
    v0, v1, v2, v3 = last_values[n0], last_values[n1], last_values[n2], last_values[n3]
    v4, v5, v6, v7 = last_values[n4], last_values[n5], last_values[n6], last_values[n7]
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = zero
    for s in range(T):
        t = u(T - 1 - s)
        a0 = _lane(rewards, values, dones, t, n0, v0, a0, g, gl, one)
        a1 = _lane(rewards, values, dones, t, n1, v1, a1, g, gl, one)
        a2 = _lane(rewards, values, dones, t, n2, v2, a2, g, gl, one)
        a3 = _lane(rewards, values, dones, t, n3, v3, a3, g, gl, one)
        a4 = _lane(rewards, values, dones, t, n4, v4, a4, g, gl, one)
        a5 = _lane(rewards, values, dones, t, n5, v5, a5, g, gl, one)
        a6 = _lane(rewards, values, dones, t, n6, v6, a6, g, gl, one)
        a7 = _lane(rewards, values, dones, t, n7, v7, a7, g, gl, one)
        v0, v1, v2, v3 = values[t, n0], values[t, n1], values[t, n2], values[t, n3]
        v4, v5, v6, v7 = values[t, n4], values[t, n5], values[t, n6], values[t, n7]
        adv[t, n0], adv[t, n1], adv[t, n2], adv[t, n3] = a0, a1, a2, a3
        adv[t, n4], adv[t, n5], adv[t, n6], adv[t, n7] = a4, a5, a6, a7
        returns[t, n0], returns[t, n1], returns[t, n2], returns[t, n3] = a0 + v0, a1 + v1, a2 + v2, a3 + v3
        returns[t, n4], returns[t, n5], returns[t, n6], returns[t, n7] = a4 + v4, a5 + v5, a6 + v6, a7 + v7


def _vectors_load(*arrays: Any) -> bool:
    """Typing-time test for the overloads below: every array type is one the 64-byte vectors load
    (C-ordered 2-d), all of one float dtype. Where it fails they compile to a no-op."""
    vt = vec_type(arrays[0])
    return vt is not None and all(vec_type(a) == vt for a in arrays[1:])


def _row_of(a: Any, like: Any) -> bool:
    """Typing-time test: a is a C-ordered 1-d array of like's dtype (GAE's last values)."""
    return isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" and a.dtype == like.dtype


@njit(inline="always")
def _gae_step(rewards, values, dones, t, j, next_value, next_adv, g, gl, one):
    """:func:`_lane` on one vector of columns j .. j + L - 1 of row t: the same operations in the
    same order, each rounded as numpy rounds it (no contraction into FMAs); returns the advantages
    and values[t] (the next step's next value)."""
    not_done = vsub(one, vload(dones, t, j))
    v = vload(values, t, j)
    delta = vsub(vadd(vload(rewards, t, j), vmul(vmul(g, next_value), not_done)), v)
    return vadd(delta, vmul(vmul(gl, not_done), next_adv)), v


@njit(inline="always")
def _gae_store(adv, returns, t, j, a, v):
    vstore(adv, t, j, a)
    vstore(returns, t, j, vadd(a, v))


def _gae_vectors(rewards, values, dones, last_values, g, gl, adv, returns):
    """The columns 0 .. c - 1 that fill whole 64-byte vectors, 4 vectors (64 float32 / 32 float64
    columns) at a time, then one at a time; returns c. Each block keeps its running advantages and
    next values in registers over the whole backward pass, so a row's loads never wait for the
    previous row's stores. (The row loop, which reads adv[t + 1] back from memory, takes ~120 us at
    (2048, 64) float32 against ~30 us this way, measured; software prefetching helped that loop,
    120 -> 68 us, but made this one slower.) Only numba code calls it; returns 0 for arrays the
    vectors cannot load."""
    raise NotImplementedError("numba kernels only")


def _gae_vectors_impl(rewards, values, dones, last_values, g, gl, adv, returns):
    T, N = rewards.shape
    L = lanes(adv)
    gv, glv, one, z = vsplat(adv, g), vsplat(adv, gl), vsplat(adv, 1), vsplat(adv, 0)
    lv = _view_at(last_values, 0, 1, N)  # (1, N), without numba's reshape helper call
    c = 0
    while c + 4 * L <= N:
        j1, j2, j3 = c + L, c + 2 * L, c + 3 * L
        v0, v1, v2, v3 = vload(lv, 0, c), vload(lv, 0, j1), vload(lv, 0, j2), vload(lv, 0, j3)
        a0 = a1 = a2 = a3 = z  # the last step's next advantage (multiplied by 1 - done: as _lane)
        for s in range(T):
            t = T - 1 - s
            a0, v0 = _gae_step(rewards, values, dones, t, c, v0, a0, gv, glv, one)
            a1, v1 = _gae_step(rewards, values, dones, t, j1, v1, a1, gv, glv, one)
            a2, v2 = _gae_step(rewards, values, dones, t, j2, v2, a2, gv, glv, one)
            a3, v3 = _gae_step(rewards, values, dones, t, j3, v3, a3, gv, glv, one)
            _gae_store(adv, returns, t, c, a0, v0)
            _gae_store(adv, returns, t, j1, a1, v1)
            _gae_store(adv, returns, t, j2, a2, v2)
            _gae_store(adv, returns, t, j3, a3, v3)
        c += 4 * L
    while c + L <= N:
        v0, a0 = vload(lv, 0, c), z
        for s in range(T):
            t = T - 1 - s
            a0, v0 = _gae_step(rewards, values, dones, t, c, v0, a0, gv, glv, one)
            _gae_store(adv, returns, t, c, a0, v0)
        c += L
    return c


@overload(_gae_vectors)
def _gae_vectors_overload(rewards, values, dones, last_values, g, gl, adv, returns):
    if _vectors_load(adv, rewards, values, dones, returns) and _row_of(last_values, adv):
        return _gae_vectors_impl
    return lambda rewards, values, dones, last_values, g, gl, adv, returns: 0


@njit(inline="always")
def _gae_rows(rewards, values, dones, last_values, g, gl, zero, one, adv, returns, c):
    """Columns c .. N - 1; the last step bootstraps from last_values, the others read row t + 1."""
    T, N = rewards.shape
    t = T - 1
    for n in range(c, N):
        not_done = one - dones[t, n]
        a = rewards[t, n] + g * last_values[n] * not_done - values[t, n] + gl * not_done * zero
        adv[t, n] = a
        returns[t, n] = a + values[t, n]
    for t in range(T - 2, -1, -1):
        for n in range(c, N):
            not_done = one - dones[t, n]
            delta = rewards[t, n] + g * values[t + 1, n] * not_done - values[t, n]
            a = delta + gl * not_done * adv[t + 1, n]
            adv[t, n] = a
            returns[t, n] = a + values[t, n]


@njit(inline="always")
def _overlap(a, b):
    """Whether two C-contiguous arrays share any byte (their address ranges intersect)."""
    pa, pb = a.ctypes.data, b.ctypes.data
    return pa < pb + b.size * b.itemsize and pb < pa + a.size * a.itemsize


@njit(inline="always")
def _binary(d):
    """Whether every entry of the C-contiguous (T, N) array d is 0 or 1 (NaN is neither): one
    vectorised pass over the flat array without an early exit (an exit per row kept the loop
    scalar: 0.25 us at (128, 8) against 0.07 us); it brings dones into cache for the recursion."""
    f = _view_at(d, 0, 1, d.size)[0]  # flat, without numba's reshape helper call
    bad = False
    for i in range(f.size):
        x = f[i]
        bad |= (x != 0) & (x != 1)  # exact in either dtype
    return not bad


@njit(cache=True)
def _gae_kernel(rewards, values, dones, last_values, gamma, lam, adv, returns):
    """Returns 0, or 1 when a shape does not match rewards' (T, N), 2 when gamma or lam is out of
    range, 3 when adv or returns overlaps an input or the other (the recursion writes row t before
    it reads row t - 1, so it needs separate memory), 4 when a done is neither 0 nor 1; for 1-4 it
    computes and writes nothing. The checks cost nanoseconds
    here and ~0.35 us (shapes) to ~2.3 us (overlaps) in Python (see ``gae``). ``gae`` and
    ``advantages.compute_gae``'s hot path rely on that: on any nonzero status they start again
    on the full path, over the untouched outputs."""
    T, N = rewards.shape
    # (spelled out: a loop over a tuple of the arrays costs 0.1 us of reference counting)
    if values.shape != (T, N) or dones.shape != (T, N) or adv.shape != (T, N) or returns.shape != (T, N) \
            or last_values.shape[0] != N:
        return 1
    if not (0.0 < gamma <= 1.0) or not (0.0 <= lam <= 1.0):
        return 2
    if T == 0 or N == 0:
        return 0
    if _overlap(adv, returns) or _overlap(adv, rewards) or _overlap(adv, values) or _overlap(adv, dones) \
            or _overlap(adv, last_values) or _overlap(returns, rewards) or _overlap(returns, values) \
            or _overlap(returns, dones) or _overlap(returns, last_values):
        return 3
    if not _binary(dones):
        return 4
    # gamma, gamma * lam (both float64, as Python computes them) and 1, rounded to the array dtype
    # as numpy rounds them, by a store into the output that is overwritten below.
    adv[0, 0] = gamma
    g = adv[0, 0]
    adv[0, 0] = gamma * lam
    gl = adv[0, 0]
    adv[0, 0] = 1.0
    one = adv[0, 0]
    zero = one - one
    c = _gae_vectors(rewards, values, dones, last_values, g, gl, adv, returns)
    if N - c < LANES_MAX_N:
        while c + 8 <= N:
            _gae_lanes(rewards, values, dones, last_values, g, gl, zero, one, adv, returns, c)
            c += 8
    if c == 0:  # a literal start column: the loop vectoriser then keeps its fast path (1.4x at N = 64)
        _gae_rows(rewards, values, dones, last_values, g, gl, zero, one, adv, returns, 0)
    elif c < N:
        _gae_rows(rewards, values, dones, last_values, g, gl, zero, one, adv, returns, c)
    return 0


@njit(inline="always")
def _rtg_step(rewards, dones, t, j, g, gamma, one):
    """One vector of G_t = r_t + gamma (1 - d_t) G_{t+1}, the scalar loop's operations in its order."""
    return vadd(vload(rewards, t, j), vmul(vmul(gamma, vsub(one, vload(dones, t, j))), g))


def _rtg_vectors(rewards, dones, last_values, gamma, one, out):
    """Rewards-to-go over the columns 0 .. c - 1 that fill whole vectors, as :func:`_gae_vectors`
    does GAE (4 vectors at a time, then one; the running returns in registers); returns c."""
    raise NotImplementedError("numba kernels only")


def _rtg_vectors_impl(rewards, dones, last_values, gamma, one, out):
    T, N = rewards.shape
    L = lanes(out)
    gv, o = vsplat(out, gamma), vsplat(out, one)
    lv = _view_at(last_values, 0, 1, N)  # (1, N), without numba's reshape helper call
    c = 0
    while c + 4 * L <= N:
        j1, j2, j3 = c + L, c + 2 * L, c + 3 * L
        g0, g1, g2, g3 = vload(lv, 0, c), vload(lv, 0, j1), vload(lv, 0, j2), vload(lv, 0, j3)
        for s in range(T):
            t = T - 1 - s
            g0, g1 = _rtg_step(rewards, dones, t, c, g0, gv, o), _rtg_step(rewards, dones, t, j1, g1, gv, o)
            g2, g3 = _rtg_step(rewards, dones, t, j2, g2, gv, o), _rtg_step(rewards, dones, t, j3, g3, gv, o)
            vstore(out, t, c, g0)
            vstore(out, t, j1, g1)
            vstore(out, t, j2, g2)
            vstore(out, t, j3, g3)
        c += 4 * L
    while c + L <= N:
        g0 = vload(lv, 0, c)
        for s in range(T):
            t = T - 1 - s
            g0 = _rtg_step(rewards, dones, t, c, g0, gv, o)
            vstore(out, t, c, g0)
        c += L
    return c


@overload(_rtg_vectors)
def _rtg_vectors_overload(rewards, dones, last_values, gamma, one, out):
    if _vectors_load(out, rewards, dones) and _row_of(last_values, out):
        return _rtg_vectors_impl
    return lambda rewards, dones, last_values, gamma, one, out: 0


@njit(cache=True)
def _rewards_to_go_kernel(rewards, dones, last_values, gamma, one, out):
    """G_t into out (T, N). Reads without bounds checks: :func:`rewards_to_go`, its only caller,
    checks that dones and out are (T, N) and last_values (N,)."""
    T, N = rewards.shape
    c = _rtg_vectors(rewards, dones, last_values, gamma, one, out)
    g = last_values.copy()
    for t in range(T - 1, -1, -1):
        for n in range(c, N):
            g[n] = rewards[t, n] + gamma * (one - dones[t, n]) * g[n]
            out[t, n] = g[n]


def _compile_with_slp(dispatcher: Any, signature: tuple, keep_enabled: bool = False) -> None:
    """Compile (or load from numba's disk cache) one signature with LLVM's SLP vectoriser on.

    numba runs the SLP vectoriser only when ``numba.core.config.SLP_VECTORIZE`` is set, which it
    reads while optimising a module. It is set here for this one compilation, under numba's own
    compiler lock, so no other compilation in the process sees it. SLP packs independent scalar
    operations into vector ones; it neither reorders nor contracts float operations, so results
    are unchanged (tested bit-identical to numpy). Afterwards the dispatcher compiles nothing new
    unless ``keep_enabled``.
    """
    from numba.core import config
    from numba.core.compiler_lock import global_compiler_lock

    with global_compiler_lock:
        saved = config.SLP_VECTORIZE
        config.SLP_VECTORIZE = 1
        dispatcher.disable_compile(False)
        try:
            dispatcher.compile(signature)
        finally:
            config.SLP_VECTORIZE = saved
            # (with no signature yet, an interrupted first compile, numba's disable_compile asserts: that
            # AssertionError replaced a Ctrl-C; the caller prepares again, its signature not marked ready)
            if keep_enabled or dispatcher.signatures:
                dispatcher.disable_compile(not keep_enabled)


_GAE_READY: set = set()  # dtypes for which _gae_prepare ran in this process
_BOOL_TYPES = frozenset((bool, np.bool_))


def _gae_prepare(dt: np.dtype) -> None:
    """Compile the one signature gae() calls for dtype dt: C-contiguous writable arrays, float64
    gamma and lambda. The dispatcher compiles nothing else (compilation stays disabled, so no
    signature is ever built without SLP, nor cached that way, nor for mixed dtypes, whose casts
    would differ from numpy's); other argument types raise TypeError and take gae()'s slow path."""
    from numba import from_dtype, types

    arr2, arr1 = types.Array(from_dtype(dt), 2, "C"), types.Array(from_dtype(dt), 1, "C")
    _compile_with_slp(_gae_kernel, (arr2, arr2, arr2, arr1, types.float64, types.float64, arr2, arr2))
    _GAE_READY.add(dt)


def gae(
    rewards: np.ndarray,
    values: np.ndarray,
    dones: np.ndarray,
    last_values: np.ndarray,
    gamma: float,
    lam: float,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """GAE(gamma, lambda) over a rollout (see ``minippo.advantages.compute_gae``).

    rewards, values, dones (T, N) float32/float64 (dones 0/1), last_values (N,) = V(s_T)
    -> (advantages (T, N), returns (T, N) = advantages + values), in the dtype of rewards.
    ``out=(adv, returns)``: arrays of that shape and dtype to write into (and return) instead of
    allocating. Any dtype (cast to rewards' float dtype), strides, or read-only inputs are accepted.

    Fast path (~0.9 us at (128, 8)): C-contiguous arrays of one float dtype go straight to the
    compiled kernel, which checks the shapes and gamma/lambda's range itself; everything else (a
    cast, a copy, a bool gamma or lam, a bad argument) goes through :func:`_gae_slow`.
    """
    own = out is None
    # Not before the kernel is compiled (it compiles only through _gae_prepare), nor for a bool
    # gamma or lam: numba's dispatcher would convert a bool (or np.bool_) to 1.0 / 0.0 for the
    # float64 signature, where _validate refuses it (the set lookup costs ~0.04-0.07 us).
    if not _GAE_READY or type(gamma) in _BOOL_TYPES or type(lam) in _BOOL_TYPES:
        return _gae_slow(rewards, values, dones, last_values, gamma, lam, out, own)
    try:  # gamma, lam as given: Python and numpy floats and ints match the float64 signature
        dt = rewards.dtype
        if own:
            out = (np.empty(rewards.shape, dt), np.empty(rewards.shape, dt))
        elif out.__class__ is not tuple and out.__class__ is not list:  # (an array's rows, a generator
            raise TypeError  # unpacking would use up: _gae_slow names what out must be)
        adv, ret = out
        # Each dtype the native float object itself: numba's dispatcher may read a byte-swapped array
        # as native (its type fingerprint has no byte order: see compute_gae's hot path).
        if not ((dt is _F32 or dt is _F64) and values.dtype is dt and dones.dtype is dt
                and last_values.dtype is dt and adv.dtype is dt and ret.dtype is dt):
            raise TypeError
        status = _gae_kernel(rewards, values, dones, last_values, gamma, lam, adv, ret)
    except (TypeError, ValueError, RuntimeError, AttributeError):  # not the compiled signature: other
        # dtypes or layouts, float32 scalars, not arrays (AttributeError: a list has no shape), out not
        # a pair (ValueError or TypeError from the unpacking; _gae_slow says what is wrong). RuntimeError:
        # another thread's _gae_prepare enabled compiling for a moment, so this call tried to compile
        # its signature and found compiling disabled again once it had the lock
        return _gae_slow(rewards, values, dones, last_values, gamma, lam, out, own)
    if status == 3:  # an overlap: out's two arrays may not share memory with each other (_gae_slow checks it)
        from minippo.advantages import _check_out

        _check_out(out)
        return _gae_copied(rewards, values, dones, last_values, gamma, lam, out)
    if status:
        _gae_raise(rewards, values, dones, last_values, gamma, lam, out)
    return out


def _gae_copied(rewards, values, dones, last_values, gamma, lam, out):
    """gae() when out shares memory with an input: computed into new arrays, then copied into out
    (what the numpy backend does); its callers have refused an out whose two arrays share memory."""
    adv, ret = _gae_slow(rewards, values, dones, last_values, gamma, lam, None, True)
    out[0][...] = adv
    out[1][...] = ret
    return out


def _gae_slow(rewards, values, dones, last_values, gamma, lam, out, own):
    """gae() for anything but C-contiguous arrays of one prepared float dtype: validate, cast or copy
    to that form, run the kernel, copy back into out if it had to be copied."""
    from minippo.advantages import _check_out, _validate

    _validate(rewards, values, dones, last_values, gamma, lam)
    _check_out(out)
    dt = _result_dtype(rewards)
    if dt not in _GAE_READY:
        _gae_prepare(dt)
    r, v, d, lv = (np.require(a, dt, ["C", "W"]) for a in (rewards, values, dones, last_values))
    if own:
        out = (np.empty(r.shape, dt), np.empty(r.shape, dt))
    adv, ret = out
    if adv.shape != r.shape or ret.shape != r.shape or adv.dtype != dt or ret.dtype != dt:
        raise ValueError(f"out must be two {dt} arrays of shape {r.shape}, got "
                         f"{[(a.dtype, a.shape) for a in out]}")
    a, b = np.require(adv, dt, ["C", "W"]), np.require(ret, dt, ["C", "W"])
    if _gae_kernel(r, v, d, lv, float(gamma), float(lam), a, b) == 3:
        return _gae_copied(r, v, d, lv, gamma, lam, out)
    if a is not adv:
        adv[...] = a
    if b is not ret:
        ret[...] = b
    return out


def _gae_raise(rewards, values, dones, last_values, gamma, lam, out):
    from minippo.advantages import _validate

    _validate(rewards, values, dones, last_values, gamma, lam)  # raises for the inputs
    raise ValueError(f"out must be two {rewards.dtype} arrays of shape {rewards.shape}, got "
                     f"{[(a.dtype, a.shape) for a in out]}")


def rewards_to_go(
    rewards: np.ndarray, dones: np.ndarray, last_values: np.ndarray, gamma: float
) -> np.ndarray:
    """Discounted return G_t = r_t + gamma (1 - d_t) G_{t+1}, G_T = last_values; (T, N) -> (T, N).

    rewards, dones (T, N) float32/float64, last_values (N,); result in the dtype of rewards.
    """
    for name, a in (("rewards", rewards), ("dones", dones), ("last_values", last_values)):
        array(name, a)  # (a list has no ndim: AttributeError)
        if a.dtype.kind not in _REAL_KINDS:  # (complex would lose its imaginary part in the cast)
            raise TypeError(f"{name} must be a real array (float, int or bool), got dtype {a.dtype}")
    if rewards.ndim != 2 or dones.shape != rewards.shape or last_values.shape != rewards.shape[1:]:
        raise ValueError(f"rewards and dones must have one shape (T, N) and last_values (N,), got "
                         f"{tuple(rewards.shape)}, {tuple(dones.shape)}, {tuple(last_values.shape)}")
    gamma = real("gamma", gamma, 0.0, 1.0, low_open=True)
    if ((dones != 0) & (dones != 1)).any():
        raise ValueError("dones must hold only 0 and 1 (episode-end flags)")
    dt = _result_dtype(rewards)
    r, d = (np.ascontiguousarray(a, dtype=dt) for a in (rewards, dones))
    lv = np.ascontiguousarray(last_values, dtype=dt)
    out = np.empty_like(r)
    _rewards_to_go_kernel(r, d, lv, dt.type(gamma), dt.type(1), out)
    return out


# ---------------------------------------------------------------- fused MLP
# Eigen's generic_fast_tanh_float: tanh(x) ~ x P(x^2) / Q(x^2) on |x| <= 7.905, P degree 6, Q 3.
_T_CLAMP, _T_TINY, _T_BIG = np.float32(7.90531110763549805), np.float32(4e-4), np.float32(9.0)
_A13, _A11, _A9, _A7 = (np.float32(c) for c in (-2.76076847742355e-16, 2.00018790482477e-13,
                                                  -8.60467152213735e-11, 5.12229709037114e-08))
_A5, _A3, _A1 = (np.float32(c) for c in (1.48572235717979e-05, 6.37261928875436e-04,
                                          4.89352455891786e-03))
_B6, _B4, _B2, _B0 = (np.float32(c) for c in (1.19825839466702e-06, 1.18534705686654e-04,
                                               2.26843463243900e-03, 4.89352518554385e-03))
_ONE32 = np.float32(1.0)


@njit(cache=True, inline="always", error_model="numpy")
def _tanh_f32(x):
    # Branch-free (selects), so the loop around it vectorises; NaN propagates, |x| > 9 -> +-1.
    y = _T_CLAMP if x > _T_CLAMP else x
    y = -_T_CLAMP if y < -_T_CLAMP else y
    x2 = y * y
    p = ((((((_A13 * x2 + _A11) * x2 + _A9) * x2 + _A7) * x2 + _A5) * x2 + _A3) * x2 + _A1) * y
    q = ((_B6 * x2 + _B4) * x2 + _B2) * x2 + _B0
    r = p / q
    ax = abs(x)
    r = x if ax < _T_TINY else r
    return (_ONE32 if x > 0 else -_ONE32) if ax > _T_BIG else r


@njit(**_MLP_JIT)
def _activate(h, act):
    """h <- act(h) in place, for act in ACT_TANH / ACT_TANH_F32 / ACT_RELU (ACT_NONE: no-op)."""
    B, F = h.shape
    for r in range(B):
        if act == ACT_TANH_F32:
            for j in range(F):
                h[r, j] = _tanh_f32(h[r, j])
        elif act == ACT_TANH:
            for j in range(F):
                h[r, j] = np.tanh(h[r, j])
        elif act == ACT_RELU:
            for j in range(F):
                v = h[r, j]
                h[r, j] = 0 if v < 0 else v  # NaN stays NaN, like np.maximum


# ---- register tiles: a block of out (4 rows x 4, 2 or 1 vectors of 64 bytes, kernels/simd.py) stays
# in registers for the whole sum over k (over the batch for _mm_tn, which runs them on A^T), then is
# stored once. The loop-vectorised code below the tiles keeps out in memory (a load and a store per
# pass over k) and gets 256-bit vectors from LLVM. Measured (float32, 2-core AVX-512 VM):
# 8 x 64 x 64 _mm_acc 0.66-0.74 -> 0.41-0.48 us and _mm_tn 1.0 -> 0.55 us; (256 x 64) x (64 x 64)
# _mm_acc ~140-150 -> 140-185 GFLOP/s with the 4-vector tile, _mm_tn ~100 -> 110-155 (OpenBLAS on
# one thread 95-115 in the same runs).
@njit(inline="always")
def _row4(a, i, j, L):
    """a[i, j:j + 4 L] as four vectors of L lanes."""
    return vload(a, i, j), vload(a, i, j + L), vload(a, i, j + 2 * L), vload(a, i, j + 3 * L)


@njit(inline="always")
def _fma4(s, w, c):
    """s * w + c for one vector s and four-vector tuples w, c."""
    return vfma(s, w[0], c[0]), vfma(s, w[1], c[1]), vfma(s, w[2], c[2]), vfma(s, w[3], c[3])


@njit(inline="always")
def _store4(a, i, j, L, c):
    """a[i, j:j + 4 L] = the four vectors c."""
    vstore(a, i, j, c[0])
    vstore(a, i, j + L, c[1])
    vstore(a, i, j + 2 * L, c[2])
    vstore(a, i, j + 3 * L, c[3])


@njit(inline="always")
def _row2(a, i, j, L):
    """a[i, j:j + 2 L] as two vectors."""
    return vload(a, i, j), vload(a, i, j + L)


@njit(inline="always")
def _fma2(s, w, c):
    """s * w + c for one vector s and two-vector tuples w, c."""
    return vfma(s, w[0], c[0]), vfma(s, w[1], c[1])


@njit(inline="always")
def _store2(a, i, j, L, c):
    """a[i, j:j + 2 L] = the two vectors c."""
    vstore(a, i, j, c[0])
    vstore(a, i, j + L, c[1])


def _tiles(A, W, out, M4, F1, acc):
    """out[:M4, :F1] (+)= A[:M4] @ W[:, :F1] (added to out when ``acc``, else written), M4 a multiple
    of 4 and F1 of the vector's lanes; A may have any layout (it is read one scalar at a time).

    Only numba code calls it: compiled through the overload below, as a no-op for W or out that the
    vectors cannot load (callers then pass F1 = 0 anyway: ``lanes`` is 0 for them)."""
    raise NotImplementedError("numba kernels only")


@functools.cache
def _make_tiles_impl(wide: bool) -> Any:
    """:func:`_tiles` for one register budget. ``wide`` (64-byte registers, AVX-512): 4 rows x 4,
    then 2, then 1 vectors of accumulators (16, 8, 4 registers). Otherwise only 4 rows x 1 vector: a
    Vec is 2 ymm (AVX2) or 4 xmm / NEON registers there, and the wider tiles need 32-64 of them, so
    LLVM spills the accumulators (AVX2: 8 x 64 x 64 1.33-2.09 -> 0.88-0.90 us, 256 x 64 x 64
    35-58 -> 20 us). Every output element is the same chain of FMAs over k in either case, so the
    results do not depend on the tile width."""

    def _tiles_impl(A, W, out, M4, F1, acc):
        K = A.shape[1]
        L = lanes(out)
        z = vsplat(out, 0)
        for r in range(0, M4, 4):
            j = 0
            while wide and j + 4 * L <= F1:  # 4 rows x 4 vectors: 16 accumulators, 4 W loads / 16 FMAs
                if acc:
                    c0, c1 = _row4(out, r, j, L), _row4(out, r + 1, j, L)
                    c2, c3 = _row4(out, r + 2, j, L), _row4(out, r + 3, j, L)
                else:
                    c0 = c1 = c2 = c3 = (z, z, z, z)
                for k in range(K):
                    w = _row4(W, k, j, L)
                    c0 = _fma4(vsplat(out, A[r, k]), w, c0)
                    c1 = _fma4(vsplat(out, A[r + 1, k]), w, c1)
                    c2 = _fma4(vsplat(out, A[r + 2, k]), w, c2)
                    c3 = _fma4(vsplat(out, A[r + 3, k]), w, c3)
                _store4(out, r, j, L, c0)
                _store4(out, r + 1, j, L, c1)
                _store4(out, r + 2, j, L, c2)
                _store4(out, r + 3, j, L, c3)
                j += 4 * L
            while wide and j + 2 * L <= F1:  # 8 accumulators
                if acc:
                    c0, c1 = _row2(out, r, j, L), _row2(out, r + 1, j, L)
                    c2, c3 = _row2(out, r + 2, j, L), _row2(out, r + 3, j, L)
                else:
                    c0 = c1 = c2 = c3 = (z, z)
                for k in range(K):
                    w = _row2(W, k, j, L)
                    c0 = _fma2(vsplat(out, A[r, k]), w, c0)
                    c1 = _fma2(vsplat(out, A[r + 1, k]), w, c1)
                    c2 = _fma2(vsplat(out, A[r + 2, k]), w, c2)
                    c3 = _fma2(vsplat(out, A[r + 3, k]), w, c3)
                _store2(out, r, j, L, c0)
                _store2(out, r + 1, j, L, c1)
                _store2(out, r + 2, j, L, c2)
                _store2(out, r + 3, j, L, c3)
                j += 2 * L
            while j < F1:  # one vector of columns (the last one when wide): 4 accumulators
                if acc:
                    e0, e1, e2, e3 = vload(out, r, j), vload(out, r + 1, j), vload(out, r + 2, j), vload(out, r + 3, j)
                else:
                    e0 = e1 = e2 = e3 = z
                for k in range(K):
                    w0 = vload(W, k, j)
                    e0 = vfma(vsplat(out, A[r, k]), w0, e0)
                    e1 = vfma(vsplat(out, A[r + 1, k]), w0, e1)
                    e2 = vfma(vsplat(out, A[r + 2, k]), w0, e2)
                    e3 = vfma(vsplat(out, A[r + 3, k]), w0, e3)
                vstore(out, r, j, e0)
                vstore(out, r + 1, j, e1)
                vstore(out, r + 2, j, e2)
                vstore(out, r + 3, j, e3)
                j += L

    return _tiles_impl


@overload(_tiles)
def _tiles_overload(A, W, out, M4, F1, acc):
    if not _vectors_load(W, out):
        return lambda A, W, out, M4, F1, acc: None
    return _make_tiles_impl(native_vector_bytes() >= VECTOR_BYTES)


def _tile_rows(A, W, out, r0, M, F1):
    """out[r0:M, :F1] = A[r0:M] @ W[:, :F1] one row at a time (the rows a block of 4 leaves), 4
    vectors of the row's accumulators (then 1) in registers over the whole sum; F1 a multiple of the
    lanes (out written, not added to). Otherwise the contract of :func:`_tiles` (numba code only,
    a no-op for arrays the vectors cannot load). A 64 -> 2 head's dW^T (2 rows) in :func:`_mm_tn`
    at batch 8: 0.18 -> 0.06 us."""
    raise NotImplementedError("numba kernels only")


def _tile_rows_impl(A, W, out, r0, M, F1):
    K = A.shape[1]
    L = lanes(out)
    z = vsplat(out, 0)
    for r in range(r0, M):
        j = 0
        while j + 4 * L <= F1:
            c = (z, z, z, z)
            for k in range(K):
                c = _fma4(vsplat(out, A[r, k]), _row4(W, k, j, L), c)
            _store4(out, r, j, L, c)
            j += 4 * L
        while j < F1:
            e = z
            for k in range(K):
                e = vfma(vsplat(out, A[r, k]), vload(W, k, j), e)
            vstore(out, r, j, e)
            j += L


@overload(_tile_rows)
def _tile_rows_overload(A, W, out, r0, M, F1):
    return _tile_rows_impl if _vectors_load(W, out) else (lambda A, W, out, r0, M, F1: None)


@njit(**_MLP_JIT)
def _vector_cols(F, X, out):
    """How many of F columns the register tiles take: whole vectors, when X and out are arrays the
    vectors can load, in one dtype (else 0: the tiles compile to a no-op for any other pair)."""
    L = lanes(out)
    return F - F % L if L > 0 and lanes(X) == L else 0


@njit(**_MLP_JIT)
def _mm_acc(A, W, out):
    """out += A @ W; A (M, K), W (K, F), out (M, F), all row-major. The one matmul building block
    of the fused kernels (also used by kernels/cpu_update.py).

    Rows in blocks of 4 times whole 64-byte vectors of columns go through the register tiles
    (:func:`_tiles`). The rest (the last F % L columns of those rows, the leftover rows, all of
    it for arrays the vectors cannot load) goes through loops that LLVM vectorises along out's rows
    (out[r, :] += A[r, k] * W[k, :]), with register blocking: four rows of A times four rows of W
    per pass over out's columns, so each loaded W element feeds four rows (16 multiply-adds per 4
    loads of W, 4 loads and 4 stores of out); leftover rows go one at a time (k still unrolled by
    4), leftover k one at a time."""
    M, K = A.shape
    F = W.shape[1]
    M4 = M - M % 4
    F1 = _vector_cols(F, W, out) if M4 > 0 else 0
    if F1 > 0:
        _tiles(A, W, out, M4, F1, True)
    K4 = K - K % 4
    r = M4 if F1 == F else 0  # (the tiles did every column of rows 0 .. M4: skip their empty loops)
    while r + 4 <= M:
        for k in range(0, K4, 4):
            a0, a1, a2, a3 = A[r, k], A[r, k + 1], A[r, k + 2], A[r, k + 3]
            b0, b1, b2, b3 = A[r + 1, k], A[r + 1, k + 1], A[r + 1, k + 2], A[r + 1, k + 3]
            c0, c1, c2, c3 = A[r + 2, k], A[r + 2, k + 1], A[r + 2, k + 2], A[r + 2, k + 3]
            e0, e1, e2, e3 = A[r + 3, k], A[r + 3, k + 1], A[r + 3, k + 2], A[r + 3, k + 3]
            for j in range(F1, F):
                w0, w1, w2, w3 = W[k, j], W[k + 1, j], W[k + 2, j], W[k + 3, j]
                out[r, j] += a0 * w0 + a1 * w1 + a2 * w2 + a3 * w3
                out[r + 1, j] += b0 * w0 + b1 * w1 + b2 * w2 + b3 * w3
                out[r + 2, j] += c0 * w0 + c1 * w1 + c2 * w2 + c3 * w3
                out[r + 3, j] += e0 * w0 + e1 * w1 + e2 * w2 + e3 * w3
        for k in range(K4, K):
            a0, b0, c0, e0 = A[r, k], A[r + 1, k], A[r + 2, k], A[r + 3, k]
            for j in range(F1, F):
                w0 = W[k, j]
                out[r, j] += a0 * w0
                out[r + 1, j] += b0 * w0
                out[r + 2, j] += c0 * w0
                out[r + 3, j] += e0 * w0
        r += 4
    _mm_acc_rows(A, W, out, r)


@njit(**_MLP_JIT)
def _mm_acc_rows(A, W, out, r0):
    """out[r0:] += A[r0:] @ W one row at a time, k unrolled by 4 (the leftover rows of
    :func:`_mm_acc`, and all rows below batch 4, where ``_dense`` calls it directly: a small
    function that LLVM inlines, 0.35 against 0.42 us for batch 1's forward through _mm_acc)."""
    M, K = A.shape
    F = W.shape[1]
    K4 = K - K % 4
    for q in range(r0, M):
        for k in range(0, K4, 4):
            a0, a1, a2, a3 = A[q, k], A[q, k + 1], A[q, k + 2], A[q, k + 3]
            for j in range(F):
                out[q, j] += a0 * W[k, j] + a1 * W[k + 1, j] + a2 * W[k + 2, j] + a3 * W[k + 3, j]
        for k in range(K4, K):
            a0 = A[q, k]
            for j in range(F):
                out[q, j] += a0 * W[k, j]


@njit(**_MLP_JIT)
def _mm_tn(A, D, out):
    """out = A^T @ D; A (B, K), D (B, F), out (K, F): the weight gradient x^T dL/dz (also used by
    kernels/cpu_update.py).

    Whole vectors of columns: the register tiles (:func:`_tiles` on A^T, writing) for rows in
    blocks of 4, :func:`_tile_rows` for the K % 4 rows left. The F % L columns left: the shape of
    loop of :func:`_mm_acc` with out's row k = sum_r A[r, k] D[r, :], four rows of out per pass
    over r, r unrolled by 4."""
    B, K = A.shape
    F = D.shape[1]
    K4 = K - K % 4
    F1 = _vector_cols(F, D, out)
    if F1 > 0:
        _tiles(A.T, D, out, K4, F1, False)  # out's row k = sum_r A[r, k] D[r, :]
        _tile_rows(A.T, D, out, K4, K, F1)
    if F1 == F:
        return
    out[:, F1:] = 0
    B4 = B - B % 4
    k = 0
    while k + 4 <= K:
        for r in range(0, B4, 4):
            a0, a1, a2, a3 = A[r, k], A[r + 1, k], A[r + 2, k], A[r + 3, k]
            b0, b1, b2, b3 = A[r, k + 1], A[r + 1, k + 1], A[r + 2, k + 1], A[r + 3, k + 1]
            c0, c1, c2, c3 = A[r, k + 2], A[r + 1, k + 2], A[r + 2, k + 2], A[r + 3, k + 2]
            e0, e1, e2, e3 = A[r, k + 3], A[r + 1, k + 3], A[r + 2, k + 3], A[r + 3, k + 3]
            for j in range(F1, F):
                d0, d1, d2, d3 = D[r, j], D[r + 1, j], D[r + 2, j], D[r + 3, j]
                out[k, j] += a0 * d0 + a1 * d1 + a2 * d2 + a3 * d3
                out[k + 1, j] += b0 * d0 + b1 * d1 + b2 * d2 + b3 * d3
                out[k + 2, j] += c0 * d0 + c1 * d1 + c2 * d2 + c3 * d3
                out[k + 3, j] += e0 * d0 + e1 * d1 + e2 * d2 + e3 * d3
        for r in range(B4, B):
            a0, b0, c0, e0 = A[r, k], A[r, k + 1], A[r, k + 2], A[r, k + 3]
            for j in range(F1, F):
                d0 = D[r, j]
                out[k, j] += a0 * d0
                out[k + 1, j] += b0 * d0
                out[k + 2, j] += c0 * d0
                out[k + 3, j] += e0 * d0
        k += 4
    for q in range(k, K):
        for r in range(B):
            a0 = A[r, q]
            for j in range(F1, F):
                out[q, j] += a0 * D[r, j]


@njit(**_MLP_JIT)
def _weight_grad(x, d, dW):
    """dW = x^T d for x (B, K), d (B, F), dW (K, F), through :func:`_mm_tn`. A layer with fewer than
    8 outputs (a head) computes dW^T = d^T x instead, whose rows (length K) vectorise where dW's
    (length F) do not, and copies it transposed into dW (64 -> 2 at batch 8: 0.18 against 0.38 us,
    measured; also used by kernels/cpu_update.py). dW^T's rows then go through the single-row
    register tiles (:func:`_tile_rows`): 64 -> 2 / 6 at batch 256 1.3 / 2.6-2.7 us against
    2.4-2.8 / 3.7-4.0 through the loops (batch 8: 0.13 / 0.25-0.28 against 0.16-0.23 / 0.27-0.37)."""
    F, K = d.shape[1], x.shape[1]
    if F < 8:
        dWT = np.empty((F, K), dW.dtype)
        _mm_tn(d, x, dWT)
        for k in range(K):
            for j in range(F):
                dW[k, j] = dWT[j, k]
    else:
        _mm_tn(x, d, dW)


@njit(inline="always")
def _tree16(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15):
    """Three levels of the horizontal-sum tree (``simd.vfold``): 16 vectors -> 2, whose lane groups
    hold the lane sums of a0 .. a15 in order (:func:`_store16` finishes and stores them)."""
    t0, t1, t2, t3 = vfold(a0, a1, 1), vfold(a2, a3, 1), vfold(a4, a5, 1), vfold(a6, a7, 1)
    t4, t5, t6, t7 = vfold(a8, a9, 1), vfold(a10, a11, 1), vfold(a12, a13, 1), vfold(a14, a15, 1)
    u0, u1, u2, u3 = vfold(t0, t1, 2), vfold(t2, t3, 2), vfold(t4, t5, 2), vfold(t6, t7, 2)
    return vfold(u0, u1, 3), vfold(u2, u3, 3)


@njit(inline="always")
def _dots16(d, W, r, k, F, L, z):
    """16 vectors whose lanes sum to the dot products d[r, :F] . W[k + i, :F], i = 0 .. 15: each
    loaded piece of d's row feeds 16 FMAs (F a multiple of the lanes L)."""
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = a9 = a10 = a11 = a12 = a13 = a14 = a15 = z
    for f in range(0, F, L):
        x = vload(d, r, f)
        a0, a1 = vfma(x, vload(W, k, f), a0), vfma(x, vload(W, k + 1, f), a1)
        a2, a3 = vfma(x, vload(W, k + 2, f), a2), vfma(x, vload(W, k + 3, f), a3)
        a4, a5 = vfma(x, vload(W, k + 4, f), a4), vfma(x, vload(W, k + 5, f), a5)
        a6, a7 = vfma(x, vload(W, k + 6, f), a6), vfma(x, vload(W, k + 7, f), a7)
        a8, a9 = vfma(x, vload(W, k + 8, f), a8), vfma(x, vload(W, k + 9, f), a9)
        a10, a11 = vfma(x, vload(W, k + 10, f), a10), vfma(x, vload(W, k + 11, f), a11)
        a12, a13 = vfma(x, vload(W, k + 12, f), a12), vfma(x, vload(W, k + 13, f), a13)
        a14, a15 = vfma(x, vload(W, k + 14, f), a14), vfma(x, vload(W, k + 15, f), a15)
    return _tree16(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15)


def _store16(out, r, k, v0, v1):
    """out[r, k:k + 16] = the 16 dot products in v0, v1 (as :func:`_dots16` leaves them)."""
    raise NotImplementedError("numba kernels only")


@overload(_store16)
def _store16_overload(out, r, k, v0, v1):
    vt = vec_type(out)
    if vt is None:
        return None
    if vt.n == 16:  # float32: groups of 2 lanes, a fourth level makes one vector of 16 sums
        def store_f32(out, r, k, v0, v1):
            vstore(out, r, k, vfold(v0, v1, 4))
        return store_f32

    def store_f64(out, r, k, v0, v1):  # float64: three levels made 8 sums in each
        vstore(out, r, k, v0)
        vstore(out, r, k + 8, v1)
    return store_f64


@njit(inline="always")
def _dots8(d, W, r, k, F, L, z):
    """:func:`_dots16` for 8 of W's rows, folded (three levels of the same tree) into one vector
    whose lane groups hold the 8 sums in order: the block of :func:`_dx_fold` in float32 below 64-byte
    registers (AVX2: 16 accumulators are 32 of its 16 registers and spill; SSE, NEON)."""
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = z
    for f in range(0, F, L):
        x = vload(d, r, f)
        a0, a1 = vfma(x, vload(W, k, f), a0), vfma(x, vload(W, k + 1, f), a1)
        a2, a3 = vfma(x, vload(W, k + 2, f), a2), vfma(x, vload(W, k + 3, f), a3)
        a4, a5 = vfma(x, vload(W, k + 4, f), a4), vfma(x, vload(W, k + 5, f), a5)
        a6, a7 = vfma(x, vload(W, k + 6, f), a6), vfma(x, vload(W, k + 7, f), a7)
    t0, t1, t2, t3 = vfold(a0, a1, 1), vfold(a2, a3, 1), vfold(a4, a5, 1), vfold(a6, a7, 1)
    return vfold(vfold(t0, t1, 2), vfold(t2, t3, 2), 3)


@njit(inline="always")
def _dots4(d, W, r, k, F, L, z):
    """:func:`_dots16` for 4 of W's rows, folded (two levels) into one vector whose lane groups
    hold the 4 sums in order: the block of :func:`_dx_fold` in float64 below 64-byte registers."""
    a0 = a1 = a2 = a3 = z
    for f in range(0, F, L):
        x = vload(d, r, f)
        a0, a1 = vfma(x, vload(W, k, f), a0), vfma(x, vload(W, k + 1, f), a1)
        a2, a3 = vfma(x, vload(W, k + 2, f), a2), vfma(x, vload(W, k + 3, f), a3)
    return vfold(vfold(a0, a1, 1), vfold(a2, a3, 1), 2)


def _store_sums(out, r, k, v, n):
    """out[r, k:k + n] = the n sums whose partial sums v's lane groups hold (n = 4 or 8, a literal),
    as :func:`_dots8` / :func:`_dots4` leave them: the tree's remaining levels fold v with itself
    (each sum then comes first, in its lane order, exactly as the 16-row block adds it), and the
    first n lanes are stored. n = 16: v is the two vectors of :func:`_dots16`, through
    :func:`_store16`."""
    raise NotImplementedError("numba kernels only")


@overload(_store_sums)
def _store_sums_overload(out, r, k, v, n):
    vt = vec_type(out)
    if vt is None or not isinstance(n, types.IntegerLiteral):
        return None
    if n.literal_value == 16 and v == types.UniTuple(vt, 2):  # _dots16's two vectors
        def store16(out, r, k, v, n):
            _store16(out, r, k, v[0], v[1])
        return store16
    if v != vt:
        return None
    # v's groups hold L >> log2(n) lanes each: the levels log2(n) + 1 .. log2(L) are left
    levels = tuple(range(n.literal_value.bit_length(), vt.n.bit_length()))
    if len(levels) == 0:  # float64 in blocks of 8: one sum per lane already
        def store(out, r, k, v, n):
            vstore_first(out, r, k, v, n)
    elif len(levels) == 1:
        (l0,) = levels

        def store(out, r, k, v, n):
            vstore_first(out, r, k, vfold(v, v, l0), n)
    else:
        l0, l1 = levels

        def store(out, r, k, v, n):
            w = vfold(v, v, l0)
            vstore_first(out, r, k, vfold(w, w, l1), n)
    return store


def _dx_fold(d, W, dx):
    """dx = d W^T for d (B, F), W (K, F), dx (B, K), with F a multiple of the vector's lanes L: the
    dot products of d's rows with W's rows, a block of W's rows at a time (:func:`_dots16`; where
    registers are narrower than 64 bytes (AVX2, SSE, NEON) the 16 accumulators spill, so 8 rows in
    float32 (:func:`_dots8`) and 4 in float64 (:func:`_dots4`): 8 x 64 x 64 float32 2.3-3.4 us in
    blocks of 16 against 1.3-1.65 in blocks of 8 on a Zen 3), on 64-byte vectors, summed across
    lanes by shuffles (``simd.vfold``); no transposed copy of W. Every dot product is the same chain
    of FMAs and the same tree of lane sums whatever the block, so the results do not depend on it (a
    NaN's sign bit may: which NaN operand an add keeps is LLVM's). The last K % block dot products
    one at a time, on vectors too (``simd.vsum``; scalar loops there took dx of a 17 -> 64 layer at
    batch 8 from 0.21 to 0.50 us, measured). Only numba code calls it; a no-op for arrays the
    vectors cannot load (callers check ``lanes`` first)."""
    raise NotImplementedError("numba kernels only")


@njit(inline="always")
def _dx_leftover(d, W, dx, r, k0, K, F, L, z):
    """dx[r, k0:K] one dot product at a time, on vectors, the lanes summed (``simd.vsum``)."""
    for k in range(k0, K):
        a = z
        for f in range(0, F, L):
            a = vfma(vload(d, r, f), vload(W, k, f), a)
        dx[r, k] = vsum(a)


@functools.cache
def _make_dx_fold_impl(n: int) -> Any:
    """:func:`_dx_fold` in blocks of n = 16, 8 or 4 of W's rows (:func:`_dots16`, :func:`_dots8`,
    :func:`_dots4`), then the K % n dot products left one at a time."""
    dots = {16: _dots16, 8: _dots8, 4: _dots4}[n]

    def _dx_fold_impl(d, W, dx):
        B, F = d.shape
        K = W.shape[0]
        L = lanes(dx)
        z = vsplat(dx, 0)
        Kn = K - K % n
        for r in range(B):
            for k in range(0, Kn, n):
                _store_sums(dx, r, k, dots(d, W, r, k, F, L, z), n)
        if Kn < K:  # (a separate loop: in the one above it cost ~0.1-0.2 us at 8 x 64 x 64)
            for r in range(B):
                _dx_leftover(d, W, dx, r, Kn, K, F, L, z)

    return _dx_fold_impl


@overload(_dx_fold)
def _dx_fold_overload(d, W, dx):
    if not _vectors_load(d, W, dx):
        return lambda d, W, dx: None
    if native_vector_bytes() >= VECTOR_BYTES:
        return _make_dx_fold_impl(16)
    # Narrower registers: blocks of half a vector's lanes (measured, 64 x 64 at batch 8 for AVX2
    # (haswell, Zen 3) / SSE (x86-64), us: float32 blocks of 16 / 8 / 4 2.3-3.4 / 1.3-1.65 / 1.6-1.8
    # and 3.7 / 3.1 / 3.4; float64 5.0-7.4 / 2.6-4.3 / 2.0-3.8 and 7.3 / 7.5 / 6.2)
    return _make_dx_fold_impl(8 if vec_type(dx).n == 16 else 4)


@njit(inline="always")
def _pair_at(r, j, F, K):
    """For the dot product (r, j) of :func:`_dot_pairs`: the offsets of its rows in x and V (read
    flat, rows of K), and the pair after it in row-major order over F columns."""
    if j + 1 == F:
        return r * K, j * K, r + 1, 0
    return r * K, j * K, r, j + 1


def _dot_pairs(x, V, out):
    """out[r, j] = x[r, :] . V[j, :] for x (B, K), V (F, K), out (B, F), all C-ordered: the B F dot
    products taken 16 at a time (8 where registers are narrower than 64 bytes,
    :func:`_dot_pairs8_impl`) in out's (row-major) order, whatever B and F are, each on 64-byte
    vectors (two loads per FMA), summed across lanes by the shuffle tree of :func:`_dots16` and
    stored as one run of out. Where :func:`_dx_fold`'s blocks of 16 dot products along one row do
    not fit, a narrow output: a policy head's 8 x 2 or 8 x 6 (V = W^T), dx of a first layer with
    K < 16 (V = W). The dot products that do not fill a whole block go one at a time
    (``simd.vsum``); the K % L leftover terms of each are scalar loops, summed apart and added last.
    The vector part is a fixed order of operations; the scalar leftover loops inherit the caller's
    fast-math flags (``reassoc`` in the MLP kernels), so LLVM may vectorise them at the target's own
    width: the same bits on CPUs of one vector width, ~1 ulp apart between widths. Only numba
    code calls it; a no-op for arrays the vectors cannot load (callers check ``lanes`` first)."""
    raise NotImplementedError("numba kernels only")


@intrinsic
def _same_lanes(typingctx: Any, a: types.Type, b: types.Type, c: types.Type) -> Any:
    """The lanes of a's vectors where vectors load a, b and c, all in one dtype; else 0 (the
    overloads' ``_vectors_load`` test: they compile to a no-op for any other arrays). A constant
    made at typing time, like ``lanes``."""
    n = vec_type(a).n if _vectors_load(a, b, c) else 0

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, n)

    return types.intp(a, b, c), codegen


@njit(inline="always")
def _pairs_apply(L, K):
    """Whether :func:`_dot_pairs` is the faster way to dot products of length K, given L =
    :func:`_same_lanes` of its three arrays: vectors load them, and the dot products span two
    vectors or more (below that, the scalar leftovers dominate: :func:`_dots` is faster, measured)."""
    return L > 0 and K >= 2 * L


@njit(inline="always")
def _pairs_tail(x, V, out, nb, KL, z):
    """What :func:`_dot_pairs`' blocks leave: the K % L leftover terms of the first ``nb`` dot
    products (scalar loops), then the dot products from ``nb`` on one at a time, on vectors
    (``simd.vsum``), with their leftover terms. Either way a dot product is its vector part's tree
    of lane sums plus its leftover terms' sum, so the block size does not change any result."""
    K = x.shape[1]
    F = V.shape[0]
    L = lanes(out)
    if KL < K:
        for p in range(nb):
            q, i = p // F, p % F
            t = out.dtype.type(0)
            for k in range(KL, K):
                t += x[q, k] * V[i, k]
            out[q, i] += t
    for p in range(nb, x.shape[0] * F):
        q, i = p // F, p % F
        a = z
        for f in range(0, KL, L):
            a = vfma(vload(x, q, f), vload(V, i, f), a)
        s = vsum(a)
        if KL < K:  # the leftover terms summed apart and added last, as for the blocks
            t = out.dtype.type(0)
            for k in range(KL, K):
                t += x[q, k] * V[i, k]
            s += t
        out[q, i] = s


def _dot_pairs_impl(x, V, out):
    B, K = x.shape
    F = V.shape[0]
    L = lanes(out)
    KL = K - K % L
    n = B * F
    n16 = n - n % 16
    z = vsplat(out, 0)
    r = j = 0  # the next block's first pair
    for p0 in range(0, n16, 16):
        x0, v0, r, j = _pair_at(r, j, F, K)
        x1, v1, r, j = _pair_at(r, j, F, K)
        x2, v2, r, j = _pair_at(r, j, F, K)
        x3, v3, r, j = _pair_at(r, j, F, K)
        x4, v4, r, j = _pair_at(r, j, F, K)
        x5, v5, r, j = _pair_at(r, j, F, K)
        x6, v6, r, j = _pair_at(r, j, F, K)
        x7, v7, r, j = _pair_at(r, j, F, K)
        x8, v8, r, j = _pair_at(r, j, F, K)
        x9, v9, r, j = _pair_at(r, j, F, K)
        x10, v10, r, j = _pair_at(r, j, F, K)
        x11, v11, r, j = _pair_at(r, j, F, K)
        x12, v12, r, j = _pair_at(r, j, F, K)
        x13, v13, r, j = _pair_at(r, j, F, K)
        x14, v14, r, j = _pair_at(r, j, F, K)
        x15, v15, r, j = _pair_at(r, j, F, K)
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = a9 = a10 = a11 = a12 = a13 = a14 = a15 = z
        for f in range(0, KL, L):
            a0 = vfma(vload(x, 0, x0 + f), vload(V, 0, v0 + f), a0)
            a1 = vfma(vload(x, 0, x1 + f), vload(V, 0, v1 + f), a1)
            a2 = vfma(vload(x, 0, x2 + f), vload(V, 0, v2 + f), a2)
            a3 = vfma(vload(x, 0, x3 + f), vload(V, 0, v3 + f), a3)
            a4 = vfma(vload(x, 0, x4 + f), vload(V, 0, v4 + f), a4)
            a5 = vfma(vload(x, 0, x5 + f), vload(V, 0, v5 + f), a5)
            a6 = vfma(vload(x, 0, x6 + f), vload(V, 0, v6 + f), a6)
            a7 = vfma(vload(x, 0, x7 + f), vload(V, 0, v7 + f), a7)
            a8 = vfma(vload(x, 0, x8 + f), vload(V, 0, v8 + f), a8)
            a9 = vfma(vload(x, 0, x9 + f), vload(V, 0, v9 + f), a9)
            a10 = vfma(vload(x, 0, x10 + f), vload(V, 0, v10 + f), a10)
            a11 = vfma(vload(x, 0, x11 + f), vload(V, 0, v11 + f), a11)
            a12 = vfma(vload(x, 0, x12 + f), vload(V, 0, v12 + f), a12)
            a13 = vfma(vload(x, 0, x13 + f), vload(V, 0, v13 + f), a13)
            a14 = vfma(vload(x, 0, x14 + f), vload(V, 0, v14 + f), a14)
            a15 = vfma(vload(x, 0, x15 + f), vload(V, 0, v15 + f), a15)
        s0, s1 = _tree16(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15)
        _store16(out, 0, p0, s0, s1)  # out read flat: pairs p0 .. p0 + 15
    _pairs_tail(x, V, out, n16, KL, z)


def _dot_pairs8_impl(x, V, out):
    """:func:`_dot_pairs` in blocks of 8 dot products (8 accumulators, three levels of the same
    tree, :func:`_store_sums`), where a 64-byte vector is several registers (AVX2, SSE, NEON) and
    16 accumulators spill: the same bits, 1.25-1.6x faster on a Zen 3 (float32, K = 64: 8 x 2
    0.14 -> 0.10 us, 256 x 2 3.5 -> 2.7, 256 x 6 10.7 -> 8.2)."""
    B, K = x.shape
    F = V.shape[0]
    L = lanes(out)
    KL = K - K % L
    n8 = B * F - B * F % 8
    z = vsplat(out, 0)
    r = j = 0  # the next block's first pair
    for p0 in range(0, n8, 8):
        x0, v0, r, j = _pair_at(r, j, F, K)
        x1, v1, r, j = _pair_at(r, j, F, K)
        x2, v2, r, j = _pair_at(r, j, F, K)
        x3, v3, r, j = _pair_at(r, j, F, K)
        x4, v4, r, j = _pair_at(r, j, F, K)
        x5, v5, r, j = _pair_at(r, j, F, K)
        x6, v6, r, j = _pair_at(r, j, F, K)
        x7, v7, r, j = _pair_at(r, j, F, K)
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = z
        for f in range(0, KL, L):
            a0 = vfma(vload(x, 0, x0 + f), vload(V, 0, v0 + f), a0)
            a1 = vfma(vload(x, 0, x1 + f), vload(V, 0, v1 + f), a1)
            a2 = vfma(vload(x, 0, x2 + f), vload(V, 0, v2 + f), a2)
            a3 = vfma(vload(x, 0, x3 + f), vload(V, 0, v3 + f), a3)
            a4 = vfma(vload(x, 0, x4 + f), vload(V, 0, v4 + f), a4)
            a5 = vfma(vload(x, 0, x5 + f), vload(V, 0, v5 + f), a5)
            a6 = vfma(vload(x, 0, x6 + f), vload(V, 0, v6 + f), a6)
            a7 = vfma(vload(x, 0, x7 + f), vload(V, 0, v7 + f), a7)
        t0, t1, t2, t3 = vfold(a0, a1, 1), vfold(a2, a3, 1), vfold(a4, a5, 1), vfold(a6, a7, 1)
        _store_sums(out, 0, p0, vfold(vfold(t0, t1, 2), vfold(t2, t3, 2), 3), 8)  # out read flat
    _pairs_tail(x, V, out, n8, KL, z)


@overload(_dot_pairs)
def _dot_pairs_overload(x, V, out):
    if not _vectors_load(x, V, out):
        return lambda x, V, out: None
    return _dot_pairs_impl if native_vector_bytes() >= VECTOR_BYTES else _dot_pairs8_impl


def _narrow_rows(x, W, out):
    """out = x W for x (B, K), W (K, F) with F < L (a head): W's rows read as they are, no
    transposed copy. Each row of out is one vector whose first F lanes are used; for each k, one
    masked load of W's row k and x[r, k] in every lane, one FMA. Four rows at a time (four
    accumulator chains, and each load of W used four times); a leftover row keeps four partial sums
    over k mod 4 instead, added ((s0 + s1) + (s2 + s3)), so that its chain of FMAs is not one long
    dependency. The cost grows with B K whatever F is, where :func:`_dot_pairs` needs B F / 16
    blocks but a transposed W (see :func:`_rows_apply` for where each is used). Only numba code
    calls it; a no-op for arrays the vectors cannot load (callers check :func:`_rows_apply`)."""
    raise NotImplementedError("numba kernels only")


def _narrow_rows_impl(x, W, out):
    B, K = x.shape
    F = W.shape[1]
    z = vsplat(out, 0)
    r = 0
    while r + 4 <= B:
        a0 = a1 = a2 = a3 = z
        for k in range(K):
            w = vload_first(W, k, 0, F)
            a0 = vfma(vsplat(out, x[r, k]), w, a0)
            a1 = vfma(vsplat(out, x[r + 1, k]), w, a1)
            a2 = vfma(vsplat(out, x[r + 2, k]), w, a2)
            a3 = vfma(vsplat(out, x[r + 3, k]), w, a3)
        vstore_first(out, r, 0, a0, F)
        vstore_first(out, r + 1, 0, a1, F)
        vstore_first(out, r + 2, 0, a2, F)
        vstore_first(out, r + 3, 0, a3, F)
        r += 4
    K4 = K - K % 4
    for q in range(r, B):
        a0 = a1 = a2 = a3 = z
        for k in range(0, K4, 4):
            a0 = vfma(vsplat(out, x[q, k]), vload_first(W, k, 0, F), a0)
            a1 = vfma(vsplat(out, x[q, k + 1]), vload_first(W, k + 1, 0, F), a1)
            a2 = vfma(vsplat(out, x[q, k + 2]), vload_first(W, k + 2, 0, F), a2)
            a3 = vfma(vsplat(out, x[q, k + 3]), vload_first(W, k + 3, 0, F), a3)
        a0 = vadd(vadd(a0, a1), vadd(a2, a3))
        for k in range(K4, K):
            a0 = vfma(vsplat(out, x[q, k]), vload_first(W, k, 0, F), a0)
        vstore_first(out, q, 0, a0, F)


@njit(inline="always")
def _rows_apply(W, out):
    """Whether :func:`_narrow_rows` takes out = x W (then ``_dense`` calls it directly): vectors
    load W and out, in one dtype, out's rows fit in one vector, and it is the faster way. It is
    wherever W has fewer than 32 rows; from 32 on, where out has 4 or more columns, or 3 up to batch
    16, 2 up to batch 8, 1 up to batch 2 (:func:`_dot_pairs` and the loops are faster beyond).
    Measured, speed-up of the new path over the old (float32; float64 alike or better), K = 64:
    F = 1: 2.6x at batch 1, 1.3x at 2, 0.9x at 3, 0.4x at 256; F = 2: 2.7x, 1.1x at 8, 0.9x at 16;
    F = 3: 1.2x at 16, 0.9x at 64; F = 4 / 6: 2.7x at 1, 1.2x / 1.6x at 256. K = 8 and 16: 1.6-5.7x
    at every batch from 1 to 256."""
    B, F = out.shape
    L = lanes(out)
    if not (lanes(W) == L > F):
        return False
    if W.shape[0] < 32 or F >= 4:
        return True
    return B <= (2 if F == 1 else 8 if F == 2 else 16)


@overload(_narrow_rows)
def _narrow_rows_overload(x, W, out):
    return _narrow_rows_impl if _vectors_load(W, out) else (lambda x, W, out: None)


@njit(**_MLP_JIT)
def _transposed(W):
    """W (K, F) -> a new C-ordered W^T (F, K). Four rows of W per pass, so each row of W^T gets four
    consecutive stores (1.8x faster than element by element at 64 x 64, measured)."""
    K, F = W.shape
    WT = np.empty((F, K), W.dtype)
    K4 = K - K % 4
    for k in range(0, K4, 4):
        for j in range(F):
            w0, w1, w2, w3 = W[k, j], W[k + 1, j], W[k + 2, j], W[k + 3, j]
            WT[j, k] = w0
            WT[j, k + 1] = w1
            WT[j, k + 2] = w2
            WT[j, k + 3] = w3
    for k in range(K4, K):
        for j in range(F):
            WT[j, k] = W[k, j]
    return WT


# Strict float semantics (no reassociation, no contraction) and LLVM's SLP vectoriser: the sums come
# out the same in every kernel this is called from, so the fused act (kernels/cpu_act.py) and
# MLP.forward agree bit for bit. (With reassociation the vectoriser picked a different summation
# order depending on the caller: the act's bit-identity test caught it.)
@njit(cache=True, error_model="numpy", fastmath=False)
def _dots(x, V, out):
    """out[r, j] = x[r, :] . V[j, :] for x (B, K), V (F, K): dot products along contiguous rows.

    Used where out's rows are too short to vectorise along j: a layer with fewer than 8 outputs
    (V = W^T) and dx = d W^T at batch < 4 (V = W, no transpose). Each dot product is kept as 8
    partial sums (lane l adds the terms k = l mod 8 in order, up to the last multiple of 8), stored
    together and added as a fixed tree, then the leftover terms. When :func:`_prepare` compiled
    this function, the SLP vectoriser turns the 8 lanes into one SIMD accumulator. Indices are
    unsigned: numba's wraparound for negative ones would hide the consecutive addresses from the
    vectoriser."""
    B, K = x.shape
    F = V.shape[0]
    zero = out.dtype.type(0)
    if K < 8:  # no 8-lane block: the leftover loop alone, the same sum as below (zero + t)
        for r in range(B):
            for j in range(F):
                t = zero
                for k in range(K):
                    t += x[r, k] * V[j, k]
                out[r, j] = zero + t
        return
    K8 = K - K % 8
    u = np.uint64
    P = np.empty(8, out.dtype)
    for r in range(B):
        ur = u(r)
        for j in range(F):
            uj = u(j)
            s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = zero
            for k0 in range(0, K8, 8):
                k = u(k0)
                s0 += x[ur, k] * V[uj, k]
                s1 += x[ur, k + u(1)] * V[uj, k + u(1)]
                s2 += x[ur, k + u(2)] * V[uj, k + u(2)]
                s3 += x[ur, k + u(3)] * V[uj, k + u(3)]
                s4 += x[ur, k + u(4)] * V[uj, k + u(4)]
                s5 += x[ur, k + u(5)] * V[uj, k + u(5)]
                s6 += x[ur, k + u(6)] * V[uj, k + u(6)]
                s7 += x[ur, k + u(7)] * V[uj, k + u(7)]
            P[0], P[1], P[2], P[3], P[4], P[5], P[6], P[7] = s0, s1, s2, s3, s4, s5, s6, s7
            s = ((P[0] + P[1]) + (P[2] + P[3])) + ((P[4] + P[5]) + (P[6] + P[7]))
            t = zero  # the K % 8 leftover terms, summed apart (folded into s, they stop the SLP)
            for k in range(K8, K):
                t += x[r, k] * V[j, k]
            out[r, j] = s + t


@njit(cache=True, error_model="numpy", fastmath=False)
def _dense_narrow(x, W, b, out):
    """out = x W + b for a layer with fewer than 8 outputs (a policy or value head) where
    :func:`_narrow_rows` does not apply, the bias added last: :func:`_dot_pairs` against W^T where
    it applies (64 -> 2 at batch 8: 0.09 us against 0.32 for :func:`_dots`, after the transpose);
    else :func:`_dots` against W^T (64 -> 6 at batch 8: 0.36 us, against 0.87 us through
    :func:`_mm_acc`, with the transpose)."""
    if _pairs_apply(_same_lanes(x, W, out), x.shape[1]):  # W^T: W's dtype, C-ordered
        _dot_pairs(x, _transposed(W), out)
    else:
        _dots(x, _transposed(W), out)
    B, F = out.shape
    for r in range(B):
        for j in range(F):
            out[r, j] += b[j]


_PREPARED: set = set()  # dtypes for which _prepare ran in this process


def _prepare(dt: np.dtype) -> None:
    """Compile :func:`_dots` for dtype dt with the SLP vectoriser on, before any kernel that calls
    it is compiled (a callee's machine code is built once, with the setting of its own
    compilation). Called by the MLP and act dispatch states. Signatures: C-ordered arrays, x
    writable or read-only. Any other signature still compiles (same results, without SLP)."""
    if dt in _PREPARED:
        return
    from numba import from_dtype, types

    f = from_dtype(dt)
    W = types.Array(f, 2, "C")
    for ro in (False, True):
        _compile_with_slp(_dots, (types.Array(f, 2, "C", readonly=ro), W, W), keep_enabled=True)
    _PREPARED.add(dt)


@njit(**_MLP_JIT, inline="always")
def _dense(x, W, b, out, act):
    """out = act(x W + b): the bias, then :func:`_mm_acc`, then the activation in place. A layer
    with fewer than 8 outputs takes :func:`_narrow_rows` then the bias where :func:`_rows_apply`
    says so, else :func:`_dense_narrow` from batch :data:`NARROW_MIN_BATCH`, or from batch 2 where
    its vector dot products apply. (The bias is added last on those paths, each sum in a fixed
    order: the fused act and ``MLP.forward`` agree bit for bit.)"""
    B, F = out.shape
    if F < 8 and _rows_apply(W, out):
        _narrow_rows(x, W, out)
        for r in range(B):
            for j in range(F):
                out[r, j] += b[j]
    elif F < 8 and (B >= NARROW_MIN_BATCH or (B >= 2 and _pairs_apply(_same_lanes(x, W, out), x.shape[1]))):
        _dense_narrow(x, W, b, out)
    else:
        for r in range(B):
            for j in range(F):
                out[r, j] = b[j]
        if B < 4:
            _mm_acc_rows(x, W, out, 0)
        else:
            _mm_acc(x, W, out)
    _activate(out, act)


@njit(**_MLP_JIT)
def _trunk_forward(x, Ws, bs, act):
    """[x, h_1, ..., h_L]: a shared trunk's forward (``ActorCritic(shared=True)``), every layer
    activated, its output too, each through :func:`_dense` as ``MLP.forward`` runs it. The fused act
    (``cpu_act.py``) takes the last, the fused update (``cpu_update.py``) all of them."""
    B = x.shape[0]
    hs = [x]
    h = x
    for i in range(len(Ws)):
        out = np.empty((B, Ws[i].shape[1]), x.dtype)
        _dense(h, Ws[i], bs[i], out, act)
        hs.append(out)
        h = out
    return hs


@njit(**_MLP_JIT)
def _act_back(d, h, act):
    """d <- d * act'(z) in place, written with the saved output h (ACT_NONE: no-op)."""
    B, F = d.shape
    one, zero = np.float32(1), np.float32(0)  # exact in float64 too; no int promotion
    if act == ACT_RELU:
        for r in range(B):
            for j in range(F):
                d[r, j] *= one if h[r, j] > 0 else zero
    elif act != ACT_NONE:
        for r in range(B):
            for j in range(F):
                d[r, j] *= one - h[r, j] * h[r, j]


def _col_sums(d, out):
    """out[j] = d[0, j] + d[1, j] + ... + d[B - 1, j], added in that order: a bias gradient (also
    used by kernels/cpu_update.py).

    Only numba code calls it. Whole vectors of columns (d C-ordered 2-d, out a C-ordered row of its
    dtype) are summed in registers, 4 vectors at a time, the rest by a loop over rows that keeps out
    in memory: the same additions in the same order either way."""
    raise NotImplementedError("numba kernels only")


def _col_sums_vectors(d, out):
    B, F = d.shape
    L = lanes(d)
    o = _view_at(out, 0, 1, F)  # out as a (1, F) row, which the vectors store to
    j = 0
    while j + 4 * L <= F:
        c = _row4(d, 0, j, L)
        for q in range(1, B):
            w = _row4(d, q, j, L)
            c = vadd(c[0], w[0]), vadd(c[1], w[1]), vadd(c[2], w[2]), vadd(c[3], w[3])
        _store4(o, 0, j, L, c)
        j += 4 * L
    while j + L <= F:
        e = vload(d, 0, j)
        for q in range(1, B):
            e = vadd(e, vload(d, q, j))
        vstore(o, 0, j, e)
        j += L
    _col_sums_loop(d, out, j)


@njit(inline="always")
def _col_sums_loop(d, out, j0):
    """Columns j0 .. F of :func:`_col_sums`, by a loop over rows."""
    B, F = d.shape
    for j in range(j0, F):
        out[j] = d[0, j]
    for q in range(1, B):
        for j in range(j0, F):
            out[j] += d[q, j]


# fastmath off: an overload takes its caller's flags otherwise, and with reassoc LLVM reordered a column's
# additions (the critic head's one column, summed down the batch) differently in each caller it was
# compiled into: on 16-byte vectors (NUMBA_CPU_NAME=generic) the run that compiled the kernels and a run
# loading them from the cache gave critic.b2 gradients 1 ulp apart, and the two runs went apart
@overload(_col_sums, jit_options={"fastmath": False})
def _col_sums_overload(d, out):
    if _vectors_load(d) and _row_of(out, d):
        return _col_sums_vectors
    return lambda d, out: _col_sums_loop(d, out, 0)


@njit(**_MLP_JIT)
def _dense_back(d, x, W, dW, db, dx, want_dx):
    """Given d = dL/dz (B, F) of z = x W + b: dW = x^T d, db = sum_B d, and (if want_dx) dx = d W^T.

    dW: :func:`_weight_grad` from batch 4 up; below, a sum of B outer products (1.4x faster at batch 1).
    dx: below batch :data:`DX_FOLD_MAX_BATCH`, with C-ordered arrays, F a multiple of the lanes and
    K >= 16, :func:`_dx_fold` (64 x 64 float32, batch 8: 0.89 us against 1.79 through a transpose
    and 2.11 for scalar dot products, measured); else from batch :data:`DX_MM_MIN_BATCH` up (and
    K >= 8), W^T made contiguous, then :func:`_mm_acc` vectorised along k; else :func:`_dots` over
    j against the rows of W, which needs no transpose. A layer with K < 16 inputs goes through
    :func:`_dot_pairs` against W's rows where it applies (4 -> 64 at batch 8: 0.17 us against 0.62
    for :func:`_dots`, measured)."""
    B, F = d.shape
    K = W.shape[0]
    _col_sums(d, db)
    if B >= 4:
        _weight_grad(x, d, dW)
    else:
        for k in range(K):
            a0 = x[0, k]
            for j in range(F):
                dW[k, j] = a0 * d[0, j]
            for q in range(1, B):
                a0 = x[q, k]
                for j in range(F):
                    dW[k, j] += a0 * d[q, j]
    if not want_dx:
        return
    L = _same_lanes(d, W, dx)
    if L > 0 and F % L == 0 and K >= 16 and B < DX_FOLD_MAX_BATCH:
        _dx_fold(d, W, dx)
    elif K < 16 and _pairs_apply(L, F):  # a first layer's few inputs
        _dot_pairs(d, W, dx)
    elif K >= 8 and B >= DX_MM_MIN_BATCH:
        dx[:] = 0
        _mm_acc(d, _transposed(W), dx)
    else:
        _dots(d, W, dx)


# The parameters come as the MLP's one flat buffer P (nn.MLP.flat: W0, b0, W1, b1, ... packed in
# that order): one argument instead of one per array (numba unboxes each array argument, ~0.035 us
# apiece). The gradients go to one (K + 1, F) block per layer, dW then db as in P: Python gets the
# two gradient arrays from it as G[:K] and G[K], plain slices (0.13 us), where views of one flat
# buffer need a reshape for each dW (0.25 us). Layer widths come from the shapes of x and the
# outputs. One entry point per depth, loops over layers inlined.
@njit(**_MLP_JIT, inline="always")
def _wb(P, o, K, F):
    """Views of W (K, F) and b (F,) packed at P[o:] (P read flat), and the offset of the next layer."""
    n = o + K * F
    if o < 0 or K < 0 or F < 0 or n + F > P.size:
        raise IndexError("layer outside the parameter buffer")
    return _view_at(P, o, K, F), _view_at(P, n, 1, F)[0], n + F


@njit(**_MLP_JIT, inline="always")
def _layer(x, P, o, out, act):
    """out = act(x W + b) for the layer packed at P[o:]; returns the next layer's offset."""
    W, b, o = _wb(P, o, x.shape[1], out.shape[1])
    _dense(x, W, b, out, act)
    return o


@njit(**_MLP_JIT)
def _forward1(x, P, h1, act, act_out):
    _layer(x, P, 0, h1, act_out)


@njit(**_MLP_JIT)
def _forward2(x, P, h1, h2, act, act_out):
    o = _layer(x, P, 0, h1, act)
    _layer(h1, P, o, h2, act_out)


@njit(**_MLP_JIT)
def _forward3(x, P, h1, h2, h3, act, act_out):
    o = _layer(x, P, 0, h1, act)
    o = _layer(h1, P, o, h2, act)
    _layer(h2, P, o, h3, act_out)


@njit(**_MLP_JIT)
def _forward4(x, P, h1, h2, h3, h4, act, act_out):
    o = _layer(x, P, 0, h1, act)
    o = _layer(h1, P, o, h2, act)
    o = _layer(h2, P, o, h3, act)
    _layer(h3, P, o, h4, act_out)


@njit(**_MLP_JIT, inline="always")
def _top(dy, h, act_out):
    """dL/dz of the last layer: dy itself when it is linear, else a scaled copy."""
    if act_out == ACT_NONE:
        return dy
    d = dy.copy()
    _act_back(d, h, act_out)
    return d


@njit(**_MLP_JIT, inline="always")
def _after(o, x, h):
    """Offset of the layer after the one packed at o, whose input is x and output h."""
    return o + x.shape[1] * h.shape[1] + h.shape[1]


@njit(**_MLP_JIT, inline="always")
def _layer_back(d, x, P, G, o, dx, want_dx):
    """Backward through the layer packed at P[o:], given d = dL/dz: dW to G[:K] and db to G[K], G the
    layer's (K + 1, F) gradient block (W then b, packed as in P)."""
    K, F = x.shape[1], d.shape[1]
    W, _, _ = _wb(P, o, K, F)
    dW, db, _ = _wb(G, 0, K, F)
    _dense_back(d, x, W, dW, db, dx, want_dx)


@njit(**_MLP_JIT, inline="always")
def _hidden_back(d, x, P, G, o, act):
    """Backward through a hidden layer whose input x = act(previous z): returns dL/d(previous z)."""
    dx = np.empty((d.shape[0], x.shape[1]), d.dtype)
    _layer_back(d, x, P, G, o, dx, True)
    _act_back(dx, x, act)
    return dx


@njit(**_MLP_JIT)
def _fits(a, B, width, P):
    """a is (B, width) with P's dtype (a compile-time constant): the backward's check of dy and the
    cache, so that Python need not look at each array (0.6 us there, ~nothing here)."""
    return a.dtype == P.dtype and a.ndim == 2 and a.shape[0] == B and a.shape[1] == width


# The backward entry points are called through numba's dispatcher, which types every argument: a
# cache in another memory layout gets its own compiled version. G0, G1, ... are the layers' gradient
# blocks, (K + 1, F) each (dW, then db). S holds the MLP's layer widths, then its two act codes
# (hidden, output); each entry point returns False, computing nothing, unless dy and the cache fit
# those widths.
@njit(**_MLP_JIT)
def _backward1(dy, x, h1, P, G0, dx, want_dx, S):
    B = dy.shape[0]
    act_out = S[3]
    if not (_fits(dy, B, S[1], P) and _fits(x, B, S[0], P) and _fits(h1, B, S[1], P)):
        return False
    _layer_back(_top(dy, h1, act_out), x, P, G0, 0, dx, want_dx)
    return True


@njit(**_MLP_JIT)
def _backward2(dy, x, h1, h2, P, G0, G1, dx, want_dx, S):
    B = dy.shape[0]
    act, act_out = S[3], S[4]
    if not (_fits(dy, B, S[2], P) and _fits(x, B, S[0], P) and _fits(h1, B, S[1], P)
            and _fits(h2, B, S[2], P)):
        return False
    o1 = _after(0, x, h1)
    d = _hidden_back(_top(dy, h2, act_out), h1, P, G1, o1, act)
    _layer_back(d, x, P, G0, 0, dx, want_dx)
    return True


@njit(**_MLP_JIT)
def _backward3(dy, x, h1, h2, h3, P, G0, G1, G2, dx, want_dx, S):
    B = dy.shape[0]
    act, act_out = S[4], S[5]
    if not (_fits(dy, B, S[3], P) and _fits(x, B, S[0], P) and _fits(h1, B, S[1], P)
            and _fits(h2, B, S[2], P) and _fits(h3, B, S[3], P)):
        return False
    o1 = _after(0, x, h1)
    o2 = _after(o1, h1, h2)
    d = _hidden_back(_top(dy, h3, act_out), h2, P, G2, o2, act)
    d = _hidden_back(d, h1, P, G1, o1, act)
    _layer_back(d, x, P, G0, 0, dx, want_dx)
    return True


@njit(**_MLP_JIT)
def _backward4(dy, x, h1, h2, h3, h4, P, G0, G1, G2, G3, dx, want_dx, S):
    B = dy.shape[0]
    act, act_out = S[5], S[6]
    if not (_fits(dy, B, S[4], P) and _fits(x, B, S[0], P) and _fits(h1, B, S[1], P)
            and _fits(h2, B, S[2], P) and _fits(h3, B, S[3], P) and _fits(h4, B, S[4], P)):
        return False
    o1 = _after(0, x, h1)
    o2 = _after(o1, h1, h2)
    o3 = _after(o2, h2, h3)
    d = _hidden_back(_top(dy, h4, act_out), h3, P, G3, o3, act)
    d = _hidden_back(d, h2, P, G2, o2, act)
    d = _hidden_back(d, h1, P, G1, o1, act)
    _layer_back(d, x, P, G0, 0, dx, want_dx)
    return True


_FORWARD = (None, _forward1, _forward2, _forward3, _forward4)
_BACKWARD = (None, _backward1, _backward2, _backward3, _backward4)
MAX_LAYERS = 4
"""Deepest MLP with a fused kernel; deeper ones keep the numpy path."""
_ACT_CODES = {("tanh", True): ACT_TANH_F32, ("tanh", False): ACT_TANH,
              ("relu", True): ACT_RELU, ("relu", False): ACT_RELU}
_NO_DX = {_F32: np.empty((0, 0), _F32), _F64: np.empty((0, 0), _F64)}  # never written


def _packed(mlp: Any) -> np.ndarray | None:
    """``mlp.flat`` when every parameter is still the view of it that ``nn.MLP`` made (same place,
    shape, dtype, C order), so that the kernels may read the parameters there; else None."""
    P, params, sizes = getattr(mlp, "flat", None), mlp.params, mlp.sizes
    n = mlp.n_layers
    if type(P) is not np.ndarray or P.ndim != 1 or not P.flags.c_contiguous:
        return None
    if list(params) != [k for i in range(n) for k in (f"W{i}", f"b{i}")]:
        return None
    shapes = [s for i in range(n) for s in ((sizes[i], sizes[i + 1]), (sizes[i + 1],))]
    at, o = P.ctypes.data, 0
    for a, s in zip(params.values(), shapes, strict=True):
        if (type(a) is not np.ndarray or a.dtype is not P.dtype or a.shape != s or not a.flags.c_contiguous
                or a.ctypes.data != at + o * P.itemsize):
            return None
        o += a.size
    return P if o == P.size else None


class _State:
    """Per-MLP dispatch state, kept in ``mlp.__dict__["_numba_state"]``.

    Valid while ``mlp.params`` is the same :class:`minippo.nn.Params` dict at the same ``version``
    (no name rebound since); the optimiser and checkpoint loading write parameters in place, which
    keeps it valid. Holds the layout verdict (parameters packed in ``mlp.flat``), the act codes, the
    forward's compiled entry point, the backward's dispatcher and the Python that calls them for this
    depth. Outputs are allocated fresh on every call: PPO keeps several caches alive at once, and
    reusing memory safely would need reference-count tricks that free-threaded Python does not
    guarantee (~1 us per forward+backward, measured).
    """

    __slots__ = ("params", "version", "P", "dt", "sizes", "blocks", "act", "act_out", "fwd", "bwd",
                 "run_forward", "run_backward", "max_batch", "by_shape", "S", "cache_meta", "strict",
                 "xmeta")

    def __init__(self, mlp: Any) -> None:
        self.params = mlp.params
        self.version = getattr(mlp.params, "version", None)  # a plain dict: never valid (None)
        P = _packed(mlp) if self.version is not None and mlp.n_layers <= MAX_LAYERS else None
        self.P = P
        if P is None or P.dtype not in _FLOATS:
            self.dt = None  # matches no input dtype: numpy
            return
        dt = self.dt = P.dtype
        sizes = self.sizes = tuple(mlp.sizes)
        self.blocks = tuple((k + 1, f) for k, f in zip(sizes[:-1], sizes[1:], strict=True))  # W; b
        self.act = _ACT_CODES[mlp.activation, dt is _F32]
        self.act_out = self.act if mlp.activate_output else ACT_NONE
        n = mlp.n_layers
        self.fwd = _entry_after_first_call(self, _FORWARD[n])
        self.bwd = _BACKWARD[n]
        self.run_forward, self.run_backward = _RUN_FORWARD[n], _RUN_BACKWARD[n]
        _prepare(dt)  # the heads' SLP-vectorised layer, before these kernels are compiled
        # x.shape -> the forward's output shapes, for the batch sizes it takes
        self.max_batch = max_batch(sizes)
        self.by_shape = {(B, sizes[0]): tuple((B, s) for s in sizes[1:])
                         for B in range(1, self.max_batch + 1)}
        # the widths the backward checks the cache against, then the two act codes (one array
        # argument instead of three: numba unboxes each argument, ~0.04 us per scalar)
        self.S = np.array([*sizes, self.act, self.act_out], np.int64)
        self.cache_meta = [(dt, 2)] * (n + 1)  # (dtype, ndim) of x, h_1, ..., h_n in a cache
        self.strict = False  # check cache_meta in Python (after a cache numba could not type)
        self.xmeta = (sizes[0] * dt.itemsize, dt.itemsize)  # C-order row strides of x


def _state(mlp: Any) -> _State:
    """The dispatch state for the current parameters (rebuilt after a rebinding write)."""
    st = mlp.__dict__.get("_numba_state")
    p = mlp.params
    if st is None or st.params is not p or st.version != getattr(p, "version", None):
        mlp.__dict__["_numba_state"] = st = _State(mlp)
    return st


def _entry(dispatcher: Any, args: tuple) -> Any:
    """The compiled overload's entry point for exactly these argument types (after a first call
    through ``dispatcher``), or the dispatcher itself when there is none.

    Calling the entry point skips numba's per-call type dispatch (~0.15 us for a forward). It does
    not check argument types (numba's array unboxing checks only that it gets an ndarray of the right
    itemsize), so callers may use it only for arguments whose class, dtype, ndim and C layout they
    have checked to be the ones typed here. Flags that can differ between calls without a type
    check (readonly, aligned) do not change the machine code's behaviour: the kernels never write
    their inputs, and loads are unaligned-safe.
    """
    from numba import typeof

    ov = getattr(dispatcher, "overloads", {}).get(tuple(typeof(a) for a in args))
    return dispatcher if ov is None else ov.entry_point


def _entry_after_first_call(st: _State, dispatcher: Any) -> Any:
    """What ``st.fwd`` starts as: calls ``dispatcher`` (which compiles, or loads from the disk
    cache), then puts the compiled entry point (:func:`_entry`) in its own place on ``st``."""

    def first_call(*args: Any) -> None:
        dispatcher(*args)
        st.fwd = _entry(dispatcher, args)

    return first_call


# The Python around the kernels, one function per depth with the arrays named one by one:
# at depth 3 this costs 0.3 us less per forward than allocating in a loop and calling with *args
# (list(map(np.empty, ...)) alone is 0.15 us slower than three named np.empty calls, measured).
def _forward_run1(st: _State, x: np.ndarray, s: tuple) -> list[np.ndarray]:
    h1 = np.empty(s[0], st.dt)
    st.fwd(x, st.P, h1, st.act, st.act_out)
    return [x, h1]


def _forward_run2(st: _State, x: np.ndarray, s: tuple) -> list[np.ndarray]:
    dt = st.dt
    h1, h2 = np.empty(s[0], dt), np.empty(s[1], dt)
    st.fwd(x, st.P, h1, h2, st.act, st.act_out)
    return [x, h1, h2]


def _forward_run3(st: _State, x: np.ndarray, s: tuple) -> list[np.ndarray]:
    dt = st.dt
    h1, h2, h3 = np.empty(s[0], dt), np.empty(s[1], dt), np.empty(s[2], dt)
    st.fwd(x, st.P, h1, h2, h3, st.act, st.act_out)
    return [x, h1, h2, h3]


def _forward_run4(st: _State, x: np.ndarray, s: tuple) -> list[np.ndarray]:
    dt = st.dt
    h1, h2, h3, h4 = np.empty(s[0], dt), np.empty(s[1], dt), np.empty(s[2], dt), np.empty(s[3], dt)
    st.fwd(x, st.P, h1, h2, h3, h4, st.act, st.act_out)
    return [x, h1, h2, h3, h4]


def _backward_run1(st: _State, dy: np.ndarray, cache: list, dx: np.ndarray, want_dx: bool) -> dict | None:
    G0 = np.empty(st.blocks[0], st.dt)
    if not st.bwd(dy, *cache, st.P, G0, dx, want_dx, st.S):
        return None
    return {"W0": G0[:-1], "b0": G0[-1]}


def _backward_run2(st: _State, dy: np.ndarray, cache: list, dx: np.ndarray, want_dx: bool) -> dict | None:
    dt, (s0, s1) = st.dt, st.blocks
    G0, G1 = np.empty(s0, dt), np.empty(s1, dt)
    if not st.bwd(dy, *cache, st.P, G0, G1, dx, want_dx, st.S):
        return None
    return {"W0": G0[:-1], "b0": G0[-1], "W1": G1[:-1], "b1": G1[-1]}


def _backward_run3(st: _State, dy: np.ndarray, cache: list, dx: np.ndarray, want_dx: bool) -> dict | None:
    dt, (s0, s1, s2) = st.dt, st.blocks
    G0, G1, G2 = np.empty(s0, dt), np.empty(s1, dt), np.empty(s2, dt)
    if not st.bwd(dy, *cache, st.P, G0, G1, G2, dx, want_dx, st.S):
        return None
    return {"W0": G0[:-1], "b0": G0[-1], "W1": G1[:-1], "b1": G1[-1], "W2": G2[:-1], "b2": G2[-1]}


def _backward_run4(st: _State, dy: np.ndarray, cache: list, dx: np.ndarray, want_dx: bool) -> dict | None:
    dt, (s0, s1, s2, s3) = st.dt, st.blocks
    G0, G1, G2, G3 = np.empty(s0, dt), np.empty(s1, dt), np.empty(s2, dt), np.empty(s3, dt)
    if not st.bwd(dy, *cache, st.P, G0, G1, G2, G3, dx, want_dx, st.S):
        return None
    return {"W0": G0[:-1], "b0": G0[-1], "W1": G1[:-1], "b1": G1[-1], "W2": G2[:-1], "b2": G2[-1],
            "W3": G3[:-1], "b3": G3[-1]}


_RUN_FORWARD = (None, _forward_run1, _forward_run2, _forward_run3, _forward_run4)
_RUN_BACKWARD = (None, _backward_run1, _backward_run2, _backward_run3, _backward_run4)


def mlp_forward(mlp: Any, x: np.ndarray) -> list[np.ndarray] | None:
    """Fused forward of a ``minippo.nn.MLP``: x (B, sizes[0]) -> cache [x, h_1, ..., h_L = y].

    Returns ``None`` (the caller falls back to numpy) unless 1 <= B <= :func:`max_batch`,
    the parameters are packed in ``mlp.flat`` (see :func:`_packed`), x is a 2-d ndarray of their
    float dtype (in another layout than C order it is copied to C order first: cache[0] is then
    the copy), and the MLP has at most :data:`MAX_LAYERS` layers. The cache arrays are new on every
    call.
    """
    st = mlp.__dict__.get("_numba_state")  # _state(mlp), inlined: this is the hottest call
    p = mlp.params
    if st is None or st.params is not p or st.version != getattr(p, "version", None):
        st = _state(mlp)
    # x checked here (class, dtype, 2-d C order): the compiled entry point checks none of it
    if type(x) is not np.ndarray or x.dtype is not st.dt or x.strides != st.xmeta:
        if st.dt is None or type(x) is not np.ndarray or x.dtype != st.dt or x.shape not in st.by_shape:
            return None
        # Fortran order, negative strides, or the dtype as an equal object of its own (a pickled array's):
        # a C-order copy of the native dtype object, as the kernel's result must not depend on the layout
        x = np.array(x, order="C").view(st.dt)
    shapes = st.by_shape.get(x.shape)  # None unless x has 1 .. max_batch rows of sizes[0]
    if shapes is None:
        return None
    return st.run_forward(st, x, shapes)


def mlp_backward(
    mlp: Any, dy: np.ndarray, cache: list[np.ndarray], need_dx: bool = True
) -> tuple[np.ndarray | None, dict[str, np.ndarray]] | None:
    """Fused backward of a ``minippo.nn.MLP``: dy (B, sizes[-1]) -> (dx (B, sizes[0]) or None, grads).

    ``grads`` is keyed like ``mlp.params`` (W0, b0, W1, ...): ``W_i`` and ``b_i`` are the rows of one
    new (sizes[i] + 1, sizes[i + 1]) array per layer. dx is None (and not computed) unless
    ``need_dx``. ``None`` (numpy then runs) for B > :func:`max_batch`, or when shapes or dtypes do
    not fit (see :func:`mlp_forward`).
    Any memory layout of dy and the cache works: the dispatcher compiles a version per layout. Each
    cache array's dtype must be the network's native dtype object itself (checked here: numba may read
    a byte-swapped array as native); the kernel checks the cache's shapes against the MLP's
    (:func:`_fits`) and returns False, computing nothing, when they do not fit. A cache numba cannot
    type at all (a 1-d array, an object) fails in the dispatcher; that falls back too, and from then
    on this MLP checks each cache's dtypes and ndims in Python first (0.4 us a call, saved until then).
    """
    st = mlp.__dict__.get("_numba_state")  # _state(mlp), inlined as in mlp_forward
    p = mlp.params
    if st is None or st.params is not p or st.version != getattr(p, "version", None):
        st = _state(mlp)
    if type(dy) is not np.ndarray:  # (before dy.dtype: a list, say, is numpy's path to name)
        return None
    dt = dy.dtype
    if dt is not st.dt or dy.ndim != 2:
        if st.dt is None or dt != st.dt or dy.ndim != 2:  # (None first: numpy takes it for float64)
            return None
        dt = st.dt  # (the dtype as an equal object of its own: a pickled array's)
        dy = dy.view(dt)
    B = dy.shape[0]
    if not 1 <= B <= st.max_batch or len(cache) != len(st.sizes):  # [x, h_1, ..., h_L]
        return None
    if st.strict:
        if [(a.dtype, a.ndim) for a in cache] != st.cache_meta:
            return None
    else:  # each the native dtype object itself (~0.15 us): numba's dispatcher may read a byte-swapped
        try:  # array as native (its type fingerprint has no byte order, numba 0.68)
            for a in cache:
                if a.dtype is not dt:
                    return None
        except AttributeError:  # not an array: numpy's path names it
            return None
    if need_dx.__class__ is not bool:  # truthiness, as numpy's path takes it ([] is False); the kernel
        need_dx = bool(need_dx)  # takes a bool (one compiled version, not one per argument type)
    dx = np.empty((B, st.sizes[0]), dt) if need_dx else _NO_DX[dt]
    try:
        grads = st.run_backward(st, dy, cache, dx, need_dx)
    except (TypingError, NotImplementedError):  # numba cannot type a cache array (1-d, float16, ...)
        st.strict = True  # from now on check the cache in Python first rather than retry compiling
        return None
    if grads is None:  # shapes or dtypes not those of this MLP: the numpy path raises or broadcasts
        return None
    return (dx if need_dx else None), grads
