"""The benchmark scripts measure what their labels say: the memory floor moves GAE's bytes, rows
where the numba backend runs numpy say so, start-up costs are outside the timed training, bad
arguments give a usage line. (The timings themselves are printed by the scripts, never asserted.)"""

import importlib.util
import os
import re
import subprocess
import sys
import types

import numpy as np
import pytest
import strict_cupy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script(name):
    """benchmarks/NAME.py as a module (not in sys.modules; the sys.path entry it adds is taken back)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(ROOT, "benchmarks", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path[:] = saved
    return mod


def test_memory_floor_copies_as_many_bytes_as_gae_moves():
    kb = _script("kernels")
    T, N = 128, 8
    host = [np.ones((T, N), np.float32) for _ in range(3)]
    src, dst = kb.floor_arrays(host)
    gae_bytes = 3 * T * N * 4 + 2 * T * N * 4  # reads rewards, values, dones; writes advantages, returns
    assert src.nbytes + dst.nbytes == gae_bytes and dst.shape == src.shape


def test_speedups_keep_two_decimals_below_ten():
    kb = _script("kernels")
    assert kb._times(0.2).strip() == "0.20x" and kb._times(4.9).strip() == "4.90x"
    assert kb._times(1550.4).strip() == "1550x"


def test_interleaved_rounds_alternate_and_select_each_labels_backend(numpy_backend):
    """After one calibration pass per label, the rounds run A, B, A, B ...; a label in ``on`` runs
    under its backend (``numpy out=`` under numpy), one not in it leaves the backend as it is."""
    kb = _script("kernels")
    ran = []
    calls = {label: (lambda label=label: ran.append((label, os.environ["MINIPPO_BACKEND"])))
             for label in ("loop", "numpy out=", "other")}
    times = kb.best_interleaved(calls, min_time=0.0, rounds=3, on={"numpy out=": "numpy"})
    assert set(times) == set(calls) and all(0 < t < 1 for t in times.values())
    rounds = [label for label, _ in ran[-9:]]
    assert rounds == ["loop", "numpy out=", "other"] * 3
    assert all(b == "numpy" for label, b in ran if label == "numpy out=")
    kb.use("numba" if importlib.util.find_spec("numba") else "numpy")
    before = os.environ["MINIPPO_BACKEND"]
    ran.clear()
    kb.best_interleaved({"loop": calls["loop"]}, min_time=0.0, rounds=2, on={})
    assert {b for _, b in ran} == {before}


def test_gae_rows_of_one_size_are_timed_together_with_the_loop_and_the_floor(numpy_backend, monkeypatch,
                                                                            capsys):
    """Each size's rows (Python loop, memory floor, each backend with and without out=) go to one
    interleaved timing, each callable runs under its backend, and the printed ratios are those times'."""
    pytest.importorskip("numba")
    kb = _script("kernels")
    timed = []

    def fake(calls, on=None):
        for label, f in calls.items():
            if label in on:
                kb.use(on[label])
                assert kb.backend.name == on[label]
            if label != "python loop":
                f()
            if label.endswith(" out="):  # like the floor's np.copyto(dst, src): the call alone
                assert "sync" not in f.__code__.co_varnames + f.__code__.co_names, label
        timed.append((list(calls), dict(on)))
        return {label: {"python loop": 1e-3, "memory floor": 1e-6}.get(label, 2e-6) for label in calls}

    monkeypatch.setattr(kb, "best_interleaved", fake)
    kb.bench_gae(["numpy", "numba"])
    labels = ["python loop", "memory floor", "numpy", "numpy out=", "numba", "numba out="]
    assert [c for c, _ in timed] == [labels, labels]
    assert timed[0][1] == {"numpy": "numpy", "numpy out=": "numpy", "numba": "numba", "numba out=": "numba"}
    printed = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in printed if line.startswith("    numba out=")]
    assert [r[-4:] for r in rows] == [["2.00", "us", "500x", "2.00x"]] * 2  # us, x the loop, x the floor
    heads = [line.split() for line in printed if "python loop" in line and "T=" in line]
    assert [h[-6:] for h in heads] == [["1000.0", "us", "memory", "floor", "1.00", "us"]] * 2


