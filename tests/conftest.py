"""Shared test setup.

BLAS is pinned to one thread (if the caller did not choose) before numpy is imported, as the CLI
does: the learning tests compare bit-identical runs, and thread count changes summation order.
"""

import importlib.util
import os
import sys

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


import pytest  # noqa: E402  (after the BLAS pinning above)


def _use_backend(monkeypatch, name):
    """MINIPPO_BACKEND=name for one test (the backend is re-read, then forgotten again)."""
    from minippo import backend

    monkeypatch.setenv(backend.ENV_VAR, name)
    backend.reset()
    yield
    backend.reset()


@pytest.fixture
def numba_backend(monkeypatch):
    """MINIPPO_BACKEND=numba for one test."""
    yield from _use_backend(monkeypatch, "numba")


@pytest.fixture
def numpy_backend(monkeypatch):
    """MINIPPO_BACKEND=numpy for one test (e.g. one that patches NumpyStep: the readable path)."""
    yield from _use_backend(monkeypatch, "numpy")


@pytest.fixture(params=["numpy", "numba"])
def any_backend(request):
    """The test once on the numpy backend and once on numba (skipped if numba is missing)."""
    if request.param == "numba":
        pytest.importorskip("numba")
    request.getfixturevalue(f"{request.param}_backend")
    return request.param


@pytest.fixture(autouse=True)
def _forget_the_backend():
    """Every test starts from MINIPPO_BACKEND as it is, whatever the test before it resolved: a test that
    switched backends and failed before its own reset left the next tests on that backend."""
    from minippo import backend

    backend.reset()
    yield
    backend.reset()


def load_tool(filename):
    """tools/<filename> imported as a module (tools/ is not a package)."""
    name = os.path.splitext(filename)[0] + "_tool"
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", filename)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(mod)
    finally:
        del sys.modules[name]
    return mod


@pytest.fixture(scope="session")
def tool():
    """``tool("mutate.py")``: a script of tools/ as a module."""
    return load_tool


# CI runs the suite with only the test extra installed, then with test + gym (no numba): the second run
# needs only the tests the first one skipped (a test that passed without gymnasium and without numba,
# and passes in the full suite with both, is not run a third time). These two options carry that list
# from one run to the next; a plain `pytest` uses neither. Give them as --option=FILE: pytest reads a
# separate FILE argument that exists outside the rootdir as a test path before it loads this file.
def pytest_addoption(parser):
    group = parser.getgroup("minippo")
    group.addoption("--record-skipped", metavar="FILE", default=None,
                    help="write the node ids of the tests and modules this run skipped to FILE, one per line")
    group.addoption("--only-skipped-in", metavar="FILE", default=None,
                    help="run only the tests (or the tests of the modules) that FILE, from --record-skipped, names")


def pytest_configure(config):
    if config.getoption("--record-skipped") is not None and config.getoption("numprocesses", default=None):
        raise pytest.UsageError("--record-skipped: run without -n (pytest-xdist): its workers would each see only "
                                "their own part of the skipped tests")


_skipped: list[str] = []


def pytest_collectreport(report):
    if report.skipped:  # a module skipped whole (a module-level importorskip)
        _skipped.append(report.nodeid)


def pytest_runtest_logreport(report):
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session):
    path = session.config.getoption("--record-skipped")
    if path is not None:  # written whole or not at all: a half-written list would drop tests silently
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("".join(f"{nodeid}\n" for nodeid in dict.fromkeys(_skipped)))
        os.replace(tmp, path)


def pytest_collection_modifyitems(config, items):
    path = config.getoption("--only-skipped-in")
    if path is None:
        return
    try:
        with open(path, encoding="utf-8") as f:
            named = set(f.read().splitlines())
    except FileNotFoundError:
        raise pytest.UsageError(f"--only-skipped-in: no file {path!r} (a run with --record-skipped writes it)") \
            from None
    keep, drop = [], []
    for item in items:
        (keep if item.nodeid in named or item.nodeid.split("::")[0] in named else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep
