"""Mutation testing: does the test suite notice when the code is changed?

    python tools/mutate.py minippo/losses.py --tests tests/test_losses.py
    python tools/mutate.py kernels/cpu.py --functions _dot_pairs_impl --fresh-numba-cache \\
        --tests "tests/test_kernels_cpu.py -k dot_pairs"

Each mutant changes one operator of FILE:
- a comparison turned around (``==``/``!=``, ``<``/``<=``, ``>``/``>=``, ``is``/``is not``,
  ``in``/``not in``);
- ``and``/``or`` swapped, or a ``not`` or a unary minus dropped;
- an arithmetic operator swapped (``+``/``-``, ``*``/``/``, ``//`` to ``*``, ``%`` to ``//``,
  ``**`` to ``*``), in augmented assignments too.

The tests run once on the unmutated code first, and must pass there (else no failure would say
anything about a mutant: a ``-k`` that selects nothing, say, or a test file that does not exist).
Each mutant then runs the tests in a copy of the checkout (the working tree is never written) and
is *killed* when they fail, crash or time out. The survivors are the changes no test noticed: each
one is either a missing test or an equivalent mutant (the same results by another route); say
which in a note. A mutant whose pytest ends without running the tests (an exit status of pytest's
other than 0 and 1: interrupted, internal error, usage error, no tests collected) is an *error*,
neither killed nor survived, and makes the exit status 1.

``--inject`` leaves the file on disk unchanged for a mutant inside a top-level function or class
that nothing compiles: the tests import the file as it is, and the mutated definition replaces the
original in the module's namespace as its import ends (a ``sitecustomize`` put first on the tests'
``PYTHONPATH``; subprocesses the tests start get it too). numba stamps its on-disk cache with a hash
of the whole file (numba 0.68), so a mutant written to a file of kernels recompiles every kernel the
tests reach (~100 s a mutant for ``kernels/cpu_act.py`` against its test file); injected, the
Python around them runs against the cached kernels (~6 s). Not injected, and written as before: the
mutants inside a definition with a compiling decorator (``njit``, ``jit``, ``vectorize``, ...) or
with one inside it, at module level, or inside a definition whose name the module's import-time code
reads (``kernel = njit(impl)``, a table of functions: those would keep the original). The run on the
unmutated code is made twice with ``--inject``: plain, then with a definition injected unchanged,
which must pass too.

``--fresh-numba-cache`` gives every mutant an empty ``NUMBA_CACHE_DIR``, so numba compiles the
mutated kernels instead of loading the unmutated ones from its cache (slow: a compile per mutant).
One JSON line per mutant goes to ``--out`` (a run stopped and restarted skips the ids already
there, and runs again the one whose line a stop cut short; ``exit``, pytest's exit status, is
missing from the lines written before errors were told from kills); a summary goes to stdout.
Sessions 32-38 ran these over minippo/ and kernels/ (notes); sessions 35-38 set ``NUMBA_OPT=0``
(passed on to the tests) for the numba kernels, which compile in ~40% less time at that level
with the same semantics (check that the unmutated code passes the tests there first).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

COMPARE = {ast.Eq: ("==", "!="), ast.NotEq: ("!=", "=="), ast.Lt: ("<", "<="), ast.LtE: ("<=", "<"),
           ast.Gt: (">", ">="), ast.GtE: (">=", ">"), ast.Is: ("is", "is not"), ast.IsNot: ("is not", "is"),
           ast.In: ("in", "not in"), ast.NotIn: ("not in", "in")}
ARITH = {ast.Add: ("+", "-"), ast.Sub: ("-", "+"), ast.Mult: ("*", "/"), ast.Div: ("/", "*"),
         ast.FloorDiv: ("//", "*"), ast.Mod: ("%", "//"), ast.Pow: ("**", "*")}
# pytest's exit statuses that say the tests did not run to a verdict (1 is "a test failed"; with -x
# an import error while collecting is 1 too). After the unmutated code passed, one of these from a
# mutant is no evidence that a test saw it: a conftest that imports the mutated code, say, and fails.
PYTEST_ERRORS = {2: "interrupted", 3: "internal error", 4: "usage error", 5: "no tests collected"}


class NotPassing(Exception):
    """The tests do not pass on the unmutated code (the message says how they ended)."""


@dataclass(frozen=True)
class Mutant:
    """One operator of a file replaced: ``old`` at (``line``, ``col``) (1-based line, 0-based
    column) becomes ``new``; ``function`` is the innermost function around it ("" at module level)."""

    line: int
    col: int
    old: str
    new: str
    function: str

    @property
    def id(self) -> str:
        return f"{self.line}:{self.col}:{self.old}->{self.new}"

    def apply(self, source: str) -> str:
        """``source`` with this mutant's edit (the operator must be where the mutant says)."""
        lines = source.splitlines(keepends=True)
        text = lines[self.line - 1]
        if text[self.col:self.col + len(self.old)] != self.old:
            raise ValueError(f"mutant {self.id}: {self.old!r} is not at column {self.col} of {text!r}")
        lines[self.line - 1] = text[:self.col] + self.new + text[self.col + len(self.old):]
        return "".join(lines)


