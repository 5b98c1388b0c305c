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


def _pytest(snap: str, tests: list[str], timeout: float, fresh_numba_cache: bool) -> tuple[int | None, str]:
    """pytest run on ``tests`` in the copy ``snap``: its exit status (None when it ran past
    ``timeout`` seconds) and the line of its output that most likely says why it failed."""
    env = {**os.environ, "PYTHONPATH": snap, "PYTHONDONTWRITEBYTECODE": "1"}
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
        timeout: float = 600.0, fresh_numba_cache: bool = False) -> list[dict]:
    """Run every mutant of ``path`` (relative to ``root``) against ``tests`` (pytest arguments,
    split like a shell command); returns one result dict per mutant (also appended to ``out``).

    The tests run on the unmutated code first, when any mutant is left to run: NotPassing unless
    they pass. A ValueError, before anything runs, if ``out`` cannot take the results (_check_out)."""
    done = _check_out(out) if out else set()
    args = shlex.split(tests)
    snap = _snapshot(root)
    target = os.path.join(snap, path)
    with open(target) as f:
        source = f.read()
    results = []
    try:
        todo = [m for m in mutants(source, functions) if m.id not in done]
        if todo:
            code, said = _pytest(snap, args, timeout, fresh_numba_cache)
            if code is None:
                raise NotPassing(f"the tests ran past the timeout ({timeout:g} s) on the unmutated code")
            if code != 0:
                raise NotPassing(f"the tests must pass on the unmutated code, but pytest exited {code} "
                                 f"({ {1: 'tests failed', **PYTEST_ERRORS}.get(code, 'crashed')}): {said}")
        for m in todo:
            with open(target, "w") as f:
                f.write(m.apply(source))
            t0 = time.monotonic()
            try:
                code, said = _pytest(snap, args, timeout, fresh_numba_cache)
            finally:
                with open(target, "w") as f:
                    f.write(source)
            how = _how(code)
            res = {"id": m.id, **asdict(m), "killed": how not in ("survived", "error"), "how": how, "exit": code,
                   "seconds": round(time.monotonic() - t0, 1)}
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
        results = run(a.file, a.tests, a.root, functions, a.out, a.timeout, a.fresh_numba_cache)
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
