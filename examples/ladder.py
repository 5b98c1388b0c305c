"""The ladder from policy gradient to PPO on one machinery: REINFORCE -> A2C -> importance-sampled
surrogate -> PPO-penalty -> PPO-clip, each trained on CartPole-v1 with the same budget.

    python examples/ladder.py [--timesteps 50000] [--seeds 1]

Each run trains whole rollouts (2048 env steps for REINFORCE, 256 for the others): the budget is
rounded up to a whole number of them, and each rung's line says how many steps it trained.
"""

import argparse
import os

# One BLAS thread, as the `minippo` CLI sets: faster for these small matrices, and the README's
# figures were measured so (the thread count changes summation order, so also the trajectories).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy loads
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from minippo import PPO, backend  # noqa: E402
from minippo.cli import int_arg, timesteps_arg  # noqa: E402
from minippo.config import preset  # noqa: E402
from minippo.envs import check_env_id  # noqa: E402

RUNGS: dict[str, dict] = {  # rung -> PPOConfig fields over the CartPole-v1 preset
    # REINFORCE and A2C are on-policy: one pass over each batch, each sample in one gradient step of
    # 256 samples. REINFORCE gets 256-step rollouts (8 envs x 256 steps: 2048 per rollout), so that its
    # returns run to the episode's end wherever the episode ends inside the rollout (the `mc` estimator
    # bootstraps an episode still running at the rollout's end from V(s_T)); with the preset's 32
    # steps most of them would be bootstrapped. Both rungs take about as many gradient steps (200
    # and 196 at 50,000 steps: whole rollouts of 2048 and 256 steps), at a constant learning rate:
    # the preset's linear decay to 0 would halve the little they move in one pass over each batch.
    # The other three keep the preset (20 epochs of minibatches, lr decayed linearly to 0).
    "reinforce": dict(objective="reinforce", n_epochs=1, batch_size=256, n_steps=256,
                      lr_schedule="constant"),
    "a2c": dict(objective="a2c", n_epochs=1, batch_size=256, lr_schedule="constant"),
    "surrogate": dict(objective="surrogate"),
    "kl_penalty": dict(objective="kl_penalty"),
    "clip": dict(objective="clip"),
}


# argparse type: an integer >= 1 (and --timesteps: minippo.cli.timesteps_arg)
positive = int_arg(1)


def main() -> None:
    """Train each rung on seeds 0 .. --seeds - 1 and print its mean deterministic return (and each
    seed's, when there are several)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timesteps", type=timesteps_arg, default=50_000,
                    help="env steps per run, a budget: each run trains whole rollouts (default 50000)")
    ap.add_argument("--seeds", type=positive, default=1, help="runs per rung, seeds 0, 1, ... (default 1)")
    args = ap.parse_args()
    try:  # MINIPPO_BACKEND read now: a bad value is one line here, not a traceback from inside training
        backend.resolved()
    except (ValueError, ImportError, RuntimeError) as e:
        ap.error(str(e))
    try:  # gymnasium too: one line, as `minippo bench` says it, not a traceback from the first rung
        check_env_id("CartPole-v1")
    except (ImportError, ValueError) as e:
        ap.error(str(e))
    print(f"CartPole-v1, a budget of {args.timesteps} env steps per run (rounded up to whole rollouts), "
          "deterministic evaluation over 10 episodes")
    for name, overrides in RUNGS.items():
        scores, steps = [], set()
        for seed in range(args.seeds):
            cfg = preset("CartPole-v1", total_timesteps=args.timesteps, seed=seed, **overrides)
            with PPO(cfg) as algo:  # its env closed at the end of the block
                algo.learn()
            scores.append(algo.evaluate(10)["mean_return"])
            steps.add(algo.num_timesteps)
        each = f"  per seed {' '.join(f'{x:.1f}' for x in scores)}" if len(scores) > 1 else ""  # (they vary)
        print(f"  {name:11s} {np.mean(scores):7.1f}{each}  ({'/'.join(map(str, sorted(steps)))} env steps)")


if __name__ == "__main__":
    main()
