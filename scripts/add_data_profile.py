"""``python scripts/add_data_profile.py CHECKPOINT CONFIG``: store the training data profile in a checkpoint.

Checkpoints trained before ``CheckpointMetadata.data_profile`` existed have none, so the
out-of-distribution range checks are skipped for them. This recomputes the profile from the
training recipe ``CONFIG`` (``fagan_engine.training.profile.data_profile``, the samples training
drew) and re-saves ``CHECKPOINT`` (and its ``.json`` sidecar) with ``checkpoint.save_checkpoint``;
the weights are unchanged. An ONNX export of the checkpoint keeps its old metadata: export it
again (``fagan-export``) afterwards.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("checkpoint", help="the .safetensors checkpoint to update in place")
    parser.add_argument("config", help="the training config (recipe) the checkpoint was trained with")
    args = parser.parse_args(argv)
    from safetensors.torch import load_file

    from fagan_engine.models.checkpoint import read_metadata, save_checkpoint
    from fagan_engine.training.profile import data_profile
    from fagan_engine.util.config import load_config
    from fagan_engine.util.errors import FAGANError

    try:
        metadata = read_metadata(args.checkpoint)
        cfg = load_config(args.config)
        if cfg.model.scale != metadata.scale:
            raise FAGANError(f"{args.config} trains x{cfg.model.scale}, the checkpoint is x{metadata.scale}: not its recipe")
        if cfg.data.degradation.acquisitions() != metadata.acquisitions:
            print(
                f"warning: {args.config} trains for {'/'.join(cfg.data.degradation.acquisitions())} acquisition, the checkpoint "
                f"lists {'/'.join(metadata.acquisitions)}: check that this is its recipe",
                file=sys.stderr,
            )
        profile = data_profile(cfg)
        save_checkpoint(args.checkpoint, load_file(args.checkpoint), dataclasses.replace(metadata, data_profile=profile))
    except FAGANError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    shown = {key: value for key, value in profile.items() if key != "histogram"}
    print(f"{args.checkpoint}: data_profile {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
