"""A stand-in that blocks as the C++ gahp does, with vmgahp doing the work.

    python bench/blocking_standin.py -f -M 3     (argv as the starter gives it)

The C++ gahp handles one line at a time: after a CONDOR_VM_* request's ``S``
it does the hypervisor work itself and reads nothing more until it is done,
so a RESULTS the starter wrote meanwhile is read only then and carries the
result. This relay gives vmgahp that behaviour: it passes the starter's lines
on, but after a request it stops reading them until vmgahp's ``R`` says the
result is in. Everything vmgahp writes is passed back at once. Not a test
helper and not shipped: bench/vm_bench.py's baseline for "no later than a
blocking gahp".
"""

from __future__ import annotations

import os
import select
import subprocess
import sys


def main() -> int:
    child = subprocess.Popen([sys.executable, "-m", "vmgahp", *sys.argv[1:]], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, bufsize=0)
    assert child.stdin is not None and child.stdout is not None
    to_child, from_child = child.stdin.fileno(), child.stdout.fileno()
    pending_in = b""  # the starter's bytes not yet passed on
    partial_out = b""  # vmgahp's unfinished last line
    waiting = False  # a request runs: read no line from the starter
    stdin_open = True
    while True:
        while not waiting and b"\n" in pending_in:
            line, pending_in = pending_in.split(b"\n", 1)
            os.write(to_child, line + b"\n")
            waiting = line.lstrip().startswith(b"CONDOR_VM_")
        readers = [from_child] + ([0] if stdin_open and not waiting else [])
        ready, _, _ = select.select(readers, [], [])
        if 0 in ready:
            chunk = os.read(0, 65536)
            if not chunk:
                stdin_open = False
                child.stdin.close()
            pending_in += chunk
        if from_child in ready:
            chunk = os.read(from_child, 65536)
            if not chunk:
                return child.wait()
            os.write(1, chunk)
            lines = (partial_out + chunk).split(b"\n")
            partial_out = lines.pop()
            if any(line.rstrip(b"\r") == b"R" for line in lines):
                waiting = False


if __name__ == "__main__":
    raise SystemExit(main())
