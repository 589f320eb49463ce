"""Losses: VGG19 φ5,4 content loss (eq. 15), adversarial loss (eq. 16), pixel loss, discriminator loss,
and the band-overshoot penalty (not in the paper; docs/decisions.md, "Overshoot penalty").

The VGG19 feature extractor is defined here with torchvision's layer indices, so a torchvision
``vgg19`` state dict (``features.N.weight`` / ``features.N.bias``) loads into it directly.
φ5,4 is the output of the ReLU after conv5_4 (``features.34`` + ``features.35``), the SRGAN
definition ("the j-th convolution (after activation) before the i-th max-pooling layer");
the network is truncated there. Without a weights file the content loss falls back to a pixel
MSE, which the trainer logs and records in checkpoint metadata (``training.content_loss``).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from fagan_engine.mri.structure_checks import NYQUIST_BAND
from fagan_engine.util.errors import ConfigError

VGG19_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
PHI54_END = 36
"""``features[:36]`` ends with the ReLU after conv5_4 (torchvision index 34)."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CONTENT_VGG = "vgg19_phi54_mse"
CONTENT_PIXEL = "pixel_mse_fallback_no_vgg_weights"


def vgg_min_patch(end: int = PHI54_END) -> int:
    """The smallest patch side ``VGG19Features(end)`` takes: 2 to the number of its max-pools (16 for φ5,4)."""
    kinds = [kind for item in VGG19_LAYERS for kind in (("pool",) if item == "M" else ("conv", "relu"))]
    return 2 ** kinds[:end].count("pool")


class VGG19Features(nn.Module):
    """VGG19 ``features`` truncated at φ5,4; input grey (B, 1, H, W) in [0, 1]."""

    def __init__(self, end: int = PHI54_END) -> None:
        super().__init__()
        layers = []
        in_ch = 3
        for item in VGG19_LAYERS:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_ch, int(item), 3, padding=1), nn.ReLU(inplace=True)]
                in_ch = int(item)
        self.features = nn.Sequential(*layers[:end])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, grey: torch.Tensor) -> torch.Tensor:
        """Replicate grey to RGB, apply ImageNet normalisation, return φ5,4 features."""
        rgb = grey.expand(-1, 3, -1, -1)
        return self.features((rgb - self.mean.to(rgb.dtype)) / self.std.to(rgb.dtype))


def read_state_dict(path: str, kind: str, option: str = "weights file") -> Dict[str, torch.Tensor]:
    """Read a ``kind`` (e.g. "vgg19") state dict without unpickling arbitrary objects; errors name ``option``.

    ``.safetensors`` is read with safetensors; ``.pth``/``.pt`` with ``torch.load(weights_only=True)``,
    which only accepts tensors and plain containers. Anything else is refused in one plain line
    (torch's own message is many lines with terminal escapes and advises an unsafe load).
    """
    source = Path(path)
    named = f"{option} {path}"
    if source.is_dir():
        raise ConfigError(f"{named} is a folder, not a weights file")
    if not source.is_file():
        raise ConfigError(f"{named} not found")
    suffix = source.suffix.lower()
    if suffix not in (".safetensors", ".pth", ".pt"):
        raise ConfigError(f"{named} must be .safetensors, .pth or .pt")
    try:
        tensors = _load_tensors(source, suffix == ".safetensors")
    except OSError as exc:
        raise ConfigError(f"cannot read {named}: {exc.strerror or exc}") from None
    except Exception:  # safetensors/unpickler errors of any kind
        tensors = None
    if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise ConfigError(f"{named} is not a torchvision {kind} state dict (.safetensors or a plain .pth of tensors)")
    return tensors


def _load_tensors(source: Path, safetensors: bool) -> object:
    """The object stored in ``source``: safetensors' tensors, or what ``torch.load(weights_only=True)`` accepts."""
    if safetensors:
        from safetensors.torch import load_file  # lazy: safetensors only for .safetensors weights

        return load_file(str(source))
    return torch.load(str(source), map_location="cpu", weights_only=True)


def load_frozen(model: nn.Module, path: str, kind: str, option: str = "weights file") -> nn.Module:
    """Load a torchvision-format state dict of ``kind`` (e.g. "vgg19") into ``model``; frozen, eval mode.

    ``option`` names the file in errors (the setting or command-line option that gave it).
    """
    tensors = read_state_dict(path, kind, option)
    wanted = model.state_dict()
    missing = [k for k in wanted if k not in tensors]
    if missing:
        raise ConfigError(f"{option} {path} is not a torchvision {kind} state dict (missing {missing[0]})")
    bad = [k for k in wanted if tensors[k].shape != wanted[k].shape]
    if bad:
        raise ConfigError(f"{option} {path}: {bad[0]} has shape {tuple(tensors[bad[0]].shape)}, expected {tuple(wanted[bad[0]].shape)}")
    model.load_state_dict({k: tensors[k].float() for k in wanted})
    return model.eval().requires_grad_(False)


