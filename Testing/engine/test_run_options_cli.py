"""``RunOptions.cli_arguments``: the flags ``fagan-sr`` parses back into the same RunOptions."""
from __future__ import annotations

import dataclasses

import pytest

from fagan_engine.cli.sr import build_parser, run_options
from fagan_engine.util.options import CLI_FLAGS, RunOptions

EXAMPLES = [
    RunOptions(),
    RunOptions(scale=4, method="lanczos", acquisition="gaussian", plane="coronal", device="cpu",
               batch_size=2, nan_policy="zero", output_dtype="int16", dicom_gaps="resample"),
    RunOptions(scale=4, backend="onnx", tile_size=64, checkpoint="/weights/x4.onnx", adapt_iterations=0),
    RunOptions(scale=8, checkpoint="/weights/x8.safetensors", adapt_iterations=5, enforce_consistency=True, uncertainty=True),
    RunOptions(scale=4, untrained=True, ensemble=2),
    RunOptions(mode="through-plane", target_spacing=1.0, slice_thickness=4.5, fit_iterations=50),
    RunOptions(mode="through-plane", ensemble=4, batch_size=2, fit_iterations=0, enforce_consistency=True, device="cuda"),
]


@pytest.mark.parametrize("options", EXAMPLES, ids=lambda o: " ".join(o.cli_arguments()) or "defaults")
def test_cli_arguments_round_trip_through_the_fagan_sr_parser(options: RunOptions) -> None:
    args = build_parser().parse_args(["in.nrrd", "out.nrrd"] + options.validate().cli_arguments())
    assert run_options(args) == options


def test_uncertainty_map_path_and_short_defaults() -> None:
    assert RunOptions(uncertainty=True).cli_arguments("u.nrrd") == ["--scale", "2", "--uncertainty-map", "u.nrrd"]
    assert RunOptions(mode="through-plane").cli_arguments() == ["--through-plane"]


def test_through_plane_refuses_the_in_plane_fields_it_cannot_use() -> None:
    from fagan_engine.util.errors import InputError
    from fagan_engine.util.options import THROUGH_PLANE_UNUSED

    for field, value in (("scale", 4), ("checkpoint", "c.safetensors"), ("acquisition", "bicubic"), ("plane", "axial"),
                         ("backend", "onnx"), ("tile_size", 64), ("untrained", True)):
        assert field in THROUGH_PLANE_UNUSED
        with pytest.raises(InputError, match="does not use"):
            RunOptions(mode="through-plane", **{field: value}).validate()
    RunOptions(mode="through-plane", backend="torch", batch_size=2, ensemble=4).validate()  # these it uses
    for field in ("target_spacing", "slice_thickness", "fit_iterations"):  # and in-plane runs refuse the through-plane ones
        with pytest.raises(InputError, match="add --through-plane"):
            RunOptions(**{field: 2}).validate()


def test_every_field_has_a_flag() -> None:
    assert set(CLI_FLAGS) | {"mode", "uncertainty"} == {f.name for f in dataclasses.fields(RunOptions)}


@pytest.mark.parametrize("flags", [["--tile-size", "-5"], ["--method", "bicubic", "--tile-size", "64"],
                                   ["--method", "lanczos", "--backend", "onnx"], ["--method", "bicubic", "--untrained"],
                                   ["--method", "bicubic", "--ensemble", "1"], ["--reference", "2"], ["--method", "lanczos", "--uncertainty-map"],
                                   ["--untrained", "--checkpoint", "x2.safetensors"]])
