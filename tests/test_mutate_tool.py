"""tools/mutate.py finds the operators it says it mutates, edits only a copy of the checkout, and
tells killed mutants from survivors."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def mutate(tool):
    return tool("mutate.py")


@pytest.fixture(autouse=True)
def _bare_pytest(monkeypatch):
    """The pytest runs of these small projects (one per mutant, and one before them) without the
    installed plugins, which none of them uses: hypothesis's alone adds ~1 s to each start, and this
    file starts ~40 of them (the tool's own default keeps the caller's environment)."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


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
    then compiles the mutated kernels), and for the run on the unmutated code before them, gone
    afterwards; without it, the variable is left as it is."""
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
    assert len(set(folders)) == 3 and not any(os.path.exists(d) for d in folders)
    mine = tmp_path / "my-cache"
    mine.mkdir()
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(mine))
    seen.unlink()
    results = mutate.run("mod.py", "test_env.py", root=str(project), timeout=120)
    assert [r["how"] for r in results] == ["survived", "survived"]
    assert seen.read_text().split() == [str(mine)] * 3 and mine.is_dir()


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



def _cli(*argv, timeout=120):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "mutate.py"), *argv],
                          capture_output=True, text=True, timeout=timeout)


def test_tests_must_pass_on_the_unmutated_code_before_any_mutant_runs(mutate, tmp_path):
    """A -k that selects nothing, a test path that does not exist, or a test that fails anyway would
    make every mutant "killed": the tests run on the unmutated code first, and must pass there."""
    (tmp_path / "mod.py").write_text("N = 2 - 1\n")
    (tmp_path / "test_mod.py").write_text("import mod\n\ndef test_n():\n    assert mod.N == 1\n")
    (tmp_path / "test_bad.py").write_text("def test_bad():\n    assert False\n")
    out = tmp_path / "results.jsonl"
    for tests, said in (("test_mod.py -k no_such_test", "pytest exited 5 (no tests collected): 1 deselected"),
                        ("no_such_file.py", "pytest exited 4 (usage error): ERROR: file or directory not found: "
                                            "no_such_file.py"),
                        ("test_bad.py", "pytest exited 1 (tests failed): ")):
        r = _cli("mod.py", "--root", str(tmp_path), "--tests", tests, "--out", str(out))
        assert r.returncode == 2 and "Traceback" not in r.stderr, (tests, r.stdout, r.stderr)
        assert f"error: the tests must pass on the unmutated code, but {said}" in r.stderr, (tests, r.stderr)
        assert r.stdout == "" and not out.exists()  # no mutant ran
    with pytest.raises(mutate.NotPassing, match=r"pytest exited 5 \(no tests collected\)"):
        mutate.run("mod.py", "test_mod.py -k no_such_test", root=str(tmp_path), timeout=120)


def test_a_mutant_whose_pytest_runs_no_test_is_an_error_not_a_kill(mutate, tmp_path):
    """pytest's exit statuses for "no tests collected" (5) and a usage error (4; here a conftest that
    cannot import the mutated module), like interrupted (2) and internal error (3), say no test saw
    the mutant: an "error", neither killed nor survived, with what pytest said. Lines the tool
    wrote before it recorded ``exit`` still count as done."""
    (tmp_path / "mod.py").write_text("N = 2 - 1\nZ = 1 * 0\nW = 3 + 1\n")
    (tmp_path / "conftest.py").write_text("import mod  # noqa: F401\n")
    (tmp_path / "test_mod.py").write_text("import mod\n\nif mod.N == 1:\n"
                                          "    def test_w():\n        assert mod.W == 4\n")
    results = mutate.run("mod.py", "test_mod.py", root=str(tmp_path), timeout=120)
    assert [(r["id"], r["how"], r["killed"], r["exit"]) for r in results] == [
        ("1:6:-->+", "error", False, 5), ("2:6:*->/", "error", False, 4), ("3:6:+->-", "failed", True, 1)]
    assert results[0]["said"].startswith("no tests ran in ")
    assert results[1]["said"] == "E   ZeroDivisionError: division by zero" and "said" not in results[2]
    out = tmp_path / "results.jsonl"  # as the tool wrote it before: no "exit"
    out.write_text(json.dumps({"id": "3:6:+->-", "line": 3, "col": 6, "old": "+", "new": "-", "function": "",
                               "killed": True, "how": "failed", "seconds": 0.5}) + "\n")
    r = _cli("mod.py", "--root", str(tmp_path), "--tests", "test_mod.py", "--out", str(out))
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1] == ("0 of 2 killed; survived: none; errors (the tests did not run): "
                                         "1:6:-->+ (pytest exit 5), 2:6:*->/ (pytest exit 4)")
    assert "error    2:6:*->/" in r.stdout and "(pytest exit 4, usage error: E   ZeroDivisionError" in r.stdout
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(x["id"], x["how"], x.get("exit")) for x in lines] == [
        ("3:6:+->-", "failed", None), ("1:6:-->+", "error", 5), ("2:6:*->/", "error", 4)]


def test_bad_out_or_tests_are_refused_before_any_test_runs(mutate, tmp_path):
    """An --out that is not a results file, a folder, or in a folder that does not exist, and --tests
    that do not split like a shell command: one line on stderr (no traceback), exit status 2, and
    not one test run (a missing folder used to show up only when the first result was written)."""
    (tmp_path / "mod.py").write_text("N = 2 - 1\n")
    ran = tmp_path / "ran.txt"
    (tmp_path / "test_mod.py").write_text(f"def test_n():\n    open({str(ran)!r}, 'a').write('x')\n")
    (tmp_path / "bad.jsonl").write_text("garbage\n")
    (tmp_path / "folder").mkdir()
    for out, tests, message in (
            ("bad.jsonl", "test_mod.py", "bad.jsonl, line 1: not a mutant result"),
            ("folder", "test_mod.py", "--out 'folder' is a folder; name a file in it"),
            ("nodir/r.jsonl", "test_mod.py", "--out 'nodir/r.jsonl': there is no folder 'nodir'"),
            ("r.jsonl", 'test_mod.py -k "n', "--tests 'test_mod.py -k \"n' cannot be split like a shell command "
                                             "(No closing quotation)")):
        r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "mutate.py"), "mod.py", "--tests", tests,
                            "--out", out], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and f"error: {message}" in r.stderr and "Traceback" not in r.stderr, (out, r.stderr)
        assert not ran.exists() and r.stdout == "", out
    assert not (tmp_path / "r.jsonl").exists()
    with pytest.raises(ValueError, match="there is no folder"):  # the same checks in run(), first thing
        mutate.run("mod.py", "test_mod.py", root=str(tmp_path), out=str(tmp_path / "nodir" / "r.jsonl"))
    assert not ran.exists()


def test_functions_that_match_no_mutant_are_refused(tmp_path):
    """A misspelt --functions name is an error naming it (it used to give "0 of 0 killed", exit 0),
    and so is a run with nothing to mutate in the functions named."""
    (tmp_path / "m.py").write_text("def f(a):\n    return a + 1\n\n\ndef g():\n    return 1\n")
    for argv, message in ((["--functions", "no_such_fn", "--tests", "t.py"], "--functions: no function named "
                                                                            "no_such_fn in 'm.py'"),
                          (["--functions", "f", "h", "--list"], "--functions: no function named h in 'm.py'"),
                          (["--functions", "g", "--tests", "t.py"], "no mutants in 'm.py' inside g: no operator")):
        r = _cli("m.py", "--root", str(tmp_path), *argv)
        assert r.returncode == 2 and f"error: {message}" in r.stderr, (argv, r.stdout, r.stderr)
    r = _cli("m.py", "--root", str(tmp_path), "--functions", "f", "--list")
    assert r.returncode == 0 and r.stdout.split() == ["2:13:+->-", "f"]


INJECT_SOURCE = textwrap.dedent('''\
    from __future__ import annotations


    def njit(f):  # stands for numba's: a compiling decorator, known by its name
        return f


    @njit
    def kernel(act):  # a parameter named like the module's act: still the kernel's own
        return act + 1


    def tabled(a):
        return a * 2


    TABLE = {"t": tabled}  # read at import: a table that would keep the original


    def act(a) -> Helper:  # (a lazy annotation: not read at import)
        return kernel(a) - 1


    def in_subprocess(a):
        return a - 5


    class Helper:
        def twice(self, a):
            return a + a
''')

INJECT_TEST = textwrap.dedent('''\
    import os
    import subprocess
    import sys

    import mod

    def test_mod():
        with open(os.path.join(os.path.dirname(mod.__file__), "mod.py")) as f:
            same = f.read() == ORIGINAL
        cache = os.environ["NUMBA_CACHE_DIR"]
        with open(SEEN, "a") as f:
            f.write(f"{'same' if same else 'written'} {sorted(os.listdir(cache))}\\n")
        with open(os.path.join(cache, f"run{len(open(SEEN).readlines())}"), "w"):
            pass
        assert mod.act(1) == 1 and mod.TABLE["t"](3) == 6 and mod.Helper().twice(2) == 4
        r = subprocess.run([sys.executable, "-c", "import mod; print(mod.in_subprocess(7))"],
                           capture_output=True, text=True, check=True)
        assert r.stdout == "2\\n"
''')


def test_inject_runs_uncompiled_definitions_against_the_file_unchanged(mutate, tmp_path, monkeypatch):
    """--inject: the mutants of ``act``, ``in_subprocess`` (seen only by a subprocess of the tests)
    and ``Helper`` replace their definitions at import and leave mod.py as it is; those of the
    decorated kernel and of a function a module-level table holds are written, as without it. Each
    run gets a copy of the numba cache the first run on the unmutated code filled: the tests see
    that run's file and none of any other."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "mod.py").write_text(INJECT_SOURCE)
    seen = tmp_path / "seen.txt"
    (project / "test_mod.py").write_text(f"ORIGINAL = {INJECT_SOURCE!r}\nSEEN = {str(seen)!r}\n" + INJECT_TEST)
    lines = {n: i for i, line in enumerate(INJECT_SOURCE.splitlines(), 1) for n in ("def act", "class Helper")
             if line.startswith(n)}
    assert mutate.injectable(INJECT_SOURCE) == {
        **{line: ("act", lines["def act"]) for line in range(lines["def act"], lines["def act"] + 2)},
        **{line: ("in_subprocess", lines["def act"] + 4) for line in range(lines["def act"] + 4, lines["def act"] + 6)},
        **{line: ("Helper", lines["class Helper"]) for line in range(lines["class Helper"], lines["class Helper"] + 3)}}
    results = mutate.run("mod.py", "test_mod.py", root=str(project), timeout=120, inject=True)
    assert [(r["function"], r["how"], r["injected"]) for r in results] == [
        ("kernel", "failed", False), ("tabled", "failed", False), ("act", "failed", True),
        ("in_subprocess", "failed", True), ("twice", "failed", True)]
    runs = seen.read_text().splitlines()
    assert runs == ["same []"] + ["same ['run1']"] + ["written ['run1']"] * 2 + ["same ['run1']"] * 3
    assert (project / "mod.py").read_text() == INJECT_SOURCE
    # Without --inject every mutant is written, and the tests see the caller's NUMBA_CACHE_DIR.
    seen.unlink()
    (tmp_path / "mine").mkdir()
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))  # (the caller's own, restored after)
    results = mutate.run("mod.py", "test_mod.py", root=str(project), timeout=120)
    assert [(r["how"], r["injected"]) for r in results] == [("failed", False)] * 5
    assert [line.split()[0] for line in seen.read_text().splitlines()] == ["same"] + ["written"] * 5


