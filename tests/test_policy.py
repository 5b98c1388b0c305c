"""minippo.policy.ActorCritic: backward() against central differences for discrete and
continuous heads, separate and shared trunk, every upstream gradient (logp, entropy, value,
KL to an old policy); parameter layout; acting; bad inputs.

Tolerances, and why (float64 unless said; u = 2^-53 ~ 1.1e-16):
- Gradients: norm-wise relative error < 1e-6 (minippo.gradcheck.rel_error, floor 1e-3 of the size of
  the terms summed, see noise_floor), h = 1e-6. The network is smooth (tanh), or relu with every
  pre-activation kept >= 1e-3 from the kink, so the truncation error of central differences is ~1e-9;
  their rounding noise is what the floor is for.
- act against evaluate (test_act_consistent_with_evaluate): on numpy the same forward and distribution
  (bit-equal); on numba the fused act kernel sums the Gaussian's log-density terms in its own order, with
  fused multiply-adds, and its MLP may sum in another order than the evaluate path's: ~10 roundings a
  side of terms <= ~15 (0.5 ((a - m) / s)^2 for a sampled action): <= ~3e-14: atol 1e-13, rtol 0 for
  log-probs and values (were numpy's rtol 1e-7; measured 8.9e-16 and bit-equal, over 600 policies on both
  backends). The KL between the two sides' distributions is exactly 0 for equal parameters and a few u
  of |log p| <= 5 for parameters a rounding apart: atol 1e-13 (was 1e-12; measured 0).
- Exact: the clamped log_std against the bound, and log-probs at the bounds against those past them
  (np.clip returns the bound itself); predict against act, value against forward, clones against the
  original: the same operations on the same values (the same kernels, the same draws).
- init's singular values: beside the check.
"""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from minippo.distributions import Categorical, DiagGaussian
from minippo.gradcheck import check_grads
from minippo.policy import LOG_STD_MAX, LOG_STD_MIN, ActorCritic
from minippo.spaces import Box, Discrete

TOL = 1e-6
FAST = settings(max_examples=25, deadline=None)


def relu_margin(policy, cache):
    """Smallest |pre-activation| over every activated layer of every network in ``cache``."""
    smallest = np.inf
    for prefix, net in policy._nets():
        layer_inputs = cache[prefix]
        for i in range(net.n_layers):
            if net._activated(i):
                z = layer_inputs[i] @ net.params[f"W{i}"] + net.params[f"b{i}"]
                smallest = min(smallest, float(np.abs(z).min()))
    return smallest


@st.composite
def policy_case(draw, activations=("tanh",)):
    discrete = draw(st.booleans())
    shared = draw(st.booleans())
    obs_dim = draw(st.integers(1, 3))
    act_dim = draw(st.integers(1, 3)) if not discrete else draw(st.integers(2, 4))
    hidden = tuple(draw(st.lists(st.integers(1, 4), min_size=1 if shared else 0, max_size=2)))
    batch = draw(st.integers(1, 4))
    activation = draw(st.sampled_from(activations))
    temperature = draw(st.sampled_from([1.0, 0.7, 1.8])) if discrete else 1.0
    seed = draw(st.integers(0, 2**31 - 1))
    return discrete, shared, obs_dim, act_dim, hidden, batch, activation, temperature, seed


def build(case):
    discrete, shared, obs_dim, act_dim, hidden, batch, activation, temperature, seed = case
    space = Discrete(act_dim) if discrete else Box(-np.ones(act_dim), np.ones(act_dim))
    policy = ActorCritic(obs_dim, space, hidden=hidden, activation=activation, shared=shared,
                         log_std_init=-0.3, seed=seed, dtype=np.float64, temperature=temperature)
    rng = np.random.default_rng(seed)
    # Init gives a 0.01-gain policy head and zero biases: perturb every parameter so that each
    # gradient is O(1) and the biases and log_std are exercised away from their init values.
    for p in policy.params.values():
        p += 0.5 * rng.normal(size=p.shape)
    obs = rng.normal(size=(batch, obs_dim))
    if discrete:
        actions = rng.integers(0, act_dim, size=batch)
        dist_old = rng.normal(size=(batch, act_dim))
    else:
        actions = rng.normal(size=(batch, act_dim))
        dist_old = np.concatenate([rng.normal(size=(batch, act_dim)),
                                   0.3 * rng.normal(size=(batch, act_dim))], axis=1)
    g = {k: rng.normal(size=batch) for k in ("logp", "entropy", "value", "kl")}
    return policy, obs, actions, dist_old, g


