"""The VMware backend's knobs (declared in ``drivers/vmware/__init__``).

Read once per gahp from ``Settings.driver_knobs``. The password is read from
``VMWARE_PASSWORD_FILE`` into a :class:`Secret` at the first connection, never
kept as text; errors name the file, never its content. ``VMWARE_PERL`` and
``VMWARE_SCRIPT`` (the old Perl backend's) are ignored with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import urlsplit

from vmgahp.drivers.vmware.errors import Secret
from vmgahp.settings import ConfigError, KnobReader

DEFAULT_CALL_TIMEOUT = 120
START_MARKER = "### Start local parameters ###"  # VMWARE_LOCAL_SETTINGS_FILE, as the C++ reads it
END_MARKER = "### End local parameters ###"
OBSOLETE = ("VMWARE_PERL", "VMWARE_SCRIPT")


@dataclass(frozen=True)
class VMwareSettings:
    url: str = ""
    host: str = ""
    port: int = 443
    user: str = ""
    password_file: str = ""
    tls_verify: bool = True
    ca_file: str = ""
    thumbprint: str = ""
    datacenter: str = ""
    datastore: str = ""
    resource_pool: str = ""
    esx_host: str = ""
    vm_folder: str = ""
    nat_portgroup: str = ""
    bridge_portgroup: str = ""
    call_timeout: float = DEFAULT_CALL_TIMEOUT
    local_settings_file: str = ""
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_knobs(cls, knobs: Mapping[str, str]) -> VMwareSettings:
        read = KnobReader(knobs.get)
        url = read.unquoted("VMWARE_VSPHERE_URL")
        host, port = "", 443
        if url:
            parts = urlsplit(url if "//" in url else f"https://{url}")
            if parts.scheme != "https" or not parts.hostname:
                raise ConfigError(f"VMWARE_VSPHERE_URL must be https://HOST[:PORT]/sdk (got {url!r})")
            try:
                host, port = parts.hostname, parts.port or 443
            except ValueError as exc:
                raise ConfigError(f"VMWARE_VSPHERE_URL {url!r}: {exc}") from exc
        timeout = read.integer("VMWARE_CALL_TIMEOUT", DEFAULT_CALL_TIMEOUT)
        if timeout <= 0:
            read.warnings.append(f"VMWARE_CALL_TIMEOUT = {timeout} is not positive; using {DEFAULT_CALL_TIMEOUT}")
            timeout = DEFAULT_CALL_TIMEOUT
        warnings = list(read.warnings)
        for name in OBSOLETE:
            if knobs.get(name):
                warnings.append(f"{name} is ignored: vmgahp drives vSphere through its API, not a script")
        return cls(
            url=url, host=host, port=port, user=read.unquoted("VMWARE_USER"),
            password_file=read.unquoted("VMWARE_PASSWORD_FILE"),
            tls_verify=read.boolean("VMWARE_TLS_VERIFY", True),
            ca_file=read.unquoted("VMWARE_CA_FILE"), thumbprint=read.unquoted("VMWARE_THUMBPRINT"),
            datacenter=read.unquoted("VMWARE_DATACENTER"), datastore=read.unquoted("VMWARE_DATASTORE"),
            resource_pool=read.unquoted("VMWARE_RESOURCE_POOL"), esx_host=read.unquoted("VMWARE_HOST"),
            vm_folder=read.unquoted("VMWARE_VM_FOLDER"), nat_portgroup=read.unquoted("VMWARE_NAT_PORTGROUP"),
            bridge_portgroup=read.unquoted("VMWARE_BRIDGE_PORTGROUP"), call_timeout=float(timeout),
            local_settings_file=read.unquoted("VMWARE_LOCAL_SETTINGS_FILE"), warnings=tuple(warnings),
        )

    def missing(self) -> list[str]:
        """The knobs a connection needs that are not set."""
        return [name for name, value in (("VMWARE_VSPHERE_URL", self.url), ("VMWARE_USER", self.user),
                                         ("VMWARE_PASSWORD_FILE", self.password_file)) if not value]

    def password(self) -> Secret:
        """The password file's first line (a trailing newline is not part of it)."""
        try:
            with open(self.password_file, encoding="utf-8") as handle:
                line = handle.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"VMWARE_PASSWORD_FILE {self.password_file}: cannot read it "
                              f"({getattr(exc, 'strerror', None) or type(exc).__name__})") from None
        if not line:
            raise ConfigError(f"VMWARE_PASSWORD_FILE {self.password_file} is empty")
        return Secret(line)

    def local_settings(self) -> dict[str, str]:
        """``key = "value"`` lines between the markers of VMWARE_LOCAL_SETTINGS_FILE,
        as extraConfig; other lines outside them are ignored, as the C++ did."""
        if not self.local_settings_file:
            return {}
        try:
            with open(self.local_settings_file, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"VMWARE_LOCAL_SETTINGS_FILE {self.local_settings_file}: {exc}") from None
        found: dict[str, str] = {}
        inside = False
        for line in lines:
            text = line.strip()
            if text == START_MARKER:
                inside = True
            elif text == END_MARKER:
                inside = False
            elif inside and "=" in text and not text.startswith("#"):
                key, _, value = text.partition("=")
                found[key.strip()] = value.strip().strip('"')
        return found
