"""The table printed at the end and the JSON written beside it."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchkit.runner import Bench


def fmt(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit in ("msg/s",):
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"


def target_text(row: dict[str, Any]) -> str:
    target, kind = row["target"], row["target_kind"]
    if target is None:
        return "-"
    if kind == "max":
        return f"ratio <= {target:g}"
    if kind == "min":
        return f"ratio >= {target:g}"
    return f"< {target:g} {row['unit']}"


def print_table(rows: list[dict[str, Any]], out: Any = sys.stdout) -> None:
    head = ("measurement", "unit", "ours", "baseline", "baseline is", "ratio", "target", "")
    lines = [head]
    for r in rows:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(
            (
                f"[{r['section'].split()[0]}] {r['measurement']}",
                r["unit"],
                fmt(r["ours"], r["unit"]),
                fmt(r["baseline"], r["unit"]),
                r["baseline_is"] or "-",
                ratio,
                target_text(r),
                ""
                if r["verdict"] == "-"
                else r["verdict"] + (f" ({r['note']})" if r["note"] else ""),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    align = "<<>><><<"
    for line in lines:
        cells = [f"{c:{a}{w}}" for c, a, w in zip(line, align, widths, strict=True)]
        print("  ".join(cells).rstrip(), file=out)


def git_commit() -> str | None:
    """The checkout measured (``git describe --always --dirty``), if it is a git work tree."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def write_json(path: str, bench: Bench, *, quick: bool, complete: bool, seconds: float) -> None:
    """Every row of the table, the details behind them, the commit, the machine
    and the load average at the end, as JSON in ``path``."""
    results = {
        "quick": quick,
        "complete": complete,
        "seconds": seconds,
        "commit": git_commit(),
        "load_average_at_end": os.getloadavg(),
        "machine": {
            "nproc": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpu": platform.processor() or platform.machine(),
        },
        "rows": bench.rows,
        "details": bench.details,
    }
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=2)
