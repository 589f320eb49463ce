"""ONNX export of the generator, and an ONNX Runtime runner that needs no torch.

``export_onnx`` writes ``NAME.onnx`` (dynamic batch, height and width) with the checkpoint's
metadata inside (``metadata_props["fagan"]``) and beside it as ``NAME.onnx.json``, whose
``onnx_sha256`` is the SHA-256 of the ONNX bytes. ``onnx_runner`` loads such a file with
onnxruntime only, so a Slicer without PyTorch can super-resolve; the bytes must match that
checksum, and given a ``.safetensors`` checkpoint it uses the sibling ``.onnx`` only when the
export's embedded metadata (which includes the checkpoint's checksum) equals the checkpoint's.

Self-attention never materialises the N×N matrix: the exporter would lower
``scaled_dot_product_attention`` to MatMul + Softmax + MatMul, so each call is replaced by
``onnx_attention.chunked_attention`` (a Loop over query chunks around ONNX Runtime's
``com.microsoft::MultiHeadAttention``, whose CPU kernel is flash attention). See
docs/performance.md for the memory measurements.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Tuple

import numpy as np

from fagan_engine._version import __version__
from fagan_engine.inference.batching import capped
from fagan_engine.io.paths import check_output_folder
from fagan_engine.models.checkpoint import METADATA_KEY, CheckpointMetadata, load_generator, parse_metadata, read_metadata
from fagan_engine.models.onnx_attention import replace_placeholders, sdpa_translation
from fagan_engine.util.atomic import atomic_write_bytes
from fagan_engine.util.config import NormalizationConfig
from fagan_engine.util.errors import CheckpointError, InputError, OutputError
from fagan_engine.util.stdio_capture import captured_stderr

Runner = Callable[[np.ndarray], np.ndarray]
OPSET = 18
INPUT_NAME = "lr"
OUTPUT_NAME = "sr"
def export_onnx(checkpoint_path: str, output_path: str, trim_key_padding: bool = True) -> Path:
    """Export the checkpoint's generator to ``output_path`` (.onnx) plus ``output_path + '.json'`` (``trim_key_padding``:
    see ``trace_to_onnx``)."""
    target = Path(output_path)
    if target.suffix != ".onnx":
        raise OutputError(f"ONNX output must end with .onnx, got {target.name}")
    check_output_folder(target.parent)
    model, metadata = load_generator(checkpoint_path)
    blob = generator_to_onnx(model, metadata, trim_key_padding).SerializeToString()
    sidecar = sidecar_path(target)
    if sidecar.exists():  # a kill between the writes must never pair new bytes with an old checksum
        sidecar.unlink()
    atomic_write_bytes(target, blob)
    described = dataclasses.replace(metadata, onnx_sha256=hashlib.sha256(blob).hexdigest())
    atomic_write_bytes(sidecar, (described.to_json() + "\n").encode("utf-8"))
    return target


def generator_to_onnx(model: Any, metadata: CheckpointMetadata, trim_key_padding: bool = True) -> Any:
    """Trace ``model`` (a Generator) into a checked ``onnx.ModelProto`` carrying ``metadata``."""
    try:
        import onnx  # lazy: optional dependency (onnx), only to export
        import onnxscript  # noqa: F401  # lazy: torch.onnx's exporter needs it; checked here for a clear error
    except ImportError as exc:
        raise InputError(f"exporting to ONNX needs the {exc.name} package: pip install 'fagan-engine[onnx]' "
                         "(onnx, onnxscript and onnxruntime)") from None
    import torch  # lazy: keeps torch out of this module's import (the ONNX Runtime runner needs none)

    proto = trace_to_onnx(model, torch.rand(2, 1, 24, 20), trim_key_padding)
    onnx.helper.set_model_props(proto, {METADATA_KEY: metadata.to_json()})
    onnx.checker.check_model(proto)
    return proto


def trace_to_onnx(module: Any, example: Any, trim_key_padding: bool = True) -> Any:
    """Export an NCHW → NCHW module with dynamic batch, height and width (height, width ≥ 4);
    every attention call becomes the chunked MultiHeadAttention loop of ``onnx_attention``.

    ``example`` needs a batch ≥ 2 (size 1 would be specialised). ``trim_key_padding`` drops the
    zero channels SelfAttention pads q and k with (False only to measure what that saves).
    """
    import torch  # lazy: keeps torch out of this module's import (the ONNX Runtime runner needs none)

    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height", min=4), 3: torch.export.Dim("width", min=4)}
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # the exporter logs optional-dependency notices at WARNING
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module.float().eval(),
                (example,),
                dynamo=True,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=(dims,),
                custom_translation_table={torch.ops.aten.scaled_dot_product_attention.default: sdpa_translation},
                verbose=False,
            )
    finally:
        exporter_log.setLevel(level)
    return replace_placeholders(program.model_proto, _key_channels(module) if trim_key_padding else None)


def _key_channels(module: Any) -> Optional[int]:
    """The C/8 projection width shared by every SelfAttention in ``module`` (None if none or mixed)."""
    from fagan_engine.models.archs import SelfAttention  # lazy: keeps torch out of this module's import

    widths = {m.key_channels for m in module.modules() if isinstance(m, SelfAttention)}
    return widths.pop() if len(widths) == 1 else None


def onnx_runner(checkpoint_or_onnx_path: str, scale: int) -> Tuple[Runner, NormalizationConfig]:
    """A (B, 1, h, w) → (B, 1, h·s, w·s) float32 runner on ONNX Runtime's CPU provider.

    Accepts an exported ``.onnx`` or a ``.safetensors`` checkpoint; for the latter the sibling
    ``NAME.onnx`` is used if it was exported from these weights, else (torch installed) the
    checkpoint is exported once into the user cache, else a CheckpointError says to export it.
    """
    path = Path(checkpoint_or_onnx_path)
    _import_onnxruntime()  # before any export: without ONNX Runtime the export would be written for nothing
    if path.suffix == ".onnx":
        onnx_path = path
    elif path.suffix in (".safetensors", ".json"):
        onnx_path = _onnx_for_checkpoint(path)
    else:
        raise CheckpointError(f"{path.name} is neither an exported .onnx model nor a .safetensors checkpoint")
    session, metadata = _open_session(onnx_path)
    if metadata.scale != scale:
        raise CheckpointError(f"model {onnx_path.name} is for x{metadata.scale}, but x{scale} was asked for")
    input_name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    return capped(run, scale), metadata.normalization_config()


def sidecar_path(onnx_path: Path) -> Path:
    """``NAME.onnx`` → ``NAME.onnx.json``."""
    return onnx_path.with_name(onnx_path.name + ".json")


def verified_onnx_bytes(onnx_path: Path) -> bytes:
    """The bytes of an exported model, checked against its sidecar's ``onnx_sha256`` (CheckpointError if not)."""
    try:
        blob = onnx_path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read ONNX model {onnx_path}: {exc.strerror}") from None
    expected = _sidecar_metadata(onnx_path).onnx_sha256
    if not expected:
        raise CheckpointError(f"{sidecar_path(onnx_path).name} records no checksum of {onnx_path.name}; re-export it with fagan-export")
    if hashlib.sha256(blob).hexdigest() != expected.lower():
        raise CheckpointError(f"ONNX model {onnx_path.name} is corrupt or was modified: checksum mismatch")
    return blob


