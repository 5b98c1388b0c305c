"""Trainer details that a wrong line would change silently: which steps are bootstrapped, what is
logged, which KL adapts beta, which learning rate Adam gets, the target_kl threshold, how
minibatches are drawn, and the running normalisers and orthogonal init against plain references.

Every expected value comes from a plain loop or a hand calculation, not from the library. The
trainer runs are tiny (at most 256 env steps), so the whole file takes a few seconds.

Tolerances, and why (float64 unless said; "measured" on numpy and numba; reasons specific to one check
are beside it):
- Returns of the constant critic against sums of gamma**i: GAE's 3 roundings a step of values <= 3,
  over episodes of <= 3 steps, against powers summed in another order: <= ~5e-15 of returns >= 1,
  rtol 1e-14 (measured 1.6e-16). The trainer's GAE against the plain-loop kernels/reference.gae: the
  same expressions in the same order (bit-equal, measured); atol 1e-14 leaves a compiled backend room
  to fuse a multiply-add (a few roundings of values <= 3).
- Running statistics (RunningMeanStd, ObsNormalizer, RewardScaler) against two-pass sums: Chan's
  pooled update over k batches against one pass, each ~k roundings of the sums: <= ~1e-13 relative for
  1000 samples or 200 batches; rtol 1e-12 (measured <= 2.1e-15). The counts add integers to the 1e-4
  prior: each addition rounds by <= half an ulp of the total, ~6e-17 relative: rel 1e-15.
- ObsNormalizer's output adds a cancellation: probe 0.003 against a mean of 0.0032 makes
  (probe - mean) ~15x smaller than its terms, so the mean's ~5e-15 relative error becomes ~8e-14 of the
  output: rtol 1e-12 (measured 2.3e-15). In float32 the probe itself is rounded (0.003 to within
  1.2e-10), which that cancellation and the std 2.5e-3 turn into <= 6e-7 of the output, plus the
  output's own float32 rounding (6e-8): rtol 1e-6 (measured 1.0e-7).
- Logged means (loss, approx_kl, ...) against a sum over the minibatch stats: the trainer adds them in
  order, as Python's sum() did before 3.12 (bit-equal, measured); 3.12's compensated sum() may differ
  by <= 3 roundings of the terms' size: rel 1e-12, and abs 1e-15 for means that cancel to ~0.
- The stored rollout against the policy re-evaluated (float32): another summation order for another
  row count, and numba's fused act (tanh within 8 ulp): a few float32 ulps of |logp| <= 5.4: 1e-5
  relative and absolute (measured <= 4.8e-7, 1 ulp at 5.4).
- "Not allclose" checks: the scaled rewards differ from 1 by >= 0.22 and the other lambdas' advantages
  from these by >= 0.52 (measured), far outside allclose's 1e-5.
"""

import importlib.util
import math
import warnings

import numpy as np
import pytest
import reference as ref

from minippo.buffer import RolloutBuffer
from minippo.config import PPOConfig
from minippo.envs import RewardScaler, RunningMeanStd
from minippo.nn import orthogonal
from minippo.ppo import PPO, NumpyStep, explained_variance

try:
    import gymnasium as gym
    from envs_for_tests import COUNTER_ID, Counter, register  # gymnasium env classes
except ImportError:  # the pure-numpy tests below still run
    gym = None

needs_gym = pytest.mark.skipif(gym is None, reason="gymnasium is not installed")

# Counter (reward 1 per step) that terminates at step 3 *and* is truncated there by its TimeLimit
TERM_AT_LIMIT_ID = "minippo-test/TermAtLimit-v0"


def _constant_critic_algo(env_id, autoreset, n_steps, c, gamma):
    """One env, float64, GAE(lambda=1) (plain discounted returns), critic outputting exactly c."""
    algo = PPO(PPOConfig(env_id=env_id, n_envs=1, n_steps=n_steps, batch_size=n_steps, gamma=gamma,
                         gae_lambda=1.0, autoreset=autoreset, dtype="float64", hidden=(4,)))
    for k in algo.policy.critic.params:
        algo.policy.critic.params[k][...] = 0.0
    algo.policy.critic.params["b1"][...] = c  # output bias of the (4,)-hidden critic: V(s) = c
    return algo


# ---------------------------------------------------------------- truncation bootstrap (P10)
@needs_gym
@pytest.mark.parametrize("autoreset", ["same_step", "next_step"])
def test_step_both_terminated_and_truncated_is_not_bootstrapped(autoreset):
    """A step that is terminated and truncated at once is terminal: no gamma * V(final obs) added."""
    if TERM_AT_LIMIT_ID not in gym.registry:
        gym.register(TERM_AT_LIMIT_ID, entry_point=Counter, max_episode_steps=3,
                     kwargs={"terminate_after": 3})
    env = gym.make(TERM_AT_LIMIT_ID)
    env.reset(seed=0)
    flags = [tuple(bool(x) for x in env.step(0)[2:4]) for _ in range(3)]
    assert flags == [(False, False), (False, False), (True, True)]  # the case under test occurs

    gamma, c = 0.9, 2.0
    n_steps = 6 if autoreset == "same_step" else 8  # two whole episodes (+ 2 reset steps in next_step)
    algo = _constant_critic_algo(TERM_AT_LIMIT_ID, autoreset, n_steps, c, gamma)
    algo.collect_rollout()
    buf = algo.buffer
    valid = buf.valid[:, 0] > 0
    if autoreset == "next_step":
        np.testing.assert_array_equal(valid, [1, 1, 1, 0, 1, 1, 1, 0])
    assert valid.sum() == 6
    np.testing.assert_array_equal(buf.dones[:, 0][valid], [0, 0, 1, 0, 0, 1])
    # a bootstrapped terminal step would carry 1 + gamma * c = 2.8
    np.testing.assert_array_equal(buf.rewards[:, 0][valid], np.ones(6))
    # discounted returns of rewards 1, 1, 1 that simply stop at the episode end
    expected = [sum(gamma**i for i in range(left)) for left in (3, 2, 1)] * 2
    np.testing.assert_allclose(buf.returns[:, 0][valid], expected, rtol=1e-14)  # float64, 3 terms


# ---------------------------------------------------------------- logged returns (P13)
@needs_gym
def test_logged_episode_returns_are_raw_with_norm_reward():
    """With norm_reward=True the logged episode returns are the env's raw returns, not scaled ones."""
    register()  # Counter: reward 1 per step, truncated after 3 steps: every return is 3
    algo = PPO(PPOConfig(env_id=COUNTER_ID, n_envs=2, n_steps=12, batch_size=8, norm_reward=True, hidden=(4,)))
    algo.collect_rollout()
    assert not np.allclose(algo.buffer.rewards, 1.0)  # the buffer did get scaled rewards
    assert list(algo.episode_returns) == [3.0] * 8
    assert list(algo.episode_lengths) == [3] * 8


# ---------------------------------------------------------------- adaptive-KL rollout KL (P14)
@needs_gym
def test_rollout_kl_for_adaptive_beta_averages_valid_steps_only(numpy_backend):
    """out["kl"] (which adapts beta) is the mean KL(pi_old || pi_new) over unmasked steps only."""
    algo = PPO(PPOConfig(env_id="CartPole-v1", autoreset="next_step", objective="kl_penalty", n_envs=4,
                         n_steps=64, batch_size=64, n_epochs=4, hidden=(8,), learning_rate=0.05,
                         dtype="float64", seed=1))
    algo.collect_rollout()
    buf = algo.buffer
    n = buf.T * buf.N
    valid = buf.valid.reshape(n) > 0
    assert 0 < (~valid).sum() < n  # the rollout has masked reset steps
    out = algo.update(progress=0.0)

    old_logits = buf.dist.reshape(n, -1)
    new_logits = algo.policy.forward(buf.obs.reshape(n, -1))[0].logits
    t = algo.config.temperature
    kl = ref.categorical_kl(old_logits.tolist(), new_logits.tolist(), t, t)  # plain loops
    want = math.fsum(k for k, v in zip(kl, valid, strict=True) if v) / int(valid.sum())
    mean_all = math.fsum(kl) / n
    # the masked steps' KL moves the mean well beyond the tolerance below (else: no test)
    assert abs(mean_all - want) > 1e-3 * want
    # float64; the reference's log p - log q loses ~|log p| / KL ~ 1e3 ulps to cancellation: 1e-10 is ample
    assert out["kl"] == pytest.approx(want, rel=1e-10)


