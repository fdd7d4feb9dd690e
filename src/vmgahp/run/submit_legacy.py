"""Commands vmgahp knows and HTCondor 25's ``condor_submit`` does not, and their pool forms.

``condor_submit`` 25 leaves these commands unread - it reports them "unused"
and submits the job without them (``submit_utils.cpp:9942-9975`` at
7491a145f6) - so a job that relies on them gets, on a pool, no CD-ROM, no
snapshot disk (and is held with ``KVM_MISMATCHED_CHECKPOINT``), and so on.
``vmgahp run`` still honours each one, and prints a loud :class:`PoolHint`
with the exact ``+Attribute = value`` lines (and the ``transfer_input_files``
line) that do the same on a pool. Each command is turned into those very
``+`` attributes, applied where condor_submit applies ``+`` lines
(``SetForcedAttributes``, after every command: 8533-8535), so pasting the hint
instead of the command gives the same job ad.

Where the old meanings come from:

* ``6d32fec944^:src/condor_submit.V6/submit.cpp`` (2011, before HTCondor
  dropped them): ``vm_cdrom_files`` and ``vm_should_transfer_cdrom_files``
  (7466-7557: transferred files by base name, else full paths on a shared
  filesystem; one ``.iso`` or any number of plain files),
  ``kvm_cdrom_device``/``xen_cdrom_device`` (7757-7794: a device name, no
  ``:``), ``xen_transfer_files`` (7564-7611: base names, the files added to
  the transfer list; ``kvm_transfer_files`` the same for KVM, 7574),
  ``xen_disk`` and ``kvm_disk`` (7703-7741, the old spellings of the disk list);
* ``d763aad063^:src/condor_utils/submit_utils.cpp`` (the last VMware support):
  ``vmware_should_transfer_files`` (7120-7140), ``vmware_snapshot_disk``
  (7152-7165), ``vmware_dir`` (7167-7197, 7244-7280), both required for
  ``vm_type = vmware`` as they were then (HTCondor 25's condor_submit refuses
  vmware outright, 7027-7030: ``vmgahp run`` says so in a warning);
* vmgahp's own: ``vm_snapshot_disk`` (``VMPARAM_vm_Snapshot_Disk``, qcow2
  overlays) and ``vm_hardware_vt`` (``JobVMHardwareVT``, which condor_submit
  sets itself only for ``xen_kernel = vmx``, submit_utils.cpp:6958-6963).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from vmgahp.run.submit_known import DISK_VM_TYPES, VM_TYPES, parse_bool, quote, split_list

if TYPE_CHECKING:
    from vmgahp.run.submit import Context

OLD_SUBMIT = "6d32fec944^:src/condor_submit.V6/submit.cpp"
OLD_VMWARE = "d763aad063^:src/condor_utils/submit_utils.cpp"


@dataclass
class Effect:
    """What one command does: attributes (name, ClassAd text), files it transfers (as written)."""

    attrs: list[tuple[str, str]] = field(default_factory=list)
    transfers: list[str] = field(default_factory=list)


Converter = Callable[["Context", "Legacy", str, str], Effect]


@dataclass(frozen=True)
class Legacy:
    command: str
    attrs: tuple[str, ...]  # the attributes it makes
    convert: Converter
    source: str
    vm_types: tuple[str, ...] = VM_TYPES


@dataclass(frozen=True)
class PoolHint:
    """A loud warning: what a pool does differently, and the lines that fix it."""

    path: str
    line: int
    command: str
    reason: str
    lines: tuple[str, ...] = ()

    def __str__(self) -> str:
        return "\n".join([f"WARNING: {self.path}:{self.line}: {self.reason}", *(f"    {text}" for text in self.lines)])


def _bool_attr(ctx: Context, entry: Legacy, key: str, value: str) -> Effect:
    result = parse_bool(value)
    if result is None:
        raise ctx.description.error(key, f"{key} = {value} is invalid, must eval to a boolean")
    return Effect([(entry.attrs[0], "true" if result else "false")])


def _items(value: str) -> list[str]:
    # the old code removed quotes from each item (delete_quotation_marks) and skipped empty ones
    return [item.strip().strip("\"'").strip() for item in split_list(value) if item.strip().strip("\"'").strip()]


def _cdrom_files(ctx: Context, entry: Legacy, key: str, value: str) -> Effect:
    d = ctx.description
    files = _items(value)
    if any(name.lower().endswith(".iso") for name in files) and len(files) > 1:  # 7543-7550
        raise d.error(key, f"{key}: give either one .iso file or any number of plain files,"
                           " not an .iso with other files")
    should = d.get("vm_should_transfer_cdrom_files")
    transfer = None if should is None else parse_bool(should)
    if should is not None and transfer is None:
        raise d.error("vm_should_transfer_cdrom_files",
                      f"vm_should_transfer_cdrom_files = {should} is invalid, must eval to a boolean")
    effect, listed = Effect(), []
    for name in files:
        if transfer is False:  # read on the execute side, from a shared filesystem (7522-7524, 7539)
            listed.append(os.path.normpath(os.path.join(ctx.iwd, name)))
        elif transfer or not os.path.isabs(name):  # sent with the job, named by base name (7526-7537)
            effect.transfers += ctx.transfer(name, key, absolute=True)
            listed.append(os.path.basename(name.rstrip("/")))
        else:  # vmgahp's default without vm_should_transfer_cdrom_files: an absolute path stays
            listed.append(name)
    effect.attrs.append((entry.attrs[0], quote(",".join(listed), d, key)))
    return effect


def _should_transfer_cdrom(ctx: Context, entry: Legacy, key: str, value: str) -> Effect:
    if parse_bool(value) is None:
        raise ctx.description.error(key, f"{key} = {value} is invalid, must eval to a boolean")
    return Effect()  # it changes how vm_cdrom_files is converted


def _device(ctx: Context, entry: Legacy, key: str, value: str) -> Effect:
    if ":" in value:  # 7783-7789
        raise ctx.description.error(key, f"{key} should be just a device name, e.g. '{key} = hdc'")
    return Effect([(entry.attrs[0], quote(value.strip(), ctx.description, key))])


def _transfer_files(ctx: Context, entry: Legacy, key: str, value: str) -> Effect:
    effect, names = Effect(), []
    for name in _items(value):
        effect.transfers += ctx.transfer(name, key, absolute=True)
        names.append(os.path.basename(name.rstrip("/")))
    effect.attrs.append((entry.attrs[0], quote(",".join(names), ctx.description, key)))
    return effect


def _vmware_snapshot(ctx: Context, entry: Legacy, key: str, value: str) -> Effect:
    effect = _bool_attr(ctx, entry, key, value)
    transfer = parse_bool(ctx.description.get("vmware_should_transfer_files") or "")
    if effect.attrs[0][1] == "false" and transfer is False:  # 7154-7163
        raise ctx.description.error(
            key, "you should not use both vmware_should_transfer_files = false and vmware_snapshot_disk = false")
    return effect


def _vmware_dir(ctx: Context, entry: Legacy, key: str, value: str) -> Effect:
    """The directory's .vmx (and, when transferring, everything else) travels (7175-7196);
    the .vmx and .vmdk base names are listed (7252-7280)."""
    d = ctx.description
    directory = Path(os.path.normpath(os.path.join(ctx.iwd, value)))
    if not directory.is_dir():
        raise d.error(key, f"{key} = {value}: {directory} is not a directory")
    everything = bool(parse_bool(d.get("vmware_should_transfer_files") or "false"))
    effect = Effect([(entry.attrs[0], quote(str(directory), d, key))])
    vmx: list[str] = []
    vmdk: list[str] = []
    for path in sorted(directory.iterdir()):
        if everything or path.name.endswith(".vmx"):
            effect.transfers += ctx.transfer(str(path), key, absolute=True)
            (vmx if path.name.endswith(".vmx") else vmdk if path.name.endswith(".vmdk") else []).append(path.name)
    if len(vmx) != 1:
        raise d.error(key, f"{key}: {directory} must hold exactly one .vmx file, not {len(vmx)}")
    effect.attrs.append((entry.attrs[1], quote(vmx[0])))
    if vmdk:
        effect.attrs.append((entry.attrs[2], quote(",".join(vmdk))))
    return effect


def _vmware_required(ctx: Context) -> None:
    """The old submit's checks: both commands, and a boolean transfer flag (7120-7140, 7167-7173)."""
    d = ctx.description
    transfer = d.get("vmware_should_transfer_files")
    if transfer is None:
        raise d.error(None, "vmware_should_transfer_files cannot be found; a VMware job needs it "
                            "('vmware_should_transfer_files = true' to send the VM's files,"
                            " 'false' on a shared filesystem)")
    if parse_bool(transfer) is None:
        raise d.error("vmware_should_transfer_files", "vmware_should_transfer_files must be true or false")
    if d.get("vmware_dir") is None:
        raise d.error(None, "vmware_dir cannot be found; a VMware job needs it, e.g. 'vmware_dir = vm' "
                            "(the directory with the .vmx and .vmdk files)")
    ctx.warnings.append(d.warning(d.lookup("vm_type", "jobvmtype")[0] or "vm_type",
                                  "condor_submit (HTCondor 25) refuses vm_type = vmware (submit_utils.cpp:7027-7030); "
                                  "on a pool the job needs a condor_submit that still knows it, or a job ad "
                                  "written with the VMPARAM_VMware_* attributes below"))