def test_inject_refuses_tests_that_fail_with_a_definition_injected_unchanged(mutate, tmp_path):
    """The run on the unmutated code is made a second time with --inject, a definition injected as
    it is, and must pass there too: else NotPassing, naming the definition (the command line's
    error)."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "mod.py").write_text("def f(a):\n    return a + 1\n")
    (project / "test_mod.py").write_text("import os\nimport mod\n\ndef test_f():\n"
                                         "    assert mod.f(1) == 2 and 'MUTATE_INJECT' not in os.environ\n")
    with pytest.raises(mutate.NotPassing, match="on the unmutated code with f injected unchanged, but pytest "
                                                "exited 1 "):
        mutate.run("mod.py", "test_mod.py", root=str(project), timeout=120, inject=True)
    assert [r["how"] for r in mutate.run("mod.py", "test_mod.py", root=str(project), timeout=120)] == ["failed"]
    r = _cli("mod.py", "--root", str(project), "--tests", "test_mod.py", "--inject")
    assert r.returncode == 2 and "with f injected unchanged" in r.stderr, r.stderr


def test_what_compiled_code_may_hold_is_not_injectable(mutate):
    """Not injectable: a definition named by a compiled one (an overload's implementation), one
    that compiles at run time (it names njit) and what it names, a class named by an annotation
    read at import (no PEP 563), a class with a compiled method, module-level code. Injectable: the
    function with that annotation, and a plain one."""
    source = textwrap.dedent('''\
        import numba


        def impl(x):
            return x + 1


        @numba.extending.overload(len)
        def ov(x):
            return impl


        def compiles_later(f):
            return numba.njit(helper(f))


        def helper(f):
            return f


        def annotated(a: Tag):
            return a - 1


        class Tag:
            def m(self):
                return 1 + 1


        class Kind:
            @numba.njit
            def m(self):
                return 1 - 1


        def plain(a):
            return a * 3


        Y = 1 + 2
    ''')
    first = {line.split()[1].split("(")[0]: i for i, line in enumerate(source.splitlines(), 1)
             if line.startswith(("def ", "class "))}
    got = mutate.injectable(source)
    assert got == {line: (name, first[name]) for name in ("annotated", "plain")
                   for line in (first[name], first[name] + 1)}
    assert [m.line in got for m in mutate.mutants(source)] == [False, True, False, False, True, False]
