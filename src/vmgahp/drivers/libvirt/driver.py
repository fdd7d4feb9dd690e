"""KVM and Xen through libvirt: the :class:`Hypervisor` of both VM types.

One :class:`LibvirtHypervisor` per gahp process owns one shared connection
(``VM_KVM_LIBVIRT_URI`` or ``VM_XEN_LIBVIRT_URI``). VMs are started transient
(``createXML``), as the C++ gahp does: libvirt forgets them when they power
off or are saved, so nothing is left defined on the host after a job.

A domain name that already exists when a job starts is **not** destroyed: the
name is ``<user>_<cluster>.<proc>``, and two schedds of one pool can hand the
same name to two slots of this machine, so the other domain may be another
job's live VM. The start fails with VMGAHP_ERR_INTERNAL (the starter requeues
the job); a leftover of a crashed gahp is removed by the startd's kill mode.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import libvirt

from vmgahp import errors, log
from vmgahp.errors import GahpError
from vmgahp.job.networking import NetworkPlan, plan_networking
from vmgahp.drivers.base import Capability, DomainState, HostCheckError, Hypervisor, HypervisorError
from vmgahp.drivers.libvirt.connection import LibvirtConnection
from vmgahp.drivers.libvirt.domain import LibvirtDomain
from vmgahp.drivers.libvirt.domain_xml import DomainXmlError, build_domain_xml
from vmgahp.drivers.libvirt.faults import error_message, hypervisor_error, is_flag_refused, is_no_domain, is_unsupported
from vmgahp.drivers.libvirt.xml_edit import DomainXmlParseError, normalise_script_xml, retarget_disks
from vmgahp.drivers.libvirt.xml_script import DEFAULT_TIMEOUT, run_xml_script

if TYPE_CHECKING:
    from vmgahp.gahp.config import Settings
    from vmgahp.job.model import VmJob

KVM_DEVICE = "/dev/kvm"
PASST_MIN_LIBVIRT = 9_000_000  # virGetVersion() encoding of 9.0.0
# The C++ rule: qemu's complaint about a disk declared qcow2 that is not.
_BAD_IMAGE_TEXT = "image is not in qcow2 format"

__all__ = ["LibvirtDomain", "LibvirtHypervisor", "classify_start_error"]


# libvirt rejected the domain description itself (schema, syntax).
_DESCRIPTION_CODES = frozenset({libvirt.VIR_ERR_XML_ERROR, libvirt.VIR_ERR_XML_DETAIL, libvirt.VIR_ERR_XML_INVALID_SCHEMA})
# QEMU or the storage code failed: the job's image, or the host - look at the image.
_AMBIGUOUS = frozenset({(libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_QEMU),
                        (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_STORAGE),
                        (libvirt.VIR_ERR_STORAGE_PROBE_FAILED, libvirt.VIR_FROM_STORAGE)})


def classify_start_error(code: int | None, source: int | None, message: str, job: VmJob, origin: str) -> str:
    """The token for a failed start, by libvirt's error code (docs/admin.md, "Start failures").

    BAD_IMAGE (the starter holds the job) only when the job caused it: QEMU
    cannot open one of the job's images as its format says (checked with
    qemu-img after the failure), or libvirt rejects the built-in description
    that the job's values went into. Everything else - permission denied to
    QEMU, an image locked by another process, out of memory, libvirtd or QEMU
    internal errors, an admin's LIBVIRT_XML_SCRIPT output - is the host's:
    INTERNAL, which requeues the job.
    """
    from vmgahp.drivers.libvirt.overlays import image_problem

    if _BAD_IMAGE_TEXT in message.lower():  # the C++ rule, kept
        return errors.BAD_IMAGE
    if code in _DESCRIPTION_CODES:
        return errors.BAD_IMAGE if origin == "builtin" else errors.INTERNAL
    if (code, source) in _AMBIGUOUS:
        for disk in job.disks:
            problem = image_problem(disk.path, disk.format)
            if problem:
                log.get().info("start_failure_image", path=disk.path, detail=problem)
                return errors.BAD_IMAGE
    return errors.INTERNAL


class LibvirtHypervisor(Hypervisor):
    """``vm_type`` is ``kvm`` or ``xen``; nothing connects until first use."""

    def __init__(self, settings: Settings, vm_type: str) -> None:
        if vm_type not in ("kvm", "xen"):
            raise ValueError(f"libvirt driver runs kvm and xen VMs, not {vm_type!r}")
        super().__init__(settings, vm_type)
        self.uri = settings.uri_for(vm_type)
        self.connection = LibvirtConnection(self.uri)
        self.capabilities = (
            Capability.PAUSE
            | Capability.SAVE
            | Capability.CHECKPOINT
            | Capability.NETWORK_NAT
            | Capability.NETWORK_BRIDGE
            | (Capability.NETWORK_USER if vm_type == "kvm" else Capability.NONE)
        )
        self._lock = threading.Lock()
        self._plan: NetworkPlan | None = None
        self._start_validate: bool | None = None  # None: not tried yet

    def __repr__(self) -> str:
        return f"LibvirtHypervisor({self.vm_type!r}, uri={self.uri!r})"

    # ------------------------------------------------------------- host check
    def check_host(self) -> None:
        if self.vm_type == "kvm":
            scheme = urlsplit(self.uri).scheme
            if self.settings.kvm_domain_type == "kvm" and scheme.startswith("qemu"):
                if not os.access(KVM_DEVICE, os.R_OK | os.W_OK):
                    raise HostCheckError(
                        f"{KVM_DEVICE} is missing or not readable and writable: no hardware "
                        "virtualisation (set VM_KVM_DOMAIN_TYPE = qemu for software emulation)"
                    )
        else:
            bootloader = self.settings.xen_bootloader
            if not bootloader:
                raise HostCheckError("XEN_BOOTLOADER is not set")
            if not os.access(bootloader, os.R_OK):
                raise HostCheckError(f"XEN_BOOTLOADER {bootloader} is not readable")
        try:
            self.connection.get()
        except HypervisorError as exc:
            raise HostCheckError(exc.message) from exc

    # ------------------------------------------------------------- networking
    @staticmethod
    def passt_available() -> bool:
        """A passt backend needs libvirt >= 9.0.0 and passt on PATH (spec 4.6)."""
        return libvirt.getVersion() >= PASST_MIN_LIBVIRT and shutil.which("passt") is not None

    def _user_supported(self) -> bool:
        # Without passt, QEMU's built-in user-mode stack (SLIRP) still gives
        # a guest outbound networking; the C++ drops ``user`` instead.
        if self.vm_type != "kvm":
            return False
        scheme = urlsplit(self.uri).scheme
        return self.passt_available() or scheme.startswith(("qemu", "test"))

    def _host_provides(self, net_type: str) -> bool:
        """Can this host give a VM this networking type right now?"""
        if urlsplit(self.uri).scheme.startswith("test"):
            return True  # the test hypervisor has a 'default' network and no host
        if net_type == "nat":
            try:
                return bool(self.connection.call(lambda conn: conn.networkLookupByName("default").isActive()))
            except (libvirt.libvirtError, HypervisorError) as exc:
                log.get().info("nat_unavailable", detail=error_message(exc) if isinstance(exc, libvirt.libvirtError)
                               else str(exc))
                return False
        if net_type == "bridge":
            return os.path.isdir(f"/sys/class/net/{self.settings.bridge_interface}")
        return True

    def network_plan(self) -> NetworkPlan:
        with self._lock:
            if self._plan is None:
                self._plan = plan_networking(
                    self.settings, self.vm_type, self._user_supported(), self._host_provides
                )
            return self._plan

    # ------------------------------------------------------------- domain XML
    def builtin_xml(self, job: VmJob) -> str:
        return build_domain_xml(
            job,
            domain_type=self.settings.kvm_domain_type,
            xen_bootloader=self.settings.xen_bootloader,
            passt=job.networking_type == "user" and self.passt_available(),
        )

    def domain_xml(self, job: VmJob) -> tuple[str, str]:
        """The XML to start ``job`` with and where it came from (``script`` or ``builtin``)."""
        if self.settings.xml_script:
            timeout = min(DEFAULT_TIMEOUT, self.settings.call_timeout)
            outcome = run_xml_script(job, self.settings, timeout=timeout)
            if outcome.xml is not None:
                domain_type = self.settings.kvm_domain_type if self.vm_type == "kvm" else None
                try:
                    xml, changes = normalise_script_xml(outcome.xml, job.name, domain_type)
                except DomainXmlParseError as exc:  # checked by run_xml_script; belt and braces
                    log.get().warning("xml_script_failed", detail=str(exc), fallback="built-in domain XML")
                else:
                    if changes:
                        log.get().info("xml_script_adjusted", changes=changes)
                    return xml, "script"
        try:
            return self.builtin_xml(job), "builtin"
        except DomainXmlError as exc:
            raise GahpError(errors.CRITICAL, f"cannot build the domain XML: {exc}") from exc

    # ---------------------------------------------------------------- start
    def create(self, job: VmJob) -> LibvirtDomain:
        xml, origin = self.domain_xml(job)
        try:
            existing = self.lookup(job.name)
        except HypervisorError as exc:
            raise GahpError(errors.INTERNAL, exc.message) from exc
        if existing is not None:
            raise GahpError(
                errors.INTERNAL,
                f"a domain named {job.name} already exists on {self.uri}; it is left alone "
                "(another job's VM, or a leftover that the startd's kill mode removes)",
            )
        log.get().debug("domain_xml", name=job.name, origin=origin, xml=xml)
        # Our own XML is checked against libvirt's schema; an admin's script
        # XML is not, as the C++ gahp never did and libvirt parses it leniently.
        validate = origin == "builtin"
        try:
            self._create_xml(xml, validate)
        except libvirt.libvirtError as exc:
            message = error_message(exc)
            token = classify_start_error(exc.get_error_code(), exc.get_error_domain(), message, job, origin)
            log.get().error(
                "domain_start_failed", name=job.name, token=token, code=exc.get_error_code(), detail=message
            )
            raise GahpError(token, message) from exc
        except HypervisorError as exc:  # could not connect
            raise GahpError(errors.INTERNAL, exc.message) from exc
        log.get().info("domain_started", name=job.name, origin=origin, uri=self.uri)
        return LibvirtDomain(job.name, self.connection)

    def _create_xml(self, xml: str, validate: bool) -> None:
        if validate and self._start_validate is not False:
            try:
                self.connection.call(lambda conn: conn.createXML(xml, libvirt.VIR_DOMAIN_START_VALIDATE))
                self._start_validate = True
                return
            except libvirt.libvirtError as exc:
                if not is_flag_refused(exc):
                    raise
                log.get().info("start_validate_refused", uri=self.uri, detail=error_message(exc))
                self._start_validate = False
        self.connection.call(lambda conn: conn.createXML(xml, 0))

    # -------------------------------------------------------------- restore
    def restore(self, job: VmJob, path: Path) -> LibvirtDomain:
        """Start ``job`` again from a save image; it comes back running."""
        file = str(path)
        dxml = self._moved_disks_xml(job, file)
        try:
            try:
                self.connection.call(lambda conn: conn.restoreFlags(file, dxml, 0))
            except libvirt.libvirtError as exc:
                if dxml is None or not is_unsupported(exc):
                    raise
                log.get().warning("restore_xml_refused", uri=self.uri, detail=error_message(exc))
                self.connection.call(lambda conn: conn.restore(file))
        except libvirt.libvirtError as exc:
            raise hypervisor_error(exc, f"restore of {job.name} from {file}") from exc
        domain = self.lookup(job.name)
        if domain is None:
            raise HypervisorError(f"restored {file}, but there is no domain named {job.name}")
        # An image saved while paused comes back paused on drivers that did
        # not take VIR_DOMAIN_SAVE_RUNNING at save time.
        if domain.info().state is DomainState.PAUSED:
            domain.unpause()
        log.get().info("domain_restored", name=job.name, path=file, retargeted=dxml is not None)
        return domain

    def _moved_disks_xml(self, job: VmJob, file: str) -> str | None:
        """The image's XML with the job's current disk paths, if any moved."""
        if not job.disks:
            return None
        try:
            saved = self.connection.call(lambda conn: conn.saveImageGetXMLDesc(file, 0), retry=True)
            return retarget_disks(saved, job.disks)
        except (libvirt.libvirtError, DomainXmlParseError) as exc:
            # The restore itself will say what is wrong with the image.
            log.get().debug("save_image_xml_unreadable", path=file, detail=error_message(exc))
            return None

    # --------------------------------------------------------------- lookup
    def lookup(self, name: str) -> LibvirtDomain | None:
        try:
            self.connection.call(lambda conn: conn.lookupByName(name), retry=True)
        except libvirt.libvirtError as exc:
            if is_no_domain(exc):
                return None
            raise hypervisor_error(exc, f"lookup of {name}") from exc
        return LibvirtDomain(name, self.connection)

    def close(self) -> None:
        self.connection.close()
