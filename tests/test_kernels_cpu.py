"""kernels/cpu.py (Numba) against kernels/reference.py, and the numba dispatch in nn.MLP.

Tolerances, and why (observed: the worst over 4000 drawn rollouts, 2500 drawn MLPs and 1500 drawn
building-block cases on an AVX2 CPU, or on the fixed case):
- GAE / rewards-to-go: the kernel does the numpy loop's operations in the same order and dtype,
  so it must equal ``advantages.gae_numpy`` bit for bit. Against the reference (float64 sums,
  rounded once) in float32, numpy's loop rounds ~5 operations a step over T <= 16 steps of values
  <= |G| ~ 12: a random walk of <= 80 roundings of <= 2^-24 |G| ~ 7e-7 each (~6e-6 at three sigma):
  GAE_TOL rtol 1e-5, atol 1e-5 (observed 2.9e-6, 0.11 of GAE_TOL, for the kernel, the reference's
  identities lambda = 1 and 0, and rewards-to-go). float64: the kernel's operations are the
  reference's (observed equal); lambda = 1 against rewards-to-go are two recursions, ~1e-15 apart:
  1e-12 (observed 3.6e-15). The float64 GAE of float32 inputs against numpy's float32 one (the slow
  path's mixed dtypes) is the same float32 rounding walk: 1e-5 (observed 7.6e-7).
- MLP and its building blocks against the reference: a kernel output is a sum of K <= 65 products
  (B <= 256 for a dW entry) in another order than the reference's float64 sum, rounded in the dtype,
  through up to 4 layers, and float32 tanh is a rational approximation <= 8 ulp (checked below). In
  float32 one sum's worst case is K 2^-24 sum |terms| ~ 7e-6 of its largest output (sum |terms| ~ 2x
  that output for normal draws): MLP_TOL rtol 1e-5, atol 2e-5 times max(1, largest |output|)
  (``assert_mlp_close``; observed 4.7e-6 of the scale, 0.22 of MLP_TOL, for whole MLPs, 5e-7, 0.02,
  for one block). float64 (libm tanh): one sum's worst case is ~65 u sum |terms| ~ 1.5e-14 of the scale, a
  deep backward's more: 1e-12 (observed 1.1e-14 of the scale). The fixed small nets (widths <= 8) of
  the dispatch tests compare unscaled, their outputs |.| <= 5 (observed <= 2.4e-7); where one side is
  numpy's BLAS path (a copy, a rebound parameter) the same bound holds.
- _dots / _dense_narrow: against the float64 product, K eps sum |x V| (the standard dot-product
  bound: <= K + 1 roundings of u = eps / 2 per term with the bias, and for float64 inputs as many again
  in the float64 product itself), and bit for bit against _dots' documented order (_dots_in_order: the
  same operations one by one).
- Block sizes and tile widths: each output is the same chain of FMAs and the same lane-sum tree in
  every block (the docstrings say so), so bit for bit; _col_sums is the row-by-row sum in order: ==.
"""

import os
import platform
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

pytest.importorskip("numba")
from minippo.kernels import cpu  # noqa: E402
from minippo.kernels import reference as ref  # noqa: E402
from numba import njit  # noqa: E402

from minippo import advantages, backend, nn  # noqa: E402

