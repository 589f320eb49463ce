"""Training data: volume lists, the train/validation split, foreground slices and random patches.

Volumes come from ``data.train`` (files, folders, the token ``icbm152:t1``) and/or a JSON
manifest. The split is by volume, never by slice. With a single volume a central slab along the
through-plane axis is held out, separated from the training slabs by a gap; neighbouring
anatomy of the same subject still leaks across the gap (see docs/training.md).

Every training sample is a pure function of ``(seed, sample index)``: the source (a data slice or,
with ``data.synthetic_fraction``, a synthetic slice from ``synthesis``), augmentation, the random
acquisition (``forward_model.random_acquisition`` over ``data.degradation``), its noise and the
patch position are drawn from a generator seeded with both, so an interrupted run that resumes at
iteration ``t`` sees exactly the batches an uninterrupted run would have seen.

The LR of a sample is made from the whole (augmented) HR slice by the forward model, then the
patch is cut from both at matching positions: a k-space acquisition of a patch alone would wrap
its borders around.
"""
from __future__ import annotations

import json
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
import torch
from torch.utils.data import DataLoader, Dataset

from fagan_engine.inference.slices import MIN_SLICE
from fagan_engine.io.geometry import SliceLayout, plane_axes
from fagan_engine.io.volume_io import SUPPORTED_EXTENSIONS, read_volume, voxel_digest
from fagan_engine.mri.forward_model import add_rician_noise, crop_to_multiple, degrade, random_acquisition, resample_slice
from fagan_engine.mri.normalization import IntensityNormalizer
from fagan_engine.mri.sample_data import ICBM152_T1, resolve_volume_path
from fagan_engine.mri.synthesis import SliceSynthesizer
from fagan_engine.training.evaluation import has_foreground
from fagan_engine.training.losses import vgg_min_patch
from fagan_engine.util.config import DataConfig, FAGANConfig
from fagan_engine.util.errors import ConfigError, InputError

PATCH_TRIES = 10
"""Random patch positions tried per sample to find one with enough foreground."""
INTENSITY_RANGE = (0.9, 1.1)
"""Range of the random intensity scaling applied to HR (and so LR) patches."""
SINGLE_VOLUME_CAVEAT = (
    "single training volume: validation is a held-out slab of the same volume, separated from the "
    "training slabs by a gap; anatomy and contrast are shared, so validation scores are optimistic"
)
TRAINING_ADVICE = (
    (re.compile(r"use the 'zero' NaN policy to replace them with 0"), "replace them (e.g. with 0) in the file first"),
    (
        re.compile(r"choose one \(fagan-sr --series-id[^)]*\), or give each series its own folder"),
        "give each series its own folder and list the folders in data.train",
    ),
    (re.compile(r"--dicom-gaps resample interpolates it [^;]*instead"), "add the missing slice or leave the series out"),
)
"""The advice of ``read_volume``'s errors (fagan-sr's options) in the words of the training command."""


@dataclass
class TrainVolume:
    """Normalised slices (n, rows, cols) of one training volume or slab, and its foreground slices."""

    name: str
    slices: np.ndarray
    kept: np.ndarray


@dataclass
class ValVolume:
    """A held-out HR volume (cropped in-plane to a multiple of the scale) and its in-plane axes."""

    name: str
    hr: sitk.Image
    axes: Tuple[int, int]


@dataclass
class PreparedData:
    train: List[TrainVolume]
    val: List[ValVolume]
    split: Dict[str, Any]
    digests: List[str] = field(default_factory=list)
    """``io.volume_io.voxel_digest`` of each training entry (``split["train"]``'s order): recorded in the checkpoint, so that
    ``fagan-eval`` knows a test volume that was trained on whatever path it is given by."""

    @property
    def n_slices(self) -> int:
        return int(sum(len(v.kept) for v in self.train))


