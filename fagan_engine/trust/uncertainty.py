"""Uncertainty map: voxel-wise standard deviation over test-time augmentations of each slice.

Every in-plane slice is super-resolved under the 8 symmetries of the square (4 rotations by 90°,
each with and without a flip; ``inference.run_slices`` with the runner wrapped in the transform
and its inverse), and the population standard deviation of the 8 aligned results is the map, in
the input's units, on the SR grid. An equivariant upsampler (nearest, bicubic) gives 0; a network
gives large values where its output depends on the orientation it sees, which is where it is
guessing. Optionally a second checkpoint (e.g. the final weights next to the EMA ones) doubles
the members to 16 (a two-member ensemble, each member with its 8 augmentations).

Cost: 8 inferences of the volume (7 when the caller passes the plain result, which is the
identity member), 16 with a second checkpoint; so it is opt-in, on CPU in particular. Memory:
two float64 accumulators of the SR volume (Welford's running mean and sum of squares).
"""
from __future__ import annotations

from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from fagan_engine.inference.ensemble import TRANSFORMS, Transform, augmented
from fagan_engine.inference.resolver import SuperResolver
from fagan_engine.inference.runners import Runner, load_runner
from fagan_engine.inference.slices import Progress, run_slices
from fagan_engine.io.geometry import Plane, SliceLayout, SRGeometry, explicit_axes, plane_axes, super_resolved_geometry
from fagan_engine.mri.forward_model import project_onto_data


def tta_uncertainty(
    image: sitk.Image,
    resolver: SuperResolver,
    plane: Optional[Plane] = None,
    plain: Optional[sitk.Image] = None,
    second_checkpoint: Optional[str] = None,
    progress: Optional[Progress] = None,
    project: bool = False,
) -> sitk.Image:
    """Standard deviation over the augmented (and ensembled) SR volumes of ``image``; float32, SR grid.

    ``resolver`` supplies the runner, normalisation and options (scale, batch, tile, plane);
    ``plane`` overrides the options' plane (a name or two sitk axes). ``plain`` is the result
    ``resolver`` already produced for ``image`` as float32: it is used as the identity member
    instead of recomputing it (pass None for a rounded integer output or a self-ensembled result). The members
    are those of the network alone (``resolver.base_runner``), whatever ``RunOptions.ensemble`` says.
    ``progress(done, total)`` counts slices over all passes.
    ``project``: every member is first projected onto the input (``mri.forward_model.project_onto_data``,
    the options' acquisition), as the product's output is, so the map keeps only the variability the
    projection cannot remove (the band the data do not measure).
    """
    options = resolver.options
    runners = [resolver.base_runner]
    if second_checkpoint is not None:
        runners.append(load_runner(options.scale, second_checkpoint, options.device, options.backend, False)[0])
    members = [(runner, transform) for runner in runners for transform in TRANSFORMS]
    count, mean, squares = 0, None, None
    explicit = plane is not None and not isinstance(plane, str)
    layout = SliceLayout.for_axes(explicit_axes(plane) if explicit else plane_axes(image, plane or options.plane))
    data = layout.to_slices(sitk.GetArrayViewFromImage(image))
    for volume in _member_volumes(image, resolver, plane, plain, members, progress):
        value = volume.astype(np.float64)
        if project:
            value = layout.from_slices(project_onto_data(layout.to_slices(value), data, options.scale, options.acquisition))
        count += 1
        if mean is None:
            mean, squares = value.copy(), np.zeros_like(value)
            continue
        delta = value - mean
        mean += delta / count
        squares += delta * (value - mean)
    std = np.sqrt(np.maximum(squares / count, 0.0)).astype(np.float32)
    return _sr_geometry(image, options.scale, plane or options.plane).apply(sitk.GetImageFromArray(std))


def _member_volumes(
    image: sitk.Image,
    resolver: SuperResolver,
    plane: Optional[Plane],
    plain: Optional[sitk.Image],
    members: List[Tuple[Runner, Transform]],
    progress: Optional[Progress],
) -> Iterator[np.ndarray]:
    """The SR array of every member, the identity member of the first runner taken from ``plain``."""
    options = resolver.options
    tile = options.tile_size if options.method == "fagan" else None
    skip_first = plain is not None
    passes = len(members) - int(skip_first)
    for index, (runner, transform) in enumerate(members):
        if index == 0 and plain is not None:
            yield sitk.GetArrayViewFromImage(plain)
            continue
        done = index - int(skip_first)
        result = run_slices(
            image, options.scale, plane or options.plane, augmented(runner, transform), resolver.normalization,
            options.batch_size, tile, _offset(progress, done, passes), "float32",
        )
        yield sitk.GetArrayViewFromImage(result)


def _offset(progress: Optional[Progress], done: int, passes: int) -> Optional[Progress]:
    """Report one pass's (slices done, slices) as progress over all ``passes``."""
    if progress is None:
        return None
    report: Callable[[int, int], None] = progress
    return lambda current, total: report(done * total + current, passes * total)


def _sr_geometry(image: sitk.Image, scale: int, plane: Plane) -> SRGeometry:
    axes = plane_axes(image, plane) if isinstance(plane, str) else tuple(sorted(plane))
    return super_resolved_geometry(image, scale, axes)
