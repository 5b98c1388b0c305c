"""Bad input to the public building blocks: a clear error naming the argument, raised before any
state changes (instead of a silent broadcast, truncation or a crash deep inside numpy).

Tolerances, and why (the few numeric checks here; float64):
- normalize against (a - a.mean()) / (a.std() + 1e-8): at shift 0 a few roundings of z-scores <= 3
  (~1e-15; measured <= 1.3e-15 over 2000 seeds): atol 1e-14. At shift 1e6 the error is the
  reference's: its a.mean() of values ~1e6 is rounded to a multiple of ulp(1e6) = 1.2e-10 and carries
  the sum's rounding, and its deviations carry that error over a std of ~1 (normalize subtracts A_0
  first and does not): atol 1e-9 (measured 1.7e-11 here, <= 1.8e-10 over 2000 seeds).
- check_grads of sum(a**2): a central difference of a quadratic has no truncation error; its rounding,
  ~4 eps |f| / (2h |g|) and the rounded step a + h, is <= ~5e-10 relative at h = 1e-6: < 1e-8
  (measured 5.6e-11).
- clip_grad_norm's norm of eight 3s: the squares and their sum (72) are exact and both sides take one
  correctly rounded sqrt: ==. The normaliser set by hand: the test's formula with the same operations,
  rtol 1e-15 (measured: bit-equal).
- "count < 1e-3": a RunningMeanStd's count is its 1e-4 prior until a sample is folded in (+1 or more).
"""

from decimal import Decimal
from types import MappingProxyType

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


def test_adam_refuses_parameters_it_cannot_update():
    """Integer parameters failed at the first step (a ufunc casting error naming nothing, after
    counting the step); mixed dtypes ran with moments in the first array's dtype."""
    for params, msg in (({"w": np.zeros(2, int)}, r"params\['w'\] must be a float32 or float64 array, got int64"),
                        ({"w": [1.0]}, r"params\['w'\] must be a float32 or float64 array, got list"),
                        ({"a": np.zeros(2), "b": np.zeros(2, np.float32)},
                         r"params\['b'\] is float32, the first parameter float64")):
        with pytest.raises(TypeError, match=msg):
            Adam(params)


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
    # a complex g lost its imaginary part; complex actions gave complex log-probs, string ones an
    # isfinite error that named nothing
    for call in (lambda g: cat.log_prob_grad(a, g), lambda g: gau.log_prob_grad(acts, g), gau.entropy_grad):
        with pytest.raises(TypeError, match="^g must be a real array, got dtype complex128$"):
            call(np.ones(4, complex))
    for bad in (acts.astype(complex), acts.astype("U3")):
        with pytest.raises(TypeError, match=f"^actions must be a real array, got dtype {bad.dtype}$"):
            gau.log_prob(bad)
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
    # integer inputs gave all-zero gradients (cast back to int), a list an AttributeError
    z, i = np.zeros(4), np.zeros(4, int)
    f = "must be a float32 or float64 array"
    for call, msg in ((lambda: losses.clip_objective(i, z, z + 1, 0.2), f"logp {f}, got dtype int64"),
                      (lambda: losses.clip_objective(z, z, i, 0.2), f"adv {f}, got dtype int64"),
                      (lambda: losses.value_loss(i, z + 1, z, 0.5), f"values {f}"),
                      (lambda: losses.value_loss(z, z + 1, i, 0.5), f"values_old {f}"),
                      (lambda: losses.surrogate_objective(z.astype(complex), z, z), "got dtype complex128"),
                      (lambda: losses.clip_objective([0.0], [0.0], [1.0], 0.2), rf"logp {f} of shape \(B,\), got list"),
                      ):
        with pytest.raises(TypeError, match=msg):
            call()


def test_normalize_checks_its_input_and_gives_zero_for_equal_advantages():
    from minippo.ppo import normalize

    with pytest.raises(ValueError, match=r"adv must have shape \(B,\), got \(\)"):
        normalize(np.float64(1.0))
    with pytest.raises(ValueError, match=r"adv must have shape \(B,\), got \(2, 2\)"):
        normalize(np.ones((2, 2)))
    with pytest.raises(TypeError, match=r"^adv must be an array .*got list$"):  # (was a ValueError on shape)
        normalize([1.0, 2.0])
    for bad in (np.array([1, 2, 3]), np.array([True, False])):  # came back as [-1 0 1], [True True]
        with pytest.raises(TypeError, match=f"adv must be a float32 or float64 array, got dtype {bad.dtype}"):
            normalize(bad)
    # float32 gave -0.43 (B=64) and -0.60 (B=256) for 0.1s. Computed in float64 on A - A_0, equal
    # values are exact zeros in both dtypes (float64 ones of 1e6 and more came out +-O(1): the mean,
    # an ulp off, over a std of that size).
    for b, value in ((64, 0.1), (256, 0.1), (256, 0.7), (256, -2.3), (64, 1e6 + 0.1), (256, -3e12 + 0.7)):
        for dtype in (np.float32, np.float64):
            out = normalize(np.full(b, value, dtype))
            assert out.dtype == dtype and np.all(out == 0.0), (b, value, dtype)
    rng = np.random.default_rng(0)
    for shift, atol in ((0.0, 1e-14), (1e6, 1e-9)):  # the shift changes nothing else: z-scores as before
        a = rng.normal(size=64) + shift
        want = (a - a.mean()) / (a.std() + 1e-8)
        np.testing.assert_allclose(normalize(a), want, rtol=0, atol=atol)  # (atol: module docstring)


def test_ppo_names_a_config_that_is_not_one():
    from minippo import PPO

    with pytest.raises(TypeError, match=r"config must be a PPOConfig or None, got str \(PPO\(preset\('CartPole-v1'\)\)"
                                        r", the tuned preset\)$"):
        PPO("CartPole-v1")
    with pytest.raises(TypeError, match=r"got str \(for an env id: PPO\(PPOConfig\(env_id='Acrobot-v1'\)\)\)$"):
        PPO("Acrobot-v1")  # (no preset: preset('Acrobot-v1') was offered, and raised)
    with pytest.raises(TypeError, match=r"got str \(Stable-Baselines3's policy names have no counterpart: the "
                                        r"networks are config fields, hidden, activation, shared; "
                                        r"PPO\(PPOConfig\(env_id='CartPole-v1'\)\)\)$"):
        PPO("MlpPolicy")
    with pytest.raises(TypeError, match="config must be a PPOConfig or None, got dict$"):
        PPO({"gamma": 0.9})


def test_running_statistics_refuse_a_batch_of_the_wrong_shape():
    """A lone (obs_dim,) observation was folded in as obs_dim samples of a scalar."""
    from minippo.envs import ObsNormalizer

    norm = ObsNormalizer(2)
    with pytest.raises(ValueError, match=r"obs must have shape \(B, 2\), got \(2,\)"):
        norm(np.array([1.0, 2.0]), update=True)
    assert norm.rms.count < 1e-3  # nothing folded in
    from minippo.envs import RunningMeanStd

    with pytest.raises(ValueError, match=r"x must have shape \(B,\), got \(3, 1\)"):
        RunningMeanStd(()).update(np.zeros((3, 1)))
    np.testing.assert_array_equal(norm(np.array([[1.0, 2.0]]), update=True).shape, (1, 2))


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
    # (1,) and a scalar used to broadcast against (4,); a ragged list was numpy's error, naming nothing
    for obs in (np.zeros(1), 0.3, np.zeros(3), [[0, 1, 2, 3], [1, 2]]):
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
        # a masked array's mask was dropped and the number under it (here 1e30) acted on
        masked = np.ma.array([0.0, 1e30, 0.0, 0.0], mask=[0, 1, 0, 0])
        with pytest.raises(TypeError, match=r"^obs is a numpy masked array: .* pass obs\.filled\(<a value>\)"):
            pol.predict(masked)
        assert pol.predict(masked.filled(0.0)) in (0, 1)
        assert pol.predict(np.zeros(4), deterministic=False, rng=np.random.RandomState(0)) in (0, 1)  # legacy
        assert pol.predict(np.zeros(4, np.int64)) in (0, 1) and pol.predict([True, False, 0, 1]) in (0, 1)
    # finite in float64 but not in the float32 policy: blamed the logits ("logits contains NaN or inf")
    with pytest.raises(ValueError, match=r"obs holds values beyond the policy's float32 range \(\|x\| <= 3.403e\+38\)"):
        ac.predict(np.full(4, 1e39))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([np.float16, np.float32, np.float64, np.longdouble]), st.sampled_from([np.float32, np.float64]),
       st.integers(1, 3), st.integers(1, 5),
       st.lists(st.sampled_from(["big", "small", "zero", "nan", "inf", "-inf"]), min_size=1, max_size=15),
       st.randoms(use_true_random=False))
