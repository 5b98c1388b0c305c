"""kernels/adam.cu, the device Adam step, without a GPU: compiled by nvcc (and NVRTC where CuPy has
it), executed on the CPU through the host shim (tests/cuda_shim.py), and driven by ``Adam.step``
through the strict CuPy stand-in whose RawModule runs the shim. Tests that need a device are marked
``gpu`` and skipped without one.

Tolerance: none. Each kernel line performs Adam.step's numpy operations in the same order and dtype
with the scalars rounded as numpy rounds them (the shim built with -ffp-contract=off, as gpu.py
compiles with --fmad=false; division and sqrt correctly rounded on both), so the parameters and
moments must equal numpy's bit for bit. The norms Adam.step returns on the stand-in's array operations
(a non-contiguous, float16 or mixed-dtype parameter) are compared with == too: the stand-in runs
numpy's own astype and vdot on the same values. Only on a device with clipping may the gradient norm
differ (cuBLAS sums in its own order): that one test allows the rounding it carries (see there: 4 ulps
of each of the 3 steps of ~lr and an ulp of the parameter each step).
"""

import copy

import cuda_shim
import numpy as np
import pytest
import strict_cupy
from hypothesis import given, settings
from hypothesis import strategies as st
from minippo.kernels import gpu

from minippo.optim import Adam, GradientOverflowError, step_norm_limit

ADAM_CU = cuda_shim.KERNELS / gpu.ADAM_SOURCE
NVCC, NVRTC = cuda_shim.NVCC, cuda_shim.NVRTC
ADAM_KERNELS = (*gpu.GATHER_NAMES.values(), *gpu.UPDATE_NAMES.values())


@pytest.fixture(scope="module")
def adam_shim(tmp_path_factory):
    return cuda_shim.build_shim(tmp_path_factory.mktemp("adam_shim"), source=gpu.ADAM_SOURCE)


@pytest.fixture
def device(adam_shim, monkeypatch):
    """Adam.step's device path on the shim-backed stand-in (a fresh cupy module and compile cache)."""
    return cuda_shim.install_shim_cupy(adam_shim, gpu.ADAM_SOURCE, monkeypatch)


def network(rng, dtype, shapes=((4, 8), (8,), (8, 8), (8,), (8, 2), (2,))):
    params = {f"p{i}": rng.normal(size=s).astype(dtype) for i, s in enumerate(shapes)}
    grads = [{k: (rng.normal(size=p.shape) * rng.choice([1e-3, 1.0, 30.0])).astype(dtype) for k, p in params.items()}
             for _ in range(3)]
    return params, grads


def run_adam(params, grads, to_device=None, max_grad_norm=0.5, **kw):
    """Three Adam steps from ``params`` on ``grads``; on the device when ``to_device`` is given:
    (norms, params, m, v, t) on the host."""
    up = to_device or (lambda a: a)
    down = (lambda a: a.get()) if to_device else (lambda a: a)
    p = {k: up(a.copy()) for k, a in params.items()}
    opt = Adam(p, **kw)
    norms = [opt.step({k: up(a) for k, a in g.items()}, max_grad_norm=max_grad_norm) for g in grads]
    return (norms, {k: down(a) for k, a in p.items()}, down(opt._m), down(opt._v), opt.t)


def assert_same_bits(got, want):
    (n1, p1, m1, v1, t1), (n2, p2, m2, v2, t2) = got, want
    np.testing.assert_array_equal(n1, n2)
    assert p1.keys() == p2.keys() and t1 == t2
    for k in p1:
        np.testing.assert_array_equal(p1[k], p2[k], err_msg=k)
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_array_equal(v1, v2)


# ---------------------------------------------------------------- compilers
@pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")
def test_nvcc_compiles_adam_to_ptx_with_correctly_rounded_division_and_sqrt(tmp_path):
    text = cuda_shim.nvcc_ptx(ADAM_CU, cuda_shim.nvcc_archs()[0], tmp_path)
    for name in ADAM_KERNELS:
        assert f".entry {name}(" in text, name  # extern "C": unmangled
    assert "fma" not in text  # --fmad=false: numpy's roundings
    assert "sqrt.rn.f32" in text and "div.rn.f32" in text and "div.rn.f64" in text
    assert "approx" not in text and "div.full" not in text  # no fast, less exact division or sqrt


