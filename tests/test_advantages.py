"""GAE / rewards-to-go / TD(0) against the plain-loop reference and their limiting properties (numpy
alone: the truncation bootstrap, which needs gymnasium envs, is in test_truncation.py).

Tolerances, and why:
- float64 GAE and TD(0) against kernels/reference.py: its loop does the library's operations in the
  library's order (numpy and numba alike: the GAE kernels contract no FMAs, kernels/cpu.py), so they agree
  bit for bit (20000 draws, both backends). 1e-12 (rtol and atol; was 1e-10 for GAE) leaves room for a
  reordering, which would move each of T <= 12 steps by a few ulps of terms <= ~50 (|A| <= 11 observed):
  < 3e-13.
- lambda = 1 against rewards-to-go: G_t summed directly against A_t + V_t, where the values cancel only
  up to rounding: a few ulps of partial sums <= ~50 per step over T <= 12: 1e-12 (was 1e-10; observed
  <= 3.6e-15 absolute).
- float32: every operation rounds to float32 (~6e-8 relative; gamma and gamma * lam too) on terms <= ~10
  over T <= 12 steps; the errors add like a random walk: observed <= 2.0e-6 absolute, at most 7% of
  rtol 1e-5 + atol 1e-5 (20000 draws); the returns carry one rounding more.
- The library against itself by another route (strided out= views, int inputs cast to float64): the same
  operations in the same order, compared exactly (were rtol 1e-12 and 1e-15); gamma = lambda = 0.5 with
  unit rewards gives dyadic numbers, every operation exact (was numpy's rtol 1e-7).
"""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from minippo.kernels import reference

from minippo.advantages import compute_advantages, compute_gae, gae_numpy


@st.composite
def rollouts(draw, dtype=np.float64):
    T = draw(st.integers(1, 12))
    N = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    p_done = draw(st.sampled_from([0.0, 0.2, 1.0]))  # no-done, some, all-done columns
    rng = np.random.default_rng(seed)
    r = rng.standard_normal((T, N)).astype(dtype)
    v = rng.standard_normal((T, N)).astype(dtype)
    d = (rng.random((T, N)) < p_done).astype(dtype)
    last = rng.standard_normal(N).astype(dtype)
    return r, v, d, last


coef = st.floats(0.5, 1.0)
lam_s = st.floats(0.0, 1.0)


