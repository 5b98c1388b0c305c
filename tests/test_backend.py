"""minippo.backend: the MINIPPO_BACKEND switch, its errors, and the host/device helpers.

The resolved backend is module state: every test resets it before and after, so that the
environment variable set with monkeypatch is the one read and nothing leaks to other tests.
"""

import importlib.util
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from minippo import backend

HAS_NUMBA = importlib.util.find_spec("numba") is not None
HAS_CUPY = importlib.util.find_spec("cupy") is not None


@pytest.fixture(autouse=True)
def fresh_backend(monkeypatch):
    monkeypatch.delenv(backend.ENV_VAR, raising=False)
    backend.reset()
    yield
    backend.reset()


def test_default_is_numpy():
    assert backend.name == "numpy"
    assert backend.xp is np


@pytest.mark.parametrize("value", ["numpy", " NumPy ", ""])
def test_numpy_spellings(monkeypatch, value):
    monkeypatch.setenv(backend.ENV_VAR, value)
    assert backend.name == "numpy"


@pytest.mark.parametrize("value", ["torch", "gpu", "numpyy"])
def test_unknown_backend_lists_allowed(monkeypatch, value):
    monkeypatch.setenv(backend.ENV_VAR, value)
    msg = rf"MINIPPO_BACKEND='{value}' is not a backend; allowed values: numpy, numba, cupy, auto"
    with pytest.raises(ValueError, match=msg):
        _ = backend.name
    with pytest.raises(ValueError, match="allowed values"):
        backend.resolve(value)


def test_unknown_backend_in_a_fresh_process():
    code = "import minippo.backend as b; b.name"
    env = {**os.environ, "MINIPPO_BACKEND": "tensorflow"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=60, cwd=root)
    assert out.returncode != 0
    assert "ValueError: MINIPPO_BACKEND='tensorflow' is not a backend" in out.stderr


def test_read_once_until_reset(monkeypatch):
    assert backend.name == "numpy"
    monkeypatch.setenv(backend.ENV_VAR, "bogus")
    assert backend.name == "numpy"  # already resolved: the variable is read once
    backend.reset()
    with pytest.raises(ValueError, match="bogus"):
        _ = backend.name


def test_numba_choice(monkeypatch):
    monkeypatch.setenv(backend.ENV_VAR, "numba")
    if HAS_NUMBA:
        assert backend.name == "numba" and backend.xp is np
    else:
        with pytest.raises(ImportError, match=r"MINIPPO_BACKEND=numba but numba is not installed"):
            _ = backend.name


def test_missing_numba_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)  # makes `import numba` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'minippo\[numba\]'"):
        backend.resolve("numba")


class _BrokenNumba:
    """A meta path finder whose ``import numba`` fails as an installed but broken numba does."""

    def __init__(self, error: ImportError) -> None:
        self.error = error

    def find_spec(self, name, path=None, target=None):
        if name == "numba":
            raise self.error
        return None