def test_check_obs_agrees_with_the_plain_definition(src, dst, B, D, kinds, r):
    """check_obs's finite test (a sum of squares first, the exact test only when that is not finite)
    against its definition: refuse NaN and inf, accept every finite value, including values whose
    squares overflow, and refuse what does not fit the policy's dtype. Values drawn at the edges."""
    from minippo.policy import check_obs

    fi = np.finfo(src)
    pick = {"big": lambda: fi.max * src(r.choice([-1, 1]) * r.uniform(0.5, 1.0)),  # squares overflow
            "small": lambda: fi.smallest_subnormal * src(r.randint(-4, 4)), "zero": lambda: src(0),
            "nan": lambda: src(np.nan), "inf": lambda: src(np.inf), "-inf": lambda: src(-np.inf)}
    a = np.array([pick[kinds[i % len(kinds)]]() for i in range(B * D)], src).reshape(B, D)
    with np.errstate(over="ignore"):
        fits = np.isfinite(a.astype(dst)).all()
    if not np.isfinite(a).all():
        with pytest.raises(ValueError, match="obs holds NaN or inf"):
            check_obs(a, D, dst)
    elif not fits:
        with pytest.raises(ValueError, match="obs holds values beyond the policy's"):
            check_obs(a, D, dst)
    else:
        out = check_obs(a[0], D, dst) if B == 1 else check_obs(a, D, dst)
        assert out.dtype == dst
        np.testing.assert_array_equal(out.reshape(a.shape), a.astype(dst))


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
    for name in ("obs", "rewards", "valid"):  # a list was an AttributeError naming nothing
        with pytest.raises(TypeError, match=f"{name} must be an array"):
            buf.add(**{**good, name: good[name].tolist()})
    assert buf.pos == 0 and not buf.obs.any()  # nothing was written
    buf.add(**good)
    with pytest.raises(RuntimeError, match=r"^rollout incomplete: 1 of 2 steps stored$"):
        buf.compute_returns(np.zeros(3), 0.99, 0.95)
    assert not buf.ready
    buf.add(**good)
    with pytest.raises(IndexError, match="buffer is full"):
        buf.add(**good)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        next(buf.minibatches(0, np.random.default_rng(0)))
    for batch_size in (4, 5, 7):  # one minibatch or none would fit: refused all the same (T*N = 6)
        with pytest.raises(ValueError, match=f"batch_size={batch_size} must divide T\\*N = 6"):
            next(buf.minibatches(batch_size, np.random.default_rng(0)))
    one = RolloutBuffer(1, 1, 1, (), 1)  # the smallest buffer: one step, one env, Discrete(1)'s one logit
    one.add(np.ones((1, 1)), np.zeros(1, np.int64), *np.zeros((2, 1)), np.zeros((1, 1)), *np.zeros((2, 1)),
            np.ones(1))
    assert [len(mb["obs"]) for mb in one.minibatches(1, np.random.default_rng(0))] == [1]


# ---------------------------------------------------------------- scalars, config mutated later, dones
@pytest.mark.parametrize("value, kw, err, msg", [
    (0.5, dict(low=0.0, high=1.0), None, None),
    (np.float32(0.25), dict(low=0.0), None, None),
    (3, dict(), None, None),
    (None, dict(low=0.0, low_open=True), TypeError, r"x must be a finite number > 0, got None"),
    ("0.9", dict(), TypeError, r"x must be a finite number, got '0.9'"),
    (True, dict(), TypeError, r"x must be a finite number, got True"),
    (float("nan"), dict(high=1.0), ValueError, r"x must be a finite number <= 1, got nan"),
    (float("inf"), dict(low=0.0), ValueError, r"x must be a finite number >= 0, got inf"),
    (1.0, dict(low=0.0, high=1.0, high_open=True), ValueError, r"x must be a finite number in \[0, 1\), got 1.0"),
    (0.0, dict(low=0.0, high=1.0, low_open=True), ValueError, r"x must be a finite number in \(0, 1\], got 0.0"),
    (1.0, dict(low=0.0, high=1.0), None, None),  # closed bounds take their ends
    (0.0, dict(low=0.0, high=1.0), None, None),
    (np.array(0.5), dict(), None, None),  # a 0-d array is one number
    (np.array([0.5]), dict(), TypeError, r"x must be a finite number, got array\(\[0.5\]\)"),
    (np.array("0.5"), dict(), TypeError, r"x must be a finite number, got array\('0.5'"),
])
def test_real_names_the_argument_and_the_allowed_range(value, kw, err, msg):
    from minippo._checks import real

    if err is None:
        assert real("x", value, **kw) == float(value) and type(real("x", value, **kw)) is float
    else:
        with pytest.raises(err, match=msg):
            real("x", value, **kw)


def test_integer_and_array_checks_take_their_bounds_and_need_all_three_array_attributes():
    from minippo._checks import array, integer

    assert integer("n", 5, 1, 5) == 5 and integer("n", 1, 1, 5) == 1 and type(integer("n", np.int32(3), 1)) is int
    with pytest.raises(ValueError, match=r"n must be an integer in \[1, 5\], got 6"):
        integer("n", 6, 1, 5)

    class ShapeOnly:
        shape = (2,)

    class NoDtype(ShapeOnly):
        ndim = 1

    for bad in (ShapeOnly(), NoDtype(), [0.0, 1.0]):
        with pytest.raises(TypeError, match=f"x must be an array .*, got {type(bad).__name__}"):
            array("x", bad)
    array("x", np.zeros(2))


def test_scalar_arguments_are_named_when_not_finite_numbers():
    """None, strings and infinities used to give raw TypeErrors ('<' not supported ...) or be taken
    silently (Adam eps=inf never moves; an exponential Schedule to inf returns nan)."""
    lp = np.zeros(4)
    cases = [
        (lambda: losses.clip_objective(lp, lp, lp, None), TypeError, "clip_eps must be a finite number > 0"),
        (lambda: losses.value_loss(lp, lp, lp, float("inf")), ValueError, "clip_eps must be a finite number > 0"),
        (lambda: losses.kl_penalty_objective(lp, lp, lp, lp, "1"), TypeError, "beta must be a finite number >= 0"),
        (lambda: losses.entropy_bonus(lp, None), TypeError, "coef must be a finite number"),
        (lambda: losses.AdaptiveKL(kl_target=float("inf")), ValueError, "kl_target must be a finite number > 0"),
        (lambda: losses.AdaptiveKL(beta=float("inf")), ValueError, "beta must be a finite number > 0"),
        (lambda: Categorical(np.zeros((2, 3)), temperature=None), TypeError, "temperature must be a finite number > 0"),
        (lambda: clip_grad_norm({"a": np.ones(2)}, None), TypeError, "max_norm must be a finite number > 0"),
        (lambda: Schedule("linear", float("nan"), 0.0), ValueError, "start must be a finite number, got nan"),
        (lambda: Schedule("exponential", 1.0, float("inf")), ValueError, "end must be a finite number, got inf"),
        (lambda: ActorCritic(2, Discrete(2), temperature="2"), TypeError, "temperature must be a finite number > 0"),
    ]
    for call, err, msg in cases:
        with pytest.raises(err, match=msg):
            call()


@pytest.mark.parametrize("hidden", ["64", (True,), (64.7,), 64, (0,), (64, -1), None])
def test_policy_refuses_hidden_that_is_not_a_list_of_widths(hidden):
    # "64" used to build layers (6, 4), (True,) one of width 1, (64.7,) one of 64
    with pytest.raises(ValueError, match="hidden must be a sequence of integer layer widths >= 1"):
        ActorCritic(3, Discrete(2), hidden=hidden)


def test_policy_takes_hidden_from_any_iterable_of_integers():
    pol = ActorCritic(3, Discrete(2), hidden=(w for w in (np.int64(5), 4)))  # a generator, numpy ints
    assert pol.hidden == [5, 4] and pol.actor.sizes == [3, 5, 4, 2]


