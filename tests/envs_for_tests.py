"""Tiny hand-made gymnasium envs whose correct returns can be written down."""

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


def register():
    if COUNTER_ID not in gym.registry:
        gym.register(COUNTER_ID, entry_point=Counter, max_episode_steps=3)
        gym.register(COUNTER_TERM_ID, entry_point=Counter, max_episode_steps=100,
                     kwargs={"terminate_after": 3})
