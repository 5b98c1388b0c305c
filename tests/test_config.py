"""minippo.config.PPOConfig: every validation names the field, the bad value and what is
allowed; documentation of every field; serialisation, overrides and presets."""

import ast
import dataclasses
import inspect
import json
import re
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minippo import config as config_module
from minippo.config import (
    ACTIVATIONS,
    ADVANTAGES,
    AUTORESET_MODES,
    DTYPES,
    OBJECTIVES,
    PRESETS,
    SCHEDULE_KINDS,
    VECTOR_MODES,
    PPOConfig,
    preset,
)

CHOICES = {
    "objective": OBJECTIVES,
    "advantage": ADVANTAGES,
    "lr_schedule": SCHEDULE_KINDS,
    "clip_schedule": ("constant", "linear"),
    "ent_schedule": SCHEDULE_KINDS,
    "activation": ACTIVATIONS,
    "vector": VECTOR_MODES,
    "autoreset": AUTORESET_MODES,
    "dtype": DTYPES,
}


def _err(field, value):
    """Regex for the common message: names the field and the bad value."""
    return rf"PPOConfig\.{field}={re.escape(repr(value))} is invalid"


def test_defaults_are_valid_and_match_the_paper():
    """The paper's MuJoCo settings (Schulman et al. 2017, Table 3 in Appendix A): 64-64 tanh,
    separate networks, log-std init 0, no entropy bonus, horizon 2048, 10 epochs, minibatch 64, Adam
    3e-4, gamma 0.99, lambda 0.95, clip 0.2 (Table 1's best), adaptive KL from beta 1 at d_targ
    0.01; the implementation details' Adam eps 1e-5 and grad-norm clip 0.5; c_1 = 0.5 as in
    baselines. One env, 1M steps, seed 0."""
    c = PPOConfig()
    assert c.validate() is c
    paper = (c.clip_eps, c.gamma, c.gae_lambda, c.n_epochs, c.batch_size, c.n_steps, c.learning_rate)
    assert paper == (0.2, 0.99, 0.95, 10, 64, 2048, 3e-4)
    assert c.objective == "clip" and c.adam_eps == 1e-5 and c.hidden == (64, 64)
    assert (c.activation, c.shared, c.log_std_init, c.ent_coef, c.kl_target, c.kl_beta) == (
        "tanh", False, 0.0, 0.0, 0.01, 1.0)
    assert (c.max_grad_norm, c.vf_coef, c.temperature, c.lr_schedule, c.lr_end, c.ent_end) == (
        0.5, 0.5, 1.0, "constant", 0.0, 0.0)
    assert (c.n_envs, c.total_timesteps, c.seed, c.eval_episodes) == (1, 1_000_000, 0, 10)


def test_every_field_has_a_docstring():
    """A string literal right under every field of the dataclass (STYLE: per-field docstrings)."""
    tree = ast.parse(inspect.getsource(config_module))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "PPOConfig")
    documented, body = set(), cls.body
    for stmt, nxt in zip(body, body[1:], strict=False):
        if isinstance(stmt, ast.AnnAssign) and isinstance(nxt, ast.Expr):
            if isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                documented.add(stmt.target.id)
    fields = {f.name for f in dataclasses.fields(PPOConfig)}
    assert fields - documented == set()


@pytest.mark.parametrize("field", sorted(CHOICES))
def test_choice_fields_name_field_value_and_allowed(field):
    with pytest.raises(ValueError, match=_err(field, "bogus")) as info:
        PPOConfig(**{field: "bogus"})
    msg = str(info.value)
    assert "allowed values are " + ", ".join(CHOICES[field]) in msg


@pytest.mark.parametrize("field", sorted(CHOICES))
def test_choice_fields_take_strings_only(field):
    """A 0-d string array (np.array("clip")) compared equal to its string and passed the check, then
    failed to_json: after training, at the save. A numpy string is a string."""
    good = CHOICES[field][1]  # (not the default)
    with pytest.raises(ValueError, match=rf"PPOConfig\.{field}=array\('{good}'.*allowed values are"):
        PPOConfig(**{field: np.array(good)})
    cfg = PPOConfig(**{field: np.str_(good)})
    assert type(getattr(cfg, field)) is str and json.loads(cfg.to_json())[field] == good


