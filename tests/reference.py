"""Plain, obviously correct versions of the non-kernel pieces, for tests only.

Written from the formulas, not from the library: loops over samples and actions, scalars from
the ``math`` module, no vectorisation tricks and no numerical-stability rewrites beyond a max
shift in the softmax. Each function returns Python floats (or lists of floats) so that the
comparison with the library never shares an array code path.
"""

from __future__ import annotations

import math


# ---------------------------------------------------------------- softmax with temperature
def softmax_row(logits, temperature=1.0):
    """p_j = exp(l_j / T) / sum_k exp(l_k / T) for one row."""
    z = [float(v) / temperature for v in logits]
    m = max(z)
    e = [math.exp(v - m) for v in z]
    s = sum(e)
    return [v / s for v in e]


def categorical_log_prob(logits, actions, temperature=1.0):
    out = []
    for row, a in zip(logits, actions, strict=True):
        p = softmax_row(row, temperature)
        out.append(math.log(p[int(a)]))
    return out


def categorical_entropy(logits, temperature=1.0):
    out = []
    for row in logits:
        p = softmax_row(row, temperature)
        out.append(-sum(pj * math.log(pj) for pj in p if pj > 0))
    return out


def categorical_kl(logits_p, logits_q, temperature_p=1.0, temperature_q=1.0):
    """KL(p || q) = sum_j p_j (log p_j - log q_j), per row."""
    out = []
    for rp, rq in zip(logits_p, logits_q, strict=True):
        p = softmax_row(rp, temperature_p)
        q = softmax_row(rq, temperature_q)
        out.append(sum(pj * (math.log(pj) - math.log(qj)) for pj, qj in zip(p, q, strict=True)))
    return out


# ---------------------------------------------------------------- diagonal Gaussian
def gaussian_log_prob(mean, log_std, actions):
    """sum_i log N(a_i; mu_i, sigma_i^2), per row; log_std is per row (same shape as mean)."""
    out = []
    for mu_row, ls_row, a_row in zip(mean, log_std, actions, strict=True):
        total = 0.0
        for mu, ls, a in zip(mu_row, ls_row, a_row, strict=True):
            sigma = math.exp(ls)
            density = math.exp(-((a - mu) ** 2) / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))
            total += math.log(density)
        out.append(total)
    return out


def gaussian_entropy(log_std):
    """sum_i 0.5 * log(2 pi e sigma_i^2), per row."""
    return [
        sum(0.5 * math.log(2 * math.pi * math.e * math.exp(2 * ls)) for ls in row)
        for row in log_std
    ]


def gaussian_kl(mean_p, log_std_p, mean_q, log_std_q):
    """KL(N_p || N_q) summed over dimensions, per row (textbook univariate formula)."""
    out = []
    for mp_r, sp_r, mq_r, sq_r in zip(mean_p, log_std_p, mean_q, log_std_q, strict=True):
        total = 0.0
        for mp, lsp, mq, lsq in zip(mp_r, sp_r, mq_r, sq_r, strict=True):
            sp, sq = math.exp(lsp), math.exp(lsq)
            total += math.log(sq / sp) + (sp**2 + (mp - mq) ** 2) / (2 * sq**2) - 0.5
        out.append(total)
    return out


# ---------------------------------------------------------------- policy objectives (as losses)
def clip_loss(logp, logp_old, adv, clip_eps):
    """-(1/B) sum_t min(r_t A_t, clip(r_t, 1-eps, 1+eps) A_t)."""
    total = 0.0
    for lp, lo, a in zip(logp, logp_old, adv, strict=True):
        r = math.exp(lp - lo)
        r_clip = min(max(r, 1 - clip_eps), 1 + clip_eps)
        total += min(r * a, r_clip * a)
    return -total / len(logp)


def surrogate_loss(logp, logp_old, adv):
    total = 0.0
    for lp, lo, a in zip(logp, logp_old, adv, strict=True):
        total += math.exp(lp - lo) * a
    return -total / len(logp)


def kl_penalty_loss(logp, logp_old, adv, kl, beta):
    """-(1/B) sum_t [r_t A_t - beta KL_t]."""
    total = 0.0
    for lp, lo, a, k in zip(logp, logp_old, adv, kl, strict=True):
        total += math.exp(lp - lo) * a - beta * k
    return -total / len(logp)


def pg_loss(logp, adv):
    return -sum(lp * a for lp, a in zip(logp, adv, strict=True)) / len(logp)


def approx_kl_k3(logp, logp_old):
    """mean((r - 1) - log r)."""
    total = 0.0
    for lp, lo in zip(logp, logp_old, strict=True):
        r = math.exp(lp - lo)
        total += (r - 1) - (lp - lo)
    return total / len(logp)


def value_loss(values, returns, values_old=None, clip_eps=None):
    """0.5 mean (V - R)^2, or 0.5 mean max((V - R)^2, (V_clip - R)^2)."""
    total = 0.0
    for i, (v, r) in enumerate(zip(values, returns, strict=True)):
        unclipped = (v - r) ** 2
        if clip_eps is None:
            total += unclipped
        else:
            vo = values_old[i]
            v_clip = vo + min(max(v - vo, -clip_eps), clip_eps)
            total += max(unclipped, (v_clip - r) ** 2)
    return 0.5 * total / len(values)


# ---------------------------------------------------------------- Adam
def adam_steps(theta0, grads_seq, lr, beta1, beta2, eps):
    """Scalar Adam, each step written out from the paper (Kingma & Ba, Algorithm 1)."""
    theta, m, v = float(theta0), 0.0, 0.0
    history = []
    for t, g in enumerate(grads_seq, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        theta = theta - lr * m_hat / (math.sqrt(v_hat) + eps)
        history.append(theta)
    return history


def adam_closed_form(theta0, grads_seq, lr, beta1, beta2, eps):
    """Same result, from the closed forms m_t = (1-b1) sum_k b1^{t-k} g_k and the analogue for v."""
    theta = float(theta0)
    history = []
    for t in range(1, len(grads_seq) + 1):
        m = (1 - beta1) * sum(beta1 ** (t - k) * grads_seq[k - 1] for k in range(1, t + 1))
        v = (1 - beta2) * sum(beta2 ** (t - k) * grads_seq[k - 1] ** 2 for k in range(1, t + 1))
        theta -= lr * (m / (1 - beta1**t)) / (math.sqrt(v / (1 - beta2**t)) + eps)
        history.append(theta)
    return history
