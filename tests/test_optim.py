"""minippo.optim: Adam against its closed form, global-norm clipping, schedules, bad inputs.

Tolerances, and why (float64 unless said; u = 2^-53 ~ 1.1e-16):
- Adam against tests/reference.py's recursion and closed form: the same formulas with m and v summed
  and grouped in other orders, ~10 roundings a step, each relative to |theta0| + the steps taken (a step
  is <= sqrt(t) lr <= 2.5 lr, Cauchy-Schwarz on m_hat and v_hat): rtol 1e-12, atol 1e-14 for theta near 0
  (were 1e-9, 1e-12; observed <= 3.6e-15 absolute, <= 4.4e-16 of |theta0| + t lr, 20000 draws).
- Clipped Adam against hand-clipped textbook steps: the reference scales by max_norm / n, the library by
  max_norm / (n + 1e-12), a gradient smaller by <= 1e-12 / max_norm = 1e-11 relative; that moves each of
  <= 5 steps by <= 2 lr 1e-11, theta by <= 1e-12: atol 1e-12, rtol 1e-11 for the roundings (was 1e-9;
  observed <= 1.0e-13 absolute over 20000 draws).
- First steps against lr g / (|g| + eps) written out (and the step from t = 3 against its formula):
  m_hat = g and sqrt(v_hat) = |g| to a few ulps (c1 = 1 - b1 is m's own factor), ~8 roundings: rtol 1e-12
  (observed <= 1.2e-16). Against lr sign(g) the eps term itself differs, lr eps / |g| <= 1e-11 at
  g = -0.01: rtol 1e-10 (was numpy's 1e-7).
- Moments after one step from g = 1 against 0.1 and 1e-3: 1 - b is exact of the stored b, which is within
  half an ulp of 0.9 (0.999): <= 5.6e-16 (5.6e-14) relative: rel 1e-13 (were pytest.approx's and numpy's
  defaults, 1e-6 and 1e-7; observed 2.8e-16 and 8.7e-16).
- Norms: global_norm, Adam's flat norm and np.linalg.norm sum the same float64 squares (<= 64) in other
  orders, <= 32 u ~ 3.6e-15 relative after the square root: rel 1e-12 (observed <= 4e-16; abs 1e-300
  only for a zero norm). Squares of float32 entries are exact in float64: the 1e20 norms agree with the
  math.sqrt reference to a few u, rel 1e-12 (observed equal).
- The clip's scale is max_norm / (norm + 1e-12): clipped entries and norms sit 1e-12 / norm below
  max_norm / norm times the original, <= 1e-9 for norm >= 1e-3: rel 1e-8 (observed 7.1e-10); 2e-13 for
  the norm-5 gradients [3, 4]: rtol 1e-12 (was numpy's 1e-7 for [0.6, 0.8]). The clipped norm is held to
  <= max_norm exactly (was max_norm (1 + 1e-12), which let a scale of max_norm / (norm - 1e-12) pass for
  norms > 1): the offset, >= 1e-12 / 80 = 1.25e-14 (norms <= 80 here), exceeds the worst-case rounding of
  the scale, the products, <= 64 squares and two square roots (<= 7.5e-15); observed >= 2.3e-14 below.
  Adam's first moment of a clipped single array against (1 - 0.9) times clip_grad_norm's: the same
  operations on the same values, rtol 1e-14 (observed equal).
- float32 clipping: the scale is rounded to float32, then each product: <= 2 float32 roundings (<= 1.2e-7
  relative) per entry, so of the norm: rel 1e-6 (observed 1.3e-8). Adam's flat clip and clip_grad_norm
  get float64 scales a few u apart, which round to one float32 scale unless a float32 rounding boundary
  falls between them (not seen in ~1500 float32 draws); then m and p differ by <= 3 float32 ulps
  (rtol 1e-6) and v ~ g^2 by twice that (2e-6); atol 1e-12 for tiny and subnormal entries. float64: a
  few u, rtol 1e-12 (observed <= 9.6e-16).
- Schedules: ex(0) is start * 1.0 and lin(0.5) = 3e-4 / 2 exactly: compared with == (were pytest.approx, rel 1e-6).
  lin(p) against start (1 - p) + end p, and ex(p) against exp((1 - p) log start + p log end): each side a few
  roundings of values <= 10 (abs 1e-14), or of logs <= 9.3 in size (ulp 1.8e-15) before the exp (rel 1e-14); another
  form of each, so that a wrong formula cannot pass as its own copy (observed 1.8e-15 and 2.6e-15 over 200000 draws).
  lin(1) = start + (end - start), two roundings of values <= 10: abs 1e-14 (observed 1.8e-15; rel 1e-6 allowed 1e-10
  at end 1e-4). ex(1) = start * (end / start), two roundings: rel 1e-15 (observed 2.0e-16). log ex(0.5) against the
  mean of two logs: a few roundings, and logs of magnitude <= 9.3 (ulp 1.8e-15): abs 1e-14 (observed 1.8e-15). The
  range checks allow those roundings: 1e-14 absolute for lin, 1e-15 relative for ex (were 1e-12; observed 5.6e-17 and
  1.9e-16 outside).
"""

