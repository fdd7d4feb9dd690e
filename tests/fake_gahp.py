"""A tiny stand-in gahp, used only by the transcript runner's self-tests.

It speaks just enough of the protocol for small transcripts: the banner,
COMMANDS, SUPPORT_VMS, VERSION, ASYNC_MODE_ON/OFF, CLASSAD blocks, RESULTS,
QUIT, and every CONDOR_VM_* command (START answers VM id 1, STATUS answers
STATUS=Stopped, the others VMGAHP_ERR_VM_NOT_FOUND). Misbehaviour is switched
on with FAKE_GAHP_FAULTS, a comma list:

  no-r             never print R
  double-r         print R for every result, not once per batch
  r-before-s       print R before the S of a VM command (allowed)
  late-results     results are queued 0.3 s after the command (allowed)
  reverse-results  RESULTS lists newest first (allowed)
  extra-line       an extra line after the COMMANDS reply
  stray-r          an R right after the SUPPORT_VMS reply
  crlf             reply lines end in CRLF
  wrong-status     STATUS answers STATUS=Running
  exit-3           QUIT exits with status 3
  no-eof           after QUIT's S, keep stdout open for 30 s
"""

from __future__ import annotations

import os
import sys
import threading
import time

FAULTS = set(filter(None, os.environ.get("FAKE_GAHP_FAULTS", "").split(",")))
COMMANDS = (
    "ASYNC_MODE_ON ASYNC_MODE_OFF CONDOR_VM_START CONDOR_VM_STOP CONDOR_VM_SUSPEND "
    "CONDOR_VM_SOFT_SUSPEND CONDOR_VM_RESUME CONDOR_VM_CHECKPOINT CONDOR_VM_STATUS "
    "CONDOR_VM_GETPID QUIT VERSION COMMANDS SUPPORT_VMS RESULTS CLASSAD CLASSAD_END"
)
BANNER = "$VMGahpVersion 0.0.1 May 1 2007 Condor\\ VMGAHP $"


class FakeGahp:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.results: list[str] = []
        self.async_mode = True
        self.signalled = False
        self.in_ad = False

    def say(self, text: str) -> None:
        end = "\r\n" if "crlf" in FAULTS else "\n"
        with self.lock:
            os.write(1, (text + end).encode())

    def queue_result(self, line: str) -> None:
        with self.lock:
            self.results.append(line)
            announce = self.async_mode and "no-r" not in FAULTS
            announce = announce and ("double-r" in FAULTS or not self.signalled)
            if announce:
                self.signalled = True
                os.write(1, b"R\r\n" if "crlf" in FAULTS else b"R\n")

    def vm_command(self, words: list[str]) -> None:
        if len(words) != 3 or not words[1].isdigit():
            self.say("E")
            return
        name, request_id = words[0].upper(), words[1]
        if name == "CONDOR_VM_START":
            line = f"{request_id} 0 1"
        elif name == "CONDOR_VM_STATUS":
            state = "Running" if "wrong-status" in FAULTS else "Stopped"
            line = f"{request_id} 0 STATUS={state}"
        else:
            line = f"{request_id} 1 VMGAHP_ERR_VM_NOT_FOUND"
        if "r-before-s" in FAULTS:
            self.queue_result(line)
            self.say("S")
        elif "late-results" in FAULTS:
            self.say("S")
            threading.Timer(0.3, self.queue_result, (line,)).start()
        else:
            self.say("S")
            self.queue_result(line)

    def handle(self, line: str) -> None:
        """Process one line (QUIT exits the process)."""
        if self.in_ad:
            if line.upper() == "CLASSAD_END":
                self.in_ad = False
                self.say("S")
            return
        words = line.split(" ")
        name = words[0].upper()
        if name.startswith("CONDOR_VM_"):
            self.vm_command(words)
            return
        if len(words) != 1:
            self.say("E")
        elif name == "COMMANDS":
            self.say("S " + COMMANDS)
            if "extra-line" in FAULTS:
                self.say("X extra")
        elif name == "SUPPORT_VMS":
            self.say("S xen kvm")
            if "stray-r" in FAULTS:
                self.say("R")
        elif name == "VERSION":
            self.say("S " + BANNER)
        elif name == "ASYNC_MODE_ON":
            with self.lock:
                self.async_mode, self.signalled = True, False
            self.say("S")
        elif name == "ASYNC_MODE_OFF":
            self.async_mode = False
            self.say("S")
        elif name == "CLASSAD":
            self.in_ad = True
            self.say("S")
        elif name == "CLASSAD_END":
            self.say("S")
        elif name == "RESULTS":
            with self.lock:
                lines, self.results, self.signalled = self.results, [], False
            if "reverse-results" in FAULTS:
                lines.reverse()
            for text in [f"S {len(lines)}", *lines]:
                self.say(text)
        elif name == "QUIT":
            self.say("S")
            if "no-eof" in FAULTS:
                time.sleep(30)
            sys.exit(3 if "exit-3" in FAULTS else 0)
        else:
            self.say("E")


def main() -> None:
    gahp = FakeGahp()
    gahp.say(BANNER)
    buffer = b""
    while True:
        chunk = os.read(0, 4096)
        if not chunk:
            break
        buffer += chunk
        while b"\n" in buffer:
            raw, buffer = buffer.split(b"\n", 1)
            gahp.handle(raw.decode().rstrip("\r"))
    sys.exit(0)


if __name__ == "__main__":
    main()
