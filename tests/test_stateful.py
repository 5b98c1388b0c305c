"""The trainer's lifecycle under random sequences of calls (hypothesis's stateful testing).

The other tests take each call of the Python API on its own or in the orders the README shows. Here
hypothesis draws sequences of them (learn, with a total or without; a callback that stops, raises or
saves; collect_rollout and update by hand; an env or an update that raises, an Exception or a Ctrl-C;
evaluate, predict, save, load with overrides, close), on numpy and numba, in both autoreset modes,
and after every call checks what must hold whatever came before:

- the counters: ``num_timesteps`` is the env steps run (whole rollouts of n_envs * n_steps, and a
  dropped rollout's steps before its env raised), ``iteration`` the iterations learn() finished (a
  callback's stop or exception comes after its iteration is counted, an update's exception before);
  ``total_timesteps`` the last total given; ``time_elapsed`` never goes back; a load takes them all
  back to the file's;
- nothing but training moves the trainer's state (parameters, Adam's moments and step, normaliser
  statistics, the agent's generator, the counters, the episode statistics, the envs' last observation
  and episodes in progress): evaluate, predict, save and close leave it bit for bit, and a refused
  call (an update without a rollout, learn to a total already reached, learn after close) too;
- an update interrupted after j minibatch steps keeps those j steps (Adam's step count), none at j = 0;
- a rollout dropped by its env's exception leaves the trainer "as a load leaves it" (ppo.py's
  collect_rollout): no last observation, no episode in progress, the buffer refused;
- ``PPO.load`` of a file gives back what the trainer held when it saved it, with the episodes in
  progress restarted (the envs reset on resume, and the reward scaler's running returns with them:
  minippo/checkpoint.py), and the overrides given (learning_rate, total_timesteps, kl_beta); a total
  at or below the steps run is refused;
- a dropped rollout, saved and loaded, trains on exactly as the trainer it came from does.
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
MINIBATCH_STEPS = CONFIG.n_epochs * ROLLOUT // CONFIG.batch_size  # per update
IN_PROGRESS = ("obs", "ep_ret", "ep_len", "fake_next", "pending_boot", "scaler_ret")


class Stop(Exception):
    """Raised by a callback, an env or an update, as a user's code might."""


def state(model: PPO) -> dict:
    """Copies of everything training changes, read off the trainer (not through the checkpoint code)."""
    out = {f"param.{k}": np.array(v) for k, v in model.policy.params.items()}
    out.update({f"adam.{k}": np.array(v) for k, v in model.optimizer.state_dict().items()})
    rms = model.obs_norm.rms
    out["obs_norm"] = (np.array(rms.mean), np.array(rms.var), rms.count)
    scaler = model.reward_scaler
    out["reward_norm"] = (np.array(scaler.rms.mean), np.array(scaler.rms.var), scaler.rms.count)
    out["rng"] = model.rng.bit_generator.state
    out["counters"] = (model.num_timesteps, model.iteration, model.total_timesteps, model.time_elapsed)
    out["beta"] = model.kl_coef.beta
    out["episodes"] = (list(model.episode_returns), list(model.episode_lengths))
    out["temperature"] = model.policy.temperature
    # the episodes in progress and the envs' last observation (what a resume starts afresh)
    out["obs"] = None if model._obs is None else np.array(model._obs)
    out["ep_ret"], out["ep_len"] = np.array(model._ep_ret), np.array(model._ep_len)
    out["fake_next"], out["pending_boot"] = np.array(model._fake_next), np.array(model._pending_boot)
    out["scaler_ret"] = np.array(scaler.ret)
    out["ready"] = model.buffer.ready
    return out


def restarted(snapshot: dict) -> dict:
    """``snapshot`` with its episodes in progress restarted and no rollout in the buffer, as a load
    (or a dropped rollout) leaves them."""
    out = dict(snapshot, obs=None, ready=False)
    out.update({k: np.zeros_like(snapshot[k]) for k in IN_PROGRESS if k != "obs"})
    return out