def test_act_rows_time_numpy_numba_and_unfused_together(numpy_backend, monkeypatch, capsys):
    """Each act row's three entries go to one interleaved timing, each under its backend; the
    unfused entry switches the fused act off for its call only (also when the call raises)."""
    pytest.importorskip("numba")
    kb = _script("kernels")
    from minippo.kernels import cpu_act

    seen = []

    def fake(calls, on=None):
        assert list(calls) == ["numpy", "numba", "numba unfused"]
        assert on == {"numpy": "numpy", "numba": "numba", "numba unfused": "numba"}
        for label, f in calls.items():
            kb.use(on[label])
            f()
            seen.append((label, cpu_act.MAX_BATCH))
        return {"numpy": 4e-5, "numba": 1e-5, "numba unfused": 3e-5}

    monkeypatch.setattr(kb, "best_interleaved", fake)
    fused = cpu_act.MAX_BATCH
    assert fused > 0
    kb.bench_act(["numpy", "numba"])
    assert seen and all(m == fused for _, m in seen)  # restored after each unfused call
    assert all(line.endswith("fused speed-up  4.00x") for line in capsys.readouterr().out.splitlines()[1:])

    class Pol:
        def act(self, obs, rng):
            seen.append(cpu_act.MAX_BATCH)
            raise ValueError("boom")

    seen.clear()
    with pytest.raises(ValueError, match="boom"):
        kb.unfused_act(Pol(), None, None)()
    assert seen == [0] and cpu_act.MAX_BATCH == fused


def test_mlp_rows_past_the_fused_batch_say_numba_runs_numpy(numpy_backend, monkeypatch, capsys):
    pytest.importorskip("numba")
    kb = _script("kernels")  # its use() sets MINIPPO_BACKEND: numpy_backend restores it afterwards
    from minippo.kernels import cpu

    assert kb._fused_max_batch([4, 64, 64, 2]) == cpu.max_batch([4, 64, 64, 2]) == 256
    assert kb._fused_max_batch([17, 256, 6]) == cpu.max_batch([17, 256, 6]) < 256  # wider nets: less
    # One net and two batch sizes, either side of the cap, with short timings.
    monkeypatch.setattr(kb, "best_interleaved", lambda calls: {n: {"numpy": 6e-6}.get(n, 2e-6) for n in calls})
    alone = []

    def kernels_alone(mlp, x, dy, t_np_fwd, t_np_both):
        alone.append((x.shape, dy.shape, t_np_fwd, t_np_both))
        return "  kernels alone line"

    monkeypatch.setattr(kb, "kernels_alone", kernels_alone)
    real_mlp = kb.MLP
    monkeypatch.setattr(kb, "MLP", lambda sizes, **kw: real_mlp([sizes[0], 4, sizes[-1]], **kw))
    monkeypatch.setattr(kb, "_fused_max_batch", lambda sizes: 8)
    kb.bench_mlp(["numpy", "numba"])
    printed = capsys.readouterr().out.splitlines()
    rows = [line for line in printed if " B=" in line]
    assert len(rows) == 10, "no MLP rows printed"
    for line in rows:
        B = int(line.split("B=")[1].split()[0])
        assert ("numba runs numpy here" in line) == (B > 8), line
        assert "numpy fwd     6.00 fwd+bwd     6.00  numba fwd     2.00" in line, line  # us per call
        assert "numba speed-up fwd  3.00x fwd+bwd  3.00x" in line, line
    # the kernels alone, at B <= 8 only, under their row, with dy of the net's output width
    assert [(x, dy) for x, dy, *_ in alone] == [((1, 4), (1, 2)), ((8, 4), (8, 2)), ((1, 17), (1, 6)),
                                                ((8, 17), (8, 6))]
    assert all((t_fwd, t_both) == (6e-6, 6e-6) for _, _, t_fwd, t_both in alone)  # numpy's times
    assert [printed[i - 1].split("B=")[1].split()[0] for i, line in enumerate(printed)
            if line == "  kernels alone line"] == ["1", "8", "1", "8"]


