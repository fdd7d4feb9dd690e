#!/usr/bin/env bash
# Install everything vmgahp needs on a fresh Debian 12 machine (run as root):
# Debian packages (libvirt + QEMU, image tools, Python with venv and a C
# compiler for libvirt-python), the libvirt-qemu user, /var/log/libvirt and a
# qemu.conf fit for running without systemd, a .venv in the checkout with
# vmgahp installed, the tiny test guest and the vSphere API simulator (built
# from Debian's govmomi source). Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
TOP=$(pwd)

APT_PACKAGES=(
  qemu-system-x86 qemu-utils
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config
  syslinux mtools dosfstools e2fsprogs libxml2-utils zstd ovmf
  python3 python3-venv python3-dev gcc
  golang-go golang-github-vmware-govmomi-dev patch openssl
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  timeout 600 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 1200 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# libvirt's QEMU driver refuses to start without Debian's compiled-in user.
getent group kvm >/dev/null || groupadd -r kvm
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
getent passwd libvirt-qemu >/dev/null || \
  useradd -r -g libvirt-qemu -G kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu

# libvirt-daemon-system (not installed: it pulls in polkitd, iptables and init
# scripts) would create this; without a journal, `libvirtd -d` logs to
# /var/log/libvirt/libvirtd.log and refuses to start when it cannot open it.
mkdir -p /var/log/libvirt

# Without systemd there is no virtlogd, and the tests run QEMU as root with
# files in scratch directories: keep the settings in a marked block.
QEMU_CONF=/etc/libvirt/qemu.conf
MARK="# vmgahp test settings"
mkdir -p /etc/libvirt
if ! grep -qF "$MARK" "$QEMU_CONF" 2>/dev/null; then
  [ -f "$QEMU_CONF" ] && cp -n "$QEMU_CONF" "$QEMU_CONF.before-vmgahp"
  cat >> "$QEMU_CONF" <<CONF
$MARK
user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
stdio_handler = "file"
CONF
fi

PY=${PYTHON:-python3}
# (pip, not python: a venv made before python3-venv was installed has no pip)
[ -x "$TOP/.venv/bin/pip" ] || "$PY" -m venv "$TOP/.venv"
"$TOP/.venv/bin/pip" install -q --disable-pip-version-check -e "$TOP[test]"
bash "$TOP/tests/guest/make-tiny-guest.sh"  # the tiny test guest, into .cache/tiny-guest (cached)
bash "$TOP/scripts/build-vcsim.sh"          # the vSphere simulator, into .cache/vcsim (cached)
echo "setup: done ($TOP/.venv/bin/vmgahp)"
