"""Argument checks shared by the public functions: one place that turns a bad scalar into an error
naming the argument, the value and what is allowed."""

from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
import operator
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np


def fixed(owner: str, name: str, instead: str, doc: str) -> property:
    """A read-only property over ``self._<name>``, documented by ``doc``: assigning it raises
    AttributeError "<owner>.<name> is fixed at construction: <instead>" (what to do instead). For
    settings a checkpoint does not keep, or that other objects were built from: set later, they acted
    until the next load and then silently went back. The same object assigned back is taken (what an
    augmented assignment does: ``policy.obs_mean -= shift`` writes into the array, then stores it).
    (Read through operator.attrgetter: C speed.)"""
    get = operator.attrgetter("_" + name)

    def refuse(self: Any, value: Any) -> None:
        if value is not get(self):
            raise AttributeError(f"{owner}.{name} is fixed at construction: {instead}")

    return property(get, refuse, doc=doc)


def renamed_state(state: dict, names: tuple[str, ...]) -> dict:
    """A pickled ``__dict__`` with the attributes ``names`` stored as ``_name`` (:func:`fixed` and
    checked properties read those): pickles from before the properties load too."""
    return {("_" + k if k in names else k): v for k, v in state.items()}


def _zero_d_kind(value: Any) -> str | None:
    """The dtype kind ("b", "i", "u", "f", ...) of a 0-d numpy or cupy array; None for anything else."""
    if (isinstance(value, np.ndarray) or type(value).__module__.startswith("cupy")) \
            and getattr(value, "ndim", None) == 0:
        return getattr(getattr(value, "dtype", None), "kind", None)  # (getattr: another object of cupy's)
    return None


