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
    rows = [line for line in lines if " error " in line and "|grad|" in line]
    names = {row.split()[0] for row in rows}  # every parameter array of both networks, each checked
    assert names == {f"{net}.{p}{i}" for net in ("actor", "critic") for p in "Wb" for i in range(3)}
    errors = [float(row.split()[-1]) for row in rows]
    # rows print 2 digits (.1e), the last line 3 (.2e): the two roundings of one number differ by at most
    # 0.05 in a mantissa >= 1.0 (at x.x5), 4.8% of the 3-digit one, within 5%
    assert max(errors) == pytest.approx(err, rel=0.05) and len(set(errors)) > 1  # each its own
    floor = float(lines[1].split("||numeric||, ")[1].split(")")[0])  # the floor the header names
    for row in rows:  # arrays under it are marked: their error is absolute, against the floor
        assert ("*" in row) == (float(row.split("|grad| = ")[1].split()[0].rstrip("*")) < floor), row


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
    rows = capsys.readouterr().out.strip().splitlines()[1:]
    scores = dict(line.split()[:2] for line in rows)
    assert list(scores) == names and all(np.isfinite(float(v)) for v in scores.values())
    for row in rows:  # the mean and each seed's score (they vary by 100+ between seeds)
        each = [float(x) for x in row.split("per seed ")[1].split("(")[0].split()]
        assert len(each) == 2 and float(row.split()[1]) == pytest.approx(np.mean(each), abs=0.06), row


def test_ladder_prints_the_steps_each_rung_trained(monkeypatch, capsys):
    """Each rung trains whole rollouts (REINFORCE 2048 steps, the others 256): the header calls
    --timesteps a budget and each rung's line says the steps it trained, where it said "1 steps"."""
    pytest.importorskip("gymnasium")
    from minippo import PPO

    ladder = _example("ladder")
    trained = {}

    class Spy(PPO):
        def learn(self, *a, **kw):
            out = super().learn(*a, **kw)
            trained[self.config.objective] = self.num_timesteps
            return out

    monkeypatch.setattr(ladder, "PPO", Spy)
    monkeypatch.setattr(sys, "argv", ["ladder.py", "--timesteps", "1"])
    ladder.main()
    header, *rows = capsys.readouterr().out.strip().splitlines()
    assert header.startswith("CartPole-v1, a budget of 1 env steps per run (rounded up to whole rollouts)"), header
    assert trained == {"reinforce": 2048, "a2c": 256, "surrogate": 256, "kl_penalty": 256, "clip": 256}
    assert [row.split()[0] for row in rows] == list(trained)
    assert all(row.endswith(f"({trained[row.split()[0]]} env steps)") for row in rows), rows


TOO_MANY = str(2**62 + 1)


@pytest.mark.parametrize("name", ["ladder", "train_cartpole", "own_env"])
def test_examples_take_timesteps_up_to_minippos_limit(name):
    """--timesteps goes up to minippo's own limit (PPOConfig refuses more), 2**62 as the message says."""
    import argparse

    from minippo.config import MAX_TIMESTEPS

    example = _example(name)
    parse = example.timesteps_arg  # (minippo.cli's, shared by the three)
    assert MAX_TIMESTEPS == 2**62 and parse(str(2**62)) == 2**62 and parse("1") == 1
    assert parse("5e4") == 50_000 and type(parse("5e4")) is int  # as PPOConfig(total_timesteps=5e4)
    for bad in ("1.5", "inf", "nan", "two"):
        with pytest.raises(argparse.ArgumentTypeError, match=rf"must be an integer >= 1 \(1e6 too\), got '{bad}'"):
            parse(bad)
    with pytest.raises(argparse.ArgumentTypeError, match=r"must be an integer >= 1 \(1e6 too\), got 0"):
        parse("0e0")
    with pytest.raises(argparse.ArgumentTypeError, match=r"must be <= 2\*\*62"):
        parse(TOO_MANY)


