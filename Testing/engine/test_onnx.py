"""ONNX export and the ONNX Runtime backend: fidelity against torch, use without torch, CLIs."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import onnx  # noqa: E402

from benchmarks.common import save_active_checkpoint  # noqa: E402
from fagan_engine.cli.export import main as export_main  # noqa: E402
from fagan_engine.cli.sr import main as sr_main  # noqa: E402
from fagan_engine.inference.onnx_backend import export_onnx, onnx_runner, sidecar_path  # noqa: E402
from fagan_engine.inference.runners import torch_runner  # noqa: E402
from fagan_engine.models.archs import attention  # noqa: E402
from fagan_engine.models.checkpoint import load_generator  # noqa: E402
from fagan_engine.util.errors import CheckpointError  # noqa: E402
from fagan_engine.util.protocol import parse_line  # noqa: E402

SMALL = {"n_feats": 16, "n_blocks": 1}
CASES = {
    "x2-lr-pooled": (2, {}),
    "x4-lr-pooled": (4, {}),
    "x2-hr-unpooled": (2, {"attention_placement": "hr", "attention_pool": False, **SMALL}),
}


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Automatic exports go to a per-test cache, not ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Tuple[Path, Path]]:
    """name → (checkpoint, its sibling .onnx) for every case, exported with fagan-export's code."""
    folder = tmp_path_factory.mktemp("onnx")
    out = {}
    for name, (scale, overrides) in CASES.items():
        checkpoint = save_active_checkpoint(folder / f"{name}.safetensors", scale, **overrides)
        out[name] = (checkpoint, export_onnx(str(checkpoint), str(checkpoint.with_suffix(".onnx"))))
    return out


