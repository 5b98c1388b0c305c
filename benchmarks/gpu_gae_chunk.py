"""The GAE kernel's GAE_CHUNK on a CUDA device: kernel time per launch and bit-equality with numpy.

    python benchmarks/gpu_gae_chunk.py [CHUNK ...]    # default: 1 4 8 16 32

kernels/gae.cu loads GAE_CHUNK time steps into registers before running the recursion over them, so
a thread waits for memory once per chunk, not once per step. This compiles the source once per chunk
(``-DGAE_CHUNK=c`` beside ``gpu.NVRTC_OPTIONS``), checks each build's results against
``advantages.gae_numpy`` bit for bit, and times the launches alone with CUDA events (best of 7
rounds, each the mean of enough launches to take ~20 ms; the chunks of one size timed in
alternating rounds). Rows: the rollout sizes of benchmarks/kernels.py and two larger ones. Needs
cupy and a device; asserts nothing, prints a table (a build that differs from numpy says so).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from minippo.kernels import gpu  # noqa: E402

from minippo.advantages import gae_numpy  # noqa: E402

SIZES = ((2048, 64), (128, 8), (2048, 1024), (256, 16384))


def launch_time(cp, fn, args, grid: tuple[int], n: int) -> float:
    """Seconds per launch of ``fn``: the mean over ``n`` launches between two CUDA events."""
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    for _ in range(n):
        fn(grid, (gpu.BLOCK,), args)
    stop.record()
    stop.synchronize()
    return cp.cuda.get_elapsed_time(start, stop) / 1e3 / n


def main(argv: list[str]) -> int:
    try:
        chunks = [int(c) for c in argv] or [1, 4, 8, 16, 32]
    except ValueError:
        chunks = []
    if not chunks or any(c < 1 for c in chunks):
        print(f"CHUNK must be integers >= 1, got {argv}", file=sys.stderr)
        return 2
    try:
        import cupy as cp
    except ImportError as e:  # one line, as minippo's MINIPPO_BACKEND=cupy says it, not a traceback
        print(f"gpu_gae_chunk.py: error: this benchmark needs cupy and a CUDA device, but cupy is not installed "
              f"({e}); install it with: pip install 'minippo[cuda]'", file=sys.stderr)
        return 2
    print(f"device: {cp.cuda.runtime.getDeviceProperties(0)['name'].decode()}, cupy {cp.__version__}")
    mods = {c: cp.RawModule(code=gpu.source(), options=(*gpu.NVRTC_OPTIONS, f"-DGAE_CHUNK={c}"))
            for c in chunks}
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        name = gpu.KERNEL_NAMES[np.dtype(dtype)]
        print(f"{name}: us per launch (x: faster than chunk {chunks[0]})")
        print("  T     N      " + "".join(f"chunk {c:<3d}          " for c in chunks))
        for T, N in SIZES:
            host = [rng.normal(size=(T, N)).astype(dtype), rng.normal(size=(T, N)).astype(dtype),
                    (rng.random((T, N)) < 0.01).astype(dtype), rng.normal(size=N).astype(dtype)]
            want = gae_numpy(*host, 0.99, 0.95)
            dev = [cp.asarray(a) for a in host]
            adv, ret = cp.empty((T, N), dtype), cp.empty((T, N), dtype)
            ok = cp.zeros((), np.int32)  # the dones check's flag, left at 0: the GAE kernel alone is timed
            args = (*dev, dtype(0.99), dtype(0.99 * 0.95), np.int32(T), np.int32(N), adv, ret, ok)
            grid = ((N + gpu.BLOCK - 1) // gpu.BLOCK,)
            fns, same = {}, {}
            for c, mod in mods.items():
                fns[c] = mod.get_function(name)
                adv[...], ret[...] = np.nan, np.nan
                fns[c](grid, (gpu.BLOCK,), args)
                same[c] = all(np.array_equal(cp.asnumpy(g), w) for g, w in zip((adv, ret), want, strict=True))
            # launches per round: ~20 ms with the first chunk's build
            n = max(1, int(0.02 / launch_time(cp, fns[chunks[0]], args, grid, 1)))
            best = dict.fromkeys(chunks, float("inf"))
            for _ in range(7):
                for c in chunks:
                    best[c] = min(best[c], launch_time(cp, fns[c], args, grid, n))
            row = "".join(f"{best[c] * 1e6:9.2f} {best[chunks[0]] / best[c]:5.2f}x{'' if same[c] else ' DIFF'}   "
                          for c in chunks)
            print(f"  {T:5d} {N:6d} {row}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