def weighted_sum(policy, obs, actions, dist_old, g):
    logp, entropy, values, cache = policy.evaluate(obs, actions)
    kl = policy.kl_old(dist_old, cache)
    total = (g["logp"] * logp + g["entropy"] * entropy + g["value"] * values + g["kl"] * kl).sum()
    return float(total), cache


def noise_floor(policy, obs, actions, dist_old, g):
    """check_grads' floor for weighted_sum: its central differences carry eps * S / h of rounding
    noise, S the sum of the |terms| summed (rel_error's docstring), and check_grads scales its floor
    by |f| alone. The terms' signs are drawn, so they may cancel: S of 16 for an f of 2.9 (hypothesis
    found it) put the noise of a trunk gradient of norm ~2e-3 at 1.8e-6 of the |f|-scaled floor
    (1.8e-7 at h = 1e-5: noise, not the gradient). The floor scaled by S / |f| keeps the noise at
    ~1e-7 of it; a wrong gradient of norm >= 1e-3 * S still shows as an error of order 1."""
    logp, entropy, values, cache = policy.evaluate(obs, actions)
    kl = policy.kl_old(dist_old, cache)
    terms = (g["logp"] * logp, g["entropy"] * entropy, g["value"] * values, g["kl"] * kl)
    size = sum(float(np.abs(t).sum()) for t in terms)
    f = abs(float(sum(t.sum() for t in terms)))
    return 1e-3 * max(1.0, size) / max(1.0, f)


@FAST
@given(policy_case())
def test_backward_all_terms(case):
    policy, obs, actions, dist_old, g = build(case)
    _, cache = weighted_sum(policy, obs, actions, dist_old, g)
    grads = policy.backward(cache, dlogp=g["logp"], dentropy=g["entropy"], dvalue=g["value"],
                            dkl=g["kl"])
    assert list(grads) == list(policy.params)
    for k in grads:
        assert grads[k].shape == policy.params[k].shape and grads[k].dtype == np.float64
    err = check_grads(lambda: weighted_sum(policy, obs, actions, dist_old, g)[0],
                      policy.params, grads, floor=noise_floor(policy, obs, actions, dist_old, g))
    assert err < TOL


@FAST
@given(policy_case(activations=("relu",)))
def test_backward_relu(case):
    policy, obs, actions, dist_old, g = build(case)
    _, cache = weighted_sum(policy, obs, actions, dist_old, g)
    # relu is not differentiable at 0; a 1e-6 step moves each pre-activation by ~1e-6
    assume(relu_margin(policy, cache) > 1e-3)
    grads = policy.backward(cache, dlogp=g["logp"], dentropy=g["entropy"], dvalue=g["value"],
                            dkl=g["kl"])
    err = check_grads(lambda: weighted_sum(policy, obs, actions, dist_old, g)[0],
                      policy.params, grads, floor=noise_floor(policy, obs, actions, dist_old, g))
    assert err < TOL


@pytest.mark.parametrize("discrete", [True, False])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("term", ["logp", "entropy", "value", "kl"])
def test_backward_each_term_alone(discrete, shared, term):
    """One upstream gradient at a time (the others None): each path is right on its own, and an
    unused network gets exactly zero gradient (e.g. the critic for a policy term)."""
    act_dim = 3 if discrete else 2
    case = (discrete, shared, 3, act_dim, (4, 3), 4, "tanh", 1.3 if discrete else 1.0, 11)
    policy, obs, actions, dist_old, g = build(case)
    g = {k: (v if k == term else np.zeros_like(v)) for k, v in g.items()}
    _, cache = weighted_sum(policy, obs, actions, dist_old, g)
    kwargs = {"dlogp": "logp", "dentropy": "entropy", "dvalue": "value", "dkl": "kl"}
    grads = policy.backward(cache, **{kw: g[t] for kw, t in kwargs.items() if t == term})
    err = check_grads(lambda: weighted_sum(policy, obs, actions, dist_old, g)[0],
                      policy.params, grads, floor=noise_floor(policy, obs, actions, dist_old, g))
    assert err < TOL
    for k, v in grads.items():
        if term == "value" and (k.startswith("actor.") or k == "log_std"):
            assert not v.any(), k
        if term != "value" and k.startswith("critic."):
            assert not v.any(), k