def test_numpy_values_are_stored_as_the_python_values_they_hold():
    """A sweep over np.arange or values read from arrays: numpy ints, floats, bools and widths become
    Python ones (validation takes them, to_json writes them); a float field given an integer is a float."""
    cfg = PPOConfig(n_envs=np.int64(4), n_steps=np.int32(16), batch_size=np.uint8(16),
                    learning_rate=np.float32(0.5), gamma=np.float64(0.9), vf_coef=np.int64(1),
                    shared=np.True_, clip_vloss=np.False_, hidden=(np.int64(8), np.int16(4)))
    for name, want in (("n_envs", 4), ("n_steps", 16), ("batch_size", 16), ("learning_rate", 0.5), ("gamma", 0.9),
                       ("vf_coef", 1.0), ("shared", True), ("clip_vloss", False), ("hidden", (8, 4))):
        got = getattr(cfg, name)
        assert got == want and type(got) is type(want), name
    assert all(type(w) is int for w in cfg.hidden)
    assert PPOConfig.from_dict(json.loads(cfg.to_json())) == cfg


@pytest.mark.parametrize("dtype", [np.dtype("float64"), np.float64, "float64"])
def test_dtype_may_be_given_as_a_numpy_dtype_and_is_stored_by_name(dtype):
    """np.dtype("float32") == "float32", so a dtype object passed the check and the run trained, then
    its save failed ('Object of type Float32DType is not JSON serializable') and the model was lost."""
    cfg = PPOConfig(dtype=dtype)
    assert cfg.dtype == "float64" and type(cfg.dtype) is str and PPOConfig.from_dict(json.loads(cfg.to_json())) == cfg
    with pytest.raises(ValueError, match=r"PPOConfig\.dtype='int32' is invalid: allowed values are float32, float64"):
        PPOConfig(dtype=np.int32)


def test_a_trainers_config_is_fixed_and_its_copies_are_not(tmp_path):
    """learning_rate, ent_coef or clip_eps set on a trainer's config were ignored (the schedules were
    built), target_kl=-1 was read unchecked (every update stopped before its first step), and save()
    wrote the invalid config into a file PPO.load refused. Setting a field now raises."""
    import copy

    pytest.importorskip("gymnasium")
    from minippo import PPO

    algo = PPO(PPOConfig(n_envs=2, n_steps=16, batch_size=16, n_epochs=1, total_timesteps=32, hidden=(8,)))
    for name, value in (("learning_rate", 0.0), ("target_kl", -1.0), ("learning_rate", 1e-3)):
        with pytest.raises(AttributeError, match=rf"PPOConfig\.{name} of a trainer's config cannot change .*"
                                                 rf"PPO\(config\.replace\({name}=\.\.\.\)\).*PPO\.load\(path, "
                                                 rf"{name}=\.\.\.\)"):
            setattr(algo.config, name, value)
    # a field PPO.load refuses to override is not offered as a resume (it said "PPO.load(path, hidden=...)")
    for name, value in (("hidden", (4,)), ("norm_obs", True), ("dtype", "float64")):
        with pytest.raises(AttributeError, match=rf"^PPOConfig\.{name} of a trainer's config cannot change "
                                                 rf"\(.*\): train a new one, PPO\(config\.replace\({name}=\.\.\.\)\)$"):
            setattr(algo.config, name, value)
    with pytest.raises(AttributeError, match=r"PPO\.config is fixed at construction"):
        algo.config = PPOConfig()
    assert algo.config.learning_rate == 3e-4 and algo.config.validate() is algo.config  # (validating sets nothing)
    import pickle

    for other in (copy.copy(algo.config), copy.deepcopy(algo.config), algo.config.replace(seed=3),
                  pickle.loads(pickle.dumps(algo.config))):  # (a worker process's copy too)
        other.learning_rate = 1e-3  # copies are the caller's own
        assert other.learning_rate == 1e-3 and algo.config.learning_rate == 3e-4
    algo.learn()
    algo.save(str(tmp_path / "m.npz"))
    resumed = PPO.load(str(tmp_path / "m.npz"), learning_rate=1e-3)
    assert resumed.config.learning_rate == 1e-3 and resumed.lr_schedule(0.0) == 1e-3


