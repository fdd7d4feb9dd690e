"""Submit description -> the job ad condor_submit (HTCondor 25) would make for a VM-universe job.

1. :func:`load` (:mod:`.submit_file`) checks the file line by line and lets
   ``htcondor2.Submit`` expand the macros.
2. :func:`build` makes the job ad: the commands condor_submit knows, exactly
   as it reads them (:mod:`.submit_known`), then the commands only vmgahp
   knows (:mod:`.submit_legacy`) as the ``+`` attributes that do the same on a
   pool - each with a loud :class:`PoolHint` giving those lines - then the
   job's own ``+Name = expr`` lines, last, as ``SetForcedAttributes`` does
   (``submit_utils.cpp:8533-8535`` at 7491a145f6).

The files the starter transfers in are ``transfer_input_files`` and the
legacy commands' files, nothing else: a relative ``vm_disk`` or Xen kernel
file that neither brings along is not transferred on a pool either, so
vmgahp run says so (a :class:`PoolHint`) and lets the gahp fail as it would.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from vmgahp.run import submit_legacy as legacy
from vmgahp.run.submit_file import Custom, SubmitDescription, SubmitError, load, scan
from vmgahp.run.submit_known import (
    KNOWN,
    NO_STD_FILES,
    VM_TYPES,
    VM_UNIVERSE,
    XEN_KERNEL_KEYWORDS,
    Command,
    check_vm_type,
    cross_rules,
    file_transfer,
    parse_bool,
    parse_mib,
    quote,
    request_resources,
    split_list,
    strip_outer_quotes,
    untransferred_files,
)
from vmgahp.run.submit_legacy import LEGACY, PoolHint

__all__ = [
    "COMMANDS", "Command", "Context", "Custom", "Identity", "InputFile", "Job", "KNOWN", "LEGACY", "PoolHint",
    "SubmitDescription", "SubmitError", "VM_TYPES", "VM_UNIVERSE", "XEN_KERNEL_KEYWORDS", "build",
    "full_hostname", "load", "parse_bool", "parse_mib", "quote", "scan",
]  # fmt: skip

COMMANDS = KNOWN  # the commands condor_submit knows; LEGACY: the ones only vmgahp knows


@dataclass(frozen=True)
class InputFile:
    """A file the starter would transfer into the scratch directory."""

    source: Path  # on the submit side
    name: str  # its name in the scratch directory ("" for a directory's contents)
    command: str  # the submit command that named it
    line: int | None


@dataclass
class Job:
    """The job ad and what ``vmgahp run`` needs to know about the job."""

    ad: dict[str, str]  # attribute -> ClassAd expression text, in send order
    vm_type: str
    executable: str
    vm_name: str
    memory_mib: int
    vcpus: int
    checkpoint: bool
    snapshot_disk: bool
    no_output_vm: bool
    iwd: Path
    inputs: list[InputFile]
    warnings: list[str]
    hints: list[PoolHint] = field(default_factory=list)  # what a pool would do differently

    def ad_lines(self) -> list[str]:
        """``Name = expression`` lines, as the starter sends them."""
        return [f"{name} = {value}" for name, value in self.ad.items()]


@dataclass
class Context:
    description: SubmitDescription
    vm_type: str
    iwd: Path
    ad: dict[str, str] = field(default_factory=dict)
    inputs: list[InputFile] = field(default_factory=list)
    transfer_list: list[str] = field(default_factory=list)  # TransferInput, as written
    warnings: list[str] = field(default_factory=list)
    disk_command: str = "vm_disk"
    written: int = 0  # how many TransferInput entries transfer_input_files wrote

    def transfer(self, path: str, command: str, *, absolute: bool = False) -> list[str]:
        """Add a file to the transfer list (an absolute one only with ``absolute``);
        returns the entry added, if any."""
        if os.path.isabs(path) and not absolute:
            return []
        name = os.path.basename(path.rstrip("/"))
        source = Path(path) if os.path.isabs(path) else self.iwd / path
        for item in self.inputs:
            if item.name != name:
                continue
            if item.source == source or os.sep not in path.rstrip("/"):
                return []  # the same file, or a bare name for a file already transferred
            raise self.description.error(command, f"two input files are named {name!r}: {item.source} and {source}")
        self.inputs.append(InputFile(source, name, command, self.description.line_of(command)))
        self.transfer_list.append(path)
        return [path]


@dataclass(frozen=True)
class Identity:
    """Who the job runs as: ``Owner`` and ``User = "<login>@<uid domain>"``."""

    login: str
    domain: str

    @classmethod
    def for_login(cls, login: str) -> "Identity":
        return cls(login, full_hostname())


def full_hostname() -> str:
    """HTCondor's FULL_HOSTNAME, the default UID_DOMAIN."""
    name = socket.getfqdn()
    if not name or name == "localhost" or name.startswith("localhost."):
        name = socket.gethostname() or "localhost"
    return name


