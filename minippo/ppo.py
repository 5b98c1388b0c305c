"""The PPO loss for one minibatch and all of its gradients (the trainer is added below it).

``loss_and_grads`` is the one call a student uses to look at PPO's gradients::

    stats, grads = loss_and_grads(policy, batch, config)

total loss  L = L^policy + c_1 L^VF - c_2 H   (paper eq. 9, written as a loss to minimise)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minippo import losses
from minippo.config import PPOConfig
from minippo.policy import ActorCritic

Array = Any

BATCH_KEYS = ("obs", "actions", "logp_old", "advantages", "returns", "values_old")


def normalize(adv: Array, eps: float = 1e-8) -> Array:
    """(A - mean A) / (std A + eps) over the minibatch (PPO detail #7); needs >= 2 samples."""
    if adv.shape[0] < 2:
        raise ValueError("advantage normalisation needs a minibatch of at least 2 samples")
    return (adv - adv.mean()) / (adv.std() + eps)


def loss_and_grads(
    policy: ActorCritic,
    batch: dict[str, Array],
    config: PPOConfig,
    beta: float | None = None,
    clip_eps: float | None = None,
    ent_coef: float | None = None,
) -> tuple[dict[str, float], dict[str, Array]]:
    """Total PPO loss on one minibatch and d(loss)/d(every parameter).

    batch: ``obs`` (B, obs_dim), ``actions`` (B,) or (B, d), ``logp_old`` (B,), ``advantages``
    (B,), ``returns`` (B,), ``values_old`` (B,), and for ``objective="kl_penalty"`` also
    ``dist_old`` (B, n) logits or (B, 2d) [mean, log_std] of pi_old. ``beta``, ``clip_eps`` and
    ``ent_coef`` override the config (the trainer passes scheduled values).
    Returns (stats, grads): stats has loss, policy_loss, value_loss, entropy, approx_kl,
    clipfrac (clip only), kl and beta (kl_penalty only); grads is keyed like ``policy.params``.
    """
    missing = [k for k in BATCH_KEYS if k not in batch]
    if config.objective == "kl_penalty" and "dist_old" not in batch:
        missing.append("dist_old")
    if missing:
        raise KeyError(f"batch is missing {missing}; it needs {list(BATCH_KEYS)}")
    clip_eps = config.clip_eps if clip_eps is None else clip_eps
    ent_coef = config.ent_coef if ent_coef is None else ent_coef
    adv = batch["advantages"]
    if config.normalize_advantages:
        adv = normalize(adv)

    logp, entropy, values, cache = policy.evaluate(batch["obs"], batch["actions"])
    logp_old = batch["logp_old"]
    dkl = None
    objective = config.objective
    if objective == "clip":
        pl, dlogp, stats = losses.clip_objective(logp, logp_old, adv, clip_eps)
    elif objective == "kl_penalty":
        kl = policy.kl_old(batch["dist_old"], cache)
        beta = config.kl_beta if beta is None else beta
        pl, (dlogp, dkl), stats = losses.kl_penalty_objective(logp, logp_old, adv, kl, beta)
    elif objective == "surrogate":
        pl, dlogp, stats = losses.surrogate_objective(logp, logp_old, adv)
    else:  # a2c, reinforce: the plain policy gradient, on-policy
        pl, dlogp, stats = losses.pg_objective(logp, adv)
        stats = {**stats, **losses.ratio_stats(logp, logp_old)}
    vl, dv, vstats = losses.value_loss(
        values, batch["returns"], batch["values_old"], clip_eps if config.clip_vloss else None
    )
    el, dent, _ = losses.entropy_bonus(entropy, ent_coef)
    grads = policy.backward(
        cache, dlogp=dlogp, dentropy=dent if ent_coef else None, dvalue=config.vf_coef * dv, dkl=dkl
    )
    stats = {
        **stats,
        **vstats,
        "loss": pl + config.vf_coef * vl + el,
        "policy_loss": pl,
        "value_loss": vl,
        "entropy": float(entropy.mean()),
    }
    return stats, grads


__all__ = ["loss_and_grads", "normalize", "BATCH_KEYS", "np"]
