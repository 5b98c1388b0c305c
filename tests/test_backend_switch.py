"""MINIPPO_BACKEND error paths, each in a fresh interpreter with the variable set, as a user hits
them: the variable is read at first use, so nothing here may leak from the test process.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BLOCK_NUMBA = "import sys; sys.modules['numba'] = None\n"  # `import numba` now raises ImportError
FAKE_CUPY_NO_DEVICE = """\
import sys, types
def count():
    raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
cp = types.ModuleType("cupy")
cp.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=count))
sys.modules["cupy"] = cp  # cupy importable, but the driver finds no device
"""
GAE = ("import numpy as np; from minippo.advantages import compute_gae; "
       "z = np.zeros((3, 2), np.float32); "
       "a, r = compute_gae(z + 1, z, z, np.zeros(2, np.float32), 0.9, 0.9); "
       "from minippo import backend; print('BACKEND', backend.name, a.dtype, float(a[-1, 0]))")


def run(value: str, prelude: str = "", code: str = GAE) -> subprocess.CompletedProcess:
    env = {**os.environ, "MINIPPO_BACKEND": value}
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)


def test_unknown_value_lists_allowed():
    out = run("jax")
    assert out.returncode != 0
    assert "ValueError: MINIPPO_BACKEND='jax' is not a backend" in out.stderr
    assert "allowed values: numpy, numba, cupy, auto" in out.stderr


def test_numba_missing_names_the_extra():
    out = run("numba", BLOCK_NUMBA)
    assert out.returncode != 0
    assert "ImportError: MINIPPO_BACKEND=numba but numba is not installed" in out.stderr
    assert "pip install 'minippo[numba]'" in out.stderr


def test_cupy_missing_names_the_extra():
    out = run("cupy", "import sys; sys.modules['cupy'] = None\n")
    assert out.returncode != 0
    assert "MINIPPO_BACKEND=cupy but cupy is not installed" in out.stderr
    assert "pip install 'minippo[cuda]'" in out.stderr


def test_a_broken_cupy_install_is_not_called_missing():
    """CuPy raises ImportError itself when its CUDA libraries fail to load: that is not 'not installed'."""
    prelude = ("import sys, importlib.abc, importlib.machinery\n"
               "class Broken(importlib.abc.MetaPathFinder):\n"
               "    def find_spec(self, name, path, target=None):\n"
               "        if name == 'cupy':\n"
               "            raise ImportError('CuPy is not correctly installed: libcudart.so.12 not found')\n"
               "sys.meta_path.insert(0, Broken())\n")
    out = run("cupy", prelude)
    assert out.returncode != 0
    assert "MINIPPO_BACKEND=cupy: cupy is installed but cannot be imported (CuPy is not correctly " \
           "installed: libcudart.so.12 not found)" in out.stderr
    assert "pip install 'minippo[cuda]'" in out.stderr
    # a ModuleNotFoundError for one of cupy's own dependencies is not cupy missing either
    out = run("cupy", prelude.replace("raise ImportError('CuPy is not correctly installed: libcudart.so.12 not "
                                      "found')", "raise ModuleNotFoundError('No module named fastrlock', "
                                                 "name='fastrlock')"))
    assert "cupy is installed but cannot be imported (No module named fastrlock)" in out.stderr, out.stderr


def test_cupy_without_device_says_so():
    out = run("cupy", FAKE_CUPY_NO_DEVICE)
    assert out.returncode != 0
    assert "RuntimeError: MINIPPO_BACKEND=cupy but no CUDA device is usable" in out.stderr
    assert "cudaErrorNoDevice" in out.stderr  # what the driver said


def test_numba_runs_the_kernels():
    pytest.importorskip("numba")
    out = run("numba")
    assert out.returncode == 0, out.stderr
    assert "BACKEND numba float32 1.0" in out.stdout


def test_auto_without_gpu_picks_and_logs():
    log = "import logging; logging.basicConfig(level=logging.INFO)\n"
    out = run("auto", log + FAKE_CUPY_NO_DEVICE)
    assert out.returncode == 0, out.stderr
    try:
        import numba  # noqa: F401

        picked = "numba"
    except ImportError:
        picked = "numpy"
    assert f"MINIPPO_BACKEND=auto picked {picked}" in out.stderr
    assert f"BACKEND {picked} float32 1.0" in out.stdout
    out = run("auto", log + FAKE_CUPY_NO_DEVICE + BLOCK_NUMBA)
    assert out.returncode == 0, out.stderr
    assert "MINIPPO_BACKEND=auto picked numpy" in out.stderr
    assert "BACKEND numpy float32 1.0" in out.stdout


def test_import_minippo_loads_no_backend():
    code = ("import sys, minippo, minippo.nn, minippo.advantages; "
            "print(sorted(m for m in ('numba', 'cupy', 'minippo.kernels.cpu') if m in sys.modules))")
    out = run("numba", code=code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