import itertools
import math
import re

import numpy as np
import pytest
import reference as ref
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minippo.optim import Adam, GradientOverflowError, Schedule, clip_grad_norm, global_norm, step_norm_limit

FAST = settings(max_examples=40, deadline=None)
finite = st.floats(-10, 10, allow_nan=False, width=64)


# ---------------------------------------------------------------- Adam
@FAST
@given(
    st.lists(finite, min_size=1, max_size=6),
    finite,
    st.floats(1e-4, 1e-1),
    st.floats(0.0, 0.99),
    st.floats(0.9, 0.9999),
    st.sampled_from([1e-8, 1e-5, 1e-3]),
)
def test_adam_matches_closed_form(grads_seq, theta0, lr, b1, b2, eps):
    """Scalar parameters, a few steps: the library equals both the recursive textbook update and
    the closed form m_t = (1-b1) sum_k b1^(t-k) g_k (and likewise v_t), with bias correction."""
    rec = ref.adam_steps(theta0, grads_seq, lr, b1, b2, eps)
    closed = ref.adam_closed_form(theta0, grads_seq, lr, b1, b2, eps)
    np.testing.assert_allclose(rec, closed, rtol=1e-12, atol=1e-14)
    params = {"w": np.array([theta0])}
    opt = Adam(params, lr=lr, betas=(b1, b2), eps=eps)
    for t, g in enumerate(grads_seq):
        opt.step({"w": np.array([g])})
        assert opt.t == t + 1
        assert params["w"][0] == pytest.approx(closed[t], rel=1e-12, abs=1e-14)


def test_adam_first_step_is_lr_times_sign():
    """With bias correction the first step is lr * g / (|g| + eps) ~ lr * sign(g)."""
    params = {"a": np.array([1.0, 1.0, 1.0]), "b": np.zeros((2, 2))}
    Adam(params, lr=0.1, eps=1e-12).step({"a": np.array([3.0, -0.01, 0.0]), "b": np.ones((2, 2))})
    np.testing.assert_allclose(params["a"], [0.9, 1.1, 1.0], rtol=1e-10)  # lr eps / |g| <= 1e-11 off lr sign(g)
    np.testing.assert_allclose(params["b"], -0.1, rtol=1e-10)


def test_adam_first_step_shrinks_for_gradients_below_eps():
    """docs/derivations.md section 11: the first step is lr * g / (|g| + eps), so with the default
    eps = 1e-5 a gradient of 1e-5 moves half a step and one of 1e-7 about a hundredth."""
    w = np.zeros(3)
    Adam({"w": w}, lr=1.0).step({"w": np.array([1.0, 1e-5, 1e-7])})
    # float64: m_hat = g and sqrt(v_hat) = |g| to a few ulps (1 - 0.9 and 1 - 0.999 are not exact), so 1e-12
    np.testing.assert_allclose(w, [-1.0 / (1.0 + 1e-5), -0.5, -1e-7 / (1e-7 + 1e-5)], rtol=1e-12)


def test_adam_updates_in_place_and_lr_override():
    w = np.zeros(3)
    params = {"w": w}
    opt = Adam(params, lr=1.0)
    opt.step({"w": np.ones(3)}, lr=0.01)
    assert params["w"] is w
    np.testing.assert_allclose(w, -0.01 / (1 + 1e-5), rtol=1e-12)  # the first step: lr g / (|g| + eps)


def test_adam_defaults_are_the_paper_settings_and_ppo_detail():
    """lr 3e-4 as in the paper's MuJoCo runs; betas (0.9, 0.999) as Kingma & Ba give them; eps 1e-5
    (PPO detail #3, not Adam's 1e-8)."""
    adam = Adam({"w": np.zeros(1)})
    assert (adam.lr, adam.betas, adam.eps) == (3e-4, (0.9, 0.999), 1e-5)


