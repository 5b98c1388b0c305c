"""minippo.nn: linear/activation backward passes and the MLP, checked by central differences.

Tolerance: every check asks for a norm-wise relative error < 1e-6 (minippo.gradcheck.rel_error,
floor 1e-3). In float64 with h = 1e-6 the central-difference error is O(h^2 * f''') + O(eps/h),
about 1e-10 relative for these smooth, O(1)-sized functions, so 1e-6 leaves four orders of
margin while a wrong derivative shows as an error of order 1.
"""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from minippo import nn
from minippo.gradcheck import check_grads, numerical_grads, rel_error

TOL = 1e-6
FAST = settings(max_examples=30, deadline=None)


def _pre_activations(net, x):
    """Every hidden pre-activation z of ``net`` on ``x`` (to keep relu inputs off the kink)."""
    zs, h = [], x
    for i in range(net.n_layers):
        z = h @ net.params[f"W{i}"] + net.params[f"b{i}"]
        if net._activated(i):
            zs.append(z)
            h = np.maximum(z, 0) if net.activation == "relu" else np.tanh(z)
        else:
            h = z
    return zs


@st.composite
def mlp_case(draw, activations=("tanh", "relu")):
    n_hidden = draw(st.integers(0, 2))
    sizes = [draw(st.integers(1, 4)) for _ in range(n_hidden + 2)]
    batch = draw(st.integers(1, 4))
    activation = draw(st.sampled_from(activations))
    seed = draw(st.integers(0, 2**31 - 1))
    return sizes, batch, activation, seed


@FAST
@given(mlp_case())
def test_mlp_grads_match_finite_differences(case):
    sizes, batch, activation, seed = case
    rng = np.random.default_rng(seed)
    net = nn.MLP(sizes, activation=activation, out_gain=1.0, seed=seed, dtype=np.float64)
    for k in net.params:  # non-zero biases, so the bias path is exercised off zero
        if k.startswith("b"):
            net.params[k][...] = rng.normal(size=net.params[k].shape)
    x = rng.normal(size=(batch, sizes[0]))
    w = rng.normal(size=(batch, sizes[-1]))  # random upstream gradient dL/dy
    if activation == "relu":
        # The relu kink at z = 0 is not differentiable; a perturbation of h = 1e-6 in any weight
        # moves z by at most ~1e-6 * |input|, so 1e-3 keeps every difference on one side.
        assume(all(np.abs(z).min() > 1e-3 for z in _pre_activations(net, x)))

    def loss():
        return float((net.forward(x)[0] * w).sum())

    y, cache = net.forward(x)
    dx, grads = net.backward(w, cache)
    assert list(grads) == list(net.params)
    assert check_grads(loss, net.params, grads) < TOL
    num_dx = numerical_grads(loss, {"x": x})["x"]
    assert rel_error(dx, num_dx) < TOL
    none, grads_nodx = net.backward(w, cache, need_dx=False)  # the first layer's dx skipped, alone
    assert none is None and list(grads_nodx) == list(grads)
    for k in grads:
        np.testing.assert_array_equal(grads_nodx[k], grads[k])


@FAST
@given(st.integers(1, 5), st.integers(1, 5), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_linear_backward(batch, fan_in, fan_out, seed):
    rng = np.random.default_rng(seed)
    p = {"x": rng.normal(size=(batch, fan_in)), "W": rng.normal(size=(fan_in, fan_out)),
         "b": rng.normal(size=fan_out)}
    dy = rng.normal(size=(batch, fan_out))

    def loss():
        return float((nn.linear_forward(p["x"], p["W"], p["b"]) * dy).sum())

    dx, dW, db = nn.linear_backward(dy, p["x"], p["W"])
    assert dx.shape == p["x"].shape and dW.shape == p["W"].shape and db.shape == p["b"].shape
    assert check_grads(loss, p, {"x": dx, "W": dW, "b": db}) < TOL


@FAST
@given(st.integers(0, 2**31 - 1), st.sampled_from(["tanh", "relu"]))
def test_activation_backward(seed, name):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(3, 4))
    z[np.abs(z) < 1e-3] = 0.5  # off the relu kink
    fwd, bwd = nn.ACTIVATIONS[name]
    dh = rng.normal(size=z.shape)
    p = {"z": z}

    def loss():
        return float((fwd(p["z"]) * dh).sum())

    assert check_grads(loss, p, {"z": bwd(dh, fwd(z))}) < TOL


