"""Train on your own environment with numpy alone (no gymnasium), save, reload and evaluate it.

    python examples/own_env.py [--timesteps 20000] [--out reach.npz]

``PPO(config, env=...)`` takes any vector env with this interface (gymnasium's has it too):

- ``num_envs``: N, equal to ``config.n_envs``;
- ``single_observation_space``: a 1-D ``minippo.spaces.Box``; ``single_action_space``: a
  ``minippo.spaces.Discrete`` or 1-D ``Box``;
- ``metadata["autoreset_mode"]``: ``"same_step"`` (used here) or ``"next_step"``;
- ``reset(seed=None) -> (obs (N, obs_dim), info)``;
- ``step(actions (N,) or (N, d)) -> (obs, rewards (N,), terminated (N,), truncated (N,), info)``. In
  same_step mode a sub-env whose episode ended is reset within the step: ``obs[i]`` is the new
  episode's first observation and ``info["final_obs"][i]`` the ended one's last (PPO bootstraps a
  truncated episode from it).

``evaluate_policy(policy, None, env=...)`` plays a single env: ``observation_space``,
``action_space``, ``reset(seed=None) -> (obs, info)`` and ``step(action) -> (obs, reward,
terminated, truncated, info)``. The model is saved as trained on this env's class (not on
``config.env_id``): ``PPO.load`` and ``evaluate`` then need ``env=`` again, and ``minippo eval``
says it cannot make the env.
"""

import argparse
import os

# One BLAS thread, as the `minippo` CLI sets (faster for these small matrices).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy loads
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from minippo import PPO, backend, load_policy  # noqa: E402
from minippo.checkpoint import check_save_path, evaluate_policy  # noqa: E402
from minippo.cli import timesteps_arg  # noqa: E402
from minippo.config import PPOConfig  # noqa: E402
from minippo.spaces import Box, Discrete  # noqa: E402

STEPS = 20  # steps per episode (a time limit: truncation)


class Reach:
    """N points on a line, each with a target: observation [position, target], action left / stay /
    right (0.1 each), reward -|position - target| per step. A good policy walks to the target and stays."""

    metadata = {"autoreset_mode": "same_step"}

    def __init__(self, num_envs: int = 1) -> None:
        self.num_envs = num_envs
        self.single_observation_space = Box(np.full(2, -1.0), np.full(2, 1.0))
        self.single_action_space = Discrete(3)
        self.rng = np.random.default_rng()
        self.pos, self.target = np.zeros(num_envs), np.zeros(num_envs)
        self.t = np.zeros(num_envs, dtype=np.int64)

    def _obs(self) -> np.ndarray:
        return np.stack([self.pos, self.target], axis=1).astype(np.float32)

    def _new(self, idx: np.ndarray) -> None:
        self.pos[idx] = self.rng.uniform(-1.0, 1.0, len(idx))
        self.target[idx] = self.rng.uniform(-1.0, 1.0, len(idx))
        self.t[idx] = 0

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict]:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.pos, self.target = np.zeros(self.num_envs), np.zeros(self.num_envs)
        self._new(np.arange(self.num_envs))
        return self._obs(), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        self.pos = np.clip(self.pos + 0.1 * (np.asarray(actions) - 1), -1.0, 1.0)
        self.t += 1
        reward = -np.abs(self.pos - self.target)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = self.t >= STEPS
        info = {}
        if truncated.any():  # same_step autoreset: report the final observations, start new episodes
            info["final_obs"] = self._obs()
            self._new(np.flatnonzero(truncated))
        return self._obs(), reward, terminated, truncated, info


class OneReach:
    """One Reach env with the single-env interface evaluate_policy plays."""

    def __init__(self) -> None:
        self.env = Reach(1)
        self.observation_space = self.env.single_observation_space
        self.action_space = self.env.single_action_space

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(seed)
        return obs[0], info

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        final = self.env.t[0] + 1 >= STEPS
        obs, r, term, trunc, info = self.env.step(np.array([action]))
        return (info["final_obs"] if final else obs)[0], float(r[0]), bool(term[0]), bool(trunc[0]), {}



def main() -> None:
    """Train on Reach, save to --out, reload with numpy alone, evaluate before and after."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timesteps", type=timesteps_arg, default=20_000, help="env steps to train (default 20000)")
    ap.add_argument("--out", default="reach.npz", help="model file to write (default reach.npz)")
    args = ap.parse_args()
    try:  # MINIPPO_BACKEND read now: a bad value is one line here, not a traceback from inside training
        backend.resolved()
    except (ValueError, ImportError, RuntimeError) as e:
        ap.error(str(e))
    try:  # found now, not after training with the model lost; the example loads the model back
        check_save_path(args.out, reread=True)
    except OSError as e:
        ap.error(f"--out {args.out!r}: cannot save the model there: {e}")

    config = PPOConfig(env_id="Reach", n_envs=8, n_steps=64, batch_size=128, n_epochs=10,
                       learning_rate=3e-3, gamma=0.9, total_timesteps=args.timesteps, seed=0)
    model = PPO(config, env=Reach(config.n_envs))
    before = evaluate_policy(model, None, 20, env=OneReach())["mean_return"]  # (the trainer: its obs statistics too)
    model.learn()
    model.save(args.out)

    policy = load_policy(args.out)  # numpy only: what a small machine runs
    after = evaluate_policy(policy, None, 20, env=OneReach())["mean_return"]
    print(f"return before training: {before:.2f}")
    print(f"return after training: {after:.2f}")
    print("action at position -0.5, target 0.5 (2 = right):", policy.predict([-0.5, 0.5]))


if __name__ == "__main__":
    main()