def test_adam_state_roundtrip():
    rng = np.random.default_rng(0)
    p1 = {"w": rng.normal(size=(2, 3))}
    p2 = {"w": p1["w"].copy()}
    a1, a2 = Adam(p1, lr=0.01), Adam(p2, lr=0.01)
    a1.step({"w": np.ones((2, 3))})
    a2.load_state_dict(a1.state_dict())
    p2["w"][...] = p1["w"]
    g = rng.normal(size=(2, 3))
    a1.step({"w": g})
    a2.step({"w": g.copy()})
    np.testing.assert_array_equal(p1["w"], p2["w"])
    bad = a1.state_dict()
    bad["m.w"] = np.zeros(4)
    with pytest.raises(ValueError, match=r"Adam m.w is float64 \(4,\), expected float64 \(2, 3\)"):
        a2.load_state_dict(bad)
    bad["m.w"] = np.zeros((2, 3), np.float32)  # not rounded silently into the float64 moments
    with pytest.raises(ValueError, match=r"Adam m.w is float32 \(2, 3\), expected float64 \(2, 3\)"):
        a2.load_state_dict(bad)
    good, m_before = a1.state_dict(), a2.m["w"].copy()
    good["m.w"] = np.full((2, 3), 7.0)
    good["v.w"] = np.zeros(4)  # checked after m.w: m.w must not be written either
    with pytest.raises(ValueError, match="Adam v.w"):
        a2.load_state_dict(good)
    np.testing.assert_array_equal(a2.m["w"], m_before)


def test_adam_state_dict_is_a_snapshot_and_load_refuses_bad_moment_values():
    """state_dict gave live views: a state taken at t=1 showed t=2's moments after a later step (and
    an edit of it edited the optimiser). load_state_dict took NaN or negative second moments, and the
    next step wrote NaN into every parameter."""
    params = {"w": np.zeros(2)}
    opt = Adam(params, lr=0.1)
    opt.step({"w": np.ones(2)})
    state = opt.state_dict()
    opt.step({"w": -np.ones(2)})
    assert state["t"] == 1 and state["m.w"] == pytest.approx(0.1, rel=1e-13)
    assert state["v.w"] == pytest.approx(1e-3, rel=1e-13)
    state["m.w"][...] = 5.0
    assert opt.m["w"].tolist() != [5.0, 5.0]
    good, before = opt.state_dict(), params["w"].copy()
    for key, bad in (("v.w", [-1.0, 0.0]), ("v.w", [np.nan, 0.0]), ("m.w", [np.inf, 0.0])):
        with pytest.raises(ValueError, match=re.escape(f"Adam moments ['{key}'] hold NaN, inf or (second "
                                                       "moments) negative values")):
            opt.load_state_dict({**good, key: np.array(bad)})
        assert opt.t == 2 and np.array_equal(opt.m["w"], good["m.w"]) and np.array_equal(opt.v["w"], good["v.w"])
    opt.load_state_dict({**good, "m.w": np.array([-3.0, 0.0])})  # a negative first moment is fine
    opt.step({"w": np.ones(2)})
    assert np.isfinite(params["w"]).all() and not np.array_equal(params["w"], before)


def test_adam_refuses_params_changed_after_it_was_made():
    """Adam's moments are laid out by the parameters it was made for: a parameter added later was
    never updated, and one rebound to another shape was updated by broadcasting."""
    params = {"w": np.zeros(3)}
    opt = Adam(params, lr=0.1)
    params["log_std"] = np.zeros(2)
    with pytest.raises(ValueError, match=re.escape("params has keys ['log_std'] added or removed since this Adam "
                                                   "was made: make a new Adam")):
        opt.step({"w": np.ones(3), "log_std": np.ones(2)})
    del params["log_std"]
    params["w"] = np.zeros((2, 3))
    with pytest.raises(ValueError, match=re.escape("params['w'] has shape (2, 3), but this Adam was made for (3,)")):
        opt.step({"w": np.ones(3)})
    assert opt.t == 0 and not params["w"].any()
    params["w"] = np.zeros(3)  # rebound to an array of the same shape: stepped as before
    opt.step({"w": np.ones(3)})
    np.testing.assert_allclose(params["w"], -0.1 / (1 + 1e-5), rtol=1e-12)  # a first step, as above


