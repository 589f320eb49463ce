"""Thick slices to isotropic voxels: the output grid and slice profile (plan), the self-supervised fit and the run;
several stacks to one volume (stacks)."""
from __future__ import annotations

from fagan_engine.through_plane.plan import ThroughPlanePlan, plan_through_plane
from fagan_engine.through_plane.run import super_resolve_through_plane
from fagan_engine.through_plane.stacks import StackReport, reconstruct_stacks

__all__ = [
    "StackReport",
    "ThroughPlanePlan",
    "plan_through_plane",
    "reconstruct_stacks",
    "super_resolve_through_plane",
]