def test_mlp_rows_of_numba_named_without_numpy(numpy_backend, monkeypatch, capsys):
    """``kernels.py numba`` stopped at its first kernels-alone line (KeyError 'numpy', the ratio's
    other side): the kernels alone are timed and printed without the numpy ratio."""
    pytest.importorskip("numba")
    kb = _script("kernels")
    monkeypatch.setattr(kb, "best_interleaved", lambda calls: {n: 2e-6 for n in calls})
    monkeypatch.setattr(kb, "best", lambda f: (f(), 1e-6)[1])
    real_mlp = kb.MLP
    monkeypatch.setattr(kb, "MLP", lambda sizes, **kw: real_mlp([sizes[0], 4, sizes[-1]], **kw))
    kb.bench_mlp(["numba"])
    printed = capsys.readouterr().out.splitlines()
    alone = [line for line in printed if "kernels alone" in line]
    assert len(alone) == 4 and len([line for line in printed if " B=" in line]) == 10, printed
    assert all(line.endswith("numba kernels alone fwd   1.00 fwd+bwd   1.00  (best of 5, timed after the row)")
               for line in alone), alone
    assert not any("speed-up" in line for line in printed[1:])  # (the heading names it)


def test_train_speed_times_learn_alone_after_an_untimed_start_up(monkeypatch, capsys):
    """The clock's readings bracket the timed learn() and nothing else of training: the start-up
    trainer (numba compiles, imports) and building the env come before the clock starts."""
    pytest.importorskip("gymnasium")
    import time

    from minippo import bench, ppo

    events = []

    class Spy(ppo.PPO):
        def __init__(self, config, *a, **kw):
            events.append(f"init {config.total_timesteps}")
            super().__init__(config, *a, **kw)

        def learn(self, *a, **kw):
            events.append(f"learn {self.config.total_timesteps}")
            return super().learn(*a, **kw)

    def clock():
        events.append("clock")
        return time.perf_counter()

    compiled = [1.0]

    def compiles_in_start_up(self, *a, **kw):  # as numba would, on a first run
        if self.config.total_timesteps == 1:
            compiled[0] += 40.0
        return learn(self, *a, **kw)

    learn = Spy.learn
    monkeypatch.setattr(Spy, "learn", compiles_in_start_up)
    monkeypatch.setattr(ppo, "PPO", Spy)
    monkeypatch.setattr(bench, "time", types.SimpleNamespace(perf_counter=clock, process_time=time.process_time))
    from minippo import backend

    monkeypatch.setattr(backend, "numba_compile_seconds", lambda this_thread=False: compiled[0])
    res = bench.train_speed(512)
    assert events[:8] == ["clock", "init 1", "learn 1", "clock",  # the start-up run, timed apart
                          "init 512", "clock", "learn 512", "clock"]  # the env built, then learn alone
    assert res["startup_s"] > 0 and res["train_s"] > 0
    assert res["startup_compile_s"] == 40.0
    out = capsys.readouterr().out
    assert "one rollout and update; 40.00 s of it numba compiling kernels)" in out
    assert "best of" not in out and "rounds" not in out  # one round: no spread to show