def test_log_std_clamp_gives_zero_gradient_outside():
    policy = ActorCritic(2, Box(-np.ones(2), np.ones(2)), hidden=(3,), seed=0, dtype=np.float64)
    policy.params["log_std"][...] = [LOG_STD_MAX + 1.0, 0.5]
    obs, actions = np.ones((3, 2)), np.zeros((3, 2))
    logp, _, _, cache = policy.evaluate(obs, actions)
    assert np.isfinite(logp).all()
    np.testing.assert_array_equal(cache["dist"].log_std[0], [LOG_STD_MAX, 0.5])
    grads = policy.backward(cache, dlogp=np.ones(3))
    assert grads["log_std"][0] == 0.0 and grads["log_std"][1] != 0.0


def test_log_std_on_the_bound_has_a_gradient_and_init_outside_is_rejected():
    policy = ActorCritic(2, Box(-np.ones(2), np.ones(2)), hidden=(3,), seed=0, dtype=np.float64,
                         log_std_init=LOG_STD_MAX)
    obs, actions = np.ones((3, 2)), np.zeros((3, 2))
    _, _, _, cache = policy.evaluate(obs, actions)
    assert (policy.backward(cache, dlogp=np.ones(3))["log_std"] != 0).all()
    policy.params["log_std"][...] = [LOG_STD_MAX, LOG_STD_MIN]  # both bounds: both get a gradient
    _, _, _, cache = policy.evaluate(obs, actions)
    assert (policy.backward(cache, dlogp=np.ones(3))["log_std"] != 0).all()
    lp_bounds = policy.evaluate(obs, actions)[0]
    policy.params["log_std"][...] = [LOG_STD_MAX + 1.0, LOG_STD_MIN - 1.0]  # outside: used as the bounds,
    lp, _, _, cache = policy.evaluate(obs, actions)  # and no gradient
    np.testing.assert_array_equal(lp, lp_bounds)
    assert (policy.backward(cache, dlogp=np.ones(3))["log_std"] == 0).all()
    policy.clamp_log_std()
    np.testing.assert_array_equal(policy.params["log_std"], [LOG_STD_MAX, LOG_STD_MIN])
    with pytest.raises(ValueError, match=r"log_std_init must be a finite number in \[-10, 2\], got 2.5"):
        ActorCritic(2, Box(-np.ones(2), np.ones(2)), log_std_init=2.5)
    with pytest.raises(TypeError, match=r"log_std_init must be a finite number in \[-10, 2\], got None"):
        ActorCritic(2, Box(-np.ones(2), np.ones(2)), log_std_init=None)


# ---------------------------------------------------------------- layout and init
def test_param_keys_and_shapes_separate_and_shared():
    sep = ActorCritic(4, Discrete(2), hidden=(8, 8))
    assert list(sep.params) == [
        "actor.W0", "actor.b0", "actor.W1", "actor.b1", "actor.W2", "actor.b2",
        "critic.W0", "critic.b0", "critic.W1", "critic.b1", "critic.W2", "critic.b2",
    ]
    assert sep.params["actor.W2"].shape == (8, 2) and sep.params["critic.W2"].shape == (8, 1)
    sh = ActorCritic(4, Box(-np.ones(3), np.ones(3)), hidden=(8, 6), shared=True)
    assert list(sh.params) == ["trunk.W0", "trunk.b0", "trunk.W1", "trunk.b1",
                               "actor.W0", "actor.b0", "critic.W0", "critic.b0", "log_std"]
    assert sh.params["actor.W0"].shape == (6, 3) and sh.params["critic.W0"].shape == (6, 1)
    assert sh.params["log_std"].shape == (3,)
    for p in (*sep.params.values(), *sh.params.values()):
        assert p.dtype == np.float32


