"""Training on an env of your own (no gymnasium id, no gymnasium at all): the vector-env interface of
examples/own_env.py, and what the model records about such an env."""

import importlib.util
import json
import os
import re

import numpy as np
import pytest

from minippo import PPO, load_policy
from minippo.checkpoint import Policy, evaluate_policy
from minippo.cli import main
from minippo.config import PPOConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("own_env", os.path.join(ROOT, "examples", "own_env.py"))
own_env = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(own_env)

CFG = dict(n_envs=2, n_steps=32, batch_size=32, n_epochs=1, hidden=(8,))


def test_a_given_env_without_an_id_is_recorded_as_its_class_and_never_remade_from_config_env_id(tmp_path):
    model = PPO(PPOConfig(**CFG, autoreset="next_step"), env=own_env.Reach(2))  # env_id: CartPole-v1 default
    assert model.custom_env == "Reach" and model.env_name == "Reach"
    assert model.config.autoreset == "same_step"  # the env's own mode, recorded: it was the one used
    model.learn(64)
    with pytest.raises(ValueError, match=r"this model trains on Reach, given as PPO\(config, env=...\), not made "
                                         r"from config.env_id='CartPole-v1': pass a single env as evaluate"):
        model.evaluate()  # it once played CartPole-v1 here, an env the model never saw
    assert model.evaluate(2, env=own_env.OneReach())["episodes"] == 2  # (OneReach has no spec attribute)
    path = str(tmp_path / "m.npz")
    model.save(path)
    with pytest.raises(ValueError, match=r"was trained on Reach, given as PPO\(config, env=...\), not made from "
                                         r"config.env_id='CartPole-v1': pass the env again"):
        PPO.load(path)
    resumed = PPO.load(path, env=own_env.Reach(2))
    assert resumed.num_timesteps == 64 and resumed.custom_env == "Reach"
    policy = load_policy(path)
    assert policy.custom_env == "Reach"
    res = evaluate_policy(policy, None, 2, env=own_env.OneReach())
    assert res["env_id"] == "OneReach" and len(res["returns"]) == 2

    class Duck:  # evaluate_policy plays any object with predict, obs_dim and action_space
        obs_dim, action_space = 2, policy.policy.action_space

        def predict(self, obs, deterministic=True, rng=None):
            return 2

    assert evaluate_policy(Duck(), None, 1, env=own_env.OneReach())["episodes"] == 1


def test_minippo_eval_refuses_a_model_of_a_custom_env(tmp_path, capsys):
    model = PPO(PPOConfig(**CFG), env=own_env.Reach(2))
    path = str(tmp_path / "m.npz")
    model.save(path)
    assert main(["eval", path]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was trained on Reach, an env given as PPO(config, env=...), which minippo " \
        "eval cannot make" in err


def test_an_env_registered_with_gymnasium_is_not_custom():
    gym = pytest.importorskip("gymnasium")
    env = gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync",
                       vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
    model = PPO(PPOConfig(**CFG, autoreset="next_step"), env=env)
    assert model.custom_env is None and model.env_name == "CartPole-v1"
    assert model.config.autoreset == "same_step"
    env.close()


def test_a_vector_env_built_from_gymnasium_envs_takes_their_id():
    gym = pytest.importorskip("gymnasium")
    from gymnasium.wrappers.vector import RecordEpisodeStatistics

    # SyncVectorEnv([...]) built directly (CleanRL's way) has no spec of its own: its sub-envs' id is its id
    env = RecordEpisodeStatistics(gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 2))
    model = PPO(PPOConfig(**CFG), env=env)
    assert model.custom_env is None and model.env_name == "CartPole-v1"
    assert model.evaluate(1)["env_id"] == "CartPole-v1"
    with pytest.raises(ValueError, match=r"env is CartPole-v1 but config.env_id='Acrobot-v1'"):
        PPO(PPOConfig(**CFG, env_id="Acrobot-v1"), env=env)
    env.close()


