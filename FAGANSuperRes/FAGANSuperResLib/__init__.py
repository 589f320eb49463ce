"""Qt-free logic of the FAGANSuperRes module: usable from the Python console, scripts and tests."""
from .batch import BatchJob, BatchLogic, batchInputVolumes
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
from .isotropic import formatSpacing, isotropicName, throughPlaneDefaults
from .logic import SuperResolutionError, SuperResolutionJob, SuperResolutionLogic
from .options import runOptions
from .process import EngineProcess
from .provenance import NOTICE
from .volumes import (
    defaultInputVolume,
    imageFromVolumeNode,
    isUsableInput,
    updateVolumeNodeFromImage,
    writeVolumeNode,
)

__all__ = [
    "BatchJob",
    "BatchLogic",
    "batchInputVolumes",
    "CheckpointInfo",
    "CheckpointRegistry",
    "DependencyError",
    "DeviceInfo",
    "EngineProcess",
    "NOTICE",
    "SuperResolutionError",
    "SuperResolutionJob",
    "SuperResolutionLogic",
    "availableCheckpoints",
    "defaultInputVolume",
    "engineCommand",
    "engineEnvironment",
    "formatSpacing",
    "ensureDependencies",
    "ensureEngineImportable",
    "imageFromVolumeNode",
    "isUsableInput",
    "isotropicName",
    "missingDependencies",
    "pythonExecutable",
    "readCheckpoint",
    "runOptions",
    "selfTestSkipReason",
    "throughPlaneDefaults",
    "updateVolumeNodeFromImage",
    "userCheckpointRegistry",
    "writeVolumeNode",
]
