"""What every result carries: the research-use notice, the checkpoint identity, the engine version,
the run's summary figures and warnings (issue 10).

The identity is known before the run from the checkpoint's metadata (``localIdentity``; the
through-plane weights' from the engine, ``throughPlaneIdentity``) and is completed by the engine's
JSON report (``--report``: ``summary``, ``warnings``, ``identity``) when
the engine writes one. ``stampResultNode`` writes it into node attributes and the node
description, which MRML saves with the scene (``.mrml`` / ``.mrb``) and restores on load.
"""
import json
import math
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

import vtk

from .engine import ensureEngineImportable

NOTICE = "research use, not for diagnosis"
ATTRIBUTE_PREFIX = "FAGAN."
IDENTITY_KEYS = ("checkpoint", "sha256", "training_data", "acquisition", "engine_version")
# Names the engine's report may use for the identity fields (first match wins).
_IDENTITY_SYNONYMS = {
    "checkpoint": ("checkpoint", "checkpoint_name", "name"),
    "sha256": ("sha256", "checkpoint_sha256", "content_sha256", "weights_sha256"),
    "training_data": ("training_data", "data"),
    "acquisition": ("acquisitions", "checkpoint_acquisition", "acquisition"),
    "engine_version": ("engine_version", "version"),
}


def _text(value: Any) -> str:
    """A one-line text for an identity or summary value (lists joined, dicts as compact JSON)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return " ".join(str(value).split())


def trainingDataSummary(training: Any) -> str:
    """One line about a checkpoint's training data, from its metadata ``training`` dict."""
    if not isinstance(training, dict):
        return _text(training)
    for key in ("data", "training_data", "dataset", "train"):
        if training.get(key):
            return _text(training[key])
    simple = {k: v for k, v in training.items() if not isinstance(v, (dict, list))}
    return ", ".join(f"{k}: {simple[k]}" for k in sorted(simple))


def localIdentity(checkpointInfo: Any, method: str, acquisition: str, engineVersion: str,
                  throughPlane: bool = False) -> Dict[str, str]:
    """The identity known before the run. ``checkpointInfo`` is a CheckpointInfo or None (an
    interpolation method, or the engine's own through-plane weights)."""
    if method != "fagan":
        return {"checkpoint": f"none ({method} interpolation)", "sha256": "", "training_data": "",
                "acquisition": "", "engine_version": engineVersion}
    if checkpointInfo is None:
        name = "bundled through-plane weights" if throughPlane else "bundled default"
        return {"checkpoint": name, "sha256": "", "training_data": "", "acquisition": "" if throughPlane else acquisition,
                "engine_version": engineVersion}
    md = checkpointInfo.metadata
    return {
        "checkpoint": checkpointInfo.path.name,
        "sha256": getattr(md, "file_sha256", ""),  # the digest the engine's report gives: of the verified file
        "training_data": trainingDataSummary(getattr(md, "training", None)),
        "acquisition": _text(getattr(md, "acquisitions", "")),
        "engine_version": engineVersion,
    }


def throughPlaneIdentity(ratio: Optional[float] = None) -> Dict[str, str]:
    """Name, SHA-256 (of the file the engine verified, as its report gives it) and training summary of the engine's
    bundled through-plane start for slice ratio ``ratio`` (None: the general one); empty if the engine ships none or
    it does not verify. Known before the run (``volumeSliceRatio``); the engine's report (a batch: each case's
    ``case_end``) names the one it used, which replaces this."""
    ensureEngineImportable()
    from fagan_engine.models.checkpoint import read_through_plane
    from fagan_engine.util.errors import FAGANError

    try:
        found = read_through_plane(ratio=ratio).identity()
    except FAGANError:
        return {}
    return {"checkpoint": found["name"], "sha256": found["sha256"],
            "training_data": found.get("training_data") or trainingDataSummary(found["training"])}