@needs_gym
@pytest.mark.parametrize("shared", [False, True])
def test_rollout_kl_runs_the_actor_alone(numpy_backend, monkeypatch, shared):
    """The rollout's KL sends every step through the network at once: a full forward ran the critic
    too and held its outputs (~35 MB at 32768 steps, width 256: 5x the minibatch loop's peak). The
    actor alone gives the same KL, bit for bit."""
    algo = PPO(PPOConfig(env_id="CartPole-v1", objective="kl_penalty", n_envs=2, n_steps=32, batch_size=32,
                         n_epochs=2, hidden=(8, 8), shared=shared, seed=3))
    algo.collect_rollout()
    algo.update(progress=0.0)
    buf = algo.buffer
    n = buf.T * buf.N
    dist_new = algo.policy.forward(buf.obs.reshape(n, -1))[0]  # the full forward
    kl = algo.policy.make_dist(buf.dist.reshape(n, -1)).kl(dist_new)
    valid = buf.valid.reshape(n)
    want = float((kl * valid).sum() / valid.sum())

    def no_critic(*a, **k):
        raise AssertionError("the rollout's KL ran the critic")

    monkeypatch.setattr(algo.policy.critic, "forward", no_critic)
    assert algo._rollout_kl() == want


@needs_gym
def test_rollout_kl_of_a_policy_subclass_goes_through_its_forward(numpy_backend):
    """A subclass's own forward gave the rollout's dists: the rollout's KL takes it too."""
    from minippo.policy import ActorCritic

    class Sharper(ActorCritic):  # a forward that divides the logits by 2
        def forward(self, obs):
            dist, v, cache = super().forward(obs)
            return self.make_dist(dist.logits / 2), v, cache

    algo = PPO(PPOConfig(env_id="CartPole-v1", objective="kl_penalty", n_envs=2, n_steps=16, batch_size=32,
                         n_epochs=1, hidden=(8,), seed=3))
    algo.policy.__class__ = Sharper
    algo.collect_rollout()
    buf = algo.buffer
    n = buf.T * buf.N
    kl = algo.policy.make_dist(buf.dist.reshape(n, -1)).kl(algo.policy.forward(buf.obs.reshape(n, -1))[0])
    assert algo._rollout_kl() == float(kl.sum() / n) == 0.0  # (nothing updated: pi_old is pi)


# ---------------------------------------------------------------- scheduled learning rate (P16)
@needs_gym
def test_scheduled_lr_is_the_one_adam_uses(any_backend):
    """A linear lr schedule to 0 gives lr=0 at progress 1, and Adam then leaves every parameter as is."""
    algo = PPO(PPOConfig(env_id="CartPole-v1", n_envs=2, n_steps=16, batch_size=16, n_epochs=2, hidden=(8,),
                         learning_rate=1e-2, lr_schedule="linear", lr_end=0.0))
    if any_backend == "numba":
        from minippo.kernels import cpu_update  # needs numba: only in the numba parametrisation

        want_step = cpu_update.FusedUpdate
    else:
        want_step = NumpyStep
    assert isinstance(algo._minibatch_step(), want_step)  # the path this parametrisation means to test
    algo.collect_rollout()
    before = {k: v.copy() for k, v in algo.policy.params.items()}
    out = algo.update(progress=1.0)
    assert out["lr"] == 0.0 and out["n_updates"] == 4 and algo.optimizer.t == 4  # Adam did step
    for k, v in before.items():  # p - 0 * m / (sqrt(v) + eps) is p exactly
        np.testing.assert_array_equal(algo.policy.params[k], v, err_msg=k)
    algo.update(progress=0.0)  # control: at lr=1e-2 the same update does move them
    assert any(not np.array_equal(algo.policy.params[k], v) for k, v in before.items())


@needs_gym
def test_scheduled_clip_range_and_entropy_coefficient_reach_the_loss(any_backend, monkeypatch):
    """The logged clip_eps / ent_coef are the scheduled ones (test_trainer); here the minibatch step
    is shown to receive them, and on numpy the loss functions too (a trainer that passed the
    config's constants instead would log the schedule and still learn CartPole)."""
    from minippo import losses
    from minippo.optim import Schedule

    cfg = PPOConfig(env_id="CartPole-v1", n_envs=2, n_steps=16, batch_size=16, n_epochs=2, hidden=(8,),
                    clip_eps=0.3, clip_schedule="linear", ent_coef=0.05, ent_schedule="linear", ent_end=0.01)
    algo = PPO(cfg)
    seen = []
    make_step = algo._minibatch_step

    def spying_step():
        step = make_step()
        inner = step.loss_and_grads

        def loss_and_grads(mb, clip_eps, ent_coef):
            seen.append(("step", clip_eps, ent_coef))
            return inner(mb, clip_eps, ent_coef)
        step.loss_and_grads = loss_and_grads
        return step
    monkeypatch.setattr(algo, "_minibatch_step", spying_step)
    if any_backend == "numpy":
        clip, bonus = losses.clip_objective, losses.entropy_bonus
        monkeypatch.setattr(losses, "clip_objective", lambda *a: seen.append(("clip", a[3])) or clip(*a))
        monkeypatch.setattr(losses, "entropy_bonus", lambda h, c: seen.append(("ent", c)) or bonus(h, c))
    algo.collect_rollout()
    p = 0.75
    want_clip, want_ent = Schedule("linear", 0.3, 0.0)(p), Schedule("linear", 0.05, 0.01)(p)
    assert want_clip != cfg.clip_eps and want_ent != cfg.ent_coef
    out = algo.update(progress=p)
    assert out["n_updates"] == 4
    assert [x for x in seen if x[0] == "step"] == [("step", want_clip, want_ent)] * 4
    if any_backend == "numpy":
        assert [x for x in seen if x[0] == "clip"] == [("clip", want_clip)] * 4
        assert [x for x in seen if x[0] == "ent"] == [("ent", want_ent)] * 4


@needs_gym
@pytest.mark.parametrize("max_grad_norm", [1e-3, 0.0])
def test_max_grad_norm_clips_what_adam_gets(any_backend, max_grad_norm):
    """One minibatch, one Adam step from zero moments: m = (1 - b1) g, so |m| / (1 - b1) is the norm of
    the gradient Adam got. Clipped, it is max_grad_norm (the raw norm, logged, is far above); with
    max_grad_norm = 0 nothing is clipped and the norm is logged as NaN."""
    algo = PPO(PPOConfig(env_id="CartPole-v1", n_envs=2, n_steps=16, batch_size=32, n_epochs=1, hidden=(8,),
                         max_grad_norm=max_grad_norm, dtype="float64"))
    algo.collect_rollout()
    out = algo.update(progress=0.0)
    assert out["n_updates"] == 1 and algo.optimizer.t == 1
    b1 = algo.optimizer.betas[0]
    got = float(np.linalg.norm(algo.optimizer._m)) / (1.0 - b1)
    if max_grad_norm:
        assert out["grad_norm"] > 100 * max_grad_norm  # the clip is active
        # clip_grad_norm scales by max_norm / (norm + 1e-12): max_norm to 1e-12 / norm < 1e-11 relative
        # (norm > 0.1, asserted above), plus a few roundings (measured 2.7e-13; abs=0: approx's default
        # abs 1e-12 would allow 1e-9 of 1e-3)
        assert got == pytest.approx(max_grad_norm, rel=1e-10, abs=0)
    else:
        assert math.isnan(out["grad_norm"]) and got > 0.1


@needs_gym
@pytest.mark.parametrize("objective, lam", [("clip", 0.5), ("a2c", 0.0), ("reinforce", 1.0)])
def test_the_rollout_uses_the_configured_lambda_and_estimator(objective, lam):
    """gae_lambda = 0.5 for every objective: clip's GAE uses it, a2c's TD(0) is lambda 0 and
    reinforce's Monte Carlo return lambda 1 whatever gae_lambda says. Checked against the plain-loop
    GAE on the buffer's own rewards, values and dones (a constant critic V = c, so V(s_T) = c)."""
    from minippo.kernels import reference as kref

    register()
    gamma, c = 0.9, 2.0
    algo = PPO(PPOConfig(env_id=COUNTER_ID, n_envs=1, n_steps=8, batch_size=8, n_epochs=1, gamma=gamma, gae_lambda=0.5,
                         objective=objective, dtype="float64", hidden=(4,)))
    for k in algo.policy.critic.params:
        algo.policy.critic.params[k][...] = 0.0
    algo.policy.critic.params["b1"][...] = c
    algo.collect_rollout()
    buf = algo.buffer
    adv, ret = kref.gae(buf.rewards, buf.values, buf.dones, np.full(1, c), gamma, lam)
    np.testing.assert_allclose(buf.advantages, adv, rtol=0, atol=1e-14)
    np.testing.assert_allclose(buf.returns, ret, rtol=0, atol=1e-14)
    other = kref.gae(buf.rewards, buf.values, buf.dones, np.full(1, c), gamma, 0.5 if lam != 0.5 else 1.0)[0]
    assert not np.allclose(other, adv)  # the three lambdas give different advantages on this rollout


