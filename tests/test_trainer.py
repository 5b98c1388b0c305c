"""The trainer end to end on tiny budgets: determinism, checkpoints and resume, error paths.

Tolerances, and why:
- Almost every check is exact: same seed, same operations (bit-identical runs, checkpoints restored
  as saved), or values exact by construction: a clip returns its bound (|action| == 0.1, |obs| ==
  10), a critic with zero weights outputs its bias exactly (V = 2: the bootstrapped reward is
  float32(1 + float32(0.99) * 2), the float32 nearest 2.98, as the test writes it), an env's float32
  observations are stored as they came.
- Schedules (test_schedules_follow_training_progress): the trainer's progress steps / total and the
  test's steps / 96 - 32 / 96 differ by <= 1 ulp, and the closed forms are evaluated in another order
  (0.2 * (1 - p) against 0.2 + (0 - 0.2) p, 0.1**p against (0.001 / 0.01)**p): a few roundings,
  <= ~1e-15 relative: rel 1e-14, abs 0 (pytest.approx's default abs 1e-12 would be 1e-9 of these
  ~1e-3 values; measured 4.2e-16). The resumed lr at progress 1024/2048 = 0.5 exactly, to lr_end 0, is
  the exact half of fl(1e-3) both ways: ==.
- test_temperature_keeps_the_ratio_exact, numba (and cupy): the fused act's float32 log-probs (|logp|
  <= 0.7 here) against the array path's: another summation order and tanh within 8 ulp; a few
  float32 ulps (6e-8 each): atol 1e-6 (measured 1.2e-7, 2 ulp). On numpy: the same operations, ==.
- Random draws: |action| > 2.0 with log_std_init 1.5 (std 4.5, mean ~0) fails only if all 32 draws
  land in |z| < 0.45: 0.34**32 ~ 1e-15 (and the run is seeded); the 0.1 clip is reached unless all
  128 draws (64 rows x 2) with std e land inside +-0.1, each with probability <= 0.03.
"""

import json
import os
import re
from fractions import Fraction

import numpy as np
import pytest

gym = pytest.importorskip("gymnasium")

from envs_for_tests import Probe, register_probe  # noqa: E402

from minippo import PPO, load_policy  # noqa: E402
from minippo.checkpoint import CheckpointError, atomic_savez, evaluate_policy, read_checkpoint  # noqa: E402
from minippo.config import PPOConfig, preset  # noqa: E402

TINY = dict(n_envs=2, n_steps=16, batch_size=16, n_epochs=2, total_timesteps=96, hidden=(8,))


def _rows(cfg):
    rows = []
    PPO(cfg).learn(callback=rows.append)
    return [{k: v for k, v in r.items() if k not in ("time", "fps")} for r in rows]


@pytest.mark.parametrize(
    "overrides",
    [
        dict(env_id="CartPole-v1"),
        dict(env_id="CartPole-v1", autoreset="next_step", objective="kl_penalty", shared=True),
        dict(env_id="Pendulum-v1", norm_obs=True, norm_reward=True, clip_vloss=True, ent_coef=0.01,
             ent_schedule="linear", lr_schedule="linear"),
    ],
)
def test_same_seed_is_bit_identical(overrides):
    cfg = PPOConfig(**TINY, **overrides)
    a, b = _rows(cfg), _rows(cfg)
    assert len(a) == 3
    assert json.dumps(a) == json.dumps(b)
    c = _rows(cfg.replace(seed=1))
    assert json.dumps(a) != json.dumps(c)


def test_the_agent_draws_from_a_stream_apart_from_the_envs():
    """gymnasium seeds reset(seed=s) with default_rng(s); the trainer's Generator and evaluation's sampler
    were default_rng(seed) too, so the first actions were drawn from the bits that had set env 0's (or
    evaluation episode 0's) start state. Both are agent_rng(seed) now: reproducible, and apart."""
    from minippo.config import agent_rng

    for s in (0, 7, 100_000):
        a = agent_rng(s).random(4)
        np.testing.assert_array_equal(a, agent_rng(s).random(4))
        for t in range(s, s + 4):  # the streams of the resets of the run's (or evaluation's) first envs
            assert not np.array_equal(a, np.random.default_rng(t).random(4))
    algo = PPO(PPOConfig(**TINY, seed=5))
    assert algo.rng.bit_generator.state == agent_rng(5).bit_generator.state
    algo.close()
    pol = load_policy(os.path.join(os.path.dirname(__file__), "data", "format1_cartpole.npz"))
    default = evaluate_policy(pol, "CartPole-v1", 3, False, seed=11)["returns"]
    assert default == evaluate_policy(pol, "CartPole-v1", 3, False, seed=11, rng=agent_rng(11))["returns"]
    assert default != evaluate_policy(pol, "CartPole-v1", 3, False, seed=11, rng=np.random.default_rng(11))["returns"]


@pytest.mark.parametrize("objective", ["clip", "kl_penalty", "surrogate", "a2c", "reinforce"])
def test_every_objective_runs_and_logs(objective):
    rows = []
    if objective in ("a2c", "reinforce"):  # TINY's 2 epochs: the on-policy rungs say what that means
        with pytest.warns(UserWarning, match=f"objective='{objective}' with n_epochs=2: every epoch after"):
            algo = PPO(PPOConfig(**TINY, objective=objective, target_kl=0.5))
    else:
        algo = PPO(PPOConfig(**TINY, objective=objective, target_kl=0.5))
    algo.learn(callback=rows.append)
    r = rows[-1]
    for key in ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "explained_variance", "lr"):
        assert np.isfinite(r[key]), key
    assert r["timesteps"] == 96
    if objective == "kl_penalty":
        assert r["beta"] in {1.0 * 2.0**k for k in range(-6, 7)}
        assert r["kl"] >= 0
    else:  # no penalty: no beta to log (an empty progress.csv cell)
        assert all(np.isnan(row["beta"]) for row in rows)


def test_the_on_policy_epochs_warning_names_the_users_line(tmp_path):
    """``PPO.load`` of an a2c run with n_epochs > 1 warned from minippo/checkpoint.py (a fixed
    stacklevel, one frame short there), so a filter on the user's module missed it: both the
    constructor's and the load's warning name this file."""
    with pytest.warns(UserWarning, match="objective='a2c' with n_epochs=2") as made:
        algo = PPO(PPOConfig(**TINY, objective="a2c"))
    algo.save(tmp_path / "a2c.npz")
    algo.close()
    with pytest.warns(UserWarning, match="objective='a2c' with n_epochs=2") as loaded:
        PPO.load(tmp_path / "a2c.npz").close()
    assert [w.filename for w in made] == [w.filename for w in loaded] == [__file__]


def test_target_kl_stops_epochs_early():
    rows = []
    PPO(PPOConfig(**{**TINY, "n_epochs": 50}, learning_rate=0.05, target_kl=1e-4)).learn(callback=rows.append)
    assert any(r["stopped_early"] for r in rows)
    assert min(r["n_updates"] for r in rows) < 50


def test_continuous_actions_are_clipped_only_for_the_env():
    algo = PPO(PPOConfig(env_id="Pendulum-v1", **{**TINY, "total_timesteps": 32}, log_std_init=1.5))
    algo.collect_rollout()
    acts = algo.buffer.actions
    assert np.abs(acts).max() > 2.0  # the buffer keeps the sampled, unclipped action
    np.testing.assert_array_equal(algo._env_actions(acts[0]), np.clip(acts[0], -2, 2))


@pytest.mark.parametrize("space", [gym.spaces.Discrete(4), gym.spaces.MultiDiscrete([3, 2]),
                                   gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(3))),
                                   gym.spaces.Dict({"x": gym.spaces.Box(-1, 1, (2,))}),
                                   gym.spaces.Box(-1, 1, (2, 3))])
def test_unsupported_observation_spaces_say_how_to_wrap_them(space):
    register_probe("minippo-test/Probe-v0", 8, observation_space=space)
    with pytest.raises(ValueError, match=r"observation space .* is not supported: .*FlattenObservation"):
        PPO(PPOConfig(env_id="minippo-test/Probe-v0", **TINY))
    register_probe("minippo-test/Probe-v0", 8, observation_space=gym.spaces.MultiBinary(3))  # 0/1 features
    PPO(PPOConfig(env_id="minippo-test/Probe-v0", **TINY)).collect_rollout()


@pytest.mark.parametrize("space", [gym.spaces.Sequence(gym.spaces.Box(-1, 1, (2,))), gym.spaces.Text(5),
                                   gym.spaces.Graph(gym.spaces.Box(-1, 1, (2,)), None), gym.spaces.Box(-1, 1, (0,))])
def test_observation_spaces_that_do_not_flatten_are_not_told_to(space):
    """FlattenObservation was suggested for Sequence, Text and Graph observations, which it cannot make
    fixed-length vectors; an empty Box(0,) passed the check and failed later as "obs_dim ... got 0"."""
    register_probe("minippo-test/Probe-v0", 8, observation_space=space)
    with pytest.raises(ValueError, match=r"observation space .* is not supported: minippo takes 1-D Box \(or "
                       r"MultiBinary\) observations of at least one value; turn its observations into a "
                       r"fixed-length vector with a wrapper of your own") as e:
        PPO(PPOConfig(env_id="minippo-test/Probe-v0", **TINY))
    assert "FlattenObservation" not in str(e.value)


@pytest.mark.parametrize("space", [gym.spaces.Discrete(3, start=-1), gym.spaces.Box(-0.1, 0.1, (2,), np.float32)])
def test_predict_gives_the_actions_the_saved_policy_gives(space, tmp_path):
    """PPO.predict, what a Stable-Baselines3 user calls after learn(): the env actions that
    load_policy(path).predict gives for the saved model (the Discrete start added, the Box's bounds
    clipped to), one observation or a batch, the mode or a draw; the normaliser is read, not updated."""
    register_probe("minippo-test/Probe-v0", 8, action_space=space)
    algo = PPO(PPOConfig(env_id="minippo-test/Probe-v0", **TINY, norm_obs=True, log_std_init=1.0))
    algo.learn()
    path = str(tmp_path / "m.npz")
    algo.save(path)
    saved, count = load_policy(path), algo.obs_norm.rms.count
    obs = np.random.default_rng(0).normal(0.0, 3.0, size=(64, algo.policy.obs_dim))
    for o in (obs, obs[0]):
        np.testing.assert_array_equal(algo.predict(o), saved.predict(o))
        drawn = algo.predict(o, deterministic=False, rng=np.random.default_rng(1))
        np.testing.assert_array_equal(drawn, saved.predict(o, deterministic=False, rng=np.random.default_rng(1)))
        assert all(space.contains(a) for a in np.reshape(drawn, (-1, *space.shape)))
    assert algo.obs_norm.rms.count == count
    if isinstance(space, gym.spaces.Discrete):
        assert set(algo.predict(obs, False, np.random.default_rng(2))) == {-1, 0, 1}
    else:  # draws with std e^1 against bounds 0.1: most are clipped
        assert np.abs(algo.predict(obs, False, np.random.default_rng(2))).max() == np.float32(0.1)
    with pytest.raises(ValueError, match="rng is required when deterministic=False"):
        algo.predict(obs, deterministic=False)
    with pytest.raises(ValueError, match="obs"):
        algo.predict(obs[:, :1])


def test_evaluate_policy_takes_a_trainer_with_its_statistics_and_names_an_env_given_as_the_id():
    """evaluate_policy(model, ...), as Stable-Baselines3's is called: the trainer's policy with its
    observation statistics (its ActorCritic alone skipped the normalisation, silently), the returns of
    model.evaluate; an env object given where the id goes is told to go as env=."""
    algo = PPO(PPOConfig(env_id="Pendulum-v1", **{**TINY, "total_timesteps": 64}, norm_obs=True))
    algo.learn()
    want = algo.evaluate(2, seed=5)["returns"]
    assert evaluate_policy(algo, "Pendulum-v1", 2, seed=5)["returns"] == want
    assert evaluate_policy(algo, None, 2, seed=5, env=gym.make("Pendulum-v1"))["returns"] == want
    assert evaluate_policy(algo.policy, "Pendulum-v1", 2, seed=5)["returns"] != want  # (raw observations)
    with pytest.raises(TypeError, match=r"env_id must be a gymnasium id such as 'CartPole-v1', got the env "
                                        r"TimeLimit: an env object goes as env=..., "):
        evaluate_policy(algo, gym.make("Pendulum-v1"), 2)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_actions_sent_to_the_env_lie_in_its_box_in_its_dtype(dtype, tmp_path):
    """Cast to the env's dtype, then clipped there: clipping first let float32(0.1) > 0.1 through."""
    space = gym.spaces.Box(-0.1, 0.1, (2,), dtype)
    register_probe("minippo-test/Probe-v0", 8, action_space=space)
    Probe.log.clear()
    algo = PPO(PPOConfig(env_id="minippo-test/Probe-v0", **TINY, log_std_init=1.0))
    algo.collect_rollout()
    res = algo.evaluate(2)
    assert res["lengths"] == [8, 8]
    algo.save(str(tmp_path / "m.npz"))
    a = load_policy(str(tmp_path / "m.npz")).predict(np.zeros(2), False, np.random.default_rng(0))
    assert a.dtype == dtype and space.contains(a)
    assert len(Probe.log) == 2 * 16 + 16 and all(Probe.log)
    register_probe("minippo-test/Probe-v0", 8, action_space=gym.spaces.Box(0, 4, (2,), np.int64))
    with pytest.raises(TypeError, match="Box action dtype must be a float type, got int64"):
        PPO(PPOConfig(env_id="minippo-test/Probe-v0", **TINY))


def test_non_finite_env_output_stops_training_with_the_env_named():
    register_probe("minippo-test/Probe-v0", 8, nan_at=3)
    algo = PPO(PPOConfig(env_id="minippo-test/Probe-v0", **TINY, norm_obs=True))
    with pytest.raises(ValueError, match=r"'minippo-test/Probe-v0' returned a non-finite observation "
                                         r"in sub-env\(s\) \[0, 1\] at step 4"):
        algo.collect_rollout()
    assert np.isfinite(algo.obs_norm.rms.mean).all()  # stopped before the statistics saw it


@pytest.mark.filterwarnings("ignore:.*not within the observation space")  # (gymnasium's checker sees the NaN first)
@pytest.mark.parametrize("norm_obs", [True, False])
def test_a_non_finite_observation_on_reset_stops_training_with_the_env_named(norm_obs):
    """Only step's observations were checked: a NaN from reset went into the network (and the
    normaliser's statistics, for good) and came out as 'logits contains NaN or inf'."""
    from minippo.ppo import NonFiniteEnvError

    register_probe("minippo-test/Probe-v0", 8, nan_at=0)
    algo = PPO(PPOConfig(env_id="minippo-test/Probe-v0", **TINY, norm_obs=norm_obs))
    with pytest.raises(NonFiniteEnvError, match=r"^env 'minippo-test/Probe-v0' returned a non-finite observation "
                                                r"on reset in sub-env\(s\) \[0, 1\] at step 0: \[nan nan\]$"):
        algo.collect_rollout()
    if norm_obs:
        assert algo.obs_norm.rms.count < 1 and np.isfinite(algo.obs_norm.rms.mean).all()


@pytest.mark.parametrize("at", [0, 3])
def test_an_observation_beyond_the_policys_float32_range_is_named(at):
    """A float64 observation of 1e39 is finite, so it passed the check, became inf in float32 and
    ended as 'gradient norm is nan' (or 'logits contains NaN') a few steps later. A float64 policy
    takes it."""
    from minippo.ppo import NonFiniteEnvError

    box = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
    register_probe("minippo-test/Probe-v0", 8, observation_space=box, nan_at=at, value=1e39)
    algo = PPO(PPOConfig(env_id="minippo-test/Probe-v0", **TINY, norm_obs=True))
    where = "on reset " if at == 0 else ""
    import warnings

    with warnings.catch_warnings(record=True) as shown, pytest.raises(
            NonFiniteEnvError, match=rf"^env 'minippo-test/Probe-v0' returned an observation {where}beyond "
                                                r"the policy's float32 range \(\|x\| <= 3\.403e\+38; scale the "
                                                r"observations, or "
                                                r"train with dtype='float64'\) in sub-env\(s\) \[0, 1\] at step "
                                                rf"{max(0, 2 * (at - 1))}: \[1\.e\+39 1\.e\+39\]$"):
        warnings.simplefilter("always")
        algo.collect_rollout()
    assert [w for w in shown if issubclass(w.category, RuntimeWarning)] == []  # named once: no cast warning
    assert np.isfinite(algo.obs_norm.rms.mean).all()
    algo = PPO(PPOConfig(env_id="minippo-test/Probe-v0", **TINY, norm_obs=True, dtype="float64"))
    algo.collect_rollout()  # float64 holds it, with the normaliser or without
    algo = PPO(PPOConfig(env_id="minippo-test/Probe-v0", **TINY, norm_obs=False, dtype="float64"))
    algo.collect_rollout()
    assert np.isfinite(algo.buffer.values).all()


def test_a_reward_beyond_the_policys_float32_range_is_named():
    """A float64 reward of 1e39 is finite: it passed the check, was stored as inf and surfaced an
    iteration later as 'adv contains NaN or inf', naming neither the env nor the reward (session 68's
    audit). norm_reward scales it in float64 before it is stored, and a float64 policy holds it."""
    from minippo.ppo import NonFiniteEnvError

    register_probe("minippo-test/Probe-v0", 8, reward_at=3, reward=1e39)
    algo = PPO(PPOConfig(env_id="minippo-test/Probe-v0", **TINY))
    import warnings

    with warnings.catch_warnings(record=True) as shown, pytest.raises(
            NonFiniteEnvError, match=r"^env 'minippo-test/Probe-v0' returned a reward beyond the policy's float32 "
                                     r"range \(\|x\| <= 3\.403e\+38; scale the rewards \(norm_reward\), or train "
                                     r"with dtype='float64'\) in sub-env\(s\) \[0, 1\] at step 4: 1e\+39$"):
        warnings.simplefilter("always")
        algo.collect_rollout()
    assert [w for w in shown if issubclass(w.category, RuntimeWarning)] == []  # (no cast warning before it)
    with pytest.raises(RuntimeError, match=r"^update\(\) needs a complete rollout"):
        algo.update(0.0)
    for kwargs in ({"norm_reward": True}, {"dtype": "float64"}):
        algo = PPO(PPOConfig(env_id="minippo-test/Probe-v0", **TINY, **kwargs))
        algo.collect_rollout()
        assert np.isfinite(algo.buffer.rewards).all()
        algo.update(0.0)