def _sidecar_metadata(onnx_path: Path) -> CheckpointMetadata:
    sidecar = sidecar_path(onnx_path)
    try:
        text = sidecar.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"{onnx_path.name} has no metadata sidecar {sidecar.name}; re-export it with fagan-export") from None
    except (OSError, UnicodeDecodeError):
        raise CheckpointError(f"cannot read {sidecar.name} (not UTF-8 text?); re-export {onnx_path.name}") from None
    return parse_metadata(text, sidecar)


def export_present(checkpoint: Path) -> bool:
    """Whether an intact ONNX export of ``checkpoint`` is on disk (its sibling, or the cached one): its sidecar describes
    these weights and its bytes match the sidecar's checksum. Without PyTorch nothing can make one. Cheap (no model is
    loaded; a few MB hashed)."""
    try:
        wanted = read_metadata(str(checkpoint))
    except (CheckpointError, OSError):
        return False
    return any(_sidecar_describes(path, wanted) for path in _export_paths(checkpoint, wanted))


def _sidecar_describes(onnx_path: Path, wanted: CheckpointMetadata) -> bool:
    try:
        if not onnx_path.is_file() or dataclasses.replace(_sidecar_metadata(onnx_path), onnx_sha256="") != wanted:
            return False
        verified_onnx_bytes(onnx_path)
        return True
    except (CheckpointError, OSError):
        return False


