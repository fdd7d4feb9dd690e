"""Snapshot disks: every writable disk runs on a chain of qcow2 overlays.

With ``VMPARAM_vm_Snapshot_Disk = true`` (or ``VM_SNAPSHOT_DISK`` as the
default) the VM writes to ``vmgahp-overlay-<device>.qcow2`` in the working
directory, backed by the untouched base image. The overlay is the job's
output - only the blocks the guest changed go back to the submit side - and,
being in the working directory, it travels with a checkpoint.

Rules that keep a checkpoint whole wherever it goes:

* **Relative backing names.** An overlay names a base image in the working
  directory (a transferred disk) by its bare file name, and the layer below
  it likewise, so the set works unchanged in any scratch directory: nothing is
  rebased, no header rewritten.
* **Files that came back are never written.** A restart (or a cold boot that
  finds overlays of an earlier run) puts a *new* top layer,
  ``vmgahp-overlay-<device>.<n>.qcow2``, over the newest existing one; the
  layers that came back stay byte for byte what they were, so the checkpoint
  they belong to stays restorable until a newer one is committed.
* **One overlay as output.** When the guest ends by itself the upper layers
  are committed down into ``vmgahp-overlay-<device>.qcow2`` and removed, so
  the job's output is one overlay of its base image, however often the job
  was vacated.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from vmgahp import log
from vmgahp.drivers.base import HostError, JobImageError
from vmgahp.job.workdir import give_to

if TYPE_CHECKING:
    from vmgahp.job.model import Disk, VmJob

QEMU_IMG = "qemu-img"
TIMEOUT = 120.0  # qemu-img only touches headers here; minutes would mean a hang
COMMIT_TIMEOUT = 3600.0  # committing layers copies the guest's writes


def overlay_name(device: str, generation: int = 1) -> str:
    return f"vmgahp-overlay-{device}.qcow2" if generation == 1 else f"vmgahp-overlay-{device}.{generation}.qcow2"


def generation_of(device: str, name: str) -> int | None:
    """1 for ``vmgahp-overlay-<device>.qcow2``, n for ``....<n>.qcow2``, None otherwise."""
    match = re.fullmatch(rf"vmgahp-overlay-{re.escape(device)}(?:\.(\d+))?\.qcow2", name)
    if match is None:
        return None
    return int(match.group(1)) if match.group(1) else 1


def generations(working_dir: str, device: str) -> dict[int, Path]:
    """The overlays of ``device`` in the working directory, by generation."""
    found: dict[int, Path] = {}
    try:
        names = os.listdir(working_dir)
    except OSError:
        return found
    for name in names:
        generation = generation_of(device, name)
        if generation is not None:
            found[generation] = Path(working_dir) / name
    return found


def needs_overlay(disk: Disk) -> bool:
    return disk.writable and not disk.is_cdrom


def _qemu_img(*args: str, timeout: float = TIMEOUT) -> str:
    try:
        done = subprocess.run([QEMU_IMG, *args], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HostError(f"qemu-img {args[0]}: {exc}") from exc
    if done.returncode != 0:  # qemu-img cannot read or write the job's image as it says
        raise JobImageError(f"qemu-img {' '.join(args)}: {done.stderr.strip()}")
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


def chain(path: str) -> list[str]:
    """``path`` and every image below it, as qemu-img resolves them (absolute)."""
    infos = json.loads(_qemu_img("info", "--output=json", "--force-share", "--backing-chain", path))
    return [os.path.realpath(info["filename"]) for info in infos]


def backing_file(path: str) -> str:
    """The backing file as written in the image's header (relative names stay relative)."""
    info = json.loads(_qemu_img("info", "--output=json", "--force-share", path))
    return str(info.get("backing-filename") or "")


def retarget_backing(overlay: Path, base: str, base_format: str) -> None:
    """Point an overlay that names its base by a path that no longer exists at
    ``base`` (``rebase -u`` rewrites only the header)."""
    current = backing_file(str(overlay))
    if current and not os.path.isabs(current):
        return  # a relative name moves with the overlay
    if current != base:
        _qemu_img("rebase", "-u", "-F", base_format or image_format(base), "-b", base, str(overlay))


