"""Advantage estimators over a rollout: GAE(gamma, lambda), Monte Carlo rewards-to-go, TD(0).
Derivations: docs/derivations.md section 10.

Arrays are time-major ``(T, N)``. ``dones[t] = 1`` when the transition at step t ended its
episode (terminated or truncated; truncation was already bootstrapped into the reward), so
``V(s_{t+1})`` is cut there. In the study notes' notation (GAE paper, Schulman et al. 2016):

    delta_t = r_t + gamma * V(s_{t+1}) * (1 - d_t) - V(s_t)                (TD error, 时序差分误差)
    A^{GAE}_t = delta_t + gamma * lambda * (1 - d_t) * A^{GAE}_{t+1}       with V(s_T) = last_values
    returns R_t = A^{GAE}_t + V(s_t)                                      (the value target)

lambda = 1 gives the discounted reward-to-go minus V (Monte Carlo, REINFORCE with baseline);
lambda = 0 gives the one-step TD error (A2C). The hot loop dispatches on ``MINIPPO_BACKEND``:
numpy (a loop over T, vectorised over N), numba (``kernels/cpu.py``), cupy (``kernels/gae.cu``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minippo import backend
from minippo._checks import array, is_real, real, writable

Array = Any
ESTIMATORS = ("gae", "mc", "td")


DONES_ERROR = "dones must hold only 0 and 1 (episode-end flags)"


_REAL_KINDS = "biuf"  # bool, int, unsigned, float: cast to the float dtype (complex, strings and objects
# are refused: a cast would drop the imaginary part, or parse)


def _validate(rewards: Array, values: Array, dones: Array, last_values: Array, gamma: float, lam: float) -> None:
    for name, a in (("rewards", rewards), ("values", values), ("dones", dones), ("last_values", last_values)):
        array(name, a)
        if a.dtype.kind not in _REAL_KINDS:
            raise TypeError(f"{name} must be a real array (float, int or bool), got dtype {a.dtype}")
    if rewards.ndim != 2:
        raise ValueError(f"rewards must have shape (T, N), got {tuple(rewards.shape)}")
    for name, a in (("values", values), ("dones", dones)):
        if a.shape != rewards.shape:
            raise ValueError(f"{name} must have shape {tuple(rewards.shape)} like rewards, got {tuple(a.shape)}")
    if last_values.shape != rewards.shape[1:]:
        raise ValueError(f"last_values must have shape ({rewards.shape[1]},), got {tuple(last_values.shape)}")
    real("gamma", gamma, 0.0, 1.0, low_open=True)
    real("lam", lam, 0.0, 1.0)
    if not _binary(dones):
        bad = (dones != 0) & (dones != 1)
        t, n = (int(i) for i in np.unravel_index(int(bad.argmax()), bad.shape))
        raise ValueError(f"{DONES_ERROR}, got {float(dones[t, n])} "
                         f"at (t, n) = ({t}, {n})")


def _check_out(out: Any) -> None:
    """TypeError naming ``out`` unless it is None or a pair (tuple or list) of two arrays; ValueError
    naming the array if either is read-only, or if the two share memory (checked before anything is
    written, so a read-only out[1] does not leave out[0] overwritten)."""
    if out is None:
        return
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        got = f"a {type(out).__name__} of {len(out)}" if isinstance(out, (tuple, list)) else type(out).__name__
        raise TypeError(f"out must be a pair (advantages, returns) of two arrays, got {got}")
    array("out[0]", out[0])
    array("out[1]", out[1])
    for i, what in enumerate(("advantages", "returns")):
        writable(f"out[{i}]", out[i], f"it receives the {what}")
    xp = backend.array_module(out[0])  # (bounds first: CuPy's exact test is a kernel, a sort and a search)
    if backend.array_module(out[1]) is xp and xp.may_share_memory(*out) and xp.shares_memory(*out):
        raise ValueError("out[0] and out[1] share memory: the advantages and the returns need separate arrays")


def _binary(dones: Array) -> bool:
    """Whether every entry of dones (numpy or cupy, any dtype) is 0 or 1; NaN is neither."""
    return not bool(((dones != 0) & (dones != 1)).any())


def _result_dtype(rewards: Array) -> np.dtype:
    """The dtype of the advantages and returns: rewards' when it is float32 or float64 (in native byte
    order: big-endian float32 rewards give float32), else float64."""
    dt = rewards.dtype
    return np.dtype(np.float32) if dt.kind == "f" and dt.itemsize == 4 else np.dtype(np.float64)


def gae_numpy(
    rewards: Array, values: Array, dones: Array, last_values: Array, gamma: float, lam: float
) -> tuple[Array, Array]:
    """The numpy backend of :func:`compute_gae`: rewards, values, dones (T, N), last_values (N,) ->
    (advantages, returns), both (T, N); a backward loop over T, each step vectorised over the N envs.

    gamma and lam are taken as Python floats: a numpy float64 scalar would make numpy compute a
    float32 rollout in float64 (NEP 50), unlike the numba and CUDA kernels, which cast them to the
    arrays' dtype. The arrays are cast as :func:`compute_gae` casts them: to rewards' dtype when it is
    float32 or float64, else float64 (int rewards would otherwise give truncated int advantages)."""
    try:
        gamma, lam = float(gamma), float(lam)
    except TypeError as e:
        raise TypeError(f"gamma and lam must be real scalars, got {gamma!r} and {lam!r}") from e
    dt = _result_dtype(rewards)
    rewards, values, dones, last_values = (a.astype(dt, copy=False) for a in (rewards, values, dones, last_values))
    T = rewards.shape[0]
    adv = np.empty_like(rewards)
    next_adv = np.zeros_like(last_values)
    next_value = last_values
    for t in range(T - 1, -1, -1):
        not_done = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * not_done - values[t]
        next_adv = delta + (gamma * lam) * not_done * next_adv
        adv[t] = next_adv
        next_value = values[t]
    return adv, adv + values


def compute_gae(
    rewards: Array,
    values: Array,
    dones: Array,
    last_values: Array,
    gamma: float = 0.99,
    lam: float = 0.95,
    out: tuple[Array, Array] | None = None,
) -> tuple[Array, Array]:
    """GAE advantages and returns.

    rewards, values, dones: (T, N) real arrays, float, int or bool (dones 0/1: any other value raises
    ValueError; a complex, string or object array TypeError);
    last_values: (N,) = V(s_T). NaN or inf in rewards or values is not checked here (this runs on
    every rollout; the losses refuse non-finite inputs) and propagates to the results.
    Returns (advantages (T, N), returns (T, N) = advantages + values) in rewards' dtype when it is
    float32 or float64, else float64; the other inputs are cast to it. ``out=(adv, returns)``: two
    writeable arrays of that shape and dtype to write into (and return); the numba backend then
    allocates nothing (the RolloutBuffer passes its own arrays). They may share memory with the
    inputs, not with each other (ValueError). A bad ``out`` raises before anything is written.
    On the cupy backend the results are cupy arrays (the CUDA kernel) when any input is one, numpy
    arrays (computed on the host) when all are numpy; ``out`` must be on that side.
    """
    # The recursion itself is gae_numpy above; what follows picks where it runs (numba, CUDA, numpy) and
    # checks the inputs, each path giving gae_numpy's result to rounding.
    if backend._resolved is _numba_state and gamma.__class__ is float and lam.__class__ is float:
        # The numba backend's hot path: gamma and lambda Python floats, C-contiguous arrays of one
        # prepared float dtype (else TypeError from the dispatcher). The kernel checks shapes,
        # ranges, dones and overlaps itself and writes nothing when it returns a nonzero status;
        # any miss takes the full path below. ~0.1-0.2 us less than through cpu.gae (a Python call
        # layer and its checks; docs/kernels.md, "GAE on numba").
        try:
            dt = rewards.dtype
            if out is None:
                s = rewards.shape  # (read once: each read makes a new object, ~30 ns)
                adv, ret = np.empty(s, dt), np.empty(s, dt)
            elif out.__class__ is tuple or out.__class__ is list:  # (not an array's rows, nor a generator
                adv, ret = out  # that unpacking would use up: the full path names what out must be)
            else:
                adv = None
            # Each dtype the native float32 or float64 object itself (~70 ns): numba's dispatcher types
            # a byte-swapped array by a fingerprint without the byte order, which an unaligned native
            # array of the same shape class, typed first, makes it read as native (numba 0.68).
            if adv is not None and (dt is _F32 or dt is _F64) and values.dtype is dt and dones.dtype is dt \
                    and last_values.dtype is dt and (out is None or adv.dtype is dt and ret.dtype is dt) \
                    and not _numba_gae_kernel(rewards, values, dones, last_values, gamma, lam, adv, ret):
                return (adv, ret) if out is None else out
        except (TypeError, ValueError, RuntimeError, AttributeError):
            pass
    _check_out(out)
    name = backend.resolved()[0]
    if name == "numba":  # the kernel checks shapes, gamma and lambda itself (0.35 us less than here)
        return _numba_gae(rewards, values, dones, last_values, gamma, lam, out)
    on_device = name == "cupy" and any(backend.array_module(a) is not np for a in (rewards, values, dones, last_values))
    try:  # the cheap checks first; _validate says what is wrong
        s = rewards.shape
        ok = len(s) == 2 and values.shape == s and dones.shape == s and last_values.shape == s[1:] \
            and 0.0 < gamma <= 1.0 and 0.0 <= lam <= 1.0 and is_real(gamma) and is_real(lam) \
            and rewards.dtype.kind in _REAL_KINDS and values.dtype.kind in _REAL_KINDS \
            and dones.dtype.kind in _REAL_KINDS and last_values.dtype.kind in _REAL_KINDS \
            and (on_device or _binary(dones))  # is_real: not a bool, nor a Decimal or a 1-element array (they compare)
    except (TypeError, AttributeError):  # gamma or lam not a number, an input not an array
        ok = False
    if not ok:
        _validate(rewards, values, dones, last_values, gamma, lam)
    dt = _result_dtype(rewards)
    if out is not None and any(a.shape != s or a.dtype != dt for a in out):
        raise ValueError(f"out must be two {dt} arrays of shape {s}, got {[(a.dtype, a.shape) for a in out]}")
    if out is not None and any((backend.array_module(a) is not np) != on_device for a in out):
        raise ValueError(f"out must be two {'cupy' if on_device else 'numpy'} arrays (the results are where the "
                         f"inputs are), got {[type(a).__module__ for a in out]}")
    if on_device:  # the kernels check dones on the device and write nothing (out included) if one is bad
        from minippo.kernels import gpu

        try:
            return gpu.gae(rewards, values, dones, last_values, gamma, lam, out=out)
        except ValueError:
            _validate(rewards, values, dones, last_values, gamma, lam)  # says which entry
            raise
    res = gae_numpy(rewards, values, dones, last_values, gamma, lam)
    if out is None:
        return res
    out[0][...], out[1][...] = res
    return out


_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)  # (the native dtype objects numpy hands out)
_numba_state: Any = object()  # backend._resolved once compute_gae has run on numba (never None)
_numba_gae_kernel: Any = None  # minippo.kernels.cpu._gae_kernel, then


def _numba_gae(rewards: Array, values: Array, dones: Array, last_values: Array, gamma: float,
               lam: float, out: tuple[Array, Array] | None) -> tuple[Array, Array]:
    """compute_gae on the numba backend through ``cpu.gae``, which prepares the kernel; then arms
    compute_gae's hot path for this resolved backend."""
    global _numba_state, _numba_gae_kernel
    from minippo.kernels import cpu

    res = cpu.gae(rewards, values, dones, last_values, gamma, lam, out)
    _numba_gae_kernel = cpu._gae_kernel  # before the state, so a thread that sees it finds the kernel
    _numba_state = backend._resolved
    return res


def compute_advantages(
    estimator: str,
    rewards: Array,
    values: Array,
    dones: Array,
    last_values: Array,
    gamma: float,
    lam: float,
    out: tuple[Array, Array] | None = None,
) -> tuple[Array, Array]:
    """Dispatch by name: ``gae`` (lambda as given), ``mc`` (lambda = 1: G_t - V(s_t), returns G_t),
    ``td`` (lambda = 0: delta_t, returns r_t + gamma V(s_{t+1}) (1 - d_t)). Same shapes as :func:`compute_gae`.

    All three share the GAE recursion: mc and td are its lambda = 1 and lambda = 0 ends. A rollout
    that stops mid-episode bootstraps the Monte Carlo return from V(s_T), as every finite-horizon
    implementation must.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator={estimator!r} is not allowed; use one of {ESTIMATORS}")
    lam = {"gae": lam, "mc": 1.0, "td": 0.0}[estimator]
    return compute_gae(rewards, values, dones, last_values, gamma, lam, out)
