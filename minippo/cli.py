"""Command line: ``minippo train | eval | plot | bench`` (also ``python -m minippo``).

Bad arguments print one line ``minippo: error: ...`` to stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import csv
import errno
import importlib
import io
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from array import array
from collections.abc import Callable, Iterator, Sequence
from typing import Any, BinaryIO, NoReturn

CSV_COLUMNS = (
    "iteration", "timesteps", "time", "fps", "mean_return", "mean_length", "loss", "policy_loss",
    "value_loss", "entropy", "approx_kl", "clipfrac", "explained_variance", "kl", "beta", "lr",
    "clip_eps", "ent_coef", "grad_norm", "n_updates",
)


PLOT_X = {"timesteps": "timesteps", "time": "training time (s)", "iteration": "iteration"}  # --x: its label


_NOT_READ = object()  # (a file's id not read yet)


class UsageError(Exception):
    """A bad argument: reported as one line, exit code 2."""


COMMANDS = ("train", "eval", "plot", "bench")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one clear line instead of usage + message
        if self.prog == "minippo" and "required: command" in message:  # `minippo` alone named no command
            message = f"choose a command: {', '.join(COMMANDS)} (minippo -h lists them, minippo COMMAND -h its options)"
        raise UsageError(message)


def _integer(text: str, whole_floats: bool) -> int | None:
    """``text`` as an int; with ``whole_floats`` also a whole number written as a float (``1e6``, as
    ``PPOConfig.total_timesteps`` and ``learn()`` take it); None for anything else."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text) if whole_floats else math.nan
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value == int(value) else None


def int_arg(low: int, high: int | None = None, high_text: str | None = None, *,
            whole_floats: bool = False) -> Callable[[str], int]:
    """An argparse ``type`` for scripts (the examples use it): the text as an integer in [low, high]
    (no upper bound when ``high`` is None), else an ArgumentTypeError naming the allowed values, which
    argparse prints after the option's name ("argument --seeds: must be an integer >= 1, got 'two'").
    ``high_text`` writes the bound and why, e.g. "2**62 (minippo counts steps in int64)";
    ``whole_floats`` takes ``1e6`` too."""
    allowed = f"an integer >= {low}" + (" (1e6 too)" if whole_floats else "")

    def parse(text: str) -> int:
        n = _integer(text, whole_floats)
        if n is None:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}")
        if n < low:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {n}")
        if high is not None and n > high:
            raise argparse.ArgumentTypeError(f"must be <= {high_text or high}, got {n}")
        return n

    return parse


def timesteps_arg(text: str) -> int:
    """An argparse ``type`` for a step budget (the examples' ``--timesteps``): an integer from 1 to
    2**62, ``config.MAX_TIMESTEPS`` (imported when parsing: numpy loads after :func:`pin_blas_threads`),
    or a whole number written as a float (``1e6``)."""
    from minippo.config import MAX_TIMESTEPS

    return int_arg(1, MAX_TIMESTEPS, "2**62 (minippo counts steps in int64)", whole_floats=True)(text)


def _steps(text: str) -> int:
    """``minippo train``'s and ``bench``'s ``--timesteps`` type: an integer or ``1e6``; its range is
    checked later, by PPOConfig for train (whose errors say more: the preset, the steps a resumed model
    has run) and by ``cmd_bench``."""
    n = _integer(text, whole_floats=True)
    if n is None:
        raise argparse.ArgumentTypeError(f"must be an integer (1e6 too), got {text!r}")
    return n


def build_parser() -> argparse.ArgumentParser:
    """The ``minippo`` argument parser (its errors raise :class:`UsageError`)."""
    from minippo import __version__

    p = _Parser(prog="minippo", description="PPO from scratch in NumPy")
    p.add_argument("--version", action="version", version=f"minippo {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a policy on a gymnasium env")
    t.add_argument("env_id", help="gymnasium id, e.g. CartPole-v1")
    t.add_argument("--preset", default=None,
                   help="hyperparameter preset (default: the env's preset if there is one; 'none' for paper defaults)")
    t.add_argument("--timesteps", type=_steps, default=None,
                   help="total env steps (default: the preset's total_timesteps, 1000000 with --preset none; "
                        "with --resume, the new total, more than the steps already run)")
    t.add_argument("--seed", type=int, default=None, help="seed of the run (default 0)")
    t.add_argument("--n-envs", type=int, default=None,
                   help="envs stepped side by side (default: the preset's n_envs, 1 with --preset none)")
    t.add_argument("--objective", choices=("clip", "kl_penalty", "surrogate", "a2c", "reinforce"), default=None,
                   help="the rung of the ladder to train (default clip); a2c and reinforce are on-policy and take "
                        "one epoch per rollout (n_epochs=1) unless --set n_epochs=... says otherwise")
    t.add_argument("--out", default=None,
                   help="run folder (default runs/ENV_ID-sSEED; with --resume, the resumed model.npz's folder)")
    t.add_argument("--resume", default=None, metavar="MODEL",
                   help="continue training from this model.npz (the run's progress.csv is continued)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any PPOConfig field")
    t.add_argument("--overwrite", action="store_true",
                   help="start afresh in a run folder that already holds model.npz, config.json or progress.csv")
    t.add_argument("--quiet", action="store_true", help="no progress output")

    e = sub.add_parser("eval", help="evaluate a saved model")
    e.add_argument("model", help="a model.npz written by minippo train")
    e.add_argument("--episodes", type=int, default=None,
                   help="episodes to play (default: the run's eval_episodes, 10 unless set, as PPO.evaluate plays)")
    e.add_argument("--deterministic", action="store_true", help="take the mode instead of sampling")
    e.add_argument("--seed", type=int, default=None,
                   help="seed of the evaluation: episode i resets with seed + i; actions are sampled from it "
                        "(default: the run's seed + 100000, as PPO.evaluate takes it)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--import", dest="imports", action="append", metavar="MODULE",
                   help="import MODULE first (repeatable): a model trained on a 'module:EnvId' id imports "
                        "nothing by itself, since a model file may come from elsewhere")

    pl = sub.add_parser("plot", help="plot learning curves from run folders")
    pl.add_argument("dirs", nargs="+", metavar="DIR", help="run folders holding progress.csv")
    pl.add_argument("-o", "--output", default="learning_curves.png",
                    help="image to write, in any format matplotlib writes, named by its suffix: .png, .pdf, .svg, ... "
                         "(default learning_curves.png)")
    pl.add_argument("--y", default="mean_return",
                    help=f"column to plot, one of {', '.join(CSV_COLUMNS)} (default mean_return)")
    pl.add_argument("--x", default="timesteps", help=f"its axis, one of {', '.join(PLOT_X)} (default timesteps; "
                    "time: training seconds, to compare backends or machines)")

    b = sub.add_parser("bench", help="training speed vs env stepping alone (CartPole-v1 preset)")
    b.add_argument("--timesteps", type=_steps, default=100_000, help="env steps to train for (default 100000)")
    b.add_argument("--repeats", type=int, default=1,
                   help="alternating rounds of training and env stepping; the best of each is reported (default 1)")
    return p


# ------------------------------------------------------------------ train
def _preset_name(args: argparse.Namespace) -> str:
    """The preset ``train`` starts from: ``--preset``, else the env's own if there is one ("module:EnvId"
    takes EnvId's), else ``"none"`` (the paper's defaults)."""
    from minippo.config import PRESETS

    if args.preset is not None:
        return args.preset
    registered = args.env_id.rpartition(":")[2]
    return registered if registered in PRESETS else "none"


def _settings(args: argparse.Namespace) -> str:
    """What the banner says a new run's config started from."""
    name = _preset_name(args)
    if name.lower() != "none":
        return f"the {name} preset"
    if args.preset is None:  # said, as the env's own preset would be used if it had one
        return f"the paper's defaults: no {args.env_id} preset"
    return "the paper's defaults"


def _kwargs_shown(env_kwargs: dict[str, Any]) -> str:
    """`` {"continuous": true}`` after an env id, so that a run on a variant of an env reads as one;
    empty for no env_kwargs."""
    return f" {json.dumps(env_kwargs, sort_keys=True)}" if env_kwargs else ""


