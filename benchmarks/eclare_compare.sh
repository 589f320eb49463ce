#!/usr/bin/env bash
# ECLARE and the product side by side (benchmarks/eclare_compare.py). ECLARE (GPL-3.0) goes into its OWN
# virtual environment (never the project's), with the CPU torch wheel; it is only called as a program.
#   benchmarks/eclare_compare.sh OUTPUT_DIR [extra arguments of benchmarks.eclare_compare, e.g. --n-patches 12800 --template]
# ECLARE_VENV (default OUTPUT_DIR/eclare-venv) may point at an existing environment.
set -euo pipefail
out="${1:?usage: benchmarks/eclare_compare.sh OUTPUT_DIR [args]}"
shift
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="${ECLARE_VENV:-$out/eclare-venv}"
if [ ! -x "$venv/bin/run-eclare" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet torch==2.13.0   # the CPU wheel; another version would download CUDA builds
    "$venv/bin/pip" install --quiet eclare==1.0.1
fi
cd "$repo"
exec "$repo/.venv/bin/python" -m benchmarks.eclare_compare --eclare "$venv/bin/run-eclare" --output-dir "$out" "$@"
