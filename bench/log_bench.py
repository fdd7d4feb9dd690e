"""What one log line costs, and what several writer processes cost each other.

    .venv/bin/python bench/log_bench.py [--lines N] [--writers W]

* per line: ``log.get().info("request_done", result="NULL")`` inside
  ``log.bound(req_id=..., vm_id=..., command=...)``, as a worker logs a
  finished request - for each format (json, text), to a file that never
  rotates (``MAX_VM_GAHP_LOG = 0``) and to one that rotates at 10 Mb;
* the file alone, without structlog: ``LogFile.write`` of a 150-byte line
  against what the old code did (a line-buffered text file: write + flush)
  and a bare ``os.write`` on an ``O_APPEND`` descriptor;
* the same with ``W`` processes appending to one file that rotates every
  64 KB (the locking and re-opening path under contention).

In µs per line: the best batch of 250 lines of the best run (on a shared
machine the minimum is the cost, the rest is other people's load); the
contended figure is the median writer's average. Not a test: nothing here
asserts.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP / "src"))

from vmgahp import log  # noqa: E402 - after the sys.path set-up


def _setup(path: str, fmt: str, max_size: int) -> None:
    try:
        from vmgahp.log_knobs import LogOptions
    except ImportError:  # the code before rotation existed: JSON only, no options
        log.setup(path=path)
        return
    log.setup(path=path, options=LogOptions(max_size=max_size, max_num=2, format=fmt))


BATCH = 250


def _best(step, lines: int) -> float:
    """µs per call: the fastest batch of BATCH calls (a batch that another
    process's load interrupted is just slower, never faster)."""
    for _ in range(200):  # warm up: the first line opens the file
        step()
    best = float("inf")
    for _ in range(max(1, lines // BATCH)):
        start = time.perf_counter()
        for _ in range(BATCH):
            step()
        best = min(best, time.perf_counter() - start)
    return best / BATCH * 1e6


def per_line(path: str, fmt: str, max_size: int, lines: int) -> float:
    _setup(path, fmt, max_size)
    with log.bound(req_id=7, vm_id=1, command="CONDOR_VM_STATUS"):
        return _best(lambda: log.get().info("request_done", result="NULL"), lines)


def _writer(path: str, fmt: str, lines: int, queue: multiprocessing.Queue) -> None:
    _setup(path, fmt, 64 * 1024)
    with log.bound(req_id=7, vm_id=1, command="CONDOR_VM_STATUS"):
        start = time.perf_counter()
        for _ in range(lines):
            log.get().info("request_done", result="NULL")
    queue.put((time.perf_counter() - start) / lines * 1e6)


def contended(directory: str, fmt: str, writers: int, lines: int) -> float:
    path = os.path.join(directory, "shared.log")
    queue: multiprocessing.Queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_writer, args=(path, fmt, lines, queue)) for _ in range(writers)]
    for proc in procs:
        proc.start()
    results = [queue.get() for _ in procs]
    for proc in procs:
        proc.join()
    return statistics.median(results)


def file_only(directory: str, kind: str, lines: int) -> float:
    path = os.path.join(directory, f"{kind}.log")
    line = b"x" * 149 + b"\n"
    if kind == "LogFile.write":
        from vmgahp.log_file import LogFile
        from vmgahp.log_knobs import LogOptions

        write = LogFile(path, LogOptions(max_size=10 * 1024 * 1024, max_num=1)).write
    elif kind == "text file write+flush":
        handle = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - kept open across the benchmark
        text = line.decode()

        def write(_data: bytes) -> None:
            handle.write(text)
            handle.flush()
    else:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

        def write(data: bytes) -> None:
            os.write(fd, data)
    return _best(lambda: write(line), lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=20000)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    multiprocessing.set_start_method("fork")
    try:
        import vmgahp.log_file  # noqa: F401 - only: does this checkout have LogFile
        kinds = ("bare os.write", "text file write+flush", "LogFile.write")
    except ImportError:
        kinds = ("bare os.write", "text file write+flush")
    for kind in kinds:
        figures = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as directory:
                figures.append(file_only(directory, kind, args.lines * 5))
        print(f"file only, {kind:22}: {min(figures):6.2f} µs/line")
    for fmt in ("json", "text"):
        for label, max_size in (("never rotates", 0), ("rotates at 10 Mb", 10 * 1024 * 1024)):
            figures = []
            for _ in range(args.runs):
                with tempfile.TemporaryDirectory() as directory:
                    figures.append(per_line(os.path.join(directory, "gahp.log"), fmt, max_size, args.lines))
            print(f"{fmt:4} one writer, {label:17}: {min(figures):6.2f} µs/line")
        with tempfile.TemporaryDirectory() as directory:
            figure = contended(directory, fmt, args.writers, args.lines)
        print(f"{fmt:4} {args.writers} writers, rotating every 64 KB: {figure:6.2f} µs/line (median writer)")


if __name__ == "__main__":
    main()
