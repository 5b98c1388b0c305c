"""minippo.ppo.loss_and_grads: the whole PPO minibatch loss and every parameter gradient, for
both action-space kinds, separate and shared networks, and every objective of the ladder
(clip, kl_penalty, surrogate, a2c, reinforce), with an entropy bonus and a clipped value loss.

Tolerances, and why (float64; u = 2^-53 ~ 1.1e-16):
- Gradients: norm-wise relative error < 1e-6 (minippo.gradcheck.rel_error, floor 1e-3; of the size of
  the terms summed for the drawn cases, see noise_floor), h = 1e-6. The batch is built so that every
  sample sits >= 0.05 away (in ratio) from the PPO-clip kinks at 1 +- eps and >= 0.05 away from the
  value-clip kinks, so no finite-difference step crosses a branch; the truncation error is the ~1e-9 of
  smooth functions, and the rounding noise what the floor is for.
- stats against tests/reference.py (_check_total_loss: Python loops against numpy's reductions, on the
  same policy outputs): the policy loss's terms are larger than they look, |logp A| and beta KL reach
  ~170 and ~150 (measured; a narrow Gaussian's |logp| reaches 110, and dist_old is drawn apart from the
  policy); <= ~20 roundings a side of partial sums that size, aligned at worst: <= ~8e-13: abs 1e-12 for
  loss and policy_loss (kept; measured 1.7e-14 over 6000 draws, at |loss| up to 73). The value loss's
  terms (V - R)^2 <= ~20 (measured 17) through ~10 roundings a side, <= ~4e-14: abs 1e-13 (was 1e-12;
  measured 2.2e-16). approx_kl's terms are <= 0.2 (ratios in [0.5, 1.6]): abs 1e-14 (was 1e-12;
  measured 1.1e-16).
"""

import numpy as np
import pytest
import reference as ref
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from minippo.config import OBJECTIVES, PPOConfig
from minippo.gradcheck import check_grads
from minippo.policy import ActorCritic
from minippo.ppo import BATCH_KEYS, loss_and_grads
from minippo.spaces import Box, Discrete

TOL = 1e-6
CLIP_EPS = 0.2
# ratios r_t of the batch: clipped on both sides, inside, and at 1; all >= 0.05 from 1 +- eps
RATIOS = np.array([0.5, 0.7, 0.9, 1.0, 1.1, 1.3, 1.6])
# V - V_old offsets: inside and outside the value clip range, >= 0.05 from +- eps
VALUE_STEPS = np.array([-0.6, -0.1, 0.05, 0.15, 0.5])


def make_case(discrete, shared, seed, batch=6, obs_dim=3, act_dim=2, hidden=(5, 4)):
    space = Discrete(act_dim + 1) if discrete else Box(-np.ones(act_dim), np.ones(act_dim))
    policy = ActorCritic(obs_dim, space, hidden=hidden, shared=shared, seed=seed,
                         dtype=np.float64, temperature=1.4 if discrete else 1.0, log_std_init=-0.2)
    rng = np.random.default_rng(seed)
    for p in policy.params.values():  # move off the init (tiny policy head, zero biases)
        p += 0.4 * rng.normal(size=p.shape)
    obs = rng.normal(size=(batch, obs_dim))
    if discrete:
        actions = rng.integers(0, act_dim + 1, size=batch)
        dist_old = rng.normal(size=(batch, act_dim + 1))
    else:
        actions = rng.normal(size=(batch, act_dim))
        dist_old = np.concatenate([rng.normal(size=(batch, act_dim)),
                                   -0.2 + 0.3 * rng.normal(size=(batch, act_dim))], axis=1)
    logp, _, values, _ = policy.evaluate(obs, actions)
    ratios = rng.choice(RATIOS, size=batch)
    values_old = values - rng.choice(VALUE_STEPS, size=batch)
    return policy, {
        "obs": obs,
        "actions": actions,
        "logp_old": logp - np.log(ratios),  # so that r_t = exp(logp - logp_old) = ratios
        "advantages": rng.normal(size=batch) * 2,
        "returns": values + rng.normal(size=batch),
        "values_old": values_old,
        "dist_old": dist_old,
    }


