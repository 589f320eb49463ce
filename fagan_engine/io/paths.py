"""Which files a path stands for, and whether an output would reach an input.

An output must never replace an input, even with ``--force``: not by the same name, not through
a symbolic or hard link, not through a detached header's data file (``.nhdr``/``.mhd``), and a
DICOM output folder must not hold an input. ``InputFiles`` answers that from the file system
(device and inode, else the resolved name), in one pass over a batch's inputs.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

from fagan_engine.util.errors import InputError, OutputError

DETACHED_DATA_SUFFIXES = {".mhd": (".raw", ".zraw"), ".nhdr": (".raw", ".raw.gz")}
"""Data file names a writer may give a detached header's voxels (``<stem><suffix>``)."""
_DATA_FIELD = {".mhd": re.compile(rb"^[ \t]*ElementDataFile[ \t]*=[ \t]*(\S(?:[^\r\n]*\S)?)[ \t]*\r?$", re.M),
               ".nhdr": re.compile(rb"^[ \t]*data ?file[ \t]*:[ \t]*(\S(?:[^\r\n]*\S)?)[ \t]*\r?$", re.M | re.I)}
"""A detached header's data-file field; the name runs to the end of the line, so it may hold spaces (``my scan.raw``)."""
_HEADER_BYTES = 1 << 16
Key = Tuple[object, ...]


NAME_MAX = 255
"""Longest file or folder name (bytes) of the common file systems (ext4, APFS, NTFS in UTF-16 units)."""


def path_text(path: Any, what: str) -> str:
    """``path`` (a ``str`` or ``os.PathLike`` such as ``pathlib.Path``) as checked text (``check_path_text``); InputError
    (one line) for anything else (a number, None)."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise InputError(f"{what} path must be a string or a pathlib.Path, got {type(path).__name__}")
    check_path_text(path, what)
    return path


def check_path_text(path: str, what: str) -> None:
    """InputError (one line) for a path no file system or library here can hold: empty, with a NUL byte, not valid
    UTF-8 (SimpleITK aborts the process on such a name), or with a name longer than ``NAME_MAX`` bytes."""
    if not path or "\0" in path:
        raise InputError(f"{what} path {path!r} is empty or holds a NUL byte")
    try:
        encoded = [part.encode("utf-8") for part in Path(path).parts]
    except UnicodeEncodeError:
        raise InputError(f"{what} path {path!r} is not valid UTF-8; rename it") from None
    if any(len(part) > NAME_MAX for part in encoded):
        raise InputError(f"{what} path {path[:60]!r}... has a name longer than {NAME_MAX} bytes")


def lower_extension(path: str) -> str:
    """The lower-case extension, ``.nii.gz`` and ``.raw.gz`` counted as one."""
    name = os.path.basename(path).lower()
    for double in (".nii.gz", ".raw.gz"):
        if name.endswith(double):
            return double
    return os.path.splitext(name)[1]


def written_files(path: str) -> List[Path]:
    """Every file a write of ``path`` may create: the file and, for a detached header, its data files."""
    ext = lower_extension(path)
    stem = path[: len(path) - len(ext)] if ext else path
    return [Path(path)] + [Path(stem + suffix) for suffix in DETACHED_DATA_SUFFIXES.get(ext, ())]


def written_data_file(path: str, compress: bool) -> Optional[Path]:
    """The data file SimpleITK writes for a detached header (``o.nhdr``: ``o.raw``, compressed ``o.raw.gz``; ``o.mhd``:
    ``o.raw``, compressed ``o.zraw``), else None."""
    ext = lower_extension(path)
    suffixes = DETACHED_DATA_SUFFIXES.get(ext)
    if not suffixes:
        return None
    return Path(path[: len(path) - len(ext)] + suffixes[1 if compress else 0])


def read_files(path: str) -> List[Path]:
    """Every file a read of ``path`` uses: the file, and the data file its detached header names."""
    files = [Path(path)]
    pattern = _DATA_FIELD.get(lower_extension(path))
    if pattern is None or not os.path.isfile(path):
        return files
    try:
        with open(path, "rb") as handle:
            match = pattern.search(handle.read(_HEADER_BYTES))
    except OSError:
        return files
    name = match.group(1).decode("latin-1") if match else ""
    if name and name.upper() not in ("LOCAL", "LIST") and "%" not in name:
        files.append(Path(path).parent / name)
    return files


def file_key(path: Path) -> Key:
    """(device, inode) of an existing file (links share it), else its resolved, case-folded name."""
    try:
        info = os.stat(path)
        return ("inode", info.st_dev, info.st_ino)
    except (OSError, ValueError):
        return ("name", os.path.normcase(os.path.realpath(path)))


class InputFiles:
    """The files and folders a run reads, to refuse any output that would reach one of them."""

    def __init__(self, inputs: Iterable[str]) -> None:
        self.keys: Dict[Key, str] = {}
        self.folders: List[Tuple[str, str]] = []  # (resolved input path, input as given)
        for given in inputs:
            for path in read_files(given) if not os.path.isdir(given) else [Path(given)]:
                self.keys[file_key(path)] = given
                self.keys[("name", os.path.normcase(os.path.realpath(path)))] = given
            self.folders.append((os.path.normcase(os.path.realpath(given)), given))

    def reached_by(self, output: str) -> Optional[str]:
        """The input that writing ``output`` (volume file or DICOM folder) would replace or remove, or None."""
        bare = output.rstrip("/" + os.sep) or output
        targets = [Path(bare)] if os.path.isdir(bare) else written_files(bare)
        for target in targets:
            for key in (file_key(target), ("name", os.path.normcase(os.path.realpath(target)))):
                if key in self.keys:
                    return self.keys[key]
        if os.path.isdir(bare):  # a replaced DICOM output folder takes everything inside it
            folder = os.path.normcase(os.path.realpath(bare)) + os.sep
            for resolved, given in self.folders:
                if resolved.startswith(folder):
                    return given
        return None


@contextlib.contextmanager
def lower_case_alias(path: Path, ext: str) -> Iterator[Path]:
    """``path``, or a link to it with the lower-case extension ``ext`` in a temporary folder: nibabel and ITK's NIfTI
    reader match ``.nii.gz`` case-sensitively (``OUT.Nii.Gz`` is not read as NIfTI)."""
    if path.name.endswith(ext):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="fagan-read-") as folder:
        alias = Path(folder) / ("volume" + ext)
        try:
            os.symlink(os.path.abspath(path), alias)
        except OSError:  # no symlinks (Windows without the privilege): a copy
            shutil.copyfile(path, alias)
        yield alias


def check_output_folder(folder: Path) -> None:
    """OutputError unless ``folder`` (an output's parent) is an existing, writable folder."""
    if not folder.is_dir():
        raise OutputError(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"output folder is not writable: {folder}")
