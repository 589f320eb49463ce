"""Synthetic training slices: determinism, mixture, contrasts, value range, slice restriction, config."""
from __future__ import annotations

import collections
import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk

from fagan_engine.mri.sample_data import icbm152_gm_path, icbm152_path, icbm152_t1_path, icbm152_wm_path
from fagan_engine.mri.synthesis import CONTRASTS, KINDS, SliceSynthesizer, SynthesisConfig
from fagan_engine.util.config import FAGANConfig
from fagan_engine.util.errors import ConfigError

MID_AXIAL = 95  # a mid-brain axial slice (ventricles, deep GM, cortex)


@pytest.fixture(scope="module")
def synth() -> SliceSynthesizer:
    return SliceSynthesizer(SynthesisConfig(), "axial")


def only(kind: str, **overrides) -> SynthesisConfig:
    weights = {f"{k}_weight": float(k == kind) for k in KINDS}
    return SynthesisConfig(**{**weights, **overrides})


def test_icbm152_maps_ship_with_nilearn():
    paths = [icbm152_t1_path(), icbm152_gm_path(), icbm152_wm_path()]
    assert all(p.is_file() for p in paths)
    assert icbm152_path("gm") == paths[1]
    sizes = {sitk.ReadImage(str(p)).GetSize() for p in paths}
    assert sizes == {(197, 233, 189)}
    with pytest.raises(ValueError):
        icbm152_path("csf")


def test_same_generator_state_gives_the_same_slices(synth):
    a = [synth.sample(np.random.default_rng([7, i])) for i in range(24)]
    b = [synth.sample(np.random.default_rng([7, i])) for i in range(24)]
    assert {k for _, k in a} == set(KINDS)
    for (x, kx), (y, ky) in zip(a, b):
        assert kx == ky and x.dtype == y.dtype and np.array_equal(x, y)
    # a fresh synthesizer (empty caches) gives the same slices too
    again = SliceSynthesizer(SynthesisConfig(), (0, 1))
    for i, (x, _) in enumerate(a[:6]):
        assert np.array_equal(again.sample(np.random.default_rng([7, i]))[0], x)
    c = [synth.sample(np.random.default_rng([8, i]))[0] for i in range(6)]
    assert not all(x.shape == y.shape and np.array_equal(x, y) for (x, _), y in zip(a, c))
    for contrast in CONTRASTS:
        x = synth.brain_contrast(MID_AXIAL, contrast, np.random.default_rng(3))
        assert np.array_equal(x, synth.brain_contrast(MID_AXIAL, contrast, np.random.default_rng(3)))


def test_mixture_ratios_are_respected():
    cfg = SynthesisConfig(template_weight=2.0, brain_weight=3.0, shapes_weight=5.0)
    synth = SliceSynthesizer(cfg, "axial")
    rng = np.random.default_rng(0)
    n = 500
    counts = collections.Counter(synth.sample(rng)[1] for _ in range(n))
    for kind, expected in {"template": 0.2, "brain": 0.3, "shapes": 0.5}.items():
        assert abs(counts[kind] / n - expected) < 0.07, counts
    no_shapes = SliceSynthesizer(SynthesisConfig(shapes_weight=0.0), "axial")
    rng = np.random.default_rng(1)
    assert {no_shapes.sample(rng)[1] for _ in range(60)} == {"template", "brain"}


def test_value_range_and_normalisation(synth):
    rng = np.random.default_rng(42)
    seen = collections.Counter()
    for _ in range(60):
        image, kind = synth.sample(rng)
        seen[kind] += 1
        assert image.dtype == np.float32 and image.ndim == 2 and image.flags.c_contiguous
        assert np.isfinite(image).all() and image.min() >= 0.0
        foreground = image[image > 1e-3 * image.max()]
        assert abs(np.percentile(foreground, 99.5) - 1.0) < 0.03
        assert image.max() < 3.0
        if kind == "shapes":
            assert all(128 <= side <= 256 for side in image.shape)
        else:
            assert image.shape == synth.slice_shape
            assert image[0, 0] == 0.0 and image[-1, -1] == 0.0 and (image == 0).mean() > 0.15
    assert min(seen.values()) > 5


def tissue_means(synth: SliceSynthesizer, image: np.ndarray, index: int) -> dict:
    maps = synth.tissue_maps(index)
    return {t: float(image[maps[t] > 0.9].mean()) for t in ("csf", "gm", "wm")}


@pytest.mark.parametrize("seed", range(4))
def test_each_contrast_keeps_its_tissue_ordering(synth, seed):
    rng = np.random.default_rng(seed)
    maps = synth.tissue_maps(MID_AXIAL)
    assert all((maps[t] > 0.9).sum() > 200 for t in ("csf", "gm", "wm"))
    m = {c: tissue_means(synth, synth.brain_contrast(MID_AXIAL, c, rng), MID_AXIAL) for c in CONTRASTS}
    assert m["t1"]["wm"] > m["t1"]["gm"] > m["t1"]["csf"]
    assert m["t2"]["csf"] > m["t2"]["gm"] > m["t2"]["wm"]
    assert m["pd"]["csf"] > m["pd"]["gm"] > m["pd"]["wm"]
    assert m["pd"]["wm"] / m["pd"]["csf"] > m["t2"]["wm"] / m["t2"]["csf"]  # PD: low contrast
    assert m["flair"]["gm"] > m["flair"]["wm"] > m["flair"]["csf"]
    assert m["flair"]["csf"] < 0.5 * m["flair"]["wm"]


