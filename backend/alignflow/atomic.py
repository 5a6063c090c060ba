"""Atomic file and folder writes: a reader (or a killed process) never sees a half-written result.

The temporary names say which process wrote them (``.NAME.PID@HOST.RANDOM.tmp``), so the leftovers of a process
that was killed (kill -9, a power cut) can be told from the work of one that still runs and removed on the next
start (``remove_stale_temporaries``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _process_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# tempfile creates files 0600 and folders 0700; results get the permissions a plain open()/mkdir() would give them.
_UMASK = _process_umask()
FILE_MODE, FOLDER_MODE = 0o666 & ~_UMASK, 0o777 & ~_UMASK
HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
# .NAME.PID@HOST.RANDOM.tmp (or .old): a temporary of atomic_open / atomic_directory, and the process that made it.
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)\.[^.]+\.(?:tmp|old)$")


def temporary_prefix(name: str) -> str:
    """``.NAME.PID@HOST.``: the start of a temporary's name that ``stale_temporaries`` can trace to its writer."""
    return f".{name}.{os.getpid()}@{HOST}."


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine still runs (a zombie, ended but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except FileNotFoundError:
        return False
    except (OSError, IndexError):  # no procfs (macOS): signal 0 asks whether the process exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def stale_temporaries(folder: Path) -> list[Path]:
    """Temporaries in ``folder`` whose writer, a process of this machine, has ended: safe to delete.

    Those of a live process (or of another machine, which cannot be asked) are not listed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = []
    for entry in sorted(folder.iterdir()):
        match = _TEMPORARY.match(entry.name)
        if match and match["host"] == HOST and not process_alive(int(match["pid"])):
            stale.append(entry)
    return stale


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete ``stale_temporaries(folder)`` (half-written checkpoints, exports, uploads of killed processes)."""
    removed = stale_temporaries(folder)
    for path in removed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return removed


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; when the block succeeds it is fsynced and renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path.name), suffix=".tmp")
    os.fchmod(fd, FILE_MODE)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


@contextlib.contextmanager
def atomic_directory(path: Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``path`` in one rename (the old one is kept until then)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not overwrite:
        raise FileExistsError(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=temporary_prefix(path.name), suffix=".tmp"))
    tmp.chmod(FOLDER_MODE)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(dir=path.parent, prefix=temporary_prefix(path.name), suffix=".old"))
        old.rmdir()
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