@FAST
@given(st.integers(0, 2**31 - 1), st.sampled_from(["float32", "float64"]), st.sampled_from(["float32", "float64"]),
       st.integers(1, 5), st.integers(1, 5), st.booleans())
def test_tanh_backward_is_the_plain_expression_bit_for_bit(seed, h_dtype, dh_dtype, batch, width, broadcast):
    """The in-place path (matching dtypes and shapes) and the fallback (mixed dtypes, a broadcast dh)
    give exactly dh * (1 - h * h): its value, dtype and shape."""
    rng = np.random.default_rng(seed)
    h = np.tanh(rng.normal(size=(batch, width)) * 3).astype(h_dtype)
    dh = rng.normal(size=(width,) if broadcast else (batch, width)).astype(dh_dtype)
    want = dh * (1.0 - h * h)
    got = nn.tanh_backward(dh, h)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("dh, h", [(np.float32(2.0), np.float32(0.5)), (np.array(2.0), np.array(0.5)), (2.0, 0.5),
                                   (2.0, np.full((2, 3), 0.5)), ([[2.0]], np.array([[0.5]]))])
def test_tanh_backward_takes_scalars_and_array_likes_as_the_plain_expression_does(dh, h):
    """0-d inputs (whose h * h is a numpy scalar, no output array) raised TypeError on the in-place path."""
    want = np.asarray(dh) * (1.0 - np.asarray(h) * np.asarray(h))
    got = np.asarray(nn.tanh_backward(dh, h))
    assert got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()


def test_tanh_backward_allocates_one_batch_sized_array():
    """dh * (1 - h * h) held two (B, F) temporaries at once; the numpy update's memory peak was the
    second (session 62). tracemalloc sees numpy's data buffers."""
    import tracemalloc

    h = np.tanh(np.random.default_rng(0).normal(size=(512, 256))).astype(np.float32)
    dh = np.ones_like(h)
    tracemalloc.start()
    try:
        out = nn.tanh_backward(dh, h)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.nbytes <= peak < 1.25 * out.nbytes  # (2 * nbytes before)


def test_relu_subgradient_at_zero_is_zero():
    z = np.array([[-1.0, 0.0, 2.0]])
    assert nn.relu_backward(np.ones_like(z), nn.relu_forward(z)).tolist() == [[0.0, 0.0, 1.0]]


# ---------------------------------------------------------------- initialisation
@FAST
@given(st.integers(1, 8), st.integers(1, 8), st.floats(0.01, 3.0), st.integers(0, 2**31 - 1))
def test_orthogonal_is_orthogonal_with_gain(rows, cols, gain, seed):
    w = nn.orthogonal((rows, cols), gain, np.random.default_rng(seed), np.float64)
    assert w.shape == (rows, cols)
    # float64 QR and one product of <= 8 terms: ~8 eps gain^2 <= 1e-14 (gain <= 3), as in test_bookkeeping
    if rows >= cols:  # orthonormal columns
        np.testing.assert_allclose(w.T @ w, gain**2 * np.eye(cols), atol=1e-12)
    else:  # orthonormal rows
        np.testing.assert_allclose(w @ w.T, gain**2 * np.eye(rows), atol=1e-12)