def identityFromReport(identity: Any, engineVersion: Any = None) -> Dict[str, str]:
    """The report's ``identity`` with our key names (unknown or empty values left out).

    The engine nests the checkpoint's identity (``checkpoint: {name, sha256, training_data,
    acquisitions, ...}``) beside the run's own ``acquisition``; a flat form is read as well.
    """
    if not isinstance(identity, dict):
        return {}
    found = {}
    checkpoint = identity.get("checkpoint")
    if isinstance(checkpoint, dict):
        flat = dict(checkpoint)
        flat["checkpoint"] = checkpoint.get("name") or checkpoint.get("path")
        flat.setdefault("engine_version", identity.get("engine_version"))
        flat.pop("acquisition", None)  # only the checkpoint's own acquisitions
    elif "checkpoint" in identity and not checkpoint:
        flat = {"engine_version": identity.get("engine_version")}  # no checkpoint (interpolation, or not reported)
    else:
        flat = identity
    for key, names in _IDENTITY_SYNONYMS.items():
        for name in names:
            if flat.get(name) not in (None, "", [], {}):
                value = flat[name]
                found[key] = Path(value).name if key == "checkpoint" and isinstance(value, str) else _text(value)
                break
    if "engine_version" not in found and engineVersion:
        found["engine_version"] = _text(engineVersion)
    return found


class RunReport:
    """The engine's JSON report, read defensively: a missing or malformed part is just empty."""

    def __init__(self, summary: Optional[Dict[str, Any]] = None, warnings: Optional[List[str]] = None,
                 identity: Optional[Dict[str, str]] = None, settings: Optional[Dict[str, str]] = None) -> None:
        self.summary = summary or {}
        self.warnings = warnings or []
        self.identity = identity or {}
        self.settings = settings or {}
        """Run settings the engine decided (``planSettings``), recorded over the panel's."""

    @classmethod
    def read(cls, path: Any) -> "RunReport":
        """Parse ``path``; raise ValueError (one line) if it exists but is not a JSON object."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            raise ValueError(f"the engine's report {Path(path).name} is unreadable ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f"the engine's report {Path(path).name} is not a JSON object")
        summary = data.get("summary") if isinstance(data.get("summary"), dict) else {}
        warnings = [_text(w) for w in data.get("warnings", []) if _text(w)] if isinstance(data.get("warnings"), list) else []
        identity = data.get("identity")
        return cls(summary, warnings, identityFromReport(identity, data.get("engine_version")), planSettings(identity))


def planSettings(identity: Any) -> Dict[str, str]:
    """What the engine decided that the panel left to it: through-plane, the slice thickness it used and where it came
    from (the report's ``identity.through_plane_plan``), and what the per-scan fit did (``identity.through_plane_fit``);
    empty when the report does not say."""
    settings: Dict[str, str] = {}
    plan = identity.get("through_plane_plan") if isinstance(identity, dict) else None
    thickness = plan.get("thickness") if isinstance(plan, dict) else None
    if isinstance(thickness, (int, float)) and not isinstance(thickness, bool):
        settings["sliceThickness"] = f"{thickness:g} mm ({thicknessSourceWords(_text(plan.get('thickness_source')))})"
    fit = identity.get("through_plane_fit") if isinstance(identity, dict) else None
    if isinstance(fit, dict) and isinstance(fit.get("steps"), int):
        settings["fit"] = f"{fit['steps']} steps, kept step {_text(fit.get('best_step'))} ({_text(fit.get('stopped'))})"
    return settings


def thicknessSourceWords(source: Any) -> str:
    """The engine's words for where a slice thickness came from (a report's ``thickness_source``)."""
    ensureEngineImportable()
    from fagan_engine.through_plane.plan import thickness_source_words

    return thickness_source_words(source)


def mergeWarnings(*lists: List[str]) -> List[str]:
    """Warnings in order of first appearance, without repeats."""
    seen: List[str] = []
    for lines in lists:
        for line in lines:
            text = _text(line)
            if text and text not in seen:
                seen.append(text)
    return seen


def formatFigure(value: Any) -> str:
    """Summary figure for display: 4 significant digits for numbers, text as it is."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    return _text(value)


