"""Checkpoints that restart elsewhere: what is written, and how it is found.

A checkpoint is, in the working directory:

* ``xen.mem.ckpt`` - the VM's memory state (the C++ name);
* ``xen.mem.ckpt.timestamp`` - as the C++ writes it;
* the disk overlays, when snapshot disks are on (frozen while the VM is saved);
* ``vmgahp-checkpoint.json`` - the manifest, written last: the memory file's
  size, the domain description (MAC included) and which overlay belongs to
  which device and base image. Until the manifest is renamed into place the
  checkpoint does not exist, so an eviction in the middle of one never passes
  for a checkpoint.

The starter ships these files to the submit side; on the next run the shadow
lists them in ``TransferIntermediate`` and transfers them into the new
working directory. :func:`find_restart` recognises them there, and the VM is
restored from memory instead of cold-booted. (The C++ gahp looks for a
``xen_vm.config`` that it stopped writing in 2009, and so always cold-boots.)
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import errors, log
from .errors import GahpError

if TYPE_CHECKING:
    from .job import VmJob

MANIFEST = "vmgahp-checkpoint.json"
MEMORY = "xen.mem.ckpt"
TIMESTAMP = MEMORY + ".timestamp"
FORMAT = 1


@dataclass(frozen=True)
class Restart:
    manifest: dict
    memory: Path


def write_manifest(job: VmJob, memory: Path, domain_xml: str) -> Path:
    """Commit a checkpoint whose memory file is already in place."""
    manifest = {
        "format": FORMAT,
        "vm_name": job.name,
        "vm_type": job.vm_type,
        "created": int(time.time()),
        "memory": {"file": memory.name, "size": memory.stat().st_size},
        "domain_xml": domain_xml,
        "disks": [
            {"device": d.device, "file": os.path.basename(d.path), "format": d.format, "writable": d.writable}
            for d in job.disks
        ],
        "snapshot_disk": job.snapshot_disk,
    }
    path = Path(job.working_dir) / MANIFEST
    write_atomically(path, json.dumps(manifest, indent=1).encode())
    return path


def find_restart(job: VmJob) -> Restart | None:
    """The checkpoint this job was started with, if it brought one."""
    transferred = {os.path.basename(name) for name in job.transfer_intermediate}
    path = Path(job.working_dir) / MANIFEST
    if MANIFEST not in transferred:
        if MEMORY in transferred:
            # A C++ gahp's checkpoint has no domain description: cold boot,
            # as the C++ does, but keep every input file.
            log.get().warning("checkpoint_not_restorable", detail=f"{MEMORY} without {MANIFEST}; cold boot")
        return None
    if not path.exists():
        raise GahpError(errors.BAD_IMAGE, f"{MANIFEST} is listed in TransferIntermediate but missing")
    try:
        manifest = json.loads(path.read_text())
        memory = Path(job.working_dir) / manifest["memory"]["file"]
        expected = int(manifest["memory"]["size"])
        if manifest.get("format") != FORMAT:
            raise ValueError(f"unknown checkpoint format {manifest.get('format')!r}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GahpError(errors.BAD_IMAGE, f"corrupt checkpoint manifest {path}: {exc}") from exc
    if not memory.exists() or memory.stat().st_size != expected:
        size = memory.stat().st_size if memory.exists() else "missing"
        raise GahpError(errors.BAD_IMAGE, f"checkpoint memory file {memory.name}: size {size}, expected {expected}")
    for disk in manifest.get("disks", []):
        if manifest.get("snapshot_disk") and disk.get("writable"):
            if not (Path(job.working_dir) / disk["file"]).exists():
                raise GahpError(errors.BAD_IMAGE, f"checkpoint overlay {disk['file']} is missing")
    log.get().info("checkpoint_found", created=manifest.get("created"), memory=memory.name)
    return Restart(manifest, memory)


def discard(working_dir: str) -> None:
    """After a successful restore the checkpoint files are stale."""
    for name in (MANIFEST, MEMORY, TIMESTAMP):
        (Path(working_dir) / name).unlink(missing_ok=True)


def write_atomically(path: Path, data: bytes) -> None:
    """Write, fsync, rename, fsync the directory: all or nothing on disk."""
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
