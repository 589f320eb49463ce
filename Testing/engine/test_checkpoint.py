"""Checkpoints: safetensors + JSON metadata, integrity checks, never unpickling."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from engine_helpers import save_untrained_checkpoint

from fagan_engine.models.checkpoint import (
    LOW_RATIO_LIMIT,
    LOW_RATIO_THROUGH_PLANE_WEIGHTS,
    THROUGH_PLANE_WEIGHTS,
    CheckpointMetadata,
    bundled_through_plane,
    load_generator,
    read_metadata,
    read_through_plane,
    save_checkpoint,
    store_half,
)
from fagan_engine.util.errors import CheckpointError


def test_round_trip_restores_architecture_and_weights(tmp_path: Path) -> None:
    path = save_untrained_checkpoint(tmp_path / "m.safetensors", 4)
    assert path.with_suffix(".json").is_file()
    model, metadata = load_generator(str(path), expected_scale=4)
    assert metadata.scale == 4 and metadata.model["n_feats"] == 16 and metadata.engine_version
    assert set(metadata.normalization) == {"low_percentile", "high_percentile"}
    again, _ = load_generator(str(path.with_suffix(".json")))
    x = torch.rand(1, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_wrong_scale_is_refused(tmp_path: Path) -> None:
    path = save_untrained_checkpoint(tmp_path / "m.safetensors", 2)
    with pytest.raises(CheckpointError, match="is for x2, but x4"):
        load_generator(str(path), expected_scale=4)


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    path = save_untrained_checkpoint(tmp_path / "m.safetensors", 2)
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="checksum"):
        load_generator(str(path))


def test_truncated_and_non_safetensors_files_are_refused(tmp_path: Path) -> None:
    path = save_untrained_checkpoint(tmp_path / "m.safetensors", 2)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated|checksum"):
        read_metadata(str(path))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 3)
    with pytest.raises(CheckpointError, match="not a safetensors"):
        read_metadata(str(junk))


class _Exploit:
    def __reduce__(self):  # unpickling this would create a file
        return (Path.touch, (Path(__file__).parent / "PWNED",))


def test_pickle_checkpoints_are_never_unpickled(tmp_path: Path) -> None:
    marker = Path(__file__).parent / "PWNED"
    for name in ("evil.pt", "evil.pth", "evil.safetensors"):
        path = tmp_path / name
        path.write_bytes(pickle.dumps(_Exploit()))
        with pytest.raises(CheckpointError):
            load_generator(str(path))
    assert not marker.exists()


def test_an_onnx_file_or_a_folder_as_checkpoint_gets_the_right_reason(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    with pytest.raises(CheckpointError, match="ONNX export, not a checkpoint: give its .safetensors file .fagan-sr can run the export"):
        load_generator(str(tmp_path / "model.onnx"))
    with pytest.raises(CheckpointError, match="is a folder"):
        load_generator(str(tmp_path))


def test_metadata_and_weights_disagreeing_is_refused(tmp_path: Path) -> None:
    from fagan_engine.models.archs import build_generator, preset_config
    from fagan_engine.util.config import NormalizationConfig

    small = build_generator(preset_config("fagan", 2, n_feats=16, n_blocks=1))
    wrong = CheckpointMetadata.create(preset_config("fagan", 2, n_feats=16, n_blocks=2), NormalizationConfig())
    path = save_checkpoint(str(tmp_path / "m.safetensors"), small.state_dict(), wrong)
    with pytest.raises(CheckpointError, match="metadata and weights disagree"):
        load_generator(str(path))


def test_edited_sidecar_or_header_is_refused(tmp_path: Path) -> None:
    path = save_untrained_checkpoint(tmp_path / "m.safetensors", 2)
    sidecar = path.with_suffix(".json")
    data = json.loads(sidecar.read_text())
    data["scale"] = 4
    sidecar.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="disagree"):
        read_metadata(str(path))
    sidecar.unlink()
    blob = path.read_bytes()
    (length,) = struct.unpack("<Q", blob[:8])
    header = blob[8 : 8 + length]
    assert header.count(b'\\"scale\\": 2') == 2  # model.scale, then the top-level scale
    path.write_bytes(blob[:8] + header.replace(b'\\"scale\\": 2', b'\\"scale\\": 4', 1) + blob[8 + length :])
    with pytest.raises(CheckpointError, match="scale"):
        read_metadata(str(path))
    path.write_bytes(blob[:8] + header.replace(b'\\"scale\\": 2', b'\\"scale\\": 4') + blob[8 + length :])
    with pytest.raises(CheckpointError, match="checksum mismatch"):  # the metadata is hashed too
        load_generator(str(path))


def test_read_metadata_needs_no_torch(tmp_path: Path) -> None:
    path = save_untrained_checkpoint(tmp_path / "m.safetensors", 2)
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['numpy'] = None\n"
        "from fagan_engine.models.checkpoint import read_metadata, read_through_plane\n"
        f"print(read_metadata({str(path)!r}).scale, read_through_plane().identity()['format'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "2 fagan-through-plane/1"


# --- issue #12: the checksum covers names, shapes, dtypes, bytes and metadata; crafted files ---------


def edit_header(path: Path, change) -> None:
    """Rewrite a safetensors header in place (data section kept), as an attacker would."""
    blob = path.read_bytes()
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + length])
    change(header)
    text = json.dumps(header).encode("utf-8")
    path.write_bytes(struct.pack("<Q", len(text)) + text + blob[8 + length :])


def same_shape_pair(header: dict) -> "tuple[str, str]":
    names = [k for k in header if k != "__metadata__"]
    for first in names:
        for second in names:
            if first < second and header[first]["shape"] == header[second]["shape"] and header[first]["shape"]:
                return first, second
    raise AssertionError("no two tensors of one shape")


def swap_offsets(header: dict) -> None:
    a, b = same_shape_pair(header)
    header[a]["data_offsets"], header[b]["data_offsets"] = header[b]["data_offsets"], header[a]["data_offsets"]


def alias_offsets(header: dict) -> None:
    a, b = same_shape_pair(header)
    header[a]["data_offsets"] = header[b]["data_offsets"]


def edit_normalization(header: dict) -> None:
    metadata = json.loads(header["__metadata__"]["fagan"])
    metadata["normalization"]["high_percentile"] = 90.0
    header["__metadata__"]["fagan"] = json.dumps(metadata)


@pytest.mark.parametrize("tamper", [swap_offsets, alias_offsets, edit_normalization])
def test_header_tampering_is_caught_by_the_checksum(tmp_path: Path, tamper) -> None:
    path = save_untrained_checkpoint(tmp_path / "m.safetensors", 2)
    edit_header(path, tamper)
    if tamper is edit_normalization:  # the attacker edits the sidecar to match
        sidecar = json.loads(path.with_suffix(".json").read_text())
        sidecar["normalization"]["high_percentile"] = 90.0
        path.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match="checksum mismatch") as excinfo:
        load_generator(str(path))
    assert "\n" not in str(excinfo.value)


@pytest.mark.parametrize("metadata", ['"a string"', '["a", "list"]', "42"])
def test_metadata_that_is_not_a_map_is_refused_in_one_line(tmp_path: Path, metadata: str) -> None:
    path = save_untrained_checkpoint(tmp_path / "m.safetensors", 2)
    edit_header(path, lambda h: h.update(__metadata__=json.loads(metadata)))
    with pytest.raises(CheckpointError, match="not a safetensors file or is damaged: __metadata__"):
        read_metadata(str(path))


def test_sidecar_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = save_untrained_checkpoint(tmp_path / "m.safetensors", 2)
    path.with_suffix(".json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(CheckpointError, match="not UTF-8"):
        read_metadata(str(path))


def resealed(path: Path, **changes) -> Path:
    """Re-save ``path``'s tensors with edited metadata and a valid checksum (a careful attacker)."""
    from safetensors.torch import load_file

    metadata = read_metadata(str(path))
    for key, value in changes.items():
        if isinstance(value, dict):
            getattr(metadata, key).update(value)
        else:
            setattr(metadata, key, value)
    return save_checkpoint(str(path), load_file(str(path)), metadata)


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"model": {"n_feats": 65536}}, "n_feats must be in"),
        ({"model": {"n_blocks": 200000}}, "n_blocks must be in"),
        ({"model": {"n_feats": 64}}, "metadata and weights disagree"),
        ({"plane": "diagonal"}, "plane must be one of"),
        ({"training": ["not", "a", "dict"]}, "training must be a mapping"),
        ({"scale": "2"}, "scale must be one of"),
    ],
)
def test_crafted_metadata_is_refused_before_building_a_model(tmp_path: Path, changes, fragment) -> None:
    path = resealed(save_untrained_checkpoint(tmp_path / "m.safetensors", 2), **changes)
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match=fragment) as excinfo:
        load_generator(str(path))
    assert time.perf_counter() - started < 5 and "\n" not in str(excinfo.value)


