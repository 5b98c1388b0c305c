"""MINIPPO_BACKEND error paths, each in a fresh interpreter with the variable set, as a user hits
them: the variable is read at first use, so nothing here may leak from the test process.
"""

import hashlib
import os
import shutil
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
    assert f"MINIPPO_BACKEND=auto picked {picked} (not cupy: no CUDA device is usable (" in out.stderr
    assert f"BACKEND {picked} float32 1.0" in out.stdout
    out = run("auto", log + FAKE_CUPY_NO_DEVICE + BLOCK_NUMBA)
    assert out.returncode == 0, out.stderr
    # why each faster backend was not taken, cupy's too (it was left out when numba was missing), each
    # without the "MINIPPO_BACKEND=x but" of an explicit request
    assert "MINIPPO_BACKEND=auto picked numpy (not cupy: no CUDA device is usable (" in out.stderr
    assert "; not numba: numba is not installed (" in out.stderr and "pip install 'minippo[numba]'" in out.stderr
    assert "BACKEND numpy float32 1.0" in out.stdout


def test_import_minippo_loads_no_backend():
    code = ("import sys, minippo, minippo.nn, minippo.advantages; "
            "print(sorted(m for m in ('numba', 'cupy', 'minippo.kernels.cpu') if m in sys.modules))")
    out = run("numba", code=code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _numba_then_auto(variables: dict) -> list:
    """[("numba", run), ("auto", run)]: GAE in a process with ``variables`` set and MINIPPO_BACKEND each
    of the two (auto logging its choice at INFO; cupy importable, with no device)."""
    runs = []
    for value, log in (("numba", ""), ("auto", "import logging; logging.basicConfig(level=logging.INFO)\n")):
        runs.append((value, subprocess.run([sys.executable, "-c", log + FAKE_CUPY_NO_DEVICE + GAE],
                                           capture_output=True, text=True, cwd=ROOT, timeout=120,
                                           env={**os.environ, **variables, "MINIPPO_BACKEND": value})))
    return runs


def test_numba_with_its_compiler_turned_off_is_named_and_auto_takes_numpy():
    """NUMBA_DISABLE_JIT=1 leaves plain Python functions, which the kernels' vector intrinsics cannot
    run: the numba backend failed deep inside (AttributeError: 'function' object has no attribute
    'disable_compile'), and auto picked it all the same."""
    pytest.importorskip("numba")
    for value, out in _numba_then_auto({"NUMBA_DISABLE_JIT": "1"}):
        if value == "numba":
            assert out.returncode != 0
            assert "RuntimeError: MINIPPO_BACKEND=numba needs numba's compiler, but NUMBA_DISABLE_JIT=1 turns " \
                   "it off: unset NUMBA_DISABLE_JIT, or use MINIPPO_BACKEND=numpy" in out.stderr, out.stderr
        else:
            assert out.returncode == 0, out.stderr
            assert "MINIPPO_BACKEND=auto picked numpy (not cupy: no CUDA device is usable (" in out.stderr, out.stderr
            assert "; not numba: needs numba's compiler, but NUMBA_DISABLE_JIT=1" in out.stderr, out.stderr
            assert "BACKEND numpy float32 1.0" in out.stdout


@pytest.mark.parametrize("damage", ["index truncated", "index empty", "data truncated"])
def test_a_damaged_numba_cache_file_is_one_line_naming_it(tmp_path, damage):
    """A truncated or emptied .nbi / .nbc file in numba's cache made every later `minippo train`, `eval`
    or `bench` end in a traceback from numba's cache loader (UnpicklingError, EOFError), which named no
    file. A kernel of a module of the test's own stands in for minippo's (the same loader)."""
    pytest.importorskip("numba")
    (tmp_path / "kern.py").write_text("from numba import njit\n\n@njit(cache=True)\ndef f(x):\n    return x + 1\n")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}  # (this checkout's minippo)
    first = subprocess.run([sys.executable, "-c", "import kern; print(kern.f(1))"], capture_output=True, text=True,
                           env=env, cwd=tmp_path, timeout=300)
    assert first.stdout == "2\n", first.stderr
    files = sorted((tmp_path / "cache").rglob("*.nb[ic]"))
    index = [f for f in files if f.suffix == ".nbi"]
    assert len(index) == 1 and len(files) == 2, files
    target = index[0] if damage.startswith("index") else next(f for f in files if f.suffix == ".nbc")
    target.write_bytes(target.read_bytes()[:0 if damage == "index empty" else 10])
    code = ("import sys, kern\nfrom minippo import cli\n"
            "cli.cmd_eval = lambda args: kern.f(1)\n"  # (the kernel loaded where a command's first call loads it)
            "sys.exit(cli.main(['eval', 'model.npz']))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=300)
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("minippo: error: numba could not load a kernel from its cache (") and \
        f"the cache file {str(index[0])!r} (or a .nbc file beside it of the same name) is damaged; remove them" \
        in out.stderr, out.stderr


def test_a_numba_cache_dir_numba_cannot_write_is_named(tmp_path):
    """numba passes over a NUMBA_CACHE_DIR it cannot use (here a file; a read-only folder for a user
    other than root) to the kernels' own folder without a word: into site-packages, which the variable
    was set to keep the cache out of."""
    pytest.importorskip("numba")
    code = ("import logging; logging.basicConfig(level=logging.WARNING)\n"
            "from minippo import backend; print(backend.resolve('numba')[0])\n")  # (compiles nothing)
    (tmp_path / "a_file").write_text("")
    for cache, warned in ((tmp_path / "a_file", True), (tmp_path / "cache", False)):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                             env={**os.environ, "NUMBA_CACHE_DIR": str(cache)})
        assert out.returncode == 0 and out.stdout == "numba\n", out.stderr
        said = f"numba cannot write its cache in NUMBA_CACHE_DIR={str(cache)!r}: it caches the kernels in "
        assert (said in out.stderr) == warned, out.stderr


