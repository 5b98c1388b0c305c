"""The policy-gradient estimators are right in expectation: on small MDPs whose expected gradient can be
computed exactly, the mean of the trainer's gradient over many rollouts matches it: episodic; continuing
with truncations bootstrapped, for every advantage estimator; away from the rollout's policy, through
the importance ratio; and a Gaussian policy, its actions clipped to a Box or not.

The other tests check each piece on a fixed batch (the loss's gradient by finite differences, the
returns against plain loops); this one checks the chain end to end, with the sampling in it: the env
steps, the buffer's time alignment over several episodes and envs, the rewards-to-go, the baseline,
the loss and its backward. A wrong piece there (actions sampled from another distribution than the
one whose log-probability is differentiated, e.g. at another softmax temperature or standard
deviation; advantages a step late, or paired with another env's) passes every fixed-batch test and
still moves the estimator's mean, and this test sees it (each of those, made by hand, fails it: 10 to
55 standard errors off, where the bound is about 4.5).

The oracle is independent of the library's backward pass: dynamic programming over the tabular MDP
with the policy's probabilities (its forward pass, trusted from tests/test_nn.py and
tests/test_distributions.py), differentiated by central finite differences in float64
(minippo.gradcheck.numerical_grads, itself tested in tests/test_gradcheck.py).

What the mean is. The trainer's loss is -mean over the B = N * T steps of logp(a_t|s_t) * A_t (with
advantage normalisation off). With every episode H steps long and T a multiple of H, a rollout holds
N * T / H whole episodes, so E[d loss / d theta] = -g / H with
    g = E[ sum_t grad log pi(a_t|s_t) * (G_t - b(s_t)) ],   G_t = sum_{k>=t} gamma^(k-t) r_k,
and, b not depending on a_t,
    g = sum_t sum_s d_t(s) sum_a grad pi(a|s) Q_t(s, a)
(d_t: the distribution of s_t; Q_t: the expected discounted reward-to-go after taking a in s at t).
For gamma = 1 that is the gradient of the expected return J (the policy gradient theorem, checked
here too); for gamma < 1 it is not the gradient of the discounted return J_gamma = E[sum_t gamma^t r_t],
which weighs step t by gamma^t (the usual estimator drops that factor: Thomas 2014; Nota & Thomas 2020).
The test shows the trainer's mean is the first and, with the same samples, is told apart from the second.

The tolerance. Each of the K rollouts gives one gradient (a mean over its 128 to 512 steps in 32 envs:
close to normal; the rollouts are independent, or nearly: the envs carry on between them). The actor
enters the loss only through the S = 3 states' logits (for the Gaussian, the 3 states' 2-d means and
the 2 log-stds), so every gradient here is a combination of m = 3 (8) fixed directions, whatever the
P = 50 (52) parameters: the samples are compared in those coordinates (that they lie in that span is
asserted too), each a t statistic with K - 1 degrees of freedom against the exact mean. The bound is
the two-sided t quantile at a family-wise false-alarm rate of 1e-4 over the m coordinates
(Bonferroni): 4.47 (4.74). The draws are seeded, so the outcome is fixed; the bound says how unlikely
a failure of a correct estimator was (measured: the largest |t| is 0.41 of its bound).

Other tolerances, and why (float64; u = 2^-53 ~ 1.1e-16):
- The oracle's own check (the policy gradient theorem, gamma = 1): both sides are central differences
  (h = 1e-6) of sums of size |J| <= H max|R| = 8, each rounded ~10 times: noise ~10 u |J| / h <= ~1e-8,
  absolute whatever the gradient's size (truncation ~h^2, 1e-12): atol 1e-8, rtol 0 (was rtol 1e-6,
  which allowed 8e-7 at |g| = 0.8; measured 6.7e-10 here, 1.6e-9 over 300 other policies).
- The samples lie in the basis's span to 1e-6 of their size (coordinates): the basis comes from the same
  finite differences, ~1e-9 relative; a part outside the span would be O(1) (measured 9.3e-9).
- The exact critic (a least-squares solve of 3 equations in 9 unknowns, then the critic's forward):
  backward-stable to a few tens of u of its terms (|V| <= 5.5): atol 1e-13 (was 1e-12; measured 1.8e-15
  here, 1.8e-14 over 300 other critics and policies).
"""

import contextlib
import functools
import math

import numpy as np
import pytest

