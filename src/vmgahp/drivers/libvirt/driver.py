"""KVM and Xen through libvirt: the :class:`Hypervisor` of both VM types.

One :class:`LibvirtHypervisor` per gahp process owns one shared connection
(``VM_KVM_LIBVIRT_URI`` or ``VM_XEN_LIBVIRT_URI``). VMs are started transient
(``createXML``), as the C++ gahp does: libvirt forgets them when they power
off or are saved, so nothing is left defined on the host after a job.

A domain name that already exists when a job starts is **not** destroyed: the
name is ``<user>_<cluster>.<proc>``, and two schedds of one pool can hand the
same name to two slots of this machine, so the other domain may be another
job's live VM. The start fails as the host's fault (the starter requeues the
job); a leftover of a crashed gahp is removed by the startd's kill mode.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import libvirt

from vmgahp import log
from vmgahp.drivers.base import (
    Capability,
    DomainState,
    HostCheckError,
    HostError,
    Hypervisor,
    HypervisorError,
    JobImageError,
    SavedState,
)
from vmgahp.drivers.libvirt import firmware, images, overlays, save_image, state
from vmgahp.drivers.libvirt.connection import LibvirtConnection
from vmgahp.drivers.libvirt.domain import LibvirtDomain
from vmgahp.drivers.libvirt.domain_xml import DomainXmlError, build_domain_xml
from vmgahp.drivers.libvirt.faults import error_message, hypervisor_error, is_flag_refused, is_no_domain, is_unsupported
from vmgahp.drivers.libvirt.settings import LibvirtSettings
from vmgahp.drivers.libvirt.start_errors import restore_failure, start_failure
from vmgahp.drivers.libvirt.xml_edit import DomainXmlParseError, normalise_script_xml, retarget_disks
from vmgahp.drivers.libvirt.xml_script import DEFAULT_TIMEOUT, run_xml_script
from vmgahp.errors import GahpError
from vmgahp.job.networking import NetworkPlan, plan_networking
from vmgahp.protocol import tokens

if TYPE_CHECKING:
    from vmgahp.job.access import JobUser
    from vmgahp.job.jobad import JobAd
    from vmgahp.job.model import VmJob
    from vmgahp.settings import Settings

KVM_DEVICE = "/dev/kvm"
PASST_MIN_LIBVIRT = 9_000_000  # virGetVersion() encoding of 9.0.0
_SAVES = Capability.SAVE | Capability.CHECKPOINT

__all__ = ["LibvirtDomain", "LibvirtHypervisor"]


class LibvirtHypervisor(Hypervisor):
    """``vm_type`` is ``kvm`` or ``xen``; nothing connects until first use."""

    def __init__(self, settings: Settings, vm_type: str) -> None:
        if vm_type not in ("kvm", "xen"):
            raise ValueError(f"libvirt driver runs kvm and xen VMs, not {vm_type!r}")
        super().__init__(settings, vm_type)
        self.libvirt, warnings = LibvirtSettings.from_knobs(settings.driver_knobs, vm_type)
        for warning in warnings:
            log.get().warning("config_value_ignored", detail=warning)
        self._apply_bridge_script()
        self.uri = self.libvirt.uri
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
        self._files: dict[str, images.JobFiles] = {}  # by VM name: what its disks open, for finish()
        # Restoring needs zstd whatever this node's setting: the state may
        # come from another node. Xen saves stay raw: not tried on a Xen host.
        self.zstd = save_image.find_zstd()
        wants = self.libvirt.compress_checkpoints and vm_type == "kvm"
        self.compressor = self.zstd if wants else None
        if wants and self.zstd is None:
            log.get().warning("checkpoint_compression_off", detail="no zstd program on PATH or in /usr/bin")

    def _apply_bridge_script(self) -> None:
        """VM_BRIDGE_SCRIPT is Xen's; its ``bridge=`` names the bridge when
        VM_NETWORKING_BRIDGE_INTERFACE does not (bridge_script.py)."""
        script = self.libvirt.bridge_script
        if not script:
            return
        if self.vm_type != "xen":
            log.get().warning("bridge_script_ignored", knob=script.knob, vm_type=self.vm_type,
                              detail="KVM has no vif scripts: libvirt attaches the NIC to "
                                     "VM_NETWORKING_BRIDGE_INTERFACE itself")
            return
        if script.ignored:
            log.get().warning("bridge_script_words_ignored", knob=script.knob, words=list(script.ignored),
                              detail="only the script and bridge=NAME have a place in libvirt's XML")
        configured = self.settings.bridge_interface
        if script.bridge and not configured:
            self.settings = dataclasses.replace(self.settings, bridge_interface=script.bridge)
        elif script.bridge and script.bridge != configured:
            log.get().warning("bridge_script_bridge_ignored", knob=script.knob, bridge=script.bridge,
                              used=configured, detail="VM_NETWORKING_BRIDGE_INTERFACE names the bridge")
        log.get().info("bridge_script", knob=script.knob, script=script.script,
                       bridge=self.settings.bridge_interface)

    def __repr__(self) -> str:
        return f"LibvirtHypervisor({self.vm_type!r}, uri={self.uri!r})"

    def capabilities_for(self, job: VmJob) -> Capability:
        xen = job.extras
        if xen is not None and xen.mode == "vmx" and not self.libvirt.xen_allow_hardware_vt_suspend:
            return self.capabilities & ~_SAVES  # Xen HVM guests need XEN_ALLOW_HARDWARE_VT_SUSPEND
        return self.capabilities

    # ------------------------------------------------------------- host check
    def check_host(self) -> None:
        """/dev/kvm for KVM on a real QEMU URI with domain type kvm; XEN_BOOTLOADER
        for Xen whatever the URI (spec 9); then a connection. The test
        hypervisor (``test:///``) has no host to check."""
        if self.vm_type == "kvm":
            scheme = urlsplit(self.uri).scheme
            if scheme.startswith("test"):
                return
            if self.libvirt.domain_type == "kvm" and scheme.startswith("qemu"):
                if not os.access(KVM_DEVICE, os.R_OK | os.W_OK):
                    raise HostCheckError(
                        f"{KVM_DEVICE} is missing or not readable and writable: no hardware "
                        "virtualisation (set VM_KVM_DOMAIN_TYPE = qemu for software emulation)"
                    )
        else:
            bootloader = self.libvirt.xen_bootloader
            if not bootloader:
                raise HostCheckError("XEN_BOOTLOADER is not set")
            if not os.access(bootloader, os.R_OK):
                raise HostCheckError(f"XEN_BOOTLOADER {bootloader} is not readable")
        if urlsplit(self.uri).scheme.startswith("test"):
            return
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
                self._plan = plan_networking(self.settings, self._user_supported(), self._host_provides)
            return self._plan

    # ------------------------------------------------------------- domain XML
    def builtin_xml(self, job: VmJob) -> str:
        return build_domain_xml(
            job,
            domain_type=self.libvirt.domain_type,
            xen_bootloader=self.libvirt.xen_bootloader,
            xen_bridge_script=self.libvirt.bridge_script.script if self.vm_type == "xen" else "",
            bridge=self.settings.bridge_interface,
            passt=job.networking_type == "user" and self.passt_available(),
            uefi=self._uefi() if job.firmware == "uefi" else None,
        )

    def _uefi(self) -> firmware.Uefi:
        """The host's UEFI firmware; missing files are the host's fault (CRITICAL: requeued)."""
        uefi = firmware.Uefi.for_host(self.libvirt.uefi_loader, self.libvirt.uefi_nvram_template)
        if uefi.missing():
            raise DomainXmlError(uefi.why_missing())
        return uefi

    def domain_xml(self, job: VmJob) -> tuple[str, str]:
        """The XML to start ``job`` with and where it came from (``script`` or ``builtin``)."""
        if self.libvirt.xml_script:
            timeout = min(DEFAULT_TIMEOUT, self.settings.call_timeout)
            outcome = run_xml_script(job, self.libvirt, self.settings.bridge_interface, timeout=timeout)
            if outcome.xml is not None:
                domain_type = self.libvirt.domain_type if self.vm_type == "kvm" else None
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
            raise GahpError(tokens.CRITICAL, f"cannot build the domain XML: {exc}") from exc

    # ------------------------------------------------------------------ disks
    def warm_up(self) -> None:
        from vmgahp.drivers.libvirt import job_ad  # noqa: F401 - its pydantic models, built before START

    def read_job(self, ad: JobAd, job: VmJob, user: JobUser | None) -> VmJob:
        from vmgahp.drivers.libvirt import job_ad  # pydantic: not on the probe's and banner's path

        return job_ad.read_job(ad, job, user, self.libvirt)

    def prepare(self, job: VmJob, restored: SavedState | None, avoid: frozenset[str] = frozenset()) -> VmJob:
        job = overlays.prepare(job, tops=state.tops(job, restored) if restored else None, avoid=avoid)
        if job.firmware == "uefi":
            try:
                firmware.prepare_nvram(job.working_dir, self._uefi(), firmware.owner_of(job.owner_uid, job.owner_gid))
            except DomainXmlError as exc:
                raise GahpError(tokens.CRITICAL, str(exc)) from exc
        return job

    def finish(self, job: VmJob, output: bool = True) -> None:
        if output:
            overlays.commit_down(job)
        else:
            overlays.remove_all(job)
        files = self._files.pop(job.name, None)
        if files is not None:
            files.give_back()

    def _check_images(self, job: VmJob) -> images.JobFiles:
        """What the VM's disks open, checked as the job user (images.py); the
        test hypervisor opens no file."""
        if urlsplit(self.uri).scheme.startswith("test"):
            files = images.JobFiles()
        else:
            files = images.check_images(job)
        self._files[job.name] = files
        return files

    def restore_mismatch(self, job: VmJob, saved: SavedState) -> str:
        return state.mismatch(job, dict(saved.record))

    def adopt_legacy_state(self, job: VmJob, manifest: dict) -> SavedState | None:
        return state.adopt_format_1(job, manifest) if manifest.get("format") == 1 else None

    # ---------------------------------------------------------------- start
    def create(self, job: VmJob) -> LibvirtDomain:
        xml, origin = self.domain_xml(job)
        existing = self.lookup(job.name)
        if existing is not None:
            raise HostError(f"a domain named {job.name} already exists on {self.uri}; it is left alone "
                            "(another job's VM, or a leftover that the startd's kill mode removes)")
        files = self._check_images(job)
        log.get().debug("domain_xml", name=job.name, origin=origin, xml=xml)
        # Our own XML is checked against libvirt's schema; an admin's script
        # XML is not, as the C++ gahp never did and libvirt parses it leniently.
        validate = origin == "builtin"
        try:
            self._create_xml(xml, validate)
        except libvirt.libvirtError as exc:
            files.give_back()
            failure = start_failure(exc, job, origin)
            log.get().error("domain_start_failed", name=job.name, kind=type(failure).__name__,
                            code=exc.get_error_code(), detail=failure.message)
            raise failure from exc
        log.get().info("domain_started", name=job.name, origin=origin, uri=self.uri)
        return LibvirtDomain(job.name, self.connection, on_end=files.give_back, zstd=self.compressor)

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
    def restore(self, job: VmJob, saved: SavedState) -> LibvirtDomain:
        """Start ``job`` again from a save image (raw, or compressed by
        :mod:`save_image`); it comes back running."""
        if self.lookup(job.name) is not None:  # as in create: not the saved state's fault
            raise HostError(f"a domain named {job.name} already exists on {self.uri}; it is left alone")
        path = state.memory_file(job, saved)
        file = str(path)
        files = self._check_images(job)
        try:
            with save_image.opened(path, self.zstd) as source:
                dxml = self._moved_disks_xml(job, source.header)
                self._restore_from(source, dxml, job.name, file)
        except OSError as exc:  # the FIFO or the decompressor could not be set up here
            files.give_back()
            raise HostError(f"restore of {job.name} from {file}: {exc}") from exc
        except BaseException:
            files.give_back()
            raise
        if self.lookup(job.name) is None:
            raise HostError(f"restored {file}, but there is no domain named {job.name}")
        domain = LibvirtDomain(job.name, self.connection, on_end=files.give_back, zstd=self.compressor)
        # An image saved while paused comes back paused on drivers that did
        # not take VIR_DOMAIN_SAVE_RUNNING at save time.
        if domain.info().state is DomainState.PAUSED:
            domain.unpause()
        log.get().info("domain_restored", name=job.name, path=file, retargeted=dxml is not None)
        return domain

    def _restore_from(self, source: save_image.Source, dxml: str | None, name: str, file: str) -> None:
        """libvirt's restore from ``source``; a damaged compressed state is the
        job's image, whether libvirt noticed or only the decompressor did."""
        stop_watching = source.abort_when_failed(lambda: self._destroy_incoming(name))
        try:
            try:
                self.connection.call(lambda conn: conn.restoreFlags(source.path, dxml, 0))
            except libvirt.libvirtError as exc:
                if dxml is None or not is_unsupported(exc):
                    raise
                log.get().warning("restore_xml_refused", uri=self.uri, detail=error_message(exc))
                self.connection.call(lambda conn: conn.restore(source.path))
        except libvirt.libvirtError as exc:
            stop_watching()
            damage = source.damage()
            if damage:
                raise JobImageError(f"checkpoint memory state {os.path.basename(file)} is damaged ({damage})") from exc
            raise restore_failure(exc, f"restore of {name} from {file}") from exc
        finally:
            stop_watching()
        damage = source.damage()
        if damage:
            # Read to its end and only then found bad: a guest with that
            # memory must not run on.
            domain = self.lookup(name)
            if domain is not None:
                domain.destroy()
            raise JobImageError(f"checkpoint memory state {os.path.basename(file)} is damaged ({damage})")

    def _destroy_incoming(self, name: str) -> None:
        """End the domain a failed restore is filling (ours: restore checked
        that no domain had its name)."""
        try:
            self.connection.call(lambda conn: conn.lookupByName(name).destroy())
            log.get().warning("restore_stream_failed", name=name, action="domain destroyed")
        except libvirt.libvirtError:
            pass  # not there yet, or already gone

    def _moved_disks_xml(self, job: VmJob, file: str) -> str | None:
        """The image's XML with the job's current disk paths, if any moved.
        ``file`` holds the image's header and XML (the image itself, or the
        decompressed start of a compressed one)."""
        if not job.disks and job.firmware != "uefi":
            return None
        try:
            saved = self.connection.call(lambda conn: conn.saveImageGetXMLDesc(file, 0), retry=True)
            moved = retarget_disks(saved, job.disks)
            # A UEFI guest's variables moved with the job too.
            return firmware.retarget_nvram(moved or saved, job.working_dir) or moved
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
        return LibvirtDomain(name, self.connection, zstd=self.compressor)

    def close(self) -> None:
        self.connection.close()
