"""Train PPO-clip on CartPole-v1 with its tuned preset, evaluate, save, and reload for deployment.

    python examples/train_cartpole.py [--timesteps 100000] [--seed 0] [--out cartpole.npz]
"""

import argparse
import os

# One BLAS thread, as the `minippo` CLI sets: PPO's 64-wide matrices gain nothing from more, and a
# second thread on a busy small machine slows them several-fold (minippo.cli.pin_blas_threads;
# README, "Reproducibility").
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy loads
    os.environ.setdefault(_var, "1")

from minippo import PPO, backend, load_policy  # noqa: E402
from minippo.checkpoint import check_save_path  # noqa: E402
from minippo.cli import int_arg, timesteps_arg  # noqa: E402
from minippo.config import preset  # noqa: E402
from minippo.envs import check_env_id  # noqa: E402

natural = int_arg(0)  # argparse type: an integer >= 0 (and --timesteps: minippo.cli.timesteps_arg)


def main() -> None:
    """Train, print progress every 50 updates, evaluate, save to --out, reload it and act once."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timesteps", type=timesteps_arg, default=100_000, help="env steps to train (default 100000)")
    ap.add_argument("--seed", type=natural, default=0, help="seed of the run, an integer >= 0 (default 0)")
    ap.add_argument("--out", default="cartpole.npz", help="model file to write (default cartpole.npz)")
    args = ap.parse_args()
    try:  # MINIPPO_BACKEND read now: a bad value is one line here, not a traceback from inside training
        backend.resolved()
    except (ValueError, ImportError, RuntimeError) as e:
        ap.error(str(e))
    try:  # found now, not after training with the model lost; the example loads the model back
        check_save_path(args.out, reread=True)
    except OSError as e:
        ap.error(f"--out {args.out!r}: cannot save the model there: {e}")
    try:  # gymnasium too: one line, as `minippo bench` says it, not a traceback from inside PPO()
        check_env_id("CartPole-v1")
    except (ImportError, ValueError) as e:
        ap.error(str(e))

    model = PPO(preset("CartPole-v1", total_timesteps=args.timesteps, seed=args.seed))

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
