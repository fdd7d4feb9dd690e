"""The command table, as data.

Order matters: ``COMMANDS`` lists the names in exactly this order (the C++
``commands_list``), and the starter checks membership before it sends a
command. ``words`` is the exact word count a line must have; ``argument``
says what the third word of a VM command is.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple, Optional


class Kind(Enum):
    LOCAL = "local"  # answered by the session itself
    VM = "vm"  # queued as a request; the result comes through RESULTS


class CommandSpec(NamedTuple):
    name: str
    kind: Kind
    words: int
    argument: Optional[str] = None  # "vmtype" or "vmid" for VM commands


COMMAND_TABLE: tuple[CommandSpec, ...] = (
    CommandSpec("ASYNC_MODE_ON", Kind.LOCAL, 1),
    CommandSpec("ASYNC_MODE_OFF", Kind.LOCAL, 1),
    CommandSpec("CONDOR_VM_START", Kind.VM, 3, "vmtype"),
    CommandSpec("CONDOR_VM_STOP", Kind.VM, 3, "vmid"),
    CommandSpec("CONDOR_VM_SUSPEND", Kind.VM, 3, "vmid"),
    CommandSpec("CONDOR_VM_SOFT_SUSPEND", Kind.VM, 3, "vmid"),
    CommandSpec("CONDOR_VM_RESUME", Kind.VM, 3, "vmid"),
    CommandSpec("CONDOR_VM_CHECKPOINT", Kind.VM, 3, "vmid"),
    CommandSpec("CONDOR_VM_STATUS", Kind.VM, 3, "vmid"),
    CommandSpec("CONDOR_VM_GETPID", Kind.VM, 3, "vmid"),
    CommandSpec("QUIT", Kind.LOCAL, 1),
    CommandSpec("VERSION", Kind.LOCAL, 1),
    CommandSpec("COMMANDS", Kind.LOCAL, 1),
    CommandSpec("SUPPORT_VMS", Kind.LOCAL, 1),
    CommandSpec("RESULTS", Kind.LOCAL, 1),
    CommandSpec("CLASSAD", Kind.LOCAL, 1),
    CommandSpec("CLASSAD_END", Kind.LOCAL, 1),
)

BY_NAME: dict[str, CommandSpec] = {spec.name: spec for spec in COMMAND_TABLE}

COMMANDS_REPLY = "S " + " ".join(spec.name for spec in COMMAND_TABLE)


def lookup(word: str) -> CommandSpec | None:
    """Find a command by name, case-insensitively as C strcasecmp: ASCII only."""
    if not word.isascii():
        return None  # str.upper() would fold 'ſ' to 'S'; strcasecmp does not
    return BY_NAME.get(word.upper())
