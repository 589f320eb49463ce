"""Batch mode: the list of cases (discovery, manifest, naming), sharding, and the batch report.

A *case* is one input (volume file or DICOM series folder) with its output path, its
``RunOptions`` and its optional trust-map paths. Cases come from

- inputs on the command line: each file is a case named after its file name; each folder is
  searched recursively for volume files and DICOM series folders, named by their path relative
  to that folder (sub-folders are mirrored under ``--output-dir``);
- a CSV manifest ``input,output[,series_id][,<RunOptions field>...]``: relative paths are relative
  to the manifest's folder, empty cells take the command line's value.

Everything that can be checked before any work starts is checked here, and refuses the whole
batch with one line (exit 2): a manifest without an ``input`` or ``output`` column, unknown
columns or bad values, an output folder inside an input folder, two inputs with the same output.
See docs/batch.md.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import stat
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from fagan_engine.io.volume_io import SUPPORTED_EXTENSIONS, split_extension
from fagan_engine.util.atomic import atomic_write_bytes
from fagan_engine.util.errors import InputError
from fagan_engine.util.options import (
    IN_PLANE_UNUSED,
    MAP_KINDS,
    NETWORK_ONLY,
    THROUGH_PLANE_ENSEMBLE_SIZES,
    THROUGH_PLANE_UNUSED,
    RunOptions,
)

OUTPUT_FORMATS = {"nifti": ".nii.gz", "nrrd": ".nrrd", "mha": ".mha", "dicom": ""}
"""--output-format name -> file extension ('' = a DICOM series folder)."""
DICOM_DEFAULT_FORMAT = "nrrd"
"""Format of the output of a DICOM input when --output-format is not given."""
MANIFEST_PATH_COLUMNS = ("input", "output", "series_id")
MANIFEST_PATH_FIELDS = ("checkpoint",)
"""RunOptions fields of a manifest that name a file: relative to the manifest's folder, like its input and output."""
_DICOM_SUFFIXES = (".dcm", ".ima", ".dicom")
_DICOM_SNIFF_LIMIT = 8
"""Extension-less files looked at (for the DICM preamble) before a folder is judged not DICOM."""
MAX_MANIFEST_BYTES = 64 * 2**20
"""A longer manifest is refused (a million cases fit in far less)."""
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclasses.dataclass
class Case:
    """One input to super-resolve and where its outputs go."""

    input: str
    output: str
    options: RunOptions
    key: str
    """Stable name of the case (its output relative to the output folder): decides its shard."""
    series_id: Optional[str] = None
    maps: Dict[str, str] = dataclasses.field(default_factory=dict)
    """Trust map kind -> path, written with the output."""

    def __post_init__(self) -> None:
        """Options that cannot run are refused here, where a batch's options enter (the Python API builds cases too)."""
        if not isinstance(self.options, RunOptions):
            raise InputError(f"a case's options must be RunOptions, got {type(self.options).__name__}")
        self.options.validate()

    @property
    def output_format(self) -> str:
        return output_format_of(self.output)

    def paths(self) -> List[str]:
        """Every path the case publishes: maps first, the output last."""
        return [self.maps[k] for k in MAP_KINDS if k in self.maps] + [self.output]


def check_output_name(path: str) -> None:
    """InputError for an output whose name ends in an extension that is no volume format (``out.txt``, a typo such as
    ``out.nii.gzz``): ``output_format_of`` would take it for a DICOM series folder of that name. A DICOM folder whose
    name holds a dot is given with a trailing ``/``."""
    if Path(path).name in ("", ".", ".."):
        raise InputError(f"output {path} names no file or folder of its own; give one, e.g. {os.path.join(path, 'result.nii.gz')}")
    ext = split_extension(path)[1]
    if ext and ext not in SUPPORTED_EXTENSIONS and not path.endswith(("/", os.sep)):
        raise InputError(
            f"output {path}: {ext} is not a volume format ({', '.join(SUPPORTED_EXTENSIONS)}); a DICOM series folder "
            f"has no extension, or ends in / ({path}/)"
        )


def output_format_of(path: str) -> str:
    """nifti/nrrd/mha (also nhdr/mhd) from a file extension; a name without one is a DICOM series folder
    (``check_output_name`` refuses other extensions where a user names the output)."""
    ext = split_extension(path)[1]
    if path.endswith(("/", os.sep)) or ext not in SUPPORTED_EXTENSIONS:
        return "dicom"
    return {".nii": "nifti", ".nii.gz": "nifti", ".nhdr": "nrrd", ".mhd": "mha"}.get(ext, ext.lstrip("."))


