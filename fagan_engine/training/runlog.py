"""Rank-0 reporting of a run: log lines, progress bar or protocol events, metrics.jsonl, curves, TensorBoard."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from fagan_engine.util.atomic import atomic_path, atomic_write_bytes
from fagan_engine.util.protocol import emit
from fagan_engine.util.run_folder import CURVES_FILE, METRICS_FILE, is_metrics_record


class RunLog:
    """Where a run reports: stderr log lines, a tqdm bar (terminal) or ``FAGAN {json}`` events, files."""

    def __init__(self, run_dir: Path, progress: str, total: int, start: int) -> None:
        self.run_dir = run_dir
        self.mode = progress
        self.metrics_path = run_dir / METRICS_FILE
        self.records = self._kept_records(start)
        atomic_write_bytes(self.metrics_path, "".join(json.dumps(r) + "\n" for r in self.records).encode("utf-8"))
        self.bar = None
        if progress == "bar" and sys.stderr.isatty():
            from tqdm import tqdm  # lazy: tqdm only for a terminal progress bar

            self.bar = tqdm(total=total, initial=start, unit="it", file=sys.stderr, desc="training", dynamic_ncols=True)
        self.tensorboard = _tensorboard(run_dir)
        self.said_no_curves = False

    def _kept_records(self, start: int) -> List[Dict[str, Any]]:
        """Records of a resumed run up to its state's iteration (a killed run may have logged further)."""
        if start == 0 or not self.metrics_path.is_file():
            return []
        kept = []
        for line in self.metrics_path.read_bytes().decode("utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a line cut by a kill
                continue
            if is_metrics_record(record) and record["iteration"] <= start:  # a damaged line is dropped, as a cut one is
                kept.append(record)
        return kept

    def log(self, message: str) -> None:
        """A free-form log line on stderr (above the bar when there is one)."""
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            sys.stderr.write(message + "\n")
            sys.stderr.flush()

    def event(self, name: str, **fields: Any) -> None:
        if self.mode == "json":
            emit(name, **fields)

    def progress(self, fields: Dict[str, Any]) -> None:
        """One progress report: event, bar update or log line; appended to metrics.jsonl."""
        self.record({"kind": "train", **{k: fields[k] for k in ("iteration", "phase", "losses", "lr", "throughput")}})
        if self.mode == "json":
            emit("progress", **fields)
        elif self.bar is not None:
            self.bar.update(fields["iteration"] - self.bar.n)
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in fields["losses"].items()}, refresh=False)
        elif self.mode == "bar":
            losses = " ".join(f"{k} {v:.4g}" for k, v in fields["losses"].items())
            self.log(f"[{fields['phase']}] it {fields['iteration']}/{fields['total']} {losses} lr {fields['lr']:.3g} "
                     f"{fields['throughput']:.1f} patches/s eta {fields['eta_s']:.0f} s")

    def record(self, record: Dict[str, Any]) -> None:
        """Append to metrics.jsonl and TensorBoard."""
        self.records.append(record)
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            step = record["iteration"]
            scalars = record.get("losses", {}) if record["kind"] == "train" else record
            prefix = "loss" if record["kind"] == "train" else "val"
            for key, value in scalars.items():
                if key not in ("iteration", "kind") and isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(f"{prefix}/{key}", value, step)

    def plot(self) -> None:
        """Loss and validation-PSNR curves as a PNG (matplotlib Agg), written atomically. Without matplotlib (Slicer
        bundles none; the engine does not require it) the run goes on without the picture, and says so once."""
        try:
            import matplotlib  # lazy: optional dependency (matplotlib), only for the curves
        except ImportError:
            if not self.said_no_curves:
                self.log(f"note: no {CURVES_FILE}: matplotlib is not installed (pip install matplotlib draws the curves; "
                         f"{METRICS_FILE} holds the figures)")
                self.said_no_curves = True
            return

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # lazy: optional dependency (matplotlib), only for the curves

        train = [r for r in self.records if r["kind"] == "train"]
        val = [r for r in self.records if r["kind"] == "validation"]
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        for key in sorted({k for r in train for k in r["losses"]}):
            points = [(r["iteration"], r["losses"][key]) for r in train if key in r["losses"]]
            left.plot(*zip(*points), label=key)
        left.set_yscale("log")
        left.set_xlabel("iteration")
        left.set_title("training losses")
        if train:
            left.legend(fontsize=8)
        if val:
            right.plot([r["iteration"] for r in val], [r["psnr"] for r in val], "o-", label="FA-GAN (EMA)")
            right.plot([r["iteration"] for r in val], [r["bicubic_psnr"] for r in val], "--", label="bicubic")
            right.legend(fontsize=8)
        right.set_xlabel("iteration")
        right.set_title("validation PSNR (dB)")
        fig.tight_layout()
        with atomic_path(self.run_dir / CURVES_FILE, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=90, format="png")
        plt.close(fig)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def _tensorboard(run_dir: Path) -> Optional[Any]:
    """A SummaryWriter in run_dir/tensorboard when TensorBoard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # lazy: optional dependency (tensorboard); torch stays out of this module's import
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))