@needs_gym
def test_the_adapted_kl_coefficient_is_the_one_the_loss_uses(any_backend, monkeypatch, tmp_path):
    """kl_penalty: the loss takes beta from the adaptive rule's current value (not config.kl_beta),
    also after a checkpoint round trip. numpy: the beta of each minibatch's loss (two a update); numba:
    the beta the update's fused step is built with (one a update; the fused loss's use of it is
    tests/test_kernels_update.py's)."""
    from minippo import losses

    algo = PPO(PPOConfig(env_id="CartPole-v1", objective="kl_penalty", n_envs=2, n_steps=16, batch_size=16,
                         n_epochs=1, hidden=(8,), kl_beta=1.0))
    betas = []
    orig = losses.kl_penalty_objective
    monkeypatch.setattr(losses, "kl_penalty_objective", lambda *a: betas.append(a[4]) or orig(*a))
    if any_backend == "numba":
        from minippo.kernels import cpu_update

        make = cpu_update.make

        def recording_make(*args, beta=None, **kwargs):
            step = make(*args, beta=beta, **kwargs)
            assert step is not None  # the fused step runs this setup: no numpy loss to record
            betas.append(beta)
            return step

        monkeypatch.setattr(cpu_update, "make", recording_make)
    per_update = 2 if any_backend == "numpy" else 1
    algo.collect_rollout()
    algo.kl_coef.beta = 7.0
    out = algo.update(progress=0.0)
    assert betas == [7.0] * per_update and out["beta"] in (3.5, 7.0, 14.0)  # adapted after the update
    algo.save(str(tmp_path / "m.npz"))
    loaded = PPO.load(str(tmp_path / "m.npz"))
    betas.clear()
    loaded.collect_rollout()
    loaded.update(progress=0.5)
    assert betas == [out["beta"]] * per_update


# ---------------------------------------------------------------- explained variance (P19)
def test_explained_variance_exact_values():
    """explained_variance = 1 - Var[y - y_pred] / Var[y]: 1 perfect, 0 for the mean, hand-computed else."""
    y = np.array([1.0, 2.0, 3.0, 4.0])  # mean 2.5, Var = (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25
    assert explained_variance(y, y) == 1.0
    assert explained_variance(y + 3.0, y) == 1.0  # a constant offset is not penalised (variance only)
    assert explained_variance(np.full(4, 2.5), y) == 0.0  # predicting the mean: no better than a constant
    # y - p = [0, 0, 0, -1]: mean -0.25, Var = (3 * 0.0625 + 0.5625) / 4 = 0.1875; 1 - 0.1875 / 1.25
    # (the variances of these dyadic values are exact; 0.1875 / 1.25 and 1 - it round once each: 2 ulp)
    assert explained_variance(np.array([1.0, 2.0, 3.0, 5.0]), y) == pytest.approx(0.85, abs=1e-15)
    # p = 2y: y - p = -y has Var 1.25 too: 1 - 1.25 / 1.25 = 0
    assert explained_variance(2 * y, y) == 0.0
    assert math.isnan(explained_variance(y, np.full(4, 7.0)))  # constant target: undefined
    # float32 returns of ~1e20 (a huge reward, clipped gradients): their squares overflowed float32, with a
    # RuntimeWarning and an EV of NaN; the variances are taken in float64 (session 68)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # exact: float32(2e20 y) is 2 float32(1e20 y), so y - p = -y exactly and np.var(-y) is np.var(y)
        assert explained_variance((2e20 * y).astype(np.float32), (1e20 * y).astype(np.float32)) == 0.0
        assert explained_variance((1e20 * y).astype(np.float32), (1e20 * y).astype(np.float32)) == 1.0


# ---------------------------------------------------------------- target_kl threshold (P20)
@needs_gym
@pytest.mark.parametrize(("kl_over_target", "n_updates"), [(1.2, 1), (1.0, 8)])
def test_target_kl_stops_at_the_first_minibatch_above_it(numpy_backend, monkeypatch, kl_over_target, n_updates):
    """Epochs stop, before stepping, at the first minibatch whose approx_kl > target_kl (strictly, no 1.5x)."""
    target = 0.01
    calls = []
    orig = NumpyStep.loss_and_grads

    def fake_kl(self, batch, clip_eps, ent_coef):
        stats = orig(self, batch, clip_eps, ent_coef)
        calls.append(1)
        stats["approx_kl"] = 0.0 if len(calls) == 1 else kl_over_target * target
        return stats

    monkeypatch.setattr(NumpyStep, "loss_and_grads", fake_kl)
    # 32 transitions in minibatches of 8, 2 epochs: 8 minibatches if nothing stops
    algo = PPO(PPOConfig(env_id="CartPole-v1", n_envs=2, n_steps=16, batch_size=8, n_epochs=2, hidden=(8,),
                         target_kl=target))
    algo.collect_rollout()
    out = algo.update(0.0)
    assert out["n_updates"] == n_updates and algo.optimizer.t == n_updates
    assert out["stopped_early"] == float(n_updates < 8)
    # the KL that stopped them, which approx_kl (the mean over the steps made) leaves out
    # (the trainer's running sum of 0, x, x, ... rounds <= 6 times: < 4e-15 relative; 0 exactly for one update)
    assert out["approx_kl"] == pytest.approx(kl_over_target * target * (n_updates - 1) / n_updates, rel=1e-13, abs=0)
    assert out["stop_kl"] == kl_over_target * target if n_updates < 8 else np.isnan(out["stop_kl"])
    assert len(calls) == min(n_updates + 1, 8)  # nothing is evaluated after the stop


# ---------------------------------------------------------------- minibatches (B1, B2, B6)
def _id_buffer(T, N, masked):
    """A full buffer whose every field holds each transition's flat index t * N + i (float64)."""
    buf = RolloutBuffer(T, N, 3, (), 2, np.float64)
    for t in range(T):
        ids = t * N + np.arange(N)
        f = ids.astype(np.float64)
        valid = np.array([not (masked and i == 0 and t % 4 == 3) for i in range(N)])  # env 0: every 4th step
        buf.add(np.repeat(f[:, None], 3, axis=1), ids, f, f, np.repeat(f[:, None], 2, axis=1), f, f * 0, valid)
    buf.advantages[...] = np.arange(T * N).reshape(T, N)
    buf.returns[...] = np.arange(T * N).reshape(T, N)
    return buf