def _make_config(args: argparse.Namespace) -> Any:
    from minippo.config import ON_POLICY, PRESETS, PPOConfig, preset

    name = _preset_name(args)
    if name.lower() == "none":
        cfg = PPOConfig(env_id=args.env_id)
    else:
        if name not in PRESETS:
            raise UsageError(f"unknown preset {name!r}; available: {', '.join(sorted(PRESETS))}, none")
        cfg = preset(name, env_id=args.env_id)
    changes = {
        k: v for k, v in (("total_timesteps", args.timesteps), ("seed", args.seed),
                          ("n_envs", args.n_envs), ("objective", args.objective)) if v is not None
    }
    sets = dict(cfg.parse_assignment(a) for a in args.set)
    both = sorted(set(changes) & set(sets))
    flags = {"total_timesteps": "--timesteps", "seed": "--seed", "n_envs": "--n-envs", "objective": "--objective"}
    if both:
        raise UsageError(" and ".join(f"{flags[k]} and --set {k}=" for k in both)
                         + " both given: set each field once")
    if (sets.get("objective", changes.get("objective", cfg.objective)) in ON_POLICY and "n_epochs" not in sets
            and cfg.n_epochs != 1):
        changes["n_epochs"] = 1  # the textbook algorithm: a preset's epochs would reuse the rollout (see PPO)
    if "env_id" in sets and sets["env_id"] != args.env_id:
        raise UsageError(f"--set env_id={sets['env_id']} differs from ENV_ID {args.env_id}: the env is "
                         "given once, as ENV_ID")
    try:
        return cfg.replace(**changes, **sets) if changes or sets else cfg
    except ValueError as e:
        # a value given by a flag: name the flag (the message names the config field)
        flagged = [k for k in changes if k in flags and f"PPOConfig.{k}=" in str(e)]
        if flagged:
            raise UsageError(f"{flags[flagged[0]]} {changes[flagged[0]]}: {e}") from e
        # a field the user never set may be the preset's: say so, and how to change it
        given = set(changes) | set(sets)
        named = [k for k in PRESETS.get(name, {}) if k not in given and k != "env_id" and f"{k}=" in str(e)]
        if not named:
            raise
        values = ", ".join(f"{k}={getattr(cfg, k)}" for k in named)
        raise UsageError(f"{e} ({values} comes from the {name} preset: change it with --set, or start "
                         "from the paper's defaults with --preset none)") from e


def _usable_tqdm() -> Any:
    """The tqdm class, or None if tqdm is missing, lacks ``set_postfix_str`` (< 4.16) or is older
    than 4.21 on Python 3.12+ (its first bar raises there: it matched the text of ``max()``'s error,
    which 3.12 changed)."""
    try:
        import tqdm as module
    except ImportError:
        return None
    cls = getattr(module, "tqdm", None)
    if cls is None or not hasattr(cls, "set_postfix_str"):
        return None
    try:
        version = tuple(int(p) for p in str(module.__version__).split(".")[:2])
    except (AttributeError, ValueError):
        version = None  # unknown: try it, __init__ falls back if it raises
    if version is not None and version < (4, 21) and sys.version_info >= (3, 12):
        return None
    return cls


def _compile_seconds() -> float:
    from minippo import backend

    return backend.numba_compile_seconds(this_thread=True)


def _unsized(stream: Any) -> bool:
    """True for a terminal that reports 0 columns or 0 rows (a pseudo-terminal never sized, or given a
    width only, as ``script`` or a CI runner makes): tqdm's bar, sized to it, drew nothing there (at 0
    rows tqdm hides its bar's line). Unknown (no fileno): False."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return size.columns == 0 or size.lines == 0


def _path_shown(path: str) -> str:
    """A path as a status line shows it: as it is, or quoted with escapes where it holds a character
    that does not print (a newline or a terminal's control sequence in a folder's name)."""
    return path if path.isprintable() else repr(path)


def _say(*parts: Any, **kwargs: Any) -> None:
    """``print`` to stderr, where a stderr that cannot be written (its reader gone, a full disk, EIO
    after the terminal hung up) loses the line, not the run: training goes on and saves."""
    try:
        print(*parts, file=sys.stderr, **kwargs)
    except (OSError, ValueError):  # (ValueError: the stream closed)
        _stderr_lost()


def _stderr_lost() -> None:
    """After a write to stderr failed: its file descriptor goes to os.devnull, so that what its buffer
    still holds (and every later line) goes nowhere, instead of failing again as Python flushes it at
    exit, which turns the exit status into 120 (a SIGTERM's 130, a finished run's 0)."""
    _to_devnull(sys.stderr)


def _to_devnull(stream: Any) -> None:
    """Point ``stream``'s file descriptor at os.devnull (nothing for a stream without one)."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(fd, stream.fileno())
        finally:
            os.close(fd)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):  # (a stream without a descriptor)
        pass


class _Progress:
    """tqdm bar on a terminal (a plain text bar if tqdm is missing, older than 4.16 (no
    ``set_postfix_str``) or fails to start, as tqdm 4.16-4.20 do on Python 3.12+, or the terminal
    reports no width or no height); one line per iteration otherwise."""

    active: _Progress | None = None  # the bar on the terminal now: log lines go through its write()

    def __init__(self, total: int, start: int, quiet: bool) -> None:
        self.quiet, self.total, self.bar = quiet, total, None
        self.tty = bool(getattr(sys.stderr, "isatty", lambda: False)())
        self.drawn = False  # the plain bar is on the terminal's last line
        self.compiled = _compile_seconds()  # numba's compile seconds already counted by the bar
        if quiet or not self.tty:
            return
        _Progress.active = self
        tqdm = _usable_tqdm()
        if tqdm is not None and not _unsized(sys.stderr):
            try:
                # the postfix's steps/s is the bar's one rate: tqdm's own, shown at the end, is steps
                # over wall time, numba's one-off compiles included (_leave_out_compiles)
                self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True,
                                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]")
            except Exception:  # a progress bar never stops training: the plain bar instead
                self.bar = None
        self.last = start

    def __call__(self, row: dict[str, Any]) -> None:
        if self.quiet:
            return
        try:
            self._show(row)
        except (OSError, ValueError):  # stderr cannot be written: a progress bar never stops training
            self.quiet, self.bar = True, None
            _stderr_lost()

    def _show(self, row: dict[str, Any]) -> None:
        ret, fps = row["mean_return"], row["fps"]
        # NaN until the first episode ends (MountainCar's 200-step episodes: many iterations): said in
        # words, where "nan" read as the divergence that stops training
        shown = "none yet" if math.isnan(ret) else f"{ret:8.2f}"
        msg = f"return {shown}  {fps:7.0f} steps/s"
        if self.bar is not None:
            self._leave_out_compiles()
            # drawn by update(), within tqdm's limit of ~10 redraws a second (refreshing here redrew the
            # bar at every iteration: 4,217 times in a 1M-step run)
            self.bar.set_postfix_str(msg, refresh=False)
            self.bar.update(row["timesteps"] - self.last)
            self.last = row["timesteps"]
        elif self.tty:
            frac = min(row["timesteps"] / self.total, 1.0)
            bar = "#" * int(30 * frac)
            line = f"[{bar:<30}] {row['timesteps']:>9}/{self.total}  {msg}"
            try:  # within the terminal's width: a longer line wraps, and each redraw then adds a line
                columns = os.get_terminal_size(sys.stderr.fileno()).columns
            except (AttributeError, OSError, ValueError):
                columns = 0
            if columns > 1:  # (0: a terminal of no width, where the line is drawn whole)
                line = line[:columns - 1]
            print(f"\r{line}", end="", file=sys.stderr, flush=True)
            self.drawn = True
        else:
            print(f"iter {row['iteration']:5d}  steps {row['timesteps']:9d}  {msg}", file=sys.stderr, flush=True)

    def _leave_out_compiles(self) -> None:
        """tqdm's ETA comes from its rate between updates: numba's one-off compiles in this
        iteration would hold that down for dozens of iterations (CartPole's preset, 45 s of compiles in session 21:
        6 steps/s at iteration 2, 2,700 of 5,100 at iteration 40). Its clock of the last update moves
        on by those seconds, so that the ETA leaves them out as ``fps`` does; the elapsed time stays
        wall time."""
        compiled = _compile_seconds()
        if compiled > self.compiled:
            try:
                self.bar.last_print_t += compiled - self.compiled
            except (AttributeError, TypeError):  # a tqdm without it: its rate then counts them
                pass
            self.compiled = compiled

    def write(self, line: str) -> None:
        """Print a line (a log message) above the bar, which then goes on below it."""
        if self.bar is not None:
            try:
                type(self.bar).write(line, file=sys.stderr)  # tqdm clears its bar, prints, redraws
                return
            except Exception:
                pass
        _say(("\n" if self.drawn else "") + line, flush=True)
        self.drawn = False

    def close(self) -> None:
        if _Progress.active is self:
            _Progress.active = None
        if self.bar is not None:
            self.bar.close()
        elif self.tty and not self.quiet:
            _say()


