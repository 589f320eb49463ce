"""Where the engine is, which Python runs it, and what that Python still needs.

The extension ships ``fagan_engine`` next to the modules (``qt-scripted-modules/fagan_engine``);
in a source checkout it sits in the repository root. Background processes run
``<python> -m fagan_engine ...`` with the folder holding ``fagan_engine`` first on PYTHONPATH.
Inside Slicer ``<python>`` is PythonSlicer (the launcher that sets up Slicer's Python
environment), elsewhere ``sys.executable``.
"""
import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

# import name -> pip requirement, for the engine's packages that Slicer does not bundle.
# torch is not listed: it comes from the PyTorch extension (PyTorchUtils), never from pip here.
ENGINE_REQUIREMENTS: Dict[str, str] = {
    "scipy": "scipy>=1.8",
    "nibabel": "nibabel>=4.0",
    "safetensors": "safetensors>=0.4",
    "tqdm": "tqdm>=4.60",
    "yaml": "pyyaml>=6.0",
}
# What training needs beyond inference: the default recipe's synthetic share (data.synthetic_fraction
# 1.0) draws from the ICBM152 template and tissue maps shipped inside nilearn's wheel.
TRAINING_REQUIREMENTS: Dict[str, str] = {"nilearn": "nilearn>=0.10"}
TORCH_MINIMUM = (2, 1)
TORCH_REQUIREMENT = ">=2.1"
"""The PyTorch the engine needs (``PyTorchUtilsLogic.installTorch(torchVersionRequirement=...)``)."""


def engineParentDir() -> Path:
    """The folder that contains the ``fagan_engine`` package."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent, here.parent.parent):
        if (candidate / "fagan_engine" / "__init__.py").is_file():
            return candidate
    spec = importlib.util.find_spec("fagan_engine")
    if spec is not None and spec.origin:
        return Path(spec.origin).resolve().parent.parent
    raise RuntimeError("the fagan_engine package was not found next to the FAGANSuperRes module")


def ensureEngineImportable() -> None:
    """Make ``import fagan_engine`` work in this Python (torch is not needed for that)."""
    parent = str(engineParentDir())
    if parent not in sys.path:
        sys.path.insert(0, parent)


def insideSlicer() -> bool:
    """True when running in the Slicer application (not in a plain Python with slicer-core)."""
    try:
        import slicer

        return hasattr(slicer, "app") and slicer.app is not None
    except ImportError:
        return False


def pythonExecutable() -> str:
    """PythonSlicer inside Slicer (found on PATH or next to the executable), else sys.executable."""
    if insideSlicer():
        found = shutil.which("PythonSlicer")
        if found:
            return found
        candidate = Path(sys.executable).with_name("PythonSlicer" + (".exe" if os.name == "nt" else ""))
        if candidate.is_file():
            return str(candidate)
        raise RuntimeError("PythonSlicer executable not found")
    return sys.executable


def engineEnvironment() -> Dict[str, str]:
    """Environment for engine processes: Slicer's startup environment plus the engine on PYTHONPATH."""
    if insideSlicer():
        import slicer.util

        env = dict(slicer.util.startupEnvironment())
    else:
        env = dict(os.environ)
    paths = [str(engineParentDir())] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def engineCommand(subcommand: str, arguments: Sequence[str]) -> List[str]:
    """``[python, -m, fagan_engine, subcommand, *arguments]``."""
    return [pythonExecutable(), "-m", "fagan_engine", subcommand, *[str(a) for a in arguments]]


def moduleAvailable(name: str) -> bool:
    """True if ``name`` can be imported here (checked without importing it; the import system's
    caches are refreshed, so a package installed in this session is found)."""
    importlib.invalidate_caches()
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


TASKS = ("fagan", "bicubic", "fit", "train")
"""What a run needs: ``fagan`` inference (torch or ONNX Runtime), ``bicubic`` nothing, ``fit`` torch (the thick-slice fit
and Combine thick stacks), ``train`` torch and nilearn (the recipes' synthetic data)."""

_srOptionsCache: Dict[str, frozenset] = {}


