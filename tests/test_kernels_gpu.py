"""The CUDA path without a GPU: kernels/gae.cu compiled by nvcc, executed on the CPU through a host
shim, and kernels/gpu.py run against a numpy stand-in for the few cupy calls it makes. Tests that
need a real device are marked ``gpu`` and skipped without one.

Tolerances, and why: the kernel performs the numpy loop's operations in the same order and dtype (gpu.py
compiles with --fmad=false; the host shim is built with -ffp-contract=off), so results must equal
``advantages.gae_numpy`` exactly. Against the reference (float64 sums, rounded once), TOL: in float32
numpy's loop rounds ~5 operations a step, a random walk of <= 5 T roundings of 2^-24 |G| each (|G| the
largest discounted sum): rtol 1e-5, atol 1e-5 (tests/test_kernels_cpu.py's GAE_TOL; observed 1.4e-6,
0.06 of TOL, on the fixed rollouts); the drawn rollouts scale rewards and values by 1e-3 .. 1e3, and the
atol with them (observed 0.25 of the bound over 600 draws, T <= 40). In float64 the kernel's operations
are the reference's (observed equal): 1e-12.
"""

import re
import subprocess
import sys
import types
from pathlib import Path

import cuda_shim
import numpy as np
import pytest
import strict_cupy
from hypothesis import given, settings
from hypothesis import strategies as st
from minippo.kernels import gpu
from minippo.kernels import reference as ref

from minippo import advantages, backend

CU = cuda_shim.CU
NVCC, NVRTC = cuda_shim.NVCC, cuda_shim.NVRTC
TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}
build_shim, kernel_params, launch = cuda_shim.build_shim, cuda_shim.kernel_params, cuda_shim.launch


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    """gae.cu as it ships (its default GAE_CHUNK)."""
    return build_shim(tmp_path_factory.mktemp("shim"))


def default_chunk() -> int:
    m = re.search(r"#define GAE_CHUNK (\d+)", CU.read_text(encoding="utf-8"))
    assert m, "gae.cu defines no default GAE_CHUNK"
    return int(m.group(1))


@pytest.fixture(scope="module", params=[1, 3])
def shim_chunk(request, tmp_path_factory):
    """(gae.cu compiled with another GAE_CHUNK, that chunk): any chunk must give the same results."""
    lib = build_shim(tmp_path_factory.mktemp(f"shim_chunk{request.param}"), (f"-DGAE_CHUNK={request.param}",))
    return lib, request.param


def rollout(T, N, dtype, seed=0):
    rng = np.random.default_rng(seed)
    dones = (rng.random((T, N)) < 0.3).astype(dtype)
    dones[:, :1] = 1.0
    if N > 1:
        dones[:, 1] = 0.0
    return (rng.normal(size=(T, N)).astype(dtype), rng.normal(size=(T, N)).astype(dtype), dones,
            rng.normal(size=N).astype(dtype))


# ---------------------------------------------------------------- nvcc
@pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")
def test_nvcc_compiles_gae_to_ptx(tmp_path):
    for arch in cuda_shim.nvcc_archs()[:2]:  # the oldest two this nvcc still targets (CUDA 13: sm_75+)
        text = cuda_shim.nvcc_ptx(CU, arch, tmp_path)
        for name in (*gpu.KERNEL_NAMES.values(), *gpu.CHECK_NAMES.values()):
            assert f".entry {name}(" in text, name  # extern "C": unmangled
        assert "fma.rn" not in text  # --fmad=false keeps numpy's rounding


