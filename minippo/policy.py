"""Actor-critic: a policy network pi_theta(a|s) and a value network V_phi(s), separate or on a
shared trunk, with one ``backward`` that returns every parameter gradient.

Usage (what ``minippo.ppo.loss_and_grads`` does)::

    logp, entropy, values, cache = policy.evaluate(obs, actions)
    kl = policy.kl_old(dist_old, cache)          # only for the KL-penalty objective
    grads = policy.backward(cache, dlogp=..., dentropy=..., dvalue=..., dkl=...)

``grads`` has exactly the keys of ``policy.params``: ``actor.W0 ...``, ``critic.W0 ...``,
``trunk.W0 ...`` (shared only) and ``log_std`` (continuous only).
Derivations: docs/derivations.md sections 4 (the shared trunk) and 6.4 (the state-independent log-std).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from minippo import backend
from minippo._checks import (
    array,
    cast_quietly,
    finite,
    fixed,
    flag,
    float_dtype,
    generator,
    int_list,
    real,
    renamed_state,
    rng_from_seed,
)
from minippo.backend import array_module, asnumpy
from minippo.distributions import Categorical, DiagGaussian
from minippo.nn import MLP, Params, _in_dtype
from minippo.spaces import Box, Discrete, as_space

Array = Any

# sigma = exp(log_std) is kept in [4.5e-5, 7.4]: a drifting log-std is clamped rather than allowed to
# reach inf/NaN (SB3 #1593). The floor is float32's: the mean is rounded to ~1e-7 of its size, and a
# smaller sigma turns that rounding into log-prob noise (at theta = theta_old, Pendulum, float32: |log r|
# up to 8e-5 at -10, 2.0 at -20). The trainer projects the parameter back into the range after every
# optimiser step (:meth:`ActorCritic.clamp_log_std`); a value set from outside is clamped in the
# forward pass, with zero gradient where the clamp is active (derivations 6.4).
LOG_STD_MIN, LOG_STD_MAX = -10.0, 2.0


def check_obs(obs: Any, obs_dim: int, dtype: np.dtype) -> np.ndarray:
    """obs (obs_dim,) or (B, obs_dim) of real numbers -> a ``dtype`` array; a wrong shape, a complex
    or non-numeric value, NaN or inf raises (TypeError / ValueError) naming the observation; so does a
    numpy masked array (np.asarray dropped its mask: the numbers under it were acted on)."""
    if type(obs) is not np.ndarray and isinstance(obs, np.ma.MaskedArray):
        raise TypeError("obs is a numpy masked array: its mask would be dropped and the numbers under it acted "
                        "on; pass obs.filled(<a value>) or np.asarray(obs) if those are meant")
    try:
        a = np.asarray(obs)
    except ValueError as e:  # a ragged list ("inhomogeneous shape ...")
        raise ValueError(f"obs must have shape ({obs_dim},) or (B, {obs_dim}): {e}") from e
    if a.dtype.kind not in "biuf":
        raise TypeError(f"obs must hold real numbers, got dtype {a.dtype}")
    if a.ndim not in (1, 2) or a.shape[-1] != obs_dim:
        raise ValueError(f"obs must have shape ({obs_dim},) or (B, {obs_dim}), got {a.shape}")
    if a.dtype.kind != "f" and (a.dtype.kind == "b" or np.dtype(dtype).itemsize >= 4):
        return a.astype(dtype, copy=False)  # bools, and integers (|x| < 2^64) within float32's range
    # (integers into a float16 policy: beyond 65504 they become inf, refused below)
    # The sum of squares (BLAS) is finite only when every element is; it is also inf when squares
    # overflow, which the exact test then tells apart. ~0.5 us less than isfinite().all() alone.
    if not math.isfinite(np.vdot(a, a)) and not np.isfinite(a).all():
        raise ValueError(f"obs holds NaN or inf: {a}")
    if a.dtype == dtype:  # (the usual case: nothing to cast, ~0.25 us of cast_quietly's checks saved)
        return a
    out = cast_quietly(a, dtype)
    if (out.dtype.itemsize < a.dtype.itemsize or a.dtype.kind != "f") and not np.isfinite(out).all():
        raise ValueError(f"obs holds values beyond the policy's {np.dtype(dtype)} range "
                         f"(|x| <= {np.finfo(dtype).max:.4g}): {a}")
    return out


def _network(name: str, doc: str) -> property:
    """ActorCritic's ``actor``, ``critic`` and ``trunk`` (``self._<name>``). Assigning another network
    relinks the params dicts (nn.Params.links): the network swapped out keeps its arrays and no longer
    follows the policy's dict (nor the policy its dict)."""
    get = operator.attrgetter("_" + name)

    def swap(self: ActorCritic, net: MLP | None) -> None:
        old = self.__dict__.get("_" + name)
        if old is not None and isinstance(old.params, Params):
            old.params.links = {}
        self.__dict__["_" + name] = net
        if "_params" in self.__dict__:
            self._link_params()

    return property(get, swap, doc=doc)


