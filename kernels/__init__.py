"""Hot loops, one file per kernel family and backend (installed as ``minippo.kernels``).

- ``reference``: plain loops, the oracle every other kernel is tested against.
- ``cpu``: Numba ``@njit`` kernels (compiled lazily on first use).
- ``gpu``: CuPy wrappers around ``gae.cu`` and cuBLAS matmuls.
"""