# --- discovery -------------------------------------------------------------------------------


def is_dicom_folder(folder: Path) -> bool:
    """True when ``folder`` directly holds DICOM files (by extension, or the ``DICM`` preamble)."""
    sniffed = 0
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return False
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_file():
            continue
        name = entry.name.lower()
        if name.endswith(_DICOM_SUFFIXES):
            return True
        if split_extension(name)[1] in SUPPORTED_EXTENSIONS or sniffed >= _DICOM_SNIFF_LIMIT:
            continue
        sniffed += 1
        try:
            with open(entry.path, "rb") as handle:
                if handle.read(132)[128:132] == b"DICM":
                    return True
        except OSError:
            continue
    return False


def discover(inputs: Sequence[str]) -> List[Tuple[str, str, Optional[str]]]:
    """(input path, relative name, root folder or None) for every case under ``inputs``.

    A file (or a missing path: its case fails with 'not found') is named by its file name; a
    DICOM series folder by its folder name; any other folder is searched recursively (hidden
    entries skipped) and its cases named by their path relative to it.
    """
    found: List[Tuple[str, str, Optional[str]]] = []
    for given in inputs:
        path = Path(given)
        if not path.is_dir():
            found.append((str(path), path.name, None))
        elif is_dicom_folder(path):
            found.append((str(path), path.resolve().name, None))
        else:
            found.extend((str(p), p.relative_to(path).as_posix(), str(path)) for p in _walk(path))
    return found


def _walk(folder: Path) -> Iterable[Path]:
    """Volume files and DICOM series folders under ``folder``, sorted, hidden entries skipped."""
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        here = Path(root)
        if here != folder and is_dicom_folder(here):
            yield here
        for name in sorted(files):
            if not name.startswith(".") and split_extension(name)[1] in SUPPORTED_EXTENSIONS:
                yield here / name


def output_name(relative: str, input_path: str, output_format: Optional[str], compress: bool = True) -> str:
    """The output's path relative to --output-dir for an input named ``relative``.

    Files keep their name (and extension unless ``output_format`` changes it); a DICOM series
    folder becomes ``<folder>.nrrd``, or a folder of the same name with ``output_format`` dicom.
    Without ``compress`` (``--no-compression``) a NIfTI output is ``.nii``, not ``.nii.gz``.
    """
    name = _output_name(relative, input_path, output_format)
    return name[: -len(".gz")] if not compress and name.lower().endswith(".nii.gz") else name


def _output_name(relative: str, input_path: str, output_format: Optional[str]) -> str:
    dicom_input = Path(input_path).is_dir()
    stem = relative if dicom_input else split_extension(relative)[0]
    if output_format is None:
        if dicom_input:
            return stem + OUTPUT_FORMATS[DICOM_DEFAULT_FORMAT]
        ext = split_extension(relative)[1]
        return relative if ext in SUPPORTED_EXTENSIONS else stem + OUTPUT_FORMATS[DICOM_DEFAULT_FORMAT]
    if output_format == "dicom" and split_extension(stem)[1] in SUPPORTED_EXTENSIONS:
        return stem + os.sep  # a series folder named like a file (``scan.nrrd`` from ``scan.nrrd.nii.gz``): the separator says so
    return stem + OUTPUT_FORMATS[output_format]


def map_paths(output: str, kinds: Iterable[str]) -> Dict[str, str]:
    """``<stem>_<kind><ext>`` beside ``output`` (``.nrrd`` beside a DICOM series folder)."""
    stem, ext = split_extension(output.rstrip("/" + os.sep))
    if output_format_of(output) == "dicom":
        stem, ext = output.rstrip("/" + os.sep), ".nrrd"
    return {kind: f"{stem}_{kind}{ext}" for kind in kinds}


