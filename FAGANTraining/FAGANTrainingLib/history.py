"""Loss and validation history from training events, shown with MRML table and plot nodes."""
import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import vtk

VALIDATION_COLUMNS = ("psnr", "bicubic_psnr", "ssim", "bicubic_ssim")
PSNR_COLUMNS = ("psnr", "bicubic_psnr")
RECORD_EVENTS = {"train": "progress", "validation": "validation"}
"""metrics.jsonl record kind -> the event it was logged with."""
_COLORS = [(0.95, 0.55, 0.1), (0.2, 0.6, 0.95), (0.3, 0.75, 0.3), (0.85, 0.25, 0.3), (0.6, 0.4, 0.8), (0.55, 0.55, 0.55)]


class TrainingHistory:
    """Rows of losses (from ``progress`` events) and validation metrics (from ``validation`` events)."""

    def __init__(self) -> None:
        self.lossColumns: List[str] = []
        self.lossRows: List[Dict[str, float]] = []
        self.validationRows: List[Dict[str, float]] = []

    @classmethod
    def fromMetrics(cls, path: Any, isRecord: Callable[[Any], bool]) -> "TrainingHistory":
        """The history an earlier session showed, read back from a run's ``metrics.jsonl`` (the trainer's own record of
        its progress and validation events); empty when the file is missing. Lines that ``isRecord`` (the engine's
        ``util.run_folder.is_metrics_record``) does not accept are skipped, as the trainer's resume skips them."""
        history = cls()
        try:
            lines = Path(path).read_bytes().decode("utf-8", errors="replace").splitlines()
        except OSError:
            return history
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isRecord(record):
                history.add(dict(record, event=RECORD_EVENTS[record["kind"]]))
        return history

    def add(self, event: Dict[str, Any]) -> bool:
        """Record one event; return True if a row was added or removed."""
        kind = event.get("event")
        if kind == "start":
            # A resumed run restarts at its last saved iteration: forget what came after it.
            iteration = int(event.get("iteration", 0))
            before = len(self.lossRows) + len(self.validationRows)
            self.lossRows = [r for r in self.lossRows if r["iteration"] <= iteration]
            self.validationRows = [r for r in self.validationRows if r["iteration"] <= iteration]
            return before != len(self.lossRows) + len(self.validationRows)
        if kind == "progress" and isinstance(event.get("losses"), dict):
            row = {"iteration": float(event.get("iteration", 0))}
            for name, value in event["losses"].items():
                if isinstance(value, (int, float)):
                    if name not in self.lossColumns:
                        self.lossColumns.append(name)
                    row[name] = float(value)
            self.lossRows.append(row)
            return True
        if kind == "validation":
            row = {"iteration": float(event.get("iteration", 0))}
            row.update({name: float(event[name]) for name in VALIDATION_COLUMNS if isinstance(event.get(name), (int, float))})
            self.validationRows.append(row)
            return True
        return False


class TrainingPlots:
    """Two tables (losses, validation) and two charts (loss, PSNR) kept in sync with a history.

    Existing nodes (from a saved scene) can be passed in; missing ones are created.
    """

    def __init__(self, scene: Any, lossTable: Any = None, validationTable: Any = None,
                 lossChart: Any = None, psnrChart: Any = None, baseName: str = "FAGAN training") -> None:
        self.scene = scene
        self.lossTable = lossTable or scene.AddNewNodeByClass("vtkMRMLTableNode", f"{baseName} losses")
        self.validationTable = validationTable or scene.AddNewNodeByClass("vtkMRMLTableNode", f"{baseName} validation")
        self.lossChart = lossChart or self._newChart(f"{baseName} loss chart", "Loss")
        self.psnrChart = psnrChart or self._newChart(f"{baseName} PSNR chart", "Validation PSNR (dB)")

    def _newChart(self, name: str, yTitle: str) -> Any:
        chart = self.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
        chart.SetTitle(name)
        chart.SetXAxisTitle("Iteration")
        chart.SetYAxisTitle(yTitle)
        return chart

    def update(self, history: TrainingHistory) -> None:
        """Rewrite both tables from ``history`` and make sure every column has a plot series."""
        _fillTable(self.lossTable, ["iteration"] + history.lossColumns, history.lossRows)
        _fillTable(self.validationTable, ["iteration"] + list(VALIDATION_COLUMNS), history.validationRows)
        for column in history.lossColumns:
            self._ensureSeries(self.lossChart, self.lossTable, column)
        for column in PSNR_COLUMNS:
            self._ensureSeries(self.psnrChart, self.validationTable, column)

    def _ensureSeries(self, chart: Any, table: Any, column: str) -> None:
        for index in range(chart.GetNumberOfPlotSeriesNodes()):
            if chart.GetNthPlotSeriesNode(index).GetYColumnName() == column:
                return
        series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{chart.GetName()} {column}")
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetXColumnName("iteration")
        series.SetYColumnName(column)
        series.SetPlotType(series.PlotTypeScatter)
        series.SetMarkerStyle(series.MarkerStyleNone)
        series.SetColor(*_COLORS[chart.GetNumberOfPlotSeriesNodes() % len(_COLORS)])
        if column.startswith("bicubic"):
            series.SetLineStyle(series.LineStyleDash)
        chart.AddAndObservePlotSeriesNodeID(series.GetID())

    def nodes(self) -> List[Any]:
        return [self.lossTable, self.validationTable, self.lossChart, self.psnrChart]

    def inScene(self, scene: Any) -> bool:
        """True while every table and chart is a node of ``scene`` (False after the scene was closed)."""
        return scene is self.scene and all(bool(scene.IsNodePresent(node)) for node in self.nodes())


def plotsInScene(scene: Any, plots: Optional[TrainingPlots], history: TrainingHistory) -> TrainingPlots:
    """``plots`` if its nodes are still in ``scene``; else new tables and charts in ``scene``, filled
    from ``history`` (a run goes on when the scene is closed: its charts come back in the new scene)."""
    if plots is not None and plots.inScene(scene):
        return plots
    plots = TrainingPlots(scene)
    plots.update(history)
    return plots


def _fillTable(tableNode: Any, columns: List[str], rows: List[Dict[str, float]]) -> None:
    table = vtk.vtkTable()
    for name in columns:
        array = vtk.vtkDoubleArray()
        array.SetName(name)
        array.SetNumberOfValues(len(rows))
        for index, row in enumerate(rows):
            array.SetValue(index, row.get(name, float("nan")))
        table.AddColumn(array)
    tableNode.SetAndObserveTable(table)


def formatEta(seconds: Optional[float]) -> str:
    """``1h 02m``, ``4m 05s``, ``12s``; empty when unknown."""
    if seconds is None or seconds < 0:
        return ""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"
