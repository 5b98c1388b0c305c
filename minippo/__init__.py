"""minippo: Proximal Policy Optimization from scratch in NumPy.

Every forward pass has its hand-written backward pass beside it; no autograd anywhere.
Importing this package needs numpy only: gymnasium, numba, cupy and matplotlib are
imported lazily, where they are used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["PPO", "PPOConfig", "load_policy", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from minippo.checkpoint import load_policy
    from minippo.config import PPOConfig
    from minippo.ppo import PPO


def __getattr__(name: str) -> Any:
    # Lazy: `import minippo` stays a few milliseconds and never drags in the trainer.
    if name == "PPO":
        from minippo.ppo import PPO

        return PPO
    if name == "PPOConfig":
        from minippo.config import PPOConfig

        return PPOConfig
    if name == "load_policy":
        from minippo.checkpoint import load_policy

        return load_policy
    raise AttributeError(f"module 'minippo' has no attribute {name!r}")
