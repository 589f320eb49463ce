"""``fagan-sr`` batch mode: ``fagan-sr INPUT... --output-dir D`` or ``fagan-sr --manifest CSV``.

Builds the case list (``batch.py``), keeps this process's shard, runs it (``batch_runner.py``)
and reports: a progress bar over cases with one bar per case, or protocol events
(``batch_start``, ``case_start``, ``progress``, ``warning``, ``case_end``, ``finished``); one
``error: <input>: ...`` line per failed case, a summary line, exit 2 if any case failed.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

from fagan_engine.cli.arguments import run_options
from fagan_engine.cli.phase_bar import PhaseBar
from fagan_engine.inference.runners import compute_description
from fagan_engine.pipeline.batch import (
    Case,
    cases_from_inputs,
    default_report_path,
    parse_shard,
    read_manifest,
    select_shard,
    shard_report_path,
)
from fagan_engine.pipeline.batch_runner import BatchEvents, BatchRunner, CaseRecord
from fagan_engine.pipeline.validation import check_batch_run
from fagan_engine.util.atomic import remove_stale_temp_files
from fagan_engine.util.errors import InputError
from fagan_engine.util.locking import RunFolderLock
from fagan_engine.util.options import MAP_FLAGS
from fagan_engine.util.progress import RunFraction, event_fields
from fagan_engine.util.protocol import emit


def run_batch(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.series_id is not None:
        raise InputError("--series-id applies to one volume; in a batch give a series_id column in the --manifest")
    options = run_options(args)
    maps = [kind for kind in MAP_FLAGS if getattr(args, kind + "_map", None) is not None]
    for kind in maps:
        if getattr(args, kind + "_map") is not True:
            raise InputError(
                f"in batch mode --{kind.replace('_lr', '').replace('_', '-')}-map{'-lr' if kind.endswith('_lr') else ''} takes no PATH: "
                "each map is written beside its output"
            )
    if args.manifest is not None:
        if args.paths:
            raise InputError("give either inputs with --output-dir or a --manifest, not both")
        if args.output_format is not None:
            raise InputError("--output-format does not apply to a --manifest: each output's extension (none: a DICOM folder) picks its format")
        required = ["scale"] if args.scale is None else []  # rows in-plane (by the command line or their mode cell)
        cases = read_manifest(args.manifest, options, maps, required)
    else:
        if not args.paths:
            raise InputError("batch mode needs inputs (files or folders) before --output-dir, or a --manifest")
        cases = cases_from_inputs(args.paths, args.output_dir, options, args.output_format, maps, compress=not args.no_compression)
    shard = parse_shard(args.shard)
    mine = select_shard(cases, *shard)
    report = shard_report_path(args.report, shard) if args.report else default_report_path(args.output_dir, args.manifest, shard)
    check_batch_run(cases, report, args.force, args.manifest, compress=not args.no_compression)
    events = CliEvents(args.progress, compute_description(options))
    runner = BatchRunner(
        mine, force=args.force, events=events, prefetch=args.prefetch, report_path=report,
        report_extra={"shard": f"{shard[0]}/{shard[1]}", "all_cases": len(cases)}, compress=not args.no_compression,
    )
    try:
        with batch_lock(report) as lock:  # the report is written after every case: a kill -9 mid-write left its temporary
            remove_stale_temp_files(Path(report).parent, lock.acquired_at, Path(report).name)
            records = runner.run()
    finally:
        events.close()
    totals = runner.totals()
    seconds = time.perf_counter() - started
    failed = [r for r in records if r.status == "failed"]
    shard_text = f" (shard {shard[0]}/{shard[1]}: {len(mine)} of {len(cases)} cases)" if shard[1] > 1 else ""
    if args.progress == "json":
        emit("finished", report=report, seconds=round(seconds, 3), **{k: totals[k] for k in ("done", "skipped", "failed", "cases")})
    sys.stderr.write(
        f"batch{shard_text}: {totals['done']} done, {totals['skipped']} skipped (output exists), {totals['failed']} failed; "
        f"report {report} ({seconds:.1f} s)\n"
    )
    return 2 if failed else 0


def batch_lock(report: str) -> RunFolderLock:
    """A lock on the batch report (``.<report>.lock`` beside it): one batch (or shard) writes it at a time,
    so two batches on one output folder never both run its cases, and the report tells the truth."""
    target = Path(report)
    return RunFolderLock(target.parent, "batch report folder", name=f".{target.name}.lock", remove=True, label=f"batch report {report}")


class CliEvents(BatchEvents):
    """Batch events as a progress bar (stderr), protocol events (stdout), or nothing; per-case
    errors and warnings are always one stderr line each."""

    def __init__(self, mode: str, compute: Optional[Dict[str, Any]] = None) -> None:
        self.mode = mode
        self.compute = dict(compute or {})
        """The resolved device and CPU threads, reported in ``batch_start``."""
        self.outer: Any = None
        self.inner = PhaseBar(position=1, leave=False)
        self.pending = 0
        self.finished = 0
        self.case_run = RunFraction()

    def _line(self, text: str) -> None:
        if self.outer is not None:
            from tqdm import tqdm  # lazy: tqdm only for a terminal progress bar

            tqdm.write(text, file=sys.stderr)
        else:
            sys.stderr.write(text + "\n")

    def batch_start(self, cases: int, pending: int) -> None:
        self.pending = pending
        if self.mode == "json":
            emit("batch_start", cases=cases, pending=pending, skipped=cases - pending, **self.compute)
        elif self.mode == "bar" and pending:
            from tqdm import tqdm  # lazy: tqdm only for a terminal progress bar

            self.outer = tqdm(total=pending, unit="case", file=sys.stderr, desc="batch", position=0)

    def case_start(self, index: int, total: int, case: Case) -> None:
        self.case_run = RunFraction()
        if self.mode == "json":
            emit("case_start", case=index, cases=total, input=case.input, output=case.output, position=self.finished, pending=self.pending)

    def case_progress(self, index: int, total: int, done: int, steps: int, phase: Optional[str], loss: Optional[float]) -> None:
        fraction = done / steps if steps else 0.0
        if self.mode == "json":
            extra = event_fields(phase, loss)
            run_fraction = self.case_run.update(done, steps, phase)
            overall = (self.finished + run_fraction) / self.pending if self.pending else 1.0
            emit("progress", case=index, cases=total, done=done, total=steps, fraction=round(fraction, 4),
                 run_fraction=round(run_fraction, 4), overall=round(overall, 4), **extra)
        elif self.mode == "bar":
            self.inner.update(done, steps, phase)

    def warning(self, case: Optional[Case], message: str) -> None:
        if self.mode == "json":
            emit("warning", message=message, input=case.input if case else None)
        else:
            self._line(f"warning: {case.input + ': ' if case else ''}{message}")

    def case_end(self, index: int, total: int, case: Case, record: CaseRecord) -> None:
        self.inner.close()
        self.finished += 1
        if self.outer is not None:
            self.outer.update(1)
        if self.mode == "json":
            emit("case_end", case=index, cases=total, input=case.input, output=case.output, status=record.status,
                 seconds=record.seconds, error=record.error or None, warnings=record.warnings, summary=record.summary or None,
                 checkpoint=record.checkpoint, through_plane=record.through_plane,
                 overall=round(self.finished / self.pending, 4) if self.pending else 1.0)
        if record.status == "failed":
            self._line(f"error: {case.input}: {record.error}")

    def close(self) -> None:
        self.inner.close()
        if self.outer is not None:
            self.outer.close()
        self.outer = None
