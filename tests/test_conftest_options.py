"""conftest.py's two options that CI's second suite without numba uses (`.ci/run`): `--record-skipped FILE`
writes the node ids a run skipped (whole modules and single tests), `--only-skipped-in FILE` runs only those.
Each case runs pytest in a subprocess on a folder holding a copy of conftest.py and three small test files."""

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

FILES = {
    # skipped whole at collection, as the gymnasium modules are without the gym extra
    "test_needs_missing.py": (
        "import pytest\n"
        "pytest.importorskip('a_module_that_is_not_installed_anywhere')\n"
        "def test_never():\n"
        "    pass\n"
    ),
    "test_mixed.py": (
        "import os\n"
        "import pytest\n"
        "def test_runs():\n"
        "    pass\n"
        "@pytest.mark.parametrize('x', [1, 2])\n"
        "def test_param(x):\n"
        "    if x == 2 and os.environ.get('SKIP_TWO') == '1':\n"
        "        pytest.skip('two is skipped in the first run')\n"
        "def test_skipped_in_setup(request):\n"
        "    pass\n"
        "@pytest.fixture(autouse=True)\n"
        "def _skip_setup(request):\n"
        "    if request.node.name == 'test_skipped_in_setup' and os.environ.get('SKIP_TWO') == '1':\n"
        "        pytest.skip('skipped by a fixture')\n"
    ),
    "test_plain.py": "def test_a():\n    pass\n",
}


def _tree(tmp_path):
    """The test folder (pytest's rootdir) and, outside it as in CI, the folder for the list."""
    tree, lists = tmp_path / "tree", tmp_path / "lists"
    tree.mkdir()
    lists.mkdir()
    shutil.copy(os.path.join(HERE, "conftest.py"), tree / "conftest.py")
    for name, text in FILES.items():
        (tree / name).write_text(text)
    return tree, lists / "skipped.txt"


def _pytest(tree, *args, skip_two=True, plugins=()):
    env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", SKIP_TWO="1" if skip_two else "0")
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA"]
    for plugin in plugins:
        cmd += ["-p", plugin]
    return subprocess.run([*cmd, *args], cwd=tree, env=env, capture_output=True, text=True, timeout=120)


def test_record_then_run_only_the_skipped(tmp_path):
    """As .ci/run gives them: --option=FILE, FILE outside the rootdir (a separate FILE argument that
    exists is read as a test path before conftest.py is loaded: the option was "unrecognized")."""
    tree, listing = _tree(tmp_path)
    first = _pytest(tree, f"--record-skipped={listing}")
    assert first.returncode == 0, first.stdout + first.stderr
    assert listing.read_text().splitlines() == [
        "test_needs_missing.py",  # the module, skipped at collection
        "test_mixed.py::test_param[2]",
        "test_mixed.py::test_skipped_in_setup",
    ]
    assert [p.name for p in listing.parent.iterdir()] == ["skipped.txt"]  # no temporary file left behind
    # the second run (the skip condition gone, as gymnasium is installed there) runs those and only those
    second = _pytest(tree, f"--only-skipped-in={listing}", skip_two=False)
    assert second.returncode == 0, second.stdout + second.stderr
    passed = sorted(line.split()[1] for line in second.stdout.splitlines() if line.startswith("PASSED "))
    assert passed == ["test_mixed.py::test_param[2]", "test_mixed.py::test_skipped_in_setup"]
    assert "SKIPPED [1] test_needs_missing.py" in second.stdout  # still missing: skipped again, not dropped
    assert "5 deselected" not in second.stdout and "3 deselected" in second.stdout  # test_runs, [1], test_a
    # without the option every test runs
    plain = _pytest(tree, skip_two=False)
    assert plain.returncode == 0 and "5 passed, 1 skipped" in plain.stdout, plain.stdout


def test_a_missing_list_is_an_error_naming_the_option(tmp_path):
    tree, listing = _tree(tmp_path)
    r = _pytest(tree, f"--only-skipped-in={listing.parent / 'nowhere.txt'}")
    assert r.returncode == 4, r.stdout + r.stderr  # pytest's usage error
    assert "--only-skipped-in: no file" in r.stderr and "nowhere.txt" in r.stderr
    assert "passed" not in r.stdout  # nothing ran


def test_record_skipped_refuses_xdist_workers(tmp_path):
    if importlib.util.find_spec("xdist") is None:
        pytest.skip("pytest-xdist is not installed")
    tree, listing = _tree(tmp_path)
    r = _pytest(tree, f"--record-skipped={listing}", "-n", "2", plugins=("xdist.plugin",))
    assert r.returncode == 4, r.stdout + r.stderr
    assert "--record-skipped: run without -n" in r.stderr
    assert not listing.exists()
