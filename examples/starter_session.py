"""Drive vmgahp the way condor_starter does, and show the conversation.

    .venv/bin/python examples/starter_session.py [--uri test:///default]

It spawns ``vmgahp -f -M 3`` in a scratch directory, does the starter's
handshake, sends a job ad, starts the VM, polls its status, hard-suspends and
resumes it, checkpoints it, stops it and quits - printing every line that
crosses the pipes (``>`` to the gahp, ``<`` from it). With the default URI it
runs on libvirt's built-in test hypervisor, so it needs no libvirtd.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

VMGAHP = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "vmgahp"


class Starter:
    def __init__(self, work: Path, uri: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("_CONDOR_", "VMGAHP_"))}
        env.update(
            CONDOR_CONFIG="/dev/null",
            _CONDOR_VM_MEMORY="1024",
            _CONDOR_VM_KVM_LIBVIRT_URI=uri,
            _CONDOR_VM_KVM_DOMAIN_TYPE="qemu",
            _CONDOR_VM_GAHP_LOG=str(work / "vmgahp.log"),
            VMGAHP_VMTYPE="kvm",
            VMGAHP_WORKING_DIR=str(work),
            VMGAHP_USER_UID=str(os.getuid() or 1000),
            VMGAHP_USER_GID=str(os.getgid() or 1000),
        )
        self.proc = subprocess.Popen(
            [str(VMGAHP), "-f", "-M", "3"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=env, cwd=work, text=True, bufsize=1,
        )
        self.next_id = 1

    def read(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("vmgahp closed its stdout")
        print(f"< {line.rstrip()}")
        return line.rstrip("\n")

    def send(self, line: str, quiet: bool = False) -> None:
        if not quiet:
            print(f"> {line}")
        self.proc.stdin.write(line + "\r\n")
        self.proc.stdin.flush()

    def command(self, line: str) -> str:
        self.send(line)
        reply = self.read()
        while reply == "R":  # an R may arrive anywhere; the starter drops it
            reply = self.read()
        return reply

    def request(self, name: str, arg: str) -> list[str]:
        """A VM command: S at once, then the R that announces its result, then RESULTS."""
        self.next_id += 1
        request_id = self.next_id
        self.send(f"{name} {request_id} {arg}")
        assert self.read() == "S"
        assert self.read() == "R"  # one R per batch of new results
        count = int(self.command("RESULTS").split()[1])
        lines = [self.read().split(" ", 2) for _ in range(count)]
        return next(words for words in lines if words[0] == str(request_id))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", default="test:///default")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vmgahp-example-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        disk = work / "disk.img"
        disk.write_bytes(b"\0" * (1 << 20))
        if os.getuid() == 0:  # vmgahp checks the disk as the job's user
            os.chown(disk, 1000, 1000)
        starter = Starter(work, args.uri)
        starter.read()  # banner
        for line in ("COMMANDS", "SUPPORT_VMS", "ASYNC_MODE_ON"):
            starter.command(line)
        starter.command("CLASSAD")
        ad = [
            f'VM_WORKING_DIR = "{work}"', "ClusterId = 42", "ProcId = 0", 'User = "alice@example.org"',
            'JobVMType = "kvm"', "JobVMMemory = 128", "JobVMCheckpoint = false",
            'VMPARAM_vm_Disk = "disk.img:vda:w:raw"',
        ]
        for line in ad:
            starter.send(line)
        starter.command("CLASSAD_END")
        vm_id = starter.request("CONDOR_VM_START", "kvm")[2]
        starter.request("CONDOR_VM_STATUS", vm_id)
        starter.request("CONDOR_VM_SUSPEND", vm_id)
        starter.request("CONDOR_VM_STATUS", vm_id)
        starter.request("CONDOR_VM_RESUME", vm_id)
        starter.request("CONDOR_VM_STATUS", vm_id)
        starter.request("CONDOR_VM_STOP", vm_id)
        starter.request("CONDOR_VM_STATUS", vm_id)
        starter.command("QUIT")
        code = starter.proc.wait(timeout=30)
        print(f"vmgahp exited with status {code}")
        return code


if __name__ == "__main__":
    sys.exit(main())