from minippo.config import PPOConfig
from minippo.gradcheck import numerical_grads
from minippo.ppo import PPO, loss_and_grads

gym = pytest.importorskip("gymnasium")

TABULAR_ID = "minippo-test/TabularMDP-v0"
QUADRATIC_ID = "minippo-test/QuadraticBandit-v0"
CONTINUING_ID = "minippo-test/ContinuingMDP-v0"
BOUNDED_ID = "minippo-test/BoundedBandit-v0"

# A 3-state, 2-action MDP with random transitions, episodes of exactly H steps (terminated, no
# truncation: no bootstrap), states observed one-hot (the time step is not observed: a stationary policy).
S, A, H = 3, 2, 4
P0 = np.array([0.5, 0.3, 0.2])  # start-state distribution
P = np.array([  # P[s, a, s']
    [[0.1, 0.6, 0.3], [0.7, 0.2, 0.1]],
    [[0.3, 0.3, 0.4], [0.0, 0.5, 0.5]],
    [[0.8, 0.1, 0.1], [0.2, 0.2, 0.6]],
])
R = np.array([[1.0, -0.5], [0.0, 2.0], [-1.0, 0.5]])  # R[s, a]

# The Gaussian case: one step from a random one-hot state s, action a in R^2, reward -|a - C[s]|^2
# (bounds far outside where the policy samples, so the env's clipping never acts).
C = np.array([[0.5, -1.0], [1.5, 0.0], [-0.5, 0.8]])
Q0 = np.array([0.2, 0.5, 0.3])


class TabularMDP(gym.Env):
    P, R = P, R

    def __init__(self):
        self.observation_space = gym.spaces.Box(0.0, 1.0, (S,), np.float64)
        self.action_space = gym.spaces.Discrete(A)
        self.s = self.t = 0

    def _obs(self):
        return np.eye(S)[self.s]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.s, self.t = int(self.np_random.choice(S, p=P0)), 0
        return self._obs(), {}

    def step(self, action):
        r = float(self.R[self.s, action])
        self.s = int(self.np_random.choice(S, p=self.P[self.s, action]))
        self.t += 1
        return self._obs(), r, self.t == H, False, {}


class ContinuingMDP(TabularMDP):
    """An MDP without an end (only its TimeLimit, registered with HC steps, truncates it) where what an
    action does is mostly where it leads: action 0 mostly to the rewarding state 0, action 1 mostly to
    the costly state 2, the reward mostly the state's. Its values differ widely by state, so the
    bootstraps carry most of the gradient, and one left out or misplaced moves the mean far."""

    P = np.array([[[0.9, 0.05, 0.05], [0.05, 0.05, 0.9]]] * S)
    R = np.array([[2.0, 2.2], [0.0, 0.2], [-2.0, -1.8]])

    def step(self, action):
        obs, r, _, trunc, info = super().step(action)
        return obs, r, False, trunc, info


class QuadraticBandit(gym.Env):
    def __init__(self):
        self.observation_space = gym.spaces.Box(0.0, 1.0, (S,), np.float64)
        self.action_space = gym.spaces.Box(-100.0, 100.0, (2,), np.float64)
        self.s = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.s = int(self.np_random.choice(S, p=Q0))
        return np.eye(S)[self.s], {}

    def step(self, action):
        r = -float(np.sum((np.asarray(action) - C[self.s]) ** 2))
        return np.eye(S)[self.s], r, True, False, {}


HC = 5  # the continuing MDP's TimeLimit
GAMMA_C = 0.6


class BoundedBandit(QuadraticBandit):
    """The Gaussian bandit with actions bounded to [-1, 1]: the env gets the clipped action (minippo
    clips what it sends), and some targets C lie outside the bounds, so clipping is frequent."""

    def __init__(self):
        super().__init__()
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float64)

    def step(self, action):
        assert np.all(np.abs(action) <= 1.0)  # (what minippo sends: clipped to the space)
        return super().step(action)


def setup_module():
    for env_id, cls, limit in ((TABULAR_ID, TabularMDP, None), (QUADRATIC_ID, QuadraticBandit, None),
                               (CONTINUING_ID, ContinuingMDP, HC), (BOUNDED_ID, BoundedBandit, None)):
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=cls, max_episode_steps=limit)


