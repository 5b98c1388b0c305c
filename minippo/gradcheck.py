"""Central finite differences: check any hand-written gradient in this package.

Example (every gradient of the PPO loss for one minibatch; the policy is built with
``dtype=np.float64``, since finite differences in float32 would only measure rounding)::

    from minippo.gradcheck import check_grads
    err = check_grads(lambda: loss_and_grads(policy, batch, cfg)[0]["loss"],
                      policy.params, loss_and_grads(policy, batch, cfg)[1])
    assert err < 1e-6
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from minippo._checks import on_host, real, writable
from minippo.backend import asnumpy

Array = Any


def numerical_grads(
    f: Callable[[], float], params: dict[str, np.ndarray], h: float = 1e-6
) -> dict[str, np.ndarray]:
    """dF/dparams by central differences (f(p + h) - f(p - h)) / (step taken), one coordinate at a time.

    ``f`` takes no argument and reads ``params`` (perturbed in place and restored exactly, also
    when ``f`` raises). Each array must be float64 and writable (checked for all of them before
    ``f`` is first called): the truncation error is O(h^2) and the rounding error O(eps/h). The
    difference is divided by the step actually taken, (p + h) - (p - h) as stored, which is not 2h
    once |p| >> h (at |p| ~ 1e5 dividing by 2h was off by ~1e-5). Returns a dict of arrays of the
    shapes of ``params``.
    """
    h = real("h", h, 0.0, low_open=True)
    _callable_and_dict(f, params)
    for k, p in params.items():
        if p.dtype != np.float64:
            raise TypeError(f"params[{k!r}] is {p.dtype}; finite differences need float64")
        writable(f"params[{k!r}]", p, "finite differences perturb it in place")
    out: dict[str, np.ndarray] = {}
    for k, p in params.items():
        g = np.zeros_like(p)
        for i in np.ndindex(p.shape):  # works for non-contiguous arrays too
            old = p[i]
            up, down = old + h, old - h
            try:
                p[i] = up
                fp = _value(f)
                p[i] = down
                fm = _value(f)
            finally:
                p[i] = old
            g[i] = (fp - fm) / (up - down)
        out[k] = g
    return out


def _callable_and_dict(f: Any, params: Any) -> None:
    """TypeError unless ``f`` is callable and ``params`` a dict of numpy arrays (naming the entry that
    is not one)."""
    if not callable(f):
        raise TypeError(f"f must be a function of no arguments returning the loss, got {type(f).__name__}")
    if not isinstance(params, dict):
        raise TypeError("params must be a dict of numpy arrays (name -> array, e.g. policy.params), got "
                        f"{type(params).__name__}")
    for k, p in params.items():
        if not isinstance(p, np.ndarray):
            on_host("finite differences perturb the parameters in place on the host (build the policy on "
                    "the numpy backend, MINIPPO_BACKEND=numpy)", **{f"params[{k!r}]": p})
            raise TypeError(f"params[{k!r}] must be a numpy array, got {type(p).__name__}")


def _value(f: Callable[[], float]) -> float:
    """``f()`` as a float; TypeError when it is not one number (a stats dict, an array of several),
    FloatingPointError when it is NaN or inf (every difference taken with it would be meaningless)."""
    v = f()
    if isinstance(v, (bool, str, bytes)) or np.size(v) != 1 or not np.isrealobj(v):
        raise TypeError(f"f must return one real number (e.g. loss_and_grads(...)[0]['loss']), got {type(v).__name__}")
    try:
        v = float(np.asarray(v).reshape(()))
    except (TypeError, ValueError):
        raise TypeError(f"f must return one real number (e.g. loss_and_grads(...)[0]['loss']), got {v!r}") from None
    if not np.isfinite(v):
        raise FloatingPointError(f"f returned {v}: no finite difference can be taken")
    return v


def rel_error(a: Array, b: Array, floor: float = 1e-3) -> float:
    """Norm-wise relative error ||a - b|| / max(||a||, ||b||, floor) of two same-shape arrays (host
    or device arrays; both are compared on the host, in float64).

    Why a floor: central differences in float64 carry rounding noise of up to about
    eps_mach * S / h per entry (h = 1e-6), where S is the size of the terms summed into f: |f|
    itself when they do not cancel, ~1e-10 for S ~ 1. Arrays whose true gradient is ~0 (a clipped
    sample, an unused head) are therefore compared absolutely, against ``floor``: the noise of a
    few entries is ~1e-7 of 1e-3, under the 1e-6 the tests demand, while a wrong gradient of norm
    >= 1e-3 still shows as an error of order 1. The noise's norm grows like sqrt(entries), and S
    can be much larger than |f| when f is a sum that cancels (an entropy weighted by upstream
    gradients of both signs): callers checking such a gradient, or thousands of entries of it
    near zero, scale ``floor`` to S * sqrt(entries) (tests/test_distributions.py does).
    """
    floor = real("floor", floor, 0.0)
    a, b = np.asarray(asnumpy(a), dtype=np.float64), np.asarray(asnumpy(b), dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    for name, x in (("a", a), ("b", b)):  # a NaN made the error NaN, and then 0.0: a pass
        if not np.isfinite(x).all():
            raise FloatingPointError(f"{name} contains NaN or inf: no error can be measured")
    # in units of the largest entry: the norms of entries past ~1e154 overflowed to inf, inf / inf
    # was NaN, and check_grads' max() kept a finite error over it (a wrong gradient passed)
    scale = max(float(np.abs(a).max(initial=0.0)), float(np.abs(b).max(initial=0.0)))
    if scale == 0.0:
        return 0.0  # both zero: equal
    a, b = a / scale, b / scale
    denom = max(float(np.linalg.norm(a)), float(np.linalg.norm(b)), floor / scale)
    return float(np.linalg.norm(a - b)) / denom


def check_grads(
    f: Callable[[], float],
    params: dict[str, np.ndarray],
    grads: dict[str, Array],
    h: float = 1e-6,
    floor: float = 1e-3,
) -> float:
    """Largest (over parameter arrays) relative error between analytic ``grads`` and central
    differences of ``f``: the largest value of :func:`grad_errors` (which tells which array it is).
    params: name -> float64 host array of any shape (``f`` reads them; each entry is moved by +-h
    and put back); grads: the same names, each of its parameter's shape. Returns a scalar."""
    return max(grad_errors(f, params, grads, h, floor).values())


