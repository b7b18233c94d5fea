"""Files written whole or not at all: the project's one writer of what it keeps on disk (checkpoints, results,
reports). Each file is written to a temporary file in its folder, flushed, then moved into place with
``os.replace``: a reader sees the old file or the new one, never half of one, and a failed write (a full disk, a
read-only folder) leaves the old file as it was and is one :class:`OutputError` naming the folder.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable

__all__ = ["OutputError", "atomic_write", "atomic_write_text", "atomic_write_json", "atomic_copy"]


class OutputError(RuntimeError):
    """The output folder cannot be written (full, read-only, not permitted); the message names the folder, and
    ``why`` says what stopped the write."""

    why: str = ""

    @classmethod
    def writing(cls, path: str | os.PathLike, exc: BaseException) -> "OutputError":
        """The error for a failed write of ``path`` (its folder is named, and what to do)."""
        path = Path(path)
        why = why_not_written(path.parent, exc)
        err = cls(f"cannot write {path.name} in {path.parent} ({why}); free space there or pass --output-dir on "
                  "another disk (what is already in the folder is intact)")
        err.why = why
        return err


def why_not_written(directory: Path, exc: BaseException) -> str:
    """What stopped a write into ``directory``, in words: the OS error, or for torch's writer (which reports a full
    disk as ``unexpected pos ...``) what the folder says about itself."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno).lower()
    try:
        if shutil.disk_usage(directory).free < 1 << 20:
            return os.strerror(errno.ENOSPC).lower()
        if not os.access(directory, os.W_OK):
            return os.strerror(errno.EACCES).lower()
    except OSError:
        pass
    return (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:160]


def _temp_in(directory: Path, name: str) -> Path:
    """An empty temporary file in ``directory`` with the permissions the file ``name`` gets: those of the file it
    replaces, else what ``open`` would give a new file under the umask (0644 under the usual 022), not
    ``mkstemp``'s 0600, which would keep a shared folder's users (or a model server's account) out."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        mode = stat.S_IMODE(os.stat(directory / name).st_mode)
    except OSError:
        mode = 0o666 & ~_umask()
    os.chmod(tmp, mode)
    return Path(tmp)


def _umask() -> int:
    """The process's umask, read without changing it where Linux says it (``os.umask`` can only read it by setting
    it, which another thread could see)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """``write`` a temporary file next to ``path``, flush it to disk, then ``os.replace`` it into place: a reader
    sees the old file or the new one, never half of one, and a failure leaves the old file as it was."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_in(path.parent, path.name)
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch's zip writer raises RuntimeError on a full disk
        raise OutputError.writing(path, exc) from None
    finally:
        if tmp is not None:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
    return path


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy ``src`` to ``dst`` through a temporary file in ``dst``'s directory."""
    return atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def atomic_write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON through a temporary file next to ``path``."""
    text = json.dumps(obj, indent=2) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))




def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` through a temporary file next to ``path``."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
