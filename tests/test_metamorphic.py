"""Metamorphic relations: two training updates (or runs) whose inputs differ by a known transformation
must come out related by a known transformation too. None of these needs an oracle for the update
itself, so they check the trainer end to end (buffer, flattening, advantages, losses, backward, Adam)
against properties the maths fixes:

1. the envs' order: permuting the N env columns of a rollout permutes its advantages column-wise and
   leaves the full-batch loss, gradients and update equal up to the order of the sums;
2. a Discrete action's label: relabelling the actions and permuting the actor's output columns to match
   gives the same distribution, loss and update (output layer permuted); and a Box action's dimensions,
   with the mean's columns and the log-stds permuted;
3. softmax temperature: a policy at temperature tau is the tau = 1 policy whose output layer is divided
   by tau (gradients: the output layer's scaled by 1 / tau, every other equal);
4. objectives that reduce to another: clip with a clip range no ratio reaches is the importance-sampled
   surrogate, the KL penalty with beta ~ 0 is too, and at the rollout's own policy (ratio 1) the five
   objectives of the ladder take the same first step;
5. reward scale: with the critic held at zero and advantages normalised, rewards times c give the same
   run (up to the normaliser's 1e-8);
6. minibatches: the size-weighted mean of one epoch's minibatch gradients, at fixed parameters and
   without advantage normalisation, is the full-batch gradient (every valid step counted once, masked
   reset steps included);
7. seeds: the network's initialisation, the envs' reset seeds and the agent's generator each change the
   run, and nothing else does (seed 1 with those three forced to seed 0's is seed 0's run, bit for bit).

Everything runs in float64. "Equal up to the order of the sums": a float64 sum of n terms taken in
another order moves by at most ~n * 2^-53 of the sum of the terms' magnitudes; with n = 128 rows that is
~1.4e-14 relative, and the tests allow 1e-12 (measured: at most 1.4e-15 on numpy and numba).
On numba the networks are relu (trainer_parts.activation_for: the fused minibatch step's float64 case).

Tolerances, and why:
- ROUNDING (1e-12), for the sums in another order above: arrays (probabilities, gradients, parameters
  after an update) relative to their largest entry, since an entry that cancels to ~0 keeps the
  rounding of its terms' size; loss statistics relative to max(|value|, 1), since each is a mean of
  O(1) per-sample terms and a small mean (approx_kl, clipfrac) carries their rounding, not its own.
  The temperature relation adds a rounding or two per weight (W / tau, a gradient / tau): the same
  bound (measured 3.3e-16); relabelling only permutes (the softmax sums in another order). Beta 1e-300
  (beta * KL is below half an ulp of every term it joins), a clip range of 1e9 (clip(r) is r) and the
  ladder at ratio 1 give the surrogate's numbers: measured bit-equal; ROUNDING covers a reordering.
- "The runs differ" checks (> 1e-6): the effect is measured at >= 0.067 in a parameter (clip_eps 0.02
  against the surrogate) and >= 6.5e-3 of max|g| (per-minibatch normalised advantages), while rounding
  alone moves them by ~1e-12 relative: 1e-6 sits far from both.
- Reward scale, atol 1e-8: the normaliser's 1e-8 (derivation and measurements in the test's docstring).
- Actions compared exactly between two runs whose probabilities differ by rounding: inverse-CDF
  sampling flips a draw only when its uniform falls within that difference of a cdf edge: ~1e-13 for
  all draws at ~1e-16 (temperature), ~1e-6 at the reward-scale test's ~1e-9 (seeded: fixed outcomes).
"""

import math

import numpy as np
import pytest

from minippo.config import PPOConfig
from minippo.ppo import PPO, loss_and_grads

gym = pytest.importorskip("gymnasium")
from gymnasium.vector import AutoresetMode, SyncVectorEnv  # noqa: E402
from trainer_parts import activation_for, output_layer  # noqa: E402

# (a2c with n_epochs=2 warns that its later epochs are not the policy gradient: true, and beside the point here)
pytestmark = pytest.mark.filterwarnings("ignore:objective='a2c' with n_epochs:UserWarning")

BASE = dict(n_envs=4, n_steps=32, batch_size=128, n_epochs=2, hidden=(16, 16), dtype="float64",
            total_timesteps=10**6)
FIELDS = ("obs", "actions", "dist", "logp", "values", "rewards", "dones", "valid", "valid_host")
ROUNDING = 1e-12  # relative: the same sums in another order (module docstring)