class ActorCritic:
    """Policy and value function for a Discrete (softmax) or Box (diagonal Gaussian) action space.

    obs (B, obs_dim) -> distribution over actions, V(s) (B,). Separate actor and critic MLPs by
    default (PPO detail #13); ``shared=True`` puts one trunk under two linear heads.
    Gaussian policies use a state-independent ``log_std`` parameter of shape (action_dim,).
    """

    def __init__(
        self,
        obs_dim: int,
        action_space: Any,
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
        shared: bool = False,
        log_std_init: float = 0.0,
        seed: int = 0,
        dtype: Any = np.float32,
        temperature: float = 1.0,
    ) -> None:
        if not hasattr(obs_dim, "__index__") or isinstance(obs_dim, bool) or int(obs_dim) < 1:
            raise ValueError(f"obs_dim must be an integer >= 1, got {obs_dim!r}")
        widths = int_list(hidden)  # not a bare int, a string ("64" would become (6, 4)), bools or floats
        if widths is None or any(h < 1 for h in widths):
            raise ValueError(f"hidden must be a sequence of integer layer widths >= 1, got {hidden!r}")
        hidden = widths
        shared = flag("shared", shared)
        if shared and not hidden:
            raise ValueError("shared=True needs at least one hidden layer (hidden=())")
        log_std_init = real("log_std_init", log_std_init, LOG_STD_MIN, LOG_STD_MAX)
        self._obs_dim = int(obs_dim)
        self._action_space = as_space(action_space)
        self._discrete = isinstance(self.action_space, Discrete)
        self._act_dim = self.action_space.n if self.discrete else self.action_space.shape[0]
        self._hidden = hidden
        self._activation = activation
        self._shared = bool(shared)
        self.temperature = temperature  # (checked: the property)
        self._dtype = float_dtype("dtype", dtype)
        rng = rng_from_seed("seed", seed)
        kw = {"activation": activation, "seed": rng, "dtype": dtype}
        widths = layer_widths(self.obs_dim, self.act_dim, hidden, self.shared)
        self.trunk = MLP(widths["trunk"], activate_output=True, **kw) if shared else None
        self.actor = MLP(widths["actor"], out_gain=0.01, **kw)
        self.critic = MLP(widths["critic"], out_gain=1.0, **kw)
        # Params: one flat dict holding the very arrays of the sub-networks (updates are in place). A
        # versioned dict (nn.Params): the fused numba act checks its version instead of every array.
        self._params = Params()
        for prefix, net in self._nets():
            self._params.update({f"{prefix}.{k}": v for k, v in net.params.items()})
        if not self.discrete:
            self._params["log_std"] = np.full(self.act_dim, log_std_init, dtype=dtype)
        self._link_params()

    def _refuse_params(self, value: Any) -> None:
        # (the networks went on computing with the old arrays, and Adam updating them, while save() wrote
        # the new dict's: a checkpoint of a network that never acted)
        if value is self._params:  # (policy.params |= {...} stores the same dict back)
            return
        raise AttributeError("ActorCritic.params is fixed at construction (the networks compute with its arrays, "
                             "Adam updates them, checkpoints save them): write into them, "
                             "policy.params[k][...] = new")

    params = property(operator.attrgetter("_params"), _refuse_params, doc="""
        ``{"actor.W0": (obs_dim, h), ..., "critic.b1": (1,), ["trunk.*"], ["log_std": (act_dim,)]}``:
        the arrays the networks compute with (each MLP's ``params`` holds the same ones), which Adam
        updates and the checkpoints save. Write into them (``params[k][...] = new``); a name rebound to
        another array (``params[k] = new``) is rebound in the MLP's dict too, and the other way round.
        The dict itself is fixed: assigning another raises. (A network's ``params`` replaced by another
        dict, ``policy.actor.params = {...}``, is not linked: the policy's dict keeps its arrays.) Read
        through operator.attrgetter: the fused acts read it on every call.""")

    # What the networks were built for (set later, nothing was converted or rebuilt; a checkpoint saved
    # then was refused as "damaged or edited"): another value is another policy.
    _BUILT = "the networks were built for it: a new ActorCritic(...), or PPOConfig(...) for a trainer"
    obs_dim = fixed("ActorCritic", "obs_dim", _BUILT, "The observation width the networks take.")
    action_space = fixed("ActorCritic", "action_space", _BUILT, "The minippo.spaces Discrete or Box acted in.")
    discrete = fixed("ActorCritic", "discrete", _BUILT, "Whether the action space is Discrete (softmax head).")
    act_dim = fixed("ActorCritic", "act_dim", _BUILT, "Discrete: the number of actions; Box: its width.")
    hidden = fixed("ActorCritic", "hidden", _BUILT, "The hidden layer widths (a list of ints).")
    shared = fixed("ActorCritic", "shared", _BUILT, "Whether one trunk feeds both heads.")
    dtype = fixed("ActorCritic", "dtype", _BUILT, "The parameters' float dtype (float32 or float64).")
    actor = _network("actor", "The actor MLP: obs (or trunk features) -> logits / Gaussian means.")
    critic = _network("critic", "The critic MLP: obs (or trunk features) -> V(s).")
    trunk = _network("trunk", "The shared trunk MLP (``shared=True``), else None.")

    def _link_params(self) -> None:
        """Link each network's ``params`` and this policy's (nn.Params.links): rebinding a name in one
        rebinds it in the other."""
        down = {}
        for prefix, net in self._nets():
            if isinstance(net.params, Params):
                net.params.links = {k: (self._params, f"{prefix}.{k}") for k in net.params}
                down.update({f"{prefix}.{k}": (net.params, k) for k in net.params})
        self._params.links = down

    @property
    def temperature(self) -> float:
        """The softmax temperature T > 0 of a Discrete policy (a Gaussian one ignores it). Settable, and
        checked when set: every path (numpy, the fused numba and cupy kernels) reads it as it is."""
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self._temperature = real("temperature", value, 0.0, low_open=True)

    def __getstate__(self) -> dict:
        """For copy and pickle: without the fused acts' dispatch states (rebuilt on use)."""
        state = self.__dict__.copy()
        state.pop("_numba_act_state", None)
        state.pop("_gpu_act_state", None)  # (its table holds this policy's device addresses)
        return state

    def __setstate__(self, state: dict) -> None:
        """From :meth:`__getstate__`. Pickles are for copies within one version (checkpoints,
        :meth:`minippo.PPO.save` / :func:`minippo.load_policy`, are the format kept across versions);
        this maps the older attribute ``temperature`` to the checked property's ``_temperature``."""
        state = dict(state)
        if "temperature" in state:
            state["_temperature"] = real("temperature", state.pop("temperature"), 0.0, low_open=True)
        self.__dict__.update(renamed_state(state, ("params", "actor", "critic", "trunk", "obs_dim", "action_space",
                                                   "discrete", "act_dim", "hidden", "shared", "dtype")))
        if isinstance(self._params, Params):  # (the links are not pickled: made again)
            self._link_params()

    def clamp_log_std(self) -> None:
        """Project the Gaussian ``log_std`` (d,) back into [LOG_STD_MIN, LOG_STD_MAX], in place.

        Called after every optimiser step. Without it a log-std that one step pushes past a bound
        would stay there: the forward pass clamps it, so its gradient is zero from then on. On the
        bound itself the gradient flows. A no-op for a Discrete policy."""
        log_std = self.params.get("log_std")
        if log_std is not None:
            np.clip(log_std, LOG_STD_MIN, LOG_STD_MAX, out=log_std)

    @property
    def activation(self) -> str:
        """The networks' activation, fixed at construction (each MLP holds it too): build a new
        policy for another."""
        return self._activation

    @activation.setter
    def activation(self, value: str) -> None:
        raise AttributeError(f"ActorCritic.activation is fixed at construction ({self._activation!r}); "
                             "build a new policy")

    def _nets(self) -> list[tuple[str, MLP]]:
        nets = [("trunk", self.trunk)] if self.trunk is not None else []
        return [*nets, ("actor", self.actor), ("critic", self.critic)]

    def expected_networks(self) -> list[tuple[str, MLP, int, int, bool]]:
        """(prefix, network, input width, output width, whether its output is activated) per network,
        the trunk first: what the constructor builds. The fused kernels (``kernels/cpu_act.py``,
        ``cpu_update.py``, ``gpu_act.py``) check the networks against it before trusting their layout,
        since a network swapped in later may differ."""
        feat = self.obs_dim if self.trunk is None else self.trunk.sizes[-1]
        nets = [("actor", self.actor, feat, self.act_dim, False), ("critic", self.critic, feat, 1, False)]
        if self.trunk is not None:
            nets.insert(0, ("trunk", self.trunk, self.obs_dim, feat, True))
        return nets

    def fused_layers(self) -> list[tuple[tuple[Array, ...], tuple[Array, ...]]] | None:
        """Per network, the trunk first (as :meth:`expected_networks`): its weights (W0, W1, ...) and
        biases (b0, b1, ...), when the fused kernels (``kernels/cpu_act.py``, ``cpu_update.py``,
        ``gpu_act.py``) may compute this policy: an ActorCritic itself and MLPs themselves (they
        compute what these classes' own methods do: a subclass's overrides would be bypassed), tanh or
        relu, every network as the constructor builds it (widths, output activation, the policy's
        activation), every W_i (n_i, n_{i+1}) and b_i (n_{i+1},) the very array in ``params`` (what
        the array path reads), and nothing else in ``params`` but log_std (act_dim,) of a Gaussian
        policy. The kernels index without bounds checks: these shapes are what keeps them inside.
        None otherwise (the array path runs); dtype, device and layout are each kernel's own checks."""
        if type(self) is not ActorCritic or self.activation not in ("tanh", "relu"):
            return None
        params, out, n_keys = self.params, [], 0 if self.discrete else 1
        for prefix, net, n_in, n_out, activated in self.expected_networks():
            sizes = net.sizes
            if type(net) is not MLP or sizes[0] != n_in or sizes[-1] != n_out \
                    or bool(net.activate_output) is not activated or net.activation != self.activation:
                return None
            if not all(params.get(f"{prefix}.{k}") is a for k, a in net.params.items()):
                return None  # the policy's dict and the MLP's disagree (a rebinding in one of them)
            Ws = tuple(net.params.get(f"W{i}") for i in range(net.n_layers))
            bs = tuple(net.params.get(f"b{i}") for i in range(net.n_layers))
            if any(W is None or W.shape != (sizes[i], sizes[i + 1]) for i, W in enumerate(Ws)) \
                    or any(b is None or b.shape != (sizes[i + 1],) for i, b in enumerate(bs)):
                return None
            out.append((Ws, bs))
            n_keys += 2 * net.n_layers
        if len(params) != n_keys:
            return None
        if not self.discrete and getattr(params.get("log_std"), "shape", None) != (self.act_dim,):
            return None
        return out

    def to(self, to_device: Any) -> ActorCritic:
        """Move every parameter with ``to_device`` (e.g. ``backend.to_device``), keeping the links."""
        for prefix, net in self._nets():
            for k in list(net.params):
                net.params[k] = to_device(net.params[k])
                self.params[f"{prefix}.{k}"] = net.params[k]
        if "log_std" in self.params:
            self.params["log_std"] = to_device(self.params["log_std"])
        return self

    # ------------------------------------------------------------ forward
    def make_dist(self, dist_params: Array) -> Categorical | DiagGaussian:
        """Distribution from its stored parameters: logits (B, n), or [mean, log_std] (B, 2d)."""
        width = self.act_dim if self.discrete else 2 * self.act_dim
        if getattr(dist_params, "ndim", None) != 2 or dist_params.shape[1] != width:
            array("dist_params", dist_params)
            raise ValueError(f"dist_params must have shape (B, {width}) "
                             f"({'logits' if self.discrete else '[mean, log_std]'}), got {tuple(dist_params.shape)}")
        if self.discrete:
            return Categorical(dist_params, self.temperature)
        d = self.act_dim
        return DiagGaussian(dist_params[:, :d], dist_params[:, d:])

    @staticmethod
    def dist_params(dist: Categorical | DiagGaussian) -> Array:
        """The inverse of :meth:`make_dist`: (B, n) logits or (B, 2d) [mean, log_std]."""
        if isinstance(dist, Categorical):
            return dist.logits
        return np.concatenate([dist.mean, dist.log_std], axis=1)

    def forward(self, obs: Array) -> tuple[Categorical | DiagGaussian, Array, dict[str, Any]]:
        """obs (B, obs_dim) -> (distribution, values (B,), cache)."""
        cache: dict[str, Any] = {}
        dist, feat = self._policy_head(obs, cache)
        v, cache["critic"] = self.critic.forward(feat)
        cache["dist"] = dist
        return dist, v[:, 0], cache

    def value(self, obs: Array) -> Array:
        """obs (B, obs_dim) -> V(s) (B,): the value head alone (through the shared trunk, if any), as
        ``forward(obs)[1]`` gives it. What the rollout's bootstrap needs: no actor, no distribution.
        A subclass gets ``forward(obs)[1]``: its overrides (of ``forward``, ``_actor_out``, ...) included,
        as the fused kernels leave subclasses to the array path."""
        if type(self) is not ActorCritic:
            return self.forward(obs)[1]
        v, _ = self.critic.forward(self._features(obs, {}))
        return v[:, 0]

    def _features(self, obs: Array, cache: dict[str, Any]) -> Array:
        """obs (B, obs_dim) -> the features (B, F) both heads take: the checked, cast obs, or the shared
        trunk's output (its cache into ``cache``)."""
        if getattr(obs, "ndim", None) != 2 or obs.shape[1] != self.obs_dim:
            array("obs", obs)
            raise ValueError(f"obs must have shape (B, {self.obs_dim}), got {tuple(obs.shape)}")
        feat = _in_dtype("obs", obs, self.dtype)  # (complex: TypeError; astype dropped its imaginary part)
        if self.trunk is not None:
            feat, cache["trunk"] = self.trunk.forward(feat)
        return feat

    def _actor_out(self, obs: Array, cache: dict[str, Any]) -> tuple[Array, Array]:
        """obs (B, obs_dim) -> (the actor's output: logits (B, n) or means (B, d), the (trunk's)
        features (B, F) the value head takes); the trunk's and the actor's caches go into ``cache``."""
        feat = self._features(obs, cache)
        out, cache["actor"] = self.actor.forward(feat)
        return out, feat

    def _policy_head(self, obs: Array, cache: dict[str, Any]) -> tuple[Categorical | DiagGaussian, Array]:
        """obs (B, obs_dim) -> (the distribution, the (trunk's) features (B, F)); see :meth:`_actor_out`."""
        out, feat = self._actor_out(obs, cache)
        if self.discrete:
            return Categorical(out, self.temperature), feat
        return DiagGaussian(out, np.clip(self.params["log_std"], LOG_STD_MIN, LOG_STD_MAX)), feat

    def _actions_only(self, obs: Array, rng: Any, deterministic: bool) -> np.ndarray:
        """The actions of :meth:`act` (same draws from ``rng``; none when ``deterministic``, where rng
        may be None) and nothing else, on the host: no value head, log-prob or dist params. What
        deployment needs. On numba the fused act, where it applies, gives them in one compiled call
        without the critic (``critic=False``), faster still, and the kernels a training run compiled
        are all it needs. (For the mode, the actor alone through the fused MLP forward was 1.2-1.7x
        faster again in session 38, but it needs one more kernel compiled, ~10 s once, that training
        never runs.)"""
        fused = backend.numba_kernels("cpu_act")
        if fused is not None:
            out = fused.act(self, obs, rng, deterministic, critic=False)
            if out is not None:
                return out[0]
        if type(obs).__module__.startswith("cupy"):  # the actor alone, one launch and one copy down
            from minippo.kernels import gpu_act

            out = gpu_act.act(self, obs, rng, deterministic, critic=False)
            if out is not None:
                return out[0]
        if deterministic:  # the mode needs no distribution: the logits' argmax (at any temperature) or the mean
            out, _ = self._actor_out(obs, {})
            finite(**{"the policy's output": out})  # (what the distribution would check)
            return asnumpy(out.argmax(axis=1) if self.discrete else out)
        dist, _ = self._policy_head(obs, {})
        return dist.sample(rng)

    def evaluate(self, obs: Array, actions: Array) -> tuple[Array, Array, Array, dict[str, Any]]:
        """obs (B, obs_dim), actions (B,) or (B, d) -> logp (B,), entropy (B,), values (B,), cache."""
        dist, values, cache = self.forward(obs)
        cache["actions"] = actions
        return dist.log_prob(actions), dist.entropy(), values, cache

    def kl_old(self, dist_old: Array, cache: dict[str, Any]) -> Array:
        """KL(pi_old(.|s) || pi_theta(.|s)) per sample (B,), from stored old dist params."""
        old = self.make_dist(dist_old)
        cache["dist_old"] = old
        return old.kl(cache["dist"])

    def act(
        self, obs: Array, rng: np.random.Generator, deterministic: bool = False
    ) -> tuple[np.ndarray, Array, Array, Array]:
        """Sample (or take the mode of) pi(.|obs): returns actions (B,)|(B, d) on the host,
        their logp (B,), values (B,) and the dist params (see :meth:`dist_params`)."""
        actions, _, logp, values, dist = self.act_with_device_actions(obs, rng, deterministic)
        return actions, logp, values, dist

    def act_with_device_actions(
        self, obs: Array, rng: np.random.Generator, deterministic: bool = False
    ) -> tuple[np.ndarray, Array, Array, Array, Array]:
        """:meth:`act`, with the actions also on the parameters' device: (actions (B,)|(B, d) on the
        host, the same on the device, logp (B,), values (B,), dist params). On the CPU backends the two
        are one array. The rollout stores the device copy, so the actions cross to the GPU once per step."""
        # Numba backend: forward, distribution, sampling (from this rng, same draws) and log-prob in one
        # compiled call for small batches (kernels/cpu_act.py); cupy: both MLPs in one launch and the
        # distribution on the host (kernels/gpu_act.py); None -> not supported, the code below.
        if type(deterministic) is not bool:
            deterministic = flag("deterministic", deterministic)
        if not deterministic:
            generator("rng", rng)
        fused = backend.numba_kernels("cpu_act")
        if fused is not None:
            out = fused.act(self, obs, rng, deterministic)
            if out is not None:
                return out[0], out[0], out[1], out[2], out[3]
        if type(obs).__module__.startswith("cupy"):  # both MLPs in one launch (kernels/gpu_act.py)
            from minippo.kernels import gpu_act

            out = gpu_act.act(self, obs, rng, deterministic)
            if out is not None:
                return out
        dist, values, _ = self.forward(obs)
        if deterministic:  # the mode is on the parameters' device already: one copy down, none up
            a_dev = dist.mode()
            actions = asnumpy(a_dev)
        else:
            actions = dist.sample(rng)
            a_dev = array_module(values).asarray(actions)
        dist.trust(a_dev)  # its own sample (or mode): valid, and on a GPU not worth a sync to check
        return actions, a_dev, dist.log_prob(a_dev), values, self.dist_params(dist)

    def predict(
        self, obs: Array, deterministic: bool = True, rng: np.random.Generator | np.random.RandomState | None = None
    ) -> np.ndarray:
        """Actions for a single observation (obs_dim,) or a batch (B, obs_dim), numpy in and out.

        obs must be real numbers (bool, int or float), finite; ``rng`` a numpy Generator (or a
        legacy RandomState), needed when ``deterministic=False``."""
        return self._predict(check_obs(obs, self.obs_dim, self.dtype), deterministic, rng)

    def env_actions(self, actions: np.ndarray) -> np.ndarray:
        """The policy's actions (B,) / (B, d) or one (), (d,), on the host -> the env's: a Discrete space's
        ``start`` added, a Box's bounds clipped to (the Gaussian's samples and mean are unbounded)."""
        space = self.action_space
        return actions + space.start if self.discrete else space.clip(actions)

    def _predict(self, obs: np.ndarray, deterministic: bool, rng: Any) -> np.ndarray:
        """:meth:`predict` for an ``obs`` that :func:`check_obs` has already checked."""
        if type(deterministic) is not bool:
            deterministic = flag("deterministic", deterministic)
        if rng is not None:
            generator("rng", rng)
        single = obs.ndim == 1
        # C order with real row strides (obs[None] has row stride 0): what the fused numba kernels take
        batch = np.ascontiguousarray(obs.reshape(1, -1) if single else obs)
        first = next(iter(self.params.values()))
        if type(first) is not np.ndarray:
            batch = array_module(first).asarray(batch)  # to the parameters' device
        if not deterministic and rng is None:
            raise ValueError("rng is required when deterministic=False")
        actions = self._actions_only(batch, rng, deterministic)  # (no draws when deterministic)
        return actions[0] if single else actions

    # ------------------------------------------------------------ backward
    def backward(
        self,
        cache: dict[str, Any],
        dlogp: Array | None = None,
        dentropy: Array | None = None,
        dvalue: Array | None = None,
        dkl: Array | None = None,
    ) -> dict[str, Array]:
        """Chain rule from the per-sample upstream gradients (each (B,), any may be None) to
        every parameter. dkl needs a preceding :meth:`kl_old` on the same cache."""
        B = cache["actor"][0].shape[0]
        for name, g in (("dlogp", dlogp), ("dentropy", dentropy), ("dvalue", dvalue), ("dkl", dkl)):
            if g is not None and getattr(g, "shape", None) != (B,):
                array(name, g)
                raise ValueError(f"{name} must have shape ({B},) (one upstream gradient per sample), "
                                 f"got {tuple(g.shape)}")
        dist = cache["dist"]
        key = "logits" if self.discrete else "mean"
        dd: dict[str, Array] = {}

        def add(g: dict[str, Array]) -> None:
            for k, v in g.items():
                dd[k] = dd[k] + v if k in dd else v

        if dlogp is not None:
            add(dist.log_prob_grad(cache["actions"], dlogp))
        if dentropy is not None:
            add(dist.entropy_grad(dentropy))
        if dkl is not None:
            if "dist_old" not in cache:
                raise ValueError("dkl given but kl_old() was not called on this cache")
            # KL(pi_old || pi_theta): theta is the second argument, so q's side of the gradient
            # (derivations 5.3, 6.3, 7.4)
            add(cache["dist_old"].kl_grad(dist, dkl)[1])
        out_a = cache["actor"][-1]
        d_out = dd.get(key, np.zeros_like(out_a))
        v_out = cache["critic"][-1]
        d_v = dvalue[:, None].astype(v_out.dtype) if dvalue is not None else np.zeros_like(v_out)
        shared = self.trunk is not None  # only a trunk needs the heads' input gradients
        dfeat_a, g_actor = self.actor.backward(d_out.astype(out_a.dtype, copy=False), cache["actor"], shared)
        dfeat_v, g_critic = self.critic.backward(d_v, cache["critic"], shared)
        grads: dict[str, Array] = {}
        if self.trunk is not None:
            _, g_trunk = self.trunk.backward(dfeat_a + dfeat_v, cache["trunk"], need_dx=False)
            grads.update({f"trunk.{k}": v for k, v in g_trunk.items()})
        grads.update({f"actor.{k}": v for k, v in g_actor.items()})
        grads.update({f"critic.{k}": v for k, v in g_critic.items()})
        if not self.discrete:
            log_std = self.params["log_std"]
            # one log sigma shared by every row: its gradient sums over the batch, zero where clamped
            # (derivations 6.4)
            g = dd["log_std"].sum(axis=0) if "log_std" in dd else np.zeros_like(log_std)
            inside = (log_std >= LOG_STD_MIN) & (log_std <= LOG_STD_MAX)
            grads["log_std"] = (g * inside).astype(log_std.dtype)
        return {k: grads[k] for k in self.params}

    def describe(self) -> dict[str, Any]:
        """JSON-able constructor arguments (used by checkpoints)."""
        return {
            "obs_dim": self.obs_dim,
            "action_space": self.action_space.to_dict(),
            "hidden": list(self.hidden),
            "activation": self.activation,
            "shared": self.shared,
            "temperature": self.temperature,
            "dtype": self.dtype.name,
        }