def test_train_speed_repeats_alternate_rounds_and_report_the_best_of_each(monkeypatch, capsys):
    """repeats=2: training, env, training, env (fresh trainers of one seed); each side's best time
    is the one reported and in the ratio, and the slowest is kept beside it."""
    pytest.importorskip("gymnasium")
    from minippo import bench, ppo

    now, events, steps = [100.0], [], []  # the clocks do not start at 0: a reading added, not subtracted, shows
    learn_s, env_s = iter([1.0, 3.0, 2.0]), iter([0.4, 0.6])  # start-up, round 1, round 2

    class Spy(ppo.PPO):
        def learn(self, *a, **kw):
            res = super().learn(*a, **kw)
            events.append(f"learn {self.config.total_timesteps}")
            steps.append(self.num_timesteps)
            now[0] += next(learn_s)
            return res

    def stepping(cfg, steps):
        events.append(f"env {steps}")
        return next(env_s)

    monkeypatch.setattr(ppo, "PPO", Spy)
    monkeypatch.setattr(bench, "env_stepping", stepping)
    # process CPU time runs at half the wall clock's rate, from another origin
    monkeypatch.setattr(bench, "time", types.SimpleNamespace(perf_counter=lambda: now[0],
                                                             process_time=lambda: 7.0 + now[0] / 2))
    from minippo import backend

    # compiled before: none in the start-up
    monkeypatch.setattr(backend, "numba_compile_seconds", lambda this_thread=False: 5.0)
    res = bench.train_speed(512, repeats=2)
    assert events == ["learn 1", "learn 512", "env 512", "learn 512", "env 512"]
    assert (res["startup_s"], res["train_s"], res["train_max_s"]) == (1.0, 2.0, 3.0)
    assert res["train_cpu_s"] == 1.0 and res["startup_compile_s"] == 0.0  # the best round's CPU seconds
    assert res["train_steps_per_s"] == steps[-1] / 2.0
    assert (res["env_only_s"], res["env_only_max_s"]) == (0.4, 0.6)
    assert res["ratio_train_over_env"] == pytest.approx(5.0)
    out = capsys.readouterr().out
    assert "best of 2 alternating rounds" in out and "rounds 2.00-3.00 s" in out and "rounds 0.40-0.60 s" in out
    assert "numba compiling" not in out  # no compiles in the start-up: not mentioned
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match=rf"repeats must be an integer >= 1, got {bad!r}"):
            bench.train_speed(512, repeats=bad)


def test_env_stepping_steps_ceil_of_timesteps_over_envs_times_cycling_64_actions(monkeypatch):
    """env_stepping(config, T) makes config's vector env, steps it ceil(T / n_envs) times with 64
    pre-drawn actions in turn, and returns the seconds of the stepping alone."""
    from minippo import bench, envs
    from minippo.config import PPOConfig

    made = []

    class FakeVec:
        def __init__(self, *args):
            self.args, self.stepped, self.closed = args, [], False
            draws = iter(range(1000))
            self.action_space = types.SimpleNamespace(seed=lambda s: None, sample=lambda: next(draws))
            made.append(self)

        def reset(self, seed=None):
            self.seed = seed

        def step(self, action):
            self.stepped.append(action)
            clock[0] += 0.25

        def close(self):
            self.closed = True

    clock = [100.0]
    monkeypatch.setattr(envs, "make_vec_env", FakeVec)
    monkeypatch.setattr(bench, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    cfg = PPOConfig(n_envs=4)
    assert bench.env_stepping(cfg, 10) == 0.75  # 3 steps of 4 envs cover 10 timesteps
    assert made[0].stepped == [0, 1, 2] and made[0].closed and made[0].seed == 0
    assert made[0].args[:2] == (cfg.env_id, 4)
    bench.env_stepping(cfg, 4 * 66)  # exactly 66 steps; the 65th takes the first action again
    assert made[1].stepped == list(range(64)) + [0, 1]


def test_train_speed_script_reads_steps_as_python_ints(monkeypatch):
    ts = _script("train_speed")
    seen = []
    monkeypatch.setattr(ts, "train_speed", lambda steps, repeats, **kw: seen.append((steps, repeats)))
    monkeypatch.setattr(ts, "check_env_id", lambda env_id: None)  # gymnasium: the mocked timing needs none
    assert ts.main(["100_000"]) == 0 and ts.main([]) == 0 and ts.main(["512"]) == 0 and ts.main(["64", "2"]) == 0
    # each: the preset's env, then the same_step one
    assert seen == [(100_000, 3)] * 4 + [(512, 3)] * 2 + [(64, 2)] * 2


@pytest.mark.parametrize("argv", [["abc"], ["0"], ["-5"], ["1", "0"], ["1", "2", "3"], ["1.5"], ["²"], ["--help", "5"]])
def test_train_speed_script_refuses_bad_steps(argv):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "train_speed.py"), *argv],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "steps and repeats must be integers >= 1" in proc.stderr


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_train_speed_script_help_prints_its_usage(flag):
    """``--help`` was a usage error (exit 2): it prints the docstring, usage line included, and exits 0."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "train_speed.py"), flag],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == ""
    assert "python benchmarks/train_speed.py [steps [repeats]]" in proc.stdout and "best of" in proc.stdout


def _run_without(module, script, *argv, env=None):
    """benchmarks/SCRIPT run with ``import MODULE`` failing (None in sys.modules), as where it is not
    installed (``module`` "" blocks nothing)."""
    code = ("import runpy, sys\n"
            "if sys.argv[1]: sys.modules[sys.argv[1]] = None\n"
            "sys.argv = sys.argv[2:]\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    return subprocess.run([sys.executable, "-c", code, module, os.path.join(ROOT, "benchmarks", script), *argv],
                          capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("argv", [[str(2**62 + 1)], ["99999999999999999999", "1"]])
def test_train_speed_script_refuses_more_steps_than_minippo_counts(argv):
    """Steps past minippo's limit (PPOConfig refuses more than 2**62) are the usage line, not a traceback."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "train_speed.py"), *argv],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"usage: python benchmarks/train_speed.py [steps [repeats]]: steps must be <= 2**62 "
                           f"(minippo counts steps in int64), got {argv[0]}\n"), proc.stderr


