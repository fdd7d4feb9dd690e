"""The VMGAHP_ERR_* tokens as one table: the wire text, what the starter does
with it, and what it means to a person.

The tokens are a contract: condor_starter holds or requeues a job by matching
them literally (spec 3.13 and 6.3), so they are kept byte for byte. A START
failure with one of the 13 "user" tokens puts the job on hold with
HoldReasonCode 6 (FailedToCreateProcess) and the token's index in that list as
subcode (``vm_proc.cpp``); any other START failure requeues the job and marks
the machine ``HasVM = false``. The table drives the daemon, ``vmgahp run``'s
explanations and the documentation (``docs/admin.md`` is checked against it).
"""

from __future__ import annotations

from collections import namedtuple


class Token(namedtuple("Token", "wire hint hold_subcode", defaults=(None,))):
    """``hold_subcode`` None: the starter requeues the job. (collections, not
    typing: the errors module imports this on the way to the banner.)"""

    __slots__ = ()

    @property
    def holds(self) -> bool:
        return self.hold_subcode is not None


_P = "VMGAHP_ERR_"

VM_NOT_FOUND = _P + "VM_NOT_FOUND"
INTERNAL = _P + "INTERNAL"
VM_INVALID_OPERATION = _P + "VM_INVALID_OPERATION"
CRITICAL = _P + "CRITICAL"
NO_JOBCLASSAD_INFO = _P + "NO_JOBCLASSAD_INFO"
NO_SUPPORTED_VM_TYPE = _P + "NO_SUPPORTED_VM_TYPE"
BAD_IMAGE = _P + "BAD_IMAGE"
VM_CANNOT_CREATE_CKPT_FILES = _P + "VM_CANNOT_CREATE_CKPT_FILES"
VM_NO_SUPPORT_CHECKPOINT = _P + "VM_NO_SUPPORT_CHECKPOINT"
VM_INVALID_SUSPEND_FILE = _P + "VM_INVALID_SUSPEND_FILE"
VM_NO_SUPPORT_SUSPEND = _P + "VM_NO_SUPPORT_SUSPEND"
CANNOT_CREATE_ISO_FILE = _P + "CANNOT_CREATE_ISO_FILE"
CANNOT_READ_CDROM_FILE = _P + "CANNOT_READ_CDROM_FILE"
VM_NOT_ENOUGH_MEMORY = _P + "VM_NOT_ENOUGH_MEMORY"
JOBCLASSAD_NO_VM_MEMORY_PARAM = _P + "JOBCLASSAD_NO_VM_MEMORY_PARAM"
JOBCLASSAD_TOO_MUCH_MEMORY_REQUEST = _P + "JOBCLASSAD_TOO_MUCH_MEMORY_REQUEST"
JOBCLASSAD_MISMATCHED_NETWORKING = _P + "JOBCLASSAD_MISMATCHED_NETWORKING"
JOBCLASSAD_MISMATCHED_NETWORKING_TYPE = _P + "JOBCLASSAD_MISMATCHED_NETWORKING_TYPE"
JOBCLASSAD_MISMATCHED_HARDWARE_VT = _P + "JOBCLASSAD_MISMATCHED_HARDWARE_VT"
XEN_NO_KERNEL_PARAM = _P + "JOBCLASSAD_XEN_NO_KERNEL_PARAM"
XEN_NO_ROOT_DEVICE_PARAM = _P + "JOBCLASSAD_XEN_NO_ROOT_DEVICE_PARAM"
XEN_NO_DISK_PARAM = _P + "JOBCLASSAD_XEN_NO_DISK_PARAM"
XEN_INVALID_DISK_PARAM = _P + "JOBCLASSAD_XEN_INVALID_DISK_PARAM"
XEN_KERNEL_NOT_FOUND = _P + "JOBCLASSAD_XEN_KERNEL_NOT_FOUND"
XEN_INITRD_NOT_FOUND = _P + "JOBCLASSAD_XEN_INITRD_NOT_FOUND"
XEN_MISMATCHED_CHECKPOINT = _P + "JOBCLASSAD_XEN_MISMATCHED_CHECKPOINT"
KVM_NO_DISK_PARAM = _P + "JOBCLASSAD_KVM_NO_DISK_PARAM"
KVM_INVALID_DISK_PARAM = _P + "JOBCLASSAD_KVM_INVALID_DISK_PARAM"
KVM_MISMATCHED_CHECKPOINT = _P + "JOBCLASSAD_KVM_MISMATCHED_CHECKPOINT"
# The old VMware backend's (07a0e9ebb4^:src/condor_vm-gahp/vmgahp_error_codes.h).
NO_VMWARE_VMX_PARAM = _P + "JOBCLASSAD_NO_VMWARE_VMX_PARAM"
VMWARE_VMX_NOT_FOUND = _P + "VMWARE_VMX_NOT_FOUND"
VMWARE_VMX_ERROR = _P + "VMWARE_VMX_ERROR"