def build(
    description: SubmitDescription,
    identity: Identity,
    *,
    cluster_id: int = 1,
    proc_id: int = 0,
    default_request_cpus: str = "1",
) -> Job:
    """The job ad condor_submit would make. A restart's ad is the same: the
    starter sends no TransferIntermediate, the gahp finds the checkpoint in
    its working directory."""
    d = description
    universe = d.get("universe")
    if universe is None:
        raise d.error(None, "the job has no 'universe = vm' (vmgahp run only runs VM-universe jobs)")
    if universe.lower() != "vm":
        raise d.error("universe", f"universe = {universe}: vmgahp run only runs VM-universe jobs (universe = vm)")
    vm_type = check_vm_type(d)
    for key in NO_STD_FILES:
        value = d.get(key)
        if value is not None and value != "/dev/null":
            raise d.error(key, f"{key} = {value}: a VM-universe job has no {key} file (use the VM's disks or CD-ROM)")

    initialdir = d.get("initialdir") or d.get("initial_dir")
    iwd = Path(os.path.abspath((d.path.parent / initialdir) if initialdir else d.path.parent))
    if not iwd.is_dir():
        raise d.error("initialdir" if d.get("initialdir") else "initial_dir", f"initialdir {iwd} is not a directory")

    ctx = Context(d, vm_type, iwd, warnings=list(d.warnings))
    _transfer_input_files(ctx)
    ad = ctx.ad
    ad["ClusterId"] = str(cluster_id)
    ad["ProcId"] = str(proc_id)
    ad["JobUniverse"] = str(VM_UNIVERSE)
    _known_commands(ctx)
    cross_rules(ctx)
    ad["ExecutableSize"] = str(int(ad["JobVMMemory"]) * 1024)  # KiB: a suspended VM's memory goes to disk (6887)
    ad["TransferExecutable"] = "false"  # a VM job's executable is only a label (4522-4526)
    request_resources(ctx, default_request_cpus)
    forced, used = legacy.apply(ctx)
    _check_inputs(ctx)
    hints = legacy.hints(ctx, used, ctx.transfer_list[ctx.written :])
    if ctx.disk_command in legacy.OLD_DISKS.values():
        old = ctx.disk_command
        hints.append(PoolHint(
            str(d.path), d.line_of(old) or d.job_line, old,
            f"condor_submit (HTCondor 25) does not know '{old}' and fails without vm_disk; "
            "on a pool write instead:", (f"vm_disk = {d.raw.get(old, '')}",)))
    hints += _untransferred_hints(ctx)
    ad["Owner"] = quote(identity.login)
    ad["User"] = quote(f"{identity.login}@{identity.domain}")
    ad["Iwd"] = quote(str(iwd))
    ad["QDate"] = str(int(time.time()))
    ad["JobStatus"] = "2"  # RUNNING: the starter sends the ad of a running job
    file_transfer(ctx)
    _forced_attributes(ctx, forced)

    final = _evaluated(ad)
    memory = final.get("JobVMMemory")
    vcpus = final.get("JobVM_VCPUS")
    return Job(
        ad=ad,
        vm_type=vm_type,
        executable=d.lookup("executable", "cmd")[1] or "",
        vm_name=f"{identity.login}@{identity.domain}".replace("@", "_") + f"_{cluster_id}.{proc_id}",
        memory_mib=memory if isinstance(memory, int) and not isinstance(memory, bool) else 0,
        vcpus=max(vcpus, 1) if isinstance(vcpus, int) and not isinstance(vcpus, bool) else 1,
        checkpoint=final.get("JobVMCheckpoint") is True,  # what the starter reads (spec 6.7)
        snapshot_disk=(final.get("VMPARAM_vm_Snapshot_Disk") is True if vm_type != "vmware"
                       else final.get("VMPARAM_VMware_SnapshotDisk") is not False),  # the gahp's default: true
        no_output_vm=final.get("VMPARAM_No_Output_VM") is True,
        iwd=iwd,
        inputs=ctx.inputs,
        warnings=ctx.warnings,
        hints=sorted(hints, key=lambda hint: hint.line),
    )


def _old_disk_spelling(ctx: Context, key: str | None, value: str | None) -> tuple[str | None, str | None]:
    """xen_disk / kvm_disk stand in for a missing vm_disk of their own VM type."""
    d = ctx.description
    for vm_type, old in legacy.OLD_DISKS.items():
        if d.get(old) is None:
            continue
        if ctx.vm_type != vm_type:
            ctx.warnings.append(d.warning(old, f"{old} is ignored for vm_type = {ctx.vm_type}"))
        elif key is not None:
            ctx.warnings.append(d.warning(old, f"{old} is ignored: vm_disk is set"))
        else:  # its hint is vm_disk itself
            key, value = d.lookup(old)
            ctx.disk_command = old
    return key, value


