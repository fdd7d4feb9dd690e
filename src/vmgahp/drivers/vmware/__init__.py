"""VMware vSphere layer (pyVmomi): sessions, placement, datastore files, VMs, checkpoints.

Importing this package costs nothing: pyVmomi is imported inside the functions that
use it. The entry point is ``vsphere.VSphere``; errors are in ``errors``. Against
what it is tested and what that proves: README.md beside this file.
"""
