"""minippo.gradcheck: the finite-difference checker itself, on functions with known gradients.

Tolerances, and why (central differences, h = 1e-6, float64):
- TOL = 1e-6, the bound the package's gradient tests use: truncation is h^2 f''' / 6 ~ 1e-12 relative; rounding is
  ~ulp(f) / 2h ~ 1e-10 |f| per entry. A gradient of norm < 1e-3 is measured against rel_error's floor 1e-3, so that
  noise reaches ~1e-7 |f| per entry: the known function's draws reach 1.5e-7 (2000 draws), contrived ones (sum(A) ~
  1e-7 beside sum(sin A) ~ 4) 8.6e-7, so TOL is about the noise bound, not loose; that test scales the floor to the
  terms' size (<= 3.1e-8 then). check_grads scales the floor by |f| (observed <= 4.5e-8). A wrong gradient is off by
  O(1): 1/3, 0.9 and 2/3 here, against thresholds 0.1 and 0.5; dividing by 2h, not the step taken, was 7e-6 off at |x|
  ~ 1e5 (now 3.1e-11), which TOL must and does catch.
- Quadratics have no truncation error ((x + h)^2 - (x - h)^2 = 4xh): the view's f = 220 carries
  ~ulp(220) / 2h = 1.4e-8 per entry against gradients >= 4: rtol 1e-8 (observed 1.0e-9; 0 exactly at
  x = 0); w @ w = 14 gives ~ulp(14) / 2h sqrt(3) / |2w| ~ 2e-10: < 1e-9 (observed 7.4e-11).
- rel_error of fixed arrays against its definition: a division by the largest entry, two norms and a
  quotient, a few roundings: rel 1e-14 (were pytest.approx's 1e-6; observed <= 4.4e-16).
- The loss of 1e6 (test_check_grads_scales_its_floor_with_the_loss) is deterministic, its errors on
  either side of the thresholds as its docstring says: 7.6e-6 > 5e-6, 3.5e-8 < 1e-6, 2.3e-3 > 1e-3.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minippo.gradcheck import check_grads, numerical_grads, rel_error

FAST = settings(max_examples=30, deadline=None)
# The checker's own accuracy, as its rel_error docstring states: rounding noise ~1e-10 per entry
# (eps_mach * |f| / h), measured against the 1e-3 floor when a gradient is tiny -> up to ~1e-7 |f|.
TOL = 1e-6
small = st.floats(-2, 2, allow_nan=False, width=64)


@FAST
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 4)), elements=small),
       hnp.arrays(np.float64, st.integers(1, 5), elements=small))
def test_numerical_grads_of_known_function(a, b):
    """f = sum(sin(A)) + 0.5 |b|^2 * sum(A): df/dA = cos(A) + 0.5|b|^2, df/db = b sum(A)."""
    params = {"A": a.copy(), "b": b.copy()}

    def f():
        return float(np.sin(params["A"]).sum() + 0.5 * (params["b"] ** 2).sum() * params["A"].sum())

    num = numerical_grads(f, params)
    exact = {"A": np.cos(a) + 0.5 * (b**2).sum(), "b": b * a.sum()}
    # the floor scaled to the size S of the terms summed into f, as rel_error's docstring asks: where
    # sum(A) cancels to ~0, df/db is ~0 and its noise ~eps S / h per entry reached 8.6e-7 of the
    # unscaled 1e-3 floor (drawn by hand); with it, <= 3.1e-8 over 20000 such draws
    size = max(1.0, float(np.abs(np.sin(a)).sum() + 0.5 * (b**2).sum() * np.abs(a).sum()))
    for k in params:
        np.testing.assert_array_equal(params[k], {"A": a, "b": b}[k])  # restored exactly
        assert rel_error(num[k], exact[k], floor=1e-3 * size) < TOL
    assert check_grads(f, params, exact) < TOL


def test_numerical_grads_non_contiguous_view():
    base = np.arange(12, dtype=np.float64).reshape(3, 4)
    view = base[:, ::2]
    params = {"v": view}
    num = numerical_grads(lambda: float((params["v"] ** 2).sum()), params)
    np.testing.assert_allclose(num["v"], 2 * view, rtol=1e-8)


def test_check_grads_detects_a_wrong_gradient():
    params = {"x": np.array([1.0, -2.0, 0.5])}

    def f():
        return float((params["x"] ** 3).sum())

    right = {"x": 3 * params["x"] ** 2}
    wrong = {"x": 2 * params["x"] ** 2}  # a typical slip: wrong power-rule factor
    assert check_grads(f, params, right) < TOL
    assert check_grads(f, params, wrong) > 0.1


def test_check_grads_scales_its_floor_with_the_loss():
    """A loss of 1e6: the central difference carries ~ulp(1e6) / 2h ~ 3e-5 of rounding noise per entry
    (7.6e-6 relative here, over a TOL of 1e-6), so check_grads compares against floor * |f| = 1e3
    instead: the right gradient is then ~3e-8 off; a wrong one (3x for 2x) still stands out at ~2e-3,
    as a gradient of size ~2 can against noise of a loss of 1e6."""
    params = {"x": np.array([1.0, -2.0, 0.5])}

    def f():
        return float(1e6 + (params["x"] ** 2).sum())

    assert rel_error(2 * params["x"], numerical_grads(f, params)["x"]) > 5 * TOL  # the unscaled floor fails
    assert check_grads(f, params, {"x": 2 * params["x"]}) < TOL
    assert check_grads(f, params, {"x": 3 * params["x"]}) > 1e-3


def test_rel_error_definition_and_floor():
    a, b = np.array([3.0, 4.0]), np.array([3.0, 4.5])
    assert rel_error(a, b) == pytest.approx(0.5 / np.linalg.norm(b), rel=1e-14)
    # both tiny: compared absolutely against the floor
    assert rel_error(np.array([1e-12]), np.array([0.0])) == pytest.approx(1e-9, rel=1e-14)
    assert rel_error(np.array([1e-12]), np.array([0.0]), floor=1e-12) == pytest.approx(1.0, rel=1e-14)
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0
    assert rel_error(np.zeros(3), np.zeros(3), floor=0.0) == 0.0  # (0/0 where the floor is 0: equal)


def test_gradcheck_bad_inputs():
    with pytest.raises(TypeError, match=r"params\['w'\] is float32; .* need float64"):
        numerical_grads(lambda: 0.0, {"w": np.zeros(2, dtype=np.float32)})
    with pytest.raises(KeyError, match=r"grads keys differ from params: \['extra'\]"):
        check_grads(lambda: 0.0, {"w": np.zeros(2)}, {"w": np.zeros(2), "extra": np.zeros(1)})
    with pytest.raises(ValueError, match="shapes differ"):
        rel_error(np.zeros(2), np.zeros(3))
    w = {"w": np.array([1.0, 2.0, 3.0])}
    with pytest.raises(TypeError, match=r"params must be a dict of numpy arrays \(name -> array, e.g. policy.params\), "
                       "got list"):
        check_grads(lambda: 0.0, [w["w"]], [np.zeros(3)])
    with pytest.raises(TypeError, match=r"params\['w'\] must be a numpy array, got list"):  # (was "got dict")
        numerical_grads(lambda: 0.0, {"w": [1.0, 2.0]})
    with pytest.raises(TypeError, match="grads must be a dict of arrays keyed like params, got list"):
        check_grads(lambda: 0.0, w, [np.zeros(3)])
    with pytest.raises(TypeError, match="f must be a function of no arguments returning the loss, got float"):
        check_grads(1.0, w, w)
    with pytest.raises(ValueError, match=r"grads\['w'\] has shape \(2,\), params\['w'\] \(3,\)"):
        check_grads(lambda: 0.0, w, {"w": np.zeros(2)})
    with pytest.raises(TypeError, match=r"grads\['w'\] must be a float array, got <U1"):
        check_grads(lambda: 0.0, w, {"w": np.array(["a", "b", "c"])})
    with pytest.raises(TypeError, match=r"f must return one real number .*got complex"):
        check_grads(lambda: 1 + 2j, w, w)


def test_a_nan_or_inf_anywhere_fails_the_check_instead_of_passing_it():
    """A NaN in the analytic gradient made rel_error NaN, and then 0.0 (max(nan, ...) is nan, and
    nan > 0 is False): check_grads passed a broken gradient. An inf gave NaN, an f that returns NaN
    gave NaN differences: each is now an error naming what was not finite."""
    w = {"w": np.array([1.0, 2.0, 3.0])}

    def f():
        return float(w["w"] @ w["w"])

    for bad in (np.nan, np.inf):
        with pytest.raises(FloatingPointError, match=r"grads\['w'\] contains NaN or inf"):
            check_grads(f, w, {"w": np.array([2.0, bad, 6.0])})
        with pytest.raises(FloatingPointError, match="a contains NaN or inf: no error can be measured"):
            rel_error(np.full(3, bad), np.zeros(3))
        with pytest.raises(FloatingPointError, match="b contains NaN or inf"):
            rel_error(np.zeros(3), np.full(3, bad))
    with pytest.raises(FloatingPointError, match="f returned nan: no finite difference can be taken"):
        check_grads(lambda: float("nan"), w, {"w": np.zeros(3)})
    with pytest.raises(FloatingPointError, match="f returned inf"):
        numerical_grads(lambda: float(w["w"][1]) if w["w"][1] == 2.0 else float("inf"), w)
    assert check_grads(f, w, {"w": 2 * w["w"]}) < 1e-9


def test_params_are_restored_when_f_raises():
    w = np.array([1.0, 2.0])
    calls = []

    def f():
        calls.append(w.copy())
        if len(calls) == 2:  # f(w - h e_0) fails part-way through the first coordinate
            raise RuntimeError("env crashed")
        return float(w @ w)

    with pytest.raises(RuntimeError, match="env crashed"):
        numerical_grads(f, {"w": w})
    np.testing.assert_array_equal(w, [1.0, 2.0])  # bit-exact: the perturbed entry was put back


def test_the_difference_is_divided_by_the_step_taken_far_from_zero():
    """At |x| ~ 1e5 the stored x + h and x - h are 2h apart only to ~1e-6 relative (x's ulp is ~1.5e-11):
    dividing by 2h put the exact gradient of sum(sin(x)) 7e-6 off, past the 1e-6 the tests demand."""
    x = np.array([1e5 + 0.3, -2e5 + 1.1, 7e4 - 0.2])
    params = {"x": x.copy()}
    err = check_grads(lambda: float(np.sin(params["x"]).sum()), params, {"x": np.cos(x)})
    assert err < TOL


def test_huge_gradients_are_still_compared():
    """Entries past ~1e154 overflowed np.linalg.norm: inf / inf gave a NaN error, and check_grads' max()
    kept a finite error over it, so a gradient off by 2x passed. Now measured in units of the largest."""
    assert rel_error(np.array([1e160]), np.array([3e160])) == pytest.approx(2 / 3, rel=1e-14)
    assert rel_error(np.array([1e300, -1e300]), np.array([1e300, -1e300])) == 0.0
    params = {"a": np.array([1.0]), "b": np.array([2.0])}

    def f():
        return float(params["a"][0] + 1e160 * params["b"][0])

    assert check_grads(f, params, {"a": np.array([1.0]), "b": np.array([3e160])}, floor=1e-3) > 0.5


def test_grad_errors_names_the_wrong_array_and_checks_come_before_any_call():
    from minippo.gradcheck import grad_errors

    params = {"w": np.array([1.0, 2.0]), "v": np.array([0.5])}
    calls = []

    def f():
        calls.append(1)
        return float((params["w"] ** 2).sum() + 3.0 * params["v"][0])

    errs = grad_errors(f, params, {"w": 2.0 * params["w"], "v": np.array([30.0])})
    assert errs["w"] < TOL and errs["v"] > 0.5 and check_grads(f, params, {"w": 2.0 * params["w"],
                                                                          "v": np.array([30.0])}) == errs["v"]
    with pytest.raises(ValueError, match="^params is empty"):
        grad_errors(f, {}, {})
    calls.clear()
    ro = {"w": params["w"].copy(), "v": params["v"].copy()}
    ro["v"].flags.writeable = False  # the last array: found before w's differences are taken
    with pytest.raises(ValueError, match=r"^params\['v'\] is read-only"):
        numerical_grads(f, ro)
    mixed = {"w": params["w"].copy(), "v": params["v"].astype(np.float32)}
    with pytest.raises(TypeError, match=r"^params\['v'\] is float32"):
        numerical_grads(f, mixed)
    assert not calls
