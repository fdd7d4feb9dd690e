"""``VMPARAM_vm_Disk`` parsing: ``file:device:perm[:format]``, comma-separated.

Rules of spec 4.5: empty items and fields are skipped, every item must have 3
or 4 fields, a file whose basename is in the working directory is the
transferred copy, any other file must be an absolute path, and the job user
must be able to read it (or write it, for ``w``/``rw``). Any failure rejects
the whole list; the caller turns that into the KVM or Xen token.
"""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict

from vmgahp.job.access import JobUser, can_access


class Disk(BaseModel):
    """One disk of the VM, resolved and checked."""

    model_config = ConfigDict(frozen=True)

    path: str  # absolute, resolved
    device: str  # lower-cased, e.g. vda
    permission: str  # as given, trimmed
    format: str = ""  # lower-cased, "" when not given
    transferred: bool = False

    @property
    def writable(self) -> bool:
        return self.permission.lower() in ("w", "rw")

    @property
    def is_cdrom(self) -> bool:
        # By extension, not by substring as the C++ does ("my.isotope.img").
        return self.path.lower().endswith(".iso")


class DiskListError(ValueError):
    """The disk list is invalid; the message says which item and why."""


def working_dir_files(working_dir: str) -> set[str]:
    try:
        return {entry.name for entry in os.scandir(working_dir) if entry.is_file()}
    except OSError:
        return set()


def parse_disk_list(text: str, working_dir: str, user: JobUser | None) -> tuple[Disk, ...]:
    items = [item.strip() for item in text.strip().split(",") if item.strip()]
    if not items:
        raise DiskListError("no disk in the list")
    local_files = working_dir_files(working_dir)
    disks = []
    for item in items:
        fields = [f for f in item.split(":") if f]
        if len(fields) not in (3, 4):
            raise DiskListError(f"{item!r}: expected file:device:permission[:format]")
        file_name = fields[0].strip()
        base = os.path.basename(file_name)
        if base and base in local_files:
            path, transferred = os.path.join(working_dir, base), True
        elif os.path.isabs(file_name):
            path, transferred = file_name, False
        else:
            raise DiskListError(f"{file_name!r} is neither in the working directory nor an absolute path")
        device = fields[1].strip().lower()
        permission = fields[2].strip()
        fmt = fields[3].strip().lower() if len(fields) == 4 else ""
        disk = Disk(path=path, device=device, permission=permission, format=fmt, transferred=transferred)
        if not device:
            raise DiskListError(f"{item!r}: empty device name")
        if not can_access(path, user, write=disk.writable):
            need = "write" if disk.writable else "read"
            raise DiskListError(f"{path}: the job user cannot {need} it (or it does not exist)")
        disks.append(disk)
    return tuple(disks)