def cases_from_inputs(
    inputs: Sequence[str], output_dir: str, options: RunOptions, output_format: Optional[str], maps: Sequence[str] = (),
    compress: bool = True,
) -> List[Case]:
    """The cases of command-line inputs, with outputs under ``output_dir`` (``compress``: see ``output_name``)."""
    if isinstance(inputs, (str, os.PathLike)):  # a str is a sequence too: one case per character
        raise InputError(f"inputs must be a list of paths, got one path {str(inputs)!r}: give [{str(inputs)!r}]")
    if output_format is not None and output_format not in OUTPUT_FORMATS:
        raise InputError(f"output_format must be one of {', '.join(OUTPUT_FORMATS)} or None, got {output_format!r}")
    unknown = [kind for kind in maps if kind not in MAP_KINDS]
    if unknown:
        raise InputError(f"maps are among {', '.join(MAP_KINDS)}, got {unknown[0]!r}")
    check_output_dir(inputs, output_dir)
    cases = []
    for path, relative, _ in discover(inputs):
        name = output_name(relative, path, output_format, compress)
        output = str(Path(output_dir) / name) + (os.sep if name.endswith(os.sep) else "")  # Path drops the folder's separator
        cases.append(Case(path, output, options, key=name, maps=map_paths(output, maps)))
    if not cases:
        raise InputError(f"no volume files or DICOM series folders found in {', '.join(inputs)}")
    check_unique_outputs(cases)
    return cases


def check_output_dir(inputs: Sequence[str], output_dir: str) -> None:
    """Refuse an output folder inside (or equal to) an input folder: a rerun would read the outputs."""
    out = Path(os.path.realpath(output_dir))
    for given in inputs:
        if not Path(given).is_dir():
            continue
        folder = Path(os.path.realpath(given))
        if out == folder or folder in out.parents:
            raise InputError(
                f"output folder {output_dir} is inside the input folder {given}; choose an output folder outside it"
            )


def check_unique_outputs(cases: Sequence[Case], remedy: str = "rename one, or list them in a --manifest with distinct outputs") -> None:
    """Refuse two cases (or a case's map and another's output) writing the same path, or paths that differ only in
    letter case (one file on Windows and macOS); ``remedy`` ends the message."""
    seen: Dict[str, Tuple[str, str]] = {}
    for case in cases:
        for path in case.paths():
            key = os.path.normcase(os.path.realpath(path.rstrip("/" + os.sep))).lower()
            if key in seen and seen[key][0] != case.input:
                other_input, other_path = seen[key]
                same = "the output" if other_path == path else f"outputs that differ only in letter case ({other_path}),"
                raise InputError(f"inputs {other_input} and {case.input} both map to {same} {path}; {remedy}")
            seen[key] = (case.input, path)


# --- manifest ----------------------------------------------------------------------------------


