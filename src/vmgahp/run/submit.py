"""Submit description -> the job ad condor_submit would make for a VM-universe job.

Two steps:

1. :func:`load` checks the file line by line first (HTCondor's own parser,
   ``htcondor2.Submit``, only says ``parse_up_to_q_line() failed``), so every
   mistake is reported as ``JOB.sub:7: ...``; it then lets ``htcondor2.Submit``
   expand the macros (``$(name)``, ``$ENV(X:default)``, ``if``/``else``, ...).
2. :func:`build` maps the VM-universe submit commands to job attributes with
   the table :data:`COMMANDS`, applies condor_submit's cross-command rules and
   collects the files the starter would transfer in.

Where the rules come from (HTCondor's source, htcondor/htcondor):

* ``src/condor_utils/submit_utils.cpp`` at 7491a145f6: ``SetVMParams``
  (lines 6790-7033) for the attribute names and checks, ``validate_disk_param``
  (1011-1035: each comma item of ``vm_disk`` has 3 or 4 colon fields),
  ``SetUniverse`` (4757-4808: file transfer forced on; ``vm_checkpoint`` with
  ``vm_networking`` needs ``when_to_transfer_output = ON_EXIT_OR_EVICT``),
  ``SetRequestMem`` (5424-5433: ``RequestMemory = MY.JobVMMemory`` when
  ``request_memory`` is absent), the ``VM_MEMORY``/``VM_VCPUS`` macro defaults
  ``$(Request_Memory)``/``$(Request_CPUs)`` (lines 335-346, 430-432),
  ``parse_int64_bytes`` (``metric_units.cpp``: ``vm_memory`` in MiB or with a
  K/M/G/T suffix) and ``string_is_boolean_param`` (``condor_config.cpp``:
  ``true``/``false``/``1``/``0`` or a ClassAd expression).
* ``src/condor_submit.V6/submit.cpp`` before 6d32fec944 (2011) for commands
  HTCondor has since dropped but vmgahp keeps: ``vm_cdrom_files`` ->
  ``VMPARAM_CDROM_Files`` (basenames for transferred files; one ``.iso`` or
  any number of plain files), ``kvm_cdrom_device``/``xen_cdrom_device`` ->
  ``VMPARAM_Kvm_CDROM_Device``/``VMPARAM_Xen_CDROM_Device`` (a device name,
  no ``:``), ``xen_disk`` (the Xen spelling of ``vm_disk``),
  ``xen_transfer_files`` -> ``VMPARAM_Xen_Transfer_Files`` (basenames; the
  files are added to the transfer list). Until 7a3ace7abe (2016) submit also
  transferred relative ``vm_disk``/kernel/initrd files itself; vmgahp run
  does too, so a job that names its image relative to the submit directory
  works without listing it in ``transfer_input_files``.
* vmgahp's own: ``vm_snapshot_disk`` -> ``VMPARAM_vm_Snapshot_Disk`` and
  ``vm_hardware_vt`` -> ``JobVMHardwareVT`` (submit sets the latter only for
  ``xen_kernel = vmx``).
"""

from __future__ import annotations

import os
import re
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..condor_syntax import condor_boolean

VM_UNIVERSE = 13  # CONDOR_UNIVERSE_VM (src/condor_includes/condor_universe.h)
VM_TYPES = ("kvm", "xen")
XEN_KERNEL_KEYWORDS = ("included", "vmx")  # XEN_KERNEL_INCLUDED, XEN_KERNEL_HW_VT


class SubmitError(Exception):
    """A mistake in the submit description, reported as ``FILE:LINE: message``."""

    def __init__(self, path: str | os.PathLike[str], line: int | None, message: str) -> None:
        super().__init__(message)
        self.path = str(path)
        self.line = line
        self.message = message

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}"


# --------------------------------------------------------------------------
# Step 1: line-level check, then macro expansion by htcondor2
# --------------------------------------------------------------------------