def test_only_an_error_loading_from_numbas_cache_is_called_a_damaged_file():
    """An OSError saving a new kernel (a full disk) passes through numba's caching.py too: it was called
    a damaged cache file to remove. Functions compiled under that file's name stand in for numba's."""
    from minippo.cli import _damaged_numba_cache

    src = ("class IndexDataCacheFile:\n"
           "    _index_path = '/c/kern.f-1.py311.nbi'\n"
           "    def _load_index(self):\n"
           "        raise EOFError('Ran out of input')\n"
           "    def _save_index(self):\n"
           "        raise OSError(28, 'No space left on device')\n"
           "class Cache:\n"
           "    _cache_file = IndexDataCacheFile()\n"
           "    def load_overload(self):\n"
           "        return self._cache_file._load_index()\n"
           "    def save_overload(self):\n"
           "        return self._cache_file._save_index()\n")
    names: dict = {}
    exec(compile(src, os.path.join("site-packages", "numba", "core", "caching.py"), "exec"), names)
    for call, index in (("load_overload", "/c/kern.f-1.py311.nbi"), ("save_overload", None)):
        try:
            getattr(names["Cache"](), call)()
        except Exception as e:
            assert _damaged_numba_cache(e) == index
    assert _damaged_numba_cache(ValueError("elsewhere")) is None


def test_a_cache_folder_on_another_drive_is_outside_not_an_error(monkeypatch):
    """os.path.commonpath raises ValueError for paths on two Windows drives: the check that warns of a
    NUMBA_CACHE_DIR numba passed over raised instead (and auto did not fall back)."""
    from minippo import backend as backend_module

    assert backend_module._inside(os.path.join("a", "b", "c"), os.path.join("a", "b"))
    assert not backend_module._inside(os.path.join("a", "bc"), os.path.join("a", "b"))

    def two_drives(paths):
        raise ValueError("Paths don't have the same drive")

    monkeypatch.setattr(os.path, "commonpath", two_drives)
    assert not backend_module._inside("D:\\cache", "C:\\kernels")


def test_numba_refusing_one_of_its_settings_at_import_is_named_and_auto_takes_numpy():
    """NUMBA_NUM_THREADS=0 makes `import numba` raise ValueError, which escaped the backend's choice:
    auto did not fall back to numpy, and the CLI's line named neither numba nor the variable."""
    pytest.importorskip("numba")
    for value, out in _numba_then_auto({"NUMBA_NUM_THREADS": "0"}):
        if value == "numba":
            assert out.returncode != 0
            assert "ImportError: MINIPPO_BACKEND=numba: numba is installed but cannot be imported (ValueError: " \
                   "Number of threads specified must be > 0.); check the NUMBA_* environment variables" in out.stderr, \
                out.stderr
        else:
            assert out.returncode == 0, out.stderr
            assert "; not numba: numba is installed but cannot be imported (ValueError: " in out.stderr, out.stderr
            assert "BACKEND numpy float32 1.0" in out.stdout


