"""minippo.losses: values against tests/reference.py, d_inputs against central differences, the
clip boundary cases (exactly zero gradient on the clipped side), value-loss clipping, AdaptiveKL,
statistics and bad inputs.

Tolerances, and why (float64 unless said; u = 2^-53 ~ 1.1e-16; "measured": the worst over 30000 draws
of the tests' ranges, edges included):
- Gradients: norm-wise relative error < 1e-6 (minippo.gradcheck.rel_error, floor 1e-3). Every loss here
  is piecewise smooth with O(1) curvature; samples are kept at least 1e-3 (in ratio or value) away from
  every kink, so a step of h = 1e-6 never crosses one and the central differences are accurate to ~1e-9.
- Policy losses and approx_kl against tests/reference.py (Python loops and math.exp against numpy's exp,
  expm1 and pairwise means): inputs in [-1, 1] make each term (r A, (r - 1) - log r, r A - beta KL with
  beta <= 5) <= 12.4 in size; each side rounds a term ~3 times and the mean of B <= 8 of them B - 1 more:
  <= ~1.5e-14 a side: abs 5e-14 (were 1e-12; measured 4.4e-16, 8.9e-16 for approx_kl, 1.3e-15 with the
  KL penalty). Value losses: squares of errors <= 6 (<= 4.4 clipped), <= 36, through ~10 roundings a
  side: abs 1e-13 (were 1e-12; measured 1.8e-15).
- Means against math.fsum / B (stats["kl"], the entropy bonus; each was a copy of the library's own
  expression): terms >= 0, so numpy's B - 1 additions, the division and the coefficient's product are
  <= (B + 2) u relative: rel 1e-14 (measured 4.8e-16); below the normal range (subnormal inputs or coef)
  each of the <= 3 last roundings is absolute instead, <= 2^-1075 = 2.5e-324: abs 1e-322 (were approx's rel
  1e-6 and its default abs 1e-12, which any mean below 1e-12 passed).
- Exact: clipfrac and vclipfrac are counts over B computed by the same mean of booleans on both sides
  (the drawn batches keep ratios and values >= 1e-3 from every clip boundary and tie, so the two
  predicates pick the same samples); gradients at r = exp(0) = 1 are -A / B on both sides, and the beta
  halvings and doublings of AdaptiveKL are exact in binary (were numpy's rtol 1e-12 and approx's 1e-6).
- The other tolerances are stated beside their checks.
"""

import math

import numpy as np
import pytest
import reference as ref
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minippo import losses
from minippo.gradcheck import check_grads

TOL = 1e-6
MARGIN = 1e-3  # distance kept from kinks, >> h = 1e-6
FAST = settings(max_examples=40, deadline=None)

eps_values = st.floats(0.05, 0.4)


@st.composite
def batches(draw, n_arrays=3, lo=-1.0, hi=1.0):
    """n_arrays float64 arrays of one shape (B,), B in [1, 8]."""
    b = draw(st.integers(1, 8))
    elems = st.floats(lo, hi, allow_nan=False, width=64)
    return [draw(hnp.arrays(np.float64, (b,), elements=elems)) for _ in range(n_arrays)]


def _grad_err(loss_fn, inputs, d_inputs):
    """check_grads over a dict of (B,) inputs; loss_fn reads the dict."""
    return check_grads(lambda: loss_fn(inputs), inputs, d_inputs)


# ---------------------------------------------------------------- PPO-clip
@FAST
@given(batches(), eps_values)
def test_clip_value_and_grad(arrays, clip_eps):
    logp, logp_old, adv = arrays
    ratio = np.exp(logp - logp_old)
    # keep r_t away from the kinks at 1 +- eps (the min switches branch there)
    assume(np.all(np.abs(ratio - (1 + clip_eps)) > MARGIN))
    assume(np.all(np.abs(ratio - (1 - clip_eps)) > MARGIN))
    loss, dlogp, stats = losses.clip_objective(logp, logp_old, adv, clip_eps)
    assert loss == pytest.approx(ref.clip_loss(logp, logp_old, adv, clip_eps), abs=5e-14)
    assert stats["approx_kl"] == pytest.approx(ref.approx_kl_k3(logp, logp_old), abs=5e-14)
    # the fraction of ratios that the clip moves (was the library's own |r - 1| test written out)
    assert stats["clipfrac"] == float(np.mean(np.clip(ratio, 1 - clip_eps, 1 + clip_eps) != ratio))
    inp = {"logp": logp}
    err = _grad_err(lambda p: losses.clip_objective(p["logp"], logp_old, adv, clip_eps)[0],
                    inp, {"logp": dlogp})
    assert err < TOL


