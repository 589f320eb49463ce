"""``RunOptions``: how a volume is super-resolved, shared by the CLI, the Python API, batch mode and Slicer.

One dataclass of plain JSON types. ``fagan-sr`` builds it from its arguments, the Slicer module from
its panel, batch mode per case from the manifest, and ``super_resolve`` from keyword arguments.
It needs no torch.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from fagan_engine.util.config import ACQUISITIONS, PLANES, SCALES
from fagan_engine.util.errors import InputError

METHODS = ("fagan", "bicubic", "lanczos")
NAN_POLICIES = ("error", "zero")
"""Non-finite input voxels: refuse the input, or read them as 0."""
GAP_POLICIES = ("error", "resample")
"""DICOM series with missing or duplicated slices: refuse, or resample onto a regular grid."""
MODES = ("in-plane", "through-plane")
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("auto", "torch", "onnx")
OUTPUT_DTYPES = ("float32", "int16", "uint16")
MAP_FLAGS = {"consistency": "--consistency-map", "consistency_lr": "--consistency-map-lr", "uncertainty": "--uncertainty-map"}
"""The trust maps a run can write, each with its ``fagan-sr`` flag (argparse dest ``<kind>_map``); listed once here."""
MAP_KINDS = tuple(MAP_FLAGS)
ADAPT_DEFAULT_STEPS = 100
"""Per-scan adaptation steps at most when ``adapt_iterations`` is left unset (FA-GAN in-plane); stopped early on held-out pairs."""
# RunOptions field -> its ``fagan-sr`` flag (argparse dest = the field; ``mode`` is ``--through-plane``,
# ``uncertainty`` ``--uncertainty-map``).
CLI_FLAGS = {
    "scale": "--scale", "method": "--method", "acquisition": "--acquisition", "checkpoint": "--checkpoint",
    "plane": "--plane", "device": "--device", "backend": "--backend", "batch_size": "--batch-size",
    "tile_size": "--tile-size", "nan_policy": "--nan-policy", "output_dtype": "--dtype", "untrained": "--untrained",
    "adapt_iterations": "--adapt", "target_spacing": "--target-spacing", "slice_thickness": "--slice-thickness",
    "fit_iterations": "--iterations", "enforce_consistency": "--enforce-consistency", "dicom_gaps": "--dicom-gaps",
    "ensemble": "--ensemble",
}
ENSEMBLE_SIZES = (1, 2, 4, 8)
DEFAULT_ENSEMBLE_FROM_SCALE = 4
"""In-plane FA-GAN at this scale and above self-ensembles over all 8 flips/rotations by default (``ensemble_members``)."""
THROUGH_PLANE_ENSEMBLE_SIZES = (1, 2, 4)
"""Through-plane self-ensembles flip the slices only: their slice axis cannot be turned into their column axis."""
DEFAULT_THROUGH_PLANE_ENSEMBLE = 2
"""Through-plane FA-GAN self-ensembles over each slice and its half-turn by default (``ensemble_members``)."""


THROUGH_PLANE_UNUSED: Dict[str, Any] = {
    "scale": lambda value: value != 2,  # the dataclass default: the ratio comes from the slice spacing
    "checkpoint": lambda value: value is not None,
    "acquisition": lambda value: value != "kspace",
    "plane": lambda value: value != "auto",
    "backend": lambda value: value == "onnx",
    "tile_size": lambda value: value is not None,
    "untrained": bool,
}
"""In-plane fields that through-plane runs cannot use, each with the test of a value that asks for them (refused)."""
IN_PLANE_UNUSED = ("target_spacing", "slice_thickness", "fit_iterations")
"""Through-plane fields that in-plane runs cannot use: refused when set."""
NETWORK_ONLY: Dict[str, Any] = {"checkpoint": None, "tile_size": None, "backend": "auto", "untrained": False, "ensemble": None}
"""Fields (with their unset value) that only the FA-GAN network uses: refused with an interpolation method."""


@dataclass
class RunOptions:
    """Everything that decides how one volume is processed (not where it is read from or written to)."""

    scale: int = 2
    mode: str = "in-plane"
    method: str = "fagan"
    acquisition: str = "kspace"
    checkpoint: Optional[str] = None
    plane: str = "auto"
    device: str = "auto"
    backend: str = "auto"
    batch_size: int = 8
    tile_size: Optional[int] = None
    nan_policy: str = "error"
    output_dtype: str = "float32"
    untrained: bool = False
    adapt_iterations: Optional[int] = None
    """Per-scan adaptation steps at most; None: ``ADAPT_DEFAULT_STEPS`` for FA-GAN in-plane, else 0 (``adapt_steps``)."""
    target_spacing: Optional[float] = None
    slice_thickness: Optional[float] = None
    fit_iterations: Optional[int] = None
    enforce_consistency: Optional[bool] = None
    """Project the result onto the input (data consistency); None: on for FA-GAN (in-plane and through-plane), else off (``project``)."""
    uncertainty: bool = False
    dicom_gaps: str = "error"
    ensemble: Optional[int] = None
    """Self-ensemble: the network on 1, 2, 4 or 8 flipped/rotated copies of each slice (through-plane: 1, 2 or 4
    flipped copies), averaged; None: 8 for FA-GAN in-plane at ×4 and ×8, 2 through-plane, else 1 (``ensemble_members``)."""

    def __post_init__(self) -> None:
        """numpy's numbers (``np.int64(4)``, ``np.float32(2.0)``, ``np.bool_(True)``, e.g. read from an array) become
        Python ints, floats and bools, so every field stays a plain JSON type and its flag reads as a number; any other
        value is left for ``validate`` to judge."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if type(value).__module__ == "numpy" and getattr(value, "shape", None) == ():  # a numpy scalar (numpy not imported)
                setattr(self, field.name, value.item())

    def validate(self) -> "RunOptions":
        """Raise InputError (one line) on a value of the wrong type or an impossible combination; return self."""
        for field in dataclasses.fields(self):
            _check_type(field.name, getattr(self, field.name), FIELD_TYPES[field.name])
        _choice("mode", self.mode, MODES)
        if self.mode == "in-plane":
            _choice("scale", self.scale, SCALES)
        _choice("method", self.method, METHODS)
        _choice("acquisition", self.acquisition, ACQUISITIONS)
        _choice("plane", self.plane, PLANES)
        _choice("device", self.device, DEVICES)
        _choice("backend", self.backend, BACKENDS)
        _choice("nan policy", self.nan_policy, NAN_POLICIES)
        _choice("output dtype", self.output_dtype, OUTPUT_DTYPES)
        _choice("DICOM gap policy", self.dicom_gaps, GAP_POLICIES)
        if self.batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {self.batch_size}")
        if self.adapt_iterations is not None and self.adapt_iterations < 0:
            raise InputError(f"adapt iterations must be >= 0, got {self.adapt_iterations}")
        if self.fit_iterations is not None and self.fit_iterations < 0:
            raise InputError(f"fit iterations must be >= 0, got {self.fit_iterations}")
        for name in ("target_spacing", "slice_thickness"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise InputError(f"{name.replace('_', ' ')} must be a positive number of mm, got {value}")
        if self.tile_size is not None and self.tile_size < 1:
            raise InputError(f"tile size must be a positive number of pixels, got {self.tile_size}")
        if self.untrained and self.checkpoint is not None:
            raise InputError("--untrained (random weights) and --checkpoint exclude each other")
        if self.backend == "onnx" and self.device == "cuda":
            raise InputError("the ONNX backend runs on the CPU: drop --device cuda, or use --backend torch on the GPU")
        if self.method != "fagan" and self.device == "cuda":
            raise InputError(f"--device cuda is for the FA-GAN network; {self.method} runs on the CPU: drop --device cuda")
        network_only = [CLI_FLAGS[name] for name, unset in NETWORK_ONLY.items() if getattr(self, name) != unset]
        if self.method != "fagan" and network_only:
            raise InputError(f"{', '.join(network_only)} {'is' if len(network_only) == 1 else 'are'} used only by --method fagan, "
                             f"not {self.method}")
        if self.mode == "through-plane" and self.method != "fagan":
            raise InputError(f"through-plane super-resolution runs the FA-GAN fit only (method fagan), not {self.method}")
        if self.method != "fagan" and self.adapt_iterations:
            raise InputError("per-scan adaptation (--adapt) needs --method fagan")
        if self.mode == "in-plane":
            unused = [CLI_FLAGS[name] for name in IN_PLANE_UNUSED if getattr(self, name) is not None]
            if unused:
                raise InputError(f"{', '.join(unused)} {'is' if len(unused) == 1 else 'are'} for thick slices: add --through-plane")
        if self.mode == "through-plane":
            unused = [CLI_FLAGS[name] for name, given in THROUGH_PLANE_UNUSED.items() if given(getattr(self, name))]
            if unused:
                raise InputError(
                    f"through-plane super-resolution does not use {', '.join(unused)}: it fits its own bundled network to "
                    "the scan's slices with PyTorch"
                )
        if self.mode == "through-plane" and self.adapt_iterations:
            raise InputError("per-scan adaptation (--adapt) is for in-plane FA-GAN; through-plane fits every scan anyway (--iterations)")
        if self.ensemble is not None:
            if self.mode == "through-plane":
                check_through_plane_ensemble(self.ensemble)
            _choice("ensemble", self.ensemble, ENSEMBLE_SIZES)
        if self.uncertainty and self.method != "fagan":
            raise InputError(f"the uncertainty map (--uncertainty-map) measures the FA-GAN network's spread, not {self.method}'s")
        if self.mode == "through-plane" and self.uncertainty:
            raise InputError("the uncertainty map is made for in-plane results only; drop --uncertainty-map with --through-plane")
        return self

    @property
    def adapt_steps(self) -> int:
        """The adaptation step budget that applies: the explicit value, or the default for FA-GAN in-plane."""
        if self.adapt_iterations is not None:
            return self.adapt_iterations
        return ADAPT_DEFAULT_STEPS if self.method == "fagan" and self.mode == "in-plane" else 0

    @property
    def ensemble_members(self) -> int:
        """How many flipped/rotated copies of each slice the network sees: the explicit value, or 8 for FA-GAN in-plane
        from ×4 (measured on the real development set: +0.06 dB at ×4, +0.09 at ×8 k-space), 2 through-plane
        (``DEFAULT_THROUGH_PLANE_ENSEMBLE``; docs/thick-slices.md, round 5), else 1."""
        if self.ensemble is not None:
            return self.ensemble
        if self.method != "fagan":
            return 1
        if self.mode == "through-plane":
            return DEFAULT_THROUGH_PLANE_ENSEMBLE
        return 8 if self.scale >= DEFAULT_ENSEMBLE_FROM_SCALE else 1

    @property
    def project(self) -> bool:
        """Whether the result is projected onto the input: the explicit value, or on for FA-GAN (in-plane and
        through-plane; both measured on the real development set)."""
        if self.enforce_consistency is not None:
            return self.enforce_consistency
        return self.method == "fagan"

    def cli_arguments(self, uncertainty_map: Optional[str] = None) -> List[str]:
        """The ``fagan-sr`` flags that give these options (``cli.arguments.run_options`` builds them back): ``--scale``
        in-plane, other fields only when not the default. ``uncertainty`` is ``--uncertainty-map [uncertainty_map]``
        (the engine computes it only to write that map; no path: beside the output)."""
        in_plane = self.mode == "in-plane"
        args = [] if in_plane else ["--through-plane"]
        for field in dataclasses.fields(self):
            value, flag = getattr(self, field.name), CLI_FLAGS.get(field.name)
            if flag is None or (value == field.default and not (flag == "--scale" and in_plane)):
                continue
            if isinstance(value, bool):
                args.append(flag if value else "--no-" + flag[2:])
            else:
                args += [flag, repr(value) if isinstance(value, float) else str(value)]
        if self.uncertainty:
            args += ["--uncertainty-map"] + ([str(uncertainty_map)] if uncertainty_map is not None else [])
        return args

    def replace(self, **changes: Any) -> "RunOptions":
        """A validated copy with some fields changed; unknown names are an InputError."""
        _check_names(changes)
        return dataclasses.replace(self, **changes).validate()

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "RunOptions":
        """Build from keyword values (API, manifest rows); unknown names are an InputError."""
        if not isinstance(data, dict):
            raise InputError(f"options must be a mapping of option names to values, got {type(data).__name__}")
        _check_names(data)
        return cls(**data).validate()


FIELD_TYPES = {field.name: field.type for field in dataclasses.fields(RunOptions)}
"""Each field's annotation, as text (``int``, ``Optional[float]``, ...): what ``validate`` checks values against."""


def is_whole(value: Any) -> bool:
    """True for a whole number (a Python or numpy integer, not a bool)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_whole(name: str, value: Any, minimum: int = 0) -> None:
    """InputError unless ``value`` is a whole number of at least ``minimum``."""
    if not (is_whole(value) and value >= minimum):
        raise InputError(f"{name} must be a whole number >= {minimum}, got {value!r}")


def check_callables(**callbacks: Any) -> None:
    """InputError naming the first of ``callbacks`` that is neither None nor callable (progress, stop, on_fit, ...)."""
    for name, callback in callbacks.items():
        if callback is not None and not callable(callback):
            raise InputError(f"{name} must be a function or None, got {callback!r}")


def _check_names(data: Dict[str, Any]) -> None:
    """InputError naming the first key of ``data`` that is not a RunOptions field."""
    unknown = sorted(set(data) - set(FIELD_TYPES))
    if unknown:
        raise InputError(f"unknown option {unknown[0]!r}; known options: {', '.join(sorted(FIELD_TYPES))}")


def _check_type(name: str, value: Any, annotation: str) -> None:
    """InputError unless ``value`` fits the field's annotation: a bool for ``bool``, a whole number (not a bool) for
    ``int``, a finite real number for ``float``, a string for ``str``; ``Optional[...]`` also takes None."""
    kind = annotation[len("Optional["):-1] if annotation.startswith("Optional[") else annotation
    if value is None and kind != annotation:
        return
    fits = {"bool": lambda v: isinstance(v, bool),
            "int": is_whole,
            "float": lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v),
            "str": lambda v: isinstance(v, str)}[kind]
    if not fits(value):
        wanted = {"bool": "True or False", "int": "a whole number", "float": "a finite number", "str": "a string"}[kind]
        raise InputError(f"option {name} must be {wanted}{' or None' if kind != annotation else ''}, got {value!r}")


def check_flags(**flags: Any) -> None:
    """InputError (one line) naming the first of ``flags`` that is not True or False: a string such as ``"no"`` would act
    as True (``force="no"`` replaced finished outputs)."""
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise InputError(f"{name} must be True or False, got {value!r}")


def check_through_plane_ensemble(members: Any) -> None:
    """Refuse (one line) a through-plane self-ensemble size other than ``THROUGH_PLANE_ENSEMBLE_SIZES``."""
    if members not in THROUGH_PLANE_ENSEMBLE_SIZES:
        raise InputError(f"through-plane self-ensembles take 1, 2 or 4 flipped copies of each slice (--ensemble), got {members!r}")


def _choice(name: str, value: Any, choices: Any) -> None:
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