def _known_commands(ctx: Context) -> None:
    d, ad = ctx.description, ctx.ad
    for cmd in KNOWN:
        key, value = d.lookup(*cmd.keys)
        if ctx.vm_type not in cmd.vm_types:
            if value is not None:
                ctx.warnings.append(d.warning(key or cmd.keys[0], f"{key} is ignored for vm_type = {ctx.vm_type}"))
            continue
        if cmd.attr == "VMPARAM_vm_Disk":
            key, value = _old_disk_spelling(ctx, key, value)
        if value is None:
            if cmd.required:
                written = next((k for k in cmd.keys if d.raw.get(k)), None)
                if written is not None:  # set, but to nothing once the macros are expanded
                    raise d.error(written, f"{written} is empty after expanding {d.raw[written]!r}")
                raise d.error(None, _missing(cmd.keys[0]))
            if cmd.default is not None:
                ad[cmd.attr] = cmd.default
            continue
        assert key is not None  # lookup gives every value with its key
        converted = cmd.convert(ctx, cmd, key, value)
        if converted is not None:
            ad[cmd.attr] = converted


def _missing(key: str) -> str:
    examples = {
        "executable": "executable = my-vm-job (in VM universe it is just a label)",
        "vm_memory": "vm_memory = 512 (MiB)",
        "vm_disk": "vm_disk = disk.img:vda:w",
        "xen_kernel": "xen_kernel = included (or vmx, or a kernel file)",
    }
    return f"{key} cannot be found; a VM-universe job needs it, e.g. '{examples.get(key, key + ' = ...')}'"


def _transfer_input_files(ctx: Context) -> None:
    """transfer_input_files (TransferInputFiles), as SetTransferFiles lists it (7248-7253)."""
    d = ctx.description
    key, value = d.lookup("transfer_input_files", "transferinputfiles")
    if value is None:
        return
    for entry in split_list(strip_outer_quotes(value)):
        if "://" in entry:
            raise d.error(key, f"transfer_input_files: URL {entry!r} is not supported by vmgahp run")
        contents = entry.endswith("/") and entry.rstrip("/") != ""
        name = "" if contents else os.path.basename(entry.rstrip("/"))
        source = Path(entry) if os.path.isabs(entry) else ctx.iwd / entry
        ctx.inputs.append(InputFile(source, name, key or "transfer_input_files", d.line_of(key or "")))
        ctx.transfer_list.append(entry)
    ctx.written = len(ctx.transfer_list)


def _check_inputs(ctx: Context) -> None:
    d = ctx.description
    names: dict[str, InputFile] = {}
    for item in ctx.inputs:
        if item.name and item.name in names and names[item.name].source != item.source:
            first = names[item.name].source
            raise d.error(item.command, f"two input files are named {item.name!r}: {first} and {item.source}")
        names[item.name] = item
        if not item.source.exists():  # check_open (7193)
            raise d.error(item.command, f"{item.command}: cannot find {item.source}")


def _untransferred_hints(ctx: Context) -> list[PoolHint]:
    d, hints = ctx.description, []
    for key, path, token in untransferred_files(ctx):
        line = legacy.transfer_line(ctx, ctx.transfer_list[ctx.written :] + [path])
        reason = (f"condor_submit (HTCondor 25) does not transfer {key}'s {path!r}, so the gahp does not find it "
                  f"and the job is held ({token}); transfer it:")
        hints.append(PoolHint(str(d.path), d.line_of(key) or d.job_line, key, reason, (line,)))
    return hints


def _forced_attributes(ctx: Context, forced: list[tuple[str, str, str, int]]) -> None:
    """The legacy commands' ``+`` attributes, then the job's own ``+Name = expr``
    lines (SetForcedAttributes: they win over every command)."""
    import classad2

    d = ctx.description
    for name, text, _command, _line in forced:
        _assign(ctx.ad, name, text)
    written = {attr.name.lower() for attr in d.custom.values()}
    for name, _text, command, _line in forced:
        if name.lower() in written:
            ctx.warnings.append(d.warning(command, f"{command} is ignored: +{name} is set"))
    for attr in d.custom.values():
        if "\n" in attr.value:
            raise SubmitError(d.path, attr.line, f"+{attr.name}: a value with a line break cannot be sent to the gahp")
        try:
            classad2.ExprTree(attr.value)
        except Exception as exc:  # noqa: BLE001 - any parse failure is a submit error
            raise SubmitError(
                d.path, attr.line,
                f"+{attr.name} = {attr.value} is not a valid ClassAd expression (did you forget to quote a string?)",
            ) from exc
        _assign(ctx.ad, attr.name, attr.value)


def _assign(ad: dict[str, str], name: str, text: str) -> None:
    for existing in [key for key in ad if key.lower() == name.lower()]:
        del ad[existing]
    ad[name] = text


def _evaluated(ad: dict[str, str]) -> dict[str, object]:
    """The values the starter and the gahp read from the ad (as classad2 evaluates them)."""
    import classad2

    values: dict[str, object] = {}
    try:
        parsed = classad2.parseOne("\n".join(f"{n} = {text}" for n, text in ad.items()), classad2.ParserType.Old)
    except Exception:  # noqa: BLE001 - every value was checked; be safe all the same
        return values
    for name in ("JobVMMemory", "JobVM_VCPUS", "JobVMCheckpoint", "VMPARAM_vm_Snapshot_Disk", "VMPARAM_No_Output_VM"):
        if name in parsed:
            try:
                values[name] = parsed.eval(name)
            except Exception:  # noqa: BLE001 - an expression the gahp would also not read
                pass
    return values
