"""The real-scan development protocol's runner, on a stand-in set made from the ICBM152 template.

The real set (``../shared/realdev``) is not needed: the runner only reads its layout, so a slice of
the template written in that layout exercises loading, the baselines, the FA-GAN variants with a
``--set`` field, the summary and the error path.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from fagan_engine.training import realscan_eval


@pytest.fixture()
def standin_realdev(icbm_crop: sitk.Image, tmp_path: Path) -> Path:
    """A development set of one 48×56 template slice in ``slices/index.json``'s layout."""
    array = sitk.GetArrayFromImage(icbm_crop)[3].astype(np.float32)
    slices = tmp_path / "slices"
    slices.mkdir()
    np.save(slices / "t1.npy", array / float(array.max()))
    index = {"cases": [{"name": "template_t1", "file": "t1.npy", "spacing_mm": [1.0, 1.0], "contrast": "T1"}]}
    (slices / "index.json").write_text(json.dumps(index))
    return tmp_path


def test_set_fields_reach_the_fagan_variants_only_and_the_summary_has_every_variant(standin_realdev: Path, tmp_path: Path) -> None:
    output = tmp_path / "scores.json"
    code = realscan_eval.main([
        "--realdev", str(standin_realdev), "--scales", "2", "--acquisitions", "bicubic",
        "--variants", "plain", "projected", "--set", "ensemble=2", "--json", str(output),
    ])
    assert code == 0
    results = json.loads(output.read_text())
    assert results["scales"]["2"]["base_options"]["ensemble"] == 2
    table = {row["variant"]: row for row in results["summary"]}
    assert set(table) == {"bicubic", "lanczos", "sitk_lanczos", "plain", "projected"}
    assert table["bicubic"]["gain_mean"] == 0.0 and table["bicubic"]["reference"] == "bicubic"
    # the network is well above bicubic on a template slice, and its projection reproduces the data
    assert table["plain"]["gain_mean"] > 1.0 and table["projected"]["gain_mean"] > 1.0


def test_a_missing_development_set_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert realscan_eval.main(["--realdev", str(tmp_path / "absent"), "--scales", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no real-scan development set")


def test_the_k_space_reference_is_simpleitks_windowed_sinc_on_the_products_grid() -> None:
    """realdev/README.md names SimpleITK's sitkLanczosWindowedSinc; the runner used the product's Lanczos-3, which scores
    0.25 dB lower at x2 on the real slices. SimpleITK's kernel is a Lanczos-windowed sinc of radius 5, centred as the product
    centres HR pixels (LR coordinate (i + 0.5)/s - 0.5)."""
    rng = np.random.default_rng(0)
    lr = rng.random((24, 20)).astype(np.float32)
    out = realscan_eval.protocol_lanczos(lr, 2)
    assert out.shape == (48, 40)

    def kernel(x: np.ndarray) -> np.ndarray:
        return np.where(np.abs(x) < 5, np.sinc(x) * np.sinc(x / 5), 0.0)

    i, j = 23, 19  # interior HR pixel: every tap inside the LR image
    y, x = (i + 0.5) / 2 - 0.5, (j + 0.5) / 2 - 0.5
    rows, cols = np.arange(24), np.arange(20)
    expected = kernel(y - rows) @ lr.astype(np.float64) @ kernel(x - cols)
    assert abs(out[i, j] - expected) < 1e-4
    assert realscan_eval.reference_method("kspace") == "sitk_lanczos" and realscan_eval.reference_method("bicubic") == "bicubic"


def test_set_values_may_be_plain_text_and_bad_pairs_are_one_line(standin_realdev: Path, capsys: pytest.CaptureFixture) -> None:
    """--set device=cpu (not JSON-quoted) and --checkpoint 2 (no '=') gave tracebacks."""
    for argv, fragment in ((["--checkpoint", "2"], "--checkpoint takes SCALE=PATH"), (["--set", "scale"], "--set takes FIELD=VALUE"),
                           (["--set", "device=cpu", "--set", "device=cuda"], "--set gives device twice"),
                           (["--set", "device=nowhere"], "device"),
                           (["--checkpoint", "x=a.safetensors"], "names no scale of --scales 2"),
                           (["--checkpoint", "2=missing.safetensors"], "missing.safetensors"),
                           (["--panels", str(standin_realdev / "p"), "--variants", "plain"], "--panel-variant default is not among"),
                           (["--json", str(standin_realdev / "absent" / "x.json")], "output folder does not exist")):
        assert realscan_eval.main(["--realdev", str(standin_realdev), "--scales", "2", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
