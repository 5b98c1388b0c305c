"""kernels/act.cu, the rollout's policy forward on the device, without a GPU: compiled by nvcc (and
NVRTC where CuPy has it), executed on the CPU through the host shim (tests/cuda_shim.py: a block's
threads run at once, so ``__syncthreads`` holds them as on a GPU), and driven by ``ActorCritic.act``
through the strict CuPy stand-in whose RawModule runs the shim. Tests that need a device are marked
``gpu`` and skipped without one.

Tolerances, and why:
- float64: none. The kernel sums each output as kernels/reference.py's ``linear_forward`` does (the
  bias, then the inputs in order, each product rounded, then added: the shim is built with
  -ffp-contract=off as gpu.py compiles with --fmad=false) and takes libm's tanh as the reference's
  ``math.tanh`` does, so the outputs equal the reference's bit for bit.
- float32: the kernel sums in float32 where the reference sums in float64 and rounds once; each
  output carries ~ (fan_in + 1) float32 roundings of partial sums no larger than the row's largest
  magnitudes, and tanhf is within 2 ulp: ``MLP_TOL`` scaled by the largest output, as
  tests/test_kernels_cpu.py checks the numba MLP.
- ``ActorCritic.act`` on the kernel against the array path: the same actions (the draws come from
  the same Generator calls; the test keeps u away from a CDF boundary by more than the logits'
  rounding), and logp, values and dist params within the float32 tolerance above.
"""

import sys

import cuda_shim
import numpy as np
import pytest
import strict_cupy
from hypothesis import given, settings
from hypothesis import strategies as st
from minippo.kernels import gpu
from minippo.kernels import reference as ref

ACT_CU = cuda_shim.KERNELS / gpu.ACT_SOURCE
NVCC, NVRTC = cuda_shim.NVCC, cuda_shim.NVRTC
ACT_KERNELS = tuple(gpu.ACT_NAMES.values())
MLP_TOL = {np.float32: dict(rtol=1e-5, atol=2e-5), np.float64: dict(rtol=0.0, atol=0.0)}
LO, HI = -20.0, 2.0


def assert_mlp_close(a, a_ref, dtype):
    """See the module's docstring: float64 bit for bit, float32 within sums' rounding."""
    if dtype == np.float64:
        np.testing.assert_array_equal(a, a_ref)
        return
    tol = MLP_TOL[np.float32]
    scale = max(1.0, float(np.abs(a_ref).max(initial=0.0)))
    np.testing.assert_allclose(a, a_ref, rtol=tol["rtol"], atol=tol["atol"] * scale)


@pytest.fixture(scope="module")
def act_shim(tmp_path_factory):
    return cuda_shim.build_shim(tmp_path_factory.mktemp("act_shim"), source=gpu.ACT_SOURCE)


# ---------------------------------------------------------------- compilers
@pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")
def test_nvcc_compiles_act_to_ptx_without_contracting_the_sums(tmp_path):
    text = cuda_shim.nvcc_ptx(ACT_CU, cuda_shim.nvcc_archs()[0], tmp_path)
    for name in ACT_KERNELS:
        assert f".entry {name}(" in text, name  # extern "C": unmangled
    assert ".extern .shared .align 16 .b8 minippo_smem[]" in text  # dynamic shared memory
    # --fmad=false marks each product and sum round-to-nearest (mul.rn / add.rn: never contracted);
    # the fma left are libdevice's tanh polynomial, which CuPy's tanh runs too
    for op in ("mul.rn.f32", "add.rn.f32", "mul.rn.f64", "add.rn.f64"):
        assert op in text, op
    assert "bar.sync" in text  # __syncthreads between the layers


@pytest.mark.skipif(NVRTC is None, reason="needs CuPy with the NVRTC library")
def test_nvrtc_compiles_act_as_cupy_does():
    text = cuda_shim.nvrtc_ptx(gpu.source(gpu.ACT_SOURCE), "compute_75")
    assert all(f".entry {name}(" in text for name in ACT_KERNELS)
    assert "mul.rn.f32" in text and "add.rn.f64" in text and "bar.sync" in text


# ---------------------------------------------------------------- the kernel on the CPU
def mlp(rng, sizes, dtype):
    """{W0, b0, ...} of an MLP with ``sizes``, weights ~ N(0, 1/fan_in), biases ~ N(0, 0.1)."""
    p = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        p[f"W{i}"] = (rng.normal(size=(a, b)) / np.sqrt(a)).astype(dtype)
        p[f"b{i}"] = (rng.normal(size=b) * 0.1).astype(dtype)
    return p


