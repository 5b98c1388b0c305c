"""Kernel speed per backend, measured in one run on the same data. Prints ratios, asserts nothing.

    python benchmarks/kernels.py            # numpy and numba (and cupy when a device works)
    python benchmarks/kernels.py numpy cupy # the named backends only

GAE at (T=2048, N=64) and (T=128, N=8) float32: time, speed-up over a plain Python loop, and the
ratio to a memory floor: one numpy copy moving as many bytes as GAE does (GAE reads 3 (T, N)
arrays and writes 2, so the copy reads and writes 2.5 arrays' worth). All rows of one size, the
loop and the floor included, are timed in alternating rounds (``best_interleaved``), so a slow spell
of a shared machine hits a ratio's two sides alike. Targets (issue 4): numba >= 100x over the Python
loop and within 3x of the floor. On a GPU (cupy), its rows are measured against a device floor too:
the same bytes copied on the device (``cupy.copyto``), each call ending in a device synchronise; a
``cupy kernel`` row times ``kernels.gpu.gae`` alone (its outputs, the dones check and GAE kernels
and the check's flag read back; not ``compute_gae``'s Python checks).

MLP 4-64-64-2 and 17-64-64-6 (tanh, float32) forward and forward+backward at batch 1, 8, 64, 256,
2048 through ``minippo.nn.MLP``: time per call and numpy/numba speed-up (numpy/cupy on a GPU), the
backends timed in alternating rounds (``best_interleaved``). Target: >= 3x at B <= 8. Above
``kernels.cpu.max_batch`` (256 for these nets) the numba backend runs numpy's BLAS path itself:
those rows say so, and their ratio is ~1. At B <= 8 a second line times the numba kernels alone
(preallocated outputs, no Python checks): numpy over that bounds what any Python around the kernels
could reach.

``ActorCritic.act`` (the rollout's per-step call: both MLPs, distribution, sample, log-prob) for the
CartPole preset policy (4-64-64, Discrete(2)), a 17-64-64 Gaussian (6-d) and the CartPole policy with
one trunk shared by actor and critic at batch 1, 8, 64: numpy,
numba with the fused act (``kernels/cpu_act.py``), and numba without it (MLPs through ``kernels/cpu.py``),
the three timed in alternating rounds. On a GPU also at 256 and 2048, and cupy twice: through
``kernels/act.cu`` (``kernels/gpu_act.py``) and through the array operations it replaces.

``Adam.step`` with clipping over the same two actor-critics' parameters: numpy; on a GPU, cupy through
the two ``kernels/adam.cu`` kernels and cupy through the array operations they replace, each cupy call
ending in a device synchronise.
"""

from __future__ import annotations

import os
import sys
import timeit

# Measure the checkout this script is in, not whichever minippo is installed (``python benchmarks/...``
# puts benchmarks/ first on sys.path, not the repository root); the header prints which was imported.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy loads BLAS
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from minippo import backend  # noqa: E402
from minippo.advantages import compute_gae  # noqa: E402
from minippo.nn import MLP  # noqa: E402


def best(f, min_time: float = 0.2) -> float:
    """Seconds per call: best of 5 repeats of a loop long enough to take ~min_time / 5."""
    f()
    n = 1
    while timeit.timeit(f, number=n) < min_time / 5:
        n *= 2
    return min(timeit.repeat(f, number=n, repeat=5)) / n


def best_interleaved(calls: dict, min_time: float = 0.2, rounds: int = 7, on: dict | None = None) -> dict:
    """Seconds per call for each labelled callable, timed in alternating rounds (A, then B, then A
    ...) and keeping each one's best round: a slow spell of this shared VM then hits both sides of a
    ratio alike, instead of whichever happened to be timed during it. ``on`` maps a label to the
    backend selected before each of its rounds (labels not in it switch nothing); by default each
    label is its backend's name."""
    on = {name: name for name in calls} if on is None else on
    loops = {}
    for name, f in calls.items():
        if name in on:
            use(on[name])
        f()
        n = 1
        while timeit.timeit(f, number=n) < min_time / rounds:
            n *= 2
        loops[name] = n
    times = dict.fromkeys(calls, float("inf"))
    for _ in range(rounds):
        for name, f in calls.items():
            if name in on:
                use(on[name])
            times[name] = min(times[name], timeit.timeit(f, number=loops[name]) / loops[name])
    return times


