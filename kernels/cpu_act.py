"""Numba kernel for ``ActorCritic.act`` at small batch (``MINIPPO_BACKEND=numba``): the rollout's
per-step policy call in one compiled call.

numpy spends ``policy.act(obs, rng)`` at batch 8 (CartPole preset, two 4-64-64-x tanh MLPs) in ~35
small calls (two MLP forwards, softmax, the inverse-CDF sample, log-prob, dist params), ~35-45 us
of per-call overhead for ~2 us of arithmetic. :func:`act` does it all in one call:

- actor and critic forward through ``kernels.cpu._dense`` (the fused small-batch MLP's layer, any
  depth, tanh or relu, float32 or float64), the actor's output written straight into the returned
  dist params; with a shared trunk (``shared=True``), the trunk once, then the two heads on its
  features;
- Categorical (softmax with temperature) or diagonal Gaussian (state-independent log_std clamped to
  ``policy.LOG_STD_MIN/MAX``), log-probs in float64, rounded once to the policy's dtype at the end;
- the action: the random numbers are drawn in Python from the caller's Generator with exactly the
  calls of ``Categorical.sample`` (``rng.random((B, 1))``) and ``DiagGaussian.sample``
  (``rng.standard_normal((B, d))``), so the stream is consumed identically; the kernel does the
  inverse CDF (the count of float64 CDF entries <= u; a count of n, where the rounded total is <= u,
  takes the last action of nonzero probability) or ``mean + std * eps`` (in
  float64, rounded to the dtype, as numpy does). ``deterministic`` takes the mode and draws nothing.
- ``critic=False`` (what ``predict`` asks for) skips the value head: a runtime branch in the same
  compiled kernel, so nothing more is compiled.

Results equal the numpy path to rounding: the MLP is the fused kernel's (the numba backend's
``MLP.forward`` at B <= 8 runs the same code; against BLAS only summation order differs, and float32
tanh is ``kernels.cpu._tanh_f32``, <= 8 ulp); the distribution runs in float64 where numpy stays in
float32 (logp within a few float32 ulp). Categorical actions are identical except where u lands
within rounding (~1e-7 relative) of a CDF boundary, a measure-zero event for a continuous u. Gaussian
actions: the std is numpy's own ``exp(clip(log_std))`` (computed in Python: numpy's float32 exp need
not round as libm's does), so given the same mean they are identical; against BLAS the mean itself
differs by rounding.

Importing this module compiles nothing: each kernel is compiled on its first call (per dtype and
network depth, as the weight tuples' types differ) and cached on disk (``cache=True``).
"""

from __future__ import annotations

import math
from operator import is_ as _is
from typing import Any

import numpy as np
from numba import njit

from minippo.policy import LOG_STD_MAX, LOG_STD_MIN

from .cpu import (
    _F32,
    _F64,
    _MLP_JIT,
    ACT_NONE,
    ACT_RELU,
    ACT_TANH,
    ACT_TANH_F32,
    _dense,
    _entry,
    _prepare,
    _trunk_forward,
)

# The digests of the files built into these kernels: see SOURCES_BUILT_IN in cpu.py.
SOURCES_BUILT_IN = {"cpu.py": "c8f3a4a04d6e8d27", "simd.py": "aed7469a9d4dc301"}

MAX_BATCH = 64
"""Largest batch for which ``ActorCritic.act`` uses :func:`act` (measured, see ``docs/kernels.md``)."""

LOG_2PI = math.log(2.0 * math.pi)
# The distribution part does numpy's float64 operations in numpy's order, without reassociation or
# FMA contraction: the CDF is a running sum compared against u, as np.cumsum then (u >= cdf).sum() do
# it, and mean + std * eps is rounded as numpy rounds it. fastmath=False is explicit because numba
# compiles a callee that leaves fastmath unset with its caller's flags (Flags.inherit_if_not_set).
_JIT_EXACT = {"cache": True, "error_model": "numpy", "fastmath": False}


# ---------------------------------------------------------------- kernels
@njit(**_MLP_JIT)
def _mlp_into(x, Ws, bs, act, y):
    """y = W_L(act(... act(x W_0 + b_0) ...)) + b_L, hidden layers through ``cpu._dense``."""
    n = len(Ws)
    if n == 1:
        _dense(x, Ws[0], bs[0], y, ACT_NONE)
        return
    B = x.shape[0]
    h = np.empty((B, Ws[0].shape[1]), y.dtype)
    _dense(x, Ws[0], bs[0], h, act)
    for i in range(1, n - 1):
        out = np.empty((B, Ws[i].shape[1]), y.dtype)
        _dense(h, Ws[i], bs[i], out, act)
        h = out
    _dense(h, Ws[n - 1], bs[n - 1], y, ACT_NONE)