@pytest.mark.parametrize("error, says", [
    (ImportError("Numba needs NumPy 2.3 or less. Got NumPy 2.4."),  # numba's own refusal of a new numpy
     r"numba is installed but cannot be imported \(Numba needs NumPy 2\.3 or less.*pip install -U"),
    (ModuleNotFoundError("No module named 'llvmlite'", name="llvmlite"),  # its compiler backend missing
     r"numba is installed but cannot be imported \(No module named 'llvmlite'\).*--force-reinstall"),
    # numba's refusal of one of its settings (NUMBA_NUM_THREADS=0) escaped: auto did not fall back to numpy
    (ValueError("Number of threads specified must be > 0."),
     r"numba is installed but cannot be imported \(ValueError: Number of threads specified must be > 0\.\); "
     r"check the NUMBA_\* environment variables, or use MINIPPO_BACKEND=numpy$"),
])
def test_broken_numba_is_not_called_missing(monkeypatch, caplog, error, says):
    for mod in [m for m in sys.modules if m == "numba" or m.startswith("numba.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(sys, "meta_path", [_BrokenNumba(error), *sys.meta_path])
    with pytest.raises(ImportError, match=r"^MINIPPO_BACKEND=numba: " + says) as info:
        backend.resolve("numba")
    assert "not installed" not in str(info.value)
    if not HAS_CUPY:  # auto gives the same reason, without the opening "MINIPPO_BACKEND=numba: "
        with caplog.at_level(logging.INFO, logger="minippo"):
            assert backend.resolve("auto")[0] == "numpy"
        assert "; not numba: numba is installed but cannot be imported (" in caplog.text


def test_cupy_choice_without_gpu_explains(monkeypatch):
    if HAS_CUPY:
        pytest.skip("cupy installed: covered by the GPU tests")
    with pytest.raises(ImportError, match=r"MINIPPO_BACKEND=cupy but cupy is not installed.*"
                                          r"pip install 'minippo\[cuda\]'"):
        backend.resolve("cupy")


def test_auto_falls_back_and_logs(monkeypatch, caplog):
    if HAS_CUPY:
        pytest.skip("cupy installed: auto may pick it")
    monkeypatch.setenv(backend.ENV_VAR, "auto")
    with caplog.at_level(logging.INFO, logger="minippo"):
        name = backend.name
    assert name == ("numba" if HAS_NUMBA else "numpy")
    assert f"picked {name}" in caplog.text
    monkeypatch.setitem(sys.modules, "numba", None)
    assert backend.resolve("auto") == ("numpy", np)


def test_asnumpy_and_to_device_on_cpu():
    a = np.arange(3.0)
    assert backend.asnumpy(a) is a
    np.testing.assert_array_equal(backend.asnumpy([1, 2]), [1, 2])
    assert backend.asnumpy(np.float64(2.0)) == 2.0

    class Sequence(list):  # a host object with a get() method of its own: not a device array
        def get(self):
            raise AssertionError("asnumpy called get() on an object that is not a cupy array")

    np.testing.assert_array_equal(backend.asnumpy(Sequence([3, 4])), [3, 4])
    d = backend.to_device(a, dtype=np.float32)
    assert isinstance(d, np.ndarray) and d.dtype == np.float32
    assert backend.array_module(a) is np


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="has no attribute 'nme'"):
        _ = backend.nme


def test_auto_picks_cupy_when_a_device_works(monkeypatch, caplog):
    """auto tries cupy first (every CPU test machine falls back, so this path needs its own test)."""
    gpu = object()
    monkeypatch.setattr(backend, "_cupy_module", lambda: gpu)
    with caplog.at_level(logging.INFO, logger="minippo"):
        assert backend.resolve("auto") == ("cupy", gpu)
    assert "picked cupy" in caplog.text


def test_numba_compiles_are_timed_once_each_and_announced_once(caplog):
    """The listener behind numba_compile_seconds (PPO.learn's fps leaves that time out) and the CLI's
    notice that a first run is compiling: the outermost compile is timed (a kernel's nested compile
    of a helper is inside it, not added again), a call that compiles nothing adds nothing, and the
    notice is logged once, at the first compile."""
    numba = pytest.importorskip("numba")
    import time

    from numba.core import event

    listener = backend._compile_listener()
    process_wide = backend._compiles  # registered if an earlier test chose numba: not heard here
    if process_wide is not None:
        event.unregister("numba:compile", process_wide)
    event.register("numba:compile", listener)
    try:
        @numba.njit(cache=False)
        def inner(x):
            return x + 1

        @numba.njit(cache=False)
        def outer(x):
            return inner(x) * 2

        with caplog.at_level(logging.INFO, logger="minippo"):
            t = time.perf_counter()
            assert outer(1) == 4  # compiles outer, and inner inside it
            wall = time.perf_counter() - t
            first = listener.seconds
            assert 0.0 < first <= wall  # inner's compile counted twice would exceed the wall time
            assert outer(2) == 6 and listener.seconds == first  # compiled already: nothing added
            assert outer(1.5) == 5.0 and listener.seconds > first  # a second signature compiles
        assert listener.depth == 0
        notices = [r.getMessage() for r in caplog.records if r.name == "minippo"]
        assert notices == [backend.COMPILING_MESSAGE]
    finally:
        event.unregister("numba:compile", listener)
        if process_wide is not None:
            event.register("numba:compile", process_wide)


def test_compile_listener_counts_a_compile_whose_announcement_was_interrupted(monkeypatch):
    """A Ctrl-C inside the first compile's log call left the depth one short (-1 after its end): no
    compile was timed again in that process, so fps took compile seconds in."""
    pytest.importorskip("numba")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    listener = backend._compile_listener()
    monkeypatch.setattr(backend.log, "info", interrupted)
    with pytest.raises(KeyboardInterrupt):
        listener.on_start(None)
    listener.on_end(None)  # (numba broadcasts the end as the interrupt unwinds its compile)
    assert listener.depth == 0 and listener.announced
    listener.on_start(None)
    listener.on_end(None)
    assert listener.depth == 0 and listener.seconds > 0.0


def test_compile_listener_times_only_the_outermost_compile(monkeypatch):
    """The listener's bookkeeping on a scripted event sequence and clock: it starts at 0 s; a compile
    nested inside another (a kernel compiling a helper) adds nothing of its own; each outermost
    compile adds its end minus its start, exactly."""
    pytest.importorskip("numba")
    import types

    clock = iter([10.0, 11.0, 12.0, 15.0, 20.0, 21.5])  # each perf_counter call the listener makes
    monkeypatch.setattr(backend, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    listener = backend._compile_listener()
    assert (listener.seconds, listener.depth) == (0.0, 0)
    listener.on_start(None)  # 10: outer starts
    listener.on_start(None)  # nested: no clock read
    listener.on_end(None)  # nested ends: no clock read
    assert listener.depth == 1 and listener.seconds == 0.0
    listener.on_end(None)  # 11: outer ends
    assert (listener.seconds, listener.depth) == (1.0, 0)
    listener.on_start(None)  # 12
    listener.on_end(None)  # 15
    assert listener.seconds == 4.0
    assert next(clock) == 20.0  # no clock read was skipped or added


def test_numba_compile_seconds_without_numba_backend_imports_nothing():
    code = ("import sys; import minippo.backend as b; print(b.numba_compile_seconds(), 'numba' in sys.modules); "
            "b.resolve('numpy'); print(b.numba_compile_seconds(), 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0.0", "False", "0.0", "False"]


@pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")
def test_choosing_numba_watches_its_compiles(monkeypatch):
    from numba.core import event

    monkeypatch.setattr(backend, "_compiles", None)  # as in a process that has not chosen numba yet
    backend.resolve("numba")
    watched = backend._compiles
    try:
        assert watched is not None and backend.numba_compile_seconds() == watched.seconds
        backend.resolve("auto" if not HAS_CUPY else "numba")
        assert backend._compiles is watched  # registered once per process
    finally:
        event.unregister("numba:compile", watched)


# what the subprocess below runs: the README's warm-up command, then predict and evaluation
_WARM_UP_THEN_PLAY = """
import sys
import numpy as np
from minippo.checkpoint import evaluate_policy, load_policy
from minippo.cli import main
from minippo.kernels import cpu, cpu_act, cpu_update

def loaded():  # compiled or cache-loaded signatures of every numba kernel, by module and name
    return {f"{m.__name__}.{name}": len(d.overloads) for m in (cpu, cpu_act, cpu_update)
            for name, d in vars(m).items() if hasattr(d, "overloads") and d.overloads}

out = sys.argv[1]
assert main(["train", "CartPole-v1", "--timesteps", "2048", "--out", out, "--quiet"]) == 0
before = loaded()
policy = load_policy(out + "/model.npz")
rng = np.random.default_rng(0)
for obs in (np.zeros(4, np.float32), np.zeros((8, 4), np.float32), np.zeros((3, 4))):
    policy.predict(obs)
    policy.predict(obs, deterministic=False, rng=rng)
for deterministic in (False, True):  # minippo eval samples unless given --deterministic
    evaluate_policy(policy, policy.env_id, 2, deterministic, max_steps=50)
after = loaded()
print(sorted(before))
print(sorted(k for k in after if after[k] != before.get(k)))
"""


@pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")
def test_one_short_training_compiles_what_predict_and_eval_use(tmp_path):
    """The README's advice for paying numba's compiles ahead: after one short training of the net,
    load_policy(...).predict and evaluate_policy (minippo eval) need no kernel it did not load."""
    pytest.importorskip("gymnasium")
    env = dict(os.environ, MINIPPO_BACKEND="numba")
    out = subprocess.run([sys.executable, "-c", _WARM_UP_THEN_PLAY, str(tmp_path / "warm")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    trained, added = out.stdout.splitlines()[-2:]
    assert "minippo.kernels.cpu_act._act_categorical" in trained  # the numba path did run
    assert added == "[]"


def test_compile_seconds_are_counted_per_thread_too():
    """numba compiles in the thread that first calls a kernel: numba_compile_seconds(this_thread=True) holds
    that thread's compiles alone (PPO.learn's fps leaves out its own thread's, not another trainer's)."""
    numba = pytest.importorskip("numba")
    import threading

    from numba.core import event

    listener = backend._compile_listener()
    event.register("numba:compile", listener)
    try:
        @numba.njit(cache=False)
        def f(x):
            return x - 1

        worker = threading.Thread(target=f, args=(1,))
        worker.start()
        worker.join()
        assert listener.by_thread.keys() == {worker.ident} and listener.by_thread[worker.ident] == listener.seconds > 0
        f(1.5)  # a second signature, compiled here
        mine = listener.by_thread[threading.get_ident()]
        assert mine > 0 and listener.seconds == pytest.approx(mine + listener.by_thread[worker.ident], rel=1e-12)
    finally:
        event.unregister("numba:compile", listener)
    assert backend._compiles is None or backend.numba_compile_seconds(this_thread=True) == \
        backend._compiles.by_thread.get(threading.get_ident(), 0.0)