@pytest.mark.parametrize(
    ("adv", "ratio", "zero"),
    [
        (1.0, 1.5, True),  # A > 0, r > 1 + eps: clipped, no incentive to push r further up
        (2.0, 1.21, True),
        (-1.0, 0.5, True),  # A < 0, r < 1 - eps: clipped, no incentive to push r further down
        (-3.0, 0.79, True),
        (1.0, 0.5, False),  # A > 0, r < 1 - eps: the min keeps the unclipped term
        (-1.0, 1.5, False),  # A < 0, r > 1 + eps: likewise (the pessimistic bound)
        (1.0, 1.1, False),  # inside [1 - eps, 1 + eps]
        (-1.0, 0.9, False),
        (0.5, 1.0, False),
    ],
)
def test_clip_boundary_cases(adv, ratio, zero):
    clip_eps = 0.2
    logp_old = np.array([-0.7, -1.2])
    logp = logp_old + math.log(ratio)
    a = np.array([adv, adv])
    _, dlogp, _ = losses.clip_objective(logp, logp_old, a, clip_eps)
    if zero:
        assert np.all(dlogp == 0.0)  # exactly zero, not merely small
    else:
        # r = exp((logp_old + log r) - logp_old): 3 roundings of the log-ratio (|.| <= 1.9) and exp's, then
        # r A / 2 once on each side: <= ~8e-16 relative: rtol 1e-14 (was 1e-12; measured 2.2e-16)
        np.testing.assert_allclose(dlogp, -ratio * a / 2, rtol=1e-14)
        assert np.all(dlogp != 0.0)


def test_ratio_terms_run_in_float64_for_float32_inputs():
    """r_t = exp(89) overflowed float32: an inf loss stopped numpy's training where the fused numba
    step (float64) went on with a clipped step. Now both compute r_t in float64: a finite loss, the
    gradient in the inputs' dtype, and the same numbers as float64 inputs give."""
    z = np.zeros(4, np.float32)
    lp, adv = z + 89, np.array([1.0, -1.0, 0.5, 2.0], np.float32)  # exp(89) = 4.5e38 > float32 max
    # every input is a float32 that widens exactly (integers and halves), and the ratio terms are the same
    # float64 operations on the same values: bit-equal; d32 is the float64 gradient rounded once to float32
    for fn, args in ((losses.clip_objective, (lp, z, adv, 0.2)), (losses.surrogate_objective, (lp, z, adv)),
                     (losses.kl_penalty_objective, (lp, z, adv, z + 1, 0.5))):
        loss32, d32, stats32 = fn(*args)
        loss64, d64, stats64 = fn(*(a.astype(np.float64) if isinstance(a, np.ndarray) else a for a in args))
        assert math.isfinite(loss32) and loss32 == loss64 and stats32 == stats64
        d32, d64 = (d32, d64) if isinstance(d32, np.ndarray) else (d32[0], d64[0])
        assert d32.dtype == np.float32 and np.array_equal(d32, d64.astype(np.float32))


def log_on(target, dtype):
    """A log-ratio x of the given dtype with exp(x) == target exactly (a neighbour of log(target))."""
    x = np.log(np.array(target, dtype=dtype))
    for _ in range(64):
        if np.exp(x) == target:
            return x
        x = np.nextafter(x, dtype(np.inf) if np.exp(x) < target else dtype(-np.inf))
    raise AssertionError(f"no {dtype.__name__} log lands on {target!r}")