def read_manifest(path: str, options: RunOptions, maps: Sequence[str] = (), required: Sequence[str] = ()) -> List[Case]:
    """The cases of a CSV manifest; every problem is one InputError naming the file and line.

    ``required``: RunOptions fields every in-plane row must set (``scale`` when --scale is not given). A row's ``mode``
    cell may differ from the command line's: each row then drops the command line's options of the other mode."""
    manifest = Path(path)
    text = _manifest_text(manifest)
    rows = list(csv.reader(text.splitlines()))
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise InputError(f"manifest {path} is empty; its first line must name the columns input,output[,...]")
    header = [cell.strip() for cell in rows[0]]
    fields = {f.name: f for f in dataclasses.fields(RunOptions)}
    for column in ("input", "output"):
        if column not in header:
            raise InputError(
                f"manifest {path} has no {column!r} column (its columns: {', '.join(header) or 'none'}); "
                "the first line must name the columns input,output[,scale,acquisition,...]"
            )
    for column in header:
        if column not in MANIFEST_PATH_COLUMNS and column.replace("-", "_") not in fields:
            raise InputError(
                f"manifest {path}: unknown column {column!r}; columns are input, output, series_id and "
                f"RunOptions fields ({', '.join(fields)})"
            )
    if len(set(header)) != len(header):
        raise InputError(f"manifest {path}: a column is named twice ({', '.join(header)})")
    base = manifest.resolve().parent
    cases = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise InputError(f"manifest {path} line {number}: {len(row)} cells, but the header names {len(header)} columns")
        cells = {column: cell.strip() for column, cell in zip(header, row)}
        for column in MANIFEST_PATH_COLUMNS:
            if "\0" in cells.get(column, ""):
                raise InputError(f"manifest {path} line {number}: the {column} cell holds a NUL byte")
        if not cells["input"] or not cells["output"]:
            raise InputError(f"manifest {path} line {number}: empty input or output")
        try:
            check_output_name(cells["output"])
        except InputError as exc:
            raise InputError(f"manifest {path} line {number}: {exc}") from None
        row_mode = cells.get("mode") or options.mode
        for name in required:
            if row_mode == "in-plane" and not cells.get(name):
                raise InputError(f"manifest {path} line {number}: no {name}; give --{name} or a {name} cell in every in-plane row")
        changes = {}
        for column, cell in cells.items():
            if column in MANIFEST_PATH_COLUMNS or cell == "":
                continue
            name = column.replace("-", "_")
            changes[name] = _parse_cell(cell, str(fields[name].type), name, f"manifest {path} line {number}")
            if name in MANIFEST_PATH_FIELDS and changes[name] is not None:
                changes[name] = str(_resolve(base, changes[name]))
        dropped: Dict[str, Any] = {}
        if changes.get("method", "fagan") != "fagan":  # a baseline row drops the command line's FA-GAN-only options
            dropped.update(NETWORK_ONLY, adapt_iterations=None, uncertainty=False, device="auto")
        if changes.get("mode") == "through-plane":  # a through-plane row its in-plane-only ones (--scale, --adapt, the uncertainty
            dropped.update({name: fields[name].default for name in THROUGH_PLANE_UNUSED}, uncertainty=False, adapt_iterations=None)
            if options.ensemble not in THROUGH_PLANE_ENSEMBLE_SIZES:  # map, an in-plane self-ensemble of 8)
                dropped["ensemble"] = None
        if changes.get("mode") == "in-plane":  # an in-plane row the thick-slice ones of a --through-plane command line
            dropped.update({name: None for name in IN_PLANE_UNUSED})
        changes = {**dropped, **changes}
        try:
            row_options = options.replace(**changes) if changes else options
        except InputError as exc:
            raise InputError(f"manifest {path} line {number}: {exc}") from None
        output = str(_resolve(base, cells["output"]))
        output += os.sep if cells["output"].endswith(("/", os.sep)) else ""  # a series folder named like a file keeps its "/"
        key = _relative_key(base, output)
        row_maps = [kind for kind in maps if kind != "uncertainty"] + ["uncertainty"] * row_options.uncertainty  # the cell
        cases.append(  # decides: true writes the map beside the output, as --uncertainty-map does; false writes none
            Case(str(_resolve(base, cells["input"])), output, row_options, key=key,
                 series_id=cells.get("series_id") or None, maps=map_paths(output, row_maps))
        )
    if not cases:
        raise InputError(f"manifest {path} lists no cases")
    check_unique_outputs(cases, remedy=f"give each row of {path} its own output")
    return cases


def _manifest_text(manifest: Path) -> str:
    """The manifest's text: a regular file (not a FIFO or device) of at most ``MAX_MANIFEST_BYTES``, UTF-8."""
    try:
        info = manifest.stat()
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"manifest {manifest} is not a regular file (a FIFO, device or folder cannot be a manifest)")
        if info.st_size > MAX_MANIFEST_BYTES:
            raise InputError(f"manifest {manifest} is {info.st_size / 2**20:.0f} MiB; a manifest may hold at most {MAX_MANIFEST_BYTES // 2**20} MiB")
        with open(manifest, "rb") as handle:
            data = handle.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"manifest not found: {manifest}") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        raise InputError(f"cannot read manifest {manifest}: {getattr(exc, 'strerror', None) or exc}") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise InputError(f"manifest {manifest} grew beyond {MAX_MANIFEST_BYTES // 2**20} MiB while it was read")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"cannot read manifest {manifest}: it is not UTF-8 text") from None


def _resolve(base: Path, value: str) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else base / path


def _relative_key(base: Path, output: str) -> str:
    try:
        return Path(output).relative_to(base).as_posix()
    except ValueError:
        return Path(output).as_posix()


def _parse_cell(cell: str, annotation: str, name: str, where: str) -> Any:
    """A manifest cell as the RunOptions field's type (int, float, bool or str)."""
    try:
        if "bool" in annotation:
            if cell.lower() in _TRUE:
                return True
            if cell.lower() in _FALSE:
                return False
            raise ValueError
        if "int" in annotation:
            return int(cell)
        if "float" in annotation:
            return float(cell)
    except ValueError:
        kind = "true or false" if "bool" in annotation else ("an integer" if "int" in annotation else "a number")
        raise InputError(f"{where}: {name} must be {kind}, got {cell!r}") from None
    return cell


