"""Bad input to the public building blocks: a clear error naming the argument, raised before any
state changes (instead of a silent broadcast, truncation or a crash deep inside numpy)."""

import numpy as np
import pytest

from minippo import losses
from minippo.buffer import RolloutBuffer
from minippo.distributions import Categorical, DiagGaussian
from minippo.nn import MLP
from minippo.optim import Adam, Schedule, clip_grad_norm
from minippo.policy import ActorCritic
from minippo.spaces import Box, Discrete


def test_adam_checks_everything_before_it_changes_anything():
    params = {"a": np.ones(3), "b": np.ones((2, 3))}
    opt = Adam(params)
    before = {k: p.copy() for k, p in params.items()}
    for grads, msg in (
        ({"a": np.ones(1), "b": np.ones((2, 3))}, r"grads\['a'\] has shape \(1,\), expected \(3,\)"),
        ({"a": np.ones(3), "b": np.ones((3, 2))}, r"grads\['b'\] has shape \(3, 2\), expected \(2, 3\)"),
    ):
        with pytest.raises(ValueError, match=msg):
            opt.step(grads)
    for lr in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lr must be a finite number >= 0"):
            opt.step({"a": np.ones(3), "b": np.ones((2, 3))}, lr)
    assert opt.t == 0 and not opt._m.any() and not opt._v.any()
    for k in params:
        np.testing.assert_array_equal(params[k], before[k])
    with pytest.raises(ValueError, match="params is empty"):
        Adam({})


def test_clip_grad_norm_refuses_non_float_arrays_before_scaling():
    g = {"a": np.array([3.0, 4.0]), "b": np.array([1, 2])}
    with pytest.raises(TypeError, match=r"grads\['b'\] must be a float array, got dtype int64"):
        clip_grad_norm(g, 1.0)
    np.testing.assert_array_equal(g["a"], [3.0, 4.0])  # nothing scaled
    with pytest.raises(TypeError, match="complex"):
        clip_grad_norm({"c": np.array([3 + 4j])}, 1.0)


def test_schedule_refuses_nan_progress():
    with pytest.raises(ValueError, match="progress must be a number in"):
        Schedule("linear", 1.0, 0.0)(float("nan"))


def test_distribution_gradients_check_the_upstream_gradient_and_the_other_side():
    cat = Categorical(np.zeros((4, 3)))
    a = np.zeros(4, np.int64)
    for call in (lambda g: cat.log_prob_grad(a, g), cat.entropy_grad,
                 lambda g: cat.kl_grad(Categorical(np.ones((4, 3))), g)):
        with pytest.raises(ValueError, match=r"g must have shape \(4,\)"):
            call(np.ones((4, 1)))  # would broadcast to (4, 4, 3)
    with pytest.raises(ValueError, match=r"other distribution's logits have shape \(1, 3\), expected \(4, 3\)"):
        cat.kl(Categorical(np.zeros((1, 3))))
    gau = DiagGaussian(np.zeros((4, 2)), np.zeros(2))
    acts = np.zeros((4, 2))
    for call in (lambda g: gau.log_prob_grad(acts, g), gau.entropy_grad,
                 lambda g: gau.kl_grad(DiagGaussian(np.ones((4, 2)), np.zeros(2)), g)):
        with pytest.raises(ValueError, match=r"g must have shape \(4,\)"):
            call(np.ones((4, 1)))
    with pytest.raises(ValueError, match=r"other distribution's mean has shape \(4, 3\)"):
        gau.kl(DiagGaussian(np.zeros((4, 3)), np.zeros(3)))
    with pytest.raises(FloatingPointError, match="actions contains NaN"):
        gau.log_prob(np.full((4, 2), np.nan))


def test_categorical_refuses_what_it_cannot_normalise():
    with pytest.raises(ValueError, match="n_actions >= 1"):
        Categorical(np.zeros((2, 0)))
    for logits in (np.zeros((2, 3), bool), np.zeros((2, 3), np.complex128), np.zeros((2, 3), np.int64)):
        with pytest.raises(TypeError, match="logits must be a float array"):
            Categorical(logits)
    with pytest.raises(FloatingPointError, match="logits / temperature contains NaN or inf"), \
            np.errstate(over="ignore"):
        Categorical(np.array([[0.0, 1e308]]), temperature=0.5)  # finite logits, infinite z


def test_loss_helpers_check_their_inputs():
    with pytest.raises(ValueError, match=r"logp_old must have shape \(4,\) like logp"):
        losses.ratio_stats(np.zeros(4), np.zeros(1))
    with pytest.raises(ValueError, match="logp is empty"):
        losses.ratio_stats(np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="coef must be a finite number"):
        losses.entropy_bonus(np.ones(3), float("nan"))


def test_mlp_and_policy_constructors_and_shapes():
    for sizes in ([3.7, 2], "32", [True, 2]):
        with pytest.raises(ValueError, match="sizes must be a list of integer layer widths"):
            MLP(sizes)
    for dtype in (np.int64, bool):
        with pytest.raises(ValueError, match="dtype must be a float type"):
            MLP([3, 2], dtype=dtype)
    mlp = MLP([3, 4, 2])
    _, cache = mlp.forward(np.ones((5, 3), np.float32))
    with pytest.raises(ValueError, match=r"dy must have shape \(5, 2\) like the forward's output, got \(5, 1\)"):
        mlp.backward(np.ones((5, 1), np.float32), cache)
    pol = ActorCritic(4, Discrete(2))
    for obs in (np.zeros(1), np.float32(0.3), np.zeros((2, 3))):
        with pytest.raises(ValueError, match=r"obs must have shape \(4,\) or \(B, 4\)"):
            pol.predict(obs)
    with pytest.raises(TypeError, match="Box action dtype must be a float type"):
        Box(np.zeros(2), np.ones(2), "int64")