@pytest.mark.skipif(NVRTC is None, reason="needs CuPy with the NVRTC library")
def test_nvrtc_compiles_adam_as_cupy_does():
    text = cuda_shim.nvrtc_ptx(gpu.source(gpu.ADAM_SOURCE), "compute_75")
    assert all(f".entry {name}(" in text for name in ADAM_KERNELS)
    assert "fma" not in text and "approx" not in text


# ---------------------------------------------------------------- the kernels on the CPU
def launcher(lib, arrays, block, blocks):
    """A launch of an adam.cu kernel over ``arrays`` (host arrays: their addresses go in the table),
    with ``blocks`` blocks per array of ``block`` threads: ``launch(name, *rest of the args)``."""
    offsets = np.concatenate([[0], np.cumsum([a.size for a in arrays])]).astype(np.int64)
    table = np.concatenate([np.array([a.ctypes.data for a in arrays], np.int64), offsets])
    head = (table, np.int32(len(arrays)), np.int32(blocks))
    return lambda name, *rest: cuda_shim.launch(lib, name, (len(arrays) * blocks,), (block,), (*head, *rest))


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from([np.float32, np.float64]),
       sizes=st.lists(st.integers(0, 40), min_size=1, max_size=5),
       block=st.integers(1, 8), blocks=st.integers(1, 3), t=st.integers(1, 3000),
       lr=st.floats(1e-6, 1.0), b1=st.floats(0.0, 0.99), b2=st.floats(0.0, 0.9999), eps=st.floats(1e-10, 1e-2),
       clip=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_kernels_on_the_cpu_give_numpy_adams_bits(adam_shim, dtype, sizes, block, blocks, t, lr, b1, b2, eps, clip,
                                                 seed):
    """Drawn sizes (empty arrays too), launch shapes (fewer threads than elements: the stride loop),
    hyperparameters and step counts: the gathered gradient is the arrays one after another, and the
    update leaves parameters and moments where Adam.step on numpy does, bit for bit."""
    rng = np.random.default_rng(seed)
    params = {f"p{i}": rng.normal(size=n).astype(dtype) for i, n in enumerate(sizes)}
    grads = {k: (rng.normal(size=p.shape) * 10.0 ** rng.integers(-4, 3)).astype(dtype) for k, p in params.items()}
    size = sum(sizes)
    m0 = rng.normal(size=size).astype(dtype)
    v0 = np.abs(rng.normal(size=size)).astype(dtype) * dtype(rng.integers(0, 2))  # all zero half the time (t = 1)
    host = Adam({k: p.copy() for k, p in params.items()}, lr=lr, betas=(b1, b2), eps=eps)
    host._m[...], host._v[...], host.t = m0, v0, t - 1
    max_norm = 0.5 if clip else 0.0
    norm = host.step(grads, max_grad_norm=max_norm)
    scale = max_norm / (norm + 1e-12) if clip and norm > max_norm else 1.0

    arrays = [p.copy() for p in params.values()]
    g, m, v = np.full(size, np.nan, dtype), m0.copy(), v0.copy()
    launcher(adam_shim, [*grads.values()], block, blocks)(gpu.GATHER_NAMES[np.dtype(dtype)], g)
    np.testing.assert_array_equal(g, np.concatenate([a.ravel() for a in grads.values()]))
    real = np.dtype(dtype).type
    scalars = (real(scale), real(b1), real(1.0 - b1), real(b2), real(1.0 - b2), real(1.0 - b2**t), real(eps),
               real(lr / (1.0 - b1**t)))
    g_before = g.copy()
    launcher(adam_shim, arrays, block, blocks)(gpu.UPDATE_NAMES[np.dtype(dtype)], g, m, v, *scalars)
    for a, k in zip(arrays, params, strict=True):
        np.testing.assert_array_equal(a, host.params[k], err_msg=k)
    np.testing.assert_array_equal(m, host._m)
    np.testing.assert_array_equal(v, host._v)
    np.testing.assert_array_equal(g, g_before)  # the gradient is read only


