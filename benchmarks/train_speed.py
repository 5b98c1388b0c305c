"""Wall time and steps/s of training CartPole-v1 with its preset for 100k steps, against the same
number of env steps with random actions, in one run. Usage: python benchmarks/train_speed.py [steps]"""

import os
import sys

# As the CLI does: one BLAS thread unless the caller chose (see minippo.cli.pin_blas_threads).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from minippo.bench import train_speed  # noqa: E402

if __name__ == "__main__":
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    train_speed(steps)  # the preset: gymnasium's numpy-vectorised CartPole (NEXT_STEP autoreset)
    train_speed(steps, autoreset="same_step")  # the same on a SyncVectorEnv of 8 CartPole envs