def test_rewards_whose_discounted_sums_overflow_are_named(any_backend, tmp_path, capsys):
    """Rewards of 2e38 every step are each inside float32's range (so the env's check takes them), but their
    discounted sums are not: the advantages came out inf and the update stopped with "adv contains NaN or
    inf", naming neither the env nor the rewards, and `minippo train` added the divergence hint (a smaller
    learning rate...), which cannot help. It is now a NonFiniteEnvError (and still a FloatingPointError)
    naming the env, the rewards' size and what to do; norm_reward or a float64 policy trains on them."""
    from minippo.cli import main
    from minippo.ppo import NonFiniteEnvError

    register_probe("minippo-test/Probe-v0", 8, reward_at="every", reward=2e38)
    algo = PPO(PPOConfig(env_id="minippo-test/Probe-v0", **TINY))
    message = (r"^iteration 1: env 'minippo-test/Probe-v0' returned rewards \(\|r\| up to 2e\+38\) whose discounted "
               r"sums overflow the policy's float32: scale the rewards \(norm_reward\), or train with "
               r"dtype='float64' \(no parameter was updated\)$")
    before = {k: v.copy() for k, v in algo.policy.params.items()}
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(NonFiniteEnvError, match=message) as caught:
        algo.learn()
    assert isinstance(caught.value, FloatingPointError)
    assert all(np.array_equal(before[k], v) for k, v in algo.policy.params.items())
    for kwargs in ({"norm_reward": True}, {"dtype": "float64"}):
        PPO(PPOConfig(env_id="minippo-test/Probe-v0", **TINY, **kwargs)).learn()
    assert main(["train", "minippo-test/Probe-v0", "--timesteps", "64", "--n-envs", "2", "--out", str(tmp_path / "run"),
                 "--quiet", "--set", "n_steps=16", "--set", "batch_size=16", "--set", "hidden=[8]"]) == 1
    err = capsys.readouterr().err
    assert "whose discounted sums overflow the policy's float32" in err and "learning_rate" not in err, err


def test_a_gradient_too_large_for_adam_in_float32_stops_training(tmp_path):
    """One reward of 1e30 with clipping off (max_grad_norm=0) gave a gradient whose squares overflowed
    Adam's float32 second moment: the critic's parameters stopped moving for good, silently, and the
    final save() refused the model as damaged (session 68's audit). The update raises now, naming the
    cause, with nothing updated; the model saves. Clipped (the default), the same run trains."""
    register_probe("minippo-test/Probe-v0", 8, reward_at=3, reward=1e30)
    algo = PPO(PPOConfig(env_id="minippo-test/Probe-v0", **TINY, max_grad_norm=0))
    before = {k: p.copy() for k, p in algo.policy.params.items()}
    from minippo.optim import GradientOverflowError

    with pytest.raises(GradientOverflowError, match=r"^iteration 1: gradient norm is .* \(not clipped: max_grad_norm "
                                                    r"<= 0\), past 9\.22e\+18, where its squares may overflow Adam's "
                                                    r"float32 second moment to inf .*\(no parameter was updated with "
                                                    r"it\)$"):
        algo.learn()
    assert algo.optimizer.t == 0 and not algo.optimizer._v.any()
    assert all((algo.policy.params[k] == before[k]).all() for k in before)
    algo.save(tmp_path / "m.npz")
    algo = PPO(PPOConfig(env_id="minippo-test/Probe-v0", **TINY))
    algo.learn()
    assert np.isfinite(algo.optimizer._v).all() and algo.optimizer._v.max() < 1e30


@pytest.mark.parametrize("dtype, weight, what, target_kl", [
    ("float64", 1e306, "loss is inf", None), ("float64", 1e306, "loss is inf", 1e-9),
    ("float32", 1e37, "gradient norm is nan", None),  # (with target_kl: a finite loss, a stop before the step)
])
def test_a_non_finite_loss_stops_the_update_with_nothing_updated(any_backend, dtype, weight, what, target_kl):
    """A critic blown up past the dtype's range: in float64 its values ~1e306 square to an infinite
    loss; in float32 the loss (summed in float64) is finite, ~1e73, and the backward pass's 1e37-sized
    terms overflow to a NaN gradient. The update raises FloatingPointError naming the iteration, before
    any step. With target_kl, a minibatch whose KL passed it (the actor moved off the rollout's policy)
    ended the epochs on an infinite loss without a word: the loss is checked first now."""
    from trainer_parts import activation_for

    algo = PPO(PPOConfig(**TINY, dtype=dtype, activation=activation_for(any_backend), target_kl=target_kl))
    algo.collect_rollout()
    algo.policy.params["critic.W1"][...] = weight
    algo.policy.params["actor.b1"][...] += np.array([0.5, -0.5], dtype)  # approx_kl > 1e-9 from the start
    before = {k: p.copy() for k, p in algo.policy.params.items()}
    # (numpy warns of the overflows on its way, as it does for a caller's own arrays; numba's kernels do not)
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(
            FloatingPointError, match=rf"^iteration 1: {what} \(no parameter was updated with it\)$"):
        algo.update(0.0)
    assert algo.optimizer.t == 0 and not algo.optimizer._m.any() and not algo.optimizer._v.any()
    assert all(np.array_equal(p, before[k]) for k, p in algo.policy.params.items())


class Shaped:
    """A vector env of 2 sub-envs with 3-D observations (same-step autoreset) that returns its
    observations, rewards or termination flags in the shape ``bad`` maps them to."""

    num_envs = 2
    metadata = {"autoreset_mode": "same_step"}

    def __init__(self, bad):
        from minippo.spaces import Box, Discrete

        self.single_observation_space = Box(-np.ones(3), np.ones(3))
        self.single_action_space = Discrete(2)
        self.bad = bad

    def _obs(self, where):
        obs = np.zeros((2, 3), np.float32)
        return self.bad[1](obs) if self.bad[0] == where else obs

    def reset(self, seed=None):
        result = self._obs("reset"), {}
        return self.bad[1](result) if self.bad[0] == "reset_result" else result

    def step(self, actions):
        reward, term = np.ones(2), np.zeros(2, bool)
        if self.bad[0] == "reward":
            reward = self.bad[1](reward)
        if self.bad[0] == "term":
            term = self.bad[1](term)
        return self._obs("step"), reward, term, np.zeros(2, bool), {}

    def close(self):
        pass


class Lockstep:
    """A same-step vector env of 2 sub-envs whose episodes all end together, every 3 steps, with
    info["final_obs"] built by ``final`` from the final rows (gymnasium builds an object array)."""

    num_envs = 2
    metadata = {"autoreset_mode": "same_step"}

    def __init__(self, final):
        from minippo.spaces import Box, Discrete

        self.single_observation_space = Box(-np.ones(3), np.ones(3))
        self.single_action_space = Discrete(2)
        self.final, self.t = final, 0

    def reset(self, seed=None):
        self.t = 0
        return np.zeros((2, 3), np.float32), {}

    def step(self, actions):
        self.t += 1
        obs = np.full((2, 3), 0.1 * self.t, np.float32) + np.asarray(actions, np.float32)[:, None]
        done = np.full(2, self.t == 3)
        info = {}
        if done.any():
            info["final_obs"] = self.final(obs)
            self.t, obs = 0, np.zeros((2, 3), np.float32)
        return obs, np.ones(2), np.zeros(2, bool), done, info

    def close(self):
        pass


@pytest.mark.parametrize("info, shown", [
    (None, TypeError(r"returned info of type NoneType at an episode's end \(SAME_STEP autoreset mode\); expected a "
                     r"dict holding info\['final_obs'\]")),
    ([1, 2], TypeError(r"returned info of type list at an episode's end")),
    ("short", ValueError(r"returned info\['final_obs'\] of 1 rows; expected 2 rows: one per sub-env")),
    ("none", ValueError(r"returned info\['final_obs'\] of type NoneType; expected 2 rows: one per sub-env")),
])
def test_a_same_step_env_ending_an_episode_without_a_usable_info_is_named(info, shown):
    """Session 68's audit: info None gave "argument of type 'NoneType' is not iterable", a list "truth
    value ... ambiguous", and info['final_obs'] with fewer rows than sub-envs an IndexError."""

    class Bad(Lockstep):
        def step(self, actions):
            obs, r, term, trunc, good = super().step(actions)
            if not good:
                return obs, r, term, trunc, good
            if info in ("short", "none"):
                return obs, r, term, trunc, {"final_obs": good["final_obs"][:1] if info == "short" else None}
            return obs, r, term, trunc, info

    from minippo.ppo import EnvOutputError

    algo = PPO(PPOConfig(**TINY), env=Bad(list))
    with pytest.raises(EnvOutputError, match=rf"^env 'Bad' {shown.args[0]}"):
        algo.collect_rollout()


def test_final_observations_as_an_object_array_of_equal_rows_are_taken():
    """gymnasium's np.array(rows, dtype=object) is 2-D when every sub-env ended at once (equal rows):
    the new observation check refused its dtype; it is read as the numbers it holds."""
    got, want = (PPO(PPOConfig(**TINY), env=Lockstep(final)) for final in
                 (lambda obs: np.array(list(obs), dtype=object), lambda obs: list(obs)))
    assert np.array(list(np.zeros((2, 3))), dtype=object).ndim == 2  # (what the first env's info holds)
    got.collect_rollout()
    want.collect_rollout()
    np.testing.assert_array_equal(got.buffer.rewards, want.buffer.rewards)  # the bootstraps from V(final obs)
    assert not np.array_equal(got.buffer.rewards, np.ones_like(got.buffer.rewards))


@pytest.mark.parametrize("bad, shown", [
    (("reset", np.transpose), r"observations on reset of shape \(3, 2\); expected \(2, 3\)"),
    (("step", np.ravel), r"observations of shape \(6,\); expected \(2, 3\)"),
    (("step", lambda o: o[..., None]), r"observations of shape \(2, 3, 1\); expected \(2, 3\)"),
    (("reward", lambda r: r[:, None]), r"rewards, terminations and truncations of shapes \(2, 1\), \(2,\), \(2,\); "
                                        r"expected \(2,\) each"),
    (("term", lambda t: t[:1]), r"rewards, terminations and truncations of shapes \(2,\), \(1,\), \(2,\); "
                                 r"expected \(2,\) each"),
    (("step", lambda o: np.array([None, *o[1:]], dtype=object)), r"observations that are not all numbers"),
    (("step", lambda o: o.astype(str)), r"observations of dtype <U32; expected real numbers"),
    # session 68's audit: strings were parsed ("False" as a done flag), None read as not done, a complex reward
    # lost its imaginary part with a warning, a masked array's mask was dropped, reset's pair not checked
    (("reward", lambda r: r.astype(str)), r"rewards of dtype <U32; expected real numbers, one per sub-env"),
    (("reward", lambda r: r + 1j), r"rewards of dtype complex128; expected real numbers"),
    (("reward", lambda r: [None, None]), r"rewards of dtype object; expected real numbers"),
    (("reward", lambda r: np.array(["1", 2.0], dtype=object)), r"rewards of dtype object; expected real numbers"),
    (("reward", lambda r: np.ma.masked_array(r, mask=[True, False])), r"rewards as a numpy masked array"),
    (("term", lambda t: np.ma.masked_array(t)), r"terminations as a numpy masked array"),
    (("term", lambda t: t.astype(str)), r"terminations of dtype <U5; expected bools, one per sub-env"),
    (("term", lambda t: [None, None]), r"terminations of dtype object; expected bools"),
    (("step", lambda o: np.ma.masked_array(o, mask=np.eye(2, 3, dtype=bool))),
     r"observations as a numpy masked array; expected a plain array"),
    (("reset", lambda o: np.ma.masked_array(o)), r"observations on reset as a numpy masked array"),
    (("reset_result", lambda r: r[0]), r"ndarray from reset\(\); expected a pair \(obs, info\)"),
    (("reset_result", lambda r: (*r, {})), r"a tuple of 3 from reset\(\); expected a pair \(obs, info\)"),
])
def test_an_env_returning_the_wrong_shape_is_named(bad, shown):
    """A transposed or flat observation batch failed in numpy's reshape ('cannot reshape array of size
    6 into shape (3,3)'), an (N, 1) reward in an in-place add, and an (N, d, 1) batch was silently
    reshaped: each now names the env and the shape it should have returned."""
    from minippo.ppo import EnvOutputError

    algo = PPO(PPOConfig(**TINY), env=Shaped(bad))
    with pytest.raises(EnvOutputError, match=rf"^env 'Shaped' returned {shown}"):
        algo.collect_rollout()
    assert issubclass(EnvOutputError, TypeError) and issubclass(EnvOutputError, ValueError)  # (as they were)
    algo = PPO(PPOConfig(**TINY), env=Shaped((None, None)))
    algo.collect_rollout()  # the same env, returning what it should, trains


@pytest.mark.parametrize("good", [
    ("reward", lambda r: np.array(list(r), dtype=object)),  # numbers in an object array (session 68's review)
    ("reward", lambda r: [Fraction(1, 2), np.float32(2)]),
    ("term", lambda t: np.array([False, np.False_], dtype=object)),
    ("term", lambda t: [np.False_, False]),
    ("reward", lambda r: [True, 1]),
    ("reset_result", list),  # [obs, info]
])
def test_env_outputs_of_other_real_forms_are_taken(good):
    """Rewards and flags as object arrays of numbers, Fractions, numpy scalars, and a reset returning a
    list pair train as the plain arrays do (the first checks of session 68 had refused the object arrays
    and the list)."""
    from minippo.config import PPOConfig as Config

    want = PPO(Config(**TINY), env=Shaped((None, None)))
    got = PPO(Config(**TINY), env=Shaped(good))
    want.collect_rollout()
    got.collect_rollout()
    if good[0] != "reward":
        np.testing.assert_array_equal(got.buffer.rewards, want.buffer.rewards)
        np.testing.assert_array_equal(got.buffer.obs, want.buffer.obs)
    else:
        np.testing.assert_array_equal(got.buffer.rewards[:, 0], float(good[1](np.ones(2))[0]))


@pytest.mark.parametrize("autoreset", ["same_step", "next_step"])
def test_a_non_finite_final_observation_stops_training_in_both_autoreset_modes(autoreset):
    """SAME_STEP keeps a truncated episode's final observation in info: a NaN there used to reach the
    critic and fail later as 'logits contains NaN', where NEXT_STEP (it comes as next_obs) named the env."""
    register_probe("minippo-test/Probe-v0", 3, nan_at=3)  # truncated at t = 3 with a NaN observation
    algo = PPO(PPOConfig(env_id="minippo-test/Probe-v0", **TINY, norm_obs=True, autoreset=autoreset))
    what = r"final observation \(info\['final_obs'\]\)" if autoreset == "same_step" else "observation"
    with pytest.raises(ValueError, match=rf"'minippo-test/Probe-v0' returned a non-finite {what} "
                                         r"in sub-env\(s\) \[0, 1\] at step 4: \[nan nan\]"):
        algo.collect_rollout()
    assert np.isfinite(algo.obs_norm.rms.mean).all()


def test_a_vector_env_without_a_usable_autoreset_mode_is_refused():
    """The mode used to be guessed: anything not marked NEXT_STEP ran as SAME_STEP, so a custom
    next-step env without the metadata trained on its reset steps as real transitions, and a
    DISABLED one crashed mid-rollout (AssertionError or KeyError 'final_obs')."""
    from envs_for_tests import Probe

    venv = gym.vector.SyncVectorEnv([Probe] * 2, autoreset_mode=gym.vector.AutoresetMode.DISABLED)
    with pytest.raises(ValueError, match=r"env.metadata\['autoreset_mode'\] is <AutoresetMode.DISABLED.*: "
                                         r"minippo needs AutoresetMode.NEXT_STEP or SAME_STEP"):
        PPO(PPOConfig(**TINY), env=venv)
    venv = gym.vector.SyncVectorEnv([Probe] * 2)
    venv.metadata = {}  # a custom vector env that does not say
    with pytest.raises(ValueError, match=r"env.metadata\['autoreset_mode'\] is None: minippo needs"):
        PPO(PPOConfig(**TINY), env=venv)


def test_the_rewards_an_env_returned_are_not_written_to():
    """The truncation bootstrap (SAME_STEP) was added in place to the env's own float64 reward array:
    a vector wrapper keeping what it returned saw gamma * V(final obs) on truncated steps."""

    class Keep(gym.vector.VectorWrapper):
        kept: list = []

        def step(self, actions):
            out = self.env.step(actions)
            Keep.kept.append((out[1], out[1].copy()))
            return out

    venv = Keep(gym.vector.SyncVectorEnv([lambda: gym.wrappers.TimeLimit(Probe(), 3)] * 2,
                                         autoreset_mode=gym.vector.AutoresetMode.SAME_STEP))
    algo = PPO(PPOConfig(**TINY), env=venv)
    assert not algo.next_step
    algo.policy.critic.params["b1"][...] = 2.0  # V = 2 everywhere (Probe's observations are zeros)
    algo.collect_rollout()
    assert any(r.dtype == np.float64 for r, _ in Keep.kept)  # the case where np.asarray did not copy
    assert all(np.array_equal(r, c) for r, c in Keep.kept)
    assert algo.buffer.rewards.max() == np.float32(1 + 0.99 * 2)  # the bootstrap reached the stored rewards


def test_a_module_env_id_names_the_env_it_registers():
    """config.env_id "module:EnvId" and an env made from it (spec id EnvId) were refused as different
    envs, and the id suggested instead broke evaluation in a fresh process (no module imported)."""
    from minippo.envs import make_vec_env

    env_id = "gymnasium.envs.classic_control.cartpole:CartPole-v1"
    algo = PPO(PPOConfig(**TINY, env_id=env_id), env=make_vec_env(env_id, 2))
    algo.learn()
    assert np.isfinite(algo.evaluate(1)["mean_return"])
    with pytest.raises(ValueError, match="env is CartPole-v1 but config.env_id='gymnasium.envs.classic_control"
                                         ".cartpole:Acrobot-v1'"):
        PPO(PPOConfig(**TINY, env_id="gymnasium.envs.classic_control.cartpole:Acrobot-v1"),
            env=make_vec_env(env_id, 2))