def test_a_trainers_env_kwargs_are_fixed_and_their_copies_are_not(tmp_path):
    """env_kwargs of a trainer's config could be edited in place (algo.config.env_kwargs["g"] = 1): the
    envs kept the old value while evaluate() and save() took the new one. Every dict and list in them
    now refuses a change; copies of the config (and of env_kwargs) are plain and the caller's own."""
    import copy
    import pickle

    pytest.importorskip("gymnasium")
    from minippo import PPO

    algo = PPO(PPOConfig(env_id="Pendulum-v1", env_kwargs={"g": 9.0}, n_envs=1, n_steps=8, batch_size=8,
                         n_epochs=1, total_timesteps=8, hidden=(4,)))
    fixed = copy.copy(PPOConfig(env_kwargs={"g": 9.0, "nest": {"a": [1, 2]}}))._freeze()  # (nested: no such env)
    kw = fixed.env_kwargs
    for change in (lambda: algo.config.env_kwargs.__setitem__("g", 1.0), lambda: algo.config.env_kwargs.pop("g"),
                   lambda: kw.update(h=1), lambda: kw.setdefault("h", 1), lambda: kw.__delitem__("g"),
                   lambda: kw["nest"].__setitem__("b", 1), lambda: kw["nest"]["a"].append(3),
                   lambda: kw["nest"]["a"].__setitem__(0, 5), lambda: kw["nest"]["a"].sort(), kw.clear):
        with pytest.raises(TypeError, match=r"^PPOConfig\.env_kwargs of a trainer's config cannot change"):
            change()
    assert kw == {"g": 9.0, "nest": {"a": [1, 2]}} and algo.config.env_kwargs == {"g": 9.0}
    assert json.loads(fixed.to_json())["env_kwargs"] == kw and fixed.validate() is fixed
    for other in (copy.copy(fixed), copy.deepcopy(fixed), fixed.replace(seed=3), pickle.loads(pickle.dumps(fixed))):
        other.env_kwargs["nest"]["a"].append(3)  # a copy's are plain dicts and lists, its own
        assert type(other.env_kwargs) is dict and type(other.env_kwargs["nest"]["a"]) is list
        assert other.env_kwargs["nest"]["a"] == [1, 2, 3] and kw["nest"]["a"] == [1, 2]
    for own in (copy.copy(kw), copy.deepcopy(kw), dict(kw), kw | {}):
        own["h"] = 1  # (what a sweep does with them)
    assert kw == {"g": 9.0, "nest": {"a": [1, 2]}}
    algo.learn()
    algo.save(str(tmp_path / "m.npz"))
    assert PPO.load(str(tmp_path / "m.npz")).config.env_kwargs == {"g": 9.0}


@pytest.mark.parametrize("field", ["total_timesteps", "n_envs", "n_steps", "n_epochs",
                                   "eval_episodes", "batch_size"])
@pytest.mark.parametrize("value", [0, -3, 2.5, True])
def test_positive_integer_fields(field, value):
    with pytest.raises(ValueError, match=_err(field, value) + ": must be an integer >= 1"):
        PPOConfig(**{field: value})


