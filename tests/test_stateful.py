"""The trainer's lifecycle under random sequences of calls (hypothesis's stateful testing).

The other tests take each call of the Python API on its own or in the orders the README shows. Here
hypothesis draws sequences of them (learn, a callback that stops or raises, collect_rollout and update
by hand, a rollout whose env raises, evaluate, predict, save, load, close), on numpy and numba, with
either autoreset mode, and after every call checks what must hold whatever came before:

- the counters: ``num_timesteps`` is the env steps run (whole rollouts of n_envs * n_steps, and a
  dropped rollout's steps before its env raised), ``iteration`` the iterations learn() ran (a
  callback's stop or exception comes after its iteration is counted); a load takes both back to the
  file's;
- nothing but training moves the parameters, Adam's moments, the normalisers' statistics, the
  agent's generator and the counters: evaluate, predict and save leave them bit for bit;
- ``PPO.load`` of a file gives back exactly what the trainer held when it saved it (parameters,
  Adam's moments and step, normaliser statistics, the generator's state, counters, the adapted KL
  beta), but the reward scaler's running returns: they belong to the episodes in progress, which
  restart on resume (minippo/checkpoint.py), so they come back as 0;
- an update without a collected rollout, and training after close(), are refused with the documented
  errors and change nothing; acting, evaluating and saving still work after close().
"""

import math
import os
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from minippo.config import PPOConfig
from minippo.ppo import PPO, TotalReached

pytest.importorskip("gymnasium")

CONFIG = PPOConfig(env_id="CartPole-v1", n_envs=2, n_steps=8, batch_size=8, n_epochs=2, hidden=(8,),
                   objective="kl_penalty", norm_obs=True, norm_reward=True, total_timesteps=10**6,
                   eval_episodes=1)
ROLLOUT = CONFIG.n_envs * CONFIG.n_steps


class Stop(Exception):
    """Raised by a callback, as a user's might."""


def snapshot(model: PPO) -> dict:
    """Copies of everything training changes, independent of the checkpoint code."""
    out = {f"param.{k}": np.array(v) for k, v in model.policy.params.items()}
    out.update({f"adam.{k}": np.array(v) for k, v in model.optimizer.state_dict().items()})
    out["obs_norm"] = (np.array(model.obs_norm.rms.mean), np.array(model.obs_norm.rms.var), model.obs_norm.rms.count)
    scaler = model.reward_scaler
    out["reward_scaler"] = (np.array(scaler.rms.mean), np.array(scaler.rms.var), scaler.rms.count, np.array(scaler.ret))
    out["rng"] = model.rng.bit_generator.state
    out["counters"] = (model.num_timesteps, model.iteration, model.kl_coef.beta)
    return out


def same(a: dict, b: dict) -> bool:
    def eq(x, y):
        if isinstance(x, tuple | list):
            return len(x) == len(y) and all(eq(p, q) for p, q in zip(x, y, strict=True))
        if isinstance(x, dict):
            return x.keys() == y.keys() and all(eq(x[k], y[k]) for k in x)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            return np.array_equal(x, y)
        return x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y))

    return a.keys() == b.keys() and all(eq(a[k], b[k]) for k in a)


