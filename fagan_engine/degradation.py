"""How low-resolution inputs are made from high-resolution data (training, demo, evaluation).

LR = bicubic downsampling with anti-aliasing (PyTorch ``antialias=True``), as in the paper;
optional extra degradations for training: Gaussian blur before downsampling, k-space
truncation and Rician noise after it.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F


def downsample(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic anti-aliased downsampling of (B, C, H, W) by ``scale``; H and W must divide by it."""
    height, width = hr.shape[-2:]
    if height % scale or width % scale:
        raise ValueError(f"HR size {height}x{width} is not divisible by scale {scale}")
    return F.interpolate(hr, size=(height // scale, width // scale), mode="bicubic", align_corners=False, antialias=True)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with reflect padding; sigma in pixels."""
    if sigma <= 0:
        return images
    radius = max(1, int(round(3 * sigma)))
    coords = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (coords / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def kspace_truncate(images: torch.Tensor, keep_fraction: float) -> torch.Tensor:
    """Zero the outer k-space of each 2D image, keeping the central ``keep_fraction`` per axis."""
    if keep_fraction >= 1.0:
        return images
    spectrum = torch.fft.fftshift(torch.fft.fft2(images), dim=(-2, -1))
    height, width = images.shape[-2:]
    mask = torch.zeros(height, width, dtype=torch.bool, device=images.device)
    keep_h, keep_w = max(1, int(height * keep_fraction)), max(1, int(width * keep_fraction))
    top, left = (height - keep_h) // 2, (width - keep_w) // 2
    mask[top : top + keep_h, left : left + keep_w] = True
    spectrum = spectrum * mask
    return torch.fft.ifft2(torch.fft.ifftshift(spectrum, dim=(-2, -1))).real


def rician_noise(images: torch.Tensor, sigma: float, generator: "torch.Generator | None" = None) -> torch.Tensor:
    """Magnitude of the image plus complex Gaussian noise of std ``sigma`` (Rician statistics)."""
    if sigma <= 0:
        return images
    real = images + sigma * torch.randn(images.shape, generator=generator, dtype=images.dtype, device=images.device)
    imag = sigma * torch.randn(images.shape, generator=generator, dtype=images.dtype, device=images.device)
    return torch.sqrt(real * real + imag * imag)


def crop_to_multiple(image: sitk.Image, scale: int, axes: Sequence[int]) -> sitk.Image:
    """Crop the in-plane axes so their sizes divide by ``scale`` (extra voxels dropped at the end)."""
    size = list(image.GetSize())
    for axis in axes:
        size[axis] -= size[axis] % scale
    if any(s == 0 for s in size):
        raise ValueError(f"volume is smaller than the scale {scale} along an in-plane axis")
    return sitk.RegionOfInterest(image, size, [0, 0, 0])


def downsample_volume(image: sitk.Image, scale: int, axes: Tuple[int, int]) -> sitk.Image:
    """Make the LR counterpart of an HR volume: each in-plane slice bicubic-downsampled by ``scale``.

    The HR volume must already be cropped to a multiple of ``scale``. The LR geometry covers the
    same physical extent (spacing × scale, origin shifted by half the spacing difference), so that
    super-resolving it with ``geometry.super_resolved_reference`` lands exactly on the HR grid.
    """
    array = sitk.GetArrayFromImage(image).astype(np.float32)  # (z, y, x) = axes (2, 1, 0)
    np_axes = tuple(2 - a for a in axes)
    through = ({0, 1, 2} - set(np_axes)).pop()
    slices = np.moveaxis(array, (through,) + np_axes, (0, 1, 2))
    with torch.inference_mode():
        lr = downsample(torch.from_numpy(np.ascontiguousarray(slices))[:, None], scale)[:, 0].numpy()
    lr = np.ascontiguousarray(np.moveaxis(lr, (0, 1, 2), (through,) + np_axes))
    out = sitk.GetImageFromArray(lr)
    spacing = np.array(image.GetSpacing())
    direction = np.array(image.GetDirection()).reshape(3, 3)
    shift = np.zeros(3)
    for axis in axes:
        shift[axis] = 0.5 * spacing[axis] * (scale - 1)
        spacing[axis] *= scale
    out.SetSpacing(tuple(spacing))
    out.SetDirection(image.GetDirection())
    out.SetOrigin(tuple(np.array(image.GetOrigin()) + direction @ shift))
    return out