GAE_TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}
MLP_TOL = {np.float32: dict(rtol=1e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def assert_mlp_close(a, a_ref, dtype):
    """Fused vs reference MLP arrays. The kernels sum up to 64 products in another order than the
    float64 reference, so the error of an entry is ~ (terms) x eps x (size of the partial sums):
    the absolute tolerance scales with the array's largest magnitude (hypothesis found a relu net
    with |entries| ~ 3 where a fixed 2e-5 failed by 1e-5)."""
    tol = MLP_TOL[dtype]
    scale = max(1.0, float(np.abs(a_ref).max(initial=0.0)))
    np.testing.assert_allclose(a, a_ref, rtol=tol["rtol"], atol=tol["atol"] * scale)
SLOW = settings(max_examples=30, deadline=None)  # deadline=None: the first example compiles


@st.composite
def rollouts(draw):
    T = draw(st.sampled_from([1, 2, 3, 7, 16]))
    # N: whole 64-byte vectors first (16 float32 / 8 float64 columns each; blocks of 4 of them,
    # then single ones), then 8-column register lanes, then rows: below 8 rows only; 13 lanes (or
    # a vector) + rows; 31 vector + lanes + rows (float32); 96 a block of 4 + 2 vectors (float32)
    N = draw(st.sampled_from([1, 2, 5, 8, 13, 16, 24, 31, 40, 64, 67, 96]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rewards = rng.normal(size=(T, N)).astype(dtype)
    values = rng.normal(size=(T, N)).astype(dtype)
    dones = (rng.random((T, N)) < 0.3).astype(dtype)
    dones[:, 0] = 1.0  # an all-done column
    if N > 1:
        dones[:, 1] = 0.0  # a no-done column
    last_values = rng.normal(size=N).astype(dtype)
    gamma = draw(st.floats(0.5, 1.0))
    lam = draw(st.floats(0.0, 1.0))
    return rewards, values, dones, last_values, gamma, lam


@SLOW
@given(rollouts())
def test_gae_matches_reference_and_numpy(data):
    adv, ret = cpu.gae(*data)
    adv_ref, ret_ref = ref.gae(*data)
    dtype = data[0].dtype
    assert adv.dtype == ret.dtype == dtype and adv.shape == data[0].shape
    np.testing.assert_allclose(adv, adv_ref, **GAE_TOL[dtype.type])
    np.testing.assert_allclose(ret, ret_ref, **GAE_TOL[dtype.type])
    adv_np, ret_np = advantages.gae_numpy(*data)
    np.testing.assert_array_equal(adv, adv_np)  # same operations, same order: bit-identical
    np.testing.assert_array_equal(ret, ret_np)


@SLOW
@given(rollouts())
def test_rewards_to_go_and_gae_properties(data):
    rewards, values, dones, last_values, gamma, _ = data
    tol = GAE_TOL[rewards.dtype.type]
    g = cpu.rewards_to_go(rewards, dones, last_values, gamma)
    np.testing.assert_allclose(g, ref.rewards_to_go(rewards, dones, last_values, gamma), **tol)
    adv1, ret1 = cpu.gae(rewards, values, dones, last_values, gamma, 1.0)  # lambda=1: MC - V
    np.testing.assert_allclose(ret1, g, **tol)
    np.testing.assert_allclose(adv1, g - values, **tol)
    adv0, _ = cpu.gae(rewards, values, dones, last_values, gamma, 0.0)  # lambda=0: TD(0)
    np.testing.assert_allclose(adv0, ref.td0(rewards, values, dones, last_values, gamma), **tol)


@pytest.mark.parametrize("T, N, dtype, done", [(1, 1, np.float64, 1.0), (1, 1, np.float64, 0.0),
                                               (1, 1, np.float32, 0.0), (5, 1, np.float64, 0.0),
                                               (16, 96, np.float64, None), (16, 96, np.float32, None)])
def test_gae_and_rewards_to_go_at_the_edges_the_draws_may_miss(T, N, dtype, done):
    """Cases the drawn rollouts reach only by chance (T = N = 1 in float64 in ~1 run of 4) or never (a
    single column that never ends: the draws make column 0 all-done): fixed here. ``done`` None: random
    dones. A guard; it passed on the code it was added to."""
    rng = np.random.default_rng(T * 1000 + N)
    rewards, values = rng.normal(size=(2, T, N)).astype(dtype)
    dones = (rng.random((T, N)) < 0.3).astype(dtype) if done is None else np.full((T, N), done, dtype)
    last_values = rng.normal(size=N).astype(dtype)
    data = (rewards, values, dones, last_values, 0.97, 0.9)
    adv, ret = cpu.gae(*data)
    adv_ref, ret_ref = ref.gae(*data)
    np.testing.assert_allclose(adv, adv_ref, **GAE_TOL[dtype])
    np.testing.assert_allclose(ret, ret_ref, **GAE_TOL[dtype])
    np.testing.assert_allclose(cpu.rewards_to_go(rewards, dones, last_values, 0.97),
                               ref.rewards_to_go(rewards, dones, last_values, 0.97), **GAE_TOL[dtype])


def test_gae_non_contiguous_and_bool_dones():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(6, 8)).astype(np.float32)[:, ::2]
    v = rng.normal(size=(6, 4)).astype(np.float32)
    d = rng.random((6, 4)) < 0.5
    lv = rng.normal(size=4).astype(np.float32)
    adv, ret = cpu.gae(r, v, d, lv, 0.99, 0.95)
    adv_ref, ret_ref = ref.gae(r, v, d.astype(np.float32), lv, 0.99, 0.95)
    np.testing.assert_allclose(adv, adv_ref, **GAE_TOL[np.float32])


def test_gae_slow_path_inputs_match_numpy():
    """Anything but C-contiguous arrays of one float dtype and float64 scalars takes gae()'s slow
    path (cast / copy, then the same compiled kernel): results still equal numpy's loop."""
    rng = np.random.default_rng(3)
    r, v = rng.normal(size=(2, 9, 16)).astype(np.float32)
    d = rng.random((9, 16)) < 0.2
    lv = rng.normal(size=16).astype(np.float32)
    want = advantages.gae_numpy(r, v, d.astype(np.float32), lv, 0.99, 0.95)
    ro = r.copy()
    ro.flags.writeable = False
    wide = np.zeros((9, 32), np.float32)
    strided_out = (wide[:, ::2], np.zeros((9, 16), np.float32))
    strided_ret = (np.zeros((9, 16), np.float32), np.zeros((9, 32), np.float32)[:, 1::2])
    cases = {
        "bool dones": dict(dones=d),
        "read-only rewards": dict(rewards=ro),
        "float32 scalars": dict(gamma=np.float32(0.99), lam=np.float32(0.95)),
        "non-contiguous out": dict(out=strided_out),
        "non-contiguous out[1]": dict(out=strided_ret),  # the returns copied back alone
    }
    for name, kw in cases.items():
        args = dict(rewards=r, values=v, dones=d.astype(np.float32), last_values=lv, gamma=0.99, lam=0.95)
        args.update(kw)
        adv, ret = cpu.gae(**args)
        if name == "float32 scalars":  # float(np.float32(0.99)) is not 0.99: compare with the same numbers
            want_s = advantages.gae_numpy(r, v, d.astype(np.float32), lv, float(args["gamma"]), float(args["lam"]))
            np.testing.assert_array_equal(adv, want_s[0], err_msg=name)
            continue
        np.testing.assert_array_equal(adv, want[0], err_msg=name)
        np.testing.assert_array_equal(ret, want[1], err_msg=name)
        if name == "non-contiguous out":
            assert adv is strided_out[0]
        if name == "non-contiguous out[1]":
            assert ret is strided_ret[1]
    adv64, _ = cpu.gae(r.astype(np.float64), v, d, lv, 0.99, 0.95)  # mixed dtypes: rewards' dtype wins
    assert adv64.dtype == np.float64
    np.testing.assert_allclose(adv64, want[0], rtol=1e-5, atol=1e-5)  # float32's rounding walk (module doc)


def test_gae_errors_name_the_argument():
    """The fast path leaves shape and range checks to the kernel (status code); the messages are
    the same as the numpy backend's."""
    z = np.zeros((4, 3), np.float32)
    lv = np.zeros(3, np.float32)
    cpu.gae(z, z, z, lv, 0.9, 0.9)  # compiled: the checks below run on the fast path
    bad = [
        (dict(values=np.zeros((4, 2), np.float32)), "values must have shape"),
        (dict(dones=np.zeros((5, 3), np.float32)), "dones must have shape"),
        (dict(last_values=np.zeros(4, np.float32)), "last_values must have shape"),
        (dict(gamma=1.5), "gamma must be a finite number in"),
        (dict(gamma=float("nan")), "gamma must be a finite number in"),
        (dict(lam=-0.1), "lam must be a finite number in"),
        (dict(rewards=np.zeros(4, np.float32)), "rewards must have shape"),
        (dict(out=(np.zeros((4, 2), np.float32), z.copy())), "out must be"),
        (dict(out=(np.zeros((4, 3), np.float64), z.copy())), "out must be"),
        # one array for both (status 3, copied): it was given the returns as the advantages once warm
        (dict(out=(z + 7, ) * 2), r"out\[0\] and out\[1\] share memory"),
    ]
    for kw, msg in bad:
        args = dict(rewards=z, values=z, dones=z, last_values=lv, gamma=0.9, lam=0.9)
        args.update(kw)
        with pytest.raises(ValueError, match=msg):
            cpu.gae(**args)
    # the slow path (bool dones are cast there) checks out itself: either array alone, shape or dtype
    zb = np.zeros((4, 3), bool)
    for out in ((np.zeros((4, 2), np.float32), z.copy()), (z.copy(), np.zeros((4, 2), np.float32)),
                (np.zeros((4, 3), np.float64), z.copy()), (z.copy(), np.zeros((4, 3), np.float64))):
        before = [a.copy() for a in out]
        with pytest.raises(ValueError, match=r"out must be two float32 arrays of shape \(4, 3\)"):
            cpu.gae(z, z, zb, lv, 0.9, 0.9, out=out)
        for a, b in zip(out, before, strict=True):
            np.testing.assert_array_equal(a, b)


def test_gae_compiles_only_its_own_signatures():
    """_gae_kernel compiles only through _gae_prepare (SLP on, numba's config restored after), one
    C-contiguous signature per float dtype; other inputs are cast, never compiled."""
    from numba.core import config

    before = config.SLP_VECTORIZE
    z = np.zeros((3, 8), np.float32)
    cpu.gae(z, z, z, np.zeros(8, np.float32), 0.9, 0.9)
    cpu.gae(z, z, z.astype(bool), np.zeros(8, np.float32), 0.9, 0.9)
    cpu.gae(z[:, ::2], z[:, ::2], z[:, ::2], np.zeros(4, np.float32), 0.9, 0.9)
    cpu.gae(z.astype(np.float64), z, z, np.zeros(8), 0.9, 0.9)
    assert config.SLP_VECTORIZE == before
    sigs = cpu._gae_kernel.signatures
    assert len(sigs) == 2 and all(a.layout == "C" for sig in sigs for a in sig if hasattr(a, "layout"))
    assert {sig[0].dtype.name for sig in sigs} == {"float32", "float64"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_narrow_layer_is_prepared_with_slp_and_sums_in_a_fixed_order(dtype):
    """_prepare compiles the fixed-order dot products (heads with fewer than 8 outputs, dx at small
    batch) for writable and read-only x with numba's SLP setting restored and compilation left on;
    the sums give the same bits for either x and stay within rounding of float64, also with K % 8
    leftover terms, and _dots sums in its documented order bit for bit (_dots_in_order), on both
    sides of K = 8 where the 8-lane block starts."""
    from numba.core import config

    before = config.SLP_VECTORIZE
    cpu._prepare(np.dtype(dtype))
    assert config.SLP_VECTORIZE == before
    readonly = {not sig[0].mutable for sig in cpu._dots.signatures if sig[0].dtype.name == np.dtype(dtype).name}
    assert readonly == {False, True}
    assert cpu._dots._can_compile  # other signatures still compile (without SLP)
    rng = np.random.default_rng(0)
    for B, K, F in ((1, 64, 64), (3, 17, 64), (2, 8, 3), (2, 7, 5)):  # _dots alone: V (F, K) as dx uses W
        x, V = rng.normal(size=(B, K)).astype(dtype), rng.normal(size=(F, K)).astype(dtype)
        out = np.empty((B, F), dtype)
        cpu._dots(x, V, out)
        exact = x.astype(np.float64) @ V.T.astype(np.float64)
        assert (np.abs(out - exact) <= K * np.finfo(dtype).eps * (np.abs(x).astype(np.float64) @ np.abs(V.T))).all()
        np.testing.assert_array_equal(out, _dots_in_order(x, V))
    for K, F in ((64, 6), (67, 2), (5, 1)):
        x = rng.normal(size=(8, K)).astype(dtype)
        W, b = rng.normal(size=(K, F)).astype(dtype), rng.normal(size=F).astype(dtype)
        out, out_ro = np.empty((8, F), dtype), np.empty((8, F), dtype)
        cpu._dense_narrow(x, W, b, out)
        ro = x.copy()
        ro.flags.writeable = False
        cpu._dense_narrow(ro, W, b, out_ro)
        np.testing.assert_array_equal(out, out_ro)
        exact = x.astype(np.float64) @ W.astype(np.float64) + b
        # K products summed in float: error <= K * eps * sum |x W| (standard dot-product bound)
        bound = K * np.finfo(dtype).eps * (np.abs(x).astype(np.float64) @ np.abs(W) + np.abs(b))
        assert (np.abs(out - exact) <= bound).all()


def _dots_in_order(x, V):
    """_dots' documented order of operations in x's dtype, one rounding per operation: no 8-lane
    block below K = 8, a plain left-to-right sum; else 8 partial sums (lane l adds the terms
    k = l mod 8 in order up to the last multiple of 8), added as the tree ((P0 + P1) + (P2 + P3)) +
    ((P4 + P5) + (P6 + P7)), plus the leftover terms' own left-to-right sum."""
    dtype = x.dtype.type
    K = x.shape[1]
    K8 = K - K % 8 if K >= 8 else 0
    out = np.empty((x.shape[0], V.shape[0]), x.dtype)
    for r in range(x.shape[0]):
        for j in range(V.shape[0]):
            P = [dtype(0)] * 8
            for k in range(K8):
                P[k % 8] = P[k % 8] + x[r, k] * V[j, k]
            t = dtype(0)
            for k in range(K8, K):
                t = t + x[r, k] * V[j, k]
            s = ((P[0] + P[1]) + (P[2] + P[3])) + ((P[4] + P[5]) + (P[6] + P[7]))
            out[r, j] = s + t
    return out


def test_compute_gae_dispatches_to_numba(numba_backend, monkeypatch):
    calls = []
    real = cpu.gae
    monkeypatch.setattr(cpu, "gae", lambda *a: calls.append(1) or real(*a))
    z = np.zeros((3, 2), np.float32)
    adv, _ = advantages.compute_gae(z + 1, z, z, np.zeros(2, np.float32), 0.9, 0.9)
    assert calls and adv.dtype == np.float32
    np.testing.assert_array_equal(adv[-1], 1.0)  # r = 1, V = V_T = 0: delta = 1 + 0.9 * 0 - 0 exactly


def test_compute_gae_hot_path_goes_straight_to_the_kernel_and_misses_take_the_full_path(monkeypatch):
    """After its first call on numba, compute_gae calls the kernel itself (not cpu.gae) for Python-float
    gamma and lambda; anything the kernel refuses, or a dispatch miss, goes through cpu.gae and gives
    what the numpy backend gives: the same bits, or the same error with out untouched."""
    rng = np.random.default_rng(5)
    r, v = rng.normal(size=(2, 7, 3)).astype(np.float32)
    d = (rng.random((7, 3)) < 0.3).astype(np.float32)
    lv = rng.normal(size=3).astype(np.float32)
    ro = np.zeros((7, 3), np.float32)
    ro.flags.writeable = False
    shared = np.zeros((7, 3), np.float32)
    # (args, out) of calls that miss: a numpy-float gamma, an overlap (status 3), a mismatched shape
    # (status 1), gamma out of range (2), dones of 2 (4), mixed dtypes, a read-only out, a list
    # input, out a triple, out with a list in it, out None with float64 values
    misses = [((r, v, d, lv, np.float64(0.9), 0.8), None),
              ((shared, v, d, lv, 0.9, 0.8), "shared"),
              ((r, v[:6], d[:6], lv, 0.9, 0.8), None),
              ((r, v, d, lv, 1.5, 0.8), None),
              ((r, v, d * 2, lv, 0.9, 0.8), None),
              ((r, v.astype(np.float64), d, lv, 0.9, 0.8), None),
              ((r, v, d, lv, 0.9, 0.8), "read-only"),
              ((r.tolist(), v, d, lv, 0.9, 0.8), None),
              ((r, v, d, lv, 0.9, 0.8), "triple"),
              ((r, v, d, lv, 0.9, 0.8), "list in it"),
              ((r, v.astype(np.float64), d, lv, 0.9, 0.8), "none")]

    def outcome(args, kind, backend_name):
        monkeypatch.setenv(backend.ENV_VAR, backend_name)
        backend.reset()
        advantages.compute_gae(r, v, d, lv, 0.99, 0.95, out=(np.empty_like(r), np.empty_like(r)))  # arms it
        args = tuple(shared.copy() if a is shared else a for a in args)
        out = {None: (np.full_like(r, 7), np.full_like(r, 7)), "none": None, "read-only": (np.full_like(r, 7), ro),
               "shared": (args[0], np.full_like(r, 7)), "triple": (np.full_like(r, 7),) * 3,
               "list in it": (np.full_like(r, 7), [[7.0] * 3] * 7)}[kind]
        calls.clear()
        try:
            res = advantages.compute_gae(*args, out=out)
        except (TypeError, ValueError) as e:
            # which of out's arrays still hold their 7s (the same on both backends: none written by numba
            # that numpy leaves alone)
            kept = [np.array_equal(o, np.full_like(r, 7)) for o in out or () if isinstance(o, np.ndarray)]
            return type(e), str(e), kept
        return "ok", [a.dtype.str for a in res], [np.asarray(a).tobytes() for a in res]

    calls = []
    real = cpu.gae
    monkeypatch.setattr(cpu, "gae", lambda *a: calls.append(1) or real(*a))
    for args, kind in misses:
        want = outcome(args, kind, "numpy")
        assert outcome(args, kind, "numba") == want, kind
        # compute_gae refuses a bad out itself; every other miss reaches cpu.gae
        assert bool(calls) == (kind not in ("triple", "list in it", "read-only")), kind
    for dtype in (np.float32, np.float64):
        r, v, d, lv = (a.astype(dtype) for a in (r, v, d, lv))
        for out in ((np.empty_like(r), np.empty_like(r)), [np.empty_like(r), np.empty_like(r)], None):
            monkeypatch.setenv(backend.ENV_VAR, "numba")
            backend.reset()
            advantages.compute_gae(r, v, d, lv, 0.99, 0.95)  # arms it
            calls.clear()
            res = advantages.compute_gae(r, v, d, lv, 0.9, 0.8, out=out)
            assert not calls, "a hot-path call went through cpu.gae"
            assert out is None or (res[0] is out[0] and res[1] is out[1])
            want = advantages.gae_numpy(r, v, d, lv, 0.9, 0.8)
            np.testing.assert_array_equal(res[0], want[0])
            np.testing.assert_array_equal(res[1], want[1])
    backend.reset()


def test_fast_tanh_f32_accuracy():
    x = np.concatenate([
        np.linspace(-12, 12, 400_001, dtype=np.float32),
        np.geomspace(1e-30, 1, 20_000, dtype=np.float32),
        -np.geomspace(1e-30, 1, 20_000, dtype=np.float32),
        np.array([0.0, -0.0, np.inf, -np.inf, 3e38, -3e38], np.float32),
    ]).reshape(1, -1)
    h = x.copy()
    cpu._activate(h, cpu.ACT_TANH_F32)
    exact = np.tanh(x.astype(np.float64))
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    err = np.abs(h - exact) / ulp
    assert np.max(err) <= 8.0  # the documented bound (kernels/cpu.py)
    # and the fit itself: measured 4.37 ulp at most, 0.677 on average (Zen 4, FMA-contracted). The mean
    # bound leaves ~10% for another contraction or rounding order; a coefficient wrong in its 7th digit
    # (_B0 4.89352518e-3 as 4.89352418e-3: 4.88 max, under 8) averaged 0.832, which it catches.
    assert np.mean(err) <= 0.75, np.mean(err)
    assert h[0, -4] == 1.0 and h[0, -3] == -1.0
    nan = np.full((1, 3), np.nan, np.float32)
    cpu._activate(nan, cpu.ACT_TANH_F32)
    assert np.isnan(nan).all()


@st.composite
def mlps(draw):
    n_layers = draw(st.integers(1, cpu.MAX_LAYERS))
    # Small odd widths hit every remainder loop (k % 4, rows % 4); 16/33/64 hit the vector bodies.
    width = st.one_of(st.integers(1, 9), st.sampled_from([16, 33, 64]))
    sizes = draw(st.lists(width, min_size=n_layers + 1, max_size=n_layers + 1))
    return (sizes, draw(st.sampled_from(["tanh", "relu"])), draw(st.booleans()),
            draw(st.sampled_from([np.float32, np.float64])),
            draw(st.one_of(st.integers(1, 9), st.sampled_from([16, 33, 64, cpu.SMALL_MAX_BATCH]))),
            draw(st.integers(0, 2**32 - 1)))


def _drawn_mlp(case):
    sizes, activation, activate_output, dtype, B, seed = case
    rng = np.random.default_rng(seed)
    mlp = nn.MLP(sizes, activation=activation, seed=seed % 1000, dtype=dtype,
                 activate_output=activate_output)
    for k in mlp.params:  # nonzero biases, so that a dropped bias would show
        mlp.params[k] += rng.normal(scale=0.5, size=mlp.params[k].shape).astype(dtype)
    x = rng.normal(size=(B, sizes[0])).astype(dtype)
    dy = rng.normal(size=(B, sizes[-1])).astype(dtype)
    return mlp, x, dy


# A relu pre-activation of 6.3e-9 (float64), which the kernel's float32 sum rounds to <= 0 and the
# reference's to 6.3e-9 (Zen 4, AVX-512): unit 50 of row 13 is off in one forward pass, on in the other.
RELU_KINK_CASE = ([2, 64, 64], "relu", False, np.float32, 16, 3_429_581_196)


@settings(SLOW, suppress_health_check=[HealthCheck.function_scoped_fixture])  # env set once
@given(mlps())
@example(RELU_KINK_CASE)
def test_fused_mlp_matches_reference_and_numpy(numba_backend, case):
    """The forward pass against the reference's; the backward pass against the reference's backward on
    the kernel's own forward values: the two forward passes sum in other orders, and where a relu
    pre-activation is within rounding of 0 (RELU_KINK_CASE) its unit is on in one and off in the other,
    so a backward pass on the reference's forward values differs by that unit's whole share of dx and
    of the layer below's gradients (-14.5 against -10.6 there) with both right for their forward pass."""
    sizes, activation, activate_output, dtype, B, seed = case
    mlp, x, dy = _drawn_mlp(case)

    cache = cpu.mlp_forward(mlp, x)
    assert cache is not None
    dx, grads = cpu.mlp_backward(mlp, dy, cache)
    y_ref, cache_ref = ref.mlp_forward(mlp.params, x, activation, activate_output)
    dx_ref, grads_ref = ref.mlp_backward(mlp.params, dy, cache, activation, activate_output)
    assert len(cache) == len(cache_ref) == mlp.n_layers + 1 and cache[0] is x
    for h, h_ref in zip(cache, cache_ref, strict=True):
        assert h.shape == h_ref.shape and h.dtype == dtype
        assert_mlp_close(h, h_ref, dtype)
    assert_mlp_close(dx, dx_ref, dtype)
    assert dx.dtype == dtype and list(grads) == list(mlp.params)
    for k in grads:
        assert grads[k].shape == mlp.params[k].shape and grads[k].dtype == dtype
        assert_mlp_close(grads[k], grads_ref[k], dtype)

    y, cache_mlp = mlp.forward(x)  # through nn.MLP's dispatch: the same kernel
    np.testing.assert_array_equal(y, cache[-1])
    dx_mlp, grads_mlp = mlp.backward(dy, cache_mlp)
    np.testing.assert_array_equal(dx_mlp, dx)
    none, grads_nodx = mlp.backward(dy, cache_mlp, need_dx=False)  # skips dx, same grads
    assert none is None
    for k in grads:
        np.testing.assert_array_equal(grads_nodx[k], grads[k])
    assert all(h is not h2 for h, h2 in zip(cache[1:], cache_mlp[1:], strict=True))  # never reused
    np.testing.assert_array_equal(cache[-1], y)  # the first cache is still intact


def test_fused_mlp_rebound_params_are_seen(numba_backend):
    mlp = nn.MLP([3, 5, 2], seed=0)
    x = np.ones((2, 3), np.float32)
    y0, _ = mlp.forward(x)
    mlp.params["b1"] = mlp.params["b1"] + 1.0  # rebound, not written in place
    y1, cache = mlp.forward(x)
    # both sides add the same 5 products (and b1 = 0 or 1) in the kernel's order, every partial sum |.| < 2
    # in any order here, and y0 + 1 is one more rounding: <= 13 roundings of <= 2^-24 (half an ulp below 2),
    # 7.8e-7 (observed 1.8e-7; was rtol 1e-6 alone, 2.8e-7 at y + 1 = 0.28, fewer than the sums can make)
    np.testing.assert_allclose(y1, y0 + 1.0, rtol=0, atol=8e-7)
    mlp.params["W0"] = mlp.params["W0"].astype(np.float64)  # mixed dtypes: the numpy path
    y2, _ = mlp.forward(x)
    assert y2.dtype == np.float64


def test_mlp_dispatch_by_size_and_dtype(numba_backend, monkeypatch):
    calls = []
    real = cpu._FORWARD[2]
    monkeypatch.setattr(cpu, "_FORWARD", (None, None, lambda *a: calls.append(1) or real(*a)))
    rng = np.random.default_rng(0)
    wide = nn.MLP([4, cpu.SMALL_WIDTH + 1, 2], seed=0)  # a layer wider than 64: fused up to batch 8
    assert cpu.max_batch(wide.sizes) == cpu.MAX_BATCH
    wide.forward(rng.normal(size=(cpu.MAX_BATCH, 4)).astype(np.float32))
    assert len(calls) == 1
    y, cache = wide.forward(rng.normal(size=(cpu.MAX_BATCH + 1, 4)).astype(np.float32))
    assert len(calls) == 1 and cpu.mlp_backward(wide, np.ones_like(y), cache) is None
    calls.clear()
    mlp = nn.MLP([4, 8, 2], seed=0)  # every width <= 64: fused up to SMALL_MAX_BATCH
    assert cpu.max_batch(mlp.sizes) == cpu.SMALL_MAX_BATCH
    # the paper's 64-64 nets sit on the boundary (widths of exactly SMALL_WIDTH): the minibatches too
    assert cpu.max_batch([4, cpu.SMALL_WIDTH, cpu.SMALL_WIDTH, 2]) == cpu.SMALL_MAX_BATCH
    y, cache = mlp.forward(rng.normal(size=(cpu.SMALL_MAX_BATCH, 4)).astype(np.float32))
    assert len(calls) == 1 and cpu.mlp_backward(mlp, np.ones_like(y), cache) is not None
    y, cache = mlp.forward(rng.normal(size=(cpu.SMALL_MAX_BATCH + 1, 4)).astype(np.float32))
    assert len(calls) == 1 and cpu.mlp_backward(mlp, np.ones_like(y), cache) is None
    calls.clear()
    mlp.forward(rng.normal(size=(cpu.MAX_BATCH, 4)).astype(np.float32))
    x_strided = rng.normal(size=(2, 8)).astype(np.float32)[:, ::2]  # not contiguous: copied to C order
    mlp.forward(x_strided)  # and fused (numpy's path before session 64)
    assert len(calls) == 2
    # a float64 input into float32 params: cast to float32, as MLP.forward casts it, then fused (it ran
    # numpy and gave float64 before session 54)
    y64, cache64 = mlp.forward(rng.normal(size=(2, 4)))
    assert len(calls) == 3 and y64.dtype == cache64[0].dtype == np.float32
    dx, grads = mlp.backward(np.ones((2, 2)), cache64)  # a float64 dy: cast too, then fused
    assert dx.dtype == np.float32 and grads["W0"].dtype == np.float32


def test_numpy_backend_never_loads_the_kernels(monkeypatch):
    monkeypatch.setenv(backend.ENV_VAR, "numpy")
    backend.reset()
    assert backend.numba_kernels("cpu") is None
    monkeypatch.setenv(backend.ENV_VAR, "numba")
    backend.reset()
    assert backend.numba_kernels("cpu") is cpu
    backend.reset()


def test_import_compiles_nothing():
    code = ("import minippo, minippo.nn, minippo.kernels.cpu as c; "
            "print(len(c._gae_kernel.signatures) + sum(len(f.signatures) for f in c._FORWARD[1:] + c._BACKWARD[1:]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


@SLOW
@given(rollouts())
def test_gae_out_writes_in_place_bit_identical(data):
    adv_np, ret_np = advantages.gae_numpy(*data)
    out = (np.full_like(data[0], np.nan), np.full_like(data[0], np.nan))
    res = cpu.gae(*data, out=out)
    assert res[0] is out[0] and res[1] is out[1]
    np.testing.assert_array_equal(out[0], adv_np)
    np.testing.assert_array_equal(out[1], ret_np)


def _f32_rollout(seed, T, N, p_done):
    """rewards, values, dones (T, N) and last values (N,), float32."""
    rng = np.random.default_rng(seed)
    r, v = rng.normal(size=(2, T, N)).astype(np.float32)
    d = (rng.random((T, N)) < p_done).astype(np.float32)
    return r, v, d, rng.normal(size=N).astype(np.float32)


def test_compute_gae_out_on_both_backends(monkeypatch):
    r, v, d, lv = _f32_rollout(1, 5, 3, 0.3)
    want = advantages.gae_numpy(r, v, d, lv, 0.9, 0.8)
    for name in ("numpy", "numba"):
        monkeypatch.setenv(backend.ENV_VAR, name)
        backend.reset()
        out = (np.empty_like(r), np.empty_like(r))
        res = advantages.compute_gae(r, v, d, lv, 0.9, 0.8, out=out)
        assert res[0] is out[0] and res[1] is out[1]
        np.testing.assert_array_equal(out[0], want[0])
        np.testing.assert_array_equal(out[1], want[1])
        with pytest.raises(ValueError, match="gamma"):
            advantages.compute_gae(r, v, d, lv, 1.5, 0.8, out=out)
    with pytest.raises(ValueError, match="out must be"):
        cpu.gae(r, v, d, lv, 0.9, 0.8, out=(np.empty((5, 3)), np.empty((5, 3))))
    empty = np.zeros((0, 3), np.float32)
    assert cpu.gae(empty, empty, empty, lv, 0.9, 0.8)[0].shape == (0, 3)
    backend.reset()


@SLOW
@given(rollouts(), st.sampled_from(["rewards", "values", "dones", None]),
       st.sampled_from(["rewards", "values", "dones", None]), st.booleans())
def test_gae_out_may_share_memory_with_the_inputs(data, adv_into, ret_into, view):
    """out=(adv, returns) written over the inputs themselves (or views of them) gives what separate
    arrays give, on both backends: the kernel sees the overlap and computes into new memory first."""
    if adv_into is not None and adv_into == ret_into:
        return  # both outputs in one array: numpy's answer is then returns, the last one written
    want = advantages.gae_numpy(*data)
    names = ("rewards", "values", "dones")
    for gae in (cpu.gae, lambda *a, out: advantages.compute_gae(*a, out=out)):  # numba, then numpy
        arrays = {k: a.copy() for k, a in zip(names, data[:3], strict=True)}
        args = (*arrays.values(), data[3], *data[4:])
        out = tuple(np.full_like(data[0], np.nan) if k is None else (arrays[k][:] if view else arrays[k])
                    for k in (adv_into, ret_into))
        res = gae(*args, out=out)
        assert res[0] is out[0] and res[1] is out[1]
        np.testing.assert_array_equal(out[0], want[0])
        np.testing.assert_array_equal(out[1], want[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("T, N", [(6, 5), (6, 40), (4, 96)])  # the row loop, lanes + rows, vector blocks
def test_gae_out_partly_overlapping_an_input(dtype, T, N):
    """out that overlaps an input without starting where it starts (adv row t lies on rewards row
    t - 1, written before the recursion reads it) is detected like a whole-array alias."""
    rng = np.random.default_rng(T * N)
    buf = rng.normal(size=(T + 1, N)).astype(dtype)
    rewards, adv = buf[1:], buf[:-1]  # both C-contiguous, T - 1 rows shared
    v = rng.normal(size=(T, N)).astype(dtype)
    d = (rng.random((T, N)) < 0.3).astype(dtype)
    lv = rng.normal(size=N).astype(dtype)
    want = advantages.gae_numpy(rewards.copy(), v, d, lv, 0.99, 0.95)
    ret = np.empty((T, N), dtype)
    cpu.gae(rewards, v, d, lv, 0.99, 0.95, out=(adv, ret))
    np.testing.assert_array_equal(adv, want[0])
    np.testing.assert_array_equal(ret, want[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gae_kernel_status_codes(dtype):
    """The kernel's documented codes, each returned with nothing written: 1 for a shape that is not
    rewards' (T, N) (or (N,) for last_values), 2 for gamma or lam out of range, 4 for a done that is
    neither 0 nor 1 (3, overlap, in the test below); 0 and the results otherwise."""
    cpu._gae_prepare(np.dtype(dtype))
    T, N = 3, 2
    rng = np.random.default_rng(1)

    def call(**change):
        a = dict(r=rng.normal(size=(T, N)), v=rng.normal(size=(T, N)), d=np.zeros((T, N)), lv=rng.normal(size=N),
                 adv=np.full((T, N), 7.0), ret=np.full((T, N), 7.0))
        a = {k: x.astype(dtype) for k, x in a.items()}
        gamma, lam = change.pop("gamma", 0.9), change.pop("lam", 0.95)
        a.update({k: np.ascontiguousarray(x, dtype) for k, x in change.items()})
        status = cpu._gae_kernel(a["r"], a["v"], a["d"], a["lv"], gamma, lam, a["adv"], a["ret"])
        written = not ((a["adv"] == 7).all() and (a["ret"] == 7).all())
        return status, written

    assert call() == (0, True)
    for k, shape in (("v", (T, N + 1)), ("d", (T + 1, N)), ("lv", (N + 1,)), ("adv", (T - 1, N)), ("ret", (T, 1))):
        assert call(**{k: np.full(shape, 7.0)}) == (1, False), k
    for gamma, lam in ((0.0, 0.5), (1.01, 0.5), (0.9, -0.01), (0.9, 1.01), (float("nan"), 0.5)):
        assert call(gamma=gamma, lam=lam) == (2, False), (gamma, lam)
    for bad in (2.0, -1.0, 0.5, float("nan")):
        d = np.zeros((T, N))
        d[T - 1, N - 1] = bad
        assert call(d=d) == (4, False), bad


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("T, N", [(0, 3), (4, 0), (0, 0)])
def test_gae_kernel_with_no_steps_or_no_envs_writes_nothing(dtype, T, N):
    """T = 0 or N = 0: status 0 and not one byte written, even where the empty outputs are views
    into a larger buffer (the kernel rounds gamma by a store into adv[0, 0], which must not happen
    then: it would land on the buffer's first element)."""
    cpu._gae_prepare(np.dtype(dtype))
    buf = np.full(8, 7.0, dtype)
    adv, ret = buf[:0].reshape(T, N), buf[4:4].reshape(T, N)
    z = np.zeros((T, N), dtype)
    assert cpu._gae_kernel(z, z, z, np.zeros(N, dtype), 0.99, 0.95, adv, ret) == 0
    assert (buf == 7.0).all()
    got = cpu.gae(z, z, z, np.zeros(N, dtype), 0.99, 0.95)
    assert [a.shape for a in got] == [(T, N), (T, N)]


@njit
def _vector_blocks(rewards, values, dones, last_values, g, gl, one, adv, returns, out):
    """The GAE and rewards-to-go vector blocks called alone: the columns each one did."""
    c = cpu._gae_vectors(rewards, values, dones, last_values, g, gl, adv, returns)
    return c, cpu._rtg_vectors(rewards, dones, last_values, g, one, out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_blocks_take_only_arrays_they_can_load(dtype):
    """The vector blocks' typing-time guards (``_vectors_load``, ``_row_of``): C-ordered 2-d arrays
    of one float dtype and a C-ordered 1-d last_values of that dtype get the blocks (all the columns
    that fill whole 64-byte vectors, computed as numpy does); any other layout, ndim or dtype mix
    compiles to a no-op that does no columns (the row loop then does them all). gae() never passes
    those, so only this test sees a guard that lets one through (a vector load of a strided array
    reads the wrong elements) or one that refuses every array (the blocks never run: the same
    results through the row loop, ~4x slower at (2048, 64), docs/kernels.md)."""
    T, L = 3, 64 // np.dtype(dtype).itemsize
    N = 2 * L + 3  # two vectors, then 3 columns for the other loops
    rng = np.random.default_rng(3)
    r, v, lv = (rng.normal(size=s).astype(dtype) for s in ((T, N), (T, N), (N,)))
    d = (rng.random((T, N)) < 0.3).astype(dtype)
    g, gl, one = dtype(0.9), dtype(0.9 * 0.8), dtype(1.0)

    def run(r=r, v=v, d=d, lv=lv):
        adv, ret, out = (np.full((T, N), 7.0, dtype) for _ in range(3))
        return _vector_blocks(r, v, d, lv, g, gl, one, adv, ret, out), adv, ret, out

    (c, c_rtg), adv, ret, out = run()
    assert (c, c_rtg) == (2 * L, 2 * L)
    adv_np, ret_np = advantages.gae_numpy(r, v, d, lv, 0.9, 0.8)
    np.testing.assert_array_equal(adv[:, :c], adv_np[:, :c])
    np.testing.assert_array_equal(ret[:, :c], ret_np[:, :c])
    assert (adv[:, c:] == 7.0).all() and (out[:, c:] == 7.0).all()
    other = np.float64 if dtype == np.float32 else np.float32
    refused = {
        "rewards in Fortran order": dict(r=np.asfortranarray(r)),
        "dones of another dtype": dict(d=d.astype(other)),
        "last_values 2-d": dict(lv=lv.reshape(1, N)),
        "last_values strided": dict(lv=np.repeat(lv, 2)[::2]),
        "last_values of another dtype": dict(lv=lv.astype(other)),
    }
    for what, change in refused.items():
        (c, c_rtg), adv, ret, out = run(**change)
        assert (c, c_rtg) == (0, 0), what
        assert (adv == 7.0).all() and (ret == 7.0).all() and (out == 7.0).all(), what


def test_view_at_needs_a_c_ordered_array():
    """``_view_at`` builds a C-ordered view from a pointer and an offset, which is right only for a
    C-ordered source: any other layout is refused at typing time, not viewed wrongly."""
    from numba.core.errors import TypingError

    @njit
    def first_rows(a):
        return cpu._view_at(a, 0, 2, 3).copy()

    a = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(first_rows(a), np.arange(6.0).reshape(2, 3))
    with pytest.raises(TypingError):
        first_rows(np.asfortranarray(a))
    with pytest.raises(TypingError):
        first_rows(a[:, ::2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("out_first", [True, False])
@pytest.mark.parametrize("name", ["rewards", "values", "dones", "last_values", "returns"])
@pytest.mark.parametrize("out_name", ["adv", "returns"])
def test_gae_overlap_check_is_exact_at_the_boundary(dtype, out_first, name, out_name):
    """An output (adv, or returns) laid right beside an input (or adv beside returns) in one buffer
    shares no byte with it: status 0, computed in place; moved one element onto it, it overlaps:
    status 3, nothing written. Both orders, so each of the two comparisons of the address ranges is
    tested at equality; each output against each input, as the kernel checks each pair by name."""
    if out_name == "returns" and name == "returns":
        pytest.skip("adv beside returns is the adv case")
    T, N = 4, 3
    rng = np.random.default_rng(0)
    data = {"rewards": rng.normal(size=(T, N)), "values": rng.normal(size=(T, N)),
            "dones": (rng.random((T, N)) < 0.3).astype(float), "last_values": rng.normal(size=N)}
    data = {k: a.astype(dtype) for k, a in data.items()}
    want = advantages.gae_numpy(*data.values(), 0.99, 0.95)
    cpu._gae_prepare(np.dtype(dtype))
    shape = (T, N) if name == "returns" else data[name].shape
    size = int(np.prod(shape))
    for shared, status in ((0, 0), (1, 3)):
        buf = np.full(T * N + size, np.nan, dtype)
        if out_first:
            adv, nb = buf[:T * N].reshape(T, N), buf[T * N - shared:T * N - shared + size].reshape(shape)
        else:
            nb, adv = buf[:size].reshape(shape), buf[size - shared:size - shared + T * N].reshape(T, N)
        args = {k: (nb if k == name else a.copy()) for k, a in data.items()}
        if name != "returns":
            nb[...] = data[name]
        ret = nb if name == "returns" else np.full((T, N), np.nan, dtype)
        if out_name == "returns":  # the output laid in the buffer is returns; adv is apart
            adv, ret = np.full((T, N), np.nan, dtype), adv
        before = buf.copy(), (adv if out_name == "returns" else ret).copy()
        assert cpu._gae_kernel(*args.values(), 0.99, 0.95, adv, ret) == status
        if status:
            np.testing.assert_array_equal(buf, before[0])
            np.testing.assert_array_equal(adv if out_name == "returns" else ret, before[1])
        else:
            np.testing.assert_array_equal(adv, want[0])
            np.testing.assert_array_equal(ret, want[1])


def test_gae_dtype_rule_is_the_same_on_both_backends(monkeypatch):
    """Result in rewards' dtype if float32/float64, else float64; the other inputs cast to it."""
    rng = np.random.default_rng(2)
    r = rng.integers(-3, 3, (6, 4))
    v, d, lv = rng.normal(size=(6, 4)), (rng.random((6, 4)) < 0.3), rng.normal(size=4)
    cases = [((r, v, d, lv), np.float64),  # int rewards: float64, not truncated to int
             ((r.astype(np.float16), v, d, lv), np.float64),
             ((r.astype(np.float32), v, d, lv), np.float32)]  # float64 values cast to float32
    for args, dt in cases:
        want = advantages.gae_numpy(*(np.asarray(a, dt) for a in args), 0.9, 0.8)
        for name in ("numpy", "numba"):
            monkeypatch.setenv(backend.ENV_VAR, name)
            backend.reset()
            adv, ret = advantages.compute_gae(*args, 0.9, 0.8)
            assert adv.dtype == ret.dtype == dt, (name, args[0].dtype)
            np.testing.assert_array_equal(adv, want[0])
            np.testing.assert_array_equal(ret, want[1])
            with pytest.raises(ValueError, match="out must be two"):
                other = np.float32 if dt == np.float64 else np.float64
                advantages.compute_gae(*args, 0.9, 0.8, out=(np.empty((6, 4), other), np.empty((6, 4), other)))
    backend.reset()


def test_gae_gamma_as_numpy_scalar_is_the_same_on_both_backends(monkeypatch):
    """gamma / lambda given as np.float64 (or np.float32) scalars give the bits of Python floats on
    both backends: numpy alone would otherwise compute a float32 rollout in float64 (NEP 50)."""
    r, v, d, lv = _f32_rollout(3, 40, 5, 0.2)
    want = advantages.gae_numpy(r, v, d, lv, 0.99, 0.95)
    for name in ("numpy", "numba"):
        monkeypatch.setenv(backend.ENV_VAR, name)
        backend.reset()
        for g, lam in ((np.float64(0.99), np.float64(0.95)), (np.float32(0.99), 0.95), (0.99, np.float64(0.95))):
            adv, ret = advantages.compute_gae(r, v, d, lv, g, lam)
            want_g = want if type(g) is not np.float32 else advantages.gae_numpy(r, v, d, lv, float(g), 0.95)
            np.testing.assert_array_equal(adv, want_g[0], err_msg=f"{name} {type(g).__name__}")
            np.testing.assert_array_equal(ret, want_g[1])
    backend.reset()


def test_gae_in_a_thread_while_another_dtype_compiles(tmp_path):
    """While _gae_prepare compiles one dtype it enables compiling for a moment; a gae() call for a dtype
    not yet prepared then tried to compile and raised 'compilation disabled' (3-39 of 40 threads)."""
    code = """if True:
    import threading, time
    import numpy as np
    from numba.core.compiler_lock import global_compiler_lock
    from minippo.kernels import cpu
    z = np.zeros((4, 3), np.float32)
    cpu.gae(z, z, z, z[0], 0.9, 0.9)  # float32 prepared; float64 not
    z = z.astype(np.float64)
    got = []
    with global_compiler_lock:  # as _compile_with_slp holds it, compiling enabled
        cpu._gae_kernel.disable_compile(False)
        t = threading.Thread(target=lambda: got.append(cpu.gae(z + 1, z, z, z[0], 0.9, 0.9)[0]))
        t.start()
        time.sleep(0.5)  # the thread now waits for the lock to compile float64
        cpu._gae_kernel.disable_compile(True)
    t.join()
    from minippo.advantages import gae_numpy
    print(len(got), np.array_equal(got[0], gae_numpy(z + 1, z, z, z[0], 0.9, 0.9)[0]))
"""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "1 True", r.stderr[-2000:]


def test_rewards_to_go_checks_shapes_and_gamma():
    r, lv = np.ones((8, 4), np.float32), np.zeros(4, np.float32)
    for d, lv_, gamma, msg in ((np.ones((1, 4)), lv, 0.9, "one shape"),
                               (np.ones((8, 4)), np.zeros(3), 0.9, "one shape"),
                               (np.ones((8, 4)), lv, 1.5, "gamma must be a finite number in")):
        with pytest.raises(ValueError, match=msg):
            cpu.rewards_to_go(r, d, lv_, gamma)
    with pytest.raises(ValueError, match="one shape"):
        cpu.rewards_to_go(np.ones(8), np.ones(8), lv, 0.9)
    # not arrays (an AttributeError from .ndim), or complex (cast to float, its imaginary part dropped)
    for args, name in (((r.tolist(), r, lv), "rewards"), ((r, r, lv.tolist()), "last_values")):
        with pytest.raises(TypeError, match=f"^{name} must be an array"):
            cpu.rewards_to_go(*args, 0.9)
    with pytest.raises(TypeError, match="^dones must be a real array .* got dtype complex128"):
        cpu.rewards_to_go(r, r.astype(complex), lv, 0.9)
    ints = cpu.rewards_to_go(np.ones((8, 4), np.int64), np.zeros((8, 4), bool), np.zeros(4, np.int8), 0.9)
    # 8 steps of g = 1 + 0.9 g (2 roundings of values <= 5.7 each) against the closed form (3 roundings;
    # 1 - 0.9 and 0.1 differ by 2.8e-16 relative as stored): rel 1e-13 (was approx's 1e-6; observed 3.1e-16)
    assert ints.dtype == np.float64 and ints[0, 0] == pytest.approx((1 - 0.9 ** 8) / 0.1, rel=1e-13, abs=0)


def test_fused_outputs_are_new_arrays_every_call(numba_backend):
    """PPO keeps several caches alive (acting, then every minibatch): a call never writes an array
    that an earlier call returned."""
    mlp = nn.MLP([3, 8, 2], seed=0)
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(2, 4, 3)).astype(np.float32)
    y1, cache1 = mlp.forward(x1)
    want1 = y1.copy()
    ids1 = {id(h) for h in cache1[1:]}
    del y1, cache1
    _, cache2 = mlp.forward(x2)
    _, cache3 = mlp.forward(x1)
    assert all(a is not b for a, b in zip(cache2[1:], cache3[1:], strict=True))
    np.testing.assert_array_equal(cache3[-1], want1)
    dy = np.ones((4, 2), np.float32)
    _, grads = mlp.backward(dy, cache3)
    held = grads["W1"].copy()
    _, grads2 = mlp.backward(dy * 2, cache3, need_dx=False)
    assert grads2["W1"] is not grads["W1"]
    np.testing.assert_array_equal(grads["W1"], held)
    assert len(ids1) == 2


def test_fused_entry_point_path_checks_inputs(numba_backend):
    """After the first call the forward's compiled entry point is called directly: inputs it cannot
    take (other dtype, class, shape) must still go to numpy, other strides a C-order copy (since
    session 64; numpy's path before), and read-only inputs still work. The backward goes through
    numba's dispatcher: any layout of dy and the cache gives the same result; another dtype or shape
    (checked by the kernel) or a cache numba cannot type (the dispatcher raises; Python checks dtypes
    and ndims from then on) goes to numpy."""
    mlp = nn.MLP([4, 6, 2], seed=0)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 4)).astype(np.float32)
    y0, cache0 = mlp.forward(x)
    st = mlp.__dict__["_numba_state"]
    assert type(st.fwd).__name__ == "builtin_function_or_method"  # the compiled entry point
    ro = x.copy()
    ro.flags.writeable = False
    np.testing.assert_array_equal(mlp.forward(ro)[0], y0)
    assert cpu.mlp_forward(mlp, x.astype(np.float64)) is None
    for other in (np.asfortranarray(x), np.concatenate([x, x], axis=1)[:, :4]):  # other strides: copied
        cache = cpu.mlp_forward(mlp, other)
        assert cache[-1].tobytes() == y0.tobytes() and cache[0].flags.c_contiguous and cache[0] is not other
    assert cpu.mlp_forward(mlp, np.ones((0, 4), np.float32)) is None
    assert cpu.mlp_forward(mlp, np.ones((cpu.max_batch(mlp.sizes) + 1, 4), np.float32)) is None
    assert cpu.mlp_forward(mlp, np.ones((2, 4), np.float32).view(np.recarray)) is None
    dy = np.ones((3, 2), np.float32)
    dx, grads = mlp.backward(dy, cache0)
    assert cpu.mlp_backward(mlp, dy, [cache0[0], cache0[1].astype(np.float64), cache0[2]]) is None
    assert cpu.mlp_backward(mlp, dy, [cache0[0], cache0[1].astype(np.float16), cache0[2]]) is None
    for d in (dy[:, :, None], dy[:, 0], dy[None]):  # dy of another ndim: refused in Python too
        assert cpu.mlp_backward(mlp, d, cache0) is None, d.shape
    assert not st.strict  # another dtype or ndim is refused in Python, before the dispatcher
    fresh = nn.MLP([4, 6, 2], seed=0)
    _, cache_f = fresh.forward(x)
    assert cpu.mlp_backward(fresh, dy, [cache_f[0], cache_f[1].ravel(), cache_f[2]]) is None  # 1-d
    assert fresh.__dict__["_numba_state"].strict
    assert cpu.mlp_backward(fresh, dy, cache_f) is not None  # good caches stay fused
    assert cpu.mlp_backward(mlp, dy.astype(np.float64), cache0) is None
    assert cpu.mlp_backward(mlp, dy, cache0[:2]) is None
    assert cpu.mlp_backward(mlp, dy, [*cache0, cache0[-1]]) is None  # one entry too many
    assert cpu.mlp_backward(mlp, np.ones((3, 3), np.float32), cache0) is None
    assert cpu.mlp_backward(mlp, dy[:2], cache0) is None
    assert cpu.mlp_backward(mlp, np.ones((0, 2), np.float32), [c[:0] for c in cache0]) is None
    assert cpu.mlp_backward(mlp, dy, [cache0[0], cache0[1][:, :5], cache0[2]]) is None  # width
    assert cpu.mlp_backward(mlp, dy, [cache0[0][:2], cache0[1], cache0[2]]) is None  # batch
    assert cpu.mlp_backward(mlp, dy, [cache0[0], cache0[1].ravel(), cache0[2]]) is None  # ndim
    f_dx, f_grads = cpu.mlp_backward(mlp, np.asfortranarray(dy), [cache0[0], np.asfortranarray(cache0[1]),
                                                                    cache0[2][::-1][::-1]])
    np.testing.assert_array_equal(f_dx, dx)
    for k in grads:
        np.testing.assert_array_equal(f_grads[k], grads[k])
    dx_ref, grads_ref = ref.mlp_backward(mlp.params, dy, ref.mlp_forward(mlp.params, x, "tanh", False)[1],
                                         "tanh", False)
    np.testing.assert_allclose(dx, dx_ref, **MLP_TOL[np.float32])
    for k in grads:
        np.testing.assert_allclose(grads[k], grads_ref[k], **MLP_TOL[np.float32])
    assert [g.shape for g in grads.values()] == [p.shape for p in mlp.params.values()]
    assert all(g.flags.c_contiguous for g in grads.values())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_layers", [1, 2, 3, 4])
def test_backward_refuses_a_misshapen_output_when_the_output_is_activated(dtype, n_layers):
    """With activate_output the backward reads h_L (the act's derivative) in loops over dy's shape:
    a cache whose h_L is narrower or shorter must make it fall back, not read out of bounds."""
    mlp = nn.MLP([4] + [6] * (n_layers - 1) + [3], seed=0, activate_output=True, dtype=dtype)
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(dtype)
    cache = cpu.mlp_forward(mlp, x)
    dy = np.ones((3, 3), dtype)
    assert cpu.mlp_backward(mlp, dy, cache) is not None
    h = cache[-1]
    for bad in (h[:, :1], np.ascontiguousarray(h[:, :1]), h[:2]):
        assert cpu.mlp_backward(mlp, dy, [*cache[:-1], bad]) is None, bad.shape


def test_rebinding_a_parameter_is_seen_and_leaves_the_fused_path(numba_backend):
    """The kernels read ``mlp.flat``; ``Params`` counts rebinding writes, so a parameter rebound to an
    array outside ``flat`` (or a new dict) is used, through numpy; in-place writes stay fused."""
    mlp = nn.MLP([4, 8, 3], seed=0)
    x = np.random.default_rng(2).normal(size=(2, 4)).astype(np.float32)
    mlp.forward(x)
    st = mlp.__dict__["_numba_state"]
    mlp.params["W1"] *= 2.0  # in place (rebinds W1 to itself): the same state, the new values
    mlp.params["b1"][:] = 0.25
    expected = ref.mlp_forward(mlp.params, x, "tanh", False)[0]
    np.testing.assert_allclose(mlp.forward(x)[0], expected, **MLP_TOL[np.float32])
    assert mlp.__dict__["_numba_state"] is st
    version = mlp.params.version
    for rebind in (lambda p: p.__setitem__("W1", p["W1"] + 1), lambda p: p.update(b1=p["b1"] - 1),
                   lambda p: p.setdefault("W0", p["W0"]), lambda p: p.__ior__({"b0": p["b0"] + 0.5})):
        rebind(mlp.params)
        assert mlp.params.version > version
        version = mlp.params.version
        y, cache = mlp.forward(x)
        assert cpu._state(mlp).P is None  # W1 is no longer in flat: numpy
        np.testing.assert_allclose(y, ref.mlp_forward(mlp.params, x, "tanh", False)[0], **MLP_TOL[np.float32])
    assert cpu.mlp_forward(mlp, x) is None and cpu.mlp_backward(mlp, np.ones((2, 3), np.float32), cache) is None
    fresh = nn.MLP([4, 8, 3], seed=0)
    fresh.params = dict(fresh.params)  # a plain dict (ActorCritic.to on a GPU gives new arrays too)
    assert cpu.mlp_forward(fresh, x) is None
    again = nn.MLP([4, 8, 3], seed=0)
    again.params["W0"] = again.params["W0"]  # rebound to the same view: still packed, still fused
    assert cpu.mlp_forward(again, x) is not None


def test_other_views_of_the_parameter_memory_leave_the_fused_path(numba_backend):
    """The kernels read ``flat`` only while every parameter is the very view ``nn.MLP`` made: a
    parameter rebound to another view of the same memory (another shape, dtype or array class) and a
    ``flat`` that is missing or not 1-d are not packed, and the numpy path uses the parameters as
    they are. A new ``Params`` dict whose version happens to equal the old one's still rebuilds the
    dispatch state (identity is checked too), whether a forward or a backward meets it first; so do a
    rebinding in the same dict met by a backward, and a backward on an MLP that never ran forward."""

    class Sub(np.ndarray):
        pass

    def doubled(params):  # as many rebinding writes as the MLP made: the same version
        new = nn.Params()
        for k, a in params.items():
            new[k] = a * 2
        assert new.version == params.version
        return new

    x = np.random.default_rng(4).normal(size=(2, 4)).astype(np.float32)
    rebinds = {
        "W0 flattened": lambda p: p.__setitem__("W0", p["W0"].reshape(-1)),
        "W0 as int32": lambda p: p.__setitem__("W0", p["W0"].view(np.int32)),
        "W0 as a subclass": lambda p: p.__setitem__("W0", p["W0"].view(Sub)),
    }
    for name, rebind in rebinds.items():
        mlp = nn.MLP([4, 8, 3], seed=0)
        mlp.forward(x)
        rebind(mlp.params)
        assert cpu._packed(mlp) is None and cpu.mlp_forward(mlp, x) is None, name
    mlp = nn.MLP([4, 8, 3], seed=0)
    mlp.params["W0"] = mlp.params["W0"].view(Sub)
    np.testing.assert_allclose(mlp.forward(x)[0], ref.mlp_forward(mlp.params, x, "tanh", False)[0],
                               **MLP_TOL[np.float32])
    for name, change in {"no flat": lambda m: delattr(m, "flat"),
                         "a 2-d flat": lambda m: setattr(m, "flat", m.flat.reshape(1, -1))}.items():
        mlp = nn.MLP([4, 8, 3], seed=0)
        change(mlp)
        assert cpu._packed(mlp) is None and cpu.mlp_forward(mlp, x) is None, name
    mlp = nn.MLP([4, 8, 3], seed=0)
    mlp.forward(x)
    new = doubled(mlp.params)
    mlp.params = new  # (forward first: _state() would rebuild the state for it)
    y, cache = mlp.forward(x)
    np.testing.assert_allclose(y, ref.mlp_forward(new, x, "tanh", False)[0], **MLP_TOL[np.float32])
    assert mlp.__dict__["_numba_state"].params is new and mlp.__dict__["_numba_state"].P is None
    mlp2 = nn.MLP([4, 8, 3], seed=0)
    y2, cache2 = mlp2.forward(x)
    new2 = doubled(mlp2.params)
    mlp2.params = new2  # the backward first this time
    _, grads = mlp2.backward(np.ones_like(y2), cache2)
    _, want = ref.mlp_backward(new2, np.ones_like(y2), cache2, "tanh", False)
    for k in new2:
        np.testing.assert_allclose(grads[k], want[k], **MLP_TOL[np.float32])
    assert mlp2.__dict__["_numba_state"].params is new2 and mlp2.__dict__["_numba_state"].P is None
    mlp3 = nn.MLP([4, 8, 3], seed=0)
    y3, cache3 = mlp3.forward(x)
    mlp3.params["W1"] = mlp3.params["W1"] * 2  # rebound in the same dict, then the backward first
    _, grads = mlp3.backward(np.ones_like(y3), cache3)
    _, want = ref.mlp_backward(mlp3.params, np.ones_like(y3), cache3, "tanh", False)
    for k in want:
        np.testing.assert_allclose(grads[k], want[k], **MLP_TOL[np.float32])
    twin = nn.MLP([4, 8, 3], seed=0)  # a backward before any forward of its own (a twin's cache)
    _, grads = twin.backward(np.ones_like(y2), cache2)
    assert twin.__dict__["_numba_state"].P is twin.flat  # fused
    _, want = ref.mlp_backward(twin.params, np.ones_like(y2), cache2, "tanh", False)
    for k in want:
        np.testing.assert_allclose(grads[k], want[k], **MLP_TOL[np.float32])


def test_mlp_copies_and_pickles_after_a_fused_call(numba_backend):
    """The dispatch state (compiled code) is left out of copies; a copy gives the same outputs and
    keeps its ``Params`` (with a version) and, inside a copied policy, the links to its arrays."""
    import copy
    import pickle

    from minippo.policy import ActorCritic
    from minippo.spaces import Discrete

    mlp = nn.MLP([4, 8, 2], seed=0)
    x = np.random.default_rng(3).normal(size=(2, 4)).astype(np.float32)
    y, _ = mlp.forward(x)
    for twin in (copy.deepcopy(mlp), pickle.loads(pickle.dumps(mlp))):
        assert type(twin.params) is nn.Params and twin.params.version == 0
        np.testing.assert_allclose(twin.forward(x)[0], y, **MLP_TOL[np.float32])
    pol = ActorCritic(4, Discrete(2), (8, 8), seed=0)
    pol.actor.forward(x)
    twin = copy.deepcopy(pol)
    assert twin.params["actor.W0"] is twin.actor.params["W0"]


def test_a_deep_copy_keeps_the_fused_path_and_the_links(numba_backend):
    """copy.deepcopy makes the parameters views of the copy's own flat buffer again (numpy's deepcopy
    copied each view alone, so a copied MLP or policy ran the numpy path), shared with the copied
    ActorCritic.params and Adam; when Adam is copied first its arrays are kept (links over layout)."""
    import copy

    from minippo.optim import Adam
    from minippo.policy import ActorCritic
    from minippo.spaces import Discrete

    x = np.random.default_rng(3).normal(size=(2, 4)).astype(np.float32)
    mlp = nn.MLP([4, 8, 2], seed=0)
    y, _ = mlp.forward(x)
    twin = copy.deepcopy(mlp)
    assert twin.flat is not mlp.flat and cpu._packed(twin) is twin.flat
    cache = cpu.mlp_forward(twin, x)
    assert cache is not None  # the fused kernel took it
    np.testing.assert_array_equal(cache[-1], y)
    twin.params["W0"][0, 0] += 1.0  # the copy's own memory
    # (+ a float32 one: numpy 1.x took float32 + a Python float to float64, a sum the float32 entry is not)
    assert twin.flat[0] == mlp.flat[0] + np.float32(1.0) and mlp.params["W0"][0, 0] == mlp.flat[0]

    pol = ActorCritic(4, Discrete(2), (8, 8), seed=0)
    opt = Adam(pol.params, lr=0.1)
    pol2, opt2 = copy.deepcopy((pol, opt))  # the policy's MLPs first: the views go to Adam too
    for net in (pol2.actor, pol2.critic):
        assert cpu._packed(net) is net.flat
    for k, a in pol2.params.items():
        assert opt2.params[k] is a
    assert pol2.params["actor.W0"] is pol2.actor.params["W0"] and not np.shares_memory(pol2.actor.flat, pol.actor.flat)
    opt3, pol3 = copy.deepcopy((opt, pol))  # Adam first: its separate copies stay the parameters
    for k, a in pol3.params.items():
        assert opt3.params[k] is a
    assert pol3.actor.params["W0"] is pol3.params["actor.W0"] and cpu._packed(pol3.actor) is None
    np.testing.assert_allclose(pol3.actor.forward(x)[0], pol.actor.forward(x)[0], **MLP_TOL[np.float32])  # numpy path


def test_float16_mlp_falls_back_to_numpy(numba_backend):
    mlp = nn.MLP([3, 8, 2], seed=0, dtype=np.float16)
    x = np.ones((4, 3), np.float16)
    y, cache = mlp.forward(x)  # no fused kernel for float16: the numpy path, no compile error
    dx, grads = mlp.backward(np.ones_like(y), cache)
    assert y.dtype == np.float16 and grads["W0"].dtype == np.float16


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_other_dtypes_and_unpacked_nets_return_none_from_the_fused_mlp(numba_backend, dtype):
    """``mlp_forward`` views an x whose dtype is an equal object of its own as the native dtype, and
    ``mlp_backward`` such a dy; an x or dy of another dtype (an integer of the same itemsize, the float
    byte-swapped) must return None, not be reinterpreted, and MLP.forward or backward then casts it.
    An MLP whose parameters are not packed (state dtype None) returns None on both sides, for a
    float64 dy too (numpy's dtype(float64) equals None)."""
    rng = np.random.default_rng(4)
    mlp = nn.MLP([4, 6, 2], seed=0, dtype=dtype)
    x = rng.integers(-3, 4, size=(3, 4)).astype(dtype)
    y, cache = mlp.forward(x)  # fused (the cache's arrays are new on every call)
    same_size_int = np.int32 if dtype is np.float32 else np.int64
    for other in (x.astype(same_size_int), x.astype(np.dtype(dtype).newbyteorder(">")), x.astype(bool)):
        assert cpu.mlp_forward(mlp, other) is None, other.dtype
        y_other, _ = mlp.forward(other)  # cast to dtype, then fused
        want = y if other.dtype.kind != "b" else mlp.forward(other.astype(dtype))[0]
        assert y_other.dtype == np.dtype(dtype) and y_other.tobytes() == want.tobytes(), other.dtype
    dy = rng.integers(-3, 4, size=(3, 2)).astype(dtype)
    dx, grads = mlp.backward(dy, cache)  # fused
    for other in (dy.astype(same_size_int), dy.astype(np.dtype(dtype).newbyteorder(">"))):  # the same for dy
        assert cpu.mlp_backward(mlp, other, cache) is None, other.dtype
        dx_other, grads_other = mlp.backward(other, cache)  # cast to dtype, then fused
        assert dx_other.tobytes() == dx.tobytes(), other.dtype
        assert all(grads_other[k].tobytes() == grads[k].tobytes() for k in grads), other.dtype
    mlp.params["W1"] = mlp.params["W1"].copy()  # rebound outside flat: not packed, numpy
    assert cpu._state(mlp).dt is None
    assert cpu.mlp_forward(mlp, x) is None
    _, cache = mlp.forward(x)  # numpy's path
    for d in (dy, dy.astype(np.float64), dy.astype(np.float32)):
        assert cpu.mlp_backward(mlp, d, cache) is None, d.dtype
    dx, grads = mlp.backward(dy, cache)
    dx_ref, grads_ref = ref.mlp_backward(mlp.params, dy, ref.mlp_forward(mlp.params, x, "tanh", False)[1],
                                         "tanh", False)
    np.testing.assert_allclose(dx, dx_ref, **MLP_TOL[dtype])
    for k in grads_ref:
        np.testing.assert_allclose(grads[k], grads_ref[k], **MLP_TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_gae_refuses_a_bool_gamma_or_lam_once_the_kernel_is_ready(dtype):
    """numba's dispatcher would take a bool as 1.0 or 0.0 for the kernel's float64 gamma and lambda,
    both in range: cpu.gae sends a bool to the slow path, whose checks refuse it, also once the kernel
    is compiled (cpu.gae's fast path opens only then)."""
    z = np.zeros((3, 2), dtype)
    args = (z + 1, z, z, np.zeros(2, dtype))
    cpu.gae(*args, 0.9, 0.9)  # prepares the kernel for dtype
    assert np.dtype(dtype) in cpu._GAE_READY
    for gamma, lam, name in ((True, 0.9, "gamma"), (np.True_, 0.9, "gamma"), (0.9, False, "lam"),
                             (0.9, np.False_, "lam"), (True, True, "gamma")):
        with pytest.raises(TypeError, match=f"{name} must be a finite number in"):
            cpu.gae(*args, gamma, lam)


def _wb_views(P, o, K, F):
    """Copies of the views ``cpu._wb`` makes (the views themselves are untracked: they must not
    leave the compiled call that holds P)."""
    W, b, n = cpu._wb(P, o, K, F)
    return W.copy(), b.copy(), n


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_untracked_layer_views_are_the_reshaped_slices_and_check_bounds(dtype):
    """``_wb`` builds W and b with ``_view_at`` (no reshape helper, no reference counting): the same
    elements as slicing and reshaping, and a layer that does not fit in P raises instead of reading
    past it."""
    from numba import njit

    views = njit(_wb_views)
    P = np.arange(40, dtype=dtype)
    for o, K, F in ((0, 3, 4), (5, 2, 7), (0, 1, 1), (28, 3, 3), (7, 0, 2), (7, 2, 0)):  # (28, 3, 3) fills P
        W, b, n = views(P, o, K, F)
        np.testing.assert_array_equal(W, P[o:o + K * F].reshape(K, F))
        np.testing.assert_array_equal(b, P[o + K * F:o + K * F + F])
        assert n == o + K * F + F and W.dtype == b.dtype == dtype
    # each bound alone: a negative offset, K or F (which n + F > P.size would not catch), and past P
    for o, K, F in ((30, 3, 4), (-1, 2, 2), (0, -1, 2), (0, 2, -1), (0, 40, 1)):
        with pytest.raises(IndexError, match="parameter buffer"):
            views(P, o, K, F)


# ---------------------------------------------------------------- register tiles (kernels/simd.py)
@st.composite
def matmuls(draw):
    """Shapes that hit the tiles (rows in 4s, columns in whole vectors) and every remainder around
    them, in both dtypes, with A (and D) C-ordered or strided (strided ones skip the tiles). In
    _mm_tn, out's K % 4 leftover rows go through the single-row tiles (_tile_rows)."""
    dim = st.one_of(st.integers(1, 9), st.sampled_from([15, 16, 17, 31, 32, 33, 48, 64, 65]))
    M, K, F = draw(dim), draw(dim), draw(dim)
    return M, K, F, draw(st.sampled_from([np.float32, np.float64])), draw(st.booleans()), draw(
        st.integers(0, 2**32 - 1))


def _maybe_strided(a, strided):
    """a itself, or a copy of it as a view with a column stride of 2 (not C-ordered)."""
    if not strided:
        return a
    wide = np.zeros((a.shape[0], 2 * a.shape[1]), a.dtype)
    wide[:, ::2] = a
    return wide[:, ::2]


@settings(SLOW)
@given(matmuls())
@example((8, 64, 64, np.float32, False, 0))  # the 64 x 64 layer at batch 8: 4-vector tiles only
@example((4, 9, 48, np.float32, False, 1))  # a 2-vector and a 1-vector tile
@example((7, 33, 41, np.float64, False, 2))  # 4- and 1-vector tiles, leftover rows, k and a column
@example((8, 2, 64, np.float32, False, 3))  # a 64 -> 2 head's dW^T in _mm_tn: two single-row tiles
@example((5, 17, 40, np.float64, False, 4))  # dW's 17th row: a single-row tile, then 0 columns left
def test_matmul_tiles_match_reference(case):
    M, K, F, dtype, strided, seed = case
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(M, K)).astype(dtype)
    W = rng.normal(size=(K, F)).astype(dtype)
    out0 = rng.normal(size=(M, F)).astype(dtype)
    out = out0.copy()
    cpu._mm_acc(_maybe_strided(A, strided), W, out)  # out += A W
    expect = out0.astype(np.float64) + ref.linear_forward(A.astype(np.float64), W.astype(np.float64), np.zeros(F))
    assert_mlp_close(out, expect, dtype)

    D = rng.normal(size=(M, F)).astype(dtype)
    dW = np.full((K, F), np.nan, dtype)  # every entry must be written
    cpu._mm_tn(A, _maybe_strided(D, strided), dW)  # dW = A^T D
    _, dW_ref, _ = ref.linear_backward(D.astype(np.float64), A.astype(np.float64), W.astype(np.float64))
    assert_mlp_close(dW, dW_ref, dtype)


@pytest.mark.parametrize("flip", ["A", "W", "out"])
def test_matmul_blocks_take_arrays_of_two_dtypes(flip):
    """The building blocks of the fused kernels with one array in float64 and the rest in float32
    (the MLP never passes such arrays, but nothing stops a caller of the blocks): the vector paths
    compile to a no-op for them, so the dispatch must take the scalar loops, not leave out
    unwritten (it did, before session 37, where it took the smaller of the two lane counts). Also
    with W and out both strided, where neither has vector lanes."""
    rng = np.random.default_rng(7)
    B, K, F = 8, 64, 64
    arrays = {"A": rng.normal(size=(B, K)), "W": rng.normal(size=(K, F)), "out": np.zeros((B, F))}
    A, W, out = (v if name == flip else v.astype(np.float32) for name, v in arrays.items())
    A64, W64 = A.astype(np.float64), W.astype(np.float64)
    cpu._mm_acc(A, W, out)
    assert_mlp_close(out, A64 @ W64, np.float32)
    D = rng.normal(size=(B, F)).astype(W.dtype)  # dW = A^T D: D in W's dtype, dW in out's
    dW = np.full((K, F), np.nan, out.dtype)
    cpu._mm_tn(A, D, dW)
    assert_mlp_close(dW, A64.T @ D.astype(np.float64), np.float32)
    if flip == "out":  # and with both W (D) and out strided: no vectors load either
        out2, dW2 = _maybe_strided(np.zeros((B, F)), True), _maybe_strided(np.full((K, F), np.nan), True)
        cpu._mm_acc(A64, _maybe_strided(W64, True), out2)
        cpu._mm_tn(A64, _maybe_strided(D.astype(np.float64), True), dW2)
        assert_mlp_close(out2, A64 @ W64, np.float64)
        assert_mlp_close(dW2, A64.T @ D.astype(np.float64), np.float64)
    x, Wh = rng.normal(size=(B, 64)).astype(A.dtype), rng.normal(size=(64, 2)).astype(W.dtype)
    head = np.full((B, 2), np.nan, out.dtype)  # a 64 -> 2 head: _dense_narrow (_dot_pairs or _dots)
    cpu._dense_narrow(x, Wh, np.zeros(2, out.dtype), head)
    assert_mlp_close(head, x.astype(np.float64) @ Wh.astype(np.float64), np.float32)
    # dx = d W^T in _dense_back, d in A's dtype, W in W's, dx in out's: K = 8 inputs at batch 1
    # (_dot_pairs) and 8 (_mm_acc), and K = 32 at batch 4 (_dx_fold's blocks)
    for Bd, K2 in ((1, 8), (8, 8), (4, 32)):
        d, W2 = rng.normal(size=(Bd, 64)).astype(A.dtype), rng.normal(size=(K2, 64)).astype(W.dtype)
        dx = np.full((Bd, K2), np.nan, out.dtype)
        cpu._dense_back(d, np.ones((Bd, K2), A.dtype), W2, np.empty((K2, 64), W2.dtype), np.empty(64, W2.dtype),
                        dx, True)
        assert_mlp_close(dx, d.astype(np.float64) @ W2.astype(np.float64).T, np.float32)


_TILES_WIDE, _TILES_NARROW = njit(cpu._make_tiles_impl(True)), njit(cpu._make_tiles_impl(False))


@pytest.mark.parametrize("M, K, F, dtype", [(8, 64, 64, np.float32), (4, 17, 64, np.float64),
                                            (12, 5, 112, np.float32), (8, 64, 40, np.float64)])
@pytest.mark.parametrize("acc", [True, False])
def test_tile_width_does_not_change_results(M, K, F, dtype, acc):
    """_tiles takes only 1-vector tiles where a 64-byte vector is several registers (AVX2, SSE,
    NEON: simd.native_vector_bytes() < 64): each output is the same chain of FMAs over k, so the
    result is bit for bit that of the 4-, 2- and 1-vector tiles."""
    rng = np.random.default_rng(M * K + F)
    A, W = rng.normal(size=(M, K)).astype(dtype), rng.normal(size=(K, F)).astype(dtype)
    F1 = F - F % (64 // np.dtype(dtype).itemsize)
    out0 = rng.normal(size=(M, F)).astype(dtype)
    wide, narrow = out0.copy(), out0.copy()
    _TILES_WIDE(A, W, wide, M, F1, acc)
    _TILES_NARROW(A, W, narrow, M, F1, acc)
    np.testing.assert_array_equal(wide, narrow)
    np.testing.assert_array_equal(wide[:, F1:], out0[:, F1:])  # the tiles leave the last F % L columns


_TARGET_PROBE = """
from numba import float32, njit
from numba.core import config
from minippo.kernels import simd

@njit
def fma_rows(a, w, out):
    out_v = simd.vfma(simd.vload(a, 0, 0), simd.vload(w, 0, 0), simd.vload(out, 0, 0))
    simd.vstore(out, 0, 0, out_v)

fma_rows.compile((float32[:, ::1],) * 3)  # compiled only: the host may lack the target's instructions
asm = fma_rows.inspect_asm(fma_rows.signatures[0])
print(config.CPU_NAME, simd.native_vector_bytes(), "fmaf" in asm, "vfmadd" in asm)
"""


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 CPU names")
@pytest.mark.parametrize("cpu, width, fused", [("x86-64", 16, False), ("haswell", 32, True),
                                               ("skylake-avx512", 64, True)])
def test_other_cpu_targets(cpu, width, fused, tmp_path):
    """Compiled for another x86 CPU (both NUMBA_CPU_NAME and an empty NUMBA_CPU_FEATURES: the named
    CPU's own features): native_vector_bytes() reads that target's widest register, and vfma is one
    FMA instruction where the CPU has FMA and a multiply and an add where it has none, never a call
    to libm fmaf per lane (which made the fused MLP 3-7x slower than numpy on SSE-only targets)."""
    env = {**os.environ, "NUMBA_CPU_NAME": cpu, "NUMBA_CPU_FEATURES": "", "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", _TARGET_PROBE], capture_output=True, text=True, timeout=120,
                         env=env)
    assert out.returncode == 0, out.stderr
    name, w, calls_fmaf, has_fma = out.stdout.split()
    assert (name, int(w), calls_fmaf, has_fma) == (cpu, width, "False", str(fused))


@njit
def _dx_fold_call(d, W, dx):
    cpu._dx_fold(d, W, dx)


@settings(SLOW)
@given(st.integers(1, 33), st.one_of(st.integers(1, 9), st.sampled_from([15, 16, 17, 32, 33, 48, 64, 65])),
       st.integers(1, 4), st.sampled_from([np.float32, np.float64]), st.integers(0, 2**32 - 1))
@example(8, 64, 4, np.float32, 0)  # the 64 x 64 hidden layer at batch 8
@example(1, 17, 1, np.float64, 1)  # one block of 16 and one scalar dot product
def test_dx_fold_matches_reference(B, K, m, dtype, seed):
    """dx = d W^T through the shuffle tree, F = m whole vectors: K from 1 (only the scalar tail) to
    65 (four blocks of 16 and a tail), and the same through _dense_back's dispatch."""
    F = m * 64 // np.dtype(dtype).itemsize
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(B, F)).astype(dtype)
    W = rng.normal(size=(K, F)).astype(dtype)
    dx = np.full((B, K), np.nan, dtype)  # every entry must be written
    _dx_fold_call(d, W, dx)
    d64, W64 = d.astype(np.float64), W.astype(np.float64)
    dx_ref, _, _ = ref.linear_backward(d64, np.zeros((B, K)), W64)
    assert_mlp_close(dx, dx_ref, dtype)
    dx2, dW, db = np.full((B, K), np.nan, dtype), np.empty((K, F), dtype), np.empty(F, dtype)
    cpu._dense_back(d, np.ones((B, K), dtype), W, dW, db, dx2, True)
    assert_mlp_close(dx2, dx_ref, dtype)


def _same_bits_in_every_block(impls: dict, a: np.ndarray, b: np.ndarray, shape: tuple) -> dict:
    """Run each block size's kernel impls[n](a, b, out) into a NaN-filled out with 64 guard entries
    after it: every entry must be written, nothing past them, and every block give the same bits."""
    out = {}
    for n, impl in impls.items():
        buf = np.full(shape[0] * shape[1] + 64, np.nan, a.dtype)
        out[n] = buf[:shape[0] * shape[1]].reshape(shape)
        impl(a, b, out[n])
        assert np.isnan(buf[out[n].size:]).all(), f"blocks of {n} wrote past the output"
        np.testing.assert_array_equal(out[n], out[16], err_msg=f"blocks of {n} against 16")
    return out


_DX_FOLDS = {n: njit(cpu._make_dx_fold_impl(n)) for n in (16, 8, 4)}


@settings(SLOW)
@given(st.integers(1, 12), st.one_of(st.integers(1, 9), st.sampled_from([15, 16, 17, 31, 33, 64, 65])),
       st.integers(1, 3), st.sampled_from([np.float32, np.float64]), st.integers(0, 2**32 - 1))
@example(8, 64, 4, np.float32, 0)
@example(3, 17, 1, np.float64, 1)
def test_dx_fold_block_does_not_change_results(B, K, m, dtype, seed):
    """_dx_fold takes 16 of W's rows per block with 64-byte registers; on narrower ones (AVX2, SSE,
    NEON), where 16 accumulators spill, 8 in float32 and 4 in float64. Each dot product is the same
    chain of FMAs and the same tree of lane sums in every block, so all three give the same bits
    (and each matches the reference), whichever one this CPU compiles."""
    F = m * 64 // np.dtype(dtype).itemsize
    rng = np.random.default_rng(seed)
    d, W = rng.normal(size=(B, F)).astype(dtype), rng.normal(size=(K, F)).astype(dtype)
    out = _same_bits_in_every_block(_DX_FOLDS, d, W, (B, K))
    dx_ref, _, _ = ref.linear_backward(d.astype(np.float64), np.zeros((B, K)), W.astype(np.float64))
    assert_mlp_close(out[16], dx_ref, dtype)


@pytest.mark.parametrize("native", [64, 32, 16])
def test_register_blocks_follow_the_native_vector_width(native, monkeypatch):
    """The register tiles, _dx_fold and _dot_pairs compile their wide blocks (16 accumulators) only
    where a 64-byte vector is one register, and the narrow ones (measured faster there: the
    docstrings of _make_tiles_impl, _dx_fold_overload and _dot_pairs8_impl) below that: the choice
    each overload makes at typing time, for AVX-512 (64), AVX2 (32) and SSE / NEON (16) widths.
    Every block gives the same bits (tested above), so only this test sees a wrong choice."""
    from numba import types

    monkeypatch.setattr(cpu, "native_vector_bytes", lambda: native)
    wide = native >= 64
    for dt, narrow_block in ((types.float32, 8), (types.float64, 4)):
        a = types.Array(dt, 2, "C")
        assert cpu._tiles_overload(a, a, a, types.intp, types.intp, types.boolean) is cpu._make_tiles_impl(wide)
        assert cpu._dx_fold_overload(a, a, a) is cpu._make_dx_fold_impl(16 if wide else narrow_block)
        assert cpu._dot_pairs_overload(a, a, a) is (cpu._dot_pairs_impl if wide else cpu._dot_pairs8_impl)


_PAIRS = {16: njit(cpu._dot_pairs_impl), 8: njit(cpu._dot_pairs8_impl)}


@settings(SLOW)
@given(st.integers(1, 20), st.integers(1, 9), st.sampled_from([16, 17, 31, 32, 64, 65]),
       st.sampled_from([np.float32, np.float64]), st.integers(0, 2**32 - 1))
@example(8, 2, 64, np.float32, 0)  # a policy head at batch 8: one block of 16, two of 8
@example(3, 5, 17, np.float64, 1)  # blocks, a tail of single dot products, leftover terms
@example(3, 4, 31, np.float32, 0)  # 15 leftover terms: their sum is added last in the tail too
def test_dot_pairs_block_does_not_change_results(B, F, K, dtype, seed):
    """_dot_pairs in blocks of 8 (narrower registers than 64 bytes) gives the bits of the blocks of
    16 (NaNs aside, whose sign bit may differ): the same FMA chain and lane-sum tree per dot
    product, the same leftover terms."""
    rng = np.random.default_rng(seed)
    x, V = rng.normal(size=(B, K)).astype(dtype), rng.normal(size=(F, K)).astype(dtype)
    out = _same_bits_in_every_block(_PAIRS, x, V, (B, F))
    assert_mlp_close(out[16], x.astype(np.float64) @ V.astype(np.float64).T, dtype)


@njit
def _col_sums_call(d, out):
    cpu._col_sums(d, out)


@settings(SLOW)
@given(st.integers(1, 33), st.one_of(st.integers(1, 9), st.sampled_from([15, 16, 17, 31, 64, 65, 72, 80])),
       st.sampled_from([np.float32, np.float64]), st.booleans(), st.integers(0, 2**32 - 1))
@example(8, 64, np.float32, False, 0)  # a hidden layer's db at batch 8: one block of 4 vectors
@example(5, 72, np.float32, False, 1)  # a block of 4 vectors, a single vector, 8 columns by the loop
@example(3, 17, np.float64, True, 2)  # d strided: the loop alone
def test_col_sums_is_the_row_by_row_sum(B, F, dtype, strided, seed):
    """The bias gradient sum_B d: bit for bit the sum of d's rows added in order (vectors or loop),
    and equal to the reference's db; also through _dense_back."""
    rng = np.random.default_rng(seed)
    d = _maybe_strided(rng.normal(size=(B, F)).astype(dtype), strided)
    out = np.full(F, np.nan, dtype)  # every entry must be written
    _col_sums_call(d, out)
    expect = d[0].copy()
    for q in range(1, B):
        expect += d[q]
    np.testing.assert_array_equal(out, expect)
    _, _, db_ref = ref.linear_backward(d.astype(np.float64), np.zeros((B, 1)), np.zeros((1, F)))
    assert_mlp_close(out, db_ref, dtype)
    db = np.full(F, np.nan, dtype)
    cpu._dense_back(np.ascontiguousarray(d), np.ones((B, 1), dtype), np.ones((1, F), dtype),
                    np.empty((1, F), dtype), db, np.empty((B, 1), dtype), False)
    np.testing.assert_array_equal(db, expect)


@njit
def _dot_pairs_call(x, V, out):
    cpu._dot_pairs(x, V, out)


@settings(SLOW)
@given(st.integers(1, 17), st.one_of(st.integers(1, 9), st.sampled_from([16, 17, 32, 40, 64, 65])),
       st.integers(1, 19), st.sampled_from([np.float32, np.float64]), st.integers(0, 2**32 - 1))
@example(8, 64, 2, np.float32, 0)  # a 64 -> 2 head at batch 8: one block of 16 pairs
@example(8, 64, 6, np.float64, 1)  # 64 -> 6: three blocks, rows split across them
@example(3, 40, 7, np.float32, 2)  # a K % L tail on each block, and 5 scalar pairs after
def test_dot_pairs_matches_reference(B, K, F, dtype, seed):
    """out = x V^T as blocks of 16 dot products in out's order (pairs across rows), against the
    reference; and through _dense_narrow (a head) and _dense_back (dx of a layer with few inputs)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, K)).astype(dtype)
    V = rng.normal(size=(F, K)).astype(dtype)
    out = np.full((B, F), np.nan, dtype)  # every entry must be written
    _dot_pairs_call(x, V, out)
    W = np.ascontiguousarray(V.T)  # (K, F): out = x W
    b = rng.normal(size=F).astype(dtype)
    x64, W64 = x.astype(np.float64), W.astype(np.float64)
    expect = ref.linear_forward(x64, W64, np.zeros(F))
    assert_mlp_close(out, expect, dtype)
    head = np.full((B, F), np.nan, dtype)
    cpu._dense_narrow(x, W, b, head)
    assert_mlp_close(head, expect + b, dtype)
    dx = np.full((B, F), np.nan, dtype)  # dx = x V^T with x as dL/dz (B, K) and V as W (F, K)
    cpu._dense_back(x, np.ones((B, F), dtype), V, np.empty((F, K), dtype), np.empty(K, dtype), dx, True)
    assert_mlp_close(dx, expect, dtype)


@njit
def _narrow_rows_call(x, W, out):
    cpu._narrow_rows(x, W, out)


@settings(SLOW)
@given(st.integers(1, 17), st.one_of(st.integers(1, 9), st.sampled_from([16, 17, 64, 67])),
       st.integers(1, 7), st.sampled_from([np.float32, np.float64]), st.integers(0, 2**32 - 1))
@example(8, 64, 6, np.float32, 0)  # a 64 -> 6 head at batch 8: two blocks of 4 rows
@example(3, 67, 2, np.float64, 1)  # three leftover rows, each with a K % 4 tail
def test_narrow_rows_matches_reference(B, K, F, dtype, seed):
    """out = x W with W's rows loaded masked to F lanes: against the reference, writing nothing past
    out (a sentinel right after it), and through _dense_narrow and _dense (where _rows_apply picks
    it) with the bias."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, K)).astype(dtype)
    flat = rng.normal(size=K * F + 3).astype(dtype)
    W = flat[3:].reshape(K, F)  # W ends where its buffer ends: the masked loads stop at F lanes
    buf = np.full(B * F + 16, np.nan, dtype)
    out = buf[: B * F].reshape(B, F)
    _narrow_rows_call(x, W, out)
    expect = ref.linear_forward(x.astype(np.float64), W.astype(np.float64), np.zeros(F))
    assert_mlp_close(out, expect, dtype)
    assert np.isnan(buf[B * F:]).all()
    b = rng.normal(size=F).astype(dtype)
    for dense in (cpu._dense_narrow, lambda x, W, b, o: _dense_call(x, W, b, o)):
        head = np.full((B, F), np.nan, dtype)
        dense(x, W, b, head)
        assert_mlp_close(head, expect + b, dtype)


@njit
def _rows_apply_call(W, out):
    return cpu._rows_apply(W, out)


def test_rows_apply_needs_one_dtype_and_short_rows():
    """_narrow_rows compiles to a no-op for arrays its vectors cannot load together: _rows_apply must
    then say no, so that out is written by another path."""
    W32, W64 = np.ones((64, 6), np.float32), np.ones((64, 6), np.float64)
    assert _rows_apply_call(W32, np.empty((8, 6), np.float32))
    assert not _rows_apply_call(W32, np.empty((8, 6), np.float64))
    assert not _rows_apply_call(W64, np.empty((8, 6), np.float32))
    assert not _rows_apply_call(W64, np.empty((8, 8), np.float64))  # a row as long as a vector
    assert not _rows_apply_call(np.ones((6, 64), np.float32).T, np.empty((8, 6), np.float32))  # not C
    assert _rows_apply_call(W32, np.empty((2, 1), np.float32))
    assert not _rows_apply_call(W32, np.empty((3, 1), np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_apply_follows_its_measured_rule_at_each_boundary(dtype):
    """The rule _rows_apply's docstring gives from its measurements, on both sides of every
    threshold: W with fewer than 32 rows at any batch; from 32 rows, 4 or more columns at any batch,
    else up to batch 16 / 8 / 2 for 3 / 2 / 1 columns. Either path gives the reference's result
    (tested above), so a moved threshold changes only speed: this pins the measured choice."""
    def applies(K, B, F):
        return _rows_apply_call(np.ones((K, F), dtype), np.empty((B, F), dtype))

    for F in (1, 2, 3, 4, 6):
        assert applies(31, 256, F)  # fewer than 32 rows: every batch, every width
    for K in (32, 64):
        for F in (4, 5, 7):
            assert applies(K, 256, F)
        for F, last in ((3, 16), (2, 8), (1, 2)):
            assert applies(K, last, F)
            assert not applies(K, last + 1, F)


@njit
def _pairs_apply_call(x, V, out, K):
    return cpu._pairs_apply(cpu._same_lanes(x, V, out), K)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pairs_apply_from_two_vectors_of_terms(dtype):
    """_dot_pairs takes dot products that span two 64-byte vectors or more (K >= 2 L: below that,
    the scalar leftover terms dominate and _dots is faster, measured), for arrays its vectors load,
    all three in one dtype (it compiles to a no-op for any others)."""
    L = 64 // np.dtype(dtype).itemsize
    other = np.float32 if dtype == np.float64 else np.float64
    x, V, out = np.ones((8, 2 * L + 1), dtype), np.ones((2, 2 * L + 1), dtype), np.zeros((8, 2), dtype)
    assert _pairs_apply_call(x, V, out, 2 * L)
    assert not _pairs_apply_call(x, V, out, 2 * L - 1)
    assert not _pairs_apply_call(np.asfortranarray(x), V, out, 2 * L)  # vectors cannot load x
    assert not _pairs_apply_call(x, V.T.copy().T, out, 2 * L)  # nor a V in Fortran order
    assert not _pairs_apply_call(x.astype(other), V, out, 2 * L)
    assert not _pairs_apply_call(x, V.astype(other), out, 2 * L)
    assert not _pairs_apply_call(x, V, out.astype(other), 2 * L)


@njit
def _dense_call(x, W, b, out):
    cpu._dense(x, W, b, out, cpu.ACT_NONE)


def test_simd_masked_first_lanes():
    """vload_first reads n lanes and zeros the rest; vstore_first writes n lanes and nothing else."""
    from minippo.kernels import simd

    @njit
    def copy_first(a, i, j, n, out, oi, oj):
        v = simd.vload_first(a, i, j, n)
        simd.vstore_first(out, oi, oj, simd.vadd(v, simd.vsplat(out, 1)), n)
        simd.vstore(out, oi + 1, 0, v)  # the whole loaded vector: lanes n .. L - 1 are zero

    for dtype, L in ((np.float32, 16), (np.float64, 8)):
        a = np.arange(3 * 20, dtype=dtype).reshape(3, 20)
        for n in (0, 1, 5, L):
            out = np.full((3, 20), -7, dtype)
            copy_first(a, 1, 2, n, out, 0, 3)
            expect = np.full((3, 20), -7, dtype)
            expect[0, 3:3 + n] = a[1, 2:2 + n] + 1
            expect[1, :L] = 0
            expect[1, :n] = a[1, 2:2 + n]
            np.testing.assert_array_equal(out, expect)


def test_simd_vectors_load_store_splat_fma():
    from minippo.kernels import simd
    from numba import njit

    @njit
    def lanes_of(a):
        return simd.lanes(a)

    @njit
    def axpy_row(a, x, i, j, out):  # out[i, j:j + L] = a * x[i, j:j + L] + out[i, j:j + L]
        simd.vstore(out, i, j, simd.vfma(simd.vsplat(out, a), simd.vload(x, i, j), simd.vload(out, i, j)))

    for dtype, n in ((np.float32, 16), (np.float64, 8)):
        assert lanes_of(np.zeros((2, 3), dtype)) == n == 64 // np.dtype(dtype).itemsize
        assert lanes_of(np.zeros((2, 6), dtype)[:, ::2]) == 0  # not C-ordered: no vectors
        x = np.arange(3 * 40, dtype=dtype).reshape(3, 40)
        out = np.ones((3, 40), dtype)
        axpy_row(dtype(0.5), x, 1, 3, out)  # an unaligned run of lanes in the middle row
        expect = np.ones((3, 40), dtype)
        expect[1, 3:3 + n] += 0.5 * x[1, 3:3 + n]
        np.testing.assert_array_equal(out, expect)
    assert lanes_of(np.zeros((2, 3), np.int64)) == 0

    @njit
    def folds(a, out):  # rows 0 .. 3 of a as vectors; out row l - 1 = vfold(row 0, row 1, l), ...
        v0, v1 = simd.vload(a, 0, 0), simd.vload(a, 1, 0)
        simd.vstore(out, 0, 0, simd.vfold(v0, v1, 1))
        simd.vstore(out, 1, 0, simd.vfold(v0, v1, 2))
        simd.vstore(out, 2, 0, simd.vfold(v0, v1, 3))
        return simd.lanes(a)

    @njit
    def lanewise(x, out):  # out rows 0, 1, 2 = x0 + x1, x0 - x1, x0 * x1 on one vector
        a, b = simd.vload(x, 0, 0), simd.vload(x, 1, 0)
        simd.vstore(out, 0, 0, simd.vadd(a, b))
        simd.vstore(out, 1, 0, simd.vsub(a, b))
        simd.vstore(out, 2, 0, simd.vmul(a, b))

    for dtype in (np.float32, np.float64):  # each lane rounded once, as numpy's scalar operation
        x = np.random.default_rng(1).normal(size=(2, 16)).astype(dtype)
        out = np.zeros((3, 16), dtype)
        lanewise(x, out)
        n = 64 // np.dtype(dtype).itemsize
        np.testing.assert_array_equal(out[:, :n], [x[0, :n] + x[1, :n], x[0, :n] - x[1, :n], x[0, :n] * x[1, :n]])

    @njit
    def vsum_row(a, i):
        return simd.vsum(simd.vload(a, i, 0))

    for dtype in (np.float32, np.float64):
        a = np.random.default_rng(0).integers(-99, 99, size=(2, 16)).astype(dtype)  # sums exact
        out = np.zeros((3, 16), dtype)
        n = folds(a, out)
        c = np.concatenate([a[0, :n], a[1, :n]])  # the 2 L lanes of a then b
        for level in (1, 2, 3):
            h = n >> level
            i = np.arange(n)
            first = (i // h) * 2 * h + i % h
            np.testing.assert_array_equal(out[level - 1, :n], c[first] + c[first + h])
        assert vsum_row(a, 1) == a[1, :n].sum()  # small integers: every order gives the exact sum
    halves = np.array([[1.0, 2.0**-60, 3.0, 0.0, -1.0, 2.0**-60, -3.0, 0.0]])  # float64, one vector
    assert vsum_row(halves, 0) == 2.0**-59  # (1 + -1) + ... first: a sequential sum would round it off


def test_simd_refuses_a_vector_of_another_dtype_and_names_llvm_pointers_by_version(monkeypatch):
    """vstore types only a vector of its array's dtype (a float64 vector stored into a float32 row
    would write 64 bytes of the wrong values); the masked intrinsics' pointer suffix is the opaque
    ``p0`` from LLVM 17 on and the typed ``p0v16f32`` form before (LLVM 14/15)."""
    from llvmlite import binding
    from minippo.kernels import simd
    from numba import types
    from numba.core.errors import TypingError

    @njit
    def store_other(a64, out32):
        simd.vstore(out32, 0, 0, simd.vload(a64, 0, 0))

    with pytest.raises(TypingError):
        store_other(np.zeros((1, 8)), np.zeros((1, 16), np.float32))
    for version, f32, f64 in (((17, 0, 0), "p0", "p0"), ((16, 0, 6), "p0v16f32", "p0v8f64"),
                              ((14, 0, 6), "p0v16f32", "p0v8f64")):
        monkeypatch.setattr(binding, "llvm_version_info", version)
        assert simd._ptr_suffix(simd.Vec(types.float32)) == f32
        assert simd._ptr_suffix(simd.Vec(types.float64)) == f64


def test_simd_intrinsics_type_only_their_own_arguments():
    """Each intrinsic's typing-time guard: a vector of another dtype, a float count of lanes, a
    splatted value that is not a number, or a fold level that is not a literal fails to type (a
    TypingError at compile time) instead of reaching LLVM with mismatched types; a fold level
    outside 1 .. log2 L is an error naming the range."""
    from minippo.kernels import simd
    from numba import literally
    from numba.core.errors import TypingError

    a32, a64 = np.zeros((1, 16), np.float32), np.zeros((1, 16))

    @njit
    def first_float_n(a):
        return simd.vload_first(a, 0, 0, 1.0)

    @njit
    def store_first(out, a, n):
        simd.vstore_first(out, 0, 0, simd.vload(a, 0, 0), n)

    @njit
    def splat(out, x):
        simd.vstore(out, 0, 0, simd.vsplat(out, x))

    @njit
    def fma_into(out, a, b):
        v, w = simd.vload(a, 0, 0), simd.vload(b, 0, 0)
        simd.vstore(out, 0, 0, simd.vfma(v, w, v))

    @njit
    def add_into(out, a, b):
        simd.vstore(out, 0, 0, simd.vadd(simd.vload(a, 0, 0), simd.vload(b, 0, 0)))

    @njit
    def fold_into(out, a, b):
        simd.vstore(out, 0, 0, simd.vfold(simd.vload(a, 0, 0), simd.vload(b, 0, 0), 1))

    @njit
    def fold_runtime_level(out, level):
        v = simd.vload(out, 0, 0)
        simd.vstore(out, 0, 0, simd.vfold(v, v, level))

    @njit
    def fold_at(a, out, level):
        v = simd.vload(a, 0, 0)
        simd.vstore(out, 0, 0, simd.vfold(v, v, literally(level)))

    for level, lanes in ((0, 16), (5, 16), (4, 8)):  # 1 .. log2 L only (numba 0.59 wraps it in a TypingError)
        a = np.zeros((1, lanes), np.float32 if lanes == 16 else np.float64)
        with pytest.raises((ValueError, TypingError),
                           match=rf"vfold level must be 1 \.\. log2\({lanes}\), got {level}"):
            fold_at(a, a.copy(), level)
    store_first(a32, a32, 3)  # the same calls with their own arguments type
    splat(a32, 2.0)
    for call in (fma_into, add_into, fold_into):
        call(a32, a32, a32)
    for call, args in ((first_float_n, (a32,)), (store_first, (a32, a64, 3)), (store_first, (a32, a32, 3.0)),
                       (splat, (a32, np.zeros(2))), (fma_into, (a32, a32, a64)), (add_into, (a32, a32, a64)),
                       (fold_into, (a32, a32, a64)), (fold_runtime_level, (a32, 1))):
        with pytest.raises(TypingError):
            call(*args)


def _unaligned(a):
    """A copy of ``a`` (native dtype, C order) one byte off its element alignment."""
    buf = np.zeros(a.nbytes + 1, np.uint8)[1:].view(a.dtype).reshape(a.shape)
    buf[...] = a
    assert not buf.flags.aligned
    return buf


def test_byte_swapped_arrays_after_an_unaligned_one_give_numpys_results(numba_backend):
    """numba's dispatcher types an array that is not "behaved" by a fingerprint without its byte order:
    once an unaligned native float32 array of a shape class was typed (here, or by any numba function
    in the process), a big-endian one of that class was read as native. compute_gae (its hot path and
    cpu.gae's fast path) returned ~1e30 and MLP.backward with such a cache NaN; numpy's path casts."""
    rng = np.random.default_rng(0)
    T, N = 5, 3
    r, v, lv = rng.standard_normal((T, N)), rng.standard_normal((T, N)), rng.standard_normal(N)
    d = (rng.random((T, N)) < 0.3).astype(np.float64)
    native = [a.astype(np.float32) for a in (r, v, d, lv)]
    want = advantages.compute_gae(*native, 0.99, 0.95)  # (arms compute_gae's hot path)
    advantages.compute_gae(*(_unaligned(a) for a in native), 0.99, 0.95)
    cpu.gae(*(_unaligned(a) for a in native), 0.99, 0.95)
    swapped = [a.astype(">f4") for a in native]
    numpy_res = advantages.gae_numpy(*swapped, 0.99, 0.95)
    for got in (advantages.compute_gae(*swapped, 0.99, 0.95), cpu.gae(*swapped, 0.99, 0.95)):
        for g, n, w in zip(got, numpy_res, want, strict=True):
            # native float32, as for float32 rewards (float64 until session 64: '>f4' != np.float32)
            assert g.dtype is n.dtype is np.dtype(np.float32)
            np.testing.assert_array_equal(g, w)
    out = [np.empty((T, N), ">f4"), np.empty((T, N), ">f4")]  # out byte-swapped: refused, as on numpy
    with pytest.raises(ValueError, match=r"out must be two float32 arrays .* got \[\(dtype\('>f4'\)"):
        advantages.compute_gae(*swapped, 0.99, 0.95, out=out)

    net = nn.MLP([6, 64, 3], seed=3)
    x, dy = rng.standard_normal((8, 6)).astype(np.float32), rng.standard_normal((8, 3)).astype(np.float32)
    _, cache = net.forward(x)
    dx_want, g_want = net.backward(dy, cache)
    net.backward(dy, [_unaligned(a) for a in cache])
    dx, g = net.backward(dy, [a.astype(">f4") for a in cache])
    # the byte-swapped cache takes numpy's backward (bit-equal to numpy's on the native one), the native
    # cache the numba kernel: float32 sums of <= 64 terms in another order, a few ulps apart (n eps ~ 4e-6
    # at worst; observed 1.8e-7). GAE above is the same loop on both paths, so bit-equal.
    np.testing.assert_allclose(dx, dx_want, rtol=1e-5, atol=1e-6)
    for k in g_want:
        np.testing.assert_allclose(g[k], g_want[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("hot", [True, False])
def test_gae_out_that_is_not_a_pair_is_refused_on_numba_too(numba_backend, hot):
    """The fast paths unpacked out: an array's two rows, or a generator (used up by the unpacking,
    then returned), went through where numpy names what out must be."""
    z = np.zeros((4, 2), np.float32)
    args = (z + 1, z, z, np.zeros(2, np.float32), 0.9, 0.9)
    gae = advantages.compute_gae if hot else cpu.gae
    gae(*args)  # (arms the hot path)
    for out, got in ((np.zeros((2, 4, 2), np.float32), "ndarray"), ((a for a in (z.copy(), z.copy())), "generator")):
        with pytest.raises(TypeError, match=f"out must be a pair .* got {got}"):
            gae(*args, out=out)


def test_backward_takes_need_dx_by_truthiness_as_numpy_does(numba_backend):
    """need_dx=[] raised numba's "cannot compute fingerprint of empty list"; other non-bool values each
    compiled a version of their own."""
    net = nn.MLP([3, 8, 2], seed=0)
    _, cache = net.forward(np.ones((4, 3), np.float32))
    dy = np.ones((4, 2), np.float32)
    _, want = net.backward(dy, cache, need_dx=False)
    for flag in ([], 0, np.bool_(False), ""):
        dx, g = net.backward(dy, cache, need_dx=flag)
        assert dx is None and all(np.array_equal(g[k], want[k]) for k in want)
    dx, _ = net.backward(dy, cache, need_dx=[1])
    assert dx.shape == (4, 3)


def test_cpu_gae_fast_path_takes_native_c_arrays_and_nothing_byte_swapped(numba_backend, monkeypatch):
    """cpu.gae's fast path goes straight to the kernel for C-contiguous arrays of one native float dtype
    (out None, a tuple or a list), and never for byte-swapped ones, even when they share one dtype object
    (views of one buffer: ``astype`` makes a new dtype object each time, which the identity check refuses
    anyway) and numba's type fingerprint has been taught an unaligned native array of their class."""
    rng = np.random.default_rng(3)
    T, N = 6, 4
    slow = []
    real_slow = cpu._gae_slow
    monkeypatch.setattr(cpu, "_gae_slow", lambda *a: slow.append(1) or real_slow(*a))
    for dtype in (np.float32, np.float64):
        r, v, lv = rng.standard_normal((T, N)), rng.standard_normal((T, N)), rng.standard_normal(N)
        d = (rng.random((T, N)) < 0.3).astype(np.float64)
        r, v, d, lv = (a.astype(dtype) for a in (r, v, d, lv))
        cpu.gae(r, v, d, lv, 0.9, 0.8)  # prepares the kernel
        want = advantages.gae_numpy(r, v, d, lv, 0.9, 0.8)
        for out in (None, (np.empty_like(r), np.empty_like(r)), [np.empty_like(r), np.empty_like(r)]):
            slow.clear()
            got = cpu.gae(r, v, d, lv, 0.9, 0.8, out=out)
            assert not slow, (dtype, type(out))
            for g, w in zip(got, want, strict=True):
                np.testing.assert_array_equal(g, w)
        cpu.gae(*(_unaligned(a) for a in (r, v, d, lv)), 0.9, 0.8)
        swapped = np.dtype(dtype).newbyteorder(">")
        buf = np.empty(3 * T * N + N, swapped)  # one dtype object for all four views
        views = [buf[i * T * N:(i + 1) * T * N].reshape(T, N) for i in range(3)] + [buf[3 * T * N:]]
        for view, a in zip(views, (r, v, d, lv), strict=True):
            view[...] = a
        assert len({id(a.dtype) for a in views}) == 1
        for got in (cpu.gae(*views, 0.9, 0.8), advantages.compute_gae(*views, 0.9, 0.8)):
            for g, w in zip(got, advantages.gae_numpy(*views, 0.9, 0.8), strict=True):
                assert g.dtype == w.dtype
                np.testing.assert_array_equal(g, w)
        # native inputs into a byte-swapped out (both arrays, or either one alone: compute_gae's hot path
        # checked one of the two dtypes under a mutant): refused as numpy refuses it, nothing written
        for kinds in ((swapped, swapped), (dtype, swapped), (swapped, dtype)):
            out = tuple(np.full((T, N), 7, k) for k in kinds)
            for gae in (cpu.gae, advantages.compute_gae):
                with pytest.raises(ValueError, match=f"out must be two {np.dtype(dtype)} arrays"):
                    gae(r, v, d, lv, 0.9, 0.8, out=out)
                assert all((o == 7).all() for o in out)


def test_an_interrupted_first_slp_compile_raises_the_interrupt():
    """A Ctrl-C in the first compile of a kernel compiled with SLP (GAE's, ~2 s of a first CartPole
    run) came out as numba's AssertionError (disable_compile with no signature yet): scripts catching
    KeyboardInterrupt died, and `minippo train` printed a traceback instead of stopping. The kernel
    compiles at the next try."""
    from numba import njit, types

    @njit
    def plus_one(x):
        return x + 1.0

    compile_ = plus_one.compile

    def interrupted(signature):
        raise KeyboardInterrupt

    plus_one.compile = interrupted
    with pytest.raises(KeyboardInterrupt):
        cpu._compile_with_slp(plus_one, (types.float64,))
    plus_one.compile = compile_
    cpu._compile_with_slp(plus_one, (types.float64,))
    assert plus_one(1.0) == 2.0 and len(plus_one.signatures) == 1


def test_the_fused_mlp_gives_the_same_bits_for_every_layout_of_the_same_values(numba_backend):
    """x in Fortran order, with negative strides, or of a float32 dtype object that is not numpy's own (a
    pickled array's: equal, not identical) went to numpy's BLAS path on numba: other rounding (~1e-7 off
    the C-order result) and ~3x the time. They are copied to C order (the dtype view is free) and fused."""
    import pickle

    rng = np.random.default_rng(0)
    mlp = nn.MLP([4, 16, 16, 3], seed=1)
    x = rng.standard_normal((8, 4)).astype(np.float32)
    dy = rng.standard_normal((8, 3)).astype(np.float32)
    y, cache = mlp.forward(x)
    dx, grads = mlp.backward(dy, cache)
    assert cpu.mlp_forward(mlp, x) is not None  # the C-order input is fused
    for form in (np.asfortranarray(x), x[::-1].copy()[::-1], pickle.loads(pickle.dumps(x))):
        assert np.array_equal(form, x) and form.dtype == np.float32
        y2, cache2 = mlp.forward(form)
        assert y2.tobytes() == y.tobytes()
        assert cache2[0].dtype is np.dtype(np.float32) and cache2[0].flags.c_contiguous
        assert cpu.mlp_forward(mlp, form) is not None  # fused, not declined to numpy
        assert np.array_equal(form, x) and cache2[0] is not form  # the caller's array is left as it was
    for form in (np.asfortranarray(dy), pickle.loads(pickle.dumps(dy))):
        dx2, grads2 = mlp.backward(form, cache)
        assert dx2.tobytes() == dx.tobytes() and all(grads2[k].tobytes() == grads[k].tobytes() for k in grads)
        assert cpu.mlp_backward(mlp, form, cache) is not None
