"""Every benchmark, one table: printed, and written into docs/performance.md.

    python bench/report.py [--runs N] [--skip vm,vmware,...] [--no-write]

Sections (each its own module, each runnable alone):

* ``gahp``   - bench/gahp_bench.py: banner, probe, round trips, idle memory;
* ``vm``     - bench/vm_bench.py: START, CHECKPOINT and restore against raw
  libvirt on a real libvirtd with the tiny guest, bytes shipped, STATUS during
  a checkpoint, the result's arrival at a starter that polls like the real one
  against a stand-in that blocks as the C++ gahp does;
* ``node``   - bench/node_bench.py: four gahps with a VM each (memory, RSS
  and PSS), START and CHECKPOINT with one and with four at once;
* ``vmware`` - bench/vmware_bench.py (when present): START, STATUS and
  CHECKPOINT against the same raw pyVmomi calls on the vSphere simulator.

The table between the markers in docs/performance.md is replaced; the rest of
that page (what the figures mean, where a target is missed and why) is prose.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.util
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

from common import TOP, Row

PAGE = TOP / "docs" / "performance.md"
BEGIN, END = "<!-- bench/report.py: begin -->", "<!-- bench/report.py: end -->"
SECTIONS = ("gahp", "vm", "node", "vmware")


def _figure(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    if unit in ("µs",) or value >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:.1f} {unit}" if value >= 10 else f"{value:.2f} {unit}"


def _rendered(row: Row) -> list[str]:
    ratio = f"{row.ratio:.2f}x" if row.ratio is not None else ""
    met = {True: "yes", False: "**no**", None: ""}[row.met]
    baseline = f"{_figure(row.baseline, row.unit)} ({row.baseline_name})" if row.baseline is not None else ""
    return [row.what, _figure(row.ours, row.unit), baseline, ratio, row.target, met, row.note]


HEADER = ["measure", "vmgahp", "baseline", "ratio", "target", "met", "note"]


def table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in _rendered(row)) + " |" for row in rows]
    return "\n".join(lines)


def print_rows(rows: list[Row]) -> None:
    for row in rows:
        cells = _rendered(row)
        print(f"{cells[0]:<48} {cells[1]:>12}  {cells[2]:<40} {cells[3]:>7} {cells[4]:<10} {cells[5]:<6} {cells[6]}")


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    libvirt = subprocess.run(["libvirtd", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True,
                          check=False).stdout.splitlines()[:1]
    load = os.getloadavg()[0]
    return (f"{os.cpu_count()} x {cpu}, {mem:.0f} GiB; {platform.platform()}; Python {platform.python_version()}; "
            f"{libvirt}; {qemu[0] if qemu else 'no QEMU'} (TCG: no usable KVM); load {load:.2f} at the start")


def run(sections: list[str], runs: int) -> list[tuple[str, list[Row]]]:
    results = []
    for name in sections:
        module_name = f"{name}_bench"
        if importlib.util.find_spec(module_name) is None:
            print(f"report: no bench/{module_name}.py, section {name} skipped", file=sys.stderr)
            continue
        module = importlib.import_module(module_name)
        print(f"report: {name} ...", file=sys.stderr, flush=True)
        rows = module.report_rows(runs)
        print_rows(rows)
        results.append((name, rows))
    return results


def write_page(results: list[tuple[str, list[Row]]], runs: int) -> None:
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [f"Measured {when}, medians of {runs} runs per figure, on: {machine()}.", ""]
    for name, rows in results:
        body += [f"**{name}**", "", table(rows), ""]
    block = f"{BEGIN}\n" + "\n".join(body) + f"\n{END}"
    text = PAGE.read_text() if PAGE.exists() else f"# Performance\n\n{BEGIN}\n{END}\n"
    PAGE.write_text(re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S))
    print(f"report: wrote {PAGE.relative_to(TOP)}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip", default="", help="comma list of sections to leave out")
    parser.add_argument("--no-write", action="store_true", help="print only; docs/performance.md unchanged")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    results = run([s for s in SECTIONS if s not in skip], args.runs)
    if not args.no_write:
        write_page(results, args.runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