def value_clip_margin(values, batch):
    """Smallest distance from a kink of the clipped value loss (|V-V_old| = eps, equal errors)."""
    delta = values - batch["values_old"]
    v_clip = batch["values_old"] + np.clip(delta, -CLIP_EPS, CLIP_EPS)
    gap = np.abs(np.abs(v_clip - batch["returns"]) - np.abs(values - batch["returns"]))
    # a sample inside the clip range has gap exactly 0 but no kink there (both branches agree)
    outside = np.abs(delta) > CLIP_EPS
    return min(float(np.abs(np.abs(delta) - CLIP_EPS).min()),
               float(gap[outside].min()) if outside.any() else np.inf)


def noise_floor(policy, batch, cfg):
    """check_grads' floor for the whole loss: its central differences carry ~eps * S / h of rounding
    noise, S the size of the terms whose rounding reaches the loss, which check_grads takes as |f|
    (rel_error's docstring). Here they can cancel: the ratio r_i = exp(logp_i - logp_old_i) carries
    logp_i's rounding (|logp| ~ 11 for a narrow Gaussian) times |A_i|, the KL's terms have both signs.
    S per sample: |A_i| r_i (1 + |logp_i|) + beta (|kl_i| + |logp_i|) + c_1 (V_i - R_i)^2 + c_2 |H_i|,
    averaged as the loss averages. Hypothesis found S ~ 30 for a loss of 2.5 whose shared trunk of
    width 1 had a gradient of norm 1e-3: its noise was 3.5e-6 of the |f|-scaled floor (2.3e-7 at
    h = 1e-5: noise, not the gradient). With the floor scaled by S / |f| the noise stays ~1e-7 of it,
    and a wrong gradient of norm >= 1e-3 * S still shows as an error of order 1."""
    logp, entropy, values, cache = policy.evaluate(batch["obs"], batch["actions"])
    kl = policy.kl_old(batch["dist_old"], cache)
    ratio = np.exp(logp - batch["logp_old"])
    size = (np.abs(batch["advantages"]) * ratio * (1 + np.abs(logp)) + cfg.kl_beta * (np.abs(kl) + np.abs(logp))
            + cfg.vf_coef * (values - batch["returns"]) ** 2 + cfg.ent_coef * np.abs(entropy)).mean()
    f = abs(loss_and_grads(policy, batch, cfg)[0]["loss"])
    return 1e-3 * max(1.0, float(size)) / max(1.0, f)


def config_for(objective, clip_vloss=True, normalize=True, ent_coef=0.02, vf_coef=0.7):
    return PPOConfig(objective=objective, clip_eps=CLIP_EPS, clip_vloss=clip_vloss,
                     ent_coef=ent_coef, vf_coef=vf_coef, normalize_advantages=normalize,
                     kl_beta=0.8, dtype="float64")


@st.composite
def sizes(draw):
    return {
        "batch": draw(st.integers(2, 8)),
        "obs_dim": draw(st.integers(1, 4)),
        "act_dim": draw(st.integers(1, 3)),
        "hidden": tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=2))),
    }


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(OBJECTIVES), st.booleans(), st.booleans(), st.booleans(), st.booleans(),
       sizes(), st.integers(0, 2**31 - 1))
def test_loss_and_grads_match_finite_differences(objective, discrete, shared, clip_vloss,
                                                 normalize, shape, seed):
    policy, batch = make_case(discrete, shared, seed, **shape)
    values = policy.evaluate(batch["obs"], batch["actions"])[2]
    assume(value_clip_margin(values, batch) > 1e-3)
    cfg = config_for(objective, clip_vloss=clip_vloss, normalize=normalize)
    stats, grads = loss_and_grads(policy, batch, cfg)
    assert list(grads) == list(policy.params)
    err = check_grads(lambda: loss_and_grads(policy, batch, cfg)[0]["loss"], policy.params, grads,
                      floor=noise_floor(policy, batch, cfg))
    assert err < TOL, (objective, discrete, shared, clip_vloss, normalize)


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("discrete", [True, False])
def test_every_objective_both_kinds(objective, discrete):
    """Deterministic companion of the hypothesis test: every (objective, kind) pair is run."""
    policy, batch = make_case(discrete, shared=False, seed=5)
    cfg = config_for(objective)
    stats, grads = loss_and_grads(policy, batch, cfg)
    err = check_grads(lambda: loss_and_grads(policy, batch, cfg)[0]["loss"], policy.params, grads)
    assert err < TOL
    assert {"loss", "policy_loss", "value_loss", "entropy", "approx_kl"} <= set(stats)
    if objective == "clip":
        assert "clipfrac" in stats
    if objective == "kl_penalty":
        assert stats["beta"] == 0.8 and stats["kl"] >= 0


