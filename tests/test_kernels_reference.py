"""kernels/reference.py: the plain-loop oracle, checked against hand-worked values, GAE's
lambda = 1 / lambda = 0 identities, and the numpy implementations it is the oracle for.

Tolerances, and why (worst errors measured over the draws named, or on the fixed case):
- GAE by hand: every value is a small dyadic number and every operation on it exact: compared with ==
  (was numpy's rtol 1e-7).
- lambda = 0 against td0: both compute delta_t with the same operations in the same order, and GAE adds
  gamma lam (1 - d) A = 0 to it exactly: compared with == (was TOL; observed equal in 20000 draws).
- lambda = 1 against rewards-to-go: two float64 recursions of T <= 12 steps, each step a few roundings of
  values <= |G| ~ 12 (~1e-15), then one rounding to the dtype. float64: TOL's 1e-12 (observed 4.4e-15).
  float32: the two roundings of nearly equal float64 values to float32 agree or sit an ulp apart; adv is
  compared with G - V after rounding, so half an ulp of |A| and of |G| ~ 12 (observed ret equal, adv
  8.3e-7 = 2.4e-7 |G|max over 20000 draws): TOL's 1e-5 (rtol and atol).
- numpy's GAE against the reference: in float64 gae_numpy performs the reference's operations in its
  order ((gamma lam) (1 - d) A_{t+1}, then + delta), each rounded once on both sides: compared with ==
  (was 1e-12; observed equal in 20000 draws). In float32 numpy rounds each of ~5 operations a step over
  T <= 12 steps of values <= ~12: a random walk of <= 60 roundings of 2^-24 |G| ~ 7e-7 (worst case
  4e-5, never approached): TOL rtol 1e-5, atol 1e-5 (observed 1.4e-6 absolute, 0.06 of TOL, 20000 draws).
- Layers and activations, fixed (3, 5) x (5, 4) case: numpy sums <= 5 products in the dtype, <= 10
  roundings of values <= sum |terms| ~ 5 (<= 3e-6 in float32); the reference rounds once. TOL: 1e-5
  (observed 4.8e-7) and 1e-12 (observed 4.4e-16). tanh's backward is checked against dh / cosh(x)^2 in
  float64 (the reference's own dh (1 - h^2) was a copy of its formula): h = tanh(x) in the dtype carries
  half an ulp, which moves 1 - h^2 by <= 2^-23 |h| (observed 1.1e-7 in float32, 2.2e-16 in float64).
  NaN and inf pass through the activations unchanged on both sides (compared exactly); the finite tanh
  values beside them are libm's against numpy's tanh, which need not be libm's: TOL (was ==; equal here).
- nn.MLP against the reference in float64 (test_mlp_matches_nn): sums of <= 9 terms in another order
  through <= 4 layers, ~9 u of sum |terms| <= ~10 per sum: rtol 1e-12 and atol 1e-14 for y, dx and the
  gradients (observed <= 7.1e-15 (y), 1.1e-14 (grads, |g| <= 52) absolute over 20000 draws). y had
  rtol 1e-12 alone: an output near 0 (its terms cancelling) failed it in 25 of 20000 draws.
- The oracle's gradients against central differences: check_grads < 1e-6 (tests/test_nn.py's bound), for
  the input as for the parameters. Truncation is O(h^2) ~ 1e-12; rounding is ~eps |L| / h ~ 2e-10 |L| per
  entry, which check_grads measures against its floor 1e-3 max(1, |L|): ~2e-7 of it per entry. The input's
  gradient was compared by rel_error with the unscaled floor 1e-3, which holds 1e-6 only while |L| < ~4.5:
  hypothesis drew sizes [4, 1, 3, 3], B = 1, tanh, seed 4 (a width-1 layer: |dx| = 9.7e-4, |L| = 6.4, the
  error 1.38e-9 = 0.98 eps |L| / h), 1.38e-6, in CI (session 77); 1 of 20000 random draws failed too.
  Now: observed 3.5e-7 (input) and 4.9e-7 (parameters) at worst over those 20000 draws.
"""

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from minippo.kernels import reference as ref

from minippo import nn
from minippo.advantages import gae_numpy
from minippo.gradcheck import check_grads

TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


