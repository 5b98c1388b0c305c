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
  Observed 0.011 of it over 500 draws (3.0e-7 at |outputs| <= 9).
- ``ActorCritic.act`` on the kernel against the array path: the same actions (the draws come from
  the same Generator calls; the test keeps u away from a CDF boundary by more than the logits'
  rounding), and logp, values and dist params within the float32 tolerance above (rtol 1e-5, atol
  2e-5; observed <= 0.02 of it). In float64 the kernel's outputs are the reference's and the array
  path sums in numpy's order, <= 16 terms of O(1) a sum (~1e-15): 1e-12 (observed <= 0.008 of the
  bound, both dtypes together).
  predict's float64 actions (a mode: the argmax or the mean) likewise: 1e-12 (observed 3.5e-18).
- A bias set to 100 against v0 + 100: the kernel adds the bias first, so its <= 17 roundings are of
  partial sums near 100, half an ulp (3.8e-6) each: <= 6.5e-5, 6.5e-7 relative: rtol 1e-5 (observed
  7.6e-8). act_forward of float64 x against relu(x W) W2 in float64: the shim's float32 sums of 3 and
  4 terms, a few float32 ulps (the shim's IEEE operations give the same bits on every CPU): rtol 1e-5
  (observed 1.3e-7).
"""

import re

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
    assert re.search(r"\.extern \.shared \.align (8|16) \.b8 minippo_smem\[\]", text)  # dynamic shared memory
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
        clipped = np.clip(log_std, dtype(LO), dtype(HI))
        np.testing.assert_array_equal(y0[:, n_out:], np.broadcast_to(clipped, (B, n_out)))
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
    src = (cuda_shim.KERNELS / gpu.ACT_SOURCE).read_text(encoding="utf-8")
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


# ---------------------------------------------------------------- ActorCritic.act through the kernel
@pytest.fixture
def device(act_shim, monkeypatch):
    """ActorCritic.act's cupy path on the shim-backed stand-in (a fresh cupy module and compile cache)."""
    return cuda_shim.install_shim_cupy(act_shim, gpu.ACT_SOURCE, monkeypatch)


def make_policy(cp, discrete=True, dtype=np.float32, hidden=(16, 16), activation="tanh", seed=0, **kw):
    from minippo.policy import ActorCritic, Box, Discrete

    space = Discrete(4) if discrete else Box(low=-np.ones(3), high=np.ones(3))
    pol = ActorCritic(5, space, hidden=hidden, activation=activation, seed=seed, dtype=dtype, **kw)
    if not discrete:  # log-stds apart, one below the clip's range
        pol.params["log_std"][...] = np.array([-0.5, 0.3, -30.0], dtype)
    return pol.to(cp.asarray)


def array_path(monkeypatch, fn):
    """``fn()`` with the kernel path switched off: ActorCritic.act's array operations."""
    from minippo.kernels import gpu_act

    with monkeypatch.context() as m:
        m.setattr(gpu_act, "act", lambda *a, **k: None)
        return fn()


def host(a):
    return a.get() if hasattr(a, "get") else a


def assert_act_close(fused, arrays, dtype):
    """(actions, a_dev, logp, values, params) of the two paths: see the module's docstring."""
    tol = dict(rtol=1e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    a, a_dev = fused[0], host(fused[1])
    np.testing.assert_array_equal(a_dev, a)
    assert a.dtype == arrays[0].dtype and a.shape == arrays[0].shape
    if a.dtype.kind == "i":
        np.testing.assert_array_equal(a, arrays[0])
    else:
        np.testing.assert_allclose(a, arrays[0], **tol)
    for i, what in ((2, "logp"), (3, "values"), (4, "dist params")):
        got, want = host(fused[i]), host(arrays[i])
        assert got.dtype == want.dtype and got.shape == want.shape, what
        np.testing.assert_allclose(got, want, err_msg=what, **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("discrete", [True, False])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("shared", [False, True])
def test_act_through_the_kernel_matches_the_array_path(device, monkeypatch, dtype, discrete, activation,
                                                        deterministic, shared):
    """The same actions from the same draws (the Generators start alike), logp, values and dist params
    to rounding; one launch for both networks, the logits (or [mean, log_std]) down once. A shared
    trunk (since session 51) is each head's network's first layers: the same launch."""
    cp = device
    pol = make_policy(cp, discrete, dtype, hidden=(16, 9), activation=activation,  # (a trunk's width is its last)
                      temperature=0.7 if discrete else 1.0, shared=shared)
    obs = cp.asarray(np.random.default_rng(1).normal(size=(6, 5)).astype(dtype))
    before = dict(cp.STATS)
    fused = pol.act_with_device_actions(obs, np.random.default_rng(2), deterministic)
    assert cp.launches == [(gpu.ACT_NAMES[np.dtype(dtype)], (12,), (32,), 2 * 16 * np.dtype(dtype).itemsize)]
    assert cp.STATS["get"] - before["get"] == 1 and cp.STATS["bool"] == before["bool"]
    assert cp.STATS["upload"] - before["upload"] == 3  # the layer table (first act), actions, logp
    arrays = array_path(monkeypatch, lambda: pol.act_with_device_actions(obs, np.random.default_rng(2), deterministic))
    assert_act_close(fused, arrays, dtype)
    before = dict(cp.STATS)
    pol.act_with_device_actions(obs, np.random.default_rng(2), deterministic)
    assert cp.STATS["upload"] - before["upload"] == 2 and len(cp.launches) == 2  # the table is kept


@pytest.mark.parametrize("discrete", [True, False])
@pytest.mark.parametrize("deterministic", [True, False])
@pytest.mark.parametrize("shared", [False, True])
def test_predict_runs_the_actor_alone(device, monkeypatch, discrete, deterministic, shared):
    """predict (critic=False): one launch of the actor's rows (its own table, made once), one copy
    down, nothing up; the array path's actions. With a shared trunk, the trunk and the actor's head."""
    cp = device
    pol = make_policy(cp, discrete, np.float64, shared=shared)
    obs = np.random.default_rng(3).normal(size=(4, 5))
    before = dict(cp.STATS)
    got = pol.predict(obs, deterministic, np.random.default_rng(4))
    assert [launch[:2] for launch in cp.launches] == [(gpu.ACT_NAMES[np.dtype(np.float64)], (4,))]
    assert cp.STATS["get"] - before["get"] == 1
    # the observations, and the tables: both networks' (made with the state) and the actor's (first use)
    assert cp.STATS["upload"] - before["upload"] == 3
    want = array_path(monkeypatch, lambda: pol.predict(obs, deterministic, np.random.default_rng(4)))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    before, n = dict(cp.STATS), len(cp.launches)
    one = pol.predict(obs[0], deterministic, np.random.default_rng(4))
    np.testing.assert_allclose(one, want[0], rtol=1e-12, atol=1e-12)
    assert cp.STATS["upload"] - before["upload"] == 1  # (the tables kept: only the observation)
    assert cp.launches[n:] == [(gpu.ACT_NAMES[np.dtype(np.float64)], (1,), (32,), 2 * 16 * 8)]  # B = 1 too


def test_in_place_updates_are_read_and_rebinding_rebuilds_the_table(device, monkeypatch):
    """Adam and checkpoint loading write the arrays in place: the next act reads the new values through
    the same table. ``to`` (new arrays) makes a new table; a parameter rebound in the policy's dict
    alone (the MLP's differs) takes the array path."""
    cp = device
    pol = make_policy(cp)
    obs = cp.asarray(np.ones((2, 5), np.float32))
    pol.act(obs, np.random.default_rng(0))
    table = pol.__dict__["_gpu_act_state"].layers.table
    pol.params["critic.b2"][...] = cp.asarray(np.array([5.0], np.float32))
    _, _, values, _ = pol.act(obs, np.random.default_rng(0))
    assert pol.__dict__["_gpu_act_state"].layers.table is table
    want = array_path(monkeypatch, lambda: pol.act(obs, np.random.default_rng(0)))[2]
    np.testing.assert_allclose(host(values), host(want), rtol=1e-5, atol=2e-5)
    assert host(values).min() > 3.0
    pol.to(lambda a: cp.asarray(host(a) * 2))
    pol.act(obs, np.random.default_rng(0))
    assert pol.__dict__["_gpu_act_state"].layers.table is not table
    assert pol.__dict__["_gpu_act_state"].layers.nets[0][0][0] is pol.params["actor.W0"]
    n = len(cp.launches)
    # the policy's dict made to disagree with the MLP's (only by going round nn.Params' writes, which
    # rebind a name in both): the array path
    dict.__setitem__(pol.params, "actor.b0", pol.params["actor.b0"] + 1.0)
    pol.params.version += 1
    pol.act(obs, np.random.default_rng(0))
    assert len(cp.launches) == n and pol.__dict__["_gpu_act_state"].ok is False
    shared = make_policy(cp, shared=True)  # a trunk array rebound in both dicts: a new table that holds it
    shared.act(obs, np.random.default_rng(0))
    table = shared.__dict__["_gpu_act_state"].layers.table
    shared.params["trunk.b0"] = shared.trunk.params["b0"] = shared.params["trunk.b0"] + 1.0
    _, _, values, _ = shared.act(obs, np.random.default_rng(0))
    assert shared.__dict__["_gpu_act_state"].layers.table is not table
    assert all(net[0][1] is shared.params["trunk.b0"] for net in shared.__dict__["_gpu_act_state"].layers.nets)
    want = array_path(monkeypatch, lambda: shared.act(obs, np.random.default_rng(0)))[2]
    np.testing.assert_allclose(host(values), host(want), rtol=1e-5, atol=2e-5)


def test_a_copy_acts_with_its_own_parameters(device):
    """copy.deepcopy and pickle drop the state: the copy's table is made from the copy's arrays, so a
    change to one policy never shows in the other's acts."""
    import copy
    import pickle

    cp = device
    pol = make_policy(cp)
    obs = cp.asarray(np.ones((2, 5), np.float32))
    v0 = host(pol.act(obs, np.random.default_rng(0))[2])
    twin = copy.deepcopy(pol)
    assert "_gpu_act_state" not in twin.__dict__ and "_gpu_act_state" not in pickle.loads(pickle.dumps(pol)).__dict__
    twin.params["critic.b2"][...] = cp.asarray(np.array([100.0], np.float32))
    np.testing.assert_allclose(host(twin.act(obs, np.random.default_rng(0))[2]), v0 + 100.0, rtol=1e-5)
    np.testing.assert_array_equal(host(pol.act(obs, np.random.default_rng(0))[2]), v0)


def test_setups_the_kernel_does_not_take_run_the_array_path(device, monkeypatch):
    """A shared trunk whose output is not activated (not ActorCritic's), layers wider than a block's
    shared memory holds, a batch above MAX_BATCH, host parameters with device observations, a
    non-contiguous weight: no launch, the array path's result."""
    from minippo.kernels import gpu_act

    from minippo.nn import MLP

    cp = device
    wide = (gpu.ACT_SHARED_MAX // (2 * 4)) + 1  # float32: two rows of this width are over the limit
    linear_trunk = make_policy(cp, shared=True)
    trunk = MLP([5, 16, 16], activate_output=False)
    trunk.params.update({k: linear_trunk.params[f"trunk.{k}"] for k in trunk.params})
    linear_trunk.trunk = trunk
    cases = [linear_trunk, make_policy(cp, hidden=(wide,)),
             make_policy(cp, hidden=(3,), activation="tanh"), make_policy(cp)]
    fortran = cp.asarray(np.asfortranarray(host(cases[3].params["actor.W0"])))
    cases[3].params["actor.W0"] = cases[3].actor.params["W0"] = fortran
    obs = cp.asarray(np.ones((3, 5), np.float32))
    for i, pol in enumerate(cases):
        if i == 2:
            monkeypatch.setattr(gpu_act, "MAX_BATCH", 2)
        got = pol.act_with_device_actions(obs, np.random.default_rng(0))
        monkeypatch.setattr(gpu_act, "MAX_BATCH", 1 << 16)
        assert cp.launches == [], i
        want = array_path(monkeypatch, lambda pol=pol: pol.act_with_device_actions(obs, np.random.default_rng(0)))
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(host(got[2]), host(want[2]))
    from minippo.policy import ActorCritic, Discrete

    on_host = ActorCritic(5, Discrete(4), hidden=(8,))
    assert gpu_act.act(on_host, obs, np.random.default_rng(0)) is None and cp.launches == []
    # a log-std of another dtype than the policy's (the kernel writes it into the dist params)
    odd = make_policy(cp, discrete=False)
    odd.params["log_std"] = odd.params["log_std"].astype(np.float64)
    got = odd.act_with_device_actions(obs, np.random.default_rng(0))
    want = array_path(monkeypatch, lambda: odd.act_with_device_actions(obs, np.random.default_rng(0)))
    assert cp.launches == [] and odd.__dict__["_gpu_act_state"].ok is False
    np.testing.assert_array_equal(host(got[2]), host(want[2]))
    # an actor whose output layer is activated (the kernel's never is)
    from minippo.nn import MLP

    squashed = make_policy(cp, hidden=(8,))
    actor = MLP([5, 8, 4], activate_output=True)
    actor.params.update({k: squashed.params[f"actor.{k}"] for k in actor.params})
    squashed.actor = actor
    got = squashed.act_with_device_actions(obs, np.random.default_rng(0))
    want = array_path(monkeypatch, lambda: squashed.act_with_device_actions(obs, np.random.default_rng(0)))
    assert cp.launches == [] and squashed.__dict__["_gpu_act_state"].ok is False
    np.testing.assert_array_equal(host(got[4]), host(want[4]))
    missing = make_policy(cp)  # a weight taken out of the MLP's own dict: not the kernel's to guess at
    del missing.actor.params["W0"]
    assert gpu_act.act(missing, obs, np.random.default_rng(0)) is None and cp.launches == []
    # A Gaussian's actor of another output width than the action's, or a log-std of another length (both
    # rebound in every dict): the kernel would write dist params of the wrong width; the array path's error
    narrow = make_policy(cp, discrete=False, hidden=(8,))
    narrow.actor = MLP([5, 8, 2])
    for k in [k for k in narrow.params if k.startswith("actor.")]:
        del narrow.params[k]
    narrow.params.update({f"actor.{k}": cp.asarray(a) for k, a in narrow.actor.params.items()})
    narrow.actor.params.update({k: narrow.params[f"actor.{k}"] for k in narrow.actor.params})
    short = make_policy(cp, discrete=False)
    short.params["log_std"] = cp.asarray(np.zeros(2, np.float32))
    for pol in (narrow, short):
        with pytest.raises(ValueError) as fused:
            pol.act_with_device_actions(obs, np.random.default_rng(0))
        with pytest.raises(ValueError) as arrays:
            array_path(monkeypatch, lambda pol=pol: pol.act_with_device_actions(obs, np.random.default_rng(0)))
        assert str(fused.value) == str(arrays.value) and cp.launches == []


@pytest.mark.parametrize("acted_before", [False, True])
@pytest.mark.parametrize("swap", ["relu", "squashed"])
def test_a_network_swapped_in_with_the_same_arrays_runs_as_the_array_path_runs_it(device, monkeypatch, swap,
                                                                                    acted_before):
    """An actor MLP swapped in holding the policy's own arrays: of another activation (relu under a
    tanh policy) the kernel ran it as tanh; with its output activated, after a first act, the state
    (keyed by the arrays alone) was kept and the kernel ran the old network."""
    from minippo.kernels import gpu_act

    from minippo.nn import MLP

    cp = device
    pol = make_policy(cp, hidden=(8,))
    obs = cp.asarray(np.random.default_rng(1).normal(size=(6, 5)).astype(np.float32))
    if acted_before:
        pol.act_with_device_actions(obs, np.random.default_rng(0))
    actor = MLP([5, 8, 4], activation="relu") if swap == "relu" else MLP([5, 8, 4], activate_output=True)
    actor.params.update({k: pol.params[f"actor.{k}"] for k in actor.params})
    pol.actor = actor
    n = len(cp.launches)
    got = pol.act_with_device_actions(obs, np.random.default_rng(0))
    want = array_path(monkeypatch, lambda: pol.act_with_device_actions(obs, np.random.default_rng(0)))
    assert len(cp.launches) == n and pol.__dict__["_gpu_act_state"].ok is False
    np.testing.assert_array_equal(host(got[4]), host(want[4]))
    assert gpu_act.act(pol, obs, np.random.default_rng(0)) is None


@pytest.mark.parametrize("discrete", [True, False])
def test_non_finite_outputs_raise_as_the_array_path_does(device, monkeypatch, discrete):
    """A NaN weight (or log-std) raises the array path's FloatingPointError, naming the same array."""
    cp = device
    for where in (("actor.b1",) if discrete else ("actor.b1", "log_std")):
        pol = make_policy(cp, discrete)
        pol.params[where][...] = cp.asarray(np.full(pol.params[where].shape, np.nan, np.float32))
        obs = cp.asarray(np.ones((2, 5), np.float32))
        with pytest.raises(FloatingPointError) as fused:
            pol.act(obs, np.random.default_rng(0))
        with pytest.raises(FloatingPointError) as arrays:
            array_path(monkeypatch, lambda pol=pol, obs=obs: pol.act(obs, np.random.default_rng(0)))
        assert str(fused.value) == str(arrays.value) and str(fused.value).split()[0] in ("logits", "mean", "log_std")
        assert cp.launches
        if where == "actor.b1":  # predict's mode: the actor's output named, as the array path names it
            n = len(cp.launches)
            with pytest.raises(FloatingPointError) as fused:
                pol.predict(obs.get())  # (predict takes host observations)
            assert len(cp.launches) == n + 1
            with pytest.raises(FloatingPointError) as arrays:
                array_path(monkeypatch, lambda pol=pol, obs=obs: pol.predict(obs.get()))
            assert str(fused.value) == str(arrays.value) == "the policy's output contains NaN or inf"


def test_predict_s_mode_takes_any_temperature_as_the_array_path_does(device, monkeypatch):
    """The mode is the logits' argmax at any temperature on the array path; the kernel path built the
    distribution (logits / T) for it, and raised at T = 1e-40 in float32. Sampling does divide: both raise."""
    cp = device
    pol = make_policy(cp, True, np.float32, temperature=1e-40)
    pol.params["actor.b2"][...] = cp.asarray(np.array([0.5, 1.0, -0.5, 0.0], np.float32))  # logits ~1: / T overflows
    obs = np.random.default_rng(3).normal(size=(4, 5)).astype(np.float32)
    got = pol.predict(obs)
    assert cp.launches
    np.testing.assert_array_equal(got, array_path(monkeypatch, lambda: pol.predict(obs)))
    for run in (lambda: pol.predict(obs, False, np.random.default_rng(0)),
                lambda: array_path(monkeypatch, lambda: pol.predict(obs, False, np.random.default_rng(0)))):
        with np.errstate(over="ignore"), pytest.raises(FloatingPointError, match="temperature contains NaN or inf"):
            run()


def test_layer_table_and_forward_refuse_what_the_kernel_cannot_take(device, monkeypatch):
    cp = device
    rng = np.random.default_rng(0)
    W, b = cp.asarray(rng.normal(size=(3, 4)).astype(np.float32)), cp.asarray(np.zeros(4, np.float32))
    W2, b2 = cp.asarray(rng.normal(size=(4, 2)).astype(np.float32)), cp.asarray(np.zeros(2, np.float32))
    with pytest.raises(ValueError, match=r"nets must be one or two non-empty lists"):
        gpu.LayerTable([[(W, b)]] * 3)
    with pytest.raises(ValueError, match=r"nets must be one or two non-empty lists"):
        gpu.LayerTable([[(W, b)], []])
    with pytest.raises(TypeError, match="float32 or float64"):
        gpu.LayerTable([[(cp.asarray(np.ones((3, 4), np.int64)), b)]])
    with pytest.raises(ValueError, match=r"nets\[0\]\[1\] has W \(3, 4\) and b \(4,\): expected W \(4, n\)"):
        gpu.LayerTable([[(W, b), (W, b)]])
    with pytest.raises(ValueError, match=r"nets\[1\]\[0\] has W \(4, 2\).*expected W \(3, n\)"):
        gpu.LayerTable([[(W, b)], [(W2, b2)]])
    with pytest.raises(ValueError, match=r"nets\[0\]\[0\]'s W must be a C-contiguous 2-d float32 cupy array"):
        gpu.LayerTable([[(W.T.T[:, :2], b)]] if False else [[(cp.asarray(np.asfortranarray(host(W))), b)]])
    with pytest.raises(ValueError, match=r"nets\[0\]\[0\]'s b must be a C-contiguous 1-d float32"):
        gpu.LayerTable([[(W, host(b))]])
    with pytest.raises(ValueError, match=r"need \d+ bytes of shared memory a block, more than 49152"):
        n = gpu.ACT_SHARED_MAX // 8 + 1
        gpu.LayerTable([[(cp.asarray(np.zeros((3, n), np.float32)), cp.asarray(np.zeros(n, np.float32))),
                         (cp.asarray(np.zeros((n, 1), np.float32)), cp.asarray(np.zeros(1, np.float32)))]])
    with pytest.raises(ValueError, match=r"nets\[0\]\[0\]'s W must be a C-contiguous 2-d float32"):
        gpu.LayerTable([[(cp.asarray(np.ones(3, np.float32)), b)]])  # (a 1-d W of the right dtype)
    with pytest.raises(ValueError, match=r"nets\[0\]\[0\] has W \(3, 0\) and b \(0,\): expected W \(3, n\) and "
                                         r"b \(n,\), n >= 1"):
        gpu.LayerTable([[(cp.asarray(np.ones((3, 0), np.float32)), cp.asarray(np.ones(0, np.float32)))]])
    n = gpu.ACT_SHARED_MAX // 8  # two float32 rows of this width fill the shared memory exactly: allowed
    at_limit = gpu.LayerTable([[(cp.asarray(np.zeros((3, n), np.float32)), cp.asarray(np.zeros(n, np.float32))),
                                (cp.asarray(np.zeros((n, 1), np.float32)), cp.asarray(np.zeros(1, np.float32)))]])
    assert at_limit.shared_mem == gpu.ACT_SHARED_MAX and at_limit.block == gpu.ACT_BLOCK_MAX
    # the width counts the input and hidden rows (what shared memory holds), not the outputs
    W3, b3 = cp.asarray(np.ones((2, 70), np.float32)), cp.asarray(np.zeros(70, np.float32))
    narrow = gpu.LayerTable([[(cp.asarray(host(W)[:, :2].copy()), cp.asarray(np.zeros(2, np.float32))), (W3, b3)]])
    assert (narrow.width, narrow.out_dims, narrow.shared_mem, narrow.block) == (3, [70], 24, 96)
    table = gpu.LayerTable([[(W, b), (W2, b2)]])
    assert (table.in_dim, table.out_dims, table.width, table.block, table.n_nets) == (3, [2], 4, 32, 1)
    with pytest.raises(ValueError, match=r"x must be a \(B, 3\) cupy array, got ndarray \(2, 3\)"):
        gpu.act_forward(table, np.ones((2, 3), np.float32), False)
    with pytest.raises(ValueError, match=r"x must be a \(B, 3\) cupy array"):
        gpu.act_forward(table, cp.asarray(np.ones((2, 4), np.float32)), False)
    with pytest.raises(ValueError, match=r"log_std must be a C-contiguous 1-d float32 cupy array"):
        gpu.act_forward(table, cp.asarray(np.ones((2, 3), np.float32)), False, cp.asarray(np.ones(2)))
    with monkeypatch.context() as m:
        m.setattr(gpu, "GRID_MAX", 4)  # a launch's blocks: n_nets * B
        two = gpu.LayerTable([[(W, b)], [(W, b)]])
        gpu.act_forward(two, cp.asarray(np.ones((2, 3), np.float32)), False)
        with pytest.raises(ValueError, match="a batch of 3 rows is more than one launch's 4 blocks"):
            gpu.act_forward(two, cp.asarray(np.ones((3, 3), np.float32)), False)
    cp.launches.clear()
    y0, y1 = gpu.act_forward(table, cp.asarray(np.ones((0, 3), np.float32)), False)  # no rows: no launch
    assert y0.shape == (0, 2) and y1 is None and cp.launches == []
    y0, y1 = gpu.act_forward(table, cp.asarray(np.ones((2, 3))), True)  # float64 x: cast as forward casts
    assert y0.dtype == np.float32 and len(cp.launches) == 1
    np.testing.assert_allclose(host(y0), np.maximum(np.ones((2, 3)) @ host(W), 0) @ host(W2), rtol=1e-5)


# ---------------------------------------------------------------- a real device
@pytest.mark.gpu
@pytest.mark.skipif(not strict_cupy.real_device(), reason="needs cupy and a CUDA device")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("relu", [False, True])
def test_real_device_kernel_is_the_reference_mlp(dtype, relu):
    """On the device: act_forward against kernels/reference.py, widths past the block (256 threads)
    and a batch of many blocks. float32 within the sums' rounding (MLP_TOL); float64 within 1e-13 of
    the largest output: CUDA's tanh is within 1 ulp of libm's, not always the same bits, and relu's
    float64 sums equal the reference's (same order, no contraction), which the test asserts on a real
    device (benchmarks/gpu_check.sh's own test runs this on the stand-in, which sums as numpy does)."""
    import cupy

    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 7)).astype(dtype)
    actor, critic = mlp(rng, [7, 300, 64, 3], dtype), mlp(rng, [7, 300, 64, 1], dtype)
    table = gpu.LayerTable([[(cupy.asarray(n[f"W{i}"]), cupy.asarray(n[f"b{i}"])) for i in range(3)]
                            for n in (actor, critic)])
    log_std = np.array([-30.0, 0.5, np.nan], dtype)
    y0, y1 = gpu.act_forward(table, cupy.asarray(x), relu, cupy.asarray(log_std), LO, HI)
    y0, y1 = y0.get(), y1.get()
    activation = "relu" if relu else "tanh"
    for got, net in ((y0[:, :3], actor), (y1, critic)):
        want = ref.mlp_forward(net, x, activation)[0]
        if dtype == np.float64 and (not relu or hasattr(cupy, "STATS")):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-13 * max(1.0, np.abs(want).max()))
        else:
            assert_mlp_close(got, want, dtype)
    np.testing.assert_array_equal(y0[:, 3:], np.broadcast_to(np.clip(log_std, dtype(LO), dtype(HI)), (300, 3)))


@pytest.mark.gpu
@pytest.mark.skipif(not strict_cupy.real_device(), reason="needs cupy and a CUDA device")
@pytest.mark.parametrize("discrete", [True, False])
@pytest.mark.parametrize("B", [1, 8, 2048])
@pytest.mark.parametrize("shared", [False, True])
def test_real_device_act_matches_the_array_path(monkeypatch, discrete, B, shared):
    """ActorCritic.act on the device through act.cu against its array operations (cuBLAS, CuPy's
    distribution): the same actions and, to rounding, the same logp, values and dist params; a shared
    trunk too (not yet run on a device: none was lent in session 51, when it was added)."""
    import cupy

    for dtype in (np.float32, np.float64):
        pol = make_policy(cupy, discrete, dtype, hidden=(64, 64), shared=shared)
        obs = cupy.asarray(np.random.default_rng(B).normal(size=(B, 5)).astype(dtype))
        fused = pol.act_with_device_actions(obs, np.random.default_rng(2))
        assert pol.__dict__["_gpu_act_state"].ok
        arrays = array_path(monkeypatch, lambda pol=pol, obs=obs: pol.act_with_device_actions(
            obs, np.random.default_rng(2)))
        assert_act_close(fused, arrays, dtype)
