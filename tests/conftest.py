"""Shared pytest setup: a deadline on every test (tests/deadline.py), the libvirtd session
fixture (tests/libvirtd_fixture.py), the tiny guest (tests/guest_fixture.py) and a private
libvirtd for fault tests (tests/private_libvirtd.py)."""

from deadline import pytest_runtest_protocol  # noqa: F401 - the hook, for pytest
from guest_fixture import *  # noqa: F401,F403 - its fixtures, for pytest
from libvirtd_fixture import *  # noqa: F401,F403 - its fixtures, for pytest
from private_libvirtd import *  # noqa: F401,F403 - its fixtures, for pytest
