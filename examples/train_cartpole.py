"""Train PPO-clip on CartPole-v1 with its tuned preset, evaluate, save, and reload for deployment.

    python examples/train_cartpole.py [--timesteps 100000] [--out cartpole.npz]
"""

import argparse

from minippo import PPO, load_policy
from minippo.config import preset


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--timesteps", type=int, default=100_000)
    ap.add_argument("--out", default="cartpole.npz")
    args = ap.parse_args()

    model = PPO(preset("CartPole-v1", total_timesteps=args.timesteps))

    def report(row: dict) -> None:
        if row["iteration"] % 50 == 0:
            print(f"{row['timesteps']:7d} steps  return {row['mean_return']:6.1f}  "
                  f"approx_kl {row['approx_kl']:.4f}  clipfrac {row['clipfrac']:.3f}")

    model.learn(callback=report)
    print("evaluation:", model.evaluate(10, deterministic=True)["mean_return"])
    model.save(args.out)

    # What runs on the small machine: numpy only, raw observations in, env actions out.
    policy = load_policy(args.out)
    print("action for a centred pole:", policy.predict([0.0, 0.0, 0.0, 0.0]))


if __name__ == "__main__":
    main()