@njit(**_JIT_EXACT)
def _categorical(logits, temperature, u, deterministic, actions, logp):
    """Softmax(logits / T) per row in float64: the action (inverse CDF at u[i, 0], or the argmax of
    the logits) and its log-prob. Returns 1 when a logit is not finite (nothing sampled), else 0."""
    B, n = logits.shape
    for i in range(B):
        for j in range(n):
            if not np.isfinite(logits[i, j]):
                return 1
    lp = np.empty(n, np.float64)
    for i in range(B):
        zmax = -np.inf
        for j in range(n):
            lp[j] = np.float64(logits[i, j]) / temperature if temperature != 1.0 else np.float64(logits[i, j])
            zmax = max(zmax, lp[j])
        s = 0.0
        for j in range(n):
            lp[j] -= zmax
            s += math.exp(lp[j])
        lse = math.log(s)
        if deterministic:  # np.argmax: the first maximum
            a = 0
            for j in range(1, n):
                if logits[i, j] > logits[i, a]:
                    a = j
        else:  # Categorical.sample: #{j : cdf_j <= u}, cdf = cumsum(p) in float64; n -> the last p_j > 0
            ui = u[i, 0]
            cdf = 0.0
            a = 0
            last = 0
            for j in range(n):
                pj = math.exp(lp[j] - lse)
                cdf += pj
                if ui >= cdf:
                    a += 1
                if pj > 0.0:
                    last = j
            if a == n:
                a = last
        actions[i] = a
        logp[i] = lp[a] - lse
    return 0


@njit(**_JIT_EXACT)
def _gaussian(mean, ls, std, eps, deterministic, actions, logp, params):
    """N(mean, std^2) with std = exp(ls) (d,) given in the dtype: the action (mean + std * eps[i] in
    float64, stored in the dtype as DiagGaussian.sample's astype rounds it, or the mean), its
    log-prob, and params = [mean, ls] (B, 2d).
    Returns 1 when a mean is not finite, 2 when ls is NaN (nothing written), else 0."""
    B, d = mean.shape
    for i in range(B):
        for k in range(d):
            if not np.isfinite(mean[i, k]):
                return 1
    c = 0.0
    for k in range(d):
        if np.isnan(ls[k]):
            return 2
        c += np.float64(ls[k]) + 0.5 * LOG_2PI
    for i in range(B):
        s = 0.0
        for k in range(d):
            m = mean[i, k]
            if deterministic:
                actions[i, k] = m
            else:
                actions[i, k] = np.float64(m) + np.float64(std[k]) * eps[i, k]
            z = (np.float64(actions[i, k]) - np.float64(m)) / np.float64(std[k])
            s += z * z
            params[i, k] = m
            params[i, d + k] = ls[k]
        logp[i] = -0.5 * s - c
    return 0


@njit(**_JIT_EXACT)
def _act_categorical(obs, a_Ws, a_bs, c_Ws, c_bs, act, temperature, u, deterministic, critic, actions, logp, v,
                     logits):
    """Both MLPs (the critic only when ``critic``: else v is not written), then :func:`_categorical`;
    logits (B, n) and v (B, 1) are outputs too."""
    if critic:
        _mlp_into(obs, c_Ws, c_bs, act, v)
    _mlp_into(obs, a_Ws, a_bs, act, logits)
    return _categorical(logits, temperature, u, deterministic, actions, logp)


@njit(**_JIT_EXACT)
def _act_gaussian(obs, a_Ws, a_bs, c_Ws, c_bs, act, ls, std, eps, deterministic, critic, actions, logp, v, params):
    """Both MLPs (the critic only when ``critic``: else v is not written), then :func:`_gaussian`;
    v (B, 1) and params (B, 2d) are outputs too."""
    if critic:
        _mlp_into(obs, c_Ws, c_bs, act, v)
    mean = np.empty((obs.shape[0], ls.shape[0]), obs.dtype)
    _mlp_into(obs, a_Ws, a_bs, act, mean)
    return _gaussian(mean, ls, std, eps, deterministic, actions, logp, params)


@njit(**_JIT_EXACT)
def _act_categorical_shared(obs, t_Ws, t_bs, a_Ws, a_bs, c_Ws, c_bs, act, temperature, u, deterministic, critic,
                            actions, logp, v, logits):
    """:func:`_act_categorical` on the features of a shared trunk (computed once for both heads)."""
    hs = _trunk_forward(obs, t_Ws, t_bs, act)
    feat = hs[len(hs) - 1]
    return _act_categorical(feat, a_Ws, a_bs, c_Ws, c_bs, act, temperature, u, deterministic, critic, actions,
                            logp, v, logits)


