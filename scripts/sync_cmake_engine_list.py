"""Rewrite FAGAN_ENGINE_PYTHON_SCRIPTS in CMakeLists.txt from the engine's tracked and new .py files (sorted).

``python scripts/sync_cmake_engine_list.py`` after adding or removing an engine module; the contract test
(Testing/slicer/test_contracts.py) fails until the list matches.
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    cmake = ROOT / "CMakeLists.txt"
    text = cmake.read_text()
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "fagan_engine").rglob("*.py") if "__pycache__" not in p.parts)
    block = "set(FAGAN_ENGINE_PYTHON_SCRIPTS\n" + "".join(f"  {name}\n" for name in files) + "  )"
    new, count = re.subn(r"set\(FAGAN_ENGINE_PYTHON_SCRIPTS\n.*?\n  \)", block, text, count=1, flags=re.S)
    if count != 1:
        raise SystemExit("error: no FAGAN_ENGINE_PYTHON_SCRIPTS block in CMakeLists.txt")
    cmake.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