def test_a_custom_env_is_named_by_its_class_not_by_config_env_id():
    """An env without a gymnasium spec is not config.env_id's: messages name its class."""
    from envs_for_tests import Probe

    venv = gym.vector.SyncVectorEnv([lambda: Probe(nan_at=3)] * 2)
    algo = PPO(PPOConfig(**TINY), env=venv)
    with pytest.raises(ValueError, match=r"env 'SyncVectorEnv' returned a non-finite observation"):
        algo.collect_rollout()


def test_a_policy_trained_through_wrappers_is_evaluated_in_the_wrapped_env(tmp_path):
    """The README's route for a Discrete-observation env (FlattenObservation, PPO(config, env=...)):
    training, PPO.evaluate(env=...), save, load_policy and evaluate_policy(env=...) all work, and the
    bare env is refused with the fix named instead of failing inside the network."""
    from gymnasium.wrappers import FlattenObservation

    from minippo.checkpoint import EnvMismatchError

    lake = FlattenObservation(gym.make("FrozenLake-v1"))
    with pytest.raises(TypeError, match="env must be a vector env: gymnasium.s .* got FlattenObservation"):
        PPO(PPOConfig(**TINY, env_id="FrozenLake-v1"), env=lake)
    venv = gym.make_vec("FrozenLake-v1", num_envs=2, vectorization_mode="sync", wrappers=[FlattenObservation])
    algo = PPO(PPOConfig(**TINY, env_id="FrozenLake-v1", eval_episodes=2), env=venv).learn()
    res = algo.evaluate(env=lake)  # config.eval_episodes episodes
    assert res["episodes"] == 2 and res["env_id"] == "FrozenLake-v1"
    algo.save(str(tmp_path / "lake.npz"))
    pol = load_policy(str(tmp_path / "lake.npz"))
    assert evaluate_policy(pol, None, 2, seed=100_000, env=lake)["returns"] == res["returns"]
    lake.close()
    with pytest.raises(EnvMismatchError, match=r"env FrozenLake-v1 does not fit the policy: observations "
                                               r"Discrete\(16\).*shape \(16,\).*env=<wrapped env>"):
        evaluate_policy(pol, "FrozenLake-v1", 1)
    with pytest.raises(EnvMismatchError, match="env CartPole-v1 does not fit the policy"):
        evaluate_policy(pol, "CartPole-v1", 1)  # same observation width would be needed; actions differ too
    with pytest.raises(ValueError, match="env must be a single gymnasium env, not a vector env"):
        evaluate_policy(pol, None, 1, env=venv)


def test_env_kwargs_an_env_refuses_are_named():
    with pytest.raises(ValueError, match=r"env_kwargs=\{'foo': 1\} are not accepted by CartPole-v1"):
        PPO(PPOConfig(**TINY, env_kwargs={"foo": 1}))
    algo = PPO(PPOConfig(**TINY))
    with pytest.raises(ValueError, match=r"env_kwargs=\{'foo': 1\} are not accepted by CartPole-v1"):
        evaluate_policy(algo.policy, "CartPole-v1", 1, env_kwargs={"foo": 1})


def test_evaluation_of_an_env_without_a_time_limit_ends(monkeypatch):
    from minippo import checkpoint

    register_probe("minippo-test/Endless-v0")  # never terminates, no TimeLimit
    algo = PPO(PPOConfig(env_id="minippo-test/Endless-v0", **TINY))
    res = checkpoint.evaluate_policy(algo.policy, "minippo-test/Endless-v0", 2, max_steps=40)
    assert res["lengths"] == [40, 40] and res["cut"] == 2 and res["mean_return"] == 40.0
    monkeypatch.setattr(checkpoint, "EVAL_MAX_STEPS", 25)
    assert algo.evaluate(1)["lengths"] == [25]
    register_probe("minippo-test/Probe-v0", 8)
    res = checkpoint.evaluate_policy(algo.policy, "minippo-test/Probe-v0", 1)
    assert res["lengths"] == [8] and res["cut"] == 0  # the env's own limit ends it first


def test_save_load_evaluate_same_returns(tmp_path):
    algo = PPO(preset("CartPole-v1", total_timesteps=2048, norm_obs=True)).learn()
    path = str(tmp_path / "m.npz")
    algo.save(path)
    r1 = algo.evaluate(3, deterministic=True, seed=5)
    r2 = PPO.load(path).evaluate(3, deterministic=True, seed=5)
    r3 = evaluate_policy(load_policy(path), "CartPole-v1", 3, True, seed=5)
    assert r1["returns"] == r2["returns"] == r3["returns"]
    with np.load(path, allow_pickle=False) as z:  # loadable without pickle
        assert "param/actor.W0" in z.files and "obs_rms.mean" in z.files


def test_ppo_keeps_its_own_copy_of_the_config():
    """PPO kept the caller's PPOConfig: a sweep editing it changed gamma or n_epochs under an instance
    already training (n_steps overran its buffer), while learning_rate, read once, did not change."""
    cfg = PPOConfig(**TINY)
    algo = PPO(cfg)
    cfg.gamma, cfg.n_steps, cfg.env_kwargs = 0.5, 64, {"render_mode": None}
    assert algo.config is not cfg and algo.config.gamma == 0.99 and algo.config.n_steps == 16
    assert algo.config.env_kwargs == {}
    algo.learn()


def test_checkpoints_record_the_blas_thread_settings(tmp_path, monkeypatch):
    """Results are bit-identical only for the same BLAS thread count: the checkpoint says what it was
    set to (all three variables the CLI pins) and, for unset ones (BLAS's default), the core count."""
    monkeypatch.setenv("MKL_NUM_THREADS", "3")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    algo = PPO(PPOConfig(**TINY))
    algo.save(str(tmp_path / "m.npz"))
    meta, _ = read_checkpoint(str(tmp_path / "m.npz"))
    assert meta["blas_threads"]["MKL_NUM_THREADS"] == "3" and meta["blas_threads"]["OMP_NUM_THREADS"] is None
    assert meta["cpus"] == (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())


def test_resume_restores_state_and_continues(tmp_path):
    cfg = preset("CartPole-v1", total_timesteps=4096, norm_obs=True, norm_reward=True, objective="kl_penalty")
    algo = PPO(cfg).learn(1024)
    path = str(tmp_path / "m.npz")
    algo.save(path)
    back = PPO.load(path)
    assert back.num_timesteps == algo.num_timesteps == 1024
    assert back.iteration == algo.iteration and back.total_timesteps == 1024
    assert back.optimizer.t == algo.optimizer.t
    assert back.kl_coef.beta == algo.kl_coef.beta
    for k, v in algo.policy.params.items():
        np.testing.assert_array_equal(back.policy.params[k], v)
        np.testing.assert_array_equal(back.optimizer.m[k], algo.optimizer.m[k])
        np.testing.assert_array_equal(back.optimizer.v[k], algo.optimizer.v[k])
    for name, new, old in (("obs_rms", back.obs_norm.rms, algo.obs_norm.rms),
                           ("ret_rms", back.reward_scaler.rms, algo.reward_scaler.rms)):
        saved, restored = old.state(name), new.state(name)  # mean, var and count
        assert saved.keys() == restored.keys()
        for k in saved:
            np.testing.assert_array_equal(restored[k], saved[k], err_msg=k)
    # the statistics really were updated before saving: 1024 steps less one reset step per finished
    # episode (next_step, the preset's autoreset, masks them), plus the prior's 1e-4
    assert algo.config.autoreset == "next_step" and 900 < algo.obs_norm.rms.count < 1024
    # the running discounted return belongs to the episodes in progress: the envs restart on resume
    assert algo.reward_scaler.ret.any() and not back.reward_scaler.ret.any()
    assert back.rng.bit_generator.state == algo.rng.bit_generator.state
    # schedules continue from the saved progress, not from the start
    rows = []
    back.learn(2048, callback=rows.append)
    assert rows[0]["timesteps"] == 1024 + 256 and back.num_timesteps == 2048
    assert rows[0]["lr"] == 1e-3 * (1 - 1024 / 2048)  # (exact: module docstring)
    again = []  # a second resume from the same file continues identically
    PPO.load(path).learn(2048, callback=again.append)
    drop = ("time", "fps")
    assert [{k: v for k, v in r.items() if k not in drop} for r in again] == \
        [{k: v for k, v in r.items() if k not in drop} for r in rows]


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = str(tmp_path / "m.npz")
    atomic_savez(path, {"a": np.arange(3)})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_savez(path, {"a": np.arange(5)})
    with np.load(path) as z:
        np.testing.assert_array_equal(z["a"], np.arange(3))
    assert os.listdir(tmp_path) == ["m.npz"]  # no temp file left behind


def test_an_interrupt_as_the_temp_file_is_created_leaves_no_temp_file(tmp_path, monkeypatch):
    """A SIGINT's handler runs as the C call creating the temp file returns: the KeyboardInterrupt it
    raises came before the cleanup was armed, and left the temp file beside the model."""
    path = str(tmp_path / "m.npz")
    atomic_savez(path, {"a": np.arange(3)})
    real_open = os.open

    def open_then_interrupt(name, flags, *args, **kwargs):
        fd = real_open(name, flags, *args, **kwargs)
        if flags & os.O_EXCL:  # the temp file's creation
            os.close(fd)
            raise KeyboardInterrupt
        return fd

    monkeypatch.setattr(os, "open", open_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_savez(path, {"a": np.arange(5)})
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["m.npz"]
    with np.load(path) as z:
        np.testing.assert_array_equal(z["a"], np.arange(3))


def test_an_interrupt_just_after_the_rename_leaves_the_new_file_durable(tmp_path, monkeypatch):
    """A second Ctrl-C landing as the rename returns: the new file is whole and in place, and the folder
    is still synced (it was skipped), before the KeyboardInterrupt goes on to the caller."""
    from minippo import checkpoint

    path = str(tmp_path / "m.npz")
    atomic_savez(path, {"a": np.arange(3)})
    real_replace, synced = os.replace, []

    def replace_then_interrupt(src, dst):
        real_replace(src, dst)
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", replace_then_interrupt)
    monkeypatch.setattr(checkpoint, "_fsync_folder", synced.append)
    before = checkpoint.file_id(path)
    with pytest.raises(KeyboardInterrupt):
        atomic_savez(path, {"a": np.arange(5)})
    monkeypatch.undo()
    assert synced == [os.path.realpath(tmp_path)] and os.listdir(tmp_path) == ["m.npz"]
    assert checkpoint.file_id(path) != before  # what the CLI reads as "saved"
    with np.load(path) as z:
        np.testing.assert_array_equal(z["a"], np.arange(5))


def test_the_fields_a_saved_model_keeps_are_refused_as_load_overrides(tmp_path):
    """config.FIXED_AT_LOAD is what a trainer's frozen config leaves out of its "resume with another
    value, PPO.load(path, field=...)" advice: each is refused there, and the other fields load."""
    from minippo.checkpoint import CheckpointError
    from minippo.config import FIXED_AT_LOAD

    path = str(tmp_path / "m.npz")
    PPO(PPOConfig(**TINY)).save(path)
    other = {"hidden": (4,), "shared": True, "activation": "relu", "dtype": "float64", "norm_obs": True,
             "norm_reward": True, "log_std_init": -1.0}  # (log_std_init went into the config, and did nothing)
    assert sorted(other) == sorted(FIXED_AT_LOAD)
    for name, value in other.items():
        with pytest.raises((CheckpointError, ValueError), match=name):
            PPO.load(path, **{name: value})
    with pytest.raises(ValueError, match=r"^log_std_init=-1.0 cannot override the saved log_std_init=0.0: it only "
                                         r"sets a new network's log-std, and the loaded one has its trained log-std"):
        PPO.load(path, log_std_init=-1.0)
    assert PPO.load(path, log_std_init=0.0).config.log_std_init == 0.0  # the saved value itself: no change
    for name, value in (("env_id", "gymnasium.envs.classic_control.cartpole:CartPole-v1"), ("learning_rate", 1e-3),
                        ("seed", 7), ("n_steps", 64)):
        assert getattr(PPO.load(path, **{name: value}).config, name) == value


def test_a_temperature_set_on_the_policy_is_saved_and_restored_by_both_loaders(tmp_path):
    """ActorCritic.temperature may be set after the trainer built the policy: the file holds the one it
    acted with beside the config's, and both loaders restore it (load_policy refused such a file for a
    while, as "damaged or edited"; PPO.load refused it as not fitting the config)."""
    algo = PPO(PPOConfig(**TINY))
    algo.policy.temperature = 0.5
    path = str(tmp_path / "t.npz")
    algo.save(path)
    assert load_policy(path).policy.temperature == 0.5
    loaded = PPO.load(path)
    assert loaded.policy.temperature == 0.5 and loaded.config.temperature == 1.0
    # PPO.load(path, temperature=...) went into the config and the policy kept the saved one: the
    # resumed run acted and trained at another temperature than its config.json said
    loaded = PPO.load(path, temperature=2.0)
    assert loaded.policy.temperature == 2.0 and loaded.config.temperature == 2.0
    loaded.learn(loaded.num_timesteps + 96)
    saved_again = str(tmp_path / "t2.npz")
    loaded.save(saved_again)
    assert load_policy(saved_again).policy.temperature == 2.0 == PPO.load(saved_again).policy.temperature


def test_a_saved_and_loaded_config_carry_the_budget_learn_was_last_given(tmp_path):
    """learn(total) moves the trainer's budget past its config's: the file's config and the loaded
    trainer's config say the budget the run trained to (they kept the first one, while the trainer
    resumed with the new one), also for a file written before the save kept the config's copy."""
    algo = PPO(PPOConfig(**{**TINY, "total_timesteps": 32}))
    per_iteration = algo.config.n_envs * algo.config.n_steps
    algo.learn(algo.num_timesteps + 2 * per_iteration)
    total = algo.total_timesteps
    assert total > 32
    path = str(tmp_path / "t.npz")
    algo.save(path)
    meta, arrays = read_checkpoint(path)
    assert meta["config"]["total_timesteps"] == meta["total_timesteps"] == total
    loaded = PPO.load(path)
    assert loaded.config.total_timesteps == loaded.total_timesteps == total
    meta["config"]["total_timesteps"] = 32  # as such a file was written before
    old = str(tmp_path / "old.npz")
    atomic_savez(old, {**arrays, "meta": np.array(json.dumps(meta))})
    assert PPO.load(old).config.total_timesteps == total
    assert PPO.load(old, total_timesteps=total + per_iteration).config.total_timesteps == total + per_iteration


def test_a_failed_save_removes_the_folders_it_made_and_names_the_folder_it_cannot_write(tmp_path, monkeypatch):
    """A save into new folders that failed left them behind, empty; an OSError other than a permission
    one (a read-only or full file system) creating the temp file named the temp file's random name."""
    import errno

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_savez(str(tmp_path / "a" / "b" / "m.npz"), {"a": np.arange(3)})
    assert os.listdir(tmp_path) == []
    os.makedirs(tmp_path / "keep")  # a folder there before the save stays
    with pytest.raises(OSError, match="disk full"):
        atomic_savez(str(tmp_path / "keep" / "new" / "m.npz"), {"a": np.arange(3)})
    assert os.listdir(tmp_path) == ["keep"] and os.listdir(tmp_path / "keep") == []
    monkeypatch.undo()
    real_mkdir = os.mkdir  # a folder that cannot be made (ENOSPC, a name too long): the ones made before go

    def mkdir_fails_inside(p, *a, **k):
        if os.path.basename(p) == "inner":
            raise OSError(errno.ENOSPC, "No space left on device", p)
        real_mkdir(p, *a, **k)

    monkeypatch.setattr(os, "mkdir", mkdir_fails_inside)
    with pytest.raises(OSError, match="No space left"):
        atomic_savez(str(tmp_path / "outer" / "inner" / "m.npz"), {"a": np.arange(3)})
    assert os.listdir(tmp_path) == ["keep"]
    monkeypatch.undo()
    real_open = os.open

    def read_only_fs(name, flags, *args, **kwargs):
        if flags & os.O_EXCL:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), name)
        return real_open(name, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_fs)
    with pytest.raises(OSError, match=rf"cannot create a file in folder '{re.escape(str(tmp_path))}' "
                                      r"\(Read-only file system\): a save writes a temporary file there") as e:
        atomic_savez(str(tmp_path / "m.npz"), {"a": np.arange(3)})
    assert e.value.errno == errno.EROFS and ".tmp" not in str(e.value)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="symbolic links")