@FAST
@given(st.lists(hnp.arrays(np.float64, 3, elements=finite), min_size=1, max_size=5), st.floats(0.1, 20.0))
def test_clipped_adam_matches_the_textbook_steps_on_hand_clipped_gradients(grads_seq, max_norm):
    """Adam with max_grad_norm against an independent reference: each gradient scaled by
    min(1, max_norm / ||g||) by hand, then the textbook scalar Adam per element (tests/reference.py)."""
    clipped = [g * min(1.0, max_norm / n) if (n := math.sqrt(sum(x * x for x in g))) > 0 else g
               for g in grads_seq]
    params = {"w": np.zeros(3)}
    opt = Adam(params, lr=0.01)
    for g in grads_seq:
        opt.step({"w": g.copy()}, max_grad_norm=max_norm)
    want = [ref.adam_steps(0.0, [c[i] for c in clipped], 0.01, 0.9, 0.999, 1e-5)[-1] for i in range(3)]
    np.testing.assert_allclose(params["w"], want, rtol=1e-11, atol=1e-12)  # the reference's clip lacks + 1e-12


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copied_adam_reports_and_loads_the_moments_it_uses(how):
    """m and v are views of the flat moments; copied one by one they were cut off from them, so a
    copy's state_dict reported stale moments and load_state_dict set moments the step never read."""
    import copy
    import pickle

    params = {"w": np.zeros(3), "b": np.zeros(2)}
    opt = Adam(params, lr=0.1)
    opt.step({"w": np.ones(3), "b": np.ones(2)})
    twin = copy.deepcopy(opt) if how == "deepcopy" else pickle.loads(pickle.dumps(opt))
    twin.step({"w": np.ones(3), "b": np.ones(2)})
    assert np.shares_memory(twin.m["w"], twin._m) and not np.shares_memory(twin._m, opt._m)
    np.testing.assert_array_equal(twin.state_dict()["m.w"], twin._m[:3])
    state = twin.state_dict()
    state["m.w"] = np.full(3, 7.0)
    twin.load_state_dict(state)
    assert twin._m[:3].tolist() == [7.0, 7.0, 7.0]
    np.testing.assert_allclose(opt.m["w"], 0.1, rtol=1e-13)  # the original is its own
    assert opt.t == 1


def test_adam_bad_inputs():
    with pytest.raises(ValueError, match="lr must be a finite number >= 0, got -1.0"):
        Adam({"w": np.zeros(1)}, lr=-1.0)
    with pytest.raises(ValueError, match=r"lr must be a finite number >= 0, got inf"):
        Adam({"w": np.zeros(1)}, lr=float("inf"))  # was accepted, then refused only at step()
    with pytest.raises(ValueError, match=r"betas\[1\] must be a finite number in \[0, 1\), got 1.0"):
        Adam({"w": np.zeros(1)}, betas=(0.9, 1.0))
    with pytest.raises(TypeError, match=r"betas must be two numbers in \[0, 1\), got 0.9"):
        Adam({"w": np.zeros(1)}, betas=0.9)
    with pytest.raises(TypeError, match="betas\\[0\\] must be a finite number in \\[0, 1\\), got None"):
        Adam({"w": np.zeros(1)}, betas=(None, 0.999))
    with pytest.raises(ValueError, match="eps must be a finite number > 0, got inf"):
        Adam({"w": np.zeros(1)}, eps=float("inf"))  # every step would be 0
    with pytest.raises(TypeError, match="lr must be a finite number >= 0, got '1e-3'"):
        Adam({"w": np.zeros(1)}).step({"w": np.zeros(1)}, lr="1e-3")
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        Adam({"w": np.zeros(1)}, eps=0.0)
    with pytest.raises(KeyError, match=r"differing: \['v'\]"):
        Adam({"w": np.zeros(1)}).step({"w": np.zeros(1), "v": np.zeros(1)})


# ---------------------------------------------------------------- gradient clipping
@st.composite
def grad_dicts(draw):
    n = draw(st.integers(1, 4))
    out = {}
    for i in range(n):
        shape = draw(hnp.array_shapes(min_dims=1, max_dims=2, max_side=4))
        out[f"g{i}"] = draw(hnp.arrays(np.float64, shape, elements=finite))
    return out


@FAST
@given(grad_dicts(), st.floats(1e-3, 20.0))
def test_clip_grad_norm_caps_norm_and_keeps_direction(grads, max_norm):
    before = {k: v.copy() for k, v in grads.items()}
    norm = clip_grad_norm(grads, max_norm)
    flat_before = np.concatenate([v.ravel() for v in before.values()])
    flat_after = np.concatenate([v.ravel() for v in grads.values()])
    assert norm == pytest.approx(np.linalg.norm(flat_before), rel=1e-12, abs=1e-300)
    if norm <= max_norm:
        np.testing.assert_array_equal(flat_after, flat_before)  # small grads untouched
    else:
        # clip_grad_norm divides by (norm + 1e-12): relative offset <= 1e-9 for norm >= 1e-3
        assert global_norm(grads) == pytest.approx(max_norm, rel=1e-8)
        assert global_norm(grads) <= max_norm  # the 1e-12 offset outweighs the rounding
        # same direction: a positive multiple of the original vector
        scale = max_norm / norm
        np.testing.assert_allclose(flat_after, flat_before * scale, rtol=1e-8, atol=1e-300)