@pytest.mark.parametrize(
    "name, shape",
    [
        ("x2-lr-pooled", (3, 1, 19, 26)),
        ("x4-lr-pooled", (3, 1, 19, 26)),
        ("x4-lr-pooled", (1, 1, 4, 4)),
        ("x2-hr-unpooled", (2, 1, 40, 40)),  # 3 query chunks of the attention loop, last one padded
    ],
)
def test_torch_and_onnx_agree_within_1e_4_on_unit_range_data(
    exported: Dict, name: str, shape: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The export attends globally, so torch does too here (the 80² HR-placed map is above ATTENTION_WINDOW)."""
    monkeypatch.setattr(attention, "ATTENTION_WINDOW", 10**6)
    checkpoint, onnx_path = exported[name]
    scale = CASES[name][0]
    batch = np.random.default_rng(0).random(shape, dtype=np.float32)
    model, _ = load_generator(str(checkpoint))
    reference = torch_runner(model, "cpu")(batch)
    runner, _ = onnx_runner(str(onnx_path), scale)
    result = runner(batch)
    assert result.shape == (shape[0], 1, shape[2] * scale, shape[3] * scale)
    assert np.abs(reference - np.repeat(np.repeat(batch, scale, 2), scale, 3)).max() > 0.05  # not bicubic alone
    assert np.abs(result - reference).max() < 1e-4


TRACKED_BUDGET = 20_000_000
"""Bytes of tracked files at most (issue #18: the index allows 100 MB with history)."""


def test_bundled_checkpoint_exports_faithfully(tmp_path: Path) -> None:
    """The shipped ×4 model (×2 has the same architecture; the active models above cover it)."""
    from fagan_engine.models.checkpoint import default_checkpoint

    scale = 4
    checkpoint = default_checkpoint(scale)
    if checkpoint is None:
        pytest.skip("no bundled x4 checkpoint")
    batch = np.random.default_rng(1).random((2, 1, 24, 20), dtype=np.float32)
    reference = torch_runner(load_generator(str(checkpoint))[0], "cpu")(batch)
    runner, _ = onnx_runner(str(export_onnx(str(checkpoint), str(tmp_path / "bundled.onnx"))), scale)
    assert np.abs(runner(batch) - reference).max() < 1e-4


def test_export_has_no_softmax_matrix_and_carries_the_checkpoint_metadata(exported: Dict) -> None:
    checkpoint, onnx_path = exported["x4-lr-pooled"]
    model = onnx.load(str(onnx_path))
    ops = {n.op_type for n in model.graph.node}
    assert "Loop" in ops and not {"Softmax", "MatMul"} & ops
    body_ops = {n.op_type for n in model.graph.node if n.op_type == "Loop" for n in n.attribute[0].g.node}
    assert "MultiHeadAttention" in body_ops and "Softmax" not in body_ops
    embedded = json.loads({p.key: p.value for p in model.metadata_props}["fagan"])
    assert embedded == json.loads(checkpoint.with_suffix(".json").read_text())
    sidecar = json.loads(sidecar_path(onnx_path).read_text())
    assert sidecar.pop("onnx_sha256") == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert sidecar == {key: value for key, value in embedded.items() if key != "onnx_sha256"}  # empty: omitted


def test_runner_checks_scale_and_sidecar(exported: Dict, tmp_path: Path) -> None:
    _, onnx_path = exported["x2-lr-pooled"]
    with pytest.raises(CheckpointError, match="is for x2, but x4"):
        onnx_runner(str(onnx_path), 4)
    copy = tmp_path / "copy.onnx"
    shutil.copy(onnx_path, copy)
    sidecar = json.loads(sidecar_path(onnx_path).read_text())
    sidecar["normalization"]["high_percentile"] = 99.0
    sidecar_path(copy).write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match="disagrees"):
        onnx_runner(str(copy), 2)


def test_onnx_backend_runs_without_torch(exported: Dict, tmp_path: Path) -> None:
    checkpoint, onnx_path = exported["x4-lr-pooled"]
    lonely = tmp_path / "lonely" / checkpoint.name
    lonely.parent.mkdir()
    shutil.copy(checkpoint, lonely)
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # as in a Slicer without the PyTorch extension
        import numpy as np, SimpleITK as sitk
        from fagan_engine.util.errors import CheckpointError
        from fagan_engine.pipeline.report import super_resolve
        image = sitk.GetImageFromArray(np.random.default_rng(0).random((2, 12, 10)).astype(np.float32))
        direct = super_resolve(image, 4, checkpoint={str(onnx_path)!r}, backend="onnx")
        sibling = super_resolve(image, 4, checkpoint={str(checkpoint)!r}, backend="auto")
        assert direct.GetSize() == sibling.GetSize() == (40, 48, 2)
        assert np.array_equal(sitk.GetArrayFromImage(direct), sitk.GetArrayFromImage(sibling))
        try:
            super_resolve(image, 4, checkpoint={str(lonely)!r}, backend="onnx")
        except CheckpointError as exc:
            print("ERROR", exc)
        print("TORCH", any(m.split(".")[0] == "torch" for m, v in sys.modules.items() if v is not None))
        """
    )
    env = {"XDG_CACHE_HOME": str(tmp_path / "empty-cache"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "TORCH False" in proc.stdout
    assert "ERROR no ONNX export of" in proc.stdout and "fagan-export" in proc.stdout


def test_fagan_sr_onnx_backend_end_to_end(icbm_crop_file: Path, tmp_path: Path, private_cache: Path, capsys: pytest.CaptureFixture) -> None:
    """No sibling export: with torch installed the checkpoint is exported once into the cache."""
    checkpoint = save_active_checkpoint(tmp_path / "tiny.safetensors", 2, n_feats=8, n_blocks=1)
    outputs = {}
    for backend in ("onnx", "torch"):
        outputs[backend] = tmp_path / f"{backend}.nrrd"
        argv = [icbm_crop_file, outputs[backend], "--scale", 2, "--checkpoint", checkpoint, "--backend", backend, "--progress", "json",
                "--adapt", "0"]  # the ONNX path cannot adapt: compare the same network
        assert sr_main([str(a) for a in argv]) == 0
        stdout = capsys.readouterr().out
        assert all(parse_line(line) is not None for line in stdout.splitlines()), stdout  # exporter kept stdout clean
    assert len(list(private_cache.rglob("*.onnx"))) == 1
    onnx_result, torch_result = (sitk.GetArrayFromImage(sitk.ReadImage(str(outputs[b]))) for b in ("onnx", "torch"))
    assert onnx_result.shape == (6, 112, 96)
    assert np.abs(onnx_result - torch_result).max() < 1e-4 * np.ptp(torch_result)


def test_fagan_export_cli(exported: Dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoint, onnx_path = exported["x2-lr-pooled"]
    assert export_main([str(checkpoint), str(onnx_path)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert export_main([str(checkpoint), str(tmp_path / "model.onx")]) == 2
    assert "must name a file ending in .onnx or .safetensors" in capsys.readouterr().err
    assert export_main([str(tmp_path / "missing.safetensors"), str(tmp_path / "m.onnx")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    (tmp_path / "e.onnx.json").write_text('{"mine": 1}')  # a sidecar alone: the export would replace it
    assert export_main([str(checkpoint), str(tmp_path / "e.onnx")]) == 2
    assert "e.onnx.json) exists; pass --force" in capsys.readouterr().err
    assert (tmp_path / "e.onnx.json").read_text() == '{"mine": 1}' and not (tmp_path / "e.onnx").exists()


def test_onnx_backend_needs_a_checkpoint() -> None:
    from fagan_engine.pipeline.report import super_resolve
    from fagan_engine.util.errors import InputError

    image = sitk.GetImageFromArray(np.zeros((2, 8, 8), np.float32))
    with pytest.raises(InputError, match="needs a checkpoint"):
        super_resolve(image, 2, backend="onnx", untrained=True)


def test_a_tampered_or_unchecksummed_onnx_is_refused(exported: Dict, tmp_path: Path) -> None:
    """The ONNX bytes are bound to their export by the sidecar's SHA-256; a sibling is used only for its own checkpoint and
    only intact."""
    checkpoint, onnx_path = exported["x2-lr-pooled"]
    folder = tmp_path / "pair"
    folder.mkdir()
    for source in (checkpoint, checkpoint.with_suffix(".json"), onnx_path, sidecar_path(onnx_path)):
        shutil.copy(source, folder / source.name)
    sibling = folder / onnx_path.name
    blob = bytearray(sibling.read_bytes())
    blob[len(blob) // 2] ^= 0x01  # one weight bit
    sibling.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        onnx_runner(str(sibling), 2)  # named itself: refused
    onnx_runner(str(folder / checkpoint.name), 2)  # through its checkpoint: never used, a verified export is made instead
    assert sibling.read_bytes() == bytes(blob)  # and left as it was
    sidecar = json.loads(sidecar_path(sibling).read_text())
    sidecar["onnx_sha256"] = ""
    sidecar_path(sibling).write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match="records no checksum"):
        onnx_runner(str(sibling), 2)
    sidecar_path(sibling).unlink()
    with pytest.raises(CheckpointError, match="no metadata sidecar"):
        onnx_runner(str(sibling), 2)


def test_no_onnx_export_is_tracked_and_tracked_files_stay_inside_the_budget() -> None:
    """ONNX exports are derived (made on first use, cached by the checkpoint's hash), so none is committed;
    the tracked files stay under TRACKED_BUDGET so the extension stays inside the ExtensionsIndex limits."""
    root = Path(__file__).resolve().parents[2]
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout.decode().split("\0")
    files = [root / name for name in listed if name]
    assert not [f for f in files if f.suffix == ".onnx" or f.name.endswith(".onnx.json")]
    total = sum(f.stat().st_size for f in files if f.is_file())
    assert total <= TRACKED_BUDGET, f"tracked files total {total / 1e6:.1f} MB, over the {TRACKED_BUDGET / 1e6:.0f} MB budget"


@pytest.mark.parametrize("output", [".", "/", "x.SAFETENSORS", ".onnx", "x.onnx.bak"])
def test_export_to_a_name_that_is_no_model_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, output: str) -> None:
    """'.' and '/' gave a ValueError traceback; x.SAFETENSORS was told it must end with .onnx."""
    checkpoint = save_active_checkpoint(tmp_path / "tiny.safetensors", 2, n_feats=8, n_blocks=1)
    assert export_main([str(checkpoint), output]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "must name a file ending in .onnx or .safetensors" in err[0]


def test_the_cache_keeps_a_models_sidecar_while_another_process_exports_it_again(exported: Dict, tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Two first uses at once (batch shards sharing a home): the second export deleted the sidecar the first process was
    about to read ('has no metadata sidecar', exit 2). A cache export is now written aside and renamed into place."""
    from fagan_engine.inference import onnx_backend

    checkpoint, _ = exported["x2-lr-pooled"]
    lonely = tmp_path / "lonely" / checkpoint.name
    lonely.parent.mkdir()
    shutil.copy(checkpoint, lonely)
    first = onnx_backend._onnx_for_checkpoint(lonely)  # exported into the (private) cache
    assert first.parent.name == "onnx" and sidecar_path(first).is_file()
    real, seen = onnx_backend.export_onnx, []

    def exporting(source: str, target: str) -> Path:
        seen.append(sidecar_path(first).is_file())  # what a reader in another process finds meanwhile
        return real(source, target)

    monkeypatch.setattr(onnx_backend, "export_onnx", exporting)
    again = onnx_backend._export_to_cache(lonely, first)
    assert seen == [True] and again == first and sidecar_path(first).is_file()
    assert sorted(p.name for p in first.parent.iterdir()) == [first.name, sidecar_path(first).name]  # no staging left
    onnx_runner(str(lonely), 2)


def test_a_damaged_sibling_export_gives_way_to_the_cache_and_is_not_counted(exported: Dict, tmp_path: Path) -> None:
    """A truncated NAME.onnx beside the checkpoint refused the ONNX path ('checksum mismatch') and counted as present."""
    from fagan_engine.inference.onnx_backend import export_present

    checkpoint, onnx_path = exported["x2-lr-pooled"]
    folder = tmp_path / "damaged"
    folder.mkdir()
    for source in (checkpoint, onnx_path, sidecar_path(onnx_path)):
        shutil.copy(source, folder / source.name)
    copy = folder / checkpoint.name
    assert export_present(copy)
    (folder / onnx_path.name).write_bytes(onnx_path.read_bytes()[:1000])  # the model truncated, its sidecar intact
    assert not export_present(copy)
    sidecar_path(folder / onnx_path.name).write_text("{}")  # and the sidecar edited: describes no checkpoint
    assert not export_present(copy)
    runner, _ = onnx_runner(str(copy), 2)  # re-exported into the cache
    assert runner(np.zeros((1, 1, 8, 8), np.float32)).shape == (1, 1, 16, 16)


def test_a_cache_that_cannot_be_written_is_one_line(exported: Dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    checkpoint, _ = exported["x2-lr-pooled"]
    lonely = tmp_path / "lonely" / checkpoint.name
    lonely.parent.mkdir()
    shutil.copy(checkpoint, lonely)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    volume = tmp_path / "v.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).random((2, 12, 10)).astype(np.float32)), str(volume))
    code = sr_main([str(volume), str(tmp_path / "o.nrrd"), "--scale", "2", "--checkpoint", str(lonely), "--backend", "onnx",
                    "--adapt", "0", "--progress", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: cannot write the ONNX export cache") and "XDG_CACHE_HOME" in err[0]
    assert not (tmp_path / "o.nrrd").exists()