def test_total_timesteps_takes_a_whole_float_as_learn_does():
    """PPOConfig(total_timesteps=1e6) was refused while PPO.learn(1e6) took it; a whole float is its
    integer in both now (stored as an int, written as one), anything else still refused."""
    for value in (1e6, np.float32(2048.0), np.float64(3e3)):
        c = PPOConfig(total_timesteps=value)
        assert c.total_timesteps == int(value) and type(c.total_timesteps) is int
        assert f'"total_timesteps": {int(value)},' in c.to_json()
    assert PPOConfig().set_from_string("total_timesteps=2e5").total_timesteps == 200_000
    for value, shown in ((2.5, 2.5), (1e6 + 0.5, 1e6 + 0.5), (float("inf"), float("inf")), (0.0, 0), (-1e3, -1000)):
        with pytest.raises(ValueError, match=_err("total_timesteps", shown) + ": must be an integer >= 1"):
            PPOConfig(total_timesteps=value)
    with pytest.raises(ValueError, match=r"total_timesteps=nan is invalid: must be an integer >= 1"):
        PPOConfig(total_timesteps=float("nan"))
    with pytest.raises(ValueError, match=_err("total_timesteps", 2**70) + r": must be <= 2\*\*62"):
        PPOConfig(total_timesteps=2.0**70)
    with pytest.raises(ValueError, match=_err("n_steps", 64.0) + ": must be an integer >= 1"):
        PPOConfig(n_steps=64.0)  # (the other counts are not written as 1e5)


def test_batch_size_must_divide_rollout():
    msg = _err("batch_size", 48) + r": must divide n_envs \* n_steps = 128"
    with pytest.raises(ValueError, match=msg):
        PPOConfig(n_envs=4, n_steps=32, batch_size=48)
    PPOConfig(n_envs=4, n_steps=32, batch_size=64)


def test_batch_size_one_needs_no_advantage_normalisation():
    with pytest.raises(ValueError, match=_err("batch_size", 1) + ".*normalize_advantages"):
        PPOConfig(n_steps=8, batch_size=1)
    PPOConfig(n_steps=8, batch_size=1, normalize_advantages=False)


@pytest.mark.parametrize("field", ["learning_rate", "adam_eps", "clip_eps", "kl_target",
                                   "kl_beta", "temperature"])
@pytest.mark.parametrize("value", [0.0, -0.1, float("nan"), float("inf"), "0.1", True])
def test_finite_positive_fields(field, value):
    with pytest.raises(ValueError, match=_err(field, value) + ": must be a finite number > 0"):
        PPOConfig(**{field: value})


@pytest.mark.parametrize("field", ["vf_coef", "ent_coef", "ent_end", "lr_end"])
@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf"), "abc", True])
def test_finite_nonnegative_fields(field, value):
    with pytest.raises(ValueError, match=_err(field, value) + ": must be a finite number >= 0"):
        PPOConfig(**{field: value})


@pytest.mark.parametrize("field", ["max_grad_norm", "log_std_init"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), None, "abc", False])
def test_finite_fields(field, value):
    with pytest.raises(ValueError, match=_err(field, value) + ": must be a finite number"):
        PPOConfig(**{field: value})


@pytest.mark.parametrize("value", [-1, 1.5, True, "3"])
def test_seed_must_be_a_nonnegative_integer(value):
    with pytest.raises(ValueError, match=_err("seed", value) + ": must be an integer >= 0"):
        PPOConfig(seed=value)
    assert PPOConfig(seed=7).seed == 7


@pytest.mark.parametrize("value", [-10.5, -20.0, 2.01, 3.0])
def test_log_std_init_range(value):
    with pytest.raises(ValueError, match=_err("log_std_init", value) + r": must be in \[-10.0, 2.0\]"):
        PPOConfig(log_std_init=value)
    PPOConfig(log_std_init=-10.0)  # the bounds themselves are allowed
    PPOConfig(log_std_init=2.0)


@pytest.mark.parametrize("value", [0.0, -0.5, 1.01, float("nan"), "abc", True, [1]])
def test_gamma_range(value):
    with pytest.raises(ValueError, match=_err("gamma", value) + r": must be a number in \(0, 1\]"):
        PPOConfig(gamma=value)


@pytest.mark.parametrize("value", [-0.01, 1.01, float("nan"), "abc", True, [1]])
def test_gae_lambda_range(value):
    with pytest.raises(ValueError, match=_err("gae_lambda", value) + r": must be a number in \[0, 1\]"):
        PPOConfig(gae_lambda=value)