# Every folder numba could cache in refuses a file (a read-only install run by a user without a home;
# root may write anywhere, so the refusal is stood in for where numba tests a folder), except the
# temporary one minippo falls back to. The first lines check that numba consults what is stood in.
NO_CACHE_FOLDER = """\
import tempfile
real = tempfile.TemporaryFile
def refusing(*a, dir=None, **k):
    if dir is not None and "minippo-numba-cache-" not in str(dir):
        raise PermissionError(13, "Permission denied (stand-in)", dir)
    return real(*a, dir=dir, **k)
tempfile.TemporaryFile = refusing
import numba
def f():
    return 0
try:
    numba.njit(cache=True)(f)
    print("STAND-IN NOT CONSULTED")
except RuntimeError:
    pass
import logging; logging.basicConfig(level=logging.WARNING)
"""


def test_numba_without_a_folder_to_cache_in_caches_in_a_temporary_one():
    """@njit(cache=True) raised at the kernels' import ("cannot cache function '_gae_kernel': no
    locator available"), so the numba and auto backends failed outright on such a machine. No warm
    cache is found here (the kernels folder's own is hidden), so the temporary one starts empty, with
    a warning."""
    pytest.importorskip("numba")
    cold = "import minippo.backend as _b; _b._link_warm_cache = lambda sources, dest: None\n"
    code = cold + GAE + "; import os, glob; print('CACHED', bool(glob.glob(os.environ['NUMBA_CACHE_DIR'] + " \
                        "'/**/*.nbi', recursive=True)), os.environ['NUMBA_CACHE_DIR'])"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    out = subprocess.run([sys.executable, "-c", NO_CACHE_FOLDER + code], capture_output=True, text=True,
                         env={**env, "MINIPPO_BACKEND": "numba"}, cwd=ROOT, timeout=300)
    if "STAND-IN NOT CONSULTED" in out.stdout:
        pytest.skip("this numba tests its cache folders otherwise: the refusal cannot be stood in for")
    assert out.returncode == 0, out.stderr
    for part in ("numba cannot write its cache beside the kernels", "until this process exits",
                 "minippo-numba-cache-", "set NUMBA_CACHE_DIR to a folder this user may write"):
        assert part in out.stderr, out.stderr
    assert "BACKEND numba float32 1.0" in out.stdout and "CACHED True" in out.stdout
    folder = out.stdout.split("CACHED True ")[1].strip()
    assert "minippo-numba-cache-" in folder and not os.path.exists(folder)  # removed at exit