def expand_entries(entries: Sequence[str], base: Optional[Path] = None) -> List[str]:
    """Expand data entries: files and ``icbm152:t1`` as they are, folders into their volume files.

    A folder with no volume files but other files is taken as one DICOM series.
    """
    out: List[str] = []
    for entry in entries:
        if entry == ICBM152_T1:
            out.append(entry)
            continue
        path = Path(entry)
        if base is not None and not path.is_absolute():
            path = base / path
        if not path.exists():
            raise ConfigError(f"data entry not found: {entry}")
        if not path.is_dir():
            out.append(str(path))
            continue
        children = sorted(path.iterdir())
        volumes = [str(p) for p in children if p.is_file() and p.name.lower().endswith(SUPPORTED_EXTENSIONS)]
        if volumes:
            out.extend(volumes)
        elif any(p.is_file() for p in children):
            out.append(str(path))
        else:
            raise ConfigError(f"data folder is empty: {entry}")
    return out


def read_manifest(path: str) -> Tuple[List[str], Optional[List[str]]]:
    """Read a JSON manifest: a list of volumes, or ``{"train": [...], "val": [...]}`` (val optional).

    Relative paths are relative to the manifest's folder.
    """
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"data.manifest not found: {path}")
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot parse manifest {path}: {str(exc).splitlines()[0]}") from None
    if isinstance(data, list):
        data = {"train": data}
    lists_ok = isinstance(data, dict) and all(
        isinstance(v, list) and all(isinstance(e, str) for e in v) for v in data.values()
    )
    if not lists_ok or set(data) - {"train", "val"}:
        raise ConfigError(f'manifest {path} must be a list of volumes or {{"train": [...], "val": [...]}}')
    train = expand_entries(data.get("train", []), source.parent)
    val = expand_entries(data["val"], source.parent) if "val" in data else None
    return train, val


def load_volume(entry: str, role: str = "volume") -> sitk.Image:
    """Read one data entry (a path or ``icbm152:t1``) as a validated float32 volume.

    Errors name the entry as ``role`` and give advice that needs no fagan-sr option.
    """
    try:
        return read_volume(str(resolve_volume_path(entry)))
    except InputError as exc:
        raise InputError(_data_error(entry, role, str(exc))) from None


def _data_error(entry: str, role: str, message: str) -> str:
    """``message`` of ``read_volume`` about ``entry``: prefixed with ``role`` and the entry, TRAINING_ADVICE applied."""
    for pattern, advice in TRAINING_ADVICE:
        message = pattern.sub(advice, message)
    subject = next((s for s in ("input ", f"folder {entry} ") if message.startswith(s)), None)
    if subject is not None:
        return f"{role} {entry} {message[len(subject):]}"
    return f"{role} {entry}: {message}"


def check_patch_size(cfg: FAGANConfig) -> None:
    """The HR patch must divide by the scale and give LR patches the network accepts."""
    patch, scale = cfg.data.patch_size, cfg.model.scale
    if patch % scale:
        raise ConfigError(f"data.patch_size {patch} is not a multiple of model.scale {scale}")
    if patch // scale < MIN_SLICE:
        raise ConfigError(
            f"data.patch_size {patch} gives {patch // scale}-pixel LR patches at x{scale}; "
            f"the network needs data.patch_size >= {MIN_SLICE * scale}"
        )
    if cfg.train.vgg_weights and patch < vgg_min_patch():  # the GAN phase's content loss would fail on its first patch
        raise ConfigError(f"data.patch_size {patch} is too small for the VGG content loss (train.vgg_weights): its "
                          f"features need patches of at least {vgg_min_patch()} pixels")


def prepare_data(cfg: FAGANConfig) -> PreparedData:
    """Read, split, slice and check all data; every problem is a one-line error before training."""
    check_patch_size(cfg)
    train_entries = expand_entries(cfg.data.train)
    val_entries: Optional[List[str]] = None
    if cfg.data.manifest:
        manifest_train, val_entries = read_manifest(cfg.data.manifest)
        train_entries += manifest_train
    if not train_entries:
        raise ConfigError("no training data: set data.train (files, folders or icbm152:t1) or data.manifest")
    for entries, where in ((train_entries, "data.train (with the manifest's train list)"), (val_entries or [], "the manifest's val list")):
        identities = [_identity(entry) for entry in entries]
        repeated = next((entry for index, entry in enumerate(entries) if identities[index] in identities[:index]), None)
        if repeated is not None:  # split by volume, one copy could land in training and the other in validation
            raise ConfigError(f"{where} lists the volume {repeated} more than once (directly or through a folder)")
    if val_entries is not None:
        overlap = sorted(set(map(_identity, train_entries)) & set(map(_identity, val_entries)))
        if overlap:
            raise ConfigError(f"volume {overlap[0]} is in both the training and the validation list")
        data = _from_lists(cfg, train_entries, val_entries)
    elif len(train_entries) == 1:
        data = _single_volume_split(cfg, train_entries[0])
    else:
        data = _volume_split(cfg, train_entries)
    if data.n_slices == 0:
        raise ConfigError(
            "no training slice has enough foreground (data.min_foreground_fraction "
            f"{cfg.data.min_foreground_fraction} of voxels above data.foreground_threshold {cfg.data.foreground_threshold})"
        )
    return data


