"""Snapshot disks: every writable disk runs on a qcow2 overlay.

With ``VMPARAM_vm_Snapshot_Disk = true`` (or ``VM_SNAPSHOT_DISK`` as the
default) the VM writes to ``vmgahp-overlay-<device>.qcow2`` in the working
directory, backed by the untouched base image. The overlay is the job's
output - only the blocks the guest changed go back to the submit side - and,
being in the working directory, it travels with a checkpoint.

On a restart the base image may sit at a different path (a new scratch
directory on another machine), so a carried-over overlay is rebased onto the
base's new path; qemu-img rewrites only the header (``rebase -u``).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from . import errors, log
from .errors import GahpError

if TYPE_CHECKING:
    from .job import Disk, VmJob

QEMU_IMG = "qemu-img"
TIMEOUT = 120.0  # qemu-img only touches headers here; minutes would mean a hang


def overlay_name(device: str) -> str:
    return f"vmgahp-overlay-{device}.qcow2"


def needs_overlay(disk: Disk) -> bool:
    return disk.writable and not disk.is_cdrom


def _qemu_img(*args: str) -> str:
    try:
        done = subprocess.run(
            [QEMU_IMG, *args], capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GahpError(errors.INTERNAL, f"qemu-img {args[0]}: {exc}") from exc
    if done.returncode != 0:
        raise GahpError(errors.BAD_IMAGE, f"qemu-img {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def image_problem(path: str, fmt: str) -> str | None:
    """Why QEMU cannot open ``path`` as ``fmt`` (its whole backing chain), or
    None when it can; "" when qemu-img itself could not tell (not installed,
    permission denied to us). Run only after a start failed, to tell a job's
    bad image from a host-side failure."""
    args = ["info", "--force-share", "--backing-chain", "--output=json"]
    if fmt:
        args += ["-f", fmt]
    try:
        done = subprocess.run([QEMU_IMG, *args, path], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    if done.returncode == 0:
        return None
    message = done.stderr.strip()
    return "" if "Permission denied" in message else message


def image_format(path: str) -> str:
    """The format qemu-img detects (used when vm_disk gives none)."""
    info = json.loads(_qemu_img("info", "--output=json", "--force-share", path))
    return str(info["format"])


def backing_file(path: str) -> str:
    info = json.loads(_qemu_img("info", "--output=json", "--force-share", path))
    return str(info.get("full-backing-filename") or info.get("backing-filename") or "")


def carried_backings(job: VmJob) -> dict[Path, tuple[str, str]]:
    """The backing file and format, as written in each header, of the overlays a
    checkpoint brought along (call before :func:`prepare` rebases them)."""
    found: dict[Path, tuple[str, str]] = {}
    if not job.snapshot_disk:
        return found
    for disk in job.disks:
        overlay = Path(job.working_dir) / overlay_name(disk.device)
        if needs_overlay(disk) and overlay.exists():
            info = json.loads(_qemu_img("info", "--output=json", "--force-share", str(overlay)))
            found[overlay] = (str(info.get("backing-filename") or ""), str(info.get("backing-filename-format") or ""))
    return found


def put_back(backings: dict[Path, tuple[str, str]]) -> None:
    """Undo :func:`prepare`'s rebase after a refused restore: each overlay names its
    old backing file again (qemu-img rewrites the same header bytes), so a
    checkpoint that could not be restored is left exactly as it came."""
    for overlay, (backing, backing_format) in backings.items():
        if not backing:
            continue
        try:
            info = json.loads(_qemu_img("info", "--output=json", "--force-share", str(overlay)))
            if info.get("backing-filename") != backing:
                fmt = ["-F", backing_format] if backing_format else []
                _qemu_img("rebase", "-u", *fmt, "-b", backing, str(overlay))
                log.get().info("overlay_put_back", overlay=overlay.name, base=backing)
        except (GahpError, OSError, ValueError) as exc:
            log.get().warning("overlay_put_back_failed", overlay=overlay.name, detail=str(exc))


def prepare(job: VmJob, reuse: bool = False) -> VmJob:
    """Put every writable disk of ``job`` on an overlay; return the new job.

    ``reuse``: the overlays came with a checkpoint; keep their contents and
    only point them at the base images' current paths.
    """
    if not job.snapshot_disk:
        return job
    disks = []
    for disk in job.disks:
        if not needs_overlay(disk):
            disks.append(disk)
            continue
        overlay = Path(job.working_dir) / overlay_name(disk.device)
        base_format = disk.format or image_format(disk.path)
        if reuse and overlay.exists():
            if backing_file(str(overlay)) != disk.path:
                _qemu_img("rebase", "-u", "-F", base_format, "-b", disk.path, str(overlay))
            log.get().info("overlay_reused", overlay=overlay.name, base=disk.path)
        else:
            overlay.unlink(missing_ok=True)
            _qemu_img("create", "-q", "-f", "qcow2", "-F", base_format, "-b", disk.path, str(overlay))
            log.get().info("overlay_created", overlay=overlay.name, base=disk.path, base_format=base_format)
        _chown(overlay, job)
        disks.append(disk.model_copy(update={"path": str(overlay), "format": "qcow2"}))
    return job.model_copy(update={"disks": tuple(disks)})


def _chown(path: Path, job: VmJob) -> None:
    if job.owner_uid is not None and os.geteuid() == 0:
        os.chown(path, job.owner_uid, job.owner_gid or job.owner_uid)
