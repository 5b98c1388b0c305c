"""kernels/cpu_update.py (the fused numba minibatch step) against minippo.ppo.loss_and_grads and
minippo.optim, and its use by the trainer.

Tolerances, and why:
- float64: both paths use libm tanh/exp/log and differ only in summation order (BLAS vs the kernel's
  loops; stats accumulate in float64 in both): 1e-9 relative, 1e-12 absolute.
- float32: the kernel's tanh is the rational approximation of kernels/cpu.py (<= 8 ulp), matmul
  sums run in another order (both compute log-ratios, advantage normalisation and the squares and
  means of the losses in float64; numpy rounds the normalised advantages back to float32, the kernel
  keeps them in float64). Each
  is a few float32 roundings (~1e-7 relative) of O(1) activations, accumulated over B <= 300
  samples: gradients within 2e-5 of max|g| (plus rtol 1e-4), or where the per-sample terms cancel
  to a much smaller sum, of those terms' size (``_term_scales``). Stats are means of per-sample terms of
  size up to ~10 (a Gaussian log-prob is a sum over action dims of terms ~1.4), each carrying
  ~1e-7 relative float32 rounding in numpy: 1e-5 relative and 1e-5 absolute, the absolute part
  times (1 + max|logp_old|) because r_t = exp(logp - logp_old) carries ~1e-7 |logp| of rounding.
- Branch decisions (ratio clipped or not, value clipped or not) are discontinuous; rounding could flip
  a sample sitting within ~1e-6 of a boundary, so drawn batches keep every sample 1e-3 away from one.
  Inside the value clip range neither path takes the clipped branch (V_clip = V there, up to one
  rounding), so vclipfrac counts the same samples on both: compared exactly.
- Adam without clipping does numpy's float operations in numpy's order and dtype: bit-identical.
"""

import math
import os

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

pytest.importorskip("numba")

from minippo.kernels import cpu_update  # noqa: E402
from test_policy import relu_margin  # noqa: E402

from minippo import backend  # noqa: E402
from minippo.config import PPOConfig  # noqa: E402
from minippo.optim import Adam, GradientOverflowError, clip_grad_norm, step_norm_limit  # noqa: E402
from minippo.policy import LOG_STD_MAX, LOG_STD_MIN, ActorCritic  # noqa: E402
from minippo.ppo import NumpyStep, loss_and_grads  # noqa: E402
from minippo.spaces import Box, Discrete  # noqa: E402

SLOW = settings(max_examples=40, deadline=None)  # deadline=None: the first example compiles
STAT_TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-9, atol=1e-12)}


def _policy(dtype, discrete, hidden, activation, seed, temperature=1.0, n_actions=3, shared=False):
    space = Discrete(n_actions) if discrete else Box(-np.ones(n_actions), np.ones(n_actions))
    pol = ActorCritic(5, space, hidden, activation, shared, -0.3, seed, dtype, temperature)
    rng = np.random.default_rng(seed)
    for p in pol.params.values():  # move off the zero-bias, tiny-head init
        p += (0.1 * rng.normal(size=p.shape)).astype(dtype)
    return pol


