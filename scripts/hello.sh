#!/usr/bin/env bash
# vmgahp's main job: run examples/hello-vm/hello.sub with `vmgahp run` on a
# real libvirtd + QEMU, exactly as condor_starter would on a pool, and print
# the answer the guest computed from its CD-ROM input. Run after setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
TOP=$(pwd)

bash tests/guest/make-tiny-guest.sh >/dev/null   # cached: instant when current

# No systemd here: start libvirtd by hand if nothing serves its socket, and
# stop it again (by pid) when done.
STARTED_PID=""
if ! .venv/bin/python -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.settimeout(2); s.connect("/run/libvirt/libvirt-sock")' 2>/dev/null; then
  PIDFILE=$(mktemp -u /tmp/vmgahp-libvirtd.XXXXXX.pid)
  timeout 20 libvirtd -d -p "$PIDFILE"
  for _ in $(seq 200); do [ -S /run/libvirt/libvirt-sock ] && [ -f "$PIDFILE" ] && break; sleep 0.1; done
  STARTED_PID=$(cat "$PIDFILE")
  trap 'kill "$STARTED_PID" 2>/dev/null || true' EXIT
  timeout 120 virsh -c qemu:///system version >/dev/null   # first call probes QEMU (~8 s)
fi

export CONDOR_CONFIG=/dev/null _CONDOR_VM_MEMORY=1024
export _CONDOR_VM_KVM_LIBVIRT_URI=qemu:///system
# kvm where hardware virtualization works; qemu (software emulation) otherwise.
export _CONDOR_VM_KVM_DOMAIN_TYPE=${VMGAHP_DOMAIN_TYPE:-qemu}
OUT=$(mktemp -d /tmp/hello-vm.out.XXXXXX)
.venv/bin/vmgahp run examples/hello-vm/hello.sub --output "$OUT"
echo
echo "The guest's answer (answer.txt on its disk):"
MTOOLS_SKIP_CHECK=1 mtype -i "$OUT/boot.img" ::answer.txt
