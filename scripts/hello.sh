#!/usr/bin/env bash
# vmgahp's main job: run examples/hello-vm/hello.sub with `vmgahp run` on a
# real libvirtd + QEMU, exactly as condor_starter would on a pool, and print
# the answer the guest computed from its CD-ROM input. Run after setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
TOP=$(pwd)

bash tests/guest/make-tiny-guest.sh >/dev/null   # cached: instant when current

# No systemd here: start libvirtd by hand if nothing serves its socket, with
# its own pid and log file (it needs no /var/log/libvirt then), and stop it
# again (by pid) when done.
if ! .venv/bin/python -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.settimeout(2); s.connect("/run/libvirt/libvirt-sock")' 2>/dev/null; then
  D=$(mktemp -d /tmp/vmgahp-libvirtd.XXXXXX)
  LIBVIRT_LOG_OUTPUTS="3:file:$D/libvirtd.log" timeout 20 libvirtd -d -p "$D/libvirtd.pid" \
    || { echo "hello: libvirtd did not start; its log: $D/libvirtd.log" >&2; exit 1; }
  for _ in $(seq 200); do [ -S /run/libvirt/libvirt-sock ] && [ -s "$D/libvirtd.pid" ] && break; sleep 0.1; done
  STARTED_PID=$(cat "$D/libvirtd.pid")
  # Wait until it is gone: a second run must not find it still serving.
  trap 'kill "$STARTED_PID" 2>/dev/null && for _ in $(seq 100); do kill -0 "$STARTED_PID" 2>/dev/null && sleep 0.1 || break; done' EXIT
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