def config(backend: str, **overrides) -> PPOConfig:
    return PPOConfig(**{**BASE, "activation": activation_for(backend), **overrides})


def vector_env(env_id: str, n: int, wrap) -> SyncVectorEnv:
    return SyncVectorEnv([lambda: wrap(gym.make(env_id)) for _ in range(n)], autoreset_mode=AutoresetMode.SAME_STEP)


def params_of(model: PPO) -> dict:
    return {k: np.array(v) for k, v in model.policy.params.items()}


def flat(grads: dict) -> np.ndarray:
    return np.concatenate([np.asarray(grads[k]).ravel() for k in sorted(grads)])


def assert_close(got, want, rtol: float = ROUNDING) -> None:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert np.max(np.abs(got - want)) <= rtol * max(np.max(np.abs(want)), 1e-300)


def assert_same_stats(got: dict, want: dict, rtol: float = ROUNDING) -> None:
    assert got.keys() == want.keys()
    for k in want:  # (NaN on both sides: a value neither run has, as stop_kl without a target_kl stop)
        assert abs(got[k] - want[k]) <= rtol * max(abs(want[k]), 1.0) or math.isnan(got[k]) and math.isnan(want[k]), k


def put_rollout(model: PPO, arrays: dict, last_values: np.ndarray) -> None:
    """Store a rollout in model's buffer (every field of FIELDS) and compute its returns as the trainer does."""
    buf, cfg = model.buffer, model.config
    for name in FIELDS:
        getattr(buf, name)[...] = arrays[name]
    buf.compute_returns(last_values, cfg.gamma, cfg.gae_lambda, cfg.advantage_estimator)


def rollout_of(model: PPO) -> dict:
    return {name: np.array(getattr(model.buffer, name)) for name in FIELDS}


def assert_same_update(a: PPO, b: PPO, batch_size: int, relabel, objectives=(None,)) -> None:
    """a and b hold rollouts that differ by a relabelling the maths undoes: the same minibatch of each
    gives the same loss statistics and, after relabel (a's gradient or parameter dict -> b's labels),
    the same gradients (one check per objective; None: the config's own); one update each from the same
    generator state gives the same statistics and relabelled parameters."""
    batch_a = next(a.buffer.minibatches(batch_size, np.random.default_rng(0)))
    batch_b = next(b.buffer.minibatches(batch_size, np.random.default_rng(0)))
    for objective in objectives:
        cfg = a.config if objective is None else a.config.replace(objective=objective)
        stats_a, grads_a = loss_and_grads(a.policy, batch_a, cfg)
        stats_b, grads_b = loss_and_grads(b.policy, batch_b, cfg)
        assert_same_stats(stats_b, stats_a)
        assert_close(flat(grads_b), flat(relabel(grads_a)))
    b.rng.bit_generator.state = a.rng.bit_generator.state  # the same minibatches
    assert_same_stats(b.update(0.0), a.update(0.0))
    pa, pb = relabel(params_of(a)), params_of(b)
    for k in pa:
        assert_close(pb[k], pa[k])


@pytest.mark.parametrize("env_id, objective, advantage", [
    ("CartPole-v1", "clip", "gae"), ("CartPole-v1", "kl_penalty", "td"), ("CartPole-v1", "a2c", "mc"),
    ("Pendulum-v1", "clip", "gae"), ("Pendulum-v1", "surrogate", "gae"),
])
def test_permuting_the_envs_permutes_the_advantages_and_leaves_the_update(any_backend, env_id, objective, advantage):
    cfg = config(any_backend, env_id=env_id, objective=objective, advantage=advantage, ent_coef=0.01,
                 clip_vloss=True)
    a, b = PPO(cfg), PPO(cfg)  # (the same seed: the same parameters)
    try:
        a.collect_rollout()
        b.collect_rollout()
        if env_id == "CartPole-v1":  # episodes end inside the rollout: dones in the columns
            assert np.asarray(a.buffer.dones).any()
        perm = np.array([2, 0, 3, 1])
        last = np.random.default_rng(1).normal(size=cfg.n_envs)
        rollout = rollout_of(a)
        put_rollout(a, rollout, last)
        put_rollout(b, {k: v[:, perm] for k, v in rollout.items()}, last[perm])
        # The recursion runs down each column on its own: the same numbers, moved.
        assert np.array_equal(np.asarray(b.buffer.advantages), np.asarray(a.buffer.advantages)[:, perm])
        assert np.array_equal(np.asarray(b.buffer.returns), np.asarray(a.buffer.returns)[:, perm])
        # The full batch's loss and gradients, and a whole update (2 epochs of the one full-batch
        # minibatch, Adam, gradient clipping): nothing to relabel, the same sums in another order.
        assert_same_update(a, b, cfg.n_envs * cfg.n_steps, lambda d: d)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("temperature", [1.0, 0.37])
