"""One VM on a libvirt hypervisor, addressed by its name.

The domain is looked up by name on every call, as the C++ gahp does: a
``virDomain`` handle goes stale when a transient domain is saved and restored
(it gets a new id), and after a reconnect.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import libvirt

from vmgahp import log
from vmgahp.drivers.base import Domain, DomainInfo, DomainState, HypervisorError, SavedState
from vmgahp.drivers.libvirt.connection import LibvirtConnection
from vmgahp.drivers.libvirt.faults import hypervisor_error, is_flag_refused, is_no_domain, is_not_running, readable

POLL_SECONDS = 0.2
# QEMU drops a power-button press the guest has not enabled yet (firmware,
# boot loader, early kernel: PM1_EN.PWRBTN_EN clear), and a press before the
# guest's handler runs goes to nobody. A guest restored from a save made while
# it was booting is in that window again, so the press is repeated during the
# grace (as OpenStack Nova's clean shutdown does).
PRESS_REPEAT_SECONDS = 5.0

_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: DomainState.PAUSED,
}
# States in which the guest has ended (a persistent domain stays defined).
_ENDED = frozenset({libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED})


def map_state(state: int) -> DomainState:
    """libvirt state -> ours; anything but running/blocked/paused is SHUTOFF."""
    return _STATES.get(state, DomainState.SHUTOFF)


class LibvirtDomain(Domain):
    def __init__(self, name: str, connection: LibvirtConnection, on_end: Callable[[], None] | None = None,
                 zstd: str | None = None) -> None:
        """``on_end`` runs once the domain is known to have ended here (saved,
        powered off, destroyed): the driver gives the job's files back.
        ``zstd`` compresses this domain's saves; None writes libvirt's raw
        image (compression off, or no zstd here)."""
        self.name = name
        self._connection = connection
        self._on_end = on_end
        self._zstd = zstd

    def _ended(self) -> None:
        on_end, self._on_end = self._on_end, None  # once: the domain does not come back under this handle
        if on_end is not None:
            try:
                on_end()
            except Exception as exc:  # never fails the operation that ended the domain
                log.get().warning("on_end_failed", name=self.name, detail=str(exc))

    def __repr__(self) -> str:
        return f"LibvirtDomain({self.name!r}, uri={self._connection.uri!r})"

    # ---------------------------------------------------------------- lookup
    def _lookup(self) -> libvirt.virDomain | None:
        """The current handle, None when libvirt does not know the name."""
        try:
            return self._connection.call(lambda conn: conn.lookupByName(self.name), retry=True)
        except libvirt.libvirtError as exc:
            if is_no_domain(exc):
                return None
            raise hypervisor_error(exc, f"lookup of {self.name}") from exc

    def _require(self, action: str) -> libvirt.virDomain:
        dom = self._lookup()
        if dom is None:
            raise HypervisorError(f"{action}: no domain named {self.name}", libvirt.VIR_ERR_NO_DOMAIN)
        return dom

    def _raw_state(self) -> int | None:
        """libvirt's state number, None when the domain is gone."""
        dom = self._lookup()
        if dom is None:
            return None
        try:
            return readable(dom.state)[0]
        except libvirt.libvirtError as exc:
            if is_no_domain(exc):
                return None
            raise hypervisor_error(exc, f"state of {self.name}") from exc

    # ------------------------------------------------------------ operations
    def info(self) -> DomainInfo:
        try:
            state, max_kib, mem_kib, vcpus, cpu_ns = self._connection.call(
                lambda conn: conn.lookupByName(self.name).info(), retry=True
            )
        except libvirt.libvirtError as exc:
            if is_no_domain(exc):
                self._ended()  # a transient domain that powered off is gone
                return DomainInfo(DomainState.GONE)
            raise hypervisor_error(exc, f"info of {self.name}") from exc
        return DomainInfo(
            state=map_state(state),
            cpu_time_ns=int(cpu_ns),
            memory_kib=int(mem_kib),
            max_memory_kib=int(max_kib),
            vcpus=int(vcpus) or 1,
        )

    def pause(self) -> None:
        dom = self._require("pause")
        try:
            readable(dom.suspend)
        except libvirt.libvirtError as exc:
            # Drivers disagree on the error for "already paused" (the test
            # driver says internal error), so look at the state instead.
            if self._raw_state() == libvirt.VIR_DOMAIN_PAUSED:
                return
            raise hypervisor_error(exc, f"pause of {self.name}") from exc

    def unpause(self) -> None:
        dom = self._require("unpause")
        try:
            readable(dom.resume)
        except libvirt.libvirtError as exc:
            if self._raw_state() in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED):
                return  # already running
            raise hypervisor_error(exc, f"unpause of {self.name}") from exc

    def describe(self) -> str:
        """The live domain XML (with the MAC libvirt chose, if the job gave none)."""
        try:
            return readable(lambda: self._require("describe").XMLDesc(0))
        except libvirt.libvirtError as exc:
            raise hypervisor_error(exc, f"XML of {self.name}") from exc

    def save(self, working_dir: Path, suffix: str) -> SavedState:
        """Write the memory state to ``xen.mem.ckpt<suffix>`` (zstd-compressed
        as libvirt writes it, see :mod:`save_image`); the transient domain
        ends. The record holds the domain XML and the disks as libvirt had them.

        The image is marked to come back running even when the domain was
        paused, so a restore always resumes the guest.
        """
        from vmgahp.drivers.libvirt import firmware, save_image, state
        from vmgahp.drivers.libvirt.xml_edit import file_disks

        description = self.describe()
        disks, files = state.record_disks(file_disks(description), str(working_dir))
        nvram = firmware.nvram_in(description, str(working_dir))
        if nvram:  # a UEFI guest's variables: shipped with the memory state
            files.append(nvram)
        target = working_dir / (state.MEMORY + suffix)
        dom = self._require("save")

        def run_save(path: str) -> None:
            try:
                readable(lambda: dom.saveFlags(path, None, libvirt.VIR_DOMAIN_SAVE_RUNNING))
            except libvirt.libvirtError as exc:
                if not is_flag_refused(exc):
                    raise
                readable(lambda: dom.save(path))  # the test driver refuses the flag

        started = time.monotonic()
        compressed = False
        try:
            if self._zstd is None:
                run_save(str(target))
            else:
                compressed = save_image.save(run_save, target, self._zstd)
        except libvirt.libvirtError as exc:
            target.unlink(missing_ok=True)
            raise hypervisor_error(exc, f"save of {self.name} to {target}") from exc
        log.get().info("domain_saved", name=self.name, path=str(target), compressed=compressed,
                       bytes=target.stat().st_size, seconds=round(time.monotonic() - started, 3))
        self._ended()
        return SavedState((state.MEMORY,), tuple(files), {"domain_xml": description, "disks": disks})

    def shutdown(self, grace_seconds: float) -> None:
        """ACPI power-off request, pressed again every PRESS_REPEAT_SECONDS;
        destroy the domain if it outlives the grace."""
        state = self._raw_state()
        if state is None or state in _ENDED:
            self._ended()
            return
        dom = self._require("shutdown")
        if state == libvirt.VIR_DOMAIN_PAUSED:
            # A paused guest cannot see the ACPI button.
            try:
                readable(dom.resume)
            except libvirt.libvirtError as exc:
                log.get().warning("shutdown_resume_failed", name=self.name, detail=str(exc))
        try:
            readable(dom.shutdown)
        except libvirt.libvirtError as exc:
            if is_no_domain(exc):
                self._ended()
                return
            log.get().warning("shutdown_request_failed", name=self.name, detail=str(exc))
            self.destroy()
            return
        began = time.monotonic()
        deadline = began + max(0.0, grace_seconds)
        presses = 1
        next_press = began + PRESS_REPEAT_SECONDS
        while True:
            state = self._raw_state()
            if state is None or state in _ENDED:
                log.get().info("domain_powered_off", name=self.name, presses=presses,
                               seconds=round(time.monotonic() - began, 1))
                self._ended()
                return
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                break
            if now >= next_press:
                next_press = now + PRESS_REPEAT_SECONDS
                presses += 1
                self._press_again()
            time.sleep(min(POLL_SECONDS, remaining))
        log.get().info("shutdown_grace_expired", name=self.name, grace_seconds=grace_seconds, presses=presses)
        self.destroy()

    def _press_again(self) -> None:
        dom = self._lookup()
        if dom is None:
            return
        try:
            readable(dom.shutdown)
        except libvirt.libvirtError as exc:
            # Usually it powered off meanwhile; the next poll sees that.
            log.get().debug("shutdown_repeat_failed", name=self.name, detail=str(exc))

    def destroy(self) -> None:
        dom = self._lookup()
        if dom is None:
            self._ended()
            return
        try:
            readable(dom.destroy)
        except libvirt.libvirtError as exc:
            # Gone meanwhile, or a persistent domain that is already off.
            if is_no_domain(exc) or is_not_running(exc):
                self._ended()
                return
            raise hypervisor_error(exc, f"destroy of {self.name}") from exc
        log.get().info("domain_destroyed", name=self.name)
        self._ended()
