"""Time-limit truncation bootstrapping on tiny gymnasium envs whose returns can be written down.

Tolerances, and why (all float64; measured with the numpy and numba backends):
- Stored rewards: the env's 1.0, or 1 + gamma * c where a truncation is bootstrapped from the constant
  critic, whose V = c is exact (every critic weight 0: tanh(0) = 0, the output is the bias c); the
  trainer does the test's own float operations: bit-equal, compared exactly.
- Returns against the closed form sum(gamma**i) + gamma**k * c: the GAE recursion (3 roundings a step
  of values <= 3, over episodes of <= 3 steps, damped by gamma * lambda = 0.9) against powers and a sum
  taken in another order: <= ~5e-15 relative in the worst case (returns >= 1): rtol 1e-14 (measured
  2.1e-16).
- The Clock bootstrap: the rollout's V(final obs) is the critic run on the batch of ending envs, the
  test's the same backend's forward on one row; only the order of the 4-term output sum (terms <= 1.1
  in size) can differ with the row count: <= ~1e-15 on rewards >= 1.4, rtol 1e-14 (measured:
  bit-equal).
- "> 1e-3" separations: V of the final observation against the next reset's (or the other env's)
  differs by >= 0.016 here (measured), so a bootstrap from the wrong observation misses the 1e-14
  tolerance by ~12 orders; 1e-3 only keeps the premise honest.
"""

import numpy as np
import pytest

from minippo.config import PPOConfig

gym = pytest.importorskip("gymnasium")
from envs_for_tests import CLOCK_ID, COUNTER_ID, COUNTER_TERM_ID, register  # noqa: E402


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
        np.testing.assert_array_equal(rew, [1, 1, 1 + gamma * c, 1, 1, 1 + gamma * c, 1, 1])
        np.testing.assert_array_equal(done, [0, 0, 1, 0, 0, 1, 0, 0])
        np.testing.assert_array_equal(valid, np.ones(8))
        left = [3, 2, 1, 3, 2, 1]
        expected = [_episode_returns(k, True, gamma, c) for k in left]
        expected += [1 + gamma * (1 + gamma * c), 1 + gamma * c]  # bootstrapped from last_values = c
        np.testing.assert_allclose(ret, expected, rtol=1e-14)
    else:
        # NEXT_STEP: steps 0-2 episode, step 3 is the reset step (masked), 4-6 episode, 7 reset
        np.testing.assert_array_equal(rew[[0, 1, 2, 4, 5, 6]], [1, 1, 1 + gamma * c, 1, 1, 1 + gamma * c])
        np.testing.assert_array_equal(valid, [1, 1, 1, 0, 1, 1, 1, 0])
        np.testing.assert_array_equal(done[[2, 6]], [1, 1])
        expected = [_episode_returns(k, True, gamma, c) for k in (3, 2, 1)]
        np.testing.assert_allclose(ret[[0, 1, 2]], expected, rtol=1e-14)
        np.testing.assert_allclose(ret[[4, 5, 6]], expected, rtol=1e-14)
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
    np.testing.assert_array_equal(algo.buffer.rewards[:, 0], np.ones(6))
    expected = [_episode_returns(k, False, gamma, c) for k in (3, 2, 1, 3, 2, 1)]
    np.testing.assert_allclose(ret, expected, rtol=1e-14)


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
        np.testing.assert_allclose(buf.rewards[ends, i], want, rtol=1e-14)
        # and that is not what the next reset's observation, or the other env's final one, would give
        assert all(abs(v(f) - v(r)) > 1e-3 for f, r in zip(clock.finals, clock.firsts[1:], strict=True))
    assert abs(v(clocks[0].finals[0]) - v(clocks[1].finals[0])) > 1e-3


def test_next_step_truncation_at_rollout_end_bootstraps_from_last_value():
    gamma, c = 0.9, 2.0
    algo = _algo(COUNTER_ID, "next_step", n_steps=3, c=c, gamma=gamma)
    algo.collect_rollout()  # steps 0-2: a whole episode, truncated at the last step
    np.testing.assert_array_equal(algo.buffer.rewards[:, 0], [1, 1, 1 + gamma * c])
    algo.collect_rollout()  # step 0 is the reset step of the previous episode
    np.testing.assert_array_equal(algo.buffer.valid[:, 0], [0, 1, 1])


@pytest.mark.parametrize("autoreset", ["same_step", "next_step"])
def test_the_bootstraps_run_the_critic_alone(autoreset, monkeypatch):
    """The truncation bootstraps and the rollout's last V(s_T) need the value head only: the actor runs
    once per step, to act (the rollout ran the whole forward for each bootstrap: CartPole's net at
    B = 1-8 takes 8-10 us for the critic alone against 29-30 us on numpy, 3-4 against 15-18 on numba)."""
    from minippo import backend

    monkeypatch.setenv(backend.ENV_VAR, "numpy")  # (numba's fused act runs no actor.forward to count)
    backend.reset()
    algo = _algo(COUNTER_ID, autoreset, n_steps=8)
    calls = []
    forward = algo.policy.actor.forward
    monkeypatch.setattr(algo.policy.actor, "forward", lambda x: calls.append(len(x)) or forward(x))
    algo.collect_rollout()
    assert calls == [1] * 8
    assert algo.buffer.rewards[2, 0] == 1 + 0.9 * 2.0  # a truncation was bootstrapped (with V = c = 2)