def engineSrOptions() -> frozenset:
    """The option strings ``fagan_engine sr`` accepts (``--scale``, ``--through-plane``, ...), read from
    the shipped engine's argument parser (no torch import). Features of the panel whose flag the
    engine does not offer are disabled, so a module never passes a flag its engine rejects."""
    key = str(engineParentDir())
    if key not in _srOptionsCache:
        ensureEngineImportable()
        from fagan_engine.cli.arguments import build_parser

        _srOptionsCache[key] = frozenset(o for action in build_parser()._actions for o in action.option_strings)
    return _srOptionsCache[key]


def engineSupports(*flags: str) -> bool:
    """True if ``fagan_engine sr`` accepts every one of ``flags``."""
    return set(flags) <= engineSrOptions()


def engineVersion() -> str:
    """Version of the shipped engine (recorded on every result node)."""
    ensureEngineImportable()
    from fagan_engine._version import __version__

    return str(__version__)


def missingRequirements(task: str = "fagan") -> List[str]:
    """Pip requirements of the engine that ``task`` needs and that are not installed (torch excluded).

    Bicubic needs none: it runs on numpy and SimpleITK, which Slicer bundles.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    if task == "bicubic":
        return []
    needed = dict(ENGINE_REQUIREMENTS, **(TRAINING_REQUIREMENTS if task == "train" else {}))
    return [req for name, req in needed.items() if not moduleAvailable(name)]


def versionTuple(version: str) -> Tuple[int, ...]:
    """``2.1.0+cu121`` -> (2, 1, 0): the leading numeric release parts."""
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


def installedTorchVersion() -> Optional[str]:
    """The installed torch's version (read from its package metadata, torch is not imported), or None."""
    if not moduleAvailable("torch"):
        return None
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def torchProblem(version: Optional[str]) -> Optional[str]:
    """Why torch ``version`` cannot run the engine (one line), or None when it can."""
    if version is None:
        return "PyTorch is not installed"
    if versionTuple(version) < TORCH_MINIMUM:
        return f"PyTorch {version} is older than the {TORCH_REQUIREMENT.lstrip('>=')} FA-GAN needs"
    return None


def backendAvailable(task: str = "fagan") -> bool:
    """True if the engine can compute ``task`` (``TASKS``) here: bicubic runs on numpy alone; fagan runs on torch (at
    least TORCH_MINIMUM) or, without it, on ONNX Runtime (``--backend auto``); a fit and training need torch."""
    if task == "bicubic":
        return True
    return torchProblem(installedTorchVersion()) is None or (task == "fagan" and onnxCanRun())


def onnxCanRun() -> bool:
    """ONNX Runtime is installed and every bundled in-plane checkpoint has an export on disk: no exports ship, and only
    PyTorch makes one, so with ONNX Runtime alone the first FA-GAN run would fail (the module offers PyTorch instead)."""
    if not moduleAvailable("onnxruntime"):
        return False
    ensureEngineImportable()
    from fagan_engine.inference.onnx_backend import export_present
    from fagan_engine.models.checkpoint import bundled_checkpoints

    return all(export_present(path) for path in bundled_checkpoints())


@dataclass
class DeviceInfo:
    """What the engine's Python can compute with, as found by ``deviceProbeCommand``."""

    torch: Optional[str] = None
    cuda: bool = False
    gpuName: str = ""
    onnxruntime: Optional[str] = None

    @property
    def gpuUsable(self) -> bool:
        """The engine uses a GPU through torch only (its ONNX Runtime backend runs on CPU), and only
        a torch recent enough."""
        return self.cuda and torchProblem(self.torch) is None

    def gpuLabel(self) -> str:
        """Text for the device selector's GPU entry."""
        problem = torchProblem(self.torch)
        if problem:
            return f"GPU (not usable: {problem})"
        if self.cuda:
            return f"GPU ({self.gpuName or 'CUDA'})"
        return "GPU (not usable: no CUDA device found)"


_PROBE_CODE = """
import json
info = {}
try:
    import torch
    info["torch"] = torch.__version__
    info["cuda"] = bool(torch.cuda.is_available())
    info["gpuName"] = torch.cuda.get_device_name(0) if info["cuda"] else ""
except Exception:
    pass
try:
    import onnxruntime
    info["onnxruntime"] = onnxruntime.__version__
except Exception:
    pass
print("FAGAN-DEVICES " + json.dumps(info))
"""