def _backing_name(backing: str, working_dir: str) -> str:
    """How an overlay in the working dir names its backing image: a bare name
    for a file beside it, else the absolute path (a shared filesystem)."""
    if os.path.dirname(os.path.abspath(backing)) == os.path.abspath(working_dir):
        return os.path.basename(backing)
    return backing


def _create(overlay: Path, backing: str, backing_format: str, working_dir: str) -> None:
    # A relative backing name is resolved from the overlay's own directory.
    name = _backing_name(backing, working_dir)
    _qemu_img("create", "-q", "-f", "qcow2", "-F", backing_format, "-b", name, str(overlay))


def prepare(job: VmJob, tops: dict[str, str] | None = None, avoid: frozenset[str] = frozenset()) -> VmJob:
    """Put every writable disk of ``job`` on a fresh top overlay; return the new job.

    ``tops`` maps a device to the overlay a restored checkpoint left on top of
    it; the new layer goes over that one. Without it, the newest overlay of the
    device already in the working directory (from an earlier run whose memory
    state is not usable) keeps the guest's disk progress under the new layer,
    provided its chain really ends at this job's base image and no other
    job's checkpoint claims it (``avoid``: file names).
    """
    if not job.snapshot_disk:
        return job
    working_dir = job.working_dir
    disks = []
    for disk in job.disks:
        if not needs_overlay(disk):
            disks.append(disk)
            continue
        existing = generations(working_dir, disk.device)
        ours = {n: p for n, p in existing.items() if p.name not in avoid}
        below, below_format = disk.path, disk.format or image_format(disk.path)
        if tops and disk.device in tops:
            below, below_format = tops[disk.device], "qcow2"
        elif ours:
            newest = ours[max(ours)]
            if os.path.realpath(disk.path) not in chain(str(newest)):
                raise JobImageError(f"{newest.name} in the working dir is not an overlay of {disk.path}; "
                                    "it is left as it is")
            below, below_format = str(newest), "qcow2"
            log.get().warning("overlay_kept", overlay=newest.name, detail="no usable checkpoint: the guest boots "
                              "on the disk state an earlier run left")
        generation = max(existing, default=0) + 1
        overlay = Path(working_dir) / overlay_name(disk.device, generation)
        _create(overlay, below, below_format, working_dir)
        log.get().info("overlay_created", overlay=overlay.name, backing=os.path.basename(below))
        # The job user's alone: libvirt hands it to its QEMU user for the run.
        os.chmod(overlay, 0o600)
        give_to(overlay, job.owner_uid, job.owner_gid)
        disks.append(disk.model_copy(update={"path": str(overlay), "format": "qcow2"}))
    return job.model_copy(update={"disks": tuple(disks)})


def commit_down(job: VmJob) -> None:
    """The guest ended: fold every upper layer into the first overlay of its
    device and remove it, so the output is one overlay of the base image."""
    for disk in job.disks:
        existing = generations(job.working_dir, disk.device)
        if len(existing) < 2 or Path(disk.path) != existing[max(existing)]:
            continue
        first = existing[min(existing)]
        try:
            _qemu_img("commit", "-q", "-b", str(first), disk.path, timeout=COMMIT_TIMEOUT)
        except (HostError, JobImageError) as exc:
            log.get().error("overlay_commit_failed", overlay=disk.path, detail=exc.message)
            continue
        for path in existing.values():
            if path != first:
                path.unlink(missing_ok=True)
        log.get().info("overlays_committed", into=first.name, layers=len(existing))


def remove_all(job: VmJob) -> None:
    """``vm_no_output_vm``: every overlay layer of the job's disks goes."""
    for disk in job.disks:
        for path in generations(job.working_dir, disk.device).values():
            path.unlink(missing_ok=True)
            log.get().info("output_dropped", path=path.name, detail="vm_no_output_vm")
