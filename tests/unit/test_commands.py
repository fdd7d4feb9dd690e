"""Tier 1: the command table (spec 3, 3.1)."""

from __future__ import annotations

import pytest

from vmgahp.protocol import commands
from vmgahp.protocol.commands import BY_NAME, COMMAND_TABLE, COMMANDS_REPLY, Kind, lookup

SPEC_ORDER = (
    "ASYNC_MODE_ON ASYNC_MODE_OFF CONDOR_VM_START CONDOR_VM_STOP CONDOR_VM_SUSPEND "
    "CONDOR_VM_SOFT_SUSPEND CONDOR_VM_RESUME CONDOR_VM_CHECKPOINT CONDOR_VM_STATUS "
    "CONDOR_VM_GETPID QUIT VERSION COMMANDS SUPPORT_VMS RESULTS CLASSAD CLASSAD_END"
).split()

VM_ID_COMMANDS = [
    "CONDOR_VM_STOP",
    "CONDOR_VM_SUSPEND",
    "CONDOR_VM_SOFT_SUSPEND",
    "CONDOR_VM_RESUME",
    "CONDOR_VM_CHECKPOINT",
    "CONDOR_VM_STATUS",
    "CONDOR_VM_GETPID",
]
LOCAL_COMMANDS = [
    "ASYNC_MODE_ON",
    "ASYNC_MODE_OFF",
    "QUIT",
    "VERSION",
    "COMMANDS",
    "SUPPORT_VMS",
    "RESULTS",
    "CLASSAD",
    "CLASSAD_END",
]


def test_exactly_17_names_in_cpp_order():
    """The table holds exactly the 17 command names, in the C++ commands_list order."""
    assert len(COMMAND_TABLE) == 17
    assert [spec.name for spec in COMMAND_TABLE] == SPEC_ORDER


def test_commands_reply_byte_exact():
    """COMMANDS answers 'S' plus the 17 names separated by single spaces, byte for byte."""
    assert COMMANDS_REPLY == (
        "S ASYNC_MODE_ON ASYNC_MODE_OFF CONDOR_VM_START CONDOR_VM_STOP CONDOR_VM_SUSPEND "
        "CONDOR_VM_SOFT_SUSPEND CONDOR_VM_RESUME CONDOR_VM_CHECKPOINT CONDOR_VM_STATUS "
        "CONDOR_VM_GETPID QUIT VERSION COMMANDS SUPPORT_VMS RESULTS CLASSAD CLASSAD_END"
    )


def test_no_vm_type_command():
    """There is no VM_TYPE command, and VM commands carry the CONDOR_ prefix."""
    assert lookup("VM_TYPE") is None
    assert lookup("VM_START") is None
    assert "VM_TYPE" not in COMMANDS_REPLY.split()


def test_start_arity_and_argument():
    """CONDOR_VM_START is a VM command of exactly 3 words whose argument is the VM type."""
    spec = BY_NAME["CONDOR_VM_START"]
    assert (spec.kind, spec.words, spec.argument) == (Kind.VM, 3, "vmtype")


@pytest.mark.parametrize("name", VM_ID_COMMANDS)
def test_vm_id_commands_arity(name):
    """Every other CONDOR_VM_* command takes exactly 3 words: name, request id, vm id."""
    spec = BY_NAME[name]
    assert (spec.kind, spec.words, spec.argument) == (Kind.VM, 3, "vmid")


@pytest.mark.parametrize("name", LOCAL_COMMANDS)
def test_local_commands_alone_on_line(name):
    """All non-VM commands are local and must be alone on the line (1 word)."""
    spec = BY_NAME[name]
    assert (spec.kind, spec.words, spec.argument) == (Kind.LOCAL, 1, None)


def test_every_name_classified_once():
    """The VM and local lists cover the table exactly once."""
    assert sorted(VM_ID_COMMANDS + LOCAL_COMMANDS + ["CONDOR_VM_START"]) == sorted(SPEC_ORDER)
    assert len(BY_NAME) == 17


@pytest.mark.parametrize("word", ["results", "Results", "rEsUlTs", "RESULTS"])
def test_lookup_case_insensitive(word):
    """Command names are matched case-insensitively."""
    assert lookup(word) is BY_NAME["RESULTS"]


@pytest.mark.parametrize("name", SPEC_ORDER)
def test_lookup_lower_case_every_name(name):
    """Every name is found from its lower-case spelling."""
    assert lookup(name.lower()).name == name


@pytest.mark.parametrize("word", ["", "RESULT", "RESULTSX", " RESULTS", "CONDOR_VM", "R"])
def test_lookup_unknown(word):
    """Prefixes, extensions and blanks are not commands."""
    assert lookup(word) is None


@pytest.mark.parametrize("word", ["RESULTſ", "quıt", "ＱＵＩＴ"])
def test_lookup_ascii_only_case_folding(word):
    """Only ASCII letters fold, as in C strcasecmp: a non-ASCII look-alike ('ſ' upper-cases to 'S') is not a command."""
    assert commands.lookup(word) is None
