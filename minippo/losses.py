"""Policy objectives of the ladder PG -> A2C -> IS surrogate -> PPO-penalty -> PPO-clip, plus the
value loss and the entropy bonus. Each is written as a loss to *minimise* (the negative of the
objective the paper maximises) and returns ``(loss, d_inputs, stats)``, where ``d_inputs`` is the
derivative of the loss with respect to the per-sample inputs (``logp``, ``values``, ...), already
divided by the batch size B. Notation follows the paper and the study notes (shared seeds):
``r_t(theta) = pi_theta(a_t|s_t) / pi_theta_old(a_t|s_t) = exp(logp - logp_old)`` (ratio),
``A_t`` the advantage estimate (优势函数), ``epsilon`` the clip range, ``beta`` the KL coefficient.
Below, ``r_t`` is always this ratio (the reward, which shares the letter in the paper, does not appear).
Derivations: docs/derivations.md sections 7-9.

The loss and the stats are Python floats for numpy inputs. For cupy inputs they stay 0-d device
arrays (reading each back would be one device sync each); :func:`to_floats` reads a dict of them back
in one copy, as ``minippo.ppo.loss_and_grads`` does.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from minippo._checks import DeferredChecks, finite, fixed, is_real, real, renamed_state
from minippo.backend import array_module, asnumpy

Array = Any


def _check(first: Array, _name: str = "logp", **others: Array) -> int:
    """Validate (B,) inputs: floating-point arrays (numpy or cupy), same shape, non-empty, finite.
    Returns B."""
    for name, a in ((_name, first), *others.items()):
        kind = getattr(getattr(a, "dtype", None), "kind", None)
        if kind is None or not hasattr(a, "ndim"):
            raise TypeError(f"{name} must be a float32 or float64 array of shape (B,), got {type(a).__name__}")
        if kind != "f":  # integer gradients would be truncated to 0, complex ones meaningless
            raise TypeError(f"{name} must be a float32 or float64 array, got dtype {a.dtype}")
    if first.ndim != 1:
        raise ValueError(f"{_name} must have shape (B,), got {tuple(first.shape)}")
    b = int(first.shape[0])
    if b == 0:
        raise ValueError(f"{_name} is empty: a loss needs at least one sample")
    for name, a in others.items():
        if a.shape != first.shape:
            raise ValueError(f"{name} must have shape ({b},) like {_name}, got {tuple(a.shape)}")
    finite(**{_name: first}, **others)
    return b


def _scalar(x: Array) -> Any:
    """A 0-d result: a Python float for numpy; on a device (cupy) the 0-d device array itself, so that
    a minibatch's scalars come back in one copy (:func:`to_floats`) rather than one sync each."""
    return float(x) if array_module(x) is np else x


def to_floats(stats: dict[str, Any], checks: DeferredChecks | None = None) -> dict[str, float]:
    """``stats`` with every value a Python float: 0-d device arrays (what the losses return for cupy
    inputs) are read back together, in one device-to-host copy. ``checks``: the deferred checks of
    the code that computed them (:func:`minippo._checks.deferred_checks`); their verdict comes back in
    the same copy, and the first failed check's error is raised (before any stat is returned)."""
    dev = [k for k, v in stats.items() if array_module(v) is not np]
    ok = checks.ok if checks is not None else None
    verdict = [] if ok is None else [ok]
    if not dev and not verdict:
        return {k: float(v) for k, v in stats.items()}
    host = asnumpy(np.stack([a.astype(np.float64) for a in [*(stats[k] for k in dev), *verdict]]))  # cupy.stack
    if verdict:
        checks.verify(host[-1])
    got = dict(zip(dev, host.tolist()[:len(dev)], strict=True))
    return {k: got[k] if k in got else float(v) for k, v in stats.items()}


