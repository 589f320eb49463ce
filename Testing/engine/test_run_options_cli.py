"""``RunOptions.cli_arguments``: the flags ``fagan-sr`` parses back into the same RunOptions."""
from __future__ import annotations

import dataclasses

import pytest

from fagan_engine.cli.sr import build_parser, run_options
from fagan_engine.util.options import CLI_FLAGS, RunOptions

EXAMPLES = [
    RunOptions(),
    RunOptions(scale=4, method="lanczos", acquisition="gaussian", plane="coronal", device="cpu", backend="onnx",
               batch_size=2, tile_size=64, nan_policy="zero", output_dtype="int16", dicom_gaps="resample"),
    RunOptions(scale=8, checkpoint="/weights/x8.safetensors", untrained=True, adapt_iterations=5,
               enforce_consistency=True, uncertainty=True),
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