@pytest.mark.parametrize("side", ["upper", "lower"])
def test_clipfrac_counts_what_the_clip_moves_at_the_tie(side):
    """A ratio exactly on a rounded bound, fl(1 + eps) (eps = 0.1: fl(1.1) > 1.1) with A > 0 or
    fl(1 - eps) with A < 0, is not clipped (its gradient is -r A / B), so clipfrac must not count
    it; |r - 1| > eps did at the upper one. One ulp past the bound it is clipped and counted.
    (Ratios are float64 for float32 inputs too.)"""
    dtype = np.float64
    eps = 0.1
    bound, past, sign = ((dtype(1.0 + eps), dtype(2), 1.0) if side == "upper" else
                         (dtype(1.0 - eps), dtype(0), -1.0))
    x = log_on(bound, dtype)
    if side == "upper":
        assert abs(np.exp(x) - 1) > eps  # the tie as |r - 1| > eps sees it
    logp_old, adv = np.zeros(2, dtype=dtype), np.full(2, sign, dtype=dtype)
    for logp0, clipped in [(x, False), (log_on(np.nextafter(bound, past), dtype), True)]:
        logp = np.array([logp0, 0.0], dtype=dtype)
        _, dlogp, stats = losses.clip_objective(logp, logp_old, adv, eps)
        assert (dlogp[0] == 0.0) == clipped
        assert stats["clipfrac"] == losses.ratio_stats(logp, logp_old, eps)["clipfrac"] == clipped / 2


@FAST
@given(batches(), eps_values)
# |A| the smallest subnormal: r A and clip(r) A both round to 5e-324, a tie (about 1 seed in 1000 drew one)
@example(arrays=[np.array([0.25]), np.array([0.0]), np.array([5e-324])], clip_eps=0.25)
@example(arrays=[np.array([-0.5]), np.array([0.0]), np.array([-5e-324])], clip_eps=0.25)
def test_clip_zero_gradient_region_property(arrays, clip_eps):
    """Hypothesis version: exactly zero gradient iff (A>0 & r>1+eps) or (A<0 & r<1-eps), except where
    r A and clip(r) A round to the same float (|A| subnormal): a tie keeps the unclipped gradient
    -r A / B (clip_objective's rule: the clipped branch only where it is strictly smaller)."""
    logp, logp_old, adv = arrays
    ratio = np.exp(logp - logp_old)
    _, dlogp, _ = losses.clip_objective(logp, logp_old, adv, clip_eps)
    tie = np.clip(ratio, 1 - clip_eps, 1 + clip_eps) * adv == ratio * adv
    clipped = (((adv > 0) & (ratio > 1 + clip_eps)) | ((adv < 0) & (ratio < 1 - clip_eps))) & ~tie
    assert np.all(dlogp[clipped] == 0.0)
    live = ~clipped & (adv != 0)
    # the library's own expression -r A / B on the same float64 r: bit-equal (measured; was rtol 1e-12). This
    # checks which branch is live; the value itself is checked by finite differences in test_clip_value_and_grad.
    np.testing.assert_array_equal(dlogp[live], -ratio[live] * adv[live] / len(adv))


@FAST
@given(batches(n_arrays=2), eps_values)
def test_at_theta_old_clip_surrogate_and_pg_share_the_gradient(arrays, clip_eps):
    """r_t = 1 at theta = theta^k: every rung of the ladder gives dL/dlogp = -A/B."""
    logp, adv = arrays
    expected = -adv / len(adv)
    for d in (
        losses.clip_objective(logp, logp.copy(), adv, clip_eps)[1],
        losses.surrogate_objective(logp, logp.copy(), adv)[1],
        losses.pg_objective(logp, adv)[1],
        losses.kl_penalty_objective(logp, logp.copy(), adv, np.zeros_like(adv), 1.0)[1][0],
    ):
        np.testing.assert_array_equal(d, expected)  # r = exp(0) = 1 exactly, so -r A / B is -A / B


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_approx_kl_nonnegative_near_ratio_one(dtype):
    """Regression: (exp(x) - 1) - x cancels for tiny x; it once gave -5e-48 (hypothesis). Each log-ratio
    alone: in one batch the -3e-4 entry's 4.5e-8 hid the others' errors (a mutant back to
    (exp(x) - 1) - x passed)."""
    tiny = np.finfo(dtype).tiny
    for x in (5.12526768e-48, 1e-20, -1e-12, 1e-7, -3e-4):
        logp = np.array([x], dtype=dtype)
        kl = losses.ratio_stats(logp, np.zeros_like(logp))["approx_kl"]
        assert kl >= 0.0, x
        x = float(logp[0])  # (as the dtype holds it; the k3 is computed in float64 from it)
        half_sq = x**2 / 2  # k3 ~ x^2 / 2 for small x, where that is a normal float
        if half_sq >= tiny:
            # k3 - x^2 / 2 = x^3 / 6 + x^4 / 24 + ... <= |x|^3 / 5 here, and expm1(x) - x is exact (Sterbenz)
            # after expm1's rounding, <= 4 ulps of x (libm's and SVML's bounds) = 2^-50 |x|. (Was rel 1e-3 with
            # approx's hidden abs 1e-12, which x^2 / 2 <= 5e-15 passed whatever k3 was: only -3e-4 was checked.
            # Measured <= 0.84 of this bound over 40000 x in [1e-48, 3e-4], both signs and dtypes.)
            assert abs(kl - half_sq) <= abs(x) ** 3 / 5 + 2.0**-50 * abs(x), x


