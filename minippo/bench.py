"""Training speed vs env stepping alone, measured in one run (``minippo bench``,
``benchmarks/train_speed.py``). Prints numbers and ratios; asserts nothing."""

from __future__ import annotations

import time
from typing import Any

import numpy as np


def env_stepping(config: Any, timesteps: int) -> float:
    """Seconds to step ``config``'s vector env ``timesteps`` times (summed over envs) with random actions."""
    from minippo.envs import make_vec_env

    env = make_vec_env(config.env_id, config.n_envs, config.vector, config.autoreset, config.env_kwargs)
    try:
        env.reset(seed=0)
        env.action_space.seed(0)
        actions = [env.action_space.sample() for _ in range(64)]
        n_calls = -(-timesteps // config.n_envs)
        t0 = time.perf_counter()
        for i in range(n_calls):
            env.step(actions[i % 64])
        return time.perf_counter() - t0
    finally:
        env.close()


def train_speed(timesteps: int = 100_000, env_id: str = "CartPole-v1", repeats: int = 1,
                **overrides: Any) -> dict[str, float]:
    """Train the preset of ``env_id`` for ``timesteps`` and time env stepping alone; print both.

    Times ``learn()`` alone (the env and policy are built before), after an untimed start-up run, so
    one-off costs (imports, numba compiles or cache loads) count in neither side of the ratio.
    ``repeats`` (an integer >= 1): that many rounds, each a fresh trainer of the same seed (the same
    work) then the env on its own; the best time of each side is reported, so a slow spell of the
    machine lands on one round rather than on one side of the ratio.
    Returns the figures printed: seconds (best, and the slowest round's as ``*_max_s``), steps/s,
    their ratio, the evaluation return, the start-up's seconds and the part of them numba spent
    compiling."""
    from minippo import backend
    from minippo.config import preset
    from minippo.ppo import PPO

    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    cfg = preset(env_id, total_timesteps=timesteps, **overrides)
    # Start-up, untimed but reported: one rollout and update of a throwaway trainer pays the one-off
    # costs (numba's import and its compiles or cache loads, gymnasium's env registry), which
    # otherwise land in whichever timing of a process runs first.
    t0, compiled = time.perf_counter(), backend.numba_compile_seconds()
    with PPO(cfg.replace(total_timesteps=1)) as throwaway:
        throwaway.learn()
    startup_s = time.perf_counter() - t0
    startup_compile_s = backend.numba_compile_seconds() - compiled
    rounds = []  # (train wall s, train process CPU s, env wall s)
    for _ in range(int(repeats)):
        algo = PPO(cfg)  # builds the env: outside the timed region, as env_stepping's is
        with algo:  # (its env closed after: evaluate makes its own)
            t0, c0 = time.perf_counter(), time.process_time()
            algo.learn()
            train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
        rounds.append((train_s, train_cpu, env_stepping(cfg, algo.num_timesteps)))  # as many steps
    train_s, train_cpu, _ = min(rounds)
    env_s = min(r[2] for r in rounds)
    ev = algo.evaluate(10)["mean_return"]
    res = {
        "train_s": train_s,
        "train_max_s": max(r[0] for r in rounds),
        "train_cpu_s": train_cpu,
        "train_steps_per_s": algo.num_timesteps / train_s,
        "env_only_s": env_s,
        "env_only_max_s": max(r[2] for r in rounds),
        "env_only_steps_per_s": algo.num_timesteps / env_s,
        "ratio_train_over_env": train_s / env_s,
        "eval_mean_return": ev,
        "startup_s": startup_s,
        "startup_compile_s": startup_compile_s,
    }
    import os

    threads = os.environ.get("OPENBLAS_NUM_THREADS", "unset")
    print(f"backend {backend.name}, OPENBLAS_NUM_THREADS={threads}, {env_id} preset, {algo.num_timesteps} steps, "
          f"autoreset {cfg.autoreset}, numpy {np.__version__}"
          + (f", best of {repeats} alternating rounds" if repeats > 1 else ""))
    train_rounds = f"; rounds {train_s:.2f}-{res['train_max_s']:.2f} s" if repeats > 1 else ""
    env_rounds = f"; rounds {env_s:.2f}-{res['env_only_max_s']:.2f} s" if repeats > 1 else ""
    print(f"  training         {train_s:7.2f} s  {res['train_steps_per_s']:9.0f} steps/s  "
          f"(process CPU {train_cpu:.2f} s; eval return {ev:.1f}{train_rounds})")
    print(f"  env stepping     {env_s:7.2f} s  {res['env_only_steps_per_s']:9.0f} steps/s  "
          f"(random actions{env_rounds})")
    compiling = f"; {startup_compile_s:.2f} s of it numba compiling kernels" if startup_compile_s > 0 else ""
    print(f"  ratio training / env stepping: {res['ratio_train_over_env']:.1f}x  (untimed start-up before "
          f"both: {startup_s:.2f} s, one rollout and update{compiling})")
    return res
