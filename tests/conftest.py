"""Shared pytest setup: a deadline on every test (tests/deadline.py), the libvirtd session
fixture (tests/libvirtd_fixture.py), the tiny guest (tests/guest_fixture.py), a private
libvirtd for fault tests (tests/private_libvirtd.py) and the vSphere simulator
(tests/vcsim_fixture.py: tests/vmware and the conformance suite's vmware rig share its sessions),
and a connection to libvirt's in-process test hypervisor."""

import libvirt
import pytest

from deadline import pytest_runtest_protocol  # noqa: F401 - the hook, for pytest
from guest_fixture import *  # noqa: F401,F403 - its fixtures, for pytest
from helpers import TEST_URI  # noqa: E402 - after the fixture modules, as they are imported
from libvirtd_fixture import *  # noqa: F401,F403 - its fixtures, for pytest
from private_libvirtd import *  # noqa: F401,F403 - its fixtures, for pytest
from vcsim_fixture import *  # noqa: F401,F403 - its fixtures, for pytest
from vmgahp.drivers.libvirt.connection import install_error_handler  # noqa: E402


@pytest.fixture(scope="module")
def test_conn() -> libvirt.virConnect:
    """A raw connection to ``test:///default`` (its state is shared by the whole process)."""
    install_error_handler()
    conn = libvirt.open(TEST_URI)
    yield conn
    conn.close()