def test_clip_dtype_float32_kept():
    logp = np.zeros(3, dtype=np.float32)
    _, d, _ = losses.clip_objective(logp, logp, np.ones(3, dtype=np.float32), 0.2)
    assert d.dtype == np.float32


def test_losses_and_stats_are_python_floats_on_numpy():
    """On numpy every loss and stat is a Python float (on cupy a 0-d device array, read back with
    the rest by to_floats): no test noticed 0-d numpy values instead (tools/mutate.py, session 52)."""
    x = np.array([0.1, -0.3, 0.2], np.float32)
    results = [losses.pg_objective(x, x), losses.surrogate_objective(x, x - 0.1, x),
               losses.clip_objective(x, x - 0.1, x, 0.2), losses.kl_penalty_objective(x, x - 0.1, x, np.abs(x), 0.5),
               losses.value_loss(x, x + 1), losses.value_loss(x, x + 1, x, 0.2), losses.entropy_bonus(x, 0.01)]
    for loss, _, stats in results:
        assert type(loss) is float and all(type(v) is float for v in stats.values()), (loss, stats)
    assert any(stats for _, _, stats in results)


# ---------------------------------------------------------------- other rungs of the ladder
@FAST
@given(batches())
def test_surrogate_value_and_grad(arrays):
    logp, logp_old, adv = arrays
    loss, dlogp, stats = losses.surrogate_objective(logp, logp_old, adv)
    assert loss == pytest.approx(ref.surrogate_loss(logp, logp_old, adv), abs=5e-14)
    assert stats["approx_kl"] == pytest.approx(ref.approx_kl_k3(logp, logp_old), abs=5e-14)
    assert stats["approx_kl"] >= 0
    err = _grad_err(lambda p: losses.surrogate_objective(p["logp"], logp_old, adv)[0],
                    {"logp": logp}, {"logp": dlogp})
    assert err < TOL


@FAST
@given(batches(n_arrays=2))
def test_pg_value_and_grad(arrays):
    logp, adv = arrays
    loss, dlogp, _ = losses.pg_objective(logp, adv)
    assert loss == pytest.approx(ref.pg_loss(logp, adv), abs=5e-14)
    err = _grad_err(lambda p: losses.pg_objective(p["logp"], adv)[0], {"logp": logp},
                    {"logp": dlogp})
    assert err < TOL


@FAST
@given(batches(n_arrays=4), st.floats(0.0, 5.0))
def test_kl_penalty_value_and_grads(arrays, beta):
    logp, logp_old, adv, kl = arrays
    kl = np.abs(kl)
    loss, (dlogp, dkl), stats = losses.kl_penalty_objective(logp, logp_old, adv, kl, beta)
    assert loss == pytest.approx(ref.kl_penalty_loss(logp, logp_old, adv, kl, beta), abs=5e-14)
    assert stats["kl"] == pytest.approx(math.fsum(kl) / len(kl), rel=1e-14, abs=1e-322) and stats["beta"] == beta
    inp = {"logp": logp, "kl": kl}
    err = _grad_err(
        lambda p: losses.kl_penalty_objective(p["logp"], logp_old, adv, p["kl"], beta)[0],
        inp, {"logp": dlogp, "kl": dkl},
    )
    assert err < TOL


# ---------------------------------------------------------------- AdaptiveKL
@pytest.mark.parametrize(
    ("kl", "factor"),
    [(0.0, 0.5), (0.006, 0.5), (0.0066, 0.5), (0.0067, 1.0), (0.01, 1.0), (0.015, 1.0),
     (0.0151, 2.0), (1.0, 2.0)],
)
def test_adaptive_kl_rule(kl, factor):
    """beta /= 2 below d_targ/1.5 (= 0.00667), *= 2 above 1.5 d_targ (= 0.015), else kept."""
    ak = losses.AdaptiveKL(kl_target=0.01, beta=0.8)
    assert ak.update(kl) == 0.8 * factor  # halving and doubling are exact
    assert ak.beta == 0.8 * factor


