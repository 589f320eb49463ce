"""Synthetic high-resolution training slices (SynthSR/SynthSeg style), numpy/scipy only.

Nothing can be downloaded, and training on one averaged T1 template teaches one contrast, one
anatomy and one blur. :class:`SliceSynthesizer` draws 2D HR slices from a mixture of three kinds:

``template``
    A slice of the ICBM152 2009a T1 template with its real contrast; with probability 1/2 each, a
    light smooth bias field (amplitude up to ``bias_field / 2``) and a light gamma
    (``|log gamma| <= gamma_range / 2``).
``brain``
    A synthetic contrast of a template slice made from the GM and WM probability maps. Classes:
    GM, WM, CSF (``head - GM - WM``, the head mask being the T1's non-zero region, softened by a
    Gaussian of 0.6 px for partial volume) and, with probability 0.65, synthetic skull and scalp
    shells around the head (the nilearn T1 is skull-stripped), from the in-plane distance to the
    head. Every class gets a random mean intensity (T1-, T2-, PD-, FLAIR-like ranges or fully
    random), a smooth random texture, and the image is the partial-volume mixture
    ``sum_k p_k * mu_k * (1 + texture_k)``. Then a random affine (rotation, scale, shear) plus
    elastic deformation, a smooth multiplicative bias field, normalisation and a random gamma.
``shapes``
    A random-shape scene (128-256 px per side) that teaches edges and textures, not brain shapes:
    a base label map (smooth-noise thresholds, Voronoi cells or one flat label) under 0-10
    overlapping ellipses, every label with a random intensity and texture; edges are sharp or
    partial-volume (antialiased); often the scene is cut out by a large irregular object mask
    with zero background around it; sometimes a light global blur.

Every output is float32, non-negative, with background 0 and the 99.5th percentile of the
foreground (pixels above 1e-3 of the maximum) at 1 -- the network's normalisation convention.
Every random draw comes from the ``numpy.random.Generator`` passed in, in a fixed order, so the
same generator state gives the same slice, bit for bit. See docs/training.md, "Synthetic
training data", for the model and its defaults.
"""
from __future__ import annotations

import contextlib
import functools
import math
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage as ndi

from fagan_engine.mri.sample_data import icbm152_path
from fagan_engine.util.config import SynthesisConfig
from fagan_engine.util.errors import ConfigError

KINDS = ("template", "brain", "shapes")
CONTRASTS = ("t1", "t2", "pd", "flair", "random")
BRAIN_CONTRAST_WEIGHTS: Dict[str, float] = {"t1": 0.15, "t2": 0.15, "pd": 0.15, "flair": 0.15, "random": 0.4}
"""How often each contrast family is drawn for a ``brain`` sample."""
TISSUES = ("csf", "gm", "wm", "skull", "scalp")
CONTRAST_RANGES: Dict[str, Dict[str, Tuple[float, float]]] = {
    # mean intensity ranges per tissue (before normalisation); the brain ranges do not overlap,
    # so each family keeps its ordering: T1 WM > GM > CSF; T2 CSF > GM > WM; PD CSF > GM > WM with
    # low contrast; FLAIR GM > WM > CSF (CSF suppressed).
    "t1": {"csf": (0.05, 0.25), "gm": (0.40, 0.58), "wm": (0.68, 0.90), "skull": (0.0, 0.10), "scalp": (0.5, 1.0)},
    "t2": {"csf": (0.80, 1.00), "gm": (0.42, 0.60), "wm": (0.22, 0.38), "skull": (0.0, 0.10), "scalp": (0.4, 0.9)},
    "pd": {"csf": (0.84, 1.00), "gm": (0.66, 0.80), "wm": (0.50, 0.62), "skull": (0.0, 0.12), "scalp": (0.5, 0.9)},
    "flair": {"csf": (0.02, 0.15), "gm": (0.55, 0.75), "wm": (0.36, 0.50), "skull": (0.0, 0.10), "scalp": (0.4, 0.9)},
    "random": {t: (0.0, 1.0) for t in TISSUES},
}
MIN_HEAD_FRACTION = 0.05
"""Template slices whose head mask covers less than this fraction are never drawn by ``sample``."""
SHELL_PROBABILITY = 0.65
"""Probability that a ``brain`` sample gets synthetic skull and scalp shells."""
SHAPE_SIZE = (128, 256)
"""Range (inclusive) of each side of a ``shapes`` scene, in pixels."""
HEAD_SOFTNESS = 0.6
"""Gaussian sigma (px) that turns the T1's binary head mask into a partial-volume mask."""