def _batch(pol, B, seed, clip_eps, dtype):
    """A minibatch whose logp_old / values_old keep every sample 1e-3 away from a clip boundary."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(B, pol.obs_dim)).astype(dtype)
    if pol.discrete:
        actions = rng.integers(0, pol.act_dim, B)
    else:
        actions = rng.normal(size=(B, pol.act_dim)).astype(dtype)
    dist, values, _ = pol.forward(obs)
    logp = dist.log_prob(actions).astype(np.float64)
    logp_old = logp + 0.4 * rng.normal(size=B)
    ratio = np.exp(logp - logp_old)
    near = (np.abs(ratio - (1 - clip_eps)) < 1e-3) | (np.abs(ratio - (1 + clip_eps)) < 1e-3)
    logp_old[near] = logp[near]  # ratio 1: inside
    values = values.astype(np.float64)
    returns = values + rng.normal(size=B)
    values_old = values + 0.4 * rng.normal(size=B)
    delta = values - values_old
    err = values - returns
    err_c = values_old + np.clip(delta, -clip_eps, clip_eps) - returns
    # near the clip edge, or outside it with the two errors nearly equal; inside the range (where
    # err_c = err up to one rounding) V_old stays at its distance, so the |delta| < eps rule is used
    outside = np.abs(delta) >= clip_eps
    near_v = (np.abs(np.abs(delta) - clip_eps) < 1e-3) | (outside & (np.abs(np.abs(err_c) - np.abs(err)) < 1e-3))
    values_old[near_v] = values[near_v]
    # pi_old's dist params for the KL penalty: the current ones moved a little (logits; mean, log_std)
    dist_old = pol.dist_params(dist).astype(np.float64)
    dist_old += 0.3 * rng.normal(size=dist_old.shape)
    return {
        "obs": obs, "actions": actions, "logp_old": logp_old.astype(dtype),
        "advantages": rng.normal(size=B).astype(dtype), "returns": returns.astype(dtype),
        "values_old": values_old.astype(dtype), "dist_old": dist_old.astype(dtype),
    }


def _term_scales(pol, batch, cfg, **kw):
    """Per parameter, the largest entry of (1/B) sum_i |g_i|, g_i the gradient of sample i's loss alone
    (numpy's, each minibatch loss being the mean of per-sample ones, the advantages normalised over
    the whole minibatch first): the size of the terms a minibatch gradient sums, whose rounding the
    two paths differ by. It bounds max|g| (|sum| <= sum |.|) and exceeds it where the terms cancel: a
    value head's bias gradient sums B errors V - R of size ~1 and both signs, to 8.6e-5 for one draw
    (B = 3), where the fused float32 tanh's few-ulp differences in V moved it by 8e-8 (1e-3 of itself,
    ~1e-7 of the terms)."""
    B = batch["obs"].shape[0]
    one = {**batch}
    if cfg.normalize_advantages:
        from minippo.ppo import normalize

        one["advantages"] = normalize(batch["advantages"])
    single = cfg.replace(normalize_advantages=False)
    sums = {}
    for i in range(B):
        _, g = loss_and_grads(pol, {k: v[i:i + 1] for k, v in one.items()}, single, **kw)
        for k, v in g.items():
            sums[k] = sums.get(k, 0.0) + np.abs(v.astype(np.float64))
    return {k: float(v.max()) / B if v.size else 0.0 for k, v in sums.items()}


def _assert_grads_close(g_fused, g_ref, dtype, term_scales=None):
    """Gradients within rtol plus an atol of (2e-5 in float32, 1e-12 in float64) times max|g|; where that
    fails and ``term_scales`` (a function giving :func:`_term_scales`) is given, times the size of the
    terms the gradient sums instead (larger: it differs only where they cancel)."""
    scales = None
    for k, ref in g_ref.items():
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        rtol, atol, floor = (1e-9, 1e-12, 1.0) if dtype == np.float64 else (1e-4, 2e-5, 1e-3)
        if term_scales is not None and not np.allclose(g_fused[k], ref, rtol=rtol, atol=atol * max(scale, floor)):
            scales = term_scales() if scales is None else scales
            scale = max(scale, scales[k])
        np.testing.assert_allclose(g_fused[k], ref, rtol=rtol, atol=atol * max(scale, floor), err_msg=k)


# What the parity tests draw, besides the objective's own settings. (hidden, shared): a shared trunk
# (fused since session 51) needs a hidden layer; trunks of depth 1 and 2 (each depth and dtype is a
# compile of its own).
SETUPS = dict(
    dtype=st.sampled_from([np.float32, np.float64]),
    discrete=st.booleans(),
    nets=st.sampled_from([((64, 64), False), ((8,), False), ((16, 9, 7), False), ((), False), ((64, 64), True),
                          ((8,), True)]),
    activation=st.sampled_from(["tanh", "relu"]),
    B=st.sampled_from([2, 3, 17, 64, 257]),
    temperature=st.sampled_from([1.0, 0.5, 2.0]),
    clip_vloss=st.booleans(),
    normalize=st.booleans(),
    ent_coef=st.sampled_from([0.0, 0.01]),
    seed=st.integers(0, 2**16),
)


@SLOW
@given(clip_eps=st.sampled_from([0.1, 0.2]), **SETUPS)
# a draw whose critic output bias's gradient cancels to 1e-3 of its terms (see _term_scales)
@example(clip_eps=0.1, dtype=np.float32, discrete=True, nets=((64, 64), False), activation="tanh", B=3,
         temperature=1.0, clip_vloss=False, normalize=False, ent_coef=0.0, seed=1154)
def test_fused_grads_and_stats_match_loss_and_grads(
    dtype, discrete, nets, activation, B, temperature, clip_vloss, normalize, ent_coef, clip_eps, seed
):
    _fused_matches_loss_and_grads(dtype, discrete, nets, activation, B, temperature, clip_vloss, normalize,
                                  ent_coef, clip_eps, seed, "clip", None)


@SLOW
@given(objective=st.sampled_from(["kl_penalty", "surrogate", "a2c", "reinforce"]),
       beta=st.sampled_from([0.0, 0.3, 3.0]), **SETUPS)
def test_fused_grads_and_stats_match_loss_and_grads_for_the_other_objectives(
    objective, beta, dtype, discrete, nets, activation, B, temperature, clip_vloss, normalize, ent_coef, seed
):
    """The rest of the ladder on the same kernels: PPO-penalty (with its exact KL to pi_old, beta drawn),
    the importance-sampled surrogate, and the plain policy gradient (a2c and reinforce share it)."""
    _fused_matches_loss_and_grads(dtype, discrete, nets, activation, B, temperature, clip_vloss, normalize,
                                  ent_coef, 0.2, seed, objective, beta)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nets", [((8,), False), ((8,), True)])
@pytest.mark.parametrize("temperature, beta", [(0.5, 0.3), (2.0, 3.0)])
def test_fused_kl_penalty_of_a_tempered_categorical_matches_loss_and_grads(dtype, nets, temperature, beta):
    """The one branch where the KL penalty's gradient carries 1 / temperature: a discrete policy, a
    temperature other than 1, beta > 0. The drawn parity test above met that combination in none of its
    40 examples for about one seed in five (a gradient missing its / temperature survived seed 13)."""
    _fused_matches_loss_and_grads(dtype, True, nets, "tanh", 17, temperature, False, True, 0.01, 0.2, 5,
                                  "kl_penalty", beta)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("discrete, nets, clip_vloss, objective, beta", [
    (False, ((8,), False), False, "kl_penalty", 0.3),  # the Gaussian's KL gradient (2 seeds in 60 missed it)
    (False, ((8,), True), False, "kl_penalty", 3.0),
    (True, ((8,), True), True, "clip", None),  # a shared trunk under value clipping (1 seed in 60)
    (False, ((8,), True), True, "clip", None),
])
def test_fused_rare_draws_match_loss_and_grads(dtype, discrete, nets, clip_vloss, objective, beta):
    """The other combinations the drawn parity tests can go without for a whole run, on every run."""
    _fused_matches_loss_and_grads(dtype, discrete, nets, "relu", 17, 1.0, clip_vloss, True, 0.01, 0.2, 7,
                                  objective, beta)


def _fused_matches_loss_and_grads(dtype, discrete, nets, activation, B, temperature, clip_vloss, normalize,
                                  ent_coef, clip_eps, seed, objective, beta):
    hidden, shared = nets
    pol = _policy(dtype, discrete, hidden, activation, seed, temperature, shared=shared)
    # the config's clip_eps and ent_coef apart from the call's: the step takes the scheduled values it is
    # given (a Gaussian step that read cfg.ent_coef passed while the two were always drawn equal)
    cfg = PPOConfig(objective=objective, clip_vloss=clip_vloss, normalize_advantages=normalize, ent_coef=0.37,
                    clip_eps=0.45, vf_coef=0.7, dtype=np.dtype(dtype).name)
    batch = _batch(pol, B, seed + 1, clip_eps, dtype)
    ref_stats, ref_grads = loss_and_grads(pol, batch, cfg, beta=beta, clip_eps=clip_eps, ent_coef=ent_coef)
    fu = cpu_update.make(pol, Adam(pol.params), cfg, only_if_faster=False, beta=beta)
    assert fu is not None
    stats = fu.loss_and_grads(batch, clip_eps, ent_coef)
    assert list(stats) == list(ref_stats)  # same keys, same order: progress.csv columns
    tol = dict(STAT_TOL[dtype])
    if dtype == np.float32:  # r_t = exp(logp - logp_old) carries logp's rounding, ~1e-7 |logp|
        tol["atol"] *= 1.0 + float(np.abs(batch["logp_old"]).max())
    for k, v in ref_stats.items():
        if k == "vclipfrac":
            assert stats[k] == v
        else:
            np.testing.assert_allclose(stats[k], v, **tol, err_msg=k)
    _assert_grads_close(fu.grads(), ref_grads, dtype, lambda: _term_scales(
        pol, batch, cfg, beta=beta, clip_eps=clip_eps, ent_coef=ent_coef))
    assert set(fu.grads()) == set(pol.params)


@pytest.mark.parametrize("discrete", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clipped_samples_have_exactly_zero_policy_gradient(discrete, dtype):
    # ratio = e > 1 + eps and A > 0 for every sample: the clipped term is strictly smaller, so it is the
    # active one everywhere; with no entropy bonus nothing else reaches the actor.
    pol = _policy(dtype, discrete, (16, 16), "tanh", 3)
    cfg = PPOConfig(ent_coef=0.0, normalize_advantages=False, dtype=np.dtype(dtype).name)
    batch = _batch(pol, 40, 4, 0.2, dtype)
    dist, _, _ = pol.forward(batch["obs"])
    batch["logp_old"] = (dist.log_prob(batch["actions"]) - 1.0).astype(dtype)
    batch["advantages"] = np.abs(batch["advantages"]) + dtype(0.1)
    fu = cpu_update.make(pol, Adam(pol.params), cfg, only_if_faster=False)
    stats = fu.loss_and_grads(batch, 0.2, 0.0)
    assert stats["clipfrac"] == 1.0
    for k, g in fu.grads().items():
        if not k.startswith("critic."):
            assert np.all(g == 0), k
    assert any(np.any(g != 0) for k, g in fu.grads().items() if k.startswith("critic."))


def test_fused_clipfrac_counts_what_the_clip_moves_at_the_tie():
    """The kernel's per-sample term (float64, as it runs for both dtypes) at ratio == fl(1.1)
    exactly, advantage > 0, and at ratio == fl(0.9), advantage < 0 (where each bound is the active
    one): unclipped (gradient -r A / B) and not counted; one step further out: clipped and counted.
    (numpy's clip_objective at the same ties: tests/test_losses.py.)"""
    eps = 0.1
    for bound, adv, out in [(1.0 + eps, 1.0, math.inf), (1.0 - eps, -1.0, -math.inf)]:
        x = math.log(bound)  # the log-ratio whose exp (math.exp, as the kernel) is the bound exactly
        while math.exp(x) != bound:
            x = math.nextafter(x, math.inf if math.exp(x) < bound else -math.inf)
        beyond = math.nextafter(x, out)
        while math.exp(beyond) == bound:
            beyond = math.nextafter(beyond, out)
        for lr, clipped in [(x, False), (beyond, True)]:
            stats = np.zeros(8)
            dlogp = cpu_update._clip_term(lr, 0.0, adv, eps, 4, stats)
            assert dlogp == (0.0 if clipped else -math.exp(lr) * adv / 4), (bound, clipped)
            assert stats[1] == float(clipped), (bound, clipped)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_value_clip_tie_keeps_the_unclipped_gradient_like_numpy(dtype):
    """The fused value term at the tie of tests/test_losses.py (V_clip on the other side of R at V's
    distance: equal squares) keeps the unclipped gradient and does not count the sample; one ulp more
    distance and it is clipped. The same loss, gradient and vclipfrac as losses.value_loss."""
    from minippo import losses

    values, returns = np.array([1.0, 1.0], dtype), np.zeros(2, dtype)
    values_old = np.array([-1.5, np.nextafter(dtype(-1.5), dtype(-2.0))], dtype)  # eps 0.5: V_clip -1.0, below
    loss, dv, vstats = losses.value_loss(values, returns, values_old, 0.5)
    dvalues, stats = np.zeros((2, 1), dtype), np.zeros(8)
    cpu_update._value_terms(values[:, None].copy(), returns, values_old, np.array([0.5], dtype), 1.0,
                            dvalues, stats)
    np.testing.assert_array_equal(dvalues[:, 0], dv)
    np.testing.assert_array_equal(dv, np.array([0.5, 0.0], dtype))
    assert stats[2] == vstats["vclipfrac"] == 0.5
    assert stats[5] == pytest.approx(loss, rel=1e-7 if dtype == np.float32 else 1e-15)


@pytest.mark.parametrize("dtype, v_old, v, r", [
    (np.float32, -0.21567307, -0.015673077, -1.015673),
    (np.float64, -0.09281270588744484, 0.10718729411255519, 1.1071872941125551),
])
def test_fused_value_clip_at_delta_equal_to_eps_follows_numpy(dtype, v_old, v, r):
    """|V - V_old| rounds to eps exactly while V_old + eps rounds one ulp off V, so V_clip != V, and
    its error is the larger: not inside the range (|delta| < eps is false), so numpy clips it; the
    fused step too (a <= in its range test would keep the sample unclipped)."""
    from minippo import losses

    eps = 0.2
    values, returns, values_old = (np.array([x], dtype) for x in (v, r, v_old))
    assert values[0] - values_old[0] == dtype(eps) and values_old[0] + dtype(eps) != values[0]
    loss, dv, vstats = losses.value_loss(values, returns, values_old, eps)
    assert vstats["vclipfrac"] == 1.0 and dv[0] == 0.0
    dvalues, stats = np.ones((1, 1), dtype), np.zeros(8)
    cpu_update._value_terms(values[:, None].copy(), returns, values_old, np.array([eps], dtype), 1.0,
                            dvalues, stats)
    assert dvalues[0, 0] == 0.0 and stats[2] == 1.0
    assert stats[5] == pytest.approx(loss, rel=1e-7 if dtype == np.float32 else 1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logits_past_the_float_range_give_finite_fused_stats_and_grads_like_numpy(dtype):
    """The actor's head emits logits (big, -big, 0) with big the dtype's largest float, so
    z - max z passes the float range (in float64, where the kernel works, only for float64
    logits). Both paths: entropy 0, finite stats and gradients (they were NaN in the kernel for
    float64 and in numpy for both dtypes), and the same values. The taken actions have probability
    1, so the policy gradient is 0 and the critic's is untouched by the overflow."""
    pol = _policy(dtype, True, (16, 16), "tanh", 5)
    big = np.finfo(dtype).max
    pol.params["actor.W2"][:] = 0
    pol.params["actor.b2"][:] = [big, -big, 0.0]
    cfg = PPOConfig(ent_coef=0.01, dtype=np.dtype(dtype).name)
    rng = np.random.default_rng(6)
    B = 16
    batch = {"obs": rng.normal(size=(B, 5)).astype(dtype), "actions": np.zeros(B, np.int64),
             "logp_old": np.full(B, -0.05, dtype), "advantages": rng.normal(size=B).astype(dtype),
             "returns": rng.normal(size=B).astype(dtype), "values_old": rng.normal(size=B).astype(dtype)}
    with pytest.warns(RuntimeWarning, match="overflow"):
        ref_stats, ref_grads = loss_and_grads(pol, batch, cfg, clip_eps=0.2, ent_coef=0.01)
    fu = cpu_update.make(pol, Adam(pol.params), cfg, only_if_faster=False)
    stats = fu.loss_and_grads(batch, 0.2, 0.01)
    assert stats["entropy"] == ref_stats["entropy"] == 0.0
    for k, v in ref_stats.items():
        assert math.isfinite(stats[k]) and math.isfinite(v), k
        np.testing.assert_allclose(stats[k], v, **STAT_TOL[dtype], err_msg=k)
    for k, g in fu.grads().items():
        assert np.isfinite(g).all() and np.isfinite(ref_grads[k]).all(), k
        if k.startswith("actor."):
            assert not g.any() and not ref_grads[k].any(), k
    _assert_grads_close(fu.grads(), ref_grads, dtype)


@pytest.mark.parametrize("max_norm", [0.0, 0.05, 1e9])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("eps, betas", [(1e-5, (0.9, 0.999)), (1e-2, (0.5, 0.9))])  # (a fixed eps went unseen)
def test_fused_clip_and_adam_match_optim(max_norm, dtype, eps, betas):
    _clip_adam_matches_optim(max_norm, dtype, eps, betas)


def _clip_adam_matches_optim(max_norm, dtype, eps=1e-5, betas=(0.9, 0.999)):
    """Six fused steps (cpu_update._clip_adam) against optim.clip_grad_norm + Adam: bit-identical
    unless clipping, where the norm may differ in its last bit."""
    pol_ref = _policy(dtype, True, (16, 8), "tanh", 5)
    pol = _policy(dtype, True, (16, 8), "tanh", 5)
    adam_ref, adam = Adam(pol_ref.params, betas=betas, eps=eps), Adam(pol.params, betas=betas, eps=eps)
    fu = cpu_update.make(pol, adam, PPOConfig(), only_if_faster=False)
    rng = np.random.default_rng(0)
    for step in range(6):
        grads = {k: (0.1 * rng.normal(size=p.shape)).astype(dtype) for k, p in pol.params.items()}
        for k, g in grads.items():
            fu.grads()[k][...] = g
        lr = 1e-3 * (1 - step / 10)
        norm_ref = clip_grad_norm(grads, max_norm) if max_norm > 0 else float("nan")
        adam_ref.step(grads, lr)
        norm = fu.step(lr, max_norm)
        assert adam.t == adam_ref.t == step + 1
        if max_norm > 0:
            assert norm == pytest.approx(norm_ref, rel=1e-6 if dtype == np.float32 else 1e-12)
        else:
            assert np.isnan(norm)
        for k in pol.params:
            if max_norm == 0.05:  # clipped: the norm (and so the scale) may differ in its last bit
                tol = dict(rtol=1e-5, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-15)
                np.testing.assert_allclose(pol.params[k], pol_ref.params[k], **tol)
                np.testing.assert_allclose(adam.m[k], adam_ref.m[k], **tol)
                np.testing.assert_allclose(adam.v[k], adam_ref.v[k], **tol)
            else:  # numpy's operations in numpy's order and dtype
                np.testing.assert_array_equal(pol.params[k], pol_ref.params[k])
                np.testing.assert_array_equal(adam.m[k], adam_ref.m[k])
                np.testing.assert_array_equal(adam.v[k], adam_ref.v[k])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_adam_stays_inside_its_arrays_under_bounds_checks(monkeypatch, dtype):
    """The Adam loop takes each parameter's slice of the flat g, m and v. Compiled kernels index
    unchecked, so a wrong slice end (an empty view: offset - n for offset + n) still reads and writes
    the right memory, and two such mutants passed every other test; the same function compiled with
    bounds checks raises IndexError for them. Here it must match optim as the compiled one does.
    Session 30 also ran the whole kernel suites with NUMBA_BOUNDSCHECK=1 (docs/kernels.md,
    "Results, to rounding")."""
    import numba

    opts = {k: v for k, v in cpu_update._JIT_EXACT.items() if k != "cache"}
    checked = numba.njit(boundscheck=True, **opts)(cpu_update._clip_adam.py_func)
    monkeypatch.setattr(cpu_update, "_clip_adam", checked)
    for max_norm in (0.0, 0.05, 1e9):
        _clip_adam_matches_optim(max_norm, dtype)
    assert checked.signatures  # the checked kernel ran


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_clip_leaves_a_gradient_whose_norm_equals_max_norm_as_it_is(dtype):
    """Global-norm clipping scales only when the norm exceeds max_norm (optim.clip_grad_norm's rule):
    at norm == max_norm exactly the gradient stays as it is; one step lower max_norm scales it by
    max_norm / (norm + 1e-12), as numpy does (not 1 in float64)."""
    for max_norm, clipped in [(0.5, False), (float(np.nextafter(dtype(0.5), dtype(0))), True)]:
        pol = _policy(dtype, True, (8,), "tanh", 2)
        fu = cpu_update.make(pol, Adam(pol.params), PPOConfig(), only_if_faster=False)
        grads = {k: np.zeros(p.shape, dtype) for k, p in pol.params.items()}
        grads["actor.W0"][0, 0] = 0.5  # the global norm is 0.5 exactly
        for k, g in grads.items():
            fu.grads()[k][...] = g
        assert fu.step(1e-3, max_norm) == 0.5
        ref = {k: g.copy() for k, g in grads.items()}
        assert clip_grad_norm(ref, max_norm) == 0.5
        assert (ref["actor.W0"][0, 0] != 0.5) == clipped
        for k in grads:
            np.testing.assert_array_equal(fu.grads()[k], ref[k], err_msg=k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_both_steps_project_log_std_back_into_its_range(dtype):
    """A step that pushes log_std past a bound leaves it on the bound (fused and numpy steps alike),
    where its gradient is not zero: without the projection it would stay outside, frozen."""
    pols = [_policy(dtype, False, (8,), "tanh", 3) for _ in range(2)]
    for pol in pols:
        pol.params["log_std"][...] = [LOG_STD_MAX - 1e-4, LOG_STD_MIN + 1e-4, 0.5]
    adams = [Adam(pol.params) for pol in pols]
    fu = cpu_update.make(pols[0], adams[0], PPOConfig(), only_if_faster=False)
    ref = NumpyStep(pols[1], adams[1], PPOConfig(), beta=1.0)
    g = {k: np.zeros_like(p) for k, p in pols[1].params.items()}
    g["log_std"][...] = [-1.0, 1.0, 1.0]  # Adam's first step moves each entry by lr = 1e-2
    for k, v in g.items():
        fu.grads()[k][...] = v
    ref.grads = g
    fu.step(1e-2, 0.0)
    ref.step(1e-2, 0.0)
    expected = np.array([LOG_STD_MAX, LOG_STD_MIN, 0.5 - 1e-2 / (1 + 1e-5)], dtype)  # lr g / (|g| + eps)
    for pol in pols:  # (the last entry: a float32 step rounds twice, ~1 ulp of 0.5 = 6e-8)
        np.testing.assert_allclose(pol.params["log_std"], expected, rtol=1e-6 if dtype == np.float32 else 1e-12)
        assert pol.params["log_std"][0] == LOG_STD_MAX and pol.params["log_std"][1] == LOG_STD_MIN
    np.testing.assert_array_equal(pols[0].params["log_std"], pols[1].params["log_std"])
    batch = _batch(pols[0], 8, 4, 0.2, dtype)
    fu.loss_and_grads(batch, 0.2, 0.0)
    assert (fu.grads()["log_std"][:2] != 0).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_std_outside_its_range_gets_no_gradient_on_both_paths(dtype):
    """Where the clamp is active (log_std above LOG_STD_MAX: loaded or set by hand) the fused step's
    log_std gradient is 0, as numpy's; the entries inside get numpy's gradient."""
    pol = _policy(dtype, False, (8,), "tanh", 3)
    pol.params["log_std"][...] = [LOG_STD_MAX + 1.0, -0.5, 0.5]
    cfg = PPOConfig(ent_coef=0.01, dtype=np.dtype(dtype).name)
    batch = _batch(pol, 16, 4, 0.2, dtype)
    _, ref_grads = loss_and_grads(pol, batch, cfg, clip_eps=0.2, ent_coef=0.01)
    fu = cpu_update.make(pol, Adam(pol.params), cfg, only_if_faster=False)
    fu.loss_and_grads(batch, 0.2, 0.01)
    assert fu.grads()["log_std"][0] == 0 == ref_grads["log_std"][0]
    assert (ref_grads["log_std"][1:] != 0).all()
    _assert_grads_close(fu.grads(), ref_grads, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_std_below_its_range_is_clamped_and_gets_no_gradient_and_on_the_bound_gets_one(dtype):
    """The lower bound, as the test above the upper: log_std under LOG_STD_MIN (a model saved before
    the range existed) is used as LOG_STD_MIN in the forward and gets no gradient; on the bound itself
    the gradient flows (else clamp_log_std would park it there for good). The actions are drawn near
    the mean, a few exp(-10) away, so that the log-probs stay well conditioned."""
    pol = _policy(dtype, False, (8,), "tanh", 3)
    pol.params["log_std"][...] = [LOG_STD_MIN - 1.0, LOG_STD_MIN, 0.5]
    cfg = PPOConfig(ent_coef=0.01, dtype=np.dtype(dtype).name)
    batch = _batch(pol, 16, 4, 0.2, dtype)
    rng = np.random.default_rng(5)
    dist, _, _ = pol.forward(batch["obs"])
    actions = batch["actions"].copy()
    actions[:, :2] = dist.mean[:, :2] + np.exp(LOG_STD_MIN) * rng.normal(size=(16, 2))
    batch["actions"] = actions.astype(dtype)
    logp = dist.log_prob(batch["actions"]).astype(np.float64)
    logp_old = logp + 0.4 * rng.normal(size=16)
    near = np.abs(np.abs(np.exp(logp - logp_old) - 1.0) - 0.2) < 1e-3
    logp_old[near] = logp[near]
    batch["logp_old"] = logp_old.astype(batch["logp_old"].dtype)
    ref_stats, ref_grads = loss_and_grads(pol, batch, cfg, clip_eps=0.2, ent_coef=0.01)
    fu = cpu_update.make(pol, Adam(pol.params), cfg, only_if_faster=False)
    stats = fu.loss_and_grads(batch, 0.2, 0.01)
    assert fu.grads()["log_std"][0] == 0 == ref_grads["log_std"][0]
    assert ref_grads["log_std"][1] != 0 and fu.grads()["log_std"][1] != 0
    if dtype == np.float64:  # in float32 the mean's gradient (a - mu) / sigma^2 at sigma = exp(-10)
        # amplifies one rounding of mu (~3e-8) by 1 / 4.5e-5: the two paths differ by ~1% there, as
        # policy.py documents for log_std <= -10 in float32
        _assert_grads_close(fu.grads(), ref_grads, dtype)
        assert stats["loss"] == pytest.approx(ref_stats["loss"], rel=1e-10)


@pytest.mark.parametrize("discrete", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_values_inside_the_clip_range_are_never_counted_as_clipped(discrete, dtype):
    """Every V_old strictly inside (V - eps, V + eps) at a nonzero distance: V_clip equals V only up
    to one rounding, which must not count as clipping (vclipfrac 0 on both paths, numpy's critic
    gradient). 2048 samples: enough that rounding would flip some if the |delta| < eps rule were lost."""
    pol = _policy(dtype, discrete, (16,), "tanh", 7)
    cfg = PPOConfig(clip_vloss=True, ent_coef=0.0, dtype=np.dtype(dtype).name)
    batch = _batch(pol, 2048, 8, 0.2, dtype)
    values = pol.forward(batch["obs"])[1]
    batch["values_old"] = (values + np.random.default_rng(1).uniform(-0.19, 0.19, 2048)).astype(dtype)
    ref_stats, ref_grads = loss_and_grads(pol, batch, cfg, clip_eps=0.2, ent_coef=0.0)
    fu = cpu_update.make(pol, Adam(pol.params), cfg, only_if_faster=False)
    stats = fu.loss_and_grads(batch, 0.2, 0.0)
    assert stats["vclipfrac"] == ref_stats["vclipfrac"] == 0.0
    _assert_grads_close(fu.grads(), ref_grads, dtype)


@pytest.mark.parametrize("discrete", [True, False])
def test_a_clip_eps_that_rounds_to_zero_in_float32_clips_values_like_numpy(discrete):
    """clip_eps = 1e-300 passes the checks (> 0) but is 0 in float32, the dtype the value clip runs
    in on both paths: numpy then clips every V to V_old where that is worse, so the fused step must
    too (it took eps = 0 for 'value clipping off', whose sentinel is -1)."""
    pol = _policy(np.float32, discrete, (16,), "tanh", 3)
    cfg = PPOConfig(clip_vloss=True, ent_coef=0.0, dtype="float32")
    batch = _batch(pol, 64, 4, 0.2, np.float32)
    ref_stats, ref_grads = loss_and_grads(pol, batch, cfg, clip_eps=1e-300, ent_coef=0.0)
    fu = cpu_update.make(pol, Adam(pol.params), cfg, only_if_faster=False)
    stats = fu.loss_and_grads(batch, 1e-300, 0.0)
    assert 0.2 < ref_stats["vclipfrac"] < 0.8  # some samples clipped, some not
    assert stats["vclipfrac"] == ref_stats["vclipfrac"]
    np.testing.assert_allclose(stats["value_loss"], ref_stats["value_loss"], rtol=1e-5)
    _assert_grads_close(fu.grads(), ref_grads, np.float32)


_FUSED_HASH = """\
import hashlib, numpy as np
from minippo.config import PPOConfig
from minippo.kernels import cpu_update
from minippo.optim import Adam
from minippo.policy import ActorCritic
from minippo.spaces import Discrete
pol = ActorCritic(4, Discrete(2), (64, 64), "tanh", False, 0.0, 0, np.float32)
adam = Adam(pol.params, lr=1e-3)
fu = cpu_update.make(pol, adam, PPOConfig(), only_if_faster=False)
rng = np.random.default_rng(1)
B = 256
batch = dict(obs=rng.standard_normal((B, 4)).astype(np.float32), actions=rng.integers(0, 2, B),
             logp_old=(np.log(0.5) + 0.01 * rng.standard_normal(B)).astype(np.float32),
             advantages=rng.standard_normal(B).astype(np.float32), returns=rng.standard_normal(B).astype(np.float32),
             values_old=rng.standard_normal(B).astype(np.float32))
fu.loss_and_grads(batch, 0.2, 0.0)
h = hashlib.sha256(b"".join(g.tobytes() for g in fu.grads().values()))
fu.step(1e-3, 0.5)
h.update(b"".join(p.tobytes() for p in pol.params.values()))
print(h.hexdigest())
"""


def test_the_run_that_compiles_the_fused_update_and_a_run_that_loads_it_agree_on_16_byte_vectors(tmp_path):
    """The bias gradients' column sums took their caller's reassoc flag: LLVM summed the critic head's one
    column down the batch in another order in each kernel it was compiled into, so on 16-byte vectors
    (NUMBA_CPU_NAME=generic: SSE2; the same width as NEON) the process that compiled the kernels got a
    critic.b2 gradient 1 ulp from the one a process loading them from the cache got, and two runs of
    one seed went apart from their first update. (The host's AVX-512 build agreed either way.)"""
    import subprocess
    import sys

    if os.environ.get("NUMBA_BOUNDSCHECK", "0") not in ("", "0"):  # (CI's bounds-checked pass: two compiles of
        pytest.skip("the build users run is checked by the plain suite")  # its own for nothing it checks)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"), "NUMBA_CPU_NAME": "generic",
           "MINIPPO_BACKEND": "numba"}
    env.pop("NUMBA_CPU_FEATURES", None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # (this checkout's minippo)
    runs = [subprocess.run([sys.executable, "-c", _FUSED_HASH], capture_output=True, text=True, env=env,
                           cwd=root, timeout=600) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-2000:] + runs[1].stderr[-2000:]
    assert any(tmp_path.joinpath("cache").rglob("*.nbc"))  # (the second run loaded what the first compiled)
    assert runs[0].stdout == runs[1].stdout


def test_non_finite_gradient_raises_before_any_update():
    pol = _policy(np.float32, True, (8,), "tanh", 1)
    adam = Adam(pol.params)
    fu = cpu_update.make(pol, adam, PPOConfig())
    before = {k: p.copy() for k, p in pol.params.items()}
    fu.grads()["actor.W0"][0, 0] = np.nan
    with pytest.raises(FloatingPointError, match="gradient norm"):
        fu.step(1e-3, 0.5)
    assert adam.t == 0
    for k, p in pol.params.items():
        np.testing.assert_array_equal(p, before[k])


def test_the_fused_step_counts_the_step_before_the_moments_move(monkeypatch):
    """As Adam.step does: a KeyboardInterrupt landing as the kernel returns (signal handlers run
    between bytecodes) left moments written with adam.t still 0, which a checkpoint then refused."""
    pol = _policy(np.float32, True, (8,), "tanh", 1)
    adam = Adam(pol.params)
    fu = cpu_update.make(pol, adam, PPOConfig(), only_if_faster=False)
    for g in fu.grads().values():
        g.fill(0.25)
    kernel = cpu_update._clip_adam

    def interrupted(*args):
        kernel(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(cpu_update, "_clip_adam", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fu.step(1e-3, 0.5)
    assert adam.t == 1 and adam._m.any()
    Adam(pol.params).load_state_dict(adam.state_dict())  # (a save of this state loads)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_fused_step_refuses_a_norm_whose_squares_overflow_the_moments(dtype):
    """As Adam.step does (optim.check_step_norm, same message): without clipping, a float32 gradient of
    norm 1e20 passed and its squares made the second moment inf, freezing the parameters it covers. Nothing
    is written and t is not counted; a norm just below the limit is taken, and clipping takes any."""
    limit = step_norm_limit(dtype)
    pol = _policy(dtype, True, (8,), "tanh", 1)
    adam = Adam(pol.params)
    fu = cpu_update.make(pol, adam, PPOConfig(), only_if_faster=False)
    before = {k: p.copy() for k, p in pol.params.items()}
    ref = Adam({k: p.copy() for k, p in pol.params.items()})
    for max_norm, how in ((0.0, "not clipped: max_grad_norm <= 0"), (1.2 * limit, "clipped to max_grad_norm=")):
        for g in fu.grads().values():
            g.fill(0)
        fu.grads()["critic.b0"][0] = 1.5 * limit
        with pytest.raises(GradientOverflowError) as e:
            fu.step(1e-3, max_norm)
        with pytest.raises(GradientOverflowError) as e_ref:
            ref.step({k: g.copy() for k, g in fu.grads().items()}, 1e-3, max_norm)
        assert how in str(e.value) and str(e.value) == str(e_ref.value)
        assert adam.t == 0 and not adam._m.any() and not adam._v.any()
        assert all((pol.params[k] == before[k]).all() for k in before)
    for max_norm in (0.0, 0.5):
        fu.grads()["critic.b0"][0] = 0.99 * limit if max_norm == 0 else 1.5 * limit
        fu.step(1e-3, max_norm)
    assert adam.t == 2 and np.isfinite(adam._v).all() and np.isfinite(pol.params["critic.b0"]).all()


def test_a_norm_equal_to_the_limit_is_taken_by_both_steps_and_one_past_it_refused():
    """The limit's edge (check_step_norm refuses a norm > limit): a gradient whose norm is the limit
    exactly takes the same step on both paths, where a kernel that refused it at >= (a mutant of session
    78's mutation run) returned without writing and the Python side, whose check it passed, then reported
    a step that was never made. float64 only: a lone entry's norm is the entry exactly (sqrt(x * x) == |x|
    in IEEE arithmetic), and float32 cannot hold the limit, ~2^63 (1 - 2^-25)."""
    limit = step_norm_limit(np.float64)
    for g0, taken in ((limit, True), (np.nextafter(limit, np.inf), False)):
        pol = _policy(np.float64, True, (8,), "tanh", 1)
        ref_params = {k: p.copy() for k, p in pol.params.items()}
        adam, ref = Adam(pol.params), Adam(ref_params)
        fu = cpu_update.make(pol, adam, PPOConfig(), only_if_faster=False)
        for g in fu.grads().values():
            g.fill(0)
        fu.grads()["critic.b0"][0] = g0
        grads = {k: g.copy() for k, g in fu.grads().items()}
        if not taken:
            with pytest.raises(GradientOverflowError):
                fu.step(1e-3, 0.0)
            with pytest.raises(GradientOverflowError):
                ref.step(grads, 1e-3, 0.0)
            assert adam.t == ref.t == 0
            continue
        before = pol.params["critic.b0"][0]
        assert math.isnan(fu.step(1e-3, 0.0))  # (NaN: not clipping, as the trainer logs it)
        ref.step(grads, 1e-3, 0.0)
        assert adam.t == ref.t == 1 and pol.params["critic.b0"][0] != before
        for k in ref_params:  # unclipped: numpy's operations in numpy's order, bit-identical
            np.testing.assert_array_equal(pol.params[k], ref_params[k], err_msg=k)
            np.testing.assert_array_equal(adam.m[k], ref.m[k], err_msg=k)
            np.testing.assert_array_equal(adam.v[k], ref.v[k], err_msg=k)


@pytest.mark.parametrize("discrete", [True, False])
def test_a_nan_input_is_named_and_raises_on_both_paths(discrete):
    """A NaN in one minibatch input (or a parameter) makes the loss NaN; the fused step then names
    the input it found, where the numpy path's checks name what they see first (logits, adv,
    values). Both raise FloatingPointError. values_old is unused without value clipping: no error."""
    pol = _policy(np.float32, discrete, (8,), "tanh", 1)
    fu = cpu_update.make(pol, Adam(pol.params), PPOConfig(), only_if_faster=False)
    keys = ["obs", "logp_old", "advantages", "returns"] + ([] if discrete else ["actions"])
    for key in [*keys, "critic.b1"]:
        batch = _batch(pol, 8, 2, 0.2, np.float32)
        if key in batch:
            batch[key] = batch[key].copy()
            batch[key].flat[3] = np.nan
            name = key
        else:
            pol.params[key][0] = np.nan  # in place, as a diverged Adam step leaves it
            name = f"parameter {key}"
        with pytest.raises(FloatingPointError, match=rf"^{name} contains NaN or inf$"):
            fu.loss_and_grads(batch, 0.2, 0.0)
        with pytest.raises(FloatingPointError, match="contains NaN or inf"), np.errstate(all="ignore"):
            loss_and_grads(pol, batch, PPOConfig(), clip_eps=0.2, ent_coef=0.0)
    pol.params["critic.b1"][0] = 0.0
    batch = _batch(pol, 8, 2, 0.2, np.float32)
    batch["values_old"] = np.full_like(batch["values_old"], np.nan)
    assert math.isfinite(fu.loss_and_grads(batch, 0.2, 0.0)["loss"])


@pytest.mark.parametrize("objective, key, value", [("clip", "logp_old", np.inf), ("a2c", "logp_old", np.nan),
                                                   ("surrogate", "logp_old", -np.inf), ("clip", "actions", np.inf)])
def test_a_non_finite_input_that_leaves_the_loss_finite_is_named_too(objective, key, value):
    """The fused step named a non-finite input only when the loss was NaN: an inf logp_old (ratio 0),
    an inf Gaussian action (logp -inf, ratio 0) or any logp_old under a2c (read by approx_kl alone)
    left the loss finite and the step went on, where the numpy path's checks raise."""
    pol = _policy(np.float32, key == "logp_old", (8,), "tanh", 1)
    cfg = PPOConfig(objective=objective)
    fu = cpu_update.make(pol, Adam(pol.params), cfg)
    batch = _batch(pol, 8, 2, 0.2, np.float32)
    batch[key] = batch[key].astype(np.float32)
    batch[key].flat[3] = value
    with pytest.raises(FloatingPointError, match=rf"^{key} contains NaN or inf$"):
        fu.loss_and_grads(batch, 0.2, 0.0)
    with pytest.raises(FloatingPointError, match="contains NaN or inf"), np.errstate(all="ignore"):
        loss_and_grads(pol, batch, cfg, clip_eps=0.2, ent_coef=0.0)


@pytest.mark.parametrize("lr, max_grad_norm, bad", [(np.nan, 0.5, "lr"), (-1e-3, 0.5, "lr"), (np.inf, 0.5, "lr"),
                                                    (1e-3, np.nan, "max_grad_norm"), (1e-3, np.inf, "max_grad_norm")])
def test_the_fused_step_checks_lr_and_max_grad_norm_as_adam_does(lr, max_grad_norm, bad):
    """A NaN max_grad_norm silently switched clipping off, a NaN lr wrote NaN into every parameter and
    a negative one took an ascent step, where Adam.step (the numpy path) refuses them."""
    pol = _policy(np.float32, True, (8,), "tanh", 1)
    adam = Adam(pol.params)
    fu = cpu_update.make(pol, adam, PPOConfig())
    fu.loss_and_grads(_batch(pol, 8, 2, 0.2, np.float32), 0.2, 0.0)
    before = {k: p.copy() for k, p in pol.params.items()}
    with pytest.raises(ValueError, match=rf"^{bad} must be a finite number"):
        fu.step(lr, max_grad_norm)
    with pytest.raises(ValueError, match=rf"^{bad} must be a finite number"):
        Adam({k: p.copy() for k, p in pol.params.items()}).step(fu.grads(), lr, max_grad_norm)
    assert adam.t == 0 and all(np.array_equal(p, before[k]) for k, p in pol.params.items())


@pytest.mark.parametrize("length", [1, 5, 1000])
def test_a_log_std_rebound_to_another_length_is_refused_as_numpy_refuses_it(length):
    """make() checked every layer's shape but not log_std's: a log_std rebound longer than the action
    was read past its end and, through Adam's flat moments, written past theirs (a segfault for a long
    one); shorter, the kernel read other memory as log-stds. The numpy path raises ValueError."""
    pol = _policy(np.float32, False, (8,), "tanh", 1)  # act_dim 3
    adam = Adam(pol.params)
    pol.params["log_std"] = np.zeros(length, np.float32)
    assert cpu_update.make(pol, adam, PPOConfig(), only_if_faster=False) is None
    assert cpu_update.make(pol, Adam(pol.params), PPOConfig(), only_if_faster=False) is None
    with pytest.raises(ValueError, match="log_std must have shape"):
        loss_and_grads(pol, _batch(_policy(np.float32, False, (8,), "tanh", 1), 8, 2, 0.2, np.float32), PPOConfig(),
                       clip_eps=0.2, ent_coef=0.0)


@pytest.mark.parametrize("where", [0, 3, 7])
@pytest.mark.parametrize("value", [3, -1])
def test_bad_actions_raise(where, value):
    """An action outside [0, act_dim) anywhere in the minibatch (the first sample too) is named."""
    pol = _policy(np.float32, True, (8,), "tanh", 1)
    fu = cpu_update.make(pol, Adam(pol.params), PPOConfig())
    batch = _batch(pol, 8, 2, 0.2, np.float32)
    batch["actions"] = batch["actions"].copy()
    batch["actions"][where] = value
    with pytest.raises(ValueError, match=rf"actions must be integers in \[0, 3\), got {value}"):
        fu.loss_and_grads(batch, 0.2, 0.0)


def test_malformed_batches_raise_and_a_small_clip_eps_is_taken():
    pol = _policy(np.float32, True, (8,), "tanh", 1)
    fu = cpu_update.make(pol, Adam(pol.params), PPOConfig())
    batch = _batch(pol, 8, 2, 0.2, np.float32)
    with pytest.raises(ValueError, match=r"actions must be integers of shape \(8,\), got int64 \(8, 1\)"):
        fu.loss_and_grads({**batch, "actions": batch["actions"][:, None]}, 0.2, 0.0)
    with pytest.raises(ValueError, match="obs"):
        fu.loss_and_grads({**batch, "obs": batch["obs"][:, :4]}, 0.2, 0.0)  # one column short
    ref = NumpyStep(pol, Adam(pol.params), PPOConfig(), beta=1.0)
    for step in (fu, ref):  # a negative entropy coefficient (rewarding collapse): refused on both paths
        with pytest.raises(ValueError, match=r"coef must be a finite number >= 0, got -0.1"):
            step.loss_and_grads(batch, 0.2, -0.1)
    got, want = fu.loss_and_grads(batch, 0.01, 0.0), ref.loss_and_grads(batch, 0.01, 0.0)
    assert got["clipfrac"] == want["clipfrac"] and got["loss"] == pytest.approx(want["loss"], rel=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.bool_])
def test_discrete_actions_of_another_dtype_are_taken_as_numpy_takes_them(dtype):
    """Categorical takes whole numbers of any number dtype (2.0 is action 2) and refuses the rest;
    the fused update does the same, through the same check: the same stats and gradients as the
    int64 actions, and the same error for 0.5 (until session 43 it refused every float dtype)."""
    pol = _policy(np.float32, True, (8,), "tanh", 1, n_actions=2)
    fu = cpu_update.make(pol, Adam(pol.params), PPOConfig())
    ref = NumpyStep(pol, Adam(pol.params), PPOConfig(), beta=1.0)
    batch = _batch(pol, 8, 2, 0.2, np.float32)
    assert 0 < batch["actions"].sum() < 8  # both actions taken
    other = {**batch, "actions": batch["actions"].astype(dtype)}
    want = fu.loss_and_grads(batch, 0.2, 0.01)
    g_want = fu.g.copy()
    assert fu.loss_and_grads(other, 0.2, 0.01) == want
    np.testing.assert_array_equal(fu.g, g_want)
    assert ref.loss_and_grads(other, 0.2, 0.01)["loss"] == pytest.approx(want["loss"], rel=1e-5)
    if dtype != np.bool_:
        half = other["actions"].copy()
        half[5] = 0.5
        for step in (fu, ref):
            with pytest.raises(ValueError, match=r"actions must be integers in \[0, 2\), got \["):
                step.loss_and_grads({**other, "actions": half}, 0.2, 0.01)


@pytest.mark.parametrize("discrete", [True, False])
def test_kl_penalty_batches_without_good_dist_old_raise_naming_it(discrete):
    """The fused PPO-penalty step reads pi_old's dist params: missing, of the wrong width, or NaN, the
    error names dist_old (numpy's path raises the same KeyError, and names the logits / mean it builds)."""
    pol = _policy(np.float32, discrete, (8,), "tanh", 1)
    cfg = PPOConfig(objective="kl_penalty")
    fu = cpu_update.make(pol, Adam(pol.params), cfg, beta=0.5)
    batch = _batch(pol, 8, 2, 0.2, np.float32)
    no_old = {k: v for k, v in batch.items() if k != "dist_old"}
    for step in (fu, NumpyStep(pol, Adam(pol.params), cfg, beta=0.5)):
        with pytest.raises(KeyError, match=r"batch is missing \['dist_old'\]; objective='kl_penalty' needs"):
            step.loss_and_grads(no_old, 0.2, 0.0)
    width = 3 if discrete else 6
    with pytest.raises(ValueError, match=rf"dist_old must have shape \(8, {width}\)"):
        fu.loss_and_grads({**batch, "dist_old": batch["dist_old"][:, :2]}, 0.2, 0.0)
    for where in ((3, 1), (slice(None), slice(None))):  # one entry; every entry (a mutant of the scan
        bad = batch["dist_old"].copy()  # that looked for a good entry instead found none, and the kernel
        bad[where] = np.nan  # returned a NaN loss: _raise_non_finite leaves dist_old to the scan)
        with pytest.raises(FloatingPointError, match="^dist_old contains NaN or inf$"):
            fu.loss_and_grads({**batch, "dist_old": bad}, 0.2, 0.0)
    # what pi_old's distribution refuses on the numpy path: a -inf logit (the kernel held it at the
    # lowest float64 and stepped); an old log_std past float32's range (the kernel took it in float64).
    # In row 0 too, past column 0: a mutant of the scan's flat index (i * w - j, session 78) took it.
    ref = NumpyStep(pol, Adam(pol.params), cfg, beta=0.5)
    for row in (3, 0):
        bad = batch["dist_old"].copy()
        bad[row, 1 if discrete else 4] = -np.inf if discrete else -100.0
        for step, err, msg in ((fu, FloatingPointError, "^dist_old contains NaN or inf$"),
                               (ref, FloatingPointError, "^logits contains NaN or inf$")) if discrete else \
                ((fu, ValueError, r"^log_std must lie in \[-88, 88\] for float32"),
                 (ref, ValueError, r"^log_std must lie in \[-88, 88\] for float32")):
            with pytest.raises(err, match=msg):
                step.loss_and_grads({**batch, "dist_old": bad}, 0.2, 0.0)
    if not discrete:  # on the bound: taken by both
        bad = batch["dist_old"].copy()
        bad[3, 4] = -88.0
        got, want = fu.loss_and_grads({**batch, "dist_old": bad}, 0.2, 0.0), \
            ref.loss_and_grads({**batch, "dist_old": bad}, 0.2, 0.0)
        # float32 against the kernel's float64 KL: <= 1.1e-7 apart over 29 seeds (session 74), so STAT_TOL's 1e-5
        assert math.isfinite(got["kl"]) and got["kl"] == pytest.approx(want["kl"], rel=1e-5)
    with pytest.raises(ValueError, match="beta"):
        cpu_update.make(pol, Adam(pol.params), cfg, beta=-1.0)


@pytest.mark.parametrize("discrete", [True, False])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_non_finite_values_old_under_value_clipping_raises_on_both_paths(discrete, value):
    """Value clipping reads V_old: a NaN one took the fused kernel's unclipped branch (NaN compares
    false), so the loss stayed finite and the step went on, where losses.value_loss refuses it. (An
    inf one, the control, made the loss non-finite and was named before.)"""
    pol = _policy(np.float32, discrete, (8,), "tanh", 1)
    cfg = PPOConfig(clip_vloss=True)
    batch = _batch(pol, 8, 2, 0.2, np.float32)
    batch["values_old"] = batch["values_old"].copy()
    batch["values_old"][3] = value
    for step in (cpu_update.make(pol, Adam(pol.params), cfg), NumpyStep(pol, Adam(pol.params), cfg, beta=1.0)):
        with pytest.raises(FloatingPointError, match="^values_old contains NaN or inf$"):
            step.loss_and_grads(batch, 0.2, 0.0)


@pytest.mark.parametrize("discrete, key", [(d, k) for d in (True, False) for k in
                                            ("logp_old", "advantages", "returns", "values_old", "obs", "actions")
                                            if not (d and k == "actions")])  # (test_discrete_actions_of_...)
def test_batch_fields_of_a_wrong_type_are_refused_on_both_paths(discrete, key):
    """The fused step cast every field to the policy's dtype: int, bool or complex log-probs,
    advantages, returns or old values (complex lost its imaginary part), a complex obs or Gaussian
    action, or a list, went through as floats where the numpy path raises TypeError. A real obs
    (int, bool) is cast on both paths, as the network casts its input; so are Box actions."""
    pol = _policy(np.float32, discrete, (8,), "tanh", 1)
    cfg = PPOConfig(clip_vloss=True)  # (values_old is read only then)
    fu = cpu_update.make(pol, Adam(pol.params), cfg)
    ref = NumpyStep(pol, Adam(pol.params), cfg, beta=1.0)
    batch = _batch(pol, 8, 2, 0.2, np.float32)
    v = batch[key]
    real = key in ("obs", "actions")
    bads = [v.astype(complex), v.tolist()] + ([] if real else [v.astype(np.int64), v.astype(bool)])
    names = rf"^(batch\['{key}'\]|{'adv' if key == 'advantages' else key}) must be"  # (fused, numpy)
    with np.errstate(all="ignore"):
        for bad in bads:
            for step in (fu, ref):
                with pytest.raises(TypeError, match=names):
                    step.loss_and_grads({**batch, key: bad}, 0.2, 0.0)
            # the fused step's whole message: what the field must be (a mutant swapping the two
            # kinds survived the match above) and what it got
            got = f"dtype {bad.dtype}" if isinstance(bad, np.ndarray) else "list"
            with pytest.raises(TypeError) as e:
                fu.loss_and_grads({**batch, key: bad}, 0.2, 0.0)
            assert str(e.value) == f"batch[{key!r}] must be {'a real' if real else 'a float'} numpy array, got {got}"
        if real:  # int obs or actions: taken as floats by both
            got = fu.loss_and_grads({**batch, key: v.astype(np.int64)}, 0.2, 0.0)
            want = ref.loss_and_grads({**batch, key: v.astype(np.int64)}, 0.2, 0.0)
            assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)


@pytest.mark.parametrize("objective, clip_vloss", [("clip", False), ("clip", True), ("a2c", False)])
def test_float32_losses_past_the_float32_range_are_finite_on_both_paths(objective, clip_vloss):
    """Value errors of 2e19 (squares past float32's largest) and, for a2c, |logp A| near it: numpy
    squared and multiplied in float32 (loss inf: the trainer stopped) where the fused step works in
    float64 (loss ~1e38: it went on). Both take the float64 loss now."""
    pol = _policy(np.float32, True, (8,), "tanh", 1)
    cfg = PPOConfig(objective=objective, clip_vloss=clip_vloss, normalize_advantages=False)
    batch = _batch(pol, 8, 2, 0.2, np.float32)
    batch["returns"] = np.full(8, 2e19, np.float32)
    if objective == "a2c":
        batch["advantages"] = np.full(8, 3e38, np.float32)
    got = cpu_update.make(pol, Adam(pol.params), cfg).loss_and_grads(batch, 0.2, 0.0)
    want = NumpyStep(pol, Adam(pol.params), cfg, beta=1.0).loss_and_grads(batch, 0.2, 0.0)
    for k in ("loss", "value_loss", "policy_loss"):
        assert math.isfinite(want[k]) and got[k] == pytest.approx(want[k], rel=1e-5), k


def _both_steps(pol, cfg):
    """(the fused step, the numpy step) on ``pol``, each with its own Adam."""
    return (cpu_update.make(pol, Adam(pol.params), cfg, only_if_faster=False),
            NumpyStep(pol, Adam(pol.params), cfg, beta=cfg.kl_beta))


def _grads_of(step):
    return {k: np.array(g) for k, g in (step.grads() if callable(step.grads) else step.grads).items()}


@pytest.mark.parametrize("objective", ["clip", "surrogate", "kl_penalty"])
@pytest.mark.parametrize("discrete", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_sample_without_advantage_adds_nothing_even_where_its_ratio_overflows(objective, discrete, dtype):
    """r A with A = 0 is 0 and has no gradient; where log r > 709 r overflowed to inf and inf * 0 made
    the loss and every gradient NaN on both paths. The minibatch now gives the same loss and gradients,
    exactly, as with that sample's ratio 1 (its term 0 either way); approx_kl shows the overflow."""
    pol = _policy(dtype, discrete, (8,), "tanh", 1)
    cfg = PPOConfig(objective=objective, normalize_advantages=False)
    batch = _batch(pol, 6, 2, 0.2, dtype)
    logp = pol.forward(batch["obs"])[0].log_prob(batch["actions"])
    batch["advantages"][[0, 4]] = 0.0
    near = {**batch, "logp_old": batch["logp_old"].copy()}
    near["logp_old"][[0, 4]] = logp[[0, 4]]  # ratio ~1
    far = {**batch, "logp_old": batch["logp_old"].copy()}
    far["logp_old"][[0, 4]] = logp[[0, 4]] - 1000.0  # log r = 1000: r = inf in float64
    for step in _both_steps(pol, cfg):
        want = step.loss_and_grads(near, 0.2, 0.01)
        want_g = _grads_of(step)
        with np.errstate(over="ignore"):
            got = step.loss_and_grads(far, 0.2, 0.01)
        assert got["approx_kl"] == np.inf and math.isfinite(got["loss"])
        for k in ("loss", "policy_loss", "value_loss", "entropy"):
            assert got[k] == want[k], (type(step).__name__, k)
        for k, g in _grads_of(step).items():
            np.testing.assert_array_equal(g, want_g[k], err_msg=f"{type(step).__name__} {k}")


@pytest.mark.parametrize("discrete", [True, False])
def test_float32_value_clip_takes_the_clipped_branch_where_both_squares_overflow(discrete):
    """|V_clip - R| = 3e19 > |V - R| = 2e19: the clipped term is the larger, so it is taken (dL/dV = 0).
    In float32 both squares overflowed to inf, inf > inf is False, and both paths took the unclipped
    one (vclipfrac 0, a critic gradient of ~1e19). float64, where the squares fit, is the reference."""
    for dtype in (np.float64, np.float32):
        pol = _policy(dtype, discrete, (8,), "tanh", 1)
        cfg = PPOConfig(clip_vloss=True, vf_coef=1.0)
        batch = _batch(pol, 4, 2, 0.2, dtype)
        values = pol.forward(batch["obs"])[1]
        batch["returns"] = np.full(4, -2e19, dtype)
        batch["values_old"] = (values + 1e19).astype(dtype)
        # float32 holds 1e19 and 2e19 to ~3e-8, so the square ~1e-7 off 0.5 (3e19)^2; float64 holds them exactly
        # and the values V (~1) shift the square by ~1e-19 of it
        rel = 1e-6 if dtype == np.float32 else 1e-12
        for step in _both_steps(pol, cfg):
            got = step.loss_and_grads(batch, 0.2, 0.0)
            assert got["vclipfrac"] == 1.0 and got["value_loss"] == pytest.approx(0.5 * 3e19**2, rel=rel)
            for k, g in _grads_of(step).items():
                if k.startswith("critic."):
                    assert not g.any(), (dtype, type(step).__name__, k)


@pytest.mark.parametrize("shared", [False, True])
def test_the_fused_step_refuses_logits_that_overflow_at_the_temperature_as_numpy_does(shared):
    """numpy's Categorical divides the logits by T in the policy's dtype and refuses what overflows there
    (logits ~10 at T = 1e-38 in float32); the fused step divided in float64 and trained on. Logits that
    overflow in the network itself are named as numpy names them, at any temperature."""
    for temperature, match in ((1e-38, "logits / temperature"), (1.0, "logits"), (1e-3, None)):
        pol = _policy(np.float32, True, (8,), "tanh", 1, temperature=temperature, shared=shared)
        batch = _batch(pol, 8, 2, 0.2, np.float32)
        if match == "logits / temperature":  # logits ~10: 1e39 in float32 (finite in float64)
            pol.params["actor.b0" if shared else "actor.b1"][:] = 10.0
        if match == "logits":  # every hidden unit saturated at 1, 8 of them times 3e38: inf
            pol.params["actor.b0" if shared else "actor.b1"][:] = 0.0
            pol.params["trunk.b0" if shared else "actor.b0"][:] = 100.0
            pol.params["actor.W0" if shared else "actor.W1"][:] = 3e38
        fused, numpy_step = _both_steps(pol, PPOConfig())
        for step in (fused, numpy_step):
            if match is None:  # (T = 1e-3: no overflow, both go on)
                assert math.isfinite(step.loss_and_grads(batch, 0.2, 0.0)["loss"])
                continue
            with pytest.raises(FloatingPointError, match=rf"^{match} contains NaN or inf$"), \
                    np.errstate(all="ignore"):
                step.loss_and_grads(batch, 0.2, 0.0)


@pytest.mark.parametrize("where", [(0, 0), (3, 1), (7, 0), (7, 2)])
def test_one_logit_that_overflows_at_the_temperature_is_refused_wherever_it_is(where):
    """The kernel keeps the minibatch's largest |logit| for that check: one logit of ~5 at T = 1e-38
    (5e38 in float32), every other one 0, is refused as numpy refuses it, in any sample and column,
    not only the last one read (a mutant of session 78's mutation run kept the last |logit| read)."""
    i, j = where
    pol = _policy(np.float32, True, (8,), "tanh", 1, temperature=1e-38)
    batch = _batch(pol, 8, 2, 0.2, np.float32)
    p = pol.params
    for k in ("actor.W0", "actor.b0", "actor.W1", "actor.b1"):
        p[k][...] = 0.0
    p["actor.W0"][0, 0] = 1.0  # h_0 = tanh(obs[:, 0]); logit j = 5 h_0
    p["actor.W1"][0, j] = 5.0
    batch["obs"][:, 0] = 0.0
    batch["obs"][i, 0] = 3.0
    z = pol.actor.forward(batch["obs"])[0]
    assert np.count_nonzero(z) == 1 and z[i, j] == np.float32(5.0) * np.tanh(np.float32(3.0))
    for step in _both_steps(pol, PPOConfig()):
        with pytest.raises(FloatingPointError, match=r"^logits / temperature contains NaN or inf$"), \
                np.errstate(all="ignore"):
            step.loss_and_grads(batch, 0.2, 0.0)


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("shared", [False, True])
def test_a_temperature_that_is_zero_in_float32_is_refused_without_a_numpy_warning(shared):
    """T = 1e-300 is 0 in float32: the fused step's check of logits / T divided by zero, and numpy's
    "divide by zero" RuntimeWarning came before the error (numpy's Categorical divides without warnings)."""
    pol = _policy(np.float32, True, (8,), "tanh", 1, shared=shared)
    batch = _batch(pol, 8, 2, 0.2, np.float32)  # (drawn at T = 1: the batch's own forward pass would refuse)
    pol.temperature = 1e-300
    fused, numpy_step = _both_steps(pol, PPOConfig())
    for step in (fused, numpy_step):
        with pytest.raises(FloatingPointError, match=r"^logits / temperature contains NaN or inf$"):
            step.loss_and_grads(batch, 0.2, 0.0)


@settings(max_examples=16, deadline=None)
@given(objective=st.sampled_from(["clip", "kl_penalty", "surrogate", "a2c", "reinforce"]), discrete=st.booleans(),
       shared=st.booleans(), clip_vloss=st.booleans(), normalize=st.booleans(), B=st.sampled_from([2, 5]),
       activation=st.sampled_from(["tanh", "relu"]), temperature=st.sampled_from([1.0, 0.5, 2.0]),
       seed=st.integers(0, 2**16))
def test_fused_gradients_match_finite_differences_of_the_fused_loss(objective, discrete, shared, clip_vloss,
                                                                     normalize, B, activation, temperature, seed):
    """The fused step against itself alone: its gradient (``fu.g``) and central differences in float64
    of its own loss, without the numpy path in between (gradcheck's 1e-6; float64 tanh is libm's, so
    the loss is the exact function; the batch keeps every ratio and value 1e-3 away from a clip edge,
    and relu's pre-activations 1e-3 away from its kink, so no difference of step 1e-6 crosses one). The
    temperature reaches the kernel's own ``/ temperature`` terms (a discrete policy's logits, its
    entropy and KL). A guard (session 55's test audit, relu and temperature drawn since session 74); it
    passed on the code it was added to."""
    from minippo.gradcheck import check_grads

    pol = _policy(np.float64, discrete, (6, 5) if shared else (6,), activation, seed % 89, temperature,
                  shared=shared)
    cfg = PPOConfig(objective=objective, clip_vloss=clip_vloss, normalize_advantages=normalize, ent_coef=0.01)
    fu = cpu_update.make(pol, Adam(pol.params), cfg, only_if_faster=False, beta=0.7)
    batch = _batch(pol, B, seed, 0.2, np.float64)
    if activation == "relu":  # a step of 1e-6 moves a pre-activation by ~1e-6 |input|
        assume(relu_margin(pol, pol.forward(batch["obs"])[2]) > 1e-3)
    fu.loss_and_grads(batch, 0.2, 0.01)
    grads = {k: g.copy() for k, g in fu.grads().items()}  # (each call below writes fu.g again)
    assert check_grads(lambda: fu.loss_and_grads(batch, 0.2, 0.01)["loss"], pol.params, grads) < 1e-6


@pytest.mark.parametrize("value", [0.3, 1e6 + 0.1, -4e9])
def test_equal_float64_advantages_normalise_to_zero_on_both_paths(value, monkeypatch):
    """B equal advantages normalise to 0 (no policy gradient). In float64 from |A| ~ 1e6 their mean, an ulp
    off, divided by a std of that size, gave +-O(1) instead, and differently on each path (the kernel's
    loop, numpy's pairwise sum): both now work on A - A_0, where the equal ones are exact zeros. (0.3 and
    -4e9, whose sums come out exact, are controls.)"""
    pol = _policy(np.float64, True, (8,), "tanh", 1)
    cfg = PPOConfig(normalize_advantages=True)
    batch = {**_batch(pol, 64, 2, 0.2, np.float64), "advantages": np.full(64, value)}
    fu = cpu_update.make(pol, Adam(pol.params), cfg, only_if_faster=False)
    got = fu.loss_and_grads(batch, 0.2, 0.0)
    want = NumpyStep(pol, Adam(pol.params), cfg, beta=1.0).loss_and_grads(batch, 0.2, 0.0)
    assert got["policy_loss"] == want["policy_loss"] == 0.0
    for k in ("actor.W0", "actor.b1"):  # the actor's gradient comes from the policy loss alone here
        assert not fu.grads()[k].any(), k


@settings(max_examples=200, deadline=None)
@given(dtype=st.sampled_from([np.float32, np.float64]), B=st.integers(2, 300), data=st.data())
@example(dtype=np.float64, B=3, data=None)  # 0.1: see below
def test_equal_advantages_of_any_value_normalise_to_exact_zeros_on_both_paths(dtype, B, data):
    """The test above for any finite value and B: A - A_0 is exactly 0 for equal A, whatever the sum's
    rounding. The three values there come out right without the shift too, at B = 64 (session 78: a
    mutation run's kernel that took A + A_0 passed them); 0.1 at B = 3, float64, does not."""
    from minippo.ppo import normalize

    big = float(np.finfo(dtype).max) / 2
    value = 0.1 if data is None else data.draw(st.floats(-big, big, allow_nan=False), label="value")
    adv = np.full(B, value, dtype)
    fused = cpu_update._normalized(adv, True)
    assert fused.dtype == np.float64 and not fused.any(), fused[:4]
    assert not normalize(adv).any()


def test_missing_batch_keys_are_named_alike_on_both_paths():
    pol = _policy(np.float32, True, (8,), "tanh", 1)
    batch = _batch(pol, 8, 2, 0.2, np.float32)
    for objective in ("clip", "kl_penalty"):
        cfg = PPOConfig(objective=objective)
        for step in (cpu_update.make(pol, Adam(pol.params), cfg), NumpyStep(pol, Adam(pol.params), cfg, beta=1.0)):
            with pytest.raises(KeyError, match=rf"batch is missing \['obs', 'returns'\]; objective='{objective}'"):
                step.loss_and_grads({k: a for k, a in batch.items() if k not in ("obs", "returns")}, 0.2, 0.0)


def test_bad_clip_eps_and_single_sample_normalisation_raise_like_numpy():
    pol = _policy(np.float32, True, (8,), "tanh", 1)
    batch = _batch(pol, 8, 2, 0.2, np.float32)
    one = {k: v[:1] for k, v in batch.items()}
    for cfg, mb, clip_eps, msg in ((PPOConfig(), batch, 0.0, "clip_eps must be a finite number > 0"),
                                   (PPOConfig(), one, 0.2, "at least 2 samples")):
        fu = cpu_update.make(pol, Adam(pol.params), cfg)
        ref = NumpyStep(pol, Adam(pol.params), cfg, beta=1.0)
        for step in (fu, ref):
            with pytest.raises(ValueError, match=msg):
                step.loss_and_grads(mb, clip_eps, 0.0)
    fu = cpu_update.make(pol, Adam(pol.params), PPOConfig(normalize_advantages=False))
    assert np.isfinite(fu.loss_and_grads(one, 0.2, 0.0)["loss"])  # one sample is fine unnormalised


def test_unsupported_setups_fall_back():
    pol = _policy(np.float32, True, (8,), "tanh", 1)
    adam = Adam(pol.params)
    assert cpu_update.make(pol, adam, PPOConfig()) is not None
    for objective in ("kl_penalty", "surrogate", "a2c", "reinforce"):  # every rung of the ladder
        assert cpu_update.make(pol, adam, PPOConfig(objective=objective)) is not None
    shared = ActorCritic(5, Discrete(3), (8, 6), "tanh", True)  # (fused since session 51)
    assert cpu_update.make(shared, Adam(shared.params), PPOConfig()) is not None  # heads take the last width
    from minippo.nn import MLP

    shared.trunk = MLP([5, 8, 6], "tanh", seed=2, activate_output=False)  # a trunk ActorCritic never makes
    shared.params.update({f"trunk.{k}": a for k, a in shared.trunk.params.items()})
    assert cpu_update.make(shared, Adam(shared.params), PPOConfig()) is None
    # a layer (rebound in both dicts) of another shape than the widths say: the kernels would read past it
    for key in ("actor.W0", "trunk.b0"):
        odd = ActorCritic(5, Discrete(3), (8,), "tanh", True)
        net, name = key.split(".")
        odd.params[key] = getattr(odd, net).params[name] = np.zeros(odd.params[key].shape[:-1] + (9,), np.float32)
        assert cpu_update.make(odd, Adam(odd.params), PPOConfig()) is None, key
    pol64 = _policy(np.float64, True, (8,), "tanh", 1)
    assert cpu_update.make(pol64, Adam(pol64.params), PPOConfig()) is None  # slower than numpy there
    assert cpu_update.make(pol64, Adam(pol64.params), PPOConfig(), only_if_faster=False) is not None
    other = Adam({k: v.copy() for k, v in pol.params.items()})
    assert cpu_update.make(pol, other, PPOConfig()) is None  # an Adam over other arrays
    # the MLP's dict and the policy's made to disagree (only by going round nn.Params' writes)
    dict.__setitem__(pol.critic.params, "b1", pol.critic.params["b1"] + 1)
    pol.critic.params.version += 1
    assert cpu_update.make(pol, adam, PPOConfig()) is None
    # a parameter (rebound in both dicts) in Fortran order, or of another dtype than the first one:
    # the kernels read C-ordered arrays of one dtype
    for net, key, change in (("actor", "W0", np.asfortranarray), ("critic", "b1", lambda a: a.astype(np.float64))):
        odd = _policy(np.float32, True, (8,), "tanh", 1)
        opt = Adam(odd.params)  # (Adam itself refuses mixed dtypes: the rebinding comes after it)
        a = change(odd.params[f"{net}.{key}"])
        odd.params[f"{net}.{key}"] = getattr(odd, net).params[key] = a
        assert cpu_update.make(odd, opt, PPOConfig()) is None, key
    # Adam's flat moments of another dtype, or not 1-d: the kernel updates them as flat buffers
    for which, change in (("_m", lambda a: a.astype(np.float64)), ("_v", lambda a: a.astype(np.float64)),
                          ("_m", lambda a: a.reshape(1, -1)), ("_v", lambda a: a.reshape(1, -1))):
        ok = _policy(np.float32, True, (8,), "tanh", 1)
        opt = Adam(ok.params)
        assert cpu_update.make(ok, opt, PPOConfig()) is not None
        setattr(opt, which, change(getattr(opt, which)))
        assert cpu_update.make(ok, opt, PPOConfig()) is None, which
    # a network of another activation than the policy's (the kernels apply the policy's to all of them)
    swapped = _policy(np.float32, True, (8,), "tanh", 1)
    relu = MLP([5, 8, 3], "relu")
    relu.params.update({k: swapped.params[f"actor.{k}"] for k in relu.params})
    swapped.actor = relu
    assert cpu_update.make(swapped, Adam(swapped.params), PPOConfig()) is None
    # subclasses: the kernels compute what ActorCritic's, MLP's and Adam's own methods do, so a subclass
    # (an AdamW's own step, a policy's own forward) would be bypassed: they run the numpy path
    class MyAdam(Adam):
        pass

    class MyPolicy(ActorCritic):
        pass

    class MyMLP(MLP):
        pass

    assert cpu_update.make(pol, MyAdam(pol.params), PPOConfig()) is None
    sub = MyPolicy(5, Discrete(3), (8,))
    assert cpu_update.make(sub, Adam(sub.params), PPOConfig()) is None
    plain = _policy(np.float32, True, (8,), "tanh", 1)
    plain.critic.__class__ = MyMLP
    assert cpu_update.make(plain, Adam(plain.params), PPOConfig()) is None
    # read-only parameters (or moments): the kernel cannot write them (the numpy path names the array)
    for which in ("actor.W0", "_m"):
        ro = _policy(np.float32, True, (8,), "tanh", 1)
        opt = Adam(ro.params)
        (ro.params[which] if "." in which else getattr(opt, which)).flags.writeable = False
        assert cpu_update.make(ro, opt, PPOConfig()) is None, which


def _train_rows(cfg):
    from minippo import PPO

    rows = []
    algo = PPO(cfg)
    algo.learn(callback=rows.append)
    return algo, [{k: v for k, v in r.items() if k not in ("time", "fps")} for r in rows]


TINY = dict(n_envs=4, n_steps=16, batch_size=32, n_epochs=3, total_timesteps=192, hidden=(16, 16))


@pytest.mark.parametrize("overrides", [dict(env_id="CartPole-v1", autoreset="next_step", target_kl=0.02),
                                       dict(env_id="Pendulum-v1", clip_vloss=True, ent_coef=0.01),
                                       dict(env_id="CartPole-v1", objective="kl_penalty", kl_target=0.001),
                                       dict(env_id="Pendulum-v1", objective="reinforce", n_epochs=1),
                                       dict(env_id="CartPole-v1", shared=True)])
def test_numba_training_run_is_bit_identical_and_uses_the_fused_step(numba_backend, overrides):
    pytest.importorskip("gymnasium")
    import json

    cfg = PPOConfig(**{**TINY, **overrides})
    algo, a = _train_rows(cfg)
    assert isinstance(algo._minibatch_step(), cpu_update.FusedUpdate)
    _, b = _train_rows(cfg)
    assert len(a) == 3
    assert json.dumps(a) == json.dumps(b)


def test_the_fused_kl_penalty_step_takes_the_adapted_beta_also_after_a_checkpoint(numba_backend, tmp_path):
    """The trainer builds the fused step each update with the adaptive rule's current beta (not
    config.kl_beta), as the numpy step takes it; a loaded checkpoint goes on with the saved beta."""
    pytest.importorskip("gymnasium")
    from minippo import PPO

    algo = PPO(PPOConfig(env_id="CartPole-v1", objective="kl_penalty", n_envs=2, n_steps=16, batch_size=16,
                         n_epochs=1, hidden=(8,), kl_beta=1.0))
    algo.kl_coef.beta = 7.0
    step = algo._minibatch_step()
    assert isinstance(step, cpu_update.FusedUpdate) and step.beta == 7.0
    algo.collect_rollout()
    out = algo.update(progress=0.0)
    assert out["beta"] in (3.5, 7.0, 14.0)  # adapted after the update
    algo.save(str(tmp_path / "m.npz"))
    loaded = PPO.load(str(tmp_path / "m.npz"))
    assert loaded._minibatch_step().beta == out["beta"]


def test_numpy_backend_never_uses_the_fused_step(monkeypatch):
    pytest.importorskip("gymnasium")
    from minippo import PPO
    from minippo.ppo import NumpyStep

    monkeypatch.setenv(backend.ENV_VAR, "numpy")
    backend.reset()
    try:
        assert isinstance(PPO(PPOConfig(**TINY))._minibatch_step(), NumpyStep)
    finally:
        backend.reset()