def test_options_that_would_not_take_effect_are_refused_in_one_line(flags, tmp_path, capsys) -> None:
    """An interpolation method runs no network (no tiles, backend, random weights or self-ensemble); --reference is for
    --stacks; random weights replace a checkpoint, so --untrained cannot run with --checkpoint."""
    import numpy as np
    import SimpleITK as sitk

    from fagan_engine.cli.sr import main

    source = tmp_path / "v.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).random((3, 12, 12)).astype(np.float32)), str(source))
    assert main([str(source), str(tmp_path / "o.nrrd"), "--scale", "2", "--progress", "none", *flags]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and not (tmp_path / "o.nrrd").exists(), err


def test_random_weights_run_and_say_so_on_the_result(tmp_path, capsys) -> None:
    """--untrained replaces the bundled checkpoint (it used to read as if a checkpoint were missing, and said nothing)."""
    import json

    import numpy as np
    import SimpleITK as sitk

    from fagan_engine.cli.sr import main
    from fagan_engine.inference.resolver import UNTRAINED_WARNING

    source = tmp_path / "v.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).random((3, 12, 12)).astype(np.float32)), str(source))
    args = [str(source), str(tmp_path / "o.nrrd"), "--scale", "2", "--untrained", "--adapt", "0", "--progress", "none"]
    assert main([*args, "--report", str(tmp_path / "r.json")]) == 0
    assert capsys.readouterr().err.splitlines().count(f"warning: {UNTRAINED_WARNING}") == 1
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["identity"]["checkpoint"] is None and UNTRAINED_WARNING in report["warnings"]


@pytest.mark.parametrize("bad", [dict(enforce_consistency="no"), dict(untrained="False"), dict(scale=2.0), dict(batch_size="8"),
                                 dict(adapt_iterations=True), dict(target_spacing="1"), dict(ensemble=2.0), dict(tile_size=True),
                                 dict(target_spacing=float("nan"), mode="through-plane"), dict(plane=5)])
def test_values_of_the_wrong_type_are_refused_by_name(bad) -> None:
    """Python callers got a string read as True (enforce_consistency="no" projected), or a TypeError deep inside."""
    from fagan_engine.util.errors import InputError

    name = next(key for key in bad if key != "mode")
    with pytest.raises(InputError, match=f"option {name} must be"):
        RunOptions(**bad).validate()


def test_numpy_numbers_become_python_numbers_and_unknown_names_are_refused_everywhere() -> None:
    import json

    import numpy as np

    from fagan_engine.util.errors import InputError

    options = RunOptions(scale=np.int64(4), batch_size=np.int32(2)).validate()
    assert type(options.scale) is int and json.loads(json.dumps(options.to_dict()))["scale"] == 4
    thick = RunOptions(mode="through-plane", target_spacing=np.float32(2.0), slice_thickness=np.float64(3.5),
                       uncertainty=np.bool_(False)).validate()
    assert (type(thick.target_spacing), type(thick.slice_thickness), type(thick.uncertainty)) == (float, float, bool)
    assert thick.cli_arguments()[1:] == ["--target-spacing", "2.0", "--slice-thickness", "3.5"]  # flags the engine reads back
    assert json.loads(json.dumps(thick.to_dict()))["target_spacing"] == 2.0
    with pytest.raises(InputError, match="unknown option 'scales'"):
        RunOptions().replace(scales=2)
    with pytest.raises(InputError, match="must be a mapping"):
        RunOptions.from_dict(None)


def test_input_and_output_may_follow_the_options(tmp_path, capsys) -> None:
    """fagan-sr IN --scale 2 --method bicubic OUT said "unrecognized arguments: OUT"."""
    import numpy as np
    import SimpleITK as sitk

    from fagan_engine.cli.sr import main

    source = tmp_path / "v.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).random((3, 12, 12)).astype(np.float32)), str(source))
    assert main([str(source), "--scale", "2", "--method", "bicubic", "--progress", "none", str(tmp_path / "o.nrrd")]) == 0
    assert (tmp_path / "o.nrrd").is_file()


@pytest.mark.parametrize("fields, message", [
    ({"backend": "onnx", "device": "cuda"}, "ONNX backend runs on the CPU"),
    ({"method": "bicubic", "device": "cuda"}, "bicubic runs on the CPU"),
    ({"method": "lanczos", "device": "cuda"}, "lanczos runs on the CPU"),
])
def test_a_device_the_run_would_not_use_is_refused(fields, message) -> None:
    """--backend onnx --device cuda ran on the CPU with exit 0 (and failed only with --progress json)."""
    from fagan_engine.util.errors import InputError

    with pytest.raises(InputError, match=message):
        RunOptions(**fields).validate()
    RunOptions(method="bicubic", device="cpu").validate()  # the CPU, named or by default, stays accepted
    RunOptions(mode="through-plane", device="cuda").validate()


def test_a_missing_optional_package_is_one_line_naming_how_to_install_it(capsys) -> None:
    """Without PyTorch, --backend torch, --through-plane, fagan-export... ended in a ModuleNotFoundError traceback."""
    from fagan_engine.cli import run_cli

    def needs(name: str):
        def body() -> int:
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return body

    assert run_cli(needs("torch"), False) == 2
    assert capsys.readouterr().err == ("error: this needs PyTorch, which is not installed: pip install torch (in Slicer, the "
                                       "PyTorch extension provides it)\n")
    assert run_cli(needs("onnxscript"), False) == 2
    assert "pip install 'fagan-engine[onnx]'" in capsys.readouterr().err


def test_without_pytorch_a_cuda_device_is_refused_and_onnx_runs_report_the_cpu(monkeypatch) -> None:
    """auto fell back to ONNX Runtime on the CPU and ignored --device cuda; the start event named torch's device."""
    from fagan_engine.inference import runners
    from fagan_engine.util.errors import InputError

    monkeypatch.setattr(runners, "torch_available", lambda: False)
    with pytest.raises(InputError, match="ONNX Runtime runs on the CPU"):
        runners.load_runner(2, "x.safetensors", "cuda", "auto", False)
    monkeypatch.undo()
    assert runners.compute_description(RunOptions(backend="onnx"))["device"] == "cpu"