def ratio_stats(logp: Array, logp_old: Array, clip_eps: float | None = None) -> dict[str, float]:
    """Diagnostics of r_t = exp(logp - logp_old), logp and logp_old (B,): ``approx_kl`` =
    mean((r - 1) - log r) (the k3 estimator of KL(pi_old || pi_theta), unbiased and >= 0) and, when
    ``clip_eps`` is given, ``clipfrac`` = fraction with r outside [1 - epsilon, 1 + epsilon] (compared
    with the bounds :func:`clip_objective` clips to, so a ratio counted here is one the clip moved)."""
    _check(logp, "logp", logp_old=logp_old)
    if clip_eps is not None:
        clip_eps = real("clip_eps", clip_eps, 0.0, low_open=True)
    return _ratio_stats(*_log_ratio(logp, logp_old), clip_eps)


def _log_ratio(logp: Array, logp_old: Array) -> tuple[Array, Array]:
    """log r_t and r_t = exp(log r_t), (B,) each, in float64 whatever the inputs' dtype (as the fused
    numba step): in float32 r_t overflows from log r_t = 88.7."""
    log_ratio = logp.astype(np.float64, copy=False) - logp_old.astype(np.float64, copy=False)
    return log_ratio, np.exp(log_ratio)


def _ratio_times_adv(ratio: Array, adv: Array) -> Array:
    """r_t A_t (B,) float64, exactly 0 where A_t = 0: a sample without advantage adds nothing, and has no
    gradient, even where r_t overflowed to inf (log r > 709), where inf * 0 made the loss NaN."""
    with np.errstate(invalid="ignore"):  # (inf * 0: replaced by the where)
        return np.where(adv == 0, 0.0, ratio * adv)


def _ratio_stats(log_ratio: Array, ratio: Array, clip_eps: float | None) -> dict[str, float]:
    """:func:`ratio_stats` on the log-ratio and ratio an objective has already computed and checked."""
    # expm1(x) - x, not (exp(x) - 1) - x: for r near 1 the naive form cancels catastrophically
    # and can come out negative (e.g. -5e-48 for log r = 5e-48); expm1(x) >= x holds in floats.
    stats = {"approx_kl": _scalar((np.expm1(log_ratio) - log_ratio).mean())}
    if clip_eps is not None:
        stats["clipfrac"] = _scalar(((ratio < 1.0 - clip_eps) | (ratio > 1.0 + clip_eps)).mean())
    return stats


# ---------------------------------------------------------------- 1. REINFORCE / A2C
def pg_objective(logp: Array, adv: Array) -> tuple[float, Array, dict[str, float]]:
    """Vanilla policy gradient: L = -mean_t[ log pi_theta(a_t|s_t) * A_t ]; logp, adv (B,) ->
    (L, dL/dlogp (B,), stats).

    With ``A_t = G_t - V(s_t)`` (discounted reward-to-go minus a baseline, 基线, here the critic's value)
    this is REINFORCE with baseline; with the one-step TD error ``A_t = delta_t`` (derivations 7.2) it
    is the A2C actor loss.
    dL/dlogp_t = -A_t / B.
    """
    b = _check(logp, adv=adv)  # the loss in float64, as the ratio objectives' (float32 overflows past 3.4e38)
    return _scalar(-(logp.astype(np.float64) * adv.astype(np.float64)).mean()), -adv / b, {}


# ---------------------------------------------------------------- 2. importance-sampled surrogate
def surrogate_objective(
    logp: Array, logp_old: Array, adv: Array
) -> tuple[float, Array, dict[str, float]]:
    """Importance-sampled surrogate (重要性采样): L = -mean_t[ r_t(theta) A_t ]; logp, logp_old,
    adv (B,) -> (L, dL/dlogp (B,), stats).

    Its gradient at theta = theta_old equals the policy gradient; unconstrained, repeated steps
    on it move the policy too far (paper Table 1: -0.39). dL/dlogp_t = -r_t A_t / B (d r_t / d logp_t = r_t;
    derivations 7.3).
    """
    b = _check(logp, logp_old=logp_old, adv=adv)
    log_ratio, ratio = _log_ratio(logp, logp_old)
    ra = _ratio_times_adv(ratio, adv)
    return _scalar(-ra.mean()), (-ra / b).astype(logp.dtype), _ratio_stats(log_ratio, ratio, None)