def test_legacy_format_1_loads_only_on_opt_in_and_not_with_shared_bytes(tmp_path: Path, monkeypatch) -> None:
    from safetensors.torch import load_file, save

    path = save_untrained_checkpoint(tmp_path / "m.safetensors", 2)
    tensors = load_file(str(path))
    placeholder = save(tensors, metadata={"fagan": "{}"})
    (length,) = struct.unpack("<Q", placeholder[:8])
    legacy = dataclasses.replace(
        read_metadata(str(path)), format="fagan-checkpoint/1", content_sha256="",
        weights_sha256=hashlib.sha256(placeholder[8 + length :]).hexdigest(),
    )
    path.write_bytes(save(tensors, metadata={"fagan": legacy.to_json()}))
    path.with_suffix(".json").unlink()
    with pytest.raises(CheckpointError, match="FAGAN_ALLOW_FORMAT_1=1") as excinfo:
        load_generator(str(path))
    assert "\n" not in str(excinfo.value)
    monkeypatch.setenv("FAGAN_ALLOW_FORMAT_1", "1")
    load_generator(str(path))
    edit_header(path, alias_offsets)
    with pytest.raises(CheckpointError, match="checksum mismatch|damaged"):
        load_generator(str(path))


@pytest.mark.parametrize("command", ["sr", "export", "eval"])
def test_every_command_refuses_a_tampered_checkpoint_in_one_line(tmp_path: Path, command: str) -> None:
    path = save_untrained_checkpoint(tmp_path / "m.safetensors", 2)
    edit_header(path, swap_offsets)
    volume = tmp_path / "v.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).random((4, 24, 24)).astype(np.float32)), str(volume))
    argv = {
        "sr": [str(volume), str(tmp_path / "o.nrrd"), "--scale", "2", "--checkpoint", str(path), "--progress", "none"],
        "export": [str(path), str(tmp_path / "o.onnx")],
        "eval": ["--checkpoint", str(path), "--data", str(volume), "--output", str(tmp_path / "eval")],
    }[command]
    proc = subprocess.run([sys.executable, "-m", "fagan_engine", command, *argv], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: ") and "checksum mismatch" in proc.stderr
    assert not (tmp_path / "o.nrrd").exists() and not (tmp_path / "o.onnx").exists()


def test_file_digest_is_of_the_verified_bytes_not_a_second_read(tmp_path: Path) -> None:
    """A report's checkpoint SHA-256 is what was verified at load: a later change on disk does not alter it."""
    path = save_untrained_checkpoint(tmp_path / "m.safetensors", 2)
    loaded = hashlib.sha256(path.read_bytes()).hexdigest()
    _, metadata = load_generator(str(path))
    save_untrained_checkpoint(path, 2)  # other (random) weights under the same name
    assert hashlib.sha256(path.read_bytes()).hexdigest() != loaded
    assert metadata.file_sha256 == loaded
    assert read_metadata(str(path)).file_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_file_digest_is_never_stored(tmp_path: Path) -> None:
    path = save_untrained_checkpoint(tmp_path / "m.safetensors", 2)
    metadata = read_metadata(str(path))
    assert "file_sha256" not in json.loads(metadata.to_json())
    assert "file_sha256" not in json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    assert dataclasses.replace(metadata, file_sha256="") == metadata  # a sidecar still equals its checkpoint
    sidecar = json.loads(metadata.to_json())
    sidecar["file_sha256"] = "0" * 64
    path.with_suffix(".json").write_text(json.dumps(sidecar), encoding="utf-8")
    with pytest.raises(CheckpointError, match="unreadable FA-GAN metadata"):
        read_metadata(str(path))


def test_each_slice_ratio_gets_the_bundled_start_pretrained_for_it() -> None:
    assert [bundled_through_plane(r) for r in (1.5, 2.0, LOW_RATIO_LIMIT)] == [LOW_RATIO_THROUGH_PLANE_WEIGHTS] * 3
    assert [bundled_through_plane(r) for r in (None, 3.01, 4.0, 8.0)] == [THROUGH_PLANE_WEIGHTS] * 4
    assert read_through_plane(ratio=2.0).path == LOW_RATIO_THROUGH_PLANE_WEIGHTS
    low = read_through_plane(LOW_RATIO_THROUGH_PLANE_WEIGHTS).metadata["training"]["config"]["ratio"]
    general = read_through_plane(THROUGH_PLANE_WEIGHTS).metadata["training"]["config"]["ratio"]
    assert low[1] == LOW_RATIO_LIMIT and general[0] <= LOW_RATIO_LIMIT < general[1]  # the limit is where the pretraining says


def test_through_plane_identity_is_read_and_verified_by_the_engine(tmp_path: Path) -> None:
    weights = read_through_plane()
    assert weights.path == THROUGH_PLANE_WEIGHTS
    identity = weights.identity()
    assert identity["name"] == THROUGH_PLANE_WEIGHTS.name and identity["format"] == "fagan-through-plane/1"
    assert identity["sha256"] == hashlib.sha256(THROUGH_PLANE_WEIGHTS.read_bytes()).hexdigest()
    copy = tmp_path / THROUGH_PLANE_WEIGHTS.name
    blob = bytearray(THROUGH_PLANE_WEIGHTS.read_bytes())
    blob[-5] ^= 0x01
    copy.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="corrupt or was modified"):
        read_through_plane(copy)
    with pytest.raises(CheckpointError, match="an in-plane FA-GAN checkpoint, not through-plane weights"):
        read_through_plane(save_untrained_checkpoint(tmp_path / "m.safetensors", 2))


