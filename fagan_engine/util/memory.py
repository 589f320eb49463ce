"""Memory the system can still give, read from the operating system (no third-party package), for the checks
before a run: the engine's (``inference.memory_check``) and the Slicer module's (``FAGANSuperResLib.memory``)."""
from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Optional

MEMINFO = Path("/proc/meminfo")


def available_bytes() -> Optional[int]:
    """Available memory in bytes (Linux ``MemAvailable``, Windows ``GlobalMemoryStatusEx``), or None where it cannot be read."""
    if os.name == "nt":
        return _windows_available_bytes()
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _windows_available_bytes() -> Optional[int]:
    class MemoryStatus(ctypes.Structure):
        _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong),
                    ("ullTotalPhys", ctypes.c_ulonglong), ("ullAvailPhys", ctypes.c_ulonglong),
                    ("ullTotalPageFile", ctypes.c_ulonglong), ("ullAvailPageFile", ctypes.c_ulonglong),
                    ("ullTotalVirtual", ctypes.c_ulonglong), ("ullAvailVirtual", ctypes.c_ulonglong),
                    ("ullAvailExtendedVirtual", ctypes.c_ulonglong)]

    status = MemoryStatus()
    status.dwLength = ctypes.sizeof(MemoryStatus)
    if not ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):  # type: ignore[attr-defined]
        return None
    return int(status.ullAvailPhys)