def grad_errors(
    f: Callable[[], float],
    params: dict[str, np.ndarray],
    grads: dict[str, Array],
    h: float = 1e-6,
    floor: float = 1e-3,
) -> dict[str, float]:
    """Per parameter array (keyed like ``params``), the relative error between analytic ``grads``
    and central differences of ``f`` (see :func:`rel_error`). Keys must match exactly (and not be
    empty) and ``grads[k]`` has ``params[k]``'s shape; ``params`` must be float64 host arrays (see
    :func:`numerical_grads`), ``grads`` may be any float dtype, on the host or the device (copied
    to the host).

    The floor is scaled by max(1, |f|): the rounding noise of a central difference is
    proportional to |f| (eps_mach * |f| / h), so a loss of 100 carries 100x the noise of a loss
    of 1, and the floor keeps the same noise-to-floor ratio (~1e-7) at any loss scale.
    """
    _callable_and_dict(f, params)
    if not isinstance(grads, dict):
        raise TypeError(f"grads must be a dict of arrays keyed like params, got {type(grads).__name__}")
    if params.keys() != grads.keys():
        raise KeyError(f"grads keys differ from params: {sorted(set(params) ^ set(grads))}")
    if not params:
        raise ValueError("params is empty: there is no gradient to check")
    floor = real("floor", floor, 0.0, low_open=True)
    grads = {k: asnumpy(g) for k, g in grads.items()}
    for k in params:  # checked before the differences are taken (one f call per entry, twice)
        g = grads[k]
        if g.shape != params[k].shape:
            raise ValueError(f"grads[{k!r}] has shape {g.shape}, params[{k!r}] {params[k].shape}")
        if g.dtype.kind != "f":
            raise TypeError(f"grads[{k!r}] must be a float array, got {g.dtype}")
        if not np.isfinite(g).all():  # a NaN gave an error of 0.0: a pass
            raise FloatingPointError(f"grads[{k!r}] contains NaN or inf")
    scaled_floor = floor * max(1.0, abs(_value(f)))
    num = numerical_grads(f, params, h)
    return {k: rel_error(grads[k], num[k], scaled_floor) for k in params}