@settings(max_examples=40, deadline=None)
@given(st.floats(0.0, 1.0, exclude_min=True), st.floats(0.0, 1.0))
def test_gamma_lambda_accepted_ranges(gamma, lam):
    c = PPOConfig(gamma=gamma, gae_lambda=lam)
    assert (c.gamma, c.gae_lambda) == (gamma, lam)


def test_other_validations():
    for bad_kl in (0.0, "abc", True, float("inf")):
        with pytest.raises(ValueError, match=_err("target_kl", bad_kl) + ": must be a finite number > 0, or None"):
            PPOConfig(target_kl=bad_kl)
    PPOConfig(target_kl=None)
    PPOConfig(target_kl=0.02)
    with pytest.raises(ValueError, match=_err("hidden", ()) + ": must list at least one"):
        PPOConfig(hidden=())
    with pytest.raises(ValueError, match=_err("hidden", (64, 0))):
        PPOConfig(hidden=[64, 0])
    with pytest.raises(ValueError, match=_err("lr_end", 0.0) + ".*exponential lr_schedule"):
        PPOConfig(lr_schedule="exponential", lr_end=0.0)
    with pytest.raises(ValueError, match=_err("ent_end", 0.0) + ".*exponential ent_schedule"):
        PPOConfig(ent_schedule="exponential", ent_coef=0.01, ent_end=0.0)
    # ent_coef at 0 was reported as ent_end's fault
    with pytest.raises(ValueError, match=_err("ent_coef", 0.0) + ": must be > 0 for an exponential ent_schedule"):
        PPOConfig(ent_schedule="exponential", ent_coef=0.0, ent_end=0.01)
    with pytest.raises(ValueError, match=_err("env_id", "") + ": must be a non-empty"):
        PPOConfig(env_id="")
    with pytest.raises(ValueError, match=_err("env_kwargs", []) + ": must be a dict"):
        PPOConfig(env_kwargs=[])
    # a Python dict written on the command line is a string: the message shows the JSON form
    with pytest.raises(ValueError, match=r"""on the command line, JSON: --set 'env_kwargs=\{"continuous": true\}'"""):
        PPOConfig().set_from_string("env_kwargs={'continuous': True}")
    # np.bool_ used to pass, train, and then fail the save (json) with the trained model lost
    kw = {"sutton_barto_reward": np.bool_(False)}
    with pytest.raises(ValueError, match=_err("env_kwargs", kw) + ": must hold JSON values only .*bool"):
        PPOConfig(env_kwargs=kw)
    c = PPOConfig()
    c.env_kwargs = {"render_mode": object()}  # set later: PPO re-validates
    with pytest.raises(ValueError, match="PPOConfig.env_kwargs=.* is invalid: must hold JSON values only"):
        c.validate()


@pytest.mark.parametrize("value", [
    64, "64", None, (64, 32.5), (64, "32"),
    # numpy's own TypeErrors used to come out (a 0-d array does not iterate; every ndarray has __index__)
    np.array(64), np.array([[64, 64]]), [np.array([64])], [np.array(True)],
    {64, 32}, {64: 1}, bytearray(b"@@"), memoryview(b"@@"),  # no order, or bytes read as widths
])
def test_hidden_not_a_sequence_of_ints_is_named(value):
    with pytest.raises(ValueError, match=r"PPOConfig\.hidden=.* is invalid: must list at least one positive"):
        PPOConfig(hidden=value)


def test_hidden_of_numpy_integers_and_0d_arrays():
    assert PPOConfig(hidden=np.array([64, 32])).hidden == (64, 32)
    assert PPOConfig(hidden=[np.array(64), np.int64(3), np.uint8(5)]).hidden == (64, 3, 5)