_MAX_LINE = 1 << 16
"""Longest progress.csv line read (a row is ~300 characters): past it, a file is not a log, and the
line would be read whole first (one line of 1 GB of NUL bytes took 2 GB)."""


def _lines(f: Any, path: str) -> Iterator[str]:
    """The lines of the text file ``f``, each read with a bound: ValueError for a longer one."""
    n = 0
    while line := f.readline(_MAX_LINE + 1):
        n += 1
        if len(line) > _MAX_LINE:
            raise ValueError(f"{path}, line {n}: longer than {_MAX_LINE} characters, not a progress.csv line")
        yield line


def _ends_line(path: str) -> bool:
    """Whether the file at ``path`` ends with a newline (or is empty)."""
    with open(path, "rb") as f:
        if f.seek(0, os.SEEK_END) == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


# What `minippo train` stops on (after the iteration, saving): Windows has no SIGTERM that arrives, and
# Ctrl-Break there (SIGBREAK) killed the run without a save
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGBREAK") if hasattr(signal, name))

# Windows opens an os.open()ed file in text mode unless told (each "\n" written as "\r\n"); 0 elsewhere
_O_BINARY = getattr(os, "O_BINARY", 0)


class CsvLog:
    """progress.csv, one row per iteration; each row goes out in a single O_APPEND write, so a crash
    never leaves a partial line.

    ``keep_through=None`` starts a new file. A resumed run passes the iteration its checkpoint was
    saved at: the rows logged after it (by a run that stopped without saving: a crash, a kill, a
    second Ctrl-C) are dropped first, rewriting the file atomically, so the iterations the resumed
    run logs again appear once. A file with other columns raises ValueError (appending would mix
    two layouts).
    """

    def __init__(self, path: str, keep_through: int | None = None) -> None:
        self.last_iteration: int | None = None  # the last row's, None before the first
        self.dropped = 0  # rows after keep_through, dropped
        if keep_through is not None and os.path.exists(path) and os.path.getsize(path):
            for row in self.rows(path):
                if int(row[0]) <= keep_through:
                    self.last_iteration = int(row[0])
                else:
                    self.dropped += 1
            # rewritten also where the file does not end its last line (edited elsewhere): the next row
            # appended would join that line
            if self.dropped or not _ends_line(path):
                self._keep_rows(path, keep_through)
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | _O_BINARY)
            return
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC | _O_BINARY, 0o644)
        self._write(CSV_COLUMNS)

    @staticmethod
    def rows(path: str) -> Iterator[list[str]]:
        """The rows of an existing progress.csv after its header, read one at a time (a 100M-step run's
        log is ~100 MB; read whole, a resume held ~6x that), or ValueError naming the line if its header
        is not minippo's, or a row is not one it writes: an iteration (an integer above the row before's),
        then numbers or empty cells, one per column. Nothing for an empty file."""
        from minippo.config import _shown

        with open(path, newline="", encoding="utf-8-sig") as f:  # (-sig: saved again by a spreadsheet)
            reader = csv.reader(_lines(f, path))
            try:
                header = next(reader, None)
                if header is not None and tuple(header) != CSV_COLUMNS:
                    raise ValueError(f"{path} does not have minippo's progress.csv columns; move it away to "
                                     "resume here")
                last = 0
                for n, row in enumerate(reader, start=2):
                    try:
                        iteration = int(row[0])
                    except (ValueError, IndexError):
                        raise ValueError(f"{path}, line {n}: iteration {_shown(row[:1], 80)} is not an "
                                         "integer") from None
                    if len(row) != len(CSV_COLUMNS) or iteration <= last or not all(map(_number_cell, row)):
                        raise ValueError(f"{path}, line {n}: {_shown(row, 160)} is not a row minippo writes (after "
                                         f"iteration {last}: a later one, then numbers or empty cells, "
                                         f"{len(CSV_COLUMNS)} in all); move the file away to resume here")
                    last = iteration
                    yield row
            except (csv.Error, UnicodeDecodeError) as e:  # a huge field, NUL bytes after a power loss (<= 3.10)
                raise ValueError(f"{path} cannot be read as CSV ({e}); move it away to resume here") from None

    @classmethod
    def check_file(cls, path: str) -> None:
        """ValueError as :meth:`rows` gives it for a progress.csv a resume cannot continue (nothing for a
        missing one), checked before anything is written."""
        if os.path.exists(path):
            for _ in cls.rows(path):
                pass

    @classmethod
    def _keep_rows(cls, path: str, keep_through: int) -> None:
        """Rewrite ``path`` (atomically) with the rows up to iteration ``keep_through``, a block at a time."""
        from minippo.checkpoint import atomic_write

        def write(f: BinaryIO) -> None:
            buf = io.StringIO()
            out = csv.writer(buf, lineterminator="\n")
            out.writerow(CSV_COLUMNS)
            for row in cls.rows(path):
                if int(row[0]) <= keep_through:
                    out.writerow(row)
                    if buf.tell() >= 1 << 14:
                        f.write(buf.getvalue().encode())
                        buf.seek(0)
                        buf.truncate()
            f.write(buf.getvalue().encode())

        atomic_write(path, write)

    def _write(self, values: Any) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(values)
        data = buf.getvalue().encode()
        end = os.lseek(self.fd, 0, os.SEEK_END)  # where this row starts (the file is O_APPEND)
        try:
            n = os.write(self.fd, data)
            if n != len(data):  # a full disk can take part of a row before it fails
                raise OSError(errno.EIO, f"short write: {n} of {len(data)} bytes of a row (is the disk full?)")
        except OSError:
            try:
                os.ftruncate(self.fd, end)  # no partial row is left behind
            except OSError:
                pass
            raise

    @staticmethod
    def cells(row: dict[str, Any]) -> list[str]:
        """One iteration's row as written (missing columns and NaN are empty cells)."""
        return ["" if isinstance(row.get(c), float) and math.isnan(row[c]) else _fmt(row.get(c, ""))
                for c in CSV_COLUMNS]

    def __call__(self, row: dict[str, Any]) -> None:
        """Append one iteration's row (:meth:`cells`)."""
        cells = self.cells(row)
        self._write(cells)
        self.last_iteration = int(cells[0]) if cells[0].isdigit() else self.last_iteration

    @staticmethod
    def check_unlogged(rows: Sequence[list[str]], iteration: int | None = None) -> None:
        """ValueError naming the first of a checkpoint's ``unlogged_rows`` that is not a progress.csv row:
        one cell per column, an iteration (ASCII digits) first, at most ``iteration`` (the checkpoint's:
        the rows it holds came before its save), every other cell a number or empty."""
        for cells in rows:
            if len(cells) != len(CSV_COLUMNS) or not (cells[0].isascii() and cells[0].isdigit()) \
                    or (iteration is not None and int(cells[0]) > iteration) or not all(map(_number_cell, cells)):
                raise ValueError(f"the checkpoint's unlogged row {cells[:2]} is not a progress.csv row "
                                 f"({len(CSV_COLUMNS)} cells: an iteration no later than the checkpoint's, then "
                                 "numbers or empty cells)")

    def backfill(self, rows: Sequence[list[str]]) -> None:
        """Append the rows a stopped run computed but could not write (a checkpoint's ``unlogged_rows``:
        :meth:`cells` lists), those after the last row here; ValueError for one that is not a row."""
        self.check_unlogged(rows)
        for cells in rows:
            if self.last_iteration is None or int(cells[0]) > self.last_iteration:
                self._write(cells)
                self.last_iteration = int(cells[0])

    def close(self) -> None:
        """Close the file (every row is already written)."""
        os.close(self.fd)