def test_relabelled_actions_with_the_output_columns_permuted_give_the_same_update(any_backend, temperature):
    perm = np.array([2, 0, 1])  # Acrobot's 3 actions
    inv = np.argsort(perm)
    cfg = config(any_backend, env_id="Acrobot-v1", objective="kl_penalty", batch_size=32, ent_coef=0.01,
                 clip_vloss=True, temperature=temperature)
    a = PPO(cfg)
    b = PPO(cfg)  # (b's own rollout is replaced below by a's, relabelled: its env needs no relabelling)
    try:
        kw, kb = output_layer(b)
        b.policy.params[kw][...] = b.policy.params[kw][:, perm].copy()
        b.policy.params[kb][...] = b.policy.params[kb][perm].copy()
        obs = np.random.default_rng(2).normal(size=(200, a.obs_dim))
        dist_a, value_a, _ = a.policy.forward(obs)
        dist_b, value_b, _ = b.policy.forward(obs)
        assert_close(dist_b.probs, np.asarray(dist_a.probs)[:, perm])
        assert_close(dist_b.entropy(), dist_a.entropy())
        assert np.array_equal(np.asarray(value_b), np.asarray(value_a))
        # a's own rollout, its actions and stored logits relabelled for b; 2 epochs x 4 minibatches
        a.collect_rollout()
        b.collect_rollout()
        rollout = rollout_of(a)
        last = np.random.default_rng(1).normal(size=cfg.n_envs)
        put_rollout(a, rollout, last)
        put_rollout(b, dict(rollout, actions=inv[rollout["actions"]], dist=rollout["dist"][:, :, perm]), last)
        assert_same_update(a, b, 32, lambda d: {**d, kw: d[kw][:, perm], kb: d[kb][perm]})
    finally:
        a.close()
        b.close()


class Reach(gym.Env):
    """Observations N(0, 1) in R^4, actions in [-1, 1]^3, reward -|a - tanh(M s) / 2|^2, 10-step episodes."""

    M = np.array([[0.5, -1.0, 0.3, 0.0], [1.2, 0.4, -0.7, 0.9], [-0.2, 0.8, 1.1, -0.5]])
    observation_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float64)
    action_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float64)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.s = 0, self.np_random.normal(size=4)
        return self.s, {}

    def step(self, action):
        reward = -float(np.sum((np.asarray(action) - 0.5 * np.tanh(self.M @ self.s)) ** 2))
        self.t, self.s = self.t + 1, self.np_random.normal(size=4)
        return self.s, reward, False, self.t >= 10, {}


