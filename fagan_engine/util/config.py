"""The one configuration shared by the CLI, the Slicer modules, the trainer and checkpoint metadata.

``FAGANConfig`` groups four sections. ``ModelConfig`` and ``NormalizationConfig`` are stored
in every checkpoint, so a checkpoint alone is enough to rebuild the network and its intensity
convention. ``DataConfig`` and ``TrainConfig`` describe a training run and are stored in the
run folder and, summarised, in the checkpoint's training summary.

All values are plain JSON types. ``from_dict`` rejects unknown keys and wrong types with a
``ConfigError`` naming the offending key, so mistakes surface before any work starts.
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from fagan_engine.util.errors import ConfigError

SCALES = (2, 4, 8)
PRESET_SWITCHES: Dict[str, Dict[str, Any]] = {
    name: {"use_lffb": True, "use_ca": True, "use_sa": True, "fusion": "weighted", **switches}
    for name, switches in (
        ("fagan", {}),
        ("srgan", {"use_lffb": False, "use_ca": False, "use_sa": False}),
        ("ca-srgan", {"use_lffb": False, "use_sa": False}),
        ("sa-srgan", {"use_lffb": False, "use_ca": False}),
        ("fagan-no-sa", {"use_sa": False}),
        ("fagan-no-ca", {"use_ca": False}),
        ("fagan-no-lffb", {"use_lffb": False}),
        ("fagan-direct-fusion", {"fusion": "direct"}),
    )
}
"""The switches each preset fixes: the paper's methods and ablations are one architecture."""
PRESETS = tuple(PRESET_SWITCHES)
PLANES = ("auto", "axial", "coronal", "sagittal")
MODEL_SIZE_LIMITS = {"n_feats": 1024, "n_blocks": 256, "ca_reduction": 1024, "d_feats": 1024}
"""Upper bounds (64x and more above the defaults): a crafted checkpoint cannot ask for a 150 GB model."""
ACQUISITIONS = ("kspace", "bicubic", "gaussian")
"""The in-plane acquisition models of ``forward_model``."""
WINDOWS = ("none", "hamming", "tukey", "fermi")
"""The k-space apodisation filters of ``forward_model``."""
ATTENTION_PLACEMENTS = ("lr", "hr")
FUSIONS = ("weighted", "direct")
FLOAT32_TINY = 1.1754943508222875e-38
FLOAT32_MAX = 3.4028234663852886e38
"""The smallest normal and the largest float32: learning rates and loss weights scale float32 tensors."""
SEED_LIMIT = 2**32
"""Seeds are whole numbers below this (numpy's seeds; larger ones repeated the streams of smaller ones)."""
LOSS_WEIGHTS = ("pixel_weight", "perceptual_weight", "adversarial_weight", "overshoot_weight", "highband_weight")


@dataclass
class AttentionConfig:
    """The global feature fusion (GFFB) settings of both generators: ``ModelConfig`` (in-plane) and
    ``models.archs.through_plane.ThroughPlaneModelConfig``. Stored flat with the other fields."""

    use_ca: bool = True
    use_sa: bool = True
    fusion: str = "weighted"
    fusion_alpha: float = 0.5
    fusion_beta: float = 0.5
    fusion_eps: float = 1e-3
    ca_reduction: int = 16
    attention_pool: bool = True

    def check_fusion(self) -> None:
        """ConfigError (naming ``model.<key>``) on an impossible fusion: an unknown kind, weights that are not finite,
        or an epsilon that is not a finite number > 0."""
        check_choice("model.fusion", self.fusion, FUSIONS)
        for name in ("fusion_alpha", "fusion_beta"):
            if not _is_finite_number(getattr(self, name)):
                raise ConfigError(f"model.{name} must be a finite number, got {getattr(self, name)!r}")
        check_interval("model.fusion_eps", self.fusion_eps, 0.0, FLOAT32_MAX, "(]")


