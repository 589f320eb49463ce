"""Self-supervised fitting of the through-plane generator, and its pretraining on synthetic slices.

Training pairs (SMORE-style, with the engine's one forward model): an in-plane patch of the scan is
high resolution along both of its axes; degrading it along one in-plane axis with the scan's slice
profile (``forward_model.slice_profile_matrix``: a box of the slice thickness, optionally
Gaussian-edged, sampled at the slice spacing, in in-plane pixels) gives a thick-slice input whose
target is the patch itself. Both in-plane directions are used (alternating batches), so the
network sees the two orientations it is later applied to.

Pretraining (``pretrain``, recipes in ``configs/through_plane_pretrain*.yaml``) does the same on
synthetic HR slices (``synthesis.SliceSynthesizer``: template, synthetic brain contrasts, random
shapes) with random slice spacings, thicknesses (gaps) and edges, so the per-scan fit starts from
weights that already know thick-slice blur and converges in few iterations.

The loss is L1 (a PSNR-oriented fit, as the GAN's pixel pre-training phase; no adversarial term:
a per-scan fit of a few hundred steps has no room for one). Patches are drawn uniformly (with a
foreground check) or, ``FitConfig.sampling="gradient"``, with probability proportional to their
gradient magnitude (measured no better on the real development volumes; docs/thick-slices.md). ``fit`` checks ``stop()`` and calls
``progress`` between iterations; a stop raises ``FitCancelled`` (a ``KeyboardInterrupt``) so the
CLI's cancel path leaves no output.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from fagan_engine.models.checkpoint import THROUGH_PLANE_FORMAT, THROUGH_PLANE_KEY, read_through_plane
from fagan_engine.mri.forward_model import add_rician_noise, resample_slice, slice_profile_matrix
from fagan_engine.mri.synthesis import SliceSynthesizer
from fagan_engine.through_plane.plan import ThroughPlanePlan, bspline_matrix
from fagan_engine.util.atomic import atomic_write_bytes, prepare_output_folder
from fagan_engine.util.config import (
    PLANES,
    SynthesisConfig,
    check_choice,
    check_interval,
    check_learning_rate,
    check_range_pair,
    check_seed,
    read_config_mapping,
    section_from_dict,
)
from fagan_engine.util.errors import CheckpointError, ConfigError, OutputError
from fagan_engine.util.locking import RunFolderLock
from fagan_engine.util.progress import FitCancelled, call_progress
from fagan_engine.util.tensor_digest import names_and_bytes_digest

SAMPLINGS = ("uniform", "gradient")
MIN_DIRECTION_RATIO = 1.25
"""An in-plane direction whose pixel is not this much finer than the slice spacing gives no pairs."""


@dataclass
class FitConfig:
    """Per-scan fit (and pretraining) hyper-parameters; the defaults are the per-scan recipe measured in
    docs/thick-slices.md: 600 steps (round 2: +0.10 dB at x2 over 300 on the real development volumes) at lr 1e-4
    (round 3: from the realistic pretrained start, 1e-3 undid part of the start; 1e-4 was best at x4 and equal at x2)."""

    iterations: int = 600
    """Adam steps; a cancel stops the fit and raises ``FitCancelled``."""
    batch_size: int = 12
    """Patches per step; successive steps alternate between the in-plane directions."""
    lr: float = 1e-4
    lr_final_fraction: float = 0.1
    """Cosine decay of the learning rate to this fraction of ``lr`` at the last iteration."""
    lr_rows: int = 12
    """Input (thick-slice) rows per training patch; the HR patch has about lr_rows·ratio rows."""
    patch_cols: int = 64
    """Columns per training patch (along the undegraded in-plane axis)."""
    max_hr_rows: int = 96
    """Cap on the HR rows of a patch, so a large slice ratio does not make huge patches."""
    seed: int = 0
    """Seed of torch and of the patch sampler."""
    foreground_tries: int = 8
    """Uniform draws per patch before one below the foreground threshold is kept anyway."""
    sampling: str = "uniform"
    """Patch positions: ``uniform`` (foreground-checked) or ``gradient`` (probability ∝ the patch's summed gradient magnitude)."""


# ---------------------------------------------------------------------------- training pairs


@dataclass
class Direction:
    """One in-plane direction of a scan: slices laid out so rows are degraded (HR rows → LR rows)."""

    images: np.ndarray  # (n, rows, cols) normalised float32, rows along the degraded in-plane axis
    ratio: float  # slice spacing in row pixels
    thickness: float  # in row pixels
    edge_sigma: float  # in row pixels
    n_lr: int = 0
    hr_rows: int = 0
    profile: Optional[np.ndarray] = None  # (n_lr, hr_rows)
    base: Optional[np.ndarray] = None  # (hr_rows, n_lr): B-spline back to the HR rows

    def prepare(self, lr_rows: int, max_hr_rows: int) -> "Direction":
        rows = self.images.shape[1]
        n_lr = max(2, min(lr_rows, int(math.floor(min(rows, max_hr_rows) / self.ratio))))
        hr_rows = int(round(n_lr * self.ratio))
        if hr_rows > rows:  # tiny images: fewer LR rows
            n_lr = max(1, int(math.floor(rows / self.ratio)))
            hr_rows = min(rows, int(round(n_lr * self.ratio)))
        self.n_lr, self.hr_rows = n_lr, hr_rows
        effective = hr_rows / n_lr  # exact grid: the LR rows cover the HR rows exactly
        self.profile = slice_profile_matrix(hr_rows, n_lr, effective, self.thickness, self.edge_sigma).astype(np.float32)
        self.base = bspline_matrix(n_lr, hr_rows).astype(np.float32)
        return self

    def pairs(self, patches: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(input, base, target) network batches, (b, 1, rows, cols) float32, of HR ``patches`` (b, hr_rows, cols):
        the thick-slice input by the slice profile, its B-spline back to the HR rows, the patches themselves."""
        lr = np.einsum("ij,bjk->bik", self.profile, patches)
        base = np.einsum("ij,bjk->bik", self.base, lr)
        return lr[:, None].astype(np.float32), base[:, None].astype(np.float32), patches[:, None].astype(np.float32)


class PairSampler:
    """Random (input, base, target) batches from one or more ``Direction``s, alternating between them."""

    def __init__(self, directions: Sequence[Direction], cfg: FitConfig, rng: np.random.Generator) -> None:
        self.directions = [d.prepare(cfg.lr_rows, cfg.max_hr_rows) for d in directions]
        self.cfg = cfg
        self.rng = rng
        self.turn = 0
        self.thresholds = [0.05 * float(np.percentile(d.images, 99)) for d in self.directions]
        if cfg.sampling not in SAMPLINGS:
            raise ConfigError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {cfg.sampling!r}")
        self.cumulative = [gradient_cdf(d, cfg.patch_cols) for d in self.directions] if cfg.sampling == "gradient" else None

    def position(self, k: int) -> Tuple[int, int, int]:
        """(slice, top, left) of a patch of direction ``k``: uniform with a foreground check, or gradient-weighted."""
        d = self.directions[k]
        n, rows, cols = d.images.shape
        width = min(self.cfg.patch_cols, cols)
        if self.cumulative is not None:
            flat = int(np.searchsorted(self.cumulative[k], self.rng.random() * self.cumulative[k][-1], side="right"))
            i, rest = divmod(min(flat, self.cumulative[k].size - 1), (rows - d.hr_rows + 1) * (cols - width + 1))
            top, left = divmod(rest, cols - width + 1)
            return i, top, left
        for _ in range(self.cfg.foreground_tries):
            i = int(self.rng.integers(n))
            top = int(self.rng.integers(rows - d.hr_rows + 1))
            left = int(self.rng.integers(cols - width + 1))
            if d.images[i, top : top + d.hr_rows, left : left + width].mean() > self.thresholds[k]:
                break
        return i, top, left

    def batch(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = self.turn % len(self.directions)
        self.turn += 1
        d = self.directions[k]
        n, rows, cols = d.images.shape
        width = min(self.cfg.patch_cols, cols)
        patches = np.empty((self.cfg.batch_size, d.hr_rows, width), dtype=np.float32)
        for b in range(self.cfg.batch_size):
            i, top, left = self.position(k)
            patch = d.images[i, top : top + d.hr_rows, left : left + width]
            if self.rng.random() < 0.5:
                patch = patch[::-1]
            if self.rng.random() < 0.5:
                patch = patch[:, ::-1]
            patches[b] = patch
        return d.pairs(patches)


def gradient_cdf(direction: Direction, patch_cols: int) -> np.ndarray:
    """Cumulative sampling weights of every patch position of ``direction`` (flattened (slice, top, left)):
    the patch's summed in-plane gradient magnitude (SMORE/ECLARE's gradient-weighted sampling)."""
    images = direction.images.astype(np.float64)
    grad = np.hypot(np.gradient(images, axis=1), np.gradient(images, axis=2))
    n, rows, cols = images.shape
    width = min(patch_cols, cols)
    table = np.zeros((n, rows + 1, cols + 1))
    table[:, 1:, 1:] = grad.cumsum(axis=1).cumsum(axis=2)
    h = direction.hr_rows
    sums = table[:, h:, width:] - table[:, :-h, width:] - table[:, h:, :-width] + table[:, :-h, :-width]
    return np.cumsum(np.maximum(sums, 0).ravel() + 1e-12)


def scan_directions(volume01: np.ndarray, plan: ThroughPlanePlan) -> List[Direction]:
    """The training directions of a scan: its in-plane slices, degraded along each fine in-plane axis.

    ``volume01`` is the normalised (z, y, x) array of the scan. An in-plane axis whose spacing is
    not ``MIN_DIRECTION_RATIO`` finer than the slice spacing is skipped.
    """
    through = 2 - plan.axis
    slices = np.moveaxis(volume01, through, 0)  # (n_in, A, B), A < B in numpy order
    np_in_plane = sorted(2 - a for a in plan.in_plane_axes)  # numpy axes A, B
    spacing_of = {2 - a: s for a, s in zip(plan.in_plane_axes, plan.in_plane_spacing)}
    directions = []
    for rows_axis, images in ((np_in_plane[0], slices), (np_in_plane[1], np.swapaxes(slices, 1, 2))):
        pixel = spacing_of[rows_axis]
        ratio = plan.input_spacing / pixel
        if ratio < MIN_DIRECTION_RATIO or images.shape[1] < 2 * ratio:
            continue
        directions.append(
            Direction(np.ascontiguousarray(images, dtype=np.float32), ratio, plan.thickness / pixel, plan.edge_sigma / pixel)
        )
    return directions


# ---------------------------------------------------------------------------- the fit


def cosine_lr(cfg: FitConfig, step: int, total: int) -> float:
    t = step / max(total - 1, 1)
    floor = cfg.lr_final_fraction
    return cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


CHECK_EVERY = 100
"""Fit steps between two scores on the held-out pairs (``held_out.HeldOutPairs``)."""
PATIENCE = 2
"""Checks without improvement on the held-out pairs before the fit stops."""


@dataclass
class FitOutcome:
    """What one fit did: steps run, the step whose weights were kept (0: the start) and the held-out MSEs."""

    steps: int
    best_step: int
    held_out_start: Optional[float] = None
    held_out_best: Optional[float] = None
    stopped: str = "iterations"
    """``iterations`` (ran them all), ``no improvement`` (``PATIENCE`` checks without one), ``diverged`` (a loss that is
    not finite: the best weights seen are kept) or ``no held-out slices``."""

    def summary(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def fit(
    model: Any,
    sampler: Any,
    cfg: FitConfig,
    device: str = "cpu",
    progress: Optional[Callable[..., None]] = None,
    stop: Optional[Callable[[], bool]] = None,
    log: Optional[List[Dict[str, float]]] = None,
    held_out: Optional[Callable[[Any], float]] = None,
) -> FitOutcome:
    """Train ``model`` in place with L1 steps on ``sampler.batch()``, at most ``cfg.iterations``; leaves it in eval mode.

    With ``held_out`` (a model's error on held-out pairs, lower is better) the model is scored before the first
    step and every ``CHECK_EVERY`` steps; the fit stops after ``PATIENCE`` checks without improvement, or on a loss that
    is not finite, and the model ends with the best weights seen (the start when none improved on it). Without it, a
    loss that is not finite is a ConfigError (pretraining: lower the learning rate).
    ``stop()`` is checked before every iteration; when it returns True, ``FitCancelled`` is raised.
    ``progress(done, total, phase="fit", loss=...)`` is called after every iteration.
    """
    import torch  # lazy: keeps torch out of this module's import

    total = cfg.iterations
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    running = None
    outcome = FitOutcome(steps=0, best_step=0)
    best_state = None
    if held_out is not None:
        outcome.held_out_start = outcome.held_out_best = held_out(model)
        best_state = copy.deepcopy(model.state_dict())
    since_best = 0
    for step in range(total):
        if stop is not None and stop():
            raise FitCancelled("through-plane fit cancelled")
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(cfg, step, total)
        lr, base, target = (torch.from_numpy(a).to(device) for a in sampler.batch())
        loss = (model(lr, base) - target).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        if not math.isfinite(value):  # a per-scan fit keeps its best weights; pretraining has none to keep
            if held_out is None:
                raise ConfigError(f"through-plane fit diverged (loss {value}) at iteration {step + 1}; lower fit.lr")
            outcome.stopped = "diverged"
            break
        running = value if running is None else 0.9 * running + 0.1 * value
        outcome.steps = step + 1
        if log is not None:
            log.append({"iteration": step + 1, "loss": value})
        call_progress(progress, step + 1, total, "fit", running)
        if held_out is not None and ((step + 1) % CHECK_EVERY == 0 or step + 1 == total):
            score = held_out(model)
            if score < outcome.held_out_best:
                outcome.held_out_best, outcome.best_step, since_best = score, step + 1, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                since_best += 1
                if since_best >= PATIENCE and step + 1 < total:
                    outcome.stopped = "no improvement"
                    break
    if held_out is None:
        outcome.best_step = outcome.steps
    elif outcome.best_step != outcome.steps or outcome.stopped == "diverged":
        model.load_state_dict(best_state)
    if outcome.stopped in ("no improvement", "diverged") and progress is not None:
        call_progress(progress, total, total, "fit", running)
    model.eval()
    return outcome


# ---------------------------------------------------------------------------- weights


def build_model(model_cfg: Any = None) -> Any:
    from fagan_engine.models.archs.through_plane import ThroughPlaneGenerator, ThroughPlaneModelConfig  # lazy: models.archs imports torch

    return ThroughPlaneGenerator(model_cfg or ThroughPlaneModelConfig())


def save_weights(path: Path, model: Any, training: Dict[str, Any]) -> Path:
    """Write ``path`` (.safetensors, metadata in the header) and the readable ``.json`` beside it."""
    from safetensors.torch import save  # lazy: safetensors.torch imports torch

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": THROUGH_PLANE_FORMAT,
        "model": model.cfg.to_dict(),
        "normalization": {"low_percentile": 0.5, "high_percentile": 99.5},
        "training": training,
        "tensors_sha256": names_and_bytes_digest({name: tensor.numpy().tobytes() for name, tensor in tensors.items()}),
    }
    text = json.dumps(metadata, indent=2, sort_keys=True)
    path = Path(path)
    atomic_write_bytes(path, save(tensors, metadata={THROUGH_PLANE_KEY: text}))
    atomic_write_bytes(path.with_suffix(".json"), (text + "\n").encode())
    return path


def load_weights(path: Optional[Path] = None, device: str = "cpu", ratio: Optional[float] = None) -> Tuple[Any, Dict[str, Any]]:
    """(model, metadata) of a through-plane checkpoint (by default the bundled start for ``ratio``), checksum-verified
    (``models.checkpoint.read_through_plane``); the tensors come from the verified bytes, not a second read."""
    from safetensors.torch import load as load_tensors  # lazy: safetensors.torch imports torch

    from fagan_engine.models.archs.through_plane import ThroughPlaneModelConfig  # lazy: models.archs imports torch

    weights = read_through_plane(path, ratio)
    name = weights.path.name
    try:
        model = build_model(ThroughPlaneModelConfig.from_dict(weights.metadata["model"]))
    except (ConfigError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{name} has an invalid through-plane architecture: {exc}") from None
    try:
        model.load_state_dict(load_tensors(weights.blob), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"cannot load {name}: {str(exc).splitlines()[0]}") from None
    return model.to(device).eval(), weights.metadata


# ---------------------------------------------------------------------------- pretraining


@dataclass
class PretrainConfig:
    """A pretraining recipe (``configs/through_plane_pretrain*.yaml``; the bundled weights: ``..._continued.yaml``)."""

    model: Dict[str, Any] = field(default_factory=dict)
    fit: Dict[str, Any] = field(default_factory=dict)
    pool_size: int = 400
    """Synthetic HR slices drawn once, then cropped, flipped and transposed at random."""
    ratio: Tuple[float, float] = (1.5, 6.0)
    """Slice spacing range, in HR pixels (drawn per batch)."""
    gap_probability: float = 0.4
    gap_fraction: Tuple[float, float] = (0.05, 0.35)
    """Gap as a fraction of the spacing, when there is one."""
    edge_probability: float = 0.3
    edge_sigma: Tuple[float, float] = (0.1, 0.6)
    """Gaussian edge of the profile, in HR pixels, when there is one."""
    synthesis: Dict[str, Any] = field(default_factory=dict)
    zoom: Tuple[float, float] = (1.0, 1.0)
    """Resolution randomisation: each pool slice is resampled by a log-uniform factor in this range
    (``forward_model.resample_slice``; 0.5 makes the template's 1 mm pixels 2 mm)."""
    hr_noise_probability: float = 0.0
    hr_noise: Tuple[float, float] = (0.005, 0.05)
    """Rician noise (``forward_model.add_rician_noise``, fresh per draw, relative to the slice's robust
    maximum) added to a drawn slice with ``hr_noise_probability``: the thick slices are then made from
    the noisy slice, as a scan's own slices are."""
    plane: str = "axial"
    validation_slab: Tuple[int, int] = (63, 101)
    """Template slices (along the plane's axis) never drawn: the bundled in-plane models' held-out slab."""
    output: str = "fagan_engine/checkpoints/fagan_through_plane.safetensors"
    init: Optional[str] = None
    """A through-plane checkpoint to continue from (its architecture must be ``model``'s); None: random weights."""


class SyntheticSampler:
    """Pretraining batches: synthetic HR slices, a random slice profile per batch."""

    def __init__(self, pool: List[np.ndarray], cfg: PretrainConfig, fit_cfg: FitConfig, rng: np.random.Generator) -> None:
        self.pool, self.cfg, self.fit_cfg, self.rng = pool, cfg, fit_cfg, rng

    def batch(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng, cfg = self.rng, self.cfg
        ratio = float(rng.uniform(*cfg.ratio))
        thickness = ratio
        if rng.random() < cfg.gap_probability:
            thickness = ratio * (1 - float(rng.uniform(*cfg.gap_fraction)))
        sigma = float(rng.uniform(*cfg.edge_sigma)) if rng.random() < cfg.edge_probability else 0.0
        images = []
        for _ in range(self.fit_cfg.batch_size):
            image = self.pool[int(rng.integers(len(self.pool)))]
            if cfg.hr_noise_probability > 0 and rng.random() < cfg.hr_noise_probability:
                image = add_rician_noise(image, float(rng.uniform(*cfg.hr_noise)), rng)
            if rng.random() < 0.5:
                image = image.T
            images.append(image)
        rows = min(min(i.shape[0] for i in images), self.fit_cfg.max_hr_rows)
        cols = min(min(i.shape[1] for i in images), self.fit_cfg.patch_cols)
        direction = Direction(np.zeros((1, rows, cols), np.float32), ratio, thickness, sigma).prepare(
            self.fit_cfg.lr_rows, self.fit_cfg.max_hr_rows
        )
        patches = np.empty((len(images), direction.hr_rows, cols), np.float32)
        for b, image in enumerate(images):
            for _ in range(self.fit_cfg.foreground_tries):
                top = int(rng.integers(image.shape[0] - direction.hr_rows + 1))
                left = int(rng.integers(image.shape[1] - cols + 1))
                patch = image[top : top + direction.hr_rows, left : left + cols]
                if patch.mean() > 0.05:
                    break
            patch = patch[::-1] if rng.random() < 0.5 else patch
            patches[b] = patch[:, ::-1] if rng.random() < 0.5 else patch
        return direction.pairs(patches)


RECIPE_RANGES = {  # recipe key: (lowest, highest, open or closed ends) of both values of its [low, high] pair
    "ratio": (1.0, math.inf, "()"),
    "gap_fraction": (0.0, 1.0, "[)"),
    "edge_sigma": (0.0, math.inf, "[)"),
    "validation_slab": (0, math.inf, "[)"),
    "zoom": (0.0, math.inf, "()"),
    "hr_noise": (0.0, math.inf, "[)"),
}
RECIPE_PROBABILITIES = ("gap_probability", "edge_probability", "hr_noise_probability")
FIT_MINIMA = {"iterations": 1, "batch_size": 1, "lr_rows": 2, "patch_cols": 1, "max_hr_rows": 1, "foreground_tries": 1}
"""The least whole number of each count of a recipe's ``fit`` section."""


def load_pretrain_config(path: Path) -> PretrainConfig:
    """The recipe at ``path``, every section and key checked: a one-line ConfigError naming the key as the recipe spells
    it (unknown, wrong type, out of range) otherwise."""
    data = read_config_mapping(path)
    try:
        cfg = section_from_dict(PretrainConfig, data, "")
        check_recipe(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return cfg


def check_recipe(cfg: PretrainConfig) -> None:
    """Refuse the first value of a parsed recipe that is out of range, section by section."""
    for key, (low, high, ends) in RECIPE_RANGES.items():
        check_range_pair(key, getattr(cfg, key), low, high, ends)
    for key in RECIPE_PROBABILITIES:
        check_interval(key, getattr(cfg, key), 0.0, 1.0)
    check_interval("pool_size", cfg.pool_size, 1, math.inf, "[)")
    check_choice("plane", cfg.plane, PLANES)
    recipe_model(cfg)
    check_fit_section(cfg.fit)
    section_from_dict(SynthesisConfig, cfg.synthesis, "synthesis.").validate("synthesis.")


def recipe_model(cfg: PretrainConfig) -> Any:
    """The recipe's through-plane architecture (``ThroughPlaneModelConfig``); ConfigError naming a bad ``model.`` key."""
    from fagan_engine.models.archs.through_plane import ThroughPlaneModelConfig  # lazy: models.archs imports torch

    return section_from_dict(ThroughPlaneModelConfig, cfg.model, "model.").validate()


def check_fit_section(values: Dict[str, Any]) -> None:
    """Refuse in one line a recipe's ``fit`` section with an unknown key, a wrong type or a value out of range."""
    fit = section_from_dict(FitConfig, values, "fit.")
    for key, least in FIT_MINIMA.items():
        check_interval(f"fit.{key}", getattr(fit, key), least, math.inf, "[)")
    check_learning_rate("fit.lr", fit.lr)
    check_interval("fit.lr_final_fraction", fit.lr_final_fraction, 0.0, 1.0)
    check_seed("fit.seed", fit.seed)
    check_choice("fit.sampling", fit.sampling, SAMPLINGS)


def synthetic_pool(cfg: PretrainConfig, rng: np.random.Generator) -> List[np.ndarray]:
    probe = SliceSynthesizer(SynthesisConfig(**cfg.synthesis), cfg.plane)
    held = set(range(*cfg.validation_slab))
    usable = [i for i in range(probe.n_slices) if i not in held]
    if not usable:
        raise ConfigError(f"validation_slab {list(cfg.validation_slab)} holds every one of the template's {probe.n_slices} "
                          f"{cfg.plane} slices: nothing is left to pretrain on")
    synthesizer = SliceSynthesizer(SynthesisConfig(**cfg.synthesis), cfg.plane, slice_indices=usable)
    pool = [synthesizer.sample(rng)[0] for _ in range(cfg.pool_size)]
    if cfg.zoom == (1.0, 1.0):
        return pool
    low, high = np.log(cfg.zoom[0]), np.log(cfg.zoom[1])
    return [resample_slice(image, float(np.exp(rng.uniform(low, high)))) for image in pool]


def continued_model(init: Path, model_cfg: Any) -> Any:
    """The checkpoint ``init``'s model in training mode, refused in one line unless its architecture is ``model_cfg``."""
    model, metadata = load_weights(init)
    if metadata["model"] != model_cfg.to_dict():
        raise ConfigError(f"init {init} is a different through-plane architecture than the recipe's model: {metadata['model']}")
    return model.train()


def pretrain(config_path: Path, progress: Optional[Callable[..., None]] = None, force: bool = False) -> Path:
    """Train the bundled through-plane weights from ``config_path``; returns the written path. An existing output (or
    its .json) is replaced only with ``force``. A refused, failed or interrupted run leaves no folder it created: the
    output folder's lock (``util.locking.RunFolderLock``) creates it and removes it again unless the weights are in it."""
    cfg = load_pretrain_config(config_path)
    output = Path(cfg.output)
    with RunFolderLock(output.parent, "output folder", name=f".{output.name}.lock", remove=True, label=f"output {output}"):
        check_output(output, config_path, force)
        return save_weights(output, *pretrained_model(cfg, config_path, progress))


def check_output(output: Path, config_path: Path, force: bool) -> None:
    """Refuse, before any work, an output that is a folder or unwritable, is not .safetensors, or (without ``force``)
    exists, it or its .json."""
    prepare_output_folder(output)
    if output.suffix != ".safetensors":
        raise ConfigError(f"{config_path}: output must name a .safetensors file (its .json is written beside it), got {output}")
    taken = [p for p in (output, output.with_suffix(".json")) if p.exists()]
    if taken and not force:
        raise OutputError(f"{taken[0]} already exists; pass --force to replace it")


def pretrained_model(cfg: PretrainConfig, config_path: Path, progress: Optional[Callable[..., None]]) -> Tuple[Any, Dict[str, Any]]:
    """The model the recipe ``cfg`` trains, and its training summary for the metadata."""
    import torch  # lazy: keeps torch out of this module's import

    fit_cfg = FitConfig(**cfg.fit)  # checked by load_pretrain_config
    torch.manual_seed(fit_cfg.seed)
    rng = np.random.default_rng(fit_cfg.seed)
    model_cfg = recipe_model(cfg)
    start = continued_model(Path(cfg.init), model_cfg) if cfg.init is not None else None  # refused before the pool
    started = time.time()
    pool = synthetic_pool(cfg, rng)
    pool_seconds = time.time() - started
    model = start if start is not None else build_model(model_cfg)
    log: List[Dict[str, float]] = []
    fit(model, SyntheticSampler(pool, cfg, fit_cfg, rng), fit_cfg, progress=progress, log=log)
    losses = [entry["loss"] for entry in log]
    tail = losses[-100:] if losses else [float("nan")]
    training = {
        "recipe": str(config_path),
        "config": dataclasses.asdict(cfg),
        "threads": torch.get_num_threads(),
        "pool_seconds": round(pool_seconds, 1),
        "seconds": round(time.time() - started, 1),
        "final_l1_last100": float(np.mean(tail)),
        "torch": torch.__version__,
    }
    return model, training