def host_table(nets):
    """act.cu's table of host arrays (the shim reads host addresses): (table, width)."""
    lengths = [len(n) // 2 for n in nets] + [0] * (2 - len(nets))
    records, widths = [], [nets[0]["W0"].shape[0]]
    for net in nets:
        L = len(net) // 2
        for i in range(L):
            W, b = net[f"W{i}"], net[f"b{i}"]
            records += [W.ctypes.data, b.ctypes.data, W.shape[0], W.shape[1]]
            if i < L - 1:
                widths.append(W.shape[1])
    return np.array(lengths + records, dtype=np.int64), max(widths)


def run_shim(lib, nets, x, relu, block, log_std=None):
    """act.cu on the CPU: (y0, y1) as the kernel leaves them (y0 with the clipped log_std beside)."""
    dtype = x.dtype.type
    table, width = host_table(nets)
    B, n_ls = x.shape[0], 0 if log_std is None else log_std.shape[0]
    y0 = np.full((B, nets[0][f"b{len(nets[0]) // 2 - 1}"].shape[0] + n_ls), np.nan, dtype)
    y1 = np.full((B, 1), np.nan, dtype) if len(nets) == 2 else y0
    args = (table, np.int32(len(nets)), np.int32(width), x, np.int32(B), np.int32(x.shape[1]), np.int32(relu),
            y0, np.int32(y0.shape[1]), y1, y0 if log_std is None else log_std, np.int32(n_ls), dtype(LO), dtype(HI))
    cuda_shim.launch(lib, gpu.ACT_NAMES[np.dtype(dtype)], (len(nets) * B,), (block,), args,
                     shared_mem=2 * width * x.itemsize)
    return y0, (y1 if len(nets) == 2 else None)


@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from([np.float32, np.float64]), B=st.integers(1, 4), obs_dim=st.integers(1, 9),
       hidden=st.lists(st.integers(1, 12), min_size=0, max_size=3), n_out=st.integers(1, 5),
       relu=st.booleans(), critic=st.booleans(), gaussian=st.booleans(), block=st.integers(1, 9),
       seed=st.integers(0, 2**32 - 1))
def test_kernel_on_the_cpu_is_the_reference_mlp(act_shim, dtype, B, obs_dim, hidden, n_out, relu, critic, gaussian,
                                                block, seed):
    """Drawn depths (no hidden layer too), widths on either side of the block (threads striding over
    the outputs), batch, activation, one network or two, the Gaussian's log-std beside the mean: each
    output row is kernels/reference.py's MLP forward."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, obs_dim)).astype(dtype)
    actor = mlp(rng, [obs_dim, *hidden, n_out], dtype)
    nets = [actor, mlp(rng, [obs_dim, *hidden[::-1], 1], dtype)] if critic else [actor]
    log_std = (rng.normal(size=n_out) * 15).astype(dtype) if gaussian else None
    y0, y1 = run_shim(act_shim, nets, x, relu, block, log_std)
    activation = "relu" if relu else "tanh"
    assert_mlp_close(y0[:, :n_out], ref.mlp_forward(actor, x, activation)[0], dtype)
    if gaussian:  # np.clip's result, every row
        np.testing.assert_array_equal(y0[:, n_out:], np.broadcast_to(np.clip(log_std, dtype(LO), dtype(HI)), (B, n_out)))
    else:
        assert y0.shape == (B, n_out)
    if critic:
        assert_mlp_close(y1, ref.mlp_forward(nets[1], x, activation)[0], dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_keeps_nan_as_the_array_path_does(act_shim, dtype):
    """A NaN log-std is clipped to NaN (np.clip's result), and a NaN input reaches the outputs through
    relu (np.maximum keeps it) and tanh: the policy's finiteness check then sees it, as on numpy."""
    rng = np.random.default_rng(0)
    nets = [mlp(rng, [3, 4, 2], dtype), mlp(rng, [3, 4, 1], dtype)]
    x = rng.normal(size=(2, 3)).astype(dtype)
    x[1, 0] = np.nan
    for relu in (True, False):
        y0, y1 = run_shim(act_shim, nets, x, relu, 4, np.array([np.nan, 0.5], dtype))
        assert np.isnan(y0[:, 2]).all() and (y0[:, 3] == dtype(0.5)).all()
        assert np.isfinite(y0[0, :2]).all() and np.isnan(y0[1, :2]).all()
        assert np.isfinite(y1[0]).all() and np.isnan(y1[1]).all()


def test_a_kernel_that_skips_a_barrier_fails_in_the_shim(tmp_path):
    """The shim's barrier is real: a kernel in which one thread leaves before ``__syncthreads`` is
    reported, so a race or a missing barrier in act.cu cannot pass unseen."""
    src = (cuda_shim.KERNELS / gpu.ACT_SOURCE).read_text()
    broken = src.replace("    __syncthreads();\n    for (int l = 0;",
                         "    if (threadIdx.x == 0) return;\n    __syncthreads();\n    for (int l = 0;")
    assert broken != src
    folder = tmp_path / "kernels"
    folder.mkdir()
    (folder / gpu.ACT_SOURCE).write_text(broken)
    lib = cuda_shim.build_shim(tmp_path, defines=(f"-I{folder}",), source=str(folder / gpu.ACT_SOURCE))
    rng = np.random.default_rng(0)
    nets = [mlp(rng, [2, 3, 1], np.float64)]
    x = rng.normal(size=(1, 2))
    with pytest.raises(AssertionError, match="never reached a __syncthreads"):
        run_shim(lib, nets, x, False, 2)
