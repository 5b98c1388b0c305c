"""Action distributions and the gradients of their log-prob, entropy and KL.

Each gradient method takes the upstream gradient ``g`` (dL/d(quantity), one value per sample)
and returns dL/d(distribution parameters) as a dict: ``{"logits": (B, n)}`` for
:class:`Categorical`, ``{"mean": (B, d), "log_std": (B, d)}`` for :class:`DiagGaussian`
(``kl_grad`` returns two such dicts, one per side of the KL).
Vector-Jacobian products throughout: no per-sample softmax Jacobian is ever built.
Derivations: docs/derivations.md sections 5 (softmax) and 6 (Gaussian).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from minippo._checks import array, check_later, finite, generator, real
from minippo.backend import array_module, asnumpy

Array = Any

LOG_2PI = math.log(2.0 * math.pi)


def _check_g(g: Array, b: int, dtype: Any) -> Array:
    """The upstream gradient of a per-sample quantity: shape (B,), or it would broadcast silently.
    A bool or integer ``g`` comes back in the distribution's float ``dtype`` (negated as it was, a uint
    one wrapped around and a bool one failed); a float one as it is."""
    array("g", g)
    if g.dtype.kind not in "biuf":  # (a complex g lost its imaginary part)
        raise TypeError(f"g must be a real array, got dtype {g.dtype}")
    if tuple(g.shape) != (b,):
        raise ValueError(f"g must have shape ({b},) (one upstream gradient per sample), got {tuple(g.shape)}")
    return g if g.dtype.kind == "f" else g.astype(dtype)


def log_std_limit(dtype: Any) -> int:
    """floor(log(largest float)) of ``dtype``: 88 for float32, 709 for float64. Within +-this,
    std = exp(log_std) and 1/std are finite and nonzero."""
    return math.floor(math.log(np.finfo(dtype).max))


def _log_std_range_error(ls: Array, lim: int) -> ValueError:
    return ValueError(f"log_std must lie in [-{lim}, {lim}] for {ls.dtype} (where exp(log_std) and its inverse "
                      f"are finite), got {float(np.abs(ls).max())} in absolute value")


def log_std_in_range(ls: Array) -> None:
    """ValueError unless every entry of the log-stds ``ls`` (any shape, float) is within
    :func:`log_std_limit` of its dtype, as :class:`DiagGaussian` requires (NaN is outside)."""
    lim = log_std_limit(ls.dtype)
    if not bool((np.abs(ls) <= lim).all()):
        raise _log_std_range_error(ls, lim)


def _beside(a: Array, ref: Array) -> Array:
    """``a`` where ``ref`` lives: actions drawn on the host (``sample``) go to a device distribution
    (one upload), device actions come to a host one (one copy); ``a`` itself when both are alike."""
    xp = array_module(ref)
    if array_module(a) is xp:
        return a
    return asnumpy(a) if xp is np else xp.asarray(a)


def action_indices(a: Array, n: int) -> Array:
    """Discrete actions a (B,) of any number dtype -> int64 indices (B,) (``a`` itself when it is
    int64). ValueError unless every entry is a whole number in [0, n): 2.0 is action 2, 2.5 is
    refused. Shared by :class:`Categorical` and the fused numba update, so both accept the same."""
    idx = a.astype(np.int64, copy=False)
    ok = ((idx == a) & (idx >= 0) & (idx < n)).all()  # one test: one device sync on a GPU (or none, deferred)

    def error() -> ValueError:
        return ValueError(f"actions must be integers in [0, {n}), got {a}")

    if not check_later(ok, error) and not bool(ok):
        raise error()
    return idx


class Categorical:
    """Softmax policy ``pi(a|s) = softmax(logits / T)_a`` (softmax with temperature ``T``).

    logits (B, n). ``T < 1`` sharpens, ``T > 1`` flattens; the same ``T`` must be used for the
    behaviour policy and in the update so that the ratio r_t(theta) stays exact.
    With ``z = logits / T`` and ``p = softmax(z)``: ``log p = z - logsumexp(z)`` (stable; for a
    row whose logits span more than the float range, log p of the far entries is held at the lowest
    finite float, so entropy, KL and gradients stay finite).
    An actions array is checked once per distribution, the first time it is passed (kept by
    identity: log_prob then log_prob_grad cost one check, one device sync on a GPU), so an array
    must not be changed in place between calls on one distribution; pass a new array instead.
    Actions may be on the host or the device whatever the logits: they are copied to the logits'
    side once, when first used (as :meth:`sample`'s host actions for a device policy).
    """

    def __init__(self, logits: Array, temperature: float = 1.0) -> None:
        array("logits", logits)
        if logits.ndim != 2 or logits.shape[1] < 1:
            raise ValueError(f"logits must have shape (B, n_actions) with n_actions >= 1, got {tuple(logits.shape)}")
        if logits.dtype.kind != "f":
            raise TypeError(f"logits must be a float array, got dtype {logits.dtype}")
        temperature = real("temperature", temperature, 0.0, low_open=True)
        finite(logits=logits)
        self.logits = logits
        self.temperature = temperature
        if self.temperature < 1.0:  # dividing can overflow finite logits: refused, without numpy's warning first
            with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # (a temperature that is 0 in
                # float32: x / 0 and 0 / 0)
                z = logits / self.temperature
            finite(**{"logits / temperature": z})
        else:
            z = logits / self.temperature if self.temperature != 1.0 else logits
        z = z - z.max(axis=1, keepdims=True)
        # A row whose logits span more than the float range gives -inf here (numpy warns of the
        # overflow), and 0 * -inf would make its entropy and gradients NaN: hold it at the lowest
        # finite value instead, whose exp is 0 all the same. Nothing changes for any other row.
        np.maximum(z, np.finfo(z.dtype).min, out=z)
        self.log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))  # (B, n)
        self.probs = np.exp(self.log_probs)
        # (actions, their validated int64 indices, those on the logits' side or None until first used)
        self._checked: tuple[Array, Array, Array | None] | None = None

    @property
    def n(self) -> int:
        """Number of actions."""
        return int(self.logits.shape[1])

    def _index(self, a: Array) -> Array:
        # log_prob and log_prob_grad see the same actions array: validate it (where it is) and move
        # it to the logits' side once.
        if self._checked is None or self._checked[0] is not a:
            array("actions", a)
            if a.shape != (self.logits.shape[0],):
                raise ValueError(f"actions must have shape ({self.logits.shape[0]},), got {tuple(a.shape)}")
            self._checked = (a, action_indices(a, self.n), None)
        a, idx, here = self._checked
        if here is None:
            here = _beside(idx, self.log_probs)
            self._checked = (a, idx, here)
        return here

    def _rows(self) -> Array:
        return array_module(self.log_probs).arange(self.log_probs.shape[0])

    # log pi(a|s) = z_a - logsumexp(z)
    def log_prob(self, a: Array) -> Array:
        """a (B,) integer actions -> log pi(a|s) (B,)."""
        return self.log_probs[self._rows(), self._index(a)]

    def log_prob_grad(self, a: Array, g: Array) -> dict[str, Array]:
        """d log p_a / d logits = (onehot(a) - p) / T, times ``g`` (B,)."""
        idx = self._index(a)
        gs = (_check_g(g, len(idx), self.probs.dtype) / self.temperature).astype(self.probs.dtype, copy=False)
        d = self.probs * -gs[:, None]
        d[self._rows(), idx] += gs
        return {"logits": d}

    # H = -sum_a p_a log p_a
    def entropy(self) -> Array:
        """Entropy per sample (B,)."""
        return -(self.probs * self.log_probs).sum(axis=1)

    def entropy_grad(self, g: Array) -> dict[str, Array]:
        """dH/dz_j = -p_j (log p_j + H), and dz/dlogits = 1/T; times ``g`` (B,)."""
        h = self.entropy()
        g = _check_g(g, h.shape[0], h.dtype)
        return {"logits": -g[:, None] * self.probs * (self.log_probs + h[:, None]) / self.temperature}

    # KL(self || other) = sum_a p_a (log p_a - log q_a)
    def kl(self, other: Categorical) -> Array:
        """KL(self || other) per sample (B,); both must have the same shape."""
        self._same(other)
        return (self.probs * (self.log_probs - other.log_probs)).sum(axis=1)

    def kl_grad(self, other: Categorical, g: Array) -> tuple[dict[str, Array], dict[str, Array]]:
        """Gradients of KL(p || q) w.r.t. (self.logits, other.logits), times ``g`` (B,).

        dKL/dz_p = p * (log p - log q - KL);  dKL/dz_q = q - p  (then / T of each side).
        """
        self._same(other)
        g = _check_g(g, self.probs.shape[0], self.probs.dtype)
        pc = self.probs * (self.log_probs - other.log_probs)
        kl = pc.sum(axis=1, keepdims=True)
        # p c - p KL, not p (c - KL): where p = 0, c - KL can overflow (logits spanning the float range
        # both ways) and 0 * -inf is NaN; each product here is finite.
        d_self = g[:, None] * (pc - self.probs * kl) / self.temperature
        d_other = g[:, None] * (other.probs - self.probs) / other.temperature
        return {"logits": d_self}, {"logits": d_other}

    def _same(self, other: Categorical) -> None:
        if not isinstance(other, Categorical):
            raise TypeError(f"other must be a Categorical (the same kind of policy), got {type(other).__name__}")
        if other.logits.shape != self.logits.shape:
            raise ValueError(f"the other distribution's logits have shape {tuple(other.logits.shape)}, "
                             f"expected {tuple(self.logits.shape)}")

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """Draw one action per row with ``rng`` (inverse CDF on host) -> (B,) int64.

        With u ~ U[0, 1) and cdf = cumsum(p): a = #{j : cdf_j <= u}, the first action whose cdf
        exceeds u, so an action of probability 0 (a softmax entry that underflowed) is never drawn,
        u = 0 included. Where u reaches the rounded total (cdf_{n-1} may round below 1) the count
        is n: that row takes its last action of nonzero probability.
        """
        generator("rng", rng)
        p = np.asarray(asnumpy(self.probs), dtype=np.float64)
        n = p.shape[1]
        u = rng.random((p.shape[0], 1))
        cdf = np.cumsum(p, axis=1)
        a = (u >= cdf).sum(axis=1)
        past = a == n
        if past.any():  # ~1e-16 per draw: the last j with p_j > 0 (the max of the softmax is > 0)
            a[past] = n - 1 - (p[past, ::-1] > 0).argmax(axis=1)
        a = a.astype(np.int64, copy=False)
        self._checked = (a, a, None)  # valid by construction: log_prob(a) need not check it again
        return a

    def mode(self) -> Array:
        """Most probable action per row (B,)."""
        return self.logits.argmax(axis=1)

    def trust(self, a: Array) -> None:
        """Mark ``a`` (B,) as actions this distribution produced (:meth:`sample` or :meth:`mode`, maybe
        copied to its device): :meth:`log_prob` then takes them without checking (a device sync)."""
        self._checked = (a, a.astype(np.int64, copy=False), None)


class DiagGaussian:
    """Diagonal Gaussian ``N(mean, diag(exp(log_std)^2))``; mean (B, d), log_std (d,) or (B, d).

    Log-probs and entropies are summed over the d action dimensions (one number per sample).
    As for :class:`Categorical`, an actions array is checked (finite) the first time it is passed to
    one distribution, so do not change it in place between calls on that distribution, and actions
    on the host or the device are copied to the mean's side once (:meth:`sample` draws on the host).
    ``mean`` and ``log_std`` must be on the same side (both numpy or both cupy arrays), and ``log_std``
    within +-floor(log(float max)) of the dtype (88 in float32, 709 in float64), where std and 1/std are
    finite: KL and gradients are computed from log-std differences, so they stay finite there while
    the two stds' ratio does (log-stds ~88 apart in float32 overflow it: the KL is then inf, which
    the losses refuse, and its gradient inf or NaN). The policy's head keeps log_std in [-10, 2].
    """

    def __init__(self, mean: Array, log_std: Array) -> None:
        array("mean", mean)
        array("log_std", log_std)
        if mean.ndim != 2:
            raise ValueError(f"mean must have shape (B, action_dim), got {tuple(mean.shape)}")
        if mean.dtype.kind != "f":  # an int mean sampled int (truncated) actions
            raise TypeError(f"mean must be a float array, got dtype {mean.dtype}")
        if log_std.dtype.kind not in "fiu":
            raise TypeError(f"log_std must be a real array, got dtype {log_std.dtype}")
        if log_std.shape not in ((mean.shape[1],), tuple(mean.shape)):
            raise ValueError(
                f"log_std must have shape ({mean.shape[1]},) or {tuple(mean.shape)}, "
                f"got {tuple(log_std.shape)}"
            )
        if array_module(mean) is not array_module(log_std):  # (their gradients go back to the same place)
            raise TypeError(f"mean and log_std must both be numpy or both cupy arrays, got "
                            f"{type(mean).__module__}.{type(mean).__name__} and "
                            f"{type(log_std).__module__}.{type(log_std).__name__}")
        ls = log_std + np.zeros_like(mean)  # (B, d), broadcast once
        # std = exp(log_std) and 1/std finite and nonzero in the dtype, or log-probs and KLs come out NaN
        lim = log_std_limit(ls.dtype)
        ok = np.isfinite(mean).all() & (np.abs(ls) <= lim).all()  # (one test: one device sync on a GPU)

        def error() -> Exception:
            for name, a in (("mean", mean), ("log_std", log_std)):
                if not bool(np.isfinite(a).all()):
                    return FloatingPointError(f"{name} contains NaN or inf")
            return _log_std_range_error(ls, lim)

        if not check_later(ok, error) and not bool(ok):
            raise error()
        self.mean = mean
        self.log_std = ls
        self.std = np.exp(ls)
        # (the last sample() (finite by construction) or checked actions, those on the mean's side or
        # None until first used)
        self._sampled: tuple[Array, Array | None] | None = None

    def _check(self, a: Array) -> Array:
        """``a`` checked (once per array: log_prob and log_prob_grad see the same actions) and on
        the mean's side."""
        if self._sampled is None or self._sampled[0] is not a:
            array("actions", a)
            if a.shape != self.mean.shape:
                raise ValueError(f"actions must have shape {tuple(self.mean.shape)}, got {tuple(a.shape)}")
            if a.dtype.kind not in "biuf":  # complex actions gave complex log-probs; strings failed in isfinite
                raise TypeError(f"actions must be a real array, got dtype {a.dtype}")
            finite(actions=a)
            self._sampled = (a, None)
        a, here = self._sampled
        if here is None:
            here = _beside(a, self.mean)
            self._sampled = (a, here)
        return here

    def _same(self, other: DiagGaussian) -> None:
        if not isinstance(other, DiagGaussian):
            raise TypeError(f"other must be a DiagGaussian (the same kind of policy), got {type(other).__name__}")
        if other.mean.shape != self.mean.shape:
            raise ValueError(f"the other distribution's mean has shape {tuple(other.mean.shape)}, "
                             f"expected {tuple(self.mean.shape)}")

    # log N(a; mu, sigma) = sum_i [-(a_i - mu_i)^2 / (2 sigma_i^2) - log sigma_i - log(2 pi)/2]
    def log_prob(self, a: Array) -> Array:
        """a (B, d) -> log pi(a|s) (B,)."""
        a = self._check(a)
        u = (a - self.mean) / self.std
        return (-0.5 * u * u - self.log_std - 0.5 * LOG_2PI).sum(axis=1)

    def log_prob_grad(self, a: Array, g: Array) -> dict[str, Array]:
        """g (B,) times d log p / d mu = u / sigma and d log p / d log sigma = u^2 - 1, with
        u = (a - mu)/sigma; a (B, d) -> {"mean": (B, d), "log_std": (B, d)}."""
        a = self._check(a)
        g = _check_g(g, a.shape[0], self.mean.dtype)
        u = (a - self.mean) / self.std
        return {"mean": g[:, None] * u / self.std, "log_std": g[:, None] * (u * u - 1.0)}

    # H = sum_i [log sigma_i + (1 + log 2 pi) / 2]
    def entropy(self) -> Array:
        """Entropy per sample (B,)."""
        return (self.log_std + 0.5 * (1.0 + LOG_2PI)).sum(axis=1)

    def entropy_grad(self, g: Array) -> dict[str, Array]:
        """dH/d mu = 0;  dH/d log sigma_i = 1; times ``g`` (B,)."""
        g = _check_g(g, self.mean.shape[0], self.mean.dtype)
        ones = np.ones_like(self.log_std)
        return {"mean": np.zeros_like(self.mean), "log_std": g[:, None] * ones}

    # KL(p||q) = sum_i [log s_q - log s_p + (s_p^2 + (m_p - m_q)^2) / (2 s_q^2) - 1/2]
    def kl(self, other: DiagGaussian) -> Array:
        """KL(self || other) per sample (B,); both must have the same shape."""
        self._same(other)
        ratio, z = self._ratio_z(other)
        return (other.log_std - self.log_std + 0.5 * (ratio + z * z) - 0.5).sum(axis=1)

    def _ratio_z(self, other: DiagGaussian) -> tuple[Array, Array]:
        """s_p^2 / s_q^2 and (m_p - m_q) / s_q (B, d), each without squaring a std: s^2 overflows (or
        underflows to 0) from |log s| ~ 44 in float32, where the ratio of two was inf / inf."""
        return np.exp(2.0 * (self.log_std - other.log_std)), (self.mean - other.mean) / other.std

    def kl_grad(
        self, other: DiagGaussian, g: Array
    ) -> tuple[dict[str, Array], dict[str, Array]]:
        """Gradients of KL(p || q) w.r.t. p's and q's (mean, log_std), times ``g`` (B,).

        d/dm_p = (m_p - m_q)/s_q^2 = -d/dm_q;  d/dlog s_p = s_p^2/s_q^2 - 1;
        d/dlog s_q = 1 - (s_p^2 + (m_p - m_q)^2)/s_q^2.
        """
        self._same(other)
        gg = _check_g(g, self.mean.shape[0], self.mean.dtype)[:, None]
        ratio, z = self._ratio_z(other)
        dm = gg * z / other.std
        d_self = {"mean": dm, "log_std": gg * (ratio - 1.0)}
        d_other = {"mean": -dm, "log_std": gg * (1.0 - ratio - z * z)}
        return d_self, d_other

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """One draw per row with ``rng`` (host) -> (B, d), same dtype as the mean."""
        generator("rng", rng)
        mean = np.asarray(asnumpy(self.mean))
        eps = rng.standard_normal(mean.shape)
        a = (mean + np.asarray(asnumpy(self.std)) * eps).astype(mean.dtype)
        self._sampled = (a, None)
        return a

    def mode(self) -> Array:
        """The mean (B, d)."""
        return self.mean

    def trust(self, a: Array) -> None:
        """Mark ``a`` (B, d) as actions this distribution produced (:meth:`sample` or :meth:`mode`, maybe
        copied to its device): :meth:`log_prob` then takes them without the finiteness check (a sync)."""
        self._sampled = (a, None)
