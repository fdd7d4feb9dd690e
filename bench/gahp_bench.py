"""The daemon's own costs: start-up, round trips, memory when idle.

    python bench/gahp_bench.py [--runs N]

* spawn -> banner and the ``-M 0`` probe, against a bare ``python -c pass``
  plus HTCondor's configuration library reading the same real configuration
  file (``import htcondor2`` and one ``param`` lookup): target <= 2x;
* round trips, back to back: ``COMMANDS``, and ``CONDOR_VM_STATUS`` to its
  ``S`` - once with the previous STATUS's result collected first (as the
  starter sends them, one per interval) and once with no wait at all, where
  each STATUS's read (on the reader thread) competes with the next line for
  the interpreter; target < 100 µs;
* memory after the handshake (RSS, PSS, private).

Everything here runs against libvirt's built-in ``test:///default``
hypervisor, so the figures are the gahp's, not a hypervisor's.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import GAHP, PYTHON, Gahp, Row, alternate, median, memory_mb, node_env, real_config, timed

BASELINE = "import htcondor2; htcondor2.param.get('VM_TYPE')"


def startup(runs: int) -> list[Row]:
    config = real_config()
    work = Path(tempfile.mkdtemp(prefix="vmgahp-bench-"))
    env = node_env(config, work)
    try:
        def bare() -> float:
            return timed(lambda: subprocess.run([PYTHON, "-c", "pass"], check=True))

        def with_config() -> float:
            return timed(lambda: subprocess.run([PYTHON, "-c", BASELINE], env=env, check=True))

        def banner() -> float:
            began = time.perf_counter()
            gahp = Gahp(env, work)
            took = time.perf_counter() - began
            gahp.proc.kill()
            gahp.proc.wait()
            return took

        def probe() -> float:
            return timed(lambda: subprocess.run(GAHP + ["-f", "-M", "0", "vmtype", "kvm"], env=env, check=True,
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        banner()  # the first start compiles and caches bytecode
        bare_s, base_s, banner_s, probe_s = (median(s) for s in alternate(runs, bare, with_config, banner, probe))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(config.parent, ignore_errors=True)
    name = "python -c pass + htcondor2 config load"
    return [
        Row("python -c pass", bare_s * 1e3, "ms"),
        Row("python + htcondor2 reading the config", base_s * 1e3, "ms", bare_s * 1e3, "python -c pass"),
        Row("spawn -> banner", banner_s * 1e3, "ms", base_s * 1e3, name, "<= 2x", banner_s <= 2 * base_s),
        Row("-M 0 probe (kvm)", probe_s * 1e3, "ms", base_s * 1e3, name, "<= 2x", probe_s <= 2 * base_s),
    ]


def round_trips(runs: int) -> list[Row]:
    config = real_config()
    work = Path(tempfile.mkdtemp(prefix="vmgahp-bench-"))
    gahp = Gahp(node_env(config, work), work)
    try:
        gahp.handshake()
        time.sleep(1.0)  # the post-banner warm-up (logging, the request path) is done
        commands = [timed(lambda: gahp.ask("COMMANDS")) for _ in range(runs * 50)]

        def status_after_result() -> float:
            began = time.perf_counter()
            request_id, _ = gahp.request("CONDOR_VM_STATUS", "7")
            took = time.perf_counter() - began
            while gahp.client.take(request_id) is None:
                gahp.event()  # its R
                gahp.ask("RESULTS")
            return took

        paced = [status_after_result() for _ in range(runs * 20)]
        gahp.ask("ASYNC_MODE_OFF")  # no R lines between the replies timed next
        flood = [timed(lambda: gahp.request("CONDOR_VM_STATUS", "7")) for _ in range(runs * 50)]
        time.sleep(0.5)
        gahp.ask("RESULTS")
        gahp.client.results.clear()
        gahp.ask("ASYNC_MODE_ON")
        time.sleep(0.5)
        idle = memory_mb(gahp.proc.pid)
    finally:
        gahp.close()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(config.parent, ignore_errors=True)
    commands_us = median(commands) * 1e6
    return [
        Row("COMMANDS round trip", commands_us, "µs", target="< 100 µs", met=commands_us < 100),
        Row("STATUS -> S, previous result collected", median(paced) * 1e6, "µs", commands_us, "COMMANDS",
            "< 100 µs", median(paced) * 1e6 < 100),
        Row("STATUS -> S, back to back (no wait)", median(flood) * 1e6, "µs", commands_us, "COMMANDS",
            "< 100 µs", median(flood) * 1e6 < 100, "each STATUS's read competes with the next line"),
        Row("memory idle after handshake (RSS)", idle[0], "MB", note=f"PSS {idle[1]:.1f} MB, private {idle[2]:.1f} MB"),
    ]


def report_rows(runs: int) -> list[Row]:
    return startup(runs) + round_trips(runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    from report import print_rows

    print_rows(report_rows(args.runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
