"""A training run's curve, as the benchmarks plot it: wall minutes and metrics after each epoch, read from the
run's results.csv (ours, or ultralytics', whose column names are padded with spaces)."""

from __future__ import annotations

import csv
from pathlib import Path


def curve(run: Path, *columns: str, time_column: str = "time") -> list[tuple[float, ...]]:
    """[(wall minutes, *the columns' values)] after each epoch of `run`; [] where it has no results.csv."""
    file = run / "results.csv"
    if not file.is_file():
        return []
    with file.open() as f:
        rows = [{key.strip(): value for key, value in row.items()} for row in csv.DictReader(f)]
    return [(float(row[time_column]) / 60, *(float(row[column]) for column in columns)) for row in rows]
