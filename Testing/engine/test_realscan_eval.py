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
    assert set(table) == {"bicubic", "lanczos", "plain", "projected"}
    assert table["bicubic"]["gain_mean"] == 0.0 and table["bicubic"]["reference"] == "bicubic"
    # the network is well above bicubic on a template slice, and its projection reproduces the data
    assert table["plain"]["gain_mean"] > 1.0 and table["projected"]["gain_mean"] > 1.0


def test_a_missing_development_set_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert realscan_eval.main(["--realdev", str(tmp_path / "absent"), "--scales", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no real-scan development set")