def is_real(value: Any) -> bool:
    """Whether ``value`` is one real number: a Python or numpy int or float (not a bool), or a 0-d
    numpy or cupy array of one (what cupy's reductions and the losses' stats on a device are, where
    numpy gives a scalar)."""
    kind = _zero_d_kind(value)
    if kind is not None:
        return kind in ("i", "u", "f")
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def real(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a Python float, if it is a finite real number (not a bool) in the range.

    ``low`` / ``high``: bounds (None: unbounded), inclusive unless ``low_open`` / ``high_open``.
    Raises TypeError for a non-number (None, a string, a bool) and ValueError for NaN, an infinity
    or a value out of range; both messages name ``name`` and the allowed values.
    """
    ok_type = is_real(value)
    try:
        v = float(value) if ok_type else math.nan
    except OverflowError:  # an int (or Fraction) beyond float's range: not a finite number
        v = math.nan
    ok = ok_type and math.isfinite(v) \
        and (low is None or (v > low if low_open else v >= low)) \
        and (high is None or (v < high if high_open else v <= high))
    if ok:
        return v
    allowed = _range_text(low, high, low_open, high_open, "{:g}".format)
    msg = f"{name} must be a finite number {allowed}".rstrip() + f", got {value!r}"
    raise ValueError(msg) if ok_type else TypeError(msg)


def _range_text(low: Any, high: Any, low_open: bool = False, high_open: bool = False,
                fmt: Callable[[Any], str] = str) -> str:
    """``in [low, high)``, ``>= low``, ``< high`` or "" (both None), for the messages above and below."""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{fmt(low)}, {fmt(high)}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {fmt(low)}"
    if high is not None:
        return f"{'<' if high_open else '<='} {fmt(high)}"
    return ""


def integer(name: str, value: Any, low: int | None = None, high: int | None = None, *,
            whole_floats: bool = False) -> int:
    """``value`` as a Python int, if it is an integer (numpy ints included; not a bool, not a float
    unless ``whole_floats`` and it is a whole number, as 1e5) in ``[low, high]`` (None: unbounded).
    Raises TypeError for a non-integer and ValueError for one out of range; both messages name
    ``name`` and the allowed values."""
    if whole_floats and isinstance(value, (float, np.floating)) and math.isfinite(value) and value == int(value):
        value = int(value)
    ok_type = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if ok_type and (low is None or value >= low) and (high is None or value <= high):
        return int(value)
    msg = f"{name} must be an integer {_range_text(low, high)}".rstrip() + f", got {value!r}"
    raise ValueError(msg) if ok_type else TypeError(msg)


def flag(name: str, value: Any) -> bool:
    """``value`` as a bool, if it is True or False (numpy's too, or the integers 0 and 1, or a 0-d
    numpy or cupy array of one of them); else TypeError naming ``name``. (Taken by truth value, a
    string "no" would mean True.)"""
    if type(value) is bool:
        return value
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, numbers.Integral) and value in (0, 1)):
        return bool(value)
    kind = _zero_d_kind(value)
    if kind == "b" or (kind in ("i", "u") and bool((value == 0) | (value == 1))):
        return bool(value)  # a 0-d numpy or cupy array (a flag computed on a device: a sync)
    raise TypeError(f"{name} must be True or False, got {value!r}")


def array(name: str, value: Any) -> None:
    """TypeError naming ``name`` unless ``value`` is an array (it has ``shape``, ``ndim`` and ``dtype``:
    a numpy or cupy ndarray). The building blocks take arrays; a Python list would fail deep inside."""
    if not (hasattr(value, "shape") and hasattr(value, "ndim") and hasattr(value, "dtype")):
        raise TypeError(f"{name} must be an array (numpy.ndarray, or cupy.ndarray on the cupy backend), "
                        f"got {type(value).__name__}")


def writable(name: str, a: Any, why: str) -> None:
    """ValueError ``"{name} is read-only: {why}"`` when ``a`` is a read-only numpy array, before anything
    is written (numpy's own error came after part of the work was done). Cupy arrays have no such flag."""
    if not getattr(getattr(a, "flags", None), "writeable", True):
        raise ValueError(f"{name} is read-only: {why}")


def on_host(why: str, **arrays: Any) -> None:
    """TypeError naming the first of ``arrays`` (name=array) that is a device (cupy) array, for the
    functions that work on the host only; ``why`` says why and what to do instead."""
    for name, a in arrays.items():
        if type(a).__module__.startswith("cupy"):
            raise TypeError(f"{name} must be a host array (numpy.ndarray), got {type(a).__module__}."
                            f"{type(a).__name__}: {why}")


def generator(name: str, value: Any) -> None:
    """TypeError naming ``name`` unless ``value`` is a numpy Generator (or a legacy RandomState)."""
    if not isinstance(value, (np.random.Generator, np.random.RandomState)):
        raise TypeError(f"{name} must be a numpy.random.Generator (np.random.default_rng(seed)) or a legacy "
                        f"numpy.random.RandomState, got {type(value).__name__}")


def rng_from_seed(name: str, value: Any) -> np.random.Generator:
    """``value`` if it is a numpy Generator, else ``np.random.default_rng(value)`` (an int >= 0, None,
    a SeedSequence, a BitGenerator, a sequence of ints); what that refuses raises naming ``name``."""
    if isinstance(value, np.random.Generator):
        return value
    if isinstance(value, (bool, np.bool_)):  # (True is the int 1 to numpy: a flag passed by mistake)
        raise TypeError(f"{name} must be an integer >= 0 (or None, a SeedSequence or a numpy Generator), "
                        f"got {value!r}")
    try:
        return np.random.default_rng(value)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{name} must be an integer >= 0 (or None, a SeedSequence or a numpy Generator), "
                      f"got {value!r}") from None


def float_dtype(name: str, value: Any) -> np.dtype:
    """``np.dtype(value)`` if it is a float dtype; else ValueError naming ``name``."""
    try:
        dt = np.dtype(value)
    except (TypeError, ValueError):  # (ValueError: e.g. a ("f4", -1) subarray spec)
        dt = None
    if dt is None or dt.kind != "f":
        raise ValueError(f"{name} must be a float type such as float32 or float64, got {value!r}")
    return dt


def cast_quietly(a: np.ndarray, dtype: Any) -> np.ndarray:
    """Real numbers ``a`` (any shape) as ``dtype``, without numpy's overflow warning: a finite float
    beyond ``dtype``'s range becomes inf there, for the caller's finiteness check to name. Casts that
    cannot overflow (bools, integers |x| < 2^64 into float32 or wider, floats into as wide a float) skip
    the errstate (~0.9 us) and copy only where the dtype changes."""
    kind, size = a.dtype.kind, np.dtype(dtype).itemsize
    if kind == "b" or (kind == "f" and a.dtype.itemsize <= size) or (kind in "iu" and size >= 4):
        return a.astype(dtype, copy=False)
    with np.errstate(over="ignore"):
        return a.astype(dtype)


class EnvOutputError(TypeError, ValueError):
    """An env returned something of the wrong type, dtype or shape (the message names the env and what it
    returned). A TypeError and a ValueError both, as these errors were before the class."""


def reset_obs(result: Any, env_name: str) -> Any:
    """The observation of an env's ``reset()`` result, which must be a pair (obs, info) as in gymnasium
    (a tuple, or a list): unpacked as one, an obs-only reset of a 2-row array gave its rows as obs and
    info, and a triple "too many values to unpack", naming neither the env nor reset."""
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        got = f"a {type(result).__name__} of {len(result)}" if isinstance(result, (tuple, list)) else \
            type(result).__name__
        raise EnvOutputError(f"env {env_name!r} returned {got} from reset(); expected a pair (obs, info)")
    return result[0]


def int_list(value: Any) -> list[int] | None:
    """``value`` as a list of Python ints if it is an ordered iterable of integers (numpy ints and 0-d
    integer arrays included, bools not) other than a string, else None. (A string "64" would iterate as
    (6, 4), bytes as their codes, a set or dict in no given order, a bare 64 not at all.)"""
    if isinstance(value, (str, bytes, bytearray, memoryview, set, frozenset, dict)) \
            or not hasattr(value, "__iter__"):
        return None
    try:
        items = list(value)
    except TypeError:  # a 0-d array has __iter__ but does not iterate
        return None
    if not all(_is_int_scalar(v) for v in items):
        return None
    return [int(v) for v in items]


def _is_int_scalar(v: Any) -> bool:
    """An integer that is one number: a Python or numpy int, or a 0-d integer array (every ndarray has
    ``__index__``, which only its 0-d integer ones honour); not a bool."""
    if isinstance(v, (bool, np.bool_)) or not hasattr(v, "__index__"):
        return False
    return not isinstance(v, np.ndarray) or (v.ndim == 0 and v.dtype.kind in "iu")


class DeferredChecks:
    """Value checks on device arrays whose verdict is read back later, with other results.

    On a GPU each ``bool`` of a device array waits for the device (a sync). Inside
    :func:`deferred_checks`, :func:`finite` and :func:`check_later` record a check on a device array
    here instead of reading it: ``recorded`` holds (verdict, error to raise) pairs in recording
    order, and ``ok`` is their conjunction (one 0-d device bool, or None when nothing was recorded).
    The owner reads ``ok`` back with its own results (``minippo.losses.to_floats`` does it for a
    minibatch's loss statistics, one copy) and calls :meth:`verify` with the value; a check on a
    host array is never deferred (nothing to save) and raises where it stands, as outside.
    """

    def __init__(self) -> None:
        self.recorded: list[tuple[Any, Callable[[], Exception]]] = []

    def add(self, ok: Any, error: Callable[[], Exception]) -> None:
        """Record a 0-d device bool (True: the check passed) and what to raise when it did not."""
        self.recorded.append((ok, error))

    @property
    def ok(self) -> Any:
        """Whether every recorded check passed: a 0-d device bool (two device operations for several
        checks, none for one), or None when none was recorded."""
        if len(self.recorded) <= 1:
            return self.recorded[0][0] if self.recorded else None
        flags = [f for f, _ in self.recorded]
        return np.stack(flags).all()  # (cupy.stack, by dispatch)

    def verify(self, ok: Any = None) -> None:
        """Raise the error of the first recorded check that failed, if any, and forget them all.
        ``ok``: the value of :attr:`ok` already read back (a Python bool or number; read here when
        None, one sync). Only a failure reads the checks one by one (the error path)."""
        error = self.first_failure(ok)
        if error is not None:
            raise error

    def first_failure(self, ok: Any = None) -> Exception | None:
        """The error of the first recorded check that failed (None if all passed), as :meth:`verify`
        would raise it; the checks are forgotten."""
        if not self.recorded:
            return None
        ok = self.ok if ok is None else ok
        recorded, self.recorded = self.recorded, []
        if bool(ok):
            return None
        return next((error() for flag_, error in recorded if not bool(flag_)), None)


_DEFERRED: contextvars.ContextVar[DeferredChecks | None] = contextvars.ContextVar("minippo_deferred", default=None)


@contextlib.contextmanager
def deferred_checks() -> Iterator[DeferredChecks]:
    """Inside, checks of device arrays (:func:`finite`, :func:`check_later`) are recorded in the yielded
    :class:`DeferredChecks`, not read back one by one; read back with the block's results and passed
    to :meth:`DeferredChecks.verify`, they cost no sync of their own. On leaving, checks not yet
    verified are verified (one sync). If the block raises, the first failed check's error is raised
    instead (from None): with checks made at once, that check would have stopped the block before the
    code that raised (its inputs were NaN, say), so the error is the same either way. The code inside
    must therefore change nothing outside itself before its checks are verified. Per context
    (``contextvars``): threads and nested blocks keep their own."""
    checks = DeferredChecks()
    token = _DEFERRED.set(checks)
    try:
        yield checks
    except Exception:
        error = checks.first_failure()
        if error is not None:
            raise error from None
        raise
    finally:
        _DEFERRED.reset(token)
    checks.verify()


def check_later(ok: Any, error: Callable[[], Exception]) -> bool:
    """Record the verdict ``ok`` (a 0-d bool array, True: passed) in the enclosing :func:`deferred_checks`
    when it is a device array and there is one; True when recorded, False when the caller must test
    ``ok`` now (a host verdict, or no deferral)."""
    checks = _DEFERRED.get()
    if checks is None or not type(ok).__module__.startswith("cupy"):
        return False
    checks.add(ok, error)
    return True


def finite(**arrays: Any) -> None:
    """FloatingPointError naming the first of ``arrays`` (name=array) that holds NaN or inf. One test
    for all of them: on a GPU each ``bool`` of a device array is a device sync, and inside
    :func:`deferred_checks` not even that (the verdict is read back later, with other results)."""
    ok = None
    for a in arrays.values():
        f = np.isfinite(a).all()
        ok = f if ok is None else ok & f

    def error() -> FloatingPointError:
        bad = next((name for name, a in arrays.items() if not bool(np.isfinite(a).all())), None)
        if bad is None:  # (deferred, and an array changed in place since: name them all)
            return FloatingPointError(f"one of {', '.join(arrays)} contained NaN or inf")
        return FloatingPointError(f"{bad} contains NaN or inf")

    if not check_later(ok, error) and not bool(ok):
        raise error()
