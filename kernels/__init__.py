"""Hot loops, one file per kernel family and backend (installed as ``minippo.kernels``).

- ``reference``: plain loops, the oracle every other kernel is tested against.
- ``cpu``: Numba ``@njit`` kernels (compiled lazily on first use); ``cpu_act`` and ``cpu_update``
  fuse a whole rollout step's act and a whole PPO minibatch update from its pieces; ``simd``: the
  explicit 64-byte vectors of ``cpu``'s register-tiled matmuls.
- ``gpu``: the CuPy wrapper around ``gae.cu`` (GAE) and ``adam.cu`` (Adam's step over all the
  parameter arrays in two launches); ``gpu_act``: the one around ``act.cu`` (a rollout step's actor
  and critic in one launch); matmuls reach cuBLAS through ``np.dot`` on cupy arrays, no wrapper
  needed.
"""
