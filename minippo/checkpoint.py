"""Checkpoints: one pickle-free ``.npz`` with every array, plus a JSON entry for the rest.

Arrays: ``param/<name>`` (policy parameters), ``adam/m.<name>``, ``adam/v.<name>``,
``obs_rms.*`` and ``ret_rms.*`` (normaliser statistics). ``meta`` is a JSON string: format
version, minippo/numpy versions, backend, config, policy description, counters, beta, RNG state.
Writes go to a temp file in the same folder, fsync, ``os.replace``, then an fsync of the folder:
a crash mid-save leaves the old file intact, and a finished save survives a power loss.
(Checkpoints before session 11 also hold ``ret_acc``, the reward scaler's running returns; they
belong to the episodes in progress, which restart on resume, so it is not saved and is ignored.)
``load_policy`` needs numpy only: it is what runs a trained policy on a small machine.
"""

from __future__ import annotations

import errno
import json
import math
import os
import secrets
import stat
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np

from minippo import __version__
from minippo._checks import fixed, flag, integer, renamed_state, reset_obs
from minippo.policy import ActorCritic, check_obs
from minippo.spaces import is_kind

FORMAT = 1
Array = Any


class CheckpointError(ValueError):
    """The file is not a minippo checkpoint, is corrupted, or does not match what loads it."""


class EnvMismatchError(ValueError):
    """The env a policy is evaluated in does not have the spaces the policy was trained for."""


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return rng.bit_generator.state


def _check_rng_state(state: Any) -> None:
    """ValueError unless ``state`` is a PCG64 state (``Generator.bit_generator.state``) whose integers
    are in their C types' ranges: numpy 2 raises OverflowError for most that are not, but numpy 1.x
    wrapped a state of -1 to 2**128 - 1 silently, and both took ``has_uint32 = 2``."""
    def within(v: Any, bits: int) -> bool:
        return type(v) is int and 0 <= v < 2**bits

    inner = state.get("state") if isinstance(state, dict) else None
    if not (isinstance(inner, dict) and state.get("bit_generator") == "PCG64" and within(inner.get("state"), 128)
            and within(inner.get("inc"), 128) and within(state.get("has_uint32"), 1)
            and within(state.get("uinteger"), 32)):
        raise ValueError(f"not a PCG64 state with state and inc in [0, 2**128), has_uint32 0 or 1 and uinteger in "
                         f"[0, 2**32): {str(state)[:200]}")


def _new_temp(path: str, made: list[str]) -> int:
    """A new file beside ``path`` (``<name>.<random>.tmp``), open for writing; its name is put in
    ``made`` before it is created, so that a KeyboardInterrupt raised as the creating call returns (a
    SIGINT's handler runs there) leaves the caller a name to clean up. Created with mode
    0666, which the OS reduces by the umask as for ``open()``, so a saved model can be read by
    whoever reads the rest of the run folder (``mkstemp`` would make it 0600, and reading the umask
    means setting it, which races with other threads)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    folder, name = os.path.split(path)
    # A name within 17 bytes of the usual 255-byte limit would make too long a temp name: such
    # a name gets a short hidden one (``.<random>.tmp``) in the same folder instead.
    fits = len(os.fsencode(name)) + 17 <= 255
    for _ in range(100):
        token = secrets.token_hex(6)
        made[:] = [f"{path}.{token}.tmp" if fits else os.path.join(folder, f".{token}.tmp")]
        try:
            return os.open(made[0], flags, 0o666)
        except FileExistsError:  # another's file: not for the caller to remove
            made.clear()
            continue
        except OSError as e:  # said of the folder (a permission, a read-only or full file system): the
            # temp file's own name would puzzle. OSError(errno, ...) is the errno's subclass again.
            raise OSError(e.errno, f"cannot create a file in folder {folder!r} ({e.strerror}): a save "
                          f"writes a temporary file there, then renames it onto {name!r}") from e
    raise FileExistsError(f"no free temporary name beside {path!r}")


def _fsync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened or synced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder: the rename is done, only its durability is weaker
    finally:
        os.close(fd)


def replaced_mode(path: str | bytes | os.PathLike) -> int | None:
    """The permission bits (0o777) of the file that a save onto ``path`` replaces, or None where
    there is none (or it is not a regular file); raises as :func:`_replaced` does."""
    st = _replaced(path)
    return None if st is None else st.st_mode & 0o777


def _replaced(path: str | bytes | os.PathLike) -> os.stat_result | None:
    """``os.stat`` of the file that a save onto ``path`` replaces, or None where there is none (or
    it is not a regular file). PermissionError, before anything is written, when
    this process may not write that file: the rename would replace it where ``open(path, "wb")``
    would fail, so a write-protected model would be lost without a word. Also when it may not make
    the temp file in that file's folder (where a link points: the CLI checks a run's files with this
    before training, so that the save at the end cannot fail there)."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # no such file (or a dangling link): the save creates
        return None  # it (or names the file in a folder's place). A loop of links raises, as open() does
    if not stat.S_ISREG(st.st_mode):
        return None
    if not os.access(path, os.W_OK):
        raise PermissionError(errno.EACCES, f"path {os.fsdecode(path)!r} is write-protected (mode "
                              f"{st.st_mode & 0o777:04o}): make it writeable (chmod u+w) or save to another path")
    folder = os.path.dirname(os.path.realpath(path))
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, f"cannot create a file in folder {folder!r}: a save onto "
                              f"{os.fsdecode(path)!r} writes a temporary file there, beside the file it "
                              "replaces, then renames it onto that file")
    return st