def _number_cell(cell: str) -> bool:
    """Whether a progress.csv cell is what :meth:`CsvLog.cells` writes: empty, or a number (ASCII)."""
    if not cell:
        return True
    try:
        float(cell)
    except ValueError:
        return False
    # (float() reads more than CsvLog.cells writes: other digits ('١' is 1), spaces, '1_000')
    return cell.isascii() and "_" not in cell and cell.strip() == cell


def _fmt(v: Any) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


def _write_json_atomic(path: str, obj: Any) -> None:
    from minippo.checkpoint import atomic_write

    text = json.dumps(obj, indent=2, sort_keys=True)
    atomic_write(path, lambda f: f.write(text.encode()))


# the categories Python hides by default (outside __main__): a library's deprecation notice is for its
# developers, not a line of the user's run
_HIDDEN_BY_DEFAULT = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def _build(make: Callable[[], Any]) -> Any:
    """``make()`` (a trainer), with the warnings it gives printed as the CLI's own lines, not Python's.
    Those of the categories Python hides by default (a dependency's DeprecationWarning, say) go back to
    Python's filters instead, so they stay hidden unless asked for (``-W``, ``PYTHONWARNINGS``)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = make()
    for w in caught:
        if issubclass(w.category, _HIDDEN_BY_DEFAULT):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        else:
            _say(f"minippo: warning: {w.message}")
    return out


def _step_with_env_kwargs(cfg: Any) -> None:
    """With ``env_kwargs`` given, one reset and one step of a scratch env made with them, before the run
    folder is written: an env takes most values unchecked and fails on them only when it steps
    (Pendulum's ``g="abc"``), which was a traceback in the first rollout, leaving a run folder
    without a model that a rerun then refused. UsageError naming them if it raises."""
    if not cfg.env_kwargs:
        return
    import gymnasium as gym

    from minippo.envs import MAKING_ENVS

    env = None
    try:
        with MAKING_ENVS:  # (one make at a time: see MAKING_ENVS)
            env = gym.make(cfg.env_id, **cfg.env_kwargs)
        env.action_space.seed(cfg.seed)
        env.reset(seed=cfg.seed)
        env.step(env.action_space.sample())
    except Exception as e:  # noqa: BLE001 (whatever the env raises on these values)
        raise UsageError(f"env_kwargs={cfg.env_kwargs!r}: {cfg.env_id} made with them fails on its first step: "
                         f"{type(e).__name__}: {e}") from e
    finally:
        if env is not None:
            env.close()


def _check_backend() -> None:
    """Resolve MINIPPO_BACKEND now, so that a bad value is one line (ImportError: see :func:`main`)."""
    from minippo import backend

    try:
        backend.resolved()
    except (ValueError, RuntimeError) as e:
        raise UsageError(str(e)) from e


# train's flags that choose the config: a resumed run keeps the saved one
_CONFIG_FLAGS = (("--preset", "preset"), ("--seed", "seed"), ("--n-envs", "n_envs"),
                 ("--objective", "objective"), ("--set", "set"), ("--overwrite", "overwrite"))


def _given(value: Any) -> bool:
    """Whether a flag's parsed value was given: its default is None, False (--overwrite) or [] (--set).
    (Compared by identity: ``0 in (None, [], False)`` is True, and --seed 0 was taken as not given.)"""
    return not (value is None or value is False or (isinstance(value, list) and not value))


def _is_run_folder(folder: str, env_id: str) -> bool:
    """True when ``folder`` holds a minippo run of ``env_id``: a config.json that is a JSON object
    with that env_id (what ``minippo train`` writes beside model.npz)."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):  # (a FIFO would be waited on for ever)
        return False
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError, RecursionError):  # (RecursionError: JSON nested thousands deep)
        return False
    return isinstance(saved, dict) and saved.get("env_id") == env_id


def _open_run_folder(args: argparse.Namespace, cfg: Any, iteration: int,
                     unlogged: Sequence[list[str]] = ()) -> tuple[str, str, CsvLog, Any]:
    """The run folder made, claimed and checked before training: (folder, model.npz path, progress log,
    the folder's lock: close it when the run ends; see :func:`_lock_run_folder`), config.json written.
    Resuming, the default folder is the resumed model's own run folder (it must be one: model.npz
    beside the run's config.json; anywhere else --out is required, so that no file of the user's is
    overwritten), and progress.csv keeps the rows up to the checkpoint's ``iteration``. Anything that
    cannot be written is a UsageError now, not a lost model after training, and nothing is written
    when something is refused (but the folder and its lock file, once the checks of the folder's
    files have passed). ``unlogged``: the resumed checkpoint's rows that its run could not write,
    written first (:meth:`CsvLog.backfill`)."""
    if args.out is not None:
        out = args.out
    elif args.resume:
        out = os.path.dirname(args.resume) or "."
        if os.path.basename(args.resume) != "model.npz" or not _is_run_folder(out, cfg.env_id):
            raise UsageError(f"--resume {args.resume!r} is not the model.npz of a minippo run folder (beside "
                             "the run's config.json): give --out, the folder to write model.npz, config.json "
                             "and progress.csv in")
    else:
        out = os.path.join("runs", f"{cfg.env_id.rpartition(':')[2]}-s{cfg.seed}")  # no module: part in a path
    model_path = os.path.join(out, "model.npz")
    where = f"--out {out!r}" if args.out is not None else f"run folder {out!r}"
    # resuming continues the resumed model's own folder (the model is that folder's model.npz); a fresh
    # run, or a resumed one sent elsewhere (another file beside the run there included), must not mix
    # with a run already there
    own = bool(args.resume) and os.path.realpath(model_path) == os.path.realpath(args.resume)

    def files_held() -> list[str]:
        return [] if own else [n for n in ("model.npz", "config.json", "progress.csv")
                               if os.path.isfile(os.path.join(out, n)) or os.path.islink(os.path.join(out, n))]

    held = files_held()
    if held and args.resume:
        in_place = ("resume into the model's own folder (leave out --out), or "
                    if os.path.basename(args.resume) == "model.npz"
                    and _is_run_folder(os.path.dirname(args.resume) or ".", cfg.env_id) else "")
        raise UsageError(f"{where} already holds {', '.join(held)} (a run): {in_place}resume into an --out "
                         "without these files (move them away first)")
    if held and not args.overwrite:
        # a fresh run would replace config.json and progress.csv but keep an older model.npz until its
        # first save: stopped before that, the folder mixes two runs (and a file of the user's is lost)
        hint = f"continue it with --resume {os.path.join(out, 'model.npz')}, " if "model.npz" in held else ""
        raise UsageError(f"{where} already holds {', '.join(held)}: {hint}choose another --out, "
                         "or pass --overwrite to start afresh there")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"{where} is a file, not a folder: choose a folder for model.npz, config.json and "
                         "progress.csv")
    if os.path.islink(out) and not os.path.exists(out):  # (os.makedirs: "[Errno 17] File exists")
        raise UsageError(f"{where} is a link to nothing ({os.readlink(out)!r}): make the folder it names, or "
                         "choose another --out")
    if out.lower().endswith(".npz") and not os.path.isdir(out):  # (a model file's name, as the examples take)
        raise UsageError(f"{where} names a folder, which would hold model.npz, config.json and progress.csv: "
                         f"give the folder, e.g. --out {os.path.splitext(out)[0]!r}")
    try:
        os.makedirs(out, exist_ok=True)
        for name in ("model.npz", "config.json", "progress.csv"):
            if os.path.isdir(os.path.join(out, name)):
                raise IsADirectoryError(f"{os.path.join(out, name)!r} is a folder")
            # a FIFO (read and written, the run waited for ever), a device (/dev/zero was read without end),
            # a link to nothing
            if os.path.lexists(os.path.join(out, name)) and not os.path.isfile(os.path.join(out, name)):
                raise OSError(f"{os.path.join(out, name)!r} is not a regular file (a FIFO, a device or a link to "
                              "nothing): move it away")
    except OSError as e:
        raise UsageError(f"{where}: cannot write the run there: {e}") from e
    if own and os.path.lexists(os.path.join(out, "config.json")) and not _is_run_folder(out, cfg.env_id):
        # (as a resume without --out finds its folder: a config.json of another run, or a link to a file of
        # the user's elsewhere, is not rewritten)
        raise UsageError(f"{where}: its config.json is not this run's (a JSON object with env_id {cfg.env_id!r}): "
                         "move it away, or resume into another --out")
    lock = _lock_run_folder(out, where)  # then the checks again: a run that started beside this one and
    try:  # wrote its files before this lock was taken is seen now (both passed the checks above)
        if files_held() != held:
            raise UsageError(f"{where}: another minippo train started there at the same time: choose another "
                             "--out")
        return out, model_path, _write_run_folder(args, cfg, iteration, unlogged, out, held, own, where), lock
    except BaseException:
        lock.close()
        raise


