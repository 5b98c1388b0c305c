"""Light stand-ins for gymnasium's ``Discrete`` and ``Box`` so that nothing in the core needs
gymnasium; :func:`as_space` converts a gymnasium space (or one of these) by its attributes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Discrete:
    """``n`` actions ``start, ..., start + n - 1`` (the policy works with ``0 .. n-1``)."""

    n: int
    start: int = 0

    def __post_init__(self) -> None:
        for name in ("n", "start"):
            v = getattr(self, name)
            if not hasattr(v, "__index__") or isinstance(v, (bool, np.bool_)):
                raise ValueError(f"Discrete {name} must be an integer, got {v!r}")
            object.__setattr__(self, name, int(v))
        if int(self.n) < 1:
            raise ValueError(f"Discrete n must be >= 1, got {self.n}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (checkpoints); :func:`as_space` reads it back."""
        return {"kind": "discrete", "n": int(self.n), "start": int(self.start)}


@dataclass(frozen=True, eq=False)
class Box:
    """Continuous actions in ``[low, high]`` (elementwise), shape ``low.shape`` (1-D), sent to the env
    as ``dtype`` (a numpy float dtype, the env's own action dtype: float32 for most)."""

    low: np.ndarray
    high: np.ndarray
    dtype: str = "float32"

    def __post_init__(self) -> None:
        try:
            if self.dtype is None:  # (np.dtype(None) is float64: a silent choice)
                raise TypeError
            dt = np.dtype(self.dtype)
        except TypeError:
            raise TypeError(f"Box dtype must be a float dtype (float16, float32 or float64), got {self.dtype!r}") \
                from None
        if dt.kind != "f":
            raise TypeError(f"Box action dtype must be a float type, got {dt} (integer actions: use a Discrete space)")
        try:
            low, high = np.asarray(self.low, dtype=np.float64), np.asarray(self.high, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"Box low and high must be numbers or 1-D arrays of numbers, got {self.low!r}, "
                            f"{self.high!r}") from None
        if low.ndim > 1 or high.ndim > 1:  # (reshaped to 1-D, a 2-D box's bounds became another space)
            raise ValueError(f"Box low and high must be 1-D (one bound per action dimension), got shapes "
                             f"{low.shape}, {high.shape}")
        low, high = low.reshape(-1), high.reshape(-1)
        if low.shape != high.shape or low.size == 0:
            raise ValueError(f"Box low and high must be non-empty and of one shape, got {low.shape}, {high.shape}")
        if bool(np.isnan(low).any() | np.isnan(high).any()):
            raise ValueError(f"Box low and high must be numbers (inf allowed), got NaN in {low}, {high}")
        if bool((low > high).any()):
            raise ValueError("Box low must be <= high elementwise")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        object.__setattr__(self, "dtype", dt.name)
        # the bounds in the env's dtype, for clip() on every env step
        object.__setattr__(self, "_bounds", (dt, low.astype(dt), high.astype(dt)))

    def __eq__(self, other: object) -> bool:
        """The same bounds and dtype (as ``Discrete`` compares its fields; the bounds are arrays)."""
        if not isinstance(other, Box):
            return NotImplemented
        return (self.dtype == other.dtype and np.array_equal(self.low, other.low)
                and np.array_equal(self.high, other.high))

    def __hash__(self) -> int:
        return hash((self.dtype, tuple(self.low.tolist()), tuple(self.high.tolist())))  # (-0.0 == 0.0: one hash)

    def clip(self, actions: np.ndarray) -> np.ndarray:
        """Actions (..., d) as the env takes them: cast to ``dtype``, then clipped to the bounds in
        that dtype (clipping first could round a bound outward: float32(0.1) > 0.1)."""
        dt, low, high = self._bounds
        return np.clip(np.asarray(actions).astype(dt), low, high)

    @property
    def shape(self) -> tuple[int]:
        """(action_dim,)."""
        return (int(self.low.size),)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (checkpoints); :func:`as_space` reads it back."""
        return {"kind": "box", "low": self.low.tolist(), "high": self.high.tolist(), "dtype": self.dtype}


Space = Discrete | Box


def is_kind(space: Any, *names: str) -> bool:
    """Whether ``space`` is of a class named one of ``names``, or a subclass of one (gymnasium's spaces
    by name: the core does not import gymnasium)."""
    return any(c.__name__ in names for c in type(space).__mro__)


def as_space(space: Any) -> Space:
    """A minippo space from a gymnasium ``Discrete``/``Box``, a minippo space, or its dict form."""
    if isinstance(space, (Discrete, Box)):
        return space
    if isinstance(space, dict):
        kind = space.get("kind")
        need = {"discrete": ("n",), "box": ("low", "high")}.get(kind, ())
        if any(k not in space for k in need):
            raise ValueError(f"action_space dict of kind {kind!r} needs the keys {list(need)}, got {sorted(space)}")
        if kind == "discrete":
            return Discrete(space["n"], space.get("start", 0))  # (checked there: 2.7 is no count)
        if kind == "box":
            return Box(np.asarray(space["low"]), np.asarray(space["high"]), space.get("dtype", "float32"))
        raise ValueError(f"action_space dict kind must be 'discrete' or 'box', got {kind!r}")
    cls = type(space).__name__
    if is_kind(space, "Discrete") and hasattr(space, "n"):
        return Discrete(int(space.n), int(getattr(space, "start", 0)))
    if is_kind(space, "Box") and hasattr(space, "low") and hasattr(space, "high"):
        if len(space.shape) != 1:
            raise ValueError(f"action space {space} is not supported: minippo takes Discrete or 1-D Box actions, "
                             f"got a Box of shape {space.shape}; give the env a 1-D Box action space with a "
                             "gymnasium.ActionWrapper of your own (its action() reshapes the vector back)")
        return Box(np.asarray(space.low), np.asarray(space.high), np.dtype(getattr(space, "dtype", np.float32)).name)
    raise TypeError(
        f"action_space must be a Discrete or Box space (gymnasium or minippo.spaces), got {cls}"
    )
