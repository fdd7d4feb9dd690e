"""The test tiers are folders; each folder's conftest.py marks its tests with
the tier's marker through :func:`mark_folder` (``-m unit``, ``-m "not real"``).

* ``unit/``    - in-process: the protocol core, the job model, the VM layer on the
  fake driver, vmgahp run's submit handling; no process, no hypervisor;
* ``driver/``  - the libvirt driver in-process on libvirt's test hypervisor,
  domain XML against libvirt's schema, checkpoint image files;
* ``process/`` - the daemon (or ``vmgahp run``) as a process over pipes:
  transcripts, fuzzing, start-up, endings, the wheel; a few of its tests need
  a real libvirtd and carry ``libvirtd`` as well;
* ``real/``    - real QEMU guests under a real libvirtd (also marked ``libvirtd``);
* ``conformance/`` - the driver contract against every driver;
* ``vmware/``  - the VMware driver against the vSphere simulator (``vcsim``);
* ``seed/``    - one test per item of the talk that specified vmgahp (``seed``).
"""

from __future__ import annotations

from pathlib import Path

import pytest


def mark_folder(conftest_file: str, items: list[pytest.Item], *markers: pytest.MarkDecorator) -> None:
    folder = Path(conftest_file).resolve().parent
    for item in items:
        if folder in item.path.resolve().parents:
            for marker in markers:
                item.add_marker(marker)