@pytest.mark.parametrize(("blocked", "backend", "message"), [
    ("", "bogus", "MINIPPO_BACKEND='bogus' is not a backend; allowed values: numpy, numba, cupy, auto"),
    ("cupy", "cupy", "MINIPPO_BACKEND=cupy but cupy is not installed"),
    ("gymnasium", "numpy", "gymnasium is needed for environments"),
])
def test_train_speed_script_says_a_bad_backend_or_a_missing_gymnasium_in_one_line(blocked, backend, message):
    """As ``minippo bench`` and the examples: MINIPPO_BACKEND resolved, gymnasium found, before any
    timing; each failure one line (with minippo's pip hint), exit 2, where it was a traceback."""
    proc = _run_without(blocked, "train_speed.py", "64", "1", env={**os.environ, "MINIPPO_BACKEND": backend})
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"train_speed.py: error: {message}"), proc.stderr
    hint = {"cupy": "pip install 'minippo[cuda]'", "gymnasium": "pip install 'minippo[gym]'"}.get(blocked, "")
    assert hint in proc.stderr


@pytest.mark.parametrize(("script", "backend", "message"), [
    ("cupy_profile.py", None, "cupy_profile.py: error: MINIPPO_BACKEND=cupy but cupy is not installed"),
    ("cupy_profile.py", "bogus", "cupy_profile.py: error: MINIPPO_BACKEND='bogus' is not a backend"),
    ("gpu_gae_chunk.py", None, "gpu_gae_chunk.py: error: this benchmark needs cupy and a CUDA device, but cupy is "
                               "not installed"),
])
def test_gpu_scripts_say_cupy_is_missing_in_one_line(script, backend, message):
    """Without cupy the GPU benchmarks say so in one line with the pip extra (minippo[cuda]), exit 2,
    where cupy_profile's backend.resolved() and gpu_gae_chunk's ``import cupy`` gave a traceback."""
    env = {k: v for k, v in os.environ.items() if k != "MINIPPO_BACKEND"}
    if backend is not None:
        env["MINIPPO_BACKEND"] = backend
    proc = _run_without("cupy", script, env=env)
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(message), proc.stderr
    assert backend == "bogus" or "pip install 'minippo[cuda]'" in proc.stderr


