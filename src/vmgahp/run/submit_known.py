"""What HTCondor 25's ``condor_submit`` makes of a VM-universe job's commands.

Every rule here is HTCondor's, read from ``src/condor_utils/submit_utils.cpp``
at 7491a145f6 (the lines are cited with each rule) and rewritten, not copied:

* the commands it knows for the VM universe are the ``f_special_vm`` rows of
  its keyword table (5098-5112) - ``vm_type``, ``vm_checkpoint``,
  ``vm_networking``, ``vm_networking_type``, ``vm_vnc``, ``vm_memory``,
  ``vm_vcpus``, ``vm_macaddr``, ``vm_no_output_vm``, ``xen_kernel``,
  ``xen_initrd``, ``xen_root``, ``xen_kernel_params``, ``vm_disk`` - read by
  ``SetVMParams`` (6790-7033); ``executable`` is only a label (4388-4397,
  4529-4556), ``SetUniverse`` forces file transfer on (4757-4808), and
  ``SetRequestMem``/``SetRequestCpus`` (5420-5489, 5547-5578) fill the
  resource requests;
* any other command is left unread, and ``warn_unused`` (9942-9975) only
  prints ``the line 'x = y' was unused by condor_submit. Is it a typo?``: the
  job is submitted without it. :mod:`vmgahp.run.submit_legacy` handles the
  ones vmgahp still knows;
* a name's second spelling (``submit_param(name, alt_name)``, 1048-1111) is
  read only when the first is not set at all, and a value that expands to
  nothing counts as unset (1104-1107).

Nothing here transfers a file: since 7a3ace7abe (2016) ``vm_disk``,
``xen_kernel`` and ``xen_initrd`` name files as the execute machine sees them
(an absolute path, or a file ``transfer_input_files`` brings along).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from vmgahp.condor_syntax import condor_boolean

if TYPE_CHECKING:
    from vmgahp.run.submit import Context
    from vmgahp.run.submit_file import SubmitDescription

VM_UNIVERSE = 13  # CONDOR_UNIVERSE_VM (src/condor_includes/condor_universe.h)
VM_TYPES = ("kvm", "xen", "vmware")
DISK_VM_TYPES = ("kvm", "xen")  # vm_disk; a VMware job's disks come from vmware_dir
XEN_KERNEL_KEYWORDS = ("included", "vmx")  # XEN_KERNEL_INCLUDED, XEN_KERNEL_HW_VT
SOURCE = "src/condor_utils/submit_utils.cpp@7491a145f6"


# ------------------------------------------------------------------ values


def quote(text: str, description: SubmitDescription | None = None, key: str | None = None) -> str:
    """An old-syntax ClassAd string, as the starter prints it: only ``"`` is escaped."""
    if "\n" in text or "\r" in text:
        if description is not None:
            raise description.error(key, f"{key}: a value with a line break cannot be sent to the gahp")
        raise ValueError("a ClassAd string for the gahp cannot contain a line break")
    return '"' + text.replace('"', '\\"') + '"'


def parse_bool(value: str) -> bool | None:
    """``string_is_boolean_param`` on the value (``submit_param_bool``, 1166-1184)."""
    return condor_boolean(value.strip())


_SPACE = " \t\n\v\f\r"
_LONG_MAX = (1 << 63) - 1


def c_strtol(text: str) -> tuple[int, int]:
    """``strtol(text, &end, 10)``: the number (saturated) and how many characters it used (0: none)."""
    match = re.match(f"[{_SPACE}]*([+-]?[0-9]+)", text)
    if not match:
        return 0, 0
    number = max(-_LONG_MAX - 1, min(_LONG_MAX, int(match.group(1))))
    return number, match.end()


def parse_mib(value: str) -> int | None:
    """``parse_int64_bytes(value, 1024*1024)`` (``metric_units.cpp:60-136``): MiB
    without a unit, else K/M/G/T (an optional ``B``), up to three fraction digits,
    rounded up to whole MiB; None when it is not such a number."""
    base = 1 << 20
    text = value.lstrip(_SPACE)
    number, end = c_strtol(text)
    rest = text[end:]
    fraction = 0.0
    if rest.startswith("."):
        match = re.match(r"\.([0-9]*)", rest)
        assert match is not None  # rest starts with "."
        digits = match.group(1)
        fraction = sum(int(d) / 10 ** (i + 1) for i, d in enumerate(digits[:3]))
        rest = rest[1 + len(digits) :]
    if len(rest) == len(text):  # not even a digit or a '.'
        return None
    rest = rest.lstrip(_SPACE)
    if not rest:
        multiplier = base
    elif rest[0] in "kKmMgGtT":
        multiplier = 1 << (10 * ("kmgt".index(rest[0].lower()) + 1))
        rest = rest[1:]
        if rest[:1] in ("b", "B"):
            rest = rest[1:]
    else:
        return None
    if rest.strip(_SPACE):
        return None
    scaled = int((number + fraction) * multiplier + base - 1)  # C: (int64_t)(double)
    return abs(scaled) // base * (1 if scaled >= 0 else -1)  # C integer division truncates


