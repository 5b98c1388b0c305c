"""Numba kernels for one whole PPO minibatch update (``MINIPPO_BACKEND=numba``), for every rung of the
ladder: PPO-clip, PPO-penalty (adaptive KL), the importance-sampled surrogate, and REINFORCE / A2C.

numpy spends a CartPole minibatch step (B = 256, two 4-64-64-x tanh MLPs) in ~200 calls of
elementwise work and matmul overhead (~600 us, measured). Here it is two compiled calls:

1. :meth:`FusedUpdate.loss_and_grads`: forward of the actor and critic MLPs (with a shared trunk:
   the trunk once, then the two heads on its features, their input gradients summed), the Categorical
   distribution (softmax with temperature) or the diagonal Gaussian, per-minibatch advantage
   normalisation, the policy objective (clip, KL penalty with its exact KL(pi_old || pi_theta),
   surrogate, or the plain policy gradient), the (optionally clipped) value loss, the entropy bonus,
   backward to every parameter gradient (into one flat vector laid out like Adam's moments), and
   the logged stats. Same formulas as ``minippo.ppo.loss_and_grads`` (the readable reference).
2. :meth:`FusedUpdate.step`: global-norm gradient clipping and Adam on that flat vector, in place
   on the parameter arrays and on ``Adam._m`` / ``Adam._v``; ``Adam.t`` is advanced in Python.

The trainer checks target_kl between the two. Importing this module compiles nothing: each kernel
is compiled on its first call (per dtype and depth) and cached on disk (``cache=True``).

Results equal the numpy path to rounding: sums run in another order than BLAS (and stats
accumulate in float64), float32 tanh is ``kernels.cpu._tanh_f32`` (<= 8 ulp), float64 uses libm tanh.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from minippo._checks import finite, real
from minippo.distributions import action_indices, log_std_in_range, log_std_limit
from minippo.optim import Adam, check_step_norm, step_norm_limit
from minippo.ppo import check_batch_keys

from .cpu import (
    ACT_NONE,
    ACT_RELU,
    ACT_TANH,
    ACT_TANH_F32,
    _act_back,
    _col_sums,
    _dense,
    _mm_acc,
    _prepare,
    _transposed,
    _trunk_forward,
    _weight_grad,
)

# The digests of the files built into these kernels: see SOURCES_BUILT_IN in cpu.py.
SOURCES_BUILT_IN = {"cpu.py": "c8f3a4a04d6e8d27", "simd.py": "aed7469a9d4dc301"}

# As in kernels/cpu.py: error_model="numpy" drops per-division zero checks (they block
# vectorisation); reassoc + contract let the matmul loops vectorise and use FMA. NaN/inf semantics
# are kept (no "nnan"/"ninf"), so a NaN loss still reaches the trainer's check.
_JIT = {"cache": True, "error_model": "numpy", "fastmath": {"reassoc", "contract"}}
# The optimizer kernel does numpy's float operations in numpy's order and dtype (no contraction).
# fastmath=False explicitly: numba otherwise inlines a callee with its caller's fastmath flags.
_JIT_EXACT = {"cache": True, "error_model": "numpy", "fastmath": False}

N_STATS = 9
# The policy objective, one compiled kernel for all (config.objective -> code).
OBJ_CLIP, OBJ_SURROGATE, OBJ_PG, OBJ_KL = 0, 1, 2, 3
OBJECTIVES = {"clip": OBJ_CLIP, "surrogate": OBJ_SURROGATE, "a2c": OBJ_PG, "reinforce": OBJ_PG,
              "kl_penalty": OBJ_KL}
_LOWEST = -1.7976931348623157e308  # the lowest finite float64
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
LOG_2PI = math.log(2.0 * math.pi)


@njit(**_JIT)
def _mlp_forward(x, Ws, bs, act):
    """[x, h_1, ..., y] for y = W_L(act(... act(x W_0 + b_0) ...)) + b_L (linear output)."""
    B = x.shape[0]
    hs = [x]
    h = x
    n = len(Ws)
    for i in range(n):
        W, b = Ws[i], bs[i]
        F = W.shape[1]
        out = np.empty((B, F), x.dtype)
        _dense(h, W, b, out, act if i < n - 1 else ACT_NONE)  # heads: _dense's narrow paths
        hs.append(out)
        h = out
    return hs


@njit(**_JIT)
def _mlp_backward(dy, hs, Ws, gWs, gbs, act, dx0):
    """Given dy = dL/dy (B, F_L): dL/dW_i into gWs[i], dL/db_i into gbs[i]; with dx0 (B, F_0) (not
    (0, 0)) the input gradient dy W_L^T ... W_0^T (through the activations) is added into it (a
    shared trunk's features feed two heads: their gradients sum)."""
    d = dy
    for i in range(len(Ws) - 1, -1, -1):
        W, gW, gb = Ws[i], gWs[i], gbs[i]
        B = d.shape[0]
        _col_sums(d, gb)
        K = W.shape[0]
        _weight_grad(hs[i], d, gW)
        if i == 0:
            if dx0.shape[0] > 0:
                _mm_acc(d, _transposed(W), dx0)
            break
        WT = _transposed(W)  # W's columns made rows: dx = d W^T vectorises along k
        dx = np.zeros((B, K), d.dtype)
        _mm_acc(d, WT, dx)
        _act_back(dx, hs[i], act)
        d = dx


# ---------------------------------------------------------------- the loss and its input gradients
@njit(**_JIT)
def _normalized(adv, normalize):
    """(A - mean A) / (std A + 1e-8) (population std, as minippo.ppo.normalize), in float64, on A - A_0
    as numpy's: equal advantages give exact zeros."""
    B = adv.shape[0]
    out = np.empty(B, np.float64)
    first = np.float64(adv[0]) if normalize else 0.0
    for i in range(B):
        out[i] = np.float64(adv[i]) - first
    if normalize:
        mean = 0.0
        for i in range(B):
            mean += out[i]
        mean /= B
        var = 0.0
        for i in range(B):
            var += (out[i] - mean) ** 2
        denom = math.sqrt(var / B) + 1e-8
        for i in range(B):
            out[i] = (out[i] - mean) / denom
    return out


@njit(**_JIT_EXACT)
def _value_terms(values, returns, values_old, vclip, vf_coef, dvalues, stats):
    """0.5 mean((V - R)^2), or clipped (vclip[0] >= 0), as losses.value_loss; dvalues = vf_coef dL/dV.

    vclip is a 1-element array in the values' dtype, and the clipped branch runs in that dtype
    without reassociation: V_old + clip(V - V_old) is then rounded as numpy rounds it, so the tie
    rule (clipped only outside the range and when its square is strictly larger) sees the same
    numbers as the numpy path."""
    B = values.shape[0]
    eps = vclip[0]
    vsum = 0.0
    vclipped = 0.0
    for i in range(B):
        V = values[i, 0]
        err = V - returns[i]
        dv = np.float64(err)
        if eps >= 0:  # -1 when value clipping is off; 0 when a tiny clip_eps rounds to 0 in the dtype
            if not np.isfinite(values_old[i]):  # losses.value_loss refuses it: a NaN loss, and the
                vsum += np.nan  # error names values_old (a NaN V_old took the unclipped branch: finite)
            delta = V - values_old[i]
            err_c = (values_old[i] + min(max(delta, -eps), eps)) - returns[i]
            if not abs(delta) < eps and abs(err_c) > abs(err):  # V_clip does not depend on V (|.|, not
                # the squares: in float32 both overflow past |err| ~ 1.8e19, and inf > inf is False)
                vsum += np.float64(err_c) * np.float64(err_c)
                vclipped += 1.0
                dv = 0.0
            else:
                vsum += np.float64(err) * np.float64(err)
        else:
            vsum += np.float64(err) * np.float64(err)
        dvalues[i, 0] = vf_coef * (dv / B)
    stats[2] = vclipped / B
    stats[5] = 0.5 * vsum / B


@njit(**_JIT)
def _clip_term(logp, logp_old, adv, clip_eps, B, stats):
    """One sample of PPO-clip: adds to the sums in stats, returns dL/dlogp (0 where clipped)."""
    log_ratio = logp - logp_old
    ratio = math.exp(log_ratio)
    unclipped = ratio * adv if adv != 0.0 else 0.0  # (0, not inf * 0, where r overflowed: losses.py)
    clipped = min(max(ratio, 1.0 - clip_eps), 1.0 + clip_eps) * adv
    stats[0] += math.expm1(log_ratio) - log_ratio
    if ratio < 1.0 - clip_eps or ratio > 1.0 + clip_eps:  # the bounds of the clip above
        stats[1] += 1.0
    if clipped < unclipped:  # the clipped term is strictly smaller: active, constant in theta
        stats[4] += clipped
        return 0.0
    stats[4] += unclipped
    return -unclipped / B


@njit(**_JIT)
def _policy_term(logp, logp_old, adv, clip_eps, obj, B, stats):
    """One sample of the policy objective ``obj`` (losses.py's formulas): adds to the sums in stats
    (approx_kl's (r - 1) - log r in stats[0], the term L sums in stats[4]), returns dL/dlogp.
    Surrogate and KL penalty: r A, dL/dlogp = -r A / B (the penalty's own gradient is the caller's);
    the plain policy gradient: log pi A, dL/dlogp = -A / B."""
    if obj == OBJ_CLIP:
        return _clip_term(logp, logp_old, adv, clip_eps, B, stats)
    log_ratio = logp - logp_old
    stats[0] += math.expm1(log_ratio) - log_ratio
    if obj == OBJ_PG:
        stats[4] += logp * adv
        return -adv / B
    ratio_adv = math.exp(log_ratio) * adv if adv != 0.0 else 0.0
    stats[4] += ratio_adv
    return -ratio_adv / B


@njit(**_JIT)
def _finish_stats(stats, ent_coef, vf_coef, B, obj, beta):
    """Sums to means; the KL penalty adds beta mean(KL) (stats[7]) to the policy loss."""
    stats[0] /= B
    stats[1] /= B
    stats[4] = -stats[4] / B
    if obj == OBJ_KL:
        stats[7] /= B
        stats[4] += beta * stats[7]
    stats[6] /= B
    stats[3] = stats[4] + vf_coef * stats[5] - ent_coef * stats[6]


@njit(**_JIT, inline="always")
def _log_softmax_row(z, i, temperature, lp, p):
    """lp = log softmax(z[i] / T) and p = exp(lp), (n,) float64 each. Each shifted logit is held at
    the lowest finite float, as Categorical holds a row whose logits span past the float range."""
    n = z.shape[1]
    zmax = -np.inf
    for j in range(n):
        lp[j] = z[i, j] / temperature if temperature != 1.0 else z[i, j]
        zmax = max(zmax, lp[j])
    s = 0.0
    for j in range(n):
        lp[j] = max(lp[j] - zmax, _LOWEST)
        p[j] = math.exp(lp[j])
        s += p[j]
    lse = math.log(s)
    for j in range(n):
        lp[j] -= lse
        p[j] /= s


@njit(**_JIT)
def _categorical_update(a_Ws, a_bs, c_Ws, c_bs, a_gWs, a_gbs, c_gWs, c_gbs, obs, actions, logp_old, adv,
                        returns, values_old, act, temperature, clip_eps, ent_coef, vf_coef, vclip, normalize,
                        obj, beta, dist_old, dfeat, stats):
    """Whole minibatch, Categorical policy: gradients into a_g*/c_g*, stats (N_STATS,) float64.
    ``obj``: the policy objective's code; for OBJ_KL, dist_old (B, n) holds pi_old's logits and
    beta the penalty's coefficient (else dist_old is never read). ``obs`` is the networks' input (a
    shared trunk's features); ``dfeat`` (B, F), zeroed, gets dL/d obs added (for the trunk's backward),
    or is (0, 0) and not written (separate networks).

    Returns -1, or the first sample index whose action is outside [0, n) (nothing then computed)."""
    B = obs.shape[0]
    ha = _mlp_forward(obs, a_Ws, a_bs, act)
    hc = _mlp_forward(obs, c_Ws, c_bs, act)
    logits = ha[len(ha) - 1]
    n = logits.shape[1]
    for i in range(B):
        if actions[i] < 0 or actions[i] >= n:
            return i
    A = _normalized(adv, normalize)
    stats[:] = 0
    dlogits = np.empty((B, n), logits.dtype)
    lp = np.empty(n, np.float64)  # log p of the current sample
    p = np.empty(n, np.float64)
    lq = np.empty(n, np.float64)  # log p_old, p_old (KL penalty)
    q = np.empty(n, np.float64)
    dent = -ent_coef / B
    dkl = beta / B
    for i in range(B):
        _log_softmax_row(logits, i, temperature, lp, p)
        H = 0.0
        for j in range(n):
            H -= p[j] * lp[j]
            x = abs(logits[i, j])  # max |logit| in stats[8] (NaN kept): the caller's overflow checks
            if x > stats[8] or x != x:
                stats[8] = x
        a = actions[i]
        stats[6] += H
        dlogp = _policy_term(lp[a], logp_old[i], A[i], clip_eps, obj, B, stats)
        # d log p_a / dz = onehot(a) - p;  dH/dz = -p (log p + H);  dz/dlogits = 1 / T
        for j in range(n):
            g = dlogp * ((1.0 if j == a else 0.0) - p[j]) - dent * p[j] * (lp[j] + H)
            dlogits[i, j] = g / temperature
        if obj == OBJ_KL:  # KL(p_old || p) = sum_j q_j (log q_j - log p_j); d/dz_j = p_j - q_j
            _log_softmax_row(dist_old, i, temperature, lq, q)
            kl = 0.0
            for j in range(n):
                kl += q[j] * (lq[j] - lp[j])
            stats[7] += kl
            for j in range(n):
                dlogits[i, j] += dkl * (p[j] - q[j]) / temperature
    dvalues = np.empty((B, 1), logits.dtype)
    _value_terms(hc[len(hc) - 1], returns, values_old, vclip, vf_coef, dvalues, stats)
    _finish_stats(stats, ent_coef, vf_coef, B, obj, beta)
    _mlp_backward(dlogits, ha, a_Ws, a_gWs, a_gbs, act, dfeat)
    _mlp_backward(dvalues, hc, c_Ws, c_gWs, c_gbs, act, dfeat)
    return -1


@njit(**_JIT)
def _gaussian_update(a_Ws, a_bs, c_Ws, c_bs, a_gWs, a_gbs, c_gWs, c_gbs, log_std, g_log_std, obs, actions,
                     logp_old, adv, returns, values_old, act, log_std_min, log_std_max, clip_eps, ent_coef,
                     vf_coef, vclip, normalize, obj, beta, dist_old, dfeat, stats):
    """Whole minibatch, diagonal Gaussian with state-independent log_std clamped to
    [log_std_min, log_std_max] (zero gradient where the clamp is active). ``obj``, ``beta``, ``dfeat``:
    as for :func:`_categorical_update`; dist_old (B, 2d) holds pi_old's [mean, log_std]. Returns -1."""
    B = obs.shape[0]
    ha = _mlp_forward(obs, a_Ws, a_bs, act)
    hc = _mlp_forward(obs, c_Ws, c_bs, act)
    mean = ha[len(ha) - 1]
    d = mean.shape[1]
    A = _normalized(adv, normalize)
    stats[:] = 0
    ls = np.empty(d, np.float64)
    std = np.empty(d, np.float64)
    H = 0.0
    for k in range(d):
        ls[k] = min(max(np.float64(log_std[k]), log_std_min), log_std_max)
        std[k] = math.exp(ls[k])
        H += ls[k] + 0.5 * (1.0 + LOG_2PI)
    gls = np.zeros(d, np.float64)
    dmean = np.empty((B, d), mean.dtype)
    dkl = beta / B
    for i in range(B):
        logp = 0.0
        for k in range(d):
            u = (actions[i, k] - mean[i, k]) / std[k]
            logp += -0.5 * u * u - ls[k] - 0.5 * LOG_2PI
        stats[6] += H
        dlogp = _policy_term(logp, logp_old[i], A[i], clip_eps, obj, B, stats)
        # d log p / d mu = u / sigma;  d log p / d log sigma = u^2 - 1;  dH / d log sigma = 1
        for k in range(d):
            u = (actions[i, k] - mean[i, k]) / std[k]
            dmean[i, k] = dlogp * u / std[k]
            gls[k] += dlogp * (u * u - 1.0) - ent_coef / B
        if obj == OBJ_KL:
            # KL(old || new) = sum_k [log s - log s_old + (s_old^2 + (m_old - m)^2) / (2 s^2) - 1/2];
            # d/dm = (m - m_old) / s^2;  d/dlog s = 1 - (s_old^2 + (m_old - m)^2) / s^2
            kl = 0.0
            for k in range(d):
                var = std[k] * std[k]
                s_old = math.exp(np.float64(dist_old[i, d + k]))
                diff = np.float64(dist_old[i, k]) - mean[i, k]
                t = (s_old * s_old + diff * diff) / var
                kl += ls[k] - dist_old[i, d + k] + 0.5 * t - 0.5
                dmean[i, k] += dkl * -diff / var
                gls[k] += dkl * (1.0 - t)
            stats[7] += kl
    for k in range(d):
        inside = log_std[k] >= log_std_min and log_std[k] <= log_std_max
        g_log_std[k] = gls[k] if inside else 0.0
    dvalues = np.empty((B, 1), mean.dtype)
    _value_terms(hc[len(hc) - 1], returns, values_old, vclip, vf_coef, dvalues, stats)
    _finish_stats(stats, ent_coef, vf_coef, B, obj, beta)
    _mlp_backward(dmean, ha, a_Ws, a_gWs, a_gbs, act, dfeat)
    _mlp_backward(dvalues, hc, c_Ws, c_gWs, c_gbs, act, dfeat)
    return -1


@njit(**_JIT)
def _trunk_backward(dfeat, hs, Ws, gWs, gbs, act):
    """A shared trunk's gradients from dL/d(its output) ``dfeat`` (B, F), overwritten: through the
    output's activation, then :func:`_mlp_backward` over its layers ([x, h_1, ..., h_L] from
    :func:`_trunk_forward`)."""
    _act_back(dfeat, hs[len(hs) - 1], act)
    _mlp_backward(dfeat, hs, Ws, gWs, gbs, act, np.empty((0, 0), dfeat.dtype))


@njit(**_JIT)
def _categorical_update_shared(t_Ws, t_bs, t_gWs, t_gbs, a_Ws, a_bs, c_Ws, c_bs, a_gWs, a_gbs, c_gWs, c_gbs, obs,
                               actions, logp_old, adv, returns, values_old, act, temperature, clip_eps, ent_coef,
                               vf_coef, vclip, normalize, obj, beta, dist_old, dfeat, stats):
    """:func:`_categorical_update` on a shared trunk's features (the trunk run once, its gradients into
    t_g* from both heads'); dfeat (B, F) is scratch."""
    ht = _trunk_forward(obs, t_Ws, t_bs, act)
    dfeat[:] = 0
    bad = _categorical_update(a_Ws, a_bs, c_Ws, c_bs, a_gWs, a_gbs, c_gWs, c_gbs, ht[len(ht) - 1], actions,
                              logp_old, adv, returns, values_old, act, temperature, clip_eps, ent_coef, vf_coef,
                              vclip, normalize, obj, beta, dist_old, dfeat, stats)
    if bad >= 0:
        return bad
    _trunk_backward(dfeat, ht, t_Ws, t_gWs, t_gbs, act)
    return -1


@njit(**_JIT)
def _gaussian_update_shared(t_Ws, t_bs, t_gWs, t_gbs, a_Ws, a_bs, c_Ws, c_bs, a_gWs, a_gbs, c_gWs, c_gbs, log_std,
                            g_log_std, obs, actions, logp_old, adv, returns, values_old, act, log_std_min,
                            log_std_max, clip_eps, ent_coef, vf_coef, vclip, normalize, obj, beta, dist_old, dfeat,
                            stats):
    """:func:`_gaussian_update` on a shared trunk's features, as :func:`_categorical_update_shared`."""
    ht = _trunk_forward(obs, t_Ws, t_bs, act)
    dfeat[:] = 0
    r = _gaussian_update(a_Ws, a_bs, c_Ws, c_bs, a_gWs, a_gbs, c_gWs, c_gbs, log_std, g_log_std, ht[len(ht) - 1],
                         actions, logp_old, adv, returns, values_old, act, log_std_min, log_std_max, clip_eps,
                         ent_coef, vf_coef, vclip, normalize, obj, beta, dist_old, dfeat, stats)
    _trunk_backward(dfeat, ht, t_Ws, t_gWs, t_gbs, act)
    return r


# ---------------------------------------------------------------- clip_grad_norm + Adam
@njit(**_JIT)
def _sum_squares(g):
    """sum(g^2) accumulated in float64 (reassociated: vectorised, deterministic on one machine)."""
    s = 0.0
    for i in range(g.shape[0]):
        s += np.float64(g[i]) * np.float64(g[i])
    return s


@njit(**_JIT_EXACT)
def _clip_adam(params, offsets, g, m, v, sc, max_norm, limit):
    """Global-norm clip of the flat gradient g, then Adam on every parameter (1-D views), in place.

    sc holds the scalars in the arrays' dtype, as numpy rounds Python floats (NEP 50):
    [b1, 1 - b1, b2, 1 - b2, c2, eps, lr / c1, scratch]. Returns the norm before clipping; when it is not
    finite, or past ``limit`` after clipping (minippo.optim.step_norm_limit: its squares may overflow
    the dtype), nothing is written. Each update line is numpy's (minippo.optim.Adam.step), same order."""
    norm = math.sqrt(_sum_squares(g))
    if not math.isfinite(norm) or (max_norm if max_norm > 0 and norm > max_norm else norm) > limit:
        return norm
    if max_norm > 0 and norm > max_norm:
        sc[7] = max_norm / (norm + 1e-12)  # rounded to the dtype by the store, as numpy would
        scale = sc[7]
        for i in range(g.shape[0]):
            g[i] *= scale
    b1, omb1, b2, omb2, c2, eps, lr_c1 = sc[0], sc[1], sc[2], sc[3], sc[4], sc[5], sc[6]
    for k in range(len(params)):
        p = params[k]
        n = p.shape[0]
        # views, so that the loop index is the range's (known >= 0: no negative-index wraparound
        # code, which would stop the loop from vectorising; measured 25 -> 6 us for 9k parameters)
        gk, mk, vk = g[offsets[k]:offsets[k] + n], m[offsets[k]:offsets[k] + n], v[offsets[k]:offsets[k] + n]
        for j in range(n):
            gj = gk[j]
            mj = mk[j] * b1
            mj = mj + omb1 * gj
            mk[j] = mj
            vj = vk[j] * b2
            vj = vj + omb2 * (gj * gj)
            vk[j] = vj
            den = np.sqrt(vj / c2) + eps
            p[j] = p[j] - (mj / den) * lr_c1
    return norm


@njit(**_JIT_EXACT)
def _beyond(a, bound):
    """The first flat index i * w + j of a (B, w) with not |a[i, j]| <= bound[j] (NaN, inf, or past the
    bound), or -1: pi_old's dist params checked in one pass (a -inf logit, an old log_std past the
    dtype's range), where numpy's isfinite and abs took ~5 us per minibatch."""
    B, w = a.shape
    for i in range(B):
        for j in range(w):
            if not abs(a[i, j]) <= bound[j]:
                return i * w + j
    return -1


# ---------------------------------------------------------------- Python side
class FusedUpdate:
    """The two fused calls of a minibatch step, bound to one policy, its Adam and a config.

    Built by :func:`make` (which returns None when the configuration is not supported). Holds one
    flat gradient vector laid out like ``Adam._m`` (``grads()`` gives per-parameter views of it)
    and the parameter tuples the kernels take; rebuild it when parameter arrays are rebound.
    """

    def __init__(self, policy: Any, optimizer: Any, config: Any, dt: np.dtype, beta: float = 0.0) -> None:
        self.policy, self.optimizer, self.config, self.dt = policy, optimizer, config, dt
        self.obj = OBJECTIVES[config.objective]
        self.beta = real("beta", beta, 0.0) if self.obj == OBJ_KL else 0.0  # as kl_penalty_objective checks it
        self._no_old = np.empty((0, 0), dt)  # dist_old for the objectives that do not read it
        self._no_dfeat = np.empty((0, 0), dt)  # separate networks: no features' gradient
        params = policy.params
        self.discrete = policy.discrete
        self.act = {"tanh": ACT_TANH_F32 if dt is _F32 else ACT_TANH, "relu": ACT_RELU}[policy.activation]
        _prepare(dt)  # the heads' SLP-vectorised layer, before the update kernel is compiled
        self.g = np.zeros(optimizer._m.shape, dt)
        slices = optimizer._slices
        self._grads = {k: self.g[sl].reshape(shape) for k, (sl, shape) in slices.items()}
        trunk = policy.trunk
        nets = {"actor": policy.actor.n_layers, "critic": policy.critic.n_layers}
        if trunk is not None:
            nets["trunk"] = trunk.n_layers
        tuples = {}
        for prefix, n in nets.items():
            for name, src in (("Ws", params), ("bs", params), ("gWs", self._grads), ("gbs", self._grads)):
                letter = name[-2]
                tuples[prefix[0], name] = tuple(src[f"{prefix}.{letter}{i}"] for i in range(n))
        # What the kernels take first: (the trunk's Ws, bs, gWs, gbs,) the actor's and the critic's Ws, bs,
        # then their gWs, gbs
        heads = tuple(tuples[p, name] for p in "ac" for name in ("Ws", "bs")) + \
            tuple(tuples[p, name] for p in "ac" for name in ("gWs", "gbs"))
        self.nets = heads if trunk is None else tuple(tuples["t", name] for name in ("Ws", "bs", "gWs", "gbs")) + heads
        self.feat = 0 if trunk is None else trunk.sizes[-1]
        self.flat_params = tuple(params[k].reshape(-1) for k in slices)
        self.offsets = np.array([sl.start for sl, _ in slices.values()], np.int64)
        self.sc = np.zeros(8, dt)
        self.norm_limit = step_norm_limit(dt)  # (the largest norm, after clipping, that a step in dt takes)
        self.stats = np.zeros(N_STATS, np.float64)
        self.vclip_on = bool(config.clip_vloss)
        self.vclip = np.zeros(1, dt)
        # |dist_old| bounds per column: finite logits or means, log-stds DiagGaussian takes
        top, n = float(np.finfo(dt).max), policy.act_dim
        self.old_bound = np.array([top] * n if self.discrete else [top] * n + [log_std_limit(dt)] * n)

    def grads(self) -> dict[str, np.ndarray]:
        """The gradients of the last :meth:`loss_and_grads`, keyed like ``policy.params``, each of its
        parameter's shape (views)."""
        return self._grads

    def loss_and_grads(self, batch: dict[str, np.ndarray], clip_eps: float, ent_coef: float) -> dict[str, float]:
        """Stats of ``minippo.ppo.loss_and_grads`` for the config's objective (and, for kl_penalty, the
        beta this step was built with); gradients kept in ``self.g``. batch: B samples, as that function
        takes them (obs (B, obs_dim), actions (B,) or (B, d), dist_old (B, n) or (B, 2d), the rest (B,))."""
        dt, pol, cfg = self.dt, self.policy, self.config
        _check_batch(batch, cfg.objective, self.discrete, self.vclip_on)
        obs = np.ascontiguousarray(batch["obs"], dt)
        B = obs.shape[0]
        if obs.ndim != 2 or obs.shape[1] != pol.obs_dim or B < 1:
            raise ValueError(f"obs must have shape (B, {pol.obs_dim}) with B >= 1, got {obs.shape}")
        vec = [np.ascontiguousarray(batch[k], dt) for k in ("logp_old", "advantages", "returns", "values_old")]
        if any(a.shape != (B,) for a in vec):
            raise ValueError(f"logp_old, advantages, returns, values_old must have shape ({B},)")
        if self.obj == OBJ_CLIP or self.vclip_on:  # the numpy path's checks and messages
            clip_eps = real("clip_eps", clip_eps, 0.0, low_open=True)
        ent_coef = real("coef", ent_coef, 0.0)  # (losses.entropy_bonus's name for it)
        real("config.vf_coef", cfg.vf_coef, 0.0)
        if cfg.normalize_advantages and B < 2:
            raise ValueError("advantage normalisation needs a minibatch of at least 2 samples")
        logp_old, adv, returns, values_old = vec
        dist_old = self._no_old
        if self.obj == OBJ_KL:
            dist_old = np.ascontiguousarray(batch["dist_old"], dt)
            width = pol.act_dim if self.discrete else 2 * pol.act_dim
            if dist_old.shape != (B, width):
                raise ValueError(f"dist_old must have shape ({B}, {width}) "
                                 f"({'logits' if self.discrete else '[mean, log_std]'}), got {dist_old.shape}")
            # what pi_old's distribution refuses on the numpy path (the kernel held a -inf logit, and
            # took an old log_std past the dtype's range in float64)
            if _beyond(dist_old, self.old_bound) >= 0:
                finite(dist_old=dist_old)
                log_std_in_range(dist_old[:, pol.act_dim:])
        vclip = self.vclip
        vclip[0] = clip_eps if self.vclip_on else -1.0  # rounded to the dtype, as numpy rounds it
        st = self.stats
        dfeat = self._no_dfeat if not self.feat else np.empty((B, self.feat), dt)  # (the kernel zeroes it)
        shared = bool(self.feat)
        if self.discrete:
            actions = np.ascontiguousarray(batch["actions"])
            if actions.shape != (B,) or actions.dtype.kind not in "iufb":
                raise ValueError(f"actions must be integers of shape ({B},), got {actions.dtype} {actions.shape}")
            if actions.dtype.kind in "iu":
                index = actions.astype(np.int64, copy=False)  # the range is checked in the kernel
            else:  # whole numbers in another dtype, as Categorical takes them (2.0 is action 2)
                index = action_indices(actions, pol.act_dim)
            bad = (_categorical_update_shared if shared else _categorical_update)(
                *self.nets, obs, index, logp_old, adv, returns, values_old,
                self.act, pol.temperature, float(clip_eps), float(ent_coef), float(cfg.vf_coef), vclip,
                bool(cfg.normalize_advantages), self.obj, self.beta, dist_old, dfeat, st,
            )
            if bad >= 0:
                raise ValueError(f"actions must be integers in [0, {pol.act_dim}), got {actions[bad]}")
        else:
            from minippo.policy import LOG_STD_MAX, LOG_STD_MIN

            actions = np.ascontiguousarray(batch["actions"], dt)
            if actions.shape != (B, pol.act_dim):
                raise ValueError(f"actions must have shape ({B}, {pol.act_dim}), got {actions.shape}")
            (_gaussian_update_shared if shared else _gaussian_update)(
                *self.nets, pol.params["log_std"], self._grads["log_std"], obs, actions, logp_old, adv, returns,
                values_old, self.act, LOG_STD_MIN, LOG_STD_MAX, float(clip_eps), float(ent_coef),
                float(cfg.vf_coef), vclip, bool(cfg.normalize_advantages), self.obj, self.beta, dist_old, dfeat, st,
            )
        if not (math.isfinite(st[3]) and math.isfinite(st[0])):  # (an inf log_old, or action, can leave
            _raise_non_finite(batch, pol.params)  # the loss finite, not approx_kl)
        if self.discrete:
            _check_logits(st[8], pol.temperature, dt)
        out = {"approx_kl": float(st[0])}  # the numpy path's keys, in its order (progress.csv's columns)
        if self.obj == OBJ_CLIP:
            out["clipfrac"] = float(st[1])
        elif self.obj == OBJ_KL:
            out.update(kl=float(st[7]), beta=float(self.beta))
        if self.vclip_on:
            out["vclipfrac"] = float(st[2])
        out.update(loss=float(st[3]), policy_loss=float(st[4]), value_loss=float(st[5]), entropy=float(st[6]))
        return out

    def step(self, lr: float, max_grad_norm: float) -> float:
        """clip_grad_norm(max_grad_norm) (skipped when <= 0) + one Adam step at ``lr``, in place, then
        ``policy.clamp_log_std()``.

        Returns the gradient norm before clipping (NaN when not clipping, as the trainer logs it).
        Raises FloatingPointError, with nothing updated, where Adam.step does (not finite, or too large for
        the dtype: minippo.optim.check_step_norm)."""
        lr = real("lr", lr, 0.0)  # as Adam.step and NumpyStep.step check them (NaN > 0 is False: it
        max_grad_norm = real("max_grad_norm", max_grad_norm)  # skipped clipping; a NaN lr wrote NaN)
        opt = self.optimizer
        b1, b2 = opt.betas
        t = opt.t + 1
        c1, c2 = 1.0 - b1**t, 1.0 - b2**t
        self.sc[:7] = (b1, 1.0 - b1, b2, 1.0 - b2, c2, opt.eps, lr / c1)
        # t counted before the moments move, as Adam.step does: a Ctrl-C landing as the kernel returns
        # leaves no moments with a step count that has not counted them (load_state_dict refuses t = 0 then)
        opt.t = t
        norm = _clip_adam(self.flat_params, self.offsets, self.g, opt._m, opt._v, self.sc, max(max_grad_norm, 0.0),
                          self.norm_limit)
        if not norm <= self.norm_limit:  # NaN, inf, or a norm that only clipping brings under the limit
            try:
                check_step_norm(norm, max_grad_norm, self.g.dtype)  # (the kernel's own test, with its message)
            except FloatingPointError:
                opt.t = t - 1  # (nothing was updated)
                raise
        self.policy.clamp_log_std()  # as NumpyStep.step does
        return norm if max_grad_norm > 0 else math.nan


def _check_batch(batch: dict[str, np.ndarray], objective: str, discrete: bool, vclip: bool) -> None:
    """The keys and dtypes :func:`minippo.ppo.loss_and_grads` refuses (the kernels' arguments are cast to
    the policy's dtype: an int, bool or complex field, or a list, went through as floats)."""
    check_batch_keys(batch, objective)
    floats = ("logp_old", "advantages", "returns", *(("values_old",) if vclip else ()),
              *(("dist_old",) if objective == "kl_penalty" else ()))
    for k in (*floats, "obs", *(() if discrete else ("actions",))):
        a = batch[k]
        if not isinstance(a, np.ndarray) or a.dtype.kind not in ("f" if k in floats else "biuf"):
            kind = "a float" if k in floats else "a real"
            got = f"dtype {a.dtype}" if isinstance(a, np.ndarray) else type(a).__name__
            raise TypeError(f"batch[{k!r}] must be {kind} numpy array, got {got}")


def _check_logits(max_abs: float, temperature: float, dtype: np.dtype) -> None:
    """What numpy's Categorical refuses, from the largest |logit| of the minibatch (the kernel's
    stats[8], in the policy's dtype): NaN or inf logits, and logits / temperature overflowing the dtype
    (say logits 10 at T = 1e-38 in float32; the kernel divides in float64 and trained on)."""
    if not math.isfinite(max_abs):
        raise FloatingPointError("logits contains NaN or inf")
    if temperature < 1.0:
        # numpy's division, in the dtype, without its warnings (a T that is 0 in float32 divides by zero)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            z = np.array(max_abs, dtype) / temperature
        if not np.isfinite(z):
            raise FloatingPointError("logits / temperature contains NaN or inf")


def _raise_non_finite(batch: dict[str, np.ndarray], params: dict[str, np.ndarray]) -> None:
    """On a non-finite loss, name the first NaN/inf input, then parameter (error path only; the numpy
    path's checks name what they compute from it: logits, adv, values; ``dist_old`` was checked before
    the kernel ran). Returns when every input is finite (e.g. a ratio overflowed): the trainer then
    reports the loss."""
    for name in ("obs", "actions", "logp_old", "advantages", "returns", "values_old"):
        if not bool(np.isfinite(batch[name]).all()):
            raise FloatingPointError(f"{name} contains NaN or inf")
    for name, p in params.items():
        if not bool(np.isfinite(p).all()):
            raise FloatingPointError(f"parameter {name} contains NaN or inf")


def make(
    policy: Any, optimizer: Any, config: Any, only_if_faster: bool = True, beta: float | None = None
) -> FusedUpdate | None:
    """A :class:`FusedUpdate` when the fused kernels support this setup, else None (numpy path).
    ``beta``: the KL penalty's coefficient for this update (objective "kl_penalty"; default
    ``config.kl_beta``).

    Supported: every objective, an ActorCritic whose layout ``policy.fused_layers()`` accepts (separate
    actor and critic MLPs or a shared trunk, its output activated, under two heads; tanh or relu;
    Categorical or diagonal Gaussian; not a subclass), float32 or float64 C-contiguous writable numpy
    parameters, and an Adam itself (not a subclass) over exactly ``policy.params`` (its flat moments
    in the same dtype, writable). ``only_if_faster`` also
    declines float64 tanh: libm tanh does not vectorise, so there the fused step is slower than
    numpy's (measured 1.6 ms against 1.1 ms per B = 256 minibatch of a 64-64 Gaussian policy)."""
    if config.objective not in OBJECTIVES:
        return None
    if getattr(policy, "fused_layers", lambda: None)() is None:  # (an ActorCritic the kernels can read)
        return None
    params = policy.params
    first = next(iter(params.values()))
    dt = first.dtype if isinstance(first, np.ndarray) else None
    if dt not in (_F32, _F64):
        return None
    if not all(type(a) is np.ndarray and a.dtype == dt and a.flags.c_contiguous for a in params.values()):
        return None
    if getattr(optimizer, "params", None) is not params or list(getattr(optimizer, "_slices", {})) != list(params):
        return None
    # Adam itself (the kernels compute what its step does: a subclass's override would be bypassed)
    if type(optimizer) is not Adam:
        return None
    if not all(a.flags.writeable for a in (*params.values(), optimizer._m, optimizer._v)):
        return None  # (the array path then raises: Adam.step names a read-only parameter before writing)
    # every parameter of the shape Adam laid out for it (the kernels update n = its size from Adam's offset,
    # unchecked: a log_std rebound longer would be read and written past its range)
    if any(params[k].shape != shape for k, (_, shape) in optimizer._slices.items()):
        return None
    for a in (optimizer._m, optimizer._v):
        if type(a) is not np.ndarray or a.dtype != dt or not a.flags.c_contiguous or a.ndim != 1:
            return None
    dt = _F32 if dt == _F32 else _F64
    if only_if_faster and dt is _F64 and policy.activation == "tanh":
        return None
    return FusedUpdate(policy, optimizer, config, dt, config.kl_beta if beta is None else beta)
