"""FA-GAN training: data pipeline, losses (VGG19 φ5,4), trainer, resumable state, DDP, evaluation.

Imports torch; ``import fagan_engine`` does not import this package. See docs/training.md.
"""
from __future__ import annotations
