"""The whole trainer on ``MINIPPO_BACKEND=cupy``, against the strict CuPy stand-in (tests/strict_cupy.py).

No GPU here: the stand-in keeps device arrays apart from host arrays as real CuPy does (no implicit
conversion either way, no host array assigned into a device array), so a host/device mix-up anywhere
on the cupy path (rollout, GAE, update, checkpoint save and resume, predict, evaluate) fails here.

Tolerances, and why: the stand-in computes with numpy underneath, so the cupy path's array operations
are numpy's own and give its bits (every tolerance below was observed at 0 on it); the tolerances are
for a real device (the ``cupy_backend`` tests' device run, ``-m gpu``), where cuBLAS and CUDA's
reductions sum in their own order and CUDA's exp / log / tanh need not round as libm does.
- Adam's first step on device scalars, from g = 1: m_hat = g and sqrt(v_hat) = |g| to an ulp or two
  (~8 float64 roundings), so -lr / (1 + eps): rtol 1e-13 (was rtol 1e-4 against -lr, which eps alone
  moves by 1e-5; observed equal). The stats, the schedule's value and the clip loss compared with ==
  there are numpy's operations on the stand-in; on a device a reduction in another order or CUDA's exp
  may move them by an ulp, which == would not allow.
- A trained policy's predict against the saved file's numpy-only policy: float32, ~10 roundings of
  O(1) values and tanh on a device: rtol 1e-5, atol 1e-6 (observed equal on the stand-in).
- Training parity: see test_training_on_the_cupy_path_matches_numpy's docstring (== on the stand-in).
- Clip + Adam in the flat kernels against clip_grad_norm + Adam.step (stand-in only): the two norms sum
  the same float32 squares, exact in float64, in another order: rel 1e-12 (a few u); the float64 scales
  a few u apart round to one float32 scale unless a float32 boundary lies between them, then the
  parameters differ by <= 3 float32 ulps: rtol 1e-6 (tests/test_optim.py's bounds; observed 4.6e-16 and
  equal over 300 draws of the test's gradients, scaled by 1e-2 to 1e2).
- global_norm of small integers: the squares and their sum (220) are exact, and both sides take the
  correctly rounded sqrt(220): compared with == (was approx's rel 1e-6).
- A distribution's log-prob and its gradients on the device: float64, ~10 roundings of values <= 10 in
  another order: rtol 1e-12, atol 1e-15 for gradient entries that cancel to ~0 (observed equal); device
  actions given to a host distribution come back exactly, then the same host operations: rtol 0.
- check_grads of a device gradient: read back exactly, then the same host computation: ==. Its value
  for f = sum w^3: truncation h^2 = 1e-12 and rounding eps |f| / h ~ 2e-9 per entry, of a gradient of
  norm 12.4: < 1e-8 (observed 3.7e-11); off by 0.1 per entry it is 0.1 sqrt(3) / 12.5 = 0.0138 > 1e-2.
- loss_and_grads on the stand-in with deferred checks against numpy's: the same float64 formulas, a
  device grouping of them would move ~10 roundings of values <= 10 (~1e-14): rtol 1e-12, atol 1e-12
  (observed equal in 1400 comparisons over 400 draws).
"""

import copy
import os
import re
import sys

import numpy as np
import pytest
import strict_cupy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_loss_and_grads import config_for, make_case

from minippo import PPO, backend, load_policy
from minippo.advantages import gae_numpy
from minippo.config import PPOConfig
from minippo.optim import Adam

TINY = dict(n_envs=2, n_steps=16, batch_size=16, n_epochs=2, total_timesteps=64, hidden=(8,))


def _cupy_backend(monkeypatch, cp):
    """MINIPPO_BACKEND=cupy with ``cp`` as cupy for one test."""
    from minippo.kernels import gpu

    monkeypatch.setitem(sys.modules, "cupy", cp)
    monkeypatch.setattr(gpu, "_modules", {})  # GAE compiles on this cupy; the next test's compiles anew
    monkeypatch.setenv(backend.ENV_VAR, "cupy")
    backend.reset()
    assert backend.name == "cupy"
    yield cp
    backend.reset()


@pytest.fixture
def strict_cupy_backend(monkeypatch):
    """The cupy backend on the strict stand-in (the tests that count copies and syncs, which only
    the stand-in can)."""
    yield from _cupy_backend(monkeypatch, strict_cupy.make())


@pytest.fixture(params=["standin", strict_cupy.device_param()])
def cupy_backend(request, monkeypatch):
    """The cupy backend on the strict stand-in and, where there is one (``-m gpu``), on a real
    device: what holds on both (device arrays where they belong, results to rounding)."""
    if request.param == "standin":
        yield from _cupy_backend(monkeypatch, strict_cupy.make())
    else:
        import cupy

        yield from _cupy_backend(monkeypatch, cupy)


def _on_device(a):
    return isinstance(a, sys.modules["cupy"].ndarray)  # the stand-in's or real CuPy's, whichever is in use


def test_standin_refuses_what_cupy_refuses(strict_cupy_backend):
    cp = strict_cupy_backend
    dev, host = cp.asarray(np.ones(3, np.float32)), np.ones(3, np.float32)
    with pytest.raises(TypeError):
        np.asarray(dev)
    with pytest.raises(TypeError):
        dev + host
    with pytest.raises(ValueError, match="fill"):
        dev[...] = host
    with pytest.raises(TypeError, match="Unsupported type"):
        dev + np.array(2.0)  # a 0-d host array is not a scalar to CuPy
    with pytest.raises(TypeError, match="Unsupported type"):
        dev[...] = [1.0, 2.0, 3.0]  # fill takes scalars only
    assert backend.asnumpy(dev == np.array(1.0)).all()  # comparisons unwrap a 0-d array (.item())
    with pytest.raises(TypeError, match="Unsupported type"):
        cp.copyto(dev, host)  # (the benchmark's device floor copies device to device)
    with pytest.raises(TypeError, match="destination must be a cupy array"):
        cp.copyto(host, dev)
    cp.copyto(dev, cp.asarray(host))
    dev[...] = cp.asarray(host)
    dev[...] = 2.0
    dev[...] = np.array(2.0)  # fill takes a 0-d numpy array
    dev[np.array([0, 2])] = np.array([5.0, 6.0])  # advanced indexing uploads the values
    assert backend.asnumpy(dev).tolist() == [5.0, 2.0, 6.0]


def test_standin_refuses_numpy_calls_not_checked_against_cupy():
    """A numpy function, ufunc (or ufunc method) or array method outside the stand-in's lists fails
    on a device array, as a numpy function CuPy lacks fails there (TypeError from its
    __array_function__): a new call on the cupy path must be checked against CuPy first."""
    cp = strict_cupy.make()
    dev = cp.asarray(np.ones(3, np.float32))
    with pytest.raises(TypeError, match=r"numpy.cumsum on a device array is not among the functions checked"):
        np.cumsum(dev)
    with pytest.raises(TypeError, match=r"ufunc logaddexp.__call__ on a device array is not among"):
        np.logaddexp(dev, dev)
    with pytest.raises(TypeError, match=r"ufunc add.reduce on a device array is not among"):
        np.add.reduce(dev)
    with pytest.raises(AttributeError, match="cumsum: not among the array methods checked"):
        dev.cumsum()
    assert float(np.dot(dev, dev)) == 3.0 and float(dev.sum()) == 3.0  # listed ones work
    assert dev.shape == (3,) and dev.dtype == np.float32  # attributes are not calls


def test_standin_allows_only_what_real_cupy_has():
    """Every function, ufunc and array method the stand-in lets through, and every name of its
    module (asarray, copyto, ones_like, ...), exists in real CuPy, with the keywords minippo passes.
    Needs CuPy installed, not a device (session 34 ran it against CuPy 14.2 on a machine without
    one; CI's CuPy suite and benchmarks/gpu_check.sh run it too)."""
    import inspect

    cupy = pytest.importorskip("cupy")
    if hasattr(cupy, "STATS"):
        pytest.skip("the stand-in is cupy here")
    module = {n for n in vars(strict_cupy.make()) if not n.startswith("_")} - {"STATS"}  # cupy.zeros, ...
    missing = [f for f in sorted(strict_cupy.FUNCTIONS | strict_cupy.UFUNCS | module) if not hasattr(cupy, f)]
    missing += [f".{m}" for m in sorted(strict_cupy.METHODS) if not hasattr(cupy.ndarray, m)]
    assert not missing, f"not in CuPy {cupy.__version__}: {missing}"
    for f, kw in (("clip", "out"), ("concatenate", "axis"), ("zeros_like", "shape")):
        assert kw in inspect.signature(getattr(cupy, f)).parameters, (f, kw)


