"""Networks and their files: ``models.archs`` (generator, discriminator, blocks; imports torch), ``models.checkpoint``
(safetensors checkpoints with verified metadata; reading metadata needs no torch) and the ONNX attention export.

Nothing is imported here, so ``fagan_engine.models.checkpoint`` stays usable in a Python without torch.
"""
