"""Qt-free logic of the FAGANSuperRes module: usable from the Python console, scripts and tests."""
from .checkpoints import (
    CheckpointInfo,
    CheckpointRegistry,
    availableCheckpoints,
    readCheckpoint,
    userCheckpointRegistry,
)
from .engine import (
    DeviceInfo,
    engineCommand,
    engineEnvironment,
    ensureEngineImportable,
    pythonExecutable,
)
from .logic import SuperResolutionError, SuperResolutionJob, SuperResolutionLogic
from .process import EngineProcess
from .volumes import imageFromVolumeNode, updateVolumeNodeFromImage, writeVolumeNode

__all__ = [
    "CheckpointInfo",
    "CheckpointRegistry",
    "DeviceInfo",
    "EngineProcess",
    "SuperResolutionError",
    "SuperResolutionJob",
    "SuperResolutionLogic",
    "availableCheckpoints",
    "engineCommand",
    "engineEnvironment",
    "ensureEngineImportable",
    "imageFromVolumeNode",
    "pythonExecutable",
    "readCheckpoint",
    "updateVolumeNodeFromImage",
    "userCheckpointRegistry",
    "writeVolumeNode",
]