def _check_total_loss(objective, discrete, shared, clip_vloss, normalize, seed, **shape):
    """stats['loss'] = L^policy + c_1 L^VF - c_2 mean(H), recomputed with tests/reference.py (float64
    loops against numpy's reductions; tolerances in the module docstring)."""
    policy, batch = make_case(discrete, shared=shared, seed=seed, **shape)
    cfg = config_for(objective, clip_vloss=clip_vloss, normalize=normalize)
    stats, _ = loss_and_grads(policy, batch, cfg)
    logp, entropy, values, cache = policy.evaluate(batch["obs"], batch["actions"])
    adv = batch["advantages"]
    if normalize:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    if objective == "clip":
        pl = ref.clip_loss(logp, batch["logp_old"], adv, CLIP_EPS)
    elif objective == "surrogate":
        pl = ref.surrogate_loss(logp, batch["logp_old"], adv)
    elif objective == "kl_penalty":
        old, new = batch["dist_old"], cache["dist"]
        if discrete:
            kl = ref.categorical_kl(old, new.logits, 1.4, 1.4)
        else:
            d = old.shape[1] // 2
            kl = ref.gaussian_kl(old[:, :d], old[:, d:], new.mean, new.log_std)
        pl = ref.kl_penalty_loss(logp, batch["logp_old"], adv, kl, 0.8)
    else:
        pl = ref.pg_loss(logp, adv)
    vl = ref.value_loss(values, batch["returns"], batch["values_old"], CLIP_EPS if clip_vloss else None)
    expected = pl + 0.7 * vl - 0.02 * float(np.mean(entropy))
    assert stats["loss"] == pytest.approx(expected, abs=1e-12)
    assert stats["policy_loss"] == pytest.approx(pl, abs=1e-12)
    assert stats["value_loss"] == pytest.approx(vl, abs=1e-13)
    assert stats["approx_kl"] == pytest.approx(ref.approx_kl_k3(logp, batch["logp_old"]), abs=1e-14)


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("discrete", [True, False])
def test_total_loss_matches_reference(objective, discrete):
    """Every (objective, kind) pair, shared trunk, clipped value loss, normalised advantages."""
    _check_total_loss(objective, discrete, shared=True, clip_vloss=True, normalize=True, seed=9)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(OBJECTIVES), st.booleans(), st.booleans(), st.booleans(), st.booleans(), sizes(),
       st.integers(0, 2**31 - 1))
def test_total_loss_matches_reference_on_drawn_cases(objective, discrete, shared, clip_vloss, normalize, shape,
                                                     seed):
    """The same on drawn sizes, trunks, value-loss clipping and normalisation."""
    _check_total_loss(objective, discrete, shared, clip_vloss, normalize, seed, **shape)


def test_overrides_beta_clip_eps_ent_coef():
    policy, batch = make_case(True, False, seed=2)
    cfg = config_for("kl_penalty", clip_vloss=False)
    stats, grads = loss_and_grads(policy, batch, cfg, beta=3.0, ent_coef=0.1)
    assert stats["beta"] == 3.0
    f = lambda: loss_and_grads(policy, batch, cfg, beta=3.0, ent_coef=0.1)[0]["loss"]  # noqa: E731
    assert check_grads(f, policy.params, grads) < TOL
    cfg = config_for("clip")
    stats, grads = loss_and_grads(policy, batch, cfg, clip_eps=0.35)
    f = lambda: loss_and_grads(policy, batch, cfg, clip_eps=0.35)[0]["loss"]  # noqa: E731
    assert check_grads(f, policy.params, grads) < TOL


