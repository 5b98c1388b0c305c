"""Explicit 64-byte SIMD vectors inside numba kernels: ``cpu.py``'s register-blocked matmul tiles,
its dot products summed by shuffles, and its GAE blocks.

LLVM's loop vectoriser only vectorises innermost loops, so numba code such as ``cpu._mm_acc``'s
reads and writes ``out`` in memory once per pass over k, and on x86 it uses 256-bit vectors
(LLVM's tuning for recent Intel cores prefers them). A matmul tile wants the opposite: the
accumulators of a block of ``out`` kept in registers for the whole k loop, and the widest vectors.
These intrinsics give numba code a vector value of 64 bytes (16 float32 or 8 float64, ``Vec``) that
lives in registers:

- :func:`vload` / :func:`vstore`: ``a[i, j:j + L]`` of a C-ordered 2-d array as one vector;
- :func:`vload_first` / :func:`vstore_first`: ``a[i, j:j + n]`` for n <= L, in the first n lanes
  (masked: nothing past them is read or written);
- :func:`vsplat`: a scalar in every lane (of the vector type that matches an array's dtype);
- :func:`vfma`: ``a * b + c`` lane by lane, one rounding where the CPU has FMA (``llvm.fmuladd``);
- :func:`vadd` / :func:`vsub` / :func:`vmul`: lane by lane, each rounded as the scalar operation
  (the GAE blocks, which must equal numpy bit for bit);
- :func:`vfold`: one level of a tree of horizontal sums over several vectors (the dot products of
  ``cpu._dx_fold`` and ``cpu._dot_pairs``);
- :func:`vsum`: the sum of one vector's lanes, as a scalar (a fixed tree of halves);
- :func:`lanes`: ``L`` for an array's dtype, a compile-time constant.

LLVM lowers a 64-byte vector to one AVX-512 register where the CPU has them (numba does not set the
``min-legal-vector-width`` attribute that would narrow it), and to 2 x AVX2 / 4 x SSE / 4 x NEON
registers elsewhere, where a tile of many vectors spills (:func:`native_vector_bytes` tells callers
which). These intrinsics give the same results on every CPU with FMA; without FMA, :func:`vfma`
rounds twice. Callers check bounds: the loads and stores index the array's data directly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model
from numba.np.arrayobj import make_array

VECTOR_BYTES = 64

# What the typing function of an @intrinsic returns: (signature, codegen), or None when the argument
# types do not fit (numba then reports a typing error). Its arguments are numba types.
Typed = tuple[Any, Callable[..., Any]] | None


class Vec(types.Type):
    """numba type of a 64-byte vector of ``dtype`` (float32 or float64): ``n`` lanes."""

    def __init__(self, dtype: types.Float) -> None:
        self.dtype = dtype
        self.n = VECTOR_BYTES * 8 // dtype.bitwidth
        super().__init__(name=f"Vec({dtype} x {self.n})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        elt = ir.FloatType() if fe_type.dtype == types.float32 else ir.DoubleType()
        super().__init__(dmm, fe_type, ir.VectorType(elt, fe_type.n))


@functools.cache
def native_vector_bytes() -> int:
    """Width in bytes of the widest vector register of the CPU numba compiles for (honouring
    ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` as numba does): 64 with AVX-512, 32 with AVX/AVX2,
    16 otherwise (SSE, NEON). Found once, at the first compilation that asks, by compiling a 64-byte
    vector add for that target and reading which registers LLVM picked. Callers size register tiles
    with it: a ``Vec`` is 64 / native_vector_bytes() registers."""
    import llvmlite.binding as ll
    from numba.core import codegen, config
    from numba.core.compiler_lock import global_compiler_lock

    cpu = config.CPU_NAME or ll.get_host_cpu_name()
    feats = config.CPU_FEATURES if config.CPU_FEATURES is not None else codegen.get_host_cpu_features()
    mod = ir.Module(name="probe")
    mod.triple = ll.get_process_triple()
    vty = ir.VectorType(ir.FloatType(), 16)
    fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [vty.as_pointer()]), name="probe")
    b = ir.IRBuilder(fn.append_basic_block())
    v = b.load(fn.args[0])
    b.store(b.fadd(v, v), fn.args[0])
    b.ret_void()
    with global_compiler_lock:  # LLVM's global context: numba's own compilations hold this lock
        codegen.initialize_llvm()  # (idempotent; numba has done it already when it compiles)
        try:
            tm = ll.Target.from_default_triple().create_target_machine(cpu=cpu, features=feats, opt=2)
            asm = tm.emit_assembly(ll.parse_assembly(str(mod)))
        except Exception:  # no target machine or assembly for this triple: the widest (the old tiles)
            return VECTOR_BYTES
    return 64 if "zmm" in asm else 32 if "ymm" in asm else 16


def vec_type(arr: types.Type) -> Vec | None:
    """The vector type for a C-ordered 2-d float32/float64 array type, else None: the typing-time
    test of whether :func:`vload` / :func:`vstore` accept an array."""
    if (isinstance(arr, types.Array) and arr.ndim == 2 and arr.layout == "C"
            and arr.dtype in (types.float32, types.float64)):
        return Vec(arr.dtype)
    return None


def _element_ptr(context, builder, arrty, arr, i, j):
    """Pointer to arr[i, j] (C order: data + i * ncols + j), no bounds check."""
    a = make_array(arrty)(context, builder, arr)
    ncols = builder.extract_value(a.shape, 1)
    return builder.gep(a.data, [builder.add(builder.mul(i, ncols), j)])


def _intp(context, builder, sig, args, first):
    """The index arguments args[first], args[first + 1] cast to intp."""
    pairs = zip(args[first:first + 2], sig.args[first:first + 2], strict=True)
    return [context.cast(builder, v, t, types.intp) for v, t in pairs]


@intrinsic
def lanes(typingctx: Any, arr: types.Type) -> Typed:
    """Number of lanes of arr's vector type (16 for float32, 8 for float64), a compile-time constant;
    0 for an array these vectors cannot load (not C-ordered 2-d float32/float64): callers take their
    scalar loops for all of it then."""
    if not isinstance(arr, types.Array):
        return None
    vt = vec_type(arr)
    n = 0 if vt is None else vt.n

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, n)

    return types.intp(arr), codegen


@intrinsic
def vload(typingctx: Any, arr: types.Type, i: types.Type, j: types.Type) -> Typed:
    """arr[i, j:j + L] as one vector (unaligned load; the caller checks j + L <= ncols)."""
    vt = vec_type(arr)
    if vt is None:
        return None

    def codegen(context, builder, sig, args):
        p = _element_ptr(context, builder, sig.args[0], args[0], *_intp(context, builder, sig, args, 1))
        vty = context.get_value_type(vt)
        return builder.load(builder.bitcast(p, vty.as_pointer()), align=sig.args[0].dtype.bitwidth // 8)

    return vt(arr, i, j), codegen


@intrinsic
def vstore(typingctx: Any, arr: types.Type, i: types.Type, j: types.Type, v: types.Type) -> Typed:
    """arr[i, j:j + L] = v (unaligned store; the caller checks bounds)."""
    vt = vec_type(arr)
    if vt is None or v != vt:
        return None

    def codegen(context, builder, sig, args):
        p = _element_ptr(context, builder, sig.args[0], args[0], *_intp(context, builder, sig, args, 1))
        builder.store(args[3], builder.bitcast(p, args[3].type.as_pointer()), align=sig.args[0].dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(arr, i, j, v), codegen


def _ptr_suffix(vt: Vec) -> str:
    """The pointer part of a masked load/store intrinsic's name, for a pointer to a ``vt`` vector:
    ``p0`` where LLVM has only opaque pointers (LLVM >= 17: llvmlite >= 0.45, numba >= 0.62),
    ``p0v16f32`` and the like with the typed pointers of LLVM 14/15 (numba 0.59-0.61)."""
    from llvmlite import binding

    if binding.llvm_version_info[0] >= 17:
        return "p0"
    return f"p0v{vt.n}f{vt.dtype.bitwidth}"


def _first_lanes(builder, n_lanes, n):
    """The mask <lane < n> for lanes 0 .. n_lanes - 1 (n an i64)."""
    i64 = ir.IntType(64)
    one = builder.insert_element(ir.Constant(ir.VectorType(i64, n_lanes), ir.Undefined), n,
                                 ir.Constant(ir.IntType(32), 0))
    nv = builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(ir.IntType(32), n_lanes), [0] * n_lanes))
    return builder.icmp_unsigned("<", ir.Constant(ir.VectorType(i64, n_lanes), list(range(n_lanes))), nv)


@intrinsic
def vload_first(typingctx: Any, arr: types.Type, i: types.Type, j: types.Type, n: types.Type) -> Typed:
    """arr[i, j:j + n] in the first n lanes of a vector, zeros in the others (``llvm.masked.load``:
    the masked-off lanes are not read, so a row shorter than a vector may end the array).
    0 <= n <= L; the caller checks j + n <= ncols."""
    vt = vec_type(arr)
    if vt is None or not isinstance(n, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        p = _element_ptr(context, builder, sig.args[0], args[0], *_intp(context, builder, sig, args, 1))
        vty = context.get_value_type(vt)
        p = builder.bitcast(p, vty.as_pointer())
        mask = _first_lanes(builder, vt.n, context.cast(builder, args[3], sig.args[3], types.int64))
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vty, [p.type, ir.IntType(32), mask.type, vty]),
            f"llvm.masked.load.v{vt.n}f{vt.dtype.bitwidth}.{_ptr_suffix(vt)}")
        align = ir.Constant(ir.IntType(32), vt.dtype.bitwidth // 8)
        return builder.call(fn, [p, align, mask, ir.Constant(vty, None)])

    return vt(arr, i, j, n), codegen


@intrinsic
def vstore_first(typingctx: Any, arr: types.Type, i: types.Type, j: types.Type, v: types.Type, n: types.Type) -> Typed:
    """arr[i, j:j + n] = the first n lanes of v (``llvm.masked.store``: nothing else is written).
    0 <= n <= L; the caller checks j + n <= ncols."""
    vt = vec_type(arr)
    if vt is None or v != vt or not isinstance(n, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        p = _element_ptr(context, builder, sig.args[0], args[0], *_intp(context, builder, sig, args, 1))
        vty = args[3].type
        p = builder.bitcast(p, vty.as_pointer())
        mask = _first_lanes(builder, vt.n, context.cast(builder, args[4], sig.args[4], types.int64))
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [vty, p.type, ir.IntType(32), mask.type]),
            f"llvm.masked.store.v{vt.n}f{vt.dtype.bitwidth}.{_ptr_suffix(vt)}")
        builder.call(fn, [args[3], p, ir.Constant(ir.IntType(32), vt.dtype.bitwidth // 8), mask])
        return context.get_dummy_value()

    return types.none(arr, i, j, v, n), codegen


@intrinsic
def vsplat(typingctx: Any, arr: types.Type, x: types.Type) -> Typed:
    """x (cast to arr's dtype) in every lane of arr's vector type."""
    vt = vec_type(arr)
    if vt is None or not isinstance(x, (types.Float, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(vt)
        x_ = context.cast(builder, args[1], sig.args[1], vt.dtype)
        one = builder.insert_element(ir.Constant(vty, ir.Undefined), x_, ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(one, ir.Constant(vty, ir.Undefined),
                                      ir.Constant(ir.VectorType(ir.IntType(32), vt.n), [0] * vt.n))

    return vt(arr, x), codegen


@intrinsic
def vfma(typingctx: Any, a: types.Type, b: types.Type, c: types.Type) -> Typed:
    """a * b + c lane by lane, for three vectors of one type (``llvm.fmuladd``): in practice one
    rounding where the target CPU has FMA instructions (LLVM fuses it on x86 and AArch64, though its
    reference does not promise to; tests check x86's vfmadd), else a multiply and an add.
    ``llvm.fma`` would round once on every CPU, but without FMA hardware LLVM lowers it to one libm
    ``fmaf``/``fma`` call per lane. The vector width does not change vfma's results (AVX-512 and
    AVX2+FMA targets give the same bits)."""
    if not (isinstance(a, Vec) and a == b == c):
        return None

    def codegen(context, builder, sig, args):
        vty = args[0].type
        name = f"llvm.fmuladd.v{vty.count}f{sig.args[0].dtype.bitwidth}"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3), name)
        return builder.call(fn, args)

    return a(a, b, c), codegen


def _lanewise(op: str, doc: str) -> Any:
    """An intrinsic applying the LLVM float instruction ``op`` lane by lane to two vectors of one
    type, without fast-math flags: each lane rounds exactly as the scalar operation does."""

    def typer(typingctx: Any, a: types.Type, b: types.Type) -> Typed:
        if not (isinstance(a, Vec) and a == b):
            return None

        def codegen(context, builder, sig, args):
            return getattr(builder, op)(args[0], args[1])

        return a(a, b), codegen

    typer.__name__ = typer.__qualname__ = f"v{op[1:]}"
    typer.__doc__ = doc
    return intrinsic(typer)


vadd = _lanewise("fadd", "a + b lane by lane.")
vsub = _lanewise("fsub", "a - b lane by lane.")
vmul = _lanewise("fmul", "a * b lane by lane.")


@intrinsic
def vfold(typingctx: Any, a: types.Type, b: types.Type, level: types.Type) -> Typed:
    """One level of a horizontal-sum tree: a and b each hold L / (2 h) groups of 2 h lanes (h = L >> level,
    ``level`` a literal 1 .. log2 L), each group the partial sums of one dot product; the result holds
    the L / h groups of h lanes made by adding each group's two halves, a's groups then b's.

    Lane i of the result, in group g = i // h at p = i % h, is c[2 h g + p] + c[2 h g + h + p] for
    c = a | b (the 2 L lanes of a then b). Level 1 on two whole-vector sums gives [a folded | b
    folded]; after log2 L levels over L vectors v_0 .. v_{L-1} (paired in order), lane i is the sum
    of v_i's lanes. Two shuffles and an add per call."""
    if not (isinstance(a, Vec) and a == b and isinstance(level, types.IntegerLiteral)):
        return None
    n, lv = a.n, level.literal_value
    if not (1 <= lv and (n >> lv) >= 1 and n % (1 << lv) == 0):
        raise ValueError(f"vfold level must be 1 .. log2({n}), got {lv}")
    h = n >> lv
    first = [(i // h) * 2 * h + i % h for i in range(n)]
    second = [f + h for f in first]

    def codegen(context, builder, sig, args):
        mask = ir.VectorType(ir.IntType(32), n)
        lo = builder.shuffle_vector(args[0], args[1], ir.Constant(mask, first))
        hi = builder.shuffle_vector(args[0], args[1], ir.Constant(mask, second))
        return builder.fadd(lo, hi)

    return a(a, b, level), codegen


@intrinsic
def vsum(typingctx: Any, a: types.Type) -> Typed:
    """The sum of a vector's lanes as a scalar, in a fixed order: the upper half added to the lower
    half, then again on the half vector, down to one lane (log2 L shuffles and adds)."""
    if not isinstance(a, Vec):
        return None

    def codegen(context, builder, sig, args):
        v, h = args[0], a.n // 2
        while h >= 1:
            mask = ir.VectorType(ir.IntType(32), h)
            lo = builder.shuffle_vector(v, v, ir.Constant(mask, list(range(h))))
            hi = builder.shuffle_vector(v, v, ir.Constant(mask, list(range(h, 2 * h))))
            v, h = builder.fadd(lo, hi), h // 2
        return builder.extract_element(v, ir.Constant(ir.IntType(32), 0))

    return a.dtype(a), codegen