def trim_quotes(text: str, quotes: str = "\"'") -> str:
    """``trim_quotes`` (``stl_string_utils.cpp:186-197``): one leading and one
    trailing quote character go, only from a value of 2 characters or more."""
    if len(text) < 2:
        return text
    if text[0] in quotes:
        text = text[1:]
    if text and text[-1] in quotes:
        text = text[:-1]
    return text


def split_list(value: str) -> list[str]:
    """HTCondor's comma lists (``split``/``StringTokenIterator``): items trimmed, empty ones skipped."""
    return [item.strip() for item in value.split(",") if item.strip()]


def strip_outer_quotes(value: str) -> str:
    """``trim_and_strip_quotes_in_place``: blanks, then one pair of surrounding double quotes."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value


# ------------------------------------------------------------- the commands

# Each converter turns the expanded value of one command into a ClassAd
# expression (or None to leave the attribute out), raising SubmitError.
Converter = Callable[["Context", "Command", str, str], "str | None"]


def _string(ctx: Context, cmd: Command, key: str, value: str) -> str:
    return quote(value, ctx.description, key)  # AssignJobString: the value as it is


def _vm_type(ctx: Context, cmd: Command, key: str, value: str) -> str:
    return quote(value.lower(), ctx.description, key)  # lower_case(VMType) (6810)


def _bool(ctx: Context, cmd: Command, key: str, value: str) -> str:
    result = parse_bool(value)
    if result is None:  # 1177-1179
        raise ctx.description.error(key, f"{key} = {value} is invalid, must eval to a boolean")
    return "true" if result else "false"


def _memory(ctx: Context, cmd: Command, key: str, value: str) -> str:
    mib = parse_mib(value)  # 6866-6874: the result is ignored, so a bad value is 0
    if mib is None or mib <= 0:
        raise ctx.description.error(
            key, f"{key} = {value} is incorrectly specified: give MiB (e.g. '{key} = 512') or a size such as 1G"
        )
    return str(mib)


def _vcpus(ctx: Context, cmd: Command, key: str, value: str) -> str:
    count, used = c_strtol(value)  # 6894-6896: strtol, then MAX(VMVCPUS, 1)
    if used == 0 and key == cmd.keys[0]:
        ctx.warnings.append(ctx.description.warning(
            key, f"{key} = {value} is not a number; condor_submit makes it JobVM_VCPUS = 1"))
    return str(max(count, 1))


def _kernel_params(ctx: Context, cmd: Command, key: str, value: str) -> str:
    return quote(trim_quotes(value), ctx.description, key)  # 6996-6998


def _disk(ctx: Context, cmd: Command, key: str, value: str) -> str:
    # validate_disk_param(vmdisk, 3, 4) (1011-1035): every non-empty comma item
    # has 3 or 4 colon-separated fields, and there is at least one item.
    items = split_list(value)
    if not items:
        raise ctx.description.error(key, f"{key} is empty")
    for item in items:
        fields = item.count(":") + 1
        if fields not in (3, 4):
            raise ctx.description.error(
                key,
                f"{key} item {item!r} has {fields} field{'s' if fields != 1 else ''}; each comma-separated item "
                "must be <file>:<device>:<permission>[:<format>], e.g. disk.img:vda:w or disk.qcow2:vda:w:qcow2",
            )
    return quote(value, ctx.description, key)  # VMPARAM_vm_Disk: the value unchanged (7018)


@dataclass(frozen=True)
class Command:
    """One submit command condor_submit knows, and the job attribute it makes."""

    keys: tuple[str, ...]  # the command, then the names read when it is not set at all
    attr: str
    convert: Converter
    source: str  # submit_utils.cpp lines
    vm_types: tuple[str, ...] = VM_TYPES
    default: str | None = None  # ClassAd text when unset (None: leave it out)
    required: bool = False


# In SetVMParams' order. vm_memory and vm_vcpus fall back to request_memory and
# request_cpus through the default macros VM_MEMORY = $(Request_Memory) and
# VM_VCPUS = $(Request_CPUs), themselves $(RequestMemory)/$(RequestCPUs)
# (337-348, 423-432); their own alternative names are never reached (the
# default always answers, config.cpp lookup_macro).
KNOWN: tuple[Command, ...] = (
    Command(("executable", "cmd"), "Cmd", _string, "4470-4556", required=True),  # a label
    Command(("vm_type", "jobvmtype"), "JobVMType", _vm_type, "6807-6813", required=True),
    Command(("vm_checkpoint", "jobvmcheckpoint"), "JobVMCheckpoint", _bool, "6824-6832", default="false"),
    Command(("vm_networking", "jobvmnetworking"), "JobVMNetworking", _bool, "6834-6842", default="false"),
    Command(("vm_networking_type", "jobvmnetworkingtype"), "JobVMNetworkingType", _string, "6845-6850"),
    Command(("vm_vnc", "jobvmvncconsole"), "JobVMVNCConsole", _bool, "6852-6860", default="false"),
    Command(("vm_memory", "request_memory", "requestmemory"), "JobVMMemory", _memory, "6862-6881",
            required=True),
    Command(("vm_vcpus", "request_cpus", "requestcpus"), "JobVM_VCPUS", _vcpus, "6892-6906", default="1"),
    Command(("vm_macaddr", "jobvm_macaddr"), "JobVM_MACADDR", _string, "6911-6914"),
    Command(("vm_no_output_vm",), "VMPARAM_No_Output_VM", _bool, "6926-6931"),
    Command(("xen_kernel", "vmparam_xen_kernel"), "VMPARAM_Xen_Kernel", _string, "6936-6947",
            vm_types=("xen",), required=True),
    Command(("xen_initrd",), "VMPARAM_Xen_Initrd", _string, "6971-6979", vm_types=("xen",)),
    Command(("xen_root",), "VMPARAM_Xen_Root", _string, "6981-6992", vm_types=("xen",)),
    Command(("xen_kernel_params", "vmparam_xen_kernel_params"), "VMPARAM_Xen_Kernel_Params", _kernel_params,
            "6995-6999", vm_types=("xen",)),
    Command(("vm_disk",), "VMPARAM_vm_Disk", _disk, "7003-7025", vm_types=DISK_VM_TYPES, required=True),
)

# VM universe has no standard streams (SetStdFile, 1617-1622).
NO_STD_FILES = ("input", "output", "error")


def check_vm_type(d: SubmitDescription) -> str:
    """The lower-cased vm_type; vmgahp run refuses what no machine would run."""
    key, value = d.lookup("vm_type", "jobvmtype")
    vm_type = (value or "").lower()
    if not vm_type:
        # condor_submit 25 no longer checks (SetVMParams 6806-6818), but no
        # machine matches a job without a JobVMType (SetRequirements 6034-6038).
        raise d.error(None, "vm_type cannot be found; set 'vm_type = kvm' (or xen) for a VM-universe job")
    if vm_type not in VM_TYPES:
        raise d.error(key, f"unknown vm_type {value!r}: vmgahp runs kvm, xen and vmware "
                           "(condor_submit accepts it, but no machine would ever run the job)")
    return vm_type


def cross_rules(ctx: Context) -> None:
    """The rules between commands, in the ad condor_submit makes."""
    d, ad = ctx.description, ctx.ad
    networking = ad.get("JobVMNetworking") == "true"
    if not networking and "JobVMNetworkingType" in ad:
        del ad["JobVMNetworkingType"]  # read only with networking (6845)
        ctx.warnings.append(d.warning("vm_networking_type", "vm_networking_type needs vm_networking = true; ignored"))
    if ad.get("JobVMCheckpoint") == "true" and networking:  # SetUniverse 4762-4791
        key, when = d.lookup("whentotransferoutput", "when_to_transfer_output")
        if (when or "").upper() != "ON_EXIT_OR_EVICT":
            raise d.error(
                "vm_networking",
                "you requested both vm_checkpoint and vm_networking; to use both you must also set "
                "'when_to_transfer_output = ON_EXIT_OR_EVICT'",
            )
    if ctx.vm_type == "xen":
        kernel = (d.lookup("xen_kernel", "vmparam_xen_kernel")[1] or "").lower()
        real_kernel = kernel not in XEN_KERNEL_KEYWORDS  # 6949-6968
        if kernel == "vmx":
            ad["JobVMHardwareVT"] = "true"  # 6963
        if d.get("xen_initrd") is not None and not real_kernel:  # 6973-6977
            raise d.error("xen_initrd", "to use xen_initrd, xen_kernel must be a real kernel file")
        if real_kernel and d.get("xen_root") is None:  # 6981-6988
            raise d.error("xen_kernel", "xen_root cannot be found; a kernel file needs one, e.g. xen_root = /dev/xvda1")
        if not real_kernel and "VMPARAM_Xen_Root" in ad:
            del ad["VMPARAM_Xen_Root"]  # read only for a kernel file (6981)
            ctx.warnings.append(d.warning("xen_root", f"xen_root is ignored with xen_kernel = {kernel}"))


def request_resources(ctx: Context, default_request_cpus: str) -> None:
    """``RequestMemory`` and ``RequestCpus`` (SetRequestMem 5420-5489, SetRequestCpus 5547-5578)."""
    d, ad = ctx.description, ctx.ad
    _, memory = d.lookup("request_memory", "requestmemory")
    if memory is None:
        ad["RequestMemory"] = "MY.JobVMMemory"  # 5431-5433
    elif memory.lower() != "undefined":  # 5480-5481
        mib = parse_mib(memory)
        ad["RequestMemory"] = str(mib) if mib is not None else _expression(ctx, "request_memory", memory)
    _, cpus = d.lookup("request_cpus", "requestcpus")
    if cpus is None:
        cpus = default_request_cpus  # JOB_DEFAULT_REQUESTCPUS (5560-5565), "1" by default
    if cpus.lower() != "undefined":  # 5569-5573
        ad["RequestCpus"] = _expression(ctx, "request_cpus", cpus)


def file_transfer(ctx: Context) -> None:
    """``SetUniverse`` forces file transfer for every VM job (4793-4794, 4806-4807), whatever
    should_transfer_files and when_to_transfer_output say; the forced macros win in
    SetTransferFiles (7368, 7423), which lists transfer_input_files (7248-7253, 7683-7687)."""
    ad = ctx.ad
    ad["ShouldTransferFiles"] = quote("YES")
    ad["WhenToTransferOutput"] = quote("ON_EXIT_OR_EVICT" if ad.get("JobVMCheckpoint") == "true" else "ON_EXIT")
    if ctx.transfer_list:
        ad["TransferInput"] = quote(",".join(ctx.transfer_list), ctx.description, "transfer_input_files")


def _expression(ctx: Context, key: str, value: str) -> str:
    import classad2

    try:
        classad2.ExprTree(value)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a submit error
        raise ctx.description.error(key, f"{key} = {value} is not a valid ClassAd expression") from exc
    return value


def untransferred_files(ctx: Context) -> list[tuple[str, str, str]]:
    """(command, file, token) for each relative file the job names that nothing transfers.

    On a pool the gahp finds such a file only in the job's directory, where only file
    transfer puts it: the START fails and the job is held (spec 4.3, 4.5)."""
    d, found = ctx.description, []
    transferred = {item.name for item in ctx.inputs}
    prefix = "XEN" if ctx.vm_type == "xen" else "KVM"
    named: list[tuple[str, str, str]] = []
    if "VMPARAM_vm_Disk" in ctx.ad:
        key = ctx.disk_command
        for item in split_list(d.get(key) or ""):
            named.append((key, item.split(":", 1)[0].strip(), f"VMGAHP_ERR_JOBCLASSAD_{prefix}_INVALID_DISK_PARAM"))
    if ctx.vm_type == "xen":
        kernel = d.lookup("xen_kernel", "vmparam_xen_kernel")[1] or ""
        if kernel.lower() not in XEN_KERNEL_KEYWORDS:
            named.append(("xen_kernel", kernel, "VMGAHP_ERR_JOBCLASSAD_XEN_KERNEL_NOT_FOUND"))
            if d.get("xen_initrd"):
                named.append(("xen_initrd", d.get("xen_initrd") or "", "VMGAHP_ERR_JOBCLASSAD_XEN_INITRD_NOT_FOUND"))
    for key, path, token in named:
        if path and not os.path.isabs(path) and os.path.basename(path.rstrip("/")) not in transferred:
            found.append((key, path, token))
    return found
