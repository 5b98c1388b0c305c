"""Gymnasium vector environments and the running normalisers (imports gymnasium lazily).

Time-limit truncation is bootstrapped by the trainer, which needs the true last observation of
every ended episode. Two gymnasium autoreset modes deliver it:

* ``same_step`` (``SyncVectorEnv``/``AsyncVectorEnv`` with ``AutoresetMode.SAME_STEP``): the step that
  ends an episode returns the reset observation and puts the last one in ``info["final_obs"]``.
* ``next_step`` (gymnasium's numpy-vectorised envs, e.g. CartPole, ~1.8x faster to step): the
  ending step returns the true last observation; the *next* step is a reset step whose action is
  ignored, so that transition is not real and the trainer masks it out of the batch.
"""

from __future__ import annotations

import functools
import importlib
import math
import operator
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from minippo._checks import array, fixed, int_list, integer, is_real, on_host, real, renamed_state

Array = Any


def _gym() -> Any:
    try:
        import gymnasium
    except ImportError as e:
        raise ImportError(
            f"gymnasium is needed for environments ({e}); install it with: pip install 'minippo[gym]'"
        ) from e
    if not hasattr(gymnasium.vector, "AutoresetMode"):  # added in gymnasium 1.1
        raise ImportError(
            f"gymnasium {gymnasium.__version__} is too old: minippo needs gymnasium >= 1.1 (its vector "
            "envs' autoreset modes); upgrade with: pip install -U 'minippo[gym]'"
        )
    return gymnasium


def _registry_key(env_id: str) -> str:
    """``env_id``'s key in gymnasium's registry. A ``"module:EnvId"`` id (as ``gymnasium.make`` takes it)
    imports ``module`` first, which registers ``EnvId``: the way to train a custom or third-party env."""
    if ":" not in env_id:
        return env_id
    module, _, name = env_id.partition(":")
    if not module or module.startswith(".") or not name:  # (import_module: ValueError, TypeError)
        raise ValueError(f"env id {env_id!r}: a 'module:EnvId' id needs a module to import (an absolute "
                         "name, as 'mypkg.envs') before the ':' and the id it registers after it")
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f"env id {env_id!r}: cannot import module {module!r} ({e})") from e
    return name


class EnvImportRefused(ValueError):
    """A file's ``"module:EnvId"`` env id names a module of a package that is not imported: loading a
    model file imports no package of its own choosing (a crafted checkpoint could name any installed
    module, or a file in the current folder)."""


def saved_env_module(env_id: Any) -> str | None:
    """The module a ``"module:EnvId"`` id read from a file would import from a package not imported
    yet, or None (no module part; or its package is imported already: by the user, by the id they
    typed, or gymnasium itself, which makes the env, as for ``gymnasium.envs.classic_control.cartpole:...``)."""
    if not isinstance(env_id, str) or ":" not in env_id:
        return None
    module = env_id.partition(":")[0]
    if module.partition(".")[0] == "gymnasium":
        _gym()  # (imported to make the env in any case)
    return module if module and module.partition(".")[0] not in sys.modules else None


def check_env_id(env_id: str) -> None:
    """Raise ValueError if ``env_id`` is not registered in gymnasium (``"module:EnvId"``: after
    importing ``module``), TypeError if it is not a string."""
    gym = _gym()
    if not isinstance(env_id, str):
        raise TypeError(f"env id must be a string such as 'CartPole-v1', got {type(env_id).__name__} {env_id!r}")
    key = _registry_key(env_id)
    if key not in gym.registry:
        prefix = key.split("-")[0].lower()[:4]  # ("" would suggest the first ids of the registry)
        close = [k for k in gym.registry if k.lower().startswith(prefix)] if prefix else []
        hint = f"; did you mean {', '.join(sorted(close)[:5])}?" if close else ""
        where = f"module {env_id.partition(':')[0]!r} did not register {key!r}" if key != env_id else \
            "not registered in gymnasium"
        raise ValueError(f"unknown env id {env_id!r}: {where}{hint}")