def test_real_cupy_without_a_device_is_refused_by_name():
    """Real CuPy installed on a machine without a GPU (CI's CuPy suite): explicit cupy says no device
    is usable and what to use instead; auto moves on to numba or numpy."""
    import subprocess

    cupy = pytest.importorskip("cupy")
    if hasattr(cupy, "STATS") or strict_cupy.real_device():
        pytest.skip("needs real CuPy without a device (here: the stand-in, or a device)")
    code = ("import logging; logging.basicConfig(level=logging.INFO)\n"
            "from minippo import backend\nprint(backend.name)")
    env = {**os.environ, "MINIPPO_BACKEND": "cupy"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode != 0
    assert re.search(r"RuntimeError: MINIPPO_BACKEND=cupy but no CUDA device is usable \(\w+: .+\); "
                     r"use MINIPPO_BACKEND=numpy or numba on this machine", r.stderr), r.stderr
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**env, "MINIPPO_BACKEND": "auto"}, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() in ("numba", "numpy"), r.stderr
    assert "MINIPPO_BACKEND=auto picked" in r.stderr


def test_adam_state_loads_onto_the_device(cupy_backend):
    """Adam.load_state_dict gets host arrays from the checkpoint file: they go to the moments' device."""
    cp = cupy_backend
    params = {"w": cp.asarray(np.zeros((2, 3), np.float32))}
    opt = Adam(params, lr=0.1)
    state = {"t": 5, "m.w": np.full((2, 3), 0.5, np.float32), "v.w": np.full((2, 3), 0.25, np.float32)}
    opt.load_state_dict(state)
    assert _on_device(opt.m["w"]) and opt.t == 5
    np.testing.assert_array_equal(backend.asnumpy(opt.m["w"]), state["m.w"])
    np.testing.assert_array_equal(backend.asnumpy(opt.v["w"]), state["v.w"])


def test_adam_state_of_the_device_loads_into_a_host_adam(cupy_backend):
    """The other way (a trainer moved back to the host, policy.to(backend.asnumpy)): the device moments
    come to the host moments; np.asarray of a cupy array raised CuPy's 'Implicit conversion' instead."""
    cp = cupy_backend
    dev = Adam({"w": cp.asarray(np.zeros((2, 3), np.float32))}, lr=0.1)
    dev.step({"w": cp.asarray(np.full((2, 3), 0.5, np.float32))})
    host = Adam({"w": np.zeros((2, 3), np.float32)}, lr=0.1)
    host.load_state_dict(dev.state_dict())
    assert type(host.m["w"]) is np.ndarray and host.t == 1
    np.testing.assert_array_equal(host.m["w"], backend.asnumpy(dev.m["w"]))
    np.testing.assert_array_equal(host.v["w"], backend.asnumpy(dev.v["w"]))


def test_device_scalars_are_numbers_to_the_checks(cupy_backend):
    """On a device the losses' stats and reductions are 0-d cupy arrays (losses' docstring), where numpy
    gives floats: the scalar checks take them as numbers, as they take a 0-d numpy array, so that
    AdaptiveKL.update(stats["kl"]), a Schedule, a clip range or a learning rate computed on the device
    work as on numpy (each was refused: "kl must be a real number ..., got array(0.57)")."""
    from minippo import losses
    from minippo._checks import is_real, real
    from minippo.optim import Schedule

    cp = cupy_backend
    rng = np.random.default_rng(0)
    logp, logp_old, adv = rng.normal(size=(3, 8))
    kl = np.abs(rng.normal(size=8))
    want = losses.kl_penalty_objective(logp, logp_old, adv, kl, 1.0)[2]
    stats = losses.kl_penalty_objective(*(cp.asarray(a) for a in (logp, logp_old, adv, kl)), 1.0)[2]
    assert _on_device(stats["kl"]) and stats["kl"].ndim == 0
    assert losses.AdaptiveKL().update(stats["kl"]) == losses.AdaptiveKL().update(want["kl"]) == 2.0
    assert Schedule("linear", 1.0, 0.0)(stats["approx_kl"] / 10) == Schedule("linear", 1.0, 0.0)(want["approx_kl"] / 10)
    assert real("lr", cp.asarray(np.array(0.25))) == 0.25 and is_real(cp.asarray(np.array(3, np.int32)))
    eps = cp.asarray(np.array([0.2, 0.2])).mean()
    assert losses.to_floats({"l": losses.clip_objective(*(cp.asarray(a) for a in (logp, logp_old, adv)), eps)[0]}) \
        == {"l": losses.clip_objective(logp, logp_old, adv, 0.2)[0]}
    opt = Adam({"w": cp.asarray(np.zeros(3))})
    opt.step({"w": cp.asarray(np.ones(3))}, lr=cp.asarray(np.array([0.1, 0.1])).mean())
    np.testing.assert_allclose(backend.asnumpy(opt.params["w"]), -0.1 / (1 + 1e-5), rtol=1e-13)  # -lr / (1 + eps)
    for bad, err in ((cp.asarray(np.array([0.5])), TypeError), (cp.asarray(np.array(True)), TypeError),
                     (cp.asarray(np.array(np.nan)), ValueError)):
        assert not is_real(bad) or err is ValueError
        with pytest.raises(err, match="lr must be a finite number"):
            real("lr", bad)


@pytest.mark.parametrize("cfg", [
    dict(env_id="CartPole-v1", objective="clip", norm_obs=True),
    dict(env_id="CartPole-v1", objective="kl_penalty", shared=True, norm_reward=True),
    dict(env_id="Pendulum-v1", objective="clip", clip_vloss=True, target_kl=0.5),
])
def test_train_save_resume_predict_on_the_cupy_path(cupy_backend, tmp_path, cfg):
    pytest.importorskip("gymnasium")
    algo = PPO(PPOConfig(**TINY, **cfg)).learn()
    assert all(_on_device(p) for p in algo.policy.params.values())
    path = str(tmp_path / "m.npz")
    algo.save(path)
    resumed = PPO.load(path)  # parameters and Adam moments go back to the device
    assert all(_on_device(p) for p in resumed.policy.params.values())
    assert all(_on_device(m) for m in resumed.optimizer.m.values())
    for k, p in algo.policy.params.items():
        np.testing.assert_array_equal(backend.asnumpy(resumed.policy.params[k]), backend.asnumpy(p))
    resumed.learn(total_timesteps=resumed.num_timesteps + 32)
    obs = np.zeros(algo.policy.obs_dim, np.float32)  # host in, host out
    action = resumed.policy.predict(obs)
    assert isinstance(action, (np.ndarray, np.generic)) and not _on_device(action)
    batch = resumed.policy.predict(np.zeros((3, algo.policy.obs_dim), np.float32))
    assert isinstance(batch, np.ndarray) and len(batch) == 3
    assert np.isfinite(resumed.evaluate(1)["mean_return"])
    assert load_policy(path).predict(obs).shape == np.shape(action)  # numpy-only loader, same file
    saved = str(tmp_path / "resumed.npz")
    resumed.save(saved)
    for o in (obs + 0.5, np.full((3, algo.policy.obs_dim), -0.5, np.float32)):  # the trainer's predict: host out
        got = resumed.predict(o)  # (normalised with the trainer's statistics, as the saved file's are)
        assert not _on_device(got)
        np.testing.assert_allclose(got, load_policy(saved).predict(o), rtol=1e-5, atol=1e-6)  # float32, 2 paths
    # evaluate_policy with a host-parameter ActorCritic (what load_policy holds): the observations go
    # where the parameters are, not to the backend's device (np.dot(device obs, host W) raised)
    from minippo.checkpoint import evaluate_policy

    host = load_policy(path)
    assert not _on_device(next(iter(host.policy.params.values())))
    res = evaluate_policy(host.policy, cfg["env_id"], 1, True, seed=3)
    assert np.isfinite(res["mean_return"])
    if not cfg.get("norm_obs"):  # (Policy normalises with its saved statistics, the bare network not)
        assert res["returns"] == evaluate_policy(host, cfg["env_id"], 1, True, seed=3)["returns"]