@pytest.mark.parametrize("field", ["learning_rate", "target_kl", "gamma", "max_grad_norm", "kl_beta"])
@pytest.mark.parametrize("value", [10**400, -10**400])
def test_an_int_beyond_floats_range_is_named_not_an_overflow(field, value):
    with pytest.raises(ValueError, match=rf"PPOConfig\.{field}=-?1000+\.\.\.0+ \(40[12] characters\) is invalid"):
        PPOConfig(**{field: value})  # (was a bare OverflowError; the value's middle is cut in the message)
    with pytest.raises(ValueError, match=rf"PPOConfig\.{field}=<int too large to show> is invalid"):
        PPOConfig(**{field: value * 10**5000})  # (repr fails past 4300 digits)
    key, parsed = PPOConfig().parse_assignment(f"{field}={value}")  # --set's parse: float() overflowed
    assert parsed == value
    assert PPOConfig(learning_rate=10**300).learning_rate == 1e300  # (within range: a float, as before)
    big = sys.float_info.max  # the largest finite float is finite
    assert PPOConfig(max_grad_norm=big).max_grad_norm == big and PPOConfig(max_grad_norm=-big).max_grad_norm == -big


def test_env_kwargs_json_cannot_write_are_refused_by_name():
    """An int past 4300 digits (json.dumps refuses it: the save after training failed) and a circular
    or too deeply nested value (a RecursionError) are named."""
    circular = []
    circular.append(circular)
    deep = []
    inner = deep
    for _ in range(5000):
        inner.append([])
        inner = inner[0]
    for kwargs, says in (({"big": 10**5000}, "Exceeds the limit"), ({"a": circular}, "nested too deeply, or circular"),
                         ({"d": deep}, "nested too deeply, or circular")):
        with pytest.raises(ValueError, match=r"^PPOConfig\.env_kwargs=.* is invalid: must hold JSON values only .*"
                                             + says):
            PPOConfig(env_kwargs=kwargs)


@pytest.mark.parametrize("kwargs, says", [
    ({"table": {0: "left", "0": "zero"}}, r"env_kwargs\['table'\] has the key 0 of type int \(JSON keys are "
                                          r"strings: it would come back as the key \"0\"\)"),
    ({"table": {0: -1.0, 1: 1.0}}, r"env_kwargs\['table'\] has the key 0 of type int"),
    ({"a": [1, {True: 2}]}, r"env_kwargs\['a'\]\[1\] has the key True of type bool .*the key \"true\""),
    ({None: 1}, r"env_kwargs has the key None of type NoneType .*the key \"null\""),
    ({"shape": (3, 3)}, r"env_kwargs\['shape'\] is a tuple \(JSON would give it back as a list: pass a list\)"),
    ({"a": np.int64(3)}, r"env_kwargs\['a'\] is of type int64, not a JSON value"),
])
def test_env_kwargs_that_json_would_change_are_refused(kwargs, says):
    """A checkpoint and config.json record env_kwargs as JSON: keys that are not strings came back as
    strings (and {0: .., "0": ..} as one entry; to_json's sorted keys failed outright), tuples as lists,
    so a resumed or evaluated run made its envs with other kwargs."""
    with pytest.raises(ValueError, match=r"PPOConfig\.env_kwargs=.* is invalid: must hold JSON values only .*: "
                                         + says):
        PPOConfig(env_kwargs=kwargs)
    ok = {"a": [1, 2.5, None, True, "x", {"b": {}}], "g": np.float64(9.8), "inf": float("inf")}
    back = PPOConfig.from_dict(json.loads(PPOConfig(env_kwargs=ok).to_json())).env_kwargs
    assert back == ok and type(back["a"]) is list


def test_advantage_estimator_resolves_auto():
    assert PPOConfig(objective="clip").advantage_estimator == "gae"
    assert PPOConfig(objective="kl_penalty").advantage_estimator == "gae"
    assert PPOConfig(objective="surrogate").advantage_estimator == "gae"
    assert PPOConfig(objective="a2c").advantage_estimator == "td"
    assert PPOConfig(objective="reinforce").advantage_estimator == "mc"
    assert PPOConfig(objective="a2c", advantage="gae").advantage_estimator == "gae"