@pytest.mark.parametrize("target", [0.003, 0.01, 0.03, 0.7])
def test_adaptive_kl_keeps_beta_on_both_bounds(target):
    """The paper's rule is strict on both sides: d exactly d_targ / 1.5 or exactly 1.5 d_targ
    (the same floats the rule computes) keeps beta; the next float outward changes it."""
    for d, outward, factor in ((target / 1.5, 0.0, 0.5), (target * 1.5, np.inf, 2.0)):
        assert losses.AdaptiveKL(kl_target=target, beta=0.8).update(d) == 0.8
        assert losses.AdaptiveKL(kl_target=target, beta=0.8).update(np.nextafter(d, outward)) == 0.8 * factor


def test_adaptive_kl_starts_from_the_paper_settings():
    """The paper's settings: d_targ = 0.01, one of the three in Table 1; beta starts at 1 (section 4
    calls its start unimportant: the rule adapts it)."""
    ak = losses.AdaptiveKL()
    assert (ak.kl_target, ak.beta) == (0.01, 1.0)


@settings(max_examples=50, deadline=None)
@given(st.floats(1e-4, 1.0), st.floats(1e-3, 10.0), st.floats(0.0, 10.0))
def test_adaptive_kl_rule_property(target, beta, kl):
    ak = losses.AdaptiveKL(kl_target=target, beta=beta)
    new = ak.update(kl)
    if kl < target / 1.5:
        assert new == beta / 2
    elif kl > 1.5 * target:
        assert new == beta * 2
    else:
        assert new == beta


def test_adaptive_kl_beta_stays_positive_and_finite():
    """~1075 halvings would round beta to 0 and ~1024 doublings overflow it to inf, from where the
    rule could never bring it back (0 * 2 = 0, inf / 2 = inf). The smallest positive and the largest
    finite beta are kept instead, and the rule moves on from there."""
    ak = losses.AdaptiveKL(kl_target=0.01, beta=1.0)
    for _ in range(1100):
        ak.update(0.0)
    assert ak.beta == 5e-324  # the smallest positive float: halving it would give 0
    assert ak.update(1.0) == 1e-323  # and the next too-large KL doubles it again
    ak = losses.AdaptiveKL(kl_target=0.01, beta=1.0)
    for _ in range(1100):
        ak.update(1.0)
    assert ak.beta == 2.0**1023  # the largest power of 2 below float max: doubling it overflows
    assert ak.update(0.0) == 2.0**1022


def test_adaptive_kl_bad_inputs():
    with pytest.raises(ValueError, match="kl_target must be a finite number > 0"):
        losses.AdaptiveKL(kl_target=0.0)
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        losses.AdaptiveKL(beta=-1.0)
    with pytest.raises(FloatingPointError, match="kl is nan"):
        losses.AdaptiveKL().update(float("nan"))


# ---------------------------------------------------------------- value loss and entropy
@FAST
@given(batches(n_arrays=2, lo=-3, hi=3))
def test_value_loss_unclipped(arrays):
    values, returns = arrays
    loss, dv, stats = losses.value_loss(values, returns)
    assert loss == pytest.approx(ref.value_loss(values, returns), abs=1e-13)
    assert stats == {}
    err = _grad_err(lambda p: losses.value_loss(p["v"], returns)[0], {"v": values}, {"v": dv})
    assert err < TOL