# Every setting that changes which code runs on the device, one at a time (with the stand-in's
# lists, a numpy call that was never checked against CuPy fails here: the Gaussian KL's power did).
SETTINGS = [
    *(dict(objective=o) for o in ("kl_penalty", "surrogate")),
    *(dict(objective=o, n_epochs=1) for o in ("a2c", "reinforce")),  # on-policy: one epoch
    *(dict(advantage=a) for a in ("mc", "td")),
    dict(shared=True), dict(norm_obs=True, norm_reward=True), dict(clip_vloss=True),
    dict(ent_coef=0.01, ent_schedule="linear"), dict(lr_schedule="linear", clip_schedule="linear"),
    dict(target_kl=0.001), dict(activation="relu"), dict(dtype="float64"),
    dict(normalize_advantages=False), dict(max_grad_norm=0.0), dict(autoreset="next_step"),
]


@pytest.mark.parametrize("env_id, extra", [("CartPole-v1", dict(temperature=0.5)),
                                           ("Pendulum-v1", dict(log_std_init=-0.5))])
@pytest.mark.parametrize("setting", SETTINGS, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_every_setting_runs_on_the_cupy_path(strict_cupy_backend, env_id, extra, setting):
    pytest.importorskip("gymnasium")
    algo = PPO(PPOConfig(**{**TINY, "env_id": env_id, **extra, **setting})).learn()
    assert all(_on_device(p) for p in algo.policy.params.values())
    assert np.isfinite(algo.evaluate(1)["mean_return"])
    assert not _on_device(algo.policy.predict(np.zeros(algo.policy.obs_dim, np.float32)))


def test_rewards_whose_discounted_sums_overflow_are_named_on_the_cupy_path(strict_cupy_backend):
    """As tests/test_trainer.py's test on numpy and numba: on the error's path alone, the rollout's rewards
    and done flags are copied from the device to recompute their discounted sums."""
    pytest.importorskip("gymnasium")
    from envs_for_tests import register_probe

    from minippo.ppo import ReturnOverflowError

    register_probe("minippo-test/Probe-v0", 8, reward_at="every", reward=2e38)
    algo = PPO(PPOConfig(**{**TINY, "env_id": "minippo-test/Probe-v0"}))
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(
            ReturnOverflowError, match=r"returned rewards \(\|r\| up to 2e\+38\) whose discounted sums overflow"):
        algo.learn()


# The parity cases: both policies (Categorical on CartPole, Gaussian on Pendulum), each with a separate
# and a shared actor-critic, and between them the settings that run other code on the device. Pendulum
# truncated at 10 steps ends episodes inside TINY's rollouts: the bootstrap V(final obs) is read back
# to the host in same_step mode and added on the device in next_step mode.
TRUNC = {"max_episode_steps": 10}
PARITY = {
    "CartPole-clip": dict(env_id="CartPole-v1", objective="clip", norm_obs=True),
    "CartPole-kl_penalty": dict(env_id="CartPole-v1", objective="kl_penalty", norm_obs=True),
    # clip_eps 0.003: the ratio and the value are clipped in some rows (at 0.2 in none, after 8 steps)
    "CartPole-shared": dict(env_id="CartPole-v1", shared=True, norm_reward=True, clip_vloss=True, clip_eps=0.003,
                            normalize_advantages=False, ent_coef=0.01, ent_schedule="linear",
                            lr_schedule="linear", clip_schedule="linear", temperature=0.5),
    "CartPole-a2c-next_step": dict(env_id="CartPole-v1", objective="a2c", n_epochs=1, autoreset="next_step",
                                   activation="relu"),  # (td advantages; gymnasium's vectorised CartPole)
    "Pendulum-clip": dict(env_id="Pendulum-v1", objective="clip", norm_obs=True, env_kwargs=TRUNC),
    "Pendulum-shared-kl_penalty": dict(env_id="Pendulum-v1", objective="kl_penalty", shared=True,
                                       autoreset="next_step", log_std_init=-0.5, env_kwargs=TRUNC),
    # target_kl stops the first update before its 4th step (approx_kl 6.3e-6; the others are < 1e-6)
    "Pendulum-target_kl": dict(env_id="Pendulum-v1", target_kl=2e-6, norm_reward=True,
                               normalize_advantages=False, ent_coef=0.01, ent_schedule="exponential",
                               ent_end=1e-3, max_grad_norm=0.0, env_kwargs=TRUNC),
    "Pendulum-shared-reinforce": dict(env_id="Pendulum-v1", objective="reinforce", n_epochs=1,
                                      shared=True),  # (mc advantages)
}


@pytest.mark.parametrize("case", PARITY)
def test_training_on_the_cupy_path_matches_numpy(cupy_backend, monkeypatch, case):
    """float64, one seed: two updates on the cupy path end at numpy's parameters and Adam moments,
    after the same logged values (losses, KL, beta, n_updates, stopped_early, returns, ...).
    On the stand-in (numpy underneath) bit for bit. On a device cuBLAS and CUDA's reductions sum in
    their own order (~1e-16 relative per operation); Adam divides by sqrt(v) + eps, so a gradient's
    rounding difference reaches a parameter amplified by at most lr / adam_eps (3e-4 / 1e-5 = 30)
    per step: ~1e-14 after the 8 steps (4 per update), and 1e-9 leaves room for what later forward
    passes carry on. The actions are drawn on the host from what is read back: a Categorical's from
    the probabilities, so both runs act alike unless a draw lands within ~1e-16 of a boundary; a
    Gaussian's as mean + std * noise, the noise from the same Generator, so the actions differ by the
    mean's rounding (~1e-16, continuously: no boundary to cross) and Pendulum's smooth dynamics carry
    that into the next observations and rewards about as small, within the same bound. The discrete
    decisions on device values (target_kl's early stop, the adaptive beta's halving or doubling)
    match unless a KL lands within ~1e-12 relative of its threshold (the cases' are 2x off or more)."""
    pytest.importorskip("gymnasium")
    on_standin = hasattr(cupy_backend, "STATS")
    cfg = PPOConfig(**{**TINY, **PARITY[case], "dtype": "float64"})
    assert (cfg.learning_rate, cfg.adam_eps) == (3e-4, 1e-5)  # the tolerance's bound below
    runs, logs = {}, {}
    for name in ("cupy", "numpy"):
        monkeypatch.setenv(backend.ENV_VAR, name)
        backend.reset()
        rows = []
        algo = PPO(cfg).learn(callback=rows.append)
        assert algo.backend == name and algo.num_timesteps == 64 and len(rows) == 2
        assert all(_on_device(p) for p in algo.policy.params.values()) == (name == "cupy")
        runs[name] = {**{k: backend.asnumpy(p) for k, p in algo.policy.params.items()},
                      **{"m." + k: backend.asnumpy(m) for k, m in algo.optimizer.m.items()},
                      **{"v." + k: backend.asnumpy(v) for k, v in algo.optimizer.v.items()},
                      "t": np.array(algo.optimizer.t)}
        logs[name] = {k: np.array([r[k] for r in rows]) for k in rows[0] if k not in ("time", "fps")}
    if cfg.target_kl is not None:  # the case stops early (else it tests nothing of target_kl)
        assert logs["numpy"]["stopped_early"].any() and runs["numpy"]["t"] < 8
    if cfg.clip_vloss:  # the clipped value branch was taken
        assert logs["numpy"]["vclipfrac"].all()
    if cfg.env_kwargs:  # episodes ended (truncated) inside the rollouts: the bootstrap ran
        assert logs["numpy"]["mean_length"][-1] == 10
    assert runs["cupy"].keys() == runs["numpy"].keys() and logs["cupy"].keys() == logs["numpy"].keys()
    # (rtol for the logs: Pendulum's unnormalised returns and value loss are large numbers)
    for got, want_all, rtol in ((runs["cupy"], runs["numpy"], 0), (logs["cupy"], logs["numpy"], 1e-9)):
        for k, want in want_all.items():
            if on_standin:
                np.testing.assert_array_equal(got[k], want, err_msg=k)
            else:
                np.testing.assert_allclose(got[k], want, rtol=rtol, atol=1e-9, err_msg=k)


def test_adam_clips_on_its_flat_gradient_in_the_adam_kernels(strict_cupy_backend):
    """The trainer's clip + Adam step on the device (Adam.step with max_grad_norm): the gradients'
    address table up, the gather kernel, the norm (one astype, one vdot, one read-back over the flat
    gradient) and the update kernel (kernels/adam.cu; the parameters' table goes up on the first
    step only). clip_grad_norm takes 3 operations per array and a scaling per array (6 arrays here:
    24) before the step, and the step then takes the norm again, unclipped, to refuse a non-finite
    gradient (as numba's fused step does; 2 operations and a read-back). The same parameters as
    clip_grad_norm + Adam.step to rounding."""
    from minippo.optim import clip_grad_norm

    cp = strict_cupy_backend
    rng = np.random.default_rng(0)
    host = {f"g{i}": rng.normal(size=(3, i + 1)).astype(np.float32) for i in range(6)}
    runs = {}
    for way in ("flat", "per array"):
        params = {k: cp.asarray(np.ones_like(g)) for k, g in host.items()}
        grads = {k: cp.asarray(g) for k, g in host.items()}
        opt = Adam(params, lr=0.1)
        before = dict(cp.STATS)
        if way == "flat":
            norm = opt.step(grads, max_grad_norm=0.5)
        else:
            norm = clip_grad_norm(grads, 0.5)
            opt.step(grads)
        runs[way] = ({k: cp.STATS[k] - before[k] for k in before}, norm, {k: p.get() for k, p in params.items()})
    (flat, n1, p1), (per_array, n2, p2) = runs["flat"], runs["per array"]
    assert flat == {"get": 0, "upload": 2, "bool": 0, "float": 1, "ops": 4}, flat
    assert per_array == {"get": 0, "upload": 2, "bool": 0, "float": 2, "ops": 24 + 2 + 2}, per_array
    assert n1 == pytest.approx(n2, rel=1e-12) and n1 > 0.5
    for k in p1:
        np.testing.assert_allclose(p1[k], p2[k], rtol=1e-6)


def test_to_floats_reads_device_stats_back_in_one_copy_without_checks_too(strict_cupy_backend):
    """With no deferred checks, the device stats still come back in one copy, not one sync each (a
    mutant that sent them to float() one by one survived the tests, session 52)."""
    from minippo import losses

    cp = strict_cupy_backend
    stats = {"a": cp.asarray(np.array(0.5)), "b": cp.asarray(np.array(2.0, np.float32)), "c": 3.0}
    before = dict(cp.STATS)
    assert losses.to_floats(stats) == {"a": 0.5, "b": 2.0, "c": 3.0}
    assert {k: cp.STATS[k] - before[k] for k in ("get", "float", "bool")} == {"get": 1, "float": 0, "bool": 0}


def test_gradient_norm_is_one_sync_per_clip(strict_cupy_backend):
    """global_norm sums the squares on the device and reads one number back, not one per array."""
    from minippo.optim import global_norm

    cp = strict_cupy_backend
    grads = {f"g{i}": cp.asarray(np.full(4, i, np.float32)) for i in range(6)}
    before = cp.STATS["float"]
    norm = global_norm(grads)
    assert cp.STATS["float"] - before == 1
    assert norm == np.sqrt(4 * sum(i * i for i in range(6)))  # exact squares and sum: one rounding, the sqrt


def test_a_device_that_cannot_compile_is_refused_and_auto_falls_back(monkeypatch, caplog):
    """A driver without the CUDA libraries passes getDeviceCount; the backend's probe (an NVRTC
    kernel and a cuBLAS product) finds out: explicit cupy says what is missing, auto moves on."""
    cp = strict_cupy.make()

    class NoNvrtc:
        def __init__(self, code, options=()):
            raise OSError("libnvrtc.so.12: cannot open shared object file")

    cp.RawModule = NoNvrtc
    monkeypatch.setitem(sys.modules, "cupy", cp)
    with pytest.raises(RuntimeError, match=r"a CUDA device was found but CuPy cannot run on it "
                                           r"\(OSError: libnvrtc.*pip install 'cupy-cuda12x\[ctk\]>=14'"):
        backend.resolve("cupy")
    with caplog.at_level("INFO", logger="minippo"):
        name, xp = backend.resolve("auto")
    assert name in ("numba", "numpy") and xp is np
    assert f"MINIPPO_BACKEND=auto picked {name} (not cupy: a CUDA device was found but CuPy cannot run on it" \
        in caplog.text, caplog.text


def test_compute_gae_refuses_bad_dones_on_the_device(cupy_backend):
    from minippo.advantages import compute_gae

    cp = cupy_backend
    r = cp.asarray(np.ones((4, 3), np.float32))
    d = np.zeros((4, 3), np.float32)
    d[2, 1] = 2.0
    with pytest.raises(ValueError, match=r"dones must hold only 0 and 1 .*, got 2.0 at \(t, n\) = \(2, 1\)"):
        compute_gae(r, r, cp.asarray(d), cp.asarray(np.zeros(3, np.float32)), 0.9, 0.95)
    d[2, 1] = 1.0
    adv, _ = compute_gae(r, r, cp.asarray(d), cp.asarray(np.zeros(3, np.float32)), 0.9, 0.95)
    assert _on_device(adv)


def test_compute_gae_results_are_where_the_inputs_are(cupy_backend):
    """On the cupy backend, device inputs run the CUDA kernel (device results); host inputs stay on
    the host. A host out= for device results (or the other way) is refused by name: real CuPy would
    raise 'Implicit conversion to a NumPy array is not allowed' at the copy."""
    from minippo.advantages import compute_gae

    cp = cupy_backend
    rng = np.random.default_rng(0)
    r, v = rng.normal(size=(2, 6, 3)).astype(np.float32)
    d = (rng.random((6, 3)) < 0.3).astype(np.float32)
    lv = rng.normal(size=3).astype(np.float32)
    want = gae_numpy(r, v, d, lv, 0.99, 0.95)
    host = compute_gae(r, v, d, lv, 0.99, 0.95)
    assert not any(_on_device(a) for a in host)
    dev_in = [cp.asarray(a) for a in (r, v, d, lv)]
    dev = compute_gae(*dev_in, 0.99, 0.95)
    assert all(_on_device(a) for a in dev)
    for got_h, got_d, w in zip(host, dev, want, strict=True):
        np.testing.assert_array_equal(got_h, w)
        np.testing.assert_array_equal(backend.asnumpy(got_d), w)
    host_out = (np.empty((6, 3), np.float32), np.empty((6, 3), np.float32))
    with pytest.raises(ValueError, match=r"out must be two cupy arrays \(the results .*\['numpy', 'numpy'\]"):
        compute_gae(*dev_in, 0.99, 0.95, out=host_out)
    with pytest.raises(ValueError, match=r"out must be two numpy arrays \(the results are where"):
        compute_gae(r, v, d, lv, 0.99, 0.95, out=tuple(cp.asarray(a) for a in host_out))
    mixed = compute_gae(r, dev_in[1], d, dev_in[3], 0.99, 0.95)  # any device input: on the device
    assert all(_on_device(a) for a in mixed)
    np.testing.assert_array_equal(backend.asnumpy(mixed[0]), want[0])
    dev_out = tuple(cp.asarray(a) for a in host_out)
    assert compute_gae(*dev_in, 0.99, 0.95, out=dev_out) is dev_out
    np.testing.assert_array_equal(backend.asnumpy(dev_out[0]), want[0])


@pytest.mark.parametrize("dones_dtype", [np.float64, np.float32, np.int64, bool])
def test_compute_gae_takes_host_dones_of_any_dtype_beside_device_rewards(cupy_backend, dones_dtype):
    """Host float64 dones beside float32 device rewards were checked in their own dtype through
    cp.ascontiguousarray(dones), which takes device arrays only: a TypeError on real CuPy (the
    stand-in uploaded them, until it refused as CuPy does)."""
    from minippo.advantages import compute_gae

    r, v, d, lv = _gae_rollout()
    want = gae_numpy(r, v, d, lv, 0.99, 0.95)
    cp = cupy_backend
    adv, ret = compute_gae(cp.asarray(r), cp.asarray(v), d.astype(dones_dtype), cp.asarray(lv), 0.99, 0.95)
    np.testing.assert_array_equal(backend.asnumpy(adv), want[0])
    np.testing.assert_array_equal(backend.asnumpy(ret), want[1])
    bad = d.astype(dones_dtype)
    if dones_dtype is np.float64:  # 1 + 1e-12 is 1 in float32: checked in float64, it is refused
        bad[2, 1] = 1 + 1e-12
        with pytest.raises(ValueError, match="dones must hold only 0 and 1"):
            compute_gae(cp.asarray(r), cp.asarray(v), bad, cp.asarray(lv), 0.99, 0.95)
    with pytest.raises(TypeError, match="_ndarray_base"):
        cp.ascontiguousarray(d)  # as CuPy refuses it (the stand-in, as well as real CuPy)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compute_gae_takes_gamma_and_lambda_as_0d_device_arrays(cupy_backend, dtype):
    """gamma as a 0-d device array (the checks take it) reached np.float32(gamma), which CuPy
    refuses ('Implicit conversion to a NumPy array is not allowed'); float64 passed by chance."""
    from minippo.advantages import compute_gae

    cp = cupy_backend
    r, v, d, lv = (cp.asarray(a) for a in _gae_rollout(dtype=dtype))
    lam = np.float32(0.95)  # (as float(lam), as the numpy backend takes it)
    want = compute_gae(r, v, d, lv, 0.99, float(lam))
    got = compute_gae(r, v, d, lv, cp.asarray(np.float64(0.99)), cp.asarray(lam))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(backend.asnumpy(g), backend.asnumpy(w))


def _gae_rollout(T=9, N=5, dtype=np.float32, seed=3):
    rng = np.random.default_rng(seed)
    r, v = rng.normal(size=(2, T, N)).astype(dtype)
    d = (rng.random((T, N)) < 0.3).astype(dtype)
    return r, v, d, rng.normal(size=N).astype(dtype)


def test_compute_gae_on_the_device_checks_dones_before_writing_out(cupy_backend):
    """The dones check runs on the device before the GAE kernel, which writes nothing when it
    failed: out= is left as it was, and the error still names the entry. dones are checked in their
    own dtype: a float64 1 + 1e-12 or 1e-50 is refused, though either rounds to a float32 1 or 0."""
    from minippo.advantages import compute_gae

    cp = cupy_backend
    r, v, d, lv = _gae_rollout()
    for value, dtype in ((2.0, np.float32), (np.nan, np.float32), (-1.0, np.float64), (1 + 1e-12, np.float64),
                         (1e-50, np.float64), (3, np.int64)):
        bad = d.astype(dtype)
        bad[4, 2] = value
        out = (cp.asarray(np.full_like(r, 7.0)), cp.asarray(np.full_like(r, 8.0)))
        with pytest.raises(ValueError, match=r"dones must hold only 0 and 1 .*at \(t, n\) = \(4, 2\)"):
            compute_gae(cp.asarray(r), cp.asarray(v), cp.asarray(bad), cp.asarray(lv), 0.99, 0.95, out=out)
        assert (backend.asnumpy(out[0]) == 7.0).all() and (backend.asnumpy(out[1]) == 8.0).all()
    want = gae_numpy(r, v, d, lv, 0.99, 0.95)
    for dones in (d.astype(bool), d.astype(np.float64), d.astype(np.int8)):  # cast exactly to float32
        got = compute_gae(cp.asarray(r), cp.asarray(v), cp.asarray(dones), cp.asarray(lv), 0.99, 0.95)
        assert got[0].dtype == np.float32
        np.testing.assert_array_equal(backend.asnumpy(got[0]), want[0])
        np.testing.assert_array_equal(backend.asnumpy(got[1]), want[1])


def test_compute_gae_on_the_device_writes_into_out_or_copies_where_it_must(cupy_backend):
    """out= that the kernel can write into (C-contiguous, apart from the inputs) gets the results
    directly; out over an input (the same array or a shifted view of it), interleaved with each
    other, or strided gets them through new arrays: the same numbers as numpy. Both outputs one
    array is refused."""
    from minippo.advantages import compute_gae

    cp = cupy_backend
    T, N = 9, 5
    r, v, d, lv = _gae_rollout(T, N)
    want = gae_numpy(r, v, d, lv, 0.99, 0.95)

    def run(make_out):
        dev = {k: cp.asarray(a) for k, a in zip("rvdl", (r, v, d, lv), strict=True)}
        buf = cp.asarray(np.full((T + 1, 2 * N), np.nan, np.float32))
        out = make_out(dev, buf)
        got = compute_gae(dev["r"], dev["v"], dev["d"], dev["l"], 0.99, 0.95, out=out)
        assert got[0] is out[0] and got[1] is out[1]
        return [backend.asnumpy(a) for a in got]

    cases = {
        "apart": lambda dev, buf: (cp.asarray(np.empty_like(r)), cp.asarray(np.empty_like(r))),
        "over the inputs": lambda dev, buf: (dev["r"], dev["v"]),
        "over dones": lambda dev, buf: (dev["d"], cp.asarray(np.empty_like(r))),
        "strided": lambda dev, buf: (buf[:T, ::2], buf[1:, 1::2]),
    }
    for name, make_out in cases.items():
        adv, ret = run(make_out)
        np.testing.assert_array_equal(adv, want[0], err_msg=name)
        np.testing.assert_array_equal(ret, want[1], err_msg=name)

    def shifted(dev, buf):  # adv's row t lies on rewards' row t + 1, which the kernel reads later
        big = cp.asarray(np.concatenate([np.zeros((1, N), np.float32), r]))
        dev["r"] = big[1:]
        return big[:-1], cp.asarray(np.empty_like(r))

    adv, _ = run(shifted)
    np.testing.assert_array_equal(adv, want[0])
    one = cp.asarray(np.full_like(r, 7.0))  # one array for both: refused (it was given the returns)
    with pytest.raises(ValueError, match=r"out\[0\] and out\[1\] share memory"):
        run(lambda dev, buf: (one, one))
    from minippo.kernels import gpu

    with pytest.raises(ValueError, match=r"out\[0\] and out\[1\] share memory"):  # gpu.gae itself too
        gpu.gae(*(cp.asarray(a) for a in (r, v, d, lv)), 0.99, 0.95, out=(one, one))
    assert (backend.asnumpy(one) == 7.0).all()


def test_compute_gae_on_the_device_is_two_launches_and_one_sync(strict_cupy_backend):
    """A device rollout's GAE: the dones check and the GAE kernel, then the check's flag read back
    once; with out= nothing more (no copy). The check by array operations was four operations and a
    sync, and out= two copies more. (The flag's zeroing, a memset on a device, is not counted: the
    stand-in's zeros counts nothing.)"""
    from minippo.advantages import compute_gae

    cp = strict_cupy_backend
    dev = [cp.asarray(a) for a in _gae_rollout()]
    out = (cp.empty((9, 5), np.float32), cp.empty((9, 5), np.float32))
    for kw in ({}, {"out": out}):
        before = dict(cp.STATS)
        compute_gae(*dev, 0.99, 0.95, **kw)
        delta = {k: cp.STATS[k] - before[k] for k in before}
        assert delta == {"get": 0, "upload": 0, "bool": 0, "float": 1, "ops": 2}, (kw.keys(), delta)


def test_buffer_takes_the_valid_mask_on_the_host_or_on_the_device(cupy_backend):
    """RolloutBuffer.add takes the valid mask on the host (as the trainer passes it) or as a device
    array (a 0/1 float mask): either way the device copy and the host copy that minibatches() selects
    with hold that mask, and the minibatches are exactly the valid transitions."""
    from minippo.buffer import RolloutBuffer

    cp = cupy_backend
    T, N = 4, 2
    mask = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], np.float32)
    buf = RolloutBuffer(T, N, 1, (), 1, np.float32, discrete=True, xp=cp)
    for t in range(T):
        ids = np.arange(t * N, (t + 1) * N, dtype=np.float32)  # transition t*N + n, as obs and reward
        zeros = np.zeros(N, np.float32)
        valid = mask[t] if t % 2 == 0 else cp.asarray(mask[t])  # host, device, host, device
        buf.add(cp.asarray(ids[:, None]), cp.asarray(np.zeros(N, np.int64)), cp.asarray(zeros),
                cp.asarray(zeros), cp.asarray(zeros[:, None]), cp.asarray(ids), cp.asarray(zeros), valid)
    assert _on_device(buf.valid) and type(buf.valid_host) is np.ndarray
    np.testing.assert_array_equal(backend.asnumpy(buf.valid), mask)
    np.testing.assert_array_equal(buf.valid_host, mask != 0)
    want = np.flatnonzero(mask.ravel())  # the valid transitions, in the flattened (t, n) order
    for batch_size, n_batches in ((T * N, 1), (2, 4)):
        parts = [backend.asnumpy(mb["obs"]).ravel() for mb in buf.minibatches(batch_size, np.random.default_rng(0))]
        assert len(parts) == n_batches
        np.testing.assert_array_equal(np.sort(np.concatenate(parts)), want)


