"""The checks every run makes on its paths before any work: one ``error:`` line, exit 2, nothing written.

One layer for ``fagan-sr INPUT OUTPUT``, batch inputs, manifests and the Slicer module (which runs
``fagan-sr``). Every path is checked: the inputs, the output (volume file or DICOM series folder),
the trust maps, the JSON trust report and the batch report. The rules (docs/reliability.md):

- no path is empty or holds a NUL byte;
- no two outputs of a run share a name;
- no output reaches an input (same name, symbolic or hard link, a detached header's data file, a
  DICOM output folder holding it), whatever ``--force`` says;
- an existing output is replaced only with ``--force`` (a batch report only with ``--force`` or
  when it is an earlier report of a batch, which a rerun updates);
- every output's folder exists (a batch creates missing ones) and is writable.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence

from fagan_engine.io.dicom_writer import check_dicom_output
from fagan_engine.io.paths import InputFiles, check_output_folder, check_path_text, file_key, written_data_file
from fagan_engine.io.volume_io import check_output_path
from fagan_engine.pipeline.batch import Case, output_format_of
from fagan_engine.util.atomic import describe_os_error
from fagan_engine.util.errors import InputError, OutputError

BATCH_REPORT_SUFFIXES = (".csv", ".json")
_CSV_REPORT_HEAD = b"input,output,status,"
_JSON_REPORT_HEAD = b'{\n  "totals": {'


def check_run_paths(input_paths: Sequence[str], output: str, maps: Dict[str, str], report: Optional[str], force: bool,
                    compress: bool = True) -> None:
    """All paths of a run with one output: ``fagan-sr INPUT OUTPUT`` (trust maps and JSON report
    included), or several inputs to one output (``--stacks A B OUTPUT``); ``compress`` False: ``--no-compression``."""
    for path in input_paths:
        check_path_text(path, "input")
    inputs = InputFiles(input_paths)
    check_compression([output, *maps.values()], compress)
    check_distinct([output, *maps.values(), *([report] if report is not None else [])], compress)
    check_case_outputs(None, output, maps, force, inputs=inputs)
    if report is not None:
        check_report(report, force, inputs, batch=False)


def check_batch_run(cases: Sequence[Case], report: str, force: bool, manifest: Optional[str], compress: bool = True) -> None:
    """A batch's paths: no case output reaches any input (or the manifest), every output can be written as
    ``compress`` asks, and the report is safe to write."""
    for case in cases:
        check_path_text(case.input, "input")
        for path in case.paths():
            check_path_text(path, f"output of {case.input}")
        check_compression(case.paths(), compress)
    inputs = InputFiles([case.input for case in cases] + ([manifest] if manifest else []))
    for case in cases:
        for path in case.paths():
            refuse_input_reach(path, inputs)
    check_distinct([p for case in cases for p in case.paths()] + [report], compress)
    check_report(report, force, inputs, batch=True)


def check_compression(outputs: Iterable[str], compress: bool) -> None:
    """Refuse ``--no-compression`` (``compress`` False) for an output whose name makes it gzip (``.nii.gz``)."""
    gzip_named = next((path for path in outputs if not compress and path.lower().endswith(".nii.gz")), None)
    if gzip_named is not None:
        raise InputError(f"--no-compression cannot write {gzip_named} uncompressed: a .nii.gz file is gzip by its name; name it .nii")


def check_case_outputs(
    input_path: Optional[str], output: str, maps: Dict[str, str], force: bool,
    create_folders: bool = False, inputs: Optional[InputFiles] = None,
) -> None:
    """Raise OutputError unless the case's output and maps can be written.

    ``create_folders`` (batch mode) creates missing parent folders and lets existing maps be
    replaced (left by a run killed between publishing a case's maps and its output).
    """
    reach = inputs if inputs is not None else InputFiles([input_path] if input_path else [])
    for path in [output, *maps.values()]:
        check_path_text(path, "output")
        refuse_input_reach(path, reach)
        parent = Path(path.rstrip("/" + os.sep)).parent
        if create_folders:
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(describe_os_error(exc, parent)) from None
        replace = force or (create_folders and path != output)
        if output_format_of(path) == "dicom":
            check_output_folder(parent)  # as for a file: a DICOM folder is made in an existing, writable folder
            check_dicom_output(Path(path), replace)
        else:
            check_output_path(None, path, replace)


def refuse_input_reach(path: str, inputs: InputFiles) -> None:
    """OutputError when writing ``path`` would replace or remove an input (``--force`` or not)."""
    reached = inputs.reached_by(path)
    if reached is not None:
        raise OutputError(f"output {path} would replace the input {reached}; choose another output (--force never replaces an input)")


def check_distinct(paths: Iterable[str], compress: bool = True) -> None:
    """OutputError when two outputs of one run are the same file or folder, write the same data file (two detached
    headers written uncompressed, ``o.nhdr`` and ``o.mhd``, both write ``o.raw``), or one lies inside a DICOM output
    folder."""
    seen: Dict[object, str] = {}
    writes: Dict[object, str] = {}
    folders = []
    for path in paths:
        key = file_key(Path(path.rstrip("/" + os.sep) or path))
        if key in seen:
            raise OutputError(f"two outputs of this run are the same path: {seen[key]} and {path}")
        seen[key] = path
        written = written_data_file(path, compress)
        if written is not None:
            data_key = file_key(written)
            if data_key in writes and writes[data_key] != path:
                raise OutputError(f"outputs {writes[data_key]} and {path} would both write the data file {written}; "
                                  "give one of them another name or a single-file format")
            writes[data_key] = path
        if output_format_of(path) == "dicom":
            folders.append((os.path.normcase(os.path.realpath(path.rstrip("/" + os.sep))) + os.sep, path))
    for path in seen.values():
        resolved = os.path.normcase(os.path.realpath(path))
        inside = next((folder for prefix, folder in folders if resolved.startswith(prefix)), None)
        if inside is not None:
            raise OutputError(f"output {path} lies inside the DICOM output folder {inside}; write it elsewhere")


def check_report(path: str, force: bool, inputs: InputFiles, batch: bool) -> None:
    """The JSON trust report (``batch=False``) or the batch report: never an input, a folder or an
    unwritable place; an existing file only with ``force`` (or an earlier batch report)."""
    check_path_text(path, "report")
    suffixes = BATCH_REPORT_SUFFIXES if batch else (".json",)
    if not path.lower().endswith(suffixes):
        what = "the batch report is written as .csv or .json" if batch else "--report for one volume writes the JSON trust report"
        raise InputError(f"{what}; {path} does not end in {' or '.join(suffixes)}")
    refuse_input_reach(path, inputs)
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"report {path} is a folder, not a file name")
    _check_writable_folder(target.parent, create=batch)
    if os.path.lexists(target) and not force and not (batch and is_batch_report(target)):
        raise OutputError(f"report {path} already exists; pass --force to overwrite it")


def is_batch_report(path: Path) -> bool:
    """True when ``path`` is a report an earlier batch wrote (a rerun may update it)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(max(len(_CSV_REPORT_HEAD), len(_JSON_REPORT_HEAD)))
    except OSError:
        return False
    return os.path.isfile(path) and head.startswith(_CSV_REPORT_HEAD if path.suffix.lower() == ".csv" else _JSON_REPORT_HEAD)


def _check_writable_folder(folder: Path, create: bool) -> None:
    """OutputError unless ``folder`` exists (or, with ``create``, can be made) and can be written."""
    existing = folder
    while not existing.exists() and create and existing.parent != existing:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise OutputError(f"cannot write into {folder}: {existing} is a file, not a folder")
    check_output_folder(existing if existing.exists() else folder)