# gymnasium imports an env's module at its first make; two threads importing one package's modules at
# once can each be handed a half-initialised module (ImportError "cannot import name 'CartPoleEnv' from
# partially initialized module", gymnasium 1.4, CPython 3.11: two trainers built in two threads failed
# in 5 runs of 5). minippo makes its envs one at a time.
MAKING_ENVS = threading.RLock()


def make_vec_env(
    env_id: str,
    n_envs: int,
    vector: str = "sync",
    autoreset: str = "same_step",
    env_kwargs: dict[str, Any] | None = None,
) -> Any:
    """A gymnasium ``VectorEnv`` of ``n_envs`` copies of ``env_id`` in the requested autoreset mode.

    ``vector``: ``sync`` | ``async`` (subprocesses). With ``vector="sync"``, ``autoreset="next_step"``
    prefers gymnasium's own numpy-vectorised implementation (``vectorization_mode="vector_entry_point"``)
    when the env has one, else a sync/async vector env in NEXT_STEP mode. The mode actually used is in
    ``env.metadata["autoreset_mode"]``. So for such an env (CartPole) ``sync`` and ``async`` run
    different implementations with ``autoreset="next_step"``: one seed gives different episodes in
    the two modes (each is reproducible), and ``env_kwargs`` go to the vectorised class in one and to
    each env's constructor in the other.
    """
    gym = _gym()
    from gymnasium.vector import AutoresetMode

    check_env_id(env_id)
    n_envs = integer("n_envs", n_envs, 1)
    if vector not in ("sync", "async"):
        raise ValueError(f"vector={vector!r} is not allowed; use 'sync' or 'async'")
    if autoreset not in ("same_step", "next_step"):
        raise ValueError(f"autoreset={autoreset!r} is not allowed; use 'same_step' or 'next_step'")
    if env_kwargs is not None and not isinstance(env_kwargs, Mapping):  # dict() took a str or a list of pairs
        raise TypeError(f"env_kwargs must be a dict of the env's keyword arguments (or None), "
                        f"got {type(env_kwargs).__name__}")
    kwargs = dict(env_kwargs or {})
    with MAKING_ENVS, dependency_errors(env_id, kwargs):
        # vector="async" asks for subprocesses: gymnasium's own vectorised env runs in this one
        numpy_vectorised = gym.registry[_registry_key(env_id)].vector_entry_point is not None
        if autoreset == "next_step" and vector == "sync" and numpy_vectorised:
            return gym.make_vec(env_id, num_envs=n_envs, vectorization_mode="vector_entry_point", **kwargs)
        mode = AutoresetMode.SAME_STEP if autoreset == "same_step" else AutoresetMode.NEXT_STEP
        env = gym.make_vec(
            env_id, num_envs=n_envs, vectorization_mode=vector, vector_kwargs={"autoreset_mode": mode},
            wrappers=[functools.partial(_shield_worker, os.getpid())] if vector == "async" else None, **kwargs
        )
    if vector == "async" and INTERRUPTIBLE_PIPE_READS:
        _wait_out_interrupts(env.unwrapped)
    return env


# Windows interrupts a blocking pipe read on Ctrl-C (InterruptedError, after the signal handler has run)
# where POSIX retries it (PEP 475).
INTERRUPTIBLE_PIPE_READS = sys.platform == "win32"


