"""Checkpoints saved by minippo 0.1.0 (format 1) keep loading and acting as they did.

The files in tests/data were written once by tests/data/make_format1.py and are never regenerated
to make this pass: a change that stops them loading, or changes what they do, breaks users' saved
models. The expected actions and values below are what the saving version printed.

Tolerances: the networks are float32 with one hidden layer of 8 units; a BLAS other than the one
that printed the numbers may sum the 3-4 input and 8 hidden products in another order, a few
float32 roundings (~1e-7 relative) of O(1) terms: rtol 1e-5, atol 1e-6. The discrete actions are
compared exactly: their two logits differ by >= 0.014, five orders of magnitude above that rounding
(checked below).
"""

import os

import numpy as np
import pytest

from minippo import load_policy
from minippo.checkpoint import FORMAT, read_checkpoint

DATA = os.path.join(os.path.dirname(__file__), "data")
TOL = dict(rtol=1e-5, atol=1e-6)
CASES = {
    "format1_cartpole.npz": dict(
        obs=[[0.01, -0.2, 0.03, 0.3], [-0.5, 0.4, -0.1, -0.6], [1.0, 1.5, 0.2, -1.0]],
        actions=[1, 1, 0],
        values=[0.02484302967786789, 0.09256622940301895, -0.4744015336036682],
        beta=1.0,
        env_id="CartPole-v1",
    ),
    "format1_pendulum.npz": dict(
        obs=[[1.0, 0.0, 0.0], [0.0, 1.0, -3.0], [-0.6, -0.8, 5.0]],
        actions=[[-0.004865697585046291], [-0.011164864525198936], [0.005753079894930124]],
        values=[0.8433302640914917, -0.44307202100753784, -0.5296729803085327],
        beta=0.25,  # kl_penalty halved it twice in the saved run
        env_id="Pendulum-v1",
    ),
}


def test_this_version_writes_the_format_the_files_have():
    assert FORMAT == 1


@pytest.mark.parametrize("name", sorted(CASES))
def test_saved_files_keep_their_meta(name):
    meta, arrays = read_checkpoint(os.path.join(DATA, name))
    case = CASES[name]
    assert (meta["format"], meta["minippo"]) == (1, "0.1.0")
    assert (meta["num_timesteps"], meta["iteration"], meta["total_timesteps"], meta["adam_t"]) == (64, 2, 64, 8)
    assert meta["beta"] == case["beta"] and meta["config"]["env_id"] == case["env_id"]
    assert all(arrays[k].dtype == np.float32 for k in arrays if k.startswith(("param/", "adam/")))


@pytest.mark.parametrize("name", sorted(CASES))
def test_saved_files_load_with_numpy_alone_and_act_as_they_did(name):
    case = CASES[name]
    pol = load_policy(os.path.join(DATA, name))
    obs = np.array(case["obs"])
    dist, values, _ = pol.policy.forward(pol.normalize(obs))
    np.testing.assert_allclose(values, case["values"], **TOL)
    got = pol.predict(obs)
    if pol.policy.discrete:
        assert float(np.abs(np.diff(dist.logits, axis=1)).min()) > 0.01  # far from a tie: exact compare
        np.testing.assert_array_equal(got, case["actions"])
    else:
        np.testing.assert_allclose(got, case["actions"], **TOL)
    for row, want in zip(obs, case["actions"], strict=True):  # one observation at a time, as deployed
        np.testing.assert_allclose(pol.predict(row), want, **TOL)


@pytest.mark.parametrize("name", sorted(CASES))
def test_saved_files_resume_training_with_their_state(name):
    pytest.importorskip("gymnasium")
    from minippo import PPO

    path = os.path.join(DATA, name)
    _, arrays = read_checkpoint(path)
    algo = PPO.load(path, total_timesteps=96)
    assert (algo.num_timesteps, algo.iteration, algo.optimizer.t, algo.kl_coef.beta) == (64, 2, 8, CASES[name]["beta"])
    assert algo.time_elapsed == 0.0  # 0.1.0 did not save the training time: the resumed run counts from 0
    for k, p in algo.policy.params.items():
        np.testing.assert_array_equal(p, arrays[f"param/{k}"])
    np.testing.assert_array_equal(algo.obs_norm.rms.mean, arrays["obs_rms.mean"])
    algo.learn()
    assert (algo.num_timesteps, algo.iteration, algo.optimizer.t) == (96, 3, 12)