def _write_run_folder(args: argparse.Namespace, cfg: Any, iteration: int, unlogged: Sequence[list[str]], out: str,
                      held: list[str], own: bool, where: str) -> CsvLog:
    """The writes of :func:`_open_run_folder`, under the run folder's lock: the old run's files removed
    (--overwrite), the resumed files checked, config.json written, progress.csv opened."""
    from minippo.checkpoint import replaced_mode

    csv_path = os.path.join(out, "progress.csv")
    try:
        if held:  # --overwrite: the old model goes first, so no file is left from the old run
            for name in held:
                os.remove(os.path.join(out, name))
        if own:  # resuming in place rewrites these (model.npz by the save at the end): a write-protected
            for name in ("model.npz", "config.json", "progress.csv"):  # one is refused now, before
                replaced_mode(os.path.join(out, name))  # anything is written or trained
    except (OSError, ValueError) as e:
        raise UsageError(f"{where}: cannot write the run there: {e}") from e
    if args.resume:  # a foreign or unreadable progress.csv, or a bad row to write, refused before any write
        try:
            CsvLog.check_unlogged(unlogged, iteration)
        except ValueError as e:
            raise UsageError(f"--resume {args.resume}: {e}") from e
        try:
            CsvLog.check_file(csv_path)
        except OSError as e:
            raise UsageError(f"{where}: cannot read the run's progress.csv: {e}") from e
        except ValueError as e:
            raise UsageError(f"{where}: cannot continue the run's progress.csv: {e}") from e
    try:
        _write_json_atomic(os.path.join(out, "config.json"), cfg.to_dict())
        log = CsvLog(csv_path, keep_through=iteration if args.resume else None)
        log.backfill(unlogged)
    except (OSError, ValueError) as e:
        raise UsageError(f"{where}: cannot write the run there: {e}") from e
    if log.dropped:  # (a model older than the log: say so, rather than losing rows without a word)
        _say(f"minippo: dropped {log.dropped} row{'s' * (log.dropped > 1)} of progress.csv logged after iteration "
             f"{iteration}, where the model was saved")
    return log


LOCK_NAME = ".minippo.lock"
"""The file in a run folder that a training run holds an exclusive lock on (the file stays: removing
one that another run holds would let a third run take a lock of its own)."""


class _NoLock:
    """Where the platform has no file locks: the checks of :func:`_open_run_folder` alone."""

    def close(self) -> None:
        pass


def _lock_run_folder(out: str, where: str) -> Any:
    """Claim run folder ``out`` for this process: an exclusive lock on its ``.minippo.lock``, held until
    the returned file is closed (the OS drops it when the process ends, however it ends). Two runs
    started at once on one folder both passed the checks for a run's files, then wrote into it
    together (interleaved progress.csv rows, one run's config.json beside the other's model): the
    second to lock is refused here. flock on POSIX, msvcrt.locking on Windows; where neither exists, or
    the file system takes no locks, the checks of the folder's files alone (as before the lock)."""
    try:
        import fcntl
    except ImportError:
        fcntl = None
    try:
        import msvcrt
    except ImportError:
        msvcrt = None
    if fcntl is None and msvcrt is None:
        return _NoLock()
    path = os.path.join(out, LOCK_NAME)
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isfile(path)):  # minippo makes a plain file:
        # a link was followed (a dangling one made its target, outside the folder), a FIFO "not seekable"
        raise UsageError(f"{where}: {path!r} is not the plain file minippo locks (a link, a FIFO or a device): "
                         "move it away")
    try:
        f = open(path, "a+b")  # noqa: SIM115 (held open for the whole run)
    except OSError as e:
        raise UsageError(f"{where}: cannot write the run there: {e}") from e
    try:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            f.seek(0)
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
    except OSError as e:
        f.close()
        if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK, errno.EDEADLK):
            return _NoLock()  # a file system without locks (ENOLCK on some NFS mounts): the checks alone
        raise UsageError(f"{where} is in use by another minippo train (it holds {LOCK_NAME}): wait for that "
                         "run to end, or choose another --out") from None
    return f


def _small_net_on_gpu(cfg: Any, name: str) -> str:
    """A line for ``train`` when the cupy backend trains networks no wider than 64 (the presets'),
    which the H200 run of session 46 trained many times slower than numba on a CPU (docs/kernels.md,
    "The first real device"): each device operation costs ~12-20 us whatever its size, and an acting
    step is ~30 of them. Empty otherwise."""
    if name != "cupy" or max(cfg.hidden, default=0) > 64:
        return ""
    return (f"minippo: hidden={list(cfg.hidden)} is small for a GPU: each CuPy operation costs ~12-20 us "
            "whatever its size, so this trains many times slower than on the CPU; MINIPPO_BACKEND=numba "
            "(or numpy) is faster for networks this size (README, Backends)")


