"""What a libvirt saved state is: ``xen.mem.ckpt`` plus the disks it expects.

The memory state is libvirt's save image (the C++ name, ``xen.mem.ckpt``).
The driver's record says, for each file-backed disk of the running domain -
read back from libvirt, not what vmgahp meant it to use - what it is:

* ``overlay``: a chain of vmgahp's qcow2 layers in the working directory over
  a base image (``chain`` names the layers top first, ``base`` the base by
  file name when it moves with the job, else by path); the layers are frozen
  by the save and listed among the state's files;
* ``file``: an image used as it is (a shared-filesystem disk, an admin's XML
  script that bypassed the overlays, the job's CD-ROM image); one in the
  working directory that the guest can write is part of the state too.

A job can restore a state when every disk of the record has its counterpart
in the job (same device, same base or file).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmgahp import log
from vmgahp.drivers.base import JobImageError, SavedState
from vmgahp.drivers.libvirt import overlays
from vmgahp.job.workdir import local_name

if TYPE_CHECKING:
    from vmgahp.drivers.libvirt.xml_edit import AttachedDisk
    from vmgahp.job.model import VmJob

MEMORY = "xen.mem.ckpt"


def record_disks(disks: list[AttachedDisk], working_dir: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The record of each disk, and the working-dir files the restore needs."""
    entries: list[dict[str, Any]] = []
    files: list[str] = []
    for disk in disks:
        name = local_name(disk.path, working_dir)
        entry: dict[str, Any] = {"device": disk.device, "file": name, "format": disk.format,
                                 "readonly": disk.readonly, "cdrom": disk.cdrom}
        in_dir = name == os.path.basename(disk.path)
        if not disk.cdrom and in_dir and overlays.generation_of(disk.device, name):
            layers = overlays.chain(disk.path)
            entry.update(role="overlay", chain=[local_name(p, working_dir) for p in layers[:-1]],
                         base=local_name(layers[-1], working_dir))
            files += [os.path.basename(p) for p in layers[:-1]]
        else:
            entry["role"] = "file"
            if in_dir and (not disk.readonly or disk.cdrom):
                files.append(name)  # a writable image or the CD-ROM image, here
        entries.append(entry)
    return entries, files


def mismatch(job: VmJob, record: dict[str, Any]) -> str:
    """Why ``job`` cannot restore a state with this record, "" if it can."""
    ours = {d.device: d for d in job.disks}
    for entry in record.get("disks", []):
        if entry.get("cdrom"):
            continue
        disk = ours.get(entry["device"])
        if disk is None:
            return f"it has a disk on {entry['device']}, this job has none there"
        named = entry["base"] if entry.get("role") == "overlay" else entry["file"]
        mine = local_name(disk.path, job.working_dir)
        if mine != named:
            return f"its {entry['device']} is {named!r}, this job's is {mine!r}"
        if entry.get("role") == "overlay" and not job.snapshot_disk:
            return f"its {entry['device']} ran on an overlay, and this job has no snapshot disk"
    return ""


def tops(job: VmJob, state: SavedState) -> dict[str, str]:
    """Device -> the overlay a restored state left on top of its chain."""
    return {entry["device"]: str(Path(job.working_dir) / entry["file"])
            for entry in state.record.get("disks", []) if entry.get("role") == "overlay"}


def memory_file(job: VmJob, state: SavedState) -> Path:
    return Path(job.working_dir) / state.files[0]


def adopt_format_1(job: VmJob, manifest: dict[str, Any]) -> SavedState | None:
    """A checkpoint of vmgahp before December 2026 (manifest format 1): sizes
    only, overlays that name their base by absolute path."""
    if manifest.get("vm_name") not in (None, job.name):
        log.get().warning("checkpoint_ignored", detail=f"format-1 manifest of VM {manifest.get('vm_name')!r}")
        return None
    memory = Path(job.working_dir) / manifest["memory"]["file"]
    expected = int(manifest["memory"]["size"])
    if not memory.exists() or memory.stat().st_size != expected:
        size = memory.stat().st_size if memory.exists() else "missing"
        raise JobImageError(f"checkpoint memory file {memory.name}: size {size}, expected {expected}")
    entries = []
    by_device = {d.device: d for d in job.disks}
    for disk in manifest.get("disks", []):
        if manifest.get("snapshot_disk") and disk.get("writable"):
            overlay = Path(job.working_dir) / disk["file"]
            if not overlay.exists():
                raise JobImageError(f"checkpoint overlay {disk['file']} is missing")
            base = by_device.get(disk["device"])
            if base is not None:
                # The one exception to "never modify what came back": a
                # format-1 overlay names its base by its old absolute path.
                overlays.retarget_backing(overlay, base.path, base.format)
            entries.append({"device": disk["device"], "file": disk["file"], "role": "overlay"})
    return SavedState((memory.name,), record={"disks": entries, "domain_xml": manifest.get("domain_xml", "")})
