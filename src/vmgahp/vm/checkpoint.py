"""Checkpoints that restart elsewhere: what is written, and how it is found.

A checkpoint is, in the working directory:

* ``xen.mem.ckpt`` - the VM's memory state (the C++ name);
* ``xen.mem.ckpt.timestamp`` - as the C++ writes it;
* the disk overlays the domain was using (frozen while the VM is saved), and
  the job's CD-ROM image;
* ``vmgahp-checkpoint.json`` - the manifest, written last: whose checkpoint
  it is (the VM name), what the running domain really used (read back from
  the hypervisor, not what vmgahp meant it to use), and the size and SHA-256
  of every file the restore needs. Until the manifest is renamed into place
  the checkpoint does not exist.

On a real pool the starter brings the files back into a **new** scratch
directory and the job ad has no ``TransferIntermediate`` (HTCondor 25's
starter never sends it), so a restart is recognised from the working
directory itself: :func:`scan` reads the manifest and checks it against this
job. A manifest of another job, or for other disks, is ignored and logged; a
manifest of this job whose files are missing, truncated or changed is a
corrupt checkpoint (``VMGAHP_ERR_BAD_IMAGE``: never a cold boot). Files that
came back are never modified: restoring puts new overlay layers on top.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from vmgahp import errors, log
from vmgahp.errors import GahpError

if TYPE_CHECKING:
    from vmgahp.drivers.base import AttachedDisk
    from vmgahp.job.model import VmJob

MANIFEST = "vmgahp-checkpoint.json"
MEMORY = "xen.mem.ckpt"
TIMESTAMP = MEMORY + ".timestamp"
FORMAT = 2
HASH_LIMIT = 1 << 30  # files bigger than this are checked by size only (a plain disk image)
_READ = 1 << 20


@dataclass(frozen=True)
class Restart:
    manifest: dict
    memory: Path
    tops: dict[str, str]  # device -> the overlay on top of its chain, to layer over
    cdrom: str | None = None  # the CD-ROM image that came back (reused as it is)


@dataclass(frozen=True)
class Scan:
    restart: Restart | None
    foreign: frozenset[str] = field(default_factory=frozenset)  # files another job's manifest claims


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_READ):
            digest.update(block)
    return digest.hexdigest()


def _record(path: Path, digest: str | None = None) -> dict:
    size = path.stat().st_size
    if digest is None and size <= HASH_LIMIT:
        digest = sha256_of(path)
    return {"size": size, "sha256": digest}


def _local_name(path: str, working_dir: str) -> str:
    """A file in the working dir by its name (it moves with the job), others by path."""
    if os.path.dirname(os.path.abspath(path)) == os.path.abspath(working_dir):
        return os.path.basename(path)
    return path


def write_manifest(job: VmJob, memory: Path, memory_sha256: str, disks: Iterable[AttachedDisk],
                   description: str, target: Path | None = None) -> Path:
    """Write (to ``target``, default the manifest's own name) the manifest of a
    checkpoint whose memory state is ``memory``; ``disks`` is what the domain
    really used. Returns the path written."""
    from vmgahp.drivers.libvirt import overlays

    working_dir = job.working_dir
    files: dict[str, dict] = {MEMORY: _record(memory, memory_sha256)}
    entries = []
    for disk in disks:
        name = _local_name(disk.path, working_dir)
        entry = {"device": disk.device, "file": name, "format": disk.format, "readonly": disk.readonly,
                 "cdrom": disk.cdrom}
        if not disk.cdrom and name == os.path.basename(disk.path) and overlays.generation_of(disk.device, name):
            layers = overlays.chain(disk.path)
            entry["role"] = "overlay"
            entry["chain"] = [_local_name(layer, working_dir) for layer in layers[:-1]]
            entry["base"] = _local_name(layers[-1], working_dir)
            for layer in layers[:-1]:
                files[os.path.basename(layer)] = _record(Path(layer))
        else:
            entry["role"] = "file"
            if name == os.path.basename(disk.path) and (not disk.readonly or disk.cdrom):
                files[name] = _record(Path(disk.path))  # a writable image or our CD-ROM, here
        entries.append(entry)
    manifest = {
        "format": FORMAT,
        "job": {"vm_name": job.name},
        "vm_type": job.vm_type,
        "created": int(time.time()),
        "memory": MEMORY,
        "files": files,
        "disks": entries,
        "domain_xml": description,
    }
    path = target or Path(working_dir) / MANIFEST
    write_atomically(path, json.dumps(manifest, indent=1).encode())
    return path


def scan(job: VmJob) -> Scan:
    """The checkpoint this working directory holds for ``job``, if any."""
    path = Path(job.working_dir) / MANIFEST
    if not path.exists():
        if (Path(job.working_dir) / MEMORY).exists():
            # A C++ gahp's checkpoint has no domain description: cold boot, as
            # the C++ does, but keep every file that came back.
            log.get().warning("checkpoint_not_restorable", detail=f"{MEMORY} without {MANIFEST}; cold boot")
        return Scan(None)
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
        version = manifest.get("format")
        if version == 1:
            return Scan(_legacy(job, manifest))
        if version != FORMAT:
            raise ValueError(f"unknown checkpoint format {version!r}")
        owner = manifest["job"]["vm_name"]
        disks = list(manifest["disks"])
        files = dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GahpError(errors.BAD_IMAGE, f"corrupt checkpoint manifest {path}: {exc}") from exc
    mismatch = _mismatch(job, owner, disks)
    if mismatch:
        log.get().warning("checkpoint_ignored", detail=f"{MANIFEST} is not this job's checkpoint: {mismatch}")
        return Scan(None, frozenset(files))
    _verify(job, files)
    tops = {d["device"]: str(Path(job.working_dir) / d["file"]) for d in disks if d.get("role") == "overlay"}
    cdrom = next((str(Path(job.working_dir) / d["file"]) for d in disks
                  if d.get("cdrom") and d["file"] in files), None)
    log.get().info("checkpoint_found", created=manifest.get("created"), files=sorted(files))
    return Scan(Restart(manifest, Path(job.working_dir) / MEMORY, tops, cdrom))


def _mismatch(job: VmJob, owner: str, disks: list[dict]) -> str:
    """Why the manifest is not ``job``'s, or "" when it is."""
    if owner != job.name:
        return f"it was written for VM {owner!r}, this job's VM is {job.name!r}"
    ours = {d.device: d for d in job.disks}
    for entry in disks:
        if entry.get("cdrom"):
            continue
        disk = ours.get(entry["device"])
        if disk is None:
            return f"it has a disk on {entry['device']}, this job has none there"
        named = entry["base"] if entry.get("role") == "overlay" else entry["file"]
        if _local_name(disk.path, job.working_dir) != named:
            return f"its {entry['device']} is {named!r}, this job's is {_local_name(disk.path, job.working_dir)!r}"
        if entry.get("role") == "overlay" and not job.snapshot_disk:
            return f"its {entry['device']} ran on an overlay, and this job has no snapshot disk"
    return ""


def _verify(job: VmJob, files: dict[str, dict]) -> None:
    """Every file the restore needs is here, whole and unchanged."""
    for name, expected in files.items():
        local = Path(job.working_dir) / os.path.basename(name)
        if not local.is_file():
            raise GahpError(errors.BAD_IMAGE, f"checkpoint file {name} is missing")
        size = local.stat().st_size
        if size != expected.get("size"):
            raise GahpError(errors.BAD_IMAGE, f"checkpoint file {name}: {size} bytes, expected {expected.get('size')}"
                            " (truncated or replaced)")
        if expected.get("sha256") and sha256_of(local) != expected["sha256"]:
            raise GahpError(errors.BAD_IMAGE, f"checkpoint file {name} does not match its SHA-256 (corrupt)")


def _legacy(job: VmJob, manifest: dict) -> Restart | None:
    """A format-1 checkpoint (vmgahp before December 2026): sizes only,
    overlays that name their base by absolute path."""
    from vmgahp.drivers.libvirt import overlays

    if manifest.get("vm_name") not in (None, job.name):
        log.get().warning("checkpoint_ignored", detail=f"format-1 {MANIFEST} of VM {manifest.get('vm_name')!r}")
        return None
    memory = Path(job.working_dir) / manifest["memory"]["file"]
    expected = int(manifest["memory"]["size"])
    if not memory.exists() or memory.stat().st_size != expected:
        size = memory.stat().st_size if memory.exists() else "missing"
        raise GahpError(errors.BAD_IMAGE, f"checkpoint memory file {memory.name}: size {size}, expected {expected}")
    tops = {}
    by_device = {d.device: d for d in job.disks}
    for disk in manifest.get("disks", []):
        if manifest.get("snapshot_disk") and disk.get("writable"):
            overlay = Path(job.working_dir) / disk["file"]
            if not overlay.exists():
                raise GahpError(errors.BAD_IMAGE, f"checkpoint overlay {disk['file']} is missing")
            base = by_device.get(disk["device"])
            if base is not None:
                # The one exception to "never modify what came back": a
                # format-1 overlay names its base by its old absolute path.
                overlays.retarget_backing(overlay, base.path, base.format)
            tops[disk["device"]] = str(overlay)
    log.get().info("checkpoint_found", format=1, memory=memory.name)
    return Restart(manifest, memory, tops)


def discard(working_dir: str) -> None:
    """The job is over: its checkpoint is stale and no output."""
    for name in (MANIFEST, MEMORY, TIMESTAMP):
        (Path(working_dir) / name).unlink(missing_ok=True)


def write_atomically(path: Path, data: bytes) -> None:
    """Write, fsync, rename, fsync the directory: all or nothing on disk."""
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
