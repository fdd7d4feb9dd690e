"""Working defaults for ``vmgahp run`` on a machine with no HTCondor configuration.

A person testing an image on a workstation has no ``condor_config``. Every
knob the gahp needs and the configuration does not name gets a value from
this host - the VM memory limit from its RAM, the libvirt URI this user can
use, the domain type from a real check of hardware virtualization - and
``vmgahp run`` prints each choice and how to override it. A knob set in the
configuration (``CONDOR_CONFIG`` or ``_CONDOR_<KNOB>``) always wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Default:
    knob: str
    value: str
    why: str


def host_memory_mib(meminfo: str = "/proc/meminfo") -> int:
    with open(meminfo) as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise OSError(f"no MemTotal in {meminfo}")


def choose(vm_type: str, is_set: Callable[[str], bool]) -> list[Default]:
    """The defaults for the knobs ``is_set`` says are unset."""
    from vmgahp.drivers.registry import local_defaults

    chosen = []
    if not is_set("VM_MEMORY"):
        total = host_memory_mib()
        chosen.append(Default("VM_MEMORY", str(total * 3 // 4), f"3/4 of this host's {total} MiB"))
    chosen += [Default(*item) for item in local_defaults(vm_type, is_set)]
    return chosen


def configured(name: str) -> bool:
    """Whether HTCondor's configuration (file or environment) sets ``name``."""
    import htcondor2  # deferred: vmgahp run loads it for the submit file anyway

    return htcondor2.param.get(name) is not None
