"""Version reports as a flat table (``GET /models/{name}/compare``, ``posecompress eval``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def flatten(report: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``{"a.b.c": value}``; lists and scalars are kept as values."""
    flat: dict[str, Any] = {}
    for key, value in report.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def with_intervals(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``flat`` plus one text cell ``P`` = ``"[low, high]"`` for every confidence interval
    flattened as ``P.low`` / ``P.high`` / ``P.level`` (e.g. ``accuracy.ap_ci``)."""
    cells = dict(flat)
    for key, level in flat.items():
        if not key.endswith(".level"):
            continue
        prefix = key.removesuffix(".level")
        low, high = flat.get(f"{prefix}.low"), flat.get(f"{prefix}.high")
        if is_number(low) and is_number(high) and is_number(level):
            cells[prefix] = f"[{low:.3f}, {high:.3f}]"
    return cells


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def ratios(row: Mapping[str, Any], baseline: Mapping[str, Any]) -> dict[str, float]:
    """``row[k] / baseline[k]`` for every numeric field both have (baseline non-zero)."""
    return {
        key: float(value) / float(baseline[key])
        for key, value in row.items()
        if is_number(value) and is_number(baseline.get(key)) and baseline[key] != 0
    }


def compare_rows(
    reports: Sequence[tuple[int, Mapping[str, Any] | None]],
) -> tuple[list[str], list[tuple[int, dict[str, Any], dict[str, float]]]]:
    """(sorted union of columns, one ``(version, fields, ratios vs the first)`` per report);
    each confidence interval also has a text column (:func:`with_intervals`)."""
    flats = [(number, with_intervals(flatten(report or {}))) for number, report in reports]
    columns = sorted({key for _, flat in flats for key in flat})
    base = flats[0][1] if flats else {}
    return columns, [(number, flat, ratios(flat, base)) for number, flat in flats]


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text table (numbers with 4 significant digits)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)
