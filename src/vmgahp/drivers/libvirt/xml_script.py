"""LIBVIRT_XML_SCRIPT: let an admin's program write the domain XML (spec 4.9).

The program gets ``[LIBVIRT_XML_SCRIPT] + LIBVIRT_XML_SCRIPT_ARGS`` as argv
(the arguments in HTCondor's V1-raw-or-V2-quoted syntax, :func:`script_argv`)
and, on stdin, the job ad as sorted ``Name = value`` lines followed by the
attributes the C++ gahp appends (Xen bootloader and initrd, bridge interface,
networking type) and one blank line. Exit status 0 and a well-formed
``<domain>`` on stdout is success; anything else (no such file, not
executable, non-zero exit, timeout, garbage) is logged and the caller falls
back to the built-in XML, as the C++ gahp does.

Unlike the C++ (which glues the output lines together without newlines), the
output is kept as printed: an attribute list split over two lines would
otherwise become ill-formed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vmgahp import log
from vmgahp.drivers.libvirt.xml_edit import DomainXmlParseError, parse_domain

if TYPE_CHECKING:  # pydantic loads with the first START, not with the driver
    from vmgahp.drivers.libvirt.settings import LibvirtSettings
    from vmgahp.job.model import VmJob

DEFAULT_TIMEOUT = 30.0
_STDERR_LOG_LIMIT = 4000


@dataclass(frozen=True, slots=True)
class ScriptOutcome:
    xml: str | None  # None: fall back to the built-in XML
    reason: str = ""  # why it failed, for the log


def _quoted(value: str) -> str:
    # An old-syntax ClassAd string literal.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def disk_list(job: VmJob) -> str:
    """``VMPARAM_vm_Disk`` naming the files the VM really opens - overlays of
    snapshot disks, vmgahp's CD-ROM image - in the form the stock script
    parses (``file:device:perm:format``; a name containing ``iso`` is a CD-ROM)."""
    return ",".join(
        f"{disk.path}:{disk.device}:{'w' if disk.writable and not disk.is_cdrom else 'r'}"
        + (f":{disk.format}" if disk.format else "")
        for disk in job.disks
    )


def _with_disks(ad_text: str, job: VmJob) -> str:
    """The ad lines with VMPARAM_vm_Disk replaced (or added, in name order)."""
    wanted = f"VMPARAM_vm_Disk = {_quoted(disk_list(job))}"
    lines = ad_text.splitlines()
    names = [line.split(" ", 1)[0].lower() for line in lines]
    if "vmparam_vm_disk" in names:
        lines[names.index("vmparam_vm_disk")] = wanted
    else:
        at = next((i for i, name in enumerate(names) if name > "vmparam_vm_disk"), len(lines))
        lines.insert(at, wanted)
    return "\n".join(lines) + "\n"


def script_input(job: VmJob, settings: LibvirtSettings, bridge_interface: str = "") -> str:
    """What the script reads on stdin (the C++ order and conditions), except
    that the disk list names the disks as prepared (see :func:`disk_list`):
    a script that built the disks from the job's own list would bypass the
    snapshot overlays and the CD-ROM image."""
    text = _with_disks(job.ad_text, job) if job.disks else job.ad_text
    if text and not text.endswith("\n"):
        text += "\n"
    xen = job.extras
    bootloader = (xen.bootloader if xen else "") or settings.xen_bootloader
    text += f"VMPARAM_Xen_Bootloader = {_quoted(bootloader)}\n"
    # The C++ tests for the attribute name anywhere in the text, not per line.
    if "VMPARAM_Xen_Initrd" not in text:
        text += f"VMPARAM_Xen_Initrd = {_quoted(xen.initrd if xen else '')}\n"
    if bridge_interface:
        text += f"VMPARAM_Bridge_Interface = {_quoted(bridge_interface)}\n"
    if "JobVMNetworkingType" not in text:
        text += f"JobVMNetworkingType = {_quoted(job.networking_type)}\n"
    return text + "\n"


def script_argv(settings: LibvirtSettings) -> list[str]:
    """``[LIBVIRT_XML_SCRIPT] + LIBVIRT_XML_SCRIPT_ARGS`` in HTCondor's argument
    syntax (V1 raw, or V2 when double-quoted). Read here, at START, so a bad
    value never stops the gahp: it is logged, and the words before the error
    are kept, as ``AppendArgsV1RawOrV2Quoted`` leaves them."""
    from vmgahp.condor_syntax import ArgsError, split_args_v1_raw_or_v2_quoted

    argv = [settings.xml_script]
    if settings.xml_script_args:
        try:
            argv += split_args_v1_raw_or_v2_quoted(settings.xml_script_args)
        except ArgsError as exc:
            log.get().warning("xml_script_args_invalid", value=settings.xml_script_args[:200], detail=str(exc))
            argv += exc.partial
    return argv


def run_xml_script(job: VmJob, settings: LibvirtSettings, bridge_interface: str = "",
                   timeout: float = DEFAULT_TIMEOUT) -> ScriptOutcome:
    """Run the configured script; the XML it printed, or why not."""
    script = settings.xml_script
    argv = script_argv(settings)
    if not os.path.isfile(script):
        return _failed(script, f"{script} does not exist or is not a file")
    cwd = job.working_dir if job.working_dir and os.path.isdir(job.working_dir) else None
    started = time.monotonic()
    try:
        # Own session: on timeout the whole process group is killed, so a
        # helper the script spawned cannot keep our pipes open.
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        return _failed(script, f"cannot run {script}: {exc.strerror or exc}")
    try:
        out, err = proc.communicate(script_input(job, settings, bridge_interface).encode("utf-8"), timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return _failed(script, f"{script} did not finish within {timeout:g} s; killed")
    elapsed = time.monotonic() - started
    stderr = err.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        return _failed(script, f"{script} exited with status {proc.returncode}", stderr)
    xml = out.decode("utf-8", "replace").strip()
    if not xml:
        return _failed(script, f"{script} printed nothing", stderr)
    try:
        parse_domain(xml)
    except DomainXmlParseError as exc:
        return _failed(script, f"{script} printed no usable domain XML: {exc}", stderr)
    log.get().info("xml_script_ok", script=script, seconds=round(elapsed, 3), stderr=stderr[:_STDERR_LOG_LIMIT] or None)
    return ScriptOutcome(xml)


def _failed(script: str, reason: str, stderr: str = "") -> ScriptOutcome:
    log.get().warning(
        "xml_script_failed",
        script=script,
        detail=reason,
        stderr=stderr[:_STDERR_LOG_LIMIT] or None,
        fallback="built-in domain XML",
    )
    return ScriptOutcome(None, reason)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group we created for it
    except ProcessLookupError:
        pass
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        # Something outside the group still holds the pipes: stop waiting.
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        proc.wait(timeout=5)