def test_saved_policy_predict_checks_the_observation(tmp_path):
    from minippo.checkpoint import Policy

    pol = Policy(ActorCritic(4, Discrete(2)), np.zeros(4), np.ones(4))  # with saved obs statistics
    assert pol.predict(np.zeros(4)) in (0, 1)
    for obs in (np.zeros(1), 0.3, np.zeros(3)):  # (1,) and a scalar used to broadcast against (4,)
        with pytest.raises(ValueError, match=r"obs must have shape \(4,\) or \(B, 4\)"):
            pol.predict(obs)


def test_predict_refuses_non_finite_complex_and_non_numeric_observations_and_a_bad_rng():
    """Both predict paths (a trainer's ActorCritic, a loaded Policy) say what is wrong with the
    observation instead of failing in the network (NaN logits) or dropping an imaginary part."""
    from minippo.checkpoint import Policy

    ac = ActorCritic(4, Discrete(2))
    for pol in (ac, Policy(ac, np.zeros(4), np.ones(4))):
        for bad in (np.array([0.0, np.nan, 0, 0]), np.full((2, 4), np.inf)):
            with pytest.raises(ValueError, match="obs holds NaN or inf"):
                pol.predict(bad)
        for bad in (np.zeros(4, complex), np.array(["a", "b", "c", "d"]), [None] * 4):
            with pytest.raises(TypeError, match="obs must hold real numbers, got dtype"):
                pol.predict(bad)
        with pytest.raises(TypeError, match="rng must be a numpy.random.Generator .* got int"):
            pol.predict(np.zeros(4), deterministic=False, rng=1)
        assert pol.predict(np.zeros(4), deterministic=False, rng=np.random.RandomState(0)) in (0, 1)  # legacy
        assert pol.predict(np.zeros(4, np.int64)) in (0, 1) and pol.predict([True, False, 0, 1]) in (0, 1)


def test_config_takes_numpy_scalars_as_the_numbers_they_are():
    """A sweep over np.arange or values read from arrays: numpy ints and floats are accepted and
    stored as Python numbers (to_json writes them); non-integral values for int fields still fail."""
    import json

    from minippo.config import PPOConfig

    cfg = PPOConfig(n_steps=np.int64(64), batch_size=np.int32(64), seed=np.uint8(3),
                    learning_rate=np.float32(0.5), gamma=np.float64(0.9), target_kl=np.float16(0.25))
    assert (cfg.n_steps, cfg.batch_size, cfg.seed, cfg.learning_rate, cfg.gamma, cfg.target_kl) == \
        (64, 64, 3, 0.5, 0.9, 0.25)
    assert all(type(getattr(cfg, k)) is int for k in ("n_steps", "batch_size", "seed"))
    assert all(type(getattr(cfg, k)) is float for k in ("learning_rate", "gamma", "target_kl"))
    assert json.loads(cfg.to_json())["seed"] == 3
    flags = PPOConfig(norm_obs=np.True_, clip_vloss=np.bool_(False))
    assert flags.norm_obs is True and flags.clip_vloss is False
    for field, value, msg in (("n_steps", np.float64(64), "must be an integer >= 1"),
                              ("seed", np.int64(-1), "must be an integer >= 0"),
                              ("learning_rate", np.float32("nan"), "must be a finite number > 0"),
                              ("norm_obs", np.int64(1), "must be true or false")):
        with pytest.raises(ValueError, match=f"PPOConfig.{field}=.* is invalid: {msg}"):
            PPOConfig(**{field: value})


def test_rollout_buffer_add_checks_before_writing():
    buf = RolloutBuffer(2, 3, 4, (), 2, np.float32, discrete=True)
    good = dict(obs=np.ones((3, 4)), actions=np.zeros(3, np.int64), logp=np.zeros(3), values=np.zeros(3),
                dist=np.zeros((3, 2)), rewards=np.zeros(3), dones=np.zeros(3), valid=np.ones(3))
    for name, bad in (("obs", np.ones(4)), ("logp", np.float32(0.0)), ("actions", np.zeros((3, 1), np.int64)),
                      ("dist", np.zeros((3, 3)))):
        with pytest.raises(ValueError, match=f"{name} must have shape"):
            buf.add(**{**good, name: bad})
    with pytest.raises(TypeError, match="discrete actions must be integers, got dtype float64"):
        buf.add(**{**good, "actions": np.array([0.7, 1.0, 2.0])})
    assert buf.pos == 0 and not buf.obs.any()  # nothing was written
    buf.add(**good)
    buf.add(**good)
    with pytest.raises(IndexError, match="buffer is full"):
        buf.add(**good)
    with pytest.raises(ValueError, match="batch_size and min_size must be >= 1"):
        next(buf.minibatches(0, np.random.default_rng(0)))