@pytest.mark.parametrize("masked", [False, True])
def test_minibatches_are_permute_then_slice_over_valid_transitions(masked):
    """Each valid transition once per epoch, masked ones never, in rng.permutation's order, fields aligned."""
    T, N, batch_size = 8, 2, 4
    buf = _id_buffer(T, N, masked)
    valid = [not (masked and i % N == 0 and (i // N) % 4 == 3) for i in range(T * N)]
    assert sum(valid) == (14 if masked else 16)
    for seed in range(10):
        parts = list(buf.minibatches(batch_size, np.random.default_rng(seed)))
        assert len(parts) == T * N // batch_size and all(0 < len(p["returns"]) <= batch_size for p in parts)
        for p in parts:  # every field of a row belongs to the same transition
            for key in ("obs", "dist_old"):
                for col in range(p[key].shape[1]):
                    np.testing.assert_array_equal(p[key][:, col], p["returns"], err_msg=key)
            for key in ("actions", "logp_old", "values_old", "advantages"):
                np.testing.assert_array_equal(p[key], p["returns"], err_msg=key)
        got = [int(x) for p in parts for x in p["returns"]]
        perm = np.random.default_rng(seed).permutation(T * N).tolist()
        want = [i for i in perm if valid[i]]  # the permutation, masked steps dropped
        assert got == want, seed
        if not masked:  # then exactly consecutive slices of the permutation
            assert [[int(x) for x in p["returns"]] for p in parts] == [
                perm[k:k + batch_size] for k in range(0, T * N, batch_size)]


@needs_gym
def test_minibatches_are_reshuffled_every_epoch(numpy_backend, monkeypatch):
    """Every epoch (and every update) draws a new partition of the rollout into minibatches."""
    seen = []
    orig = NumpyStep.loss_and_grads

    def record(self, batch, clip_eps, ent_coef):
        seen.append(frozenset(np.asarray(batch["values_old"]).tolist()))
        return orig(self, batch, clip_eps, ent_coef)

    monkeypatch.setattr(NumpyStep, "loss_and_grads", record)
    algo = PPO(PPOConfig(env_id="CartPole-v1", n_envs=2, n_steps=16, batch_size=8, n_epochs=3, hidden=(8,),
                         clip_vloss=False))
    algo.collect_rollout()
    # values_old enters no loss term without clip_vloss: use it to carry each transition's id
    algo.buffer.values[...] = np.arange(32).reshape(16, 2)
    algo.update(0.0)
    algo.update(0.0)
    assert len(seen) == 2 * 3 * 4
    epochs = [frozenset(seen[k:k + 4]) for k in range(0, len(seen), 4)]
    for part in epochs:  # each epoch partitions all 32 transitions
        assert sorted(x for mb in part for x in mb) == list(range(32))
    # the chance that two uniform shuffles give the same partition into 4 blocks of 8 is ~1e-16
    assert len(set(epochs)) == len(epochs)


# ---------------------------------------------------------------- obs normaliser (P23)
@needs_gym
@needs_gym
@pytest.mark.parametrize("autoreset, acted", [("same_step", 16), ("next_step", 12)])
def test_final_obs_for_bootstrap_does_not_update_obs_normaliser(autoreset, acted):
    """Only the observations acted on update the obs statistics, not the final obs of truncated
    episodes. In NEXT_STEP mode the final obs is an env's observation at its reset step (steps 3
    and 7 here, masked): it used to be fed to the statistics there (count 16, not 12)."""
    register()  # Counter, truncated every 3 steps
    algo = PPO(PPOConfig(env_id=COUNTER_ID, n_envs=2, n_steps=8, batch_size=8, norm_obs=True, hidden=(4,),
                         autoreset=autoreset))
    algo.collect_rollout()
    assert algo.buffer.dones.sum() == 4  # the bootstrap path ran (2 truncations in each env)
    assert algo.buffer.valid.sum() == acted
    # the steps acted on, plus RunningMeanStd's prior count of 1e-4; a sum of <= 9 floats below 17
    # rounds each time by <= 1.8e-15: <= 1.6e-14 (measured: exact)
    assert algo.obs_norm.rms.count == pytest.approx(acted + 1e-4, abs=1e-13)


# ---------------------------------------------------------------- running statistics (E1, E2, E3, E5)
def test_running_mean_std_over_chunks_equals_whole_data():
    """RunningMeanStd fed in uneven chunks gives the pooled mean/var of all data (and its 1e-4 prior)."""
    rng = np.random.default_rng(0)
    # a drifting mean, so that the chunks' means differ and the between-chunk term matters
    x = rng.normal(0.0, 1.0, size=(1000, 3)) * [1.0, 5.0, 0.1] + np.linspace(0, 20, 1000)[:, None]
    rms = RunningMeanStd((3,))
    for chunk in np.split(x, [1, 1, 200, 201, 650]):  # sizes 1, 0, 199, 1, 449, 350
        rms.update(chunk)
    # the prior: 1e-4 pseudo-samples with mean 0 and variance 1, pooled with the data (two-pass)
    prior = 1e-4
    total = x.shape[0] + prior
    mean = x.sum(axis=0) / total
    var = (prior * (1.0 + mean**2) + ((x - mean) ** 2).sum(axis=0)) / total
    assert rms.count == pytest.approx(total, rel=1e-15)
    # float64 both ways, 6 pooling steps of a stable update: agreement to ~1e-14 relative
    np.testing.assert_allclose(rms.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(rms.var, var, rtol=1e-12)


def test_the_prior_inflates_the_variance_of_a_feature_far_from_zero_as_documented():
    """RunningMeanStd's docstring: mean 1e6, std 0.01, 2,400 samples -> std ~204, i.e.
    sqrt(epsilon * m**2 / count) (the prior's mean 0 against the data's m), not the data's 0.01."""
    rms = RunningMeanStd((1,))
    rng = np.random.default_rng(0)
    for _ in range(300):
        rms.update(1e6 + 0.01 * rng.standard_normal((8, 1)))
    # the closed form drops terms of relative size p / n ~ 4e-8 (the pooled mean is m n / (n + p), not m)
    # and below: the std is 2e-8 off it (measured 2.0e-8); float64 rounding is ~1e-13
    assert np.sqrt(rms.var[0]) == pytest.approx(np.sqrt(1e-4 * 1e12 / rms.count), rel=1e-7)
    assert round(float(np.sqrt(rms.var[0]))) == 204


@pytest.mark.parametrize("clip", [10.0, 1.5])
def test_obs_normaliser_matches_the_pooled_statistics(clip):
    """ObsNormalizer against the closed form (the trainer's later check compared it with a second copy
    of its own formula): (obs - mean) / sqrt(var + 1e-8) of the pooled data and the 1e-4 prior,
    clipped to +-clip, in the input's float dtype; update=False leaves the statistics as they are."""
    from minippo.envs import ObsNormalizer

    rng = np.random.default_rng(4)
    x = rng.normal(3.0, 2.0, size=(40, 2)) * [1.0, 1e-3]  # the second column: var ~4e-6, where eps counts
    norm = ObsNormalizer(2, clip=clip)
    for chunk in np.split(x, [5, 6, 30]):
        norm(chunk, update=True)
    prior, total = 1e-4, x.shape[0] + 1e-4
    mean = x.sum(axis=0) / total
    var = (prior * (1.0 + mean**2) + ((x - mean) ** 2).sum(axis=0)) / total
    probe = np.array([[3.0, 0.003], [40.0, -1.0], [-40.0, 1.0]])
    want = np.clip((probe - mean) / np.sqrt(var + 1e-8), -clip, clip)
    np.testing.assert_allclose(norm(probe), want, rtol=1e-12)  # (float64 both ways: module docstring)
    assert np.abs(want).max() == clip  # the clip was reached
    got32 = norm(probe.astype(np.float32))
    assert got32.dtype == np.float32 and norm.rms.count == pytest.approx(total, rel=1e-15)
    np.testing.assert_allclose(got32, want, rtol=1e-6)
    for dt, rtol in ((">f4", 1e-6), (">f8", 1e-12)):  # big-endian in (read from a file, say): native out
        got = norm(probe.astype(dt))
        assert got.dtype.isnative and got.dtype == np.dtype(dt[1:]), got.dtype
        np.testing.assert_allclose(got, want, rtol=rtol)
    assert norm(probe.astype(">i4")).dtype == np.float32 and norm(probe.astype(">i4")).dtype.isnative


def _reward_scaler_reference(rewards, dones, valid, gamma, clip=10.0, eps=1e-8, prior=1e-4):
    """Plain loops: G_i <- gamma G_i + r_i (valid steps), reset after a done; r / sqrt(Var[all G] + eps)
    (not centred), clipped to +-clip; Var pools the history with RunningMeanStd's prior (1e-4
    pseudo-samples, mean 0, variance 1). Returns the scaled rewards (T, N) and the final G (N,)."""
    T, N = len(rewards), len(rewards[0])
    g, hist, out = [0.0] * N, [], []
    for t in range(T):
        for i in range(N):
            if valid[t][i]:
                g[i] = gamma * g[i] + rewards[t][i]
                hist.append(g[i])
        n = len(hist) + prior
        m = math.fsum(hist) / n
        var = (prior * (1.0 + m * m) + math.fsum((h - m) ** 2 for h in hist)) / n
        out.append([min(max(rewards[t][i] / math.sqrt(var + eps), -clip), clip) for i in range(N)])
        for i in range(N):
            if valid[t][i] and dones[t][i]:
                g[i] = 0.0
    return out, g


@pytest.mark.filterwarnings("error::RuntimeWarning")  # numpy's overflow warnings came before the error
def test_statistics_that_would_overflow_raise_and_change_nothing():
    """RunningMeanStd took finite observations past ~1e154 and stored an infinite variance (the check
    was on the input alone): a float64 run with norm_obs went on with every normalised observation 0,
    then saved a model that could not be loaded. RewardScaler kept a NaN (or overflowed) running
    return before its statistics refused it, so every later call raised, good rewards included."""
    rms = RunningMeanStd((2,))
    rms.update(np.array([[1.0, 2.0], [3.0, 4.0]]))
    before = (rms.mean.copy(), rms.var.copy(), rms.count)
    for x in ([[1e200, -1e200], [-1e200, 1e200]], [[1e308, 1.0], [1e308, 1.0]]):  # var, then mean overflow
        with pytest.raises(FloatingPointError, match="running statistics overflow float64"):
            rms.update(np.array(x))
        np.testing.assert_array_equal(rms.mean, before[0])
        np.testing.assert_array_equal(rms.var, before[1])
        assert rms.count == before[2]
    scaler = RewardScaler(3, 0.99)
    scaler(np.ones(3), np.zeros(3, bool))
    for rewards, why in (([1.0, np.nan, 1.0], "x contains NaN or inf"),  # the return's statistics
                         ([1e308, 1e308, 1.0], "running statistics overflow float64")):  # (their mean)
        ret, count = scaler.ret.copy(), scaler.rms.count
        with pytest.raises(FloatingPointError, match=why):
            scaler(np.array(rewards), np.zeros(3, bool))
        np.testing.assert_array_equal(scaler.ret, ret)
        assert scaler.rms.count == count
    assert np.isfinite(scaler(np.ones(3), np.zeros(3, bool))).all()  # good rewards go on


@pytest.mark.filterwarnings("error::RuntimeWarning")  # (numpy's overflow warnings came before the error)
def test_a_run_refuses_observations_or_rewards_its_normalisers_cannot_take():
    """Observations ~1e200 are finite float64, and a float64 trainer took them into norm_obs's statistics
    (inf); rewards of 1e308 overflowed norm_reward's statistics with a message about "x". The trainer now
    stops, naming the env, before the statistics change."""
    gym = pytest.importorskip("gymnasium")
    from minippo.ppo import NonFiniteEnvError

    class Huge(gym.Env):
        observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
        action_space = gym.spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return np.array([1e200, -1e200]), {}

        def step(self, action):
            return np.array([-1e200, 1e200]) * (1 if action else -1), 1.0, False, False, {}

    venv = gym.vector.SyncVectorEnv([Huge, Huge], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    algo = PPO(PPOConfig(env_id="CartPole-v1", n_envs=2, n_steps=8, batch_size=16, hidden=(8,), dtype="float64",
                         norm_obs=True), env=venv)
    with pytest.raises(NonFiniteEnvError, match=r"^env 'SyncVectorEnv' returned observations at step 0 whose "
                                                   r"running statistics \(norm_obs\) would overflow float64"):
        algo.collect_rollout()
    assert np.isfinite(algo.obs_norm.rms.var).all()
    venv.close()

    class HugeReward(gym.Env):  # (rewards are float64 whatever the policy's dtype)
        observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        action_space = gym.spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return np.zeros(2, np.float32), {}

        def step(self, action):
            return np.zeros(2, np.float32), 1e308, False, False, {}

    venv = gym.vector.SyncVectorEnv([HugeReward, HugeReward], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    algo = PPO(PPOConfig(env_id="CartPole-v1", n_envs=2, n_steps=8, batch_size=16, hidden=(8,), norm_reward=True),
               env=venv)
    with pytest.raises(NonFiniteEnvError, match=r"^env 'SyncVectorEnv' returned rewards at step 0 whose running "
                                                   r"discounted return \(norm_reward\) overflows float64"):
        algo.collect_rollout()
    assert np.isfinite(algo.reward_scaler.rms.var) and not algo.reward_scaler.ret.any()
    venv.close()


@pytest.mark.parametrize("with_mask", [False, True])
def test_reward_scaler_matches_plain_loop(with_mask):
    """RewardScaler divides by the running std of the discounted return (reset at done, not centred, clipped)."""
    rng = np.random.default_rng(0)
    T, N, gamma = 200, 3, 0.9
    r = rng.normal(1.0, 1.0, (T, N))
    r[150, 1], r[190, 2] = -1000.0, 1000.0  # single huge rewards: the clip at -10 and +10
    d = rng.random((T, N)) < 0.1
    v = np.ones((T, N), dtype=bool)
    if with_mask:  # next_step autoreset: the step after an episode's end is a masked reset step
        v[1:] = ~d[:-1]
        d &= v
    sc = RewardScaler(N, gamma)
    got = [sc(r[t], d[t], v[t] if with_mask else None) for t in range(T)]
    want, g = _reward_scaler_reference(r.tolist(), d.tolist(), v.tolist(), gamma)
    assert want[150][1] == -10.0 and want[190][2] == 10.0  # the clip is exercised both ways
    assert sum(x == 0 for x in d.sum(axis=0)) == 0  # every env has episode ends
    # float64 both ways; Chan's update over 200 batches vs a two-pass sum: <= ~1e-13 relative (measured 1e-15)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    # G itself, not only its spread: the scale cannot tell G from -G, but a checkpoint carries G into a
    # resumed run. The same float64 operations in the same order: equal.
    np.testing.assert_array_equal(sc.ret, g)


# ---------------------------------------------------------------- orthogonal init (N4)
@pytest.mark.parametrize("shape", [(4, 3), (3, 4)])
def test_orthogonal_init_is_sign_symmetric(shape):
    """orthogonal() is Haar-distributed: each entry is as likely positive as negative (QR sign fix)."""
    rng = np.random.default_rng(0)
    qs = np.array([orthogonal(shape, 1.0, rng, np.float64) for _ in range(2000)])
    frac_pos = (qs > 0).mean(axis=0)
    # under Haar each entry is symmetric: frac ~ Binomial(2000, 1/2) / 2000, sd 0.011; +-0.1 is 9 sd.
    # Without the fix LAPACK's Householder QR gives Q[0, 0] < 0 always (frac 0).
    np.testing.assert_array_less(np.abs(frac_pos - 0.5), 0.1)
    # E[Q] = 0: each entry has variance 1/4 (a unit column of length 4), mean's sd 0.011; 0.1 is 9 sd
    np.testing.assert_array_less(np.abs(qs.mean(axis=0)), 0.1)


# ---------------------------------------------------------------- found by mutation review (session 20)
@needs_gym
def test_beta_adapts_to_the_rollout_kl_not_the_minibatch_approx_kl(numpy_backend, monkeypatch):
    algo = PPO(PPOConfig(env_id="CartPole-v1", objective="kl_penalty", n_envs=2, n_steps=16, batch_size=16,
                         n_epochs=1, hidden=(8,), kl_target=0.01, kl_beta=1.0))
    for kl, beta in ((1.0, 2.0), (0.0, 1.0)):  # far above target * 1.5: doubles; below target / 1.5: halves
        monkeypatch.setattr(algo, "_rollout_kl", lambda kl=kl: kl)
        algo.collect_rollout()
        out = algo.update(progress=0.0)
        assert out["kl"] == kl and out["beta"] == beta == algo.kl_coef.beta


@needs_gym
def test_a_resumed_run_takes_the_new_budget_and_reseeds_its_envs_past_the_saved_steps(numpy_backend, tmp_path):
    algo = PPO(PPOConfig(env_id="CartPole-v1", n_envs=2, n_steps=16, batch_size=16, n_epochs=1, hidden=(8,),
                         total_timesteps=64, seed=3))
    algo.learn()
    path = str(tmp_path / "m.npz")
    algo.save(path)
    loaded = PPO.load(path, total_timesteps=128)
    assert loaded.total_timesteps == 128 and PPO.load(path).total_timesteps == 64
    seeds = []
    real_reset = loaded.env.reset
    loaded.env.reset = lambda seed=None, **kw: seeds.append(seed) or real_reset(seed=seed, **kw)
    loaded.learn()
    assert loaded.num_timesteps == 128
    assert seeds == [3 + 64]  # not the first run's seed 3: those episodes were played already
    # a budget at or below the steps run trained nothing and was saved over the file's (learn() refuses it)
    from minippo.ppo import TotalReached

    for total in (64, 32):
        with pytest.raises(TotalReached, match=f"^total_timesteps={total}: the model has already run 64 steps; "
                                               "a resumed run trains up to total_timesteps steps in all: pass a "
                                               "total above 64$") as e:
            PPO.load(path, total_timesteps=total)
        assert (e.value.total, e.value.done) == (total, 64) and isinstance(e.value, ValueError)


def test_training_reset_seeds_keep_off_the_evaluation_seeds():
    """A run resumed near step 100,000 reset its envs with seed + steps + i, the very seeds of
    evaluation episodes 0, 1, ... (seed + 100000 + i): training started from the start states it is
    scored on. Training's reset seeds now never meet evaluation's first 100,000 episodes, and two
    different step counts never share a seed window's start."""
    from minippo.config import EVAL_SEED_OFFSET, train_reset_seed

    for n in (1, 8, 64):
        starts = set()
        for steps in [*range(0, 3 * EVAL_SEED_OFFSET, 997), *range(EVAL_SEED_OFFSET - 70, EVAL_SEED_OFFSET + 70)]:
            base = train_reset_seed(7, steps, n) - 7
            window = range(base, base + n)
            assert not set(window) & set(range(EVAL_SEED_OFFSET, 2 * EVAL_SEED_OFFSET)), (steps, n)
            assert base not in starts
            starts.add(base)
        assert train_reset_seed(7, 0, n) == 7 and train_reset_seed(7, 640, n) == 7 + 640  # as before
        last = EVAL_SEED_OFFSET - n  # the last window wholly below the evaluation seeds: kept
        assert train_reset_seed(7, last, n) == 7 + last
        assert train_reset_seed(7, last + 1, n) == 7 + last + 1 + 2 * EVAL_SEED_OFFSET


@needs_gym
def test_a_run_resumed_past_the_evaluation_seeds_resets_apart_from_them(numpy_backend):
    algo = PPO(PPOConfig(env_id="CartPole-v1", n_envs=8, n_steps=16, batch_size=64, n_epochs=1, hidden=(8,),
                         seed=3))
    seeds = []
    real_reset = algo.env.reset
    algo.env.reset = lambda seed=None, **kw: seeds.append(seed) or real_reset(seed=seed, **kw)
    algo.num_timesteps = 100_000 - 4  # as a loaded checkpoint sets it: env 4 would reset at 3 + 100000
    algo.collect_rollout()
    assert seeds == [3 + 100_000 - 4 + 200_000]


@needs_gym
def test_a_kl_beta_given_on_resume_restarts_beta_there(numpy_backend, tmp_path):
    """An explicit kl_beta was put in the config and then overwritten by the saved beta; without one
    the adapted beta resumes."""
    cfg = PPOConfig(env_id="CartPole-v1", n_envs=2, n_steps=16, batch_size=16, n_epochs=1, hidden=(8,),
                    total_timesteps=64, objective="kl_penalty", kl_target=1e-9)  # beta doubles each iteration
    algo = PPO(cfg)
    algo.learn()
    path = str(tmp_path / "m.npz")
    algo.save(path)
    assert algo.kl_coef.beta == 4.0 and PPO.load(path).kl_coef.beta == 4.0  # two iterations
    resumed = PPO.load(path, kl_beta=0.05, total_timesteps=96)
    assert resumed.config.kl_beta == 0.05 and resumed.kl_coef.beta == 0.05
    rows = []
    resumed.learn(callback=rows.append)
    assert rows[0]["beta"] == 0.1  # 0.05, doubled after the update


@needs_gym
def test_evaluation_seeds_each_episode_apart_from_training(numpy_backend):
    """Episode k is reset with seed + k (distinct starts), and PPO.evaluate's default seed is
    config.seed + 100000, disjoint from the seeds training resets with."""
    from minippo.checkpoint import evaluate_policy

    class Recorder(gym.Wrapper):
        def __init__(self, env):
            super().__init__(env)
            self.seeds = []

        def reset(self, *, seed=None, options=None):
            self.seeds.append(seed)
            return self.env.reset(seed=seed, options=options)

    algo = PPO(PPOConfig(env_id="CartPole-v1", n_envs=2, n_steps=16, batch_size=16, hidden=(8,), seed=4))
    rec = Recorder(gym.make("CartPole-v1"))
    evaluate_policy(algo.policy, None, 3, env=rec, seed=5)
    assert rec.seeds == [5, 6, 7]
    rec.seeds.clear()
    algo.evaluate(3, env=rec)
    assert rec.seeds == [100_004, 100_005, 100_006]


@needs_gym
def test_a_saved_policy_predicts_env_actions_of_a_discrete_space_with_a_start(numpy_backend, tmp_path):
    from envs_for_tests import Probe, register_probe

    from minippo.checkpoint import load_policy

    register_probe("minippo-test/ProbeStart-v0", 8, action_space=gym.spaces.Discrete(3, start=-1))
    algo = PPO(PPOConfig(env_id="minippo-test/ProbeStart-v0", n_envs=2, n_steps=16, batch_size=16, n_epochs=1,
                         hidden=(8,), total_timesteps=32))
    Probe.log.clear()
    algo.learn()
    algo.evaluate(1)
    # every action sent, in training and in evaluation, was in {-1, 0, 1}: the index plus start
    assert len(Probe.log) == 32 + 8 and all(Probe.log)
    path = str(tmp_path / "m.npz")
    algo.save(path)
    obs = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
    index = algo.policy.act(obs, None, deterministic=True)[0]  # the policy's own 0 .. n-1
    np.testing.assert_array_equal(load_policy(path).predict(obs), index - 1)


@needs_gym
@pytest.mark.parametrize("normalize", [True, False])
def test_minibatches_of_two_lose_no_valid_sample(numpy_backend, monkeypatch, normalize):
    """batch_size 2 with masked reset steps (next_step mode) and an odd number of valid ones: every
    valid sample reaches the loss once per epoch (none left in a skipped single-sample minibatch).
    With per-minibatch advantage normalisation a minibatch needs 2 samples, so the 5 valid ones make
    two minibatches, 2 + 3; without it one sample is a minibatch too: 2 + 2 + 1, as batch_size asks."""
    register()
    algo = PPO(PPOConfig(env_id=COUNTER_ID, autoreset="next_step", n_envs=1, n_steps=6, batch_size=2,
                         n_epochs=3, hidden=(8,), seed=0, normalize_advantages=normalize))
    rows = []
    real = NumpyStep.loss_and_grads
    monkeypatch.setattr(NumpyStep, "loss_and_grads",
                        lambda self, mb, *a: rows.append(mb["advantages"].shape[0]) or real(self, mb, *a))
    algo.collect_rollout()
    n_valid = int(algo.buffer.valid.sum())
    assert n_valid % 2 == 1  # 3-step episodes: steps 0-2 and 4-5 valid, 3 the masked reset
    out = algo.update(progress=0.0)
    assert sum(rows) == 3 * n_valid and out["n_updates"] == len(rows)
    assert sorted(rows) == sorted([2, 3] * 3 if normalize else [1, 2, 2] * 3)



@needs_gym
@pytest.mark.parametrize("objective, normalize", [("kl_penalty", True), ("clip", False)])
def test_a_rollout_of_masked_reset_steps_only_changes_nothing(any_backend, objective, normalize):
    """next_step autoreset with n_steps = 1: when every env ended its episode on the step before, the
    whole rollout is reset steps, masked out. That used to stop training: the adaptive KL rule got
    0/0 = NaN (FloatingPointError), and without advantage normalisation the one full-batch minibatch
    came out empty ("logp is empty"). Such an iteration makes no update and keeps beta; its kl and
    explained variance are NaN (empty cells in progress.csv), and no warning is raised."""
    import warnings

    register()
    algo = PPO(PPOConfig(env_id=COUNTER_ID, n_envs=2, n_steps=1, batch_size=2, n_epochs=2, hidden=(8,),
                         autoreset="next_step", objective=objective, normalize_advantages=normalize))
    rows, params = [], []

    def record(row):
        rows.append(row)
        params.append({k: v.copy() for k, v in algo.policy.params.items()})

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        algo.learn(16, callback=record)  # Counter truncates at 3 steps: steps 4 and 8 are reset steps
    assert [r["n_updates"] for r in rows] == [2, 2, 2, 0, 2, 2, 2, 0]  # n_epochs = 2
    for i in (3, 7):
        assert "loss" not in rows[i] and math.isnan(rows[i]["explained_variance"])
        for k, v in params[i].items():
            np.testing.assert_array_equal(v, params[i - 1][k])
        if objective == "kl_penalty":
            assert math.isnan(rows[i]["kl"]) and rows[i]["beta"] == rows[i - 1]["beta"]
    assert any(not np.array_equal(v, params[1][k]) for k, v in params[2].items())  # other iterations update



@needs_gym
def test_an_iteration_without_a_step_keeps_beta_however_many_steps_were_valid(numpy_backend):
    """Two CartPole envs, n_steps = 1, next_step autoreset: when one env is on its reset step, the
    rollout holds one valid sample, a minibatch too small to normalise, so no step is made. The
    rollout KL is then 0 by construction (the policy is pi_old), not a measurement: it halved beta."""
    algo = PPO(PPOConfig(env_id="CartPole-v1", n_envs=2, n_steps=1, batch_size=2, n_epochs=2, hidden=(8,),
                         autoreset="next_step", objective="kl_penalty", seed=0))
    rows, betas = [], [algo.kl_coef.beta]
    algo.learn(400, callback=lambda r: rows.append(r) or betas.append(algo.kl_coef.beta))
    idle = [i for i, r in enumerate(rows) if r["n_updates"] == 0]
    assert len(idle) >= 3  # (each episode end of one env; 200 iterations)
    for i in idle:
        assert math.isnan(rows[i]["kl"]) and betas[i + 1] == betas[i] == rows[i]["beta"]
    assert all(math.isfinite(r["kl"]) for r in rows if r["n_updates"])

def test_minibatches_of_a_rollout_without_valid_steps_are_none():
    """Nothing to yield (not one empty minibatch) for one minibatch or several."""
    buf = RolloutBuffer(2, 2, 3, (), 2)
    buf.valid_host[...] = False
    rng = np.random.default_rng(0)
    assert list(buf.minibatches(4, rng)) == [] and list(buf.minibatches(2, rng)) == []

@needs_gym
def test_fps_leaves_out_numba_compile_time_and_time_does_not(monkeypatch):
    """Row "time" is learn()'s wall time; "fps" divides the steps by that time less the seconds numba
    spent compiling kernels meanwhile (a one-off, 45 s for CartPole on a 2-core VM in session 21, 23 s
    now, that held a first run's rate at a few steps/s). Clock and compile seconds are stand-ins: the
    arithmetic is checked."""
    import types

    from minippo import backend
    from minippo import ppo as ppo_module

    algo = PPO(PPOConfig(env_id="CartPole-v1", n_envs=2, n_steps=16, batch_size=16, n_epochs=1, hidden=(8,),
                         total_timesteps=64))
    clock = iter([100.0, 110.0, 130.0])  # learn() starts; after iteration 1; after iteration 2
    compiled = iter([3.0, 9.0, 9.0])  # numba's compile seconds at the same three moments
    monkeypatch.setattr(ppo_module, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    monkeypatch.setattr(backend, "numba_compile_seconds", lambda this_thread=False: next(compiled))
    rows = []
    algo.learn(callback=rows.append)
    assert [r["time"] for r in rows] == [10.0, 30.0]
    assert [r["fps"] for r in rows] == [32 / (10.0 - 6.0), 64 / (30.0 - 6.0)]
    # a later learn() (a resumed run) adds its time to the 30 s before it; its fps counts its own steps
    # and time only, not the 64 steps before it
    clock, compiled = iter([200.0, 208.0]), iter([9.0, 9.0])
    algo.learn(96, callback=rows.append)
    assert (rows[-1]["timesteps"], rows[-1]["time"], rows[-1]["fps"]) == (96, 38.0, 32 / 8.0)
    assert algo.time_elapsed == 38.0


@needs_gym
def test_an_interrupted_iteration_counts_in_the_training_time(monkeypatch):
    """time_elapsed left out an iteration an exception (a Ctrl-C, an env's error) cut short: a run saved
    after it, and the progress.csv of its resume, had lost those seconds. The clock is a stand-in."""
    import types

    from minippo import ppo as ppo_module

    algo = PPO(PPOConfig(env_id="CartPole-v1", n_envs=2, n_steps=16, batch_size=16, n_epochs=1, hidden=(8,),
                         total_timesteps=64))
    clock = iter([100.0, 110.0, 117.0])  # learn() starts; after iteration 1; as the update of 2 raises
    monkeypatch.setattr(ppo_module, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    update = algo.update

    def interrupted(progress):
        if algo.iteration == 1:
            raise KeyboardInterrupt
        return update(progress)

    monkeypatch.setattr(algo, "update", interrupted)
    rows = []
    with pytest.raises(KeyboardInterrupt):
        algo.learn(callback=rows.append)
    assert [r["time"] for r in rows] == [10.0] and algo.iteration == 1
    assert algo.time_elapsed == 17.0


@needs_gym
def test_time_goes_on_across_a_save_and_resume(tmp_path, monkeypatch):
    """A checkpoint keeps the training time so far (time_elapsed), so that a resumed run's progress.csv
    "time" column goes on from it rather than restarting at 0; the clock is a stand-in."""
    import types

    from minippo import ppo as ppo_module

    cfg = PPOConfig(env_id="CartPole-v1", n_envs=2, n_steps=16, batch_size=16, n_epochs=1, hidden=(8,),
                    total_timesteps=32)
    clock = iter([0.0, 12.5])
    monkeypatch.setattr(ppo_module, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    algo = PPO(cfg).learn()
    assert algo.time_elapsed == 12.5
    algo.save(str(tmp_path / "m.npz"))
    resumed = PPO.load(str(tmp_path / "m.npz"), total_timesteps=64)
    assert resumed.time_elapsed == 12.5
    clock, rows = iter([50.0, 54.0]), []
    resumed.learn(callback=rows.append)
    assert [r["time"] for r in rows] == [16.5] and resumed.time_elapsed == 16.5


@needs_gym
def test_learn_counts_each_iteration_s_steps_and_a_callback_returning_false_stops_it(numpy_backend):
    """Each row's timesteps grow by n_envs * n_steps; a callback returning False ends learn() after
    that iteration's update, however far the total is (any other return value goes on). A step count
    that did not grow would fail here rather than train forever."""
    algo = PPO(PPOConfig(env_id="CartPole-v1", n_envs=2, n_steps=8, batch_size=16, n_epochs=1, hidden=(4,)))
    rows = []
    algo.learn(10_000, callback=lambda row: rows.append(row) or (None if len(rows) < 3 else False))
    assert [(r["iteration"], r["timesteps"]) for r in rows] == [(1, 16), (2, 32), (3, 48)]
    assert (algo.num_timesteps, algo.iteration, algo.optimizer.t) == (48, 3, 3)
    algo.learn(64, callback=lambda row: rows.append(row) or 0)  # 0 is not False: on to the total
    assert [r["timesteps"] for r in rows[3:]] == [64]


@needs_gym
@pytest.mark.parametrize(("objective", "n_epochs", "batch_size"),
                         [("clip", 2, 16), ("kl_penalty", 2, 16), ("clip", 1, 32)])
def test_logged_losses_are_the_mean_over_the_minibatch_updates(numpy_backend, monkeypatch, objective, n_epochs,
                                                                batch_size):
    """update()'s loss, policy_loss, value_loss, entropy, approx_kl, clipfrac and grad_norm are the
    means of what each of its minibatch updates computed (4: 2 epochs of 2 minibatches; or 1)."""
    seen = []
    real_loss, real_step = NumpyStep.loss_and_grads, NumpyStep.step

    def loss(self, mb, *a):
        seen.append(dict(real_loss(self, mb, *a)))
        return seen[-1].copy()

    def step(self, *a):
        seen[-1]["grad_norm"] = real_step(self, *a)
        return seen[-1]["grad_norm"]

    monkeypatch.setattr(NumpyStep, "loss_and_grads", loss)
    monkeypatch.setattr(NumpyStep, "step", step)
    algo = PPO(PPOConfig(env_id="CartPole-v1", n_envs=2, n_steps=16, batch_size=batch_size, n_epochs=n_epochs,
                         hidden=(8,), objective=objective))
    algo.collect_rollout()
    out = algo.update(0.0)
    n = n_epochs * 32 // batch_size
    assert out["n_updates"] == len(seen) == n
    for k in seen[0]:
        if k == "beta" or (k == "kl" and objective == "kl_penalty"):
            continue  # kl_penalty logs the rollout's KL after the update and the beta it gives, not means
        want = sum(s[k] for s in seen) / n
        assert out[k] == pytest.approx(want, rel=1e-12, abs=1e-15), k
    assert len({s["loss"] for s in seen}) == n  # the minibatches differ, so a mean is not any one of them


# ---------------------------------------------------------------- found by the test audit (session 57)
@needs_gym
@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])
def test_every_setting_a_trainer_builds_from_reaches_what_it_builds(numpy_backend, env_id):
    """Each field set away from its default is what the built part holds (a trainer that dropped
    adam_eps, activation or log_std_init still passed every test: each was only ever its default,
    or compared against a path that dropped it alike)."""
    from minippo.policy import ActorCritic

    discrete = env_id == "CartPole-v1"
    cfg = PPOConfig(env_id=env_id, n_envs=3, n_steps=8, batch_size=12, hidden=(7, 5), activation="relu",
                    shared=discrete, log_std_init=1.5, seed=11, dtype="float64",
                    temperature=0.7 if discrete else 1.0, learning_rate=2e-3, adam_eps=1e-3, gamma=0.9,
                    norm_reward=True, norm_obs=True, kl_target=0.02, kl_beta=3.0, lr_schedule="exponential",
                    lr_end=1e-4, clip_eps=0.3, clip_schedule="linear", ent_coef=0.05, ent_schedule="linear",
                    ent_end=0.01, objective="kl_penalty")
    algo = PPO(cfg)
    pol = algo.policy
    assert (list(pol.hidden), pol.activation, pol.shared) == ([7, 5], "relu", discrete)
    assert pol.temperature == cfg.temperature
    assert all(p.dtype == np.float64 for p in pol.params.values())
    if not discrete:
        assert np.all(pol.params["log_std"] == 1.5)
    twin = ActorCritic(algo.obs_dim, algo.action_space, (7, 5), "relu", discrete, 1.5, 11, np.float64,
                       cfg.temperature)  # the seed's initial weights
    assert all(np.array_equal(pol.params[k], twin.params[k]) for k in twin.params)
    opt = algo.optimizer
    assert (opt.lr, opt.eps) == (2e-3, 1e-3)
    assert algo.reward_scaler.gamma == 0.9 and algo.obs_norm is not None
    assert (algo.kl_coef.kl_target, algo.kl_coef.beta) == (0.02, 3.0)
    assert (algo.lr_schedule.kind, algo.lr_schedule.start, algo.lr_schedule.end) == ("exponential", 2e-3, 1e-4)
    assert (algo.clip_schedule.kind, algo.clip_schedule.start) == ("linear", 0.3)
    assert (algo.ent_schedule.kind, algo.ent_schedule.start, algo.ent_schedule.end) == ("linear", 0.05, 0.01)
    assert algo.buffer.obs.shape == (8, 3, algo.obs_dim)


@needs_gym
def test_a_checkpoint_with_numbers_past_floats_range_or_deep_kwargs_is_a_checkpoint_error(numpy_backend, tmp_path):
    """A hand-edited file: log_std_init of 400 digits raised OverflowError (math.isfinite of the int),
    env_kwargs nested 700 deep a RecursionError, both tracebacks; each is named as a CheckpointError."""
    import json

    from minippo.checkpoint import CheckpointError, load_policy

    algo = PPO(PPOConfig(env_id="CartPole-v1", n_envs=2, n_steps=16, batch_size=16, hidden=(8,)))
    path = tmp_path / "m.npz"
    algo.save(str(path))
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("meta")))
    deep = []
    inner = deep
    for _ in range(700):
        inner.append([])
        inner = inner[0]
    for field, value, says in (("log_std_init", 10**400, r"PPOConfig\.log_std_init=1000+\.\.\.0+ \(401 characters"),
                               ("env_kwargs", {"d": deep}, "nested too deeply, or circular")):
        edited = json.loads(json.dumps(meta))
        edited["config"][field] = value
        np.savez(tmp_path / "e.npz", meta=np.array(json.dumps(edited)), **arrays)
        for load in (load_policy, PPO.load):
            with pytest.raises(CheckpointError, match=r"the saved config is invalid: .*" + says):
                load(str(tmp_path / "e.npz"))


# ---------------------------------------------------------------- an env that reuses its observation array
@needs_gym
@pytest.mark.parametrize("autoreset", ["same_step", "next_step"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_rollout_keeps_each_observation_an_env_then_overwrites_in_place(any_backend, autoreset, dtype):
    """gymnasium's SyncVectorEnv(copy=False) returns one observation array and overwrites it at every
    step. The buffer must hold the observation each action was chosen for, not the next step's: a
    trainer that kept the env's array stored s_{t+1} beside a_t whenever the env's dtype was the
    policy's and norm_obs was off (the defaults), and trained on those pairs."""
    from gymnasium.vector import AutoresetMode

    class InPlace(gym.vector.VectorWrapper):  # one array of ``dtype``, overwritten, as copy=False does
        def reset(self, **kwargs):
            obs, info = self.env.reset(**kwargs)
            self.buf = np.empty(obs.shape, dtype)
            self.seen = []
            return self._out(obs), info

        def step(self, actions):
            obs, *rest = self.env.step(actions)
            return self._out(obs), *rest

        def _out(self, obs):
            self.buf[...] = obs
            self.seen.append(self.buf.copy())  # each observation as returned
            return self.buf

    mode = AutoresetMode.SAME_STEP if autoreset == "same_step" else AutoresetMode.NEXT_STEP
    env = InPlace(gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 2, copy=False, autoreset_mode=mode))
    algo = PPO(PPOConfig(env_id="CartPole-v1", n_envs=2, n_steps=40, batch_size=40, autoreset=autoreset,
                         dtype=dtype, seed=3), env=env)
    algo.collect_rollout()  # 40 steps: CartPole's random-policy episodes end on the way (~20 steps)
    assert algo.buffer.dones.any()
    assert np.array_equal(algo.buffer.obs, np.stack(env.seen[:40]))


@needs_gym
@pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="the compile listener is numba's")
def test_fps_leaves_out_its_own_thread_s_compiles_not_another_s(numba_backend):
    """Two trainers in two threads: a compile in the other thread (another net's kernels, ~35 s for
    the first ones) was taken off this trainer's time too, which went negative and was clamped: an fps
    of ~1e13. Simulated through the process's compile listener: a 0.3 s compile in another thread."""
    import threading
    import time

    from minippo import backend

    algo = PPO(PPOConfig(env_id="CartPole-v1", n_envs=2, n_steps=16, batch_size=32, n_epochs=1, hidden=(8,)))
    listener = backend._compiles

    def compile_elsewhere():
        listener.on_start(None)
        time.sleep(0.3)
        listener.on_end(None)

    rows = []

    def callback(row):
        rows.append(row)
        if len(rows) == 1:
            other = threading.Thread(target=compile_elsewhere)
            other.start()
            other.join()

    algo.learn(96, callback=callback)
    assert len(rows) == 3 and all(0 < r["fps"] < 1e7 for r in rows)  # (the bug gave ~1e13)
    assert rows[1]["fps"] < 64 / 0.3  # (fps of the call so far) the other thread's 0.3 s is in this trainer's wall time


@needs_gym
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("norm_obs,shared,autoreset", [(False, False, "same_step"), (True, True, "next_step"),
                                                        (True, False, "same_step")])
def test_the_stored_rollout_is_the_policy_s_own(env_id, norm_obs, shared, autoreset, any_backend):
    """Before any update, the policy evaluated on the stored observations and actions gives back the stored
    logp_old, values_old and distribution: the ratio starts at 1 and the KL at 0 (to float32 rounding). A
    rollout that acted on observations normalised with other statistics than the ones it stored, or
    stored another action than it sampled (a clipped Gaussian action), would start every update from a
    ratio that is not 1 and train on a wrong objective."""
    extra = {"env_kwargs": {"max_episode_steps": 20}} if env_id == "Pendulum-v1" else {}
    algo = PPO(PPOConfig(env_id=env_id, n_envs=4, n_steps=64, batch_size=256, hidden=(16,), norm_obs=norm_obs,
                         shared=shared, autoreset=autoreset, seed=7, **extra))
    for _ in range(2):  # (the second rollout starts from the first's normaliser statistics and envs)
        algo.collect_rollout()
    buf = algo.buffer
    assert buf.valid_host.sum() < buf.valid_host.size if autoreset == "next_step" else buf.valid_host.all()
    mb = next(buf.minibatches(256, algo.rng))
    logp, _, values, _ = algo.policy.evaluate(mb["obs"], mb["actions"])
    dist = algo.policy.dist_params(algo.policy.forward(mb["obs"])[0])
    # To float32 rounding: act ran on 4 rows, evaluate on the valid ones (up to 256), and BLAS (and numba's
    # fused kernel) may sum in another order for another row count (seen: a shared-trunk value 1 ulp apart
    # on numpy, where next_step's masked rows left 244).
    tol = dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logp, mb["logp_old"], **tol)
    np.testing.assert_allclose(values, mb["values_old"], **tol)
    np.testing.assert_allclose(dist, mb["dist_old"], **tol)
    if env_id == "Pendulum-v1":  # the stored actions are the samples, some past the bounds the env got clipped to
        assert np.abs(mb["actions"]).max() > algo.action_space.high.max()
