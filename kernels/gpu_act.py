"""``ActorCritic.act`` on the device (``MINIPPO_BACKEND=cupy``): the actor and critic MLPs in one
launch of ``kernels/act.cu``, the distribution on the host.

With array operations an act on a 64-64 actor-critic is ~29 device operations and 2 syncs (the two
MLPs, the softmax or Gaussian, the finiteness test, the probabilities down for the host's draw, the
actions up, the log-prob). Each costs a launch and host time, while the arithmetic is tiny. The
action is drawn on the host anyway (from the host Generator, so that every backend draws the same
actions), so here the rest of the distribution goes there too:

1. one launch computes every row of both networks (``gpu.act_forward``); for a Gaussian policy the
   same launch writes the clipped log-std beside the mean, so its output is already the dist params
   (B, 2d) the rollout stores. A shared trunk's layers are the first layers of each head's network
   (since session 51; each of a row's two blocks computes the trunk, in parallel, with the same sums);
2. the actor's output comes down in one copy (the logits (B, n), or [mean, log_std]);
3. the host builds the same ``Categorical`` / ``DiagGaussian`` the numpy backend builds from those
   numbers, which checks them for NaN/inf, draws (or takes the mode) with the same Generator calls,
   and gives the log-prob;
4. the actions and log-probs go up (two copies); the values stay on the device.

So an act is 1 launch, 1 download and 2 uploads. The results equal the array path's to rounding: the
MLP sums run in another order than cuBLAS's (see ``act.cu``) and the log-prob is numpy's on the host
rather than CuPy's on the device.

The kernel's table of the layers' addresses (``gpu.LayerTable``) goes up once and is kept in the
policy (``policy.__dict__["_gpu_act_state"]``), rebuilt when any parameter array is rebound
(``policy.params``, an MLP's own params); Adam and checkpoint loading write in place and keep it.
``ActorCritic.__getstate__`` drops it, so a copy never reads the original's arrays.
"""

from __future__ import annotations

from operator import is_ as _is
from typing import Any

import numpy as np

from minippo._checks import finite
from minippo.distributions import Categorical, DiagGaussian
from minippo.policy import LOG_STD_MAX, LOG_STD_MIN

from . import gpu

MAX_BATCH = 1 << 16
"""Largest batch for which ``ActorCritic.act`` on cupy takes this path (a grid of 2 * B blocks);
larger batches take the array path, whose launches are then a small share."""


class _State:
    """The layer table for one set of parameter arrays, or ``ok=False`` when the kernel does not fit
    the policy (an activation other than tanh/relu, arrays not on the device, not C-contiguous or not
    of the policy's dtype, wider layers than a block's shared memory holds, networks of other widths
    or activations than the policy's own: the kernel applies the policy's activation to every network)."""

    __slots__ = ("key", "ok", "layers", "actor_layers", "log_std", "relu")

    def __init__(self, policy: Any, key: tuple) -> None:
        self.key, self.ok, self.actor_layers = key, False, None
        cp = gpu._cupy()
        params = policy.params
        dt = np.dtype(policy.dtype)
        if dt not in gpu.ACT_NAMES or not all(type(a) is cp.ndarray and a.dtype == dt for a in params.values()):
            return
        layers = policy.fused_layers()
        if layers is None:
            return
        nets = [list(zip(Ws, bs, strict=True)) for Ws, bs in layers]
        if policy.trunk is not None:
            # Each head's network is the trunk's layers then the head: the kernel activates every layer
            # but a network's last, as the trunk (its output activated) and the linear heads need. The
            # trunk is computed twice, by two blocks at once: the same sums, so the same features.
            nets = [nets[0] + nets[1], nets[0] + nets[2]]
        self.log_std = None if policy.discrete else params["log_std"]
        if self.log_std is not None and not self.log_std.flags.c_contiguous:
            return
        try:
            self.layers = gpu.LayerTable(nets)
        except (TypeError, ValueError):  # a layer not C-contiguous or of an unexpected shape, or too wide
            return
        self.relu = policy.activation == "relu"
        self.ok = True


def _key(policy: Any) -> tuple:
    """What the state depends on, compared by identity: the networks (an MLP swapped in may hold the
    same arrays under another activation) and every parameter array, in the policy's dict and in each
    MLP's own (the trunk's too, if shared)."""
    trunk = policy.trunk
    return (policy.actor, policy.critic, trunk, *policy.params.values(), None, *policy.actor.params.values(), None,
            *policy.critic.params.values(), None, *(() if trunk is None else trunk.params.values()))


def _state(policy: Any) -> _State | None:
    """The state for the policy's current parameters (rebuilt when one was rebound), or None."""
    key = _key(policy)
    st = policy.__dict__.get("_gpu_act_state")
    if st is None or len(st.key) != len(key) or not all(map(_is, key, st.key)):
        policy.__dict__["_gpu_act_state"] = st = _State(policy, key)
    return st if st.ok else None


def act(
    policy: Any, obs: Any, rng: np.random.Generator | None, deterministic: bool = False, critic: bool = True
) -> tuple[np.ndarray, Any, Any, Any, Any] | None:
    """``policy.act_with_device_actions(obs, rng, deterministic)`` through ``act.cu``: (actions on the
    host (B,) or (B, d), the same on the device, logp (B,), values (B,), dist params (B, n) or
    (B, 2d)), all but the first cupy arrays. ``critic=False`` (what ``predict`` needs) skips the value
    head and every upload: values, the device actions and logp are then None.

    Returns None (the caller runs the array path) unless obs is a (B, obs_dim) cupy array with
    1 <= B <= MAX_BATCH and the policy fits the kernel (see ``_State``). Raises FloatingPointError,
    as the array path does, on non-finite logits, mean or log-std.
    """
    cp = gpu._cupy()
    if type(obs) is not cp.ndarray or obs.ndim != 2 or obs.shape[1] != policy.obs_dim:
        return None
    B = int(obs.shape[0])
    if not 1 <= B <= MAX_BATCH:
        return None
    st = _state(policy)
    if st is None:
        return None
    y0, y1 = gpu.act_forward(st.layers, obs, st.relu, st.log_std, LOG_STD_MIN, LOG_STD_MAX) if critic \
        else _actor_only(st, obs)
    params = y0.get()  # the one download: the logits, or [mean, log_std]
    if deterministic and not critic:  # the mode alone, as the array path takes it: no distribution, so
        out = params if policy.discrete else params[:, :policy.act_dim]  # any temperature (no logits / T)
        finite(**{"the policy's output": out})
        return (out.argmax(axis=1) if policy.discrete else out.copy()), None, None, None, y0
    if policy.discrete:
        dist = Categorical(params, policy.temperature)
    else:
        d = policy.act_dim
        dist = DiagGaussian(np.ascontiguousarray(params[:, :d]), params[0, d:].copy())
    actions = np.asarray(dist.mode()) if deterministic else dist.sample(rng)
    if not critic:
        return actions, None, None, None, y0
    dist.trust(actions)
    logp = dist.log_prob(actions)
    return actions, cp.asarray(actions), cp.asarray(logp), y1[:, 0], y0


def _actor_only(st: _State, obs: Any) -> tuple[Any, None]:
    """The actor's output alone, through a one-network table (made on first use, kept in the state)."""
    if st.actor_layers is None:
        st.actor_layers = gpu.LayerTable(st.layers.nets[:1])
    return gpu.act_forward(st.actor_layers, obs, st.relu, st.log_std, LOG_STD_MIN, LOG_STD_MAX)
