"""The resumable training state as one safetensors file: tensors + a JSON structure, no pickle.

Nested Python structures (optimizer and scheduler state dicts, RNG states) are encoded by
``encode``: every tensor is moved into the flat tensor table under a generated key and replaced
by ``{"__tensor__": key}``; tuples become ``{"__tuple__": [...]}`` and dicts with non-string keys
(optimizer state is keyed by parameter index) ``{"__items__": [[key, value], ...]}``. The JSON
goes into the safetensors header under ``fagan_train_state``. One file, written atomically,
so a kill at any instant leaves either the previous state or the new one.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Tuple

import torch

from ..atomic import atomic_write_bytes
from ..errors import CheckpointError

STATE_FORMAT = "fagan-train-state/1"
STATE_KEY = "fagan_train_state"


def encode(value: Any, prefix: str, tensors: Dict[str, torch.Tensor]) -> Any:
    """JSON-able form of ``value``; tensors are stored in ``tensors`` under keys starting with ``prefix``."""
    if isinstance(value, torch.Tensor):
        key = f"{prefix}#{len(tensors)}"
        tensors[key] = value.detach().cpu().clone().contiguous()
        return {"__tensor__": key}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v, prefix, tensors) for v in value]}
    if isinstance(value, list):
        return [encode(v, prefix, tensors) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: encode(v, prefix, tensors) for k, v in value.items()}
        return {"__items__": [[k, encode(v, prefix, tensors)] for k, v in value.items()]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} in a training state")


def decode(value: Any, tensors: Dict[str, torch.Tensor]) -> Any:
    """Inverse of ``encode``."""
    if isinstance(value, list):
        return [decode(v, tensors) for v in value]
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__tuple__" in value:
            return tuple(decode(v, tensors) for v in value["__tuple__"])
        if "__items__" in value:
            return {k: decode(v, tensors) for k, v in value["__items__"]}
        return {k: decode(v, tensors) for k, v in value.items()}
    return value


def save_state(path: Path, modules: Dict[str, Dict[str, torch.Tensor]], structure: Dict[str, Any]) -> None:
    """Write module state dicts (stored by name: ``G/head.weight``) and ``structure`` atomically."""
    from safetensors.torch import save

    tensors: Dict[str, torch.Tensor] = {}
    for name, state_dict in modules.items():
        for key, tensor in state_dict.items():
            tensors[f"{name}/{key}"] = tensor.detach().cpu().clone().contiguous()
    header = encode(structure, "~", tensors)
    header["format"] = STATE_FORMAT
    blob = save(tensors, metadata={STATE_KEY: json.dumps(header, allow_nan=False)})
    atomic_write_bytes(path, blob)


def load_state(path: Path) -> Tuple[Dict[str, Dict[str, torch.Tensor]], Dict[str, Any]]:
    """Read a state written by ``save_state``: (module state dicts by name, decoded structure)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            raw = (handle.metadata() or {}).get(STATE_KEY)
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # safetensors raises several error types for damaged files
        raise CheckpointError(f"cannot read training state {path}: {str(exc).splitlines()[0]}") from None
    if raw is None:
        raise CheckpointError(f"{path} is not an FA-GAN training state")
    header = json.loads(raw)
    if header.pop("format", None) != STATE_FORMAT:
        raise CheckpointError(f"{path} has an unsupported training state format")
    modules: Dict[str, Dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        name, sep, sub = key.partition("/")
        if sep:  # structure tensors are named "~#n", without "/"
            modules.setdefault(name, {})[sub] = tensor
    return modules, decode(header, tensors)
