"""The wheel ships kernels/ as minippo.kernels (with gae.cu) and never as a bare top-level
``kernels`` package, and depends on numpy alone."""

import glob
import os
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_wheel_layout_and_requirements(tmp_path):
    r = subprocess.run(  # build isolation fetches setuptools from the package index, as a user's pip does
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), ROOT],
        capture_output=True, text=True, timeout=300,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {r.stderr[-300:]}")
    (wheel,) = glob.glob(str(tmp_path / "*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith("METADATA"))).decode()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"minippo"}
    assert "minippo/kernels/gae.cu" in names and "minippo/kernels/cpu.py" in names
    requires = [line for line in meta.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert len(requires) == 1 and requires[0].split()[1].startswith("numpy")