def _export_paths(checkpoint: Path, wanted: CheckpointMetadata) -> Tuple[Path, Path]:
    """Where an export of ``checkpoint`` may be: (its sibling ``.onnx``, the user cache's)."""
    key = wanted.content_sha256 or wanted.weights_sha256
    return checkpoint.with_suffix(".onnx"), _cache_dir() / f"{key[:32]}-{__version__}.onnx"


def _onnx_for_checkpoint(checkpoint: Path) -> Path:
    """The exported model of ``checkpoint``: its sibling, a cached export, or a fresh one."""
    wanted = read_metadata(str(checkpoint))
    sibling, cached = _export_paths(checkpoint, wanted)
    for found in (sibling, cached):
        if found.is_file() and _export_matches(found, wanted):
            return found
    if importlib.util.find_spec("torch") is None:
        stale = " (the sibling .onnx is damaged or was exported from other weights)" if sibling.is_file() else ""
        force = " --force" if sibling.exists() else ""
        raise CheckpointError(
            f"no ONNX export of {checkpoint.name}{stale}; run `fagan-export{force} {checkpoint} {sibling}` "
            "where PyTorch is installed, or install PyTorch"
        )
    return _export_to_cache(checkpoint, cached)


def _export_matches(onnx_path: Path, wanted: CheckpointMetadata) -> bool:
    """True when the export is intact and made from ``wanted``'s checkpoint (else another is used or made)."""
    try:
        return _read_embedded_metadata(onnx_path) == wanted
    except CheckpointError:
        return False


def _export_to_cache(checkpoint: Path, cached: Path) -> Path:
    """Export ``checkpoint`` as ``cached``: written whole in a private folder beside it, then renamed into place, the model
    before its sidecar. Another process using or exporting the same key at the same time (batch shards sharing a home)
    never sees a missing sidecar: the key names the weights and the engine version, and an export is byte-for-byte
    reproducible, so an existing sidecar always describes the bytes beside it."""
    cache = cached.parent
    try:
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".export-", dir=str(cache)))
    except OSError as exc:
        raise OutputError(f"cannot write the ONNX export cache {cache} ({exc.strerror or exc}); set XDG_CACHE_HOME to a "
                          f"writable folder, or export beside the checkpoint: fagan-export {checkpoint} "
                          f"{checkpoint.with_suffix('.onnx')}") from None
    try:
        made = export_onnx(str(checkpoint), str(staging / cached.name))
        os.replace(made, cached)
        os.replace(sidecar_path(made), sidecar_path(cached))
    except OSError as exc:
        raise OutputError(f"cannot write the ONNX export cache {cache} ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return cached


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fagan_engine" / "onnx"


def _open_session(onnx_path: Path) -> Tuple[Any, CheckpointMetadata]:
    """An inference session and the checked metadata of an exported model.

    Worker threads park instead of spinning between ops: on a busy machine (Slicer's UI, other
    jobs) spinning threads steal the cores the computing ones need (docs/performance.md).
    """
    ort = _import_onnxruntime()
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session, metadata = _load(onnx_path, options)
    sidecar = _sidecar_metadata(onnx_path)
    if dataclasses.replace(sidecar, onnx_sha256="") != metadata:
        raise CheckpointError(f"{sidecar_path(onnx_path).name} disagrees with the metadata inside {onnx_path.name}")
    return session, metadata


def _read_embedded_metadata(onnx_path: Path) -> CheckpointMetadata:
    """Metadata of an exported model (its graph is loaded but not optimised)."""
    ort = _import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return _load(onnx_path, options)[1]


def _load(onnx_path: Path, options: Any) -> Tuple[Any, CheckpointMetadata]:
    """A session on the verified bytes (read once: no swap between the check and the use)."""
    ort = _import_onnxruntime()
    if not onnx_path.is_file():
        raise CheckpointError(f"ONNX model not found: {onnx_path}")
    blob = verified_onnx_bytes(onnx_path)
    try:
        with captured_stderr():  # ONNX Runtime logs graph notes on descriptor 2
            session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
        raise CheckpointError(f"cannot load ONNX model {onnx_path.name}: {str(exc).splitlines()[0]}") from None
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if raw is None:
        raise CheckpointError(f"{onnx_path.name} is an ONNX model but not an FA-GAN export (no metadata)")
    return session, parse_metadata(raw, onnx_path)


def _import_onnxruntime() -> Any:
    try:
        with captured_stderr():  # its import may log (telemetry) on descriptor 2
            import onnxruntime  # lazy: optional dependency (onnxruntime), checked with a clear error
    except ImportError:
        raise InputError("the ONNX backend needs onnxruntime: pip install onnxruntime") from None
    return onnxruntime