@pytest.mark.skipif(NVRTC is None, reason="needs CuPy with the NVRTC library")
@pytest.mark.parametrize("arch", ["compute_75", "compute_90"])
def test_nvrtc_compiles_the_sources_as_cupy_does(arch):
    """NVRTC is what ``cupy.RawModule`` compiles with (no host headers, unlike nvcc): kernels/gae.cu
    with ``gpu.NVRTC_OPTIONS`` and the backend's probe compile, unmangled and without FMA
    contraction. No device needed (session 34: NVRTC 12.9 from pip, on a machine without a GPU)."""
    from minippo.backend import PROBE_SOURCE

    kernels = (*gpu.KERNEL_NAMES.values(), *gpu.CHECK_NAMES.values())
    for src, entries in ((gpu.source(), kernels), (PROBE_SOURCE, ("minippo_probe",))):
        text = cuda_shim.nvrtc_ptx(src, arch)
        assert all(f".entry {name}(" in text for name in entries), text[:500]
        if src is not PROBE_SOURCE:
            assert "fma.rn" not in text  # --fmad=false keeps numpy's rounding


# ---------------------------------------------------------------- host shim
def shim_check(lib, d, grid=None, block=4):
    """dones_check_* over d (T, N): the flag it leaves (0: all 0 or 1)."""
    T, N = d.shape
    bad = np.zeros((), np.int32)
    grid = grid or max(1, (T * N + block - 1) // block)
    launch(lib, gpu.CHECK_NAMES[d.dtype], (grid,), (block,), (d, np.int32(T), np.int32(N), bad))
    return int(bad)


def shim_gae(lib, r, v, d, lv, gamma, lam, bad=0, out=None):
    """The GAE kernel with the flag ``bad`` as the check left it, into ``out`` (default: new arrays)."""
    dtype = r.dtype.type
    T, N = r.shape
    adv, ret = out if out is not None else (np.empty_like(r), np.empty_like(r))
    name = gpu.KERNEL_NAMES[np.dtype(dtype)]
    block = 4  # several blocks and idle threads past N
    args = (r, v, d, lv, dtype(gamma), dtype(gamma * lam), np.int32(T), np.int32(N), adv, ret,
            np.array(bad, np.int32))
    launch(lib, name, ((N + block - 1) // block,), (block,), args)
    return adv, ret


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("value", [2.0, 0.5, -1.0, np.nan, np.inf, 1e-30])
@pytest.mark.parametrize("grid", [None, 1, 2])  # a thread an entry, or fewer threads: the grid-stride loop
def test_dones_check_on_cpu_flags_any_entry_not_0_or_1(shim, dtype, value, grid):
    T, N = 7, 5
    for where in [(0, 0), (3, 2), (T - 1, N - 1)]:  # first, middle, last (the stride's last pass)
        d = (np.arange(T * N).reshape(T, N) % 3 == 0).astype(dtype)
        assert shim_check(shim, d, grid) == 0
        d[where] = value
        assert shim_check(shim, d, grid) == 1, where
    assert shim_check(shim, np.full((T, N), -0.0, dtype), grid) == 0  # -0.0 == 0
    assert shim_check(shim, np.ones((1, 1), dtype), grid) == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gae_kernel_writes_nothing_when_the_check_flagged(shim, dtype):
    r, v, d, lv = rollout(20, 6, dtype)
    out = (np.full_like(r, 7.0), np.full_like(r, 8.0))
    shim_gae(shim, r, v, d, lv, 0.99, 0.95, bad=1, out=out)
    assert (out[0] == 7.0).all() and (out[1] == 8.0).all()
    shim_gae(shim, r, v, d, lv, 0.99, 0.95, bad=0, out=out)
    np.testing.assert_array_equal(out[0], advantages.gae_numpy(r, v, d, lv, 0.99, 0.95)[0])


# T: one step, fewer steps than a chunk, whole chunks only (1x, 2x), whole chunks and a tail
CHUNK_T = sorted({1, 9, 13, default_chunk(), 2 * default_chunk(), 2 * default_chunk() + 5})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("T,N", [(T, N) for T in CHUNK_T for N in (1, 7)])
def test_cuda_source_on_cpu_matches_reference(shim, dtype, T, N):
    r, v, d, lv = rollout(T, N, dtype, seed=T * 100 + N)
    gamma, lam = 0.97, 0.9
    adv, ret = shim_gae(shim, r, v, d, lv, gamma, lam)
    adv_ref, ret_ref = ref.gae(r, v, d, lv, gamma, lam)
    np.testing.assert_allclose(adv, adv_ref, **TOL[dtype])
    np.testing.assert_allclose(ret, ret_ref, **TOL[dtype])
    adv_np, ret_np = advantages.gae_numpy(r, v, d, lv, gamma, lam)
    np.testing.assert_array_equal(adv, adv_np)
    np.testing.assert_array_equal(ret, ret_np)


@settings(max_examples=60, deadline=None)
@given(T=st.integers(1, 40), N=st.integers(1, 9), dtype=st.sampled_from([np.float32, np.float64]),
       gamma=st.sampled_from([0.0, 0.5, 0.97, 1.0]), lam=st.sampled_from([0.0, 0.9, 1.0]),
       done_rate=st.sampled_from([0.0, 0.3, 1.0]), scale=st.sampled_from([1e-3, 1.0, 1e3]),
       seed=st.integers(0, 2**32 - 1))
def test_cuda_source_on_cpu_matches_reference_on_drawn_rollouts(shim, T, N, dtype, gamma, lam, done_rate, scale,
                                                                 seed):
    """gae.cu through the CPU shim on drawn shapes (T across chunk edges, N across warps' lanes), discounts,
    episode ends and magnitudes: the plain-loop reference to rounding (TOL: float64 accumulation there, the
    input dtype here) and numpy's loop bit for bit (the same operations in the same order)."""
    rng = np.random.default_rng(seed)
    r, v = (scale * rng.normal(size=(2, T, N))).astype(dtype)
    d = (rng.random((T, N)) < done_rate).astype(dtype)
    lv = (scale * rng.normal(size=N)).astype(dtype)
    adv, ret = shim_gae(shim, r, v, d, lv, gamma, lam)
    for got, want in zip((adv, ret), ref.gae(r, v, d, lv, gamma, lam), strict=True):
        np.testing.assert_allclose(got, want, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * scale)
    for got, want in zip((adv, ret), advantages.gae_numpy(r, v, d, lv, gamma, lam), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("T", [1, 2, 3, 4, 7, 12])
def test_any_chunk_gives_the_shipped_results(shim, shim_chunk, dtype, T):
    """GAE_CHUNK only changes when the loads are issued: chunks 1 and 3 (whole chunks, a tail, or
    only a tail) give the shipped kernel's results bit for bit."""
    lib, chunk = shim_chunk
    r, v, d, lv = rollout(T, 5, dtype, seed=T + 10 * chunk)
    for got, want in zip(shim_gae(lib, r, v, d, lv, 0.99, 0.95), shim_gae(shim, r, v, d, lv, 0.99, 0.95),
                         strict=True):
        np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- gpu.py against a fake cupy
def fake_cupy(lib, devices=1):
    """The cupy calls gpu.py makes, on numpy arrays; RawModule runs gae.cu through the shim."""
    cp = types.ModuleType("cupy")
    compiled, launches = [], []

    class RawModule:
        def __init__(self, code, options=()):
            self.probe = code == backend.PROBE_SOURCE  # the backend's check that kernels run
            assert self.probe or "gae_f32" in code and all(isinstance(o, str) for o in options)
            if not self.probe:
                compiled.append(tuple(options))

        def get_function(self, name):
            if self.probe:
                return lambda grid, block, args: args[0].flat.__setitem__(0, 2.0)
            kernel_params(name)  # KeyError-like failure if the name is not in the source

            def run(grid, block, args):
                launches.append((name, grid, block))
                launch(lib, name, grid, block, args)
            return run

    def count():
        return devices

    cp.RawModule = RawModule
    cp.asarray = np.asarray
    cp.ascontiguousarray = np.ascontiguousarray
    cp.empty, cp.zeros = np.empty, np.zeros
    cp.may_share_memory = np.may_share_memory
    cp.ndarray = np.ndarray
    cp.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=count))
    cp.compiled, cp.launches = compiled, launches
    return cp


@pytest.fixture
def cupy_standin(shim, monkeypatch):
    cp = fake_cupy(shim)
    monkeypatch.setitem(sys.modules, "cupy", cp)
    monkeypatch.setattr(gpu, "_modules", {})
    yield cp
    backend.reset()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_wrapper_against_standin(cupy_standin, dtype):
    r, v, d, lv = rollout(300, 130, dtype)  # N > BLOCK: two blocks
    adv, ret = gpu.gae(r, v, d, lv, 0.99, 0.95)
    assert adv.dtype == ret.dtype == dtype
    adv_np, ret_np = advantages.gae_numpy(r, v, d, lv, 0.99, 0.95)
    np.testing.assert_array_equal(adv, adv_np)
    np.testing.assert_array_equal(ret, ret_np)
    gpu.gae(r, v, d, lv, 0.9, 0.5)
    assert cupy_standin.compiled == [gpu.NVRTC_OPTIONS]  # compiled once, lazily


@pytest.mark.parametrize("gamma, lam", [(0.9, 0.9), (0.99, 0.99), (0.95, 0.9)])
def test_wrapper_rounds_gamma_lambda_once_like_numpy(cupy_standin, gamma, lam):
    """gamma * lambda is rounded to float32 once, as numpy does: for these pairs that differs from
    float32(gamma) * float32(lambda) (0.81 against 0.80999994 for 0.9, 0.9); 0.99, 0.95 does not."""
    assert np.float32(gamma * lam) != np.float32(gamma) * np.float32(lam)
    r, v, d, lv = rollout(40, 5, np.float32)
    adv, ret = gpu.gae(r, v, d, lv, gamma, lam)
    want = advantages.gae_numpy(r, v, d, lv, gamma, lam)
    np.testing.assert_array_equal(adv, want[0])
    np.testing.assert_array_equal(ret, want[1])


@pytest.mark.parametrize("T,N", [(1, 1), (2, 129), (3, 256), (0, 3), (3, 0)])
def test_wrapper_launches_one_thread_per_env_in_whole_warps(cupy_standin, T, N):
    """Every env gets a thread (129 envs: two blocks), blocks are whole warps of 32, and an empty
    rollout launches nothing (CUDA refuses a grid of 0 blocks; T = 0 has nothing to compute)."""
    r, v, d, lv = rollout(T, N, np.float32, seed=N)
    adv, ret = gpu.gae(r, v, d, lv, 0.99, 0.95)
    want = advantages.gae_numpy(r, v, d, lv, 0.99, 0.95)
    np.testing.assert_array_equal(adv, want[0])
    np.testing.assert_array_equal(ret, want[1])
    if T == 0 or N == 0:
        assert cupy_standin.launches == [] and adv.shape == ret.shape == (T, N)
        return
    [(check, (cblocks,), (cthreads,)), (name, (blocks,), (threads,))] = cupy_standin.launches
    assert (check, name) == ("dones_check_f32", "gae_f32")  # the check first, on the same stream
    assert cthreads % 32 == 0 and 1 <= cblocks <= gpu.CHECK_GRID_MAX and (cblocks - 1) * cthreads < T * N
    assert threads % 32 == 0 and (blocks - 1) * threads < N <= blocks * threads


def test_wrapper_casts_and_empty(cupy_standin):
    r, v, d, lv = rollout(4, 3, np.float32)
    adv, _ = gpu.gae(r, v.astype(np.float64), d > 0, lv, 0.99, 0.95)  # mixed dtypes, bool dones
    np.testing.assert_allclose(adv, ref.gae(r, v, d, lv, 0.99, 0.95)[0], **TOL[np.float32])
    adv, ret = gpu.gae(r[:0], v[:0], d[:0], lv, 0.99, 0.95)  # T = 0: no launch
    assert adv.shape == (0, 3)
    for other in (np.float16, np.int64):  # no kernel of their own: float64's, as numpy's result dtype
        args = ((r * 4).astype(other), v.astype(other), d, lv.astype(other))
        adv, ret = gpu.gae(*args, 0.99, 0.95)
        want = advantages.gae_numpy(*args, 0.99, 0.95)
        assert adv.dtype == ret.dtype == want[0].dtype == np.float64
        np.testing.assert_array_equal(adv, want[0])
        np.testing.assert_array_equal(ret, want[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_wrapper_writes_into_out_only_where_the_kernel_may(cupy_standin, monkeypatch, dtype):
    """out= apart from the inputs and C-contiguous gets the kernel's writes (no new arrays). Any
    other out goes through new arrays and a copy: one over a shifted view of an input (the shim runs
    a thread's chunks in order, as the GPU does, so with T > GAE_CHUNK a direct write would overwrite
    rewards that a later chunk still reads), a strided one (the kernel writes row-major), one of
    another dtype, or two interleaved in one array. Every case gives numpy's numbers. One array for
    both is refused (it was given the returns, as the advantages too)."""
    T, N = 2 * default_chunk() + 5, 3
    r, v, d, lv = rollout(T, N, dtype)
    want = advantages.gae_numpy(r, v, d, lv, 0.99, 0.95)
    made = []
    monkeypatch.setattr(cupy_standin, "empty", lambda *a, **k: made.append(a) or np.empty(*a, **k))

    def strided():
        return np.full((T, 2 * N), np.nan, dtype)[:, ::2]

    def shifted():  # rewards = big[1:], adv written into big[:-1]: adv row t is rewards row t - 1
        big = np.concatenate([np.zeros((1, N), dtype), r])
        return big[1:], (big[:-1], np.empty_like(r))

    other = np.float64 if dtype == np.float32 else np.float32
    one = np.empty_like(r)
    cases = {"apart": (r, (np.empty_like(r), np.empty_like(r)), 0),
             "shifted over rewards": (*shifted(), 2),
             "strided": (r, (strided(), strided()), 2),
             "another dtype": (r, (np.empty((T, N), other), np.empty((T, N), other)), 2),
             "interleaved in one array": (r, (lambda w: (w[:, 0::2], w[:, 1::2]))(np.empty((T, 2 * N), dtype)), 2)}
    for name, (rewards, out, n_made) in cases.items():
        made.clear()
        got = gpu.gae(rewards, v, d, lv, 0.99, 0.95, out=out)
        assert got[0] is out[0] and got[1] is out[1] and len(made) == n_made, name
        np.testing.assert_array_equal(out[0], want[0].astype(out[0].dtype), err_msg=name)
        np.testing.assert_array_equal(out[1], want[1].astype(out[1].dtype), err_msg=name)
    one[...] = 7
    made.clear()
    with pytest.raises(ValueError, match=r"out\[0\] and out\[1\] share memory"):
        gpu.gae(r, v, d, lv, 0.99, 0.95, out=(one, one))
    assert (one == 7).all() and not made


def test_wrapper_refuses_bad_dones_and_leaves_out_as_it_was(cupy_standin):
    """gpu.gae called directly: the shim's check kernel flags the 2.0, the GAE kernel writes nothing,
    and the read-back flag raises with the message compute_gae's numpy path gives."""
    r, v, d, lv = rollout(20, 6, np.float32)
    d[13, 4] = 2.0
    out = (np.full_like(r, 7.0), np.full_like(r, 8.0))
    with pytest.raises(ValueError, match=r"^dones must hold only 0 and 1 \(episode-end flags\)$"):
        gpu.gae(r, v, d, lv, 0.99, 0.95, out=out)
    assert (out[0] == 7.0).all() and (out[1] == 8.0).all()


def test_launch_limits_are_cudas():
    """The limits the wrappers check before a launch, unpatched (the tests of the checks patch them
    small). GRID_MAX is CUDA's largest grid x-dimension, 2**31 - 1 blocks (every compute capability
    since 3.0); INDEX_MAX leaves the GAE kernels' int thread index of the last block (up to BLOCK - 1
    past T or N) below 2**31, within one block of that bound."""
    int_max = 2**31 - 1
    assert gpu.GRID_MAX == int_max
    assert gpu.INDEX_MAX + gpu.BLOCK - 1 <= int_max < gpu.INDEX_MAX + 2 * gpu.BLOCK


def test_wrapper_refuses_shapes_the_kernel_would_read_past(cupy_standin, monkeypatch):
    """gpu.gae called directly took T, N from rewards alone: short values or last_values were read past
    their ends on a device (the shim ran it and returned numbers). Refused before any launch."""
    r, v, d, lv = rollout(6, 4, np.float32)
    for args in ((r, v[:4], d, lv), (r, v, d[:, :3], lv), (r, v, d, lv[:1]), (r[0], v[0], d[0], lv)):
        with pytest.raises(ValueError, match=r"^rewards, values and dones must have one shape \(T, N\) and "
                                             r"last_values \(N,\), got "):
            gpu.gae(*args, 0.99, 0.95)
    assert cupy_standin.launches == []
    monkeypatch.setattr(gpu, "INDEX_MAX", 5)  # (as N = 2**31 - 1 would: the last block's threads wrap)
    with pytest.raises(ValueError, match=r"^T=6 and N=4 must be <= 5 \(the kernels index time and env in int\)"):
        gpu.gae(r, v, d, lv, 0.99, 0.95)
    assert cupy_standin.launches == []
    monkeypatch.setattr(gpu, "INDEX_MAX", 6)  # T at the limit: taken
    np.testing.assert_array_equal(gpu.gae(r, v, d, lv, 0.99, 0.95)[0], advantages.gae_numpy(r, v, d, lv, 0.99, 0.95)[0])


def test_wrapper_checks_byte_swapped_float64_dones_in_float64(cupy_standin):
    """Host dones in big-endian float64 beside float32 rewards were checked after the cast to float32
    (the check compared dtypes by equality, and '>f8' is not '<f8'): 1 + 1e-12 passed as a 1."""
    r, v, d, lv = rollout(20, 6, np.float32)
    for order in ("<", ">"):
        dones = d.astype(order + "f8")
        dones[3, 2] = 1 + 1e-12
        with pytest.raises(ValueError, match=r"^dones must hold only 0 and 1"):
            gpu.gae(r, v, dones, lv, 0.99, 0.95)
    assert [name for name, *_ in cupy_standin.launches] == ["dones_check_f64", "gae_f32"] * 2
    adv, _ = gpu.gae(r, v, d.astype(">f8"), lv, 0.99, 0.95)  # 0 and 1 in either order: as native
    np.testing.assert_array_equal(adv, advantages.gae_numpy(r, v, d, lv, 0.99, 0.95)[0])


def test_wrapper_takes_each_kernel_from_its_module_once(cupy_standin, monkeypatch):
    """RawModule.get_function makes a new RawKernel at each call (looked up on the device again):
    each kernel is taken once per module and kept."""
    taken = []
    real = cupy_standin.RawModule.get_function
    monkeypatch.setattr(cupy_standin.RawModule, "get_function",
                        lambda self, name: taken.append(name) or real(self, name))
    r, v, d, lv = rollout(5, 3, np.float32)
    for _ in range(3):
        gpu.gae(r, v, d, lv, 0.99, 0.95)
    gpu.gae(*(a.astype(np.float64) for a in (r, v, d, lv)), 0.99, 0.95)
    assert sorted(taken) == ["dones_check_f32", "dones_check_f64", "gae_f32", "gae_f64"]
    assert len(cupy_standin.launches) == 8 and cupy_standin.compiled == [gpu.NVRTC_OPTIONS]


def test_source_is_package_data_and_import_needs_no_cupy():
    assert "extern \"C\" __global__ void gae_f32" in gpu.source()
    code = ("import sys; sys.modules['cupy'] = None; import minippo.kernels.gpu as g; "
            "print(g._modules == {})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr


# ---------------------------------------------------------------- a real device
@pytest.mark.gpu
@pytest.mark.skipif(not strict_cupy.real_device(), reason="needs cupy and a CUDA device")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_real_device_matches_numpy(dtype):
    import cupy

    r, v, d, lv = rollout(257, 200, dtype)
    adv, ret = gpu.gae(*(cupy.asarray(a) for a in (r, v, d, lv)), 0.99, 0.95)
    adv_np, ret_np = advantages.gae_numpy(r, v, d, lv, 0.99, 0.95)
    np.testing.assert_array_equal(cupy.asnumpy(adv), adv_np)
    np.testing.assert_array_equal(cupy.asnumpy(ret), ret_np)


# ---------------------------------------------------------------- benchmarks/gpu_gae_chunk.py
def test_chunk_benchmark_runs_each_build_through_the_shim(tmp_path, monkeypatch, capsys):
    """The chunk sweep, which only a GPU times, on a stand-in whose RawModule compiles gae.cu with the
    script's -D options through the host shim: every build's results equal numpy's (no DIFF), a
    build that differs is flagged, and a chunk that is not an integer >= 1 is refused."""
    import importlib.util
    import time

    builds = {}

    class RawModule:
        def __init__(self, code, options=()):
            assert code == gpu.source() and set(gpu.NVRTC_OPTIONS) <= set(options)
            defines = tuple(o for o in options if o.startswith("-D"))
            if defines not in builds:
                d = tmp_path / f"build{len(builds)}"
                d.mkdir()
                builds[defines] = build_shim(d, defines)
            self.lib = builds[defines]

        def get_function(self, name):
            return lambda grid, block, args: launch(self.lib, name, grid, block, args)

    class Event:
        def record(self):
            self.t = time.perf_counter()

        def synchronize(self):
            pass

    cp = types.ModuleType("cupy")
    cp.__version__ = "stand-in"
    cp.RawModule, cp.asarray, cp.empty, cp.zeros, cp.asnumpy = RawModule, np.array, np.empty, np.zeros, np.array
    cp.cuda = types.SimpleNamespace(Event=Event, get_elapsed_time=lambda a, b: (b.t - a.t) * 1e3,
                                    runtime=types.SimpleNamespace(getDeviceProperties=lambda i: {"name": b"shim"}))
    monkeypatch.setitem(sys.modules, "cupy", cp)
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_gae_chunk.py"
    spec = importlib.util.spec_from_file_location("gpu_gae_chunk", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(script, "SIZES", ((21, 5), (3, 2)))
    assert script.main(["1", "4"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("   ")]
    assert len(rows) == 4 and "DIFF" not in out, out
    assert sorted(builds) == [("-DGAE_CHUNK=1",), ("-DGAE_CHUNK=4",)]
    # a build whose results differ is named: chunk 4's kernels made to write one wrong advantage
    real = RawModule.get_function

    def wrong_first_advantage(self, name):
        f = real(self, name)
        if self.lib is not builds[("-DGAE_CHUNK=4",)]:
            return f
        return lambda grid, block, args: (f(grid, block, args), args[-2].flat.__setitem__(0, 7.0))

    monkeypatch.setattr(RawModule, "get_function", wrong_first_advantage)
    assert script.main(["1", "4"]) == 0
    diff = [line for line in capsys.readouterr().out.splitlines() if "DIFF" in line]
    assert len(diff) == 4 and all(line.count("DIFF") == 1 and line.rstrip().endswith("DIFF") for line in diff)
    for argv in (["0"], ["x"], ["16", "1.5"]):
        assert script.main(argv) == 2 and f"CHUNK must be integers >= 1, got {argv}" in capsys.readouterr().err