def test_init_gains_heads_and_log_std():
    pol = ActorCritic(5, Box(-np.ones(2), np.ones(2)), hidden=(16, 16), log_std_init=-0.5, seed=3)
    sv = lambda k: np.linalg.svd(pol.params[k].astype(np.float64), compute_uv=False)  # noqa: E731
    # float32 entries move each singular value by <= 2^-24 gain sqrt(min dim) <= 2.4e-7 gain (as in
    # test_nn's init test); measured <= 3.7e-8 over 300 seeds
    np.testing.assert_allclose(sv("actor.W0"), np.sqrt(2), rtol=1e-6)
    np.testing.assert_allclose(sv("actor.W2"), 0.01, rtol=1e-6)  # policy head gain 0.01
    np.testing.assert_allclose(sv("critic.W2"), 1.0, rtol=1e-6)  # value head gain 1
    assert all(not pol.params[k].any() for k in pol.params if ".b" in k)
    np.testing.assert_array_equal(pol.params["log_std"], [-0.5, -0.5])


def test_params_are_shared_with_subnetworks():
    """Adam updates params in place: the sub-MLPs must see the change."""
    pol = ActorCritic(3, Discrete(2), hidden=(4,), shared=True)
    pol.params["trunk.W0"] += 1.0
    assert pol.trunk.params["W0"] is pol.params["trunk.W0"]
    assert pol.actor.params["W0"] is pol.params["actor.W0"]


def test_accepts_gymnasium_spaces():
    gym = pytest.importorskip("gymnasium")
    d = ActorCritic(3, gym.spaces.Discrete(4))
    assert d.discrete and d.act_dim == 4
    c = ActorCritic(3, gym.spaces.Box(-np.ones(2, np.float32), np.ones(2, np.float32)))
    assert not c.discrete and c.act_dim == 2


# ---------------------------------------------------------------- acting
@pytest.mark.parametrize("discrete", [True, False])
def test_act_consistent_with_evaluate(discrete):
    space = Discrete(3) if discrete else Box(-np.ones(2), np.ones(2))
    pol = ActorCritic(4, space, hidden=(8,), seed=1, dtype=np.float64)
    obs = np.random.default_rng(0).normal(size=(5, 4))
    actions, logp, values, dist_params = pol.act(obs, np.random.default_rng(1))
    logp2, _, values2, cache = pol.evaluate(obs, actions)
    np.testing.assert_allclose(logp, logp2, rtol=0, atol=1e-13)
    np.testing.assert_allclose(values, values2, rtol=0, atol=1e-13)
    assert values.shape == (5,)
    old = pol.make_dist(dist_params)
    np.testing.assert_allclose(old.kl(cache["dist"]), 0.0, atol=1e-13)
    a1 = pol.act(obs, np.random.default_rng(7))[0]
    a2 = pol.act(obs, np.random.default_rng(7))[0]
    np.testing.assert_array_equal(a1, a2)
    det = pol.predict(obs[0])
    assert np.shape(det) == (() if discrete else (2,))


@pytest.mark.parametrize("discrete, shared, temperature", [(True, False, 1.0), (True, True, 0.5),
                                                        (False, False, 1.0), (False, True, 1.0)])
def test_predict_gives_act_actions_without_the_value_head(discrete, shared, temperature, monkeypatch):
    """predict (deployment) takes the actions exactly as act does, the same draws from the same rng
    (or the mode), but runs only the actor: no value head, log-prob or dist params (on numpy 2-3x
    less time at batch 1). Deterministic, it needs no rng and draws none."""
    space = Discrete(3) if discrete else Box(-np.ones(2), np.ones(2))
    pol = ActorCritic(4, space, hidden=(8,), seed=1, shared=shared, temperature=temperature)
    obs = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    expect = {det: pol.act(obs, np.random.default_rng(3), det)[0] for det in (True, False)}
    one = pol.act(obs[2:3], None, True)[0][0]  # a batch of one (BLAS may round 1 and 6 rows apart)
    monkeypatch.setattr(pol.critic, "forward", lambda *a: pytest.fail("predict ran the value head"))
    np.testing.assert_array_equal(pol.predict(obs), expect[True])
    np.testing.assert_array_equal(pol.predict(obs, False, np.random.default_rng(3)), expect[False])
    np.testing.assert_array_equal(pol.predict(obs[2]), one)  # one observation
    rng = np.random.default_rng(5)
    pol.predict(obs, True, rng)
    assert rng.random() == np.random.default_rng(5).random()  # nothing drawn