def test_a_save_onto_a_loop_of_links_fails_as_open_does_and_keeps_the_links(tmp_path, monkeypatch):
    """os.stat's ELOOP was read as "no such file", and the rename replaced the link with a file."""
    import errno

    monkeypatch.chdir(tmp_path)
    os.symlink("b", "a")
    os.symlink("a", "b")
    with pytest.raises(OSError) as opened, open("a", "wb"):
        pass
    with pytest.raises(OSError) as saved:
        atomic_savez("a", {"x": np.arange(3)})
    assert saved.value.errno == opened.value.errno == errno.ELOOP
    assert os.path.islink("a") and os.readlink("a") == "b" and sorted(os.listdir(".")) == ["a", "b"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs")
def test_loading_a_path_that_is_not_a_regular_file_says_so(tmp_path):
    """A FIFO or /dev/null was reported as a checkpoint that does not exist."""
    fifo = str(tmp_path / "pipe.npz")
    os.mkfifo(fifo)
    for path in (fifo, os.devnull):
        for load in (PPO.load, load_policy):
            with pytest.raises(CheckpointError, match="is not a regular file"):
                load(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_policy(str(tmp_path / "none.npz"))


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="symbolic links")
def test_loading_a_link_to_nothing_or_a_loop_of_links_says_so(tmp_path):
    """A dangling link, or links in a loop, read as a checkpoint that does not exist (ls shows it)."""
    dangling, a, b = (str(tmp_path / n) for n in ("dangling.npz", "a.npz", "b.npz"))
    os.symlink(str(tmp_path / "gone.npz"), dangling)
    os.symlink(b, a)
    os.symlink(a, b)
    for path, target in ((dangling, str(tmp_path / "gone.npz")), (a, b)):
        for load in (PPO.load, load_policy):
            with pytest.raises(FileNotFoundError, match=re.escape(f"{path!r} is a symbolic link to nothing "
                                                                  f"(its target {target!r} does not exist")):
                load(path)


@pytest.mark.skipif(not hasattr(os, "fchown"), reason="POSIX owners")
def test_a_save_over_this_processs_own_file_changes_no_owner_and_needs_no_fchown(tmp_path, monkeypatch):
    """The owner is given back only where it differs from this process's (root saving a user's run);
    where os has no fchown, geteuid or getegid (Windows) the save goes on without them."""
    path = str(tmp_path / "m.npz")
    atomic_savez(path, {"a": np.arange(3)})
    chowned = []
    monkeypatch.setattr(os, "fchown", lambda *a: chowned.append(a))
    atomic_savez(path, {"a": np.arange(4)})
    assert chowned == []
    for name in ("fchown", "geteuid", "getegid"):
        monkeypatch.delattr(os, name)
    atomic_savez(path, {"a": np.arange(5)})
    with np.load(path) as z:
        np.testing.assert_array_equal(z["a"], np.arange(5))


def test_saving_onto_a_folder_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    written = []
    monkeypatch.setattr(np, "savez", lambda *a, **k: written.append(a))
    with pytest.raises(IsADirectoryError, match="is a folder: give a file path to write"):
        atomic_savez(str(tmp_path), {"a": np.arange(3)})
    assert written == [] and os.listdir(tmp_path) == []  # no temp file made, nothing serialised
    with pytest.raises(IsADirectoryError, match="is a folder"):  # a name ending in a separator
        atomic_savez(str(tmp_path / "x.npz") + os.sep, {"a": np.arange(3)})
    assert written == [] and os.listdir(tmp_path) == []  # no folder x.npz made either
    with pytest.raises(IsADirectoryError, match="is a folder"):
        PPO(PPOConfig(**TINY)).save(str(tmp_path))


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX file modes")
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_checkpoint_file_mode_follows_the_umask(tmp_path, umask):
    """The saved model gets what open() would give (0666 less the umask), and saving never sets the
    umask (which would race with other threads creating files)."""
    old = os.umask(umask)
    try:
        atomic_savez(str(tmp_path / "m.npz"), {"a": np.arange(3)})
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "m.npz").st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX file modes")
@pytest.mark.parametrize("mode", [0o600, 0o640, 0o444], ids=["0600", "0640", "0444"])
def test_a_replaced_file_keeps_its_mode_as_open_would(tmp_path, mode):
    """Saving over a file does what open(path, "wb") would: the file keeps its permission bits (a
    model kept private stays private), and where open() may not write it the save is refused before
    anything is written (a write-protected model is not replaced without a word). Root may write a
    0444 file, so there the save goes through and the mode stays."""
    path = tmp_path / "m.npz"
    atomic_savez(str(path), {"a": np.arange(3)})
    os.chmod(path, mode)
    try:
        with open(path, "r+b"):
            writeable = True
    except PermissionError:
        writeable = False
    if writeable:
        atomic_savez(str(path), {"a": np.arange(5)})
        expect = np.arange(5)
    else:
        with pytest.raises(PermissionError, match="is write-protected"):
            atomic_savez(str(path), {"a": np.arange(5)})
        expect = np.arange(3)
    assert os.stat(path).st_mode & 0o777 == mode
    with np.load(path) as z:
        np.testing.assert_array_equal(z["a"], expect)
    assert os.listdir(tmp_path) == ["m.npz"]


@pytest.mark.skipif(not hasattr(os, "fchown"), reason="POSIX file owners")
def test_a_replaced_file_keeps_its_owner_and_group_where_this_process_may_set_them(tmp_path, monkeypatch):
    """``sudo minippo train --resume`` of a user's run: the model.npz it writes stays the user's (it
    was root's, which the user could then neither replace nor delete in a folder of their own but
    not theirs to chmod). Where this process may not give the file back (not root, nor in its group),
    the save still goes through and the new file is this process's, as a new file is."""
    path = tmp_path / "m.npz"
    atomic_savez(str(path), {"a": np.arange(3)})
    if os.geteuid() == 0:  # root may give any file to anyone: the real thing
        os.chown(path, 12345, 23456)
        atomic_savez(str(path), {"a": np.arange(5)})
        st = os.stat(path)
        assert (st.st_uid, st.st_gid) == (12345, 23456)
        with np.load(path) as z:
            np.testing.assert_array_equal(z["a"], np.arange(5))
    # another owner, as os.stat reports it, and fchown refused (the OS's answer for a non-root user)
    real_stat, calls = os.stat, []

    def other_owner(p, *a, **k):
        st = real_stat(p, *a, **k)
        if os.fspath(p) != os.fspath(path):
            return st
        fields = list(st)
        fields[4], fields[5] = st.st_uid + 1, st.st_gid + 1  # st_uid, st_gid
        return os.stat_result(fields)

    def refused(fd, uid, gid):
        calls.append((uid, gid))
        raise PermissionError(1, "Operation not permitted (stand-in)")
    monkeypatch.setattr(os, "stat", other_owner)
    monkeypatch.setattr(os, "fchown", refused)
    mine = real_stat(path)
    atomic_savez(str(path), {"a": np.arange(7)})
    assert calls == [(mine.st_uid + 1, mine.st_gid + 1)]
    with np.load(path) as z:
        np.testing.assert_array_equal(z["a"], np.arange(7))
    assert os.listdir(tmp_path) == ["m.npz"]


def test_saving_over_a_file_this_process_may_not_write_is_refused(tmp_path, monkeypatch):
    """The refusal itself, on any user (root may write every file, so the OS's answer is stood in
    for): PermissionError naming the path, its mode and the fix, raised before anything is
    serialised or any temp file made; the old file is as it was."""
    path = tmp_path / "m.npz"
    atomic_savez(str(path), {"a": np.arange(3)})
    os.chmod(path, 0o444)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m, **k: False if m == os.W_OK else real_access(p, m, **k))
    written = []
    monkeypatch.setattr(np, "savez", lambda *a, **k: written.append(a))
    with pytest.raises(PermissionError, match=r"m\.npz' is write-protected \(mode 0444\): make it writeable "
                       r"\(chmod u\+w\) or save to another path"):
        atomic_savez(str(path), {"a": np.arange(5)})
    with pytest.raises(PermissionError, match="is write-protected"):
        PPO(PPOConfig(**TINY)).save(str(path))
    assert written == [] and os.listdir(tmp_path) == ["m.npz"]
    monkeypatch.undo()
    with np.load(path) as z:
        np.testing.assert_array_equal(z["a"], np.arange(3))


def test_saving_into_a_folder_this_process_may_not_write_names_the_folder(tmp_path, monkeypatch):
    """A save makes a temp file beside the target: where the folder refuses it, the error names the
    folder and why a file is made there, not the temp file's random name (the OS's refusal stood in
    for, as root may write every folder)."""
    real_open = os.open

    def refuse_temp(path, flags, *a, **k):
        if str(path).endswith(".tmp"):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", refuse_temp)
    with pytest.raises(PermissionError, match=rf"cannot create a file in folder {re.escape(repr(str(tmp_path)))} "
                       r"\(Permission denied\): a save writes a temporary file there, then renames it onto 'm\.npz'"):
        atomic_savez(str(tmp_path / "m.npz"), {"a": np.arange(3)})
    assert os.listdir(tmp_path) == []


def test_atomic_write_on_windows_waits_for_a_reader_to_let_go_of_the_file(tmp_path, monkeypatch):
    """Windows refuses os.replace onto a file another process holds open (a `minippo eval`, a virus
    scanner): the final save failed, and the run's training was lost. The rename is tried again over
    ~1.5 s there (the pauses patched in here); a file held longer fails the save as before, whole."""
    import minippo.checkpoint as ck

    monkeypatch.setattr(ck, "REPLACE_RETRY_PAUSES", (0.0, 0.0, 0.0))
    real_replace, refusals = os.replace, [2]

    def held_open(src, dst):
        if refusals[0] > 0:
            refusals[0] -= 1
            raise PermissionError(13, "Access is denied", dst)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", held_open)
    path = tmp_path / "m.bin"
    path.write_bytes(b"old")
    ck.atomic_write(str(path), lambda f: f.write(b"new"))  # refused twice, then let go
    assert path.read_bytes() == b"new" and refusals == [0]
    refusals[0] = 4  # held past the last pause: the save fails, the old file whole, no temp file left
    with pytest.raises(PermissionError):
        ck.atomic_write(str(path), lambda f: f.write(b"newer"))
    assert path.read_bytes() == b"new" and sorted(os.listdir(tmp_path)) == ["m.bin"]


def test_atomic_write_syncs_the_file_and_then_its_folder(tmp_path, monkeypatch):
    """fsync of the data before the rename, of the folder after it (so the rename survives a power
    loss); the umask is never touched."""
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.path.realpath(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else fd)
        real_fsync(fd)

    def no_umask(mask):
        raise AssertionError("atomic_savez set the umask")

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "umask", no_umask)
    path = tmp_path / "m.npz"
    atomic_savez(str(path), {"a": np.arange(3)})
    assert len(synced) == 2
    if os.path.exists("/proc/self/fd"):
        assert synced[0].startswith(str(path) + ".") and synced[0].endswith(".tmp")
        assert synced[1] == os.path.realpath(tmp_path)
    assert os.listdir(tmp_path) == ["m.npz"]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="symlinks")
def test_atomic_write_goes_where_the_os_resolves_the_path(tmp_path, monkeypatch):
    """'link/../m.npz' with link -> real/deep is real/m.npz for open() and np.load: the save lands
    there too (not where a textual clean-up of '..' would put it)."""
    (tmp_path / "real" / "deep").mkdir(parents=True)
    os.symlink(tmp_path / "real" / "deep", tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    atomic_savez(os.path.join("link", "..", "m.npz"), {"a": np.arange(3)})
    assert sorted(os.listdir(tmp_path / "real")) == ["deep", "m.npz"]
    assert not (tmp_path / "m.npz").exists()
    with np.load(os.path.join("link", "..", "m.npz")) as z:
        np.testing.assert_array_equal(z["a"], np.arange(3))


def test_check_save_path_refuses_what_a_save_would_fail_on(tmp_path):
    """What the examples check --out with before training (a save failing after it loses the model)."""
    from minippo.checkpoint import check_save_path

    (tmp_path / "file.txt").write_text("mine")
    for path, err, msg in ((tmp_path, IsADirectoryError, "is a folder: give a file path to write"),
                           (f"{tmp_path / 'nothing'}/", IsADirectoryError,
                            "nothing/' is a folder: give a file path to write"),
                           ("", IsADirectoryError, "path '' is empty"),
                           (tmp_path / "file.txt" / "m.npz", NotADirectoryError, "is a file, not a folder"),
                           (tmp_path / "file.txt" / "sub" / "m.npz", NotADirectoryError, "Not a directory")):
        with pytest.raises(err, match=msg):
            check_save_path(path)
    check_save_path(tmp_path / "new" / "m.npz")  # a missing folder is made, as the save makes it
    assert (tmp_path / "new").is_dir() and not (tmp_path / "new" / "m.npz").exists()
    check_save_path(tmp_path / "file.txt")  # an existing file this process may write: fine, untouched
    assert (tmp_path / "file.txt").read_text() == "mine"
    if hasattr(os, "mkfifo"):  # a save writes into a FIFO (atomic_write); one that reads it back cannot
        os.mkfifo(tmp_path / "pipe")
        check_save_path(tmp_path / "pipe")
        with pytest.raises(OSError, match="'.*pipe' is not a regular file .*: what is saved there cannot be loaded"):
            check_save_path(tmp_path / "pipe", reread=True)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs")
def test_atomic_write_onto_a_fifo_writes_into_it(tmp_path):
    """A FIFO (or a device: `minippo plot -o /dev/null` as root) was renamed over, and became a
    regular file; open(path, "wb") writes into it, and so does a save now."""
    import stat
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    # (a daemon: renamed over, the FIFO never gets a writer and its reader waits for ever)
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    atomic_savez(str(fifo), {"a": np.arange(3)})
    reader.join(timeout=30)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and os.listdir(tmp_path) == ["pipe"]  # no temp file either
    assert got and got[0].startswith(b"PK")  # the .npz went through the pipe


def test_checkpoints_with_the_old_ret_acc_array_still_load(tmp_path):
    """Checkpoints before session 11 saved the reward scaler's running returns (ret_acc); they are
    no longer saved (they restart with the envs) and an old file holding them loads as before."""
    good = str(tmp_path / "good.npz")
    PPO(PPOConfig(**TINY, norm_reward=True)).save(good)
    with np.load(good, allow_pickle=False) as z:
        assert "ret_acc" not in z.files

    def add(a, m):
        a["ret_acc"] = np.full(TINY.get("n_envs", 1), 3.0)

    old = _rewrite(good, tmp_path / "old.npz", add)
    algo = PPO.load(old)
    assert np.all(algo.reward_scaler.ret == 0)
    load_policy(old)


def _tamper(src, dst, drop=None, reshape=None):
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if drop:
        del arrays[drop]
    if reshape:
        arrays[reshape] = np.zeros((3, 3), np.float32)
    np.savez(dst, **arrays)


def _rewrite(src, dst, change):
    """Copy a checkpoint with ``change(arrays, meta)`` applied (both mutable)."""
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("meta")))
    meta = change(arrays, meta) or meta
    np.savez(dst, meta=np.array(json.dumps(meta)), **arrays)
    return str(dst)


def test_a_budget_saved_before_its_bound_loads_as_the_bound(tmp_path, capsys):
    """Until 2026-12-04 total_timesteps went up to 2**63 - 1 (sys.maxsize: train until stopped); the bound
    of 2**62 then made every such file unreadable, to acting too, and an override could not help (the
    saved config was checked first)."""
    from minippo.cli import main
    from minippo.config import MAX_TIMESTEPS

    good = str(tmp_path / "good.npz")
    algo = PPO(PPOConfig(**TINY))
    algo.learn()
    algo.save(good)
    for where in ("both", "config", "trainer"):
        def old(a, m, where=where):
            if where != "trainer":
                m["config"]["total_timesteps"] = 2**63 - 1
            if where != "config":
                m["total_timesteps"] = 2**63 - 1
        path = _rewrite(good, tmp_path / f"old_{where}.npz", old)
        with PPO.load(path) as again:  # (the trainer's budget is the config's where it is the one in range)
            assert again.total_timesteps == again.config.total_timesteps == (96 if where == "config" else MAX_TIMESTEPS)
            assert again.num_timesteps == 96 and again.iteration == algo.iteration
        with PPO.load(path, total_timesteps=160) as again:
            assert again.total_timesteps == 160
            again.learn()
            assert again.num_timesteps == 160
        load_policy(path)
    assert main(["eval", path, "--episodes", "1"]) == 0
    assert main(["train", "CartPole-v1", "--resume", path, "--timesteps", "128", "--out", str(tmp_path / "r"),
                 "--quiet"]) == 0
    assert PPO.load(str(tmp_path / "r" / "model.npz")).num_timesteps == 128
    capsys.readouterr()


def test_a_saved_log_std_outside_todays_range_loads_with_a_warning(tmp_path):
    """Files saved before 2026-11-30 allowed a log-std down to -20; one at -15 acted as -10 after loading
    (the forward pass clamps it), its sampled actions changed without a word."""
    import warnings

    good = str(tmp_path / "good.npz")
    PPO(PPOConfig(**{**TINY, "env_id": "Pendulum-v1"})).save(good)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (none for a log-std in range)
        PPO.load(good).close()
        load_policy(good)
    path = _rewrite(good, tmp_path / "old.npz", lambda a, m: a["param/log_std"].fill(-15.0))
    for load in (PPO.load, load_policy):
        with pytest.warns(UserWarning, match=r"old\.npz': its log_std holds -15, outside \[-10, 2\] \(an older "
                                             r"minippo's range\): the policy acts as if it were -10") as said:
            loaded = load(path)
        assert [w.filename for w in said] == [__file__]  # the caller's line, not minippo's (stacklevel)
        assert (np.asarray(loaded.policy.params["log_std"]) == -15.0).all()  # loaded as saved
        getattr(loaded, "close", lambda: None)()
    import contextlib
    import io

    from minippo.cli import main  # minippo eval: the CLI's own warning line, not Python's with its source line

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["eval", path, "--episodes", "1"]) == 0
    assert err.getvalue().startswith("minippo: warning: '") and "its log_std holds -15" in err.getvalue(), \
        err.getvalue()
    assert "UserWarning" not in err.getvalue()