def _wait_out_interrupts(venv: Any) -> None:
    """Make an ``AsyncVectorEnv``'s ``step_wait`` wait until every worker's result has arrived, retrying
    that wait when a signal interrupts it, before it reads them. On Windows the first Ctrl-C of
    ``minippo train`` (finish the iteration, save) otherwise raised InterruptedError inside gymnasium's
    reads, part of the results read: the run ended with a traceback and nothing saved. A read of a result
    that has arrived does not block, so it is not interrupted."""
    from multiprocessing.connection import wait

    from gymnasium.vector.async_vector_env import AsyncState

    step_wait = venv.step_wait

    def patient_step_wait(timeout: float | None = None) -> Any:
        # only for a step in flight (else gymnasium's own errors: no step, a closed env); with a timeout,
        # as PPO.close passes, gymnasium's own wait applies
        if timeout is None and not venv.closed and venv._state is AsyncState.WAITING_STEP:
            pending = [p for p in venv.parent_pipes if p is not None and not p.closed]
            while pending:
                try:
                    ready = wait(pending)
                except InterruptedError:
                    continue
                pending = [p for p in pending if p not in ready]
        return step_wait(timeout)

    venv.step_wait = patient_step_wait


def _shield_worker(main_pid: int, env: Any) -> Any:
    """Applied to each env of an AsyncVectorEnv: its worker process leaves the main process's process
    group and ignores SIGINT (and Windows' Ctrl-Break, SIGBREAK) from then on. What signals a whole
    group (a terminal's Ctrl-C; ``timeout``, which sends its SIGTERM to the group it leads; ``kill -TERM
    -PGID``) then reaches the main process alone, which ``minippo train`` lets finish its iteration, save
    and close the workers; a worker stopped by it broke that run. A signal sent to every process of a
    cgroup (systemd stopping a unit with its default KillMode) still reaches the workers. A worker whose
    main process dies sees its pipe close and exits. Not in the main process (``main_pid``), where
    AsyncVectorEnv makes one env to read the spaces: Ctrl-C must still stop a Python script there."""
    import signal

    if os.getpid() != main_pid:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if hasattr(signal, "SIGBREAK"):  # Windows sends Ctrl-Break to every process on the console too
            signal.signal(signal.SIGBREAK, signal.SIG_IGN)
        if hasattr(os, "setpgid"):
            try:
                os.setpgid(0, 0)  # its own group (a multiprocessing child is no group or session leader)
            except OSError:
                pass
    return env


class EnvKwargsError(ValueError):
    """The env's constructor refused a keyword of ``env_kwargs``."""


@contextmanager
def dependency_errors(env_id: str, env_kwargs: dict[str, Any] | None = None) -> Iterator[None]:
    """Around making ``env_id``: gymnasium's DependencyNotInstalled (e.g. Box2D missing) becomes an
    ImportError that names the env and the extra to install, a module missing (e.g. jax for the
    ``phys2d/`` envs) one that names the env and the module; with ``env_kwargs`` given, a TypeError
    (the env's constructor refusing one) becomes an :class:`EnvKwargsError` that names env_kwargs."""
    from gymnasium.error import DependencyNotInstalled

    try:
        yield
    except DependencyNotInstalled as e:
        raise ImportError(f"{env_id} needs a package that is not installed ({e}); "
                          "pip install 'minippo[gym]' installs classic-control and (up to Python 3.13) box2d") from e
    except ModuleNotFoundError as e:  # an env whose module imports one it does not declare (jax for phys2d/)
        what = f"the module {e.name!r}" if e.name else "a module"
        raise ImportError(f"{env_id} needs {what}, which is not installed ({e}); install the package that "
                          "provides it") from e
    except TypeError as e:
        if not env_kwargs:
            raise
        raise EnvKwargsError(f"env_kwargs={env_kwargs!r} are not accepted by {env_id}: {e}") from e


def env_spec_id(env: Any) -> str | None:
    """The gymnasium id of a vector env: its ``spec.id``, else (a ``SyncVectorEnv`` or
    ``AsyncVectorEnv`` built directly from ``gym.make`` thunks has no spec) the one id all its
    sub-envs share; None for an env of your own without one."""
    spec_id = getattr(getattr(env, "spec", None), "id", None)
    if spec_id is not None:
        return spec_id
    get_attr = getattr(getattr(env, "unwrapped", env), "get_attr", None)  # (vector wrappers have no get_attr)
    if not callable(get_attr):
        return None
    try:
        ids = {getattr(s, "id", None) for s in get_attr("spec")}
    except Exception:  # noqa: BLE001 (an env of one's own may have any get_attr, or none that works)
        return None
    return ids.pop() if len(ids) == 1 else None


