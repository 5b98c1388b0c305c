"""tools/mutate.py finds the operators it says it mutates, edits only a copy of the checkout, and
tells killed mutants from survivors."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def mutate():
    spec = importlib.util.spec_from_file_location("mutate_tool", os.path.join(ROOT, "tools", "mutate.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules["mutate_tool"] = mod  # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(mod)
    finally:
        del sys.modules["mutate_tool"]
    return mod


SOURCE = textwrap.dedent("""\
    def f(a, b):
        if a < b and not a is None:
            return (a + b) * 2
        c = -a
        c += b ** 2
        return (c
                or b // 3 % 4)


    X = 1 if 2 in [1] else 3 - 1
    Y = (X *
         2) + \\
        3
    Z = (Y
         -
         1)
""")


def test_mutants_are_the_operators_of_the_file(mutate):
    got = [(m.id, m.function) for m in mutate.mutants(SOURCE)]
    assert got == [
        ("2:9:<-><=", "f"), ("2:13:and->or", "f"), ("2:17:not ->", "f"), ("2:23:is->is not", "f"),
        ("3:18:+->-", "f"), ("3:23:*->/", "f"),
        ("4:8:-->", "f"),
        ("5:6:+=->-=", "f"), ("5:11:**->*", "f"),
        ("7:12:or->and", "f"),  # an operator that begins a continuation line
        ("7:17://->*", "f"), ("7:22:%->//", "f"),
        ("10:11:in->not in", ""), ("10:25:-->+", ""),
        ("11:7:*->/", ""),  # an operator that ends its line
        ("12:8:+->-", ""),  # followed by a backslash continuation
    ]  # (and none for the "-" on a line of its own: a layout the tool does not look for)
    assert [m.id for m in mutate.mutants(SOURCE, {"g"})] == []
    m = mutate.Mutant(3, 18, "+", "-", "f")
    assert m.apply(SOURCE).splitlines()[2] == "        return (a - b) * 2"
    with pytest.raises(ValueError, match=r"mutant 3:17:\+->-: '\+' is not at column 17"):
        mutate.Mutant(3, 17, "+", "-", "f").apply(SOURCE)
    for m in mutate.mutants(SOURCE):  # each one still parses: the edit hit an operator
        compile(m.apply(SOURCE), "<mutant>", "exec")


def test_run_kills_what_the_tests_see_and_leaves_the_checkout_alone(mutate, tmp_path, capsys):
    project = tmp_path / "project"
    project.mkdir()
    (project / "mod.py").write_text("def f(a, b):\n    return a + b if a < b else a * b\n")
    # The tests see + and * but never call f with a == b, so "<" -> "<=" survives.
    (project / "test_mod.py").write_text("from mod import f\n\ndef test_f():\n"
                                         "    assert f(1, 2) == 3 and f(3, 2) == 6\n")
    out = tmp_path / "results.jsonl"
    results = mutate.run("mod.py", "test_mod.py", root=str(project), out=str(out), timeout=120)
    assert [(r["id"], r["how"]) for r in results] == [
        ("2:13:+->-", "failed"), ("2:22:<-><=", "survived"), ("2:33:*->/", "failed")]
    assert all(0 <= r["seconds"] < 120 for r in results)
    assert [r["killed"] for r in results] == [True, False, True]
    assert (project / "mod.py").read_text() == "def f(a, b):\n    return a + b if a < b else a * b\n"
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [r["id"] for r in results]
    printed = capsys.readouterr().out.split()
    assert printed == ["failed", "2:13:+->-", "f", "survived", "2:22:<-><=", "f", "failed", "2:33:*->/", "f"]
    assert mutate.run("mod.py", "test_mod.py", root=str(project), out=str(out)) == []  # all done before
    assert capsys.readouterr().out == ""
    # A run stopped while writing its last line: that line is dropped and its mutant runs again.
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:2]) + lines[2][:25])
    again = mutate.run("mod.py", "test_mod.py", root=str(project), out=str(out), timeout=120)
    assert [r["id"] for r in again] == ["2:33:*->/"]
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [r["id"] for r in results]
    capsys.readouterr()
    out.write_text(lines[0] + "garbage\n" + lines[2])  # a line that is no result: refused by number
    with pytest.raises(ValueError, match=r"results.jsonl, line 2: not a mutant result"):
        mutate.run("mod.py", "test_mod.py", root=str(project), out=str(out))


def test_fresh_numba_cache_gives_each_mutant_an_empty_folder_removed_after(mutate, tmp_path, monkeypatch):
    """With fresh_numba_cache, NUMBA_CACHE_DIR is a new empty folder for each mutant's tests (numba
    then compiles the mutated kernels), gone afterwards; without it, the variable is left as it is."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "mod.py").write_text("Y = 1 + 2 - 3\n")
    seen = tmp_path / "seen.txt"
    (project / "test_env.py").write_text(
        "import os\n\ndef test_env():\n"
        "    d = os.environ['NUMBA_CACHE_DIR']\n"
        "    assert os.path.isdir(d) and not os.listdir(d)\n"
        f"    open({str(seen)!r}, 'a').write(d + '\\n')\n")
    results = mutate.run("mod.py", "test_env.py", root=str(project), timeout=120, fresh_numba_cache=True)
    assert [r["how"] for r in results] == ["survived", "survived"]
    folders = seen.read_text().split()
    assert len(set(folders)) == 2 and not any(os.path.exists(d) for d in folders)
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    results = mutate.run("mod.py", "test_env.py", root=str(project), timeout=120)
    assert [r["how"] for r in results] == ["failed", "failed"]  # no variable: the test's KeyError


