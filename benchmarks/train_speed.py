"""Wall time and steps/s of training CartPole-v1 with its preset, against the same number of env
steps with random actions, in one run; first on the preset's env (gymnasium's numpy-vectorised
CartPole, NEXT_STEP autoreset), then on a SyncVectorEnv of 8 CartPole envs (SAME_STEP autoreset).

    python benchmarks/train_speed.py [steps [repeats]]   # positive integers, default 100000 and 3

Each timing is the best of ``repeats`` alternating rounds (training, then the env alone, again).
"""

import os
import sys

# As the CLI does (minippo.cli.pin_blas_threads): one BLAS thread unless the caller chose.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy loads BLAS
    os.environ.setdefault(_var, "1")
# Measure the checkout this script is in, not whichever minippo is installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minippo import backend  # noqa: E402
from minippo.bench import train_speed  # noqa: E402
from minippo.config import MAX_TIMESTEPS  # noqa: E402
from minippo.envs import check_env_id  # noqa: E402

USAGE = "usage: python benchmarks/train_speed.py [steps [repeats]]"


def main(argv: list[str]) -> int:
    """Parse ``[steps [repeats]]``, run both timings; returns the exit code (2 for a bad argument, a bad
    ``MINIPPO_BACKEND`` or a missing gymnasium, each one line on stderr, as ``minippo bench`` says them;
    ``-h``/``--help`` alone prints the module docstring and returns 0)."""
    if argv in (["-h"], ["--help"]):
        print(__doc__.strip())
        return 0
    try:
        nums = [int(a) for a in argv]  # int() as Python reads it: 100_000 too
    except ValueError:
        nums = [0]
    steps, repeats = (nums + [100_000, 3][len(nums):]) if len(nums) <= 2 else (0, 0)
    if steps < 1 or repeats < 1:
        print(f"{USAGE}: steps and repeats must be integers >= 1, got {' '.join(argv)!r}", file=sys.stderr)
        return 2
    if steps > MAX_TIMESTEPS:
        print(f"{USAGE}: steps must be <= 2**62 (minippo counts steps in int64), got {steps}", file=sys.stderr)
        return 2
    try:  # MINIPPO_BACKEND and gymnasium now: one line each, not a traceback from inside the first timing
        backend.resolved()
        check_env_id("CartPole-v1")
    except (ValueError, ImportError, RuntimeError) as e:
        print(f"train_speed.py: error: {e}", file=sys.stderr)
        return 2
    train_speed(steps, repeats=repeats)
    train_speed(steps, repeats=repeats, autoreset="same_step")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
