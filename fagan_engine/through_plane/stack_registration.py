"""Rigid registration of thick-slice stacks (SimpleITK, Mattes mutual information, multi-resolution) and its checks.

``register(fixed, moving, initial)`` returns the Euler transform that maps points of ``fixed``
(a stack) to ``moving`` (the reference stack, or the current reconstruction). Whether the result
is a real match is judged by the normalised mutual information of the overlapping samples
(``(H(a) + H(b)) / H(a, b) − 1``, 0 for unrelated images), which, unlike the Mattes metric value,
is comparable between pairs of images, and by the correlation of their intensities over the
foreground (the reconstruction assumes one contrast up to a scale factor). Measured on stacks
simulated from real T1 volumes (6 mm from 2 mm, noise 0-5 %): the same subject gives NMI
0.13-0.48 and correlation 0.88-0.98, two different subjects NMI 0.02-0.05 and correlation 0.04-0.54.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import SimpleITK as sitk

HISTOGRAM_BINS = 32
SAMPLING_FRACTION = 0.25


def register(
    fixed: sitk.Image, moving: sitk.Image, initial: sitk.Euler3DTransform, seed: int = 0, shrink: Tuple[int, ...] = (4, 2, 1)
) -> Tuple[sitk.Euler3DTransform, float]:
    """(transform, final Mattes metric) of a rigid registration of ``fixed`` to ``moving`` from ``initial``."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=HISTOGRAM_BINS)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(SAMPLING_FRACTION, seed + 1)  # a seed of 0 would mean the wall clock
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-4, numberOfIterations=200, relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(shrink))
    method.SetSmoothingSigmasPerLevel([0.5 * (s - 1) for s in shrink])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(sitk.Euler3DTransform(initial), inPlace=False)
    result = method.Execute(sitk.Cast(fixed, sitk.sitkFloat32), sitk.Cast(moving, sitk.sitkFloat32))
    composite = sitk.CompositeTransform(result)
    euler = sitk.Euler3DTransform(composite.GetBackTransform() if composite.GetNumberOfTransforms() > 1 else composite.GetNthTransform(0))
    return euler, float(method.GetMetricValue())


def overlap_samples(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Euler3DTransform) -> Tuple[np.ndarray, np.ndarray]:
    """(fixed values, moving values at the mapped points) over the fixed voxels that map inside ``moving``."""
    outside = -np.finfo(np.float32).max
    sampled = sitk.Resample(sitk.Cast(moving, sitk.sitkFloat32), fixed, transform, sitk.sitkLinear, float(outside), sitk.sitkFloat32)
    values = sitk.GetArrayFromImage(sampled).ravel()
    keep = values > outside / 2
    return sitk.GetArrayFromImage(fixed).ravel()[keep].astype(np.float64), values[keep].astype(np.float64)


def foreground_correlation(first: np.ndarray, second: np.ndarray, fraction: float = 0.1) -> float:
    """Pearson correlation of paired samples where either exceeds ``fraction`` of its 99.5th percentile."""
    keep = (first > fraction * np.percentile(first, 99.5)) | (second > fraction * np.percentile(second, 99.5))
    if keep.sum() < 16 or first[keep].std() == 0 or second[keep].std() == 0:
        return 0.0
    return float(np.corrcoef(first[keep], second[keep])[0, 1])


def normalised_mutual_information(first: np.ndarray, second: np.ndarray, bins: int = HISTOGRAM_BINS) -> float:
    """``(H(a) + H(b)) / H(a, b) − 1`` of paired samples, on their 1st–99th percentile range (0: independent, 1: identical)."""
    ranges = [np.percentile(v, [1, 99]) for v in (first, second)]
    if any(hi <= lo for lo, hi in ranges):
        return 0.0
    joint, _, _ = np.histogram2d(first, second, bins=bins, range=ranges)
    joint /= joint.sum()

    def entropy(p: np.ndarray) -> float:
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    return (entropy(joint.sum(axis=0)) + entropy(joint.sum(axis=1))) / entropy(joint) - 1.0
