"""DICOM series output: geometry read back by SimpleITK and pydicom, new UIDs, copied patient/study
tags, values within 0.1 % of the range, atomic per series, input never modified (issue #13 item 3)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from dicom_test_series import FRAME_UID, PATIENT_STUDY, SOURCE_SERIES_UID, folder_digest, oblique_image, read_series, write_mr_series
from engine_helpers import save_untrained_checkpoint

from fagan_engine.cli.sr import main
from fagan_engine.io.dicom_writer import quantize, write_dicom_series
from fagan_engine.io.geometry import physical_corners
from fagan_engine.util.errors import OutputError

pydicom = pytest.importorskip("pydicom")


def corners(image: sitk.Image) -> np.ndarray:
    """The physical corners as a sorted set (a reversed slice axis lists them in another order)."""
    return np.array(sorted(map(tuple, np.round(physical_corners(image), 6))))


def datasets(folder: Path) -> list:
    return [pydicom.dcmread(str(p)) for p in sorted(folder.iterdir())]


def test_quantize_keeps_integers_exactly_and_floats_within_the_tolerance() -> None:
    integers = np.array([-1000.0, 0.0, 2999.0])
    stored, slope, intercept = quantize(integers)
    assert (slope, intercept) == (1.0, 0.0) and np.array_equal(stored, integers)
    values = np.random.default_rng(0).normal(1e5, 3e4, 10000)
    stored, slope, intercept = quantize(values)
    error = np.abs(stored * slope + intercept - values).max()
    assert error <= 1e-3 * np.ptp(values) and error <= slope  # in fact range / 65000
    flat = quantize(np.full(5, 3.25))
    assert np.allclose(flat[0] * flat[1] + flat[2], 3.25)


@pytest.mark.parametrize("left_handed", [False, True])
def test_oblique_series_reads_back_with_the_same_geometry_and_values(tmp_path: Path, left_handed: bool) -> None:
    image = oblique_image(integers=False)
    if left_handed:
        direction = np.asarray(image.GetDirection()).reshape(3, 3)
        direction[:, 2] *= -1
        image.SetDirection(direction.ravel().tolist())
    out = write_dicom_series(image, str(tmp_path / "new" / "series"), description="x FA-GAN SR x2", derivation="test")
    back = read_series(out)
    assert back.GetSize() == image.GetSize()
    assert np.abs(corners(back) - corners(image)).max() < 1e-4
    values = sitk.GetArrayFromImage(image)
    read = sitk.GetArrayFromImage(back)[::-1] if left_handed else sitk.GetArrayFromImage(back)
    assert np.abs(read - values).max() <= 1e-3 * np.ptp(values)
    files = datasets(out)
    assert len({ds.SOPInstanceUID for ds in files}) == len(files) and len({ds.SeriesInstanceUID for ds in files}) == 1
    first = files[0]
    assert list(first.ImageType) == ["DERIVED", "SECONDARY"] and first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
    assert "PatientPosition" in first and first.PatientPosition == ""  # type 2C for MR: present, empty when unknown
    assert float(first.SliceThickness) == pytest.approx(0.0 + image.GetSpacing()[2]) == float(first.SpacingBetweenSlices)
    assert [float(v) for v in first.PixelSpacing] == pytest.approx([image.GetSpacing()[1], image.GetSpacing()[0]])
    pixels = first.pixel_array.astype(float) * float(first.RescaleSlope) + float(first.RescaleIntercept)
    assert pixels.shape == (image.GetSize()[1], image.GetSize()[0])
    assert not [p.name for p in (tmp_path / "new").iterdir() if p.name != "series"], "staging left behind"


def test_existing_series_is_kept_unless_force_and_sheared_volumes_are_refused(tmp_path: Path) -> None:
    out = write_dicom_series(oblique_image(seed=1), str(tmp_path / "s"))
    before = folder_digest(out)
    with pytest.raises(OutputError, match="already exists"):
        write_dicom_series(oblique_image(seed=2), str(out))
    assert folder_digest(out) == before
    write_dicom_series(oblique_image(seed=2), str(out), force=True)
    assert folder_digest(out) != before and len(list(out.iterdir())) == 4
    sheared = oblique_image()
    sheared.SetDirection((1, 0, 0, 0.3, 1, 0, 0, 0, 1))
    with pytest.raises(OutputError, match="sheared"):
        write_dicom_series(sheared, str(tmp_path / "sheared"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_cli_dicom_in_dicom_out_copies_patient_and_study(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = oblique_image(size=(12, 10, 4))
    series = write_mr_series(source, tmp_path / "in" / "t1")
    before = folder_digest(series)
    checkpoint = save_untrained_checkpoint(tmp_path / "tiny.safetensors", 2)
    out = tmp_path / "out" / "t1_sr"
    out.parent.mkdir()  # the output's folder must exist, as for a file output (docs/reliability.md)
    code = main([str(series), str(out), "--scale", "2", "--checkpoint", str(checkpoint), "--output-format", "dicom", "--progress", "none"])
    assert code == 0, capsys.readouterr().err
    assert folder_digest(series) == before, "the input series was modified"
    back = read_series(out)
    assert back.GetSize() == (24, 20, 4)
    assert np.abs(corners(back) - corners(read_series(series))).max() < 1e-4
    files = datasets(out)
    sources = datasets(series)
    new_uids = {ds.SOPInstanceUID for ds in files}
    assert len(new_uids) == 4 and not new_uids & {ds.SOPInstanceUID for ds in sources}
    first = files[0]
    assert first.SeriesInstanceUID != SOURCE_SERIES_UID and first.FrameOfReferenceUID == FRAME_UID
    for keyword, value in PATIENT_STUDY.items():
        assert str(first.data_element(keyword).value) == value, keyword
    assert first.SeriesDescription == "T1 axial FA-GAN SR x2"
    assert "tiny.safetensors" in first.DerivationDescription and "fagan_engine" in first.DerivationDescription
    assert first.ScanningSequence == "GR" and float(first.EchoTime) == pytest.approx(3.7)
    # the float result of the same run, written as NRRD, agrees within 0.1 % of its range
    nrrd = tmp_path / "out" / "t1_sr.nrrd"
    assert main([str(series), str(nrrd), "--scale", "2", "--checkpoint", str(checkpoint), "--progress", "none"]) == 0
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(nrrd)))
    assert np.abs(sitk.GetArrayFromImage(back) - expected).max() <= 1e-3 * np.ptp(expected)


def test_cli_dicom_output_of_a_file_input_gets_new_study(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    volume = tmp_path / "v.nrrd"
    sitk.WriteImage(oblique_image(seed=3, integers=False), str(volume))
    out = tmp_path / "v_dicom"
    assert main([str(volume), str(out), "--scale", "2", "--method", "bicubic", "--output-format", "dicom", "--progress", "none"]) == 0
    first = datasets(out)[0]
    assert first.StudyInstanceUID and first.StudyInstanceUID != PATIENT_STUDY["StudyInstanceUID"]
    assert first.SeriesDescription == "bicubic SR x2" and first.PatientName == ""
    code = main([str(volume), str(tmp_path / "v.nii.gz"), "--scale", "2", "--method", "bicubic", "--output-format", "dicom"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and "series folder" in err[0]


def test_cli_output_folder_without_format_flag_is_dicom_in_the_input_study(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """An OUTPUT without extension is a DICOM series folder with or without ``--output-format dicom``: both keep the
    patient and study (the folder form used to write a series detached from them); an unknown extension is refused."""
    series = write_mr_series(oblique_image(size=(12, 10, 4)), tmp_path / "in" / "t1")
    checkpoint = save_untrained_checkpoint(tmp_path / "tiny.safetensors", 2)
    out = tmp_path / "t1_sr"
    assert main([str(series), str(out), "--scale", "2", "--checkpoint", str(checkpoint), "--progress", "none"]) == 0
    first = datasets(out)[0]
    for keyword, value in PATIENT_STUDY.items():
        assert str(first.data_element(keyword).value) == value, keyword
    capsys.readouterr()
    for name in ("t1_sr.txt", "t1_sr.nii.gzz"):
        code = main([str(series), str(tmp_path / name), "--scale", "2", "--checkpoint", str(checkpoint), "--progress", "none"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and "not a volume format" in err[0]
        assert not (tmp_path / name).exists()
    for name in (".", ".."):  # a folder that exists and holds more than this run's series: named, not guessed at
        code = main([str(series), name, "--scale", "2", "--checkpoint", str(checkpoint), "--progress", "none"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "names no file or folder of its own" in err[0]
    dotted = tmp_path / "t1.v2"
    assert main([str(series), str(dotted) + "/", "--scale", "2", "--checkpoint", str(checkpoint), "--progress", "none"]) == 0
    assert str(datasets(dotted)[0].PatientID) == PATIENT_STUDY["PatientID"]


def test_force_replaces_an_earlier_dicom_output_but_never_a_folder_of_other_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """An OUTPUT without extension is a DICOM folder; ``--force`` used to delete whatever folder had that name."""
    volume = tmp_path / "v.nrrd"
    sitk.WriteImage(oblique_image(seed=3, integers=False), str(volume))
    docs = tmp_path / "mydocs"
    (docs / "sub").mkdir(parents=True)
    (docs / "thesis.txt").write_text("important")
    (docs / "sub" / "notes.md").write_text("x")
    code = main([str(volume), str(docs), "--scale", "2", "--method", "bicubic", "--force", "--progress", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "holds more than a DICOM series (sub, thesis.txt)" in err[0]
    assert (docs / "thesis.txt").read_text() == "important" and (docs / "sub" / "notes.md").read_text() == "x"
    series = tmp_path / "series"
    for force in ([], ["--force"]):  # a second run replaces the first run's series
        assert main([str(volume), str(series), "--scale", "2", "--method", "bicubic", "--progress", "none", *force]) == 0
    assert sorted(p.suffix for p in series.iterdir()) == [".dcm"] * len(list(series.iterdir()))
    # a scanner's (or a PACS export's) series is all .dcm too, and --force replaced it with an unrelated result
    scanner = write_mr_series(oblique_image(size=(12, 10, 4)), tmp_path / "patient_T1")
    before = {p.name: p.read_bytes() for p in scanner.iterdir()}
    code = main([str(volume), str(scanner), "--scale", "2", "--method", "bicubic", "--force", "--progress", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "holds a DICOM series this engine did not write" in err[0]
    assert {p.name: p.read_bytes() for p in scanner.iterdir()} == before


def test_multi_valued_source_description_is_one_readable_value(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``T1\\post`` (two values) used to become ``['T1', 'post'] bicubic SR x2``."""
    series = write_mr_series(oblique_image(size=(12, 10, 4)), tmp_path / "in" / "t1", description=["T1", "post"])
    assert list(datasets(series)[0].SeriesDescription) == ["T1", "post"]
    out = tmp_path / "t1_sr"
    assert main([str(series), str(out), "--scale", "2", "--method", "bicubic", "--progress", "none"]) == 0, capsys.readouterr().err
    written = datasets(out)[0].data_element("SeriesDescription")
    assert written.VM == 1 and written.value == "T1 post bicubic SR x2"