def test_tampered_checkpoints_are_refused_by_both_loaders(tmp_path):
    good = str(tmp_path / "good.npz")
    PPO(PPOConfig(**TINY, norm_obs=True)).save(good)

    def retype(a, m):
        a["param/actor.W0"] = a["param/actor.W0"].astype(np.float64)

    def extra(a, m):
        a["param/bogus"] = np.zeros(2, np.float32)

    def bad_gamma(a, m):
        m["config"]["gamma"] = 2.0

    def no_hidden(a, m):
        del m["policy"]["hidden"]

    def neg_var(a, m):
        a["obs_rms.var"] = -a["obs_rms.var"]

    def no_var(a, m):
        del a["obs_rms.var"]

    cases = [(retype, "'param/actor.W0' is float64, the network is float32"),
             (extra, r"unexpected arrays \['param/bogus'\]"),
             (bad_gamma, r"the saved config is invalid: PPOConfig.gamma=2.0"),
             (no_hidden, r"policy description is missing \['hidden'\]"),
             (lambda a, m: [1, 2], "the 'meta' entry is not a JSON object"),
             (neg_var, "a variance is negative"),
             (no_var, "obs_rms.var is missing"),
             # the policy description and the config disagree: load_policy acted on the description
             (lambda a, m: m["policy"].update(activation="relu"),
              "the policy's activation 'relu' differs from the config's 'tanh'"),
             (lambda a, m: m["policy"].update(hidden=[8, 8]), r"the policy's hidden \[8, 8\] differs"),
             (lambda a, m: m["policy"].update(shared=True), "the policy's shared True differs"),
             (lambda a, m: m.update(format=True), "checkpoint format True, this minippo reads 1"),
             (lambda a, m: m.update(num_timesteps="abc"),
              r"meta's 'num_timesteps' must be an integer in \[0, 2\*\*63\), got 'abc'"),
             (lambda a, m: m.update(iteration=None),
              r"meta's 'iteration' must be an integer in \[0, 2\*\*63\), got None"),
             (lambda a, m: m.update(adam_t=-3), r"meta's 'adam_t' must be an integer in \[0, 2\*\*63\), got -3"),
             # accepted until the first Adam step: OverflowError: int too large to convert to float
             (lambda a, m: m.update(adam_t=10**400), "meta's 'adam_t' must be an integer in"),
             (lambda a, m: m.update(total_timesteps=1.5), "meta's 'total_timesteps' must be an integer"),
             (lambda a, m: m.update(beta="abc"), "meta's 'beta' must be a number >= 0, got 'abc'"),
             (lambda a, m: m.update(time_elapsed=-1.0),
              "meta's 'time_elapsed' must be a finite number of seconds >= 0, got -1.0"),
             (lambda a, m: m.update(time_elapsed="5"), "meta's 'time_elapsed' must be a finite number"),
             (lambda a, m: m.update(time_elapsed=True), "meta's 'time_elapsed' must be a finite number"),
             (lambda a, m: m.update(time_elapsed=float("inf")), "meta's 'time_elapsed' must be a finite number"),
             (lambda a, m: m.update(episode_returns=5), "meta's 'episode_returns' must be a list of finite"),
             (lambda a, m: m.update(episode_lengths=[1, None]), "meta's 'episode_lengths' must be a list"),
             # the rows a full disk kept out of progress.csv (written by the CLI's resume)
             (lambda a, m: m.update(unlogged_rows=5), "meta's 'unlogged_rows' must be a list of lists of strings"),
             (lambda a, m: m.update(unlogged_rows=[["1", 2.0]]), "meta's 'unlogged_rows' must be a list of lists"),
             (lambda a, m: m.update(unlogged_rows=["1,2"]), "meta's 'unlogged_rows' must be a list of lists"),
             (lambda a, m: a["param/critic.b0"].fill(np.nan), "'param/critic.b0' holds NaN or inf"),
             # each of the two must be an object on its own
             (lambda a, m: m.update(config=[m["config"]]), "meta's 'config' and 'policy' must be JSON objects"),
             (lambda a, m: m.update(policy="actor"), "meta's 'config' and 'policy' must be JSON objects"),
             # int64's range ends at 2**63 - 1 (accepted below)
             (lambda a, m: m.update(num_timesteps=2**63),
              r"meta's 'num_timesteps' must be an integer in \[0, 2\*\*63\), got 9223372036854775808"),
             # not a number: left alone by the clamp to today's range, refused by PPOConfig's own check
             (lambda a, m: m["config"].update(log_std_init="abc"),
              "the saved config is invalid: PPOConfig.log_std_init='abc' is invalid: must be a finite number")]
    for i, (change, msg) in enumerate(cases):
        path = _rewrite(good, tmp_path / f"bad{i}.npz", change)
        for load in (PPO.load, load_policy):
            with pytest.raises(CheckpointError, match=msg):
                load(path)
    for change in (lambda a, m: a["adam/v.actor.W0"].fill(-1.0), lambda a, m: a["adam/m.critic.b0"].fill(np.inf)):
        with pytest.raises(CheckpointError, match="Adam moments .* hold NaN, inf or .*negative values"):
            PPO.load(_rewrite(good, tmp_path / "bad_adam.npz", change))
    # moments without a step count (adam_t 0), as the fused step saved them where a Ctrl-C landed as its first
    # kernel returned: the moments of one step (loaded as t = 0, the next step's bias correction scaled m by 10)
    with PPO.load(_rewrite(good, tmp_path / "t0.npz", lambda a, m: a["adam/m.actor.W0"].fill(0.5))) as again:
        assert again.optimizer.t == 1 and (again.optimizer.m["actor.W0"] == 0.5).all()
    with PPO.load(good) as again:  # (all-zero moments at t = 0: a trainer saved before its first update)
        assert again.optimizer.t == 0
    for name in ("adam/m.bogus", "adam/w.actor.W0"):  # were ignored, where unexpected param/ arrays are refused
        def extra_adam(a, m, name=name):
            a[name] = np.zeros(2, np.float32)
        with pytest.raises(CheckpointError, match=rf"unexpected arrays \['{name}'\]: it belongs to another network"):
            PPO.load(_rewrite(good, tmp_path / "extra_adam.npz", extra_adam))
    with pytest.raises(CheckpointError, match=r"is missing Adam moments \['adam/v.critic.b1'\]$"):
        PPO.load(_rewrite(good, tmp_path / "no_adam_v.npz", lambda a, m: a.__delitem__("adam/v.critic.b1")))
    assert load_policy(tmp_path / "no_adam_v.npz").policy.obs_dim == 4  # (acting reads no Adam state)

    deep = tmp_path / "deep.npz"  # a RecursionError from json.loads used to escape as a traceback
    with np.load(good, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "meta"}
    np.savez(deep, meta=np.array("[" * 100_000 + "]" * 100_000), **arrays)
    for load in (PPO.load, load_policy):
        with pytest.raises(CheckpointError, match="the 'meta' entry is JSON nested too deep to read"):
            load(str(deep))

    # an OverflowError from numpy 2 used to escape as a traceback; numpy 1.x took -1 as 2**128 - 1, and
    # both took has_uint32 = 2
    for i, (key, value) in enumerate((("state", -1), ("inc", 2**128), ("has_uint32", 2), ("has_uint32", True),
                                      ("uinteger", -1), ("bit_generator", "MT19937"))):
        def rng_out_of_range(a, m, key=key, value=value):
            (m["rng"]["state"] if key in ("state", "inc") else m["rng"])[key] = value
        with pytest.raises(CheckpointError, match="meta's 'rng' is not a generator state: not a PCG64 state"):
            PPO.load(_rewrite(good, tmp_path / f"bad_rng{i}.npz", rng_out_of_range))
    big = _rewrite(good, tmp_path / "big.npz",
                   lambda a, m: m.update(num_timesteps=2**63 - 1, total_timesteps=2**63 - 1))
    assert PPO.load(big).num_timesteps == 2**63 - 1 and load_policy(big).policy is not None
    # ~1075 iterations of tiny KL halved beta to 0.0 before session 59 (~1024 of large KL doubled it to
    # inf), from where the rule never moved it: such a checkpoint resumes at the nearest beta kept now
    for saved, loaded in ((0.0, 5e-324), (float("inf"), 2.0**1023), (2.0**1023, 2.0**1023), (5e-324, 5e-324)):
        path = _rewrite(good, tmp_path / "beta.npz", lambda a, m, saved=saved: m.update(beta=saved))
        assert PPO.load(path).kl_coef.beta == loaded
    no_rng = _rewrite(good, tmp_path / "no_rng.npz", lambda a, m: m.pop("rng") and None)
    with pytest.raises(CheckpointError, match="meta is missing 'rng'"):
        PPO.load(no_rng)
    # Every format-1 save writes the trainer's state and every config field; one missing was read as a
    # default (Adam t = 0 under old moments, iteration 0, today's gamma) and resumed wrongly.
    for key in ("iteration", "total_timesteps", "adam_t", "beta", "episode_returns", "episode_lengths"):
        path = _rewrite(good, tmp_path / f"no_{key}.npz", lambda a, m, key=key: m.pop(key) and None)
        with pytest.raises(CheckpointError, match=rf"meta is missing \['{key}'\] \(the trainer's state"):
            PPO.load(path)
        assert load_policy(path).policy is not None  # the embedded loader needs none of it
    path = _rewrite(good, tmp_path / "no_gamma.npz", lambda a, m: m["config"].pop("gamma") and None)
    for load in (PPO.load, load_policy):
        with pytest.raises(CheckpointError, match=r"the saved config is missing \['gamma'\]"):
            load(path)
    from minippo.envs import make_vec_env

    # written before action dtypes and the [-10, 2] log-std range: still loads
    def older(a, m):
        m["config"]["log_std_init"] = -20.0
    for load in (PPO.load, load_policy):
        load(_rewrite(good, tmp_path / "older.npz", older))
    register_probe("minippo-test/Probe-v0", 8, action_space=gym.spaces.Box(-1, 1, (2,), np.float64))
    probe = PPO(PPOConfig(**TINY, env_id="minippo-test/Probe-v0"))
    probe.save(str(tmp_path / "box.npz"))
    old_box = _rewrite(tmp_path / "box.npz", tmp_path / "old_box.npz",
                       lambda a, m: m["policy"]["action_space"].pop("dtype") and None)
    assert PPO.load(old_box).policy.action_space.dtype == "float64"
    pendulum = make_vec_env("Pendulum-v1", 2, "sync", "same_step", {})  # a Box env for a Discrete policy
    with pytest.raises(ValueError, match="env is Pendulum-v1 but config.env_id='CartPole-v1'"):
        PPO.load(good, env=pendulum)  # the checkpoint would record the wrong env
    with pytest.raises(CheckpointError, match="the saved policy does not fit this env/config .*action_space"):
        PPO.load(good, env=pendulum, env_id="Pendulum-v1")


def test_bad_checkpoints_are_rejected_with_names(tmp_path):
    algo = PPO(PPOConfig(**TINY))
    good = str(tmp_path / "good.npz")
    algo.save(good)
    missing, shaped = str(tmp_path / "missing.npz"), str(tmp_path / "shaped.npz")
    _tamper(good, missing, drop="param/critic.W1")
    _tamper(good, shaped, reshape="param/actor.W0")
    with pytest.raises(CheckpointError, match="missing array 'param/critic.W1'"):
        PPO.load(missing)
    with pytest.raises(CheckpointError, match="missing array 'param/critic.W1'"):
        load_policy(missing)
    with pytest.raises(CheckpointError, match=r"'param/actor.W0' has shape \(3, 3\), expected \(4, 8\)"):
        PPO.load(shaped)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match="not a readable minippo checkpoint"):
        read_checkpoint(str(garbage))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_checkpoint(str(tmp_path / "nope.npz"))
    other = str(tmp_path / "other.npz")
    np.savez(other, x=np.zeros(2))
    with pytest.raises(CheckpointError, match="no 'meta' entry"):
        read_checkpoint(other)



def test_damaged_zip_structures_and_non_array_entries_are_checkpoint_errors(tmp_path):
    """One flipped bit in a zip's directory or an .npy header raised what zipfile or numpy raise for
    it (RuntimeError for the "encrypted" flag, NotImplementedError for a compression method,
    tokenize.TokenError for a header), a traceback in the CLI; a zip member that is not .npy came
    back as bytes and failed later with AttributeError; a string Adam array failed in np.isfinite."""
    import io
    import zipfile

    good = str(tmp_path / "good.npz")
    PPO(PPOConfig(**TINY, norm_obs=True)).save(good)
    with open(good, "rb") as f:
        data = f.read()
    cd = data.index(b"PK\x01\x02")  # the first entry of the zip's central directory

    def flipped(name, at, bits):
        d = bytearray(data)
        d[at] ^= bits
        (tmp_path / name).write_bytes(bytes(d))
        return str(tmp_path / name)

    header = data.index(b"'shape': (), }", data.index(b"'descr': '<U"))  # meta's .npy header (a str):
    damaged = {flipped("encrypted.npz", cd + 8, 1): "RuntimeError",  # general-purpose flag bit 0
               flipped("method.npz", cd + 10, 0x80): "NotImplementedError",  # compression method
               # "'shape': )),": numpy's header parser raises tokenize.TokenError on Python <= 3.11,
               # ValueError ("Cannot parse header") on 3.12+
               flipped("header.npz", header + 9, ord("(") ^ ord(")")): "(TokenError|ValueError)"}

    def replaced(name, member, payload):
        with zipfile.ZipFile(good) as zin, zipfile.ZipFile(tmp_path / name, "w") as zout:
            for info in zin.infolist():
                if info.filename == member + ".npy":
                    zout.writestr(member, payload)  # not .npy: NpzFile returns its bytes
                else:
                    zout.writestr(info, zin.read(info))
        return str(tmp_path / name)

    for path, raised in damaged.items():
        for load in (PPO.load, load_policy):
            with pytest.raises(CheckpointError, match=f"is not a readable minippo checkpoint \\(.npz\\): {raised}"):
                load(path)
    for member in ("param/actor.W0", "obs_rms.mean"):
        path = replaced("raw.npz", member, b"hello")
        for load in (PPO.load, load_policy):
            with pytest.raises(CheckpointError, match=rf"entries \['{member}'\] are not .npy arrays"):
                load(path)
    text = io.BytesIO()
    np.save(text, np.full((4, 8), "x"))  # the shape of adam/m.actor.W0, in strings
    path = _rewrite(good, tmp_path / "str_adam.npz", lambda a, m: a.update({"adam/m.actor.W0": np.full((4, 8), "x")}))
    with pytest.raises(CheckpointError, match=r"Adam m.actor.W0 is <U1 \(4, 8\), expected float32 \(4, 8\)"):
        PPO.load(path)


def test_both_loaders_take_the_normalisers_the_config_names(tmp_path):
    """load_policy normalised when obs_rms arrays were there, whatever the config said (a file without
    them but with norm_obs on deployed acting on raw observations, where PPO.load refused it), and
    PPO.load(path, norm_obs=False) dropped a trained model's statistics without a word."""
    good = str(tmp_path / "good.npz")
    PPO(PPOConfig(**TINY, norm_obs=True, norm_reward=True)).save(good)
    plain = str(tmp_path / "plain.npz")
    PPO(PPOConfig(**TINY)).save(plain)

    def drop(prefix):
        def change(a, m):
            for k in [k for k in a if k.startswith(prefix)]:
                del a[k]
        return change

    def add_from(prefix):
        with np.load(good, allow_pickle=False) as z:
            held = {k: z[k] for k in z.files if k.startswith(prefix)}
        return lambda a, m: a.update(held)

    for flag, prefix in (("norm_obs", "obs_rms"), ("norm_reward", "ret_rms")):
        path = _rewrite(good, tmp_path / f"no_{prefix}.npz", drop(prefix))
        for load in (PPO.load, load_policy):
            with pytest.raises(CheckpointError, match=rf"missing the {prefix} normaliser statistics \({flag} is on"):
                load(path)
        path = _rewrite(plain, tmp_path / f"extra_{prefix}.npz", add_from(prefix))
        for load in (PPO.load, load_policy):
            with pytest.raises(CheckpointError, match=rf"has {prefix} normaliser statistics \['{prefix}.count', "
                               rf"'{prefix}.mean', '{prefix}.var'\] but its config has {flag}=False"):
                load(path)
        with pytest.raises(ValueError, match=rf"{flag}=False cannot override the saved {flag}=True: the saved "
                           rf"network was trained with it \(and {prefix}'s statistics resume with it\)"):
            PPO.load(good, **{flag: False})
        with pytest.raises(ValueError, match=rf"{flag}=True cannot override the saved {flag}=False"):
            PPO.load(plain, **{flag: True})
    algo = PPO.load(good, norm_obs=True, norm_reward=True, total_timesteps=500)  # the saved values: taken
    assert algo.obs_norm is not None and algo.reward_scaler is not None and algo.total_timesteps == 500
    assert load_policy(good).obs_mean is not None and load_policy(plain).obs_mean is None


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="symlinks")
def test_a_save_follows_a_link_as_open_does(tmp_path, monkeypatch):
    """A save onto a link replaced the link with a file and left its target stale, while the
    permission check had looked at the target: now the target is replaced (as open(path, "wb")
    writes it) and the link stays. A dangling link's target is created."""
    monkeypatch.chdir(tmp_path)
    os.makedirs("runs/a")
    atomic_savez("runs/a/model.npz", {"a": np.arange(3)})
    os.chmod("runs/a/model.npz", 0o640)
    os.symlink("runs/a/model.npz", "latest.npz")
    atomic_savez("latest.npz", {"a": np.arange(4)})
    assert os.path.islink("latest.npz") and os.readlink("latest.npz") == "runs/a/model.npz"
    with np.load("runs/a/model.npz") as z:
        np.testing.assert_array_equal(z["a"], np.arange(4))
    assert os.stat("runs/a/model.npz").st_mode & 0o777 == 0o640
    assert sorted(os.listdir("runs/a")) == ["model.npz"] and sorted(os.listdir(".")) == ["latest.npz", "runs"]
    real_access = os.access  # a refusal names the path as given, not where it resolves (root writes all)
    monkeypatch.setattr(os, "access", lambda p, m, **k: False if m == os.W_OK else real_access(p, m, **k))
    with pytest.raises(PermissionError, match=r"^\[Errno 13\] path 'latest.npz' is write-protected \(mode 0640\)"):
        atomic_savez("latest.npz", {"a": np.arange(5)})
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    os.symlink("runs/b.npz", "dangling.npz")
    atomic_savez("dangling.npz", {"a": np.arange(5)})
    assert os.path.islink("dangling.npz") and os.path.isfile("runs/b.npz")


def test_a_save_takes_bytes_paths_and_the_longest_names(tmp_path, monkeypatch):
    """A bytes path (taken by the type check, and by loading) was formatted as "b'...'" into the temp
    name; a name within 17 bytes of the 255-byte limit made a temp name too long to create."""
    monkeypatch.chdir(tmp_path)
    algo = PPO(PPOConfig(**TINY))
    algo.save(b"bytes.npz")
    algo.save(os.fsencode(str(tmp_path / "abs.npz")))
    longest = "m" * 251 + ".npz"  # 255 bytes
    algo.save(longest)
    assert sorted(os.listdir(".")) == sorted(["abs.npz", "bytes.npz", longest])
    for path in (b"bytes.npz", longest):
        assert PPO.load(path).num_timesteps == 0
    made = []  # the temp names: <name>.<12 hex>.tmp while that fits in 255 bytes, else .<12 hex>.tmp
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, *a, **k: made.append(os.path.basename(p)) or real_open(p, *a, **k))
    for n in (238, 239):
        atomic_savez("m" * (n - 4) + ".npz", {"a": np.arange(3)})
    temps = [m for m in made if m.endswith(".tmp")]  # (the folder, opened to fsync it, is not one)
    assert [len(m) for m in temps] == [255, 17]
    assert temps[0].startswith("m" * 234 + ".npz.") and temps[1].startswith(".")


