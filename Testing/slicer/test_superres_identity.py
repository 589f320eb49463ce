"""The result's checkpoint identity is read by the engine, not computed by the Lib: the SHA-256 shown before
the run is the one the engine's report gives (the digest of the file the engine verified)."""
import hashlib

from FAGANSuperResLib.checkpoints import readCheckpoint
from FAGANSuperResLib.provenance import identityFromReport, localIdentity, throughPlaneIdentity

from fagan_engine.models.checkpoint import THROUGH_PLANE_TRAINING_DATA, THROUGH_PLANE_WEIGHTS
from fagan_engine.pipeline.report import identity as reportIdentity
from fagan_engine.util.options import RunOptions


def test_in_plane_identity_gives_the_digest_of_the_verified_file(tinyCheckpoints):
    path = tinyCheckpoints[2]
    identity = localIdentity(readCheckpoint(path), "fagan", "kspace", "1.0")
    assert identity["checkpoint"] == path.name
    assert identity["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_through_plane_identity_is_the_engine_reports():
    identity = throughPlaneIdentity()
    assert identity["checkpoint"] == THROUGH_PLANE_WEIGHTS.name
    # in words, as the engine's report gives it (it was a dump of the pretraining record: recipe paths, timings)
    assert identity["training_data"] == THROUGH_PLANE_TRAINING_DATA
    engine = reportIdentity(RunOptions(mode="through-plane"), None, None)
    assert identityFromReport(engine)["training_data"] == THROUGH_PLANE_TRAINING_DATA
    assert identity["sha256"] == hashlib.sha256(THROUGH_PLANE_WEIGHTS.read_bytes()).hexdigest()
    report = reportIdentity(RunOptions(mode="through-plane"), None, None)["checkpoint"]
    assert (report["name"], report["sha256"]) == (identity["checkpoint"], identity["sha256"])


def test_a_through_plane_run_records_the_engines_identity():
    from FAGANSuperResLib.logic import runIdentity

    identity = runIdentity(RunOptions(mode="through-plane"))
    assert {key: identity[key] for key in ("checkpoint", "sha256", "training_data")} == throughPlaneIdentity()


def test_before_a_through_plane_run_the_volume_picks_the_start_as_the_engine_will(scene):
    """A ×2 volume names the low-ratio start, a ×3.5 one the general start: the ratio the engine's plan gives."""
    import numpy as np
    from FAGANSuperResLib.logic import runIdentity, volumeSliceRatio
    from FAGANSuperResLib.volumes import imageFromVolumeNode
    from mrml_helpers import addVolumeNode

    from fagan_engine.models.checkpoint import LOW_RATIO_THROUGH_PLANE_WEIGHTS
    from fagan_engine.through_plane.plan import plan_through_plane

    array = np.random.default_rng(0).random((6, 16, 12)).astype(np.float32)
    for spacing, target, expected in (((0.9, 1.3, 2.0), 1.0, LOW_RATIO_THROUGH_PLANE_WEIGHTS), ((0.9, 1.3, 3.5), None, THROUGH_PLANE_WEIGHTS)):
        node = addVolumeNode(scene, array, spacing=spacing)
        ratio = volumeSliceRatio(node, target)
        assert ratio == plan_through_plane(imageFromVolumeNode(node), target, 1.0).ratio
        identity = runIdentity(RunOptions(mode="through-plane", target_spacing=target), node)
        assert identity["checkpoint"] == expected.name
        assert identity["sha256"] == hashlib.sha256(expected.read_bytes()).hexdigest()
    assert volumeSliceRatio(None, None) is None
