"""Each term of the PPO loss moves the policy the way its sign says, through a whole ``update()``.

The finite-difference checks prove each gradient is the derivative of the loss as written; they cannot
see a term written with the wrong sign, since the gradient then matches the wrong loss (an entropy
"bonus" that lowers the entropy, a penalty that pushes away from pi_old); the loss tests compare with
tests/reference.py, written from the same reading of the paper, and the learning tests run with
ent_coef = 0 (every preset's). Here each term acts alone on a rollout whose advantages are set to zero
(or, for the policy term, kept), one update runs (numpy, or numba's fused minibatch step), and the
quantity the term is meant to raise or lower is measured before and after:

- the entropy bonus raises the policy's entropy on the batch;
- the value loss lowers the squared error of V against the returns (clipped value loss too);
- the policy term raises the surrogate sum_t ratio_t * A_t (actions with positive advantage get more
  probable), for every objective of the ladder;
- the KL penalty pulls a policy moved off pi_old back towards it (KL(pi_old || pi) falls);
- the clip leaves no incentive beyond its range: steps whose ratio is already past 1 + eps with A > 0
  (or under 1 - eps with A < 0) move nothing under clip, and do under the plain surrogate;
- a term weighted 0, or zero advantages under an objective without a KL term, moves no actor parameter
  at all (Adam's step of a zero gradient is exactly zero).

Adam's first step is -lr * g / (|g| + eps) for each parameter (its moments are g and g^2 then), so a
term f acting alone changes by -lr * sum_i g_i^2 / (|g_i| + eps) < 0 to first order, g = df/dtheta:
the tests use lr = 1e-4, where the first order is what the step does, and assert the sign only. They
run in float64, where rounding (~1e-16 relative) is far below the smallest change measured (~2e-5
relative: the surrogate on normalised advantages, the value error on Pendulum). On numba the networks
are relu (trainer_parts.activation_for: the fused minibatch step's float64 case).
"""

import numpy as np
import pytest
from trainer_parts import activation_for, output_layer

from minippo.config import PPOConfig
from minippo.ppo import PPO

pytest.importorskip("gymnasium")

BASE = dict(n_envs=4, n_steps=32, batch_size=128, n_epochs=1, hidden=(16, 16), learning_rate=1e-4, dtype="float64",
            total_timesteps=10**6, normalize_advantages=False, vf_coef=0.0, ent_coef=0.0, max_grad_norm=0.0)
ENVS = ["CartPole-v1", "Pendulum-v1"]


def config(backend: str, **overrides) -> PPOConfig:
    return PPOConfig(**{**BASE, "activation": activation_for(backend), **overrides})


def rollout(model: PPO, zero_advantages: bool = True) -> dict:
    """Collect a rollout; with zero_advantages, its advantages set to 0 (the returns kept). Returns the
    whole rollout as one batch of float64 copies (what the update's one minibatch holds)."""
    model.collect_rollout()
    if zero_advantages:
        model.buffer.advantages[...] = 0
    n = model.config.n_envs * model.config.n_steps
    batch = next(model.buffer.minibatches(n, np.random.default_rng(0)))
    return {k: np.array(v) for k, v in batch.items()}


def actor_params(model: PPO) -> dict:
    return {k: np.array(v) for k, v in model.policy.params.items() if not k.startswith("critic.")}


def mean_entropy(model: PPO, batch: dict) -> float:
    return float(np.mean(np.asarray(model.policy.forward(batch["obs"])[0].entropy(), np.float64)))


def value_error(model: PPO, batch: dict) -> float:
    values = np.asarray(model.policy.value(batch["obs"]), np.float64)
    return float(np.mean((values - batch["returns"]) ** 2))


def surrogate(model: PPO, batch: dict) -> float:
    logp = np.asarray(model.policy.evaluate(batch["obs"], batch["actions"])[0], np.float64)
    return float(np.mean(np.exp(logp - batch["logp_old"]) * batch["advantages"]))


def kl_from_old(model: PPO, batch: dict) -> float:
    old = model.policy.make_dist(batch["dist_old"])
    return float(np.mean(np.asarray(old.kl(model.policy.forward(batch["obs"])[0]), np.float64)))


def assert_unchanged(before: dict, model: PPO) -> None:
    after = actor_params(model)
    for k in before:
        assert np.array_equal(after[k], before[k]), k


@pytest.mark.parametrize("env_id", ENVS)
@pytest.mark.parametrize("shared", [False, True])
def test_the_entropy_bonus_raises_the_entropy(any_backend, env_id, shared):
    """Discrete: the actor's output bias spread first, away from the near-uniform initial policy (at the
    entropy's maximum, where it is flat and a step can overshoot it). A Gaussian's entropy is the sum of
    its log-stds: no maximum."""
    with PPO(config(any_backend, env_id=env_id, shared=shared, ent_coef=0.5)) as model:
        bias = model.policy.params[output_layer(model)[1]]
        if env_id == "CartPole-v1":
            bias += np.linspace(-0.5, 0.5, bias.size)
        batch = rollout(model)
        before = mean_entropy(model, batch)
        model.update(0.0)
        assert mean_entropy(model, batch) > before


