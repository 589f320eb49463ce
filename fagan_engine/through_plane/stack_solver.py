"""Least-squares reconstruction of one volume from several thick-slice stacks (torch).

Each stack's forward model ``A_k``: the volume (on the output grid) sampled trilinearly at the
stack's fine samples (its in-plane voxels, the through-plane axis at the output spacing, placed by
the registration transform), then the stack's slice profile (``forward_model.slice_profile_matrix``)
along its through-plane axis. Only stack voxels whose whole profile lies inside the output grid
count (``mask``). The volume minimises ``Σ_k ‖M_k(A_k x − y_k)‖² + λ‖∇x‖² + μ‖x − u‖²`` (``u``: an
optional prior image), solved by conjugate gradients on the normal equations; ``A_kᵀ`` comes from
autograd (``A_k`` is linear).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from fagan_engine.io.geometry import SRGeometry
from fagan_engine.mri.forward_model import slice_profile_matrix
from fagan_engine.through_plane.stack_geometry import StackSlices, fine_count, fine_grid_indices

if TYPE_CHECKING:
    import torch

INSIDE = 1.0 - 1e-4
"""A stack voxel counts when this fraction of its profile falls inside the output grid."""


@dataclass
class StackOperator:
    """One stack's forward model, restricted to the voxels that see the output grid."""

    grid: "torch.Tensor"  # (1, nk, nj, ni, 3) grid_sample coordinates (align_corners=True)
    profile: "torch.Tensor"  # (n_lr, n_fine) along the through-plane numpy axis
    through: int  # numpy axis of the slices in the stack array
    data: "torch.Tensor"  # (1, 1, …) the stack's voxels (cropped), normalised
    mask: "torch.Tensor"  # same shape, 1 where the voxel counts
    crop: Tuple[slice, ...]  # numpy slices of the stack array kept

    def apply(self, volume: "torch.Tensor") -> "torch.Tensor":
        """``A_k x`` for a (1, 1, D, H, W) volume on the output grid."""
        import torch  # lazy: keeps torch out of this module's import
        import torch.nn.functional as F  # lazy: keeps torch out of this module's import

        sampled = F.grid_sample(volume, self.grid, mode="bilinear", padding_mode="border", align_corners=True)
        axis = 2 + self.through
        return torch.movedim(torch.movedim(sampled, axis, -1) @ self.profile.T, -1, axis)


def build_operator(
    stack: sitk.Image, slices: StackSlices, transform: sitk.Euler3DTransform, grid: SRGeometry, data: np.ndarray
) -> Optional[StackOperator]:
    """The forward model of one stack onto ``grid`` (None when no voxel of the stack lies inside it)."""
    import torch  # lazy: keeps torch out of this module's import

    size = np.asarray(grid.size, dtype=float)
    n_slices = stack.GetSize()[slices.axis]
    n_fine = fine_count(n_slices, slices, float(grid.spacing[0]))
    offset, a0, a1, a2 = fine_grid_indices(stack, slices, transform, grid, n_fine)
    scale = 2.0 / (size - 1.0)
    parts = [torch.from_numpy((a * scale).astype(np.float32)) for a in (a0, a1, a2)]
    coords = parts[2][:, None, None, :] + parts[1][None, :, None, :] + parts[0][None, None, :, :] + torch.from_numpy(
        (offset * scale - 1.0).astype(np.float32)
    )
    through = 2 - slices.axis
    fine_mm = n_slices * slices.spacing / n_fine
    profile = slice_profile_matrix(n_fine, n_slices, n_fine / n_slices, slices.thickness / fine_mm)
    inside = (coords.abs() <= 1.0 + 1e-5).all(dim=-1).float()
    covered = torch.movedim(torch.movedim(inside, through, -1) @ torch.from_numpy(profile.astype(np.float32)).T, -1, through)
    valid = (covered >= INSIDE).numpy()
    if not valid.any():
        return None
    bounds = [np.flatnonzero(valid.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    crop = tuple(slice(int(b[0]), int(b[-1]) + 1) for b in bounds)
    used = np.flatnonzero(profile[crop[through]].sum(axis=0) > 0)
    fine = slice(int(used[0]), int(used[-1]) + 1)
    coords = coords[tuple(fine if axis == through else crop[axis] for axis in range(3))]
    return StackOperator(
        grid=coords[None].contiguous(),
        profile=torch.from_numpy(np.ascontiguousarray(profile[crop[through], fine], dtype=np.float32)),
        through=through,
        data=torch.from_numpy(np.ascontiguousarray(data[crop], dtype=np.float32))[None, None],
        mask=torch.from_numpy(valid[crop].astype(np.float32))[None, None],
        crop=crop,
    )


def smoothness(volume: "torch.Tensor") -> "torch.Tensor":
    """``‖∇x‖²``: squared forward differences along the three axes."""
    return sum((volume.diff(dim=d) ** 2).sum() for d in (2, 3, 4))


def solve(
    start: "torch.Tensor",
    operators: Sequence[StackOperator],
    weight: float,
    iterations: int,
    progress: Optional[Callable[[int, int], None]] = None,
    tolerance: float = 1e-4,
    prior: Optional["torch.Tensor"] = None,
    prior_weight: float = 0.0,
) -> "torch.Tensor":
    """Conjugate gradients on ``(Σ AᵀMA + λ∇ᵀ∇ + μ) x = Σ AᵀMy + μu`` from ``start``; returns x."""
    import torch  # lazy: keeps torch out of this module's import

    def normal(v: "torch.Tensor", with_data: bool) -> "torch.Tensor":
        with torch.enable_grad():
            v = v.detach().requires_grad_(True)
            energy = weight * smoothness(v)
            if prior is not None:
                energy = energy + prior_weight * ((v - (prior if with_data else 0.0)) ** 2).sum()
            for op in operators:
                residual = op.mask * (op.apply(v) - (op.data if with_data else 0.0))
                energy = energy + (residual**2).sum()
            (gradient,) = torch.autograd.grad(0.5 * energy, v)
        return gradient

    x = start.clone()
    r = -normal(x, True)  # b − H x
    p = r.clone()
    rr = float((r * r).sum())
    first = rr
    for step in range(iterations):
        if rr <= tolerance**2 * first:
            break
        hp = normal(p, False)
        alpha = rr / float((p * hp).sum())
        x += alpha * p
        r -= alpha * hp
        new = float((r * r).sum())
        p = r + (new / rr) * p
        rr = new
        if progress is not None:
            progress(step + 1, iterations)
    return x


def residuals(volume: "torch.Tensor", operators: Sequence[StackOperator]) -> List[np.ndarray]:
    """``M_k(A_k x − y_k)`` per stack, on each stack's cropped grid (numpy)."""
    import torch  # lazy: keeps torch out of this module's import

    with torch.no_grad():
        return [(op.mask * (op.apply(volume) - op.data))[0, 0].numpy() for op in operators]
