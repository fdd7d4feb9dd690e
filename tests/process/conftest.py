"""The process tier (see tests/tier.py), and its shared scratch directory."""

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from tier import mark_folder


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_folder(__file__, items, pytest.mark.process)


@pytest.fixture
def work() -> Iterator[Path]:
    """A scratch dir the job user (uid 1000) can reach, as on an execute node,
    with the job's 1 MiB disk."""
    path = Path(tempfile.mkdtemp(prefix="vmgahp-test-"))
    os.chmod(path, 0o755)
    disk = path / "disk.img"
    with open(disk, "wb") as handle:
        handle.truncate(1 << 20)
    os.chown(disk, 1000, 1000)
    yield path
    shutil.rmtree(path, ignore_errors=True)