def _between(lines: list[str], a: ast.AST, b: ast.AST, op: str) -> tuple[int, int] | None:
    """(line, column) of the operator ``op`` between node a and node b: between them on one line,
    or, where b starts on a later line, at the end of a's line or at the start of b's; None if the
    text there is anything else (a comment, say)."""
    def bare(text: str) -> str:  # the text without brackets, a line continuation and white space
        return text.replace("\\", " ").strip().strip("()").strip()

    if a.end_lineno == b.lineno:
        gap = lines[b.lineno - 1][a.end_col_offset:b.col_offset]
        return (b.lineno, a.end_col_offset + gap.index(op)) if bare(gap) == op else None
    tail, head = lines[a.end_lineno - 1][a.end_col_offset:], lines[b.lineno - 1][:b.col_offset]
    if bare(tail) == op and not bare(head):
        return a.end_lineno, a.end_col_offset + tail.index(op)
    if bare(head) == op and not bare(tail):
        return b.lineno, head.index(op)
    return None


def mutants(source: str, functions: set[str] | None = None) -> list[Mutant]:
    """Every mutant of ``source`` (see the module docstring), in source order; only inside the
    named functions (at any depth) when ``functions`` is given."""
    tree = ast.parse(source)
    lines = source.splitlines()
    found: dict[tuple[int, int, str], Mutant] = {}

    def add(at: tuple[int, int] | None, old: str, new: str, fn: str) -> None:
        if at is not None and (functions is None or fn in functions):
            found.setdefault((*at, old), Mutant(*at, old, new, fn))

    def visit(node: ast.AST, fn: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            fn = node.name
        if isinstance(node, ast.Compare) and type(node.ops[0]) in COMPARE:
            old, new = COMPARE[type(node.ops[0])]
            add(_between(lines, node.left, node.comparators[0], old), old, new, fn)
        elif isinstance(node, ast.BoolOp):
            old, new = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
            for a, b in zip(node.values, node.values[1:], strict=False):
                add(_between(lines, a, b, old), old, new, fn)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
            old = "not " if isinstance(node.op, ast.Not) else "-"
            if lines[node.lineno - 1][node.col_offset:node.col_offset + len(old)] == old:
                add((node.lineno, node.col_offset), old, "", fn)
        elif isinstance(node, ast.BinOp) and type(node.op) in ARITH:
            old, new = ARITH[type(node.op)]
            add(_between(lines, node.left, node.right, old), old, new, fn)
        elif isinstance(node, ast.AugAssign) and type(node.op) in ARITH:
            old, new = (s + "=" for s in ARITH[type(node.op)])
            add(_between(lines, node.target, node.value, old), old, new, fn)
        for child in ast.iter_child_nodes(node):
            visit(child, fn)

    visit(tree, "")
    return sorted(found.values(), key=lambda m: (m.line, m.col))


COMPILERS = {"njit", "jit", "vectorize", "guvectorize", "cfunc", "stencil", "generated_jit", "overload",
             "overload_method", "overload_attribute", "intrinsic", "register_jitable", "jit_module"}


def _reads(node: ast.AST) -> set[str]:
    """The global names ``node`` reads: those loaded, less a function's own (its parameters and the
    names it assigns) within that function (a kernel's parameter ``act`` is not the module's ``act``)."""
    found: set[str] = set()

    def visit(n: ast.AST, local: frozenset[str]) -> None:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = n.args
            own = {x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg) if x is not None}
            own |= {m.id for m in ast.walk(n) if isinstance(m, ast.Name) and isinstance(m.ctx, ast.Store)}
            for part in (*getattr(n, "decorator_list", ()), *a.defaults, *(d for d in a.kw_defaults if d)):
                visit(part, local)
            body = n.body if isinstance(n.body, list) else [n.body]
            for part in body:
                visit(part, local | own)
            return
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id not in local:
            found.add(n.id)
        for child in ast.iter_child_nodes(n):
            visit(child, local)

    visit(node, frozenset())
    return found


