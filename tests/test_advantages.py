"""GAE / rewards-to-go / TD(0) against the plain-loop reference, their limiting properties, and
time-limit truncation bootstrapping on a tiny env whose returns can be written down."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from minippo.kernels import reference

from minippo.advantages import compute_advantages, compute_gae, gae_numpy
from minippo.config import PPOConfig

gym = pytest.importorskip("gymnasium")
from envs_for_tests import CLOCK_ID, COUNTER_ID, COUNTER_TERM_ID, register  # noqa: E402


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


# float64 throughout: both sides do the same O(T) multiply-adds in different orders, so they
# agree to a few ulps of the largest partial sum (|A| <= T * max|delta| ~ 50); 1e-10 is ample.
@settings(max_examples=60, deadline=None)
@given(rollouts(), coef, lam_s)
def test_gae_matches_reference(data, gamma, lam):
    r, v, d, last = data
    adv, ret = compute_gae(r, v, d, last, gamma, lam)
    adv_ref, ret_ref = reference.gae(r, v, d, last, gamma, lam)
    np.testing.assert_allclose(adv, adv_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ret, ret_ref, rtol=1e-10, atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(rollouts(), coef)
def test_lambda_one_is_monte_carlo_minus_value(data, gamma):
    r, v, d, last = data
    adv, ret = compute_gae(r, v, d, last, gamma, 1.0)
    g = reference.rewards_to_go(r, d, last, gamma)
    np.testing.assert_allclose(ret, g, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(adv, g - v, rtol=1e-10, atol=1e-10)
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
    # float32: relative rounding 6e-8 per op over <= 12 steps of magnitude <= ~40.
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

# ---------------------------------------------------------------- truncation bootstrap
def _algo(env_id, autoreset, n_steps, c=2.0, gamma=0.9):
    from minippo.ppo import PPO

    register()
    cfg = PPOConfig(env_id=env_id, n_envs=1, n_steps=n_steps, batch_size=n_steps, gamma=gamma,
                    gae_lambda=1.0, autoreset=autoreset, dtype="float64", hidden=(4,))
    algo = PPO(cfg)
    # A critic that outputs exactly c everywhere: V(s) = c.
    for k in algo.policy.critic.params:
        algo.policy.critic.params[k][...] = 0.0
    algo.policy.critic.params["b1"][...] = c
    return algo


def _episode_returns(steps_left, truncated, gamma, c):
    """Discounted return from a state with ``steps_left`` rewards of 1 before the episode ends."""
    g = sum(gamma**i for i in range(steps_left))
    return g + (gamma**steps_left * c if truncated else 0.0)


@pytest.mark.parametrize("autoreset", ["same_step", "next_step"])
def test_truncation_is_bootstrapped(autoreset):
    gamma, c = 0.9, 2.0
    algo = _algo(COUNTER_ID, autoreset, n_steps=8, c=c, gamma=gamma)
    algo.collect_rollout()
    buf = algo.buffer
    rew, done, valid, ret = (a[:, 0] for a in (buf.rewards, buf.dones, buf.valid, buf.returns))
    if autoreset == "same_step":
        # episodes: steps 0-2 (truncated), 3-5 (truncated), 6-7 (cut by the rollout end)
        np.testing.assert_allclose(rew, [1, 1, 1 + gamma * c, 1, 1, 1 + gamma * c, 1, 1])
        np.testing.assert_array_equal(done, [0, 0, 1, 0, 0, 1, 0, 0])
        np.testing.assert_array_equal(valid, np.ones(8))
        left = [3, 2, 1, 3, 2, 1]
        expected = [_episode_returns(k, True, gamma, c) for k in left]
        expected += [1 + gamma * (1 + gamma * c), 1 + gamma * c]  # bootstrapped from last_values = c
        np.testing.assert_allclose(ret, expected, rtol=1e-12)
    else:
        # NEXT_STEP: steps 0-2 episode, step 3 is the reset step (masked), 4-6 episode, 7 reset
        np.testing.assert_allclose(rew[[0, 1, 2, 4, 5, 6]], [1, 1, 1 + gamma * c, 1, 1, 1 + gamma * c])
        np.testing.assert_array_equal(valid, [1, 1, 1, 0, 1, 1, 1, 0])
        np.testing.assert_array_equal(done[[2, 6]], [1, 1])
        expected = [_episode_returns(k, True, gamma, c) for k in (3, 2, 1)]
        np.testing.assert_allclose(ret[[0, 1, 2]], expected, rtol=1e-12)
        np.testing.assert_allclose(ret[[4, 5, 6]], expected, rtol=1e-12)
        # the masked step never enters a minibatch
        mbs = list(buf.minibatches(8, np.random.default_rng(0)))
        assert sum(len(mb["returns"]) for mb in mbs) == 6
        np.testing.assert_array_equal(mbs[0]["returns"], ret[[0, 1, 2, 4, 5, 6]])  # time order
        assert next(buf.minibatches(8, np.random.default_rng(1)))["returns"] is mbs[0]["returns"]  # built once
        # 6 valid samples in minibatches of 2: each valid sample once; with min_size=2 (normalised
        # advantages) no minibatch of one, which would have to be skipped
        for min_size in (1, 2):
            for seed in range(20):
                sizes = [len(mb["returns"]) for mb in buf.minibatches(2, np.random.default_rng(seed), min_size)]
                assert sum(sizes) == 6 and min(sizes) >= min_size
            sizes = [len(mb["returns"]) for mb in buf.minibatches(1, np.random.default_rng(0), min_size)]
            assert sizes == [1] * 6 if min_size == 1 else sizes == [2] * 3
        buf.reset()
        assert buf._full_batch is None  # rebuilt for the next rollout


def test_termination_is_not_bootstrapped():
    gamma, c = 0.9, 2.0
    algo = _algo(COUNTER_TERM_ID, "same_step", n_steps=6, c=c, gamma=gamma)
    algo.collect_rollout()
    ret = algo.buffer.returns[:, 0]
    np.testing.assert_allclose(algo.buffer.rewards[:, 0], np.ones(6))
    expected = [_episode_returns(k, False, gamma, c) for k in (3, 2, 1, 3, 2, 1)]
    np.testing.assert_allclose(ret, expected, rtol=1e-12)


@pytest.mark.parametrize("autoreset", ["same_step", "next_step"])
def test_the_bootstrap_evaluates_the_critic_on_each_env_s_own_final_observation(autoreset):
    """The tests above use a constant critic and an env whose observation never changes, so V of the
    final observation, of the next reset's or of another env's all give the same reward (PPO_NOTES'
    first pitfall: bootstrapping from V(reset obs)). Here every final observation differs, the critic
    depends on it, and each truncated step must get gamma * V(its own env's final observation)."""
    from minippo.ppo import PPO

    register()
    gamma = 0.9
    algo = PPO(PPOConfig(env_id=CLOCK_ID, n_envs=2, n_steps=8, batch_size=16, gamma=gamma, autoreset=autoreset,
                         dtype="float64", hidden=(4,)))
    W = algo.policy.critic.params["W0"]
    W[...] = np.linspace(1.0, 2.0, W.size).reshape(W.shape)  # V clearly depends on the observation
    algo.collect_rollout()
    buf = algo.buffer
    clocks = [e.unwrapped for e in algo.env.envs]

    def v(obs):
        return float(algo.policy.forward(np.asarray(obs, np.float64).reshape(1, 1))[1][0])

    for i, clock in enumerate(clocks):
        ends = np.flatnonzero((buf.dones[:, i] > 0) & (buf.valid[:, i] > 0))
        assert len(ends) == len(clock.finals) >= 2
        want = [1.0 + gamma * v(f) for f in clock.finals]
        np.testing.assert_allclose(buf.rewards[ends, i], want, rtol=1e-12)
        # and that is not what the next reset's observation, or the other env's final one, would give
        assert all(abs(v(f) - v(r)) > 1e-3 for f, r in zip(clock.finals, clock.firsts[1:], strict=True))
    assert abs(v(clocks[0].finals[0]) - v(clocks[1].finals[0])) > 1e-3


def test_next_step_truncation_at_rollout_end_bootstraps_from_last_value():
    gamma, c = 0.9, 2.0
    algo = _algo(COUNTER_ID, "next_step", n_steps=3, c=c, gamma=gamma)
    algo.collect_rollout()  # steps 0-2: a whole episode, truncated at the last step
    np.testing.assert_allclose(algo.buffer.rewards[:, 0], [1, 1, 1 + gamma * c])
    algo.collect_rollout()  # step 0 is the reset step of the previous episode
    np.testing.assert_array_equal(algo.buffer.valid[:, 0], [0, 1, 1])


def test_gae_numpy_wants_scalar_gamma_and_lambda():
    z = np.zeros((3, 2))
    with pytest.raises(TypeError, match="gamma and lam must be real scalars"):
        gae_numpy(z, z, z, np.zeros(2), np.array([0.9, 0.9]), 0.95)
    a, _ = gae_numpy(z + 1, z, z, np.zeros(2), np.array(0.5), np.float32(0.5))  # 0-d: fine
    np.testing.assert_allclose(a[:, 0], [1 + 0.25 + 0.0625, 1.25, 1.0])


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