def test_make_dist_roundtrip():
    pol = ActorCritic(2, Box(-np.ones(3), np.ones(3)), dtype=np.float64)
    d = pol.forward(np.ones((2, 2)))[0]
    params = pol.dist_params(d)
    assert params.shape == (2, 6)
    back = pol.make_dist(params)
    assert isinstance(back, DiagGaussian)
    np.testing.assert_array_equal(back.mean, d.mean)
    assert isinstance(ActorCritic(2, Discrete(3)).make_dist(np.zeros((1, 3))), Categorical)


# ---------------------------------------------------------------- bad inputs
def test_bad_constructor_arguments():
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="obs_dim must be an integer >= 1"):
            ActorCritic(bad, Discrete(2))
    with pytest.raises(ValueError, match="shared=True needs at least one hidden layer"):
        ActorCritic(3, Discrete(2), hidden=(), shared=True)
    for bad in (0.0, float("inf"), float("nan")):  # inf: numba's act would have sampled from it
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            ActorCritic(3, Discrete(2), temperature=bad)
    pol = ActorCritic(3, Discrete(2), temperature=2)
    for bad in (0.0, -1.0, float("nan")):  # set later: refused too (the fused numba update took T = -1)
        with pytest.raises(ValueError, match=f"^temperature must be a finite number > 0, got {bad}"):
            pol.temperature = bad
    with pytest.raises(TypeError, match="^temperature must be a finite number > 0, got 'x'"):
        pol.temperature = "x"
    assert pol.temperature == 2.0 and type(pol.temperature) is float
    pol.temperature = 0.5
    assert pol.temperature == 0.5 and pol.forward(np.zeros((1, 3), np.float32))[0].temperature == 0.5
    for bad in (np.zeros((2, 3), complex), np.zeros((2, 3), "U2")):  # astype dropped the imaginary part
        with pytest.raises(TypeError, match=f"^obs must be a real array .*, got dtype {bad.dtype}$"):
            pol.evaluate(bad, np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="Discrete n must be an integer"):
        Discrete(2.5)
    with pytest.raises(ValueError, match="activation='gelu'"):
        ActorCritic(3, Discrete(2), activation="gelu")
    with pytest.raises(TypeError, match="action_space must be a Discrete or Box space"):
        ActorCritic(3, "discrete")
    with pytest.raises(ValueError, match="Discrete n must be >= 1"):
        ActorCritic(3, Discrete(0))


def test_bad_obs_and_actions():
    pol = ActorCritic(3, Discrete(2), hidden=(4,))
    with pytest.raises(ValueError, match=r"obs must have shape \(B, 3\)"):
        pol.forward(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"obs must have shape \(B, 3\)"):
        pol.evaluate(np.zeros(3), np.zeros(1))
    with pytest.raises(ValueError, match=r"actions must be integers in \[0, 2\)"):
        pol.evaluate(np.zeros((2, 3)), np.array([0, 5]))
    with pytest.raises(FloatingPointError, match="logits contains NaN or inf"):
        pol.evaluate(np.array([[np.nan, 0.0, 0.0]]), np.array([0]))
    cont = ActorCritic(3, Box(-np.ones(2), np.ones(2)), hidden=(4,))
    with pytest.raises(ValueError, match=r"actions must have shape \(2, 2\)"):
        cont.evaluate(np.zeros((2, 3)), np.zeros(2))
    _, _, _, cache = pol.evaluate(np.zeros((2, 3)), np.array([0, 1]))
    with pytest.raises(ValueError, match="dkl given but kl_old"):
        pol.backward(cache, dkl=np.ones(2))
    with pytest.raises(ValueError, match="rng is required"):
        pol.predict(np.zeros(3), deterministic=False)


# ---------------------------------------------------------------- spaces
def test_spaces_roundtrip_and_errors():
    from minippo.spaces import as_space

    d, b = Discrete(4), Box([-1.0, -2.0], [1.0, 2.0])
    assert as_space(d.to_dict()) == d
    back = as_space(b.to_dict())
    np.testing.assert_array_equal(back.low, b.low)
    assert back.shape == (2,)
    with pytest.raises(ValueError, match="Box low must be <= high"):
        Box([1.0], [0.0])
    with pytest.raises(ValueError, match="Box low and high must be non-empty and of one shape"):
        Box([0.0, 0.0], [1.0])
    with pytest.raises(ValueError, match="action_space dict kind must be 'discrete' or 'box'"):
        as_space({"kind": "multi"})