PlaneSpec = Union[str, Tuple[int, int], Sequence[int]]


# --------------------------------------------------------------------------- smooth random fields


@functools.lru_cache(maxsize=512)
def _basis(n: int, m: int) -> np.ndarray:
    """(n, m) Gaussian radial basis over ``m`` nodes spanning ``n`` pixels, rows of unit norm.

    ``B_r @ Z @ B_c.T`` with ``Z ~ N(0, I)`` then has unit variance at every pixel.
    """
    centres = np.linspace(-0.5, n - 0.5, m)
    spacing = centres[1] - centres[0]
    x = np.arange(n, dtype=np.float64)[:, None]
    w = np.exp(-0.5 * ((x - centres[None, :]) / spacing) ** 2)
    w /= np.sqrt((w**2).sum(axis=1, keepdims=True))
    out = np.ascontiguousarray(w, dtype=np.float32)
    out.flags.writeable = False
    return out


def _nodes(n: int, length: float) -> int:
    return max(2, int(round(n / max(length, 1.0))) + 1)


def smooth_noise(rng: np.random.Generator, shape: Tuple[int, int], length: float) -> np.ndarray:
    """A smooth Gaussian random field with unit variance per pixel and correlation length ~``length`` px."""
    rows, cols = shape
    mr, mc = _nodes(rows, length), _nodes(cols, length)
    z = rng.standard_normal((mr, mc), dtype=np.float32)
    return _basis(rows, mr) @ z @ _basis(cols, mc).T


def _bias_field(rng: np.random.Generator, shape: Tuple[int, int], amplitude: float) -> Optional[np.ndarray]:
    """``1 + a * u``: ``u`` smooth (correlation length ``U(0.3, 1)`` of the image side), max |u| = 1."""
    a = float(rng.uniform(0.0, amplitude)) if amplitude > 0 else 0.0
    length = float(rng.uniform(0.3, 1.0)) * max(shape)
    u = smooth_noise(rng, shape, length)
    if a == 0.0:
        return None
    peak = float(np.abs(u).max())
    return 1.0 + (a / peak if peak > 0 else 0.0) * u