# ---------------------------------------------------------------- Adam.step on the stand-in
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("max_grad_norm", [0.0, 0.5, 1e9])
def test_adam_step_through_the_kernels_gives_numpy_bits(device, dtype, max_grad_norm):
    rng = np.random.default_rng(1)
    params, grads = network(rng, dtype)
    got = run_adam(params, grads, device.asarray, max_grad_norm, lr=0.01)
    assert_same_bits(got, run_adam(params, grads, None, max_grad_norm, lr=0.01))
    assert [name for name, *_ in device.launches] == [gpu.GATHER_NAMES[np.dtype(dtype)],
                                                        gpu.UPDATE_NAMES[np.dtype(dtype)]] * 3
    assert device.compiled == [gpu.ADAM_SOURCE]  # compiled once, on first use


def test_a_step_is_two_launches_and_one_table_upload(device, monkeypatch):
    """The device work of a step: the gradients' address table up (their arrays are new each step),
    the gather, the norm (astype + vdot, read back: the one sync) and the update; the parameters'
    table goes up once. The array operations this replaces were ~40 here (6 arrays). The norm is
    taken without clipping too: a non-finite gradient raises before the update, as on the CPU."""
    rng = np.random.default_rng(2)
    params, grads = network(rng, np.float32)
    p = {k: device.asarray(a) for k, a in params.items()}
    opt = Adam(p)
    tables = []
    real_table = gpu.ArrayTable
    monkeypatch.setattr(gpu, "ArrayTable", lambda *a, **kw: tables.append(real_table(*a, **kw)) or tables[-1])
    counts = []
    for clip in (0.5, 0.5, 0.0):
        g = {k: device.asarray(a) for k, a in grads[0].items()}
        before = dict(device.STATS)
        opt.step(g, max_grad_norm=clip)
        counts.append({k: device.STATS[k] - before[k] for k in ("upload", "ops", "float", "bool", "get")})
    assert counts[0] == {"upload": 2, "ops": 4, "float": 1, "bool": 0, "get": 0}, counts
    assert counts[1] == {"upload": 1, "ops": 4, "float": 1, "bool": 0, "get": 0}, counts
    assert counts[2] == {"upload": 1, "ops": 4, "float": 1, "bool": 0, "get": 0}, counts
    # the parameters' table once, then each step's gradients' table on its layout (offsets not made again)
    assert len(tables) == 4 and all(t.offsets is tables[0].offsets for t in tables[1:])
    n = len(params)
    blocks = [max(1, min(-(-a.size // gpu.ADAM_BLOCK), gpu.ADAM_BLOCKS_MAX)) for a in params.values()]
    assert {(grid, block) for _, grid, block, _ in device.launches} == {((n * max(blocks),), (gpu.ADAM_BLOCK,))}


def test_large_arrays_take_at_most_the_block_cap_and_stride(device, monkeypatch):
    """An array of more than ADAM_BLOCKS_MAX * ADAM_BLOCK elements is covered by the stride loop."""
    monkeypatch.setattr(gpu, "ADAM_BLOCK", 4)
    monkeypatch.setattr(gpu, "ADAM_BLOCKS_MAX", 3)
    rng = np.random.default_rng(3)
    params, grads = network(rng, np.float64, shapes=((7, 9), (1,), (5,)))
    assert_same_bits(run_adam(params, grads, device.asarray), run_adam(params, grads))
    assert {grid for _, grid, *_ in device.launches} == {(3 * 3,)}


def test_gradients_of_another_dtype_or_layout_are_gathered_as_numpy_casts_them(device):
    rng = np.random.default_rng(4)
    params, grads = network(rng, np.float32)
    odd = [{k: (np.asfortranarray(a.astype(np.float64)) if a.ndim == 2 else a.astype(np.float64))
            for k, a in g.items()} for g in grads]
    assert_same_bits(run_adam(params, odd, device.asarray), run_adam(params, odd))


def test_a_non_contiguous_parameter_takes_the_array_operations(device):
    """The kernels need C-contiguous parameters; a transposed view steps by the array operations,
    to the same bits, and launches nothing."""
    rng = np.random.default_rng(5)
    params, grads = network(rng, np.float32)
    p = {k: device.asarray(a) for k, a in params.items()}
    p["p0"] = device.asarray(np.ascontiguousarray(params["p0"].T)).T  # (4, 8), F-ordered
    opt = Adam(p)
    host = Adam({k: a.copy() for k, a in params.items()})
    for g in grads:
        assert opt.step({k: device.asarray(a) for k, a in g.items()}, max_grad_norm=0.5) == \
            host.step(g, max_grad_norm=0.5)
    assert device.launches == []
    for k in params:
        np.testing.assert_array_equal(p[k].get(), host.params[k])


def test_float16_parameters_take_the_array_operations(device):
    """The kernels are float32 and float64 only: float16 parameters (Adam takes them, as a float16
    MLP runs on numpy) raised 'arrays must be float32 or float64' in the table on cupy; they step by
    the array operations, to numpy's bits."""
    params, grads = network(np.random.default_rng(6), np.float16)
    got, want = run_adam(params, grads, device.asarray), run_adam(params, grads)
    assert device.launches == []
    assert_same_bits(got, want)


def test_parameters_of_mixed_dtypes_take_the_array_operations(device):
    """The table was made from the first parameter's dtype alone: a parameter of another dtype (made
    so, or rebound to one after a step) raised 'arrays[1] must be a C-contiguous float32 cupy array'
    where numpy steps. They step by the array operations, to numpy's bits."""
    rng = np.random.default_rng(8)
    params, grads = network(rng, np.float32)
    first = next(iter(params))
    for rebind_after in (0, 1):  # mixed from the start; rebound after one step through the kernels
        p = {k: device.asarray(a) for k, a in params.items()}
        host_p = {k: a.copy() for k, a in params.items()}
        opt, host = Adam(p), Adam(host_p)
        device.launches.clear()
        for i, g in enumerate(grads):
            if i == rebind_after:
                host_p[first] = host_p[first].astype(np.float64)
                p[first] = device.asarray(host_p[first])
                launched = len(device.launches)
            assert opt.step({k: device.asarray(a) for k, a in g.items()}, max_grad_norm=0.5) == \
                host.step(g, max_grad_norm=0.5)
        assert len(device.launches) == launched == 2 * rebind_after  # none once the dtypes were mixed
        for k in params:
            assert p[k].dtype == host_p[k].dtype
            np.testing.assert_array_equal(p[k].get(), host_p[k])


def test_a_replaced_parameter_gets_a_new_table_and_a_copy_updates_only_its_own(device):
    """The table holds addresses: a parameter array replaced in the dict is found (by identity) and
    the table made again, so the new array is updated, not the old one; a deep copy of the optimizer
    (its parameters copied too) makes its own table instead of writing through the original's."""
    rng = np.random.default_rng(6)
    params, grads = network(rng, np.float32)
    p = {k: device.asarray(a) for k, a in params.items()}
    opt = Adam(p, lr=0.1)
    opt.step({k: device.asarray(a) for k, a in grads[0].items()})
    old = p["p2"]
    kept = old.get()
    p["p2"] = device.asarray(params["p2"])
    opt.step({k: device.asarray(a) for k, a in grads[1].items()})
    np.testing.assert_array_equal(old.get(), kept)
    assert not np.array_equal(p["p2"].get(), params["p2"])

    p["p3"] = device.asarray(np.zeros(9, np.float32))  # (8,) when Adam was made: refused, nothing written
    before = {k: a.get() for k, a in p.items()}
    with pytest.raises(ValueError, match=r"^params\['p3'\] has shape \(9,\), but this Adam was made for \(8,\)$"):
        opt.step({k: device.asarray(a) for k, a in grads[1].items()})
    for k in p:
        np.testing.assert_array_equal(p[k].get(), before[k], err_msg=k)
    p["p3"] = device.asarray(params["p3"])

    twin = copy.deepcopy(opt)
    before = {k: a.get() for k, a in p.items()}
    twin.step({k: device.asarray(a) for k, a in grads[2].items()})
    for k in p:
        np.testing.assert_array_equal(p[k].get(), before[k], err_msg=k)  # the original is untouched
        assert not np.array_equal(twin.params[k].get(), before[k])


def test_an_adam_pickled_before_the_table_existed_steps_on_the_device(device):
    """An Adam pickled before session 49 has no ``_table``: unpickled, it makes one on its first step."""
    rng = np.random.default_rng(9)
    params, grads = network(rng, np.float32)
    opt = Adam({k: device.asarray(a) for k, a in params.items()})
    state = opt.__getstate__()
    del state["_table"]
    old = Adam.__new__(Adam)
    old.__setstate__(state)
    old.step({k: device.asarray(a) for k, a in grads[0].items()})
    assert [name for name, *_ in device.launches] == ["adam_gather_f32", "adam_update_f32"]


@pytest.mark.parametrize("value, clip", [(np.inf, 0.5), (np.inf, 0.0), (2e19, 0.0), (2e19, 1e19)])
def test_a_norm_the_step_cannot_take_raises_before_the_update(device, value, clip):
    """A non-finite norm, clipping or not (without, the update kernel wrote NaN into every parameter); and
    optim.check_step_norm's limit (session 68): float32 entries of 2e19 (norm 8e19), whose squares overflow
    float32, not clipped or clipped to a max_grad_norm past the limit (1e19 > ~9.2e18), would have made
    the update kernel's second moment inf."""
    rng = np.random.default_rng(7)
    params, grads = network(rng, np.float32)
    p = {k: device.asarray(a) for k, a in params.items()}
    opt = Adam(p)
    bad = {k: device.asarray(a) for k, a in grads[0].items()}
    bad["p4"] = device.asarray(np.full((8, 2), value, np.float32))
    with np.errstate(over="ignore"):
        assert 1e19 > step_norm_limit(np.float32) and np.isinf(np.float32(2e19) * np.float32(2e19))
    error, match = (FloatingPointError, "gradient norm is inf") if value == np.inf else \
        (GradientOverflowError, "may overflow Adam's float32 second moment")
    with pytest.raises(error, match=match):
        opt.step(bad, max_grad_norm=clip)
    assert opt.t == 0 and not opt._m.get().any() and not opt._v.get().any()
    assert [name for name, *_ in device.launches] == ["adam_gather_f32"]
    for k in params:
        np.testing.assert_array_equal(p[k].get(), params[k])


def test_table_and_flat_vectors_refuse_what_the_kernels_cannot_take(device, monkeypatch):
    ok = device.asarray(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="arrays is empty"):
        gpu.ArrayTable([])
    with pytest.raises(TypeError, match="arrays must be float32 or float64, got int64"):
        gpu.ArrayTable([device.asarray(np.zeros(3, np.int64))])
    with pytest.raises(ValueError, match=r"arrays\[1\] must be a C-contiguous float32 cupy array, got ndarray float64"):
        gpu.ArrayTable([ok, device.asarray(np.zeros(3))])
    with pytest.raises(ValueError, match=r"arrays\[1\] must be a C-contiguous float32"):
        gpu.ArrayTable([ok, ok.T])
    with pytest.raises(ValueError, match=r"arrays\[0\] must be a C-contiguous float32 cupy array, got ndarray"):
        gpu.ArrayTable([np.zeros(3, np.float32)])  # a host array
    with monkeypatch.context() as m:  # a grid of more blocks than CUDA launches
        m.setattr(gpu, "GRID_MAX", 5)
        gpu.ArrayTable([ok] * 5)  # 5 blocks: fits
        with pytest.raises(ValueError, match=r"^6 arrays of 1 blocks each are more than one launch's 5 blocks$"):
            gpu.ArrayTable([ok] * 6)
        m.setattr(gpu, "ADAM_BLOCK", 2)
        with pytest.raises(ValueError, match=r"^2 arrays of 3 blocks each are more than one launch's 5 blocks$"):
            gpu.ArrayTable([ok] * 2)
    table = gpu.ArrayTable([ok, device.asarray(np.zeros(4, np.float32))])
    assert table.size == 10 and table.offsets.tolist() == [0, 6, 10]
    with pytest.raises(ValueError, match=r"^arrays of sizes \[6, 3\] do not have layout's sizes \[6, 4\]$"):
        gpu.ArrayTable([ok, device.asarray(np.zeros(3, np.float32))], layout=table)
    wrong = r"^arrays\[0\] must be a C-contiguous float32 cupy array, got ndarray float64$"  # (the layout's dtype)
    with pytest.raises(ValueError, match=wrong):
        gpu.ArrayTable([device.asarray(np.zeros((2, 3))), device.asarray(np.zeros(4))], layout=table)
    twin = gpu.ArrayTable([ok, device.asarray(np.zeros(4, np.float32))], layout=table)
    assert twin.offsets is table.offsets and (twin.size, twin.blocks_per_array) == (10, table.blocks_per_array)
    with pytest.raises(TypeError, match=r"^g must be a cupy array \(on the device with the table's arrays\), got nd"):
        gpu.adam_gather(table, np.zeros(10, np.float32))
    for bad, got in ((np.zeros(9, np.float32), r"float32 \(9,\)"), (np.zeros(10), r"float64 \(10,\)"),
                     (np.zeros((10, 1), np.float32), r"float32 \(10, 1\)")):
        with pytest.raises(ValueError, match=rf"^g must be a C-contiguous float32 vector of 10 elements, got {got}$"):
            gpu.adam_gather(table, device.asarray(bad))
    flat = device.asarray(np.zeros(10, np.float32))
    with pytest.raises(ValueError, match=r"^v must be a C-contiguous float32 vector of 10 elements, got float32 \(9"):
        gpu.adam_update(table, flat, flat, device.asarray(np.zeros(9, np.float32)), 1.0, 0.1, (0.9, 0.999), 1e-5, 1)
    assert device.launches == []


def test_source_names_are_checked():
    assert "adam_update_f32" in gpu.source(gpu.ADAM_SOURCE)
    with pytest.raises(ValueError, match=r"name='x.cu' is not a CUDA source of minippo; use one of \('gae.cu', 'adam"):
        gpu.source("x.cu")


# ---------------------------------------------------------------- a real device
@pytest.mark.gpu
@pytest.mark.skipif(not strict_cupy.real_device(), reason="needs cupy and a CUDA device")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_real_device_kernels_give_the_array_operations_bits(dtype, monkeypatch):
    """On the device: the kernels against CuPy's own array operations (Adam.step's numpy lines on
    cupy arrays, taken by hiding the table) bit for bit, clipping included (both take the norm with
    the same cuBLAS vdot); and against numpy on the host bit for bit where nothing is clipped. With
    clipping the host's norm may differ in its last bits (another summation order): the scale then
    differs by ~1 ulp, the step by the same relative amount (Adam's step is ~lr in size), so the
    parameters within 4 ulp of the step size, lr * 4 * eps(dtype), for each of the 3 steps."""
    import cupy

    rng = np.random.default_rng(8)
    params, grads = network(rng, dtype, shapes=((4, 64), (64,), (64, 64), (64,), (64, 2), (2,)))
    for clip in (0.0, 0.5):
        fused = run_adam(params, grads, cupy.asarray, clip, lr=0.01)
        with monkeypatch.context() as m:
            m.setattr(Adam, "_device_table", lambda self: None)
            arrays = run_adam(params, grads, cupy.asarray, clip, lr=0.01)
        assert_same_bits(fused, arrays)
        host = run_adam(params, grads, None, clip, lr=0.01)
        if clip == 0.0:
            assert_same_bits(fused, host)
        else:
            for k in params:  # per step: 4 ulp of the step (~lr), 1 ulp of the parameter it is taken from
                tol = 3 * np.finfo(dtype).eps * (4 * 0.01 + np.abs(host[1][k]).max() + 0.03)
                np.testing.assert_allclose(fused[1][k], host[1][k], rtol=0, atol=tol, err_msg=k)