# ---------------------------------------------------------------- 3. PPO-clip
def clip_objective(
    logp: Array, logp_old: Array, adv: Array, clip_eps: float
) -> tuple[float, Array, dict[str, float]]:
    """PPO-clip (paper eq. 7): L = -mean_t[ min(r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t) ].

    logp, logp_old, adv: (B,). Where the clipped term is strictly smaller it is the active one and
    is constant in theta, so the gradient there is exactly 0; elsewhere dL/dlogp_t = -r_t A_t / B.
    """
    clip_eps = real("clip_eps", clip_eps, 0.0, low_open=True)
    b = _check(logp, logp_old=logp_old, adv=adv)
    log_ratio, ratio = _log_ratio(logp, logp_old)
    unclipped = _ratio_times_adv(ratio, adv)
    clipped = np.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv
    take_clipped = clipped < unclipped
    loss = _scalar(-np.where(take_clipped, clipped, unclipped).mean())
    dlogp = np.where(take_clipped, 0.0, -unclipped / b).astype(logp.dtype)
    return loss, dlogp, _ratio_stats(log_ratio, ratio, clip_eps)


# ---------------------------------------------------------------- 4. PPO-penalty
def kl_penalty_objective(
    logp: Array, logp_old: Array, adv: Array, kl: Array, beta: float
) -> tuple[float, tuple[Array, Array], dict[str, float]]:
    """PPO with KL penalty (paper eq. 8): L = -mean_t[ r_t A_t - beta KL[pi_old(.|s_t), pi_theta(.|s_t)] ].

    logp, logp_old, adv: (B,); ``kl`` (B,) is the exact per-state KL(pi_old || pi_theta). Returns
    d_inputs = (dL/dlogp, dL/dkl), each (B,), = (-r_t A_t / B, beta / B).
    """
    beta = real("beta", beta, 0.0)
    b = _check(logp, logp_old=logp_old, adv=adv, kl=kl)
    log_ratio, ratio = _log_ratio(logp, logp_old)
    ra = _ratio_times_adv(ratio, adv)
    loss = _scalar(-ra.mean() + beta * kl.mean())
    stats = _ratio_stats(log_ratio, ratio, None)
    stats.update(kl=_scalar(kl.mean()), beta=float(beta))
    return loss, ((-ra / b).astype(logp.dtype), np.full_like(kl, beta / b)), stats


class AdaptiveKL:
    """The paper's adaptive KL coefficient (Section 4); the study notes' KL_min = kl_target / 1.5 and
    KL_max = 1.5 kl_target (kl_target is the paper's d_targ).

    After each policy update with mean KL ``d``: if ``d < kl_target / 1.5`` then ``beta /= 2``
    (penalty too strong); if ``d > kl_target * 1.5`` then ``beta *= 2`` (too weak). beta stays
    positive and finite: a halving that would round to 0 (after ~1075 of them) or a doubling that
    would overflow to inf leaves it where it is, since from 0 or inf the rule could never return.
    """

    def __init__(self, kl_target: float = 0.01, beta: float = 1.0) -> None:
        self._kl_target = real("kl_target", kl_target, 0.0, low_open=True)
        self.beta = beta

    kl_target = fixed("AdaptiveKL", "kl_target", "AdaptiveKL(kl_target, beta) (a trainer's is its config's: "
                      "PPO.load(path, kl_target=...))", "d_targ, the mean KL the rule steers towards.")

    def __setstate__(self, state: dict) -> None:  # (pickles from before the fixed properties: renamed)
        self.__dict__.update(renamed_state(state, ("kl_target", "beta")))

    @property
    def beta(self) -> float:
        """The penalty coefficient now. Settable, checked: finite and > 0 (from 0 neither halving nor
        doubling moves it: a beta set to 0 switched the penalty off for good)."""
        return self._beta

    @beta.setter
    def beta(self, value: float) -> None:
        self._beta = real("beta", value, 0.0, low_open=True)  # (finite: real refuses infinities)

    def update(self, kl: float) -> float:
        """Apply the rule for the measured mean KL; returns the new beta."""
        if not is_real(kl):
            raise TypeError(f"kl must be a real number (the measured mean KL), got {kl!r}")
        kl = float(kl)
        if not math.isfinite(kl):
            raise FloatingPointError(f"kl is {kl}: cannot adapt beta")
        if kl < self.kl_target / 1.5:
            if self.beta / 2.0 > 0.0:
                self.beta /= 2.0
        elif kl > self.kl_target * 1.5:
            if math.isfinite(self.beta * 2.0):
                self.beta *= 2.0
        return self.beta


