"""Qt-free logic of the FAGANSuperRes module: usable from the Python console, scripts and tests."""
from .checkpoints import (
    CheckpointInfo,
    CheckpointRegistry,
    availableCheckpoints,
    readCheckpoint,
    userCheckpointRegistry,
)
from .dependencies import DependencyError, ensureDependencies, missingDependencies, selfTestSkipReason
from .engine import (
    DeviceInfo,
    engineCommand,
    engineEnvironment,
    ensureEngineImportable,
    pythonExecutable,
)
from .logic import SuperResolutionError, SuperResolutionJob, SuperResolutionLogic
from .process import EngineProcess
from .volumes import (
    defaultInputVolume,
    imageFromVolumeNode,
    isUsableInput,
    updateVolumeNodeFromImage,
    writeVolumeNode,
)

__all__ = [
    "CheckpointInfo",
    "CheckpointRegistry",
    "DependencyError",
    "DeviceInfo",
    "EngineProcess",
    "SuperResolutionError",
    "SuperResolutionJob",
    "SuperResolutionLogic",
    "availableCheckpoints",
    "defaultInputVolume",
    "engineCommand",
    "engineEnvironment",
    "ensureDependencies",
    "ensureEngineImportable",
    "imageFromVolumeNode",
    "isUsableInput",
    "missingDependencies",
    "pythonExecutable",
    "readCheckpoint",
    "selfTestSkipReason",
    "updateVolumeNodeFromImage",
    "userCheckpointRegistry",
    "writeVolumeNode",
]
