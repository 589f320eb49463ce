"""Run a batch of cases in one process: each model loaded once, per-case failures reported and skipped.

One ``SuperResolver`` is built per distinct ``RunOptions`` (lazily, then reused for every case
with those options). A case whose output exists is skipped unless ``force``. A failing case
(unreadable input, bad geometry, full disk...) is reported through ``events.case_failed`` and
the batch goes on. KeyboardInterrupt / SIGTERM stop the batch between two writes: every
published output is complete (case.py publishes atomically), the report is written with the
cases not run, and the exception propagates (exit 130 / 143). A rerun updates the report: a case skipped because an
earlier run of the batch made it keeps that run's row (``earlier_rows``). See docs/batch.md.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from fagan_engine.inference.memory_check import out_of_memory_advice
from fagan_engine.inference.resolver import SuperResolver
from fagan_engine.io.dicom_writer import recover_replaced
from fagan_engine.io.volume_io import remove_stale_staging, split_extension
from fagan_engine.pipeline.batch import REPORT_COLUMNS, Case, check_output_name, check_unique_outputs, write_report
from fagan_engine.pipeline.case import CaseOutputs, Source, StagedOutputs, is_done, read_source, super_resolve_case, write_outputs
from fagan_engine.pipeline.validation import check_case_outputs, is_batch_report
from fagan_engine.util.errors import FAGANError
from fagan_engine.util.failures import interrupt_behind, is_out_of_memory
from fagan_engine.util.options import check_flags

STATUSES = ("done", "skipped", "failed", "not run")


@dataclasses.dataclass
class CaseRecord:
    """One row of the batch report."""

    input: str
    output: str
    status: str = "not run"
    seconds: Optional[float] = None
    warnings: List[str] = dataclasses.field(default_factory=list)
    error: str = ""
    summary: Dict[str, Any] = dataclasses.field(default_factory=dict)
    checkpoint: Optional[Dict[str, str]] = None
    """Name and SHA-256 of the checkpoint that made this case (from its report's identity); through-plane it depends on
    the case's slice ratio (``models.checkpoint.bundled_through_plane``). None: no checkpoint (interpolation)."""
    through_plane: Optional[Dict[str, Any]] = None
    """Through-plane: the slice thickness the engine used (and where it came from) and what the fit did for this case
    (``Outcome.through_plane``), since a batch leaves them to the engine volume by volume. None in-plane."""

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


class BatchEvents:
    """Callbacks of a batch run (the CLI prints them as a bar or protocol events). No-ops here."""

    def batch_start(self, cases: int, pending: int) -> None:
        pass

    def case_start(self, index: int, total: int, case: Case) -> None:
        pass

    def case_progress(self, index: int, total: int, done: int, steps: int, phase: Optional[str], loss: Optional[float]) -> None:
        pass

    def warning(self, case: Optional[Case], message: str) -> None:
        pass

    def case_end(self, index: int, total: int, case: Case, record: CaseRecord) -> None:
        pass


class BatchRunner:
    """Runs ``cases`` in order with one resolver per distinct options."""

    def __init__(self, cases: Sequence[Case], force: bool = False, events: Optional[BatchEvents] = None,
                 prefetch: bool = False, report_path: Optional[str] = None, report_extra: Optional[Dict[str, Any]] = None,
                 compress: bool = True) -> None:
        check_flags(force=force, prefetch=prefetch, compress=compress)
        self.cases = list(cases)
        check_unique_outputs(self.cases)  # the CLI's and manifest's own check: hand-built cases too
        for case in self.cases:
            check_output_name(case.output)
        self.compress = compress
        self.force = force
        self.events = events or BatchEvents()
        self.prefetch = prefetch
        self.report_path = report_path
        self.report_extra = dict(report_extra or {})
        self.records = [CaseRecord(c.input, c.output) for c in self.cases]
        self.skipped_without_maps: List[int] = []
        """Indices of skipped cases whose output exists without a map this run asks for (reported, not made)."""
        self.earlier: Dict[int, Dict[str, Any]] = {}
        """Index -> the earlier report's row of a case skipped because that run made it (written in its place)."""
        self.resolvers: Dict[str, Any] = {}
        self.resolver_errors: Dict[str, str] = {}
        self.started = time.perf_counter()

    def run(self) -> List[CaseRecord]:
        """Process every case; returns the records (also in the report)."""
        for case in self.cases:
            if case.output_format == "dicom":  # a --force replacement cut short by kill -9: old series back, or leftover gone
                recover_replaced(Path(case.output.rstrip("/\\")))
        pending = [i for i, case in enumerate(self.cases) if self.force or not is_done(case.output)]
        self._skip_finished(set(pending))
        self.events.batch_start(len(self.cases), len(pending))
        for i in self.skipped_without_maps:
            self.events.warning(self.cases[i], self.records[i].error)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fagan-prefetch") if self.prefetch else None
        upcoming: Dict[int, "Future[Source]"] = {}
        try:
            for position, index in enumerate(pending):
                if executor is not None and position + 1 < len(pending):
                    following = pending[position + 1]
                    upcoming[following] = executor.submit(self._read, self.cases[following])
                self._run_one(index, upcoming.pop(index, None))
                self._save_progress()
        finally:
            for future in upcoming.values():
                future.cancel()
            if executor is not None:
                executor.shutdown(wait=False)
            for case, record in zip(self.cases, self.records):  # interrupted just after publishing
                if record.status == "not run" and is_done(case.output) and self.force is False:
                    record.status = "done"
            self.write_report()
        return self.records

    def _skip_finished(self, waiting: Set[int]) -> None:
        """Mark the cases not ``waiting`` skipped (their output exists), each keeping the earlier report's row when that
        run made it (``earlier_rows``)."""
        earlier = earlier_rows(self.report_path) if len(waiting) < len(self.cases) else {}
        for i, case in enumerate(self.cases):
            if i in waiting:
                continue
            self.records[i].status = "skipped"
            self.records[i].error = "output exists (pass --force to redo it)"
            _remove_stale_staging(case)
            missing = missing_maps(case)
            if missing:  # asked for now, not made by the run that wrote the output: say so rather than skip silently
                self.records[i].error = f"output exists without its {' and '.join(missing)} map (pass --force to redo the case with it)"
                self.skipped_without_maps.append(i)
            elif (case.input, case.output) in earlier:
                self.earlier[i] = earlier[(case.input, case.output)]

    def _read(self, case: Case) -> Source:
        return read_source(case.input, case.options, case.series_id, dicom_output=case.output_format == "dicom")

    def _run_one(self, index: int, prefetched: "Optional[Future[Source]]") -> None:
        case, record = self.cases[index], self.records[index]
        total = len(self.cases)
        self.events.case_start(index, total, case)
        started = time.perf_counter()
        try:
            check_case_outputs(case.input, case.output, case.maps, self.force, create_folders=True)
            source = prefetched.result() if prefetched is not None else self._read(case)
            resolver = self._resolver(case)

            def progress(done: int, steps: int, phase: Optional[str] = None, loss: Optional[float] = None) -> None:
                self.events.case_progress(index, total, done, steps, phase, loss)

            for line in getattr(resolver, "warnings", []) or []:
                record.warnings.append(line)
            outputs = CaseOutputs(case.output, case.maps, self.force, replace_maps=True, compress=self.compress)
            with StagedOutputs(outputs) as staged:
                outcome = super_resolve_case(source.image, case.options, resolver, progress, staged.streams, source.warnings)
                record.warnings += [w for w in outcome.warnings if w not in record.warnings]
                record.summary = dict(outcome.summary)
                record.checkpoint = outcome.checkpoint
                record.through_plane = outcome.through_plane
                write_outputs(staged, outcome, case.options, resolver, source)
            record.status = "done"
        except FAGANError as exc:
            record.status, record.error = "failed", _first_line(exc)
            if not self.force and is_done(case.output):  # another process (a second batch) finished it meanwhile
                record.status, record.error = "skipped", "output exists (written meanwhile by another process)"
        except Exception as exc:  # one broken case must not stop the others; the line names the type
            interrupt = interrupt_behind(exc)
            if interrupt is not None:  # a library failed while unwinding from Ctrl-C or SIGTERM: stop the batch
                raise interrupt from None
            if is_out_of_memory(exc):
                record.error = out_of_memory_advice(case.options.mode)
            else:
                record.error = f"internal error ({type(exc).__name__}): {_first_line(exc)}"
            record.status = "failed"
        finally:
            record.seconds = round(time.perf_counter() - started, 3)
        if record.status == "done":  # warnings are about a result; a failed case prints its error line alone
            for line in record.warnings:
                self.events.warning(case, line)
        self.events.case_end(index, total, case, record)

    def _resolver(self, case: Case) -> Any:
        """The resolver for the case's options: built on first use, then reused (None in through-plane mode)."""
        if case.options.mode == "through-plane":
            return None
        key = json.dumps(case.options.to_dict(), sort_keys=True)
        if key in self.resolver_errors:
            raise _Repeated(self.resolver_errors[key])
        if key not in self.resolvers:
            try:
                self.resolvers[key] = SuperResolver(case.options)
            except FAGANError as exc:
                self.resolver_errors[key] = _first_line(exc)
                raise
        return self.resolvers[key]

    def totals(self) -> Dict[str, Any]:
        """This run's counts (the summary line and the ``finished`` event)."""
        return self._totals([r.status for r in self.records])

    def _totals(self, statuses: List[str]) -> Dict[str, Any]:
        counts = {status: statuses.count(status) for status in STATUSES}
        return {**counts, "cases": len(statuses), "seconds": round(time.perf_counter() - self.started, 3), **self.report_extra}

    def report_rows(self) -> List[Dict[str, Any]]:
        """The report's rows: this run's records, an earlier run's row for a case skipped because that run made it."""
        return [self.earlier.get(i) or record.to_dict() for i, record in enumerate(self.records)]

    def _save_progress(self) -> None:
        """The report as it stands after a case (the cases to come read ``not run``), so that a batch killed outright
        (``kill -9``, the out-of-memory killer) keeps the rows of the cases it finished; the final write says if it fails."""
        try:
            self.write_report()
        except FAGANError:
            pass

    def write_report(self) -> None:
        """Write the report (its totals count its rows, so the cases done earlier count as ``done``)."""
        if self.report_path is not None:
            rows = self.report_rows()
            write_report(self.report_path, rows, self._totals([row["status"] for row in rows]))


def missing_maps(case: Case) -> List[str]:
    """The trust map kinds ``case`` asks for whose file is not there."""
    return [kind for kind, path in case.maps.items() if not Path(path).exists()]


def earlier_rows(report_path: Optional[str]) -> Dict[Tuple[str, str], Dict[str, Any]]:
    """The ``done`` rows, by (input, output), of the batch report an earlier run wrote at ``report_path``; none when there
    is no such report or it cannot be parsed whole (it is then not trusted)."""
    path = Path(report_path) if report_path else None
    if path is None or not is_batch_report(path):
        return {}
    try:
        rows = _json_rows(path) if path.suffix.lower() == ".json" else _csv_rows(path)
    except (OSError, ValueError, csv.Error):
        return {}
    return {(row["input"], row["output"]): row for row in rows if row["status"] == "done"}


def _json_rows(path: Path) -> List[Dict[str, Any]]:
    """The rows of a JSON batch report (ValueError unless each is a record's dict)."""
    data = json.loads(path.read_text(encoding="utf-8"), parse_float=_finite, parse_constant=_finite)
    cases = data.get("cases") if isinstance(data, dict) else None
    if not isinstance(cases, list) or not all(_is_row(case) for case in cases):
        raise ValueError(f"{path} is not a batch report")
    fields = [field.name for field in dataclasses.fields(CaseRecord)]
    return [{name: case.get(name) for name in fields} for case in cases]


def _is_row(row: Any) -> bool:
    """True when ``row`` has a record's shape (what ``write_report`` writes again)."""
    if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("input", "output", "status", "error")):
        return False
    seconds, warnings, checkpoint = row.get("seconds"), row.get("warnings"), row.get("checkpoint")
    return ((seconds is None or isinstance(seconds, (int, float)) and not isinstance(seconds, bool))
            and isinstance(warnings, list) and all(isinstance(w, str) for w in warnings)
            and isinstance(row.get("summary"), dict) and (checkpoint is None or isinstance(checkpoint, dict))
            and (row.get("through_plane") is None or isinstance(row.get("through_plane"), dict)))