def test_array_module_follows_the_array_not_the_backend(monkeypatch):
    """A cupy array is cupy's whatever MINIPPO_BACKEND says (ActorCritic.to(cupy.asarray) under numpy:
    Adam's state and evaluation must go to the device), and asking does not resolve the backend."""
    cp = strict_cupy.make()
    monkeypatch.setitem(sys.modules, "cupy", cp)
    monkeypatch.setenv(backend.ENV_VAR, "bogus")  # resolving would raise
    backend.reset()
    try:
        assert backend.array_module(cp.asarray(np.ones(2))) is cp
        assert backend.array_module(np.ones(2)) is np
    finally:
        monkeypatch.delenv(backend.ENV_VAR)
        backend.reset()


@pytest.mark.parametrize("env_id, per_step, step_ops_max, minibatch_ops_max",
                         [("CartPole-v1", 1, 10, 171), ("Pendulum-v1", 1, 10, 174)])
def test_device_syncs_stay_within_budget(strict_cupy_backend, env_id, per_step, step_ops_max, minibatch_ops_max):
    """Each bool/float of a device array and each read-back stalls the GPU. A minibatch makes 2: the
    stats read back together with the verdict of its value checks (one finiteness test per loss, one for
    the distribution, one for the actions: 5 syncs of their own until session 51), and the gradient
    norm. It was ~20 until session 16 (one test per array, a read-back per stat). A rollout step reads
    back what it samples from, once: since session 50 the host tests it for NaN/inf
    (kernels/gpu_act.py); before, a second sync tested it on the device (two for a Gaussian: the mean
    and log-std). The Gaussian's minibatch took one operation more in session 55 (|log_std| against
    its bound, in the distribution's one verdict)."""
    pytest.importorskip("gymnasium")
    cp = strict_cupy_backend
    algo = PPO(PPOConfig(env_id=env_id, n_envs=4, n_steps=32, batch_size=32, n_epochs=1, total_timesteps=128,
                         hidden=(8,), clip_vloss=True, ent_coef=0.01))

    def syncs():
        return cp.STATS["bool"] + cp.STATS["float"] + cp.STATS["get"]

    before, ops = syncs(), cp.STATS["ops"]
    algo.collect_rollout()  # (+ 2: the last observation's value, GAE's dones check)
    assert syncs() - before <= per_step * 32 + 2
    step_ops = (cp.STATS["ops"] - ops) / 32
    before, ops = syncs(), cp.STATS["ops"]
    out = algo.update(0.0)
    assert out["n_updates"] == 4
    assert syncs() - before <= 2 * 4 + 2  # (+ 2: the explained variance, once per update)
    # Device operations (about a kernel launch each; docs/kernels.md "On a GPU"): a rollout step 32 / 37
    # until session 50, ~10 since (both MLPs in one launch of kernels/act.cu, the distribution on the
    # host); a minibatch 238 / 248 until session 48, when the gradient norm moved onto Adam's flat
    # gradient (209 / 215), and 166 / 168 since session 49, when Adam's gather, moments, step and
    # parameter updates became the two kernels of kernels/adam.cu; 169 / 171 since session 51 (the checks'
    # verdicts stacked and read back with the stats: 3 operations for 5 syncs); 169 / 172 since session 55
    # (the Gaussian's |log_std| bound); 171 / 174 since session 58 (r_t A_t held at 0 where A_t = 0:
    # inf * 0 was NaN where r_t overflowed). A bound, so that they do not creep up.
    assert step_ops <= step_ops_max
    assert (cp.STATS["ops"] - ops) / 4 <= minibatch_ops_max


