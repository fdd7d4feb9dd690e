"""Reaching vSphere from this host: the login and the placement, under a deadline.

:func:`connect` is what the host check (``-M 0`` probe, and the start-up check
of server mode) and the first START do: read the password file, log in with
the configured trust (always an explicit SSL context: pyVmomi would turn
verification off for 127.0.0.1/localhost without one), and resolve the
placement knobs - an unset one means "the only one there is". Failures are
``HostCheckError``/``HostError`` texts that name the server, the user and the
cause, never the password.
"""

from __future__ import annotations

from typing import Callable

from vmgahp import log
from vmgahp.drivers.base import HostCheckError
from vmgahp.drivers.vmware.errors import VSphereError, scrub
from vmgahp.drivers.vmware.placement import Placement
from vmgahp.drivers.vmware.session import Session
from vmgahp.drivers.vmware.settings import VMwareSettings
from vmgahp.drivers.vmware.transport import IO_TIMEOUT, Deadline, Trust
from vmgahp.drivers.vmware.vsphere import VSphere
from vmgahp.settings import ConfigError

CHECK_SECONDS = 3.0  # the probe's own budget: the startd kills it after 5 s (cli.PROBE_DEADLINE 3.5)


def trust_for(cfg: VMwareSettings) -> Trust:
    if not cfg.tls_verify:
        log.get().warning("vsphere_tls_unverified", host=cfg.host,
                          detail="VMWARE_TLS_VERIFY = false: the server's certificate is not checked")
    return Trust(ca_file=cfg.ca_file or None, thumbprint=cfg.thumbprint or None, verify=cfg.tls_verify)


def connect(cfg: VMwareSettings, deadline: Deadline) -> tuple[VSphere, Placement]:
    """A logged-in client and its placement; VSphereError or ConfigError."""
    missing = cfg.missing()
    if missing:
        raise ConfigError(f"{', '.join(missing)} not set: vmgahp cannot reach vSphere")
    password = cfg.password()
    session = Session(cfg.host, cfg.user, password, port=cfg.port, trust=trust_for(cfg),
                      io_timeout=min(IO_TIMEOUT, cfg.call_timeout))  # fmt: skip
    try:
        session.open(deadline)
        client = VSphere(session, default_timeout=cfg.call_timeout)
        where = client.placement(datacenter=cfg.datacenter or None, datastore=cfg.datastore or None,
                                 pool=cfg.resource_pool or None, host=cfg.esx_host or None,
                                 folder=cfg.vm_folder or None, timeout=deadline)  # fmt: skip
    except BaseException:
        session.close()
        raise
    log.get().info("vsphere_placement", host=cfg.host, datacenter=where.dc_path, datastore=where.datastore_name)
    return client, where


def check(cfg: VMwareSettings, seconds: float = CHECK_SECONDS) -> tuple[VSphere, Placement]:
    """:func:`connect` as a host check: HostCheckError with a clean text."""
    try:
        return connect(cfg, Deadline(seconds))
    except (VSphereError, ConfigError) as exc:
        # Scrubbed again: a server's fault text could echo anything.
        text = scrub(str(exc), _secret_or_none(cfg))
        raise HostCheckError(f"vSphere at {cfg.url or '(VMWARE_VSPHERE_URL unset)'}: {text}") from None


def _secret_or_none(cfg: VMwareSettings):  # -> Secret | None
    try:
        return cfg.password() if cfg.password_file else None
    except (ConfigError, ValueError):
        return None


def local_defaults(vm_type: str, is_set: Callable[[str], bool]) -> list[tuple[str, str, str]]:
    """``vmgahp run`` on a workstation: vSphere's address and account cannot be guessed."""
    return []
