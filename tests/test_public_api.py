"""Every public function and method of minippo/ and kernels/ carries type hints and a docstring
(read from the source, so optional dependencies need not be installed)."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _is_setter(fn: ast.FunctionDef) -> bool:
    return any(isinstance(d, ast.Attribute) and d.attr in ("setter", "deleter") for d in fn.decorator_list)


def _problems(fn: ast.FunctionDef, where: str) -> list[str]:
    a = fn.args
    params = [p for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg not in ("self", "cls")]
    params += [p for p in (a.vararg, a.kwarg) if p is not None]
    out = [f"{where}: argument {p.arg} has no type hint" for p in params if p.annotation is None]
    if fn.returns is None and fn.name != "__init__":
        out.append(f"{where}: no return type")
    if not ast.get_docstring(fn) and not fn.name.startswith("__"):
        out.append(f"{where}: no docstring")
    return out


def test_public_functions_have_type_hints_and_docstrings():
    problems, n = [], 0
    for path in sorted([*ROOT.joinpath("minippo").glob("*.py"), *ROOT.joinpath("kernels").glob("*.py")]):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                n += 1
                problems += _problems(node, f"{path.name}:{node.name}")
            elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                if not ast.get_docstring(node):
                    problems.append(f"{path.name}:{node.name}: class without a docstring")
                for m in node.body:
                    public = not m.name.startswith("_") or m.name in ("__init__", "__call__") \
                        if isinstance(m, ast.FunctionDef) else False
                    if public and not _is_setter(m):
                        n += 1
                        problems += _problems(m, f"{path.name}:{node.name}.{m.name}")
    assert n > 150  # the walk found the API
    assert not problems, "\n".join(problems)


def test_intrinsics_made_by_a_factory_are_typed_too():
    """vadd, vsub and vmul are assigned from a factory's call, which the walk of ``def`` statements
    above does not see: every public numba intrinsic of kernels/simd.py is checked here at run time."""
    import inspect

    import pytest

    pytest.importorskip("numba")
    from kernels import simd

    seen = []
    for name in dir(simd):
        typer = getattr(getattr(simd, name), "_defn", None)
        if name.startswith("_") or not callable(typer):
            continue
        seen.append(name)
        sig = inspect.signature(typer)
        assert all(p.annotation is not p.empty for p in sig.parameters.values()), name
        assert sig.return_annotation is not sig.empty and typer.__doc__, name
    assert {"vadd", "vsub", "vmul", "vfold"} <= set(seen)


# A shape as the docstrings write them, "(B, n)", "(d,)", "(B, sizes[-1])", or the words shape(s) and scalar.
_SHAPE = re.compile(r"\((?:[\w+*.\[\]\- ]+,)+[\w+*.\[\]\- ]*\)|\bshapes?\b|\bscalar\b")
_ARRAY = re.compile(r"\b(Array|ndarray|NDArray)\b")


def test_public_functions_on_arrays_state_the_shapes():
    """The brief's "a docstring with shapes": every public function or method that takes or returns
    an array says which shapes (an ``__init__`` through its class's docstring)."""
    problems, n = [], 0
    for path in sorted([*ROOT.joinpath("minippo").glob("*.py"), *ROOT.joinpath("kernels").glob("*.py")]):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        todo = [(node, "", f"{path.name}:") for node in tree.body
                if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")]
        for cls in tree.body:
            if isinstance(cls, ast.ClassDef) and not cls.name.startswith("_"):
                todo += [(m, ast.get_docstring(cls) or "", f"{path.name}:{cls.name}.") for m in cls.body
                         if isinstance(m, ast.FunctionDef)
                         and (not m.name.startswith("_") or m.name in ("__init__", "__call__"))]
        for fn, cls_doc, where in todo:
            signature = ast.unparse(fn.args) + (ast.unparse(fn.returns) if fn.returns else "")
            if not _ARRAY.search(signature):
                continue
            n += 1
            doc = (ast.get_docstring(fn) or "") + (cls_doc if fn.name == "__init__" else "")
            if not _SHAPE.search(doc):
                problems.append(f"{where}{fn.name}: takes or returns an array, its docstring names no shape")
    assert n > 80  # the walk found the array API
    assert not problems, "\n".join(problems)