def test_a_same_step_env_without_final_obs_is_named():
    class NoFinal(own_env.Reach):
        def step(self, actions):
            obs, r, term, trunc, info = super().step(actions)
            info.pop("final_obs", None)
            return obs, r, term, trunc, info

    model = PPO(PPOConfig(**CFG), env=NoFinal(2))
    with pytest.raises(ValueError, match=r"env NoFinal ended an episode in SAME_STEP autoreset mode \(its "
                                         r"metadata\['autoreset_mode'\]\) without info\['final_obs'\]"):
        model.learn(64)


def test_an_object_that_is_no_vector_env_is_told_the_interface():
    with pytest.raises(TypeError, match=r"env must be a vector env: gymnasium's .* or your own with num_envs, "
                                        r"single_observation_space, single_action_space"):
        PPO(PPOConfig(**CFG), env=own_env.OneReach())


def test_one_gymnasium_env_and_the_wrong_number_of_sub_envs_are_told_the_fix():
    gym = pytest.importorskip("gymnasium")
    # one gymnasium env, as Stable-Baselines3 takes it: how to make the vector env, which then trains
    with pytest.raises(TypeError, match=r"got TimeLimit \(one env, as Stable-Baselines3 takes it: "
                                        r"gym.vector.SyncVectorEnv\(\[make_one\] \* 2\) makes the vector env"):
        PPO(PPOConfig(**CFG), env=gym.make("CartPole-v1"))
    with PPO(PPOConfig(**CFG), env=gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 2)) as model:
        model.learn(64)
    # the vector env has other sub-envs than the config: the message says which n_envs to give
    with pytest.raises(ValueError, match=r"env has 3 sub-envs but config.n_envs=2 \(give the config n_envs=3, or "
                                         r"PPO.load\(path, env=..., n_envs=3\)\)"):
        PPO(PPOConfig(**CFG), env=gym.make_vec("CartPole-v1", num_envs=3, vectorization_mode="sync"))


def test_a_checkpoint_from_another_version_names_both_versions(tmp_path):
    import minippo
    from minippo.checkpoint import CheckpointError

    model = PPO(PPOConfig(**CFG), env=own_env.Reach(2))
    path = str(tmp_path / "m.npz")
    model.save(path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    meta["minippo"], meta["config"]["some_new_field"] = "9.9.9", 1
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError, match=rf"the saved config is invalid \(saved by minippo 9.9.9, this is "
                                              rf"{minippo.__version__}\): .*some_new_field"):
        load_policy(path)


def test_the_surrogate_takes_every_epoch_against_the_rollouts_own_log_probs(numpy_backend, monkeypatch):
    """The importance-sampled rungs reuse one rollout for n_epochs: every epoch's logp_old is the rollout's
    (never refreshed), every sample is seen once per epoch, and only the very first minibatch has ratio 1."""
    from minippo import losses

    calls = []
    real = losses.surrogate_objective

    def spy(logp, logp_old, adv):
        calls.append((np.array(logp), np.array(logp_old)))
        return real(logp, logp_old, adv)

    monkeypatch.setattr(losses, "surrogate_objective", spy)
    model = PPO(PPOConfig(**{**CFG, "n_steps": 16, "batch_size": 8, "n_epochs": 3}, objective="surrogate"),
                env=own_env.Reach(2))
    model.collect_rollout()
    rollout_logp = np.sort(model.buffer.logp.ravel())
    model.update(0.0)
    assert len(calls) == 3 * 4  # n_epochs x minibatches of 8 out of 2 x 16
    for epoch in range(3):
        seen = np.sort(np.concatenate([old for _, old in calls[4 * epoch:4 * epoch + 4]]))
        np.testing.assert_array_equal(seen, rollout_logp)  # the rollout's, every sample once, every epoch
    assert np.abs(calls[0][0] - calls[0][1]).max() == 0.0  # before the first step: pi_theta = pi_old
    assert all(np.abs(logp - old).max() > 0 for logp, old in calls[1:])  # after it: ratios move