def test_cupy_rows_run_on_the_strict_standin(numpy_backend, monkeypatch, capsys):
    """The cupy branches, which no GPU-less machine times: under the strict CuPy stand-in every
    cupy callable runs (device inputs, device out=, a device floor and a synchronise), the GAE rows
    take their ratio to the device floor, the MLP and act rows give numpy/cupy."""
    from minippo.kernels import gpu

    cp = strict_cupy.make()
    synced = []
    cp.cuda.Device = lambda *a: types.SimpleNamespace(synchronize=lambda: synced.append(1))
    monkeypatch.setitem(sys.modules, "cupy", cp)
    monkeypatch.setattr(gpu, "_modules", {})
    kb = _script("kernels")
    ran, uploaded = [], []

    def fake(calls, on=None):
        on = {name: name for name in calls} if on is None else on
        for label, f in calls.items():
            if label in on:
                kb.use(on[label])
            if label != "python loop":
                before, uploads = len(synced), cp.STATS["upload"]
                f()
                ran.append((label, kb.backend.name, len(synced) - before))
                uploaded.append((label, cp.STATS["upload"] > uploads))
        return {label: {"python loop": 1e-3, "memory floor": 1e-6, "device floor": 4e-6}.get(
            label, 8e-6 if label.startswith("cupy") else 2e-6) for label in calls}

    monkeypatch.setattr(kb, "best_interleaved", fake)
    monkeypatch.setattr(kb, "kernels_alone", lambda *a: "")
    real_mlp = kb.MLP
    monkeypatch.setattr(kb, "MLP", lambda sizes, **kw: real_mlp([sizes[0], 4, sizes[-1]], **kw))
    backends = [name for name in ("numpy", "cupy") if kb.use(name)]
    assert backends == ["numpy", "cupy"]
    kb.bench_gae(backends)
    gae = capsys.readouterr().out.splitlines()
    # (label, backend it ran under, synchronises): each cupy call ends in one, numpy's in none
    assert {(label, name if "floor" not in label else "-", n) for label, name, n in ran} == {
        ("memory floor", "-", 0), ("numpy", "numpy", 0), ("numpy out=", "numpy", 0),
        ("cupy", "cupy", 1), ("cupy out=", "cupy", 1), ("cupy kernel", "cupy", 1), ("device floor", "-", 1)}
    assert len(ran) == 14
    assert sum(line.strip().startswith("cupy out=") for line in gae) == 2
    assert sum(line.strip().startswith("cupy kernel") for line in gae) == 2
    assert sum(line.endswith("device floor     4.00 us") for line in gae) == 2
    for line in gae:
        if line.strip().startswith("cupy"):
            assert line.split()[-6:] == ["8.00", "us", "125x", "2.00x", "(device", "floor)"], line
        elif line.strip().startswith("numpy"):
            assert line.endswith("500x          2.00x"), line
    kb.bench_mlp(backends)
    rows = [line for line in capsys.readouterr().out.splitlines() if " B=" in line]
    assert len(rows) == 10 and all("cupy speed-up fwd  0.25x fwd+bwd  0.25x" in r for r in rows)
    assert {name for _, name, _ in ran[14:]} == {"numpy", "cupy"} and len(ran) == 14 + 2 * 2 * 10
    ran.clear()
    uploaded.clear()
    launches = []
    real_kernel = gpu._kernel
    monkeypatch.setattr(gpu, "_kernel", lambda *a: launches.append(a[0]) or real_kernel(*a))
    kb.bench_act(backends)
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [r.split("B=")[1].split()[0] for r in rows] == ["1", "8", "64", "256", "2048"] * 3
    assert [r.split("B=")[0].strip() for r in rows[::5]] == ["4-64-64 Discrete(2)", "17-64-64 Gaussian(6)",
                                                             "4-64-64 shared trunk"]
    assert all(r.endswith("numpy    2.00  cupy    8.00  cupy arrays    8.00  cupy speed-up  0.25x  "
                          "act.cu speed-up  1.00x") for r in rows), rows
    assert [(label, name) for label, name, _ in ran] == [("numpy", "numpy"), ("cupy", "cupy"),
                                                         ("cupy arrays", "cupy")] * 15
    # each cupy act sends its observations up; through act.cu (one launch, the shared trunk's too) or
    # the array operations (none)
    assert uploaded == [("numpy", False), ("cupy", True), ("cupy arrays", True)] * 15
    assert launches == ["act_forward_f32"] * 15
    ran.clear()
    launches.clear()
    kb.bench_adam(backends)
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [r.split()[:2] for r in rows] == [["4-64-64", "Discrete(2)"], ["17-64-64", "Gaussian(6)"]], rows
    assert all(r.endswith("numpy    2.00  cupy kernels    8.00  cupy arrays    8.00  kernels speed-up  1.00x")
               for r in rows), rows
    assert " 12 arrays" in rows[0] and " 13 arrays" in rows[1]  # (the Gaussian's log-std)
    # each cupy call synchronised; only the kernels' one launched the two kernels
    assert [(label, name, n) for label, name, n in ran] == [
        ("numpy", "numpy", 0), ("cupy kernels", "cupy", 1), ("cupy arrays", "cupy", 1)] * 2
    assert launches == ["adam_gather_f32", "adam_update_f32"] * 2