LEGACY: tuple[Legacy, ...] = (
    Legacy("vm_cdrom_files", ("VMPARAM_CDROM_Files",), _cdrom_files, f"{OLD_SUBMIT}:7466-7557"),
    Legacy("vm_should_transfer_cdrom_files", (), _should_transfer_cdrom, f"{OLD_SUBMIT}:7472-7501"),
    Legacy("kvm_cdrom_device", ("VMPARAM_Kvm_CDROM_Device",), _device, f"{OLD_SUBMIT}:7757-7794", ("kvm",)),
    Legacy("xen_cdrom_device", ("VMPARAM_Xen_CDROM_Device",), _device, f"{OLD_SUBMIT}:7757-7794", ("xen",)),
    Legacy("xen_transfer_files", ("VMPARAM_Xen_Transfer_Files",), _transfer_files, f"{OLD_SUBMIT}:7564-7611",
           ("xen",)),
    Legacy("kvm_transfer_files", ("VMPARAM_Kvm_Transfer_Files",), _transfer_files, f"{OLD_SUBMIT}:7564-7611",
           ("kvm",)),
    Legacy("vm_snapshot_disk", ("VMPARAM_vm_Snapshot_Disk",), _bool_attr, "vmgahp: qcow2 overlays", DISK_VM_TYPES),
    Legacy("vm_hardware_vt", ("JobVMHardwareVT",), _bool_attr, "vmgahp; submit_utils.cpp:6958-6963 for vmx"),
    Legacy("vmware_should_transfer_files", ("VMPARAM_VMware_Transfer",), _bool_attr, f"{OLD_VMWARE}:7120-7140",
           ("vmware",)),
    Legacy("vmware_snapshot_disk", ("VMPARAM_VMware_SnapshotDisk",), _vmware_snapshot, f"{OLD_VMWARE}:7152-7165",
           ("vmware",)),
    Legacy("vmware_dir", ("VMPARAM_VMware_Dir", "VMPARAM_VMware_VMX_File", "VMPARAM_VMware_VMDK_Files"),
           _vmware_dir, f"{OLD_VMWARE}:7167-7197,7244-7280", ("vmware",)),
)
# xen_disk and kvm_disk are the disk list's old spellings (7703-7741): each stands in for
# vm_disk for its own VM type (submit.py), and its pool form is vm_disk itself -
# condor_submit fails without one (7019-7024).
OLD_DISKS = {"xen": "xen_disk", "kvm": "kvm_disk"}


