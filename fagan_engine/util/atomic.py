"""Crash-safe file writes: temp file in the target folder, fsync, then rename over the target."""
from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, Union

from fagan_engine.util.errors import OutputError
from fagan_engine.util.failures import interrupts_deferred

PathLike = Union[str, "os.PathLike[str]"]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success fsync it and rename it onto ``target``.

    A crash or ``kill -9`` at any instant leaves either the old target or the new one, never a
    partial file. On any exception the temporary file is removed and the error re-raised
    (OSError is turned into a one-line OutputError).
    """
    target = Path(target)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=str(target.parent))
    except OSError as exc:  # a missing or read-only folder: one line, nothing written
        raise OutputError(describe_os_error(exc, target)) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_current_umask())
        fsync_file(tmp)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except OSError as exc:
        _remove_quietly(tmp)
        raise OutputError(describe_os_error(exc, target)) from None
    except BaseException:
        _remove_quietly(tmp)
        raise


def atomic_write_bytes(target: PathLike, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)


def prepare_output_folder(target: PathLike) -> None:
    """Create ``target``'s folder (and its parents) and check that it is writable, before a long run that ends by
    writing ``target``; a one-line ``OutputError`` otherwise (also when ``target`` is itself a folder)."""
    if Path(target).is_dir():
        raise OutputError(f"cannot write {target}: it is a folder; name a file")
    folder = Path(target).parent
    blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise OutputError(f"cannot write {target}: {blocking} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(describe_os_error(exc, target)) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"permission denied writing {target}")


@contextlib.contextmanager
def prepared_output_folder(target: PathLike) -> Iterator[Path]:
    """``prepare_output_folder(target)`` for the length of a run: when the run fails or is interrupted, the folders it
    created (``target``'s folder and new parents) are removed again where nothing else was written into them."""
    folder = Path(target).parent
    created = missing_folders(folder)
    prepare_output_folder(target)
    try:
        yield folder
    except BaseException:
        remove_empty_folders(created)
        raise


def missing_folders(folder: Path) -> List[Path]:
    """``folder`` and its parents that do not exist yet, deepest first: what creating ``folder`` would make."""
    return [f for f in (folder, *folder.parents) if not f.exists()]


def remove_empty_folders(created: List[Path]) -> None:
    """Remove ``created`` (deepest first, as ``missing_folders`` lists them) up to the first that holds anything."""
    for made in created:
        try:
            made.rmdir()
        except OSError:
            break


def describe_os_error(exc: OSError, target: PathLike) -> str:
    """One-line, user-facing description of a failed write."""
    if exc.errno == errno.ENOSPC:
        return f"no space left on device while writing {target}"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"permission denied writing {target}"
    return f"cannot write {target}: {exc.strerror or exc}"


LOW_SPACE_BYTES = 1 << 20
"""A failed write with less free space than this left is reported as a full disk (``write_error``)."""


def write_error(target: PathLike, detail: str, error_number: Optional[int] = None) -> OutputError:
    """One-line OutputError for a failed write of ``target``; on a nearly full disk, a full disk.

    ITK writers do not expose errno (they raise RuntimeError, or leave a short file), so for them
    (``error_number`` None) the free space left, measured while the partial file still exists, decides.
    """
    if error_number == errno.ENOSPC or (error_number is None and _free_bytes(Path(target).parent) < LOW_SPACE_BYTES):
        return OutputError(f"no space left on device while writing {target}")
    return OutputError(f"cannot write {target}: {detail}")


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(str(folder)).free
    except OSError:
        return LOW_SPACE_BYTES


def fsync_file(path: Path) -> None:
    """Flush a file's data to disk."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def fsync_dir(folder: Path) -> None:
    """Persist renames in ``folder`` on POSIX; best effort, as some file systems refuse it."""
    if os.name != "posix":
        return
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def publish_files(moves: List[Tuple[Path, Path]], force: bool, target: PathLike) -> None:
    """Move each staged file onto its final name, in order, without ever replacing a file unless ``force``.

    Without ``force`` each file is hard-linked to its final name, which fails atomically if the
    name exists (another process may have created it since the output check); on any failure
    the names published so far are removed again. With ``force`` files are ``os.replace``d. Ctrl-C and SIGTERM wait until
    every file is moved (``interrupts_deferred``): a detached header is never left beside another run's data file.
    Raises OutputError.
    """
    published: List[Path] = []
    try:
        with interrupts_deferred():
            for source, destination in moves:
                if force:
                    os.replace(source, destination)
                    continue
                _link_exclusive(source, destination)
                published.append(destination)
    except FileExistsError as exc:
        _unpublish(published)
        raise OutputError(f"output {exc.filename2 or target} already exists (created meanwhile); pass --force to overwrite it") from None
    except OSError as exc:
        _unpublish(published)
        raise OutputError(describe_os_error(exc, target)) from None


def process_alive(pid: int) -> bool:
    """True when a process with this id runs on this machine (or cannot be checked)."""
    if pid <= 0:
        return False
    if os.name == "nt":
        return _windows_process_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to someone else
        return True
    return True


def _windows_process_alive(pid: int) -> bool:
    handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return False
    ctypes.windll.kernel32.CloseHandle(handle)
    return True


def _link_exclusive(source: Path, destination: Path) -> None:
    """Hard-link ``source`` to ``destination`` (FileExistsError if it exists), then drop ``source``.

    Where hard links are unsupported, the name is reserved with O_EXCL and then replaced.
    """
    try:
        os.link(source, destination)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.EXDEV, errno.ENOSYS):
            raise
        os.close(os.open(destination, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        os.replace(source, destination)
        return
    os.unlink(source)


def _unpublish(paths: List[Path]) -> None:
    for path in paths:
        _remove_quietly(path)


def remove_stale_temp_files(folder: Path, older_than: float, target: Optional[str] = None) -> None:
    """Remove ``atomic_path`` temporaries (``.<name>.<random>.tmp*``) in ``folder`` last modified
    before ``older_than`` (a time.time()); the caller holds the folder's lock (``target``: only those of that file name,
    whose lock the caller holds), so they are orphans."""
    if not Path(folder).is_dir():
        return
    prefix = f".{target}." if target is not None else "."
    for entry in Path(folder).iterdir():
        if entry.name.startswith(prefix) and ".tmp" in entry.name and entry.is_file():
            with contextlib.suppress(OSError):
                if entry.stat().st_mtime < older_than:
                    entry.unlink()