@pytest.mark.parametrize("shared", [False, True])
def test_permuted_action_dimensions_with_the_mean_and_log_std_permuted_give_the_same_update(any_backend, shared):
    """The Gaussian case of the relabelling: a Box action's dimensions permuted, with the actor's mean
    columns and log-stds permuted to match, give the same distribution, loss and update."""
    perm = np.array([1, 2, 0])
    cfg = config(any_backend, env_id="Reach", batch_size=32, ent_coef=0.01, clip_vloss=True, shared=shared,
                 log_std_init=-0.3)  # (env_id names no env here: the env is given)
    a, b = (PPO(cfg, env=SyncVectorEnv([Reach] * cfg.n_envs, autoreset_mode=AutoresetMode.SAME_STEP))
            for _ in range(2))
    try:
        kw, kb = output_layer(b)
        b.policy.params[kw][...] = b.policy.params[kw][:, perm].copy()
        b.policy.params[kb][...] = b.policy.params[kb][perm].copy()
        a.policy.params["log_std"][...] += np.array([0.0, 0.1, -0.1])  # (three different stds)
        b.policy.params["log_std"][...] = a.policy.params["log_std"][perm]
        obs = np.random.default_rng(2).normal(size=(200, 4))
        dist_a, dist_b = a.policy.forward(obs)[0], b.policy.forward(obs)[0]
        assert_close(dist_b.mean, np.asarray(dist_a.mean)[:, perm])
        assert_close(dist_b.log_std, np.asarray(dist_a.log_std)[..., perm])
        a.collect_rollout()
        b.collect_rollout()
        rollout = rollout_of(a)
        assert rollout["dones"].any()
        d = 3
        dist = np.concatenate([rollout["dist"][..., :d][..., perm], rollout["dist"][..., d:][..., perm]], axis=-1)
        last = np.random.default_rng(1).normal(size=cfg.n_envs)
        put_rollout(a, rollout, last)
        put_rollout(b, dict(rollout, actions=rollout["actions"][..., perm], dist=dist), last)
        assert_same_update(a, b, 32, lambda d: {**d, kw: d[kw][:, perm], kb: d[kb][perm],
                                                "log_std": d["log_std"][perm]}, objectives=("clip", "kl_penalty"))
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("tau", [0.3, 2.5])
@pytest.mark.parametrize("shared", [False, True])
def test_a_temperature_is_the_output_layer_divided_by_it(any_backend, tau, shared):
    cfg = config(any_backend, env_id="Acrobot-v1", batch_size=32, ent_coef=0.05, shared=shared)
    hot, cold = PPO(cfg.replace(temperature=tau)), PPO(cfg)
    try:
        kw, kb = output_layer(hot)
        cold.policy.params[kw][...] = hot.policy.params[kw] / tau
        cold.policy.params[kb][...] = hot.policy.params[kb] / tau
        obs = np.random.default_rng(0).normal(size=(200, hot.obs_dim))
        assert_close(cold.policy.forward(obs)[0].probs, hot.policy.forward(obs)[0].probs)
        hot.collect_rollout()
        cold.collect_rollout()
        assert np.array_equal(np.asarray(hot.buffer.actions), np.asarray(cold.buffer.actions))
        # move off the rollout's policy (ratios away from 1), the same move for both
        noise = np.random.default_rng(1)
        for k, v in hot.policy.params.items():
            v[...] += 0.05 * noise.normal(size=v.shape)
            cold.policy.params[k][...] = v / tau if k in (kw, kb) else v
        batch = next(hot.buffer.minibatches(32, np.random.default_rng(0)))
        cold_batch = dict(batch, dist_old=batch["dist_old"] / tau)  # (the buffer keeps the logits before tau)
        for objective in ("clip", "kl_penalty", "surrogate", "a2c"):
            stats_hot, grads_hot = loss_and_grads(hot.policy, batch, hot.config.replace(objective=objective))
            stats_cold, grads_cold = loss_and_grads(cold.policy, cold_batch, cfg.replace(objective=objective))
            assert_same_stats(stats_cold, stats_hot)
            grads_cold[kw], grads_cold[kb] = grads_cold[kw] / tau, grads_cold[kb] / tau
            assert_close(flat(grads_cold), flat(grads_hot))
    finally:
        hot.close()
        cold.close()


def run(cfg: PPOConfig, iterations: int = 3) -> list:
    """The parameters after each of the iterations (a rollout and an update each)."""
    model = PPO(cfg)
    try:
        out = []
        for _ in range(iterations):
            model.collect_rollout()
            model.update(0.0)
            out.append(params_of(model))
        return out
    finally:
        model.close()


def assert_same_runs(got: list, want: list) -> None:
    for p, q in zip(got, want, strict=True):
        for k in q:
            assert_close(p[k], q[k])


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_clip_out_of_reach_and_a_vanishing_kl_penalty_are_the_surrogate(any_backend, env_id):
    cfg = config(any_backend, env_id=env_id, batch_size=32, n_epochs=4, learning_rate=3e-3, ent_coef=0.01)
    surrogate = run(cfg.replace(objective="surrogate"))
    assert_same_runs(run(cfg.replace(objective="clip", clip_eps=1e9)), surrogate)
    # beta must be > 0; at 1e-300, beta * KL and its gradient vanish beside every other term
    assert_same_runs(run(cfg.replace(objective="kl_penalty", kl_beta=1e-300)), surrogate)
    # and the other way: clip within reach is not the surrogate (the runs differ)
    clipped = run(cfg.replace(objective="clip", clip_eps=0.02))
    assert max(np.max(np.abs(clipped[-1][k] - surrogate[-1][k])) for k in surrogate[-1]) > 1e-6  # (measured >= 0.067)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_at_ratio_one_the_ladder_takes_one_first_step(any_backend, env_id):
    """One epoch of one minibatch: every ratio is 1, where clip, the KL penalty (KL 0, gradient 0), the
    surrogate and the plain log-likelihood objectives (a2c, reinforce) share their gradient."""
    cfg = config(any_backend, env_id=env_id, batch_size=128, n_epochs=1, learning_rate=3e-3, advantage="gae",
                 ent_coef=0.01)
    want = run(cfg.replace(objective="surrogate"), iterations=1)
    for objective in ("clip", "kl_penalty", "a2c", "reinforce"):
        assert_same_runs(run(cfg.replace(objective=objective), iterations=1), want)