@pytest.mark.parametrize(("script", "argv", "message"), [
    ("ladder.py", ["--timesteps", TOO_MANY], f"argument --timesteps: must be <= 2**62 (minippo counts steps in "
                                             f"int64), got {TOO_MANY}"),
    ("train_cartpole.py", ["--timesteps", "99999999999999999999"], "argument --timesteps: must be <= 2**62"),
    ("own_env.py", ["--timesteps", TOO_MANY], "argument --timesteps: must be <= 2**62"),
    ("ladder.py", ["--seeds", "0"], "argument --seeds: must be an integer >= 1, got 0"),
    ("ladder.py", ["--timesteps", "-5"], "argument --timesteps: must be an integer >= 1 (1e6 too), got -5"),
    ("train_cartpole.py", ["--timesteps", "0"], "argument --timesteps: must be an integer >= 1 (1e6 too), got 0"),
    ("own_env.py", ["--timesteps", "0"], "argument --timesteps: must be an integer >= 1 (1e6 too), got 0"),
    ("train_cartpole.py", ["--out", "."], "--out '.': cannot save the model there: path '.' is a folder: give a"),
    ("own_env.py", ["--out", "."], "--out '.': cannot save the model there: path '.' is a folder: give a file"),
    ("inspect_gradients.py", ["--bogus"], "unrecognized arguments: --bogus"),
    ("train_cartpole.py", ["--seed", "-1"], "argument --seed: must be an integer >= 0, got -1"),
    # not an integer at all: the allowed values too (argparse said "invalid positive value: 'two'")
    ("ladder.py", ["--seeds", "two"], "argument --seeds: must be an integer >= 1, got 'two'"),
    ("train_cartpole.py", ["--seed", "abc"], "argument --seed: must be an integer >= 0, got 'abc'"),
    ("own_env.py", ["--timesteps", "1.5e0"], "argument --timesteps: must be an integer >= 1 (1e6 too), got '1.5e0'"),
    ("own_env.py", ["--out", "sub/"],
     "--out 'sub/': cannot save the model there: path 'sub/' is a folder: give a file path to write"),
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

def _run_without(module, script, *argv, cwd=None):
    """examples/SCRIPT run with ``import MODULE`` failing (None in sys.modules), as where it is not installed."""
    code = ("import runpy, sys\n"
            "sys.modules[sys.argv[1]] = None\n"
            "sys.argv = sys.argv[2:]\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", code, module, os.path.join(ROOT, "examples", script), *argv],
                          capture_output=True, text=True, cwd=cwd, timeout=120, env=env)


@pytest.mark.parametrize("script", ["ladder.py", "train_cartpole.py"])
def test_examples_on_gymnasium_say_it_is_missing_in_one_line(script, tmp_path):
    """Without gymnasium: argparse's one line with minippo's own message (as ``minippo bench`` says it),
    before anything is printed, where it was a traceback from inside the first PPO()."""
    r = _run_without("gymnasium", script, "--timesteps", "1", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == "", r.stdout
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{script}: error: gymnasium is needed for environments"), r.stderr
    assert "pip install 'minippo[gym]'" in last and "Traceback" not in r.stderr, r.stderr
    assert os.listdir(tmp_path) == []


def _unprivileged(tmp_path):
    """The command prefix that runs a process without root's power to write any file ([] when not
    root), or skip: root ignores mode bits, so a chmod'ed file or folder is no test of it."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return []
    import shutil

    probe = tmp_path / "probe"
    probe.mkdir(mode=0o555)
    prefix = ["setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all"]
    r = subprocess.run([*prefix, sys.executable, "-c", f"import os; print(os.access({str(probe)!r}, os.W_OK))"],
                       capture_output=True, text=True, timeout=60) if shutil.which("setpriv") else None
    probe.rmdir()
    if r is None or r.returncode != 0 or r.stdout.strip() != "False":
        pytest.skip("runs as root (which ignores mode bits), and setpriv cannot drop its capabilities here")
    return prefix


@pytest.mark.parametrize("script", ["own_env.py", "train_cartpole.py"])
@pytest.mark.parametrize("case", ["parent is a file", "deeper under a file", "not a regular file",
                                  "write-protected file", "read-only folder", "new folder in a read-only one"])
def test_examples_refuse_an_out_they_cannot_save_to_before_training(script, case, tmp_path):
    """--out that the save at the end would fail on (the model lost, after a traceback) is refused
    first, in one line naming --out, as the ``minippo`` CLI checks its run folder: a missing folder
    that cannot be made, a write-protected file, a folder where the save's temp file cannot be made,
    and a path that is not a regular file (the example reloads the model from it). The first three
    cases hold for root too; the chmod'ed ones run without root's capabilities, or skip."""
    if script == "train_cartpole.py":
        pytest.importorskip("gymnasium")
    (tmp_path / "file.txt").write_text("mine")
    (tmp_path / "ro").mkdir()
    protected = tmp_path / "model.npz"
    protected.write_bytes(b"an older model")
    out, prefix, says = {
        "parent is a file": (tmp_path / "file.txt" / "m.npz", [], "is a file, not a folder"),
        "deeper under a file": (tmp_path / "file.txt" / "sub" / "m.npz", [], "Not a directory"),
        "not a regular file": (os.devnull, [], "is not a regular file"),
        "write-protected file": (protected, None, "is write-protected"),
        "read-only folder": (tmp_path / "ro" / "m.npz", None, "cannot create a file in folder"),
        "new folder in a read-only one": (tmp_path / "ro" / "new" / "m.npz", None, "Permission denied"),
    }[case]
    if prefix is None:
        prefix = _unprivileged(tmp_path)
        protected.chmod(0o444)
        (tmp_path / "ro").chmod(0o555)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    try:
        r = subprocess.run([*prefix, sys.executable, os.path.join(ROOT, "examples", script), "--timesteps", "1",
                            "--out", str(out)], capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env)
    finally:
        (tmp_path / "ro").chmod(0o755)
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{script}: error: --out {str(out)!r}") and says in last, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert protected.read_bytes() == b"an older model" and (tmp_path / "file.txt").read_text() == "mine"
    assert os.listdir(tmp_path / "ro") == []


def test_own_env_example_makes_a_missing_out_folder(tmp_path):
    """The --out check makes a missing folder (as the save would), and the model is saved there."""
    out = tmp_path / "new" / "deeper" / "r.npz"
    _run(os.path.join(ROOT, "examples", "own_env.py"), "--timesteps", "1", "--out", str(out))
    assert out.is_file()


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
