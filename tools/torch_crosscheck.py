"""Cross-check whole PPO updates against an independent implementation on PyTorch's autograd.

minippo's gradients are checked by central differences and its losses against ``tests/reference.py``
(docs/derivations.md section 12). Both were written by the same hands as the code. This script is a
check from outside. minippo collects one rollout; a CleanRL-style agent in PyTorch (float64) holding
the same weights recomputes what the rollout stored (log-probabilities, values, distributions) and,
from the env's raw steps, the advantages and returns (GAE, REINFORCE's reward-to-go or A2C's TD
error, written from their definitions, with the truncation bootstrap and NEXT_STEP autoreset's
masked reset steps). Then it takes the same minibatches, writes each objective's loss as CleanRL's
``ppo.py`` / ``ppo_continuous_action.py`` do (the paper's eq. 8 for the KL penalty), lets autograd
differentiate it, steps ``torch.optim.Adam``, and compares the parameters after one whole update
(every epoch and minibatch) and the statistics minippo logs. Where minippo deliberately differs from
CleanRL (the table in docs/derivations.md section 13), the torch side follows minippo.

Needs PyTorch, which minippo does not depend on (a CPU build is enough; on Linux plain ``pip install
torch`` fetches a CUDA build of several GB, ``--index-url https://download.pytorch.org/whl/cpu`` the
CPU one):

    python tools/torch_crosscheck.py          # one line per case; exit status 1 if any differs

Each case runs one update in float64 on the backend ``MINIPPO_BACKEND`` names (numpy by default).
Parameters agree to 1e-15 - 5e-14 relative, the rollout to 2e-16 - 9e-15 (session 61, numpy and numba
backends). ``TOLERANCE`` is 1e-10: four orders above that rounding, and under the smallest
deliberate difference measured (torch's ``clip_grad_norm_`` adds 1e-6 to the norm where minippo adds
1e-12: that alone moves the parameters by 6e-9 to 1e-5 relative, by case).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np
import torch
from torch.distributions import Categorical, Normal, kl_divergence

from minippo.config import PPOConfig, preset
from minippo.policy import LOG_STD_MAX, LOG_STD_MIN
from minippo.ppo import PPO

TOLERANCE = 1e-10
STATS = ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "kl", "beta", "n_updates")


class Agent(torch.nn.Module):
    """Actor and critic MLPs (separate, or heads on a shared trunk) with minippo's weights copied in;
    a Discrete policy is a softmax of logits / temperature, a Gaussian one has a state-independent
    log-std (clamped to minippo's range in the forward pass)."""

    def __init__(self, params: dict[str, np.ndarray], cfg: PPOConfig, discrete: bool) -> None:
        super().__init__()
        self.discrete, self.temperature = discrete, cfg.temperature
        act = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[cfg.activation]

        def mlp(prefix: str, activate_last: bool) -> torch.nn.Sequential:
            layers = []
            n = sum(1 for k in params if k.startswith(prefix + ".W"))
            for i in range(n):
                W, b = params[f"{prefix}.W{i}"], params[f"{prefix}.b{i}"]  # W (in, out)
                lin = torch.nn.Linear(*W.shape)
                with torch.no_grad():
                    lin.weight.copy_(torch.from_numpy(W.T))  # torch keeps (out, in)
                    lin.bias.copy_(torch.from_numpy(b))
                layers += [lin, act()] if i < n - 1 or activate_last else [lin]
            return torch.nn.Sequential(*layers)

        self.trunk = mlp("trunk", True) if cfg.shared else torch.nn.Identity()
        self.actor, self.critic = mlp("actor", False), mlp("critic", False)
        if not discrete:
            self.log_std = torch.nn.Parameter(torch.from_numpy(params["log_std"].copy()))

    def dist(self, out: torch.Tensor) -> Categorical | Normal:
        if self.discrete:
            return Categorical(logits=out / self.temperature)
        return Normal(out, torch.clamp(self.log_std, LOG_STD_MIN, LOG_STD_MAX).exp().expand_as(out))

    def old_dist(self, dist_params: torch.Tensor) -> Categorical | Normal:
        """pi_old from the buffer's distribution parameters: raw logits, or mean and log-std."""
        if self.discrete:
            return Categorical(logits=dist_params / self.temperature)
        mean, log_std = dist_params.chunk(2, dim=1)
        return Normal(mean, log_std.exp())

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs (B, obs_dim) -> policy head's output (B, n or d), values (B,)."""
        h = self.trunk(obs)
        return self.actor(h), self.critic(h).view(-1)

    def per_sample(self, x: torch.Tensor) -> torch.Tensor:
        """A distribution's values (B,) or, Gaussian, per dimension (B, d) -> per sample (B,)."""
        return x if self.discrete else x.sum(1)

    def exported(self) -> dict[str, np.ndarray]:
        """The parameters under minippo's names and layouts."""
        out = {}
        for prefix in ("trunk", "actor", "critic"):
            net = getattr(self, prefix)
            if isinstance(net, torch.nn.Sequential):
                for i, lin in enumerate(m for m in net if isinstance(m, torch.nn.Linear)):
                    out[f"{prefix}.W{i}"] = lin.weight.detach().numpy().T
                    out[f"{prefix}.b{i}"] = lin.bias.detach().numpy()
        if not self.discrete:
            out["log_std"] = self.log_std.detach().numpy()
        return out


def minibatch_indices(valid: np.ndarray, cfg: PPOConfig, rng: np.random.Generator) -> list[list[np.ndarray]]:
    """Per epoch, the flat indices of each minibatch, drawn as RolloutBuffer.minibatches draws them:
    one permutation of the T*N steps per epoch, masked steps dropped, then cut into T*N // batch_size
    parts (fewer where a part would fall under 2 samples with advantage normalisation); one minibatch
    for the whole rollout takes it in order, without a draw."""
    n = valid.size
    parts = n // cfg.batch_size
    min_size = 2 if cfg.normalize_advantages else 1
    epochs = []
    for _ in range(cfg.n_epochs):
        if parts == 1:
            epochs.append([np.flatnonzero(valid)])
            continue
        idx = rng.permutation(n)
        idx = idx[valid[idx]]
        epochs.append([p for p in np.array_split(idx, max(1, min(parts, idx.size // min_size))) if p.size])
    return epochs


def torch_update(agent: Agent, batch: dict[str, torch.Tensor], epochs: list[list[np.ndarray]], cfg: PPOConfig,
                 progress: float, beta: float) -> dict[str, float]:
    """One PPO update, CleanRL-style; returns the mean of each statistic over the minibatches stepped."""
    def scheduled(kind: str, start: float, end: float) -> float:  # (linear to 0: CleanRL's lr annealing)
        return {"constant": start, "linear": start + (end - start) * progress,
                "exponential": start * (end / start) ** progress if start > 0 and end > 0 else math.nan}[kind]

    lr = scheduled(cfg.lr_schedule, cfg.learning_rate, cfg.lr_end)
    clip = scheduled(cfg.clip_schedule, cfg.clip_eps, 0.0)
    ent_coef = scheduled(cfg.ent_schedule, cfg.ent_coef, cfg.ent_end)
    opt = torch.optim.Adam(agent.parameters(), lr=lr, eps=cfg.adam_eps)
    rows: list[dict[str, float]] = []
    for minibatches in epochs:
        for idx in minibatches:
            mb = {k: v[torch.from_numpy(idx)] for k, v in batch.items()}
            out, value = agent(mb["obs"])
            d = agent.dist(out)
            logp = agent.per_sample(d.log_prob(mb["actions"]))
            logratio = logp - mb["logp"]
            ratio = logratio.exp()
            with torch.no_grad():
                approx_kl = (torch.expm1(logratio) - logratio).mean().item()  # (r - 1) - log r
                clipfrac = ((ratio < 1 - clip) | (ratio > 1 + clip)).double().mean().item()
            if cfg.target_kl is not None and approx_kl > cfg.target_kl:  # minippo: before the step
                return _mean(rows)
            adv = mb["advantages"]
            if cfg.normalize_advantages:
                adv = (adv - adv.mean()) / (adv.std(correction=0) + 1e-8)  # minippo: population std
            row = {"approx_kl": approx_kl}
            if cfg.objective == "clip":
                pg_loss = torch.max(-adv * ratio, -adv * torch.clamp(ratio, 1 - clip, 1 + clip)).mean()
                row["clipfrac"] = clipfrac
            elif cfg.objective == "kl_penalty":  # -E[r A] + beta E[KL(pi_old || pi)]
                kl = agent.per_sample(kl_divergence(agent.old_dist(mb["dist_old"]), d)).mean()
                pg_loss = -(ratio * adv).mean() + beta * kl
            elif cfg.objective == "surrogate":  # the importance-sampled surrogate, unclipped
                pg_loss = -(ratio * adv).mean()
            else:  # reinforce, a2c: -E[log pi(a|s) A] (their advantages: reward-to-go, TD error)
                pg_loss = -(logp * adv).mean()
            if cfg.clip_vloss:  # minippo anneals the value clip with the policy's (baselines' ppo2)
                clipped = mb["values_old"] + torch.clamp(value - mb["values_old"], -clip, clip)
                v_loss = 0.5 * torch.max((value - mb["returns"]) ** 2, (clipped - mb["returns"]) ** 2).mean()
            else:
                v_loss = 0.5 * ((value - mb["returns"]) ** 2).mean()
            entropy = agent.per_sample(d.entropy()).mean()
            loss = pg_loss - ent_coef * entropy + cfg.vf_coef * v_loss
            opt.zero_grad()
            loss.backward()
            norm = math.sqrt(sum(float((p.grad**2).sum()) for p in agent.parameters()))
            if 0 < cfg.max_grad_norm < norm:  # minippo: c / (norm + 1e-12); torch's clip_grad_norm_ 1e-6
                for p in agent.parameters():
                    p.grad.mul_(cfg.max_grad_norm / (norm + 1e-12))
            opt.step()
            if not agent.discrete:
                with torch.no_grad():  # minippo projects log_std back into its range after each step
                    agent.log_std.clamp_(LOG_STD_MIN, LOG_STD_MAX)
            row.update(loss=loss.item(), policy_loss=pg_loss.item(), value_loss=v_loss.item(), entropy=entropy.item())
            rows.append(row)
    return _mean(rows)


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}
    return {**out, "n_updates": float(len(rows))}


def adapted_beta(agent: Agent, batch: dict[str, torch.Tensor], valid: np.ndarray, cfg: PPOConfig,
                 beta: float) -> tuple[float, float]:
    """The paper's rule on d = mean KL(pi_old || pi) over the rollout's valid steps after the update:
    beta halves when d < d_targ / 1.5, doubles when d > 1.5 d_targ. Returns (d, new beta)."""
    with torch.no_grad():
        d = agent.dist(agent(batch["obs"])[0])
        kl = agent.per_sample(kl_divergence(agent.old_dist(batch["dist_old"]), d)).numpy()
    d = float(kl[valid].mean())
    if d < cfg.kl_target / 1.5:
        beta /= 2
    elif d > cfg.kl_target * 1.5:
        beta *= 2
    return d, beta


def recording(model: PPO) -> list[tuple[np.ndarray, ...]]:
    """Keep each env step's raw (next obs, rewards, terminated, truncated, final obs or None) as the
    env returns it: this model's ``env.step`` is wrapped (the instance's alone)."""
    steps = []
    step = model.env.step

    def recorded(actions: np.ndarray) -> tuple:
        out = step(actions)
        obs, reward, term, trunc, info = out
        finals = info.get("final_obs")  # (SAME_STEP autoreset: an episode's last obs is there)
        steps.append((np.array(obs, dtype=np.float64), np.array(reward, dtype=np.float64), np.array(term),
                      np.array(trunc), None if finals is None else [np.array(f, dtype=np.float64) for f in finals]))
        return out

    model.env.step = recorded
    return steps


def advantages(steps: list[tuple[np.ndarray, ...]], values: np.ndarray, value_of, cfg: PPOConfig,
               next_step: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Advantages and returns (T, N) and the valid mask from the raw env steps and the values V(s_t)
    (T, N), written from the definitions: a truncated episode's last reward gets gamma V(final obs);
    with NEXT_STEP autoreset the step after an episode's end is the env's reset, not a transition.
    GAE by its recursion, REINFORCE's reward-to-go G_t - V(s_t) (bootstrapped from V(s_T) at the
    rollout's end), A2C's TD error r_t + gamma V(s_t+1) - V(s_t)."""
    T, N = values.shape
    rewards, dones, valid = np.zeros((T, N)), np.zeros((T, N)), np.ones((T, N), dtype=bool)
    ended = np.zeros(N, dtype=bool)
    for t, (obs, reward, term, trunc, finals) in enumerate(steps):
        if next_step:
            valid[t] = ~ended
        rewards[t], dones[t] = reward, term | trunc
        for i in np.flatnonzero(trunc & ~term & valid[t]):
            rewards[t, i] += cfg.gamma * value_of(obs[i] if next_step else finals[i])
        ended = (term | trunc) & valid[t]
    next_values = np.vstack([values[1:], value_of(steps[-1][0])[None]])  # V(s_t+1), V(s_T) last
    not_done = 1.0 - dones
    delta = rewards + cfg.gamma * not_done * next_values - values
    adv, ret = np.zeros((T, N)), np.zeros((T, N))
    running, G = np.zeros(N), next_values[-1].copy()
    for t in reversed(range(T)):
        running = delta[t] + cfg.gamma * cfg.gae_lambda * not_done[t] * running
        G = rewards[t] + cfg.gamma * not_done[t] * G
        adv[t], ret[t] = {"gae": (running, running + values[t]), "td": (delta[t], delta[t] + values[t]),
                          "mc": (G - values[t], G)}[cfg.advantage_estimator]
    return adv, ret, valid


@dataclass
class Result:
    params: float  # max over arrays of max |difference| / max |minippo's array|
    rollout: float  # the same over logp, values, distribution parameters, advantages, returns (inf: other masks)
    stats: dict[str, tuple[float, float]]  # minippo's value, torch's

    def worst_stat(self) -> float:
        """Largest relative difference of a logged statistic; a loss that is ~0 by construction (the
        mean of normalised advantages at ratio 1) is compared on its terms' scale, 1."""
        return max((abs(a - b) / max(abs(a), 1.0) for a, b in self.stats.values() if not math.isnan(a)), default=0.0)

    def worst(self) -> float:
        return max(self.params, self.rollout, self.worst_stat())


def relative(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(ours - theirs).max() / max(np.abs(ours).max(), 1e-300))


def check(cfg: PPOConfig, progress: float = 0.0) -> Result:
    """Collect one rollout with minippo, recompute what it stored (log-probabilities, values,
    distributions, advantages, returns) from the raw env steps with the torch agent, then run
    minippo's update and the torch update from the same state at ``progress`` (which sets the
    schedules), and compare what each ends with."""
    model = PPO(cfg.replace(dtype="float64"))
    try:
        steps = recording(model)
        model.collect_rollout()
        buf, params = model.buffer, {k: np.array(v) for k, v in model.policy.params.items()}
        agent = Agent(params, cfg, model.policy.discrete)
        state = model.rng.bit_generator.state
        T, N = buf.T, buf.N
        n = T * N
        obs = torch.from_numpy(np.array(buf.obs.reshape(n, -1)))
        actions = torch.from_numpy(np.array(buf.actions.reshape(n, *buf.actions.shape[2:])))
        with torch.no_grad():
            out, values = agent(obs)
            d = agent.dist(out)
            logp = agent.per_sample(d.log_prob(actions))
            dist = out if agent.discrete else torch.cat([out, d.stddev.log()], dim=1)

        @torch.no_grad()
        def value_of(x: np.ndarray) -> np.ndarray:
            """V(s): () for one observation (obs_dim,), (N,) for (N, obs_dim)."""
            v = agent(torch.from_numpy(np.atleast_2d(x)))[1].numpy()
            return v if x.ndim == 2 else v[0]

        adv, ret, valid = advantages(steps, values.numpy().reshape(T, N), value_of, cfg, model.next_step)
        v = valid.reshape(n)
        rollout = max(relative(buf.logp.reshape(n)[v], logp.numpy()[v]),
                      relative(buf.values.reshape(n)[v], values.numpy()[v]),
                      relative(buf.dist.reshape(n, -1)[v], dist.numpy()[v]),
                      relative(buf.advantages[valid], adv[valid]), relative(buf.returns[valid], ret[valid]))
        if (valid != buf.valid_host).any():
            rollout = math.inf
        batch = {"obs": obs, "actions": actions, "logp": logp, "values_old": values, "dist_old": dist,
                 "advantages": torch.from_numpy(adv.reshape(n)), "returns": torch.from_numpy(ret.reshape(n))}
        beta = model.kl_coef.beta
        got = model.update(progress)
        rng = np.random.default_rng()
        rng.bit_generator.state = state
        want = torch_update(agent, batch, minibatch_indices(v, cfg, rng), cfg, progress, beta)
        if cfg.objective == "kl_penalty":
            want["kl"], want["beta"] = adapted_beta(agent, batch, v, cfg, beta)
        theirs = agent.exported()
        diff = max(relative(a, theirs[k]) for k, a in model.policy.params.items())
        return Result(diff, rollout, {k: (float(got[k]), want[k]) for k in STATS if k in want})
    finally:
        model.close()


def cases() -> dict[str, tuple[PPOConfig, float]]:
    """Small rollouts that still take several epochs of several minibatches, with gradient clipping
    active, an entropy bonus, short time limits (truncations bootstrapped) and each option the
    update has; (config, progress)."""
    cartpole = dict(env_id="CartPole-v1", n_envs=4, n_steps=32, batch_size=32, n_epochs=3, learning_rate=3e-3,
                    ent_coef=0.01, max_grad_norm=0.1, env_kwargs={"max_episode_steps": 20}, seed=3)
    pendulum = dict(env_id="Pendulum-v1", n_envs=2, n_steps=64, batch_size=32, n_epochs=3, learning_rate=3e-3,
                    ent_coef=0.005, max_grad_norm=0.3, gamma=0.9, env_kwargs={"max_episode_steps": 50}, seed=5)
    return {
        "CartPole clip": (PPOConfig(**cartpole), 0.0),
        "CartPole clip, value clip": (PPOConfig(**cartpole, clip_vloss=True), 0.0),
        "CartPole clip, shared, T=1.7": (PPOConfig(**cartpole, shared=True, clip_vloss=True, temperature=1.7), 0.0),
        "CartPole preset, schedules": (preset("CartPole-v1", n_envs=4, n_steps=32, batch_size=32, max_grad_norm=0.2,
                                              clip_vloss=True, ent_coef=0.02, ent_schedule="linear", ent_end=0.005,
                                              env_kwargs={"max_episode_steps": 25}, seed=1), 0.4),
        "CartPole entropy decay": (PPOConfig(**{**cartpole, "ent_coef": 0.05}, ent_schedule="exponential",
                                             ent_end=0.001, lr_schedule="exponential", lr_end=1e-4), 0.6),
        "CartPole one minibatch": (PPOConfig(**{**cartpole, "batch_size": 128, "n_epochs": 5}), 0.0),
        "CartPole target_kl": (PPOConfig(**{**cartpole, "max_grad_norm": 0.0, "n_epochs": 6}, target_kl=0.004), 0.0),
        "CartPole KL penalty, T=0.8": (PPOConfig(**cartpole, objective="kl_penalty", temperature=0.8, kl_target=1e-4,
                                                 clip_vloss=True), 0.0),
        "CartPole relu shared, raw adv": (PPOConfig(**cartpole, activation="relu", shared=True, hidden=(32,),
                                                    normalize_advantages=False), 0.0),
        "Pendulum clip, schedules": (PPOConfig(**pendulum, lr_schedule="linear", clip_schedule="linear",
                                               clip_vloss=True), 0.3),
        "Pendulum clip, shared": (PPOConfig(**pendulum, shared=True, log_std_init=-0.5), 0.0),
        "Pendulum log_std at its max": (PPOConfig(**{**pendulum, "ent_coef": 0.5}, log_std_init=LOG_STD_MAX), 0.0),
        "CartPole REINFORCE": (PPOConfig(**{**cartpole, "n_epochs": 1}, objective="reinforce"), 0.0),
        "CartPole A2C": (PPOConfig(**{**cartpole, "n_epochs": 1}, objective="a2c"), 0.0),
        "CartPole surrogate": (PPOConfig(**cartpole, objective="surrogate"), 0.0),
        "Pendulum surrogate": (PPOConfig(**pendulum, objective="surrogate"), 0.0),
        "Pendulum KL penalty, relu": (PPOConfig(**pendulum, activation="relu", objective="kl_penalty",
                                                kl_target=0.5, kl_beta=3.0), 0.0),
    }


def main() -> int:
    torch.set_default_dtype(torch.float64)
    failed = 0
    for name, (cfg, progress) in cases().items():
        r = check(cfg, progress)
        ok = r.worst() < TOLERANCE
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name:<32} rollout {r.rollout:.1e}, parameters {r.params:.1e}, "
              f"statistics {r.worst_stat():.1e}"
              f"  ({r.stats['n_updates'][0]:.0f} minibatch steps)", flush=True)
        if not ok:
            for k, (a, b) in r.stats.items():
                print(f"       {k:<12} minippo {a!r:<24} torch {b!r}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
