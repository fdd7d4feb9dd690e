"""Shared pytest setup: a deadline on every test (tests/deadline.py), the libvirtd session
fixture (tests/libvirtd_fixture.py), the tiny guest (tests/guest_fixture.py), a private
libvirtd for fault tests (tests/private_libvirtd.py) and the vSphere simulator
(tests/vcsim_fixture.py: tests/vmware and the conformance suite's vmware rig share its sessions)."""

from deadline import pytest_runtest_protocol  # noqa: F401 - the hook, for pytest
from guest_fixture import *  # noqa: F401,F403 - its fixtures, for pytest
from libvirtd_fixture import *  # noqa: F401,F403 - its fixtures, for pytest
from private_libvirtd import *  # noqa: F401,F403 - its fixtures, for pytest
from vcsim_fixture import *  # noqa: F401,F403 - its fixtures, for pytest