@functools.cache
def t_bound(alpha: float, df: int) -> float:
    """x with P(|T| > x) = alpha for Student's t with df degrees of freedom (bisection on the tail
    integral of its density, cut at x + 200: for df = 63 the rest is ~1e-90)."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def tail(x: float) -> float:  # (the trapezoid rule, written out: np.trapezoid is numpy >= 2.0 only)
        u, step = np.linspace(x, x + 200.0, 400_001, retstep=True)
        y = c * (1.0 + u * u / df) ** (-(df + 1) / 2)
        return 2.0 * step * float(y.sum() - (y[0] + y[-1]) / 2)

    lo, hi = 0.0, 50.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if tail(mid) > alpha else (lo, mid)
    return (lo + hi) / 2


def actor_keys(policy):
    return [k for k in policy.params if k.startswith("actor.") or k == "log_std"]


@contextlib.contextmanager
def moved(policy, move):
    """The actor parameters plus the offsets ``move`` (a dict like theirs) inside the block; restored
    from copies after it, whatever happens."""
    saved = {k: policy.params[k].copy() for k in move}
    try:
        for k, dk in move.items():
            policy.params[k] += dk
        yield
    finally:
        for k, v in saved.items():
            policy.params[k][...] = v


def fd_gradient(policy, f):
    """d f() / d(every actor parameter) by minippo.gradcheck.numerical_grads (central differences in
    float64, the checker users call), for f a float or an array: f's shape + (P,), the parameters
    flattened in actor_keys order."""
    params = {k: policy.params[k] for k in actor_keys(policy)}
    shape = np.shape(f())
    rows = []
    for j in np.ndindex(shape):
        grads = numerical_grads(lambda j=j: float(np.asarray(f())[j]), params)
        rows.append(np.concatenate([grads[k].ravel() for k in params]))
    return np.array(rows).reshape(shape + (-1,))


def policy_probs(policy):
    """pi(a|s) (S, A) from the policy's own forward pass (log-probabilities of every pair)."""
    obs = np.repeat(np.eye(S), A, axis=0)
    actions = np.tile(np.arange(A), S)
    return np.exp(policy.evaluate(obs, actions)[0]).reshape(S, A)


def discrete_basis(policy):
    """(S, P): per state, the gradient of log pi(0|s) - log pi(1|s) (the logits' difference over the
    temperature). The loss depends on the actor only through the S states' logits, and its derivative
    by each state's two logits sums to 0 (softmax), so every gradient in these tests is a combination of
    these S vectors: P parameters, but S numbers to compare (checked by :func:`coordinates`)."""
    return fd_gradient(policy, lambda: np.log(policy_probs(policy)) @ np.array([1.0, -1.0]))


def gaussian_basis(policy):
    """(2 S + 2, P): the gradients of the S states' 2-d means, and the 2 log_std entries (the last two
    actor entries): the 8 directions every Gaussian gradient here lies in."""
    means = fd_gradient(policy, lambda: policy.forward(np.eye(S))[0].mean).reshape(2 * S, -1)
    return np.vstack([means, np.eye(means.shape[1])[-2:]])


def coordinates(vectors, basis):
    """vectors (..., P) in the basis (m, P) -> (..., m), asserting that they lie in its span: the residual
    below 1e-6 of their size (the basis comes from finite differences, good to ~1e-9 relative; a
    gradient with a part outside it, a backward pass mixing parameters up, would leave an O(1) one)."""
    v = np.atleast_2d(vectors)
    c = np.linalg.lstsq(basis.T, v.T, rcond=None)[0].T
    assert np.abs(v - c @ basis).max() <= 1e-6 * np.abs(v).max()
    return c.reshape(np.shape(vectors)[:-1] + (basis.shape[0],))


def dynamic_programming(pi, gamma):
    """Q_t(s, a) (H, S, A) for the policy pi (S, A), d_t(s) (H, S), and J = sum_t gamma^t E[r_t]."""
    Q = np.zeros((H, S, A))
    v_next = np.zeros(S)
    for t in reversed(range(H)):
        Q[t] = R + gamma * P @ v_next
        v_next = (pi * Q[t]).sum(1)
    d = np.zeros((H, S))
    d[0] = P0
    for t in range(1, H):
        d[t] = np.einsum("s,sa,sap->p", d[t - 1], pi, P)
    return Q, d, float(P0 @ v_next)


