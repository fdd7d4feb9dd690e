"""A real UEFI guest under QEMU (TCG here) with Debian's OVMF: boot, checkpoint, restore.

The guest is the tiny guest on a FAT disk with no boot loader
(``tests/uefi_guest.py``): only OVMF's shell can start it. The job is
vacated with a checkpoint while it ticks, then resumed in a fresh scratch
directory; it must come back from its memory state (not boot again), with
its NVRAM file shipped in the checkpoint and used from the new directory,
and run to its end. VM names use cluster ids 732x (the seed tests' range).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

import seed_harness as h
from guest_fixture import read_guest_file
from uefi_guest import build_efi_image

pytestmark = pytest.mark.libvirtd

OVMF = ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd")
TICKS = 60
MAX_WALL = 40
SUBMIT = """\
universe   = vm
vm_type    = kvm
executable = seed-uefi
vm_memory  = 256
vm_disk    = efi.img:vda:w:raw
transfer_input_files = efi.img
vm_checkpoint = true
when_to_transfer_output = ON_EXIT_OR_EVICT
+VMPARAM_vm_Snapshot_Disk = true
+VMPARAM_Firmware = "uefi"
queue
"""
KNOBS = {"VM_KVM_LIBVIRT_URI": "qemu:///system", "VM_KVM_DOMAIN_TYPE": "qemu"}


@pytest.fixture
def job(tiny_guest) -> Iterator[Path]:
    if not all(os.path.exists(p) for p in OVMF):
        pytest.skip("Debian's ovmf is not installed (scripts/setup.sh installs it)")
    base = Path(tempfile.mkdtemp(prefix="vmgahp-seed-uefi-", dir="/tmp"))  # the job user must reach it
    os.chmod(base, 0o755)
    yield from _in(base, tiny_guest)
    shutil.rmtree(base, ignore_errors=True)


def _in(base: Path, tiny_guest) -> Iterator[Path]:
    work = base / "job"
    work.mkdir()
    os.chmod(work, 0o755)
    build_efi_image(tiny_guest.vmlinuz, tiny_guest.initrd, work / "efi.img", f"console=ttyS0 quiet tiny.ticks={TICKS}")
    (work / "job.sub").write_text(SUBMIT)
    yield work


def _argv(work: Path, name: str, *extra: str) -> list[str]:
    root = work.parent / f"{name}.scratch"
    root.mkdir(exist_ok=True)
    os.chmod(root, 0o755)
    return [str(h.VMGAHP), "run", str(work / "job.sub"), "-v", "--keep-scratch", "--scratch-root", str(root),
            "--output", str(work.parent / "out"), "--cluster-id", "7320", *extra]


def _scratch(work: Path, name: str) -> Path:
    return next((work.parent / f"{name}.scratch").iterdir())


def test_uefi_guest_boots_checkpoints_and_restores(job: Path, libvirtd) -> None:
    env = h.clean_env(**KNOBS)
    # Vacated (with a checkpoint) after MAX_WALL s: ticking, or still booting on a
    # busy machine - the restore must carry on the same boot either way.
    first = subprocess.run(_argv(job, "first", "--max-wall", str(MAX_WALL)), capture_output=True, text=True,
                           env=env, timeout=600)
    out, err = first.stdout, first.stderr
    assert first.returncode == 124, out + err[-3000:]
    checkpoint = job.parent / "out" / "checkpoint"
    manifest = json.loads((checkpoint / "vmgahp-checkpoint.json").read_text())
    assert "vmgahp-nvram.fd" in manifest["keeps"] and "vmgahp-nvram.fd" in manifest["files"]
    assert (checkpoint / "vmgahp-nvram.fd").stat().st_size == os.path.getsize(OVMF[1])
    saved_os = manifest["driver"]["domain_xml"]
    assert "OVMF_CODE_4M.fd" in saved_os and "vmgahp-nvram.fd" in saved_os

    second = subprocess.run(_argv(job, "second", "--resume", str(checkpoint)), capture_output=True, text=True,
                            env=env, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr[-3000:]
    scratch = _scratch(job, "second")
    events = h.read_log(scratch / "_vmgahp_run.gahp.log")
    names = [e["event"] for e in events]
    assert "domain_restored" in names and "domain_started" not in names
    restored = next(e for e in events if e["event"] == "domain_restored")
    assert restored["retargeted"] is True
    qemu_log = Path("/var/log/libvirt/qemu") / f"{restored['name']}.log"
    if qemu_log.exists():  # QEMU opened the NVRAM from the new scratch dir
        assert str(scratch / "vmgahp-nvram.fd") in qemu_log.read_text().split("starting up")[-1]
    # The answer: the ticks went on from where the checkpoint left them, in one boot.
    shutil_base = job.parent / "out" / "efi.img"
    if not shutil_base.exists():
        os.link(job / "efi.img", shutil_base)  # the base beside the overlay that came back
    back = sorted(p.name for p in (job.parent / "out").iterdir())
    overlays = [name for name in back if name.startswith("vmgahp-overlay-vda")]
    assert overlays, back
    result = read_guest_file(job.parent / "out" / overlays[-1], "result.txt")
    assert result is not None and "TINY-GUEST DONE rc=0" in result, back
    assert f"ticks={TICKS} boots=1" in result