def test_a_rollout_step_uploads_each_array_once(strict_cupy_backend):
    """The host -> device copies of a rollout step are the env boundary's six: the observations, the
    sampled actions and their log-probs, rewards, dones and the valid mask. The actions went up twice
    (once to take their log-prob, once more for the buffer) until the policy handed its device copy to
    the rollout; the log-probs are taken on the host with the draw since session 50 (kernels/gpu_act.py:
    an upload in place of ~6 device operations)."""
    pytest.importorskip("gymnasium")
    cp = strict_cupy_backend
    algo = PPO(PPOConfig(env_id="CartPole-v1", n_envs=4, n_steps=32, batch_size=32, n_epochs=1,
                         total_timesteps=128, hidden=(8,)))
    algo.collect_rollout()  # the first one also resets the envs
    before = cp.STATS["upload"]
    algo.collect_rollout()
    # (+ 1 after the loop: the last observations, for their values)
    assert cp.STATS["upload"] - before == 6 * 32 + 1


def test_a_truncation_bootstrap_uploads_the_env_indices_once(strict_cupy_backend, monkeypatch):
    """NEXT_STEP autoreset adds gamma V(final obs) to a truncated step's reward one step later, at the
    envs in a host index: CuPy copies a host index on every use (three per bootstrap, as once
    written), so it goes up once, and the rewards are numpy's. Counter truncates at its 3rd step and
    resets on the next, so with 2 envs in step the first 15-step rollout's truncated steps are 2, 6,
    10 (bootstrapped a step later) and 14 (after the loop), the second's 3, 7, 11 (its step 0 a
    reset)."""
    pytest.importorskip("gymnasium")
    from envs_for_tests import COUNTER_ID, register

    register()
    cp = strict_cupy_backend
    cfg = PPOConfig(env_id=COUNTER_ID, n_envs=2, n_steps=15, batch_size=30, n_epochs=1, total_timesteps=60,
                    hidden=(8,), dtype="float64", autoreset="next_step")
    algo = PPO(cfg)
    uploads, rewards = [], []
    for _ in range(2):
        before = cp.STATS["upload"]
        algo.collect_rollout()
        uploads.append(cp.STATS["upload"] - before)
        rewards.append(backend.asnumpy(algo.buffer.rewards).copy())
    assert uploads == [6 * 15 + 1 + 4 + 1, 6 * 15 + 1 + 3]  # (+ 1 in the first: the act kernel's layer table)
    monkeypatch.setenv(backend.ENV_VAR, "numpy")
    backend.reset()
    algo = PPO(cfg)
    for want, rows in zip(rewards, ([2, 6, 10, 14], [3, 7, 11]), strict=True):
        algo.collect_rollout()
        np.testing.assert_array_equal(algo.buffer.rewards, want)
        # the bootstraps landed where said: every other reward is 1 (a reset step's 0: not acted on)
        for col in ~np.isin(want, (0.0, 1.0)).T:
            assert np.flatnonzero(col).tolist() == rows


