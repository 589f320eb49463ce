"""Checkpoints: safetensors weights with JSON metadata; loading never unpickles anything.

A checkpoint is ``NAME.safetensors`` whose header carries the metadata JSON under the key
``fagan``, plus a human-readable copy ``NAME.json`` beside it. The metadata records the
architecture (ModelConfig), scale, intensity normalisation, in-plane convention, a training
summary, the engine version and the SHA-256 of the tensor data, so a tampered or truncated
file is refused. ``read_metadata`` needs neither torch nor numpy (the Slicer UI uses it).
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import struct
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ._version import __version__
from .atomic import atomic_write_bytes
from .config import ACQUISITIONS, ModelConfig, NormalizationConfig, model_config_from_dict, normalization_from_dict
from .errors import CheckpointError, ConfigError

FORMAT = "fagan-checkpoint/1"
METADATA_KEY = "fagan"
BUNDLED_DIR = Path(__file__).resolve().parent / "checkpoints"
_MAX_HEADER = 100 * 1024 * 1024


@dataclasses.dataclass
class CheckpointMetadata:
    """Everything needed to rebuild and use a generator, stored with its weights."""

    scale: int
    model: Dict[str, Any]
    normalization: Dict[str, Any]
    plane: str = "auto"
    acquisitions: List[str] = dataclasses.field(default_factory=lambda: ["bicubic"])
    training: Dict[str, Any] = dataclasses.field(default_factory=dict)
    engine_version: str = __version__
    created: str = ""
    weights_sha256: str = ""
    format: str = FORMAT

    def model_config(self) -> ModelConfig:
        return model_config_from_dict(self.model)

    def normalization_config(self) -> NormalizationConfig:
        return normalization_from_dict(self.normalization)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

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
    from safetensors.torch import save

    target = _weights_path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    placeholder = save(tensors, metadata={METADATA_KEY: "{}"})
    metadata = dataclasses.replace(metadata, weights_sha256=_data_digest(placeholder))
    blob = save(tensors, metadata={METADATA_KEY: metadata.to_json()})
    sidecar = target.with_suffix(".json")
    if sidecar.exists():  # a kill between the two renames must not pair new weights with an old sidecar
        sidecar.unlink()
    atomic_write_bytes(target, blob)
    atomic_write_bytes(sidecar, (metadata.to_json() + "\n").encode("utf-8"))
    return target


def read_metadata(path: str) -> CheckpointMetadata:
    """Read and check a checkpoint's metadata without loading weights (no torch needed)."""
    target = _weights_path(path)
    blob = _read_file(target)
    header, _ = _split(blob, target)
    raw = header.get("__metadata__", {}).get(METADATA_KEY)
    if raw is None:
        raise CheckpointError(f"{target.name} is a safetensors file but not an FA-GAN checkpoint (no metadata)")
    metadata = parse_metadata(raw, target)
    if _data_digest(blob) != metadata.weights_sha256:
        raise CheckpointError(f"checkpoint {target.name} is corrupt or was modified: weights checksum mismatch")
    sidecar = target.with_suffix(".json")
    if sidecar.is_file() and parse_metadata(sidecar.read_text(encoding="utf-8"), sidecar) != metadata:
        raise CheckpointError(f"{sidecar.name} disagrees with the metadata inside {target.name}")
    return metadata


def load_generator(path: str, expected_scale: Optional[int] = None, device: str = "cpu") -> Tuple[Any, CheckpointMetadata]:
    """Build the generator described by the checkpoint and load its weights (eval mode)."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_tensors

    from .archs import build_generator

    metadata = read_metadata(path)
    if expected_scale is not None and metadata.scale != expected_scale:
        raise CheckpointError(
            f"checkpoint {Path(path).name} is for x{metadata.scale}, but x{expected_scale} was asked for"
        )
    try:
        model = build_generator(metadata.model_config())
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {Path(path).name} has an invalid architecture: {exc}") from None
    try:
        tensors = load_tensors(_read_file(_weights_path(path)))
    except SafetensorError as exc:
        raise CheckpointError(f"cannot read weights of {Path(path).name}: {exc}") from None
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError:
        raise CheckpointError(
            f"checkpoint {Path(path).name}: metadata and weights disagree (architecture does not match the tensors)"
        ) from None
    return model.to(device).eval(), metadata


def bundled_checkpoints() -> List[Path]:
    """The default checkpoints shipped with the engine, sorted by name."""
    return sorted(BUNDLED_DIR.glob("*.safetensors"))


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


def _weights_path(path: str) -> Path:
    target = Path(path)
    if target.suffix == ".json":
        target = target.with_suffix(".safetensors")
    return target


def _read_file(target: Path) -> bytes:
    if not target.is_file():
        raise CheckpointError(f"checkpoint not found: {target}")
    if target.suffix != ".safetensors":
        raise CheckpointError(f"{target.name} is not a .safetensors checkpoint (pickled .pt/.pth files are refused)")
    try:
        return target.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {target}: {exc.strerror}") from None


def _split(blob: bytes, target: Path) -> Tuple[Dict[str, Any], int]:
    """Parse the safetensors header; return it and the offset of the data section."""
    if len(blob) < 8:
        raise CheckpointError(f"{target.name} is not a safetensors file (too short)")
    (length,) = struct.unpack("<Q", blob[:8])
    if length > _MAX_HEADER or 8 + length > len(blob):
        raise CheckpointError(f"{target.name} is not a safetensors file or is truncated")
    try:
        header = json.loads(blob[8 : 8 + length].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise CheckpointError(f"{target.name} is not a safetensors file (bad header)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{target.name} is not a safetensors file (bad header)")
    return header, 8 + length


def _data_digest(blob: bytes) -> str:
    (length,) = struct.unpack("<Q", blob[:8])
    return hashlib.sha256(blob[8 + length :]).hexdigest()


def parse_metadata(raw: str, source: Path) -> CheckpointMetadata:
    """Parse and check metadata JSON (from a checkpoint header or a sidecar)."""
    try:
        data = json.loads(raw)
        fields = {f.name for f in dataclasses.fields(CheckpointMetadata)}
        if not isinstance(data, dict) or set(data) - fields:
            raise ValueError("unexpected fields")
        metadata = CheckpointMetadata(**data)
    except (ValueError, TypeError):
        raise CheckpointError(f"{source.name} has unreadable FA-GAN metadata") from None
    if metadata.format != FORMAT:
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
