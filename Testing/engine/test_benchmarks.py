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
