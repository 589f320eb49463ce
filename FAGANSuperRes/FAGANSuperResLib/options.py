"""Run options of the FAGANSuperRes module: the engine's ``fagan_engine.util.options.RunOptions``.

The panel, scripts and "Apply to all" describe a run with the same dataclass as ``fagan-sr`` and the
engine's Python API; ``RunOptions.cli_arguments`` turns it into engine flags and ``engineFlag`` reads
one flag from the engine's tables (no flag of a run option is spelled here). ``runOptions`` builds the
dataclass and the run that takes it validates it once (``checkRunOptions``). ``fagan_engine`` is
imported only inside functions, after ``ensureEngineImportable``. Which trust maps to make is not a
run option: the consistency map is the ``consistencyMap`` argument, the uncertainty map is
``RunOptions.uncertainty``.
"""
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from .engine import engineSupports, ensureEngineImportable
from .maps import MAP_KINDS

if TYPE_CHECKING:
    from fagan_engine.util.options import RunOptions

# The panel's combobox items. The parameter node declares them when Slicer imports the module, before
# the engine may be imported, so they are listed here once; Testing/slicer/test_contracts.py checks
# them against the engine's choices (devices in the panel's order: auto, GPU, CPU).
SCALES = (2, 4, 8)
PLANES = ("auto", "axial", "coronal", "sagittal")
DEVICES = ("auto", "cuda", "cpu")
METHODS = ("fagan", "bicubic", "lanczos")
ACQUISITIONS = ("kspace", "bicubic", "gaussian")
MODES = ("in-plane", "through-plane")
ENSEMBLES = (0, 1, 2, 4, 8)
"""Self-ensemble members (the engine's ENSEMBLE_SIZES) after 0, the engine's default: 8 in-plane from ×4, 2
through-plane, else 1 (``RunOptions.ensemble_members``)."""
THROUGH_PLANE_ENSEMBLES = (1, 2, 4)
"""The members a through-plane run takes (flips only; the engine's THROUGH_PLANE_ENSEMBLE_SIZES)."""
NON_FINITE_ZEROED = "set to 0"
"""What the run settings record (``nonFiniteVoxels``) when non-finite input voxels were replaced with 0."""
UNCOMPRESSED_FLAG = "--no-compression"
"""Engine flag for uncompressed outputs: the module's files are temporary, and reading gzip-compressed
voxels costs seconds per 100 MiB. Passed when the engine offers it."""


def runOptions(**fields: Any) -> "RunOptions":
    """RunOptions from field values, not validated yet: the run that takes them validates them once
    (``checkRunOptions``). An unknown name raises ValueError (one line)."""
    ensureEngineImportable()
    from fagan_engine.util.options import RunOptions

    unknown = sorted(set(fields) - {field.name for field in dataclasses.fields(RunOptions)})
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r}")
    return RunOptions(**fields)


def validRunOptions(options: "RunOptions") -> "RunOptions":
    """``options`` validated by the engine (``RunOptions.validate``); a bad value raises ValueError (one line)."""
    ensureEngineImportable()
    from fagan_engine.util.errors import FAGANError

    try:
        return options.validate()
    except FAGANError as exc:
        raise ValueError(str(exc)) from None


def checkRunOptions(options: "RunOptions", consistencyMap: bool = False) -> "RunOptions":
    """Validate ``options`` (once per run: the logic calls this where a run enters). Raise ValueError (one line)
    for a bad value, a combination Slicer does not run, or a flag of the run that the shipped engine lacks;
    return ``options``, a relative checkpoint path made absolute (the engine runs in its own work folder)."""
    validRunOptions(options)
    for flag in engineArguments(options, consistencyMap):
        if flag.startswith("--") and not engineSupports(flag):
            raise ValueError(f"this version of the FA-GAN engine has no {flag} option yet")
    if options.checkpoint and not Path(options.checkpoint).is_absolute():
        options = dataclasses.replace(options, checkpoint=str(Path(options.checkpoint).resolve()))
    return options


def isThroughPlane(options: "RunOptions") -> bool:
    return options.mode == "through-plane"


def zeroesNonFinite(options: "RunOptions") -> bool:
    """Whether ``options`` replace non-finite (NaN or Inf) input voxels with 0 (the engine's 'zero' NaN policy)
    instead of refusing the input."""
    return options.nan_policy == "zero"


def mapKinds(options: "RunOptions", consistencyMap: bool) -> List[str]:
    """The trust maps a run makes (in MAP_KINDS order)."""
    wanted = {"consistency": consistencyMap, "uncertainty": options.uncertainty}
    return [kind for kind in MAP_KINDS if wanted[kind]]


def engineArguments(options: "RunOptions", consistencyMap: bool, mapPaths: Optional[Dict[str, Any]] = None) -> List[str]:
    """The engine flags of ``options`` and its maps, with JSON progress and (when the engine offers it)
    uncompressed outputs. ``mapPaths`` (kind -> file) names a single run's maps; None: batch mode,
    which writes them beside each output."""
    ensureEngineImportable()
    from fagan_engine.util.options import MAP_FLAGS

    paths = {kind: str(path) for kind, path in (mapPaths or {}).items()}
    args = options.cli_arguments(paths.get("uncertainty"))
    if consistencyMap:
        args += [MAP_FLAGS["consistency"]] + ([paths["consistency"]] if mapPaths is not None else [])
    return args + outputArguments()


def outputArguments() -> List[str]:
    """What every run of the module passes: uncompressed outputs (when the engine offers it) and JSON progress."""
    return ([UNCOMPRESSED_FLAG] if engineSupports(UNCOMPRESSED_FLAG) else []) + ["--progress", "json"]


def engineFlag(name: str) -> str:
    """The ``fagan-sr`` flag of a RunOptions field (the engine's ``CLI_FLAGS``) or of a trust-map kind (``MAP_FLAGS``)."""
    ensureEngineImportable()
    from fagan_engine.util.options import CLI_FLAGS, MAP_FLAGS

    return CLI_FLAGS.get(name) or MAP_FLAGS[name]


def runSettings(options: "RunOptions") -> Dict[str, str]:
    """The run settings recorded on the result (attribute name -> text)."""
    values = {"mode": options.mode, "method": options.method}
    if isThroughPlane(options):
        values.update(targetSpacing=_mm(options.target_spacing) or "finest in-plane spacing",
                      sliceThickness=_mm(options.slice_thickness) or "chosen by the engine (header, estimate or spacing)",
                      fit=f"up to {options.fit_iterations} steps" if options.fit_iterations else
                      "off (the pretrained network)" if options.fit_iterations == 0 else "engine default")
    else:
        values["scale"] = f"x{options.scale}"
        if options.method == "fagan":
            values["acquisition"] = options.acquisition
    values["enforceConsistency"] = "yes" if options.project else "no"
    if options.mode == "in-plane" and options.method == "fagan":
        values["adaptation"] = f"up to {options.adapt_steps} steps" if options.adapt_steps else "off"
    if options.method == "fagan":
        members = getattr(options, "ensemble_members", 1)  # an older engine: no self-ensemble
        copies = "flipped" if isThroughPlane(options) else "flipped/rotated"
        values["selfEnsemble"] = f"{members} {copies} copies" if members > 1 else "off"
    if zeroesNonFinite(options):
        values["nonFiniteVoxels"] = NON_FINITE_ZEROED
    return values


def _mm(value: Optional[float]) -> str:
    return f"{value:g} mm" if value else ""
