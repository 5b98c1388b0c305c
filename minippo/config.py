"""PPOConfig: every hyperparameter in one dataclass, a docstring under each field, validation
that names the field, the bad value and what is allowed, and named presets.

Defaults are the PPO paper's MuJoCo settings (Schulman et al. 2017, Table 3) plus most of the
implementation details the paper's code used (Huang et al. 2022): orthogonal initialisation, Adam's
eps 1e-5, advantages normalised per minibatch, global gradient clipping. Four of its MuJoCo details
are options here, off by default: the learning rate annealed to 0 (``lr_schedule="linear"``), value
clipping (``clip_vloss``), observation and reward normalisation (``norm_obs``, ``norm_reward``);
docs/derivations.md section 13 lists how minippo differs from CleanRL and Stable-Baselines3.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import re
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minippo._checks import int_list
from minippo.policy import LOG_STD_MAX, LOG_STD_MIN

OBJECTIVES = ("clip", "kl_penalty", "surrogate", "a2c", "reinforce")
ON_POLICY = ("a2c", "reinforce")
"""The objectives whose gradient is the policy gradient only on the rollout's own policy (no ratio)."""
ADVANTAGES = ("auto", "gae", "mc", "td")
SCHEDULE_KINDS = ("constant", "linear", "exponential")
ACTIVATIONS = ("tanh", "relu")
VECTOR_MODES = ("sync", "async")
AUTORESET_MODES = ("same_step", "next_step")
DTYPES = ("float32", "float64")


# The step counters are saved as int64 (checkpoint meta: [0, 2**63)); the last rollout runs past the
# budget, so the budget stops well short of that. (Was unbounded: a run with a budget of 2**63 saved a
# checkpoint that neither eval nor --resume could read.)
MAX_TIMESTEPS = 2**62
FIXED_AT_LOAD = ("hidden", "shared", "activation", "dtype", "norm_obs", "norm_reward", "log_std_init")
"""Fields a saved model keeps: ``PPO.load(path, field=...)`` refuses another value (the network's
shape and dtype, the normalisers whose statistics it was trained with, and the initial log-std,
which a trained network has left behind). Another ``env_id`` loads where its spaces fit the network."""
TOO_MANY_TIMESTEPS = "must be <= 2**62 (steps are counted in int64, with room for the last rollout)"
_FIXED = ("PPOConfig.env_kwargs of a trainer's config cannot change (its envs were made with them): train a new "
          "one, PPO(config.replace(env_kwargs=...))")


class _FixedDict(dict):
    """A dict in a trainer's frozen ``env_kwargs`` (the top level and any nested one): read as a dict
    (JSON, ``**kwargs``), changed never. Copies and pickles of it are plain dicts."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(_FIXED)

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> Any:
        return _thaw, (dict(self),)


class _FixedList(list):
    """A list in a trainer's frozen ``env_kwargs``: read as a list, changed never."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(_FIXED)

    __setitem__ = __delitem__ = __iadd__ = __imul__ = append = clear = extend = insert = pop = remove = \
        reverse = sort = _refuse

    def __reduce__(self) -> Any:
        return _thaw, (list(self),)


def _fix(v: Any) -> Any:
    """A JSON value with its dicts and lists made read-only (copies: the caller's stay as they are)."""
    if isinstance(v, dict):
        return _FixedDict((k, _fix(x)) for k, x in v.items())
    if isinstance(v, list):
        return _FixedList(_fix(x) for x in v)
    return v


