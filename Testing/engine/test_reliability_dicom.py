"""Issue #20 item 8: a DICOM slice that does not share the series' plane is refused; gaps keep the
acquired spacing and the error names the right slices and the CLI flag. A --force replacement of a
DICOM output interrupted between its two renames keeps the old series or the new one."""
from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_test_series import folder_digest, oblique_image, write_mr_series

from fagan_engine.cli.sr import main
from fagan_engine.io.dicom_writer import write_dicom_series
from fagan_engine.io.volume_io import read_volume
from fagan_engine.util.errors import InputError, OutputError


def series(tmp_path: Path, count: int = 6) -> Path:
    return write_mr_series(oblique_image(size=(16, 12, count), spacing=(0.9, 1.1, 1.0)), tmp_path / "series")


def edit_slice(folder: Path, index: int, change) -> None:
    path = sorted(folder.iterdir())[index]
    ds = pydicom.dcmread(str(path))
    change(ds)
    ds.save_as(str(path))


def rotate_30_degrees_in_plane(ds: pydicom.Dataset) -> None:
    row, column = np.asarray(ds.ImageOrientationPatient[:3], float), np.asarray(ds.ImageOrientationPatient[3:], float)
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*(c * row + s * column), *(-s * row + c * column))]


@pytest.mark.parametrize("change, tag", [
    (rotate_30_degrees_in_plane, "ImageOrientationPatient"),
    (lambda ds: setattr(ds, "PixelSpacing", ["2", "2"]), "PixelSpacing"),
], ids=["orientation", "pixel-spacing"])
def test_one_inconsistent_slice_is_refused(tmp_path: Path, change, tag: str) -> None:
    folder = series(tmp_path)
    edit_slice(folder, 3, change)
    with pytest.raises(InputError, match=f"slice003.dcm has {tag}") as excinfo:
        read_volume(str(folder))
    assert "\n" not in str(excinfo.value)


def test_resampling_gaps_keeps_the_acquired_spacing(tmp_path: Path) -> None:
    folder = series(tmp_path, count=10)
    for index, path in enumerate(sorted(folder.iterdir())):
        if index not in (0, 3, 9):
            path.unlink()
    image = read_volume(str(folder), dicom_gaps="resample")
    assert image.GetSize()[2] == 4 and image.GetSpacing()[2] == pytest.approx(3.0, rel=1e-4)


def make_rgb(ds: pydicom.Dataset) -> None:
    pixels = np.zeros((ds.Rows, ds.Columns, 3), np.uint8)
    pixels[..., 0] = 200
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()


