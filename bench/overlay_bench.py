"""What a snapshot-disk job sends back, compared with its whole disk image.

    .venv/bin/python bench/overlay_bench.py [--ticks N]

Runs the tiny guest (built by tests/guest/make-tiny-guest.sh) through vmgahp
with ``VMPARAM_vm_Snapshot_Disk = true`` on a real libvirtd until it powers
itself off, then prints the bytes of the overlay (the job's output) against
the bytes of the base image (what the C++ gahp sends back), and checks that
the base image is unchanged. Not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP / "tests"))
sys.path.insert(0, str(TOP / "bench"))

from gahp_process import GahpProcess, job_ad  # noqa: E402 - after the sys.path set-up
from guest_fixture import TinyGuest, build_tiny_guest, guest_cache_dir  # noqa: E402 - after the sys.path set-up
from vm_bench import URI, ensure_libvirtd  # noqa: E402 - after the sys.path set-up


def allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=3)
    args = parser.parse_args()
    if build_tiny_guest().returncode != 0:
        print("cannot build the tiny guest", file=sys.stderr)
        return 1
    guest = TinyGuest.at(guest_cache_dir())
    control = Path(tempfile.mkdtemp(prefix="vmgahp-libvirtd-"))
    started = ensure_libvirtd(control)
    work = Path(tempfile.mkdtemp(prefix="vmgahp-overlay-bench-"))
    os.chmod(work, 0o755)
    try:
        base = guest.boot_disk(work / "boot.img", ticks=args.ticks)
        before = hashlib.sha256(base.read_bytes()).hexdigest()
        gahp = GahpProcess(work, VM_KVM_LIBVIRT_URI=URI, VM_KVM_DOMAIN_TYPE="qemu")
        gahp.handshake()
        gahp.send_ad(job_ad(work, disk="boot.img:vda:w:raw", User='"bench@vmgahp"', JobVMMemory="256",
                            VMPARAM_vm_Snapshot_Disk="true"))
        began = time.monotonic()
        assert gahp.call("CONDOR_VM_START", "kvm") == (True, "1")
        while gahp.call("CONDOR_VM_STATUS", "1")[1] != "STATUS=Stopped":
            time.sleep(1.0)
        wall = time.monotonic() - began
        gahp.reply("QUIT")
        gahp.wait()
        overlay = work / "vmgahp-overlay-vda.qcow2"
        unchanged = hashlib.sha256(base.read_bytes()).hexdigest() == before
        print(f"job ran {wall:.1f} s ({args.ticks} ticks), base image unchanged: {unchanged}")
        print(f"base image   {base.stat().st_size:>12,} bytes ({allocated(base):,} allocated)")
        print(f"overlay      {overlay.stat().st_size:>12,} bytes ({allocated(overlay):,} allocated)")
        print(f"sent back    {overlay.stat().st_size / base.stat().st_size:12.2%} of the full image")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if started:
            os.kill(started, 15)
        shutil.rmtree(control, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
