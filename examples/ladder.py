"""The ladder from policy gradient to PPO on one machinery: REINFORCE -> A2C -> importance-sampled
surrogate -> PPO-penalty -> PPO-clip, each trained on CartPole-v1 with the same budget.

    python examples/ladder.py [--timesteps 50000] [--seeds 1]
"""

import argparse

import numpy as np

from minippo import PPO
from minippo.config import preset

RUNGS = {
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--timesteps", type=int, default=50_000)
    ap.add_argument("--seeds", type=int, default=1)
    args = ap.parse_args()
    print(f"CartPole-v1, {args.timesteps} steps, deterministic evaluation over 10 episodes")
    for name, overrides in RUNGS.items():
        scores = []
        for seed in range(args.seeds):
            cfg = preset("CartPole-v1", total_timesteps=args.timesteps, seed=seed, **overrides)
            scores.append(PPO(cfg).learn().evaluate(10)["mean_return"])
        print(f"  {name:11s} {np.mean(scores):7.1f}")


if __name__ == "__main__":
    main()
