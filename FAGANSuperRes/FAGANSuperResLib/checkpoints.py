"""Checkpoints offered to the user: the engine's bundled ones plus a registry of user checkpoints.

The registry is a small JSON file (in Slicer: next to the Slicer settings) listing checkpoint
paths added with "Browse..." or produced by the FAGANTraining module. Metadata is read with
``fagan_engine.models.checkpoint.read_metadata``, which needs no torch.
"""
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .engine import ensureEngineImportable, insideSlicer


@dataclass
class CheckpointInfo:
    """A validated checkpoint and what the UI shows about it."""

    path: Path
    scale: int
    bundled: bool
    metadata: Any

    @property
    def label(self) -> str:
        preset = self.metadata.model.get("preset", "?")
        origin = "bundled" if self.bundled else "user"
        name = self.path.stem
        if not self.bundled and self.path.parent.name == "checkpoints":  # a training run's best/latest: name its run folder
            name = f"{self.path.parent.parent.name}/{name}"
        return f"{name} (x{self.scale}, {preset}, {self.acquisition}, {origin})"

    @property
    def acquisition(self) -> str:
        """The acquisition model the checkpoint was made for (the first it lists)."""
        acquisitions = getattr(self.metadata, "acquisitions", None) or ["bicubic"]
        return str(acquisitions[0])

    def describe(self) -> str:
        """Multi-line summary of the metadata for a tooltip or info label."""
        md = self.metadata
        training = md.training or {}
        lines = [
            f"File: {self.path}",
            f"Scale: x{md.scale}   preset: {md.model.get('preset', '?')}   plane: {md.plane}",
            f"Acquisition: {', '.join(getattr(md, 'acquisitions', None) or ['bicubic'])}",
            f"Engine version: {md.engine_version}   created: {md.created or 'unknown'}",
        ]
        summary = ", ".join(f"{k}: {training[k]}" for k in sorted(training) if not isinstance(training[k], (dict, list)))
        if summary:
            lines.append(f"Training: {summary}")
        return "\n".join(lines)


FileStamp = Tuple[str, int, int]
_metadataCache: Dict[Tuple[FileStamp, Optional[FileStamp]], Any] = {}


def _stamp(path: Path) -> Optional[FileStamp]:
    """(resolved path, size, mtime in ns) of a file, or None if it does not exist."""
    try:
        status = path.stat()
    except OSError:
        return None
    return str(path.resolve()), status.st_size, status.st_mtime_ns


def _cachedMetadata(target: Path) -> Any:
    """The engine's ``read_metadata(target)`` (which hashes the weights), cached by path, size and
    modification time of the weights and their sidecar: re-validated only when a file changed.
    A failure is cached too (as the ValueError to raise)."""
    from fagan_engine.models.checkpoint import read_metadata
    from fagan_engine.util.errors import FAGANError

    key = (_stamp(target), _stamp(target.with_suffix(".json")))
    if key not in _metadataCache:
        for stale in [k for k in _metadataCache if k[0] and key[0] and k[0][0] == key[0][0]]:
            del _metadataCache[stale]  # one entry per file: the previous version is gone
        try:
            _metadataCache[key] = read_metadata(str(target))
        except FAGANError as exc:
            _metadataCache[key] = ValueError(str(exc))
    cached = _metadataCache[key]
    if isinstance(cached, ValueError):
        raise ValueError(str(cached))
    return cached


def readCheckpoint(path: Any, expectedScale: Optional[int] = None, bundled: bool = False) -> CheckpointInfo:
    """Validate a checkpoint file; raise ValueError with a one-line reason if it cannot be used.

    Unchanged files are not read again (see ``_cachedMetadata``).
    """
    ensureEngineImportable()
    target = Path(path)
    if target.suffix == ".json":
        target = target.with_suffix(".safetensors")
    if not target.is_file():
        raise ValueError(f"checkpoint file not found: {target}")
    metadata = _cachedMetadata(target)
    if expectedScale is not None and metadata.scale != expectedScale:
        raise ValueError(f"checkpoint {target.name} is for x{metadata.scale}, not x{expectedScale}")
    return CheckpointInfo(target, int(metadata.scale), bundled, metadata)


class CheckpointRegistry:
    """Persistent list of user checkpoint paths (a JSON file; missing files are dropped)."""

    def __init__(self, path: Any) -> None:
        self.path = Path(path)

    def paths(self) -> List[Path]:
        """Registered checkpoints that still exist, in registration order."""
        try:
            entries = json.loads(self.path.read_text(encoding="utf-8")).get("checkpoints", [])
        except (OSError, ValueError, AttributeError):
            return []
        return [Path(p) for p in entries if isinstance(p, str) and Path(p).is_file()]

    def add(self, checkpointPath: Any) -> None:
        """Register a checkpoint (stored as an absolute path; no duplicates)."""
        target = Path(checkpointPath).resolve()
        entries = [p for p in self.paths() if p.resolve() != target] + [target]
        self._write([str(p) for p in entries])

    def remove(self, checkpointPath: Any) -> None:
        target = Path(checkpointPath).resolve()
        self._write([str(p) for p in self.paths() if p.resolve() != target])

    def _write(self, entries: List[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=str(self.path.parent), prefix=".checkpoints-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump({"checkpoints": entries}, stream, indent=2)
        os.replace(tmp, self.path)


def userCheckpointRegistry() -> CheckpointRegistry:
    """The registry both modules share: beside Slicer's settings file, or in ~/.config outside Slicer."""
    if insideSlicer():
        import slicer

        folder = Path(slicer.app.slicerUserSettingsFilePath).parent
    else:
        folder = Path.home() / ".config"
    return CheckpointRegistry(folder / "FAGANSuperResolution" / "user-checkpoints.json")


def availableCheckpoints(scale: int, registry: Optional[CheckpointRegistry] = None) -> List[CheckpointInfo]:
    """Bundled checkpoints, then registered user checkpoints, that are valid and made for ``scale``.

    The bundled default for ``scale`` comes first. Invalid files are skipped.
    """
    ensureEngineImportable()
    from fagan_engine.models.checkpoint import bundled_checkpoints, default_checkpoint

    default = default_checkpoint(scale)
    bundled = sorted(bundled_checkpoints(), key=lambda p: (default is None or p != default, p.name))
    found: List[CheckpointInfo] = []
    seen = set()
    candidates = [(p, True) for p in bundled] + [(p, False) for p in (registry.paths() if registry else [])]
    for path, isBundled in candidates:
        key = Path(path).resolve()
        if key in seen:
            continue
        seen.add(key)
        try:
            found.append(readCheckpoint(path, expectedScale=scale, bundled=isBundled))
        except ValueError:
            continue
    return found