def deviceProbeCommand() -> List[str]:
    """Command that prints the usable devices of the engine's Python (run it in the background:
    importing torch takes seconds)."""
    return [pythonExecutable(), "-c", _PROBE_CODE]


def parseDeviceProbe(lines: Sequence[str]) -> DeviceInfo:
    """Read the probe's output; an empty DeviceInfo if it printed nothing usable."""
    for line in lines:
        if line.startswith("FAGAN-DEVICES "):
            try:
                data = json.loads(line[len("FAGAN-DEVICES "):])
                return DeviceInfo(**{k: v for k, v in data.items() if k in DeviceInfo.__dataclass_fields__})
            except (ValueError, TypeError):
                break
    return DeviceInfo()


# Measured CPU cost of FA-GAN per output voxel on 2 cores (docs/performance.md, "Targets": x2 160 x 128²
# -> 256² in 30 s, x4 160 x 64² -> 256² in 7.9 s); x8 is taken as x4's (its LR input is smaller still).
CPU_SECONDS_PER_OUTPUT_VOXEL = {2: 2.9e-6, 4: 0.75e-6, 8: 0.75e-6}
ADAPT_CPU_SECONDS_PER_STEP = 0.3
"""Per-scan adaptation on 2 cores: 21.5-37 s for its 100 steps on a 256x256x40 volume (docs/performance.md), about the
same for any volume (its pairs are patches)."""
MEASURED_CORES = 2
LONG_CPU_RUN_S = 60.0
SHORT_FIT_ITERATIONS = 50


def _millions(count: int) -> str:
    """``count`` in millions as people write it: 0.092, 1.3, 42, 419."""
    millions = count / 1e6
    return f"{millions:.2g}" if millions < 10 else f"{millions:.0f}"


def longCpuRunWarning(outputVoxels: int, method: str, mode: str, scale: int, requestedDevice: str,
                      deviceInfo: Optional[DeviceInfo], cpuCount: Optional[int] = None,
                      fitIterations: Optional[int] = None, ensembleMembers: int = 1, adaptSteps: int = 0) -> Optional[str]:
    """A question to ask before a run that will be long because it runs FA-GAN on the CPU (as
    TotalSegmentator asks), or None: interpolation, a usable GPU for ``auto``, or a short run. With
    no device probe result yet (``deviceInfo`` None) only an explicit CPU choice is known to be CPU.
    A thick-slice fit counts as long unless ``fitIterations`` is set below SHORT_FIT_ITERATIONS.
    ``ensembleMembers``: the engine's self-ensemble (``RunOptions.ensemble_members``), which runs the network that many
    times (the estimate scales the whole run by it: slightly high, on the safe side). ``adaptSteps``: per-scan adaptation's
    most steps (``RunOptions.adapt_steps``), which the default ×2 run adds to the network's time (about as much again on a
    256×256×40 volume)."""
    if method != "fagan" and mode != "through-plane":
        return None
    onCpu = requestedDevice == "cpu" or (requestedDevice == "auto" and deviceInfo is not None and not deviceInfo.gpuUsable)
    if not onCpu:
        return None
    if mode == "through-plane":
        if fitIterations and fitIterations < SHORT_FIT_ITERATIONS:
            return None
        return ("No GPU will be used: fitting FA-GAN to this scan on the CPU takes many minutes. "
                "Continue on the CPU?")
    cores = max(1, cpuCount or os.cpu_count() or 1)
    perVoxel = CPU_SECONDS_PER_OUTPUT_VOXEL.get(scale, CPU_SECONDS_PER_OUTPUT_VOXEL[2]) * max(1, ensembleMembers)
    seconds = (outputVoxels * perVoxel + ADAPT_CPU_SECONDS_PER_STEP * max(0, adaptSteps)) * MEASURED_CORES / cores
    if seconds < LONG_CPU_RUN_S:
        return None
    return (f"No GPU will be used: FA-GAN on the CPU will take about {max(1, round(seconds / 60))} min for this volume "
            f"({_millions(outputVoxels)} M output voxels, {cores} {'core' if cores == 1 else 'cores'}). "
            "Continue on the CPU, or choose the Lanczos method "
            "for a quick result?")