def test_clip_grad_norm_in_place_and_errors():
    g = {"a": np.array([3.0, 4.0])}
    arr = g["a"]
    assert clip_grad_norm(g, 1.0) == 5.0
    assert g["a"] is arr
    np.testing.assert_allclose(arr, [0.6, 0.8], rtol=1e-12)  # scale 1 / (5 + 1e-12): 2e-13 off
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="max_norm must be a finite number > 0"):
            clip_grad_norm({"a": np.ones(2)}, bad)
    with pytest.raises(FloatingPointError, match="gradient norm is nan"):
        clip_grad_norm({"a": np.array([np.nan])}, 1.0)
    with pytest.raises(FloatingPointError, match="gradient norm is inf"):
        clip_grad_norm({"a": np.array([np.inf])}, 1.0)
    big = {"a": np.full(4, 1e20, np.float32), "b": np.float32([3e19])}  # squares overflow float32
    want = math.sqrt(4 * float(np.float32(1e20)) ** 2 + float(np.float32(3e19)) ** 2)
    assert global_norm(big) == pytest.approx(want, rel=1e-12)
    assert clip_grad_norm(big, 1.0) == pytest.approx(want, rel=1e-12)
    assert np.isfinite(big["a"]).all() and global_norm(big) == pytest.approx(1.0, rel=1e-6)  # float32 entries


@FAST
@given(grad_dicts(), st.floats(1e-3, 20.0), st.sampled_from([np.float32, np.float64]))
def test_adam_clips_its_flat_gradient_as_clip_grad_norm_clips(grads, max_norm, dtype):
    """Adam.step(..., max_grad_norm) (the trainer's path) against clip_grad_norm + Adam.step: the same
    norm and the same step to rounding (one sum of squares over the flat gradient against one per
    array: float64 sums of the same float64 squares, ~1e-16 apart; the scale is then rounded to the
    dtype). Below max_norm the step is bit for bit the unclipped one. grads are not written."""
    grads = {k: g.astype(dtype) for k, g in grads.items()}
    given_grads = {k: g.copy() for k, g in grads.items()}
    params = {k: np.ones_like(g) for k, g in grads.items()}
    ref_params = {k: p.copy() for k, p in params.items()}
    opt, ref_opt = Adam(params, lr=1e-2), Adam(ref_params, lr=1e-2)
    ref_grads = {k: g.copy() for k, g in grads.items()}
    want = clip_grad_norm(ref_grads, max_norm)
    ref_opt.step(ref_grads)
    norm = opt.step(grads, max_grad_norm=max_norm)
    assert norm == pytest.approx(want, rel=1e-12, abs=1e-300)
    for k in grads:
        np.testing.assert_array_equal(grads[k], given_grads[k])
        if want <= max_norm and norm <= max_norm:  # not clipped: the same operations
            np.testing.assert_array_equal(params[k], ref_params[k])
            np.testing.assert_array_equal(opt.m[k], ref_opt.m[k])
        else:  # the scale may differ in its last bit (float32: ~6e-8 relative), and Adam's step with it
            tol = dict(rtol=1e-6, atol=1e-12) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-300)
            np.testing.assert_allclose(opt.m[k], ref_opt.m[k], **tol)
            np.testing.assert_allclose(opt.v[k], ref_opt.v[k], rtol=2 * tol["rtol"], atol=tol["atol"])
            np.testing.assert_allclose(params[k], ref_params[k], **tol)  # (float32: a flipped last bit of p)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_gradient_exactly_at_max_grad_norm_is_not_scaled(dtype):
    """Clipping scales only a norm above max_grad_norm (clip_grad_norm's rule): at the norm itself the
    step is the unclipped one bit for bit (a scale max / (norm + 1e-12) would shift its last bits)."""
    grads = {"a": np.array([0.3, 0.4], dtype), "b": np.zeros((2, 2), dtype)}  # norm 0.5 in float64
    norm_sq = float(np.vdot(grads["a"].astype(np.float64), grads["a"].astype(np.float64)))
    runs = []
    for max_norm in (0.0, np.sqrt(norm_sq)):
        opt = Adam({k: np.ones_like(g) for k, g in grads.items()}, lr=0.1)
        for _ in range(2):
            norm = opt.step(grads, max_grad_norm=max_norm)
        runs.append((opt.params["a"].copy(), opt.m["a"].copy()))
    assert norm == max_norm > 0
    for got, want in zip(runs[1], runs[0], strict=True):
        np.testing.assert_array_equal(got, want)


