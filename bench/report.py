"""The bench's output: one table of every figure, as text, JSON and markdown."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

VARIANTS = ("floor", "chord", "group", "agentfleet")


@dataclass(frozen=True)
class Figure:
    """One row of the table: where its numbers sit in the results, and how to print them."""

    key: str
    label: str
    unit: str
    digits: int = 1
    # Broker costs (commands, worker and Redis CPU): the floor has none to compare with.
    vs_floor: bool = True


def machine(redis_version: str) -> dict[str, str]:
    """The machine and versions the figures were measured with."""
    return {
        "nproc": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "celery": version("celery"),
        "kombu": version("kombu"),
        "redis_py": version("redis"),
        "redis_server": redis_version,
        "git": _git_head(),
    }


def _cpu_model() -> str:
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _git_head() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).parent,
    )
    return done.stdout.strip() or "unknown"


def cell(stat: dict[str, float] | None, digits: int) -> str:
    """`median (p95)`, or a dash for a variant the figure does not apply to."""
    if not stat:
        return "-"
    return f"{stat['median']:.{digits}f} ({stat['p95']:.{digits}f})"


def ratio(row: dict[str, dict[str, float]], over: str) -> str:
    """agentfleet's median over another variant's median."""
    mine, theirs = row.get("agentfleet"), row.get(over)
    if not mine or not theirs or not theirs["median"]:
        return "-"
    return f"{mine['median'] / theirs['median']:.2f}x"


def rows(figures: list[Figure], values: dict[str, dict[str, dict[str, float]]]) -> list[list[str]]:
    """Table rows: the label, every variant's cell, then agentfleet's two ratios."""
    table = []
    for figure in figures:
        row = values.get(figure.key, {})
        cells = [cell(row.get(v), figure.digits) for v in VARIANTS]
        to_floor = ratio(row, "floor") if figure.vs_floor else "-"
        table.append([f"{figure.label} ({figure.unit})", *cells, to_floor, ratio(row, "chord")])
    return table


HEADER = ["figure: median (p95)", *VARIANTS, "af/floor", "af/chord"]


def text_table(table: list[list[str]], header: list[str] = HEADER) -> str:
    """A plain aligned table for the terminal."""
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *table]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(table: list[list[str]], header: list[str] = HEADER) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in table]
    return "\n".join(lines)


def write(results: dict[str, Any], folder: Path, text: str, markdown: str) -> None:
    """bench/results/latest.json and latest.md, each replaced in one rename."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in (("latest.json", json.dumps(results, indent=2)), ("latest.md", markdown)):
        scratch = folder / f"{name}.tmp"
        scratch.write_text(body + "\n", encoding="utf-8")
        scratch.replace(folder / name)
    (folder / "latest.txt.tmp").write_text(text + "\n", encoding="utf-8")
    (folder / "latest.txt.tmp").replace(folder / "latest.txt")