def test_mlp_init_gains_zero_biases_shapes_dtype():
    net = nn.MLP([5, 7, 6, 3], out_gain=0.01, seed=1)
    assert list(net.params) == ["W0", "b0", "W1", "b1", "W2", "b2"]
    for i, (a, b) in enumerate([(5, 7), (7, 6), (6, 3)]):
        assert net.params[f"W{i}"].shape == (a, b)
        assert net.params[f"W{i}"].dtype == np.float32
        assert not net.params[f"b{i}"].any()
    # hidden gain sqrt(2): singular values of an orthogonal (a, b) matrix all equal the gain. The float32
    # rounding E of the entries (|E_ij| <= 2^-24 |W_ij|) moves each by <= ||E||_2 <= 2^-24 ||W||_F =
    # 6e-8 gain sqrt(min(a, b)) <= 1.5e-7 gain here (SVD in float64 adds ~1e-15); measured <= 5.4e-8
    for i, gain in [(0, np.sqrt(2)), (1, np.sqrt(2)), (2, 0.01)]:
        s = np.linalg.svd(net.params[f"W{i}"].astype(np.float64), compute_uv=False)
        np.testing.assert_allclose(s, gain, rtol=1e-6)


def test_mlp_same_seed_same_params_and_generator_seed():
    a, b = nn.MLP([3, 4, 2], seed=7), nn.MLP([3, 4, 2], seed=7)
    c = nn.MLP([3, 4, 2], seed=np.random.default_rng(7))
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
        np.testing.assert_array_equal(a.params[k], c.params[k])
    assert not np.array_equal(a.params["W0"], nn.MLP([3, 4, 2], seed=8).params["W0"])


def test_deepcopy_keeps_parameters_as_views_of_its_own_flat():
    """What the numba kernels need of a copy (they read ``flat``): each parameter a view of the copy's
    flat where it was a view of the original's; a parameter rebound elsewhere is copied as itself."""
    import copy

    net = nn.MLP([3, 4, 2], activation="relu", seed=0, activate_output=True)
    net.params["b1"] = np.arange(2, dtype=np.float32)  # rebound outside flat
    twin = copy.deepcopy(net)
    assert (twin.sizes, twin.activation, twin.activate_output) == ([3, 4, 2], "relu", True)
    assert type(twin.params) is nn.Params and twin.params.version == 0 and list(twin.params) == list(net.params)
    for k, a in net.params.items():
        b = twin.params[k]
        np.testing.assert_array_equal(b, a)
        assert not np.shares_memory(b, a) and np.shares_memory(b, twin.flat) == np.shares_memory(a, net.flat)
    assert twin.params["W1"].ctypes.data - twin.flat.ctypes.data == net.params["W1"].ctypes.data - net.flat.ctypes.data
    twin.params["W0"] *= 0  # in place: the copy's flat, not the original's
    assert not twin.flat[:12].any() and net.flat[:12].all()
    x = np.ones((1, 3), np.float32)
    np.testing.assert_array_equal(copy.deepcopy(net).forward(x)[0], net.forward(x)[0])
    # views of flat that are not the element-aligned, C-ordered kind are copied alone, values kept
    net.params["W1"] = np.ndarray((2, 2), np.float32, buffer=net.flat, offset=2)  # inside an element
    net.params["b0"] = net.flat[::-2][:4]  # reversed
    twin = copy.deepcopy(net)
    for k in ("W1", "b0"):
        np.testing.assert_array_equal(twin.params[k], net.params[k])
        assert twin.params[k].base is not twin.flat and not np.shares_memory(twin.params[k], net.flat)


def test_forward_is_stateless():
    """Two forwards, then the backward of the first: still its gradient (no hidden state)."""
    rng = np.random.default_rng(0)
    net = nn.MLP([3, 4, 2], dtype=np.float64, seed=0)
    x1, x2 = rng.normal(size=(2, 3)), rng.normal(size=(5, 3))
    _, c1 = net.forward(x1)
    _, c1_again = net.forward(x1)
    net.forward(x2)
    dy = np.ones((2, 2))
    g1 = net.backward(dy, c1)[1]
    g2 = net.backward(dy, c1_again)[1]
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k])


