"""The process tier (see tests/tier.py)."""

import pytest

from tier import mark_folder


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_folder(__file__, items, pytest.mark.process)
