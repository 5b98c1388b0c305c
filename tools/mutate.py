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

Each mutant runs the tests in a copy of the checkout (the working tree is never written) and is
*killed* when they fail, crash or time out. The survivors are the changes no test noticed: each
one is either a missing test or an equivalent mutant (the same results by another route); say
which in a note.

``--fresh-numba-cache`` gives every mutant an empty ``NUMBA_CACHE_DIR``, so numba compiles the
mutated kernels instead of loading the unmutated ones from its cache (slow: a compile per mutant).
One JSON line per mutant goes to ``--out`` (a run stopped and restarted skips the ids already
there, and runs again the one whose line a stop cut short); a summary goes to stdout. Sessions
32-38 ran these over minippo/ and kernels/ (notes); sessions 35-38 set ``NUMBA_OPT=0`` (passed on
to the tests) for the numba kernels, which compile in ~40% less time at that level with the
same semantics (check that the unmutated code passes the tests there first).
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


def run(path: str, tests: str, root: str = ".", functions: set[str] | None = None, out: str | None = None,
        timeout: float = 600.0, fresh_numba_cache: bool = False) -> list[dict]:
    """Run every mutant of ``path`` (relative to ``root``) against ``tests`` (pytest arguments,
    split like a shell command); returns one result dict per mutant (also appended to ``out``)."""
    done = _done(out) if out else set()
    snap = _snapshot(root)
    target = os.path.join(snap, path)
    with open(target) as f:
        source = f.read()
    results = []
    try:
        for m in mutants(source, functions):
            if m.id in done:
                continue
            env = {**os.environ, "PYTHONPATH": snap, "PYTHONDONTWRITEBYTECODE": "1"}
            cache = tempfile.mkdtemp(prefix="numba-") if fresh_numba_cache else None
            if cache:
                env["NUMBA_CACHE_DIR"] = cache
            with open(target, "w") as f:
                f.write(m.apply(source))
            t0 = time.monotonic()
            try:
                r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                                    *shlex.split(tests)], cwd=snap, env=env, capture_output=True, text=True,
                                   timeout=timeout)
                how = "survived" if r.returncode == 0 else "crash" if r.returncode < 0 else "failed"
            except subprocess.TimeoutExpired:
                how = "timeout"
            finally:
                with open(target, "w") as f:
                    f.write(source)
                if cache:
                    shutil.rmtree(cache, ignore_errors=True)
            res = {"id": m.id, **asdict(m), "killed": how != "survived", "how": how,
                   "seconds": round(time.monotonic() - t0, 1)}
            results.append(res)
            if out:  # one write of one whole line: a stop leaves at most a partial last line (_done)
                fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                try:
                    os.write(fd, (json.dumps(res) + "\n").encode())
                finally:
                    os.close(fd)
            print(f"{how:8s} {m.id:24s} {m.function}", flush=True)
    finally:
        shutil.rmtree(snap, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring); exit status 0, whatever survived."""
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
    functions = set(a.functions) if a.functions else None
    with open(os.path.join(a.root, a.file)) as f:
        try:
            found = mutants(f.read(), functions)
        except (SyntaxError, ValueError) as e:
            p.error(f"file {a.file!r} is not Python source ({type(e).__name__}: {e})")
    if a.list:
        for m in found:
            print(f"{m.id:24s} {m.function}")
        return 0
    results = run(a.file, a.tests, a.root, functions, a.out, a.timeout, a.fresh_numba_cache)
    survivors = [r for r in results if not r["killed"]]
    print(f"{len(results) - len(survivors)} of {len(results)} killed; survived: "
          + (", ".join(r["id"] for r in survivors) or "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