def test_nan_raises_before_any_update():
    # one minibatch holds the whole rollout, so that "before any update" does not depend on where the
    # permutation puts the NaN sample (with two, the other minibatch may be applied first, correctly)
    algo = PPO(PPOConfig(**{**TINY, "batch_size": 32}))
    algo.collect_rollout()
    algo.buffer.advantages[3, 1] = np.nan
    before = {k: v.copy() for k, v in algo.policy.params.items()}
    with pytest.raises(FloatingPointError, match="iteration 1: .*NaN"):  # progress.csv's first row is 1
        algo.update(0.0)
    for k, v in before.items():
        np.testing.assert_array_equal(algo.policy.params[k], v)


def test_bad_env_and_config_errors():
    with pytest.raises(ValueError, match="unknown env id 'NoSuchEnv-v9'"):
        PPO(PPOConfig(env_id="NoSuchEnv-v9"))
    # the message says where the id was looked for, and suggests ids sharing its first 4 letters
    from minippo.envs import check_env_id

    for env_id, msg in [
        # (the suggestions are gymnasium's ids, which a later gymnasium may add to)
        ("CartPol-v1", r"unknown env id 'CartPol-v1': not registered in gymnasium; did you mean [^?]*CartPole-v1"),
        ("json:CartPole-v9", r"unknown env id 'json:CartPole-v9': module 'json' did not register 'CartPole-v9'; "
                             r"did you mean [^?]*CartPole-v1"),
        ("Zzzz-v0", r"unknown env id 'Zzzz-v0': not registered in gymnasium$"),
        ("", r"unknown env id '': not registered in gymnasium$"),  # no suggestion: every id starts with ""
        ("json:", r"env id 'json:': a 'module:EnvId' id needs a module to import \(an absolute name, as "
                  r"'mypkg.envs'\) before the ':' and the id it registers after it$"),
        (".json:X-v0", r"env id '.json:X-v0': a 'module:EnvId' id needs a module to import"),  # was a TypeError
    ]:
        with pytest.raises(ValueError, match=msg):
            check_env_id(env_id)
    with pytest.raises(ValueError, match="unknown PPOConfig field"):
        PPO(PPOConfig(**TINY), not_a_field=1)
    with pytest.raises(ValueError, match="unknown preset 'Nope'"):
        preset("Nope")


def test_async_vector_env_matches_sync():
    # Subprocess envs step the same seeded envs: the run must be identical to the sync one.
    cfg = PPOConfig(**{**TINY, "total_timesteps": 64})
    assert json.dumps(_rows(cfg)) == json.dumps(_rows(cfg.replace(vector="async")))


def test_async_workers_ignore_ctrl_c_and_async_is_honoured_in_next_step_mode():
    """A terminal's Ctrl-C reaches every process of the group: a worker stopped by it broke the run the
    CLI was finishing to save (5 of 6 tries lost it). And vector="async" with next_step used to give
    CartPole's in-process numpy-vectorised env while config.json said async."""
    import signal

    from minippo.envs import make_vec_env

    # Python's own handler, whatever this process inherited: a shell's background job starts with
    # SIGINT ignored, and Python then leaves it so (CI run as `... &` failed the check below).
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _workers_ignore_ctrl_c()
    finally:
        signal.signal(signal.SIGINT, inherited)
    env = make_vec_env("CartPole-v1", 2, "sync", "next_step")
    assert type(env).__name__ != "AsyncVectorEnv"  # gymnasium's own vectorised CartPole
    env.close()


def _workers_ignore_ctrl_c():
    import signal
    import time

    from minippo.envs import make_vec_env

    group = os.getpgid(0)
    for autoreset in ("same_step", "next_step"):
        env = make_vec_env("CartPole-v1", 2, "async", autoreset)
        # not this process: AsyncVectorEnv makes one env here too (for the spaces), and Ctrl-C must
        # still stop a script that trains with vector="async"
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert os.getpgid(0) == group
        try:
            assert type(env).__name__ == "AsyncVectorEnv"
            env.reset(seed=0)
            # each worker in a process group of its own: a signal to this process's group misses them
            assert [os.getpgid(p.pid) for p in env.processes] == [p.pid for p in env.processes]
            for p in env.processes:
                os.kill(p.pid, signal.SIGINT)
            time.sleep(0.3)
            _, reward, *_ = env.step(np.zeros(2, dtype=np.int64))
            assert reward.tolist() == [1.0, 1.0]
        finally:
            env.close()


def test_loaded_policy_normalises_observations_as_training_did(tmp_path):
    """Policy.normalize (numpy-only deployment) repeats ObsNormalizer's formula with the saved
    statistics: bit for bit the same, also for a dimension of zero variance (its eps keeps the
    scale finite) and past the +-10 clip."""
    algo = PPO(PPOConfig(**TINY, norm_obs=True))
    algo.obs_norm.rms.mean[:] = [0.1, -2.0, 3.0, 0.0]
    algo.obs_norm.rms.var[:] = [0.0, 1e-12, 4.0, 1.0]
    path = str(tmp_path / "m.npz")
    algo.save(path)
    pol = load_policy(path)
    obs = np.array([[0.1, -2.0, 3.0, 0.0], [0.1 + 1e-5, -1.99, 50.0, -0.5], [-3.0, 7.0, -40.0, 1e6]], np.float32)
    want = algo.obs_norm(obs, update=False)
    got = pol.normalize(obs)
    assert np.isfinite(got).all() and got.dtype == want.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    assert np.abs(got).max() == 10.0


def test_saved_policy_runs_with_numpy_alone(tmp_path):
    """The embedded use: load and act with gymnasium, numba, cupy and matplotlib unavailable."""
    import subprocess
    import sys

    for env_id in ("CartPole-v1", "Pendulum-v1"):
        path = str(tmp_path / f"{env_id}.npz")
        PPO(PPOConfig(env_id=env_id, **TINY, norm_obs=True)).learn(32).save(path)
        code = (
            "import sys\n"
            "for m in ('gymnasium', 'numba', 'cupy', 'matplotlib'): sys.modules[m] = None\n"
            "import numpy as np\n"
            "from minippo import load_policy\n"
            f"p = load_policy({path!r})\n"
            "obs = np.zeros(p.policy.obs_dim, np.float32)\n"
            "print(p.predict(obs), p.predict(np.stack([obs, obs])).shape)\n"
        )
        env = {k: v for k, v in os.environ.items() if k != "MINIPPO_BACKEND"}  # the default: numpy
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
        assert r.returncode == 0, r.stderr
    assert "(2, 1)" in r.stdout  # Pendulum: one continuous action per row, clipped to the bounds


def test_schedules_follow_training_progress():
    rows = []
    cfg = PPOConfig(**TINY, learning_rate=1e-3, lr_schedule="linear", lr_end=1e-4, clip_eps=0.2,
                    clip_schedule="linear", ent_coef=0.01, ent_schedule="exponential", ent_end=0.001)
    PPO(cfg).learn(callback=rows.append)
    progress = [r["timesteps"] / 96 - 32 / 96 for r in rows]  # progress at the start of each iteration
    assert [r["lr"] for r in rows] == pytest.approx([1e-3 + (1e-4 - 1e-3) * p for p in progress], rel=1e-14, abs=0)
    assert [r["clip_eps"] for r in rows] == pytest.approx([0.2 * (1 - p) for p in progress], rel=1e-14, abs=0)
    assert [r["ent_coef"] for r in rows] == pytest.approx([0.01 * 0.1**p for p in progress], rel=1e-14, abs=0)


@pytest.mark.parametrize("objective, clip_vloss, logged", [("clip", False, True), ("kl_penalty", False, False),
                                                           ("surrogate", False, False), ("kl_penalty", True, True),
                                                           ("a2c", False, False)])
def test_clip_eps_is_logged_where_something_is_clipped(objective, clip_vloss, logged):
    """clip_eps was logged (and decayed) in runs that clip nothing, where clipfrac, kl and beta are
    blank when unused: a kl_penalty run's curve showed a clip range it never applied."""
    rows = []
    PPO(PPOConfig(**{**TINY, "n_epochs": 1}, objective=objective, clip_vloss=clip_vloss)).learn(callback=rows.append)
    assert all((r["clip_eps"] == 0.2) if logged else np.isnan(r["clip_eps"]) for r in rows)


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_temperature_keeps_the_ratio_exact(temperature):
    # The behaviour policy samples from softmax(logits / T) and the update evaluates the same
    # distribution, so before any step r_t(theta) = 1 exactly (logp == logp_old).
    algo = PPO(PPOConfig(**TINY, temperature=temperature))
    algo.collect_rollout()
    mb = next(algo.buffer.minibatches(16, np.random.default_rng(0)))
    logp, *_ = algo.policy.evaluate(mb["obs"], mb["actions"])
    from minippo import backend

    if backend.name == "numpy":
        np.testing.assert_array_equal(logp, mb["logp_old"])
    else:  # the fused numba act sums in another order (float32 tanh within 8 ulp): equal to rounding
        np.testing.assert_allclose(logp, mb["logp_old"], rtol=0, atol=1e-6)  # (measured 1.2e-7: 2 float32 ulp)


def test_evaluate_refuses_observations_of_another_shape_than_declared():
    """An env whose observations do not have the shape its space declares is refused, not flattened
    into a batch of one (evaluate_policy adds the batch axis in front, keeping every other axis)."""
    from minippo.policy import ActorCritic
    from minippo.spaces import Discrete

    class Liar(Probe):
        def _obs(self):
            return np.zeros((2, 1), np.float32)  # the space says (2,)

    pol = ActorCritic(2, Discrete(2), hidden=(4,))
    with pytest.raises(ValueError, match=r"obs must have shape \(2,\) or \(B, 2\), got \(2, 1\)"):  # (its own shape)
        evaluate_policy(pol, None, 1, env=Liar(), max_steps=3)