def test_a_whole_rollout_minibatch_uploads_no_index_when_every_step_is_valid(strict_cupy_backend):
    """One minibatch covering the rollout (the CartPole preset's batch_size = n_envs * n_steps) of valid
    steps only is the buffer's own arrays: no index goes up. The valid steps' index went up once per
    rollout, unused. What does go up is Adam's: the gradients' address table each step, the
    parameters' on the first (kernels/adam.cu)."""
    pytest.importorskip("gymnasium")
    cp = strict_cupy_backend
    algo = PPO(PPOConfig(env_id="CartPole-v1", n_envs=4, n_steps=32, batch_size=128, n_epochs=2,
                         total_timesteps=128, hidden=(8,)))
    algo.collect_rollout()
    assert algo.buffer.valid_host.all()
    before = cp.STATS["upload"]
    assert algo.update(0.0)["n_updates"] == 2
    assert cp.STATS["upload"] - before == 2 + 1


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_deterministic_act_keeps_the_device_actions_on_the_device(strict_cupy_backend, env_id):
    """act(deterministic=True): the actor's output comes down once, the host takes the mode and its
    log-prob, and both go up (as for a sample; the device copy of the actions equals the host's).
    The first act also uploads the layers' address table, kept for the next: then 2 uploads."""
    pytest.importorskip("gymnasium")
    cp = strict_cupy_backend
    algo = PPO(PPOConfig(**TINY, env_id=env_id))
    obs = cp.asarray(np.zeros((3, algo.policy.obs_dim), np.float32))
    before = dict(cp.STATS)
    actions, a_dev, logp, _, _ = algo.policy.act_with_device_actions(obs, algo.rng, deterministic=True)
    assert cp.STATS["upload"] - before["upload"] == 3 and cp.STATS["get"] - before["get"] == 1
    before = dict(cp.STATS)
    actions, a_dev, logp, _, _ = algo.policy.act_with_device_actions(obs, algo.rng, deterministic=True)
    assert cp.STATS["upload"] - before["upload"] == 2 and cp.STATS["get"] - before["get"] == 1
    assert _on_device(a_dev) and not _on_device(actions)
    np.testing.assert_array_equal(backend.asnumpy(a_dev), actions)
    assert backend.asnumpy(logp).shape == (3,)


