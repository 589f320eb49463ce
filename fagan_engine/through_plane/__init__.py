"""Thick slices to isotropic voxels: the output grid and slice profile (plan), the self-supervised fit and the run."""
from __future__ import annotations

from fagan_engine.through_plane.plan import ThroughPlanePlan, plan_through_plane
from fagan_engine.through_plane.run import super_resolve_through_plane

__all__ = ["ThroughPlanePlan", "plan_through_plane", "super_resolve_through_plane"]
