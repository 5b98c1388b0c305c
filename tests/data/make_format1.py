"""How the checkpoints in this folder were made (minippo 0.1.0, checkpoint format 1).

They are kept as they were written, so that tests/test_checkpoint_files.py can show that files
saved by this version keep loading and acting the same. Do not re-run this to make a failing test
pass: a change that stops these files from loading breaks every user's saved models. Run it (from
the repository root, ``python tests/data/make_format1.py``) only when a new checkpoint format is
introduced, into new file names, keeping these.
"""

import os

import numpy as np

from minippo import PPO, PPOConfig, load_policy

HERE = os.path.dirname(os.path.abspath(__file__))
SMALL = dict(n_envs=2, n_steps=16, batch_size=16, n_epochs=2, total_timesteps=64, hidden=(8,), seed=0)
RUNS = {
    # Discrete head, separate actor and critic, observation normalisation, PPO-clip.
    "format1_cartpole.npz": PPOConfig(env_id="CartPole-v1", norm_obs=True, **SMALL),
    # Gaussian head, shared trunk, both normalisers, adaptive KL penalty (a beta to restore).
    "format1_pendulum.npz": PPOConfig(env_id="Pendulum-v1", norm_obs=True, norm_reward=True,
                                      objective="kl_penalty", shared=True, **SMALL),
}
OBS = {  # what the tests feed the loaded policies
    "format1_cartpole.npz": np.array([[0.01, -0.2, 0.03, 0.3], [-0.5, 0.4, -0.1, -0.6], [1.0, 1.5, 0.2, -1.0]]),
    "format1_pendulum.npz": np.array([[1.0, 0.0, 0.0], [0.0, 1.0, -3.0], [-0.6, -0.8, 5.0]]),
}


def main() -> None:
    """Train each small run, save it here, and print what the tests hard-code."""
    for name, cfg in RUNS.items():
        algo = PPO(cfg)
        algo.learn()
        path = os.path.join(HERE, name)
        algo.save(path)
        pol = load_policy(path)
        obs = pol.normalize(OBS[name])
        _, values = pol.policy.forward(obs)[:2]
        np.set_printoptions(precision=9, floatmode="unique")
        print(name, os.path.getsize(path), "bytes")
        print("  predict:", pol.predict(OBS[name]).tolist())
        print("  values: ", np.asarray(values).tolist())


if __name__ == "__main__":
    main()