def _texture_fields(rng: np.random.Generator, shape: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """Two unit-variance texture fields: a coarse one (8-40 px) and a fine one (1.5-6 px)."""
    coarse = smooth_noise(rng, shape, float(rng.uniform(8.0, 40.0)))
    fine = smooth_noise(rng, shape, float(rng.uniform(1.5, 6.0)))
    return coarse, fine


def _texture_coefficients(rng: np.random.Generator, n: int, amplitude: float) -> np.ndarray:
    """(n, 2) weights of the coarse/fine fields per class; class std ``U(0, 2 * amplitude)``."""
    std = rng.uniform(0.0, 2.0 * amplitude, n)
    mix = rng.uniform(0.0, 1.0, n)  # share of the variance in the coarse field
    signs = rng.choice(np.array([-1.0, 1.0]), size=(n, 2))
    coef = np.stack([np.sqrt(mix), np.sqrt(1.0 - mix)], axis=1) * std[:, None] * signs
    return coef.astype(np.float32)


@functools.lru_cache(maxsize=1)
def _numpy_blas():
    """numpy's and scipy's bundled BLAS (via threadpoolctl, when installed), or None; torch's are left alone."""
    try:
        from threadpoolctl import ThreadpoolController  # lazy: optional dependency (threadpoolctl)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn (nilearn)
        return None
    root = str(Path(np.__file__).resolve().parent.parent)
    controller = ThreadpoolController()
    selected = [
        lib
        for lib in controller.lib_controllers
        if lib.user_api == "blas" and str(lib.filepath).startswith(root) and "torch" not in str(lib.filepath)
    ]
    return controller.select(filepath=[lib.filepath for lib in selected]) if selected else None


def single_threaded():
    """A context running numpy's BLAS on one thread: the small matrix products here are slower
    (and spin on a busy 2-core CPU) when OpenBLAS splits them across threads."""
    blas = _numpy_blas()
    return blas.limit(limits=1) if blas is not None else contextlib.nullcontext()


# --------------------------------------------------------------------------- intensity post-processing


def normalise(image: np.ndarray) -> np.ndarray:
    """Non-negative, float32, 99.5th percentile of the foreground (> 1e-3 of max) at 1."""
    image = np.maximum(image, 0.0, dtype=np.float32)
    peak = float(image.max())
    if peak <= 0:
        return image
    fg = image[image > 1e-3 * peak]
    k = int(0.995 * (fg.size - 1))
    q = float(np.partition(fg, k)[k])
    if q <= 0:
        q = peak
    image *= np.float32(1.0 / q)
    return image


def _gamma(rng: np.random.Generator, image: np.ndarray, half_range: float) -> np.ndarray:
    """``x ** gamma`` with ``log gamma ~ U(-half_range, half_range)`` (99.5th percentile stays at 1)."""
    g = float(np.exp(rng.uniform(-half_range, half_range)))
    if half_range > 0:
        np.power(image, np.float32(g), out=image)
    return image


def _deform(rng: np.random.Generator, image: np.ndarray, strength: float) -> np.ndarray:
    """Random affine (about the centre) plus elastic deformation, bilinear, zero outside."""
    rows, cols = image.shape
    angle = math.radians(rng.uniform(-150.0, 150.0) * strength)
    log_scale = rng.uniform(-1.5, 1.5, 2) * strength
    shear = float(rng.uniform(-1.0, 1.0) * strength)
    elastic_std = float(rng.uniform(0.0, 30.0) * strength)
    length = float(rng.uniform(24.0, 64.0))
    dr = smooth_noise(rng, (rows, cols), length)
    dc = smooth_noise(rng, (rows, cols), length)
    if strength == 0:
        return image
    cos, sin = math.cos(angle), math.sin(angle)
    sr, sc = math.exp(log_scale[0]), math.exp(log_scale[1])
    # source = A @ (p - centre) + centre + displacement; A = rotation @ shear @ scale
    a = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([sr, sc])
    cr, cc = (rows - 1) / 2.0, (cols - 1) / 2.0
    r = np.arange(rows, dtype=np.float32)[:, None] - np.float32(cr)
    c = np.arange(cols, dtype=np.float32)[None, :] - np.float32(cc)
    coords = np.empty((2, rows, cols), dtype=np.float32)
    e = np.float32(elastic_std)
    coords[0] = np.float32(a[0, 0]) * r + np.float32(a[0, 1]) * c + np.float32(cr)
    coords[0] += e * dr
    coords[1] = np.float32(a[1, 0]) * r + np.float32(a[1, 1]) * c + np.float32(cc)
    coords[1] += e * dc
    return ndi.map_coordinates(image, coords, order=1, mode="constant", cval=0.0, prefilter=False, output=np.float32)


# --------------------------------------------------------------------------- the ICBM152 maps


@functools.lru_cache(maxsize=1)
def icbm152_arrays() -> Tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    """(t1, gm, wm) as uint8 numpy arrays (z, y, x), and the T1 sitk image (for plane selection)."""
    import SimpleITK as sitk  # lazy: SimpleITK only to read the template; mri imports without it

    t1_image = sitk.ReadImage(str(icbm152_path("t1")))
    arrays = []
    for kind in ("t1", "gm", "wm"):
        image = t1_image if kind == "t1" else sitk.ReadImage(str(icbm152_path(kind)))
        array = sitk.GetArrayFromImage(image)
        if array.dtype != np.uint8:
            array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
        array.flags.writeable = False
        arrays.append(array)
    if not arrays[0].shape == arrays[1].shape == arrays[2].shape:
        raise ValueError("the ICBM152 T1, GM and WM maps are not on one grid")
    return arrays[0], arrays[1], arrays[2], t1_image


def _resolve_axes(plane: PlaneSpec) -> Tuple[int, int]:
    if isinstance(plane, str):
        from fagan_engine.io.geometry import plane_axes  # lazy: io.geometry imports SimpleITK; mri imports without it

        return plane_axes(icbm152_arrays()[3], plane)
    axes = tuple(int(a) for a in plane)
    if len(axes) != 2 or axes[0] == axes[1] or not set(axes) <= {0, 1, 2}:
        raise ConfigError(f"plane axes must be two distinct index axes out of 0, 1, 2; got {tuple(plane)}")
    return tuple(sorted(axes))  # type: ignore[return-value]


# --------------------------------------------------------------------------- the synthesizer


class SliceSynthesizer:
    """Built once per training run from the ICBM152 maps (T1, GM, WM), oriented along ``plane_axes``.

    ``plane_axes`` is a pair of sitk in-plane index axes (as ``fagan_engine.io.geometry.plane_axes``
    returns) or a plane name (``axial``/``coronal``/``sagittal``/``auto``). Slices are numbered by
    their sitk index along the through-plane axis and laid out (rows, cols) as the training data
    loader lays them out. ``slice_indices`` restricts which template slices ``sample`` may use
    (pass the training slabs only so the held-out slab never leaks); template slices whose head
    covers less than ``MIN_HEAD_FRACTION`` are skipped. ``brain_contrast`` accepts any slice.
    """

    def __init__(
        self,
        config: SynthesisConfig,
        plane_axes: PlaneSpec,
        slice_indices: Optional[Sequence[int]] = None,
    ) -> None:
        config.validate()
        self.config = config
        self.axes = _resolve_axes(plane_axes)
        t1, gm, wm, _ = icbm152_arrays()
        np_axes = sorted(2 - a for a in self.axes)
        through = ({0, 1, 2} - set(np_axes)).pop()
        self.through_axis = 2 - through  # sitk index of the through-plane axis
        self._t1 = np.ascontiguousarray(np.moveaxis(t1, through, 0))
        self._gm = np.ascontiguousarray(np.moveaxis(gm, through, 0))
        self._wm = np.ascontiguousarray(np.moveaxis(wm, through, 0))
        self.n_slices = self._t1.shape[0]
        self.slice_shape: Tuple[int, int] = tuple(self._t1.shape[1:])  # type: ignore[assignment]
        if slice_indices is None:
            candidates = np.arange(self.n_slices)
        else:
            candidates = np.unique(np.asarray(list(slice_indices), dtype=np.int64))
            bad = candidates[(candidates < 0) | (candidates >= self.n_slices)]
            if bad.size:
                raise ConfigError(
                    f"slice index {int(bad[0])} is outside the template's {self.n_slices} slices "
                    f"along sitk axis {self.through_axis}"
                )
        head_fraction = (self._t1[candidates] > 0).mean(axis=(1, 2)) if candidates.size else np.zeros(0)
        self.slice_indices = candidates[head_fraction >= MIN_HEAD_FRACTION]
        if self.slice_indices.size == 0:
            raise ConfigError(
                f"no usable template slice: slice_indices leave none whose head covers >= {MIN_HEAD_FRACTION:g} of the slice"
            )
        w = config.weights
        self._kind_cdf = np.cumsum([w[k] for k in KINDS])
        self._contrast_names = tuple(BRAIN_CONTRAST_WEIGHTS)
        p = np.array([BRAIN_CONTRAST_WEIGHTS[c] for c in self._contrast_names])
        self._contrast_cdf = np.cumsum(p / p.sum())
        self._head_cache: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}
        self._grid_cache: Dict[Tuple[int, int], Tuple[np.ndarray, np.ndarray]] = {}

    # ------------------------------------------------------------------ public API

    def sample(self, rng: np.random.Generator) -> Tuple[np.ndarray, str]:
        """One HR 2D float32 slice in [0, ~1] (99.5th percentile 1, background 0) and its kind."""
        u = float(rng.random())
        kind = KINDS[min(int(np.searchsorted(self._kind_cdf, u, side="right")), len(KINDS) - 1)]
        with single_threaded():
            if kind == "template":
                return self._template(rng), kind
            if kind == "brain":
                return self._brain(rng), kind
            return self._shapes(rng), kind

    def brain_contrast(self, slice_index: int, contrast: str, rng: np.random.Generator) -> np.ndarray:
        """The synthetic contrast (t1|t2|pd|flair|random) of one template slice, with texture but
        WITHOUT deformation, bias, gamma or skull/scalp shells; any slice index (held-out ones too)."""
        if contrast not in CONTRASTS:
            raise ConfigError(f"contrast must be one of {', '.join(CONTRASTS)}; got {contrast!r}")
        index = int(slice_index)
        if not 0 <= index < self.n_slices:
            raise ConfigError(f"slice index {index} is outside the template's {self.n_slices} slices")
        with single_threaded():
            image = self._tissue_image(rng, index, contrast, shells=False)
        return np.ascontiguousarray(normalise(image))

    def tissue_maps(self, slice_index: int) -> Dict[str, np.ndarray]:
        """The partial-volume maps (float32, 0-1) of one slice: ``gm``, ``wm``, ``csf`` and ``head``.

        ``head`` is the T1's non-zero region softened by a Gaussian (``HEAD_SOFTNESS`` px); GM and WM
        are the template's probability maps times ``head``; ``csf = max(head - gm - wm, 0)``.
        """
        head = self._head(slice_index)[0].astype(np.float32) * np.float32(1 / 255)
        gm = self._gm[slice_index].astype(np.float32) * np.float32(1 / 255)
        wm = self._wm[slice_index].astype(np.float32) * np.float32(1 / 255)
        gm *= head  # the maps reach ~1 px beyond the skull-stripped T1: keep the brain inside it
        wm *= head
        csf = np.maximum(head - gm - wm, 0.0)
        return {"gm": gm, "wm": wm, "csf": csf, "head": head}

    def template_slice(self, slice_index: int) -> np.ndarray:
        """The real T1 template slice, normalised like every sample."""
        return normalise(self._t1[slice_index].astype(np.float32))

    # ------------------------------------------------------------------ kinds

    def _pick_slice(self, rng: np.random.Generator) -> int:
        return int(self.slice_indices[int(rng.integers(self.slice_indices.size))])

    def _template(self, rng: np.random.Generator) -> np.ndarray:
        index = self._pick_slice(rng)
        image = self._t1[index].astype(np.float32)
        use_bias, use_gamma = rng.random(2) < 0.5
        bias = _bias_field(rng, image.shape, self.config.bias_field / 2)
        if use_bias and bias is not None:
            image *= bias
        image = normalise(image)
        if use_gamma:
            image = _gamma(rng, image, self.config.gamma_range / 2)
        return image

    def _brain(self, rng: np.random.Generator) -> np.ndarray:
        index = self._pick_slice(rng)
        contrast = self._contrast_names[int(np.searchsorted(self._contrast_cdf, rng.random(), side="right"))]
        shells = bool(rng.random() < SHELL_PROBABILITY)
        image = self._tissue_image(rng, index, contrast, shells)
        image = _deform(rng, image, self.config.deform)
        bias = _bias_field(rng, image.shape, self.config.bias_field)
        if bias is not None:
            image *= bias
        return _gamma(rng, normalise(image), self.config.gamma_range)

    def _tissue_image(self, rng: np.random.Generator, index: int, contrast: str, shells: bool) -> np.ndarray:
        """``sum_k p_k * mu_k * (1 + t_k)`` over CSF, GM, WM (and skull, scalp when ``shells``)."""
        ranges = CONTRAST_RANGES[contrast]
        low = np.array([ranges[t][0] for t in TISSUES])
        high = np.array([ranges[t][1] for t in TISSUES])
        mu = rng.uniform(low, high).astype(np.float32)
        coef = _texture_coefficients(rng, len(TISSUES), self.config.texture)
        skull_t, scalp_t = rng.uniform(2.0, 7.0), rng.uniform(2.0, 9.0)
        shape = self.slice_shape
        coarse, fine = _texture_fields(rng, shape)

        maps = self.tissue_maps(index)
        head = maps["head"]
        probs = [maps["csf"], maps["gm"], maps["wm"]]
        if shells:
            dist = self._head(index)[1].astype(np.float32) * np.float32(1 / 8)
            outside = 1.0 - head
            inner = np.clip(np.float32(skull_t + 0.5) - dist, 0.0, 1.0)
            outer = np.clip(np.float32(skull_t + scalp_t + 0.5) - dist, 0.0, 1.0)
            probs += [outside * inner, outside * (outer - inner)]
        image = np.zeros(shape, dtype=np.float32)
        for k, p in enumerate(probs):
            tex = np.float32(coef[k, 0]) * coarse
            tex += np.float32(coef[k, 1]) * fine
            tex += np.float32(1.0)
            tex *= p
            image += np.float32(mu[k]) * tex
        return image

    def _head(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        """(soft head mask ×255, in-plane distance outside the head ×8) as uint8, cached per slice."""
        cached = self._head_cache.get(index)
        if cached is None:
            mask = self._t1[index] > 0
            soft = ndi.gaussian_filter(mask.astype(np.float32), HEAD_SOFTNESS, truncate=3.0)
            if mask.any():
                dist = ndi.distance_transform_edt(~mask)
            else:
                dist = np.full(mask.shape, 255.0)
            cached = (
                np.clip(np.rint(soft * 255), 0, 255).astype(np.uint8),
                np.clip(np.rint(dist * 8), 0, 255).astype(np.uint8),
            )
            self._head_cache[index] = cached
        return cached

    # ------------------------------------------------------------------ random shapes

    def _shapes(self, rng: np.random.Generator) -> np.ndarray:
        rows, cols = (int(v) for v in rng.integers(SHAPE_SIZE[0], SHAPE_SIZE[1] + 1, 2))
        shape = (rows, cols)
        amplitude = self.config.texture
        coarse, fine = _texture_fields(rng, shape)
        base = int(rng.choice(3, p=[0.45, 0.35, 0.2]))  # noise thresholds, Voronoi, flat
        if base == 0:
            image = self._noise_levels(rng, shape, coarse, fine, amplitude)
        elif base == 1:
            image = self._voronoi(rng, shape, coarse, fine, amplitude)
        else:
            mu = np.float32(rng.uniform(0.0, 1.0))
            c = _texture_coefficients(rng, 1, amplitude)[0]
            image = mu * (1.0 + np.float32(c[0]) * coarse + np.float32(c[1]) * fine)
        for _ in range(int(rng.integers(0, 11))):
            self._ellipse(rng, image, coarse, fine, amplitude)
        if rng.random() < 0.6:
            image *= self._object_mask(rng, shape)
        sigma = float(rng.uniform(0.3, 0.8))
        if rng.random() < 0.3:
            image = ndi.gaussian_filter(image, sigma, truncate=3.0)
        bias = _bias_field(rng, shape, self.config.bias_field)
        if bias is not None:
            image *= bias
        return _gamma(rng, normalise(image), self.config.gamma_range)

    def _noise_levels(self, rng, shape, coarse, fine, amplitude) -> np.ndarray:
        """2-6 levels of a thresholded smooth field; soft (partial-volume) or sharp steps."""
        levels = int(rng.integers(2, 7))
        field = smooth_noise(rng, shape, float(rng.uniform(12.0, 80.0)))
        thresholds = np.sort(rng.uniform(-1.2, 1.2, levels - 1)).astype(np.float32)
        mu = rng.uniform(0.0, 1.0, levels).astype(np.float32)
        coef = _texture_coefficients(rng, levels, amplitude)
        soft = bool(rng.random() < 0.5)
        width = float(rng.uniform(0.7, 2.0))  # ramp width in px for soft steps
        labels = np.zeros(shape, dtype=np.intp)
        image = np.full(shape, mu[0], dtype=np.float32)
        if soft:  # mean |gradient| of the field, to turn a width in px into a width in field units
            slope = float(np.abs(np.diff(field[:: max(1, shape[0] // 32)], axis=1)).mean()) + 1e-6
            inv = np.float32(1.0 / (width * slope))
        for j, t in enumerate(thresholds, start=1):
            above = field > t
            labels += above
            if soft:
                step = np.clip((field - t) * inv + np.float32(0.5), 0.0, 1.0)
            else:
                step = above.astype(np.float32)
            image += np.float32(mu[j] - mu[j - 1]) * step
        image *= 1.0 + coef[labels, 0] * coarse + coef[labels, 1] * fine
        return image

    def _voronoi(self, rng, shape, coarse, fine, amplitude) -> np.ndarray:
        """Voronoi cells of 4-16 random seeds (sharp edges), each with its intensity and texture."""
        rows, cols = shape
        n = int(rng.integers(4, 17))
        seeds = rng.uniform((0.0, 0.0), (rows, cols), (n, 2)).astype(np.float32)
        mu = rng.uniform(0.0, 1.0, n).astype(np.float32)
        coef = _texture_coefficients(rng, n, amplitude)
        r, c = self._grid(shape)
        # nearest seed = argmax over k of 2 p.s_k - |s_k|^2 (separable in rows and cols)
        a = 2.0 * r[:, None] * seeds[None, :, 0] - (seeds**2).sum(axis=1)[None, :]
        b = 2.0 * c[:, None] * seeds[None, :, 1]
        labels = (a[:, None, :] + b[None, :, :]).argmax(axis=2)
        return mu[labels] * (1.0 + coef[labels, 0] * coarse + coef[labels, 1] * fine)

    def _ellipse(self, rng, image, coarse, fine, amplitude) -> None:
        """Paint one ellipse over ``image`` in place: antialiased (partial volume) or sharp edge."""
        rows, cols = image.shape
        cy, cx = rng.uniform(0.0, rows), rng.uniform(0.0, cols)
        ra, rb = rng.uniform(3.0, 0.4 * min(rows, cols), 2)
        theta = rng.uniform(0.0, math.pi)
        mu = np.float32(rng.uniform(0.0, 1.0))
        coef = _texture_coefficients(rng, 1, amplitude)[0]
        soft = bool(rng.random() < 0.6)
        ext = max(ra, rb) + 2.0
        r0, r1 = max(0, int(cy - ext)), min(rows, int(cy + ext) + 1)
        c0, c1 = max(0, int(cx - ext)), min(cols, int(cx + ext) + 1)
        if r1 <= r0 or c1 <= c0:
            return
        y = np.arange(r0, r1, dtype=np.float32)[:, None] - np.float32(cy)
        x = np.arange(c0, c1, dtype=np.float32)[None, :] - np.float32(cx)
        cos, sin = np.float32(math.cos(theta)), np.float32(math.sin(theta))
        u = (cos * y + sin * x) * np.float32(1.0 / ra)
        v = (cos * x - sin * y) * np.float32(1.0 / rb)
        q = u * u + v * v
        if soft:  # radial distance to the boundary: rho * (1 - 1/sqrt(q)); 1-px box ramp
            rho = np.sqrt(y * y + x * x)
            d = rho - rho / np.sqrt(np.maximum(q, np.float32(1e-6)))
            alpha = np.clip(np.float32(0.5) - d, 0.0, 1.0)
        else:
            alpha = (q <= 1.0).astype(np.float32)
        window = image[r0:r1, c0:c1]
        value = mu * (1.0 + np.float32(coef[0]) * coarse[r0:r1, c0:c1] + np.float32(coef[1]) * fine[r0:r1, c0:c1])
        window += alpha * (value - window)

    def _object_mask(self, rng, shape) -> np.ndarray:
        """A large irregular object (ellipse with a smooth-noise boundary) on a zero background."""
        rows, cols = shape
        cy, cx = rows * rng.uniform(0.4, 0.6), cols * rng.uniform(0.4, 0.6)
        ra, rb = rows * rng.uniform(0.3, 0.5), cols * rng.uniform(0.3, 0.5)
        wobble = np.float32(rng.uniform(0.0, 0.15))
        noise = smooth_noise(rng, shape, float(rng.uniform(30.0, 80.0)))
        soft = bool(rng.random() < 0.6)
        r, c = self._grid(shape)
        y = r[:, None] - np.float32(cy)
        x = c[None, :] - np.float32(cx)
        q = np.sqrt((y * np.float32(1.0 / ra)) ** 2 + (x * np.float32(1.0 / rb)) ** 2)
        level = 1.0 + wobble * noise
        if soft:
            rho = np.sqrt(y * y + x * x)
            d = rho * (q - level) / np.maximum(q, np.float32(1e-6))
            return np.clip(np.float32(0.5) - d, 0.0, 1.0)
        return (q <= level).astype(np.float32)

    def _grid(self, shape: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
        grid = self._grid_cache.get(shape)
        if grid is None:
            grid = (np.arange(shape[0], dtype=np.float32), np.arange(shape[1], dtype=np.float32))
            self._grid_cache[shape] = grid
        return grid