def expected_gradients(policy, gamma):
    """(g, grad J_gamma): the estimator's exact mean per episode, and the gradient of the discounted
    return (with gamma = 1 the two are equal), over the actor parameters."""
    Q, d, _ = dynamic_programming(policy_probs(policy), gamma)
    weight = d[:, :, None] * Q  # held at theta: only pi moves in the finite differences
    g = fd_gradient(policy, lambda: float((weight * policy_probs(policy)[None]).sum()))
    grad_j = fd_gradient(policy, lambda: dynamic_programming(policy_probs(policy), gamma)[2])
    return g, grad_j


def sampled_gradients(model, rollouts, valid=None, move=None, minibatches=1):
    """The actor part of the trainer's loss gradient on each of ``rollouts`` fresh rollouts (K, P);
    each rollout's valid-step mask (T, N) appended to the list ``valid`` if given. ``move``: offsets
    added to the actor's parameters for the gradient only (the rollouts act with pi_old; the gradient is
    taken at theta = theta_old + move). ``minibatches`` > 1: the rollout's gradient is the size-weighted
    mean of its shuffled minibatches' (each loss a mean over its samples: the whole rollout's mean
    gradient again, through the permute-and-slice path instead of the whole-rollout batch)."""
    cfg = model.config
    keys = actor_keys(model.policy)
    n = cfg.n_envs * cfg.n_steps
    out = []
    for _ in range(rollouts):
        model.collect_rollout()
        if valid is not None:
            valid.append(model.buffer.valid_host.copy())
        total, size = 0.0, 0
        with moved(model.policy, move or {}):
            for batch in model.buffer.minibatches(n // minibatches, model.rng):
                _, grads = loss_and_grads(model.policy, batch, cfg)
                b = batch["advantages"].shape[0]
                total = total + b * np.concatenate([np.asarray(grads[k]).ravel() for k in keys])
                size += b
        out.append(total / size)
    return np.array(out)


def t_statistics(samples, expected, basis):
    """Per basis direction: (mean of the samples' coordinates - expected's) / its standard error."""
    c, e = coordinates(samples, basis), coordinates(expected, basis)
    se = c.std(axis=0, ddof=1) / math.sqrt(c.shape[0])
    assert np.all(se > 0)
    return (c.mean(axis=0) - e) / se


def check_mean(samples, expected, basis):
    """Assert that the samples (K, P) have the mean ``expected`` ((P,) or per sample (K, P)): every
    coordinate's t statistic inside the Bonferroni bound over the basis's m directions."""
    expected = np.broadcast_to(expected, samples.shape)
    t = t_statistics(samples - expected, np.zeros(samples.shape[1]), basis)
    bound = t_bound(FAMILY_ALPHA / basis.shape[0], samples.shape[0] - 1)
    assert np.abs(t).max() < bound, (np.abs(t).max(), bound)
    return bound


def far_from(samples, wrong, basis):
    """max |t| of the samples against the mean ``wrong`` (the test's power: this must exceed the bound)."""
    return np.abs(t_statistics(samples, wrong, basis)).max()


ROLLOUTS = 64
FAMILY_ALPHA = 1e-4


def make(env_id, **kw):
    cfg = dict(env_id=env_id, n_envs=32, n_steps=4 * H, batch_size=32 * 4 * H, n_epochs=1, hidden=(8,),
               dtype="float64", normalize_advantages=False, vf_coef=0.0, ent_coef=0.0, max_grad_norm=0.0,
               seed=3, autoreset="same_step")
    cfg.update(kw)
    model = PPO(PPOConfig(**cfg))
    # Away from the init, whose near-zero last layer (gain 0.01) makes the policy almost uniform in every
    # state: there, sampling at the wrong temperature would draw nearly the same actions and go unseen.
    rng = np.random.default_rng(11)
    for k in actor_keys(model.policy):
        if k != "log_std":
            model.policy.params[k][...] = rng.normal(0.0, 1.0, model.policy.params[k].shape)
    return model


@pytest.mark.parametrize(
    "objective,advantage,backend,gamma",
    [("reinforce", "mc", b, g) for b in ("numpy", "numba") for g in (1.0, 0.9)]
    + [(o, "gae", "numpy", g) for o in ("surrogate", "clip", "kl_penalty") for g in (1.0, 0.9)],
)
def test_discrete_estimator_mean_is_the_plain_policy_gradient(objective, advantage, backend, gamma, request):
    # reinforce: G_t - V(s_t), V an untrained critic (a baseline far from V^pi: unbiased still); the PPO
    # objectives at the rollout's own policy (ratio 1, KL 0: the first minibatch of an update), GAE with
    # lambda = 1 (G_t - V(s_t) again): the same samples as reinforce's, so these three check the code
    # path (each objective's gradient at ratio 1), on numpy alone. Temperature 2: sampling and the
    # log-probability must both use it. On numba the actions come from the fused act kernel (separate
    # code drawing the same samples from the same draws); the gradient is loss_and_grads on both.
    if backend == "numba":
        pytest.importorskip("numba")
    request.getfixturevalue(f"{backend}_backend")  # (conftest.py)
    with make(TABULAR_ID, objective=objective, advantage=advantage, gamma=gamma, gae_lambda=1.0,
              temperature=2.0) as model:
        g, grad_j = expected_gradients(model.policy, gamma)
        if gamma == 1.0:  # the oracle's own check: the policy gradient theorem
            np.testing.assert_allclose(g, grad_j, rtol=0, atol=1e-8)
        basis = discrete_basis(model.policy)
        samples = sampled_gradients(model, ROLLOUTS)
        # The test can tell: the same samples against a mean with the rewards-to-go one step late
        # (Q_t - r: gamma G_{t+1}, the immediate reward left out) are far off.
        Q, d, _ = dynamic_programming(policy_probs(model.policy), gamma)
        late = d[:, :, None] * (Q - R[None])
        g_late = fd_gradient(model.policy, lambda: float((late * policy_probs(model.policy)[None]).sum()))
    bound = check_mean(samples, -g / H, basis)
    assert far_from(samples, -g_late / H, basis) > bound
    if gamma < 1.0:  # and against the discounted return's gradient, which the estimator is not
        assert far_from(samples, -grad_j / H, basis) > bound


@pytest.mark.parametrize("objective", ["surrogate", "kl_penalty", "clip"])
def test_away_from_the_rollout_s_policy_the_mean_is_the_importance_sampled_surrogate_s_gradient(
        objective, any_backend):
    # 重要性采样 importance sampling: with the rollout drawn from pi_old and the gradient taken at another
    # theta, the surrogate's mean gradient per episode is grad_theta of
    #     L(theta) = sum_t sum_s d_t(s) sum_a pi_theta(a|s) Q_t(s, a)      (d, Q: of pi_old)
    # (the ratio pi_theta / pi_old turns the average over pi_old's actions into one over pi_theta's; the
    # critic's baseline sums to a constant). kl_penalty adds beta * sum_t sum_s d_t(s) KL(pi_old(s) ||
    # pi_theta(s)), its gradient exact (no sampling: both distributions are known in every visited state).
    # clip with theta moved only as far as keeps every ratio inside [1 - eps, 1 + eps] is the surrogate.
    # Made by hand, an inverted ratio (pi_old / pi_theta) and acting at temperature 1 (logp_old with it)
    # fail this (see the note at the end of docs/derivations.md section 12 for how far).
    gamma, beta = 0.9, 0.7
    with make(TABULAR_ID, objective=objective, advantage="mc", gamma=gamma, temperature=2.0,
              kl_beta=beta) as model:
        policy = model.policy
        rng = np.random.default_rng(5)
        scale = 0.12 if objective == "clip" else 0.3
        move = {k: rng.normal(0.0, scale, policy.params[k].shape) for k in actor_keys(policy)}
        pi_old = policy_probs(policy)
        v_old = policy.value(np.eye(S))
        Q, d, _ = dynamic_programming(pi_old, gamma)
        weight = d[:, :, None] * Q
        with moved(policy, move):
            ratio = policy_probs(policy) / pi_old
            if objective == "clip":  # (what the test relies on: every ratio inside the clip range, 0.2)
                assert 0.1 < np.abs(ratio - 1).max() < 0.19
            else:
                assert np.abs(ratio - 1).max() > 0.2  # (far enough from pi_old to tell a missing ratio)

            def surrogate():
                pi = policy_probs(policy)
                out = (weight * pi[None]).sum()
                if objective == "kl_penalty":
                    out -= beta * (d[:, :, None] * (pi_old * np.log(pi_old / pi))[None]).sum()
                return float(out)

            g = fd_gradient(policy, surrogate)
            basis = discrete_basis(policy)
            # Without the ratio (the plain policy gradient at theta on pi_old's actions) the mean would be
            # sum_t sum_s d_t(s) sum_a pi_old(a|s) grad log pi_theta(a|s) (Q_t(s, a) - V(s)): off-policy the
            # critic's baseline no longer drops out.
            plain = d[:, :, None] * pi_old[None] * (Q - v_old[None, :, None])
            g_plain = fd_gradient(policy, lambda: float((plain * np.log(policy_probs(policy))[None]).sum()))
            if objective == "kl_penalty":
                g_plain -= fd_gradient(  # (the KL term, exact, is the same either way)
                    policy, lambda: beta * float((d[:, :, None] * (pi_old * np.log(pi_old / policy_probs(policy)))
                                                  [None]).sum()))
        samples = sampled_gradients(model, ROLLOUTS, move=move)
    bound = check_mean(samples, -g / H, basis)
    if objective != "clip":  # (clip's mean without the ratio is not this: its clipped samples differ)
        assert far_from(samples, -g_plain / H, basis) > bound


def test_gaussian_estimator_mean_is_the_policy_gradient(any_backend):
    # One-step episodes, so Q is the reward: E[r | s] = -(|mu(s) - C[s]|^2 + sum_j sigma_j^2) in closed
    # form; mu(s) is the policy's deterministic action (its mean), sigma = exp(log_std). log_std starts
    # at -0.5 so that the sigma part of the gradient is not the only large one. The loss depends on the
    # actor through the 3 states' 2-d means and the 2 log_stds: 8 directions.
    with make(QUADRATIC_ID, objective="reinforce", advantage="mc", gamma=1.0, log_std_init=-0.5,
              n_steps=4, batch_size=128) as model:
        policy = model.policy

        def expected_return():
            mu = policy.predict(np.eye(S), deterministic=True)
            sigma2 = np.exp(2 * policy.params["log_std"])
            return float(Q0 @ -(((mu - C) ** 2).sum(1) + sigma2.sum()))

        g = fd_gradient(policy, expected_return)
        basis = gaussian_basis(policy)
        samples = sampled_gradients(model, ROLLOUTS)
    check_mean(samples, -g, basis)


def clipped_square_error(mu, sigma, c, low=-1.0, high=1.0):
    """E[(clip(X, low, high) - c)^2] for X ~ N(mu, sigma^2), elementwise, in closed form: the two
    clipped tails at their bound, and the middle from the truncated normal's first two moments."""
    cdf = np.vectorize(lambda z: 0.5 * (1.0 + math.erf(z / math.sqrt(2.0))))
    pdf = lambda z: np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)  # noqa: E731
    a, b = (low - mu) / sigma, (high - mu) / sigma
    mass = cdf(b) - cdf(a)
    middle = (mu - c) ** 2 * mass + 2 * (mu - c) * sigma * (pdf(a) - pdf(b)) \
        + sigma**2 * (mass + a * pdf(a) - b * pdf(b))
    return (low - c) ** 2 * cdf(a) + (high - c) ** 2 * (1.0 - cdf(b)) + middle