@dataclass
class ModelConfig(AttentionConfig):
    """Generator/discriminator architecture. Presets are switch settings of this one class."""

    preset: str = "fagan"
    scale: int = 4
    n_feats: int = 32
    n_blocks: int = 4
    use_lffb: bool = True
    attention_placement: str = "lr"
    image_residual: bool = True
    d_feats: int = 32
    d_spectral_norm: bool = True

    def validate(self) -> None:
        """Raise ConfigError on impossible values."""
        check_choice("model.scale", self.scale, SCALES)
        check_choice("model.preset", self.preset, PRESETS)
        for key, value in PRESET_SWITCHES[self.preset].items():
            if getattr(self, key) != value:
                raise ConfigError(
                    f"model.{key}={getattr(self, key)!r} contradicts preset {self.preset!r}, which sets {key}={value!r}"
                )
        self.check_fusion()
        check_choice("model.attention_placement", self.attention_placement, ATTENTION_PLACEMENTS)
        for name in ("n_feats", "n_blocks", "ca_reduction", "d_feats"):
            if not 1 <= getattr(self, name) <= MODEL_SIZE_LIMITS[name]:
                raise ConfigError(f"model.{name} must be in [1, {MODEL_SIZE_LIMITS[name]}], got {getattr(self, name)}")
        if self.n_feats < 8 and self.use_sa:
            raise ConfigError("model.n_feats must be >= 8 when self-attention is on (f, g project to C/8)")


@dataclass
class NormalizationConfig:
    """Per-volume robust intensity normalisation: percentiles of the volume map to [0, 1]."""

    low_percentile: float = 0.5
    high_percentile: float = 99.5

    def validate(self) -> None:
        if not 0.0 <= self.low_percentile < self.high_percentile <= 100.0:
            raise ConfigError(
                "normalization percentiles must satisfy 0 <= low < high <= 100, got "
                f"{self.low_percentile}, {self.high_percentile}"
            )


