"""Fixtures for the Slicer-side tests: a real MRML scene (slicer-core) and oblique volume nodes.

The module Lib packages are imported the way Slicer does: their module folders on sys.path.
"""
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
for folder in (ROOT / "FAGANSuperRes", ROOT / "FAGANTraining", ROOT):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from mrml_helpers import addVolumeNode, smoothArray  # noqa: E402 (after the module folders are on sys.path)
from slicer import vtkMRMLScene  # noqa: E402

FAKE_ENGINE = Path(__file__).with_name("fake_engine.py")


@pytest.fixture
def fakeEngine(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Route the Lib's engine command to the stand-in engine (fake_engine.py), which offers every flag."""
    import FAGANSuperResLib.logic as logicModule
    import FAGANSuperResLib.stacks as stacksModule

    for module in (logicModule, stacksModule):
        monkeypatch.setattr(module, "engineCommand", lambda sub, args: [sys.executable, str(FAKE_ENGINE), *args])
        monkeypatch.setattr(module, "engineSupports", lambda *flags: True)
    monkeypatch.delenv("FAKE_ENGINE_FAIL", raising=False)
    return monkeypatch


@pytest.fixture
def scene() -> Any:
    """A real scene with the node classes Slicer's Colors module registers (the colour legend)."""
    import slicer

    scene = vtkMRMLScene()
    scene.RegisterNodeClass(slicer.vtkMRMLColorLegendDisplayNode())
    return scene


@pytest.fixture
def obliqueNode(scene: Any) -> Any:
    return addVolumeNode(scene, smoothArray())


@pytest.fixture(scope="session")
def tinyCheckpoints(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Small random-weight FA-GAN checkpoints for x2 and x4 (real files written by the engine)."""
    from fagan_engine.models.archs import build_generator, preset_config
    from fagan_engine.models.checkpoint import CheckpointMetadata, save_checkpoint
    from fagan_engine.util.config import NormalizationConfig

    folder = tmp_path_factory.mktemp("checkpoints")
    paths = {}
    for scale in (2, 4):
        cfg = preset_config("fagan", scale, n_feats=8, n_blocks=1)
        metadata = CheckpointMetadata.create(cfg, NormalizationConfig(), training={"iterations": 0, "note": "test"})
        paths[scale] = save_checkpoint(str(folder / f"tiny_x{scale}.safetensors"), build_generator(cfg).state_dict(), metadata)
    return paths