# float64 throughout: the same operations in the same order (see the module docstring)
@settings(max_examples=60, deadline=None)
@given(rollouts(), coef, lam_s)
def test_gae_matches_reference(data, gamma, lam):
    r, v, d, last = data
    adv, ret = compute_gae(r, v, d, last, gamma, lam)
    adv_ref, ret_ref = reference.gae(r, v, d, last, gamma, lam)
    np.testing.assert_allclose(adv, adv_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ret, ret_ref, rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(rollouts(), coef)
def test_lambda_one_is_monte_carlo_minus_value(data, gamma):
    r, v, d, last = data
    adv, ret = compute_gae(r, v, d, last, gamma, 1.0)
    g = reference.rewards_to_go(r, d, last, gamma)
    np.testing.assert_allclose(ret, g, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(adv, g - v, rtol=1e-12, atol=1e-12)
    adv_mc, _ = compute_advantages("mc", r, v, d, last, gamma, 0.3)
    np.testing.assert_array_equal(adv_mc, adv)


@settings(max_examples=40, deadline=None)
@given(rollouts(), coef)
def test_lambda_zero_is_td0(data, gamma):
    r, v, d, last = data
    adv, _ = compute_gae(r, v, d, last, gamma, 0.0)
    np.testing.assert_allclose(adv, reference.td0(r, v, d, last, gamma), rtol=1e-12, atol=1e-12)
    adv_td, _ = compute_advantages("td", r, v, d, last, gamma, 0.9)
    np.testing.assert_array_equal(adv_td, adv)


@settings(max_examples=25, deadline=None)
@given(rollouts(np.float32), coef, lam_s)
def test_float32_stays_float32_and_close(data, gamma, lam):
    r, v, d, last = data
    adv, ret = gae_numpy(r, v, d, last, gamma, lam)
    assert adv.dtype == np.float32 and ret.dtype == np.float32
    adv_ref, ret_ref = reference.gae(r.astype(np.float64), v.astype(np.float64), d, last.astype(np.float64), gamma,
                                     lam)
    # float32: relative rounding 6e-8 per op over <= 12 steps of terms <= ~10 (observed <= 2e-6 absolute)
    np.testing.assert_allclose(adv, adv_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, ret_ref, rtol=1e-5, atol=1e-5)  # (returns = A + V: one rounding more)


def test_gae_bad_inputs():
    z = np.zeros((3, 2))
    with pytest.raises(ValueError, match="values must have shape"):
        compute_gae(z, np.zeros((3, 3)), z, np.zeros(2), 0.9, 0.9)
    with pytest.raises(ValueError, match="last_values must have shape"):
        compute_gae(z, z, z, np.zeros(3), 0.9, 0.9)
    for gamma in (1.5, 0.0, -0.1):  # (0, 1]: gamma = 0 exactly too (a mutant of the fast check let it through)
        with pytest.raises(ValueError, match="gamma"):
            compute_gae(z, z, z, np.zeros(2), gamma, 0.9)
    assert compute_gae(z, z, z, np.zeros(2), 0.9, 0.0)[0].shape == (3, 2)  # lambda 0 (TD(0)) is allowed
    with pytest.raises(ValueError, match="lam"):
        compute_gae(z, z, z, np.zeros(2), 0.9, -0.1)
    with pytest.raises(ValueError, match="estimator='x'"):
        compute_advantages("x", z, z, z, np.zeros(2), 0.9, 0.9)



@pytest.mark.parametrize("backend_name", ["numpy", "numba"])
def test_gae_refuses_inputs_of_other_shapes_that_would_broadcast(backend_name, request):
    """Shapes numpy would broadcast (dones per step only, or per env only; a trailing axis on every
    input) are refused by name, on each backend's path, before anything is computed."""
    if backend_name == "numba":
        pytest.importorskip("numba")
    request.getfixturevalue(f"{backend_name}_backend")
    z, last = np.zeros((3, 2)), np.zeros(2)
    for d in (np.zeros((3, 1)), np.zeros(2), np.zeros((1, 2))):
        with pytest.raises(ValueError, match=re.escape(f"dones must have shape (3, 2) like rewards, got {d.shape}")):
            compute_gae(z, z, d, last, 0.9, 0.9)
    z3 = np.zeros((3, 2, 1))
    with pytest.raises(ValueError, match=r"rewards must have shape \(T, N\), got \(3, 2, 1\)"):
        compute_gae(z3, z3, z3, np.zeros((2, 1)), 0.9, 0.9)


@pytest.mark.parametrize("backend_name", ["numpy", "numba"])
def test_gae_refuses_an_out_of_another_shape_or_dtype_and_writes_nothing(backend_name, request):
    """Either array of ``out`` with the right dtype but another shape (one the results would broadcast
    into, too), or the right shape but another dtype, is refused by name with nothing written."""
    if backend_name == "numba":
        pytest.importorskip("numba")
    request.getfixturevalue(f"{backend_name}_backend")
    z, last = np.zeros((3, 2)), np.zeros(2)
    for bad in (np.ones((2, 3, 2)), np.ones((3, 1)), np.ones((3, 2), np.float32)):
        for out in ((bad, np.ones((3, 2))), (np.ones((3, 2)), bad)):
            with pytest.raises(ValueError, match=re.escape("out must be two float64 arrays of shape (3, 2)")):
                compute_gae(z, z, z, last, 0.9, 0.9, out=out)
            assert all((a == 1).all() for a in out)

@pytest.mark.parametrize("backend_name", ["numpy", "numba"])
def test_an_out_sharing_memory_between_advantages_and_returns_is_refused(backend_name, request):
    """out=(o, o) returned the returns as the advantages, silently; a pair of separate views of one
    array (interleaved columns) is fine."""
    if backend_name == "numba":
        pytest.importorskip("numba")
    request.getfixturevalue(f"{backend_name}_backend")
    rng = np.random.default_rng(0)
    r, v, last = rng.normal(size=(4, 2)), rng.normal(size=(4, 2)), rng.normal(size=2)
    d = np.zeros((4, 2))
    want = compute_gae(r, v, d, last, 0.9, 0.8)
    o = np.full((4, 2), 7.0)
    for out in ((o, o), (o, o[:, :])):
        with pytest.raises(ValueError, match=re.escape("out[0] and out[1] share memory: the advantages and the "
                                                       "returns need separate arrays")):
            compute_gae(r, v, d, last, 0.9, 0.8, out=out)
        assert (o == 7.0).all()
    wide = np.zeros((4, 4))
    got = compute_gae(r, v, d, last, 0.9, 0.8, out=(wide[:, 0::2], wide[:, 1::2]))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)  # the same operations, into strided views


def test_gae_numpy_casts_its_inputs_as_compute_gae_does():
    """gae_numpy (public: the numpy backend) gave int advantages for int inputs, truncated, and mixed
    float32 and float64 results for float32 rewards with float64 values."""
    r, v, d, last = np.ones((3, 1), np.int64), np.zeros((3, 1), np.int64), np.zeros((3, 1), bool), np.zeros(1, int)
    adv, ret = gae_numpy(r, v, d, last, 0.9, 0.95)
    assert adv.dtype == ret.dtype == np.float64
    np.testing.assert_array_equal(adv[:, 0], compute_gae(r, v, d, last, 0.9, 0.95)[0][:, 0])
    adv, ret = gae_numpy(r.astype(np.float32), v.astype(np.float64), d, last, 0.9, 0.95)
    assert adv.dtype == ret.dtype == np.float32


def test_gae_numpy_wants_scalar_gamma_and_lambda():
    z = np.zeros((3, 2))
    with pytest.raises(TypeError, match="gamma and lam must be real scalars"):
        gae_numpy(z, z, z, np.zeros(2), np.array([0.9, 0.9]), 0.95)
    a, _ = gae_numpy(z + 1, z, z, np.zeros(2), np.array(0.5), np.float32(0.5))  # 0-d: fine
    np.testing.assert_array_equal(a[:, 0], [1 + 0.25 + 0.0625, 1.25, 1.0])  # dyadic: exact


def test_compute_gae_defaults_are_the_papers_and_numpy_computes_them(numpy_backend, monkeypatch):
    """gamma = 0.99 and lambda = 0.95 by default (the paper's settings); the numpy backend runs the
    numpy recursion, never a compiled kernel (which numpy-only installs do not have)."""
    import minippo.advantages as adv_mod

    def no_kernel(*args):
        raise AssertionError("the numpy backend called the numba GAE")

    monkeypatch.setattr(adv_mod, "_numba_gae", no_kernel)
    monkeypatch.setattr(adv_mod, "_numba_gae_kernel", no_kernel)
    r, v, d, last = (np.random.default_rng(3).standard_normal(s) for s in ((6, 3), (6, 3), (6, 3), 3))
    d = (d > 1).astype(np.float64)
    got = compute_gae(r, v, d, last)
    want = gae_numpy(r, v, d, last, 0.99, 0.95)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("backend_name", ["numpy", "numba"])
def test_big_endian_float32_rewards_give_float32_results(request, backend_name):
    """The results are in rewards' dtype when it is float32 or float64: '>f4' is float32 too, but it is not
    equal to np.float32, so the results came back float64 and float32 ``out=`` arrays were refused."""
    if backend_name == "numba":
        pytest.importorskip("numba")
    request.getfixturevalue(f"{backend_name}_backend")
    rng = np.random.default_rng(0)
    r = rng.standard_normal((5, 3)).astype(np.float32)
    v = rng.standard_normal((5, 3)).astype(np.float32)
    d = (rng.random((5, 3)) < 0.3).astype(np.float32)
    lv = rng.standard_normal(3).astype(np.float32)
    want = compute_gae(r, v, d, lv, 0.99, 0.95)
    got = compute_gae(r.astype(">f4"), v.astype(">f4"), d, lv.astype(">f8"), 0.99, 0.95)
    assert all(g.dtype is np.dtype(np.float32) and g.tobytes() == w.tobytes() for g, w in zip(got, want, strict=True))
    out = (np.empty((5, 3), np.float32), np.empty((5, 3), np.float32))
    assert compute_gae(r.astype(">f4"), v, d, lv, 0.99, 0.95, out=out) is out
    assert out[0].tobytes() == want[0].tobytes()