def python_gae(r, v, d, lv, gamma, lam):
    T, N = len(r), len(r[0])
    adv = [[0.0] * N for _ in range(T)]
    for n in range(N):
        a, nv = 0.0, float(lv[n])
        for t in range(T - 1, -1, -1):
            nd = 1.0 - d[t][n]
            a = r[t][n] + gamma * nv * nd - v[t][n] + gamma * lam * nd * a
            adv[t][n] = a
            nv = v[t][n]
    return adv


def use(name: str) -> bool:
    os.environ[backend.ENV_VAR] = name
    backend.reset()
    try:
        _ = backend.name
        return True
    except (ImportError, RuntimeError) as e:
        print(f"  {name}: unavailable ({e})")
        return False


def bench_gae(backends: list[str]) -> None:
    print("GAE float32                time      vs Python loop   vs memory floor")
    rng = np.random.default_rng(0)
    for T, N in ((2048, 64), (128, 8)):
        host = [rng.normal(size=(T, N)).astype(np.float32) for _ in range(2)]
        host.append((rng.random((T, N)) < 0.01).astype(np.float32))
        lv = rng.normal(size=N).astype(np.float32)
        lists = [a.tolist() for a in host]
        src, dst = floor_arrays(host)
        # Every row of this size, the Python loop and the floor included, timed in alternating rounds.
        calls = {"python loop": lambda: python_gae(*lists, lv, 0.99, 0.95),  # noqa: B023
                 "memory floor": lambda: np.copyto(dst, src)}  # noqa: B023
        on = {}
        for name in backends:
            if not use(name):
                continue
            xp = backend.xp
            r, v, d, lv_ = (xp.asarray(a) for a in (*host, lv))
            sync = _sync(xp)
            # Arguments spelled out (no *args unpacking), as the floor's np.copyto(dst, src) is called.
            if xp is np:  # nothing around the call that the floor's call does not have
                calls[name] = lambda r=r, v=v, d=d, lv_=lv_: compute_gae(r, v, d, lv_, 0.99, 0.95)
            else:
                calls[name] = lambda r=r, v=v, d=d, lv_=lv_, sync=sync: (compute_gae(r, v, d, lv_, 0.99, 0.95),
                                                                         sync())
            on[name] = name
            # Writing into existing arrays, as the floor's copy does (RolloutBuffer passes its own through
            # compute_advantages, one call layer above this).
            out = (xp.asarray(np.empty_like(host[0])), xp.asarray(np.empty_like(host[0])))
            if xp is np:
                calls[name + " out="] = lambda r=r, v=v, d=d, lv_=lv_, out=out: compute_gae(
                    r, v, d, lv_, 0.99, 0.95, out=out)
            else:
                calls[name + " out="] = lambda r=r, v=v, d=d, lv_=lv_, out=out, sync=sync: (compute_gae(
                    r, v, d, lv_, 0.99, 0.95, out=out), sync())
            on[name + " out="] = name
            if xp is not np:  # the device's own floor: the same bytes copied on the device
                from minippo.kernels import gpu

                # gpu.gae alone, without compute_gae's Python checks: its output arrays, the dones
                # check and GAE kernels, the check's flag read back
                calls[name + " kernel"] = lambda r=r, v=v, d=d, lv_=lv_, sync=sync: (
                    gpu.gae(r, v, d, lv_, 0.99, 0.95), sync())
                on[name + " kernel"] = name
                d_src, d_dst = xp.asarray(src), xp.asarray(dst)
                calls["device floor"] = lambda d_src=d_src, d_dst=d_dst, xp=xp, sync=sync: (
                    xp.copyto(d_dst, d_src), sync())
        t = best_interleaved(calls, on=on)
        t_py, t_mem = t.pop("python loop"), t.pop("memory floor")
        t_dev = t.pop("device floor", None)
        dev_floor = "" if t_dev is None else f"   device floor {t_dev * 1e6:8.2f} us"
        print(f"  T={T:5d} N={N:3d}  python loop {t_py * 1e6:10.1f} us   memory floor "
              f"{t_mem * 1e6:8.2f} us{dev_floor}")
        for name, t_k in t.items():
            on_device = t_dev is not None and name.startswith("cupy")
            floor = f"{t_k / t_dev:6.2f}x (device floor)" if on_device else f"{t_k / t_mem:6.2f}x"
            print(f"    {name:11s} {t_k * 1e6:6.2f} us   {_times(t_py / t_k)}        {floor}")