@pytest.mark.parametrize("backend_name", ["numpy", "numba"])
@pytest.mark.parametrize("gamma, lam, err, msg", [
    (None, 0.95, TypeError, "gamma must be a finite number in"),
    ("0.9", 0.95, TypeError, "gamma must be a finite number in"),
    (0.99, None, TypeError, "lam must be a finite number in"),
    (0.99, True, TypeError, "lam must be a finite number in"),  # numpy's fast check once took True as 1.0
    (True, 0.95, TypeError, "gamma must be a finite number in"),
    (0.99, False, TypeError, "lam must be a finite number in"),  # in range as 0.0: numba took it so
    (np.True_, 0.95, TypeError, "gamma must be a finite number in"),
    (0.99, np.False_, TypeError, "lam must be a finite number in"),
    (0.0, 0.95, ValueError, r"gamma must be a finite number in \(0, 1\], got 0.0"),  # numpy's fast check
    (1.5, 0.95, ValueError, r"gamma must be a finite number in \(0, 1\], got 1.5"),
    (0.9, -0.1, ValueError, r"lam must be a finite number in \[0, 1\], got -0.1"),
    (0.9, 1.1, ValueError, r"lam must be a finite number in \[0, 1\], got 1.1"),
    # Not real numbers, though they compare with floats: numpy's fast check once took a Decimal (as
    # float(d)) and sent a 1-element array on to fail with another message; numba refused both so
    (0.99, Decimal("0.5"), TypeError, r"lam must be a finite number in \[0, 1\], got Decimal\('0.5'\)"),
    (0.99, Decimal("0"), TypeError, r"lam must be a finite number in \[0, 1\], got Decimal\('0'\)"),
    (Decimal("0.9"), 0.95, TypeError, r"gamma must be a finite number in \(0, 1\], got Decimal\('0.9'\)"),
    (0.99, np.array([0.5]), TypeError, r"lam must be a finite number in \[0, 1\], got array\(\[0.5\]\)"),
    (np.array([0.9]), 0.95, TypeError, r"gamma must be a finite number in \(0, 1\], got array\(\[0.9\]\)"),
])
def test_compute_gae_names_gamma_and_lambda(monkeypatch, backend_name, gamma, lam, err, msg):
    from minippo import backend
    from minippo.advantages import compute_gae

    if backend_name == "numba":
        pytest.importorskip("numba")
    monkeypatch.setenv("MINIPPO_BACKEND", backend_name)
    backend.reset()
    try:
        z, lv = np.zeros((4, 2), np.float32), np.zeros(2, np.float32)
        # A good call first: numba's fast path (the compiled kernel, which converts a bool to 1.0 or
        # 0.0 itself) is open only once the kernel is ready, so the bad calls must meet it too.
        compute_gae(z, z, z, lv, 0.99, 0.95)
        out = (np.full((4, 2), 7, np.float32), np.full((4, 2), 7, np.float32))
        for kw in ({}, {"out": out}):
            with pytest.raises(err, match=msg):
                compute_gae(z, z, z, lv, gamma, lam, **kw)
        assert (out[0] == 7).all() and (out[1] == 7).all()  # nothing written
    finally:
        monkeypatch.delenv("MINIPPO_BACKEND")
        backend.reset()


_SCALARS = st.one_of(
    st.floats(0.0, 1.0), st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 2), st.booleans(),
    st.sampled_from([np.True_, np.False_, np.float32(0.5), np.float32(1.5), np.float64(0.9), np.int64(1),
                     np.int64(0), None, "0.9", 0.5 + 0j, [0.9], Decimal("0.5"), np.array([0.9]),
                     np.array(0.9)]),
)


# The fixtures only restore MINIPPO_BACKEND and forget the backend after the test: no state to reset
# between examples, which set the variable themselves.
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(gamma=_SCALARS, lam=_SCALARS, with_out=st.booleans())
def test_compute_gae_takes_and_refuses_the_same_scalars_on_numba_as_on_numpy(numpy_backend, monkeypatch,
                                                                            gamma, lam, with_out):
    """Whatever gamma and lam are (floats in and out of range, NaN, ints, bools, numpy scalars, other
    objects), the numba backend, its kernel already compiled, answers as numpy does: the same error
    and message, or bit-identical results. (A bool once passed numba's fast path as 1.0 / 0.0.)"""
    pytest.importorskip("numba")
    from minippo import backend
    from minippo.advantages import compute_gae

    rng = np.random.default_rng(0)
    r, v = rng.normal(size=(2, 5, 3)).astype(np.float32)
    d = (rng.random((5, 3)) < 0.3).astype(np.float32)
    lv = rng.normal(size=3).astype(np.float32)
    outcomes = []
    for name in ("numpy", "numba"):
        monkeypatch.setenv(backend.ENV_VAR, name)
        backend.reset()
        compute_gae(r, v, d, lv, 0.99, 0.95)  # numba: the compiled fast path is open from here
        out = (np.full((5, 3), 7, np.float32), np.full((5, 3), 7, np.float32)) if with_out else None
        try:
            res = compute_gae(r, v, d, lv, gamma, lam, out=out)
        except (TypeError, ValueError) as e:
            outcomes.append((type(e), str(e), out is None or ((out[0] == 7).all() and (out[1] == 7).all())))
        else:
            outcomes.append(("ok", [a.dtype.str for a in res], [a.tobytes() for a in res]))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == "ok" or outcomes[0][2]  # an error leaves out untouched


@pytest.mark.parametrize("backend_name", ["numpy", "numba"])
@pytest.mark.parametrize("out, message", [
    ("one", r"out must be a pair \(advantages, returns\) of two arrays, got a tuple of 1"),
    ("three", r"out must be a pair \(advantages, returns\) of two arrays, got a tuple of 3"),
    ("int", r"out must be a pair \(advantages, returns\) of two arrays, got int"),
    ("list in it", r"out\[1\] must be an array \(numpy.ndarray, or cupy.ndarray on the cupy backend\), got list"),
])
def test_compute_gae_refuses_an_out_that_is_not_two_arrays(monkeypatch, backend_name, out, message):
    """A triple once had its first two arrays written and came back whole; a single array or a list
    inside failed with an IndexError or AttributeError from deep inside."""
    from minippo import backend
    from minippo.advantages import compute_gae

    if backend_name == "numba":
        pytest.importorskip("numba")
    monkeypatch.setenv("MINIPPO_BACKEND", backend_name)
    backend.reset()
    z = np.zeros((4, 2), np.float32)
    compute_gae(z, z, z, z[0], 0.9, 0.9, out=(z.copy(), z.copy()))  # numba: the hot path is armed
    a = np.full((4, 2), 7, np.float32)
    bad = {"one": (a,), "three": (a, a.copy(), a.copy()), "int": 5, "list in it": (a, z.tolist())}[out]
    with pytest.raises(TypeError, match=message):
        compute_gae(z + 1, z, z, z[0], 0.9, 0.9, out=bad)
    assert (a == 7).all()  # nothing written
    backend.reset()


@pytest.mark.parametrize("backend_name", ["numpy", "numba"])
@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("hot", [False, True])
def test_compute_gae_refuses_a_read_only_out_before_writing(monkeypatch, backend_name, which, hot):
    """A read-only out[1] once failed with numpy's 'assignment destination is read-only' after
    out[0] had been written, on both backends; now nothing is written. hot: numba's hot path is
    armed first (the read-only array misses it and reaches the same check)."""
    from minippo import backend
    from minippo.advantages import compute_gae

    if backend_name == "numba":
        pytest.importorskip("numba")
    monkeypatch.setenv("MINIPPO_BACKEND", backend_name)
    backend.reset()
    z = np.zeros((4, 2), np.float32)
    if hot:
        compute_gae(z, z, z, z[0], 0.9, 0.9, out=(z.copy(), z.copy()))
    out = (np.full((4, 2), 7, np.float32), np.full((4, 2), 7, np.float32))
    out[which].flags.writeable = False
    what = ("advantages", "returns")[which]
    with pytest.raises(ValueError, match=rf"^out\[{which}\] is read-only: it receives the {what}$"):
        compute_gae(z + 1, z, z, z[0], 0.9, 0.9, out=out)
    assert (out[0] == 7).all() and (out[1] == 7).all()  # nothing written
    if backend_name == "numba":  # the kernel module's own entry point refuses it too
        from minippo.kernels import cpu

        with pytest.raises(ValueError, match=rf"out\[{which}\] is read-only"):
            cpu.gae(z + 1, z, z, z[0], 0.9, 0.9, out)
        assert (out[0] == 7).all() and (out[1] == 7).all()
    backend.reset()


@pytest.mark.parametrize("backend_name", ["numpy", "numba"])
@pytest.mark.parametrize("bad", [2.0, -1.0, 0.5, float("nan")])
@pytest.mark.parametrize("with_out", [False, True])
def test_compute_gae_refuses_dones_other_than_0_and_1(monkeypatch, backend_name, bad, with_out):
    """dones = 2 used to flip the bootstrap's sign (1 - d = -1) and give wrong advantages silently."""
    from minippo import backend
    from minippo.advantages import compute_gae

    if backend_name == "numba":
        pytest.importorskip("numba")
    monkeypatch.setenv("MINIPPO_BACKEND", backend_name)
    backend.reset()
    try:
        for dt in (np.float32, np.float64):
            r = np.ones((5, 3), dt)
            d = np.zeros((5, 3), dt)
            d[1, 0] = 1.0
            d[3, 2] = bad
            out = (np.full((5, 3), 7, dt), np.full((5, 3), 7, dt))
            with pytest.raises(ValueError, match=r"dones must hold only 0 and 1 \(episode-end flags\), got "
                                                 r".* at \(t, n\) = \(3, 2\)"):
                compute_gae(r, r, d, np.ones(3, dt), 0.9, 0.95, out if with_out else None)
            assert (out[0] == 7).all() and (out[1] == 7).all()  # nothing written
            d[3, 2] = 1.0  # 0/1 floats and bools are fine
            for dd in (d, d.astype(bool)):
                adv, _ = compute_gae(r, r, dd, np.ones(3, dt), 0.9, 0.95)
                assert np.isfinite(adv).all()
    finally:
        monkeypatch.delenv("MINIPPO_BACKEND")
        backend.reset()


