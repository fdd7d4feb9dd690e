"""Whose fault a failed start or restore is, by libvirt's error code.

libvirt reports every failure as one exception type with a numeric code and
the subsystem that raised it. A start fails because of the **job**
(:class:`JobImageError`: the starter holds the job) only when QEMU cannot
open one of the job's images as its format says - checked with qemu-img
after the failure - or libvirt rejects the built-in description the job's
values went into. Everything else - permission denied to QEMU, an image
locked by another process, out of memory, libvirtd or QEMU internal errors,
an admin's LIBVIRT_XML_SCRIPT output - is the **host**'s (:class:`HostError`:
the job is requeued). docs/admin.md, "Start failures", has the table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import libvirt

from vmgahp import log
from vmgahp.drivers.base import HostError, HypervisorError, JobImageError
from vmgahp.drivers.libvirt.faults import error_code, error_message, is_connection_error
from vmgahp.drivers.libvirt.overlays import image_problem

if TYPE_CHECKING:
    from vmgahp.job.model import VmJob

# The C++ rule: qemu's complaint about a disk declared qcow2 that is not.
BAD_IMAGE_TEXT = "image is not in qcow2 format"
# libvirt rejected the domain description itself (schema, syntax).
DESCRIPTION_CODES = frozenset({libvirt.VIR_ERR_XML_ERROR, libvirt.VIR_ERR_XML_DETAIL,
                               libvirt.VIR_ERR_XML_INVALID_SCHEMA})
# QEMU or the storage code failed: the job's image, or the host - look at the image.
AMBIGUOUS = frozenset({(libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_QEMU),
                       (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_STORAGE),
                       (libvirt.VIR_ERR_STORAGE_PROBE_FAILED, libvirt.VIR_FROM_STORAGE)})


def job_at_fault(code: int | None, source: int | None, message: str, job: VmJob, origin: str) -> bool:
    if BAD_IMAGE_TEXT in message.lower():  # the C++ rule, kept
        return True
    if code in DESCRIPTION_CODES:
        return origin == "builtin"
    if (code, source) in AMBIGUOUS:
        for disk in job.disks:
            problem = image_problem(disk.path, disk.format)
            if problem:
                log.get().info("start_failure_image", path=disk.path, detail=problem)
                return True
    return False


def start_failure(exc: libvirt.libvirtError, job: VmJob, origin: str) -> HypervisorError:
    """The error kind of a createXML that failed (``origin``: builtin or script XML)."""
    message = error_message(exc)
    kind = JobImageError if job_at_fault(exc.get_error_code(), exc.get_error_domain(), message, job, origin) \
        else HostError
    return kind(message, error_code(exc))


def restore_failure(exc: libvirt.libvirtError, action: str) -> HypervisorError:
    """A restore that the connection lost is the host's; one that libvirt or
    QEMU refused means this saved state cannot be restored here."""
    kind = HostError if is_connection_error(exc) else JobImageError
    return kind(f"{action}: {error_message(exc)}", error_code(exc))
