"""An exclusive, crash-safe lock on a folder: two training processes never share a run folder, and
two batches never write one report (or the same shard of one output folder).

The lock is an OS advisory lock (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows) on
``.fagan.lock`` (or another name) in the folder; the OS drops it when the holder exits or is killed (``kill -9``
leaves no stale lock). The holder's PID is written into the file so a refused process can
name it.
"""
from __future__ import annotations

import contextlib
import errno
import os
import time
from pathlib import Path
from typing import List, Optional

from fagan_engine.util.atomic import missing_folders, remove_empty_folders
from fagan_engine.util.errors import ConfigError

LOCK_FILE = ".fagan.lock"
_PID_OFFSET = 16  # Windows locks byte 0; the PID lives past it so other processes can read it


class RunFolderLock:
    """Held from ``acquire()`` until ``release()`` or process exit; ``acquired_at`` is its time."""

    def __init__(self, folder: Path, what: str = "run folder", name: str = LOCK_FILE, remove: bool = False,
                 label: Optional[str] = None) -> None:
        self.folder = Path(folder)
        self.what = what
        self.label = label or f"{what} {self.folder}"
        """How messages name what is locked."""
        self.path = self.folder / name
        self.remove = remove
        """Delete the lock file on release (safe: ``acquire`` re-checks that the locked file is still the named one)."""
        self.fd: Optional[int] = None
        self.acquired_at = 0.0
        self.created_folders: List[Path] = []
        """The folder and the parents of it that ``acquire`` created, deepest first."""

    def acquire(self) -> "RunFolderLock":
        """Create the folder if needed and lock it; ConfigError naming the holder's PID if taken."""
        self.created_folders = missing_folders(self.folder)
        while True:
            fd = self._open()
            if not _try_lock(fd):
                holder = _read_pid(fd)
                os.close(fd)
                who = f"process {holder}" if holder else "another process"
                raise ConfigError(f"{self.label} is in use by {who}; wait for it to end or stop it first")
            if _still_named(fd, self.path):
                break
            os.close(fd)  # a holder removed the file between our open and lock: lock the new one
        os.lseek(fd, _PID_OFFSET, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".ljust(16).encode("ascii"))
        self.fd, self.acquired_at = fd, time.time()
        return self

    def _open(self) -> int:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileExistsError:
            raise ConfigError(f"{self.what} {self.folder} exists and is not a folder") from None
        except OSError as exc:
            reason = "is not writable" if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else f"cannot be used ({exc.strerror})"
            raise ConfigError(f"{self.what} {self.folder} {reason}") from None

    def release(self) -> None:
        """Drop the lock; the folders this lock created (the folder and its new parents) that nothing else used are
        removed again."""
        if self.fd is None:
            return
        alone = bool(self.created_folders) and [p.name for p in self.folder.iterdir()] == [self.path.name]
        if self.remove or alone:
            with contextlib.suppress(OSError):
                self.path.unlink()  # while still locked, so no one else holds the unlinked file
        if alone:
            remove_empty_folders(self.created_folders)
        os.close(self.fd)  # closing drops the lock
        self.fd = None

    def __enter__(self) -> "RunFolderLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _try_lock(fd: int) -> bool:
    if os.name == "nt":
        import msvcrt  # lazy: Windows only (no fcntl there)

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl  # lazy: POSIX only (no msvcrt there)

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise ConfigError(f"cannot lock {LOCK_FILE}: {exc.strerror}") from None
    return True


def _still_named(fd: int, path: Path) -> bool:
    """True when ``path`` still names the open file ``fd`` (it was not removed and re-created meanwhile)."""
    try:
        named, held = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _read_pid(fd: int) -> Optional[int]:
    try:
        os.lseek(fd, _PID_OFFSET, os.SEEK_SET)
        return int(os.read(fd, 32).decode("ascii").strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