def _thaw(v: Any) -> Any:
    """The plain dicts and lists of a JSON value (copies of the fixed ones, whose copies are plain)."""
    if isinstance(v, dict):
        return {k: _thaw(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_thaw(x) for x in v]
    return v


SCHEDULE_FIELDS = {
    "learning_rate": "lr_schedule='linear' or 'exponential' (from learning_rate to lr_end)",
    "clip_eps": "clip_schedule='linear' (from clip_eps to 0)",
    "ent_coef": "ent_schedule='linear' or 'exponential' (from ent_coef to ent_end)",
}
"""The fields a schedule moves, and how to ask for one (not a function, as Stable-Baselines3 takes)."""

SB3_NAMES = {
    "clip_range": "clip_range is clip_eps",
    "clip_range_vf": "clip_range_vf is clip_vloss=True, with clip_eps as its range",
    "normalize_advantage": "normalize_advantage is normalize_advantages",
    "n_eval_episodes": "n_eval_episodes is eval_episodes",
    "policy_kwargs": "policy_kwargs is hidden, activation, shared and log_std_init",
    "use_sde": "use_sde has no counterpart (minippo has no gSDE)",
    "device": "device is the environment variable MINIPPO_BACKEND",
    "env": "env is PPO(config, env=...), or the field env_id",
}
"""Stable-Baselines3's PPO arguments that minippo names otherwise: an unknown field's message says so."""


def _unknown_fields(unknown: list[str], names: Any) -> str:
    """The message for unknown config fields: what each is here if Stable-Baselines3 calls it so, and
    the known fields."""
    sb3 = [SB3_NAMES[k] for k in unknown if k in SB3_NAMES]
    here = f" (Stable-Baselines3's names: {'; '.join(sb3)})" if sb3 else ""
    return f"unknown PPOConfig field(s) {unknown}{here}; known fields: {', '.join(sorted(names))}"


def _shown(v: Any, limit: int = 300) -> str:
    """``repr(v)`` for a message, its middle cut past ``limit`` characters (an int of 400 digits);
    a value whose repr fails (an int past 4300 digits, lists nested past the recursion limit) by type."""
    try:
        text = repr(v)
    except (ValueError, RecursionError):
        return f"<{type(v).__name__} too large to show>"
    return text if len(text) <= limit else f"{text[:limit - 40]}...{text[-30:]} ({len(text)} characters)"


def _not_json_exact(v: Any, where: str) -> str | None:
    """Why ``v`` would not come back from JSON as it is (None if it would): a checkpoint or config.json
    that records ``v`` must give a resumed or evaluated run the same value."""
    if v is None or isinstance(v, (str, int, float)):  # (bool is an int; Python's json writes and reads
        return None                                      # back NaN and the infinities)
    if isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, str):
                try:  # the key JSON writes for it (0 -> "0", True -> "true", None -> "null")
                    back = f": it would come back as the key {json.dumps({k: 0})[1:-4]}"
                except (TypeError, ValueError):
                    back = ""
                return f"{where} has the key {k!r} of type {type(k).__name__} (JSON keys are strings{back})"
            problem = _not_json_exact(x, f"{where}[{k!r}]")
            if problem:
                return problem
        return None
    if isinstance(v, list):
        return next((p for i, x in enumerate(v) if (p := _not_json_exact(x, f"{where}[{i}]"))), None)
    if isinstance(v, tuple):
        return f"{where} is a tuple (JSON would give it back as a list: pass a list)"
    return f"{where} is of type {type(v).__name__}, not a JSON value"


EVAL_SEED_OFFSET = 100_000
"""Evaluation seeds by default (``PPO.evaluate``, ``minippo eval``): the run's ``seed`` plus this, so that
they are apart from training's (episode i of an evaluation resets with its seed + i; see
:func:`train_reset_seed` for training's, which keep off the first 100,000 of them)."""


def train_reset_seed(seed: int, steps: int, n_envs: int) -> int:
    """The seed of training's reset of its ``n_envs`` envs (env i resets with the result + i) after
    ``steps`` steps: at the start (steps 0) and when a run resumes. ``seed + steps`` while those seeds
    stay below ``seed + EVAL_SEED_OFFSET``; past that, ``seed + steps + 2 * EVAL_SEED_OFFSET``, so that
    a resumed run never starts its training episodes from evaluation episode 0 to 99,999's start
    states (the first case's seeds are below them; the second's, above)."""
    if steps + n_envs <= EVAL_SEED_OFFSET:
        return seed + steps
    return seed + steps + 2 * EVAL_SEED_OFFSET


def agent_rng(seed: int) -> np.random.Generator:
    """The Generator of the agent's own draws for ``seed``: its actions (training and evaluation) and
    the minibatch order. A stream apart from every env's: gymnasium seeds ``reset(seed=s)`` with
    ``default_rng(s)``, and ``default_rng(seed)`` was that very stream for the run's env 0 (and for an
    evaluation's first episode), so the first actions were drawn from the bits that had set its start
    state. Here the seed's ``SeedSequence`` takes a spawn key, which no env seed has. (The network's
    initial weights are drawn once, before any action, by ``ActorCritic(seed=seed)`` from
    ``default_rng(seed)``, as a standalone ActorCritic draws them; kept so, the initial weights of
    every saved or scripted run stay as they were.)"""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))