# Wrappers that change only what info holds: an env given with them evaluates as the bare env does.
INFO_ONLY_WRAPPERS = frozenset({"RecordEpisodeStatistics"})
_MAKE_VEC_KEYS = frozenset({"num_envs", "vectorization_mode", "vector_kwargs", "wrappers"})
_NOT_SEEN = frozenset({"render_mode"})  # kwargs that change nothing the policy sees


_NO_DEFAULT = object()


def _entry_point_defaults(gym: Any, spec: Any) -> dict[str, Any]:
    """The keyword defaults of the env class (or function) ``spec`` makes; {} where they cannot be read."""
    import inspect

    try:
        creator = spec.entry_point
        if isinstance(creator, str):
            creator = gym.envs.registration.load_env_creator(creator)
        return {n: p.default for n, p in inspect.signature(creator).parameters.items()
                if p.default is not inspect.Parameter.empty}
    except Exception:  # noqa: BLE001 (an entry point that cannot be loaded or has no signature)
        return {}


def _equal(a: Any, b: Any) -> bool:
    """``a == b`` as one bool (arrays: equal shapes and elements); False where it cannot be told."""
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 (an array's ambiguous truth value, or a comparison that raises)
        try:
            return bool(np.array_equal(a, b))
        except Exception:  # noqa: BLE001
            return False


def env_changes(env: Any, env_id: str, env_kwargs: Mapping[str, Any] | None) -> list[str]:
    """What a given gymnasium vector env adds to ``gym.make(env_id, **env_kwargs)``, as gymnasium records
    it: vector wrappers, wrappers around the sub-envs, other keyword arguments, another time limit.
    Evaluation, ``PPO.load`` without ``env=`` and ``minippo eval`` make the env from the id: a model
    trained through such a change (observations scaled by a wrapper, gravity changed) would be
    evaluated, without a word, in an env it never saw. [] when it adds nothing (wrappers of
    :data:`INFO_ONLY_WRAPPERS` aside), or for an env of one's own, whose specs say nothing."""
    try:
        gym = _gym()
    except ImportError:  # (an env of one's own with a spec, and no gymnasium)
        return []
    changes: list[str] = []
    w = env
    while isinstance(w, gym.vector.VectorWrapper):
        if type(w).__name__ not in INFO_ONLY_WRAPPERS:
            changes.append(f"vector wrapper {type(w).__name__}")
        w = w.env
    try:
        registered = gym.spec(_registry_key(env_id))
    except Exception:  # noqa: BLE001 (an id gymnasium does not know: nothing to compare with)
        return changes
    want = {**registered.kwargs, **(env_kwargs or {})}
    want_steps = want.pop("max_episode_steps", registered.max_episode_steps)  # (gymnasium keeps it apart)
    defaults = _entry_point_defaults(gym, registered)  # (a default passed by name is no change)
    specs = [getattr(w, "spec", None)]
    if isinstance(w, gym.vector.SyncVectorEnv):
        specs += [getattr(e, "spec", None) for e in w.envs]
    elif specs[0] is None and callable(getattr(w, "get_attr", None)):  # (an AsyncVectorEnv made from thunks:
        try:  # its workers send their specs, as they did for env_spec_id)
            specs += list(w.get_attr("spec"))
        except Exception:  # noqa: BLE001 (an env of one's own may have any get_attr, or none that works)
            pass
    for i, spec in enumerate(specs):
        if spec is None or not hasattr(spec, "kwargs"):
            continue
        kwargs = {k: v for k, v in spec.kwargs.items() if k not in _NOT_SEEN}
        steps = getattr(spec, "max_episode_steps", None)
        if i == 0:  # the vector env's own spec: make_vec's arguments beside the env's
            if len(specs) == 1:  # (else each sub-env's spec names the wrappers these functions added)
                names = [getattr(f, "__name__", type(f).__name__) for f in kwargs.get("wrappers") or ()
                         if getattr(f, "func", None) is not _shield_worker]  # (make_vec_env's own, async)
                changes += [f"wrapper {n}" for n in names if n not in INFO_ONLY_WRAPPERS]
            entry_point = kwargs.get("vectorization_mode") in ("vector_entry_point", None) and len(specs) == 1
            kwargs = {k: v for k, v in kwargs.items() if k not in _MAKE_VEC_KEYS}
            steps = kwargs.pop("max_episode_steps", None)
            if steps is None and not entry_point:  # (None: each sub-env's gym.make takes the spec's limit;
                steps = want_steps  # a vector entry point's None is no limit)
        changes += [f"wrapper {ws.name}" for ws in getattr(spec, "additional_wrappers", ())
                    if ws.name not in INFO_ONLY_WRAPPERS]
        differ = [f"{k}={v!r}" for k, v in kwargs.items()
                  if not _equal(v, want[k] if k in want else defaults.get(k, _NO_DEFAULT))]
        differ += [f"{k} left at its default" for k in want
                   if k not in kwargs and k not in _NOT_SEEN and not _equal(want[k], defaults.get(k, _NO_DEFAULT))]
        if differ:
            changes.append("kwargs " + ", ".join(differ))
        if steps != want_steps:
            changes.append(f"max_episode_steps={steps} (made from the id: {want_steps})")
    return list(dict.fromkeys(changes))  # (the vector env's spec and its sub-envs' repeat each other)


def is_next_step(env: Any) -> bool:
    """True when ``env`` autoresets on the step after an episode ends (gymnasium NEXT_STEP), False
    for SAME_STEP (reset within the step, the final observation in ``info["final_obs"]``).

    Read from ``env.metadata["autoreset_mode"]``; any other mode (DISABLED) or none raises
    ValueError: the rollout would otherwise train on the wrong transitions without a word."""
    metadata = getattr(env, "metadata", None)
    mode = metadata.get("autoreset_mode") if isinstance(metadata, Mapping) else None
    name = getattr(mode, "name", str(mode)).upper()
    if name.endswith("NEXT_STEP") or name.endswith("SAME_STEP"):
        return name.endswith("NEXT_STEP")
    raise ValueError(f"env.metadata['autoreset_mode'] is {mode!r}: minippo needs AutoresetMode.NEXT_STEP or "
                     "SAME_STEP (set it in the vector env's metadata, or make the env with "
                     "minippo.envs.make_vec_env or gym.make_vec(..., vector_kwargs={'autoreset_mode': ...}))")


_ON_HOST = "the running statistics live on the host (copy a device array with cupy.asnumpy)"


def _statistic_property(name: str, doc: str) -> property:
    """RunningMeanStd's ``mean`` / ``var``: read through operator.attrgetter (the normalisers read them
    at every step), set through ``_statistic``'s checks."""
    def put(self: RunningMeanStd, value: Any) -> None:
        setattr(self, "_" + name, self._statistic(name, value))

    return property(operator.attrgetter("_" + name), put, doc=doc)


class RunningMeanStd:
    """Running mean and variance over a stream of batches (Chan et al. parallel update).

    shape: the shape of one sample; ``update(x)`` takes x (B, *shape). float64 statistics.
    They start from a prior of mean 0 and variance 1 that weighs as ``epsilon`` samples, as
    Stable-Baselines3's and gymnasium's do. The prior's weight shrinks as samples arrive. But a feature
    whose mean m is large against its spread keeps a variance about epsilon * m**2 / count too high:
    with m = 1e6 and std 0.01, the std is still ~204 after 2,400 samples. Centre such a feature in the
    env.
    """

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4) -> None:
        dims = [int(shape)] if hasattr(shape, "__index__") and np.ndim(shape) == 0 and not isinstance(shape, bool) \
            else int_list(shape)  # (an ndarray has __index__ too: a 1-d one is a list of dimensions)
        if dims is None:  # (an integer n is (n,), as for numpy)
            raise TypeError(f"shape must be a tuple of integers >= 0 (one sample's shape), got {shape!r}")
        if any(d < 0 for d in dims):
            raise ValueError(f"shape must be a tuple of integers >= 0 (one sample's shape), got {shape!r}")
        epsilon = real("epsilon", epsilon, 0.0, low_open=True)  # the prior count: <= 0 gave var < 0 or 0/0
        self._mean = np.zeros(tuple(dims), dtype=np.float64)
        self._var = np.ones(tuple(dims), dtype=np.float64)
        self._count = float(epsilon)

    # Settable, checked: set by hand to another shape, a list or an int count, the statistics failed far
    # away (predict blamed the observation's shape; learn raised AttributeError on a list; save wrote, or
    # now refuses, a file no load reads). update() writes the checked values past the setters.
    mean = _statistic_property("mean", "The running mean, float64 of one sample's shape. Settable: finite numbers "
                               "of that shape.")
    var = _statistic_property("var", "The running variance, float64 of one sample's shape. Settable: finite "
                              "numbers >= 0 of that shape.")

    @property
    def count(self) -> float:
        """The samples folded in (the prior's ``epsilon`` included). Settable: a finite number > 0."""
        return self._count

    @count.setter
    def count(self, value: Any) -> None:
        self._count = real("count", value, 0.0, low_open=True)  # (finite: real refuses infinities)

    def _statistic(self, name: str, value: Any) -> np.ndarray:
        """``value`` as a float64 copy of the mean's shape, finite (and >= 0 for the variance), or an
        error naming ``name``."""
        a = np.asarray(value)
        if a.dtype.kind not in "fiu":
            raise TypeError(f"{name} must be real numbers of shape {self._mean.shape}, got {a.dtype}")
        if a.shape != self._mean.shape:
            raise ValueError(f"{name} must have shape {self._mean.shape} (one sample's), got {a.shape}")
        a = a.astype(np.float64)
        if not np.isfinite(a).all() or (name == "var" and (a < 0).any()):
            raise ValueError(f"{name} must be finite{' and >= 0' if name == 'var' else ''}, got {a}")
        return a

    def __setstate__(self, state: dict) -> None:  # (pickles from before the properties: renamed)
        self.__dict__.update(renamed_state(state, ("mean", "var", "count")))

    def update(self, x: np.ndarray, check: bool = True) -> None:
        """Fold the batch ``x`` (B, *shape) into the statistics; NaN or inf raises FloatingPointError
        (``check=False`` skips that test, for a caller that has made it already), and so does a finite
        batch whose statistics would overflow float64 (|x| past ~1e154); either way nothing is changed.
        Host arrays only."""
        if type(x) is not np.ndarray:  # (the check itself only where it can fail: this is per env step)
            on_host(_ON_HOST, x=x)
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 0 or x.shape[1:] != self.mean.shape:  # a lone (obs_dim,) would count as obs_dim samples
            raise ValueError(f"x must have shape {('B', *self.mean.shape)}, got {x.shape}".replace("'B'", "B"))
        if x.shape[0] == 0:
            return
        if check and not np.isfinite(x).all():  # one NaN would poison the statistics for the rest of the run
            raise FloatingPointError("x contains NaN or inf: not folded into the running statistics")
        # (numpy's overflow warnings silenced: the overflow is refused below, by one FloatingPointError)
        with np.errstate(over="ignore", invalid="ignore"):
            b_mean, b_var, b_count = x.mean(axis=0), x.var(axis=0), x.shape[0]
            delta = b_mean - self.mean
            total = self.count + b_count
            mean = self.mean + delta * (b_count / total)
            m2 = self.var * self.count + b_var * b_count + delta * delta * (self.count * b_count / total)
        # (an overflow of the mean makes delta, so m2, inf too; was stored, every normalised value then 0)
        if not np.isfinite(m2).all():
            raise FloatingPointError("x is finite, but its running statistics overflow float64 (|x| past ~1e154): "
                                     "not folded in")
        self._mean, self._var, self._count = mean, m2 / total, total

    def state(self, prefix: str) -> dict[str, np.ndarray]:
        """Statistics as arrays named ``<prefix>.mean``, ``.var`` (both ``shape``) and ``.count`` (0-d),
        float64 (for checkpoints)."""
        return {f"{prefix}.mean": self.mean, f"{prefix}.var": self.var, f"{prefix}.count": np.array(self.count)}

    def load(self, prefix: str, arrays: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state` wrote (mean and var of ``shape``, count 0-d; float arrays); a
        missing, misshapen or impossible entry (non-finite, negative variance, count <= 0) raises
        ValueError naming it, and nothing is changed."""
        for name, shape in (("mean", self.mean.shape), ("var", self.mean.shape), ("count", ())):
            a = arrays.get(f"{prefix}.{name}")
            if a is None:
                raise ValueError(f"{prefix}.{name} is missing")
            if a.shape != shape or a.dtype.kind != "f":
                raise ValueError(f"{prefix}.{name} must be a float array of shape {shape}, got {a.dtype} {a.shape}")
            if not np.isfinite(a).all():
                raise ValueError(f"{prefix}.{name} is not finite")
        var, count = arrays[f"{prefix}.var"], arrays[f"{prefix}.count"]
        if (var < 0).any():
            raise ValueError(f"{prefix}.var: a variance is negative ({float(var.min())!r})")
        if not count > 0:
            raise ValueError(f"{prefix}.count must be > 0, got {float(count)!r}")
        self.mean = arrays[f"{prefix}.mean"].astype(np.float64)
        self.var = arrays[f"{prefix}.var"].astype(np.float64)
        self.count = float(arrays[f"{prefix}.count"])


def _clip_bound(clip: Any) -> float:
    """A normaliser's clip bound: a number > 0, inf (no clipping) included."""
    msg = f"clip must be a number > 0 (inf: no clipping), got {clip!r}"
    if not is_real(clip):
        raise TypeError(msg)
    if not clip > 0:  # (NaN too)
        raise ValueError(msg)
    return float(clip) if abs(clip) <= sys.float_info.max else math.inf  # (an int past float's range: no clip)


class ObsNormalizer:
    """(obs - mean) / sqrt(var + eps), clipped to +-clip, with running statistics (PPO detail,
    continuous control). ``update=False`` (evaluation, final observations) freezes them."""

    def __init__(self, obs_dim: int, clip: float = 10.0, eps: float = 1e-8) -> None:
        obs_dim = integer("obs_dim", obs_dim, 1)
        clip, eps = _clip_bound(clip), real("eps", eps, 0.0)
        self.rms = RunningMeanStd((obs_dim,))
        self._clip, self._eps = clip, eps

    _HOW = "ObsNormalizer(obs_dim, clip=..., eps=...) (a checkpoint keeps the statistics, not these)"
    clip = fixed("ObsNormalizer", "clip", _HOW, "The bound the normalised observations are clipped to (+-clip).")
    eps = fixed("ObsNormalizer", "eps", _HOW, "Added to the variance before its square root.")

    def __setstate__(self, state: dict) -> None:  # (pickles from before the fixed properties: renamed)
        self.__dict__.update(renamed_state(state, ("clip", "eps")))

    def __call__(self, obs: np.ndarray, update: bool = False) -> np.ndarray:
        """obs (B, obs_dim) -> normalised obs (B, obs_dim) in the input's float dtype, in native byte
        order (an integer input: float32) (host arrays)."""
        if type(obs) is not np.ndarray:
            on_host(_ON_HOST, obs=obs)
            array("obs", obs)  # (a memoryview has a shape, not a dtype)
        if getattr(obs, "ndim", None) != 2 or obs.shape[1:] != self.rms.mean.shape:  # (would broadcast)
            array("obs", obs)
            raise ValueError(f"obs must have shape (B, {self.rms.mean.shape[0]}), got {tuple(obs.shape)}")
        if update:
            self.rms.update(obs)
        out = (obs - self.rms.mean) / np.sqrt(self.rms.var + self.eps)
        dt = obs.dtype if obs.dtype.kind == "f" else np.dtype(np.float32)
        return np.clip(out, -self.clip, self.clip).astype(dt if dt.isnative else dt.newbyteorder("="))


class RewardScaler:
    """Divide rewards by the running std of the discounted return G <- gamma G + r (reset at episode
    ends), clipped to +-clip (PPO detail, continuous control). Keeps one G per env."""

    def __init__(self, n_envs: int, gamma: float, clip: float = 10.0, eps: float = 1e-8) -> None:
        n_envs, gamma = integer("n_envs", n_envs, 1), real("gamma", gamma, 0.0, 1.0, low_open=True)
        clip, eps = _clip_bound(clip), real("eps", eps, 0.0)
        self.rms = RunningMeanStd(())
        self.ret = np.zeros(n_envs, dtype=np.float64)
        self._gamma, self._clip, self._eps = gamma, clip, eps

    _HOW = "RewardScaler(n_envs, gamma, clip=..., eps=...) (a trainer's gamma is its config's)"
    gamma = fixed("RewardScaler", "gamma", _HOW, "The discount of the running return whose std scales rewards.")
    clip = fixed("RewardScaler", "clip", _HOW, "The bound the scaled rewards are clipped to (+-clip).")
    eps = fixed("RewardScaler", "eps", _HOW, "Added to the variance before its square root.")

    def __setstate__(self, state: dict) -> None:  # (pickles from before the fixed properties: renamed)
        self.__dict__.update(renamed_state(state, ("gamma", "clip", "eps")))

    def __call__(self, rewards: np.ndarray, dones: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """rewards (N,), dones (N,) bool -> scaled rewards (N,). ``valid`` (N,) bool masks fake reset steps.
        Host arrays only."""
        if type(rewards) is not np.ndarray or type(dones) is not np.ndarray \
                or (valid is not None and type(valid) is not np.ndarray):
            on_host(_ON_HOST, rewards=rewards, dones=dones, valid=valid)
        n = self.ret.shape
        if (getattr(rewards, "shape", None) != n or getattr(dones, "shape", None) != n or dones.dtype != bool
                or (valid is not None and (getattr(valid, "shape", None) != n or valid.dtype != bool))):
            self._refuse(rewards, dones, valid)
        keep = np.ones_like(dones, dtype=bool) if valid is None else valid
        with np.errstate(over="ignore"):  # (an overflow is refused by the update below, not warned of)
            ret = np.where(keep, self.ret * self.gamma + rewards, self.ret)
        self.rms.update(ret[keep])  # (raises on a NaN or an overflow before ret is kept: nothing changed)
        self.ret = np.where(keep & dones, 0.0, ret)
        return np.clip(rewards / np.sqrt(self.rms.var + self.eps), -self.clip, self.clip)

    def _refuse(self, rewards: Any, dones: Any, valid: Any) -> None:
        """The error for inputs that are not one entry per env (they would broadcast), or flags that
        are not bool (an int done of 2 read as not done: True & 2 is 0)."""
        n = self.ret.shape[0]
        for name, a, flag in (("rewards", rewards, False), ("dones", dones, True), ("valid", valid, True)):
            if a is None and name == "valid":
                continue
            array(name, a)
            if tuple(a.shape) != (n,) or (flag and a.dtype != bool):
                kind = "a bool array" if flag else "an array"
                raise ValueError(f"{name} must be {kind} of shape ({n},) (one per env), got {a.dtype} {tuple(a.shape)}")
