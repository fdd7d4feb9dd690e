"""Checkpoints that restart elsewhere: the manifest, and how it is found.

A checkpoint is the saved state a driver wrote into the working directory
(:class:`~vmgahp.drivers.base.SavedState`: libvirt's ``xen.mem.ckpt`` and the
overlay layers it froze), ``xen.mem.ckpt.timestamp`` as the C++ writes it, and
``vmgahp-checkpoint.json`` - the manifest, renamed into place last: whose
checkpoint it is (the VM name), the size and SHA-256 of every file the
restore needs, the job's CD-ROM image, and the driver's own record. Until the
manifest is in place the checkpoint does not exist.

On a real pool the starter brings the files back into a **new** scratch
directory and the job ad has no ``TransferIntermediate`` (HTCondor 25's
starter never sends it), so a restart is recognised from the working
directory itself: :func:`scan` reads the manifest and checks it against this
job (the driver checks its disks). A manifest of another job, or for other
disks, is ignored and logged; a manifest of this job whose files are missing,
truncated or changed is a corrupt checkpoint (``VMGAHP_ERR_BAD_IMAGE``, never
a cold boot). Files that came back are never modified.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vmgahp import log
from vmgahp.drivers.base import JobImageError, SavedState
from vmgahp.errors import GahpError
from vmgahp.job.workdir import sha256_of, write_atomically
from vmgahp.protocol import tokens

if TYPE_CHECKING:
    from vmgahp.drivers.base import Hypervisor
    from vmgahp.job.model import VmJob

MANIFEST = "vmgahp-checkpoint.json"
TIMESTAMP = "xen.mem.ckpt.timestamp"  # the C++ name, beside its xen.mem.ckpt
FORMAT = 2
HASH_LIMIT = 1 << 30  # files bigger than this are checked by size only (a plain disk image)


@dataclass(frozen=True)
class Scan:
    state: SavedState | None  # this job's checkpoint, whole
    cdrom: str | None = None  # the CD-ROM image that came back with it (reused as it is)
    foreign: frozenset[str] = field(default_factory=frozenset)  # files another job's manifest claims


def _record(path: Path) -> dict:
    size = path.stat().st_size
    return {"size": size, "sha256": sha256_of(path) if size <= HASH_LIMIT else None}


def write_manifest(job: VmJob, state: SavedState, suffix: str, target: Path) -> None:
    """Write the manifest of ``state`` to ``target``; files the save just wrote
    are read under their temporary name (``<name><suffix>``)."""
    working_dir = Path(job.working_dir)
    files = {name: _record(working_dir / (name + suffix)) for name in state.files}
    files.update({name: _record(working_dir / name) for name in state.keeps})
    cdrom = next((d.path for d in job.disks if d.is_cdrom and Path(d.path).parent == working_dir), None)
    if cdrom is not None:
        files.setdefault(Path(cdrom).name, _record(Path(cdrom)))
    manifest = {
        "format": FORMAT,
        "job": {"vm_name": job.name},
        "vm_type": job.vm_type,
        "created": int(time.time()),
        "written": list(state.files),
        "keeps": list(state.keeps),
        "files": files,
        "cdrom": Path(cdrom).name if cdrom else None,
        "driver": dict(state.record),
    }
    write_atomically(target, json.dumps(manifest, indent=1).encode())


def scan(job: VmJob, hypervisor: Hypervisor) -> Scan:
    """The checkpoint this working directory holds for ``job``, if any."""
    path = Path(job.working_dir) / MANIFEST
    if not path.exists():
        return Scan(None)
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
        version = manifest.get("format")
        if version != FORMAT:
            return Scan(_legacy(job, hypervisor, manifest, version))
        owner = manifest["job"]["vm_name"]
        files = dict(manifest["files"])
        state = SavedState(tuple(manifest["written"]), tuple(manifest["keeps"]), dict(manifest["driver"]))
        cdrom = manifest.get("cdrom")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GahpError(tokens.BAD_IMAGE, f"corrupt checkpoint manifest {path}: {exc}") from exc
    if owner != job.name:
        mismatch = f"it was written for VM {owner!r}, this job's VM is {job.name!r}"
    else:
        mismatch = hypervisor.restore_mismatch(job, state)
    if mismatch:
        log.get().warning("checkpoint_ignored", detail=f"{MANIFEST} is not this job's checkpoint: {mismatch}")
        return Scan(None, foreign=frozenset(files))
    _verify(job, files)
    log.get().info("checkpoint_found", created=manifest.get("created"), files=sorted(files))
    return Scan(state, str(Path(job.working_dir) / cdrom) if cdrom else None)


def _legacy(job: VmJob, hypervisor: Hypervisor, manifest: dict, version: object) -> SavedState | None:
    try:
        state = hypervisor.adopt_legacy_state(job, manifest)
    except JobImageError as exc:
        raise GahpError(tokens.BAD_IMAGE, exc.message) from exc
    if state is None:
        raise ValueError(f"unknown checkpoint format {version!r}")
    log.get().info("checkpoint_found", format=version, files=list(state.files))
    return state


def _verify(job: VmJob, files: dict[str, dict]) -> None:
    """Every file the restore needs is here, whole and unchanged."""
    for name, expected in files.items():
        local = Path(job.working_dir) / Path(name).name
        if not local.is_file():
            raise GahpError(tokens.BAD_IMAGE, f"checkpoint file {name} is missing")
        size = local.stat().st_size
        if size != expected.get("size"):
            raise GahpError(tokens.BAD_IMAGE, f"checkpoint file {name}: {size} bytes, expected "
                            f"{expected.get('size')} (truncated or replaced)")
        if expected.get("sha256") and sha256_of(local) != expected["sha256"]:
            raise GahpError(tokens.BAD_IMAGE, f"checkpoint file {name} does not match its SHA-256 (corrupt)")


def discard(working_dir: str) -> None:
    """The job is over: its checkpoint is stale and no output (the layers its
    disks kept are the driver's to fold into the output)."""
    path = Path(working_dir) / MANIFEST
    written: list[str] = []
    try:
        written = list(json.loads(path.read_text()).get("written", []))
    except (OSError, ValueError, AttributeError):
        pass
    for name in (MANIFEST, TIMESTAMP, *written):
        (Path(working_dir) / Path(name).name).unlink(missing_ok=True)