def test_kernels_script_times_the_named_backends_only(numpy_backend, monkeypatch, capsys):
    """``benchmarks/kernels.py numpy cupy`` (the GPU check's call: numba would compile for minutes
    there) times those alone, in the script's order; one named that cannot load is left out and makes
    the exit status 1 (the GPU check's bench step fails rather than pass without cupy rows); an
    unknown name is a usage error naming the allowed ones."""
    kb = _script("kernels")
    seen = []
    for table in ("bench_gae", "bench_mlp", "bench_act", "bench_adam"):
        monkeypatch.setattr(kb, table, lambda backends, table=table: seen.append((table, backends)))
    assert kb.main(["numpy"]) == 0
    assert seen == [(t, ["numpy"]) for t in ("bench_gae", "bench_mlp", "bench_act", "bench_adam")]
    seen.clear()
    # no cupy here: it says why, is left out, and the exit status says a named backend is missing
    assert kb.main(["cupy", "numpy"]) == 1
    printed = capsys.readouterr().out
    assert seen[0] == ("bench_gae", ["numpy"]) and "cupy: unavailable" in printed
    assert printed.endswith("named but unavailable, so not measured: cupy\n")
    seen.clear()
    # only unavailable ones named: no table is begun (it printed row labels without figures)
    assert kb.main(["cupy"]) == 1 and seen == []
    printed = capsys.readouterr().out
    assert "cupy: unavailable" in printed and "GAE float32" not in printed and "MLP tanh" not in printed
    with pytest.raises(SystemExit) as e:
        kb.main(["numpy", "bogus"])
    assert e.value.code == 2
    assert "invalid choice: 'bogus' (choose from 'numpy', 'numba', 'cupy')" in capsys.readouterr().err
    seen.clear()
    monkeypatch.setattr(kb, "use", lambda name: True)  # as if all three loaded
    monkeypatch.setattr(sys, "argv", ["kernels.py"])
    assert kb.main() == 0  # the plain ``python benchmarks/kernels.py``: all three (Python 3.11 refused it)
    assert seen == [(t, ["numpy", "numba", "cupy"]) for t in ("bench_gae", "bench_mlp", "bench_act", "bench_adam")]


GPU_TEST_FILES = ("tests/test_kernels_gpu.py", "tests/test_kernels_gpu_adam.py", "tests/test_kernels_gpu_act.py",
                  "tests/test_cupy_standin.py")  # gpu_check.sh's tests step


def _gpu_marked_tests() -> set:
    """The ids of the gpu-marked, not slow, tests of those files, as pytest collects them: the
    test_real_device_* functions, and the [device] cases of test_cupy_standin.py's cupy_backend."""
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                        "-m", "gpu and not slow", *GPU_TEST_FILES], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return {line for line in r.stdout.splitlines() if "::" in line}