class ScaleReward(gym.RewardWrapper):
    def __init__(self, env, c):
        super().__init__(env)
        self.c = c

    def reward(self, reward):
        return self.c * reward


@pytest.mark.parametrize("c", [4.0, 0.5])
def test_rewards_times_c_give_the_same_run_with_normalised_advantages(any_backend, c):
    """The critic held at zero (its output layer zeroed, vf_coef 0: it never moves), so the advantages are
    linear in the rewards, and a power of 2 scales them exactly. The normalised advantages
    (A - mean) / (std + 1e-8) are then the unscaled run's times std' / (std' + 1e-8), std' the scaled
    advantages' std in the minibatch (3.3-3.8 unscaled here): each minibatch's policy gradient moves by
    a relative ~1e-8 / std', and so, about, does each of Adam's 72 steps (6 iterations x 3 epochs x 4
    minibatches, ~lr = 3e-3 each): a gap of ~72 * 3e-3 * 1e-8 / (0.5 * 3.3) ~ 1.3e-9 at c = 1/2 (measured:
    1.1e-9 on numpy, 6e-11 on numba's relu networks; 8e-10 at c = 4), under the 1e-8 allowed; at c = 1/64
    the same estimate gives 4e-8, and the gap measured 7e-8. The actions sampled stay the same."""
    cfg = config(any_backend, env_id="CartPole-v1", batch_size=32, n_epochs=3, learning_rate=3e-3, vf_coef=0.0)

    def go(scale):
        model = PPO(cfg, env=vector_env("CartPole-v1", cfg.n_envs, lambda e: ScaleReward(e, scale)))
        try:
            critic_out = output_layer(model, "critic")
            for key in critic_out:
                model.policy.params[key][...] = 0.0
            actions, params = [], []
            for _ in range(6):
                model.collect_rollout()
                actions.append(np.array(model.buffer.actions))
                model.update(0.0)
                params.append(params_of(model))
            # the premise: the zeroed critic never moved, so V = 0 all along
            assert not any(np.any(params[-1][k]) for k in critic_out)
            return actions, params
        finally:
            model.close()

    actions_1, params_1 = go(1.0)
    actions_c, params_c = go(c)
    assert all(np.array_equal(x, y) for x, y in zip(actions_c, actions_1, strict=True))
    for p, q in zip(params_c, params_1, strict=True):
        for k in q:
            np.testing.assert_allclose(p[k], q[k], rtol=0, atol=1e-8, err_msg=k)


