"""The benchmark suite in smoke size: every figure is produced and sane; FLOPs match an analytic count."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.flops import analytic_generator_flops, generator_flops
from benchmarks.run import main
from fagan_engine.models.archs import build_generator, preset_config


@pytest.mark.parametrize(
    "preset, scale, overrides, size",
    [
        ("fagan", 4, {}, (16, 16)),
        ("fagan", 2, {}, (20, 12)),
        ("fagan", 8, {}, (9, 7)),
        ("fagan", 2, {"attention_placement": "hr", "attention_pool": False}, (10, 12)),
        ("fagan", 4, {"attention_placement": "hr"}, (6, 5)),
        ("srgan", 4, {}, (16, 16)),
        ("fagan-no-sa", 2, {}, (16, 16)),
        ("sa-srgan", 4, {}, (16, 16)),
    ],
)
def test_flop_counter_matches_the_analytic_count(preset: str, scale: int, overrides: dict, size: tuple) -> None:
    cfg = preset_config(preset, scale, **overrides)
    measured = generator_flops(build_generator(cfg).eval(), *size)
    assert abs(measured / analytic_generator_flops(cfg, *size) - 1) < 0.05


def test_smoke_run_produces_sane_figures(tmp_path: Path) -> None:
    assert main(["--smoke", "--output", str(tmp_path)]) == 0
    (json_path,) = tmp_path.glob("*-smoke.json")
    results = json.loads(json_path.read_text())
    markdown = json_path.with_suffix(".md").read_text()
    assert results["machine"]["cores"] >= 1 and results["machine"]["commit"]
    assert "--smoke" in results["command"] and "| ×4 | onnx |" in markdown
    for title in ("## Trust outputs", "## Batch mode", "## Through-plane, end to end"):  # they were in the JSON only
        assert title in markdown, title
    assert results["peak"]["fp32"]["peak_gflops"] > 0
    sections = ("inference", "attention", "training", "tiling")
    for section in sections:
        assert results[section], section
        for row in results[section]:
            assert "error" not in row, (section, row)
    for row in results["inference"]:
        assert row["volume_s"] > 0 and row["model_slice_s"] > 0 and row["peak_rss_mib"] > 0
        assert abs(row["flops_per_slice"] / row["analytic_flops_per_slice"] - 1) < 0.05
        if row["backend"] != "bicubic":
            assert 0 < row["fraction_of_peak"] and row["vs_bicubic"] > 0
    onnx_row = next(r for r in results["inference"] if r["backend"] == "onnx")
    torch_row = next(r for r in results["inference"] if r["backend"] == "torch")
    assert onnx_row["peak_rss_mib"] < torch_row["peak_rss_mib"]  # the ONNX worker never imports torch
    assert all(r["seconds"] > 0 and r["added_rss_mib"] >= 0 for r in results["attention"] if "skipped" not in r)
    for row in results["training"]:
        assert row["iterations_per_s"] > 0 and row["flops_per_step"] > 0 and 0 < row["mfu"]
    assert all(r["slice_s"] > 0 and r["peak_rss_mib"] > 0 for r in results["tiling"])


def test_the_cpu_variants_section_runs_at_tiny_sizes(tmp_path: Path) -> None:
    """The full suite's CPU variants (never reached by --smoke) failed every scale: the padded ONNX export had no sidecar."""
    import dataclasses

    from benchmarks.common import FULL
    from benchmarks.run import variants_section

    rows = variants_section(dataclasses.replace(FULL, scales=(4,), output=32, batch=2, repeats=1, threads=1), tmp_path)
    assert rows and all("error" not in row for row in rows), rows
    assert "ONNX Runtime, padded q/k (before)" in {row["name"] for row in rows}


def test_the_trust_ratios_are_against_the_networks_single_pass(tmp_path: Path) -> None:
    """Their denominator included per-scan adaptation and, at x4, the 8-member self-ensemble (about 40 times the pass)."""
    import dataclasses

    from benchmarks.common import SMOKE
    from benchmarks.trust_bench import trust_section

    (row,) = trust_section(dataclasses.replace(SMOKE, scales=(4,)), "cpu", tmp_path)
    assert row["adapted"] is False and row["ensemble_members"] == 1


def test_cuda_without_a_gpu_is_one_error_line_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is usable here")
    with pytest.raises(SystemExit) as exit_info:
        main(["--device", "cuda", "--output", str(tmp_path / "new")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: --device cuda: no CUDA GPU is usable here"]
    assert not (tmp_path / "new").exists()