def _identity(entry: str) -> str:
    return str(resolve_volume_path(entry).resolve())


def _from_lists(cfg: FAGANConfig, train: List[str], val: List[str]) -> PreparedData:
    volumes, digests = [], []
    for name in train:
        image = load_volume(name, "training volume")
        volumes.append(_train_volume(name, _slices(image, cfg.data.plane)[0], cfg))
        digests.append(voxel_digest(image))
    held_out = [_val_volume(name, load_volume(name, "validation volume"), cfg) for name in val]
    return PreparedData(volumes, held_out, {"mode": "manifest", "train": train, "val": val}, digests)


def _volume_split(cfg: FAGANConfig, entries: List[str]) -> PreparedData:
    """Hold out ``round(n * val_fraction)`` whole volumes (at least one when val_fraction > 0)."""
    n = len(entries)
    n_val = 0 if cfg.data.val_fraction == 0 else min(n - 1, max(1, round(n * cfg.data.val_fraction)))
    order = np.random.default_rng(cfg.train.seed % 2**32).permutation(n)
    val_ids = set(order[:n_val].tolist())
    train = [e for i, e in enumerate(entries) if i not in val_ids]
    val = [e for i, e in enumerate(entries) if i in val_ids]
    data = _from_lists(cfg, train, val)
    data.split["mode"] = "volumes"
    return data


