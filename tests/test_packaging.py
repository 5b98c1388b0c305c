"""What a user installs: the sdist carries the tests, docs, examples and benchmarks; the wheel built
from it ships kernels/ as minippo.kernels (with gae.cu), never a bare top-level ``kernels`` package,
has the ``minippo`` console script, and depends on numpy alone."""

import glob
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Only these mean "no package index here" (build isolation fetches setuptools); anything else fails.
OFFLINE = ("No matching distribution", "Could not find a version", "Network is unreachable",
           "Temporary failure in name resolution", "Connection refused", "ConnectionError")


def test_sdist_then_wheel_layout_and_requirements(tmp_path):
    pytest.importorskip("build")  # the test extra installs it
    # A copy of the tree without build outputs: a stale build/ in the checkout cannot supply files.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".hypothesis", ".pytest_cache", ".ruff_cache", "runs"))
    out = tmp_path / "dist"
    r = subprocess.run(  # sdist, then the wheel built from the unpacked sdist (as pip install from PyPI does)
        [sys.executable, "-m", "build", "--outdir", str(out), str(src)],
        capture_output=True, text=True, timeout=600,
    )
    if r.returncode != 0 and any(s in r.stdout + r.stderr for s in OFFLINE):
        pytest.skip(f"no package index to fetch the build backend: {r.stderr[-300:]}")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]

    (sdist,) = glob.glob(str(out / "*.tar.gz"))
    with tarfile.open(sdist) as t:
        files = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    for need in ("LICENSE", "README.md", "setup.cfg", "pyproject.toml", "kernels/gae.cu", "kernels/adam.cu",
                 "kernels/cpu.py",
                 "minippo/cli.py", "tests/conftest.py", "tests/test_packaging.py", "docs/derivations.md",
                 "examples/train_cartpole.py", "benchmarks/kernels.py", ".ci/run"):
        assert need in files, need
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in files)

    (wheel,) = glob.glob(str(out / "*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith("METADATA"))).decode()
        entry = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"minippo"}
    for need in ("gae.cu", "adam.cu", "cpu.py", "cpu_act.py", "cpu_update.py", "simd.py", "gpu.py", "reference.py"):
        assert f"minippo/kernels/{need}" in names, need
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names)
    requires = [line for line in meta.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert len(requires) == 1 and requires[0].split()[1].startswith("numpy")
    assert "[console_scripts]" in entry and "minippo = minippo.cli:main" in entry


def test_the_checkout_imports_minippo_kernels_without_an_editable_install():
    """Run from the checkout's root, Python imports the source minippo/ (the current folder leads
    sys.path), not an installed copy. After a plain (non-editable) install, minippo.kernels, which
    setup.cfg maps to the top-level kernels/, was then not found: the README's test command failed
    in its import of kernels.reference. Here no site-packages are processed (-S: no editable finder)
    and only numpy's folder is added, so the checkout alone must provide the package."""
    import numpy

    numpy_parent = os.path.dirname(os.path.dirname(numpy.__file__))
    code = ("import sys; sys.path[1:1] = [sys.argv[1]]; import minippo.kernels.reference as r, minippo.kernels.gpu; "
            "print(r.__file__); print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('gymnasium', 'numba', 'cupy', 'matplotlib')))")
    out = subprocess.run([sys.executable, "-S", "-c", code, numpy_parent], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [os.path.join(ROOT, "kernels", "reference.py"), "[]"]


def _sources_built_in(path):
    """(the files ``path`` imports from in kernels/, the SOURCES_BUILT_IN dict it declares or None)."""
    import ast

    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    deps = {f"{node.module}.py" for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module}
    declared = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["SOURCES_BUILT_IN"]:
            declared = ast.literal_eval(node.value)
    return deps, declared


def test_each_kernel_file_declares_the_current_digest_of_the_files_it_builds_in():
    """numba's disk cache checks a kernel against its own file only (numba >= 0.68: its text's
    sha256; before: its mtime and size): cpu_act.py's cached kernels kept cpu.py's old helpers after
    cpu.py changed (found by a review in session 42). Each kernel file that imports from another
    declares that file's digest, and through it every file further down, so a change there changes
    this file too and numba compiles it again."""
    import hashlib

    folder = os.path.join(ROOT, "kernels")

    def digest(name):
        with open(os.path.join(folder, name), "rb") as f:
            return hashlib.sha256(f.read().replace(b"\r\n", b"\n")).hexdigest()[:16]

    direct = {n: _sources_built_in(os.path.join(folder, n)) for n in sorted(os.listdir(folder)) if n.endswith(".py")}
    for name, (deps, declared) in direct.items():
        closure, todo = set(), list(deps)
        while todo:
            d = todo.pop()
            if d not in closure:
                closure.add(d)
                todo.extend(direct[d][0])
        want = {d: digest(d) for d in sorted(closure)}
        if not want:
            assert declared is None, name
            continue
        line = "SOURCES_BUILT_IN = {" + ", ".join(f'"{d}": "{h}"' for d, h in want.items()) + "}"
        assert declared == want, f"kernels/{name}: a file it builds in changed; write there: {line}"
    assert direct["cpu_act.py"][1].keys() == {"cpu.py", "simd.py"} == direct["cpu_update.py"][1].keys()
