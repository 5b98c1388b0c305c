"""Adam over parameter dicts, global-norm gradient clipping, and schedules.
Derivations: docs/derivations.md section 11.

Params and grads are dicts with identical keys; updates are in place, so every other holder of
a parameter array (the MLPs inside an ActorCritic) sees them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from minippo._checks import array, fixed, integer, is_real, real, renamed_state, writable
from minippo.backend import array_module, asnumpy

Array = Any


class Adam:
    """Adam (Kingma & Ba 2015) with the textbook bias correction.

    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;  m_hat = m / (1 - b1^t);
    v_hat = v / (1 - b2^t);  theta <- theta - lr * m_hat / (sqrt(v_hat) + eps).
    eps defaults to 1e-5 (PPO implementation detail #3, not the Adam paper's 1e-8).
    params: name -> array of any shape (updated in place); the moments m, v have each one's shape.
    """

    def __init__(
        self,
        params: dict[str, Array],
        lr: float = 3e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-5,
    ) -> None:
        lr = real("lr", lr, 0.0)
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
            raise TypeError(f"betas must be two numbers in [0, 1), got {betas!r}")
        betas = (real("betas[0]", betas[0], 0.0, 1.0, high_open=True),
                 real("betas[1]", betas[1], 0.0, 1.0, high_open=True))
        eps = real("eps", eps, 0.0, low_open=True)
        if not isinstance(params, dict):
            raise TypeError(f"params must be a dict of arrays (name -> array, e.g. policy.params), got "
                            f"{type(params).__name__}")
        if not params:
            raise ValueError("params is empty: Adam needs at least one parameter array")
        first = next(iter(params.values()))
        for k, p in params.items():  # the flat moments take the first array's dtype
            if getattr(getattr(p, "dtype", None), "kind", None) != "f":
                raise TypeError(f"params[{k!r}] must be a float32 or float64 array, got "
                                f"{getattr(p, 'dtype', type(p).__name__)}")
            if isinstance(p, np.ndarray) and type(p) is not np.ndarray:  # (its moments, made like the first
                raise TypeError(f"params[{k!r}] must be a numpy.ndarray, not the subclass "  # parameter, took
                                f"{type(p).__module__}.{type(p).__name__}: pass np.asarray of it")  # the GPU path)
            if p.dtype != first.dtype:
                raise TypeError(f"params[{k!r}] is {p.dtype}, the first parameter {first.dtype}: "
                                "Adam's moments need one dtype for all")
            writable(f"params[{k!r}]", p, "Adam updates every parameter in place")  # (or fails half-way)
        self.params = params
        self._lr, self._betas, self._eps, self._t = lr, betas, eps, 0
        # Moments live in one flat vector per kind: a step is then ~8 vector operations instead of
        # ~8 per parameter array (12 arrays for a 64-64 actor-critic), measured 78 -> 25 us.
        self._slices: dict[str, tuple[slice, tuple[int, ...]]] = {}
        offset = 0
        for k, p in params.items():
            self._slices[k] = (slice(offset, offset + p.size), p.shape)
            offset += p.size
        self._m = np.zeros_like(first, shape=(offset,))
        self._v = np.zeros_like(first, shape=(offset,))
        self._g = np.zeros_like(first, shape=(offset,))
        self._table: Any = None  # on a GPU: kernels.gpu.ArrayTable of the parameters, made on first use
        self._views()

    @property
    def lr(self) -> float:
        """The learning rate of a :meth:`step` not given one. Settable, checked (a real >= 0). A PPO
        trainer gives every step its own (``PPOConfig.learning_rate`` and ``lr_schedule``; for a resumed
        run, ``PPO.load(path, learning_rate=...)``), so setting its optimiser's does nothing."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = real("lr", value, 0.0)

    # (a checkpoint keeps neither: set later, a trainer resumed with the defaults; betas (1, 1) ended the
    # next step in ZeroDivisionError, eps < 0 took steps 26x larger without a word)
    betas = fixed("Adam", "betas", "Adam(params, betas=...) (a PPO trainer's are Adam's defaults, (0.9, 0.999))",
                  "(beta1, beta2).")
    eps = fixed("Adam", "eps", "Adam(params, eps=...) (a PPO trainer's is PPOConfig.adam_eps: PPO(config) or "
                "PPO.load(path, adam_eps=...))", "The denominator's epsilon.")

    @property
    def t(self) -> int:
        """The steps taken (the bias correction's exponent). Settable, checked (an integer >= 0): a
        negative one wrote NaN into every parameter at the next step."""
        return self._t

    @t.setter
    def t(self, value: int) -> None:
        self._t = value if type(value) is int and value >= 0 else integer("t", value, 0)

    def _views(self) -> None:
        """Per-parameter views of the flat moments (for inspection and checkpoints)."""
        self.m = {k: self._m[sl].reshape(shape) for k, (sl, shape) in self._slices.items()}
        self.v = {k: self._v[sl].reshape(shape) for k, (sl, shape) in self._slices.items()}

    def __getstate__(self) -> dict:
        """For copy and pickle: without the views ``m`` and ``v`` (copied one by one they would be cut
        off from the flat moments the step updates); :meth:`__setstate__` makes them again."""
        state = self.__dict__.copy()
        del state["m"], state["v"]
        state["_table"] = None  # device addresses of these params, not of a copy's: made again on use
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(renamed_state(state, ("lr", "betas", "eps", "t")))  # (pickles from before the properties)
        self.__dict__.setdefault("_table", None)  # (older pickles lack it)
        self._views()

    def step(self, grads: dict[str, Array], lr: float | None = None, max_grad_norm: float = 0.0) -> float:
        """One in-place update of every parameter from ``grads`` (same keys and shapes as params);
        ``lr`` overrides the constructor's learning rate for this step.

        ``max_grad_norm > 0``: the gradient is first clipped to that global norm, as
        :func:`clip_grad_norm` clips (PPO detail #11), but on Adam's flat copy of it: one sum of
        squares over the flat vector in float64 instead of one per array, and ``grads`` is left as
        it is. Returns the norm before clipping, or NaN when not clipping. A non-finite norm (NaN or
        inf anywhere in ``grads``) raises FloatingPointError before anything changes (parameters,
        moments, ``t``), clipping or not, as the fused numba step does (without clipping, a NaN
        would have gone into every parameter through the shared second moment's sum); so does a
        norm, after clipping, whose squares may overflow the parameters' dtype (:func:`check_step_norm`).

        On a GPU (cupy parameters, all C-contiguous) the gather into the flat gradient and the update
        are the two kernels of ``kernels/adam.cu``, which give the same bits as the array operations
        here: 4 device operations and one small upload, where these take ~40 on a 64-64 actor-critic."""
        _dict("grads", grads)
        self._check_params()
        if grads.keys() != self.params.keys():
            missing = sorted(set(self.params) ^ set(grads))
            raise KeyError(f"grads and params must have the same keys; differing: {missing}")
        lr = self.lr if lr is None else real("lr", lr, 0.0)
        max_grad_norm = real("max_grad_norm", max_grad_norm)
        g = self._g
        for k, (_, shape) in self._slices.items():  # every check before anything changes
            if getattr(self.params[k], "shape", None) != shape:  # (the moments are laid out by them)
                raise ValueError(f"params[{k!r}] has shape {tuple(getattr(self.params[k], 'shape', ()))}, but this "
                                 f"Adam was made for {shape}")
            if not getattr(self.params[k].flags, "writeable", True):  # (made so since; the message only then:
                writable(f"params[{k!r}]", self.params[k], "Adam updates every parameter in place")  # hot path)
            if getattr(grads[k], "shape", None) != shape:
                array(f"grads[{k!r}]", grads[k])
                raise ValueError(f"grads[{k!r}] has shape {tuple(grads[k].shape)}, expected {shape}")
            try:
                kind = grads[k].dtype.kind
            except AttributeError:  # (a memoryview has a shape, not a dtype)
                array(f"grads[{k!r}]", grads[k])
                raise
            if kind != "f":  # (a complex one lost its imaginary part with a warning)
                raise TypeError(f"grads[{k!r}] must be a float array, got dtype {grads[k].dtype}")
        device = type(g) is not np.ndarray and self._device_table() is not None
        if device:  # two kernels (kernels/adam.cu) for the ~40 array operations below
            from minippo.kernels import gpu

            xp = array_module(g)
            flat = [xp.ascontiguousarray(xp.asarray(grads[k], dtype=g.dtype)) for k in self._slices]
            gpu.adam_gather(gpu.ArrayTable(flat, layout=self._table), g)  # (the parameters' offsets)
        else:
            for k, (sl, _) in self._slices.items():
                g[sl] = grads[k].reshape(-1)
        # The update itself (the class docstring's lines): the global-norm clip, then Adam on the flat vector g
        g64 = g.astype(np.float64, copy=False)
        norm, scale = math.sqrt(float(np.vdot(g64, g64))), 1.0  # (on a GPU: the one read-back)
        check_step_norm(norm, max_grad_norm, g.dtype)
        if max_grad_norm <= 0:  # not clipping: NaN returned, as documented
            norm = math.nan
        elif norm > max_grad_norm:
            scale = max_grad_norm / (norm + 1e-12)
        b1, b2 = self.betas
        self.t += 1
        if device:  # the lines below in one kernel, the same operations in the same order
            gpu.adam_update(self._table, g, self._m, self._v, scale, lr, self.betas, self.eps, self.t)
            return norm
        if scale != 1.0:  # the clip
            g *= scale
        c1 = 1.0 - b1**self.t
        c2 = 1.0 - b2**self.t
        m, v = self._m, self._v
        m *= b1
        m += (1.0 - b1) * g
        v *= b2
        v += (1.0 - b2) * (g * g)
        # theta -= lr * m_hat / (sqrt(v_hat) + eps), computed into the scratch vector g
        np.sqrt(v / c2, out=g)
        g += self.eps
        np.divide(m, g, out=g)
        g *= lr / c1
        for k, (sl, shape) in self._slices.items():
            self.params[k] -= g[sl].reshape(shape)
        return norm

    def _check_params(self) -> None:
        """ValueError unless ``params`` still holds the keys this Adam was made for (``step`` checks their
        shapes): its moments are laid out by them, so a parameter added later would never be updated
        (and one rebound to another shape would be updated by broadcasting; on a GPU, its flat range
        overrun)."""
        if self.params.keys() != self._slices.keys():
            differ = sorted(set(self.params) ^ set(self._slices))
            raise ValueError(f"params has keys {differ} added or removed since this Adam was made: make a new "
                             "Adam for the new parameters")

    def _device_table(self) -> Any:
        """The parameters' ``kernels.gpu.ArrayTable`` (made again when a parameter array was replaced),
        or None where a parameter is not C-contiguous, or of a dtype the kernels lack (float16), or the
        parameters are not all of one dtype (one rebound to another): the step then runs as array
        operations."""
        arrays = [self.params[k] for k in self._slices]
        table = self._table
        if table is None or any(a is not b for a, b in zip(table.arrays, arrays, strict=True)):
            from minippo.kernels import gpu

            dtypes = {np.dtype(a.dtype) for a in arrays}
            if not all(a.flags.c_contiguous for a in arrays) or len(dtypes) > 1 \
                    or not dtypes <= gpu.GATHER_NAMES.keys():
                return None
            self._table = table = gpu.ArrayTable(arrays)
        return table

    def state_dict(self) -> dict[str, Any]:
        """Moments and step count (arrays keyed ``m.<name>``, ``v.<name>``) for checkpoints: copies, so
        the state stays as it was at this call (and editing it leaves the optimiser as it is)."""
        out: dict[str, Any] = {"t": self.t}
        out.update({f"m.{k}": a.copy() for k, a in self.m.items()})
        out.update({f"v.{k}": a.copy() for k, a in self.v.items()})
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` produced (in place; every shape, dtype and value is checked
        before anything is written: the moments must be finite, the second moments >= 0, or the next
        step would write NaN into every parameter)."""
        _dict("state", state)
        missing = sorted(f"{p}.{k}" for k in self.params for p in "mv" if f"{p}.{k}" not in state)
        if missing or "t" not in state:
            raise ValueError(f"state is missing {missing + ([] if 't' in state else ['t'])} (Adam.state_dict's keys)")
        t = integer("state['t']", state["t"], 0)  # (-5 was kept, 1.7 cut to 1)
        pairs = [(state[f"{prefix}.{k}"], store[k], f"{prefix}.{k}")
                 for k in self.params for prefix, store in (("m", self.m), ("v", self.v))]
        for src, dst, name in pairs:
            array(f"state[{name!r}]", src)
            if src.shape != dst.shape or src.dtype != dst.dtype:
                raise ValueError(f"Adam {name} is {src.dtype} {src.shape}, expected {dst.dtype} {dst.shape}")
        bad = [name for src, _, name in pairs
               if not (bool(np.isfinite(src).all()) and (name[0] != "v" or bool((src >= 0).all())))]
        if bad:
            raise ValueError(f"Adam moments {bad[:3]} hold NaN, inf or (second moments) negative values")
        if t == 0:  # no step taken, yet moments: the next step's bias correction (1 / (1 - beta1) = 10x
            moved = [name for src, _, name in pairs if bool((src != 0).any())]  # for m) would blow them up
            if moved:
                raise ValueError(f"state['t'] is 0 (no step taken) but Adam moments {moved[:3]} are not zero: "
                                 "t counts the steps that made them")
        for src, dst, _ in pairs:  # to the moments' device: a checkpoint's host arrays up, a device state down
            dst[...] = asnumpy(src) if type(dst) is np.ndarray else array_module(dst).asarray(src)
        self.t = t


def _dict(name: str, value: Any) -> None:
    """TypeError naming ``name`` unless ``value`` is a dict (of arrays, keyed like the parameters)."""
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict of arrays keyed like the parameters, got {type(value).__name__}")


class GradientOverflowError(FloatingPointError):
    """An Adam step refused a finite gradient too large for its dtype (:func:`check_step_norm`)."""


def step_norm_limit(dtype: Any) -> float:
    """The largest gradient norm, after clipping, that an Adam step takes in ``dtype``: half the square
    root of the dtype's largest number (~9.2e18 in float32). Every entry g_i of the gradient has
    |g_i| <= its norm, so below it no g_i * g_i overflows, nor does the second moment v, an average of
    them (v / (1 - beta2^t) is at most the largest g_i^2 seen); the half (a factor 4 on the squares)
    covers the roundings, so a norm between it and twice it is refused though its squares would fit."""
    return math.sqrt(float(np.finfo(dtype).max)) / 2


_STEP_NORM_LIMITS = {c: step_norm_limit(c) for c in "efd"}  # float16, float32, float64


def check_step_norm(norm: float, max_grad_norm: float, dtype: Any) -> None:
    """Raise FloatingPointError when an Adam step in ``dtype`` cannot take a gradient of global norm
    ``norm`` (before clipping to ``max_grad_norm``; <= 0: not clipped): a NaN or inf norm, or one past
    :func:`step_norm_limit` after clipping (GradientOverflowError), whose squares may overflow the second
    moment to inf, after which the parameters it covers stop moving for good (their steps are m / inf = 0)."""
    if not math.isfinite(norm):  # (inf: an inf in the gradient, or a float64 sum of squares past its range)
        raise FloatingPointError(f"gradient norm is {norm}")
    # (once per minibatch: the float dtypes' limits looked up, where np.finfo took ~0.2 us)
    limit = _STEP_NORM_LIMITS.get(getattr(dtype, "char", None))
    if limit is None:
        limit = step_norm_limit(dtype)
    clipped = max_grad_norm > 0 and norm > max_grad_norm
    if (max_grad_norm if clipped else norm) > limit:
        how = (f"clipped to max_grad_norm={max_grad_norm:.4g}" if clipped else "not clipped: max_grad_norm <= 0"
               if max_grad_norm <= 0 else f"not clipped: max_grad_norm={max_grad_norm:.4g} is larger")
        raise GradientOverflowError(
            f"gradient norm is {norm:.4g} ({how}), past {limit:.3g}, where its squares may overflow Adam's "
            f"{np.dtype(dtype)} second moment to inf and stop the parameters for good: clip the gradients "
            "(max_grad_norm > 0) or scale the rewards (norm_reward)")


def global_norm(grads: dict[str, Array]) -> float:
    """sqrt(sum over every array of sum(g^2)) for a dict of arrays of any shapes, summed in float64:
    a float32 sum of squares overflows to inf from a norm of ~1.8e19, which would stop training
    where the norm is finite (the fused numba step sums in float64 too)."""
    _dict("grads", grads)
    total = 0.0
    with np.errstate(over="ignore"):  # a total past float64's range is inf, silently, as a float sum is
        for k, g in grads.items():
            if getattr(getattr(g, "dtype", None), "kind", None) not in ("f", "i", "u"):
                array(f"grads[{k!r}]", g)
                raise TypeError(f"grads[{k!r}] must be a real array, got dtype {g.dtype}")
            g64 = g.astype(np.float64, copy=False)
            total = total + np.vdot(g64, g64)  # vdot: BLAS; on cupy the sum stays on the device
    return math.sqrt(float(total))  # one read back, not one per array


def clip_grad_norm(grads: dict[str, Array], max_norm: float) -> float:
    """Scale all grads (a dict of arrays of any shapes) in place so that their global norm is at
    most ``max_norm`` (PPO detail #11).

    Returns the norm before clipping. The direction of the concatenated gradient is unchanged.
    """
    max_norm = real("max_norm", max_norm, 0.0, low_open=True)
    _dict("grads", grads)
    for k, g in grads.items():  # scaled in place below: a real float array each
        if getattr(getattr(g, "dtype", None), "kind", None) != "f":
            array(f"grads[{k!r}]", g)
            raise TypeError(f"grads[{k!r}] must be a float array, got dtype {g.dtype}")
    norm = global_norm(grads)
    if not math.isfinite(norm):
        raise FloatingPointError(f"gradient norm is {norm}")
    if norm > max_norm:
        for k, g in grads.items():  # (before any is scaled: numpy's error came after some were)
            writable(f"grads[{k!r}]", g, "clip_grad_norm scales the gradients in place")
        scale = max_norm / (norm + 1e-12)
        for g in grads.values():
            g *= scale
    return norm


SCHEDULES = ("constant", "linear", "exponential")


class Schedule:
    """A coefficient as a function of training progress ``p`` in [0, 1].

    ``constant``: start.  ``linear``: start + (end - start) p (annealing to end, PPO detail #4).
    ``exponential``: start * (end / start) ** p, a geometric decay from start to end (both > 0).
    """

    def __init__(self, kind: str = "constant", start: float = 1.0, end: float = 0.0) -> None:
        if kind not in SCHEDULES:
            raise ValueError(f"schedule kind={kind!r} is not allowed; use one of {SCHEDULES}")
        start, end = real("start", start), real("end", end)
        if kind == "exponential" and not (start > 0 and end > 0):
            raise ValueError(f"exponential schedule needs start > 0 and end > 0, got {start}, {end}")
        self._kind, self._start, self._end = kind, start, end

    # (a kind set later was not checked: "cosine" ran as an exponential decay to 0; a trainer's schedules
    # are built from its config at every load, so one changed by hand went back at the next resume)
    _HOW = "build another, Schedule(kind, start, end) (a trainer's come from its config: PPO.load(path, " \
           "lr_schedule=..., learning_rate=..., lr_end=...) and the like)"
    kind = fixed("Schedule", "kind", _HOW, "constant | linear | exponential.")
    start = fixed("Schedule", "start", _HOW, "The coefficient at progress 0.")
    end = fixed("Schedule", "end", _HOW, "The coefficient at progress 1 (constant: unused).")

    def __setstate__(self, state: dict) -> None:  # (pickles from before the fixed properties: renamed)
        self.__dict__.update(renamed_state(state, ("kind", "start", "end")))

    def __call__(self, progress: float) -> float:
        """The coefficient at ``progress`` (clamped to [0, 1]; NaN raises ValueError)."""
        if not is_real(progress):
            raise TypeError(f"progress must be a number in [0, 1], got {progress!r}")
        if progress != progress:  # NaN (math.isnan overflowed on an int past float's range)
            raise ValueError("progress must be a number in [0, 1], got nan")
        p = float(min(max(progress, 0.0), 1.0))  # (clamped before the float: an int past its range)
        if self.kind == "constant":
            return self.start
        if self.kind == "linear":
            return self.start + (self.end - self.start) * p
        return self.start * (self.end / self.start) ** p

    def __repr__(self) -> str:
        return f"Schedule({self.kind!r}, start={self.start}, end={self.end})"
