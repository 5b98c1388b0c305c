"""Small helpers shared by the tests that run whole updates on numpy and numba (test_metamorphic,
test_directions)."""


def activation_for(backend: str) -> str:
    """relu on numba, tanh on numpy: in float64 the fused numba minibatch step runs for relu and leaves
    tanh to numpy (no faster there), so relu is what puts numba's own update under test."""
    return "relu" if backend == "numba" else "tanh"


def output_layer(model, head: str = "actor") -> tuple[str, str]:
    """The parameter keys (W, b) of ``head``'s last layer."""
    last = getattr(model.policy, head).n_layers - 1
    return f"{head}.W{last}", f"{head}.b{last}"
