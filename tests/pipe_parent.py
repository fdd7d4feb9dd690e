"""A stand-in for condor_starter: run a command on pipes this process holds, and relay them.

    python pipe_parent.py PIDFILE COMMAND [ARG...]

The child's stdin and stdout are pipes owned by this process (as the starter owns
the gahp's); bytes are copied from this process's stdin to the child and from the
child to this process's stdout. The child's pid goes to PIDFILE. A test SIGKILLs
this process to play a starter that dies: the child then sees EOF on stdin and a
broken stdout, and nothing else (no signal reaches it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading


def _copy(src: int, dst: int, on_eof=None) -> None:
    try:
        while True:
            chunk = os.read(src, 65536)
            if not chunk:
                break
            while chunk:
                chunk = chunk[os.write(dst, chunk):]
    except OSError:
        pass
    if on_eof is not None:
        on_eof()


def main() -> int:
    pid_file, command = sys.argv[1], sys.argv[2:]
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    tmp = pid_file + ".tmp"
    with open(tmp, "w") as handle:
        handle.write(f"{child.pid}\n")
    os.replace(tmp, pid_file)
    to_child = threading.Thread(
        target=_copy, args=(0, child.stdin.fileno(), child.stdin.close), daemon=True
    )
    to_child.start()
    _copy(child.stdout.fileno(), 1)
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