def test_gpu_check_script_runs_its_steps_and_counts_the_failed_ones(tmp_path):
    """benchmarks/gpu_check.sh, the one prepared command for a machine with a GPU: on a pretend one
    (the stand-in as cupy) its device and tests steps pass, with the real-device tests run and not
    skipped; a relative OUTDIR is the caller's; without cupy, or without gymnasium (which half of the
    gpu tests need), every step that needs it fails (a skipped gpu test is no pass there), the last
    line counts them and the exit status is 1; an unknown step or no OUTDIR is a usage error (2).
    (Its bench and learning steps run the benchmark and test_learning.py, tested on their own.)"""
    script = os.path.join(ROOT, "benchmarks", "gpu_check.sh")
    out = tmp_path / "out"
    # Only the tests with "device" in their ids, the gpu-marked ones among them: on the stand-in those
    # run nowhere else, while the rest of those files run in this suite itself (with them, through the
    # script, this test took 35 s warm and 78 s from an empty numba cache; ~22 s warm without).
    env = {**strict_cupy.pretend_gpu_machine(tmp_path), "PYTEST_ADDOPTS": "-k device"}
    proc = subprocess.run(["bash", script, str(out), "device", "tests"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "devices 1" in (out / "device.log").read_text()
    tests_log = (out / "tests.log").read_text()
    assert " passed" in tests_log and "failed" not in tests_log, tests_log
    assert "needs cupy and a CUDA device" not in tests_log  # the gpu tests ran (on the stand-in)
    passed = set(re.findall(r"^(tests/\S+::\S+) PASSED", tests_log, flags=re.M))  # verbose: each as it ends
    gpu = _gpu_marked_tests()
    assert len(gpu) >= 40 and gpu <= passed, sorted(gpu - passed)
    assert "test_real_device_matches_numpy[float32] PASSED" in tests_log
    assert "gymnasium " in (out / "device.log").read_text()
    assert "== 0 step(s) failed" in proc.stdout
    # Without gymnasium half of the gpu tests would skip: the tests step fails, as do both learning
    # steps (one log each), and the device step says so; the bench step needs no gymnasium.
    env = strict_cupy.pretend_gpu_machine(tmp_path / "nogym")
    hidden = tmp_path / "nogym" / "py" / "gymnasium"
    hidden.mkdir()
    (hidden / "__init__.py").write_text("raise ImportError('gymnasium hidden by the test')\n")
    proc = subprocess.run(["bash", script, str(out), "device", "tests", "learning"], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1 and "== 4 step(s) failed" in proc.stdout, proc.stdout
    for log in ("device", "tests", "learning-CartPole", "learning-Pendulum"):
        assert "gymnasium hidden by the test" in (out / f"{log}.log").read_text(), log
    proc = subprocess.run(["bash", script, "rel", "device"], capture_output=True, text=True,
                          env=strict_cupy.pretend_gpu_machine(tmp_path / "again"), cwd=tmp_path, timeout=120)
    assert proc.returncode == 0 and (tmp_path / "rel" / "device.log").exists()  # OUTDIR from the caller's cwd
    no_cupy = {**os.environ, "PYTHONPATH": str(tmp_path / "nothing")}
    if importlib.util.find_spec("cupy") is None:
        proc = subprocess.run(["bash", script, str(out), "tests", "bench"], capture_output=True, text=True,
                              env=no_cupy, timeout=120)
        assert proc.returncode == 1 and "== 2 step(s) failed" in proc.stdout
        assert "No module named 'cupy'" in (out / "bench.log").read_text()
    for argv in ([], [str(out), "benchmark"], [""]):
        proc = subprocess.run(["bash", script, *argv], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and proc.stdout == "", argv
        assert proc.stderr.startswith("usage: bash benchmarks/gpu_check.sh OUTDIR [STEP ...]"), argv


def test_cupy_profile_script_runs_on_the_pretend_gpu_machine(tmp_path):
    """benchmarks/cupy_profile.py (gpu_check.sh's profile step) on the stand-in as cupy: act's time and
    profile, then a short CartPole run's, with the work on the "device" (the stand-in counts its
    uploads); it refuses bad STEPS (2) and a backend that is not cupy (1)."""
    pytest.importorskip("gymnasium")
    script = os.path.join(ROOT, "benchmarks", "cupy_profile.py")
    env = strict_cupy.pretend_gpu_machine(tmp_path)
    proc = subprocess.run([sys.executable, script, "512"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "ActorCritic.act, CartPole policy, B = 8: " in out
    assert "PPO.learn, CartPole preset, 512 env steps: " in out and "steps/s (profiled)" in out
    assert out.count("Ordered by: internal time") == 2 and out.count("Ordered by: cumulative time") == 1
    assert "(collect_rollout)" in out and "(forward)" in out
    stats = proc.stderr.rsplit("strict_cupy stand-in: ", 1)[1]
    assert int(stats.split("'upload': ")[1].split(",")[0]) > 1000  # each act and rollout step uploads
    for argv in (["0"], ["x"], ["1", "2"]):
        proc = subprocess.run([sys.executable, script, *argv], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=120)
        assert proc.returncode == 2 and proc.stderr.startswith("usage: python benchmarks/cupy_profile.py"), argv
    proc = subprocess.run([sys.executable, script, "512"], capture_output=True, text=True,
                          env={**env, "MINIPPO_BACKEND": "numpy"}, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1 and "the backend in use is numpy, not cupy" in proc.stderr