def test_numba_rewards_to_go_refuses_dones_other_than_0_and_1():
    cpu = pytest.importorskip("minippo.kernels.cpu")
    d = np.zeros((4, 2))
    d[2, 1] = 2.0
    with pytest.raises(ValueError, match=r"dones must hold only 0 and 1"):
        cpu.rewards_to_go(np.ones((4, 2)), d, np.zeros(2), 0.9)


def test_objective_set_after_construction_is_refused_not_trained_as_plain_pg():
    """PPOConfig is mutable: objective="Clip" set on a built config used to fall through to the
    plain policy gradient of a2c/reinforce without a word."""
    from minippo.config import PPOConfig
    from minippo.ppo import loss_and_grads

    pol = ActorCritic(3, Discrete(2), hidden=(4,), dtype=np.float64)
    rng = np.random.default_rng(0)
    batch = {"obs": rng.standard_normal((4, 3)), "actions": np.array([0, 1, 1, 0]),
             "logp_old": np.full(4, -0.69), "advantages": rng.standard_normal(4),
             "returns": np.zeros(4), "values_old": np.zeros(4)}
    cfg = PPOConfig()
    cfg.objective = "Clip"
    with pytest.raises(ValueError, match=r"config.objective='Clip' is not allowed; use one of \('clip'"):
        loss_and_grads(pol, batch, cfg)
    with pytest.raises(ValueError, match=r"PPOConfig.objective='Clip' is invalid: allowed values are clip"):
        cfg.validate()
    cfg.objective = "kl_penalty"  # the KeyError lists what this objective needs, dist_old included
    with pytest.raises(KeyError, match=r"batch is missing \['dist_old'\]; objective='kl_penalty' needs "
                                       r"\[.*'values_old', 'dist_old'\]"):
        loss_and_grads(pol, batch, cfg)


def test_ppo_validates_a_config_changed_after_construction():
    pytest.importorskip("gymnasium")
    from minippo import PPO
    from minippo.config import PPOConfig

    for field, value, msg in (("objective", "kl-penalty", "PPOConfig.objective='kl-penalty' is invalid"),
                              ("hidden", "64", "PPOConfig.hidden='64' is invalid"),
                              ("n_steps", "128", "PPOConfig.n_steps='128' is invalid")):
        cfg = PPOConfig(n_steps=64, batch_size=32)
        setattr(cfg, field, value)
        with pytest.raises(ValueError, match=msg):
            PPO(cfg)


# ---------------------------------------------------------------- session 19's sweep of the public API
def test_config_takes_numpy_values_set_after_construction():
    from minippo.config import PPOConfig

    cfg = PPOConfig()
    cfg.n_steps, cfg.learning_rate, cfg.gamma = np.int64(64), np.float32(1e-3), np.float32(0.99)
    cfg.seed, cfg.clip_vloss, cfg.hidden = np.int64(1), np.True_, np.array([32, 16])
    assert cfg.validate() is cfg  # these were refused as "must be an integer >= 1" and the like
    assert (cfg.n_steps, cfg.seed, cfg.hidden, cfg.clip_vloss) == (64, 1, (32, 16), True)
    assert type(cfg.n_steps) is int and type(cfg.learning_rate) is float and type(cfg.clip_vloss) is bool
    cfg.hidden = ("64",)
    with pytest.raises(ValueError, match=r"PPOConfig.hidden=\('64',\) is invalid"):
        cfg.validate()


def test_learn_names_total_timesteps():
    pytest.importorskip("gymnasium")
    from minippo import PPO
    from minippo.config import PPOConfig

    algo = PPO(PPOConfig(n_steps=16, batch_size=16, hidden=(4,)))
    for value, err in (("100", TypeError), (float("nan"), TypeError), (8.7, TypeError), (True, TypeError),
                       (0, ValueError), (-5, ValueError)):
        with pytest.raises(err, match=f"total_timesteps must be an integer >= 1, got {value!r}"):
            algo.learn(value)
    assert algo.num_timesteps == 0
    algo.learn(32.0)  # a whole float (learn(1e5) in many scripts) is that many steps
    assert algo.num_timesteps == 32
    # a budget past int64 saved checkpoints that neither eval nor --resume could read back
    with pytest.raises(ValueError, match=r"total_timesteps must be <= 2\*\*62 \(steps are counted in int64, "
                                         r"with room for the last rollout\), got 4611686018427387905"):
        algo.learn(2**62 + 1)
    with pytest.raises(ValueError, match=r"PPOConfig.total_timesteps=9223372036854775808 is invalid: must be "
                                         r"<= 2\*\*62"):
        PPOConfig(total_timesteps=2**63)
    assert PPOConfig(total_timesteps=2**62).total_timesteps == 2**62
    assert algo.num_timesteps == 32 and algo.total_timesteps == 32
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got -1"):
        algo.evaluate(1, seed=-1)  # (named: the evaluation rng is made after the check)


def test_evaluate_policy_checks_its_arguments_before_making_the_env():
    from minippo.checkpoint import evaluate_policy

    pol = ActorCritic(4, Discrete(2), hidden=(4,))
    for kw, err, msg in (
        (dict(n_episodes="3"), TypeError, "n_episodes must be an integer >= 1, got '3'"),
        (dict(n_episodes=1.5), TypeError, "n_episodes must be an integer >= 1, got 1.5"),
        (dict(n_episodes=0), ValueError, "n_episodes must be an integer >= 1, got 0"),
        (dict(seed=-1), ValueError, "seed must be an integer >= 0, got -1"),
        (dict(seed="a"), TypeError, "seed must be an integer >= 0, got 'a'"),
        (dict(max_steps="5"), TypeError, "max_steps must be an integer >= 1, got '5'"),
        (dict(max_steps=0), ValueError, "max_steps must be an integer >= 1, got 0"),
    ):
        with pytest.raises(err, match=msg):  # (NoSuchEnv: nothing was made before the refusal)
            evaluate_policy(pol, "NoSuchEnv-v0", **kw)
    with pytest.raises(TypeError, match=r"policy must be an ActorCritic \(PPO.policy\), a Policy \(load_policy\) "
                                        r"or an object with predict, obs_dim and action_space, got NoneType"):
        evaluate_policy(None, "NoSuchEnv-v0")
    with pytest.raises(ValueError, match="^evaluate_policy needs env_id or env$"):
        evaluate_policy(pol, None)


@pytest.mark.parametrize("backend_name", ["numpy", "numba"])
def test_compute_gae_refuses_lists_naming_the_argument(request, backend_name):
    from minippo.advantages import compute_gae

    if backend_name == "numba":
        pytest.importorskip("numba")
    request.getfixturevalue(f"{backend_name}_backend")  # conftest.py: MINIPPO_BACKEND for this test
    z, lv = np.zeros((3, 2)), np.zeros(2)
    compute_gae(z, z, z, lv, 0.9, 0.9)  # numba: compiled now, so the lists meet the fast path first
    for args, name in (((z.tolist(), z, z, lv), "rewards"), ((z, z, z.tolist(), lv), "dones"),
                       ((z, z, z, [0.0, 0.0]), "last_values")):
        with pytest.raises(TypeError, match=f"{name} must be an array .*, got list"):
            compute_gae(*args, 0.9, 0.9)
    # complex lost its imaginary part with only a ComplexWarning; strings and objects were parsed
    for args, name, dt in (((z.astype(complex), z, z, lv), "rewards", "complex128"),
                           ((z, z.astype("U3"), z, lv), "values", "<U3"),
                           ((z, z, z.astype(object), lv), "dones", "object"),
                           ((z, z, z, lv.astype(np.complex64)), "last_values", "complex64")):
        for _ in range(2):  # (numba: the second call meets its hot path)
            with pytest.raises(TypeError, match=rf"^{name} must be a real array \(float, int or bool\), got "
                                                rf"dtype {dt}$"):
                compute_gae(*args, 0.9, 0.9)
    assert compute_gae(z.astype(np.int8), z.astype(bool), z.astype(np.uint8), lv, 0.9, 0.9)[0].dtype == np.float64


