"""RolloutBuffer: preallocated time-major ``(T, N, ...)`` arrays and shuffled minibatches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from minippo._checks import array, flag, float_dtype, generator, int_list, integer
from minippo.advantages import compute_advantages
from minippo.backend import asnumpy

Array = Any


_ADD_NAMES = ("obs", "actions", "logp", "values", "dist", "rewards", "dones", "valid")


class RolloutBuffer:
    """Storage for one rollout of T steps from N envs, allocated once and reused.

    Fields (T, N, ...): ``obs`` (obs_dim), ``actions`` (() or (d,)), ``logp``, ``values``,
    ``rewards``, ``dones``, ``dist`` (the behaviour distribution's parameters, for the exact KL of
    the penalty objective), ``valid`` (0 for the fake reset steps of NEXT_STEP autoreset).
    ``xp`` is the array module (numpy, or cupy so that the rollout lives on the GPU). ``ready``: the
    rollout stored is complete and :meth:`compute_returns` has filled ``advantages`` and ``returns``
    (``PPO.update`` refuses a buffer that is not).
    """

    def __init__(
        self,
        n_steps: int,
        n_envs: int,
        obs_dim: int,
        action_shape: tuple[int, ...],
        dist_dim: int,
        dtype: Any = np.float32,
        discrete: bool = True,
        xp: Any = np,
    ) -> None:
        T, N = integer("n_steps", n_steps, 1), integer("n_envs", n_envs, 1)
        obs_dim, dist_dim = integer("obs_dim", obs_dim, 1), integer("dist_dim", dist_dim, 1)
        dtype, discrete = float_dtype("dtype", dtype), flag("discrete", discrete)
        if dtype not in (np.float32, np.float64):  # (the advantage estimators compute in these two)
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        dims = int_list(action_shape)
        if dims is None or any(d < 1 for d in dims):
            raise TypeError(f"action_shape must be a tuple of integers >= 1 (() for discrete actions), "
                            f"got {action_shape!r}")
        action_shape = tuple(dims)
        self.T, self.N, self.xp = T, N, xp
        self.obs = xp.zeros((T, N, obs_dim), dtype=dtype)
        self.actions = xp.zeros((T, N, *action_shape), dtype=np.int64 if discrete else dtype)
        self.dist = xp.zeros((T, N, dist_dim), dtype=dtype)
        self.logp = xp.zeros((T, N), dtype=dtype)  # log pi_old(a_t|s_t)
        self.values = xp.zeros((T, N), dtype=dtype)  # V(s_t) when acting
        self.rewards = xp.zeros((T, N), dtype=dtype)
        self.dones = xp.zeros((T, N), dtype=dtype)
        self.valid = xp.zeros((T, N), dtype=dtype)
        self.advantages = xp.zeros((T, N), dtype=dtype)  # filled by compute_returns
        self.returns = xp.zeros((T, N), dtype=dtype)
        # the mask again on the host, as the env gave it: minibatches() selects with it, no device copy
        self.valid_host = np.zeros((T, N), dtype=bool)
        # add()'s argument shapes, in its order (one tuple comparison per step)
        self._step_shapes = tuple((N, *a.shape[2:]) for a in (self.obs, self.actions, self.logp, self.values,
                                                              self.dist, self.rewards, self.dones, self.valid))
        self.pos = 0
        self.ready = False  # compute_returns() ran on the rollout now stored (reset() clears it)
        self._full_batch: dict[str, Array] | None = None  # see minibatches(); rebuilt per rollout

    def add(
        self,
        obs: Array,
        actions: Array,
        logp: Array,
        values: Array,
        dist: Array,
        rewards: Array,
        dones: Array,
        valid: Array,
    ) -> None:
        """Store step ``pos`` for all N envs: obs (N, obs_dim), actions (N,) discrete or (N, act_dim),
        dist (N, dist_dim) (the distribution's parameters: logits, or mean and log-std), and logp,
        values, rewards, dones, valid (N,) (``valid`` best on the host, where the env loop has it)."""
        if self.pos >= self.T:
            raise IndexError(f"buffer is full ({self.T} steps); call reset() after the update")
        try:
            shapes = (obs.shape, actions.shape, logp.shape, values.shape, dist.shape, rewards.shape, dones.shape,
                      valid.shape)
        except AttributeError:  # (a list, a scalar): named
            for name, a in zip(_ADD_NAMES, (obs, actions, logp, values, dist, rewards, dones, valid), strict=True):
                array(name, a)
            raise
        if shapes != self._step_shapes:  # checked before anything is written
            for name, shape, want in zip(_ADD_NAMES, shapes, self._step_shapes, strict=True):
                if tuple(shape) != want:
                    raise ValueError(f"{name} must have shape {want}, got {tuple(shape)}")
        if getattr(actions, "dtype", None) is None:  # (a memoryview has a shape, not a dtype)
            array("actions", actions)
        if self.actions.dtype.kind == "i" and actions.dtype.kind not in "iu":
            raise TypeError(f"discrete actions must be integers, got dtype {actions.dtype}")
        t = self.pos
        self.obs[t] = obs
        self.actions[t] = actions
        self.logp[t] = logp
        self.values[t] = values
        self.dist[t] = dist
        self.rewards[t] = rewards
        self.dones[t] = dones
        host = type(valid) is np.ndarray
        self.valid[t] = valid if host and self.xp is np else self.xp.asarray(valid, dtype=self.valid.dtype)
        self.valid_host[t] = valid if host else asnumpy(valid)  # (a float mask: nonzero is True)
        self.pos += 1

    def reset(self) -> None:
        """Start filling from step 0 again (the arrays are reused, not cleared); ``ready`` is False
        until :meth:`compute_returns` has run on the next full rollout."""
        self.pos = 0
        self.ready = False
        self._full_batch = None

    def compute_returns(self, last_values: Array, gamma: float, lam: float, estimator: str = "gae") -> None:
        """Fill ``advantages`` and ``returns`` (T, N) from the full rollout; last_values (N,). Sets
        ``ready``."""
        if self.pos != self.T:
            raise RuntimeError(f"rollout incomplete: {self.pos} of {self.T} steps stored")
        self._full_batch = None
        self.ready = False
        compute_advantages(
            estimator, self.rewards, self.values, self.dones, last_values, gamma, lam,
            out=(self.advantages, self.returns),
        )
        self.ready = True

    def minibatches(
        self, batch_size: int, rng: np.random.Generator, min_size: int = 1
    ) -> Iterator[dict[str, Array]]:
        """Yield dicts of flat (B, ...) arrays covering every valid transition exactly once.

        The T*N transitions are flattened, permuted once with ``rng`` and cut into
        ``T*N // batch_size`` minibatches (permute-then-slice); masked reset steps are dropped
        first, so a minibatch may then be a few samples smaller than ``batch_size``, and there are
        fewer minibatches where that would leave one under ``min_size`` samples (2 when advantages
        are normalised per minibatch): their samples join the others, which can then be a few larger
        than ``batch_size``. Fewer valid samples in all than ``min_size`` (or one minibatch for the
        whole rollout) still give one minibatch, under ``min_size``: the caller decides (the trainer
        skips it). When one minibatch covers the whole rollout it is yielded in time order, built once
        per rollout.

        Treat the minibatches as read-only: a minibatch covering the whole rollout is yielded again in
        every epoch, and where no step is masked its arrays are views of the buffer's (no copy), so
        an edit in place would change the buffer and every later epoch; other minibatches are copies.
        """
        batch_size, min_size = integer("batch_size", batch_size, 1), integer("min_size", min_size, 1)
        generator("rng", rng)  # (used only when there are several minibatches: checked always)
        n = self.T * self.N
        n_minibatches = n // batch_size
        if n_minibatches < 1 or n % batch_size:
            raise ValueError(f"batch_size={batch_size} must divide T*N = {n}")
        flat = {
            "obs": self.obs.reshape(n, -1),
            "actions": self.actions.reshape(n, *self.actions.shape[2:]),
            "logp_old": self.logp.reshape(n),
            "values_old": self.values.reshape(n),
            "advantages": self.advantages.reshape(n),
            "returns": self.returns.reshape(n),
            "dist_old": self.dist.reshape(n, -1),
        }
        valid = self.valid_host.reshape(n)
        if n_minibatches == 1:
            if not valid.any():  # every step a masked reset step (next_step autoreset, n_steps = 1)
                return
            # One minibatch is the whole rollout: its mean loss does not depend on the order, so
            # no permutation, and the valid transitions are gathered once per rollout, not per
            # epoch (7 copies saved per epoch; ~7% of a CartPole run).
            if self._full_batch is None:
                if valid.all():
                    self._full_batch = flat
                else:  # (the index goes up only when used: CuPy copies a host index)
                    keep = self.xp.asarray(np.flatnonzero(valid))
                    self._full_batch = {k: v[keep] for k, v in flat.items()}
            yield self._full_batch
            return
        idx = rng.permutation(n)
        if not valid.all():
            idx = idx[valid[idx] > 0]
        for part in np.array_split(idx, max(1, min(n_minibatches, idx.size // min_size))):
            if part.size == 0:
                continue
            sel = self.xp.asarray(part)
            yield {k: v[sel] for k, v in flat.items()}