@pytest.mark.parametrize("env_id", ENVS)
@pytest.mark.parametrize("objective", ["clip", "surrogate", "a2c", "reinforce"])
def test_zero_advantages_and_no_bonus_leave_the_actor_alone(any_backend, env_id, objective):
    """And the critic's own step (vf_coef 0.5, separate networks) does not reach the actor."""
    with PPO(config(any_backend, env_id=env_id, objective=objective, vf_coef=0.5)) as model:
        rollout(model)
        before = actor_params(model)
        model.update(0.0)
        assert_unchanged(before, model)


@pytest.mark.parametrize("env_id", ENVS)
@pytest.mark.parametrize("clip_vloss", [False, True])
@pytest.mark.parametrize("shared", [False, True])
def test_the_value_loss_pulls_the_values_to_the_returns(any_backend, env_id, clip_vloss, shared):
    """Inside the value clip range after one small step: the clipped loss is the plain one there."""
    with PPO(config(any_backend, env_id=env_id, vf_coef=0.5, clip_vloss=clip_vloss, shared=shared)) as model:
        batch = rollout(model)
        before = value_error(model, batch)
        model.update(0.0)
        assert value_error(model, batch) < before


@pytest.mark.parametrize("env_id", ENVS)
@pytest.mark.parametrize("objective", ["clip", "kl_penalty", "surrogate", "a2c", "reinforce"])
def test_the_policy_step_makes_actions_with_positive_advantage_more_probable(any_backend, env_id, objective):
    """At pi_old the surrogate mean(ratio * A) is mean(A); one step raises it (normalised advantages,
    so mean(A) = 0 and the claim is about the direction alone)."""
    with PPO(config(any_backend, normalize_advantages=True, env_id=env_id, objective=objective)) as model:
        batch = rollout(model, zero_advantages=False)
        a = batch["advantages"]
        batch["advantages"] = (a - a.mean()) / a.std()
        # mean(A) of 128 normalised float64 values: a few roundings of O(1) terms, ~1e-16 each (session
        # 76: |mean| <= 6.3e-16 on both backends and envs); 1e-12 leaves room for other draws
        assert abs(surrogate(model, batch)) < 1e-12
        model.update(0.0)
        # one step at lr = 1e-4 raised it by 1.8e-5 to 2.1e-4 there: 1e-6 is well above the noise above
        assert surrogate(model, batch) > 1e-6


@pytest.mark.parametrize("env_id", ENVS)
def test_the_kl_penalty_pulls_the_policy_back_to_pi_old(any_backend, env_id):
    with PPO(config(any_backend, env_id=env_id, objective="kl_penalty", kl_beta=1.0)) as model:
        batch = rollout(model)
        noise = np.random.default_rng(3)
        for k, v in model.policy.params.items():
            if not k.startswith("critic."):
                v[...] += 0.05 * noise.normal(size=v.shape)
        before = kl_from_old(model, batch)
        assert before > 1e-5
        model.update(0.0)
        assert kl_from_old(model, batch) < before


@pytest.mark.parametrize("env_id", ENVS)
def test_the_clip_removes_the_incentive_beyond_the_clip_range(any_backend, env_id):
    """A policy moved off pi_old, each step's advantage +1 where its ratio is already above 1 + eps, -1
    where below 1 - eps, 0 inside: PPO-clip's objective is flat there (min(r A, clip(r) A) is the clipped
    constant), so the update moves no actor parameter; the unclipped surrogate, on the same batch, does."""
    eps = 0.1
    for objective, moves in (("clip", False), ("surrogate", True)):
        with PPO(config(any_backend, env_id=env_id, objective=objective, clip_eps=eps)) as model:
            batch = rollout(model, zero_advantages=False)  # (the whole rollout in time order)
            noise = np.random.default_rng(4)
            for k, v in model.policy.params.items():
                if not k.startswith("critic."):
                    v[...] += 0.3 * noise.normal(size=v.shape)
            logp = np.asarray(model.policy.evaluate(batch["obs"], batch["actions"])[0])
            ratio = np.exp(logp - batch["logp_old"])
            adv = np.where(ratio > 1 + eps, 1.0, np.where(ratio < 1 - eps, -1.0, 0.0))
            assert (adv > 0).any() and (adv < 0).any()
            model.buffer.advantages[...] = adv.reshape(model.buffer.advantages.shape)
            before = actor_params(model)
            model.update(0.0)
            if moves:
                assert any(not np.array_equal(v, before[k]) for k, v in actor_params(model).items())
            else:
                assert_unchanged(before, model)