def floor_arrays(host: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(src, dst) for the memory floor ``np.copyto(dst, src)``: a copy that moves as many bytes as GAE.
    GAE reads rewards, values, dones (T, N) and writes advantages and returns (T, N): 5 arrays'
    traffic, which a copy of 2.5 arrays (2.5 read, 2.5 written) moves too."""
    r = host[0]
    src = np.concatenate([a.ravel() for a in host])[: 5 * r.size // 2]
    return src, np.empty_like(src)


def _times(ratio: float) -> str:
    """A speed-up as printed in the table: whole numbers from 10x, two decimals below (0.20x, not 0x)."""
    return f"{ratio:9.0f}x" if ratio >= 10 else f"{ratio:9.2f}x"


def _sync(xp):
    if xp is np:
        return lambda: None
    return xp.cuda.Device().synchronize


def bench_mlp(backends: list[str]) -> None:
    print("MLP tanh float32, us per call (numpy / numba = speed-up of numba; the two timed in "
          "alternating rounds)")
    rng = np.random.default_rng(0)
    for sizes in ([4, 64, 64, 2], [17, 64, 64, 6]):
        mlp = MLP(sizes, activation="tanh", seed=0)
        fused_max = _fused_max_batch(sizes)
        for B in (1, 8, 64, 256, 2048):
            x = rng.normal(size=(B, sizes[0])).astype(np.float32)
            fwd, both = {}, {}
            for name in backends:
                if not use(name):
                    continue
                xb = backend.xp.asarray(x)
                if name == "cupy":
                    mlp_b = MLP(sizes, activation="tanh", seed=0)
                    mlp_b.params = {k: backend.xp.asarray(v) for k, v in mlp.params.items()}
                else:
                    mlp_b = mlp
                y, cache = mlp_b.forward(xb)
                dy = backend.xp.ones_like(y)
                sync = _sync(backend.xp)
                fwd[name] = lambda m=mlp_b, xb=xb, sync=sync: (m.forward(xb), sync())
                both[name] = lambda m=mlp_b, xb=xb, dy=dy, sync=sync: (m.backward(dy, m.forward(xb)[1]), sync())
            t_fwd, t_both = best_interleaved(fwd), best_interleaved(both)
            cells = "  ".join(f"{n} fwd {t_fwd[n] * 1e6:8.2f} fwd+bwd {t_both[n] * 1e6:8.2f}" for n in t_fwd)
            ratio = ""
            if "numpy" in t_fwd and "cupy" in t_fwd:
                ratio += (f"  cupy speed-up fwd {t_fwd['numpy'] / t_fwd['cupy']:5.2f}x "
                          f"fwd+bwd {t_both['numpy'] / t_both['cupy']:5.2f}x")
            if "numpy" in t_fwd and "numba" in t_fwd:
                ratio += (f"  numba speed-up fwd {t_fwd['numpy'] / t_fwd['numba']:5.2f}x "
                          f"fwd+bwd {t_both['numpy'] / t_both['numba']:5.2f}x")
                if B > fused_max:
                    ratio += f"  (numba runs numpy here: B > {fused_max}, the largest fused batch)"
            print(f"  {'-'.join(map(str, sizes)):11s} B={B:5d}  {cells}{ratio}")
            if "numba" in t_fwd and B <= 8:
                dy = np.ones((B, sizes[-1]), np.float32)
                print(kernels_alone(mlp, x, dy, t_fwd.get("numpy"), t_both.get("numpy")))


def _fused_max_batch(sizes: list[int]) -> int:
    """Largest batch the numba backend fuses for an MLP of ``sizes`` (0 without numba)."""
    try:
        from minippo.kernels import cpu
    except ImportError:
        return 0
    return cpu.max_batch(sizes)


def kernels_alone(mlp: MLP, x: np.ndarray, dy: np.ndarray, t_np_fwd: float | None, t_np_both: float | None) -> str:
    """The numba kernels called with preallocated outputs and no Python checks: what is left of a
    fused forward and forward+backward when the Python around them (state and input checks, fresh
    output arrays, the gradient views, the MLP methods) is taken away, and numpy's time over that
    (when numpy was timed, None otherwise): the highest speed-up any Python wrapper of these kernels
    could reach."""
    use("numba")
    from minippo.kernels import cpu

    cache = cpu.mlp_forward(mlp, x)
    st = cpu._state(mlp)
    hs, dx = cache[1:], np.empty_like(x)
    G = [np.empty(s, st.dt) for s in st.blocks]
    def fwd():
        st.fwd(x, st.P, *hs, st.act, st.act_out)
    def both():
        st.fwd(x, st.P, *hs, st.act, st.act_out)
        st.bwd(dy, *cache, st.P, *G, dx, True, st.S)
    f, b = best(fwd), best(both)
    ratio = "" if t_np_fwd is None or t_np_both is None else \
        f"numpy / kernels alone: fwd {t_np_fwd / f:5.2f}x fwd+bwd {t_np_both / b:5.2f}x; "
    return (f"  {'':11s} {'':7s}  numba kernels alone fwd {f * 1e6:6.2f} fwd+bwd {b * 1e6:6.2f}  "
            f"({ratio}best of 5, timed after the row)")


def bench_act(backends: list[str]) -> None:
    from minippo.policy import ActorCritic
    from minippo.spaces import Box, Discrete

    print("ActorCritic.act float32 tanh, us per call (speed-up of the fused numba act over numpy; on a "
          "GPU, of cupy: the observations uploaded, the distribution read back)")
    for obs_dim, space, label, shared in ((4, Discrete(2), "4-64-64 Discrete(2)", False),
                                          (17, Box(-np.ones(6), np.ones(6)), "17-64-64 Gaussian(6)", False),
                                          (4, Discrete(2), "4-64-64 shared trunk", True)):
        pol = ActorCritic(obs_dim, space, (64, 64), shared=shared)
        for B in (1, 8, 64, 256, 2048) if "cupy" in backends and use("cupy") else (1, 8, 64):
            obs = np.random.default_rng(0).normal(size=(B, obs_dim)).astype(np.float32)
            rng = np.random.default_rng(0)
            calls, on = {}, {}
            for name in backends:
                if not use(name):
                    continue
                if name == "cupy":  # the same network on the device; a rollout step's upload included
                    pol_d = ActorCritic(obs_dim, space, (64, 64), shared=shared).to(backend.to_device)
                    calls[name] = lambda pol_d=pol_d: pol_d.act(backend.to_device(obs), rng)  # noqa: B023
                    calls["cupy arrays"], on["cupy arrays"] = array_act(pol_d, obs, rng), name
                else:
                    calls[name] = lambda: pol.act(obs, rng)  # noqa: B023
                on[name] = name
                if name == "numba":
                    calls["numba unfused"], on["numba unfused"] = unfused_act(pol, obs, rng), name
            row = best_interleaved(calls, on=on)
            cells = "  ".join(f"{n} {t * 1e6:7.2f}" for n, t in row.items())
            ratio = ""
            for name, what in (("numba", "fused"), ("cupy", "cupy")):
                if {"numpy", name} <= set(row):
                    ratio += f"  {what} speed-up {row['numpy'] / row[name]:5.2f}x"
            if {"cupy", "cupy arrays"} <= set(row):
                ratio += f"  act.cu speed-up {row['cupy arrays'] / row['cupy']:5.2f}x"
            print(f"  {label:21s} B={B:3d}  {cells}{ratio}")


def without_fused(module, call):
    """A callable: ``call()`` with ``module``'s fused act switched off for the call (its ``MAX_BATCH``
    set to 0, then restored). The switch and the try/finally cost ~0.2 us, against 50-1000 us for an act."""

    def run():
        saved, module.MAX_BATCH = module.MAX_BATCH, 0
        try:
            return call()
        finally:
            module.MAX_BATCH = saved

    return run


def unfused_act(pol, obs: np.ndarray, rng: np.random.Generator):
    """``pol.act(obs, rng)`` on the numba backend without the fused act (its MLPs then run through
    ``kernels/cpu.py``, one call each)."""
    from minippo.kernels import cpu_act

    return without_fused(cpu_act, lambda: pol.act(obs, rng))


def array_act(pol, obs: np.ndarray, rng: np.random.Generator):
    """``pol.act`` on the device (cupy) without ``kernels/act.cu``: the array operations it replaces
    (cuBLAS matmuls, the distribution on the device)."""
    from minippo.kernels import gpu_act

    return without_fused(gpu_act, lambda: pol.act(backend.to_device(obs), rng))


def bench_adam(backends: list[str]) -> None:
    """Adam.step as the trainer calls it (clipping at 0.5) on an actor-critic's parameters."""
    from minippo.optim import Adam
    from minippo.policy import ActorCritic
    from minippo.spaces import Box, Discrete

    print("Adam.step float32, max_grad_norm 0.5, us per call (numba's is numpy's; on a GPU: through the "
          "kernels/adam.cu kernels, and through the array operations they replace; each call synchronised)")
    for obs_dim, space, label in ((4, Discrete(2), "4-64-64 Discrete(2)"),
                                  (17, Box(-np.ones(6), np.ones(6)), "17-64-64 Gaussian(6)")):
        pol = ActorCritic(obs_dim, space, (64, 64))
        rng = np.random.default_rng(0)
        grads = {k: rng.normal(size=p.shape).astype(p.dtype) for k, p in pol.params.items()}
        calls, on = {}, {}
        for name in backends:
            if name == "numba" or not use(name):
                continue
            for kind in ("kernels", "arrays") if name == "cupy" else ("",):
                # lr 1e-9: the parameters barely move over the many timed calls
                opt = Adam({k: backend.to_device(p.copy()) for k, p in pol.params.items()}, lr=1e-9)
                if kind == "arrays":
                    opt._device_table = lambda: None  # the array operations, as for a non-contiguous parameter
                g = {k: backend.to_device(a) for k, a in grads.items()}
                sync = _sync(backend.xp)
                tag = f"{name} {kind}".strip()
                calls[tag] = lambda opt=opt, g=g, sync=sync: (opt.step(g, max_grad_norm=0.5), sync())
                on[tag] = name
        row = best_interleaved(calls, on=on)
        cells = "  ".join(f"{n} {t * 1e6:7.2f}" for n, t in row.items())
        ratio = ""
        if {"cupy kernels", "cupy arrays"} <= set(row):
            ratio = f"  kernels speed-up {row['cupy arrays'] / row['cupy kernels']:5.2f}x"
        print(f"  {label:21s} {len(grads):2d} arrays  {cells}{ratio}")


