"""A real guest reads its job script and input from the CD-ROM vmgahp builds.

``VMPARAM_CDROM_Files`` names a shell script and an input file; vmgahp packs
them into an ISO 9660 image attached read-only on ``hdc``; the tiny guest
mounts it, runs ``job.sh``, writes the answer to its disk and powers off.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from gahp_process import GahpProcess, job_ad
from guest_fixture import read_guest_file

pytestmark = pytest.mark.libvirtd

JOB_SH = """#!/bin/sh
# Runs inside the guest: add up the numbers of the input, one per line.
sum=0
while read -r n; do sum=$((sum + n)); done < "$CDROM/numbers.txt"
echo "sum=$sum" > "$OUT/answer.txt"
"""


def test_guest_runs_the_job_from_its_cdrom(tiny_guest, libvirt_uri: str) -> None:
    """The answer the guest computed from the CD-ROM input is on its disk."""
    work = Path(tempfile.mkdtemp(prefix="vmgahp-cdrom-"))
    os.chmod(work, 0o755)
    gahp = None
    try:
        tiny_guest.boot_disk(work / "boot.img")
        (work / "job.sh").write_text(JOB_SH)
        (work / "numbers.txt").write_text("".join(f"{n}\n" for n in range(1, 101)))
        for name in ("job.sh", "numbers.txt"):
            os.chown(work / name, 1000, 1000)
        gahp = GahpProcess(work, VM_KVM_LIBVIRT_URI=libvirt_uri, VM_KVM_DOMAIN_TYPE="qemu")
        gahp.handshake()
        gahp.send_ad(job_ad(work, disk="boot.img:vda:w:raw", User='"cdrom@vmgahp.test"', JobVMMemory="256",
                            VMPARAM_CDROM_Files='"job.sh,numbers.txt"'))
        assert gahp.call("CONDOR_VM_START", "kvm") == (True, "1")
        assert (work / "vmgahp-cdrom.iso").exists()
        end = time.monotonic() + 120
        status = ""
        while time.monotonic() < end:
            status = gahp.call("CONDOR_VM_STATUS", "1")[1]
            if status == "STATUS=Stopped":
                break
            time.sleep(1.0)
        assert status == "STATUS=Stopped"
        assert gahp.reply("QUIT") == "S"
        assert read_guest_file(work / "boot.img", "answer.txt") == "sum=5050\n"
    finally:
        if gahp is not None:
            gahp.kill()
        shutil.rmtree(work, ignore_errors=True)
