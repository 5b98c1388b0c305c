"""`minippo train | eval | plot` end to end on tiny budgets, and bad arguments (exit code 2)."""

import csv
import errno
import importlib.util
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("gymnasium")

from minippo.cli import CSV_COLUMNS, main  # noqa: E402

TINY = ["--set", "n_steps=16", "--set", "batch_size=32", "--set", "n_epochs=2", "--set", "hidden=[8]"]


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_train_eval_plot_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "CartPole-v1", "--timesteps", "256", "--seed", "3", "--n-envs", "2",
               "--out", str(out), "--quiet", *TINY])
    assert rc == 0
    text = (out / "config.json").read_text()
    cfg = json.loads(text)
    assert text == json.dumps(cfg, indent=2, sort_keys=True)  # sorted, two-space indents: for reading
    assert cfg["seed"] == 3 and cfg["n_envs"] == 2 and cfg["n_steps"] == 16 and cfg["hidden"] == [8]
    rows = _rows(out / "progress.csv")
    assert len(rows) == 8 and list(rows[0]) == list(CSV_COLUMNS)
    assert rows[-1]["timesteps"] == "256"
    with np.load(out / "model.npz", allow_pickle=False) as z:
        assert "meta" in z.files

    capsys.readouterr()
    assert main(["eval", str(out / "model.npz"), "--episodes", "2", "--deterministic", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res) == {"env_id", "episodes", "mean_return", "std_return", "env_kwargs"}
    assert res["env_id"] == "CartPole-v1" and res["episodes"] == 2 and res["mean_return"] > 0

    # resume continues the counters and appends to progress.csv
    assert main(["train", "CartPole-v1", "--resume", str(out / "model.npz"), "--timesteps", "320",
                 "--out", str(out), "--quiet"]) == 0
    rows = _rows(out / "progress.csv")
    assert [r["timesteps"] for r in rows[-3:]] == ["256", "288", "320"] and rows[-1]["iteration"] == "10"

    pytest.importorskip("matplotlib")
    out2 = tmp_path / "run2"
    assert main(["train", "CartPole-v1", "--timesteps", "128", "--out", str(out2), "--quiet", *TINY]) == 0
    png = tmp_path / "curves.png"
    assert main(["plot", str(out), str(out2), "-o", str(png)]) == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (840, 540)  # IHDR: 7 x 4.5 inches at 120 dpi


def test_same_seed_same_csv(tmp_path):
    """The same --seed gives the same progress.csv (but its time columns); another seed another."""
    cols = [c for c in CSV_COLUMNS if c not in ("time", "fps")]
    runs = []
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        assert main(["train", "CartPole-v1", "--timesteps", "128", "--seed", seed, "--out", str(tmp_path / name),
                     "--quiet", *TINY]) == 0
        runs.append([[r[c] for c in cols] for r in _rows(tmp_path / name / "progress.csv")])
    assert runs[0] == runs[1] and runs[0] != runs[2]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "NoSuchEnv-v0"], "unknown env id 'NoSuchEnv-v0'"),
        (["train", "CartPole-v1", "--preset", "Fast"], "unknown preset 'Fast'"),
        (["train", "CartPole-v1", "--set", "gamm=0.9"], "unknown config key 'gamm'"),
        (["train", "CartPole-v1", "--set", "gamma=1.5"],
         r"PPOConfig.gamma=1.5 is invalid: must be a number in \(0, 1\]"),
        (["train", "CartPole-v1", "--set", "gamma"], "expects key=value"),
        (["train", "CartPole-v1", "--objective", "dqn"], "invalid choice: 'dqn'"),
        (["train", "CartPole-v1", "--resume", "nope.npz"], "no such file 'nope.npz'"),
        (["train", "CartPole-v1", "--resume", os.devnull], "--resume: not a regular file \\(a FIFO or a device\\)"),
        (["eval", "nope.npz"], "does not exist"),
        (["eval", "x.npz", "--episodes", "0"], "--episodes must be >= 1"),
        (["plot", "/nonexistent-dir"], "has no progress.csv"),
        (["fly"], "invalid choice: 'fly'"),
        (["train", "CartPole-v1", "--seed", "-1"], r"PPOConfig.seed=-1 is invalid: must be an integer >= 0"),
        (["train", "CartPole-v1", "--set", "learning_rate=true"], "PPOConfig.learning_rate=True is invalid"),
        (["train", "CartPole-v1", "--set", "gamma=abc"],
         r"PPOConfig.gamma='abc' is invalid: must be a number in \(0, 1\]"),
        (["eval", "x.npz", "--seed", "-1"], "--seed must be >= 0, got -1"),
        # a flag's value refused by the config names the flag too
        (["train", "CartPole-v1", "--timesteps", "0"], r"^minippo: error: --timesteps 0: PPOConfig.total_timesteps=0"),
        (["train", "CartPole-v1", "--n-envs", "0"], r"^minippo: error: --n-envs 0: PPOConfig.n_envs=0 is invalid"),
        (["bench", "--timesteps", "0"], "--timesteps must be >= 1, got 0"),
        (["bench", "--timesteps", str(2**62 + 1)], r"--timesteps must be <= 2\*\*62 \(steps are counted in int64"),
        (["bench", "--repeats", "0"], "--repeats must be >= 1, got 0"),
        # a flag and --set of the same field used to raise TypeError from PPOConfig.replace
        (["train", "CartPole-v1", "--seed", "1", "--set", "seed=2"],
         "--seed and --set seed= both given: set each field once"),
        (["train", "CartPole-v1", "--timesteps", "64", "--set", "total_timesteps=128"],
         "--timesteps and --set total_timesteps= both given"),
        (["train", "CartPole-v1", "--set", "env_kwargs={\"x\": NaN}", "--set", "objective=a2c", "--objective", "clip"],
         "--objective and --set objective= both given"),
    ],
)
def test_bad_arguments_one_line_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("minippo: error: ")
    assert re.search(message, err), err


def test_bad_files_and_flags_one_line_exit_2(tmp_path, capsys, monkeypatch):
    """Errors that need a file or the environment: still one line and exit code 2, no traceback."""
    import gymnasium as gym

    from minippo import backend

    gym.register("minippo-test/Cart-v0", entry_point="gymnasium.envs.classic_control:CartPoleEnv",
                 max_episode_steps=50)
    run = tmp_path / "run"
    assert main(["train", "minippo-test/Cart-v0", "--timesteps", "64", "--n-envs", "2", "--out", str(run), "--quiet",
                 *TINY]) == 0
    model = str(run / "model.npz")
    np.save(tmp_path / "arr.npy", np.zeros(3))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    cases = [
        (["eval", str(tmp_path / "arr.npy")], "holds a single array"),
        (["train", "minippo-test/Cart-v0", "--resume", str(tmp_path / "junk.npz")],
         "not a readable minippo checkpoint"),
        (["train", "minippo-test/Cart-v0", "--resume", model, "--seed", "7", "--set", "gamma=0.9"],
         "--seed, --set cannot be combined with it"),
        (["train", "minippo-test/Cart-v0", "--resume", model, "--timesteps", "0"], "total_timesteps=0 is invalid"),
        # past int64: was accepted, and the checkpoint it saved could be neither evaluated nor resumed
        (["train", "minippo-test/Cart-v0", "--resume", model, "--timesteps", str(2**63)],
         "total_timesteps=9223372036854775808 is invalid: must be <= 2**62"),
        (["train", "CartPole-v1", "--timesteps", str(2**63)], "minippo: error: --timesteps 9223372036854775808: "
         "PPOConfig.total_timesteps=9223372036854775808 is invalid: must be <= 2**62"),
        (["plot", str(run), "-o", str(tmp_path / "nodir" / "c.png")], "does not exist"),
        (["plot", str(run), "-o", str(tmp_path / "c.xyz")], "'xyz' is not an image format"),
    ]
    if shutil.which("xelatex") is None:  # a format matplotlib lists but cannot write without TeX: was a
        cases.append((["plot", str(run), "-o", str(tmp_path / "c.pgf")],  # RuntimeError traceback
                      f"--output {str(tmp_path / 'c.pgf')!r}: matplotlib cannot write pgf here: "))
    plots = importlib.util.find_spec("matplotlib") is not None  # (a skip here skipped every case after it)
    for argv, message in cases:
        if argv[0] == "plot" and not plots:
            continue
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("minippo: error: ") and message in err, (argv, err)
    from envs_for_tests import register_probe

    register_probe("minippo-test/MultiAct-v0", 8, action_space=gym.spaces.MultiDiscrete([2, 3]))
    assert main(["train", "minippo-test/MultiAct-v0", "--n-envs", "2", *TINY]) == 2
    assert "action_space must be a Discrete or Box space" in capsys.readouterr().err
    del gym.registry["minippo-test/Cart-v0"]  # a model of an env this process cannot make
    assert main(["eval", model]) == 2
    assert "trained on 'minippo-test/Cart-v0', which cannot be made here" in capsys.readouterr().err
    monkeypatch.setenv("MINIPPO_BACKEND", "bogus")
    backend.reset()
    try:
        for argv in (["train", "CartPole-v1"], ["eval", model], ["bench", "--timesteps", "64"]):
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "MINIPPO_BACKEND='bogus' is not a backend" in err, err
    finally:
        monkeypatch.undo()
        backend.reset()