def test_adam_refuses_read_only_params_and_a_bad_state():
    """A read-only parameter was accepted, and the first step failed half-way (t, the moments and
    the parameters before it changed); a state's t of -5 was kept and 1.7 cut to 1."""
    ro = np.ones(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\['b'\] is read-only: Adam updates every parameter in place"):
        Adam({"a": np.ones(2), "b": ro})
    with pytest.raises(ValueError, match=r"params\['a'\] is read-only"):
        Adam({"a": np.broadcast_to(np.ones(1), (3,))})
    opt = Adam({"a": np.ones(2)})
    state = opt.state_dict()
    for t, err in ((-5, ValueError), (1.7, TypeError), ("3", TypeError)):
        with pytest.raises(err, match=rf"state\['t'\] must be an integer >= 0, got {t!r}"):
            opt.load_state_dict({**state, "t": t})
    with pytest.raises(TypeError, match=r"state\['m.a'\] must be an array"):
        opt.load_state_dict({**state, "m.a": [0.0, 0.0]})
    opt.load_state_dict({**state, "t": np.int64(4)})
    assert opt.t == 4 and type(opt.t) is int


def test_adam_step_clip_errors_change_nothing():
    """A non-finite norm raises before t, the moments or the parameters change; max_grad_norm is
    checked by name; <= 0 means no clipping (NaN returned), as in PPOConfig."""
    params = {"a": np.ones(2), "b": np.ones(3)}
    opt = Adam(params, lr=0.1)
    g = {"a": np.array([3.0, 4.0]), "b": np.zeros(3)}
    assert opt.step(g, max_grad_norm=1.0) == 5.0 and opt.t == 1
    np.testing.assert_allclose(opt.m["a"], 0.1 * np.array([0.6, 0.8]), rtol=1e-12)
    before = (opt.t, opt._m.copy(), opt._v.copy(), {k: p.copy() for k, p in params.items()})
    # not clipping too (max_grad_norm <= 0): an inf gradient made NaN parameters, where the fused
    # numba step raised with nothing changed
    for bad, clip in itertools.product((np.nan, np.inf), (1.0, 0.0, -1.0)):
        with pytest.raises(FloatingPointError, match=f"gradient norm is {bad}"):
            opt.step({"a": np.array([1.0, bad]), "b": np.zeros(3)}, max_grad_norm=clip)
    assert opt.t == before[0] and (opt._m == before[1]).all() and (opt._v == before[2]).all()
    assert all((params[k] == before[3][k]).all() for k in params)
    for bad in (np.nan, "1", None):
        with pytest.raises((TypeError, ValueError), match="max_grad_norm must be a finite number"):
            opt.step(g, max_grad_norm=bad)
    assert opt.t == 1
    assert math.isnan(opt.step(g)) and math.isnan(opt.step(g, max_grad_norm=-1.0)) and opt.t == 3
    big = {"a": np.full(2, 1e20, np.float32), "b": np.float32([3e19, 0, 0])}  # squares overflow float32
    p32 = {"a": np.ones(2, np.float32), "b": np.ones(3, np.float32)}
    want = math.sqrt(2 * float(np.float32(1e20)) ** 2 + float(np.float32(3e19)) ** 2)
    assert Adam(p32).step(big, max_grad_norm=1.0) == pytest.approx(want, rel=1e-12)
    assert np.isfinite(p32["a"]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_refuses_a_norm_whose_squares_overflow_its_second_moment(dtype):
    """Not clipping (max_grad_norm <= 0, or a max_grad_norm past the limit), a float32 gradient entry of
    1e20 passed the finite-norm check (summed in float64) and its square overflowed v to inf: every
    parameter it covered then stepped by m / inf = 0 for good, silently (session 68's audit: one reward
    of 1e30 froze the whole critic, and save() then refused the model). It raises now, nothing changed;
    just below optim.step_norm_limit the step is taken and v stays finite. (The limit keeps a factor 2
    on the norm: between it and twice it, the refused squares would still fit.)"""
    limit = step_norm_limit(dtype)
    assert limit == math.sqrt(float(np.finfo(dtype).max)) / 2
    params = {"a": np.ones(2, dtype), "b": np.ones(3, dtype)}
    opt = Adam(params)
    for max_grad_norm, how in ((0.0, r"not clipped: max_grad_norm <= 0"), (-1.0, "not clipped"),
                               (limit * 8, r"not clipped: max_grad_norm=.* is larger"),
                               (limit * 1.2, r"clipped to max_grad_norm=")):
        big = {"a": np.array([1.5 * limit, 0], dtype), "b": np.zeros(3, dtype)}  # (float64: < its norm's limit)
        with pytest.raises(GradientOverflowError, match=rf"gradient norm is .* \({how}.*\), past .*overflow Adam's "
                           f"{np.dtype(dtype)} second moment to inf.*max_grad_norm > 0.*norm_reward"):
            opt.step(big, max_grad_norm=max_grad_norm)
        assert opt.t == 0 and not opt._m.any() and not opt._v.any() and (params["a"] == 1).all()
    for max_grad_norm in (0.0, limit * 0.9):  # taken: unclipped just below the limit, or clipped to below it
        g = {"a": np.array([0.99 * limit, 0], dtype), "b": np.zeros(3, dtype)}
        opt.step(g, max_grad_norm=max_grad_norm)
        opt.step({"a": np.array([1.5 * limit, 0], dtype), "b": np.zeros(3, dtype)}, max_grad_norm=limit * 0.9)
        assert np.isfinite(opt._v).all() and np.isfinite(opt._m).all() and np.isfinite(params["a"]).all()
    assert opt.t == 4
    # the overflow the check prevents: the square of an entry past twice the limit is inf
    with np.errstate(over="ignore"):
        assert np.isinf(dtype(2.01 * limit) * dtype(2.01 * limit)) and np.isfinite(dtype(limit) * dtype(limit))


# ---------------------------------------------------------------- schedules
@FAST
@given(st.floats(1e-4, 10.0), st.floats(1e-4, 10.0), st.floats(0.0, 1.0))
def test_schedules(start, end, p):
    assert Schedule("constant", start, end)(p) == start
    lin = Schedule("linear", start, end)
    assert lin(0.0) == start and lin(1.0) == pytest.approx(end, rel=0, abs=1e-14)
    assert lin(p) == pytest.approx(start * (1 - p) + end * p, rel=0, abs=1e-14)  # another form: abs 1e-14
    ex = Schedule("exponential", start, end)
    assert ex(0.0) == start and ex(1.0) == pytest.approx(end, rel=1e-15)
    assert ex(p) == pytest.approx(math.exp((1 - p) * math.log(start) + p * math.log(end)), rel=1e-14, abs=0)
    # geometric: log-linear in progress
    assert math.log(ex(0.5)) == pytest.approx(0.5 * (math.log(start) + math.log(end)), rel=0, abs=1e-14)
    lo, hi = min(start, end), max(start, end)
    assert lo - 1e-14 <= lin(p) <= hi + 1e-14 and lo * (1 - 1e-15) <= ex(p) <= hi * (1 + 1e-15)


def test_schedule_clamps_progress_and_anneals_to_zero():
    lin = Schedule("linear", 3e-4, 0.0)
    assert lin(1.5) == 0.0 and lin(-1.0) == 3e-4 and lin(0.5) == 1.5e-4


def test_schedule_defaults_are_a_constant_one():
    """Schedule() is the constant 1.0 at every progress (end 0.0, the linear default's anneal-to-zero
    end, matters once a kind that uses it is given)."""
    s = Schedule()
    assert (s.kind, s.start, s.end) == ("constant", 1.0, 0.0)
    assert [s(p) for p in (0.0, 0.5, 1.0)] == [1.0, 1.0, 1.0]
    lin = Schedule("linear")
    assert [lin(p) for p in (0.0, 0.25, 1.0)] == [1.0, 0.75, 0.0]
    assert repr(s) == "Schedule('constant', start=1.0, end=0.0)"


def test_schedule_bad_inputs():
    with pytest.raises(ValueError, match=r"kind='cosine' is not allowed.*constant"):
        Schedule("cosine")
    for start, end in ((1.0, 0.0), (0.0, 1.0), (-1.0, 0.5), (0.5, -1.0)):  # 0 ** p or a negative base
        with pytest.raises(ValueError, match="exponential schedule needs start > 0 and end > 0"):
            Schedule("exponential", start, end)


def test_global_norm_past_float64_range_is_inf_without_a_warning():
    """Each array's sum of squares is finite, the total is not: inf, silently (clip_grad_norm then
    raises its own error), also under np.seterr(all="raise")."""
    big = np.full(1, 1.2e154)  # each sum of squares 1.44e308 is finite, their total is not
    with np.errstate(all="raise"):
        assert global_norm({"a": big, "b": big.copy()}) == float("inf")


def test_a_read_only_parameter_is_refused_before_anything_changes():
    """params[k] -= ... raised for a read-only array after t, both moments and the parameters before it
    had moved: a half-made step. Now refused with the others' checks, naming the array."""
    params = {"a": np.ones(3), "b": np.ones(2)}
    adam = Adam(params)
    params["b"].flags.writeable = False
    grads = {"a": np.full(3, 0.5), "b": np.full(2, 0.5)}
    with pytest.raises(ValueError, match=r"^params\['b'\] is read-only: Adam updates every parameter in place$"):
        adam.step(grads, 0.1)
    assert adam.t == 0 and not adam._m.any() and not adam._v.any()
    np.testing.assert_array_equal(params["a"], 1.0)


def test_load_state_dict_refuses_moments_with_no_step_counted():
    """t = 0 beside non-zero moments was loaded: the next step's bias corrections (1 - b1**1 = 0.1 for m)
    then scaled the old first moment up tenfold, a step ~10x lr. Zero moments at t = 0 (a fresh
    optimiser's state) load; so do moments at t >= 1."""
    opt = Adam({"w": np.zeros(3), "b": np.zeros(2)})
    fresh = opt.state_dict()
    opt.step({"w": np.ones(3), "b": np.zeros(2)})
    state = opt.state_dict()
    for key in ("m.w", "v.w"):
        target = Adam({"w": np.zeros(3), "b": np.zeros(2)})
        with pytest.raises(ValueError, match=rf"^state\['t'\] is 0 \(no step taken\) but Adam moments "
                                             rf"\['{key}'\] are not zero"):
            target.load_state_dict({**fresh, key: state[key]})
        assert target.t == 0 and not target._m.any() and not target._v.any()
    target.load_state_dict(fresh)
    target.load_state_dict(state)
    assert target.t == 1 and target.m["w"][0] == pytest.approx(0.1, rel=1e-13)


@pytest.mark.parametrize("drop", ["t", "m.w", "v.b"])
def test_load_state_dict_names_a_single_missing_key(drop):
    """Any one key of state_dict's missing is the ValueError naming it, nothing loaded (a check of
    ``missing and "t" not in state`` passed every test, which dropped all keys at once, and gave
    KeyError 't' or 'm.w' from further in)."""
    opt = Adam({"w": np.zeros(3), "b": np.zeros(2)})
    opt.step({"w": np.ones(3), "b": np.ones(2)})
    state = opt.state_dict()
    del state[drop]
    fresh = Adam({"w": np.zeros(3), "b": np.zeros(2)})
    with pytest.raises(ValueError, match=rf"state is missing \['{drop}'\] \(Adam.state_dict's keys\)"):
        fresh.load_state_dict(state)
    assert fresh.t == 0 and not fresh._m.any() and not fresh._v.any()


@pytest.mark.parametrize("g", [[3.0, 4.0], [3e-12, 4e-12]])
def test_adam_clips_to_at_most_max_grad_norm_as_clip_grad_norm_does(g):
    """Adam.step's clip is clip_grad_norm's, max_grad_norm / (norm + 1e-12): after one step the first
    moment is (1 - b1) times clip_grad_norm's clipped gradient, whose norm is at most max_grad_norm
    (``norm - 1e-12`` overshot by ~4e-13 relative at norm 5 and by 25% at 5e-12; a drawn test caught
    it about once in 8 runs)."""
    max_norm = float(np.linalg.norm(g)) / 5.0  # clipping by 5x
    opt = Adam({"w": np.zeros(2)}, lr=1e-3, betas=(0.9, 0.999))
    assert opt.step({"w": np.array(g)}, max_grad_norm=max_norm) == pytest.approx(5 * max_norm, rel=1e-12)
    clipped = {"w": np.array(g)}
    clip_grad_norm(clipped, max_norm)
    np.testing.assert_allclose(opt.m["w"], (1.0 - 0.9) * clipped["w"], rtol=1e-14, atol=0)
    assert np.linalg.norm(clipped["w"]) <= max_norm


def test_adam_hyperparameters_set_later_are_checked_or_fixed():
    """Set after construction, betas (1, 1) ended the next step in ZeroDivisionError, t = -5 wrote NaN
    into every parameter, and eps = -1e-5 took steps 26x larger without a word (a PPO checkpoint keeps
    neither betas nor eps). lr and t are settable and checked now; betas and eps are fixed."""
    params = {"w": np.ones(3)}
    adam = Adam(params, lr=0.1)
    for name, bad, error, msg in (("lr", -1.0, ValueError, "lr must be"), ("lr", "0.1", TypeError, "lr must be"),
                                  ("t", -5, ValueError, "t must be an integer >= 0"),
                                  ("t", 1.5, TypeError, "t must be an integer >= 0"),
                                  ("t", True, TypeError, "t must be an integer >= 0")):
        with pytest.raises(error, match=msg):
            setattr(adam, name, bad)
    for name, value in (("betas", (1.0, 1.0)), ("eps", -1e-5)):
        with pytest.raises(AttributeError,
                           match=rf"^Adam\.{name} is fixed at construction: Adam\(params, {name}=\.\.\.\)"):
            setattr(adam, name, value)
    assert (adam.lr, adam.t, adam.betas, adam.eps) == (0.1, 0, (0.9, 0.999), 1e-5)
    adam.lr, adam.t = 0.05, np.int64(3)  # taken: a numpy integer as a Python int
    assert type(adam.t) is int
    adam.step({"w": np.ones(3)})
    assert adam.t == 4 and np.isfinite(params["w"]).all()
    # the first step from t = 3: lr * m_hat / (sqrt(v_hat) + eps), m = 0.1 g, v = 0.001 g^2
    c1, c2 = 1 - 0.9**4, 1 - 0.999**4
    np.testing.assert_allclose(params["w"], 1 - 0.05 * (0.1 / c1) / (np.sqrt(0.001 / c2) + 1e-5), rtol=1e-12)
    import pickle

    clone = pickle.loads(pickle.dumps(adam))
    assert (clone.lr, clone.t, clone.betas, clone.eps) == (0.05, 4, (0.9, 0.999), 1e-5)