def load_vgg19(path: str) -> VGG19Features:
    """VGG19 φ5,4 with weights from a torchvision-format file (``train.vgg_weights``); frozen, eval mode."""
    return load_frozen(VGG19Features(), path, "vgg19", "train.vgg_weights")


class ContentLoss(nn.Module):
    """MSE between VGG19 φ5,4 features of SR and HR, or pixel MSE when ``vgg`` is None."""

    def __init__(self, vgg: Optional[VGG19Features]) -> None:
        super().__init__()
        self.vgg = vgg
        self.kind = CONTENT_VGG if vgg is not None else CONTENT_PIXEL

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        if self.vgg is None:
            return F.mse_loss(sr.float(), hr.float())
        with torch.no_grad():
            target = self.vgg(hr)
        return F.mse_loss(self.vgg(sr).float(), target.float())


def pixel_loss(kind: str, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """``l1`` or ``mse`` between SR and HR, in float32."""
    if kind == "l1":
        return F.l1_loss(sr.float(), hr.float())
    return F.mse_loss(sr.float(), hr.float())


def band_overshoot_loss(sr: torch.Tensor, hr: torch.Tensor, scale: int) -> torch.Tensor:
    """How far SR's amplitude exceeds HR's in the band just below the LR Nyquist frequency.

    The band and the Hann-windowed spectrum are those of ``structure_checks.nyquist_band_ratio``
    (the issue's overshoot measure), per sample: sum over samples of max(0, |SR|_band − |HR|_band),
    divided by the sum of |HR|_band. Zero when no sample overshoots; 0.1 when the batch's
    overshooting samples exceed the band amplitude by 10 % of the batch's HR band amplitude.
    """
    sr, hr = sr.float(), hr.float()
    window, selected = _band_window(int(sr.shape[-2]), int(sr.shape[-1]), scale, sr.device)

    def band_amplitude(images: torch.Tensor) -> torch.Tensor:
        centred = (images - images.mean(dim=(-2, -1), keepdim=True)) * window
        power = torch.view_as_real(torch.fft.fft2(centred)).pow(2).sum(-1)
        return (power[..., selected].flatten(1).sum(1) + 1e-12).sqrt()

    amplitude_sr, amplitude_hr = band_amplitude(sr), band_amplitude(hr)
    return F.relu(amplitude_sr - amplitude_hr).sum() / amplitude_hr.sum()


@functools.lru_cache(maxsize=8)
def _band_window(rows: int, cols: int, scale: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """The 2D Hann window and the band mask of ``band_overshoot_loss``, built once per patch size and device."""
    window = torch.outer(torch.hann_window(rows, periodic=False), torch.hann_window(cols, periodic=False))
    radius = torch.hypot(*torch.meshgrid(torch.fft.fftfreq(rows), torch.fft.fftfreq(cols), indexing="ij"))
    nyquist = 0.5 / scale
    selected = (radius >= NYQUIST_BAND[0] * nyquist) & (radius < NYQUIST_BAND[1] * nyquist)
    return window.to(device), selected.to(device)


def highband_loss(sr: torch.Tensor, hr: torch.Tensor, scale: int) -> torch.Tensor:
    """Mean |error| of the frequencies outside the LR matrix (the part that survives the data-consistency projection).

    Under the k-space projection the output's central LR-matrix spectrum is replaced by the measured
    one, so only the error outside it remains; this trains the network for the product's default
    output. Normalised like an L1 pixel loss: the RMS of the high-pass error image.
    """
    error = torch.fft.fft2((sr - hr).float())
    rows, cols = error.shape[-2:]
    mask = _highband_mask(int(rows), int(cols), scale, error.device)
    power = torch.view_as_real(error).pow(2).sum(-1) * mask
    return (power.sum(dim=(-2, -1)) / (rows * cols) ** 2 + 1e-12).sqrt().mean()


@functools.lru_cache(maxsize=8)
def _highband_mask(rows: int, cols: int, scale: int, device: torch.device) -> torch.Tensor:
    """1 outside the central (rows/s, cols/s) block of the (unshifted) spectrum, else 0."""
    keep_rows = torch.fft.fftfreq(rows).abs() < 0.5 / scale
    keep_cols = torch.fft.fftfreq(cols).abs() < 0.5 / scale
    return (~(keep_rows[:, None] & keep_cols[None, :])).float().to(device)


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 16 per sample, averaged: −log D(G(LR)) = BCE-with-logits against 1."""
    fake_logits = fake_logits.float()
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """−log D(HR) − log(1 − D(G(LR))), averaged over the batch."""
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake
