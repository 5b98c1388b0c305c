"""kernels/cpu_act.py (the fused numba ``ActorCritic.act``) against ``ActorCritic.act`` on the numpy path,
and its dispatch from ``ActorCritic.act``.

Two references, each drawing from a Generator with the same seed as the kernel's:
- the numpy backend (BLAS matmuls, numpy tanh, float32 softmax): values and dist params to rounding,
  logp to rounding, actions identical except where u lies within rounding of a CDF boundary
  (Categorical) or to rounding (Gaussian: the mean itself differs by rounding);
- the numba backend with the fused act switched off (``cpu_act.MAX_BATCH = 0``): the MLPs then run
  through the same ``kernels.cpu._dense`` code, so values, dist params and actions are identical
  (Gaussian actions too: the kernel rounds mean + std * eps as numpy does, with numpy's std).

Tolerances, and why (observed: the worst over 600 draws of each property test, or on the fixed case):
- Against the numpy path (TOL): float64 differs only in summation order and libm vs numpy exp/log:
  1e-12 relative, absolute 1e-12 times max(1, largest |entry|) (for logp 1 + largest |logp|). float32:
  the kernel's tanh is the rational approximation of kernels/cpu.py (<= 8 ulp), BLAS sums in another
  order, and the distribution runs in float64 where numpy stays in float32: a few float32 roundings of
  O(1) numbers, 2e-6 relative and 2e-6 times the scale (observed 0.32 of TOL for the values, 0.26 for
  actions and dist params, 0.15 for logp). Gaussian actions move with their mean; a mean shifted by
  whole ulps shifts mean + std eps by the same ulps, so (a - mean) / std, and logp, barely move even
  where std = exp(-10) (test_log_std_below_...: float32 was 1e-5, now TOL's 2e-6; observed 0.05 of it).
- Against the unfused numba path: the same layer code on the same rows, so values, dist params and
  actions are compared with ==; logp is the kernel's float64 distribution rounded once against numpy's
  distribution in the dtype: TOL (observed 0.05 of it).
- Categorical actions may differ only where u lies within the two CDFs' difference of a boundary: a
  sum of <= 6 probabilities, each a few ulps apart (~1e-6 in float32, ~1e-15 in float64), so a row
  may differ only if u is within 1e-5 (float32) / 1e-12 (float64) of one.
- v0 + k against an act after the bias was moved by k: rtol 1e-6, ~8 ulps of the values (|v| ~ 2 to 5
  on the fixed cases, where the sums' roundings happen; observed 0.22 of it). log_std moved by 0.5 in place (or
  rebound to log_std + 0.5) against the old dist params + 0.5: the same float32 addition of the same
  operands, inside the clamp's range: compared with == (was rtol 1e-6; observed equal).
- The fused act against the plain-loop oracle (float64): the same formulas in another grouping and
  summation order, ~10 roundings of values <= 10 per stage: rtol 1e-12, atol 1e-12 (observed 3.6e-15
  absolute, 5.5e-4 of the bound, over 300 draws).
"""

import math
import os

import numpy as np
import pytest
from fixed_draws import FixedDraws
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("numba")

from minippo.kernels import cpu_act  # noqa: E402

from minippo import backend  # noqa: E402
from minippo.nn import MLP  # noqa: E402
from minippo.policy import ActorCritic  # noqa: E402
from minippo.spaces import Box, Discrete  # noqa: E402

SLOW = settings(max_examples=60, deadline=None)  # deadline=None: the first examples compile
TOL = {np.float32: 2e-6, np.float64: 1e-12}
OBS_DIM = 5


@pytest.fixture(scope="module", autouse=True)
def _restore_backend():
    before = os.environ.get(backend.ENV_VAR)
    yield
    if before is None:
        os.environ.pop(backend.ENV_VAR, None)
    else:
        os.environ[backend.ENV_VAR] = before
    backend.reset()


def use_backend(name):
    """Switch MINIPPO_BACKEND for this module's tests (restored after the module)."""
    os.environ[backend.ENV_VAR] = name
    backend.reset()


def _policy(dtype, discrete, hidden, activation, seed, temperature=1.0, n_actions=3, shared=False):
    space = Discrete(n_actions) if discrete else Box(-np.ones(n_actions), np.ones(n_actions))
    pol = ActorCritic(OBS_DIM, space, hidden, activation, shared, -0.3, seed, dtype, temperature)
    rng = np.random.default_rng(seed)
    for p in pol.params.values():  # move off the zero-bias, tiny-head init: spread-out probabilities
        p += (0.3 * rng.normal(size=p.shape)).astype(dtype)
    return pol


def _obs(B, seed, dtype):
    return np.random.default_rng(seed + 7).normal(size=(B, OBS_DIM)).astype(dtype)


def _act(pol, obs, seed, deterministic):
    """policy.act with a fresh Generator(seed); also returns the Generator's next draw."""
    rng = np.random.default_rng(seed)
    out = pol.act(obs, rng, deterministic)
    return out, rng.random()


def _unfused_act(pol, obs, seed, deterministic):
    """_act with the fused act switched off: the numpy path (its MLPs still through kernels/cpu.py)."""
    saved = cpu_act.MAX_BATCH
    cpu_act.MAX_BATCH = 0
    try:
        return _act(pol, obs, seed, deterministic)
    finally:
        cpu_act.MAX_BATCH = saved


def _cdf_gap(pol, obs, seed):
    """Per sample: distance of the drawn u from the nearest CDF boundary (numpy path's probabilities)."""
    u = np.random.default_rng(seed).random((obs.shape[0], 1))
    cdf = np.cumsum(pol.forward(obs)[0].probs.astype(np.float64), axis=1)
    return np.abs(u - cdf).min(axis=1)


