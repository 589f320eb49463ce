"""Checkpoints: safetensors weights with JSON metadata; loading never unpickles anything.

A checkpoint is ``NAME.safetensors`` whose header carries the metadata JSON under the key
``fagan``, plus a human-readable copy ``NAME.json`` beside it. The metadata records the
architecture (ModelConfig), scale, intensity normalisation, in-plane convention, a training
summary and the engine version. ``content_sha256`` (format 2) hashes what defines the model:
every tensor's name, dtype, shape and bytes plus the metadata itself (``tensor_digest``), so
swapped tensor offsets, edited metadata, truncation or corruption are refused. Format 1 files
(``weights_sha256`` over the data section only) are read only when the user opts in
(``FAGAN_ALLOW_FORMAT_1=1``), with the header checked for well-formed, non-overlapping tensors;
a file that says format 1 but carries a format-2 checksum (an edited format) is always refused. ``read_metadata`` needs neither torch nor numpy (the
Slicer UI uses it); the architecture is compared with the tensors before any weight is allocated.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from fagan_engine._version import __version__
from fagan_engine.util.atomic import atomic_write_bytes
from fagan_engine.util.config import ACQUISITIONS, PLANES, SCALES, ModelConfig, NormalizationConfig, model_config_from_dict, normalization_from_dict
from fagan_engine.util.errors import CheckpointError, ConfigError
from fagan_engine.util.tensor_digest import content_digest, names_and_bytes_digest, split_safetensors, split_tagged

FORMAT = "fagan-checkpoint/2"
LEGACY_FORMAT = "fagan-checkpoint/1"
ALLOW_FORMAT_1_ENV = "FAGAN_ALLOW_FORMAT_1"
"""Set to 1 to load format-1 checkpoints (their checksum covers the weight bytes only)."""
METADATA_KEY = "fagan"
BUNDLED_DIR = Path(__file__).resolve().parents[1] / "checkpoints"
"""fagan_engine/checkpoints: the bundled weights (package data)."""
THROUGH_PLANE_KEY = "fagan_through_plane"
THROUGH_PLANE_FORMAT = "fagan-through-plane/1"
THROUGH_PLANE_WEIGHTS = BUNDLED_DIR / "fagan_through_plane.safetensors"
"""The bundled through-plane start for slices more than ``LOW_RATIO_LIMIT`` times the target spacing (made by
``through_plane.fit``'s pretraining, fitted to each scan)."""
LOW_RATIO_THROUGH_PLANE_WEIGHTS = BUNDLED_DIR / "fagan_through_plane_low.safetensors"
"""The bundled through-plane start for ratios up to ``LOW_RATIO_LIMIT`` (pretrained on ratios 1.5 to 3)."""
LOW_RATIO_LIMIT = 3.0
"""Largest ratio (output samples per input slice, ``ThroughPlanePlan.ratio``) given the low-ratio start: a ×2 scan
gets the start specialised on ratios 1.5 to 3, a ×4 scan the other (docs/thick-slices.md, round 6)."""
_TEXT_FIELDS = ("engine_version", "created", "weights_sha256", "content_sha256", "onnx_sha256", "format")


@dataclasses.dataclass
class CheckpointMetadata:
    """Everything needed to rebuild and use a generator, stored with its weights."""

    scale: int
    model: Dict[str, Any]
    normalization: Dict[str, Any]
    plane: str = "auto"
    acquisitions: List[str] = dataclasses.field(default_factory=lambda: ["bicubic"])
    training: Dict[str, Any] = dataclasses.field(default_factory=dict)
    data_profile: Dict[str, Any] = dataclasses.field(default_factory=dict)
    """What the model saw in training (``training.profile``); empty = unknown (no range warnings)."""
    engine_version: str = __version__
    created: str = ""
    weights_sha256: str = ""
    content_sha256: str = ""
    onnx_sha256: str = ""
    """Set only in an ONNX export's sidecar (``NAME.onnx.json``): the SHA-256 of the ``.onnx`` bytes."""
    format: str = FORMAT
    file_sha256: str = dataclasses.field(default="", compare=False)
    """SHA-256 of the file bytes that were verified (what ``sha256sum`` prints): set when a checkpoint is
    read, never stored, not compared (a sidecar equals its checkpoint's metadata)."""

    def model_config(self) -> ModelConfig:
        return model_config_from_dict(self.model)

    def normalization_config(self) -> NormalizationConfig:
        return normalization_from_dict(self.normalization)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        del data["file_sha256"]
        for name in ("data_profile", "onnx_sha256"):  # fields added after format 2: omitted when empty, so the
            if not data[name]:  # content_sha256 of checkpoints saved before they existed still verifies
                del data[name]
        return json.dumps(data, indent=2, sort_keys=True)

    def digest_text(self) -> str:
        """The metadata as hashed into ``content_sha256`` (that field itself blank)."""
        return dataclasses.replace(self, content_sha256="").to_json()

    @classmethod
    def create(
        cls,
        model: ModelConfig,
        normalization: NormalizationConfig,
        plane: str = "auto",
        training: Optional[Dict[str, Any]] = None,
        acquisitions: Optional[List[str]] = None,
    ) -> "CheckpointMetadata":
        """Metadata for a freshly trained generator."""
        return cls(
            scale=model.scale,
            model=dataclasses.asdict(model),
            normalization=dataclasses.asdict(normalization),
            plane=plane,
            acquisitions=list(acquisitions or ["bicubic"]),
            training=dict(training or {}),
            created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        )


def save_checkpoint(path: str, state_dict: Dict[str, Any], metadata: CheckpointMetadata) -> Path:
    """Write ``path`` (.safetensors) and its sidecar .json atomically; return the weights path.

    The weights carry the metadata in their header and load on their own, so the old sidecar is
    removed first: a crash at any instant leaves a loadable checkpoint (old or new).
    """
    from safetensors.torch import save  # lazy: safetensors.torch imports torch; metadata reads need no torch

    target = weights_path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    entries, _, data = split_safetensors(save(tensors, metadata={METADATA_KEY: "{}"}))
    metadata = dataclasses.replace(metadata, format=FORMAT, weights_sha256=hashlib.sha256(data).hexdigest(), content_sha256="")
    metadata = dataclasses.replace(metadata, content_sha256=content_digest(entries, data, metadata.digest_text()))
    blob = save(tensors, metadata={METADATA_KEY: metadata.to_json()})
    sidecar = target.with_suffix(".json")
    if sidecar.exists():  # a kill between the two renames must not pair new weights with an old sidecar
        sidecar.unlink()
    atomic_write_bytes(target, blob)
    atomic_write_bytes(sidecar, (metadata.to_json() + "\n").encode("utf-8"))
    return target


def store_half(source: str, target: str) -> Path:
    """Write checkpoint ``source`` again as ``target`` with its floating-point weights rounded to float16 (half the
    file); the metadata is kept and the checksums renewed. It loads as before, into a float32 model
    (``load_generator``). The bundled in-plane checkpoints ship this way: the rounding moved PSNR on the real-scan
    development slices by at most 0.002 dB (docs/decisions.md, "Half-precision storage")."""
    import torch  # lazy: keeps torch out of this module's import; metadata reads need no torch

    model, metadata = load_generator(source)
    halved = {name: value.to(torch.float16) if value.is_floating_point() else value for name, value in model.state_dict().items()}
    return save_checkpoint(target, halved, metadata)


def read_metadata(path: str) -> CheckpointMetadata:
    """Read and check a checkpoint's metadata and integrity without loading weights (no torch needed)."""
    return _verified(path)[0]


def load_generator(path: str, expected_scale: Optional[int] = None, device: str = "cpu") -> Tuple[Any, CheckpointMetadata]:
    """Build the generator described by the checkpoint and load its weights (eval mode).

    The architecture is first built on torch's ``meta`` device (no memory) and its parameter
    names and shapes compared with the file's tensors, so a crafted size is refused before
    anything is allocated.
    """
    import torch  # lazy: keeps torch out of this module's import; metadata reads need no torch
    from safetensors import SafetensorError  # lazy: safetensors only to load weights; metadata reads need none
    from safetensors.torch import load as load_tensors  # lazy: safetensors.torch imports torch

    from fagan_engine.models.archs import build_generator  # lazy: models.archs imports torch

    metadata, entries, blob = _verified(path)
    name = Path(path).name
    if expected_scale is not None and metadata.scale != expected_scale:
        raise CheckpointError(f"checkpoint {name} is for x{metadata.scale}, but x{expected_scale} was asked for")
    try:
        with torch.device("meta"):
            skeleton = build_generator(metadata.model_config())
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {name} has an invalid architecture: {exc}") from None
    declared = {key: list(value.shape) for key, value in skeleton.state_dict().items()}
    stored = {key: entry["shape"] for key, entry in entries.items()}
    if declared != stored:
        count = sum(_numel(shape) for shape in declared.values())
        raise CheckpointError(
            f"checkpoint {name}: metadata and weights disagree (the architecture has {count} parameters "
            f"in {len(declared)} tensors, the file {sum(_numel(shape) for shape in stored.values())} in {len(stored)})"
        )
    model = build_generator(metadata.model_config())
    try:
        tensors = load_tensors(blob)
        model.load_state_dict(tensors, strict=True)
    except (SafetensorError, RuntimeError) as exc:
        raise CheckpointError(f"cannot load weights of {name}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return model.to(device).eval(), metadata


def bundled_checkpoints() -> List[Path]:
    """The in-plane checkpoints shipped with the engine, sorted by name (not the through-plane weights)."""
    return sorted(BUNDLED_DIR.glob("fagan_x*.safetensors"))


def default_checkpoint(scale: int, acquisition: str = "kspace") -> Optional[Path]:
    """The bundled FA-GAN checkpoint for ``scale`` made for ``acquisition``, or None if none ships.

    Among the bundled ``fagan_x<scale>*`` checkpoints, one whose primary acquisition (the first
    listed in its sidecar) matches wins, then one trained with it in its mix, then any (the
    caller warns about the mismatch). Only the small JSON sidecars are read here; the chosen
    checkpoint is verified when it is loaded.
    """
    candidates = sorted(BUNDLED_DIR.glob(f"fagan_x{scale}*.safetensors"))

    def rank(path: Path) -> int:
        try:
            listed = json.loads(path.with_suffix(".json").read_text(encoding="utf-8")).get("acquisitions", ["bicubic"])
        except (OSError, ValueError, AttributeError):
            return 3
        if listed and listed[0] == acquisition:
            return 0
        return 1 if acquisition in listed else 2

    return min(candidates, key=rank) if candidates else None


@dataclasses.dataclass(frozen=True)
class ThroughPlaneWeights:
    """A verified through-plane checkpoint: where it is, its metadata and the bytes that were verified."""

    path: Path
    metadata: Dict[str, Any]
    blob: bytes = dataclasses.field(repr=False)
    """Load the tensors from these (``safetensors.torch.load``), not from the file again."""
    file_sha256: str

    def identity(self) -> Dict[str, Any]:
        """What a report or a result shows about these weights (the same digest everywhere); ``training_data`` in words,
        ``training`` the pretraining record (recipe, timings)."""
        return {"name": self.path.name, "sha256": self.file_sha256, "format": self.metadata["format"],
                "training_data": THROUGH_PLANE_TRAINING_DATA, "training": self.metadata.get("training", {})}


THROUGH_PLANE_TRAINING_DATA = "icbm152:t1 (synthetic slices of the template and its tissue maps)"
"""What every through-plane start is pretrained on (``through_plane.fit.synthetic_pool``), then fitted to each scan."""


def bundled_through_plane(ratio: Optional[float] = None) -> Path:
    """The bundled through-plane start for a plan's ``ratio``: the low-ratio one up to ``LOW_RATIO_LIMIT``, else (and
    when ``ratio`` is None) the other."""
    return LOW_RATIO_THROUGH_PLANE_WEIGHTS if ratio is not None and ratio <= LOW_RATIO_LIMIT else THROUGH_PLANE_WEIGHTS


def read_through_plane(path: Optional[Path] = None, ratio: Optional[float] = None) -> ThroughPlaneWeights:
    """The through-plane checkpoint ``path`` (default: the bundled start for ``ratio``, ``bundled_through_plane``),
    its ``tensors_sha256`` checked.

    The check hashes each tensor's name and bytes in name order, as ``through_plane.fit`` wrote it;
    no torch is needed (the Slicer module reads the identity with it).
    """
    target = Path(path) if path is not None else bundled_through_plane(ratio)
    if not target.is_file():
        raise CheckpointError(f"through-plane weights not found: {target}")
    try:
        blob = target.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read through-plane weights {target}: {exc.strerror}") from None
    entries, strings, data = split_tagged(
        blob, THROUGH_PLANE_KEY, f"cannot read through-plane weights {target.name}",
        f"{target.name} is not a through-plane FA-GAN checkpoint",
        {METADATA_KEY: f"{target.name} is an in-plane FA-GAN checkpoint, not through-plane weights"},
    )
    try:
        metadata = json.loads(strings[THROUGH_PLANE_KEY])
    except ValueError:
        metadata = None
    if not isinstance(metadata, dict) or metadata.get("format") != THROUGH_PLANE_FORMAT:
        found = metadata.get("format") if isinstance(metadata, dict) else None
        raise CheckpointError(f"{target.name}: unsupported format {found!r}")
    buffers = {name: data[entry["data_offsets"][0] : entry["data_offsets"][1]] for name, entry in entries.items()}
    if names_and_bytes_digest(buffers) != metadata.get("tensors_sha256"):
        raise CheckpointError(f"through-plane checkpoint {target.name} is corrupt or was modified: checksum mismatch")
    return ThroughPlaneWeights(target, metadata, blob, hashlib.sha256(blob).hexdigest())


def weights_path(path: str) -> Path:
    """The ``.safetensors`` file a checkpoint argument names (its ``.json`` sidecar names it too)."""
    target = Path(path)
    if target.suffix == ".json":
        target = target.with_suffix(".safetensors")
    return target


def _read_file(target: Path) -> bytes:
    if target.is_dir():
        raise CheckpointError(f"checkpoint {target} is a folder; name its .safetensors file")
    if not target.is_file():
        raise CheckpointError(f"checkpoint not found: {target}")
    if target.suffix == ".onnx":
        raise CheckpointError(f"{target.name} is an ONNX export, not a checkpoint: give its .safetensors file (fagan-sr can run "
                              "the export itself with --backend onnx)")
    if target.suffix != ".safetensors":
        why = " (pickled .pt/.pth files are refused)" if target.suffix in (".pt", ".pth") else ""
        raise CheckpointError(f"{target.name} is not a .safetensors checkpoint{why}")
    try:
        return target.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {target}: {exc.strerror}") from None


def _verified(path: str) -> Tuple[CheckpointMetadata, Dict[str, Any], bytes]:
    """(metadata, tensor entries, file bytes) of a checkpoint whose header, checksum and sidecar check out."""
    target = weights_path(path)
    blob = _read_file(target)
    entries, strings, data = split_tagged(
        blob, METADATA_KEY, f"{target.name} is not a safetensors file or is damaged",
        f"{target.name} is a safetensors file but not an FA-GAN checkpoint (no metadata)",
        {THROUGH_PLANE_KEY: f"{target.name} holds through-plane weights (the thick-slice fit's start), not an in-plane FA-GAN "
                            "checkpoint; --through-plane finds its bundled weights itself"},
    )
    metadata = parse_metadata(strings[METADATA_KEY], target)
    if metadata.format == FORMAT:
        intact = metadata.content_sha256 == content_digest(entries, data, metadata.digest_text())
    else:
        _check_legacy_allowed(metadata, target)
        intact = _tiles(entries, len(data)) and metadata.weights_sha256 == hashlib.sha256(data).hexdigest()
    if not intact:
        raise CheckpointError(f"checkpoint {target.name} is corrupt or was modified: checksum mismatch")
    sidecar = target.with_suffix(".json")
    if sidecar.is_file():
        try:
            text = sidecar.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            raise CheckpointError(f"cannot read {sidecar.name} (not UTF-8 text?); delete it or restore it") from None
        if parse_metadata(text, sidecar) != metadata:
            raise CheckpointError(f"{sidecar.name} disagrees with the metadata inside {target.name}")
    return dataclasses.replace(metadata, file_sha256=hashlib.sha256(blob).hexdigest()), entries, blob


def _check_legacy_allowed(metadata: CheckpointMetadata, target: Path) -> None:
    """Refuse a format-1 checkpoint unless ``ALLOW_FORMAT_1_ENV`` is set; always refuse one that carries a
    format-2 checksum (a format-2 file whose ``format`` was edited to escape the full check)."""
    if metadata.content_sha256:
        raise CheckpointError(
            f"checkpoint {target.name} says {LEGACY_FORMAT} but carries a {FORMAT} checksum: its format was edited; "
            "restore the original file"
        )
    if os.environ.get(ALLOW_FORMAT_1_ENV) != "1":
        raise CheckpointError(
            f"checkpoint {target.name} is {LEGACY_FORMAT}, whose checksum does not cover tensor names or metadata "
            f"(an edit could swap tensors unnoticed); load it only if you trust its source, with {ALLOW_FORMAT_1_ENV}=1"
        )


def _tiles(entries: Dict[str, Any], length: int) -> bool:
    """True when the tensors' byte ranges cover the data section exactly once (no shared bytes)."""
    position = 0
    for begin, end in sorted(tuple(entry["data_offsets"]) for entry in entries.values()):
        if begin != position:
            return False
        position = end
    return position == length


def _numel(shape: List[int]) -> int:
    count = 1
    for n in shape:
        count *= n
    return count


def parse_metadata(raw: str, source: Path) -> CheckpointMetadata:
    """Parse and check metadata JSON (from a checkpoint header or a sidecar)."""
    try:
        data = json.loads(raw)
        fields = {f.name for f in dataclasses.fields(CheckpointMetadata)} - {"file_sha256"}
        if not isinstance(data, dict) or set(data) - fields:
            raise ValueError("unexpected fields")
        metadata = CheckpointMetadata(**data)
    except (ValueError, TypeError):
        raise CheckpointError(f"{source.name} has unreadable FA-GAN metadata") from None
    _check_types(metadata, source)
    if metadata.format not in (FORMAT, LEGACY_FORMAT):
        raise CheckpointError(f"{source.name} has unsupported checkpoint format {metadata.format!r}")
    try:
        metadata.model_config()
        metadata.normalization_config()
    except ConfigError as exc:
        raise CheckpointError(f"{source.name} has invalid metadata: {exc}") from None
    if not isinstance(metadata.acquisitions, list) or not metadata.acquisitions or not set(metadata.acquisitions) <= set(ACQUISITIONS):
        raise CheckpointError(f"{source.name} has invalid metadata: acquisitions must list some of {', '.join(ACQUISITIONS)}")
    if metadata.model.get("scale") != metadata.scale:
        raise CheckpointError(f"{source.name}: metadata scale and architecture scale disagree")
    return metadata


def _check_types(metadata: CheckpointMetadata, source: Path) -> None:
    """One-line CheckpointError unless every metadata field has its documented type and range."""
    problems = []
    if isinstance(metadata.scale, bool) or metadata.scale not in SCALES:
        problems.append(f"scale must be one of {SCALES}")
    for name in ("model", "normalization", "training", "data_profile"):
        if not isinstance(getattr(metadata, name), dict):
            problems.append(f"{name} must be a mapping")
    if metadata.plane not in PLANES:
        problems.append(f"plane must be one of {', '.join(PLANES)}")
    for name in _TEXT_FIELDS:
        if not isinstance(getattr(metadata, name), str):
            problems.append(f"{name} must be text")
    if problems:
        raise CheckpointError(f"{source.name} has invalid metadata: {problems[0]}")