def test_on_policy_rungs_warn_when_they_reuse_the_rollout():
    with pytest.warns(UserWarning, match=r"objective='reinforce' with n_epochs=3: every epoch after the first "
                                         r"reuses the rollout without the importance-sampling ratio") as rec:
        PPO(PPOConfig(**{**CFG, "n_epochs": 3}, objective="reinforce"), env=own_env.Reach(2))
    assert rec[0].filename == __file__  # it names the line that made the PPO, not one inside minippo
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PPO(PPOConfig(**CFG, objective="a2c"), env=own_env.Reach(2))  # n_epochs=1: no warning
        PPO(PPOConfig(**{**CFG, "n_epochs": 3}, objective="surrogate"), env=own_env.Reach(2))


class Echo:
    """A single env (numpy only, no spec): observation [0, 0], reward = the action sent, 5 steps."""

    def __init__(self, start=1):
        from minippo.spaces import Box, Discrete

        self.observation_space = Box(-np.ones(2), np.ones(2))
        self.action_space = Discrete(3, start)
        self.t = 0

    def reset(self, seed=None):
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(2, np.float32), float(action), self.t >= 5, False, {}


def _echo_policy():
    from minippo.policy import ActorCritic
    from minippo.spaces import Discrete

    pol = ActorCritic(2, Discrete(3, 1), (4,), seed=0)
    pol.params["actor.b1"][:] = [0.0, 0.5, 0.2]  # the mode at observation 0: index 1, env action 2
    return pol


def test_evaluate_policy_offsets_discrete_actions_names_the_env_and_uses_its_defaults():
    pol = _echo_policy()
    res = evaluate_policy(pol, None, env=Echo())  # the trainer's ActorCritic, as PPO.evaluate plays it
    assert res["env_id"] == "Echo"  # no spec: the class name
    assert res["episodes"] == 10 and res["returns"] == [10.0] * 10 and res["lengths"] == [5] * 10  # 5 x action 2
    assert evaluate_policy(pol, "my-echo", 1, env=Echo())["env_id"] == "my-echo"  # a given name wins

    # sampled: the default seed is 0 (the generator's and each episode's reset seed 0 + episode)
    sampled = evaluate_policy(pol, None, deterministic=False, env=Echo())["returns"]
    assert sampled == evaluate_policy(pol, None, 10, False, seed=0, env=Echo())["returns"]
    assert sampled != evaluate_policy(pol, None, 10, False, seed=1, env=Echo())["returns"]
    assert all(5.0 <= r <= 15.0 for r in sampled) and len(set(sampled)) > 1


def test_evaluate_policy_samples_from_the_generator_it_is_given():
    pol = _echo_policy()

    def play(rng):
        return evaluate_policy(pol, None, 10, False, seed=0, env=Echo(), rng=rng)["returns"]

    given = play(np.random.default_rng(7))
    assert given == play(np.random.default_rng(7))
    assert given != play(np.random.default_rng(8))
    assert given != play(None)  # None: a generator seeded with `seed`, not the one given above



def test_evaluation_refuses_a_reset_that_is_not_a_pair():
    """Session 68: an obs-only reset of 2 numbers was unpacked into obs = 0.0 and info = 0.0, and
    evaluation failed on the policy's input; a triple ended in "too many values to unpack"."""

    class ObsOnly(Echo):
        def reset(self, seed=None):
            return super().reset(seed)[0]

    class Triple(Echo):
        def reset(self, seed=None):
            return (*super().reset(seed), None)

    for env, got in ((ObsOnly(), "ndarray"), (Triple(), "a tuple of 3")):
        with pytest.raises(TypeError, match=rf"^env '{type(env).__name__}' returned {got} from reset\(\); "
                                            r"expected a pair \(obs, info\)$"):
            evaluate_policy(_echo_policy(), None, 2, env=env)


class BrokenEcho(Echo):
    """Echo whose step ``at`` (0: the reset) returns a NaN or inf in ``what``."""

    def __init__(self, what, at, value=np.nan):
        super().__init__()
        self.what, self.at, self.value = what, at, value

    def _obs(self):
        return np.full(2, self.value if self.what == "obs" and self.t == self.at else 0.0, np.float32)

    def reset(self, seed=None):
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        r = self.value if self.what == "reward" and self.t == self.at else float(action)
        return self._obs(), r, self.t >= 5, False, {}


@pytest.mark.parametrize("what, at, value", [("reward", 3, np.nan), ("obs", 2, np.nan), ("obs", 0, np.inf),
                                             ("reward", 5, -np.inf)])