def test_a_dicom_output_whose_folder_cannot_hold_it_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A parent that is a file gave a FileExistsError traceback (NotADirectoryError one level down); a missing parent was
    created silently, although a file output there is refused."""
    volume = tmp_path / "v.nrrd"
    sitk.WriteImage(oblique_image(seed=3, integers=False), str(volume))
    (tmp_path / "afile").write_text("x")
    for output, fragment in ((tmp_path / "afile" / "sr", "output folder does not exist"),
                             (tmp_path / "afile" / "x" / "sr", "output folder does not exist"),
                             (tmp_path / "new" / "deep" / "sr", "output folder does not exist")):
        code = main([str(volume), str(output), "--scale", "2", "--method", "bicubic", "--progress", "none"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
    assert not (tmp_path / "new").exists() and (tmp_path / "afile").read_text() == "x"
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"input,output\n{volume.name},afile/sr2/\n")
    assert main(["--manifest", str(manifest), "--scale", "2", "--method", "bicubic", "--progress", "none"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err and "afile" in err


def test_a_full_disk_while_writing_instances_names_the_series_not_its_staged_file(tmp_path: Path, monkeypatch, capsys) -> None:
    """The message named the hidden staging file (…/.v1.tmp-26547-…/v1/IM00012.dcm)."""
    import errno

    import fagan_engine.io.dicom_writer as dicom_writer

    def full(pydicom, ds, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dicom_writer, "_save", full)
    volume = tmp_path / "v.nrrd"
    sitk.WriteImage(oblique_image(seed=3, integers=False), str(volume))
    out = tmp_path / "series"  # the CLI streams it
    code = main([str(volume), str(out), "--scale", "2", "--method", "bicubic", "--progress", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"error: no space left on device while writing {out}"], err
    with pytest.raises(dicom_writer.OutputError, match=f"no space left on device while writing {tmp_path / 'direct'}$"):
        dicom_writer.write_dicom_series(oblique_image(seed=3, integers=False), str(tmp_path / "direct"))


def test_force_checks_the_folder_again_when_it_publishes(tmp_path: Path) -> None:
    """Files that are not this engine's, put into the output folder while a run works, are never replaced: the check at
    publish time (the mutation audit removed it unnoticed, the early check hid it)."""
    from fagan_engine.io.dicom_writer import publish_folder, stage_dicom_series

    target = tmp_path / "series"
    write_dicom_series(oblique_image(seed=1), str(target))  # an earlier output: --force may replace it
    staged = tmp_path / "staged"
    stage_dicom_series(oblique_image(seed=2), staged, shown=target)
    (target / "notes.txt").write_text("arrived meanwhile")
    before = folder_digest(target)
    with pytest.raises(OutputError, match="holds more than a DICOM series"):
        publish_folder(staged, target, force=True)
    assert folder_digest(target) == before
