"""`import minippo` needs numpy only: it must not import gymnasium, numba, cupy or matplotlib,
and it must stay quick. Run in a fresh interpreter so other tests' imports do not leak in."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HEAVY = ("gymnasium", "gym", "numba", "cupy", "matplotlib", "torch")


def _run(code):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_minippo_is_light():
    code = (
        "import sys, time, json\n"
        "t = time.perf_counter()\n"
        "import minippo\n"
        "dt = time.perf_counter() - t\n"
        f"print(json.dumps({{'heavy': [m for m in {HEAVY!r} if m in sys.modules], 'dt': dt,"
        " 'version': minippo.__version__}))\n"
    )
    res = _run(code)
    assert res["heavy"] == []
    assert isinstance(res["version"], str) and res["version"]
    # "keep time sane": numpy alone takes ~0.1 s; 5 s only fails if something heavy sneaks in
    assert res["dt"] < 5.0


def test_numerical_core_imports_no_heavy_module():
    """Everything a student or an edge box uses (network, heads, losses, the PPO loss and its
    gradients, the config, the backend switch) loads with numpy alone; the backend is only
    resolved on first use, so MINIPPO_BACKEND=numba must not import numba at import time."""
    code = (
        "import os, sys, json\n"
        "os.environ['MINIPPO_BACKEND'] = 'numba'\n"
        "import minippo.nn, minippo.distributions, minippo.losses, minippo.policy\n"
        "import minippo.optim, minippo.gradcheck, minippo.config, minippo.spaces\n"
        "import minippo.backend, minippo.ppo\n"
        "from minippo import PPOConfig\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    assert _run(code) == []