# --- sharding --------------------------------------------------------------------------------------


def parse_shard(text: Optional[str], environ: Optional[Mapping[str, str]] = None) -> Tuple[int, int]:
    """(K, N) from ``--shard K/N`` (0 <= K < N), else RANK/WORLD_SIZE (torchrun), else
    SLURM_ARRAY_TASK_ID (minus SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_COUNT, else (0, 1)."""
    env = os.environ if environ is None else environ
    if text is not None:
        source, parts = "--shard", text.split("/")
        if len(parts) != 2:
            raise InputError(f"--shard must be K/N (for example 0/4), got {text!r}")
        raw = parts
    elif env.get("WORLD_SIZE") and env.get("RANK") is not None:
        source, raw = "RANK/WORLD_SIZE", [env.get("RANK", ""), env["WORLD_SIZE"]]
    elif env.get("SLURM_ARRAY_TASK_COUNT") and env.get("SLURM_ARRAY_TASK_ID") is not None:
        source = "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT"
        try:
            task = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", "0") or 0)
        except ValueError:
            raise InputError(f"{source} must be integers, got {env['SLURM_ARRAY_TASK_ID']!r}") from None
        raw = [str(task), env["SLURM_ARRAY_TASK_COUNT"]]
    else:
        return 0, 1
    try:
        index, count = int(raw[0]), int(raw[1])
    except ValueError:
        raise InputError(f"{source} must be integers K/N, got {'/'.join(raw)!r}") from None
    if count < 1 or not 0 <= index < count:
        raise InputError(f"{source}: need 0 <= K < N, got {index}/{count}")
    return index, count


def shard_of(key: str, count: int) -> int:
    """The shard (0..count-1) of a case key: a hash of its relative output name, so every process
    agrees whatever order it listed the cases in, and cases added later do not move the others."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def select_shard(cases: Sequence[Case], index: int, count: int) -> List[Case]:
    return [case for case in cases if count == 1 or shard_of(case.key, count) == index]


# --- report ------------------------------------------------------------------------------------------

REPORT_COLUMNS = ("input", "output", "status", "seconds", "warnings", "error", "checkpoint")
"""Fixed report columns; trust summary figures follow, one column each (``summary`` keys)."""


def default_report_path(output_dir: Optional[str], manifest: Optional[str], shard: Tuple[int, int]) -> str:
    """``<output-dir>/batch-report.csv`` (``batch-report.shard-K-of-N.csv`` for a shard); with a
    manifest and no --output-dir, beside the manifest."""
    if output_dir is not None:
        return shard_report_path(str(Path(output_dir) / "batch-report.csv"), shard)
    assert manifest is not None
    return shard_report_path(str(Path(manifest).with_name(f"{Path(manifest).stem}.report.csv")), shard)


def shard_report_path(report: str, shard: Tuple[int, int]) -> str:
    """``report`` with ``.shard-K-of-N`` before its extension for one of several shards (each writes its own report, so
    shards run side by side, a given ``--report`` too), else ``report``."""
    if shard[1] <= 1:
        return report
    path = Path(report)
    return str(path.with_name(f"{path.stem}.shard-{shard[0]}-of-{shard[1]}{path.suffix}"))


def write_report(path: str, rows: Sequence[Dict[str, Any]], totals: Dict[str, Any]) -> None:
    """The batch report as CSV (``.csv``) or JSON (``.json``), written atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix.lower() == ".json":
        data = json.dumps({"totals": totals, "cases": list(rows)}, indent=2, sort_keys=False, default=str, allow_nan=False)
        atomic_write_bytes(target, (data + "\n").encode("utf-8"))
        return
    extra: List[str] = []
    for row in rows:
        extra += [k for k in (row.get("summary") or {}) if k not in extra]
    lines: List[List[str]] = [list(REPORT_COLUMNS) + extra]
    for row in rows:
        summary = row.get("summary") or {}
        cells = [row.get("input"), row.get("output"), row.get("status"), row.get("seconds"),
                 " | ".join(row.get("warnings") or []), row.get("error") or "", (row.get("checkpoint") or {}).get("name")]
        lines.append(["" if v is None else str(v) for v in cells] + [_cell(summary.get(k)) for k in extra])
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(lines)
    atomic_write_bytes(target, buffer.getvalue().encode("utf-8"))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)
