"""Qt-free logic of the FAGANTraining module: config writing, command line, run state machine,
progress history and MRML plots."""
from .history import TrainingHistory, TrainingPlots, formatEta, plotsInScene
from .run import RunState, TrainingRun
from .training import (
    ACQUISITIONS,
    BUNDLED,
    PRESETS,
    TrainingSettings,
    buildTrainingConfig,
    exportVolumeNodes,
    nodesInScene,
    prepareTraining,
    trainingArguments,
    trainingCommand,
    trainingVolumeFiles,
)

__all__ = [
    "ACQUISITIONS",
    "BUNDLED",
    "PRESETS",
    "RunState",
    "TrainingHistory",
    "TrainingPlots",
    "TrainingRun",
    "TrainingSettings",
    "buildTrainingConfig",
    "exportVolumeNodes",
    "formatEta",
    "nodesInScene",
    "plotsInScene",
    "prepareTraining",
    "trainingArguments",
    "trainingCommand",
    "trainingVolumeFiles",
]
