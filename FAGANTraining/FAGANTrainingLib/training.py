"""Training inputs: data files, scene volumes exported to NIfTI, the config file, the command line."""
import dataclasses
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, List, Sequence

from FAGANSuperResLib.engine import engineCommand, ensureEngineImportable
from FAGANSuperResLib.options import ACQUISITIONS
from FAGANSuperResLib.volumes import checkScalarVolumeNode, indexedFileName, writeVolumeNode

PRESETS = ("fagan", "srgan", "ca-srgan", "sa-srgan")
"""The presets the panel offers: the paper's methods (the engine's ``PRESETS`` add the ablations)."""
BUNDLED = "bundled"
"""``TrainingSettings.initCheckpoint`` value: fine-tune from the bundled checkpoint for the scale and acquisition."""
# The bundled recipe (configs/fagan_x2_acquisition.yaml, fagan_x4_acquisition.yaml): the values the
# panel does not expose are written as they are there; the exposed ones are TrainingSettings' defaults.
RECIPE_DEGRADATION = {"windows": ["none", "hamming", "tukey", "fermi"], "window_strength": [0.2, 0.8],
                      "partial_fourier_min": 0.625, "psf_fwhm": [0.8, 1.5]}
RECIPE_SYNTHESIS = {"bias_field": 0.3, "gamma_range": 0.3, "texture": 0.05, "deform": 0.1}
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
CONFIG_FILENAME = "slicer_training_config.json"
ROOT_CONFIGS = Path(__file__).resolve().parents[2] / "configs"
"""The recipes in a source checkout (the tests compare the defaults with them; not shipped)."""
EXPORT_FOLDER = "scene_volumes"


@dataclass
class TrainingSettings:
    """What the FAGANTraining module asks for. Empty strings mean "not set"."""

    outputDir: str
    dataFolder: str = ""
    volumeFiles: List[str] = field(default_factory=list)
    valFraction: float = 0.2
    scale: int = 4
    preset: str = "fagan"
    iterations: int = 2000
    patchSize: int = 64
    batchSize: int = 16
    device: str = "auto"
    vggWeights: str = ""
    # Acquisition model of the LR inputs (data.degradation.*): primary acquisition and the mix.
    acquisition: str = "kspace"
    kspaceWeight: float = 0.6
    bicubicWeight: float = 0.25
    gaussianWeight: float = 0.15
    partialFourierProbability: float = 0.25
    noiseProbability: float = 0.5
    noiseMin: float = 0.005
    noiseMax: float = 0.04
    # Synthetic training data (data.synthetic_fraction, data.synthesis.*).
    syntheticFraction: float = 1.0
    templateWeight: float = 0.25
    brainWeight: float = 0.5
    shapesWeight: float = 0.25
    # train.init_checkpoint: "" trains from scratch, BUNDLED the bundled checkpoint, else a file.
    initCheckpoint: str = ""
    overrides: List[str] = field(default_factory=list)  # extra "section.key=value" settings


def trainingVolumeFiles(folder: Any) -> List[Path]:
    """Volume files (NIfTI, NRRD, MetaImage) directly inside ``folder``, sorted by name."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"training data folder not found: {folder}")
    return sorted(p for p in root.iterdir() if p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES))


def nodesInScene(volumeNodes: Sequence[Any]) -> List[Any]:
    """The nodes that are still in their scene (a checked node may have been deleted since)."""
    return [node for node in volumeNodes
            if node is not None and node.GetScene() is not None and node.GetScene().IsNodePresent(node)]


def exportPaths(volumeNodes: Sequence[Any], folder: Any) -> List[Path]:
    """NIfTI file names for scene volumes: ``NNN_<sanitized node name>.nii.gz`` in ``folder`` (``volumes.indexedFileName``)."""
    return [Path(folder) / indexedFileName(index, node.GetName(), ".nii.gz") for index, node in enumerate(volumeNodes)]


def exportVolumeNodes(volumeNodes: Sequence[Any], folder: Any) -> List[Path]:
    """Write scene volumes as NIfTI files (exact geometry) into ``folder``; return their paths."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    return [writeVolumeNode(node, path) for node, path in zip(volumeNodes, exportPaths(volumeNodes, folder))]


