"""The real tier (see tests/tier.py)."""

import pytest

from tier import mark_folder


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_folder(__file__, items, pytest.mark.real, pytest.mark.libvirtd)


from real_guest import domains, gahps, scratch  # noqa: E402,F401 - the real-guest fixtures, for every module here