def test_resume_of_an_env_whose_space_changed_and_a_signal_during_the_save(tmp_path, capsys, monkeypatch):
    import gymnasium as gym
    from envs_for_tests import register_probe


    run = tmp_path / "run"
    register_probe("minippo-test/Probe-v0", 8, action_space=gym.spaces.Box(-1, 1, (2,), np.float32))
    assert main(["train", "minippo-test/Probe-v0", "--timesteps", "64", "--n-envs", "2", "--out", str(run),
                 "--quiet", *TINY]) == 0
    register_probe("minippo-test/Probe-v0", 8, action_space=gym.spaces.Box(0, 4, (2,), np.int64))
    capsys.readouterr()
    assert main(["train", "minippo-test/Probe-v0", "--resume", str(run / "model.npz"), "--timesteps", "128"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Box action dtype must be a float type" in err
    register_probe("minippo-test/Probe-v0", 8, action_space=gym.spaces.Box(-1, 1, (2,), np.float32))
    before = (run / "model.npz").read_bytes()

    def interrupted_save(algo, path, unlogged_rows=None):
        raise KeyboardInterrupt  # a second Ctrl-C while the model is being written

    monkeypatch.setattr("minippo.checkpoint.save_checkpoint", interrupted_save)
    assert main(["train", "minippo-test/Probe-v0", "--resume", str(run / "model.npz"), "--timesteps", "128",
                 "--out", str(run), "--quiet"]) == 130
    assert "stopped during the save" in capsys.readouterr().err
    assert (run / "model.npz").read_bytes() == before  # the previous model is left as it was
    monkeypatch.undo()

    real_replace = os.replace

    def replace_then_interrupt(src, dst):  # the second Ctrl-C lands just after the rename
        real_replace(src, dst)
        if str(dst).endswith("model.npz"):
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", replace_then_interrupt)
    assert main(["train", "minippo-test/Probe-v0", "--resume", str(run / "model.npz"), "--timesteps", "128",
                 "--out", str(run), "--quiet"]) == 130
    monkeypatch.undo()
    err = capsys.readouterr().err  # was "model not saved", while the new model was in place
    assert f"stopped as the save ended at 128 steps; model saved to {run / 'model.npz'}" in err, err
    from minippo import PPO

    assert PPO.load(str(run / "model.npz")).num_timesteps == 128


def test_console_entry_point_and_module(tmp_path):
    env = {**os.environ, "MINIPPO_BACKEND": "numpy"}
    r = subprocess.run([sys.executable, "-m", "minippo", "train", "NoSuchEnv-v0"], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 2 and "unknown env id" in r.stderr
    r = subprocess.run([sys.executable, "-m", "minippo", "train", "CartPole-v1", "--timesteps", "64",
                        "--out", str(tmp_path / "r"), *TINY], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "backend numpy" in r.stderr  # the backend in use is printed
    assert "iter     1" in r.stderr  # not a terminal: one plain line per iteration


def _train_until_rows(out, n_rows, extra=(), **popen):
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "minippo", "train", "CartPole-v1", "--timesteps", "10000000", "--out", str(out),
         *extra], stderr=subprocess.PIPE, text=True, **popen,
    )
    deadline = time.time() + 60
    while not (out / "progress.csv").exists() or len(_rows(out / "progress.csv")) < n_rows:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    return proc


def _signal_after_iteration_1(monkeypatch, sig) -> None:
    """Make PPO.learn send `sig` to this process once iteration 1 has ended: the signal lands mid-run,
    and the run should stop at that iteration's boundary, saved."""
    from minippo.ppo import PPO

    learn = PPO.learn

    def learn_then_signal(self, *a, **k):
        def cb(row):
            if row["iteration"] == 1:
                os.kill(os.getpid(), sig)
            return k["callback"](row)
        return learn(self, callback=cb)

    monkeypatch.setattr(PPO, "learn", learn_then_signal)


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGUSR1"), reason="SIGUSR1 stands in for SIGBREAK")
def test_train_stops_cleanly_on_windows_ctrl_break_too(tmp_path, monkeypatch):
    """Windows delivers no SIGTERM, and its Ctrl-Break (SIGBREAK) killed a run without saving: train
    takes every stop signal the platform has (SIGBREAK stood in by SIGUSR1 here) while it trains."""
    import signal

    from minippo import cli

    windows = [signal.SIGBREAK] if hasattr(signal, "SIGBREAK") else []
    assert set(cli.STOP_SIGNALS) == {signal.SIGINT, signal.SIGTERM, *windows}
    monkeypatch.setattr(cli, "STOP_SIGNALS", (*cli.STOP_SIGNALS, signal.SIGUSR1))
    _signal_after_iteration_1(monkeypatch, signal.SIGUSR1)
    out = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--timesteps", "320", "--out", str(out), "--quiet", *TINY]) == 130
    assert (out / "model.npz").exists() and len(_rows(out / "progress.csv")) == 1  # stopped after iteration 1
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # put back


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_ctrl_c_saves_the_model_at_an_iteration_boundary(tmp_path, sig):
    """The signal lets the iteration in progress finish: the saved counters are those of a whole
    number of iterations (a run resumed from it follows the uninterrupted run's schedules)."""
    import signal

    from minippo import load_policy
    from minippo.checkpoint import read_checkpoint

    out = tmp_path / "run"
    proc = _train_until_rows(out, 2)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "stopping after this iteration" in err and "interrupted" in err and "model saved" in err
    assert load_policy(str(out / "model.npz")).env_id == "CartPole-v1"
    meta, _ = read_checkpoint(str(out / "model.npz"))
    per_iteration = meta["config"]["n_envs"] * meta["config"]["n_steps"]
    assert meta["num_timesteps"] == meta["iteration"] * per_iteration
    assert meta["adam_t"] == meta["iteration"] * meta["config"]["n_epochs"] * per_iteration // meta["config"][
        "batch_size"]
    rows = _rows(out / "progress.csv")
    assert int(rows[-1]["timesteps"]) == meta["num_timesteps"]  # the last logged iteration is the saved one


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_stop_signal_to_the_process_group_saves_an_async_run(tmp_path, sig):
    """As a terminal sends Ctrl-C, and ``timeout`` its SIGTERM: to every process of the group. The env
    workers are in groups of their own, so it reaches the main process alone (a SIGTERM ended them
    before, and the run stopped without saving)."""
    import signal

    out = tmp_path / "run"
    proc = _train_until_rows(out, 2, ["--set", "vector=async", "--set", "autoreset=same_step"], start_new_session=True)
    os.killpg(proc.pid, getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "model saved" in err and "Traceback" not in err and "Received the following error" not in err, err
    assert (out / "model.npz").exists()


def test_second_ctrl_c_stops_at_once_without_saving(tmp_path):
    import signal

    out = tmp_path / "run"
    # a long iteration (4 envs x 16384 steps) so that both signals land inside it
    import time

    proc = _train_until_rows(out, 0, ["--preset", "none", "--n-envs", "4", "--set", "n_steps=16384"])
    time.sleep(1.0)  # progress.csv exists: the handlers go in just after it, well before this
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "stopped mid-iteration" in err and "model not saved" in err
    assert not (out / "model.npz").exists()


def test_a_second_ctrl_c_swallowed_by_a_ctypes_callback_still_stops_without_a_traceback(tmp_path, monkeypatch,
                                                                                        capsys):
    """A second Ctrl-C landing while LLVM emits a numba kernel is handled inside llvmlite's ctypes
    callback, where Python ignores the KeyboardInterrupt; numba then fails on its own (RuntimeError "no
    compiled object yet"). That printed a traceback, exit code 1, instead of the second Ctrl-C's stop."""
    import signal

    from minippo.ppo import PPO

    def compile_interrupted(self):
        handler = signal.getsignal(signal.SIGINT)
        handler(signal.SIGINT, None)  # the first Ctrl-C: finish the iteration
        try:
            handler(signal.SIGINT, None)  # the second, inside the callback
        except KeyboardInterrupt:
            pass  # ("Exception ignored on calling ctypes callback function")
        raise RuntimeError("no compiled object yet for <Library '_gae_kernel'>")

    monkeypatch.setattr(PPO, "collect_rollout", compile_interrupted)
    out = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--out", str(out), "--quiet", *TINY]) == 130
    err = capsys.readouterr().err
    assert "stopped mid-iteration at 0 steps; model not saved" in err and "Traceback" not in err
    assert not (out / "model.npz").exists()

    def broken(self):  # without a second signal, an error is the error it is
        raise RuntimeError("a bug")

    monkeypatch.setattr(PPO, "collect_rollout", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["train", "CartPole-v1", "--out", str(tmp_path / "run2"), "--quiet", *TINY])


def test_bench_command(capsys):
    assert main(["bench", "--timesteps", "512"]) == 0
    out = capsys.readouterr().out
    assert "training" in out and "env stepping" in out and "ratio training / env stepping" in out


def test_missing_env_dependency_is_one_line(capsys):
    import gymnasium as gym
    from gymnasium.error import DependencyNotInstalled

    def needs_box2d(**kwargs):
        raise DependencyNotInstalled("Box2D is not installed")

    if "minippo-test/NeedsBox2D-v0" not in gym.registry:
        gym.register("minippo-test/NeedsBox2D-v0", entry_point=needs_box2d)
    assert main(["train", "minippo-test/NeedsBox2D-v0", "--timesteps", "64"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs a package that is not installed" in err and "minippo[gym]" in err


def test_an_env_whose_module_is_missing_is_named_with_the_module(capsys, tmp_path):
    """gymnasium's phys2d/ envs import jax, which it does not install: the error was the bare
    "No module named 'jax'", naming neither the env nor what to do."""
    import gymnasium as gym

    def needs_jax(**kwargs):
        raise ModuleNotFoundError("No module named 'jaxish'", name="jaxish")

    if "minippo-test/NeedsJax-v0" not in gym.registry:
        gym.register("minippo-test/NeedsJax-v0", entry_point=needs_jax)
    assert main(["train", "minippo-test/NeedsJax-v0", "--timesteps", "64", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err == ("minippo: error: minippo-test/NeedsJax-v0 needs the module 'jaxish', which is not installed "
                   "(No module named 'jaxish'); install the package that provides it\n"), err


def test_too_old_gymnasium_is_one_line(monkeypatch, capsys, tmp_path):
    """gymnasium 1.0 has no vector AutoresetMode (added in 1.1): named with the upgrade, not an
    ImportError from inside minippo.envs."""
    import gymnasium as gym

    monkeypatch.delattr(gym.vector, "AutoresetMode")
    monkeypatch.setattr(gym, "__version__", "1.0.0")
    assert main(["train", "CartPole-v1", "--timesteps", "64", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gymnasium 1.0.0 is too old" in err and ">= 1.1" in err
    assert "pip install -U 'minippo[gym]'" in err


def test_auto_backend_choice_is_shown(tmp_path):
    env = {**os.environ, "MINIPPO_BACKEND": "auto"}
    r = subprocess.run([sys.executable, "-m", "minippo", "train", "CartPole-v1", "--timesteps", "32",
                        "--out", str(tmp_path / "r"), *TINY], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "MINIPPO_BACKEND=auto picked" in r.stderr and "on backend " in r.stderr


def _iterations(path):
    return [int(r["iteration"]) for r in _rows(path)]


def test_resume_writes_to_the_models_own_run_and_trims_what_a_dead_run_logged(tmp_path, monkeypatch, capsys):
    """Without --out a resume continues the resumed model's folder (never the default run folder of
    its env and seed, which may hold another run), and progress.csv loses the rows logged after the
    checkpoint by a run that died unsaved, so no iteration is logged twice."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "CartPole-v1", "--timesteps", "128", "--n-envs", "2", "--quiet", *TINY]) == 0  # runs/..-s0
    other = (tmp_path / "runs" / "CartPole-v1-s0" / "model.npz").read_bytes()
    assert main(["train", "CartPole-v1", "--timesteps", "128", "--n-envs", "2", "--out", "runB", "--quiet", *TINY]) == 0
    assert _iterations("runB/progress.csv") == [1, 2, 3, 4]
    with open("runB/progress.csv", "a") as f:  # what a killed resume had logged past the checkpoint
        f.write("".join(f"{i},{32 * i}" + "," * (len(CSV_COLUMNS) - 2) + "\n" for i in range(5, 40)))
    assert main(["train", "CartPole-v1", "--resume", "runB/model.npz", "--timesteps", "192", "--quiet"]) == 0
    assert (tmp_path / "runs" / "CartPole-v1-s0" / "model.npz").read_bytes() == other
    assert _iterations("runB/progress.csv") == [1, 2, 3, 4, 5, 6]
    assert [r["timesteps"] for r in _rows("runB/progress.csv")][-2:] == ["160", "192"]
    times = [float(r["time"]) for r in _rows("runB/progress.csv")]  # the resumed rows go on from row 4's
    assert times == sorted(times) and times[4] > times[3] > 0, times
    from minippo.checkpoint import read_checkpoint

    assert read_checkpoint("runB/model.npz")[0]["num_timesteps"] == 192
    assert not [p for p in os.listdir("runB") if p.endswith(".tmp")]
    capsys.readouterr()
    os.replace("runB/model.npz", "saved.npz")
    cases = [
        (["train", "CartPole-v1", "--resume", "saved.npz", "--timesteps", "256"],
         "'saved.npz' is not the model.npz of a minippo run folder (beside the run's config.json): give --out"),
        (["train", "CartPole-v1", "--resume", "saved.npz", "--out", "runB", "--timesteps", "192"],
         "--timesteps 192: the model has already run 192 steps; pass --timesteps above 192"),
        (["train", "CartPole-v1", "--resume", "saved.npz", "--out", "runB"], "--resume: the model has already run"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    config_b = (tmp_path / "runB" / "config.json").read_text()
    (tmp_path / "runB" / "progress.csv").write_text("step,return\n1,2\n")  # not minippo's columns
    os.replace("saved.npz", "runB/model.npz")
    assert main(["train", "CartPole-v1", "--resume", "runB/model.npz", "--timesteps", "256"]) == 2
    err = capsys.readouterr().err
    assert "run folder 'runB': cannot continue the run's progress.csv: " in err and "--out" not in err, err
    assert "does not have minippo's progress.csv columns" in err
    assert (tmp_path / "runB" / "config.json").read_text() == config_b  # refused: nothing written
    # a model.npz saved from Python beside a config.json of the user's is not a run folder: --out needed
    os.mkdir("project")
    os.replace("runB/model.npz", "project/model.npz")
    (tmp_path / "project" / "config.json").write_text('{"my": "settings"}')
    assert main(["train", "CartPole-v1", "--resume", "project/model.npz", "--timesteps", "256"]) == 2
    assert "is not the model.npz of a minippo run folder" in capsys.readouterr().err
    assert sorted(os.listdir("project")) == ["config.json", "model.npz"]
    assert (tmp_path / "project" / "config.json").read_text() == '{"my": "settings"}'
    (tmp_path / "project" / "progress.csv").write_text("")  # empty: started afresh, with the header
    # nor with --out naming it: the user's config.json was replaced by the run's (through a link to a file
    # elsewhere, that file)
    assert main(["train", "CartPole-v1", "--resume", "project/model.npz", "--out", "project", "--timesteps",
                 "256", "--quiet"]) == 2
    assert capsys.readouterr().err == "minippo: error: --out 'project': its config.json is not this run's (a JSON " \
        "object with env_id 'CartPole-v1'): move it away, or resume into another --out\n"
    assert (tmp_path / "project" / "config.json").read_text() == '{"my": "settings"}'
    os.replace("project/config.json", "my_settings.json")
    assert main(["train", "CartPole-v1", "--resume", "project/model.npz", "--out", "project", "--timesteps",
                 "256", "--quiet"]) == 0
    assert _iterations("project/progress.csv") == [7, 8]


def test_resume_refuses_config_flags_given_as_zero_and_writes_nothing_when_refused(tmp_path, monkeypatch, capsys):
    """--seed 0 and --n-envs 0 passed the 'config flags are refused' check (0 == False) and the run
    trained with the saved seed; a progress.csv refused for a bad row had config.json rewritten first."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "CartPole-v1", "--timesteps", "64", "--n-envs", "2", "--seed", "5", "--out", "r",
                 "--quiet", *TINY]) == 0
    before = {n: (tmp_path / "r" / n).read_bytes() for n in os.listdir("r")}
    for flag in (["--seed", "0"], ["--n-envs", "0"], ["--seed", "1"], ["--set", "gamma=0.9"], ["--overwrite"]):
        assert main(["train", "CartPole-v1", "--resume", "r/model.npz", "--timesteps", "128", *flag]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{flag[0]} cannot be combined with it" in err, (flag, err)
    with open("r/progress.csv", "a") as f:
        f.write("x" + "," * (len(CSV_COLUMNS) - 1) + "\n")
    assert main(["train", "CartPole-v1", "--resume", "r/model.npz", "--timesteps", "128"]) == 2
    err = capsys.readouterr().err
    assert err == ("minippo: error: run folder 'r': cannot continue the run's progress.csv: r/progress.csv, line 4: "
                   "iteration ['x'] is not an integer\n"), err
    assert (tmp_path / "r" / "config.json").read_bytes() == before["config.json"]  # nothing written
    assert (tmp_path / "r" / "model.npz").read_bytes() == before["model.npz"]


def test_resume_refused_for_a_bad_unlogged_row_writes_nothing(tmp_path, monkeypatch, capsys):
    """A checkpoint whose unlogged row is not a row: config.json was rewritten and progress.csv trimmed
    before the row was refused (as 'cannot write the run there')."""
    from minippo.checkpoint import save_checkpoint
    from minippo.ppo import PPO

    monkeypatch.chdir(tmp_path)
    assert main(["train", "CartPole-v1", "--timesteps", "64", "--n-envs", "2", "--out", "r", "--quiet", *TINY]) == 0
    save_checkpoint(PPO.load("r/model.npz"), "r/model.npz", unlogged_rows=[["5"]])
    with open("r/progress.csv", "a") as f:  # a row past the checkpoint: trimmed by a resume that runs
        f.write("3" + "," * (len(CSV_COLUMNS) - 1) + "\n")
    before = {n: (tmp_path / "r" / n).read_bytes() for n in os.listdir("r")}
    capsys.readouterr()
    assert main(["train", "CartPole-v1", "--resume", "r/model.npz", "--timesteps", "128"]) == 2
    err = capsys.readouterr().err
    assert err == ("minippo: error: --resume r/model.npz: the checkpoint's unlogged row ['5'] is not a progress.csv "
                   f"row ({len(CSV_COLUMNS)} cells: an iteration no later than the checkpoint's, then numbers or "
                   "empty cells)\n"), err
    assert {n: (tmp_path / "r" / n).read_bytes() for n in os.listdir("r")} == before
    # Rows of the right length were written as they came: words in number columns (`minippo plot` then
    # refused the log), an iteration past the checkpoint's; '²' passed isdigit, then int() failed as
    # "cannot write the run there"
    n = len(CSV_COLUMNS) - 2
    for row in (["1", "x", *["1"] * n], ["99", "64", *["1"] * n], ["²", "64", *["1"] * n], ["1", "6\u0664", *[""] * n],
                ["1", "1_000", *[""] * n], ["1", " 64", *[""] * n]):
        save_checkpoint(PPO.load("r/model.npz"), "r/model.npz", unlogged_rows=[row])
        before = {n: (tmp_path / "r" / n).read_bytes() for n in os.listdir("r")}
        assert main(["train", "CartPole-v1", "--resume", "r/model.npz", "--timesteps", "128"]) == 2
        assert f"the checkpoint's unlogged row {row[:2]} is not a progress.csv row" in capsys.readouterr().err
        assert {n: (tmp_path / "r" / n).read_bytes() for n in os.listdir("r")} == before


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_run_files_that_are_not_regular_files_are_refused_without_waiting(tmp_path, monkeypatch, capsys):
    """A FIFO named progress.csv or config.json made train wait for ever (a new run, --overwrite, a
    resume), and progress.csv linked to /dev/zero was read without end; each is one line, exit 2 now."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "CartPole-v1", "--timesteps", "64", "--n-envs", "2", "--out", "r", "--quiet", *TINY]) == 0
    for name in ("progress.csv", "config.json"):
        for resume in (True, False):
            folder = tmp_path / f"{name}-{resume}"
            shutil.copytree("r", folder) if resume else folder.mkdir()
            (folder / name).unlink(missing_ok=True)
            os.mkfifo(folder / name)
            cmd = ["--resume", str(folder / "model.npz")] if resume else ["--out", str(folder), "--overwrite", *TINY]
            capsys.readouterr()
            assert main(["train", "CartPole-v1", *cmd, "--timesteps", "128", "--quiet"]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and (f"{str(folder / name)!r} is not a regular file (a FIFO, a device or a "
                                             "link to nothing): move it away" in err
                                             or "is not the model.npz of a minippo run folder" in err), err
            assert sorted(os.listdir(folder)) == sorted(os.listdir("r") if resume else [name])  # nothing written
    os.remove("r/progress.csv")
    os.symlink("/dev/zero", "r/progress.csv")
    assert main(["train", "CartPole-v1", "--resume", "r/model.npz", "--timesteps", "128", "--quiet"]) == 2
    assert "'r/progress.csv' is not a regular file" in capsys.readouterr().err
    # the lock file: a FIFO said "File or stream is not seekable" naming no file; a dangling link made its
    # target, outside the folder
    for make in (os.mkfifo, lambda p: os.symlink(tmp_path / "elsewhere.lock", p)):
        os.makedirs("s", exist_ok=True)
        if os.path.lexists("s/.minippo.lock"):
            os.remove("s/.minippo.lock")
        make("s/.minippo.lock")
        assert main(["train", "CartPole-v1", "--out", "s", "--timesteps", "64", "--quiet", *TINY]) == 2
        assert capsys.readouterr().err == "minippo: error: --out 's': 's/.minippo.lock' is not the plain file " \
            "minippo locks (a link, a FIFO or a device): move it away\n"
        assert not (tmp_path / "elsewhere.lock").exists() and sorted(os.listdir("s")) == [".minippo.lock"]
    os.symlink(tmp_path / "nowhere", "dangling")  # --out a link to nothing: "[Errno 17] File exists: 'dangling'"
    assert main(["train", "CartPole-v1", "--out", "dangling", "--timesteps", "64", "--quiet", *TINY]) == 2
    assert capsys.readouterr().err == f"minippo: error: --out 'dangling' is a link to nothing " \
        f"({str(tmp_path / 'nowhere')!r}): make the folder it names, or choose another --out\n"


def test_resume_with_out_does_not_rewrite_a_config_json_that_is_not_the_run_s(tmp_path, monkeypatch, capsys):
    """config.json linked to a file of the user's elsewhere: a resume with --out naming the run's own
    folder replaced that file with the run's config (without --out the folder was refused)."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "CartPole-v1", "--timesteps", "64", "--n-envs", "2", "--out", "r", "--quiet", *TINY]) == 0
    (tmp_path / "important.txt").write_text("IMPORTANT DATA")
    os.remove("r/config.json")
    os.symlink(tmp_path / "important.txt", "r/config.json")
    for out in ([], ["--out", "r"]):
        assert main(["train", "CartPole-v1", "--resume", "r/model.npz", *out, "--timesteps", "128", "--quiet"]) == 2
        capsys.readouterr()
        assert (tmp_path / "important.txt").read_text() == "IMPORTANT DATA"
    (tmp_path / "deep").mkdir()  # nested past the recursion limit: a RecursionError traceback
    shutil.copy("r/model.npz", "deep/model.npz")
    (tmp_path / "deep" / "config.json").write_text('{"env_id": "CartPole-v1", "x": ' + "[" * 100_000 + "]" * 100_000
                                                   + "}")
    assert main(["train", "CartPole-v1", "--resume", "deep/model.npz", "--timesteps", "128", "--quiet"]) == 2
    assert "is not the model.npz of a minippo run folder" in capsys.readouterr().err


def test_a_resume_checks_every_row_and_says_what_it_drops(tmp_path, monkeypatch, capsys):
    """Rows past the checkpoint were dropped without a word (998 of 1000 behind an older model); a NUL in
    a cell, a repeated iteration or a short row were kept (`minippo plot` then failed on them); a byte-
    order mark (a spreadsheet's save) was 'not minippo's columns'; one long line was read whole (2 GB)."""
    from minippo.cli import CsvLog

    monkeypatch.chdir(tmp_path)
    assert main(["train", "CartPole-v1", "--timesteps", "64", "--n-envs", "2", "--out", "r", "--quiet", *TINY]) == 0
    good = (tmp_path / "r" / "progress.csv").read_text()
    rows = good.splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["1", "2"]
    later = [",".join([str(i), *rows[-1].split(",")[1:]]) for i in (3, 4, 5)]
    (tmp_path / "r" / "progress.csv").write_text("\ufeff" + good + "\n".join(later) + "\n")
    capsys.readouterr()
    assert main(["train", "CartPole-v1", "--resume", "r/model.npz", "--timesteps", "128", "--quiet"]) == 0
    assert "minippo: dropped 3 rows of progress.csv logged after iteration 2, where the model was saved" in \
        capsys.readouterr().err
    assert _iterations("r/progress.csv") == [1, 2, 3, 4]
    cells = rows[-1].split(",")
    for bad in ([*cells[:2], "0\x00373", *cells[3:]], [rows[0].split(",")[0], *cells[1:]], cells[:5]):
        path = tmp_path / "bad.csv"
        path.write_text(good + ",".join(bad) + "\n")
        with pytest.raises(ValueError, match=r"bad\.csv, line 4: .* is not a row minippo writes \(after iteration "
                                             r"2: a later one, then numbers or empty cells, 20 in all\)"):
            CsvLog.check_file(str(path))
    path.write_text(good + "\x00" * 5_000_000 + "\n")
    with pytest.raises(ValueError, match=r"bad\.csv, line 4: longer than 65536 characters"):
        CsvLog.check_file(str(path))


def test_a_whole_progress_csv_is_appended_to_not_rewritten_on_resume(tmp_path, monkeypatch):
    """Only a file with rows past the checkpoint, or without its last newline, is rewritten."""
    from minippo.cli import _ends_line

    for text, ends in ((b"", True), (b"a\n", True), (b"a", False), (b"a\nb", False)):
        (tmp_path / "f").write_bytes(text)
        assert _ends_line(str(tmp_path / "f")) is ends, text
    monkeypatch.chdir(tmp_path)
    assert main(["train", "CartPole-v1", "--timesteps", "64", "--n-envs", "2", "--out", "r", "--quiet", *TINY]) == 0
    inode = os.stat("r/progress.csv").st_ino
    assert main(["train", "CartPole-v1", "--resume", "r/model.npz", "--timesteps", "128", "--quiet"]) == 0
    assert os.stat("r/progress.csv").st_ino == inode and _iterations("r/progress.csv") == [1, 2, 3, 4]


def test_resume_onto_a_progress_csv_without_its_last_newline_keeps_rows_apart(tmp_path, monkeypatch):
    """A progress.csv saved by an editor without the last line's newline: the first row appended
    joined that line (iteration 3's row became part of 2's, and plot read it without a word)."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "CartPole-v1", "--timesteps", "64", "--n-envs", "2", "--out", "r", "--quiet", *TINY]) == 0
    text = (tmp_path / "r" / "progress.csv").read_text()
    (tmp_path / "r" / "progress.csv").write_text(text.rstrip("\n"))
    assert main(["train", "CartPole-v1", "--resume", "r/model.npz", "--timesteps", "128", "--quiet"]) == 0
    rows = _rows("r/progress.csv")
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]
    assert all(len(r) == len(CSV_COLUMNS) and None not in r for r in rows)
    assert [r["timesteps"] for r in rows] == ["32", "64", "96", "128"]


def test_a_run_folder_that_cannot_be_written_is_refused_before_training(tmp_path, capsys, monkeypatch):
    """Every unwritable place is one line and exit code 2 before any step is taken (a folder in the
    way of model.npz used to surface only at the save, losing the trained model)."""
    (tmp_path / "afile").write_text("")
    for name in ("model.npz", "config.json", "progress.csv"):
        (tmp_path / name.split(".")[0] / name).mkdir(parents=True)
    cases = [(tmp_path / "afile" / "sub", "Not a directory")]
    cases += [(tmp_path / name.split(".")[0], f"{name}' is a folder")
              for name in ("model.npz", "config.json", "progress.csv")]
    for out, message in cases:
        assert main(["train", "CartPole-v1", "--timesteps", "64", "--out", str(out), *TINY]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "cannot write the run there" in err and message in err, err
        assert "training CartPole-v1" not in err
    os.makedirs(tmp_path / "cwd" / "runs" / "CartPole-v1-s0" / "model.npz")
    monkeypatch.chdir(tmp_path / "cwd")  # the default folder: named as the run folder, not as --out
    assert main(["train", "CartPole-v1", "--timesteps", "64", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minippo: error: run folder 'runs/CartPole-v1-s0': cannot write the run there"), err
    for folder in ("model", "config", "progress"):
        assert sorted(os.listdir(tmp_path / folder)) == [f for f in ("config.json", "model.npz", "progress.csv")
                                                          if f.startswith(folder)]  # nothing else written


def test_set_env_id_and_plot_and_eval_mistakes_are_one_line(tmp_path, capsys):
    import gymnasium as gym
    from envs_for_tests import register_probe

    assert main(["train", "CartPole-v1", "--set", "env_id=Pendulum-v1", *TINY]) == 2
    assert "--set env_id=Pendulum-v1 differs from ENV_ID CartPole-v1" in capsys.readouterr().err
    run = tmp_path / "run"
    register_probe("minippo-test/Fit-v0", 8, action_space=gym.spaces.Box(-1, 1, (2,), np.float32))
    assert main(["train", "minippo-test/Fit-v0", "--timesteps", "64", "--n-envs", "2", "--out", str(run),
                 "--quiet", *TINY]) == 0
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "progress.csv").write_text("iteration,timesteps\n1,64\n2,abc\n")
    cases = [
        (["eval", str(run / "config.json")], "is not a readable minippo checkpoint (.npz): it is not a zip file"),
        (["eval", str(run)], "is a folder, not a checkpoint file"),
        (["plot", str(bad)], "progress.csv, line 3: timesteps 'abc' is not a number"),
        (["plot", str(run), "-o", str(run)], "must name an image file"),
        (["plot", str(run), "-o", ""], "must name an image file"),
    ]
    if os.path.isdir("/proc/self"):  # a folder nobody can create files in
        cases.append((["plot", str(run), "-o", "/proc/c.png"], "--output '/proc/c.png': cannot write it"))
    plots = importlib.util.find_spec("matplotlib") is not None  # (a skip here skipped every case after it)
    for argv, message in cases:
        if argv[0] == "plot" and not plots:
            continue
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (argv, err)
    # env_kwargs the env no longer takes: one line, as for training
    with np.load(run / "model.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("meta")))
    meta["config"]["env_kwargs"] = {"foo": 1}
    np.savez(tmp_path / "kw.npz", meta=np.array(json.dumps(meta)), **arrays)
    assert main(["eval", str(tmp_path / "kw.npz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "env_kwargs={'foo': 1} are not accepted by minippo-test/Fit-v0" in err, err
    # the env id now names an env with other spaces: evaluation says so instead of failing in gymnasium
    register_probe("minippo-test/Fit-v0", 8, action_space=gym.spaces.Discrete(3))
    try:
        assert main(["eval", str(run / "model.npz")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "env minippo-test/Fit-v0 does not fit the policy" in err, err
    finally:
        del gym.registry["minippo-test/Fit-v0"]


def test_bench_times_env_stepping_over_the_steps_training_took(monkeypatch, capsys):
    """With a budget below one rollout, training still runs a whole rollout: the env-only timing
    must step as many times, or the ratio compares different amounts of work."""
    from minippo import bench

    seen = []
    real = bench.env_stepping
    monkeypatch.setattr(bench, "env_stepping", lambda cfg, steps: seen.append(steps) or real(cfg, steps))
    res = bench.train_speed(1)
    assert seen == [256]  # the CartPole preset's rollout: 8 envs x 32 steps
    assert res["env_only_steps_per_s"] == pytest.approx(256 / res["env_only_s"])


class _Tty:
    """A stderr that says it is a terminal and keeps what is written to it."""

    def __init__(self) -> None:
        self.text = ""

    def isatty(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self.text += s
        return len(s)

    def flush(self) -> None:
        pass


def _rows_for(n: int) -> list[dict]:
    return [{"iteration": i + 1, "timesteps": 100 * (i + 1), "mean_return": 10.0 * i, "fps": 5000.0}
            for i in range(n)]


def _stderr(tty: bool) -> _Tty:
    """A stand-in stderr that records what is written, a terminal or (``tty=False``) a pipe."""
    return _Tty() if tty else type("NoTty", (_Tty,), {"isatty": lambda self: False})()


def _progress_text(monkeypatch, quiet: bool = False, tty: bool = True, tqdm_module=...) -> str:
    """Drive cli._Progress over three iterations (300 steps), return what reached stderr."""
    from minippo import cli

    err = _stderr(tty)
    monkeypatch.setattr(sys, "stderr", err)
    if tqdm_module is not ...:
        monkeypatch.setitem(sys.modules, "tqdm", tqdm_module)
    p = cli._Progress(300, 0, quiet)
    for row in _rows_for(3):
        p(row)
    p.close()
    return err.text


def test_progress_plain_bar_without_tqdm(monkeypatch):
    text = _progress_text(monkeypatch, tqdm_module=None)  # None in sys.modules: import fails
    assert text.startswith("\r[") and text.endswith("\n")
    assert "300/300" in text and "return    20.00" in text and "#" * 30 in text


def test_progress_old_tqdm_without_set_postfix_str_falls_back(monkeypatch):
    """tqdm < 4.16 has no set_postfix_str: the plain bar, not an AttributeError mid-training."""
    import types

    made = []

    class OldTqdm:
        def __init__(self, *a, **k):
            made.append(self)

        def update(self, n):
            pass

        def close(self):
            pass

    text = _progress_text(monkeypatch, tqdm_module=types.SimpleNamespace(tqdm=OldTqdm))
    assert made == [] and "300/300" in text


class _FakeTqdm:
    """A tqdm stand-in that records its bars (and can fail to start, like tqdm 4.16-4.20 on 3.12+)."""

    made: list = []
    fail = False

    def __init__(self, *a, **k):
        if self.fail:
            raise ValueError("max() iterable argument is empty")
        self.made.append(self)

    def update(self, n):
        pass

    def set_postfix_str(self, s, refresh=True):
        pass

    def close(self):
        pass


@pytest.mark.parametrize("version, python, bar", [("4.20.0", (3, 12, 0), False), ("4.20.0", (3, 11, 9), True),
                                                  ("4.21.0", (3, 12, 0), True), ("5.0", (3, 13, 0), True)])
def test_progress_skips_tqdm_before_4_21_on_python_3_12(monkeypatch, version, python, bar):
    """tqdm < 4.21 raises on its first bar on Python 3.12+: the plain bar is used without trying it."""
    import types

    made = []
    monkeypatch.setattr(_FakeTqdm, "made", made)
    monkeypatch.setattr(sys, "version_info", python)
    text = _progress_text(monkeypatch, tqdm_module=types.SimpleNamespace(tqdm=_FakeTqdm, __version__=version))
    monkeypatch.undo()
    assert len(made) == int(bar)
    assert ("#" * 30 in text) is not bar


@pytest.mark.parametrize("columns, rows, bar", [(0, 24, False), (80, 0, False), (0, 0, False), (80, 24, True)])
def test_progress_takes_the_plain_bar_on_a_terminal_of_no_width(monkeypatch, columns, rows, bar):
    """A pseudo-terminal never sized (``script``, some CI runners) reports 0 columns, and tqdm's bar,
    sized to it, drew nothing at all: the plain bar there. One given a width only (``stty cols 100``)
    reports 0 rows, and tqdm hid its bar's line: no bar, no lines, until the end. A sized terminal
    keeps tqdm."""
    import types

    made = []
    monkeypatch.setattr(_FakeTqdm, "made", made)
    monkeypatch.setattr(_Tty, "fileno", lambda self: 2, raising=False)
    monkeypatch.setattr(os, "get_terminal_size", lambda fd: os.terminal_size((columns, rows)))
    text = _progress_text(monkeypatch, tqdm_module=types.SimpleNamespace(tqdm=_FakeTqdm, __version__="9.9"))
    assert len(made) == int(bar) and ("#" * 30 in text) is not bar


def test_progress_falls_back_when_tqdm_fails_to_start(monkeypatch):
    import types

    monkeypatch.setattr(_FakeTqdm, "fail", True)
    text = _progress_text(monkeypatch, tqdm_module=types.SimpleNamespace(tqdm=_FakeTqdm, __version__="9.9"))
    assert "300/300" in text and "#" * 30 in text


def test_progress_tqdm_bar_on_a_terminal(monkeypatch):
    tqdm = pytest.importorskip("tqdm")
    if not hasattr(tqdm.tqdm, "set_postfix_str"):
        pytest.skip("tqdm < 4.16")
    # no tqdm_monitor thread left behind: a later test that forks (AsyncVectorEnv) would warn about it
    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)
    text = _progress_text(monkeypatch)
    assert "300/300" in text and "return    20.00" in text and "steps/s" in text


def test_tqdm_rate_and_eta_leave_out_numba_compiles(monkeypatch):
    """A first numba run compiles for tens of seconds inside its first iteration (45 s in session 21).
    tqdm's ETA comes from its rate between updates, which leaves those seconds out, as the postfix's
    steps/s does (before, it read 14 steps/s here, and a few steps/s for dozens of iterations of a
    real run); elapsed stays wall time. tqdm's own rate field is not shown: at the end it is steps
    over wall time, compiles and all, beside the postfix's steps/s."""
    tqdm = pytest.importorskip("tqdm")
    tqdm_std = pytest.importorskip("tqdm.std")

    from minippo import backend, cli

    if not hasattr(tqdm.tqdm, "format_dict"):
        pytest.skip("tqdm < 4.37 has no format_dict to read the rate from")
    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)
    now, compiled = [0.0], [0.0]
    monkeypatch.setattr(tqdm_std, "time", lambda: now[0])  # the clock tqdm reads
    monkeypatch.setattr(backend, "numba_compile_seconds", lambda this_thread=False: compiled[0])
    monkeypatch.setattr(sys, "stderr", _Tty())
    p = cli._Progress(1000, 0, False)
    compiled[0], now[0] = 45.0, 46.0  # iteration 1: 45 s of compiles, 1 s of training
    for i, row in enumerate(_rows_for(4)):
        now[0] += i > 0  # then 1 s per iteration of 100 steps
        p(row)
    shown, drawn = p.bar.format_dict, sys.stderr.text.replace("\r", "\n").strip().splitlines()[-1]
    p.close()
    assert shown["rate"] == pytest.approx(100.0)  # steps/s: 100 per second of training
    assert shown["elapsed"] == 49.0 and shown["n"] == 400
    # 600 steps left at 100 a second: 6 s (tqdm 4.36-4.54, the floor included, truncate the 5.99.. s their
    # rate gives to 00:05; 4.57 on rounds it)
    assert re.search(r"\| 400/1000 \[00:49<00:0[56], return    30\.00     5000 steps/s\]$", drawn), drawn
    assert "step/s" not in sys.stderr.text.replace("steps/s", "")  # no tqdm rate, at the end either


def test_the_tqdm_bar_redraws_at_tqdms_rate_not_every_iteration(monkeypatch):
    """set_postfix_str refreshed the bar at every iteration, past tqdm's ~10 redraws a second: 4,217
    redraws (720 KB to the terminal) in a 1M-step run. 1000 iterations in one second draw ~10 now, the
    last row's return among them."""
    tqdm = pytest.importorskip("tqdm")
    tqdm_std = pytest.importorskip("tqdm.std")

    from minippo import backend, cli

    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)
    monkeypatch.setattr(sys, "stderr", _Tty())
    now = [0.0]
    monkeypatch.setattr(tqdm_std, "time", lambda: now[0])
    monkeypatch.setattr(backend, "numba_compile_seconds", lambda this_thread=False: 0.0)
    p = cli._Progress(100_000, 0, False)
    for row in _rows_for(1000):
        now[0] += 0.001
        p(row)
    p.close()
    redraws = sys.stderr.text.count("\r")
    assert 5 <= redraws <= 20, redraws
    assert "return  9990.00" in sys.stderr.text.replace("\r", "\n").strip().splitlines()[-1]


def test_later_compiles_are_left_out_of_the_rate_too(monkeypatch):
    """Kernels first called later in a run (the update's after the rollout's) compile then: each
    compile's own seconds are left out, so tqdm's rate is the rate of the same run without compiles."""
    tqdm = pytest.importorskip("tqdm")
    tqdm_std = pytest.importorskip("tqdm.std")

    from minippo import backend, cli

    if not hasattr(tqdm.tqdm, "format_dict"):
        pytest.skip("tqdm < 4.37 has no format_dict to read the rate from")
    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)
    monkeypatch.setattr(sys, "stderr", _Tty())
    now, compiled = [0.0], [0.0]
    monkeypatch.setattr(tqdm_std, "time", lambda: now[0])
    monkeypatch.setattr(backend, "numba_compile_seconds", lambda this_thread=False: compiled[0])

    def run(compiles: list[float]) -> dict:
        now[0] = compiled[0] = 0.0
        p = cli._Progress(1000, 0, False)
        for row, training, compiling in zip(_rows_for(5), [1.0, 1.0, 1.0, 3.0, 2.0], compiles, strict=True):
            compiled[0] += compiling
            now[0] += training + compiling
            p(row)
        shown = dict(p.bar.format_dict)
        p.close()
        return shown

    plain, compiling = run([0.0] * 5), run([45.0, 0.0, 5.0, 0.0, 7.0])
    assert 100 / 3 < plain["rate"] < 100  # tqdm's EMA of 100 steps per 1, 1, 1, 3 and 2 s
    assert compiling["rate"] == pytest.approx(plain["rate"])
    assert compiling["elapsed"] == plain["elapsed"] + 57.0  # elapsed stays wall time


def test_progress_lines_when_piped_and_nothing_when_quiet(monkeypatch):
    lines = _progress_text(monkeypatch, tty=False).splitlines()
    assert [ln.split()[:4] for ln in lines] == [["iter", "1", "steps", "100"], ["iter", "2", "steps", "200"],
                                                 ["iter", "3", "steps", "300"]]
    assert _progress_text(monkeypatch, quiet=True) == ""


def _log_line_during_progress(monkeypatch, tqdm_module) -> str:
    """A library log line (numba's compile notice comes mid-training) before the bar's first row and
    after it; returns what reached the terminal."""
    import logging

    from minippo import cli

    err = _Tty()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setitem(sys.modules, "tqdm", tqdm_module)
    cli._show_library_log()  # the CLI's handler (added once per process)
    log = logging.getLogger("minippo")
    p = cli._Progress(300, 0, False)
    rows = _rows_for(2)
    log.info("first notice")
    p(rows[0])
    log.info("second notice")
    p(rows[1])
    p.close()
    assert cli._Progress.active is None  # log lines print plainly again
    log.info("after the bar")
    return err.text


def test_log_lines_do_not_run_into_the_plain_bar(monkeypatch):
    text = _log_line_during_progress(monkeypatch, None)
    assert text.startswith("minippo: first notice\n\r[")  # nothing drawn yet: no blank line first
    assert "steps/s\nminippo: second notice\n\r[" in text  # the bar's line ended, then redrawn below
    assert text.endswith("\nminippo: after the bar\n")


def test_log_lines_go_through_tqdm_write(monkeypatch):
    tqdm = pytest.importorskip("tqdm")
    if not hasattr(tqdm.tqdm, "set_postfix_str"):
        pytest.skip("tqdm < 4.16")
    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)
    text = _log_line_during_progress(monkeypatch, tqdm)
    for line in ("first notice", "second notice"):  # each on a line of its own, not after the bar's text
        assert re.search(rf"(^|[\r\n])minippo: {line}\n", text), text
        assert not re.search(rf"[^\r\n]minippo: {line}", text), text


def test_done_line_says_how_long_numba_compiled(tmp_path, capsys, monkeypatch):
    from minippo import backend
    from minippo.ppo import PPO

    compiled = [2.0]
    learn = PPO.learn

    def learn_and_compile(self, *a, **k):
        out = learn(self, *a, **k)
        compiled[0] += 41.26  # as if the kernels had compiled during this run
        return out

    monkeypatch.setattr(backend, "numba_compile_seconds", lambda this_thread=False: compiled[0])
    monkeypatch.setattr(PPO, "learn", learn_and_compile)
    assert main(["train", "CartPole-v1", "--timesteps", "32", "--out", str(tmp_path / "a"), *TINY]) == 0
    assert re.search(r"minippo: done, \d+ steps in \d+\.\d s \(41\.3 s of it numba compiling kernels, a one-off\); "
                     "model saved to ", capsys.readouterr().err)
    monkeypatch.setattr(PPO, "learn", learn)  # nothing compiled: the plain done line
    started = time.perf_counter()
    assert main(["train", "CartPole-v1", "--timesteps", "32", "--out", str(tmp_path / "b"), *TINY]) == 0
    took = time.perf_counter() - started
    done = re.search(r"minippo: done, \d+ steps in (\d+\.\d) s; model saved to ", capsys.readouterr().err)
    assert done and float(done[1]) <= took + 0.05  # the wall time of this run (printed to 0.1 s)

    # compile time is named when it shows as 0.1 s or more, never as "0.0 s of it"
    for spent, shown in ((0.05, "0.1"), (0.04, None)):
        compiled[0] = 0.0

        def learn_and_compile_briefly(self, *a, _spent=spent, **k):
            out = learn(self, *a, **k)
            compiled[0] = _spent
            return out

        monkeypatch.setattr(PPO, "learn", learn_and_compile_briefly)
        assert main(["train", "CartPole-v1", "--timesteps", "32", "--out", str(tmp_path / f"c{spent}"), *TINY]) == 0
        err = capsys.readouterr().err
        assert (f"s ({shown} s of it numba compiling" in err) if shown else ("numba compiling" not in err), err


def test_a_run_folder_in_use_by_another_run_is_refused_even_with_overwrite(tmp_path, capsys):
    """Two runs started at once on one --out both passed the checks for a run's files and wrote into
    the folder together (interleaved progress.csv rows, one run's config.json beside the other's
    model.npz, 2 in 8 simultaneous starts in session 62's audit); --overwrite beside a running run
    deleted its files. The folder's lock, held by a run in another process here, refuses the second
    run before it writes anything; the first saves as usual, and the folder is free after it."""
    out = tmp_path / "run"
    proc = _train_until_rows(out, 1, ["--quiet", *TINY])
    try:
        before = {n: (out / n).read_bytes() for n in ("config.json",)}
        for extra in ([], ["--overwrite"]):
            assert main(["train", "CartPole-v1", "--timesteps", "64", "--out", str(out), *extra, *TINY]) == 2
            err = capsys.readouterr().err
            if extra:
                assert f"--out {str(out)!r} is in use by another minippo train (it holds .minippo.lock)" in err, err
            else:  # (the run's files are seen first)
                assert "already holds config.json, progress.csv" in err, err
            assert err.count("\n") == 1 and "training CartPole-v1" not in err, err
            assert (out / "config.json").read_bytes() == before["config.json"] and (out / "progress.csv").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "model saved" in err, err
    assert main(["train", "CartPole-v1", "--timesteps", "64", "--out", str(out), "--overwrite", "--quiet", *TINY]) == 0


def test_a_run_that_wrote_the_folder_while_this_one_took_the_lock_is_seen(tmp_path, capsys, monkeypatch):
    """The checks run again once the lock is held: a run that passed them beside this one, wrote its
    files and ended (its lock released) between this run's checks and its lock is not mixed with."""
    from minippo import cli

    lock = cli._lock_run_folder

    def the_other_run_first(out, where):
        (tmp_path / "run" / "config.json").write_text("{}")
        return lock(out, where)

    monkeypatch.setattr(cli, "_lock_run_folder", the_other_run_first)
    assert main(["train", "CartPole-v1", "--timesteps", "64", "--out", str(tmp_path / "run"), *TINY]) == 2
    assert "another minippo train started there at the same time" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path / "run")) == [".minippo.lock", "config.json"]
    assert (tmp_path / "run" / "config.json").read_text() == "{}"


def test_the_run_folder_lock_on_windows_and_without_file_locks(tmp_path, monkeypatch):
    """msvcrt.locking where there is no fcntl (Windows), a busy lock named as such; no lock module at
    all, or a file system that takes no locks: no lock (the checks alone)."""
    import types

    from minippo import cli

    held: set[int] = set()

    def locking(fd, mode, nbytes):
        assert (mode, nbytes) == (fake.LK_NBLCK, 1)
        key = os.fstat(fd).st_ino
        if key in held:
            raise PermissionError(errno.EACCES, "Permission denied")
        held.add(key)

    fake = types.SimpleNamespace(LK_NBLCK=2, locking=locking)
    monkeypatch.setitem(sys.modules, "fcntl", None)  # (import raises ImportError)
    monkeypatch.setitem(sys.modules, "msvcrt", fake)
    first = cli._lock_run_folder(str(tmp_path), "--out 'x'")
    with pytest.raises(cli.UsageError, match=r"--out 'x' is in use by another minippo train"):
        cli._lock_run_folder(str(tmp_path), "--out 'x'")
    first.close()
    monkeypatch.setitem(sys.modules, "msvcrt", None)
    assert isinstance(cli._lock_run_folder(str(tmp_path / "nowhere"), "--out 'x'"), cli._NoLock)

    def no_locks_here(fd, operation):  # a file system without locks (some NFS mounts): trained as before
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setitem(sys.modules, "fcntl", types.SimpleNamespace(LOCK_EX=2, LOCK_NB=4, flock=no_locks_here))
    assert isinstance(cli._lock_run_folder(str(tmp_path), "--out 'x'"), cli._NoLock)


def test_a_fresh_run_does_not_mix_with_a_run_already_in_its_folder(tmp_path, capsys, monkeypatch):
    """A fresh run into a run folder used to rewrite config.json and empty progress.csv at once but
    keep the old model.npz until its first save: stopped before that, the folder held two runs, and
    --resume then continued the old model under the new run's log."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "CartPole-v1", "--timesteps", "64", "--out", "r", "--quiet", *TINY]) == 0
    before = {n: (tmp_path / "r" / n).read_bytes() for n in ("model.npz", "config.json", "progress.csv")}
    capsys.readouterr()
    assert main(["train", "CartPole-v1", "--timesteps", "64", "--seed", "1", "--out", "r", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out 'r' already holds model.npz, config.json, progress.csv: continue it " \
        "with --resume r/model.npz, choose another --out, or pass --overwrite to start afresh there" in err, err
    assert {n: (tmp_path / "r" / n).read_bytes() for n in before} == before  # nothing written
    # a config.json of the user's in --out is not overwritten either
    os.mkdir("project")
    (tmp_path / "project" / "config.json").write_text('{"my": "settings"}')
    assert main(["train", "CartPole-v1", "--timesteps", "64", "--out", "project", *TINY]) == 2
    assert "--out 'project' already holds config.json: choose another --out" in capsys.readouterr().err
    assert (tmp_path / "project" / "config.json").read_text() == '{"my": "settings"}'
    # --overwrite: the old model is removed before anything else, so a run stopped before its first
    # save leaves no model of the old run beside the new config
    assert main(["train", "CartPole-v1", "--timesteps", "64", "--seed", "1", "--out", "r", "--overwrite",
                 "--quiet", *TINY]) == 0
    assert json.loads((tmp_path / "r" / "config.json").read_text())["seed"] == 1
    assert [r["iteration"] for r in _rows(tmp_path / "r" / "progress.csv")] == ["1"]  # its own rows only
    from minippo.checkpoint import read_checkpoint

    assert read_checkpoint(str(tmp_path / "r" / "model.npz"))[0]["config"]["seed"] == 1
    capsys.readouterr()
    assert main(["train", "CartPole-v1", "--resume", "r/model.npz", "--overwrite"]) == 2
    assert "--overwrite cannot be combined with it" in capsys.readouterr().err
    monkeypatch.setattr("minippo.ppo.PPO.learn", lambda self, callback=None: (_ for _ in ()).throw(KeyboardInterrupt))
    assert main(["train", "CartPole-v1", "--timesteps", "64", "--seed", "2", "--out", "r", "--overwrite",
                 "--quiet", *TINY]) == 130
    # the old model is gone, not mixed in (.minippo.lock: the run folder's lock file)
    assert sorted(os.listdir("r")) == [".minippo.lock", "config.json", "progress.csv"]
    assert json.loads((tmp_path / "r" / "config.json").read_text())["seed"] == 2


def test_resuming_in_place_over_a_write_protected_model_is_refused_before_training(tmp_path, monkeypatch, capsys):
    """Resuming in place rewrites the run's three files, model.npz by the save at the end. Where this
    process may not write one of them (os.access stood in for, as root may write every file), the
    refusal comes now, in one line naming it, with nothing written and no step trained: not as a
    lost save after the training, nor after config.json has been rewritten."""
    out = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--timesteps", "64", "--n-envs", "2", "--out", str(out), "--quiet",
                 *TINY]) == 0
    before = {n: (out / n).read_bytes() for n in os.listdir(out)}
    real_access = os.access
    for name in ("model.npz", "config.json", "progress.csv"):
        os.chmod(out / name, 0o444)
        monkeypatch.setattr(os, "access", lambda p, m, name=name, **k: False if m == os.W_OK and
                            os.path.basename(p) == name else real_access(p, m, **k))
        capsys.readouterr()
        # --timesteps: config.json would be written with the new total (and progress.csv trimmed)
        assert main(["train", "CartPole-v1", "--resume", str(out / "model.npz"), "--timesteps", "128"]) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "cannot write the run there" in err and f"{name}' is write-protected " \
            "(mode 0444): make it writeable (chmod u+w)" in err, err
        assert {n: (out / n).read_bytes() for n in os.listdir(out)} == before
        os.chmod(out / name, 0o644)
        monkeypatch.undo()



@pytest.mark.skipif(not hasattr(os, "symlink"), reason="symlinks")
def test_resuming_a_model_linked_into_a_folder_it_cannot_write_is_refused_before_training(
        tmp_path, monkeypatch, capsys):
    """A save follows a link (as open() does): its temp file goes beside the file linked to. Where
    that folder refuses it (os.access stood in for, as for root every folder is writeable), the
    in-place resume trained the whole run and then could not save it."""
    out = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--timesteps", "64", "--n-envs", "2", "--out", str(out), "--quiet",
                 *TINY]) == 0
    (tmp_path / "models").mkdir()
    os.replace(out / "model.npz", tmp_path / "models" / "model.npz")
    os.symlink(os.path.join("..", "models", "model.npz"), out / "model.npz")
    before = {n: (out / n).read_bytes() for n in os.listdir(out)}
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m, **k: False if os.path.basename(p) == "models"
                        else real_access(p, m, **k))
    capsys.readouterr()
    assert main(["train", "CartPole-v1", "--resume", str(out / "model.npz"), "--timesteps", "128"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write the run there" in err and \
        f"cannot create a file in folder {str(tmp_path / 'models')!r}: a save onto {str(out / 'model.npz')!r} " \
        "writes a temporary file there" in err, err
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == before
    monkeypatch.undo()
    assert main(["train", "CartPole-v1", "--resume", str(out / "model.npz"), "--timesteps", "128", "--quiet"]) == 0
    from minippo.checkpoint import read_checkpoint

    assert os.path.islink(out / "model.npz")
    assert read_checkpoint(str(tmp_path / "models" / "model.npz"))[0]["num_timesteps"] == 128

def test_an_unreadable_progress_csv_on_resume_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--timesteps", "64", "--out", str(out), "--quiet", *TINY]) == 0
    config, rows = (out / "config.json").read_bytes(), (out / "progress.csv").read_bytes()
    with open(out / "progress.csv", "a") as f:  # one field past the csv module's limit (131072)
        f.write("9," + "x" * 200_000 + "\n")
    capsys.readouterr()
    assert main(["train", "CartPole-v1", "--resume", str(out / "model.npz"), "--timesteps", "512", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "progress.csv, line 3: longer than 65536 characters, not a progress.csv " \
        "line" in err, err
    assert (out / "config.json").read_bytes() == config
    (out / "progress.csv").write_bytes(rows + b"9,\xff\xfe\n")  # not UTF-8 (a disk's garbage after a power loss)
    assert main(["train", "CartPole-v1", "--resume", str(out / "model.npz"), "--timesteps", "512", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(r"progress\.csv cannot be read as CSV \('utf-8' codec can't decode byte "
                                             r"0xff in position \d+: invalid start byte\); move it away to resume "
                                             r"here\n$", err), err
    assert (out / "config.json").read_bytes() == config


def test_training_that_diverges_is_one_line_exit_1(tmp_path, capsys):
    """A FloatingPointError from training (here logits / temperature overflows) used to be a traceback."""
    out = tmp_path / "run"
    with np.errstate(all="ignore"):
        rc = main(["train", "CartPole-v1", "--timesteps", "64", "--out", str(out), "--quiet", *TINY,
                   "--set", "temperature=1e-320"])
    assert rc == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "minippo: error: training stopped at 0 steps: logits / temperature contains " \
        "NaN or inf; model not saved" in err, err
    assert not (out / "model.npz").exists()


def test_an_out_that_is_a_file_and_a_resume_that_is_a_folder_are_named(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    assert main(["train", "CartPole-v1", "--timesteps", "64", "--out", str(tmp_path / "afile"), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file, not a folder" in err, err
    assert main(["train", "CartPole-v1", "--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--resume {str(tmp_path)!r} is a folder; a run folder's model is" in err, err


def test_resume_into_another_runs_folder_is_refused(tmp_path, capsys):
    """--resume B/model.npz --out A replaced A's model, rewrote its config.json and spliced B's rows
    into A's progress.csv: one folder, two runs."""
    a, b, c = tmp_path / "A", tmp_path / "B", tmp_path / "C"
    for out, seed in ((a, "1"), (b, "2")):
        assert main(["train", "CartPole-v1", "--timesteps", "64", "--seed", seed, "--out", str(out), "--quiet",
                     *TINY]) == 0
    before = {n: (a / n).read_bytes() for n in ("model.npz", "config.json", "progress.csv")}
    capsys.readouterr()
    # B's model; then another model in A's folder, which is not A's either: --resume A/other.npz --out A
    # counted as resuming in place (the folder matched) and took A's run over the same way. Without
    # --out, other.npz is refused as not a run folder's model.npz: no "leave out --out" hint for it.
    shutil.copy(b / "model.npz", a / "other.npz")
    for model, hint in ((b / "model.npz", "the model's own folder"), (a / "other.npz", "an --out without these")):
        assert main(["train", "CartPole-v1", "--resume", str(model), "--timesteps", "256", "--out", str(a),
                     "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "already holds model.npz, config.json, progress.csv (a run): resume " \
            f"into {hint}" in err, err
        assert {n: (a / n).read_bytes() for n in before} == before
    # its own folder (named or not) and an empty one are fine
    assert main(["train", "CartPole-v1", "--resume", str(b / "model.npz"), "--timesteps", "256",
                 "--out", str(tmp_path / "B" / "."), "--quiet"]) == 0
    assert main(["train", "CartPole-v1", "--resume", str(b / "model.npz"), "--timesteps", "384",
                 "--out", str(c), "--quiet"]) == 0
    assert json.loads((c / "config.json").read_text())["seed"] == 2


def test_ctrl_c_outside_training_is_one_line_exit_130(monkeypatch, capsys):
    from minippo import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_eval", interrupted)
    assert main(["eval", "model.npz"]) == 130
    assert capsys.readouterr().err == "\nminippo: interrupted\n"


def test_a_full_disk_is_one_line_exit_1_and_leaves_no_partial_row(tmp_path, capsys, monkeypatch):
    """ENOSPC used to be a traceback (at the save: the trained model lost without a word), and a short
    write left half a row in progress.csv, which plot then read."""
    import errno

    from minippo import cli

    def no_space(algo, path, unlogged_rows=None):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("minippo.checkpoint.save_checkpoint", no_space)
    out = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--timesteps", "64", "--out", str(out), "--quiet", *TINY]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"minippo: error: cannot save {out / 'model.npz'} after 128 steps: " \
        "[Errno 28] No space left on device; model not saved" in err, err
    monkeypatch.undo()

    real_write, rows_written = os.write, []

    def short_write(fd, data):  # the header and 2 rows go through; the 3rd row gets 10 bytes, like a full disk
        if len(rows_written) == 3:
            return real_write(fd, data[:10])
        rows_written.append(data)
        return real_write(fd, data)

    monkeypatch.setattr(cli.os, "write", short_write)
    out = tmp_path / "run2"
    assert main(["train", "CartPole-v1", "--timesteps", "1024", "--out", str(out), "--quiet", *TINY]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"minippo: error: cannot write {out / 'progress.csv'}: [Errno 5] short write: " \
        "10 of " in err and f"training stopped at 384 steps; model saved to {out / 'model.npz'}" in err, err
    assert (out / "progress.csv").read_bytes() == b"".join(rows_written)  # whole rows only
    from minippo.checkpoint import read_checkpoint

    assert read_checkpoint(str(out / "model.npz"))[0]["num_timesteps"] == 384  # the training is kept
    # the row comes with the model (the trainer keeps the meta it was loaded from: one read on --resume)
    from minippo import PPO
    from minippo.config import PPOConfig

    assert [r[:2] for r in PPO.load(str(out / "model.npz")).checkpoint_meta["unlogged_rows"]] == [["3", "384"]]
    assert PPO(PPOConfig(n_steps=16, batch_size=16, hidden=(4,))).checkpoint_meta is None
    monkeypatch.undo()
    # the row that could not be written went into the model, and the resumed run writes it first:
    # the log used to skip iteration 3 for good
    assert main(["train", "CartPole-v1", "--resume", str(out / "model.npz"), "--timesteps", "640", "--quiet"]) == 0
    rows = _rows(out / "progress.csv")
    assert [r["iteration"] for r in rows] == ["1", "2", "3", "4", "5"]
    assert rows[2]["timesteps"] == "384" and rows[2]["loss"] != "" and rows[2]["lr"] != ""
    assert "unlogged_rows" not in read_checkpoint(str(out / "model.npz"))[0]  # written: not carried on
    capsys.readouterr()

    # an OSError that is not minippo's writing (here a custom env's) keeps its traceback: it is not
    # reported as a file minippo could not write
    from envs_for_tests import register_probe

    register_probe("minippo-test/Probe-v0", 8)
    import gymnasium as gym

    def boom(self, action):
        raise FileNotFoundError(2, "No such file or directory", "/nonexistent/asset.bin")

    monkeypatch.setattr(gym.registry["minippo-test/Probe-v0"].entry_point, "step", boom)
    with pytest.raises(FileNotFoundError, match="asset.bin"):
        main(["train", "minippo-test/Probe-v0", "--timesteps", "64", "--out", str(tmp_path / "run3"), "--quiet"])


def test_an_env_from_a_module_trains_and_evaluates_from_the_command_line(tmp_path, capsys):
    """gymnasium's "module:EnvId" (the module registers the id on import) was refused as unregistered."""
    env_id = "gymnasium.envs.classic_control.cartpole:CartPole-v1"
    out = tmp_path / "run"
    assert main(["train", env_id, "--timesteps", "64", "--n-envs", "2", "--out", str(out), "--quiet", *TINY]) == 0
    capsys.readouterr()
    assert main(["eval", str(out / "model.npz"), "--episodes", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["env_id"] == env_id
    assert json.loads((out / "config.json").read_text())["gamma"] == 0.98  # CartPole-v1's preset
    # in a new process too: a module of gymnasium (imported to make the env in any case) is no new package
    code = ("import sys\nfrom minippo import PPO\nfrom minippo.cli import main\n"
            f"assert main(['eval', {str(out / 'model.npz')!r}, '--episodes', '1']) == 0\n"
            f"assert PPO.load({str(out / 'model.npz')!r}).env_name == {env_id!r}\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert main(["train", "no_such_module_here:CartPole-v1", "--timesteps", "64", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot import module 'no_such_module_here'" in err, err
    # a relative or empty module was a TypeError traceback, or "Empty module name" without the argument
    for bad in (".foo:X-v0", ":", ":CartPole-v1", "gymnasium:"):
        assert main(["train", bad, "--timesteps", "64", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err == f"minippo: error: env id {bad!r}: a 'module:EnvId' id needs a module to import (an " \
            "absolute name, as 'mypkg.envs') before the ':' and the id it registers after it\n", err


def test_a_module_in_the_current_folder_is_found_by_the_minippo_command(tmp_path, capsys, monkeypatch):
    """The console script puts its own bin folder on sys.path, not the current one as ``python -m``
    does: ``minippo train mypkg.envs:MyEnv-v0`` from the project's folder said "No module named
    'mypkg'". The current folder now goes on the path (last: it never shadows an installed module)."""
    gym = pytest.importorskip("gymnasium")
    (tmp_path / "own_envs_for_cli_59.py").write_text(
        "import gymnasium\n"
        "gymnasium.register('OwnCartPole59-v0', entry_point='gymnasium.envs.classic_control:CartPoleEnv',\n"
        "                   max_episode_steps=50)\n")
    here = os.getcwd()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", here, str(tmp_path))])
    try:
        out = tmp_path / "run"
        assert main(["train", "own_envs_for_cli_59:OwnCartPole59-v0", "--timesteps", "64", "--n-envs", "2",
                     "--out", str(out), "--quiet", *TINY]) == 0, capsys.readouterr().err
        assert sys.path[-1] == str(tmp_path)
        main(["eval", str(out / "model.npz"), "--episodes", "1"])  # a second main() adds it once
        assert sys.path.count(str(tmp_path)) == 1
    finally:
        sys.modules.pop("own_envs_for_cli_59", None)
        gym.registry.pop("OwnCartPole59-v0", None)


@pytest.mark.filterwarnings("error::RuntimeWarning")  # (numpy's divide-by-zero warning came before the error)
def test_eval_of_a_model_whose_logits_overflow_is_one_line_exit_1(any_backend, tmp_path, capsys):
    """A model set to act at temperature 1e-300 (valid: > 0) overflowed logits / temperature in sampled
    evaluation: a FloatingPointError traceback. On numba, the fused act's check of the division (in float32,
    where 1e-300 is 0) printed numpy's "divide by zero" RuntimeWarning before the line (session 76)."""
    from minippo import PPO

    out = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--timesteps", "32", "--out", str(out), "--quiet", *TINY]) == 0
    algo = PPO.load(str(out / "model.npz"))
    algo.policy.temperature = 1e-300
    algo.save(str(out / "model.npz"))
    capsys.readouterr()
    assert main(["eval", str(out / "model.npz"), "--episodes", "1"]) == 1
    assert capsys.readouterr().err == "minippo: error: evaluation stopped: logits / temperature contains NaN or " \
        "inf\n"


def test_a_model_file_imports_no_module_it_names(tmp_path, capsys, monkeypatch):
    """A checkpoint's "module:EnvId" id was imported by `minippo eval` and `PPO.load` (the current folder
    on the path too): a model file from elsewhere could run any module, or a .py file beside it. The
    module is imported only when the user names it (`--import`, their own import, the id they type)."""
    gym = pytest.importorskip("gymnasium")
    from minippo import PPO
    from minippo.envs import EnvImportRefused

    (tmp_path / "own_envs_for_cli_65.py").write_text(
        "import gymnasium, pathlib\n"
        "with pathlib.Path(__file__).with_name('imported.txt').open('a') as f:\n"
        "    f.write('x')\n"
        "gymnasium.register('OwnCartPole65-v0', entry_point='gymnasium.envs.classic_control:CartPoleEnv',\n"
        "                   max_episode_steps=50)\n")
    marker = tmp_path / "imported.txt"
    env_id = "own_envs_for_cli_65:OwnCartPole65-v0"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [*sys.path, str(tmp_path)])

    def forget():
        sys.modules.pop("own_envs_for_cli_65", None)
        gym.registry.pop("OwnCartPole65-v0", None)
        marker.unlink(missing_ok=True)

    try:
        out = tmp_path / "run"
        assert main(["train", env_id, "--timesteps", "64", "--n-envs", "2", "--out", str(out), "--quiet",
                     *TINY]) == 0, capsys.readouterr().err
        model = str(out / "model.npz")
        forget()
        capsys.readouterr()
        assert main(["eval", model, "--episodes", "1"]) == 2
        assert capsys.readouterr().err == f"minippo: error: {model} was trained on {env_id!r}: a model file imports " \
            "no code it names; pass --import own_envs_for_cli_65 if you trust it\n"
        with pytest.raises(EnvImportRefused, match=r"whose module 'own_envs_for_cli_65' is not imported: loading a "
                                                   r"checkpoint imports no code it names"):
            PPO.load(model)
        assert not marker.exists()
        assert main(["train", "CartPole-v1", "--resume", model, "--timesteps", "128"]) == 2  # another id typed
        assert capsys.readouterr().err == f"minippo: error: --resume model was trained on {env_id}, not " \
            "CartPole-v1\n"
        assert not marker.exists()
        assert main(["eval", model, "--episodes", "1", "--import", "own_envs_for_cli_65"]) == 0
        assert marker.read_text() == "x"
        assert PPO.load(model).env_name == env_id  # imported now (by the user's --import): loads
        forget()
        assert main(["train", env_id, "--resume", model, "--timesteps", "128", "--out", str(out), "--quiet"]) == 0
        assert marker.read_text() == "x"  # the id typed on the command line imports it, as for a new run
        forget()
        capsys.readouterr()
        assert main(["eval", model, "--episodes", "1", "--import", "no_such_module_65"]) == 2
        assert "--import no_such_module_65: ModuleNotFoundError: No module named 'no_such_module_65'" in \
            capsys.readouterr().err
    finally:
        forget()


def test_timesteps_takes_a_whole_number_written_as_1e6(tmp_path, capsys):
    """``--timesteps 1e3`` was argparse's "invalid int value", while PPOConfig and learn() take 1e6;
    a fraction, a word or inf is refused with the form it takes (exit code 2)."""
    out = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--timesteps", "1.28e2", "--n-envs", "2", "--out", str(out), "--quiet",
                 *TINY]) == 0
    assert json.loads((out / "config.json").read_text())["total_timesteps"] == 128
    capsys.readouterr()
    for bad in ("1.25e1", "1e-1", "abc", "inf", "nan", ""):
        assert main(["train", "CartPole-v1", "--timesteps", bad, "--out", str(tmp_path / "r2")]) == 2
        assert f"argument --timesteps: must be an integer (1e6 too), got {bad!r}" in capsys.readouterr().err
    assert main(["bench", "--timesteps", "2.5"]) == 2
    assert "argument --timesteps: must be an integer (1e6 too), got '2.5'" in capsys.readouterr().err


def test_plot_of_a_run_with_no_rows_is_one_line(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    run.mkdir()
    (run / "progress.csv").write_text(",".join(CSV_COLUMNS) + "\n")
    assert main(["plot", str(run), "-o", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no rows yet in {run / 'progress.csv'}: no iteration has finished" in err, err
    assert not (tmp_path / "c.png").exists()
    full = tmp_path / "full"  # beside a run with rows, an empty one is skipped (minippo plot runs/*)
    assert main(["train", "CartPole-v1", "--timesteps", "64", "--out", str(full), "--quiet", *TINY]) == 0
    assert main(["plot", str(run), str(full), "-o", str(tmp_path / "c.png")]) == 0
    assert f"skipping {str(run)!r}: its progress.csv has no rows yet" in capsys.readouterr().err
    assert (tmp_path / "c.png").exists()



def test_plot_reads_a_byte_order_mark_and_refuses_other_columns(tmp_path, capsys, monkeypatch):
    """A progress.csv saved again by a spreadsheet (a UTF-8 byte-order mark before 'iteration') and a CSV
    of other columns drew empty axes, exit code 0 (the missing x column read as NaN)."""
    pytest.importorskip("matplotlib")
    import matplotlib.axes

    run = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--timesteps", "256", "--out", str(run), "--quiet", *TINY]) == 0  # 2 rows
    bom = tmp_path / "bom"
    bom.mkdir()
    (bom / "progress.csv").write_bytes(b"\xef\xbb\xbf" + (run / "progress.csv").read_bytes())
    drawn = []
    real = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda self, *a, **k: drawn.append(a) or real(self, *a, **k))
    assert main(["plot", str(bom), "--x", "iteration", "--y", "loss", "-o", str(tmp_path / "b.png")]) == 0
    assert [list(a[0]) for a in drawn] == [[1.0, 2.0]]
    capsys.readouterr()
    for name, text in (("foreign", "iter,mean_return\n1,2.0\n"), ("headless", "1,64,0.1\n2,128,0.2\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "progress.csv").write_text(text)
        assert main(["plot", str(tmp_path / name), "-o", str(tmp_path / "f.png")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"minippo: error: {tmp_path / name / 'progress.csv'} does not have minippo's "
                              "progress.csv columns (its header: "), err
    assert not (tmp_path / "f.png").exists()
    assert main(["plot", str(run), "--y", "return", "-o", str(tmp_path / "f.png")]) == 2
    assert capsys.readouterr().err == (f"minippo: error: --y 'return' is not a progress.csv column; use one of "
                                       f"{', '.join(CSV_COLUMNS)}\n")
    (tmp_path / "long").mkdir()  # one line of 5 MB: read whole before the csv module's field limit refused it
    (tmp_path / "long" / "progress.csv").write_bytes((run / "progress.csv").read_bytes() + b"\x00" * 5_000_000)
    assert main(["plot", str(tmp_path / "long"), "-o", str(tmp_path / "f.png")]) == 2
    assert f"{tmp_path / 'long' / 'progress.csv'}: cannot read it: {tmp_path / 'long' / 'progress.csv'}, line 4: " \
        "longer than 65536 characters" in capsys.readouterr().err
    old = tmp_path / "old"  # a run's log without the time column (as before minippo logged it)
    old.mkdir()
    with open(run / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    with open(old / "progress.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[c for c in rows[0] if c != "time"])
        w.writeheader()
        w.writerows([{k: v for k, v in r.items() if k != "time"} for r in rows])
    assert main(["plot", str(old), "--x", "time", "-o", str(tmp_path / "t.png")]) == 2
    assert f"column 'time' has no values in {old / 'progress.csv'} (runs from before minippo logged that " \
        "column)" in capsys.readouterr().err
    assert main(["plot", str(old), str(run), "--x", "time", "-o", str(tmp_path / "t.png")]) == 0
    assert f"skipping {str(old)!r}: its progress.csv has no time values" in capsys.readouterr().err


def test_plot_reads_a_long_log_in_bounded_memory(tmp_path):
    """read_progress held every row as a dict of strings, then lists of float objects: a 200k-row log
    (70 MB) took 565 MB of RSS, 61 MB now. 20k rows: 3.2 MB of float64 values, read a row at a time."""
    import tracemalloc

    from minippo.cli import CsvLog, read_progress

    full = CsvLog.cells({c: 0.123456789012345 for c in CSV_COLUMNS})[1:]
    with open(tmp_path / "progress.csv", "w") as f:
        f.write(",".join(CSV_COLUMNS) + "\n")
        f.writelines(",".join([str(i), *full]) + "\n" for i in range(1, 20_001))
    tracemalloc.start()
    try:
        cols = read_progress(str(tmp_path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(cols["iteration"]) == 20_000 and cols["iteration"][-1] == 20_000.0
    assert cols["loss"][0] == 0.123456789012345
    assert peak < 8_000_000, peak  # (read whole, as before: ~50 MB)


def test_plot_of_a_column_without_values_is_refused_and_a_lone_value_is_drawn(tmp_path, capsys, monkeypatch):
    """A clip run's kl column (all empty cells) and a run of one row wrote blank axes, exit code 0."""
    pytest.importorskip("matplotlib")
    import matplotlib.axes

    run = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--timesteps", "384", "--out", str(run), "--quiet", *TINY]) == 0  # 3 rows
    capsys.readouterr()
    assert main(["plot", str(run), "--y", "kl", "-o", str(tmp_path / "k.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"column 'kl' has no values in {run / 'progress.csv'} (kl and beta are " \
        "logged by kl_penalty runs" in err, err
    assert not (tmp_path / "k.png").exists()
    one = tmp_path / "one"  # its first row only
    one.mkdir()
    with open(run / "progress.csv") as f:
        (one / "progress.csv").write_text("".join(f.readlines()[:2]))
    with open(run / "progress.csv") as f:  # kl filled in on row 2 only: beside the other run, skipped
        rows = list(csv.DictReader(f))
    drawn = []
    real = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda self, *a, **k: drawn.append(a) or real(self, *a, **k))
    assert main(["plot", str(one), str(run), "-o", str(tmp_path / "c.png"), "--y", "loss"]) == 0
    assert (tmp_path / "c.png").exists()
    x1, y1 = float(rows[0]["timesteps"]), float(rows[0]["loss"])
    assert [(list(a[0]), list(a[1])) for a in drawn] == [
        ([x1], [y1]), ([x1], [y1]),  # the one-row run: its line (nothing drawn), then its dot
        ([float(r["timesteps"]) for r in rows], [float(r["loss"]) for r in rows])]  # a line: no dot
    gaps = tmp_path / "gaps"
    gaps.mkdir()
    with open(gaps / "progress.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows([{**r, "kl": "0.5" if i == 1 else ""} for i, r in enumerate(rows)])
    assert main(["plot", str(run), str(gaps), "--y", "kl", "-o", str(tmp_path / "g.png")]) == 0
    assert f"skipping {str(run)!r}: its progress.csv has no kl values" in capsys.readouterr().err
    assert [list(a[1]) for a in drawn[3:]][-1] == [0.5]  # the dot of the lone value

def test_a_preset_value_that_no_longer_fits_is_named_as_the_presets(tmp_path, capsys):
    """--n-envs 3 with the CartPole preset blamed batch_size=256, which the user never set."""
    assert main(["train", "CartPole-v1", "--n-envs", "3", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "PPOConfig.batch_size=256 is invalid: must divide n_envs * n_steps = 96 " \
        "(batch_size=256 comes from the CartPole-v1 preset: change it with --set" in err, err


def test_the_library_log_goes_to_stderr_as_it_is_now(capsys):
    """The CLI's handler kept the sys.stderr of the first main() call: under pytest a closed capture
    stream ("Logging error ... I/O operation on closed file"), and anywhere a stale one."""
    import io
    import logging

    log = logging.getLogger("minippo")
    saved = log.handlers[:], log.level
    log.handlers.clear()
    try:
        old = sys.stderr
        sys.stderr = first = io.StringIO()  # the stream at the first main() call
        try:
            main(["eval", "no-such-model.npz"])  # installs the handler (and fails: no such file)
        finally:
            sys.stderr = old
        log.info("hello")
        assert capsys.readouterr().err == "minippo: hello\n" and "hello" not in first.getvalue()
    finally:
        log.handlers[:] = saved[0]
        log.setLevel(saved[1])


def test_an_env_returning_nan_is_one_line_exit_1(tmp_path, capsys):
    """The env's NaN was named (ValueError) but came out of `minippo train` as a traceback."""
    from envs_for_tests import register_probe

    register_probe("minippo-test/Probe-v0", 8, nan_at=3)
    out = tmp_path / "run"
    assert main(["train", "minippo-test/Probe-v0", "--timesteps", "64", "--n-envs", "2", "--out", str(out),
                 "--quiet", *TINY]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "minippo: error: training stopped at 4 steps: env 'minippo-test/Probe-v0' " \
        "returned a non-finite observation in sub-env(s) [0, 1] at step 4: [nan nan]; model not saved\n" in err, err
    assert not (out / "model.npz").exists()



def test_a_gradient_too_large_for_adam_is_one_line_exit_1_without_the_divergence_hint(tmp_path, capsys):
    """Session 68: with clipping off, one reward of 1e30 froze the critic (Adam's float32 second moment
    went inf) and the save at the end failed with a traceback. The step refuses it now; the CLI's line
    says what to do, without the hint for a diverged loss (a smaller learning rate would not help)."""
    from envs_for_tests import register_probe

    register_probe("minippo-test/Probe-v0", 8, reward_at=3, reward=1e30)
    out = tmp_path / "run"
    try:
        assert main(["train", "minippo-test/Probe-v0", "--timesteps", "64", "--n-envs", "2", "--out", str(out),
                     "--quiet", "--set", "max_grad_norm=0", *TINY]) == 1
    finally:
        register_probe("minippo-test/Probe-v0", 8)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.fullmatch(
        r"minippo: error: training stopped at 32 steps: iteration 1: gradient norm is \S+ \(not clipped: "
        r"max_grad_norm <= 0\), past 9\.22e\+18, .* clip the gradients \(max_grad_norm > 0\) or scale the rewards "
        r"\(norm_reward\) \(no parameter was updated with it\); model not saved\n", err), err
    assert not (out / "model.npz").exists()


def test_an_env_output_of_the_wrong_type_is_one_line_exit_1(tmp_path, capsys, monkeypatch):
    """An env's output of the wrong type or shape (here a reset that returns the observations alone) is
    named in one line, as its NaN is; it came out of `minippo train` as a traceback (session 68's review)."""
    import minippo.envs

    make = minippo.envs.make_vec_env

    class ObsOnlyReset:
        def __init__(self, venv):
            self.venv = venv

        def reset(self, **kwargs):
            return self.venv.reset(**kwargs)[0]

        def __getattr__(self, name):
            return getattr(self.venv, name)

    monkeypatch.setattr(minippo.envs, "make_vec_env", lambda *a, **k: ObsOnlyReset(make(*a, **k)))
    out = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--timesteps", "64", "--n-envs", "2", "--out", str(out), "--quiet",
                 *TINY]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.fullmatch(
        r"minippo: error: training stopped at 0 steps: env '\S+' returned ndarray from reset\(\); expected a pair "
        r"\(obs, info\); model not saved\n", err), err


def test_eval_in_an_env_returning_nan_is_one_line_exit_1(tmp_path, capsys):
    """A model evaluated in an env that returns NaN later than training went: a traceback before."""
    from envs_for_tests import register_probe

    out = tmp_path / "run"
    try:
        register_probe("minippo-test/Probe-v0", 8)
        assert main(["train", "minippo-test/Probe-v0", "--timesteps", "64", "--n-envs", "2", "--out", str(out),
                     "--quiet", *TINY]) == 0
        register_probe("minippo-test/Probe-v0", 8, nan_at=5)
        capsys.readouterr()
        assert main(["eval", str(out / "model.npz"), "--episodes", "1"]) == 1
    finally:
        register_probe("minippo-test/Probe-v0", 8)
    err = capsys.readouterr().err
    assert err == "minippo: error: evaluation stopped: env 'minippo-test/Probe-v0' returned a non-finite " \
        "observation in evaluation episode 0 at step 5: [nan nan]\n", err

@pytest.mark.parametrize("extra, epochs", [([], 1), (["--set", "n_epochs=2"], 2)])
def test_on_policy_objectives_train_one_epoch_per_rollout(tmp_path, capsys, extra, epochs):
    # the CartPole preset's 20 epochs made --objective reinforce reuse each rollout 20 times (it collapsed)
    out = tmp_path / "r"
    tiny = ["--set", "n_steps=16", "--set", "batch_size=32", "--set", "hidden=[8]"]  # TINY without n_epochs
    assert main(["train", "CartPole-v1", "--objective", "reinforce", "--timesteps", "64", "--out", str(out),
                 "--quiet", *tiny, *extra]) == 0
    with open(out / "config.json") as f:
        saved = json.load(f)
    assert saved["objective"] == "reinforce" and saved["n_epochs"] == epochs
    err = capsys.readouterr().err  # more epochs: PPO's warning, as one line of the CLI's own
    assert ("minippo: warning: objective='reinforce' with n_epochs=2: every epoch after the first reuses the "
            "rollout" in err) == (epochs == 2) and "UserWarning" not in err
    assert main(["train", "CartPole-v1", "--timesteps", "64", "--out", str(tmp_path / "c"), "--quiet", *TINY]) == 0
    with open(tmp_path / "c" / "config.json") as f:
        assert json.load(f)["n_epochs"] == 2  # TINY's, for clip: untouched


_BUILD_WARNS = """
import warnings
from minippo.cli import _build
def make():
    # what importing a SWIG-built env (Box2D's LunarLander) warns, and a warning meant for the user
    warnings.warn("builtin type SwigPyPacked has no __module__ attribute", DeprecationWarning)
    warnings.warn("n_epochs=2 reuses the rollout")
    return 7
assert _build(make) == 7
"""


@pytest.mark.parametrize("flags, shown", [([], False), (["-W", "always::DeprecationWarning"], True)])
def test_the_cli_prints_a_dependencys_deprecation_only_when_python_would(flags, shown):
    """_build printed every warning it caught as "minippo: warning: ...", so each `minippo train
    LunarLander-v3` began with three lines of SWIG DeprecationWarnings that plain Python hides."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    r = subprocess.run([sys.executable, *flags, "-c", _BUILD_WARNS], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "minippo: warning: n_epochs=2 reuses the rollout" in r.stderr, r.stderr
    assert "minippo: warning: builtin type" not in r.stderr, r.stderr  # never as minippo's own line
    assert ("DeprecationWarning: builtin type SwigPyPacked" in r.stderr) == shown, r.stderr


def test_on_policy_objective_given_by_set_also_trains_one_epoch(tmp_path):
    out = tmp_path / "r"
    tiny = ["--set", "n_steps=16", "--set", "batch_size=32", "--set", "hidden=[8]"]
    assert main(["train", "CartPole-v1", "--set", "objective=a2c", "--timesteps", "64", "--out", str(out),
                 "--quiet", *tiny]) == 0
    with open(out / "config.json") as f:
        saved = json.load(f)
    assert saved["objective"] == "a2c" and saved["n_epochs"] == 1


def test_eval_passes_its_flags_to_the_evaluation(tmp_path, monkeypatch, capsys):
    from minippo import checkpoint

    out = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--timesteps", "64", "--out", str(out), "--quiet", *TINY]) == 0
    seen = []
    real = checkpoint.evaluate_policy

    def spy(policy, env_id, n_episodes, deterministic=False, seed=0, **kw):
        seen.append((n_episodes, deterministic, seed))
        return real(policy, env_id, n_episodes, deterministic, seed=seed, **kw)

    monkeypatch.setattr(checkpoint, "evaluate_policy", spy)
    model = str(out / "model.npz")
    assert main(["eval", model, "--episodes", "2", "--deterministic", "--seed", "7"]) == 0
    assert main(["eval", model, "--episodes", "1"]) == 0
    assert main(["eval", model]) == 0
    assert seen == [(2, True, 7), (1, False, 100_000), (10, False, 100_000)]  # the last: the defaults


def test_eval_and_ppo_evaluate_give_one_model_the_same_score(tmp_path, capsys):
    """minippo eval seeded its episodes with 0, PPO.evaluate with the run's seed + 100000: the same
    model scored 25.2 in one and 22.3 in the other. Both take the run's seed + 100000 now. And eval
    played 10 episodes where PPO.evaluate plays the run's eval_episodes: both play those now."""
    from minippo import PPO

    out = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--timesteps", "64", "--seed", "3", "--out", str(out), "--quiet",
                 "--set", "eval_episodes=3", *TINY]) == 0
    capsys.readouterr()
    assert main(["eval", str(out / "model.npz"), "--deterministic", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    api = PPO.load(str(out / "model.npz")).evaluate(deterministic=True)
    assert cli["episodes"] == api["episodes"] == 3
    assert cli["mean_return"] == api["mean_return"] and cli["std_return"] == api["std_return"]


@pytest.mark.parametrize("objective", ["clip", "kl_penalty"])
def test_progress_csv_columns_are_the_rows_learn_logs(objective):
    """Every column of progress.csv is a key of learn()'s rows (and back): none silently blank."""
    from minippo import PPO, PPOConfig

    rows = []
    PPO(PPOConfig(env_id="CartPole-v1", objective=objective, n_envs=2, n_steps=16, batch_size=16, n_epochs=1,
                  hidden=(8,), total_timesteps=32)).learn(callback=rows.append)
    # blank by design: the rollout KL that adapts beta (kl_penalty only), the clip fraction (clip only)
    assert set(CSV_COLUMNS) - set(rows[0]) == ({"clipfrac"} if objective == "kl_penalty" else {"kl"})
    assert set(rows[0]) - set(CSV_COLUMNS) == {"stopped_early", "stop_kl"}  # the row's, not columns


def test_plain_bar_fills_in_proportion_and_never_past_its_width(monkeypatch):
    from minippo import cli

    err = _Tty()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setitem(sys.modules, "tqdm", None)  # no tqdm: the plain bar
    p = cli._Progress(300, 0, False)
    draws = []
    for steps in (100, 200, 300, 400):  # the last past the total the bar was given
        p({"iteration": steps // 100, "timesteps": steps, "mean_return": 1.0, "fps": 10.0})
        draws.append(err.text.rsplit("\r", 1)[1])
    p.close()
    assert [d[:32] for d in draws] == ["[" + "#" * n + " " * (30 - n) + "]" for n in (10, 20, 30, 30)]
    assert draws[-1][32:].split()[0] == "400/300"


def test_the_bar_counts_to_the_end_of_the_last_rollout(tmp_path, monkeypatch):
    """The bar's total is the steps the run will take: the budget rounded up to whole rollouts
    (n_envs x n_steps = 8 x 16 here), and on resume from where the model left off."""
    from minippo import cli

    seen = []

    class Spy(cli._Progress):
        def __init__(self, total, start, quiet):
            seen.append((total, start))
            super().__init__(total, start, quiet)

    monkeypatch.setattr(cli, "_Progress", Spy)
    out = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--timesteps", "200", "--out", str(out), "--quiet", *TINY]) == 0
    assert main(["train", "CartPole-v1", "--resume", str(out / "model.npz"), "--timesteps", "300",
                 "--out", str(out), "--quiet"]) == 0
    assert seen == [(256, 0), (384, 256)]


def test_csv_log_reads_what_it_resumes_and_starts_a_new_file_afresh(tmp_path):
    from minippo.cli import CsvLog

    path = tmp_path / "progress.csv"
    log = CsvLog(str(path))
    for i in range(1, 5):
        log({"iteration": i, "timesteps": 10 * i})
    log.close()
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644 & ~umask
    log = CsvLog(str(path), keep_through=2)  # no rows given: it reads the file itself, then drops 3 and 4
    log({"iteration": 3, "timesteps": 30})
    log.close()
    assert [(r["iteration"], r["timesteps"]) for r in _rows(path)] == [("1", "10"), ("2", "20"), ("3", "30")]
    # a checkpoint's unlogged rows: those after the last row kept are written, in order, before the new ones
    log = CsvLog(str(path), keep_through=2)
    assert log.last_iteration == 2
    log.backfill([CsvLog.cells({"iteration": i, "timesteps": 10 * i}) for i in (2, 3)])  # 2 is there already
    log({"iteration": 4, "timesteps": 40})
    with pytest.raises(ValueError, match=r"the checkpoint's unlogged row \['5'\] is not a progress.csv row"):
        log.backfill([["5"]])
    log.close()
    assert [(r["iteration"], r["timesteps"]) for r in _rows(path)] == [("1", "10"), ("2", "20"), ("3", "30"),
                                                                       ("4", "40")]

    header = ",".join(CSV_COLUMNS)
    row = "," * (len(CSV_COLUMNS) - 1)
    path.write_text(f"{header}\n1{row}\nx{row}\n")
    with pytest.raises(ValueError, match=r"progress\.csv, line 3: iteration \['x'\] is not an integer"):
        CsvLog(str(path), keep_through=1)
    path.write_text("a,b\n1,2\n")  # not minippo's columns: a resume refuses it, a new log starts afresh
    with pytest.raises(ValueError, match="does not have minippo's progress.csv columns"):
        CsvLog(str(path), keep_through=1)
    CsvLog(str(path)).close()
    assert path.read_text() == header + "\n"


def test_a_resume_reads_a_long_progress_csv_a_row_at_a_time(tmp_path):
    """A resume read the whole progress.csv into lists: a 100M-step CartPole run's 103 MB log took the
    resume's peak from 48 MB to 654 MB. Checked, trimmed and appended to now in bounded memory."""
    import tracemalloc

    import minippo.checkpoint  # noqa: F401 (imported by the rewrite: its module's memory is not the log's)
    from minippo.cli import CsvLog

    path = tmp_path / "progress.csv"
    full = CsvLog.cells({c: 0.123456789012345 for c in CSV_COLUMNS})[1:]  # every column filled, as in a run
    n = 20_000
    with open(path, "w") as f:
        f.write(",".join(CSV_COLUMNS) + "\n")
        f.writelines(",".join([str(i), *full]) + "\n" for i in range(1, n + 1))
    size = path.stat().st_size
    assert size > 5_000_000
    for keep_through, last in ((n, n), (n - 7, n - 7)):  # all kept (appended to), and 7 rows dropped (rewritten)
        tracemalloc.start()
        try:
            CsvLog.check_file(str(path))
            log = CsvLog(str(path), keep_through=keep_through)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        log({"iteration": last + 1})
        log.close()
        assert log.last_iteration == last + 1
        assert peak < 1_000_000, (keep_through, peak, size)  # ~0.3 MB of buffers; whole, the rows took ~5x the file
    rows = _rows(path)
    assert len(rows) == n - 7 + 1 and [r["iteration"] for r in rows[-3:]] == [str(n - 8), str(n - 7), str(n - 6)]
    assert rows[0]["timesteps"] == full[0]  # the kept rows as they were


def test_bench_default_and_smallest_budget(monkeypatch):
    from minippo import bench

    seen = []
    monkeypatch.setattr(bench, "train_speed", lambda steps, repeats: seen.append((steps, repeats)))
    assert main(["bench"]) == 0
    assert main(["bench", "--timesteps", "1"]) == 0
    assert main(["bench", "--timesteps", "1", "--repeats", "3"]) == 0
    assert seen == [(100_000, 1), (1, 1), (1, 3)]


def test_blas_threads_are_pinned_only_before_numpy_loads_and_never_over_a_users_choice(monkeypatch):
    from minippo import cli

    for var in cli.BLAS_THREAD_VARS:
        monkeypatch.delenv(var, raising=False)
    cli.pin_blas_threads()  # numpy is loaded already: setting them now would change nothing, so it does not
    assert not any(var in os.environ for var in cli.BLAS_THREAD_VARS)
    monkeypatch.delitem(sys.modules, "numpy")  # as in a fresh `minippo` process (put back afterwards)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    cli.pin_blas_threads()
    assert [os.environ[var] for var in cli.BLAS_THREAD_VARS] == ["1", "3", "1"]


def test_env_kwargs_the_env_fails_on_are_refused_before_the_run_folder_is_written(tmp_path, capsys):
    """Pendulum takes g="abc" when made and fails on it only when it steps: that was a traceback in the
    first rollout, leaving config.json and a header-only progress.csv that a rerun then refused."""
    out = tmp_path / "run"
    assert main(["train", "Pendulum-v1", "--timesteps", "64", "--set", 'env_kwargs={"g": "abc"}', "--out", str(out),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("minippo: error: env_kwargs={'g': 'abc'}: Pendulum-v1 made with "
                                                    "them fails on its first step: TypeError: "), err
    assert not out.exists()
    assert main(["train", "Pendulum-v1", "--timesteps", "32", "--set", 'env_kwargs={"g": 3.7}', "--out", str(out),
                 "--quiet", *TINY]) == 0  # a value it takes: trained as before
    assert json.loads((out / "config.json").read_text())["env_kwargs"] == {"g": 3.7}


def test_a_closed_stdout_ends_eval_without_a_traceback(tmp_path):
    """`minippo eval MODEL | <a reader that closed early>` raised BrokenPipeError with a traceback."""
    out = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--timesteps", "32", "--out", str(out), "--quiet", *TINY]) == 0
    for unbuffered in ("1", None):  # without PYTHONUNBUFFERED the print stays buffered to the flush at exit,
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # which failed with status 120
        if unbuffered:
            env["PYTHONUNBUFFERED"] = unbuffered
        with subprocess.Popen([sys.executable, "-m", "minippo", "eval", str(out / "model.npz"), "--episodes", "1"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
            proc.stdout.close()  # before it prints (it imports and plays an episode first)
            err = proc.stderr.read()
            assert proc.wait(timeout=120) == 141, (unbuffered, err)
        assert "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_output_to_a_full_disk_is_one_line_and_exit_1(tmp_path):
    """`minippo eval --json MODEL >/dev/full` ended in an OSError traceback (ENOSPC), raised by the print
    (unbuffered) or by main's flush (buffered); buffered, what stayed in the buffer failed again at exit."""
    out = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--timesteps", "32", "--out", str(out), "--quiet", *TINY]) == 0
    for unbuffered in ("1", None):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
        if unbuffered:
            env["PYTHONUNBUFFERED"] = unbuffered
        with open("/dev/full", "w") as full:
            proc = subprocess.run([sys.executable, "-m", "minippo", "eval", str(out / "model.npz"), "--episodes", "1",
                                   "--json"], stdout=full, stderr=subprocess.PIPE, text=True, env=env, timeout=120)
        assert proc.returncode == 1, (unbuffered, proc.stderr)
        assert proc.stderr == "minippo: error: could not write the output to stdout: [Errno 28] No space left on " \
            "device\n", (unbuffered, proc.stderr)


def test_only_stdout_s_write_errors_are_the_output_lost(tmp_path, monkeypatch, capsys):
    """A failed write to stdout is one line and exit 1; an OSError of the command's own work is still raised
    (it is not the output's), and sys.stdout is the caller's again after main returns or raises."""
    import minippo.cli as cli

    out = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--timesteps", "32", "--out", str(out), "--quiet", *TINY]) == 0
    capsys.readouterr()
    unwritable = _Unwritable()
    monkeypatch.setattr(sys, "stdout", unwritable)
    assert main(["eval", str(out / "model.npz"), "--episodes", "1"]) == 1
    assert sys.stdout is unwritable
    assert capsys.readouterr().err == "minippo: error: could not write the output to stdout: [Errno 5] " \
        "Input/output error\n"
    monkeypatch.undo()

    def disk_error(args):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(cli, "cmd_eval", disk_error)
    stdout = sys.stdout
    with pytest.raises(OSError):
        main(["eval", "x.npz"])
    assert sys.stdout is stdout


def test_text_an_ascii_stdout_cannot_hold_is_escaped(tmp_path, monkeypatch):
    """`minippo eval` of a model whose env id is not ASCII, with PYTHONIOENCODING=ascii (or a C locale's
    stdout), raised UnicodeEncodeError with a traceback after playing its episodes."""
    import io

    import gymnasium as gym

    gym.register("minippo-test/Würfel-v0", entry_point="gymnasium.envs.classic_control:CartPoleEnv",
                 max_episode_steps=50)
    try:
        out = tmp_path / "run"
        assert main(["train", "minippo-test/Würfel-v0", "--timesteps", "32", "--n-envs", "2", "--out", str(out),
                     "--quiet", *TINY]) == 0
        stdout = io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors="strict")
        monkeypatch.setattr(sys, "stdout", stdout)
        assert main(["eval", str(out / "model.npz"), "--episodes", "1"]) == 0
        stdout.seek(0)
        assert stdout.read().startswith("minippo-test/W\\xfcrfel-v0: 1 episodes, return ")
    finally:
        gym.registry.pop("minippo-test/Würfel-v0", None)


def test_a_broken_pipe_that_is_not_stdout_s_is_raised(monkeypatch):
    """Only a closed stdout ends quietly with 141: a BrokenPipeError from another pipe (an async env
    whose worker died) was swallowed too, and a crashed run looked like a closed reader."""
    import minippo.cli as cli

    def dead_worker(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "cmd_eval", dead_worker)
    with pytest.raises(BrokenPipeError):
        main(["eval", "x.npz"])


def test_every_argument_of_every_command_has_help():
    import argparse

    from minippo.cli import build_parser

    parser = build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(commands.choices) == {"train", "eval", "plot", "bench"}
    for name, sub in commands.choices.items():
        bare = [a.dest for a in sub._actions if not a.help]
        assert not bare, f"minippo {name}: {bare} have no help"
    eval_help = " ".join(commands.choices["eval"].format_help().split())
    assert "(default: the run's eval_episodes, 10 unless set" in eval_help


def test_minippo_alone_lists_the_commands_and_version_prints_it(capsys):
    """`minippo` with no command said only 'the following arguments are required: command', naming
    none of them; there was no --version."""
    from minippo import __version__

    assert main([]) == 2
    assert capsys.readouterr().err == ("minippo: error: choose a command: train, eval, plot, bench (minippo -h lists "
                                       "them, minippo COMMAND -h its options)\n")
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"minippo {__version__}\n"
    assert main(["train"]) == 2  # a command's own missing argument is named as before
    assert "required: env_id" in capsys.readouterr().err


def test_an_out_named_like_a_model_file_is_refused(tmp_path, capsys):
    """--out newdir/model.npz made a folder of that name (the examples' --out is a file): eval of the
    path then said it was a folder. A new --out ending in .npz is refused, naming the folder to give."""
    out = tmp_path / "newdir" / "model.npz"
    assert main(["train", "CartPole-v1", "--timesteps", "64", "--out", str(out), "--quiet", *TINY]) == 2
    err = capsys.readouterr().err
    assert "names a folder, which would hold model.npz, config.json and progress.csv: give the folder, e.g. " \
        f"--out {str(tmp_path / 'newdir' / 'model')!r}" in err and not (tmp_path / "newdir").exists()
    (tmp_path / "old.npz").mkdir()  # a folder of that name already: taken as the folder it is
    assert main(["train", "CartPole-v1", "--timesteps", "64", "--out", str(tmp_path / "old.npz"), "--quiet",
                 *TINY]) == 0


def test_a_diverging_run_is_one_line_without_numpy_warnings(tmp_path, capsys):
    """learning_rate=1e30 without clipping: numpy's overflow RuntimeWarnings came before the line,
    and its hint said 'a smaller max_grad_norm' where clipping was off."""
    import warnings

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")  # every warning, as a fresh process would show it (once per line)
        assert main(["train", "CartPole-v1", "--timesteps", "256", "--out", str(tmp_path / "d"), "--quiet",
                     "--set", "learning_rate=1e30", "--set", "max_grad_norm=0", *TINY]) == 1
    assert [str(w.message) for w in shown] == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RuntimeWarning" not in err, err
    assert err.startswith("minippo: error: training stopped at ") and err.endswith(
        "model not saved (a smaller learning_rate, gradient clipping (max_grad_norm > 0; it is off) or a larger "
        "temperature may help)\n"), err


def test_plot_labels_tell_same_name_run_folders_apart(tmp_path, capsys, monkeypatch):
    """numpy/run and numba/run were both labelled "run" in the legend: each label is now as many
    trailing path components as tell the folders apart (one when that is enough)."""
    pytest.importorskip("matplotlib")
    import shutil

    import matplotlib.axes

    from minippo.cli import run_labels

    run = tmp_path / "numpy" / "run"
    assert main(["train", "CartPole-v1", "--timesteps", "96", "--n-envs", "2", "--out", str(run), "--quiet",
                 *TINY]) == 0
    shutil.copytree(run, tmp_path / "numba" / "run")
    shutil.copytree(run, tmp_path / "other")
    labels = []
    real_plot = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot",
                        lambda self, *a, **k: ("label" in k and labels.append(k["label"])) or real_plot(self, *a, **k))
    dirs = [str(run), str(tmp_path / "numba" / "run"), str(tmp_path / "other")]
    assert main(["plot", *dirs, "-o", str(tmp_path / "c.png")]) == 0
    assert labels == ["numpy/run", "numba/run", "other"]
    assert run_labels(["a/x/run", "b/x/run", "c"]) == ["a/x/run", "b/x/run", "c"]
    assert run_labels(["r", "r/", os.path.abspath("r")]) == ["r"] * 3  # one folder spelt three ways
    assert run_labels([os.sep + "q", os.path.join(os.sep, "p", "q")]) == ["q", "p/q"]
    assert run_labels([os.sep]) == ["/"]
    # a name that is not UTF-8 (bytes 72 ff): matplotlib raised TypeError drawing its lone surrogate
    assert run_labels([os.fsdecode(b"r\xff")]) == ["r\ufffd"]


@pytest.mark.parametrize(("x", "label"), [("time", "training time (s)"), ("iteration", "iteration"),
                                          ("timesteps", "timesteps")])
def test_plot_x_axis_is_timesteps_time_or_iteration(tmp_path, capsys, monkeypatch, x, label):
    """``--x time`` draws the curve against training seconds (backends or machines side by side); any
    other column is refused, naming the allowed ones, before anything is written."""
    pytest.importorskip("matplotlib")
    import matplotlib.axes

    run = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--timesteps", "96", "--n-envs", "2", "--out", str(run), "--quiet",
                 *TINY]) == 0  # 3 rows
    rows = _rows(run / "progress.csv")
    drawn, labels = [], []
    real_plot, real_label = matplotlib.axes.Axes.plot, matplotlib.axes.Axes.set_xlabel
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda self, *a, **k: drawn.append(a) or real_plot(self, *a, **k))
    monkeypatch.setattr(matplotlib.axes.Axes, "set_xlabel",
                        lambda self, text, *a, **k: labels.append(text) or real_label(self, text, *a, **k))
    assert main(["plot", str(run), "--x", x, "--y", "loss", "-o", str(tmp_path / "c.png")]) == 0
    assert [(list(a[0]), list(a[1])) for a in drawn] == [
        ([float(r[x]) for r in rows], [float(r["loss"]) for r in rows])]
    assert labels == [label]
    capsys.readouterr()
    assert main(["plot", str(run), "--x", "fps", "-o", str(tmp_path / "d.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--x 'fps' is not allowed; use one of timesteps, time, iteration" in err, err
    assert not (tmp_path / "d.png").exists()


def test_progress_says_none_yet_before_the_first_episode_ends(monkeypatch):
    """MountainCar's 200-step episodes printed "return nan" for every iteration before the first one
    ended (124 lines in a MountainCarContinuous run), which read as the divergence that stops training."""
    from minippo import cli

    for tty in (False, True):
        err = _stderr(tty)
        monkeypatch.setattr(sys, "stderr", err)
        monkeypatch.setitem(sys.modules, "tqdm", None)
        p = cli._Progress(200, 0, False)
        p({"iteration": 1, "timesteps": 100, "mean_return": float("nan"), "fps": 5000.0})
        p({"iteration": 2, "timesteps": 200, "mean_return": -200.0, "fps": 5000.0})
        p.close()
        assert "nan" not in err.text and "return none yet     5000 steps/s" in err.text, err.text
        assert "return  -200.00     5000 steps/s" in err.text, err.text


def test_the_banner_says_what_the_config_started_from_and_the_env_kwargs(numpy_backend, tmp_path, capsys):
    """An env without a preset trained on the paper's defaults without a word, and a run (or an eval) on
    a variant of an env (LunarLander-v3 with continuous=true) read exactly like one on the env itself."""
    runs = [
        (["CartPole-v1"], "CartPole-v1 (clip, the CartPole-v1 preset)"),
        (["CartPole-v1", "--preset", "none"], "CartPole-v1 (clip, the paper's defaults)"),
        (["Pendulum-v1", "--preset", "CartPole-v1"], "Pendulum-v1 (clip, the CartPole-v1 preset)"),
        (["Acrobot-v1", "--objective", "kl_penalty"],
         "Acrobot-v1 (kl_penalty, the paper's defaults: no Acrobot-v1 preset)"),
        (["Pendulum-v1", "--set", 'env_kwargs={"g": 3.7}'], 'Pendulum-v1 {"g": 3.7} (clip, the Pendulum-v1 preset)'),
    ]
    for i, (args, said) in enumerate(runs):
        out = tmp_path / str(i)
        assert main(["train", *args, "--timesteps", "32", "--n-envs", "2", "--out", str(out), *TINY]) == 0
        first = capsys.readouterr().err.splitlines()[0]
        assert first == f"minippo: training {said} for 32 steps on backend numpy; writing {out}", first

    # the kwargs in eval's line and JSON (empty for none)
    assert main(["eval", str(tmp_path / "4" / "model.npz"), "--episodes", "1"]) == 0
    assert capsys.readouterr().out.startswith('Pendulum-v1 {"g": 3.7}: 1 episodes, return ')
    assert main(["eval", str(tmp_path / "4" / "model.npz"), "--episodes", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["env_kwargs"] == {"g": 3.7}
    assert main(["eval", str(tmp_path / "0" / "model.npz"), "--episodes", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["env_kwargs"] == {}
    assert main(["eval", str(tmp_path / "0" / "model.npz"), "--episodes", "1"]) == 0
    assert capsys.readouterr().out.startswith("CartPole-v1: 1 episodes, return ")

    # a resumed run: where it starts, and the done line's steps of this run beside the total
    assert main(["train", "Pendulum-v1", "--resume", str(tmp_path / "4" / "model.npz"), "--timesteps", "64"]) == 0
    err = capsys.readouterr().err
    assert err.startswith('minippo: training Pendulum-v1 {"g": 3.7} (clip, resumed at 32 steps) for 64 steps '), err
    assert re.search(r"minippo: done, 64 steps \(32 in this run\) in \d+\.\d s; model saved to ", err), err


@pytest.mark.skipif(os.name == "nt", reason="a newline in a folder's name")
def test_status_lines_escape_a_run_folder_name_that_does_not_print(tmp_path, capsys):
    """A newline in --out's name broke the banner and the done line in two (a terminal's escape
    sequence in it would have been sent to the terminal); error messages already showed it quoted."""
    out = str(tmp_path / "a\nb")
    assert main(["train", "CartPole-v1", "--timesteps", "32", "--n-envs", "2", "--out", out, *TINY]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 3 and err.endswith(f"model saved to {os.path.join(out, 'model.npz')!r}\n"), err
    assert f"; writing {out!r}\n" in err, err
    fine = str(tmp_path / "run ü")  # a name that prints is shown as it is
    assert main(["train", "CartPole-v1", "--timesteps", "32", "--n-envs", "2", "--out", fine, *TINY]) == 0
    assert f"; writing {fine}\n" in capsys.readouterr().err


def test_plot_of_a_progress_csv_that_is_not_a_regular_file_says_so(tmp_path, capsys):
    """A folder (or a FIFO, or a link to nothing) named progress.csv was "has no progress.csv"."""
    run = tmp_path / "run"
    (run / "progress.csv").mkdir(parents=True)
    dangling = tmp_path / "dangling"
    dangling.mkdir()
    os.symlink(str(tmp_path / "nowhere.csv"), str(dangling / "progress.csv"))
    for folder in (run, dangling):
        assert main(["plot", str(folder), "-o", str(tmp_path / "c.png")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{str(folder / 'progress.csv')!r} is not a regular file" in err, err
    assert main(["plot", str(tmp_path / "nowhere"), "-o", str(tmp_path / "c.png")]) == 2
    assert "has no progress.csv (is it a minippo run folder?)" in capsys.readouterr().err


def test_plot_names_a_file_its_output_encoding_cannot_write(tmp_path):
    """`minippo plot -o 曲线.png` with a cp1252 or ASCII stdout (Windows with output redirected, a C locale)
    wrote the image, then raised UnicodeEncodeError printing its name (exit 1)."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--timesteps", "64", "--out", str(out), "--quiet", *TINY]) == 0
    png = tmp_path / "曲线.png"
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-m", "minippo", "plot", str(out), "-o", str(png)], env=env,
                          capture_output=True, timeout=300)
    assert proc.returncode == 0 and png.stat().st_size > 0, proc.stderr
    assert proc.stdout == b"" and b"minippo: wrote " in proc.stderr and b"\\u66f2\\u7ebf.png" in proc.stderr


def test_progress_csv_is_opened_binary_where_the_os_has_text_mode(tmp_path, monkeypatch):
    """On Windows os.open() without O_BINARY writes each "\\n" as "\\r\\n": progress.csv got CRLF rows,
    and a resume's rewrite (LF) left it with both. Every open of the log asks for binary (a stand-in bit
    here, as Linux has no O_BINARY)."""
    from minippo import cli

    seen = []
    real_open = os.open
    BIT = 1 << 30

    def recording_open(path, flags, *a):
        seen.append(flags)
        return real_open(path, flags & ~BIT, *a)

    monkeypatch.setattr(cli, "_O_BINARY", BIT)
    monkeypatch.setattr(os, "open", recording_open)
    path = str(tmp_path / "progress.csv")
    log = cli.CsvLog(path)  # a new file
    log({"iteration": 1})
    log.close()
    cli.CsvLog(path, keep_through=1).close()  # a resume's
    assert len(seen) == 2 and all(f & BIT for f in seen), seen


def test_train_runs_from_a_thread_other_than_the_main_one(tmp_path):
    """Signal handlers can only be set from the main thread: `main(["train", ...])` in a worker thread raised
    ValueError after the run folder was written and its lock taken (a lock and async env workers the caller's
    traceback kept alive). Off the main thread it trains without them, and leaves the main thread's alone."""
    import threading

    out = tmp_path / "run"
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    result = {}

    def run():
        try:
            result["rc"] = main(["train", "CartPole-v1", "--timesteps", "64", "--seed", "1", "--out", str(out),
                                 "--quiet", *TINY])
        except BaseException as e:  # (shown by the assert below)
            result["error"] = repr(e)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    assert result == {"rc": 0} and (out / "model.npz").exists()
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    assert main(["train", "CartPole-v1", "--resume", str(out / "model.npz"), "--timesteps", "192", "--out", str(out),
                 "--quiet"]) == 0  # the run folder's lock was released


class _Unwritable:
    """A stderr whose reader is gone or whose disk is full: every write raises."""

    def write(self, text):
        raise OSError(5, "Input/output error")

    def flush(self):
        raise OSError(5, "Input/output error")

    def isatty(self):
        return False


def test_train_finishes_and_saves_when_stderr_cannot_be_written(tmp_path, monkeypatch):
    """`minippo train ... 2>&1 | head -1`, `2>/dev/full`, a terminal that hung up: the first progress
    line raised, and the run ended with a traceback (to the dead stream), exit 1 and no model. Lines that
    cannot be written are lost; the run is not."""
    from minippo import load_policy

    out = tmp_path / "run"
    monkeypatch.setattr(sys, "stderr", _Unwritable())
    assert main(["train", "CartPole-v1", "--timesteps", "64", "--out", str(out), *TINY]) == 0
    assert load_policy(str(out / "model.npz")).env_id == "CartPole-v1" and len(_rows(out / "progress.csv")) == 1
    assert main(["train", "CartPole-v1", "--set", "nope=1", "--out", str(tmp_path / "x")]) == 2  # usage: still 2


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_stop_signal_saves_the_model_when_stderr_is_full(tmp_path):
    """The stop signal's notice ("stopping after this iteration") raised inside whatever numpy code ran
    when stderr could not be written (ENOSPC here; EIO after a hang-up): exit 1, no model. And what
    stderr's buffer still held failed again as Python flushed it at exit: exit status 120, not 130."""
    import signal
    import time

    from minippo import load_policy

    out = tmp_path / "run"
    with open("/dev/full", "w") as full:
        proc = subprocess.Popen([sys.executable, "-m", "minippo", "train", "CartPole-v1", "--timesteps", "10000000",
                                 "--out", str(out)], stderr=full, env={**{k: v for k, v in os.environ.items() if k
                                 != "PYTHONUNBUFFERED"}, "MINIPPO_BACKEND": "numpy"})  # (buffered: exit's flush)
        deadline = time.time() + 60
        while not (out / "progress.csv").exists() or len(_rows(out / "progress.csv")) < 2:
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 130
    assert load_policy(str(out / "model.npz")).env_id == "CartPole-v1"


def test_closed_standard_streams_give_no_traceback(tmp_path, monkeypatch, capsys):
    """A stream closed when Python started (`>&-`, `2>&-`) is None: a saved run ended in AttributeError
    ('NoneType' object has no attribute 'flush'), exit 1; with stderr closed train did not start
    (no isatty)."""
    out = tmp_path / "run"
    monkeypatch.setattr(sys, "stdout", None)
    monkeypatch.setattr(sys, "stderr", None)
    assert main(["train", "CartPole-v1", "--timesteps", "64", "--out", str(out), *TINY]) == 0
    assert (out / "model.npz").exists()
    monkeypatch.undo()
    capsys.readouterr()
    monkeypatch.setattr(sys, "stderr", None)
    assert main(["eval", str(out / "model.npz"), "--episodes", "1", "--json"]) == 0
    json.loads(capsys.readouterr().out)  # the document alone on stdout


@pytest.mark.parametrize("columns", [80, 40, 0])
def test_the_plain_bar_fits_the_terminal_s_width(monkeypatch, columns):
    """Without tqdm the plain bar's line (~84 characters) wrapped on an 80-column terminal, and each
    redraw then left a line behind (103 lines in 3 s). It is cut to the width (a terminal of no width,
    0 columns, gets it whole)."""
    from minippo import cli

    class SizedTty(_Tty):
        def fileno(self):
            return 2

    err = SizedTty()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setattr(os, "get_terminal_size", lambda fd: os.terminal_size((columns, 24)))
    p = cli._Progress(10_000_000, 0, False)
    p({"iteration": 1, "timesteps": 5_000_000, "mean_return": 123.45, "fps": 12345.0})
    p.close()
    line = err.text.split("\r")[1].rstrip("\n")
    assert len(line) == (columns - 1 if columns else 85) and line.startswith("[###")


def test_library_log_lines_and_warnings_lose_the_line_when_stderr_cannot_be_written(monkeypatch):
    """The CLI's handler of the library's log (auto's choice of backend, numba's first compile) and the
    warnings shown while building a trainer printed straight to stderr: an OSError out of main, or out of
    numba's compile event mid-training (no model)."""
    import logging
    import warnings

    from minippo import cli

    monkeypatch.setattr(sys, "stderr", _Unwritable())
    cli._show_library_log()
    logging.getLogger("minippo").info("MINIPPO_BACKEND=auto picked numpy")  # no OSError

    def make():
        warnings.warn("an env's own warning", UserWarning, stacklevel=1)
        return 7

    assert cli._build(make) == 7


def test_a_stop_signal_landing_inside_a_write_to_stderr_still_stops_and_saves(tmp_path, monkeypatch, capfd):
    """The handler's "stopping after this iteration" line, printed while the main thread was inside a
    print to stderr (a progress line), made the buffered stream raise "RuntimeError: reentrant call"
    out of the handler: the run died with a traceback, unsaved (seen once in CI). The line then goes
    to the file descriptor directly, and the run stops at its boundary and saves."""
    from minippo import cli

    say = cli._say

    def say_reentrant(*parts, **kwargs):  # what the buffered writer raises for a write inside a write
        if any("stopping after this iteration" in str(p) for p in parts):
            raise RuntimeError("reentrant call inside <_io.BufferedWriter name='<stderr>'>")
        return say(*parts, **kwargs)

    monkeypatch.setattr(cli, "_say", say_reentrant)
    _signal_after_iteration_1(monkeypatch, signal.SIGINT)
    out = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--timesteps", "320", "--out", str(out), "--quiet", *TINY]) == 130
    assert (out / "model.npz").exists() and len(_rows(out / "progress.csv")) == 1
    assert "stopping after this iteration" in capfd.readouterr().err