def buildTrainingConfig(settings: TrainingSettings, trainFiles: Sequence[Any]) -> Any:
    """The validated FAGANConfig for ``settings`` (raises ValueError with a one-line reason).

    Validation, checkpoint and pre-training intervals are shortened for short runs so the
    chart gets points and the run can be resumed.
    """
    ensureEngineImportable()
    from fagan_engine.util.config import FAGANConfig
    from fagan_engine.util.errors import FAGANError
    from fagan_engine.util.presets import preset_config

    if settings.preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}; got {settings.preset!r}")
    if settings.acquisition not in ACQUISITIONS:
        raise ValueError(f"acquisition must be one of {', '.join(ACQUISITIONS)}; got {settings.acquisition!r}")
    if not trainFiles:
        raise ValueError("no training volumes: choose a data folder with volume files or select scene volumes")
    iterations = int(settings.iterations)
    defaults = FAGANConfig()
    try:
        initCheckpoint = initCheckpointPath(settings)
        model = dataclasses.asdict(preset_config(settings.preset, int(settings.scale)))
        if initCheckpoint:
            model = fineTunedModel(initCheckpoint, settings)
        data = {
            "model": model,
            "data": {"train": [str(Path(p).resolve()) for p in trainFiles], "val_fraction": float(settings.valFraction),
                     "patch_size": int(settings.patchSize), "degradation": degradationConfig(settings),
                     "synthetic_fraction": float(settings.syntheticFraction), "synthesis": synthesisConfig(settings)},
            "train": {
                "output_dir": str(Path(settings.outputDir).resolve()),
                "iterations": iterations,
                "pretrain_iterations": min(defaults.train.pretrain_iterations, iterations // 4),
                "batch_size": int(settings.batchSize),
                "device": settings.device,
                "vgg_weights": settings.vggWeights or None,
                "val_every": max(1, min(defaults.train.val_every, iterations // 20)),
                "checkpoint_every": max(1, min(defaults.train.checkpoint_every, iterations // 5)),
                "init_checkpoint": initCheckpoint or None,
            },
        }
        config = FAGANConfig.from_dict(data).with_overrides(settings.overrides)
        from fagan_engine.training.data import check_patch_size  # the trainer's own rule: patch, scale, VGG

        check_patch_size(config)
        return config
    except FAGANError as exc:
        raise ValueError(str(exc)) from None


def degradationConfig(settings: TrainingSettings) -> dict:
    """``data.degradation``: the acquisition model of the training LR images."""
    return dict(RECIPE_DEGRADATION, primary=settings.acquisition, kspace_weight=float(settings.kspaceWeight),
                bicubic_weight=float(settings.bicubicWeight), gaussian_weight=float(settings.gaussianWeight),
                partial_fourier_probability=float(settings.partialFourierProbability),
                noise_probability=float(settings.noiseProbability),
                noise=[float(settings.noiseMin), float(settings.noiseMax)])


def synthesisConfig(settings: TrainingSettings) -> dict:
    """``data.synthesis``: the mixture of synthetic training slices."""
    return dict(RECIPE_SYNTHESIS, template_weight=float(settings.templateWeight),
                brain_weight=float(settings.brainWeight), shapes_weight=float(settings.shapesWeight))


def initCheckpointPath(settings: TrainingSettings) -> str:
    """The checkpoint to fine-tune from (absolute path), or "" to train from scratch."""
    if not settings.initCheckpoint:
        return ""
    if settings.initCheckpoint == BUNDLED:
        from fagan_engine.models.checkpoint import default_checkpoint

        found = default_checkpoint(int(settings.scale), settings.acquisition)
        if found is None:
            raise ValueError(f"no bundled checkpoint for x{settings.scale} to fine-tune from: choose a file or train from scratch")
        return str(found)
    path = Path(settings.initCheckpoint)
    if not path.is_file():
        raise ValueError(f"checkpoint to fine-tune from not found: {settings.initCheckpoint}")
    return str(path.resolve())


def fineTunedModel(checkpoint: str, settings: TrainingSettings) -> dict:
    """The model section for fine-tuning: the checkpoint's architecture, which must fit the
    chosen scale and preset (the trainer loads its weights as they are)."""
    from FAGANSuperResLib.checkpoints import readCheckpoint

    info = readCheckpoint(checkpoint)
    model = dict(info.metadata.model)
    if info.scale != int(settings.scale):
        raise ValueError(f"{info.path.name} is a x{info.scale} model: set the scale to {info.scale} to fine-tune it")
    if model.get("preset") != settings.preset:
        raise ValueError(f"{info.path.name} is a {model.get('preset')} model: choose that preset to fine-tune it")
    return model


@contextmanager
def newRunFolder(runDir: Path) -> Iterator[None]:
    """Hold the engine's lock on ``runDir`` (``fagan_engine.util.locking``, the trainer's own) while a new run's files
    are written, after the trainer's own check (``fagan_engine.util.run_folder``): a folder in use by a running trainer,
    or holding an earlier run, is refused (ValueError, one line) before anything is written."""
    ensureEngineImportable()
    from fagan_engine.util.errors import FAGANError
    from fagan_engine.util.locking import RunFolderLock
    from fagan_engine.util.run_folder import check_run_folder

    lock = RunFolderLock(runDir, "run folder")
    try:
        lock.acquire()
        check_run_folder(runDir, resume=False, resume_hint="use Resume to continue that run", folder="run folder")
    except FAGANError as exc:
        lock.release()
        raise ValueError(str(exc)) from None
    try:
        yield
    finally:
        lock.release()


def prepareTraining(settings: TrainingSettings, volumeNodes: Sequence[Any] = ()) -> Path:
    """Collect the data (folder files + exported scene volumes), write the config into the run
    folder and return the config path. Scene volumes are exported into the run folder so a run
    can be resumed after Slicer restarts; nodes no longer in the scene are left out. A folder that
    holds an earlier run or is in use (``newRunFolder``) is refused before anything is written."""
    volumeNodes = nodesInScene(volumeNodes)
    if not settings.outputDir:
        raise ValueError("choose an output run folder")
    runDir = Path(settings.outputDir).resolve()  # the trainer runs in the run folder: a relative name would not reach it
    for node in volumeNodes:  # every node checked before the run folder gets a file
        checkScalarVolumeNode(node)
    if settings.vggWeights and not Path(settings.vggWeights).is_file():
        raise ValueError(f"VGG19 weights file not found: {settings.vggWeights}")
    files: List[Path] = [Path(p) for p in settings.volumeFiles]
    if settings.dataFolder:
        files += trainingVolumeFiles(settings.dataFolder)
    config = buildTrainingConfig(settings, files + exportPaths(volumeNodes, runDir / EXPORT_FOLDER))
    configPath = runDir / CONFIG_FILENAME
    with newRunFolder(runDir):
        exportVolumeNodes(volumeNodes, runDir / EXPORT_FOLDER)
        configPath.write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
    return configPath


def trainingArguments(configPath: Any, resume: bool = False) -> List[str]:
    """Arguments of ``fagan_engine train`` (after the subcommand)."""
    return ["--config", str(configPath), "--progress", "json"] + (["--resume"] if resume else [])


def trainingCommand(configPath: Any, resume: bool = False) -> List[str]:
    """``<python> -m fagan_engine train --config FILE --progress json [--resume]``."""
    return engineCommand("train", trainingArguments(configPath, resume))
