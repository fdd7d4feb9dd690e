"""The seed tier: the talk's items (see tests/tier.py and the README's table)."""

import pytest

from tier import mark_folder


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_folder(__file__, items, pytest.mark.seed)
