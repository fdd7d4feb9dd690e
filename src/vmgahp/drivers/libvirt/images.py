"""Every file a VM's disks open: checked as the job user, given back after.

QEMU opens more than the file ``vm_disk`` names: a qcow2 image names its
backing file (which may name its own), may keep its data in an external data
file, and a VMDK descriptor lists extent files. libvirt, as root, follows the
backing chain the image headers spell out, and with a stock libvirt (the DAC
security driver, ``dynamic_ownership = 1``) chowns every layer to the QEMU
user (``libvirt-qemu``) for the run. So a job's own qcow2 whose header names
``/etc/shadow``, or another job's disk, as its backing file would have libvirt
hand that file to QEMU - and leave it owned by ``libvirt-qemu``. Hence:

* :func:`check_images`, before every start and restore, walks each disk one
  layer at a time with ``qemu-img info`` (which never opens a backing file)
  and, before a layer is opened at all, checks that the job user may read it
  (mode bits, as :mod:`vmgahp.job.access`). Backing names that are not a local
  file (``json:``, ``nbd://``...) are refused. A disk with no format given is
  raw to libvirt: nothing below it is opened.
* The files of those chains that live in the working directory are recorded
  with their owners (:class:`JobFiles`). libvirt gives back only the top
  layer of each writable disk when the VM ends (``remember_owner``); backing
  layers - the job's base image, the layers a restored checkpoint brought -
  and the read-only CD-ROM image stay ``libvirt-qemu``'s, writable by every
  QEMU on the host and, for a 0600 file, no longer readable by the job user
  (who then cannot transfer its own output). :meth:`JobFiles.give_back`
  restores the recorded owners once the domain has ended.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vmgahp import log
from vmgahp.drivers.base import HostError, JobImageError
from vmgahp.job.access import JobUser, can_access

if TYPE_CHECKING:
    from vmgahp.job.model import VmJob

QEMU_IMG = "qemu-img"
TIMEOUT = 30.0
MAX_LAYERS = 200  # vmgahp adds one per restart; libvirt itself stops near here


@dataclass
class JobFiles:
    """Files in the working dir that the VM opens, and their owners before it started."""

    owners: dict[str, tuple[int, int]] = field(default_factory=dict)

    def give_back(self) -> None:
        """The domain has ended: whatever libvirt left to its QEMU user goes
        back to the owner it had. Only as root; a file that is gone, or no
        longer a regular file, is left alone."""
        if os.geteuid() != 0:
            return
        given = []
        for path, (uid, gid) in self.owners.items():
            try:
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode) or (st.st_uid, st.st_gid) == (uid, gid):
                    continue
                os.chown(path, uid, gid, follow_symlinks=False)
            except OSError as exc:
                log.get().warning("give_back_failed", path=path, detail=str(exc))
                continue
            given.append(os.path.basename(path))
        if given:
            log.get().info("files_given_back", files=sorted(given),
                           detail="the hypervisor left them to its own user")


def check_images(job: VmJob) -> JobFiles:
    """Raise JobImageError if a disk opens a file its job user may not read;
    return the working-dir files the VM will open, with their owners."""
    user = None
    if job.owner_uid is not None:
        user = JobUser(job.owner_uid, job.owner_gid if job.owner_gid is not None else job.owner_uid)
    working_dir = os.path.abspath(job.working_dir)
    files = JobFiles()
    for disk in job.disks:
        for path in _opened_files(disk.path, disk.format, user, disk.device):
            if os.path.dirname(os.path.abspath(path)) != working_dir:
                continue
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                files.owners[os.path.abspath(path)] = (st.st_uid, st.st_gid)
    return files


def _opened_files(path: str, fmt: str, user: JobUser | None, device: str) -> list[str]:
    """``path`` and every file QEMU opens below it, each checked before it is read."""
    opened = [path]
    layer, layer_format, parent = path, fmt, ""
    for _ in range(MAX_LAYERS):
        _check(layer, user, device, f"the backing file of {parent}" if parent else "the disk")
        if not layer_format or layer_format == "raw":
            return opened  # libvirt opens a disk without a format as raw
        info = _info(layer, layer_format)
        for extra in _extra_files(layer, info):
            _check(extra, user, device, f"a data or extent file of {layer}")
            opened.append(extra)
        backing = info.get("full-backing-filename") or info.get("backing-filename")
        if not backing:
            return opened
        if ":" in backing.split("/", 1)[0]:  # QEMU's rule: a colon before any slash is a protocol
            raise JobImageError(f"{device}: {layer} has a backing file that is not a local file: {backing!r}")
        parent, layer = layer, os.path.join(os.path.dirname(os.path.abspath(layer)), backing)
        layer_format = info.get("backing-filename-format") or ""
        if not layer_format:
            _check(layer, user, device, f"the backing file of {parent}")
            layer_format = str(_info(layer, "").get("format") or "raw")  # QEMU probes it as well
        opened.append(layer)
    raise JobImageError(f"{device}: {path} has more than {MAX_LAYERS} images in its backing chain")


def _check(path: str, user: JobUser | None, device: str, what: str) -> None:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise JobImageError(f"{device}: {path} ({what}): {exc.strerror}") from exc
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise JobImageError(f"{device}: {path} ({what}) is not a file")
    if not can_access(path, user):
        raise JobImageError(f"{device}: {path} ({what}) is not readable by the job user")


def _extra_files(layer: str, info: dict) -> list[str]:
    """A qcow2 image's external data file, a VMDK's extent files (not the layer itself)."""
    data = (info.get("format-specific") or {}).get("data") or {}
    names = [data["data-file"]] if data.get("data-file") else []
    names += [e["filename"] for e in data.get("extents", []) if e.get("filename")]
    here = os.path.dirname(os.path.abspath(layer))
    found = []
    for name in names:
        full = name if os.path.isabs(name) else os.path.join(here, name)
        if os.path.abspath(full) != os.path.abspath(layer):
            found.append(full)
    return found


def _info(path: str, fmt: str) -> dict:
    args = [QEMU_IMG, "info", "--output=json", "--force-share", *(["-f", fmt] if fmt else []), path]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HostError(f"qemu-img info {path}: {exc}") from exc
    if done.returncode != 0:
        raise JobImageError(f"qemu-img info {path}: {done.stderr.strip()}")
    try:
        return dict(json.loads(done.stdout))
    except (ValueError, TypeError) as exc:
        raise HostError(f"qemu-img info {path}: unreadable output ({exc})") from exc
