"""A UEFI-only variant of the tiny guest, made from its own files with no download.

``efi.img`` is a FAT disk without a partition table (OVMF reads it as a
file system all the same) holding the tiny guest's kernel, its initrd and a
``startup.nsh``. It has no boot loader at all - no BIOS boot sector, no
``EFI/BOOT/BOOTX64.EFI`` - so OVMF finds nothing to boot and starts its
built-in UEFI Shell, which runs ``startup.nsh``: the kernel's own EFI stub
is started with its arguments and ``initrd=``. A guest that boots it booted
through UEFI. (A GRUB EFI binary would work too, but Debian's GRUB 2.06 runs
out of heap loading the kernel in a 256 MiB guest.) The tiny guest's init
then uses the same FAT disk as its output disk (``/out``), as with ``boot.img``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SIZE = 32 << 20


def build_efi_image(vmlinuz: Path, initrd: Path, target: Path, kernel_args: str) -> Path:
    for tool in ("mkfs.fat", "mcopy"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} missing (Debian: dosfstools, mtools; scripts/setup.sh)")
    partial = target.with_suffix(".partial")
    script = target.with_name("startup.nsh")
    # The shell wants CR LF and backslashes; fs0: is the first file system it mapped.
    script.write_bytes(f"fs0:\r\n\\vmlinuz {kernel_args} initrd=\\initrd.img\r\n".encode())
    with open(partial, "wb") as handle:
        handle.truncate(SIZE)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    subprocess.run(["mkfs.fat", "-n", "TINYEFI", str(partial)], check=True, capture_output=True, timeout=60)
    for source, name in ((vmlinuz, "vmlinuz"), (initrd, "initrd.img"), (script, "startup.nsh")):
        subprocess.run(["mcopy", "-i", str(partial), str(source), f"::{name}"], check=True, capture_output=True,
                       env=env, timeout=60)
    script.unlink()
    os.chmod(partial, 0o644)
    os.replace(partial, target)
    return target