@dataclass
class PPOConfig:
    """Hyperparameters of one training run (see README for the objective ladder)."""

    env_id: str = "CartPole-v1"
    """gymnasium environment id."""
    objective: str = "clip"
    """policy objective: clip (PPO-clip), kl_penalty (PPO with adaptive KL penalty), surrogate
    (importance-sampled, unclipped), a2c (policy gradient with TD(0) advantage), reinforce
    (policy gradient with Monte Carlo return minus value baseline). a2c and reinforce are on-policy:
    for the textbook one gradient step per rollout set n_epochs=1 and batch_size=n_envs*n_steps
    (examples/ladder.py's a2c rung does; its reinforce rung takes one pass in steps of 256). Every
    step after the first on a rollout, the later minibatches of one pass included, is taken on data
    of an older policy without the ratio that would make it a policy-gradient step: one pass in
    minibatches uses each sample once, slightly off-policy; n_epochs > 1 reuses the rollout (PPO
    warns; ``minippo train --objective a2c`` sets n_epochs=1 unless told otherwise)."""
    advantage: str = "auto"
    """advantage estimator: gae (GAE(gamma, lambda)), mc (reward-to-go G_t - V), td (TD(0) error
    delta_t); auto = gae for clip/kl_penalty/surrogate, td for a2c, mc for reinforce."""
    total_timesteps: int = 1_000_000
    """environment steps to train for (summed over the vector envs); a whole float (1e6) is taken as
    its integer, as ``PPO.learn`` takes it."""
    seed: int = 0
    """seeds the network init, the env resets and every sampling Generator (as a ``PPO.load``
    override: the env resets and evaluation from there on; the trainer's Generator resumes its state)."""
    n_envs: int = 1
    """parallel environments N in each rollout."""
    n_steps: int = 2048
    """steps T per environment per rollout; the batch is T * N transitions."""
    batch_size: int = 64
    """minibatch size; must divide n_envs * n_steps (every valid sample is used once per epoch)."""
    n_epochs: int = 10
    """passes over the rollout per update (K in the paper)."""
    learning_rate: float = 3e-4
    """Adam step size at the start of training."""
    lr_schedule: str = "constant"
    """constant | linear (to lr_end) | exponential (to lr_end) over training progress, read once per
    iteration at its start (progress = steps so far / total_timesteps, as in CleanRL): the first update
    takes learning_rate, the last one about an iteration's share of the schedule short of lr_end."""
    lr_end: float = 0.0
    """learning rate the linear/exponential schedules head for at progress 1 (the end of training; the
    last update, at its start's progress, stays one iteration's step short of it)."""
    adam_eps: float = 1e-5
    """Adam epsilon (PPO detail #3)."""
    gamma: float = 0.99
    """discount factor, in (0, 1]."""
    gae_lambda: float = 0.95
    """GAE lambda, in [0, 1]; 1 gives Monte Carlo returns minus V, 0 gives TD(0). Used only by the
    gae estimator (advantage=gae, or auto with clip/kl_penalty/surrogate)."""
    clip_eps: float = 0.2
    """clip range epsilon, > 0: of the ratio (objective=clip only) and of the value (clip_vloss)."""
    clip_schedule: str = "constant"
    """constant | linear (to 0) schedule of clip_eps (where clip_eps is used: with clip_vloss the value's
    clip range anneals too, as in OpenAI baselines' ppo2, so late updates barely move the critic)."""
    clip_vloss: bool = False
    """clip the value update around the old value by clip_eps (PPO detail #9)."""
    vf_coef: float = 0.5
    """c_1, weight of the value loss in the total loss."""
    ent_coef: float = 0.0
    """c_2, weight of the entropy bonus at the start of training."""
    ent_schedule: str = "constant"
    """constant | linear (to ent_end) | exponential (to ent_end) decay of ent_coef, read at each
    iteration's start as lr_schedule is."""
    ent_end: float = 0.0
    """entropy coefficient the non-constant schedules head for at progress 1 (the last update stays
    one iteration's step short of it, as with lr_end)."""
    kl_target: float = 0.01
    """d_targ of the adaptive KL penalty: beta halves below d_targ/1.5, doubles above 1.5 d_targ
    (objective=kl_penalty only)."""
    kl_beta: float = 1.0
    """initial beta of the KL penalty (objective=kl_penalty only; the logged beta is empty otherwise)."""
    target_kl: float | None = None
    """stop the epochs of an update early once approx_kl exceeds this (None: never). Tested on each
    minibatch before its step; the one that stops is not stepped, so the logged approx_kl (the mean over
    the minibatches stepped) can stay below this when the update stopped early: n_updates tells."""
    normalize_advantages: bool = True
    """normalise advantages per minibatch to zero mean, unit std (PPO detail #7)."""
    max_grad_norm: float = 0.5
    """global gradient-norm clip (PPO detail #11); <= 0 disables it."""
    hidden: tuple[int, ...] = (64, 64)
    """hidden layer widths of the actor and critic MLPs."""
    activation: str = "tanh"
    """hidden activation: tanh | relu."""
    shared: bool = False
    """share one trunk between actor and critic (separate is the paper's choice)."""
    log_std_init: float = 0.0
    """initial log standard deviation of Gaussian policies, in [LOG_STD_MIN, LOG_STD_MAX] = [-10, 2]."""
    temperature: float = 1.0
    """softmax temperature of discrete policies, used both for acting and in the update."""
    norm_obs: bool = False
    """running mean/std observation normalisation, clipped to +-10."""
    norm_reward: bool = False
    """scale rewards by the running std of the discounted return, clipped to +-10."""
    vector: str = "sync"
    """gymnasium vector env: sync | async (subprocesses)."""
    autoreset: str = "same_step"
    """same_step (final obs in info) | next_step (gymnasium's vectorised envs; reset steps masked).
    The mode of the env minippo makes; an env given as ``PPO(config, env=...)`` is read in its own
    mode (``env.metadata["autoreset_mode"]``), which the trainer's config (and its checkpoints) then records."""
    dtype: str = "float32"
    """training dtype: float32 | float64."""
    eval_episodes: int = 10
    """episodes PPO.evaluate() plays when not told how many."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """extra keyword arguments for gymnasium.make: JSON values that JSON gives back as they are (string
    keys; lists, not tuples), since checkpoints and config.json record them for resume and evaluation."""

    def __post_init__(self) -> None:
        self.validate()

    def __setattr__(self, name: str, value: Any) -> None:
        # A trainer's own config (PPO.config) is fixed: the networks, schedules and buffer were built
        # from it, so a field set afterwards was partly ignored (learning_rate, ent_coef) and partly
        # read unchecked (target_kl=-1 stopped every update), and saved into a file load refused.
        if self.__dict__.get("_frozen"):
            # (PPO.load refuses these overrides: the saved network and statistics were made with them)
            resume = "" if name in FIXED_AT_LOAD else f", or resume with another value, PPO.load(path, {name}=...)"
            raise AttributeError(f"PPOConfig.{name} of a trainer's config cannot change (PPO built its networks, "
                                 f"schedules and buffer from it): train a new one, PPO(config.replace({name}=...))"
                                 f"{resume}")
        object.__setattr__(self, name, value)

    def _freeze(self) -> PPOConfig:
        """Make every field assignment raise (the config a PPO trainer holds); returns self. Copies
        (``copy``, ``deepcopy``, pickle: all take :meth:`__getstate__`; :meth:`replace`) are not frozen."""
        object.__setattr__(self, "env_kwargs", _fix(self.env_kwargs))  # (in place: TypeError)
        object.__setattr__(self, "_frozen", True)
        return self

    def __getstate__(self) -> dict[str, Any]:
        """The fields, not the frozen mark: a copy (or an unpickled config) is its holder's own."""
        state = {k: v for k, v in self.__dict__.items() if k != "_frozen"}
        state["env_kwargs"] = _thaw(self.env_kwargs)
        return state

    def _normalise(self) -> None:
        """numpy values as plain Python ones, before validation (also of fields set after construction)."""
        # A bare int or a string ("64" would silently become (6, 4)) is not a list of widths.
        widths = int_list(self.hidden)
        if widths is not None:
            self.hidden = tuple(widths)
        # dtype=np.float32 or np.dtype("float32"): its name (a dtype object compared equal to the name,
        # passed the check and then failed to_json, after training, at the save)
        if isinstance(self.dtype, np.dtype) or (isinstance(self.dtype, type) and issubclass(self.dtype, np.generic)):
            self.dtype = np.dtype(self.dtype).name
        # numpy scalars (a sweep over np.arange, a value read from an array) are plain numbers here:
        # ints stay exact, and every stored value is a Python int or float that to_json can write
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type == "bool" and isinstance(v, np.bool_):
                setattr(self, f.name, bool(v))  # np.True_: not a numbers.Real
                continue
            if isinstance(v, np.str_):  # (a str subclass: json writes it, but as a plain str it is one)
                setattr(self, f.name, str(v))
                continue
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                continue
            if f.type == "int" and isinstance(v, numbers.Integral):
                setattr(self, f.name, int(v))
            elif f.name == "total_timesteps" and math.isfinite(v) and v == int(v):  # 1e6, as learn(1e6)
                setattr(self, f.name, int(v))
            elif f.type in ("float", "float | None"):
                try:
                    setattr(self, f.name, float(v))
                except OverflowError:  # an int beyond float's range: left for validate() to name
                    pass

    # ------------------------------------------------------------ validation
    def validate(self) -> PPOConfig:
        """Raise ValueError naming the field, its value and what is allowed; returns self.

        numpy scalars (and a numpy array or list of widths for ``hidden``) are first turned into the
        Python values they hold, also when set after construction (a trainer's frozen config holds them
        already)."""
        if not self.__dict__.get("_frozen"):
            self._normalise()

        def bad(name: str, allowed: str) -> ValueError:
            return ValueError(f"PPOConfig.{name}={_shown(getattr(self, name))} is invalid: {allowed}")

        for name, choices in (
            ("objective", OBJECTIVES),
            ("advantage", ADVANTAGES),
            ("lr_schedule", SCHEDULE_KINDS),
            ("clip_schedule", ("constant", "linear")),
            ("ent_schedule", SCHEDULE_KINDS),
            ("activation", ACTIVATIONS),
            ("vector", VECTOR_MODES),
            ("autoreset", AUTORESET_MODES),
            ("dtype", DTYPES),
        ):
            v = getattr(self, name)  # (a 0-d string array compares equal to its string)
            if not isinstance(v, str) or v not in choices:
                raise bad(name, f"allowed values are {', '.join(choices)}")
        for name in ("total_timesteps", "n_envs", "n_steps", "batch_size", "n_epochs", "eval_episodes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise bad(name, "must be an integer >= 1")
        for name in ("clip_vloss", "normalize_advantages", "shared", "norm_obs", "norm_reward"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "must be true or false")
        if self.total_timesteps > MAX_TIMESTEPS:
            raise bad("total_timesteps", TOO_MANY_TIMESTEPS)
        if self.batch_size < 2 and self.normalize_advantages:
            raise bad("batch_size", "must be >= 2 when normalize_advantages (one sample normalises to 0: no "
                                    "policy gradient)")
        n_batch = self.n_envs * self.n_steps
        if n_batch % self.batch_size:
            raise bad("batch_size", f"must divide n_envs * n_steps = {n_batch}")
        def number(name: str) -> float | None:
            """The field's value if it is a finite real number (not a bool), else None."""
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= sys.float_info.max
            return v if ok else None  # (not NaN nor an infinity, nor an int too large for a float)

        for name, schedule in SCHEDULE_FIELDS.items():
            if callable(getattr(self, name)):  # (Stable-Baselines3 takes a function of the progress)
                raise bad(name, f"must be a number: a schedule is {schedule}")
        for name in ("learning_rate", "adam_eps", "clip_eps", "kl_target", "kl_beta", "temperature"):
            v = number(name)
            if v is None or v <= 0:
                raise bad(name, "must be a finite number > 0")
        for name in ("vf_coef", "ent_coef", "ent_end", "lr_end"):
            v = number(name)
            if v is None or v < 0:
                raise bad(name, "must be a finite number >= 0")
        for name in ("max_grad_norm", "log_std_init"):
            if number(name) is None:
                raise bad(name, "must be a finite number")
        if not LOG_STD_MIN <= self.log_std_init <= LOG_STD_MAX:
            raise bad("log_std_init", f"must be in [{LOG_STD_MIN}, {LOG_STD_MAX}] (the policy's log-std range)")
        v = number("gamma")
        if v is None or not 0.0 < v <= 1.0:
            raise bad("gamma", "must be a number in (0, 1]")
        v = number("gae_lambda")
        if v is None or not 0.0 <= v <= 1.0:
            raise bad("gae_lambda", "must be a number in [0, 1]")
        if self.target_kl is not None and (number("target_kl") or 0) <= 0:
            raise bad("target_kl", "must be a finite number > 0, or None")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise bad("seed", "must be an integer >= 0")
        if not isinstance(self.hidden, tuple) or not self.hidden \
                or any(type(w) is not int or w < 1 for w in self.hidden):  # (_normalise made ints of ints)
            raise bad("hidden", "must list at least one positive integer width, e.g. (64, 64) "
                                "(on the command line: --set hidden=64,64)")
        if self.lr_schedule == "exponential" and self.lr_end <= 0:
            raise bad("lr_end", "must be > 0 for an exponential lr_schedule")
        if self.ent_schedule == "exponential" and self.ent_coef <= 0:
            raise bad("ent_coef", "must be > 0 for an exponential ent_schedule (it decays from ent_coef to ent_end)")
        if self.ent_schedule == "exponential" and self.ent_end <= 0:
            raise bad("ent_end", "must be > 0 for an exponential ent_schedule")
        if not isinstance(self.env_id, str) or not self.env_id:
            raise bad("env_id", "must be a non-empty gymnasium id")
        if not isinstance(self.env_kwargs, dict):
            raise bad("env_kwargs", "must be a dict of the env's keyword arguments (on the command line, JSON: "
                                    "--set 'env_kwargs={\"continuous\": true}')")
        # checkpoints and config.json record it: refused now, not at the save after training, and refused
        # where the JSON read back would differ (a resumed or evaluated run would make other envs)
        try:
            problem = _not_json_exact(self.env_kwargs, "env_kwargs")
            if not problem:
                json.dumps(self.env_kwargs, sort_keys=True)  # (what else it refuses: an int past 4300 digits)
        except (TypeError, ValueError) as e:
            problem = str(e)
        except RecursionError:
            problem = "nested too deeply, or circular"
        if problem:
            raise bad("env_kwargs", "must hold JSON values only (dicts with string keys, lists, str, int, "
                                    f"float, bool, None): {problem}")
        return self

    @property
    def advantage_estimator(self) -> str:
        """The estimator actually used (resolves ``auto``)."""
        if self.advantage != "auto":
            return self.advantage
        return {"a2c": "td", "reinforce": "mc"}.get(self.objective, "gae")

    # ------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        d["env_kwargs"] = _thaw(self.env_kwargs)  # (a frozen config's are read-only)
        return d

    def to_json(self) -> str:
        """The fields as a JSON string (sorted keys)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PPOConfig:
        """Build from a dict; unknown keys raise a ValueError that lists the known ones."""
        if not isinstance(d, dict):
            raise TypeError(f"PPOConfig.from_dict takes a dict of fields (a JSON object), got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(_unknown_fields(unknown, names))
        return cls(**d)

    def replace(self, **changes: Any) -> PPOConfig:
        """A validated copy with ``changes`` applied (unknown names raise ValueError)."""
        d = self.to_dict()
        d.update(changes)
        return PPOConfig.from_dict(d)

    def parse_assignment(self, assignment: str) -> tuple[str, Any]:
        """``"key=value"`` (as in ``--set``) -> (key, value); the value is parsed as JSON when it
        can be (numbers, true/false, null, lists), else kept as a string. ``hidden`` also takes
        integers separated by commas (``64,64``, ``(64, 64)``) and one integer as one layer (``64``).
        Not yet validated."""
        if not isinstance(assignment, str) or "=" not in assignment:
            raise ValueError(f"--set expects key=value, got {assignment!r}")
        key, raw = assignment.split("=", 1)
        key = key.strip()
        names = {f.name for f in dataclasses.fields(self)}
        if key not in names:
            sb3 = f" (Stable-Baselines3's names: {SB3_NAMES[key]})" if key in SB3_NAMES else ""
            raise ValueError(f"unknown config key {key!r}{sb3}; known keys: {', '.join(sorted(names))}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = {"none": None, "true": True, "false": False}.get(raw.strip().lower(), raw)
        if key == "hidden":
            value = _widths(value)
        if isinstance(getattr(self, key), float) and isinstance(value, int) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:  # beyond float's range: left as the int, for validation to name
                pass
        return key, value

    def set_from_string(self, assignment: str) -> PPOConfig:
        """A validated copy with one ``key=value`` applied."""
        return self.set_from_strings([assignment])

    def set_from_strings(self, assignments: list[str]) -> PPOConfig:
        """A validated copy with every ``key=value`` applied together (validated once, at the end,
        so that e.g. n_steps and batch_size can change in the same call)."""
        if isinstance(assignments, (str, bytes)) or not hasattr(assignments, "__iter__"):  # (one per character)
            raise TypeError(f"assignments must be a list of 'key=value' strings, got {assignments!r}")
        return self.replace(**dict(self.parse_assignment(a) for a in assignments))


def _widths(value: Any) -> Any:
    """``--set hidden=``'s forms beside JSON's ``[64, 64]``: ``64,64`` or ``(64, 64)`` (a string of
    integers separated by commas) and a lone ``64`` (one layer) -> a list of ints; else ``value``
    unchanged, for the validation to name."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if not isinstance(value, str):
        return value
    inner = value.strip()
    if inner[:1] + inner[-1:] in ("()", "[]"):
        inner = inner[1:-1]
    parts = [p.strip() for p in inner.split(",")]
    if len(parts) > 1 and parts[-1] == "":  # a trailing comma, as in Python's (64,)
        parts.pop()
    if all(re.fullmatch(r"[+-]?[0-9]+", p) for p in parts):
        return [int(p) for p in parts]
    return value


def _naming_unknown_fields(init: Any) -> Any:
    """The dataclass's ``__init__``, whose TypeError for an unknown keyword (``PPOConfig(lr=1)``) lists
    the known fields, as ``replace`` and ``from_dict`` do (same exception type as before)."""
    names = frozenset(f.name for f in dataclasses.fields(PPOConfig))

    @functools.wraps(init)
    def __init__(self: PPOConfig, *args: Any, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise TypeError(_unknown_fields(unknown, names))
        init(self, *args, **kwargs)

    return __init__


PPOConfig.__init__ = _naming_unknown_fields(PPOConfig.__init__)  # type: ignore[method-assign]


# rl-baselines3-zoo's tuned PPO hyperparameters (its hyperparams/ppo.yml), plus the settings marked
# below as not the zoo's. What the zoo leaves at SB3's defaults is minippo's default here, vf_coef
# included: SB3's value loss has no 1/2, so its 0.5 would be 1.0 here (docs/derivations.md section 13);
# the presets keep 0.5, as CleanRL does. SB3 trained alike at either weight (Pendulum, session 61).
PRESETS: dict[str, dict[str, Any]] = {
    "CartPole-v1": dict(
        env_id="CartPole-v1", n_envs=8, total_timesteps=100_000, n_steps=32, batch_size=256,
        gae_lambda=0.8, gamma=0.98, n_epochs=20, ent_coef=0.0, learning_rate=1e-3,
        lr_schedule="linear", lr_end=0.0, clip_eps=0.2, clip_schedule="linear",
        # gymnasium's numpy-vectorised CartPole (NEXT_STEP autoreset) steps ~1.8x faster than
        # SyncVectorEnv (8 envs: 0.47-0.51 s against 0.85-0.94 s per 100k steps, session 63); its
        # reset steps are masked out of the batch (see minippo.envs).
        autoreset="next_step",
        # Only read by objective="kl_penalty" (not a zoo setting): with the paper's d_targ = 0.01
        # and this preset's 20 epochs at lr 1e-3, 1 of 3 seeds collapsed mid-run; with the
        # paper's d_targ = 0.003, 5 of 5 seeds reached 500 (measured, 20-episode evaluation).
        kl_target=0.003,
    ),
    # The zoo also turns on gSDE, which minippo does not implement. Without it, 100k steps gave a
    # 20-episode deterministic evaluation of -168 to -215 over seeds 0-5 (measured; SB3 without
    # gSDE: -120 / -249 on 2 seeds).
    "Pendulum-v1": dict(
        env_id="Pendulum-v1", n_envs=4, total_timesteps=100_000, n_steps=1024, batch_size=64,
        gae_lambda=0.95, gamma=0.9, n_epochs=10, ent_coef=0.0, learning_rate=1e-3, clip_eps=0.2,
    ),
}


def preset(name: str, **overrides: Any) -> PPOConfig:
    """The named preset (``"CartPole-v1"``, ``"Pendulum-v1"``) with ``overrides`` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available presets: {', '.join(sorted(PRESETS))}")
    return PPOConfig.from_dict({**PRESETS[name], **overrides})
