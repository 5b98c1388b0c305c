"""Look at PPO's gradients: one minibatch, every parameter gradient from the hand-written
backward pass, checked against central finite differences in float64.

    python examples/inspect_gradients.py
"""

import argparse
import os

# One BLAS thread, as the `minippo` CLI sets (faster for these small matrices).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy loads
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from minippo import backend  # noqa: E402
from minippo.config import PPOConfig  # noqa: E402
from minippo.gradcheck import grad_errors  # noqa: E402
from minippo.policy import ActorCritic  # noqa: E402
from minippo.ppo import loss_and_grads  # noqa: E402
from minippo.spaces import Discrete  # noqa: E402


def main() -> None:
    """Print the minibatch's loss terms, then per parameter array: shape, gradient norm, and the
    error of the hand-written gradient against central differences (relative; absolute below a floor)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.parse_args()
    try:  # MINIPPO_BACKEND read now: a bad value is one line here, not a traceback from inside training
        backend.resolved()
    except (ValueError, ImportError, RuntimeError) as e:
        ap.error(str(e))
    rng = np.random.default_rng(0)
    policy = ActorCritic(obs_dim=4, action_space=Discrete(2), hidden=(16, 16), dtype=np.float64)
    obs = rng.standard_normal((32, 4))
    actions, logp_old, values_old, _ = policy.act(obs, rng)
    # Pretend pi_theta has moved away from pi_old a little, so some ratios are clipped.
    batch = {
        "obs": obs,
        "actions": actions,
        "logp_old": logp_old + 0.3 * rng.standard_normal(32),
        "advantages": rng.standard_normal(32),
        "returns": values_old + rng.standard_normal(32),
        "values_old": values_old,
    }
    config = PPOConfig(objective="clip", clip_eps=0.2, ent_coef=0.01, n_steps=32, batch_size=32)
    stats, grads = loss_and_grads(policy, batch, config)
    print({k: round(v, 5) for k, v in stats.items()})

    def loss() -> float:
        return loss_and_grads(policy, batch, config)[0]["loss"]

    # The oracle: (f(p + h) - f(p - h)) / (the step taken) for every coordinate of every parameter
    # array. The error is ||grad - numeric|| / max(||grad||, ||numeric||, floor), floor = 1e-3 *
    # max(1, |loss|): relative, but absolute for an array whose gradient is ~0 (there the differences
    # carry only their rounding noise). minippo.gradcheck.check_grads takes the largest of these.
    # The actor's arrays are the small ones (most of them under the floor): its output layer starts at
    # gain 0.01 (a near-uniform first policy), so the gradients reaching its hidden layers are two orders
    # of magnitude smaller than the critic's.
    errors = grad_errors(loss, policy.params, grads)
    floor = 1e-3 * max(1.0, abs(loss()))
    print(f"error = ||grad - numeric|| / max(||grad||, ||numeric||, {floor:.1e}); * marks arrays under that floor")
    for name, g in grads.items():
        mark = "*" if np.linalg.norm(g) < floor else " "
        print(f"{name:10s} shape {str(g.shape):10s} |grad| = {np.linalg.norm(g):.3e}{mark} error {errors[name]:.1e}")
    print(f"largest error vs finite differences: {max(errors.values()):.2e}")


if __name__ == "__main__":
    main()
