"""VMware vSphere through pyVmomi: the declaration the registry reads.

Importing this package costs nothing: pyVmomi is imported inside the functions
that use it, at the first START or probe of a vmware gahp. The driver is
:mod:`.driver` (on the vSphere layer :mod:`.vsphere`); what it is tested
against and what that proves: README.md beside this file.
"""

from vmgahp.drivers.registry import DriverInfo, Knob

DRIVER = DriverInfo(
    vm_types=("vmware",),
    requires="pyVmomi",
    hypervisor="vmgahp.drivers.vmware.driver:VMwareHypervisor",
    knobs=(
        Knob("VMWARE_VSPHERE_URL"), Knob("VMWARE_USER"), Knob("VMWARE_PASSWORD_FILE"),
        Knob("VMWARE_TLS_VERIFY", "boolean"), Knob("VMWARE_CA_FILE"), Knob("VMWARE_THUMBPRINT"),
        Knob("VMWARE_DATACENTER"), Knob("VMWARE_DATASTORE"), Knob("VMWARE_RESOURCE_POOL"), Knob("VMWARE_HOST"),
        Knob("VMWARE_VM_FOLDER"), Knob("VMWARE_NAT_PORTGROUP"), Knob("VMWARE_BRIDGE_PORTGROUP"),
        Knob("VMWARE_CALL_TIMEOUT", "integer"), Knob("VMWARE_LOCAL_SETTINGS_FILE"),
        Knob("VMWARE_PERL"), Knob("VMWARE_SCRIPT"),  # read only to say they are ignored
    ),
    host="vmgahp.drivers.vmware.host",
)
