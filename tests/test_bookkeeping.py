"""Trainer bookkeeping that a mutation run (session 17: 104 mutants, 9 survived) showed untested:
the logged episode history across a resume, next_step mode's masked reset steps in episode lengths
and explained variance, the trainer's log-std projection, the +-10 observation clip at training and
at deployment, and the shared trunk's init gain. Each test here kills one surviving mutant.

Tolerances, and why:
- The logged explained variance is compared with == : the trainer calls the same function on the same
  masked arrays. The clip bounds (10.0, LOG_STD_MAX) are returned as they are: ==.
- W^T W = gain^2 I (float64): Householder QR's Q is orthogonal to ~m n eps (16 x 8: <= ~1.4e-14), the
  gain scaling rounds each entry once and W^T W sums 16 products: atol 1e-13, rtol 0 (the default rtol
  1e-7 allowed 2e-7 on the diagonal); measured 1.3e-15. A wrong gain (1 or 0.01) is off by >= 1.
"""

import os

import numpy as np
import pytest

pytest.importorskip("gymnasium")

from envs_for_tests import COUNTER_ID, register  # noqa: E402

from minippo import PPO  # noqa: E402
from minippo.checkpoint import Policy  # noqa: E402
from minippo.config import PPOConfig, preset  # noqa: E402
from minippo.envs import ObsNormalizer  # noqa: E402
from minippo.nn import MLP  # noqa: E402
from minippo.policy import LOG_STD_MAX, ActorCritic  # noqa: E402
from minippo.ppo import NumpyStep, explained_variance  # noqa: E402
from minippo.spaces import Discrete  # noqa: E402


def test_resume_restores_the_logged_episode_history(tmp_path):
    """mean_return in the rows after a resume averages the saved episodes too (a loader that dropped
    them logged NaN or a mean over the new episodes only)."""
    algo = PPO(preset("CartPole-v1", total_timesteps=2048)).learn(1024)
    assert len(algo.episode_returns) > 0
    path = os.path.join(tmp_path, "m.npz")
    algo.save(path)
    back = PPO.load(path)
    assert list(back.episode_returns) == list(algo.episode_returns)
    assert list(back.episode_lengths) == list(algo.episode_lengths)


def test_next_step_mode_counts_no_masked_reset_step():
    """Counter-v0 episodes last 3 steps; in next_step mode each env's reset step is masked and must
    not lengthen the next episode (counting it logged [3, 3, 4, 4, 4, 4])."""
    register()
    algo = PPO(PPOConfig(env_id=COUNTER_ID, n_envs=2, n_steps=12, batch_size=8, hidden=(4,),
                         autoreset="next_step"))
    algo.collect_rollout()
    assert list(algo.episode_lengths) == [3] * 6 and list(algo.episode_returns) == [3.0] * 6


def test_logged_explained_variance_leaves_out_masked_steps():
    register()
    algo = PPO(PPOConfig(env_id=COUNTER_ID, n_envs=1, n_steps=8, batch_size=8, hidden=(4,),
                         autoreset="next_step"))
    algo.collect_rollout()
    out = algo.update(0.0)
    b = algo.buffer
    valid = b.valid.reshape(-1) > 0
    assert not valid.all()  # the rollout has masked steps for the test to mean something
    assert out["explained_variance"] == explained_variance(b.values.reshape(-1)[valid], b.returns.reshape(-1)[valid])


def test_numpy_step_projects_log_std_back_into_its_range():
    """The trainer's step (not only the policy method) clamps log_std after Adam moves it."""
    algo = PPO(PPOConfig(env_id="Pendulum-v1", n_envs=1, n_steps=8, batch_size=8, hidden=(4,)))
    algo.policy.params["log_std"][...] = LOG_STD_MAX
    step = NumpyStep(algo.policy, algo.optimizer, algo.config, 1.0)
    step.grads = {k: np.zeros_like(v) for k, v in algo.policy.params.items()}
    step.grads["log_std"][...] = -1.0  # descent pushes log_std up, past the bound
    step.step(lr=0.5, max_grad_norm=0.0)
    assert (algo.policy.params["log_std"] == LOG_STD_MAX).all()


def test_observations_are_clipped_to_10_in_training_and_deployment():
    """Both sides clip at +-10 (PPO detail); a policy deployed with another bound sees other inputs."""
    assert ObsNormalizer(1)(np.array([[50.0], [-50.0]]))[:, 0].tolist() == [10.0, -10.0]
    policy = Policy(ActorCritic(1, Discrete(2)), np.zeros(1), np.ones(1))
    assert policy.normalize(np.array([50.0]))[0] == 10.0 and policy.normalize(np.array([-50.0]))[0] == -10.0


def test_an_activated_last_layer_gets_the_hidden_gain():
    """A shared trunk's last layer is a hidden layer (tanh after it): gain sqrt(2), not the head's."""
    m = MLP([3, 16, 8], activate_output=True, seed=0, dtype=np.float64)
    w = m.params["W1"]  # (16, 8): orthonormal columns times the gain
    np.testing.assert_allclose(w.T @ w, 2.0 * np.eye(8), rtol=0, atol=1e-13)
    pol = ActorCritic(3, Discrete(2), hidden=(16, 8), shared=True, dtype=np.float64)
    w = pol.trunk.params["W1"]
    np.testing.assert_allclose(w.T @ w, 2.0 * np.eye(8), rtol=0, atol=1e-13)