@pytest.mark.parametrize("autoreset", ["same_step", "next_step"])
@pytest.mark.parametrize("objective", ["clip", "kl_penalty", "a2c"])
def test_minibatch_gradients_average_to_the_full_batch_gradient(any_backend, autoreset, objective):
    """At fixed parameters (moved off the rollout's policy, so that clip, the KL term and the value clip
    act: asserted), one epoch's minibatch gradients weighted by their sizes average to the full batch's:
    each minibatch's loss is a mean over its steps and every valid step is in exactly one minibatch.
    next_step masks its reset steps, so the minibatches can come out of unequal sizes. With advantages
    normalised per minibatch (the documented default) the relation does not hold (asserted too): each
    minibatch is then its own normalised batch. (On numba this runs numba's network kernels through
    loss_and_grads; the fused minibatch step is held to numpy's in tests/test_kernels_update.py.)"""
    cfg = config(any_backend, env_id="CartPole-v1", n_steps=64, autoreset=autoreset, objective=objective,
                 ent_coef=0.01, clip_vloss=True, clip_eps=0.02, normalize_advantages=False)
    model = PPO(cfg)
    try:
        model.collect_rollout()
        model.collect_rollout()
        noise = np.random.default_rng(2)
        for v in model.policy.params.values():
            v[...] += 0.1 * noise.normal(size=v.shape)
        # V raised towards CartPole's positive returns: the clipped value error is the larger one there
        model.policy.params[output_layer(model, "critic")[1]][...] += 0.5
        n = cfg.n_envs * cfg.n_steps
        valid = int(np.asarray(model.buffer.valid_host).sum())
        if autoreset == "next_step":
            assert valid < n
        stats_full, grads_full = loss_and_grads(model.policy, next(model.buffer.minibatches(n, model.rng)), cfg)
        assert stats_full["vclipfrac"] > 0  # (the value clip acts)
        if objective == "clip":
            assert stats_full["clipfrac"] > 0
        if objective == "kl_penalty":
            assert stats_full["kl"] > 0
        for size in (n // 2, n // 8, n // 32):
            total, count, loss, sizes = 0.0, 0, 0.0, set()
            for batch in model.buffer.minibatches(size, np.random.default_rng(5), 2):
                stats, grads = loss_and_grads(model.policy, batch, cfg)
                b = batch["advantages"].shape[0]
                total, count, loss = total + b * flat(grads), count + b, loss + b * stats["loss"]
                sizes.add(b)
            assert count == valid
            if valid % (n // size):
                assert len(sizes) > 1  # (the masked steps left a count the minibatches don't divide)
            assert_close(total / count, flat(grads_full))
            assert abs(loss / count - stats_full["loss"]) <= ROUNDING * max(abs(stats_full["loss"]), 1.0)
        normalised = cfg.replace(normalize_advantages=True)
        _, grads_norm = loss_and_grads(model.policy, next(model.buffer.minibatches(n, model.rng)), normalised)
        parts = [(batch["advantages"].shape[0], flat(loss_and_grads(model.policy, batch, normalised)[1]))
                 for batch in model.buffer.minibatches(n // 8, np.random.default_rng(5), 2)]
        mean = sum(b * g for b, g in parts) / sum(b for b, _ in parts)
        assert np.max(np.abs(mean - flat(grads_norm))) > 1e-6 * np.max(np.abs(flat(grads_norm)))  # (measured >= 6.5e-3)
    finally:
        model.close()


def test_the_seed_reaches_the_run_through_three_streams_and_no_other(any_backend, monkeypatch):
    """config.seed feeds the network's initialisation, the envs' reset seeds (config.train_reset_seed)
    and the agent's generator (config.agent_rng: actions, minibatch order). Each one alone changes the
    run; with all three taken from seed 0, seed 1's run is seed 0's, bit for bit: no stream left unseeded
    or seeded some other way (the global numpy and random generators: reseeded between runs to show it,
    and their whole state, position in the stream included, left as it was by a run)."""
    import random

    import minippo.ppo as ppo_module

    cfg = config(any_backend, batch_size=32, env_id="Pendulum-v1", norm_obs=True, norm_reward=True)
    reset_seed = ppo_module.train_reset_seed

    def go(seed, init=None, envs=None, agent=None):
        monkeypatch.setattr(ppo_module, "train_reset_seed",
                            lambda s, steps, n: reset_seed(s if envs is None else envs, steps, n))
        with PPO(cfg.replace(seed=seed)) as model:
            if init is not None:
                with PPO(cfg.replace(seed=init)) as source:
                    for k, v in model.policy.params.items():
                        v[...] = source.policy.params[k]
            if agent is not None:
                model.rng = ppo_module.agent_rng(agent)
            out = []
            for _ in range(3):
                model.collect_rollout()
                out += [np.array(model.buffer.obs), np.array(model.buffer.actions)]
                model.update(0.0)
            return out + list(params_of(model).values())

    def same(x, y):
        return all(np.array_equal(p, q) for p, q in zip(x, y, strict=True))

    np.random.seed(2)  # noqa: NPY002 (the global generators, on purpose)
    random.seed(3)
    np.random.random(5)  # noqa: NPY002 (somewhere inside the stream: a draw would move its position, not its key)
    state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    want = go(0)
    after = np.random.get_state()  # noqa: NPY002
    assert after[0] == state[0] and np.array_equal(after[1], state[1]) and after[2:] == state[2:]
    assert random.getstate() == py_state
    np.random.seed(12345)  # noqa: NPY002
    random.seed(99)
    assert same(go(1, init=0, envs=0, agent=0), want)
    assert same(go(0), want)
    assert not same(go(0, init=1), want)
    assert not same(go(0, envs=1), want)
    assert not same(go(0, agent=1), want)