def _file_path(path: str | bytes | os.PathLike) -> str:
    """``path`` as a str, checked to name a file: TypeError for a non-path, IsADirectoryError for a
    folder, a path ending in a separator ("x/") or "" (before anything is written)."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path must be a file path (str, bytes or os.PathLike), got {type(path).__name__}")
    name = os.fsdecode(path)
    if os.path.isdir(name) or not os.path.basename(name):
        raise IsADirectoryError(f"path {name!r} is {'a folder' if name else 'empty'}: give a file path to write")
    return name


def check_save_path(path: str | bytes | os.PathLike, reread: bool = False) -> None:
    """Raise OSError, naming ``path``, where a save onto it (:func:`atomic_write`, ``PPO.save``) is
    bound to fail, so that a script can refuse it before training rather than lose the model after:
    ``path`` a folder or empty, a write-protected file, a folder (or a file in the place of one)
    where the temp file cannot be made. A missing folder is made now, as the save would make it.
    ``reread``: the caller loads the saved file back, so a path that is not a regular file (a FIFO,
    a device such as /dev/null, which a save writes into) is refused too."""
    name = _file_path(path)
    if reread and os.path.exists(name) and not os.path.isfile(name):
        raise OSError(f"path {name!r} is not a regular file (a FIFO or a device): what is saved there cannot be "
                      "loaded back")
    _replaced(name)  # PermissionError: a write-protected file, or no temp file can be made beside it
    folder = os.path.dirname(os.path.realpath(name))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise NotADirectoryError(f"cannot save to {name!r}: {folder!r} is a file, not a folder")
    os.makedirs(folder, exist_ok=True)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot save to {name!r}: cannot create a file in folder {folder!r}")


def atomic_write(path: str | bytes | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Write a file through ``write(f)`` on a temp file beside ``path``, then fsync, rename onto
    ``path`` and fsync the folder: ``path`` is never half-written (the old file stays until the new
    one is whole), and the new file is durable once this returns. A failure removes the temp file
    and the folders this call made for it (a process killed outright cannot: its temp file stays);
    an interrupt that lands after the rename leaves the new file in place (and durable) and goes on
    to the caller.
    As with ``open(path, "wb")``: a file it replaces keeps its permission bits and, where this process
    may set them (root; or a group it is in), its owner and group (``sudo minippo train --resume`` of
    a user's run leaves the user's model.npz theirs), one this process may not write is refused
    (PermissionError, before anything is written), a new file gets 0666 less the umask, and a
    symbolic link is followed (the file it points to is replaced; the link stays). A path that is not
    a regular file (a FIFO, a device such as /dev/null or /dev/stdout) is written as ``open(path,
    "wb")`` writes it: there is no file on disk to keep whole."""
    name = _file_path(path)
    try:
        special = not stat.S_ISREG(os.stat(name).st_mode)
    except (FileNotFoundError, NotADirectoryError):  # no such file (or a dangling link): a new file.
        special = False  # Other errors (a loop of links) are raised here, as open() raises them
    if special:  # the rename would replace the FIFO or device node with a regular file (as root:
        with open(name, "wb") as f:  # `minippo plot -o /dev/null` replaced /dev/null itself)
            write(f)
        return
    # The path the OS resolves ``path`` to (links and "..", as open() does): the temp file goes in
    # its folder, so that the rename stays in one folder, and the rename is onto it.
    target = os.path.realpath(name)
    folder = os.path.dirname(target)
    st = _replaced(name)  # (its errors name the path as given)
    mode = None if st is None else st.st_mode & 0o777
    # its owner and group, to give back where they differ from this process's (POSIX)
    owner = None if st is None or not hasattr(os, "fchown") or (st.st_uid, st.st_gid) == (
        os.geteuid(), os.getegid()) else (st.st_uid, st.st_gid)
    new_folders: list[str] = []  # the folders this save made: removed again (if still empty) on failure
    made: list[str] = []  # the temp file's name, once chosen
    written = None  # (st_dev, st_ino) of the temp file: the target has them once the rename is done
    try:
        _make_folders(folder, new_folders)
        fd = _new_temp(target, made)
        tmp = made[0]
        with os.fdopen(fd, "wb") as f:
            st_new = os.fstat(fd)
            written = (st_new.st_dev, st_new.st_ino)
            if owner is not None:  # before the mode: a chown by a non-root user may clear mode bits
                try:
                    os.fchown(fd, *owner)
                except OSError:  # not root, nor in that group: the new file is this process's, as a new one is
                    pass
            if mode is not None and hasattr(os, "fchmod"):
                try:
                    os.fchmod(fd, mode)
                except OSError:  # a file system without POSIX modes (FAT, some network mounts): nothing to keep
                    pass
            write(f)
            f.flush()
            os.fsync(f.fileno())
        _replace(tmp, target)
    except BaseException:
        # An interrupt (a second Ctrl-C) that landed after the rename: the temp file is gone and the
        # target is it. The new file is whole and in place; make it durable, and let the interrupt go on.
        if written is not None and not os.path.lexists(made[0]) and file_id(target) == written:
            _fsync_folder(folder)
            raise
        if made and os.path.lexists(made[0]):
            os.unlink(made[0])
        for made_folder in reversed(new_folders):
            try:
                os.rmdir(made_folder)
            except OSError:  # not empty: something else wrote there meanwhile
                continue
        raise
    _fsync_folder(folder)


# Windows refuses to replace a file another process has open (a `minippo eval` reading the model, a virus
# scanner, the search indexer: PermissionError) for as long as it is open: the rename is tried again after
# each of these pauses (1.5 s in all) before the save fails. Elsewhere a PermissionError is final.
REPLACE_RETRY_PAUSES = (0.02, 0.05, 0.1, 0.2, 0.4, 0.73) if sys.platform == "win32" else ()


def _replace(src: str, dst: str) -> None:
    """``os.replace(src, dst)``, tried again after each of :data:`REPLACE_RETRY_PAUSES` while it raises
    PermissionError."""
    import time

    for pause in REPLACE_RETRY_PAUSES:
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            time.sleep(pause)
    os.replace(src, dst)


def _make_folders(folder: str, made: list[str]) -> None:
    """``os.makedirs(folder, exist_ok=True)``, putting in ``made`` each folder this call created (not
    one another process made meanwhile), outermost first, as it is created."""
    missing = []
    while folder and not os.path.lexists(folder):
        missing.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    for f in reversed(missing):
        try:
            os.mkdir(f)
        except FileExistsError:  # made meanwhile by another process (or a link to a folder): not ours
            if not os.path.isdir(f):
                raise
            continue
        made.append(f)