def test_half_precision_storage_halves_the_file_loads_as_float32_and_keeps_its_checks(tmp_path: Path, capsys) -> None:
    """``fagan-export`` to a ``.safetensors`` output (how the bundled in-plane checkpoints ship): half the bytes, the same metadata, float32 weights
    on load equal to the rounded originals, a smooth image's output within float16 rounding; still tamper-proof."""
    from fagan_engine.__main__ import main

    source = save_untrained_checkpoint(tmp_path / "full.safetensors", 2)
    target = tmp_path / "half.safetensors"
    assert main(["export", str(source), str(target)]) == 0
    assert target.stat().st_size < 0.55 * source.stat().st_size
    full, full_meta = load_generator(str(source))
    half, half_meta = load_generator(str(target))
    assert dataclasses.replace(half_meta, weights_sha256="", content_sha256="", file_sha256="") == dataclasses.replace(
        full_meta, weights_sha256="", content_sha256="", file_sha256=""
    )
    for (name, value), rounded in zip(full.state_dict().items(), half.state_dict().values()):
        assert rounded.dtype == torch.float32 and torch.equal(rounded, value.half().float()), name
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    image = (0.5 + 0.3 * torch.sin(6 * xx) * torch.cos(4 * yy))[None, None]
    with torch.no_grad():
        assert float((full(image) - half(image)).abs().max()) < 5e-3
    assert main(["export", str(source), str(target)]) == 2 and "exists" in capsys.readouterr().err
    before = source.read_bytes()  # named by its sidecar, the checkpoint replaced itself with float16 weights under --force
    assert main(["export", str(source.with_suffix(".json")), str(source), "--force"]) == 2
    assert "output must differ from the checkpoint" in capsys.readouterr().err and source.read_bytes() == before
    assert store_half(str(source), str(tmp_path / "again.safetensors")).read_bytes() == target.read_bytes()  # deterministic
    edit_header(target, swap_offsets)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_generator(str(target))