@dataclass
class DegradationConfig:
    """How each training pair's LR is made: a random acquisition drawn per sample (``forward_model``).

    ``primary`` is the acquisition the model is made for; the checkpoint lists it first, followed by
    the other acquisitions with a non-zero weight. Ranges are ``[low, high]`` pairs drawn uniformly.
    """

    primary: str = "kspace"
    kspace_weight: float = 1.0
    bicubic_weight: float = 0.0
    gaussian_weight: float = 0.0
    windows: List[str] = field(default_factory=lambda: ["none"])
    window_strength: List[float] = field(default_factory=lambda: [0.5, 0.5])
    partial_fourier_probability: float = 0.0
    partial_fourier_min: float = 0.625
    noise_probability: float = 0.0
    noise: List[float] = field(default_factory=lambda: [0.0, 0.0])
    psf_fwhm: List[float] = field(default_factory=lambda: [1.0, 1.0])
    hr_noise_probability: float = 0.0
    hr_noise: List[float] = field(default_factory=lambda: [0.0, 0.0])
    """Rician noise put into the HR slice itself (with this probability) before the LR is made from it,
    so targets keep noise as real scans do and the network does not learn to flatten it."""
    zoom: List[float] = field(default_factory=lambda: [1.0, 1.0])
    """Resolution randomisation: the HR slice is resampled by a factor drawn log-uniformly from this
    range before the LR is made (< 1: coarser HR pixels, e.g. 0.5 turns 1 mm content into 2 mm pixels)."""

    def weights(self) -> Dict[str, float]:
        return {"kspace": self.kspace_weight, "bicubic": self.bicubic_weight, "gaussian": self.gaussian_weight}

    def acquisitions(self) -> List[str]:
        """The primary acquisition, then the others the mix trains for."""
        return [self.primary] + [name for name, weight in self.weights().items() if weight > 0 and name != self.primary]

    def validate(self) -> None:
        check_choice("data.degradation.primary", self.primary, ACQUISITIONS)
        weights = self.weights()
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ConfigError("data.degradation weights must be >= 0 and not all 0")
        if weights[self.primary] <= 0:
            raise ConfigError(f"data.degradation.primary {self.primary!r} has weight 0 in the mix")
        if not self.windows:
            raise ConfigError("data.degradation.windows must list at least one window")
        for window in self.windows:
            check_choice("data.degradation.windows", window, WINDOWS)
        check_range_pair("data.degradation.window_strength", self.window_strength, 0.0, 1.0)
        check_range_pair("data.degradation.noise", self.noise, 0.0, 0.5)
        check_range_pair("data.degradation.psf_fwhm", self.psf_fwhm, 0.1, 8.0)
        check_range_pair("data.degradation.hr_noise", self.hr_noise, 0.0, 0.5)
        check_range_pair("data.degradation.zoom", self.zoom, 0.25, 4.0)
        for name in ("partial_fourier_probability", "noise_probability", "hr_noise_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"data.degradation.{name} must be in [0, 1]")
        if not 0.5 < self.partial_fourier_min <= 1.0:
            raise ConfigError("data.degradation.partial_fourier_min must be in (0.5, 1]")


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class SynthesisConfig:
    """The synthetic training-data mixture and augmentation strengths (plain JSON types only).

    ``template_weight``/``brain_weight``/``shapes_weight`` are relative (normalised by their sum).
    ``bias_field``: the bias field is ``1 + a * u`` with ``u`` smooth, ``max |u| = 1`` and
    ``a ~ U(0, bias_field)``. ``gamma_range``: ``log(gamma) ~ U(-gamma_range, +gamma_range)`` (a
    half range). ``texture``: the relative within-tissue texture std of each class is
    ``U(0, 2 * texture)``. ``deform``: rotation up to ``150 * deform`` degrees, scale
    ``exp(U(-1.5, 1.5) * deform)``, shear up to ``deform``, elastic displacement std up to
    ``30 * deform`` px.
    """

    template_weight: float = 0.25
    brain_weight: float = 0.5
    shapes_weight: float = 0.25
    bias_field: float = 0.3
    gamma_range: float = 0.3
    texture: float = 0.05
    deform: float = 0.1

    _LIMITS = {  # key: (low, high, open or closed ends)
        "bias_field": (0.0, 1.0, "[)"),
        "gamma_range": (0.0, 2.0, "[]"),
        "texture": (0.0, 0.5, "[]"),
        "deform": (0.0, 1.0, "[]"),
    }

    def validate(self, prefix: str = "data.synthesis.") -> None:
        """Raise ConfigError (one line, naming the key as ``prefix`` + key) on a wrong type or an impossible value."""
        for f in fields(self):
            value = getattr(self, f.name)
            if not _is_finite_number(value):
                raise ConfigError(f"{prefix}{f.name} must be a finite number, got {value!r}")
        for key in ("template_weight", "brain_weight", "shapes_weight"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{prefix}{key} must be >= 0, got {getattr(self, key)}")
        if self.template_weight + self.brain_weight + self.shapes_weight <= 0:
            raise ConfigError(f"{prefix}template_weight, brain_weight and shapes_weight must not all be 0")
        for key, (low, high, ends) in self._LIMITS.items():
            check_interval(f"{prefix}{key}", getattr(self, key), low, high, ends)

    @property
    def weights(self) -> Dict[str, float]:
        total = self.template_weight + self.brain_weight + self.shapes_weight
        return {
            "template": self.template_weight / total,
            "brain": self.brain_weight / total,
            "shapes": self.shapes_weight / total,
        }


@dataclass
class DataConfig:
    """Training data: volumes, split, slicing, patches and degradations."""

    train: List[str] = field(default_factory=list)
    manifest: Optional[str] = None
    val_fraction: float = 0.2
    plane: str = "auto"
    patch_size: int = 64
    foreground_threshold: float = 0.05
    min_foreground_fraction: float = 0.1
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    synthetic_fraction: float = 0.0
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    augment: bool = True
    num_workers: int = 0

    def validate(self) -> None:
        check_choice("data.plane", self.plane, PLANES)
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.patch_size < 8:
            raise ConfigError(f"data.patch_size must be >= 8, got {self.patch_size}")
        if self.num_workers < 0:
            raise ConfigError("data.num_workers must be >= 0")
        if not 0.0 <= self.synthetic_fraction <= 1.0:
            raise ConfigError(f"data.synthetic_fraction must be in [0, 1], got {self.synthetic_fraction}")
        self.degradation.validate()
        self.synthesis.validate()


@dataclass
class TrainConfig:
    """Optimisation, schedule, logging and checkpointing of a training run."""

    output_dir: str = "runs/fagan"
    iterations: int = 2000
    pretrain_iterations: int = 500
    batch_size: int = 16
    lr: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    lr_schedule: str = "constant"
    lr_milestones: List[int] = field(default_factory=list)
    lr_gamma: float = 0.5
    pixel_loss: str = "l1"
    pixel_weight: float = 1.0
    perceptual_weight: float = 1.0
    adversarial_weight: float = 1e-3
    overshoot_weight: float = 0.0
    highband_weight: float = 0.0
    vgg_weights: Optional[str] = None
    init_checkpoint: Optional[str] = None
    init_from_scale: bool = False
    ema_decay: float = 0.999
    val_every: int = 250
    checkpoint_every: int = 1000
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    bf16: bool = True
    channels_last: bool = True
    compile: bool = False

    def validate(self) -> None:
        check_choice("train.lr_schedule", self.lr_schedule, ("constant", "multistep", "cosine"))
        check_choice("train.pixel_loss", self.pixel_loss, ("l1", "mse"))
        check_choice("train.device", self.device, ("auto", "cpu", "cuda"))
        for name in ("iterations", "batch_size", "val_every", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.pretrain_iterations <= self.iterations:
            raise ConfigError(f"train.pretrain_iterations ({self.pretrain_iterations}) must be between 0 and train.iterations "
                              f"({self.iterations}); set both (--set train.pretrain_iterations=N)")
        check_learning_rate("train.lr", self.lr)
        check_interval("train.lr_gamma", self.lr_gamma, 0.0, 1.0, "(]")
        self._check_milestones()
        for name in ("beta1", "beta2", "ema_decay"):
            check_interval(f"train.{name}", getattr(self, name), 0.0, 1.0, "[)")
        for name in LOSS_WEIGHTS:
            check_interval(f"train.{name}", getattr(self, name), 0.0, FLOAT32_MAX)
        check_seed("train.seed", self.seed)
        if self.init_from_scale and not self.init_checkpoint:
            raise ConfigError("train.init_from_scale needs train.init_checkpoint")
        if not self.output_dir.strip():
            raise ConfigError("train.output_dir must name the run folder; it is empty")

    def _check_milestones(self) -> None:
        """Milestones act only in the multistep schedule (given with another they did nothing), as increasing iterations
        from 1 (a negative one lowered the rate from the first iteration)."""
        milestones = self.lr_milestones
        if milestones and self.lr_schedule != "multistep":
            raise ConfigError(f"train.lr_milestones {milestones} act only with train.lr_schedule=multistep, not "
                              f"{self.lr_schedule}; set the schedule or leave the milestones out")
        if self.lr_schedule == "multistep" and not milestones:
            raise ConfigError("train.lr_schedule=multistep needs train.lr_milestones (the iterations where the rate drops)")
        if any(m < 1 for m in milestones) or any(b <= a for a, b in zip(milestones, milestones[1:])):
            raise ConfigError(f"train.lr_milestones must be increasing iterations from 1, got {milestones}")


@dataclass
class FAGANConfig:
    """Everything that defines a model and how it was (or will be) trained."""

    model: ModelConfig = field(default_factory=ModelConfig)
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> "FAGANConfig":
        for section in (self.model, self.normalization, self.data, self.train):
            section.validate()
        return self

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "FAGANConfig":
        """Build and validate a config; unknown keys and wrong types raise ConfigError."""
        return section_from_dict(cls, data, "").validate()

    def with_overrides(self, overrides: Sequence[str]) -> "FAGANConfig":
        """Apply ``section.key=value`` (or ``section.sub.key=value``) strings; values parse as JSON, else strings."""
        check_overrides_once(overrides)
        data = self.to_dict()
        for item in sorted(overrides, key=lambda o: not o.strip().startswith("model.preset=")):
            key, sep, raw = item.partition("=")
            parts = key.strip().split(".")
            if not sep or len(parts) < 2:
                raise ConfigError(f"override {item!r} must look like section.key=value")
            if parts[0] not in data:
                raise ConfigError(f"override {item!r} names no config section {parts[0]!r}; sections: {', '.join(sorted(data))}")
            target = data
            for part in parts[:-1]:
                target = target.get(part) if isinstance(target, dict) else None
                if not isinstance(target, dict):
                    raise ConfigError(f"unknown config key {key.strip()!r}")
            if parts[-1] not in target:
                raise ConfigError(f"unknown config key {key.strip()!r}")
            target[parts[-1]] = _parse_value(raw)
            if key.strip() == "model.preset" and data["model"]["preset"] in PRESET_SWITCHES:
                data["model"].update(PRESET_SWITCHES[data["model"]["preset"]])
        return FAGANConfig.from_dict(data)


def check_overrides_once(overrides: Sequence[str]) -> None:
    """ConfigError when two overrides set the same key, or one a key inside another's section (``data.degradation``
    and ``data.degradation.zoom``): which would win is no better defined than a key given twice in a config file."""
    seen: Dict[str, str] = {}
    for item in overrides:
        key = item.partition("=")[0].strip()
        clash = next((k for k in seen if k == key or key.startswith(k + ".") or k.startswith(key + ".")), None)
        if clash is not None:
            parent, child = sorted((clash, key), key=len)
            inside = "" if clash == key else f", once inside {parent}"
            raise ConfigError(f"--set gives {child} twice{inside} ({seen[clash]!r} and {item.strip()!r}); give each key once")
        seen[key] = item.strip()


def model_config_from_dict(data: Dict[str, Any]) -> ModelConfig:
    """Parse and validate a ModelConfig (used for checkpoint metadata)."""
    cfg = section_from_dict(ModelConfig, data, "model.")
    cfg.validate()
    return cfg


def normalization_from_dict(data: Dict[str, Any]) -> NormalizationConfig:
    cfg = section_from_dict(NormalizationConfig, data, "normalization.")
    cfg.validate()
    return cfg


def load_config(path: str) -> FAGANConfig:
    """Read a JSON or YAML config file into a validated FAGANConfig."""
    return FAGANConfig.from_dict(read_config_mapping(path))


def read_config_mapping(path: Any) -> Dict[str, Any]:
    """The mapping in a JSON or YAML config file; ConfigError (one line) when it is missing, unreadable or not a mapping."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file not found: {path}")
    if not p.is_file():
        raise ConfigError(f"config {path} is not a regular file (a folder, FIFO or device cannot be read as a config)")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config {path} is not UTF-8 text (byte {exc.start} cannot be decoded)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            data = _yaml_without_duplicates(text)
        else:
            data = json.loads(text, object_pairs_hook=_pairs_without_duplicates)
    except ConfigError as exc:
        raise ConfigError(f"config {path}: {exc}") from None
    except Exception as exc:  # parse errors of either library
        raise ConfigError(f"cannot parse config {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of sections")
    return data


def _pairs_without_duplicates(pairs: List[Tuple[Any, Any]]) -> Dict[Any, Any]:
    """A JSON object, or a YAML mapping's (key, value) pairs, as a dict; ConfigError when a key repeats (the parsers keep
    the last one, so a second ``train:`` section would silently drop the first's ``output_dir``)."""
    result: Dict[Any, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ConfigError(f"{key!r} is given twice in one mapping; merge the two")
        result[key] = value
    return result


def _yaml_without_duplicates(text: str) -> Any:
    """``yaml.safe_load`` that refuses a repeated key (``_pairs_without_duplicates``)."""
    import yaml  # lazy: yaml only for YAML configs; util imports without it

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader: Any, node: Any) -> Dict[Any, Any]:
        own = [(loader.construct_object(key, deep=True), None) for key, _ in node.value if key.tag != "tag:yaml.org,2002:merge"]
        _pairs_without_duplicates(own)  # a key written twice; one that overrides a merged (<<) key is YAML's own rule
        loader.flatten_mapping(node)
        return dict(loader.construct_pairs(node, deep=True))

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass


def section_from_dict(cls: Any, data: Any, prefix: str) -> Any:
    """The config dataclass ``cls`` of a mapping; ConfigError naming ``prefix`` + key on unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section {prefix.rstrip('.') or 'root'} must be a mapping")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known, key=str)  # YAML 1.1 reads on/off/yes/no as booleans and 1 as a number
    if unknown:
        hint = " (YAML reads on, off, yes and no as true or false: quote such a key)" if isinstance(unknown[0], bool) else ""
        raise ConfigError(f"unknown config key {prefix + str(unknown[0])!r}{hint}; known keys: {', '.join(sorted(known))}")
    if cls is ModelConfig and data.get("preset") in PRESET_SWITCHES:  # unspecified switches follow the preset
        data = {**PRESET_SWITCHES[data["preset"]], **data}
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = section_from_dict(hint, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(f"{prefix}{name}", value, hint)
    return cls(**kwargs)


def _float_text(key: str, text: str) -> float:
    """A number YAML left as text (``1e-4``: YAML 1.1 needs ``1.0e-4``); ConfigError for any other text."""
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"config key {key!r} must be a number, got {text!r}") from None


def _coerce(key: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        return _coerce(key, value, next(a for a in args if a is not type(None)))
    if origin in (list, List):
        if not isinstance(value, list):
            raise ConfigError(f"config key {key!r} must be a list, got {type(value).__name__}")
        return [_coerce(key, v, args[0]) for v in value]
    if origin is tuple:  # a fixed-length list, e.g. a [low, high] range
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"config key {key!r} must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(key, v, a) for v, a in zip(value, args))
    if origin is dict:  # a section checked by its own dataclass
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} must be a mapping, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key!r} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as text
            value = _float_text(key, value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"config key {key!r} must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {key!r} must be a string, got {value!r}")
        return value
    raise ConfigError(f"config key {key!r} has an unsupported type")


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def check_interval(key: str, value: float, low: float, high: float, ends: str = "[]") -> None:
    """ConfigError naming ``key`` unless ``value`` lies between ``low`` and ``high``; ``ends`` marks each end closed
    (``[``, ``]``) or open (``(``, ``)``)."""
    if not _inside(value, low, high, ends):
        raise ConfigError(f"{key} must be in {_interval(low, high, ends)}, got {value!r}")


def check_range_pair(key: str, pair: Sequence[float], low: float, high: float, ends: str = "[]") -> None:
    """ConfigError naming ``key`` unless ``pair`` is ``[a, b]`` with a <= b, both in the interval of ``check_interval``."""
    if len(pair) != 2 or pair[0] > pair[1] or not all(_inside(v, low, high, ends) for v in pair):
        raise ConfigError(f"{key} must be [low, high] with low <= high, both in {_interval(low, high, ends)}, got {list(pair)}")


def check_learning_rate(key: str, value: float) -> None:
    """A learning rate is > 0 and a normal float32, the optimiser's arithmetic (1e300 overflowed inside Adam)."""
    check_interval(key, value, FLOAT32_TINY, FLOAT32_MAX)


def check_seed(key: str, value: int) -> None:
    """A seed is a whole number in [0, SEED_LIMIT) (torch refused larger ones with a traceback, numpy negative ones)."""
    check_interval(key, value, 0, SEED_LIMIT, "[)")


def _inside(value: float, low: float, high: float, ends: str) -> bool:
    above = value > low if ends[0] == "(" else value >= low
    below = value < high if ends[1] == ")" else value <= high
    return above and below


def _interval(low: float, high: float, ends: str) -> str:
    def show(bound: float) -> str:
        return f"{bound:g}" if isinstance(bound, float) else str(bound)

    return f"{ends[0]}{show(low)}, {show(high)}{ends[1]}"


def check_choice(key: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(map(str, choices))}; got {value!r}")
