"""``VM_BRIDGE_SCRIPT``: Xen's vif hotplug script for a bridged NIC.

The talk's example is ``VM_BRIDGE_SCRIPT = vif-bridge bridge=xenbr0`` -- the
way xend's ``vif = [...]`` lines named a script and its bridge. HTCondor's
old libvirt Xen code read ``XEN_BRIDGE_SCRIPT`` first and then
``VM_BRIDGE_SCRIPT`` and pasted the whole value into ``<script path='...'/>``
of a bridged interface; libxl would then look for a program literally named
``vif-bridge bridge=xenbr0``. Here the value is split: the first word is the
script (a bare name is found by libxl in ``/etc/xen/scripts``), a
``bridge=NAME`` word is the bridge the script attaches the vif to (libxl
hands it to the script through xenstore, from ``<source bridge=.../>``).
Other ``key=value`` words have no place in libvirt's XML and are reported.

KVM has no vif scripts (libvirt attaches the tap device to the bridge
itself), so there the knob is ignored, with a log line saying so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

KNOBS = ("XEN_BRIDGE_SCRIPT", "VM_BRIDGE_SCRIPT")  # the old C++ order


@dataclass(frozen=True)
class BridgeScript:
    knob: str = ""  # which knob it came from; empty: none is set
    script: str = ""
    bridge: str = ""
    ignored: tuple[str, ...] = ()  # words that are neither the script nor bridge=

    def __bool__(self) -> bool:
        return bool(self.script or self.bridge)


def read_bridge_script(knobs: Mapping[str, str]) -> BridgeScript:
    for knob in KNOBS:
        value = (knobs.get(knob) or "").replace('"', "").strip()
        if value:
            return parse(value, knob)
    return BridgeScript()


def parse(value: str, knob: str = "VM_BRIDGE_SCRIPT") -> BridgeScript:
    script, bridge, ignored = "", "", []
    for word in value.split():
        key, eq, rest = word.partition("=")
        if eq and key.lower() == "bridge":
            bridge = rest
        elif not eq and not script:
            script = word
        else:
            ignored.append(word)
    return BridgeScript(knob, script, bridge, tuple(ignored))