@pytest.mark.parametrize("backend_name", ["numpy", "numba"])
def test_building_blocks_refuse_lists_and_bad_rngs_naming_the_argument(request, backend_name):
    if backend_name == "numba":  # (its MLP.backward read dy.dtype first: an AttributeError for a list)
        pytest.importorskip("numba")
    request.getfixturevalue(f"{backend_name}_backend")  # conftest.py: MINIPPO_BACKEND for this test
    pol = ActorCritic(3, Discrete(2), hidden=(4,))
    gauss = ActorCritic(3, Box(-np.ones(2), np.ones(2)), hidden=(4,))
    mlp = MLP([3, 4, 2])
    _, cache = mlp.forward(np.ones((2, 3), np.float32))
    obs = np.zeros((2, 3), np.float32)
    for call, msg in (
        (lambda: Categorical([[0.0, 1.0]]), "logits must be an array"),
        (lambda: DiagGaussian([[0.0]], np.zeros(1)), "mean must be an array"),
        (lambda: DiagGaussian(np.zeros((1, 1)), [0.0]), "log_std must be an array"),
        (lambda: mlp.forward([[1.0, 2.0, 3.0]]), "x must be an array"),
        (lambda: mlp.backward([[1.0, 2.0]], cache), "dy must be an array"),
        (lambda: mlp.backward(1.0, cache), "dy must be an array"),
        (lambda: pol.act([[0.0, 0.0, 0.0]], np.random.default_rng(0)), "obs must be an array"),
        (lambda: Adam({"a": np.ones(2)}).step({"a": [1.0, 1.0]}), r"grads\['a'\] must be an array"),
        (lambda: clip_grad_norm({"a": [1.0, 1.0]}, 1.0), r"grads\['a'\] must be an array"),
        (lambda: Categorical(np.zeros((2, 2))).sample(None), "rng must be a numpy.random.Generator"),
        (lambda: DiagGaussian(np.zeros((2, 2)), np.zeros(2)).sample(0), "rng must be a numpy.random.Generator"),
        (lambda: pol.act(obs, None), "rng must be a numpy.random.Generator"),
        (lambda: gauss.act(obs, 0), "rng must be a numpy.random.Generator"),
    ):
        with pytest.raises(TypeError, match=msg):
            call()
    assert pol.act(obs, None, deterministic=True)[0].shape == (2,)  # the mode draws nothing: no rng needed


def test_actor_critic_backward_names_the_upstream_gradient():
    pol = ActorCritic(3, Discrete(2), hidden=(4,))
    _, _, _, cache = pol.evaluate(np.zeros((2, 3), np.float32), np.array([0, 1]))
    for name in ("dlogp", "dentropy", "dvalue"):
        with pytest.raises(ValueError, match=rf"{name} must have shape \(2,\) \(one upstream gradient per "
                                             r"sample\), got \(3,\)"):
            pol.backward(cache, **{name: np.ones(3, np.float32)})
        with pytest.raises(TypeError, match=f"{name} must be an array"):
            pol.backward(cache, **{name: [1.0, 1.0]})
    with pytest.raises(ValueError, match=r"dist_params must have shape \(B, 2\) \(logits\), got \(2, 3\)"):
        pol.make_dist(np.zeros((2, 3), np.float32))
    gauss = ActorCritic(3, Box(-np.ones(2), np.ones(2)), hidden=(4,))
    with pytest.raises(ValueError, match=r"dist_params must have shape \(B, 4\) \(\[mean, log_std\]\), got \(2, 2\)"):
        gauss.make_dist(np.zeros((2, 2), np.float32))


def test_loss_and_grads_checks_config_and_vf_coef():
    from minippo.config import PPOConfig
    from minippo.ppo import loss_and_grads

    pol = ActorCritic(3, Discrete(2), hidden=(4,), dtype=np.float64)
    rng = np.random.default_rng(0)
    batch = {"obs": rng.standard_normal((4, 3)), "actions": np.array([0, 1, 1, 0]),
             "logp_old": np.full(4, -0.69), "advantages": rng.standard_normal(4),
             "returns": np.zeros(4), "values_old": np.zeros(4)}
    with pytest.raises(TypeError, match=r"config must be a PPOConfig \(or an object with its fields\), got dict"):
        loss_and_grads(pol, batch, {"objective": "clip"})
    import types

    duck = types.SimpleNamespace(**PPOConfig().to_dict())  # an object with the fields still works
    assert loss_and_grads(pol, batch, duck)[0]["loss"] == loss_and_grads(pol, batch, PPOConfig())[0]["loss"]
    cfg = PPOConfig()
    for value, err in ((float("nan"), ValueError), ("0.5", TypeError), (-1.0, ValueError)):
        cfg.vf_coef = value  # set after construction: NaN gave a NaN loss and NaN gradients, silently
        with pytest.raises(err, match="config.vf_coef must be a finite number >= 0"):
            loss_and_grads(pol, batch, cfg)
    cfg.vf_coef = 0.0  # the bound itself: a critic that does not learn (its gradients are all 0)
    stats, grads = loss_and_grads(pol, batch, cfg)
    assert stats["loss"] == stats["policy_loss"] - cfg.ent_coef * stats["entropy"]
    assert all(not g.any() for k, g in grads.items() if k.startswith("critic."))
    assert any(g.any() for k, g in grads.items() if k.startswith("actor."))


def test_gradcheck_names_what_is_wrong():
    from minippo.gradcheck import check_grads

    p = {"a": np.ones(3)}

    def f():
        return float((p["a"] ** 2).sum())

    good = {"a": 2 * p["a"]}
    assert check_grads(f, p, good) < 1e-8
    assert check_grads(lambda: np.array([f()]), p, good) < 1e-8  # one number in an array is one number
    with pytest.raises(TypeError, match=r"f must return one real number \(e.g. loss_and_grads\(...\)\[0\]\['loss'\]\)"):
        check_grads(lambda: {"loss": f()}, p, good)
    for bad in (np.ones(2), True, "1.0", b"1", 1j, np.array([1j])):  # several, a bool, text, complex
        with pytest.raises(TypeError, match="f must return one real number"):
            check_grads(lambda bad=bad: bad, p, good)
    with pytest.raises(ValueError, match="h must be a finite number > 0, got 0.0"):
        check_grads(f, p, good, h=0.0)
    with pytest.raises(ValueError, match="floor must be a finite number > 0, got 0.0"):
        check_grads(f, p, good, floor=0.0)
    from minippo.gradcheck import rel_error

    assert rel_error(np.zeros(2), np.zeros(2), floor=0.0) == 0.0 and rel_error(np.ones(2), 2 * np.ones(2), 0.0) == 0.5
    with pytest.raises(ValueError, match="floor must be a finite number >= 0, got -1"):
        rel_error(np.zeros(2), np.zeros(2), floor=-1)
    with pytest.raises(ValueError, match=r"grads\['a'\] has shape \(2,\), params\['a'\] \(3,\)"):
        check_grads(f, p, {"a": np.ones(2)})
    assert p["a"].tolist() == [1.0, 1.0, 1.0]  # restored after every refusal


def test_constructors_name_seed_dtype_shared_and_gains():
    from minippo.spaces import as_space

    for call, err, msg in (
        (lambda: MLP([3, 2], seed=-1), ValueError, r"seed must be an integer >= 0 \(or None, a SeedSequence or a "
         r"numpy Generator\), got -1"),
        (lambda: ActorCritic(3, Discrete(2), seed="0"), TypeError, "seed must be an integer >= 0 .*, got '0'"),
        (lambda: ActorCritic(3, Discrete(2), seed=1.5), TypeError, "seed must be an integer >= 0 .*, got 1.5"),
        (lambda: MLP([3, 2], seed=True), TypeError, "seed must be an integer >= 0 .*, got True"),  # (was seed 1)
        (lambda: MLP([3, 2], dtype=("f4", -1)), ValueError,  # (was numpy's ValueError, naming nothing)
         r"dtype must be a float type such as float32 or float64, got \('f4', -1\)"),
        (lambda: ActorCritic(3, Discrete(2), dtype="banana"), ValueError,
         r"dtype must be a float type such as float32 or float64, got 'banana'"),
        (lambda: MLP([3, 2], dtype="banana"), ValueError, "dtype must be a float type"),
        (lambda: Box(np.zeros(1), np.ones(1), "banana"), TypeError, "Box dtype must be a float dtype"),
        (lambda: Box(np.zeros(1), np.ones(1), None), TypeError, r"Box dtype must be a float dtype .*, got None"),
        (lambda: Box(np.zeros(1), np.array([np.nan])), ValueError, "Box low and high must be numbers"),
        (lambda: ActorCritic(3, Discrete(2), shared="no"), TypeError, "shared must be True or False, got 'no'"),
        (lambda: ActorCritic(3, Discrete(2), shared=2), TypeError, "shared must be True or False, got 2"),
        (lambda: ActorCritic(3, Discrete(2), shared=1.0), TypeError, r"shared must be True or False, got 1\.0"),
        (lambda: MLP([3, 2], out_gain=np.nan), ValueError, "out_gain must be a finite number"),
        (lambda: MLP([3, 2], hidden_gain="2"), TypeError, "hidden_gain must be a finite number"),
        (lambda: as_space({"kind": "discrete"}), ValueError, r"kind 'discrete' needs the keys \['n'\]"),
        (lambda: as_space({"kind": "box", "low": [0.0]}), ValueError, r"kind 'box' needs the keys \['low', 'high'\]"),
    ):
        with pytest.raises(err, match=msg):
            call()
    assert ActorCritic(3, Discrete(2), shared=np.True_, seed=np.int64(3)).shared is True
    assert ActorCritic(3, Discrete(2), shared=1).shared is True  # 0 and 1 are True and False
    for seed in (None, np.random.SeedSequence(1), np.random.PCG64(1), [1, 2], np.random.default_rng(1)):
        MLP([3, 2], seed=seed)  # whatever np.random.default_rng takes
        ActorCritic(3, Discrete(2), seed=seed)
    Box(np.full(2, -np.inf), np.full(2, np.inf))  # infinite bounds are a real space's


