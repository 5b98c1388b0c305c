"""Numba CPU kernels behind ``MINIPPO_BACKEND=numba``: GAE, rewards-to-go, a fused small-batch MLP.

Importing this module imports numba but compiles nothing: every ``@njit(cache=True)`` kernel is
compiled on its first call (per dtype) and cached on disk next to this file.

- :func:`gae`, :func:`rewards_to_go`: one pass backward over T, inner loop over the N envs of a
  row-major (T, N) array (contiguous, so it vectorises). Same operation order and dtype as the numpy
  loop in ``minippo.advantages``, so float32 results match it bit for bit.
- :func:`mlp_forward`, :func:`mlp_backward`: a whole tanh/relu MLP in one call. At batch 1..8
  numpy spends most of its time in per-call overhead (~1 us per ufunc or matmul); one compiled call
  removes it. ``minippo.nn.MLP`` dispatches here for batches up to :data:`FORWARD_MAX_BATCH` /
  :data:`BACKWARD_MAX_BATCH` (measured crossovers, see ``docs/kernels.md``); above them BLAS wins.

float32 tanh uses a vectorisable rational approximation (the 13/6 minimax fit used by Eigen), <= 7
ulp from the correctly rounded tanh (measured on 2M points in [-10, 10]); libm ``tanhf`` does not
vectorise and cost 10 ns per element, more than the rest of the layer. float64 keeps libm tanh, so
float64 gradient checks see the exact function.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit
from numba.core.errors import TypingError

FORWARD_MAX_BATCH = 8
"""Largest batch for which ``MLP.forward`` uses :func:`mlp_forward` (measured crossover)."""
BACKWARD_MAX_BATCH = 8
"""Largest batch for which ``MLP.backward`` uses :func:`mlp_backward` (measured crossover)."""

ACT_TANH, ACT_TANH_F32, ACT_RELU = 0, 1, 2
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_W_KEYS = tuple(f"W{i}" for i in range(64))
_B_KEYS = tuple(f"b{i}" for i in range(64))

# Why error_model="numpy": Python semantics add a zero check before every float division, which
# stops LLVM from vectorising the tanh loop. Why fastmath={"reassoc"} (MLP only): lets the dot
# products of dx = d W^T vectorise (4x faster at batch 8); it keeps NaN/inf semantics, unlike
# fastmath=True. The GAE kernels use neither, to stay bit-identical with numpy.
_MLP_JIT = {"cache": True, "error_model": "numpy", "fastmath": {"reassoc"}}


# ---------------------------------------------------------------- GAE and rewards-to-go
@njit(cache=True)
def _gae_kernel(rewards, values, dones, last_values, gamma, gamma_lam, one, adv, returns):
    T, N = rewards.shape
    next_adv = np.zeros_like(last_values)
    next_value = last_values.copy()
    for t in range(T - 1, -1, -1):
        for n in range(N):
            not_done = one - dones[t, n]
            delta = rewards[t, n] + gamma * next_value[n] * not_done - values[t, n]
            a = delta + gamma_lam * not_done * next_adv[n]
            next_adv[n] = a
            next_value[n] = values[t, n]
            adv[t, n] = a
            returns[t, n] = a + values[t, n]


@njit(cache=True)
def _rewards_to_go_kernel(rewards, dones, last_values, gamma, one, out):
    T, N = rewards.shape
    g = last_values.copy()
    for t in range(T - 1, -1, -1):
        for n in range(N):
            g[n] = rewards[t, n] + gamma * (one - dones[t, n]) * g[n]
            out[t, n] = g[n]


def _float_dtype(a: np.ndarray) -> np.dtype:
    return a.dtype if a.dtype in _FLOATS else np.dtype(np.float64)


def gae(
    rewards: np.ndarray,
    values: np.ndarray,
    dones: np.ndarray,
    last_values: np.ndarray,
    gamma: float,
    lam: float,
) -> tuple[np.ndarray, np.ndarray]:
    """GAE(gamma, lambda) over a rollout (see ``minippo.advantages.compute_gae``).

    rewards, values, dones (T, N) float32/float64 (dones 0/1), last_values (N,) = V(s_T)
    -> (advantages (T, N), returns (T, N) = advantages + values), in the dtype of rewards.
    """
    dt = _float_dtype(rewards)
    r, v, d = (np.ascontiguousarray(a, dtype=dt) for a in (rewards, values, dones))
    lv = np.ascontiguousarray(last_values, dtype=dt)
    adv = np.empty_like(r)
    returns = np.empty_like(r)
    # Scalars in the array dtype, rounded as numpy rounds them (gamma * lam first, in Python).
    _gae_kernel(r, v, d, lv, dt.type(gamma), dt.type(gamma * lam), dt.type(1), adv, returns)
    return adv, returns


def rewards_to_go(
    rewards: np.ndarray, dones: np.ndarray, last_values: np.ndarray, gamma: float
) -> np.ndarray:
    """Discounted return G_t = r_t + gamma (1 - d_t) G_{t+1}, G_T = last_values; (T, N) -> (T, N).

    rewards, dones (T, N) float32/float64, last_values (N,); result in the dtype of rewards.
    """
    dt = _float_dtype(rewards)
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
def _linear_rows(x, W, b, out):
    # out = x W + b, four rows of W per pass: one load/store of out per 4 multiply-adds.
    fan_in, fan_out = W.shape
    k4 = fan_in - fan_in % 4
    for r in range(x.shape[0]):
        for j in range(fan_out):
            out[r, j] = b[j]
        for k in range(0, k4, 4):
            x0, x1, x2, x3 = x[r, k], x[r, k + 1], x[r, k + 2], x[r, k + 3]
            for j in range(fan_out):
                out[r, j] += x0 * W[k, j] + x1 * W[k + 1, j] + x2 * W[k + 2, j] + x3 * W[k + 3, j]
        for k in range(k4, fan_in):
            xv = x[r, k]
            for j in range(fan_out):
                out[r, j] += xv * W[k, j]


@njit(**_MLP_JIT)
def _activate(h, act):
    B, F = h.shape
    for r in range(B):
        if act == ACT_TANH_F32:
            for j in range(F):
                h[r, j] = _tanh_f32(h[r, j])
        elif act == ACT_TANH:
            for j in range(F):
                h[r, j] = np.tanh(h[r, j])
        else:
            for j in range(F):
                v = h[r, j]
                h[r, j] = 0 if v < 0 else v  # NaN stays NaN, like np.maximum


@njit(**_MLP_JIT)
def _mlp_forward_kernel(x, Ws, bs, hs, act, activate_output):
    n = len(Ws)
    inp = x
    for i in range(n):
        _linear_rows(inp, Ws[i], bs[i], hs[i])
        if i < n - 1 or activate_output:
            _activate(hs[i], act)
        inp = hs[i]


@njit(**_MLP_JIT)
def _mlp_backward_kernel(dy, hs, Ws, dWs, dbs, act, activate_output):
    n = len(Ws)
    d = dy.copy()
    for i in range(n - 1, -1, -1):
        W, x, dW, db = Ws[i], hs[i], dWs[i], dbs[i]
        B = d.shape[0]
        fan_in, fan_out = W.shape
        if i < n - 1 or activate_output:  # d <- d * act'(z), written with the saved output h
            h = hs[i + 1]
            one, zero = np.float32(1), np.float32(0)  # exact in float64 too; no int promotion
            if act == ACT_RELU:
                for r in range(B):
                    for j in range(fan_out):
                        d[r, j] *= one if h[r, j] > 0 else zero
            else:
                for r in range(B):
                    for j in range(fan_out):
                        d[r, j] *= one - h[r, j] * h[r, j]
        dW[:] = 0
        db[:] = 0
        dx = np.empty((B, fan_in), dy.dtype)
        B4 = B - B % 4
        for k in range(fan_in):  # dW = x^T d, four rows of d per pass (as in _linear_rows)
            for r in range(0, B4, 4):
                x0, x1, x2, x3 = x[r, k], x[r + 1, k], x[r + 2, k], x[r + 3, k]
                for j in range(fan_out):
                    dW[k, j] += x0 * d[r, j] + x1 * d[r + 1, j] + x2 * d[r + 2, j] + x3 * d[r + 3, j]
            for r in range(B4, B):
                xv = x[r, k]
                for j in range(fan_out):
                    dW[k, j] += xv * d[r, j]
        for r in range(B):
            for j in range(fan_out):
                db[j] += d[r, j]
            for k in range(fan_in):
                acc = d[r, 0] * W[k, 0]
                for j in range(1, fan_out):
                    acc += d[r, j] * W[k, j]
                dx[r, k] = acc
        d = dx
    return d


def _act_code(activation: str, dtype: np.dtype) -> int:
    if activation == "relu":
        return ACT_RELU
    return ACT_TANH_F32 if dtype == np.float32 else ACT_TANH


def mlp_forward(mlp: Any, x: np.ndarray) -> list[np.ndarray] | None:
    """Fused forward of a ``minippo.nn.MLP``: x (B, sizes[0]) -> cache [x, h_1, ..., h_L = y].

    Returns ``None`` (the caller falls back to numpy) unless x and all parameters share one float
    dtype and are C-contiguous, the layout the compiled kernel is specialised for. Only x is
    checked here (parameters are made that way by ``MLP`` and updated in place); numba's own
    dispatch rejects anything else, at the cost of a failed compile.
    """
    p = mlp.params
    n = mlp.n_layers
    dt = x.dtype
    Ws = tuple([p[k] for k in _W_KEYS[:n]])
    if dt != Ws[0].dtype or dt not in _FLOATS or not x.flags.c_contiguous:
        return None
    bs = tuple([p[k] for k in _B_KEYS[:n]])
    B = x.shape[0]
    hs = tuple([np.empty((B, W.shape[1]), dt) for W in Ws])
    try:
        _mlp_forward_kernel(x, Ws, bs, hs, _act_code(mlp.activation, dt), mlp.activate_output)
    except TypingError:  # mixed dtypes or layouts among the parameters
        return None
    return [x, *hs]


def mlp_backward(
    mlp: Any, dy: np.ndarray, cache: list[np.ndarray]
) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """Fused backward of a ``minippo.nn.MLP``: dy (B, sizes[-1]) -> (dx (B, sizes[0]), grads).

    ``grads`` is keyed like ``mlp.params`` (W0, b0, W1, ...). ``None`` when the dtypes or layouts
    do not fit the kernel (see :func:`mlp_forward`).
    """
    p = mlp.params
    n = mlp.n_layers
    dt = dy.dtype
    Ws = tuple([p[k] for k in _W_KEYS[:n]])
    if dt != Ws[0].dtype or dt not in _FLOATS or cache[0].dtype != dt:
        return None
    if not (dy.flags.c_contiguous and cache[0].flags.c_contiguous):
        return None
    dWs = tuple([np.empty_like(W) for W in Ws])
    dbs = tuple([np.empty(W.shape[1], dt) for W in Ws])
    try:
        dx = _mlp_backward_kernel(dy, tuple(cache), Ws, dWs, dbs, _act_code(mlp.activation, dt),
                                  mlp.activate_output)
    except TypingError:
        return None
    grads: dict[str, np.ndarray] = {}
    for i in range(n):
        grads[_W_KEYS[i]] = dWs[i]
        grads[_B_KEYS[i]] = dbs[i]
    return dx, grads