def test_actions_go_to_the_distributions_side_once(cupy_backend):
    """A device policy's sample() draws on the host: log_prob(sample) and log_prob_grad(sample) take the
    host actions to the device once (DiagGaussian raised CuPy's "Unsupported type numpy.ndarray";
    Categorical's host index was uploaded on each call), and device actions come to a host
    distribution. The results are numpy's, to rounding on a device."""
    from minippo.distributions import Categorical, DiagGaussian

    cp = cupy_backend
    rng = np.random.default_rng(0)
    mean, log_std, logits = rng.normal(size=(4, 2)), rng.normal(size=2) * 0.1, rng.normal(size=(4, 3))
    g = rng.normal(size=4)
    for make in (lambda xp: DiagGaussian(xp.asarray(mean), xp.asarray(log_std)),
                 lambda xp: Categorical(xp.asarray(logits))):
        host, dev = make(np), make(cp)
        a = dev.sample(np.random.default_rng(1))
        assert type(a) is np.ndarray
        np.testing.assert_array_equal(a, host.sample(np.random.default_rng(1)))
        uploads = cp.STATS["upload"] if hasattr(cp, "STATS") else None
        got, grads = dev.log_prob(a), dev.log_prob_grad(a, cp.asarray(g))
        if uploads is not None:
            assert cp.STATS["upload"] - uploads == 2  # the actions once, g once
        assert _on_device(got) and all(_on_device(v) for v in grads.values())
        np.testing.assert_allclose(backend.asnumpy(got), host.log_prob(a), rtol=1e-12)
        for k, v in host.log_prob_grad(a, g).items():
            np.testing.assert_allclose(backend.asnumpy(grads[k]), v, rtol=1e-12, atol=1e-15, err_msg=k)
        fresh = make(np)  # device actions (another array: no check of them cached) for a host distribution
        np.testing.assert_allclose(fresh.log_prob(cp.asarray(a)), host.log_prob(a), rtol=0)
    with pytest.raises(TypeError, match="mean and log_std must both be numpy or both cupy arrays, got cupy"):
        DiagGaussian(cp.asarray(mean), log_std)
    with pytest.raises(FloatingPointError, match="actions contains NaN or inf"):
        DiagGaussian(cp.asarray(mean), cp.asarray(log_std)).log_prob(np.full((4, 2), np.nan))
    with pytest.raises(ValueError, match=r"actions must be integers in \[0, 3\)"):
        Categorical(cp.asarray(logits)).log_prob(np.array([0, 1, 2, 3]))


def test_device_flags_and_gradients_are_taken_and_host_only_inputs_named(cupy_backend):
    """flag() takes a 0-d bool computed on a device (or numpy's), as is_real takes a 0-d number;
    check_grads and rel_error take device gradients (loss_and_grads on the cupy backend) and
    compare them on the host; what works on the host only (finite differences, which perturb the
    parameters in place, and the normalisers, whose statistics are numpy arrays) names the device
    array it was given instead of CuPy's "Implicit conversion to a NumPy array is not allowed"."""
    from minippo._checks import flag
    from minippo.envs import ObsNormalizer, RewardScaler, RunningMeanStd
    from minippo.gradcheck import check_grads, numerical_grads, rel_error

    cp = cupy_backend
    assert flag("shared", cp.asarray(np.array(True))) is True and flag("shared", np.array(False)) is False
    assert flag("shared", cp.asarray(np.array(1, np.int8))) is True
    for bad in (cp.asarray(np.array(2)), cp.asarray(np.array(1.0)), cp.asarray(np.array([True])), np.array(2)):
        with pytest.raises(TypeError, match="shared must be True or False"):
            flag("shared", bad)
    p = {"w": np.array([1.0, -2.0, 0.5])}
    f = lambda: float((p["w"] ** 3).sum())  # noqa: E731
    exact = 3 * p["w"] ** 2
    assert check_grads(f, p, {"w": cp.asarray(exact)}) == check_grads(f, p, {"w": exact}) < 1e-8
    assert check_grads(f, p, {"w": cp.asarray(exact + 0.1)}) > 1e-2
    assert rel_error(cp.asarray(exact), exact) == 0.0
    with pytest.raises(TypeError, match=r"params\['w'\] must be a host array \(numpy.ndarray\), got cupy.*"
                                        r"finite differences perturb the parameters in place on the host"):
        numerical_grads(f, {"w": cp.asarray(p["w"])})
    host_only = r"must be a host array \(numpy.ndarray\), got cupy.*: the running statistics live on the host"
    x = cp.asarray(np.ones((4, 2)))
    for call, name in ((lambda: RunningMeanStd((2,)).update(x), "x"), (lambda: ObsNormalizer(2)(x), "obs"),
                       (lambda: RewardScaler(2, 0.99)(cp.asarray(np.ones(2)), np.zeros(2, bool)), "rewards"),
                       (lambda: RewardScaler(2, 0.99)(np.ones(2), cp.asarray(np.zeros(2, bool))), "dones"),
                       (lambda: RewardScaler(2, 0.99)(np.ones(2), np.zeros(2, bool), cp.asarray(np.ones(2, bool))),
                        "valid")):
        with pytest.raises(TypeError, match=name + " " + host_only):
            call()


