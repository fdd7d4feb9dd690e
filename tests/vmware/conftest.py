"""Fixtures for the VMware vSphere layer: the simulator (vcsim_fixture.py), clients of
it, and ``job``: a fresh datastore folder of its own on the shared vCenter simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from gahp_rig import client, rig, scratch  # noqa: F401 - the gahp tests' fixtures, visible to every module here
from vcsim_fixture import *  # noqa: F401,F403
from vcsim_fixture import Vcsim
from vsphere_rig import POOL, Job, datastore_dir, new_job  # noqa: F401 - fixtures' helpers

from vmgahp.drivers.vmware.errors import Secret
from vmgahp.drivers.vmware.vsphere import VSphere


@pytest.fixture
def connect() -> Iterator[Callable[..., VSphere]]:
    """``connect(sim, **kwargs)``: a logged-in client (CA file unless told otherwise)."""
    clients: list[VSphere] = []

    def make(sim: Vcsim, **kwargs: Any) -> VSphere:
        if "thumbprint" not in kwargs:
            kwargs.setdefault("ca_file", str(sim.ca_file))
        kwargs.setdefault("timeout", 20.0)
        made = VSphere.connect(sim.host, sim.user, Secret(sim.password), port=sim.port, **kwargs)
        clients.append(made)
        return made

    yield make
    for made in clients:
        made.close()


@pytest.fixture
def job(vcsim: Vcsim, connect: Callable[..., VSphere], tmp_path: Path) -> Job:
    return new_job(connect(vcsim), tmp_path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without pyVmomi (the ``vmware`` extra) the simulator tests are skipped, not failed."""
    import importlib.util

    if importlib.util.find_spec("pyVmomi") is not None:
        return
    skip = pytest.mark.skip(reason="pyVmomi is not installed (pip install 'vmgahp[vmware]')")
    for item in items:
        if item.get_closest_marker("vcsim") is not None:
            item.add_marker(skip)