def _single_volume_split(cfg: FAGANConfig, name: str) -> PreparedData:
    """Hold out a central slab (around the foreground's centre) with a gap on both sides."""
    image = load_volume(name, "training volume")
    slices, axes = _slices(image, cfg.data.plane)
    if cfg.data.val_fraction == 0:
        return PreparedData([_train_volume(name, slices, cfg)], [], {"mode": "none", "train": [name], "val": []}, [voxel_digest(image)])
    n = slices.shape[0]
    count = max(1, round(n * cfg.data.val_fraction))
    gap = max(2, n // 20)
    foreground = np.flatnonzero(_foreground_fraction(_normalise(slices, cfg), cfg.data) >= cfg.data.min_foreground_fraction)
    centre = (foreground[0] + foreground[-1] + 1) // 2 if foreground.size else n // 2
    start = int(min(max(centre - count // 2, 0), n - count))
    stop = start + count
    train_ranges = [r for r in ((0, start - gap), (stop + gap, n)) if r[1] > r[0]]
    if not train_ranges:
        raise ConfigError(
            f"{name} has {n} slices along the through-plane axis: too few to hold out a {count}-slice slab "
            f"with a {gap}-slice gap; set data.val_fraction=0 or add volumes"
        )
    through = 3 - sum(axes)
    size, index = list(image.GetSize()), [0, 0, 0]
    size[through], index[through] = count, start
    train_slices = np.concatenate([slices[a:b] for a, b in train_ranges])
    split = {
        "mode": "slabs",
        "train": [name],
        "val": [f"{name}[slices {start}-{stop - 1}]"],
        "through_plane_axis": through,
        "validation_slab": {"start": start, "stop": stop},
        "train_slabs": [list(r) for r in train_ranges],
        "gap": gap,
        "caveat": SINGLE_VOLUME_CAVEAT,
    }
    val = _val_volume(split["val"][0], sitk.RegionOfInterest(image, size, index), cfg, axes)
    return PreparedData([_train_volume(name, train_slices, cfg)], [val], split, [voxel_digest(image)])


def _slices(image: sitk.Image, plane: str) -> Tuple[np.ndarray, Tuple[int, int]]:
    """The volume as a (n, rows, cols) float32 stack of in-plane slices, and the in-plane axes.

    Always a copy: a float32 view of ``image`` would outlive the image's buffer once the caller
    drops it, and the training slices would read freed memory (NaN losses, irreproducible runs).
    """
    axes = plane_axes(image, plane)
    stack = SliceLayout.for_axes(axes).to_slices(sitk.GetArrayViewFromImage(image))
    return np.array(stack, dtype=np.float32, order="C", copy=True), axes


def _normalise(slices: np.ndarray, cfg: FAGANConfig) -> np.ndarray:
    return IntensityNormalizer.fit(slices, cfg.normalization).forward(slices)


def _foreground_fraction(normalised: np.ndarray, data: DataConfig) -> np.ndarray:
    return (normalised > data.foreground_threshold).mean(axis=(1, 2))


def _train_volume(name: str, slices: np.ndarray, cfg: FAGANConfig) -> TrainVolume:
    rows, cols = slices.shape[1:]
    if min(rows, cols) < cfg.data.patch_size:
        raise ConfigError(
            f"slices of {name} are {rows}x{cols} voxels, smaller than data.patch_size {cfg.data.patch_size}; "
            "lower data.patch_size"
        )
    normalised = _normalise(slices, cfg)
    kept = np.flatnonzero(_foreground_fraction(normalised, cfg.data) >= cfg.data.min_foreground_fraction)
    return TrainVolume(name, normalised, kept)


def _val_volume(name: str, image: sitk.Image, cfg: FAGANConfig, axes: Optional[Tuple[int, int]] = None) -> ValVolume:
    axes = axes or plane_axes(image, cfg.data.plane)
    scale = cfg.model.scale
    size = image.GetSize()
    if min(size[a] for a in axes) < MIN_SLICE * scale:
        raise ConfigError(
            f"validation volume {name} is {size[axes[0]]}x{size[axes[1]]} in-plane: too small for x{scale} "
            f"(needs at least {MIN_SLICE * scale} voxels)"
        )
    if not has_foreground(image, axes, scale):  # its PSNR would be NaN at the first validation, after the training began
        raise ConfigError(f"validation volume {name} has no foreground to score (blank or constant); give a volume with anatomy")
    return ValVolume(name, crop_to_multiple(image, scale, axes), axes)


def build_synthesizer(cfg: FAGANConfig, data: PreparedData) -> Optional[Any]:
    """The synthetic-slice source for ``data.synthetic_fraction > 0``, kept off any held-out template slab.

    The synthesizer draws from the ICBM152 template and its tissue maps. When the template is
    itself the (single) training volume, its validation slab and the gaps around it are excluded;
    a run that validates on the whole template cannot use synthetic data.
    """
    if cfg.data.synthetic_fraction <= 0:
        return None
    axes = plane_axes(load_volume(ICBM152_T1), cfg.data.plane)
    template = _identity(ICBM152_T1)  # the token or the template file's path, however spelled
    if "validation_slab" not in data.split and any(_identity(entry) == template for entry in data.split.get("val", [])):
        raise ConfigError("data.synthetic_fraction > 0 synthesises from the ICBM152 template, which is a validation volume here")
    indices = None
    if "validation_slab" in data.split and [_identity(entry) for entry in data.split["train"]] == [template]:
        indices = [i for start, stop in data.split["train_slabs"] for i in range(start, stop)]
    return SliceSynthesizer(cfg.data.synthesis, axes, indices)


def make_pair(
    image: np.ndarray, scale: int, data: DataConfig, rng: np.random.Generator
) -> Tuple[np.ndarray, np.ndarray]:
    """(HR patch (P, P), LR patch (P/s, P/s)) from one normalised 2D slice under a random acquisition.

    Resolution randomisation (``degradation.zoom``) and HR noise (``degradation.hr_noise``) are
    applied to the whole HR slice first, so the LR is made from what the target shows.
    """
    size = data.patch_size
    mix = data.degradation
    if mix.zoom[0] != 1.0 or mix.zoom[1] != 1.0:
        image = resample_slice(image, float(np.exp(rng.uniform(np.log(mix.zoom[0]), np.log(mix.zoom[1])))))
    if mix.hr_noise_probability > 0 and rng.random() < mix.hr_noise_probability:
        image = add_rician_noise(image, float(rng.uniform(*mix.hr_noise)), rng)
    rows, cols = (max(n, size) for n in image.shape)
    if (rows, cols) != image.shape:  # pad small slices with background
        image = np.pad(image, ((0, rows - image.shape[0]), (0, cols - image.shape[1])))
    hr = np.ascontiguousarray(image[: rows - rows % scale, : cols - cols % scale], dtype=np.float32)
    lr = degrade(hr, scale, random_acquisition(rng, data.degradation), rng)
    top, left = _patch_position(hr, size, scale, data, rng)
    hr_patch = hr[top : top + size, left : left + size]
    lr_patch = lr[top // scale : (top + size) // scale, left // scale : (left + size) // scale]
    return hr_patch, lr_patch


def _patch_position(hr: np.ndarray, size: int, scale: int, data: DataConfig, rng: np.random.Generator) -> Tuple[int, int]:
    """A random patch corner on the LR grid; up to PATCH_TRIES positions are tried for enough foreground."""
    rows, cols = hr.shape
    top = left = 0
    for _ in range(PATCH_TRIES):
        top = int(rng.integers((rows - size) // scale + 1)) * scale
        left = int(rng.integers((cols - size) // scale + 1)) * scale
        patch = hr[top : top + size, left : left + size]
        if (patch > data.foreground_threshold).mean() >= data.min_foreground_fraction:
            break
    return top, left


class PatchDataset(Dataset):
    """Index ``i`` → (HR patch (1, P, P), LR patch (1, P/s, P/s)), a pure function of (seed, i)."""

    def __init__(
        self, volumes: List[TrainVolume], data: DataConfig, scale: int, seed: int, synthesizer: Optional[Any] = None
    ) -> None:
        self.volumes = volumes
        self.pairs = np.array([(v, s) for v, vol in enumerate(volumes) for s in vol.kept], dtype=np.int64)
        self.data = data
        self.scale = scale
        self.seed = seed % 2**32
        self.synthesizer = synthesizer

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(index)])
        if self.synthesizer is not None and rng.random() < self.data.synthetic_fraction:
            image = self.synthesizer.sample(rng)[0]
        else:
            volume, slice_index = self.pairs[rng.integers(len(self.pairs))]
            image = self.volumes[volume].slices[slice_index]
        if self.data.augment:
            image = np.rot90(image, int(rng.integers(4)))
            if rng.random() < 0.5:
                image = image[:, ::-1]
            image = image * np.float32(rng.uniform(*INTENSITY_RANGE))
        hr, lr = make_pair(np.asarray(image, dtype=np.float32), self.scale, self.data, rng)
        return torch.from_numpy(np.ascontiguousarray(hr))[None], torch.from_numpy(np.ascontiguousarray(lr))[None]


class IterationBatchSampler:
    """Sample indices of iterations ``start..stop-1``: iteration t covers ``t*B .. t*B+B-1``.

    Under DDP rank r takes its own contiguous shard of every global batch, so the ranks see
    disjoint samples (the role of DistributedSampler) and the global batch does not depend on
    the number of processes.
    """

    def __init__(self, start: int, stop: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.start, self.stop = start, stop
        self.batch_size = batch_size
        self.per_rank = batch_size // world_size
        self.offset = rank * self.per_rank

    def __iter__(self):  # type: ignore[no-untyped-def]
        for iteration in range(self.start, self.stop):
            first = iteration * self.batch_size + self.offset
            yield list(range(first, first + self.per_rank))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def build_loader(
    dataset: PatchDataset, sampler: IterationBatchSampler, num_workers: int, pin_memory: bool
) -> DataLoader:
    """DataLoader over ``sampler`` with worker processes and pinned memory (CUDA)."""
    return DataLoader(
        dataset, batch_sampler=sampler, num_workers=num_workers, pin_memory=pin_memory, worker_init_fn=ignore_stop_signals
    )


def ignore_stop_signals(worker_id: int) -> None:
    """A DataLoader worker ignores SIGTERM and SIGINT: a stop sent to the process group is the main process's.

    The Slicer module's Stop (``killpg``), job schedulers and Ctrl-C signal every process of the group; torch's
    worker handler dies of a SIGTERM not sent by its parent, and the main process then fails with "DataLoader
    worker ... is killed by signal" instead of saving its state. The main process stops gracefully and shuts its
    workers down (a worker also exits when its parent is gone).
    """
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
