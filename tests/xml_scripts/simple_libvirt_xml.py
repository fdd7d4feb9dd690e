#!/usr/bin/env python3
"""A LIBVIRT_XML_SCRIPT of the project's own, following the documented contract
of HTCondor's stock libvirt_simple_script.awk (spec 4.9), for the tests.

stdin: the job ad, one ``Name = value`` line per attribute; every ``"`` is
removed, the first word is the name and the rest (after ``=``) the value.
stdout: one domain, built the way the stock script builds it:

* the type from JobVMType (``xen`` or ``kvm``, else exit 255);
* memory JobVMMemory x 1024, else RequestMemory x 1024; vCPUs JobVM_VCPUS,
  else RequestCpus; always ``<cpu mode='host-passthrough'/>``;
* ``<features><acpi/><apic/><pae/></features>``, poweroff destroys, a pty console;
* a NIC when JobVMNetworking is true (``nat``: the ``default`` network; ``user``;
  ``bridge``), with the MAC when JobVM_MACADDR is set, model virtio;
* the disks re-parsed from VMPARAM_vm_Disk (``file:device:perm[:format]``): a
  file whose name contains ``iso`` is a CD-ROM, ``<driver>`` only with four
  fields on KVM, relative files are under VM_WORKING_DIR, ``<readonly/>`` iff
  the permission is exactly ``r``.

With ``--ignore-disk-list IMAGE`` it attaches IMAGE writable as vda instead
of what VMPARAM_vm_Disk says - a script that bypasses vmgahp's overlays.
ARGV[1] (the stock script's debug log) is accepted and ignored.
"""

import sys
from xml.sax.saxutils import escape, quoteattr


def main() -> int:
    attrs = {}
    for line in sys.stdin:
        words = line.replace('"', "").split()
        if len(words) >= 2 and words[1] == "=":
            attrs[words[0]] = " ".join(words[2:])
    kind = attrs.get("JobVMType", "")
    if "xen" in kind:
        domain = "xen"
    elif "kvm" in kind:
        domain = "kvm"
    else:
        print(f"Unknown VM type: {kind}", file=sys.stderr)
        return 255
    memory = attrs.get("JobVMMemory") or attrs.get("RequestMemory") or "0"
    vcpus = attrs.get("JobVM_VCPUS") or attrs.get("RequestCpus") or "1"
    out = [f"<domain type='{domain}'>", f"<name>{escape(attrs.get('VMPARAM_VM_NAME', ''))}</name>",
           f"<memory>{int(memory) * 1024}</memory>", f"<vcpu>{int(vcpus)}</vcpu>",
           "<cpu mode='host-passthrough'/>", f"<os><type>{'linux' if domain == 'xen' else 'hvm'}</type></os>",
           "<features><acpi/><apic/><pae/></features>",
           "<on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>restart</on_crash>",
           "<devices>", "<console type='pty'><source path='/dev/ptmx'/></console>"]
    if attrs.get("JobVMNetworking") == "true":
        net = attrs.get("JobVMNetworkingType", "").lower()
        mac = attrs.get("JobVM_MACADDR", "")
        mac_el = f"<mac address={quoteattr(mac)}/>" if mac else ""
        if "nat" in net:
            out.append(f"<interface type='network'><source network='default'/>{mac_el}"
                       "<model type='virtio'/></interface>")
        elif "user" in net:
            out.append(f"<interface type='user'><model type='virtio'/>{mac_el}</interface>")
        elif "bridge" in net:
            bridge = attrs.get("VMPARAM_Bridge_Interface", "")
            source = f"<source bridge={quoteattr(bridge)}/>" if bridge else ""
            out.append(f"<interface type='bridge'>{source}{mac_el}<model type='virtio'/></interface>")
    disks = attrs.get("VMPARAM_vm_Disk", "")
    if "--ignore-disk-list" in sys.argv:
        disks = sys.argv[sys.argv.index("--ignore-disk-list") + 1] + ":vda:w:raw"
    for item in disks.split(","):
        fields = [f.strip() for f in item.strip().split(":")]
        if len(fields) < 3:
            continue
        name, device, perm = fields[:3]
        path = name if name.startswith("/") else f"{attrs.get('VM_WORKING_DIR', '')}/{name}"
        out.append(f"<disk type='file' device='{'cdrom' if 'iso' in name else 'disk'}'>")
        if len(fields) == 4 and domain == "kvm":
            out.append(f"<driver name='qemu' type={quoteattr(fields[3])}/>")
        out.append(f"<source file={quoteattr(path)}/><target dev={quoteattr(device)}/>")
        if perm == "r":
            out.append("<readonly/>")
        out.append("</disk>")
    out += ["</devices>", "</domain>"]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
