"""What a model saw in training (``CheckpointMetadata.data_profile``), for the out-of-distribution warnings.

``data_profile(cfg)`` recomputes it from a training config, exactly as training draws its data:

- ``lr_spacing_mm``: [min, max] in-plane spacing of the LR inputs, i.e. the HR in-plane spacing
  of each source times the scale. Synthetic slices count at the ICBM152 template's spacing
  (1 mm; random-shape scenes are drawn on the same pixel grid); resolution randomisation
  (``data.degradation.zoom = [lo, hi]``) widens it to ``[scale / hi, scale / lo]`` mm.
- ``lr_slice_size``: [min, max] LR side (pixels) of the whole slices the LR inputs were made from
  (the network trains on patches of them; at inference it sees whole slices).
- ``max_noise``: the largest Rician noise level of the degradation mix, relative to the robust
  maximum (``forward_model`` convention; 0 when the mix has no noise).
- ``histogram``: the normalised histogram of the foreground intensities (> 0.05) of LR training
  samples (``data.PatchDataset`` items spread over the whole run), on ``HISTOGRAM_EDGES`` in the
  network's normalised units.

Needs torch (it draws samples through the training data pipeline); ``ood`` reads the result
without it.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

import numpy as np

from fagan_engine.io.geometry import plane_axes
from fagan_engine.mri.sample_data import ICBM152_T1
from fagan_engine.mri.synthesis import SHAPE_SIZE
from fagan_engine.trust.profile import HISTOGRAM_EDGES, histogram
from fagan_engine.util.config import FAGANConfig

PROFILE_VERSION = 1
SAMPLES = 256

_CACHE: Dict[str, str] = {}
"""Profiles already computed in this process, by config (the trainer asks at every checkpoint)."""


def data_profile(cfg: FAGANConfig, data: Optional[Any] = None, samples: int = SAMPLES) -> Dict[str, Any]:
    """The data profile of a training run of ``cfg`` (``data``: its ``PreparedData``, else prepared here)."""
    key = json.dumps([cfg.to_dict(), samples], sort_keys=True)
    if key not in _CACHE:
        _CACHE[key] = json.dumps(_compute(cfg, data, samples))
    return json.loads(_CACHE[key])


def _compute(cfg: FAGANConfig, data: Optional[Any], samples: int) -> Dict[str, Any]:
    from fagan_engine.training.data import PatchDataset, build_synthesizer, prepare_data  # lazy: keeps torch out of this module's import

    data = data or prepare_data(cfg)
    scale = cfg.model.scale
    synthesizer = build_synthesizer(cfg, data)
    spacings: List[float] = []
    sides: List[int] = []
    if synthesizer is not None:
        spacings += _in_plane_spacings(ICBM152_T1, cfg.data.plane)
        sides += list(synthesizer.slice_shape)
        if cfg.data.synthesis.shapes_weight > 0:
            sides += list(SHAPE_SIZE)
    if cfg.data.synthetic_fraction < 1:
        for name in data.split["train"]:
            spacings += _in_plane_spacings(name, cfg.data.plane)
        sides += [n for volume in data.train for n in volume.slices.shape[1:]]
    dataset = PatchDataset(data.train, cfg.data, scale, cfg.train.seed, synthesizer)
    indices = np.linspace(0, max(cfg.train.iterations * cfg.train.batch_size - 1, 0), samples).astype(np.int64)
    lr = np.concatenate([dataset[int(i)][1].numpy().ravel() for i in indices])
    degradation = cfg.data.degradation
    zoom = degradation.zoom  # a slice resampled by z has pixels 1/z times its source's
    return {
        "version": PROFILE_VERSION,
        "scale": scale,
        "lr_spacing_mm": [round(min(spacings) * scale / zoom[1], 6), round(max(spacings) * scale / zoom[0], 6)],
        "lr_slice_size": [min(sides) // scale, max(sides) // scale],
        "max_noise": float(degradation.noise[1]) if degradation.noise_probability > 0 else 0.0,
        "histogram": histogram(lr),
        "histogram_edges": [float(HISTOGRAM_EDGES[0]), float(HISTOGRAM_EDGES[-1]), len(HISTOGRAM_EDGES) - 1],
        "samples": int(len(indices)),
    }


def _in_plane_spacings(entry: str, plane: str) -> List[float]:
    """The two in-plane spacings (mm) of a training entry, read from its header."""
    from fagan_engine.training.data import load_volume  # lazy: keeps torch out of this module's import

    image = load_volume(entry)
    spacing = image.GetSpacing()
    return [float(spacing[a]) for a in plane_axes(image, plane)]