def test_gaussian_estimator_with_clipped_actions_is_the_clipped_objective_s_gradient(any_backend):
    # The env sees clip(a) and its reward -|clip(a) - C[s]|^2; the buffer keeps the sampled a, so that
    # logp(a) is the Gaussian's (PPO detail: clip what the env sees only). The estimator's mean is then the
    # gradient of E[-|clip(a) - C[s]|^2] exactly (closed form above). Storing the clipped action instead
    # puts log-densities at the bounds into the gradient: made by hand, it misses by 67 standard errors.
    with make(BOUNDED_ID, objective="reinforce", advantage="mc", gamma=1.0, log_std_init=-0.5,
              n_steps=4, batch_size=128) as model:
        policy = model.policy

        def expected_return():
            mu = policy.forward(np.eye(S))[0].mean  # (the mean itself: predict would clip it to the bounds)
            sigma = np.exp(policy.params["log_std"])
            return float(Q0 @ -clipped_square_error(mu, sigma[None], C).sum(1))

        g = fd_gradient(policy, expected_return)
        basis = gaussian_basis(policy)
        samples = sampled_gradients(model, ROLLOUTS)
    check_mean(samples, -g, basis)


def exact_critic(policy, v):
    """Make the critic's V(s) equal v[s] (S,) on the one-hot states: its tanh hidden layer as initialised,
    the output layer solved for (S equations, 9 unknowns: exact to rounding)."""
    h = np.tanh(np.eye(S) @ policy.params["critic.W0"] + policy.params["critic.b0"])
    w = np.linalg.lstsq(np.hstack([h, np.ones((S, 1))]), v, rcond=None)[0]
    policy.params["critic.W1"][:, 0] = w[:-1]
    policy.params["critic.b1"][0] = w[-1]
    np.testing.assert_allclose(policy.value(np.eye(S)), v, rtol=0, atol=1e-13)


