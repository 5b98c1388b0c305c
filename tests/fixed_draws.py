"""A numpy Generator that returns chosen uniform draws, for sampling at the ends of U[0, 1)."""

import numpy as np


class FixedDraws(np.random.Generator):
    """A Generator whose ``random`` returns the given numbers (reshaped to the size asked for)."""

    def __init__(self, u):
        super().__init__(np.random.PCG64(0))
        self.u = np.asarray(u, dtype=np.float64)

    def random(self, size=None, dtype=np.float64, out=None):
        return self.u.reshape(size)