def file_id(path: str | bytes | os.PathLike) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the file at ``path`` (links followed), or None where there is none. Every
    save renames a new file into place, so a save has replaced the file once this changes: the CLI
    asks when a second signal interrupts its save (one landing just after the rename leaves the new
    model saved)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def atomic_savez(path: str, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` to ``path`` through :func:`atomic_write` (never half-written; durable once it
    returns). arrays: name -> array of any shape and numeric dtype, stored as it is."""
    atomic_write(path, lambda f: np.savez(f, **arrays))


def save_checkpoint(algo: Any, path: str, unlogged_rows: list[list[str]] | None = None) -> None:
    """Save a :class:`minippo.ppo.PPO` (parameters, Adam, normalisers, counters, RNG) to ``path``.
    ``unlogged_rows``: progress.csv rows (their cells) the CLI computed but could not write (a full
    disk); kept in the meta, so a resumed run writes them first and its log has no gap."""
    from minippo.backend import asnumpy

    arrays: dict[str, np.ndarray] = {}
    for k, v in algo.policy.params.items():
        arrays[f"param/{k}"] = asnumpy(v)
    if not isinstance(algo.rng, np.random.Generator) or type(algo.rng.bit_generator) is not np.random.PCG64:
        what = type(algo.rng).__name__ if not isinstance(algo.rng, np.random.Generator) else \
            f"a Generator on {type(algo.rng.bit_generator).__name__}"
        raise TypeError(f"nothing written to {path!r}: the trainer's rng must be a numpy Generator on PCG64 "
                        f"(np.random.default_rng(seed)), the state a checkpoint keeps, got {what}")
    opt = algo.optimizer.state_dict()
    for k, v in opt.items():
        if k != "t":
            arrays[f"adam/{k}"] = asnumpy(v)
    if algo.obs_norm is not None:
        arrays.update(algo.obs_norm.rms.state("obs_rms"))
    if algo.reward_scaler is not None:
        arrays.update(algo.reward_scaler.rms.state("ret_rms"))
    meta = {
        "format": FORMAT,
        "minippo": __version__,
        "numpy": np.__version__,
        "backend": algo.backend,
        # BLAS thread count changes summation order, so results are bit-identical only for the same value.
        # Unset variables (the Python API does not pin them; the CLI does) mean BLAS's default, which
        # follows the cores this process may run on: so that is recorded too.
        "blas_threads": {v: os.environ.get(v) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                         "MKL_NUM_THREADS")},
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        # the run's budget now (learn(total) moves it past the config's): the loaded config says it too
        "config": {**algo.config.to_dict(), "total_timesteps": algo.total_timesteps},
        # the class of an env given as PPO(config, env=...) without a gymnasium id: config.env_id is not its
        "custom_env": algo.custom_env,
        "policy": algo.policy.describe(),
        "num_timesteps": algo.num_timesteps,
        "iteration": algo.iteration,
        "time_elapsed": algo.time_elapsed,
        "total_timesteps": algo.total_timesteps,
        "adam_t": opt["t"],
        "beta": algo.kl_coef.beta,
        "rng": _rng_state(algo.rng),
        "episode_returns": list(algo.episode_returns),
        "episode_lengths": list(algo.episode_lengths),
    }
    if unlogged_rows:
        meta["unlogged_rows"] = [[str(c) for c in row] for row in unlogged_rows]
    try:
        arrays["meta"] = np.array(json.dumps(meta))
    except TypeError:  # (a numpy number set by hand on the trainer: json takes Python's alone)
        bad = next(k for k, v in meta.items() if not _json_ok(v))
        raise TypeError(f"nothing written to {path!r}: the trainer's {bad} holds {_shown_types(meta[bad])}, "
                        "not a Python number (set by hand? int() or float() of it)") from None
    _check_loadable(arrays, path)
    atomic_savez(path, arrays)


def _json_ok(value: Any) -> bool:
    try:
        json.dumps(value)
    except TypeError:
        return False
    return True


def _shown_types(value: Any) -> str:
    """What in ``value`` (a meta entry) is not JSON: its type, or the first such item's."""
    if isinstance(value, (list, tuple)):
        value = next(v for v in value if not _json_ok(v))
    if isinstance(value, dict):
        value = next(v for v in value.values() if not _json_ok(v))
    return f"a {type(value).__module__}.{type(value).__name__}"


def _check_loadable(arrays: dict[str, np.ndarray], path: str) -> None:
    """Run the loaders' checks on what :func:`save_checkpoint` is about to write (meta and arrays): a
    trainer whose counters, episode lists, normalisers or parameters were set by hand to what no load
    accepts (``episode_returns.clear()`` alone, ``iteration`` above ``num_timesteps``, a float64
    ``log_std`` in a float32 policy, a variance written negative in place) wrote a file that ``PPO.load``
    (and for some, ``load_policy``) then refused. ValueError, and nothing written."""
    from minippo.envs import RunningMeanStd

    try:
        headers = {k: (a.shape, a.dtype) for k, a in arrays.items()}
        meta = _read_meta(arrays, headers, path)
        _check_entries(meta, headers, path)
        _config_from_meta(meta, path)
        _check_normalisers(meta, arrays, path)
        dtype = np.dtype(meta["policy"]["dtype"])
        for name, a in arrays.items():
            if name.startswith(("param/", "adam/")):
                if a.dtype != dtype:
                    raise CheckpointError(f"{path!r}: array {name!r} is {a.dtype}, the network is {dtype}")
                if not np.isfinite(a).all():
                    raise CheckpointError(f"{path!r}: array {name!r} holds NaN or inf")
        for _, prefix in _NORMALISERS:
            if f"{prefix}.mean" in arrays:
                RunningMeanStd(arrays[f"{prefix}.mean"].shape).load(prefix, arrays)
        _check_rng_state(meta["rng"])
    except ValueError as e:  # (CheckpointError too)
        raise ValueError(f"{e}; nothing written: PPO.load would refuse the file (was an attribute of the "
                         "trainer set by hand?)") from e


def read_checkpoint(path: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(meta, arrays) from a checkpoint file, with clear errors for anything wrong."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path must be a file path (str, bytes or os.PathLike), got {type(path).__name__}")
    if os.path.isdir(path):
        raise CheckpointError(f"{path!r} is a folder, not a checkpoint file (a run folder's is model.npz)")
    if not os.path.exists(path):
        if os.path.islink(path):  # (exists follows links: a dangling one, or a loop of them)
            raise FileNotFoundError(f"checkpoint {path!r} is a symbolic link to nothing (its target "
                                    f"{os.readlink(path)!r} does not exist, or the links form a loop)")
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path!r} is not a regular file (a FIFO or a device): not a checkpoint file")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise CheckpointError(f"{path!r} cannot be read: {e}") from e
    if magic != b"PK\x03\x04" and magic != b"\x93NUM":  # an .npz is a zip file; .npy is handled below
        raise CheckpointError(f"{path!r} is not a readable minippo checkpoint (.npz): it is not a zip file")
    # Every entry's name, shape and dtype come from its .npy header, and are checked against what the
    # meta declares, before any array's data is read or any network is built: a small crafted file
    # (an extra entry of 2e8 compressed zeros, a meta declaring hidden=[10**9]) took gigabytes before
    # the checks that refused it, or was accepted.
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):  # a .npy file: one bare array
            raise CheckpointError(f"{path!r} holds a single array (.npy), not a minippo checkpoint (.npz)")
        with z:
            headers = _entry_headers(z, path)
            meta = _read_meta(z, headers, path)
            _check_entries(meta, headers, path)
            arrays = {k: z[k] for k in headers if k not in ("meta", "ret_acc")}
    except CheckpointError:
        raise
    except Exception as e:  # damaged bytes raise many types in zipfile and numpy's .npy reader:
        # BadZipFile, EOFError, ValueError, zlib.error, NotImplementedError (a compression method),
        # RuntimeError (the "encrypted" flag), tokenize.TokenError (an .npy header), ...
        raise CheckpointError(f"{path!r} is not a readable minippo checkpoint (.npz): "
                              f"{type(e).__name__}: {e}") from e
    return meta, arrays


_META_CHARS = 2**24
"""Most characters a checkpoint's meta (JSON) may hold: ~1000x what a run writes (its episode lists,
unlogged rows and config), so that a crafted entry cannot make the reader allocate gigabytes."""


def _entry_headers(z: Any, path: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """(shape, dtype) of each entry of the open .npz ``z``, from its .npy header (no data read)."""
    names = z.zip.namelist()
    not_npy = sorted(n for n in names if not n.endswith(".npy"))  # (np.load gives such a member's raw bytes)
    if not_npy:
        raise CheckpointError(f"{path!r}: entries {not_npy[:3]} are not .npy arrays: not a minippo checkpoint")
    twice = sorted({n[:-4] for n in names if names.count(n) > 1})  # (np.load would read one of them)
    if twice:
        raise CheckpointError(f"{path!r} has entries stored twice {twice[:3]}: the file is damaged or was edited")
    headers = {}
    for name in names:
        with z.zip.open(name) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:  # (3.0: utf-8 field names, which no minippo array has)
                raise CheckpointError(f"{path!r}: entry {name!r} is .npy format {version}, not one minippo writes")
        headers[name[:-4]] = (shape, dtype)
    if "meta" not in headers:
        raise CheckpointError(f"{path!r} has no 'meta' entry: not a minippo checkpoint")
    return headers


def _read_meta(z: Any, headers: dict[str, tuple[tuple[int, ...], np.dtype]], path: str) -> dict[str, Any]:
    """The checkpoint's meta (its JSON entry), with every field checked."""
    shape, dtype = headers["meta"]
    if shape != () or dtype.kind != "U" or dtype.itemsize > 4 * _META_CHARS:
        raise CheckpointError(f"{path!r}: the 'meta' entry must be one string of at most {_META_CHARS} "
                              f"characters, got {dtype} of shape {shape}")
    try:
        meta = json.loads(str(z["meta"]))
    except ValueError as e:  # (JSONDecodeError; an integer of more than 4300 digits)
        raise CheckpointError(f"{path!r}: the 'meta' entry is not valid JSON ({e})") from e
    except RecursionError:  # (a crafted file: arrays nested thousands deep)
        raise CheckpointError(f"{path!r}: the 'meta' entry is JSON nested too deep to read") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path!r}: the 'meta' entry is not a JSON object")
    if type(meta.get("format")) is not int or meta["format"] != FORMAT:  # (true == 1 in Python)
        raise CheckpointError(f"{path!r}: checkpoint format {meta.get('format')!r}, this minippo reads {FORMAT}")
    for key in ("config", "policy", "num_timesteps"):
        if key not in meta:
            raise CheckpointError(f"{path!r}: meta is missing {key!r}")
    if not isinstance(meta["config"], dict) or not isinstance(meta["policy"], dict):
        raise CheckpointError(f"{path!r}: meta's 'config' and 'policy' must be JSON objects")
    missing = [k for k in _POLICY_KEYS if k not in meta["policy"]]
    if missing:
        raise CheckpointError(f"{path!r}: meta's policy description is missing {missing}")
    for key in ("num_timesteps", "iteration", "total_timesteps", "adam_t"):
        v = meta.get(key, 0)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**63:  # (int64's range)
            raise CheckpointError(f"{path!r}: meta's {key!r} must be an integer in [0, 2**63), got {v!r}")
    beta = meta.get("beta", 1.0)
    # beta >= 0, not only > 0: before session 59 a long kl_penalty run could halve it down to 0.0 (or
    # double it to inf); those load as the nearest beta the rule keeps now (AdaptiveKL), and move again
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta >= 0:
        raise CheckpointError(f"{path!r}: meta's 'beta' must be a number >= 0, got {beta!r}")
    elapsed = meta.get("time_elapsed", 0.0)  # (absent from checkpoints saved before session 47: 0)
    if isinstance(elapsed, bool) or not isinstance(elapsed, (int, float)) or not 0 <= elapsed < math.inf:
        raise CheckpointError(f"{path!r}: meta's 'time_elapsed' must be a finite number of seconds >= 0, "
                              f"got {elapsed!r}")
    for key in ("episode_returns", "episode_lengths"):
        v = meta.get(key, [])
        if not isinstance(v, list) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v):
            raise CheckpointError(f"{path!r}: meta's {key!r} must be a list of finite numbers")
    # (the trainer appends one return and one length per finished episode, each episode >= 1 step; an
    # iteration collects >= 1 step: a file that says otherwise logs wrong means and row numbers)
    from minippo.config import _shown

    returns, lengths = meta.get("episode_returns", []), meta.get("episode_lengths", [])
    if len(returns) != len(lengths) or not all(type(n) is int and n >= 1 for n in lengths):
        raise CheckpointError(f"{path!r}: meta's 'episode_lengths' must be one integer >= 1 per episode of "
                              f"'episode_returns' ({len(returns)}), got {_shown(lengths, 120)}")
    if meta.get("iteration", 0) > meta["num_timesteps"]:
        raise CheckpointError(f"{path!r}: meta's 'iteration' {meta['iteration']} exceeds its 'num_timesteps' "
                              f"{meta['num_timesteps']} (every iteration runs at least one step)")
    rows = meta.get("unlogged_rows", [])
    if not isinstance(rows, list) or not all(isinstance(r, list) and all(isinstance(c, str) for c in r)
                                             for r in rows):
        raise CheckpointError(f"{path!r}: meta's 'unlogged_rows' must be a list of lists of strings")
    # The policy description and the config both say how the network was built: both loaders refuse a
    # file where they disagree (PPO.load builds from the config, load_policy from the description).
    # Not the temperature: it may be set on a built policy (ActorCritic.temperature), and the
    # description holds the one it acted with, which both loaders restore.
    for key in ("dtype", "hidden", "activation", "shared"):
        in_policy, in_config = meta["policy"][key], meta["config"].get(key, meta["policy"][key])
        if in_policy != in_config:
            raise CheckpointError(f"{path!r}: the policy's {key} {in_policy!r} differs from the config's "
                                  f"{in_config!r}: the file is damaged or was edited")
    return meta


def _check_entries(meta: dict[str, Any], headers: dict[str, tuple[tuple[int, ...], np.dtype]], path: str) -> None:
    """Every entry but the meta is one the meta's network and config call for, of the shape they give:
    the parameters (all of them), Adam's moments (as many as there are; the trainer's loader wants all),
    and the normaliser statistics (as :func:`_check_normalisers`). Dtypes and values are checked once
    the arrays are read (:func:`_load_into`, ``RunningMeanStd.load``)."""
    from minippo.policy import param_shapes
    from minippo.spaces import Discrete, as_space

    p = meta["policy"]
    try:
        obs_dim, hidden = integer("obs_dim", p["obs_dim"], 1), p["hidden"]
        if not isinstance(hidden, list) or not all(type(h) is int and h >= 1 for h in hidden):
            raise ValueError(f"hidden must be a list of integer layer widths >= 1, got {hidden!r}")
        shared = flag("shared", p["shared"])
        if shared and not hidden:
            raise ValueError("shared=True needs at least one hidden layer")
        space = as_space(p["action_space"])
        discrete = isinstance(space, Discrete)
        shapes = param_shapes(obs_dim, space.n if discrete else space.shape[0], hidden, shared, discrete)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path!r}: meta's policy description is invalid: {e}") from e
    expected = {f"param/{k}": v for k, v in shapes.items()}
    missing = [name for name in expected if name not in headers]
    if missing:
        raise CheckpointError(f"{path!r} is missing array {missing[0]!r}")
    for k, v in shapes.items():
        expected.update({f"adam/m.{k}": v, f"adam/v.{k}": v})
    for _, prefix in _NORMALISERS:
        width = (obs_dim,) if prefix == "obs_rms" else ()
        expected.update({f"{prefix}.mean": width, f"{prefix}.var": width, f"{prefix}.count": ()})
    for name, (shape, dtype) in headers.items():
        if name == "meta" or (name == "ret_acc" and len(shape) == 1):  # (files before session 11: ignored)
            continue
        if dtype.itemsize > 16:  # (a number's is at most 16; a crafted |V25000000 would be read whole first)
            raise CheckpointError(f"{path!r}: array {name!r} is {dtype}, not an array of numbers")
        if name not in expected:
            if name.startswith(("param/", "adam/")):
                raise CheckpointError(f"{path!r} has unexpected arrays {[name]}: it belongs to another network")
            raise CheckpointError(f"{path!r} has an unexpected entry {name!r}: not one minippo writes")
        if shape != expected[name]:
            raise CheckpointError(f"{path!r}: array {name!r} has shape {shape}, expected {expected[name]}")


_TRAINER_KEYS = ("iteration", "total_timesteps", "adam_t", "beta", "episode_returns", "episode_lengths")
_POLICY_KEYS = ("obs_dim", "action_space", "hidden", "activation", "shared", "temperature", "dtype")


def _load_into(
    target: dict[str, Array], arrays: dict[str, np.ndarray], prefix: str, path: str, to_device: Any = None
) -> None:
    """Copy ``arrays[prefix + k]`` into each ``target[k]`` in place, after checking all of them: present,
    same shape and dtype (a float64 array is not silently rounded into a float32 network), and no
    unexpected ``prefix`` entries. ``to_device`` moves a host array to the targets' device."""
    for k, dst in target.items():
        name = f"{prefix}{k}"
        if name not in arrays:
            raise CheckpointError(f"{path!r} is missing array {name!r}")
        src = arrays[name]
        if src.shape != tuple(dst.shape):
            raise CheckpointError(f"{path!r}: array {name!r} has shape {src.shape}, expected {tuple(dst.shape)}")
        if src.dtype != dst.dtype:
            raise CheckpointError(f"{path!r}: array {name!r} is {src.dtype}, the network is {dst.dtype}")
        if not np.isfinite(src).all():
            raise CheckpointError(f"{path!r}: array {name!r} holds NaN or inf")
    extra = sorted(a for a in arrays if a.startswith(prefix) and a[len(prefix):] not in target)
    if extra:
        raise CheckpointError(f"{path!r} has unexpected arrays {extra}: it belongs to another network")
    log_std = arrays.get(f"{prefix}log_std") if "log_std" in target else None
    if log_std is not None and log_std.size:
        _warn_log_std_outside(log_std, path)
    for k, dst in target.items():
        src = arrays[f"{prefix}{k}"]
        dst[...] = to_device(src) if to_device is not None else src


def _warn_log_std_outside(log_std: np.ndarray, path: str) -> None:
    """A UserWarning where a saved Gaussian log-std lies outside today's [LOG_STD_MIN, LOG_STD_MAX]
    (files saved before 2026-11-30 allowed -20): the policy acts with it clamped (its std larger), and
    a resumed run's first step clamps it, so sampled actions and log-probs differ from the saving
    version's (the deterministic actions, the means, do not)."""
    import warnings

    from minippo.policy import LOG_STD_MAX, LOG_STD_MIN
    from minippo.ppo import _user_frame

    lo, hi = float(log_std.min()), float(log_std.max())
    if lo < LOG_STD_MIN or hi > LOG_STD_MAX:
        bad = lo if lo < LOG_STD_MIN else hi
        warnings.warn(f"{path!r}: its log_std holds {bad:g}, outside [{LOG_STD_MIN:g}, {LOG_STD_MAX:g}] (an older "
                      f"minippo's range): the policy acts as if it were {min(max(bad, LOG_STD_MIN), LOG_STD_MAX):g} "
                      "(sampled actions differ from the saving version's; deterministic ones do not)",
                      UserWarning, stacklevel=_user_frame())


def _past_max_timesteps(total: Any) -> bool:
    """Whether ``total`` is an int64 budget above today's bound (MAX_TIMESTEPS)."""
    from minippo.config import MAX_TIMESTEPS

    return isinstance(total, int) and not isinstance(total, bool) and MAX_TIMESTEPS < total < 2**63


def _saved_config(meta: dict[str, Any]) -> dict[str, Any]:
    """meta's config, with log_std_init clamped to today's range: it only sets the initial value,
    which the saved log_std array replaces (versions before 0.1's range change allowed -20); and the
    trainer's total_timesteps (a learn(total) after the config was made moved it)."""
    from minippo.config import MAX_TIMESTEPS
    from minippo.policy import LOG_STD_MAX, LOG_STD_MIN

    cfg = dict(meta["config"])
    # The trainer's budget: learn(total) moves it past the config's, which files saved before session 61
    # kept. One past a config's range (a crafted file) stays out of it; the trainer takes it anyway.
    total = meta.get("total_timesteps")
    if isinstance(total, int) and not isinstance(total, bool) and 1 <= total <= MAX_TIMESTEPS:
        cfg["total_timesteps"] = total
    # Before 2**62 bounded it (2026-12-04), a budget up to 2**63 - 1 was saved ("train until stopped",
    # sys.maxsize): it is 2**62 now, a budget no run reaches either
    for c in (cfg, meta):
        if _past_max_timesteps(c.get("total_timesteps")):
            cfg["total_timesteps"] = MAX_TIMESTEPS
    v = cfg.get("log_std_init")
    if isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= sys.float_info.max:  # (not NaN)
        cfg["log_std_init"] = min(max(float(v), LOG_STD_MIN), LOG_STD_MAX)
    return cfg


def _policy_from_meta(meta: dict[str, Any], path: str) -> ActorCritic:
    p = meta["policy"]
    cfg = _saved_config(meta)
    try:
        return ActorCritic(
            p["obs_dim"], p["action_space"], p["hidden"], p["activation"], p["shared"],
            cfg.get("log_std_init", 0.0), cfg.get("seed", 0), np.dtype(p["dtype"]), p["temperature"],
        )
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path!r}: meta's policy description is invalid: {e}") from e


def _config_from_meta(meta: dict[str, Any], path: str) -> Any:
    import dataclasses

    from minippo.config import PPOConfig

    # Every format-1 checkpoint has stored every field (PPOConfig.to_dict): one missing is a damaged
    # or hand-edited file, whose run would silently continue on today's default.
    missing = sorted(f.name for f in dataclasses.fields(PPOConfig) if f.name not in meta["config"])
    if missing:
        raise CheckpointError(f"{path!r}: the saved config is missing {missing}")
    try:
        return PPOConfig.from_dict(_saved_config(meta))
    except (KeyError, TypeError, ValueError) as e:
        saved = meta.get("minippo")
        by = f" (saved by minippo {saved}, this is {__version__})" if saved != __version__ else ""
        raise CheckpointError(f"{path!r}: the saved config is invalid{by}: {e}") from e


_NORMALISERS = (("norm_obs", "obs_rms"), ("norm_reward", "ret_rms"))
"""(config flag, array prefix) of each normaliser a checkpoint may hold."""


def _check_normalisers(meta: dict[str, Any], arrays: dict[str, np.ndarray], path: str) -> None:
    """A checkpoint holds a normaliser's statistics exactly when its config turned it on (as every
    save writes them): both loaders refuse a file where the two disagree, rather than each trusting
    a different one of them."""
    for field, prefix in _NORMALISERS:
        on = meta["config"].get(field)
        held = sorted(k for k in arrays if k.startswith(f"{prefix}."))
        if on and not held:
            raise CheckpointError(f"{path!r} is missing the {prefix} normaliser statistics ({field} is on in "
                                  "its config)")
        if held and not on:
            raise CheckpointError(f"{path!r} has {prefix} normaliser statistics {held} but its config has "
                                  f"{field}={on!r}: the file is damaged or was edited")


def load_checkpoint(path: str, env: Any = None, **overrides: Any) -> Any:
    """A :class:`minippo.ppo.PPO` restored from ``path``, ready to resume ``learn``. ``env``: the vector
    env to train in (required when the model's env was custom: ValueError otherwise). A saved
    ``"module:EnvId"`` id whose module is not imported raises :class:`~minippo.envs.EnvImportRefused`:
    loading a file imports no code it names (import the module first, or pass ``env``)."""
    from minippo.backend import to_device
    from minippo.envs import EnvImportRefused, saved_env_module
    from minippo.ppo import PPO

    meta, arrays = read_checkpoint(path)
    saved_config = config = _config_from_meta(meta, path)
    _check_normalisers(meta, arrays, path)
    if overrides:
        config = config.replace(**overrides)
        if config.log_std_init != saved_config.log_std_init:  # (it went into the config and did nothing)
            raise ValueError(f"log_std_init={config.log_std_init} cannot override the saved "
                             f"log_std_init={saved_config.log_std_init}: it only sets a new network's log-std, "
                             "and the loaded one has its trained log-std (set policy.params['log_std'] to change "
                             "it)")
        for field, prefix in _NORMALISERS:
            if getattr(config, field) != getattr(saved_config, field):
                raise ValueError(f"{field}={getattr(config, field)} cannot override the saved {field}="
                                 f"{getattr(saved_config, field)}: the saved network was trained with it (and "
                                 f"{prefix}'s statistics resume with it); train a new model to change it")
    if "rng" not in meta:
        raise CheckpointError(f"{path!r}: meta is missing 'rng' (the trainer's random state)")
    # The trainer's state, written by every format-1 save; read_checkpoint's defaults serve load_policy,
    # which needs none of it. Resumed without them, Adam's bias correction would restart under old
    # moments and the CLI would cut progress.csv back to iteration 0.
    missing = [k for k in _TRAINER_KEYS if k not in meta]
    if missing:
        raise CheckpointError(f"{path!r}: meta is missing {missing} (the trainer's state a resume needs)")
    custom = meta.get("custom_env")
    if custom and env is None:
        raise ValueError(f"{path!r} was trained on {custom}, given as PPO(config, env=...), not made from "
                         f"config.env_id={config.env_id!r}: pass the env again, PPO.load(path, env=...)")
    module = saved_env_module(config.env_id) if env is None and config.env_id == saved_config.env_id else None
    if module is not None:
        raise EnvImportRefused(f"{path!r} was trained on {config.env_id!r}, whose module {module!r} is not "
                               f"imported: loading a checkpoint imports no code it names; import {module} first "
                               "if you trust it (or pass env=...)")
    algo = PPO(config, env=env)
    try:
        _restore(algo, meta, arrays, path, config, overrides, to_device)
    except BaseException:  # the env PPO made is closed now (an async one's workers stop)
        algo.close()
        raise
    return algo


def _restore(algo: Any, meta: dict[str, Any], arrays: dict[str, np.ndarray], path: str, config: Any,
             overrides: dict[str, Any], to_device: Any) -> None:
    """Into a fresh trainer ``algo`` built from ``path``'s ``config``: its parameters, Adam state,
    normaliser statistics, RNG, counters and schedule progress, from ``meta`` and ``arrays``."""
    algo.checkpoint_meta = meta
    saved, here = _policy_from_meta(meta, path).describe(), algo.policy.describe()
    space = meta["policy"]["action_space"]
    if isinstance(space, dict) and space.get("kind") == "box" and "dtype" not in space:
        saved["action_space"]["dtype"] = here["action_space"].get("dtype")  # saved before dtypes were
    # the temperature the policy acted with (set on it after it was built where the config's differs),
    # or an explicit temperature= override, which acts from here on (it went into the config, ignored)
    t = config.temperature if "temperature" in overrides else saved["temperature"]
    algo.policy.temperature = here["temperature"] = saved["temperature"] = t
    if saved != here:
        differ = sorted(k for k in saved if saved[k] != here[k])
        raise CheckpointError(f"{path!r}: the saved policy does not fit this env/config (" + "; ".join(
            f"{k}: saved {saved[k]!r}, here {here[k]!r}" for k in differ) + ")")
    _load_into(algo.policy.params, arrays, "param/", path, to_device)
    state = {k[len("adam/"):]: v for k, v in arrays.items() if k.startswith("adam/")}
    missing = [f"adam/{p}.{k}" for k in algo.policy.params for p in "mv" if f"{p}.{k}" not in state]
    if missing:
        raise CheckpointError(f"{path!r} is missing Adam moments {missing[:3]}")
    extra = sorted(f"adam/{k}" for k in state if k[2:] not in algo.policy.params or k[:2] not in ("m.", "v."))
    if extra:
        raise CheckpointError(f"{path!r} has unexpected arrays {extra[:3]}: it belongs to another network")
    t = meta["adam_t"]
    if t == 0 and any(bool(np.any(a != 0)) for a in state.values() if getattr(a, "dtype", None) is not None
                      and a.dtype.kind in "fiu"):
        # moments of one step, not counted: the fused numba step before session 66 set t after its kernel,
        # and a Ctrl-C landing between the two in a run's first update was saved so (Adam refuses t = 0)
        t = 1
    try:  # shapes, dtypes (a string array too) and values (finite, second moments >= 0) checked
        algo.optimizer.load_state_dict({**state, "t": t})
    except ValueError as e:  # (it names the arrays without their adam/ prefix)
        raise CheckpointError(f"{path!r}: in its adam/ arrays: {e}") from e
    for norm, prefix in ((algo.obs_norm, "obs_rms"), (algo.reward_scaler, "ret_rms")):
        if norm is None:
            continue
        try:
            norm.rms.load(prefix, arrays)
        except ValueError as e:
            raise CheckpointError(f"{path!r}: {e}") from e
    # The reward scaler's running discounted returns belong to the episodes in progress; the envs
    # restart from a fresh reset on resume, so they restart at 0 (as at the start) and are not saved
    # (a ret_acc array in a checkpoint from before session 11 is ignored).
    try:
        _check_rng_state(meta["rng"])
        algo.rng.bit_generator.state = meta["rng"]
    except (TypeError, ValueError, KeyError, OverflowError) as e:
        raise CheckpointError(f"{path!r}: meta's 'rng' is not a generator state: {e}") from e
    algo.num_timesteps = int(meta["num_timesteps"])
    algo.iteration = int(meta["iteration"])
    algo.time_elapsed = float(meta.get("time_elapsed", 0.0))
    # An explicit total_timesteps override wins over the saved budget (resume with a new target), as
    # learn(total) would take it: above the steps already run.
    if "total_timesteps" in overrides:
        if config.total_timesteps <= algo.num_timesteps:
            from minippo.ppo import TotalReached

            raise TotalReached(config.total_timesteps, algo.num_timesteps,
                               "a resumed run trains up to total_timesteps steps in all")
        algo.total_timesteps = config.total_timesteps
    elif _past_max_timesteps(meta["total_timesteps"]) or meta["total_timesteps"] == 0:
        # (a file from before the bound, see _saved_config; 0, which no save writes: the config's)
        algo.total_timesteps = config.total_timesteps
    else:
        algo.total_timesteps = int(meta["total_timesteps"])
    # beta is state (the adaptive KL rule moved it); an explicit kl_beta override restarts it there
    algo.kl_coef.beta = config.kl_beta if "kl_beta" in overrides else min(max(float(meta["beta"]), 5e-324), 2.0**1023)
    algo.episode_returns.extend(meta["episode_returns"])
    algo.episode_lengths.extend(meta["episode_lengths"])


class Policy:
    """A trained policy for deployment: numpy only, no gymnasium, no trainer.

    ``predict(obs)`` takes one observation (obs_dim,) or a batch (B, obs_dim) of raw env
    observations (normalised here with the saved statistics) and returns actions ready for
    the env (discrete offset applied, continuous clipped to the bounds).
    """

    def __init__(self, policy: ActorCritic, obs_mean: np.ndarray | None, obs_var: np.ndarray | None,
                 env_id: str = "", meta: dict[str, Any] | None = None) -> None:
        """``obs_mean`` and ``obs_var`` (obs_dim,): the observation normaliser's saved statistics, or
        both None (no normalisation); ``meta``: the checkpoint's meta (:func:`load_policy`)."""
        if not isinstance(policy, ActorCritic):
            raise TypeError(f"policy must be an ActorCritic, got {type(policy).__name__}")
        if (obs_mean is None) != (obs_var is None):
            raise ValueError("obs_mean and obs_var must be given together (or both None: no normalisation)")
        for name, a in (("obs_mean", obs_mean), ("obs_var", obs_var)):
            if a is not None and (not isinstance(a, np.ndarray) or a.shape != (policy.obs_dim,) or a.dtype.kind != "f"):
                raise ValueError(f"{name} must be a float array of shape ({policy.obs_dim},), got "
                                 f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}")
        self.policy = policy
        self._obs_mean, self._obs_var = obs_mean, obs_var
        self.env_id = env_id
        self.meta = meta or {}
        self.custom_env: str | None = self.meta.get("custom_env")
        """The class name of the env it was trained on when that env was given as ``PPO(config, env=...)``
        without a gymnasium id (``env_id`` is then not that env's; evaluate with ``env=``), else None."""

    # (checked only when made: set later, a (5, 4) mean made predict return five actions for one
    # observation, and None switched normalising off without a word)
    _HOW = "Policy(policy, obs_mean, obs_var) checks them (load_policy(path) gives the saved ones)"
    obs_mean = fixed("Policy", "obs_mean", _HOW, "The normaliser's saved mean (obs_dim,), or None.")
    obs_var = fixed("Policy", "obs_var", _HOW, "The normaliser's saved variance (obs_dim,), or None.")

    def __setstate__(self, state: dict) -> None:  # (pickles from before the fixed properties: renamed)
        self.__dict__.update(renamed_state(state, ("obs_mean", "obs_var")))

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        """Raw obs (obs_dim,) or (B, obs_dim) -> what the network saw in training (saved statistics,
        clip +-10)."""
        obs = check_obs(obs, self.policy.obs_dim, self.policy.dtype)
        if self.obs_mean is None:
            return obs
        return np.clip((obs - self.obs_mean) / np.sqrt(self.obs_var + 1e-8), -10.0, 10.0).astype(self.policy.dtype)

    def predict(
        self, obs: np.ndarray, deterministic: bool = True,
        rng: np.random.Generator | np.random.RandomState | None = None,
    ) -> np.ndarray:
        """obs (obs_dim,) or (B, obs_dim) -> env actions () / (d,) or (B,) / (B, d)."""
        return self.policy.env_actions(self.policy._predict(self.normalize(obs), deterministic, rng))  # (checked)


def load_policy(path: str) -> Policy:
    """Load just what is needed to act from a checkpoint (numpy only)."""
    meta, arrays = read_checkpoint(path)
    _config_from_meta(meta, path)  # the checks PPO.load makes, so both refuse the same files
    _check_normalisers(meta, arrays, path)
    policy = _policy_from_meta(meta, path)
    _load_into(policy.params, arrays, "param/", path)
    mean = var = None
    if meta["config"]["norm_obs"]:
        from minippo.envs import RunningMeanStd

        rms = RunningMeanStd((policy.obs_dim,))
        try:
            rms.load("obs_rms", arrays)
        except ValueError as e:
            raise CheckpointError(f"{path!r}: {e}") from e
        mean, var = rms.mean, rms.var
    return Policy(policy, mean, var, meta["config"].get("env_id", ""), meta)


EVAL_MAX_STEPS = 100_000
"""Longest evaluation episode of an env without a time limit of its own."""


def check_env_fits(policy: ActorCritic, env: Any, name: str) -> None:
    """Raise :class:`EnvMismatchError` unless the single (not vector) gymnasium ``env`` has the
    observation shape (obs_dim,) and the action space ``policy`` was built for."""
    from minippo.spaces import as_space

    shape = getattr(env.observation_space, "shape", None)
    try:  # the action dtype is left out: actions are cast to the env's (and old checkpoints lack it)
        action = {k: v for k, v in as_space(env.action_space).to_dict().items() if k != "dtype"}
    except (TypeError, ValueError) as e:
        action = f"{env.action_space} ({e})"
    want = {k: v for k, v in policy.action_space.to_dict().items() if k != "dtype"}
    if shape != (policy.obs_dim,) or action != want:
        raise EnvMismatchError(
            f"env {name} does not fit the policy: observations {env.observation_space} and actions "
            f"{env.action_space}, the policy takes observations of shape ({policy.obs_dim},) and actions "
            f"{want} (a policy trained through wrappers is evaluated with evaluate_policy(..., env=<wrapped env>))"
        )


def evaluate_policy(
    policy: ActorCritic | Policy,
    env_id: str | None,
    n_episodes: int = 10,
    deterministic: bool = True,
    seed: int = 0,
    obs_norm: Any = None,
    env_kwargs: dict[str, Any] | None = None,
    rng: np.random.Generator | None = None,
    max_steps: int | None = None,
    env: Any = None,
) -> dict[str, Any]:
    """Play ``n_episodes`` episodes in one gymnasium env; returns env_id, episodes, mean_return,
    std_return, returns, lengths, cut (episodes ended by ``max_steps``). ``policy``: a trainer's
    ActorCritic (``obs_norm``, frozen, normalises its observations), a loaded :class:`Policy` (it
    normalises itself), or a :class:`~minippo.ppo.PPO` trainer (its policy and observation statistics).
    An ActorCritic without ``obs_norm`` plays the raw observations: for a model trained with
    ``norm_obs``, pass the trainer itself (``model``, not ``model.policy``: a Pendulum policy scored
    -1229 that way against -280 with its statistics, in session 68's audit).

    The env is ``gymnasium.make(env_id, **env_kwargs)``, or ``env`` when given: a single (not
    vector) gymnasium env, e.g. wrapped as the policy was in training; it is reset with the
    evaluation seeds and left open. Its spaces must be the policy's (:class:`EnvMismatchError`).

    Episode i resets with ``seed + i``; sampled actions (``deterministic=False``) are drawn from
    ``rng``, by default :func:`minippo.config.agent_rng` of ``seed``, a stream apart from the resets'.

    ``max_steps`` caps an episode (default: the env's own time limit, else :data:`EVAL_MAX_STEPS`),
    so that an env without a time limit cannot keep evaluation running for ever; an episode cut
    there counts with the return it had."""
    from minippo.envs import MAKING_ENVS, _gym, check_env_id, dependency_errors
    from minippo.ppo import PPO

    if isinstance(policy, PPO):  # (as Stable-Baselines3's evaluate_policy(model, ...)): its policy and statistics
        policy, obs_norm = policy.policy, policy.obs_norm if obs_norm is None else obs_norm
    if not isinstance(policy, (ActorCritic, Policy)) and not all(
            hasattr(policy, k) for k in ("predict", "obs_dim", "action_space")):
        raise TypeError(f"policy must be an ActorCritic (PPO.policy), a Policy (load_policy) or an object with "
                        f"predict, obs_dim and action_space, got {type(policy).__name__}")
    n_episodes = integer("n_episodes", n_episodes, 1)
    seed, deterministic = integer("seed", seed, 0), flag("deterministic", deterministic)
    if max_steps is not None:
        max_steps = integer("max_steps", max_steps, 1)
    own = env is None
    if own:
        if env_id is None:
            raise ValueError("evaluate_policy needs env_id or env")
        if hasattr(env_id, "step") and hasattr(env_id, "reset"):
            raise TypeError(f"env_id must be a gymnasium id such as 'CartPole-v1', got the env "
                            f"{type(env_id).__name__}: an env object goes as env=..., "
                            "evaluate_policy(policy, None, env=env)")
        gym = _gym()
        check_env_id(env_id)
        with MAKING_ENVS, dependency_errors(env_id, env_kwargs):  # (one make at a time: see MAKING_ENVS)
            env = gym.make(env_id, **(env_kwargs or {}))
    elif hasattr(env, "num_envs"):
        raise ValueError("env must be a single gymnasium env, not a vector env")
    spec_id = getattr(getattr(env, "spec", None), "id", None)
    env_id = env_id if env_id is not None else spec_id or type(env).__name__
    try:
        check_env_fits(policy.policy if isinstance(policy, Policy) else policy, env, env_id)
        if max_steps is None:
            max_steps = getattr(getattr(env, "spec", None), "max_episode_steps", None) or EVAL_MAX_STEPS
    except BaseException:
        if own:
            env.close()
        raise
    from minippo.config import agent_rng

    rng = rng if rng is not None else agent_rng(seed)  # (apart from the episodes' reset streams)
    if isinstance(policy, ActorCritic):
        from minippo.backend import array_module

        # the observation goes where the parameters are (not to MINIPPO_BACKEND's device: a policy
        # loaded with load_policy keeps host parameters on every backend)
        xp = array_module(next(iter(policy.params.values())))

        def act(o: np.ndarray) -> np.ndarray:
            o = check_obs(o, policy.obs_dim, policy.dtype)  # (named, as Policy.predict names it)
            o = np.ascontiguousarray(o.reshape(1, *o.shape))  # (not o[None]: row stride 0, see predict)
            if obs_norm is not None:
                o = obs_norm(o, update=False)
            return policy.env_actions(policy._actions_only(xp.asarray(o), rng, deterministic)[0])
    else:
        def act(o: np.ndarray) -> np.ndarray:
            return policy.predict(o, deterministic, rng)

    def finite(obs: Any, r: float, ep: int, length: int) -> None:
        """A NaN or inf from the env stops evaluation, named as training names it (not a NaN mean
        return, or an error about the policy's input or output)."""
        a = np.asarray(obs)
        if math.isfinite(r) and (a.dtype.kind not in "fc" or np.isfinite(a).all()):  # (integers are finite)
            return
        from minippo.ppo import NonFiniteEnvError

        what = "reward" if not math.isfinite(r) else "observation"
        at = "on reset" if length == 0 else f"at step {length}"
        raise NonFiniteEnvError(f"env {env_id!r} returned a non-finite {what} in evaluation episode {ep} {at}: "
                                f"{r if what == 'reward' else a}")

    # Box actions in the env's dtype (check_env_fits compares the bounds, not the dtype: a float64 policy
    # plays a float32 env), as training casts them
    dtype = getattr(env.action_space, "dtype", None)
    box = is_kind(env.action_space, "Box") and dtype is not None and np.dtype(dtype).kind == "f"

    def to_env(a: Any) -> Any:
        return np.asarray(a).astype(dtype, copy=False) if box else a

    returns, lengths, cut = [], [], 0
    try:
        for ep in range(n_episodes):
            obs = reset_obs(env.reset(seed=seed + ep), env_id)
            finite(obs, 0.0, ep, 0)
            total, length, done = 0.0, 0, False
            while not done:
                obs, r, term, trunc, _ = env.step(to_env(act(obs)))
                r = float(r)
                finite(obs, r, ep, length + 1)
                total += r
                length += 1
                done = bool(term or trunc)
                if not done and length >= max_steps:
                    cut += 1
                    break
            returns.append(total)
            lengths.append(length)
    finally:
        if own:
            env.close()
    return {
        "env_id": env_id,
        "episodes": n_episodes,
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "returns": returns,
        "lengths": lengths,
        "cut": cut,
    }