def _assert_close(fused, ref, dtype, what):
    tol = TOL[dtype]
    scale = max(float(np.abs(ref).max()) if ref.size else 0.0, 1.0)
    np.testing.assert_allclose(fused, ref, rtol=tol, atol=tol * scale, err_msg=what)


# (hidden, shared): a shared trunk needs a hidden layer; its trunks of depth 1 and 2 (each depth and
# dtype is a compile of its own)
NETS = [((64, 64), False), ((8,), False), ((16, 9, 7), False), ((), False), ((64, 64), True), ((8,), True)]


@SLOW
@given(
    dtype=st.sampled_from([np.float32, np.float64]),
    discrete=st.booleans(),
    nets=st.sampled_from(NETS),
    activation=st.sampled_from(["tanh", "relu"]),
    B=st.sampled_from([1, 2, 5, 8, 64]),
    temperature=st.sampled_from([1.0, 0.5, 2.0]),
    n_actions=st.sampled_from([1, 2, 3, 6]),
    deterministic=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_fused_act_matches_numpy_act(
    dtype, discrete, nets, activation, B, temperature, n_actions, deterministic, seed
):
    hidden, shared = nets
    pol = _policy(dtype, discrete, hidden, activation, seed, temperature, n_actions, shared)
    obs = _obs(B, seed, dtype)
    use_backend("numpy")
    (a_ref, lp_ref, v_ref, d_ref), next_ref = _act(pol, obs, seed, deterministic)
    gap = _cdf_gap(pol, obs, seed) if discrete else None
    use_backend("numba")
    assert cpu_act.act(pol, obs, np.random.default_rng(seed), deterministic) is not None  # it applies
    (a, lp, v, d), next_fused = _act(pol, obs, seed, deterministic)
    assert next_fused == next_ref  # the random stream was consumed identically
    for got, ref in ((a, a_ref), (lp, lp_ref), (v, v_ref), (d, d_ref)):
        assert type(got) is np.ndarray and got.dtype == ref.dtype and got.shape == ref.shape
    if discrete:
        # identical but where u sits within rounding of a CDF boundary (or, for the mode, logits tie)
        differ = a != a_ref
        assert not deterministic or not differ.any()
        # both CDFs sum <= 6 probabilities, each a few ulps off the other's: ~1e-6 in float32, ~1e-15 in
        # float64, so a u closer than 1e-5 / 1e-12 to a boundary may pick either side
        assert np.all(gap[differ] < (1e-5 if dtype == np.float32 else 1e-12)), (a, a_ref, gap)
        same = ~differ  # a differing row's logp is another action's: the rows that agree are compared
    else:
        _assert_close(a, a_ref, dtype, "actions")
        same = np.ones(B, dtype=bool)
    _assert_close(v, v_ref, dtype, "values")
    _assert_close(d, d_ref, dtype, "dist params")
    tol = TOL[dtype]
    np.testing.assert_allclose(lp[same], lp_ref[same], rtol=tol, atol=tol * (1.0 + float(np.abs(lp_ref).max())),
                               err_msg="logp")


@SLOW
@given(
    dtype=st.sampled_from([np.float32, np.float64]),
    discrete=st.booleans(),
    nets=st.sampled_from([n for n in NETS if n[0] != (16, 9, 7)]),
    activation=st.sampled_from(["tanh", "relu"]),
    B=st.sampled_from([1, 3, 8]),
    temperature=st.sampled_from([1.0, 0.7]),
    deterministic=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_fused_act_matches_the_unfused_numba_path_exactly(
    dtype, discrete, nets, activation, B, temperature, deterministic, seed
):
    """Bit for bit (but logp, in float64 here): the same layer code on the same rows, a shared trunk's
    features computed once for both heads as ``ActorCritic.forward`` computes them."""
    use_backend("numba")
    hidden, shared = nets
    pol = _policy(dtype, discrete, hidden, activation, seed, temperature, shared=shared)
    obs = _obs(B, seed, dtype)
    (a, lp, v, d), next_fused = _act(pol, obs, seed, deterministic)
    (a_ref, lp_ref, v_ref, d_ref), next_ref = _unfused_act(pol, obs, seed, deterministic)
    assert next_fused == next_ref
    np.testing.assert_array_equal(a, a_ref)  # a CDF-boundary tie would need u within ~1e-16 of it
    np.testing.assert_array_equal(v, v_ref)
    np.testing.assert_array_equal(d, d_ref)
    tol = TOL[dtype]
    np.testing.assert_allclose(lp, lp_ref, rtol=tol, atol=tol * (1.0 + float(np.abs(lp_ref).max())))


@pytest.mark.parametrize("share_dict", [False, True])
@pytest.mark.parametrize("acted_before", [False, True])
def test_a_network_of_another_activation_swapped_in_runs_as_numpy_runs_it(share_dict, acted_before):
    """The kernel applies the policy's activation to every network: a relu actor swapped into a tanh
    policy (holding the same arrays) ran as tanh. One holding the very same params dict, after a
    first act, also kept the old state (the state knew the dicts, not the networks)."""
    use_backend("numba")
    pol = _policy(np.float32, True, (8,), "tanh", 1)
    obs = _obs(16, 1, np.float32)
    tanh_out = _act(pol, obs, 0, False)[0] if acted_before else None
    relu = MLP([OBS_DIM, 8, 3], activation="relu")
    if share_dict:
        relu.params = pol.actor.params
    else:
        relu.params.update({k: pol.params[f"actor.{k}"] for k in relu.params})
    pol.actor = relu
    got, want = _act(pol, obs, 0, False), _unfused_act(pol, obs, 0, False)
    assert not pol.__dict__["_numba_act_state"].ok
    for g, w in zip(got[0], want[0], strict=True):
        np.testing.assert_array_equal(g, w)
    if tanh_out is not None:
        assert not np.array_equal(got[0][3], tanh_out[3])  # (relu's logits are another network's)


def test_in_place_updates_are_seen_and_rebinding_rebuilds_the_state():
    # (rtol 1e-6 below and in the next tests: float32 v0 + k against a value the kernel rounds once more,
    # a few ulps of 6e-8; a stale state would be off by the whole shift, 0.5 or more)
    use_backend("numba")
    pol = _policy(np.float32, True, (8,), "tanh", 1)
    obs = _obs(4, 1, np.float32)
    v0 = pol.act(obs, np.random.default_rng(0))[2]
    state = pol.__dict__["_numba_act_state"]
    pol.params["critic.b1"] += np.float32(1.0)  # as Adam writes: in place
    v1 = pol.act(obs, np.random.default_rng(0))[2]
    assert pol.__dict__["_numba_act_state"] is state
    np.testing.assert_allclose(v1, v0 + 1.0, rtol=1e-6)
    new = pol.params["critic.b1"] + np.float32(1.0)  # rebound: a new array object
    pol.params["critic.b1"] = pol.critic.params["b1"] = new
    v2 = pol.act(obs, np.random.default_rng(0))[2]
    assert pol.__dict__["_numba_act_state"] is not state
    np.testing.assert_allclose(v2, v0 + 2.0, rtol=1e-6)
    pol.critic.params["b1"] = new + np.float32(1.0)  # rebound in the MLP alone: the policy's dict follows
    assert pol.params["critic.b1"] is pol.critic.params["b1"]  # (nn.Params.links)
    v3 = pol.act(obs, np.random.default_rng(0))[2]
    np.testing.assert_allclose(v3, v0 + 3.0, rtol=1e-6)
    np.testing.assert_allclose(v3, _unfused_act(pol, obs, 0, False)[0][2], rtol=1e-6)
    # the two dicts made to disagree (only by going round Params' writes): read as numpy reads it, the MLP's
    dict.__setitem__(pol.critic.params, "b1", new + np.float32(2.0))
    pol.critic.params.version += 1
    v4 = pol.act(obs, np.random.default_rng(0))[2]
    np.testing.assert_allclose(v4, v0 + 4.0, rtol=1e-6)
    np.testing.assert_array_equal(v4, _unfused_act(pol, obs, 0, False)[0][2])
    import pickle

    clone = pickle.loads(pickle.dumps(pol))  # the compiled dispatch state is not pickled
    assert "_numba_act_state" not in clone.__dict__
    np.testing.assert_array_equal(clone.act(obs, np.random.default_rng(0))[2], v4)
    # log_std belongs to no MLP: only the identity of the policy's own arrays shows it rebound
    gauss = _policy(np.float32, False, (8,), "tanh", 1)
    d0 = gauss.act(obs, np.random.default_rng(0))[3]
    state = gauss.__dict__["_numba_act_state"]
    gauss.params["log_std"] = gauss.params["log_std"] + np.float32(0.5)
    d1 = gauss.act(obs, np.random.default_rng(0))[3]
    assert gauss.__dict__["_numba_act_state"] is not state
    np.testing.assert_array_equal(d1[:, :3], d0[:, :3])  # the means; then log_std, moved by 0.5
    np.testing.assert_array_equal(d1[:, 3:], d0[:, 3:] + np.float32(0.5))  # the same float32 addition
    np.testing.assert_array_equal(d1, _unfused_act(gauss, obs, 0, False)[0][3])
    # a shared trunk's array rebound in the trunk's own dict alone: seen (that dict's version), rebound
    # in the policy's too, and the act reads what numpy reads
    sh = _policy(np.float32, True, (8,), "tanh", 1, shared=True)
    v0 = sh.act(obs, np.random.default_rng(0))[2]
    assert sh.__dict__["_numba_act_state"].ok
    sh.trunk.params["b0"] = sh.trunk.params["b0"] + np.float32(1.0)
    assert sh.params["trunk.b0"] is sh.trunk.params["b0"]
    v1 = sh.act(obs, np.random.default_rng(0))[2]
    assert not np.array_equal(v1, v0)
    np.testing.assert_allclose(v1, _unfused_act(sh, obs, 0, False)[0][2], rtol=1e-6)


def test_the_state_check_by_version_and_by_identity_see_the_same_rebindings():
    """ActorCritic.params is a versioned nn.Params: the state is kept while its version stands, and
    a write that rebinds nothing (an update with the same arrays) costs one comparison of every array
    by identity, not a rebuild. A plain dict put in its place is checked array by array on every call, and still sees a
    rebinding."""
    from minippo.nn import Params

    use_backend("numba")
    pol = _policy(np.float32, True, (8,), "tanh", 1)
    obs = _obs(4, 1, np.float32)
    assert type(pol.params) is Params
    v0 = pol.act(obs, np.random.default_rng(0))[2]
    state = pol.__dict__["_numba_act_state"]
    assert state.pdict is pol.params and state.pversion == pol.params.version
    pol.params.update(dict(pol.params))  # the same arrays: the version moves, the state stays
    np.testing.assert_array_equal(pol.act(obs, np.random.default_rng(0))[2], v0)
    assert pol.__dict__["_numba_act_state"] is state and state.pversion == pol.params.version
    pol._params = dict(pol.params)  # a plain dict (round the fixed property): no version, so each call compares
    np.testing.assert_array_equal(pol.act(obs, np.random.default_rng(0))[2], v0)
    assert pol.__dict__["_numba_act_state"] is state and state.pversion is None
    new = pol.params["critic.b1"] + np.float32(1.0)
    pol.params["critic.b1"] = pol.critic.params["b1"] = new  # rebound in the plain dict (and the MLP)
    v1 = pol.act(obs, np.random.default_rng(0))[2]
    assert pol.__dict__["_numba_act_state"] is not state
    np.testing.assert_allclose(v1, v0 + 1.0, rtol=1e-6)
    # (the unfused path's critic runs numpy's BLAS here: b1 is no longer a view of the MLP's flat buffer)
    _assert_close(v1, _unfused_act(pol, obs, 0, False)[0][2], np.float32, "values")
    gauss = _policy(np.float32, False, (8,), "tanh", 1)  # log_std, in no MLP: only the policy's dict
    d0 = gauss.act(obs, np.random.default_rng(0))[3]
    other = Params({**gauss.params, "log_std": gauss.params["log_std"] + np.float32(0.5)})
    other.version = gauss.params.version  # another Params at the same version: not the same dict
    gauss._params = other
    d1 = gauss.act(obs, np.random.default_rng(0))[3]
    np.testing.assert_array_equal(d1[:, 3:], d0[:, 3:] + np.float32(0.5))  # the same float32 addition
    gauss._params = dict(gauss.params)
    np.testing.assert_array_equal(gauss.act(obs, np.random.default_rng(0))[3], d1)  # seen with the plain dict
    gauss.params["log_std"] = gauss.params["log_std"] + np.float32(0.5)
    np.testing.assert_array_equal(gauss.act(obs, np.random.default_rng(0))[3][:, 3:], d1[:, 3:] + np.float32(0.5))


def _assert_same_as_numpy_path(pol, obs, seed=3):
    (a, lp, v, d), n1 = _act(pol, obs, seed, False)
    (a2, lp2, v2, d2), n2 = _unfused_act(pol, obs, seed, False)
    assert n1 == n2
    np.testing.assert_array_equal(a, a2)
    # (a Fortran-order obs sends the unfused path's MLPs to BLAS: to rounding only)
    for x, y, what in ((lp, lp2, "logp"), (v, v2, "values"), (d, d2, "dist params")):
        _assert_close(x, y, pol.dtype.type, what)


def test_unsupported_setups_fall_back_to_the_numpy_path(monkeypatch):
    use_backend("numba")
    obs = _obs(4, 0, np.float32)
    rng = np.random.default_rng(0)
    ok = _policy(np.float32, True, (8,), "tanh", 1)
    assert cpu_act.act(ok, obs, rng) is not None
    assert cpu_act.act(ok, _obs(cpu_act.MAX_BATCH + 1, 0, np.float32), rng) is None  # large batch: BLAS
    assert cpu_act.act(ok, obs[:0], rng) is None
    assert cpu_act.act(ok, obs.tolist(), rng) is None
    assert cpu_act.act(ok, obs[:, :3], rng) is None  # wrong width: the numpy path raises
    with pytest.raises(ValueError, match="obs must have shape"):
        ok.act(obs[:, :3], rng)
    shared = _policy(np.float32, True, (8, 5), "tanh", 1, shared=True)  # (fused since session 51)
    assert cpu_act.act(shared, obs, rng) is not None  # (the heads take the trunk's last width)
    shared.trunk = MLP([OBS_DIM, 8, 5], "tanh", seed=2, activate_output=False)  # a trunk ActorCritic never makes
    shared.params.update({f"trunk.{k}": a for k, a in shared.trunk.params.items()})
    assert cpu_act.act(shared, obs, rng) is None
    mixed = _policy(np.float32, False, (8,), "tanh", 1)
    mixed.params["log_std"] = mixed.params["log_std"].astype(np.float64)  # unsupported dtype mix
    assert cpu_act.act(mixed, obs, rng) is None
    fortran = _policy(np.float32, True, (8,), "relu", 1)
    w = np.asfortranarray(fortran.params["actor.W0"])  # unsupported layout
    fortran.params["actor.W0"] = fortran.actor.params["W0"] = w
    assert cpu_act.act(fortran, obs, rng) is None
    f16 = _policy(np.float16, True, (8,), "tanh", 1)  # unsupported dtype
    assert cpu_act.act(f16, obs, rng) is None
    # a parameter rebound (in both dicts) to an array of another shape: the kernels do no bounds
    # checks, so the shapes are checked before them; numpy then raises on the mismatch
    for key, shape in (("W1", (9, 2)), ("b0", (9,)), ("log_std", (4,))):
        bad = _policy(np.float32, key == "W1", (8,), "tanh", 1)  # log_std: a Gaussian policy's
        a = np.zeros(shape, np.float32)
        bad.params[key if key == "log_std" else f"actor.{key}"] = a
        if key != "log_std":
            bad.actor.params[key] = a
        assert cpu_act.act(bad, obs, rng) is None, key
    # an actor swapped (in both places) for an MLP of another input or output width, or one whose
    # last layer is activated: the kernel would read obs or the head out of their shapes, or skip
    # the activation, so the numpy path runs
    for sizes, activate_output in (([OBS_DIM + 1, 8, 3], False), ([OBS_DIM, 8, 4], False), ([OBS_DIM, 8, 3], True)):
        odd = _policy(np.float32, True, (8,), "tanh", 1)
        odd.actor = MLP(sizes, "tanh", seed=2, activate_output=activate_output)
        for k in [k for k in odd.params if k.startswith("actor.")]:
            del odd.params[k]
        odd.params.update({f"actor.{k}": a for k, a in odd.actor.params.items()})
        assert cpu_act.act(odd, obs, rng) is None, sizes
    with monkeypatch.context() as m:  # policy.act still works, through numpy
        m.setattr(cpu_act, "_act_gaussian", None)
        m.setattr(cpu_act, "_act_categorical", None)
        for pol in (shared, mixed, fortran):  # (f16 not: kernels/cpu.py's MLP forward would try to compile it)
            pol.act(obs, np.random.default_rng(0))
    # obs of another dtype or layout is converted, as forward's astype does: each alone (another
    # dtype in C order, values not exact in float32; F order in the policy's dtype; read-only) and
    # two at once
    obs64 = _obs(4, 0, np.float64)
    _assert_same_as_numpy_path(ok, obs64)
    _assert_same_as_numpy_path(ok, np.asfortranarray(obs))
    _assert_same_as_numpy_path(ok, np.asfortranarray(obs64))
    ro = obs.copy()
    ro.flags.writeable = False
    _assert_same_as_numpy_path(ok, ro)


def test_a_read_only_obs_is_copied_not_compiled_for():
    """numba types a read-only array apart from a writeable one: passing it would compile the whole
    act kernel again (~15 s) on a policy's first call. It is copied instead, as another dtype or
    layout is, so no read-only version of the kernel is ever made."""
    use_backend("numba")
    pol = _policy(np.float32, True, (8,), "tanh", 1)
    ro = _obs(4, 0, np.float32)
    ro.flags.writeable = False
    pol.act(ro, np.random.default_rng(0))  # the policy's first call: through numba's dispatcher
    assert cpu_act._act_categorical.signatures
    assert all(sig[0].mutable for sig in cpu_act._act_categorical.signatures)


@pytest.mark.parametrize("discrete", [True, False])
def test_obs_that_is_not_real_is_refused_as_the_numpy_path_refuses_it(discrete):
    """The fused act cast complex (dropping the imaginary part), string and object observations to the
    policy's dtype and acted on them, where numpy's path raises TypeError naming obs."""
    use_backend("numba")
    pol = _policy(np.float32, discrete, (8,), "tanh", 1)
    obs = _obs(4, 0, np.float32)
    for bad in (obs + 1j, obs.astype(str), obs.astype(object)):
        with pytest.raises(TypeError, match="obs must be a real array"):
            pol.act(bad, np.random.default_rng(0))
        with pytest.raises(TypeError, match="obs must hold real numbers"):
            pol.predict(bad)  # (its own wording)


def test_numpy_backend_never_uses_the_fused_act(monkeypatch):
    use_backend("numpy")
    monkeypatch.setattr(cpu_act, "act", lambda *a, **k: pytest.fail("fused act ran on the numpy backend"))
    pol = _policy(np.float32, True, (8,), "tanh", 1)
    pol.act(_obs(4, 0, np.float32), np.random.default_rng(0))


@pytest.mark.parametrize("discrete", [True, False])
def test_non_finite_raises_like_the_numpy_path(discrete):
    use_backend("numba")
    pol = _policy(np.float32, discrete, (8,), "tanh", 1)
    pol.params["actor.b1"][0] = np.nan
    name = "logits" if discrete else "mean"
    with pytest.raises(FloatingPointError, match=f"{name} contains NaN or inf"):
        pol.act(_obs(4, 0, np.float32), np.random.default_rng(0))
    for backend_name in ("numba", "numpy"):  # predict's mode: the actor's output, named alike on both paths
        use_backend(backend_name)
        with pytest.raises(FloatingPointError, match="^the policy's output contains NaN or inf$"):
            pol.predict(_obs(4, 0, np.float32))
    assert pol.__dict__.get("_numba_act_state") is not None  # (the fused act ran for numba)
    use_backend("numba")
    if not discrete:
        pol = _policy(np.float32, False, (8,), "tanh", 1)
        pol.params["log_std"][1] = np.nan
        with pytest.raises(FloatingPointError, match="log_std contains NaN or inf"):
            pol.act(_obs(4, 0, np.float32), np.random.default_rng(0))
        # predict's mode needs no std: the mean on both backends, as the cupy path gives it too
        modes = []
        for backend_name in ("numba", "numpy"):
            use_backend(backend_name)
            modes.append(pol.predict(_obs(4, 0, np.float32)))
        _assert_close(modes[0], modes[1], np.float32, "mode with a NaN log_std")  # (numba's MLP rounding)
        use_backend("numba")
        pol.params["log_std"][1] = np.inf  # clamped to LOG_STD_MAX, as np.clip does: finite
        a, lp, _, d = pol.act(_obs(4, 0, np.float32), np.random.default_rng(0))
        assert np.all(d[:, pol.act_dim + 1] == np.float32(2.0)) and np.isfinite(lp).all()


@pytest.mark.parametrize("discrete, bad", [(True, "actor.b1"), (False, "actor.b1"), (False, "log_std")])
@pytest.mark.parametrize("deterministic", [True, False])
@pytest.mark.parametrize("critic", [True, False])
def test_non_finite_names_what_the_numpy_path_names_for_every_call(discrete, bad, deterministic, critic):
    """Each of act's four calls (deterministic or not, with the critic (act) or without (predict))
    with a NaN logit/mean or log_std: the fused act raises the numpy path's own message itself, and
    returns None (the numpy path then gives the mean) only for predict's mode with a NaN log_std, as
    its docstring says. (Session 79's mutation run: a kernel that returned None for a NaN mean without
    the critic, or named "the policy's output" in predict's sampling mode, passed the test above, the
    numpy path it fell back to raising in its place.)"""
    obs = _obs(4, 0, np.float32)
    said = {}
    for backend_name in ("numpy", "numba"):
        use_backend(backend_name)
        pol = _policy(np.float32, discrete, (8,), "tanh", 1)
        pol.params[bad][0] = np.nan
        rng = np.random.default_rng(0)
        try:
            pol.act(obs, rng, deterministic) if critic else pol.predict(obs, deterministic, rng)
            said[backend_name] = None
        except FloatingPointError as e:
            said[backend_name] = str(e)
    assert said["numba"] == said["numpy"]
    fused = cpu_act.act  # the kernel's own answer, not the numpy path it may fall back to
    if said["numpy"] is None:
        assert (bad, deterministic, critic) == ("log_std", True, False)
        assert fused(pol, obs, np.random.default_rng(0), deterministic, critic) is None
    else:
        with pytest.raises(FloatingPointError) as e:
            fused(pol, obs, np.random.default_rng(0), deterministic, critic)
        assert str(e.value) == said["numpy"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_std_below_its_range_acts_with_the_lower_bound_like_numpy(dtype):
    """log_std under LOG_STD_MIN (a model saved before the range existed, or set by hand) acts with
    LOG_STD_MIN on both paths: same draws, dist params and log-probs (only the upper clamp was
    tested: a fused act without the lower one passed)."""
    from minippo.policy import LOG_STD_MIN

    pol = _policy(dtype, False, (8,), "tanh", 1)
    pol.params["log_std"][...] = [LOG_STD_MIN - 1.0, -np.inf, 0.5]
    got, want = [], []
    for name, out in (("numba", got), ("numpy", want)):
        use_backend(name)
        out.append(pol.act(_obs(4, 0, dtype), np.random.default_rng(0)))
    (a1, lp1, _, d1), (a0, lp0, _, d0) = got[0], want[0]
    np.testing.assert_array_equal(d1[:, pol.act_dim:], d0[:, pol.act_dim:])
    assert np.all(d1[:, pol.act_dim:pol.act_dim + 2] == LOG_STD_MIN)
    # the same standard normal draws, scaled by exp(-10): the actions within the means' rounding, logp
    # within numpy's float32 roundings of terms <= 17 (<= ~1e-5); TOL (module docstring; float32 was
    # 1e-5, observed 6e-8 and 1.9e-6 at |logp| 17, 0.05 of TOL; float64 unchanged, observed equal)
    tol = TOL[dtype]
    np.testing.assert_allclose(a1, a0, rtol=tol, atol=tol)
    np.testing.assert_allclose(lp1, lp0, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_act_never_draws_an_action_of_probability_zero(dtype):
    """As Categorical.sample (tests/test_distributions.py): u = 0 and u = 1 - 2^-53 against logits
    whose first and last softmax entries underflow to 0 take the first and the last action of nonzero
    probability, on the fused act and on the numpy path alike. For some n the kernel's running
    float64 CDF ends below 1 - 2^-53 (the same operations in Python floats say which), so its
    "count reached n" branch runs too."""
    top = np.nextafter(1.0, 0.0)
    below = 0
    for n in range(1, 20):
        logits = [-1000.0] + [0.0] * n + [-1000.0, -1000.0]  # one zero first, two last (as there)
        s = total = 0.0
        for z in logits:  # the kernel's sums, in order (not sum(), compensated from Python 3.12), max logit 0
            s += math.exp(z)
        for z in logits:
            total += math.exp(z - math.log(s))
        below += total < top
        pol = _policy(dtype, True, (8,), "tanh", 1, n_actions=n + 3)
        pol.params["actor.W1"][...] = 0.0
        pol.params["actor.b1"][...] = logits
        obs = _obs(2, 0, dtype)
        for name in ("numba", "numpy"):
            use_backend(name)
            actions = pol.act(obs, FixedDraws([[0.0], [top]]))[0]
            np.testing.assert_array_equal(actions, [1, n], err_msg=f"{name}, {n} actions of p > 0")
    assert below


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("base", [1000.0, -1000.0])
def test_fused_act_softmax_is_shifted_by_the_largest_logit(dtype, base):
    """Logits far from 0 (1000 - [0, 0.5, 1.5], or -1000 - ...): exp of them overflows or
    underflows in float64, so the softmax must subtract the largest logit before exponentiating, as
    Categorical does. The fused act gives numpy's actions and log-probs, finite, for u = 0, 0.7 and
    1 - 2^-53 and for the mode. (Shifting the wrong way, by + max, is the same in exact arithmetic
    and passed every other test: their logits are O(1).)"""
    pol = _policy(dtype, True, (8,), "tanh", 1, n_actions=3)
    pol.params["actor.W1"][...] = 0.0
    pol.params["actor.b1"][...] = base - np.array([0.0, 0.5, 1.5])
    obs = _obs(3, 0, dtype)
    draws = [[0.0], [0.7], [np.nextafter(1.0, 0.0)]]
    got = {}
    for name in ("numpy", "numba"):
        use_backend(name)
        a, lp = pol.act(obs, FixedDraws(draws))[:2]
        mode = pol.act(obs, FixedDraws(draws), deterministic=True)[0]
        got[name] = a, lp, mode
    (a_ref, lp_ref, mode_ref), (a, lp, mode) = got["numpy"], got["numba"]
    np.testing.assert_array_equal(a_ref, [0, 1, 2])  # p = 0.55, 0.33, 0.12: u = 0, 0.7, ~1
    np.testing.assert_array_equal(a, a_ref)
    np.testing.assert_array_equal(mode, [0, 0, 0])
    np.testing.assert_array_equal(mode_ref, mode)
    assert np.isfinite(lp).all()
    np.testing.assert_allclose(lp, lp_ref, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_deterministic_act_takes_the_first_of_tied_logits(dtype):
    """deterministic=True is np.argmax, which returns the first maximum: logits tied at the top (equal
    head biases, zero head weights) give the first of them on the fused act as on the numpy path."""
    for logits, want in [([0.5, 0.5, 0.5], 0), ([-1.0, 2.0, 0.0, 2.0], 1), ([1.0, 0.0, 1.0], 0)]:
        pol = _policy(dtype, True, (8,), "tanh", 1, n_actions=len(logits))
        pol.params["actor.W1"][...] = 0.0
        pol.params["actor.b1"][...] = logits
        obs = _obs(3, 0, dtype)
        for name in ("numba", "numpy"):
            use_backend(name)
            if name == "numba":
                assert cpu_act.act(pol, obs, np.random.default_rng(0), True) is not None  # it applies
            actions = pol.act(obs, np.random.default_rng(0), True)[0]
            np.testing.assert_array_equal(actions, [want] * 3, err_msg=f"{name}, logits {logits}")


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize(("dtype", "temperature"), [(np.float32, 1e-40), (np.float64, 1e-320), (np.float32, 1e-300)])
def test_an_overflowing_logits_over_temperature_raises_like_the_numpy_path(dtype, temperature):
    """logits / T overflows the policy's dtype: numpy's Categorical refuses it; the fused act divides
    in float64 and sampled on (T = 1e-40 in float32: finite there), or returned NaN log-probs. T = 1e-300
    is 0 in float32: the fused act's check divided by zero with numpy's warning before the error."""
    obs = _obs(4, 0, dtype)
    for name in ("numpy", "numba"):
        use_backend(name)
        pol = _policy(dtype, True, (8,), "tanh", 1, temperature)
        with np.errstate(over="ignore"), pytest.raises(FloatingPointError,
                                                       match=r"^logits / temperature contains NaN or inf$"):
            pol.act(obs, np.random.default_rng(0))
    assert pol.__dict__.get("_numba_act_state") is not None  # the numba act took the fused path
    # predict's mode needs no distribution: numpy takes the logits' argmax at any temperature, and the
    # fused act (critic=False) raised where numpy returned the action
    modes = {}
    for name in ("numpy", "numba"):
        use_backend(name)
        modes[name] = pol.predict(obs)
        with np.errstate(over="ignore"), pytest.raises(FloatingPointError,  # sampling does need it
                                                       match="temperature contains NaN or inf"):
            pol.predict(obs, deterministic=False, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(modes["numba"], modes["numpy"])
    # a Gaussian policy has no logits: it ignores the temperature on both paths, and acts
    gauss = _policy(dtype, False, (8,), "tanh", 1, temperature)
    for name in ("numpy", "numba"):
        use_backend(name)
        assert np.isfinite(gauss.act(obs, np.random.default_rng(0))[1]).all()
    assert gauss.__dict__.get("_numba_act_state") is not None


# ---------------------------------------------------------------- in training
TINY = dict(n_envs=4, n_steps=16, batch_size=32, n_epochs=3, total_timesteps=192, hidden=(16, 16))


def _train_rows(cfg):
    from minippo import PPO

    rows = []
    algo = PPO(cfg)
    algo.learn(callback=rows.append)
    return algo, [{k: v for k, v in r.items() if k not in ("time", "fps")} for r in rows]


@pytest.mark.parametrize("overrides", [dict(env_id="CartPole-v1", autoreset="next_step"),
                                       dict(env_id="Pendulum-v1", ent_coef=0.01),
                                       dict(env_id="CartPole-v1", shared=True)])
def test_numba_training_run_is_bit_identical_and_uses_the_fused_act(overrides):
    pytest.importorskip("gymnasium")
    import json

    from minippo.config import PPOConfig

    use_backend("numba")
    cfg = PPOConfig(**TINY, **overrides)
    algo, a = _train_rows(cfg)
    assert algo.policy.__dict__["_numba_act_state"].ok  # the rollout went through the fused act
    _, b = _train_rows(cfg)
    assert len(a) == 3
    assert json.dumps(a) == json.dumps(b)


@pytest.mark.parametrize("shared", [False, True])
def test_predict_one_observation_runs_the_fused_kernels(shared, monkeypatch):
    """predict on one observation makes a C-ordered (1, obs_dim) batch with a real row stride:
    obs[None] has row stride 0, which the fused MLP's layout check refuses, so a shared-trunk policy
    (no fused act) fell back to numpy for deployment's most common call; a strided view, likewise.
    Every MLP forward it makes is fused."""
    from minippo.kernels import cpu

    use_backend("numba")
    pol = _policy(np.float32, False, (16, 16), "tanh", 0, shared=shared)
    calls = []
    real = cpu.mlp_forward

    def spy(mlp, x):
        out = real(mlp, x)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(cpu, "mlp_forward", spy)
    obs = np.random.default_rng(0).normal(size=OBS_DIM).astype(np.float32)
    monkeypatch.setattr(cpu_act, "MAX_BATCH", 0)  # the fused act off: the MLPs' own path
    a = pol.predict(obs)
    strided = np.repeat(obs, 2)[::2]  # the same values in a non-contiguous view: made C-ordered
    np.testing.assert_array_equal(pol.predict(strided), a)
    assert calls and all(calls), calls


@pytest.mark.parametrize("discrete", [True, False])
@pytest.mark.parametrize("deterministic", [True, False])
@pytest.mark.parametrize("shared", [False, True])
def test_act_without_the_critic_gives_the_same_actions_and_no_values(discrete, deterministic, shared):
    """critic=False (predict's call) skips the value head only: the same actions, log-probs and dist
    params, the same draws from the Generator, and values None; a NaN critic (head) does not reach them."""
    use_backend("numba")
    pol = _policy(np.float32, discrete, (16, 16), "tanh", 3, shared=shared)
    obs = _obs(8, 3, np.float32)
    r_full, r_actor = np.random.default_rng(5), np.random.default_rng(5)
    a, lp, v, d = cpu_act.act(pol, obs, r_full, deterministic)
    for k in pol.params:
        if k.startswith("critic."):
            pol.params[k][...] = np.nan  # in place: the dispatch state stays valid
    out = cpu_act.act(pol, obs, r_actor, deterministic, critic=False)
    assert out is not None and out[2] is None
    for got, ref in ((out[0], a), (out[1], lp), (out[3], d)):
        np.testing.assert_array_equal(got, ref)
    assert r_actor.random() == r_full.random()  # the stream consumed identically
    assert np.isnan(cpu_act.act(pol, obs, np.random.default_rng(5), deterministic)[2]).all()  # critic=True ran it


def test_predict_asks_the_fused_act_for_the_actions_alone(monkeypatch):
    """predict (deterministic or not) calls the fused act with critic=False, and gets act's actions."""
    use_backend("numba")
    pol = _policy(np.float32, True, (16, 16), "tanh", 0)
    seen = []
    real = cpu_act.act

    def spy(policy, obs, rng, deterministic=False, critic=True):
        seen.append(critic)
        return real(policy, obs, rng, deterministic, critic)

    monkeypatch.setattr(cpu_act, "act", spy)
    obs = np.random.default_rng(0).normal(size=(4, OBS_DIM)).astype(np.float32)
    np.testing.assert_array_equal(pol.predict(obs), pol.act(obs, None, True)[0])
    np.testing.assert_array_equal(pol.predict(obs, False, np.random.default_rng(1)),
                                  pol.act(obs, np.random.default_rng(1))[0])
    assert seen == [False, True, False, True]


def test_subclasses_run_the_numpy_path():
    """The fused act computes what ActorCritic's and MLP's own methods do: a subclass overriding one
    (a policy that rescales its observations in forward) was bypassed on numba. Now it runs the array
    path, its override included."""
    use_backend("numba")

    class Scaled(ActorCritic):
        def _actor_out(self, obs, cache):
            return super()._actor_out(obs * 0.0, cache)  # every observation looks like zeros

    pol = Scaled(OBS_DIM, Discrete(3), (8,), "tanh", seed=1)
    obs = _obs(4, 0, np.float32)
    want = pol.predict(np.zeros_like(obs))
    np.testing.assert_array_equal(pol.predict(obs), want)
    assert pol.__dict__.get("_numba_act_state") is None or not pol.__dict__["_numba_act_state"].ok

    class MyMLP(MLP):
        pass

    plain = _policy(np.float32, True, (8,), "tanh", 1)
    plain.actor.__class__ = MyMLP
    plain.act(obs, np.random.default_rng(0))
    assert not plain.__dict__["_numba_act_state"].ok


@settings(max_examples=25, deadline=None)
@given(discrete=st.booleans(), shared=st.booleans(), activation=st.sampled_from(["tanh", "relu"]),
       B=st.sampled_from([1, 3, 8]), temperature=st.sampled_from([1.0, 0.6, 1.7]), seed=st.integers(0, 2**16))
def test_fused_act_matches_the_plain_loop_oracle(discrete, shared, activation, B, temperature, seed):
    """The fused act against kernels/reference.py and tests/reference.py alone (plain loops, no library
    code): the networks' outputs through ref.mlp_forward, the action each u or eps of the same seed
    gives (the first action whose CDF exceeds u; mean + std * eps), its log-prob through
    tests/reference.py, and the value. float64 (libm on both sides): 1e-12 relative and absolute (logp a
    sum of terms ~1, each to rounding; module docstring); no drawn u lies within 1e-9 of a CDF boundary
    here (checked).
    A guard (session 55's test audit: the fused act was checked against the library's own paths only);
    it passed on the code it was added to."""
    import reference as tref
    from minippo.kernels import reference as kref

    use_backend("numba")
    pol = _policy(np.float64, discrete, (8, 5) if shared else (8,), activation, seed % 97, temperature,
                  shared=shared)
    obs = _obs(B, seed, np.float64)
    actions, logp, values, _ = pol.act(obs, np.random.default_rng(seed))
    assert pol.__dict__["_numba_act_state"].ok  # (the fused kernel ran)

    def net(prefix, x, activate_output=False):
        params = {k.split(".", 1)[1]: v for k, v in pol.params.items() if k.startswith(prefix + ".")}
        return kref.mlp_forward(params, x, activation, activate_output)[0]

    feat = net("trunk", obs, True) if shared else obs
    out, v = net("actor", feat), net("critic", feat)[:, 0]
    draws = np.random.default_rng(seed)
    if discrete:
        u = draws.random((B, 1))[:, 0]
        want = []
        for row, ui in zip(out.tolist(), u, strict=True):
            p = tref.softmax_row(row, temperature)
            cdf = [sum(p[: j + 1]) for j in range(len(p))]
            assert min(abs(ui - c) for c in cdf) > 1e-9  # (rounding cannot flip this draw)
            want.append(sum(c <= ui for c in cdf))
        np.testing.assert_array_equal(actions, want)
        want_logp = tref.categorical_log_prob(out.tolist(), want, temperature)
    else:
        ls = np.clip(pol.params["log_std"], -10.0, 2.0)
        eps = draws.standard_normal((B, pol.act_dim))
        np.testing.assert_allclose(actions, out + np.exp(ls) * eps, rtol=1e-12, atol=1e-12)
        want_logp = tref.gaussian_log_prob(out.tolist(), np.broadcast_to(ls, out.shape).tolist(), actions.tolist())
    np.testing.assert_allclose(logp, want_logp, rtol=1e-12, atol=1e-12)  # float64 against exact-order loops
    np.testing.assert_allclose(values, v, rtol=1e-12, atol=1e-12)