@FAST
@given(batches(n_arrays=3, lo=-2, hi=2), eps_values)
def test_value_loss_clipped(arrays, clip_eps):
    values, returns, values_old = arrays
    delta = values - values_old
    assume(np.all(np.abs(np.abs(delta) - clip_eps) > MARGIN))  # off the clip kink
    v_clip = values_old + np.clip(delta, -clip_eps, clip_eps)
    assume(np.all(np.abs(np.abs(v_clip - returns) - np.abs(values - returns)) > MARGIN))  # max
    loss, dv, stats = losses.value_loss(values, returns, values_old, clip_eps)
    assert loss == pytest.approx(ref.value_loss(values, returns, values_old, clip_eps), abs=1e-13)
    take = (v_clip - returns) ** 2 > (values - returns) ** 2
    assert stats["vclipfrac"] == take.mean()
    # where the clipped error is the larger one, V_clip is constant in V: exactly zero gradient
    assert np.all(dv[take] == 0.0)
    err = _grad_err(lambda p: losses.value_loss(p["v"], returns, values_old, clip_eps)[0],
                    {"v": values}, {"v": dv})
    assert err < TOL


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_value_loss_inside_the_clip_range_is_never_clipped(dtype):
    """|V - V_old| < eps: V_clip = V in exact arithmetic; the rounded V_old + (V - V_old) may differ
    from V by an ulp, which must count neither as clipping nor change the gradient."""
    rng = np.random.default_rng(0)
    values, returns = rng.normal(size=(2, 4096)).astype(dtype)
    values_old = (values - rng.uniform(-0.19, 0.19, 4096)).astype(dtype)
    v_clip = values_old + (values - values_old)
    assert (v_clip != values).any()  # the rounding case really occurs in this batch
    loss, dv, stats = losses.value_loss(values, returns, values_old, 0.2)
    assert stats["vclipfrac"] == 0.0
    np.testing.assert_array_equal(dv, ((values - returns) / 4096).astype(dtype))
    # nothing clipped: the clipped form squares and averages the same V - R (was rel 1e-12; measured equal)
    assert loss == losses.value_loss(values, returns)[0]


def test_value_loss_tie_keeps_the_unclipped_gradient():
    """Outside the range, with (V_clip - R)^2 equal to (V - R)^2 (V_clip on the other side of R at
    the same distance), the max has two equal branches; the clipped one is taken only when its
    square is strictly larger (as in the fused numba step), so the unclipped gradient stays and the
    sample is not counted. One ulp more of distance for V_clip and it is clipped."""
    values, returns = np.array([1.0, 1.0]), np.zeros(2)
    values_old = np.array([-1.5, np.nextafter(-1.5, -2.0)])  # eps 0.5: V_clip = -1.0, just below
    loss, dv, stats = losses.value_loss(values, returns, values_old, 0.5)
    np.testing.assert_array_equal(dv, [0.5, 0.0])  # (V - R) / B on the tie, 0 where clipped
    assert stats["vclipfrac"] == 0.5
    # one rounding of 1 + e^2 on each side (the halvings are exact): rel 1e-15 (measured equal)
    assert loss == pytest.approx(0.5 * (1.0 + (values_old[1] + 0.5) ** 2) / 2, rel=1e-15)


def test_value_loss_clipped_examples():
    values_old = np.array([0.0, 0.0, 0.0])
    returns = np.array([1.0, 1.0, -1.0])
    values = np.array([0.5, -0.5, 0.1])  # beyond eps=0.2 upward (clip is closer to R: unclipped)
    loss, dv, _ = losses.value_loss(values, returns, values_old, 0.2)
    # sample 0: V=0.5, V_clip=0.2; (0.5-1)^2=0.25 < (0.2-1)^2=0.64 -> clipped, zero grad
    # sample 1: V=-0.5, V_clip=-0.2; 2.25 > 1.44 -> unclipped, grad (V-R)/B
    # sample 2: inside the clip range -> unclipped
    # V - R and / 3, 2 roundings, and the decimals' representation errors: rtol 1e-15, and for the loss's
    # squares, sum and halving ~8 u: rel 5e-15 (were numpy's 1e-7 and approx's 1e-6; measured 0 and 2.2e-16)
    np.testing.assert_allclose(dv, [0.0, -1.5 / 3, 1.1 / 3], rtol=1e-15)
    assert loss == pytest.approx(0.5 * (0.64 + 2.25 + 1.21) / 3, rel=5e-15)


@FAST
@given(batches(n_arrays=1, lo=0, hi=3), st.floats(0.0, 0.1))
def test_entropy_bonus(arrays, coef):
    (entropy,) = arrays
    loss, dh, _ = losses.entropy_bonus(entropy, coef)
    assert loss == pytest.approx(-coef * math.fsum(entropy) / len(entropy), rel=1e-14, abs=1e-322)
    err = _grad_err(lambda p: losses.entropy_bonus(p["h"], coef)[0], {"h": entropy}, {"h": dh})
    assert err < TOL


