#!/usr/bin/env bash
# The checks that need a CUDA device, as one prepared command for a machine that has one (the
# development and CI machines have none). From the repository root:
#
#     bash benchmarks/gpu_check.sh OUTDIR [STEP ...]
#
# STEP is one of: device, tests, bench, profile, learning (default: all five, in that order).
#   device    what is there: the GPU, Python, numpy and cupy versions, nvcc
#   tests     the cupy tests: the real-device ones (marked gpu) beside the stand-in and CUDA-source
#             ones, and nvcc -ptx of kernels/gae.cu, adam.cu and act.cu where nvcc is on the PATH
#   bench     benchmarks/kernels.py on numpy and cupy (GAE against the host and device floors,
#             the MLP, act and Adam rows numpy/cupy), then benchmarks/gpu_gae_chunk.py (the GAE kernel's chunk)
#   profile   benchmarks/cupy_profile.py: where the time goes in act and in a short CartPole run
#   learning  the CartPole and Pendulum presets trained with MINIPPO_BACKEND=cupy (marked gpu
#             and slow), one log and time limit each, every seed's return printed as it ends
# It needs python3 with numpy, cupy, pytest and gymnasium; minippo runs from this checkout. Where
# there is no network, wheels put in .whl/ beforehand (gymnasium and its needs: docs/kernels.md,
# "On a GPU") are installed into a temporary folder first (pip's output in OUTDIR/setup.log). Each
# step runs under its own time limit (then SIGINT, so pytest still writes where it stopped), and the
# steps go on after a failure; each step's whole output is in OUTDIR/STEP.log (pytest verbose: one
# line per test as it ends), its last lines on the terminal. Exit status: 0 when every step passed,
# 1 when one or more failed (the last line counts them), 2 for a usage error.
set -u
usage="usage: bash benchmarks/gpu_check.sh OUTDIR [STEP ...] (STEP: device, tests, bench, profile, learning)"
if [ $# -lt 1 ] || [ -z "$1" ]; then
    echo "$usage" >&2
    exit 2
fi
out=$1
shift
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(device tests bench profile learning)
for s in "${steps[@]}"; do
    case $s in
        device | tests | bench | profile | learning) ;;
        *) echo "$usage; got $s" >&2; exit 2 ;;
    esac
done
mkdir -p "$out" && out=$(cd "$out" && pwd) || exit 2  # OUTDIR as given from where it was called
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# pytest plugins are not needed, and one that fails to load on that machine would stop every step
export PYTEST_DISABLE_PLUGIN_AUTOLOAD=1
if compgen -G ".whl/*.whl" > /dev/null; then
    site=$(mktemp -d)
    if python3 -m pip install --no-index --no-deps --no-compile --target "$site" .whl/*.whl \
        > "$out/setup.log" 2>&1; then
        export PYTHONPATH="$PYTHONPATH:$site"
    else
        echo "could not install the wheels in .whl/ (the steps go on without them): $out/setup.log"
    fi
fi

failed=0
run_step() {  # run_step NAME SECONDS 'SHELL COMMAND'
    local name=$1 limit=$2 t0=$SECONDS rc
    echo "== $name (limit ${limit} s)"
    timeout -s INT -k 15 "$limit" bash -c "$3" > "$out/$name.log" 2>&1
    rc=$?
    tail -n 30 "$out/$name.log"
    echo "== $name: exit $rc after $((SECONDS - t0)) s"
    [ "$rc" -eq 0 ] || failed=$((failed + 1))
}

# Without a device the gpu tests skip, and without gymnasium half of them and the learning tests do:
# that is a failed step here, not a pass.
needs_device='python3 -c "import cupy; assert cupy.cuda.runtime.getDeviceCount() > 0, \"no CUDA device\""'
needs_gym="python3 -c 'import gymnasium'"
# -v: a step cut off by its limit still shows which tests ended
pytest="python3 -m pytest -v -p no:cacheprovider -rs --durations=10"
for s in "${steps[@]}"; do
    case $s in
        device)
            run_step device 60 'nvidia-smi -L; python3 -c "import sys, numpy, cupy
print(sys.version.split()[0], \"numpy\", numpy.__version__, \"cupy\", cupy.__version__,
      \"devices\", cupy.cuda.runtime.getDeviceCount())"; status=$?
python3 -c "import gymnasium; print(\"gymnasium\", gymnasium.__version__)" || status=1
if command -v nvcc > /dev/null; then nvcc --version | tail -n 1; else echo "no nvcc on the PATH"; fi
exit $status' ;;
        tests)
            # (a test stuck for 90 s dumps its stack into the log: none takes 10 s on the stand-in)
            run_step tests 150 "$needs_device && $needs_gym && $pytest -o faulthandler_timeout=90 -m 'not slow' tests/test_kernels_gpu.py tests/test_kernels_gpu_adam.py tests/test_kernels_gpu_act.py tests/test_cupy_standin.py" ;;
        bench)
            run_step bench 180 "$needs_device && python3 benchmarks/kernels.py numpy cupy && python3 benchmarks/gpu_gae_chunk.py" ;;
        profile)
            run_step profile 120 "$needs_device && $needs_gym && MINIPPO_BACKEND=cupy python3 benchmarks/cupy_profile.py" ;;
        learning)  # each env its own limit, so that a slow CartPole cannot take Pendulum's time
            # (session 46, an H200: CartPole's 3 seeds took 206 s, Pendulum's 2 seeds 298 s)
            run_step learning-CartPole 300 "$needs_device && $needs_gym && $pytest -s -m 'gpu and slow' -k CartPole tests/test_learning.py"
            run_step learning-Pendulum 480 "$needs_device && $needs_gym && $pytest -s -m 'gpu and slow' -k Pendulum tests/test_learning.py" ;;
    esac
done
echo "== ${failed} step(s) failed; logs in $out"
[ "$failed" -eq 0 ]