def test_serialisation_roundtrip_and_replace():
    c = PPOConfig(objective="kl_penalty", hidden=(32,), env_kwargs={"g": 9.8}, target_kl=0.05)
    d = json.loads(c.to_json())
    assert d["hidden"] == [32]
    assert PPOConfig.from_dict(d) == c
    c2 = c.replace(clip_eps=0.1)
    assert c2.clip_eps == 0.1 and c.clip_eps == 0.2
    with pytest.raises(ValueError, match=r"unknown PPOConfig field\(s\) \['clip_range'\] \(Stable-Baselines3's "
                                         r"names: clip_range is clip_eps\); known"):
        c.replace(clip_range=0.1)
    with pytest.raises(ValueError, match=_err("clip_eps", -1.0)):
        c.replace(clip_eps=-1.0)


def test_set_from_string():
    c = PPOConfig()
    assert c.set_from_string("gamma=1").gamma == 1.0
    assert isinstance(c.set_from_string("gamma=1").gamma, float)
    assert c.set_from_string("objective=a2c").objective == "a2c"
    assert c.set_from_string("target_kl=none").target_kl is None
    assert c.set_from_string("shared=true").shared is True
    assert c.set_from_string("hidden=[32, 16]").hidden == (32, 16)
    with pytest.raises(ValueError, match="--set expects key=value, got 'gamma'"):
        c.set_from_string("gamma")
    with pytest.raises(ValueError, match="unknown config key 'gama'; known keys"):
        c.set_from_string("gama=0.9")
    # (as PPOConfig(clip_range=...) says: where rl-baselines3-zoo's settings are given as --set flags)
    with pytest.raises(ValueError, match=r"unknown config key 'clip_range' \(Stable-Baselines3's names: clip_range "
                                         r"is clip_eps\); known keys"):
        c.set_from_string("clip_range=0.1")
    with pytest.raises(ValueError, match=_err("objective", "ppo")):
        c.set_from_string("objective=ppo")


@pytest.mark.parametrize(("raw", "want"), [
    ("[32, 16]", (32, 16)), ("32,16", (32, 16)), ("(32, 16)", (32, 16)), (" 32 , 16 ", (32, 16)),
    ("[32,16]", (32, 16)), ("64", (64,)), ("64,", (64,)), ("(64,)", (64,)), ("+8,4", (8, 4)), ("32,16,", (32, 16)),
    ("(32, 16,)", (32, 16))])
def test_set_hidden_takes_the_forms_a_shell_user_types(raw, want):
    """--set hidden=32,32 (the natural spelling; ``(32, 32)`` needs quotes in a shell) was refused with
    "must list at least one positive integer width"; only JSON's [32,32] worked. One integer is one layer."""
    assert PPOConfig().set_from_string(f"hidden={raw}").hidden == want


@pytest.mark.parametrize("raw", ["", "[]", "a,b", "-1,2", "0", "32.5", "1e2", "true", "32,,16", "(32, 16]"])
def test_set_hidden_refusals_say_the_form(raw):
    with pytest.raises(ValueError, match=r"PPOConfig\.hidden=.* is invalid: must list at least one positive "
                                         r"integer width, e\.g\. \(64, 64\) \(on the command line: "
                                         r"--set hidden=64,64\)"):
        PPOConfig().set_from_string(f"hidden={raw}")


def test_presets():
    for name in PRESETS:
        c = preset(name)
        assert c.env_id == name
        assert (c.n_envs * c.n_steps) % c.batch_size == 0
    # rl-baselines3-zoo's CartPole-v1 settings (hyperparams/ppo.yml)
    cp = preset("CartPole-v1", seed=3)
    assert (cp.n_envs, cp.n_steps, cp.batch_size, cp.gae_lambda, cp.gamma, cp.n_epochs) == (
        8, 32, 256, 0.8, 0.98, 20)
    assert cp.learning_rate == 1e-3 and cp.lr_schedule == "linear" and cp.seed == 3
    assert (cp.total_timesteps, cp.ent_coef, cp.lr_end, cp.clip_eps, cp.clip_schedule) == (
        100_000, 0.0, 0.0, 0.2, "linear")
    pd = preset("Pendulum-v1")
    assert (pd.n_envs, pd.n_steps, pd.batch_size, pd.gamma) == (4, 1024, 64, 0.9)
    assert (pd.total_timesteps, pd.gae_lambda, pd.n_epochs, pd.ent_coef, pd.learning_rate, pd.clip_eps) == (
        100_000, 0.95, 10, 0.0, 1e-3, 0.2)
    with pytest.raises(ValueError, match="unknown preset 'Hopper'; available presets: "):
        preset("Hopper")


