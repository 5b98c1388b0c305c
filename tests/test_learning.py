"""PPO must actually learn: real gymnasium envs, the presets' budgets, thresholds from the issue.

These run in CI (about a minute in all). Select them alone with ``pytest -m slow``, skip them with
``-m "not slow"``. Evaluation is deterministic (the policy's mode) over 20 episodes with seeds
disjoint from training, so the thresholds test the policy, not evaluation luck.
"""

import os
import subprocess
import sys

import pytest

pytest.importorskip("gymnasium")

from minippo import PPO  # noqa: E402
from minippo.config import preset  # noqa: E402

pytestmark = pytest.mark.slow


def _train_eval(cfg, episodes=20):
    algo = PPO(cfg).learn()
    assert algo.num_timesteps <= cfg.total_timesteps + cfg.n_envs * cfg.n_steps
    return algo.evaluate(episodes, deterministic=True)["mean_return"]


def test_cartpole_clip_preset_solves_within_100k():
    cfg = preset("CartPole-v1")
    assert cfg.total_timesteps == 100_000
    assert _train_eval(cfg) >= 475


def test_cartpole_kl_penalty_solves():
    cfg = preset("CartPole-v1", objective="kl_penalty")
    assert _train_eval(cfg) >= 475


def test_pendulum_preset_reaches_minus_250():
    cfg = preset("Pendulum-v1")
    assert _train_eval(cfg) >= -250


@pytest.mark.parametrize("env_id, threshold", [("CartPole-v1", 475), ("Pendulum-v1", -250)])
def test_numba_backend_learns_too(env_id, threshold):
    # The numba backend runs the fused act and minibatch-update kernels (Categorical and Gaussian).
    pytest.importorskip("numba")
    code = (
        "from minippo import PPO, backend\n"
        "from minippo.config import preset\n"
        "assert backend.name == 'numba'\n"
        f"algo = PPO(preset({env_id!r})).learn()\n"
        "print(algo.evaluate(20, deterministic=True)['mean_return'])\n"
    )
    env = {**os.environ, "MINIPPO_BACKEND": "numba"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout.strip().splitlines()[-1]) >= threshold