def test_spaces_compare_by_value():
    """Box compared by identity (eq=False) while Discrete compared its fields: Box([0], [1]) !=
    Box([0], [1]). Now both compare (and hash) by value; a Box's dtype counts."""
    from minippo.spaces import as_space

    a, b = Box(np.zeros(2), np.ones(2)), Box([0.0, 0], [1, 1.0], "float32")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a == as_space(a.to_dict()) and Discrete(3) == as_space(Discrete(3).to_dict())
    assert a != Box(np.zeros(2), np.ones(2), "float64") and a != Box(np.zeros(2), np.full(2, 2.0))
    assert a != Discrete(2) and a != "Box"
    z, nz = Box(np.array([-0.0, 0.0]), np.ones(2)), Box(np.zeros(2), np.ones(2))  # -0.0 == 0.0
    assert z == nz and hash(z) == hash(nz) and len({z, nz}) == 1


def test_loss_helpers_schedules_and_normalisers_name_their_arguments():
    from minippo.envs import ObsNormalizer, RewardScaler, RunningMeanStd

    lp = np.zeros(3)
    for call, err, msg in (
        (lambda: losses.entropy_bonus(np.ones(3), -0.01), ValueError, "coef must be a finite number >= 0"),
        (lambda: losses.ratio_stats(lp, lp, -1.0), ValueError, "clip_eps must be a finite number > 0"),
        (lambda: losses.ratio_stats(lp, lp, "x"), TypeError, "clip_eps must be a finite number > 0"),
        (lambda: losses.AdaptiveKL().update(None), TypeError, "kl must be a real number"),
        (lambda: Schedule("linear", 1.0, 0.0)(None), TypeError, r"progress must be a number in \[0, 1\], got None"),
        (lambda: ObsNormalizer(-1), ValueError, "obs_dim must be an integer >= 1, got -1"),
        (lambda: ObsNormalizer(3, clip=0.0), ValueError, r"clip must be a number > 0 \(inf: no clipping\), got 0.0"),
        (lambda: RewardScaler(2, gamma=2.0), ValueError, r"gamma must be a finite number in \(0, 1\]"),
        (lambda: RewardScaler("2", gamma=0.9), TypeError, "n_envs must be an integer >= 1"),
        (lambda: RolloutBuffer(0, 1, 3, (), 2), ValueError, "n_steps must be an integer >= 1, got 0"),
        (lambda: RolloutBuffer(4, 1, 3.0, (), 2), TypeError, "obs_dim must be an integer >= 1, got 3.0"),
        (lambda: RolloutBuffer(4, 1, 3, (), 2, dtype=np.int32), ValueError, "dtype must be a float type"),
        # (accepted, then compute_returns failed naming `out`)
        (lambda: RolloutBuffer(4, 1, 3, (), 2, dtype=np.float16), ValueError,
         "dtype must be float32 or float64, got float16"),
    ):
        with pytest.raises(err, match=msg):
            call()
    assert losses.AdaptiveKL(0.01, 1.0).update(-1e-12) == 0.5  # a KL rounded below 0 is a small KL
    assert losses.AdaptiveKL(0.01, 1.0).update(np.array(0.5)) == 2.0  # a 0-d array is one number
    assert Schedule("linear", 1.0, 0.0)(np.array(0.5)) == 0.5
    assert ObsNormalizer(2, clip=np.inf).clip == np.inf and RewardScaler(1, 0.9, clip=np.inf).clip == np.inf
    for clip in (np.nan, -1.0):
        with pytest.raises(ValueError, match=r"clip must be a number > 0 \(inf: no clipping\)"):
            ObsNormalizer(2, clip=clip)
    rms = RunningMeanStd((2,))
    rms.update(np.array([[1.0, 2.0], [3.0, 4.0]]))
    mean, var, count = rms.mean.copy(), rms.var.copy(), rms.count
    for bad in (np.nan, np.inf):
        with pytest.raises(FloatingPointError, match="x contains NaN or inf: not folded into the running"):
            rms.update(np.array([[1.0, bad]]))
    assert (rms.mean == mean).all() and (rms.var == var).all() and rms.count == count
    buf = RolloutBuffer(2, 1, 3, (), 2)
    with pytest.raises(TypeError, match="batch_size must be an integer >= 1, got '4'"):
        next(buf.minibatches("4", np.random.default_rng(0)))


def test_running_statistics_load_takes_what_state_writes_and_refuses_the_impossible():
    """RunningMeanStd.load: each entry a finite float array of the right shape, no negative variance
    (a variance of 0, a constant observation dimension, is fine), a count > 0; a refused load
    changes nothing. ObsNormalizer keeps a float observation's dtype (an integer one becomes float32)
    and takes any clip bound > 0."""
    from minippo.envs import ObsNormalizer, RunningMeanStd

    src = RunningMeanStd((2,))
    src.update(np.array([[1.0, 5.0], [3.0, 5.0]]))
    good = src.state("obs_rms")
    good["obs_rms.var"][1] = 0.0  # a constant dimension
    rms = RunningMeanStd((2,))
    rms.load("obs_rms", good)
    assert rms.var.tolist() == good["obs_rms.var"].tolist() and rms.count == float(good["obs_rms.count"])
    cases = [
        ("obs_rms.count", np.array(0.0), r"obs_rms.count must be > 0, got 0.0"),
        ("obs_rms.count", np.array(-2.0), r"obs_rms.count must be > 0, got -2.0"),
        ("obs_rms.var", np.array([1.0, -1e-300]), r"obs_rms.var: a variance is negative \(-1e-300\)"),
        ("obs_rms.mean", np.zeros(3), r"obs_rms.mean must be a float array of shape \(2,\), got float64 \(3,\)"),
        ("obs_rms.mean", np.zeros(2, np.int64), r"obs_rms.mean must be a float array of shape \(2,\), got int64"),
        ("obs_rms.count", np.array([2.0]), r"obs_rms.count must be a float array of shape \(\), got float64 \(1,\)"),
    ]
    for key, value, msg in cases:
        fresh = RunningMeanStd((2,))
        with pytest.raises(ValueError, match=msg):
            fresh.load("obs_rms", {**good, key: value})
        assert fresh.count < 1e-3 and not fresh.mean.any()  # unchanged
    norm = ObsNormalizer(2, clip=1e-6)  # tiny, but > 0
    assert norm(np.array([[3.0, -3.0]]), update=False).tolist() == [[1e-6, -1e-6]]
    assert norm(np.array([[3.0, -3.0]])).dtype == np.float64
    assert norm(np.array([[3.0, -3.0]], np.float32)).dtype == np.float32
    ints = norm(np.array([[3, -3]]))
    assert ints.dtype == np.float32 and ints.tolist() == [[np.float32(1e-6), np.float32(-1e-6)]]


def test_make_vec_env_names_n_envs():
    pytest.importorskip("gymnasium")
    from minippo.envs import make_vec_env

    with pytest.raises(ValueError, match="n_envs must be an integer >= 1, got 0"):
        make_vec_env("CartPole-v1", 0)
    with pytest.raises(TypeError, match="n_envs must be an integer >= 1, got '2'"):
        make_vec_env("CartPole-v1", "2")
    with pytest.raises(TypeError, match="env id must be a string such as 'CartPole-v1', got int 123"):
        make_vec_env(123, 2)  # (a ValueError before, as for a string naming no env)
    with pytest.raises(ValueError, match="^vector='thread' is not allowed; use 'sync' or 'async'$"):
        make_vec_env("CartPole-v1", 2, vector="thread")
    with pytest.raises(ValueError, match="^autoreset='disabled' is not allowed; use 'same_step' or 'next_step'$"):
        make_vec_env("CartPole-v1", 2, autoreset="disabled")


def test_make_vec_env_names_env_kwargs_that_are_not_a_mapping():
    """(review of envs.py) a string or a list as env_kwargs failed in dict() with "dictionary update
    sequence element #0 has length 1; 2 is required", naming no argument."""
    pytest.importorskip("gymnasium")
    from minippo.envs import make_vec_env

    for bad in ("max_episode_steps=7", [("max_episode_steps", 7)], 7):
        with pytest.raises(TypeError, match=r"env_kwargs must be a dict of the env's keyword arguments \(or None\), "
                                            rf"got {type(bad).__name__}"):
            make_vec_env("CartPole-v1", 2, env_kwargs=bad)
    env = make_vec_env("CartPole-v1", 2, env_kwargs=MappingProxyType({"max_episode_steps": 3}))  # any mapping
    try:
        env.reset(seed=0)
        trunc = [env.step(np.zeros(2, dtype=np.int64))[3] for _ in range(3)]
        assert [t.tolist() for t in trunc] == [[False, False], [False, False], [True, True]]
    finally:
        env.close()