# ---------------------------------------------------------------- value loss and entropy bonus
def value_loss(
    values: Array,
    returns: Array,
    values_old: Array | None = None,
    clip_eps: float | None = None,
) -> tuple[float, Array, dict[str, float]]:
    """L^VF = 0.5 * mean((V - R)^2), or with clipping (PPO detail #9)
    0.5 * mean(max((V - R)^2, (V_clip - R)^2)), V_clip = V_old + clip(V - V_old, -eps, eps).

    values, returns, values_old: (B,). The clipped branch is taken where |V - V_old| >= eps and
    its square is strictly larger; there V_clip does not depend on V and dL/dV = 0. Elsewhere
    dL/dV = (V - R)/B. (Inside the range V_clip = V in exact arithmetic, so the max is the unclipped
    term: comparing the rounded V_old + (V - V_old) with V there would count rounding as clipping.)
    """
    if clip_eps is not None and values_old is None:
        raise ValueError("values_old is required when clip_eps is given (clipped value loss)")
    b = _check(values, "values", returns=returns, **({} if clip_eps is None else {"values_old": values_old}))
    err = values - returns
    if clip_eps is None:  # (squared in float64, as the fused step does: in float32 |err| > 1.8e19 gave inf)
        e = err.astype(np.float64)
        return _scalar(0.5 * (e * e).mean()), err / b, {}
    clip_eps = real("clip_eps", clip_eps, 0.0, low_open=True)
    delta = values - values_old
    v_clip = values_old + np.clip(delta, -clip_eps, clip_eps)
    err_c = v_clip - returns
    # max of the two squared errors: the clipped one where it is larger and the clip was active
    # (|V - V_old| >= eps). |err_c| > |err| orders the squares without squaring them (float32 squares
    # overflow to inf past |err| ~ 1.8e19, and inf > inf is False)
    take_clipped = (np.abs(err_c) > np.abs(err)) & ~(np.abs(delta) < clip_eps)
    e = np.where(take_clipped, err_c, err).astype(np.float64)
    loss = _scalar(0.5 * (e * e).mean())
    dv = np.where(take_clipped, 0.0, err) / b
    return loss, dv.astype(values.dtype), {"vclipfrac": _scalar(take_clipped.mean())}


def entropy_bonus(entropy: Array, coef: float) -> tuple[float, Array, dict[str, float]]:
    """Entropy bonus as a loss: L^S = -c_2 mean(H), c_2 = ent_coef; entropy (B,) -> (L^S, dL/dH (B,) = -c_2 / B, {}).
    ``coef`` >= 0, as ``PPOConfig.ent_coef`` (a negative one would reward collapsing the policy)."""
    b = _check(entropy, "entropy")
    coef = real("coef", coef, 0.0)
    return _scalar(-coef * entropy.mean()), np.full_like(entropy, -coef / b), {}
