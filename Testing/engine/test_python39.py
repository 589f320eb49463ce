"""The engine ships inside Slicer, whose Python may be 3.9: vermin must find nothing newer."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_engine_runs_on_python_3_9() -> None:
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("vermin")), "-t=3.9-", "--no-tips", "--violations", "--eval-annotations",
         "--backport", "dataclasses", str(ROOT / "fagan_engine")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
