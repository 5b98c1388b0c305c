"""Where the cupy backend's time goes on a small preset, for a machine with a CUDA device.

    python benchmarks/cupy_profile.py [STEPS]    # default 16384 env steps of the CartPole preset

Prints (1) ``ActorCritic.act`` at batch 8 (the CartPole preset's policy, its observations uploaded
as in a rollout step): microseconds per call, then cProfile's top functions by own time over 500
calls; (2) ``PPO.learn`` on the CartPole preset for STEPS env steps, after a short warm-up run that
compiles CuPy's kernels: steps per second, then the top functions by cumulative and by own time.
CuPy launches run asynchronously, so the device's time lands on the calls that wait for it (a
read-back, ``bool()`` of a device value, a synchronise); the rest is Python and launch overhead,
which is what bounds small networks on a GPU (docs/kernels.md, "The first real device").
``MINIPPO_BACKEND`` is set to cupy unless it is set already; the script fails when the backend in
use is not cupy (exit 1), or cannot be used (cupy not installed, no device: one line, exit 2). Needs
gymnasium.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("MINIPPO_BACKEND", "cupy")

import numpy as np  # noqa: E402

from minippo import PPO, backend  # noqa: E402
from minippo.config import preset  # noqa: E402
from minippo.policy import ActorCritic  # noqa: E402
from minippo.spaces import Discrete  # noqa: E402

USAGE = "usage: python benchmarks/cupy_profile.py [STEPS] (STEPS: env steps to profile, an integer >= 1)"


def top(profile: cProfile.Profile, key: str, n: int) -> str:
    """cProfile's table of the ``n`` functions first by ``key`` ('tottime' or 'cumulative')."""
    out = io.StringIO()
    pstats.Stats(profile, stream=out).strip_dirs().sort_stats(key).print_stats(n)
    return out.getvalue()


def main(argv: list[str]) -> int:
    try:
        steps = int(argv[0]) if argv else 16384
    except ValueError:
        steps = 0
    if len(argv) > 1 or steps < 1:
        print(USAGE, file=sys.stderr)
        return 2
    try:  # cupy missing (or no device): one line, not a traceback
        name = backend.resolved()[0]
    except (ValueError, ImportError, RuntimeError) as e:
        print(f"cupy_profile.py: error: {e}", file=sys.stderr)
        return 2
    if name != "cupy":
        print(f"the backend in use is {name}, not cupy (MINIPPO_BACKEND={os.environ['MINIPPO_BACKEND']})",
              file=sys.stderr)
        return 1
    sync = backend.xp.cuda.Device().synchronize

    pol = ActorCritic(4, Discrete(2), (64, 64)).to(backend.to_device)
    obs = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    rng = np.random.default_rng(0)

    def acts(n: int) -> None:  # n rollout steps' acting: the observations up, act, then a synchronise
        for _ in range(n):
            pol.act(backend.to_device(obs), rng)
        sync()

    acts(50)  # CuPy compiles each kernel on its first call
    t0 = time.perf_counter()
    acts(500)
    print(f"ActorCritic.act, CartPole policy, B = 8: {(time.perf_counter() - t0) / 500 * 1e6:.1f} us per call")
    profile = cProfile.Profile()
    profile.enable()
    acts(500)
    profile.disable()
    print(top(profile, "tottime", 20))

    cfg = preset("CartPole-v1")
    cfg.total_timesteps = 2 * cfg.n_envs * cfg.n_steps  # the warm-up: two iterations
    with PPO(cfg) as warm:
        warm.learn()
    cfg.total_timesteps, cfg.seed = steps, cfg.seed + 1
    algo = PPO(cfg)
    profile = cProfile.Profile()
    t0 = time.perf_counter()
    profile.enable()
    algo.learn()
    sync()
    profile.disable()
    elapsed = time.perf_counter() - t0
    print(f"PPO.learn, CartPole preset, {algo.num_timesteps} env steps: {elapsed:.1f} s, "
          f"{algo.num_timesteps / elapsed:.0f} steps/s (profiled)")
    print(top(profile, "cumulative", 30))
    print(top(profile, "tottime", 25))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