def test_a_colour_series_is_refused_as_a_colour_file_is(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """ITK mixed the channels into one grey value and the run went on with exit 0."""
    folder = series(tmp_path)
    for index in range(6):
        edit_slice(folder, index, make_rgb)
    assert main([str(folder), str(tmp_path / "o.nrrd"), "--scale", "2", "--method", "bicubic", "--progress", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is colour (RGB)" in err[0] and not (tmp_path / "o.nrrd").exists()


def test_a_monochrome1_series_says_it_is_read_inverted(tmp_path: Path) -> None:
    folder = series(tmp_path)
    for index in range(6):
        edit_slice(folder, index, lambda ds: setattr(ds, "PhotometricInterpretation", "MONOCHROME1"))
    with pytest.warns(UserWarning, match="MONOCHROME1"):
        read_volume(str(folder))


def rounded_axial_series(tmp_path: Path, count: int, step: float) -> Path:
    """An axial series whose ImagePositionPatient is written with two decimals, as many scanners write it."""
    image = sitk.Image(16, 12, count, sitk.sitkInt16)
    image.SetSpacing((0.9, 0.9, step))
    folder = write_mr_series(image, tmp_path / "rounded")
    for path in folder.iterdir():
        ds = pydicom.dcmread(str(path))
        ds.ImagePositionPatient = [f"{float(v):.2f}" for v in ds.ImagePositionPatient]
        ds.save_as(str(path))
    return folder


def test_positions_written_with_two_decimals_are_one_even_series(tmp_path: Path) -> None:
    """0.9375 mm slices read 0.94, 0.94, 0.93, ...: 1.07 % apart, refused as "a slice is missing"; the spacing ITK
    gives is the first step (0.94). The series' mean step is the spacing."""
    folder = rounded_axial_series(tmp_path, 12, 0.9375)
    steps = np.diff(sorted(float(pydicom.dcmread(str(p)).ImagePositionPatient[2]) for p in folder.iterdir()))
    assert {round(float(step), 2) for step in steps} == {0.93, 0.94}
    image = read_volume(str(folder))
    assert image.GetSize()[2] == 12 and image.GetSpacing()[2] == pytest.approx(10.31 / 11, abs=1e-6)


def test_a_missing_slice_of_a_rounded_series_is_still_a_gap(tmp_path: Path) -> None:
    folder = rounded_axial_series(tmp_path, 12, 0.9375)
    sorted(folder.iterdir(), key=lambda p: float(pydicom.dcmread(str(p)).ImagePositionPatient[2]))[5].unlink()
    with pytest.raises(InputError, match="gap of 1.8"):
        read_volume(str(folder))
    resampled = read_volume(str(folder), dicom_gaps="resample")
    assert resampled.GetSize()[2] == 12 and resampled.GetSpacing()[2] == pytest.approx(0.9375, abs=0.002)


def test_gap_error_names_the_gap_and_the_cli_flag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = series(tmp_path, count=10)
    for index, path in enumerate(sorted(folder.iterdir())):
        if index not in (0, 3, 9):
            path.unlink()
    assert main([str(folder), str(tmp_path / "o.nrrd"), "--scale", "2", "--method", "bicubic", "--progress", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "between slices slice003.dcm and slice009.dcm" in err[0]
    assert "--dicom-gaps resample" in err[0] and "read_volume" not in err[0]


def test_slice_shifted_within_its_plane_is_refused_by_name(tmp_path: Path) -> None:
    folder = series(tmp_path)

    def shift_5mm_along_x(ds) -> None:
        ds.ImagePositionPatient = [f"{float(ds.ImagePositionPatient[0]) + 5.0:.6f}"] + list(ds.ImagePositionPatient[1:])

    edit_slice(folder, 3, shift_5mm_along_x)
    with pytest.raises(InputError, match="slice003.dcm is shifted .* within the slice plane") as excinfo:
        read_volume(str(folder))
    assert "\n" not in str(excinfo.value)


def axial_series(tmp_path: Path) -> Path:
    """An 8×8×4 axial series whose rows and columns run right-to-left and anterior-to-posterior (an
    identity orientation read in place of its own would flip both axes and still stack)."""
    image = oblique_image(size=(8, 8, 4), spacing=(0.9, 1.1, 3.0))
    image.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    return write_mr_series(image, tmp_path / "axial")


def edit_every_slice(folder: Path, change) -> None:
    for index in range(len(list(folder.iterdir()))):
        edit_slice(folder, index, change)


def truncate_64_bytes(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-64])


def delete_pixel_data(path: Path) -> None:
    ds = pydicom.dcmread(str(path))
    del ds.PixelData
    ds.save_as(str(path))


@pytest.mark.parametrize("damage", [delete_pixel_data, truncate_64_bytes], ids=["no-pixel-data", "truncated"])
def test_unreadable_last_slice_is_refused_by_name(tmp_path: Path, damage, capsys: pytest.CaptureFixture) -> None:
    """GDCM leaves such a file out of the series: the volume lost its last slice without a word."""
    folder = axial_series(tmp_path)
    damage(folder / "slice003.dcm")
    out = tmp_path / "o.nrrd"
    assert main([str(folder), str(out), "--scale", "2", "--method", "bicubic", "--progress", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: DICOM slice slice003.dcm of the series cannot be read") and not out.exists()
    with pytest.raises(InputError, match="slice003.dcm of the series cannot be read"):
        read_volume(str(folder), dicom_gaps="resample")


def test_unreadable_slice_of_another_series_is_ignored(tmp_path: Path) -> None:
    folder = axial_series(tmp_path)
    write_mr_series(oblique_image(size=(8, 8, 3), seed=1), folder, series_uid="1.2.826.0.1.3680043.8.498.199", prefix="other")
    delete_pixel_data(folder / "other002.dcm")
    (folder / "notes.txt").write_text("not DICOM\n")
    assert read_volume(str(folder), series_id="1.2.826.0.1.3680043.8.498.101").GetSize() == (8, 8, 4)
    with pytest.raises(InputError, match="other002.dcm of the series cannot be read"):
        read_volume(str(folder), series_id="1.2.826.0.1.3680043.8.498.199")


def drop_orientation(ds: pydicom.Dataset) -> None:
    del ds.ImageOrientationPatient


@pytest.mark.parametrize("change, problem", [
    (drop_orientation, "missing: the orientation of the slices is unknown"),
    (lambda ds: setattr(ds, "ImageOrientationPatient", ["0"] * 6), "0.0.0.0.0.0: its row and column"),
    (lambda ds: setattr(ds, "ImageOrientationPatient", ["1", "0", "0", "1", "0", "0"]), "1.0.0.1.0.0: its row and column"),
    (lambda ds: setattr(ds, "ImageOrientationPatient", ["1", "0", "0", "0.5", "0.866", "0"]), "1.0.0.0.5.0.866.0: its row and column"),
], ids=["missing", "zeros", "parallel", "not-perpendicular"])
def test_unknown_or_invalid_orientation_is_refused(tmp_path: Path, change, problem: str) -> None:
    """ITK reads each of these as the identity orientation."""
    folder = axial_series(tmp_path)
    edit_every_slice(folder, change)
    with pytest.raises(InputError, match=f"slice000.dcm and the rest of its series have ImageOrientationPatient {problem}") as excinfo:
        read_volume(str(folder))
    assert "\n" not in str(excinfo.value)


def drop_pixel_spacing(ds: pydicom.Dataset) -> None:
    del ds.PixelSpacing


@pytest.mark.parametrize("change, problem", [
    (drop_pixel_spacing, "missing: the pixel size is unknown"),
    (lambda ds: setattr(ds, "PixelSpacing", ["0", "0"]), "0.0: a pixel size must be positive"),
    (lambda ds: setattr(ds, "PixelSpacing", ["-1.1", "-0.9"]), "-1.1.-0.9: a pixel size must be positive"),
], ids=["missing", "zero", "negative"])
def test_unknown_or_invalid_pixel_spacing_is_refused(tmp_path: Path, change, problem: str) -> None:
    """ITK reads a missing or zero pixel spacing as 1 mm, and a negative one as flipped axes."""
    folder = axial_series(tmp_path)
    edit_every_slice(folder, change)
    with pytest.raises(InputError, match=f"slice000.dcm and the rest of its series have PixelSpacing {problem}"):
        read_volume(str(folder))


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
@pytest.mark.parametrize("slope", ["0", "nan"])
def test_zero_or_non_finite_rescale_slope_is_refused(tmp_path: Path, slope: str) -> None:
    """ITK ignores such a slope: the slice's stored values came out unscaled."""
    folder = axial_series(tmp_path)
    edit_slice(folder, 2, lambda ds: (setattr(ds, "RescaleSlope", slope), setattr(ds, "RescaleIntercept", "0")))
    with pytest.raises(InputError, match=f"slice002.dcm has RescaleSlope {slope}: the rescale slope and intercept must be finite"):
        read_volume(str(folder))


def test_slices_with_their_own_rescale_or_pixel_representation_keep_their_values(tmp_path: Path) -> None:
    """ITK took the pixel type from the first slice: a slice rescaled by 100 wrapped around int16, one rescaled by 0.01
    was truncated to whole numbers, an unsigned slice above 32767 wrapped; exit 0."""
    folder = series(tmp_path)
    expected = []
    for index, change in ((2, (100.0, 0.0)), (3, (0.01, 0.5))):
        edit_slice(folder, index, lambda ds, c=change: (setattr(ds, "RescaleSlope", f"{c[0]:g}"), setattr(ds, "RescaleIntercept", f"{c[1]:g}")))
    path = sorted(folder.iterdir())[4]
    ds = pydicom.dcmread(str(path))
    ds.PixelRepresentation = 0
    ds.PixelData = (ds.pixel_array.astype(np.uint16) + np.uint16(40000)).astype(np.uint16).tobytes()
    ds.save_as(str(path))
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(str(path))
        slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
        expected.append((np.asarray(ds.ImagePositionPatient, float), ds.pixel_array * slope + intercept))
    image = read_volume(str(folder))
    array = sitk.GetArrayFromImage(image)
    for k in range(array.shape[0]):
        corner = np.asarray(image.TransformIndexToPhysicalPoint((0, 0, k)))
        truth = next(v for position, v in expected if np.abs(position - corner).max() < 1e-3)
        assert np.allclose(array[k], truth, rtol=1e-6, atol=1e-3), k


def test_an_enhanced_multi_frame_file_is_named_as_such(tmp_path: Path) -> None:
    """One Enhanced MR Image file was refused as "input is 4D ... extract one volume": it is one 3D volume."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds, meta = Dataset(), FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.4.1", generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta, ds.SOPClassUID, ds.SOPInstanceUID = meta, meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID, ds.Modality = generate_uid(), generate_uid(), generate_uid(), "MR"
    ds.Rows, ds.Columns, ds.NumberOfFrames, ds.SamplesPerPixel, ds.PhotometricInterpretation = 8, 8, 4, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared, measures, orientation = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = ["1", "1"], "3"
    orientation.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = Sequence([measures]), Sequence([orientation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for k in range(4):
        frame, position = Dataset(), Dataset()
        position.ImagePositionPatient = ["0", "0", f"{3 * k}"]
        frame.PlanePositionSequence = Sequence([position])
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = np.arange(256, dtype="<i2").tobytes()
    (tmp_path / "mf").mkdir()
    ds.save_as(str(tmp_path / "mf" / "mf.dcm"), enforce_file_format=True)
    with pytest.raises(InputError, match="mf.dcm in .* is one multi-frame DICOM file \\(enhanced or legacy\\)"):
        read_volume(str(tmp_path / "mf"))


DEAD_PID = 99999999
"""Above any pid_max: no process has it (a process killed with ``kill -9``)."""


@pytest.mark.parametrize("interrupt", ["sigterm", "raised"])
def test_force_replacement_interrupted_between_its_renames_keeps_a_whole_series(tmp_path, monkeypatch, capsys, interrupt):
    """SIGTERM arriving just before the new series is renamed in (what /tmp/cli4/fi/harness.py does) waits for the
    rename; an interrupt raised by the rename itself puts the old series back. No ``.old-`` folder is left."""
    volume, out = tmp_path / "v.nrrd", tmp_path / "out"
    sitk.WriteImage(oblique_image(seed=1), str(volume))
    argv = [str(volume), str(out), "--scale", "2", "--method", "bicubic", "--progress", "none"]
    assert main(argv) == 0
    old = folder_digest(out)
    real = os.rename

    def rename(src, dst, *args, **kwargs):
        if Path(dst) == out and ".tmp-" in str(src):
            if interrupt == "raised":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)
        return real(src, dst, *args, **kwargs)

    sitk.WriteImage(oblique_image(seed=2), str(volume))
    monkeypatch.setattr(os, "rename", rename)
    code = main([*argv, "--force"])
    assert code == (143 if interrupt == "sigterm" else 130), capsys.readouterr().err
    now = folder_digest(out)
    assert len(now) == len(old) and (now != old if interrupt == "sigterm" else now == old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "v.nrrd"]


def test_old_series_left_aside_by_kill_9_is_put_back_or_removed(tmp_path):
    """After ``kill -9`` between the renames the old series is put back when the output name is missing; after one
    between the rename and the clean-up it is removed, as the output holds the new series; a live run's is left alone."""
    out = write_dicom_series(oblique_image(seed=1), str(tmp_path / "out"))
    old = folder_digest(out)
    aside = tmp_path / f".out.old-{DEAD_PID}-abc123"
    aside.mkdir()
    os.replace(out, aside / "out")
    with pytest.raises(OutputError, match="already exists"):
        write_dicom_series(oblique_image(seed=2), str(out))
    assert folder_digest(out) == old and not aside.exists()
    for pid in (DEAD_PID, os.getpid()):
        shutil.copytree(out, tmp_path / f".out.old-{pid}-abc123" / "out")
    write_dicom_series(oblique_image(seed=3), str(out), force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".out.old-{os.getpid()}-abc123", "out"]


def sheared(cosine: float) -> sitk.Image:
    image = sitk.Image(8, 8, 4, sitk.sitkFloat32) + 100.0
    direction = np.eye(3)
    direction[0, 1] = cosine
    direction[:, 1] /= np.linalg.norm(direction[:, 1])
    image.SetDirection(direction.ravel().tolist())
    return image


def test_a_header_rounded_shear_is_written_as_dicom_and_a_real_one_is_refused_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A NIfTI whose direction columns are 2e-6 off perpendicular was refused for DICOM output, and only after the whole
    super-resolution had run."""
    sitk.WriteImage(sheared(2e-6), str(tmp_path / "rounded.nrrd"))
    assert main([str(tmp_path / "rounded.nrrd"), str(tmp_path / "out"), "--scale", "2", "--method", "bicubic", "--progress", "none"]) == 0
    assert len(list((tmp_path / "out").iterdir())) == 4
    sitk.WriteImage(sheared(0.01), str(tmp_path / "sheared.nrrd"))
    code = main([str(tmp_path / "sheared.nrrd"), str(tmp_path / "out2"), "--scale", "2", "--method", "bicubic", "--progress", "json"])
    out, err = capsys.readouterr()
    assert code == 2 and '"progress"' not in out and not (tmp_path / "out2").exists()
    assert err.strip().splitlines()[-1].startswith("error: a DICOM series cannot store a sheared")


def derived_with_a_foreign_checkpoint_name(tmp_path: Path, tags: dict) -> pydicom.Dataset:
    """The first file of the series derived from a source with ``tags`` by a checkpoint named ``modèle_日本``."""
    from engine_helpers import save_untrained_checkpoint

    source = write_mr_series(oblique_image(size=(12, 10, 4)), tmp_path / "in", tags=tags)
    checkpoint = save_untrained_checkpoint(tmp_path / "modèle_日本.safetensors", 2)
    assert main([str(source), str(tmp_path / "out"), "--scale", "2", "--checkpoint", str(checkpoint), "--adapt", "0",
                 "--progress", "none"]) == 0
    return pydicom.dcmread(str(sorted((tmp_path / "out").iterdir())[0]))


def test_a_derived_series_keeps_the_lossy_flag_and_declares_unicode_it_writes(tmp_path: Path) -> None:
    """An image derived from a lossily compressed one must say so (PS3.3 C.7.6.1.1.5); a checkpoint named in other letters
    was written as Latin-1 bytes and '?' with no SpecificCharacterSet."""
    ds = derived_with_a_foreign_checkpoint_name(tmp_path, {"LossyImageCompression": "01", "LossyImageCompressionRatio": "8.5"})
    assert ds.LossyImageCompression == "01" and float(ds.LossyImageCompressionRatio) == 8.5
    assert ds.SpecificCharacterSet == "ISO_IR 192" and "modèle_日本.safetensors" in ds.DerivationDescription


def test_a_smaller_slice_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """ITK's refusal read 'cannot read DICOM series in ...: Size: [16, 11, 1]'."""
    folder = series(tmp_path)

    def crop(ds: pydicom.Dataset) -> None:
        pixels = ds.pixel_array[:-1]
        ds.Rows, ds.PixelData = pixels.shape[0], pixels.tobytes()

    edit_slice(folder, 2, crop)
    assert main([str(folder), str(tmp_path / "o.nrrd"), "--scale", "2", "--method", "bicubic", "--progress", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "slice002.dcm" in err[0] and "unlike the other slices" in err[0], err


def test_an_uneven_step_among_positions_written_without_trailing_zeros_is_a_gap(tmp_path: Path) -> None:
    """``12.5`` beside ``13.4375``: the shortest value widened the rounding allowance to 25 %, and a 1.1 mm step among
    0.9375 mm slices was read as an even series."""
    image = sitk.Image(16, 12, 6, sitk.sitkInt16)
    folder = write_mr_series(image, tmp_path / "exact")
    positions = [12.5, 13.4375, 14.375, 15.475, 16.4125, 17.35]
    for path, z in zip(sorted(folder.iterdir()), positions):
        ds = pydicom.dcmread(str(path))
        ds.ImagePositionPatient = ["0", "0", f"{z:g}"]
        ds.save_as(str(path))
    with pytest.raises(InputError, match="gap of 1.100 mm"):
        read_volume(str(folder))


def test_a_checkpoint_name_the_source_character_set_cannot_hold_switches_the_series_to_utf8(tmp_path: Path) -> None:
    ds = derived_with_a_foreign_checkpoint_name(tmp_path, {"SpecificCharacterSet": "ISO_IR 100", "PatientName": "Müller^Jörg"})
    assert ds.SpecificCharacterSet == "ISO_IR 192" and "modèle_日本.safetensors" in ds.DerivationDescription
    assert str(ds.PatientName) == "Müller^Jörg"