@njit(**_JIT_EXACT)
def _act_gaussian_shared(obs, t_Ws, t_bs, a_Ws, a_bs, c_Ws, c_bs, act, ls, std, eps, deterministic, critic, actions,
                         logp, v, params):
    """:func:`_act_gaussian` on the features of a shared trunk (computed once for both heads)."""
    hs = _trunk_forward(obs, t_Ws, t_bs, act)
    feat = hs[len(hs) - 1]
    return _act_gaussian(feat, a_Ws, a_bs, c_Ws, c_bs, act, ls, std, eps, deterministic, critic, actions, logp, v,
                         params)


# ---------------------------------------------------------------- Python side
_NO_DRAWS = np.empty((0, 0), np.float64)  # deterministic: nothing drawn (never read)
_NO_VALUES = {_F32: np.empty((0, 1), _F32), _F64: np.empty((0, 1), _F64)}  # critic=False: never written
_LO, _HI = float(LOG_STD_MIN), float(LOG_STD_MAX)


class _State:
    """Per-policy dispatch state, kept in ``policy.__dict__["_numba_act_state"]``.

    Built when any parameter array changes identity (rebinding in ``policy.params`` or in an MLP's
    own ``params``, ``ActorCritic.to``, a new dict); Adam and checkpoint loading write in place and
    keep it. Holds the layout verdict, the weight and bias tuples the kernel takes (the trunk's, if
    shared, then the actor's and the critic's), and the compiled entry point once known. The kernel
    reads the arrays the numpy path reads: the MLPs' own ``params``, which must be the very arrays in
    ``policy.params`` (else the numpy path runs).
    """

    __slots__ = ("p", "nets", "ok", "dt", "act", "weights", "log_std", "n", "fn", "discrete", "entry", "pdict",
                 "pversion")

    def __init__(self, policy: Any, p: tuple) -> None:
        self.p, self.nets, self.ok, self.entry = p, _nets_key(policy), False, None
        self.pdict, self.pversion = policy.params, getattr(policy.params, "version", None)
        dicts, versions = self.nets[0:6:2], self.nets[1:6:2]
        if any(d is not None and version is None for d, version in zip(dicts, versions, strict=True)):
            return  # an MLP's params is a plain dict: its rebinding cannot be seen
        dt = policy.dtype
        if dt not in (_F32, _F64) or not p:
            return
        dt = _F32 if dt == _F32 else _F64
        if not all(type(a) is np.ndarray and a.dtype is dt and a.flags.c_contiguous for a in p):
            return
        layers = policy.fused_layers()  # (the layout the kernel reads without bounds checks)
        if layers is None:
            return
        if not policy.discrete:
            self.log_std = policy.params["log_std"]
        self.weights = tuple(arrays for Ws_bs in layers for arrays in Ws_bs)
        self.dt, self.n, self.discrete = dt, policy.act_dim, bool(policy.discrete)
        self.act = ACT_RELU if policy.activation == "relu" else (ACT_TANH_F32 if dt is _F32 else ACT_TANH)
        kernels = (_act_categorical, _act_gaussian) if policy.trunk is None else (_act_categorical_shared,
                                                                          _act_gaussian_shared)
        self.fn = kernels[0] if policy.discrete else kernels[1]
        _prepare(dt)  # the heads' SLP-vectorised layer, before the act kernel is compiled
        self.ok = True


def _nets_key(policy: Any) -> tuple:
    """What changes when an MLP's own parameter is rebound: its params dict and that dict's
    ``version`` (None for a plain dict), for the actor, the critic and the trunk (None, None without);
    then the three networks themselves (one swapped in may hold the same dict under another activation)."""
    a, c = policy.actor.params, policy.critic.params
    t = None if policy.trunk is None else policy.trunk.params
    return (a, getattr(a, "version", None), c, getattr(c, "version", None), t, getattr(t, "version", None),
            policy.actor, policy.critic, policy.trunk)


def _same_nets(key: tuple, policy: Any) -> bool:
    """Whether :func:`_nets_key` is still ``key`` (the dicts and networks by identity, the versions by value)."""
    actor, critic, trunk = policy.actor, policy.critic, policy.trunk
    a, c = actor.params, critic.params
    t = None if trunk is None else trunk.params
    return (key[0] is a and key[2] is c and key[4] is t and key[6] is actor and key[7] is critic and key[8] is trunk
            and key[1] == getattr(a, "version", None) and key[3] == getattr(c, "version", None)
            and key[5] == getattr(t, "version", None))