class Lifecycle(RuleBasedStateMachine):
    config = CONFIG

    def __init__(self):
        super().__init__()
        self.folder = tempfile.TemporaryDirectory()
        self.model = PPO(self.config)
        self.steps = 0  # env steps run in all, by learn() or by hand, dropped rollouts' too
        self.iterations = 0
        self.closed = False
        self.ready = False  # a rollout in the buffer, which update() may use (again)
        self.saved = None  # (path, snapshot, rollouts, iterations) at the last save
        self.paths = 0

    def teardown(self):
        self.model.close()
        self.folder.cleanup()

    @rule(k=st.integers(1, 3))
    @precondition(lambda self: not self.closed)
    def learn(self, k):
        self.model.learn(self.model.num_timesteps + k * ROLLOUT)
        self.steps += k * ROLLOUT
        self.iterations += k
        self.ready = True  # (the last rollout stays in the buffer: update() may run on it again)

    @rule(stop_after=st.integers(1, 2), how=st.sampled_from(["false", "raise"]))
    @precondition(lambda self: not self.closed)
    def learn_with_a_callback_that_stops(self, stop_after, how):
        rows = []

        def callback(row):
            rows.append(row)
            if len(rows) == stop_after:
                if how == "raise":
                    raise Stop
                return False
            return None

        if how == "raise":
            with pytest.raises(Stop):
                self.model.learn(self.model.num_timesteps + 5 * ROLLOUT, callback=callback)
        else:
            self.model.learn(self.model.num_timesteps + 5 * ROLLOUT, callback=callback)
        assert [r["iteration"] for r in rows] == list(range(self.iterations + 1, self.iterations + stop_after + 1))
        assert rows[-1]["timesteps"] == self.steps + stop_after * ROLLOUT
        self.steps += stop_after * ROLLOUT
        self.iterations += stop_after  # (the callback runs after the iteration is counted)
        self.ready = True

    @rule()
    @precondition(lambda self: not self.closed)
    def learn_when_an_update_raises(self):
        """An exception inside update() (a Ctrl-C, say): learn() passes it on; the rollout's steps are
        counted, the iteration is not, and the rollout stays in the buffer."""
        def update(progress):
            raise Stop

        self.model.update = update
        try:
            with pytest.raises(Stop):
                self.model.learn(self.model.num_timesteps + 2 * ROLLOUT)
        finally:
            del self.model.update
        self.steps += ROLLOUT
        self.ready = True

    @rule()
    def learn_to_a_total_already_reached(self):
        before = snapshot(self.model)
        with pytest.raises(TotalReached if self.model.num_timesteps else ValueError):  # (0: not a total)
            self.model.learn(self.model.num_timesteps)
        assert same(snapshot(self.model), before)

    @rule()
    @precondition(lambda self: not self.closed)
    def collect(self):
        self.model.collect_rollout()
        self.steps += ROLLOUT
        self.ready = True

    @rule(at=st.integers(1, CONFIG.n_steps))
    @precondition(lambda self: not self.closed)
    def collect_from_an_env_that_raises(self, at):
        """The env's step number ``at`` of the rollout raises: the rollout is dropped (update refuses the
        buffer), the steps before it stay counted, and the next rollout starts from a reset."""
        env, calls = self.model.env, []
        real = env.step

        def step(actions):
            calls.append(None)
            if len(calls) == at:
                raise Stop
            return real(actions)

        env.step = step
        try:
            with pytest.raises(Stop):
                self.model.collect_rollout()
        finally:
            del env.step
        assert len(calls) == at  # (the trainer stepped the env through it)
        self.steps += (at - 1) * self.config.n_envs
        self.ready = False

    @rule()
    def update(self):
        if self.ready:
            self.model.update(self.model.num_timesteps / self.model.total_timesteps)
            self.ready = True  # (the rollout stays ready: another update may run on it, as epochs do)
        else:
            before = snapshot(self.model)
            with pytest.raises(RuntimeError):
                self.model.update(0.0)
            assert same(snapshot(self.model), before)

    @rule(deterministic=st.booleans())
    def evaluate(self, deterministic):
        before = snapshot(self.model)
        out = self.model.evaluate(1, deterministic=deterministic)
        assert len(out["returns"]) == 1 and out["returns"][0] >= 1
        assert same(snapshot(self.model), before)

    @rule(data=st.data())
    def predict(self, data):
        obs = np.array(data.draw(st.lists(st.floats(-3, 3), min_size=4, max_size=4)))
        before = snapshot(self.model)
        first = self.model.predict(obs)
        assert np.array_equal(self.model.predict(obs), first) and int(first) in (0, 1)
        assert same(snapshot(self.model), before)

    @rule()
    def save(self):
        before = snapshot(self.model)
        self.paths += 1
        path = os.path.join(self.folder.name, f"model{self.paths}.npz")
        self.model.save(path)
        assert same(snapshot(self.model), before)
        self.saved = (path, before, self.steps, self.iterations)

    @rule()
    @precondition(lambda self: self.saved is not None)
    def load(self):
        path, want, steps, iterations = self.saved
        self.model.close()
        self.model = PPO.load(path)
        mean, var, count, ret = want["reward_scaler"]
        assert same(snapshot(self.model), dict(want, reward_scaler=(mean, var, count, np.zeros_like(ret))))
        self.steps, self.iterations, self.closed, self.ready = steps, iterations, False, False

    @rule()
    def close(self):
        self.model.close()
        self.closed = True
        before = snapshot(self.model)
        with pytest.raises(RuntimeError):
            self.model.learn(self.model.num_timesteps + ROLLOUT)
        with pytest.raises(RuntimeError):
            self.model.collect_rollout()
        assert same(snapshot(self.model), before)

    @invariant()
    def counters(self):
        assert (self.model.num_timesteps, self.model.iteration) == (self.steps, self.iterations)


@pytest.mark.parametrize("objective, autoreset", [("kl_penalty", "same_step"), ("clip", "next_step")])
def test_the_trainer_s_lifecycle(any_backend, objective, autoreset):
    machine = type("Lifecycle", (Lifecycle,), {"config": CONFIG.replace(objective=objective, autoreset=autoreset)})
    run_state_machine_as_test(machine, settings=settings(
        max_examples=40, stateful_step_count=15, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
