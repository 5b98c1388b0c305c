"""Wall time and steps/s of training CartPole-v1 with its preset, against the same number of env
steps with random actions, in one run; first on the preset's env (gymnasium's numpy-vectorised
CartPole, NEXT_STEP autoreset), then on a SyncVectorEnv of 8 CartPole envs (SAME_STEP autoreset).

    python benchmarks/train_speed.py [steps]      # steps: a positive integer, default 100000
"""

import os
import sys

# As the CLI does (minippo.cli.pin_blas_threads): one BLAS thread unless the caller chose.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy loads BLAS
    os.environ.setdefault(_var, "1")
# Measure the checkout this script is in, not whichever minippo is installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minippo.bench import train_speed  # noqa: E402


def main(argv: list[str]) -> int:
    """Parse ``[steps]``, run both timings; returns the exit code (2 for a bad argument)."""
    try:
        (steps,) = [int(a) for a in argv] or [100_000]  # int() as Python reads it: 100_000 too
    except ValueError:
        steps = 0
    if steps < 1:
        print(f"usage: python benchmarks/train_speed.py [steps]: steps must be one integer >= 1, got "
              f"{' '.join(argv)!r}", file=sys.stderr)
        return 2
    train_speed(steps)
    train_speed(steps, autoreset="same_step")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