def test_evaluation_stops_at_a_non_finite_env_value_and_names_it(what, at, value):
    """A NaN reward came out as a NaN mean return; a NaN observation as an error about the policy's
    output (ActorCritic) or input (Policy): now, as in training, the env is named."""
    from minippo.ppo import NonFiniteEnvError

    where = "on reset" if at == 0 else f"at step {at}"
    shown = "nan" if value != value else "inf" if value > 0 else "-inf"
    shown = re.escape(f"[{shown} {shown}]" if what == "obs" else shown)
    pol = _echo_policy()
    named = "observation" if what == "obs" else "reward"
    for policy in (pol, Policy(pol, None, None)):
        with pytest.raises(NonFiniteEnvError, match=rf"^env 'BrokenEcho' returned a non-finite {named} in "
                           rf"evaluation episode 0 {where}: {shown}$"):
            evaluate_policy(policy, None, 2, env=BrokenEcho(what, at, value))
    assert evaluate_policy(pol, None, 2, env=BrokenEcho(what, 6, value))["returns"] == [10.0, 10.0]  # never reached


def test_a_model_evaluated_in_a_given_env_names_that_env():
    """PPO.evaluate(env=...) reported config.env_id (CartPole-v1 by default) for a custom env's model."""
    model = PPO(PPOConfig(**CFG), env=own_env.Reach(2))
    assert model.evaluate(1, env=own_env.OneReach())["env_id"] == "OneReach"  # (no spec: its class)

class Cycle:
    """A vector env of one sub-env (same-step autoreset) whose k-th episode (k = 0, 1, ...) lasts
    k % 5 + 1 steps with reward 1 per step; it records each finished episode's return in order."""

    num_envs = 1
    metadata = {"autoreset_mode": "same_step"}

    def __init__(self):
        from minippo.spaces import Box, Discrete

        self.single_observation_space = Box(-np.ones(1), np.ones(1))
        self.single_action_space = Discrete(2)
        self.k, self.t, self.finished = 0, 0, []

    def reset(self, seed=None):
        return np.zeros((1, 1), np.float32), {}

    def step(self, actions):
        self.t += 1
        obs, info = np.zeros((1, 1), np.float32), {}
        done = self.t == self.k % 5 + 1
        if done:
            self.finished.append(float(self.t))
            self.k, self.t = self.k + 1, 0
            info = {"final_obs": np.zeros((1, 1), np.float32)}
        return obs, np.ones(1), np.array([done]), np.array([False]), info


def test_logged_mean_return_and_length_are_over_the_last_100_episodes():
    env = Cycle()
    rows = []  # (logged row, episodes the env had finished by then)
    model = PPO(PPOConfig(n_envs=1, n_steps=128, batch_size=64, n_epochs=1, hidden=(4,)), env=env)
    model.learn(3 * 128, callback=lambda row: rows.append((row, len(env.finished))))
    assert len(env.finished) > 100 and len(set(env.finished[-100:])) == 5
    assert list(model.episode_returns) == env.finished[-100:]
    assert list(model.episode_lengths) == [int(r) for r in env.finished[-100:]]
    for row, n in rows:  # under 100 episodes in the first rows: all of them
        last = env.finished[:n][-100:]
        assert row["mean_return"] == np.mean(last) == row["mean_length"]
    assert rows[0][1] < 100 < rows[-1][1]


