"""The ladder from policy gradient to PPO on one machinery: REINFORCE -> A2C -> importance-sampled
surrogate -> PPO-penalty -> PPO-clip, each trained on CartPole-v1 with the same budget.

    python examples/ladder.py [--timesteps 50000] [--seeds 1]
"""

import argparse
import os

# One BLAS thread, as the `minippo` CLI sets: faster for these small matrices, and the README's
# figures were measured so (the thread count changes summation order, so also the trajectories).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy loads
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from minippo import PPO, backend  # noqa: E402
from minippo.config import preset  # noqa: E402

RUNGS: dict[str, dict] = {  # rung -> PPOConfig fields over the CartPole-v1 preset
    # REINFORCE and A2C are on-policy: one pass over each batch, each sample in one gradient step of
    # 256 samples. REINFORCE gets 256-step rollouts (8 steps of 256 per rollout), so that its returns
    # run to the episode's end wherever the episode ends inside the rollout (the `mc` estimator
    # bootstraps an episode still running at the rollout's end from V(s_T)); with the preset's 32
    # steps most of them would be bootstrapped. Both rungs take about as many gradient steps (200
    # and 196 at 50,000 steps: whole rollouts of 2048 and 256 steps).
    "reinforce": dict(objective="reinforce", n_epochs=1, batch_size=256, n_steps=256,
                      lr_schedule="constant"),
    "a2c": dict(objective="a2c", n_epochs=1, batch_size=256, lr_schedule="constant"),
    "surrogate": dict(objective="surrogate"),
    "kl_penalty": dict(objective="kl_penalty"),
    "clip": dict(objective="clip"),
}


def positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {n}")
    return n


def main() -> None:
    """Train each rung on seeds 0 .. --seeds - 1 and print its mean deterministic return."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timesteps", type=positive, default=50_000, help="env steps per run (default 50000)")
    ap.add_argument("--seeds", type=positive, default=1, help="runs per rung, seeds 0, 1, ... (default 1)")
    args = ap.parse_args()
    try:  # MINIPPO_BACKEND read now: a bad value is one line here, not a traceback from inside training
        backend.resolved()
    except (ValueError, ImportError, RuntimeError) as e:
        ap.error(str(e))
    print(f"CartPole-v1, {args.timesteps} steps, deterministic evaluation over 10 episodes")
    for name, overrides in RUNGS.items():
        scores = []
        for seed in range(args.seeds):
            cfg = preset("CartPole-v1", total_timesteps=args.timesteps, seed=seed, **overrides)
            scores.append(PPO(cfg).learn().evaluate(10)["mean_return"])
        print(f"  {name:11s} {np.mean(scores):7.1f}")


if __name__ == "__main__":
    main()