def test_value_clip_follows_the_clip_range_passed_in():
    """The trainer passes the scheduled clip range; the value clip must use it, not config.clip_eps
    (a mutant reading the config was caught only by the numba-vs-numpy comparison)."""
    policy, batch = make_case(False, False, seed=4, batch=40)
    _, values, _ = policy.forward(batch["obs"])
    batch["values_old"] = (values + np.linspace(-0.3, 0.3, 40)).astype(values.dtype)  # |V - V_old| up to 0.3
    wide, narrow = config_for("clip").replace(clip_eps=0.5), config_for("clip").replace(clip_eps=0.02)
    passed = loss_and_grads(policy, batch, wide, clip_eps=0.02)[0]
    assert passed["vclipfrac"] == loss_and_grads(policy, batch, narrow)[0]["vclipfrac"] > 0
    assert loss_and_grads(policy, batch, wide)[0]["vclipfrac"] == 0  # 0.5 clips none of them


def test_fully_clipped_batch_has_zero_policy_gradient():
    """All samples on the clipped side: only the value loss moves the parameters, so every actor
    gradient is exactly 0 (separate networks, no entropy bonus)."""
    policy, batch = make_case(True, shared=False, seed=4)
    logp = policy.evaluate(batch["obs"], batch["actions"])[0]
    adv = np.where(np.arange(6) % 2 == 0, 1.0, -1.0) * np.linspace(1, 2, 6)
    batch["advantages"] = adv
    batch["logp_old"] = logp - np.log(np.where(adv > 0, 1.5, 0.5))  # A>0: r=1.5; A<0: r=0.5
    cfg = config_for("clip", normalize=False, ent_coef=0.0)
    stats, grads = loss_and_grads(policy, batch, cfg)
    assert stats["clipfrac"] == 1.0
    for k, g in grads.items():
        if k.startswith("actor."):
            assert np.all(g == 0.0), k
        else:
            assert np.any(g != 0.0), k


def test_float32_policy_returns_float32_grads():
    pol = ActorCritic(3, Discrete(2), hidden=(4,))
    rng = np.random.default_rng(0)
    batch = {"obs": rng.normal(size=(4, 3)).astype(np.float32),
             "actions": np.array([0, 1, 1, 0]),
             **{k: rng.normal(size=4).astype(np.float32)
                for k in ("logp_old", "advantages", "returns", "values_old")}}
    _, grads = loss_and_grads(pol, batch, PPOConfig(clip_vloss=True, ent_coef=0.01))
    for k, g in grads.items():
        assert g.dtype == np.float32, k


# ---------------------------------------------------------------- bad inputs
def test_missing_batch_keys_named():
    policy, batch = make_case(True, False, seed=0)
    for k in BATCH_KEYS:
        partial = {kk: v for kk, v in batch.items() if kk != k}
        with pytest.raises(KeyError, match=f"batch is missing \\['{k}'\\]"):
            loss_and_grads(policy, partial, config_for("clip"))
    partial = {k: v for k, v in batch.items() if k != "dist_old"}
    with pytest.raises(KeyError, match="dist_old"):
        loss_and_grads(policy, partial, config_for("kl_penalty"))


def test_bad_batch_values_named():
    policy, batch = make_case(False, False, seed=0)
    bad = dict(batch, advantages=batch["advantages"].copy())
    bad["advantages"][2] = np.nan
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        loss_and_grads(policy, bad, config_for("clip", normalize=False))
    bad = dict(batch, returns=np.zeros(3))
    with pytest.raises(ValueError, match=r"returns must have shape \(6,\)"):
        loss_and_grads(policy, bad, config_for("clip"))
    bad = dict(batch, logp_old=batch["logp_old"][:-1])
    with pytest.raises(ValueError, match=r"logp_old must have shape \(6,\)"):
        loss_and_grads(policy, bad, config_for("surrogate"))
    bad = dict(batch, obs=batch["obs"][:, :2])
    with pytest.raises(ValueError, match=r"obs must have shape \(B, 3\)"):
        loss_and_grads(policy, bad, config_for("clip"))
    one = {k: v[:1] for k, v in batch.items()}
    with pytest.raises(ValueError, match="advantage normalisation needs a minibatch of at least 2"):
        loss_and_grads(policy, one, config_for("clip"))
