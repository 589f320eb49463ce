"""The independent real-scan set's builder: the installed packages' real MRI, in the development set's layout."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fagan_engine.training import independent_set, realscan_eval


def test_the_set_is_built_in_the_development_layout_and_the_protocol_reads_it(tmp_path: Path) -> None:
    assert independent_set.main([str(tmp_path / "set")]) == 0
    index = json.loads((tmp_path / "set" / "slices" / "index.json").read_text())
    # pydicom and nibabel are engine dependencies, so at least their two sources are always built
    names = {case["name"] for case in index["cases"]}
    assert {"pydicom_abdomen_mpr", "nib_phantom_epi"} <= names
    loaded = realscan_eval.load_slices(tmp_path / "set")
    assert [case.name for case in loaded] == [case["name"] for case in index["cases"]]
    for case in loaded:
        assert case.image.dtype == np.float32 and case.image.min() >= 0.0 and case.image.max() == pytest.approx(1.0)
        # normalised by the 99.9th percentile, so at least 0.1 % of the pixels are at 1
        assert np.mean(case.image >= 1.0) >= 0.0009
    # a rebuild of its own folder is allowed and gives the same files
    before = (tmp_path / "set" / "slices" / "nib_phantom_epi.npy").read_bytes()
    assert independent_set.main([str(tmp_path / "set")]) == 0
    assert (tmp_path / "set" / "slices" / "nib_phantom_epi.npy").read_bytes() == before


def test_none_of_its_sources_is_in_the_development_set() -> None:
    development = {"dipy", "MR_small.dcm", "example4d", "anatomical.nii", "slicethickness_empty_string.dcm"}
    for source in independent_set.SOURCES:
        assert not any(word in source.path or word == source.package for word in development)


def test_a_folder_of_someone_elses_files_is_refused_and_left_alone(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    slices = tmp_path / "slices"
    slices.mkdir()
    (slices / "index.json").write_text('{"cases": []}')
    assert independent_set.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "did not write" in err[0]
    assert sorted(p.name for p in slices.iterdir()) == ["index.json"]


def test_a_blank_source_image_is_refused() -> None:
    with pytest.raises(independent_set.InputError):
        independent_set.normalise(np.zeros((4, 4)))
