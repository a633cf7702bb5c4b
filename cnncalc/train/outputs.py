"""A run's output folder: checked before any work, locked against a second run, cleaned of stale
temporary files; and the safe name of the interrupt checkpoint when there is no folder.

:func:`claim_out_dir` is what :func:`cnncalc.train.run` calls first:

* the path must be a folder that can be created and written (not ``''``, not below a file, not
  read-only, not ``/proc``), and ``last.npz`` / ``best.npz`` / ``metrics.csv`` must not be
  folders: otherwise :class:`TrainError` before the data is even loaded;
* a folder that already holds a run's files (``last.npz``, ``best.npz``, ``metrics.csv``) is
  refused unless the run resumes or ``overwrite`` is given (which deletes them first), so a
  1-epoch run never silently replaces a 3-epoch run;
* ``run.lock`` (JSON: PID, host, start time) is created exclusively; a second run on the folder
  refuses, naming the first. A lock left by a dead process on this host is taken over;
* ``.*.tmp`` files left by killed writes (each process writes under a unique temporary name) are
  removed once the lock is held.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import tempfile
import time
from pathlib import Path

from cnncalc.errors import TrainError

__all__ = ["LOCK_NAME", "RUN_FILES", "OutDir", "claim_out_dir", "interrupt_checkpoint_name"]

LOCK_NAME = "run.lock"
#: files whose presence means the folder holds a run
RUN_FILES = ("last.npz", "best.npz", "metrics.csv")
#: what ``overwrite`` removes before a fresh run (derived outputs of the old run included)
OLD_OUTPUTS = (*RUN_FILES, "curves.png", "report.html")


def interrupt_checkpoint_name(spec_name: str | None, folder: str | os.PathLike = ".") -> Path:
    """``<folder>/<name>-interrupted.npz`` with ``name`` reduced to ``[A-Za-z0-9._-]`` (no
    separators, no ``..``, no leading dot), so a spec's ``name: "../../evil"`` or ``"nodir/x"``
    still lands in ``folder``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(spec_name or "")).strip("._-")
    safe = re.sub(r"\.{2,}", ".", safe)[:100] or "model"
    return Path(folder) / f"{safe}-interrupted.npz"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


class OutDir:
    """A claimed output folder; :meth:`release` (or leaving the ``with`` block) drops the lock."""

    def __init__(self, path: Path, lock: Path):
        self.path = path
        self.lock = lock

    def release(self) -> None:
        with contextlib.suppress(OSError):
            info = json.loads(self.lock.read_text())
            if info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
                self.lock.unlink()

    def __enter__(self) -> OutDir:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _unwritable(path: Path, reason: str) -> TrainError:
    return TrainError(f"cannot write the run's outputs to --out {path}: {reason}",
                      hint="pick a folder you can write to, e.g. --out runs/NAME")


def _check_writable(path: Path) -> None:
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.is_dir():
            raise _unwritable(path, f"{parent} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _unwritable(path, e.strerror or type(e).__name__) from None
    for name in RUN_FILES:
        if (path / name).is_dir():
            raise _unwritable(path, f"{path / name} is a folder, so it cannot be written")
    try:   # a real write: access() says yes on /proc and read-only mounts for root
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise _unwritable(path, e.strerror or type(e).__name__) from None


def _take_lock(path: Path) -> Path:
    lock = path / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                other = json.loads(lock.read_text())
                pid, host = int(other["pid"]), str(other["host"])
            except (OSError, ValueError, KeyError, TypeError):
                other, pid, host = None, None, None
            if other is not None and host == me["host"] and not _pid_alive(pid):
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()       # stale: its process is gone
                continue
            who = (f"process {pid} on host {host}" if other is not None
                   else "another run (unreadable lock)")
            raise TrainError(f"--out {path} is in use by {who} (lock file {lock})",
                             hint="wait for that run to finish, pick another --out, or delete "
                                  "the lock file if that run is gone") from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return lock
    raise TrainError(f"cannot take the lock {lock}", hint="another run keeps taking it")


def _clean_stale_temporaries(path: Path) -> None:
    for tmp in path.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            if tmp.is_file():
                tmp.unlink()


def claim_out_dir(out: str | os.PathLike, *, resume: bool = False,
                  overwrite: bool = False) -> OutDir:
    """Check, lock and clean ``out`` for a run (see the module docstring).

    Raises
    ------
    TrainError
        Empty path, unwritable folder, a run's file is a folder, another run's files without
        ``resume``/``overwrite``, or another live run holds the lock.
    """
    if str(out).strip() == "":
        raise _unwritable(Path(str(out)), "the path is empty")
    path = Path(out).expanduser()
    _check_writable(path)
    lock = _take_lock(path)
    try:
        found = [n for n in RUN_FILES if (path / n).exists()]
        if found and not (resume or overwrite):
            raise TrainError(f"--out {path} already holds a run ({', '.join(found)})",
                             hint=f"continue it with --resume {path / 'last.npz'}, replace it "
                                  "with --overwrite, or pick another --out")
        if found and overwrite and not resume:   # no best.npz of the old run survives
            for name in OLD_OUTPUTS:
                with contextlib.suppress(FileNotFoundError):
                    (path / name).unlink()
        _clean_stale_temporaries(path)
    except BaseException:
        with contextlib.suppress(OSError):
            lock.unlink()
        raise
    return OutDir(path, lock)
