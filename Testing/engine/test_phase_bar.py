"""The terminal progress bar restarts for each phase, with the phase's name and unit."""
from __future__ import annotations

from fagan_engine.cli.phase_bar import PhaseBar


def test_each_phase_restarts_the_bar_with_its_name_and_unit(capsys) -> None:
    bar = PhaseBar()
    for step in range(1, 101):
        bar.update(step, 100, "adapt")
    assert (bar.bar.desc, bar.bar.unit, bar.bar.n) == ("adapt", "step", 100)
    bar.update(1, 4)  # the slices: no phase name
    assert (bar.phase, bar.bar.unit, bar.bar.n, bar.bar.total) == ("super-resolving", "slice", 1, 4)
    started = bar.bar.start_t
    bar.update(4, 4)
    assert bar.bar.start_t == started  # the same phase keeps its timer
    bar.close()
    drawn = capsys.readouterr().err
    assert "step/s" in drawn and "super-resolving: 100%" in drawn and "4/4" in drawn
    assert bar.bar is None
