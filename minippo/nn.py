"""Layers with their hand-written backward passes beside them, and the MLP built from them.
Derivations: docs/derivations.md sections 2-4.

Conventions: a linear layer computes ``y = x @ W + b`` with ``W`` of shape ``(fan_in, fan_out)``.
``MLP.forward`` returns ``(out, cache)`` and ``MLP.backward(dout, cache)`` returns ``(din, grads)``;
the layer functions take and return plain arrays (``linear_forward(x, W, b) -> y``,
``linear_backward(dy, x, W, need_dx) -> (dx, dW, db)``, ``tanh_backward(dh, h) -> dz``, and relu's
alike). Nothing is kept on the object between the two calls, so the same network can run forward several times
(PPO does: acting, then every minibatch of every epoch) without bookkeeping.

The layer functions (``linear_forward`` ... ``relu_backward``) check nothing: they are the MLP's
inner steps, and :class:`MLP` checks its input's class, dtype and shape once per call. Called
directly with shapes other than those documented, they broadcast as numpy does (a bias of shape
(1,), or an (F,) ``dh`` against a (B, F) ``h``), so check shapes before calling them on your own.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

from minippo import backend
from minippo._checks import array, flag, float_dtype, int_list, real, rng_from_seed

Array = Any  # numpy.ndarray, or cupy.ndarray on the GPU backend


def _in_dtype(name: str, a: Array, dtype: Any) -> Array:
    """``a`` in ``dtype`` (the parameters'), cast where it differs; TypeError naming ``name`` unless
    it is real (float, int or bool: complex would give complex gradients, strings fail in numpy)."""
    try:
        if a.dtype == dtype:
            return a
    except AttributeError:  # (a memoryview has a shape, not a dtype)
        array(name, a)
        raise
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real array (float, int or bool), got dtype {a.dtype}")
    return a.astype(dtype)


# ---------------------------------------------------------------- linear: y = x W + b
def linear_forward(x: Array, W: Array, b: Array) -> Array:
    """``y = x @ W + b``; x (B, fan_in), W (fan_in, fan_out), b (fan_out,) -> y (B, fan_out)."""
    y = np.dot(x, W)
    y += b  # in place: one (B, fan_out) temporary fewer on the hottest line of training
    return y


def linear_backward(
    dy: Array, x: Array, W: Array, need_dx: bool = True
) -> tuple[Array | None, Array, Array]:
    """Vector-Jacobian products of ``y = x W + b``.

    dL/dx = dy W^T (B, fan_in);  dL/dW = x^T dy (fan_in, fan_out);  dL/db = sum_B dy (fan_out,).
    ``need_dx=False`` returns None for dL/dx (the first layer's input gradient is never used).
    """
    # np.dot rather than @: numpy's matmul skips BLAS when an inner dimension is 1 (the value
    # head's dy W^T, (B, 1) x (1, 64)), measured 23 us against 4 us for np.dot at B = 256.
    return (np.dot(dy, W.T) if need_dx else None), np.dot(x.T, dy), dy.sum(axis=0)


# ---------------------------------------------------------------- activations
def tanh_forward(z: Array) -> Array:
    """``h = tanh(z)``, elementwise: z (B, F) -> h (B, F)."""
    return np.tanh(z)


def tanh_backward(dh: Array, h: Array) -> Array:
    """dL/dz = dL/dh * (1 - tanh(z)^2), written with the saved output ``h``; dh, h (B, F) -> (B, F)."""
    g = h * h
    arrays = type(dh) is type(g) and getattr(g, "ndim", 0) > 0  # (of 0-d arrays, h * h is a scalar)
    if arrays and g.dtype.kind == "f" and (dh.dtype, dh.shape) == (g.dtype, g.shape):
        # the networks' case: the same operations in one (B, F) array, not two (the second set the numpy
        # update's memory peak: 13% of it at batch 4096, width 256; session 62)
        np.subtract(1.0, g, out=g)
        return np.multiply(dh, g, out=g)
    return dh * (1.0 - g)  # mixed dtypes or broadcast shapes: numpy's result dtype and shape


def relu_forward(z: Array) -> Array:
    """``h = max(z, 0)``, elementwise: z (B, F) -> h (B, F)."""
    return np.maximum(z, 0)


def relu_backward(dh: Array, h: Array) -> Array:
    """dL/dz = dL/dh * [z > 0] (= [h > 0]); the subgradient at 0 is taken as 0. dh, h (B, F) -> (B, F)."""
    return dh * (h > 0)


ACTIVATIONS = {
    "tanh": (tanh_forward, tanh_backward),
    "relu": (relu_forward, relu_backward),
}


# ---------------------------------------------------------------- initialisation
def orthogonal(
    shape: tuple[int, int], gain: float, rng: np.random.Generator, dtype: Any = np.float32
) -> np.ndarray:
    """Orthogonal matrix of ``shape`` scaled by ``gain`` (Saxe et al. 2013; PPO detail #2).

    Rows or columns (whichever are fewer) are orthonormal: QR of a Gaussian matrix with the sign
    of R's diagonal folded in, so the result is uniformly distributed over orthogonal matrices.
    """
    rows, cols = shape
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return np.ascontiguousarray(gain * q, dtype=dtype)


# ---------------------------------------------------------------- MLP
_ABSENT = object()


class Params(dict):
    """``{name: array}`` that counts the writes which may rebind a name to another array (``version``).

    The numba kernels check ``version`` (and the dict's identity) instead of the identity of every
    array on each call; in-place writes to the arrays (the optimiser, checkpoint loading) do not
    rebind anything and need no count.

    ``links`` (set by :class:`~minippo.policy.ActorCritic`): ``{key: (other Params, its key)}``, names
    that another dict holds too; a write rebinding one of them here rebinds it there (the policy's
    ``params["actor.W0"]`` and its actor MLP's ``params["W0"]`` stay one array: the MLP computes with
    its own, while Adam and the checkpoints use the policy's).
    """

    __slots__ = ("version", "links")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.version = 0
        self.links: dict[str, tuple[Params, str]] = {}

    def __reduce__(self) -> tuple:  # copy and pickle: through __init__, so version exists
        return (Params, (dict(self),))

    def _bump(name: str) -> Any:  # noqa: N805 (wraps a dict method at class creation)
        method = getattr(dict, name)

        def rebinding(self: Params, *args: Any, **kwargs: Any) -> Any:
            self.version += 1
            return method(self, *args, **kwargs)

        rebinding.__name__ = name
        return rebinding

    def __setitem__(self, key: str, value: Any) -> None:
        if dict.get(self, key) is not value:  # ``params[k] -= g`` rebinds k to the same array
            self.version += 1
            dict.__setitem__(self, key, value)
            if key in self.links:
                self._sync((key,))

    def update(self, *args: Any, **kwargs: Any) -> None:
        """dict.update, then the names it wrote rebound in the linked dicts too."""
        items = dict(*args, **kwargs)
        self.version += 1
        dict.update(self, items)
        self._sync(items)

    def __ior__(self, other: Any) -> Params:
        self.update(other)
        return self

    def setdefault(self, key: str, default: Any = None) -> Any:
        """dict.setdefault, counted as a rebinding (it may write), linked as :meth:`update`."""
        self.version += 1
        value = dict.setdefault(self, key, default)
        self._sync((key,))
        return value

    def _sync(self, keys: Any) -> None:
        """Rebind in the linked dicts each of ``keys`` that is linked and holds another array there
        (only the names just written: a network swapped in disagrees until its names are written)."""
        for key in keys:
            other, name = self.links.get(key, (None, None))
            value = dict.get(self, key, _ABSENT)
            # (a name removed from either dict is not put back)
            if other is not None and value is not _ABSENT and dict.get(other, name, value) is not value:
                other.version += 1
                dict.__setitem__(other, name, value)

    __delitem__ = _bump("__delitem__")
    pop = _bump("pop")
    popitem = _bump("popitem")
    clear = _bump("clear")
    del _bump


class MLP:
    """Multi-layer perceptron ``sizes[0] -> ... -> sizes[-1]`` with manual backprop.

    Hidden layers use ``activation``; the last layer is linear unless ``activate_output``
    (used for a shared trunk whose heads follow). Orthogonal init with gain ``sqrt(2)`` for hidden
    layers and ``out_gain`` for a linear last layer (an activated one is a hidden layer of a trunk:
    ``sqrt(2)``, and ``out_gain`` is not used); biases zero (PPO implementation detail #2).

    ``params``: ``{"W0", "b0", "W1", "b1", ...}``, ``W_i`` of shape ``(sizes[i], sizes[i+1])``,
    all views of the one buffer ``flat`` (what the numba kernels read). Parameters are updated in
    place by the optimizer, so other dicts may hold the same arrays. A parameter rebound to an array
    outside ``flat`` (or a new ``params`` dict) is still used, by the numpy path.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str = "tanh",
        out_gain: float = 1.0,
        seed: int | np.random.Generator = 0,
        dtype: Any = np.float32,
        hidden_gain: float = float(np.sqrt(2.0)),
        activate_output: bool = False,
    ) -> None:
        widths = int_list(sizes)
        if widths is None:
            raise ValueError(f"sizes must be a list of integer layer widths, got {sizes!r}")
        sizes = widths
        if len(sizes) < 2 or any(s < 1 for s in sizes):
            raise ValueError(f"sizes must list at least 2 positive layer widths, got {sizes}")
        dtype = float_dtype("dtype", dtype)
        out_gain, hidden_gain = real("out_gain", out_gain), real("hidden_gain", hidden_gain)
        if not isinstance(activation, str) or activation not in ACTIVATIONS:  # (a list is unhashable)
            raise ValueError(
                f"activation={activation!r} is not allowed; use one of {sorted(ACTIVATIONS)}"
            )
        rng = rng_from_seed("seed", seed)
        self.sizes = sizes
        self._activation = activation
        self._activate_output = flag("activate_output", activate_output)
        self.n_layers = len(sizes) - 1
        n = sum(k * f + f for k, f in zip(sizes[:-1], sizes[1:], strict=False))
        self.flat = np.zeros(n, dtype=dtype)
        """Every parameter in one buffer, packed in the order of ``params`` (W0, b0, W1, b1, ...)."""
        self.params: dict[str, Array] = Params()
        o = 0
        for i in range(self.n_layers):
            last = i == self.n_layers - 1
            gain = out_gain if last and not activate_output else hidden_gain
            k, f = sizes[i], sizes[i + 1]
            W = self.flat[o:o + k * f].reshape(k, f)
            W[...] = orthogonal((k, f), gain, rng, dtype)
            self.params[f"W{i}"] = W
            self.params[f"b{i}"] = self.flat[o + k * f:o + k * f + f]  # zeros
            o += k * f + f

    def __getstate__(self) -> dict:
        """For copy and pickle: without the numba dispatch state (compiled code, rebuilt on use).

        An unpickled MLP's parameters are separate arrays (numpy pickles each view alone), so it
        runs the numpy path; its values and its links to an ``ActorCritic.params`` pickled with it
        are kept. ``copy.deepcopy`` keeps the views (:meth:`__deepcopy__`)."""
        state = self.__dict__.copy()
        state.pop("_numba_state", None)
        return state

    def __deepcopy__(self, memo: dict) -> MLP:
        """``copy.deepcopy``: parameters that are views of ``flat`` become the same views of the copy's
        own ``flat`` (numpy's deepcopy would copy each view alone, leaving the copy off the numba
        kernels, which read ``flat``). They go into ``memo``, so other holders of the same arrays in
        the same deepcopy (a copied ``ActorCritic.params``, ``Adam.params``) get these views. Where
        such a holder was copied first (``flat`` or a parameter already in ``memo``), its copies are
        kept as they are: the links matter more than the layout."""
        new = object.__new__(type(self))
        memo[id(self)] = new
        flat, params = self.flat, self.params
        if id(flat) not in memo and not any(id(a) in memo for a in params.values()):
            new_flat = memo[id(flat)] = flat.copy()
            for a in params.values():
                if type(a) is np.ndarray and a.base is flat and a.dtype == flat.dtype and a.flags.c_contiguous:
                    o, rem = divmod(a.ctypes.data - flat.ctypes.data, flat.itemsize)
                    if rem == 0:  # (a view made at a byte offset inside an element is copied alone)
                        memo[id(a)] = new_flat[o:o + a.size].reshape(a.shape)
        new.__dict__.update(copy.deepcopy(self.__getstate__(), memo))
        return new

    @property
    def activation(self) -> str:
        """``tanh`` or ``relu``, fixed at construction (the numba path compiles it into its dispatch
        state, and the init gains were chosen for it): build a new MLP for another."""
        return self._activation

    @activation.setter
    def activation(self, value: str) -> None:
        raise AttributeError(f"MLP.activation is fixed at construction ({self._activation!r}); build a new MLP")

    @property
    def activate_output(self) -> bool:
        """Whether the last layer is activated too; fixed at construction, like :attr:`activation`."""
        return self._activate_output

    @activate_output.setter
    def activate_output(self, value: bool) -> None:
        raise AttributeError(f"MLP.activate_output is fixed at construction ({self._activate_output}); "
                             "build a new MLP")

    def _activated(self, i: int) -> bool:
        return i < self.n_layers - 1 or self.activate_output

    def forward(self, x: Array) -> tuple[Array, list[Array]]:
        """x (B, sizes[0]) -> y (B, sizes[-1]); cache = the input of every layer plus the output.

        x is a real array (float, int or bool), computed in the parameters' dtype (cast to it where it
        differs: a float64 x into a float32 network gives float32 outputs and gradients); a complex,
        string or object array raises TypeError."""
        # MINIPPO_BACKEND=numba: the same forward as one compiled call (kernels/cpu.py); the loop at the
        # end of this method is the reference it is tested against
        fused = backend.numba_kernels("cpu")
        if fused is not None:
            cache = fused.mlp_forward(self, x)  # None when it does not apply
            if cache is not None:
                return cache[-1], cache
        if getattr(x, "ndim", None) != 2 or x.shape[1] != self.sizes[0]:
            array("x", x)
            raise ValueError(f"x must have shape (B, {self.sizes[0]}), got {tuple(x.shape)}")
        cast = _in_dtype("x", x, self.params["W0"].dtype)
        if cast is not x and fused is not None:  # the cast input where the fused kernel takes it
            cache = fused.mlp_forward(self, cast)
            if cache is not None:
                return cache[-1], cache
        x = cast
        act, _ = ACTIVATIONS[self.activation]
        h = x
        cache = [h]
        for i in range(self.n_layers):
            h = linear_forward(h, self.params[f"W{i}"], self.params[f"b{i}"])
            if self._activated(i):
                h = act(h)
            cache.append(h)
        return h, cache

    def backward(
        self, dy: Array, cache: list[Array], need_dx: bool = True
    ) -> tuple[Array | None, dict[str, Array]]:
        """dy (B, sizes[-1]) -> (dx (B, sizes[0]), grads keyed exactly like ``params``).

        dy is cast to the parameters' dtype as ``forward`` casts x.
        ``need_dx=False`` skips the input gradient (dx is then None): a network fed by raw
        observations never needs it, and it is a whole matmul per minibatch.
        """
        # MINIPPO_BACKEND=numba: one compiled call, as in forward; the loop at the end is the reference
        fused = backend.numba_kernels("cpu")
        if fused is not None:
            out = fused.mlp_backward(self, dy, cache, need_dx)  # None when it does not apply
            if out is not None:
                return out
        if getattr(dy, "ndim", None) != 2 or dy.shape[1] != self.sizes[-1] or dy.shape[0] != cache[0].shape[0]:
            array("dy", dy)
            raise ValueError(f"dy must have shape ({cache[0].shape[0]}, {self.sizes[-1]}) like the forward's "
                             f"output, got {tuple(dy.shape)}")
        cast = _in_dtype("dy", dy, self.params["W0"].dtype)
        if cast is not dy and fused is not None:
            out = fused.mlp_backward(self, cast, cache, need_dx)
            if out is not None:
                return out
        dy = cast
        _, act_back = ACTIVATIONS[self.activation]
        grads: dict[str, Array] = {}
        d = dy
        for i in reversed(range(self.n_layers)):
            if self._activated(i):  # cache[i + 1] is the activated output h: tanh' = 1 - h^2, relu' = [h > 0]
                d = act_back(d, cache[i + 1])
            d, grads[f"W{i}"], grads[f"b{i}"] = linear_backward(
                d, cache[i], self.params[f"W{i}"], need_dx=i > 0 or need_dx
            )
        return d, {k: grads[k] for k in self.params}