def layer_widths(obs_dim: int, act_dim: int, hidden: Sequence[int], shared: bool) -> dict[str, list[int]]:
    """Layer widths of each network an :class:`ActorCritic` builds, in the order it builds them: a
    shared trunk obs_dim -> hidden feeding two one-layer heads, or separate actor and critic
    obs_dim -> hidden -> act_dim (logits or means) and -> 1 (the value)."""
    if shared:
        return {"trunk": [obs_dim, *hidden], "actor": [hidden[-1], act_dim], "critic": [hidden[-1], 1]}
    return {"actor": [obs_dim, *hidden, act_dim], "critic": [obs_dim, *hidden, 1]}


def param_shapes(obs_dim: int, act_dim: int, hidden: Sequence[int], shared: bool,
                 discrete: bool) -> dict[str, tuple[int, ...]]:
    """Shape of each entry of :attr:`ActorCritic.params` for these sizes, without building the network
    (checkpoints compare a file's arrays with the network its description declares before allocating it):
    ``<net>.W<i>`` (in, out), ``<net>.b<i>`` (out,), and ``log_std`` (act_dim,) for a Gaussian policy."""
    shapes: dict[str, tuple[int, ...]] = {}
    for net, dims in layer_widths(obs_dim, act_dim, hidden, shared).items():
        for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            shapes[f"{net}.W{i}"] = (fan_in, fan_out)
            shapes[f"{net}.b{i}"] = (fan_out,)
    if not discrete:
        shapes["log_std"] = (act_dim,)
    return shapes


__all__ = ["ActorCritic", "Box", "Discrete", "LOG_STD_MIN", "LOG_STD_MAX"]