def test_as_space_takes_spaces_by_class_name_and_attributes_together():
    """A gymnasium-like space is read by its class name and the attributes that class has, both: a
    MultiBinary has ``n`` but is not Discrete, and a class with ``low``/``high`` is not a Box unless it is
    called Box (and a Box needs both). Degenerate spaces are real ones: Discrete(1) and a Box dimension
    with low == high (gymnasium takes both)."""
    from minippo.spaces import as_space

    one = np.ones(1)
    imposters = {
        "MultiBinary": {"n": 3, "shape": (3,)},
        "Interval": {"low": -one, "high": one, "shape": (1,)},
        "Box": {"high": one, "shape": (1,)},  # a Box without low
        "Ceiling": {"high": one, "shape": (1,)},
    }
    for name, attrs in imposters.items():
        with pytest.raises(TypeError, match=f"action_space must be a Discrete or Box space .*, got {name}"):
            as_space(type(name, (), attrs)())
    assert as_space(type("Discrete", (), {"n": 1, "start": 0})()) == Discrete(1)
    low, high = np.array([0.0, -1.0]), np.array([0.0, 1.0])
    box = as_space(type("Box", (), {"low": low, "high": high, "shape": (2,), "dtype": np.float32})())
    np.testing.assert_array_equal(box.low, [0.0, -1.0])
    np.testing.assert_array_equal(box.high, [0.0, 1.0])
    a, logp, _, _ = ActorCritic(3, Discrete(1), seed=0).act(np.zeros((2, 3)), np.random.default_rng(0))
    assert a.tolist() == [0, 0] and logp.tolist() == [0.0, 0.0]  # the one action, certain
    a, logp, _, _ = ActorCritic(3, box, seed=0).act(np.zeros((2, 3)), np.random.default_rng(0))
    assert a.shape == (2, 2) and np.isfinite(logp).all()


def test_expected_networks_give_each_networks_widths_and_output_activation():
    """What the fused kernels check a policy against: the trunk first, its output activated; linear
    heads on its last width (or on the observations without a trunk)."""
    sep = ActorCritic(5, Discrete(3), hidden=(8, 6))
    assert [(p, n_in, n_out, act) for p, _, n_in, n_out, act in sep.expected_networks()] == [
        ("actor", 5, 3, False), ("critic", 5, 1, False)]
    shared = ActorCritic(5, Box(-np.ones(2), np.ones(2)), hidden=(8, 6), shared=True)
    got = shared.expected_networks()
    assert [(p, n_in, n_out, act) for p, _, n_in, n_out, act in got] == [
        ("trunk", 5, 6, True), ("actor", 6, 2, False), ("critic", 6, 1, False)]
    assert [net for _, net, *_ in got] == [shared.trunk, shared.actor, shared.critic]
    for _, net, n_in, n_out, activated in got:  # as the constructor builds them
        assert (net.sizes[0], net.sizes[-1], bool(net.activate_output)) == (n_in, n_out, activated)


def test_a_pickle_from_before_temperature_was_a_property_still_loads():
    """Until session 55 ``temperature`` was a plain attribute, so a pickled policy holds it under that
    name; the property (backed by ``_temperature``) hid it, and act() failed with an AttributeError."""
    import pickle

    pol = ActorCritic(3, Discrete(2), (4,), temperature=0.5)
    state = pol.__getstate__()
    state["temperature"] = state.pop("_temperature")  # what the older class's pickle carries
    old = object.__new__(ActorCritic)
    old.__setstate__(state)
    assert old.temperature == 0.5 and "temperature" not in old.__dict__
    obs = np.zeros((2, 3), np.float32)
    np.testing.assert_array_equal(old.act(obs, np.random.default_rng(0))[0], pol.act(obs, np.random.default_rng(0))[0])
    assert pickle.loads(pickle.dumps(pol)).temperature == 0.5  # (today's pickles too)


