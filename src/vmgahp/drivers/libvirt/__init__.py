"""KVM and Xen through libvirt-python: the declaration the registry reads.

Importing this package is cheap (no libvirt): the driver itself is
:mod:`vmgahp.drivers.libvirt.driver`, loaded at the first START or probe.
"""

from vmgahp.drivers.registry import DriverInfo, Knob

DRIVER = DriverInfo(
    vm_types=("xen", "kvm"),  # the C++ answers "S xen kvm"
    requires="libvirt",
    hypervisor="vmgahp.drivers.libvirt.driver:LibvirtHypervisor",
    knobs=(
        Knob("VM_KVM_LIBVIRT_URI"), Knob("VM_XEN_LIBVIRT_URI"), Knob("VM_KVM_DOMAIN_TYPE"),
        Knob("LIBVIRT_XML_SCRIPT"), Knob("LIBVIRT_XML_SCRIPT_ARGS"), Knob("XEN_BOOTLOADER"),
        Knob("XEN_ALLOW_HARDWARE_VT_SUSPEND", "boolean"), Knob("VM_SNAPSHOT_DISK", "boolean"),
        Knob("VM_CHECKPOINT_COMPRESSION", "boolean"), Knob("XEN_BRIDGE_SCRIPT"), Knob("VM_BRIDGE_SCRIPT"),
        Knob("VM_UEFI_LOADER"), Knob("VM_UEFI_NVRAM_TEMPLATE"),
    ),
    host="vmgahp.drivers.libvirt.host",
)
