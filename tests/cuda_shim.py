"""Running the CUDA sources on the CPU: just enough of CUDA's names to compile a ``__global__``
kernel as a host function (the shim), a build of a ``.cu`` file into a library, and a launch that
loops over the grid, checking each argument against the kernel's declared parameter types as CUDA's
ABI would need them. Used by tests/test_kernels_gpu.py (gae.cu) and tests/test_kernels_gpu_adam.py.

The library is built with -ffp-contract=off, as gpu.py compiles with --fmad=false: no a * b + c is
contracted into an FMA, so the shim performs each operation as the device does, rounding included.
"""

import ctypes
import functools
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import strict_cupy
from minippo.kernels import gpu

KERNELS = Path(gpu.__file__).parent
CU = KERNELS / gpu.SOURCE
CXX = shutil.which("g++") or shutil.which("c++")
NVCC = shutil.which("nvcc")

SHIM_H = """\
// Just enough of CUDA's names to compile a __global__ kernel as a host function; the caller
// sets the indices (per OS thread: thread_local) and calls the kernel once per (block, thread) of
// the grid. __syncthreads() is a barrier across the block's threads, for which the launcher runs a
// block's threads at once, each in its own OS thread; __shared__ memory is one buffer, as blocks
// run one after another.
#pragma once
#include <math.h>
struct dim3 { unsigned int x, y, z; };
extern thread_local dim3 blockIdx, threadIdx;
extern dim3 blockDim, gridDim;
#define __global__
#define __device__
#define __shared__
void __syncthreads();
"""

SHIM_CPP = """\
#include <chrono>
#include <condition_variable>
#include <mutex>
#include "cuda_host_shim.h"
thread_local dim3 blockIdx, threadIdx;
dim3 blockDim, gridDim;
#include "{source}"
// Dynamic shared memory (extern __shared__ double minippo_smem[] in a kernel): one buffer for the
// block that runs; the launcher fills it with NaN bytes before each block, so a read before a write shows.
double minippo_smem[SHIM_SMEM_BYTES / sizeof(double)];
static std::mutex barrier_mutex;
static std::condition_variable barrier_cv;
static unsigned barrier_arrived = 0, barrier_generation = 0, threads_done = 0;
static int barrier_misses = 0;
void __syncthreads() {{
    std::unique_lock<std::mutex> lock(barrier_mutex);
    const unsigned generation = barrier_generation;
    if (++barrier_arrived == blockDim.x) {{
        barrier_arrived = 0;
        ++barrier_generation;
        barrier_cv.notify_all();
        return;
    }}
    // Wait for the block's other threads; if every one of them has either arrived or returned, the
    // barrier can never open (a thread left without reaching it): count the miss and go on.
    const bool opened = barrier_cv.wait_for(lock, std::chrono::seconds(60), [&] {{
        return generation != barrier_generation || barrier_arrived + threads_done == blockDim.x;
    }});
    if (generation == barrier_generation) {{
        ++barrier_misses;
        (void)opened;
    }}
}}
extern "C" void shim_thread_done() {{
    std::lock_guard<std::mutex> lock(barrier_mutex);
    ++threads_done;
    barrier_cv.notify_all();
}}
extern "C" void shim_set_dims(unsigned grid, unsigned block) {{
    gridDim = {{grid, 1, 1}}; blockDim = {{block, 1, 1}};
    barrier_arrived = 0;
    threads_done = 0;
}}
extern "C" void shim_set_index(unsigned grid, unsigned block, unsigned bx, unsigned tx) {{
    gridDim = {{grid, 1, 1}}; blockDim = {{block, 1, 1}};
    blockIdx = {{bx, 0, 0}}; threadIdx = {{tx, 0, 0}};
}}
extern "C" void shim_set_thread(unsigned bx, unsigned tx) {{
    blockIdx = {{bx, 0, 0}}; threadIdx = {{tx, 0, 0}};
}}
extern "C" int shim_barrier_misses() {{ return barrier_misses; }}
extern "C" unsigned char* shim_smem() {{ return reinterpret_cast<unsigned char*>(minippo_smem); }}
"""
SMEM_BYTES = 1 << 16
"""The shim's shared memory: more than the 48 KiB a CUDA block gets without opting in."""

