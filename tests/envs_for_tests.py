"""Tiny hand-made gymnasium envs whose correct returns can be written down."""

import os

import gymnasium as gym
import numpy as np

COUNTER_ID = "minippo-test/Counter-v0"
COUNTER_TERM_ID = "minippo-test/CounterTerminating-v0"


class Counter(gym.Env):
    """Constant observation [0.5], reward 1 every step; terminates after ``terminate_after`` steps
    if given, otherwise runs until the TimeLimit wrapper truncates it."""

    def __init__(self, terminate_after=None):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.terminate_after = terminate_after
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.5], np.float32), {}

    def step(self, action):
        self.t += 1
        term = self.terminate_after is not None and self.t >= self.terminate_after
        return np.array([0.5], np.float32), 1.0, term, False, {}


CLOCK_ID = "minippo-test/Clock-v0"


class Clock(gym.Env):
    """Observation [offset + t / 10] after step t, with a new random offset in [0, 0.5) at every
    reset (so every episode's final observation differs from the next reset's, and between envs);
    reward 1; truncated by its TimeLimit after 3 steps. Records each episode's first and final
    observation."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.t, self.offset, self.firsts, self.finals = 0, 0.0, [], []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.offset = 0, float(self.np_random.uniform(0.0, 0.5))
        self.firsts.append(np.array([self.offset], np.float32))
        return self.firsts[-1].copy(), {}

    def step(self, action):
        self.t += 1
        obs = np.array([self.offset + self.t / 10], np.float32)
        if self.t == 3:  # the TimeLimit truncates here: the observation the bootstrap must use
            self.finals.append(obs.copy())
        return obs, 1.0, False, False, {}


def register():
    if CLOCK_ID not in gym.registry:
        gym.register(CLOCK_ID, entry_point=Clock, max_episode_steps=3)
    if COUNTER_ID not in gym.registry:
        gym.register(COUNTER_ID, entry_point=Counter, max_episode_steps=3)
        gym.register(COUNTER_TERM_ID, entry_point=Counter, max_episode_steps=100,
                     kwargs={"terminate_after": 3})


class Probe(gym.Env):
    """An env with the given spaces: observations are zeros of the observation space's shape (``value``,
    NaN by default, from step ``nan_at`` on, if given; step 0 is the reset), reward 1 (``reward`` at step
    ``reward_at``, if given; at every step for ``reward_at="every"``), never terminates;
    records whether every action it was sent lay in its action space (``Probe.log``, shared by all
    instances)."""

    log: list = []

    def __init__(self, observation_space=None, action_space=None, nan_at=None, value=np.nan, reward_at=None,
                 reward=1.0):
        self.observation_space = observation_space or gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = action_space or gym.spaces.Discrete(2)
        self.nan_at, self.value, self.t = nan_at, value, 0
        self.reward_at, self.reward = reward_at, reward

    def _obs(self):
        obs = self.observation_space.sample() * 0
        if self.nan_at is not None and self.t >= self.nan_at:
            obs = np.full(obs.shape, self.value, self.observation_space.dtype)
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        Probe.log.append(bool(self.action_space.contains(action)))
        self.t += 1
        big = self.reward_at == "every" or self.t == self.reward_at
        return self._obs(), self.reward if big else 1.0, False, False, {}


def register_probe(env_id, max_episode_steps=None, **kwargs):
    """Register (or re-register) a :class:`Probe` env under ``env_id``."""
    if env_id in gym.registry:
        del gym.registry[env_id]
    gym.register(env_id, entry_point=Probe, max_episode_steps=max_episode_steps, kwargs=kwargs)


class RaiseOnce(Probe):
    """A :class:`Probe` whose step ``at`` (counted from its making) raises RuntimeError("env broke"), once
    for all instances and processes: only while the file ``flag`` does not exist (it is created then). In
    an async vector env, gymnasium shuts down the worker whose env raised."""

    def __init__(self, flag, at, **kwargs):
        super().__init__(**kwargs)
        self.flag, self.at, self.steps = flag, at, 0

    def step(self, action):
        self.steps += 1
        if self.steps == self.at and not os.path.exists(self.flag):
            open(self.flag, "w").close()
            raise RuntimeError("env broke")
        return super().step(action)


RAISE_ONCE_ID = "minippo-test/RaiseOnce-v0"
if RAISE_ONCE_ID not in gym.registry:
    gym.register(RAISE_ONCE_ID, entry_point=RaiseOnce, max_episode_steps=8)