def test_a_gymnasium_env_given_with_changes_its_spec_records_is_custom_too(tmp_path):
    """A model trained through a wrapper that keeps the shapes (observations scaled 100x), with other
    kwargs, or with another time limit was evaluated without a word in the bare env made from its id
    (-1481 against its training env's returns), by evaluate, PPO.load and minippo eval. gymnasium's
    specs record each change: such an env is recorded as custom, named by its id and the changes."""
    gym = pytest.importorskip("gymnasium")
    from gymnasium.wrappers import RecordEpisodeStatistics, TransformObservation

    from minippo.envs import env_changes, make_vec_env

    def scaled(e):
        return TransformObservation(e, lambda o: o * 100, e.observation_space)

    cfg = PPOConfig(env_id="Pendulum-v1", n_envs=2, n_steps=32, batch_size=32, n_epochs=1, hidden=(8,))
    changed = {
        "wrapper TransformObservation": gym.make_vec("Pendulum-v1", 2, "sync", wrappers=[scaled]),
        "kwargs g=5.0": gym.make_vec("Pendulum-v1", 2, "sync", g=5.0),
        "max_episode_steps=50 (made from the id: 200)": gym.vector.SyncVectorEnv(
            [lambda: gym.make("Pendulum-v1", max_episode_steps=50)] * 2),
        "vector wrapper NormalizeObservation": gym.wrappers.vector.NormalizeObservation(
            gym.make_vec("Pendulum-v1", 2, "sync")),
    }
    for change, env in changed.items():
        model = PPO(cfg, env=env)
        assert model.custom_env == f"Pendulum-v1 ({change})", change
        with pytest.raises(ValueError, match=r"this model trains on Pendulum-v1 \(.*\), given as PPO\(config, env="):
            model.evaluate()
        model.close()
    model = PPO(cfg, env=gym.make_vec("Pendulum-v1", 2, "sync", wrappers=[scaled]))
    path = str(tmp_path / "m.npz")
    model.save(path)
    with pytest.raises(ValueError, match=r"was trained on Pendulum-v1 \(wrapper TransformObservation\)"):
        PPO.load(path)
    assert load_policy(path).custom_env == "Pendulum-v1 (wrapper TransformObservation)"
    # what evaluation would make again: no change (an info-only wrapper, minippo's own envs, the id's kwargs)
    same = [gym.make_vec("Pendulum-v1", 2, "sync", wrappers=[RecordEpisodeStatistics]),
            gym.make_vec("Pendulum-v1", 2, "async", wrappers=[RecordEpisodeStatistics]),
            gym.make_vec("Pendulum-v1", 2, "sync", render_mode="rgb_array"),  # (nothing the policy sees)
            gym.make_vec("Pendulum-v1", 2, "sync", g=10.0),  # (PendulumEnv's default, passed by name)
            gym.make_vec("Pendulum-v1", 2, "sync", max_episode_steps=None),  # (each sub-env: the spec's 200)
            gym.wrappers.vector.RecordEpisodeStatistics(gym.make_vec("Pendulum-v1", 2, "sync")),
            gym.vector.SyncVectorEnv([lambda: gym.make("Pendulum-v1")] * 2),
            make_vec_env("Pendulum-v1", 2, "async"), make_vec_env("CartPole-v1", 2, autoreset="next_step")]
    for env in same:
        env_id = env.spec.id if env.spec is not None else "Pendulum-v1"
        assert env_changes(env, env_id, None) == [], env
        env.close()

    class Goal(gym.Env):  # a kwarg that is an array: compared by its elements (== has no one truth value)
        observation_space, action_space = gym.spaces.Box(-1.0, 1.0, (2,)), gym.spaces.Discrete(2)

        def __init__(self, goal=None):
            self.goal = goal

    gym.register("minippo-test/Goal-v0", entry_point=Goal, kwargs={"goal": np.zeros(2)})
    try:
        for goal, want in ((np.zeros(2), []), (np.ones(2), ["kwargs goal=array([1., 1.])"])):
            env = gym.make_vec("minippo-test/Goal-v0", 2, "sync", goal=goal)
            assert env_changes(env, "minippo-test/Goal-v0", None) == want
            env.close()
    finally:
        del gym.registry["minippo-test/Goal-v0"]
    kw = make_vec_env("CartPole-v1", 2, autoreset="next_step", env_kwargs={"max_episode_steps": 50})
    assert env_changes(kw, "CartPole-v1", {"max_episode_steps": 50}) == []
    assert env_changes(kw, "CartPole-v1", None) == ["max_episode_steps=50 (made from the id: 500)"]
    unlimited = gym.make_vec("CartPole-v1", 2, "vector_entry_point", max_episode_steps=None)  # (no limit at all)
    assert env_changes(unlimited, "CartPole-v1", None) == ["max_episode_steps=None (made from the id: 500)"]
    unlimited.close()
    kw.close()