@pytest.fixture
def made_envs(monkeypatch):
    """The vector envs minippo makes from an env id in this test, in order."""
    import minippo.envs

    made, make = [], minippo.envs.make_vec_env

    def spy(*args, **kwargs):
        made.append(make(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(minippo.envs, "make_vec_env", spy)
    return made


def test_close_stops_the_env_ppo_made_and_leaves_a_given_one(made_envs, tmp_path):
    """PPO had no close(): an async env's worker processes lived as long as the model (and past an
    error, whose traceback kept it), then reported 'Exception ignored ... Bad file descriptor' at exit."""
    import multiprocessing

    with PPO(PPOConfig(**TINY, vector="async")) as algo:
        workers = list(made_envs[0].processes)
        assert all(p.is_alive() for p in workers)
        algo.learn()
    assert made_envs[0].closed
    for p in workers:
        p.join(10)
    assert not any(p.is_alive() for p in workers) and not set(workers) & set(multiprocessing.active_children())
    assert np.isfinite(algo.evaluate(1)["mean_return"])  # acting, evaluating and saving still work
    algo.save(str(tmp_path / "m.npz"))
    algo.close()  # twice: no error
    given = gym.make_vec("CartPole-v1", 2, vectorization_mode="sync")
    with PPO(PPOConfig(**TINY), env=given):
        pass
    assert not given.closed  # the caller's to close
    given.close()


@pytest.mark.parametrize("vector", ["sync", "async"])
def test_learn_after_close_is_refused_and_a_given_closed_env_too(vector, tmp_path):
    """After close() (a with-block's end), learn() on a sync env trained on the closed env and an async
    one raised gymnasium's ClosedEnvironmentError from inside the rollout: both refuse now, before the
    total changes, as does an env given to the trainer that its owner closed. save() + PPO.load() trains on."""
    with PPO(PPOConfig(**TINY, vector=vector)) as algo:
        algo.learn()
    steps, total = algo.num_timesteps, algo.total_timesteps
    for call in (lambda: algo.learn(2 * total), algo.collect_rollout):
        with pytest.raises(RuntimeError, match=r"env \('CartPole-v1', made from config.env_id\) was closed by "
                           r"close\(\).*save\(\) it and PPO.load\(\) the file"):
            call()
    assert (algo.num_timesteps, algo.total_timesteps) == (steps, total)
    assert algo.learn() is algo  # the total reached: nothing to train, closed or not (as before)
    algo.save(str(tmp_path / "m.npz"))
    with PPO.load(str(tmp_path / "m.npz")) as again:
        assert again.learn(2 * total).num_timesteps == 2 * total
    given = gym.make_vec("CartPole-v1", 2, vectorization_mode=vector)
    algo = PPO(PPOConfig(**TINY), env=given)
    algo.learn()
    given.close()
    with pytest.raises(RuntimeError, match=r"the env given to this PPO \('CartPole-v1'\) is closed: it cannot "
                       r"step again; save\(\) the model and PPO.load\(path, env=<a new env>\)"):
        algo.learn(2 * total)
    assert algo.num_timesteps == steps


@pytest.mark.filterwarnings("error")  # nor gymnasium's warning that it closes mid-step: that is the intent
def test_close_after_a_step_interrupted_mid_way_returns_and_stops_the_workers():
    """A Ctrl-C landing inside the async env's step_wait, after it had read some workers' results, left
    the env waiting on that step; close() (a with-block's exit, the CLI's second Ctrl-C) then waited for
    the results already read, without end (2 of 4 runs of a script interrupting learn())."""
    import threading

    algo = PPO(PPOConfig(**TINY, vector="async"))
    venv = algo.env.unwrapped
    venv.reset(seed=0)
    venv.step_async(np.zeros(2, dtype=np.int64))
    assert venv.parent_pipes[0].recv()[1]  # one worker's result read, the other's not: as the interrupt left it
    returned, raised = threading.Event(), []

    def close() -> None:
        try:
            algo.close()
        except BaseException as e:  # (the test says so, not a 30 s wait)
            raised.append(e)
        returned.set()

    threading.Thread(target=close, daemon=True).start()
    try:
        assert returned.wait(30), "close() hung on the interrupted step"
        assert not raised, raised
        for p in venv.processes:
            p.join(10)
        assert not any(p.is_alive() for p in venv.processes)
    finally:
        for p in venv.processes:  # (a hang leaves them running)
            if p.is_alive():
                p.terminate()


def test_an_async_step_waits_out_an_interrupted_wait_for_its_results(monkeypatch):
    """Windows interrupts a blocking pipe read on Ctrl-C (InterruptedError after the handler ran): the CLI's
    first Ctrl-C (finish the iteration, save) ended inside gymnasium's reads with a traceback, nothing saved.
    There the step first waits for every result, retrying an interrupted wait (emulated here: the first
    wait raises as Windows does), and then reads results that have arrived. Same steps as a sync env's."""
    import multiprocessing.connection as mc

    from minippo import envs

    calls = []
    real_wait = mc.wait

    def interrupted_once(objects, timeout=None):
        calls.append(len(objects))
        if len(calls) == 1:
            raise InterruptedError(4, "Interrupted function call")
        return real_wait(objects, timeout)

    monkeypatch.setattr(envs, "INTERRUPTIBLE_PIPE_READS", True)
    monkeypatch.setattr(mc, "wait", interrupted_once)
    env, ref = envs.make_vec_env("CartPole-v1", 2, "async"), envs.make_vec_env("CartPole-v1", 2, "sync")
    try:
        np.testing.assert_array_equal(env.reset(seed=0)[0], ref.reset(seed=0)[0])
        for t in range(30):
            a = np.array([t % 2, (t // 3) % 2])
            got, want = env.step(a), ref.step(a)
            for g, w in zip(got[:4], want[:4], strict=True):
                np.testing.assert_array_equal(g, w)
        assert calls[0] == 2 and len(calls) >= 31  # the interrupted wait retried; then one (or more) a step
        n = len(calls)
        with pytest.raises(gym.error.NoAsyncCallError):  # no step in flight: gymnasium's error, no wait
            env.step_wait()
        assert len(calls) == n
    finally:
        env.close()
        ref.close()


def test_async_workers_ignore_windows_ctrl_break_too():
    """Windows sends Ctrl-Break to every process on the console: workers that ignored only SIGINT died
    on it, and the run that train stops cleanly on Ctrl-Break lost its env mid-iteration (traceback, no
    save). A worker ignores SIGBREAK where the platform has it (stood in by SIGUSR2 here)."""
    import subprocess
    import sys

    code = ("import os, signal\n"
            "signal.SIGBREAK = signal.SIGUSR2\n"
            "from minippo.envs import _shield_worker\n"
            "_shield_worker(-1, None)  # as in a worker: not the main process\n"
            "print(*(signal.getsignal(s) is signal.SIG_IGN for s in (signal.SIGINT, signal.SIGUSR2)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "True"], out.stderr


def test_an_env_refused_or_a_checkpoint_refused_closes_the_env_made_for_it(made_envs, tmp_path):
    register_probe("minippo-test/Probe-v0", 8, observation_space=gym.spaces.Discrete(3))
    with pytest.raises(ValueError, match="observation space Discrete"):
        PPO(PPOConfig(env_id="minippo-test/Probe-v0", **TINY))
    assert made_envs[-1].closed
    path = str(tmp_path / "m.npz")
    PPO(PPOConfig(**TINY)).save(path)
    meta, arrays = read_checkpoint(path)
    arrays = {k: np.full_like(v, np.nan) if k.startswith("adam/m.") else v for k, v in arrays.items()}
    atomic_savez(path, {**arrays, "meta": np.array(json.dumps(meta))})
    with pytest.raises(CheckpointError, match="Adam moments"):
        PPO.load(path)
    assert made_envs[-1].closed and len(made_envs) == 3


def test_minippo_train_closes_its_env_also_when_training_stops(made_envs, tmp_path, capsys):
    from minippo.cli import main

    register_probe("minippo-test/Probe-v0", 8, nan_at=3)
    assert main(["train", "minippo-test/Probe-v0", "--timesteps", "64", "--n-envs", "2", "--set", "n_steps=16",
                 "--set", "batch_size=16", "--set", "hidden=[8]", "--out", str(tmp_path / "run"), "--quiet"]) == 1
    assert "non-finite observation" in capsys.readouterr().err and made_envs[-1].closed


def test_learn_to_a_total_already_reached_raises(tmp_path):
    """learn(1000) on a model that had run 2048 steps trained nothing, said nothing, and set
    total_timesteps below num_timesteps (saved so). A total counts the steps run: it must be above them."""
    algo = PPO(PPOConfig(**TINY)).learn()
    assert algo.num_timesteps == 96
    for total in (50, 96):
        with pytest.raises(ValueError, match=rf"^total_timesteps={total}: the model has already run 96 steps; "
                                             r"learn\(total\) trains up to that many steps in all, not that many "
                                             r"more: pass a total above 96$"):
            algo.learn(total)
    assert algo.total_timesteps == 96
    algo.learn()  # the total reached, no new one given: nothing to do, as before
    assert algo.learn(128).num_timesteps == 128


def test_total_timesteps_set_by_hand_is_checked_and_saves_a_loadable_file(tmp_path):
    """model.total_timesteps = "abc" / 1.5 / -5 was taken, and save() then wrote a file no load could read
    ("meta's 'total_timesteps' must be an integer"); a numpy int failed save() (not JSON). Refused now,
    naming the attribute and the allowed values; a numpy int and a whole float are taken as ints."""
    algo = PPO(PPOConfig(**TINY))
    for bad, error, allowed in (("abc", TypeError, ">= 1"), (1.5, TypeError, ">= 1"), (True, TypeError, ">= 1"),
                                (0, ValueError, ">= 1"), (-5, ValueError, ">= 1"),
                                (2**62 + 1, ValueError, "<= 2\\*\\*62")):
        with pytest.raises(error, match=rf"^total_timesteps must be .*{allowed}.*, got {re.escape(repr(bad))}$"):
            algo.total_timesteps = bad
    assert algo.total_timesteps == 96
    algo.total_timesteps = np.int64(64)
    assert type(algo.total_timesteps) is int and algo.learn().num_timesteps == 64
    algo.total_timesteps = 1e2
    algo.save(str(tmp_path / "m.npz"))
    assert PPO.load(str(tmp_path / "m.npz")).total_timesteps == 100
    # a meta saying 0 (no save writes it; a hand-edited file): the saved config's total, not a refusal
    meta, arrays = read_checkpoint(str(tmp_path / "m.npz"))
    meta["total_timesteps"] = 0
    atomic_savez(str(tmp_path / "zero.npz"), {**arrays, "meta": np.array(json.dumps(meta))})
    assert PPO.load(str(tmp_path / "zero.npz")).total_timesteps == 100


@pytest.mark.parametrize("change, error, message", [
    (lambda m: m.episode_returns.clear(), ValueError, r"'episode_lengths' must be one integer >= 1 per episode"),
    (lambda m: setattr(m, "num_timesteps", 0), ValueError, r"'iteration' 3 exceeds its 'num_timesteps' 0"),
    (lambda m: setattr(m, "num_timesteps", 1e4), ValueError, r"'num_timesteps' must be an integer .* got 10000\.0"),
    (lambda m: setattr(m, "time_elapsed", -1.0), ValueError, r"'time_elapsed' must be a finite number"),
    (lambda m: m.obs_norm.rms.var.__setitem__(0, -1.0), ValueError, r"obs_rms\.var: a variance is negative"),
    (lambda m: m.policy.params.__setitem__("critic.b0", m.policy.params["critic.b0"].astype(np.float64)),
     ValueError, r"array 'param/critic\.b0' is float64, the network is float32"),
    (lambda m: m.policy.params["actor.b0"].__setitem__(0, np.nan), ValueError, r"'param/actor\.b0' holds NaN"),
    (lambda m: setattr(m, "iteration", np.int64(3)), TypeError,
     r"^nothing written to .*: the trainer's iteration holds a numpy\.int64, not a Python number"),
    (lambda m: m.episode_returns.append(np.float32(1.0)), TypeError, r"episode_returns holds a numpy\.float32"),
    (lambda m: setattr(m, "rng", np.random.RandomState(0)), TypeError,
     r"^nothing written to .*: the trainer's rng must be a numpy Generator on PCG64 .* got RandomState$"),
    (lambda m: setattr(m, "rng", np.random.Generator(np.random.MT19937(0))), TypeError, r"a Generator on MT19937$"),
])
def test_save_refuses_a_state_no_loader_would_read_and_writes_nothing(tmp_path, change, error, message):
    """A trainer whose attributes were set by hand to what no load accepts (one episode list cleared,
    the step count reset below the iterations, statistics of the wrong type, a float64 parameter in a
    float32 network) was saved into a file both PPO.load and load_policy refused; numpy numbers and
    other generators failed inside json or numpy with no word of which attribute. save() runs the
    loaders' checks first now: an error naming the field, and no file (an older one is kept as it was)."""
    path = tmp_path / "m.npz"
    algo = PPO(PPOConfig(**TINY, norm_obs=True)).learn()
    algo.save(str(path))
    before = path.read_bytes()
    change(algo)
    with pytest.raises(error, match=message) as e:
        algo.save(str(path))
    if error is ValueError:
        assert str(e.value).endswith("nothing written: PPO.load would refuse the file (was an attribute of the "
                                     "trainer set by hand?)")
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["m.npz"]


def test_what_a_trainer_builds_from_its_config_is_fixed_and_beta_is_checked(tmp_path):
    """Set by hand, a schedule or kl_target acted until the next PPO.load, which built them from the
    saved config again; lr_schedule.kind = "cosine" ran as an exponential decay to 0 (nothing trained);
    obs_norm = None trained without normalising and saved a file no load read; obs_norm.clip = 0.5 was
    used but not saved (the loaded policy acted otherwise); kl_coef.beta = 0 switched the penalty off for
    good; kl_coef = 0.5 failed inside learn. The objects are fixed, their settings too, beta is checked."""
    from minippo.checkpoint import Policy

    algo = PPO(PPOConfig(**TINY, norm_obs=True, norm_reward=True, objective="kl_penalty"))
    for name in ("obs_norm", "reward_scaler", "kl_coef", "lr_schedule", "clip_schedule", "ent_schedule"):
        field = {"obs_norm": "norm_obs", "reward_scaler": "norm_reward"}.get(name)
        how = (rf"config\.{field} \(fixed for a trained network, as its statistics\): a new trainer, "
               rf"PPO\(config\.replace\({field}=\.\.\.\)\)$") if field else \
            r"the config: PPO\(config\.replace\(\.\.\.\)\), or PPO\.load\(path, \*\*overrides\) to resume$"
        with pytest.raises(AttributeError, match=rf"^PPO\.{name} is fixed at construction: it is built from {how}"):
            setattr(algo, name, None)
    for obj, owner, names in ((algo.obs_norm, "ObsNormalizer", ("clip", "eps")),
                              (algo.reward_scaler, "RewardScaler", ("gamma", "clip", "eps")),
                              (algo.lr_schedule, "Schedule", ("kind", "start", "end")),
                              (algo.kl_coef, "AdaptiveKL", ("kl_target",))):
        for name in names:
            before = getattr(obj, name)
            with pytest.raises(AttributeError, match=rf"^{owner}\.{name} is fixed at construction: "):
                setattr(obj, name, "cosine" if name == "kind" else 0.5)
            assert getattr(obj, name) == before
    for bad, error in ((0, ValueError), (-1.0, ValueError), (float("inf"), ValueError), ("1", TypeError)):
        with pytest.raises(error, match="beta must be"):
            algo.kl_coef.beta = bad
    algo.kl_coef.beta = np.float64(0.25)  # state: settable, kept as a Python float
    assert type(algo.kl_coef.beta) is float
    algo.learn()
    algo.save(str(tmp_path / "m.npz"))
    policy = load_policy(str(tmp_path / "m.npz"))
    with pytest.raises(AttributeError, match=r"^Policy\.obs_mean is fixed at construction: Policy\(policy, "):
        policy.obs_mean = np.zeros((5, 4))
    assert isinstance(policy, Policy) and policy.predict(np.zeros(4, np.float32)).shape == ()


def test_objects_with_fixed_settings_copy_and_read_pickles_from_before_the_properties(tmp_path):
    """Their settings moved to _name behind read-only properties: a pickle's __dict__ from before (plain
    names) loads, copies round-trip, and an augmented assignment that stores the same object back
    (policy.obs_mean -= shift, in place) is taken."""
    import copy
    import pickle

    algo = PPO(PPOConfig(**TINY, norm_obs=True, norm_reward=True)).learn()
    fields = {algo.obs_norm: ("clip", "eps"), algo.reward_scaler: ("gamma", "clip", "eps"),
              algo.lr_schedule: ("kind", "start", "end"), algo.kl_coef: ("kl_target", "beta"),
              algo.optimizer: ("lr", "betas", "eps", "t")}
    for obj, names in fields.items():
        values = [getattr(obj, n) for n in names]
        for clone in (copy.deepcopy(obj), pickle.loads(pickle.dumps(obj))):
            assert [getattr(clone, n) for n in names] == values
        state = obj.__getstate__() if hasattr(obj, "__getstate__") else obj.__dict__  # (object's: 3.11+)
        old = {(k[1:] if k[1:] in names else k): v for k, v in state.items()}  # as pickled before
        revived = object.__new__(type(obj))
        revived.__setstate__(old)
        assert [getattr(revived, n) for n in names] == values, type(obj).__name__
    algo.save(str(tmp_path / "m.npz"))
    policy = load_policy(str(tmp_path / "m.npz"))
    mean = policy.obs_mean
    policy.obs_mean -= 1.0  # in place, then stored back: the same array
    assert policy.obs_mean is mean


def test_learn_runs_whole_rollouts_ceil_of_the_total():
    """As learn()'s docstring and docs/derivations.md section 13 say: ceil(total / rollout) rollouts
    (Stable-Baselines3's count; CleanRL's is the floor), the last one past a total that is not a multiple."""
    rows = []
    algo = PPO(PPOConfig(**{**TINY, "total_timesteps": 97})).learn(callback=rows.append)  # rollouts of 32
    assert [r["timesteps"] for r in rows] == [32, 64, 96, 128] and algo.num_timesteps == 128


def test_a_trainer_refuses_to_run_on_a_backend_switched_under_it(numpy_backend, monkeypatch, tmp_path):
    """After MINIPPO_BACKEND changed and backend.reset(), a trainer built before ran the new backend's
    kernels: other rounding, and a checkpoint still naming the old backend (numpy's operations on a
    cupy trainer's arrays would fail somewhere inside). Its rollouts and updates refuse now; back on
    its own backend it goes on."""
    pytest.importorskip("numba")
    from minippo import backend

    algo = PPO(PPOConfig(**TINY))
    algo.learn(32)
    monkeypatch.setenv(backend.ENV_VAR, "numba")
    backend.reset()
    message = (r"this PPO was built on backend 'numpy', and MINIPPO_BACKEND now resolves to 'numba' \(after "
               r"backend.reset\(\)\): a trainer keeps its backend; build a new PPO, or PPO.load a checkpoint")
    for run in (lambda: algo.learn(64), algo.collect_rollout, lambda: algo.update(0.5)):
        with pytest.raises(RuntimeError, match=message):
            run()
    assert algo.num_timesteps == 32
    algo.save(str(tmp_path / "m.npz"))  # (saving runs no kernel: the file names the trainer's backend)
    assert PPO.load(str(tmp_path / "m.npz")).backend == "numba"  # a trainer built now is numba's
    monkeypatch.setenv(backend.ENV_VAR, "numpy")
    backend.reset()
    algo.learn(64)
    assert algo.num_timesteps == 64


class _ThreeSteps(gym.Env):
    """Episodes of exactly 3 steps (terminated), observation [t / 10]; the reward is NaN once, at the
    env-wide step ``_ThreeSteps.nan_at`` (counted over all instances), else 1."""

    steps = 0
    nan_at = -1

    def __init__(self):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        _ThreeSteps.steps += 1
        reward = np.nan if _ThreeSteps.steps == _ThreeSteps.nan_at else 1.0
        return np.array([self.t / 10], np.float32), reward, self.t == 3, False, {}


@pytest.mark.parametrize("autoreset", ["same_step", "next_step"])
@pytest.mark.parametrize("norm_reward", [False, True])
def test_a_rollout_that_raises_is_dropped_and_the_next_starts_from_a_reset(autoreset, norm_reward):
    """After an env's bad step (here a NaN reward on the step that ends sub-env 0's episode: raised
    after the envs had stepped), the trainer kept its last observation, one step behind the envs: the
    next rollout stored observations the envs were no longer at, merged episodes (recorded lengths 5 or
    6 where every episode is 3 steps long) and, in next_step mode, took the reset step for a real one; and
    update() trained on the buffer's rows of two rollouts. Now the rollout is dropped, update() refuses
    until one completes, and the next rollout starts from a seeded reset."""
    from minippo.ppo import NonFiniteEnvError

    mode = gym.vector.AutoresetMode.SAME_STEP if autoreset == "same_step" else gym.vector.AutoresetMode.NEXT_STEP
    venv = gym.vector.SyncVectorEnv([_ThreeSteps, _ThreeSteps], autoreset_mode=mode)
    _ThreeSteps.steps, _ThreeSteps.nan_at = 0, 2 * 3 - 1  # sub-env 0's third step: its episode's last
    algo = PPO(PPOConfig(env_id="CartPole-v1", n_envs=2, n_steps=8, batch_size=16, n_epochs=1, hidden=(8,),
                         autoreset=autoreset, norm_reward=norm_reward), env=venv)
    with pytest.raises(RuntimeError, match=r"^update\(\) needs a complete rollout"):
        algo.update(0.0)  # (a fresh trainer: nothing collected yet)
    with pytest.raises(NonFiniteEnvError, match="non-finite reward"):
        algo.collect_rollout()
    with pytest.raises(RuntimeError, match=r"^update\(\) needs a complete rollout"):
        algo.update(0.0)
    assert algo.num_timesteps == 2 * 2  # the steps that completed
    # the episodes in progress (2 steps each) are not carried into the next rollout
    assert algo._obs is None and not algo._ep_len.any() and not algo._ep_ret.any()
    if norm_reward:
        assert not algo.reward_scaler.ret.any()  # (was 1 + gamma in each env)
    for _ in range(3):
        algo.collect_rollout()
        algo.update(0.0)
    assert list(algo.episode_lengths) == [3] * len(algo.episode_lengths) and len(algo.episode_lengths) >= 10
    assert list(algo.episode_returns) == [3.0] * len(algo.episode_returns)
    # a fresh rollout after another drop starts at the reset observation in both envs
    _ThreeSteps.nan_at = _ThreeSteps.steps + 1
    with pytest.raises(NonFiniteEnvError):
        algo.collect_rollout()
    algo.collect_rollout()
    np.testing.assert_array_equal(algo.buffer.obs[0, :, 0], [0.0, 0.0])
    np.testing.assert_array_equal(algo.buffer.obs[:3, 0, 0], np.array([0.0, 0.1, 0.2], np.float32))  # (as stored)
    if norm_reward:  # its running returns restarted with the episodes: 8 steps from the reset, of 3-step episodes
        # same_step: the third episode's 2 steps, 1 + gamma; next_step: 3 + reset + 3 + reset, back at 0
        np.testing.assert_array_equal(algo.reward_scaler.ret, [1.0 + 0.99] * 2 if autoreset == "same_step" else [0, 0])
    venv.close()


def _interrupt_async(venv, call, at, results_read=0):
    """Make ``venv``'s ``call`` ("step_wait" or "reset_wait") raise KeyboardInterrupt at its ``at``-th
    call, after reading the first ``results_read`` workers' results (as gymnasium's wait, which reads
    them one by one, blocking on each, leaves them when a Ctrl-C lands in it)."""
    wait, calls = getattr(venv, call), []

    def interrupted(timeout=None):
        calls.append(timeout)
        if len(calls) == at:
            for pipe in venv.parent_pipes[:results_read]:
                pipe.recv()
            raise KeyboardInterrupt
        return wait(timeout)

    setattr(venv, call, interrupted)


def _interrupt_async_send(venv, command, at):
    """Make the ``at``-th ``command`` ("step" or "reset") sent to ``venv``'s second worker raise
    KeyboardInterrupt: gymnasium's step_async / reset_async has sent to the first worker and has not
    yet recorded the pending call (_state, set after the sends), where a Ctrl-C may land too."""
    real, sent = venv.parent_pipes[1], []

    class Pipe:
        def send(self, obj):
            if obj[0] == command:
                sent.append(obj)
                if len(sent) == at:
                    raise KeyboardInterrupt
            return real.send(obj)

        def __getattr__(self, name):
            return getattr(real, name)

    venv.parent_pipes[1] = Pipe()


@pytest.mark.parametrize("command, at", [("step", 3), ("reset", 1)])
def test_an_async_call_interrupted_as_it_sends_to_its_workers_is_not_taken_as_finished(made_envs, tmp_path,
                                                                                       command, at):
    """A Ctrl-C between the sends and the pending call's record left the env in its default state with
    the first worker's result unread: PPO took the env as fine, and the next learn() failed in its reset
    with gymnasium's "too many values to unpack" (it read the stale step result as the reset's). The env
    PPO made is now made again; a given one is refused, as one interrupted in its wait is."""
    algo = PPO(PPOConfig(**TINY, vector="async"))
    try:
        _interrupt_async_send(made_envs[0].unwrapped, command, at)
        with pytest.raises(KeyboardInterrupt):
            algo.collect_rollout()
        assert made_envs[0].closed
        algo.learn()
        assert algo.env is made_envs[1] and algo.num_timesteps == 96 + (2 * 2 if command == "step" else 0)
    finally:
        algo.close()
    venv = gym.make_vec("CartPole-v1", 2, vectorization_mode="async")
    algo = PPO(PPOConfig(**TINY, vector="async"), env=venv)
    try:
        _interrupt_async_send(venv.unwrapped, command, at)
        with pytest.raises(KeyboardInterrupt):
            algo.collect_rollout()
        with pytest.raises(RuntimeError, match=r"^the env given to this PPO was interrupted inside an async step or "
                                               r"reset \(as it sent to its workers\) .*env=<a new env>\)$"):
            algo.learn()
        assert not venv.closed
    finally:
        venv.close(terminate=True)


@pytest.mark.filterwarnings("ignore:.*ERROR:")  # (gymnasium's log of the worker's error)
@pytest.mark.parametrize("autoreset", ["same_step", "next_step"])
def test_an_async_env_whose_worker_raised_is_made_again_or_refused(made_envs, tmp_path, autoreset):
    """gymnasium shuts down the worker whose env raised (its pipe set to None) and leaves the env in its
    default state: PPO took it as fine, and the next learn() failed inside gymnasium ('NoneType' object
    has no attribute 'send'), where the README says the model goes on (session 68's audit). The env PPO
    made is made again; a given one is refused with what to do, and the model still saves."""
    from envs_for_tests import RAISE_ONCE_ID

    kwargs = {"flag": str(tmp_path / "owned"), "at": 5}
    algo = PPO(PPOConfig(**TINY, env_id=RAISE_ONCE_ID, env_kwargs=kwargs, vector="async", autoreset=autoreset))
    try:
        with pytest.raises(RuntimeError, match="env broke"):
            algo.learn()
        assert made_envs[0].closed
        algo.learn()
        assert algo.env is made_envs[1] and algo.num_timesteps == 96 + 2 * 4
    finally:
        algo.close()
    mode = gym.vector.AutoresetMode[autoreset.upper()]
    venv = gym.make_vec(RAISE_ONCE_ID, 2, vectorization_mode="async", vector_kwargs={"autoreset_mode": mode},
                        flag=str(tmp_path / "given"), at=5)
    algo = PPO(PPOConfig(**TINY, env_id=RAISE_ONCE_ID, vector="async", autoreset=autoreset), env=venv)
    try:
        with pytest.raises(RuntimeError, match="env broke"):
            algo.learn()
        for _ in range(2):
            with pytest.raises(RuntimeError, match=r"^the env given to this PPO lost the async worker\(s\) of "
                               r"sub-env\(s\) \[[01](, 1)?\] \(gymnasium shuts down a worker whose env raised\): "
                               r"it cannot step again; save the model and PPO.load\(path, env=<a new env>\)$"):
                algo.learn()
        assert not venv.closed and algo.num_timesteps == 2 * 4
        algo.save(tmp_path / "m.npz")
        again = PPO.load(tmp_path / "m.npz", env=gym.make_vec(RAISE_ONCE_ID, 2, vectorization_mode="sync",
                                                              vector_kwargs={"autoreset_mode": mode},
                                                              flag=str(tmp_path / "given"), at=5))
        again.learn()
        again.close()
    finally:
        venv.close(terminate=True)


def test_an_interrupt_in_an_env_with_a_state_of_its_own_is_not_taken_for_gymnasiums():
    """An env of one's own with a ``_state`` attribute that is not gymnasium's AsyncState (here an
    array) turned a Ctrl-C inside its step into AttributeError: 'numpy.ndarray' object has no
    attribute 'value', and the interrupt was lost."""
    venv = gym.make_vec("CartPole-v1", 2, vectorization_mode="sync")
    venv._state = np.zeros(3)
    step, calls = venv.step, []

    def interrupted(actions):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return step(actions)

    venv.step = interrupted
    algo = PPO(PPOConfig(**TINY), env=venv)
    try:
        with pytest.raises(KeyboardInterrupt):
            algo.collect_rollout()
        algo.learn()
        assert algo.num_timesteps == 96 + 2 * 2
    finally:
        algo.close()
        venv.close()


def test_an_exception_from_the_env_leaves_an_async_env_it_made_in_place(made_envs):
    """Only an interrupt (not an env's own exception) inside an async env's call makes PPO replace it:
    an exception from the env is the env's, whose state gymnasium keeps."""
    algo = PPO(PPOConfig(**TINY, vector="async"))
    try:
        step = algo.env.step
        calls = []

        def failing(actions):
            calls.append(1)
            if len(calls) == 2:
                raise ValueError("the env's own error")
            return step(actions)

        algo.env.step = failing
        with pytest.raises(ValueError, match="the env's own error"):
            algo.collect_rollout()
        algo.learn()
        assert len(made_envs) == 1 and not made_envs[0].closed
    finally:
        algo.close()


@pytest.mark.parametrize("call, at, results_read", [("step_wait", 3, 0), ("step_wait", 3, 1),
                                                    ("reset_wait", 1, 1)])
def test_an_async_rollout_interrupted_in_its_wait_goes_on_at_the_next_call(made_envs, call, at, results_read):
    """A Ctrl-C inside an async env's step_wait (or the rollout's first reset) left it waiting on that
    call: every later collect_rollout and learn raised gymnasium's AlreadyPendingCallError. The env PPO
    made is now closed (its workers stopped) and made again by the next rollout, which starts from a
    reset."""
    algo = PPO(PPOConfig(**TINY, vector="async"))
    try:
        old = made_envs[0]
        _interrupt_async(old.unwrapped, call, at, results_read)
        with pytest.raises(KeyboardInterrupt):
            algo.collect_rollout()
        assert old.closed and len(made_envs) == 1  # (made again by the next rollout)
        algo.learn()
        assert algo.env is made_envs[1] and not made_envs[1].closed
        assert algo.num_timesteps == 96 + (2 * 2 if call == "step_wait" else 0)
        assert np.isfinite(algo.buffer.returns).all()
    finally:
        algo.close()


def test_a_second_interrupt_in_the_cleanup_still_leaves_a_trainer_that_goes_on(made_envs, monkeypatch):
    """The trainer's state is cleared before the interrupted env is closed (which may wait, up to
    PENDING_CLOSE_TIMEOUT): a second Ctrl-C there left the stale observation behind; the next rollout
    finishes the recovery."""
    algo = PPO(PPOConfig(**TINY, vector="async"))
    try:
        _interrupt_async(made_envs[0].unwrapped, "step_wait", 3)
        close_env = algo._close_env
        monkeypatch.setattr(algo, "_close_env", lambda: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            algo.collect_rollout()
        assert algo._obs is None and not algo._ep_len.any() and not made_envs[0].closed
        monkeypatch.setattr(algo, "_close_env", close_env)
        algo.learn()
        assert made_envs[0].closed and algo.env is made_envs[1] and algo.num_timesteps == 96 + 2 * 2
    finally:
        algo.close()


def test_the_interrupted_env_is_made_again_at_the_next_rollout_not_on_the_way_out(made_envs, monkeypatch):
    """The interrupted env is closed at once (its workers stopped) but made again only by the next
    rollout: a script stopped by Ctrl-C starts no new workers on its way out. A Ctrl-C while it is made
    again leaves that to the rollout after (before, the closed env stayed in place, in its default
    state: every later rollout raised ClosedEnvironmentError)."""
    import minippo.envs

    algo = PPO(PPOConfig(**TINY, vector="async"))
    try:
        _interrupt_async(made_envs[0].unwrapped, "step_wait", 3)
        with pytest.raises(KeyboardInterrupt):
            algo.collect_rollout()
        assert made_envs[0].closed and algo.env is made_envs[0] and len(made_envs) == 1
        make = minippo.envs.make_vec_env
        monkeypatch.setattr(minippo.envs, "make_vec_env", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            algo.collect_rollout()
        monkeypatch.setattr(minippo.envs, "make_vec_env", make)  # (the fixture's spy)
        algo.learn()
        assert algo.env is made_envs[1] and algo.num_timesteps == 96 + 2 * 2
    finally:
        algo.close()


def test_an_async_env_given_to_ppo_and_interrupted_mid_step_is_refused_with_what_to_do(tmp_path):
    """An env given as PPO(config, env=...) is its owner's: PPO does not close or replace it. Interrupted
    mid-step, its pipes cannot be trusted (results partly read), so later rollouts refuse it by name."""
    venv = gym.make_vec("CartPole-v1", 2, vectorization_mode="async")
    algo = PPO(PPOConfig(**TINY, vector="async"), env=venv)
    try:
        _interrupt_async(venv.unwrapped, "step_wait", 3, 1)
        with pytest.raises(KeyboardInterrupt):
            algo.collect_rollout()
        for _ in range(2):
            with pytest.raises(RuntimeError, match=r"^the env given to this PPO was interrupted inside an async "
                                                   r"step .*PPO\.load\(path, env=<a new env>\)$"):
                algo.learn()
        assert not venv.closed
        algo.save(str(tmp_path / "m.npz"))
        with PPO.load(str(tmp_path / "m.npz"), env=gym.make_vec("CartPole-v1", 2, vectorization_mode="sync")) as again:
            again.learn()
            again.env.close()
    finally:
        import warnings

        with warnings.catch_warnings():  # (gymnasium's warning that it closes mid-step: this is the intent)
            warnings.filterwarnings("ignore", message=".*while waiting for a pending call")
            venv.close(terminate=True)


def test_a_trainers_policy_cannot_be_replaced_and_the_trainer_cannot_be_copied():
    """m2.policy = m1.policy made m2 act and take gradients on m1's policy while its Adam updated its
    old arrays: learn() ran and trained nothing. copy.copy shared the policy, Adam, RNG, env and buffer
    with counters that then went apart; deepcopy and pickle failed with "cannot pickle 'module' object"."""
    import copy
    import pickle

    m1, m2 = PPO(PPOConfig(**TINY)), PPO(PPOConfig(**TINY))
    try:
        with pytest.raises(AttributeError, match=r"^PPO\.policy is fixed at construction: Adam and the fused "
                                                 r"kernels update its arrays: copy parameters into it"):
            m2.policy = m1.policy
        assert m2.policy is not m1.policy and m2.optimizer.params is m2.policy.params
        for k, p in m1.policy.params.items():  # what the message offers works
            m2.policy.params[k][...] = p
        before = {k: p.copy() for k, p in m2.policy.params.items()}
        m2.learn()
        assert any(not np.array_equal(before[k], p) for k, p in m2.policy.params.items())
        for how in (copy.copy, copy.deepcopy, pickle.dumps):
            with pytest.raises(TypeError, match=r"^a PPO trainer cannot be copied or pickled .* save\(\) it and "
                                                r"PPO\.load\(\) the file .* copy\.deepcopy\(model\.policy\)"):
                how(m1)
        twin = copy.deepcopy(m1.policy)
        obs = np.zeros((3, 4), np.float32)
        np.testing.assert_array_equal(twin.forward(obs)[1], m1.policy.forward(obs)[1])
    finally:
        m1.close()
        m2.close()


def test_a_parameter_rebound_by_hand_is_the_one_trained_saved_and_loaded(tmp_path):
    """model.policy.params["actor.W0"] = copy froze that layer (the actor computed with the old array)
    while Adam moved, and save() wrote, the copy: the loaded policy then disagreed with the trainer on 1 in
    10 CartPole actions. The name is rebound in the MLP too now; an optimiser cannot be swapped in."""
    from minippo.optim import Adam

    obs = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    with PPO(PPOConfig(**TINY, learning_rate=0.05)) as algo:
        algo.policy.params["actor.W0"] = algo.policy.params["actor.W0"].copy()
        start = algo.policy.actor.params["W0"].copy()
        algo.learn()
        assert not np.array_equal(algo.policy.actor.params["W0"], start)  # trained
        algo.save(str(tmp_path / "m.npz"))
        np.testing.assert_array_equal(load_policy(str(tmp_path / "m.npz")).predict(obs), algo.predict(obs))
        with pytest.raises(AttributeError, match=r"^PPO\.optimizer is fixed at construction: .*lr_schedule "
                                                 r"\(PPO\.load\(path, learning_rate=\.\.\.\)"):
            algo.optimizer = Adam(algo.policy.params)


def test_a_trainers_env_cannot_be_replaced(tmp_path):
    """model.env = other was taken: the next rollout went on from the old env's last observation and
    episode counters in the new env, and close() closed the caller's env as if PPO had made it.
    Refused now, naming what works: save() and PPO.load(path, env=...)."""
    other = gym.make_vec("CartPole-v1", 2, vectorization_mode="sync")
    with PPO(PPOConfig(**TINY)) as algo:
        algo.learn()
        made = algo.env
        with pytest.raises(AttributeError, match=r"^PPO\.env is fixed at construction: .* save\(\) the model "
                                                 r"and PPO\.load\(path, env=<the env>\)$"):
            algo.env = other
        assert algo.env is made
        algo.save(str(tmp_path / "m.npz"))
    assert made.closed and not other.closed
    resumed = PPO.load(str(tmp_path / "m.npz"), env=other)
    assert resumed.env is other and resumed.learn(128).num_timesteps == 128
    other.close()


def test_a_refused_callback_leaves_the_total_as_it_was():
    """learn(1_000_000, callback="print") raised TypeError but had set the budget to 1,000,000 first
    (saved so)."""
    algo = PPO(PPOConfig(**TINY))
    with pytest.raises(TypeError, match="callback must be a function"):
        algo.learn(1_000_000, callback="print")
    assert algo.total_timesteps == 96


def test_trainers_built_at_once_in_two_threads_both_get_their_env():
    """gymnasium imports an env's module at its first make; two threads doing so at once (CartPole and
    Pendulum, both in gymnasium.envs.classic_control) were each handed a half-initialised module:
    ImportError or KeyError in 5 of 5 fresh processes. minippo makes its envs one at a time. A fresh
    process each try: the race is at the first import only."""
    import subprocess
    import sys

    code = ("import threading\n"
            "from minippo import PPO\n"
            "from minippo.config import PPOConfig\n"
            "errors, ready = [], threading.Barrier(2)\n"
            "def build(env_id):\n"
            "    ready.wait()\n"
            "    try:\n"
            "        PPO(PPOConfig(env_id=env_id, n_envs=2, n_steps=16, batch_size=32)).close()\n"
            "    except Exception as e:\n"
            "        errors.append(repr(e))\n"
            "threads = [threading.Thread(target=build, args=(i,)) for i in ('CartPole-v1', 'Pendulum-v1')]\n"
            "[t.start() for t in threads]\n"
            "[t.join() for t in threads]\n"
            "print(errors)")
    env = {**os.environ, "MINIPPO_BACKEND": "numpy"}
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
        assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_spaces_of_a_subclass_of_box_or_discrete_are_taken_as_theirs():
    """gymnasium's spaces were matched by the exact class name: a subclass of Box was refused as "not
    supported: minippo takes 1-D Box observations" (naming a Box), and as an action space."""
    from minippo.spaces import as_space

    class MyBox(gym.spaces.Box):
        pass

    class MyDiscrete(gym.spaces.Discrete):
        pass

    assert as_space(MyDiscrete(3, start=-1)).to_dict() == {"kind": "discrete", "n": 3, "start": -1}
    assert as_space(MyBox(-1.0, 1.0, (2,), np.float32)).to_dict()["kind"] == "box"
    for action_space in (MyBox(-1.0, 1.0, (2,), np.float32), MyDiscrete(3)):
        env = gym.vector.SyncVectorEnv([lambda a=action_space: Probe(MyBox(-1.0, 1.0, (3,), np.float32), a, value=0.0)]
                                       * 2)
        model = PPO(PPOConfig(n_envs=2, n_steps=8, batch_size=16, n_epochs=1, hidden=(4,)), env=env)
        assert model.obs_dim == 3
        model.learn(16)
        model.close()


@pytest.mark.parametrize("shape", [(2, 2), ()])
def test_a_box_action_space_that_is_not_1d_is_refused_by_name(shape):
    """A 2-D (or 0-d) Box action space was refused as "Box action spaces must be 1-D, got shape (2, 2)",
    naming neither the space nor a way on (the observation space's refusal does both)."""
    env = gym.vector.SyncVectorEnv([lambda: Probe(action_space=gym.spaces.Box(-1.0, 1.0, shape, np.float32))] * 2)
    with pytest.raises(ValueError, match=re.escape(
            f"action space Box(-1.0, 1.0, {shape}, float32) is not supported: minippo takes Discrete or 1-D Box "
            f"actions, got a Box of shape {shape}; give the env a 1-D Box action space with a gymnasium.ActionWrapper "
            "of your own (its action() reshapes the vector back)")):
        PPO(PPOConfig(n_envs=2, n_steps=8, batch_size=16), env=env)
    env.close()


def test_evaluation_sends_box_actions_in_the_env_s_dtype_and_checks_observations(tmp_path):
    """A float64-Box policy evaluated in an env of the same bounds in float32 sent float64 actions, which
    the env's action_space.contains refuses; observations past the policy's float32 range went unnamed
    through model.evaluate (an overflow warning, then "the policy's output contains NaN or inf")."""
    Probe.log.clear()
    env64 = gym.vector.SyncVectorEnv([lambda: Probe(action_space=gym.spaces.Box(-1.0, 1.0, (2,), np.float64),
                                                    value=0.0)] * 2)
    model = PPO(PPOConfig(n_envs=2, n_steps=8, batch_size=16, n_epochs=1, hidden=(4,)), env=env64)
    model.learn(16)
    assert all(Probe.log)
    Probe.log.clear()
    one32 = gym.wrappers.TimeLimit(Probe(action_space=gym.spaces.Box(-1.0, 1.0, (2,), np.float32), value=0.0), 3)
    model.evaluate(1, env=one32)
    path = str(tmp_path / "m.npz")
    model.save(path)
    evaluate_policy(load_policy(path), None, 1, env=one32)
    assert len(Probe.log) == 6 and all(Probe.log)  # every action in the float32 space
    big = gym.wrappers.TimeLimit(Probe(gym.spaces.Box(-np.inf, np.inf, (2,), np.float64), gym.spaces.Box(
        -1.0, 1.0, (2,), np.float64), value=1e300, nan_at=0), 3)
    with pytest.raises(ValueError, match="obs holds values beyond the policy's float32 range"):
        model.evaluate(1, env=big)
    model.close()


@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_update_takes_progress_in_zero_to_one_and_names_it(schedule):
    """update(progress) drives the schedules; learn() passes steps run / total, in [0, 1). Outside [0, 1]
    (or NaN, or not a number), and at 1 where a linear clip schedule reaches a clip range of 0, it
    raises naming progress, before any step (it said "clip_eps must be a finite number > 0, got 0.0",
    a setting the caller never gave, or clamped the rest silently)."""
    cfg = PPOConfig(env_id="CartPole-v1", n_envs=2, n_steps=8, batch_size=8, n_epochs=1, hidden=(8,),
                    clip_schedule=schedule, total_timesteps=10**6)
    with PPO(cfg) as model:
        model.collect_rollout()
        before = {k: np.array(v) for k, v in model.policy.params.items()}
        bad = [-0.1, 1.5, float("nan"), float("inf")] + ([1.0] if schedule == "linear" else [])
        for progress in bad:
            with pytest.raises(ValueError, match="progress"):
                model.update(progress)
        with pytest.raises(TypeError, match="progress"):
            model.update("0.5")
        assert all(np.array_equal(v, before[k]) for k, v in model.policy.params.items())
        model.update(0.0)
        if schedule == "constant":
            model.update(1.0)
