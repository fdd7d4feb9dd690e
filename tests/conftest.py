"""Shared pytest setup: the libvirtd session fixture (tests/libvirtd_fixture.py)."""

from libvirtd_fixture import *  # noqa: F401,F403
from guest_fixture import *  # noqa: F401,F403