def test_integer_observations_beyond_a_float16_policys_range_are_refused():
    """Integers were cast without a check ("within float32's range"), which a float16 policy (max
    65504) is not: 70000 became inf, and tanh's saturation kept the action finite, with no error."""
    from minippo.policy import check_obs

    pol = ActorCritic(3, Discrete(2), (8,), dtype=np.float16)
    for obs in (np.array([70000, 0, 0]), np.array([65535, 0, 0], np.uint16), np.array([[0, 0, -70000]])):
        with pytest.raises(ValueError, match="obs holds values beyond the policy's float16 range"):
            pol.predict(obs)
    assert pol.predict(np.array([60000, 1, True])).shape == ()  # within range: acted on
    np.testing.assert_array_equal(check_obs(np.array([2**62, -1]), 2, np.float32), np.float32([2**62, -1]))
    assert check_obs(np.array([True, False]), 2, np.float16).dtype == np.float16


def test_check_obs_copies_only_where_the_dtype_changes_and_warns_never():
    """An observation already in the policy's dtype is returned as it is (no copy); one beyond the
    dtype's range is a ValueError, without numpy's overflow RuntimeWarning first."""
    import warnings

    from minippo.policy import check_obs

    for dt in (np.float16, np.float32, np.float64):
        a = np.zeros((2, 3), dt)
        assert check_obs(a, 3, dt) is a
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for obs, dt in ((np.array([1e300, 0.0]), np.float32), (np.array([1e10, 0.0], np.float32), np.float16),
                        (np.array([70000, 0]), np.float16)):
            with pytest.raises(ValueError, match="obs holds values beyond the policy's"):
                check_obs(obs, 2, dt)


@pytest.mark.parametrize("backend_name", ["numpy", "numba"])
@pytest.mark.parametrize("discrete", [True, False])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_value_is_forward_s_values_bit_for_bit_without_the_actor(backend_name, discrete, shared, dtype, request,
                                                                monkeypatch):
    """``value(obs)`` is ``forward(obs)[1]`` exactly (numba's fused MLP forward at small batches, numpy's
    past them), and runs no actor: the rollout's bootstrap ran the whole forward for V alone."""
    if backend_name == "numba":
        pytest.importorskip("numba")
    request.getfixturevalue(f"{backend_name}_backend")
    space = Discrete(3) if discrete else Box(-np.ones(2), np.ones(2))
    p = ActorCritic(5, space, hidden=(16, 16), shared=shared, seed=4, dtype=np.dtype(dtype))
    rng = np.random.default_rng(0)
    for batch in (1, 8, 300):
        obs = rng.normal(size=(batch, 5))  # float64 obs: cast to the policy's dtype on both paths
        want = p.forward(obs)[1]
        with monkeypatch.context() as m:
            m.setattr(p.actor, "forward", lambda *a, **k: pytest.fail("value() ran the actor"))
            got = p.value(obs)
        assert got.dtype == want.dtype == np.dtype(dtype) and got.shape == (batch,)
        assert got.tobytes() == want.tobytes()
    with pytest.raises(ValueError, match=r"obs must have shape \(B, 5\), got \(2, 4\)"):
        p.value(np.zeros((2, 4)))


def test_a_subclass_s_value_is_its_own_forward_s():
    """Subclasses run the array path with their overrides (as the fused kernels leave them): value()
    skipped an overridden forward, and the rollout's bootstrap mixed the override's V with the bare
    critic's."""

    class Shifted(ActorCritic):
        def forward(self, obs):
            dist, v, cache = super().forward(obs)
            return dist, v + 100.0, cache

    p = Shifted(3, Discrete(2), hidden=(4,), seed=0, dtype=np.float64)
    obs = np.random.default_rng(1).normal(size=(5, 3))
    assert p.value(obs).tobytes() == p.forward(obs)[1].tobytes()
    assert (p.value(obs) > 90).all()