@st.composite
def rollouts(draw, dtype=None):
    T = draw(st.integers(1, 12))
    N = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    dtype = dtype or draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(T, N)).astype(dtype)
    values = rng.normal(size=(T, N)).astype(dtype)
    dones = (rng.random((T, N)) < draw(st.sampled_from([0.0, 0.2, 1.0]))).astype(dtype)
    last_values = rng.normal(size=N).astype(dtype)
    gamma = draw(st.floats(0.5, 1.0))
    lam = draw(st.floats(0.0, 1.0))
    return rewards, values, dones, last_values, gamma, lam


def test_gae_by_hand():
    # T=2, N=1, gamma=0.5, lam=0.5, episode ends at t=0.
    r = np.array([[1.0], [2.0]])
    v = np.array([[0.5], [1.0]])
    d = np.array([[1.0], [0.0]])
    adv, ret = ref.gae(r, v, d, np.array([4.0]), 0.5, 0.5)
    # t=1: delta = 2 + 0.5*4 - 1 = 3 -> A_1 = 3; t=0: delta = 1 - 0.5 = 0.5, cut -> A_0 = 0.5
    np.testing.assert_array_equal(adv, [[0.5], [3.0]])  # dyadic values, exact operations: ==
    np.testing.assert_array_equal(ret, [[1.0], [4.0]])
    np.testing.assert_array_equal(ref.rewards_to_go(r, d, np.array([4.0]), 0.5), [[1.0], [4.0]])


@settings(max_examples=40, deadline=None)
@given(rollouts())
def test_lambda_one_is_monte_carlo_minus_value(data):
    rewards, values, dones, last_values, gamma, _ = data
    adv, ret = ref.gae(rewards, values, dones, last_values, gamma, 1.0)
    g = ref.rewards_to_go(rewards, dones, last_values, gamma)
    tol = TOL[rewards.dtype.type]
    np.testing.assert_allclose(ret, g, **tol)
    np.testing.assert_allclose(adv, g.astype(np.float64) - values, **tol)


@settings(max_examples=40, deadline=None)
@given(rollouts())
def test_lambda_zero_is_td0(data):
    rewards, values, dones, last_values, gamma, _ = data
    adv, _ = ref.gae(rewards, values, dones, last_values, gamma, 0.0)
    # the same delta_t, operation for operation, plus an exact 0: ==
    np.testing.assert_array_equal(adv, ref.td0(rewards, values, dones, last_values, gamma))


@settings(max_examples=40, deadline=None)
@given(rollouts())
def test_numpy_gae_matches_reference(data):
    adv, ret = gae_numpy(*data)
    adv_ref, ret_ref = ref.gae(*data)
    if adv_ref.dtype == np.float64:  # the reference's operations in its order, each rounded once: ==
        np.testing.assert_array_equal(adv, adv_ref)
        np.testing.assert_array_equal(ret, ret_ref)
        return
    tol = TOL[adv_ref.dtype.type]
    np.testing.assert_allclose(adv, adv_ref, **tol)
    np.testing.assert_allclose(ret, ret_ref, **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["tanh", "relu"])
