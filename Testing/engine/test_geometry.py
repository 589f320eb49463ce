"""Plane selection and super-resolved geometry: the SR image covers exactly the input's physical box."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from fagan_engine.io.geometry import (
    physical_corners,
    plane_axes,
    same_physical_extent,
    super_resolved_geometry,
    super_resolved_reference,
    through_plane_axis,
)
from fagan_engine.util.errors import ConfigError

# Index axis i along A-P (posterior), j along S-I (inferior), k along L-R (left): a sagittal stack.
SAGITTAL_STACK = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def rotation(axis, angle: float) -> np.ndarray:
    """Rodrigues rotation about an arbitrary axis."""
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def make_image(size=(12, 10, 6), spacing=(0.9, 1.3, 3.0), direction=None, origin=(10.5, -20.25, 33.0)) -> sitk.Image:
    image = sitk.Image(list(size), sitk.sitkFloat32)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection((rotation([1, 2, 3], 0.4) if direction is None else np.asarray(direction)).ravel().tolist())
    return image


@pytest.mark.parametrize(
    "spacing, expected",
    [
        ((0.9, 1.3, 3.0), (0, 1)),
        ((3.0, 1.0, 1.0), (1, 2)),
        ((1.0, 5.0, 1.0), (0, 2)),
        ((0.5, 0.5, 0.5), (0, 1)),  # isotropic: through-plane is the largest index
        ((1.0, 3.0, 3.0), (0, 1)),  # tie for coarsest: through-plane is the largest index
        ((1.0, 3.0, 3.0 - 1e-9), (0, 1)),  # float noise counts as a tie
    ],
)
def test_auto_plane_uses_finest_axes_with_documented_tie_rule(spacing, expected):
    assert plane_axes(make_image(spacing=spacing), "auto") == expected


@pytest.mark.parametrize("size, spacing, expected", [
    ((32, 32, 1), (1.5, 1.5, 1.0), (0, 1)),  # one DICOM slice: ITK reads it 1 mm thick, finer than its pixels
    ((32, 1, 24), (0.8, 0.5, 0.8), (0, 2)),  # one coronal slice with a small pixdim
    ((32, 1, 1), (1.0, 1.0, 1.0), (0, 1)),  # a line: no single slice, the spacing rule
])
def test_auto_plane_of_a_single_slice_is_that_slice(size, spacing, expected):
    """A 32x32x1 DICOM slice was refused as "in-plane slice is 32x1 voxels" unless --plane was given."""
    assert plane_axes(make_image(size=size, spacing=spacing), "auto") == expected


@pytest.mark.parametrize("tilt", [0.0, 0.35])
@pytest.mark.parametrize(
    "direction, expected",
    [
        (np.eye(3), {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}),
        (SAGITTAL_STACK, {"axial": (0, 2), "coronal": (1, 2), "sagittal": (0, 1)}),
    ],
    ids=["axial-stack", "sagittal-stack"],
)
def test_anatomical_planes_follow_direction_matrix(direction, expected, tilt):
    """Permuted axes, and the same acquisitions tilted obliquely by 20 degrees."""
    image = make_image(spacing=(1.0, 1.0, 1.0), direction=rotation([0.3, -1.0, 0.5], tilt) @ direction)
    for plane, axes in expected.items():
        assert plane_axes(image, plane) == axes


def test_unknown_plane_is_a_config_error():
    with pytest.raises(ConfigError, match="plane must be one of"):
        through_plane_axis(make_image(), "transverse")


@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize("plane", ["auto", "axial", "coronal", "sagittal"])
def test_sr_reference_keeps_physical_corners_of_oblique_anisotropic_volume(scale, plane):
    image = make_image()
    axes = plane_axes(image, plane)
    reference = super_resolved_reference(image, scale, axes)
    np.testing.assert_allclose(physical_corners(reference), physical_corners(image), rtol=0, atol=1e-4)
    assert same_physical_extent(reference, image)
    expected_size = [n * scale if a in axes else n for a, n in enumerate(image.GetSize())]
    expected_spacing = [s / scale if a in axes else s for a, s in enumerate(image.GetSpacing())]
    assert list(reference.GetSize()) == expected_size
    np.testing.assert_allclose(reference.GetSpacing(), expected_spacing, rtol=1e-12)
    np.testing.assert_allclose(reference.GetDirection(), image.GetDirection(), atol=1e-12)
    assert reference.GetPixelID() == sitk.sitkFloat32


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_hr_pixel_centres_follow_align_corners_false_convention(scale):
    image = make_image()
    reference = super_resolved_reference(image, scale, (0, 2))
    for hr_index in [(0, 0, 0), (5, 3, 7), (scale * 12 - 1, 9, scale * 6 - 1)]:
        lr_index = [(j + 0.5) / scale - 0.5 if a in (0, 2) else j for a, j in enumerate(hr_index)]
        np.testing.assert_allclose(
            reference.TransformIndexToPhysicalPoint(hr_index),
            image.TransformContinuousIndexToPhysicalPoint(lr_index),
            atol=1e-9,
        )


def test_linear_resampling_onto_sr_grid_matches_half_pixel_convention():
    """Resampling an index ramp onto the SR grid gives (j + 0.5) / scale - 0.5 in the interior."""
    ramp = sitk.GetImageFromArray(np.broadcast_to(np.arange(12, dtype=np.float32), (6, 10, 12)).copy())
    ramp.CopyInformation(make_image())
    reference = super_resolved_reference(ramp, 4, (0, 1))
    resampled = sitk.GetArrayFromImage(sitk.Resample(ramp, reference, sitk.Transform(), sitk.sitkLinear))
    interior = np.arange(2, 4 * 12 - 2)
    np.testing.assert_allclose(resampled[3, 20, interior], (interior + 0.5) / 4 - 0.5, atol=1e-4)


def test_physical_corners_of_identity_grid():
    image = make_image(size=(2, 3, 4), spacing=(1.0, 2.0, 0.5), direction=np.eye(3), origin=(0.0, 0.0, 0.0))
    corners = physical_corners(image)
    assert corners.shape == (8, 3)
    np.testing.assert_allclose(corners.min(axis=0), [-0.5, -1.0, -0.25])
    np.testing.assert_allclose(corners.max(axis=0), [1.5, 5.0, 1.75])


def test_sheared_direction_keeps_corners():
    """Non-orthonormal directions (sheared NIfTI read via nibabel) follow the same formula."""
    sheared = np.array([[1.0, 0.3, 0.0], [0.0, 0.9, 0.2], [0.0, 0.1, 0.95]])
    image = make_image(direction=sheared / np.linalg.norm(sheared, axis=0))
    reference = super_resolved_reference(image, 4, (0, 1))
    np.testing.assert_allclose(physical_corners(reference), physical_corners(image), atol=1e-4)


def test_geometry_apply_checks_size_and_extent_mismatch_is_detected():
    image = make_image()
    geometry = super_resolved_geometry(image, 2, (0, 1))
    with pytest.raises(ValueError, match="does not match"):
        geometry.apply(sitk.Image([3, 3, 3], sitk.sitkFloat32))
    stamped = geometry.apply(sitk.Image(list(geometry.size), sitk.sitkUInt8))
    assert same_physical_extent(stamped, image)
    shifted = make_image(origin=(10.5, -20.25, 33.01))
    assert not same_physical_extent(shifted, image)


@pytest.mark.parametrize("scale, axes", [(0, (0, 1)), (2.5, (0, 1)), (2, (0, 3))])
def test_bad_scale_or_axes_raise(scale, axes):
    with pytest.raises(ValueError):
        super_resolved_geometry(make_image(), scale, axes)