def cmd_train(args: argparse.Namespace) -> int:
    """``minippo train``: train, log progress.csv, save config.json and model.npz; returns the exit code."""
    import numpy as np

    from minippo import backend
    from minippo.checkpoint import file_id, read_checkpoint, save_checkpoint
    from minippo.envs import check_env_id
    from minippo.optim import GradientOverflowError
    from minippo.ppo import PPO, EnvOutputError, NonFiniteEnvError, TotalReached

    try:
        check_env_id(args.env_id)
    except ValueError as e:
        raise UsageError(str(e)) from e
    _check_backend()
    if args.resume:
        if os.path.isdir(args.resume):
            raise UsageError(f"--resume {args.resume!r} is a folder; a run folder's model is "
                             f"{os.path.join(args.resume, 'model.npz')!r}")
        if not os.path.isfile(args.resume):
            what = "not a regular file (a FIFO or a device)" if os.path.exists(args.resume) else "no such file"
            raise UsageError(f"--resume: {what} {args.resume!r}")
        given = [flag for flag, name in _CONFIG_FLAGS if _given(getattr(args, name))]
        if given:
            raise UsageError(f"--resume continues with the saved config; {', '.join(given)} cannot be "
                             "combined with it (only --timesteps, --out and --quiet can)")
        overrides = {}
        if args.timesteps is not None:
            overrides["total_timesteps"] = args.timesteps
        try:  # the model's env first: loading makes it (and a 'module:EnvId' not typed is not imported)
            saved_id = read_checkpoint(args.resume)[0]["config"].get("env_id")
            if saved_id != args.env_id:
                raise UsageError(f"--resume model was trained on {saved_id}, not {args.env_id}")
            algo = _build(lambda: PPO.load(args.resume, **overrides))
        except TotalReached as e:  # (in the CLI's words)
            raise UsageError(f"--timesteps {args.timesteps}: the model has already run {e.done} steps; pass "
                             f"--timesteps above {e.done} to train further") from e
        except (ValueError, TypeError) as e:  # CheckpointError, a --timesteps or env space refused
            raise UsageError(f"--resume {args.resume}: {e}") from e
        if algo.num_timesteps >= algo.total_timesteps:  # (no --timesteps: the saved total is reached)
            raise UsageError(f"--resume: the model has already run {algo.num_timesteps} steps; pass --timesteps "
                             f"above {algo.num_timesteps} to train further")
        cfg = algo.config
        backlog = algo.checkpoint_meta.get("unlogged_rows", [])  # the rows its run could not log
    else:
        backlog = []
        try:
            cfg = _make_config(args)
        except ValueError as e:
            raise UsageError(str(e)) from e
        try:
            algo = _build(lambda: PPO(cfg))
        except (ValueError, TypeError) as e:  # what the env's spaces or env_kwargs do not allow
            raise UsageError(str(e)) from e
    try:
        _step_with_env_kwargs(cfg)  # (before anything is written)
        out, model_path, log, lock = _open_run_folder(args, cfg, algo.iteration, backlog)
    except BaseException:  # refused: the env made for the run is closed (an async one's workers) before the exit
        algo.close()
        raise
    start_steps = algo.num_timesteps
    if not args.quiet:
        settings = f"resumed at {start_steps} steps" if args.resume else _settings(args)
        _say(f"minippo: training {cfg.env_id}{_kwargs_shown(cfg.env_kwargs)} ({cfg.objective}, "
             f"{settings}) for {algo.total_timesteps} steps on backend {backend.name}; writing {_path_shown(out)}")
        hint = _small_net_on_gpu(cfg, backend.name)
        if hint:
            _say(hint)
    per_iteration = cfg.n_envs * cfg.n_steps  # the last rollout runs to completion past the budget
    steps_to_run = -(-algo.total_timesteps // per_iteration) * per_iteration
    progress = _Progress(max(steps_to_run, algo.num_timesteps), algo.num_timesteps, args.quiet)

    # Ctrl-C, SIGTERM (or Windows' Ctrl-Break): finish the iteration in progress, then save and exit.
    # Saving at once would store half an iteration (steps counted, the update not done), and a resumed run's schedules
    # and counters would then drift from an uninterrupted one. A second signal stops at once and
    # saves nothing (the last saved model, if any, is left as it was).
    stop: list[int] = []

    def request_stop(signum: int, frame: Any) -> None:
        stop.append(signum)
        if len(stop) > 1:
            raise KeyboardInterrupt
        line = "\nminippo: stopping after this iteration (press Ctrl-C again to stop now without saving)"
        try:
            _say(line, flush=True)
        except RuntimeError:  # the signal landed inside a print to stderr (a progress line): the buffered
            try:  # stream refuses a write inside a write ("reentrant call"); its descriptor takes it
                os.write(sys.stderr.fileno(), (line + "\n").encode(errors="replace"))
            except (OSError, ValueError, AttributeError):  # (no descriptor, or it cannot be written)
                _stderr_lost()

    log_failed: list[OSError] = []  # progress.csv could not be written (a full disk, a quota)
    unlogged: list[list[str]] = []  # that row: saved with the model, written by a resumed run (no gap)

    def on_iteration(row: dict[str, Any]) -> bool | None:
        try:
            log(row)
        except OSError as e:  # stop at this boundary and still try to save the model
            log_failed.append(e)
            unlogged.append(log.cells(row))
            return False
        progress(row)
        return False if stop else None  # False ends learn() at this iteration boundary

    old_handlers: dict[int, Any] = {}  # the handlers replaced, put back at the end
    aborted = None  # or what was going on when a second signal stopped it
    diverged = None  # or the FloatingPointError that stopped training (NaN/inf loss, logits, data)
    failed = None  # or what could not be written (progress.csv, model.npz)
    t0 = time.perf_counter()
    compiled_before = backend.numba_compile_seconds(this_thread=True)
    try:  # (the handlers inside: the env and the run folder's lock are released whatever happens from here)
        if threading.current_thread() is threading.main_thread():  # signal handlers are the main thread's
            for s in STOP_SIGNALS:  # alone (ValueError elsewhere): a run in another thread is its caller's to stop
                old_handlers[s] = signal.signal(s, request_stop)
        try:
            # numpy's overflow warnings on the way to a diverged loss come before the one line that
            # names it (and its hint): that line says it all
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                algo.learn(callback=on_iteration)
        except KeyboardInterrupt:
            aborted = "mid-iteration"
        except (FloatingPointError, NonFiniteEnvError, EnvOutputError) as e:  # (an env's output refused: its
            diverged = e  # type or shape, named in one line as its NaN is)
        except Exception:
            # A second signal that lands inside a ctypes callback (LLVM emitting a numba kernel) is
            # swallowed there, and numba then fails on its own (RuntimeError "no compiled object yet"):
            # the stop asked for, not a traceback
            if len(stop) < 2:
                raise
            aborted = "mid-iteration"
        finally:
            progress.close()
            log.close()
        if aborted is None and diverged is None:
            before: Any = _NOT_READ
            try:
                before = file_id(model_path)
                # atomic: a signal here leaves the previous file as it was
                save_checkpoint(algo, model_path, unlogged_rows=unlogged)
            except KeyboardInterrupt:
                # ... unless it landed after the rename, which left the new model in place
                renamed = before is not _NOT_READ and file_id(model_path) != before
                aborted = "as the save ended" if renamed else "during the save"
            except OSError as e:  # a full disk, the folder removed: atomic, so no half-written file
                failed = f"cannot save {_path_shown(model_path)} after {algo.num_timesteps} steps: {e}"
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
        algo.close()  # now: an async env's workers would otherwise outlive the run (and report at exit)
        lock.close()  # the run folder is free for the next run (or a resume) once the model is saved
    if aborted is not None:
        saved = f"model saved to {_path_shown(model_path)}" if aborted == "as the save ended" else "model not saved"
        _say(f"minippo: stopped {aborted} at {algo.num_timesteps} steps; {saved}")
        return 130
    if log_failed:
        csv_path = os.path.join(out, "progress.csv")
        saved = f"model not saved ({failed})" if failed is not None else \
            f"model saved to {_path_shown(model_path)} with the unwritten row (--resume writes it first)"
        _say(f"minippo: error: cannot write {_path_shown(csv_path)}: {log_failed[0]}; training stopped at "
             f"{algo.num_timesteps} steps; {saved}")
        return 1
    if failed is not None:
        _say(f"minippo: error: {failed}; model not saved (the previous model.npz, if any, is as it was)")
        return 1
    if diverged is not None:
        clip = "a smaller max_grad_norm" if cfg.max_grad_norm > 0 else \
            "gradient clipping (max_grad_norm > 0; it is off)"
        hint = "" if isinstance(diverged, (NonFiniteEnvError, EnvOutputError, GradientOverflowError)) else \
            f" (a smaller learning_rate, {clip} or a larger temperature may help)"  # (those say what to do)
        _say(f"minippo: error: training stopped at {algo.num_timesteps} steps: {diverged}; model not saved{hint}")
        return 1
    wall = time.perf_counter() - t0
    if stop:
        _say(f"minippo: interrupted at {algo.num_timesteps} steps; model saved to {_path_shown(model_path)}")
        return 130
    compiled = backend.numba_compile_seconds(this_thread=True) - compiled_before
    if not args.quiet:
        of_it = f" ({compiled:.1f} s of it numba compiling kernels, a one-off)" if compiled >= 0.05 else ""
        # a resumed run's count is its total; the time is this run's
        this_run = f" ({algo.num_timesteps - start_steps} in this run)" if start_steps else ""
        _say(f"minippo: done, {algo.num_timesteps} steps{this_run} in {wall:.1f} s{of_it}; model saved to "
             f"{_path_shown(model_path)}")
    return 0


# ------------------------------------------------------------------ eval, plot, bench
def cmd_eval(args: argparse.Namespace) -> int:
    """``minippo eval``: evaluate a saved model (numpy-only policy); returns the exit code."""
    from minippo.checkpoint import CheckpointError, EnvMismatchError, evaluate_policy, load_policy
    from minippo.envs import EnvKwargsError, check_env_id, saved_env_module
    from minippo.ppo import EnvOutputError, NonFiniteEnvError

    if args.episodes is not None and args.episodes < 1:
        raise UsageError(f"--episodes must be >= 1, got {args.episodes}")
    if args.seed is not None and args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    _check_backend()
    try:
        policy = _build(lambda: load_policy(args.model))  # (its warnings as the CLI's lines)
    except (FileNotFoundError, CheckpointError) as e:
        raise UsageError(str(e)) from e
    if policy.custom_env:
        raise UsageError(f"{args.model} was trained on {policy.custom_env}, an env given as PPO(config, env=...), "
                         "which minippo eval cannot make: evaluate it in Python, "
                         "evaluate_policy(load_policy(path), None, env=<one env>)")
    for module in args.imports or ():
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 (whatever the module raises as it is imported)
            raise UsageError(f"--import {module}: {type(e).__name__}: {e}") from e
    module = saved_env_module(policy.env_id)
    if module is not None:
        raise UsageError(f"{args.model} was trained on {policy.env_id!r}: a model file imports no code it names; "
                         f"pass --import {module} if you trust it")
    try:
        check_env_id(policy.env_id)
    except ValueError as e:
        raise UsageError(f"{args.model} was trained on {policy.env_id!r}, which cannot be made here: {e}") from e
    cfg = policy.meta["config"]
    from minippo.config import EVAL_SEED_OFFSET, PPOConfig

    seed = args.seed
    if seed is None:
        run_seed = cfg.get("seed")
        if isinstance(run_seed, bool) or not isinstance(run_seed, int) or run_seed < 0:
            raise UsageError(f"{args.model}: its config's seed {run_seed!r} is not an integer >= 0: pass --seed")
        seed = run_seed + EVAL_SEED_OFFSET
    episodes = args.episodes
    if episodes is None:
        episodes = cfg.get("eval_episodes", PPOConfig.eval_episodes)
        if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
            raise UsageError(f"{args.model}: its config's eval_episodes {episodes!r} is not an integer >= 1: "
                             "pass --episodes")
    try:
        res = evaluate_policy(policy, policy.env_id, episodes, args.deterministic, seed=seed,
                              env_kwargs=cfg.get("env_kwargs"))
    except (EnvMismatchError, EnvKwargsError) as e:
        raise UsageError(f"{args.model}: {e}") from e
    except (NonFiniteEnvError, EnvOutputError, FloatingPointError) as e:  # the env's or the model's (a
        # temperature so small that logits / temperature overflow), not the command line's: exit 1, as train
        _say(f"minippo: error: evaluation stopped: {e}")
        return 1
    env_kwargs = cfg.get("env_kwargs") or {}
    if args.json:
        print(json.dumps({**{k: res[k] for k in ("env_id", "episodes", "mean_return", "std_return")},
                          "env_kwargs": env_kwargs}))
    else:
        cut = f" ({res['cut']} cut at the step cap: the env has no time limit)" if res["cut"] else ""
        print(f"{res['env_id']}{_kwargs_shown(env_kwargs)}: {res['episodes']} episodes, "
              f"return {res['mean_return']:.2f} +- {res['std_return']:.2f}{cut}")
    return 0


def read_progress(folder: str) -> dict[str, array]:
    """Columns of ``folder/progress.csv`` as float64 arrays (``array('d')``, 8 bytes a value: a 200k-row log
    holds 32 MB of them; empty cells -> nan)."""
    path = os.path.join(folder, "progress.csv")
    if not os.path.isfile(path):
        if os.path.lexists(path):  # a folder, FIFO, device or link to nothing by that name
            raise UsageError(f"{path!r} is not a regular file: not a progress.csv minippo wrote")
        raise UsageError(f"{folder!r} has no progress.csv (is it a minippo run folder?)")
    from minippo.config import _shown

    cols = {c: array("d") for c in CSV_COLUMNS}
    try:  # (utf-8-sig: a file saved again by a spreadsheet may begin with a byte-order mark)
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(_lines(f, path))  # a row at a time: a 200k-row log took 520 MB read whole
            for n, r in enumerate(reader, start=2):  # line 1 is the header
                if n == 2 and not {"iteration", "timesteps"} <= set(reader.fieldnames or ()):  # (every version's)
                    raise UsageError(f"{path} does not have minippo's progress.csv columns (its header: "
                                     f"{_shown(reader.fieldnames, 120)})")
                for c in CSV_COLUMNS:
                    v = r.get(c)
                    try:
                        cols[c].append(math.nan if v in (None, "") else float(v))
                    except (TypeError, ValueError):
                        raise UsageError(f"{path}, line {n}: {c} {_shown(v, 80)} is not a number") from None
    except (OSError, ValueError, UnicodeDecodeError, csv.Error) as e:
        raise UsageError(f"{path}: cannot read it: {e}") from e
    return cols


def run_labels(dirs: list[str]) -> list[str]:
    """Legend labels for run folders: each folder's last path component, or as few trailing
    components as tell it from the other folders (``numpy/run`` and ``numba/run``, not ``run`` twice)."""
    paths = [os.path.abspath(d) for d in dirs]
    distinct = set(paths)  # (one folder given twice, or spelt two ways, is one label)

    def tail(p: str, k: int) -> str:
        return "/".join(p.split(os.sep)[-k:]).lstrip("/") or "/"

    def label(p: str) -> str:
        k = 1
        while any(tail(q, k) == tail(p, k) for q in distinct - {p}):
            k += 1  # (ends: two distinct absolute paths differ in some trailing component)
        # A name's bytes that are not UTF-8 come as lone surrogates, which matplotlib cannot draw (TypeError)
        return os.fsencode(tail(p, k)).decode("utf-8", "replace")

    return [label(p) for p in paths]


def cmd_plot(args: argparse.Namespace) -> int:
    """``minippo plot``: learning curves of one or more run folders to an image (PNG unless ``-o``'s
    suffix names another format matplotlib writes); returns the exit code."""
    if args.y not in CSV_COLUMNS:
        raise UsageError(f"--y {args.y!r} is not a progress.csv column; use one of {', '.join(CSV_COLUMNS)}")
    if args.x not in PLOT_X:
        raise UsageError(f"--x {args.x!r} is not allowed; use one of {', '.join(PLOT_X)}")
    runs = {d: read_progress(d) for d in args.dirs}
    empty = [d for d, cols in runs.items() if not cols["timesteps"]]  # no iteration finished yet
    if len(empty) == len(runs):  # an empty plot, exit code 0, said nothing
        raise UsageError(f"no rows yet in {', '.join(os.path.join(d, 'progress.csv') for d in empty)}: "
                         "no iteration has finished")
    for d in empty:
        print(f"minippo: skipping {d!r}: its progress.csv has no rows yet", file=sys.stderr)
        del runs[d]
    for col, why in ((args.x, "runs from before minippo logged that column"),
                     (args.y, "kl and beta are logged by kl_penalty runs, mean_return once an episode has ended")):
        blank = [d for d, cols in runs.items() if not any(math.isfinite(v) for v in cols[col])]
        if len(blank) == len(runs):  # would be blank axes, exit code 0 (kl and beta of a clip run, say)
            raise UsageError(f"column {col!r} has no values in "
                             f"{', '.join(os.path.join(d, 'progress.csv') for d in blank)} ({why})")
        for d in blank:
            print(f"minippo: skipping {d!r}: its progress.csv has no {col} values", file=sys.stderr)
            del runs[d]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise UsageError(f"plot needs matplotlib ({e}): pip install 'minippo[plot]'") from e
    if not args.output or os.path.isdir(args.output):
        raise UsageError(f"--output {args.output!r} must name an image file")
    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder):
        raise UsageError(f"--output {args.output!r}: folder {folder!r} does not exist")
    fmt = os.path.splitext(args.output)[1].lstrip(".").lower() or "png"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    formats = fig.canvas.get_supported_filetypes()
    if fmt not in formats:
        plt.close(fig)
        raise UsageError(f"--output {args.output!r}: {fmt!r} is not an image format matplotlib writes; "
                         f"use one of {', '.join(sorted(formats))}")
    for cols, label in zip(runs.values(), run_labels(list(runs)), strict=True):
        x, y = cols[args.x], cols[args.y]
        (line,) = ax.plot(x, y, label=label)
        ok = [math.isfinite(v) for v in y]
        # a value with no value beside it (one row, or gaps around it) has no line: a dot shows it
        alone = [i for i in range(len(y)) if ok[i] and not (i > 0 and ok[i - 1]) and not (i + 1 < len(y) and ok[i + 1])]
        if alone:
            ax.plot([x[i] for i in alone], [y[i] for i in alone], "o", markersize=3, color=line.get_color())
    ax.set_xlabel(PLOT_X[args.x])
    ax.set_ylabel(args.y)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    from minippo.checkpoint import atomic_write

    try:  # written whole, then renamed: never a half-written image
        atomic_write(args.output, lambda f: fig.savefig(f, dpi=120, format=fmt))
    except OSError as e:
        raise UsageError(f"--output {args.output!r}: cannot write it: {e}") from e
    except (RuntimeError, ValueError) as e:  # a format matplotlib offers but cannot write here (pgf: no xelatex)
        raise UsageError(f"--output {args.output!r}: matplotlib cannot write {fmt} here: {e}") from e
    finally:
        plt.close(fig)
    # a status line, on stderr as the others: stderr escapes what its encoding cannot write (a file name
    # in another script, printed to a cp1252 stdout, raised after the image was written)
    print(f"minippo: wrote {_path_shown(args.output)}", file=sys.stderr)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """``minippo bench``: training speed against env stepping alone; returns the exit code."""
    from minippo.bench import train_speed
    from minippo.config import MAX_TIMESTEPS, TOO_MANY_TIMESTEPS

    if args.timesteps < 1:
        raise UsageError(f"--timesteps must be >= 1, got {args.timesteps}")
    if args.timesteps > MAX_TIMESTEPS:
        raise UsageError(f"--timesteps {TOO_MANY_TIMESTEPS}, got {args.timesteps}")
    if args.repeats < 1:
        raise UsageError(f"--repeats must be >= 1, got {args.repeats}")
    _check_backend()
    train_speed(args.timesteps, repeats=args.repeats)
    return 0


BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def pin_blas_threads() -> None:
    """Default BLAS to one thread unless the user chose otherwise.

    Why: PPO's matrices are small (64-wide, batches of 64-2048); there a second BLAS thread
    rarely helps and on a busy 2-core machine it made the weight-gradient matmul 10x slower
    (189 us vs 20 us for 256x64 x 256x64, measured here). One thread also makes sums, and so
    runs, reproducible. Only effective before numpy is first imported.
    """
    if "numpy" not in sys.modules:
        for var in BLAS_THREAD_VARS:
            os.environ.setdefault(var, "1")


def _show_library_log() -> None:
    """Print the library's INFO messages (e.g. which backend MINIPPO_BACKEND=auto picked) on stderr."""
    import logging

    class ToStderr(logging.Handler):  # sys.stderr as it is at each message, not at the first main() call
        def emit(self, record: logging.LogRecord) -> None:
            if _Progress.active is not None:  # a bar is drawn: print above it, not onto its line
                _Progress.active.write(self.format(record))
            else:  # (a stderr that cannot be written loses the line: see _say)
                _say(self.format(record), flush=True)

    log = logging.getLogger("minippo")
    if not log.handlers:
        handler = ToStderr()
        handler.setFormatter(logging.Formatter("minippo: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has closed it (poll reports an error on its write end);
    False where that cannot be told (no file descriptor, no poll)."""
    try:
        import select

        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False


def _current_folder_importable() -> None:
    """``python -m minippo`` imports modules from the current folder and the ``minippo`` command did
    not (``minippo train mypkg.envs:MyEnv-v0`` run from the project's folder: "No module named
    'mypkg'"). The folder goes last on ``sys.path``, so a file there never shadows an installed module."""
    try:
        cwd = os.getcwd()
    except OSError:  # a folder deleted under us: nothing to import from
        return
    if "" not in sys.path and cwd not in sys.path:
        sys.path.append(cwd)


class _OutputLost(Exception):
    """Stdout could not be written (a full disk, ``>/dev/full``, a terminal that hung up); its OSError is
    the cause. A closed pipe's BrokenPipeError is not wrapped: it has its own quiet exit (141)."""


class _CheckedStdout:
    """Stands in for ``sys.stdout`` while a command runs: a failed write or flush raises ``_OutputLost``,
    so ``main`` can tell the command's output was lost from an OSError of the command's own work (a model
    file, an env); text the stream's encoding cannot hold is written with backslash escapes. Everything
    else goes to the stream it wraps."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            try:
                return self._stream.write(text)
            except UnicodeEncodeError as e:  # a non-ASCII env id or path on an ASCII stdout: escaped, not lost
                return self._stream.write(text.encode(e.encoding, "backslashreplace").decode(e.encoding))
        except BrokenPipeError:
            raise
        except OSError as e:
            raise _OutputLost(e) from e

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            raise _OutputLost(e) from e

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, ...
        return getattr(self._stream, name)


class _Discard(io.StringIO):
    """Where a closed standard stream's text goes: nowhere (no file to leave open)."""

    def write(self, text: str) -> int:
        return len(text)


def _damaged_numba_cache(e: BaseException) -> str | None:
    """The numba cache file an exception came from, where it was raised while numba loaded a kernel from its
    cache (a truncated or garbled .nbi / .nbc file: pickle's UnpicklingError or EOFError, LLVM's bitcode
    parsing error), else None. Every later run failed so, with a traceback, until the file was removed."""
    tb, loading, index = e.__traceback__, False, None
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_filename.endswith(os.path.join("numba", "core", "caching.py")):
            # loading, not saving: an OSError saving a new kernel (a full disk) is no damaged file
            loading = loading or frame.f_code.co_name in ("load_overload", "_load_overload")
            owner = frame.f_locals.get("self")
            found = getattr(owner, "_index_path", None) or getattr(getattr(owner, "_cache_file", None),
                                                                 "_index_path", None)
            index = found if isinstance(found, str) else index
        tb = tb.tb_next
    return index if loading else None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``minippo`` command; ``argv`` defaults to ``sys.argv[1:]``. Returns the exit code."""
    # A standard stream closed when Python started (`2>&-`) is None: print(file=None) then writes to
    # stdout (log lines before --json's document), and None has no isatty or flush
    if sys.stdout is None:
        sys.stdout = _Discard()
    if sys.stderr is None:
        sys.stderr = _Discard()
    pin_blas_threads()
    _current_folder_importable()
    _show_library_log()
    parser = build_parser()
    stdout = sys.stdout
    sys.stdout = _CheckedStdout(stdout)
    try:
        args = parser.parse_args(argv)
        code = {"train": cmd_train, "eval": cmd_eval, "plot": cmd_plot, "bench": cmd_bench}[args.command](args)
        # stdout to a pipe is block-buffered (unless PYTHONUNBUFFERED): a reader that closed early makes
        # this flush fail, here, rather than the one at exit (exit status 120, "Exception ignored")
        sys.stdout.flush()
        return code
    except _OutputLost as e:  # `minippo eval --json >/dev/full`: one line, not an OSError traceback
        sys.stdout = stdout
        _say(f"minippo: error: could not write the output to stdout: {e.__cause__}")
        _to_devnull(sys.stdout)  # what its buffer still holds goes nowhere at exit, not into a second failure
        return 1
    except (UsageError, ImportError) as e:  # ImportError: a missing optional dependency
        _say(f"minippo: error: {e}")  # (2 even where stderr cannot be written)
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside training (starting up, eval, plot, bench): no traceback
        _say("\nminippo: interrupted")
        return 130
    except BrokenPipeError:  # stdout closed by its reader (`minippo eval ... | head -c 1`): no traceback
        sys.stdout = stdout
        if not _stdout_closed():  # another pipe (an async env's worker that died): not the reader's doing
            raise
        _to_devnull(sys.stdout)  # what is left to flush at exit goes nowhere, not into a second BrokenPipeError
        return 128 + 13  # as a process ended by SIGPIPE reports it in the shell
    except Exception as e:  # (last: the clauses above are Exceptions too)
        index = _damaged_numba_cache(e)
        if index is None:
            raise
        _say(f"minippo: error: numba could not load a kernel from its cache ({type(e).__name__}: {e}): the cache "
             f"file {index!r} (or a .nbc file beside it of the same name) is damaged; remove them and run again, "
             "numba compiles them anew")
        return 1
    finally:
        sys.stdout = stdout


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