def _compiles(node: ast.AST) -> bool:
    """Whether ``node`` names a compiler (COMPILERS, as a name or an attribute: ``numba.njit``)."""
    return any(isinstance(n, ast.Name) and n.id in COMPILERS or isinstance(n, ast.Attribute) and n.attr in COMPILERS
               for n in ast.walk(node))


def injectable(source: str) -> dict[int, tuple[str, int]]:
    """Line -> (name, first line) of the top-level function or class around it, for the lines a
    mutant may be injected at (see ``--inject``). Not those of a definition that compiled code may
    hold: one with a compiling decorator (COMPILERS) or one inside it, one that names a compiler in
    its body (it compiles at run time), one whose name the module's import-time code reads
    (decorators, default values, class bodies and module-level statements run at import; function
    bodies do not), and, repeatedly, one whose name any of these reads."""
    tree = ast.parse(source)
    lazy = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and any(a.name == "annotations"
               for a in n.names) for n in tree.body)
    read: set[str] = set()

    def at_import(node: ast.AST) -> None:
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            read.add(node.id)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            args = node.args
            parts = [*getattr(node, "decorator_list", ()), *args.defaults, *(d for d in args.kw_defaults if d)]
            if not lazy:  # annotations are evaluated at definition time without PEP 563
                parts += [a.annotation for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg,
                                                 args.kwarg) if a is not None and a.annotation is not None]
                parts += [node.returns] if getattr(node, "returns", None) is not None else []
            for part in parts:
                at_import(part)
            return  # the body runs when called
        if lazy and isinstance(node, ast.AnnAssign):
            for part in (node.target, node.value):
                if part is not None:
                    at_import(part)
            return
        for child in ast.iter_child_nodes(node):
            at_import(child)

    at_import(tree)
    defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    held = {name for name, n in defs.items() if name in read or _compiles(n)}
    grew = True
    while grew:
        more = {name for name in defs if name not in held and any(name in _reads(defs[h]) for h in held)}
        held |= more
        grew = bool(more)
    lines = {}
    for name, node in defs.items():
        if name not in held:
            for line in range(node.lineno, node.end_lineno + 1):
                lines[line] = (name, node.lineno)
    return lines


# Put first on the tests' PYTHONPATH by --inject: when the module whose file is MUTATE_INJECT["file"]
# has been imported, the top-level definition MUTATE_INJECT["name"] at line ["line"] of the source in
# file ["source"] replaces its own. Then any sitecustomize further along sys.path runs, as it would have.
SITECUSTOMIZE = '''\
"""tools/mutate.py --inject: see MUTATE_INJECT in that file."""
import ast
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_SPEC = json.loads(os.environ.get("MUTATE_INJECT") or "null")


class _Inject(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.rpartition(".")[2] != _SPEC["module"]:
            return None
        for finder in sys.meta_path:
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    break
        else:
            return None
        if not spec.origin or os.path.realpath(spec.origin) != _SPEC["file"]:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            with open(_SPEC["source"]) as f:
                tree = ast.parse(f.read())
            node, = [n for n in tree.body if getattr(n, "name", None) == _SPEC["name"]
                     and n.lineno == _SPEC["line"]]
            exec(compile(ast.Module([node], []), module.__file__, "exec"), module.__dict__)

        spec.loader.exec_module = exec_module
        return spec


if _SPEC:
    sys.meta_path.insert(0, _Inject())
_next = importlib.machinery.PathFinder.find_spec("sitecustomize", [p for p in sys.path if p and
                                                                     os.path.abspath(p) != _HERE])
if _next is not None and _next.loader is not None:
    _mod = importlib.util.module_from_spec(_next)
    _next.loader.exec_module(_mod)
'''