BACKENDS = ("numpy", "numba", "cupy")


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/kernels.py [BACKEND ...]``: the named backends (default: all three;
    those that cannot load say why and are left out). Returns the exit status: 1 when a backend named
    on the command line could not load (its rows are missing), else 0."""
    import argparse

    import minippo

    parser = argparse.ArgumentParser(description="Kernel speed per backend (see the module docstring).")
    # No ``choices=``: Python 3.11's argparse checks an empty ``nargs="*"`` list against them and
    # refuses the plain ``python benchmarks/kernels.py``; the names are checked here instead.
    parser.add_argument("backends", nargs="*", metavar="BACKEND",
                        help=f"one of {', '.join(BACKENDS)} (default: all three)")
    names = parser.parse_args(argv).backends
    for name in names:
        if name not in BACKENDS:
            parser.error(f"argument BACKEND: invalid choice: {name!r} (choose from "
                         f"{', '.join(map(repr, BACKENDS))})")
    print(f"minippo from {os.path.dirname(minippo.__file__)}; numpy {np.__version__}; BLAS threads: "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    print("Best of 7 rounds; the entries of each table row (GAE: each size) timed in alternating rounds")
    backends = [name for name in BACKENDS if (not names or name in names) and use(name)]
    if backends:  # none loaded: no tables of labels without figures
        bench_gae(backends)
        bench_mlp(backends)
        bench_act(backends)
        bench_adam(backends)
    backend.reset()
    missing = [name for name in names if name not in backends]
    if missing:
        print(f"named but unavailable, so not measured: {', '.join(missing)}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
