"""The VMware driver in-process: knobs, the job ad's VMware part, what STATUS
learns (MAC, IP, CPU time), and the registry with and without pyVmomi."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from vmgahp.drivers import registry
from vmgahp.drivers.vmware import job_ad
from vmgahp.drivers.vmware.settings import VMwareSettings
from vmgahp.errors import GahpError
from vmgahp.protocol import tokens
from vmgahp.settings import ConfigError, Settings

TOP = Path(__file__).resolve().parents[2]


def test_knobs_and_their_defaults(tmp_path):
    cfg = VMwareSettings.from_knobs({"VMWARE_VSPHERE_URL": '"https://vc.example.org/sdk"', "VMWARE_USER": "svc"})
    assert (cfg.host, cfg.port, cfg.tls_verify, cfg.call_timeout) == ("vc.example.org", 443, True, 120.0)
    assert cfg.missing() == ["VMWARE_PASSWORD_FILE"]
    cfg = VMwareSettings.from_knobs({"VMWARE_VSPHERE_URL": "https://10.0.0.5:8443/sdk", "VMWARE_TLS_VERIFY": "false",
                                     "VMWARE_CALL_TIMEOUT": "-3", "VMWARE_PERL": "perl"})  # fmt: skip
    assert (cfg.port, cfg.tls_verify, cfg.call_timeout) == (8443, False, 120.0)
    assert any("VMWARE_CALL_TIMEOUT" in w for w in cfg.warnings) and any("VMWARE_PERL is ignored" in w
                                                                         for w in cfg.warnings)
    with pytest.raises(ConfigError, match="must be https"):
        VMwareSettings.from_knobs({"VMWARE_VSPHERE_URL": "http://vc/sdk"})


def test_password_file_errors_name_the_file_never_its_content(tmp_path):
    secret_file = tmp_path / "pw"
    secret_file.write_text("s3cret-value\nsecond line\n")
    cfg = VMwareSettings(password_file=str(secret_file))
    assert cfg.password().reveal() == "s3cret-value" and repr(cfg.password()) == "<secret>"
    (tmp_path / "empty").write_text("\n")
    for path, phrase in ((tmp_path / "missing", "cannot read it"), (tmp_path / "empty", "is empty")):
        with pytest.raises(ConfigError, match=phrase) as caught:
            VMwareSettings(password_file=str(path)).password()
        assert str(path) in str(caught.value)


def test_local_settings_between_the_markers(tmp_path):
    path = tmp_path / "local"
    path.write_text('a = "1"\n### Start local parameters ###\nb = "2"\n# c = "3"\nd=4\n'
                    "### End local parameters ###\ne = \"5\"\n")
    assert VMwareSettings(local_settings_file=str(path)).local_settings() == {"b": "2", "d": "4"}


def test_mac_must_be_in_vmwares_manual_range():
    assert job_ad.check_mac("00:50:56:3F:FF:FF") == "00:50:56:3f:ff:ff"
    for mac in ("00:50:56:40:00:00", "52:54:00:12:34:56", "00:50:56:00:00"):
        with pytest.raises(GahpError) as caught:
            job_ad.check_mac(mac)
        assert caught.value.token == tokens.CRITICAL


def test_vmx_disks_and_extents():
    text = 'scsi0:0.fileName = "base.vmdk"\nide1:0.fileName = "cd.iso"\nSATA0:1.FILENAME = "two.vmdk"\n'
    assert job_ad.vmx_disks(text) == ["base.vmdk", "two.vmdk"]
    assert job_ad._EXTENT.search("base-flat.vmdk") and job_ad._EXTENT.search("big-s001.vmdk")
    assert not job_ad._EXTENT.search("base.vmdk")


def test_the_driver_declares_vmware_and_loads_no_pyvmomi():
    code = ("import sys; from vmgahp.drivers import registry; "
            "h = registry.load_hypervisor('vmware', __import__('vmgahp.settings', fromlist=['x']).Settings(1024)); "
            "print(registry.known_types(), 'pyVmomi' in sys.modules)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "('xen', 'kvm', 'vmware') False"
    names = [k.name for k in registry.knobs_for("vmware")]
    assert {"VMWARE_VSPHERE_URL", "VMWARE_TLS_VERIFY", "VMWARE_LOCAL_SETTINGS_FILE"} <= set(names)


def test_without_pyvmomi_vmware_is_not_offered(tmp_path):
    """A Python whose site-packages hide pyVmomi: SUPPORT_VMS has no vmware, the probe refuses it."""
    site = Path(sysconfig.get_paths()["purelib"])
    shadow = tmp_path / "site"
    shadow.mkdir()
    for entry in site.iterdir():
        if not entry.name.lower().startswith(("pyvmomi", "vmware", "pyvim")):
            (shadow / entry.name).symlink_to(entry)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("_CONDOR_", "VMGAHP_", "CONDOR_CONFIG"))}
    env.update(PYTHONPATH=f"{TOP / 'src'}{os.pathsep}{shadow}", CONDOR_CONFIG="/dev/null", _CONDOR_VM_MEMORY="512",
               VMGAHP_USER_UID="1000")  # fmt: skip
    code = "from vmgahp.drivers import registry; print(registry.available_types())"
    done = subprocess.run([sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "('xen', 'kvm')", done.stderr
    probe = subprocess.run([sys.executable, "-S", "-m", "vmgahp", "-f", "-M", "0", "vmtype", "vmware"], env=env,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert probe.returncode == 1 and probe.stdout == ""
    assert "vmware backend's library is not installed" in probe.stderr


@pytest.mark.vcsim
def test_status_knows_mac_and_ip_and_integrates_cpu(vcsim, scratch, client):
    """DomainInfo carries MAC and IP (vcsim: SET.guest.ipAddress in extraConfig) for STATUS."""
    from gahp_rig import Rig

    from vmgahp.drivers.vmware.driver import VMwareHypervisor
    from vmgahp.job.jobad import JobAd
    from vmgahp.job.model import build_job

    rig = Rig(vcsim, scratch)
    local = scratch / "local"
    local.write_text('### Start local parameters ###\nSET.guest.ipAddress = "10.9.8.7"\n### End local parameters ###\n')
    knobs = {k: v for k, v in rig.knobs(VMWARE_LOCAL_SETTINGS_FILE=str(local)).items() if k.startswith("VMWARE_")}
    settings = Settings(vm_memory=1024, networking=True, networking_types=("nat",), networking_default_type="nat",
                        driver_knobs=knobs)  # fmt: skip
    hv = VMwareHypervisor(settings, "vmware")
    try:
        job = build_job(JobAd(rig.ad()), settings, hv.network_plan(), None, hv)
        domain = hv.create(job)
        try:
            info = domain.info()
            assert (info.mac, info.ip, info.memory_kib, info.vcpus) == ("00:50:56:01:02:03", "10.9.8.7", 262144, 2)
            assert domain.pid() == 0
            # vcsim's quick stats are zero: CPU time is integrated from them and stays 0;
            # with a host core of 2000 MHz, 1000 MHz for 2 s is 1 s of CPU.
            assert info.cpu_time_ns == 0
            domain._core_mhz, domain._sampled = 2000, domain._sampled - 2.0
            assert abs(domain._integrate(1000, hv.deadline()) - 1e9) < 5e7
        finally:
            domain.destroy()
        assert hv.lookup(job.name) is None and not list(rig.work.glob("base-vmgahp*"))  # destroy: no output
    finally:
        hv.close()

