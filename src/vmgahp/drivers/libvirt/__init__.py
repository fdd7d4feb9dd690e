"""KVM and Xen through libvirt-python."""
