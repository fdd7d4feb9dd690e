"""One VM through vmgahp against the same work done with raw libvirt-python.

    python bench/vm_bench.py [--runs N]

On a real libvirtd (started here if its socket is not served) with the tiny
guest (256 MiB, a real kernel ticking in its RAM), alternating the sides:

* START: ``CONDOR_VM_START`` to its result, against ``createXML`` of the XML
  vmgahp builds (target: raw + 10 %);
* CHECKPOINT: to its result, against libvirt's own ``save`` of the same
  guest at the same point (target: <= 1.2x), and the bytes each leaves to be
  shipped (target: <= 1/3);
* restore: a new gahp in a new directory with the checkpoint's files starts
  the VM from them, against ``restore`` of libvirt's raw save (<= 1.2x);
* STATUS while a CHECKPOINT runs;
* when the CHECKPOINT's result reaches a starter that waits as the real one
  does (``vm_gahp_server.cpp``: write, 1 s, read; RESULTS, 1 s, read; 2 s
  between polls), against a stand-in that blocks as the C++ gahp does
  (bench/blocking_standin.py: it reads no line while a request runs).

The guest's disk lives outside the scratch directory (a shared filesystem),
so neither side copies or layers it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from common import PYTHON, SYSTEM_URI, TOP, Gahp, Row, ensure_libvirtd, median, node_env, real_config
from gahp_process import job_ad  # noqa: E402 - the tests' job ad
from guest_fixture import TinyGuest, guest_cache_dir
from real_guest import wait_for_ticks

MEMORY = 256
TICKS = 400  # the guest outlives every measurement
CHECKPOINT_FILES = ("xen.mem.ckpt", "xen.mem.ckpt.timestamp", "vmgahp-checkpoint.json")
STANDIN = [PYTHON, str(TOP / "bench" / "blocking_standin.py")]


class Place:
    """A scratch dir as the starter makes it, and a shared dir with the disk."""

    def __init__(self, guest: TinyGuest, cluster: int) -> None:
        self.cluster = cluster
        self.scratch = Path(tempfile.mkdtemp(prefix="vmgahp-bench-vm-"))
        self.shared = Path(tempfile.mkdtemp(prefix="vmgahp-bench-shared-"))
        for path in (self.scratch, self.shared):
            os.chmod(path, 0o755)
        self.disk = guest.boot_disk(self.shared / "tiny.img", ticks=TICKS)

    @property
    def name(self) -> str:
        return f"bench_example.org_{self.cluster}.0"

    def ad(self, scratch: Path | None = None) -> list[str]:
        return job_ad(scratch or self.scratch, disk=f"{self.disk}:vda:w:raw", ClusterId=str(self.cluster),
                      JobVMMemory=str(MEMORY), JobVMCheckpoint="true", User='"bench@example.org"')

    def remove(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)
        shutil.rmtree(self.shared, ignore_errors=True)


def destroy(name: str) -> None:
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # "not found" is the usual answer here
    conn = libvirt.open(SYSTEM_URI)
    try:
        conn.lookupByName(name).destroy()
    except libvirt.libvirtError:
        pass
    finally:
        conn.close()


# ------------------------------------------------------------------- raw
def raw_side(place: Place) -> dict[str, float]:
    import libvirt

    from helpers import settings
    from vmgahp.drivers.libvirt.driver import LibvirtHypervisor
    from vmgahp.job.model import Disk, VmJob

    job = VmJob(vm_type="kvm", name=place.name, working_dir=str(place.scratch), memory_mib=MEMORY,
                disks=(Disk(path=str(place.disk), device="vda", permission="w", format="raw"),))
    hv = LibvirtHypervisor(settings(VM_KVM_LIBVIRT_URI=SYSTEM_URI, VM_KVM_DOMAIN_TYPE="qemu", VM_MEMORY="4096"),
                           "kvm")
    xml = hv.builtin_xml(job)  # the XML vmgahp sends
    hv.close()
    conn = libvirt.open(SYSTEM_URI)
    save = place.scratch / "raw.save"
    try:
        began = time.perf_counter()
        dom = conn.createXML(xml, libvirt.VIR_DOMAIN_START_VALIDATE)
        start = time.perf_counter() - began
        wait_for_ticks(place.disk, 2, timeout=180)
        began = time.perf_counter()
        dom.saveFlags(str(save), None, libvirt.VIR_DOMAIN_SAVE_RUNNING)
        saved = time.perf_counter() - began
        size = save.stat().st_size
        began = time.perf_counter()
        conn.restoreFlags(str(save), None, libvirt.VIR_DOMAIN_SAVE_RUNNING)
        restored = time.perf_counter() - began
    finally:
        destroy(place.name)
        conn.close()
    return {"start": start, "checkpoint": saved, "bytes": size, "restore": restored}


# ----------------------------------------------------------------- vmgahp
def _gahp(place: Place, scratch: Path, config: Path, argv: list[str] | None = None) -> Gahp:
    gahp = Gahp(node_env(config, scratch, VM_GAHP_LOG=str(scratch / "vmgahp.log")), scratch, argv)
    gahp.handshake()
    gahp.send_ad(place.ad(scratch))
    # The starter pauses 1 s after each 2 KiB of the job ad (vm_gahp_server.cpp), and a
    # real job ad is several KiB: START never follows the ad's first line at once.
    time.sleep(1.0)
    return gahp


def timed_call(gahp: Gahp, command: str, argument: str, expect: str) -> float:
    began = time.perf_counter()
    ok, text = gahp.call(command, argument)
    took = time.perf_counter() - began
    assert (ok, text) == (True, expect), (command, ok, text)
    return took


def gahp_side(place: Place, config: Path) -> dict[str, float]:
    gahp = _gahp(place, place.scratch, config)
    again = Path(tempfile.mkdtemp(prefix="vmgahp-bench-restart-"))
    os.chmod(again, 0o755)
    restart: Gahp | None = None
    try:
        gahp.call("CONDOR_VM_STATUS", "9")  # the request path is loaded, as after the starter's first STATUS
        start = timed_call(gahp, "CONDOR_VM_START", "kvm", "1")
        wait_for_ticks(place.disk, 2, timeout=180)
        checkpoint = timed_call(gahp, "CONDOR_VM_CHECKPOINT", "1", "NULL")
        size = sum((place.scratch / name).stat().st_size for name in CHECKPOINT_FILES)
        for name in CHECKPOINT_FILES:  # the starter's upload and its download on the next node
            shutil.copy2(place.scratch / name, again / name)
            os.chown(again / name, 1000, 1000)
        gahp.close()
        restart = _gahp(place, again, config)
        restore = timed_call(restart, "CONDOR_VM_START", "kvm", "1")
        # STATUS while the restored VM is checkpointed again.
        request_id, _ = restart.request("CONDOR_VM_CHECKPOINT", "1")
        time.sleep(0.05)
        status = timed_call_status(restart)
        while restart.client.take(request_id) is None:
            restart.event()
            restart.ask("RESULTS")
    finally:
        if restart is not None:
            restart.close()
        gahp.close()
        destroy(place.name)
        shutil.rmtree(again, ignore_errors=True)
    return {"start": start, "checkpoint": checkpoint, "bytes": size, "restore": restore, "status": status}


def timed_call_status(gahp: Gahp) -> float:
    began = time.perf_counter()
    ok, text = gahp.call("CONDOR_VM_STATUS", "1")
    assert ok, text
    return time.perf_counter() - began


# ------------------------------------------------- the starter's blocking wait
def starter_wait(gahp: Gahp, command: str, argument: str) -> float:
    """Seconds from the command's line to its result in the starter's hands."""
    began = time.perf_counter()
    request_id, data = gahp.client.request(command, argument)
    assert gahp.proc.stdin is not None
    gahp.proc.stdin.write(data)
    time.sleep(1.0)
    gahp.event()  # its S
    time.sleep(1.0)  # getPendingResult, blocking
    while True:
        gahp.send("RESULTS")
        time.sleep(1.0)
        while not hasattr(gahp.event(), "words"):
            pass  # R lines: one more poll, which this loop is anyway
        found = gahp.client.take(request_id)
        if found is not None:
            assert found.ok, found.text
            return time.perf_counter() - began
        time.sleep(2.0)


def result_latency(place: Place, config: Path, argv: list[str] | None) -> float:
    gahp = _gahp(place, place.scratch, config, argv)
    try:
        assert gahp.call("CONDOR_VM_START", "kvm") == (True, "1")
        wait_for_ticks(place.disk, 2, timeout=180)
        return starter_wait(gahp, "CONDOR_VM_CHECKPOINT", "1")
    finally:
        gahp.close()
        destroy(place.name)


# ------------------------------------------------------------------ report
def report_rows(runs: int) -> list[Row]:
    started = ensure_libvirtd()
    guest = TinyGuest.at(guest_cache_dir())
    config = real_config(SYSTEM_URI)
    raw, ours, direct, blocking = [], [], [], []
    try:
        for index in range(runs):
            for side, results in ((raw_side, raw), (gahp_side, ours)):
                place = Place(guest, 900_000 + index)
                try:
                    results.append(side(place) if side is raw_side else side(place, config))
                finally:
                    place.remove()
            for argv, results in ((None, direct), (STANDIN, blocking)):
                place = Place(guest, 900_100 + index)
                try:
                    results.append(result_latency(place, config, argv))
                finally:
                    place.remove()
    finally:
        shutil.rmtree(config.parent, ignore_errors=True)
        if started:
            os.kill(started, 15)

    def med(results: list[dict[str, float]], key: str) -> float:
        return median([r[key] for r in results])

    rows = []
    for key, what, target, limit in (("start", "START -> result", "<= 1.1x", 1.1),
                                     ("checkpoint", "CHECKPOINT -> result", "<= 1.2x", 1.2),
                                     ("restore", "restart from the checkpoint", "<= 1.2x", 1.2)):
        ours_s, raw_s = med(ours, key), med(raw, key)
        rows.append(Row(what, ours_s * 1e3, "ms", raw_s * 1e3, f"raw libvirt {key}", target, ours_s <= limit * raw_s))
    ours_b, raw_b = med(ours, "bytes"), med(raw, "bytes")
    rows.append(Row("bytes shipped per checkpoint", ours_b / 2**20, "MiB", raw_b / 2**20, "raw libvirt save",
                    "<= 1/3", ours_b * 3 <= raw_b))
    status = med(ours, "status")
    rows.append(Row("STATUS during a CHECKPOINT", status * 1e3, "ms", target="< 50 ms", met=status < 0.05))
    rows.append(Row("CHECKPOINT result at a polling starter", median(direct), "s", median(blocking),
                    "blocking C++-like stand-in", "<= 1.0x", median(direct) <= median(blocking) + 0.05,
                    "the starter's 1 s / 2 s rhythm included"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from report import print_rows

    print_rows(report_rows(args.runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