def same(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, tuple | list):
        return isinstance(b, tuple | list) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    assert not [k for k in want if not same(got[k], want[k])]


class Lifecycle(RuleBasedStateMachine):
    config = CONFIG

    def __init__(self):
        super().__init__()
        self.folder = tempfile.TemporaryDirectory()
        self.model = PPO(self.config)
        self.steps = 0  # env steps run in all, by learn() or by hand, dropped rollouts' too
        self.iterations = 0
        self.total = self.config.total_timesteps
        self.elapsed = 0.0
        self.closed = False
        self.ready = False  # a rollout in the buffer, which update() may use (again)
        self.saves = []  # (path, state, steps, iterations, total, learning rate) of each file saved
        self.learning_rate = self.config.learning_rate

    def teardown(self):
        self.model.close()
        self.folder.cleanup()

    def path(self, name: str) -> str:
        return os.path.join(self.folder.name, name)

    def learned(self, iterations: int, total: int) -> None:
        self.steps += iterations * ROLLOUT
        self.iterations += iterations
        self.total = total
        self.ready = True  # (the last rollout stays in the buffer: update() may run on it again)

    # ---------------------------------------------------------------- training

    @rule(k=st.integers(1, 3))
    @precondition(lambda self: not self.closed)
    def learn(self, k):
        before = self.model.time_elapsed
        total = self.model.num_timesteps + k * ROLLOUT
        assert self.model.learn(total) is self.model
        assert self.model.time_elapsed > before
        self.learned(k, total)

    @rule()
    @precondition(lambda self: not self.closed and 0 < self.total - self.steps <= 4 * ROLLOUT)
    def learn_on_to_the_last_total(self):
        assert self.model.learn() is self.model
        self.learned(-(-(self.total - self.steps) // ROLLOUT), self.total)

    @rule()
    @precondition(lambda self: self.steps >= self.total)
    def learn_with_the_total_reached_does_nothing(self):
        before = state(self.model)
        assert self.model.learn() is self.model  # (closed or not)
        assert_same(state(self.model), before)

    @rule()
    def learn_to_a_total_already_reached(self):
        before = state(self.model)
        with pytest.raises(TotalReached if self.model.num_timesteps else ValueError):  # (0: not a total)
            self.model.learn(self.model.num_timesteps)
        assert_same(state(self.model), before)

    @rule(stop_after=st.integers(1, 2), how=st.sampled_from(["false", "raise", "ctrl-c", "save"]))
    @precondition(lambda self: not self.closed)
    def learn_with_a_callback_that_stops(self, stop_after, how):
        rows, saved, path = [], {}, self.path(f"callback{len(self.saves)}.npz")

        def callback(row):
            rows.append(row)
            if len(rows) < stop_after:
                return None
            if how == "raise":
                raise Stop
            if how == "ctrl-c":
                raise KeyboardInterrupt
            if how == "save":  # (time_elapsed is set before the callback, which may save)
                saved["state"] = state(self.model)
                self.model.save(path)
            return False

        total = self.model.num_timesteps + 5 * ROLLOUT
        if how in ("raise", "ctrl-c"):
            with pytest.raises(Stop if how == "raise" else KeyboardInterrupt):
                self.model.learn(total, callback=callback)
        else:
            self.model.learn(total, callback=callback)
        assert [r["iteration"] for r in rows] == list(range(self.iterations + 1, self.iterations + stop_after + 1))
        assert rows[-1]["timesteps"] == self.steps + stop_after * ROLLOUT
        self.learned(stop_after, total)
        if how == "save":  # nothing changed after the callback returned
            assert_same(state(self.model), saved["state"])
            self.saves.append((path, saved["state"], self.steps, self.iterations, self.total, self.learning_rate))

    @rule()
    @precondition(lambda self: not self.closed)
    def collect(self):
        self.model.collect_rollout()
        self.steps += ROLLOUT
        self.ready = True

    @rule(at=st.integers(1, CONFIG.n_steps), error=st.sampled_from([Stop, KeyboardInterrupt]))
    @precondition(lambda self: not self.closed)
    def collect_from_an_env_that_raises(self, at, error):
        """The env's step number ``at`` of the rollout raises: the rollout is dropped, the steps before it
        stay counted, and the trainer is left as a load leaves it."""
        env, calls = self.model.env, []
        real = env.step

        def step(actions):
            calls.append(None)
            if len(calls) == at:
                raise error
            return real(actions)

        before = state(self.model)
        env.step = step
        try:
            with pytest.raises(error):
                self.model.collect_rollout()
        finally:
            del env.step
        assert len(calls) == at  # (the trainer stepped the env through it)
        after = state(self.model)
        assert_same({k: after[k] for k in (*IN_PROGRESS, "ready")},
                    {k: restarted(before)[k] for k in (*IN_PROGRESS, "ready")})
        self.steps += (at - 1) * self.config.n_envs
        self.ready = False

    @rule(j=st.integers(0, MINIBATCH_STEPS - 1), error=st.sampled_from([Stop, KeyboardInterrupt]))
    @precondition(lambda self: not self.closed)
    def learn_when_an_update_raises(self, j, error):
        """The update's minibatch number j raises (after j minibatch steps): learn() passes it on; the
        rollout's steps are counted, the iteration is not; the j steps are kept, and the rollout."""
        buffer, seen = self.model.buffer, []
        real = buffer.minibatches

        def minibatches(*args, **kwargs):
            for batch in real(*args, **kwargs):
                if len(seen) == j:
                    raise error
                seen.append(None)
                yield batch

        before = state(self.model)
        buffer.minibatches = minibatches
        total = self.model.num_timesteps + 2 * ROLLOUT
        try:
            with pytest.raises(error):
                self.model.learn(total)
        finally:
            del buffer.minibatches
        after = state(self.model)
        assert after["adam.t"] == before["adam.t"] + j
        if j == 0:
            assert all(np.array_equal(after[k], before[k]) for k in before if k.startswith("param."))
        self.steps += ROLLOUT
        self.total = total
        self.ready = True

    @rule()
    def update(self):
        if self.ready:  # (progress in [0, 1), as update() takes it)
            self.model.update(min(self.model.num_timesteps / self.model.total_timesteps, 0.99))
        else:
            before = state(self.model)
            with pytest.raises(RuntimeError):
                self.model.update(0.0)
            assert_same(state(self.model), before)

    # ---------------------------------------------------------------- acting

    @rule(deterministic=st.booleans(), seed=st.none() | st.integers(0, 2**31))
    def evaluate(self, deterministic, seed):
        before = state(self.model)
        out = self.model.evaluate(1, deterministic=deterministic, seed=seed)
        assert len(out["returns"]) == 1 and out["returns"][0] >= 1
        assert self.model.evaluate(1, deterministic=deterministic, seed=seed) == out
        assert_same(state(self.model), before)

    @rule(obs=st.lists(st.lists(st.floats(-3, 3), min_size=4, max_size=4), min_size=1, max_size=5))
    def predict(self, obs):
        obs = np.array(obs)
        before = state(self.model)
        actions = self.model.predict(obs)
        assert actions.shape == (len(obs),)
        assert [int(a) for a in actions] == [int(self.model.predict(o)) for o in obs]
        sampled = self.model.predict(obs, deterministic=False, rng=np.random.default_rng(1))
        assert np.array_equal(self.model.predict(obs, deterministic=False, rng=np.random.default_rng(1)), sampled)
        assert_same(state(self.model), before)

    # ---------------------------------------------------------------- files

    @rule(same_path=st.booleans())
    def save(self, same_path):
        before = state(self.model)
        path = self.path("again.npz" if same_path else f"model{len(self.saves)}.npz")
        self.model.save(path)
        assert_same(state(self.model), before)
        self.saves = [s for s in self.saves if s[0] != path] + [(path, before, self.steps, self.iterations,
                                                                  self.total, self.learning_rate)]

    @rule(data=st.data(), override=st.sampled_from(["none", "learning_rate", "total above", "total reached",
                                                     "kl_beta"]))
    @precondition(lambda self: self.saves)
    def load(self, data, override):
        path, want, steps, iterations, total, learning_rate = data.draw(st.sampled_from(self.saves))
        overrides = {
            "none": {}, "learning_rate": {"learning_rate": 1e-4}, "kl_beta": {"kl_beta": 0.25},
            "total above": {"total_timesteps": steps + data.draw(st.integers(1, 3 * ROLLOUT))},
            "total reached": {"total_timesteps": data.draw(st.integers(0, steps))},
        }[override]
        if override == "total reached":
            before = state(self.model)
            with pytest.raises(TotalReached if overrides["total_timesteps"] else ValueError):
                PPO.load(path, **overrides)
            assert_same(state(self.model), before)
            return
        self.model.close()
        self.model = PPO.load(path, **overrides)
        want = restarted(want)
        total = overrides.get("total_timesteps", total)
        want["counters"] = (*want["counters"][:2], total, want["counters"][3])
        want["beta"] = overrides.get("kl_beta", want["beta"])
        assert_same(state(self.model), want)
        self.learning_rate = overrides.get("learning_rate", learning_rate)
        assert self.model.config.learning_rate == self.learning_rate
        self.steps, self.iterations, self.total, self.elapsed = steps, iterations, total, self.model.time_elapsed
        self.closed, self.ready = False, False

    @rule()
    @precondition(lambda self: not self.closed)
    def a_dropped_rollout_trains_on_as_its_save_loaded_does(self):
        """collect_rollout's docs: a dropped rollout leaves the trainer as a load leaves it. Saved then
        and loaded, the copy trains one more rollout to the same state, bit for bit."""
        self.collect_from_an_env_that_raises(1, Stop)
        path = self.path("dropped.npz")
        self.model.save(path)
        with PPO.load(path) as other:
            total = self.model.num_timesteps + ROLLOUT
            self.model.learn(total)
            other.learn(total)
            mine, theirs = state(self.model), state(other)
            mine["counters"] = mine["counters"][:3]  # (the wall time apart)
            theirs["counters"] = theirs["counters"][:3]
            assert_same(theirs, mine)
        self.learned(1, total)

    @rule()
    @precondition(lambda self: not self.closed)
    def close(self):
        before = state(self.model)
        self.model.close()
        self.closed = True
        assert_same(state(self.model), before)
        with pytest.raises(RuntimeError):
            self.model.learn(self.model.num_timesteps + ROLLOUT)
        with pytest.raises(RuntimeError):
            self.model.collect_rollout()
        assert_same(state(self.model), before)

    # ---------------------------------------------------------------- invariants

    @invariant()
    def counters(self):
        model = self.model
        assert (model.num_timesteps, model.iteration, model.total_timesteps) == (self.steps, self.iterations,
                                                                                  self.total)
        assert model.time_elapsed >= self.elapsed
        self.elapsed = model.time_elapsed


@pytest.mark.parametrize("objective, autoreset, schedule", [("kl_penalty", "same_step", "constant"),
                                                            ("clip", "next_step", "linear")])
def test_the_trainer_s_lifecycle(any_backend, objective, autoreset, schedule):
    config = CONFIG.replace(objective=objective, autoreset=autoreset, lr_schedule=schedule, clip_schedule=schedule)
    run_state_machine_as_test(type("Lifecycle", (Lifecycle,), {"config": config}), settings=settings(
        max_examples=40, stateful_step_count=15, deadline=None, suppress_health_check=[HealthCheck.too_slow]))