def test_activate_output_applies_activation_to_last_layer():
    net = nn.MLP([2, 3], activation="tanh", activate_output=True, seed=0, dtype=np.float64)
    y, _ = net.forward(np.full((1, 2), 10.0))
    assert np.all(np.abs(y) <= 1.0)


def test_float32_forward_keeps_dtype():
    net = nn.MLP([3, 4, 2], seed=0)
    y, _ = net.forward(np.ones((2, 3), dtype=np.float32))
    assert y.dtype == np.float32


@pytest.mark.parametrize("backend_name", ["numpy", "numba"])
def test_inputs_are_computed_in_the_parameters_dtype_and_non_real_ones_refused(backend_name, request):
    """A float64 or int x into a float32 network silently computed in float64, gradients too; a
    complex x gave complex gradients and a string one failed inside numpy. Now a real x (and dy) is
    cast to the parameters' dtype, giving what the cast input gives, and anything else is named."""
    if backend_name == "numba":
        pytest.importorskip("numba")
    request.getfixturevalue(f"{backend_name}_backend")
    net = nn.MLP([3, 4, 2], seed=0)
    x32 = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
    want_y, want_cache = net.forward(x32)
    want_dx, want_g = net.backward(np.ones((2, 2), np.float32), want_cache)
    for x in (x32.astype(np.float64), (x32 * 4).astype(np.int64) / 4, x32.astype(np.float16)):
        y, cache = net.forward(x)
        dx, g = net.backward(np.ones((2, 2)), cache)  # a float64 dy too
        assert y.dtype == dx.dtype == g["W0"].dtype == np.float32
        np.testing.assert_array_equal(y, want_y)
        np.testing.assert_array_equal(dx, want_dx)
        for k in g:
            np.testing.assert_array_equal(g[k], want_g[k])
    y, _ = net.forward(np.ones((2, 3), np.int64))
    assert y.dtype == np.float32
    for bad in (x32.astype(np.complex64), np.array([["1", "2", "3"]])):
        with pytest.raises(TypeError, match=f"x must be a real array \\(float, int or bool\\), got dtype {bad.dtype}"):
            net.forward(bad)
    with pytest.raises(TypeError, match="dy must be a real array"):
        net.backward(np.ones((2, 2), np.complex64), want_cache)


# ---------------------------------------------------------------- bad inputs
def test_bad_activation_named():
    with pytest.raises(ValueError, match=r"activation='sigmoid'.*relu.*tanh"):
        nn.MLP([2, 2], activation="sigmoid")


@pytest.mark.parametrize("sizes", [[3], [3, 0, 2], [], [-1, 2]])
def test_bad_sizes_named(sizes):
    with pytest.raises(ValueError, match="sizes"):
        nn.MLP(sizes)


@pytest.mark.parametrize("shape", [(4,), (2, 5), (2, 3, 1)])
def test_forward_wrong_shape_named(shape):
    net = nn.MLP([3, 2])
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3\)"):
        net.forward(np.zeros(shape, dtype=np.float32))


def test_activation_is_fixed_at_construction():
    """numpy read activation / activate_output on every call, the numba path once into its dispatch
    state: changed later, the two backends computed different functions. Now they cannot change."""
    from minippo.policy import ActorCritic
    from minippo.spaces import Discrete

    m = nn.MLP([3, 4, 2])
    with pytest.raises(AttributeError, match=r"MLP.activation is fixed at construction \('tanh'\)"):
        m.activation = "relu"
    with pytest.raises(AttributeError, match=r"MLP.activate_output is fixed at construction \(False\)"):
        m.activate_output = True
    p = ActorCritic(3, Discrete(2), hidden=(4,), activation="relu")
    with pytest.raises(AttributeError, match=r"ActorCritic.activation is fixed at construction \('relu'\)"):
        p.activation = "tanh"
    assert (m.activation, m.activate_output, p.activation, p.actor.activation) == ("tanh", False, "relu", "relu")