def test_normalisers_refuse_flags_of_another_shape_and_take_any_shape_of_integers():
    """(mutation test of envs.py) a bool ``dones`` or ``valid`` of the wrong length went past the shape
    check (an IndexError from deep inside); RunningMeanStd takes what its message allows: a dimension
    of 0, and a shape given as an array of integers (np.ones(shape) refused one)."""
    from minippo.envs import RewardScaler, RunningMeanStd, is_next_step

    for call, msg in (
        (lambda: RewardScaler(2, 0.9)(np.ones(2), np.zeros(1, bool)),
         r"dones must be a bool array of shape \(2,\) \(one per env\), got bool \(1,\)"),
        (lambda: RewardScaler(2, 0.9)(np.ones(2), np.zeros(2, bool), np.ones(1, bool)),
         r"valid must be a bool array of shape \(2,\) \(one per env\), got bool \(1,\)"),
    ):
        with pytest.raises(ValueError, match=msg):
            call()
    assert RunningMeanStd((0,)).mean.shape == (0,) and RunningMeanStd((2, 0)).var.shape == (2, 0)
    rms = RunningMeanStd(np.array([2, 3]))
    assert rms.mean.shape == rms.var.shape == (2, 3)

    class Env:  # metadata as any mapping (a read-only view), not only a dict
        metadata = MappingProxyType({"autoreset_mode": "NEXT_STEP"})

    assert is_next_step(Env())


def test_config_from_a_json_null_and_checkpoint_paths_that_are_not_paths():
    from minippo.checkpoint import atomic_savez, load_policy, read_checkpoint
    from minippo.config import PPOConfig

    with pytest.raises(TypeError, match=r"PPOConfig.from_dict takes a dict of fields \(a JSON object\), got NoneType"):
        PPOConfig.from_dict(None)
    for call in (lambda: load_policy(None), lambda: read_checkpoint(3), lambda: atomic_savez(None, {})):
        with pytest.raises(TypeError, match=r"path must be a file path \(str, bytes or os.PathLike\), got"):
            call()
    with pytest.raises(FileNotFoundError):
        read_checkpoint(b"/nonexistent/model.npz")  # bytes are a path


def test_audit_of_the_public_api_each_bad_input_is_named():
    """From an audit of the public functions (each of these was a silent wrong result, or an error
    from deep inside that did not name the argument)."""
    from minippo.checkpoint import Policy
    from minippo.config import PPOConfig
    from minippo.envs import ObsNormalizer, RewardScaler, RunningMeanStd
    from minippo.optim import global_norm
    from minippo.ppo import PPO, NumpyStep, explained_variance
    from minippo.spaces import as_space

    rng = np.random.default_rng(0)
    cases = [
        # the prior count: -1 gave a negative variance after an update, and a ZeroDivisionError
        (lambda: RunningMeanStd((), -1.0), ValueError, r"epsilon must be a finite number > 0, got -1.0"),
        (lambda: RunningMeanStd((), float("nan")), ValueError, "epsilon must be a finite number > 0"),
        (lambda: RunningMeanStd(-1), ValueError,
         r"shape must be a tuple of integers >= 0 \(one sample's shape\), got -1"),
        (lambda: RunningMeanStd((2, -1)), ValueError, "shape must be a tuple of integers >= 0"),
        (lambda: RunningMeanStd("3"), TypeError, "shape must be a tuple of integers >= 0"),
        # a frozen normaliser broadcast (4, 1) to (4, 3); a list failed on .dtype
        (lambda: ObsNormalizer(3)(np.zeros((4, 1))), ValueError, r"obs must have shape \(B, 3\), got \(4, 1\)"),
        (lambda: ObsNormalizer(3)([[0.0, 0.0, 0.0]]), TypeError, "obs must be an array"),
        # an int mean sampled int (truncated) actions
        (lambda: DiagGaussian(np.zeros((2, 2), int), np.zeros(2)), TypeError,
         "mean must be a float array, got dtype int64"),
        (lambda: DiagGaussian(np.zeros((2, 2)), np.zeros(2, complex)), TypeError,
         "log_std must be a real array, got dtype complex128"),
        (lambda: as_space({"kind": "discrete", "n": 2.7}), ValueError, "Discrete n must be an integer, got 2.7"),
        (lambda: Box(np.zeros((2, 2)), np.ones((2, 2))), ValueError,
         r"Box low and high must be 1-D \(one bound per action dimension\), got shapes \(2, 2\), \(2, 2\)"),
        # one 2-D bound of the other's size (a mutant refusing only two 2-D bounds reshaped it and went on)
        (lambda: Box(np.zeros((2, 2)), np.ones(4)), ValueError, r"Box low and high must be 1-D .*\(2, 2\), \(4,\)"),
        (lambda: Box(np.zeros(4), np.ones((2, 2))), ValueError, r"Box low and high must be 1-D .*\(4,\), \(2, 2\)"),
        (lambda: Box(["a"], [1.0]), TypeError, "Box low and high must be numbers or 1-D arrays of numbers"),
        # (B, 1) against (B,) broadcast to (B, B) and gave 0.0
        (lambda: explained_variance(np.zeros((4, 1)), np.arange(4.0)), ValueError,
         r"y_pred and y_true must have the same shape, got \(4, 1\) and \(4,\)"),
        (lambda: explained_variance([0.0, 1.0], np.arange(2.0)), TypeError, "y_pred must be an array"),
        # rewards of one env broadcast to all; an int done of 2 read as not done
        (lambda: RewardScaler(2, 0.9)(np.ones(1), np.zeros(2, bool)), ValueError,
         r"rewards must be an array of shape \(2,\) \(one per env\), got float64 \(1,\)"),
        (lambda: RewardScaler(2, 0.9)(np.ones(2), np.array([2, 0])), ValueError,
         r"dones must be a bool array of shape \(2,\) \(one per env\), got int64 \(2,\)"),
        (lambda: RewardScaler(2, 0.9)(np.ones(2), np.zeros(2, bool), np.ones(2)), ValueError,
         r"valid must be a bool array of shape \(2,\)"),
        # a truthy string meant True
        (lambda: MLP([3, 2], activate_output="no"), TypeError, "activate_output must be True or False, got 'no'"),
        (lambda: RolloutBuffer(2, 2, 3, (), 2, discrete="no"), TypeError, "discrete must be True or False"),
        (lambda: RolloutBuffer(2, 2, 3, 3, 2), TypeError,
         r"action_shape must be a tuple of integers >= 1 \(\(\) for discrete actions\), got 3"),
        (lambda: list(RolloutBuffer(2, 2, 3, (), 2).minibatches(4, None)), TypeError,
         "rng must be a numpy.random.Generator"),
        (lambda: MLP([3, 2], activation=["tanh"]), ValueError, r"activation=\['tanh'\] is not allowed"),
        (lambda: Categorical(np.zeros((2, 2))).log_prob([0, 1]), TypeError, "actions must be an array"),
        (lambda: DiagGaussian(np.zeros((2, 2)), np.zeros(2)).log_prob([[0.0, 0.0]] * 2), TypeError,
         "actions must be an array"),
        (lambda: Categorical(np.zeros((2, 2))).entropy_grad(1.0), TypeError, "g must be an array"),
        (lambda: Categorical(np.zeros((2, 2))).kl(DiagGaussian(np.zeros((2, 2)), np.zeros(2))), TypeError,
         r"other must be a Categorical \(the same kind of policy\), got DiagGaussian"),
        (lambda: DiagGaussian(np.zeros((2, 2)), np.zeros(2)).kl(Categorical(np.zeros((2, 2)))), TypeError,
         "other must be a DiagGaussian"),
        (lambda: Adam([np.zeros(3)]), TypeError, r"params must be a dict of arrays \(name -> array"),
        (lambda: Adam({"w": np.zeros(3)}).step([np.zeros(3)]), TypeError,
         "grads must be a dict of arrays keyed like the parameters, got list"),
        (lambda: Adam({"w": np.zeros(3)}).step({"w": np.array(["a", "b", "c"])}), TypeError,
         r"grads\['w'\] must be a float array, got dtype <U1"),
        (lambda: Adam({"w": np.zeros(3)}).step({"w": np.zeros(3, complex)}), TypeError,
         r"grads\['w'\] must be a float array, got dtype complex128"),
        (lambda: Adam({"w": np.zeros(3)}).load_state_dict({}), ValueError,
         r"state is missing \['m.w', 'v.w', 't'\] \(Adam.state_dict's keys\)"),
        (lambda: Adam({"w": np.zeros(3)}).load_state_dict(None), TypeError, "state must be a dict"),
        (lambda: clip_grad_norm([np.zeros(3)], 1.0), TypeError, "grads must be a dict"),
        (lambda: global_norm({"w": [1.0, 2.0]}), TypeError, r"grads\['w'\] must be an array"),
        (lambda: Policy(None, None, None), TypeError, "policy must be an ActorCritic, got NoneType"),
        (lambda: Policy(ActorCritic(4, Discrete(2), (8,)), np.zeros(1), np.ones(1)), ValueError,
         r"obs_mean must be a float array of shape \(4,\), got float64 \(1,\)"),
        (lambda: Policy(ActorCritic(4, Discrete(2), (8,)), np.zeros(4), None), ValueError,
         "obs_mean and obs_var must be given together"),
        (lambda: ActorCritic(4, Discrete(2), (8,)).act(np.zeros((1, 4), np.float32), rng, deterministic="no"),
         TypeError, "deterministic must be True or False, got 'no'"),
        (lambda: ActorCritic(4, Discrete(2), (8,)).predict(np.zeros(4), deterministic="no"), TypeError,
         "deterministic must be True or False"),
        (lambda: PPOConfig().set_from_strings("gamma=0.9"), TypeError,
         "assignments must be a list of 'key=value' strings, got 'gamma=0.9'"),
        (lambda: PPOConfig().set_from_string(5), ValueError, "--set expects key=value, got 5"),
        # NaN > 0 is False: clipping was skipped without a word
        (lambda: NumpyStep(None, None, None, 1.0).step(3e-4, float("nan")), ValueError,
         "max_grad_norm must be a finite number"),
    ]
    for call, kind, msg in cases:
        with pytest.raises(kind, match=msg):
            call()
    assert as_space({"kind": "discrete", "n": np.int64(3), "start": np.int64(-1)}) == Discrete(3, -1)
    assert type(as_space({"kind": "discrete", "n": np.int64(3)}).n) is int
    assert Box(-1.0, 1.0).shape == (1,)  # a scalar bound: one dimension, as before
    assert RunningMeanStd(np.int64(3)).mean.shape == (3,) and RunningMeanStd([2, 3]).mean.shape == (2, 3)
    assert DiagGaussian(np.zeros((1, 2)), np.zeros(2, int)).log_prob(np.zeros((1, 2))).shape == (1,)
    assert PPOConfig(env_kwargs={"x": float("inf")}).env_kwargs == {"x": float("inf")}  # json writes Infinity
    pytest.importorskip("gymnasium")
    with pytest.raises(TypeError, match="callback must be a function of the iteration's row, or None, got int"):
        PPO(PPOConfig(n_envs=2, n_steps=16, batch_size=16, hidden=(8,))).learn(32, callback=5)