def ignores(command: str) -> str:
    return f"condor_submit (HTCondor 25) ignores '{command}'; on a pool write instead:"


def apply(ctx: Context) -> tuple[list[tuple[str, str, str, int]], list[tuple[str, int, Effect | None]]]:
    """Convert the legacy commands the job uses.

    Returns the attributes to force (name, text, command, line) and, for the hints,
    (command, line, effect) in file order; the effect is None for a command that
    only changes another one's conversion."""
    d = ctx.description
    if ctx.vm_type == "vmware":
        _vmware_required(ctx)
    forced: list[tuple[str, str, str, int]] = []
    used: list[tuple[str, int, Effect | None]] = []
    effects: dict[str, Effect] = {}
    for entry in LEGACY:
        value = d.get(entry.command)
        if value is None:
            continue
        line = d.line_of(entry.command) or d.job_line
        if ctx.vm_type not in entry.vm_types:
            ctx.warnings.append(d.warning(entry.command, f"{entry.command} is ignored for vm_type = {ctx.vm_type}"))
            continue
        effect = entry.convert(ctx, entry, entry.command, value)
        effects[entry.command] = effect
        forced += [(name, text, entry.command, line) for name, text in effect.attrs]
        used.append((entry.command, line, effect if effect.attrs or effect.transfers else None))
    if "vm_should_transfer_cdrom_files" in effects:
        cdrom = effects.get("vm_cdrom_files")
        used = [(c, n, cdrom if c == "vm_should_transfer_cdrom_files" else e) for c, n, e in used]
        if cdrom is None:
            ctx.warnings.append(d.warning("vm_should_transfer_cdrom_files",
                                          "vm_should_transfer_cdrom_files has no effect without vm_cdrom_files"))
    if "VMPARAM_CDROM_Files" not in dict((name, 0) for name, *_ in forced):
        for key in ("kvm_cdrom_device", "xen_cdrom_device"):
            if key in effects:
                ctx.warnings.append(d.warning(key, f"{key} has no effect without vm_cdrom_files"))
    return forced, sorted(used, key=lambda item: item[1])


def hints(ctx: Context, used: list[tuple[str, int, Effect | None]], added: list[str]) -> list[PoolHint]:
    """One hint per legacy command, with its ``+`` lines and, if it transfers files, the
    job's transfer_input_files line (as written) with every file the legacy commands add."""
    d = ctx.description
    transfer = transfer_line(ctx, added) if added else None
    result = []
    for command, line, effect in used:
        lines = [] if effect is None else [f"+{name} = {text}" for name, text in effect.attrs]
        if effect is not None and effect.transfers and transfer:
            lines.append(transfer)
        result.append(PoolHint(str(d.path), line, command, ignores(command), tuple(lines)))
    return result


def transfer_line(ctx: Context, added: list[str]) -> str:
    """The job's transfer_input_files, as written, with ``added`` after it."""
    d = ctx.description
    key = "transfer_input_files" if "transfer_input_files" in d.raw else "transferinputfiles"
    written = (d.raw.get(key) or "").strip()
    return "transfer_input_files = " + ", ".join(([written] if written else []) + added)
