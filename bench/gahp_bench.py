"""Benchmarks of the daemon process, each printed as a figure and a ratio.

    .venv/bin/python bench/gahp_bench.py [--runs N]

* time to banner, against a bare ``python -c pass`` of the same interpreter
  (target: within 4x);
* probe (``-M 0``) wall time;
* median round trip of ``COMMANDS`` (line out, reply in) and of
  ``CONDOR_VM_STATUS`` (line out, ``S`` in; then until the ``R`` that
  announces its result) - target under 100 µs for the immediate reply;
* resident memory when idle after the handshake, and with one VM running on
  libvirt's test hypervisor (target: idle under 40 MB).

Everything runs against libvirt's built-in ``test:///default`` hypervisor, so
the figures are the gahp's own costs, not a hypervisor's. Not a test: nothing
here asserts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP / "tests"))

from gahp_process import gahp_env  # noqa: E402 - the tests' daemon environment
from vmgahp.protocol.client import NEED_DATA, GahpClient, Notification  # noqa: E402 - after the sys.path set-up

PYTHON = Path(sys.executable)
# The entry-point script next to this interpreter: the startd and the starter run it.
VMGAHP = PYTHON.parent / "vmgahp"

AD = """VM_WORKING_DIR = "{wd}"
ClusterId = 42
ProcId = 0
User = "bench@example.org"
JobVMType = "kvm"
JobVMMemory = 128
VMPARAM_vm_Disk = "disk.img:vda:w:raw"
"""


class Gahp:
    """The daemon over pipes, through the protocol client (as the starter reads it)."""

    def __init__(self, work: Path) -> None:
        self.proc = subprocess.Popen(
            [str(VMGAHP), "-f", "-M", "3"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=gahp_env(work),
            cwd=work,
            bufsize=0,
        )
        self.out = self.proc.stdout
        self.client = GahpClient()
        self.banner = self.event().line

    def event(self):
        while (event := self.client.next_event()) is NEED_DATA:
            chunk = os.read(self.out.fileno(), 65536)
            if not chunk:
                raise EOFError("gahp closed stdout")
            self.client.receive_data(chunk)
        return event

    def send(self, text: str) -> None:
        self.proc.stdin.write(self.client.send_line(text))

    def ask(self, text: str):
        """A line and its reply (a Reply, or Results for RESULTS)."""
        self.send(text)
        return self.event()

    def request(self, command: str, argument: str):
        request_id, data = self.client.request(command, argument)
        self.proc.stdin.write(data)
        return request_id, self.event()

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(status.split("VmRSS:")[1].split()[0])

    def close(self) -> None:
        self.send("QUIT")
        self.proc.wait(timeout=30)


def timed(fn, runs: int) -> list[float]:
    """Wall times of back-to-back calls. (A pause between calls would add the
    OS's wake-up latency, ~0.2 ms here for any command, COMMANDS included.)"""
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def median_seconds(fn, runs: int) -> float:
    return statistics.median(timed(fn, runs))


def bench_startup(work: Path, runs: int) -> None:
    bare = median_seconds(lambda: subprocess.run([str(PYTHON), "-c", "pass"], check=True), runs)

    def to_banner() -> None:
        Gahp(work).close()

    def banner_only() -> None:
        gahp = Gahp(work)
        gahp.proc.kill()
        gahp.proc.wait()

    banner = median_seconds(banner_only, runs)
    print(f"bare python -c pass      {bare * 1e3:8.1f} ms")
    print(f"time to banner           {banner * 1e3:8.1f} ms   ratio {banner / bare:5.2f}x (target <= 4x)")
    env = gahp_env(work)
    probe = median_seconds(
        lambda: subprocess.run([str(VMGAHP), "-f", "-M", "0", "vmtype", "kvm"], env=env, check=True,
                               stdout=subprocess.DEVNULL),
        runs,
    )
    print(f"probe -M 0               {probe * 1e3:8.1f} ms   ratio {probe / bare:5.2f}x (budget 5000 ms)")
    to_banner()


def bench_round_trips(work: Path, runs: int) -> None:
    gahp = Gahp(work)
    for line in ("COMMANDS", "SUPPORT_VMS", "ASYNC_MODE_ON"):
        gahp.ask(line)
    time.sleep(1.0)  # let the post-banner warm-up (logging library) finish first
    gahp.ask("COMMANDS")
    commands = median_seconds(lambda: gahp.ask("COMMANDS"), runs * 50)

    def status_immediate() -> None:
        gahp.request("CONDOR_VM_STATUS", "7")

    def status_result() -> None:
        # S, then the R that announces the result, then collect it.
        request_id, _ = gahp.request("CONDOR_VM_STATUS", "7")
        assert isinstance(gahp.event(), Notification)
        gahp.ask("RESULTS")
        assert gahp.client.take(request_id) is not None

    # No R lines while the immediate replies are timed: they would be read
    # as the next reply. Results are drained afterwards.
    gahp.ask("ASYNC_MODE_OFF")
    status_samples = timed(status_immediate, runs * 50)
    status_s = statistics.median(status_samples)
    time.sleep(0.5)
    gahp.ask("RESULTS")
    gahp.client.results.clear()
    gahp.ask("ASYNC_MODE_ON")
    status_full = median_seconds(status_result, runs * 10)
    print(f"COMMANDS round trip      {commands * 1e6:8.1f} µs   (target < 100 µs)")
    print(f"STATUS -> S round trip   {status_s * 1e6:8.1f} µs   (best {min(status_samples) * 1e6:.1f} µs; "
          "back to back, each STATUS's worker competes with the next; target < 100 µs)")
    print(f"STATUS -> result (R)     {status_full * 1e6:8.1f} µs   (worker thread + RESULTS)")
    gahp.close()


def bench_memory(work: Path) -> None:
    gahp = Gahp(work)
    for line in ("COMMANDS", "SUPPORT_VMS", "ASYNC_MODE_ON"):
        gahp.ask(line)
    time.sleep(1.0)  # let the post-banner warm-up finish
    idle = gahp.rss_kib()
    (work / "disk.img").write_bytes(b"\0" * 4096)
    if os.getuid() == 0:
        os.chown(work / "disk.img", 1000, 1000)  # disks are checked as the job user
    gahp.ask("CLASSAD")
    for line in AD.format(wd=work).splitlines():
        gahp.send(line)
    gahp.ask("CLASSAD_END")
    request_id, _ = gahp.request("CONDOR_VM_START", "kvm")
    assert isinstance(gahp.event(), Notification)
    gahp.ask("RESULTS")
    result = gahp.client.take(request_id)
    with_vm = gahp.rss_kib()
    bare = subprocess.run(
        [str(PYTHON), "-c", "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"],
        capture_output=True, text=True, check=True,
    )
    bare_kib = int(bare.stdout)
    print(f"bare python RSS          {bare_kib / 1024:8.1f} MB")
    print(f"idle RSS (after handshake){idle / 1024:7.1f} MB   ratio {idle / bare_kib:5.2f}x (target < 40 MB)")
    print(f"RSS with one VM ({result.text})   {with_vm / 1024:8.1f} MB   (libvirt, classad2, pydantic loaded)")
    gahp.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    if not VMGAHP.exists():
        print("run scripts/setup.sh first", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="vmgahp-bench-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        bench_startup(work, args.runs)
        bench_round_trips(work, args.runs)
        bench_memory(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
