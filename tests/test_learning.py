"""PPO must actually learn: real gymnasium envs, the presets' budgets, thresholds from the issue.

These run in CI (a few minutes in all). Select them alone with ``pytest -m slow``, skip them with
``-m "not slow"``. Evaluation is deterministic (the policy's mode) over 20 episodes with seeds
disjoint from training, so the thresholds test the policy, not evaluation luck.

Seeds: a threshold must hold for the preset, not for one trajectory. A trajectory depends on the
machine's rounding (BLAS kernels, numba's vector width: the same seed gives other bits on Zen 3 and
Zen 4), so a single seed is a draw, and a different machine draws again. Measured per seed on a
2-core Zen 3 VM (session 17, seeds 0-7 of each, numpy and numba): CartPole clip preset >= 475 in
15 of 16 runs (the 16th 442.8), kl_penalty 15 of 16 (one collapse to 67 at 85k steps), Pendulum
>= -250 in 16 of 16 (worst -225). So each test needs 2 of the seeds 0, 1, 2 to pass (it stops as
soon as the outcome is decided): with a 1-in-16 failure rate per seed that fails ~1% of the time,
where one seed failed ~6%.
"""

import os
import subprocess
import sys
import time

import pytest
import strict_cupy

pytest.importorskip("gymnasium")

from minippo import PPO  # noqa: E402
from minippo.config import preset  # noqa: E402

pytestmark = pytest.mark.slow

SEEDS = (0, 1, 2)


def _two_of_three(train_eval, threshold):
    """Run ``train_eval(seed)`` for seeds 0, 1, 2 until two reach ``threshold`` (pass) or two miss it."""
    results = {}
    for seed in SEEDS:
        t0 = time.perf_counter()
        results[seed] = train_eval(seed)
        # seen with -s (benchmarks/gpu_check.sh): a run cut off by its time limit keeps what ended
        print(f"seed {seed}: eval mean return {results[seed]} in {time.perf_counter() - t0:.0f} s", flush=True)
        hits = sum(r >= threshold for r in results.values())
        if hits == 2 or len(results) - hits == 2:
            break
    assert sum(r >= threshold for r in results.values()) >= 2, f"eval mean return by seed: {results}"


def _train_eval(cfg, episodes=20):
    algo = PPO(cfg).learn()
    assert algo.num_timesteps <= cfg.total_timesteps + cfg.n_envs * cfg.n_steps
    return algo.evaluate(episodes, deterministic=True)["mean_return"]


def test_two_of_three_stops_when_decided_and_fails_on_two_misses():
    calls = []

    def fake(values):
        return lambda seed: calls.append(seed) or values[seed]

    _two_of_three(fake({0: 500, 1: 500, 2: 0}), 475)
    assert calls == [0, 1]
    calls.clear()
    _two_of_three(fake({0: 500, 1: 400, 2: 480}), 475)
    assert calls == [0, 1, 2]
    calls.clear()
    with pytest.raises(AssertionError, match=r"by seed: \{0: 400, 1: 500, 2: 474\}"):
        _two_of_three(fake({0: 400, 1: 500, 2: 474}), 475)


def test_cartpole_clip_preset_solves_within_100k():
    assert preset("CartPole-v1").total_timesteps == 100_000
    _two_of_three(lambda seed: _train_eval(preset("CartPole-v1", seed=seed)), 475)


def test_cartpole_kl_penalty_solves():
    _two_of_three(lambda seed: _train_eval(preset("CartPole-v1", objective="kl_penalty", seed=seed)), 475)


def test_pendulum_preset_reaches_minus_250():
    _two_of_three(lambda seed: _train_eval(preset("Pendulum-v1", seed=seed)), -250)


@pytest.mark.parametrize("rung, threshold", [("reinforce", 150), ("surrogate", 100)])
def test_the_rungs_below_ppo_learn_cartpole_in_50k(rung, threshold):
    """The ladder's REINFORCE and importance-sampled surrogate (examples/ladder.py's settings), which
    only ran in tests before. They learn, not solve: measured per seed on a 2-core Zen 4 VM (session
    42, seeds 0-7, 50k steps, 10 episodes): reinforce 486, 475, 500, 500, 486, 243, 500, 410;
    surrogate 500, 500, 500, 241, 500, 500, 500, 129 (README: single rungs move by 100+ between
    seeds). The thresholds sit under every one of those runs; an untrained policy scores ~9-10."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
    try:
        from ladder import RUNGS
    finally:
        sys.path.pop(0)
    _two_of_three(lambda seed: _train_eval(preset("CartPole-v1", total_timesteps=50_000, seed=seed,
                                                  **RUNGS[rung])), threshold)


def _train_eval_on(name, env_id, objective="clip", **overrides):
    """``train_eval(seed)`` for :func:`_two_of_three`: the preset (with ``overrides``) in a fresh
    process with MINIPPO_BACKEND=name (the backend is read once per process)."""

    def train_eval(seed):
        code = (
            "from minippo import PPO, backend\n"
            "from minippo.config import preset\n"
            f"assert backend.name == {name!r}\n"
            f"algo = PPO(preset({env_id!r}, seed={seed}, objective={objective!r}, **{overrides!r})).learn()\n"
            "print(algo.evaluate(20, deterministic=True)['mean_return'])\n"
        )
        env = {**os.environ, "MINIPPO_BACKEND": name}
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr
        return float(r.stdout.strip().splitlines()[-1])

    return train_eval


@pytest.mark.parametrize("env_id, threshold, objective, shared", [("CartPole-v1", 475, "clip", False),
                                                                  ("Pendulum-v1", -250, "clip", False),
                                                                  ("CartPole-v1", 475, "kl_penalty", False),
                                                                  ("CartPole-v1", 475, "clip", True)])
def test_numba_backend_learns_too(env_id, threshold, objective, shared):
    # The numba backend runs the fused act and minibatch-update kernels (Categorical and Gaussian;
    # PPO-clip, and PPO-penalty with its adaptive beta; separate networks or, since session 51, a shared
    # trunk: seeds 0-2 then reached 500, 500 and 452 on the 2-core Zen 4 VM).
    pytest.importorskip("numba")
    _two_of_three(_train_eval_on("numba", env_id, objective, shared=shared), threshold)


@pytest.mark.gpu
@pytest.mark.skipif(not strict_cupy.real_device(), reason="needs cupy and a CUDA device")
@pytest.mark.parametrize("env_id, threshold", [("CartPole-v1", 475), ("Pendulum-v1", -250)])
def test_cupy_backend_learns_too(env_id, threshold):
    # Parameters, Adam state and the rollout on the device; the envs and the action draws on the host.
    _two_of_three(_train_eval_on("cupy", env_id), threshold)
