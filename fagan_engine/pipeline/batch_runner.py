"""Run a batch of cases in one process: each model loaded once, per-case failures reported and skipped.

One ``SuperResolver`` is built per distinct ``RunOptions`` (lazily, then reused for every case
with those options). A case whose output exists is skipped unless ``force``. A failing case
(unreadable input, bad geometry, full disk...) is reported through ``events.case_failed`` and
the batch goes on. KeyboardInterrupt / SIGTERM stop the batch between two writes: every
published output is complete (case.py publishes atomically), the report is written with the
cases not run, and the exception propagates (exit 130 / 143). See docs/batch.md.
"""
from __future__ import annotations

import dataclasses
import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from fagan_engine.inference.memory_check import out_of_memory_advice
from fagan_engine.inference.resolver import SuperResolver
from fagan_engine.io.volume_io import remove_stale_staging, split_extension
from fagan_engine.pipeline.batch import Case, write_report
from fagan_engine.pipeline.case import CaseOutputs, Source, StagedOutputs, is_done, read_source, super_resolve_case, write_outputs
from fagan_engine.pipeline.validation import check_case_outputs
from fagan_engine.util.errors import FAGANError
from fagan_engine.util.failures import interrupt_behind, is_out_of_memory

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
        self.cases = list(cases)
        self.compress = compress
        self.force = force
        self.events = events or BatchEvents()
        self.prefetch = prefetch
        self.report_path = report_path
        self.report_extra = dict(report_extra or {})
        self.records = [CaseRecord(c.input, c.output) for c in self.cases]
        self.resolvers: Dict[str, Any] = {}
        self.resolver_errors: Dict[str, str] = {}
        self.started = time.perf_counter()

    def run(self) -> List[CaseRecord]:
        """Process every case; returns the records (also in the report)."""
        pending = [i for i, case in enumerate(self.cases) if self.force or not is_done(case.output)]
        waiting = set(pending)
        for i, case in enumerate(self.cases):
            if i not in waiting:
                self.records[i].status = "skipped"
                self.records[i].error = "output exists (pass --force to redo it)"
                _remove_stale_staging(case)
        self.events.batch_start(len(self.cases), len(pending))
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fagan-prefetch") if self.prefetch else None
        upcoming: Dict[int, "Future[Source]"] = {}
        try:
            for position, index in enumerate(pending):
                if executor is not None and position + 1 < len(pending):
                    following = pending[position + 1]
                    upcoming[following] = executor.submit(self._read, self.cases[following])
                self._run_one(index, upcoming.pop(index, None))
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

    def _read(self, case: Case) -> Source:
        return read_source(case.input, case.options, case.series_id, need_tags=case.output_format == "dicom")

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
                outcome = super_resolve_case(source.image, case.options, resolver, progress, staged.streams)
                record.warnings += [w for w in outcome.warnings if w not in record.warnings]
                record.summary = dict(outcome.summary)
                record.checkpoint = outcome.checkpoint
                write_outputs(staged, outcome, case.options, resolver, source.dicom_tags)
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
        counts = {status: sum(r.status == status for r in self.records) for status in STATUSES}
        return {**counts, "cases": len(self.records), "seconds": round(time.perf_counter() - self.started, 3), **self.report_extra}

    def write_report(self) -> None:
        if self.report_path is not None:
            write_report(self.report_path, [r.to_dict() for r in self.records], self.totals())


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
