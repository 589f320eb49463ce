"""The resumable training state as one safetensors file: tensors + a JSON structure, no pickle.

Nested Python structures (optimizer and scheduler state dicts, RNG states) are encoded by
``encode``: every tensor is moved into the flat tensor table under a generated key and replaced
by ``{"__tensor__": key}``; tuples become ``{"__tuple__": [...]}`` and dicts with non-string keys
(optimizer state is keyed by parameter index) ``{"__items__": [[key, value], ...]}``. The JSON
goes into the safetensors header under ``fagan_train_state``. One file, written atomically,
so a kill at any instant leaves either the previous state or the new one.

``fagan_train_state_sha256`` holds ``tensor_digest.content_digest`` of the tensors and the JSON,
so a damaged or edited state (swapped tensor offsets included) is refused before use, and
``decode`` refuses references to tensors that do not exist.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Tuple

import torch

from fagan_engine.util.atomic import atomic_write_bytes
from fagan_engine.util.errors import CheckpointError
from fagan_engine.util.tensor_digest import content_digest, split_safetensors, split_tagged

STATE_FORMAT = "fagan-train-state/1"
STATE_KEY = "fagan_train_state"
DIGEST_KEY = "fagan_train_state_sha256"


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
    """Inverse of ``encode``; ValueError on a malformed structure (unknown tensor, bad item pair)."""
    if isinstance(value, list):
        return [decode(v, tensors) for v in value]
    if isinstance(value, dict):
        if "__tensor__" in value:
            key = value["__tensor__"]
            if not isinstance(key, str) or key not in tensors:
                raise ValueError(f"reference to a missing tensor {key!r}")
            return tensors[key]
        if "__tuple__" in value:
            return tuple(decode(v, tensors) for v in _list(value["__tuple__"]))
        if "__items__" in value:
            pairs = _list(value["__items__"])
            if not all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], (str, int, float, bool)) for p in pairs):
                raise ValueError("malformed __items__")
            return {k: decode(v, tensors) for k, v in pairs}
        return {k: decode(v, tensors) for k, v in value.items()}
    return value


def _list(value: Any) -> list:
    if not isinstance(value, list):
        raise ValueError(f"expected a list, got {type(value).__name__}")
    return value


def save_state(path: Path, modules: Dict[str, Dict[str, torch.Tensor]], structure: Dict[str, Any]) -> None:
    """Write module state dicts (stored by name: ``G/head.weight``) and ``structure`` atomically."""
    from safetensors.torch import save  # lazy: keeps safetensors out of this module's import

    tensors: Dict[str, torch.Tensor] = {}
    for name, state_dict in modules.items():
        for key, tensor in state_dict.items():
            tensors[f"{name}/{key}"] = tensor.detach().cpu().clone().contiguous()
    header = encode(structure, "~", tensors)
    header["format"] = STATE_FORMAT
    text = json.dumps(header, allow_nan=False)
    entries, _, data = split_safetensors(save(tensors, metadata={STATE_KEY: text}))
    blob = save(tensors, metadata={STATE_KEY: text, DIGEST_KEY: content_digest(entries, data, text)})
    atomic_write_bytes(path, blob)


def load_state(path: Path) -> Tuple[Dict[str, Dict[str, torch.Tensor]], Dict[str, Any]]:
    """Read a state written by ``save_state``: (module state dicts by name, decoded structure).

    CheckpointError (one line) if the file is unreadable, not a training state, fails its
    integrity check or holds a malformed structure; nothing is unpickled.
    """
    from safetensors.torch import load  # lazy: keeps safetensors out of this module's import

    try:
        blob = Path(path).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read training state {path}: {exc.strerror}") from None
    entries, metadata, data = split_tagged(blob, STATE_KEY, f"training state {path} is damaged", f"{path} is not an FA-GAN training state")
    raw = metadata[STATE_KEY]
    if metadata.get(DIGEST_KEY) != content_digest(entries, data, raw):
        raise CheckpointError(f"training state {path} is corrupt or was modified: checksum mismatch")
    try:
        header = json.loads(raw)
        if not isinstance(header, dict) or header.pop("format", None) != STATE_FORMAT:
            raise CheckpointError(f"{path} has an unsupported training state format")
        tensors = load(blob)
        structure = decode(header, tensors)
    except CheckpointError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"training state {path} is malformed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    except Exception as exc:  # safetensors raises its own error type for damaged files
        raise CheckpointError(f"cannot read training state {path}: {str(exc).splitlines()[0]}") from None
    modules: Dict[str, Dict[str, torch.Tensor]] = {}
    for key, tensor in sorted(tensors.items()):
        name, sep, sub = key.partition("/")
        if sep:  # structure tensors are named "~#n", without "/"
            modules.setdefault(name, {})[sub] = tensor
    return modules, structure
