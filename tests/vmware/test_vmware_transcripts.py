"""The VMware transcripts (tests/transcripts/vmware/) replayed against the daemon and vcsim.

The simulator's address, user, password file and CA file are known only when it
runs: they go in as configuration (transcript_runner option ``env``); the rest
of the configuration is the transcript's own. After the run the simulator's
datastore must hold no folder of the job's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from gahp_rig import POOL
from vsphere_rig import datastore_dir

import transcript_runner as tr

pytestmark = pytest.mark.vcsim

DIR = Path(__file__).resolve().parents[1] / "transcripts" / "vmware"
TRANSCRIPTS = sorted(DIR.glob("*.txt"))


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=[p.name for p in TRANSCRIPTS])
def test_vmware_transcript(path, vcsim, client, scratch):
    _, where = client
    password = scratch / "password"
    password.write_text(vcsim.password + "\n")
    password.chmod(0o600)
    seen: list[str] = []

    def after_run(workspace) -> None:
        seen.append(str(workspace))
        left = list(datastore_dir(where).glob("vmgahp-alice_example.org_42.0-*"))
        assert not left, f"left on the datastore: {left}"

    env = {"_CONDOR_VMWARE_VSPHERE_URL": vcsim.url, "_CONDOR_VMWARE_USER": vcsim.user,
           "_CONDOR_VMWARE_PASSWORD_FILE": str(password), "_CONDOR_VMWARE_CA_FILE": str(vcsim.ca_file)}
    result = tr.run_file(path, tr.Options(cmd=tr.default_cmd(), env=env, after_run=after_run, repoll_s=30.0))
    assert result.passed, result.report()
    assert seen and POOL