_DISK = "a vm_disk file is missing, not readable/writable by the job user, or malformed"
_CKPT = "vm_checkpoint with transferred disks needs +VMPARAM_vm_Snapshot_Disk = true"

# The starter's "user error" list, in its order: the index is the hold subcode.
_HOLDS = (
    (JOBCLASSAD_NO_VM_MEMORY_PARAM, "the ad has no JobVMMemory"),
    (XEN_NO_KERNEL_PARAM, "the job has no xen_kernel"),
    (JOBCLASSAD_MISMATCHED_HARDWARE_VT, "the job needs hardware virtualization (VM_HARDWARE_VT is off)"),
    (XEN_KERNEL_NOT_FOUND, "the xen_kernel file cannot be read (as written, on this machine)"),
    (XEN_INITRD_NOT_FOUND, "the xen_initrd file cannot be read (as written, on this machine)"),
    (XEN_NO_ROOT_DEVICE_PARAM, "a xen_kernel file needs xen_root"),
    (XEN_NO_DISK_PARAM, "the job has no vm_disk"),
    (XEN_INVALID_DISK_PARAM, _DISK),
    (XEN_MISMATCHED_CHECKPOINT, _CKPT),
    (KVM_NO_DISK_PARAM, "the job has no vm_disk"),
    (KVM_INVALID_DISK_PARAM, _DISK),
    (KVM_MISMATCHED_CHECKPOINT, _CKPT),
    (BAD_IMAGE, "a disk image is not what the job says, or its checkpoint is damaged"),
)
_REQUEUES = (
    (VM_NOT_FOUND, "no VM with that id"),
    (INTERNAL, "the hypervisor failed or timed out (see the gahp log)"),
    (VM_INVALID_OPERATION, "the VM is in the wrong state for that command"),
    (CRITICAL, "the gahp could not build the VM (name or domain description)"),
    (NO_JOBCLASSAD_INFO, "the gahp got no usable job ad"),
    (NO_SUPPORTED_VM_TYPE, "the job's vm_type is not the type this gahp runs"),
    (VM_CANNOT_CREATE_CKPT_FILES, "the checkpoint could not be written (the previous one is kept)"),
    (VM_NO_SUPPORT_CHECKPOINT, "the job did not ask for vm_checkpoint, or this VM cannot be saved"),
    (VM_INVALID_SUSPEND_FILE, "the suspended VM's saved state cannot be read"),
    (VM_NO_SUPPORT_SUSPEND, "this VM cannot be saved (e.g. Xen HVM without XEN_ALLOW_HARDWARE_VT_SUSPEND)"),
    (CANNOT_CREATE_ISO_FILE, "the CD-ROM image could not be built"),
    (CANNOT_READ_CDROM_FILE, "a CD-ROM file cannot be read by the job user"),
    (VM_NOT_ENOUGH_MEMORY, "not enough memory for the VM"),
    (JOBCLASSAD_TOO_MUCH_MEMORY_REQUEST, "vm_memory is more than the machine's VM_MEMORY allows"),
    (JOBCLASSAD_MISMATCHED_NETWORKING, "the job wants vm_networking but VM_NETWORKING is off here"),
    (JOBCLASSAD_MISMATCHED_NETWORKING_TYPE, "vm_networking_type is not one this machine offers"),
    (NO_VMWARE_VMX_PARAM, "a VMware job needs VMPARAM_VMware_VMX_File"),
    (VMWARE_VMX_NOT_FOUND, "the VMX file cannot be read in the working directory"),
    (VMWARE_VMX_ERROR, "a disk the VMX names cannot be read"),
)

TABLE: tuple[Token, ...] = tuple(
    [Token(wire, hint, index) for index, (wire, hint) in enumerate(_HOLDS)]
    + [Token(wire, hint) for wire, hint in _REQUEUES]
)
BY_WIRE: dict[str, Token] = {token.wire: token for token in TABLE}
HOLD_TOKENS: tuple[str, ...] = tuple(wire for wire, _ in _HOLDS)


def lookup(wire: str) -> Token:
    """The token's entry; an unknown text is treated as the starter does: a requeue."""
    return BY_WIRE.get(wire, Token(wire, ""))