def test_brain_contrast_works_on_any_slice_and_keeps_the_background_at_zero():
    train = list(range(0, 80)) + list(range(110, 189))
    synth = SliceSynthesizer(SynthesisConfig(), "axial", slice_indices=train)
    held_out = 95  # not in slice_indices: evaluation still needs it
    image = synth.brain_contrast(held_out, "t2", np.random.default_rng(0))
    head = synth.tissue_maps(held_out)["head"]
    assert image.shape == synth.slice_shape and image.dtype == np.float32
    assert np.all(image[head == 0] == 0) and np.all(image[head > 0.99] > 0)
    with pytest.raises(ConfigError, match="contrast"):
        synth.brain_contrast(held_out, "dwi", np.random.default_rng(0))
    with pytest.raises(ConfigError, match="slice index"):
        synth.brain_contrast(189, "t1", np.random.default_rng(0))


def test_slice_indices_restrict_the_template_slices():
    allowed = [60, 61, 130]
    cfg = only("template", bias_field=0.0, gamma_range=0.0)
    synth = SliceSynthesizer(cfg, "axial", slice_indices=allowed)
    assert synth.slice_indices.tolist() == allowed
    references = {i: synth.template_slice(i) for i in range(synth.n_slices)}
    rng = np.random.default_rng(0)
    used = set()
    for _ in range(30):
        image, kind = synth.sample(rng)
        assert kind == "template"
        match = [i for i, ref in references.items() if np.array_equal(ref, image)]
        assert len(match) == 1 and match[0] in allowed
        used.add(match[0])
    assert used == set(allowed)


def test_slice_indices_restrict_the_brain_slices():
    cfg = only("brain", bias_field=0.0, gamma_range=0.0, deform=0.0)
    synth = SliceSynthesizer(cfg, "axial", slice_indices=[140])
    head = synth.tissue_maps(140)["head"]
    rng = np.random.default_rng(0)
    for _ in range(10):
        image, _ = synth.sample(rng)
        assert np.all(image[head > 0.99] > 0)
        # nothing beyond the thickest skull + scalp (16 px) around this slice's head
        far = synth._head(140)[1] > 8 * 17
        assert np.all(image[far] == 0)


def test_slices_follow_the_loader_layout():
    t1 = sitk.GetArrayFromImage(sitk.ReadImage(str(icbm152_t1_path())))  # (z, y, x)
    cfg = only("template", bias_field=0.0, gamma_range=0.0)
    axial = SliceSynthesizer(cfg, (1, 0))
    assert axial.axes == (0, 1) and axial.through_axis == 2 and axial.slice_shape == (233, 197)
    np.testing.assert_array_equal(axial._t1[100], t1[100])
    coronal = SliceSynthesizer(cfg, (0, 2))
    assert coronal.through_axis == 1 and coronal.slice_shape == (189, 197)
    np.testing.assert_array_equal(coronal._t1[120], t1[:, 120, :])
    sagittal = SliceSynthesizer(cfg, "sagittal")
    assert sagittal.through_axis == 0 and sagittal.slice_shape == (189, 233)
    np.testing.assert_array_equal(sagittal._t1[98], t1[:, :, 98])


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"template_weight": -0.1}, "template_weight"),
        ({"brain_weight": float("nan")}, "brain_weight"),
        ({"shapes_weight": "0.5"}, "shapes_weight"),
        ({"template_weight": 0.0, "brain_weight": 0.0, "shapes_weight": 0.0}, "weight"),
        ({"bias_field": 1.0}, "bias_field"),
        ({"gamma_range": -0.1}, "gamma_range"),
        ({"texture": 0.8}, "texture"),
        ({"deform": True}, "deform"),
        ({"deform": 1.5}, "deform"),
    ],
)
def test_config_validation_names_the_key(overrides, key):
    cfg = dataclasses.replace(SynthesisConfig(), **overrides)
    with pytest.raises(ConfigError, match=key) as info:
        cfg.validate()
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=key):
        SliceSynthesizer(cfg, "axial")


def test_config_round_trip_and_bad_arguments():
    cfg = SynthesisConfig()
    cfg.validate()
    assert FAGANConfig.from_dict({"data": {"synthesis": dataclasses.asdict(cfg)}}).data.synthesis == cfg
    assert abs(sum(cfg.weights.values()) - 1.0) < 1e-12
    with pytest.raises(ConfigError, match="synthesis.*blur"):
        FAGANConfig.from_dict({"data": {"synthesis": {"blur": 1.0}}})
    with pytest.raises(ConfigError, match="slice index 189"):
        SliceSynthesizer(cfg, "axial", slice_indices=[10, 189])
    with pytest.raises(ConfigError, match="no usable template slice"):
        SliceSynthesizer(cfg, "axial", slice_indices=[0, 1])  # below the head
    with pytest.raises(ConfigError, match="plane axes"):
        SliceSynthesizer(cfg, (1, 1))
