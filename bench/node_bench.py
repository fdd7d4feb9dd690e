"""Several VM jobs on one node: memory per gahp, and START and CHECKPOINT
with one VM against four at once.

    python bench/node_bench.py [--runs N]

Every VM job has its own gahp (the starter spawns one per job), so what a
node pays is per gahp: RSS, and PSS (shared pages divided among the
processes sharing them - the honest share of four gahps) and private memory,
from ``/proc/PID/smaps_rollup`` while each gahp runs its tiny guest. Target:
30 MB per gahp. The four START at the same moment and, once all four guests
tick, CHECKPOINT at the same moment.
"""

from __future__ import annotations

import argparse
import os
import shutil
import threading
from pathlib import Path

from common import SYSTEM_URI, Row, ensure_libvirtd, median, memory_mb, real_config
from guest_fixture import TinyGuest, guest_cache_dir
from test_real_guest import wait_for_ticks
from vm_bench import Place, _gahp, destroy, timed_call

VMS = 4


def one_round(guest: TinyGuest, config: Path, count: int, base: int) -> dict[str, list[float]]:
    places = [Place(guest, base + i) for i in range(count)]
    gahps = []
    figures: dict[str, list[float]] = {"start": [], "checkpoint": [], "rss": [], "pss": [], "private": []}
    lock = threading.Lock()
    try:
        gahps = [_gahp(place, place.scratch, config) for place in places]
        for gahp in gahps:
            gahp.call("CONDOR_VM_STATUS", "9")

        def at_once(command: str, argument: str, expect: str, key: str) -> None:
            barrier = threading.Barrier(count)

            def one(gahp) -> None:
                barrier.wait()
                took = timed_call(gahp, command, argument, expect)
                with lock:
                    figures[key].append(took)

            threads = [threading.Thread(target=one, args=(gahp,)) for gahp in gahps]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert len(figures[key]) >= count, f"a {command} failed"

        at_once("CONDOR_VM_START", "kvm", "1", "start")
        for place in places:
            wait_for_ticks(place.disk, 2, timeout=300)
        for gahp in gahps:
            rss, pss, private = memory_mb(gahp.proc.pid)
            figures["rss"].append(rss)
            figures["pss"].append(pss)
            figures["private"].append(private)
        at_once("CONDOR_VM_CHECKPOINT", "1", "NULL", "checkpoint")
    finally:
        for gahp in gahps:
            gahp.close()
        for place in places:
            destroy(place.name)
            place.remove()
    return figures


def report_rows(runs: int) -> list[Row]:
    started = ensure_libvirtd()
    guest = TinyGuest.at(guest_cache_dir())
    config = real_config(SYSTEM_URI)
    alone: dict[str, list[float]] = {}
    four: dict[str, list[float]] = {}
    try:
        for index in range(max(1, runs // 2)):
            for count, into in ((1, alone), (VMS, four)):
                for key, values in one_round(guest, config, count, 910_000 + index * 10).items():
                    into.setdefault(key, []).extend(values)
    finally:
        shutil.rmtree(config.parent, ignore_errors=True)
        if started:
            os.kill(started, 15)
    rss, pss, private = (median(four[k]) for k in ("rss", "pss", "private"))
    return [
        Row("START, 4 at once (each)", median(four["start"]) * 1e3, "ms", median(alone["start"]) * 1e3, "one alone"),
        Row("CHECKPOINT, 4 at once (each)", median(four["checkpoint"]) * 1e3, "ms",
            median(alone["checkpoint"]) * 1e3, "one alone", note="4 x 256 MiB saved and compressed on 2 cores"),
        Row("gahp with a running VM, 4 gahps: PSS", pss, "MB", target="<= 30 MB", met=pss <= 30,
            note=f"RSS {rss:.1f} MB, private {private:.1f} MB; one gahp alone: RSS {median(alone['rss']):.1f}, "
                 f"PSS {median(alone['pss']):.1f} MB"),
        Row("gahp with a running VM: RSS", rss, "MB", target="<= 30 MB", met=rss <= 30),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    from report import print_rows

    print_rows(report_rows(args.runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