def test_layers_and_activations_match_numpy(dtype, name):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5)).astype(dtype)
    W = rng.normal(size=(5, 4)).astype(dtype)
    b = rng.normal(size=4).astype(dtype)
    dy = rng.normal(size=(3, 4)).astype(dtype)
    tol = TOL[dtype]
    np.testing.assert_allclose(ref.linear_forward(x, W, b), nn.linear_forward(x, W, b), **tol)
    for mine, theirs in zip(ref.linear_backward(dy, x, W), nn.linear_backward(dy, x, W),
                            strict=True):
        np.testing.assert_allclose(mine, theirs, **tol)
    (f_ref, b_ref), (f_np, b_np) = ref.ACTIVATIONS[name], nn.ACTIVATIONS[name]
    x[0, :2] = 0.0  # relu's kink: the subgradient there is 0 in both
    h = f_np(x)
    np.testing.assert_allclose(f_ref(x), h, **tol)
    # an upstream gradient drawn apart from x: with dh = x, a relu backward masked on dh's sign
    # (dh * (dh > 0)) gave the same numbers as the right one (dh * (h > 0)), in both implementations
    dh = rng.normal(size=x.shape).astype(dtype)
    # tanh' = 1 / cosh^2 of the input (not the reference's dh (1 - h^2) again), in float64
    want = dh / np.cosh(x.astype(np.float64)) ** 2 if name == "tanh" else np.where(x > 0, dh, 0.0)
    np.testing.assert_allclose(b_ref(dh, h), want, **tol)
    np.testing.assert_allclose(b_np(dh, h), want, **tol)
    # NaN and inf go through as np.maximum / np.tanh take them (the reference's relu made NaN 0): those
    # exactly (assert_allclose wants NaN and inf in the same places); tanh(-1), tanh(2) are libm's against
    # numpy's own tanh (SIMD code on AVX-512, not libm), an ulp apart at most: TOL (was ==)
    z = np.array([[np.nan, -np.inf, np.inf, -1.0, 2.0]], dtype)
    np.testing.assert_allclose(f_ref(z), f_np(z), **tol)


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 9), min_size=2, max_size=5), B=st.integers(1, 9),
       name=st.sampled_from(["tanh", "relu"]), activate_output=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_mlp_matches_nn(sizes, B, name, activate_output, seed):
    """nn.MLP's forward and backward are the reference's on drawn depths (none hidden to three), widths and
    batches (float64: sums of <= 9 terms in another order, so 1e-12, and 1e-14 absolute where a sum
    cancels to ~0; a relu input at exactly 0 has probability 0 here)."""
    mlp = nn.MLP(sizes, activation=name, seed=seed % 2**31, dtype=np.float64, activate_output=activate_output)
    rng = np.random.default_rng(seed)
    for k in mlp.params:  # biases off zero, so their path is exercised
        mlp.params[k] += 0.3 * rng.normal(size=mlp.params[k].shape)
    x = rng.normal(size=(B, sizes[0]))
    dy = rng.normal(size=(B, sizes[-1]))
    y, cache = mlp.forward(x)
    y_ref, cache_ref = ref.mlp_forward(mlp.params, x, name, activate_output)
    np.testing.assert_allclose(y_ref, y, rtol=1e-12, atol=1e-14)
    assert len(cache_ref) == len(cache)
    dx, grads = mlp.backward(dy, cache)
    dx_ref, grads_ref = ref.mlp_backward(mlp.params, dy, cache_ref, name, activate_output)
    np.testing.assert_allclose(dx_ref, dx, rtol=1e-12, atol=1e-14)
    assert list(grads_ref) == list(grads) == list(mlp.params)
    for k in grads:
        np.testing.assert_allclose(grads_ref[k], grads[k], rtol=1e-12, atol=1e-14)


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 4), min_size=2, max_size=4), B=st.integers(1, 4),
       activation=st.sampled_from(["tanh", "relu"]), activate_output=st.booleans(), seed=st.integers(0, 2**32 - 1))
@example(sizes=[4, 1, 3, 3], B=1, activation="tanh", activate_output=False, seed=4)  # failed the unscaled floor
def test_reference_mlp_backward_matches_central_differences(sizes, B, activation, activate_output, seed):
    """The oracle's own gradients, checked without nn: ref.mlp_backward against central differences
    of sum(ref.mlp_forward(x) * dy) in float64, for every weight, bias and the input (the same 1e-6
    as tests/test_nn.py: truncation O(h^2) ~ 1e-12, rounding eps |L| / h ~ 2e-10 |L| per entry, ~2e-7
    of check_grads' floor 1e-3 max(1, |L|) for a gradient small enough to meet it; see the module's
    docstring).
    relu's pre-activations are kept 1e-3 from the kink, which a step of 1e-6 cannot cross."""
    rng = np.random.default_rng(seed)
    params = {}
    for i in range(len(sizes) - 1):
        params[f"W{i}"] = rng.normal(size=(sizes[i], sizes[i + 1]))
        params[f"b{i}"] = rng.normal(size=sizes[i + 1])
    x, dy = rng.normal(size=(B, sizes[0])), rng.normal(size=(B, sizes[-1]))
    n_layers = len(sizes) - 1
    if activation == "relu":
        h = x
        for i in range(n_layers):
            z = h @ params[f"W{i}"] + params[f"b{i}"]
            if i < n_layers - 1 or activate_output:
                assume(np.abs(z).min() > 1e-3)
                z = np.maximum(z, 0.0)
            h = z

    def loss() -> float:
        return float((ref.mlp_forward(params, x, activation, activate_output)[0] * dy).sum())

    _, cache = ref.mlp_forward(params, x, activation, activate_output)
    dx, grads = ref.mlp_backward(params, dy, cache, activation, activate_output)
    assert check_grads(loss, params, grads) < 1e-6
    assert check_grads(loss, {"x": x}, {"x": dx}) < 1e-6  # loss() reads x, which check_grads moves