def _finite(text: str) -> float:
    """``text`` as a finite float (ValueError otherwise: a report never holds NaN or infinity)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} in a batch report")
    return value


def _csv_rows(path: Path) -> List[Dict[str, Any]]:
    """The rows of a CSV batch report as records' dicts (ValueError when a line does not match the header)."""
    with open(path, newline="", encoding="utf-8") as handle:
        lines = list(csv.reader(handle))
    header = lines[0] if lines else []
    if header[:len(REPORT_COLUMNS)] != list(REPORT_COLUMNS) or any(len(cells) != len(header) for cells in lines):
        raise ValueError(f"{path} is not a batch report")
    return [_csv_row(dict(zip(header, cells)), header[len(REPORT_COLUMNS):]) for cells in lines[1:]]


def _csv_row(cells: Dict[str, str], figures: List[str]) -> Dict[str, Any]:
    """One CSV line as a record's dict; the trust figures stay text (they are written again as read)."""
    seconds = _finite(cells["seconds"]) if cells["seconds"] else None
    return {"input": cells["input"], "output": cells["output"], "status": cells["status"], "seconds": seconds,
            "warnings": cells["warnings"].split(" | ") if cells["warnings"] else [], "error": cells["error"],
            "summary": {name: cells[name] for name in figures if cells[name]},
            "checkpoint": {"name": cells["checkpoint"]} if cells["checkpoint"] else None}


def _remove_stale_staging(case: Case) -> None:
    """Staging folders of a finished case left by a process killed just after publishing."""
    for path in case.paths():
        target = Path(path.rstrip("/\\"))
        if target.parent.is_dir():
            remove_stale_staging(target.parent, split_extension(target.name)[0])


class _Repeated(FAGANError):
    """The model for these options failed to load for an earlier case: the same message again."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