# ---------------------------------------------------------------- bad inputs
def test_losses_bad_shapes_named():
    ok = np.zeros(3)
    with pytest.raises(ValueError, match=r"logp must have shape \(B,\)"):
        losses.clip_objective(np.zeros((3, 1)), ok, ok, 0.2)
    with pytest.raises(ValueError, match=r"adv must have shape \(3,\) like logp"):
        losses.clip_objective(ok, ok, np.zeros(4), 0.2)
    with pytest.raises(ValueError, match=r"logp_old must have shape \(3,\)"):
        losses.surrogate_objective(ok, np.zeros(2), ok)
    with pytest.raises(ValueError, match=r"kl must have shape \(3,\)"):
        losses.kl_penalty_objective(ok, ok, ok, np.zeros(2), 1.0)
    with pytest.raises(ValueError, match=r"returns must have shape \(3,\) like values"):
        losses.value_loss(ok, np.zeros(2))
    with pytest.raises(ValueError, match=r"values_old must have shape \(3,\) like values"):
        losses.value_loss(ok, ok, np.zeros(2), 0.2)
    with pytest.raises(ValueError, match="logp is empty"):
        losses.pg_objective(np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match=r"entropy must have shape \(B,\)"):
        losses.entropy_bonus(np.zeros((2, 2)), 0.01)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("which", ["logp", "logp_old", "adv"])
def test_losses_nonfinite_named(bad, which):
    arrs = {"logp": np.zeros(3), "logp_old": np.zeros(3), "adv": np.ones(3)}
    arrs[which][1] = bad
    with pytest.raises(FloatingPointError, match=f"{which} contains NaN or inf"):
        losses.clip_objective(arrs["logp"], arrs["logp_old"], arrs["adv"], 0.2)


def test_clip_eps_is_any_positive_number():
    """clip_eps's domain is (0, inf): refused at 0 (above), taken however small. With eps = 1e-300
    every ratio off 1 is clipped (the surrogate becomes A_t's mean where the min picks the bound),
    and a value off V_old by more than 1e-300 counts as clipped wherever its square is larger."""
    logp_old, adv = np.zeros(3), np.array([1.0, -1.0, 1.0])
    logp = np.array([0.1, -0.1, 0.0])  # r = 1.105, 0.905, 1
    for eps in (1e-300, 5e-324):
        loss, dlogp, stats = losses.clip_objective(logp, logp_old, adv, eps)
        np.testing.assert_array_equal(dlogp[:2], 0.0)
        assert dlogp[2] == -1 / 3 and stats["clipfrac"] == 2 / 3  # r = exp(0) = 1; 2.0 / 3 is 2 / 3
        assert losses.ratio_stats(logp, logp_old, eps)["clipfrac"] == 2 / 3
        _, dv, vstats = losses.value_loss(np.array([1.0, 0.0]), np.array([0.0, 0.0]), np.array([0.5, 0.0]), eps)
        assert vstats["vclipfrac"] == 0.0 and dv[0] == 0.5  # V_clip = 0.5 is closer to R: unclipped
        _, dv, vstats = losses.value_loss(np.array([0.5, 0.0]), np.array([1.0, 0.0]), np.array([0.0, 0.0]), eps)
        assert vstats["vclipfrac"] == 0.5 and dv[0] == 0.0  # V_clip ~ 0 is farther: clipped


def test_losses_refuse_an_array_like_without_a_dtype():
    """An object with ndim but no dtype (a memoryview) is refused by name, like a list."""
    ok = np.zeros(3)
    for bad in ([0.0, 0.0, 0.0], memoryview(ok)):
        with pytest.raises(TypeError, match="adv must be a float32 or float64 array of shape"):
            losses.clip_objective(ok, ok, bad, 0.2)


def test_losses_bad_scalars_named():
    ok = np.zeros(3)
    for eps in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="clip_eps must be a finite number > 0"):
            losses.clip_objective(ok, ok, ok, eps)
        with pytest.raises(ValueError, match="clip_eps must be a finite number > 0"):
            losses.value_loss(ok, ok, ok, eps)
    for beta in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
            losses.kl_penalty_objective(ok, ok, ok, ok, beta)
    with pytest.raises(ValueError, match="values_old is required"):
        losses.value_loss(ok, ok, None, 0.2)
    with pytest.raises(FloatingPointError, match="values contains NaN or inf"):
        losses.value_loss(np.array([np.nan]), np.zeros(1))
