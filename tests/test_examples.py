"""The examples a newcomer copies from must run (tiny budgets)."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, cwd=None):
    # PYTHONPATH: the scripts import this checkout's minippo (python puts examples/ first on sys.path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_inspect_gradients_example():
    out = _run(os.path.join(ROOT, "examples", "inspect_gradients.py"))
    lines = out.strip().splitlines()
    err = float(lines[-1].split(":")[-1])
    assert err < 1e-6
    rows = [line for line in lines if "relative error" in line and "|grad|" in line]
    names = {row.split()[0] for row in rows}  # every parameter array of both networks, each checked
    assert names == {f"{net}.{p}{i}" for net in ("actor", "critic") for p in "Wb" for i in range(3)}
    errors = [float(row.split()[-1]) for row in rows]
    assert max(errors) == pytest.approx(err, rel=0.05) and len(set(errors)) > 1  # each its own


def test_train_cartpole_example(tmp_path):
    pytest.importorskip("gymnasium")
    from minippo import PPO

    out = _run(os.path.join(ROOT, "examples", "train_cartpole.py"), "--timesteps", "512", "--seed", "3",
               "--out", str(tmp_path / "c.npz"))
    assert "evaluation:" in out and "action for a centred pole:" in out
    model = PPO.load(str(tmp_path / "c.npz"))  # trained and saved, with the seed given
    assert model.num_timesteps >= 512 and model.config.seed == 3


def _example(name):
    """examples/NAME.py as a module, not left in sys.modules."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", os.path.join(ROOT, "examples", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ladder_example(monkeypatch, capsys):
    """Every rung trains its own objective for the budget given, and its score is printed."""
    pytest.importorskip("gymnasium")
    from minippo import PPO

    ladder = _example("ladder")
    trained = []

    class Spy(PPO):
        def learn(self, *a, **kw):
            out = super().learn(*a, **kw)
            trained.append((self.config.objective, self.config.seed, self.num_timesteps))
            return out

    monkeypatch.setattr(ladder, "PPO", Spy)
    monkeypatch.setattr(sys, "argv", ["ladder.py", "--timesteps", "512", "--seeds", "2"])
    ladder.main()
    names = ["reinforce", "a2c", "surrogate", "kl_penalty", "clip"]
    assert [(o, s) for o, s, _ in trained] == [(n, s) for n in names for s in (0, 1)]
    assert all(steps >= 512 for _, _, steps in trained), trained
    scores = dict(line.split() for line in capsys.readouterr().out.strip().splitlines()[1:])
    assert list(scores) == names and all(np.isfinite(float(v)) for v in scores.values())


@pytest.mark.parametrize(("script", "argv", "message"), [
    ("ladder.py", ["--seeds", "0"], "argument --seeds: must be an integer >= 1, got 0"),
    ("ladder.py", ["--timesteps", "-5"], "argument --timesteps: must be an integer >= 1, got -5"),
    ("train_cartpole.py", ["--timesteps", "0"], "argument --timesteps: must be an integer >= 1, got 0"),
    ("own_env.py", ["--timesteps", "0"], "argument --timesteps: must be an integer >= 1, got 0"),
    ("train_cartpole.py", ["--out", "."], "--out '.' is a folder: give a file path"),
    ("own_env.py", ["--out", "."], "--out '.' is a folder: give a file path"),
    ("inspect_gradients.py", ["--bogus"], "unrecognized arguments: --bogus"),
    ("train_cartpole.py", ["--seed", "-1"], "argument --seed: must be an integer >= 0, got -1"),
    ("own_env.py", ["--out", "sub/"], "--out 'sub/' is a folder: give a file path"),
])
def test_examples_refuse_bad_arguments_before_training(script, argv, message):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", script), *argv],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == "", r.stdout
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr



@pytest.mark.parametrize("script", ["inspect_gradients.py", "ladder.py", "own_env.py", "train_cartpole.py"])
@pytest.mark.parametrize(("value", "message"), [
    ("bogus", "MINIPPO_BACKEND='bogus' is not a backend; allowed values: numpy, numba, cupy, auto"),
    ("cupy", "pip install 'minippo[cuda]'"),
])
def test_examples_refuse_a_bad_backend_in_one_line(script, value, message):
    """A bad MINIPPO_BACKEND is an argparse error before any work, as the ``minippo`` CLI makes it,
    where it was a traceback from inside the first forward pass."""
    if value == "cupy" and importlib.util.find_spec("cupy") is not None:
        pytest.skip("cupy is installed: MINIPPO_BACKEND=cupy may work here")
    env = {**os.environ, "MINIPPO_BACKEND": value}
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", script)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2 and r.stdout == "", r.stdout
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{script}: error: ") and message in last and "Traceback" not in r.stderr, r.stderr

def test_own_env_example_learns_with_numpy_alone(tmp_path):
    # no gymnasium needed: this runs in the numpy-only install too
    out = _run(os.path.join(ROOT, "examples", "own_env.py"), "--timesteps", "4096", "--out", str(tmp_path / "r.npz"))
    lines = dict(line.split(": ", 1) for line in out.strip().splitlines())
    before, after = float(lines["return before training"]), float(lines["return after training"])
    assert after > before + 3.0, out  # measured: -12.65 -> -6.46 (and -3.7 after 20k steps)
    # Walks toward the target, or stays: 2 with numpy; numba's rounding (its MLP sums in another
    # order) took another trajectory to 1 at this short budget (2 after 20k steps), never to 0.
    assert lines["action at position -0.5, target 0.5 (2 = right)"] in ("1", "2"), out


def test_examples_and_the_cli_run_on_the_cupy_path(tmp_path):
    """With MINIPPO_BACKEND=cupy on a pretend GPU machine (``import cupy`` gives the strict stand-in):
    the four examples, ``minippo train``, a resumed run and ``minippo eval`` finish, and each process
    that trains sends its work to the "device" (the stand-in's upload count)."""
    import re

    import strict_cupy

    pytest.importorskip("gymnasium")
    env = {**strict_cupy.pretend_gpu_machine(tmp_path / "machine"), "MINIPPO_BACKEND": "cupy"}
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], ROOT])  # this checkout's minippo, as _run
    ex = os.path.join(ROOT, "examples")
    runs = [
        [os.path.join(ex, "train_cartpole.py"), "--timesteps", "512", "--out", "c.npz"],
        [os.path.join(ex, "own_env.py"), "--timesteps", "512", "--out", "o.npz"],
        [os.path.join(ex, "ladder.py"), "--timesteps", "512", "--seeds", "1"],
        ["-m", "minippo", "train", "CartPole-v1", "--timesteps", "512", "--out", "run"],
        ["-m", "minippo", "train", "CartPole-v1", "--timesteps", "1024", "--resume", "run/model.npz",
         "--out", "run2", "--quiet"],
        ["-m", "minippo", "eval", "run2/model.npz", "--episodes", "2"],
        [os.path.join(ex, "inspect_gradients.py")],
    ]
    uploads, said = [], []
    for argv in runs:
        r = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=tmp_path, env=env,
                           timeout=300)
        assert r.returncode == 0, (argv, r.stderr)
        stats = re.search(r"strict_cupy stand-in: \{'get': (\d+), 'upload': (\d+)", r.stderr)
        assert stats, (argv, r.stderr)
        uploads.append(int(stats.group(2)))
        said.append(r.stdout + r.stderr)
    assert "on backend cupy" in said[3]
    # the five that train upload every step; eval (load_policy's host network) and the float64
    # gradient check stay on the host: only the backend's one-time probe goes up
    assert all(n > 1 for n in uploads[:5]) and uploads[5:] == [1, 1], uploads
