"""Engine version, stored in checkpoint metadata."""
__version__ = "0.1.0"