def _state(policy: Any) -> _State | None:
    """The dispatch state for the policy's current parameters, or None when the kernel does not fit.

    Fast check (~0.1 us): ``policy.params`` is the :class:`minippo.nn.Params` dict the state last saw,
    at the same ``version`` (no name rebound since), and the MLPs' own dicts likewise. Otherwise
    (another dict, a plain dict, a rebinding write) every parameter array is compared by identity
    (~0.7 us), and the state rebuilt if one differs."""
    params = policy.params
    st = policy.__dict__.get("_numba_act_state")
    if (st is not None and st.pdict is params and st.pversion is not None
            and st.pversion == getattr(params, "version", None) and _same_nets(st.nets, policy)):
        return st if st.ok else None
    p = tuple(params.values())
    if st is None or len(st.p) != len(p) or not all(map(_is, p, st.p)) or not _same_nets(st.nets, policy):
        policy.__dict__["_numba_act_state"] = st = _State(policy, p)
    else:  # the same arrays: remember the dict and version they were checked under
        st.pdict, st.pversion = params, getattr(params, "version", None)
    return st if st.ok else None


def act(
    policy: Any, obs: np.ndarray, rng: np.random.Generator, deterministic: bool = False, critic: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray] | None:
    """``policy.act(obs, rng, deterministic)`` in one compiled call: (actions, logp, values, dist params).
    ``critic=False`` skips the value head (values is then None): what ``predict`` needs.

    Returns None (the caller runs the numpy path) unless ``policy`` has tanh/relu actor and critic MLPs
    (separate, or heads on a shared trunk) whose parameters (and log_std) are C-contiguous numpy arrays
    of the policy's float dtype with the expected shapes, and obs is a real (float, int or bool) numpy
    (B, obs_dim) array with 1 <= B <= MAX_BATCH; also for predict's mode when log_std is NaN (the mean needs no std).
    Raises FloatingPointError, as the numpy path does, on non-finite logits / mean / log_std (the
    random numbers for that call have then already been drawn).
    """
    if type(obs) is not np.ndarray or obs.ndim != 2:
        return None
    B = obs.shape[0]
    if not 1 <= B <= MAX_BATCH or obs.shape[1] != policy.obs_dim:
        return None
    st = _state(policy)
    if st is None:
        return None
    dt = st.dt
    if obs.dtype is not dt or not obs.flags.c_contiguous or not obs.flags.writeable:
        if obs.dtype.kind not in "biuf":  # complex, strings, objects: numpy's path refuses them (TypeError)
            return None
        obs = np.array(obs, dtype=dt, order="C")  # what forward's astype does (plus the layout)
    deterministic, critic = bool(deterministic), bool(critic)
    v = np.empty((B, 1), dt) if critic else _NO_VALUES[dt]
    logp = np.empty(B, dt)
    if st.discrete:
        u = _NO_DRAWS if deterministic else rng.random((B, 1))  # as Categorical.sample draws
        actions = np.empty(B, np.int64)
        params = np.empty((B, st.n), dt)
        args = (obs, *st.weights, st.act, float(policy.temperature), u, deterministic, critic, actions, logp, v,
                params)
        bad = ("logits",)
    else:
        # numpy's own clip and exp (its float32 exp need not round as libm's does): same std, same actions
        ls = np.minimum(np.maximum(st.log_std, _LO), _HI)  # np.clip's result (NaN stays), 3x cheaper
        std = np.exp(ls)
        eps = _NO_DRAWS if deterministic else rng.standard_normal((B, st.n))  # as DiagGaussian.sample
        actions = np.empty((B, st.n), dt)
        params = np.empty((B, 2 * st.n), dt)
        args = (obs, *st.weights, st.act, ls, std, eps, deterministic, critic, actions, logp, v, params)
        bad = ("mean", "log_std")
    if st.entry is None:
        status = st.fn(*args)
        st.entry = _entry(st.fn, args)
    else:  # every array argument checked above or made here, of the typed class/dtype/ndim/layout
        status = st.entry(*args)
    if status:  # (predict's mode names the actor's output, as the array path does)
        if status == 2 and deterministic and not critic:
            return None  # the mode needs no std: numpy's path returns the mean (nothing was drawn)
        what = "the policy's output" if status == 1 and deterministic and not critic else bad[status - 1]
        raise FloatingPointError(f"{what} contains NaN or inf")
    if st.discrete and policy.temperature < 1.0 and (critic or not deterministic):
        # The kernel divides in float64; numpy's Categorical divides in the policy's dtype and refuses
        # what overflows there (say logits 1 at T = 1e-40 in float32): the same test, the same error.
        # (Not for the mode alone, predict's: numpy takes the logits' argmax there, at any temperature.)
        # Without numpy's warnings, as Categorical: a T that is 0 in float32 (1e-300) divides by zero.
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            z = params / policy.temperature
        if not np.isfinite(z).all():
            raise FloatingPointError("logits / temperature contains NaN or inf")
    return actions, logp, (v[:, 0] if critic else None), params
