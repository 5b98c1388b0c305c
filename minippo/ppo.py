"""PPO: the loss of one minibatch with all of its gradients, and the trainer around it.

``loss_and_grads`` is the one call a student uses to look at PPO's gradients::

    stats, grads = loss_and_grads(policy, batch, config)

total loss  L = L^policy + c_1 L^VF - c_2 mean_t H_t   (paper eq. 9, written as a loss to minimise;
docs/derivations.md section 9)

``PPO`` runs the loop of the paper's Algorithm 1: collect T steps from N envs with pi_theta_old,
compute advantages, then K epochs of shuffled minibatch Adam steps on the loss above.
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from minippo import backend, losses
from minippo._checks import EnvOutputError, array, cast_quietly, deferred_checks, fixed, integer, real, reset_obs
from minippo.buffer import RolloutBuffer
from minippo.config import (
    MAX_TIMESTEPS,
    OBJECTIVES,
    ON_POLICY,
    TOO_MANY_TIMESTEPS,
    PPOConfig,
    agent_rng,
    train_reset_seed,
)
from minippo.optim import Adam, Schedule
from minippo.policy import ActorCritic, check_obs

Array = Any

# Seconds PPO.close gives async workers to finish a step that was interrupted, before they are stopped.
PENDING_CLOSE_TIMEOUT = 2.0

BATCH_KEYS = ("obs", "actions", "logp_old", "advantages", "returns", "values_old")


class TotalReached(ValueError):
    """A step budget ``total`` at or below the ``done`` steps a model has run: it would train nothing, and
    a save would then record the lower total. Raised by :meth:`PPO.learn` and :meth:`PPO.load`."""

    def __init__(self, total: int, done: int, counts: str) -> None:
        super().__init__(f"total_timesteps={total}: the model has already run {done} steps; {counts}: pass a "
                         f"total above {done}")
        self.total, self.done = total, done


class NonFiniteEnvError(ValueError):
    """The env returned a NaN or inf observation or reward, or one beyond the policy's dtype's range
    (training stops before it is used)."""


class ReturnOverflowError(NonFiniteEnvError, FloatingPointError):
    """The env's rewards, each inside the policy's dtype's range, have discounted sums (the returns and
    advantages) that are not: raised by :meth:`PPO.update` before any parameter is updated. A
    NonFiniteEnvError (the env's data) and a FloatingPointError (what the update raised before)."""


def check_batch_keys(batch: dict[str, Array], objective: str) -> None:
    """KeyError naming what a minibatch for ``objective`` lacks: :data:`BATCH_KEYS`, and ``dist_old``
    for kl_penalty. batch: name -> array with the B samples on axis 0 (obs (B, obs_dim), actions (B,)
    or (B, d), dist_old (B, n) or (B, 2d), the rest (B,)); only the keys are checked here."""
    needed = (*BATCH_KEYS, "dist_old") if objective == "kl_penalty" else BATCH_KEYS
    missing = [k for k in needed if k not in batch]
    if missing:
        raise KeyError(f"batch is missing {missing}; objective={objective!r} needs {list(needed)}")


def normalize(adv: Array, eps: float = 1e-8) -> Array:
    """(A - mean A) / (std A + eps) over the minibatch (PPO detail #7): adv (B,) -> (B,) in adv's
    dtype; needs B >= 2. std is the population std (ddof 0, as the fused numba step; torch's
    ``.std()`` in CleanRL and SB3 divides by B - 1: their z-scores are sqrt((B - 1) / B) of these, 0.94x
    at B = 8). Computed in float64 and shifted by A_0 (the same z-scores), so that B equal advantages
    give exact zeros (a mean an ulp off, divided by a std of that size, gave +-O(1))."""
    if getattr(adv, "ndim", None) != 1:
        array("adv", adv)  # (TypeError for a list)
        raise ValueError(f"adv must have shape (B,), got {tuple(adv.shape)}")
    if getattr(adv, "dtype", None) is None:  # (a memoryview has a shape, not a dtype)
        array("adv", adv)
    if adv.dtype.kind != "f":  # the result keeps adv's dtype: integers would round the z-scores
        raise TypeError(f"adv must be a float32 or float64 array, got dtype {adv.dtype}")
    if adv.shape[0] < 2:
        raise ValueError("advantage normalisation needs a minibatch of at least 2 samples")
    a = adv.astype(np.float64, copy=False)
    a = a - a[0]
    return ((a - a.mean()) / (a.std() + eps)).astype(adv.dtype, copy=False)


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
    clipfrac (clip only), kl and beta (kl_penalty only), vclipfrac (``clip_vloss`` only); grads is
    keyed like ``policy.params``.
    """
    if not all(hasattr(config, k) for k in ("objective", "vf_coef", "clip_eps", "ent_coef", "normalize_advantages")):
        raise TypeError(f"config must be a PPOConfig (or an object with its fields), got {type(config).__name__}")
    vf_coef = real("config.vf_coef", config.vf_coef, 0.0)  # the one coefficient no loss function checks
    check_batch_keys(batch, config.objective)
    clip_eps = config.clip_eps if clip_eps is None else clip_eps
    ent_coef = config.ent_coef if ent_coef is None else ent_coef
    # On a GPU the value checks inside (finite inputs, distributions, actions: ~5) are read back with the
    # stats, one copy, not one sync each; an error is the one the first failed check gives at once.
    with deferred_checks() as checks:
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
        elif objective in ("a2c", "reinforce"):  # the plain policy gradient, on-policy
            pl, dlogp, stats = losses.pg_objective(logp, adv)
            stats = {**stats, **losses.ratio_stats(logp, logp_old)}
        else:  # PPOConfig is mutable: a field set after construction was never validated
            raise ValueError(f"config.objective={objective!r} is not allowed; use one of {OBJECTIVES}")
        vl, dv, vstats = losses.value_loss(
            values, batch["returns"], batch["values_old"], clip_eps if config.clip_vloss else None
        )
        el, dent, _ = losses.entropy_bonus(entropy, ent_coef)
        grads = policy.backward(
            cache, dlogp=dlogp, dentropy=dent if ent_coef else None, dvalue=vf_coef * dv, dkl=dkl
        )
        stats = {
            **stats,
            **vstats,
            "loss": pl + vf_coef * vl + el,
            "policy_loss": pl,
            "value_loss": vl,
            "entropy": entropy.mean(),
        }
        return losses.to_floats(stats, checks), grads


class NumpyStep:
    """One minibatch update the readable way: :func:`loss_and_grads`, then global-norm clipping
    and Adam (the fused numba step in ``kernels/cpu_update.py`` has the same two methods)."""

    def __init__(self, policy: ActorCritic, optimizer: Adam, config: PPOConfig, beta: float) -> None:
        self.policy, self.optimizer, self.config, self.beta = policy, optimizer, config, beta
        self.grads: dict[str, Any] = {}

    def loss_and_grads(self, batch: dict[str, Array], clip_eps: float, ent_coef: float) -> dict[str, float]:
        """Stats of the minibatch loss; the gradients are kept for :meth:`step`. ``batch``: a minibatch
        of :meth:`RolloutBuffer.minibatches` (obs (B, obs_dim), actions (B,) or (B, d), logp_old,
        advantages, returns, values_old (B,), dist_old (B, dist_dim)), as :func:`loss_and_grads` takes."""
        stats, self.grads = loss_and_grads(
            self.policy, batch, self.config, beta=self.beta, clip_eps=clip_eps, ent_coef=ent_coef
        )
        return stats

    def step(self, lr: float, max_grad_norm: float) -> float:
        """Clip the gradients' global norm (if max_grad_norm > 0), take one Adam step and project
        log_std back into its range; returns the norm before clipping (NaN when not clipping). A
        non-finite norm raises before any update."""
        max_grad_norm = real("max_grad_norm", max_grad_norm)  # (NaN > 0 is False: it skipped clipping)
        norm = self.optimizer.step(self.grads, lr, max_grad_norm)  # clipped on Adam's flat gradient
        self.policy.clamp_log_std()
        return norm


def explained_variance(y_pred: Array, y_true: Array) -> float:
    """1 - Var[y_true - y_pred] / Var[y_true] over same-shape arrays (1: perfect, 0: no better than a
    constant; NaN when y_true is constant or empty)."""
    if getattr(y_pred, "shape", None) != getattr(y_true, "shape", ()) or not hasattr(y_true, "size"):
        array("y_pred", y_pred)  # (a (B, 1) y_pred broadcast against (B,) to (B, B))
        array("y_true", y_true)
        raise ValueError(f"y_pred and y_true must have the same shape, got {tuple(y_pred.shape)} and "
                         f"{tuple(y_true.shape)}")
    if y_true.size == 0:  # a rollout of masked reset steps only (np.var would warn)
        return float("nan")
    # summed in float64: float32 squares overflow from returns of ~1e19 (a warning, and an EV of NaN)
    var = float(np.var(y_true, dtype=np.float64))
    return float("nan") if var == 0 else 1.0 - float(np.var(y_true - y_pred, dtype=np.float64)) / var


def _user_frame() -> int:
    """``warnings.warn``'s stacklevel, from the function that calls this one, of the first frame
    outside the minippo package: the user's ``PPO(...)`` or ``PPO.load(...)`` however deep inside
    the warning is given (a fixed stacklevel named minippo's own checkpoint.py for a load)."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


class PPO:
    """Proximal Policy Optimization on a gymnasium vector env.

    Example::

        from minippo import PPO
        from minippo.config import preset
        model = PPO(preset("CartPole-v1")).learn()
        print(model.evaluate(10))
        model.save("cartpole.npz")

    ``config.objective`` picks the rung of the ladder (reinforce, a2c, surrogate, kl_penalty, clip);
    all share this loop. ``env`` may be passed (a gymnasium VectorEnv, e.g. with wrappers, or a vector
    env of your own: README "Your own environment"); otherwise it is made from ``config.env_id``. A
    given env whose gymnasium id (its spec's, or its sub-envs') is another than ``config.env_id`` is
    refused, because checkpoints record ``config.env_id`` and evaluation makes that env. A given env
    with no id is recorded as custom (:attr:`custom_env`, its class name): ``evaluate`` and
    :meth:`load` then need ``env=``, and ``config.env_id`` names no env of this model. So is one that
    gymnasium's specs show to differ from ``gym.make(config.env_id, **config.env_kwargs)``
    (:func:`minippo.envs.env_changes`: a wrapper other than RecordEpisodeStatistics, other keyword
    arguments or another time limit; :attr:`custom_env` is then its id and the changes): a model
    trained on observations a wrapper scaled would otherwise be evaluated in the bare env.
    """

    def __init__(self, config: PPOConfig | None = None, env: Any = None, **overrides: Any) -> None:
        from minippo.envs import make_vec_env

        # A validated copy: PPOConfig is mutable, so a field set after construction is unchecked (checked
        # first, so that the message shows the value as set), and the caller's object may change later (a
        # sweep editing one config) under a running instance.
        if config is not None and not isinstance(config, PPOConfig):
            hint = ""
            if isinstance(config, str):
                from minippo.config import PRESETS

                hint = (f" (PPO(preset({config!r})), the tuned preset)" if config in PRESETS else
                        " (Stable-Baselines3's policy names have no counterpart: the networks are config fields, "
                        "hidden, activation, shared; PPO(PPOConfig(env_id='CartPole-v1')))" if config.endswith("Policy")
                        else f" (for an env id: PPO(PPOConfig(env_id={config!r})))")
            raise TypeError(f"config must be a PPOConfig or None, got {type(config).__name__}{hint}")
        config = copy.copy(config) if config is not None else PPOConfig()  # validate() normalises in place
        config.validate()
        config = config.replace(**overrides)
        self._config = config
        self.backend = backend.name
        self.xp = backend.xp
        self.dtype = np.dtype(config.dtype)
        self._env = env if env is not None else make_vec_env(
            config.env_id, config.n_envs, config.vector, config.autoreset, config.env_kwargs
        )
        # The env PPO made is PPO's to close (close(), or leaving a with-block); a given env is the caller's
        self._owns_env = env is None
        self._env_refused: str | None = None  # why the given env cannot step again (see _recover_env)
        self._env_lost = False  # the env PPO made was closed to be made again, and is not yet (_recover_env)
        self._in_env_call = False  # inside the rollout's env.step / env.reset (collect_rollout)
        self._env_cut = False  # a Ctrl-C (or SystemExit) came out of one: see collect_rollout
        self._closed = False  # close() closed the env PPO made: no more rollouts (_check_env_open)
        try:
            self._setup(config, env)
        except BaseException:  # an env refused: its async workers stop now, not at garbage collection
            self.close()
            raise

    def _setup(self, config: PPOConfig, env: Any) -> None:
        """The rest of ``__init__``, once ``self.env`` is made or given: checks it fits ``config`` and
        builds the policy, optimiser, normalisers, schedules and buffer."""
        from minippo.envs import ObsNormalizer, RewardScaler, env_changes, env_spec_id, is_next_step
        from minippo.losses import AdaptiveKL
        from minippo.spaces import as_space, is_kind

        if not hasattr(self.env, "num_envs"):
            name = type(self.env).__name__
            single = (f" (one env, as Stable-Baselines3 takes it: gym.vector.SyncVectorEnv([make_one] * "
                      f"{config.n_envs}) makes the vector env, make_one a function that returns a new one)"
                      if hasattr(self.env, "observation_space") and hasattr(self.env, "step") else "")
            raise TypeError(f"env must be a vector env: gymnasium's (gym.make_vec(..., wrappers=[...]) or "
                            f"minippo.envs.make_vec_env), or your own with num_envs, single_observation_space, "
                            f"single_action_space, metadata['autoreset_mode'], reset and step (README, \"Your own "
                            f"environment\"); got {name}{single}")
        spec_id = env_spec_id(self.env)
        # ("module:EnvId" names the env EnvId, after importing the module that registers it)
        if env is not None and spec_id is not None and spec_id != config.env_id.rpartition(":")[2]:
            raise ValueError(f"env is {spec_id} but config.env_id={config.env_id!r}: set env_id={spec_id!r} "
                             "(checkpoints and evaluation use config.env_id)")
        # An env given without a gymnasium id (your own class, or gymnasium's without a spec) is not
        # config.env_id's: named by its class in messages and checkpoints, and never remade from the id.
        # Nor is one that gymnasium's specs show to differ from gym.make(env_id, **env_kwargs) (a wrapper,
        # other kwargs or time limit): named by its id and the changes
        self.custom_env: str | None = None
        if env is not None and spec_id is None:
            self.custom_env = type(self.env).__name__
        elif env is not None:
            changes = env_changes(self.env, config.env_id, config.env_kwargs)
            self.custom_env = f"{spec_id} ({'; '.join(changes)})" if changes else None
        self.env_name = self.custom_env or config.env_id
        # PPO.load: the checkpoint's meta (JSON) it was restored from, as a Policy keeps it; else None
        self.checkpoint_meta: dict[str, Any] | None = None
        if self.env.num_envs != config.n_envs:
            raise ValueError(f"env has {self.env.num_envs} sub-envs but config.n_envs={config.n_envs} (give the config "
                             f"n_envs={self.env.num_envs}, or PPO.load(path, env=..., n_envs={self.env.num_envs}))")
        obs_space = self.env.single_observation_space
        shape = getattr(obs_space, "shape", None)
        if not is_kind(obs_space, "Box", "MultiBinary") or shape is None or len(shape) != 1 or shape[0] < 1:
            flat = is_kind(obs_space, "Box", "MultiBinary", "Discrete", "MultiDiscrete", "Tuple", "Dict") and (
                shape is None or 0 not in shape)  # (Graph, Sequence, Text and empty spaces do not flatten to one)
            hint = ("wrap the env in gymnasium.wrappers.FlattenObservation (one-hot for Discrete and MultiDiscrete) "
                    "and pass the vector env as PPO(config, env=...) (or PPO.load(path, env=...)); " if flat else
                    "turn its observations into a fixed-length vector with a wrapper of your own; ")
            raise ValueError(
                f"observation space {obs_space} is not supported: minippo takes 1-D Box (or MultiBinary) "
                f"observations of at least one value; {hint}your own env may use minippo.spaces.Box"
            )
        self.obs_dim = int(obs_space.shape[0])
        self.action_space = as_space(self.env.single_action_space)
        self._policy = ActorCritic(
            self.obs_dim, self.action_space, config.hidden, config.activation, config.shared,
            config.log_std_init, config.seed, self.dtype, config.temperature,
        ).to(backend.to_device)
        self._optimizer = Adam(self.policy.params, config.learning_rate, eps=config.adam_eps)
        self.rng = agent_rng(config.seed)  # (a stream apart from the envs')
        self._obs_norm = ObsNormalizer(self.obs_dim) if config.norm_obs else None
        self._reward_scaler = RewardScaler(config.n_envs, config.gamma) if config.norm_reward else None
        self._kl_coef = AdaptiveKL(config.kl_target, config.kl_beta)
        self._lr_schedule = Schedule(config.lr_schedule, config.learning_rate, config.lr_end)
        self._clip_schedule = Schedule(config.clip_schedule, config.clip_eps, 0.0)
        self._ent_schedule = Schedule(config.ent_schedule, config.ent_coef, config.ent_end)
        discrete = self.policy.discrete
        self.buffer = RolloutBuffer(
            config.n_steps, config.n_envs, self.obs_dim, () if discrete else (self.policy.act_dim,),
            self.policy.act_dim if discrete else 2 * self.policy.act_dim, self.dtype, discrete, self.xp,
        )
        if config.objective in ON_POLICY and config.n_epochs > 1:
            warnings.warn(f"objective={config.objective!r} with n_epochs={config.n_epochs}: every epoch after the "
                          "first reuses the rollout without the importance-sampling ratio, so its steps are not "
                          "the policy gradient (objective='surrogate' corrects for that); n_epochs=1 is the "
                          "textbook algorithm", UserWarning, stacklevel=_user_frame())
        self.next_step = is_next_step(self.env)
        mode = "next_step" if self.next_step else "same_step"
        if config.autoreset != mode:  # a given env runs in its own mode: the config records the one used
            self._config = config = config.replace(autoreset=mode)
        self.num_timesteps = 0
        self.iteration = 0
        self.time_elapsed = 0.0  # seconds of learn() wall time over all calls (and resumes): row "time"
        self.total_timesteps = config.total_timesteps
        self.episode_returns: deque[float] = deque(maxlen=100)
        self.episode_lengths: deque[int] = deque(maxlen=100)
        self._obs: np.ndarray | None = None
        n = config.n_envs
        self._ep_ret = np.zeros(n)
        self._ep_len = np.zeros(n, dtype=np.int64)
        self._fake_next = np.zeros(n, dtype=bool)  # NEXT_STEP: the next step of this env is a reset
        self._pending_boot = np.zeros(n, dtype=bool)  # NEXT_STEP: truncated, bootstrap not yet added
        self._all_valid = np.ones(n, dtype=bool)  # SAME_STEP's mask, one array shared by every step:
        self._all_valid.flags.writeable = False  # a consumer writing to it raises instead of corrupting it
        config._freeze()  # what was built from it stays true to it (PPOConfig.__setattr__)

    # What the trainer is made of. Set later: another policy acted and took gradients while Adam kept
    # updating the old one's arrays (a run that trained nothing), another Adam updated another policy,
    # another env was stepped from the old env's last observation (and close() closed the caller's env).
    config = fixed("PPO", "config", "the networks, schedules and buffer were built from it: build a new trainer, "
                   "PPO(config), or resume with overrides, PPO.load(path, **overrides)",
                   """The validated config this trainer was built from (a copy of the one given; fixed: setting a
        field raises, and so does changing ``env_kwargs`` in place; see :meth:`PPOConfig.replace` and
        :meth:`load`'s overrides).""")
    policy = fixed("PPO", "policy", "Adam and the fused kernels update its arrays: copy parameters into it, "
                   "model.policy.params[k][...] = other.params[k], or PPO.load a checkpoint",
                   """The actor-critic this trainer acts with and trains (its ``params`` are the arrays Adam and
        the fused kernels update).""")
    optimizer = fixed("PPO", "optimizer", "it updates the policy's arrays, and its moments are saved: the "
                      "learning rate is config.learning_rate and lr_schedule (PPO.load(path, learning_rate=...) "
                      "for a resumed run)",
                      """The Adam over :attr:`policy`'s ``params`` (its moments are saved in checkpoints). Every
        step takes the learning-rate schedule's value, not ``optimizer.lr``.""")
    env = fixed("PPO", "env", "the trainer holds the env's last observation, its episodes in progress, and "
                "whether it is PPO's to close: to train on another env, save() the model and "
                "PPO.load(path, env=<the env>)",
                """The vector env this trainer steps: made from ``config.env_id`` (PPO's to close), or the one
        given as ``PPO(config, env=...)`` (the caller's).""")

    # Built from the config, and at a load from the saved config again: set by hand, one acted until the
    # next resume and then silently went back (a schedule, kl_target); obs_norm = None trained without
    # normalising and saved a file no load read; kl_coef = 0.5 failed inside learn. Their own settings
    # are fixed too, and the values that are state (kl_coef.beta, the statistics) are checked when set.
    _FROM_CONFIG = "it is built from the config: PPO(config.replace(...)), or PPO.load(path, **overrides) to resume"
    _NORMALISER = ("it is built from config.{} (fixed for a trained network, as its statistics): a new trainer, "
                   "PPO(config.replace({}=...))")
    obs_norm = fixed("PPO", "obs_norm", _NORMALISER.format("norm_obs", "norm_obs"),
                     "The observation normaliser (config.norm_obs), or None.")
    reward_scaler = fixed("PPO", "reward_scaler", _NORMALISER.format("norm_reward", "norm_reward"),
                          "The reward scaler (config.norm_reward), or None.")
    kl_coef = fixed("PPO", "kl_coef", _FROM_CONFIG, "The adaptive KL coefficient (config.kl_target, kl_beta).")
    lr_schedule = fixed("PPO", "lr_schedule", _FROM_CONFIG, "The learning rate over progress (config.lr_*).")
    clip_schedule = fixed("PPO", "clip_schedule", _FROM_CONFIG, "The clip range over progress (config.clip_*).")
    ent_schedule = fixed("PPO", "ent_schedule", _FROM_CONFIG, "The entropy coefficient over progress (config.ent_*).")

    @property
    def total_timesteps(self) -> int:
        """The env steps in all that ``learn()`` with no argument trains up to (``config.total_timesteps``
        at first; ``learn(total)`` and a load's override set it; saved in checkpoints). Set by hand, it
        must be an integer in [1, 2**62] (a float that is a whole number is taken), as ``learn(total)``'s:
        a string, a fraction or a negative number was saved as given into a file that no load could read."""
        return self._total_timesteps

    @total_timesteps.setter
    def total_timesteps(self, value: Any) -> None:
        total = integer("total_timesteps", value, 1, whole_floats=True)
        if total > MAX_TIMESTEPS:
            raise ValueError(f"total_timesteps {TOO_MANY_TIMESTEPS}, got {total}")
        self._total_timesteps = total

    def __reduce_ex__(self, protocol: Any) -> Any:
        # copy.copy shared the policy, Adam, RNG, env and buffer while the counters went apart; deepcopy
        # and pickle failed on the backend module ("cannot pickle 'module' object")
        raise TypeError("a PPO trainer cannot be copied or pickled (it holds its env, and an async env's worker "
                        "processes): save() it and PPO.load() the file for a second trainer, or "
                        "copy.deepcopy(model.policy) for the network alone")

    def close(self) -> None:
        """Close the vector env PPO made from ``config.env_id`` (an async one's worker processes stop);
        an env given as ``PPO(config, env=...)`` is left to its owner. ``with PPO(...) as model:`` closes
        on leaving the block. Acting, evaluating and saving still work after it; ``learn`` and
        ``collect_rollout`` raise RuntimeError (as they do on a given env its owner closed): ``save()`` and
        ``PPO.load()`` the file to train on with a new env."""
        if self._owns_env:
            self._closed = True
            self._close_env()

    def _close_env(self) -> None:
        """Close ``self.env``. A Ctrl-C that lands while async workers step leaves the env waiting on a
        step whose results it has partly read; gymnasium's close then waits for the rest without end
        (seen in 2 of 4 runs). With a timeout it takes what comes in time, else stops the workers."""
        state = getattr(getattr(self.env, "unwrapped", self.env), "_state", None)  # (AsyncVectorEnv's)
        if getattr(state, "value", "default") != "default":
            with warnings.catch_warnings():  # (gymnasium's warning that it closes mid-step: this is the intent)
                warnings.filterwarnings("ignore", message=".*while waiting for a pending call")
                self.env.close(timeout=PENDING_CLOSE_TIMEOUT)
        else:
            self.env.close()

    def __enter__(self) -> PPO:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ acting
    def _env_obs(self, obs: Any, rows: int, where: str = "", envs: np.ndarray | None = None,
                 what: str = "observation") -> np.ndarray:
        """The env's ``obs`` (rows, obs_dim) as a ``self.dtype`` array, checked before the normaliser or the
        buffer sees it: a wrong shape or dtype (or a masked array) raises EnvOutputError naming the env; a
        NaN, inf or value beyond ``self.dtype``'s range NonFiniteEnvError. ``what``, ``where``: which
        observations, for messages ("observation", " on reset"); ``envs``: the rows' sub-envs (default all)."""
        if isinstance(obs, np.ma.MaskedArray):  # (its mask was dropped and the numbers under it acted on)
            raise EnvOutputError(f"env {self.env_name!r} returned {what}s{where} as a numpy masked array; expected a "
                                 "plain array")
        a = np.asarray(obs)
        if a.dtype == object:  # e.g. info["final_obs"] as gymnasium builds it, np.array(rows, dtype=object),
            try:  # which is 2-D when every row ended at once
                a = a.astype(np.float64)
            except (TypeError, ValueError):
                raise EnvOutputError(f"env {self.env_name!r} returned {what}s{where} that are not all numbers: "
                                     f"{obs!r}") from None
        if a.shape != (rows, self.obs_dim):
            raise EnvOutputError(f"env {self.env_name!r} returned {what}s{where} of shape {a.shape}; expected ({rows}, "
                                 f"{self.obs_dim}): one row of single_observation_space.shape ({self.obs_dim},) per "
                                 "sub-env")
        if a.dtype.kind not in "biuf":
            raise EnvOutputError(f"env {self.env_name!r} returned {what}s{where} of dtype {a.dtype}; expected real "
                                 "numbers")
        out = cast_quietly(a, self.dtype)  # (an overflow is named below)
        if out is a or not out.flags.c_contiguous:
            # Our own C-order copy: the env may overwrite its array in place at its next step (gymnasium's
            # SyncVectorEnv(copy=False) does), and the buffer stores these observations after that step;
            # C order and the native dtype object, as the fused numba kernels take them without a copy
            out = np.array(out, order="C")
        if out.dtype is not self.dtype:  # (an equal dtype of another object: a pickled array's)
            out = out.view(self.dtype)
        if not np.isfinite(out).all():
            self._raise_non_finite(what + where, a, envs, out)
        return out

    def _prep_obs(self, obs: np.ndarray, update: bool | np.ndarray) -> Any:
        """obs (N, obs_dim), checked (:meth:`_env_obs`) -> normalised (N, obs_dim) on the device. ``update``:
        whether the observation normaliser learns from them, or a (N,) mask of the rows it learns from.
        Observations are learnt from when acted on: the bootstrap's V(s_T) and V(final obs) see statistics
        that do not hold them yet (SB3 folds s_T in first; V differed by < 1e-3 in session 61's audit)."""
        obs = np.asarray(obs, dtype=self.dtype)
        if self.obs_norm is not None:  # (the rollout has checked the observations are finite)
            try:
                if isinstance(update, np.ndarray):
                    mask, update = update, bool(update.all())
                    if not update and mask.any():
                        self.obs_norm.rms.update(obs[mask], check=False)
                if update:
                    self.obs_norm.rms.update(obs, check=False)
            except FloatingPointError as e:  # (finite, but past ~1e154: a float64 policy's observations)
                raise NonFiniteEnvError(f"env {self.env_name!r} returned observations at step {self.num_timesteps} "
                                        "whose running statistics (norm_obs) would overflow float64 (|x| past "
                                        "~1e154): scale the observations") from e
            obs = self.obs_norm(obs)
        return backend.to_device(obs)

    def _env_actions(self, actions: np.ndarray) -> np.ndarray:
        space = self.action_space
        if self.policy.discrete:
            return actions + space.start if space.start else actions
        # Clip only what the env sees; the buffer keeps the sampled action so logp stays exact.
        return space.clip(actions)

    def _check_backend(self) -> None:
        """A trainer runs on the backend it was built on: its arrays live there and its checkpoints name
        it. After ``MINIPPO_BACKEND`` changed and ``backend.reset()``, its rollouts and updates would call
        the other backend's kernels (numba's fused ones on a numpy trainer: other rounding, a checkpoint
        still saying numpy; numpy's on a cupy trainer's arrays): refused, not mixed silently."""
        name = backend.resolved()[0]
        if name != self.backend:
            raise RuntimeError(f"this PPO was built on backend {self.backend!r}, and MINIPPO_BACKEND now resolves "
                               f"to {name!r} (after backend.reset()): a trainer keeps its backend; build a new "
                               "PPO, or PPO.load a checkpoint of this one, on the new backend")

    def _check_env_open(self) -> None:
        """Refuse a rollout on a closed env: a sync one closed by close() went on stepping (CartPole's
        sub-envs keep no resources), so ``learn`` after a with-block trained on; an async one raised
        gymnasium's ClosedEnvironmentError from inside the rollout."""
        closed = getattr(getattr(self.env, "unwrapped", self.env), "closed", False) is True
        if self._closed:
            raise RuntimeError(f"this PPO's env ({self.env_name!r}, made from config.env_id) was closed by close() "
                               "(or leaving its with-block): it trains no further (acting, evaluate() and save() "
                               "still work); save() it and PPO.load() the file to train on with a new env")
        if closed and not self._owns_env:
            raise RuntimeError(f"the env given to this PPO ({self.env_name!r}) is closed: it cannot step again; "
                               "save() the model and PPO.load(path, env=<a new env>) to train on")

    def collect_rollout(self) -> None:
        """Run the behaviour policy pi_theta_old for T steps in all N envs and fill the buffer.

        An exception on the way (an env's error, a refused observation or reward, a Ctrl-C) drops the
        rollout: the buffer is left not ready (``update`` refuses it) and the next rollout starts from a
        seeded reset of the envs, as after a load (the envs may have stepped past the last observation
        the trainer holds). The steps already run stay counted in ``num_timesteps``; an episode in
        progress is not recorded. An async env interrupted inside a step or reset is closed at once and
        made again by the next rollout where PPO made it; one given as ``PPO(config, env=...)`` is
        refused from then on. A closed env is refused (RuntimeError; see :meth:`close`)."""
        self._check_backend()
        self._check_env_open()
        self.buffer.reset()
        try:
            if self._obs is None:
                self._recover_env()  # (left mid-call where a second Ctrl-C cut the last cleanup short)
                if self._env_refused is not None:
                    raise RuntimeError(self._env_refused)
                n = self.config.n_envs
                seed = train_reset_seed(self.config.seed, self.num_timesteps, n)
                self._in_env_call = True
                obs = self.env.reset(seed=seed)
                self._in_env_call = False
                obs = reset_obs(obs, self.env_name)
                self._obs = self._env_obs(obs, n, " on reset")
            self._fill_buffer()
        except BaseException as e:  # (a Ctrl-C too)
            # gymnasium's AsyncVectorEnv sends to its workers' pipes first and records the pending call
            # (_state) after: a Ctrl-C between the two leaves results in a pipe that _state does not
            # show, and the next reset read them as its own ("too many values to unpack")
            self._env_cut = self._env_cut or (self._in_env_call and not isinstance(e, Exception))
            self._in_env_call = False
            self._abandon_rollout()
            raise

    def _abandon_rollout(self) -> None:
        """After :meth:`collect_rollout` raised: the trainer as a load leaves it, with no episode in
        progress and no last observation, so that the next rollout resets the envs (cleared first:
        :meth:`_recover_env` may block, and a second Ctrl-C may land there)."""
        self._obs = None
        self._ep_ret[:] = 0.0
        self._ep_len[:] = 0
        self._fake_next[:] = False
        self._pending_boot[:] = False
        if self.reward_scaler is not None:
            self.reward_scaler.ret[:] = 0.0
        self._recover_env(make=False)  # (made at the next rollout: a script stopped by Ctrl-C starts no workers)

    def _recover_env(self, make: bool = True) -> None:
        """An async env interrupted inside a call (gymnasium's step_wait reads the workers' results one
        by one, blocking on each) holds some results read and others to come: its pipes cannot be
        trusted, and its next call would be refused (AlreadyPendingCallError). PPO closes an env it
        made (stopping workers that do not answer in time) and, with ``make``, makes a new one; an env
        given to it is its owner's: refused by the next rollouts (RuntimeError), with what to do."""
        if self._env_refused is not None:
            return
        unwrapped = getattr(self.env, "unwrapped", self.env)
        state = getattr(unwrapped, "_state", None)  # (AsyncVectorEnv's)
        # (an env whose _state is not gymnasium's AsyncState is not an async one: its next reset is enough)
        cut, self._env_cut = self._env_cut and hasattr(state, "value"), False
        # A worker whose env raised is shut down by gymnasium, its pipe set to None, with _state back to
        # default: the env's next call failed inside gymnasium ('NoneType' object has no attribute 'send')
        pipes = getattr(unwrapped, "parent_pipes", None) if hasattr(state, "value") else None
        shut = isinstance(pipes, list) and any(p is None for p in pipes) and not getattr(unwrapped, "closed", False)
        if getattr(state, "value", "default") == "default" and not self._env_lost and not cut and not shut:
            return
        if not self._owns_env:
            if shut:
                self._env_refused = (
                    f"the env given to this PPO lost the async worker(s) of sub-env(s) "
                    f"{[i for i, p in enumerate(pipes) if p is None]} (gymnasium shuts down a worker whose env "
                    "raised): it cannot step again; save the model and PPO.load(path, env=<a new env>)")
                return
            call = state.value if state.value != "default" else "step or reset (as it sent to its workers)"
            self._env_refused = (
                f"the env given to this PPO was interrupted inside an async {call} (its workers' results "
                "partly read): it cannot step again; save the model and PPO.load(path, env=<a new env>)")
            return
        from minippo.envs import make_vec_env

        self._env_lost = True  # (until a new one is made)
        if not getattr(self.env, "closed", False):  # (closed already where a Ctrl-C came after the close)
            self._close_env()
        if make:
            cfg = self.config
            self._env = make_vec_env(cfg.env_id, cfg.n_envs, cfg.vector, cfg.autoreset, cfg.env_kwargs)
            self._env_lost = False

    def _fill_buffer(self) -> None:
        """:meth:`collect_rollout`'s T steps from ``self._obs``, then the returns."""
        cfg, buf, xp = self.config, self.buffer, self.xp
        n = cfg.n_envs
        next_step = self.next_step
        # A finite reward past the policy's dtype's range was stored as inf, and surfaced an iteration later as
        # an error about the advantages; norm_reward scales it (in float64) before it is stored, and clips it
        reward_limit = float(np.finfo(np.float64 if self.reward_scaler is not None else self.dtype).max)
        for t in range(cfg.n_steps):
            # SAME_STEP: every step is real (_fake_next stays all False): one shared all-True mask
            valid = ~self._fake_next if next_step else self._all_valid
            # NEXT_STEP: an env's row at its reset step is the final observation of the episode that
            # ended (only bootstrapped): the normaliser learns from acted-on observations alone
            obs_dev = self._prep_obs(self._obs, update=valid)
            actions, actions_dev, logp, values, dist = self.policy.act_with_device_actions(obs_dev, self.rng)
            if next_step and self._pending_boot.any():  # V(final obs) is this step's value (NEXT_STEP mode)
                idx = xp.asarray(np.flatnonzero(self._pending_boot))  # one upload (CuPy copies a host index)
                buf.rewards[t - 1, idx] += cfg.gamma * values[idx]
                self._pending_boot[:] = False
            env_actions = self._env_actions(actions)
            self._in_env_call = True  # (collect_rollout: a Ctrl-C inside it)
            next_obs, reward, term, trunc, info = self.env.step(env_actions)
            self._in_env_call = False
            got = reward, term, trunc
            reward, term, trunc = np.asarray(reward), np.asarray(term), np.asarray(trunc)
            if not (reward.dtype.kind in "biuf" and term.dtype.kind in "biuf" and trunc.dtype.kind in "biuf") \
                    or isinstance(got[0], np.ma.MaskedArray) or isinstance(got[1], np.ma.MaskedArray) \
                    or isinstance(got[2], np.ma.MaskedArray):
                reward, term, trunc = self._real_outputs(got, (reward, term, trunc))
            reward = reward.astype(np.float64)  # a copy: the bootstrap below writes into it
            term, trunc = term.astype(bool, copy=False), trunc.astype(bool, copy=False)
            if not reward.shape == term.shape == trunc.shape == (n,):
                raise EnvOutputError(f"env {self.env_name!r} returned rewards, terminations and truncations of "
                                     f"shapes {reward.shape}, {term.shape}, {trunc.shape}; expected ({n},) each: one "
                                     "per sub-env")
            if not np.abs(reward).max() <= reward_limit:  # (False for a NaN)
                with np.errstate(over="ignore"):
                    self._raise_non_finite("reward", reward, cast=reward.astype(self.dtype))
            next_obs = self._env_obs(next_obs, n)
            done = term | trunc
            any_done = bool(done.any())  # most steps end no episode: the per-episode work below is skipped
            if not next_step and any_done:  # SAME_STEP: the final observations are in info
                ends = np.flatnonzero(done)
                if not isinstance(info, Mapping):
                    raise EnvOutputError(f"env {self.env_name!r} returned info of type {type(info).__name__} at an "
                                         "episode's end (SAME_STEP autoreset mode); expected a dict holding "
                                         "info['final_obs']")
                if "final_obs" not in info:
                    raise EnvOutputError(f"env {self.env_name} ended an episode in SAME_STEP autoreset mode (its "
                                         "metadata['autoreset_mode']) without info['final_obs']: a same-step vector "
                                         "env returns the reset observation and puts the final one in "
                                         "info['final_obs'] (one row per sub-env), as gymnasium's do")
                rows = len(info["final_obs"]) if hasattr(info["final_obs"], "__len__") else None
                if rows != n:  # (fewer rows: an IndexError below)
                    got_rows = f"{rows} rows" if rows is not None else f"type {type(info['final_obs']).__name__}"
                    raise EnvOutputError(f"env {self.env_name!r} returned info['final_obs'] of {got_rows}; expected "
                                         f"{n} rows: one per sub-env")
                finals = self._env_obs(np.stack([info["final_obs"][i] for i in ends]), len(ends),
                                       " (info['final_obs'])", ends, "final observation")
            self._track_episodes(reward, done, valid, any_done, next_step)
            if self.reward_scaler is not None:
                try:
                    reward = self.reward_scaler(reward, done, valid)
                except FloatingPointError as e:  # (finite rewards whose return, or its statistics, overflow)
                    raise NonFiniteEnvError(f"env {self.env_name!r} returned rewards at step {self.num_timesteps} "
                                            "whose running discounted return (norm_reward) overflows float64: "
                                            "scale the rewards") from e
            if any_done:  # boot is a subset of done
                boot = trunc & ~term & valid  # a step both terminated and truncated is terminated
                if boot.any():
                    if next_step:
                        self._pending_boot |= boot
                    else:
                        idx = np.flatnonzero(boot)
                        final = finals[np.searchsorted(ends, idx)]  # boot is a subset of done
                        v_final = backend.asnumpy(self.policy.value(self._prep_obs(final, update=False)))
                        reward[idx] += cfg.gamma * v_final
            buf.add(
                obs_dev, actions_dev, logp, values, dist,
                xp.asarray(reward, dtype=self.dtype), xp.asarray(done, dtype=self.dtype), valid,
            )
            if next_step:
                self._fake_next = done & valid
            self._obs = next_obs
            self.num_timesteps += cfg.n_envs
        last_values = self.policy.value(self._prep_obs(self._obs, update=False))  # (the critic alone)
        if self._pending_boot.any():
            idx = xp.asarray(np.flatnonzero(self._pending_boot))
            buf.rewards[cfg.n_steps - 1, idx] += cfg.gamma * last_values[idx]
            self._pending_boot[:] = False
        buf.compute_returns(last_values, cfg.gamma, cfg.gae_lambda, cfg.advantage_estimator)

    def _real_outputs(self, got: tuple, arrays: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        """A step's rewards, terminations and truncations (``got``, as the env returned them; ``arrays``:
        np.asarray of each) as real arrays: numbers in an object array (Fractions, numpy scalars) are read
        as float64; strings (parsed as numbers before: "False" read as a done flag), None (read as not
        done), complex numbers (their imaginary part dropped) and masked arrays (their mask dropped) are
        refused (EnvOutputError)."""
        out = []
        for what, g, a in zip(("rewards", "terminations", "truncations"), got, arrays, strict=True):
            if isinstance(g, np.ma.MaskedArray):
                raise EnvOutputError(f"env {self.env_name!r} returned {what} as a numpy masked array; expected a "
                                     "plain array, one per sub-env")
            if a.dtype.kind == "O" and not any(isinstance(x, (str, bytes)) or x is None for x in a.flat):
                try:
                    a = a.astype(np.float64)
                except (TypeError, ValueError):  # (a complex number, a list in a row)
                    pass
            if a.dtype.kind not in "biuf":
                raise EnvOutputError(f"env {self.env_name!r} returned {what} of dtype {a.dtype}; expected "
                                     f"{'real numbers' if what == 'rewards' else 'bools'}, one per sub-env: {g!r}")
            out.append(a)
        return tuple(out)

    def _raise_non_finite(self, what: str, a: np.ndarray, envs: np.ndarray | None = None,
                          cast: np.ndarray | None = None) -> None:
        """A NaN or inf from the env stops training before it reaches the normalisers or the buffer.
        ``a`` (M, ...): the env's ``what`` (rewards or observations), rows of the sub-envs ``envs``
        (default: all, in order); ``cast``: ``a`` as ``self.dtype``, where a finite value beyond its range
        became inf."""
        bad = np.flatnonzero(~np.isfinite(a.reshape(len(a), -1)).all(axis=1))
        kind = f"a non-finite {what}"
        if not len(bad) and cast is not None:
            bad = np.flatnonzero(~np.isfinite(cast.reshape(len(cast), -1)).all(axis=1))
            scale = "the rewards (norm_reward)" if what == "reward" else "the observations"
            kind = (f"{'an' if what[0] in 'aeiou' else 'a'} {what} beyond the policy's {self.dtype} range (|x| <= "
                    f"{np.finfo(self.dtype).max:.4g}; scale {scale}, or train with dtype='float64')")
        ids = bad if envs is None else envs[bad]
        raise NonFiniteEnvError(f"env {self.env_name!r} returned {kind} in sub-env(s) {ids.tolist()} at step "
                                f"{self.num_timesteps}: {a[bad[0]]}")

    def _track_episodes(self, reward: np.ndarray, done: np.ndarray, valid: np.ndarray,
                        any_done: bool = True, masked: bool = True) -> None:
        """Episode returns and lengths. ``any_done=False``: no env's episode ended at this step;
        ``masked=False``: every row is valid (SAME_STEP), so no masking is needed."""
        if masked:
            self._ep_ret += reward * valid
            self._ep_len += valid
        else:  # reward * True is reward, bit for bit
            self._ep_ret += reward
            self._ep_len += 1
        if not any_done:
            return
        for i in np.flatnonzero(done & valid):
            self.episode_returns.append(float(self._ep_ret[i]))
            self.episode_lengths.append(int(self._ep_len[i]))
            self._ep_ret[i] = 0.0
            self._ep_len[i] = 0

    # ------------------------------------------------------------ learning
    def update(self, progress: float) -> dict[str, float]:
        """K epochs of minibatch Adam steps on the rollout; ``progress`` in [0, 1) drives schedules
        (learn() passes steps run / total; 1 is taken where no schedule reaches 0 there: a linear clip
        schedule's clip range would be 0). Needs the buffer filled by a :meth:`collect_rollout` that
        completed (RuntimeError otherwise)."""
        self._check_backend()
        if not self.buffer.ready:  # (before: a dropped rollout's rows mixed with the one before, trained on)
            raise RuntimeError("update() needs a complete rollout in the buffer: call collect_rollout() first "
                               "(none has completed since this trainer was built or loaded, or the last one raised)")
        progress = real("progress", progress, 0.0, 1.0)  # (the schedules clamped it: 1.5 ran as 1)
        cfg = self.config
        lr = self.lr_schedule(progress)
        clip_eps = self.clip_schedule(progress)
        if clip_eps == 0.0:  # (the losses would name clip_eps, which the caller never gave)
            raise ValueError(f"progress={progress:g} takes clip_schedule={cfg.clip_schedule!r} to a clip range of "
                             "0, which clips every step: pass progress in [0, 1) (learn() passes steps run / total)")
        ent_coef = self.ent_schedule(progress)
        sums: dict[str, float] = {}
        n_updates = 0
        stopped_early, stop_kl = False, math.nan
        step = self._minibatch_step()
        min_size = 2 if cfg.normalize_advantages else 1  # one sample normalises to 0: no policy gradient
        for _epoch in range(cfg.n_epochs):
            for mb in self.buffer.minibatches(cfg.batch_size, self.rng, min_size):
                if mb["advantages"].shape[0] < min_size:  # (a rollout with fewer valid steps than that)
                    continue
                try:
                    stats = step.loss_and_grads(mb, clip_eps, ent_coef)
                    if not math.isfinite(stats["loss"]):  # (before target_kl: it ended the epochs on an inf loss)
                        raise FloatingPointError(f"loss is {stats['loss']}")
                    if cfg.target_kl is not None and stats["approx_kl"] > cfg.target_kl:
                        stopped_early, stop_kl = True, float(stats["approx_kl"])  # before the step (PPO detail)
                        break
                    stats["grad_norm"] = step.step(lr, cfg.max_grad_norm)  # raises before writing on inf/NaN
                except FloatingPointError as e:  # (its class kept: GradientOverflowError says what to do)
                    raise self._returns_overflow() or type(e)(
                        f"iteration {self.iteration + 1}: {e} (no parameter was updated with it)"  # as logged
                    ) from e
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                n_updates += 1
            if stopped_early:
                break
        out = {k: v / max(n_updates, 1) for k, v in sums.items()}
        if cfg.objective == "kl_penalty":
            # No step made (no valid step in the rollout, or one alone under advantage normalisation):
            # the policy is still pi_old, its KL 0 by construction, not a measurement: beta is kept.
            out["kl"] = self._rollout_kl() if n_updates else math.nan
            out["beta"] = self.kl_coef.update(out["kl"]) if n_updates else self.kl_coef.beta
        buf = self.buffer
        valid = buf.valid.reshape(-1) > 0  # on the backend's device: only the two variances come back
        out["explained_variance"] = explained_variance(buf.values.reshape(-1)[valid], buf.returns.reshape(-1)[valid])
        used = cfg.objective == "clip" or cfg.clip_vloss  # (else blank, as clipfrac, kl and beta where unused)
        out.update(lr=lr, clip_eps=clip_eps if used else math.nan, ent_coef=ent_coef, n_updates=n_updates,
                   stopped_early=float(stopped_early), stop_kl=stop_kl)
        return out

    def _returns_overflow(self) -> ReturnOverflowError | None:
        """After an update step raised FloatingPointError: the error to raise instead when the rollout's
        discounted reward sums, recomputed in float64, pass the policy's dtype's range (its advantages
        and returns overflowed: a cause the learning rate or clipping cannot help). Looked at only on
        that error's path (on a GPU, not a copy per rollout)."""
        buf, gamma = self.buffer, self.config.gamma
        rewards = np.asarray(backend.asnumpy(buf.rewards), np.float64)
        not_done = 1.0 - np.asarray(backend.asnumpy(buf.dones), np.float64)
        total, peak = np.zeros(rewards.shape[1]), 0.0
        with np.errstate(over="ignore", invalid="ignore"):
            for t in reversed(range(rewards.shape[0])):  # (the rewards-to-go G_t, each env's episodes apart)
                total = rewards[t] + gamma * not_done[t] * total
                peak = max(peak, float(np.abs(total).max()))
        if not peak > np.finfo(self.dtype).max:
            return None
        biggest = float(np.abs(rewards).max())
        return ReturnOverflowError(
            f"iteration {self.iteration + 1}: env {self.env_name!r} returned rewards (|r| up to {biggest:.3g}) whose "
            f"discounted sums overflow the policy's {self.dtype.name}: scale the rewards (norm_reward), or train "
            "with dtype='float64' (no parameter was updated)")

    def _minibatch_step(self) -> Any:
        """What one minibatch update runs: ``loss_and_grads(mb, clip_eps, ent_coef) -> stats`` then
        ``step(lr, max_grad_norm) -> grad_norm`` (global-norm clip + Adam, in place).

        On the numba backend, when ``kernels/cpu_update.py`` supports the setup (separate or shared
        networks, any objective; see its ``make``), both are fused compiled calls computing the same thing
        to rounding; otherwise :class:`NumpyStep`, the readable path. Built per update (~20 us), so
        parameters rebound in between (checkpoint loading, ``policy.to``) are always seen."""
        if backend.resolved()[0] == "numba":
            from minippo.kernels import cpu_update

            fused = cpu_update.make(self.policy, self.optimizer, self.config, beta=self.kl_coef.beta)
            if fused is not None:
                return fused
        return NumpyStep(self.policy, self.optimizer, self.config, self.kl_coef.beta)

    def _rollout_kl(self) -> float:
        """Mean KL(pi_old || pi_theta) over the rollout's valid steps, after the update (adaptive beta
        rule; the update made a step, so there is one). The actor alone, its layer outputs not kept:
        the whole rollout goes through it at once (a full ``forward`` kept the critic's and every
        layer's outputs too, ~35 MB at 32768 steps and width 256, 5x the minibatch loop's peak)."""
        buf = self.buffer
        n = buf.T * buf.N
        obs = buf.obs.reshape(n, -1)
        if type(self.policy) is ActorCritic:
            dist_new, _ = self.policy._policy_head(obs, {})
        else:  # a subclass: its own forward (the buffer's values and dists came through it too)
            dist_new = self.policy.forward(obs)[0]
        kl = self.policy.make_dist(buf.dist.reshape(n, -1)).kl(dist_new)
        valid = buf.valid.reshape(n)
        return float((kl * valid).sum() / valid.sum())

    def learn(
        self,
        total_timesteps: int | None = None,
        callback: Callable[[dict[str, float]], bool | None] | None = None,
    ) -> PPO:
        """Train until ``total_timesteps`` env steps in all (default: the last total given, at first
        config.total_timesteps), counting the steps already run: a loaded model's ``learn(200_000)``
        continues up to 200k, and a total it has reached already raises ValueError. It runs whole
        rollouts of ``n_envs * n_steps`` steps, the last one past the total where the total is not a
        multiple of that (ceil(total / rollout) rollouts from 0, as Stable-Baselines3; CleanRL runs
        floor(total / rollout)). The schedules follow progress = steps run / total, so a new, larger
        total stretches them: a linearly decayed learning rate (or clip range, entropy coefficient)
        rises again to where the longer schedule has it.

        ``callback(row)`` is called after every iteration with the logged values: the columns of
        progress.csv, and those the CSV leaves out: ``stopped_early`` (1.0 where ``target_kl`` ended the
        epochs early), ``stop_kl`` (the approx_kl of the minibatch that ended them, not stepped on, so
        not in ``approx_kl``, the mean over the steps made; NaN where none did) and, with
        ``clip_vloss``, ``vclipfrac`` (the fraction of values whose clipped loss was taken); returning
        ``False`` stops training. For ``kl_penalty``, ``row["kl"]`` is the
        mean KL(pi_old || pi) after the update and ``row["beta"]`` the coefficient it adapted, the one
        the next update uses (this update's losses were taken with the previous row's beta, or
        ``config.kl_beta`` at first). ``row["mean_return"]`` and
        ``row["mean_length"]`` are over the last 100 finished episodes (NaN before the first).
        ``row["time"]`` is the training wall time so far: :attr:`time_elapsed`, the seconds of every
        earlier ``learn`` call (of this trainer, or of the run it was loaded from: checkpoints keep it),
        plus this call's; ``row["fps"]`` is env steps per second of this call's time, leaving out the
        seconds numba spent compiling kernels in this thread
        (:func:`minippo.backend.numba_compile_seconds`: a one-off per machine, net shape and dtype,
        ~23 s for CartPole's preset on a 2-core VM, which would otherwise pull the rate down for the
        whole run).

        After an exception inside ``learn`` (an env's error, the callback's, a Ctrl-C) the trainer can
        go on and be saved: a rollout in progress is dropped (see :meth:`collect_rollout`); an update
        in progress keeps the minibatch steps it made (parameters and Adam state agree, unless a Ctrl-C
        lands inside numpy's Adam step itself, which can leave it applied to some arrays), and its
        iteration is not counted, though its rollout's steps are: ``learn`` called again goes on with
        the next rollout, not that update. ``minippo train`` finishes the iteration on a first Ctrl-C.
        """
        # (checked before the total is set, and not after a whole iteration)
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be a function of the iteration's row, or None, got "
                            f"{type(callback).__name__}")
        if total_timesteps is not None:
            total = integer("total_timesteps", total_timesteps, 1, whole_floats=True)  # 1e5 too
            if total > MAX_TIMESTEPS:
                raise ValueError(f"total_timesteps {TOO_MANY_TIMESTEPS}, got {total}")
            if total <= self.num_timesteps:
                raise TotalReached(total, self.num_timesteps,
                                   "learn(total) trains up to that many steps in all, not that many more")
            self._check_env_open()
            self.total_timesteps = total
        elif self.num_timesteps < self.total_timesteps:  # (the total reached: nothing to do, closed or not)
            self._check_env_open()
        start = time.perf_counter()
        compiling_at_start = backend.numba_compile_seconds(this_thread=True)
        steps_at_start, time_at_start = self.num_timesteps, self.time_elapsed
        try:
            while self.num_timesteps < self.total_timesteps:
                progress = self.num_timesteps / self.total_timesteps
                self.collect_rollout()
                stats = self.update(progress)
                self.iteration += 1
                elapsed = time.perf_counter() - start
                training = elapsed - (backend.numba_compile_seconds(this_thread=True) - compiling_at_start)
                self.time_elapsed = time_at_start + elapsed  # (before the callback, which may save)
                row = {
                    "iteration": self.iteration,
                    "timesteps": self.num_timesteps,
                    "time": self.time_elapsed,
                    "fps": (self.num_timesteps - steps_at_start) / max(training, 1e-9),
                    "mean_return": float(np.mean(self.episode_returns)) if self.episode_returns else math.nan,
                    "mean_length": float(np.mean(self.episode_lengths)) if self.episode_lengths else math.nan,
                    "beta": self.kl_coef.beta if self.config.objective == "kl_penalty" else math.nan,
                    **stats,
                }
                if callback is not None and callback(row) is False:
                    break
        except BaseException:  # (a Ctrl-C too) the interrupted iteration's seconds were spent training
            self.time_elapsed = time_at_start + (time.perf_counter() - start)
            raise
        return self

    # ------------------------------------------------------------ evaluation and files
    def evaluate(
        self, n_episodes: int | None = None, deterministic: bool = True, seed: int | None = None, env: Any = None
    ) -> dict[str, Any]:
        """Run ``n_episodes`` (default ``config.eval_episodes``) full episodes in a fresh single env of
        ``config.env_id``, or in ``env``
        (a single gymnasium env, e.g. wrapped as the training env was); returns mean/std and every
        return (see :func:`minippo.checkpoint.evaluate_policy`). ``seed`` defaults to ``config.seed`` +
        ``minippo.config.EVAL_SEED_OFFSET``, as ``minippo eval`` of the saved model does."""
        from minippo.checkpoint import evaluate_policy
        from minippo.config import EVAL_SEED_OFFSET

        # Evaluation seeds are disjoint from training's and evaluation has its own Generator, so
        # evaluating never changes the training run.
        if env is None and self.custom_env:
            raise ValueError(f"this model trains on {self.custom_env}, given as PPO(config, env=...), not made "
                             f"from config.env_id={self.config.env_id!r}: pass a single env as evaluate(env=...)")
        seed = self.config.seed + EVAL_SEED_OFFSET if seed is None else seed
        n_episodes = self.config.eval_episodes if n_episodes is None else n_episodes
        return evaluate_policy(  # a given env names itself (its spec's id, else its class)
            self.policy, self.config.env_id if env is None else None, n_episodes, deterministic, seed=seed,
            obs_norm=self.obs_norm, env_kwargs=self.config.env_kwargs, env=env,  # (its rng: agent_rng(seed))
        )

    def predict(
        self, obs: Any, deterministic: bool = True, rng: np.random.Generator | np.random.RandomState | None = None
    ) -> np.ndarray:
        """Env actions for raw env observations, as ``load_policy(path).predict`` gives them for the
        saved model: obs (obs_dim,) or (B, obs_dim) -> () / (d,) or (B,) / (B, d) (a Discrete space's
        start added, a Box's bounds clipped to), normalised with the trainer's observation statistics
        (read, not updated). The mode unless ``deterministic=False``, which needs ``rng`` (a numpy
        Generator) to draw from. (Stable-Baselines3's ``predict`` returns (actions, state) and samples
        by default; this returns the actions, the mode by default.)"""
        obs = check_obs(obs, self.policy.obs_dim, self.policy.dtype)
        if self.obs_norm is not None:  # (it takes batches)
            obs = self.obs_norm(obs.reshape(-1, obs.shape[-1]), update=False).reshape(obs.shape)
        return self.policy.env_actions(self.policy._predict(obs, deterministic, rng))

    def save(self, path: str) -> None:
        """Write everything needed to act and to resume to one pickle-free ``.npz`` (atomic)."""
        from minippo.checkpoint import save_checkpoint

        save_checkpoint(self, path)

    @classmethod
    def load(cls, path: str, env: Any = None, **overrides: Any) -> PPO:
        """Rebuild a trainer from :meth:`save`'s file, ready to ``learn`` further (resume). ``env`` is
        required for a model of a custom env (:attr:`custom_env`), else made from ``config.env_id``.
        ``overrides`` replace saved config fields (e.g. ``total_timesteps``, above the steps already
        run, ``learning_rate``, ``temperature``) and act from the first resumed iteration; not the
        fields of :data:`~minippo.config.FIXED_AT_LOAD`: ``hidden``, ``shared``, ``activation`` and
        ``dtype`` (the saved network's; CheckpointError), ``norm_obs`` and ``norm_reward`` (its
        statistics'), ``log_std_init`` (a trained log-std replaced it; ValueError). ``env_id`` may
        name another env whose spaces fit the network. The adapted KL beta resumes as saved unless
        ``kl_beta`` is given, which restarts it there. ``seed`` reseeds the envs' resets (at
        :func:`~minippo.config.train_reset_seed` of it and the steps run, which keeps them apart from
        the evaluation seeds); the trainer's own random state resumes as saved."""
        from minippo.checkpoint import load_checkpoint

        return load_checkpoint(path, env=env, **overrides)
