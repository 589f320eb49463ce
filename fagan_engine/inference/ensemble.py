"""Geometric self-ensemble: the network run on flipped and rotated copies of each slice, the outputs turned back and
averaged (``RunOptions.ensemble``). The same eight transforms give the research uncertainty map (``trust.uncertainty``)."""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from fagan_engine.inference.runners import Runner

Transform = Tuple[int, bool]
"""(number of 90° rotations, flip of the columns first)."""
TRANSFORMS: List[Transform] = [(k, flip) for flip in (False, True) for k in range(4)]
ENSEMBLES: Dict[int, List[Transform]] = {1: TRANSFORMS[:1], 2: [TRANSFORMS[0], TRANSFORMS[4]], 4: TRANSFORMS[:4], 8: TRANSFORMS}
"""Members per ensemble size: the identity; with its mirror image; the four rotations; all eight."""


def augmented(runner: Runner, transform: Transform) -> Runner:
    """``runner`` applied to the transformed batch (B, C, h, w), its output transformed back."""
    turns, flip = transform

    def run(batch: np.ndarray) -> np.ndarray:
        seen = batch[..., ::-1] if flip else batch
        out = runner(np.ascontiguousarray(np.rot90(seen, turns, axes=(2, 3))))
        back = np.rot90(out, -turns, axes=(2, 3))
        return np.ascontiguousarray(back[..., ::-1] if flip else back)

    return run


def self_ensemble(runner: Runner, members: int) -> Runner:
    """``runner`` averaged over the ``ENSEMBLES[members]`` transforms (``runner`` itself for 1)."""
    if members == 1:
        return runner
    passes = [augmented(runner, transform) for transform in ENSEMBLES[members]]

    def run(batch: np.ndarray) -> np.ndarray:
        total = np.asarray(passes[0](batch), dtype=np.float32).copy()
        for member in passes[1:]:
            total += member(batch)
        return total / np.float32(len(passes))

    return run