def figureLabel(key: str) -> str:
    """``relative_rms_residual`` -> ``Relative rms residual``, ``targetSpacing`` -> ``Target spacing``."""
    words = re.sub(r"(?<=[a-z0-9])([A-Z])", lambda m: " " + m.group(1).lower(), str(key)).replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def describeRun(inputName: str, settings: Dict[str, str], identity: Dict[str, str], warnings: List[str]) -> str:
    """The description text of a result node (saved with the scene)."""
    lines = [f"FA-GAN super-resolution result: {NOTICE}.", f"Input: {inputName}"]
    lines += [f"{figureLabel(k)}: {v}" for k, v in settings.items() if v]
    lines.append(f"Checkpoint: {identity.get('checkpoint', '')}")
    if identity.get("sha256"):
        lines.append(f"Checkpoint SHA-256: {identity['sha256']}")
    if identity.get("training_data"):
        lines.append(f"Training data: {identity['training_data']}")
    if identity.get("acquisition"):
        lines.append(f"Checkpoint acquisition: {identity['acquisition']}")
    lines.append(f"Engine version: {identity.get('engine_version', '')}")
    lines += [f"Warning: {w}" for w in warnings]
    return "\n".join(lines)


def stampResultNode(node: Any, inputName: str, settings: Dict[str, str], identity: Dict[str, str],
                    warnings: List[str], role: str = "result") -> None:
    """Write the notice, identity, run settings and warnings into ``node``'s attributes
    (``FAGAN.*``, replacing those of an earlier run) and its description."""
    for name in list(node.GetAttributeNames() or []):
        if name.startswith(ATTRIBUTE_PREFIX):
            node.RemoveAttribute(name)
    values = {
        "Notice": NOTICE,
        "Role": role,
        "Checkpoint": identity.get("checkpoint", ""),
        "CheckpointSHA256": identity.get("sha256", ""),
        "TrainingData": identity.get("training_data", ""),
        "CheckpointAcquisition": identity.get("acquisition", ""),
        "EngineVersion": identity.get("engine_version", ""),
        "Warnings": " | ".join(warnings),
    }
    values.update({key[:1].upper() + key[1:]: value for key, value in settings.items()})
    for key, value in values.items():
        if value:
            node.SetAttribute(ATTRIBUTE_PREFIX + key, value)
    node.SetDescription(describeRun(inputName, settings, identity, warnings))


def isFAGANResult(node: Any) -> bool:
    """True for nodes this extension created (results and maps carry the notice)."""
    return node is not None and bool(node.GetAttribute(ATTRIBUTE_PREFIX + "Notice"))


def summaryRows(inputName: str, settings: Dict[str, str], identity: Dict[str, str], summary: Dict[str, Any],
                warnings: List[str]) -> List[List[str]]:
    """(item, value) rows of the summary table and panel."""
    rows = [["Notice", NOTICE], ["Input", inputName]]
    rows += [[figureLabel(k), v] for k, v in settings.items() if v]
    rows += [["Checkpoint", identity.get("checkpoint", "")], ["Checkpoint SHA-256", identity.get("sha256", "")],
             ["Training data", identity.get("training_data", "")],
             ["Checkpoint acquisition", identity.get("acquisition", "")],
             ["Engine version", identity.get("engine_version", "")]]
    rows += [[figureLabel(k), formatFigure(summary[k])] for k in summary]
    rows += [["Warning", w] for w in warnings]
    return [row for row in rows if row[1] != ""]


def fillSummaryTable(tableNode: Any, rows: List[List[str]]) -> None:
    """Two text columns, Item and Value."""
    table = vtk.vtkTable()
    for index, name in enumerate(("Item", "Value")):
        column = vtk.vtkStringArray()
        column.SetName(name)
        for row in rows:
            column.InsertNextValue(row[index])
        table.AddColumn(column)
    tableNode.SetAndObserveTable(table)