def test_train_says_when_a_small_network_would_train_faster_on_the_cpu(strict_cupy_backend, monkeypatch, tmp_path,
                                                                      capsys):
    """``minippo train`` on cupy with widths <= 64 (the presets') prints a line naming numba; not for a
    wider network, nor on a CPU backend, nor with --quiet."""
    pytest.importorskip("gymnasium")
    from minippo.cli import main

    def train(out, hidden, *extra):
        argv = ["train", "CartPole-v1", "--timesteps", "32", "--n-envs", "2", "--out", str(tmp_path / out),
                "--set", "n_steps=16", "--set", "batch_size=32", "--set", "n_epochs=1", "--set", f"hidden={hidden}"]
        assert main([*argv, *extra]) == 0
        return capsys.readouterr().err

    hint = "is small for a GPU: each CuPy operation costs ~12-20 us whatever its size"
    err = train("a", "[64,64]")
    assert "on backend cupy" in err and "minippo: hidden=[64, 64] " + hint in err and "MINIPPO_BACKEND=numba" in err
    assert hint not in train("b", "[128]") and hint not in train("c", "[8]", "--quiet")
    monkeypatch.setenv(backend.ENV_VAR, "numpy")
    backend.reset()
    err = train("d", "[8]")
    assert "on backend numpy" in err and hint not in err


# ---------------------------------------------------------------- deferred value checks (session 51)
def test_deferred_checks_wait_for_the_verdict_and_raise_the_first_failure(strict_cupy_backend):
    """Inside ``deferred_checks`` a check of a device array reads nothing back until verified; a
    host array's check raises where it stands; leaving the block verifies what is left; an error
    raised in the block after a failed check gives way to that check's error, as it would have
    stopped the block first; without a failed check the block's own error goes through."""
    from minippo._checks import deferred_checks, finite

    cp = strict_cupy_backend
    good, bad = cp.asarray(np.ones(3)), cp.asarray(np.array([1.0, np.nan, 2.0]))
    reads = cp.STATS["bool"]
    with deferred_checks() as checks:
        finite(a=good)
        finite(b=bad, c=good)
        finite(d=bad)
        assert cp.STATS["bool"] == reads and len(checks.recorded) == 3  # nothing read yet
        with pytest.raises(FloatingPointError, match="^x contains NaN or inf$"):
            finite(x=np.array([np.inf]))  # a host array: at once
        with pytest.raises(FloatingPointError, match="^b contains NaN or inf$"):  # the first failed, by name
            checks.verify()
        assert checks.recorded == []
    with pytest.raises(FloatingPointError, match="^b contains NaN or inf$"), deferred_checks():
        finite(a=good, b=bad)  # not verified inside: verified on leaving
    with pytest.raises(FloatingPointError, match="^b contains NaN or inf$") as info, deferred_checks():
        finite(b=bad)
        raise IndexError("what NaN inputs led to")
    assert info.value.__suppress_context__
    with pytest.raises(IndexError, match="no check failed"), deferred_checks():
        finite(a=good)
        raise IndexError("no check failed")
    with deferred_checks() as checks:
        finite(a=good)
        before = cp.STATS["ops"]
        assert bool(checks.ok) and cp.STATS["ops"] == before  # one check: its own verdict, no operation
        finite(a=good)
        before = cp.STATS["ops"]
        assert bool(checks.ok) and cp.STATS["ops"] == before + 2  # several: stacked and reduced
    with pytest.raises(FloatingPointError, match="^b contains"):
        finite(b=bad)  # outside a block: at once


def test_deferred_checks_are_per_thread(strict_cupy_backend):
    """A block's deferral belongs to its context: another thread's checks raise at once."""
    import threading

    from minippo._checks import deferred_checks, finite

    bad = strict_cupy_backend.asarray(np.array([np.nan]))
    seen = []

    def other():
        try:
            finite(t=bad)
        except FloatingPointError as e:
            seen.append(str(e))

    with deferred_checks() as checks:
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert seen == ["t contains NaN or inf"] and checks.recorded == []


CORRUPTIBLE = ("obs", "actions", "logp_old", "advantages", "returns", "values_old", "dist_old", "weight")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(discrete=st.booleans(), shared=st.booleans(), objective=st.sampled_from(["clip", "kl_penalty", "a2c"]),
       corrupt=st.lists(st.sampled_from(CORRUPTIBLE), unique=True, max_size=3), row=st.integers(0, 5),
       value=st.sampled_from([np.nan, np.inf, -np.inf]), bad_action=st.sampled_from([-1.0, 0.5, 9.0, np.nan]))
def test_a_minibatch_on_cupy_raises_what_numpy_raises_and_syncs_once(strict_cupy_backend, discrete, shared,
                                                                     objective, corrupt, row, value, bad_action):
    """loss_and_grads on the cupy stand-in, its value checks deferred to the stats' read-back: a
    minibatch with NaN/inf in any of its arrays or the policy's weights, or an invalid action, raises
    the error (type and message) numpy raises checking at once; a sound one gives numpy's stats to
    rounding with one read-back and no other sync (5 until session 51)."""
    from minippo.ppo import loss_and_grads

    cp = strict_cupy_backend
    policy, batch = make_case(discrete, shared, seed=row)
    for key in corrupt:
        if key == "weight":
            next(iter(policy.params.values())).flat[row] = value
        elif key == "actions":
            batch[key] = batch[key].astype(np.float64)
            batch[key].flat[row] = bad_action if discrete else value
        else:
            batch[key].reshape(len(batch[key]), -1)[row, 0] = value
    config = config_for(objective)
    dev_policy = copy.deepcopy(policy).to(cp.asarray)
    dev_batch = {k: cp.asarray(v) for k, v in batch.items()}
    try:
        with np.errstate(all="ignore"):
            want, want_grads = loss_and_grads(policy, batch, config)
    except (FloatingPointError, ValueError) as e:
        want = e
    before = {k: cp.STATS[k] for k in ("get", "bool", "float")}
    try:
        with np.errstate(all="ignore"):  # (the stand-in's numpy would warn where CuPy does not)
            got, got_grads = loss_and_grads(dev_policy, dev_batch, config)
    except (FloatingPointError, ValueError) as e:
        got = e
    if isinstance(want, Exception):
        assert type(got) is type(want) and str(got) == str(want)
    else:
        assert got.keys() == want.keys()
        np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=1e-12, atol=1e-12)
        assert {k: cp.STATS[k] - n for k, n in before.items()} == {"get": 1, "bool": 0, "float": 0}
        assert got_grads.keys() == want_grads.keys()  # the gradients too, read back after the count
        for k, g in want_grads.items():
            np.testing.assert_allclose(cp.asnumpy(got_grads[k]), g, rtol=1e-12, atol=1e-12, err_msg=k)


def test_the_gpu_act_takes_actorcritic_and_mlp_themselves(strict_cupy_backend):
    """act.cu computes what ActorCritic's and MLP's own methods do: for a subclass (a policy with its
    own forward, say) the kernel's state is refused and the array path runs, the override included.
    (A guard of ActorCritic.fused_layers, which took over the check gpu_act had from earlier in the session.)"""
    from minippo.kernels import gpu_act

    from minippo.nn import MLP
    from minippo.policy import ActorCritic
    from minippo.spaces import Discrete

    cp = strict_cupy_backend
    assert gpu_act._state(ActorCritic(4, Discrete(2), (8,)).to(cp.asarray)) is not None

    class Mine(ActorCritic):
        pass

    class MyMLP(MLP):
        pass

    assert gpu_act._state(Mine(4, Discrete(2), (8,)).to(cp.asarray)) is None
    odd = ActorCritic(4, Discrete(2), (8,)).to(cp.asarray)
    odd.critic.__class__ = MyMLP
    assert gpu_act._state(odd) is None


def test_an_integer_index_is_a_0d_view_and_equal_advantages_normalise_to_zero(strict_cupy_backend):
    """CuPy's a[0] is a 0-d view of a (the stand-in gave a copy), and CuPy's ufuncs copy an input that
    overlaps their output first, as numpy does: a -= a[0] is right on both. normalize works on A - A_0
    on the device too: equal float64 advantages of 1e6 give exact zeros."""
    cp = strict_cupy_backend
    a = cp.asarray(np.arange(4.0) + 1.0)
    first = a[0]
    a[0] = cp.asarray(np.float64(7.0))
    assert float(first) == 7.0  # (a view: it sees the write)
    a -= a[0]
    np.testing.assert_array_equal(cp.asnumpy(a), [0.0, -5.0, -4.0, -3.0])
    from minippo.ppo import normalize

    np.testing.assert_array_equal(cp.asnumpy(normalize(cp.asarray(np.full(8, 1e6 + 0.1)))), 0.0)
