"""CONDOR_VM_START, step by step (spec 3.4), for any driver.

1. the ad's own checks (NO_JOBCLASSAD_INFO, NO_SUPPORTED_VM_TYPE);
2. the job model: the common checks, then the driver's (``build_job``);
3. a checkpoint in the working directory for this job (``checkpoint.scan``);
4. the CD-ROM image (built, or the one that came back with the checkpoint);
5. the disks as the VM will open them (``Hypervisor.prepare``);
6. a cold boot, or a restore from the checkpoint - never a cold boot on a
   checkpoint's disks, which would be a crash to the guest's filesystems.

A START that fails leaves the working directory as it found it: the overlay
layers and CD-ROM image it made are removed, never a file that was there.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Callable

from vmgahp import log
from vmgahp.drivers.base import HypervisorError
from vmgahp.errors import GahpError
from vmgahp.protocol import tokens
from vmgahp.vm.failures import as_gahp_error

if TYPE_CHECKING:
    from vmgahp.drivers.base import Domain, Hypervisor
    from vmgahp.job.access import JobUser
    from vmgahp.job.model import VmJob
    from vmgahp.settings import Settings


def read_ad(ad_lines: tuple[str, ...] | None, vm_type: str, gahp_vm_type: str):  # -> JobAd
    from vmgahp.job import ad_reader
    from vmgahp.job.jobad import JobAd

    if ad_lines is None:
        raise GahpError(tokens.NO_JOBCLASSAD_INFO, "no job ad was sent")
    ad = JobAd.from_entries(*ad_reader.evaluate(ad_lines))  # classad2 in a child, not in the gahp
    for line in ad.dropped:
        log.get().warning("ad_line_ignored", line=line[:200])
    if ad.get_str("VM_WORKING_DIR") is None:
        raise GahpError(tokens.NO_JOBCLASSAD_INFO, "the job ad has no VM_WORKING_DIR")
    job_type = ad.get_str("JobVMType")
    if job_type is None:
        raise GahpError(tokens.NO_JOBCLASSAD_INFO, "the job ad has no JobVMType")
    if job_type.lower() != vm_type:
        raise GahpError(tokens.NO_SUPPORTED_VM_TYPE, f"JobVMType {job_type!r} but START {vm_type!r}")
    if vm_type != gahp_vm_type:
        raise GahpError(tokens.NO_SUPPORTED_VM_TYPE, f"this gahp runs {gahp_vm_type!r} VMs")
    return ad


def start(ad, hypervisor: Hypervisor, settings: Settings, user: JobUser | None,
          may_boot: Callable[[], None]) -> tuple[VmJob, Domain, bool]:
    """Steps 2-6; ``may_boot`` raises when the gahp is ending. Returns the job
    as the VM runs it, its domain, and whether it was restored."""
    from vmgahp.job.model import build_job  # deferred: pydantic loads here
    from vmgahp.vm import checkpoint
    from vmgahp.vm.cdrom import attach_cdrom

    job = build_job(ad, settings, hypervisor.network_plan(), user, hypervisor)
    found = checkpoint.scan(job, hypervisor)  # from the working dir itself, not TransferIntermediate
    before = set(os.listdir(job.working_dir))
    try:
        job = attach_cdrom(job, reuse=found.cdrom if found.state else None)
        job = hypervisor.prepare(job, found.state, avoid=found.foreign)
        may_boot()
        if found.state is None:
            domain = hypervisor.create(job)
        else:
            # The checkpoint's files stay as they came: the guest writes to
            # new layers, and a later checkpoint replaces them atomically.
            domain = hypervisor.restore(job, found.state)
    except HypervisorError as exc:
        remove_new_vm_files(job.working_dir, before)
        raise as_gahp_error("restore" if found.state else "CONDOR_VM_START", exc,
                            "restore of the checkpoint" if found.state else "start") from exc
    except BaseException:
        remove_new_vm_files(job.working_dir, before)
        raise
    return job, domain, found.state is not None


def remove_new_vm_files(working_dir: str, before: set[str]) -> None:
    """What a failed START (or RESUME) made: the driver's ``vmgahp-overlay-*``
    files (``Hypervisor.prepare``) and the CD-ROM image; never a file that was there."""
    with contextlib.suppress(OSError):
        for name in set(os.listdir(working_dir)) - before:
            if name.startswith(("vmgahp-overlay-", "vmgahp-cdrom")):
                os.unlink(os.path.join(working_dir, name))
