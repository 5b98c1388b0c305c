"""Plain-loop versions of every kernel: the oracle the fast versions are tested against.

Written for the reader, not for speed: one Python loop per index, one scalar formula per line,
accumulation in Python floats (float64) and a single rounding to the input dtype at the end (so
they take float arrays: an int array would truncate the results to integers, as ``astype`` does).
Use them on small arrays only (tests).

Notation (GAE paper, Schulman et al. 2016; ``dones[t] = 1`` when step t ended its episode):

    delta_t   = r_t + gamma * V_{t+1} * (1 - d_t) - V_t
    A^{GAE}_t = delta_t + gamma * lambda * (1 - d_t) * A^{GAE}_{t+1},   V_T = last_values
    R_t       = A^{GAE}_t + V_t                                      (returns, the value target)
    G_t       = r_t + gamma * (1 - d_t) * G_{t+1},   G_T = last_values   (rewards-to-go)

A linear layer is ``y = x W + b`` with ``W`` of shape ``(fan_in, fan_out)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


# ---------------------------------------------------------------- advantages
def gae(
    rewards: np.ndarray,
    values: np.ndarray,
    dones: np.ndarray,
    last_values: np.ndarray,
    gamma: float,
    lam: float,
) -> tuple[np.ndarray, np.ndarray]:
    """GAE advantages and returns; rewards, values, dones (T, N), last_values (N,) -> 2 x (T, N)."""
    T, N = rewards.shape
    adv = np.zeros((T, N), dtype=np.float64)
    for n in range(N):
        next_adv = 0.0
        next_value = float(last_values[n])
        for t in reversed(range(T)):
            not_done = 1.0 - float(dones[t, n])
            delta = float(rewards[t, n]) + gamma * next_value * not_done - float(values[t, n])
            next_adv = delta + gamma * lam * not_done * next_adv
            adv[t, n] = next_adv
            next_value = float(values[t, n])
    returns = adv + values.astype(np.float64)
    return adv.astype(rewards.dtype), returns.astype(rewards.dtype)


def rewards_to_go(
    rewards: np.ndarray, dones: np.ndarray, last_values: np.ndarray, gamma: float
) -> np.ndarray:
    """Discounted return G_t, bootstrapped from last_values and cut at dones; (T, N) -> (T, N)."""
    T, N = rewards.shape
    out = np.zeros((T, N), dtype=np.float64)
    for n in range(N):
        g = float(last_values[n])
        for t in reversed(range(T)):
            g = float(rewards[t, n]) + gamma * (1.0 - float(dones[t, n])) * g
            out[t, n] = g
    return out.astype(rewards.dtype)


def td0(
    rewards: np.ndarray,
    values: np.ndarray,
    dones: np.ndarray,
    last_values: np.ndarray,
    gamma: float,
) -> np.ndarray:
    """One-step TD error delta_t (T, N): what GAE gives at lambda = 0."""
    T, N = rewards.shape
    out = np.zeros((T, N), dtype=np.float64)
    for n in range(N):
        for t in range(T):
            next_value = float(last_values[n]) if t == T - 1 else float(values[t + 1, n])
            not_done = 1.0 - float(dones[t, n])
            out[t, n] = float(rewards[t, n]) + gamma * next_value * not_done - float(values[t, n])
    return out.astype(rewards.dtype)


# ---------------------------------------------------------------- linear layer
def linear_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """y[r, j] = b[j] + sum_k x[r, k] W[k, j]; x (B, fan_in) -> y (B, fan_out)."""
    B, fan_in = x.shape
    fan_out = W.shape[1]
    y = np.zeros((B, fan_out), dtype=np.float64)
    for r in range(B):
        for j in range(fan_out):
            s = float(b[j])
            for k in range(fan_in):
                s += float(x[r, k]) * float(W[k, j])
            y[r, j] = s
    return y.astype(x.dtype)


def linear_backward(
    dy: np.ndarray, x: np.ndarray, W: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vector-Jacobian products of y = x W + b; dy (B, fan_out), x (B, fan_in), W (fan_in, fan_out).

    dx[r, k] = sum_j dy[r, j] W[k, j];  dW[k, j] = sum_r x[r, k] dy[r, j];  db[j] = sum_r dy[r, j].
    """
    B, fan_in = x.shape
    fan_out = W.shape[1]
    dx = np.zeros((B, fan_in), dtype=np.float64)
    dW = np.zeros((fan_in, fan_out), dtype=np.float64)
    db = np.zeros(fan_out, dtype=np.float64)
    for r in range(B):
        for j in range(fan_out):
            g = float(dy[r, j])
            db[j] += g
            for k in range(fan_in):
                dx[r, k] += g * float(W[k, j])
                dW[k, j] += float(x[r, k]) * g
    dt = dy.dtype
    return dx.astype(dt), dW.astype(dt), db.astype(dt)


