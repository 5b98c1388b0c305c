"""Whole PPO updates against an independent implementation on PyTorch's autograd
(tools/torch_crosscheck.py; docs/derivations.md sections 12-13). minippo does not depend on torch and
CI does not install it (its PyPI wheels bring CUDA, several GB): these tests run where torch is
installed and skip elsewhere."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("gymnasium")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "torch_crosscheck.py")


@pytest.fixture(scope="module")
def crosscheck(tool):
    mod = tool("torch_crosscheck.py")
    mod.torch.set_default_dtype(mod.torch.float64)
    return mod


def test_every_case_agrees_with_torch(crosscheck):
    """The script as a user runs it, on this process's backend: every case within its tolerance."""
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, TOOL], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == len(crosscheck.cases()) and all(line.startswith("ok ") for line in lines), r.stdout


def test_a_difference_in_one_coefficient_is_reported(crosscheck):
    """The comparison can fail: the torch side given twice the entropy coefficient differs far
    beyond the tolerance, in the parameters and in the logged statistics."""
    cfg, progress = crosscheck.cases()["CartPole clip"]
    same = crosscheck.check(cfg, progress)
    assert same.worst() < crosscheck.TOLERANCE  # (parameters, rollout and statistics)
    update = crosscheck.torch_update
    try:
        crosscheck.torch_update = lambda agent, batch, epochs, c, *a: update(
            agent, batch, epochs, c.replace(ent_coef=2 * c.ent_coef), *a)
        other = crosscheck.check(cfg, progress)
    finally:
        crosscheck.torch_update = update
    assert other.params > 1e-6 and other.worst_stat() > 1e-6