CTYPES = {"float": ctypes.c_float, "double": ctypes.c_double, "int": ctypes.c_int, "long long": ctypes.c_longlong}
NUMPY_SCALARS = {"float": np.float32, "double": np.float64, "int": np.int32, "long long": np.int64}


def kernel_params(name: str) -> list[tuple[str, bool]]:
    """[(base type, is_pointer), ...] of ``extern "C" __global__ void name(...)`` in the CUDA sources."""
    for file in gpu.SOURCES:
        m = re.search(rf"__global__\s+void\s+{name}\s*\(([^)]*)\)", (KERNELS / file).read_text(encoding="utf-8"))
        if m:
            break
    assert m, f"{name} not found in {gpu.SOURCES}"
    params = []
    for p in m.group(1).split(","):
        words = p.replace("*", " * ").split()
        base = " ".join(w for w in words[:-1] if w in ("float", "double", "int", "long"))
        assert base in CTYPES, p
        params.append((base, "*" in words))
    return params


def build_shim(d: Path, defines: tuple[str, ...] = (), source: str = gpu.SOURCE) -> ctypes.CDLL:
    """kernels/``source`` compiled as a host library in folder ``d`` (``defines``: extra -D flags)."""
    if CXX is None:
        pytest.skip("no C++ compiler on PATH")
    (d / "cuda_host_shim.h").write_text(SHIM_H)
    (d / "shim.cpp").write_text(SHIM_CPP.format(source=source))
    lib = d / f"lib{Path(source).stem}_shim.so"
    cmd = [CXX, "-O1", "-ffp-contract=off", "-shared", "-fPIC", "-std=c++14", "-pthread",
           f"-DSHIM_SMEM_BYTES={SMEM_BYTES}", *defines, f"-I{d}",
           f"-I{KERNELS}", str(d / "shim.cpp"), "-o", str(lib)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return ctypes.CDLL(str(lib))


def launch(lib, name, grid, block, args, shared_mem=0):
    """Run kernel ``name`` over the grid, checking args like CUDA's ABI would need them.

    A kernel whose source calls ``__syncthreads()`` runs a block's threads at once, one OS thread
    each (ctypes lets go of the GIL in the call), so the barrier holds them as a GPU would; blocks
    run one after another. ``shared_mem``: the dynamic shared memory bytes the launch asks for
    (filled with NaN bytes before each block)."""
    params = kernel_params(name)
    assert len(args) == len(params), f"{name} takes {len(params)} args, got {len(args)}"
    c_args = []
    for a, (base, pointer) in zip(args, params, strict=True):
        if pointer:
            assert isinstance(a, np.ndarray) and a.flags.c_contiguous
            assert a.dtype == NUMPY_SCALARS[base], f"{name}: {a.dtype} array for {base}*"
            c_args.append(a.ctypes.data_as(ctypes.c_void_p))
        else:  # a Python float would reach a float kernel as 8 bytes: demand the exact type
            assert type(a) is NUMPY_SCALARS[base], f"{name}: {type(a).__name__} for {base}"
            c_args.append(CTYPES[base](a))
    fn = getattr(lib, name)
    fn.restype = None
    (gx,), (bx,) = tuple(grid), tuple(block)
    assert gx >= 1 and bx >= 1, f"CUDA refuses a launch of {gx} blocks of {bx} threads"
    assert 0 <= shared_mem <= SMEM_BYTES, shared_mem
    if not uses_barrier(name):
        for b in range(gx):
            for t in range(bx):
                lib.shim_set_index(gx, bx, b, t)
                fn(*c_args)
        return
    lib.shim_smem.restype = ctypes.POINTER(ctypes.c_ubyte * SMEM_BYTES)
    smem = np.frombuffer(lib.shim_smem().contents, dtype=np.uint8)
    before = lib.shim_barrier_misses()

    def thread(b, t):
        lib.shim_set_thread(b, t)
        fn(*c_args)
        lib.shim_thread_done()

    for b in range(gx):
        lib.shim_set_dims(gx, bx)  # (a new block: no thread has arrived or returned yet)
        smem[:shared_mem] = 0xFF  # NaN in float32 and float64
        threads = [threading.Thread(target=thread, args=(b, t)) for t in range(bx)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert lib.shim_barrier_misses() == before, f"{name}: a thread never reached a __syncthreads()"


@functools.cache
def uses_barrier(name: str) -> bool:
    """Whether the CUDA source that defines kernel ``name`` calls ``__syncthreads()``."""
    for file in gpu.SOURCES:
        text = (KERNELS / file).read_text(encoding="utf-8")
        if re.search(rf"__global__\s+void\s+{name}\s*\(", text):
            return "__syncthreads()" in text
    raise AssertionError(f"{name} not found in {gpu.SOURCES}")


def nvcc_archs() -> list[str]:
    """The oldest of sm_75, sm_80, sm_90 this nvcc targets, else its first."""
    out = subprocess.run([NVCC, "--list-gpu-arch"], capture_output=True, text=True, timeout=60)
    archs = [a.replace("compute_", "sm_") for a in out.stdout.split()]
    return [a for a in ("sm_75", "sm_80", "sm_90") if a in archs] or archs[:1]


def nvcc_ptx(source: Path, arch: str, folder: Path) -> str:
    """The PTX nvcc makes of ``source`` for ``arch`` with --fmad=false (as gpu.py compiles)."""
    ptx = folder / f"{source.stem}_{arch}.ptx"
    subprocess.run([NVCC, "-ptx", f"-arch={arch}", "--fmad=false", str(source), "-o", str(ptx)],
                   check=True, capture_output=True, timeout=120)
    return ptx.read_text()


def _nvrtc():
    """CuPy's binding of NVRTC where CuPy and the NVRTC library are installed (no device needed)."""
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
        return nvrtc
    except Exception:
        return None


NVRTC = _nvrtc()


def nvrtc_ptx(src: str, arch: str) -> str:
    """The PTX NVRTC (what ``cupy.RawModule`` compiles with) makes of ``src`` with gpu.NVRTC_OPTIONS."""
    prog = NVRTC.createProgram(src, "kern.cu", (), ())
    try:
        NVRTC.compileProgram(prog, [*gpu.NVRTC_OPTIONS, f"--gpu-architecture={arch}"])
        ptx = NVRTC.getPTX(prog)
    finally:
        NVRTC.destroyProgram(prog)
    return ptx.decode() if isinstance(ptx, bytes) else ptx


def shim_cupy(lib, source: str):
    """The strict stand-in (tests/strict_cupy.py: device arrays kept apart from host ones, copies and
    operations counted) whose RawModule runs kernels/``source`` through the host shim ``lib``: the
    addresses in the kernels' tables are host addresses, so the kernels read and write the stand-in's
    arrays. ``cp.compiled`` lists the sources compiled, ``cp.launches`` each launch as
    (name, grid, block, shared_mem)."""
    cp = strict_cupy.make()

    class RawModule:
        def __init__(self, code, options=()):
            assert code == gpu.source(source) and tuple(options) == gpu.NVRTC_OPTIONS
            cp.compiled.append(source)

        def get_function(self, name):
            kernel_params(name)  # fails for a name not in the sources

            def run(grid, block, args, shared_mem=0):
                cp.STATS["ops"] += 1
                cp.launches.append((name, grid, block, shared_mem))
                launch(lib, name, grid, block, tuple(a._a if isinstance(a, cp.ndarray) else a for a in args),
                       shared_mem=shared_mem)
            return run

    cp.RawModule = RawModule
    cp.compiled, cp.launches = [], []
    return cp


def install_shim_cupy(lib, source: str, monkeypatch):
    """:func:`shim_cupy` as ``cupy`` for one test, with a fresh compile cache in ``kernels/gpu.py``."""
    cp = shim_cupy(lib, source)
    monkeypatch.setitem(sys.modules, "cupy", cp)
    monkeypatch.setattr(gpu, "_modules", {})
    return cp