def test_settings_a_user_relies_on():
    """Small rules each guarded by nothing else: the smallest minibatch, the CartPole preset's KL
    target, the exponential entropy schedule's ent_coef, and --set values holding '='."""
    PPOConfig(n_steps=2, batch_size=2).validate()  # two samples: the smallest normalisable minibatch
    PPOConfig(hidden=(1,)).validate()  # the narrowest hidden layer
    # exponential schedules need positive ends, however small
    PPOConfig(lr_schedule="exponential", lr_end=1e-9).validate()
    PPOConfig(ent_schedule="exponential", ent_coef=1e-9, ent_end=1e-12).validate()
    assert preset("CartPole-v1").kl_target == 0.003
    with pytest.raises(ValueError, match="ent_end"):
        PPOConfig(ent_schedule="exponential", ent_end=0.01, ent_coef=0.0).validate()
    key, value = PPOConfig().parse_assignment('env_kwargs={"a": "b=c"}')
    assert (key, value) == ("env_kwargs", {"a": "b=c"})
    assert PPOConfig().parse_assignment("env_id=my.mod:Env=v0") == ("env_id", "my.mod:Env=v0")


def test_stable_baselines3_names_and_schedules_are_translated_in_the_messages():
    """An SB3 user's first config: its argument names (each way a config is built) and its function
    schedules are refused with the minippo setting that does the job."""
    from minippo.config import SB3_NAMES, SCHEDULE_FIELDS

    for build in (lambda kw: PPOConfig(**kw), lambda kw: PPOConfig().replace(**kw), PPOConfig.from_dict):
        with pytest.raises((TypeError, ValueError), match=r"\['clip_range', 'policy_kwargs'\] \(Stable-Baselines3's "
                           r"names: clip_range is clip_eps; policy_kwargs is hidden, activation, shared and "
                           r"log_std_init\); known fields: activation"):
            build({"policy_kwargs": {}, "clip_range": 0.1})
    with pytest.raises(TypeError, match=r"\['lr'\]; known fields"):  # (no SB3 name: no parenthesis)
        PPOConfig(lr=1)
    fields = {f.name for f in dataclasses.fields(PPOConfig)}
    assert not set(SB3_NAMES) & fields and {"clip_eps", "clip_vloss", "normalize_advantages", "eval_episodes"} <= {
        w for text in SB3_NAMES.values() for w in re.findall(r"\w+", text)}
    for name, schedule in SCHEDULE_FIELDS.items():
        with pytest.raises(ValueError, match=rf"PPOConfig.{name}=<function .* must be a number: a schedule is "
                                             + re.escape(schedule)):
            PPOConfig(**{name: lambda progress: 1e-3 * progress})
        assert name in fields and re.search(r"(\w+_schedule)=", schedule).group(1) in fields


def test_an_unknown_keyword_to_the_constructor_lists_the_fields():
    """PPOConfig(lr=1) raised the dataclass's bare "unexpected keyword argument 'lr'", where replace and
    from_dict list the known fields; the signature stays the dataclass's (help, IDEs)."""
    import inspect

    with pytest.raises(TypeError, match=r"unknown PPOConfig field\(s\) \['lr'\]; known fields: activation, .*"
                                        r"learning_rate, "):
        PPOConfig(lr=1)
    assert list(inspect.signature(PPOConfig).parameters)[:2] == ["env_id", "objective"]
    assert PPOConfig(gamma=0.9).gamma == 0.9 and PPOConfig("Pendulum-v1").env_id == "Pendulum-v1"
