"""``python -m benchmarks.slicer_load_bench [--mib N]``: memory and time of loading an engine result into
a real MRML scene (slicer-core), the way FAGANSuperResLib does it and the way it did before issue 18.

- ``storage-node``: an uncompressed NRRD read by Slicer's volume storage node
  (``FAGANSuperResLib.volumes.loadVolumeFile``, what the module does now);
- ``sitk-copies``: a gzip-compressed NRRD read by SimpleITK, then ``GetArrayFromImage`` and
  ``numpy_to_vtk(deep=True)`` (``updateVolumeNodeFromImage``, what the module did before).

Each load runs in a fresh process. The peak is the process's resident-set high-water mark (``VmHWM``,
reset through ``/proc/self/clear_refs`` just before the load, Linux only) minus its resident set then.
Prints one JSON line per mode, with the peak as a multiple of the result's size.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict

ROOT = Path(__file__).resolve().parents[1]
MODES = ("storage-node", "sitk-copies")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def load(mode: str, path: str) -> Dict[str, float]:
    """Load ``path`` into a new volume node of a fresh scene; return the peak (MiB above the resident
    set before the load) and the seconds."""
    sys.path[:0] = [str(ROOT / "FAGANSuperRes"), str(ROOT)]
    import SimpleITK as sitk
    from FAGANSuperResLib.volumes import loadVolumeFile, updateVolumeNodeFromImage
    from slicer import vtkMRMLScene

    scene = vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "result")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    if mode == "storage-node":
        loadVolumeFile(node, Path(path))
    else:
        updateVolumeNodeFromImage(node, sitk.ReadImage(path))
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM") - before
    assert node.GetImageData() is not None
    return {"peak_mib": peak / 1024, "seconds": seconds}


def write_result(folder: Path, mib: int) -> Dict[str, Path]:
    """A float32 result of ``mib`` MiB (smooth content plus noise, so gzip works as on real data),
    written uncompressed and gzip-compressed, as the engine writes them with and without --no-compression."""
    import numpy as np
    import SimpleITK as sitk

    slices = max(1, mib * 2**20 // (4 * 512 * 512))
    rng = np.random.default_rng(0)
    j, i = np.mgrid[0:512, 0:512].astype(np.float32)
    base = 400 * np.exp(-((i - 256) ** 2 + (j - 256) ** 2) / 2e4).astype(np.float32)
    array = np.empty((slices, 512, 512), np.float32)
    for k in range(slices):
        array[k] = base + rng.normal(0, 5, (512, 512)).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.5, 0.5, 1.0))
    paths = {"storage-node": folder / "result_raw.nrrd", "sitk-copies": folder / "result_gz.nrrd"}
    sitk.WriteImage(image, str(paths["storage-node"]), False)
    sitk.WriteImage(image, str(paths["sitk-copies"]), True)
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=800, help="result size in MiB (float32)")
    parser.add_argument("--folder", default="/tmp/fagan_slicer_load_bench")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(load(*args.child)))
        return 0
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = write_result(folder, args.mib)
    size_mib = paths["storage-node"].stat().st_size / 2**20
    for mode in MODES:
        out = subprocess.run([sys.executable, "-m", "benchmarks.slicer_load_bench", "--child", mode, str(paths[mode])],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()[-1]
        result = json.loads(out)
        result.update(mode=mode, result_mib=round(size_mib, 1), file_mib=round(paths[mode].stat().st_size / 2**20, 1),
                      peak_over_size=round(result["peak_mib"] / size_mib, 3))
        print(json.dumps(result))
    for path in paths.values():
        path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
