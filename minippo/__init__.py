"""minippo: Proximal Policy Optimization from scratch in NumPy.

Every forward pass has its hand-written backward pass beside it; no autograd anywhere.
Importing this package needs numpy only: gymnasium, numba, cupy and matplotlib are
imported lazily, where they are used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["PPO", "PPOConfig", "load_policy", "__version__"]


def _find_checkout_kernels() -> None:
    """In a source checkout ``minippo.kernels`` is the top-level ``kernels/`` folder (setup.cfg maps
    it there); an installed copy holds it inside the package. Run from the checkout's root, Python
    imports this source folder, not the installed copy (the current folder leads sys.path), and
    without an editable install's finder ``minippo.kernels`` would then not be found: the package
    path gets the checkout's root too (only when there is no ``kernels`` inside the package)."""
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    inside, beside = os.path.join(here, "kernels"), os.path.join(root, "kernels", "__init__.py")
    if not os.path.isdir(inside) and os.path.isfile(beside):
        __path__.append(root)


_find_checkout_kernels()

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
