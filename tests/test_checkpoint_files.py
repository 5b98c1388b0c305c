"""Checkpoints saved by minippo 0.1.0 (format 1) keep loading and acting as they did.

The files in tests/data were written once by tests/data/make_format1.py and are never regenerated
to make this pass: a change that stops them loading, or changes what they do, breaks users' saved
models. The expected actions and values below are what the saving version printed.

Tolerances, and why: the networks are float32 with one hidden layer of 8 units; a BLAS other than the
one that printed the numbers, or numba's fused forward (its float32 tanh within 8 ulp), may sum the 3-4
input and 8 hidden products in another order: a few float32 roundings (6e-8 relative each) of O(1)
terms, each moving an output by ~1e-7 with the sign its own: rtol 1e-5, atol 1e-6 for the values (kept;
measured: bit-equal on numpy, <= 6.0e-8 on numba, one float32 ulp at 0.5). The continuous actions come
out of the 0.01-gain policy head, whose terms sum to <= 0.019 in size, so the same roundings move them
~100x less: rtol 1e-5, atol 1e-7 (was 1e-6, 2e-4 of the 0.005 actions; measured <= 4.7e-10, one row at a
time on numpy and numba). The discrete actions are compared exactly: their two logits differ by >= 0.014,
five orders of magnitude above that rounding (checked below).
"""

import os

import numpy as np
import pytest

from minippo import load_policy
from minippo.checkpoint import FORMAT, read_checkpoint

DATA = os.path.join(os.path.dirname(__file__), "data")
TOL = dict(rtol=1e-5, atol=1e-6)
ACT_TOL = dict(rtol=1e-5, atol=1e-7)
CASES = {
    "format1_cartpole.npz": dict(
        obs=[[0.01, -0.2, 0.03, 0.3], [-0.5, 0.4, -0.1, -0.6], [1.0, 1.5, 0.2, -1.0]],
        actions=[1, 1, 0],
        values=[0.02484302967786789, 0.09256622940301895, -0.4744015336036682],
        beta=1.0,
        env_id="CartPole-v1",
    ),
    "format1_pendulum.npz": dict(
        obs=[[1.0, 0.0, 0.0], [0.0, 1.0, -3.0], [-0.6, -0.8, 5.0]],
        actions=[[-0.004865697585046291], [-0.011164864525198936], [0.005753079894930124]],
        values=[0.8433302640914917, -0.44307202100753784, -0.5296729803085327],
        beta=0.25,  # kl_penalty halved it twice in the saved run
        env_id="Pendulum-v1",
    ),
}


def test_this_version_writes_the_format_the_files_have():
    assert FORMAT == 1


@pytest.mark.parametrize("name", sorted(CASES))
def test_saved_files_keep_their_meta(name):
    meta, arrays = read_checkpoint(os.path.join(DATA, name))
    case = CASES[name]
    assert (meta["format"], meta["minippo"]) == (1, "0.1.0")
    assert (meta["num_timesteps"], meta["iteration"], meta["total_timesteps"], meta["adam_t"]) == (64, 2, 64, 8)
    assert meta["beta"] == case["beta"] and meta["config"]["env_id"] == case["env_id"]
    assert all(arrays[k].dtype == np.float32 for k in arrays if k.startswith(("param/", "adam/")))


@pytest.mark.parametrize("name", sorted(CASES))
def test_saved_files_load_with_numpy_alone_and_act_as_they_did(name):
    case = CASES[name]
    pol = load_policy(os.path.join(DATA, name))
    obs = np.array(case["obs"])
    dist, values, _ = pol.policy.forward(pol.normalize(obs))
    np.testing.assert_allclose(values, case["values"], **TOL)
    got = pol.predict(obs)
    if pol.policy.discrete:
        assert float(np.abs(np.diff(dist.logits, axis=1)).min()) > 0.01  # far from a tie: exact compare
        np.testing.assert_array_equal(got, case["actions"])
    else:
        np.testing.assert_allclose(got, case["actions"], **ACT_TOL)
    for row, want in zip(obs, case["actions"], strict=True):  # one observation at a time, as deployed
        np.testing.assert_allclose(pol.predict(row), want, **ACT_TOL)


@pytest.mark.parametrize("name", sorted(CASES))
def test_saved_files_resume_training_with_their_state(name):
    pytest.importorskip("gymnasium")
    from minippo import PPO

    path = os.path.join(DATA, name)
    _, arrays = read_checkpoint(path)
    algo = PPO.load(path, total_timesteps=96)
    assert (algo.num_timesteps, algo.iteration, algo.optimizer.t, algo.kl_coef.beta) == (64, 2, 8, CASES[name]["beta"])
    assert algo.time_elapsed == 0.0  # 0.1.0 did not save the training time: the resumed run counts from 0
    for k, p in algo.policy.params.items():  # (loaded, not computed: bit-equal)
        np.testing.assert_array_equal(p, arrays[f"param/{k}"])
    np.testing.assert_array_equal(algo.obs_norm.rms.mean, arrays["obs_rms.mean"])
    algo.learn()
    assert (algo.num_timesteps, algo.iteration, algo.optimizer.t) == (96, 3, 12)