def _snapshot(root: str) -> str:
    """A copy of ``root`` to mutate: the files git tracks there (all files outside a git checkout)."""
    dest = tempfile.mkdtemp(prefix="mutate-")
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=root, capture_output=True, check=True)
        files = [f for f in listed.stdout.decode().split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        files = [os.path.relpath(os.path.join(d, f), root) for d, subdirs, names in os.walk(root)
                 for f in names if "__pycache__" not in d and ".git" not in d.split(os.sep)]
    for f in files:
        os.makedirs(os.path.join(dest, os.path.dirname(f)), exist_ok=True)
        shutil.copy2(os.path.join(root, f), os.path.join(dest, f))
    return dest


def _done(out: str) -> set[str]:
    """The mutant ids already in the results file ``out`` (none if it does not exist).

    A run stopped while writing its last line leaves that line without its newline: it is dropped
    (the file rewritten atomically without it) and that mutant runs again. Any other line that is
    not a result is an error naming the file and line, rather than a guess."""
    if not os.path.exists(out):
        return set()
    with open(out, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" after a final newline, else the partial line of a stopped write
    done = set()
    for i, line in enumerate(lines, 1):
        if line.strip():
            try:
                done.add(json.loads(line)["id"])
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{out}, line {i}: not a mutant result ({e}); "
                                 "pass another --out or remove that line") from None
    if tail:
        tmp = f"{out}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data[:len(data) - len(tail)])
        os.replace(tmp, out)
    return done


def _check_out(out: str) -> set[str]:
    """The ids already in the results file ``out`` (see _done), once it is known that results can
    be added to it: else a ValueError with a message for the user. Checked before any test runs, so
    that a bad ``out`` costs no time and loses no result."""
    if os.path.isdir(out):
        raise ValueError(f"--out {out!r} is a folder; name a file in it (results.jsonl, say)")
    folder = os.path.dirname(out) or "."
    if not os.path.isdir(folder):
        raise ValueError(f"--out {out!r}: there is no folder {folder!r}")
    if not os.access(out if os.path.exists(out) else folder, os.W_OK):
        raise ValueError(f"--out {out!r} cannot be written (permission denied)")
    try:
        return _done(out)
    except OSError as e:
        raise ValueError(f"--out {out!r} cannot be read or rewritten ({e.strerror})") from None


def _pytest(snap: str, tests: list[str], timeout: float, fresh_numba_cache: bool,
            inject: tuple[str, dict] | None = None, numba_cache: str | None = None) -> tuple[int | None, str]:
    """pytest run on ``tests`` in the copy ``snap``: its exit status (None when it ran past
    ``timeout`` seconds) and the line of its output that most likely says why it failed. ``inject``:
    (the folder of SITECUSTOMIZE, MUTATE_INJECT's value); ``numba_cache``: the NUMBA_CACHE_DIR to
    use (else the caller's, or a fresh one with ``fresh_numba_cache``)."""
    env = {**os.environ, "PYTHONPATH": snap, "PYTHONDONTWRITEBYTECODE": "1"}
    if inject:
        env["PYTHONPATH"] = os.pathsep.join((inject[0], snap))
        env["MUTATE_INJECT"] = json.dumps(inject[1])
    if numba_cache:
        env["NUMBA_CACHE_DIR"] = numba_cache
    cache = tempfile.mkdtemp(prefix="numba-") if fresh_numba_cache else None
    if cache:
        env["NUMBA_CACHE_DIR"] = cache
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                           cwd=snap, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, ""
    finally:
        if cache:
            shutil.rmtree(cache, ignore_errors=True)
    # pytest's own complaints (a path not found, an option unknown, a conftest that failed to
    # import) go to stderr, followed by context lines; its summary ("no tests ran") goes to stdout.
    err = [line.strip() for line in r.stderr.splitlines() if line.strip()]
    said = [line for line in err if "error" in line.lower()] or err or \
        [line.strip() for line in r.stdout.splitlines() if line.strip()] or [""]
    return r.returncode, said[-1]


def _how(code: int | None) -> str:
    """What a mutant's pytest exit status ``code`` (None: timed out) says about it."""
    if code is None:
        return "timeout"
    if code in PYTEST_ERRORS:
        return "error"
    # A status pytest never gives (os._exit in the code under test, say) is a crash, like a signal.
    return "survived" if code == 0 else "failed" if code == 1 else "crash"


def run(path: str, tests: str, root: str = ".", functions: set[str] | None = None, out: str | None = None,
        timeout: float = 600.0, fresh_numba_cache: bool = False, inject: bool = False) -> list[dict]:
    """Run every mutant of ``path`` (relative to ``root``) against ``tests`` (pytest arguments,
    split like a shell command); returns one result dict per mutant (also appended to ``out``).
    ``inject``: the mutants that can be are injected at import, not written (see ``--inject``).

    The tests run on the unmutated code first, when any mutant is left to run: NotPassing unless
    they pass (with ``inject``, also with a definition injected unchanged). A ValueError, before
    anything runs, if ``out`` cannot take the results (_check_out)."""
    done = _check_out(out) if out else set()
    args = shlex.split(tests)
    snap = _snapshot(root)
    target = os.path.join(snap, path)
    with open(target) as f:
        source = f.read()
    where = injectable(source) if inject else {}
    site = tempfile.mkdtemp(prefix="mutate-site-") if inject else ""  # SITECUSTOMIZE, the mutated source, caches
    if site:
        with open(os.path.join(site, "sitecustomize.py"), "w") as f:
            f.write(SITECUSTOMIZE)
    mutated = os.path.join(site, "mutated.py")
    # With inject, numba's cache is filled once, by the first run on the unmutated code, and each
    # later run gets a copy of it: an injected mutant leaves the file's hash, numba's stamp, as it
    # was, so what it compiled (with other options, say) would otherwise be loaded by the next.
    base = os.path.join(site, "numba-base") if inject and not fresh_numba_cache else None
    if base:
        os.makedirs(base)

    def pytest(inj: tuple[str, dict] | None = None, first: bool = False) -> tuple[int | None, str]:
        if base is None or first:
            return _pytest(snap, args, timeout, fresh_numba_cache, inj, base)
        copy = os.path.join(site, "numba-copy")
        shutil.copytree(base, copy)
        try:
            return _pytest(snap, args, timeout, fresh_numba_cache, inj, copy)
        finally:
            shutil.rmtree(copy, ignore_errors=True)

    def injected(text: str, line: int) -> tuple[str, dict]:  # text, injected at line's definition
        with open(mutated, "w") as f:
            f.write(text)
        name, first = where[line]
        return site, {"file": os.path.realpath(target), "module": os.path.splitext(os.path.basename(path))[0],
                      "source": mutated, "name": name, "line": first}

    results = []
    try:
        todo = [m for m in mutants(source, functions) if m.id not in done]
        if todo:
            baselines = [("", None)]
            if any(m.line in where for m in todo):
                line = next(m.line for m in todo if m.line in where)
                baselines.append((f" with {where[line][0]} injected unchanged", injected(source, line)))
            for how_run, inj in baselines:
                code, said = pytest(inj, first=inj is None)
                if code is None:
                    raise NotPassing(f"the tests ran past the timeout ({timeout:g} s) on the unmutated code{how_run}")
                if code != 0:
                    raise NotPassing(f"the tests must pass on the unmutated code{how_run}, but pytest exited {code} "
                                     f"({ {1: 'tests failed', **PYTEST_ERRORS}.get(code, 'crashed')}): {said}")
        for m in todo:
            t0 = time.monotonic()
            if m.line in where:
                code, said = pytest(injected(m.apply(source), m.line))
            else:
                with open(target, "w") as f:
                    f.write(m.apply(source))
                try:
                    code, said = pytest()
                finally:
                    with open(target, "w") as f:
                        f.write(source)
            how = _how(code)
            res = {"id": m.id, **asdict(m), "killed": how not in ("survived", "error"), "how": how, "exit": code,
                   "seconds": round(time.monotonic() - t0, 1), "injected": m.line in where}
            if how == "error":  # what pytest said instead of running the tests
                res["said"] = said
            results.append(res)
            if out:  # one write of one whole line: a stop leaves at most a partial last line (_done)
                fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                try:
                    os.write(fd, (json.dumps(res) + "\n").encode())
                finally:
                    os.close(fd)
            print(f"{how:8s} {m.id:24s} {m.function}"
                  + (f"  (pytest exit {code}, {PYTEST_ERRORS[code]}: {said})" if how == "error" else ""), flush=True)
    finally:
        shutil.rmtree(snap, ignore_errors=True)
        if site:
            shutil.rmtree(site, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring); exit status 0, whatever survived, unless a
    mutant's tests ended in an error (1); 2 for arguments refused, before any test runs."""
    p = argparse.ArgumentParser(description="Mutation testing of one file against a set of tests.")
    p.add_argument("file", help="the file to mutate, relative to --root")
    p.add_argument("--tests", help='pytest arguments, e.g. "tests/test_losses.py -k clip" (needed unless --list)')
    p.add_argument("--root", default=".", help="the checkout to copy (default: the current folder)")
    p.add_argument("--functions", nargs="+", help="mutate only inside these functions")
    p.add_argument("--out", help="append one JSON line per mutant here (and skip the ids already in it)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant (default 600)")
    p.add_argument("--fresh-numba-cache", action="store_true", help="an empty NUMBA_CACHE_DIR per mutant")
    p.add_argument("--inject", action="store_true",
                   help="inject the mutants of uncompiled top-level definitions at import (the file unchanged)")
    p.add_argument("--list", action="store_true", help="print the mutants and run nothing")
    a = p.parse_args(argv)
    if not os.path.isfile(os.path.join(a.root, a.file)):
        p.error(f"file {a.file!r} not found under --root {a.root!r}")
    if a.tests is None and not a.list:
        p.error("--tests is needed (the pytest arguments to run against each mutant), unless --list")
    if a.timeout <= 0:
        p.error(f"--timeout must be > 0 seconds, got {a.timeout}")
    if a.tests is not None:
        try:
            shlex.split(a.tests)
        except ValueError as e:
            p.error(f"--tests {a.tests!r} cannot be split like a shell command ({e})")
    functions = set(a.functions) if a.functions else None
    with open(os.path.join(a.root, a.file)) as f:
        try:
            source = f.read()
            found = mutants(source, functions)
        except (SyntaxError, ValueError) as e:
            p.error(f"file {a.file!r} is not Python source ({type(e).__name__}: {e})")
    if functions:  # a misspelt name would otherwise just leave fewer (or no) mutants
        defined = {n.name for n in ast.walk(ast.parse(source))
                   if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        if functions - defined:
            p.error(f"--functions: no function named {', '.join(sorted(functions - defined))} in {a.file!r}")
    if a.list:
        for m in found:
            print(f"{m.id:24s} {m.function}")
        return 0
    if not found:
        p.error(f"no mutants in {a.file!r}" + (f" inside {', '.join(sorted(functions))}" if functions else "")
                + ": no operator there that this tool changes")
    if a.out:
        try:
            _check_out(a.out)
        except ValueError as e:
            p.error(str(e))
    try:
        results = run(a.file, a.tests, a.root, functions, a.out, a.timeout, a.fresh_numba_cache, a.inject)
    except NotPassing as e:
        p.error(str(e))
    survivors = [r for r in results if r["how"] == "survived"]
    errors = [r for r in results if r["how"] == "error"]
    print(f"{sum(r['killed'] for r in results)} of {len(results)} killed; survived: "
          + (", ".join(r["id"] for r in survivors) or "none")
          + ("; errors (the tests did not run): " + ", ".join(f"{r['id']} (pytest exit {r['exit']})" for r in errors)
             if errors else ""))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
