"""``python -m benchmarks.worker TASK PARAMS_JSON``: run one task in this fresh process.

The last stdout line is ``RESULT {json}``; peak RSS figures are therefore this process's own.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from typing import Any, Dict, List, Optional

from .machine import REPO

TASKS = {
    "volume": "benchmarks.inference_bench:volume",
    "tiling": "benchmarks.inference_bench:tiling",
    "variants": "benchmarks.inference_bench:variants",
    "attention": "benchmarks.attention_bench:attention",
    "training": "benchmarks.training_bench:training",
}


def run_task(task: str, params: Dict[str, Any], env: Optional[Dict[str, str]] = None, timeout: float = 1800) -> Dict[str, Any]:
    """Run ``task`` in a worker process (``env`` added to the environment); on failure return
    ``{"error": last stderr line}``."""
    cmd = [sys.executable, "-m", "benchmarks.worker", task, json.dumps(params)]
    try:
        proc = subprocess.run(cmd, cwd=str(REPO), env=dict(os.environ, **(env or {})), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = [line for line in proc.stderr.splitlines() if line.strip()]
        return {"error": tail[-1] if tail else f"worker exited with {proc.returncode}"}
    return json.loads(lines[-1][len("RESULT ") :])


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    module_name, function = TASKS[args[0]].split(":")
    result = getattr(importlib.import_module(module_name), function)(json.loads(args[1]))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