# ---------------------------------------------------------------- activations
def _map(f, a: np.ndarray) -> np.ndarray:
    out = np.array([f(float(v)) for v in a.ravel()], dtype=np.float64)
    return out.reshape(a.shape).astype(a.dtype)


def tanh_forward(z: np.ndarray) -> np.ndarray:
    """z (B, F) (any shape) -> h = tanh(z), elementwise, same shape and dtype."""
    return _map(math.tanh, z)


def tanh_backward(dh: np.ndarray, h: np.ndarray) -> np.ndarray:
    """dh, h (B, F) (any one shape) -> dz = dh * (1 - h^2), with h = tanh(z) the saved output."""
    pairs = zip(dh.ravel(), h.ravel(), strict=True)
    out = [float(g) * (1.0 - float(v) * float(v)) for g, v in pairs]
    return np.array(out, dtype=np.float64).reshape(dh.shape).astype(dh.dtype)


def relu_forward(z: np.ndarray) -> np.ndarray:
    """z (B, F) (any shape) -> h = max(z, 0), elementwise, same shape and dtype; NaN stays NaN (as
    np.maximum and the kernels keep it)."""
    return _map(lambda v: 0.0 if v <= 0.0 else v, z)


def relu_backward(dh: np.ndarray, h: np.ndarray) -> np.ndarray:
    """dh, h (B, F) (any one shape) -> dz = dh * [h > 0] (subgradient 0 at 0)."""
    pairs = zip(dh.ravel(), h.ravel(), strict=True)
    out = [float(g) * (1.0 if float(v) > 0.0 else 0.0) for g, v in pairs]
    return np.array(out, dtype=np.float64).reshape(dh.shape).astype(dh.dtype)


ACTIVATIONS = {"tanh": (tanh_forward, tanh_backward), "relu": (relu_forward, relu_backward)}


# ---------------------------------------------------------------- MLP
def mlp_forward(
    params: dict[str, np.ndarray],
    x: np.ndarray,
    activation: str = "tanh",
    activate_output: bool = False,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """x (B, sizes[0]) -> (y (B, sizes[-1]), cache [x, h_1, ..., h_L = y]), like ``nn.MLP``."""
    act, _ = ACTIVATIONS[activation]
    n_layers = len(params) // 2
    h = x
    cache = [h]
    for i in range(n_layers):
        h = linear_forward(h, params[f"W{i}"], params[f"b{i}"])
        if i < n_layers - 1 or activate_output:
            h = act(h)
        cache.append(h)
    return h, cache


def mlp_backward(
    params: dict[str, np.ndarray],
    dy: np.ndarray,
    cache: Sequence[np.ndarray],
    activation: str = "tanh",
    activate_output: bool = False,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """dy (B, sizes[-1]) -> (dx (B, sizes[0]), grads keyed like ``params``)."""
    _, act_back = ACTIVATIONS[activation]
    n_layers = len(params) // 2
    grads: dict[str, np.ndarray] = {}
    d = dy
    for i in reversed(range(n_layers)):
        if i < n_layers - 1 or activate_output:
            d = act_back(d, cache[i + 1])
        d, grads[f"W{i}"], grads[f"b{i}"] = linear_backward(d, cache[i], params[f"W{i}"])
    return d, {k: grads[k] for k in params}