def test_command_line_lists_and_refuses_bad_arguments(tmp_path):
    script = os.path.join(ROOT, "tools", "mutate.py")
    (tmp_path / "m.py").write_text("x = 1 + 2\n")
    (tmp_path / "run.sh").write_text("echo ${x:-1}\n")
    r = subprocess.run([sys.executable, script, "m.py", "--root", str(tmp_path), "--list"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.split() == ["1:6:+->-"]
    for argv, message in ((["nope.py", "--tests", "t.py"], "file 'nope.py' not found under --root"),
                          (["m.py", "--tests", "t.py", "--timeout", "0"], "--timeout must be > 0 seconds, got 0.0"),
                          (["m.py"], "--tests is needed (the pytest arguments to run against each mutant)"),
                          (["run.sh", "--list"], "file 'run.sh' is not Python source (SyntaxError: ")):
        r = subprocess.run([sys.executable, script, *argv, "--root", str(tmp_path)], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 2 and message in r.stderr, (argv, r.stderr)


def test_a_hang_is_a_timeout_and_a_crash_is_a_crash(mutate, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "mod.py").write_text("N = 1 - 1\nM = 2 + 2\n")
    (project / "test_mod.py").write_text(
        "import os\nimport mod\n\ndef test_mod():\n"
        "    while mod.N == 2:\n        pass\n"  # 1 + 1: never returns
        "    if mod.M == 0:\n        os.abort()\n")  # 2 - 2: the test process dies
    results = mutate.run("mod.py", "test_mod.py", root=str(project), timeout=5)
    assert [(r["id"], r["how"], r["killed"]) for r in results] == [
        ("1:6:-->+", "timeout", True), ("2:6:+->-", "crash", True)]


def test_the_copy_holds_what_git_would_and_the_command_line_sums_up(mutate, tmp_path):
    """Outside a git checkout the copy takes every file but caches and .git; the command line ends
    with the number killed and the survivors' ids ("none" when every mutant was killed)."""
    project = tmp_path / "project"
    for f in ("mod.py", "test_mod.py", "__pycache__/mod.cpython.pyc", ".git/config", "sub/data.txt"):
        (project / f).parent.mkdir(parents=True, exist_ok=True)
        (project / f).write_text("x = 1\n")
    snap = mutate._snapshot(str(project))
    try:
        copied = sorted(os.path.relpath(os.path.join(d, f), snap) for d, _, names in os.walk(snap) for f in names)
    finally:
        shutil.rmtree(snap)
    assert copied == ["mod.py", "sub/data.txt", "test_mod.py"]
    (project / "mod.py").write_text("def f(a, b):\n    return a + b if a < b else a * b\n")
    script = os.path.join(ROOT, "tools", "mutate.py")
    for test, last in (("assert f(1, 2) == 3 and f(3, 2) == 6", "2 of 3 killed; survived: 2:22:<-><="),
                       ("assert f(1, 2) == 3 and f(3, 2) == 6 and f(3, 3) == 9", "3 of 3 killed; survived: none")):
        (project / "test_mod.py").write_text(f"from mod import f\n\ndef test_f():\n    {test}\n")
        r = subprocess.run([sys.executable, script, "mod.py", "--tests", "test_mod.py", "--root", str(project)],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and r.stdout.splitlines()[-1] == last, r.stdout + r.stderr