_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.]*\Z")
_ATTR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_DIRECTIVE = re.compile(r"(include|error|warning)\b[^=]*:", re.IGNORECASE)
_MACRO_OPEN = re.compile(r"\$\$?[A-Za-z_]*\(")
_UNEXPANDED = re.compile(r"(?<!\$)\$[A-Za-z_]+\([^)]*\)?")  # $ENV(..) etc. that htcondor2 left alone
_QUEUE = re.compile(r"queue(\s+(.*))?\Z", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class Custom:
    """A ``+Name = expression`` (or ``MY.Name = expression``) line."""

    name: str
    value: str
    line: int


@dataclass
class SubmitDescription:
    """The commands of one submit file, up to its first ``queue``."""

    path: Path
    values: dict[str, str]  # lower-cased command -> value with macros expanded
    raw: dict[str, str]  # lower-cased command -> value as written
    lines: dict[str, int]  # lower-cased command -> line of its last assignment
    custom: dict[str, Custom]  # lower-cased +Name / MY.Name -> the attribute
    queue_line: int | None
    last_line: int
    warnings: list[str] = field(default_factory=list)
    spans: list[tuple[int, int, int]] = field(default_factory=list, repr=False)
    physical: list[str] = field(default_factory=list, repr=False)

    def get(self, key: str) -> str | None:
        """The expanded value, or None when unset or empty (as submit_param)."""
        value = self.values.get(key.lower())
        if value is None:
            return None
        value = value.strip()
        return value or None

    def line_of(self, key: str) -> int | None:
        return self.lines.get(key.lower())

    @property
    def job_line(self) -> int:
        """Where the job is made: the queue statement (for 'missing ...' errors)."""
        return self.queue_line or self.last_line

    def error(self, key: str | None, message: str) -> SubmitError:
        line = self.line_of(key) if key else None
        return SubmitError(self.path, line or self.job_line, message)

    def warning(self, key: str, message: str) -> str:
        return f"{self.path}:{self.line_of(key) or self.job_line}: {message}"


def _check_macros(path: Path, line: int, value: str) -> None:
    for match in _MACRO_OPEN.finditer(value):
        depth = 0
        for char in value[match.end() - 1 :]:
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth == 0:
                break
        if depth:
            raise SubmitError(path, line, f"unterminated macro {match.group(0)!r} in {value.strip()!r}")


def scan(text: str, path: Path) -> SubmitDescription:
    """Check the syntax line by line; record where each command is set."""
    physical = text.lstrip("\ufeff").split("\n")
    if physical and physical[-1] == "":
        physical.pop()  # the file's final newline
    spans: list[tuple[int, int, int]] = []  # (first line, end index, open ifs after it)
    lines: dict[str, int] = {}
    raw: dict[str, str] = {}
    custom: dict[str, Custom] = {}
    conditionals: list[tuple[int, bool]] = []  # (line of the if, else seen)
    queue_line: int | None = None
    queue_args = ""
    index = 0
    while index < len(physical):
        number = index + 1
        line = physical[index].rstrip("\r")
        index += 1
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        # A trailing backslash continues the statement on the next line.
        while stripped.endswith("\\"):
            if index >= len(physical):
                raise SubmitError(path, number, "the line continues (trailing '\\') past the end of the file")
            stripped = stripped[:-1] + " " + physical[index].rstrip("\r").strip()
            index += 1
        word = stripped.split(None, 1)[0].lower()
        rest = stripped[len(word) :].strip()
        depth = len(conditionals) + (1 if word == "if" else -1 if word == "endif" else 0)
        spans.append((number, index, max(depth, 0)))
        if _QUEUE.match(stripped):
            if queue_line is None:
                queue_line, queue_args = number, rest
            continue
        if word in ("if", "elif"):
            if not rest:
                raise SubmitError(path, number, f"'{word}' needs a condition")
            if word == "elif" and (not conditionals or conditionals[-1][1]):
                raise SubmitError(path, number, "'elif' without a matching 'if'")
            if word == "if":
                conditionals.append((number, False))
            continue
        if word == "else" and not rest:
            if not conditionals or conditionals[-1][1]:
                raise SubmitError(path, number, "'else' without a matching 'if'")
            conditionals[-1] = (conditionals[-1][0], True)
            continue
        if word == "endif" and not rest:
            if not conditionals:
                raise SubmitError(path, number, "'endif' without a matching 'if'")
            conditionals.pop()
            continue
        if _DIRECTIVE.match(stripped):
            raise SubmitError(path, number, f"'{word} :' statements are not supported by vmgahp run")
        key, sep, value = stripped.partition("=")
        if not sep:
            raise SubmitError(path, number, f"expected 'command = value', got {stripped!r}")
        key = key.strip()
        if key.endswith("@"):  # key @=TAG ... @TAG
            tag = value.strip()
            key = key[:-1].strip()
            body = []
            while True:
                if index >= len(physical):
                    raise SubmitError(path, number, f"'{key} @={tag}' has no closing '@{tag}' line")
                text_line = physical[index].rstrip("\r")
                index += 1
                if text_line.strip() == f"@{tag}":
                    break
                body.append(text_line)
            value = "\n".join(body)
            spans[-1] = (number, index, spans[-1][2])
        attr = None
        if key.startswith("+"):
            attr = key[1:]
        elif key.lower().startswith("my."):
            attr = key[3:]
        if attr is not None:
            if not _ATTR.match(attr):
                raise SubmitError(path, number, f"{attr!r} is not a valid job attribute name")
        elif not _KEY.match(key):
            raise SubmitError(path, number, f"{key!r} is not a valid submit command name (expected 'command = value')")
        _check_macros(path, number, value)
        if queue_line is not None:
            continue  # commands after the first queue make later jobs, not this one
        if attr is not None:
            custom[attr.lower()] = Custom(attr, "", number)
        else:
            lines[key.lower()] = number
            raw[key.lower()] = value.strip()
    if conditionals:
        raise SubmitError(path, conditionals[-1][0], "'if' without a matching 'endif'")
    description = SubmitDescription(
        path=path,
        values={},
        raw=raw,
        lines=lines,
        custom=custom,
        queue_line=queue_line,
        last_line=max(len(physical), 1),
        spans=spans,
        physical=physical,
    )
    if queue_line is None:
        description.warnings.append(f"{path}: no 'queue' statement; running one job anyway")
    elif queue_args and not re.fullmatch(r"1?", queue_args):
        if re.fullmatch(r"\d+", queue_args):
            description.warnings.append(
                f"{path}:{queue_line}: 'queue {queue_args}' makes {queue_args} jobs; "
                "vmgahp run runs the first (ProcId 0)"
            )
        else:
            raise SubmitError(
                path, queue_line, f"vmgahp run runs one job: use 'queue' or 'queue N', not 'queue {queue_args}'"
            )
    return description


def load(path: str | os.PathLike[str]) -> SubmitDescription:
    """Read, check and macro-expand a submit file. Raises SubmitError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise SubmitError(path, line, "the file is not UTF-8 text") from exc
    except OSError as exc:
        raise SubmitError(path, None, f"cannot read the submit file: {exc.strerror or exc}") from exc
    description = scan(text, path)
    submit, message = _htcondor_parse(text)
    if submit is None:
        raise SubmitError(path, _failing_line(description), f"HTCondor cannot parse this: {message}")
    for key in submit.keys():
        try:
            value = submit.expand(key)
        except (KeyError, ValueError):  # "name =" with nothing after it
            value = ""
        if key.lower().startswith("my."):
            name = key[3:]
            line = description.custom.get(name.lower(), Custom(name, "", description.job_line)).line
            description.custom[name.lower()] = Custom(name, value.strip(), line)
        else:
            description.values[key.lower()] = value
            line = description.line_of(key) or description.job_line
        leftover = _UNEXPANDED.search(value)
        if leftover:
            raise SubmitError(path, line, f"cannot expand the macro in {value.strip()!r} near {leftover.group(0)!r}")
    description.custom = {k: v for k, v in description.custom.items() if v.value}
    return description


def _htcondor_parse(text: str) -> tuple[Any, str]:
    """``htcondor2.Submit(text)``, with HTCondor's own complaint (printed on fd 2) captured."""
    import htcondor2  # deferred: the daemon never needs it

    with tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            submit = htcondor2.Submit(text)
            failure = ""
        except Exception as exc:  # noqa: BLE001 - htcondor2 raises ValueError without a line
            submit, failure = None, str(exc)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        said = capture.read().decode(errors="replace")
    if submit is None:
        match = re.search(r"error: '?(.*?)'? line: ", said)
        failure = match.group(1) if match else (said.strip().splitlines() or [failure])[-1]
    return submit, failure


def _failing_line(description: SubmitDescription) -> int | None:
    """The first statement after which HTCondor's parser fails (prefixes parse on their own)."""
    for line, end, depth in description.spans:
        prefix = "\n".join(description.physical[:end]) + "\n" + "endif\n" * depth
        if _htcondor_parse(prefix)[0] is None:
            return line
    return None


# --------------------------------------------------------------------------
# Step 2: commands -> job attributes
# --------------------------------------------------------------------------


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

    def ad_lines(self) -> list[str]:
        """``Name = expression`` lines, as the starter sends them."""
        return [f"{name} = {value}" for name, value in self.ad.items()]


@dataclass
class _Context:
    description: SubmitDescription
    vm_type: str
    iwd: Path
    ad: dict[str, str] = field(default_factory=dict)
    inputs: list[InputFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def transfer(self, path: str, command: str) -> bool:
        """Add a relative path to the transfer list; False for an absolute one."""
        if os.path.isabs(path):
            return False
        name = os.path.basename(path.rstrip("/"))
        source = self.iwd / path
        for item in self.inputs:
            if item.name != name:
                continue
            if item.source == source or os.sep not in path.rstrip("/"):
                return True  # the same file, or a bare name for a file already transferred
            raise self.description.error(command, f"two input files are named {name!r}: {item.source} and {source}")
        self.inputs.append(InputFile(source, name, command, self.description.line_of(command)))
        return True


def quote(text: str, description: SubmitDescription | None = None, key: str | None = None) -> str:
    """An old-syntax ClassAd string, as the starter prints it: only ``"`` is escaped."""
    if "\n" in text or "\r" in text:
        if description is not None:
            raise description.error(key, f"{key}: a value with a line break cannot be sent to the gahp")
        raise ValueError("a ClassAd string for the gahp cannot contain a line break")
    return '"' + text.replace('"', '\\"') + '"'


def parse_bool(value: str) -> bool | None:
    """``string_is_boolean_param`` on the trimmed value (submit trims values)."""
    return condor_boolean(value.strip())


_MEMORY = re.compile(r"\s*([-+]?\d+)(?:\.(\d*))?\s*(?:([KkMmGgTt])[Bb]?)?\s*\Z")
_UNIT = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_mib(value: str) -> int | None:
    """``parse_int64_bytes(value, 1024*1024)``: MiB, or K/M/G/T with rounding up."""
    match = _MEMORY.match(value)
    if not match:
        return None
    whole, fraction, unit = match.groups()
    number = int(whole) + (float(f"0.{fraction[:3]}") if fraction else 0.0)
    base = 1 << 20
    multiplier = _UNIT[unit.lower()] if unit else base
    return int((number * multiplier + base - 1) // base)


# Each converter turns the expanded value of one command into a ClassAd
# expression (or None to leave the attribute out), raising SubmitError.
Converter = Callable[[_Context, "Command", str, str], "str | None"]


def _string(ctx: _Context, cmd: Command, key: str, value: str) -> str:
    return quote(value, ctx.description, key)


def _unquoted(ctx: _Context, cmd: Command, key: str, value: str) -> str:
    return quote(value.strip().strip("\"'"), ctx.description, key)  # trim_quotes(x, "\"'")


def _vm_type(ctx: _Context, cmd: Command, key: str, value: str) -> str:
    return quote(value.lower(), ctx.description, key)


def _bool(ctx: _Context, cmd: Command, key: str, value: str) -> str:
    result = parse_bool(value)
    if result is None:
        raise ctx.description.error(key, f"{key} = {value} is invalid, must eval to a boolean")
    return "true" if result else "false"


def _memory(ctx: _Context, cmd: Command, key: str, value: str) -> str:
    mib = parse_mib(value)
    if mib is None or mib <= 0:
        raise ctx.description.error(
            key, f"{key} = {value} is incorrectly specified: give MiB (e.g. '{key} = 512') or a size such as 1G"
        )
    return str(mib)


def _vcpus(ctx: _Context, cmd: Command, key: str, value: str) -> str:
    try:
        count = int(value)
    except ValueError:
        if key != cmd.keys[0]:  # the request_cpus fallback may be an expression
            return "1"
        raise ctx.description.error(key, f"{key} = {value} must be an integer") from None
    return str(max(count, 1))  # VMVCPUS = MAX(VMVCPUS, 1)


def _disk(ctx: _Context, cmd: Command, key: str, value: str) -> str:
    # validate_disk_param(vmdisk, 3, 4): StringTokenIterator skips empty items.
    items = [item.strip() for item in value.split(",") if item.strip()]
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
        ctx.transfer(item.split(":", 1)[0].strip(), key)
    return quote(value.strip(), ctx.description, key)  # VMPARAM_vm_Disk: the value unchanged


def _file_list(value: str) -> list[str]:
    return [item.strip().strip("\"'").strip() for item in value.split(",") if item.strip().strip("\"'").strip()]


def _cdrom_files(ctx: _Context, cmd: Command, key: str, value: str) -> str:
    files = _file_list(value)
    if any(name.lower().endswith(".iso") for name in files) and len(files) > 1:
        raise ctx.description.error(
            key, f"{key}: give either one .iso file or any number of plain files, not an .iso with other files"
        )
    listed = [os.path.basename(name) if ctx.transfer(name, key) else name for name in files]
    return quote(",".join(listed), ctx.description, key)


def _transfer_files(ctx: _Context, cmd: Command, key: str, value: str) -> str:
    names = []
    for name in _file_list(value):
        if os.path.isabs(name):
            ctx.inputs.append(InputFile(Path(name), os.path.basename(name), key, ctx.description.line_of(key)))
        else:
            ctx.transfer(name, key)
        names.append(os.path.basename(name))
    return quote(",".join(names), ctx.description, key)


def _device(ctx: _Context, cmd: Command, key: str, value: str) -> str:
    if ":" in value:
        raise ctx.description.error(key, f"{key} should be just a device name, e.g. '{key} = hdc'")
    return quote(value.strip(), ctx.description, key)


def _xen_file(ctx: _Context, cmd: Command, key: str, value: str) -> str:
    if value.lower() not in XEN_KERNEL_KEYWORDS:
        ctx.transfer(value, key)
    return quote(value, ctx.description, key)


@dataclass(frozen=True)
class Command:
    """One submit command and the job attribute condor_submit makes of it."""

    keys: tuple[str, ...]  # the command, then fallbacks read when it is unset
    attr: str
    convert: Converter
    vm_types: tuple[str, ...] = VM_TYPES
    default: str | None = None  # ClassAd text when unset (None: leave it out)
    required: bool = False


COMMANDS: tuple[Command, ...] = (
    Command(("executable",), "Cmd", _string, required=True),  # a label in VM universe
    Command(("vm_type",), "JobVMType", _vm_type, required=True),  # lower-cased
    # vm_memory defaults to $(Request_Memory) (the VM_MEMORY macro default).
    Command(("vm_memory", "request_memory"), "JobVMMemory", _memory, required=True),
    Command(("vm_vcpus", "request_cpus"), "JobVM_VCPUS", _vcpus, default="1"),
    Command(("vm_macaddr",), "JobVM_MACADDR", _string),
    Command(("vm_networking",), "JobVMNetworking", _bool, default="false"),
    Command(("vm_networking_type",), "JobVMNetworkingType", _string),  # kept only with networking
    Command(("vm_checkpoint",), "JobVMCheckpoint", _bool, default="false"),
    Command(("vm_hardware_vt",), "JobVMHardwareVT", _bool),  # vmgahp; submit: xen_kernel = vmx
    Command(("vm_vnc",), "JobVMVNCConsole", _bool, default="false"),
    Command(("vm_no_output_vm",), "VMPARAM_No_Output_VM", _bool),
    Command(("vm_disk",), "VMPARAM_vm_Disk", _disk, required=True),
    Command(("xen_disk",), "VMPARAM_vm_Disk", _disk, vm_types=("xen",)),  # 7.x spelling, xen only
    Command(("vm_snapshot_disk",), "VMPARAM_vm_Snapshot_Disk", _bool),  # vmgahp
    Command(("vm_cdrom_files",), "VMPARAM_CDROM_Files", _cdrom_files),  # 7.x
    Command(("kvm_cdrom_device",), "VMPARAM_Kvm_CDROM_Device", _device, vm_types=("kvm",)),  # 7.x
    Command(("xen_cdrom_device",), "VMPARAM_Xen_CDROM_Device", _device, vm_types=("xen",)),  # 7.x
    Command(("xen_kernel",), "VMPARAM_Xen_Kernel", _xen_file, vm_types=("xen",), required=True),
    Command(("xen_initrd",), "VMPARAM_Xen_Initrd", _xen_file, vm_types=("xen",)),
    Command(("xen_root",), "VMPARAM_Xen_Root", _string, vm_types=("xen",)),
    Command(("xen_kernel_params",), "VMPARAM_Xen_Kernel_Params", _unquoted, vm_types=("xen",)),
    Command(("xen_transfer_files",), "VMPARAM_Xen_Transfer_Files", _transfer_files, vm_types=("xen",)),  # 7.x
)

# VM universe has no standard streams (SetStdFile: "You cannot use input,
# ouput, and error parameters in the submit description file for vm universe").
_NO_STD_FILES = ("input", "output", "error")


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
    transfer_intermediate: tuple[str, ...] = (),
) -> Job:
    """The job ad condor_submit (and the shadow, for a restart) would make."""
    d = description
    universe = d.get("universe")
    if universe is None:
        raise d.error(None, "the job has no 'universe = vm' (vmgahp run only runs VM-universe jobs)")
    if universe.lower() != "vm":
        raise d.error("universe", f"universe = {universe}: vmgahp run only runs VM-universe jobs (universe = vm)")
    vm_type = (d.get("vm_type") or "").lower()
    if not vm_type:
        raise d.error(None, "vm_type cannot be found; set 'vm_type = kvm' (or xen) for a VM-universe job")
    if vm_type == "vmware":
        raise d.error("vm_type", "a vm_type of 'vmware' is no longer supported (HTCondor removed it; use kvm or xen)")
    if vm_type not in VM_TYPES:
        raise d.error("vm_type", f"unknown vm_type {d.get('vm_type')!r}: vmgahp runs kvm and xen")
    for key in _NO_STD_FILES:
        value = d.get(key)
        if value is not None and value != "/dev/null":
            raise d.error(key, f"{key} = {value}: a VM-universe job has no {key} file (use the VM's disks or CD-ROM)")

    initialdir = d.get("initialdir") or d.get("initial_dir")
    iwd = (d.path.parent / initialdir) if initialdir else d.path.parent
    iwd = Path(os.path.abspath(iwd))
    if not iwd.is_dir():
        raise d.error("initialdir" if d.get("initialdir") else "initial_dir", f"initialdir {iwd} is not a directory")

    ctx = _Context(d, vm_type, iwd, warnings=list(d.warnings))
    _transfer_input_files(ctx)

    ad = ctx.ad
    ad["ClusterId"] = str(cluster_id)
    ad["ProcId"] = str(proc_id)
    ad["JobUniverse"] = str(VM_UNIVERSE)
    for cmd in COMMANDS:
        if vm_type not in cmd.vm_types:
            if d.get(cmd.keys[0]) is not None:
                ctx.warnings.append(d.warning(cmd.keys[0], f"{cmd.keys[0]} is ignored for vm_type = {vm_type}"))
            continue
        key = next((k for k in cmd.keys if d.get(k) is not None), None)
        if cmd.attr in ad:
            if key is not None:
                ctx.warnings.append(d.warning(key, f"{key} is ignored: {cmd.attr} is already set"))
            continue
        if key is None:
            if cmd.required and not _has_alternative(cmd, d, vm_type):
                written = next((k for k in cmd.keys if d.raw.get(k)), None)
                if written is not None:  # set, but to nothing once the macros are expanded
                    raise d.error(written, f"{written} is empty after expanding {d.raw[written]!r}")
                raise d.error(None, _missing(cmd.keys[0]))
            if cmd.default is not None:
                ad[cmd.attr] = cmd.default
            continue
        value = cmd.convert(ctx, cmd, key, d.get(key) or "")
        if value is not None:
            ad[cmd.attr] = value

    _cross_rules(ctx)
    memory = int(ad["JobVMMemory"])
    ad["RequestMemory"] = _request_memory(ctx)
    ad["RequestCpus"] = _request_cpus(ctx)
    ad["ExecutableSize"] = str(memory * 1024)  # KiB: a suspended VM's memory goes to disk
    ad["Owner"] = quote(identity.login)
    ad["User"] = quote(f"{identity.login}@{identity.domain}")
    ad["Iwd"] = quote(str(iwd))
    ad["QDate"] = str(int(time.time()))
    ad["JobStatus"] = "2"  # RUNNING: the starter sends the ad of a running job
    checkpoint = ad["JobVMCheckpoint"] == "true"
    # SetUniverse forces file transfer for VM jobs.
    ad["ShouldTransferFiles"] = quote("YES")
    ad["WhenToTransferOutput"] = quote("ON_EXIT_OR_EVICT" if checkpoint else "ON_EXIT")
    if ctx.inputs:
        ad["TransferInput"] = quote(",".join(_as_written(item, iwd) for item in ctx.inputs))
    if transfer_intermediate:
        ad["TransferIntermediate"] = quote(",".join(transfer_intermediate))
    _custom_attributes(ctx)

    executable = d.get("executable") or ""
    return Job(
        ad=ad,
        vm_type=vm_type,
        executable=executable,
        vm_name=f"{identity.login}@{identity.domain}".replace("@", "_") + f"_{cluster_id}.{proc_id}",
        memory_mib=memory,
        vcpus=int(ad["JobVM_VCPUS"]),
        checkpoint=checkpoint,
        snapshot_disk=ad.get("VMPARAM_vm_Snapshot_Disk") == "true",
        no_output_vm=ad.get("VMPARAM_No_Output_VM") == "true",
        iwd=iwd,
        inputs=ctx.inputs,
        warnings=ctx.warnings,
    )


def _has_alternative(cmd: Command, d: SubmitDescription, vm_type: str) -> bool:
    return cmd.attr == "VMPARAM_vm_Disk" and vm_type == "xen" and d.get("xen_disk") is not None


def _missing(key: str) -> str:
    examples = {
        "executable": "executable = my-vm-job (in VM universe it is just a label)",
        "vm_memory": "vm_memory = 512 (MiB)",
        "vm_disk": "vm_disk = disk.img:vda:w",
        "xen_kernel": "xen_kernel = included (or vmx, or a kernel file)",
    }
    return f"{key} cannot be found; a VM-universe job needs it, e.g. '{examples.get(key, key + ' = ...')}'"


def _transfer_input_files(ctx: _Context) -> None:
    d = ctx.description
    value = d.get("transfer_input_files")
    if value is None:
        return
    for entry in _file_list(value):
        if "://" in entry:
            raise d.error("transfer_input_files", f"transfer_input_files: URL {entry!r} is not supported by vmgahp run")
        contents = entry.endswith("/") and entry.rstrip("/") != ""
        name = "" if contents else os.path.basename(entry.rstrip("/"))
        source = Path(entry) if os.path.isabs(entry) else ctx.iwd / entry
        ctx.inputs.append(InputFile(source, name, "transfer_input_files", d.line_of("transfer_input_files")))


def _cross_rules(ctx: _Context) -> None:
    d, ad = ctx.description, ctx.ad
    networking = ad.get("JobVMNetworking") == "true"
    if not networking and "JobVMNetworkingType" in ad:
        del ad["JobVMNetworkingType"]  # SetVMParams reads the type only with networking
        ctx.warnings.append(d.warning("vm_networking_type", "vm_networking_type needs vm_networking = true; ignored"))
    if ad.get("JobVMCheckpoint") == "true" and networking:
        when = (d.get("when_to_transfer_output") or "").upper()
        if when != "ON_EXIT_OR_EVICT":
            raise d.error(
                "vm_networking",
                "you requested both vm_checkpoint and vm_networking; to use both you must also set "
                "'when_to_transfer_output = ON_EXIT_OR_EVICT'",
            )
    if ctx.vm_type == "xen":
        kernel = (d.get("xen_kernel") or "").lower()
        real_kernel = kernel not in XEN_KERNEL_KEYWORDS
        if kernel == "vmx":
            ad["JobVMHardwareVT"] = "true"
        if d.get("xen_initrd") is not None and not real_kernel:
            raise d.error("xen_initrd", "to use xen_initrd, xen_kernel must be a real kernel file")
        if real_kernel and d.get("xen_root") is None:
            raise d.error("xen_kernel", "xen_root cannot be found; a kernel file needs one, e.g. xen_root = /dev/xvda1")
    if "VMPARAM_CDROM_Files" not in ad:
        for key in ("kvm_cdrom_device", "xen_cdrom_device"):
            if d.get(key) is not None and key.startswith(ctx.vm_type):
                ctx.warnings.append(d.warning(key, f"{key} has no effect without vm_cdrom_files"))
    names: dict[str, InputFile] = {}
    for item in ctx.inputs:
        if item.name and item.name in names and names[item.name].source != item.source:
            first = names[item.name].source
            raise d.error(item.command, f"two input files are named {item.name!r}: {first} and {item.source}")
        names[item.name] = item
        if not item.source.exists():
            raise d.error(item.command, f"{item.command}: cannot find {item.source}")


def _request_memory(ctx: _Context) -> str:
    value = ctx.description.get("request_memory")
    if value is None:
        return "MY.JobVMMemory"  # SetRequestMem without request_memory
    mib = parse_mib(value)
    return str(mib) if mib is not None else _expression(ctx, "request_memory", value)


def _request_cpus(ctx: _Context) -> str:
    value = ctx.description.get("request_cpus")
    if value is None:
        return ctx.ad["JobVM_VCPUS"]  # vmgahp run: stands in for JOB_DEFAULT_REQUESTCPUS
    return _expression(ctx, "request_cpus", value)


def _expression(ctx: _Context, key: str, value: str) -> str:
    import classad2

    try:
        classad2.ExprTree(value)
    except Exception as exc:  # noqa: BLE001
        raise ctx.description.error(key, f"{key} = {value} is not a valid ClassAd expression") from exc
    return value


def _custom_attributes(ctx: _Context) -> None:
    """``+Name = expr`` / ``MY.Name = expr``: set last, so they win (SetForcedAttributes)."""
    import classad2

    d = ctx.description
    for lowered, attr in d.custom.items():
        if "\n" in attr.value:
            raise SubmitError(d.path, attr.line, f"+{attr.name}: a value with a line break cannot be sent to the gahp")
        try:
            classad2.ExprTree(attr.value)
        except Exception as exc:  # noqa: BLE001
            raise SubmitError(
                d.path, attr.line,
                f"+{attr.name} = {attr.value} is not a valid ClassAd expression (did you forget to quote a string?)",
            ) from exc
        for existing in [name for name in ctx.ad if name.lower() == lowered]:
            del ctx.ad[existing]
        ctx.ad[attr.name] = attr.value


def _as_written(item: InputFile, iwd: Path) -> str:
    try:
        text = str(item.source.relative_to(iwd))
    except ValueError:
        text = str(item.source)
    return text + "/" if item.name == "" else text