def test_ints_past_floats_range_in_a_clip_bound_or_a_progress():
    """An int too large for a float raised OverflowError: as a clip bound it is no clipping (as inf),
    as a schedule's progress it is clamped to 1 (and -10**400 to 0)."""
    from minippo.envs import ObsNormalizer, RewardScaler
    from minippo.optim import Schedule

    assert ObsNormalizer(2, clip=10**400).clip == np.inf and RewardScaler(1, 0.9, clip=10**400).clip == np.inf
    with pytest.raises(ValueError, match="clip must be a number > 0"):
        ObsNormalizer(2, clip=-10**400)
    s = Schedule("linear", 1.0, 0.0)
    assert (s(10**400), s(-10**400), s(0.25)) == (0.0, 1.0, 0.75)
    assert type(s(np.float32(0.5))) is float


def test_a_memoryview_is_named_not_an_attribute_error(any_backend):
    """A memoryview has the shape and ndim the fast shape checks read, but no dtype: each building block
    raised a bare AttributeError ("'memoryview' object has no attribute 'dtype'") naming no argument."""
    from minippo.envs import ObsNormalizer
    from minippo.ppo import normalize

    obs = np.zeros((3, 4), np.float32)
    pol = ActorCritic(4, Discrete(2))
    _, cache = pol.critic.forward(obs)
    buf = RolloutBuffer(2, 3, 4, (), 2)
    z = np.zeros(3, np.float32)
    params = {"w": np.zeros((3, 4), np.float32)}
    calls = {
        "obs": [lambda: pol.value(memoryview(obs)), lambda: pol.act(memoryview(obs), np.random.default_rng(0)),
                lambda: ObsNormalizer(4)(memoryview(obs))],
        "x": [lambda: pol.critic.forward(memoryview(obs))],
        "dy": [lambda: pol.critic.backward(memoryview(np.ones((3, 1), np.float32)), cache)],
        r"grads\['w'\]": [lambda: Adam(params).step({"w": memoryview(obs[:, :4].copy())}),
                          lambda: clip_grad_norm({"w": memoryview(obs)}, 1.0)],
        "adv": [lambda: normalize(memoryview(z))],
        "actions": [lambda: buf.add(obs, memoryview(np.zeros(3, np.int64)), z, z, np.zeros((3, 2), np.float32), z, z,
                                    np.ones(3, bool))],
    }
    for name, fns in calls.items():
        for f in fns:
            with pytest.raises(TypeError, match=f"^{name} must be an array"):
                f()
    assert buf.pos == 0 and not params["w"].any()  # refused before anything changed


def test_clip_grad_norm_refuses_a_read_only_gradient_before_scaling_any():
    """clip_grad_norm scales in place: a read-only gradient after others failed in numpy ("output array
    is read-only", no name) once the ones before it were already scaled."""
    a, b = np.full(4, 3.0), np.full(4, 3.0)
    b.flags.writeable = False
    with pytest.raises(ValueError, match=r"grads\['b'\] is read-only: clip_grad_norm scales the gradients in place"):
        clip_grad_norm({"a": a, "b": b}, 0.5)
    np.testing.assert_array_equal(a, 3.0)  # not scaled
    with pytest.raises(ValueError, match=r"grads\['b'\] is read-only"):
        clip_grad_norm({"a": a, "b": np.broadcast_to(np.float64(3.0), (4,))}, 0.5)
    assert clip_grad_norm({"a": a, "b": b}, 100.0) == np.sqrt(72.0)  # nothing to scale: fine (exact: docstring)


@pytest.mark.parametrize("subclass", ["matrix", "masked"])
@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # (numpy's, for np.matrix)
def test_adam_refuses_an_ndarray_subclass_it_would_take_for_a_gpu_array(subclass):
    """Adam's moments are made like its first parameter: a np.matrix or MaskedArray parameter gave matrix
    or masked moments, which sent step() down the cupy path (ModuleNotFoundError: No module named 'cupy'
    without cupy)."""
    p = np.asmatrix(np.ones((2, 3))) if subclass == "matrix" else np.ma.masked_array(np.ones((2, 3)))
    with pytest.raises(TypeError, match=rf"params\['w'\] must be a numpy.ndarray, not the subclass numpy.*"
                                        rf"{type(p).__name__}: pass np.asarray of it"):
        Adam({"b": np.ones(3), "w": p})


def test_running_statistics_set_by_hand_are_checked():
    """rms.mean = np.zeros(1) on a 4-wide normaliser made predict fail with "obs must have shape (B, 1)"
    (blaming the observation); a list failed inside learn (AttributeError); an int count was saved
    into a file no load read. Set by hand, mean / var / count are checked and stored as float64."""
    import pickle

    from minippo.envs import ObsNormalizer, RunningMeanStd

    norm = ObsNormalizer(4)
    rms = norm.rms
    for name, bad, error, msg in (("mean", np.zeros(1), ValueError, r"mean must have shape \(4,\) \(one sample's\)"),
                                  ("mean", ["a"] * 4, TypeError, r"mean must be real numbers of shape \(4,\)"),
                                  ("mean", [0.0, np.nan, 0.0, 0.0], ValueError, "mean must be finite"),
                                  ("var", -np.ones(4), ValueError, "var must be finite and >= 0"),
                                  ("count", 0, ValueError, "count must be"),
                                  ("count", np.inf, ValueError, "count must be a finite number"),
                                  ("count", "5", TypeError, "count must be")):
        with pytest.raises(error, match=msg):
            setattr(rms, name, bad)
    rms.mean, rms.var, rms.count = [1, 2, 3, 4], np.full(4, 4.0, np.float32), 7  # taken, as float64 / float
    assert rms.mean.dtype == rms.var.dtype == np.float64 and type(rms.count) is float
    want = np.array([[2.0, 1.0, 0.0, -1.0]]) / np.sqrt(4.0 + 1e-8)  # (obs - mean) / sqrt(var + eps), eps 1e-8
    np.testing.assert_allclose(norm(np.full((1, 4), 3.0)), want, rtol=1e-15)  # float64: one rounding
    rms.update(np.zeros((2, 4)))
    assert rms.count == 9.0
    clone = pickle.loads(pickle.dumps(rms))
    np.testing.assert_array_equal(clone.mean, rms.mean)
    old = {k.lstrip("_"): v for k, v in rms.__dict__.items()}  # a pickle's state from before the properties
    revived = object.__new__(RunningMeanStd)
    revived.__setstate__(old)
    assert revived.count == 9.0 and revived.mean.shape == (4,)