@pytest.mark.parametrize("where", ["NUMBA_CACHE_DIR", "kernels folder"])
def test_a_warm_read_only_cache_is_reused_not_compiled_again(tmp_path, where):
    """An image warmed while its cache folder was writable, then run read-only (a board's read-only
    root, or an install run by another user without a home): numba refuses every cache folder, and
    the temporary one minippo falls back to starts from links to the warm kernels, so nothing is
    compiled again (before: GAE's ~6 s each process, CartPole's preset ~45 s); the warm files are
    left as they were. The kernels folder's own cache (``kernels/__pycache__``) is the default.
    Both run a private copy of the source (minippo/ and kernels/, no cache): the checkout's kernels
    folder is written meanwhile by the suite's other process (``-n 2``), which once changed it here."""
    pytest.importorskip("numba")
    tree = tmp_path / "tree"  # the subprocesses import this copy: it is their working directory
    for package in ("minippo", "kernels"):
        shutil.copytree(ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["MINIPPO_BACKEND"] = "numba"
    if where == "NUMBA_CACHE_DIR":
        env["NUMBA_CACHE_DIR"] = str(tmp_path / "warm")
    warm = subprocess.run([sys.executable, "-c", GAE + "; import minippo; print('FROM', minippo.__file__)"],
                          capture_output=True, text=True, env=env, cwd=tree, timeout=300)  # compiles
    assert warm.returncode == 0 and "BACKEND numba float32 1.0" in warm.stdout, warm.stderr
    assert f"FROM {tree / 'minippo' / '__init__.py'}" in warm.stdout, warm.stdout  # the copy, not the checkout
    folder = str(tree / "kernels")  # numba's subfolder of NUMBA_CACHE_DIR: the name and SHA-1 of the path
    subpath = f"kernels_{hashlib.sha1(folder.encode()).hexdigest()}"
    source = tmp_path / "warm" / subpath if where == "NUMBA_CACHE_DIR" else Path(folder, "__pycache__")
    before = {p.name: p.stat().st_mtime_ns for p in source.iterdir()}
    assert any(n.startswith("cpu._gae_kernel") and n.endswith(".nbi") for n in before), sorted(before)
    code = GAE + "; import os; print('COMPILED', backend.numba_compile_seconds(), os.environ['NUMBA_CACHE_DIR'])"
    info = "logging.getLogger().setLevel(logging.INFO)\n"  # (a warm cache reused is logged at INFO)
    out = subprocess.run([sys.executable, "-c", NO_CACHE_FOLDER + info + code], capture_output=True, text=True, env=env,
                         cwd=tree, timeout=300)
    if "STAND-IN NOT CONSULTED" in out.stdout:
        pytest.skip("this numba tests its cache folders otherwise: the refusal cannot be stood in for")
    assert out.returncode == 0, out.stderr
    assert "BACKEND numba float32 1.0" in out.stdout and "COMPILED 0.0 " in out.stdout, out.stdout + out.stderr
    assert "starting from the " in out.stderr and f"kernels compiled in {source}" in out.stderr, out.stderr
    assert {p.name: p.stat().st_mtime_ns for p in source.iterdir()} == before


def test_link_warm_cache_links_the_first_folder_with_an_index(tmp_path):
    """The first source holding a numba index (*.nbi) of this Python is linked file by file (its indexes
    and data, nothing else); missing folders, folders of data files alone and another Python's cache
    are passed over; none: None, nothing made."""
    from minippo.backend import _link_warm_cache

    py = f"py{sys.version_info[0]}{sys.version_info[1]}"
    data_only, other_py, warm, later = (tmp_path / n for n in ("data_only", "other_py", "warm", "later"))
    for folder, names in ((data_only, [f"f-1.{py}.1.nbc"]), (other_py, ["f-1.py29.nbi", "f-1.py29.1.nbc"]),
                          (warm, [f"f-1.{py}.nbi", f"f-1.{py}.1.nbc", "f-1.py29.nbi", "x.pyc"]),
                          (later, [f"g-2.{py}.nbi"])):
        folder.mkdir()
        for n in names:
            (folder / n).write_bytes(n.encode())
    dest = tmp_path / "tmp" / "kernels_abc"
    passed_over = [str(tmp_path / "missing"), str(data_only), str(other_py)]
    assert _link_warm_cache(passed_over, str(dest)) is None and not dest.exists()
    assert _link_warm_cache([*passed_over, str(warm), str(later)], str(dest)) == (str(warm), 1)
    assert sorted(os.listdir(dest)) == [f"f-1.{py}.1.nbc", f"f-1.{py}.nbi"]
    assert all((dest / n).is_symlink() and (dest / n).read_bytes() == n.encode() for n in os.listdir(dest))
    # numba writes a new index by replacing the link (a temporary file, os.replace): the warm file stays
    (dest / "new.tmp").write_bytes(b"new index")
    os.replace(dest / "new.tmp", dest / f"f-1.{py}.nbi")
    assert (warm / f"f-1.{py}.nbi").read_bytes() == f"f-1.{py}.nbi".encode()


def test_link_warm_cache_copies_where_links_cannot_be_made(tmp_path, monkeypatch):
    from minippo.backend import _link_warm_cache

    warm = tmp_path / "warm"
    warm.mkdir()
    name = f"f-1.py{sys.version_info[0]}{sys.version_info[1]}.nbi"
    (warm / name).write_bytes(b"index")

    def no_links(*a, **k):
        raise OSError(1, "Operation not permitted (stand-in)")
    monkeypatch.setattr(os, "symlink", no_links)
    assert _link_warm_cache([str(warm)], str(tmp_path / "dest")) == (str(warm), 1)
    copied = tmp_path / "dest" / name
    assert not copied.is_symlink() and copied.read_bytes() == b"index"