@pytest.mark.parametrize("autoreset", ["same_step", "next_step"])
@pytest.mark.parametrize("advantage,lam", [("mc", 1.0), ("td", 0.0), ("gae", 0.5)])
def test_with_an_exact_critic_every_estimator_has_the_plain_estimator_s_mean(advantage, lam, autoreset, any_backend):
    # The continuing MDP, truncated every HC = 5 steps; T = 7 steps a rollout (prime to the step patterns'
    # periods, 5 and 6), so rollouts end inside episodes (bootstrapped by last_values) and episodes inside
    # rollouts (bootstrapped at truncation: in same_step mode from info's final observation, in next_step
    # mode at the reset step). With the critic equal to the infinite-horizon V^pi, every estimator's
    # advantage has the conditional mean Q^pi(s_t, a_t) - V^pi(s_t) (E[delta_{t+k} | s_t, a_t] = 0 for
    # k >= 1), so each has the same mean gradient per step at episode time t,
    # g_t = sum_s d_t(s) sum_a grad pi(a|s) Q^pi(s, a) (d_t: the state distribution t steps after a reset).
    # The loss is the mean over a rollout's valid steps, so its expected gradient is minus the mean of g_t
    # over the episode times of those steps, known from the step pattern (all envs keep in step). Each
    # rollout's gradient goes through 4 shuffled minibatches (the episodic tests take the whole-rollout
    # batch): in next_step mode with the masked reset steps dropped from them.
    # gamma = 0.6 keeps the bootstrap's discount visible: made by hand, a truncation taken for an end (no
    # bootstrap; 10-14 standard errors off), same_step's bootstrap from the reset observation (13-14), the
    # next_step bootstrap without its gamma (6-6.5; 5.5-7.2 over six seeds for td) and a rollout's end
    # not bootstrapped (6-8; 4.8-7.5) all fail this; next_step's bootstrap of a truncation at the
    # rollout's last step, dropped, is not seen (one rollout in six ends on a truncation: 2.6-3 standard
    # errors; tests/test_truncation.py's test_next_step_truncation_at_rollout_end_bootstraps_from_last_value
    # checks it on fixed data).
    gamma, T = GAMMA_C, 7
    with make(CONTINUING_ID, objective="reinforce", advantage=advantage, gamma=gamma, gae_lambda=lam,
              n_steps=T, batch_size=32 * T, autoreset=autoreset) as model:
        policy = model.policy
        pi = policy_probs(policy)
        p, r = ContinuingMDP.P, ContinuingMDP.R
        v = np.linalg.solve(np.eye(S) - gamma * np.einsum("sa,sap->sp", pi, p), (pi * r).sum(1))
        exact_critic(policy, v)
        Q = r + gamma * p @ v
        d = [P0]
        for _ in range(HC - 1):
            d.append(np.einsum("s,sa,sap->p", d[-1], pi, p))
        g_t = np.array(d) @ fd_gradient(policy, lambda: (policy_probs(policy) * Q).sum(1))  # (HC, P)
        basis = discrete_basis(policy)
        samples = sampled_gradients(model, ROLLOUTS, slot_times := [], minibatches=4)
    expected, c = [], 0  # c: the envs' time in their episode at the next slot
    for valid in slot_times:
        assert (valid == valid[:, :1]).all()
        times = []
        for t in range(T):
            if c == HC:  # (next_step: the step after a truncation is the reset step, masked)
                assert autoreset == "next_step" and not valid[t, 0]
                c = 0
                continue
            assert valid[t, 0]
            times.append(c)
            c = c + 1 if c + 1 < HC or autoreset == "next_step" else 0
        expected.append(-g_t[times].mean(0))
    check_mean(samples, np.array(expected), basis)