# ---------------------------------------------------------------- crafted files
# A checkpoint may come from elsewhere: its entries are checked against what its meta declares from
# the .npy headers, before any array's data is read or any network built. (tracemalloc sees numpy's
# allocations: the bound below is ~1/100 of what reading the crafted entries would take.)

def _crafted(tmp_path, edit_meta=None, extra=None, name="x.npz"):
    """format1_cartpole.npz rewritten as a zip with its meta edited and ``extra`` (name -> .npy bytes or
    raw bytes) added; every member compressed, as zero-filled crafted entries would be."""
    import io
    import json
    import zipfile

    src = os.path.join(DATA, "format1_cartpole.npz")
    out = tmp_path / name
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for member in zin.namelist():
            data = zin.read(member)
            if member == "meta.npy" and edit_meta is not None:
                meta = json.loads(str(np.load(io.BytesIO(data))))
                edit_meta(meta)
                buf = io.BytesIO()
                np.save(buf, np.array(json.dumps(meta)))
                data = buf.getvalue()
            zout.writestr(member, data)
        for member, data in (extra or {}).items():
            zout.writestr(member, data)
    return str(out)


def _npy_of_zeros(n):
    """The bytes of an .npy file of ``n`` float32 zeros, written without holding the array."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (n,)})
    return buf.getvalue() + bytes(4 * n)


def _refused_in_little_memory(path, match):
    import tracemalloc

    from minippo import PPO
    from minippo.checkpoint import CheckpointError

    for load in (read_checkpoint, load_policy, PPO.load):
        tracemalloc.start()
        try:
            with pytest.raises(CheckpointError, match=match):
                load(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 8e6, (load, peak)


def test_an_unknown_entry_is_refused_before_its_data_is_read(tmp_path):
    """An extra entry of 2e7 compressed zeros (80 MB unpacked, ~80 KB in the file) was unpacked, then
    accepted without a word: 2e8 took 3.7 s and 800 MB."""
    path = _crafted(tmp_path, extra={"zzz_extra.npy": _npy_of_zeros(2 * 10**7)})
    assert os.path.getsize(path) < 10**6
    _refused_in_little_memory(path, r"has an unexpected entry 'zzz_extra': not one minippo writes")
    path = _crafted(tmp_path, extra={"param/actor.W9.npy": _npy_of_zeros(10)}, name="y.npz")
    _refused_in_little_memory(path, r"has unexpected arrays \['param/actor.W9'\]: it belongs to another network")


@pytest.mark.parametrize(("edit", "match"), [
    (lambda m: (m["policy"].update(hidden=[10**9]), m["config"].update(hidden=[10**9])),
     r"array 'param/actor.W0' has shape \(4, 8\), expected \(4, 1000000000\)"),
    (lambda m: m["policy"].update(obs_dim=10**9), r"array 'param/actor.W0' has shape \(4, 8\), expected "
                                                  r"\(1000000000, 8\)"),
    (lambda m: m["policy"].update(action_space={"kind": "discrete", "n": 10**9, "start": 0}),
     r"array 'param/actor.W1' has shape \(8, 2\), expected \(8, 1000000000\)"),
    (lambda m: m["policy"].update(hidden=[8, 8]) or m["config"].update(hidden=[8, 8]),
     r"is missing array 'param/actor.W2'"),
    (lambda m: m["policy"].update(hidden="8") or m["config"].update(hidden="8"),
     r"meta's policy description is invalid: hidden must be a list"),
])
def test_a_declared_network_that_the_arrays_do_not_hold_is_refused_before_it_is_built(tmp_path, edit, match):
    """meta declaring hidden=[10**9] was built (18.6 GiB) before its arrays were compared with it: the
    process was killed, or MemoryError; hidden=[6000, 6000] took 84 s and 1.5 GB, then was refused."""
    _refused_in_little_memory(_crafted(tmp_path, edit), match)


def test_entries_stored_twice_or_a_huge_meta_are_refused(tmp_path):
    """A second member named 'meta' (no .npy suffix) replaced meta.npy's config; a meta entry is one
    string of bounded length (a crafted one would be unpacked whole before it is parsed)."""
    import io

    buf = io.BytesIO()
    np.save(buf, np.array("{}"))
    path = _crafted(tmp_path, extra={"meta": buf.getvalue()})
    _refused_in_little_memory(path, r"entries \['meta'\] are not .npy arrays")
    path = _crafted(tmp_path, extra={"param/log_std.npy": _npy_of_zeros(1)}, name="y.npz")
    _refused_in_little_memory(path, r"has unexpected arrays \['param/log_std'\]")
    huge = io.BytesIO()  # a 0-d string of 2**25 characters: 128 MiB unpacked
    np.lib.format.write_array_header_1_0(huge, {"descr": "<U33554432", "fortran_order": False, "shape": ()})
    import zipfile

    src, out = os.path.join(DATA, "format1_cartpole.npz"), tmp_path / "z.npz"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for member in zin.namelist():
            zout.writestr(member, huge.getvalue() + bytes(2**27) if member == "meta.npy" else zin.read(member))
    _refused_in_little_memory(str(out), r"the 'meta' entry must be one string of at most 16777216 characters")


def test_an_integer_json_cannot_convert_is_a_checkpoint_error(tmp_path):
    """A seed of 5000 digits raised a bare ValueError (Python's 4300-digit limit), naming no file."""
    import zipfile

    path = _crafted(tmp_path, lambda m: m["config"].update(seed=0))

    with zipfile.ZipFile(path) as z:
        meta = str(np.load(z.open("meta.npy")))
    meta = meta.replace('"seed": 0', '"seed": 1' + "0" * 5000)
    import io

    buf = io.BytesIO()
    np.save(buf, np.array(meta))
    out = tmp_path / "long.npz"
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(out, "w") as zout:
        for member in zin.namelist():
            zout.writestr(member, buf.getvalue() if member == "meta.npy" else zin.read(member))
    _refused_in_little_memory(str(out), r"the 'meta' entry is not valid JSON \(Exceeds the limit")


def test_param_shapes_are_the_built_network_s():
    """checkpoint's early shape check reads param_shapes; the networks themselves are what it must match."""
    from minippo.policy import ActorCritic, param_shapes
    from minippo.spaces import Box, Discrete

    for space in (Discrete(3), Box(np.full(2, -1.0), np.full(2, 1.0))):
        for hidden in ((), (5,), (4, 6)):
            for shared in (False, True) if hidden else (False,):
                ac = ActorCritic(7, space, hidden, shared=shared)
                act_dim = ac.act_dim
                assert param_shapes(7, act_dim, hidden, shared, ac.discrete) == {
                    k: v.shape for k, v in ac.params.items()}


@pytest.mark.parametrize(("edit", "match"), [
    (lambda m: m.update(episode_lengths=[-5, 1.5], episode_returns=[1.0, 2.0]),
     r"meta's 'episode_lengths' must be one integer >= 1 per episode of 'episode_returns' \(2\), got \[-5, 1.5\]"),
    (lambda m: m.update(episode_lengths=[3], episode_returns=[1.0, 2.0, 3.0]),
     r"meta's 'episode_lengths' must be one integer >= 1 per episode of 'episode_returns' \(3\), got \[3\]"),
    (lambda m: m.update(iteration=2**62), r"meta's 'iteration' 4611686018427387904 exceeds its 'num_timesteps' 64"),
])
def test_counters_that_contradict_each_other_are_refused(tmp_path, edit, match):
    """A resume logged mean_length 181.66 from lengths [-5, 1.5] (three returns beside one length were
    taken too), and numbered its next row 4611686018427387905 after an iteration past its step count."""
    from minippo import PPO
    from minippo.checkpoint import CheckpointError

    path = _crafted(tmp_path, edit)
    for load in (read_checkpoint, load_policy, PPO.load):
        with pytest.raises(CheckpointError, match=match):
            load(path)


def test_a_policy_that_does_not_fit_names_each_difference_once():
    """The message listed the values of all differing fields in one list each: 'saved [[8]], here [[4]]'."""
    pytest.importorskip("gymnasium")  # (PPO.load makes the env before it compares the policies)
    from minippo import PPO
    from minippo.checkpoint import CheckpointError

    path = os.path.join(DATA, "format1_cartpole.npz")
    with pytest.raises(CheckpointError, match=r"does not fit this env/config \(hidden: saved \[8\], here \[4\]\)$"):
        PPO.load(path, hidden=(4,))
    with pytest.raises(CheckpointError, match=r"\(dtype: saved 'float32', here 'float64'; hidden: saved \[8\], "
                                              r"here \[4\]\)$"):
        PPO.load(path, hidden=(4,), dtype="float64")



@pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")  # (zipfile's, writing the crafted file)
def test_an_entry_stored_twice_or_of_a_huge_dtype_is_refused(tmp_path):
    """np.load reads one of two members of one name (which one is zipfile's choice); an entry of the
    right name and shape but a 2.5 MB-per-element dtype (20 MB unpacked) was unpacked whole before its
    dtype was refused."""
    import io

    buf = io.BytesIO()
    np.save(buf, np.zeros(8, np.float32))
    path = _crafted(tmp_path, extra={"param/actor.b0.npy": buf.getvalue()})
    _refused_in_little_memory(path, r"has entries stored twice \['param/actor.b0'\]")
    huge = io.BytesIO()
    np.lib.format.write_array_header_1_0(huge, {"descr": "|V2500000", "fortran_order": False, "shape": (8,)})
    import zipfile

    src, out = os.path.join(DATA, "format1_cartpole.npz"), tmp_path / "v.npz"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for member in zin.namelist():
            data = huge.getvalue() + bytes(8 * 2_500_000) if member == "param/actor.b0.npy" else zin.read(member)
            zout.writestr(member, data)
    _refused_in_little_memory(str(out), r"array 'param/actor.b0' is \|V2500000, not an array of numbers")
