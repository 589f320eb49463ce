"""The result's checkpoint identity is read by the engine, not computed by the Lib: the SHA-256 shown before
the run is the one the engine's report gives (the digest of the file the engine verified)."""
import hashlib

from FAGANSuperResLib.checkpoints import readCheckpoint
from FAGANSuperResLib.provenance import localIdentity, throughPlaneIdentity

from fagan_engine.models.checkpoint import THROUGH_PLANE_WEIGHTS
from fagan_engine.pipeline.report import identity as reportIdentity
from fagan_engine.util.options import RunOptions


def test_in_plane_identity_gives_the_digest_of_the_verified_file(tinyCheckpoints):
    path = tinyCheckpoints[2]
    identity = localIdentity(readCheckpoint(path), "fagan", "kspace", "1.0")
    assert identity["checkpoint"] == path.name
    assert identity["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_through_plane_identity_is_the_engine_reports():
    identity = throughPlaneIdentity()
    assert identity["checkpoint"] == THROUGH_PLANE_WEIGHTS.name and identity["training_data"]
    assert identity["sha256"] == hashlib.sha256(THROUGH_PLANE_WEIGHTS.read_bytes()).hexdigest()
    report = reportIdentity(RunOptions(mode="through-plane"), None, None)["checkpoint"]
    assert (report["name"], report["sha256"]) == (identity["checkpoint"], identity["sha256"])


def test_a_through_plane_run_records_the_engines_identity():
    from FAGANSuperResLib.logic import runIdentity

    identity = runIdentity(RunOptions(mode="through-plane"))
    assert {key: identity[key] for key in ("checkpoint", "sha256", "training_data")} == throughPlaneIdentity()