@pytest.mark.parametrize("shared", [False, True])
def test_a_parameter_rebound_in_either_dict_is_rebound_in_the_other(shared):
    """policy.params["actor.W0"] = new left the actor MLP computing with the old array while Adam
    updated, and save() wrote, the new one (a checkpoint whose network never acted; the MLP's dict alone
    the other way round). A name rebound in one dict is rebound in the other now, copies keep the links,
    and the dict itself cannot be replaced."""
    import copy
    import pickle

    pol = ActorCritic(3, Box(-np.ones(2), np.ones(2)), hidden=(4,), shared=shared, dtype=np.float64)
    obs = np.random.default_rng(0).normal(size=(5, 3))
    nets = dict(pol._nets())
    for key in list(pol.params):
        if key == "log_std":
            continue
        prefix, name = key.split(".")
        new = pol.params[key] + 0.5
        pol.params[key] = new
        assert nets[prefix].params[name] is new
        other = nets[prefix].params[name] * 2.0
        nets[prefix].params[name] = other
        assert pol.params[key] is other
    expected = pol.forward(obs)[1]
    for clone in (copy.deepcopy(pol), pickle.loads(pickle.dumps(pol))):
        np.testing.assert_array_equal(clone.forward(obs)[1], expected)
        clone.params["critic.b0"] = clone.params["critic.b0"] + 1.0
        assert clone.critic.params["b0"] is clone.params["critic.b0"]
        assert pol.critic.params["b0"] is pol.params["critic.b0"] is not clone.params["critic.b0"]
    pol.params.update({"critic.W0": pol.params["critic.W0"] * 0.0})  # update() and the like rebind too
    assert pol.critic.params["W0"] is pol.params["critic.W0"]
    values = pol.forward(obs)[1]  # the critic's first layer computes with the zeros: one value for all
    assert np.ptp(values) == 0.0 and np.ptp(expected) > 0.0
    with pytest.raises(AttributeError, match=r"^ActorCritic\.params is fixed at construction .* write into them, "
                                             r"policy\.params\[k\]\[\.\.\.\] = new$"):
        pol.params = dict(pol.params)


def test_a_network_swapped_in_is_linked_and_the_one_swapped_out_is_left_alone():
    """The links were made once, at construction: after policy.actor = other, a rebinding in the
    policy's dict still rebound the old actor's (a backup of trained weights overwritten), and one in the
    old actor's dict rebound the policy's (the arrays Adam updates and checkpoints save). Also: a name
    removed from one dict is not put back by a write in the other, and policy.params |= {...} (which
    stores the same dict back through the property) is taken."""
    from minippo.nn import MLP

    pol = ActorCritic(4, Discrete(2), hidden=(8,))
    backup, w = pol.actor, pol.actor.params["W0"].copy()
    pol.actor = MLP([4, 8, 2], out_gain=0.01, seed=5)
    pol.params.update({f"actor.{k}": v for k, v in pol.actor.params.items()})
    assert all(pol.params[f"actor.{k}"] is v for k, v in pol.actor.params.items())
    np.testing.assert_array_equal(backup.params["W0"], w)  # the old actor keeps its arrays
    backup.params["b0"] = backup.params["b0"] + 1.0
    assert pol.params["actor.b0"] is pol.actor.params["b0"] is not backup.params["b0"]
    pol.params["actor.W0"] = np.zeros((4, 8), np.float32)  # the new actor follows
    assert pol.actor.params["W0"] is pol.params["actor.W0"]
    pol.params |= {"critic.b0": pol.params["critic.b0"] + 1.0}
    assert pol.critic.params["b0"] is pol.params["critic.b0"]
    removed = pol.params.pop("critic.b1")
    pol.critic.params["b1"] = removed + 1.0
    assert "critic.b1" not in pol.params


def test_what_the_networks_were_built_for_is_fixed():
    """policy.dtype = np.float64 (to "convert" it) converted nothing, and a checkpoint saved then was
    refused as "damaged or edited"; act_dim, hidden and the like likewise. Fixed now, naming what works."""
    pol = ActorCritic(3, Discrete(2), hidden=(4,))
    for name, value in (("dtype", np.float64), ("obs_dim", 5), ("act_dim", 3), ("hidden", (8,)), ("shared", True),
                        ("discrete", False), ("action_space", Discrete(3))):
        before = getattr(pol, name)
        with pytest.raises(AttributeError, match=rf"^ActorCritic\.{name} is fixed at construction: the networks "
                                                 r"were built for it: a new ActorCritic\(\.\.\.\), or PPOConfig"):
            setattr(pol, name, value)
        assert getattr(pol, name) == before
